//! A single etcd member started from a snapshot file the way an operator would do it by
//! hand: `etcdutl snapshot restore` (`etcdctl` for 3.4) into a fresh data dir, then
//! `etcd` on it. Used to prove that a backup brings the data back.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::process::{free_ports, kill_child, output_timeout, spawn_guarded};
use super::tools::EtcdVersion;

pub struct Restored {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Restored {
    /// Restores `snapshot` with `version`'s tool and starts `version`'s etcd on it.
    pub fn start(version: EtcdVersion, snapshot: &Path) -> Restored {
        Self::start_with_args(version, snapshot, &[])
    }

    /// As [`Restored::start`], with more flags for etcd.
    pub fn start_with_args(version: EtcdVersion, snapshot: &Path, extra: &[&str]) -> Restored {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let ports = free_ports(2);
        let (client, peer) = (
            format!("http://127.0.0.1:{}", ports[0]),
            format!("http://127.0.0.1:{}", ports[1]),
        );
        let mut restore = match version.etcdutl() {
            Some(etcdutl) => Command::new(etcdutl),
            None => version.etcdctl_command(),
        };
        restore
            .args(["snapshot", "restore"])
            .arg(snapshot)
            .args(["--name", "restored", "--data-dir"])
            .arg(&data)
            .arg(format!("--initial-cluster=restored={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg("--initial-cluster-token=lifeboat-restored");
        let out = output_timeout(restore, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "snapshot restore with {} failed: {}",
            version.label(),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log file");
        let mut etcd = Command::new(version.etcd());
        etcd.args(["--name", "restored", "--data-dir"])
            .arg(&data)
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=restored={peer}"))
            .args(extra)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = spawn_guarded(etcd).expect("start restored etcd");
        let mut me = Restored {
            child,
            endpoint: client,
            _dir: dir,
        };
        me.wait_healthy(version);
        me
    }

    fn wait_healthy(&mut self, version: EtcdVersion) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let mut cmd = version.etcdctl_command();
            cmd.args(["--endpoints", &self.endpoint, "endpoint", "health"]);
            if output_timeout(cmd, Duration::from_secs(10))
                .status
                .success()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log =
                    std::fs::read_to_string(self._dir.path().join("etcd.log")).unwrap_or_default();
                panic!("restored etcd exited ({status}):\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("restored etcd at {} did not become healthy", self.endpoint);
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}
