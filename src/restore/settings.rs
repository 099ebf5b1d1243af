//! The `[restore]` configuration, checked once: each member's URLs, data dir, host and
//! how its etcd and Kubernetes components are stopped and started; and whether the
//! configured membership matches the backup's.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::control::Control;
use super::names;
use super::plan::BackupRef;
use super::transport::Host;
use crate::config::{RestoreConfig, RestoreMember};

/// The revision bump the etcd docs suggest for Kubernetes.
pub const DEFAULT_BUMP: u64 = 1_000_000_000;

/// One member as configured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberSpec {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
    pub data_dir: PathBuf,
    pub host: Host,
    pub etcd: Control,
    pub kube: Control,
    pub etcdutl: Option<PathBuf>,
}

/// `[restore]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreSettings {
    /// `[restore] new-membership`: members may differ from the snapshot's.
    pub new_membership: bool,
    pub token: String,
    /// The bump asked for (0: none).
    pub bump: u64,
    pub state_dir: PathBuf,
    pub kube_health: Option<String>,
    pub step_timeout: Duration,
    pub members: Vec<MemberSpec>,
}

impl RestoreSettings {
    pub fn from_config(c: &RestoreConfig) -> Result<RestoreSettings, String> {
        if c.members.is_empty() {
            return Err(
                "[restore] has no [[restore.members]]: describe every member of the \
                        cluster to rebuild"
                    .into(),
            );
        }
        let mut members = Vec::new();
        for m in &c.members {
            let mut spec = member(m)?;
            spec.host = spec.host.with_ssh_config(c.ssh_config.as_deref());
            if members.iter().any(|o: &MemberSpec| o.name == spec.name) {
                return Err(format!(
                    "[[restore.members]] name {:?} appears twice",
                    spec.name
                ));
            }
            members.push(spec);
        }
        let step_timeout = match &c.step_timeout {
            Some(t) => crate::duration::parse_duration(t)
                .ok_or_else(|| format!("[restore] step-timeout {t:?} is not a duration"))?,
            None => Duration::from_secs(120),
        };
        for (what, url) in [("peer-url", 0), ("client-url", 1)] {
            let mut seen = std::collections::BTreeSet::new();
            for m in &members {
                let u = if url == 0 { &m.peer_url } else { &m.client_url };
                if !seen.insert(u.clone()) {
                    return Err(format!(
                        "[[restore.members]] {:?}: {what} {u} is also another member's",
                        m.name
                    ));
                }
            }
        }
        Ok(RestoreSettings {
            new_membership: c.new_membership.unwrap_or(false),
            token: c
                .initial_cluster_token
                .clone()
                .unwrap_or_else(|| "etcd-cluster".into()),
            bump: c.bump_revision.unwrap_or(DEFAULT_BUMP),
            state_dir: c
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/var/lib/lifeboat/restore")),
            kube_health: c.kube_health.clone(),
            step_timeout,
            members,
        })
    }

    /// `name=peer-url,...`, identical on every member.
    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn member(m: &RestoreMember) -> Result<MemberSpec, String> {
    let at = |what: &str| format!("[[restore.members]] {:?}: {what}", m.name);
    // The name becomes part of file names and commands on the member.
    names::check_word("name", &m.name).map_err(|e| at(&e))?;
    for (key, url) in [("peer-url", &m.peer_url), ("client-url", &m.client_url)] {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(at(&format!(
                "{key} {url:?} must be an http:// or https:// URL"
            )));
        }
        if url.contains(|c: char| c.is_whitespace() || c.is_control() || c == ',') {
            return Err(at(&format!(
                "{key} {url:?} holds a space, a control character or ','"
            )));
        }
    }
    let data_dir = names::data_dir(&m.data_dir).map_err(|e| at(&e))?;
    let texts = [
        (
            "etcdutl",
            m.etcdutl.as_ref().map(|p| p.display().to_string()),
        ),
        (
            "etcd-static-pod-manifest",
            m.etcd_static_pod_manifest
                .as_ref()
                .map(|p| p.display().to_string()),
        ),
        ("etcd-systemd-unit", m.etcd_systemd_unit.clone()),
    ];
    let lists = m
        .kube_systemd_units
        .iter()
        .map(|u| ("kube-systemd-units", Some(u.clone())))
        .chain(
            m.kube_static_pod_manifests
                .iter()
                .map(|p| ("kube-static-pod-manifests", Some(p.display().to_string()))),
        );
    for (key, value) in texts.into_iter().chain(lists) {
        if let Some(v) = value {
            names::check_printable(key, &v).map_err(|e| at(&e))?;
        }
    }
    let etcd = Control::from_member(
        "etcd",
        m.etcd_systemd_unit.iter().cloned().collect(),
        m.etcd_static_pod_manifest.iter().cloned().collect(),
        m.etcd_start.clone(),
        m.etcd_stop.clone(),
        &m.name,
    )?;
    if etcd == Control::Nothing {
        return Err(at(
            "say how etcd is controlled: etcd-systemd-unit, etcd-static-pod-manifest, or \
             etcd-start and etcd-stop",
        ));
    }
    let kube = Control::from_member(
        "kube",
        m.kube_systemd_units.clone(),
        m.kube_static_pod_manifests.clone(),
        m.kube_start.clone(),
        m.kube_stop.clone(),
        &m.name,
    )?;
    Ok(MemberSpec {
        name: m.name.clone(),
        peer_url: m.peer_url.clone(),
        client_url: m.client_url.clone(),
        data_dir,
        host: Host::parse(m.host.as_deref()).map_err(|e| at(&e))?,
        etcd,
        kube,
        etcdutl: m.etcdutl.clone(),
    })
}

/// Catches a configuration that does not describe the cluster in the backup: a member
/// forgotten, added or misnamed. Restoring a different membership is possible but rarely
/// meant (static pod manifests and unit files name the members), so it needs
/// `[restore] new-membership = true`.
pub fn check_membership(s: &RestoreSettings, backup: &BackupRef) -> Result<(), String> {
    if backup.members.is_empty() || s.new_membership {
        return Ok(());
    }
    let planned: std::collections::BTreeSet<&str> =
        s.members.iter().map(|m| m.name.as_str()).collect();
    let recorded: std::collections::BTreeSet<&str> =
        backup.members.iter().map(String::as_str).collect();
    if planned == recorded {
        return Ok(());
    }
    Err(format!(
        "the config describes {} member(s) {planned:?}, but the cluster in backup {} had {} \
         {recorded:?}: describe every member with its name, or set [restore] new-membership \
         = true to restore into a different membership on purpose",
        planned.len(),
        backup.id,
        recorded.len()
    ))
}
