//! `lifeboat daemon` against a real 3-member etcd cluster and real SeaweedFS: backups on
//! schedule, overlapping ticks skipped and counted, one leader among three daemons with
//! takeover after a kill, /metrics agreeing with `list`, /readyz following max-age, and
//! SIGTERM in the middle of a large backup leaving nothing behind.

use crate::support;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::daemon::{Daemon, quoted, signal, wait_until};
use support::etcd::Cluster;
use support::lifeboat::{
    filer_entries, files_under, http_get, lifeboat, metric, ok, run, s3_objects, streamed_large_db,
    wait_for_stream,
};
use support::process::{kill_child, spawn_guarded, wait_timeout};
use support::s3::SeaweedFs;
use support::tools::EtcdVersion;
use support::workload;

fn list(storage: &str, env: &[(String, String)]) -> Vec<Value> {
    support::lifeboat::list_json(storage, env)
}

fn started_at(m: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(m["started_at"].as_str().expect("started_at"))
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc)
}

fn fill(cluster: &Cluster) {
    support::runtime().block_on(async {
        let mut c = workload::connect(cluster).await;
        workload::kubernetes_like(&mut c, 2, 10).await;
    });
}

#[test]
fn scheduled_backups_run_on_time_and_overlapping_ticks_are_skipped() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 3);
    fill(&cluster);
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let config = format!(
        "[etcd]\nendpoints = [{}]\n[storage]\nurl = \"{storage}\"\n\
         [backup]\nschedule = \"*/2 * * * * *\"\nspool-dir = \"{}\"\n\
         [daemon]\nleader-election = false\n",
        quoted(&cluster.endpoints()),
        dir.path().display()
    );
    let daemon = Daemon::start(dir.path(), "d", &config, &[]);
    wait_until(Duration::from_secs(30), "three scheduled backups", || {
        list(&storage, &[]).len() >= 3
    });
    // On time: each backup starts within a second of its even-second tick, one per tick.
    let backups = list(&storage, &[]);
    let mut ticks = BTreeSet::new();
    for m in &backups {
        let t = started_at(m);
        assert!(
            t.timestamp() % 2 == 0 && t.timestamp_subsec_millis() < 1000,
            "backup {} started off schedule at {t}",
            m["id"]
        );
        assert!(ticks.insert(t.timestamp()), "two backups for tick {t}");
    }

    // Freeze every member: the next backup hangs, and the ticks meanwhile are skipped.
    let pids = cluster.pids();
    for &p in &pids {
        signal(p, libc::SIGSTOP);
    }
    std::thread::sleep(Duration::from_secs(7));
    let skipped = daemon.metric("lifeboat_skipped_ticks_total{task=\"backup\"}");
    for &p in &pids {
        signal(p, libc::SIGCONT);
    }
    assert!(
        skipped >= 2.0,
        "ticks during a hung backup were not skipped ({skipped}):\n{}",
        daemon.log_text()
    );
    assert!(daemon.log_text().contains("backup tick skipped"));
    // Scheduling carries on afterwards.
    let before = list(&storage, &[]).len();
    wait_until(Duration::from_secs(30), "backups after the freeze", || {
        list(&storage, &[]).len() >= before + 2
    });
    let m = daemon.metrics();
    let committed = metric(&m, "lifeboat_backups_total").expect("backups_total");
    assert_eq!(
        committed as usize,
        list(&storage, &[]).len(),
        "lifeboat_backups_total vs list:\n{m}"
    );
}

