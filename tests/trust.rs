//! Issue 9: trust under faults, each fault injected for real.
//! - member choice: a member that lost its cluster (frozen peers) is never snapshotted;
//! - commit: a manifest PUT whose reply is lost leaves nothing that looks valid;
//! - "a backup exists only when manifest and data exist": retention and `latest`;
//! - manifests are untrusted input: a planted manifest is refused by name.

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::etcd::Cluster;
use support::faulty_proxy::FaultyProxy;
use support::lifeboat::{lifeboat, ok, run, s3_objects, text};
use support::s3::SeaweedFs;
use support::tools::EtcdVersion;
use support::workload;

fn fill(cluster: &Cluster) {
    support::runtime().block_on(async {
        let mut c = workload::connect(cluster).await;
        workload::kubernetes_like(&mut c, 2, 10).await;
    });
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a process this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// `fetch latest --out FILE -w json`: the fetched manifest and what was logged.
fn fetch_latest(storage: &str, out: &Path) -> (Value, String) {
    let done = run(lifeboat(
        &[
            "fetch",
            "latest",
            "--storage",
            storage,
            "--out",
            out.to_str().expect("utf-8"),
            "-w",
            "json",
        ],
        &[],
    ));
    let err = text(&done.stderr);
    (serde_json::from_str(&ok(done)).expect("fetch JSON"), err)
}

/// Runs lifeboat expecting `code`; returns what it logged.
fn fails(args: &[&str], code: i32) -> String {
    let out = run(lifeboat(args, &[]));
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "lifeboat {}: {err}",
        args.join(" ")
    );
    err
}

fn list(storage: &str, env: &[(String, String)]) -> Vec<Value> {
    support::lifeboat::list_json(storage, env)
}

/// A 3-member cluster with two members frozen past the election timeout: the third has
/// lost its leader. A backup from it must fail, naming the missing leader, whether it is
/// the only endpoint or one of three; once the two are thawed the same backup succeeds,
/// and the manifest records the linearizable read's revision.
#[test]
fn a_member_without_leader_is_never_snapshotted() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 3);
    fill(&cluster);
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let pids = cluster.pids();
    let third = cluster.member(2).client_url.clone();
    let all = cluster.endpoints().join(",");
    for &p in &pids[..2] {
        signal(p, libc::SIGSTOP);
    }
    // The default election timeout is 1 s; wait until the third says it has no leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = cluster
            .etcdctl_command(std::slice::from_ref(&third))
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .expect("etcdctl");
        let out = text(&st.stdout);
        if out.contains("no leader") || text(&st.stderr).contains("no leader") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the third member kept its leader: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for endpoints in [third.as_str(), all.as_str()] {
        let started = Instant::now();
        let err = fails(
            &[
                "backup",
                "--endpoints",
                endpoints,
                "--storage",
                &storage,
                "--dial-timeout",
                "1s",
                "--command-timeout",
                "2s",
            ],
            1,
        );
        assert!(
            err.contains("no leader"),
            "the error must name the missing leader: {err}"
        );
        assert!(
            err.contains(&third),
            "the error must name the endpoint: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "took {:?}",
            started.elapsed()
        );
    }
    assert!(list(&storage, &[]).is_empty(), "nothing may be stored");
    for &p in &pids[..2] {
        signal(p, libc::SIGCONT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = run(lifeboat(
            &[
                "backup",
                "--endpoints",
                &third,
                "--storage",
                &storage,
                "-w",
                "json",
            ],
            &[],
        ));
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let m: Value = serde_json::from_str(&ok(out)).expect("manifest JSON");
    let read = m["read_revision"].as_i64().expect("read_revision");
    assert!(
        read > 0 && m["revision"].as_i64().expect("revision") >= read,
        "{m}"
    );
}

/// A manifest PUT whose reply is lost (the server stored it, the client never heard):
/// the run fails, removes the manifest and the data object it wrote, says so, and an
/// earlier backup still verifies.
#[test]
fn a_lost_manifest_reply_leaves_nothing_that_looks_valid() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    fill(&cluster);
    let s3 = SeaweedFs::start();
    let url = format!("s3://{}/etcd", s3.bucket);
    let endpoints = cluster.endpoints().join(",");
    ok(run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &url],
        &s3.aws_env(),
    )));
    let before = s3_objects(&s3);
    assert_eq!(before.len(), 2);

    let upstream = s3.endpoint().trim_start_matches("http://").to_owned();
    let proxy = FaultyProxy::start(&upstream, |method, path| {
        method == "PUT" && path.contains("/manifests/")
    });
    let mut env = s3.aws_env();
    for (k, v) in &mut env {
        if k == "AWS_ENDPOINT" || k == "AWS_ENDPOINT_URL" {
            *v = proxy.endpoint();
        }
    }
    env.push(("LIFEBOAT_S3_RETRY_TIMEOUT".into(), "2s".into()));
    let out = run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &url],
        &env,
    ));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(proxy.lost() >= 1, "the fault was not injected");
    assert!(
        err.contains("not committed") && err.contains("were removed"),
        "the error must say the backup was not committed and what was removed: {err}"
    );
    let after: Vec<String> = s3_objects(&s3)
        .iter()
        .map(|m| m.location.to_string())
        .collect();
    let before: Vec<String> = before.iter().map(|m| m.location.to_string()).collect();
    assert_eq!(after, before, "only the earlier backup may remain");
    ok(run(lifeboat(
        &["verify", "latest", "--storage", &url],
        &s3.aws_env(),
    )));
}

