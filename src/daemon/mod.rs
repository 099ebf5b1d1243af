//! `lifeboat daemon`: scheduled backups (pruned after each success), a scheduled verify
//! of the newest backup, leader election among several daemons, and an HTTP endpoint for
//! probes and metrics.
//!
//! Shaped like mini-redis: [`run`] takes the settings and a shutdown token. When the
//! token is cancelled (SIGTERM/SIGINT), scheduling stops, a running backup is cancelled
//! through its own clean failure path (upload aborted, spool removed, no manifest), and
//! `run` returns once the jobs are done or the shutdown timeout passed.

mod changes;
pub mod election;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod on_demand;
pub mod schedule;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backup::{self, BackupError, BackupOptions, Silent};
use crate::encryption::Identities;
use crate::etcd::EtcdSettings;
use crate::repository::Repository;
use crate::repository::prune;
use crate::repository::retention::Policy;

use election::Leadership;
use metrics::{Metrics, Newest};
use schedule::Schedule;

/// Everything the daemon runs with, resolved from the config file.
#[derive(Clone)]
pub struct DaemonSettings {
    pub etcd: EtcdSettings,
    pub repo: Arc<Repository>,
    pub backup: BackupOptions,
    pub backup_schedule: Schedule,
    /// Retries of a failed backup before the next tick.
    pub retries: u32,
    pub verify_schedule: Option<Schedule>,
    /// The restore drill: when, and with which binaries.
    pub drill: Option<(Schedule, crate::restore::drill::DrillOptions)>,
    pub policy: Policy,
    pub leftover_grace: Duration,
    pub listen: String,
    pub max_age: Duration,
    /// The election lease TTL; `None`: no election, this daemon always leads.
    pub election: Option<Duration>,
    pub shutdown_timeout: Duration,
    pub identities: Option<Arc<Identities>>,
    /// Scratch space for verify downloads.
    pub scratch: PathBuf,
    /// The change log (`[changes] enabled`); `None`: not recorded.
    pub changes: Option<crate::changes::recorder::RecorderOptions>,
    /// `[changes] prove-backups`: the scratch member's binaries for the chain proof.
    pub chain_proof: Option<crate::changes::replay::ReplayOptions>,
    /// `[notify] webhooks`; `None`: nobody is told.
    pub webhooks: Option<Arc<webhooks::Webhooks>>,
    /// `[daemon] backup-token-file`: serve `POST /backup` to holders of this token.
    pub backup_token: Option<crate::secret::Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("[daemon] listen {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    #[error("scheduler: {0}")]
    Scheduler(String),
    #[error("jobs still running after the shutdown timeout of {0} s; exiting anyway")]
    ShutdownTimeout(u64),
}

/// Default `max-age`: two backup intervals plus ten minutes, so one missed or failed
/// tick is tolerated and two are not.
pub fn default_max_age(schedule: &Schedule) -> Duration {
    let interval = schedule
        .interval(Utc::now())
        .unwrap_or(Duration::from_secs(3600));
    interval * 2 + Duration::from_secs(600)
}

/// The first backoff of a retry; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Runs until `shutdown` is cancelled.
pub async fn run(settings: DaemonSettings, shutdown: CancellationToken) -> Result<(), DaemonError> {
    // A configuration mistake stops the daemon at once; an unreachable etcd or storage
    // does not (they may come back), it is logged and retried by each job.
    crate::etcd::check_settings(&settings.etcd)?;
    if let Err(e) = settings.repo.probe().await {
        tracing::warn!(error = %e, "storage not usable yet; backups will fail until it is");
    }
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: settings.listen.clone(),
            source,
        })?;
    let metrics = Arc::new(Metrics::default());
    let stop_http = CancellationToken::new();
    let (trigger, backup_requests) = match &settings.backup_token {
        Some(token) => {
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            let t = on_demand::Trigger {
                token: token.clone(),
                requests: tx,
            };
            (Some(t), Some(rx))
        }
        None => (None, None),
    };
    let http = tokio::spawn(http::serve(
        listener,
        Arc::new(http::Shared {
            metrics: metrics.clone(),
            max_age: settings.max_age,
            trigger,
        }),
        stop_http.clone(),
    ));

    let (leadership, election_task) = match settings.election {
        Some(ttl) => {
            let name = format!("/lifeboat/leader/{}", settings.repo.cluster());
            let (l, task) = election::spawn(settings.etcd.clone(), name, ttl, shutdown.clone());
            (l, Some(task))
        }
        None => (Leadership::always(&shutdown), None),
    };

    let backup_opts = settings.backup.clone();
    let jobs = Arc::new(Jobs {
        settings,
        backup_opts,
        metrics: metrics.clone(),
        leadership,
        shutdown: shutdown.clone(),
        tracker: TaskTracker::new(),
        backup_running: AtomicBool::new(false),
        verify_running: AtomicBool::new(false),
        drill_running: AtomicBool::new(false),
    });
    clean_spool_leftovers(
        &jobs.backup_opts.spool_dir,
        jobs.settings.leftover_grace,
        Leftover::Backup,
    );
    let watcher = tokio::spawn(jobs.clone().watch());
    if let Some(rx) = backup_requests {
        tokio::spawn(jobs.clone().serve_backup_requests(rx));
    }
    let recorder = jobs.settings.changes.is_some().then(|| {
        metrics.changes_enabled();
        tokio::spawn(jobs.clone().record_changes())
    });

    let scheduler = schedule_jobs(&jobs).await?;
    scheduler
        .start()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    notify::notify("READY=1");
    tracing::info!(
        listen = %jobs.settings.listen,
        backup = %jobs.settings.backup_schedule.text,
        timezone = %jobs.settings.backup_schedule.tz,
        election = jobs.settings.election.is_some(),
        "daemon running"
    );

    shutdown.cancelled().await;
    notify::notify("STOPPING=1");
    tracing::info!("shutting down: no new jobs; cancelling the running ones");
    let mut scheduler = scheduler;
    let _ = scheduler.shutdown().await;
    jobs.tracker.close();
    let limit = jobs.settings.shutdown_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let finished = tokio::time::timeout(limit, jobs.tracker.wait()).await;
    if let Some(w) = &jobs.settings.webhooks {
        // After the jobs: a backup cancelled just now tells its failure too.
        w.flush(deadline).await;
    }
    if let Some(task) = election_task {
        // Resigning lets another daemon take over at once instead of after the TTL.
        let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    }
    if let Some(r) = recorder {
        // It stops on the shutdown token (its terms are children of it) without writing.
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    watcher.abort();
    stop_http.cancel();
    let _ = http.await;
    match finished {
        Ok(()) => {
            tracing::info!("daemon stopped");
            Ok(())
        }
        Err(_) => Err(DaemonError::ShutdownTimeout(limit.as_secs())),
    }
}

