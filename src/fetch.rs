//! Getting a backup back: download the stored object, decompress it into a plain snapshot
//! file (db ‖ sha256 trailer, what `etcdutl snapshot restore` takes), and check it against
//! its manifest: the stored bytes' sha256, the db bytes' sha256, the trailer, the bbolt
//! structure and the `snapshot status` figures. `verify` is the same into a file that is
//! then removed.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use crate::repository::{Manifest, RepoError, Repository, explain};
use crate::snapshot::status::hex;
use crate::snapshot::{self, ScanOptions, SnapshotError};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("backup {id}: downloading {key}: {reason}")]
    Download {
        id: String,
        key: String,
        reason: String,
    },
    #[error("backup {id}: {what} does not match the manifest: expected {expected}, found {found}")]
    Mismatch {
        id: String,
        what: &'static str,
        expected: String,
        found: String,
    },
    #[error("backup {id}: the stored object does not decompress ({reason}): it is corrupted")]
    Decompress { id: String, reason: String },
    #[error("backup {id}: {source}")]
    Snapshot {
        id: String,
        #[source]
        source: SnapshotError,
    },
    #[error("backup {id}: cannot use {path}: {source}")]
    Output {
        id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("backup {id} is encrypted ({scheme}); encrypted backups are not supported yet")]
    Encrypted { id: String, scheme: String },
    #[error("{path} already exists; lifeboat does not overwrite files")]
    Exists { path: PathBuf },
}

/// Downloads backup `m` into `out` (via `out.part`, renamed when everything matched).
pub async fn fetch(repo: &Repository, m: &Manifest, out: &Path) -> Result<(), FetchError> {
    if out.exists() {
        return Err(FetchError::Exists {
            path: out.to_path_buf(),
        });
    }
    let part = part_path(out);
    let result = download_and_check(repo, m, &part).await;
    match result {
        Ok(()) => std::fs::rename(&part, out).map_err(|source| FetchError::Output {
            id: m.id.clone(),
            path: out.to_path_buf(),
            source,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// Downloads and checks backup `m` into a temporary file in `scratch`, then removes it.
pub async fn verify(repo: &Repository, m: &Manifest, scratch: &Path) -> Result<(), FetchError> {
    let path = scratch.join(format!("lifeboat-verify-{}.db.part", m.id));
    let result = download_and_check(repo, m, &path).await;
    let _ = std::fs::remove_file(&path);
    result
}

fn part_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

async fn download_and_check(
    repo: &Repository,
    m: &Manifest,
    path: &Path,
) -> Result<(), FetchError> {
    let id = m.id.clone();
    if m.object.encryption != "none" {
        return Err(FetchError::Encrypted {
            id,
            scheme: m.object.encryption.clone(),
        });
    }
    let out_err = |source: io::Error| FetchError::Output {
        id: m.id.clone(),
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(out_err)?;
    let download_err = |e: object_store::Error| FetchError::Download {
        id: m.id.clone(),
        key: m.object.key.clone(),
        reason: explain(&e),
    };
    let object = repo
        .store()
        .get(&repo.path(&m.object.key))
        .await
        .map_err(download_err)?;
    let mut stream = object.into_stream();

    // Decompression runs in a blocking thread fed through a bounded channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let decoder = tokio::task::spawn_blocking(move || -> io::Result<(u64, [u8; 32], Vec<u8>)> {
        let sink = HashingFile {
            file,
            sha: Sha256::new(),
            tail: Vec::with_capacity(64),
            len: 0,
        };
        let mut decoder = zstd::stream::write::Decoder::new(sink)?;
        while let Some(b) = rx.blocking_recv() {
            decoder.write_all(&b)?;
        }
        decoder.flush()?;
        let sink = decoder.into_inner();
        sink.file.sync_all()?;
        Ok((sink.len, sink.sha.finalize().into(), sink.tail))
    });
    let mut stored_sha = Sha256::new();
    let mut stored_len = 0u64;
    let mut download_failed = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => {
                stored_sha.update(&b);
                stored_len += b.len() as u64;
                if tx.send(b).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                download_failed = Some(download_err(e));
                break;
            }
        }
    }
    drop(tx);
    let decoded = decoder.await;
    if let Some(e) = download_failed {
        return Err(e);
    }
    let stored_sha = hex(&stored_sha.finalize());
    if stored_sha != m.object.sha256 || stored_len != m.object.size {
        return Err(FetchError::Mismatch {
            id,
            what: "stored object sha256/size",
            expected: format!("{} ({} bytes)", m.object.sha256, m.object.size),
            found: format!("{stored_sha} ({stored_len} bytes)"),
        });
    }
    let (plain_len, db_sha, trailer) = match decoded {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return Err(FetchError::Decompress {
                id,
                reason: e.to_string(),
            });
        }
        Err(e) => {
            return Err(FetchError::Decompress {
                id,
                reason: e.to_string(),
            });
        }
    };
    let db_sha = hex(&db_sha);
    if db_sha != m.db_sha256 || plain_len != m.object.plain_size {
        return Err(FetchError::Mismatch {
            id,
            what: "snapshot sha256/size",
            expected: format!("{} ({} bytes)", m.db_sha256, m.object.plain_size),
            found: format!("{db_sha} ({plain_len} bytes)"),
        });
    }
    if hex(&trailer) != m.db_sha256 {
        return Err(FetchError::Mismatch {
            id,
            what: "snapshot sha256 trailer",
            expected: m.db_sha256.clone(),
            found: hex(&trailer),
        });
    }
    let path_owned = path.to_path_buf();
    let scanned = tokio::task::spawn_blocking(move || {
        snapshot::scan(
            &path_owned,
            ScanOptions {
                verify_trailer: false,
            },
        )
    })
    .await
    .map_err(|e| FetchError::Decompress {
        id: id.clone(),
        reason: e.to_string(),
    })?;
    let (status, _) = scanned.map_err(|source| FetchError::Snapshot {
        id: id.clone(),
        source,
    })?;
    let figures = |hash: u32, rev: i64, keys: u64, size: u64| {
        format!("hash {hash:x}, revision {rev}, totalKey {keys}, totalSize {size}")
    };
    let expected = figures(m.hash, m.revision, m.total_key, m.db_size);
    let found = figures(
        status.hash,
        status.revision,
        status.total_key,
        status.total_size,
    );
    if expected != found {
        return Err(FetchError::Mismatch {
            id,
            what: "snapshot status",
            expected,
            found,
        });
    }
    Ok(())
}

/// The decompressed snapshot: written to the file, the db part hashed (the last 32
/// bytes, the trailer, held back).
struct HashingFile {
    file: std::fs::File,
    sha: Sha256,
    tail: Vec<u8>,
    len: u64,
}

impl Write for HashingFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        self.tail.extend_from_slice(data);
        let excess = self.tail.len().saturating_sub(32);
        self.sha.update(&self.tail[..excess]);
        self.tail.drain(..excess);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
