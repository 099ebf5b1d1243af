//! Data that etcd snapshot readers must cope with, written through the real
//! etcd API. Every function panics (with context) if etcd refuses a request.
//!
//! Auth: [`auth_users`] enables authentication. Afterwards every request
//! needs credentials: `auth_users` re-authenticates the client it was given
//! as `root`, but other clients (and `etcdctl`) need them too — call
//! `cluster.set_credentials("root", &password)` and use [`connect`] or
//! [`connect_as`] for new clients. Run it last.

use std::path::Path;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, CompactionOptions, ConnectOptions, DeleteOptions, GetOptions, Identity,
    Permission, PutOptions, TlsOptions, Txn, TxnOp,
};
use tokio::task::JoinSet;

use super::etcd::Cluster;
use super::tls::TlsFiles;

/// etcd's default `--max-txn-ops` is 128; stay below it.
pub const TXN_BATCH: usize = 100;
/// Value size used by [`large_db`] (etcd's default request limit is 1.5 MiB).
pub const LARGE_VALUE: usize = 1024 * 1024;
/// Password [`all_workloads`] gives the `root` user.
pub const ROOT_PASSWORD: &str = "lifeboat-root-pw";

/// What a workload did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub name: &'static str,
    /// Distinct keys put by this workload, in order of first write.
    pub keys: Vec<String>,
    /// Put operations (a key overwritten 3 times counts 3).
    pub puts: usize,
    /// Keys deleted (by single, range or lease-revoke deletes).
    pub deletes: usize,
    /// Sum of the value sizes put.
    pub value_bytes: u64,
    /// Store revision after the workload.
    pub revision: i64,
}

#[derive(Debug, Clone, Default)]
pub struct LeaseSummary {
    pub summary: Summary,
    /// Leases still granted (TTL 1 h) with their keys attached.
    pub alive: Vec<i64>,
    /// Leases revoked (their keys are deleted).
    pub revoked: Vec<i64>,
    /// Keys attached to the alive leases.
    pub alive_keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CompactionSummary {
    /// Revision compacted at (physical compaction, finished on return).
    pub compacted_at: i64,
    /// Store revision when compaction was requested.
    pub revision: i64,
}

#[derive(Debug, Clone, Default)]
pub struct AuthSummary {
    pub root_user: String,
    pub root_password: String,
    /// Non-root users and their passwords.
    pub users: Vec<(String, String)>,
    /// Roles created besides `root`.
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LargeDbSummary {
    pub summary: Summary,
    /// `Status.db_size` at the end (bytes).
    pub db_size: i64,
}

#[derive(Debug, Clone, Default)]
pub struct AllSummary {
    pub kubernetes: Summary,
    pub overwrites: Summary,
    pub deletes: Summary,
    pub leases: LeaseSummary,
    pub big_values: Summary,
    pub compaction: CompactionSummary,
    pub after_compaction: Summary,
    /// `Some` if auth was enabled (then the client is authenticated as root).
    pub auth: Option<AuthSummary>,
    /// Store revision at the end.
    pub revision: i64,
}

/// Cheap deterministic pseudo-random bytes (xorshift64*), reproducible runs.
#[derive(Debug, Clone)]
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }

    /// A value shaped like a Kubernetes protobuf object: `k8s\0` + bytes,
    /// 100 B to 2 KiB in total.
    pub fn k8s_value(&mut self) -> Vec<u8> {
        let len = self.range(100, 2048);
        let mut v = b"k8s\0".to_vec();
        v.extend(self.bytes(len - 4));
        v
    }
}

/// Connects to the cluster's running members, with the cluster's registered
/// credentials (see [`Cluster::set_credentials`]) if any, and its client
/// certificate if it is a TLS cluster.
pub async fn connect(cluster: &Cluster) -> Client {
    let creds = cluster
        .credentials()
        .map(|(u, p)| (u.to_string(), p.to_string()));
    connect_endpoints_tls(cluster.running_endpoints(), creds, tls_options(cluster)).await
}

/// Connects as `user`/`password` (auth enabled).
pub async fn connect_as(cluster: &Cluster, user: &str, password: &str) -> Client {
    connect_endpoints_tls(
        cluster.running_endpoints(),
        Some((user.to_string(), password.to_string())),
        tls_options(cluster),
    )
    .await
}

