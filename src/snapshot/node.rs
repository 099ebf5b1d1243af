//! A tree page as the walk sees it: a page read from the file, or what the stream check
//! kept of it ([`super::stream`]). Both answer the same questions with the same errors,
//! so one walk ([`super::db`]) checks files and streams alike.

use super::error::Corrupted;
use super::page::{BranchElement, PageHeader, PageView};
use super::stream::record::{Body, LeafItem, PageRecord, Value};

pub(crate) enum Node<'a> {
    Raw(PageView<'a>),
    Kept(PageRecord<'a>, u64),
}

impl<'a> Node<'a> {
    /// The record of a page read from a skeleton; a tree page the stream check could not
    /// keep is an error here.
    pub(crate) fn kept(bytes: &'a [u8], offset: u64, id: u64) -> Result<Self, Corrupted> {
        let record = PageRecord::parse(bytes, offset)?;
        if let Body::NotKept(why) = &record.body {
            return Err(Corrupted::new(
                format!(
                    "{} page {id} could not be checked from the stream: {why}",
                    record.header.kind()
                ),
                offset,
            ));
        }
        Ok(Node::Kept(record, offset))
    }

    pub(crate) fn header(&self) -> PageHeader {
        match self {
            Node::Raw(p) => p.header,
            Node::Kept(r, _) => r.header,
        }
    }

    fn inconsistent(&self, offset: u64) -> Corrupted {
        Corrupted::new(
            format!(
                "the stream check's record of this {} page does not match its header",
                self.header().kind()
            ),
            offset,
        )
    }

    pub(crate) fn branch_element(&self, i: usize) -> Result<BranchElement<'a>, Corrupted> {
        match self {
            Node::Raw(p) => p.branch_element(i),
            Node::Kept(r, offset) => match &r.body {
                Body::Branch { items, error } => match (items.get(i), error) {
                    (Some(e), _) => Ok(*e),
                    (None, Some(e)) if i == items.len() => Err(e.clone()),
                    _ => Err(self.inconsistent(*offset)),
                },
                _ => Err(self.inconsistent(*offset)),
            },
        }
    }

    pub(crate) fn leaf_item(&self, i: usize) -> Result<LeafItem<'a>, Corrupted> {
        match self {
            Node::Raw(p) => p.leaf_element(i).map(|e| LeafItem {
                key: e.key,
                value: Value::Bytes(e.value),
                value_offset: e.value_offset,
                is_bucket: e.is_bucket,
            }),
            Node::Kept(r, offset) => match &r.body {
                Body::Leaf { items, error } => match (items.get(i), error) {
                    (Some(e), _) => Ok(*e),
                    (None, Some(e)) if i == items.len() => Err(e.clone()),
                    _ => Err(self.inconsistent(*offset)),
                },
                _ => Err(self.inconsistent(*offset)),
            },
        }
    }

    pub(crate) fn freelist_ids(&self) -> Result<Vec<u64>, Corrupted> {
        match self {
            Node::Raw(p) => p.freelist_ids(),
            Node::Kept(r, offset) => match &r.body {
                Body::Freelist(ids) => ids.clone(),
                _ => Err(self.inconsistent(*offset)),
            },
        }
    }
}
