//! `lifeboat prune` against real storage (SeaweedFS, Azurite and a local directory): the dry run
//! changes nothing, the real run deletes exactly what the dry run said, the kept backups
//! still verify, and leftovers of failed runs go once they are older than the grace.

use crate::support;

use std::path::Path;

use serde_json::Value;
use support::azurite::Azurite;
use support::etcd::Cluster;
use support::lifeboat::{lifeboat, ok, run, s3_objects};
use support::s3::SeaweedFs;
use support::tools::EtcdVersion;

fn config(dir: &Path, storage: &str, retention: &str) -> String {
    let path = dir.join("lifeboat.toml");
    std::fs::write(
        &path,
        format!("[storage]\nurl = \"{storage}\"\n[retention]\n{retention}\n"),
    )
    .expect("write config");
    path.to_str().expect("utf-8").to_owned()
}

fn ids(storage: &str, env: &[(String, String)]) -> Vec<String> {
    let out = ok(run(lifeboat(
        &["list", "--storage", storage, "-w", "json"],
        env,
    )));
    let list: Value = serde_json::from_str(&out).expect("JSON");
    list.as_array()
        .expect("array")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Takes `n` backups; returns their ids, newest first.
fn backups(cluster: &Cluster, storage: &str, env: &[(String, String)], n: usize) -> Vec<String> {
    let endpoints = cluster.endpoints().join(",");
    for i in 0..n {
        cluster.etcdctl_ok(&["put", &format!("/registry/configmaps/default/c{i}"), "v"]);
        ok(run(lifeboat(
            &["backup", "--endpoints", &endpoints, "--storage", storage],
            env,
        )));
    }
    ids(storage, env)
}

/// The dry run's decisions, as (id, action) for backups and keys for leftovers.
fn dry_run(config: &str, env: &[(String, String)]) -> (Vec<(String, bool)>, Vec<String>) {
    let out = ok(run(lifeboat(
        &["prune", "--config", config, "--dry-run", "-w", "json"],
        env,
    )));
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["dry_run"], true);
    let decisions = v["plan"]["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["keep"].as_bool().unwrap(),
            )
        })
        .collect();
    let leftovers = v["plan"]["leftovers"]
        .as_array()
        .expect("leftovers")
        .iter()
        .map(|l| l["key"].as_str().unwrap().to_owned())
        .collect();
    (decisions, leftovers)
}

#[test]
fn prune_on_s3_deletes_what_the_dry_run_said_and_keeps_the_rest_verifiable() {
    let s3 = SeaweedFs::start();
    let storage = format!("s3://{}/etcd", s3.bucket);
    prune_deletes_what_the_dry_run_said(&storage, &s3.aws_env(), &s3.object_store(), &|| {
        s3_objects(&s3).len()
    });
}

#[test]
fn prune_on_azure_deletes_what_the_dry_run_said_and_keeps_the_rest_verifiable() {
    let az = Azurite::start();
    let storage = az.url("etcd");
    prune_deletes_what_the_dry_run_said(&storage, &az.azure_env(), &az.object_store(), &|| {
        az.blob_names(false).len()
    });
}

