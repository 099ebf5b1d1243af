//! Command-line definitions and what each command prints.
//!
//! Global flags follow etcdctl: `-w/--write-out simple|json|table`. Exit codes: 0 success,
//! 2 usage or configuration error, 1 any other failure.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backup::{self, BackupOptions};
use crate::daemon::DaemonSettings;
use crate::daemon::schedule::Schedule;
use crate::duration::parse_duration;
use crate::repository::prune;
use crate::repository::retention::Policy;

use crate::config::Config;
use crate::encryption::{self, Identities};
use crate::etcd::{EtcdArgs, EtcdSettings};
use crate::fetch;
use crate::output;
use crate::repository::{self, Repository};
use crate::snapshot::{self, ScanOptions};

mod changes;
mod daemon;
mod failure;
mod objects;
mod restore;
mod shell;

pub use failure::Failure;

pub use objects::{DiffArgs, GetArgs, ObjectsArgs, RestoreKeysArgs};

#[derive(Debug, Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Backup, restore and disaster recovery for etcd",
    propagate_version = true
)]
pub struct Cli {
    /// Output format, as etcdctl's -w.
    #[arg(short = 'w', long = "write-out", global = true, value_enum, default_value_t = Format::Simple)]
    pub write_out: Format,

    /// Configuration file (TOML).
    #[arg(long, global = true, env = "LIFEBOAT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output (-v info, -vv debug, -vvv trace); or set RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log format for the diagnostic output on stderr.
    #[arg(long, global = true, value_enum, env = "LIFEBOAT_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Simple,
    Json,
    Table,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take one backup: snapshot one member, verify, compress, upload, write the manifest.
    Backup(BackupArgs),
    /// List the backups in the storage, newest first.
    List(ListArgs),
    /// Download a backup and check it completely against its manifest.
    Verify(VerifyArgs),
    /// Download a backup as a plain snapshot file for `etcdutl snapshot restore`.
    Fetch(FetchArgs),
    /// Delete the backups the retention policy ([retention]) does not keep, and the
    /// leftovers of failed runs.
    Prune(PruneArgs),
    /// Run scheduled backups, prune and verify; serve /healthz, /readyz, /metrics.
    Daemon(DaemonArgs),
    /// Rebuild the cluster from one backup on every member ([restore] in the config).
    #[command(subcommand)]
    Restore(RestoreCommand),
    /// Read snapshot files offline.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// etcdctl's `get`, offline, on a backup or a snapshot file (its history too).
    Get(Box<GetArgs>),
    /// The Kubernetes objects in a backup: type, metadata, size, revision.
    Objects(Box<ObjectsArgs>),
    /// The Kubernetes objects added, deleted and changed between two backups, snapshot
    /// files or the live cluster.
    Diff(Box<DiffArgs>),
    /// Shell completions on standard output: `source <(lifeboat completions bash)`.
    Completions(shell::CompletionsArgs),
    /// Man pages, generated from these definitions.
    Man(shell::ManArgs),
}

#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Print the eight-step runbook with the exact commands; changes nothing.
    Plan(RestorePlanArgs),
    /// Carry the plan out on every member (stops Kubernetes and etcd!).
    Run(Box<RestoreRunArgs>),
    /// Prove a backup restores: into a throw-away single-member etcd on loopback.
    Drill(Box<RestoreDrillArgs>),
    /// Write selected keys of a backup back into the live cluster (only where they do
    /// not exist, unless --overwrite; never deletes).
    Keys(Box<RestoreKeysArgs>),
}

#[derive(Debug, Args)]
pub struct RestoreDrillArgs {
    #[command(flatten)]
    pub plan: RestorePlanArgs,
    /// The etcd binary to start (default: `etcd` on the PATH).
    #[arg(long, value_name = "PATH")]
    pub etcd_binary: Option<PathBuf>,
    /// The restore tool, etcdutl or (3.4) etcdctl (default: found on the PATH).
    #[arg(long, value_name = "PATH")]
    pub etcdutl: Option<PathBuf>,
    /// Where the scratch directory goes (default: [backup] spool-dir, else the temp dir).
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Prove the change log instead: replay it from the backup before --backup to that
    /// backup's revision and compare the result with the backup, key by key and HashKV.
    #[arg(long)]
    pub chain: bool,
    /// Credentials, if the backed-up cluster has auth enabled (as etcdctl's flags).
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
}

