//! bbolt's on-disk page layout, parsed from byte slices without side effects.
//!
//! Every bbolt file is an array of fixed-size pages (`page_size`, usually 4096). A page
//! starts with a 16-byte header; branch and leaf pages follow it with an array of 16-byte
//! elements whose keys and values live further down the same page (or in the `overflow`
//! pages that continue it). All integers are little-endian.
//!
//! ```text
//! page header (16 bytes)          meta (at page offset 16, 64 bytes)
//! off size field                  off size field
//!   0    8 id        (pgid)         0    4 magic      0xED0CDAED
//!   8    2 flags                    4    4 version    2
//!  10    2 count                    8    4 page_size
//!  12    4 overflow  (extra pages) 12    4 flags
//!                                  16    8 root.root  (pgid of the root bucket's page)
//! branch element (16 bytes)        24    8 root.sequence
//!   0    4 pos   (from the element) 32    8 freelist  (pgid, or u64::MAX: not synced)
//!   4    4 ksize                   40    8 pgid      (high-water mark: pages in use)
//!   8    8 pgid  (child page)      48    8 txid
//!                                  56    8 checksum  (FNV-1a 64 of bytes 0..56)
//! leaf element (16 bytes)
//!   0    4 flags (1 = sub-bucket)  bucket value (leaf element with flags & 1)
//!   4    4 pos   (from the element)  0    8 root      (0: inline, a page follows)
//!   8    4 ksize                     8    8 sequence
//!  12    4 vsize                    16    . inline page (header + leaf elements)
//! ```
//!
//! Nothing here trusts a number it read: every offset and length is checked against the
//! slice it points into before use, and failures become [`Corrupted`] with the absolute
//! file offset of the bad field.

use super::error::Corrupted;

pub const PAGE_HEADER_SIZE: usize = 16;
pub const ELEMENT_SIZE: usize = 16;
pub const META_SIZE: usize = 64;
const META_CHECKSUMMED: usize = 56;

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
/// `meta.freelist` when the freelist is not written to disk (etcd's `NoFreelistSync`).
pub const NO_FREELIST: u64 = u64::MAX;

pub const FLAG_BRANCH: u16 = 0x01;
pub const FLAG_LEAF: u16 = 0x02;
pub const FLAG_META: u16 = 0x04;
pub const FLAG_FREELIST: u16 = 0x10;
pub const LEAF_FLAG_BUCKET: u32 = 0x01;
pub const BUCKET_HEADER_SIZE: usize = 16;

/// bbolt accepts page sizes between these (inclusive); anything else is not a bbolt file
/// we can read.
pub const MIN_PAGE_SIZE: u32 = 512;
pub const MAX_PAGE_SIZE: u32 = 1 << 20;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// The 16-byte header at the start of every page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    /// Parses a header from the first 16 bytes of `b`; `at` is the file offset of `b`.
    pub fn parse(b: &[u8], at: u64) -> Result<Self, Corrupted> {
        let short = || Corrupted::new("page header is cut short", at);
        Ok(PageHeader {
            id: u64_at(b, 0).ok_or_else(short)?,
            flags: u16_at(b, 8).ok_or_else(short)?,
            count: u16_at(b, 10).ok_or_else(short)?,
            overflow: u32_at(b, 12).ok_or_else(short)?,
        })
    }

    pub fn kind(&self) -> &'static str {
        match self.flags {
            FLAG_BRANCH => "branch",
            FLAG_LEAF => "leaf",
            FLAG_META => "meta",
            FLAG_FREELIST => "freelist",
            _ => "unknown",
        }
    }
}

/// Why a meta page was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaProblem {
    Magic,
    Version,
    Checksum,
}

impl std::fmt::Display for MetaProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MetaProblem::Magic => "bad magic number (not a bbolt file)",
            MetaProblem::Version => "unsupported bbolt version",
            MetaProblem::Checksum => "checksum mismatch",
        })
    }
}

/// A bbolt meta page (one of the two at page 0 and page 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    pub root: u64,
    pub root_sequence: u64,
    pub freelist: u64,
    /// High-water mark: number of pages in use; the database is `pgid * page_size` bytes.
    pub pgid: u64,
    pub txid: u64,
    pub checksum: u64,
}

impl Meta {
    /// Parses and validates the meta stored in the page that starts at `page` (so the meta
    /// itself is at `page[16..80]`).
    pub fn parse(page: &[u8]) -> Result<Self, MetaProblem> {
        let m = page
            .get(PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + META_SIZE)
            .ok_or(MetaProblem::Magic)?;
        // The slice is exactly META_SIZE long, so the fixed offsets below are in bounds.
        let r32 = |o| u32_at(m, o).unwrap_or(0);
        let r64 = |o| u64_at(m, o).unwrap_or(0);
        if r32(0) != MAGIC {
            return Err(MetaProblem::Magic);
        }
        if r32(4) != VERSION {
            return Err(MetaProblem::Version);
        }
        let meta = Meta {
            page_size: r32(8),
            flags: r32(12),
            root: r64(16),
            root_sequence: r64(24),
            freelist: r64(32),
            pgid: r64(40),
            txid: r64(48),
            checksum: r64(56),
        };
        if meta.checksum != fnv1a64(&m[..META_CHECKSUMMED]) {
            return Err(MetaProblem::Checksum);
        }
        Ok(meta)
    }
}

