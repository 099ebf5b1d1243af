//! `POST /backup`: one backup now, from outside — the final snapshot before maintenance.
//! Off unless `[daemon] backup-token-file` is set; a request carries that token as a
//! bearer token. The daemon that leads takes the backup (after a scheduled one that is
//! running, if any) and answers when it is committed; another answers with who leads.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Jobs, Running, Task};
use crate::secret::Secret;

/// How a requested backup ended.
#[derive(Debug)]
pub enum Outcome {
    Committed {
        id: String,
        revision: i64,
    },
    Failed(String),
    /// This daemon does not lead; the leader's name (`host:pid`) when it is known.
    NotLeader(Option<String>),
    ShuttingDown,
}

/// What the HTTP endpoint holds: the token, and where requests go.
pub struct Trigger {
    pub token: Secret,
    pub requests: mpsc::Sender<oneshot::Sender<Outcome>>,
}

/// The token in `path` (`[daemon] backup-token-file`): its first line, at least 16
/// characters, so a guessable one is refused.
pub fn read_token(path: &std::path::Path) -> Result<Secret, String> {
    let what = format!("[daemon] backup-token-file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| format!("{what}: {e}"))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.chars().count() < 16 {
        return Err(format!(
            "{what}: the token must be at least 16 characters (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(Secret::new(token))
}

impl Trigger {
    /// Whether the `Authorization` header carries the token (compared in constant time).
    pub fn authorized(&self, header: Option<&str>) -> bool {
        let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        let (a, b) = (given.trim().as_bytes(), self.token.expose().as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

impl Jobs {
    /// Serves the requests of `POST /backup` until the daemon shuts down.
    pub(super) async fn serve_backup_requests(
        self: Arc<Self>,
        mut requests: mpsc::Receiver<oneshot::Sender<Outcome>>,
    ) {
        loop {
            let reply = tokio::select! {
                r = requests.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
                () = self.shutdown.cancelled() => return,
            };
            let me = self.clone();
            // Its own task: a client that hangs up does not cancel the backup.
            self.tracker.spawn(async move {
                let outcome = me.backup_on_request().await;
                let _ = reply.send(outcome);
            });
        }
    }

    async fn backup_on_request(&self) -> Outcome {
        if self.shutdown.is_cancelled() {
            return Outcome::ShuttingDown;
        }
        let Some(term) = self.leadership.term() else {
            return Outcome::NotLeader(self.leader_name().await);
        };
        tracing::info!("backup requested through POST /backup");
        // After the backup that is running, if one is: this one starts after the request.
        let _running = loop {
            if let Some(r) = Running::start(&self.backup_running) {
                break r;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = term.cancelled() => {
                    self.cancelled(Task::Backup);
                    return self.lost();
                }
            }
        };
        match self.backup_with_retries(&term).await {
            Ok((id, revision)) => Outcome::Committed { id, revision },
            Err(_) if term.is_cancelled() => self.lost(),
            Err(e) => Outcome::Failed(e),
        }
    }

    fn lost(&self) -> Outcome {
        if self.shutdown.is_cancelled() {
            Outcome::ShuttingDown
        } else {
            Outcome::NotLeader(None)
        }
    }

    /// The leading daemon's name, as it campaigned (`host:pid`).
    async fn leader_name(&self) -> Option<String> {
        let name = format!("/lifeboat/leader/{}", self.settings.repo.cluster());
        let (mut client, _) = crate::etcd::connect_any(&self.settings.etcd).await.ok()?;
        let r = tokio::time::timeout(Duration::from_secs(5), client.leader(name))
            .await
            .ok()?
            .ok()?;
        let kv = r.kv()?;
        Some(String::from_utf8_lossy(kv.value()).into_owned())
    }
}
