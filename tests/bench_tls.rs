//! Self-test of the TLS side of the test bench: generated certificates, etcd
//! clusters with mutual TLS on client and peer URLs (every supported
//! version), etcdctl and etcd-client talking to them with the right identity,
//! and both refusing the wrong one.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, TlsOptions};

use support::process;
use support::tls::{self, CLIENT_CN};
use support::workload::{self, connect, connect_member, tls_options_from};
use support::{Cluster, EtcdVersion, TlsFiles};

/// Budget for a request that must fail (refused TLS identity, plain http).
const REFUSAL: Duration = Duration::from_secs(10);

/// etcdctl (this cluster's version) against `endpoint` with exactly `extra`
/// as TLS flags: no flags the cluster helper would add on its own.
fn etcdctl_raw(cluster: &Cluster, endpoint: &str, extra: &[String], args: &[&str]) -> Output {
    let mut cmd = cluster.version().etcdctl_command();
    cmd.arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=3s")
        .args(extra)
        .args(args);
    process::output_timeout(cmd, Duration::from_secs(60))
}

/// Asserts that an etcdctl run failed; logs why (visible with --nocapture).
fn assert_refused(what: &str, out: &Output) {
    assert!(!out.status.success(), "{what} succeeded: {}", text(out));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    eprintln!("{what}: refused ({}): {last}", out.status);
}

