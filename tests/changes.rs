//! The change log (issue 10), recorded by a real `lifeboat daemon` from a real etcd into
//! real storage: every revision after the full backup, whole and in order, with its
//! leases; a compaction that overtakes a stopped recorder breaks the chain, and the
//! daemon starts a new one from a new full backup.

use crate::support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_client::{Client, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use etcd_lifeboat::changes::segment::{Event, EventKind, Record};
use etcd_lifeboat::changes::store::{self, Listed};
use etcd_lifeboat::repository::Repository;
use support::daemon::Daemon;
use support::etcd::Cluster;
use support::lifeboat::{http_get, list_json};
use support::s3::SeaweedFs;
use support::tools::EtcdVersion;
use support::workload;

fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (60 s at most) until `daemon` records with a durable revision; returns it.
fn recording_from(daemon: &Daemon) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(daemon.metric("lifeboat_changes_recording") == 1.0
        && daemon.metric("lifeboat_changes_durable_revision") > 0.0)
    {
        assert!(
            Instant::now() < deadline,
            "not recording:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.metric("lifeboat_changes_durable_revision") as i64
}

fn config(cluster: &Cluster, storage: &str, spool: &std::path::Path) -> String {
    let endpoints: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect();
    format!(
        "[etcd]\nendpoints = [{}]\n[storage]\nurl = \"{storage}\"\n\
         [backup]\nschedule = \"0 0 0 1 1 *\"\nspool-dir = \"{}\"\n\
         [changes]\nenabled = true\nflush-interval = \"1s\"\nquiet-interval = \"5s\"\n\
         [daemon]\nleader-election = false\n",
        endpoints.join(", "),
        spool.display()
    )
}

/// Revisions worth restoring to, noted by the writer.
#[derive(Debug, Default)]
struct Points {
    revisions: Vec<i64>,
    /// A time with nothing written for a second either side, and the revision then.
    quiet: Option<(chrono::DateTime<chrono::Utc>, i64)>,
    leases: Vec<i64>,
}

async fn now_revision(c: &mut Client) -> i64 {
    c.get("/", Some(GetOptions::new().with_count_only()))
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision()
}

/// A writer with every kind of change: puts, overwrites, deletes, multi-op
/// transactions, a DeleteRange of 1000 keys in one revision, a 1 MiB value, and keys on
/// 2-second leases that expire on their own.
async fn write_everything(c: &mut Client, base: i64) -> Points {
    let mut p = Points::default();
    for i in 0..50 {
        c.put(format!("/registry/pods/ns/p{i}"), vec![b'a'; 100 + i], None)
            .await
            .expect("put");
    }
    for i in 0..20 {
        c.put(
            format!("/registry/pods/ns/p{i}"),
            b"rewritten".to_vec(),
            None,
        )
        .await
        .expect("overwrite");
    }
    for i in 20..30 {
        c.delete(format!("/registry/pods/ns/p{i}"), None)
            .await
            .expect("delete");
    }
    let txn = Txn::new().and_then(vec![
        TxnOp::put("/registry/cm/a", "1", None),
        TxnOp::put("/registry/cm/b", "2", None),
        TxnOp::delete("/registry/pods/ns/p40", None),
    ]);
    c.txn(txn).await.expect("txn");
    p.revisions.push(now_revision(c).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    p.quiet = Some((chrono::Utc::now(), now_revision(c).await));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for chunk in 0..10 {
        let ops: Vec<TxnOp> = (0..100)
            .map(|i| {
                TxnOp::put(
                    format!("/registry/events/e{:04}", chunk * 100 + i),
                    "ev",
                    None,
                )
            })
            .collect();
        c.txn(Txn::new().and_then(ops)).await.expect("bulk txn");
    }
    c.delete(
        "/registry/events/",
        Some(DeleteOptions::new().with_prefix()),
    )
    .await
    .expect("delete range");
    p.revisions.push(now_revision(c).await);
    c.put("/registry/secrets/big", vec![7u8; 1 << 20], None)
        .await
        .expect("1 MiB value");
    p.revisions.push(now_revision(c).await);
    let mut leases = Vec::new();
    for l in 0..3 {
        let lease = c.lease_grant(2, None).await.expect("grant").id();
        leases.push(lease);
        for k in 0..5 {
            c.put(
                format!("/registry/leases/l{l}/k{k}"),
                "x",
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .expect("put on lease");
        }
    }
    p.revisions.push(now_revision(c).await);
    // A compaction behind the recorder (as Kubernetes makes every 5 minutes): it must not
    // disturb it. Every point compared below stays readable at its revision.
    c.compact(base + 1, None).await.expect("compact");
    // The leases expire on their own: one revision per lease, a delete per key.
    tokio::time::sleep(Duration::from_secs(5)).await;
    p.revisions.push(now_revision(c).await);
    p.leases = leases;
    p
}

/// `etcdctl get "" --prefix -w json` (at `rev` when given): the kvs, and the header
/// revision.
fn kvs(version: EtcdVersion, endpoint: &str, rev: Option<i64>) -> (serde_json::Value, i64) {
    let mut cmd = version.etcdctl_command();
    cmd.args(["--endpoints", endpoint, "get", "", "--prefix", "-w", "json"]);
    if let Some(r) = rev {
        cmd.arg(format!("--rev={r}"));
    }
    let out = cmd.output().expect("etcdctl get");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let header = v["header"]["revision"].as_i64().expect("header revision");
    (v["kvs"].clone(), header)
}

/// A config naming the storage and the scratch member's binaries (etcd 3.5.30).
fn tools_config(dir: &std::path::Path, storage: &str) -> std::path::PathBuf {
    tools_config_for(dir, storage, EtcdVersion::V3_5_30)
}

/// As [`tools_config`], with the scratch member's binaries of `tool`.
fn tools_config_for(dir: &std::path::Path, storage: &str, tool: EtcdVersion) -> std::path::PathBuf {
    let cfg = dir.join(format!("tools-{}.toml", tool.label()));
    std::fs::write(
        &cfg,
        format!(
            "[storage]\nurl = \"{storage}\"\n[drill]\netcd-binary = \"{}\"\netcdutl = \"{}\"\n",
            tool.etcd().display(),
            tool.etcdutl().expect("etcdutl").display()
        ),
    )
    .expect("config");
    cfg
}

/// `lifeboat fetch --to-revision/--to-time`, then the file restored and compared key by
/// key (value, create/mod revision, version, lease) with the original at `expect`;
/// returns fetch's JSON report.
fn restore_to_point(
    cluster: &Cluster,
    storage: &str,
    dir: &std::path::Path,
    point: (&str, String),
    expect: i64,
) -> serde_json::Value {
    restore_to_point_with(cluster, storage, dir, point, expect, &[])
}

/// As [`restore_to_point`], with `env` for lifeboat (`LIFEBOAT_REPLAY_*`).
fn restore_to_point_with(
    cluster: &Cluster,
    storage: &str,
    dir: &std::path::Path,
    point: (&str, String),
    expect: i64,
    env: &[(String, String)],
) -> serde_json::Value {
    let cfg = tools_config(dir, storage);
    let tool = EtcdVersion::V3_5_30;
    let variant: String = env.iter().map(|(_, v)| format!("-{v}")).collect();
    let out = dir.join(format!(
        "point-{}-{}{variant}.db",
        point.0.trim_start_matches('-'),
        expect
    ));
    let res = support::lifeboat::run(support::lifeboat::lifeboat(
        &[
            "fetch",
            point.0,
            &point.1,
            "--out",
            out.to_str().expect("utf-8"),
            "--config",
            cfg.to_str().expect("utf-8"),
            "-w",
            "json",
        ],
        env,
    ));
    let stdout = support::lifeboat::text(&res.stdout);
    assert!(
        res.status.success(),
        "fetch {} {}: {}",
        point.0,
        point.1,
        support::lifeboat::text(&res.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json report");
    assert_eq!(report["revision"].as_i64(), Some(expect), "{report}");
    // A long election timeout keeps the snapshot's leases from expiring while we look.
    let restored = support::restored::Restored::start_with_args(
        tool,
        &out,
        &["--heartbeat-interval=500", "--election-timeout=10000"],
    );
    let (got, got_rev) = kvs(tool, &restored.endpoint, None);
    let (want, _) = kvs(cluster.version(), &cluster.endpoints()[0], Some(expect));
    assert_eq!(got_rev, expect, "the restored member's revision");
    assert_eq!(
        got.as_array().map(Vec::len),
        want.as_array().map(Vec::len),
        "keys at revision {expect}"
    );
    assert_eq!(
        got, want,
        "every key, value, create/mod revision, version and lease at {expect}"
    );
    report
}

/// Every revision in (from, to], as an independent watch delivers it.
async fn reference(
    c: &mut Client,
    from: i64,
    to: i64,
) -> Vec<(i64, Vec<(EventKind, Vec<u8>, Vec<u8>, i64, i64, i64, i64)>)> {
    let mut wc = c.watch_client().max_decoding_message_size(64 << 20);
    let mut stream = wc
        .watch(
            "",
            Some(
                WatchOptions::new()
                    .with_all_keys()
                    .with_start_revision(from + 1),
            ),
        )
        .await
        .expect("watch");
    let mut out: Vec<(i64, Vec<_>)> = Vec::new();
    while out.last().is_none_or(|(r, _)| *r < to) {
        let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the reference watch stalled")
            .expect("watch error")
            .expect("watch ended");
        for ev in resp.events() {
            let kv = ev.kv().expect("kv");
            let kind = if ev.0.r#type == 0 {
                EventKind::Put
            } else {
                EventKind::Delete
            };
            let e = (
                kind,
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease(),
            );
            match out.last_mut() {
                Some((r, evs)) if *r == kv.mod_revision() => evs.push(e),
                _ => out.push((kv.mod_revision(), vec![e])),
            }
        }
    }
    out
}

/// A writer thread putting `prefix{i % keys}` every `period_ms` until the flag is set;
/// it returns how many puts it made.
fn spawn_writer(
    endpoints: Vec<String>,
    prefix: &'static str,
    keys: u64,
    period_ms: u64,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    spawn_writer_sized(endpoints, prefix, keys, period_ms, 0)
}

/// As [`spawn_writer`], each value padded to `value_bytes`.
fn spawn_writer_sized(
    endpoints: Vec<String>,
    prefix: &'static str,
    keys: u64,
    period_ms: u64,
    value_bytes: usize,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        support::runtime().block_on(async {
            let mut c = Client::connect(endpoints, None).await.expect("connect");
            let mut i = 0u64;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let mut value = format!("v{i}");
                let pad = value_bytes.saturating_sub(value.len());
                value.extend(std::iter::repeat_n('x', pad));
                c.put(format!("{prefix}{}", i % keys), value, None)
                    .await
                    .expect("put");
                i += 1;
                tokio::time::sleep(Duration::from_millis(period_ms)).await;
            }
            i
        })
    });
    (stop, handle)
}

/// The chains in storage: chain id → its segments' records in order.
async fn recorded(storage: &str) -> HashMap<String, Vec<(i64, i64, Vec<Record>)>> {
    recorded_with(storage, &HashMap::new()).await
}

/// As [`recorded`], with `[storage.options]` (for S3).
async fn recorded_with(
    storage: &str,
    options: &HashMap<String, String>,
) -> HashMap<String, Vec<(i64, i64, Vec<Record>)>> {
    let repo = Repository::open(storage, options, "default").expect("open storage");
    let mut chains: HashMap<String, Vec<(i64, i64, Vec<Record>)>> = HashMap::new();
    for l in store::list_segments(&repo, None)
        .await
        .expect("list segments")
    {
        let m = match l {
            Listed::Segment(m) => m,
            Listed::Refused { key, reason } => panic!("refused {key}: {reason}"),
        };
        let records = store::read_segment(&repo, &m, None)
            .await
            .expect("read segment");
        chains
            .entry(m.chain.clone())
            .or_default()
            .push((m.from_revision, m.to_revision, records));
    }
    chains
}

fn recording_check(version: EtcdVersion) {
    let cluster = Cluster::start(version, 1);
    let rt = support::runtime();
    let mut c = rt.block_on(workload::connect(&cluster));
    rt.block_on(async {
        for i in 0..20 {
            c.put(format!("/registry/before/{i}"), "x", None)
                .await
                .expect("put");
        }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let daemon = Daemon::start(
        dir.path(),
        "d",
        &config(&cluster, &storage, dir.path()),
        &[],
    );
    // No backup yet: the recorder takes one first, then records from its revision.
    wait_until(
        Duration::from_secs(60),
        "the first backup and the chain",
        || {
            daemon.metric("lifeboat_changes_recording") == 1.0
                && list_json(&storage, &[]).len() == 1
        },
    );
    let backups = list_json(&storage, &[]);
    let base = backups[0]["revision"].as_i64().expect("revision");
    let base_id = backups[0]["id"].as_str().expect("id").to_owned();
    let points = rt.block_on(write_everything(&mut c, base));
    let leases = points.leases.clone();
    let last = rt.block_on(now_revision(&mut c));
    assert!(
        last > base + 100,
        "the writer made {} revisions",
        last - base
    );
    wait_until(
        Duration::from_secs(30),
        "the change log to reach the last revision",
        || daemon.metric("lifeboat_changes_durable_revision") >= last as f64,
    );
    let want = rt.block_on(reference(&mut c, base, last));
    let chains = rt.block_on(recorded(&storage));
    assert_eq!(chains.len(), 1, "one chain: {:?}", chains.keys());
    let segments = &chains[&base_id];
    // The segments tile (base, last] without gaps or overlaps.
    let mut at = base;
    let mut got = Vec::new();
    let mut lease_ttls = HashMap::new();
    for (from, to, records) in segments {
        assert_eq!(*from, at, "segment ({from}, {to}] after revision {at}");
        at = *to;
        for r in records {
            match r {
                Record::Revision {
                    revision, events, ..
                } => got.push((
                    *revision,
                    events
                        .iter()
                        .map(|e| {
                            (
                                e.kind,
                                e.key.clone(),
                                e.value.clone(),
                                e.create_revision,
                                e.mod_revision,
                                e.version,
                                e.lease,
                            )
                        })
                        .collect::<Vec<_>>(),
                )),
                Record::Lease {
                    id, granted_ttl, ..
                } => {
                    lease_ttls.insert(*id, *granted_ttl);
                }
                Record::Mark { .. } => {}
            }
        }
    }
    assert!(at >= last, "recorded up to {at}, the cluster is at {last}");
    let got: Vec<_> = got.into_iter().filter(|(r, _)| *r <= last).collect();
    assert_eq!(got.len(), want.len(), "revisions recorded vs. watched");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "revision {} differs", w.0);
    }
    // The DeleteRange of 1000 keys is one revision; each lease expiry one more.
    assert!(
        got.iter()
            .any(|(_, evs)| evs.len() == 1000 && evs.iter().all(|e| e.0 == EventKind::Delete))
    );
    for l in &leases {
        assert_eq!(
            lease_ttls.get(l),
            Some(&2),
            "lease {l} and its TTL: {lease_ttls:?}"
        );
    }
    let metrics = daemon.metrics();
    assert!(
        metrics.contains("lifeboat_changes_chain_breaks_total 0\n"),
        "{metrics}"
    );
    assert!(
        daemon.metric("lifeboat_changes_durable_age_seconds") < 10.0,
        "{metrics}"
    );
    // `list --changes` shows the window: from the backup to the last revision.
    let listed = support::lifeboat::ok(support::lifeboat::run(support::lifeboat::lifeboat(
        &["list", "--changes", "--storage", &storage, "-w", "json"],
        &[],
    )));
    let listed: serde_json::Value = serde_json::from_str(listed.trim()).expect("json");
    let window = &listed[0];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(window["chain"], base_id.as_str(), "{listed}");
    assert_eq!(window["from_revision"].as_i64(), Some(base), "{listed}");
    assert!(
        window["to_revision"].as_i64().expect("to") >= last,
        "{listed}"
    );
    assert_eq!(window["backups"][0], base_id.as_str(), "{listed}");
    assert!(window["problem"].is_null(), "{listed}");
    // Restore to points across the run: right after the backup, after a multi-op txn,
    // after the 1000-key DeleteRange, the 1 MiB value, with keys on leases, after the
    // leases expired; and to a time.
    // Each through the restored member's WAL, in one start of it.
    let mut revisions = vec![base + 1];
    revisions.extend(&points.revisions);
    let through_the_wal = |report: &serde_json::Value| {
        assert_eq!(report["method"], "wal", "{report}");
        assert_eq!(report["member_starts"], 1, "{report}");
    };
    for r in revisions {
        through_the_wal(&restore_to_point(
            &cluster,
            &storage,
            dir.path(),
            ("--to-revision", r.to_string()),
            r,
        ));
    }
    let (t, rev_at_t) = points.quiet.expect("a quiet time");
    through_the_wal(&restore_to_point(
        &cluster,
        &storage,
        dir.path(),
        (
            "--to-time",
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
        rev_at_t,
    ));
    // The point with keys on leases again, in batches of 40 entries: etcd stopped and
    // started between them, each batch appended after what etcd left in its WAL, the
    // leases granted in one batch alive in the next.
    let with_leases = points.revisions[3];
    let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    let batched = restore_to_point_with(
        &cluster,
        &storage,
        dir.path(),
        ("--to-revision", with_leases.to_string()),
        with_leases,
        &env("LIFEBOAT_REPLAY_BATCH", "40"),
    );
    assert_eq!(batched["method"], "wal", "{batched}");
    assert!(
        batched["member_starts"].as_u64().expect("starts") >= 3,
        "{batched}"
    );
    // And over gRPC, one transaction per revision: the fallback still restores exactly.
    let grpc = restore_to_point_with(
        &cluster,
        &storage,
        dir.path(),
        ("--to-revision", with_leases.to_string()),
        with_leases,
        &env("LIFEBOAT_REPLAY_METHOD", "grpc"),
    );
    assert_eq!(grpc["method"], "grpc", "{grpc}");
    assert!(
        grpc["grpc_reason"]
            .as_str()
            .is_some_and(|r| r.contains("LIFEBOAT_REPLAY_METHOD")),
        "{grpc}"
    );
    // Outside the log: refused, naming what can be restored.
    let nowhere = dir.path().join("no.db");
    let res = support::lifeboat::run(support::lifeboat::lifeboat(
        &[
            "fetch",
            "--to-revision",
            &(last + 1000).to_string(),
            "--out",
            nowhere.to_str().expect("utf-8"),
            "--storage",
            &storage,
        ],
        &[],
    ));
    let err = support::lifeboat::text(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not covered by the change log")
            && err.contains("what can be restored: revisions"),
        "{err}"
    );
    assert!(!nowhere.exists());
    drop(daemon);
}

#[test]
fn every_revision_is_recorded_3_5_30() {
    recording_check(EtcdVersion::V3_5_30);
}

#[test]
fn every_revision_is_recorded_3_4_23() {
    recording_check(EtcdVersion::V3_4_23);
}

/// The recorder is stopped, the cluster compacted past its position, the recorder
/// restarted: the break is detected and counted, /readyz says so until a new full backup
/// starts a new chain, and the old chain ends where it ended.
#[test]
fn a_compaction_past_a_stopped_recorder_breaks_the_chain() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let rt = support::runtime();
    let mut c = rt.block_on(workload::connect(&cluster));
    rt.block_on(async { c.put("/registry/a", "1", None).await.expect("put") });
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let cfg = config(&cluster, &storage, dir.path());
    let first = Daemon::start(dir.path(), "d1", &cfg, &[]);
    wait_until(Duration::from_secs(60), "recording", || {
        first.metric("lifeboat_changes_recording") == 1.0
    });
    let mid = rt.block_on(async {
        let mut r = 0;
        for i in 0..10 {
            r = c
                .put(format!("/registry/b{i}"), "x", None)
                .await
                .expect("put")
                .header()
                .expect("h")
                .revision();
        }
        r
    });
    wait_until(Duration::from_secs(30), "durable", || {
        first.metric("lifeboat_changes_durable_revision") >= mid as f64
    });
    drop(first);
    let compacted = rt.block_on(async {
        let mut r = 0;
        for i in 0..10 {
            r = c
                .put(format!("/registry/c{i}"), "x", None)
                .await
                .expect("put")
                .header()
                .expect("h")
                .revision();
        }
        c.compact(r, None).await.expect("compact");
        r
    });
    let second = Daemon::start(dir.path(), "d2", &cfg, &[]);
    wait_until(Duration::from_secs(60), "the break and a new chain", || {
        second.metric("lifeboat_changes_chain_breaks_total") >= 1.0
            && second.metric("lifeboat_changes_broken") == 0.0
            && second.metric("lifeboat_changes_recording") == 1.0
    });
    let log = second.log_text();
    assert!(log.contains("overtook the recorder"), "{log}");
    let chains = rt.block_on(recorded(&storage));
    assert_eq!(
        chains.len(),
        2,
        "the old chain and a new one: {:?}",
        chains.keys()
    );
    let backups = list_json(&storage, &[]);
    assert_eq!(backups.len(), 2, "a new full backup started the new chain");
    let newest = backups[0]["revision"].as_i64().expect("revision");
    assert!(
        newest >= compacted,
        "the new chain starts at {newest}, after the compaction at {compacted}"
    );
    let old = &chains[backups[1]["id"].as_str().expect("id")];
    let old_end = old.iter().map(|(_, to, _)| *to).max().expect("segments");
    assert!(
        old_end >= mid && old_end < compacted,
        "the old chain ends at {old_end}"
    );
    let (code, _) = http_get(second.port, "/readyz").expect("readyz");
    assert_eq!(code, 200);
    drop(second);
    // Retention: keeping only the newest backup, the old chain (which no kept backup
    // can start) goes, manifest and data; the new chain stays.
    let cfg = dir.path().join("prune.toml");
    std::fs::write(
        &cfg,
        format!("[storage]\nurl = \"{storage}\"\n[retention]\nkeep-last = 1\n"),
    )
    .expect("config");
    let dry = support::lifeboat::ok(support::lifeboat::run(support::lifeboat::lifeboat(
        &[
            "prune",
            "--dry-run",
            "--config",
            cfg.to_str().expect("utf-8"),
        ],
        &[],
    )));
    let old_id = backups[1]["id"].as_str().expect("id").to_owned();
    assert!(
        dry.contains(&format!("changes/{old_id}/")) && dry.contains("change-log segment"),
        "{dry}"
    );
    support::lifeboat::ok(support::lifeboat::run(support::lifeboat::lifeboat(
        &["prune", "--config", cfg.to_str().expect("utf-8")],
        &[],
    )));
    let chains = rt.block_on(recorded(&storage));
    assert_eq!(chains.len(), 1, "{:?}", chains.keys());
    assert!(chains.contains_key(backups[0]["id"].as_str().expect("id")));
    let left = support::lifeboat::files_under(&dir.path().join("backups"));
    assert!(
        !left.iter().any(|p| p.to_string_lossy().contains(&old_id)),
        "{left:?}"
    );
}

/// The S3 server is stopped for 20 s while writes go on: the recorder keeps what it
/// could not store and catches up when the server is back: no gap, no break; the RPO
/// metric rises during the outage and falls back after.
#[test]
fn a_storage_outage_shorter_than_the_buffer_loses_nothing() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let mut s3 = SeaweedFs::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("s3://{}/etcd", s3.bucket);
    let env = [
        s3.aws_env(),
        vec![("LIFEBOAT_S3_RETRY_TIMEOUT".to_owned(), "2s".to_owned())],
    ]
    .concat();
    let daemon = Daemon::start(
        dir.path(),
        "d",
        &config(&cluster, &storage, dir.path()),
        &env,
    );
    let base = recording_from(&daemon);
    // A writer: 20 puts a second for the whole test.
    let endpoints = cluster.endpoints();
    let (stop, writer) = spawn_writer(endpoints, "/registry/configmaps/ns/cm", 500, 50);
    std::thread::sleep(Duration::from_secs(3));
    s3.stop();
    let stopped = Instant::now();
    let mut highest_rpo: f64 = 0.0;
    while stopped.elapsed() < Duration::from_secs(20) {
        highest_rpo = highest_rpo.max(daemon.metric("lifeboat_changes_durable_age_seconds"));
        std::thread::sleep(Duration::from_millis(500));
    }
    s3.restart();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let puts = writer.join().expect("writer");
    let rt = support::runtime();
    let mut c = rt.block_on(workload::connect(&cluster));
    let last = rt.block_on(now_revision(&mut c));
    wait_until(Duration::from_secs(60), "the recorder to catch up", || {
        daemon.metric("lifeboat_changes_durable_revision") >= last as f64
    });
    assert!(
        highest_rpo >= 10.0,
        "the RPO rose to only {highest_rpo} s while the storage was away"
    );
    wait_until(Duration::from_secs(10), "the RPO to fall back", || {
        daemon.metric("lifeboat_changes_durable_age_seconds") < 5.0
    });
    let metrics = daemon.metrics();
    assert!(
        metrics.contains("lifeboat_changes_chain_breaks_total 0\n"),
        "{metrics}"
    );
    assert!(
        daemon.metric("lifeboat_changes_flush_failures_total") >= 1.0,
        "{metrics}"
    );
    // Every revision is there, once, in order.
    let chains = rt.block_on(recorded_with(&storage, &s3_options(&s3)));
    assert_eq!(chains.len(), 1, "{:?}", chains.keys());
    let segments = chains.values().next().expect("chain");
    let mut at = segments[0].0;
    let mut revisions = Vec::new();
    for (from, to, records) in segments {
        assert_eq!(*from, at, "segment ({from}, {to}] after {at}");
        at = *to;
        revisions.extend(records.iter().filter_map(|r| match r {
            Record::Revision { revision, .. } => Some(*revision),
            _ => None,
        }));
    }
    assert!(at >= last);
    let expected: Vec<i64> = (base + 1..=at).collect();
    assert_eq!(revisions, expected, "every revision once, in order");
    // 20 a second were asked for; a loaded machine's fsyncs make fewer.
    assert!(puts >= 100, "the writer made only {puts} puts");
    let want = rt.block_on(reference(&mut c, base, last));
    assert_eq!(want.len() as i64, last - base);
    s3.stop();
}

/// `[storage.options]` for the SeaweedFS bucket, as the daemon gets them from `AWS_*`.
fn s3_options(s3: &SeaweedFs) -> HashMap<String, String> {
    s3.aws_env()
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("AWS_") && k != "AWS_DEFAULT_REGION" && k != "AWS_ENDPOINT_URL"
        })
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect()
}

