//! Checking a snapshot while it streams, with no copy of the database: what `lifeboat
//! backup` uses instead of writing the stream to a spool file and reading it back.
//!
//! The stream arrives in page-id order, but the B+trees are walked in key order, which
//! only their branch pages tell, and those may come anywhere. So the check works in two
//! steps:
//!
//! 1. **While the stream passes** ([`StreamCheck::feed`]), every page below the
//!    high-water mark gets a record in a scratch file, the *skeleton*
//!    ([`record`] has the layout): branch pages with their keys and children; leaf pages
//!    with their keys, values up to 64 KiB whole (meta, members, leases, users...),
//!    bucket headers and inline buckets whole, and every other value as its length and
//!    CRC-32C — for the `key` bucket's values (under revision keys) also whether they are
//!    a `mvccpb.KeyValue` and the fingerprint of the user key inside ([`run`]); other
//!    pages by their header alone. It cannot know yet which pages the trees reach — free
//!    pages hold stale copies, an overflow page holds value bytes — so it keeps every
//!    page that says it is a tree page at its own id; what is never reached is never
//!    read again.
//! 2. **When the stream has ended** ([`StreamCheck::finish`], [`Skeleton::status`]), the
//!    length and meta pages are checked as for a file, and the very walk that checks a
//!    file ([`super::db`]) runs over the skeleton: the same page, order, bounds and
//!    reachability checks, the same errors, the same figures. The tree-order hash is put
//!    together from the kept bytes and the digests ([`super::crc::combine`]); the live
//!    keys are counted from the fingerprints.
//!
//! The result equals [`super::scan_status`] on the same bytes without its trailer check
//! (tests compare them on real snapshots and damaged ones), with one rule added: in a
//! tree page, elements must lie one after the other, as bbolt writes them.
//!
//! Memory: the stream's first two pages (the meta pages, checked again at the end; the
//! first 2 MiB when meta page 0 is damaged and meta page 1 must be looked for), the pages
//! being kept (the element table and kept bytes of each, normally one or two pages; at
//! most [`MAX_HELD`] together, beyond which the largest is dropped and fails the check
//! if a tree reaches it), and 4 bytes per page for the index of the skeleton (1 MiB per
//! GiB of database). The skeleton itself is a file: 24 bytes per page that is not a tree
//! page (an overflow page) and about 46 bytes per `key` bucket record (2% of the busy
//! bench shape's 1.36 GB, 23% of the tiny shape's 1M keys of ~100 bytes).

mod pager;
pub(crate) mod record;
mod run;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::db::{Database, TRAILER_LEN, has_trailer};
use super::error::{Corrupted, SnapshotError};
use super::live::Fingerprinter;
use super::open::{self, HEAD_NEEDED, Layout};
use super::page::{MAX_PAGE_SIZE, MIN_PAGE_SIZE, Meta, PAGE_HEADER_SIZE};
use super::readahead::ReadAhead;
use super::status::{self, Status};
use pager::{Pager, Scratch};

/// The pages being kept may hold at most this much memory together.
pub const MAX_HELD: usize = 16 << 20;
/// At most this many pages are kept at once (overlapping runs: stale free pages whose
/// overflow covers live ones); beyond it the oldest is dropped.
const MAX_RUNS: usize = 256;
/// Bytes of the stream held, at most, until the meta pages can be read: after this much,
/// which meta page is in use does not depend on the stream's length any more.
const HEAD_LEN: usize = HEAD_NEEDED + TRAILER_LEN as usize;
/// The page header and meta of meta page 0.
const META_PROBE: usize = PAGE_HEADER_SIZE + 64;
/// Index entry of a page without a record (the meta pages).
const NO_RECORD: u32 = u32::MAX;

/// A snapshot being checked as it streams. Feed it every byte of the stream (the
/// trailer included), then [`StreamCheck::finish`] it.
pub struct StreamCheck {
    label: PathBuf,
    scratch: Scratch,
    prints: Fingerprinter,
    /// The first [`HEAD_LEN`] bytes of the stream.
    head: Vec<u8>,
    total: u64,
    /// The last 32 bytes seen (the trailer, once the stream ends).
    tail: Vec<u8>,
    pager: Option<Pager>,
    /// The meta pages could not be read: nothing more is kept, [`StreamCheck::finish`]
    /// says why.
    unreadable: bool,
}

