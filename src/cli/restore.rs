//! `lifeboat restore plan|run|drill`: from the command line and config to the library.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::{
    Cli, Config, EtcdSettings, Failure, Format, IdentityArgs, RestoreDrillArgs, RestorePlanArgs,
    RestoreRunArgs, StorageArgs, identities, open_repository, runtime,
};
use crate::snapshot::{self, ScanOptions};

/// `restore plan`.
pub(super) fn plan(
    cli: &Cli,
    args: &RestorePlanArgs,
    config: &Config,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    use crate::restore::plan;
    let (settings, rt, backup, _) = prepare(args, config, &IdentityArgs { identity: None }, false)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let (p, failed) = rt.block_on(planned(&settings, &backup, &stamp));
    match cli.write_out {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string(&p).map_err(|e| Failure::Output(e.into()))?
        )
        .map_err(Failure::Output)?,
        _ => write!(out, "{}", plan::render(&p)).map_err(Failure::Output)?,
    }
    // The plan is printed either way, but a plan whose preflight failed is not one to
    // carry out: say so in the exit code.
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Restore(format!(
            "preflight failed on {} (see the plan's notes); `restore run` would stop at step \
             1 or 2 there",
            failed.join(", ")
        )))
    }
}

/// What `plan` and `run` both start from: the checked `[restore]` settings and the
/// backup, whose membership must match the config's. With `--to-revision/--to-time` the
/// backup is the snapshot at that point, replayed into the state dir when `replay` (run)
/// or only planned (plan); its source is returned too.
#[allow(clippy::type_complexity)]
fn prepare(
    args: &RestorePlanArgs,
    config: &Config,
    identity: &IdentityArgs,
    replay: bool,
) -> Result<
    (
        crate::restore::plan::RestoreSettings,
        tokio::runtime::Runtime,
        crate::restore::plan::BackupRef,
        Option<crate::restore::run::Source>,
    ),
    Failure,
> {
    use crate::restore::plan;
    let settings = plan::RestoreSettings::from_config(&config.restore).map_err(Failure::Usage)?;
    let rt = runtime()?;
    let (backup, source) =
        match point_backup(args, config, identity, &rt, &settings.state_dir, replay)? {
            Some((b, s)) => (b, s),
            None => (
                restore_backup_ref(&args.backup, &args.storage, config, &rt)?,
                None,
            ),
        };
    plan::check_membership(&settings, &backup).map_err(Failure::Usage)?;
    Ok((settings, rt, backup, source))
}

/// `--to-revision N` / `--to-time T`: the backup to restore is the snapshot at that
/// point, `DIR/point-rN.db`, replayed from the newest backup before it and the change log
/// (reused when an earlier run of the same point made it). Its membership is the base
/// backup's (the replay ran on a scratch member). `None` without a point.
#[allow(clippy::type_complexity)]
fn point_backup(
    args: &RestorePlanArgs,
    config: &Config,
    identity: &IdentityArgs,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    replay: bool,
) -> Result<
    Option<(
        crate::restore::plan::BackupRef,
        Option<crate::restore::run::Source>,
    )>,
    Failure,
> {
    let Some(point) = super::changes::point(args.to_revision, args.to_time.as_deref())? else {
        return Ok(None);
    };
    if args.backup != "latest" {
        return Err(Failure::Usage(
            "--to-revision/--to-time choose the backup themselves: leave out --backup".into(),
        ));
    }
    let repo = open_repository(&args.storage, config)?;
    let ids = identities(identity, config)?;
    let rp = rt
        .block_on(crate::changes::replay::plan(&repo, point, ids.as_deref()))
        .map_err(Failure::Replay)?;
    let base = rt.block_on(repo.manifest(&rp.base))?;
    let id = format!("point-r{}", rp.to_revision);
    let mut backup = crate::restore::plan::BackupRef {
        id: id.clone(),
        revision: rp.to_revision,
        total_key: base.total_key,
        live_keys: base.live_keys,
        members: base.members.clone(),
        db_size: base.db_size,
        etcd_version: format!(
            "{} (backup {} at revision {} + {} change-log segments of chain {})",
            base.etcd_version,
            base.id,
            rp.base_revision,
            rp.segments.len(),
            rp.chain
        ),
        bundle_files: bundle_files(&base),
    };
    if !replay {
        return Ok(Some((backup, None)));
    }
    std::fs::create_dir_all(dir).map_err(Failure::Output)?;
    let file = dir.join(format!("{id}.db"));
    if !file.exists() {
        let d = drill_options(&config.drill, config, None, None, None)?;
        rt.block_on(crate::changes::replay::replay(
            &repo,
            &rp,
            ids.as_ref(),
            &replay_options(d)?,
            &file,
        ))
        .map_err(Failure::Replay)?;
    }
    let status = snapshot::scan_status(
        &file,
        ScanOptions {
            verify_trailer: true,
        },
    )?;
    if status.store_revision() != rp.to_revision {
        return Err(Failure::Replay(format!(
            "{} is at revision {}, not {}: remove it and run again",
            file.display(),
            status.store_revision(),
            rp.to_revision
        )));
    }
    backup.total_key = status.total_key;
    backup.live_keys = status.live_keys;
    backup.db_size = status.total_size;
    Ok(Some((
        backup,
        Some(crate::restore::run::Source::File(file)),
    )))
}

