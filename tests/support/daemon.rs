//! A running `lifeboat daemon` for tests: started with a config, its HTTP port, its
//! metrics and its log; killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::lifeboat::{http_get, lifeboat, metric};
use super::process::{free_ports, kill_child, spawn_guarded};

/// Sends `sig` to a process this test started.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a process this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A running daemon: its process, HTTP port and log file. Killed on drop.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `lifeboat daemon` with `config`, TOML that ends in its `[daemon]` section
    /// (`listen` is added here).
    pub fn start(dir: &Path, name: &str, config: &str, env: &[(String, String)]) -> Daemon {
        let port = free_ports(1)[0];
        let path = dir.join(format!("{name}.toml"));
        assert!(
            config.contains("[daemon]\n"),
            "config without [daemon]: {config}"
        );
        let text = format!("{config}listen = \"127.0.0.1:{port}\"\n");
        std::fs::write(&path, text).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let mut cmd = lifeboat(
            &["daemon", "--config", path.to_str().expect("utf-8"), "-v"],
            env,
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let child = spawn_guarded(cmd).expect("spawn daemon");
        let d = Daemon { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(port, "/healthz").is_none() {
            assert!(
                Instant::now() < deadline,
                "daemon {name} never answered /healthz:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn metrics(&self) -> String {
        http_get(self.port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    pub fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics(), name).unwrap_or(-1.0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// Waits until `cond` holds, at most `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Endpoints as a TOML array's items: `"a", "b"`.
pub fn quoted(endpoints: &[String]) -> String {
    endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ")
}