/// Two backups; the newest loses its data object. It is listed as no-data, retention
/// with keep-last = 1 keeps the older, intact one (the only one that can be restored),
/// and `fetch latest` returns that one, with a warning naming the newer.
#[test]
fn a_manifest_without_data_never_costs_the_restorable_backup() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    fill(&cluster);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("backups");
    let storage = format!("file://{}", root.display());
    let endpoints = cluster.endpoints().join(",");
    for _ in 0..2 {
        ok(run(lifeboat(
            &["backup", "--endpoints", &endpoints, "--storage", &storage],
            &[],
        )));
    }
    let backups = list(&storage, &[]);
    let (newest, older) = (
        backups[0]["id"].as_str().expect("id").to_owned(),
        backups[1]["id"].as_str().expect("id").to_owned(),
    );
    let data = root
        .join("default/snapshots")
        .join(format!("{newest}.db.zst"));
    std::fs::remove_file(&data).expect("delete the newest data object");

    let states: Vec<(String, String)> = list(&storage, &[])
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or("").to_owned(),
                e["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (newest.clone(), "no-data".into()),
            (older.clone(), "restorable".into())
        ]
    );

    let config = dir.path().join("lifeboat.toml");
    std::fs::write(
        &config,
        format!("[storage]\nurl = \"{storage}\"\n[retention]\nkeep-last = 1\n"),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let out = ok(run(lifeboat(
        &["prune", "--config", config, "-w", "json"],
        &[],
    )));
    let plan: Value = serde_json::from_str(&out).expect("prune JSON");
    assert_eq!(
        plan["done"]["deleted_backups"],
        serde_json::json!([]),
        "{plan}"
    );
    assert!(
        root.join(format!("default/manifests/{older}.json"))
            .exists()
    );
    assert!(
        root.join(format!("default/snapshots/{older}.db.zst"))
            .exists()
    );

    let snap = dir.path().join("latest.db");
    let (fetched, err) = fetch_latest(&storage, &snap);
    assert_eq!(fetched["id"].as_str(), Some(older.as_str()), "{fetched}");
    assert!(
        err.contains(&newest),
        "the warning must name the newer backup: {err}"
    );
    // Asking for the broken one by name says what is wrong with it.
    let err = fails(&["verify", &newest, "--storage", &storage], 1);
    assert!(err.contains("is missing"), "{err}");
}

/// Writes a planted manifest into a local repository: a copy of a real one with the
/// given id and data key, filed under `file_id`.
fn plant(root: &Path, real: &Value, file_id: &str, id: &str, key: &str) {
    let mut m = real.clone();
    m["id"] = Value::from(id);
    m["object"]["key"] = Value::from(key);
    m["started_at"] = Value::from("2099-01-01T00:00:00.000Z");
    m["finished_at"] = Value::from("2099-01-01T00:00:01.000Z");
    let dir = root.join("default/manifests");
    std::fs::write(
        dir.join(format!("{file_id}.json")),
        serde_json::to_vec(&m).expect("json"),
    )
    .expect("plant manifest");
}

