//! Pod Security admission's "restricted" level, field by field, for tests of the
//! Kubernetes manifests (`kubernetes.rs`): what it would refuse in a pod spec.

use yaml_rust2::Yaml;

fn strs(y: &Yaml) -> Vec<&str> {
    y.as_vec()
        .map(|v| v.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

/// What Pod Security admission's "restricted" level (Kubernetes 1.36, which includes
/// "baseline") refuses in a pod spec, in its own words. Windows-only and AppArmor/SELinux
/// fields are not used here and are checked as absent.
pub fn restricted_violations(pod: &Yaml) -> Vec<String> {
    let mut found = Vec::new();
    let psc = &pod["securityContext"];
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host].as_bool() == Some(true) {
            found.push(format!("{host}: true"));
        }
    }
    const RESTRICTED_VOLUMES: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for v in pod["volumes"].as_vec().into_iter().flatten() {
        for (k, _) in v.as_hash().expect("volume") {
            let k = k.as_str().unwrap_or("");
            if k != "name" && !RESTRICTED_VOLUMES.contains(&k) {
                found.push(format!("{k} volume {:?}", v["name"].as_str().unwrap_or("")));
            }
        }
    }
    for field in [
        "seLinuxOptions",
        "appArmorProfile",
        "sysctls",
        "windowsOptions",
    ] {
        if !psc[field].is_badvalue() {
            found.push(format!("securityContext.{field}"));
        }
    }
    let pod_seccomp = psc["seccompProfile"]["type"].as_str();
    let containers: Vec<&Yaml> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod[*k].as_vec().into_iter().flatten())
        .collect();
    for c in containers {
        let sc = &c["securityContext"];
        let who = c["name"].as_str().unwrap_or("?");
        if sc["privileged"].as_bool() == Some(true) {
            found.push(format!("{who}: privileged"));
        }
        if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
            found.push(format!("{who}: allowPrivilegeEscalation != false"));
        }
        let drops = strs(&sc["capabilities"]["drop"]);
        if !drops.contains(&"ALL") {
            found.push(format!("{who}: capabilities not all dropped"));
        }
        for add in strs(&sc["capabilities"]["add"]) {
            if add != "NET_BIND_SERVICE" {
                found.push(format!("{who}: adds capability {add}"));
            }
        }
        let non_root = sc["runAsNonRoot"]
            .as_bool()
            .or_else(|| psc["runAsNonRoot"].as_bool());
        if non_root != Some(true) {
            found.push(format!("{who}: runAsNonRoot != true"));
        }
        let uid = sc["runAsUser"]
            .as_i64()
            .or_else(|| psc["runAsUser"].as_i64());
        if uid == Some(0) {
            found.push(format!("{who}: runAsUser 0"));
        }
        let seccomp = sc["seccompProfile"]["type"].as_str().or(pod_seccomp);
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            found.push(format!("{who}: seccompProfile {seccomp:?}"));
        }
        if c["ports"]
            .as_vec()
            .into_iter()
            .flatten()
            .any(|p| p["hostPort"].as_i64().is_some_and(|h| h != 0))
        {
            found.push(format!("{who}: hostPort"));
        }
        for field in [
            "seLinuxOptions",
            "appArmorProfile",
            "windowsOptions",
            "procMount",
        ] {
            if !sc[field].is_badvalue() {
                found.push(format!("{who}: securityContext.{field}"));
            }
        }
    }
    found
}