/// Connects to member `i` only.
pub async fn connect_member(cluster: &Cluster, i: usize) -> Client {
    let creds = cluster
        .credentials()
        .map(|(u, p)| (u.to_string(), p.to_string()));
    connect_endpoints_tls(
        vec![cluster.member(i).client_url.clone()],
        creds,
        tls_options(cluster),
    )
    .await
}

/// Client TLS settings trusting `ca` and presenting `cert`/`key` (PEM files).
/// The server name checked is the endpoint's host: `127.0.0.1` matches the
/// IP SAN of [`TlsFiles::server_cert`] (rustls verifies IP SANs).
pub fn tls_options_from(ca: &Path, cert: &Path, key: &Path) -> TlsOptions {
    TlsOptions::new()
        .ca_certificate(Certificate::from_pem(TlsFiles::read(ca)))
        .identity(Identity::from_pem(
            TlsFiles::read(cert),
            TlsFiles::read(key),
        ))
}

/// The trusted client identity of a TLS cluster (`None` for plain http).
pub fn tls_options(cluster: &Cluster) -> Option<TlsOptions> {
    cluster
        .tls()
        .map(|t| tls_options_from(&t.ca, &t.client_cert, &t.client_key))
}

/// Plain-http connection to `endpoints` (`http://127.0.0.1:<port>`).
pub async fn connect_endpoints(endpoints: Vec<String>, creds: Option<(String, String)>) -> Client {
    connect_endpoints_tls(endpoints, creds, None).await
}

/// Connection to loopback `endpoints`: `https://127.0.0.1:<port>` with `tls`,
/// `http://127.0.0.1:<port>` without.
pub async fn connect_endpoints_tls(
    endpoints: Vec<String>,
    creds: Option<(String, String)>,
    tls: Option<TlsOptions>,
) -> Client {
    assert!(
        !endpoints.is_empty(),
        "no running etcd member to connect to"
    );
    let prefix = if tls.is_some() {
        "https://127.0.0.1:"
    } else {
        "http://127.0.0.1:"
    };
    for e in &endpoints {
        assert!(
            e.starts_with(prefix),
            "refusing endpoint {e}: expected {prefix}<port>"
        );
    }
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(60));
    if let Some((u, p)) = creds {
        opts = opts.with_user(u, p);
    }
    if let Some(tls) = tls {
        opts = opts.with_tls(tls);
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        Client::connect(&endpoints, Some(opts)),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting to {endpoints:?} timed out"))
    .unwrap_or_else(|e| panic!("connect to {endpoints:?}: {e}"))
}

/// Current store revision.
pub async fn current_revision(client: &mut Client) -> i64 {
    let resp = client
        .get("/", Some(GetOptions::new().with_count_only()))
        .await
        .expect("get revision");
    resp.header().expect("response header").revision()
}

/// Puts `kvs` in transactions of [`TXN_BATCH`] (keys must be distinct per batch).
/// Returns the revision after the last batch.
pub async fn put_batched(client: &mut Client, kvs: Vec<(String, Vec<u8>)>) -> i64 {
    let mut revision = 0;
    let mut iter = kvs.into_iter().peekable();
    while iter.peek().is_some() {
        let ops: Vec<TxnOp> = iter
            .by_ref()
            .take(TXN_BATCH)
            .map(|(k, v)| TxnOp::put(k, v, None))
            .collect();
        let resp = client
            .txn(Txn::new().and_then(ops))
            .await
            .expect("txn with puts");
        revision = resp.header().expect("txn header").revision();
    }
    revision
}

fn account(summary: &mut Summary, kvs: &[(String, Vec<u8>)]) {
    summary.puts += kvs.len();
    summary.value_bytes += kvs.iter().map(|(_, v)| v.len() as u64).sum::<u64>();
}

