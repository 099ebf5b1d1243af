//! `restore run`: carries out a [`Plan`] step by step, recording every action in a
//! journal so that a run stopped by a fault can be resumed once the fault is fixed.
//!
//! Within a step, the members' actions run in parallel (each member's in order), then
//! lifeboat's own (checks of the whole cluster). Each action is journaled as it
//! completes. The first failure stops the run, naming the step, the member and the
//! reason; the journal keeps what was done, and `--resume` skips it. SIGTERM or SIGINT
//! (the `stop` token) stops the running actions (their commands are killed), writes the
//! journal and ends the run, telling the operator to resume. Every action can be
//! repeated safely: stops and starts are idempotent, the restore moves a half-written
//! directory aside before writing a new one, and the swap of step 5 never moves a
//! directory into another one (run again, it finds the swap done and changes nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use super::journal::Journal;
use super::journal::{key, lock};
use super::names;
use super::plan::{Action, Kind, MemberSpec, Plan, RestoreSettings};
use super::ports::wait_closed;
use super::transport;
use crate::encryption::Identities;
use crate::etcd::{self, EtcdSettings};
use crate::repository::{Manifest, Repository};

/// Where the backup comes from.
pub enum Source {
    File(PathBuf),
    Stored {
        repo: Repository,
        manifest: Box<Manifest>,
        identities: Option<Arc<Identities>>,
    },
}

/// What a run needs besides the plan.
pub struct Runner {
    pub settings: RestoreSettings,
    /// How to reach the restored members (TLS, credentials); endpoints are replaced by
    /// the members' client URLs.
    pub etcd: EtcdSettings,
    pub source: Source,
    /// Cancelled on SIGTERM/SIGINT: the run stops, journaled.
    pub stop: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "step {step} failed on {member}: {what}: {reason}\n\
         Fix the cause, then run again with --resume (the journal is {journal})."
    )]
    Step {
        step: u8,
        member: String,
        what: String,
        reason: String,
        journal: PathBuf,
    },
    #[error(
        "restore interrupted ({signal}) in step {step}; what had finished is in the journal \
         {journal}. Run the same command again with --resume to continue."
    )]
    Interrupted {
        step: u8,
        signal: String,
        journal: PathBuf,
    },
    #[error("restore journal {path}: {reason}")]
    Journal { path: PathBuf, reason: String },
}

/// What the run found, for the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub cluster_id: Option<String>,
    pub revision: Option<i64>,
    pub hashkv: Option<u32>,
    pub keys: Option<i64>,
    /// Step 8: per resource and namespace, the Kubernetes objects added, deleted and
    /// changed live since the snapshot (only those with a difference).
    pub object_differences: Vec<crate::objects::diff::GroupCount>,
    pub steps_run: Vec<u8>,
    /// How long each step took, in seconds.
    pub step_seconds: Vec<(u8, f64)>,
}

impl Runner {
    /// The verified snapshot on this host.
    fn local_snapshot(&self, journal: &Journal) -> PathBuf {
        match &self.source {
            Source::File(p) => p.clone(),
            Source::Stored { .. } => self.settings.state_dir.join(format!(
                "{}-{}.db",
                names::file_word(&journal.backup),
                names::file_word(&journal.stamp)
            )),
        }
    }

