//! Self-test of the test bench in `tests/support/`: real etcd clusters of
//! every supported version, the workloads, SeaweedFS, and process cleanup.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use support::process::{pid_alive, spawn_guarded};
use support::workload::{self, connect, connect_member};
use support::{Cluster, EtcdVersion, SeaweedFs};

const HEALTHY: Duration = Duration::from_secs(60);

async fn get_value(client: &mut etcd_client::Client, key: &str) -> Option<Vec<u8>> {
    let resp = client.get(key, None).await.expect("get");
    resp.kvs().first().map(|kv| kv.value().to_vec())
}

async fn three_members(version: EtcdVersion) {
    let mut cluster = Cluster::start(version, 3);
    assert_eq!(cluster.endpoints().len(), 3);
    for (i, m) in cluster.members().iter().enumerate() {
        assert_eq!(m.name, format!("m{i}"));
        assert!(m.client_url.starts_with("http://127.0.0.1:"));
        assert!(m.peer_url.starts_with("http://127.0.0.1:"));
        assert!(m.data_dir.is_dir(), "etcd created {}", m.data_dir.display());
    }
    let out = cluster.etcdctl_ok(&["endpoint", "status", "-w", "json"]);
    assert!(
        out.contains(version.label()),
        "etcd {version} reports its version in endpoint status: {out}"
    );

    let mut client = connect(&cluster).await;
    client.put("/selftest/a", "1", None).await.expect("put");
    assert_eq!(
        get_value(&mut client, "/selftest/a").await.as_deref(),
        Some(&b"1"[..])
    );
    drop(client);

    // One member down: the other two still have quorum.
    let pid = cluster.member(1).pid().expect("member 1 runs");
    cluster.kill(1);
    assert!(!pid_alive(pid), "killed member is gone");
    assert!(!cluster.is_running(1));
    cluster.wait_healthy(HEALTHY);
    let mut client = connect(&cluster).await;
    client
        .put("/selftest/b", "2", None)
        .await
        .expect("put with a member down");
    assert_eq!(
        get_value(&mut client, "/selftest/a").await.as_deref(),
        Some(&b"1"[..])
    );
    drop(client);

    cluster.restart(1);
    cluster.wait_healthy(HEALTHY);
    // The restarted member caught up (linearizable read served through it).
    let mut only_m1 = connect_member(&cluster, 1).await;
    assert_eq!(
        get_value(&mut only_m1, "/selftest/b").await.as_deref(),
        Some(&b"2"[..])
    );

    // Graceful stop and back once more.
    cluster.stop(2);
    cluster.restart(2);
    cluster.wait_healthy(HEALTHY);
    let keys = workload::live_keys_via_etcdctl(&cluster, "/selftest/");
    assert_eq!(
        keys,
        vec!["/selftest/a".to_string(), "/selftest/b".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_v3_5_30() {
    three_members(EtcdVersion::V3_5_30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_v3_4_23() {
    three_members(EtcdVersion::V3_4_23).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_v3_5_1() {
    three_members(EtcdVersion::V3_5_1).await;
}

async fn workloads_and_snapshot(version: EtcdVersion) {
    let mut cluster = Cluster::start(version, 1);
    let mut client = connect(&cluster).await;
    let s = workload::all_workloads(&mut client, true).await;
    let auth = s.auth.as_ref().expect("auth enabled");
    assert_eq!(auth.root_password, workload::ROOT_PASSWORD);

    // The passed client was re-authenticated as root and keeps working.
    client
        .put("/selftest/after-auth", "x", None)
        .await
        .expect("put as root");

    // Without credentials etcdctl is refused now; with them it works.
    let refused = cluster.etcdctl(&["get", "/registry/", "--prefix", "--keys-only"]);
    assert!(
        !refused.status.success(),
        "auth is enabled, anonymous get must fail"
    );
    cluster.set_credentials("root", &auth.root_password);
    let live = workload::live_keys_via_etcdctl(&cluster, "");
    let expected = s.kubernetes.keys.len() - s.deletes.deletes
        + s.leases.alive_keys.len()
        + s.big_values.keys.len()
        + 1; // /selftest/after-auth
    assert_eq!(live.len(), expected, "live keys: {live:?}");
    assert!(s.deletes.deletes > 0 && !s.leases.revoked.is_empty());
    assert!(s.compaction.compacted_at > 1);
    // alice may read /registry/.
    let mut alice = workload::connect_as(&cluster, "alice", "alice-pw").await;
    assert!(
        get_value(&mut alice, "/registry/ranges/serviceips")
            .await
            .is_some()
    );
    assert!(alice.put("/registry/x", "no", None).await.is_err());

    // Restarting with auth enabled: /health must still report healthy.
    cluster.stop(0);
    cluster.restart(0);
    cluster.wait_healthy(HEALTHY);

    let dir = tempfile::tempdir().unwrap();
    let snap = cluster.snapshot_save(0, dir.path().join("snap.db"));
    let mut status = version.status_command(&snap);
    status.args(["-w", "json"]);
    let out = support::process::run_ok(status, Duration::from_secs(60));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("snapshot status -w json");
    let revision = json["revision"].as_i64().expect("revision in status");
    assert!(
        revision > s.revision,
        "snapshot revision {revision} vs workload {}",
        s.revision
    );
    assert!(json["totalKey"].as_i64().unwrap() > expected as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_and_snapshot_v3_5_30() {
    workloads_and_snapshot(EtcdVersion::V3_5_30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_and_snapshot_v3_4_23() {
    workloads_and_snapshot(EtcdVersion::V3_4_23).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_and_snapshot_v3_5_1() {
    workloads_and_snapshot(EtcdVersion::V3_5_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_keys_over_100k() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let mut client = connect(&cluster).await;
    let t = Instant::now();
    let s = workload::many_keys(&mut client, 100_500).await;
    eprintln!("many_keys: {} keys in {:?}", s.keys.len(), t.elapsed());
    let resp = client
        .get(
            "/lifeboat/many/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(resp.count(), 100_500);
    // etcdctl allows --count-only only with `-w fields`: `"Count" : 100500`.
    let out = cluster.etcdctl_ok(&[
        "get",
        "/lifeboat/many/",
        "--prefix",
        "--count-only",
        "-w",
        "fields",
    ]);
    let count = out
        .lines()
        .find_map(|l| l.strip_prefix("\"Count\" : "))
        .unwrap_or_else(|| panic!("no Count in {out}"));
    assert_eq!(count.trim(), "100500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_db_over_256mib() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let mut client = connect(&cluster).await;
    let target = 260 * 1024 * 1024;
    let t = Instant::now();
    let s = workload::large_db(&mut client, target).await;
    eprintln!(
        "large_db: {} MiB values, db_size {} MiB in {:?}",
        s.summary.puts,
        s.db_size >> 20,
        t.elapsed()
    );
    assert!(s.db_size as u64 >= target);
    let db = cluster.member(0).data_dir.join("member/snap/db");
    assert!(std::fs::metadata(&db).unwrap().len() >= target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_put_get_and_refusals() {
    let mut s3 = SeaweedFs::start();
    assert!(s3.endpoint().starts_with("http://127.0.0.1:"));
    let store = s3.object_store();
    // The readiness probe left nothing behind: the bucket starts empty.
    let listed = store.list_with_delimiter(None).await.expect("list bucket");
    assert!(
        listed.objects.is_empty() && listed.common_prefixes.is_empty(),
        "bucket not empty: {listed:?}"
    );
    let path = ObjectPath::from("selftest/hello.txt");
    store
        .put(&path, PutPayload::from_static(b"hello lifeboat"))
        .await
        .expect("put with the right credentials");
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"hello lifeboat");
    // A multi-MiB object goes through the filer's chunking (-filer.maxMB=4).
    let big: Vec<u8> = (0..9 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let big_path = ObjectPath::from("selftest/big.bin");
    store
        .put(&big_path, big.clone().into())
        .await
        .expect("put 9 MiB");
    let got = store.get(&big_path).await.unwrap().bytes().await.unwrap();
    assert!(got[..] == big[..], "9 MiB object round-trips");
    // Multipart upload (3 parts of 5 MiB + a short one).
    let mp_path = ObjectPath::from("selftest/multipart.bin");
    let mut upload = object_store::WriteMultipart::new_with_chunk_size(
        store
            .put_multipart(&mp_path)
            .await
            .expect("start multipart"),
        5 * 1024 * 1024,
    );
    for _ in 0..2 {
        upload.write(&big);
    }
    upload.finish().await.expect("complete multipart");
    let meta = store.head(&mp_path).await.expect("head multipart object");
    assert_eq!(meta.size, 2 * big.len() as u64);

    // Wrong secret key: refused.
    let wrong = s3.object_store_with(&s3.bucket, &s3.access_key, "not-the-secret");
    let err = wrong.get(&path).await.expect_err("wrong secret must fail");
    eprintln!("wrong secret: {err}");
    assert!(
        wrong
            .put(
                &ObjectPath::from("selftest/evil"),
                PutPayload::from_static(b"x")
            )
            .await
            .is_err()
    );
    // Unknown access key: refused.
    let unknown = s3.object_store_with(&s3.bucket, "AKIDONTEXIST", &s3.secret_key);
    assert!(unknown.get(&path).await.is_err());
    // Missing bucket (auto-creation is off): refused.
    let missing = s3.object_store_with("no-such-bucket", &s3.access_key, &s3.secret_key);
    let err = missing
        .put(&ObjectPath::from("x"), PutPayload::from_static(b"x"))
        .await
        .expect_err("missing bucket must fail");
    eprintln!("missing bucket: {err}");
    assert!(missing.get(&ObjectPath::from("x")).await.is_err());

    // Data survives a restart.
    s3.stop();
    s3.restart();
    let store = s3.object_store();
    let got = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"hello lifeboat");
}

#[test]
fn missing_binary_is_a_failure_naming_the_path() {
    let path = std::env::temp_dir().join("lifeboat-definitely-missing/etcd");
    let err = std::panic::catch_unwind(|| support::tools::require_binary(path.clone()))
        .expect_err("must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("run `make test`"), "{msg}");
    assert!(msg.contains("scripts/install-test-deps.sh"), "{msg}");
}

#[test]
fn panicking_test_leaves_no_process() {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
        let s3 = SeaweedFs::start();
        let mut pids = cluster.pids();
        pids.extend(s3.pid());
        tx.send(pids).unwrap();
        panic!("deliberate panic with servers running");
    });
    assert!(worker.join().is_err(), "the worker panicked");
    let pids = rx.recv().expect("pids");
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(!pid_alive(pid), "process {pid} survived the panic");
    }
}

/// The child side of `killed_test_process_leaves_no_process`: the same test, run again
/// by the test binary with `LIFEBOAT_SELFTEST_HELPER` set, starts servers, reports their
/// pids and waits to be killed.
fn helper_start_servers_and_wait() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let s3 = SeaweedFs::start();
    let mut pids = cluster.pids();
    pids.extend(s3.pid());
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let sockets: Vec<String> = s3
        .ports
        .grpc_socket_paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    // One line, so the parent sees everything at once.
    println!(
        "\nHELPER|{}|{} {}|{}",
        pids.join(" "),
        cluster.dir().display(),
        s3.dir().display(),
        sockets.join(" ")
    );
    // Wait (bounded) to be SIGKILLed by the parent.
    thread::sleep(Duration::from_secs(60));
}

#[test]
fn killed_test_process_leaves_no_process() {
    if std::env::var_os("LIFEBOAT_SELFTEST_HELPER").is_some() {
        return helper_start_servers_and_wait();
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "bench_selftest::killed_test_process_leaves_no_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("LIFEBOAT_SELFTEST_HELPER", "1")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut helper = spawn_guarded(cmd).expect("spawn helper");
    let stdout = helper.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("HELPER|") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let report = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(r) => r,
        Err(e) => {
            support::process::kill_child(&mut helper);
            panic!("helper did not report its servers: {e}");
        }
    };
    let parts: Vec<Vec<String>> = report
        .split('|')
        .map(|p| p.split(' ').map(str::to_string).collect())
        .collect();
    let pids: Vec<u32> = parts[0].iter().map(|p| p.parse().unwrap()).collect();
    let (dirs, sockets) = (&parts[1], &parts[2]);
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| pid_alive(p)));
    assert!(dirs.iter().all(|d| std::path::Path::new(d).is_dir()));
    assert!(sockets.iter().any(|s| std::path::Path::new(s).exists()));

    support::process::kill_child(&mut helper); // SIGKILL: no Drop runs in the helper
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|&p| pid_alive(p)) {
        assert!(
            Instant::now() < deadline,
            "servers {pids:?} outlived their SIGKILLed test process"
        );
        thread::sleep(Duration::from_millis(50));
    }

    // What a killed process leaves on disk is swept by the next start (test
    // processes running in parallel may be sweeping the same dirs right now).
    let left = || {
        dirs.iter()
            .chain(sockets)
            .filter(|p| std::path::Path::new(p).exists())
            .cloned()
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        support::process::sweep_stale_tempdirs();
        let remaining = left();
        if remaining.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not swept: {remaining:?}");
        thread::sleep(Duration::from_millis(100));
    }
}
