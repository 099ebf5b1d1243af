//! The Kubernetes packaging (`config/kubernetes/`, issue 12) as the cluster would get it:
//! every overlay rendered by a real `kubectl kustomize` (Debian's kubectl 1.36 in
//! `.tools/bin`), then checked for what an operator relies on: which objects each
//! overlay makes; one backup at a time with deadlines and history limits; the etcd PKI
//! read-only; the daemon spread over the control-plane nodes with its probes on the
//! port it really listens on, a Service and ServiceMonitor that select its pods; no
//! secret value anywhere in the output; and Pod Security "restricted" passed by the
//! restricted overlays and missed by the others only where the documentation says.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

use crate::support::kustomize::{
    CONFIG_PATH, Rendered, Workload, args, config_of, env, env_value, kind, kubernetes_dir,
    lifeboat, mount_of, mounts, name, render, selects, string_map,
};
use crate::support::pod_security::restricted_violations;

fn all_overlays() -> Vec<Rendered> {
    OVERLAYS.iter().map(|(o, _)| render(o)).collect()
}

fn is_restricted(overlay: &str) -> bool {
    overlay.ends_with("-restricted")
}

const NAMESPACE: &str = "etcd-backup";
const KUBEADM_ETCD_PKI: &str = "/etc/kubernetes/pki/etcd";
const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";
/// What the CronJob variant makes, by kind (sorted).
const CRONJOB_KINDS: &[&str] = &[
    "ConfigMap",
    "CronJob",
    "CronJob",
    "Namespace",
    "PrometheusRule",
    "ServiceAccount",
];
/// What the daemon variant makes, by kind (sorted).
const DAEMON_KINDS: &[&str] = &[
    "ConfigMap",
    "Deployment",
    "Namespace",
    "PodDisruptionBudget",
    "PrometheusRule",
    "Service",
    "ServiceAccount",
    "ServiceMonitor",
];
/// Every overlay under config/kubernetes/ and what it must make: a restricted variant
/// changes pods, not which objects there are.
const OVERLAYS: &[(&str, &[&str])] = &[
    ("cronjob", CRONJOB_KINDS),
    ("cronjob-restricted", CRONJOB_KINDS),
    ("daemon", DAEMON_KINDS),
    ("daemon-restricted", DAEMON_KINDS),
];

#[test]
fn every_overlay_renders_and_makes_exactly_its_objects_in_one_namespace() {
    // Every kustomization under config/kubernetes/ is listed here (and so tested).
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(kubernetes_dir()).expect("config/kubernetes") {
        let dir = entry.expect("entry").path();
        let file = dir.join("kustomization.yaml");
        if !file.is_file() {
            continue;
        }
        let doc = YamlLoader::load_from_str(&std::fs::read_to_string(&file).expect("read"))
            .expect("kustomization.yaml parses")
            .remove(0);
        let dir_name = dir.file_name().and_then(|n| n.to_str()).expect("name");
        if doc["kind"].as_str() == Some("Kustomization") && dir_name != "base" {
            on_disk.insert(dir_name.to_owned());
        }
    }
    let listed: BTreeSet<String> = OVERLAYS.iter().map(|(o, _)| (*o).to_owned()).collect();
    assert_eq!(on_disk, listed, "overlays on disk vs the ones tested here");

    // The base renders on its own, too.
    let base = render("base");
    let base_kinds: BTreeSet<&str> = base.objects.iter().map(kind).collect();
    assert_eq!(
        base_kinds,
        BTreeSet::from(["Namespace", "PrometheusRule", "ServiceAccount"])
    );

    for (overlay, expected) in OVERLAYS {
        let r = render(overlay);
        let mut kinds: Vec<&str> = r.objects.iter().map(kind).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, expected.to_vec(), "{overlay}: the objects it makes");
        let mut seen = BTreeSet::new();
        for o in &r.objects {
            assert!(
                o["apiVersion"].as_str().is_some() && !name(o).is_empty(),
                "{overlay}: an object without apiVersion or name: {o:?}"
            );
            assert!(
                seen.insert((kind(o).to_owned(), name(o).to_owned())),
                "{overlay}: {} {} twice",
                kind(o),
                name(o)
            );
            let ns = &o["metadata"]["namespace"];
            if kind(o) == "Namespace" {
                assert_eq!(name(o), NAMESPACE);
                assert!(ns.is_badvalue(), "{overlay}: a namespaced Namespace");
            } else {
                assert_eq!(
                    ns.as_str(),
                    Some(NAMESPACE),
                    "{overlay}: {} {} is not in {NAMESPACE}",
                    kind(o),
                    name(o)
                );
            }
        }
        // Every ServiceAccount a pod names is made here, and it mounts no API token.
        let sa = r.one("ServiceAccount");
        assert_eq!(sa["automountServiceAccountToken"].as_bool(), Some(false));
        for w in r.workloads() {
            assert_eq!(
                w.pod["serviceAccountName"].as_str(),
                Some(name(sa)),
                "{}",
                w.what
            );
            assert_eq!(
                w.pod["automountServiceAccountToken"].as_bool(),
                Some(false),
                "{}: lifeboat needs no Kubernetes API token",
                w.what
            );
        }
    }
}

