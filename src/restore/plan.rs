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
            vec![
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
                on(
                    m,
                    format!(
                        "move {} aside to {} (kept, never deleted) and put the restored one in place",
                        m.data_dir.display(),
                        p.old_dir.display()
                    ),
                    Some(swap_command(&data, &new, &old)),
                ),
            ]
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
mod tests {
    use super::*;

    fn config(text: &str) -> RestoreSettings {
        let c = crate::config::Config::parse(text).unwrap();
        RestoreSettings::from_config(&c.restore).unwrap()
    }

    fn three_with_commands() -> RestoreSettings {
        let mut text = String::from("[restore]\ninitial-cluster-token = \"prod\"\n");
        for i in 1..=3 {
            text.push_str(&format!(
                "[[restore.members]]\nname = \"m{i}\"\npeer-url = \"http://127.0.0.1:238{i}\"\n\
                 client-url = \"http://127.0.0.1:237{i}\"\ndata-dir = \"/srv/m{i}/data\"\n\
                 etcd-start = \"start-etcd m{i}\"\netcd-stop = \"stop-etcd m{i}\"\n\
                 kube-start = \"start-kube\"\nkube-stop = \"stop-kube\"\n"
            ));
        }
        config(&text)
    }

    fn backup() -> BackupRef {
        BackupRef {
            id: "20261122T054700.123Z-8e4e0ddc".into(),
            revision: 4242,
            total_key: 100,
            live_keys: 90,
            members: Vec::new(),
            db_size: 1 << 20,
            etcd_version: "3.5.30".into(),
        }
    }

    fn probes(can_bump: bool) -> Vec<Probe> {
        (1..=3)
            .map(|i| Probe {
                member: format!("m{i}"),
                tool: "/usr/bin/etcdutl".into(),
                version: "3.5.30".into(),
                can_bump,
            })
            .collect()
    }

    fn commands(p: &Plan, step: u8) -> Vec<String> {
        p.steps[usize::from(step) - 1]
            .actions
            .iter()
            .filter_map(|a| a.command.clone())
            .collect()
    }

    #[test]
    fn every_member_restores_the_same_file_with_the_same_cluster_and_token() {
        let s = three_with_commands();
        let p = make(&s, &backup(), &probes(true), "20261122T060000Z");
        assert_eq!(p.steps.len(), 8);
        assert_eq!(
            p.initial_cluster,
            "m1=http://127.0.0.1:2381,m2=http://127.0.0.1:2382,m3=http://127.0.0.1:2383"
        );
        assert_eq!(p.bump_revision, DEFAULT_BUMP);
        let restores: Vec<String> = commands(&p, 5)
            .into_iter()
            .filter(|c| c.contains("snapshot restore"))
            .collect();
        assert_eq!(restores.len(), 3);
        assert!(restores[0].starts_with(
            "if [ -e /srv/m1/data.lifeboat-20261122T060000Z ] && [ -e /srv/m1/data ] && \
             [ ! -e /srv/m1/data.lifeboat-new-20261122T060000Z ]; then echo "
        ));
        assert!(restores[0].contains(
            "; if [ -e /srv/m1/data.lifeboat-new-20261122T060000Z ]; then mv -- \
             /srv/m1/data.lifeboat-new-20261122T060000Z \
             /srv/m1/data.lifeboat-new-20261122T060000Z.partial-$(date +%s)-$$ || exit 1; fi; "
        ));
        assert_eq!(
            restores[0].rsplit("; ").next().unwrap(),
            "/usr/bin/etcdutl snapshot restore \
             /srv/m1/lifeboat-restore-20261122T054700.123Z-8e4e0ddc-m1.db --name m1 --data-dir \
             /srv/m1/data.lifeboat-new-20261122T060000Z --initial-cluster \
             m1=http://127.0.0.1:2381,m2=http://127.0.0.1:2382,m3=http://127.0.0.1:2383 \
             --initial-cluster-token prod --initial-advertise-peer-urls http://127.0.0.1:2381 \
             --bump-revision 1000000000 --mark-compacted"
        );
        for r in &restores {
            assert!(r.contains("--initial-cluster m1=http://127.0.0.1:2381,m2="));
            assert!(r.contains("--initial-cluster-token prod"));
            assert!(r.contains("/lifeboat-restore-20261122T054700.123Z-8e4e0ddc-m"));
        }
        // The old data dir is moved aside, never removed (the swap is run for real below).
        assert!(commands(&p, 5).iter().any(|c| {
            c.contains("mv -- /srv/m2/data /srv/m2/data.lifeboat-20261122T060000Z || exit 1")
        }));
        assert!(
            p.steps
                .iter()
                .flat_map(|s| &s.actions)
                .all(|a| a.command.as_deref().is_none_or(|c| !c.contains("rm ")))
        );
        assert_eq!(commands(&p, 3), ["stop-kube", "stop-kube", "stop-kube"]);
        assert_eq!(
            commands(&p, 4),
            ["stop-etcd m1", "stop-etcd m2", "stop-etcd m3"]
        );
        assert_eq!(
            commands(&p, 6),
            ["start-etcd m1", "start-etcd m2", "start-etcd m3"]
        );
        assert_eq!(commands(&p, 7), ["start-kube", "start-kube", "start-kube"]);
        let text = render(&p);
        assert!(
            text.contains("\n5. Restore the same snapshot on every member\n"),
            "{text}"
        );
        assert!(
            text.contains("[m3 @ local] stop etcd\n       $ stop-etcd m3\n"),
            "{text}"
        );
    }

