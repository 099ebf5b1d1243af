//! Restore to a point: the newest full backup at or before it, restored into a scratch
//! single-member etcd on loopback, the recorded revisions replayed one transaction each
//! up to the point, a snapshot taken of it and verified.
//!
//! Exactness rests on etcd's rules (docs/restore.md, "restore to a point in time"):
//! replaying revision r as one transaction of its events, in order, onto a store at
//! revision r - 1 that equals the original reproduces r's create/mod revisions and
//! versions. So the scratch member's revision is checked before the first transaction and
//! after every one; no write but ours may reach it (every lease, from the backup and
//! granted while replaying, is kept alive until the snapshot, so none expires and
//! deletes keys on its own); and a revision is never split.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, LeaseGrantOptions, PutOptions, Txn, TxnOp};
use serde::Serialize;

use super::segment::{EventKind, Record};
use super::store::{self, Listed, SegmentManifest, read_segment};
use crate::encryption::Identities;
use crate::repository::{Manifest, Repository};
use crate::restore::drill::{Scratch, ScratchMember, log_tail};

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

/// The binaries and the place a replay uses.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub etcd: PathBuf,
    pub etcdutl: PathBuf,
    pub scratch: PathBuf,
    pub timeout: Duration,
}

impl From<crate::restore::drill::DrillOptions> for ReplayOptions {
    /// The drill's binaries, scratch space and timeout serve the replay too.
    fn from(d: crate::restore::drill::DrillOptions) -> Self {
        ReplayOptions {
            etcd: d.etcd,
            etcdutl: d.etcdutl,
            scratch: d.scratch,
            timeout: d.timeout,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub plan: ReplayPlan,
    pub revisions: u64,
    pub seconds: f64,
    /// Revisions per second of the transactions alone (without fetch, restore, start
    /// and the final snapshot).
    pub revisions_per_second: f64,
    pub replay_seconds: f64,
}

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

    // Limits high enough for any recorded revision (one transaction each, never split),
    // and no fsync: only the final snapshot, verified, is kept.
    let (mut child, client_url) = ScratchMember {
        name: "replay",
        etcd: &o.etcd,
        etcdutl: &o.etcdutl,
        extra: &[
            "--max-txn-ops=1000000",
            "--max-request-bytes=1073741824",
            "--quota-backend-bytes=8589934592",
            "--unsafe-no-fsync",
        ],
    }
    .start(&base_file, &dir)
    .await?;
    let result = drive(repo, plan, identities, o, &client_url, &dir, out).await;
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    let (revisions, replay_seconds) = result?;
    drop(scratch);
    let seconds = t0.elapsed().as_secs_f64();
    Ok(ReplayReport {
        plan: plan.clone(),
        revisions,
        seconds,
        revisions_per_second: revisions as f64 / replay_seconds.max(1e-9),
        replay_seconds,
    })
}

async fn drive(
    repo: &Repository,
    plan: &ReplayPlan,
    identities: Option<&Arc<Identities>>,
    o: &ReplayOptions,
    url: &str,
    dir: &Path,
    out: &Path,
) -> Result<(u64, f64), String> {
    let deadline = Instant::now() + o.timeout;
    let mut client = loop {
        match Client::connect([url], None).await {
            Ok(mut c) => match c.status().await {
                Ok(s) => {
                    let rev = s.header().map(|h| h.revision()).unwrap_or(0);
                    if rev != plan.base_revision {
                        return Err(format!(
                            "the restored scratch member is at revision {rev}, backup {} at {}",
                            plan.base, plan.base_revision
                        ));
                    }
                    break c;
                }
                Err(_) if Instant::now() < deadline => {}
                Err(e) => return Err(format!("{e}; etcd's log: {}", log_tail(dir))),
            },
            Err(_) if Instant::now() < deadline => {}
            Err(e) => return Err(format!("{e}; etcd's log: {}", log_tail(dir))),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every lease of the backup is kept alive from now on, so none expires mid-replay.
    let mut alive = KeepAlive::default();
    let leases = client
        .leases()
        .await
        .map_err(|e| format!("listing the backup's leases: {e}"))?;
    for l in leases.leases() {
        alive.start(&client, l.id());
    }
    let ids = identities.map(|a| a.as_ref());
    let mut ttls: HashMap<i64, i64> = HashMap::new();
    let mut granted: HashSet<i64> = leases.leases().iter().map(|l| l.id()).collect();
    let mut expect = plan.base_revision;
    let mut replayed = 0u64;
    let loop_start = Instant::now();
    'segments: for m in &plan.segment_manifests {
        for r in store::read_segment(repo, m, ids).await? {
            let (revision, events) = match r {
                Record::Lease {
                    id, granted_ttl, ..
                } => {
                    ttls.insert(id, granted_ttl);
                    continue;
                }
                Record::Mark { .. } => continue,
                Record::Revision {
                    revision, events, ..
                } => (revision, events),
            };
            if revision <= expect {
                continue; // in the backup already, or in an overlapping copy checked equal
            }
            if revision > plan.to_revision {
                break 'segments;
            }
            for e in events
                .iter()
                .filter(|e| e.kind == EventKind::Put && e.lease != 0)
            {
                if granted.insert(e.lease) {
                    // A lease whose TTL could not be read is granted for an hour.
                    let ttl = ttls
                        .get(&e.lease)
                        .copied()
                        .filter(|t| *t > 0)
                        .unwrap_or(3600);
                    client
                        .lease_grant(ttl, Some(LeaseGrantOptions::new().with_id(e.lease)))
                        .await
                        .map_err(|err| {
                            format!(
                                "granting lease {:x} before revision {revision}: {err}",
                                e.lease
                            )
                        })?;
                    alive.start(&client, e.lease);
                }
            }
            let mut seen = HashSet::new();
            let repeats = events.iter().any(|e| !seen.insert(e.key.as_slice()));
            let ops: Vec<TxnOp> = events
                .iter()
                .map(|e| {
                    let op = match e.kind {
                        EventKind::Put => TxnOp::put(
                            e.key.clone(),
                            e.value.clone(),
                            (e.lease != 0).then(|| PutOptions::new().with_lease(e.lease)),
                        ),
                        EventKind::Delete => TxnOp::delete(e.key.clone(), None),
                    };
                    // A key twice in one revision (sibling nested transactions): each
                    // op in its own nested transaction, as the original was.
                    if repeats {
                        TxnOp::txn(Txn::new().and_then(vec![op]))
                    } else {
                        op
                    }
                })
                .collect();
            let resp = client
                .kv_client()
                .max_decoding_message_size(usize::MAX)
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(|e| format!("replaying revision {revision}: {e}"))?;
            let got = resp.header().map(|h| h.revision()).unwrap_or(0);
            expect += 1;
            if got != revision || got != expect {
                return Err(format!(
                    "replaying revision {revision} left the scratch member at revision {got}: the change log and the backup disagree, or something else wrote to it"
                ));
            }
            replayed += 1;
        }
    }
    if expect != plan.to_revision {
        return Err(format!(
            "the change log ended at revision {expect}, revision {} was asked for",
            plan.to_revision
        ));
    }
    let replay_seconds = loop_start.elapsed().as_secs_f64();
    // The snapshot, streamed to OUT.part, checked, then renamed without clobbering.
    let part = out.with_extension("part-replay");
    let mut stream = crate::etcd::SnapshotStream::open(&mut client, url, Duration::from_secs(60))
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
    drop(alive);
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
    if status.store_revision() != plan.to_revision {
        let _ = std::fs::remove_file(&part);
        return Err(format!(
            "the replayed snapshot is at revision {}, not {}",
            status.store_revision(),
            plan.to_revision
        ));
    }
    crate::fetch::rename_no_clobber(&part, out).map_err(|e| {
        let _ = std::fs::remove_file(&part);
        format!("{}: {e}", out.display())
    })?;
    Ok((replayed, replay_seconds))
}

/// Keep-alive tasks, one per lease, aborted on drop.
#[derive(Default)]
struct KeepAlive {
    tasks: Vec<tokio_util::task::AbortOnDropHandle<()>>,
}

impl KeepAlive {
    fn start(&mut self, client: &Client, id: i64) {
        let mut c = client.clone();
        self.tasks
            .push(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                async move {
                    let Ok((mut keeper, mut stream)) = c.lease_keep_alive(id).await else {
                        return;
                    };
                    loop {
                        if keeper.keep_alive().await.is_err() || stream.message().await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
            )));
    }
}