/// A segment's size limit and the memory buffer in the spool tests: as small as the
/// daemon allows them to be equal, so one sealed segment fills the memory.
const SMALL: usize = 64 << 10;

/// A daemon recording a 3.5.30 member into SeaweedFS with a memory buffer of one
/// segment ([`SMALL`]) and `max_spool_bytes` of spool in its own directory.
struct SpoolBench {
    cluster: Cluster,
    s3: SeaweedFs,
    storage: String,
    env: Vec<(String, String)>,
    spool: std::path::PathBuf,
    daemon: Daemon,
    /// The chain's durable revision when recording began.
    base: i64,
    _dir: tempfile::TempDir,
}

impl SpoolBench {
    fn start(max_spool_bytes: u64) -> SpoolBench {
        let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
        let s3 = SeaweedFs::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = format!("s3://{}/etcd", s3.bucket);
        let env = [
            s3.aws_env(),
            vec![("LIFEBOAT_S3_RETRY_TIMEOUT".to_owned(), "2s".to_owned())],
        ]
        .concat();
        let spool = dir.path().join("spool");
        std::fs::create_dir(&spool).expect("spool dir");
        // What a recorder killed outright leaves behind, and a file that is not lifeboat's.
        let stale = spool.join(
            "lifeboat-changes-20260101T000000.000Z-0123abcd-\
             00000000000000000007-00000000000000000009.spool",
        );
        std::fs::write(&stale, b"left by a killed recorder").expect("stale spool file");
        let other = spool.join("lifeboat-changes-notes.spool");
        std::fs::write(&other, b"someone else's").expect("other file");
        let cfg = config(&cluster, &storage, &spool).replace(
            "[changes]\nenabled = true\n",
            &format!(
                "[changes]\nenabled = true\nmax-segment-bytes = {SMALL}\n\
                 max-buffer-bytes = {SMALL}\nmax-spool-bytes = {max_spool_bytes}\n"
            ),
        );
        let daemon = Daemon::start(dir.path(), "d", &cfg, &env);
        let base = recording_from(&daemon);
        assert!(
            !stale.exists(),
            "a stale spool file is removed when the recorder starts"
        );
        assert!(other.exists(), "only change-log spool files are removed");
        std::fs::remove_file(&other).expect("remove");
        SpoolBench {
            cluster,
            s3,
            storage,
            env,
            spool,
            daemon,
            base,
            _dir: dir,
        }
    }

