//! `lifeboat diff` and `lifeboat restore keys` against a live etcd 3.5.30 and backups in
//! SeaweedFS, with values from Kubernetes' own encoder.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::etcd::Cluster;
use support::k8s::{self, EncodeInput};
use support::lifeboat::{lifeboat, ok, run, text};
use support::s3::SeaweedFs;
use support::tools::EtcdVersion;

use crate::objects_k8s::{cluster_objects, cluster_scoped, put_all};

struct Bench {
    cluster: Cluster,
    s3: SeaweedFs,
    env: Vec<(String, String)>,
    storage: String,
}

impl Bench {
    fn start() -> Bench {
        let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
        cluster.wait_healthy(Duration::from_secs(30));
        let s3 = SeaweedFs::start();
        let env = s3.aws_env();
        let storage = s3.bucket_url();
        Bench {
            cluster,
            s3,
            env,
            storage,
        }
    }

    fn backup(&self) -> String {
        let endpoints = self.cluster.endpoints().join(",");
        let out = ok(run(lifeboat(
            &[
                "backup",
                "--endpoints",
                &endpoints,
                "--storage",
                &self.storage,
                "-w",
                "json",
            ],
            &self.env,
        )));
        let m: Value = serde_json::from_str(&out).expect("backup JSON");
        m["id"].as_str().expect("id").to_owned()
    }

    fn lifeboat(&self, args: &[&str]) -> std::process::Output {
        let endpoints = self.cluster.endpoints().join(",");
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--storage", &self.storage, "--endpoints", &endpoints]);
        run(lifeboat(&a, &self.env))
    }

    /// Every key under `prefix` with its value and mod revision, live.
    fn live(&self, prefix: &str) -> BTreeMap<String, (Vec<u8>, i64)> {
        let rt = support::runtime();
        rt.block_on(async {
            let mut c = support::workload::connect(&self.cluster).await;
            let r = c
                .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .expect("get");
            r.kvs()
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        (kv.value().to_vec(), kv.mod_revision()),
                    )
                })
                .collect()
        })
    }

    fn delete_prefix(&self, prefix: &str) {
        self.cluster.etcdctl_ok(&["del", "--prefix", prefix]);
    }
}

fn encode_all(ns: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut inputs: Vec<EncodeInput> = ns.iter().flat_map(|n| cluster_objects(n)).collect();
    inputs.extend(cluster_scoped());
    k8s::encode(&inputs, None)
}