#[test]
fn metrics_agree_with_list_and_readyz_follows_max_age() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 3);
    fill(&cluster);
    let s3 = SeaweedFs::start();
    let env = s3.aws_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("s3://{}/etcd", s3.bucket);
    // A schedule that does not fire during the test: the backups come from the CLI.
    let config = format!(
        "[etcd]\nendpoints = [{}]\n[storage]\nurl = \"{storage}\"\n\
         [backup]\nschedule = \"0 0 0 1 1 *\"\nspool-dir = \"{}\"\n\
         [verify]\nschedule = \"*/2 * * * * *\"\n\
         [daemon]\nleader-election = false\nmax-age = \"6s\"\n",
        quoted(&cluster.endpoints()),
        dir.path().display()
    );
    // systemd's readiness protocol, as Type=notify uses it.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut daemon_env = env.clone();
    daemon_env.push((
        "NOTIFY_SOCKET".to_owned(),
        notify_path.to_str().expect("utf-8").to_owned(),
    ));
    let mut daemon = Daemon::start(dir.path(), "d", &config, &daemon_env);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 from the daemon");
    assert_eq!(&buf[..n], b"READY=1");
    let (code, body) = http_get(daemon.port, "/readyz").expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no backup"), "{body}");

    let endpoints = cluster.endpoints().join(",");
    for _ in 0..2 {
        ok(run(lifeboat(
            &["backup", "--endpoints", &endpoints, "--storage", &storage],
            &env,
        )));
    }
    let backups = list(&storage, &env);
    wait_until(Duration::from_secs(5), "/readyz to turn ready", || {
        http_get(daemon.port, "/readyz").is_some_and(|(c, _)| c == 200)
            && metric(&daemon.metrics(), "lifeboat_storage_backups") == Some(2.0)
    });
    let m = daemon.metrics();
    assert_eq!(metric(&m, "lifeboat_storage_backups"), Some(2.0), "{m}");
    let newest = &backups[0];
    assert_eq!(
        metric(&m, "lifeboat_storage_newest_backup_revision"),
        newest["revision"].as_f64(),
        "{m}"
    );
    let finished = chrono::DateTime::parse_from_rfc3339(newest["finished_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis() as f64
        / 1000.0;
    let ts = metric(&m, "lifeboat_storage_newest_backup_timestamp_seconds").unwrap();
    assert!((ts - finished).abs() < 0.01, "{ts} vs {finished}");
    let age = metric(&m, "lifeboat_storage_newest_backup_age_seconds").unwrap();
    assert!((0.0..6.0).contains(&age), "age {age}");
    assert_eq!(metric(&m, "lifeboat_leader"), Some(1.0), "{m}");
    // The scheduled verify checks the newest backup.
    wait_until(
        Duration::from_secs(6),
        "a successful scheduled verify",
        || daemon.metric("lifeboat_verify_last_attempt_success") == 1.0,
    );
    assert!(daemon.metric("lifeboat_verify_last_success_timestamp_seconds") > 0.0);

    // Issue 9: a manifest whose data object is gone is not a backup. Without the newest
    // one's data, the metrics count one backup and call the older one the newest.
    let key = format!(
        "etcd/default/{}",
        newest["object"]["key"].as_str().expect("key")
    );
    support::runtime().block_on(async {
        use object_store::ObjectStoreExt;
        s3.object_store()
            .delete(&object_store::path::Path::from(key))
            .await
            .expect("delete the newest data object");
    });
    let older = &backups[1];
    let older_finished =
        chrono::DateTime::parse_from_rfc3339(older["finished_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis() as f64
            / 1000.0;
    wait_until(
        Duration::from_secs(5),
        "the metrics to drop the backup without data",
        || {
            let m = daemon.metrics();
            metric(&m, "lifeboat_storage_backups") == Some(1.0)
                && metric(&m, "lifeboat_storage_newest_backup_timestamp_seconds")
                    .is_some_and(|t| (t - older_finished).abs() < 0.01)
        },
    );

    // Once the newest backup is older than max-age, /readyz says so.
    let became_stale = Instant::now();
    wait_until(Duration::from_secs(10), "/readyz to turn stale", || {
        http_get(daemon.port, "/readyz").is_some_and(|(c, _)| c == 503)
    });
    let (_, body) = http_get(daemon.port, "/readyz").unwrap();
    assert!(body.contains("more than max-age"), "{body}");
    assert!(
        became_stale.elapsed() < Duration::from_secs(7),
        "took {:?}",
        became_stale.elapsed()
    );
    let (code, _) = http_get(daemon.port, "/healthz").unwrap();
    assert_eq!(code, 200);

    signal(daemon.child.id(), libc::SIGTERM);
    let n = notify.recv(&mut buf).expect("STOPPING=1 from the daemon");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let status = wait_timeout(&mut daemon.child, Duration::from_secs(10)).expect("wait");
    assert!(status.is_some_and(|s| s.success()), "{}", daemon.log_text());
}

#[test]
fn one_leader_backs_up_and_another_takes_over_within_the_ttl() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 3);
    fill(&cluster);
    let s3 = SeaweedFs::start();
    let env = s3.aws_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("s3://{}/etcd", s3.bucket);
    let ttl = 3;
    let mut daemons: Vec<Daemon> = (0..3)
        .map(|i| {
            // Each daemon talks to "its" node's member first, as on control-plane nodes.
            let mut endpoints = cluster.endpoints();
            endpoints.rotate_left(i);
            let spool = dir.path().join(format!("spool{i}"));
            std::fs::create_dir(&spool).expect("spool dir");
            let config = format!(
                "[etcd]\nendpoints = [{}]\n[storage]\nurl = \"{storage}\"\n\
                 [backup]\nschedule = \"*/2 * * * * *\"\nspool-dir = \"{}\"\n\
                 [daemon]\nlease-ttl = \"{ttl}s\"\n",
                quoted(&endpoints),
                spool.display()
            );
            Daemon::start(dir.path(), &format!("d{i}"), &config, &env)
        })
        .collect();
    wait_until(Duration::from_secs(30), "three backups", || {
        list(&storage, &env).len() >= 3
    });
    let leaders = |ds: &[Daemon]| -> Vec<usize> {
        (0..ds.len())
            .filter(|&i| ds[i].metric("lifeboat_leader") == 1.0)
            .collect()
    };
    let now_leading = leaders(&daemons);
    assert_eq!(now_leading.len(), 1, "leaders: {now_leading:?}");
    let leader = now_leading[0];
    for (i, d) in daemons.iter().enumerate() {
        let committed = d.metric("lifeboat_backups_total");
        if i == leader {
            assert!(committed >= 3.0, "the leader committed {committed}");
        } else {
            assert_eq!(committed, 0.0, "daemon {i} is not the leader but backed up");
        }
    }

    // Kill the leader outright: no resignation, its lease must expire.
    kill_child(&mut daemons[leader].child);
    let killed = Instant::now();
    let killed_at = chrono::Utc::now();
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut successor = None;
    wait_until(Duration::from_secs(20), "a new leader", || {
        successor = rest
            .iter()
            .copied()
            .find(|&i| daemons[i].metric("lifeboat_leader") == 1.0);
        successor.is_some()
    });
    let takeover = killed.elapsed();
    assert!(
        takeover <= Duration::from_secs(ttl + 1),
        "takeover took {takeover:?} with a {ttl} s lease"
    );
    let successor = successor.unwrap();
    wait_until(
        Duration::from_secs(15),
        "a backup by the new leader",
        || {
            list(&storage, &env)
                .iter()
                .any(|m| started_at(m) > killed_at)
        },
    );
    assert_eq!(
        leaders(&daemons[..])
            .into_iter()
            .filter(|i| *i != leader)
            .count(),
        1
    );
    assert!(daemons[successor].metric("lifeboat_backups_total") >= 1.0);

    // No tick produced two backups.
    let mut ticks = BTreeSet::new();
    for m in list(&storage, &env) {
        let t = started_at(&m).timestamp() / 2;
        assert!(ticks.insert(t), "two backups in one tick: {}", m["id"]);
    }
    eprintln!("takeover after a kill: {takeover:?} (lease TTL {ttl} s)");
}

#[test]
fn sigterm_during_a_large_backup_exits_in_time_and_leaves_nothing() {
    let cluster = workload::large_cluster(300 << 20);
    let s3 = SeaweedFs::start();
    let env = s3.aws_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).expect("spool dir");
    let storage = format!("s3://{}/etcd", s3.bucket);
    let config = format!(
        "[etcd]\nendpoints = [{}]\n[storage]\nurl = \"{storage}\"\n\
         [backup]\nschedule = \"* * * * * *\"\nspool-dir = \"{}\"\n\
         [daemon]\nleader-election = false\nshutdown-timeout = \"20s\"\n",
        quoted(&cluster.endpoints()),
        spool.display()
    );
    let mut daemon = Daemon::start(dir.path(), "d", &config, &env);
    wait_for_stream(&mut daemon.child, &spool, 32 << 20);
    let uploads_dir = format!("/buckets/{}/.uploads/", s3.bucket);
    wait_until(Duration::from_secs(30), "a multipart upload", || {
        !filer_entries(&s3, &uploads_dir).is_empty()
    });
    let sent = Instant::now();
    signal(daemon.child.id(), libc::SIGTERM);
    let status = wait_timeout(&mut daemon.child, Duration::from_secs(30)).expect("wait");
    let took = sent.elapsed();
    let log = daemon.log_text();
    let status = status.unwrap_or_else(|| panic!("still running 30 s after SIGTERM:\n{log}"));
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert!(log.contains("cancelled"), "{log}");
    assert!(
        files_under(&spool).is_empty(),
        "spool left: {:?}",
        files_under(&spool)
    );
    let objects = s3_objects(&s3);
    assert!(objects.is_empty(), "objects left: {objects:?}");
    assert!(
        filer_entries(&s3, &uploads_dir).is_empty(),
        "multipart upload left:\n{log}"
    );
    eprintln!("SIGTERM to exit during a 300 MiB backup: {took:?}");

    // The one-shot command (what a CronJob runs) cancels just as cleanly, exit code 1.
    let endpoints = cluster.endpoints().join(",");
    let mut cmd = lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            &storage,
            "--spool-dir",
            spool.to_str().expect("utf-8"),
        ],
        &env,
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_guarded(cmd).expect("spawn backup");
    wait_for_stream(&mut child, &spool, 32 << 20);
    wait_until(Duration::from_secs(30), "a multipart upload", || {
        !filer_entries(&s3, &uploads_dir).is_empty()
    });
    signal(child.id(), libc::SIGTERM);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cancelled"), "{err}");
    assert!(files_under(&spool).is_empty(), "spool left");
    assert!(s3_objects(&s3).is_empty(), "objects left");
    assert!(
        filer_entries(&s3, &uploads_dir).is_empty(),
        "multipart upload left"
    );
}

