//! A real Azure Blob endpoint: Azurite (Microsoft's emulator, npm package `azurite`,
//! installed by `scripts/install-test-deps.sh azurite`) on a free 127.0.0.1 port, with
//! one account whose key is generated per server (`AZURITE_ACCOUNTS`), so a request
//! signed with anything else is refused, and one container.
//!
//! Azurite keeps its metadata (lokijs) in memory and saves it every 5 s: a SIGKILL loses
//! what changed in the last 5 s. [`Azurite::settle`] waits that out where a test kills
//! the emulator and needs what it wrote before to survive.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::{ClientOptions, RetryConfig};
use tempfile::TempDir;

use super::process::{self, POLL_INTERVAL};
use super::tools;

const START_ATTEMPTS: usize = 5;
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often Azurite saves its metadata (`autosaveInterval` of its LokiBlobMetadataStore).
pub const METADATA_SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// The REST API version our own signed requests speak.
const API_VERSION: &str = "2021-08-06";

/// A running Azurite blob service. Dropping it SIGKILLs the server and deletes its data
/// (unless `LIFEBOAT_KEEP_TEMP=1`).
pub struct Azurite {
    pub account: String,
    /// The account key (base64), as `AZURE_STORAGE_ACCOUNT_KEY` takes it.
    pub key: String,
    pub container: String,
    pub port: u16,
    pub log_path: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

impl Azurite {
    /// Starts `azurite-blob` and creates the container.
    pub fn start() -> Azurite {
        let bin = tools::azurite_blob(); // panics with the install hint if missing
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let dir = process::owned_tempdir("azurite");
            std::fs::create_dir(dir.path().join("data")).expect("create Azurite data dir");
            let key = {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(process::random_alnum(48))
            };
            let mut az = Azurite {
                account: "lifeboattest".into(),
                key,
                container: "lifeboat-test".into(),
                port: process::free_ports(1)[0],
                log_path: dir.path().join("azurite.log"),
                child: None,
                dir,
            };
            az.spawn(&bin);
            match az.try_wait_ready(START_TIMEOUT) {
                Ok(()) => {
                    az.create_container(&az.container.clone())
                        .unwrap_or_else(|e| panic!("creating the Azurite container: {e}"));
                    return az;
                }
                Err(e) if e.contains("EADDRINUSE") => {
                    eprintln!("support: Azurite start attempt {attempt}: port taken, retrying");
                    last = e;
                }
                Err(e) => panic!("Azurite failed to start: {e}"),
            }
        }
        panic!("Azurite failed to start after {START_ATTEMPTS} attempts: {last}")
    }

    fn spawn(&mut self, bin: &Path) {
        assert!(self.child.is_none(), "Azurite is already running");
        let (out, err) = process::log_stdio(&self.log_path);
        let mut cmd = Command::new(bin);
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(self.port.to_string())
            .arg("--location")
            .arg(self.dir.path().join("data"))
            // Azurite reports usage to Microsoft unless told not to: this bench sends
            // nothing off the machine.
            .arg("--disableTelemetry")
            // object_store sends an x-ms-version Azurite may not know yet.
            .args(["--skipApiVersionCheck", "--loose"])
            .env("AZURITE_ACCOUNTS", format!("{}:{}", self.account, self.key))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = process::spawn_guarded(cmd)
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        process::record_server_pid(self.dir.path(), child.id());
        self.child = Some(child);
    }

