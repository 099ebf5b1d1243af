//! The cloud-identity components of `config/kubernetes/components/` (issue 12, items 2
//! and 4), each added to every overlay and rendered by the real `kubectl kustomize`: the
//! storage keys are gone from every pod and nothing else of it changed, the
//! ServiceAccount carries what the cloud's webhook looks for, and the configuration the
//! pods would read opens the storage the component points at with lifeboat's own code
//! (no `[storage.options]` of another backend, say). That the credential chains then
//! work is `cloud_identity.rs`, against moto and Azurite.

use std::collections::{BTreeMap, BTreeSet};

use etcd_lifeboat::repository::Repository;
use yaml_rust2::{Yaml, YamlEmitter};

use crate::support::kustomize::{
    Rendered, config_of, env, kind, lifeboat, name, render, render_with_component,
    render_with_component_and, string_map,
};
use crate::support::pod_security::restricted_violations;

const OVERLAYS: &[&str] = &[
    "cronjob",
    "cronjob-restricted",
    "daemon",
    "daemon-restricted",
];
const COMPONENTS: &[&str] = &["aws-irsa", "aws-pod-identity", "azure-workload-identity"];
const STATIC_KEYS: &[&str] = &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
const AZURE_USE: &str = "azure.workload.identity/use";

/// The lifeboat container's environment of every workload, by workload name: each
/// variable with its rendered definition.
fn environments(r: &Rendered) -> BTreeMap<String, BTreeMap<String, Yaml>> {
    r.workloads()
        .iter()
        .map(|w| {
            let vars = lifeboat(w)["env"]
                .as_vec()
                .map(|v| {
                    v.iter()
                        .map(|e| (e["name"].as_str().unwrap_or("").to_owned(), e.clone()))
                        .collect()
                })
                .unwrap_or_default();
            (format!("{} {}", kind(w.object), name(w.object)), vars)
        })
        .collect()
}

/// Every object of `r` by kind and name, without the parts a component may change.
fn skeleton(r: &Rendered) -> BTreeSet<(String, String)> {
    r.objects
        .iter()
        .map(|o| (kind(o).to_owned(), name(o).to_owned()))
        .collect()
}

