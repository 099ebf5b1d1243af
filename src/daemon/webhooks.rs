//! `[notify] webhooks`: the daemon POSTs an event to each webhook when a person should
//! know — a backup failed (after its retries), backups work again after failures, a
//! verify or a restore drill failed, the change log's chain broke.
//!
//! Delivery runs beside the jobs and never holds them up: each webhook gets a few
//! attempts, each with a timeout, backing off between them. A webhook URL often holds a
//! token (Slack's do), so it is never logged: messages name its scheme and host only,
//! and reqwest's errors are stripped of it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::config::{NotifyConfig, Webhook};
use crate::duration::parse_duration;

/// What a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    BackupFailed,
    BackupRecovered,
    VerifyFailed,
    DrillFailed,
    ChainBroken,
}

impl Kind {
    fn critical(self) -> bool {
        self != Kind::BackupRecovered
    }
}

/// The JSON body (`format = "json"`).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: Kind,
    /// `critical`, or `resolved` for a recovery.
    pub severity: &'static str,
    /// The cluster name the backups are stored under.
    pub cluster: String,
    /// The host the daemon runs on.
    pub host: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// One line for a person.
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Backup runs that failed in a row (a failure counts itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_runs: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Slack,
}

struct Target {
    url: reqwest::Url,
    /// What logs say of it: scheme and host.
    shown: String,
    format: Format,
}

/// The webhooks, and how many backup runs have failed in a row.
pub struct Webhooks {
    targets: Vec<Arc<Target>>,
    timeout: Duration,
    retries: u32,
    client: reqwest::Client,
    cluster: String,
    host: String,
    failed_runs: AtomicU32,
    /// Deliveries in flight, so that shutdown can wait for them (`flush`).
    deliveries: tokio_util::task::TaskTracker,
}

