//! `lifeboat objects` on values written by Kubernetes' own serializer and encryption
//! transformers (tests/tools/k8s-encode, built from the Kubernetes 1.36 sources): the
//! metadata read back is what the objects said, encrypted values decrypt with the
//! apiserver's EncryptionConfiguration, and bad values are listed with their reason.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::etcd::Cluster;
use support::k8s::{self, EncodeInput};
use support::lifeboat::{lifeboat, ok, run, text};
use support::tools::EtcdVersion;

fn input(key: &str, object: Value) -> EncodeInput {
    EncodeInput {
        key: key.to_owned(),
        object,
        format: None,
        resource: None,
    }
}

fn meta(name: &str, ns: Option<&str>, uid: &str) -> Value {
    let mut m = json!({"name": name, "uid": uid, "creationTimestamp": "2026-11-30T08:15:00Z"});
    if let Some(ns) = ns {
        m["namespace"] = json!(ns);
    }
    m
}

/// Objects of many kinds and groups, as the apiserver would store them, with the
/// metadata `objects` must read back.
pub fn cluster_objects(ns: &str) -> Vec<EncodeInput> {
    let mut pod_meta = meta("web-1", Some(ns), "uid-pod");
    pod_meta["labels"] = json!({"app": "web", "tier": "front"});
    pod_meta["finalizers"] = json!(["example.com/cleanup"]);
    pod_meta["deletionTimestamp"] = json!("2026-12-01T09:00:00Z");
    pod_meta["deletionGracePeriodSeconds"] = json!(30);
    pod_meta["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f",
        "uid": "uid-rs", "controller": true, "blockOwnerDeletion": true
    }]);
    let mut rs_meta = meta("web-5d4f", Some(ns), "uid-rs");
    rs_meta["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "uid-deploy", "controller": true
    }]);
    let mut widget_meta = meta("blue", Some(ns), "uid-widget");
    widget_meta["labels"] = json!({"color": "blue"});
    widget_meta["ownerReferences"] = json!([{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "settings", "uid": "uid-cm"
    }]);
    let r = |rest: &str| format!("/registry/{rest}");
    vec![
        input(
            &r(&format!("namespaces/{ns}")),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(ns, None, "uid-ns"), "spec": {"finalizers": ["kubernetes"]}}),
        ),
        input(
            &r(&format!("configmaps/{ns}/settings")),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("settings", Some(ns), "uid-cm"), "data": {"mode": "fast"}}),
        ),
        input(
            &r(&format!("secrets/{ns}/db")),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta("db", Some(ns), "uid-secret"), "type": "Opaque", "data": {"password": "aHVudGVyMg=="}}),
        ),
        input(
            &r(&format!("serviceaccounts/{ns}/runner")),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("runner", Some(ns), "uid-sa")}),
        ),
        input(
            &r(&format!("pods/{ns}/web-1")),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}),
        ),
        input(
            &r(&format!("replicasets/{ns}/web-5d4f")),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": rs_meta, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
        ),
        input(
            &r(&format!("deployments/{ns}/web")),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("web", Some(ns), "uid-deploy"), "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}),
        ),
        input(
            &r(&format!("services/specs/{ns}/web")),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("web", Some(ns), "uid-svc"), "spec": {"ports": [{"port": 80}]}}),
        ),
        input(
            &r(&format!("roles/{ns}/reader")),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta("reader", Some(ns), "uid-role"), "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        ),
        input(
            &r(&format!("cronjobs/{ns}/nightly")),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("nightly", Some(ns), "uid-cron"), "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}}}),
        ),
        input(
            &r(&format!("leases/{ns}/lock")),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta("lock", Some(ns), "uid-lease")}),
        ),
        input(
            &r(&format!("example.com/widgets/{ns}/blue")),
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": widget_meta, "spec": {"size": 3}}),
        ),
    ]
}

