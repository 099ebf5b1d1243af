//! `az://` end to end against Azurite, Microsoft's Azure Blob emulator: the same round
//! trip as for S3 (backup, list, verify, fetch, restored with the plain etcd tools),
//! settings from `AZURE_*` and from `[storage.options]`, refusals that name the problem
//! and print no key, and an emulator killed mid-upload leaving nothing that looks like a
//! backup. Prune on Azure is in `prune.rs`.

use crate::backup::{corrupted_object_fails_verify_and_fetch, round_trip};
use crate::support;
use crate::support::keys::age_key;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::azurite::Azurite;
use support::etcd::Cluster;
use support::lifeboat::{files_under, lifeboat, list_json, ok, run, spawn_streaming_backup, text};
use support::tools::EtcdVersion;
use support::workload;

/// `lifeboat list` shows exactly the one backup `m`, restorable.
fn listed_alone(storage: &str, env: &[(String, String)], cluster: &str, m: &Value) {
    let out = ok(run(lifeboat(
        &[
            "list",
            "--storage",
            storage,
            "--cluster",
            cluster,
            "-w",
            "json",
        ],
        env,
    )));
    let list: Value = serde_json::from_str(&out).expect("list JSON");
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 1, "{out}");
    assert_eq!(list[0]["id"], m["id"], "{out}");
    assert_eq!(list[0]["state"], "restorable", "{out}");
}

#[test]
fn round_trip_azure_3_5_30() {
    let az = Azurite::start();
    let url = az.url("etcd");
    let m = round_trip(EtcdVersion::V3_5_30, &url, &az.azure_env(), None);
    listed_alone(&url, &az.azure_env(), "rt", &m);
    // The objects are where docs/storage-format.md says, in the container.
    let mut blobs = az.blob_names(false);
    blobs.sort();
    let id = m["id"].as_str().expect("id");
    assert_eq!(
        blobs,
        [
            format!("etcd/rt/manifests/{id}.json"),
            format!("etcd/rt/snapshots/{id}.db.zst")
        ]
    );
}

#[test]
fn round_trip_azure_encrypted_3_4_23() {
    let az = Azurite::start();
    let url = az.url("etcd");
    let key = age_key();
    let m = round_trip(EtcdVersion::V3_4_23, &url, &az.azure_env(), Some(&key));
    listed_alone(&url, &az.azure_env(), "rt", &m);
}

/// A blob changed in the container after the backup (one byte of the data object,
/// rewritten through the Blob API): verify and fetch refuse it on the sha256.
#[test]
fn a_corrupted_blob_fails_verify_and_fetch() {
    let az = Azurite::start();
    let url = az.url("etcd");
    corrupted_object_fails_verify_and_fetch(&url, &az.azure_env(), |key| {
        let store = az.object_store();
        let path = object_store::path::Path::from(format!("etcd/default/{key}"));
        support::runtime().block_on(async {
            use object_store::ObjectStoreExt;
            let mut bytes = store
                .get(&path)
                .await
                .expect("get blob")
                .bytes()
                .await
                .expect("read blob")
                .to_vec();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            store.put(&path, bytes.into()).await.expect("put blob");
        });
    });
}

