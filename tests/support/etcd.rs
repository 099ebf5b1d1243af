//! Real etcd clusters on 127.0.0.1, one process per member.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{self, POLL_INTERVAL, STOP_GRACE};
use super::tls::{self, TlsFiles};
use super::tools::EtcdVersion;

/// How often a start is retried when a chosen port was taken meanwhile.
const START_ATTEMPTS: usize = 5;
/// Budget for a fresh cluster to elect a leader and report healthy.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Budget for one etcdctl invocation.
const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(120);
/// Lines of member log shown in failure messages.
const LOG_TAIL_LINES: usize = 40;

/// One etcd member (process + its fixed names, ports and directories).
#[derive(Debug)]
pub struct Member {
    /// `m0`, `m1`, ...
    pub name: String,
    /// `http://127.0.0.1:<client_port>` (`https://` for a TLS cluster)
    pub client_url: String,
    /// `http://127.0.0.1:<peer_port>` (`https://` for a TLS cluster)
    pub peer_url: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// TLS clusters only: plain-http `--listen-metrics-urls` port serving
    /// `/health` and `/metrics` (the client port demands a client certificate).
    pub metrics_port: Option<u16>,
    /// `--data-dir` (created by etcd itself, inside the cluster's temp dir).
    pub data_dir: PathBuf,
    /// stdout+stderr of every run of this member (appended across restarts).
    pub log_path: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
}

impl Member {
    /// The etcd command-line arguments this member runs with.
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// PID while the member's process is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last `n` lines of this member's log.
    pub fn log_tail(&self, n: usize) -> String {
        process::log_tail(&self.log_path, n)
    }

    fn health_addr(&self) -> SocketAddr {
        SocketAddr::from((
            [127, 0, 0, 1],
            self.metrics_port.unwrap_or(self.client_port),
        ))
    }

    /// `GET /health` answered `{"health":"true",...}`.
    pub fn is_healthy(&self) -> bool {
        matches!(
            process::http_get(self.health_addr(), "/health", Duration::from_secs(2)),
            Ok((200, body)) if body.replace(' ', "").contains("\"health\":\"true\"")
        )
    }
}

enum Identity {
    Ours,
    NotPublishedYet,
    Foreign(String),
}

/// Why a start/wait failed; `port_conflict` means "retry with other ports".
struct StartFailure {
    port_conflict: bool,
    message: String,
}

/// A running etcd cluster. Dropping it SIGKILLs every member and deletes the
/// data (unless `LIFEBOAT_KEEP_TEMP=1`).
pub struct Cluster {
    version: EtcdVersion,
    members: Vec<Member>,
    credentials: Option<(String, String)>,
    tls: Option<TlsFiles>,
    dir: TempDir,
}

impl Cluster {
    /// Starts `members` fresh members of `version` and waits until all are healthy.
    pub fn start(version: EtcdVersion, members: usize) -> Cluster {
        Self::start_with_args(version, members, &[])
    }

    /// Like [`Cluster::start`], with extra etcd flags for every member
    /// (e.g. `["--quota-backend-bytes=...", "--unsafe-no-fsync"]`).
    pub fn start_with_args(version: EtcdVersion, members: usize, extra_args: &[&str]) -> Cluster {
        Self::start_inner(version, members, extra_args, None)
    }

    /// Like [`Cluster::start`], but clients and peers speak TLS with mutual
    /// authentication: client URLs are `https://127.0.0.1:<port>` and need a
    /// client certificate signed by `tls.ca` (`--client-cert-auth`); peers use
    /// `tls.server_cert` both ways (`--peer-client-cert-auth`). Health is
    /// polled over a plain-http `--listen-metrics-urls` port per member.
    /// [`Cluster::etcdctl`], [`Cluster::snapshot_save`] and `workload::connect*`
    /// use `tls.ca` + `tls.client_cert`/`tls.client_key`. The cluster keeps a
    /// clone of `tls`, so the files outlive the caller's copy.
    pub fn start_tls(version: EtcdVersion, members: usize, tls: &TlsFiles) -> Cluster {
        Self::start_inner(version, members, &[], Some(tls))
    }