/// FNV-1a, 64 bit: the checksum bbolt puts in meta pages.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One element of a branch page: the first key of a child page and the child's id.
#[derive(Debug, Clone, Copy)]
pub struct BranchElement<'a> {
    pub key: &'a [u8],
    pub child: u64,
}

/// One element of a leaf page.
#[derive(Debug, Clone, Copy)]
pub struct LeafElement<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Offset of the value from the start of the page, to report problems inside it.
    pub value_offset: usize,
    pub is_bucket: bool,
}

/// Where a leaf element's key and value are, checked against the page but not read:
/// the key is `ksize` bytes from `start` (an offset in the page), the value follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafLayout {
    pub start: usize,
    pub ksize: usize,
    pub vsize: usize,
    pub is_bucket: bool,
}

/// Where a branch element's key is, checked against the page but not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchLayout {
    pub start: usize,
    pub ksize: usize,
    pub child: u64,
}

/// A page held in memory: its bytes (header included, overflow pages appended) and the
/// file offset of its first byte, used to report where a problem is.
#[derive(Debug, Clone, Copy)]
pub struct PageView<'a> {
    pub bytes: &'a [u8],
    pub offset: u64,
    pub header: PageHeader,
    /// The page's length with its overflow pages. Equal to `bytes.len()`, except for a
    /// page still streaming in, of which only the start is held ([`PageView::partial`]).
    len: usize,
}

impl<'a> PageView<'a> {
    pub fn new(bytes: &'a [u8], offset: u64) -> Result<Self, Corrupted> {
        Self::partial(bytes, offset, bytes.len())
    }

    /// The first bytes of a page of `len` bytes: enough to check element layouts
    /// ([`PageView::leaf_layout`], [`PageView::branch_layout`]) while the rest streams in.
    pub fn partial(bytes: &'a [u8], offset: u64, len: usize) -> Result<Self, Corrupted> {
        let header = PageHeader::parse(bytes, offset)?;
        Ok(PageView {
            bytes,
            offset,
            header,
            len,
        })
    }

    /// Checks that the element table fits in the page; returns its length in bytes.
    pub fn elements_end(&self) -> Result<usize, Corrupted> {
        let end = PAGE_HEADER_SIZE + usize::from(self.header.count) * ELEMENT_SIZE;
        if end > self.len {
            return Err(Corrupted::new(
                format!(
                    "{} page element count {} does not fit in the page",
                    self.header.kind(),
                    self.header.count
                ),
                self.offset + 10,
            ));
        }
        Ok(end)
    }

    /// Checks `len` bytes at `elem_off + pos` where `pos` came from the element: keys
    /// and values are addressed relative to their element. Returns the start offset.
    fn range_from(
        &self,
        elem_off: usize,
        pos: u32,
        len: u32,
        what: &str,
    ) -> Result<usize, Corrupted> {
        let start = elem_off.checked_add(pos as usize);
        let end = start.and_then(|s| s.checked_add(len as usize));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.len && s >= self.elements_end()? => Ok(s),
            _ => Err(Corrupted::new(
                format!(
                    "{} page: {what} (pos {pos}, len {len}) points outside the page",
                    self.header.kind()
                ),
                self.offset + elem_off as u64,
            )),
        }
    }

    /// The bytes `start..start + len` of the page, which a layout check put inside it.
    fn held(&self, start: usize, len: usize) -> Result<&'a [u8], Corrupted> {
        start
            .checked_add(len)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or_else(|| {
                Corrupted::new(
                    format!("{} page: bytes not held", self.header.kind()),
                    self.offset + start as u64,
                )
            })
    }

    pub fn branch_layout(&self, i: usize) -> Result<BranchLayout, Corrupted> {
        self.elements_end()?;
        let off = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
        let short = || Corrupted::new("branch element is cut short", self.offset + off as u64);
        let pos = u32_at(self.bytes, off).ok_or_else(short)?;
        let ksize = u32_at(self.bytes, off + 4).ok_or_else(short)?;
        let child = u64_at(self.bytes, off + 8).ok_or_else(short)?;
        let start = self.range_from(off, pos, ksize, "branch key")?;
        Ok(BranchLayout {
            start,
            ksize: ksize as usize,
            child,
        })
    }

    pub fn branch_element(&self, i: usize) -> Result<BranchElement<'a>, Corrupted> {
        let l = self.branch_layout(i)?;
        Ok(BranchElement {
            key: self.held(l.start, l.ksize)?,
            child: l.child,
        })
    }

    pub fn leaf_layout(&self, i: usize) -> Result<LeafLayout, Corrupted> {
        self.elements_end()?;
        let off = PAGE_HEADER_SIZE + i * ELEMENT_SIZE;
        let short = || Corrupted::new("leaf element is cut short", self.offset + off as u64);
        let flags = u32_at(self.bytes, off).ok_or_else(short)?;
        let pos = u32_at(self.bytes, off + 4).ok_or_else(short)?;
        let ksize = u32_at(self.bytes, off + 8).ok_or_else(short)?;
        let vsize = u32_at(self.bytes, off + 12).ok_or_else(short)?;
        if flags & !LEAF_FLAG_BUCKET != 0 {
            return Err(Corrupted::new(
                format!("leaf element has unknown flags {flags:#x}"),
                self.offset + off as u64,
            ));
        }
        let start = self.range_from(off, pos, ksize.saturating_add(vsize), "leaf key/value")?;
        if ksize.checked_add(vsize).is_none() {
            return Err(Corrupted::new(
                "leaf key and value sizes overflow",
                self.offset + off as u64,
            ));
        }
        Ok(LeafLayout {
            start,
            ksize: ksize as usize,
            vsize: vsize as usize,
            is_bucket: flags & LEAF_FLAG_BUCKET != 0,
        })
    }

    pub fn leaf_element(&self, i: usize) -> Result<LeafElement<'a>, Corrupted> {
        let l = self.leaf_layout(i)?;
        let kv = self.held(l.start, l.ksize + l.vsize)?;
        let (key, value) = kv.split_at(l.ksize);
        Ok(LeafElement {
            key,
            value,
            value_offset: l.start + l.ksize,
            is_bucket: l.is_bucket,
        })
    }

    /// The ids listed on a freelist page.
    pub fn freelist_ids(&self) -> Result<Vec<u64>, Corrupted> {
        let (count, start) = if self.header.count == 0xFFFF {
            let n = u64_at(self.bytes, PAGE_HEADER_SIZE)
                .ok_or_else(|| Corrupted::new("freelist count is cut short", self.offset + 16))?;
            (n, PAGE_HEADER_SIZE + 8)
        } else {
            (u64::from(self.header.count), PAGE_HEADER_SIZE)
        };
        let end = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(start as u64))
            .filter(|&e| e <= self.bytes.len() as u64)
            .ok_or_else(|| {
                Corrupted::new(
                    format!("freelist count {count} does not fit in the freelist page"),
                    self.offset + 10,
                )
            })?;
        Ok(self.bytes[start..end as usize]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }
}