#[test]
fn backup_cronjob_runs_one_backup_at_a_time_beside_etcd_within_its_interval() {
    for overlay in ["cronjob", "cronjob-restricted"] {
        let r = render(overlay);
        let w = r.running("backup");
        let what = &w.what;
        assert_eq!(
            args(lifeboat(&w)),
            ["backup", "--config", CONFIG_PATH],
            "{what}"
        );
        let spec = &w.object["spec"];
        let schedule = spec["schedule"].as_str().expect("schedule");
        let minute = schedule.split_whitespace().next().expect("minute field");
        assert_eq!(schedule.split_whitespace().count(), 5, "{what}: {schedule}");
        assert_eq!(spec["concurrencyPolicy"].as_str(), Some("Forbid"), "{what}");
        for key in [
            "startingDeadlineSeconds",
            "successfulJobsHistoryLimit",
            "failedJobsHistoryLimit",
        ] {
            let v = spec[key]
                .as_i64()
                .unwrap_or_else(|| panic!("{what}: no {key}"));
            assert!(v > 0, "{what}: {key} {v}");
        }
        let job = &spec["jobTemplate"]["spec"];
        assert!(
            job["backoffLimit"].as_i64().is_some(),
            "{what}: backoffLimit"
        );
        let deadline = job["activeDeadlineSeconds"]
            .as_i64()
            .unwrap_or_else(|| panic!("{what}: no activeDeadlineSeconds bounds a hung run"));
        let every: i64 = minute
            .strip_prefix("*/")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what}: schedule {schedule:?} is not */N minutes"));
        assert!(
            deadline < every * 60,
            "{what}: activeDeadlineSeconds {deadline} reaches into the next tick ({schedule})"
        );
        // A configuration error (exit 2) fails the Job at once.
        let rules = job["podFailurePolicy"]["rules"]
            .as_vec()
            .unwrap_or_else(|| panic!("{what}: no podFailurePolicy"));
        assert!(rules.iter().any(|rule| {
            rule["action"].as_str() == Some("FailJob")
                && rule["onExitCodes"]["values"]
                    .as_vec()
                    .is_some_and(|v| v.contains(&Yaml::Integer(2)))
        }));
        let restart = w.pod["restartPolicy"].as_str();
        assert_eq!(restart, Some("Never"), "{what}");
        assert_on_control_plane_nodes(&w);
        assert_reaches_the_etcd_member_of_its_node(&w);
    }
    // Retention runs on its own schedule, without host access or the etcd key.
    let r = render("cronjob");
    let prune = r.running("prune");
    assert_eq!(args(lifeboat(&prune)), ["prune", "--config", CONFIG_PATH]);
    assert_eq!(
        prune.object["spec"]["concurrencyPolicy"].as_str(),
        Some("Forbid")
    );
    assert!(env(lifeboat(&prune), "ETCDCTL_KEY").is_none());
}

fn assert_on_control_plane_nodes(w: &Workload<'_>) {
    assert_eq!(
        w.pod["nodeSelector"][CONTROL_PLANE].as_str(),
        Some(""),
        "{}: not pinned to control-plane nodes",
        w.what
    );
    let tolerated = w.pod["tolerations"].as_vec().is_some_and(|ts| {
        ts.iter().any(|t| {
            t["key"].as_str() == Some(CONTROL_PLANE)
                && t["effect"].as_str() == Some("NoSchedule")
                && matches!(t["operator"].as_str(), Some("Exists") | None)
        })
    });
    assert!(
        tolerated,
        "{}: no toleration for the {CONTROL_PLANE}:NoSchedule taint",
        w.what
    );
    assert_ne!(
        w.pod["hostNetwork"].as_bool(),
        Some(true),
        "{}: reaches etcd through the node's address, not the node's network",
        w.what
    );
}

