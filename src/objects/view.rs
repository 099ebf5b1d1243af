//! The keys of a snapshot as a read at one revision sees them, from the records of its
//! `key` bucket ([`crate::snapshot::records`]): for each key in the range, its newest
//! record at or below the revision, if that is a put.
//!
//! Memory follows what is kept per selected key (the caller's `T`), not the file.

use std::collections::BTreeMap;
use std::path::Path;

use crate::snapshot::mvcc::KeyValue;
use crate::snapshot::records::{self, History};
use crate::snapshot::{ScanOptions, SnapshotError};

/// Which keys, as etcdctl's `get KEY [RANGE_END] [--prefix|--from-key]` selects them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    /// Exclusive end; `None` for one key; empty for "every key from `start` on".
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    pub fn key(key: &[u8]) -> Self {
        KeyRange {
            start: key.to_vec(),
            end: None,
        }
    }

    /// Every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`; an empty prefix
    /// is every key, `"\0"` on).
    pub fn prefix(prefix: &[u8]) -> Self {
        if prefix.is_empty() {
            return KeyRange {
                start: vec![0],
                end: Some(Vec::new()),
            };
        }
        let mut end = prefix.to_vec();
        while let Some(&last) = end.last() {
            if last < 0xff {
                *end.last_mut().unwrap_or(&mut 0) += 1;
                return KeyRange {
                    start: prefix.to_vec(),
                    end: Some(end),
                };
            }
            end.pop();
        }
        // All 0xff: every key from the prefix on.
        KeyRange {
            start: prefix.to_vec(),
            end: Some(Vec::new()),
        }
    }

    pub fn from_key(key: &[u8]) -> Self {
        KeyRange {
            start: key.to_vec(),
            end: Some(Vec::new()),
        }
    }

    pub fn between(start: &[u8], end: &[u8]) -> Self {
        KeyRange {
            start: start.to_vec(),
            end: Some(end.to_vec()),
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.start.as_slice(),
            Some(end) if end.is_empty() => key >= self.start.as_slice(),
            Some(end) => key >= self.start.as_slice() && key < end.as_slice(),
        }
    }
}

/// A read of the snapshot: what `keep` made of each selected key's value, in key order.
pub struct View<T> {
    pub keys: BTreeMap<Vec<u8>, T>,
    pub history: History,
    /// The revision read at.
    pub revision: i64,
}

/// Why a read at a revision cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(
        "revision {asked} has been compacted away in this snapshot: its history reaches \
         back to revision {compacted} (and up to {revision})"
    )]
    Compacted {
        asked: i64,
        compacted: i64,
        revision: i64,
    },
    #[error("revision {asked} is a future revision: this snapshot ends at revision {revision}")]
    Future { asked: i64, revision: i64 },
}

/// Reads the keys in `range` as of revision `at` (`None`: the snapshot's own), keeping
/// `keep(kv)` for each. `keep` sees every put of a key in the range up to `at`, in
/// revision order, and the last one stays; `None` leaves the key out (it must say so
/// for every put of that key: decide by the key alone).
pub fn read<T>(
    path: &Path,
    options: ScanOptions,
    range: &KeyRange,
    at: Option<i64>,
    keep: &mut dyn FnMut(&KeyValue<'_>) -> Option<T>,
) -> Result<View<T>, ReadError> {
    let limit = at.unwrap_or(i64::MAX);
    let mut keys = BTreeMap::new();
    let history = records::for_each_record(path, options, &mut |rev, kv| {
        if rev.main > limit || !range.contains(kv.key) {
            return;
        }
        if rev.tombstone {
            keys.remove(kv.key);
        } else if let Some(t) = keep(kv) {
            if let Some(slot) = keys.get_mut(kv.key) {
                *slot = t;
            } else {
                keys.insert(kv.key.to_vec(), t);
            }
        }
    })?;
    let revision = at.unwrap_or(history.revision);
    if revision > history.revision {
        return Err(ReadError::Future {
            asked: revision,
            revision: history.revision,
        });
    }
    if revision < history.compact_revision {
        return Err(ReadError::Compacted {
            asked: revision,
            compacted: history.compact_revision,
            revision: history.revision,
        });
    }
    Ok(View {
        keys,
        history,
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_select_like_etcdctl() {
        let p = KeyRange::prefix(b"/registry/pods/");
        assert!(p.contains(b"/registry/pods/a/b"));
        assert!(!p.contains(b"/registry/pods0"));
        assert!(!p.contains(b"/registry/pod"));
        assert_eq!(p.end.as_deref(), Some(&b"/registry/pods0"[..]));
        assert_eq!(KeyRange::prefix(b"a\xff").end.as_deref(), Some(&b"b"[..]));
        assert!(KeyRange::prefix(b"").contains(b"anything"));
        assert!(KeyRange::prefix(b"\xff").contains(b"\xff\x01"));
        assert!(KeyRange::key(b"a").contains(b"a") && !KeyRange::key(b"a").contains(b"ab"));
        assert!(
            KeyRange::from_key(b"b").contains(b"c") && !KeyRange::from_key(b"b").contains(b"a")
        );
        assert!(!KeyRange::between(b"a", b"c").contains(b"c"));
    }
}
