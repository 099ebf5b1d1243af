//! `lifeboat backup` end to end against real etcd and a real S3 server: the data comes
//! back through `fetch` + `etcdutl snapshot restore`, the stored object is plain zstd, and
//! failures leave nothing behind that looks like a backup.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::etcd::Cluster;
use support::h2_tamper::TrailerTamper;
use support::keys::{AgeKey, age_key};
use support::lifeboat::{
    filer_entries, files_under, lifeboat, ok, run, s3_objects, spawn_streaming_backup, text,
    wait_for_stream,
};
use support::restored::Restored;
use support::s3::SeaweedFs;
use support::tools::{self, EtcdVersion};
use support::workload;

/// Fills a cluster with data worth backing up.
pub(crate) fn fill(cluster: &Cluster) {
    support::runtime().block_on(async {
        let mut c = workload::connect(cluster).await;
        let k8s = workload::kubernetes_like(&mut c, 3, 20).await;
        let some: Vec<String> = k8s.keys.iter().take(10).cloned().collect();
        workload::overwrites(&mut c, &some, 2).await;
        workload::deletes(&mut c, "/registry/pods/", 5).await;
        workload::big_values(&mut c, 3, 100 * 1024).await;
    });
}

/// Backs up, writes more, fetches, restores with the plain etcd tools, and compares.
pub(crate) fn round_trip(
    version: EtcdVersion,
    storage: &str,
    env: &[(String, String)],
    key: Option<&AgeKey>,
) -> Value {
    let cluster = Cluster::start(version, 3);
    fill(&cluster);
    let expected = workload::dump(cluster.endpoints());
    let endpoints = cluster.endpoints().join(",");
    let mut backup_args = vec![
        "backup",
        "--endpoints",
        &endpoints,
        "--storage",
        storage,
        "--cluster",
        "rt",
        "-w",
        "json",
    ];
    let identity = key.map(|k| k.identity_file.to_str().expect("utf-8").to_owned());
    if let Some(k) = key {
        backup_args.extend(["--recipient", k.recipient.as_str()]);
    }
    let manifest: Value =
        serde_json::from_str(&ok(run(lifeboat(&backup_args, env)))).expect("manifest JSON");
    let expected_encryption = if key.is_some() { "age" } else { "none" };
    assert_eq!(
        manifest["object"]["encryption"], expected_encryption,
        "{manifest}"
    );

    // Exactly one member was used, and a follower (three members, one leader).
    let status = cluster.etcdctl_ok(&["endpoint", "status", "-w", "json"]);
    let statuses: Value = serde_json::from_str(&status).expect("endpoint status JSON");
    let leader = format!(
        "{:x}",
        statuses[0]["Status"]["leader"].as_u64().expect("leader id")
    );
    assert_ne!(
        manifest["member_id"], leader,
        "backup came from the leader: {manifest}"
    );
    assert!(
        cluster
            .endpoints()
            .iter()
            .any(|e| *e == manifest["endpoint"]),
        "{manifest}"
    );

    // Writes after the backup must not come back.
    cluster.etcdctl_ok(&["put", "/registry/pods/late/after-backup", "x"]);

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("fetched.db");
    let mut fetch_args = vec![
        "fetch",
        "latest",
        "--out",
        file.to_str().expect("utf-8"),
        "--storage",
        storage,
        "--cluster",
        "rt",
    ];
    if let Some(id) = &identity {
        // Without the identity an encrypted backup cannot be fetched: say so.
        let out = run(lifeboat(&fetch_args, env));
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("--identity"),
            "{}",
            text(&out.stderr)
        );
        fetch_args.extend(["--identity", id.as_str()]);
    }
    ok(run(lifeboat(&fetch_args, env)));
    assert!(!dir.path().join("fetched.db.part").exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "fetched file mode {mode:o}");

    // The reference tool reads the same figures the manifest recorded.
    let mut st = version.status_command(&file);
    st.args(["-w", "json"]);
    let reference: Value =
        serde_json::from_slice(&st.output().expect("status").stdout).expect("status JSON");
    assert_eq!(reference["revision"], manifest["revision"]);
    assert_eq!(reference["hash"], manifest["hash"]);
    assert_eq!(reference["totalKey"], manifest["total_key"]);

    let restored = Restored::start(version, &file);
    let got = workload::dump(vec![restored.endpoint.clone()]);
    assert_eq!(got.len(), expected.len(), "key count after restore");
    assert!(
        got == expected,
        "restored data differs from the data at backup time"
    );
    let mut verify_args = vec!["verify", "--storage", storage, "--cluster", "rt"];
    if let Some(id) = &identity {
        verify_args.extend(["--identity", id.as_str()]);
    }
    ok(run(lifeboat(&verify_args, env)));
    if key.is_some() {
        // Another key cannot decrypt it.
        let other = age_key();
        let out = run(lifeboat(
            &[
                "verify",
                "--storage",
                storage,
                "--cluster",
                "rt",
                "--identity",
                other.identity_file.to_str().expect("utf-8"),
            ],
            env,
        ));
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("cannot decrypt"),
            "{}",
            text(&out.stderr)
        );
    }
    manifest
}

