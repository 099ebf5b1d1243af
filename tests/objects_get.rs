//! `lifeboat get` against `etcdctl get` on the server the snapshot came from: the same
//! keys, values, revisions, versions and leases, now and at past revisions the
//! snapshot's history still holds, from a snapshot file and from a backup in SeaweedFS.

use crate::support;

use serde_json::Value;
use support::etcd::Cluster;
use support::lifeboat::{lifeboat, ok, run, text};
use support::s3::SeaweedFs;
use support::tools::EtcdVersion;

/// Revisions of interest, filled with puts, overwrites, deletes and a lease.
struct History {
    compacted: i64,
    revisions: Vec<i64>,
}

fn write_history(cluster: &Cluster) -> History {
    let put = |k: &str, v: &str| {
        cluster.etcdctl_ok(&["put", k, v]);
    };
    for i in 0..20 {
        put(&format!("/app/config/{i:02}"), &format!("v{i}-first"));
    }
    put("/other/x", "outside the prefix");
    put("/app/config/03", "v3-second");
    cluster.etcdctl_ok(&["del", "/app/config/05"]);
    let compacted = cluster.revision();
    cluster.etcdctl_ok(&["compaction", &compacted.to_string()]);
    let mut revisions = vec![compacted];
    for round in 0..3 {
        put("/app/config/03", &format!("v3-round{round}"));
        put(&format!("/app/new/{round}"), "added later");
        cluster.etcdctl_ok(&["del", &format!("/app/config/{:02}", 10 + round)]);
        revisions.push(cluster.revision());
    }
    let lease = cluster.etcdctl_ok(&["lease", "grant", "600"]);
    let id = lease
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_owned();
    cluster.etcdctl_ok(&["put", "--lease", &id, "/app/leased", "with a lease"]);
    put("/app/\u{00e9}t\u{00e9}", "utf-8 key");
    revisions.push(cluster.revision());
    History {
        compacted,
        revisions,
    }
}

fn etcdctl_json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut a = vec!["get", "-w", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&cluster.etcdctl_ok(&a)).expect("etcdctl JSON")
}

fn lifeboat_get(source: &[&str], args: &[&str], env: &[(String, String)]) -> std::process::Output {
    let mut a = vec!["get"];
    a.extend_from_slice(source);
    a.extend_from_slice(args);
    run(lifeboat(&a, env))
}

/// What must agree: the keys with everything etcd returns for them, the count, `more`,
/// and the store's revision.
fn comparable(v: &Value) -> Value {
    serde_json::json!({
        "kvs": v.get("kvs").cloned().unwrap_or(Value::Null),
        "count": v.get("count").cloned().unwrap_or(Value::Null),
        "more": v.get("more").cloned().unwrap_or(Value::Null),
        "revision": v["header"]["revision"],
    })
}

fn assert_same_as_etcdctl(
    cluster: &Cluster,
    source: &[&str],
    env: &[(String, String)],
    h: &History,
) {
    let mut cases: Vec<Vec<String>> = vec![
        vec!["/app/".into(), "--prefix".into()],
        vec!["/app/config/03".into()],
        vec!["/app/config/05".into()],
        vec!["/app/config/02".into(), "/app/config/08".into()],
        vec!["/app/new".into(), "--from-key".into()],
        vec!["/app/".into(), "--prefix".into(), "--keys-only".into()],
        vec![
            "/app/".into(),
            "--prefix".into(),
            "--limit".into(),
            "4".into(),
        ],
        vec!["/".into(), "--prefix".into()],
    ];
    for &r in &h.revisions {
        cases.push(vec![
            "/app/".into(),
            "--prefix".into(),
            format!("--rev={r}"),
        ]);
        cases.push(vec!["/app/config/03".into(), format!("--rev={r}")]);
    }
    for case in cases {
        let args: Vec<&str> = case.iter().map(String::as_str).collect();
        let want = etcdctl_json(cluster, &args);
        let mut with_json = args.clone();
        with_json.extend(["-w", "json"]);
        let got: Value = serde_json::from_str(&ok(lifeboat_get(source, &with_json, env)))
            .expect("lifeboat JSON");
        assert_eq!(comparable(&got), comparable(&want), "get {args:?}");
        // The simple output is etcdctl's byte for byte.
        let mut e = vec!["get"];
        e.extend_from_slice(&args);
        let want_simple = cluster.etcdctl_ok(&e);
        assert_eq!(
            ok(lifeboat_get(source, &args, env)),
            want_simple,
            "get {args:?} (simple)"
        );
    }
    let mut pv = vec!["get", "/app/config/", "--prefix", "--print-value-only"];
    assert_eq!(
        ok(lifeboat_get(source, &pv[1..], env)),
        cluster.etcdctl_ok(&pv),
        "--print-value-only"
    );
    pv.clear();
    // Before the compaction: etcd refuses, and so does lifeboat, saying why.
    let old = format!("--rev={}", h.compacted - 1);
    let e = cluster.etcdctl(&["get", "/app/", "--prefix", &old]);
    assert!(
        !e.status.success() && text(&e.stderr).contains("compacted"),
        "etcdctl {old}"
    );
    let out = lifeboat_get(source, &["/app/", "--prefix", &old], env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("compacted") && err.contains(&h.compacted.to_string()),
        "{err}"
    );
    let future = format!("--rev={}", h.revisions.last().unwrap() + 5);
    let out = lifeboat_get(source, &["/app/", "--prefix", &future], env);
    assert!(
        !out.status.success() && text(&out.stderr).contains("future"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn get_equals_etcdctl_on_a_snapshot_file_3_5_30() {
    let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    cluster.wait_healthy(std::time::Duration::from_secs(30));
    let h = write_history(&cluster);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = cluster.snapshot_save(0, dir.path().join("s.db"));
    let file = file.to_str().expect("utf-8");
    assert_same_as_etcdctl(&cluster, &["--backup", file], &[], &h);
    // A damaged file is refused, naming it.
    let bad = dir.path().join("bad.db");
    let mut bytes = std::fs::read(file).expect("read");
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&bad, bytes).expect("write");
    let out = lifeboat_get(
        &["--backup", bad.to_str().unwrap()],
        &["/app/", "--prefix"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("bad.db"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn get_equals_etcdctl_on_a_backup_in_s3_3_5_30() {
    let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    cluster.wait_healthy(std::time::Duration::from_secs(30));
    let s3 = SeaweedFs::start();
    let env = s3.aws_env();
    let h = write_history(&cluster);
    let storage = s3.bucket_url();
    let endpoints = cluster.endpoints().join(",");
    ok(run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &storage],
        &env,
    )));
    let spool = tempfile::tempdir().expect("temp dir");
    let spool_dir = spool.path().to_str().unwrap();
    let source = [
        "--backup",
        "latest",
        "--storage",
        &storage,
        "--spool-dir",
        spool_dir,
    ];
    assert_same_as_etcdctl(&cluster, &source, &env, &h);
    // The header names the same cluster and member as etcdctl's.
    let want = etcdctl_json(&cluster, &["/app/config/01"]);
    let mut args = source.to_vec();
    args.extend(["/app/config/01", "-w", "json"]);
    let got: Value = serde_json::from_str(&ok(lifeboat_get(&args, &[], &env))).expect("JSON");
    for field in ["cluster_id", "member_id", "raft_term"] {
        assert_eq!(
            got["header"][field], want["header"][field],
            "header {field}"
        );
    }
    // The downloaded copy is gone.
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
}