/// ETCDCTL_ENDPOINTS is the member on the pod's node: `$(NODE_IP)`, defined before it
/// (Kubernetes expands only variables defined earlier) from the node's address.
fn assert_reaches_the_etcd_member_of_its_node(w: &Workload<'_>) {
    let container = lifeboat(w);
    let vars = container["env"].as_vec().expect("env");
    let position = |var: &str| {
        vars.iter()
            .position(|e| e["name"].as_str() == Some(var))
            .unwrap_or_else(|| panic!("{}: {var} not set", w.what))
    };
    assert_eq!(
        env_value(w, "ETCDCTL_ENDPOINTS"),
        "https://$(NODE_IP):2379",
        "{}",
        w.what
    );
    assert!(
        position("NODE_IP") < position("ETCDCTL_ENDPOINTS"),
        "{}",
        w.what
    );
    assert_eq!(
        vars[position("NODE_IP")]["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("status.hostIP"),
        "{}",
        w.what
    );
}

/// The certificate files lifeboat is told to use are in a read-only mount: kubeadm's
/// directory from the node, or (restricted) the Secret lifeboat-etcd-client.
#[test]
fn etcd_certificates_are_mounted_read_only_where_lifeboat_reads_them() {
    for r in all_overlays() {
        for w in r.workloads() {
            let container = lifeboat(&w);
            if args(container).first() == Some(&"prune") {
                // prune only talks to the storage.
                assert!(
                    mounts(container)
                        .iter()
                        .all(|(_, dir, _)| !dir.contains("pki") && !dir.contains("etcd")),
                    "{}: mounts etcd certificates it does not need",
                    w.what
                );
                continue;
            }
            let config = config_of(&r, &w);
            assert!(
                config.etcd.cacert.is_none()
                    && config.etcd.cert.is_none()
                    && config.etcd.key.is_none(),
                "{}: lifeboat.toml names certificates; the pod's ETCDCTL_* say which",
                w.what
            );
            for (var, kubeadm_file, secret_key) in [
                ("ETCDCTL_CACERT", "ca.crt", "ca.crt"),
                ("ETCDCTL_CERT", "healthcheck-client.crt", "tls.crt"),
                ("ETCDCTL_KEY", "healthcheck-client.key", "tls.key"),
            ] {
                let file = env_value(&w, var);
                let (_, dir, read_only, vol) = mount_of(&w, file);
                assert!(read_only, "{}: {dir} ({var}) is writable", w.what);
                let relative = Path::new(file).strip_prefix(dir).expect("under its mount");
                if is_restricted(&r.overlay) {
                    assert_eq!(
                        vol["secret"]["secretName"].as_str(),
                        Some("lifeboat-etcd-client"),
                        "{}: {var}",
                        w.what
                    );
                    assert_eq!(relative, Path::new(secret_key), "{}: {var}", w.what);
                } else {
                    assert_eq!(dir, KUBEADM_ETCD_PKI, "{}: {var}", w.what);
                    assert_eq!(
                        vol["hostPath"]["path"].as_str(),
                        Some(KUBEADM_ETCD_PKI),
                        "{}: {var} is not read from the node's {KUBEADM_ETCD_PKI}",
                        w.what
                    );
                    assert_eq!(relative, Path::new(kubeadm_file), "{}: {var}", w.what);
                }
            }
        }
    }
}

#[test]
fn daemon_is_spread_over_control_plane_nodes_with_probes_on_its_listener() {
    for overlay in ["daemon", "daemon-restricted"] {
        let r = render(overlay);
        let w = r.running("daemon");
        let what = &w.what;
        let deployment = w.object;
        assert_eq!(
            args(lifeboat(&w)),
            ["daemon", "--config", CONFIG_PATH],
            "{what}"
        );
        let replicas = deployment["spec"]["replicas"].as_i64().expect("replicas");
        assert!((2..=3).contains(&replicas), "{what}: {replicas} replicas");
        let selector = string_map(&deployment["spec"]["selector"]["matchLabels"]);
        assert!(selects(&selector, &w.pod_labels), "{what}: selector");
        assert_on_control_plane_nodes(&w);
        assert_reaches_the_etcd_member_of_its_node(&w);

        // At most one replica per node: a spread on hostname that the scheduler must
        // honour, over exactly these pods.
        let spread = w.pod["topologySpreadConstraints"]
            .as_vec()
            .unwrap_or_else(|| panic!("{what}: no topologySpreadConstraints"));
        assert!(
            spread.iter().any(|c| {
                c["topologyKey"].as_str() == Some("kubernetes.io/hostname")
                    && c["maxSkew"].as_i64() == Some(1)
                    && c["whenUnsatisfiable"].as_str() == Some("DoNotSchedule")
                    && selects(
                        &string_map(&c["labelSelector"]["matchLabels"]),
                        &w.pod_labels,
                    )
            }),
            "{what}: replicas are not spread one per node"
        );
        // A rolling update must not need a fourth node.
        assert_eq!(
            deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"].as_i64(),
            Some(0),
            "{what}"
        );

        // The daemon elects a leader and listens where the probes and the Service look.
        let config = config_of(&r, &w);
        assert_ne!(config.daemon.leader_election, Some(false), "{what}");
        assert!(
            config.backup.schedule.is_some(),
            "{what}: no [backup] schedule"
        );
        let listen = config.daemon.listen.as_deref().expect("[daemon] listen");
        let (host, port) = listen.rsplit_once(':').expect("host:port");
        assert_eq!(
            host, "0.0.0.0",
            "{what}: the kubelet probes the pod's address"
        );
        let port: i64 = port.parse().expect("port");
        let container = lifeboat(&w);
        let ports = container["ports"].as_vec().expect("ports");
        let resolve = |p: &Yaml| -> i64 {
            match p {
                Yaml::Integer(n) => *n,
                Yaml::String(s) => ports
                    .iter()
                    .find(|cp| cp["name"].as_str() == Some(s.as_str()))
                    .and_then(|cp| cp["containerPort"].as_i64())
                    .unwrap_or_else(|| panic!("{what}: no container port named {s}")),
                other => panic!("{what}: port {other:?}"),
            }
        };
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{what}: {probe}");
            assert_eq!(resolve(&get["port"]), port, "{what}: {probe} port");
        }
        let shutdown = config.daemon.shutdown_timeout.as_deref().map_or(60, |t| {
            etcd_lifeboat::duration::parse_duration(t)
                .expect("shutdown-timeout")
                .as_secs()
        });
        let grace = w.pod["terminationGracePeriodSeconds"]
            .as_i64()
            .expect("terminationGracePeriodSeconds");
        assert!(
            grace > shutdown as i64,
            "{what}: the kubelet kills the daemon ({grace} s) before its shutdown-timeout ({shutdown} s)"
        );

        // The Service for /metrics selects these pods, on the listener's port, and keeps
        // not-ready ones: readiness fails exactly when backups are overdue.
        let service = r.one("Service");
        assert!(
            selects(&string_map(&service["spec"]["selector"]), &w.pod_labels),
            "{overlay}: the Service does not select the daemon's pods"
        );
        assert_eq!(
            service["spec"]["publishNotReadyAddresses"].as_bool(),
            Some(true),
            "{overlay}: the Service hides not-ready daemons from Prometheus"
        );
        let sport = service["spec"]["ports"]
            .as_vec()
            .and_then(|p| p.first())
            .expect("a Service port");
        assert_eq!(resolve(&sport["targetPort"]), port, "{overlay}: targetPort");
        let port_name = sport["name"].as_str().expect("the Service port is named");
        // Nothing else in the overlay has pods the Service would pick up.
        assert_eq!(r.workloads().len(), 1, "{overlay}");

        // The ServiceMonitor scrapes that Service's named port as job "lifeboat" (the
        // job the alert rules name: the Service's name).
        let monitor = r.one("ServiceMonitor");
        assert!(selects(
            &string_map(&monitor["spec"]["selector"]["matchLabels"]),
            &string_map(&service["metadata"]["labels"])
        ));
        assert_eq!(
            name(service),
            "lifeboat",
            "the job label of the alert rules"
        );
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["port"].as_str(), Some(port_name));
        assert_eq!(endpoint["path"].as_str(), Some("/metrics"));

        let pdb = r.one("PodDisruptionBudget");
        assert!(selects(
            &string_map(&pdb["spec"]["selector"]["matchLabels"]),
            &w.pod_labels
        ));
        assert_eq!(pdb["spec"]["maxUnavailable"].as_i64(), Some(1));
        assert_eq!(
            pdb["spec"]["unhealthyPodEvictionPolicy"].as_str(),
            Some("AlwaysAllow"),
            "{overlay}: not-ready daemons would block node drains"
        );
    }
}