/// The account and the emulator switch from `[storage.options]`, the key from the
/// environment (where secrets belong), the emulator's URL from AZURITE_BLOB_STORAGE_URL
/// (object_store reads it only from there).
#[test]
fn azure_settings_from_the_config_file() {
    let az = Azurite::start();
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nurl = \"{}\"\n[storage.options]\naccount_name = \"{}\"\nuse_emulator = \"true\"\n",
            az.url("from-config"),
            az.account
        ),
    )
    .expect("write config");
    let env: Vec<(String, String)> = az
        .azure_env()
        .into_iter()
        .filter(|(k, _)| k != "AZURE_STORAGE_USE_EMULATOR" && k != "AZURE_STORAGE_ACCOUNT_NAME")
        .collect();
    let config = config.to_str().expect("utf-8");
    let endpoints = cluster.endpoints().join(",");
    let m: Value = serde_json::from_str(&ok(run(lifeboat(
        &[
            "backup",
            "--config",
            config,
            "--endpoints",
            &endpoints,
            "-w",
            "json",
        ],
        &env,
    ))))
    .expect("manifest JSON");
    let id = m["id"].as_str().expect("id");
    assert!(
        az.blob_names(false)
            .contains(&format!("from-config/default/manifests/{id}.json")),
        "{:?}",
        az.blob_names(false)
    );
    ok(run(lifeboat(
        &["verify", "latest", "--config", config],
        &env,
    )));
    // An option object_store does not know is refused by name.
    std::fs::write(
        dir.path().join("typo.toml"),
        format!(
            "[storage]\nurl = \"{}\"\n[storage.options]\naccount_nmae = \"x\"\n",
            az.url("x")
        ),
    )
    .expect("write config");
    let out = run(lifeboat(
        &[
            "list",
            "--config",
            dir.path().join("typo.toml").to_str().expect("utf-8"),
        ],
        &env,
    ));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unknown Azure option \"account_nmae\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_azure_credentials_and_container_fail_cleanly() {
    let az = Azurite::start();
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let endpoints = cluster.endpoints().join(",");
    // Another key of the same shape: refused, and neither key is printed, not even at -vv.
    let wrong = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode("w".repeat(48))
    };
    let env: Vec<(String, String)> = az
        .azure_env()
        .into_iter()
        .map(|(k, v)| {
            if k == "AZURE_STORAGE_ACCOUNT_KEY" {
                (k, wrong.clone())
            } else {
                (k, v)
            }
        })
        .collect();
    let url = az.url("etcd");
    let out = run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            &url,
            "-vv",
        ],
        &env,
    ));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(all.contains("access denied"), "{all}");
    assert!(
        !all.contains(&wrong) && !all.contains(&az.key),
        "a key was printed: {all}"
    );

    // A container that does not exist.
    let out = run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            "az://no-such-container/etcd",
        ],
        &az.azure_env(),
    ));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the container does not exist"),
        "{}",
        text(&out.stderr)
    );
    assert!(az.blob_names(true).is_empty(), "{:?}", az.blob_names(true));
}

/// Azurite is SIGKILLed while the data object's blocks go up. The run fails; what it
/// staged are uncommitted blocks, which no listing shows (Azure drops them after 7 days;
/// there is no call to drop them sooner, so object_store's abort does nothing): no
/// manifest, no data object, nothing in `list`, and the earlier backup still verifies.
#[test]
fn azurite_killed_mid_upload_leaves_nothing_that_looks_like_a_backup() {
    let cluster = workload::large_cluster(300 << 20);
    let mut az = Azurite::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).expect("spool dir");
    let url = az.url("etcd");
    let env = az.azure_env();
    let endpoints = cluster.endpoints().join(",");
    // An earlier, good backup in the same container must survive the failed run.
    let first: Value = serde_json::from_str(&ok(run(lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoints,
            "--storage",
            &url,
            "-w",
            "json",
        ],
        &env,
    ))))
    .expect("manifest JSON");
    // Azurite's own durability is not under test: let it save that backup's metadata.
    az.settle();
    let committed = az.blob_names(false);
    assert_eq!(committed.len(), 2, "{committed:?}");

    let retry = [("LIFEBOAT_STORAGE_RETRY_TIMEOUT".to_owned(), "3s".to_owned())];
    let child = spawn_streaming_backup(
        &endpoints,
        &url,
        &spool,
        &[env.clone(), retry.to_vec()].concat(),
    );
    // The second run's data object is there as uncommitted blocks...
    let deadline = Instant::now() + Duration::from_secs(30);
    let staged = loop {
        let staged: Vec<String> = az
            .blob_names(true)
            .into_iter()
            .filter(|b| !committed.contains(b))
            .collect();
        if !staged.is_empty() {
            break staged;
        }
        assert!(
            Instant::now() < deadline,
            "no uncommitted blocks appeared in the container"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        staged.len() == 1 && staged[0].starts_with("etcd/default/snapshots/"),
        "{staged:?}"
    );
    // ... which neither a listing nor `lifeboat list` counts.
    assert_eq!(az.blob_names(false), committed);
    let listed = list_json(&url, &env);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], first["id"]);

    az.kill();
    // Requests are retried for 3 s: stay away longer, so the run fails.
    std::thread::sleep(Duration::from_secs(8));
    az.restart();
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
    // No manifest of the failed run anywhere, committed or not; only the earlier backup
    // is a backup.
    let everything = az.blob_names(true);
    assert!(
        everything
            .iter()
            .filter(|b| b.contains("/manifests/"))
            .count()
            == 1,
        "{everything:?}"
    );
    assert_eq!(az.blob_names(false), committed);
    let listed = list_json(&url, &env);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], first["id"]);
    ok(run(lifeboat(
        &["verify", "latest", "--storage", &url],
        &env,
    )));
}