impl StreamCheck {
    /// Creates the scratch file at `scratch` (mode 0600; it must not exist) for checking
    /// the snapshot named `label` in messages.
    pub fn create(scratch: &Path, label: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(scratch)?;
        Ok(StreamCheck {
            label: label.to_path_buf(),
            scratch: Scratch {
                path: scratch.to_path_buf(),
                out: BufWriter::with_capacity(64 << 10, file),
                written: 0,
            },
            prints: Fingerprinter::new(),
            head: Vec::new(),
            total: 0,
            tail: Vec::with_capacity(2 * TRAILER_LEN as usize),
            pager: None,
            unreadable: false,
        })
    }

    /// The next bytes of the stream. Fails only when the scratch file cannot be written.
    pub fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        self.total += bytes.len() as u64;
        self.keep_tail(bytes);
        if self.pager.is_none() && !self.unreadable {
            if self.head.is_empty() {
                // Exactly: growing by doubling would copy it (4 MiB at once). Only what
                // is written to becomes resident: 8 KiB when meta page 0 is good.
                self.head.reserve_exact(HEAD_LEN);
            }
            loop {
                let target = self.head_target();
                let take = (target - self.head.len()).min(bytes.len());
                self.head.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.head.len() >= target && target > META_PROBE {
                    break;
                }
                if bytes.is_empty() {
                    return Ok(());
                }
            }
            // Enough to choose the meta page as the end of the stream will: the stream
            // holds at least this much database.
            self.start_pages((self.head.len() - TRAILER_LEN as usize) as u64)?;
        }
        match &mut self.pager {
            Some(p) => p.feed(bytes, &mut self.scratch, &self.prints),
            None => Ok(()),
        }
    }

    /// How much of the stream's start to hold before choosing the meta page. With a
    /// good meta page 0 the choice is settled once the database surely holds two pages
    /// (meta page 1 is read, the page size known); otherwise meta page 1 is looked for
    /// at every page size, which takes [`HEAD_NEEDED`].
    fn head_target(&self) -> usize {
        let Some(first) = self.head.get(..META_PROBE) else {
            return META_PROBE;
        };
        match Meta::parse(first) {
            Ok(m)
                if m.page_size.is_power_of_two()
                    && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&m.page_size) =>
            {
                2 * m.page_size as usize + TRAILER_LEN as usize
            }
            _ => HEAD_LEN,
        }
    }

    fn keep_tail(&mut self, bytes: &[u8]) {
        let t = TRAILER_LEN as usize;
        if bytes.len() >= t {
            self.tail.clear();
            self.tail.extend_from_slice(&bytes[bytes.len() - t..]);
        } else {
            self.tail.extend_from_slice(bytes);
            let excess = self.tail.len().saturating_sub(t);
            self.tail.drain(..excess);
        }
    }

    /// Chooses the meta page from the head, for a database of `db_len` bytes, and keeps
    /// the pages of the head.
    fn start_pages(&mut self, db_len: u64) -> io::Result<()> {
        let head = std::mem::take(&mut self.head);
        let choice = open::choose_meta(&self.label, db_len, &|off, len| read_head(&head, off, len));
        match choice {
            Err(_) => self.unreadable = true,
            Ok(choice) => {
                let mut pager = Pager::new(choice);
                pager.feed(&head, &mut self.scratch, &self.prints)?;
                self.pager = Some(pager);
            }
        }
        self.head = head;
        Ok(())
    }

    /// Writes out what is still buffered; fails when the scratch file cannot be written.
    pub fn flush(&mut self) -> io::Result<()> {
        self.scratch.out.flush()
    }

    /// The stream has ended: checks its length and meta pages as for a file, and returns
    /// the skeleton to walk. Errors name the snapshot by its label (or the scratch file,
    /// when that cannot be written).
    pub fn finish(mut self) -> Result<Skeleton, SnapshotError> {
        let scratch_path = self.scratch.path.clone();
        let scratch_err = |e| SnapshotError::io(&scratch_path, e);
        if self.pager.is_none() && !self.unreadable {
            // The whole stream is in the head.
            let db_len = if has_trailer(self.total) {
                self.total - TRAILER_LEN
            } else {
                self.total
            };
            self.start_pages(db_len).map_err(scratch_err)?;
        }
        if let Some(p) = &mut self.pager {
            p.finish(&mut self.scratch).map_err(scratch_err)?;
        }
        self.scratch.out.flush().map_err(scratch_err)?;
        let tail = <[u8; 32]>::try_from(self.tail.as_slice()).unwrap_or([0; 32]);
        let head = &self.head;
        let layout = open::layout(&self.label, self.total, &|| Ok(tail), &|off, len| {
            read_head(head, off, len)
        })?;
        let inconsistent = |what: &str| {
            SnapshotError::corrupted(
                &self.label,
                Corrupted::new(format!("the stream check {what}"), 0),
            )
        };
        let Some(pager) = self.pager else {
            return Err(inconsistent(
                "could not read the meta pages while streaming",
            ));
        };
        if pager.choice != layout.choice {
            return Err(inconsistent(
                "read the meta pages differently while streaming",
            ));
        }
        if (pager.index.len() as u64) < layout.choice.meta.pgid {
            return Err(inconsistent("did not see every page"));
        }
        let file = self
            .scratch
            .out
            .into_inner()
            .map_err(|e| scratch_err(e.into_error()))?;
        Ok(Skeleton {
            label: self.label,
            pages: SkeletonPages {
                reader: ReadAhead::new(self.scratch.written),
                file,
                path: scratch_path,
                index: pager.index,
            },
            layout,
            prints: self.prints,
        })
    }
}

