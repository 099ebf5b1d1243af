//! The skeleton's records: what the stream check keeps of each page, written while the
//! snapshot streams and read back by the tree walk.
//!
//! One record per page below the high-water mark, found through an index of offsets
//! (4 bytes per page, in memory). Integers are little-endian; `var` is a LEB128 varint
//! (7 bits a byte, low bits first), which keeps a `key` bucket element at about 46 bytes.
//!
//! ```text
//! record            off  size  field
//!                     0     4  length of the rest
//!                     4    16  the page header, as streamed
//!                    20     1  kind: 0 header only (not a tree page at this id),
//!                                    1 not kept (reason byte follows: 1 the stream
//!                                      ended inside it, 2 too much held at once),
//!                                    2 leaf, 3 branch, 4 freelist
//! leaf / branch       .     4  n: elements kept (those before the first bad one)
//!                     .     .  n elements, then the error: 0, or 1 + error
//! leaf element        0     1  flags: bit 0 bucket, bit 1 value digested
//!                     1   var  offset of the value in the page (for messages)
//!                     .   var  ksize, then the key
//!                     .     .  kept value: vsize var, the value
//!                     .     .  digested value: vsize var, CRC-32C u32, KeyValue u8
//!                              (0 not decoded; 1 decoded: key fingerprint 16 bytes,
//!                              value length var; 2 rejected: reason code u8)
//! branch element      0   var  child page id
//!                     .   var  ksize, then the key
//! freelist            0     1  1: count u64 then the ids (u64 each); 0: error
//! error               0     4  length of the message, the message, offset u64
//! ```
//!
//! The file is ours and 0600, but a record that does not parse is still an error
//! (the scratch file is damaged), never a panic.

use super::super::error::Corrupted;
use super::super::live::KeyPrint;
use super::super::mvcc::KvError;
use super::super::page::{BranchElement, PageHeader};

pub(super) const KIND_HEADER_ONLY: u8 = 0;
pub(super) const KIND_NOT_KEPT: u8 = 1;
pub(super) const KIND_LEAF: u8 = 2;
pub(super) const KIND_BRANCH: u8 = 3;
pub(super) const KIND_FREELIST: u8 = 4;

/// Why a tree page was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotKept {
    /// Its overflow pages run past the end of the stream.
    StreamEnded = 1,
    /// Keeping it would have held more than the stream check's memory bound.
    TooLarge = 2,
}

const FLAG_BUCKET: u8 = 1;
const FLAG_DIGEST: u8 = 2;

/// What the stream check kept of a long value: enough for the tree-order CRC and for
/// what the status needs of a `key` bucket record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueDigest {
    pub len: u64,
    pub crc: u32,
    pub(crate) kv: KvFacts,
}

/// A digested value read as a `mvccpb.KeyValue` (done for values under revision keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KvFacts {
    NotDecoded,
    Decoded { key: KeyPrint, value_len: u64 },
    Rejected(KvError),
}

/// A leaf element's value as the walk sees it.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Digest(ValueDigest),
}

/// One element of a leaf page, from the file or from a record.
#[derive(Debug, Clone, Copy)]
pub struct LeafItem<'a> {
    pub key: &'a [u8],
    pub value: Value<'a>,
    /// Offset of the value from the start of the page, to report problems inside it.
    pub value_offset: usize,
    pub is_bucket: bool,
}

// --- writing ---

pub(super) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
pub(super) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(super) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(super) fn put_var(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Starts a record: header and kind (the length prefix is added when it is written).
pub(super) fn start(out: &mut Vec<u8>, header: &[u8; 16], kind: u8) {
    out.extend_from_slice(header);
    put_u8(out, kind);
}

pub(super) fn put_error(out: &mut Vec<u8>, error: Option<&Corrupted>) {
    match error {
        None => put_u8(out, 0),
        Some(e) => {
            put_u8(out, 1);
            put_u32(out, e.what.len() as u32);
            out.extend_from_slice(e.what.as_bytes());
            put_u64(out, e.offset);
        }
    }
}

/// Starts a leaf element; its flags byte is at the returned position, to be completed
/// with [`set_digested`] once the key is known.
pub(super) fn put_leaf_element_start(
    out: &mut Vec<u8>,
    is_bucket: bool,
    value_offset: usize,
    ksize: usize,
) -> usize {
    let at = out.len();
    put_u8(out, if is_bucket { FLAG_BUCKET } else { 0 });
    put_var(out, value_offset as u64);
    put_var(out, ksize as u64);
    at
}

pub(super) fn set_digested(out: &mut [u8], flags_at: usize) {
    if let Some(f) = out.get_mut(flags_at) {
        *f |= FLAG_DIGEST;
    }
}

pub(super) fn put_digest(out: &mut Vec<u8>, d: &ValueDigest) {
    put_var(out, d.len);
    put_u32(out, d.crc);
    match d.kv {
        KvFacts::NotDecoded => put_u8(out, 0),
        KvFacts::Decoded { key, value_len } => {
            put_u8(out, 1);
            out.extend_from_slice(&key.0);
            put_var(out, value_len);
        }
        KvFacts::Rejected(e) => {
            put_u8(out, 2);
            put_u8(out, e.code());
        }
    }
}

// --- reading ---

/// A record read back.
pub(crate) struct PageRecord<'a> {
    pub(crate) header: PageHeader,
    pub(crate) body: Body<'a>,
}