/// Kubernetes-shaped keys: per namespace pods, deployments, services,
/// configmaps, secrets and custom resources; cluster-scoped nodes,
/// namespaces, a CRD and the service IP range; plus a few `/calico/` keys.
/// Values are `k8s\0` + pseudo-random bytes (100 B .. 2 KiB).
pub async fn kubernetes_like(client: &mut Client, namespaces: usize, per_ns: usize) -> Summary {
    let mut noise = Noise::new(1);
    let mut kvs: Vec<(String, Vec<u8>)> = Vec::new();
    let nodes = namespaces.clamp(1, 5);
    for n in 0..nodes {
        kvs.push((format!("/registry/minions/node-{n}"), noise.k8s_value()));
    }
    kvs.push((
        "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com".into(),
        noise.k8s_value(),
    ));
    kvs.push(("/registry/ranges/serviceips".into(), noise.k8s_value()));
    for ns in 0..namespaces {
        let ns = format!("ns-{ns}");
        kvs.push((format!("/registry/namespaces/{ns}"), noise.k8s_value()));
        for i in 0..per_ns {
            kvs.push((format!("/registry/pods/{ns}/pod-{i}"), noise.k8s_value()));
            kvs.push((
                format!("/registry/deployments/{ns}/deploy-{i}"),
                noise.k8s_value(),
            ));
            kvs.push((
                format!("/registry/services/specs/{ns}/svc-{i}"),
                noise.k8s_value(),
            ));
            kvs.push((
                format!("/registry/configmaps/{ns}/cm-{i}"),
                noise.k8s_value(),
            ));
            kvs.push((
                format!("/registry/secrets/{ns}/secret-{i}"),
                noise.k8s_value(),
            ));
            kvs.push((
                format!("/registry/example.com/widgets/{ns}/widget-{i}"),
                noise.k8s_value(),
            ));
        }
    }
    // Non-registry keys other operators keep in the same etcd.
    for i in 0..3 {
        kvs.push((
            format!("/calico/resources/v3/projectcalico.org/ippools/pool-{i}"),
            format!("{{\"kind\":\"IPPool\",\"cidr\":\"10.{i}.0.0/16\"}}").into_bytes(),
        ));
    }
    kvs.push((
        "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26".into(),
        noise.bytes(300),
    ));

    let mut summary = Summary {
        name: "kubernetes_like",
        keys: kvs.iter().map(|(k, _)| k.clone()).collect(),
        ..Summary::default()
    };
    account(&mut summary, &kvs);
    summary.revision = put_batched(client, kvs).await;
    summary
}

/// Puts every key of `keys` `times` more times with new values (history).
pub async fn overwrites(client: &mut Client, keys: &[String], times: usize) -> Summary {
    let mut noise = Noise::new(2 + keys.len() as u64);
    let mut summary = Summary {
        name: "overwrites",
        keys: keys.to_vec(),
        ..Summary::default()
    };
    summary.revision = current_revision(client).await;
    for _ in 0..times {
        let kvs: Vec<(String, Vec<u8>)> = keys
            .iter()
            .map(|k| {
                let v = if k.starts_with("/registry/") {
                    noise.k8s_value()
                } else {
                    let len = noise.range(10, 500);
                    noise.bytes(len)
                };
                (k.clone(), v)
            })
            .collect();
        account(&mut summary, &kvs);
        summary.revision = put_batched(client, kvs).await;
    }
    summary
}

/// Deletes the first `n` keys under `prefix` one by one, then the next
/// (up to `n`) keys with a single range delete, leaving tombstones.
pub async fn deletes(client: &mut Client, prefix: &str, n: usize) -> Summary {
    let resp = client
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("list keys to delete");
    let keys: Vec<String> = resp
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    let mut summary = Summary {
        name: "deletes",
        ..Summary::default()
    };
    let single = n.min(keys.len());
    for k in &keys[..single] {
        let r = client.delete(k.as_str(), None).await.expect("delete key");
        summary.deletes += r.deleted() as usize;
        summary.revision = r.header().expect("header").revision();
    }
    let rest = &keys[single..];
    let ranged = n.min(rest.len());
    if ranged > 0 {
        // [first, last + "\0") covers exactly rest[..ranged].
        let mut end = rest[ranged - 1].clone().into_bytes();
        end.push(0);
        let r = client
            .delete(rest[0].as_str(), Some(DeleteOptions::new().with_range(end)))
            .await
            .expect("range delete");
        assert_eq!(r.deleted() as usize, ranged, "range delete count");
        summary.deletes += ranged;
        summary.revision = r.header().expect("header").revision();
    }
    summary.keys = keys[..single + ranged].to_vec();
    if summary.revision == 0 {
        summary.revision = current_revision(client).await;
    }
    summary
}