/// Cluster-scoped objects, among them the JSON-stored CRD and APIService.
pub fn cluster_scoped() -> Vec<EncodeInput> {
    vec![
        input(
            "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com",
            json!({
                "apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
                "metadata": meta("widgets.example.com", None, "uid-crd"),
                "spec": {"group": "example.com", "names": {"plural": "widgets", "kind": "Widget"}, "scope": "Namespaced", "version": "v1"}
            }),
        ),
        input(
            "/registry/apiregistration.k8s.io/apiservices/v1.example.com",
            json!({
                "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": meta("v1.example.com", None, "uid-apiservice"),
                "spec": {"group": "example.com", "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15}
            }),
        ),
        input(
            "/registry/priorityclasses/critical",
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": meta("critical", None, "uid-pc"), "value": 1000000}),
        ),
        input(
            "/registry/minions/node-1",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": meta("node-1", None, "uid-node")}),
        ),
        input(
            "/registry/clusterroles/admin-lite",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta("admin-lite", None, "uid-cr")}),
        ),
    ]
}

/// Writes `kvs` into the cluster, byte for byte.
pub fn put_all(cluster: &Cluster, kvs: &[(String, Vec<u8>)]) {
    let rt = support::runtime();
    rt.block_on(async {
        let mut c = support::workload::connect(cluster).await;
        for (k, v) in kvs {
            c.put(k.as_bytes(), v.clone(), None).await.expect("put");
        }
    });
}

pub fn objects_json(args: &[&str]) -> Value {
    let mut a = vec!["objects", "-w", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(run(lifeboat(&a, &[])))).expect("objects JSON")
}

