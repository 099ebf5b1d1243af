//! The restore plan: a pure function of the configured members, the backup and what
//! preflight found on each member, giving the eight steps with the exact commands.
//! `restore plan` prints it; `restore run` carries out the same plan.

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use super::control::Control;
use super::names;
use super::transport::quote;

pub use super::settings::{DEFAULT_BUMP, MemberSpec, RestoreSettings, check_membership};

/// What preflight found on a member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    pub member: String,
    /// The restore tool there (`etcdutl`, or `etcdctl` for 3.4).
    pub tool: String,
    pub version: String,
    /// Whether it has `--bump-revision` / `--mark-compacted`.
    pub can_bump: bool,
    /// Whether it has `check v2store` (etcdutl 3.5.20+ and 3.6).
    #[serde(default)]
    pub can_check_v2store: bool,
    /// The backup's bundle files this member does not have.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_bundle_files: Vec<String>,
}

/// The backup being restored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupRef {
    pub id: String,
    pub revision: i64,
    pub total_key: u64,
    /// Distinct live keys: what a `get --prefix ""` counts after the restore.
    pub live_keys: u64,
    /// Member names inside the snapshot (empty when unknown).
    pub members: Vec<String>,
    pub db_size: u64,
    pub etcd_version: String,
    /// The files of its restore bundle (`[bundle] files`), which each member should have.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bundle_files: Vec<String>,
}

/// What carrying out an action means.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Kind {
    /// Run `command` on the member's host; it must succeed.
    Run,
    /// Nothing to do (said for completeness).
    Note,
    /// Find the member's restore tool, its version and bump support.
    Probe,
    /// Copy the verified snapshot to this path on the member.
    Copy { to: PathBuf },
    /// Wait until these URLs no longer accept connections.
    PortsClosed { urls: Vec<String> },
    /// Fetch the backup once and verify it.
    Fetch,
    /// Wait for the restored cluster and check it (members, leader, ids, revision,
    /// hashkv, keys).
    ClusterCheck,
    /// Run the `kube-health` command (or GET its URL) until it succeeds.
    KubeHealth { check: String },
    /// Compare the live Kubernetes objects with the snapshot's (`lifeboat diff`).
    Inventory,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// `None` for actions lifeboat takes itself (fetching, cluster checks).
    pub member: Option<String>,
    pub host: String,
    pub what: String,
    /// The shell command run on the member's host, for [`Kind::Run`].
    pub command: Option<String>,
    #[serde(flatten)]
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub number: u8,
    pub title: String,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub backup: BackupRef,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    /// The bump that will be applied (0 when a member's tool cannot bump).
    pub bump_revision: u64,
    /// Suffix of the moved-aside data dirs, `<data-dir>.lifeboat-<stamp>`.
    pub stamp: String,
    pub notes: Vec<String>,
    pub steps: Vec<Step>,
}

/// Paths on a member for this restore.
pub struct MemberPaths {
    pub snapshot: PathBuf,
    pub new_dir: PathBuf,
    pub old_dir: PathBuf,
}

/// Every name in them is made a plain file name word here ([`names::file_word`]),
/// whatever was checked before: a backup id or member name never adds a `/` or `..`.
pub fn member_paths(m: &MemberSpec, backup_id: &str, stamp: &str) -> MemberPaths {
    let parent = m.data_dir.parent().unwrap_or(Path::new("/"));
    let (backup_id, name, stamp) = (
        names::file_word(backup_id),
        names::file_word(&m.name),
        names::file_word(stamp),
    );
    // Beside the data dir, named after its last part: also for a `data-dir` written
    // with a trailing `/`, never inside it.
    let base = m.data_dir.file_name().unwrap_or_default();
    let suffixed = |suffix: String| {
        let mut p = base.to_owned();
        p.push(suffix);
        parent.join(p)
    };
    MemberPaths {
        // Named per member too: members may share a disk (and a parent directory).
        snapshot: parent.join(format!("lifeboat-restore-{backup_id}-{name}.db")),
        new_dir: suffixed(format!(".lifeboat-new-{stamp}")),
        old_dir: suffixed(format!(".lifeboat-{stamp}")),
    }
}