fn read_head(head: &[u8], off: u64, len: usize) -> Result<Vec<u8>, SnapshotError> {
    usize::try_from(off)
        .ok()
        .and_then(|o| head.get(o..o.checked_add(len)?))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| {
            SnapshotError::io(
                Path::new("the start of the stream"),
                io::Error::other("read past the bytes kept"),
            )
        })
}

/// The skeleton of a streamed snapshot, ready to be walked.
pub struct Skeleton {
    label: PathBuf,
    pages: SkeletonPages,
    layout: Layout,
    prints: Fingerprinter,
}

impl Skeleton {
    /// Walks the skeleton with every check of a file scan: the status figures, exactly
    /// as [`super::scan_status`] computes them for the same bytes without checking the
    /// trailer.
    pub fn status(self) -> Result<Status, SnapshotError> {
        let mut db = Database::from_skeleton(&self.label, self.pages, self.layout);
        let label = self.label;
        status::skeleton_status(&mut db, self.prints)
            .map_err(|c| SnapshotError::corrupted(&label, c))
    }
}

/// Checks the snapshot `reader` holds as `lifeboat backup` checks a stream, in pieces of
/// `chunk` bytes (etcd sends 32 KiB), with its scratch file at `scratch` (removed
/// afterwards).
pub fn check_reader(
    reader: &mut dyn Read,
    chunk: usize,
    scratch: &Path,
    label: &Path,
) -> Result<Status, SnapshotError> {
    let scratch_err = |e| SnapshotError::io(scratch, e);
    let mut check = StreamCheck::create(scratch, label).map_err(scratch_err)?;
    let result = (|| {
        let mut buf = vec![0u8; chunk.max(1)];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| SnapshotError::io(label, e))?;
            if n == 0 {
                break;
            }
            check.feed(&buf[..n]).map_err(scratch_err)?;
        }
        check.finish()?.status()
    })();
    let _ = std::fs::remove_file(scratch);
    result
}

/// The skeleton's records, read back by page id.
pub(crate) struct SkeletonPages {
    file: File,
    path: PathBuf,
    /// Offset (in 8-byte units) of every page's record.
    index: Vec<u32>,
    reader: ReadAhead,
}

impl SkeletonPages {
    /// The record of page `id` (at stream offset `offset`), without its length.
    pub(crate) fn record(&mut self, id: u64, offset: u64) -> Result<Vec<u8>, Corrupted> {
        let at = usize::try_from(id)
            .ok()
            .and_then(|i| self.index.get(i))
            .copied()
            .filter(|&a| a != NO_RECORD)
            .ok_or_else(|| Corrupted::new(format!("page {id} was not streamed"), offset))?;
        let at = u64::from(at) * 8;
        let failed = |e: io::Error| {
            Corrupted::new(
                format!(
                    "reading page {id} from the stream check's scratch file {}: {e}",
                    self.path.display()
                ),
                offset,
            )
        };
        let mut len = [0u8; 4];
        self.reader
            .read_exact_at(&self.file, &mut len, at)
            .map_err(failed)?;
        let len = u32::from_le_bytes(len) as usize;
        let mut buf = vec![0u8; len];
        self.reader
            .read_exact_at(&self.file, &mut buf, at + 4)
            .map_err(failed)?;
        Ok(buf)
    }
}
