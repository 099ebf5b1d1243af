//! How a member's etcd or Kubernetes components are stopped, started and checked:
//! systemd units, kubeadm static pods, or the operator's own commands.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::transport::quote;

/// How a component (etcd, or the Kubernetes components) is stopped and started.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Control {
    Systemd {
        units: Vec<String>,
    },
    /// kubeadm static pods: moved out of the manifests directory to stop, back to start.
    StaticPods {
        manifests: Vec<PathBuf>,
    },
    Commands {
        start: String,
        stop: String,
    },
    /// Nothing to control on this member (e.g. no Kubernetes components).
    Nothing,
}

impl Control {
    pub(super) fn from_member(
        what: &str,
        units: Vec<String>,
        manifests: Vec<PathBuf>,
        start: Option<String>,
        stop: Option<String>,
        member: &str,
    ) -> Result<Control, String> {
        let chosen = [
            !units.is_empty(),
            !manifests.is_empty(),
            start.is_some() || stop.is_some(),
        ];
        match chosen {
            [false, false, false] => Ok(Control::Nothing),
            [true, false, false] => Ok(Control::Systemd { units }),
            [false, true, false] => Ok(Control::StaticPods { manifests }),
            [false, false, true] => match (start, stop) {
                (Some(start), Some(stop)) => Ok(Control::Commands { start, stop }),
                _ => Err(format!(
                    "[[restore.members]] {member}: {what}-start and {what}-stop go together"
                )),
            },
            _ => Err(format!(
                "[[restore.members]] {member}: choose one way to control {what}: systemd \
                 units, static pod manifests, or start/stop commands"
            )),
        }
    }

    /// Where stopped static pod manifests are kept: beside the manifests directory, never
    /// inside it (the kubelet runs every file there).
    fn stash(manifest: &Path) -> PathBuf {
        let dir = manifest.parent().unwrap_or(Path::new("/"));
        let mut stash = dir.as_os_str().to_owned();
        stash.push(".lifeboat-stopped");
        PathBuf::from(stash).join(manifest.file_name().unwrap_or_default())
    }

    pub fn stop_script(&self) -> Option<String> {
        match self {
            Control::Nothing => None,
            Control::Systemd { units } => Some(format!("systemctl stop {}", words(units))),
            Control::StaticPods { manifests } => Some(
                manifests
                    .iter()
                    .map(|m| {
                        let stash = Self::stash(m);
                        // Idempotent: already moved is fine.
                        format!(
                            "if [ -e {m} ]; then mkdir -p {dir} && mv {m} {stash}; fi",
                            m = quote(&m.display().to_string()),
                            dir = quote(
                                &stash
                                    .parent()
                                    .unwrap_or(Path::new("/"))
                                    .display()
                                    .to_string()
                            ),
                            stash = quote(&stash.display().to_string()),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" && "),
            ),
            Control::Commands { stop, .. } => Some(stop.clone()),
        }
    }

    pub fn start_script(&self) -> Option<String> {
        match self {
            Control::Nothing => None,
            Control::Systemd { units } => Some(format!("systemctl start {}", words(units))),
            Control::StaticPods { manifests } => Some(
                manifests
                    .iter()
                    .map(|m| {
                        format!(
                            "if [ -e {stash} ]; then mv {stash} {m}; fi",
                            m = quote(&m.display().to_string()),
                            stash = quote(&Self::stash(m).display().to_string()),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" && "),
            ),
            Control::Commands { start, .. } => Some(start.clone()),
        }
    }

    /// A command that succeeds once the component is stopped, where one can be said.
    pub fn stopped_check(&self) -> Option<String> {
        match self {
            Control::Systemd { units } => Some(
                units
                    .iter()
                    .map(|u| format!("! systemctl is-active --quiet {}", quote(u)))
                    .collect::<Vec<_>>()
                    .join(" && "),
            ),
            Control::StaticPods { manifests } => Some(
                manifests
                    .iter()
                    .map(|m| {
                        let name = m.file_stem().unwrap_or_default().to_string_lossy();
                        format!(
                            "test -z \"$(crictl ps -q --name {})\"",
                            quote(&format!("^{name}$"))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" && "),
            ),
            Control::Commands { .. } | Control::Nothing => None,
        }
    }
}

fn words(items: &[String]) -> String {
    items.iter().map(|i| quote(i)).collect::<Vec<_>>().join(" ")
}