    /// [`Cluster::start_tls`] with extra etcd flags for every member.
    pub fn start_tls_with_args(
        version: EtcdVersion,
        members: usize,
        tls: &TlsFiles,
        extra_args: &[&str],
    ) -> Cluster {
        Self::start_inner(version, members, extra_args, Some(tls))
    }

    fn start_inner(
        version: EtcdVersion,
        members: usize,
        extra_args: &[&str],
        tls: Option<&TlsFiles>,
    ) -> Cluster {
        assert!(members >= 1, "a cluster needs at least one member");
        let etcd = version.etcd(); // panics with the install hint if missing
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = Self::spawn_new(version, &etcd, members, extra_args, tls);
            match cluster.try_wait_healthy(START_TIMEOUT) {
                Ok(()) => return cluster,
                Err(f) if f.port_conflict => {
                    eprintln!(
                        "support: etcd {version} start attempt {attempt}: port taken, retrying with new ports"
                    );
                    last = f.message;
                }
                Err(f) => panic!(
                    "etcd {version} {}cluster of {members} failed to start: {}",
                    if tls.is_some() { "TLS " } else { "" },
                    f.message
                ),
            }
        }
        panic!(
            "etcd {version} cluster of {members} failed to start after {START_ATTEMPTS} attempts \
             (ports kept being taken): {last}"
        )
    }

    fn spawn_new(
        version: EtcdVersion,
        etcd: &Path,
        n: usize,
        extra_args: &[&str],
        tls: Option<&TlsFiles>,
    ) -> Cluster {
        let dir = process::owned_tempdir(&format!("etcd-{}", version.label()));
        // client, peer (and metrics for TLS) port of every member
        let per = if tls.is_some() { 3 } else { 2 };
        let ports = process::free_ports(per * n);
        let token = process::unique_token("lifeboat");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let peer_url = |i: usize| format!("{scheme}://127.0.0.1:{}", ports[per * i + 1]);
        let initial_cluster = (0..n)
            .map(|i| format!("m{i}={}", peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("m{i}");
            let client_port = ports[per * i];
            let peer_port = ports[per * i + 1];
            let metrics_port = tls.map(|_| ports[per * i + 2]);
            let client_url = format!("{scheme}://127.0.0.1:{client_port}");
            let data_dir = dir.path().join(format!("{name}.etcd"));
            let log_path = dir.path().join(format!("{name}.log"));
            let mut args: Vec<OsString> = vec![
                format!("--name={name}").into(),
                "--data-dir".into(),
                data_dir.clone().into(),
                format!("--listen-client-urls={client_url}").into(),
                format!("--advertise-client-urls={client_url}").into(),
                format!("--listen-peer-urls={}", peer_url(i)).into(),
                format!("--initial-advertise-peer-urls={}", peer_url(i)).into(),
                format!("--initial-cluster={initial_cluster}").into(),
                "--initial-cluster-state=new".into(),
                format!("--initial-cluster-token={token}").into(),
            ];
            // 3.4 defaults to the deprecated capnslog logger; use zap everywhere.
            args.push("--logger=zap".into());
            args.push("--log-outputs=stderr".into());
            if let (Some(t), Some(mp)) = (tls, metrics_port) {
                let flag = |name: &str, path: &Path| {
                    let mut a = OsString::from(format!("--{name}="));
                    a.push(path);
                    a
                };
                args.extend([
                    flag("cert-file", &t.server_cert),
                    flag("key-file", &t.server_key),
                    flag("trusted-ca-file", &t.ca),
                    "--client-cert-auth".into(),
                    flag("peer-cert-file", &t.server_cert),
                    flag("peer-key-file", &t.server_key),
                    flag("peer-trusted-ca-file", &t.ca),
                    "--peer-client-cert-auth".into(),
                    format!("--listen-metrics-urls=http://127.0.0.1:{mp}").into(),
                ]);
            }
            args.extend(extra_args.iter().map(OsString::from));
            members.push(Member {
                name,
                client_url,
                peer_url: peer_url(i),
                client_port,
                peer_port,
                metrics_port,
                data_dir,
                log_path,
                args,
                child: None,
            });
        }
        let mut cluster = Cluster {
            version,
            members,
            credentials: None,
            tls: tls.cloned(),
            dir,
        };
        for i in 0..n {
            cluster.spawn_member(etcd, i);
        }
        cluster
    }

    fn spawn_member(&mut self, etcd: &Path, i: usize) {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {} is already running", m.name);
        let (out, err) = process::log_stdio(&m.log_path);
        let mut cmd = Command::new(etcd);
        cmd.args(&m.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // Keep proxy and ETCD_* settings of the environment out of the server.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        let child = process::spawn_guarded(cmd)
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", etcd.display()));
        process::record_server_pid(self.dir.path(), child.id());
        m.child = Some(child);
    }

    pub fn version(&self) -> EtcdVersion {
        self.version
    }

    /// The cluster's temporary directory (member data dirs and logs live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Client URLs of all members (running or not).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Client URLs of the members whose process is running.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.clone())
            .collect()
    }

    /// PIDs of the running members.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(Member::pid).collect()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Credentials that [`Cluster::etcdctl`], [`Cluster::snapshot_save`] and
    /// `workload::connect` use from now on (set after enabling auth).
    pub fn set_credentials(&mut self, user: &str, password: &str) {
        self.credentials = Some((user.to_string(), password.to_string()));
    }

    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The certificates of a cluster started with [`Cluster::start_tls`].
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Waits until every running member answers `GET /health` with
    /// `"health":"true"`; panics with the members' log tails otherwise, or
    /// if a member process exits meanwhile.
    pub fn wait_healthy(&mut self, timeout: Duration) {
        if let Err(f) = self.try_wait_healthy(timeout) {
            panic!("etcd {} cluster not healthy: {}", self.version, f.message);
        }
    }

    fn try_wait_healthy(&mut self, timeout: Duration) -> Result<(), StartFailure> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut unhealthy = Vec::new();
            for i in 0..self.members.len() {
                let m = &mut self.members[i];
                let Some(child) = m.child.as_mut() else {
                    continue;
                };
                match child.try_wait() {
                    Ok(None) => {}
                    Ok(Some(status)) => {
                        m.child = None;
                        let tail = m.log_tail(LOG_TAIL_LINES);
                        let port_conflict = tail.contains("address already in use");
                        return Err(StartFailure {
                            port_conflict,
                            message: format!(
                                "member {} exited with {status}; last log lines of {}:\n{tail}",
                                m.name,
                                m.log_path.display()
                            ),
                        });
                    }
                    Err(e) => panic!("try_wait on member {}: {e}", m.name),
                }
                if !m.is_healthy() {
                    unhealthy.push(i);
                }
            }
            if unhealthy.is_empty() {
                // /health could have come from another test's etcd that took
                // our port first; make sure every member is really ours.
                for i in 0..self.members.len() {
                    if self.members[i].child.is_some() {
                        match self.identity(i) {
                            Identity::Ours => {}
                            Identity::NotPublishedYet => unhealthy.push(i),
                            Identity::Foreign(json) => {
                                let m = &self.members[i];
                                return Err(StartFailure {
                                    port_conflict: true,
                                    message: format!(
                                        "{} is served by an etcd that does not know member {} \
                                         (port taken by another process?): {json}",
                                        m.client_url, m.name
                                    ),
                                });
                            }
                        }
                    }
                }
                if unhealthy.is_empty() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let mut message = format!("not healthy after {timeout:?}:");
                for i in unhealthy {
                    let m = &self.members[i];
                    message.push_str(&format!(
                        "\n--- member {} ({}), last log lines of {}:\n{}",
                        m.name,
                        m.client_url,
                        m.log_path.display(),
                        m.log_tail(LOG_TAIL_LINES)
                    ));
                }
                return Err(StartFailure {
                    port_conflict: false,
                    message,
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Asks member `i` (`etcdctl member list`) who is in its cluster.
    fn identity(&self, i: usize) -> Identity {
        let m = &self.members[i];
        let mut cmd = self.etcdctl_command(std::slice::from_ref(&m.client_url));
        cmd.args(["member", "list", "-w", "json"]);
        let out = process::output_timeout(cmd, Duration::from_secs(30));
        if !out.status.success() {
            return Identity::NotPublishedYet;
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Identity::NotPublishedYet;
        };
        let empty = Vec::new();
        let members = json["members"].as_array().unwrap_or(&empty);
        let has = |v: &serde_json::Value, field: &str, url: &str| {
            v[field]
                .as_array()
                .is_some_and(|a| a.iter().any(|u| u.as_str() == Some(url)))
        };
        if members.iter().any(|x| {
            x["name"].as_str() == Some(m.name.as_str())
                && has(x, "clientURLs", &m.client_url)
                && has(x, "peerURLs", &m.peer_url)
        }) {
            Identity::Ours
        } else if members.iter().any(|x| has(x, "peerURLs", &m.peer_url)) {
            // Known by peer URL, name/client URLs not published yet.
            Identity::NotPublishedYet
        } else {
            Identity::Foreign(text)
        }
    }

    /// Graceful stop: SIGTERM, up to 10 s, then SIGKILL. No-op if not running.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            process::terminate_child(&mut child, STOP_GRACE);
        }
    }

    /// SIGKILL now. No-op if not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            process::kill_child(&mut child);
        }
    }

    /// Starts a stopped/killed member again with the same command line (same
    /// name, ports and data dir; etcd ignores the `--initial-cluster*` flags
    /// once the data dir exists). Does not wait: call [`Cluster::wait_healthy`].
    pub fn restart(&mut self, i: usize) {
        assert!(
            self.members[i].child.is_none(),
            "restart({i}): member is still running; stop or kill it first"
        );
        process::log_marker(&self.members[i].log_path, "--- support: restart ---");
        let etcd = self.version.etcd();
        self.spawn_member(&etcd, i);
    }

    /// An etcdctl command (of this cluster's version) with `--endpoints` set
    /// to `endpoints`, `--user` set if credentials were registered and
    /// `--cacert/--cert/--key` (the trusted client identity) for a TLS cluster.
    pub fn etcdctl_command(&self, endpoints: &[String]) -> Command {
        // An empty --endpoints would make etcdctl fall back to 127.0.0.1:2379,
        // which may be somebody else's etcd.
        assert!(
            !endpoints.is_empty(),
            "no running etcd member to run etcdctl against"
        );
        let mut cmd = self.version.etcdctl_command();
        cmd.arg(format!("--endpoints={}", endpoints.join(",")));
        cmd.arg("--dial-timeout=5s");
        if let Some((u, p)) = &self.credentials {
            cmd.arg(format!("--user={u}:{p}"));
        }
        if let Some(t) = &self.tls {
            cmd.args(tls::etcdctl_tls_args(&t.ca, &t.client_cert, &t.client_key));
        }
        cmd
    }

    /// Runs `etcdctl <args>` (ETCDCTL_API=3) against the running members.
    /// Does not check the exit status; bounded by a 2 min timeout.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        let mut cmd = self.etcdctl_command(&self.running_endpoints());
        cmd.args(args);
        process::output_timeout(cmd, ETCDCTL_TIMEOUT)
    }

    /// Like [`Cluster::etcdctl`] but panics unless it succeeds; returns stdout.
    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        let mut cmd = self.etcdctl_command(&self.running_endpoints());
        cmd.args(args);
        let out = process::run_ok(cmd, ETCDCTL_TIMEOUT);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The cluster's current revision, from the header of a one-key read.
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl_ok(&[
            "get",
            "/",
            "--prefix",
            "--keys-only",
            "--limit=1",
            "-w",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl JSON");
        v["header"]["revision"].as_i64().expect("revision")
    }

    /// `etcdctl snapshot save <path>` against member `i` only, with this
    /// cluster's etcdctl version. Panics unless it succeeds and the file exists.
    pub fn snapshot_save(&self, member: usize, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref().to_path_buf();
        let mut cmd = self.etcdctl_command(&[self.members[member].client_url.clone()]);
        cmd.arg("snapshot").arg("save").arg(&path);
        process::run_ok(cmd, ETCDCTL_TIMEOUT);
        assert!(
            path.is_file(),
            "etcdctl snapshot save reported success but {} is missing",
            path.display()
        );
        path
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                process::kill_child(&mut child);
            }
        }
        if process::env_flag("LIFEBOAT_KEEP_TEMP") {
            process::keep_tempdir(&mut self.dir);
        }
    }
}