pub(crate) enum Body<'a> {
    HeaderOnly,
    NotKept(NotKept),
    Leaf {
        items: Vec<LeafItem<'a>>,
        error: Option<Corrupted>,
    },
    Branch {
        items: Vec<BranchElement<'a>>,
        error: Option<Corrupted>,
    },
    Freelist(Result<Vec<u64>, Corrupted>),
}

struct Cursor<'a> {
    b: &'a [u8],
    /// File offset of the page, for the error when the record is damaged.
    page_offset: u64,
}

impl<'a> Cursor<'a> {
    fn damaged(&self) -> Corrupted {
        Corrupted::new(
            "the stream check's scratch file is damaged (its record of this page does not parse)",
            self.page_offset,
        )
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Corrupted> {
        if n > self.b.len() {
            return Err(self.damaged());
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Corrupted> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Corrupted> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Corrupted> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn var(&mut self) -> Result<u64, Corrupted> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = self.u8()?;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.damaged())
    }
    fn size(&mut self) -> Result<usize, Corrupted> {
        let v = self.var()?;
        usize::try_from(v).map_err(|_| self.damaged())
    }
    fn error(&mut self) -> Result<Option<Corrupted>, Corrupted> {
        match self.u8()? {
            0 => Ok(None),
            1 => {
                let n = self.u32()? as usize;
                let what = String::from_utf8_lossy(self.bytes(n)?).into_owned();
                Ok(Some(Corrupted::new(what, self.u64()?)))
            }
            _ => Err(self.damaged()),
        }
    }
    fn digest(&mut self) -> Result<ValueDigest, Corrupted> {
        let len = self.var()?;
        let crc = self.u32()?;
        let kv = match self.u8()? {
            0 => KvFacts::NotDecoded,
            1 => {
                let mut key = [0u8; 16];
                key.copy_from_slice(self.bytes(16)?);
                KvFacts::Decoded {
                    key: KeyPrint(key),
                    value_len: self.var()?,
                }
            }
            2 => KvFacts::Rejected(KvError::from_code(self.u8()?).ok_or_else(|| self.damaged())?),
            _ => return Err(self.damaged()),
        };
        Ok(ValueDigest { len, crc, kv })
    }
}

impl<'a> PageRecord<'a> {
    /// Parses a record (without its length prefix) of the page at file offset `offset`.
    pub(crate) fn parse(b: &'a [u8], offset: u64) -> Result<Self, Corrupted> {
        let mut c = Cursor {
            b,
            page_offset: offset,
        };
        let header = PageHeader::parse(c.bytes(16)?, offset)?;
        let body = match c.u8()? {
            KIND_HEADER_ONLY => Body::HeaderOnly,
            KIND_NOT_KEPT => Body::NotKept(match c.u8()? {
                1 => NotKept::StreamEnded,
                2 => NotKept::TooLarge,
                _ => return Err(c.damaged()),
            }),
            KIND_LEAF => {
                let n = c.u32()? as usize;
                let mut items = Vec::with_capacity(n.min(c.b.len() / 5));
                for _ in 0..n {
                    let flags = c.u8()?;
                    let value_offset = c.size()?;
                    let ksize = c.size()?;
                    let key = c.bytes(ksize)?;
                    let value = if flags & FLAG_DIGEST != 0 {
                        Value::Digest(c.digest()?)
                    } else {
                        let vsize = c.size()?;
                        Value::Bytes(c.bytes(vsize)?)
                    };
                    items.push(LeafItem {
                        key,
                        value,
                        value_offset,
                        is_bucket: flags & FLAG_BUCKET != 0,
                    });
                }
                Body::Leaf {
                    items,
                    error: c.error()?,
                }
            }
            KIND_BRANCH => {
                let n = c.u32()? as usize;
                let mut items = Vec::with_capacity(n.min(c.b.len() / 2));
                for _ in 0..n {
                    let child = c.var()?;
                    let ksize = c.size()?;
                    items.push(BranchElement {
                        key: c.bytes(ksize)?,
                        child,
                    });
                }
                Body::Branch {
                    items,
                    error: c.error()?,
                }
            }
            KIND_FREELIST => Body::Freelist(match c.u8()? {
                1 => {
                    let n = c.u64()?;
                    let ids =
                        c.bytes(usize::try_from(n).unwrap_or(usize::MAX).saturating_mul(8))?;
                    Ok(ids
                        .chunks_exact(8)
                        .map(|w| {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(w);
                            u64::from_le_bytes(a)
                        })
                        .collect())
                }
                0 => Err(c.error()?.ok_or_else(|| c.damaged())?),
                _ => return Err(c.damaged()),
            }),
            _ => return Err(c.damaged()),
        };
        if !c.b.is_empty() {
            return Err(c.damaged());
        }
        Ok(PageRecord { header, body })
    }
}

impl std::fmt::Display for NotKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotKept::StreamEnded => "the stream ended inside it",
            NotKept::TooLarge => {
                "it (with the pages streaming beside it) needed more memory than the \
                 stream check holds at once"
            }
        })
    }
}