fn changes(diff: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = diff["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_owned(),
                c["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn diff_between_backups_and_live_reports_exactly_the_changes() {
    let b = Bench::start();
    put_all(&b.cluster, &encode_all(&["shop", "blog"]));
    let first = b.backup();
    // Known changes: a namespace's configmap deleted, a secret rewritten, a pod added.
    b.cluster
        .etcdctl_ok(&["del", "/registry/configmaps/shop/settings"]);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "blog", "uid": "uid-secret"}, "data": {"password": "cm90YXRlZA=="}});
    let new_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "extra", "namespace": "shop", "uid": "uid-extra"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    put_all(
        &b.cluster,
        &k8s::encode(
            &[
                EncodeInput::new("/registry/secrets/blog/db", secret),
                EncodeInput::new("/registry/pods/shop/extra", new_pod),
            ],
            None,
        ),
    );
    let second = b.backup();
    let out = ok(b.lifeboat(&["diff", &first, &second, "-w", "json"]));
    let d: Value = serde_json::from_str(&out).expect("diff JSON");
    let want = vec![
        ("added".to_owned(), "/registry/pods/shop/extra".to_owned()),
        ("changed".to_owned(), "/registry/secrets/blog/db".to_owned()),
        (
            "deleted".to_owned(),
            "/registry/configmaps/shop/settings".to_owned(),
        ),
    ];
    assert_eq!(changes(&d), want, "{d}");
    assert_eq!(
        (
            d["added"].as_u64(),
            d["deleted"].as_u64(),
            d["changed"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    let groups: Vec<(String, String, u64, u64, u64)> = d["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["resource"].as_str().unwrap().into(),
                g["namespace"].as_str().unwrap_or("-").into(),
                g["added"].as_u64().unwrap(),
                g["deleted"].as_u64().unwrap(),
                g["changed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("configmaps".into(), "shop".into(), 0, 1, 0),
            ("pods".into(), "shop".into(), 1, 0, 0),
            ("secrets".into(), "blog".into(), 0, 0, 1),
        ]
    );
    let changed = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["change"] == "changed")
        .unwrap();
    assert!(
        changed["before_mod_revision"].as_i64().unwrap()
            < changed["mod_revision"].as_i64().unwrap()
    );
    // Each change is shown with its object, read after the keys were compared: a
    // deleted one as A had it, the others as B has them.
    let uid = |key: &str| {
        let c = d["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == key)
            .unwrap_or_else(|| panic!("{key} not among the changes: {d}"));
        assert!(c["size"].as_u64().unwrap() > 0, "{c}");
        c["object"]["uid"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(uid("/registry/pods/shop/extra"), "uid-extra");
    assert_eq!(uid("/registry/secrets/blog/db"), "uid-secret");
    assert!(!uid("/registry/configmaps/shop/settings").is_empty());
    // Scoped to a namespace, only its changes.
    let d: Value = serde_json::from_str(&ok(b.lifeboat(&[
        "diff",
        &first,
        &second,
        "-w",
        "json",
        "--namespace",
        "blog",
    ])))
    .unwrap();
    assert_eq!(
        changes(&d),
        vec![("changed".to_owned(), "/registry/secrets/blog/db".to_owned())]
    );
    // Against the live cluster (the default B), after one more change.
    b.cluster
        .etcdctl_ok(&["del", "/registry/roles/blog/reader"]);
    let d: Value = serde_json::from_str(&ok(b.lifeboat(&["diff", &second, "-w", "json"]))).unwrap();
    assert_eq!(
        changes(&d),
        vec![(
            "deleted".to_owned(),
            "/registry/roles/blog/reader".to_owned()
        )]
    );
    // The simple output counts per resource and namespace.
    let simple = ok(b.lifeboat(&["diff", &first, &second]));
    assert!(simple.contains("1 added, 1 deleted, 1 changed"), "{simple}");
    assert!(
        simple.contains("configmaps, shop: 0 added, 1 deleted, 0 changed"),
        "{simple}"
    );
    // Pages bigger than gRPC's 4 MiB are read in smaller pages.
    let big: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("/registry/configmaps/big/c{i}"),
                vec![b'x'; 1 << 20],
            )
        })
        .collect();
    put_all(&b.cluster, &big);
    let d: Value = serde_json::from_str(&ok(
        b.lifeboat(&["diff", &second, "-w", "json", "-n", "big"])
    ))
    .unwrap();
    assert_eq!(d["added"].as_u64(), Some(6), "{}", d["groups"]);
    // Their values were read from the live cluster: their size, and why they are not
    // Kubernetes objects.
    for c in d["changes"].as_array().unwrap() {
        assert_eq!(c["size"].as_u64(), Some(1 << 20), "{c}");
        assert!(c["error"].as_str().unwrap().contains("neither"), "{c}");
    }
    // Live as A: what B lacks is deleted, and read from the live cluster.
    let d: Value = serde_json::from_str(&ok(
        b.lifeboat(&["diff", "live", &second, "-w", "json", "-n", "big"])
    ))
    .unwrap();
    assert_eq!(d["deleted"].as_u64(), Some(6), "{}", d["groups"]);
    for c in d["changes"].as_array().unwrap() {
        assert_eq!(c["size"].as_u64(), Some(1 << 20), "{c}");
    }
    drop(b.s3);
}

#[test]
fn restore_keys_brings_a_deleted_namespace_back_byte_for_byte() {
    let b = Bench::start();
    put_all(&b.cluster, &encode_all(&["prod", "dev"]));
    let id = b.backup();
    let before = b.live("/registry/");
    let in_prod = |k: &str| k.contains("/prod/") || k.ends_with("/namespaces/prod");
    let prod: BTreeMap<_, _> = before.iter().filter(|(k, _)| in_prod(k)).collect();
    assert_eq!(prod.len(), cluster_objects("prod").len());
    for k in prod.keys() {
        b.cluster.etcdctl_ok(&["del", k]);
    }
    // A key that now exists live with another value, and one the dry run must not touch.
    b.cluster.etcdctl_ok(&[
        "put",
        "/registry/configmaps/prod/settings",
        "recreated by hand",
    ]);
    let rev_before = b.cluster.revision();

    // --dry-run: says what it would do, writes nothing.
    let out = ok(b.lifeboat(&[
        "restore",
        "keys",
        "--backup",
        &id,
        "--namespace",
        "prod",
        "--dry-run",
        "-w",
        "json",
    ]));
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["dry_run"], true);
    assert_eq!(s["written"].as_u64(), Some(prod.len() as u64 - 1), "{s}");
    let after_dry = b.cluster.revision();
    assert_eq!(after_dry, rev_before, "the dry run wrote something");
    // Namespaces first, workloads last.
    let order: Vec<String> = s["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order[0], "/registry/namespaces/prod");
    assert!(
        order.iter().position(|k| k.contains("/secrets/"))
            < order.iter().position(|k| k.contains("/deployments/"))
    );
    assert_eq!(
        order.last().map(String::as_str),
        Some("/registry/pods/prod/web-1")
    );

    // The real run: everything back, the hand-made key kept.
    let out = ok(b.lifeboat(&["restore", "keys", "--backup", &id, "--namespace", "prod"]));
    assert!(
        out.contains("skipped: exists live with another value"),
        "{out}"
    );
    assert!(
        out.contains("the apiserver sees the restored objects as new"),
        "{out}"
    );
    let now = b.live("/registry/");
    for (k, (v, _)) in &prod {
        if k.ends_with("/configmaps/prod/settings") {
            assert_eq!(now[*k].0, b"recreated by hand");
        } else {
            assert_eq!(&now[*k].0, v, "{k} not restored byte for byte");
        }
    }
    // Nothing else changed.
    for (k, (v, m)) in &before {
        if !in_prod(k) {
            assert_eq!(now[k], (v.clone(), *m), "{k} was touched");
        }
    }
    // Again: all skipped, nothing written; --overwrite replaces the hand-made value.
    let s: Value = serde_json::from_str(&ok(b.lifeboat(&[
        "restore",
        "keys",
        "--backup",
        &id,
        "--namespace",
        "prod",
        "-w",
        "json",
    ])))
    .unwrap();
    assert_eq!(s["written"].as_u64(), Some(0));
    let s: Value = serde_json::from_str(&ok(b.lifeboat(&[
        "restore",
        "keys",
        "--backup",
        &id,
        "--namespace",
        "prod",
        "--overwrite",
        "-w",
        "json",
    ])))
    .unwrap();
    assert_eq!(s["overwritten"].as_u64(), Some(1), "{s}");
    assert_eq!(
        b.live("/registry/configmaps/prod/settings")["/registry/configmaps/prod/settings"].0,
        before["/registry/configmaps/prod/settings"].0
    );

    // Another cluster is refused unless forced.
    let mut other = Cluster::start(EtcdVersion::V3_5_30, 1);
    other.wait_healthy(Duration::from_secs(30));
    let other_endpoints = other.endpoints().join(",");
    let a = [
        "restore",
        "keys",
        "--backup",
        id.as_str(),
        "--prefix",
        "/registry/secrets/",
        "--storage",
        &b.storage,
        "--endpoints",
        &other_endpoints,
    ];
    let out = run(lifeboat(&a, &b.env));
    assert!(
        !out.status.success() && text(&out.stderr).contains("--force-other-cluster"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        other.etcdctl_ok(&["get", "/registry/", "--prefix", "--keys-only"]),
        ""
    );
    let mut forced = a.to_vec();
    forced.push("--force-other-cluster");
    ok(run(lifeboat(&forced, &b.env)));
    let copied = other.etcdctl_ok(&["get", "/registry/secrets/", "--prefix", "--keys-only"]);
    assert_eq!(
        copied.lines().filter(|l| !l.is_empty()).count(),
        2,
        "{copied}"
    );
}

#[test]
fn restore_keys_keeps_a_key_written_while_it_runs() {
    let b = Bench::start();
    let n = 2000;
    let kvs: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("/app/items/{i:05}"),
                format!("backup value {i}").into_bytes(),
            )
        })
        .collect();
    put_all(&b.cluster, &kvs);
    let id = b.backup();
    b.delete_prefix("/app/items/");
    // While the restore runs, a writer creates the last keys of its order itself.
    let endpoints = b.cluster.endpoints();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = support::runtime();
            rt.block_on(async {
                let mut c = support::workload::connect_endpoints(endpoints, None).await;
                let mut written = Vec::new();
                for i in (n - 300..n).rev() {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let k = format!("/app/items/{i:05}");
                    c.put(k.as_str(), "written during the restore", None)
                        .await
                        .expect("put");
                    written.push(k);
                }
                written
            })
        })
    };
    let out = ok(b.lifeboat(&[
        "restore",
        "keys",
        "--backup",
        &id,
        "--prefix",
        "/app/items/",
        "-w",
        "json",
    ]));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.join().expect("writer");
    let s: Value = serde_json::from_str(&out).unwrap();
    let live = b.live("/app/items/");
    assert_eq!(live.len(), n);
    for k in &written {
        assert_eq!(
            live[k].0, b"written during the restore",
            "{k} was clobbered by the restore"
        );
    }
    // The writer got ahead of the restore for some keys: those were skipped, not written.
    let skipped = s["skipped"].as_u64().unwrap();
    assert!(
        skipped > 0,
        "the writer never got ahead: the test proves nothing ({s})"
    );
    for (k, v) in &kvs {
        if !written.contains(k) {
            assert_eq!(&live[k].0, v, "{k}");
        }
    }
}
