//! Opening a snapshot file and walking its bbolt B+trees page by page.
//!
//! Pages are read with positioned reads (`pread`) into small buffers, one page (plus its
//! overflow) per tree level at a time, so memory does not grow with the file; runs of
//! pages in file order are served from one larger read ([`super::readahead`]). The only
//! structure that grows with the file is the set of pages already seen (one bit per
//! page: 32 KiB for a 1 GiB database), which is how a page referenced twice — a cycle or
//! a cross-linked tree — is caught, as bbolt's own consistency check does.
//!
//! The same walk runs over the skeleton a stream check kept instead of the file
//! ([`Database::from_skeleton`], [`super::stream`]): its pages are records in which long
//! values are digests ([`Entry::Digest`]), checked by the same rules.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{Corrupted, SnapshotError};
use super::node::Node;
use super::open::{self, Layout};
use super::page::{
    BucketHeader, FLAG_BRANCH, FLAG_FREELIST, FLAG_LEAF, Meta, NO_FREELIST, PAGE_HEADER_SIZE,
    PageHeader, PageView,
};
use super::readahead::ReadAhead;
use super::stream::SkeletonPages;
use super::stream::record::{Value, ValueDigest};
use super::walk_state::{KeyOrder, PageSet};

/// Length of the sha256 digest etcd appends to a snapshot.
pub const TRAILER_LEN: u64 = 32;

/// B+trees and bucket nesting deeper than this are treated as corruption (a real bbolt
/// tree of 4 KiB pages is a handful of levels deep even for 8 GiB).
const MAX_DEPTH: usize = 64;

/// The largest page (with its overflow) we agree to read: bigger than any value etcd
/// accepts (`--max-request-bytes` is 1.5 MiB by default), small enough that a corrupted
/// overflow count cannot make us allocate the whole file.
pub(crate) const MAX_PAGE_BYTES: u64 = 256 << 20;

/// Page buffers up to this size are kept for the next page read.
const SPARE_PAGE_BYTES: usize = 2 << 20;

/// etcd's rule (`hasChecksum` in etcdutl): a snapshot carries a sha256 trailer when its
/// length is 32 more than a multiple of 512.
pub fn has_trailer(file_len: u64) -> bool {
    file_len % 512 == TRAILER_LEN
}

/// An open snapshot (or raw bbolt) file, or the skeleton of a streamed one.
pub struct Database {
    /// The file, or what names the stream in messages.
    path: PathBuf,
    pages: Pages,
    file_len: u64,
    /// Length of the bbolt bytes: the file without its trailer.
    db_len: u64,
    trailer: Option<[u8; 32]>,
    meta: Meta,
    /// Which meta page (0 or 1) is in use, and why the other was not, if it was not.
    meta_page: u8,
    meta_warning: Option<String>,
    seen: PageSet,
    bucket_depth: usize,
    /// Page buffers the walk has finished with, read into again rather than allocated
    /// anew for every page (an allocation and a free per page, most of a value's cost).
    spare: Vec<Vec<u8>>,
}

/// Where the tree pages come from.
enum Pages {
    File { file: File, reader: ReadAhead },
    Skeleton(SkeletonPages),
}

/// Where a bucket's tree lives: its own root page, or inline in its parent's leaf.
#[derive(Debug, Clone, Copy)]
pub enum BucketRef<'a> {
    Page(u64),
    /// The inline page bytes and their file offset.
    Inline(&'a [u8], u64),
}

/// One entry of a bucket, as seen while walking it in key order.
pub enum Entry<'a> {
    Value(&'a [u8]),
    /// A value the stream check did not keep: its length and CRC (only from a skeleton).
    Digest(ValueDigest),
    Bucket(BucketRef<'a>),
}

/// The visitor called for every entry of a bucket, in key order, with the file offset of
/// the entry's value (for error messages). It gets the database back so it can descend
/// into a nested bucket.
pub type Visit<'v> = dyn FnMut(&mut Database, &[u8], Entry<'_>, u64) -> Result<(), Corrupted> + 'v;