/// Manifests planted by whoever can write to the bucket, with `;`, `$( )` and `../` in
/// their id and key, and newer than every real backup: `list` marks each refused and
/// names why; `fetch latest` and `restore plan` use the newest real backup and name what
/// they refused; nothing runs and nothing is written outside the directories.
#[test]
fn planted_manifests_are_refused_by_name() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    fill(&cluster);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("backups");
    let storage = format!("file://{}", root.display());
    let endpoints = cluster.endpoints().join(",");
    ok(run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &storage],
        &[],
    )));
    let real = list(&storage, &[]).remove(0);
    let real_id = real["id"].as_str().expect("id").to_owned();
    let canary = dir.path().join("pwned");
    let evil = format!("x;touch {};", canary.display());
    // A file name cannot hold a `/`: this one would create the canary in the working
    // directory of whatever ran it.
    let subst = "$(touch lifeboat-pwned)".to_owned();
    // A file name that is an id, but the id inside is not.
    plant(
        &root,
        &real,
        "20990101T000000.000Z-00000001",
        &evil,
        &format!("snapshots/{evil}.db.zst"),
    );
    // The right id, a key escaping the directory.
    plant(
        &root,
        &real,
        "20990101T000000.000Z-00000002",
        "20990101T000000.000Z-00000002",
        "../../../escaped.db.zst",
    );
    // A file name that is not an id at all.
    plant(
        &root,
        &real,
        &subst,
        &subst,
        &format!("snapshots/{subst}.db.zst"),
    );

    let entries = list(&storage, &[]);
    let refused: Vec<&Value> = entries.iter().filter(|e| e["state"] == "refused").collect();
    assert_eq!(refused.len(), 3, "{entries:?}");
    for e in &refused {
        assert!(e["problem"].as_str().is_some_and(|p| !p.is_empty()), "{e}");
    }
    let out = run(lifeboat(
        &["list", "--storage", &storage, "-w", "table"],
        &[],
    ));
    let table = ok(out);
    assert!(
        table.contains("refused") && table.contains(&real_id),
        "{table}"
    );

    let snap = dir.path().join("out/latest.db");
    std::fs::create_dir_all(snap.parent().expect("parent")).expect("out dir");
    let (fetched, err) = fetch_latest(&storage, &snap);
    assert_eq!(fetched["id"].as_str(), Some(real_id.as_str()));
    for planted in [
        "20990101T000000.000Z-00000001",
        "20990101T000000.000Z-00000002",
    ] {
        assert!(
            err.contains(planted),
            "fetch must name what it refused ({planted}): {err}"
        );
    }
    // By name, each is refused with the reason.
    let planted = "20990101T000000.000Z-00000002";
    let err = fails(&["verify", planted, "--storage", &storage], 1);
    assert!(err.contains("data key"), "{err}");
    let err = fails(&["verify", &evil, "--storage", &storage], 2);
    assert!(err.contains("not a backup id"), "{err}");

    assert!(!canary.exists(), "a planted command ran");
    assert!(
        !Path::new("lifeboat-pwned").exists(),
        "a planted command ran"
    );
    assert!(!dir.path().join("escaped.db.zst").exists());
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let mut outside = outside;
    outside.sort();
    assert_eq!(
        outside,
        vec!["backups", "out"],
        "written outside its directories"
    );
}

