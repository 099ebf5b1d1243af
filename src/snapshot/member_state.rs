//! What a member started on a database applies new raft entries against, read offline
//! from its bbolt file (a snapshot, or a member's `member/snap/db` while it is stopped):
//! the raft index it has applied up to (`meta/consistent_index`: entries at or below it
//! are not applied again), the leases it holds (the `lease` bucket, keyed by the
//! big-endian lease ID), and whether auth is on (then every request must carry a user).

use std::path::Path;

use super::db::{Database, Entry};
use super::error::{Corrupted, SnapshotError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberState {
    pub consistent_index: Option<u64>,
    pub lease_ids: Vec<i64>,
    pub auth_enabled: bool,
}

/// Reads the `meta`, `lease` and `auth` buckets of the database at `path`.
pub fn member_state(path: &Path) -> Result<MemberState, SnapshotError> {
    let mut db = Database::open(path)?;
    let mut s = MemberState::default();
    db.walk_root(&mut |db, name, entry, at| {
        let Entry::Bucket(bucket) = entry else {
            return Ok(());
        };
        let bucket_name = name.to_vec();
        if !matches!(&bucket_name[..], b"meta" | b"lease" | b"auth") {
            return Ok(());
        }
        db.walk_bucket(bucket, at, &mut |_, k, e, at| {
            let Entry::Value(v) = e else { return Ok(()) };
            match (&bucket_name[..], k) {
                (b"meta", b"consistent_index") => {
                    let b: [u8; 8] =
                        v.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| {
                            Corrupted::new("meta/consistent_index is shorter than 8 bytes", at)
                        })?;
                    s.consistent_index = Some(u64::from_be_bytes(b));
                }
                (b"lease", _) => {
                    let b: [u8; 8] = k
                        .try_into()
                        .map_err(|_| Corrupted::new("a lease key is not 8 bytes", at))?;
                    s.lease_ids.push(i64::from_be_bytes(b));
                }
                (b"auth", b"authEnabled") => s.auth_enabled = v == [1],
                _ => {}
            }
            Ok(())
        })
    })
    .map_err(|c| SnapshotError::corrupted(path, c))?;
    Ok(s)
}
