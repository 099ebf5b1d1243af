//! Replaying by appending the recorded revisions to the restored member's WAL as
//! committed raft entries, which etcd applies as it starts, before it serves: no round
//! trip per revision (docs/restore.md, "Restore to a point in time").
//!
//! Each revision is one entry holding the `InternalRaftRequest` a client's `Txn` of its
//! events would have become ([`super::raft_request`]); a lease first used by a revision
//! and not in the backup gets a `LeaseGrant` entry with its recorded ID and TTL just
//! before it. A `HardState` record then commits them. A single member that restarts
//! applies everything up to the committed index as a follower, elects itself, appends
//! its empty entry after ours (only then are its leases' clocks started) and serves once
//! its `publish` entry, after all of ours, is applied.
//!
//! etcd reads the whole WAL into memory when it starts and keeps the log until its first
//! snapshot, so revisions go in batches (at most [`Limits`]): append, start, check, stop
//! cleanly, read the WAL back as etcd left it (its own entries, a new term, maybe a new
//! file or a snapshot), append the next batch after it, start again. Every append is
//! read back before etcd starts and must be exactly what was written
//! ([`super::wal::append`]); every start is followed by [`super::watch_check`].

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::raft_request;
use super::revisions::Revisions;
use super::scratch::{Member, Running};
use super::segment::EventKind;
use super::wal::{self, CRC, ENTRY, METADATA, SNAPSHOT, STATE, Wal};
use super::watch_check;

/// How much goes into the WAL before etcd is started on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub entries: u64,
    pub bytes: usize,
}

impl Default for Limits {
    /// 100,000 entries (etcd's default `--snapshot-count`) or 64 MiB of records: what
    /// etcd holds in memory at start, and the replay for the check.
    fn default() -> Self {
        Limits {
            entries: 100_000,
            bytes: 64 << 20,
        }
    }
}

/// The largest record etcd 3.4 and 3.5.0–3.5.4 read back from a WAL
/// (`maxWALEntrySizeLimit`); later versions bound a record by the file's size.
const OLD_RECORD_LIMIT: usize = 10 << 20;

/// A restored member whose WAL can take the replay.
pub(crate) struct Ready {
    wal: Wal,
    leases: HashSet<i64>,
    /// etcd's version, and the largest record it reads back when it has a limit.
    version: String,
    record_limit: Option<usize>,
}

/// Whether the restored member can take the replay in its WAL, and why not when it
/// cannot (the replay then goes over gRPC).
pub(crate) async fn ready(member: &Member<'_>) -> Result<Ready, String> {
    let dir = member.wal_dir();
    let read = dir.clone();
    let wal = tokio::task::spawn_blocking(move || wal::read(&read))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("its WAL cannot be read: {e}"))?;
    restored_layout(&wal)?;
    let db = member.db();
    let state = tokio::task::spawn_blocking(move || crate::snapshot::member_state(&db))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("its database cannot be read: {e}"))?;
    let commit = wal.state.map_or(0, |s| s.commit);
    if state.consistent_index != Some(commit) {
        return Err(format!(
            "its database has applied raft index {:?}, its WAL commits {commit}",
            state.consistent_index
        ));
    }
    if state.auth_enabled {
        return Err("auth is enabled in the backup, and WAL entries carry no user".into());
    }
    let version = etcd_version(member.etcd())
        .await
        .unwrap_or_else(|| "of unknown version".into());
    let record_limit = (!reads_large_records(&version)).then_some(OLD_RECORD_LIMIT);
    Ok(Ready {
        wal,
        leases: state.lease_ids.into_iter().collect(),
        version,
        record_limit,
    })
}

/// Exactly what `etcdutl snapshot restore` (3.5) and `etcdctl snapshot restore` (3.4)
/// write: one file, `crc`, `metadata`, an empty snapshot, a conf-change entry per member
/// at term 1, the state committing them, and the snapshot at that index.
fn restored_layout(wal: &Wal) -> Result<(), String> {
    let one = matches!(&wal.files[..], [f] if f.seq == 0 && f.index == 0);
    if !one {
        return Err(format!(
            "its WAL has {} files, a restored member's has one",
            wal.files.len()
        ));
    }
    let n = wal.entries;
    let mut kinds = vec![CRC, METADATA, SNAPSHOT];
    kinds.extend(std::iter::repeat_n(ENTRY, n as usize));
    kinds.extend([STATE, SNAPSHOT]);
    let state = wal.state.unwrap_or_default();
    let expected = n > 0
        && wal.conf_changes == n
        && wal.first_entry == Some(1)
        && wal.last_entry == Some((n, 1))
        && state.term == 1
        && state.commit == n
        && wal.snapshots.last() == Some(&wal::SnapshotMark { index: n, term: 1 })
        && wal.kinds == kinds;
    if !expected {
        return Err(format!(
            "its WAL is not in the layout a restore writes (records {:?}, {n} entries, state {:?})",
            wal.kinds, wal.state
        ));
    }
    Ok(())
}