    fn try_wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("Azurite is not running");
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                self.child = None;
                return Err(format!(
                    "azurite-blob exited with {status}; last lines of {}:\n{}",
                    self.log_path.display(),
                    process::log_tail(&self.log_path, 30)
                ));
            }
            if process::log_tail(&self.log_path, 30).contains("successfully listens")
                && process::port_open(self.port)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not listening after {timeout:?}; last lines of {}:\n{}",
                    self.log_path.display(),
                    process::log_tail(&self.log_path, 30)
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// `http://127.0.0.1:<port>`: what `AZURITE_BLOB_STORAGE_URL` takes.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `az://<container>/<prefix>`
    pub fn url(&self, prefix: &str) -> String {
        format!("az://{}/{prefix}", self.container)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The environment object_store's `MicrosoftAzureBuilder::from_env` reads for the
    /// emulator: `AZURE_STORAGE_USE_EMULATOR=true`, `AZURITE_BLOB_STORAGE_URL`,
    /// `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, and no proxy for loopback.
    pub fn azure_env(&self) -> Vec<(String, String)> {
        [
            ("AZURE_STORAGE_USE_EMULATOR", "true".to_owned()),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint()),
            ("AZURE_STORAGE_ACCOUNT_NAME", self.account.clone()),
            ("AZURE_STORAGE_ACCOUNT_KEY", self.key.clone()),
            ("NO_PROXY", "127.0.0.1,localhost".to_owned()),
            ("no_proxy", "127.0.0.1,localhost".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// An object_store client for the container (few fast retries). It is built like
    /// lifeboat's, but from explicit settings: the emulator URL is the one thing
    /// object_store reads only from the environment, and this process's environment is
    /// not ours to set.
    pub fn object_store(&self) -> MicrosoftAzure {
        etcd_lifeboat::repository::use_ring_for_http_tls();
        MicrosoftAzureBuilder::new()
            .with_account(&self.account)
            .with_access_key(&self.key)
            .with_container_name(&self.container)
            .with_endpoint(format!("{}/{}", self.endpoint(), self.account))
            .with_allow_http(true)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_proxy_url("http://127.0.0.1:9")
                    .with_proxy_excludes("127.0.0.1,localhost")
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60)),
            )
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
                ..Default::default()
            })
            .build()
            .expect("build MicrosoftAzure client")
    }

    /// Creates a container (Create Container, signed with the account key).
    pub fn create_container(&self, name: &str) -> Result<(), String> {
        let (code, body) = self.signed("PUT", name, &[("restype", "container")])?;
        match code {
            201 | 409 => Ok(()),
            _ => Err(format!("Create Container {name}: HTTP {code}: {body}")),
        }
    }

    /// The names of the blobs in the container (List Blobs), with the blobs that have
    /// only uncommitted blocks when `uncommitted` (`include=uncommittedblobs`).
    pub fn blob_names(&self, uncommitted: bool) -> Vec<String> {
        let mut query = vec![("comp", "list"), ("restype", "container")];
        if uncommitted {
            query.push(("include", "uncommittedblobs"));
        }
        let (code, body) = self
            .signed("GET", &self.container, &query)
            .unwrap_or_else(|e| panic!("List Blobs: {e}"));
        assert_eq!(code, 200, "List Blobs: {body}");
        body.split("<Name>")
            .skip(1)
            .filter_map(|s| s.split_once("</Name>").map(|(n, _)| n.to_owned()))
            .collect()
    }

    /// One request to `/<account>/<container>?<query>` signed with Shared Key
    /// (docs: "Authorize with Shared Key"); the status and the body.
    fn signed(
        &self,
        verb: &str,
        container: &str,
        query: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let mut sorted: Vec<(&str, &str)> = query.to_vec();
        sorted.sort();
        let mut resource = format!("/{0}/{0}/{container}", self.account);
        for (k, v) in &sorted {
            resource.push_str(&format!("\n{k}:{v}"));
        }
        // VERB, then 11 standard headers (all empty here: Content-Length of an empty
        // body is signed as ""), then the x-ms- headers, then the resource.
        let to_sign = format!(
            "{verb}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n{resource}"
        );
        let key = b64.decode(&self.key).map_err(|e| e.to_string())?;
        let signature = b64.encode(hmac_sha256(&key, to_sign.as_bytes()));
        let qs: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        write!(
            conn,
            "{verb} /{}/{container}?{} HTTP/1.1\r\nHost: {addr}\r\nx-ms-date: {date}\r\n\
             x-ms-version: {API_VERSION}\r\nAuthorization: SharedKey {}:{signature}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.account,
            qs.join("&"),
            self.account,
        )
        .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        conn.take(64 << 20)
            .read_to_end(&mut response)
            .map_err(|e| e.to_string())?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no HTTP status in {response:?}"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| dechunk(b))
            .unwrap_or_default();
        Ok((code, body))
    }

    /// Waits until Azurite has saved its metadata (see the module comment).
    pub fn settle(&self) {
        thread::sleep(METADATA_SAVE_INTERVAL + Duration::from_secs(1));
    }

    /// SIGKILL now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_child(&mut child);
        }
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate_child(&mut child, STOP_GRACE);
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "Azurite is still running");
        process::log_marker(&self.log_path, "--- support: restart ---");
        self.spawn(&tools::azurite_blob());
        if let Err(e) = self.try_wait_ready(START_TIMEOUT) {
            panic!("Azurite did not come back: {e}");
        }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
        if process::env_flag("LIFEBOAT_KEEP_TEMP") {
            process::keep_tempdir(&mut self.dir);
        }
    }
}

/// HMAC-SHA256 (RFC 2104) over the sha2 the crate already has.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(BLOCK, 0);
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// The body of a `Transfer-Encoding: chunked` reply, or the text as it is.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if n == 0 {
            return out;
        }
        let Some(chunk) = after.get(..n) else {
            return body.to_owned();
        };
        out.push_str(chunk);
        rest = after.get(n + 2..).unwrap_or("");
    }
}

#[test]
fn hmac_matches_rfc_4231_case_2() {
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}
