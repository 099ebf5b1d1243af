//! What the daemon knows about its own work and about the storage, rendered in the
//! Prometheus text format for `/metrics`. Names are documented in docs/operations.md.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::backup::BackupError;

/// Why a backup failed, as the `reason` label says it.
pub fn failure_reason(e: &BackupError) -> &'static str {
    match e {
        _ if e.is_config() => "config",
        BackupError::Etcd(_) => "etcd",
        BackupError::Repo(_) | BackupError::Upload { .. } => "storage",
        BackupError::Verify { .. } | BackupError::Snapshot { .. } => "verify",
        BackupError::Spool { .. } => "spool",
        BackupError::Compress(_) => "compress",
        BackupError::Cancelled => "cancelled",
        BackupError::Bundle(_) => "config",
        BackupError::NotCommitted { source, .. } => failure_reason(source),
    }
}

/// The newest backup the storage holds, as last read.
#[derive(Debug, Clone, PartialEq)]
pub struct Newest {
    pub id: String,
    pub finished_at: DateTime<Utc>,
    pub revision: i64,
}

#[derive(Debug, Default)]
struct Data {
    leader: bool,
    backup_last_attempt: Option<DateTime<Utc>>,
    backup_last_attempt_ok: Option<bool>,
    backup_last_success: Option<DateTime<Utc>>,
    backup_last_duration: f64,
    backup_last_db_bytes: u64,
    backup_last_stored_bytes: u64,
    backup_last_revision: i64,
    backups_total: u64,
    failures: BTreeMap<&'static str, u64>,
    retries_total: u64,
    skipped: BTreeMap<&'static str, u64>,
    pruned: BTreeMap<&'static str, u64>,
    verify_last_attempt: Option<DateTime<Utc>>,
    verify_last_ok: Option<bool>,
    verify_last_success: Option<DateTime<Utc>>,
    drill_last_attempt: Option<DateTime<Utc>>,
    drill_last_ok: Option<bool>,
    drill_last_success: Option<DateTime<Utc>>,
    drill_last_duration: f64,
    storage_backups: Option<usize>,
    storage_newest: Option<Newest>,
    changes: Option<Changes>,
}

/// The change log's state, when it is enabled.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub recording: bool,
    pub durable_revision: i64,
    /// When the last durable record was seen (ms since the epoch); 0: none yet.
    pub durable_seen_ms: i64,
    pub flush_seconds: f64,
    pub flushes_total: u64,
    pub flush_failures_total: u64,
    pub chain_breaks_total: u64,
    /// Sealed segments waiting for the storage: bytes in memory, in spool files.
    pub buffered_memory_bytes: u64,
    pub buffered_spool_bytes: u64,
    /// Why the chain is broken, until a new one runs.
    pub broken: Option<String>,
    /// The last chain proof's outcome (`[changes] prove-backups`).
    pub proof_ok: Option<bool>,
    pub proof_failures_total: u64,
    pub proof_seconds: f64,
    /// The last passed proof's replay rate.
    pub proof_replay_rate: f64,
}

/// Shared by the jobs (which record) and the HTTP endpoint (which reads).
#[derive(Debug, Default)]
pub struct Metrics {
    data: Mutex<Data>,
}