/// Waits (bounded) until member 0's log shows etcd's reason for a refusal.
fn assert_logged(cluster: &Cluster, needle: &str) {
    let m = cluster.member(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&m.log_path)
        .unwrap_or_default()
        .contains(needle)
    {
        assert!(
            Instant::now() < deadline,
            "etcd {} log lacks {needle:?}; last lines:\n{}",
            cluster.version(),
            m.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A client that is not the bench's own `connect` (which only builds correct
/// settings): used to check that wrong settings are refused.
async fn raw_client(endpoint: &str, tls: Option<TlsOptions>) -> Result<Client, etcd_client::Error> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(3));
    if let Some(tls) = tls {
        opts = opts.with_tls(tls);
    }
    Client::connect([endpoint], Some(opts)).await
}

/// Err description if a put through `client` fails or hangs; panics if it succeeds.
async fn put_must_fail(what: &str, client: Result<Client, etcd_client::Error>) -> String {
    let mut client = match client {
        Ok(c) => c,
        Err(e) => return format!("connect: {e}"),
    };
    match tokio::time::timeout(REFUSAL, client.put("/tls/refused", "x", None)).await {
        Ok(Ok(_)) => panic!("{what}: etcd accepted a put"),
        Ok(Err(e)) => format!("put: {e}"),
        Err(_) => format!("put: no answer within {REFUSAL:?}"),
    }
}

async fn get_value(client: &mut Client, key: &str) -> Option<Vec<u8>> {
    let resp = client.get(key, None).await.expect("get");
    resp.kvs().first().map(|kv| kv.value().to_vec())
}

#[test]
fn generated_files_are_pem_with_private_keys_0600() {
    let t = TlsFiles::generate();
    for p in [
        &t.ca,
        &t.server_cert,
        &t.client_cert,
        &t.other_ca,
        &t.other_client_cert,
    ] {
        let s = String::from_utf8(TlsFiles::read(p)).expect("utf-8 PEM");
        assert!(
            s.starts_with("-----BEGIN CERTIFICATE-----"),
            "{}: {s}",
            p.display()
        );
    }
    for p in [&t.server_key, &t.client_key, &t.other_client_key] {
        let s = String::from_utf8(TlsFiles::read(p)).expect("utf-8 PEM");
        assert!(
            s.starts_with("-----BEGIN PRIVATE KEY-----"),
            "{}",
            p.display()
        );
        let mode = std::fs::metadata(p).expect("stat key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{} mode {mode:o}", p.display());
    }
    assert_ne!(TlsFiles::read(&t.ca), TlsFiles::read(&t.other_ca));
    let garbage = t.write_garbage("garbage.pem");
    assert!(garbage.starts_with(&t.dir));
    assert!(!String::from_utf8_lossy(&TlsFiles::read(&garbage)).contains("-----BEGIN"));

    // The directory lives as long as any clone.
    let dir = t.dir.clone();
    let clone = t.clone();
    drop(t);
    assert!(clone.ca.is_file(), "files survive while a clone lives");
    drop(clone);
    if !process::env_flag("LIFEBOAT_KEEP_TEMP") {
        assert!(
            !dir.exists(),
            "{} removed with the last clone",
            dir.display()
        );
    }
}

fn single_member(version: EtcdVersion) {
    let t = TlsFiles::generate();
    let cluster = Cluster::start_tls(version, 1, &t);
    drop(t); // the cluster keeps its own clone of the files
    let tls = cluster
        .tls()
        .expect("TLS cluster exposes its files")
        .clone();
    let m = cluster.member(0);
    let endpoint = m.client_url.clone();
    assert!(endpoint.starts_with("https://127.0.0.1:"), "{endpoint}");
    assert!(
        m.peer_url.starts_with("https://127.0.0.1:"),
        "{}",
        m.peer_url
    );
    assert!(m.metrics_port.is_some());
    assert!(m.is_healthy());

    // etcdctl with the cluster's identity.
    let status = cluster.etcdctl_ok(&["endpoint", "status", "-w", "json"]);
    assert!(status.contains(version.label()), "{status}");
    cluster.etcdctl_ok(&["put", "/tls/etcdctl", "via-etcdctl"]);
    let got = cluster.etcdctl_ok(&["get", "/tls/etcdctl", "--print-value-only"]);
    assert_eq!(got.trim(), "via-etcdctl");
    // The same, spelled out (what a test passes to the product's CLI).
    let ok = etcdctl_raw(
        &cluster,
        &endpoint,
        &tls.etcdctl_args(),
        &["get", "/tls/etcdctl", "--print-value-only"],
    );
    assert!(ok.status.success(), "explicit flags: {}", text(&ok));

    // A client certificate from an unrelated CA is refused.
    let other = etcdctl_raw(
        &cluster,
        &endpoint,
        &tls::etcdctl_tls_args(&tls.ca, &tls.other_client_cert, &tls.other_client_key),
        &["get", "/tls/etcdctl"],
    );
    assert_refused(
        &format!("etcd {version}: etcdctl, other CA's client cert"),
        &other,
    );
    assert_logged(&cluster, "certificate signed by unknown authority");
    // No client certificate at all is refused (--client-cert-auth).
    let no_cert = etcdctl_raw(
        &cluster,
        &endpoint,
        &[format!("--cacert={}", tls.ca.display())],
        &["get", "/tls/etcdctl"],
    );
    assert_refused(
        &format!("etcd {version}: etcdctl without client cert"),
        &no_cert,
    );
    assert_logged(&cluster, "didn't provide a certificate");
    // A client that does not trust the server's CA refuses the server.
    let wrong_ca = etcdctl_raw(
        &cluster,
        &endpoint,
        &tls::etcdctl_tls_args(&tls.other_ca, &tls.client_cert, &tls.client_key),
        &["get", "/tls/etcdctl"],
    );
    assert_refused(
        &format!("etcd {version}: etcdctl trusting another CA"),
        &wrong_ca,
    );
    // Plain http to the TLS port gets nowhere.
    let http_endpoint = endpoint.replacen("https://", "http://", 1);
    let plain = etcdctl_raw(&cluster, &http_endpoint, &[], &["get", "/tls/etcdctl"]);
    assert_refused(&format!("etcd {version}: etcdctl over plain http"), &plain);
    assert_logged(&cluster, "first record does not look like a TLS handshake");
    let health = process::http_get(
        std::net::SocketAddr::from(([127, 0, 0, 1], m.client_port)),
        "/health",
        Duration::from_secs(2),
    );
    assert!(
        !matches!(&health, Ok((200, _))),
        "plain http /health on the client port: {health:?}"
    );

    support::runtime().block_on(async {
        // etcd-client with the cluster's identity (via the IP SAN 127.0.0.1).
        let mut client = connect(&cluster).await;
        client
            .put("/tls/client", "via-etcd-client", None)
            .await
            .expect("put over TLS");
        assert_eq!(
            get_value(&mut client, "/tls/client").await.as_deref(),
            Some(&b"via-etcd-client"[..])
        );
        assert_eq!(
            get_value(&mut client, "/tls/etcdctl").await.as_deref(),
            Some(&b"via-etcdctl"[..])
        );
        // The server name can also be given as the DNS SAN.
        let by_name =
            tls_options_from(&tls.ca, &tls.client_cert, &tls.client_key).domain_name("localhost");
        let mut named = raw_client(&endpoint, Some(by_name))
            .await
            .expect("connect with domain_name(localhost)");
        assert_eq!(
            get_value(&mut named, "/tls/client").await.as_deref(),
            Some(&b"via-etcd-client"[..])
        );

        // Snapshot over TLS through the maintenance API.
        let mut stream = client.snapshot().await.expect("snapshot over TLS");
        let mut bytes = 0usize;
        while let Some(part) = stream.message().await.expect("snapshot chunk") {
            bytes += part.blob().len();
        }
        assert!(bytes > 4096, "snapshot of {bytes} bytes");

        let refused = put_must_fail(
            "etcd-client with another CA's client cert",
            raw_client(
                &endpoint,
                Some(tls_options_from(
                    &tls.ca,
                    &tls.other_client_cert,
                    &tls.other_client_key,
                )),
            )
            .await,
        )
        .await;
        eprintln!("etcd {version}: other CA's client cert refused: {refused}");
        let refused = put_must_fail(
            "etcd-client over plain http",
            raw_client(&http_endpoint, None).await,
        )
        .await;
        eprintln!("etcd {version}: plain http refused: {refused}");
    });

    // etcdctl snapshot save over TLS.
    let snap = cluster.dir().join(format!("tls-{}.db", version.label()));
    cluster.snapshot_save(0, &snap);
    let len = std::fs::metadata(&snap).expect("snapshot file").len();
    assert!(len > 4096, "snapshot {} is {len} bytes", snap.display());
}

#[test]
fn tls_single_member_3_5_30() {
    single_member(EtcdVersion::V3_5_30);
}

#[test]
fn tls_single_member_3_4_23() {
    single_member(EtcdVersion::V3_4_23);
}

#[test]
fn tls_single_member_3_5_1() {
    single_member(EtcdVersion::V3_5_1);
}

#[test]
fn tls_three_members_3_5_30() {
    let t = TlsFiles::generate();
    let mut cluster = Cluster::start_tls(EtcdVersion::V3_5_30, 3, &t);
    let list = cluster.etcdctl_ok(&["member", "list", "-w", "json"]);
    let json: serde_json::Value = serde_json::from_str(&list).expect("member list json");
    let members = json["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{list}");
    for m in members {
        for field in ["peerURLs", "clientURLs"] {
            let urls = m[field].as_array().expect(field);
            assert!(
                urls.iter().all(|u| u
                    .as_str()
                    .is_some_and(|u| u.starts_with("https://127.0.0.1:"))),
                "{field}: {m}"
            );
        }
    }
    support::runtime().block_on(async {
        let mut client = connect(&cluster).await;
        client
            .put("/tls/three", "replicated", None)
            .await
            .expect("put");
        for i in 0..3 {
            // Linearizable read through each member: raft over TLS peers works.
            let mut only = connect_member(&cluster, i).await;
            assert_eq!(
                get_value(&mut only, "/tls/three").await.as_deref(),
                Some(&b"replicated"[..]),
                "member {i}"
            );
        }
    });
    // A restarted member rejoins over TLS peers with the same flags.
    cluster.kill(1);
    cluster.restart(1);
    cluster.wait_healthy(Duration::from_secs(60));
    support::runtime().block_on(async {
        let mut only = connect_member(&cluster, 1).await;
        assert_eq!(
            get_value(&mut only, "/tls/three").await.as_deref(),
            Some(&b"replicated"[..]),
            "restarted member 1"
        );
    });
    let keys = workload::live_keys_via_etcdctl(&cluster, "/tls/");
    assert_eq!(keys, vec!["/tls/three".to_string()]);
    assert_eq!(CLIENT_CN, "root");
}