/// Grants `n` leases (TTL 1 h), attaches two keys to each, then revokes every
/// second lease (deleting its keys). The others stay alive.
pub async fn leases(client: &mut Client, n: usize) -> LeaseSummary {
    let mut out = LeaseSummary {
        summary: Summary {
            name: "leases",
            ..Summary::default()
        },
        ..LeaseSummary::default()
    };
    let mut granted = Vec::new();
    for i in 0..n {
        let lease = client.lease_grant(3600, None).await.expect("lease grant");
        let id = lease.id();
        let mut keys = Vec::new();
        for suffix in ["a", "b"] {
            let key = format!("/lifeboat/leases/{i:03}/{suffix}");
            let value = format!("lease {id:x} value {suffix}");
            let r = client
                .put(
                    key.as_str(),
                    value.as_str(),
                    Some(PutOptions::new().with_lease(id)),
                )
                .await
                .expect("put with lease");
            out.summary.puts += 1;
            out.summary.value_bytes += value.len() as u64;
            out.summary.revision = r.header().expect("header").revision();
            out.summary.keys.push(key.clone());
            keys.push(key);
        }
        granted.push((i, id, keys));
    }
    for (i, id, keys) in granted {
        if i % 2 == 1 {
            let r = client.lease_revoke(id).await.expect("lease revoke");
            out.summary.revision = r.header().expect("header").revision();
            out.summary.deletes += keys.len();
            out.revoked.push(id);
        } else {
            out.alive.push(id);
            out.alive_keys.extend(keys);
        }
    }
    out
}

