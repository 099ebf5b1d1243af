//! One backup: snapshot stream → verify → compress → upload → manifest.
//!
//! ```text
//!  etcd ──chunks──▶ processor thread ─────────────▶ upload task ──parts──▶ storage
//!  (async)          sha256 of the db bytes          sha256 of stored bytes
//!                   stream check → skeleton (0600)  multipart, bounded parts
//!                   zstd (multithreaded)
//! ```
//! Channels between the stages are bounded, so memory does not grow with the snapshot.
//! The stream check (`snapshot::stream`) keeps, in the spool file, the skeleton of the
//! database's B+trees (keys, short values, digests of long ones: a few percent of the
//! database), not a copy of it. When the stream ends: the trailer must equal the sha256
//! computed, and the skeleton must walk as a consistent bbolt file (the checks of a file
//! scan) whose revision is at least the one a linearizable read returned before
//! streaming. While that walk runs, the upload is completed and made durable; the
//! manifest, written only after both, is the commit point. On any failure the multipart
//! upload is aborted (or the completed data object deleted), the spool is removed, and no
//! manifest is written.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod spool;

use spool::{Batcher, ChannelWriter, Spool};

use crate::encryption::Sink;
use crate::etcd::{self, EtcdError, EtcdSettings, MemberStatus, SnapshotStream};
use crate::repository::upload::ObjectUpload;
use crate::repository::{Manifest, RepoError, Repository, StoredObject, explain, manifest};
use crate::snapshot::stream::{Skeleton, StreamCheck};
use crate::snapshot::trailer::TrailerSplit;
use crate::snapshot::{self, SnapshotError};

/// How a backup is taken.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Where the stream check keeps its scratch file (the skeleton of the B+trees).
    pub spool_dir: PathBuf,
    pub zstd_level: i32,
    /// Compression threads (0: single-threaded in the processor thread).
    pub zstd_workers: u32,
    /// The stream fails when no data arrived for this long.
    pub stall_timeout: Duration,
    /// Multipart part size (S3's minimum is 5 MiB).
    pub part_size: usize,
    pub parts_in_flight: usize,
    /// How long a failed run keeps trying to abort its multipart upload when the store
    /// does not answer.
    pub abort_patience: Duration,
    /// age recipients; empty: stored unencrypted.
    pub recipients: Vec<age::x25519::Recipient>,
    /// Cancelling it stops the backup cleanly: upload aborted, spool removed, no manifest.
    pub cancel: CancellationToken,
    /// `[bundle]`: files stored with the backup, encrypted.
    pub bundle: Option<crate::bundle::Settings>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            spool_dir: std::env::temp_dir(),
            // Chosen by `make bench` (docs/benchmarks.md): on Kubernetes-like data level 1
            // compresses as well as 3 (4.50 vs 4.49), keeps up with the stream, and needs
            // about half the memory of level 3's larger zstd jobs.
            zstd_level: 1,
            zstd_workers: 2,
            stall_timeout: Duration::from_secs(60),
            // S3's smallest part; with two in flight the upload buffers about 15 MiB.
            part_size: 5 << 20,
            parts_in_flight: 2,
            abort_patience: Duration::from_secs(30),
            recipients: Vec::new(),
            cancel: CancellationToken::new(),
            bundle: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("spool file {path}: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("uploading {key} to {url}: {reason}")]
    Upload {
        url: String,
        key: String,
        reason: String,
    },
    #[error("snapshot from {endpoint} failed verification: {reason}")]
    Verify { endpoint: String, reason: String },
    #[error("snapshot from {endpoint} failed verification: {source}")]
    Snapshot {
        endpoint: String,
        #[source]
        source: SnapshotError,
    },
    #[error("compressing: {0}")]
    Compress(String),
    #[error("{0}")]
    Bundle(String),
    #[error("cancelled (shutting down, or the daemon stopped leading); nothing was committed")]
    Cancelled,
    #[error("{source}; the backup was not committed: {cleanup}")]
    NotCommitted {
        #[source]
        source: Box<BackupError>,
        cleanup: String,
    },
}

impl BackupError {
    pub fn is_config(&self) -> bool {
        match self {
            BackupError::Etcd(e) => e.is_config(),
            BackupError::Repo(e) => e.is_config(),
            BackupError::NotCommitted { source, .. } => source.is_config(),
            BackupError::Bundle(_) => true,
            _ => false,
        }
    }
}