impl crate::changes::recorder::Observer for Metrics {
    fn durable(&self, revision: i64, seen_ms: i64, flush_seconds: f64) {
        self.with_changes(|c| {
            c.durable_revision = revision;
            if seen_ms > 0 {
                c.durable_seen_ms = seen_ms;
            }
            c.flush_seconds = flush_seconds;
            c.flushes_total += 1;
        });
    }
    fn flush_failed(&self) {
        self.with_changes(|c| c.flush_failures_total += 1);
    }
    fn buffered(&self, memory_bytes: u64, spool_bytes: u64) {
        self.with_changes(|c| {
            c.buffered_memory_bytes = memory_bytes;
            c.buffered_spool_bytes = spool_bytes;
        });
    }
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Data) -> R) -> R {
        let mut guard = self.data.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn set_leader(&self, leader: bool) {
        self.with(|d| d.leader = leader);
    }

    pub fn backup_attempt(&self, at: DateTime<Utc>) {
        self.with(|d| d.backup_last_attempt = Some(at));
    }

    pub fn backup_succeeded(&self, report: &crate::backup::BackupReport) {
        let m = &report.manifest;
        self.with(|d| {
            d.backup_last_attempt_ok = Some(true);
            d.backup_last_success = Some(Utc::now());
            d.backup_last_duration = report.duration.as_secs_f64();
            d.backup_last_db_bytes = m.db_size;
            d.backup_last_stored_bytes = m.object.size;
            d.backup_last_revision = m.revision;
            d.backups_total += 1;
        });
    }

    pub fn backup_failed(&self, reason: &'static str) {
        self.with(|d| {
            d.backup_last_attempt_ok = Some(false);
            *d.failures.entry(reason).or_default() += 1;
        });
    }

    pub fn retried(&self) {
        self.with(|d| d.retries_total += 1);
    }

    pub fn skipped(&self, job: &'static str) {
        self.with(|d| *d.skipped.entry(job).or_default() += 1);
    }

    pub fn pruned(&self, backups: usize, leftovers: usize) {
        self.with(|d| {
            *d.pruned.entry("backup").or_default() += backups as u64;
            *d.pruned.entry("leftover").or_default() += leftovers as u64;
        });
    }

    /// A scheduled verify ended (`ok` or not); its time tells a failed verify from none.
    pub fn verified(&self, ok: bool) {
        self.with(|d| {
            d.verify_last_attempt = Some(Utc::now());
            d.verify_last_ok = Some(ok);
            if ok {
                d.verify_last_success = Some(Utc::now());
            }
        });
    }

    /// A scheduled drill ended (`ok` or not), after `seconds`.
    pub fn drilled(&self, ok: bool, seconds: f64) {
        self.with(|d| {
            d.drill_last_attempt = Some(Utc::now());
            d.drill_last_ok = Some(ok);
            if ok {
                d.drill_last_success = Some(Utc::now());
                d.drill_last_duration = seconds;
            }
        });
    }

    pub fn storage_seen(&self, count: usize, newest: Option<Newest>) {
        self.with(|d| {
            d.storage_backups = Some(count);
            d.storage_newest = newest;
        });
    }

    /// The change log is enabled: its metrics are rendered and `/readyz` looks at it.
    pub fn changes_enabled(&self) {
        self.with(|d| {
            d.changes.get_or_insert_with(Changes::default);
        });
    }

    pub fn changes(&self) -> Option<Changes> {
        self.with(|d| d.changes.clone())
    }

    pub fn with_changes(&self, f: impl FnOnce(&mut Changes)) {
        self.with(|d| f(d.changes.get_or_insert_with(Changes::default)));
    }

    pub fn newest(&self) -> Option<Newest> {
        self.with(|d| d.storage_newest.clone())
    }

    /// The Prometheus text exposition.
    pub fn render(&self, now: DateTime<Utc>) -> String {
        self.with(|d| {
            let mut out = String::new();
            let mut gauge = |name: &str, help: &str, value: String| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
            };
            let ts = |t: Option<DateTime<Utc>>| t.map_or("0".to_owned(), |t| secs(t).to_string());
            gauge("lifeboat_leader", "1 if this instance takes the scheduled backups.", u8::from(d.leader).to_string());
            gauge("lifeboat_backup_last_attempt_timestamp_seconds", "When this instance last started a backup.", ts(d.backup_last_attempt));
            gauge("lifeboat_backup_last_attempt_success", "1 if the last backup attempt succeeded, 0 if it failed.", d.backup_last_attempt_ok.map_or("0".into(), |ok| u8::from(ok).to_string()));
            gauge("lifeboat_backup_last_success_timestamp_seconds", "When this instance last committed a backup.", ts(d.backup_last_success));
            gauge("lifeboat_backup_last_duration_seconds", "Duration of the last successful backup.", format!("{:.3}", d.backup_last_duration));
            gauge("lifeboat_backup_last_db_bytes", "Snapshot size of the last successful backup.", d.backup_last_db_bytes.to_string());
            gauge("lifeboat_backup_last_stored_bytes", "Stored (compressed, encrypted) size of the last successful backup.", d.backup_last_stored_bytes.to_string());
            gauge("lifeboat_backup_last_revision", "etcd revision of the last successful backup.", d.backup_last_revision.to_string());
            gauge("lifeboat_storage_backups", "Backups in storage (manifests), as last read.", d.storage_backups.unwrap_or(0).to_string());
            let newest = d.storage_newest.as_ref();
            gauge("lifeboat_storage_newest_backup_timestamp_seconds", "When the newest backup in storage finished.", ts(newest.map(|n| n.finished_at)));
            gauge("lifeboat_storage_newest_backup_age_seconds", "Age of the newest backup in storage (0 when there is none).", newest.map_or("0".into(), |n| format!("{:.3}", age(n.finished_at, now))));
            gauge("lifeboat_storage_newest_backup_revision", "etcd revision of the newest backup in storage.", newest.map_or("0".into(), |n| n.revision.to_string()));
            gauge("lifeboat_verify_last_attempt_timestamp_seconds", "When the last scheduled verify of this instance ended (0: none yet).", ts(d.verify_last_attempt));
            gauge("lifeboat_verify_last_attempt_success", "1 if the last scheduled verify succeeded, 0 if it failed.", d.verify_last_ok.map_or("0".into(), |ok| u8::from(ok).to_string()));
            gauge("lifeboat_verify_last_success_timestamp_seconds", "When the last scheduled verify succeeded.", ts(d.verify_last_success));
            gauge("lifeboat_drill_last_attempt_timestamp_seconds", "When the last scheduled restore drill of this instance ended (0: none yet).", ts(d.drill_last_attempt));
            gauge("lifeboat_drill_last_attempt_success", "1 if the last scheduled restore drill succeeded, 0 if it failed.", d.drill_last_ok.map_or("0".into(), |ok| u8::from(ok).to_string()));
            gauge("lifeboat_drill_last_success_timestamp_seconds", "When the last scheduled restore drill succeeded.", ts(d.drill_last_success));
            gauge("lifeboat_drill_last_duration_seconds", "Duration of the last successful restore drill.", format!("{:.3}", d.drill_last_duration));

            let mut counter = |name: &str, help: &str, label: Option<(&str, &[&'static str], &BTreeMap<&'static str, u64>)>, value: u64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                match label {
                    None => { let _ = writeln!(out, "{name} {value}"); }
                    Some((key, values, map)) => {
                        for v in values {
                            let _ = writeln!(out, "{name}{{{key}=\"{v}\"}} {}", map.get(v).copied().unwrap_or(0));
                        }
                    }
                }
            };
            counter("lifeboat_backups_total", "Backups committed by this instance.", None, d.backups_total);
            counter("lifeboat_backup_failures_total", "Failed backup attempts, by reason.", Some(("reason", &["etcd", "storage", "verify", "spool", "compress", "config", "cancelled"], &d.failures)), 0);
            counter("lifeboat_backup_retries_total", "Retries of failed backups.", None, d.retries_total);
            counter("lifeboat_skipped_ticks_total", "Ticks skipped because the previous run of the job was still going.", Some(("task", &["backup", "verify", "drill"], &d.skipped)), 0);
            counter("lifeboat_prune_deleted_total", "Objects deleted by prune: whole backups, and leftovers of failed runs.", Some(("kind", &["backup", "leftover"], &d.pruned)), 0);
            if let Some(c) = &d.changes {
                let age = if c.durable_seen_ms > 0 {
                    format!("{:.3}", ((now.timestamp_millis() - c.durable_seen_ms).max(0)) as f64 / 1000.0)
                } else {
                    "0".into()
                };
                let _ = writeln!(out, "# HELP lifeboat_changes_recording 1 if this instance records the change log now.\n# TYPE lifeboat_changes_recording gauge\nlifeboat_changes_recording {}", u8::from(c.recording));
                let _ = writeln!(out, "# HELP lifeboat_changes_durable_revision The last revision durable in the change log.\n# TYPE lifeboat_changes_durable_revision gauge\nlifeboat_changes_durable_revision {}", c.durable_revision);
                let _ = writeln!(out, "# HELP lifeboat_changes_durable_age_seconds Age of the last durable record of the change log: the current RPO (0 before the first).\n# TYPE lifeboat_changes_durable_age_seconds gauge\nlifeboat_changes_durable_age_seconds {age}");
                let _ = writeln!(out, "# HELP lifeboat_changes_flush_seconds Duration of the last segment write.\n# TYPE lifeboat_changes_flush_seconds gauge\nlifeboat_changes_flush_seconds {:.3}", c.flush_seconds);
                let _ = writeln!(out, "# HELP lifeboat_changes_buffered_bytes Sealed change-log segments waiting for the storage, in memory (up to [changes] max-buffer-bytes), then in spool files (up to max-spool-bytes).\n# TYPE lifeboat_changes_buffered_bytes gauge\nlifeboat_changes_buffered_bytes{{where=\"memory\"}} {}\nlifeboat_changes_buffered_bytes{{where=\"spool\"}} {}", c.buffered_memory_bytes, c.buffered_spool_bytes);
                let _ = writeln!(out, "# HELP lifeboat_changes_broken 1 while the change log is broken and no new chain runs yet.\n# TYPE lifeboat_changes_broken gauge\nlifeboat_changes_broken {}", u8::from(c.broken.is_some()));
                let _ = writeln!(out, "# HELP lifeboat_changes_segments_total Segments written by this instance.\n# TYPE lifeboat_changes_segments_total counter\nlifeboat_changes_segments_total {}", c.flushes_total);
                let _ = writeln!(out, "# HELP lifeboat_changes_flush_failures_total Failed segment writes (retried).\n# TYPE lifeboat_changes_flush_failures_total counter\nlifeboat_changes_flush_failures_total {}", c.flush_failures_total);
                let _ = writeln!(out, "# HELP lifeboat_changes_proof_last_success 1 if the last chain proof passed, 0 if it failed or none ran.\n# TYPE lifeboat_changes_proof_last_success gauge\nlifeboat_changes_proof_last_success {}", u8::from(c.proof_ok == Some(true)));
                let _ = writeln!(out, "# HELP lifeboat_changes_proof_last_duration_seconds Duration of the last passed chain proof.\n# TYPE lifeboat_changes_proof_last_duration_seconds gauge\nlifeboat_changes_proof_last_duration_seconds {:.3}", c.proof_seconds);
                let _ = writeln!(out, "# HELP lifeboat_changes_proof_replay_revisions_per_second Revisions per second the last passed chain proof replayed (0 before one).\n# TYPE lifeboat_changes_proof_replay_revisions_per_second gauge\nlifeboat_changes_proof_replay_revisions_per_second {:.1}", c.proof_replay_rate);
                let _ = writeln!(out, "# HELP lifeboat_changes_proof_failures_total Chain proofs that failed: the change log and a full backup disagree.\n# TYPE lifeboat_changes_proof_failures_total counter\nlifeboat_changes_proof_failures_total {}", c.proof_failures_total);
                let _ = writeln!(out, "# HELP lifeboat_changes_chain_breaks_total Chains of the change log that broke (a gap, a compaction past the recorder, a storage outage too long).\n# TYPE lifeboat_changes_chain_breaks_total counter\nlifeboat_changes_chain_breaks_total {}", c.chain_breaks_total);
            }
            let _ = writeln!(out, "# HELP lifeboat_build_info The lifeboat version.\n# TYPE lifeboat_build_info gauge\nlifeboat_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
            out
        })
    }
}

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Seconds from `t` to `now`, never negative.
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    ((now - t).num_milliseconds().max(0)) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_once_with_its_type() {
        let m = Metrics::default();
        m.skipped("backup");
        m.skipped("backup");
        m.backup_failed("etcd");
        m.storage_seen(
            3,
            Some(Newest {
                id: "x".into(),
                finished_at: DateTime::from_timestamp(1_000, 0).unwrap(),
                revision: 42,
            }),
        );
        m.changes_enabled();
        crate::changes::recorder::Observer::buffered(&m, 5, 7);
        let text = m.render(DateTime::from_timestamp(1_060, 0).unwrap());
        assert!(text.contains("lifeboat_changes_buffered_bytes{where=\"memory\"} 5\n"));
        assert!(text.contains("lifeboat_changes_buffered_bytes{where=\"spool\"} 7\n"));
        assert!(
            text.contains("lifeboat_skipped_ticks_total{task=\"backup\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("lifeboat_skipped_ticks_total{task=\"verify\"} 0\n"));
        assert!(text.contains("lifeboat_backup_failures_total{reason=\"etcd\"} 1\n"));
        assert!(text.contains("lifeboat_storage_newest_backup_age_seconds 60.000\n"));
        assert!(text.contains("lifeboat_storage_newest_backup_revision 42\n"));
        assert!(text.contains("lifeboat_storage_backups 3\n"));
        // Before a verify or drill ran, "failed" and "none yet" both read 0: the
        // attempt's time tells them apart.
        assert!(text.contains("lifeboat_verify_last_attempt_timestamp_seconds 0\n"));
        assert!(text.contains("lifeboat_verify_last_attempt_success 0\n"));
        m.verified(false);
        m.drilled(false, 0.0);
        let text = m.render(DateTime::from_timestamp(1_060, 0).unwrap());
        for name in [
            "lifeboat_verify_last_attempt_timestamp_seconds",
            "lifeboat_drill_last_attempt_timestamp_seconds",
        ] {
            let value: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} not rendered: {text}"));
            assert!(value > 1e9, "{name} {value}: not the time of the attempt");
        }
        assert!(text.contains("lifeboat_verify_last_success_timestamp_seconds 0\n"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
    }
}
