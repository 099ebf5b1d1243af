//! A real Azure Blob endpoint: Azurite (Microsoft's emulator, npm package `azurite`,
//! installed by `scripts/install-test-deps.sh azurite`) on a free 127.0.0.1 port, with
//! one account whose key is generated per server (`AZURITE_ACCOUNTS`), so a request
//! signed with anything else is refused, and one container.
//!
//! Azurite keeps its metadata (lokijs) in memory and saves it every 5 s: a SIGKILL loses
//! what changed in the last 5 s. [`Azurite::settle`] waits that out where a test kills
//! the emulator and needs what it wrote before to survive.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::{ClientOptions, RetryConfig};
use tempfile::TempDir;

use super::process::{self, POLL_INTERVAL};
use super::tls::TlsFiles;
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
    /// With TLS and OAuth (`--oauth basic`): the certificate Azurite serves, whose CA
    /// clients trust through `SSL_CERT_FILE`.
    pub tls: Option<TlsFiles>,
    child: Option<Child>,
    dir: TempDir,
}

impl Azurite {
    /// Starts `azurite-blob` on plain HTTP and creates the container.
    pub fn start() -> Azurite {
        Self::start_with(None)
    }

    /// Starts `azurite-blob` on HTTPS with `--oauth basic`: besides Shared Key it then
    /// takes bearer tokens, checking their issuer (Entra ID's), audience (Azure
    /// Storage) and lifetime, not their signature. Azurite takes OAuth only over HTTPS.
    pub fn start_with_oauth() -> Azurite {
        Self::start_with(Some(TlsFiles::generate()))
    }

    fn start_with(tls: Option<TlsFiles>) -> Azurite {
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
                tls: tls.clone(),
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
            .env_remove("AZURITE_DB");
        if let Some(tls) = &self.tls {
            cmd.args(["--oauth", "basic", "--cert"])
                .arg(&tls.server_cert)
                .arg("--key")
                .arg(&tls.server_key);
        }
        cmd.current_dir(self.dir.path())
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

    /// `http://127.0.0.1:<port>` (`https://` with OAuth): what `AZURITE_BLOB_STORAGE_URL`
    /// takes.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// What a pod with Azure workload identity gets (`AZURE_CLIENT_ID`,
    /// `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`), plus the
    /// account and its endpoint on this Azurite (not the emulator mode, whose credential
    /// is always the account key), `SSL_CERT_FILE` = the CA, and `AZURE_ALLOW_HTTP` for
    /// the loopback token endpoint (plain HTTP). No account key.
    pub fn workload_identity_env(
        &self,
        entra: &super::entra::TokenEndpoint,
        token_file: &Path,
    ) -> Vec<(String, String)> {
        let tls = self.tls.as_ref().expect("start_with_oauth");
        [
            ("AZURE_STORAGE_ACCOUNT_NAME", self.account.clone()),
            (
                "AZURE_STORAGE_ENDPOINT",
                format!("{}/{}", self.endpoint(), self.account),
            ),
            ("AZURE_CLIENT_ID", entra.client_id.clone()),
            ("AZURE_TENANT_ID", entra.tenant_id.clone()),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            // With the trailing slash, as the workload identity webhook writes it.
            ("AZURE_AUTHORITY_HOST", format!("{}/", entra.authority())),
            ("AZURE_ALLOW_HTTP", "true".to_owned()),
            ("SSL_CERT_FILE", tls.ca.display().to_string()),
            ("NO_PROXY", "127.0.0.1,localhost".to_owned()),
            ("no_proxy", "127.0.0.1,localhost".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
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
            .with_client_options(self.client_options())
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
                ..Default::default()
            })
            .build()
            .expect("build MicrosoftAzure client")
    }

    fn client_options(&self) -> ClientOptions {
        let mut options = ClientOptions::new()
            .with_allow_http(true)
            .with_proxy_url("http://127.0.0.1:9")
            .with_proxy_excludes("127.0.0.1,localhost")
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(60));
        if let Some(tls) = &self.tls {
            let ca = std::fs::read(&tls.ca).expect("read CA");
            options = options
                .with_root_certificate(object_store::Certificate::from_pem(&ca).expect("CA PEM"));
        }
        options
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
        let url = format!(
            "{}/{}/{container}?{}",
            self.endpoint(),
            self.account,
            qs.join("&")
        );
        let authorization = format!("SharedKey {}:{signature}", self.account);
        let ca = self
            .tls
            .as_ref()
            .map(|t| std::fs::read(&t.ca).expect("read CA"));
        let verb = reqwest::Method::from_bytes(verb.as_bytes()).map_err(|e| e.to_string())?;
        // On a thread of its own, so that it also works inside an async test.
        thread::spawn(move || {
            etcd_lifeboat::repository::use_ring_for_http_tls();
            let mut client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30));
            if let Some(ca) = ca {
                let cert = reqwest::Certificate::from_pem(&ca).map_err(|e| e.to_string())?;
                client = client.tls_certs_merge(std::iter::once(cert));
            }
            let client = client.build().map_err(|e| e.to_string())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let response = client
                    .request(verb, &url)
                    .header("x-ms-date", date)
                    .header("x-ms-version", API_VERSION)
                    .header("Authorization", authorization)
                    .header("Content-Length", "0")
                    .send()
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
                let code = response.status().as_u16();
                let body = response.text().await.map_err(|e| e.to_string())?;
                Ok((code, body))
            })
        })
        .join()
        .unwrap_or_else(|_| Err("request thread panicked".into()))
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

#[test]
fn hmac_matches_rfc_4231_case_2() {
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}