/// The stored object of a file:// backup decompresses (after `age -d`, if encrypted)
/// with the stock CLIs into exactly the snapshot file.
fn stock_tools_read(stored: &Path, m: &Value, key: Option<&AgeKey>) {
    use sha2::Digest;
    let compressed = match key {
        None => std::fs::read(stored).expect("read stored object"),
        Some(k) => {
            let out = Command::new(tools::age())
                .arg("-d")
                .arg("-i")
                .arg(&k.identity_file)
                .arg(stored)
                .output()
                .expect("age -d");
            assert!(out.status.success(), "age -d: {}", text(&out.stderr));
            out.stdout
        }
    };
    let mut zstd = Command::new(tools::zstd())
        .args(["-d", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd -d");
    let mut stdin = zstd.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&compressed).expect("feed zstd");
    });
    let out = zstd.wait_with_output().expect("zstd");
    writer.join().expect("writer");
    assert!(out.status.success(), "zstd -d: {}", text(&out.stderr));
    assert_eq!(
        out.stdout.len() as u64,
        m["object"]["plain_size"].as_u64().expect("size")
    );
    let digest = sha2::Sha256::digest(&out.stdout[..out.stdout.len() - 32]);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(m["db_sha256"], hex.as_str());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(stored).expect("stat").permissions(),
    );
    assert_eq!(
        mode & 0o077,
        0,
        "stored object is readable by others: {mode:o}"
    );
}

#[test]
fn round_trip_file_3_5_30() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", dir.path().join("backups").display());
    let m = round_trip(EtcdVersion::V3_5_30, &url, &[], None);
    let stored = dir
        .path()
        .join("backups/rt")
        .join(m["object"]["key"].as_str().expect("key"));
    stock_tools_read(&stored, &m, None);
}

#[test]
fn round_trip_file_encrypted_3_5_30() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", dir.path().join("backups").display());
    let key = age_key();
    let m = round_trip(EtcdVersion::V3_5_30, &url, &[], Some(&key));
    let stored = dir
        .path()
        .join("backups/rt")
        .join(m["object"]["key"].as_str().expect("key"));
    assert!(stored.to_string_lossy().ends_with(".db.zst.age"));
    stock_tools_read(&stored, &m, Some(&key));
}

#[test]
fn round_trip_file_3_4_23() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", dir.path().join("backups").display());
    round_trip(EtcdVersion::V3_4_23, &url, &[], None);
}

#[test]
fn round_trip_s3_3_5_30() {
    let s3 = SeaweedFs::start();
    let url = format!("s3://{}/etcd", s3.bucket);
    round_trip(EtcdVersion::V3_5_30, &url, &s3.aws_env(), None);
}