/// The restore command for a member.
fn restore_command(
    m: &MemberSpec,
    probe: Option<&Probe>,
    paths: &MemberPaths,
    initial_cluster: &str,
    token: &str,
    bump: u64,
) -> String {
    let tool = probe
        .map(|p| p.tool.clone())
        .or_else(|| m.etcdutl.as_ref().map(|p| p.display().to_string()))
        .unwrap_or_else(|| "etcdutl".into());
    let is_etcdctl = Path::new(&tool)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("etcdctl"));
    let mut words = Vec::new();
    if is_etcdctl {
        words.push("ETCDCTL_API=3".to_owned());
    }
    words.extend([
        quote(&tool),
        "snapshot".into(),
        "restore".into(),
        quote(&paths.snapshot.display().to_string()),
        "--name".into(),
        quote(&m.name),
        "--data-dir".into(),
        quote(&paths.new_dir.display().to_string()),
        "--initial-cluster".into(),
        quote(initial_cluster),
        "--initial-cluster-token".into(),
        quote(token),
        "--initial-advertise-peer-urls".into(),
        quote(&m.peer_url),
    ]);
    if bump > 0 {
        words.extend([
            "--bump-revision".into(),
            bump.to_string(),
            "--mark-compacted".into(),
        ]);
    }
    words.join(" ")
}

/// `3.6` of `3.6.1`, `v3.6.0-rc.1` or `3.5.30 (backup ...)`: the major and minor version.
pub fn minor_version(version: &str) -> Option<(u32, u32)> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Step 5's check of a restored data directory: `check v2store` where the member's tool
/// has it (etcd 3.6 will not start on a v2store with custom content). Done already when
/// the swap has run (the restored dir is in place).
fn v2store_check(tool: &str, new: &str) -> String {
    format!(
        "if [ -e {new} ]; then {t} check v2store --data-dir {new}; \
         else echo \"the restored directory is in place already\"; fi",
        t = quote(tool)
    )
}

/// Step 5's swap, safe to repeat: `mv` never targets an existing path (which would put
/// one directory inside the other). The old dir is moved aside (or, when there was none,
/// an empty one is made, recording that the swap ran), then the restored one is moved in;
/// run again after that, it says so and changes nothing. `data`, `new`, `old` are quoted.
fn swap_command(data: &str, new: &str, old: &str) -> String {
    format!(
        "if [ -e {new} ]; then \
         if [ -e {data} ]; then \
         if [ -e {old} ]; then echo \"both \"{data}\" and \"{old}\" exist: move one of them \
         away by hand, then resume\" >&2; exit 1; fi; \
         mv -- {data} {old} || exit 1; \
         elif [ ! -e {old} ]; then mkdir -- {old} || exit 1; fi; \
         mv -- {new} {data}; \
         elif [ -e {old} ] && [ -e {data} ]; then echo \"in place already: \"{data}\" is the \
         restored directory, \"{old}\" the old one\"; \
         else echo \"nothing restored to put in place: \"{new}\" is missing; run step 5 again\" \
         >&2; exit 1; fi"
    )
}

/// A shell check that `dir` is writable and has `bytes` free, saying which is not so.
fn free_space_check(dir: &Path, bytes: u64) -> String {
    let d = quote(&dir.display().to_string());
    let kib = bytes.div_ceil(1024);
    format!(
        "test -w {d} || {{ echo \"{d} is not writable\" >&2; exit 1; }}; \
         avail=$(df -Pk {d} | awk 'NR==2 {{print $4}}'); \
         [ \"$avail\" -ge {kib} ] || {{ echo \"only $avail KiB free in {d}, the restore needs {kib} KiB\" >&2; exit 1; }}"
    )
}

