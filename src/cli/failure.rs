//! How a command fails: one error type for every command, and the exit code it maps to
//! (2 for usage and configuration, 1 for the rest).

use crate::backup::BackupError;
use crate::config::ConfigError;
use crate::encryption::EncryptionError;
use crate::etcd::EtcdError;
use crate::fetch::FetchError;
use crate::repository::RepoError;
use crate::snapshot::SnapshotError;

/// Why a command failed, and so which exit code it gets.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("backup failed: {0}")]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Encryption(#[from] EncryptionError),
    #[error("{0}")]
    Usage(String),
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
    #[error("restore to a point: {0}")]
    Replay(String),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error("restore stopped: {0}")]
    Restore(String),
    #[error(transparent)]
    Read(#[from] crate::objects::ReadError),
    #[error("{0}")]
    Objects(String),
}

impl Failure {
    /// 2 for a problem with how lifeboat was called or configured, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        let config = match self {
            Failure::Config(_) | Failure::Usage(_) | Failure::Encryption(_) => true,
            Failure::Backup(e) => e.is_config(),
            Failure::Repo(e) => e.is_config(),
            Failure::Etcd(e) => e.is_config(),
            Failure::Fetch(FetchError::Repo(e)) => e.is_config(),
            Failure::Daemon(crate::daemon::DaemonError::Listen { .. }) => true,
            Failure::Daemon(crate::daemon::DaemonError::Etcd(e)) => e.is_config(),
            _ => false,
        };
        if config { 2 } else { 1 }
    }
}