/// The plan after probing every member, and the members that could not be probed
/// (named in its notes: the plan is still worth reading; `restore run` stops at step 2).
async fn planned(
    settings: &crate::restore::plan::RestoreSettings,
    backup: &crate::restore::plan::BackupRef,
    stamp: &str,
) -> (crate::restore::plan::Plan, Vec<String>) {
    let mut probes = Vec::new();
    let mut failed = Vec::new();
    for m in &settings.members {
        match crate::restore::probe(m, settings.step_timeout, &backup.bundle_files).await {
            Ok(p) => probes.push(p),
            Err(e) => failed.push((m.name.clone(), e)),
        }
    }
    let mut p = crate::restore::plan::make(settings, backup, &probes, stamp);
    p.notes
        .extend(failed.iter().map(|(_, e)| format!("preflight failed: {e}")));
    (p, failed.into_iter().map(|(name, _)| name).collect())
}

/// `restore run`.
pub(super) fn run(
    cli: &Cli,
    args: &RestoreRunArgs,
    config: &Config,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    use crate::restore::plan;
    use crate::restore::run::{Journal, Runner};
    let (settings, rt, backup, point_source) = prepare(&args.plan, config, &args.identity, true)?;
    let journal_path = Journal::path(&settings.state_dir, &backup.id);
    let existing = Journal::load(&journal_path).map_err(|e| Failure::Usage(e.to_string()))?;
    let journal = match (existing, args.resume) {
        (Some(j), true) if !j.finished => j,
        (Some(_), true) | (None, true) => {
            return Err(Failure::Usage(format!(
                "--resume: no interrupted restore of {} in {}",
                backup.id,
                settings.state_dir.display()
            )));
        }
        (Some(j), false) if !j.finished && args.from_step.is_none() => {
            return Err(Failure::Usage(format!(
                "a restore of {} was interrupted ({}); continue it with --resume, or start \
                 at a step with --from-step N",
                backup.id,
                j.failed.as_deref().unwrap_or("no failure recorded")
            )));
        }
        // --from-step N continues the same restore: its directory names (the stamp), with
        // the steps from N on to be done again. Step 5 finds its swap done and keeps it.
        (Some(mut j), false) if args.from_step.is_some() => {
            let from = args.from_step.unwrap_or(1);
            j.done.retain(|k| {
                k.split('/')
                    .next()
                    .and_then(|n| n.parse::<u8>().ok())
                    .is_some_and(|n| n < from)
            });
            j.finished = false;
            j
        }
        (previous, false) => {
            if previous.is_some() {
                let kept = journal_path.with_extension(format!(
                    "json.{}",
                    chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
                ));
                std::fs::rename(&journal_path, &kept).map_err(Failure::Output)?;
            }
            Journal {
                backup: backup.id.clone(),
                stamp: chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string(),
                started_at: chrono::Utc::now().to_rfc3339(),
                ..Journal::default()
            }
        }
    };
    let (p, _) = rt.block_on(planned(&settings, &backup, &journal.stamp));
    if !args.yes {
        write!(out, "{}", plan::render(&p)).map_err(Failure::Output)?;
        return Err(Failure::Usage(
            "this stops Kubernetes and etcd on every member: add --yes to carry the plan out"
                .into(),
        ));
    }
    for n in &p.notes {
        eprintln!("NOTE: {n}");
    }
    let mut etcd = EtcdSettings::resolve(&args.etcd, &config.etcd)?;
    etcd.endpoints = settings
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    let source = match point_source {
        Some(s) => s,
        None => restore_source(
            &args.plan.backup,
            &args.plan.storage,
            &args.identity,
            config,
            &rt,
            &backup.id,
        )?,
    };
    let runner = Runner {
        settings,
        etcd,
        source,
        stop: tokio_util::sync::CancellationToken::new(),
    };
    let from = if args.resume {
        1
    } else {
        args.from_step.unwrap_or(1)
    };
    // SIGTERM or Ctrl-C: the running actions are stopped, the journal written, and the
    // run ends non-zero, saying how to resume.
    let report = rt
        .block_on(async {
            tokio::spawn(super::cancel_on_signal(runner.stop.clone()));
            tokio::task::yield_now().await;
            runner.run(&p, &journal_path, journal, from).await
        })
        .map_err(|e| Failure::Restore(e.to_string()))?;
    match cli.write_out {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::json!({"backup": p.backup, "report": report})
        ),
        _ => writeln!(
            out,
            "restored {} on {} members: cluster {}, revision {}, hashkv {}, {} keys; {} Kubernetes resource/namespace groups differ from the snapshot",
            p.backup.id,
            runner.settings.members.len(),
            report.cluster_id.as_deref().unwrap_or("?"),
            report.revision.unwrap_or(0),
            report.hashkv.map_or("?".into(), |h| h.to_string()),
            report.keys.unwrap_or(0),
            report.object_differences.len()
        ),
    }
    .map_err(Failure::Output)
}