/// `etcd --version`'s version, e.g. `3.5.30`.
async fn etcd_version(etcd: &Path) -> Option<String> {
    let out = tokio::process::Command::new(etcd)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_owned())
}

/// Whether this etcd reads back WAL records of 10 MiB and more (3.5.5 and later).
fn reads_large_records(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten(), parts.next()) {
        (Some(major), Some(minor), Some(Some(patch))) => (major, minor, patch) >= (3, 5, 5),
        (Some(major), Some(minor), _) => (major, minor) >= (3, 6),
        _ => false,
    }
}

/// What the WAL replay did.
pub(crate) struct Outcome {
    /// The member serving the last revision applied.
    pub running: Running,
    pub revisions: u64,
    /// Set when a revision was too large for this etcd's WAL: the rest goes over gRPC.
    pub rest_over_grpc: Option<String>,
}

/// Applies `log` through the member's WAL, in batches, starting it after each, checking
/// every revision, and leaving it running after the last.
pub(crate) async fn replay(
    member: &mut Member<'_>,
    log: &mut Revisions<'_>,
    ready: Ready,
    limits: Limits,
    timeout: Duration,
) -> Result<Outcome, String> {
    let Ready {
        mut wal,
        mut leases,
        version,
        record_limit,
    } = ready;
    let dir = member.wal_dir();
    let mut at = log.taken();
    let mut replayed = 0u64;
    loop {
        let mut batch = wal::Batch::after(&wal).map_err(|e| e.to_string())?;
        let mut expected = Vec::new();
        let mut too_large = None;
        while batch.entries() < limits.entries && batch.bytes() < limits.bytes {
            let Some(next) = log.peek().await? else {
                break;
            };
            let data = raft_request::revision(&next.events);
            let bound = wal::entry_frame_bound(data.len());
            if record_limit.is_some_and(|max| bound >= max) {
                too_large = Some(format!(
                    "revision {} takes up to {bound} bytes in the WAL, and etcd {version} reads back no record of 10 MiB or more",
                    next.revision
                ));
                break;
            }
            let Some(r) = log.next().await? else {
                break;
            };
            for e in &r.events {
                if e.kind == EventKind::Put && e.lease != 0 && leases.insert(e.lease) {
                    batch.push(&raft_request::lease_grant(e.lease, log.ttl(e.lease)));
                }
            }
            batch.push(&data);
            expected.push(r);
        }
        let last = too_large.is_some() || log.peek().await?.is_none();
        let entries = batch.entries();
        if !batch.is_empty() {
            let appended = dir.clone();
            let before = wal;
            wal = tokio::task::spawn_blocking(move || wal::append(&appended, &before, batch))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("appending to the scratch member's WAL: {e}"))?;
        }
        // No fsync on the last start: only the snapshot, verified, is kept. Before a
        // restart, etcd must leave its WAL and database complete.
        let flags: &[&str] = if last { &["--unsafe-no-fsync"] } else { &[] };
        let mut running = member
            .start(flags, timeout + Duration::from_millis(entries))
            .await?;
        watch_check::check(&mut running.client, at, &expected, timeout)
            .await
            .map_err(|e| match member.apply_failures() {
                Some(f) => format!("{e}; {f}"),
                None => e,
            })?;
        at += expected.len() as i64;
        replayed += expected.len() as u64;
        tracing::debug!(
            revision = at,
            entries,
            starts = member.starts,
            "replayed a batch through the WAL"
        );
        if last {
            return Ok(Outcome {
                running,
                revisions: replayed,
                rest_over_grpc: too_large,
            });
        }
        member.stop(running, timeout).await?;
        let (read, db) = (dir.clone(), member.db());
        let (back, state) = tokio::task::spawn_blocking(move || {
            Ok::<_, String>((
                wal::read(&read).map_err(|e| e.to_string())?,
                crate::snapshot::member_state(&db).map_err(|e| e.to_string())?,
            ))
        })
        .await
        .map_err(|e| e.to_string())??;
        // What etcd applied must be in its WAL, or the next entries would sit at indexes
        // it has applied already and be skipped.
        let applied = state.consistent_index.unwrap_or(0);
        let last_index = back.last_index().unwrap_or(0);
        if applied > last_index || applied < wal.last_index().unwrap_or(0) {
            return Err(format!(
                "after a clean stop the scratch member has applied raft index {applied}, its WAL ends at {last_index} and the replay wrote up to {}",
                wal.last_index().unwrap_or(0)
            ));
        }
        wal = back;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_records_are_read_back_from_3_5_5_on() {
        for (v, large) in [
            ("3.5.30", true),
            ("3.5.5", true),
            ("3.6.0", true),
            ("3.5.4", false),
            ("3.5.1", false),
            ("3.4.23", false),
            ("of unknown version", false),
            ("3.6", true),
        ] {
            assert_eq!(reads_large_records(v), large, "{v}");
        }
    }
}
