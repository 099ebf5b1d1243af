//! What the stream check keeps of one page (with its overflow pages) while its bytes
//! stream past: a [`Run`] from the page's first byte to its last.
//!
//! A branch or leaf page starts with its element table; once the table is in, the
//! elements are checked with the very functions that check a page read from a file
//! ([`PageView::leaf_layout`], [`PageView::branch_layout`]), up to the first bad one,
//! whose error is kept for the walk to report in its turn. The keys and short values of
//! the good elements are then kept as they pass; long values are hashed (CRC-32C) and,
//! under revision keys, decoded as `mvccpb.KeyValue` in pieces, the user key reduced to
//! its fingerprint. Only the bytes of one element at a time are in flight, however long
//! the page.
//!
//! One rule goes beyond bbolt's checks: the elements' keys and values must follow one
//! another in element order without overlapping, as bbolt writes them
//! (`node.write`), so that one pass over the bytes serves every element.

use super::super::error::Corrupted;
use super::super::live::{Fingerprinter, KeyHasher};
use super::super::mvcc::{KeyValue, KeyValueStream, Revision};
use super::super::page::{PAGE_HEADER_SIZE, PageView};
use super::record::{self, KvFacts, ValueDigest};

/// Values at most this long are kept whole, unless their key is a revision (the `key`
/// bucket's values are always digested). etcd's own values outside the `key` bucket
/// (meta, members, leases, users, roles) are far smaller.
pub(super) const KEEP_VALUE_MAX: usize = 64 << 10;

/// One page being kept.
pub(super) struct Run {
    pub(super) id: u64,
    /// Stream offset of the page.
    pub(super) offset: u64,
    /// The page's length with its overflow pages.
    pub(super) len: usize,
    /// Bytes of it received so far.
    pub(super) pos: usize,
    kind: Kind,
}

enum Kind {
    Tree(Box<TreeRun>),
    /// The freelist, kept whole.
    Freelist(Vec<u8>, [u8; 16]),
}

struct TreeRun {
    leaf: bool,
    header: [u8; 16],
    /// Where the element table ends (it may not fit: then the first element is bad).
    table_end: usize,
    /// The page's first bytes, until its element table is in.
    head: Vec<u8>,
    /// Set once the table is in and checked.
    items: Option<Vec<Item>>,
    error: Option<Corrupted>,
    /// The record being built.
    out: Vec<u8>,
    /// The element being streamed, and where in it.
    cur: usize,
    part: Part,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    start: usize,
    ksize: usize,
    vsize: usize,
    is_bucket: bool,
    child: u64,
}

enum Part {
    /// Before the element's key.
    Before,
    Key {
        flags_at: usize,
        key_at: usize,
        left: usize,
    },
    Kept {
        left: usize,
    },
    Digest {
        left: usize,
        len: u64,
        crc: u32,
        kv: Option<(KeyValueStream, KeyHasher)>,
    },
}

impl Run {
    /// A branch or leaf page, or the freelist, starting at stream `offset`.
    pub(super) fn new(id: u64, offset: u64, len: usize, header: [u8; 16], flags: u16) -> Self {
        use super::super::page::{FLAG_BRANCH, FLAG_LEAF};
        let count = usize::from(u16::from_le_bytes([header[10], header[11]]));
        let kind = if flags == FLAG_LEAF || flags == FLAG_BRANCH {
            Kind::Tree(Box::new(TreeRun {
                leaf: flags == FLAG_LEAF,
                header,
                table_end: PAGE_HEADER_SIZE + count * 16,
                head: Vec::new(),
                items: None,
                error: None,
                out: Vec::new(),
                cur: 0,
                part: Part::Before,
            }))
        } else {
            Kind::Freelist(Vec::new(), header)
        };
        Run {
            id,
            offset,
            len,
            pos: 0,
            kind,
        }
    }

    /// Bytes held in memory for this page.
    pub(super) fn held(&self) -> usize {
        match &self.kind {
            Kind::Tree(t) => {
                t.head.capacity()
                    + t.out.capacity()
                    + t.items.as_ref().map_or(0, |i| i.capacity()) * std::mem::size_of::<Item>()
            }
            Kind::Freelist(b, _) => b.capacity(),
        }
    }

    pub(super) fn done(&self) -> bool {
        self.pos >= self.len
    }

