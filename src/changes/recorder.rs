//! The recorder: one watch of the whole keyspace from the revision after the chain's
//! last durable one, every revision checked for contiguity, sealed into segments that an
//! uploader writes to storage, in order, one at a time.
//!
//! The watch loop never waits for the storage: it seals its records into a segment when
//! they reach `max-segment-bytes` or the flush is due, and hands it to the
//! [`outbox`](super::outbox) (memory, then spool files). The uploader, polled in the same
//! task, writes the outbox's oldest segment and retries a failing write with a backoff;
//! after an outage it catches up segment by segment, each of about `max-segment-bytes`.
//!
//! It runs only while its daemon leads (the caller cancels it when the term ends) and
//! stops writing at once then: what was not durable is recorded again by the next
//! leader, which continues from the last durable revision in storage, and the spool files
//! are removed. It never skips a revision: a gap, a compaction that overtook it, or more
//! sealed bytes than memory and spool may hold while the storage is away end the chain
//! with a [`Break`], and the caller starts a new chain from a new full backup.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, WatchOptions};
use tokio_util::sync::CancellationToken;

use super::convert::{self, Assembler, Response};
use super::outbox::{self, Outbox};
use super::segment::{EventKind, Record};
use super::store::{self, ChainWriter};
use crate::repository::Repository;

/// How the recorder flushes and how much it may hold.
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// A segment is written at most this long after the revision it holds was seen.
    pub flush_interval: Duration,
    /// A segment is sealed when its records reach this many bytes, whatever the time.
    pub max_segment_bytes: usize,
    /// With no writes, a segment of marks only (mapping the quiet time to the revision)
    /// is written this often.
    pub quiet_interval: Duration,
    /// Sealed segments held in memory while the storage does not take them; beyond, they
    /// go to the spool.
    pub max_buffer_bytes: usize,
    /// Sealed segments held in spool files beyond memory; beyond both, the chain breaks.
    /// 0: no spool.
    pub max_spool_bytes: u64,
    /// Where the spool files go.
    pub spool_dir: PathBuf,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            flush_interval: Duration::from_secs(1),
            max_segment_bytes: 8 << 20,
            quiet_interval: Duration::from_secs(30),
            max_buffer_bytes: 64 << 20,
            max_spool_bytes: 1 << 30,
            spool_dir: std::env::temp_dir(),
        }
    }
}

/// The longest pause between two attempts to write the same segment.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Why a chain ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error(
        "compaction at revision {compact_revision} overtook the recorder at revision {position}: revisions after {position} are lost to the change log"
    )]
    Compacted {
        position: i64,
        compact_revision: i64,
    },
    #[error("revision {got} arrived where {expected} was due: the watch lost revisions")]
    Gap { expected: i64, got: i64 },
    #[error(
        "the cluster reports revision {reported} as delivered, the recorder saw up to {position}: the watch lost revisions"
    )]
    Behind { position: i64, reported: i64 },
    #[error(
        "{bytes} bytes of changes could not be stored: more than the memory buffer ({memory_limit} bytes, [changes] max-buffer-bytes) and the spool ({spool_limit} bytes, [changes] max-spool-bytes) hold; the storage was away too long"
    )]
    Buffer {
        bytes: u64,
        memory_limit: usize,
        spool_limit: u64,
    },
    #[error("change-log spool file {}: {reason}", path.display())]
    Spool { path: PathBuf, reason: String },
    #[error("the watch ended: {0}")]
    Watch(String),
}

/// What the recorder tells its daemon (metrics and `/readyz`).
pub trait Observer: Send + Sync {
    /// A segment up to `revision` is durable; `seen_ms` is when its last record was seen.
    fn durable(&self, revision: i64, seen_ms: i64, flush_seconds: f64);
    /// A flush failed (it is retried).
    fn flush_failed(&self);
    /// Bytes of sealed segments waiting for the storage, in memory and in spool files.
    fn buffered(&self, memory_bytes: u64, spool_bytes: u64);
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Where a recording starts.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The chain's last durable revision; the watch starts after it.
    pub position: i64,
    /// The version of the member watched (whether its progress notifications are ordered).
    pub etcd_version: String,
}