    /// A writer of 2 KiB values, about 40 a second (some 80 KiB/s: a sealed segment
    /// fills the memory buffer within a second).
    fn writer(
        &self,
    ) -> (
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<u64>,
    ) {
        spawn_writer_sized(
            self.cluster.endpoints(),
            "/registry/configmaps/ns/big",
            200,
            20,
            2048,
        )
    }

    /// The change-log spool files in the spool directory, with their modes.
    fn spool_files(&self) -> Vec<(String, u32)> {
        use std::os::unix::fs::PermissionsExt;
        let mut files: Vec<(String, u32)> = std::fs::read_dir(&self.spool)
            .expect("spool dir")
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().to_string_lossy().into_owned();
                let mode = e.metadata().ok()?.permissions().mode() & 0o777;
                (name.starts_with("lifeboat-changes-") && name.ends_with(".spool"))
                    .then_some((name, mode))
            })
            .collect();
        files.sort();
        files
    }

    fn buffered(&self, place: &str) -> f64 {
        self.daemon.metric(&format!(
            "lifeboat_changes_buffered_bytes{{where=\"{place}\"}}"
        ))
    }
}

/// The segments of one chain tile (from, to] from its first segment on: every revision
/// once, in order; returns the last revision and the largest segment's encoded size.
fn check_tiling(segments: &[(i64, i64, Vec<Record>)]) -> (i64, usize) {
    let mut at = segments[0].0;
    let mut revisions = Vec::new();
    let mut largest = 0;
    for (from, to, records) in segments {
        assert_eq!(*from, at, "segment ({from}, {to}] after {at}");
        at = *to;
        largest = largest.max(records.iter().map(Record::encoded_len).sum::<usize>());
        revisions.extend(records.iter().filter_map(|r| match r {
            Record::Revision { revision, .. } => Some(*revision),
            _ => None,
        }));
    }
    let expected: Vec<i64> = (segments[0].0 + 1..=at).collect();
    assert_eq!(revisions, expected, "every revision once, in order");
    (at, largest)
}