/// The header stored at the start of a bucket's value in its parent's leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketHeader {
    /// Page id of the bucket's root page; 0 for an inline bucket.
    pub root: u64,
    pub sequence: u64,
}

impl BucketHeader {
    pub fn parse(value: &[u8], at: u64) -> Result<Self, Corrupted> {
        let short = || Corrupted::new("bucket header is cut short", at);
        Ok(BucketHeader {
            root: u64_at(value, 0).ok_or_else(short)?,
            sequence: u64_at(value, 8).ok_or_else(short)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_page(txid: u64) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[8..10].copy_from_slice(&FLAG_META.to_le_bytes());
        let m = &mut p[16..80];
        m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        m[4..8].copy_from_slice(&VERSION.to_le_bytes());
        m[8..12].copy_from_slice(&4096u32.to_le_bytes());
        m[16..24].copy_from_slice(&3u64.to_le_bytes());
        m[32..40].copy_from_slice(&NO_FREELIST.to_le_bytes());
        m[40..48].copy_from_slice(&4u64.to_le_bytes());
        m[48..56].copy_from_slice(&txid.to_le_bytes());
        let sum = fnv1a64(&m[..56]);
        m[56..64].copy_from_slice(&sum.to_le_bytes());
        p
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn meta_round_trip_and_every_flipped_bit_is_rejected() {
        let page = meta_page(7);
        let meta = Meta::parse(&page).expect("valid meta");
        assert_eq!(
            (meta.page_size, meta.root, meta.pgid, meta.txid),
            (4096, 3, 4, 7)
        );
        for bit in 0..(64 * 8) {
            let mut p = page.clone();
            p[16 + bit / 8] ^= 1 << (bit % 8);
            assert!(Meta::parse(&p).is_err(), "flipped bit {bit} went unnoticed");
        }
    }

    #[test]
    fn leaf_elements_out_of_bounds_are_errors() {
        let mut p = vec![0u8; 64];
        p[8..10].copy_from_slice(&FLAG_LEAF.to_le_bytes());
        p[10..12].copy_from_slice(&1u16.to_le_bytes());
        // element 0: pos 16 (just past the table), ksize 2, vsize 3
        p[20..24].copy_from_slice(&16u32.to_le_bytes());
        p[24..28].copy_from_slice(&2u32.to_le_bytes());
        p[28..32].copy_from_slice(&3u32.to_le_bytes());
        p[32..37].copy_from_slice(b"k1abc");
        let v = PageView::new(&p, 0).expect("header");
        let e = v.leaf_element(0).expect("element");
        assert_eq!((e.key, e.value), (&b"k1"[..], &b"abc"[..]));
        p[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(PageView::new(&p, 0).unwrap().leaf_element(0).is_err());
        p[10..12].copy_from_slice(&500u16.to_le_bytes());
        assert!(PageView::new(&p, 0).unwrap().leaf_element(0).is_err());
    }
}
