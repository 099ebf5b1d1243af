//! Connecting like etcdctl: TLS with client certificates, the ETCDCTL_* variables, the
//! `[etcd]` config section, their precedence, and clear errors for bad TLS files.

use crate::support;

use std::process::{Command, Output, Stdio};

use support::etcd::Cluster;
use support::tls::TlsFiles;
use support::tools::EtcdVersion;

fn lifeboat(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("ETCDCTL_") || k.starts_with("AWS_") || k.starts_with("LIFEBOAT_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run lifeboat")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn path(p: &std::path::Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

fn tls_backups(version: EtcdVersion) {
    let tls = TlsFiles::generate();
    let cluster = Cluster::start_tls(version, 1, &tls);
    cluster.etcdctl_ok(&["put", "/registry/secrets/default/token", "s3cr3t"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("b").display());
    let endpoint = cluster.endpoints()[0].clone();

    // Flags, as etcdctl takes them.
    let out = lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoint,
            "--cacert",
            &path(&tls.ca),
            "--cert",
            &path(&tls.client_cert),
            "--key",
            &path(&tls.client_key),
            "--storage",
            &storage,
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "TLS backup with flags: {}",
        text(&out.stderr)
    );

    // The same through ETCDCTL_* variables, endpoint without a scheme (https implied).
    let bare = endpoint.trim_start_matches("https://").to_owned();
    let out = lifeboat(
        &["backup", "--storage", &storage],
        &[
            ("ETCDCTL_ENDPOINTS", bare),
            ("ETCDCTL_CACERT", path(&tls.ca)),
            ("ETCDCTL_CERT", path(&tls.client_cert)),
            ("ETCDCTL_KEY", path(&tls.client_key)),
        ],
    );
    assert!(
        out.status.success(),
        "TLS backup with ETCDCTL_*: {}",
        text(&out.stderr)
    );

    // --insecure-skip-tls-verify: no CA given, the server certificate is taken as it
    // is, but the client certificate is still presented (etcd requires one here), by
    // flag and by ETCDCTL_INSECURE_SKIP_TLS_VERIFY.
    let out = lifeboat(
        &[
            "backup",
            "--endpoints",
            &endpoint,
            "--insecure-skip-tls-verify",
            "--cert",
            &path(&tls.client_cert),
            "--key",
            &path(&tls.client_key),
            "--storage",
            &storage,
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "backup with --insecure-skip-tls-verify: {}",
        text(&out.stderr)
    );
    let out = lifeboat(
        &["backup", "--storage", &storage],
        &[
            ("ETCDCTL_ENDPOINTS", endpoint.clone()),
            ("ETCDCTL_INSECURE_SKIP_TLS_VERIFY", "true".into()),
            ("ETCDCTL_CERT", path(&tls.client_cert)),
            ("ETCDCTL_KEY", path(&tls.client_key)),
        ],
    );
    assert!(
        out.status.success(),
        "backup with ETCDCTL_INSECURE_SKIP_TLS_VERIFY: {}",
        text(&out.stderr)
    );
    let list = lifeboat(&["list", "--storage", &storage, "-w", "json"], &[]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).expect("JSON");
    assert_eq!(list.as_array().map(Vec::len), Some(4));
    // Skipping the server check does not skip the server's check of us: without a
    // client certificate, or with one from another CA, etcd refuses the connection.
    for (what, cert_args) in [
        ("no client certificate", vec![]),
        (
            "foreign client certificate",
            vec![
                "--cert".to_owned(),
                path(&tls.other_client_cert),
                "--key".to_owned(),
                path(&tls.other_client_key),
            ],
        ),
    ] {
        let mut args = vec![
            "backup",
            "--endpoints",
            &endpoint,
            "--insecure-skip-tls-verify",
            "--dial-timeout",
            "2s",
            "--storage",
            &storage,
        ];
        args.extend(cert_args.iter().map(String::as_str));
        let out = lifeboat(&args, &[]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(&endpoint),
            "{what}: {}",
            text(&out.stderr)
        );
    }

    // A client certificate from another CA is refused by etcd; so is a server
    // certificate when trusting the wrong CA. Both name the endpoint.
    for (what, ca, cert, key) in [
        (
            "foreign client CA",
            &tls.ca,
            &tls.other_client_cert,
            &tls.other_client_key,
        ),
        (
            "wrong CA trusted",
            &tls.other_ca,
            &tls.client_cert,
            &tls.client_key,
        ),
    ] {
        let out = lifeboat(
            &[
                "backup",
                "--endpoints",
                &endpoint,
                "--cacert",
                &path(ca),
                "--cert",
                &path(cert),
                "--key",
                &path(key),
                "--dial-timeout",
                "2s",
                "--storage",
                &storage,
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(&endpoint),
            "{what}: {}",
            text(&out.stderr)
        );
    }

    // Files that are not certificates, or missing: usage errors naming the file.
    let garbage = tls.write_garbage("garbage.pem");
    for (flag, file) in [
        ("--cert", path(&garbage)),
        ("--cacert", "/nonexistent/ca.crt".to_owned()),
    ] {
        let mut args = vec![
            "backup",
            "--endpoints",
            &endpoint,
            "--cacert",
            &path(&tls.ca),
            "--cert",
            &path(&tls.client_cert),
            "--key",
            &path(&tls.client_key),
            "--storage",
            &storage,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        let i = args.iter().position(|a| a == flag).expect("flag") + 1;
        args[i] = file.clone();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = lifeboat(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(&file),
            "{flag}: {}",
            text(&out.stderr)
        );
    }
    // The same with --insecure-skip-tls-verify, where lifeboat reads the files itself.
    for (flag, file) in [
        ("--key", path(&garbage)),
        ("--cert", "/nonexistent/client.crt".to_owned()),
    ] {
        let (cert, key) = match flag {
            "--key" => (path(&tls.client_cert), file.clone()),
            _ => (file.clone(), path(&tls.client_key)),
        };
        let out = lifeboat(
            &[
                "backup",
                "--endpoints",
                &endpoint,
                "--insecure-skip-tls-verify",
                "--cert",
                &cert,
                "--key",
                &key,
                "--storage",
                &storage,
            ],
            &[],
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "insecure {flag}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(&file),
            "insecure {flag}: {}",
            text(&out.stderr)
        );
    }
    // Only the four good backups exist: the failures left nothing.
    let list = lifeboat(&["list", "--storage", &storage, "-w", "json"], &[]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).expect("JSON");
    assert_eq!(list.as_array().map(Vec::len), Some(4));
}

#[test]
fn tls_client_certificates_3_5_30() {
    tls_backups(EtcdVersion::V3_5_30);
}

#[test]
fn tls_client_certificates_3_4_23() {
    tls_backups(EtcdVersion::V3_4_23);
}

#[test]
fn flags_win_over_environment_and_environment_over_the_config_file() {
    let cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    let good = cluster.endpoints()[0].clone();
    let bad = "http://127.0.0.1:1".to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = format!("file://{}", dir.path().join("b").display());
    let config = dir.path().join("lifeboat.toml");
    let write_config = |endpoint: &str| {
        std::fs::write(
            &config,
            format!("[etcd]\nendpoints = [\"{endpoint}\"]\ndial-timeout = \"1s\"\n[backup]\ncluster = \"from-file\"\n"),
        )
        .expect("write config");
    };

    // File alone.
    write_config(&good);
    let out = lifeboat(
        &["--config", &path(&config), "backup", "--storage", &storage],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Environment beats the file.
    write_config(&bad);
    let out = lifeboat(
        &["--config", &path(&config), "backup", "--storage", &storage],
        &[("ETCDCTL_ENDPOINTS", good.clone())],
    );
    assert!(
        out.status.success(),
        "env should win over file: {}",
        text(&out.stderr)
    );
    // A flag beats the environment.
    let out = lifeboat(
        &[
            "--config",
            &path(&config),
            "backup",
            "--storage",
            &storage,
            "--endpoints",
            &bad,
        ],
        &[("ETCDCTL_ENDPOINTS", good.clone())],
    );
    assert_eq!(out.status.code(), Some(1), "flag should win over env");
    assert!(
        text(&out.stderr).contains("127.0.0.1:1"),
        "{}",
        text(&out.stderr)
    );
    // The [backup] cluster name from the file files the backups under from-file/.
    assert!(dir.path().join("b/from-file/manifests").is_dir());
}
