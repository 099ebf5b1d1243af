//! Connection settings taken the way etcdctl takes them: flags, then `ETCDCTL_*`
//! variables, then the `[etcd]` section of the config file, then etcdctl's defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::EtcdError;
use crate::config::EtcdConfig;
use crate::secret::Secret;

/// etcdctl's connection flags. Each falls back to its `ETCDCTL_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct EtcdArgs {
    /// gRPC endpoints, comma-separated (etcdctl's default: 127.0.0.1:2379).
    #[arg(
        long,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    pub endpoints: Vec<String>,
    /// CA bundle that signed the etcd server certificates.
    #[arg(long, env = "ETCDCTL_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate.
    #[arg(long, env = "ETCDCTL_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client key.
    #[arg(long, env = "ETCDCTL_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// User name, or `user:password`.
    #[arg(
        long,
        env = "ETCDCTL_USER",
        value_name = "USER[:PASSWORD]",
        hide_env_values = true
    )]
    pub user: Option<String>,
    /// Password for --user (prefer ETCDCTL_PASSWORD or [etcd] password-file).
    #[arg(long, env = "ETCDCTL_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Use TLS but accept any server certificate (no CA or host name check), like etcdctl.
    #[arg(long, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,
    /// Time to establish a connection, e.g. `2s` (etcdctl's default).
    #[arg(long, env = "ETCDCTL_DIAL_TIMEOUT", value_name = "DURATION")]
    pub dial_timeout: Option<String>,
    /// Time for one request (status, alarm list, the linearizable read), e.g. `5s`
    /// (etcdctl's default). The snapshot stream has its own stall timeout instead.
    #[arg(long, env = "ETCDCTL_COMMAND_TIMEOUT", value_name = "DURATION")]
    pub command_timeout: Option<String>,
    /// Which member to take the snapshot from when several endpoints are given.
    #[arg(long, value_enum)]
    pub snapshot_from: Option<Prefer>,
}

/// Which member a snapshot is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prefer {
    /// A follower if one is healthy (spares the leader), else the leader.
    #[default]
    Follower,
    Leader,
    Any,
}

/// The settings in effect after flags, environment and file are merged.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub insecure_skip_tls_verify: bool,
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
    pub prefer: Prefer,
}

impl EtcdSettings {
    /// Merges flags/environment (already combined by clap) with the config file.
    pub fn resolve(args: &EtcdArgs, file: &EtcdConfig) -> Result<Self, EtcdError> {
        let endpoints = if !args.endpoints.is_empty() {
            args.endpoints.clone()
        } else if !file.endpoints.is_empty() {
            file.endpoints.clone()
        } else {
            vec!["127.0.0.1:2379".to_owned()]
        };
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(EtcdError::Settings("--endpoints is empty".into()));
        }
        // ETCDCTL_USER may carry the password as `user:password`, like etcdctl.
        let (user, inline_password) = match args.user.as_ref().or(file.user.as_ref()) {
            Some(u) => match u.split_once(':') {
                Some((name, pw)) => (Some(name.to_owned()), Some(Secret::new(pw))),
                None => (Some(u.clone()), None),
            },
            None => (None, None),
        };
        let password = match (&args.password, inline_password, &file.password_file) {
            (Some(p), _, _) => Some(Secret::new(p.clone())),
            (None, Some(p), _) => Some(p),
            (None, None, Some(path)) => Some(read_password_file(path)?),
            (None, None, None) => None,
        };
        if password.is_some() && user.is_none() {
            return Err(EtcdError::Settings(
                "a password was given without --user (or ETCDCTL_USER)".into(),
            ));
        }
        let timeout = |what: &str, text: Option<&String>, default: Duration| {
            match text {
            Some(text) => crate::duration::parse_duration(text)
                .filter(|d| !d.is_zero() && *d <= Duration::from_secs(86_400))
                .ok_or_else(|| {
                    EtcdError::Settings(format!(
                        "{what} {text:?} is not a duration like 2s, 500ms or 1m (above zero, at most a day)"
                    ))
                }),
            None => Ok(default),
        }
        };
        let dial = args.dial_timeout.as_ref().or(file.dial_timeout.as_ref());
        let dial_timeout = timeout("dial timeout", dial, Duration::from_secs(2))?;
        let command = args
            .command_timeout
            .as_ref()
            .or(file.command_timeout.as_ref());
        let command_timeout = timeout("command timeout", command, Duration::from_secs(5))?;
        Ok(EtcdSettings {
            endpoints,
            cacert: args.cacert.clone().or_else(|| file.cacert.clone()),
            cert: args.cert.clone().or_else(|| file.cert.clone()),
            key: args.key.clone().or_else(|| file.key.clone()),
            user,
            password,
            insecure_skip_tls_verify: args.insecure_skip_tls_verify
                || file.insecure_skip_tls_verify.unwrap_or(false),
            dial_timeout,
            command_timeout,
            prefer: args
                .snapshot_from
                .or(file.snapshot_from)
                .unwrap_or_default(),
        })
    }

    pub fn uses_tls(&self) -> bool {
        self.cacert.is_some()
            || self.cert.is_some()
            || self.insecure_skip_tls_verify
            || self.endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// `host:port` as etcdctl accepts it becomes a URL: https when TLS is configured.
    pub fn endpoint_url(&self, endpoint: &str) -> String {
        if endpoint.contains("://") {
            endpoint.to_owned()
        } else if self.uses_tls() {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        }
    }
}

fn read_password_file(path: &std::path::Path) -> Result<Secret, EtcdError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EtcdError::Settings(format!("password file {}: {e}", path.display())))?;
    Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_user_may_carry_the_password() {
        let file = EtcdConfig {
            endpoints: vec!["https://10.0.0.1:2379".into()],
            user: Some("fileuser".into()),
            dial_timeout: Some("5s".into()),
            ..EtcdConfig::default()
        };
        let args = EtcdArgs {
            user: Some("root:s3cret".into()),
            ..EtcdArgs::default()
        };
        let s = EtcdSettings::resolve(&args, &file).unwrap();
        assert_eq!(s.endpoints, vec!["https://10.0.0.1:2379"]);
        assert_eq!(s.user.as_deref(), Some("root"));
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(s.dial_timeout, Duration::from_secs(5));
        assert!(s.uses_tls());

        let plain = EtcdSettings::resolve(&EtcdArgs::default(), &EtcdConfig::default()).unwrap();
        assert_eq!(plain.endpoints, vec!["127.0.0.1:2379"]);
        assert_eq!(
            plain.endpoint_url("127.0.0.1:2379"),
            "http://127.0.0.1:2379"
        );
        assert!(format!("{s:?}").contains("[redacted]") && !format!("{s:?}").contains("s3cret"));
    }
}
