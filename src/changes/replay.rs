//! Restore to a point: the chains in storage, the plan (the newest full backup at or
//! before the point and the segments after it), and the replay: the backup restored into
//! a scratch single-member etcd on loopback, the recorded revisions applied up to the
//! point, a snapshot taken of it and verified.
//!
//! Exactness rests on etcd's rules (docs/restore.md, "restore to a point in time"):
//! applying revision r as one transaction of its events, in order, onto a store at
//! revision r - 1 that equals the original reproduces r's create/mod revisions and
//! versions. The revisions go into the restored member's WAL as committed entries, which
//! etcd applies as it starts ([`super::wal_replay`], checked revision for revision by a
//! watch, [`super::watch_check`]), or, when its WAL is not in the layout that replay
//! knows, one transaction at a time over gRPC with the header revision checked after
//! each ([`super::grpc_replay`]). Either way no write but ours may reach the member
//! (every lease is kept alive until the snapshot, so none expires and deletes keys on
//! its own), and a revision is never split.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::grpc_replay;
use super::revisions::Revisions;
use super::scratch::{Member, Running};
use super::segment::Record;
use super::store::{self, Listed, SegmentManifest, read_segment};
use super::wal_replay;
pub use super::wal_replay::Limits as WalLimits;
use crate::encryption::Identities;
use crate::repository::{Manifest, Repository};
use crate::restore::drill::{Scratch, ScratchMember};

/// The point to restore to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Revision(i64),
    /// The last revision seen at or before this time (ms since the epoch, UTC).
    TimeMs(i64),
}

/// A chain in storage: its segments tiling (base, covered_to] without holes.
#[derive(Debug, Clone)]
pub struct Chain {
    pub id: String,
    pub cluster_id: String,
    /// The revision of the backup the chain started from.
    pub base_revision: i64,
    /// Where its coverage starts: the base, or later once retention removed the segments
    /// no kept backup needs.
    pub from_revision: i64,
    pub covered_to: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub segments: Vec<SegmentManifest>,
    /// Why the chain's coverage stops where it does, when segments follow a hole.
    pub problem: Option<String>,
}

/// Checks that segment `m` agrees, revision for revision, with the kept segments where
/// they overlap (revisions after `m.from_revision` up to `at`).
async fn agree(
    repo: &Repository,
    kept: &[SegmentManifest],
    m: &SegmentManifest,
    at: i64,
    identities: Option<&Identities>,
) -> Result<(), String> {
    let revisions =
        |records: Vec<Record>, lo: i64, hi: i64| -> Vec<(i64, Vec<super::segment::Event>)> {
            records
                .into_iter()
                .filter_map(|r| match r {
                    Record::Revision {
                        revision, events, ..
                    } if revision > lo && revision <= hi => Some((revision, events)),
                    _ => None,
                })
                .collect()
        };
    let (lo, hi) = (m.from_revision, m.to_revision.min(at));
    let cannot = |e: String| {
        format!(
            "segment {} overlaps revisions {}..{hi} and cannot be compared: {e}",
            m.object.key,
            lo + 1
        )
    };
    let theirs = revisions(
        read_segment(repo, m, identities).await.map_err(cannot)?,
        lo,
        hi,
    );
    let mut ours = Vec::new();
    for k in kept
        .iter()
        .filter(|k| k.to_revision > lo && k.from_revision < hi)
    {
        ours.extend(revisions(
            read_segment(repo, k, identities).await.map_err(cannot)?,
            lo,
            hi,
        ));
    }
    if let Some(((r, _), _)) = theirs.iter().zip(&ours).find(|(a, b)| a != b) {
        return Err(format!(
            "segment {} disagrees with the chain at revision {r}: two recorders recorded different histories",
            m.object.key
        ));
    }
    if theirs.len() != ours.len() {
        return Err(format!(
            "segment {} holds {} of the {} revisions it overlaps",
            m.object.key,
            theirs.len(),
            ours.len()
        ));
    }
    Ok(())
}

