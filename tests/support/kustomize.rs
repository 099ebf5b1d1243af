//! `config/kubernetes/` as the cluster would get it: an overlay rendered by the real
//! `kubectl kustomize` (`.tools/bin/kubectl`, Debian's 1.36), and what the tests look at
//! in it: the workloads, their lifeboat container, mounts, volumes, environment and the
//! configuration file lifeboat would read (parsed by lifeboat's own loader).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use etcd_lifeboat::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

use super::tools;

/// The one configuration file every workload names.
pub const CONFIG_PATH: &str = "/etc/lifeboat/lifeboat.toml";

pub fn kubernetes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kubernetes")
}

/// One overlay as `kubectl kustomize` renders it.
pub struct Rendered {
    pub overlay: String,
    pub text: String,
    pub objects: Vec<Yaml>,
}

pub fn render(overlay: &str) -> Rendered {
    render_dir(overlay, &kubernetes_dir().join(overlay))
}

/// An overlay with one of `components/` added, the way an operator's own kustomization
/// would use it (`resources: [overlay]`, `components: [component]`). kustomize takes
/// only relative paths there, so the kustomization in a temporary directory names both
/// relative to itself.
pub fn render_with_component(overlay: &str, component: &str) -> Rendered {
    render_with_component_and(overlay, component, "")
}

/// As `render_with_component`, with `extra` (e.g. `patches:`) appended to the kustomization.
pub fn render_with_component_and(overlay: &str, component: &str, extra: &str) -> Rendered {
    let dir = tempfile::tempdir().expect("temp dir");
    let up = "../".repeat(dir.path().components().count() - 1);
    let rel = |p: PathBuf| format!("{up}{}", p.strip_prefix("/").expect("absolute").display());
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{}]\ncomponents: [{}]\n",
        rel(kubernetes_dir().join(overlay)),
        rel(kubernetes_dir().join("components").join(component)),
    ) + extra;
    std::fs::write(dir.path().join("kustomization.yaml"), kustomization).expect("write");
    render_dir(&format!("{overlay} + components/{component}"), dir.path())
}

fn render_dir(overlay: &str, dir: &Path) -> Rendered {
    let out = Command::new(tools::kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl kustomize");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let objects: Vec<Yaml> = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("kubectl kustomize {overlay}: not YAML: {e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    Rendered {
        overlay: overlay.to_owned(),
        text,
        objects,
    }
}

pub fn kind(o: &Yaml) -> &str {
    o["kind"].as_str().unwrap_or("")
}

pub fn name(o: &Yaml) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

pub fn strs(y: &Yaml) -> Vec<&str> {
    y.as_vec()
        .map(|v| v.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

/// `key: value` pairs of a YAML mapping of strings (labels, selectors).
pub fn string_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A workload of a rendered overlay: its pod template's spec and labels.
pub struct Workload<'a> {
    pub what: String,
    pub object: &'a Yaml,
    pub pod: &'a Yaml,
    pub pod_labels: BTreeMap<String, String>,
}

impl Rendered {
    pub fn of_kind(&self, k: &str) -> Vec<&Yaml> {
        self.objects.iter().filter(|o| kind(o) == k).collect()
    }

    pub fn one(&self, k: &str) -> &Yaml {
        let found = self.of_kind(k);
        assert_eq!(found.len(), 1, "{}: expected one {k}", self.overlay);
        found[0]
    }

    pub fn workloads(&self) -> Vec<Workload<'_>> {
        let mut out = Vec::new();
        for o in &self.objects {
            let template = match kind(o) {
                "CronJob" => &o["spec"]["jobTemplate"]["spec"]["template"],
                "Deployment" => &o["spec"]["template"],
                _ => continue,
            };
            out.push(Workload {
                what: format!("{} {} ({})", kind(o), name(o), self.overlay),
                object: o,
                pod: &template["spec"],
                pod_labels: string_map(&template["metadata"]["labels"]),
            });
        }
        assert!(!out.is_empty(), "{}: no workload", self.overlay);
        out
    }

    /// The workload whose lifeboat runs `command` (`backup`, `prune`, `daemon`).
    pub fn running(&self, command: &str) -> Workload<'_> {
        let mut found: Vec<Workload<'_>> = self
            .workloads()
            .into_iter()
            .filter(|w| args(lifeboat(w)).first() == Some(&command))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected one workload running `lifeboat {command}`",
            self.overlay
        );
        found.remove(0)
    }

    pub fn configmap_toml(&self, configmap: &str) -> &str {
        self.of_kind("ConfigMap")
            .into_iter()
            .find(|c| name(c) == configmap)
            .unwrap_or_else(|| panic!("{}: no ConfigMap {configmap:?}", self.overlay))["data"]
            ["lifeboat.toml"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: ConfigMap {configmap:?} has no lifeboat.toml", self.overlay))
    }
}

/// The container that runs lifeboat.
pub fn lifeboat<'a>(w: &Workload<'a>) -> &'a Yaml {
    w.pod["containers"]
        .as_vec()
        .and_then(|cs| cs.iter().find(|c| c["name"].as_str() == Some("lifeboat")))
        .unwrap_or_else(|| panic!("{}: no container named lifeboat", w.what))
}

