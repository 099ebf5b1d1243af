//! One pass over a snapshot file: the figures `etcdutl snapshot status` prints, our own
//! extra figures, and the index of live keys that `inspect` summarises.
//!
//! What etcdutl 3.5 computes (`etcdutl/snapshot/v3_snapshot.go`, `Status`):
//! - `hash`: CRC-32C fed, for every top-level bucket in name order, the bucket name, then
//!   every key and value of that bucket in key order (a nested bucket contributes only
//!   its key);
//! - `revision`: the main revision of the last key of the `key` bucket;
//! - `totalKey`: the number of entries in all top-level buckets together;
//! - `totalSize`: pages in use × page size.
//!
//! The sha256 trailer is checked in a second thread while the tree is walked.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::db::{BucketRef, Database, Entry};
use super::error::{Corrupted, SnapshotError};
use super::live::{Fingerprinter, KeyPrint, LiveSet};
use super::mvcc::{KeyValue, Revision};
use super::stream::record::{KvFacts, Value};

/// The figures of one snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    // --- exactly as etcdutl 3.5 reports them ---
    pub hash: u32,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
    // --- ours ---
    /// Keys that exist at `revision` (the latest version of each key, deletes applied);
    /// what etcd 3.6's `totalKey` counts.
    pub live_keys: u64,
    pub consistent_index: Option<u64>,
    pub term: Option<u64>,
    pub scheduled_compact_revision: Option<i64>,
    pub finished_compact_revision: Option<i64>,
    /// `meta/storageVersion`, written by etcd 3.6 and later.
    pub storage_version: Option<String>,
    /// The member names recorded in the `members` bucket.
    pub members: Vec<String>,
    pub leases: u64,
    pub auth_enabled: bool,
    pub auth_users: u64,
    pub page_size: u32,
    pub txid: u64,
    /// `verified` or `absent` (a mismatch is an error, never a status).
    pub sha256_trailer: TrailerState,
    /// sha256 of the bbolt bytes (the trailer's value when there is one); `None` when
    /// the check was skipped.
    pub sha256: Option<String>,
    pub file_size: u64,
    /// Set when one of the two meta pages was invalid and the other one was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrailerState {
    Verified,
    Absent,
    /// Present, but the check was skipped on request (`--skip-hash-check`).
    NotChecked,
}

/// What a scan does beyond reading the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    /// Compute the sha256 of the bbolt bytes and compare it with the trailer. This is
    /// the slowest part of a scan (sha256 runs at about 1.5 GB/s per core).
    pub verify_trailer: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            verify_trailer: true,
        }
    }
}

impl Status {
    /// The store's revision as etcd computes it when it opens the file: the last revision
    /// in the key bucket, but at least the compaction revision (compaction can remove the
    /// newest tombstones) and at least 1 (an empty store is at revision 1).
    pub fn store_revision(&self) -> i64 {
        [
            self.revision,
            self.finished_compact_revision.unwrap_or(0),
            self.scheduled_compact_revision.unwrap_or(0),
            1,
        ]
        .into_iter()
        .max()
        .unwrap_or(1)
    }
}

/// The live keys of a snapshot: key → size of its value.
#[derive(Debug, Default, Clone)]
pub struct KeyIndex {
    pub keys: HashMap<Vec<u8>, u64>,
}

/// Reads the whole file once: status figures and the live-key index. The sha256 is
/// computed in a second thread while the tree is walked. The index holds every live
/// key's bytes; [`scan_status`] and [`super::inventory::scan_inventory`] need much less
/// memory.
pub fn scan(path: &Path, options: ScanOptions) -> Result<(Status, KeyIndex), SnapshotError> {
    let mut index = KeyIndex::default();
    let mut status = scan_with(path, options, &mut |key, size| match size {
        None => {
            index.keys.remove(key);
        }
        Some(size) => {
            if let Some(s) = index.keys.get_mut(key) {
                *s = size;
            } else {
                index.keys.insert(key.to_vec(), size);
            }
        }
    })?;
    status.live_keys = index.keys.len() as u64;
    Ok((status, index))
}

/// The status figures alone: the live keys are counted by fingerprint (see
/// [`super::live`]), about 26 bytes per live key whatever the keys' length.
pub fn scan_status(path: &Path, options: ScanOptions) -> Result<Status, SnapshotError> {
    let mut live = LiveSet::<()>::new();
    let mut status = scan_with(path, options, &mut |key, size| match size {
        None => live.delete(key),
        Some(_) => live.put(key, ()),
    })?;
    status.live_keys = live.count();
    Ok(status)
}

/// What a walk reports for every record of the `key` bucket, in revision order: the
/// user key and the size of its value, or `None` for a delete. `live_keys` is left to
/// the caller.
pub(crate) type OnKey<'a> = dyn FnMut(&[u8], Option<u64>) + 'a;

/// A user key as a walk reports it: its bytes (from a file), or its fingerprint (from a
/// stream check's skeleton, which keeps no user keys).
pub(crate) enum UserKey<'a> {
    Bytes(&'a [u8]),
    Print(KeyPrint),
}

