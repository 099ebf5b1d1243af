//! The configuration file (`--config FILE`, env `LIFEBOAT_CONFIG`): TOML, kebab-case keys,
//! unknown keys rejected so a typo is an error rather than a silently ignored setting.
//! Precedence, once later commands read settings from several places: flags >
//! environment > file > defaults.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    #[serde(default)]
    pub etcd: EtcdConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    #[serde(default)]
    pub encryption: EncryptionConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub restore: RestoreConfig,
    #[serde(default)]
    pub drill: DrillConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub changes: ChangesConfig,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub bundle: BundleConfig,
}

/// `[bundle]`: files stored with each backup for a restore on new hosts, encrypted.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BundleConfig {
    /// Absolute paths: the etcd PKI, the apiserver's EncryptionConfiguration, ...
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// age recipients (`age1...`) for the bundle; default: `[encryption] recipients`.
    /// A bundle is never stored unencrypted.
    #[serde(default)]
    pub recipients: Vec<String>,
}

/// `[notify]`: who the daemon tells when a backup, a verify or a drill fails.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotifyConfig {
    /// Each gets a JSON event: a URL, or a table `{ url = "...", format = "slack" }`, or
    /// `{ url-file = "/path" }` for a URL that holds a token (Slack's do).
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// How long one delivery may take (default `10s`).
    pub timeout: Option<String>,
    /// Further attempts after a failed delivery, 1 s, 2 s, 4 s... apart (default 3).
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Webhook {
    Url(String),
    Table(WebhookTable),
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookTable {
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
    /// `json` (default): lifeboat's event; `slack`: `{"text": ...}`, which Slack,
    /// Mattermost, Rocket.Chat and Teams' workflows accept.
    pub format: Option<String>,
}

/// The change log for point-in-time recovery, recorded by the daemon that leads.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ChangesConfig {
    /// Record every revision between full backups (default false).
    pub enabled: Option<bool>,
    /// How long a revision may wait before its segment is written (default 1s).
    pub flush_interval: Option<String>,
    /// A segment is written when it holds this many bytes (default 8 MiB).
    pub max_segment_bytes: Option<usize>,
    /// With no writes, a marks-only segment is written this often (default 30s).
    pub quiet_interval: Option<String>,
    /// Sealed segments held in memory while the storage is away; beyond it they go to
    /// the spool (default 64 MiB).
    pub max_buffer_bytes: Option<usize>,
    /// Sealed segments held in spool files beyond memory; beyond both the chain breaks
    /// (default 1 GiB; 0: no spool).
    pub max_spool_bytes: Option<u64>,
    /// Where the spool files go (default: `[backup] spool-dir`).
    pub spool_dir: Option<PathBuf>,
    /// After each scheduled backup, prove the chain: the backup before it plus the change
    /// log replayed must equal it (default false; uses the `[drill]` binaries).
    pub prove_backups: Option<bool>,
}

/// The daemon's scheduled restore drill (`lifeboat restore drill` on the newest backup).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DrillConfig {
    /// Cron schedule; unset: no drill.
    pub schedule: Option<String>,
    /// The etcd binary the drill starts (default: `etcd` on the PATH).
    pub etcd_binary: Option<PathBuf>,
    /// etcdutl, or etcdctl for 3.4 (default: found on the PATH).
    pub etcdutl: Option<PathBuf>,
}

/// The cluster `lifeboat restore` rebuilds: its members and how each is controlled.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestoreConfig {
    /// `--initial-cluster-token` of the restored cluster (default `etcd-cluster`, etcd's).
    pub initial_cluster_token: Option<String>,
    /// `--bump-revision` (with `--mark-compacted`) when the members' etcdutl supports it;
    /// default 1000000000, 0 to disable.
    pub bump_revision: Option<u64>,
    /// Where the journal of restore runs is kept (default `/var/lib/lifeboat/restore`).
    pub state_dir: Option<PathBuf>,
    /// Step 8: a command that must succeed once Kubernetes is back (e.g.
    /// `kubectl get --raw /readyz`), or an http(s) URL that must answer 200.
    pub kube_health: Option<String>,
    /// How long a stop or start may take before the step fails (default `120s`).
    pub step_timeout: Option<String>,
    /// An ssh_config file for the `ssh://` members (`ssh -F`): identity file, known
    /// hosts, user, jump hosts. Default: the invoking user's ~/.ssh/config.
    pub ssh_config: Option<PathBuf>,
    /// Allow restoring into members other than those in the snapshot (default false).
    pub new_membership: Option<bool>,
    #[serde(default)]
    pub members: Vec<RestoreMember>,
}

