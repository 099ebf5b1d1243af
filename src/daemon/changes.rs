//! The daemon's change-log recording: while it leads, term after term, the recorder
//! continues the newest chain (or starts one from a new full backup), a break starts a
//! new chain, and each scheduled backup can be proved against the chain before it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
/// Pause after a failed attempt to record (etcd or the storage unreachable).
const RECORD_RETRY: Duration = Duration::from_secs(5);

/// Logs why a new chain could not start yet and waits [`RECORD_RETRY`]; false when the
/// term ends first.
async fn pause_before_retry(error: &str, term: &CancellationToken) -> bool {
    tracing::warn!(error = %error, retry_in = RECORD_RETRY.as_secs(), "change log: no new chain yet; retrying");
    tokio::select! {
        () = tokio::time::sleep(RECORD_RETRY) => true,
        () = term.cancelled() => false,
    }
}

impl Jobs {
    /// Records the change log while this daemon leads, term after term.
    pub(super) async fn record_changes(self: Arc<Self>) {
        let Some(opts) = self.settings.changes.clone() else {
            return;
        };
        let writer = format!("{:08x}", backup::rand_u32());
        // Spool files of a recorder that died with its process are useless (the chain
        // continues from what is durable in storage); this one has written none yet.
        clean_spool_leftovers(&opts.spool_dir, Duration::ZERO, Leftover::Changes);
        while !self.shutdown.is_cancelled() {
            let Some(term) = self.leadership.term() else {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => continue,
                    () = self.shutdown.cancelled() => return,
                }
            };
            self.metrics.with_changes(|c| c.recording = true);
            let outcome = self.record_term(&opts, &writer, &term).await;
            self.metrics.with_changes(|c| c.recording = false);
            if let Err(e) = outcome {
                tracing::warn!(error = %e, retry_in = RECORD_RETRY.as_secs(), "change log: recording stopped; resuming from the last durable revision");
                tokio::select! {
                    () = tokio::time::sleep(RECORD_RETRY) => {}
                    () = term.cancelled() => {}
                }
            }
        }
    }

    /// One term of recording: continue the newest chain of this cluster, or start one
    /// from the newest backup (taking one when there is none); on a break, a new full
    /// backup starts a new chain. Returns when the term ends; errors are transient.
    async fn record_term(
        &self,
        opts: &crate::changes::recorder::RecorderOptions,
        writer: &str,
        term: &CancellationToken,
    ) -> Result<(), String> {
        use crate::changes::recorder::{self, Break, Resume};
        let s = &self.settings;
        let (mut client, endpoint) = crate::etcd::connect_any(&s.etcd)
            .await
            .map_err(|e| e.to_string())?;
        let status = crate::etcd::member_status(&mut client, &endpoint)
            .await
            .map_err(|e| e.to_string())?;
        let cluster_id = format!("{:x}", status.cluster_id);
        loop {
            if term.is_cancelled() {
                return Ok(());
            }
            let (chain, base_revision, position) = match self.chain_to_continue(&cluster_id).await?
            {
                Some(c) => c,
                None => {
                    let m = match s.repo.latest().await {
                        Ok(l) if l.manifest.cluster_id == cluster_id => l.manifest,
                        _ => self.backup_for_chain(term).await?,
                    };
                    self.begin_chain(&m, writer).await?;
                    (m.id.clone(), m.store_revision(), m.store_revision())
                }
            };
            let chain_writer = crate::changes::store::ChainWriter {
                cluster_id: cluster_id.clone(),
                chain: chain.clone(),
                base_revision,
                writer: writer.to_owned(),
                zstd_level: 3,
                recipients: s.backup.recipients.clone(),
            };
            self.metrics
                .with_changes(|c| c.durable_revision = c.durable_revision.max(position));
            tracing::info!(chain = %chain, from_revision = position, endpoint = %endpoint, "change log: recording");
            let resume = Resume {
                position,
                etcd_version: status.version.clone(),
            };
            let observer: Arc<dyn recorder::Observer> = self.metrics.clone();
            let result = recorder::record(
                &mut client,
                (&s.repo, &chain_writer),
                resume,
                opts,
                observer,
                term.child_token(),
            )
            .await;
            let broken = match result {
                Ok(_) => return Ok(()),
                Err(Break::Watch(reason)) => return Err(format!("the watch ended: {reason}")),
                Err(b) => b,
            };
            tracing::error!(chain = %chain, error = %broken, "change log: the chain is broken; taking a full backup to start a new one");
            self.metrics.with_changes(|c| {
                c.chain_breaks_total += 1;
                c.broken = Some(broken.to_string());
            });
            if let Some(w) = &self.settings.webhooks {
                w.chain_broken(&broken.to_string());
            }
            if !self.new_chain_after_break(writer, term).await {
                return Ok(());
            }
            self.metrics.with_changes(|c| c.broken = None);
        }
    }

    /// A full backup and a new chain from it, retried until both are done (the storage
    /// may be what broke the chain, and still be away); false when the term ends first.
    /// Until then the broken chain is not continued.
    async fn new_chain_after_break(&self, writer: &str, term: &CancellationToken) -> bool {
        let m = loop {
            match self.backup_for_chain(term).await {
                Ok(m) => break m,
                Err(e) => {
                    if !pause_before_retry(&e, term).await {
                        return false;
                    }
                }
            }
        };
        loop {
            match self.begin_chain(&m, writer).await {
                Ok(()) => return true,
                Err(e) => {
                    if !pause_before_retry(&e, term).await {
                        return false;
                    }
                }
            }
        }
    }

    /// The newest chain of this cluster in storage: (chain id, base revision, last
    /// durable revision).
    async fn chain_to_continue(
        &self,
        cluster_id: &str,
    ) -> Result<Option<(String, i64, i64)>, String> {
        use crate::changes::store::{Listed, list_segments};
        let listed = list_segments(&self.settings.repo, None)
            .await
            .map_err(|e| e.to_string())?;
        let mut best: Option<(String, i64, i64)> = None;
        for l in listed {
            match l {
                Listed::Segment(m) if m.cluster_id == cluster_id => {
                    let newer = best.as_ref().is_none_or(|(c, _, to)| {
                        (m.chain.as_str(), m.to_revision) > (c.as_str(), *to)
                    });
                    if newer {
                        best = Some((m.chain.clone(), m.base_revision, m.to_revision));
                    }
                }
                Listed::Segment(_) => {}
                Listed::Refused { key, reason } => {
                    tracing::warn!(key = %key, reason = %reason, "change log: refused a segment manifest");
                }
            }
        }
        Ok(best)
    }

    /// The chain proof for a new backup: once the change log is durable up to its
    /// revision, the backup before it plus the log must equal it.
    pub(super) async fn prove_chain(&self, m: &crate::repository::Manifest) {
        let Some(o) = &self.settings.chain_proof else {
            return;
        };
        let s = m.store_revision();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self
            .metrics
            .changes()
            .is_none_or(|c| c.durable_revision < s)
        {
            if std::time::Instant::now() > deadline {
                tracing::warn!(id = %m.id, revision = s, "chain proof skipped: the change log did not reach the backup's revision within 60 s");
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let repo = &self.settings.repo;
        let t0 = std::time::Instant::now();
        let result = async {
            let from = crate::changes::proof::previous_in_chain(repo, m).await?;
            crate::changes::proof::prove(repo, (&from, m), self.settings.identities.as_ref(), o)
                .await
        }
        .await;
        match result {
            Ok(r) => {
                self.metrics.with_changes(|c| {
                    c.proof_ok = Some(true);
                    c.proof_seconds = t0.elapsed().as_secs_f64();
                    c.proof_replay_rate = r.revisions_per_second;
                });
                tracing::info!(from = %r.from_backup, to = %r.to_backup, revisions = r.revisions_replayed, keys = r.keys_compared, "chain proof passed");
            }
            Err(e) => {
                self.metrics.with_changes(|c| {
                    c.proof_ok = Some(false);
                    c.proof_failures_total += 1;
                });
                tracing::error!(id = %m.id, error = %e, "chain proof failed");
            }
        }
    }

    /// A full backup taken for the change log, counted like a scheduled one.
    async fn backup_for_chain(
        &self,
        term: &CancellationToken,
    ) -> Result<crate::repository::Manifest, String> {
        let mut opts = self.backup_opts.clone();
        opts.cancel = term.child_token();
        self.metrics.backup_attempt(Utc::now());
        match backup::run(&self.settings.etcd, &self.settings.repo, &opts, &Silent).await {
            Ok(report) => {
                self.metrics.backup_succeeded(&report);
                self.refresh_storage().await;
                tracing::info!(id = %report.manifest.id, revision = report.manifest.revision, "change log: full backup taken to start a chain");
                Ok(report.manifest)
            }
            Err(e) => {
                self.metrics.backup_failed(metrics::failure_reason(&e));
                Err(format!("the full backup to start a chain failed: {e}"))
            }
        }
    }

    /// Writes a chain's first segment (a mark at the backup's revision), so the chain
    /// exists in storage before its first revision.
    async fn begin_chain(
        &self,
        m: &crate::repository::Manifest,
        writer: &str,
    ) -> Result<(), String> {
        let w = crate::changes::store::ChainWriter {
            cluster_id: m.cluster_id.clone(),
            chain: m.id.clone(),
            base_revision: m.store_revision(),
            writer: writer.to_owned(),
            zstd_level: 3,
            recipients: self.settings.backup.recipients.clone(),
        };
        let mark = crate::changes::segment::Record::Mark {
            seen_ms: Utc::now().timestamp_millis(),
            revision: m.store_revision(),
        };
        crate::changes::store::put_segment(
            &self.settings.repo,
            &w,
            (m.store_revision(), m.store_revision()),
            &[mark],
        )
        .await
        .map_err(|e| format!("starting a chain at backup {}: {e}", m.id))?;
        tracing::info!(chain = %m.id, revision = m.store_revision(), "change log: new chain");
        Ok(())
    }
}