    /// Runs `plan` from `from_step`, skipping what `journal` says is done.
    pub async fn run(
        &self,
        plan: &Plan,
        journal_path: &Path,
        mut journal: Journal,
        from_step: u8,
    ) -> Result<Report, RestoreError> {
        let mut report = Report::default();
        journal.failed = None;
        journal.save(journal_path)?;
        let journal = Mutex::new(journal);
        let snapshot_of = |j: &Mutex<Journal>| self.local_snapshot(&lock(j));
        for step in plan.steps.iter().filter(|s| s.number >= from_step) {
            let interrupted = |journal: &Mutex<Journal>| {
                let mut j = lock(journal);
                j.failed = Some(format!(
                    "step {}: interrupted by a signal; what had finished is recorded",
                    step.number
                ));
                let saved = j.save(journal_path);
                saved.and(Err(RestoreError::Interrupted {
                    step: step.number,
                    signal: "SIGTERM or SIGINT".into(),
                    journal: journal_path.to_path_buf(),
                }))
            };
            if self.stop.is_cancelled() {
                return interrupted(&journal);
            }
            // Steps 5 and 8 need the verified snapshot here, also when step 2 ran in an
            // earlier run or by hand (--from-step).
            if (step.number == 5 || step.number == 8) && !snapshot_of(&journal).exists() {
                let fetched = {
                    let j = lock(&journal).clone();
                    tokio::select! {
                        r = self.fetch(&j) => r,
                        () = self.stop.cancelled() => return interrupted(&journal),
                    }
                };
                fetched.map_err(|reason| RestoreError::Step {
                    step: step.number,
                    member: "lifeboat".into(),
                    what: "fetch and verify the backup".into(),
                    reason,
                    journal: journal_path.to_path_buf(),
                })?;
            }
            tracing::info!(step = step.number, title = %step.title, "restore step");
            eprintln!("step {}: {}", step.number, step.title);
            let step_started = Instant::now();
            let mut by_member: BTreeMap<&str, Vec<(usize, &Action)>> = BTreeMap::new();
            let mut ours = Vec::new();
            for (i, a) in step.actions.iter().enumerate() {
                match &a.member {
                    Some(m) => by_member.entry(m.as_str()).or_default().push((i, a)),
                    None => ours.push((i, a)),
                }
            }
            let journal_ref = &journal;
            let members = futures::future::join_all(by_member.iter().map(|(name, actions)| {
                let member = self.settings.members.iter().find(|m| m.name == *name);
                async move {
                    for (i, a) in actions {
                        let k = key(step.number, name, *i);
                        let view = {
                            let j = lock(journal_ref);
                            if j.done.contains(&k) {
                                continue;
                            }
                            j.clone()
                        };
                        let Some(member) = member else { break };
                        if let Err(reason) = self.member_action(member, a, &view).await {
                            return Some((name.to_string(), a.what.clone(), reason));
                        }
                        // Journaled as it completes: a run stopped now does not repeat it.
                        let mut j = lock(journal_ref);
                        j.done.insert(k);
                        if let Err(e) = j.save(journal_path) {
                            return Some((name.to_string(), a.what.clone(), e.to_string()));
                        }
                    }
                    None
                }
            }));
            let results = tokio::select! {
                r = members => r,
                // The running commands are killed as their futures are dropped.
                () = self.stop.cancelled() => return interrupted(&journal),
            };
            let mut failure = results.into_iter().flatten().next();
            if failure.is_none() {
                for (i, a) in ours {
                    let k = key(step.number, "lifeboat", i);
                    let view = lock(&journal).clone();
                    if view.done.contains(&k) {
                        continue;
                    }
                    let done = tokio::select! {
                        r = self.own_action(plan, a, &view, &mut report) => r,
                        () = self.stop.cancelled() => return interrupted(&journal),
                    };
                    match done {
                        Ok(()) => {
                            let mut j = lock(&journal);
                            j.done.insert(k);
                            j.save(journal_path)?;
                        }
                        Err(reason) => {
                            failure = Some(("lifeboat".into(), a.what.clone(), reason));
                            break;
                        }
                    }
                }
            }
            if let Some((member, what, reason)) = failure {
                let mut j = lock(&journal);
                j.failed = Some(format!("step {}, {member}: {what}: {reason}", step.number));
                j.save(journal_path)?;
                return Err(RestoreError::Step {
                    step: step.number,
                    member,
                    what,
                    reason,
                    journal: journal_path.to_path_buf(),
                });
            }
            lock(&journal).save(journal_path)?;
            report.steps_run.push(step.number);
            let took = step_started.elapsed().as_secs_f64();
            report.step_seconds.push((step.number, took));
            eprintln!("step {} done in {took:.1} s", step.number);
        }
        let mut j = lock(&journal);
        j.finished = true;
        j.save(journal_path)?;
        Ok(report)
    }

