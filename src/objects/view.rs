//! The keys of a snapshot as a read at one revision sees them, from the records of its
//! `key` bucket ([`crate::snapshot::records`]): for each key in the range, its newest
//! record at or below the revision, if that is a put.
//!
//! Memory follows what is kept per selected key (the caller's `T`), not the file: the
//! keys and their `T` in one vector, found again through a hash of the key (about 30
//! bytes per key), and sorted once at the end.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
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
        while let Some(last) = end.last_mut() {
            if *last < 0xff {
                *last += 1;
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
    pub keys: Vec<(Vec<u8>, T)>,
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
    let mut keys = Keys::default();
    let history = records::for_each_record(path, options, &mut |rev, kv| {
        if rev.main > limit || !range.contains(kv.key) {
            return;
        }
        if rev.tombstone {
            if let Some(i) = keys.find(kv.key) {
                keys.rows[i].1 = None;
            }
        } else if let Some(t) = keep(kv) {
            match keys.find(kv.key) {
                Some(i) => keys.rows[i].1 = Some(t),
                None => keys.insert(kv.key, t),
            }
        }
    })?;
    let keys = keys.finish();
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

/// The keys seen so far, each with its `T` (`None` once deleted), in a vector found
/// again through a hash of the key; entries whose hashes collide are chained.
struct Keys<T> {
    rows: Vec<(Vec<u8>, Option<T>)>,
    /// Hash of a key → its newest row with that hash.
    index: HashMap<u64, u32>,
    /// Row → the previous row with the same hash (`NONE`: the last).
    chain: Vec<u32>,
    hasher: RandomState,
}

const NONE: u32 = u32::MAX;

impl<T> Default for Keys<T> {
    fn default() -> Self {
        Keys {
            rows: Vec::new(),
            index: HashMap::new(),
            chain: Vec::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<T> Keys<T> {
    fn find(&self, key: &[u8]) -> Option<usize> {
        let mut i = *self.index.get(&self.hasher.hash_one(key))?;
        while i != NONE {
            let at = i as usize;
            if self.rows[at].0 == key {
                return Some(at);
            }
            i = self.chain[at];
        }
        None
    }

    fn insert(&mut self, key: &[u8], t: T) {
        let row = u32::try_from(self.rows.len()).unwrap_or(NONE);
        let previous = self.index.insert(self.hasher.hash_one(key), row);
        self.chain.push(previous.unwrap_or(NONE));
        self.rows.push((key.to_vec(), Some(t)));
    }

    /// The live keys in key order.
    fn finish(self) -> Vec<(Vec<u8>, T)> {
        let Keys { rows, .. } = self;
        let mut live: Vec<(Vec<u8>, T)> = rows
            .into_iter()
            .filter_map(|(k, t)| Some((k, t?)))
            .collect();
        live.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        live
    }
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

    #[test]
    fn keys_keep_the_last_put_and_forget_deletes() {
        let mut keys = Keys::default();
        for (k, v) in [("b", 1), ("a", 2), ("c", 3)] {
            keys.insert(k.as_bytes(), v);
        }
        let b = keys.find(b"b").unwrap();
        keys.rows[b].1 = Some(10);
        let c = keys.find(b"c").unwrap();
        keys.rows[c].1 = None;
        assert_eq!(keys.find(b"d"), None);
        assert_eq!(keys.finish(), vec![(b"a".to_vec(), 2), (b"b".to_vec(), 10)]);
    }
}
