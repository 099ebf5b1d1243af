//! The bucket is untrusted: a manifest planted there by whoever can write to it must not
//! make `restore plan|run|drill` (or `fetch`) run anything or write outside their
//! directories. And `fetch --out` is not blocked by a stale `.part`, and never
//! overwrites.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use support::etcd::Cluster;
use support::lifeboat::{files_under, lifeboat, ok, run, text};
use support::tools::EtcdVersion;

/// A 1-member cluster with one backup in a `file://` storage under `dir`.
fn backed_up(dir: &Path) -> (Cluster, String) {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    cluster.etcdctl_ok(&["put", "/registry/pods/default/a", "x"]);
    let storage = format!("file://{}", dir.join("backups").display());
    ok(run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &cluster.endpoints().join(","),
            "--storage",
            &storage,
        ],
        &[],
    )));
    (cluster, storage)
}

fn in_dir(args: &[&str], cwd: &Path) -> Output {
    let mut cmd = lifeboat(args, &[]);
    cmd.current_dir(cwd);
    run(cmd)
}

#[test]
fn fetch_is_not_blocked_by_a_stale_part_and_never_overwrites() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_cluster, storage) = backed_up(dir.path());
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).expect("out dir");
    let out = outdir.join("snapshot.db");
    // What an interrupted fetch used to leave, under the name it used to use.
    let stale = outdir.join("snapshot.db.part");
    std::fs::write(&stale, b"half a download").expect("stale part");
    let fetch = || {
        run(lifeboat(
            &[
                "fetch",
                "latest",
                "--out",
                out.to_str().expect("utf-8"),
                "--storage",
                &storage,
            ],
            &[],
        ))
    };
    ok(fetch());
    let fetched = std::fs::read(&out).expect("fetched");
    assert!(fetched.len() > 4096);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&out).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // An existing file is refused and left as it is; no temporary file is left behind.
    std::fs::write(&out, b"the operator's own file").expect("overwrite");
    let again = fetch();
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(
        std::fs::read(&out).expect("read"),
        b"the operator's own file"
    );
    let mut left = files_under(&outdir);
    left.sort();
    assert_eq!(
        left,
        [
            PathBuf::from("snapshot.db"),
            PathBuf::from("snapshot.db.part")
        ]
    );
}

/// The planted manifest: the newest one, its id and key holding `;`, `$( )` and
/// `../`. Asked for by name, every command that reads it refuses (non-zero, naming it);
/// as `latest` it is passed over for the newest real backup, with a warning naming it.
/// Nothing in it runs, nothing is written outside the commands' directories.
#[test]
fn a_planted_manifest_runs_nothing_and_writes_nowhere() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cluster, storage) = backed_up(dir.path());
    let manifests = dir.path().join("backups/default/manifests");
    let real = std::fs::read_dir(&manifests)
        .expect("manifests")
        .flatten()
        .map(|e| e.path())
        .next()
        .expect("a manifest");
    let mut m: Value =
        serde_json::from_str(&std::fs::read_to_string(&real).expect("read")).expect("JSON");
    let hostile = "x;touch pwned1;$(touch pwned2)../../../../tmp/../x";
    m["id"] = Value::from(hostile);
    m["object"]["key"] = Value::from("snapshots/../../../x;$(touch pwned3).db.zst");
    let planted = "29991231T235959.999Z-deadbeef";
    std::fs::write(
        manifests.join(format!("{planted}.json")),
        serde_json::to_vec(&m).expect("JSON"),
    )
    .expect("plant");

    let state = dir.path().join("state");
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).expect("cwd");
    let member = &cluster.members()[0];
    let ran = dir.path().join("ran");
    let config = dir.path().join("restore.toml");
    std::fs::write(
        &config,
        format!(
            "[restore]\nstate-dir = {state:?}\nnew-membership = true\n\
             [[restore.members]]\nname = \"m0\"\npeer-url = \"{}\"\nclient-url = \"{}\"\n\
             data-dir = {:?}\netcd-start = \"touch {ran}\"\netcd-stop = \"touch {ran}\"\n\
             etcdutl = {:?}\n",
            member.peer_url,
            member.client_url,
            dir.path().join("m0/data").display().to_string(),
            EtcdVersion::V3_5_30
                .etcdutl()
                .expect("etcdutl")
                .display()
                .to_string(),
            state = state.display().to_string(),
            ran = ran.display(),
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let out_file = cwd.join("fetched.db");
    let outs = [
        (
            "restore plan",
            in_dir(
                &[
                    "restore",
                    "plan",
                    "--config",
                    config,
                    "--storage",
                    &storage,
                    "--backup",
                    planted,
                ],
                &cwd,
            ),
        ),
        (
            "restore run",
            in_dir(
                &[
                    "restore",
                    "run",
                    "--config",
                    config,
                    "--storage",
                    &storage,
                    "--backup",
                    planted,
                    "--yes",
                ],
                &cwd,
            ),
        ),
        (
            "restore drill",
            in_dir(
                &[
                    "restore",
                    "drill",
                    "--storage",
                    &storage,
                    "--backup",
                    planted,
                    "--etcd-binary",
                    EtcdVersion::V3_5_30.etcd().to_str().expect("utf-8"),
                    "--etcdutl",
                    EtcdVersion::V3_5_30
                        .etcdutl()
                        .expect("etcdutl")
                        .to_str()
                        .expect("utf-8"),
                    "--scratch-dir",
                    scratch.to_str().expect("utf-8"),
                ],
                &cwd,
            ),
        ),
        (
            "fetch",
            in_dir(
                &[
                    "fetch",
                    planted,
                    "--out",
                    out_file.to_str().expect("utf-8"),
                    "--storage",
                    &storage,
                ],
                &cwd,
            ),
        ),
    ];
    for (what, out) in &outs {
        let err = text(&out.stderr);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{what} took the planted manifest"
        );
        if what.starts_with("restore") {
            assert!(
                err.contains("x;touch pwned1") || err.contains(planted),
                "{what} does not say what it refused: {err}"
            );
        }
    }
    // `latest` is the newest backup that can be restored: the real one, not the plant.
    let out = in_dir(
        &[
            "restore",
            "plan",
            "--config",
            config,
            "--storage",
            &storage,
            "--backup",
            "latest",
            "-w",
            "json",
        ],
        &cwd,
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(planted),
        "plan must name what it passed over: {err}"
    );
    let real_id = real
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("real id")
        .to_owned();
    assert!(
        text(&out.stdout).contains(&real_id),
        "{}",
        text(&out.stdout)
    );
    // Nothing ran, nothing was written.
    assert!(!ran.exists(), "a member command ran");
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    for d in [dir.path(), cwd.as_path(), home.as_path(), Path::new("/tmp")] {
        for n in ["pwned1", "pwned2", "pwned3"] {
            assert!(!d.join(n).exists(), "{}", d.join(n).display());
        }
    }
    assert!(
        !state.exists() || files_under(&state).is_empty(),
        "{:?}",
        files_under(&state)
    );
    assert!(
        files_under(&scratch).is_empty(),
        "{:?}",
        files_under(&scratch)
    );
    assert!(files_under(&cwd).is_empty(), "{:?}", files_under(&cwd));
    assert!(!dir.path().join("m0").exists());
}
