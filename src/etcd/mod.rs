//! Talking to a live etcd: connection settings as etcdctl takes them, picking the one
//! member a snapshot is taken from, its status, and the snapshot stream.

mod choice;
mod insecure;
pub mod settings;

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use serde::Serialize;

pub use choice::{Chosen, select_member};
pub use settings::{EtcdArgs, EtcdSettings, Prefer};

/// What can go wrong reaching etcd. Each names the endpoint or file involved.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("TLS file {path}: {reason}")]
    TlsFile {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Settings(String),
    #[error("cannot connect to etcd at {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("etcd at {endpoint} rejected the credentials of user {user:?}: {reason}")]
    Auth {
        endpoint: String,
        user: String,
        reason: String,
    },
    #[error("no usable etcd member: {0}")]
    NoMember(String),
    #[error(
        "no etcd member can be backed up safely (a snapshot must come from a member that is \
         part of a healthy cluster and caught up with its leader): {}",
        .0.join("; ")
    )]
    NoSafeMember(Vec<String>),
    #[error("etcd at {endpoint}: {what}: {reason}")]
    Request {
        endpoint: String,
        what: &'static str,
        reason: String,
    },
    #[error(
        "etcd at {endpoint}: the snapshot stream stalled (no data for {seconds} s); \
         the member may be overloaded or gone"
    )]
    Stalled { endpoint: String, seconds: u64 },
}

impl EtcdError {
    /// True when the problem is in how lifeboat was configured, not in the cluster.
    pub fn is_config(&self) -> bool {
        matches!(self, EtcdError::TlsFile { .. } | EtcdError::Settings(_))
    }
}

/// What `Maintenance.Status` says about one member, plus where we asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    pub endpoint: String,
    pub cluster_id: u64,
    pub member_id: u64,
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub version: String,
    /// The version of the db file (etcd 3.6+; empty from older servers).
    pub storage_version: String,
    pub db_size: i64,
    pub header_revision: i64,
    pub is_learner: bool,
    pub errors: Vec<String>,
}

impl MemberStatus {
    pub fn is_leader(&self) -> bool {
        self.member_id == self.leader
    }
}

/// Builds the client options (TLS, auth, timeouts) from the settings.
fn connect_options(s: &EtcdSettings) -> Result<ConnectOptions, EtcdError> {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(s.dial_timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
    if let Some(user) = &s.user {
        let password = s.password.as_ref().map(|p| p.expose()).unwrap_or("");
        o = o.with_user(user.clone(), password.to_owned());
    }
    if s.uses_tls() && !s.insecure_skip_tls_verify {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &s.cacert {
            tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca)?));
        }
        match (&s.cert, &s.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
            }
            (None, None) => {}
            _ => {
                return Err(EtcdError::Settings(
                    "--cert and --key must be given together".into(),
                ));
            }
        }
        o = o.with_tls(tls);
    }
    Ok(o)
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, EtcdError> {
    let bytes = std::fs::read(path).map_err(|e| EtcdError::TlsFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(EtcdError::TlsFile {
            path: path.to_path_buf(),
            reason: "not a PEM file (no -----BEGIN line)".into(),
        });
    }
    Ok(bytes)
}

/// Checks what can be checked without a network: the TLS files exist and are PEM,
/// `--cert` and `--key` come together. For long-running processes, which should stop at
/// once on a configuration mistake instead of retrying it forever.
pub fn check_settings(s: &EtcdSettings) -> Result<(), EtcdError> {
    connect_options(s).map(|_| ())?;
    if s.insecure_skip_tls_verify {
        insecure::tls_config(s)?;
    }
    Ok(())
}

/// Connects to exactly one endpoint.
pub async fn connect_one(s: &EtcdSettings, endpoint: &str) -> Result<Client, EtcdError> {
    let options = connect_options(s)?;
    let url = s.endpoint_url(endpoint);
    let unverified = if s.insecure_skip_tls_verify && url.starts_with("https://") {
        Some(insecure::tls_config(s)?)
    } else {
        None
    };
    let connect = async {
        match unverified {
            Some(config) => insecure::connect(config, s, endpoint, options).await,
            None => Client::connect([url.as_str()], Some(options)).await,
        }
    };
    // etcd-client retries some failures by itself; bound the whole attempt.
    let limit = s.dial_timeout + Duration::from_secs(5);
    match tokio::time::timeout(limit, connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(classify(endpoint, s, e)),
        Err(_) => Err(EtcdError::Connect {
            endpoint: endpoint.to_owned(),
            reason: format!("no answer within {} s", limit.as_secs()),
        }),
    }
}

