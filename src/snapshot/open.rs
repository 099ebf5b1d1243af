//! What a snapshot's length and meta pages say, checked before any tree page is read:
//! where the trailer is, which meta page is in use, how big the pages are and how many
//! there are. The same checks serve a file ([`super::db::Database::open`]) and a stream
//! ([`super::stream`]), which has only its first bytes while it streams.

use std::path::Path;

use super::db::{TRAILER_LEN, has_trailer};
use super::error::{Corrupted, SnapshotError};
use super::page::{MAX_PAGE_SIZE, MIN_PAGE_SIZE, Meta, MetaProblem, PAGE_HEADER_SIZE};

/// Reads `len` bytes at an offset of the database (fewer when it ends sooner).
pub(crate) type ReadAt<'a> = dyn Fn(u64, usize) -> Result<Vec<u8>, SnapshotError> + 'a;

/// The meta page in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetaChoice {
    pub(crate) meta: Meta,
    /// Which meta page (0 or 1) is in use, and why the other was not, if it was not.
    pub(crate) meta_page: u8,
    pub(crate) warning: Option<String>,
}

/// A snapshot's length, trailer and meta page, all checked.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) file_len: u64,
    /// Length of the bbolt bytes: the file without its trailer.
    pub(crate) db_len: u64,
    pub(crate) trailer: Option<[u8; 32]>,
    pub(crate) choice: MetaChoice,
}

/// The checks bbolt makes when it opens a file, for a snapshot of `file_len` bytes whose
/// last 32 bytes `read_trailer` returns and whose database `read` reads.
pub(crate) fn layout(
    path: &Path,
    file_len: u64,
    read_trailer: &dyn Fn() -> Result<[u8; 32], SnapshotError>,
    read: &ReadAt<'_>,
) -> Result<Layout, SnapshotError> {
    if file_len < 2 * u64::from(MIN_PAGE_SIZE) {
        return Err(SnapshotError::NotBbolt {
            path: path.to_path_buf(),
            reason: format!("{file_len} bytes is too small to hold the two bbolt meta pages"),
        });
    }
    let (db_len, trailer) = if has_trailer(file_len) {
        (file_len - TRAILER_LEN, Some(read_trailer()?))
    } else {
        (file_len, None)
    };
    let choice = choose_meta(path, db_len, read)?;
    let meta = choice.meta;
    let ps = u64::from(meta.page_size);
    // bbolt files are whole pages; a snapshot adds exactly the trailer.
    if db_len % ps != 0 {
        return Err(SnapshotError::BadLength {
            path: path.to_path_buf(),
            len: file_len,
            page_size: meta.page_size,
        });
    }
    let needed = meta.pgid.checked_mul(ps).ok_or_else(|| {
        SnapshotError::corrupted(
            path,
            Corrupted::new(format!("meta page count {} is absurd", meta.pgid), 56),
        )
    })?;
    if needed > db_len {
        return Err(SnapshotError::Truncated {
            path: path.to_path_buf(),
            expected: needed,
            actual: file_len,
        });
    }
    if meta.pgid < 3 || meta.root < 2 || meta.root >= meta.pgid {
        return Err(SnapshotError::corrupted(
            path,
            Corrupted::new(
                format!(
                    "meta root page {} is outside the database ({} pages)",
                    meta.root, meta.pgid
                ),
                u64::from(choice.meta_page) * ps + 32,
            ),
        ));
    }
    Ok(Layout {
        file_len,
        db_len,
        trailer,
        choice,
    })
}

/// The meta page bbolt would use in a database of `db_len` bytes: the valid one with the
/// higher txid. Reads at most the first 1 MiB + 80 bytes, and the answer is the same for
/// every `db_len` of at least [`HEAD_NEEDED`].
pub(crate) fn choose_meta(
    path: &Path,
    db_len: u64,
    read: &ReadAt<'_>,
) -> Result<MetaChoice, SnapshotError> {
    let read = |off: u64, len: usize| read(off, len.min(db_len.saturating_sub(off) as usize));
    // Meta page 0 tells the page size. If it is damaged, look for meta page 1 at every
    // page size bbolt could have used, as bbolt itself falls back to meta page 1.
    let meta0 = Meta::parse(&read(0, PAGE_HEADER_SIZE + 64)?);
    let page_size = match meta0 {
        Ok(m) => m.page_size,
        Err(problem) => {
            let mut found = None;
            let mut ps = MIN_PAGE_SIZE;
            while ps <= MAX_PAGE_SIZE && u64::from(ps) < db_len {
                let candidate = Meta::parse(&read(u64::from(ps), PAGE_HEADER_SIZE + 64)?);
                if candidate.is_ok_and(|m| m.page_size == ps) {
                    found = Some(ps);
                    break;
                }
                ps *= 2;
            }
            match found {
                Some(ps) => ps,
                None if problem == MetaProblem::Magic => {
                    return Err(SnapshotError::NotBbolt {
                        path: path.to_path_buf(),
                        reason: "no bbolt magic number in the meta pages".into(),
                    });
                }
                None => {
                    return Err(SnapshotError::corrupted(
                        path,
                        Corrupted::new(
                            format!(
                                "both meta pages are invalid (meta page 0: {problem}; \
                                 meta page 1 not found)"
                            ),
                            0,
                        ),
                    ));
                }
            }
        }
    };
    if !page_size.is_power_of_two() || !(MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(SnapshotError::corrupted(
            path,
            Corrupted::new(format!("meta page size {page_size} is not valid"), 24),
        ));
    }
    let ps = u64::from(page_size);
    let meta1 = if 2 * ps <= db_len {
        Meta::parse(&read(ps, PAGE_HEADER_SIZE + 64)?)
    } else {
        Err(MetaProblem::Magic)
    };

    // Like bbolt: prefer the meta with the higher txid; fall back to the other one.
    let (meta, meta_page, warning) = match (meta0, meta1) {
        (Ok(a), Ok(b)) if b.txid > a.txid => (b, 1, None),
        (Ok(a), Ok(_)) => (a, 0, None),
        (Ok(a), Err(p)) => (a, 0, Some(format!("meta page 1 is invalid ({p})"))),
        (Err(p), Ok(b)) => (b, 1, Some(format!("meta page 0 is invalid ({p})"))),
        (Err(p0), Err(p1)) => {
            return Err(SnapshotError::corrupted(
                path,
                Corrupted::new(
                    format!("both meta pages are invalid (page 0: {p0}; page 1: {p1})"),
                    0,
                ),
            ));
        }
    };
    if meta.page_size != page_size {
        return Err(SnapshotError::corrupted(
            path,
            Corrupted::new(
                format!(
                    "meta pages disagree on the page size ({} and {page_size})",
                    meta.page_size
                ),
                u64::from(meta_page) * ps + 24,
            ),
        ));
    }
    Ok(MetaChoice {
        meta,
        meta_page,
        warning,
    })
}

/// From this length on, [`choose_meta`] does not depend on the database's length: meta
/// page 1 is looked for at page sizes up to 1 MiB, and read when two pages fit.
pub(crate) const HEAD_NEEDED: usize = 2 * MAX_PAGE_SIZE as usize + PAGE_HEADER_SIZE + 64;