    /// The next bytes of the page (no more than are left of it).
    pub(super) fn feed(&mut self, bytes: &[u8], prints: &Fingerprinter) {
        let bytes = &bytes[..bytes.len().min(self.len - self.pos)];
        match &mut self.kind {
            Kind::Tree(t) => t.feed(bytes, self.pos, self.offset, self.len, prints),
            Kind::Freelist(b, _) => b.extend_from_slice(bytes),
        }
        self.pos += bytes.len();
    }

    /// The record of the complete page.
    pub(super) fn finish(self) -> Vec<u8> {
        match self.kind {
            Kind::Tree(t) => t.finish(),
            Kind::Freelist(bytes, header) => {
                let mut out = Vec::new();
                record::start(&mut out, &header, record::KIND_FREELIST);
                match PageView::new(&bytes, self.offset).and_then(|p| p.freelist_ids()) {
                    Ok(ids) => {
                        record::put_u8(&mut out, 1);
                        record::put_u64(&mut out, ids.len() as u64);
                        for id in ids {
                            record::put_u64(&mut out, id);
                        }
                    }
                    Err(e) => {
                        record::put_u8(&mut out, 0);
                        record::put_error(&mut out, Some(&e));
                    }
                }
                out
            }
        }
    }

    /// The page's header, for a record saying it was not kept.
    pub(super) fn header(&self) -> [u8; 16] {
        match &self.kind {
            Kind::Tree(t) => t.header,
            Kind::Freelist(_, h) => *h,
        }
    }
}

/// What the stream check keeps of a whole `key` bucket value: the same verdict
/// [`KeyValueStream`] reaches in pieces.
fn whole_key_value(v: &[u8], prints: &Fingerprinter) -> KvFacts {
    match KeyValue::decode(v) {
        Ok(kv) => {
            let mut key = prints.key_hasher();
            key.write(kv.key);
            KvFacts::Decoded {
                key: key.finish(),
                value_len: kv.value.len() as u64,
            }
        }
        Err(e) => KvFacts::Rejected(e),
    }
}

impl TreeRun {
    fn feed(
        &mut self,
        mut b: &[u8],
        mut pos: usize,
        offset: u64,
        len: usize,
        prints: &Fingerprinter,
    ) {
        if self.items.is_none() {
            let want = self.table_end.min(len);
            if self.head.is_empty() {
                self.head.reserve_exact(want);
            }
            let take = (want - self.head.len()).min(b.len());
            self.head.extend_from_slice(&b[..take]);
            b = &b[take..];
            pos += take;
            if self.head.len() < want {
                return;
            }
            self.check_table(offset, len);
        }
        let Some(items) = &self.items else { return };
        let out = &mut self.out;
        while let Some(item) = items.get(self.cur) {
            match &mut self.part {
                Part::Before => {
                    if pos < item.start {
                        let skip = (item.start - pos).min(b.len());
                        b = &b[skip..];
                        pos += skip;
                        if pos < item.start {
                            return;
                        }
                    }
                    let (flags_at, key_at);
                    if self.leaf {
                        flags_at = record::put_leaf_element_start(
                            out,
                            item.is_bucket,
                            item.start + item.ksize,
                            item.ksize,
                        );
                    } else {
                        flags_at = 0;
                        record::put_var(out, item.child);
                        record::put_var(out, item.ksize as u64);
                    }
                    key_at = out.len();
                    self.part = Part::Key {
                        flags_at,
                        key_at,
                        left: item.ksize,
                    };
                }
                Part::Key {
                    flags_at,
                    key_at,
                    left,
                } => {
                    let take = (*left).min(b.len());
                    out.extend_from_slice(&b[..take]);
                    (b, pos, *left) = (&b[take..], pos + take, *left - take);
                    if *left > 0 {
                        return;
                    }
                    if !self.leaf {
                        self.cur += 1;
                        self.part = Part::Before;
                        continue;
                    }
                    let revision = Revision::parse(&out[*key_at..]).is_some();
                    let vsize = item.vsize;
                    self.part = if item.is_bucket || (!revision && vsize <= KEEP_VALUE_MAX) {
                        record::put_var(out, vsize as u64);
                        Part::Kept { left: vsize }
                    } else if b.len() >= vsize {
                        // The whole value is here (the usual case): no need to decode it
                        // in pieces.
                        record::set_digested(out, *flags_at);
                        let v = &b[..vsize];
                        let kv = if revision {
                            whole_key_value(v, prints)
                        } else {
                            KvFacts::NotDecoded
                        };
                        let digest = ValueDigest {
                            len: vsize as u64,
                            crc: crc32c::crc32c(v),
                            kv,
                        };
                        record::put_digest(out, &digest);
                        (b, pos) = (&b[vsize..], pos + vsize);
                        self.cur += 1;
                        Part::Before
                    } else {
                        record::set_digested(out, *flags_at);
                        Part::Digest {
                            left: vsize,
                            len: vsize as u64,
                            crc: 0,
                            kv: revision
                                .then(|| (KeyValueStream::new(vsize as u64), prints.key_hasher())),
                        }
                    };
                }
                Part::Kept { left } => {
                    let take = (*left).min(b.len());
                    out.extend_from_slice(&b[..take]);
                    (b, pos, *left) = (&b[take..], pos + take, *left - take);
                    if *left > 0 {
                        return;
                    }
                    self.cur += 1;
                    self.part = Part::Before;
                }
                Part::Digest { left, len, crc, kv } => {
                    let take = (*left).min(b.len());
                    let piece = &b[..take];
                    *crc = crc32c::crc32c_append(*crc, piece);
                    if let Some((stream, key)) = kv {
                        stream.feed(piece, &mut |k| match k {
                            None => *key = prints.key_hasher(),
                            Some(bytes) => key.write(bytes),
                        });
                    }
                    (b, pos, *left) = (&b[take..], pos + take, *left - take);
                    if *left > 0 {
                        return;
                    }
                    let kv = match kv {
                        None => KvFacts::NotDecoded,
                        Some((stream, key)) => match stream.finish() {
                            Ok(value_len) => KvFacts::Decoded {
                                key: key.finish(),
                                value_len,
                            },
                            Err(e) => KvFacts::Rejected(e),
                        },
                    };
                    record::put_digest(
                        out,
                        &ValueDigest {
                            len: *len,
                            crc: *crc,
                            kv,
                        },
                    );
                    self.cur += 1;
                    self.part = Part::Before;
                }
            }
        }
    }