/// The status figures of a stream check's skeleton, as [`scan_status`] computes them
/// for the same bytes without checking the trailer; `prints` made the skeleton's
/// fingerprints.
pub(crate) fn skeleton_status(
    db: &mut Database,
    prints: Fingerprinter,
) -> Result<Status, Corrupted> {
    let mut live = LiveSet::<()>::with_fingerprinter(prints);
    let mut acc = walk(db, &mut |key, size| match (key, size) {
        (UserKey::Bytes(k), None) => live.delete(k),
        (UserKey::Bytes(k), Some(_)) => live.put(k, ()),
        (UserKey::Print(p), None) => live.delete_print(p),
        (UserKey::Print(p), Some(_)) => live.put_print(p, ()),
    })?;
    acc.status.live_keys = live.count();
    acc.status.sha256_trailer = if db.trailer().is_some() {
        TrailerState::NotChecked
    } else {
        TrailerState::Absent
    };
    Ok(acc.status)
}

/// Reads the whole file once; the sha256 is computed in a second thread while the tree
/// is walked.
pub(crate) fn scan_with(
    path: &Path,
    options: ScanOptions,
    on_key: &mut OnKey<'_>,
) -> Result<Status, SnapshotError> {
    let (mut acc, trailer, digest) = walk_with_trailer_check(path, options, &mut |db| {
        // A file's walk reports key bytes; fingerprints come only from skeletons.
        walk(db, &mut |key, size| {
            if let UserKey::Bytes(k) = key {
                on_key(k, size)
            }
        })
    })?;
    acc.status.sha256_trailer = trailer;
    acc.status.sha256 = digest.as_ref().map(|d| hex(d));
    Ok(acc.status)
}

/// Opens the file at `path` and runs `walk` over it while, when `options.verify_trailer`,
/// a second thread computes the sha256 of its bbolt bytes. A wrong trailer explains any
/// structural damage the walk found, so it is reported first. Returns what the walk
/// made, the trailer's state and the digest.
pub(crate) fn walk_with_trailer_check<T>(
    path: &Path,
    options: ScanOptions,
    walk: &mut dyn FnMut(&mut Database) -> Result<T, Corrupted>,
) -> Result<(T, TrailerState, Option<[u8; 32]>), SnapshotError> {
    let mut db = Database::open(path)?;
    let hash_file = db.try_clone_file()?;
    let db_len = db.db_len();
    std::thread::scope(|s| {
        let sha = options
            .verify_trailer
            .then(|| s.spawn(move || sha256_prefix(hash_file, db_len)));
        let walked = walk(&mut db);
        let digest = match sha {
            Some(handle) => Some(
                handle
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("sha256 thread failed")))
                    .map_err(|e| SnapshotError::io(path, e))?,
            ),
            None => None,
        };
        let trailer = trailer_state(path, db.trailer(), digest.as_ref())?;
        let made = walked.map_err(|c| SnapshotError::corrupted(path, c))?;
        Ok((made, trailer, digest))
    })
}

/// What the trailer check found: the trailer `trailer` against the `digest` computed
/// (none when the check was skipped); a mismatch is an error.
fn trailer_state(
    path: &Path,
    trailer: Option<&[u8; 32]>,
    digest: Option<&[u8; 32]>,
) -> Result<TrailerState, SnapshotError> {
    match (trailer, digest) {
        (Some(t), Some(d)) if t == d => Ok(TrailerState::Verified),
        (Some(t), Some(d)) => Err(SnapshotError::TrailerMismatch {
            path: path.to_path_buf(),
            expected: hex(t),
            actual: hex(d),
        }),
        (Some(_), None) => Ok(TrailerState::NotChecked),
        (None, _) => Ok(TrailerState::Absent),
    }
}

struct Accumulator {
    status: Status,
    crc: u32,
}

