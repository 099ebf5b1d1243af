//! A real S3 server: SeaweedFS `weed mini` on 127.0.0.1 with one identity
//! (generated access/secret key) and one bucket.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStoreExt, PutPayload, RetryConfig};
use tempfile::TempDir;

use super::process::{self, POLL_INTERVAL};
use super::tools;

const START_ATTEMPTS: usize = 5;
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A clean `weed mini` shutdown takes ~2.3 s; now and then its volume server
/// never finishes stopping, so do not wait the full 10 s etcd gets.
const STOP_GRACE: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 40;
/// The object written and deleted by the readiness probe.
const PROBE_KEY: &str = ".lifeboat-support-ready-probe";

/// Every port `weed mini` listens on; all are set explicitly (the defaults
/// are fixed numbers, and unset gRPC ports default to http port + 10000).
#[derive(Debug, Clone, Copy)]
pub struct WeedPorts {
    pub master: u16,
    pub master_grpc: u16,
    pub volume: u16,
    pub volume_grpc: u16,
    pub filer: u16,
    pub filer_grpc: u16,
    pub s3: u16,
    pub s3_grpc: u16,
    pub admin: u16,
    pub admin_grpc: u16,
}

impl WeedPorts {
    fn allocate() -> WeedPorts {
        let p = process::free_ports(8);
        // weed's built-in maintenance worker dials the admin gRPC server at
        // admin.port + 10000 whatever -admin.port.grpc says, so pick a pair.
        let (admin, admin_grpc) = free_port_pair(10000, &p);
        WeedPorts {
            master: p[0],
            master_grpc: p[1],
            volume: p[2],
            volume_grpc: p[3],
            filer: p[4],
            filer_grpc: p[5],
            s3: p[6],
            s3_grpc: p[7],
            admin,
            admin_grpc,
        }
    }

    /// Where weed puts its gRPC unix sockets (always in /tmp).
    pub fn grpc_socket_paths(&self) -> Vec<PathBuf> {
        [
            ("master", self.master_grpc),
            ("volume", self.volume_grpc),
            ("filer", self.filer_grpc),
            ("s3", self.s3_grpc),
            ("admin", self.admin_grpc),
        ]
        .iter()
        .map(|(c, p)| PathBuf::from(format!("/tmp/seaweedfs-{c}-grpc-{p}.sock")))
        .collect()
    }

    pub fn grpc(&self) -> [u16; 5] {
        [
            self.master_grpc,
            self.volume_grpc,
            self.filer_grpc,
            self.s3_grpc,
            self.admin_grpc,
        ]
    }
}

/// Two free loopback ports `(p, p + offset)`, neither in `avoid`.
fn free_port_pair(offset: u16, avoid: &[u16]) -> (u16, u16) {
    use std::net::TcpListener;
    for _ in 0..200 {
        let Ok(first) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let p = first.local_addr().expect("local_addr").port();
        let Some(q) = p.checked_add(offset) else {
            continue;
        };
        if avoid.contains(&p) || avoid.contains(&q) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", q)).is_ok() {
            return (p, q);
        }
    }
    panic!("found no free port pair (p, p + {offset}) on 127.0.0.1 in 200 tries")
}

struct StartFailure {
    port_conflict: bool,
    message: String,
}

/// A running SeaweedFS (`weed mini`). Dropping it SIGKILLs the server and
/// deletes its data (unless `LIFEBOAT_KEEP_TEMP=1`).
pub struct SeaweedFs {
    pub access_key: String,
    pub secret_key: String,
    pub bucket: String,
    pub region: String,
    pub ports: WeedPorts,
    pub data_dir: PathBuf,
    /// stdout+stderr of the server (appended across restarts); glog files
    /// (`weed.INFO`, `weed.WARNING`, ...) land in `<dir>/tmp`.
    pub log_path: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
    dir: TempDir,
}

