//! `lifeboat daemon`: its settings, from the flags and the configuration file.

use std::time::Duration;

use super::*;

/// Everything `lifeboat daemon` needs, checked before anything starts.
pub(super) fn daemon_settings(
    args: &DaemonArgs,
    config: &Config,
) -> Result<DaemonSettings, Failure> {
    let etcd = EtcdSettings::resolve(&args.etcd, &config.etcd)?;
    let repo = Arc::new(open_repository(&args.storage, config)?);
    let backup_args = BackupArgs {
        etcd: args.etcd.clone(),
        storage: args.storage.clone(),
        spool_dir: None,
        zstd_level: None,
        recipient: Vec::new(),
    };
    let backup = backup_options(&backup_args, config)?;
    let tz = timezone(config)?;
    let text = config.backup.schedule.as_deref().ok_or_else(|| {
        Failure::Usage(
            "[backup] schedule is not set: the daemon needs to know when to back up \
             (e.g. \"*/30 * * * *\" or \"@hourly\")"
                .into(),
        )
    })?;
    let backup_schedule =
        Schedule::parse(text, tz).map_err(|e| Failure::Usage(format!("[backup] {e}")))?;
    let verify_schedule = match &config.verify.schedule {
        Some(t) => {
            Some(Schedule::parse(t, tz).map_err(|e| Failure::Usage(format!("[verify] {e}")))?)
        }
        None => None,
    };
    let drill = match &config.drill.schedule {
        None => None,
        Some(t) => {
            let schedule =
                Schedule::parse(t, tz).map_err(|e| Failure::Usage(format!("[drill] {e}")))?;
            Some((
                schedule,
                restore::drill_options(&config.drill, config, None, None, None)?,
            ))
        }
    };
    let d = &config.daemon;
    let max_age = config_duration(
        "[daemon] max-age",
        d.max_age.as_deref(),
        crate::daemon::default_max_age(&backup_schedule),
    )?;
    let ttl = config_duration(
        "[daemon] lease-ttl",
        d.lease_ttl.as_deref(),
        Duration::from_secs(15),
    )?;
    if ttl < Duration::from_secs(2) {
        return Err(Failure::Usage(
            "[daemon] lease-ttl must be at least 2s".into(),
        ));
    }
    let changes = changes::options(&config.changes, &backup.spool_dir)?;
    let webhooks = crate::daemon::webhooks::Webhooks::from_config(&config.notify, repo.cluster())
        .map_err(Failure::Usage)?;
    let backup_token = match &d.backup_token_file {
        Some(f) => Some(crate::daemon::on_demand::read_token(f).map_err(Failure::Usage)?),
        None => None,
    };
    Ok(DaemonSettings {
        webhooks,
        backup_token,
        etcd,
        repo,
        scratch: backup.spool_dir.clone(),
        backup,
        backup_schedule,
        retries: config.backup.retries.unwrap_or(3),
        verify_schedule,
        drill,
        policy: retention_policy(config)?,
        leftover_grace: config_duration(
            "[retention] leftover-grace",
            config.retention.leftover_grace.as_deref(),
            Duration::from_secs(3600),
        )?,
        listen: d.listen.clone().unwrap_or_else(|| "127.0.0.1:9479".into()),
        max_age,
        election: d.leader_election.unwrap_or(true).then_some(ttl),
        shutdown_timeout: config_duration(
            "[daemon] shutdown-timeout",
            d.shutdown_timeout.as_deref(),
            Duration::from_secs(60),
        )?,
        identities: identities(&IdentityArgs { identity: None }, config)?,
        changes,
        chain_proof: match (config.changes.enabled, config.changes.prove_backups) {
            (Some(true), Some(true)) => {
                let d = restore::drill_options(&config.drill, config, None, None, None)?;
                Some(restore::replay_options(d)?)
            }
            _ => None,
        },
    })
}