#[derive(Debug, Args)]
pub struct RestoreRunArgs {
    #[command(flatten)]
    pub plan: RestorePlanArgs,
    /// Really do it: stop Kubernetes and etcd everywhere and restore.
    #[arg(long)]
    pub yes: bool,
    /// Continue an interrupted run of the same backup after fixing what stopped it.
    #[arg(long, conflicts_with = "from_step")]
    pub resume: bool,
    /// Start at this step (1-8), for steps already done by hand.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub from_step: Option<u8>,
    /// TLS and credentials for checking the restored members, as etcdctl's flags (the
    /// endpoints are the members' client URLs).
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
}

#[derive(Debug, Args)]
pub struct RestorePlanArgs {
    /// Backup id, `latest`, or a snapshot file.
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Restore to this revision instead: the newest backup at or before it with the
    /// change log replayed up to it (see `fetch --to-revision`).
    #[arg(long, value_name = "N", conflicts_with = "to_time")]
    pub to_revision: Option<i64>,
    /// Restore to the last revision the change log saw at or before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub to_time: Option<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Print the decisions; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// `lifeboat list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// The change log instead: per chain, the revisions and times that can be restored
    /// (`fetch --to-revision/--to-time`), from which backups, and any break.
    #[arg(long)]
    pub changes: bool,
}

/// Where backups are kept.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// file:///DIR, a directory, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX (default
    /// ./lifeboat-backups).
    #[arg(long, env = "LIFEBOAT_STORAGE", value_name = "URL")]
    pub storage: Option<String>,
    /// Name the backups are filed under (default "default").
    #[arg(long, env = "LIFEBOAT_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Directory for the stream check's scratch file (the skeleton of the snapshot's
    /// B+trees, a few percent of its size), removed when the backup ends.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// zstd compression level (1-19).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: Option<i32>,
    /// Encrypt the stored object to this age recipient (age1...); repeatable. Adds to
    /// [encryption] recipients.
    #[arg(long, value_name = "AGE_RECIPIENT")]
    pub recipient: Vec<String>,
}

/// The age identity that decrypts encrypted backups.
#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// age identity file (as written by age-keygen) for encrypted backups.
    #[arg(long, env = "LIFEBOAT_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Backup id, or `latest`.
    #[arg(default_value = "latest")]
    pub id: String,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Scratch directory for the downloaded copy (removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    #[command(flatten)]
    pub identity: IdentityArgs,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Backup id, or `latest`; not with --to-revision/--to-time, which choose the backup.
    #[arg(required_unless_present_any = ["to_revision", "to_time"])]
    pub id: Option<String>,
    /// Restore to this revision: the newest full backup at or before it, with the change
    /// log replayed up to it ([changes] in the daemon).
    #[arg(long, value_name = "N", conflicts_with_all = ["id", "to_time"])]
    pub to_revision: Option<i64>,
    /// Restore to the last revision the change log saw at or before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", conflicts_with_all = ["id", "to_revision"])]
    pub to_time: Option<String>,
    /// Where to write the snapshot file (never overwritten; written as FILE.part first).
    #[arg(long, short, value_name = "FILE", required_unless_present = "bundle")]
    pub out: Option<PathBuf>,
    /// Write the backup's restore bundle ([bundle] files) under DIR, each file at its own
    /// path (/etc/x as DIR/etc/x) with its mode; existing files are never overwritten.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["to_revision", "to_time"])]
    pub bundle: Option<PathBuf>,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// What `etcdutl snapshot status` prints, plus lifeboat's own figures; verifies the
    /// sha256 trailer and bbolt's consistency.
    Status(StatusArgs),
    /// The live keys of a snapshot as a tree of prefixes, and Kubernetes objects by
    /// resource and namespace.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Snapshot file (as written by `etcdctl snapshot save`, or a raw member/snap/db).
    pub file: PathBuf,
    /// Do not compute the sha256 to compare with the trailer (as etcdutl, which never
    /// does). The structure is still checked.
    #[arg(long)]
    pub skip_hash_check: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Snapshot file.
    pub file: PathBuf,
    /// Do not verify the sha256 trailer.
    #[arg(long)]
    pub skip_hash_check: bool,
    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// How many `/`-terminated segments below the prefix to show.
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
}