/// SeaweedFS is stopped for 15 s under 80 KiB/s of writes, with a memory buffer of one
/// 64 KiB segment: the sealed segments go to 0600 spool files meanwhile (with memory
/// alone the chain would break within two seconds); once the storage is back they are
/// uploaded in order, each at most about a segment, and removed. No gap, no break; the
/// buffered-bytes gauges rise and fall back to 0.
#[test]
fn a_storage_outage_longer_than_memory_spills_to_the_spool_and_loses_nothing() {
    let mut b = SpoolBench::start(16 << 20);
    let (stop, writer) = b.writer();
    std::thread::sleep(Duration::from_secs(3));
    b.s3.stop();
    let stopped = Instant::now();
    let (mut top_memory, mut top_spool, mut most_files) = (0.0f64, 0.0f64, 0usize);
    while stopped.elapsed() < Duration::from_secs(15) {
        top_memory = top_memory.max(b.buffered("memory"));
        top_spool = top_spool.max(b.buffered("spool"));
        let files = b.spool_files();
        for (name, mode) in &files {
            assert_eq!(*mode, 0o600, "{name} has mode {mode:o}");
        }
        most_files = most_files.max(files.len());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        b.daemon.metric("lifeboat_changes_chain_breaks_total"),
        0.0,
        "{}",
        b.daemon.log_text()
    );
    assert!(
        most_files >= 5,
        "only {most_files} spool files while the storage was away"
    );
    assert!(
        top_memory > 0.0 && top_spool > SMALL as f64,
        "buffered {top_memory} bytes in memory, {top_spool} in the spool"
    );
    b.s3.restart();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let puts = writer.join().expect("writer");
    let rt = support::runtime();
    let mut c = rt.block_on(workload::connect(&b.cluster));
    let last = rt.block_on(now_revision(&mut c));
    wait_until(Duration::from_secs(60), "the recorder to catch up", || {
        b.daemon.metric("lifeboat_changes_durable_revision") >= last as f64
    });
    wait_until(Duration::from_secs(10), "the spool to empty", || {
        b.spool_files().is_empty() && b.buffered("memory") == 0.0 && b.buffered("spool") == 0.0
    });
    let metrics = b.daemon.metrics();
    assert!(
        metrics.contains("lifeboat_changes_chain_breaks_total 0\n"),
        "{metrics}"
    );
    assert!(
        b.daemon.metric("lifeboat_changes_flush_failures_total") >= 1.0,
        "{metrics}"
    );
    let chains = rt.block_on(recorded_with(&b.storage, &s3_options(&b.s3)));
    assert_eq!(chains.len(), 1, "{:?}", chains.keys());
    let segments = chains.values().next().expect("chain");
    let (at, largest) = check_tiling(segments);
    assert!(at >= last && segments[0].0 <= b.base);
    // A segment is sealed once it reaches the limit: at most one revision (2 KiB) over.
    assert!(
        largest <= SMALL + 4096,
        "a segment of {largest} bytes, the limit is {SMALL}"
    );
    let during = segments
        .iter()
        .filter(|(from, to, _)| *to > b.base && *from < last)
        .count();
    assert!(
        during >= 15,
        "the catch-up wrote {during} segments: one per second at least"
    );
    assert!(puts > 600, "the writer made {puts} puts");
    b.s3.stop();
}

