//! AWS STS, IAM and S3 on loopback: moto (PyPI `moto[server]`, installed by
//! `scripts/install-test-deps.sh moto`) behind TLS, as `tests/support/moto_server.py`
//! runs it (moto's own server, with the routing and signing of the unsigned
//! AssumeRoleWithWebIdentity call made to work as in AWS: see that file).
//!
//! [`Moto::start`] creates, with moto's IAM and S3 APIs (boto3 from the same venv),
//! a bucket, a role allowed `s3:*` on it ([`Moto::role_arn`]) and a role allowed nothing
//! ([`Moto::denied_role_arn`]), takes one set of temporary credentials of the first role
//! from moto's STS ([`Moto::role_credentials`], what an EKS Pod Identity agent hands
//! out), and then turns moto's IAM checks on: from then on S3 accepts only requests
//! signed with credentials moto's STS issued, carrying their session token, for a role
//! whose policy allows the action.
//!
//! object_store sends its STS request over HTTPS only, so moto serves TLS with a
//! certificate of a throw-away CA ([`super::tls::TlsFiles`]); lifeboat trusts it through
//! `SSL_CERT_FILE` (read by rustls-native-certs), as an operator would add a private CA.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{Certificate, ClientOptions};
use serde_json::Value;
use tempfile::TempDir;

use super::http1::{self, Request};
use super::process::{self, POLL_INTERVAL};
use super::tls::TlsFiles;
use super::tools;

const START_TIMEOUT: Duration = Duration::from_secs(90);
const REGION: &str = "us-east-1";
/// moto's default account.
const ACCOUNT: &str = "123456789012";

/// Creates the bucket, the roles and one set of role credentials with boto3 (moto's
/// checks are still off), then switches moto's IAM checks on. Prints the credentials.
const SETUP: &str = r#"
import json, sys, urllib.request, ssl
import boto3
endpoint, ca, bucket, allowed, denied = sys.argv[1:]
kw = dict(endpoint_url=endpoint, region_name="us-east-1", verify=ca,
          aws_access_key_id="setup", aws_secret_access_key="setup")
trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
    "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.test"},
    "Action": "sts:AssumeRoleWithWebIdentity"}]})
iam = boto3.client("iam", **kw)
for role in (allowed, denied):
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
iam.put_role_policy(RoleName=allowed, PolicyName="etcd-backups", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
     "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))
boto3.client("s3", **kw).create_bucket(Bucket=bucket)
creds = boto3.client("sts", **kw).assume_role(
    RoleArn=f"arn:aws:iam::123456789012:role/{allowed}", RoleSessionName="pod-identity")["Credentials"]
req = urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                             headers={"Content-Type": "text/plain"})
urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca)).read()
print(json.dumps({"AccessKeyId": creds["AccessKeyId"], "SecretAccessKey": creds["SecretAccessKey"],
    "Token": creds["SessionToken"], "Expiration": creds["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ")}))
"#;

