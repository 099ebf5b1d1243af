//! The hash etcd's `HashKV` answers at the current revision, computed offline from a
//! snapshot file, so that a member restored from it can be checked against the file.
//!
//! etcd hashes (CRC-32C) the bucket name `key`, then every revision key and value of the
//! key bucket in order — except revisions at or below the compaction revision that its
//! in-memory index would not keep: at the current revision, that keeps only the latest
//! revision of each live key. So a tombstone or an overwritten value that compaction has
//! not yet removed from the file is not hashed. This takes two passes over the key
//! bucket: one to learn the latest revision of every key, one to hash.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::db::{Database, Entry};
use super::error::{Corrupted, SnapshotError};
use super::mvcc::{KeyValue, Revision};

/// `HashKV(0)` of a member restored from the snapshot at `path` without a revision bump.
pub fn hash_kv(path: &Path) -> Result<u32, SnapshotError> {
    let mut db = Database::open(path)?;
    let corrupted = |c| SnapshotError::corrupted(path, c);

    // Pass 1: the compaction revision, and the latest revision of every key.
    let mut compacted = 0i64;
    let mut latest: HashMap<Vec<u8>, (i64, i64, bool)> = HashMap::new();
    db.walk_root(&mut |db, name, entry, at| {
        let (Entry::Bucket(bucket), true) = (entry, name == b"key" || name == b"meta") else {
            return Ok(());
        };
        let is_key = name == b"key";
        db.walk_bucket(bucket, at, &mut |_, k, e, at| {
            let Entry::Value(v) = e else { return Ok(()) };
            if !is_key {
                if k == b"scheduledCompactRev" || k == b"finishedCompactRev" {
                    compacted = compacted.max(Revision::parse_main(v).unwrap_or(0));
                }
                return Ok(());
            }
            let rev = Revision::parse(k).ok_or_else(|| {
                Corrupted::new("key bucket holds a key that is not a revision", at)
            })?;
            let kv = KeyValue::decode(v)
                .map_err(|why| Corrupted::new(format!("key bucket value: {why}"), at))?;
            latest.insert(kv.key.to_vec(), (rev.main, rev.sub, rev.tombstone));
            Ok(())
        })
    })
    .map_err(corrupted)?;
    let keep: HashSet<(i64, i64)> = latest
        .into_values()
        .filter(|&(_, _, tombstone)| !tombstone)
        .map(|(main, sub, _)| (main, sub))
        .collect();

    // Pass 2: the hash (a fresh reader: each walk checks no page is visited twice).
    let mut db = Database::open(path)?;
    let mut hash = crc32c::crc32c(b"key");
    db.walk_root(&mut |db, name, entry, at| {
        let (Entry::Bucket(bucket), true) = (entry, name == b"key") else {
            return Ok(());
        };
        db.walk_bucket(bucket, at, &mut |_, k, e, at| {
            let Entry::Value(v) = e else { return Ok(()) };
            let rev = Revision::parse(k).ok_or_else(|| {
                Corrupted::new("key bucket holds a key that is not a revision", at)
            })?;
            // etcd skips nothing when it would keep nothing.
            if rev.main > compacted || keep.is_empty() || keep.contains(&(rev.main, rev.sub)) {
                hash = crc32c::crc32c_append(crc32c::crc32c_append(hash, k), v);
            }
            Ok(())
        })
    })
    .map_err(corrupted)?;
    Ok(hash)
}