    /// The element table is in: check every element as a read from the file would, up
    /// to the first bad one, and start the record.
    fn check_table(&mut self, offset: u64, len: usize) {
        let count = usize::from(u16::from_le_bytes([self.header[10], self.header[11]]));
        let mut items = Vec::with_capacity(count.min(len / 16));
        match PageView::partial(&self.head, offset, len) {
            Err(e) => self.error = Some(e),
            Ok(view) => {
                let mut end = self.table_end;
                for i in 0..usize::from(view.header.count) {
                    let item = if self.leaf {
                        view.leaf_layout(i).map(|l| Item {
                            start: l.start,
                            ksize: l.ksize,
                            vsize: l.vsize,
                            is_bucket: l.is_bucket,
                            child: 0,
                        })
                    } else {
                        view.branch_layout(i).map(|l| Item {
                            start: l.start,
                            ksize: l.ksize,
                            vsize: 0,
                            is_bucket: false,
                            child: l.child,
                        })
                    };
                    match item {
                        Err(e) => {
                            self.error = Some(e);
                            break;
                        }
                        Ok(item) if item.start < end => {
                            self.error = Some(Corrupted::new(
                                format!(
                                    "{} page: element {i}'s key and value overlap those of the \
                                     element before it (bbolt writes them one after another)",
                                    view.header.kind()
                                ),
                                offset + (PAGE_HEADER_SIZE + i * 16) as u64,
                            ));
                            break;
                        }
                        Ok(item) => {
                            end = item.start + item.ksize + item.vsize;
                            items.push(item);
                        }
                    }
                }
            }
        }
        // About what a `key` bucket element takes (46 bytes), so the record rarely grows.
        self.out.reserve(32 + 48 * items.len());
        record::start(
            &mut self.out,
            &self.header,
            if self.leaf {
                record::KIND_LEAF
            } else {
                record::KIND_BRANCH
            },
        );
        record::put_u32(&mut self.out, items.len() as u32);
        self.items = Some(items);
        self.head = Vec::new();
    }

    fn finish(mut self) -> Vec<u8> {
        let kept = self.items.as_ref().map_or(0, Vec::len);
        if self.items.is_none() || self.cur < kept {
            // Cannot happen for a complete page: every kept element lies inside it.
            self.out.clear();
            record::start(&mut self.out, &self.header, record::KIND_NOT_KEPT);
            record::put_u8(&mut self.out, record::NotKept::StreamEnded as u8);
            return self.out;
        }
        record::put_error(&mut self.out, self.error.as_ref());
        self.out
    }
}