/// Records until `cancel` (then returns `Ok(position)`, the last revision durable) or a
/// break.
pub async fn record(
    client: &mut Client,
    (repo, chain): (&Repository, &ChainWriter),
    resume: Resume,
    opts: &RecorderOptions,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
) -> Result<i64, Break> {
    let ordered = convert::ordered_progress(&resume.etcd_version);
    let position = resume.position;
    // One revision can be very large (a DeleteRange or a lease revoke over many keys).
    let mut watch = client.watch_client().max_decoding_message_size(usize::MAX);
    let options = WatchOptions::new()
        .with_all_keys()
        .with_start_revision(position + 1)
        .with_progress_notify()
        .with_fragment();
    let mut stream = tokio::select! {
        s = watch.watch("", Some(options)) => s.map_err(|e| Break::Watch(crate::etcd::describe(&e)))?,
        () = cancel.cancelled() => return Ok(position),
    };
    let outbox = Outbox::new(
        &chain.chain,
        position,
        outbox::Limits {
            memory: opts.max_buffer_bytes,
            spool: opts.max_spool_bytes,
            dir: opts.spool_dir.clone(),
        },
    );
    let watching = watch_loop(
        client,
        &mut stream,
        (position, ordered),
        opts,
        &outbox,
        &*observer,
    );
    // Losing the lead stops both at once: the next leader continues from what is durable
    // (an interrupted put may land; readers accept overlaps that agree).
    let result = tokio::select! {
        biased;
        () = cancel.cancelled() => Ok(()),
        r = watching => r,
        b = upload(&outbox, (repo, chain), opts, &*observer) => Err(b),
    };
    let durable = outbox.durable();
    // Its spool files go with it: on a break the chain ends, on a stop the next leader
    // records again from the durable revision.
    drop(outbox);
    observer.buffered(0, 0);
    result.map(|()| durable)
}