/// Physical compaction at (current revision - 10), at least revision 1.
pub async fn compaction(client: &mut Client) -> CompactionSummary {
    let revision = current_revision(client).await;
    let compacted_at = (revision - 10).max(1);
    client
        .compact(compacted_at, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap_or_else(|e| panic!("compact at {compacted_at}: {e}"));
    CompactionSummary {
        compacted_at,
        revision,
    }
}

/// Users `alice` (read `/registry/`) and `bob` (read-write `/calico/`),
/// roles `reader` and `writer`, user `root` with role `root` and
/// `root_password`; then enables auth and re-authenticates `client` as root.
pub async fn auth_users(client: &mut Client, root_password: &str) -> AuthSummary {
    let users = vec![
        ("alice".to_string(), "alice-pw".to_string()),
        ("bob".to_string(), "bob-pw".to_string()),
    ];
    let roles = vec!["reader".to_string(), "writer".to_string()];
    client.role_add("reader").await.expect("role add reader");
    client
        .role_grant_permission("reader", Permission::read("/registry/").with_prefix())
        .await
        .expect("grant reader");
    client.role_add("writer").await.expect("role add writer");
    client
        .role_grant_permission("writer", Permission::read_write("/calico/").with_prefix())
        .await
        .expect("grant writer");
    for ((user, pw), role) in users.iter().zip(&roles) {
        client
            .user_add(user.as_str(), pw.as_str(), None)
            .await
            .expect("user add");
        client
            .user_grant_role(user.as_str(), role.as_str())
            .await
            .expect("user grant role");
    }
    client
        .user_add("root", root_password, None)
        .await
        .expect("user add root");
    client.role_add("root").await.expect("role add root");
    client
        .user_grant_role("root", "root")
        .await
        .expect("grant root role");
    client.auth_enable().await.expect("auth enable");
    client
        .update_user(Some(("root".to_string(), root_password.to_string())))
        .await
        .expect("authenticate as root after enabling auth");
    AuthSummary {
        root_user: "root".into(),
        root_password: root_password.into(),
        users,
        roles,
    }
}

/// `n` values from 5 KiB growing up to `max_size` (bbolt overflow pages).
pub async fn big_values(client: &mut Client, n: usize, max_size: usize) -> Summary {
    const MIN: usize = 5 * 1024;
    assert!(max_size >= MIN, "big values are at least 5 KiB");
    assert!(
        max_size <= LARGE_VALUE,
        "etcd refuses requests over 1.5 MiB"
    );
    let mut noise = Noise::new(3);
    let mut summary = Summary {
        name: "big_values",
        ..Summary::default()
    };
    for i in 0..n {
        let size = if n <= 1 {
            max_size
        } else {
            MIN + (max_size - MIN) * i / (n - 1)
        };
        let key = format!("/lifeboat/big/{i:04}");
        let r = client
            .put(key.as_str(), noise.bytes(size), None)
            .await
            .unwrap_or_else(|e| panic!("put {size} byte value: {e}"));
        summary.puts += 1;
        summary.value_bytes += size as u64;
        summary.revision = r.header().expect("header").revision();
        summary.keys.push(key);
    }
    summary
}

/// Distinct key/value puts sent together.
type Batch = Vec<(String, Vec<u8>)>;

/// Runs `batches` (each a list of distinct puts) on `workers` concurrent
/// clients, one transaction per batch.
async fn put_concurrently(client: &Client, batches: Vec<Batch>, workers: usize) {
    let mut queues: Vec<Vec<Batch>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, b) in batches.into_iter().enumerate() {
        queues[i % workers].push(b);
    }
    let mut set = JoinSet::new();
    for queue in queues {
        let mut c = client.clone();
        set.spawn(async move {
            for batch in queue {
                put_batched(&mut c, batch).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("put worker panicked");
    }
}

/// `n` small keys `/lifeboat/many/<i>`, 100 per txn, 8 concurrent writers.
pub async fn many_keys(client: &mut Client, n: usize) -> Summary {
    let mut noise = Noise::new(4);
    let mut summary = Summary {
        name: "many_keys",
        ..Summary::default()
    };
    let mut batches = Vec::new();
    let mut batch = Vec::with_capacity(TXN_BATCH);
    for i in 0..n {
        let key = format!("/lifeboat/many/{i:08}");
        let len = noise.range(16, 64);
        let value = noise.bytes(len);
        summary.puts += 1;
        summary.value_bytes += value.len() as u64;
        summary.keys.push(key.clone());
        batch.push((key, value));
        if batch.len() == TXN_BATCH {
            batches.push(std::mem::take(&mut batch));
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    put_concurrently(client, batches, 8).await;
    summary.revision = current_revision(client).await;
    summary
}

/// A one-member 3.5.30 cluster (4 GiB quota) holding about `bytes` of `large_db`: big
/// enough that a backup of it is still streaming when a test interferes.
pub fn large_cluster(bytes: u64) -> Cluster {
    let cluster = Cluster::start_with_args(
        super::tools::EtcdVersion::V3_5_30,
        1,
        &["--quota-backend-bytes=4294967296"],
    );
    super::runtime().block_on(async {
        let mut c = connect(&cluster).await;
        large_db(&mut c, bytes).await;
    });
    cluster
}

/// Grows the database (Status.db_size) to at least `target_bytes` with 1 MiB
/// values `/lifeboat/large/<i>`, 4 concurrent writers.
pub async fn large_db(client: &mut Client, target_bytes: u64) -> LargeDbSummary {
    let mut noise = Noise::new(5);
    let mut out = LargeDbSummary {
        summary: Summary {
            name: "large_db",
            ..Summary::default()
        },
        db_size: 0,
    };
    let max_values = (target_bytes / LARGE_VALUE as u64) as usize * 2 + 64;
    let mut next = 0usize;
    loop {
        let status = client.status().await.expect("status");
        out.db_size = status.db_size();
        if out.db_size as u64 >= target_bytes {
            break;
        }
        assert!(
            next < max_values,
            "wrote {next} MiB but db_size is only {} (target {target_bytes})",
            out.db_size
        );
        let missing = (target_bytes - out.db_size as u64).div_ceil(LARGE_VALUE as u64) as usize;
        let round = missing.clamp(1, 64);
        let mut batches = Vec::with_capacity(round);
        for _ in 0..round {
            let key = format!("/lifeboat/large/{next:06}");
            next += 1;
            out.summary.puts += 1;
            out.summary.value_bytes += LARGE_VALUE as u64;
            out.summary.keys.push(key.clone());
            batches.push(vec![(key, noise.bytes(LARGE_VALUE))]);
        }
        put_concurrently(client, batches, 4).await;
    }
    out.summary.revision = current_revision(client).await;
    out
}

/// Everything except [`many_keys`] and [`large_db`]: Kubernetes-like data,
/// overwrites, deletes (single + range), leases, big values, a physical
/// compaction, more history after it and — last, if `enable_auth` — users,
/// roles and auth (password [`ROOT_PASSWORD`]; `client` stays usable as root,
/// but call `cluster.set_credentials("root", ROOT_PASSWORD)` for etcdctl and
/// new clients).
pub async fn all_workloads(client: &mut Client, enable_auth: bool) -> AllSummary {
    let kubernetes = kubernetes_like(client, 3, 8).await;
    let first: Vec<String> = kubernetes.keys.iter().take(20).cloned().collect();
    let overwrites_s = overwrites(client, &first, 3).await;
    let deletes_s = deletes(client, "/registry/pods/", 4).await;
    let leases_s = leases(client, 6).await;
    let big = big_values(client, 4, 200 * 1024).await;
    let compaction_s = compaction(client).await;
    let cms: Vec<String> = kubernetes
        .keys
        .iter()
        .filter(|k| k.starts_with("/registry/configmaps/"))
        .cloned()
        .collect();
    let after = overwrites(client, &cms, 2).await;
    let auth = if enable_auth {
        Some(auth_users(client, ROOT_PASSWORD).await)
    } else {
        None
    };
    let revision = current_revision(client).await;
    AllSummary {
        kubernetes,
        overwrites: overwrites_s,
        deletes: deletes_s,
        leases: leases_s,
        big_values: big,
        compaction: compaction_s,
        after_compaction: after,
        auth,
        revision,
    }
}

/// Live keys under `prefix` as listed by `etcdctl get --prefix --keys-only`
/// (all keys if `prefix` is empty). Uses the cluster's credentials if set.
pub fn live_keys_via_etcdctl(cluster: &Cluster, prefix: &str) -> Vec<String> {
    // An empty key with --prefix means every key.
    let stdout = cluster.etcdctl_ok(&["get", prefix, "--prefix", "--keys-only"]);
    // etcdctl prints a blank line after every key.
    stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every key and value in the cluster (blocking; for comparing before and after).
pub fn dump(endpoints: Vec<String>) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    super::runtime().block_on(async {
        let mut c = connect_endpoints(endpoints, None).await;
        let resp = c
            .get("", Some(etcd_client::GetOptions::new().with_all_keys()))
            .await
            .expect("get all keys");
        resp.kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
            .collect()
    })
}

/// Every workload of the parity tests, in order, with `take(cluster, name)` after each:
/// `empty`, `kubernetes`, `overwrites-deletes`, `leases`, `big-values`, `compacted` and
/// `auth` (after which the cluster's credentials are root's). Returns the compaction.
pub fn every_workload(
    cluster: &mut Cluster,
    rt: &tokio::runtime::Runtime,
    client: &mut Client,
    take: &mut dyn FnMut(&Cluster, &str),
) -> CompactionSummary {
    take(cluster, "empty");
    let k8s = rt.block_on(kubernetes_like(client, 4, 30));
    take(cluster, "kubernetes");
    let some: Vec<String> = k8s.keys.iter().take(40).cloned().collect();
    rt.block_on(overwrites(client, &some, 3));
    rt.block_on(deletes(client, "/registry/pods/", 10));
    take(cluster, "overwrites-deletes");
    rt.block_on(leases(client, 8));
    take(cluster, "leases");
    rt.block_on(big_values(client, 6, 200 * 1024));
    take(cluster, "big-values");
    let compacted = rt.block_on(compaction(client));
    take(cluster, "compacted");
    let auth = rt.block_on(auth_users(client, ROOT_PASSWORD));
    cluster.set_credentials(&auth.root_user, &auth.root_password);
    take(cluster, "auth");
    compacted
}