/// Something that wants to know how far the stream is.
pub trait Progress: Send + Sync {
    fn start(&self, expected_bytes: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

/// No progress output.
pub struct Silent;
impl Progress for Silent {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// What a finished backup reports besides its manifest.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub manifest: Manifest,
    pub duration: Duration,
    pub source: MemberStatus,
}

/// Takes one backup. See the module documentation for the order of things.
pub async fn run(
    settings: &EtcdSettings,
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport, BackupError> {
    let t0 = Instant::now();
    repo.probe().await?;
    // Read first: a file that is missing fails the run before anything is streamed.
    let bundle = match &opts.bundle {
        Some(b) => Some(b.pack().map_err(BackupError::Bundle)?),
        None => None,
    };
    let etcd::Chosen {
        mut client,
        status: source,
        read_revision,
    } = tokio::select! {
        selected = etcd::select_member(settings) => selected?,
        () = opts.cancel.cancelled() => return Err(BackupError::Cancelled),
    };
    let started = chrono::Utc::now();
    let id = manifest::new_id(started, rand_u32());
    let encrypted = !opts.recipients.is_empty();
    let key = Repository::data_key(&id, encrypted);
    let (spool, check) = Spool::create(&opts.spool_dir, &id)?;
    tracing::info!(id = %id, endpoint = %source.endpoint, db_size = source.db_size, "backup started");

    let upload = repo
        .store()
        .put_multipart(&repo.path(&key))
        .await
        .map_err(|e| BackupError::Upload {
            url: repo.url().to_owned(),
            key: key.clone(),
            reason: explain(&e),
        })?;
    let writer = ObjectUpload::new(upload, opts.part_size, opts.parts_in_flight);

    let target = UploadTarget {
        url: repo.url().to_owned(),
        key: key.clone(),
    };
    let streamed = stream_and_store(
        &mut client,
        &source,
        (check, &spool),
        (writer, target),
        opts,
        progress,
    )
    .await;
    let (mut writer, processed, stored) = match streamed {
        Streamed {
            writer: Some(w),
            outcome: Ok((p, s)),
        } => (w, p, s),
        Streamed { writer, outcome } => {
            if let Some(mut w) = writer {
                abort(&mut w, opts).await;
            }
            let e = outcome.err().unwrap_or_else(|| {
                BackupError::Compress("the upload task stopped unexpectedly".into())
            });
            return Err(fail(e, &spool, repo, (&id, &key), Wrote::Nothing).await);
        }
    };

    tracing::debug!(id = %id, bytes = processed.plain_len, secs = t0.elapsed().as_secs_f64(), "stream complete");
    // Verify before anything becomes visible. The walk of the skeleton reads the spool
    // file: off the async workers (the daemon's election keep-alives and HTTP endpoint
    // share them). Meanwhile the data object is completed and made durable: without its
    // manifest it is not a backup (the manifest is the commit point), and a failed check
    // deletes it. The two overlap because on file:// the fsync of the data object takes
    // longer than the walk (docs/benchmarks.md).
    let check = {
        let endpoint = source.endpoint.clone();
        let trailer = (processed.trailer, processed.db_sha256, processed.plain_len);
        let skeleton = processed.skeleton;
        let check = tokio::task::spawn_blocking(move || {
            verify_stream(skeleton, &endpoint, trailer, read_revision)
        });
        async {
            check.await.unwrap_or_else(|e| {
                Err(BackupError::Verify {
                    endpoint: source.endpoint.clone(),
                    reason: format!("the check stopped unexpectedly: {e}"),
                })
            })
        }
    };
    let complete = async {
        writer.finish().await.map_err(|e| BackupError::Upload {
            url: repo.url().to_owned(),
            key: key.clone(),
            reason: explain(&e),
        })?;
        repo.sync(&key).await.map_err(BackupError::from)
    };
    let (checked, completed) = tokio::select! {
        (c, d) = async { tokio::join!(check, complete) } => (c, Some(d)),
        () = opts.cancel.cancelled() => (Err(BackupError::Cancelled), None),
    };
    tracing::debug!(id = %id, secs = t0.elapsed().as_secs_f64(), "snapshot checked, data object stored");
    let open_upload = completed.is_none();
    // Report the first cause: the check, then the upload; cancelled counts as failed.
    let failure = match (checked, completed) {
        (Ok(s), Some(Ok(()))) if !opts.cancel.is_cancelled() => Ok(s),
        (Ok(_), Some(Ok(()))) => Err(BackupError::Cancelled),
        (Err(e), _) | (Ok(_), Some(Err(e))) => Err(e),
        (Ok(_), None) => Err(BackupError::Cancelled),
    };
    let status = match failure {
        Ok(s) => s,
        Err(e) => {
            if open_upload {
                // Cut off while completing: the upload may still be open.
                abort(&mut writer, opts).await;
            }
            // The object may have been completed: delete it (harmless when it was not).
            return Err(fail(e, &spool, repo, (&id, &key), Wrote::Data).await);
        }
    };
    let finished = chrono::Utc::now();
    let manifest = Manifest {
        format: manifest::FORMAT,
        id: id.clone(),
        cluster: repo.cluster().to_owned(),
        cluster_id: format!("{:x}", source.cluster_id),
        member_id: format!("{:x}", source.member_id),
        endpoint: source.endpoint.clone(),
        etcd_version: source.version.clone(),
        storage_version: source.storage_version.clone(),
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        finished_at: finished.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        revision: status.revision,
        store_revision: status.store_revision(),
        header_revision: source.header_revision,
        read_revision,
        raft_term: source.raft_term,
        raft_index: source.raft_index,
        db_size: processed.db_len,
        db_sha256: crate::snapshot::status::hex(&processed.db_sha256),
        hash: status.hash,
        total_key: status.total_key,
        live_keys: status.live_keys,
        members: status.members.clone(),
        object: StoredObject {
            key: key.clone(),
            size: stored.size,
            sha256: crate::snapshot::status::hex(&stored.sha256),
            plain_size: processed.plain_len,
            compression: "zstd".into(),
            encryption: if encrypted { "age" } else { "none" }.into(),
        },
        lifeboat_version: env!("CARGO_PKG_VERSION").into(),
        bundle: None,
    };
    let mut manifest = manifest;
    if let Some(packed) = &bundle {
        let bundle_key = Repository::bundle_key(&id);
        match repo.put_small(&bundle_key, packed.bytes.clone()).await {
            Ok(()) => manifest.bundle = Some(packed.entry(bundle_key)),
            Err(e) => {
                let _ = repo.delete(&bundle_key).await;
                return Err(fail(e.into(), &spool, repo, (&id, &key), Wrote::Data).await);
            }
        }
    }
    // A failed manifest write may still have stored it (a lost reply, a failed fsync):
    // everything this run wrote is removed, manifest first.
    if let Err(e) = repo.put_manifest(&manifest).await {
        let e = fail(e.into(), &spool, repo, (&id, &key), Wrote::Manifest).await;
        if manifest.bundle.is_some() {
            let _ = repo.delete(&Repository::bundle_key(&id)).await;
        }
        return Err(e);
    }
    spool.remove();
    tracing::info!(id = %id, revision = status.revision, "backup committed");
    Ok(BackupReport {
        manifest,
        duration: t0.elapsed(),
        source,
    })
}

/// How far a failed run got in writing to storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrote {
    /// At most an unfinished multipart upload, which the caller aborted.
    Nothing,
    /// The data object is complete.
    Data,
    /// The manifest may have been stored too.
    Manifest,
}

/// Cleans up after a failure and returns the error to report: a failed run leaves
/// nothing that looks valid.
async fn fail(
    e: BackupError,
    spool: &Spool,
    repo: &Repository,
    (id, key): (&str, &str),
    wrote: Wrote,
) -> BackupError {
    spool.remove();
    if wrote == Wrote::Manifest {
        let left = repo.remove_backup(id, key).await;
        if left.is_empty() {
            tracing::warn!(
                id,
                "the manifest may have been stored: removed the manifest, then the data object, of this failed run"
            );
        } else {
            tracing::error!(id, left = %left.join(", "), "could not remove everything this failed run wrote; `lifeboat list` shows it as no-data and prune leaves its data as a leftover");
        }
        return BackupError::NotCommitted {
            source: Box::new(e),
            cleanup: if left.is_empty() {
                format!("its manifest and data object ({key}) were removed")
            } else {
                format!("could not remove {}", left.join(", "))
            },
        };
    }
    // A completed upload without a manifest must not linger looking like data.
    // (An aborted one leaves nothing; deleting is harmless when there is nothing.)
    if let Err(cleanup) = repo.delete(key).await {
        tracing::error!(key, error = %cleanup, completed = wrote == Wrote::Data, "could not delete the unfinished data object");
    }
    tracing::error!(error = %e, "backup failed");
    e
}

async fn abort(writer: &mut ObjectUpload, opts: &BackupOptions) {
    if let Err(e) = writer.abort(opts.abort_patience).await {
        tracing::error!(
            error = %explain(&e),
            "could not abort the multipart upload; the store keeps its parts until they are \
             cleaned (S3: a lifecycle rule for incomplete multipart uploads)"
        );
    }
}

/// What the processor thread saw.
struct Processed {
    db_len: u64,
    plain_len: u64,
    db_sha256: [u8; 32],
    trailer: Option<[u8; 32]>,
    /// The stream check's skeleton, or why the stream is not a sound bbolt file (told
    /// only after the trailer check, which explains any damage first).
    skeleton: Result<Skeleton, SnapshotError>,
}

struct Stored {
    size: u64,
    sha256: [u8; 32],
}

/// The multipart upload (unless its task died) and how the stream went.
struct Streamed {
    writer: Option<ObjectUpload>,
    outcome: Result<(Processed, Stored), BackupError>,
}

/// Streams the snapshot through the processor thread into the upload, without completing
/// the upload.
async fn stream_and_store(
    client: &mut etcd_client::Client,
    source: &MemberStatus,
    (check, spool): (StreamCheck, &Spool),
    (writer, target): (ObjectUpload, UploadTarget),
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Streamed {
    // Two batches of about 1 MiB queued: the stream runs ahead of the processor by at
    // most ~3 MiB.
    let (raw_tx, raw_rx) = mpsc::channel::<Vec<Vec<u8>>>(2);
    let (zst_tx, zst_rx) = mpsc::channel::<Bytes>(2);
    let (level, workers) = (opts.zstd_level, opts.zstd_workers);
    let spool_path = spool.path.clone();
    let recipients = opts.recipients.clone();
    let processor = tokio::task::spawn_blocking(move || {
        let sink = Sink::new(ChannelWriter::new(zst_tx), &recipients)
            .map_err(|e| BackupError::Compress(format!("starting encryption: {e}")))?;
        process(raw_rx, (check, spool_path), sink, level, workers)
    });
    let uploader = tokio::spawn(upload(zst_rx, writer, target));

    progress.start(u64::try_from(source.db_size).unwrap_or(0));
    let streamed: Result<(), BackupError> = async {
        let stream = SnapshotStream::open(client, &source.endpoint, opts.stall_timeout).await?;
        // The stream is read in a task of its own, on the runtime's workers next to the
        // HTTP/2 connection that receives it: each message then wakes a task on the same
        // worker, where awaiting it here (on the thread that called `block_on`) took a
        // thread wake-up per message (~400k futex calls for 1.3 GB).
        let received = Arc::new(AtomicU64::new(0));
        let mut pump = tokio::spawn(pump(
            stream,
            Batcher::new(raw_tx),
            received.clone(),
            opts.cancel.clone(),
        ));
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut reported = 0;
        let report = |reported: &mut u64| {
            let now = received.load(Ordering::Relaxed);
            progress.advance(now - *reported);
            *reported = now;
        };
        let pumped = loop {
            tokio::select! {
                done = &mut pump => break done,
                _ = tick.tick() => report(&mut reported),
            }
        };
        report(&mut reported);
        pumped.unwrap_or_else(|e| Err(BackupError::Compress(format!("stream task: {e}"))))
    }
    .await;
    progress.finish();

    let processed = processor
        .await
        .unwrap_or_else(|e| Err(BackupError::Compress(format!("processor thread: {e}"))));
    let (writer, uploaded) = match uploader.await {
        Ok((w, r)) => (Some(w), r),
        Err(e) => (
            None,
            Err(BackupError::Compress(format!("upload task: {e}"))),
        ),
    };
    // Report the first cause: the stream, then the upload, then the processor.
    let outcome = match (streamed, uploaded, processed) {
        (Err(e), _, _) | (Ok(()), Err(e), _) | (Ok(()), Ok(_), Err(e)) => Err(e),
        (Ok(()), Ok(stored), Ok(p)) => Ok((p, stored)),
    };
    Streamed { writer, outcome }
}

/// Reads the snapshot stream into batches for the processor thread, counting the bytes.
async fn pump(
    mut stream: SnapshotStream,
    mut batcher: Batcher,
    received: Arc<AtomicU64>,
    cancel: CancellationToken,
) -> Result<(), BackupError> {
    loop {
        let chunk = tokio::select! {
            chunk = stream.next_chunk() => chunk?,
            () = cancel.cancelled() => return Err(BackupError::Cancelled),
        };
        let Some(chunk) = chunk else { break };
        received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if !batcher.push(chunk).await {
            return Ok(()); // the processor stopped; its error is reported below
        }
    }
    batcher.send().await;
    Ok(())
}

/// The processor thread: splits off the trailer, hashes, checks the stream (keeping its
/// skeleton in the spool file), compresses (and encrypts, when the sink does).
fn process(
    mut rx: mpsc::Receiver<Vec<Vec<u8>>>,
    (mut check, spool_path): (StreamCheck, PathBuf),
    sink: Sink<ChannelWriter>,
    level: i32,
    workers: u32,
) -> Result<Processed, BackupError> {
    let compress_err = |e: io::Error| BackupError::Compress(e.to_string());
    let mut encoder = zstd::stream::write::Encoder::new(sink, level).map_err(compress_err)?;
    encoder.include_checksum(true).map_err(compress_err)?;
    if workers > 0 {
        encoder.multithread(workers).map_err(compress_err)?;
    }
    // The last 32 bytes of the stream are the trailer; the rest is hashed as it passes.
    let mut split = TrailerSplit::new();
    let spool_err = |e: io::Error| BackupError::Spool {
        path: spool_path.clone(),
        source: e,
    };
    while let Some(batch) = rx.blocking_recv() {
        for chunk in &batch {
            encoder.write_all(chunk).map_err(compress_err)?;
            split.update(chunk);
            check.feed(chunk).map_err(spool_err)?;
        }
    }
    // No fsync: the skeleton is scratch, read back at once from the page cache; the
    // stored object is what must be durable.
    check.flush().map_err(spool_err)?;
    let sink = encoder.finish().map_err(compress_err)?;
    let mut channel = sink.finish().map_err(compress_err)?;
    channel.flush().map_err(compress_err)?;
    let split = split.finish();
    Ok(Processed {
        db_len: split.db_len,
        plain_len: split.total,
        db_sha256: split.db_sha256,
        trailer: split.trailer,
        skeleton: check.finish(),
    })
}

/// Where the data object goes, for error messages.
struct UploadTarget {
    url: String,
    key: String,
}

/// The upload task: stored bytes into the multipart upload (bounded parts in flight).
async fn upload(
    mut rx: mpsc::Receiver<Bytes>,
    mut writer: ObjectUpload,
    target: UploadTarget,
) -> (ObjectUpload, Result<Stored, BackupError>) {
    let mut sha = Sha256::new();
    let mut size = 0u64;
    while let Some(bytes) = rx.recv().await {
        sha.update(&bytes);
        size += bytes.len() as u64;
        if let Err(e) = writer.write(&bytes).await {
            let err = BackupError::Upload {
                url: target.url,
                key: target.key,
                reason: explain(&e),
            };
            return (writer, Err(err));
        }
    }
    let stored = Stored {
        size,
        sha256: sha.finalize().into(),
    };
    (writer, Ok(stored))
}

/// The checks that make a streamed snapshot trustworthy: the trailer equals the sha256
/// of what was streamed, the stream is a consistent bbolt file (its skeleton walks with
/// every check of a file scan), and its revision is at least `floor`, the revision of the
/// linearizable read made through the member just before streaming (so the member was
/// current, not cut off with stale data).
fn verify_stream(
    skeleton: Result<Skeleton, SnapshotError>,
    endpoint: &str,
    (trailer, db_sha256, plain_len): (Option<[u8; 32]>, [u8; 32], u64),
    floor: i64,
) -> Result<snapshot::Status, BackupError> {
    let bad = |reason: String| BackupError::Verify {
        endpoint: endpoint.to_owned(),
        reason,
    };
    match trailer {
        None => {
            return Err(bad(format!(
                "the stream ended after {plain_len} bytes, before its sha256 trailer"
            )));
        }
        Some(t) if t != db_sha256 => {
            return Err(bad(format!(
                "the sha256 trailer ({}) does not match the data streamed ({}): the snapshot was corrupted in transit",
                crate::snapshot::status::hex(&t),
                crate::snapshot::status::hex(&db_sha256)
            )));
        }
        Some(_) => {}
    }
    // The sha256 was just checked on the stream; the skeleton holds the bbolt structure.
    let status =
        skeleton
            .and_then(Skeleton::status)
            .map_err(|source_err| BackupError::Snapshot {
                endpoint: endpoint.to_owned(),
                source: source_err,
            })?;
    let store_revision = status.store_revision();
    if store_revision < floor {
        return Err(bad(format!(
            "revision {store_revision} inside the snapshot is older than revision {floor}, which a \
             linearizable read through the same member returned before streaming: the member \
             served stale data"
        )));
    }
    Ok(status)
}

pub(crate) fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}