#[test]
fn spool_and_scratch_are_bounded_writable_empty_dirs_and_storage_is_s3() {
    for r in all_overlays() {
        for w in r.workloads() {
            let config = config_of(&r, &w);
            let what = &w.what;
            let resources = &lifeboat(&w)["resources"];
            for (kind, key) in [
                ("limits", "memory"),
                ("limits", "cpu"),
                ("requests", "memory"),
                ("requests", "cpu"),
            ] {
                assert!(
                    resources[kind][key].as_str().is_some(),
                    "{what}: no resources.{kind}.{key}"
                );
            }
            assert!(
                config
                    .storage
                    .url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("s3://")),
                "{what}: a pod's own files are gone with the pod"
            );
            assert!(config.backup.cluster.is_some(), "{what}: [backup] cluster");
            if args(lifeboat(&w)).first() == Some(&"prune") {
                continue;
            }
            let spool = config.backup.spool_dir.as_deref().unwrap_or_else(|| {
                panic!(
                    "{what}: [backup] spool-dir unset: /tmp is on the read-only root file system"
                )
            });
            let (_, dir, read_only, vol) = mount_of(&w, spool.to_str().expect("utf-8 spool dir"));
            assert!(!read_only, "{what}: the spool {dir} is read-only");
            assert!(
                vol["emptyDir"]["sizeLimit"].as_str().is_some(),
                "{what}: the spool needs an emptyDir with a sizeLimit"
            );
            if let Some(identity) = &config.encryption.identity_file {
                let (_, dir, read_only, vol) =
                    mount_of(&w, identity.to_str().expect("utf-8 identity file"));
                assert!(read_only, "{what}: the identity's mount {dir} is writable");
                assert!(vol["secret"]["secretName"].as_str().is_some(), "{what}");
            }
        }
    }
}

