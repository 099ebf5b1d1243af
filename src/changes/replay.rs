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

use etcd_client::{Client, Compare, CompareOp, LeaseGrantOptions, PutOptions, Txn, TxnOp};
use serde::Serialize;

use super::segment::{Event, EventKind, Record};
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
    /// Transactions that reached the scratch member before their predecessor, wrote
    /// nothing and were sent again.
    pub resent_transactions: u64,
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
    let (revisions, replay_seconds, resent_transactions) = result?;
    drop(scratch);
    let seconds = t0.elapsed().as_secs_f64();
    Ok(ReplayReport {
        plan: plan.clone(),
        revisions,
        seconds,
        revisions_per_second: revisions as f64 / replay_seconds.max(1e-9),
        replay_seconds,
        resent_transactions,
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
) -> Result<(u64, f64, u64), String> {
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
    let mut pipe = Pipeline::new(
        client
            .kv_client()
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
        plan.base_revision,
    );
    // The revision before the next one to send: its witness guards that transaction.
    let mut guard: Option<(Vec<u8>, i64)> = None;
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
            if revision <= pipe.sent {
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
            if events.is_empty() {
                return Err(format!("revision {revision} holds no events"));
            }
            let item = Item::new(revision, events, guard.take());
            guard = item.witness();
            pipe.submit(item).await?;
        }
    }
    pipe.drain().await?;
    let replayed = (pipe.applied - plan.base_revision) as u64;
    if pipe.applied != plan.to_revision {
        return Err(format!(
            "the change log ended at revision {}, revision {} was asked for",
            pipe.applied, plan.to_revision
        ));
    }
    let replay_seconds = loop_start.elapsed().as_secs_f64();
    if pipe.resent > 0 {
        tracing::info!(
            resent = pipe.resent,
            "transactions that reached the scratch member before their predecessor were sent again"
        );
    }
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
    Ok((replayed, replay_seconds, pipe.resent))
}

/// Transactions in flight at once, and their bytes.
const WINDOW: usize = 64;
const WINDOW_BYTES: usize = 32 << 20;

/// One recorded revision to replay.
struct Item {
    revision: i64,
    events: Vec<Event>,
    /// The previous revision's witness: this transaction applies only after it. None:
    /// sent only when nothing is in flight.
    guard: Option<(Vec<u8>, i64)>,
    bytes: usize,
}

impl Item {
    fn new(revision: i64, events: Vec<Event>, guard: Option<(Vec<u8>, i64)>) -> Self {
        let bytes = events
            .iter()
            .map(|e| e.key.len() + e.value.len() + 32)
            .sum();
        Item {
            revision,
            events,
            guard,
            bytes,
        }
    }

    fn witness(&self) -> Option<(Vec<u8>, i64)> {
        witness(self.revision, &self.events)
    }

    fn txn(&self) -> Txn {
        transaction(&self.events, self.guard.as_ref())
    }
}

/// What is true of the store once `revision` (with `events`) is applied: a key it leaves
/// put has this mod revision. Nothing else makes that true: while revision r is not
/// applied, no later one is (each is guarded on its predecessor), so the store is below r
/// and no key has mod revision r. A revision that only deletes has no witness ("a key is
/// gone" also holds when the revision that created it is missing), so the next one is
/// sent only once it is applied.
pub fn witness(revision: i64, events: &[Event]) -> Option<(Vec<u8>, i64)> {
    let mut seen = HashSet::new();
    // Backwards, a key's first event is its last: the one that decides its state.
    events
        .iter()
        .rev()
        .filter(|e| seen.insert(e.key.as_slice()))
        .find(|e| e.kind == EventKind::Put)
        .map(|e| (e.key.clone(), revision))
}

/// The transaction that replays one recorded revision: its events in order, guarded by
/// a compare on the previous revision's [`witness`] so that it writes nothing when it
/// reaches etcd before its predecessor.
pub fn transaction(events: &[Event], guard: Option<&(Vec<u8>, i64)>) -> Txn {
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
            // A key twice in one revision (sibling nested transactions): each op in its
            // own nested transaction, as the original was.
            if repeats {
                TxnOp::txn(Txn::new().and_then(vec![op]))
            } else {
                op
            }
        })
        .collect();
    let txn = Txn::new();
    let txn = match guard {
        Some((key, rev)) => txn.when(vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            *rev,
        )]),
        None => txn,
    };
    txn.and_then(ops)
}

/// A transaction on its way: a task of its own, so it is sent at once and answered while
/// the replay reads the next segment or grants a lease.
type Sent =
    tokio_util::task::AbortOnDropHandle<Result<etcd_client::TxnResponse, etcd_client::Error>>;

