//! Command-line definitions and what each command prints.
//!
//! Global flags follow etcdctl: `-w/--write-out simple|json|table`. Exit codes: 0 success,
//! 2 usage or configuration error, 1 any other failure.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError};
use crate::output;
use crate::snapshot::{self, ScanOptions, SnapshotError};

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
    /// Read snapshot files offline.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
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

/// Why a command failed, and so which exit code it gets.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
}

impl Failure {
    /// 2 for a problem with how lifeboat was called or configured, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Config(_) => 2,
            Failure::Snapshot(_) | Failure::Output(_) => 1,
        }
    }
}

/// Loads the configuration named on the command line, if any.
pub fn load_config(cli: &Cli) -> Result<Config, Failure> {
    match &cli.config {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}

/// Runs the parsed command, writing its result to `out`.
pub fn run(cli: &Cli, _config: &Config, out: &mut dyn Write) -> Result<(), Failure> {
    match &cli.command {
        Command::Snapshot(SnapshotCommand::Status(args)) => {
            let options = ScanOptions {
                verify_trailer: !args.skip_hash_check,
            };
            let (status, _) = snapshot::scan(&args.file, options)?;
            tracing::info!(file = %args.file.display(), revision = status.revision, "snapshot read");
            output::status(out, cli.write_out, &status).map_err(Failure::Output)
        }
        Command::Snapshot(SnapshotCommand::Inspect(args)) => {
            let options = ScanOptions {
                verify_trailer: !args.skip_hash_check,
            };
            let (_, index) = snapshot::scan(&args.file, options)?;
            let inventory = snapshot::inventory(&index, &args.prefix, args.depth);
            output::inventory(out, cli.write_out, &inventory).map_err(Failure::Output)
        }
    }
}