fn annotations(r: &Rendered) -> BTreeMap<String, String> {
    string_map(&r.one("ServiceAccount")["metadata"]["annotations"])
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn every_identity_component_takes_the_keys_out_and_changes_nothing_else() {
    for overlay in OVERLAYS {
        let plain = render(overlay);
        let plain_env = environments(&plain);
        for component in COMPONENTS {
            let r = render_with_component(overlay, component);
            let what = &r.overlay;
            assert_eq!(
                skeleton(&r),
                skeleton(&plain),
                "{what}: the objects it makes"
            );
            for w in r.workloads() {
                let mut pod = String::new();
                YamlEmitter::new(&mut pod).dump(w.pod).expect("emit");
                assert!(
                    !pod.contains("lifeboat-s3"),
                    "{}: still reads the Secret lifeboat-s3",
                    w.what
                );
            }
            let added: &[&str] = if *component == "azure-workload-identity" {
                &["AZURE_STORAGE_ACCOUNT_NAME", "LIFEBOAT_STORAGE"]
            } else {
                &[]
            };
            for (workload, vars) in environments(&r) {
                let before = &plain_env[&workload];
                for key in STATIC_KEYS {
                    assert!(
                        before.contains_key(*key),
                        "{overlay}: {workload} has no {key}"
                    );
                    assert!(
                        !vars.contains_key(*key),
                        "{what}: {workload} still sets {key}"
                    );
                }
                // Every other variable as it was, in the same form.
                for (var, def) in before {
                    if !STATIC_KEYS.contains(&var.as_str()) {
                        assert_eq!(vars.get(var), Some(def), "{what}: {workload}: {var}");
                    }
                }
                let new: Vec<&str> = vars
                    .keys()
                    .filter(|v| !before.contains_key(*v))
                    .map(String::as_str)
                    .collect();
                assert_eq!(new, added, "{what}: {workload}: variables it adds");
            }
            // A restricted overlay stays restricted: the components add no volume or
            // privilege (the webhooks' projected token volumes pass "restricted").
            if overlay.ends_with("-restricted") {
                for w in r.workloads() {
                    assert_eq!(
                        restricted_violations(w.pod),
                        Vec::<String>::new(),
                        "{}",
                        w.what
                    );
                }
            }
        }
    }
}

#[test]
fn the_service_account_carries_what_each_clouds_webhook_looks_for() {
    for overlay in OVERLAYS {
        let r = render_with_component(overlay, "aws-irsa");
        let a = annotations(&r);
        let arn = &a["eks.amazonaws.com/role-arn"];
        let parts: Vec<&str> = arn.split(':').collect();
        assert!(
            parts.len() == 6
                && parts[..3] == ["arn", "aws", "iam"]
                && parts[4].len() == 12
                && parts[4].chars().all(|c| c.is_ascii_digit())
                && parts[5].starts_with("role/"),
            "{}: role ARN {arn}",
            r.overlay
        );
        assert_eq!(a["eks.amazonaws.com/sts-regional-endpoints"], "true");
        for w in r.workloads() {
            assert!(!w.pod_labels.contains_key(AZURE_USE), "{}", w.what);
        }

        // The operator's own role, with the patch the component's kustomization.yaml shows.
        let mine = "arn:aws:iam::444455556666:role/backup";
        let r = render_with_component_and(
            overlay,
            "aws-irsa",
            &format!(
                "patches:\n  - target: {{kind: ServiceAccount, name: lifeboat}}\n    patch: |-\n      - op: replace\n        path: /metadata/annotations/eks.amazonaws.com~1role-arn\n        value: {mine}\n"
            ),
        );
        assert_eq!(
            annotations(&r)["eks.amazonaws.com/role-arn"],
            mine,
            "{}",
            r.overlay
        );

        // EKS Pod Identity is an association made in EKS: nothing on the ServiceAccount.
        let r = render_with_component(overlay, "aws-pod-identity");
        assert!(
            annotations(&r).is_empty(),
            "{}: {:?}",
            r.overlay,
            annotations(&r)
        );

        let r = render_with_component(overlay, "azure-workload-identity");
        let a = annotations(&r);
        assert!(
            is_uuid(&a["azure.workload.identity/client-id"]),
            "{}: {a:?}",
            r.overlay
        );
        // The webhook mutates only pods that carry the label, whatever the annotation.
        for w in r.workloads() {
            assert_eq!(
                w.pod_labels.get(AZURE_USE).map(String::as_str),
                Some("true"),
                "{}",
                w.what
            );
            assert_eq!(
                w.pod["serviceAccountName"].as_str(),
                Some("lifeboat"),
                "{}",
                w.what
            );
        }
    }
}

/// What lifeboat would open in the pod: `LIFEBOAT_STORAGE` over `[storage] url`, with
/// `[storage.options]` and the account from the environment, opened by the same
/// `Repository::open` as the CLI's (offline: building the client sends nothing).
#[test]
fn the_pods_configuration_opens_the_storage_each_component_points_at() {
    for overlay in OVERLAYS {
        for component in COMPONENTS {
            let r = render_with_component(overlay, component);
            for w in r.workloads() {
                let config = config_of(&r, &w);
                let literal = |var: &str| {
                    env(lifeboat(&w), var).and_then(|e| e["value"].as_str().map(str::to_owned))
                };
                let url = literal("LIFEBOAT_STORAGE")
                    .or(config.storage.url.clone())
                    .unwrap_or_default();
                let mut options = config.storage.options.clone();
                if component.starts_with("azure") {
                    assert!(url.starts_with("az://"), "{}: {url}", w.what);
                    let account = literal("AZURE_STORAGE_ACCOUNT_NAME")
                        .unwrap_or_else(|| panic!("{}: no storage account", w.what));
                    options.insert("account_name".into(), account);
                } else {
                    assert!(url.starts_with("s3://"), "{}: {url}", w.what);
                }
                let cluster = config.backup.cluster.clone().unwrap_or_default();
                if let Err(e) = Repository::open(&url, &options, &cluster) {
                    panic!("{}: {url} with {options:?}: {e}", w.what);
                }
            }
        }
    }
}
