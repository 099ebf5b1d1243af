//! Getting a backup back: download the stored object, decompress it into a plain snapshot
//! file (db ‖ sha256 trailer, what `etcdutl snapshot restore` takes), and check it against
//! its manifest: the stored bytes' sha256, the db bytes' sha256, the trailer, the bbolt
//! structure and the `snapshot status` figures. `verify` is the same into a file that is
//! then removed.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use crate::encryption::Identities;
use crate::repository::{Manifest, RepoError, Repository, explain};
use crate::snapshot::status::hex;
use crate::snapshot::trailer::{Split, TrailerSplit};
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
    #[error("backup {id} is encrypted with {scheme:?}, which this lifeboat does not know")]
    Encrypted { id: String, scheme: String },
    #[error("backup {id} is encrypted (age): give the identity file with --identity FILE")]
    NeedIdentity { id: String },
    #[error(
        "backup {id}: cannot decrypt ({reason}): is --identity the key for this backup's recipients?"
    )]
    Decrypt { id: String, reason: String },
    #[error("{path} already exists; lifeboat does not overwrite files")]
    Exists { path: PathBuf },
}

/// Downloads backup `m` into `out`, via a temporary file of its own beside it (created
/// exclusively, mode 0600, removed on failure) that is renamed to `out` when everything
/// matched, without ever replacing a file that appeared there meanwhile. A `.part` left
/// by an interrupted fetch is not in the way. Encrypted backups need `identities`.
pub async fn fetch(
    repo: &Repository,
    m: &Manifest,
    out: &Path,
    identities: Option<&Arc<Identities>>,
) -> Result<(), FetchError> {
    if out.symlink_metadata().is_ok() {
        return Err(FetchError::Exists {
            path: out.to_path_buf(),
        });
    }
    let part = part_path(out);
    // Removed however this ends, also when the future is dropped; a no-op once renamed.
    let _part = RemoveOnDrop(part.clone());
    download_and_check(repo, m, &part, identities).await?;
    rename_no_clobber(&part, out).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            FetchError::Exists {
                path: out.to_path_buf(),
            }
        } else {
            FetchError::Output {
                id: m.id.clone(),
                path: out.to_path_buf(),
                source,
            }
        }
    })
}

/// Renames `from` to `to` unless `to` exists (then `AlreadyExists`, nothing changed):
/// renameat2(RENAME_NOREPLACE), or link + unlink where the filesystem lacks it.
pub fn rename_no_clobber(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths that live across the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::ENOTSUP) => {
            // link(2) never replaces its target either.
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        _ => Err(e),
    }
}

/// Downloads and checks backup `m` into a temporary file in `scratch`, then removes it.
pub async fn verify(
    repo: &Repository,
    m: &Manifest,
    scratch: &Path,
    identities: Option<&Arc<Identities>>,
) -> Result<(), FetchError> {
    // Not named after the manifest's id (untrusted, it could hold `/` or `..`).
    let path = scratch.join(format!("lifeboat-verify-{}.db.part", random_suffix()));
    // Removed however this ends, also when the future is dropped (daemon shutdown).
    let _scratch = RemoveOnDrop(path.clone());
    download_and_check(repo, m, &path, identities).await
}

/// A backup downloaded and checked into a private file in a scratch directory, for
/// reading it in place (`lifeboat get`, `objects`, `diff`); removed when dropped.
pub struct ScratchCopy(RemoveOnDrop);

impl ScratchCopy {
    pub fn path(&self) -> &Path {
        &self.0.0
    }
}

/// Downloads and checks backup `m` into a new file (mode 0600) in `scratch`, kept until
/// the returned copy is dropped.
pub async fn fetch_scratch(
    repo: &Repository,
    m: &Manifest,
    scratch: &Path,
    identities: Option<&Arc<Identities>>,
) -> Result<ScratchCopy, FetchError> {
    let path = scratch.join(format!("lifeboat-read-{}.db.part", random_suffix()));
    let copy = ScratchCopy(RemoveOnDrop(path.clone()));
    download_and_check(repo, m, &path, identities).await?;
    Ok(copy)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `.NAME.RANDOM.part` beside `out`: unique to this fetch, on the same filesystem.
fn part_path(out: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(out.file_name().unwrap_or_default());
    name.push(format!(".{}.part", random_suffix()));
    out.with_file_name(name)
}

/// 16 hex digits from the kernel's random source (the time and pid if it fails).
fn random_suffix() -> String {
    let mut b = [0u8; 8];
    // SAFETY: getrandom(2) writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if usize::try_from(n).ok() != Some(b.len()) {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        b = (t ^ u64::from(std::process::id()).rotate_left(40)).to_le_bytes();
    }
    hex(&b)
}