fn by_key(listing: &Value) -> BTreeMap<String, Value> {
    listing["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| (o["key"].as_str().expect("key").to_owned(), o.clone()))
        .collect()
}

/// The metadata `objects` must show for an input object.
fn expected(object: &Value) -> Value {
    let m = &object["metadata"];
    let mut e = json!({
        "apiVersion": object["apiVersion"],
        "kind": object["kind"],
        "name": m["name"],
        "uid": m["uid"],
        "creationTimestamp": m["creationTimestamp"],
    });
    for f in ["namespace", "deletionTimestamp", "labels", "finalizers"] {
        if !m[f].is_null() {
            e[f] = m[f].clone();
        }
    }
    if let Some(owners) = m["ownerReferences"].as_array() {
        e["ownerReferences"] = owners
            .iter()
            .map(|o| {
                let mut x = json!({"apiVersion": o["apiVersion"], "kind": o["kind"], "name": o["name"], "uid": o["uid"]});
                if o["controller"] == true {
                    x["controller"] = json!(true);
                }
                x
            })
            .collect();
    }
    e
}

fn check_decoded(row: &Value, object: &Value, encoding: &str) {
    let mut got = row["object"].clone();
    assert_eq!(got["encoding"], encoding, "{row}");
    got.as_object_mut().unwrap().remove("encoding");
    assert_eq!(got, expected(object), "{}", row["key"]);
}

#[test]
fn objects_encoded_by_kubernetes_decode_to_their_metadata() {
    let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    cluster.wait_healthy(Duration::from_secs(30));
    let mut inputs = cluster_objects("team-a");
    inputs.extend(cluster_scoped());
    let encoded = k8s::encode(&inputs, None);
    let mut kvs = encoded.clone();
    // Values no apiserver wrote: each must be listed with its reason.
    let pod = encoded
        .iter()
        .find(|(k, _)| k.contains("/pods/"))
        .unwrap()
        .1
        .clone();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("/registry/pods/team-b/truncated", pod[..pod.len() / 2].to_vec()),
        ("/registry/pods/team-b/garbage", b"\x00\x01not kubernetes".to_vec()),
        ("/registry/example.com/widgets/team-b/wrong-type", br#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":["not","a","string"]}}"#.to_vec()),
        ("/registry/configmaps/team-b/empty", Vec::new()),
        ("/registry/secrets/team-b/kms", b"k8s:enc:kms:v2:vault-plugin:\x0a\x03abc".to_vec()),
    ];
    kvs.extend(bad.iter().map(|(k, v)| (k.to_string(), v.clone())));
    put_all(&cluster, &kvs);
    let dir = tempfile::tempdir().unwrap();
    let file = cluster.snapshot_save(0, dir.path().join("s.db"));
    let file = file.to_str().unwrap();

    let listing = objects_json(&["--backup", file]);
    let rows = by_key(&listing);
    assert_eq!(rows.len(), inputs.len() + bad.len(), "{listing}");
    for i in &inputs {
        let row = &rows[&i.key];
        let json_stored = i.key.contains("example.com/")
            || i.key.contains("apiextensions")
            || i.key.contains("apiregistration");
        check_decoded(
            row,
            &i.object,
            if json_stored { "json" } else { "protobuf" },
        );
        let value = &encoded.iter().find(|(k, _)| *k == i.key).unwrap().1;
        assert_eq!(row["size"], value.len(), "{}", i.key);
        assert!(row["mod_revision"].as_i64().unwrap() > 1);
    }
    assert_eq!(
        rows["/registry/services/specs/team-a/web"]["resource"],
        "services/specs"
    );
    assert_eq!(
        rows["/registry/example.com/widgets/team-a/blue"]["resource"],
        "example.com/widgets"
    );
    for (key, why) in [
        ("/registry/pods/team-b/truncated", "protobuf"),
        ("/registry/pods/team-b/garbage", "neither"),
        ("/registry/example.com/widgets/team-b/wrong-type", "JSON"),
        ("/registry/configmaps/team-b/empty", "empty"),
        ("/registry/secrets/team-b/kms", "KMS"),
    ] {
        let row = &rows[key];
        assert!(row["object"].is_null(), "{row}");
        let err = row["error"].as_str().unwrap_or_default();
        assert!(err.contains(why), "{key}: {err}");
    }
    assert_eq!(
        rows["/registry/secrets/team-b/kms"]["encryption"],
        json!({"provider": "kms v2", "key": "vault-plugin"})
    );
    assert_eq!(listing["unreadable"], bad.len());

    // Selections: by namespace (its Namespace object too), resource and name.
    let ns = by_key(&objects_json(&["--backup", file, "--namespace", "team-a"]));
    assert_eq!(ns.len(), cluster_objects("team-a").len());
    let widgets = by_key(&objects_json(&[
        "--backup",
        file,
        "--resource",
        "widgets.example.com",
    ]));
    assert_eq!(
        widgets.keys().collect::<Vec<_>>(),
        [
            "/registry/example.com/widgets/team-a/blue",
            "/registry/example.com/widgets/team-b/wrong-type"
        ]
    );
    let named = by_key(&objects_json(&[
        "--backup",
        file,
        "--resource",
        "deployments.apps",
        "--name",
        "web",
    ]));
    assert_eq!(named.len(), 1);

    // The table names every column and still lists the unreadable ones.
    let table = ok(run(lifeboat(
        &["objects", "--backup", file, "-w", "table"],
        &[],
    )));
    for word in [
        "RESOURCE",
        "OWNERS",
        "FINALIZERS",
        "ReplicaSet/web-5d4f (uid-rs)",
        "example.com/cleanup",
        "2026-12-01T09:00:00Z",
        "kms v2:vault-plugin",
    ] {
        assert!(table.contains(word), "{word} missing from:\n{table}");
    }
    assert!(
        table.contains(&format!("{} objects at revision", rows.len())),
        "{table}"
    );
}

const KEY_A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
const KEY_B: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="; // 32 bytes
const KEY_C: &str = "c2VjcmV0Ym94LWtleS0zMi1ieXRlcy1sb25nLi4uLi4="; // 32 bytes

fn encryption_config(dir: &Path, name: &str, a: &str, b: &str, c: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aescbc:
          keys:
            - name: cbc-key
              secret: {a}
      - identity: {{}}
  - resources: [configmaps]
    providers:
      - aesgcm:
          keys:
            - name: gcm-key
              secret: {b}
      - identity: {{}}
  - resources: [widgets.example.com]
    providers:
      - secretbox:
          keys:
            - name: box-key
              secret: {c}
      - identity: {{}}
"
        ),
    )
    .unwrap();
    path
}