#[test]
fn round_trip_s3_encrypted_3_4_23() {
    let s3 = SeaweedFs::start();
    let url = format!("s3://{}/etcd", s3.bucket);
    let key = age_key();
    round_trip(EtcdVersion::V3_4_23, &url, &s3.aws_env(), Some(&key));
}

#[test]
fn round_trip_s3_3_4_23() {
    let s3 = SeaweedFs::start();
    let url = format!("s3://{}/etcd", s3.bucket);
    round_trip(EtcdVersion::V3_4_23, &url, &s3.aws_env(), None);
}

#[test]
fn bad_storage_and_spool_fail_cleanly() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let endpoints = cluster.endpoints().join(",");
    let s3 = SeaweedFs::start();

    // Wrong S3 secret: refused, the secret is not printed.
    let mut env = s3.aws_env();
    let wrong = "wrong-secret-key-value-1234567890";
    for (k, v) in env.iter_mut() {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = wrong.to_owned();
        }
    }
    let url = format!("s3://{}/etcd", s3.bucket);
    let out = run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &url],
        &env,
    ));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        all.contains("access denied") || all.contains("SignatureDoesNotMatch"),
        "{all}"
    );
    assert!(
        !all.contains(wrong) && !all.contains(&s3.secret_key),
        "secret leaked: {all}"
    );

    // A bucket that does not exist.
    let out = run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            "s3://no-such-bucket/etcd",
        ],
        &s3.aws_env(),
    ));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bucket"),
        "{}",
        text(&out.stderr)
    );

    // A spool "directory" that cannot hold files (as root, permissions do not stop
    // writes, so use a regular file where the directory should be).
    let dir = tempfile::tempdir().expect("temp dir");
    let not_a_dir = dir.path().join("spool-is-a-file");
    std::fs::write(&not_a_dir, b"x").expect("write");
    let backups = dir.path().join("backups");
    let storage = format!("file://{}", backups.display());
    let out = run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            &storage,
            "--spool-dir",
            not_a_dir.to_str().expect("utf-8"),
        ],
        &[],
    ));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("spool"), "{}", text(&out.stderr));
    assert!(
        files_under(&backups).is_empty(),
        "left {:?}",
        files_under(&backups)
    );
    // Nothing in S3 either.
    let listing = s3_objects(&s3);
    assert!(listing.is_empty(), "objects left in S3: {listing:?}");

    // Unreachable etcd: clear error naming the endpoint.
    let out = run(lifeboat(
        &[
            "backup",
            "--endpoints",
            "127.0.0.1:1",
            "--dial-timeout",
            "1s",
            "--storage",
            &storage,
        ],
        &[],
    ));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("127.0.0.1:1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_corrupted_stored_object_fails_verify_and_fetch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let backups = dir.path().join("backups");
    let storage = format!("file://{}", backups.display());
    corrupted_object_fails_verify_and_fetch(&storage, &[], |key| {
        let stored = backups.join("default").join(key);
        let mut bytes = std::fs::read(&stored).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&stored, &bytes).expect("write");
    });
}

/// Backs up to `storage`, lets `corrupt` flip a byte of the stored object (its key under
/// the cluster `default`), and checks that verify and fetch both fail on the sha256 and
/// that fetch leaves no output file.
pub(crate) fn corrupted_object_fails_verify_and_fetch(
    storage: &str,
    env: &[(String, String)],
    corrupt: impl FnOnce(&str),
) {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    fill(&cluster);
    let dir = tempfile::tempdir().expect("temp dir");
    let endpoints = cluster.endpoints().join(",");
    let m: Value = serde_json::from_str(&ok(run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            storage,
            "-w",
            "json",
        ],
        env,
    ))))
    .expect("JSON");
    corrupt(m["object"]["key"].as_str().expect("key"));

    let out = run(lifeboat(&["verify", "latest", "--storage", storage], env));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("does not match the manifest") && err.contains("sha256"),
        "{err}"
    );

    let target = dir.path().join("out.db");
    let out = run(lifeboat(
        &[
            "fetch",
            "latest",
            "--out",
            target.to_str().expect("utf-8"),
            "--storage",
            storage,
        ],
        env,
    ));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not match"),
        "{}",
        text(&out.stderr)
    );
    assert!(!target.exists() && !dir.path().join("out.db.part").exists());
}