#[test]
fn a_failed_backup_is_retried_before_the_next_tick() {
    let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    fill(&cluster);
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let config = format!(
        "[etcd]\nendpoints = [{}]\ndial-timeout = \"1s\"\n[storage]\nurl = \"{storage}\"\n\
         [backup]\nschedule = \"*/20 * * * * *\"\nspool-dir = \"{}\"\nretries = 2\n\
         [daemon]\nleader-election = false\n",
        quoted(&cluster.endpoints()),
        dir.path().display()
    );
    cluster.stop(0);
    let daemon = Daemon::start(dir.path(), "d", &config, &[]);
    // The first tick fails (etcd is down); the retry 10 s later finds it back. The first
    // tick comes within 20 s; the margin is for a loaded machine.
    wait_until(Duration::from_secs(45), "a failed attempt", || {
        daemon.metric("lifeboat_backup_failures_total{reason=\"etcd\"}") >= 1.0
    });
    let failed_at = Instant::now();
    cluster.restart(0);
    wait_until(Duration::from_secs(15), "the retried backup", || {
        list(&storage, &[]).len() == 1
    });
    assert!(
        failed_at.elapsed() < Duration::from_secs(15),
        "not retried before the next tick"
    );
    let m = daemon.metrics();
    assert_eq!(
        metric(&m, "lifeboat_backup_retries_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "lifeboat_backup_last_attempt_success"),
        Some(1.0),
        "{m}"
    );
    assert!(daemon.log_text().contains("backup failed"));
}

#[test]
fn the_daemon_refuses_a_bad_configuration_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("b").display());
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let cases = [
        ("no schedule", String::new(), "[backup] schedule is not set"),
        (
            "bad schedule",
            "[backup]\nschedule = \"61 * * * *\"\n".to_owned(),
            "61 * * * *",
        ),
        (
            "missing CA file",
            "[etcd]\ncacert = \"/nonexistent/ca.crt\"\n[backup]\nschedule = \"@hourly\"\n"
                .to_owned(),
            "/nonexistent/ca.crt",
        ),
        (
            "bad time zone",
            "[backup]\nschedule = \"@hourly\"\n[daemon]\ntimezone = \"Mars/Olympus\"\n".to_owned(),
            "Mars/Olympus",
        ),
        (
            "listen address in use",
            format!(
                "[backup]\nschedule = \"@hourly\"\n[daemon]\nlisten = \"127.0.0.1:{busy_port}\"\n"
            ),
            "[daemon] listen",
        ),
    ];
    for (what, body, expected) in cases {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("[storage]\nurl = \"{storage}\"\n{body}")).expect("write");
        let out = run(lifeboat(
            &["daemon", "--config", path.to_str().expect("utf-8")],
            &[],
        ));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(expected), "{what}: {err}");
    }
    let out = run(lifeboat(&["daemon"], &[]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

/// Issue 9: a leader whose election lease is revoked from outside while it streams a
/// large backup stops at once (backup cancelled through its failure path: no manifest,
/// no object, no multipart upload, no spool), the other daemon takes over, and no two
/// committed backups overlap in time.
#[test]
fn losing_leadership_cancels_the_running_backup() {
    let cluster = workload::large_cluster(300 << 20);
    let s3 = SeaweedFs::start();
    let env = s3.aws_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("s3://{}/etcd", s3.bucket);
    let mut spools = Vec::new();
    let mut daemons: Vec<Daemon> = (0..2)
        .map(|i| {
            let spool = dir.path().join(format!("spool{i}"));
            std::fs::create_dir(&spool).expect("spool dir");
            spools.push(spool.clone());
            let config = format!(
                "[etcd]\nendpoints = [{}]\n[storage]\nurl = \"{storage}\"\n\
                 [backup]\nschedule = \"*/3 * * * * *\"\nspool-dir = \"{}\"\nretries = 0\n\
                 [daemon]\nlease-ttl = \"4.5s\"\n",
                quoted(&cluster.endpoints()),
                spool.display()
            );
            Daemon::start(dir.path(), &format!("d{i}"), &config, &env)
        })
        .collect();
    // Whoever leads starts streaming into its spool.
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        let streaming = (0..2).find(|&i| streamed_large_db(&spools[i]) >= 32 << 20);
        if let Some(i) = streaming {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no daemon started a backup:\n{}\n{}",
            daemons[0].log_text(),
            daemons[1].log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let other = 1 - leader;
    // Revoke the leader's election lease, as an operator (or an expiry) would.
    let keys = cluster.etcdctl_ok(&["get", "--prefix", "/lifeboat/leader/", "-w", "json"]);
    let keys: Value = serde_json::from_str(&keys).expect("etcdctl JSON");
    let kvs = keys["kvs"].as_array().expect("election keys");
    let first = kvs
        .iter()
        .min_by_key(|kv| kv["create_revision"].as_i64().unwrap_or(i64::MAX))
        .expect("a leader key");
    let lease = format!("{:x}", first["lease"].as_i64().expect("lease id"));
    let revoked_at = chrono::Utc::now();
    cluster.etcdctl_ok(&["lease", "revoke", &lease]);

    wait_until(
        Duration::from_secs(10),
        "the old leader to cancel its backup",
        || daemons[leader].log_text().contains("no longer leads"),
    );
    wait_until(
        Duration::from_secs(10),
        "the old leader's spool to be removed",
        || files_under(&spools[leader]).is_empty(),
    );
    wait_until(
        Duration::from_secs(60),
        "a backup by the new leader",
        || daemons[other].metric("lifeboat_backups_total") >= 1.0,
    );
    for d in &mut daemons {
        kill_child(&mut d.child);
    }
    let log = daemons[leader].log_text();
    assert!(log.contains("cancelled"), "{log}");

    // No two committed backups overlap, and each committed one came from a leader.
    let backups = list(&storage, &env);
    let mut spans: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = backups
        .iter()
        .map(|m| {
            let t = |f: &str| {
                chrono::DateTime::parse_from_rfc3339(m[f].as_str().expect("time"))
                    .expect("RFC 3339")
                    .with_timezone(&chrono::Utc)
            };
            (t("started_at"), t("finished_at"))
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "backups overlap in time: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    assert!(
        spans.iter().any(|(start, _)| *start > revoked_at),
        "the new leader committed nothing after the revoke"
    );
    // The cancelled run left nothing: every object belongs to a committed backup.
    let objects = s3_objects(&s3);
    assert_eq!(objects.len(), 2 * backups.len(), "objects: {objects:?}");
    let uploads_dir = format!("/buckets/{}/.uploads/", s3.bucket);
    assert!(
        filer_entries(&s3, &uploads_dir).is_empty(),
        "multipart upload left:\n{log}"
    );
    assert!(files_under(&spools[leader]).is_empty());
}
