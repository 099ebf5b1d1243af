//! The bench's Kubernetes encoder (`support::k8s`, the `k8s-encode` tool built from
//! Kubernetes' own Go libraries): what later tests take as "the bytes kube-apiserver
//! writes to etcd" must really be those bytes. Built-in types come out as `k8s\0` +
//! `runtime.Unknown` naming their apiVersion and kind, with every metadata field kept;
//! custom resources as compact JSON + "\n"; with an `EncryptionConfiguration` each
//! provider's prefix and a fresh IV or nonce per write; refusals name the line and the
//! type.

use crate::support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::k8s::{self, EncodeInput, proto_all, proto_fields, proto_one, proto_str};

/// 32-byte keys, base64, as an operator's EncryptionConfiguration holds them.
const KEY_A: &str = "G0gflmRe5LsEmfg8dfzlmSmA2Y77AD1fijcCg4Je2uA=";
const KEY_B: &str = "fhx3+Zj9S6fWuj8nIVcdyDuhujx+zTdoh37qr0Q3rFQ=";
const KEY_C: &str = "FoyFWUv3P9BS3jSHF01c17tGhXsdjtY0dXpaKNCGpO4=";

fn config_map() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "team-a", "uid": "3f1c3c4e-6a43-4d0e-9a8e-1d2b3c4d5e6f"},
        "data": {"mode": "fast", "level": "3"},
    })
}

fn secret() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "team-a"},
        "type": "Opaque",
        "data": {"password": "aHVudGVyMg=="},
    })
}

fn widget() -> Value {
    json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "team-a", "labels": {"tier": "<gold & silver>"}},
        "spec": {"size": 3, "ratio": 0.5, "parts": ["a", "b"]},
    })
}

/// An `apiserver.config.k8s.io/v1` EncryptionConfiguration: `resources` use
/// `provider` with one key, identity after it (so older plain values still read).
fn encryption_config(
    dir: &Path,
    resources: &[&str],
    provider: &str,
    key_name: &str,
    secret: &str,
) -> PathBuf {
    let list = resources
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n\
         \x20 - resources: [{list}]\n\
         \x20   providers:\n\
         \x20     - {provider}:\n\
         \x20         keys:\n\
         \x20           - name: {key_name}\n\
         \x20             secret: {secret}\n\
         \x20     - identity: {{}}\n"
    );
    let path = dir.join(format!("encryption-{provider}.yaml"));
    std::fs::write(&path, yaml).expect("write the encryption configuration");
    path
}

#[test]
fn a_config_map_is_k8s_protobuf_with_its_type_and_fields() {
    let values = k8s::encode(
        &[EncodeInput::new(
            "/registry/configmaps/team-a/settings",
            config_map(),
        )],
        None,
    );
    assert_eq!(values.len(), 1);
    let (key, value) = &values[0];
    assert_eq!(key, "/registry/configmaps/team-a/settings");
    assert!(value.starts_with(b"k8s\0"), "{value:?}");
    let unknown = k8s::unknown(value);
    assert_eq!((unknown.api_version, unknown.kind), ("v1", "ConfigMap"));
    // What the apiserver's storage codec leaves empty.
    assert_eq!((unknown.content_encoding, unknown.content_type), ("", ""));

    // ConfigMap {1: metadata, 2: data (map entries {1: key, 2: value})}.
    let cm = proto_fields(unknown.raw);
    let meta = proto_fields(proto_one(&cm, 1).bytes());
    assert_eq!(proto_str(&meta, 1), "settings");
    assert_eq!(proto_str(&meta, 3), "team-a");
    assert_eq!(proto_str(&meta, 5), "3f1c3c4e-6a43-4d0e-9a8e-1d2b3c4d5e6f");
    let data: Vec<(String, String)> = proto_all(&cm, 2)
        .iter()
        .map(|entry| {
            let e = proto_fields(entry.bytes());
            (proto_str(&e, 1).to_owned(), proto_str(&e, 2).to_owned())
        })
        .collect();
    // Go's generated marshaller writes map entries sorted by key.
    assert_eq!(
        data,
        [
            ("level".to_owned(), "3".to_owned()),
            ("mode".to_owned(), "fast".to_owned())
        ]
    );
}