/// Loads the configuration named on the command line, if any.
pub fn load_config(cli: &Cli) -> Result<Config, Failure> {
    match &cli.config {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}

/// The storage of the flags/environment, else of the config file, else the default.
fn open_repository(args: &StorageArgs, config: &Config) -> Result<Repository, Failure> {
    let url = args
        .storage
        .clone()
        .or_else(|| config.storage.url.clone())
        .unwrap_or_else(|| repository::DEFAULT_URL.to_owned());
    let cluster = args
        .cluster
        .clone()
        .or_else(|| config.backup.cluster.clone())
        .unwrap_or_else(|| "default".to_owned());
    let mut options = config.storage.options.clone();
    // How long failed storage requests are retried; the S3 name is the older one.
    for var in [
        "LIFEBOAT_S3_RETRY_TIMEOUT",
        "LIFEBOAT_STORAGE_RETRY_TIMEOUT",
    ] {
        if let Ok(t) = std::env::var(var) {
            options.insert("retry_timeout".into(), t);
        }
    }
    Ok(Repository::open(&url, &options, &cluster)?)
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Failure::Output)
}

fn backup_options(args: &BackupArgs, config: &Config) -> Result<BackupOptions, Failure> {
    let mut o = BackupOptions::default();
    if let Some(dir) = args
        .spool_dir
        .clone()
        .or_else(|| config.backup.spool_dir.clone())
    {
        o.spool_dir = dir;
    }
    if let Some(level) = args.zstd_level.or(config.backup.zstd_level) {
        if !(1..=19).contains(&level) {
            return Err(Failure::Usage(format!(
                "zstd level {level} is not between 1 and 19"
            )));
        }
        o.zstd_level = level;
    }
    let mut recipients = config.encryption.recipients.clone();
    recipients.extend(args.recipient.iter().cloned());
    o.recipients = encryption::parse_recipients(&recipients)?;
    let bundle_recipients = match config.bundle.recipients.as_slice() {
        [] => o.recipients.clone(),
        own => encryption::parse_recipients(own)?,
    };
    o.bundle = crate::bundle::Settings::new(&config.bundle.files, bundle_recipients)
        .map_err(Failure::Usage)?;
    if let Some(w) = config.backup.zstd_workers {
        o.zstd_workers = w;
    }
    if let Some(text) = &config.backup.stall_timeout {
        o.stall_timeout = parse_duration(text).ok_or_else(|| {
            Failure::Usage(format!("[backup] stall-timeout {text:?} is not a duration"))
        })?;
    }
    Ok(o)
}

/// The identity of --identity / LIFEBOAT_IDENTITY, else of the config file, if any.
fn identities(args: &IdentityArgs, config: &Config) -> Result<Option<Arc<Identities>>, Failure> {
    match args
        .identity
        .as_ref()
        .or(config.encryption.identity_file.as_ref())
    {
        Some(path) => Ok(Some(Arc::new(encryption::load_identities(path)?))),
        None => Ok(None),
    }
}

/// A duration from the config file, or its default.
fn config_duration(key: &str, text: Option<&str>, default: Duration) -> Result<Duration, Failure> {
    match text {
        None => Ok(default),
        Some(t) => parse_duration(t).ok_or_else(|| {
            Failure::Usage(format!(
                "{key} {t:?} is not a duration like 90s, 15m, 2h or 7d"
            ))
        }),
    }
}

