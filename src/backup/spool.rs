//! The two small pieces the pipeline hands bytes to: the spool file (the local copy that
//! is checked before a backup is committed) and the writer that passes compressed bytes
//! to the upload task.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::BackupError;

/// The local copy of the snapshot: created 0600 with O_EXCL, removed when done.
pub(super) struct Spool {
    pub(super) path: PathBuf,
}

impl Spool {
    pub(super) fn create(dir: &Path, id: &str) -> Result<Spool, BackupError> {
        let path = dir.join(format!("lifeboat-{id}.db.spool"));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| BackupError::Spool {
                path: path.clone(),
                source,
            })?;
        Ok(Spool { path })
    }

    pub(super) fn file(&self) -> Result<File, BackupError> {
        OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|source| BackupError::Spool {
                path: self.path.clone(),
                source,
            })
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