/// As above with a spool of 256 KiB: spool files appear, then the outage outlasts memory
/// and spool together: the chain breaks (logged naming both limits, counted, /readyz
/// 503), its spool files are removed at once, and when the storage is back a new full
/// backup starts a new chain; the old one has no gap up to where it ended.
#[test]
fn a_storage_outage_longer_than_memory_and_spool_breaks_the_chain() {
    let mut b = SpoolBench::start(256 << 10);
    let (stop, writer) = b.writer();
    std::thread::sleep(Duration::from_secs(3));
    b.s3.stop();
    let mut most_files = 0;
    wait_until(Duration::from_secs(30), "the chain to break", || {
        most_files = most_files.max(b.spool_files().len());
        b.daemon.metric("lifeboat_changes_chain_breaks_total") >= 1.0
    });
    let broke_at = {
        let rt = support::runtime();
        let mut c = rt.block_on(workload::connect(&b.cluster));
        rt.block_on(now_revision(&mut c))
    };
    assert!(
        most_files >= 1,
        "the chain broke before anything went to the spool"
    );
    assert_eq!(
        b.spool_files(),
        [],
        "the broken chain's spool files are removed"
    );
    let log = b.daemon.log_text();
    assert!(
        log.contains("the chain is broken")
            && log.contains("max-buffer-bytes")
            && log.contains("max-spool-bytes"),
        "{log}"
    );
    assert_eq!(b.daemon.metric("lifeboat_changes_broken"), 1.0);
    let (code, body) = http_get(b.daemon.port, "/readyz").expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("change log is broken"), "{body}");
    assert_eq!((b.buffered("memory"), b.buffered("spool")), (0.0, 0.0));
    b.s3.restart();
    wait_until(Duration::from_secs(60), "a new chain", || {
        b.daemon.metric("lifeboat_changes_broken") == 0.0
            && b.daemon.metric("lifeboat_changes_recording") == 1.0
    });
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    let (code, body) = http_get(b.daemon.port, "/readyz").expect("readyz");
    assert_eq!(code, 200, "{body}");
    let backups = list_json(&b.storage, &b.env);
    assert_eq!(backups.len(), 2, "a new full backup started the new chain");
    let newest = backups[0]["revision"].as_i64().expect("revision");
    assert!(
        newest >= broke_at,
        "the new chain starts at {newest}, the break was at {broke_at}"
    );
    let rt = support::runtime();
    let chains = rt.block_on(recorded_with(&b.storage, &s3_options(&b.s3)));
    assert_eq!(
        chains.len(),
        2,
        "the old chain and a new one: {:?}",
        chains.keys()
    );
    let old = &chains[backups[1]["id"].as_str().expect("id")];
    let (old_end, _) = check_tiling(old);
    assert!(
        old_end > b.base && old_end < broke_at,
        "the old chain ends at {old_end}"
    );
    let new = &chains[backups[0]["id"].as_str().expect("id")];
    check_tiling(new);
    assert_eq!(b.spool_files(), []);
    b.s3.stop();
}