    async fn member_action(
        &self,
        m: &MemberSpec,
        a: &Action,
        journal: &Journal,
    ) -> Result<(), String> {
        let limit = self.settings.step_timeout;
        match &a.kind {
            Kind::Note => Ok(()),
            Kind::Run => {
                let command = a.command.as_deref().unwrap_or("true");
                let ran = transport::run(&m.host.shell(command), limit).await?;
                if ran.success {
                    Ok(())
                } else {
                    Err(format!(
                        "`{command}` exited with {}: {}",
                        ran.code.map_or("a signal".into(), |c| c.to_string()),
                        ran.tail()
                    ))
                }
            }
            Kind::Probe => super::probe(m, limit, &[]).await.map(|_| ()),
            Kind::Copy { to } => {
                let from = self.local_snapshot(journal);
                // Absolute: a relative name with a ':' would be read as host:path.
                let from = std::path::absolute(&from).unwrap_or(from);
                let copy = m.host.copy(&from, to);
                let ran =
                    transport::run_with_input(&copy.argv, copy.stdin.as_deref(), limit).await?;
                if ran.success {
                    Ok(())
                } else {
                    Err(format!("copying {} failed: {}", from.display(), ran.tail()))
                }
            }
            Kind::PortsClosed { urls } => wait_closed(urls, limit).await,
            Kind::Fetch | Kind::ClusterCheck | Kind::KubeHealth { .. } | Kind::Inventory => {
                Err("not a member action".into())
            }
        }
    }

    async fn own_action(
        &self,
        plan: &Plan,
        a: &Action,
        journal: &Journal,
        report: &mut Report,
    ) -> Result<(), String> {
        match &a.kind {
            Kind::Fetch => self.fetch(journal).await,
            Kind::ClusterCheck => self.check_cluster(plan, report).await,
            Kind::KubeHealth { check } => self.kube_health(check).await,
            Kind::Inventory => self.inventory(journal, report).await,
            Kind::Note => Ok(()),
            _ => Err("not an action lifeboat takes itself".into()),
        }
    }