fn walk(
    db: &mut Database,
    on_key: &mut dyn FnMut(UserKey<'_>, Option<u64>),
) -> Result<Accumulator, Corrupted> {
    let meta = *db.meta();
    let mut acc = Accumulator {
        status: Status {
            hash: 0,
            revision: 0,
            total_key: 0,
            total_size: db.size(),
            live_keys: 0,
            consistent_index: None,
            term: None,
            scheduled_compact_revision: None,
            finished_compact_revision: None,
            storage_version: None,
            members: Vec::new(),
            leases: 0,
            auth_enabled: false,
            auth_users: 0,
            page_size: meta.page_size,
            txid: meta.txid,
            sha256_trailer: TrailerState::Absent,
            sha256: None,
            file_size: db.file_len(),
            warning: db.meta_warning().map(str::to_owned),
        },
        crc: 0,
    };
    db.walk_root(&mut |db, name, entry, at| {
        let Entry::Bucket(bucket) = entry else {
            return Err(Corrupted::new(
                format!(
                    "top-level key {:?} is not a bucket",
                    String::from_utf8_lossy(name)
                ),
                at,
            ));
        };
        acc.crc = crc32c::crc32c_append(acc.crc, name);
        let name = name.to_vec();
        db.walk_bucket(bucket, at, &mut |db, k, e, at| {
            acc.crc = crc32c::crc32c_append(acc.crc, k);
            acc.status.total_key += 1;
            match e {
                Entry::Value(v) => {
                    acc.crc = crc32c::crc32c_append(acc.crc, v);
                    record(&name, k, Value::Bytes(v), at, &mut acc.status, on_key)
                }
                Entry::Digest(d) => {
                    acc.crc = super::crc::combine(acc.crc, d.crc, d.len);
                    record(&name, k, Value::Digest(d), at, &mut acc.status, on_key)
                }
                // Nested buckets are not part of etcd's schema; etcdutl hashes only their
                // name, but bbolt's check still walks them.
                Entry::Bucket(b) => walk_nested(db, b, at),
            }
        })
    })?;
    db.check_free_pages()?;
    acc.status.hash = acc.crc;
    acc.status.members.sort();
    Ok(acc)
}

fn walk_nested(db: &mut Database, bucket: BucketRef<'_>, at: u64) -> Result<(), Corrupted> {
    db.walk_bucket(bucket, at, &mut |db, _k, e, at| match e {
        Entry::Value(_) | Entry::Digest(_) => Ok(()),
        Entry::Bucket(b) => walk_nested(db, b, at),
    })
}

/// Takes what the figures need from one entry of a top-level bucket.
fn record(
    bucket: &[u8],
    k: &[u8],
    v: Value<'_>,
    at: u64,
    status: &mut Status,
    on_key: &mut dyn FnMut(UserKey<'_>, Option<u64>),
) -> Result<(), Corrupted> {
    // The value's bytes, for the entries whose value the figures read (the stream check
    // keeps all of etcd's: they are short and not under revision keys).
    let bytes = || match v {
        Value::Bytes(b) => Ok(b),
        Value::Digest(d) => Err(Corrupted::new(
            format!(
                "{}/{}: the stream check did not keep this value ({} bytes) but the status \
                 needs it",
                escape(bucket),
                escape(k),
                d.len
            ),
            at,
        )),
    };
    match bucket {
        b"key" => {
            let rev = Revision::parse(k).ok_or_else(|| {
                Corrupted::new(
                    format!("key bucket holds {:?}, not a revision", escape(k)),
                    at,
                )
            })?;
            status.revision = rev.main;
            let not_kv = |why| {
                Corrupted::new(
                    format!(
                        "key bucket value at revision {}/{}: not an mvccpb.KeyValue ({why})",
                        rev.main, rev.sub
                    ),
                    at,
                )
            };
            let (key, size) = match v {
                Value::Bytes(b) => {
                    let kv = KeyValue::decode(b).map_err(not_kv)?;
                    (UserKey::Bytes(kv.key), kv.value.len() as u64)
                }
                Value::Digest(d) => match d.kv {
                    KvFacts::Decoded { key, value_len } => (UserKey::Print(key), value_len),
                    KvFacts::Rejected(why) => return Err(not_kv(why)),
                    KvFacts::NotDecoded => {
                        bytes()?;
                        return Ok(());
                    }
                },
            };
            on_key(key, (!rev.tombstone).then_some(size));
        }
        b"meta" => match k {
            b"consistent_index" => status.consistent_index = be_u64(bytes()?),
            b"term" => status.term = be_u64(bytes()?),
            b"scheduledCompactRev" => {
                status.scheduled_compact_revision = Revision::parse_main(bytes()?)
            }
            b"finishedCompactRev" => {
                status.finished_compact_revision = Revision::parse_main(bytes()?)
            }
            b"storageVersion" => {
                status.storage_version = Some(String::from_utf8_lossy(bytes()?).into_owned())
            }
            _ => {}
        },
        b"members" => {
            #[derive(serde::Deserialize)]
            struct Member {
                #[serde(default)]
                name: String,
            }
            let name = serde_json::from_slice::<Member>(bytes()?)
                .map(|m| m.name)
                .unwrap_or_default();
            let name = if name.is_empty() {
                // A member that never started has no name yet: show its id.
                String::from_utf8_lossy(k).into_owned()
            } else {
                name
            };
            status.members.push(name);
        }
        b"lease" => status.leases += 1,
        b"auth" if k == b"authEnabled" => status.auth_enabled = bytes()? == [1],
        b"authUsers" => status.auth_users += 1,
        _ => {}
    }
    Ok(())
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(0..8)?.try_into().ok()?))
}

fn escape(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// sha256 of the first `len` bytes of `file`, read sequentially. The block is small
/// enough to stay in the CPU cache between the copy and the hash: with 1 MiB blocks the
/// same work took twice as long.
fn sha256_prefix(file: File, len: u64) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut reader = file.take(len);
    let mut storage = Vec::new();
    let buf = super::readahead::aligned(&mut storage, 128 << 10);
    let mut total = 0u64;
    loop {
        let n = reader.read(buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    if total != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "file shrank while it was being read",
        ));
    }
    Ok(hasher.finalize().into())
}