impl SeaweedFs {
    /// Starts `weed mini` and waits until an authenticated put/delete in the
    /// bucket succeeds.
    pub fn start() -> SeaweedFs {
        let weed = tools::weed(); // panics with the install hint if missing
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let mut s3 = Self::spawn_new(&weed);
            match s3.try_wait_ready(START_TIMEOUT) {
                Ok(()) => return s3,
                Err(f) if f.port_conflict => {
                    eprintln!(
                        "support: weed mini start attempt {attempt}: port taken, retrying with new ports"
                    );
                    last = f.message;
                }
                Err(f) => panic!("SeaweedFS failed to start: {}", f.message),
            }
        }
        panic!(
            "SeaweedFS failed to start after {START_ATTEMPTS} attempts (ports kept being taken): {last}"
        )
    }

    fn spawn_new(weed: &Path) -> SeaweedFs {
        let dir = process::owned_tempdir("weed");
        let data_dir = dir.path().join("data");
        let glog_dir = dir.path().join("tmp");
        for d in [&data_dir, &glog_dir] {
            std::fs::create_dir(d).expect("create SeaweedFS dirs");
        }
        // Generated per server: requests signed with anything else are refused.
        let access_key = format!("LB{}", process::random_alnum(18).to_uppercase());
        let secret_key = process::random_alnum(40);
        let bucket = "lifeboat-test".to_string();
        let config = serde_json::json!({
            "identities": [{
                "name": "lifeboat",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]
            }]
        });
        let config_path = dir.path().join("s3.json");
        std::fs::write(&config_path, config.to_string()).expect("write s3.json");

        let ports = WeedPorts::allocate();
        // Lets a later sweep remove our /tmp sockets if this process is killed.
        let grpc: Vec<String> = ports.grpc().iter().map(u16::to_string).collect();
        std::fs::write(dir.path().join(GRPC_PORTS_FILE), grpc.join("\n"))
            .expect("write grpc ports file");
        // Global flags go before the subcommand.
        let mut logdir = OsString::from("-logdir=");
        logdir.push(&glog_dir);
        let mut args: Vec<OsString> = vec![logdir, "mini".into()];
        let mut flag = |name: &str, value: &dyn AsRef<std::ffi::OsStr>| {
            let mut a = OsString::from(format!("-{name}="));
            a.push(value.as_ref());
            args.push(a);
        };
        flag("dir", &data_dir);
        flag("ip", &"127.0.0.1");
        flag("ip.bind", &"127.0.0.1");
        flag("master.port", &ports.master.to_string());
        flag("master.port.grpc", &ports.master_grpc.to_string());
        flag("volume.port", &ports.volume.to_string());
        flag("volume.port.grpc", &ports.volume_grpc.to_string());
        flag("filer.port", &ports.filer.to_string());
        flag("filer.port.grpc", &ports.filer_grpc.to_string());
        flag("s3.port", &ports.s3.to_string());
        flag("s3.port.grpc", &ports.s3_grpc.to_string());
        flag("admin.port", &ports.admin.to_string());
        flag("admin.port.grpc", &ports.admin_grpc.to_string());
        flag("s3.port.iceberg", &"0");
        flag("s3.port.lance", &"0");
        flag("webdav", &"false");
        flag("admin.ui", &"false");
        flag("master.telemetry", &"false");
        flag("master.volumeSizeLimitMB", &"64");
        flag("s3.config", &config_path);
        flag("s3.autoCreateBucket", &"false");
        flag("bucket", &bucket);
        flag("filer.localSocket", &dir.path().join("filer.sock"));
        flag("s3.localSocket", &dir.path().join("s3.sock"));

        let mut s3 = SeaweedFs {
            access_key,
            secret_key,
            bucket,
            region: "us-east-1".into(),
            ports,
            log_path: dir.path().join("weed.log"),
            data_dir,
            args,
            child: None,
            dir,
        };
        s3.spawn(weed);
        s3
    }

    fn spawn(&mut self, weed: &Path) {
        assert!(self.child.is_none(), "SeaweedFS is already running");
        let (out, err) = process::log_stdio(&self.log_path);
        let mut cmd = Command::new(weed);
        cmd.args(&self.args)
            .current_dir(self.dir.path())
            // Anything else weed puts in os.TempDir() stays ours too.
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env_remove("S3_BUCKET")
            .env_remove("S3_TABLE_BUCKET")
            .env_remove("S3_EXTERNAL_URL")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = process::spawn_guarded(cmd)
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", weed.display()));
        process::record_server_pid(self.dir.path(), child.id());
        self.child = Some(child);
    }

    /// `s3://<bucket>`
    pub fn bucket_url(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    /// `http://127.0.0.1:<s3 port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// The server's temp dir (data, logs, s3.json).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_tail(&self, n: usize) -> String {
        process::log_tail(&self.log_path, n)
    }

    /// Console log tail plus the tail of glog's WARNING file (which also
    /// holds the errors), for failure messages.
    pub fn diagnostics(&self) -> String {
        let glog = self.dir.path().join("tmp").join("weed.WARNING");
        let mut text = self.log_tail(LOG_TAIL_LINES);
        if glog.exists() {
            text.push_str(&format!(
                "\n--- last lines of {}:\n{}",
                glog.display(),
                process::log_tail(&glog, LOG_TAIL_LINES)
            ));
        }
        text
    }

    /// Environment for the CLI / object_store's `from_env`:
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_DEFAULT_REGION`, `AWS_ENDPOINT`, `AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP=true`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false`,
    /// and `NO_PROXY`/`no_proxy` = `127.0.0.1,localhost`.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".into()),
            // Never send loopback requests to a proxy from the environment.
            ("NO_PROXY", "127.0.0.1,localhost".into()),
            ("no_proxy", "127.0.0.1,localhost".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// An object_store client for the bucket with the right credentials
    /// (HTTP, path-style, few fast retries).
    pub fn object_store(&self) -> AmazonS3 {
        self.object_store_with(&self.bucket, &self.access_key, &self.secret_key)
    }

    /// An object_store client with arbitrary bucket/credentials (for
    /// negative tests: wrong secret, missing bucket).
    pub fn object_store_with(&self, bucket: &str, access_key: &str, secret_key: &str) -> AmazonS3 {
        etcd_lifeboat::repository::use_ring_for_http_tls();
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(bucket)
            .with_region(&self.region)
            .with_access_key_id(access_key)
            .with_secret_access_key(secret_key)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    // reqwest honours HTTP(S)_PROXY from the environment even
                    // for loopback; an explicit proxy with 127.0.0.1 excluded
                    // keeps every request direct and on this machine.
                    .with_proxy_url("http://127.0.0.1:9")
                    .with_proxy_excludes("127.0.0.1,localhost")
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
            })
            .build()
            .expect("build AmazonS3 client")
    }

    fn try_wait_ready(&mut self, timeout: Duration) -> Result<(), StartFailure> {
        let deadline = Instant::now() + timeout;
        let health = SocketAddr::from(([127, 0, 0, 1], self.ports.s3));
        let mut last_probe = String::from("S3 port not answering yet");
        loop {
            if let Some(child) = self.child.as_mut() {
                match child.try_wait() {
                    Ok(None) => {}
                    Ok(Some(status)) => {
                        self.child = None;
                        let tail = self.diagnostics();
                        return Err(StartFailure {
                            port_conflict: tail.contains("address already in use")
                                || tail.contains("Port allocation failed"),
                            message: format!(
                                "weed mini exited with {status}; last log lines of {}:\n{tail}",
                                self.log_path.display()
                            ),
                        });
                    }
                    Err(e) => panic!("try_wait on weed: {e}"),
                }
            } else {
                panic!("SeaweedFS is not running");
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if matches!(
                process::http_get(health, "/healthz", Duration::from_secs(2)),
                Ok((200, _))
            ) {
                match self.probe(remaining.min(Duration::from_secs(20))) {
                    Ok(()) => return Ok(()),
                    Err(e) => last_probe = e,
                }
            }
            if Instant::now() >= deadline {
                return Err(StartFailure {
                    port_conflict: false,
                    message: format!(
                        "not ready after {timeout:?} (last probe: {last_probe}); \
                         last log lines of {}:\n{}",
                        self.log_path.display(),
                        self.diagnostics()
                    ),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Authenticated put + delete of a probe object. Runs on its own thread
    /// and runtime so that it also works when called from async tests.
    fn probe(&self, timeout: Duration) -> Result<(), String> {
        let store = Arc::new(self.object_store());
        let handle = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let path = ObjectPath::from(PROBE_KEY);
                let fut = async {
                    store
                        .put(&path, PutPayload::from_static(b"ready"))
                        .await
                        .map_err(|e| format!("put probe: {e}"))?;
                    store
                        .delete(&path)
                        .await
                        .map_err(|e| format!("delete probe: {e}"))
                };
                tokio::time::timeout(timeout.max(Duration::from_secs(1)), fut)
                    .await
                    .map_err(|_| format!("probe timed out after {timeout:?}"))?
            })
        });
        handle
            .join()
            .unwrap_or_else(|_| Err("probe thread panicked".into()))
    }

    /// Waits until the server accepts authenticated writes again (e.g. after
    /// [`SeaweedFs::restart`]); panics with the log tail otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) {
        if let Err(f) = self.try_wait_ready(timeout) {
            panic!("SeaweedFS not ready: {}", f.message);
        }
    }

    /// SIGTERM, up to 5 s, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate_child(&mut child, STOP_GRACE);
        }
        self.remove_grpc_sockets();
    }

    /// SIGKILL now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_child(&mut child);
        }
        self.remove_grpc_sockets();
    }

    /// Starts it again on the same ports and data and waits until ready.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "SeaweedFS is still running; stop or kill it first"
        );
        process::log_marker(&self.log_path, "--- support: restart ---");
        self.spawn(&tools::weed());
        self.wait_ready(START_TIMEOUT);
    }

    fn remove_grpc_sockets(&self) {
        remove_stale_grpc_sockets(&self.ports.grpc());
    }
}