/// Replays revisions with up to [`WINDOW`] transactions in flight, in order.
///
/// etcd serves each request of a connection on its own goroutine, so two in flight may
/// be proposed in either order. Each transaction is therefore guarded by a compare on its
/// predecessor's witness: one that arrives first fails its compare and writes nothing (no
/// revision), and it and everything sent after it are sent again once its predecessor is
/// applied. The header revision of every applied transaction is checked.
struct Pipeline {
    kv: etcd_client::KvClient,
    queue: std::collections::VecDeque<Item>,
    inflight: futures::stream::FuturesOrdered<Sent>,
    inflight_bytes: usize,
    /// The last revision applied (checked) and the last sent.
    applied: i64,
    sent: i64,
    resent: u64,
}

impl Pipeline {
    fn new(kv: etcd_client::KvClient, base: i64) -> Self {
        Pipeline {
            kv,
            queue: Default::default(),
            inflight: Default::default(),
            inflight_bytes: 0,
            applied: base,
            sent: base,
            resent: 0,
        }
    }

    fn send(&mut self, item: Item) {
        let mut kv = self.kv.clone();
        let txn = item.txn();
        self.inflight
            .push_back(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                async move { kv.txn(txn).await },
            )));
        self.inflight_bytes += item.bytes;
        self.sent = item.revision;
        self.queue.push_back(item);
    }

    async fn submit(&mut self, item: Item) -> Result<(), String> {
        if item.revision != self.sent + 1 {
            return Err(format!(
                "revision {} follows revision {} in the change log",
                item.revision, self.sent
            ));
        }
        // Unguarded (after a revision with no witness): only once all before it applied.
        while !self.inflight.is_empty()
            && (item.guard.is_none()
                || self.inflight.len() >= WINDOW
                || self.inflight_bytes + item.bytes > WINDOW_BYTES)
        {
            self.settle().await?;
        }
        self.send(item);
        Ok(())
    }

    async fn drain(&mut self) -> Result<(), String> {
        while !self.inflight.is_empty() {
            self.settle().await?;
        }
        Ok(())
    }

    /// The oldest transaction in flight, answered.
    async fn next(&mut self) -> Result<Option<(Item, etcd_client::TxnResponse)>, String> {
        use futures::StreamExt;
        let Some(answer) = self.inflight.next().await else {
            return Ok(None);
        };
        let item = self
            .queue
            .pop_front()
            .ok_or("a transaction answered that was never sent")?;
        self.inflight_bytes -= item.bytes;
        let resp = answer
            .map_err(|e| format!("replaying revision {}: {e}", item.revision))?
            .map_err(|e| format!("replaying revision {}: {e}", item.revision))?;
        Ok(Some((item, resp)))
    }

    fn check(&mut self, item: &Item, resp: &etcd_client::TxnResponse) -> Result<(), String> {
        let got = resp.header().map(|h| h.revision()).unwrap_or(0);
        if got != item.revision || item.revision != self.applied + 1 {
            return Err(format!(
                "replaying revision {} left the scratch member at revision {got}: the change log and the backup disagree, or something else wrote to it",
                item.revision
            ));
        }
        self.applied = item.revision;
        Ok(())
    }

    async fn settle(&mut self) -> Result<(), String> {
        let Some((item, resp)) = self.next().await? else {
            return Ok(());
        };
        if resp.succeeded() {
            return self.check(&item, &resp);
        }
        // It overtook its predecessor. Everything sent after it is guarded on it, so it
        // fails too; all of them go again, the first alone.
        let mut again = vec![item];
        while let Some((item, resp)) = self.next().await? {
            if resp.succeeded() {
                return Err(format!(
                    "revision {} was applied while revision {} was not: the scratch member reordered guarded transactions",
                    item.revision, again[0].revision
                ));
            }
            again.push(item);
        }
        self.resent += again.len() as u64;
        let mut again = again.into_iter();
        if let Some(first) = again.next() {
            if first.revision != self.applied + 1 {
                return Err(format!(
                    "revision {} was refused after revision {}: the change log and the backup disagree",
                    first.revision, self.applied
                ));
            }
            let resp = self
                .kv
                .txn(first.txn())
                .await
                .map_err(|e| format!("replaying revision {}: {e}", first.revision))?;
            if !resp.succeeded() {
                return Err(format!(
                    "revision {} was refused with revision {} applied: the change log and the backup disagree, or something else wrote to the scratch member",
                    first.revision, self.applied
                ));
            }
            self.check(&first, &resp)?;
            self.sent = first.revision;
        }
        for item in again {
            self.send(item);
        }
        Ok(())
    }
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