/// Two daemons, one leading and recording; the leader is killed (SIGKILL) while a writer
/// runs: the other takes over within the election TTL and continues the same chain from
/// the last durable revision, with no gap and no revision twice; a point written while
/// nobody recorded restores exactly.
#[test]
fn the_next_leader_continues_the_chain_without_gap_or_overlap() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let mut daemons: Vec<Option<Daemon>> = (0..2)
        .map(|i| {
            let spool = dir.path().join(format!("spool{i}"));
            std::fs::create_dir(&spool).expect("spool dir");
            let cfg = config(&cluster, &storage, &spool)
                .replace("leader-election = false", "lease-ttl = \"3s\"");
            Some(Daemon::start(dir.path(), &format!("d{i}"), &cfg, &[]))
        })
        .collect();
    let recording = |ds: &[Option<Daemon>]| -> Vec<usize> {
        (0..ds.len())
            .filter(|&i| {
                ds[i]
                    .as_ref()
                    .is_some_and(|d| d.metric("lifeboat_changes_recording") == 1.0)
            })
            .collect()
    };
    wait_until(Duration::from_secs(60), "one daemon recording", || {
        recording(&daemons).len() == 1
    });
    let leader = recording(&daemons)[0];
    let endpoints = cluster.endpoints();
    let (stop, writer) = spawn_writer(endpoints, "/registry/pods/ns/p", 300, 20);
    std::thread::sleep(Duration::from_secs(3));
    let rt = support::runtime();
    let mut c = rt.block_on(workload::connect(&cluster));
    let durable_before = daemons[leader]
        .as_ref()
        .expect("leader")
        .metric("lifeboat_changes_durable_revision") as i64;
    daemons[leader] = None; // SIGKILL
    let killed_at = rt.block_on(now_revision(&mut c));
    let other = 1 - leader;
    wait_until(
        Duration::from_secs(30),
        "the other daemon to take over",
        || recording(&daemons) == vec![other],
    );
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    let last = rt.block_on(now_revision(&mut c));
    let d = daemons[other].as_ref().expect("new leader");
    wait_until(
        Duration::from_secs(30),
        "the new leader to reach the last revision",
        || d.metric("lifeboat_changes_durable_revision") >= last as f64,
    );
    let chains = rt.block_on(recorded(&storage));
    assert_eq!(
        chains.len(),
        1,
        "the same chain goes on: {:?}",
        chains.keys()
    );
    let segments = chains.values().next().expect("chain");
    let base = segments[0].0;
    let mut at = base;
    let mut revisions = Vec::new();
    for (from, to, records) in segments {
        assert_eq!(*from, at, "segment ({from}, {to}] after {at}");
        at = *to;
        revisions.extend(records.iter().filter_map(|r| match r {
            Record::Revision { revision, .. } => Some(*revision),
            _ => None,
        }));
    }
    let expected: Vec<i64> = (base + 1..=at).collect();
    assert_eq!(
        revisions, expected,
        "every revision once, in order, across the hand-over"
    );
    assert!(
        at >= last && durable_before < killed_at,
        "durable {durable_before}, killed at {killed_at}"
    );
    // A point in the hand-over window: written after the last durable revision of the
    // old leader, before the new one recorded.
    let inside = (durable_before + killed_at) / 2 + 1;
    restore_to_point(
        &cluster,
        &storage,
        dir.path(),
        ("--to-revision", inside.to_string()),
        inside,
    );

    // Overlapping segments, as two recorders write them around a hand-over: a copy that
    // agrees revision for revision is accepted; one that differs ends the chain's
    // coverage where the two begin, and says so.
    let repo = Repository::open(&storage, &HashMap::new(), "default").expect("open");
    let with_revisions: Vec<_> = segments.iter().filter(|(f, t, _)| t > f).collect();
    assert!(with_revisions.len() >= 2);
    let (a, b) = (
        with_revisions[with_revisions.len() - 2],
        with_revisions[with_revisions.len() - 1],
    );
    let (p, r) = (a.0, b.1);
    let copy: Vec<Record> =
        a.2.iter()
            .chain(&b.2)
            .filter(|x| matches!(x, Record::Revision { .. }))
            .cloned()
            .collect();
    let chain_id = chains.keys().next().expect("chain").clone();
    let cluster_id = list_json(&storage, &[])[0]["cluster_id"]
        .as_str()
        .expect("cluster id")
        .to_owned();
    let writer = |w: &str| store::ChainWriter {
        cluster_id: cluster_id.clone(),
        chain: chain_id.clone(),
        base_revision: base,
        writer: w.to_owned(),
        zstd_level: 3,
        recipients: vec![],
    };
    rt.block_on(store::put_segment(
        &repo,
        &writer("0000beef"),
        (p, r),
        &copy,
    ))
    .expect("plant a copy");
    let windows = |storage: &str| -> serde_json::Value {
        let out = support::lifeboat::ok(support::lifeboat::run(support::lifeboat::lifeboat(
            &["list", "--changes", "--storage", storage, "-w", "json"],
            &[],
        )));
        serde_json::from_str(out.trim()).expect("json")
    };
    let w = windows(&storage);
    assert!(
        w[0]["problem"].is_null(),
        "an agreeing copy is accepted: {w}"
    );
    assert_eq!(w[0]["to_revision"].as_i64(), Some(at), "{w}");
    restore_to_point(
        &cluster,
        &storage,
        dir.path(),
        ("--to-revision", r.to_string()),
        r,
    );
    let mut tampered = copy.clone();
    if let Some(Record::Revision { events, .. }) = tampered.last_mut() {
        events[0].value = b"not what etcd said".to_vec();
    }
    rt.block_on(store::put_segment(
        &repo,
        &writer("0000dead"),
        (p, r),
        &tampered,
    ))
    .expect("plant a differing copy");
    let w = windows(&storage);
    let problem = w[0]["problem"].as_str().unwrap_or_default().to_owned();
    assert!(
        problem.contains("disagrees with the chain at revision"),
        "{w}"
    );
    assert!(
        w[0]["to_revision"].as_i64().expect("to") <= p,
        "coverage ends where the histories part: {w}"
    );
    let never = dir.path().join("never.db");
    let res = support::lifeboat::run(support::lifeboat::lifeboat(
        &[
            "fetch",
            "--to-revision",
            &r.to_string(),
            "--out",
            never.to_str().expect("utf-8"),
            "--storage",
            &storage,
        ],
        &[],
    ));
    assert_eq!(
        res.status.code(),
        Some(1),
        "{}",
        support::lifeboat::text(&res.stderr)
    );
    assert!(support::lifeboat::text(&res.stderr).contains("not covered by the change log"));
}