/// Every chain in storage, newest first. Overlapping segments (two recorders around a
/// hand-over) are read and compared; `identities` decrypt them when they are encrypted.
pub async fn chains(
    repo: &Repository,
    identities: Option<&Identities>,
) -> Result<Vec<Chain>, String> {
    let listed = store::list_segments(repo, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut by_chain: HashMap<String, Vec<SegmentManifest>> = HashMap::new();
    for l in listed {
        match l {
            Listed::Segment(m) => by_chain.entry(m.chain.clone()).or_default().push(*m),
            Listed::Refused { key, reason } => {
                tracing::warn!(key = %key, reason = %reason, "refused a change-log segment manifest");
            }
        }
    }
    let mut out = Vec::new();
    for (id, mut segs) in by_chain {
        segs.sort_by_key(|m| (m.from_revision, m.to_revision));
        let base = segs[0].base_revision;
        let cluster = segs[0].cluster_id.clone();
        let start = segs[0].from_revision;
        let mut at = start;
        let mut kept = Vec::new();
        let mut problem = None;
        for m in segs {
            if m.base_revision != base || m.cluster_id != cluster {
                problem = Some(format!(
                    "segment {} does not belong to the chain",
                    m.object.key
                ));
                break;
            }
            if m.from_revision < at {
                // Another recorder's copy of revisions already covered (a hand-over):
                // accepted only when it agrees with them revision for revision.
                match agree(repo, &kept, &m, at, identities).await {
                    Ok(()) => {
                        if m.to_revision > at {
                            at = m.to_revision;
                            kept.push(m);
                        }
                        continue;
                    }
                    Err(reason) => {
                        // Which history is right is unknown from here on: the chain
                        // is restorable only up to where the two begin.
                        kept.retain(|k| k.to_revision <= m.from_revision);
                        at = kept.last().map_or(start, |k| k.to_revision);
                        problem = Some(reason);
                        break;
                    }
                }
            }
            if m.from_revision == at {
                at = m.to_revision;
                kept.push(m);
                continue;
            }
            {
                problem = Some(format!(
                    "revisions {} to {} are missing (the next segment starts after {})",
                    at + 1,
                    m.from_revision,
                    m.from_revision
                ));
            }
            break;
        }
        if kept.is_empty() {
            continue;
        }
        out.push(Chain {
            cluster_id: kept[0].cluster_id.clone(),
            first_seen_ms: kept
                .iter()
                .map(|m| m.first_seen_ms)
                .filter(|t| *t > 0)
                .min()
                .unwrap_or(0),
            last_seen_ms: kept.iter().map(|m| m.last_seen_ms).max().unwrap_or(0),
            id,
            base_revision: base,
            from_revision: start,
            covered_to: at,
            segments: kept,
            problem,
        });
    }
    out.sort_by(|a, b| b.id.cmp(&a.id));
    Ok(out)
}

/// What a restore to a point uses.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayPlan {
    pub chain: String,
    pub base: String,
    pub base_revision: i64,
    pub to_revision: i64,
    pub segments: Vec<String>,
    #[serde(skip)]
    base_manifest: Option<Box<Manifest>>,
    #[serde(skip)]
    segment_manifests: Vec<SegmentManifest>,
}

/// The windows that can be restored, for error messages.
fn windows(chains: &[Chain]) -> String {
    if chains.is_empty() {
        return "the storage holds no change log".into();
    }
    let list: Vec<String> = chains
        .iter()
        .map(|c| {
            let t = |ms: i64| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default()
            };
            format!(
                "revisions {}..{} ({} to {}, chain {})",
                c.from_revision,
                c.covered_to,
                t(c.first_seen_ms),
                t(c.last_seen_ms),
                c.id
            )
        })
        .collect();
    format!("what can be restored: {}", list.join("; "))
}

/// Chooses chain, base backup and segments for `point`, reading records to resolve a
/// time to a revision.
pub async fn plan(
    repo: &Repository,
    point: Point,
    identities: Option<&Identities>,
) -> Result<ReplayPlan, String> {
    let all = chains(repo, identities).await?;
    let (chain, to_revision) = match point {
        Point::Revision(n) => {
            let c = all
                .iter()
                .find(|c| c.from_revision <= n && n <= c.covered_to)
                .ok_or_else(|| {
                    format!(
                        "revision {n} is not covered by the change log; {}",
                        windows(&all)
                    )
                })?;
            (c, n)
        }
        Point::TimeMs(t) => {
            let c = all
                .iter()
                .find(|c| c.first_seen_ms <= t && t <= c.last_seen_ms)
                .ok_or_else(|| {
                    let when = chrono::DateTime::from_timestamp_millis(t)
                        .map(|d| d.to_rfc3339())
                        .unwrap_or_default();
                    format!("{when} is not covered by the change log; {}", windows(&all))
                })?;
            let mut n = c.from_revision;
            'segments: for m in &c.segments {
                if m.first_seen_ms > t {
                    break;
                }
                for r in store::read_segment(repo, m, identities).await? {
                    match r {
                        Record::Revision {
                            revision, seen_ms, ..
                        } if seen_ms <= t => n = revision,
                        Record::Revision { .. } => break 'segments,
                        _ => {}
                    }
                }
            }
            (c, n)
        }
    };
    // The newest restorable backup of the same cluster inside the chain's window.
    let catalog = repo.catalog().await.map_err(|e| e.to_string())?;
    let base = catalog
        .iter()
        .filter_map(|e| e.restorable())
        .filter(|m| {
            m.cluster_id == chain.cluster_id
                && m.store_revision() >= chain.from_revision
                && m.store_revision() <= to_revision
        })
        .max_by_key(|m| m.store_revision())
        .ok_or_else(|| {
            format!(
                "no restorable full backup of this cluster between revisions {} and {to_revision} (the chain {} starts from backup {}; is it pruned?)",
                chain.from_revision, chain.id, chain.id
            )
        })?
        .clone();
    Ok(build(chain, base, to_revision))
}