    /// Step 2: the backup, fetched once and verified; a snapshot file is verified where
    /// it is.
    async fn fetch(&self, journal: &Journal) -> Result<(), String> {
        let out = self.local_snapshot(journal);
        match &self.source {
            Source::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    crate::snapshot::scan_status(
                        &path,
                        crate::snapshot::ScanOptions {
                            verify_trailer: true,
                        },
                    )
                })
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
            Source::Stored {
                repo,
                manifest,
                identities,
            } => {
                if out.exists() {
                    // A resumed run: fetched (and verified) before, but not recorded.
                    std::fs::rename(&out, out.with_extension("db.old"))
                        .map_err(|e| e.to_string())?;
                }
                if let Some(dir) = out.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                }
                crate::fetch::fetch(repo, manifest, &out, identities.as_ref())
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Step 6: wait for the restored cluster, then check it.
    async fn check_cluster(&self, plan: &Plan, report: &mut Report) -> Result<(), String> {
        let deadline = Instant::now() + self.settings.step_timeout;
        let min_revision = plan.backup.revision + i64::try_from(plan.bump_revision).unwrap_or(0);
        loop {
            match self.cluster_once(plan, min_revision).await {
                Ok(found) => {
                    *report = Report {
                        steps_run: std::mem::take(&mut report.steps_run),
                        step_seconds: std::mem::take(&mut report.step_seconds),
                        ..found
                    };
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "cluster not ready yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn cluster_once(&self, plan: &Plan, min_revision: i64) -> Result<Report, String> {
        let planned: BTreeSet<&str> = self
            .settings
            .members
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        let mut statuses = Vec::new();
        let mut clients = Vec::new();
        for m in &self.settings.members {
            let mut client = etcd::connect_one(&self.etcd, &m.client_url)
                .await
                .map_err(|e| format!("{}: {e}", m.name))?;
            let st = etcd::member_status(&mut client, &m.client_url)
                .await
                .map_err(|e| format!("{}: {e}", m.name))?;
            let list = client
                .member_list()
                .await
                .map_err(|e| format!("{}: member list: {}", m.name, etcd::describe(&e)))?;
            let names: BTreeSet<&str> = list.members().iter().map(|x| x.name()).collect();
            if names != planned {
                return Err(format!(
                    "{} lists members {names:?}, not the planned {planned:?}",
                    m.name
                ));
            }
            statuses.push((m.name.clone(), st));
            clients.push(client);
        }
        let leaders: BTreeSet<u64> = statuses.iter().map(|(_, s)| s.leader).collect();
        if leaders.len() != 1 || leaders.contains(&0) {
            return Err(format!(
                "the members do not agree on one leader: {leaders:x?}"
            ));
        }
        let clusters: BTreeSet<u64> = statuses.iter().map(|(_, s)| s.cluster_id).collect();
        if clusters.len() != 1 {
            return Err(format!(
                "the members report different cluster ids: {clusters:x?}"
            ));
        }
        for (name, s) in &statuses {
            if s.header_revision < min_revision {
                return Err(format!(
                    "{name} is at revision {}, below the backup's {min_revision}",
                    s.header_revision
                ));
            }
        }
        let at = statuses
            .iter()
            .map(|(_, s)| s.header_revision)
            .min()
            .unwrap_or(0);
        // Each member hashes its whole key bucket: ask them all at once.
        let answers = futures::future::join_all(clients.iter_mut().zip(&statuses).map(
            |(client, (name, _))| async move {
                let h = client
                    .hash_kv(at)
                    .await
                    .map_err(|e| format!("{name}: hashkv: {}", etcd::describe(&e)))?;
                Ok::<_, String>((name.clone(), h.hash()))
            },
        ))
        .await;
        let mut hashes = BTreeMap::new();
        for a in answers {
            let (name, h) = a?;
            hashes.insert(name, h);
        }
        let distinct: BTreeSet<u32> = hashes.values().copied().collect();
        if distinct.len() != 1 {
            return Err(format!(
                "hashkv at revision {at} differs between members: {hashes:?}"
            ));
        }
        let count = etcd::count_keys(&mut clients[0]).await?;
        if u64::try_from(count).ok() != Some(plan.backup.live_keys) {
            return Err(format!(
                "the cluster holds {count} keys, the backup {}",
                plan.backup.live_keys
            ));
        }
        Ok(Report {
            cluster_id: Some(format!("{:x}", statuses[0].1.cluster_id)),
            revision: Some(at),
            hashkv: distinct.into_iter().next(),
            keys: Some(count),
            ..Report::default()
        })
    }

    /// Step 8: the operator's health check, retried until the step timeout.
    async fn kube_health(&self, check: &str) -> Result<(), String> {
        let command = if check.starts_with("http://") || check.starts_with("https://") {
            format!("curl -fsS --max-time 10 {}", transport::quote(check))
        } else {
            check.to_owned()
        };
        let argv = super::transport::Host::Local.shell(&command);
        let deadline = Instant::now() + self.settings.step_timeout;
        loop {
            let ran = transport::run(&argv, Duration::from_secs(30)).await?;
            if ran.success {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("`{command}` still fails: {}", ran.tail()));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Step 8: the Kubernetes objects of the snapshot against the live cluster's, per
    /// resource and namespace: added, deleted and changed since the restore (controllers
    /// update some objects as soon as they start; a deleted or added object is news).
    async fn inventory(&self, journal: &Journal, report: &mut Report) -> Result<(), String> {
        use crate::objects::{Selection, diff, list, live};
        let path = self.local_snapshot(journal);
        let selection = Selection::new(None, None, None, None);
        let in_snapshot = {
            let selection = selection.clone();
            tokio::task::spawn_blocking(move || {
                list::list(
                    &path,
                    crate::snapshot::ScanOptions {
                        verify_trailer: false,
                    },
                    &selection,
                    None,
                    None,
                )
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
        };
        let endpoint = &self.settings.members[0].client_url;
        let mut client = etcd::connect_one(&self.etcd, endpoint)
            .await
            .map_err(|e| e.to_string())?;
        // Keys and revisions are all a diff's counts need.
        let (now, _) = live::list_keys(&mut client, endpoint, &selection).await?;
        let d = diff::diff(in_snapshot, now);
        report.object_differences = d.groups;
        for g in &report.object_differences {
            eprintln!(
                "  {} in {}: {} added, {} deleted, {} changed since the snapshot",
                g.resource,
                g.namespace.as_deref().unwrap_or("the cluster scope"),
                g.added,
                g.deleted,
                g.changed
            );
        }
        Ok(())
    }
}
