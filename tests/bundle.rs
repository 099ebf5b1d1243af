//! `[bundle] files`: the restore bundle stored with a backup in real SeaweedFS, always
//! age-encrypted, listed in the manifest; `fetch --bundle DIR` brings the files back
//! byte for byte with their modes; prune removes a bundle with its backup.

use crate::support;

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use support::etcd::Cluster;
use support::keys::age_key;
use support::lifeboat::{lifeboat, list_json, ok, run, s3_objects};
use support::s3::SeaweedFs;
use support::tools::EtcdVersion;

#[test]
fn a_bundle_is_stored_encrypted_and_fetched_back_with_its_modes() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    cluster.etcdctl_ok(&["put", "/registry/secrets/a/s", "x"]);
    let s3 = SeaweedFs::start();
    let env = s3.aws_env();
    let storage = format!("s3://{}/etcd", s3.bucket);
    let key = age_key();
    let dir = tempfile::tempdir().unwrap();
    // What a kubeadm control plane would list: a key, a certificate, the apiserver's
    // EncryptionConfiguration.
    let pki = dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let files = [
        (
            pki.join("ca.key"),
            b"-----BEGIN RSA PRIVATE KEY-----\nsecret\n".to_vec(),
            0o600,
        ),
        (
            pki.join("ca.crt"),
            b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            0o644,
        ),
        (
            dir.path().join("encryption.yaml"),
            (0..=255u8).collect(),
            0o640,
        ),
    ];
    for (path, bytes, mode) in &files {
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let list = files
        .iter()
        .map(|(p, _, _)| format!("\"{}\"", p.display()))
        .collect::<Vec<_>>()
        .join(", ");
    let config = |recipients: &str| {
        let path = dir.path().join("lifeboat.toml");
        std::fs::write(
            &path,
            format!(
                "[etcd]\nendpoints = [\"{}\"]\n[storage]\nurl = \"{storage}\"\n\
                 [restore]\ninitial-cluster-token = \"t\"\n[[restore.members]]\nname = \"m0\"\n\
                 peer-url = \"http://127.0.0.1:23800\"\nclient-url = \"http://127.0.0.1:23790\"\n\
                 data-dir = \"{}\"\netcd-start = \"true\"\netcd-stop = \"true\"\netcdutl = \"{}\"\n\
                 [bundle]\nfiles = [{list}]\n{recipients}",
                cluster.endpoints()[0],
                dir.path().join("m0/data").display(),
                EtcdVersion::V3_5_30.etcdutl().unwrap().display(),
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };

    // Without a recipient the bundle, which holds keys, is refused, and nothing stored.
    let c = config("");
    let out = run(lifeboat(&["backup", "--config", &c], &env));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("never stored unencrypted"), "{err}");
    assert!(list_json(&storage, &env).is_empty());

    // With [bundle] recipients (the snapshot itself is not encrypted here).
    let c = config(&format!("recipients = [\"{}\"]\n", key.recipient));
    let m: Value = serde_json::from_str(&ok(run(lifeboat(
        &["backup", "--config", &c, "-w", "json"],
        &env,
    ))))
    .unwrap();
    let id = m["id"].as_str().unwrap().to_owned();
    let b = &m["bundle"];
    assert_eq!(b["key"], format!("bundles/{id}.age"), "{m}");
    let listed: Vec<(String, u64, u64)> = b["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["mode"].as_u64().unwrap(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, u64)> = files
        .iter()
        .map(|(p, bytes, mode)| {
            (
                p.display().to_string(),
                u64::from(*mode),
                bytes.len() as u64,
            )
        })
        .collect();
    assert_eq!(listed, want);
    // Stored encrypted: the bundle object is age, and the key inside is not readable.
    let bundle_object = format!("etcd/default/bundles/{id}.age");
    let keys: Vec<String> = s3_objects(&s3)
        .iter()
        .map(|o| o.location.to_string())
        .collect();
    assert!(keys.contains(&bundle_object), "{keys:?}");
    let stored = support::runtime().block_on(async {
        use object_store::ObjectStoreExt;
        let path = object_store::path::Path::from(bundle_object.as_str());
        s3.object_store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    assert!(stored.starts_with(b"age-encryption.org/v1"));
    assert!(!stored.windows(6).any(|w| w == b"secret"));
    // The files are gone from the host; fetch brings them back.
    for (path, _, _) in &files {
        std::fs::remove_file(path).unwrap();
    }
    // Restore preflight names each bundle file the member lacks.
    let plan = |c: &str| -> Value {
        serde_json::from_str(&ok(run(lifeboat(
            &[
                "restore", "plan", "--config", c, "--backup", &id, "-w", "json",
            ],
            &env,
        ))))
        .unwrap()
    };
    let notes = plan(&c)["notes"].to_string();
    for (path, _, _) in &files {
        assert!(notes.contains(&path.display().to_string()), "{notes}");
    }
    assert!(notes.contains("--bundle"), "{notes}");
    let restore = tempfile::tempdir().unwrap();
    let r = restore.path().to_str().unwrap();
    let no_identity = run(lifeboat(
        &["fetch", &id, "--bundle", r, "--config", &c],
        &env,
    ));
    assert_ne!(no_identity.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&no_identity.stderr).contains("--identity"));
    let identity = key.identity_file.to_str().unwrap();
    let fetch_bundle = || {
        run(lifeboat(
            &[
                "fetch",
                &id,
                "--bundle",
                r,
                "--identity",
                identity,
                "--config",
                &c,
            ],
            &env,
        ))
    };
    ok(fetch_bundle());
    for (path, bytes, mode) in &files {
        let back = restore.path().join(path.strip_prefix("/").unwrap());
        assert_eq!(&std::fs::read(&back).unwrap(), bytes, "{}", back.display());
        let m = std::fs::metadata(&back).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, *mode, "{}", back.display());
    }
    // A second fetch never overwrites what the first wrote.
    let again = fetch_bundle();
    assert_ne!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));

    // Prune takes the bundle with its backup.
    let policy = dir.path().join("prune.toml");
    std::fs::write(
        &policy,
        format!("[storage]\nurl = \"{storage}\"\n[retention]\nkeep-last = 1\n",),
    )
    .unwrap();
    // A bundle file that is missing fails the backup, naming it, before anything is
    // stored; back in place (from the fetched copy), the backup goes through.
    let out = run(lifeboat(&["backup", "--config", &c], &env));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&files[0].0.display().to_string()), "{err}");
    assert_eq!(list_json(&storage, &env).len(), 1);
    for (path, _, _) in &files {
        std::fs::copy(restore.path().join(path.strip_prefix("/").unwrap()), path).unwrap();
    }
    assert!(!plan(&c)["notes"].to_string().contains("bundle files"));
    ok(run(lifeboat(&["backup", "--config", &c], &env)));
    ok(run(lifeboat(
        &["prune", "--config", policy.to_str().unwrap()],
        &env,
    )));
    let left = list_json(&storage, &env);
    assert_eq!(left.len(), 1);
    assert_ne!(left[0]["id"], id.as_str());
    let keys: Vec<String> = s3_objects(&s3)
        .iter()
        .map(|o| o.location.to_string())
        .collect();
    assert!(
        !keys.contains(&bundle_object),
        "the pruned backup's bundle is left: {keys:?}"
    );
    let kept = format!(
        "etcd/default/bundles/{}.age",
        left[0]["id"].as_str().unwrap()
    );
    assert!(keys.contains(&kept), "{keys:?}");
}