/// A plan from a given backup (the chain proof replays from the backup before).
pub async fn plan_from(
    repo: &Repository,
    base: &Manifest,
    to_revision: i64,
    identities: Option<&Identities>,
) -> Result<ReplayPlan, String> {
    let all = chains(repo, identities).await?;
    let from = base.store_revision();
    let chain = all
        .iter()
        .find(|c| {
            c.cluster_id == base.cluster_id
                && c.from_revision <= from
                && to_revision <= c.covered_to
        })
        .ok_or_else(|| {
            format!(
                "no chain covers revisions {from} to {to_revision} from backup {}; {}",
                base.id,
                windows(&all)
            )
        })?;
    Ok(build(chain, base.clone(), to_revision))
}

fn build(chain: &Chain, base: Manifest, to_revision: i64) -> ReplayPlan {
    let segments: Vec<SegmentManifest> = chain
        .segments
        .iter()
        .filter(|m| m.to_revision > base.store_revision() && m.from_revision < to_revision)
        .cloned()
        .collect();
    ReplayPlan {
        chain: chain.id.clone(),
        base: base.id.clone(),
        base_revision: base.store_revision(),
        to_revision,
        segments: segments.iter().map(|m| m.object.key.clone()).collect(),
        base_manifest: Some(Box::new(base)),
        segment_manifests: segments,
    }
}

/// How the revisions are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Through the restored member's WAL, over gRPC when its WAL is not in the layout
    /// the WAL replay knows.
    #[default]
    Auto,
    /// Over gRPC, one transaction per revision (`LIFEBOAT_REPLAY_METHOD=grpc`).
    Grpc,
}

/// The binaries and the place a replay uses.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub etcd: PathBuf,
    pub etcdutl: PathBuf,
    pub scratch: PathBuf,
    pub timeout: Duration,
    pub method: Method,
    /// How much goes into the WAL before each start of the scratch member.
    pub wal_batch: WalLimits,
}

