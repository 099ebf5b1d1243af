//! `restore drill`: proves a backup restores, without touching the cluster. The backup
//! is fetched and verified, restored with the real `etcdutl` into a scratch directory,
//! started as a single-member etcd on free loopback ports, and checked: its revision, its
//! key count and its `HashKV` must be what the snapshot holds. Then it is stopped and the
//! scratch directory removed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plan::BackupRef;
use super::run::Source;
use crate::etcd::{self, EtcdSettings};

/// The binaries and the place a drill uses.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub etcd: PathBuf,
    /// `etcdutl`, or `etcdctl` for 3.4.
    pub etcdutl: PathBuf,
    /// The scratch directory is created below this one.
    pub scratch: PathBuf,
    /// How long etcd may take to come up.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub backup: String,
    pub revision: i64,
    pub keys: i64,
    pub hash_kv: u32,
    pub seconds: f64,
}

/// A scratch directory removed on drop (it holds only what the drill made).
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    /// A new directory below `base` with an unpredictable name, made by this call alone
    /// (mkdtemp(3): mode 0700, `EEXIST` is never "fine"), so a directory or link someone
    /// else planted in a shared `/tmp` is never used.
    pub(crate) fn create(base: &Path) -> Result<Scratch, String> {
        use std::os::unix::ffi::OsStrExt;
        let template = base.join("lifeboat-drill-XXXXXX");
        let mut bytes = template.as_os_str().as_bytes().to_vec();
        if bytes.contains(&0) {
            return Err(format!("scratch {}: holds a NUL byte", base.display()));
        }
        bytes.push(0);
        // SAFETY: `bytes` is a NUL-terminated, writable buffer ending in "XXXXXX\0", as
        // mkdtemp(3) requires; it only rewrites those six bytes.
        let made = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast::<libc::c_char>()) };
        if made.is_null() {
            return Err(format!(
                "cannot create a scratch directory in {}: {} (give --scratch-dir)",
                base.display(),
                std::io::Error::last_os_error()
            ));
        }
        bytes.pop();
        Ok(Scratch(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes))))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two distinct free loopback ports (client, peer). Both listeners are held until both
/// are known: one bound and released after the other can come back as the same port,
/// and etcd then fails to bind its second URL.
fn free_ports() -> Result<(u16, u16), String> {
    let bind = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("no free loopback port: {e}"))
    };
    let port = |l: &std::net::TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(|e| format!("no free loopback port: {e}"))
    };
    let (client, peer) = (bind()?, bind()?);
    Ok((port(&client)?, port(&peer)?))
}

/// A single etcd member on free loopback ports, restored from a snapshot into a scratch
/// directory with the real `etcdutl` (or 3.4's `etcdctl`): the drill's and the replay's.
pub(crate) struct ScratchMember<'a> {
    pub name: &'a str,
    pub etcd: &'a Path,
    pub etcdutl: &'a Path,
    /// More flags for etcd.
    pub extra: &'a [&'a str],
}

/// A member restored into a scratch directory and not running: its data dir and the
/// URLs its membership was restored with (a restart must use the same peer URL).
pub(crate) struct Restored {
    pub data: PathBuf,
    pub client_url: String,
    pub peer_url: String,
}

impl ScratchMember<'_> {
    /// Restores `snapshot` into `dir/data` and starts etcd on it (its log in
    /// `dir/etcd.log`, killed when the child is dropped); returns the child and its
    /// client URL.
    pub(crate) async fn start(
        &self,
        snapshot: &Path,
        dir: &Path,
    ) -> Result<(tokio::process::Child, String), String> {
        let restored = self.restore(snapshot, dir).await?;
        let child = self.run(&restored, dir, &[])?;
        Ok((child, restored.client_url))
    }

    /// Restores `snapshot` into `dir/data` on free loopback ports, without starting it.
    pub(crate) async fn restore(&self, snapshot: &Path, dir: &Path) -> Result<Restored, String> {
        let (client_port, peer_port) = free_ports()?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let data = dir.join("data");
        let mut restore = tokio::process::Command::new(self.etcdutl);
        if is_etcdctl(self.etcdutl) {
            restore.env("ETCDCTL_API", "3");
        }
        let restored = restore
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .arg("--data-dir")
            .arg(&data)
            .args(["--name", self.name, "--initial-cluster"])
            .arg(format!("{}={peer_url}", self.name))
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.etcdutl.display()))?;
        if !restored.status.success() {
            return Err(format!(
                "{} snapshot restore failed: {}",
                self.etcdutl.display(),
                String::from_utf8_lossy(&restored.stderr).trim()
            ));
        }
        Ok(Restored {
            data,
            client_url,
            peer_url,
        })
    }

    /// Starts etcd on a restored member, with `more` flags after the member's own (its
    /// log appended to `dir/etcd.log`; killed when the child is dropped).
    pub(crate) fn run(
        &self,
        r: &Restored,
        dir: &Path,
        more: &[&str],
    ) -> Result<tokio::process::Child, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("etcd.log"))
            .map_err(|e| format!("{}: {e}", dir.join("etcd.log").display()))?;
        let (client_url, peer_url) = (&r.client_url, &r.peer_url);
        tokio::process::Command::new(self.etcd)
            .args(["--name", self.name, "--data-dir"])
            .arg(&r.data)
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={}={peer_url}", self.name))
            .args(self.extra)
            .args(more)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.etcd.display()))
    }
}