impl Database {
    /// Opens `path`, locates the sha256 trailer (checked by the status scan), and
    /// validates the meta pages.
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let file = File::open(path).map_err(|e| SnapshotError::io(path, e))?;
        let md = file.metadata().map_err(|e| SnapshotError::io(path, e))?;
        if md.is_dir() {
            return Err(SnapshotError::NotBbolt {
                path: path.to_path_buf(),
                reason: "it is a directory".into(),
            });
        }
        let file_len = md.len();
        let read_trailer = || {
            let mut t = [0u8; 32];
            file.read_exact_at(&mut t, file_len - TRAILER_LEN)
                .map_err(|e| SnapshotError::io(path, e))?;
            Ok(t)
        };
        let read = |off: u64, len: usize| -> Result<Vec<u8>, SnapshotError> {
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, off)
                .map_err(|e| SnapshotError::io(path, e))?;
            Ok(buf)
        };
        let layout = open::layout(path, file_len, &read_trailer, &read)?;
        let reader =
            ReadAhead::new(layout.choice.meta.pgid * u64::from(layout.choice.meta.page_size));
        Ok(Self::new(path, Pages::File { file, reader }, layout))
    }

    /// The database a stream check kept: its skeleton's pages, named `label` in messages.
    pub(crate) fn from_skeleton(label: &Path, pages: SkeletonPages, layout: Layout) -> Self {
        Self::new(label, Pages::Skeleton(pages), layout)
    }

    fn new(path: &Path, pages: Pages, layout: Layout) -> Self {
        let meta = layout.choice.meta;
        let mut seen = PageSet::new(meta.pgid);
        seen.insert(0);
        seen.insert(1);
        Database {
            path: path.to_path_buf(),
            pages,
            file_len: layout.file_len,
            db_len: layout.db_len,
            trailer: layout.trailer,
            meta,
            meta_page: layout.choice.meta_page,
            meta_warning: layout.choice.warning,
            seen,
            bucket_depth: 0,
            spare: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn file_len(&self) -> u64 {
        self.file_len
    }
    pub fn db_len(&self) -> u64 {
        self.db_len
    }
    pub fn meta(&self) -> &Meta {
        &self.meta
    }
    pub fn meta_page(&self) -> u8 {
        self.meta_page
    }
    pub fn meta_warning(&self) -> Option<&str> {
        self.meta_warning.as_deref()
    }
    pub fn trailer(&self) -> Option<&[u8; 32]> {
        self.trailer.as_ref()
    }
    /// The size bbolt reports for the database (`tx.Size()`): pages in use × page size.
    pub fn size(&self) -> u64 {
        self.meta.pgid * u64::from(self.meta.page_size)
    }

    /// The ids of the pages reached so far (meta pages, tree pages and their overflow),
    /// in order; after a full walk, every page in use.
    pub fn seen_pages(&self) -> Vec<u64> {
        (0..self.meta.pgid)
            .filter(|&id| self.seen.contains(id))
            .collect()
    }

    /// A second handle on the file, for reading it in another thread (the trailer check).
    pub fn try_clone_file(&self) -> Result<File, SnapshotError> {
        match &self.pages {
            Pages::File { file, .. } => file
                .try_clone()
                .map_err(|e| SnapshotError::io(&self.path, e)),
            Pages::Skeleton(_) => Err(SnapshotError::io(
                &self.path,
                std::io::Error::other("a streamed snapshot has no file to read"),
            )),
        }
    }

    /// Reads page `id` and its overflow pages (or their record in the skeleton),
    /// checking its header against where it was found, and marks those pages as seen.
    fn read_page(&mut self, id: u64, referrer: u64) -> Result<(Vec<u8>, u64), Corrupted> {
        let ps = u64::from(self.meta.page_size);
        if id < 2 || id >= self.meta.pgid {
            return Err(Corrupted::new(
                format!(
                    "reference to page {id}, outside the database's {} pages",
                    self.meta.pgid
                ),
                referrer,
            ));
        }
        let offset = id * ps;
        let mut buf = match &mut self.pages {
            Pages::File { file, reader } => {
                let mut buf = self.spare.pop().unwrap_or_default();
                buf.clear();
                buf.resize(ps as usize, 0);
                reader
                    .read_exact_at(file, &mut buf, offset)
                    .map_err(|e| Corrupted::new(format!("reading page {id}: {e}"), offset))?;
                buf
            }
            Pages::Skeleton(pages) => pages.record(id, offset)?,
        };
        let header = PageHeader::parse(&buf, offset)?;
        if header.id != id {
            return Err(Corrupted::new(
                format!("page {id} says it is page {}", header.id),
                offset,
            ));
        }
        let last = id + u64::from(header.overflow);
        if last >= self.meta.pgid {
            return Err(Corrupted::new(
                format!(
                    "page {id} claims {} overflow pages, past the end of the database",
                    header.overflow
                ),
                offset + 12,
            ));
        }
        if header.overflow > 0 {
            let total = (u64::from(header.overflow) + 1) * ps;
            if total > MAX_PAGE_BYTES {
                return Err(Corrupted::new(
                    format!(
                        "page {id} claims {} overflow pages ({total} bytes), more than any \
                         etcd value needs",
                        header.overflow
                    ),
                    offset + 12,
                ));
            }
            if let Pages::File { file, reader } = &mut self.pages {
                buf.resize(total as usize, 0);
                reader
                    .read_exact_at(file, &mut buf[ps as usize..], offset + ps)
                    .map_err(|e| Corrupted::new(format!("reading page {id}: {e}"), offset))?;
            }
        }
        for p in id..=last {
            if !self.seen.insert(p) {
                return Err(Corrupted::new(
                    format!("page {p} is referenced twice"),
                    referrer,
                ));
            }
        }
        Ok((buf, offset))
    }

    /// The page read by [`Database::read_page`], as the walk sees it.
    fn node<'b>(&self, buf: &'b [u8], offset: u64, id: u64) -> Result<Node<'b>, Corrupted> {
        match self.pages {
            Pages::File { .. } => Ok(Node::Raw(PageView::new(buf, offset)?)),
            Pages::Skeleton(_) => Node::kept(buf, offset, id),
        }
    }

    /// Walks the root bucket (whose entries are the top-level buckets).
    pub fn walk_root(&mut self, visit: &mut Visit<'_>) -> Result<(), Corrupted> {
        let root = self.meta.root;
        let at = u64::from(self.meta_page) * u64::from(self.meta.page_size) + 32;
        self.walk_bucket(BucketRef::Page(root), at, visit)
    }

    /// Calls `visit` for every entry of a bucket in key order, checking the tree on the
    /// way: page types, key order, and bounds. `referrer` is the file offset of whatever
    /// pointed at this bucket, for error messages.
    pub fn walk_bucket(
        &mut self,
        bucket: BucketRef<'_>,
        referrer: u64,
        visit: &mut Visit<'_>,
    ) -> Result<(), Corrupted> {
        if self.bucket_depth >= MAX_DEPTH {
            return Err(Corrupted::new(
                format!("buckets nested more than {MAX_DEPTH} deep"),
                referrer,
            ));
        }
        self.bucket_depth += 1;
        let result = self.walk_bucket_tree(bucket, referrer, visit);
        self.bucket_depth -= 1;
        result
    }

    fn walk_bucket_tree(
        &mut self,
        bucket: BucketRef<'_>,
        referrer: u64,
        visit: &mut Visit<'_>,
    ) -> Result<(), Corrupted> {
        let mut order = KeyOrder::default();
        match bucket {
            BucketRef::Page(id) => self.walk_page(id, 0, referrer, &mut order, visit),
            BucketRef::Inline(bytes, offset) => {
                let page = PageView::new(bytes, offset)?;
                if page.header.flags != FLAG_LEAF {
                    return Err(Corrupted::new(
                        format!(
                            "inline bucket page is a {} page, not a leaf",
                            page.header.kind()
                        ),
                        offset + 8,
                    ));
                }
                self.visit_leaf(&Node::Raw(page), offset, &mut order, visit)
            }
        }
    }

    fn walk_page(
        &mut self,
        id: u64,
        level: usize,
        referrer: u64,
        order: &mut KeyOrder,
        visit: &mut Visit<'_>,
    ) -> Result<(), Corrupted> {
        if level > MAX_DEPTH {
            return Err(Corrupted::new(
                format!("B+tree deeper than {MAX_DEPTH} levels"),
                referrer,
            ));
        }
        let (buf, offset) = self.read_page(id, referrer)?;
        let walked = self.walk_read_page(&buf, offset, id, level, order, visit);
        // At most one buffer per level of the tree is kept, none larger than a page of
        // the biggest values.
        if buf.capacity() <= SPARE_PAGE_BYTES && self.spare.len() <= MAX_DEPTH {
            self.spare.push(buf);
        }
        walked
    }

    fn walk_read_page(
        &mut self,
        buf: &[u8],
        offset: u64,
        id: u64,
        level: usize,
        order: &mut KeyOrder,
        visit: &mut Visit<'_>,
    ) -> Result<(), Corrupted> {
        let page = self.node(buf, offset, id)?;
        let header = page.header();
        match header.flags {
            FLAG_LEAF => self.visit_leaf(&page, offset, order, visit),
            FLAG_BRANCH => {
                let count = usize::from(header.count);
                if count == 0 {
                    return Err(Corrupted::new("branch page has no elements", offset + 10));
                }
                for i in 0..count {
                    let e = page.branch_element(i)?;
                    let elem_at = offset + (PAGE_HEADER_SIZE + i * 16) as u64;
                    // Branch keys increase, and each is above every key before it...
                    if order.last.as_deref().is_some_and(|prev| e.key <= prev) {
                        return Err(Corrupted::new(
                            format!("branch page {id}: keys out of order at element {i}"),
                            elem_at,
                        ));
                    }
                    // ...and at or below every key of its child.
                    order.raise_lower_bound(e.key);
                    self.walk_page(e.child, level + 1, elem_at + 8, order, visit)?;
                }
                Ok(())
            }
            _ => Err(Corrupted::new(
                format!(
                    "page {id} is a {} page ({:#x}) where a branch or leaf page belongs",
                    header.kind(),
                    header.flags
                ),
                offset + 8,
            )),
        }
    }

    fn visit_leaf(
        &mut self,
        page: &Node<'_>,
        offset: u64,
        order: &mut KeyOrder,
        visit: &mut Visit<'_>,
    ) -> Result<(), Corrupted> {
        for i in 0..usize::from(page.header().count) {
            let e = page.leaf_item(i)?;
            if !order.accept(e.key) {
                return Err(Corrupted::new(
                    format!("leaf page: keys out of order at element {i}"),
                    offset + (PAGE_HEADER_SIZE + i * 16) as u64,
                ));
            }
            let value_at = offset + e.value_offset as u64;
            match (e.is_bucket, e.value) {
                (true, Value::Bytes(v)) => {
                    let h = BucketHeader::parse(v, value_at)?;
                    let bucket = if h.root == 0 {
                        BucketRef::Inline(&v[16..], value_at + 16)
                    } else {
                        BucketRef::Page(h.root)
                    };
                    visit(self, e.key, Entry::Bucket(bucket), value_at)?;
                }
                (false, Value::Bytes(v)) => visit(self, e.key, Entry::Value(v), value_at)?,
                (false, Value::Digest(d)) => visit(self, e.key, Entry::Digest(d), value_at)?,
                (true, Value::Digest(_)) => {
                    return Err(Corrupted::new(
                        "the stream check did not keep this bucket's header",
                        value_at,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Walks every bucket, nested ones included, and then checks the free pages: bbolt's
    /// whole consistency check, without computing anything.
    pub fn check(&mut self) -> Result<(), Corrupted> {
        fn nested(db: &mut Database, b: BucketRef<'_>, at: u64) -> Result<(), Corrupted> {
            db.walk_bucket(b, at, &mut |db, _k, e, at| match e {
                Entry::Bucket(b) => nested(db, b, at),
                Entry::Value(_) | Entry::Digest(_) => Ok(()),
            })
        }
        self.walk_root(&mut |db, _k, e, at| match e {
            Entry::Bucket(b) => nested(db, b, at),
            Entry::Value(_) | Entry::Digest(_) => Ok(()),
        })?;
        self.check_free_pages()
    }

    /// After every bucket was walked: bbolt's remaining consistency checks. When the
    /// freelist was written (no `NoFreelistSync`), every page must be reachable or free,
    /// and no free page reachable. etcd does not write the freelist; then the unreachable
    /// pages are the free ones and there is nothing more to check.
    pub fn check_free_pages(&mut self) -> Result<(), Corrupted> {
        if self.meta.freelist == NO_FREELIST {
            return Ok(());
        }
        let meta_at = u64::from(self.meta_page) * u64::from(self.meta.page_size) + 48;
        let fl = self.meta.freelist;
        let (buf, offset) = self.read_page(fl, meta_at)?;
        let page = self.node(&buf, offset, fl)?;
        if page.header().flags != FLAG_FREELIST {
            return Err(Corrupted::new(
                format!("freelist page {fl} is a {} page", page.header().kind()),
                offset + 8,
            ));
        }
        let mut free = PageSet::new(self.meta.pgid);
        for id in page.freelist_ids()? {
            if id < 2 || id >= self.meta.pgid {
                return Err(Corrupted::new(
                    format!("freelist lists page {id}, outside the database"),
                    offset,
                ));
            }
            if self.seen.contains(id) {
                return Err(Corrupted::new(
                    format!("page {id} is both reachable and on the freelist"),
                    offset,
                ));
            }
            free.insert(id);
        }
        for id in 0..self.meta.pgid {
            if !self.seen.contains(id) && !free.contains(id) {
                return Err(Corrupted::new(
                    format!("page {id} is neither reachable nor free"),
                    id * u64::from(self.meta.page_size),
                ));
            }
        }
        Ok(())
    }
}