/// Builds the plan. Pure: everything it needs is in its arguments.
pub fn make(s: &RestoreSettings, backup: &BackupRef, probes: &[Probe], stamp: &str) -> Plan {
    let probe_of = |m: &MemberSpec| probes.iter().find(|p| p.member == m.name);
    let initial_cluster = s.initial_cluster();
    let mut notes = Vec::new();
    let cannot_bump: Vec<String> = s
        .members
        .iter()
        .filter(|m| probe_of(m).is_some_and(|p| !p.can_bump))
        .map(|m| {
            let p = probe_of(m)
                .map(|p| format!("{} {}", p.tool, p.version))
                .unwrap_or_default();
            format!("{} ({p})", m.name)
        })
        .collect();
    let bump = if s.bump > 0 && !cannot_bump.is_empty() {
        notes.push(format!(
            "no revision bump: the restore tool on {} has no --bump-revision (it needs etcd \
             3.5.10+ or 3.4.27+). Revisions restart at {}, lower than what Kubernetes \
             clients last saw: informers, kubelets and kube-proxy may keep stale state until \
             they are restarted; restart them all in step 7 and watch for errors. Install a \
             newer etcdutl to avoid this.",
            cannot_bump.join(", "),
            backup.revision
        ));
        0
    } else {
        s.bump
    };
    // etcdutl restores what its own minor version writes: a 3.6 snapshot needs a 3.6
    // etcdutl, and a newer one may write a data dir an older etcd will not start on.
    if let Some(want) = minor_version(&backup.etcd_version) {
        let other: Vec<String> = s
            .members
            .iter()
            .filter_map(&probe_of)
            .filter(|p| minor_version(&p.version).is_some_and(|v| v != want))
            .map(|p| format!("{} ({} {})", p.member, p.tool, p.version))
            .collect();
        if !other.is_empty() {
            notes.push(format!(
                "the backup's server ran etcd {}, but the restore tool on {} is of another \
                 minor version: restore with an etcdutl {}.{}.x (set [[restore.members]] \
                 etcdutl), so that the data directory is one the etcd that starts on it reads",
                backup.etcd_version,
                other.join(", "),
                want.0,
                want.1
            ));
        }
    }
    for m in &s.members {
        if let Some(p) = probe_of(m).filter(|p| !p.missing_bundle_files.is_empty()) {
            notes.push(format!(
                "member {} lacks {} of the backup's bundle files: {}. Write them there with \
                 `lifeboat fetch {} --bundle / --identity KEY` (it never overwrites a file), \
                 or copy them from another member, before step 6 starts etcd",
                m.name,
                p.missing_bundle_files.len(),
                p.missing_bundle_files.join(", "),
                backup.id
            ));
        }
    }
    if s.bump == 0 {
        notes.push(
            "revision bump disabled ([restore] bump-revision = 0): Kubernetes clients may \
             keep stale state after the restore"
                .into(),
        );
    }
    let here = |what: String, kind: Kind| Action {
        member: None,
        host: "local".into(),
        what,
        command: None,
        kind,
    };
    let act = |m: &MemberSpec, what: String, kind: Kind| Action {
        member: Some(m.name.clone()),
        host: m.host.to_string(),
        what,
        command: None,
        kind,
    };
    let on = |m: &MemberSpec, what: String, command: Option<String>| Action {
        kind: if command.is_some() {
            Kind::Run
        } else {
            Kind::Note
        },
        command,
        ..act(m, what, Kind::Note)
    };
    let each = |f: &dyn Fn(&MemberSpec) -> Vec<Action>| -> Vec<Action> {
        s.members.iter().flat_map(f).collect()
    };

    let mut steps = Vec::new();
    steps.push(Step {
        number: 1,
        title: "The hosts are back".into(),
        actions: each(&|m| vec![on(m, "the host answers".into(), Some("true".into()))]),
    });
    let mut step2 = each(&|m| {
        let parent = m.data_dir.parent().unwrap_or(Path::new("/"));
        let tool = probe_of(m).map_or_else(
            || "the restore tool (etcdutl, or etcdctl for 3.4) is present".to_owned(),
            |p| {
                format!(
                    "{} {} is present (bump: {})",
                    p.tool,
                    p.version,
                    if p.can_bump { "yes" } else { "no" }
                )
            },
        );
        vec![
            act(m, tool, Kind::Probe),
            on(
                m,
                format!(
                    "{} is writable with at least {} MiB free (twice the snapshot)",
                    parent.display(),
                    (2 * backup.db_size).div_ceil(1 << 20)
                ),
                Some(free_space_check(parent, 2 * backup.db_size)),
            ),
        ]
    });
    step2.push(here(
        format!(
            "fetch backup {} once and verify it (sha256s, bbolt, status figures)",
            backup.id
        ),
        Kind::Fetch,
    ));
    steps.push(Step {
        number: 2,
        title: "etcd is deployed, the backup is verified".into(),
        actions: step2,
    });
    steps.push(Step {
        number: 3,
        title: "Stop the Kubernetes components".into(),
        actions: each(&|m| match m.kube.stop_script() {
            None => vec![on(m, "no Kubernetes components configured".into(), None)],
            Some(stop) => {
                let mut v = vec![on(m, "stop the Kubernetes components".into(), Some(stop))];
                if let Some(check) = m.kube.stopped_check() {
                    v.push(on(m, "check they stopped".into(), Some(check)));
                }
                v
            }
        }),
    });
    steps.push(Step {
        number: 4,
        title: "Stop etcd on every member".into(),
        actions: each(&|m| {
            let mut v = vec![on(m, "stop etcd".into(), m.etcd.stop_script())];
            if let Some(check) = m.etcd.stopped_check() {
                v.push(on(m, "check it stopped".into(), Some(check)));
            }
            v.push(act(
                m,
                format!("check {} and {} no longer answer", m.client_url, m.peer_url),
                Kind::PortsClosed {
                    urls: vec![m.client_url.clone(), m.peer_url.clone()],
                },
            ));
            v
        }),
    });
    steps.push(Step {
        number: 5,
        title: "Restore the same snapshot on every member".into(),
        actions: each(&|m| {
            let p = member_paths(m, &backup.id, stamp);
            let data = quote(&m.data_dir.display().to_string());
            let new = quote(&p.new_dir.display().to_string());
            let old = quote(&p.old_dir.display().to_string());
            let mut v = vec![
                act(
                    m,
                    format!("copy the verified snapshot to {}", p.snapshot.display()),
                    Kind::Copy {
                        to: p.snapshot.clone(),
                    },
                ),
                on(
                    m,
                    format!("restore into {}", p.new_dir.display()),
                    Some(format!(
                        // Done already when the swap below has run: the old dir is aside
                        // and the restored one in place.
                        "if [ -e {old} ] && [ -e {data} ] && [ ! -e {new} ]; then \
                         echo {done}; exit 0; fi; \
                         if [ -e {new} ]; then mv -- {new} {new}.partial-$(date +%s)-$$ || exit 1; fi; {}",
                        restore_command(m, probe_of(m), &p, &initial_cluster, &s.token, bump),
                        done = quote(&format!(
                            "{} is restored already ({} is the old one)",
                            m.data_dir.display(),
                            p.old_dir.display()
                        )),
                    )),
                ),
            ];
            if let Some(pr) = probe_of(m).filter(|p| p.can_check_v2store) {
                v.push(on(
                    m,
                    "check the restored v2store holds no custom content (etcd 3.6 refuses one that does)"
                        .into(),
                    Some(v2store_check(&pr.tool, &new)),
                ));
            }
            v.push(on(
                    m,
                    format!(
                        "move {} aside to {} (kept, never deleted) and put the restored one in place",
                        m.data_dir.display(),
                        p.old_dir.display()
                    ),
                    Some(swap_command(&data, &new, &old)),
                ));
            v
        }),
    });
    let mut step6 = each(&|m| vec![on(m, "start etcd".into(), m.etcd.start_script())]);
    step6.push(here(
        format!(
            "check the cluster: healthy, members exactly {}, one leader, one cluster id, \
             revision ≥ {}, equal hashkv on every member, {} live keys",
            s.members
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            backup.revision + i64::try_from(bump).unwrap_or(0),
            backup.live_keys
        ),
        Kind::ClusterCheck,
    ));
    steps.push(Step {
        number: 6,
        title: "Start every member and verify the etcd cluster".into(),
        actions: step6,
    });
    steps.push(Step {
        number: 7,
        title: "Start the Kubernetes components".into(),
        actions: each(&|m| match m.kube.start_script() {
            None => vec![on(m, "no Kubernetes components configured".into(), None)],
            Some(start) => vec![on(m, "start the Kubernetes components".into(), Some(start))],
        }),
    });
    let mut step8 = Vec::new();
    if let Some(h) = &s.kube_health {
        step8.push(here(
            format!("the control plane answers: {h}"),
            Kind::KubeHealth { check: h.clone() },
        ));
    }
    step8.push(here(
        "compare the live Kubernetes objects with the snapshot's: added, deleted, changed per resource".into(),
        Kind::Inventory,
    ));
    steps.push(Step {
        number: 8,
        title: "Verify the control plane and the pod data".into(),
        actions: step8,
    });
    Plan {
        backup: backup.clone(),
        initial_cluster,
        initial_cluster_token: s.token.clone(),
        bump_revision: bump,
        stamp: stamp.to_owned(),
        notes,
        steps,
    }
}

/// The numbered runbook `restore plan` prints.
pub fn render(p: &Plan) -> String {
    let mut out = format!(
        "Restore of backup {} (revision {}, {} keys, etcd {}) onto {} members\n\
         --initial-cluster {} --initial-cluster-token {}{}\n",
        p.backup.id,
        p.backup.revision,
        p.backup.total_key,
        p.backup.etcd_version,
        p.initial_cluster.matches('=').count(),
        p.initial_cluster,
        p.initial_cluster_token,
        if p.bump_revision > 0 {
            format!(" --bump-revision {} --mark-compacted", p.bump_revision)
        } else {
            String::new()
        }
    );
    for n in &p.notes {
        out.push_str(&format!("NOTE: {n}\n"));
    }
    for s in &p.steps {
        out.push_str(&format!("\n{}. {}\n", s.number, s.title));
        for a in &s.actions {
            let who = match &a.member {
                Some(m) => format!("{m} @ {}", a.host),
                None => "lifeboat".into(),
            };
            out.push_str(&format!("   [{who}] {}\n", a.what));
            if let Some(c) = &a.command {
                out.push_str(&format!("       $ {c}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