/// Runs the drill. `etcd_settings` supplies credentials (a snapshot keeps its users);
/// TLS is not used for the loopback member.
pub async fn drill(
    source: &Source,
    backup: &BackupRef,
    etcd_settings: &EtcdSettings,
    o: &DrillOptions,
) -> Result<DrillReport, String> {
    let t0 = Instant::now();
    let scratch = Scratch::create(&o.scratch)?;
    let dir = scratch.0.clone();

    // 1. The verified snapshot.
    let snapshot = match source {
        Source::File(p) => p.clone(),
        Source::Stored {
            repo,
            manifest,
            identities,
        } => {
            let out = dir.join("snapshot.db");
            crate::fetch::fetch(repo, manifest, &out, identities.as_ref())
                .await
                .map_err(|e| e.to_string())?;
            out
        }
    };
    let scan_path = snapshot.clone();
    let (status, hash_kv) = tokio::task::spawn_blocking(move || {
        let status =
            crate::snapshot::scan_status(&scan_path, crate::snapshot::ScanOptions::default())?;
        let hash = crate::snapshot::hashkv::hash_kv(&scan_path)?;
        Ok::<_, crate::snapshot::SnapshotError>((status, hash))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;

    // 2. Restored with the real tool, single member, loopback; 3. started.
    let (mut child, client_url) = ScratchMember {
        name: "drill",
        etcd: &o.etcd,
        etcdutl: &o.etcdutl,
        extra: &[],
    }
    .start(&snapshot, &dir)
    .await?;

    // 4. Checked against the snapshot.
    let mut s = etcd_settings.clone();
    s.endpoints = vec![client_url.clone()];
    s.cacert = None;
    s.cert = None;
    s.key = None;
    s.insecure_skip_tls_verify = false;
    let checked = check(&s, &client_url, &status, hash_kv, o.timeout, &dir).await;
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    drop(scratch);
    let (revision, keys, hash_kv) = checked?;
    Ok(DrillReport {
        backup: backup.id.clone(),
        revision,
        keys,
        hash_kv,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn is_etcdctl(tool: &Path) -> bool {
    tool.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("etcdctl"))
}

async fn check(
    s: &EtcdSettings,
    url: &str,
    status: &crate::snapshot::Status,
    expected_hash: u32,
    timeout: Duration,
    dir: &Path,
) -> Result<(i64, i64, u32), String> {
    let deadline = Instant::now() + timeout;
    let (mut client, st) = loop {
        let attempt = async {
            let mut c = etcd::connect_one(s, url).await?;
            let st = etcd::member_status(&mut c, url).await?;
            Ok::<_, etcd::EtcdError>((c, st))
        };
        match attempt.await {
            Ok(found) => break found,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("{e}; etcd's log: {}", log_tail(dir))),
        }
    };
    let expected_revision = status.store_revision();
    if st.header_revision != expected_revision {
        return Err(format!(
            "the restored member is at revision {}, the snapshot at {expected_revision}",
            st.header_revision
        ));
    }
    let count = etcd::count_keys(&mut client).await?;
    if u64::try_from(count).ok() != Some(status.live_keys) {
        return Err(format!(
            "the restored member holds {count} keys, the snapshot {}",
            status.live_keys
        ));
    }
    let hash = client
        .hash_kv(0)
        .await
        .map_err(|e| format!("hashkv: {}", etcd::describe(&e)))?
        .hash();
    if hash != expected_hash {
        return Err(format!(
            "the restored member's hashkv is {hash}, the snapshot's {expected_hash}"
        ));
    }
    Ok((st.header_revision, count, hash))
}

pub(crate) fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_scratch_dir_is_new_private_and_unpredictable() {
        let base = tempfile::tempdir().unwrap();
        let a = Scratch::create(base.path()).unwrap();
        let b = Scratch::create(base.path()).unwrap();
        assert_ne!(a.0, b.0);
        for s in [&a, &b] {
            assert_eq!(s.0.parent(), Some(base.path()));
            let mode = std::fs::metadata(&s.0).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", s.0.display());
        }
        // What the old predictable name allowed: a directory made in advance by someone
        // else, taken over. Now every name in use is skipped, none is reused.
        let planted = base.path().join("lifeboat-drill-planted");
        std::fs::create_dir(&planted).unwrap();
        for _ in 0..50 {
            let s = Scratch::create(base.path()).unwrap();
            assert_ne!(s.0, planted);
        }
        let (pa, pb) = (a.0.clone(), b.0.clone());
        drop((a, b));
        assert!(!pa.exists() && !pb.exists());
        let e = Scratch::create(&base.path().join("missing")).err().unwrap();
        assert!(e.contains("--scratch-dir"), "{e}");
    }
}