pub fn args(container: &Yaml) -> Vec<&str> {
    strs(&container["args"])
}

pub fn env<'a>(container: &'a Yaml, var: &str) -> Option<&'a Yaml> {
    container["env"]
        .as_vec()?
        .iter()
        .find(|e| e["name"].as_str() == Some(var))
}

pub fn env_value<'a>(w: &Workload<'a>, var: &str) -> &'a str {
    env(lifeboat(w), var)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("{}: no literal {var}", w.what))
}

/// (volume, mountPath, readOnly) of the container's mounts.
pub fn mounts(container: &Yaml) -> Vec<(&str, &str, bool)> {
    container["volumeMounts"]
        .as_vec()
        .map(|v| {
            v.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or(""),
                        m["mountPath"].as_str().unwrap_or(""),
                        m["readOnly"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn volume<'a>(w: &Workload<'a>, volume_name: &str) -> &'a Yaml {
    w.pod["volumes"]
        .as_vec()
        .and_then(|v| v.iter().find(|v| v["name"].as_str() == Some(volume_name)))
        .unwrap_or_else(|| panic!("{}: no volume {volume_name:?}", w.what))
}

/// The mount that holds `path`, and its volume.
pub fn mount_of<'a>(w: &Workload<'a>, path: &str) -> (&'a str, &'a str, bool, &'a Yaml) {
    let (vol, dir, ro) = mounts(lifeboat(w))
        .into_iter()
        .filter(|(_, dir, _)| Path::new(path).starts_with(dir))
        .max_by_key(|(_, dir, _)| dir.len())
        .unwrap_or_else(|| panic!("{}: nothing mounted where {path} is", w.what));
    (vol, dir, ro, volume(w, vol))
}

/// The configuration file the workload's lifeboat reads, parsed by lifeboat itself.
pub fn config_of(r: &Rendered, w: &Workload<'_>) -> Config {
    let container = lifeboat(w);
    let argv = args(container);
    let at = argv
        .iter()
        .position(|a| *a == "--config")
        .unwrap_or_else(|| panic!("{}: args {argv:?} without --config", w.what));
    assert_eq!(argv.get(at + 1), Some(&CONFIG_PATH), "{}", w.what);
    let (_, dir, read_only, vol) = mount_of(w, CONFIG_PATH);
    assert!(read_only, "{}: the config mount {dir} is writable", w.what);
    let configmap = vol["configMap"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: {dir} is not a ConfigMap", w.what));
    let text = r.configmap_toml(configmap);
    Config::parse(text).unwrap_or_else(|e| panic!("{}: lifeboat.toml of {configmap}: {e}", w.what))
}