impl From<crate::restore::drill::DrillOptions> for ReplayOptions {
    /// The drill's binaries, scratch space and timeout serve the replay too.
    fn from(d: crate::restore::drill::DrillOptions) -> Self {
        ReplayOptions {
            etcd: d.etcd,
            etcdutl: d.etcdutl,
            scratch: d.scratch,
            timeout: d.timeout,
            method: Method::Auto,
            wal_batch: WalLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub plan: ReplayPlan,
    pub revisions: u64,
    pub seconds: f64,
    /// Revisions per second of the replay itself: from the restored member to the
    /// member serving the point, checked (appending to its WAL, starting it, etcd
    /// applying and the check; or the transactions over gRPC) — without fetching the
    /// backup, restoring it and the final snapshot.
    pub revisions_per_second: f64,
    pub replay_seconds: f64,
    /// `wal`, `grpc`, or `wal+grpc` (a revision too large for the scratch etcd's WAL).
    pub method: &'static str,
    /// Why the gRPC replay was used, when it was.
    pub grpc_reason: Option<String>,
    /// How many times the scratch member was started.
    pub member_starts: u32,
}

/// The flags every start of the scratch member gets: limits high enough for any recorded
/// revision (one transaction each, never split) when it goes over gRPC, and a quota
/// that never refuses the replay.
const MEMBER_FLAGS: &[&str] = &[
    "--max-txn-ops=1000000",
    "--max-request-bytes=1073741824",
    "--quota-backend-bytes=8589934592",
];

/// Replays `plan` and writes the snapshot at its revision to `out` (which must not
/// exist), verified: trailer, bbolt structure, revision.
pub async fn replay(
    repo: &Repository,
    plan: &ReplayPlan,
    identities: Option<&Arc<Identities>>,
    o: &ReplayOptions,
    out: &Path,
) -> Result<ReplayReport, String> {
    if out.symlink_metadata().is_ok() {
        return Err(format!(
            "{} exists; lifeboat never overwrites a file",
            out.display()
        ));
    }
    let t0 = Instant::now();
    let scratch = Scratch::create(&o.scratch)?;
    let dir = scratch.0.clone();
    let base = plan
        .base_manifest
        .as_ref()
        .ok_or("the plan has no base backup")?;
    let base_file = dir.join("base.db");
    crate::fetch::fetch(repo, base, &base_file, identities)
        .await
        .map_err(|e| e.to_string())?;
    let spec = ScratchMember {
        name: "replay",
        etcd: &o.etcd,
        etcdutl: &o.etcdutl,
        extra: MEMBER_FLAGS,
    };
    let mut member = Member::restore(spec, &base_file, &dir).await?;
    let ids = identities.map(|a| a.as_ref());
    let mut log = Revisions::new(
        repo,
        &plan.segment_manifests,
        ids,
        (plan.base_revision, plan.to_revision),
    );
    let result = apply(&mut member, &mut log, o, plan).await;
    let result = match result {
        Ok((mut running, applied)) => {
            let replay_seconds = applied.seconds;
            let saved = save_snapshot(&mut running, out, plan.to_revision).await;
            drop(running);
            saved.map(|()| (applied, replay_seconds))
        }
        Err(e) => Err(e),
    };
    member.kill().await;
    let (applied, replay_seconds) = result?;
    drop(scratch);
    Ok(ReplayReport {
        plan: plan.clone(),
        revisions: applied.revisions,
        seconds: t0.elapsed().as_secs_f64(),
        revisions_per_second: applied.revisions as f64 / replay_seconds.max(1e-9),
        replay_seconds,
        method: applied.method,
        grpc_reason: applied.grpc_reason,
        member_starts: member.starts,
    })
}

/// What applying the log did.
struct Applied {
    revisions: u64,
    method: &'static str,
    grpc_reason: Option<String>,
    /// Seconds it took, from the restored member to the member serving the point.
    seconds: f64,
}

/// Applies every revision of the plan to the restored member, through its WAL when it
/// can, else over gRPC; leaves it serving the point.
async fn apply(
    member: &mut Member<'_>,
    log: &mut Revisions<'_>,
    o: &ReplayOptions,
    plan: &ReplayPlan,
) -> Result<(Running, Applied), String> {
    let fail = |e: String| {
        format!(
            "replaying the change log onto backup {} (revision {}): {e}",
            plan.base, plan.base_revision
        )
    };
    let t = Instant::now();
    let ready = match o.method {
        Method::Auto => wal_replay::ready(member).await,
        Method::Grpc => Err("the gRPC replay was asked for (LIFEBOAT_REPLAY_METHOD=grpc)".into()),
    };
    let (mut running, mut revisions, grpc_reason, method) = match ready {
        Ok(ready) => {
            let done = wal_replay::replay(member, log, ready, o.wal_batch, o.timeout)
                .await
                .map_err(fail)?;
            let method = if done.rest_over_grpc.is_some() {
                "wal+grpc"
            } else {
                "wal"
            };
            (done.running, done.revisions, done.rest_over_grpc, method)
        }
        Err(why) => {
            tracing::warn!(
                reason = %why,
                "replaying over gRPC, one transaction per revision, not through the restored member's WAL"
            );
            let running = member
                .start(&["--unsafe-no-fsync"], o.timeout)
                .await
                .map_err(fail)?;
            (running, 0, Some(why), "grpc")
        }
    };
    if let Some(why) = &grpc_reason {
        if method == "wal+grpc" {
            tracing::warn!(reason = %why, "replaying the rest over gRPC");
        }
        revisions += grpc_replay::replay(&mut running, log).await.map_err(fail)?;
    }
    log.finished().map_err(fail)?;
    Ok((
        running,
        Applied {
            revisions,
            method,
            grpc_reason,
            seconds: t.elapsed().as_secs_f64(),
        },
    ))
}

/// The scratch member's snapshot, streamed to OUT.part-replay, checked (trailer, bbolt,
/// revision = the point), then renamed to `out` without clobbering.
async fn save_snapshot(running: &mut Running, out: &Path, to_revision: i64) -> Result<(), String> {
    let part = out.with_extension("part-replay");
    let mut stream = crate::etcd::SnapshotStream::open(
        &mut running.client,
        &running.url,
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| e.to_string())?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&part)
            .map_err(|e| format!("{}: {e}", part.display()))?;
        while let Some(chunk) = stream.next_chunk().await.map_err(|e| e.to_string())? {
            f.write_all(&chunk)
                .map_err(|e| format!("{}: {e}", part.display()))?;
        }
        f.sync_all()
            .map_err(|e| format!("{}: {e}", part.display()))?;
    }
    let check = part.clone();
    let status = tokio::task::spawn_blocking(move || {
        crate::snapshot::scan_status(&check, crate::snapshot::ScanOptions::default())
    })
    .await
    .map_err(|e| e.to_string())?;
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(format!("the replayed snapshot failed verification: {e}"));
        }
    };
    if status.store_revision() != to_revision {
        let _ = std::fs::remove_file(&part);
        return Err(format!(
            "the replayed snapshot is at revision {}, not {to_revision}",
            status.store_revision(),
        ));
    }
    crate::fetch::rename_no_clobber(&part, out).map_err(|e| {
        let _ = std::fs::remove_file(&part);
        format!("{}: {e}", out.display())
    })
}