/// The drill's binaries and scratch space: flags, else `[drill]`, else the PATH.
pub(super) fn drill_options(
    c: &crate::config::DrillConfig,
    config: &Config,
    etcd: Option<&Path>,
    etcdutl: Option<&Path>,
    scratch: Option<&Path>,
) -> Result<crate::restore::drill::DrillOptions, Failure> {
    use crate::restore::find_on_path;
    let missing = |what: &str| {
        Failure::Usage(format!(
            "{what} not found on the PATH: give --{what} or [drill] {what}"
        ))
    };
    Ok(crate::restore::drill::DrillOptions {
        etcd: match etcd
            .map(Path::to_path_buf)
            .or_else(|| c.etcd_binary.clone())
        {
            Some(p) => p,
            None => find_on_path(&["etcd"]).ok_or_else(|| missing("etcd-binary"))?,
        },
        etcdutl: match etcdutl.map(Path::to_path_buf).or_else(|| c.etcdutl.clone()) {
            Some(p) => p,
            None => find_on_path(&["etcdutl", "etcdctl"]).ok_or_else(|| missing("etcdutl"))?,
        },
        scratch: scratch
            .map(Path::to_path_buf)
            .or_else(|| config.backup.spool_dir.clone())
            .unwrap_or_else(std::env::temp_dir),
        timeout: Duration::from_secs(60),
    })
}

/// The replay's options: the drill's binaries and scratch space, and two knobs from the
/// environment, for tests and diagnosis: `LIFEBOAT_REPLAY_METHOD=grpc` replays one
/// transaction at a time over gRPC instead of through the WAL, and
/// `LIFEBOAT_REPLAY_BATCH=N` puts at most N entries into the WAL per start of the
/// scratch member.
pub(super) fn replay_options(
    d: crate::restore::drill::DrillOptions,
) -> Result<crate::changes::replay::ReplayOptions, Failure> {
    use crate::changes::replay::{Method, ReplayOptions};
    let mut o = ReplayOptions::from(d);
    match std::env::var("LIFEBOAT_REPLAY_METHOD").as_deref() {
        Err(_) | Ok("" | "auto") => {}
        Ok("grpc") => o.method = Method::Grpc,
        Ok(other) => {
            return Err(Failure::Usage(format!(
                "LIFEBOAT_REPLAY_METHOD={other}: give auto or grpc"
            )));
        }
    }
    if let Ok(n) = std::env::var("LIFEBOAT_REPLAY_BATCH") {
        o.wal_batch.entries = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            Failure::Usage(format!(
                "LIFEBOAT_REPLAY_BATCH={n}: give a number of entries above 0"
            ))
        })?;
    }
    Ok(o)
}

/// A snapshot file, or a backup in the storage with what it takes to fetch it.
fn restore_source(
    which: &str,
    storage: &StorageArgs,
    identity: &IdentityArgs,
    config: &Config,
    rt: &tokio::runtime::Runtime,
    id: &str,
) -> Result<crate::restore::run::Source, Failure> {
    use crate::restore::run::Source;
    let path = std::path::Path::new(which);
    if path.is_file() {
        return Ok(Source::File(path.to_path_buf()));
    }
    let repo = open_repository(storage, config)?;
    let manifest = rt.block_on(repo.manifest(id))?;
    Ok(Source::Stored {
        repo,
        manifest: Box::new(manifest),
        identities: identities(identity, config)?,
    })
}