/// A running moto server. Dropping it SIGKILLs the server (its state is in memory).
pub struct Moto {
    pub port: u16,
    pub tls: TlsFiles,
    pub bucket: String,
    pub role_arn: String,
    pub denied_role_arn: String,
    /// Temporary credentials of [`Moto::role_arn`] from moto's STS, as the EKS Pod
    /// Identity agent returns them: `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`.
    pub role_credentials: Value,
    pub log_path: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let python = tools::moto_python(); // panics with the install hint if missing
        let tls = TlsFiles::generate();
        let dir = process::owned_tempdir("moto");
        let port = process::free_ports(1)[0];
        let log_path = dir.path().join("moto.log");
        let (out, err) = process::log_stdio(&log_path);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/moto_server.py");
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .arg("-c")
            .arg(&tls.server_cert)
            .arg("-k")
            .arg(&tls.server_key)
            .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
            .env("MOTO_CALL_RESET_API", "false")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        let child = process::spawn_guarded(cmd)
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", python.display()));
        process::record_server_pid(dir.path(), child.id());
        let mut moto = Moto {
            port,
            tls,
            bucket: "lifeboat-test".into(),
            role_arn: format!("arn:aws:iam::{ACCOUNT}:role/lifeboat-backup"),
            denied_role_arn: format!("arn:aws:iam::{ACCOUNT}:role/lifeboat-nothing"),
            role_credentials: Value::Null,
            log_path,
            child: Some(child),
            dir,
        };
        moto.wait_listening();
        moto.role_credentials = moto.setup();
        moto
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("moto is running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "moto_server exited with {status}; last lines of {}:\n{}",
                    self.log_path.display(),
                    process::log_tail(&self.log_path, 30)
                );
            }
            if process::log_tail(&self.log_path, 30).contains("Running on")
                && process::port_open(self.port)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server not listening after {START_TIMEOUT:?}:\n{}",
                process::log_tail(&self.log_path, 30)
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn setup(&self) -> Value {
        let mut cmd = Command::new(tools::moto_python());
        cmd.arg("-c")
            .arg(SETUP)
            .arg(self.endpoint())
            .arg(&self.tls.ca)
            .arg(&self.bucket)
            .arg("lifeboat-backup")
            .arg("lifeboat-nothing")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        let out = process::run_ok(cmd, Duration::from_secs(120));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "moto setup printed no credentials ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `https://127.0.0.1:<port>`: S3 and STS alike.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// `s3://<bucket>/<prefix>`
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// What every S3 client of this server needs, and no credentials: `AWS_ENDPOINT`,
    /// `AWS_REGION`, path-style requests, `SSL_CERT_FILE` = the CA, no proxy for loopback.
    pub fn s3_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".to_owned()),
            ("SSL_CERT_FILE", self.tls.ca.display().to_string()),
            ("NO_PROXY", "127.0.0.1,localhost".to_owned()),
            ("no_proxy", "127.0.0.1,localhost".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// [`Moto::s3_env`] plus the web identity variables an EKS pod with IRSA gets
    /// (`AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE`) and `AWS_ENDPOINT_URL_STS` = moto.
    pub fn web_identity_env(&self, role_arn: &str, token_file: &Path) -> Vec<(String, String)> {
        let mut env = self.s3_env();
        env.extend([
            ("AWS_ROLE_ARN".to_owned(), role_arn.to_owned()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE".to_owned(),
                token_file.display().to_string(),
            ),
            ("AWS_ENDPOINT_URL_STS".to_owned(), self.endpoint()),
        ]);
        env
    }

    /// An object_store client signing with [`Moto::role_credentials`].
    pub fn object_store(&self) -> AmazonS3 {
        etcd_lifeboat::repository::use_ring_for_http_tls();
        let ca = std::fs::read(&self.tls.ca).expect("read CA");
        let c = &self.role_credentials;
        let field = |k: &str| c[k].as_str().expect("credential field").to_owned();
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(&self.bucket)
            .with_region(REGION)
            .with_access_key_id(field("AccessKeyId"))
            .with_secret_access_key(field("SecretAccessKey"))
            .with_token(field("Token"))
            .with_client_options(
                ClientOptions::new()
                    .with_root_certificate(Certificate::from_pem(&ca).expect("CA PEM"))
                    .with_proxy_url("http://127.0.0.1:9")
                    .with_proxy_excludes("127.0.0.1,localhost")
                    .with_timeout(Duration::from_secs(60)),
            )
            .build()
            .expect("build AmazonS3 client")
    }

    /// The keys in the bucket.
    pub fn objects(&self) -> Vec<String> {
        let store = self.object_store();
        super::runtime().block_on(async {
            use futures::TryStreamExt;
            use object_store::ObjectStore;
            store
                .list(None)
                .map_ok(|m| m.location.to_string())
                .try_collect()
                .await
                .expect("list the moto bucket")
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_child(&mut child);
        }
        if process::env_flag("LIFEBOAT_KEEP_TEMP") {
            process::keep_tempdir(&mut self.dir);
        }
    }
}

/// The EKS Pod Identity agent's side of `AWS_CONTAINER_CREDENTIALS_FULL_URI`, on a free
/// loopback port: `GET /v1/credentials` with `Authorization: <the token file's content>`
/// answers `credentials` (JSON); any other token gets 401. Counts both.
pub struct CredentialsAgent {
    pub port: u16,
    pub served: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
}

impl CredentialsAgent {
    pub fn start(token: &str, credentials: &Value) -> CredentialsAgent {
        let served = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (token, body) = (token.to_owned(), credentials.to_string());
        let (s, r) = (served.clone(), refused.clone());
        let port = http1::serve(move |request| answer(request, &token, &body, &s, &r));
        CredentialsAgent {
            port,
            served,
            refused,
        }
    }

    /// `http://127.0.0.1:<port>/v1/credentials`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/credentials", self.port)
    }
}

/// One request: the credentials when it carries the token, else 401. Counted before
/// the answer goes out, so a test that sees the client's result sees the count too.
fn answer(request: Request, token: &str, body: &str, served: &AtomicUsize, refused: &AtomicUsize) {
    if request.method == "GET"
        && request.path == "/v1/credentials"
        && request.header("authorization") == Some(token)
    {
        served.fetch_add(1, Ordering::SeqCst);
        request.respond("200 OK", body);
    } else {
        refused.fetch_add(1, Ordering::SeqCst);
        request.respond("401 Unauthorized", "{\"message\":\"bad token\"}");
    }
}