#[test]
fn etcd_killed_mid_stream_leaves_nothing() {
    let mut cluster = workload::large_cluster(300 << 20);
    let dir = tempfile::tempdir().expect("temp dir");
    let backups = dir.path().join("backups");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).expect("spool dir");
    let storage = format!("file://{}", backups.display());
    let endpoints = cluster.endpoints().join(",");
    // An earlier, good backup in the same storage must survive the failed run.
    ok(run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &storage],
        &[],
    )));
    let before = files_under(&backups);
    assert_eq!(before.len(), 2, "manifest + object: {before:?}");
    // A slow compression level stretches the stream so the kill lands in the middle.
    let mut child = lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            &storage,
            "--spool-dir",
            spool.to_str().expect("utf-8"),
            "--zstd-level",
            "19",
        ],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn backup");
    // Wait until some of the snapshot has streamed, then kill etcd.
    wait_for_stream(&mut child, &spool, 8 << 20);
    cluster.kill(0);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("backup failed") && err.contains("etcd"),
        "{err}"
    );
    assert!(
        files_under(&spool).is_empty(),
        "spool left: {:?}",
        files_under(&spool)
    );
    assert_eq!(files_under(&backups), before, "storage changed");
    ok(run(lifeboat(
        &["verify", "latest", "--storage", &storage],
        &[],
    )));
}

#[test]
fn auth_password_is_used_and_never_printed() {
    let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let password = "pw-that-must-not-leak-42";
    let auth = support::runtime().block_on(async {
        let mut c = workload::connect(&cluster).await;
        workload::kubernetes_like(&mut c, 1, 5).await;
        workload::auth_users(&mut c, password).await
    });
    cluster.set_credentials(&auth.root_user, &auth.root_password);
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("b").display());
    let endpoints = cluster.endpoints().join(",");

    // user:password in ETCDCTL_USER, as etcdctl accepts it.
    let env = vec![("ETCDCTL_USER".to_owned(), format!("root:{password}"))];
    let out = run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            &storage,
            "-v",
        ],
        &env,
    ));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(!all.contains(password), "password printed: {all}");
    for f in files_under(&dir.path().join("b")) {
        if f.extension().is_some_and(|e| e == "json") {
            let m = std::fs::read_to_string(dir.path().join("b").join(&f)).expect("read");
            assert!(!m.contains(password), "password in manifest {f:?}");
        }
    }

    // A wrong password: exit 1, names the user, not the password.
    let wrong = "wrong-pw-also-secret";
    let out = run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            &storage,
            "--user",
            "root",
            "--password",
            wrong,
        ],
        &[],
    ));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("root") && err.contains("credentials"), "{err}");
    assert!(!err.contains(wrong), "password printed: {err}");
}