/// File in a SeaweedFS temp dir listing its gRPC ports, one per line.
const GRPC_PORTS_FILE: &str = "grpc-ports";

/// weed puts its gRPC unix sockets in /tmp whatever `$TMPDIR` says
/// (`/tmp/seaweedfs-<component>-grpc-<port>.sock`) and leaves them behind
/// when killed. Removes those for `ports` that nobody listens on any more;
/// returns false if some are still served.
pub fn remove_stale_grpc_sockets(ports: &[u16]) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return true;
    };
    let suffixes: Vec<String> = ports.iter().map(|p| format!("-grpc-{p}.sock")).collect();
    let mut all_gone = true;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("seaweedfs-")
            && suffixes.iter().any(|s| name.ends_with(s.as_str()))
            && entry.file_type().is_ok_and(|t| t.is_socket())
        {
            if std::os::unix::net::UnixStream::connect(entry.path()).is_ok() {
                all_gone = false;
            } else {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    all_gone
}

/// Sweep hook: the sockets of a dead test process's SeaweedFS temp dir.
/// Returns false if some of them are still served (try again later).
pub fn remove_stale_sockets_of(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(GRPC_PORTS_FILE)) else {
        return true;
    };
    let ports: Vec<u16> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    remove_stale_grpc_sockets(&ports)
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.kill();
        if process::env_flag("LIFEBOAT_KEEP_TEMP") {
            process::keep_tempdir(&mut self.dir);
        }
    }
}