/// Reads the watch and seals segments into the outbox; returns only on a break.
async fn watch_loop(
    client: &mut Client,
    stream: &mut etcd_client::WatchStream,
    (position, ordered): (i64, bool),
    opts: &RecorderOptions,
    outbox: &Outbox,
    observer: &dyn Observer,
) -> Result<(), Break> {
    let mut st = State {
        sealed: position,
        position,
        pending: Vec::new(),
        pending_bytes: 0,
        has_revisions: false,
        first_pending: None,
        last_seal: Instant::now(),
        known_leases: HashSet::new(),
    };
    let mut assembler = Assembler::default();
    // Checked ten times per flush interval, so a revision waits at most about 1.1 flush
    // intervals (a tick of a full interval made it up to two: measured, docs/benchmarks.md).
    let mut tick = tokio::time::interval(
        (opts.flush_interval / 10).clamp(Duration::from_millis(20), Duration::from_secs(1)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_progress_request = Instant::now();
    loop {
        tokio::select! {
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return Err(Break::Watch("the server closed the watch".into())),
                    Err(e) => return Err(Break::Watch(crate::etcd::describe(&e))),
                };
                match convert::classify(&resp).map_err(Break::Watch)? {
                    Response::Created => {}
                    Response::Compacted { compact_revision } => {
                        return Err(Break::Compacted { position: st.position, compact_revision });
                    }
                    Response::Cancelled { reason } => {
                        return Err(Break::Watch(format!("cancelled by the server: {reason}")));
                    }
                    Response::Progress { revision } => {
                        if revision > st.position && assembler.pending() == 0 {
                            if ordered {
                                return Err(Break::Behind { position: st.position, reported: revision });
                            }
                            // Before 3.4.25/3.5.8 a requested progress may overtake
                            // queued events: a hint, not proof.
                        } else {
                            st.mark(now_ms());
                        }
                    }
                    Response::Events { events, fragment } => {
                        for (revision, events) in assembler.push(events, fragment) {
                            if revision != st.position + 1 {
                                return Err(Break::Gap { expected: st.position + 1, got: revision });
                            }
                            let seen_ms = now_ms();
                            for lease in events.iter().filter(|e| e.kind == EventKind::Put && e.lease != 0).map(|e| e.lease).collect::<Vec<_>>() {
                                if st.known_leases.insert(lease) {
                                    let granted_ttl = match client.lease_time_to_live(lease, None).await {
                                        Ok(r) => r.granted_ttl(),
                                        Err(e) => {
                                            tracing::warn!(lease, error = %crate::etcd::describe(&e), "could not read a lease's TTL; recorded as unknown");
                                            -1
                                        }
                                    };
                                    st.push(Record::Lease { id: lease, granted_ttl, seen_ms });
                                }
                            }
                            st.push(Record::Revision { revision, seen_ms, events });
                            st.position = revision;
                            st.has_revisions = true;
                            // Sealed revision by revision, so that a response of many
                            // revisions (a catch-up) still makes segments of about this size.
                            if st.pending_bytes >= opts.max_segment_bytes {
                                st.seal(outbox, observer)?;
                            }
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let due = if st.has_revisions {
                    st.first_pending.is_some_and(|t| t.elapsed() >= opts.flush_interval)
                } else {
                    // While segments wait for the storage, a newer mark waits here (the
                    // newest replaces the older ones) instead of queueing marks-only
                    // segments of the same range behind them.
                    st.last_seal.elapsed() >= opts.quiet_interval && outbox.is_empty()
                };
                if due {
                    st.seal(outbox, observer)?;
                } else if !st.has_revisions
                    && ordered
                    && last_progress_request.elapsed() >= Duration::from_secs(1)
                {
                    // Ask where the cluster is (once a second), so quiet time maps to a
                    // revision.
                    last_progress_request = Instant::now();
                    if let Err(e) = stream.request_progress().await {
                        return Err(Break::Watch(crate::etcd::describe(&e)));
                    }
                }
            }
        }
    }
}

/// Writes the outbox's segments to storage, oldest first, one at a time, each retried
/// until it is durable; returns only on a break (a spool file that cannot be read back).
async fn upload(
    outbox: &Outbox,
    (repo, chain): (&Repository, &ChainWriter),
    opts: &RecorderOptions,
    observer: &dyn Observer,
) -> Break {
    let first_retry = opts.flush_interval.min(MAX_RETRY);
    loop {
        let head = match outbox.head() {
            None => {
                outbox.wait().await;
                continue;
            }
            Some(Ok(h)) => h,
            Some(Err(b)) => return b,
        };
        let mut retry = first_retry;
        loop {
            let t0 = Instant::now();
            match store::put_segment(repo, chain, (head.from, head.to), &head.records).await {
                Ok(w) => {
                    outbox.pop();
                    observer.durable(head.to, w.manifest.last_seen_ms, t0.elapsed().as_secs_f64());
                    let (memory, spool) = outbox.bytes();
                    observer.buffered(memory, spool);
                    break;
                }
                Err(e) => {
                    observer.flush_failed();
                    let (memory, spool) = outbox.bytes();
                    tracing::warn!(
                        error = %e,
                        from_revision = head.from,
                        to_revision = head.to,
                        buffered_memory_bytes = memory,
                        buffered_spool_bytes = spool,
                        retry_in_ms = retry.as_millis() as u64,
                        "could not store a change-log segment; keeping it and retrying"
                    );
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }
}

struct State {
    /// The last revision in a sealed segment.
    sealed: i64,
    /// The last revision received whole.
    position: i64,
    pending: Vec<Record>,
    pending_bytes: usize,
    has_revisions: bool,
    /// When the oldest unsealed record was added.
    first_pending: Option<Instant>,
    last_seal: Instant,
    known_leases: HashSet<i64>,
}

impl State {
    fn push(&mut self, r: Record) {
        self.pending_bytes += r.encoded_len();
        self.pending.push(r);
        self.first_pending.get_or_insert_with(Instant::now);
    }

    /// A mark for the current position; consecutive marks keep only the newest.
    fn mark(&mut self, seen_ms: i64) {
        let mark = Record::Mark {
            seen_ms,
            revision: self.position,
        };
        if let Some(last @ Record::Mark { .. }) = self.pending.last_mut() {
            *last = mark;
            return;
        }
        self.push(mark);
    }

    /// Seals what is pending into the segment (sealed, position] and hands it to the
    /// outbox.
    fn seal(&mut self, outbox: &Outbox, observer: &dyn Observer) -> Result<(), Break> {
        if !self.has_revisions {
            // Quiet: a segment of one mark at the current position.
            self.mark(now_ms());
        }
        let records = std::mem::take(&mut self.pending);
        let bytes = std::mem::take(&mut self.pending_bytes);
        outbox.push((self.sealed, self.position), records, bytes)?;
        let (memory, spool) = outbox.bytes();
        observer.buffered(memory, spool);
        self.sealed = self.position;
        self.has_revisions = false;
        self.first_pending = None;
        self.last_seal = Instant::now();
        Ok(())
    }
}