/// One member cut off from its peers for real (network namespaces) while the other two
/// keep quorum and keep writing: the cut-off member still answers clients and would
/// stream a stale snapshot. A backup through it alone fails naming it; with all three
/// endpoints, the cut-off one listed first, the backup comes from a current member and
/// holds the writes made after the cut.
#[test]
fn a_member_cut_off_from_its_peers_is_passed_over() {
    use support::partition::PartitionedCluster;
    let cluster = PartitionedCluster::start(EtcdVersion::V3_5_30);
    // (If m2 led, the other two elect a new leader first: retry for a while.)
    let put = |i: usize, k: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = cluster.etcdctl(&[i], &["put", k, "v"]);
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "put {k}: {}", text(&out.stderr));
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    put(0, "/registry/configmaps/default/before-the-cut");
    cluster.cut();
    // The majority keeps writing.
    for i in 0..20 {
        put(
            0,
            &format!("/registry/configmaps/default/after-the-cut-{i}"),
        );
    }
    let out = cluster.etcdctl(
        &[0],
        &[
            "get",
            "/registry/configmaps/default/after-the-cut-19",
            "-w",
            "json",
        ],
    );
    let newest: Value = serde_json::from_str(&text(&out.stdout)).expect("etcdctl JSON");
    let newest = newest["header"]["revision"].as_i64().expect("revision");
    // The cut-off member still answers a serializable read, with stale data.
    let stale = cluster.etcdctl(
        &[2],
        &[
            "get",
            "--consistency=s",
            "/registry/configmaps/default/after-the-cut-19",
        ],
    );
    assert!(
        stale.status.success() && text(&stale.stdout).is_empty(),
        "m2 is not stale?"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let cut_off = cluster.client_urls[2].clone();
    let err = fails(
        &[
            "backup",
            "--endpoints",
            &cut_off,
            "--storage",
            &storage,
            "--command-timeout",
            "2s",
        ],
        1,
    );
    assert!(
        err.contains(&cut_off) && err.contains("no etcd member can be backed up safely"),
        "{err}"
    );
    assert!(list(&storage, &[]).is_empty());

    let endpoints = [
        cut_off.clone(),
        cluster.client_urls[0].clone(),
        cluster.client_urls[1].clone(),
    ]
    .join(",");
    let out = run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            &storage,
            "--command-timeout",
            "2s",
            "-w",
            "json",
        ],
        &[],
    ));
    let m: Value = serde_json::from_str(&ok(out)).expect("manifest");
    assert_ne!(m["endpoint"].as_str(), Some(cut_off.as_str()), "{m}");
    assert!(
        m["revision"].as_i64().expect("revision") >= newest,
        "{m} vs {newest}"
    );
    assert!(
        m["read_revision"].as_i64().expect("read_revision") >= newest,
        "{m}"
    );
    cluster.heal();
}

/// A member with an alarm raised (NOSPACE: the backend quota is full) is not snapshotted;
/// the error names the alarm. Once the alarm is disarmed (after a compaction and
/// defragmentation, as the etcd docs describe) the backup goes through.
#[test]
fn a_member_with_an_alarm_is_not_snapshotted() {
    let cluster =
        Cluster::start_with_args(EtcdVersion::V3_5_30, 1, &["--quota-backend-bytes=16777216"]);
    let value = "x".repeat(64 * 1024);
    let mut raised = false;
    for i in 0..1000 {
        let out = cluster.etcdctl(&["put", &format!("/registry/big/{}", i % 8), &value]);
        if !out.status.success() {
            let err = text(&out.stderr);
            assert!(
                err.contains("database space exceeded"),
                "{}",
                &err[..err.len().min(500)]
            );
            raised = true;
            break;
        }
    }
    assert!(raised, "the quota was never reached");
    let alarms = cluster.etcdctl_ok(&["alarm", "list"]);
    assert!(alarms.contains("NOSPACE"), "{alarms}");

    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("backups").display());
    let endpoints = cluster.endpoints().join(",");
    let err = fails(
        &["backup", "--endpoints", &endpoints, "--storage", &storage],
        1,
    );
    assert!(
        err.contains("NOSPACE"),
        "the error must name the alarm: {err}"
    );
    assert!(list(&storage, &[]).is_empty());

    let status: Value =
        serde_json::from_str(&cluster.etcdctl_ok(&["endpoint", "status", "-w", "json"]))
            .expect("status");
    let revision = status[0]["Status"]["header"]["revision"]
        .as_i64()
        .expect("revision");
    cluster.etcdctl_ok(&["compact", &revision.to_string(), "--physical"]);
    cluster.etcdctl_ok(&["defrag"]);
    cluster.etcdctl_ok(&["alarm", "disarm"]);
    ok(run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &storage],
        &[],
    )));
}