fn timezone(config: &Config) -> Result<chrono_tz::Tz, Failure> {
    let name = config.daemon.timezone.as_deref().unwrap_or("UTC");
    name.parse().map_err(|_| {
        Failure::Usage(format!(
            "[daemon] timezone {name:?} is not an IANA time zone like UTC or Europe/Berlin"
        ))
    })
}

fn retention_policy(config: &Config) -> Result<Policy, Failure> {
    Policy::from_config(&config.retention, timezone(config)?).map_err(Failure::Usage)
}

/// Cancels `token` on SIGTERM or SIGINT.
async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    token.cancel();
}

/// Runs the parsed command, writing its result to `out`.
pub fn run(cli: &Cli, config: &Config, out: &mut dyn Write) -> Result<(), Failure> {
    match &cli.command {
        Command::Backup(args) => {
            let settings = EtcdSettings::resolve(&args.etcd, &config.etcd)?;
            let repo = open_repository(&args.storage, config)?;
            let opts = backup_options(args, config)?;
            let progress = crate::progress::Reporter::for_stderr();
            // SIGTERM (a CronJob's deadline, a timer's stop) or Ctrl-C cancels cleanly:
            // upload aborted, spool removed, no manifest, exit 1.
            let report = runtime()?.block_on(async {
                tokio::spawn(cancel_on_signal(opts.cancel.clone()));
                backup::run(&settings, &repo, &opts, &progress).await
            })?;
            output::backup(out, cli.write_out, &report).map_err(Failure::Output)
        }
        Command::List(args) if args.changes => {
            let repo = open_repository(&args.storage, config)?;
            let rt = runtime()?;
            let ids = identities(&IdentityArgs { identity: None }, config)?;
            let chains = rt
                .block_on(crate::changes::replay::chains(&repo, ids.as_deref()))
                .map_err(Failure::Replay)?;
            let backups = rt.block_on(repo.list())?;
            output::chains(out, cli.write_out, &chains, &backups).map_err(Failure::Output)
        }
        Command::List(args) => {
            let repo = open_repository(&args.storage, config)?;
            let list = runtime()?.block_on(repo.list())?;
            output::list(out, cli.write_out, &list).map_err(Failure::Output)
        }
        Command::Verify(args) => {
            let repo = open_repository(&args.storage, config)?;
            let scratch = args
                .spool_dir
                .clone()
                .or_else(|| config.backup.spool_dir.clone())
                .unwrap_or_else(std::env::temp_dir);
            let rt = runtime()?;
            let m = rt.block_on(repo.manifest(&args.id))?;
            let ids = identities(&args.identity, config)?;
            rt.block_on(fetch::verify(&repo, &m, &scratch, ids.as_ref()))?;
            output::verified(out, cli.write_out, &m).map_err(Failure::Output)
        }
        Command::Fetch(args) if args.id.is_none() => {
            let point =
                changes::point(args.to_revision, args.to_time.as_deref())?.ok_or_else(|| {
                    Failure::Usage("give a backup id, --to-revision or --to-time".into())
                })?;
            let repo = open_repository(&args.storage, config)?;
            let ids = identities(&args.identity, config)?;
            let rt = runtime()?;
            let plan = rt
                .block_on(crate::changes::replay::plan(&repo, point, ids.as_deref()))
                .map_err(Failure::Replay)?;
            // The scratch member's binaries: as the drill's.
            let d = restore::drill_options(&config.drill, config, None, None, None)?;
            let o = restore::replay_options(d)?;
            let target = args.out.as_deref().ok_or_else(|| {
                Failure::Usage("--to-revision and --to-time need --out FILE".into())
            })?;
            let report = rt
                .block_on(crate::changes::replay::replay(
                    &repo,
                    &plan,
                    ids.as_ref(),
                    &o,
                    target,
                ))
                .map_err(Failure::Replay)?;
            output::replayed(out, cli.write_out, &report, target).map_err(Failure::Output)
        }
        Command::Fetch(args) => {
            let repo = open_repository(&args.storage, config)?;
            let rt = runtime()?;
            let id = args.id.as_deref().unwrap_or("latest");
            let m = rt.block_on(repo.manifest(id))?;
            let ids = identities(&args.identity, config)?;
            if let Some(dir) = &args.bundle {
                let written = rt
                    .block_on(crate::bundle::fetch(&repo, &m, ids.as_deref(), dir))
                    .map_err(Failure::Usage)?;
                for p in &written {
                    writeln!(out, "{}", p.display()).map_err(Failure::Output)?;
                }
            }
            if let Some(target) = &args.out {
                rt.block_on(fetch::fetch(&repo, &m, target, ids.as_ref()))?;
                output::fetched(out, cli.write_out, &m, target).map_err(Failure::Output)?;
            }
            Ok(())
        }
        Command::Prune(args) => {
            let repo = open_repository(&args.storage, config)?;
            let policy = retention_policy(config)?;
            let grace = config_duration(
                "[retention] leftover-grace",
                config.retention.leftover_grace.as_deref(),
                Duration::from_secs(3600),
            )?;
            let rt = runtime()?;
            let plan = rt.block_on(prune::plan(&repo, &policy, grace, chrono::Utc::now()))?;
            // The change log's segments that no kept backup needs.
            let segments = rt.block_on(crate::changes::prune::plan(&repo, &plan.kept()))?;
            let done = if args.dry_run {
                None
            } else {
                let d = rt.block_on(prune::execute(&repo, &plan))?;
                rt.block_on(crate::changes::prune::execute(&repo, &segments))?;
                Some(d)
            };
            output::prune(out, cli.write_out, &plan, &segments, done.as_ref())
                .map_err(Failure::Output)
        }
        Command::Daemon(args) => {
            if cli.config.is_none() {
                return Err(Failure::Usage(
                    "lifeboat daemon needs a configuration file: --config FILE (or \
                     LIFEBOAT_CONFIG); see config/lifeboat.toml"
                        .into(),
                ));
            }
            let settings = daemon::daemon_settings(args, config)?;
            let rt = runtime()?;
            rt.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_signal(shutdown.clone()));
                crate::daemon::run(settings, shutdown).await
            })?;
            Ok(())
        }
        Command::Restore(RestoreCommand::Plan(args)) => restore::plan(cli, args, config, out),
        Command::Restore(RestoreCommand::Run(args)) => restore::run(cli, args, config, out),
        Command::Restore(RestoreCommand::Drill(args)) => restore::drill(cli, args, config, out),
        Command::Restore(RestoreCommand::Keys(args)) => {
            objects::restore_keys(cli.write_out, args, config, out)
        }
        Command::Get(args) => objects::get(cli.write_out, args, config, out),
        Command::Objects(args) => objects::objects(cli.write_out, args, config, out),
        Command::Diff(args) => objects::diff(cli.write_out, args, config, out),
        Command::Completions(args) => shell::completions(args, out),
        Command::Man(args) => shell::man(args, out),
        Command::Snapshot(SnapshotCommand::Status(args)) => {
            let options = ScanOptions {
                verify_trailer: !args.skip_hash_check,
            };
            let status = snapshot::scan_status(&args.file, options)?;
            tracing::info!(file = %args.file.display(), revision = status.revision, "snapshot read");
            output::status(out, cli.write_out, &status).map_err(Failure::Output)
        }
        Command::Snapshot(SnapshotCommand::Inspect(args)) => {
            let options = ScanOptions {
                verify_trailer: !args.skip_hash_check,
            };
            let inventory =
                snapshot::scan_inventory(&args.file, options, &args.prefix, args.depth)?;
            output::inventory(out, cli.write_out, &inventory).map_err(Failure::Output)
        }
    }
}