/// Names that hold secrets when they hold a value rather than a file name.
fn secretish(var: &str) -> bool {
    var.starts_with("AWS_")
        || var.starts_with("AZURE_")
        || ["PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"]
            .iter()
            .any(|w| var.contains(w))
}

#[test]
fn no_secret_value_is_rendered_and_every_secret_read_is_in_the_example() {
    let example = std::fs::read_to_string(kubernetes_dir().join("secret.example.yaml"))
        .expect("secret.example.yaml");
    let examples = YamlLoader::load_from_str(&example).expect("secret.example.yaml parses");
    // name -> keys
    let mut shown: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in examples.iter().filter(|d| !d.is_null()) {
        assert_eq!(kind(s), "Secret");
        assert_eq!(s["metadata"]["namespace"].as_str(), Some(NAMESPACE));
        assert!(
            s["data"].is_badvalue(),
            "{}: data instead of stringData",
            name(s)
        );
        let data = s["stringData"].as_hash().expect("stringData");
        for (k, v) in data {
            assert!(
                v.as_str()
                    .is_some_and(|v| v.starts_with("EXAMPLE-REPLACE-ME")),
                "secret.example.yaml: {} {:?} is not a placeholder",
                name(s),
                k
            );
            shown
                .entry(name(s).to_owned())
                .or_default()
                .insert(k.as_str().expect("key").to_owned());
        }
    }
    for r in all_overlays() {
        let overlay = &r.overlay;
        assert!(
            r.of_kind("Secret").is_empty(),
            "{overlay}: renders a Secret; applying it would overwrite the real one"
        );
        for needle in [
            "EXAMPLE-REPLACE-ME",
            "-----BEGIN",
            "AGE-SECRET-KEY-",
            "AKIA",
            "aws_secret_access_key",
        ] {
            assert!(!r.text.contains(needle), "{overlay}: renders {needle:?}");
        }
        for w in r.workloads() {
            let container = lifeboat(&w);
            for e in container["env"].as_vec().into_iter().flatten() {
                let var = e["name"].as_str().expect("env name");
                let key_ref = &e["valueFrom"]["secretKeyRef"];
                if let (Some(secret), Some(key)) =
                    (key_ref["name"].as_str(), key_ref["key"].as_str())
                {
                    assert!(
                        shown.get(secret).is_some_and(|keys| keys.contains(key)),
                        "{}: {var} reads key {key:?} of Secret {secret:?}, which secret.example.yaml does not show",
                        w.what
                    );
                    continue;
                }
                if !secretish(var) {
                    continue;
                }
                // A literal is only allowed as the name of a mounted file.
                let value = e["value"].as_str().unwrap_or_else(|| {
                    panic!(
                        "{}: {var} is neither a secretKeyRef nor a file name",
                        w.what
                    )
                });
                assert!(
                    value.starts_with('/') && !value.contains(char::is_whitespace),
                    "{}: {var} has a literal value {value:?}: it belongs in a Secret",
                    w.what
                );
                mount_of(&w, value);
            }
            for (required, secret) in [
                ("AWS_ACCESS_KEY_ID", "lifeboat-s3"),
                ("AWS_SECRET_ACCESS_KEY", "lifeboat-s3"),
            ] {
                let e = env(container, required)
                    .unwrap_or_else(|| panic!("{}: {required} not set", w.what));
                assert_eq!(
                    e["valueFrom"]["secretKeyRef"]["name"].as_str(),
                    Some(secret),
                    "{}: {required}",
                    w.what
                );
            }
            for v in w.pod["volumes"].as_vec().into_iter().flatten() {
                if let Some(secret) = v["secret"]["secretName"].as_str() {
                    assert!(
                        shown.contains_key(secret),
                        "{}: mounts Secret {secret:?}, which secret.example.yaml does not show",
                        w.what
                    );
                }
            }
            // No credentials in the configuration either.
            let config = config_of(&r, &w);
            for key in config.storage.options.keys() {
                assert!(
                    !key.contains("secret")
                        && !key.contains("access_key")
                        && !key.contains("token"),
                    "{}: [storage.options] {key}: credentials belong in the Secret",
                    w.what
                );
            }
        }
        for cm in r.of_kind("ConfigMap") {
            let text = cm["data"]["lifeboat.toml"].as_str().unwrap_or("");
            for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
                let key = line.split('=').next().unwrap_or("").trim();
                assert!(
                    !["password", "secret-access-key", "access-key-id", "token"].contains(&key),
                    "{overlay}: ConfigMap {}: {line}",
                    name(cm)
                );
            }
        }
    }
}