    #[test]
    fn a_tool_without_bump_support_means_no_bump_and_says_what_that_means() {
        let s = three_with_commands();
        let mut pr = probes(true);
        pr[1] = Probe {
            member: "m2".into(),
            tool: "/usr/bin/etcdctl".into(),
            version: "3.4.23".into(),
            can_bump: false,
        };
        let p = make(&s, &backup(), &pr, "T");
        assert_eq!(p.bump_revision, 0);
        assert!(
            p.notes[0].contains("m2 (/usr/bin/etcdctl 3.4.23)"),
            "{:?}",
            p.notes
        );
        assert!(p.notes[0].contains("stale"), "{:?}", p.notes);
        let restores = commands(&p, 5);
        assert!(restores.iter().all(|c| !c.contains("--bump-revision")));
        assert!(
            restores
                .iter()
                .any(|c| c.contains("ETCDCTL_API=3 /usr/bin/etcdctl snapshot restore"))
        );
    }

    #[test]
    fn systemd_and_static_pods_are_stopped_and_checked() {
        let s = config(
            "[[restore.members]]\nname = \"cp1\"\npeer-url = \"https://10.0.0.1:2380\"\n\
             client-url = \"https://10.0.0.1:2379\"\ndata-dir = \"/var/lib/etcd\"\n\
             host = \"ssh://root@10.0.0.1\"\n\
             etcd-static-pod-manifest = \"/etc/kubernetes/manifests/etcd.yaml\"\n\
             kube-static-pod-manifests = [\"/etc/kubernetes/manifests/kube-apiserver.yaml\"]\n\
             [[restore.members]]\nname = \"cp2\"\npeer-url = \"https://10.0.0.2:2380\"\n\
             client-url = \"https://10.0.0.2:2379\"\ndata-dir = \"/var/lib/etcd\"\n\
             etcd-systemd-unit = \"etcd\"\nkube-systemd-units = [\"kubelet\", \"kube-proxy\"]\n",
        );
        let p = make(&s, &backup(), &[], "T");
        assert_eq!(
            commands(&p, 3),
            [
                "if [ -e /etc/kubernetes/manifests/kube-apiserver.yaml ]; then mkdir -p \
                 /etc/kubernetes/manifests.lifeboat-stopped && mv \
                 /etc/kubernetes/manifests/kube-apiserver.yaml \
                 /etc/kubernetes/manifests.lifeboat-stopped/kube-apiserver.yaml; fi",
                "test -z \"$(crictl ps -q --name '^kube-apiserver$')\"",
                "systemctl stop kubelet kube-proxy",
                "! systemctl is-active --quiet kubelet && ! systemctl is-active --quiet kube-proxy",
            ]
        );
        assert_eq!(
            commands(&p, 6),
            [
                "if [ -e /etc/kubernetes/manifests.lifeboat-stopped/etcd.yaml ]; then mv \
                 /etc/kubernetes/manifests.lifeboat-stopped/etcd.yaml \
                 /etc/kubernetes/manifests/etcd.yaml; fi",
                "systemctl start etcd",
            ]
        );
        assert_eq!(p.steps[2].actions[0].host, "ssh://root@10.0.0.1");
        // Without probes the tool is assumed to be etcdutl on the PATH.
        assert!(commands(&p, 5)[0].contains("etcdutl snapshot restore"));
    }