/// `restore drill`.
pub(super) fn drill(
    cli: &Cli,
    args: &RestoreDrillArgs,
    config: &Config,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    use crate::restore::drill;
    let rt = runtime()?;
    let options = drill_options(
        &config.drill,
        config,
        args.etcd_binary.as_deref(),
        args.etcdutl.as_deref(),
        args.scratch_dir.as_deref(),
    )?;
    if args.chain {
        return prove_chain(cli, args, config, out, &rt, options);
    }
    // A point in time is replayed into a private directory below the scratch space.
    let point_dir =
        crate::restore::drill::Scratch::create(&options.scratch).map_err(Failure::Restore)?;
    let (backup, source) =
        match point_backup(&args.plan, config, &args.identity, &rt, &point_dir.0, true)? {
            Some((b, Some(s))) => (b, s),
            _ => {
                let backup =
                    restore_backup_ref(&args.plan.backup, &args.plan.storage, config, &rt)?;
                let source = restore_source(
                    &args.plan.backup,
                    &args.plan.storage,
                    &args.identity,
                    config,
                    &rt,
                    &backup.id,
                )?;
                (backup, source)
            }
        };
    let etcd = EtcdSettings::resolve(&args.etcd, &config.etcd)?;
    let report = rt
        .block_on(drill::drill(&source, &backup, &etcd, &options))
        .map_err(|e| Failure::Restore(format!("drill of {}: {e}", backup.id)))?;
    match cli.write_out {
        Format::Json => writeln!(out, "{}", serde_json::json!(report)),
        _ => writeln!(
            out,
            "drill of {} passed: restored with {} into a single-member etcd, revision {}, {} keys, hashkv {} as in the snapshot ({:.1} s)",
            report.backup,
            options.etcdutl.display(),
            report.revision,
            report.keys,
            report.hash_kv,
            report.seconds
        ),
    }
    .map_err(Failure::Output)
}

/// The backup a restore uses: a snapshot file, or a backup in the storage.
fn restore_backup_ref(
    which: &str,
    storage: &StorageArgs,
    config: &Config,
    rt: &tokio::runtime::Runtime,
) -> Result<crate::restore::plan::BackupRef, Failure> {
    let path = std::path::Path::new(which);
    if path.is_file() {
        let status = snapshot::scan_status(
            path,
            ScanOptions {
                verify_trailer: true,
            },
        )?;
        return Ok(crate::restore::plan::BackupRef {
            // The operator's file name, made a plain word: it names files on the members.
            id: crate::restore::names::file_word(
                &path
                    .file_stem()
                    .map_or("snapshot".into(), |s| s.to_string_lossy().into_owned()),
            ),
            revision: status.revision,
            total_key: status.total_key,
            live_keys: status.live_keys,
            members: status.members.clone(),
            db_size: status.total_size,
            etcd_version: "unknown (a snapshot file)".into(),
            bundle_files: Vec::new(),
        });
    }
    let repo = open_repository(storage, config)?;
    let m = rt.block_on(repo.manifest(which))?;
    // Storage is untrusted: the id names the journal, the fetched file and files on every
    // member, and appears in their commands.
    crate::restore::names::check_backup_id(&m.id)
        .map_err(|e| Failure::Restore(format!("backup {which:?}: {e}")))?;
    let bundle_files = bundle_files(&m);
    Ok(crate::restore::plan::BackupRef {
        id: m.id,
        revision: m.revision,
        total_key: m.total_key,
        live_keys: m.live_keys,
        members: m.members.clone(),
        db_size: m.db_size,
        etcd_version: m.etcd_version,
        bundle_files,
    })
}

/// The paths of a backup's bundle files (checked by `Manifest::validate`).
fn bundle_files(m: &crate::repository::Manifest) -> Vec<String> {
    m.bundle
        .iter()
        .flat_map(|b| b.files.iter().map(|f| f.path.clone()))
        .collect()
}

/// `restore drill --chain`: the chain proof.
fn prove_chain(
    cli: &Cli,
    args: &RestoreDrillArgs,
    config: &Config,
    out: &mut dyn Write,
    rt: &tokio::runtime::Runtime,
    d: crate::restore::drill::DrillOptions,
) -> Result<(), Failure> {
    let repo = open_repository(&args.plan.storage, config)?;
    let ids = super::identities(&args.identity, config)?;
    let to = rt.block_on(repo.manifest(&args.plan.backup))?;
    let from = rt
        .block_on(crate::changes::proof::previous_in_chain(&repo, &to))
        .map_err(Failure::Replay)?;
    let o = replay_options(d)?;
    let r = rt
        .block_on(crate::changes::proof::prove(
            &repo,
            (&from, &to),
            ids.as_ref(),
            &o,
        ))
        .map_err(|e| Failure::Restore(format!("chain proof: {e}")))?;
    match cli.write_out {
        Format::Json => writeln!(out, "{}", serde_json::json!(r)),
        _ => writeln!(
            out,
            "chain proof passed: backup {} + {} revisions of the change log = backup {} at revision {} ({} keys equal{}; {:.1} s)",
            r.from_backup,
            r.revisions_replayed,
            r.to_backup,
            r.revision,
            r.keys_compared,
            r.hash_kv.map(|h| format!(", hashkv {h}")).unwrap_or_else(|| ", hashkv not comparable: the compaction revisions differ".into()),
            r.seconds
        ),
    }
    .map_err(Failure::Output)
}