#[test]
fn s3_stopped_mid_upload_leaves_nothing() {
    let cluster = workload::large_cluster(300 << 20);
    let mut s3 = SeaweedFs::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).expect("spool dir");
    let url = format!("s3://{}/etcd", s3.bucket);
    let endpoints = cluster.endpoints().join(",");
    // An earlier, good backup in the same bucket must survive the failed run.
    ok(run(lifeboat(
        &["backup", "--endpoints", &endpoints, "--storage", &url],
        &s3.aws_env(),
    )));
    // Let a few parts go up, then take the S3 server away.
    let retry = [("LIFEBOAT_S3_RETRY_TIMEOUT".to_owned(), "3s".to_owned())];
    let child = spawn_streaming_backup(
        &endpoints,
        &url,
        &spool,
        &[s3.aws_env(), retry.to_vec()].concat(),
    );
    // The upload is visible as a multipart upload in progress (so the check at the end
    // can see one if it is left behind).
    let uploads_dir = format!("/buckets/{}/.uploads/", s3.bucket);
    let deadline = Instant::now() + Duration::from_secs(30);
    while filer_entries(&s3, &uploads_dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no multipart upload appeared in the filer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s3.kill();
    // Requests are retried for 3 s: stay away longer, so the run fails; then come back
    // while it is still trying (for up to 30 s) to abort its multipart upload.
    std::thread::sleep(Duration::from_secs(8));
    s3.restart();
    let out = child.wait_with_output().expect("wait");
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {err}",
        text(&out.stdout)
    );
    assert!(err.contains("backup failed"), "{err}");
    assert!(
        files_under(&spool).is_empty(),
        "spool left: {:?}",
        files_under(&spool)
    );
    let listing = s3_objects(&s3);
    assert_eq!(
        listing.len(),
        2,
        "only the earlier backup may remain: {listing:?}"
    );
    ok(run(lifeboat(
        &["verify", "latest", "--storage", &url],
        &s3.aws_env(),
    )));
    let uploads = filer_entries(&s3, &uploads_dir);
    assert!(
        uploads.is_empty(),
        "an unfinished multipart upload was left behind: {uploads:?}\nbackup stderr: {err}"
    );
}

/// A snapshot whose trailer is corrupted on the wire fails the check, and nothing of the
/// run remains: not in the directory, not in the bucket (its data object is completed
/// while the check runs, so the failed check must delete it), not in the spool.
#[test]
fn a_snapshot_corrupted_in_transit_is_never_committed() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    support::runtime().block_on(async {
        let mut c = workload::connect(&cluster).await;
        workload::large_db(&mut c, 16 << 20).await;
    });
    let upstream = cluster.endpoints()[0]
        .trim_start_matches("http://")
        .to_owned();
    let tamper = TrailerTamper::start(&upstream);
    let mut s3 = SeaweedFs::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).expect("spool dir");
    let backups = dir.path().join("backups");
    let file_url = format!("file://{}", backups.display());
    let s3_url = format!("s3://{}/etcd", s3.bucket);
    let spool_arg = spool.to_str().expect("utf-8");
    for (url, env) in [(&file_url, vec![]), (&s3_url, s3.aws_env())] {
        let before = tamper.flipped();
        let out = run(lifeboat(
            &[
                "backup",
                "--endpoints",
                &tamper.endpoint(),
                "--storage",
                url,
                "--spool-dir",
                spool_arg,
            ],
            &env,
        ));
        let err = text(&out.stderr);
        assert_eq!(
            tamper.flipped(),
            before + 1,
            "the proxy did not corrupt the trailer: {err}"
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{url}: stdout {}\nstderr {err}",
            text(&out.stdout)
        );
        assert!(
            err.contains("does not match the data streamed")
                && err.contains("corrupted in transit"),
            "{url}: {err}"
        );
        assert!(
            files_under(&spool).is_empty(),
            "spool left: {:?}",
            files_under(&spool)
        );
        // The same member through no proxy gives a good backup.
        ok(run(lifeboat(
            &[
                "backup",
                "--endpoints",
                &cluster.endpoints()[0],
                "--storage",
                url,
            ],
            &env,
        )));
    }
    assert_eq!(
        files_under(&backups).len(),
        2,
        "{:?}",
        files_under(&backups)
    );
    let listing = s3_objects(&s3);
    assert_eq!(
        listing.len(),
        2,
        "only the good backup may remain: {listing:?}"
    );
    let uploads = filer_entries(&s3, &format!("/buckets/{}/.uploads/", s3.bucket));
    assert!(
        uploads.is_empty(),
        "an unfinished multipart upload was left: {uploads:?}"
    );
    s3.stop();
}