async fn schedule_jobs(jobs: &Arc<Jobs>) -> Result<JobScheduler, DaemonError> {
    let err = |e: tokio_cron_scheduler::JobSchedulerError| DaemonError::Scheduler(e.to_string());
    let scheduler = JobScheduler::new().await.map_err(err)?;
    let s = &jobs.settings.backup_schedule;
    let j = jobs.clone();
    let job = Job::new_async_tz(s.cron.as_str(), s.tz, move |_, _| {
        let j = j.clone();
        Box::pin(async move { j.backup_tick() })
    })
    .map_err(err)?;
    scheduler.add(job).await.map_err(err)?;
    if let Some(s) = &jobs.settings.verify_schedule {
        let j = jobs.clone();
        let job = Job::new_async_tz(s.cron.as_str(), s.tz, move |_, _| {
            let j = j.clone();
            Box::pin(async move { j.verify_tick() })
        })
        .map_err(err)?;
        scheduler.add(job).await.map_err(err)?;
    }
    if let Some((s, _)) = &jobs.settings.drill {
        let j = jobs.clone();
        let job = Job::new_async_tz(s.cron.as_str(), s.tz, move |_, _| {
            let j = j.clone();
            Box::pin(async move { j.drill_tick() })
        })
        .map_err(err)?;
        scheduler.add(job).await.map_err(err)?;
    }
    Ok(scheduler)
}