fn classify(endpoint: &str, s: &EtcdSettings, e: etcd_client::Error) -> EtcdError {
    let reason = describe(&e);
    let lower = reason.to_lowercase();
    if let Some(user) = &s.user
        && (lower.contains("authentication failed")
            || lower.contains("invalid user id or password")
            || lower.contains("user name not found"))
    {
        return EtcdError::Auth {
            endpoint: endpoint.to_owned(),
            user: user.clone(),
            reason,
        };
    }
    EtcdError::Connect {
        endpoint: endpoint.to_owned(),
        reason,
    }
}

/// The error and its causes on one line (tonic hides the useful part in `source`), or
/// just the operating system's word for it when the connection itself failed.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused (is etcd listening there? check --endpoints)".into()
                }
                _ => io.to_string(),
            };
        }
        cause = c.source();
    }
    let text = crate::error_text::full_chain(e);
    if text.contains("Connection refused") {
        return "connection refused (is etcd listening there? check --endpoints)".into();
    }
    text
}

/// `Maintenance.Status` of the member behind `client`.
pub async fn member_status(client: &mut Client, endpoint: &str) -> Result<MemberStatus, EtcdError> {
    let st = client
        .maintenance_client()
        .status()
        .await
        .map_err(|e| EtcdError::Request {
            endpoint: endpoint.to_owned(),
            what: "endpoint status",
            reason: describe(&e),
        })?;
    let header = st.header();
    Ok(MemberStatus {
        endpoint: endpoint.to_owned(),
        cluster_id: header.map(|h| h.cluster_id()).unwrap_or(0),
        member_id: header.map(|h| h.member_id()).unwrap_or(0),
        leader: st.leader(),
        raft_term: st.raft_term(),
        raft_index: st.raft_index(),
        version: st.version().to_owned(),
        storage_version: st.storage_version().to_owned(),
        db_size: st.db_size(),
        header_revision: header.map(|h| h.revision()).unwrap_or(0),
        is_learner: st.is_learner(),
        errors: st.errors().to_vec(),
    })
}

/// How many keys the member behind `client` holds (every live key; a count-only range).
pub async fn count_keys(client: &mut Client) -> Result<i64, String> {
    client
        .get(
            "",
            Some(
                etcd_client::GetOptions::new()
                    .with_all_keys()
                    .with_count_only(),
            ),
        )
        .await
        .map(|r| r.count())
        .map_err(|e| format!("counting keys: {}", describe(&e)))
}

/// Connects to the first endpoint that answers, for cluster-wide requests (the
/// election) where any member will do.
pub async fn connect_any(s: &EtcdSettings) -> Result<(Client, String), EtcdError> {
    let mut problems = Vec::new();
    for endpoint in &s.endpoints {
        match connect_one(s, endpoint).await {
            Ok(client) => return Ok((client, endpoint.clone())),
            Err(e) if e.is_config() || matches!(e, EtcdError::Auth { .. }) => return Err(e),
            Err(e) => problems.push(e.to_string()),
        }
    }
    Err(EtcdError::NoMember(problems.join("; ")))
}

/// The snapshot stream of one member, chunk by chunk, with a stall timeout.
pub struct SnapshotStream {
    inner: etcd_client::SnapshotStreaming,
    endpoint: String,
    stall: Duration,
}

impl SnapshotStream {
    pub async fn open(
        client: &mut Client,
        endpoint: &str,
        stall: Duration,
    ) -> Result<Self, EtcdError> {
        let inner =
            client
                .maintenance_client()
                .snapshot()
                .await
                .map_err(|e| EtcdError::Request {
                    endpoint: endpoint.to_owned(),
                    what: "snapshot",
                    reason: describe(&e),
                })?;
        Ok(SnapshotStream {
            inner,
            endpoint: endpoint.to_owned(),
            stall,
        })
    }

    /// The next chunk of `db bytes ‖ sha256`, or `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, EtcdError> {
        match tokio::time::timeout(self.stall, self.inner.message()).await {
            Err(_) => Err(EtcdError::Stalled {
                endpoint: self.endpoint.clone(),
                seconds: self.stall.as_secs(),
            }),
            Ok(Err(e)) => Err(EtcdError::Request {
                endpoint: self.endpoint.clone(),
                what: "snapshot stream",
                reason: describe(&e),
            }),
            Ok(Ok(None)) => Ok(None),
            // The blob is taken, not copied (the `pub-response-field` feature).
            Ok(Ok(Some(mut m))) => Ok(Some(std::mem::take(&mut m.0.blob))),
        }
    }
}