/// Four backups and a leftover in an object store (`etcd/` of `store` is `storage`);
/// `objects` counts what the store holds.
fn prune_deletes_what_the_dry_run_said(
    storage: &str,
    env: &[(String, String)],
    store: &dyn object_store::ObjectStore,
    objects: &dyn Fn() -> usize,
) {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let all = backups(&cluster, storage, env, 4);
    assert_eq!(all.len(), 4);
    // A data object no manifest names, as a crashed run could leave it.
    support::runtime().block_on(async {
        use object_store::{ObjectStoreExt, PutPayload};
        store
            .put(
                &"etcd/default/snapshots/20200101T000000Z-deadbeef.db.zst".into(),
                PutPayload::from_static(b"partial"),
            )
            .await
            .expect("put leftover");
    });

    // A generous grace: the fresh leftover stays; keep-last 2 deletes two backups.
    let cfg = config(
        dir.path(),
        storage,
        "keep-last = 2\nleftover-grace = \"1h\"",
    );
    let (decisions, leftovers) = dry_run(&cfg, env);
    let kept: Vec<&str> = decisions
        .iter()
        .filter(|d| d.1)
        .map(|d| d.0.as_str())
        .collect();
    assert_eq!(kept, [all[0].as_str(), all[1].as_str()]);
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(ids(storage, env), all, "the dry run deleted something");
    assert_eq!(objects(), 9);

    let out = ok(run(lifeboat(&["prune", "--config", &cfg], env)));
    assert!(out.contains("deleted 2 of 4 backups"), "{out}");
    assert_eq!(ids(storage, env), all[..2]);
    assert_eq!(objects(), 5, "4 objects of 2 backups + the leftover");
    for id in &all[..2] {
        ok(run(lifeboat(&["verify", id, "--storage", storage], env)));
    }

    // With no grace, the leftover goes too; the backups stay.
    let cfg = config(
        dir.path(),
        storage,
        "keep-last = 2\nleftover-grace = \"0s\"",
    );
    let (_, leftovers) = dry_run(&cfg, env);
    assert_eq!(leftovers, ["snapshots/20200101T000000Z-deadbeef.db.zst"]);
    ok(run(lifeboat(&["prune", "--config", &cfg], env)));
    assert_eq!(objects(), 4);
    assert_eq!(ids(storage, env), all[..2]);
}

#[test]
fn prune_never_deletes_the_newest_backup_and_cleans_local_staging_files() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("backups");
    let storage = format!("file://{}", root.display());
    let all = backups(&cluster, &storage, &[], 3);
    // A local multipart upload that never finished (object_store stages `<key>#<n>`).
    let staged = root.join("default/snapshots/20200101T000000Z-deadbeef.db.zst#1");
    std::fs::write(&staged, b"partial").expect("staging file");

    // keep-within 1s: by the time prune runs, every backup is older than that, but the
    // newest is still kept.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let cfg = config(
        dir.path(),
        &storage,
        "keep-within = \"1s\"\nleftover-grace = \"0s\"",
    );
    let out = ok(run(lifeboat(
        &["prune", "--config", &cfg, "-w", "table"],
        &[],
    )));
    assert!(out.contains("newest backup (never deleted)"), "{out}");
    assert_eq!(ids(&storage, &[]), all[..1]);
    assert!(!staged.exists(), "staging file left");
    ok(run(lifeboat(
        &["verify", "latest", "--storage", &storage],
        &[],
    )));

    // No retention rule at all: nothing is deleted.
    let cfg = config(dir.path(), &storage, "");
    let out = ok(run(lifeboat(&["prune", "--config", &cfg], &[])));
    assert!(out.contains("no retention policy"), "{out}");
    assert_eq!(ids(&storage, &[]), all[..1]);
}

/// Issue 9: durations from the configuration are checked arithmetic. A `leftover-grace`
/// of 1e8 days (longer than time can be counted back) keeps every leftover; it used to
/// panic.
#[test]
fn a_huge_leftover_grace_keeps_every_leftover_instead_of_panicking() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("backups");
    let storage = format!("file://{}", root.display());
    backups(&cluster, &storage, &[], 1);
    // A data object that no manifest names: a leftover, but not old enough.
    std::fs::write(root.join("default/snapshots/orphan.db.zst"), b"x").expect("orphan");
    let config = config(
        dir.path(),
        &storage,
        "keep-last = 1\nleftover-grace = \"100000000d\"",
    );
    for args in [
        vec!["prune", "--config", &config, "--dry-run", "-w", "json"],
        vec!["prune", "--config", &config, "-w", "json"],
    ] {
        let out = run(lifeboat(&args, &[]));
        assert_eq!(
            out.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(v["plan"]["leftovers"], serde_json::json!([]), "{v}");
    }
    assert!(root.join("default/snapshots/orphan.db.zst").exists());
}