/// The chain proof: a second full backup is compared with the first one plus the change
/// log replayed up to its revision. It passes on the chain as recorded and fails, naming
/// the key, when a segment was replaced by one with a changed value (and valid checksums).
#[test]
fn the_chain_proof_passes_on_a_good_chain_and_fails_on_a_tampered_segment() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let rt = support::runtime();
    let mut c = rt.block_on(workload::connect(&cluster));
    rt.block_on(async { c.put("/registry/a", "1", None).await.expect("put") });
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let daemon = Daemon::start(
        dir.path(),
        "d",
        &config(&cluster, &storage, dir.path()),
        &[],
    );
    wait_until(Duration::from_secs(60), "recording", || {
        daemon.metric("lifeboat_changes_recording") == 1.0
    });
    rt.block_on(async {
        workload::kubernetes_like(&mut c, 2, 10).await;
        let lease = c.lease_grant(600, None).await.expect("grant").id();
        c.put(
            "/registry/leases/kube-node-lease/n1",
            "renewed",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put on lease");
        c.put("/registry/proof/last", "the real value", None)
            .await
            .expect("put");
    });
    let last = rt.block_on(now_revision(&mut c));
    wait_until(Duration::from_secs(30), "durable", || {
        daemon.metric("lifeboat_changes_durable_revision") >= last as f64
    });
    support::lifeboat::ok(support::lifeboat::run(support::lifeboat::lifeboat(
        &[
            "backup",
            "--endpoints",
            &cluster.endpoints()[0],
            "--storage",
            &storage,
        ],
        &[],
    )));
    drop(daemon);
    let cfg = tools_config(dir.path(), &storage);
    let drill = || {
        support::lifeboat::run(support::lifeboat::lifeboat(
            &[
                "restore",
                "drill",
                "--chain",
                "--backup",
                "latest",
                "--config",
                cfg.to_str().expect("utf-8"),
                "-w",
                "json",
            ],
            &[],
        ))
    };
    let good = drill();
    let text = support::lifeboat::text(&good.stdout);
    assert!(
        good.status.success(),
        "{}",
        support::lifeboat::text(&good.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    assert!(
        report["keys_compared"].as_u64().expect("keys") > 20,
        "{report}"
    );
    assert!(
        report["revisions_replayed"].as_u64().expect("revisions") >= 3,
        "{report}"
    );
    assert!(report["hash_kv"].is_u64(), "HashKV compared: {report}");
    // Replace the segment holding the last write by one that says something else.
    let repo = Repository::open(&storage, &HashMap::new(), "default").expect("open");
    let listed = rt
        .block_on(store::list_segments(&repo, None))
        .expect("list");
    let m = listed
        .iter()
        .find_map(|l| match l {
            Listed::Segment(m) if m.from_revision < last && last <= m.to_revision => {
                Some(m.clone())
            }
            _ => None,
        })
        .expect("the segment with the last revision");
    let mut records = rt
        .block_on(store::read_segment(&repo, &m, None))
        .expect("read");
    for r in &mut records {
        if let Record::Revision {
            revision, events, ..
        } = r
            && *revision == last
        {
            events[0].value = b"a forged value".to_vec();
        }
    }
    let w = store::ChainWriter {
        cluster_id: m.cluster_id.clone(),
        chain: m.chain.clone(),
        base_revision: m.base_revision,
        writer: m.writer.clone(),
        zstd_level: 3,
        recipients: vec![],
    };
    rt.block_on(store::put_segment(
        &repo,
        &w,
        (m.from_revision, m.to_revision),
        &records,
    ))
    .expect("rewrite");
    let bad = drill();
    let err = support::lifeboat::text(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not give backup") && err.contains("/registry/proof/last"),
        "{err}"
    );
}

/// The events of revision `r` among a segment's records.
fn events_of(records: &mut [Record], r: i64) -> &mut Vec<Event> {
    records
        .iter_mut()
        .find_map(|rec| match rec {
            Record::Revision {
                revision, events, ..
            } if *revision == r => Some(events),
            _ => None,
        })
        .expect("the revision in its segment")
}

/// Rewrites the segment holding revision `r` with `change` applied to its records;
/// returns the segment and its original records.
fn rewrite_segment(
    rt: &tokio::runtime::Runtime,
    repo: &Repository,
    r: i64,
    change: impl FnOnce(&mut Vec<Record>),
) -> (store::SegmentManifest, Vec<Record>) {
    let m = rt
        .block_on(store::list_segments(repo, None))
        .expect("list")
        .into_iter()
        .find_map(|l| match l {
            Listed::Segment(m) if m.from_revision < r && r <= m.to_revision => Some(*m),
            _ => None,
        })
        .expect("the segment with the revision");
    let original = rt
        .block_on(store::read_segment(repo, &m, None))
        .expect("read");
    let mut records = original.clone();
    change(&mut records);
    put_segment_back(rt, repo, (m.clone(), records));
    (m, original)
}

/// Writes `records` as segment `m` again.
fn put_segment_back(
    rt: &tokio::runtime::Runtime,
    repo: &Repository,
    (m, records): (store::SegmentManifest, Vec<Record>),
) {
    let w = store::ChainWriter {
        cluster_id: m.cluster_id.clone(),
        chain: m.chain.clone(),
        base_revision: m.base_revision,
        writer: m.writer.clone(),
        zstd_level: 3,
        recipients: vec![],
    };
    rt.block_on(store::put_segment(
        repo,
        &w,
        (m.from_revision, m.to_revision),
        &records,
    ))
    .expect("rewrite");
}

/// The WAL replay has no transaction answering with its revision: the watch check after
/// etcd applied the entries is what sees a revision it skipped (with only a warning in
/// its log: a delete of nothing, a put on a lease it refused to grant) — every later one
/// shifts — and a recorded event etcd's own apply does not reproduce (a version the
/// revision count cannot show). Each fails the replay naming that revision; no file is
/// written.
#[test]
fn the_wal_replay_names_the_first_revision_etcd_did_not_apply() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let rt = support::runtime();
    let mut c = rt.block_on(workload::connect(&cluster));
    rt.block_on(async { c.put("/registry/a", "1", None).await.expect("put") });
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let daemon = Daemon::start(
        dir.path(),
        "d",
        &config(&cluster, &storage, dir.path()),
        &[],
    );
    wait_until(
        Duration::from_secs(60),
        "the first backup and the chain",
        || {
            daemon.metric("lifeboat_changes_recording") == 1.0
                && list_json(&storage, &[]).len() == 1
        },
    );
    let base = list_json(&storage, &[])[0]["revision"]
        .as_i64()
        .expect("revision");
    rt.block_on(async {
        for i in 0..12 {
            c.put(
                format!("/registry/configmaps/ns/cm{}", i % 4),
                format!("v{i}"),
                None,
            )
            .await
            .expect("put");
        }
    });
    let last = rt.block_on(now_revision(&mut c));
    assert_eq!(last, base + 12);
    wait_until(Duration::from_secs(30), "durable", || {
        daemon.metric("lifeboat_changes_durable_revision") >= last as f64
    });
    drop(daemon);
    let fetch_with = |name: &str, tool: EtcdVersion| {
        let cfg = tools_config_for(dir.path(), &storage, tool);
        let out = dir.path().join(name);
        let res = support::lifeboat::run(support::lifeboat::lifeboat(
            &[
                "fetch",
                "--to-revision",
                &last.to_string(),
                "--out",
                out.to_str().expect("utf-8"),
                "--config",
                cfg.to_str().expect("utf-8"),
                "-w",
                "json",
            ],
            &[],
        ));
        (res, out)
    };
    let fetch = |name: &str| fetch_with(name, EtcdVersion::V3_5_30);
    let (good, _) = fetch("good.db");
    let report: serde_json::Value =
        serde_json::from_str(support::lifeboat::ok(good).trim()).expect("json");
    assert_eq!(report["method"], "wal", "{report}");

    let repo = Repository::open(&storage, &HashMap::new(), "default").expect("open");
    let refused = |case: &str, r: i64| {
        let (res, out) = fetch(&format!("{case}.db"));
        let err = support::lifeboat::text(&res.stderr);
        assert_eq!(res.status.code(), Some(1), "{case}: {err}");
        assert!(
            err.contains(&format!("revision {r} differs from the change log")),
            "{case}: {err}"
        );
        assert!(!out.exists(), "{case}");
        err
    };

    // A delete of a key that does not exist: etcd creates no revision.
    let r = base + 3;
    let original = rewrite_segment(&rt, &repo, r, |records| {
        *events_of(records, r) = vec![Event {
            kind: EventKind::Delete,
            key: b"/registry/never/existed".to_vec(),
            value: vec![],
            create_revision: 0,
            mod_revision: r,
            version: 0,
            lease: 0,
        }]
    });
    let err = refused("delete-of-nothing", r);
    assert!(
        err.contains("the log delete \"/registry/never/existed\""),
        "{err}"
    );
    put_segment_back(&rt, &repo, original);

    // A put on a lease etcd refuses to grant (a TTL above its 9,000,000,000 s limit):
    // the grant and then the put are skipped.
    let r = base + 6;
    let lease = 0x1234_5678_9abc;
    let original = rewrite_segment(&rt, &repo, r, |records| {
        events_of(records, r)[0].lease = lease;
        records.insert(
            0,
            Record::Lease {
                id: lease,
                granted_ttl: 9_000_000_001,
                seen_ms: 1,
            },
        );
    });
    let err = refused("lease-never-granted", r);
    assert!(
        err.contains("etcd logged") && err.contains("lease not found"),
        "{err}"
    );
    put_segment_back(&rt, &repo, original);

    // A version etcd's apply does not give: every revision is there, only the watch
    // check sees it.
    let r = base + 9;
    let original = rewrite_segment(&rt, &repo, r, |records| {
        events_of(records, r)[0].version += 10
    });
    let err = refused("wrong-version", r);
    assert!(
        err.contains("version 3,") && err.contains("version 13,"),
        "{err}"
    );
    put_segment_back(&rt, &repo, original);

    let (again, _) = fetch("again.db");
    support::lifeboat::ok(again);

    // A revision of 11 MiB (eleven 1 MiB values more in one revision): etcd 3.5.30 reads
    // such a WAL record back, so it all goes through the WAL; etcd 3.5.1 reads none of
    // 10 MiB or more, so the revisions before it go through the WAL and the rest over
    // gRPC.
    let r = base + 6;
    let original = rewrite_segment(&rt, &repo, r, |records| {
        let events = events_of(records, r);
        for j in 0..11 {
            events.push(Event {
                kind: EventKind::Put,
                key: format!("/registry/big/{j}").into_bytes(),
                value: vec![b'x'; 1 << 20],
                create_revision: r,
                mod_revision: r,
                version: 1,
                lease: 0,
            });
        }
    });
    let report = |(res, out): (std::process::Output, std::path::PathBuf)| {
        let report: serde_json::Value =
            serde_json::from_str(support::lifeboat::ok(res).trim()).expect("json");
        assert!(out.exists());
        report
    };
    let new = report(fetch("large-3.5.30.db"));
    assert_eq!(new["method"], "wal", "{new}");
    let old = report(fetch_with("large-3.5.1.db", EtcdVersion::V3_5_1));
    assert_eq!(old["method"], "wal+grpc", "{old}");
    let why = old["grpc_reason"].as_str().expect("reason");
    assert!(
        why.contains(&format!("revision {r} "))
            && why.contains("etcd 3.5.1")
            && why.contains("10 MiB"),
        "{old}"
    );
    assert_eq!(
        old["revisions_replayed"].as_i64(),
        Some(last - base),
        "{old}"
    );
    put_segment_back(&rt, &repo, original);
}

/// `[changes] prove-backups`: after each scheduled backup the daemon proves the chain
/// from the backup before, and says so in its metrics.
#[test]
fn the_daemon_proves_the_chain_after_each_scheduled_backup() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let rt = support::runtime();
    let mut c = rt.block_on(workload::connect(&cluster));
    rt.block_on(async { workload::kubernetes_like(&mut c, 1, 5).await });
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let tool = EtcdVersion::V3_5_30;
    let cfg = config(&cluster, &storage, dir.path())
        .replace("schedule = \"0 0 0 1 1 *\"", "schedule = \"*/4 * * * * *\"")
        .replace(
            "[changes]\nenabled = true\n",
            "[changes]\nenabled = true\nprove-backups = true\n",
        )
        .replace(
            "[daemon]\n",
            &format!(
                "[drill]\netcd-binary = \"{}\"\netcdutl = \"{}\"\n[daemon]\n",
                tool.etcd().display(),
                tool.etcdutl().expect("etcdutl").display()
            ),
        );
    let daemon = Daemon::start(dir.path(), "d", &cfg, &[]);
    let writes = std::thread::spawn({
        let endpoints = cluster.endpoints();
        move || {
            support::runtime().block_on(async {
                let mut c = Client::connect(endpoints, None).await.expect("connect");
                for i in 0..200 {
                    c.put(
                        format!("/registry/configmaps/ns/cm{}", i % 40),
                        format!("v{i}"),
                        None,
                    )
                    .await
                    .expect("put");
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            })
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.metric("lifeboat_changes_proof_last_success") != 1.0 {
        assert!(
            Instant::now() < deadline,
            "no chain proof passed:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    writes.join().expect("writer");
    let metrics = daemon.metrics();
    assert!(
        metrics.contains("lifeboat_changes_proof_failures_total 0\n"),
        "{metrics}"
    );
    assert!(daemon.log_text().contains("chain proof passed"));
    assert!(
        daemon.metric("lifeboat_changes_proof_replay_revisions_per_second") > 0.0,
        "{metrics}"
    );
    drop(daemon);
    // One write after the last scheduled backup, recorded by a daemon that takes none: the
    // chain then reaches past the newest backup whatever the last tick did.
    let quiet = Daemon::start(
        dir.path(),
        "q",
        &config(&cluster, &storage, dir.path()),
        &[],
    );
    let revision = rt
        .block_on(c.put("/registry/configmaps/ns/after", "v", None))
        .expect("put")
        .header()
        .expect("header")
        .revision();
    wait_until(
        Duration::from_secs(60),
        "the last write to be durable",
        || quiet.metric("lifeboat_changes_durable_revision") >= revision as f64,
    );
    drop(quiet);
    // Retention keeps what the kept backups need: with only the newest backup kept, the
    // chain's coverage starts at it, and the segments before it are gone.
    let cfg = dir.path().join("prune.toml");
    std::fs::write(
        &cfg,
        format!("[storage]\nurl = \"{storage}\"\n[retention]\nkeep-last = 1\n"),
    )
    .expect("config");
    support::lifeboat::ok(support::lifeboat::run(support::lifeboat::lifeboat(
        &["prune", "--config", cfg.to_str().expect("utf-8")],
        &[],
    )));
    let newest = list_json(&storage, &[]);
    assert_eq!(newest.len(), 1);
    let kept_revision = newest[0]["store_revision"]
        .as_i64()
        .expect("store revision");
    let out = support::lifeboat::ok(support::lifeboat::run(support::lifeboat::lifeboat(
        &["list", "--changes", "--storage", &storage, "-w", "json"],
        &[],
    )));
    let w: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(w.as_array().map(Vec::len), Some(1), "{w}");
    assert!(w[0]["problem"].is_null(), "{w}");
    assert!(
        w[0]["from_revision"].as_i64().expect("from") <= kept_revision,
        "{w}"
    );
    assert!(
        w[0]["from_revision"].as_i64().expect("from")
            > w[0]["base_revision"].as_i64().expect("base"),
        "segments before the kept backup were pruned: {w}"
    );
    assert_eq!(w[0]["backups"][0], newest[0]["id"], "{w}");
}