/// The jobs and what they share.
struct Jobs {
    settings: DaemonSettings,
    backup_opts: BackupOptions,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    shutdown: CancellationToken,
    /// Every job runs as a task here, so shutdown can wait for them.
    tracker: TaskTracker,
    backup_running: AtomicBool,
    verify_running: AtomicBool,
    drill_running: AtomicBool,
}

/// Marks a job as running for as long as it lives: dropped at the end of the job, on
/// cancellation and on a panic alike, so a failed job never blocks later ticks.
struct Running<'a>(&'a AtomicBool);

impl<'a> Running<'a> {
    /// `None` when the job is already running.
    fn start(flag: &'a AtomicBool) -> Option<Running<'a>> {
        (!flag.swap(true, Ordering::SeqCst)).then_some(Running(flag))
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The kinds of scheduled job.
#[derive(Debug, Clone, Copy)]
enum Task {
    Backup,
    Verify,
    Drill,
}

impl Task {
    fn name(self) -> &'static str {
        match self {
            Task::Backup => "backup",
            Task::Verify => "verify",
            Task::Drill => "drill",
        }
    }
}

impl Jobs {
    fn running_flag(&self, task: Task) -> &AtomicBool {
        match task {
            Task::Backup => &self.backup_running,
            Task::Verify => &self.verify_running,
            Task::Drill => &self.drill_running,
        }
    }

    /// A tick: start the job unless this daemon does not lead or the previous run is
    /// still going (the scheduler fires every tick regardless). The job runs under the
    /// current term of leadership: losing it cancels the job.
    fn tick(self: &Arc<Self>, task: Task) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let Some(term) = self.leadership.term() else {
            return;
        };
        if self.running_flag(task).load(Ordering::SeqCst) {
            self.metrics.skipped(task.name());
            tracing::warn!(
                "{} tick skipped: the previous run is still going",
                task.name()
            );
            return;
        }
        let me = self.clone();
        self.tracker.spawn(async move {
            let Some(_running) = Running::start(me.running_flag(task)) else {
                return;
            };
            match task {
                Task::Backup => {
                    let _ = me.backup_with_retries(&term).await;
                }
                Task::Verify => {
                    tokio::select! {
                        () = me.verify_newest() => {}
                        () = term.cancelled() => me.cancelled(task),
                    }
                }
                Task::Drill => {
                    tokio::select! {
                        () = me.drill_newest() => {}
                        () = term.cancelled() => me.cancelled(task),
                    }
                }
            }
        });
    }

    fn cancelled(&self, task: Task) {
        if self.shutdown.is_cancelled() {
            tracing::info!(task = task.name(), "cancelled: shutting down");
        } else {
            tracing::warn!(task = task.name(), "cancelled: this daemon no longer leads");
        }
    }

    fn backup_tick(self: &Arc<Self>) {
        self.tick(Task::Backup);
    }
    fn verify_tick(self: &Arc<Self>) {
        self.tick(Task::Verify);
    }
    fn drill_tick(self: &Arc<Self>) {
        self.tick(Task::Drill);
    }

    /// Backs up, retrying as configured; the committed backup's id and revision, or the
    /// last error.
    async fn backup_with_retries(&self, term: &CancellationToken) -> Result<(String, i64), String> {
        let s = &self.settings;
        let mut opts = self.backup_opts.clone();
        opts.cancel = term.child_token();
        let mut attempt = 0u32;
        loop {
            self.metrics.backup_attempt(Utc::now());
            let result = backup::run(&s.etcd, &s.repo, &opts, &Silent).await;
            let e = match result {
                Ok(report) => {
                    self.metrics.backup_succeeded(&report);
                    if let Some(w) = &s.webhooks {
                        w.backup_succeeded(&report.manifest.id);
                    }
                    let m = &report.manifest;
                    tracing::info!(
                        id = %m.id,
                        revision = m.revision,
                        db_bytes = m.db_size,
                        stored_bytes = m.object.size,
                        seconds = report.duration.as_secs_f64(),
                        "backup done"
                    );
                    tokio::select! {
                        () = self.prune() => {}
                        () = term.cancelled() => self.cancelled(Task::Backup),
                    }
                    self.refresh_storage().await;
                    if self.settings.chain_proof.is_some() {
                        tokio::select! {
                            () = self.prove_chain(&report.manifest) => {}
                            () = term.cancelled() => self.cancelled(Task::Backup),
                        }
                    }
                    return Ok((report.manifest.id.clone(), report.manifest.revision));
                }
                Err(e) => e,
            };
            self.metrics.backup_failed(metrics::failure_reason(&e));
            tracing::error!(error = %e, attempt = attempt + 1, "backup failed");
            if matches!(e, BackupError::Cancelled) {
                self.cancelled(Task::Backup);
                return Err(e.to_string());
            }
            let tell = || {
                if let Some(w) = &s.webhooks {
                    w.backup_failed(&e.to_string());
                }
            };
            if e.is_config() || attempt >= s.retries {
                tell();
                return Err(e.to_string());
            }
            let delay = (FIRST_BACKOFF * 2u32.saturating_pow(attempt)).min(MAX_BACKOFF);
            let now = Utc::now();
            let next = s.backup_schedule.next_after(now);
            let room = next
                .and_then(|n| (n - now).to_std().ok())
                .unwrap_or_default();
            if room <= delay {
                tracing::warn!(
                    retry_in = delay.as_secs(),
                    "not retrying: the next scheduled backup comes first"
                );
                tell();
                return Err(e.to_string());
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = term.cancelled() => {
                    self.cancelled(Task::Backup);
                    return Err(BackupError::Cancelled.to_string());
                }
            }
            attempt += 1;
            self.metrics.retried();
        }
    }

    /// Applies the retention policy and removes leftovers; errors are logged (the next
    /// prune tries again).
    async fn prune(&self) {
        let s = &self.settings;
        let outcome = async {
            let plan = prune::plan(&s.repo, &s.policy, s.leftover_grace, Utc::now()).await?;
            let done = prune::execute(&s.repo, &plan).await?;
            // The change log's segments that no kept backup needs any more.
            let segments = crate::changes::prune::plan(&s.repo, &plan.kept()).await?;
            crate::changes::prune::execute(&s.repo, &segments).await?;
            Ok::<_, crate::repository::RepoError>(done)
        }
        .await;
        match outcome {
            Ok(o) => {
                self.metrics
                    .pruned(o.deleted_backups.len(), o.deleted_leftovers.len());
                if !o.deleted_backups.is_empty() || !o.deleted_leftovers.is_empty() {
                    tracing::info!(
                        backups = o.deleted_backups.len(),
                        leftovers = o.deleted_leftovers.len(),
                        "pruned"
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, "prune failed"),
        }
    }

    async fn verify_newest(&self) {
        let s = &self.settings;
        let result = async {
            let m = s.repo.latest().await?.manifest;
            crate::fetch::verify(&s.repo, &m, &s.scratch, s.identities.as_ref()).await?;
            Ok::<_, crate::fetch::FetchError>(m.id)
        }
        .await;
        match result {
            Ok(id) => {
                self.metrics.verified(true);
                tracing::info!(id = %id, "newest backup verified");
            }
            Err(e) => {
                self.metrics.verified(false);
                tracing::error!(error = %e, "verify of the newest backup failed");
                if let Some(w) = &s.webhooks {
                    w.verify_failed(None, &e.to_string());
                }
            }
        }
    }

    /// Restores the newest backup into a throw-away member and checks it.
    async fn drill_newest(&self) {
        let s = &self.settings;
        let Some((_, options)) = &s.drill else { return };
        let t0 = std::time::Instant::now();
        let result = async {
            let m = s.repo.latest().await.map_err(|e| e.to_string())?.manifest;
            let backup = crate::restore::plan::BackupRef {
                id: m.id.clone(),
                revision: m.revision,
                total_key: m.total_key,
                live_keys: m.live_keys,
                members: m.members.clone(),
                db_size: m.db_size,
                etcd_version: m.etcd_version.clone(),
                // A drill runs on this host, where the bundle's files are not needed.
                bundle_files: Vec::new(),
            };
            let source = crate::restore::run::Source::Stored {
                repo: (*s.repo).clone(),
                manifest: Box::new(m),
                identities: s.identities.clone(),
            };
            crate::restore::drill::drill(&source, &backup, &s.etcd, options).await
        }
        .await;
        match result {
            Ok(r) => {
                self.metrics.drilled(true, t0.elapsed().as_secs_f64());
                tracing::info!(id = %r.backup, revision = r.revision, keys = r.keys, "restore drill passed");
            }
            Err(e) => {
                self.metrics.drilled(false, 0.0);
                tracing::error!(error = %e, "restore drill failed");
                if let Some(w) = &s.webhooks {
                    w.drill_failed(None, &e);
                }
            }
        }
    }

    /// Reads the newest restorable backup and the count of restorable backups from
    /// storage, for /readyz and the metrics; manifests without data or refused ones do
    /// not count (the repository caches the manifests it has read).
    async fn refresh_storage(&self) {
        let repo = &self.settings.repo;
        match repo.catalog().await {
            Ok(entries) => {
                let restorable: Vec<_> = entries.iter().filter_map(|e| e.restorable()).collect();
                let newest = restorable.first().and_then(|m| {
                    let finished = chrono::DateTime::parse_from_rfc3339(&m.finished_at).ok()?;
                    Some(Newest {
                        id: m.id.clone(),
                        finished_at: finished.with_timezone(&Utc),
                        revision: m.revision,
                    })
                });
                self.metrics.storage_seen(restorable.len(), newest);
            }
            Err(e) => tracing::warn!(error = %e, "could not read the storage"),
        }
    }

    /// Keeps the leader gauge current and re-reads the storage now and then (other
    /// daemons and CronJobs write to it too).
    async fn watch(self: Arc<Self>) {
        let every =
            (self.settings.max_age / 10).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut last_read: Option<tokio::time::Instant> = None;
        loop {
            self.metrics.set_leader(self.leadership.is_leader());
            if last_read.is_none_or(|t| t.elapsed() >= every) {
                self.refresh_storage().await;
                last_read = Some(tokio::time::Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The kinds of spool file a process that died (killed, power loss) leaves behind.
#[derive(Debug, Clone, Copy)]
enum Leftover {
    /// `lifeboat-<id>.db.spool`: a backup's stream-check skeleton.
    Backup,
    /// `lifeboat-changes-<chain>-<from>-<to>.spool`: a recorder's sealed segment.
    Changes,
}

impl Leftover {
    fn matches(self, name: &str) -> bool {
        match self {
            Leftover::Backup => name.starts_with("lifeboat-") && name.ends_with(".db.spool"),
            Leftover::Changes => crate::changes::outbox::is_spool_name(name),
        }
    }

    fn removed(self) -> &'static str {
        match self {
            Leftover::Backup => "removed the spool file of a backup that never finished",
            Leftover::Changes => {
                "removed a change-log spool file of a recorder that did not stop cleanly (its revisions are recorded again from the last durable one)"
            }
        }
    }
}

/// Spool files of `kind` that died with their process: older than the grace period,
/// nobody writes them any more.
fn clean_spool_leftovers(dir: &std::path::Path, grace: Duration, kind: Leftover) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !kind.matches(&name) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > grace);
        if old && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(path = %entry.path().display(), "{}", kind.removed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_that_panics_does_not_block_later_ticks() {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let job = tokio::spawn(async move {
            let _running = Running::start(&f).expect("not running yet");
            assert!(f.load(Ordering::SeqCst));
            panic!("injected panic inside a scheduled job");
        });
        assert!(job.await.unwrap_err().is_panic());
        assert!(
            !flag.load(Ordering::SeqCst),
            "the flag is cleared by the unwinding"
        );
        let again = Running::start(&flag);
        assert!(again.is_some(), "the next tick may start");
        assert!(Running::start(&flag).is_none(), "but not two at once");
    }
}