    #[test]
    fn the_free_space_check_passes_and_fails_for_real() {
        let run = |bytes: u64| {
            std::process::Command::new("sh")
                .args(["-c", &free_space_check(Path::new("/tmp"), bytes)])
                .output()
                .unwrap()
        };
        assert!(run(1).status.success());
        let out = run(u64::MAX / 4);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("KiB free in /tmp"));
    }

    #[test]
    fn bad_member_descriptions_are_clear_errors() {
        let base = "[[restore.members]]\nname = \"m1\"\npeer-url = \"http://a:2380\"\n\
                    client-url = \"http://a:2379\"\ndata-dir = \"/var/lib/etcd\"\n";
        let err = |extra: &str| {
            let c = crate::config::Config::parse(&format!("{base}{extra}")).unwrap();
            RestoreSettings::from_config(&c.restore).unwrap_err()
        };
        assert!(err("").contains("say how etcd is controlled"));
        let c = crate::config::Config::parse(
            &base
                .replace("http://a:2380", "a:2380")
                .replace("data-dir", "etcd-systemd-unit = \"etcd\"\ndata-dir"),
        )
        .unwrap();
        assert!(
            RestoreSettings::from_config(&c.restore)
                .unwrap_err()
                .contains("peer-url \"a:2380\" must be an http:// or https:// URL")
        );
        assert!(err("etcd-start = \"x\"\n").contains("go together"));
        assert!(
            err("etcd-systemd-unit = \"etcd\"\netcd-start = \"x\"\netcd-stop = \"y\"\n")
                .contains("choose one way")
        );
        assert!(err("etcd-systemd-unit = \"etcd\"\nhost = \"cp1\"\n").contains("ssh://"));
        let c = crate::config::Config::parse("[restore]\n").unwrap();
        assert!(
            RestoreSettings::from_config(&c.restore)
                .unwrap_err()
                .contains("no [[restore.members]]")
        );
        let twice =
            format!("{base}etcd-systemd-unit = \"etcd\"\n{base}etcd-systemd-unit = \"etcd\"\n");
        let c = crate::config::Config::parse(&twice).unwrap();
        assert!(
            RestoreSettings::from_config(&c.restore)
                .unwrap_err()
                .contains("twice")
        );
        let other = base.replace("name = \"m1\"", "name = \"m2\"");
        let c = crate::config::Config::parse(&format!(
            "{base}etcd-systemd-unit = \"etcd\"\n{other}etcd-systemd-unit = \"etcd\"\n"
        ))
        .unwrap();
        assert!(
            RestoreSettings::from_config(&c.restore)
                .unwrap_err()
                .contains("also another member's")
        );
    }

    fn sh(script: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .unwrap()
    }

    /// Step 5's restore and swap, run for real and then again (a resume after the swap,
    /// or --from-step 5): the second run moves nothing, nothing is nested, nothing lost.
    #[test]
    fn step_5_is_safe_to_repeat_and_never_nests_directories() {
        let dir = tempfile::tempdir().unwrap();
        // A name that needs quoting, written with a trailing '/'.
        let data = dir.path().join("my 'etcd' data");
        let text = format!(
            "[[restore.members]]\nname = \"m1\"\npeer-url = \"http://a:2380\"\n\
             client-url = \"http://a:2379\"\ndata-dir = {:?}\netcd-systemd-unit = \"etcd\"\n\
             etcdutl = \"/bin/true\"\n",
            format!("{}/", data.display())
        );
        let s = config(&text);
        let p = make(&s, &backup(), &[], "T1");
        let paths = member_paths(&s.members[0], &backup().id, "T1");
        // Beside the data dir, not inside it, although it was written with a '/'.
        assert_eq!(paths.new_dir.parent(), Some(dir.path()));
        assert_eq!(paths.old_dir.parent(), Some(dir.path()));
        let step5 = commands(&p, 5);
        let (restore, swap) = (&step5[0], &step5[1]);
        std::fs::create_dir_all(data.join("member")).unwrap();
        std::fs::write(data.join("member/old"), b"old data").unwrap();
        // The restore tool (here /bin/true) writes the new dir: stand in for it.
        let restore_for_real = || {
            let out = sh(restore);
            assert!(out.status.success(), "{out:?}");
            if !String::from_utf8_lossy(&out.stdout).contains("restored already") {
                std::fs::create_dir_all(paths.new_dir.join("member")).unwrap();
                std::fs::write(paths.new_dir.join("member/new"), b"restored").unwrap();
            }
        };
        restore_for_real();
        let out = sh(swap);
        assert!(out.status.success(), "{out:?}");
        let check = || {
            assert_eq!(std::fs::read(data.join("member/new")).unwrap(), b"restored");
            assert_eq!(
                std::fs::read(paths.old_dir.join("member/old")).unwrap(),
                b"old data"
            );
            assert!(!paths.new_dir.exists());
            let mut inside: Vec<_> = std::fs::read_dir(&data)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            inside.extend(
                std::fs::read_dir(&paths.old_dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name()),
            );
            assert_eq!(inside, ["member", "member"], "a directory was nested");
        };
        check();
        // Again, as a resume would: the restore and the swap find it done.
        restore_for_real();
        let out = sh(swap);
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("in place already"));
        check();
        // A member without a data dir before: the swap records itself, and is then done.
        let fresh = dir.path().join("fresh");
        let s = config(&text.replace(
            &format!("{}/", data.display()),
            &fresh.display().to_string(),
        ));
        let p = make(&s, &backup(), &[], "T2");
        let paths = member_paths(&s.members[0], &backup().id, "T2");
        let swap = &commands(&p, 5)[1];
        std::fs::create_dir_all(&paths.new_dir).unwrap();
        assert!(sh(swap).status.success());
        assert!(fresh.is_dir() && paths.old_dir.is_dir() && !paths.new_dir.exists());
        assert!(sh(swap).status.success());
        assert!(fresh.is_dir() && std::fs::read_dir(&fresh).unwrap().next().is_none());
        // Both the old dir and a new one about to replace a data dir: refused, not nested.
        std::fs::create_dir_all(&paths.new_dir).unwrap();
        let out = sh(swap);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("by hand"),
            "{out:?}"
        );
        assert!(
            paths.new_dir.is_dir() && std::fs::read_dir(&paths.old_dir).unwrap().next().is_none()
        );
    }

    /// Values that would reach a path or a shell are refused at `restore plan`, naming
    /// the member and the field; a hostile backup id never leaves its directory.
    #[test]
    fn hostile_names_are_refused_or_made_plain() {
        let member = |name: &str, extra: &str| {
            format!(
                "[[restore.members]]\nname = {name:?}\npeer-url = \"http://a:2380\"\n\
                 client-url = \"http://a:2379\"\netcd-systemd-unit = \"etcd\"\n{extra}"
            )
        };
        let err = |text: String| {
            let c = crate::config::Config::parse(&text).unwrap();
            RestoreSettings::from_config(&c.restore).unwrap_err()
        };
        let dd = "data-dir = \"/var/lib/etcd\"\n";
        for (name, extra, says) in [
            ("x;reboot;", dd.to_owned(), "name \"x;reboot;\" is refused"),
            ("../m1", dd.to_owned(), "name \"../m1\" is refused"),
            ("m1", "data-dir = \"/var/lib/../etcd\"\n".into(), "data-dir"),
            ("m1", "data-dir = \"var/lib/etcd\"\n".into(), "data-dir"),
            (
                "m1",
                format!("{dd}host = \"ssh://-oProxyCommand=sh@cp1\"\n"),
                "ssh user",
            ),
            ("m1", format!("{dd}host = \"ssh://root@-x\"\n"), "ssh host"),
            (
                "m1",
                format!("{dd}host = \"ssh://root@cp1;id\"\n"),
                "ssh host",
            ),
            (
                "m1",
                format!("{dd}etcdutl = \"/bin/etcdutl\\n\"\n"),
                "etcdutl",
            ),
        ] {
            let e = err(member(name, &extra));
            assert!(
                e.contains("[[restore.members]]")
                    && e.contains(&format!("{name:?}"))
                    && e.contains(says),
                "{name} {extra}: {e}"
            );
        }
        let s = three_with_commands();
        for hostile in ["x;reboot;", "$(touch pwned)", "../../../etc/cron.d/x"] {
            let mut b = backup();
            b.id = hostile.into();
            let p = make(&s, &b, &probes(true), "T");
            let paths = member_paths(&s.members[0], hostile, "T");
            assert_eq!(paths.snapshot.parent(), Some(Path::new("/srv/m1")));
            let name = paths
                .snapshot
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(
                !name.contains([';', '$', '(', '/']) && !name.contains(".."),
                "{name}"
            );
            for c in commands(&p, 5) {
                assert!(!c.contains(hostile), "{c}");
            }
        }
    }
}
