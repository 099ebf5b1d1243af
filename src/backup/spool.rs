//! The small pieces the pipeline hands bytes to: the batches that carry the stream to the
//! processor thread, the spool file (the stream check's scratch file, checked before a
//! backup is committed) and the writer that passes compressed bytes to the upload task.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::BackupError;
use crate::snapshot::stream::StreamCheck;

/// The spool file: the skeleton of the snapshot's B+trees that the stream check keeps
/// (`snapshot::stream`), a few percent of the database. Created 0600 with O_EXCL,
/// removed when done. Its name is still `lifeboat-<id>.db.spool`, the name that the
/// daemon and the systemd units clean up after a run that was killed.
pub(super) struct Spool {
    pub(super) path: PathBuf,
}

impl Spool {
    /// Creates the spool file in `dir` and the stream check that writes it.
    pub(super) fn create(dir: &Path, id: &str) -> Result<(Spool, StreamCheck), BackupError> {
        let path = dir.join(format!("lifeboat-{id}.db.spool"));
        let check = StreamCheck::create(&path, Path::new("the stream")).map_err(|source| {
            BackupError::Spool {
                path: path.clone(),
                source,
            }
        })?;
        Ok((Spool { path }, check))
    }

    pub(super) fn remove(&self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "could not remove the spool file")
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A `Write` that hands its bytes, in blocks of about 1 MiB, to the upload task.
pub(super) struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

const BLOCK: usize = 1 << 20;

impl ChannelWriter {
    pub(super) fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(BLOCK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        self.tx
            .blocking_send(Bytes::from(block))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BLOCK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The stream's chunks (etcd sends 32 KiB or less per message), gathered into batches of
/// about [`BATCH`] bytes before they go to the processor thread: one hand-off between
/// threads per batch instead of per chunk (a wake-up each, when the processor waits). The
/// chunks are moved, not copied.
pub(super) struct Batcher {
    tx: mpsc::Sender<Vec<Vec<u8>>>,
    batch: Vec<Vec<u8>>,
    bytes: usize,
}

/// Bytes per batch handed to the processor thread.
pub(super) const BATCH: usize = 1 << 20;

impl Batcher {
    pub(super) fn new(tx: mpsc::Sender<Vec<Vec<u8>>>) -> Self {
        Batcher {
            tx,
            batch: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a chunk; false once the processor has stopped.
    pub(super) async fn push(&mut self, chunk: Vec<u8>) -> bool {
        self.bytes += chunk.len();
        self.batch.push(chunk);
        if self.bytes < BATCH {
            return true;
        }
        self.send().await
    }

    /// Sends what is gathered; false once the processor has stopped.
    pub(super) async fn send(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.batch);
        self.bytes = 0;
        self.tx.send(batch).await.is_ok()
    }
}