/// One member of the cluster to restore.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RestoreMember {
    pub name: String,
    pub peer_url: String,
    pub client_url: String,
    /// The member's data directory (kubeadm: `/var/lib/etcd`).
    pub data_dir: PathBuf,
    /// `local` (default) or `ssh://user@host[:port]`.
    pub host: Option<String>,
    /// etcd as a systemd unit...
    pub etcd_systemd_unit: Option<String>,
    /// ... or as a kubeadm static pod (moved out of its directory to stop it) ...
    pub etcd_static_pod_manifest: Option<PathBuf>,
    /// ... or explicit commands.
    pub etcd_start: Option<String>,
    pub etcd_stop: Option<String>,
    /// The Kubernetes components on this member, the same three ways.
    #[serde(default)]
    pub kube_systemd_units: Vec<String>,
    #[serde(default)]
    pub kube_static_pod_manifests: Vec<PathBuf>,
    pub kube_start: Option<String>,
    pub kube_stop: Option<String>,
    /// `etcdutl` (3.5+) or `etcdctl` (3.4) on the member; found on its PATH when unset.
    pub etcdutl: Option<PathBuf>,
}

/// The daemon's verify job.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VerifyConfig {
    /// Cron schedule for verifying the newest backup; unset: never.
    pub schedule: Option<String>,
}

/// Which backups `prune` (and the daemon after each backup) keeps. No rule set: keep all.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetentionConfig {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    /// Keep everything younger than this, e.g. `2d`, `36h`.
    pub keep_within: Option<String>,
    /// Data objects without a manifest older than this are leftovers of failed runs and
    /// are deleted (default `1h`).
    pub leftover_grace: Option<String>,
}

/// The always-running agent.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DaemonConfig {
    /// Address of /healthz, /readyz and /metrics (default `127.0.0.1:9479`).
    pub listen: Option<String>,
    /// /readyz fails when the newest backup in storage is older than this.
    pub max_age: Option<String>,
    /// Elect one daemon among several through etcd (default true).
    pub leader_election: Option<bool>,
    /// TTL of the election lease: how fast another daemon takes over (default `15s`).
    pub lease_ttl: Option<String>,
    /// IANA time zone the schedules are read in (default `UTC`).
    pub timezone: Option<String>,
    /// How long shutdown may take before the process exits anyway (default `60s`).
    pub shutdown_timeout: Option<String>,
    /// Serve `POST /backup` to requests carrying the token in this file as a bearer
    /// token. Unset (the default): no backups on request.
    pub backup_token_file: Option<PathBuf>,
}

/// age encryption of stored backups.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EncryptionConfig {
    /// Public keys (`age1...`) backups are encrypted to. Empty: not encrypted.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// The private key file (`age-keygen` output) used by verify and fetch.
    pub identity_file: Option<PathBuf>,
}

/// Where backups are kept.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StorageConfig {
    /// `file:///DIR`, a plain directory, `s3://BUCKET/PREFIX` or `az://CONTAINER/PREFIX`.
    pub url: Option<String>,
    /// object_store settings for S3 (`endpoint`, `region`, `allow_http`, ...) or Azure
    /// (`account_name`, `use_emulator`, `endpoint`, ...); secrets belong in the
    /// environment (AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY), not here.
    #[serde(default)]
    pub options: std::collections::HashMap<String, String>,
}

/// How backups are taken.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupConfig {
    /// Name the backups are filed under; several clusters can share one storage URL.
    pub cluster: Option<String>,
    pub spool_dir: Option<std::path::PathBuf>,
    pub zstd_level: Option<i32>,
    pub zstd_workers: Option<u32>,
    pub stall_timeout: Option<String>,
    /// Cron schedule of the daemon's backups: 5 fields (as a Kubernetes CronJob), 6 with
    /// seconds, or `@hourly`, `@daily`, ...
    pub schedule: Option<String>,
    /// How many times the daemon retries a failed backup before the next tick (default 3).
    pub retries: Option<u32>,
}

/// How to reach etcd; the same settings as etcdctl's flags.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EtcdConfig {
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    /// A file holding the password, so the config file itself holds no secret.
    pub password_file: Option<PathBuf>,
    /// Use TLS but accept any server certificate, like etcdctl's flag of that name.
    pub insecure_skip_tls_verify: Option<bool>,
    pub dial_timeout: Option<String>,
    pub command_timeout: Option<String>,
    /// `follower` (default), `leader` or `any`.
    pub snapshot_from: Option<crate::etcd::Prefer>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text; the error is one line naming the key and the line.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_owned();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {msg}")
                }
                None => msg,
            }
        })?;
        if let Some(f) = &config.log.format
            && f != "text"
            && f != "json"
        {
            {
                return Err(format!(
                    "[log] format must be \"text\" or \"json\", not {f:?}"
                ));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_the_line() {
        let err = Config::parse("[etcd]\nendpoint = [\"x\"]\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("endpoint"), "{err}");
        let err = Config::parse("[log]\nformat = \"xml\"\n").unwrap_err();
        assert!(err.contains("xml"), "{err}");
        let ok = Config::parse("[etcd]\nendpoints = [\"https://127.0.0.1:2379\"]\n").unwrap();
        assert_eq!(ok.etcd.endpoints.len(), 1);
    }

    #[test]
    fn shipped_example_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("config/ exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n > 0, "no example config in {}", dir.display());
    }
}