#[test]
fn pod_security_restricted_holds_except_where_the_docs_say_the_etcd_pki_needs_more() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
            .expect("docs/operations.md");
    // The Dockerfile's user is the non-root pods' user.
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
            .expect("Dockerfile");
    let image_uid: i64 = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .next_back()
        .and_then(|u| u.split(':').next()?.trim().parse().ok())
        .expect("a numeric USER in the Dockerfile");
    for r in all_overlays() {
        let overlay = &r.overlay;
        let ns = r.one("Namespace");
        let labels = string_map(&ns["metadata"]["labels"]);
        let level = |mode: &str| {
            labels
                .get(&format!("pod-security.kubernetes.io/{mode}"))
                .map(String::as_str)
        };
        for w in r.workloads() {
            // Beyond Pod Security, our own hardening.
            assert_eq!(
                lifeboat(&w)["securityContext"]["readOnlyRootFilesystem"].as_bool(),
                Some(true),
                "{}: readOnlyRootFilesystem",
                w.what
            );
            let violations = restricted_violations(w.pod);
            let reads_kubeadm_key = args(lifeboat(&w)).first() != Some(&"prune");
            if is_restricted(overlay) || !reads_kubeadm_key {
                assert_eq!(
                    violations,
                    Vec::<String>::new(),
                    "{}: not restricted",
                    w.what
                );
                let uid = w.pod["securityContext"]["runAsUser"].as_i64();
                assert_eq!(
                    uid,
                    Some(image_uid),
                    "{}: runAsUser vs the image's USER",
                    w.what
                );
            } else {
                // The documented exceptions, and nothing else: kubeadm's certificates from
                // the node (hostPath) and uid 0 for its root-only key.
                assert_eq!(
                    violations,
                    [
                        "hostPath volume \"etcd-certs\"",
                        "lifeboat: runAsNonRoot != true",
                        "lifeboat: runAsUser 0"
                    ],
                    "{}",
                    w.what
                );
            }
        }
        if is_restricted(overlay) {
            for mode in ["enforce", "warn", "audit"] {
                assert_eq!(level(mode), Some("restricted"), "{overlay}: {mode}");
            }
        } else {
            // hostPath is refused by "baseline" too: only "privileged" admits the pods.
            assert_eq!(level("enforce"), Some("privileged"), "{overlay}");
            assert_eq!(
                level("warn"),
                Some("restricted"),
                "{overlay}: warn names the gaps"
            );
        }
    }
    for needed in [
        "hostPath",
        "privileged",
        "restricted",
        "0600",
        "cronjob-restricted",
        "daemon-restricted",
        "lifeboat-etcd-client",
    ] {
        assert!(
            docs.contains(needed),
            "docs/operations.md does not explain the Pod Security levels ({needed})"
        );
    }
}