#[test]
fn a_pod_being_deleted_keeps_labels_owners_finalizers_and_deletion_time() {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-7d9f8-abcde",
            "namespace": "team-a",
            "uid": "0b7c1f52-1111-4a5e-9d3e-2f0e9c8b7a61",
            "resourceVersion": "4711",
            "creationTimestamp": "2026-11-30T08:00:00Z",
            "deletionTimestamp": "2026-12-01T10:00:00Z",
            "deletionGracePeriodSeconds": 30,
            "labels": {"app": "web", "pod-template-hash": "7d9f8"},
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-7d9f8",
                "uid": "9a0e7d3c-2222-4b6f-8c1d-3e4f5a6b7c8d",
                "controller": true,
                "blockOwnerDeletion": true,
            }],
            "finalizers": ["example.com/drain", "foregroundDeletion"],
        },
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}], "nodeName": "node-1"},
        "status": {"phase": "Running"},
    });
    let values = k8s::encode(
        &[EncodeInput::new(
            "/registry/pods/team-a/web-7d9f8-abcde",
            pod,
        )],
        None,
    );
    let unknown = k8s::unknown(&values[0].1);
    assert_eq!((unknown.api_version, unknown.kind), ("v1", "Pod"));

    // Pod {1: metadata, 2: spec, 3: status}; ObjectMeta field numbers from
    // k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto.
    let pod = proto_fields(unknown.raw);
    let meta = proto_fields(proto_one(&pod, 1).bytes());
    assert_eq!(proto_str(&meta, 1), "web-7d9f8-abcde");
    assert_eq!(proto_str(&meta, 6), "4711");
    let seconds = |n| proto_one(&proto_fields(proto_one(&meta, n).bytes()), 1);
    assert_eq!(
        seconds(8),
        k8s::ProtoField::Varint(1_796_025_600),
        "creationTimestamp"
    );
    assert_eq!(
        seconds(9),
        k8s::ProtoField::Varint(1_796_119_200),
        "deletionTimestamp"
    );
    assert_eq!(
        proto_one(&meta, 10),
        k8s::ProtoField::Varint(30),
        "deletionGracePeriodSeconds"
    );
    let labels: Vec<String> = proto_all(&meta, 11)
        .iter()
        .map(|e| {
            let e = proto_fields(e.bytes());
            format!("{}={}", proto_str(&e, 1), proto_str(&e, 2))
        })
        .collect();
    assert_eq!(labels, ["app=web", "pod-template-hash=7d9f8"]);
    let owners = proto_all(&meta, 13);
    assert_eq!(owners.len(), 1);
    let owner = proto_fields(owners[0].bytes());
    assert_eq!(proto_str(&owner, 1), "ReplicaSet");
    assert_eq!(proto_str(&owner, 3), "web-7d9f8");
    assert_eq!(proto_str(&owner, 5), "apps/v1");
    assert_eq!(
        proto_one(&owner, 6),
        k8s::ProtoField::Varint(1),
        "controller"
    );
    let finalizers: Vec<&str> = proto_all(&meta, 14).iter().map(|f| f.str()).collect();
    assert_eq!(finalizers, ["example.com/drain", "foregroundDeletion"]);
}

#[test]
fn custom_resources_and_crds_are_compact_json_with_a_newline() {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced"},
    });
    let values = k8s::encode(
        &[
            EncodeInput::new("/registry/example.com/widgets/team-a/w1", widget()),
            EncodeInput::new(
                "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com",
                crd.clone(),
            ),
            // A built-in type asked for as JSON is JSON too.
            EncodeInput::new("/registry/configmaps/team-a/settings", config_map()).format("json"),
        ],
        None,
    );
    for ((_, value), object) in values.iter().zip([widget(), crd, config_map()]) {
        let text = std::str::from_utf8(value).expect("UTF-8 JSON");
        assert!(text.ends_with("}\n"), "{text:?}");
        assert_eq!(text.matches('\n').count(), 1, "compact: {text:?}");
        assert!(
            !text.contains(": ") && !text.contains(", "),
            "compact: {text:?}"
        );
        let back: Value = serde_json::from_str(text).expect("valid JSON");
        assert_eq!(back, object);
    }
    // Exactly as the apiserver's JSON serializer writes an unstructured object: keys
    // sorted, <, > and & escaped, integers as integers.
    assert_eq!(
        std::str::from_utf8(&values[0].1).unwrap(),
        "{\"apiVersion\":\"example.com/v1\",\"kind\":\"Widget\",\"metadata\":{\"labels\":{\"tier\":\
         \"\\u003cgold \\u0026 silver\\u003e\"},\"name\":\"w1\",\"namespace\":\"team-a\"},\"spec\":\
         {\"parts\":[\"a\",\"b\"],\"ratio\":0.5,\"size\":3}}\n"
    );
}