impl Webhooks {
    /// The `[notify]` webhooks (`None` when there are none); a URL that does not parse,
    /// a file that cannot be read or an unknown format is an error naming the entry.
    pub fn from_config(c: &NotifyConfig, cluster: &str) -> Result<Option<Arc<Webhooks>>, String> {
        if c.webhooks.is_empty() {
            return Ok(None);
        }
        let mut targets = Vec::new();
        for (i, w) in c.webhooks.iter().enumerate() {
            let what = format!("[notify] webhooks, entry {}", i + 1);
            targets.push(Arc::new(target(w, &what)?));
        }
        let timeout = match &c.timeout {
            None => Duration::from_secs(10),
            Some(t) => parse_duration(t).ok_or_else(|| {
                format!("[notify] timeout {t:?} is not a duration like 10s or 1m")
            })?,
        };
        if timeout.is_zero() {
            return Err("[notify] timeout must be more than 0s".into());
        }
        crate::repository::use_ring_for_http_tls();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("etcd-lifeboat/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("[notify]: the HTTP client: {}", e.without_url()))?;
        Ok(Some(Arc::new(Webhooks {
            targets,
            timeout,
            retries: c.retries.unwrap_or(3),
            client,
            cluster: cluster.to_owned(),
            host: super::election::hostname().unwrap_or_else(|| "unknown".into()),
            failed_runs: AtomicU32::new(0),
            deliveries: tokio_util::task::TaskTracker::new(),
        })))
    }

    /// A backup run failed, retries included.
    pub fn backup_failed(&self, error: &str) {
        let runs = self.failed_runs.fetch_add(1, Ordering::SeqCst) + 1;
        let mut e = self.event(
            Kind::BackupFailed,
            format!(
                "etcd backup of {} failed ({runs} run(s) in a row)",
                self.cluster
            ),
        );
        e.error = Some(error.to_owned());
        e.failed_runs = Some(runs);
        self.send(e);
    }

    /// A backup was committed: news only after failures.
    pub fn backup_succeeded(&self, id: &str) {
        let runs = self.failed_runs.swap(0, Ordering::SeqCst);
        if runs == 0 {
            return;
        }
        let mut e = self.event(
            Kind::BackupRecovered,
            format!(
                "etcd backups of {} work again: {id} after {runs} failed run(s)",
                self.cluster
            ),
        );
        e.backup = Some(id.to_owned());
        e.failed_runs = Some(runs);
        self.send(e);
    }

    pub fn verify_failed(&self, backup: Option<&str>, error: &str) {
        self.failure(
            Kind::VerifyFailed,
            "verify of the newest backup",
            backup,
            error,
        );
    }

    pub fn drill_failed(&self, backup: Option<&str>, error: &str) {
        self.failure(
            Kind::DrillFailed,
            "restore drill of the newest backup",
            backup,
            error,
        );
    }

    pub fn chain_broken(&self, reason: &str) {
        self.failure(Kind::ChainBroken, "the change log's chain", None, reason);
    }

    fn failure(&self, kind: Kind, what: &str, backup: Option<&str>, error: &str) {
        let mut e = self.event(kind, format!("{what} of {} failed", self.cluster));
        e.backup = backup.map(str::to_owned);
        e.error = Some(error.to_owned());
        self.send(e);
    }

    fn event(&self, kind: Kind, summary: String) -> Event {
        Event {
            event: kind,
            severity: if kind.critical() {
                "critical"
            } else {
                "resolved"
            },
            cluster: self.cluster.clone(),
            host: self.host.clone(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            summary,
            backup: None,
            error: None,
            failed_runs: None,
        }
    }

    /// Delivers `event` to every webhook in the background.
    fn send(&self, event: Event) {
        for t in &self.targets {
            let body = match t.format {
                Format::Json => serde_json::to_vec(&event),
                Format::Slack => serde_json::to_vec(&slack(&event)),
            };
            let Ok(body) = body else { continue };
            let (client, target, retries) = (self.client.clone(), t.clone(), self.retries);
            let timeout = self.timeout;
            self.deliveries
                .spawn(async move { deliver(&client, &target, body, retries, timeout).await });
        }
    }
}

impl Webhooks {
    /// At shutdown: waits for the deliveries still in flight (a failure told a moment
    /// before SIGTERM, a retry in its back-off) until `deadline`, and at least one
    /// `[notify] timeout`; what is still undelivered then is logged as dropped.
    pub async fn flush(&self, deadline: tokio::time::Instant) {
        self.deliveries.close();
        if self.deliveries.is_empty() {
            return;
        }
        let limit = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(self.timeout);
        tracing::info!(
            pending = self.deliveries.len(),
            wait_s = limit.as_secs(),
            "waiting for webhook deliveries before exiting"
        );
        if tokio::time::timeout(limit, self.deliveries.wait())
            .await
            .is_err()
        {
            tracing::error!(
                dropped = self.deliveries.len(),
                "webhook events still undelivered at shutdown; dropped"
            );
        }
    }
}

/// Slack's incoming-webhook body: the summary, and the error on a line of its own.
fn slack(e: &Event) -> serde_json::Value {
    let mark = if e.severity == "critical" {
        ":rotating_light:"
    } else {
        ":white_check_mark:"
    };
    let mut text = format!("{mark} {}", e.summary);
    if let Some(err) = &e.error {
        text.push_str(&format!("\n`{err}`"));
    }
    text.push_str(&format!("\n_{} on {}, {}_", "lifeboat", e.host, e.time));
    serde_json::json!({ "text": text })
}

async fn deliver(
    client: &reqwest::Client,
    t: &Target,
    body: Vec<u8>,
    retries: u32,
    timeout: Duration,
) {
    let mut delay = Duration::from_secs(1);
    for attempt in 0..=retries {
        let sent = client
            .post(t.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let problem = match sent {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(webhook = %t.shown, "event delivered");
                return;
            }
            Ok(r) => format!("answered {}", r.status()),
            Err(e) if e.is_timeout() => format!("no answer within {} s", timeout.as_secs_f64()),
            Err(e) => e.without_url().to_string(),
        };
        if attempt == retries {
            tracing::error!(webhook = %t.shown, attempts = attempt + 1, problem = %problem, "event not delivered; giving up");
            return;
        }
        tracing::warn!(webhook = %t.shown, attempt = attempt + 1, problem = %problem, retry_in = delay.as_secs(), "event not delivered");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

fn target(w: &Webhook, what: &str) -> Result<Target, String> {
    let (url, format) = match w {
        Webhook::Url(u) => (u.trim().to_owned(), None),
        Webhook::Table(t) => {
            let url = match (&t.url, &t.url_file) {
                (Some(u), None) => u.trim().to_owned(),
                (None, Some(f)) => read_url(f, what)?,
                _ => return Err(format!("{what}: give exactly one of url and url-file")),
            };
            (url, t.format.as_deref())
        }
    };
    let format = match format {
        None | Some("json") => Format::Json,
        Some("slack") => Format::Slack,
        Some(other) => {
            return Err(format!(
                "{what}: format {other:?}: use \"json\" or \"slack\""
            ));
        }
    };
    // The URL may hold a token: the error names the entry, not the URL.
    let url = reqwest::Url::parse(&url).map_err(|e| format!("{what}: not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{what}: an http:// or https:// URL with a host is needed"
        ));
    }
    let shown = match url.port() {
        Some(p) => format!("{}://{}:{p}/…", url.scheme(), url.host_str().unwrap_or("")),
        None => format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or("")),
    };
    Ok(Target { url, shown, format })
}

fn read_url(f: &Path, what: &str) -> Result<String, String> {
    let text =
        std::fs::read_to_string(f).map_err(|e| format!("{what}: url-file {}: {e}", f.display()))?;
    let url = text.trim();
    if url.is_empty() {
        return Err(format!("{what}: url-file {} is empty", f.display()));
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookTable;

    #[test]
    fn bad_entries_are_named_and_urls_never_shown() {
        let c = |w: Webhook| NotifyConfig {
            webhooks: vec![Webhook::Url("http://127.0.0.1:1/ok".into()), w],
            ..NotifyConfig::default()
        };
        let err = |w| Webhooks::from_config(&c(w), "k").err().unwrap();
        let e = err(Webhook::Url("hooks.example.com/T000/secret-token".into()));
        assert!(e.contains("entry 2") && !e.contains("secret-token"), "{e}");
        let e = err(Webhook::Url("ftp://example.com/secret-token".into()));
        assert!(e.contains("http://") && !e.contains("secret-token"), "{e}");
        let e = err(Webhook::Table(WebhookTable {
            url: Some("http://a/".into()),
            format: Some("xml".into()),
            ..WebhookTable::default()
        }));
        assert!(e.contains("\"xml\""), "{e}");
        let e = err(Webhook::Table(WebhookTable::default()));
        assert!(e.contains("exactly one of url and url-file"), "{e}");
        let e = err(Webhook::Table(WebhookTable {
            url_file: Some("/nonexistent/hook".into()),
            ..WebhookTable::default()
        }));
        assert!(e.contains("/nonexistent/hook"), "{e}");
        let t = target(
            &Webhook::Url("https://hooks.slack.com/services/T0/B0/tok".into()),
            "x",
        );
        assert_eq!(t.unwrap().shown, "https://hooks.slack.com/…");
    }

    #[test]
    fn slack_bodies_carry_the_summary_and_the_error() {
        let e = Event {
            event: Kind::BackupFailed,
            severity: "critical",
            cluster: "prod".into(),
            host: "cp-1".into(),
            time: "2026-12-02T05:00:00Z".into(),
            summary: "etcd backup of prod failed".into(),
            backup: None,
            error: Some("connection refused".into()),
            failed_runs: Some(1),
        };
        let text = slack(&e)["text"].as_str().unwrap().to_owned();
        assert!(text.contains("etcd backup of prod failed"), "{text}");
        assert!(text.contains("`connection refused`"), "{text}");
    }
}
