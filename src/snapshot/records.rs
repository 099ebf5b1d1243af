//! Every record of the `key` bucket with its decoded `mvccpb.KeyValue`, in revision
//! order: what offline reads of keys and their history (`lifeboat get`, `objects`,
//! `diff`) are built on.
//!
//! The walk checks the tree as every other walk does; the `meta` bucket (walked after
//! `key`, buckets go in name order) gives the compaction revision, so the caller learns
//! how far back the history reaches only when the walk is over ([`History`]).

use std::path::Path;

use super::db::{Database, Entry};
use super::error::{Corrupted, SnapshotError};
use super::mvcc::{KeyValue, Revision};
use super::status::{ScanOptions, walk_with_trailer_check};

/// How far the history inside a snapshot reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// The store's revision (what a read at "now" sees): the last revision, but at least
    /// the compaction revision and 1.
    pub revision: i64,
    /// Revisions at or below this were compacted: only the newest record of each key at
    /// or below it survives, so reads are exact from here on.
    pub compact_revision: i64,
}

/// Calls `on_record` for every record of the `key` bucket, in revision order, with its
/// revision and decoded `KeyValue` (which borrows the page it lives in). The sha256
/// trailer is checked in a second thread when `options.verify_trailer`. A value that is
/// not a `mvccpb.KeyValue` is damage, reported as such.
pub fn for_each_record(
    path: &Path,
    options: ScanOptions,
    on_record: &mut dyn FnMut(Revision, &KeyValue<'_>),
) -> Result<History, SnapshotError> {
    let (history, _, _) = walk_with_trailer_check(path, options, &mut |db| walk(db, on_record))?;
    Ok(history)
}

fn walk(
    db: &mut Database,
    on_record: &mut dyn FnMut(Revision, &KeyValue<'_>),
) -> Result<History, Corrupted> {
    let mut last = 0i64;
    let mut compacted = 0i64;
    db.walk_root(&mut |db, name, entry, at| {
        let Entry::Bucket(bucket) = entry else {
            return Ok(());
        };
        match name {
            b"key" => db.walk_bucket(bucket, at, &mut |_, k, e, at| {
                let Entry::Value(v) = e else {
                    return Err(Corrupted::new("key bucket holds a nested bucket", at));
                };
                let rev = Revision::parse(k).ok_or_else(|| {
                    Corrupted::new(
                        format!("key bucket holds {:?}, not a revision", k.escape_ascii()),
                        at,
                    )
                })?;
                let kv = KeyValue::decode(v).map_err(|why| {
                    Corrupted::new(
                        format!(
                            "key bucket value at revision {}/{}: not an mvccpb.KeyValue ({why})",
                            rev.main, rev.sub
                        ),
                        at,
                    )
                })?;
                last = rev.main;
                on_record(rev, &kv);
                Ok(())
            }),
            b"meta" => db.walk_bucket(bucket, at, &mut |_, k, e, _| {
                if let (b"finishedCompactRev" | b"scheduledCompactRev", Entry::Value(v)) = (k, e) {
                    compacted = compacted.max(Revision::parse_main(v).unwrap_or(0));
                }
                Ok(())
            }),
            _ => Ok(()),
        }
    })?;
    Ok(History {
        revision: last.max(compacted).max(1),
        compact_revision: compacted,
    })
}