#[test]
fn secrets_encrypted_at_rest_carry_each_providers_prefix_and_a_fresh_iv() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (provider, key_name, secret_key) in [
        ("aescbc", "key1", KEY_A),
        ("aesgcm", "rotated-2026", KEY_B),
        ("secretbox", "sb", KEY_C),
    ] {
        let config = encryption_config(
            dir.path(),
            &["secrets", "widgets.example.com"],
            provider,
            key_name,
            secret_key,
        );
        let key = "/registry/secrets/team-a/db";
        let values = k8s::encode(
            &[
                EncodeInput::new(key, secret()),
                EncodeInput::new(key, secret()),
                // Not in the configuration: stored as it is.
                EncodeInput::new("/registry/configmaps/team-a/settings", config_map()),
                // A custom resource: its resource comes from /registry/<group>/<resource>/.
                EncodeInput::new("/registry/example.com/widgets/team-a/w1", widget()),
                // The resource given explicitly wins over the key's.
                EncodeInput::new("/registry/configmaps/team-a/as-secret", config_map())
                    .resource("secrets"),
            ],
            Some(&config),
        );
        let prefix = format!("k8s:enc:{provider}:v1:{key_name}:");
        let plain = &k8s::encode(&[EncodeInput::new(key, secret())], None)[0].1;
        let (first, second) = (&values[0].1, &values[1].1);
        for v in [first, second, &values[3].1, &values[4].1] {
            assert!(
                v.starts_with(prefix.as_bytes()),
                "{provider}: {:?}",
                String::from_utf8_lossy(&v[..v.len().min(40)])
            );
            // Ciphertext: no readable envelope, no plaintext fragment of the object.
            assert!(!v.windows(4).any(|w| w == b"k8s\0"), "{provider}");
            assert!(!v.windows(6).any(|w| w == b"team-a"), "{provider}");
        }
        // Same object, same key: a new IV (aescbc, aesgcm) or nonce (secretbox) each time.
        assert_ne!(
            first, second,
            "{provider}: two encryptions of the same secret are equal"
        );
        assert_eq!(first.len(), second.len(), "{provider}");
        assert!(
            first.len() > prefix.len() + plain.len(),
            "{provider}: {} bytes",
            first.len()
        );
        assert!(
            values[2].1.starts_with(b"k8s\0"),
            "{provider}: configmaps are not encrypted"
        );
        assert_eq!(k8s::unknown(&values[2].1).kind, "ConfigMap");
    }
}

#[test]
fn an_identity_first_configuration_stores_plain_values() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("identity.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  \
             - resources: [\"secrets\"]\n    providers:\n      - identity: {{}}\n      \
             - aescbc:\n          keys:\n            - name: old\n              secret: {KEY_A}\n"
        ),
    )
    .expect("write config");
    let key = "/registry/secrets/team-a/db";
    let encrypted = k8s::encode(&[EncodeInput::new(key, secret())], Some(&path));
    let plain = k8s::encode(&[EncodeInput::new(key, secret())], None);
    assert_eq!(encrypted, plain);
}

#[test]
fn refusals_name_the_line_and_the_problem() {
    // A custom resource has no protobuf encoding.
    let err = k8s::try_encode(
        &[
            EncodeInput::new("/registry/configmaps/team-a/settings", config_map()),
            EncodeInput::new("/registry/example.com/widgets/team-a/w1", widget())
                .format("protobuf"),
        ],
        None,
    )
    .expect_err("a Widget cannot be protobuf");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains(r#"kind "Widget""#), "{err}");
    assert!(err.contains("not a built-in Kubernetes type"), "{err}");

    // A field the typed object does not have would silently vanish from the bytes.
    let mut typo = config_map();
    typo["dta"] = json!({"a": "b"});
    let err = k8s::try_encode(
        &[EncodeInput::new(
            "/registry/configmaps/team-a/settings",
            typo,
        )],
        None,
    )
    .expect_err("unknown field");
    assert!(
        err.contains("line 1") && err.contains(r#"unknown field "dta""#),
        "{err}"
    );

    // An encryption configuration the apiserver would refuse (a 5-byte AES key).
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = encryption_config(dir.path(), &["secrets"], "aescbc", "k", "c2hvcnQ=");
    let err = k8s::try_encode(
        &[EncodeInput::new("/registry/secrets/team-a/db", secret())],
        Some(&bad),
    )
    .expect_err("bad key");
    assert!(
        err.contains("--encryption-config") && err.contains("encryption-aescbc.yaml"),
        "{err}"
    );
}