#[test]
fn values_encrypted_by_the_apiserver_decrypt_with_its_encryption_config() {
    let mut cluster = Cluster::start(EtcdVersion::V3_5_30, 1);
    cluster.wait_healthy(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let config = encryption_config(dir.path(), "enc.yaml", KEY_A, KEY_B, KEY_C);
    let mut inputs = cluster_objects("vault");
    for i in &mut inputs {
        if i.key.contains("example.com/widgets") {
            i.resource = Some("widgets.example.com".into());
        }
    }
    let encoded = k8s::encode(&inputs, Some(&config));
    let provider_of = |key: &str| {
        if key.contains("/secrets/") {
            Some(("aescbc", "cbc-key"))
        } else if key.contains("/configmaps/") {
            Some(("aesgcm", "gcm-key"))
        } else if key.contains("/widgets/") {
            Some(("secretbox", "box-key"))
        } else {
            None
        }
    };
    for (k, v) in &encoded {
        if let Some((p, name)) = provider_of(k) {
            let prefix = format!("k8s:enc:{p}:v1:{name}:");
            assert!(
                v.starts_with(prefix.as_bytes()),
                "{k} not encrypted by the apiserver's transformer"
            );
        }
    }
    put_all(&cluster, &encoded);
    let file = cluster.snapshot_save(0, dir.path().join("s.db"));
    let file = file.to_str().unwrap();

    // Without the config: provider and key shown, the reason given, the rest decoded.
    let rows = by_key(&objects_json(&["--backup", file]));
    for i in &inputs {
        let row = &rows[&i.key];
        match provider_of(&i.key) {
            Some((p, name)) => {
                assert_eq!(row["encryption"], json!({"provider": p, "key": name}));
                assert!(
                    row["error"]
                        .as_str()
                        .unwrap()
                        .contains("--encryption-config"),
                    "{row}"
                );
            }
            None => check_decoded(row, &i.object, "protobuf"),
        }
    }
    // With it: every object decoded.
    let config_arg = config.to_str().unwrap();
    let rows = by_key(&objects_json(&[
        "--backup",
        file,
        "--encryption-config",
        config_arg,
    ]));
    for i in &inputs {
        let row = &rows[&i.key];
        let encoding = if i.key.contains("example.com/") {
            "json"
        } else {
            "protobuf"
        };
        check_decoded(row, &i.object, encoding);
    }
    // Same key names, other secrets: each provider says its key does not decrypt.
    let wrong = encryption_config(dir.path(), "wrong.yaml", KEY_B, KEY_C, KEY_A);
    let rows = by_key(&objects_json(&[
        "--backup",
        file,
        "--encryption-config",
        wrong.to_str().unwrap(),
    ]));
    for i in &inputs {
        if let Some((p, name)) = provider_of(&i.key) {
            let err = rows[&i.key]["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                err.contains(p) && err.contains(name) && err.contains("wrong key"),
                "{}: {err}",
                i.key
            );
        }
    }
    // A config that is not one is refused before anything is read, naming it.
    let out = run(lifeboat(
        &["objects", "--backup", file, "--encryption-config", file],
        &[],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("s.db"), "{}", text(&out.stderr));
}

#[test]
fn mutated_kubernetes_values_give_an_error_never_a_panic() {
    use etcd_lifeboat::objects::kube::{Keyring, inspect};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let dir = tempfile::tempdir().unwrap();
    let config = encryption_config(dir.path(), "enc.yaml", KEY_A, KEY_B, KEY_C);
    let ring = Keyring::load(&config).expect("config");
    let mut inputs = cluster_objects("fuzz");
    inputs.extend(cluster_scoped());
    let mut seeds = k8s::encode(&inputs, None);
    seeds.extend(k8s::encode(&cluster_objects("fuzz-enc"), Some(&config)));
    // Every truncation of every value returns (an error, or for a cut at a field
    // boundary after the object, the object); the whole value decodes.
    for (k, v) in &seeds {
        let mut errors = 0;
        for n in 0..v.len() {
            errors += usize::from(inspect(k.as_bytes(), &v[..n], Some(&ring)).object.is_err());
        }
        assert!(
            errors >= v.len() / 2,
            "{k}: only {errors} of {} cuts refused",
            v.len()
        );
        assert!(inspect(k.as_bytes(), v, Some(&ring)).object.is_ok(), "{k}");
    }
    // Random flips, insertions and deletions.
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        ..Config::default()
    });
    let n = seeds.len();
    runner
        .run(
            &(
                0..n,
                prop::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..6),
            ),
            |(i, edits)| {
                let (k, v) = &seeds[i];
                let mut v = v.clone();
                for (at, byte, op) in edits {
                    let at = at % (v.len() + 1);
                    match op {
                        0 if at < v.len() => v[at] ^= byte | 1,
                        1 => v.insert(at, byte),
                        _ if at < v.len() => {
                            v.remove(at);
                        }
                        _ => {}
                    }
                }
                let _ = inspect(k.as_bytes(), &v, Some(&ring));
                Ok(())
            },
        )
        .expect("no panic");
}