async fn download_and_check(
    repo: &Repository,
    m: &Manifest,
    path: &Path,
    identities: Option<&Arc<Identities>>,
) -> Result<(), FetchError> {
    let id = m.id.clone();
    let identities = match (m.object.encryption.as_str(), identities) {
        ("none", _) => None,
        ("age", Some(ids)) => Some(Arc::clone(ids)),
        ("age", None) => return Err(FetchError::NeedIdentity { id }),
        (other, _) => {
            return Err(FetchError::Encrypted {
                id,
                scheme: other.to_owned(),
            });
        }
    };
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

    // Decryption and decompression run in a blocking thread, reading the download
    // through a bounded channel: stored bytes -> age (if any) -> zstd -> file.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let decoder = tokio::task::spawn_blocking(move || -> Result<Split, Decode> {
        let input = io::BufReader::with_capacity(256 << 10, ChannelReader::new(rx));
        let plain: Box<dyn Read> = match &identities {
            None => Box::new(input),
            Some(ids) => {
                let decryptor = age::Decryptor::new_buffered(input)
                    .map_err(|e| Decode::Decrypt(e.to_string()))?;
                let reader = decryptor
                    .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
                    .map_err(|e| Decode::Decrypt(e.to_string()))?;
                Box::new(reader)
            }
        };
        let mut sink = HashingFile {
            file,
            split: TrailerSplit::new(),
        };
        let mut decoder =
            zstd::stream::read::Decoder::new(plain).map_err(|e| Decode::Zstd(e.to_string()))?;
        io::copy(&mut decoder, &mut sink).map_err(|e| Decode::Zstd(e.to_string()))?;
        sink.file
            .sync_all()
            .map_err(|e| Decode::Zstd(e.to_string()))?;
        Ok(sink.split.finish())
    });
    let mut stored_sha = Sha256::new();
    let mut stored_len = 0u64;
    let mut download_failed = None;
    let mut reader_stopped = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => {
                stored_sha.update(&b);
                stored_len += b.len() as u64;
                if tx.send(b).await.is_err() {
                    reader_stopped = true;
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
    let decoded = decoder
        .await
        .unwrap_or_else(|e| Err(Decode::Zstd(e.to_string())));
    if let Some(e) = download_failed {
        return Err(e);
    }
    // A wrong identity stops the reader before the download ends: say that, not "sha256".
    if let (true, Err(Decode::Decrypt(reason))) = (reader_stopped, &decoded) {
        return Err(FetchError::Decrypt {
            id,
            reason: reason.clone(),
        });
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
        Ok(split) => (split.total, split.db_sha256, split.trailer),
        Err(Decode::Decrypt(reason)) => return Err(FetchError::Decrypt { id, reason }),
        Err(Decode::Zstd(reason)) => return Err(FetchError::Decompress { id, reason }),
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
    let trailer = trailer.map(|t| hex(&t)).unwrap_or_else(|| "(none)".into());
    if trailer != m.db_sha256 {
        return Err(FetchError::Mismatch {
            id,
            what: "snapshot sha256 trailer",
            expected: m.db_sha256.clone(),
            found: trailer,
        });
    }
    let path_owned = path.to_path_buf();
    let scanned = tokio::task::spawn_blocking(move || {
        snapshot::scan_status(
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
    let status = scanned.map_err(|source| FetchError::Snapshot {
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

/// Why the decoding thread stopped.
enum Decode {
    Decrypt(String),
    Zstd(String),
}

/// Reads the downloaded blocks handed over by the async side.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Self {
        ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The decompressed snapshot: written to the file, the db part hashed (the last 32
/// bytes, the trailer, held back).
struct HashingFile {
    file: std::fs::File,
    split: TrailerSplit,
}

impl Write for HashingFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.file.write_all(data)?;
        self.split.update(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rename_never_replaces_a_file_that_appeared_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (part, out) = (dir.path().join("p"), dir.path().join("out.db"));
        std::fs::write(&part, b"fetched").unwrap();
        // Someone else's file at the target, made after fetch's first check.
        std::fs::write(&out, b"theirs").unwrap();
        let e = rename_no_clobber(&part, &out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&out).unwrap(), b"theirs");
        assert_eq!(std::fs::read(&part).unwrap(), b"fetched");
        std::fs::remove_file(&out).unwrap();
        rename_no_clobber(&part, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"fetched");
        assert!(!part.exists());
    }

    #[test]
    fn part_names_are_unique_and_beside_the_target() {
        let out = Path::new("/srv/backups/snapshot.db");
        let (a, b) = (part_path(out), part_path(out));
        assert_ne!(a, b);
        assert_eq!(a.parent(), out.parent());
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".snapshot.db.") && name.ends_with(".part"),
            "{name}"
        );
        // The old fixed name, as an interrupted fetch left it, is not the one used.
        assert_ne!(a, Path::new("/srv/backups/snapshot.db.part"));
    }
}
