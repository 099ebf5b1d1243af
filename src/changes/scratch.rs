//! The scratch member a replay drives: restored once from the base backup, then started,
//! connected, stopped cleanly and started again as often as the replay needs (the WAL
//! replay appends between two runs). While it serves, every lease it holds is kept alive,
//! so none expires and deletes keys of its own.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};

use crate::restore::drill::{Restored, ScratchMember, log_tail};

pub(crate) struct Member<'a> {
    spec: ScratchMember<'a>,
    restored: Restored,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
    /// How many times etcd was started on it.
    pub starts: u32,
}

/// The member while it serves: a client, and the keep-alives of its leases.
pub(crate) struct Running {
    pub client: Client,
    pub url: String,
    alive: KeepAlive,
}

impl Running {
    /// Keeps lease `id` alive from now on.
    pub fn keep_alive(&mut self, id: i64) {
        self.alive.start(&self.client, id);
    }
}

impl<'a> Member<'a> {
    /// Restores `snapshot` into `dir` with the real `etcdutl`; nothing runs yet.
    pub async fn restore(
        spec: ScratchMember<'a>,
        snapshot: &Path,
        dir: &Path,
    ) -> Result<Member<'a>, String> {
        let restored = spec.restore(snapshot, dir).await?;
        Ok(Member {
            spec,
            restored,
            dir: dir.to_path_buf(),
            child: None,
            starts: 0,
        })
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.restored.data.join("member").join("wal")
    }

    pub fn db(&self) -> PathBuf {
        self.restored.data.join("member").join("snap").join("db")
    }

    pub fn etcd(&self) -> &Path {
        self.spec.etcd
    }

    /// Starts etcd (with `more` flags) and waits up to `limit` until it answers; then
    /// keeps every lease it holds alive, at once: a lease's clock starts when the member
    /// becomes leader, TTL plus election timeout before it would expire.
    pub async fn start(&mut self, more: &[&str], limit: Duration) -> Result<Running, String> {
        if self.child.is_some() {
            return Err("the scratch member is already running".into());
        }
        let mut child = self.spec.run(&self.restored, &self.dir, more)?;
        self.starts += 1;
        let url = self.restored.client_url.clone();
        let deadline = Instant::now() + limit;
        let client = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the scratch etcd exited ({status}) while starting; its log: {}",
                    log_tail(&self.dir)
                ));
            }
            let attempt = async {
                let mut c = Client::connect([url.as_str()], None).await?;
                c.status().await?;
                Ok::<_, etcd_client::Error>(c)
            };
            match attempt.await {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    let _ = child.start_kill();
                    return Err(format!(
                        "the scratch etcd did not answer within {limit:?}: {e}; its log: {}",
                        log_tail(&self.dir)
                    ));
                }
            }
        };
        self.child = Some(child);
        let mut running = Running {
            client,
            url,
            alive: KeepAlive::default(),
        };
        let leases = running
            .client
            .leases()
            .await
            .map_err(|e| format!("listing the scratch member's leases: {e}"))?;
        for l in leases.leases() {
            running.keep_alive(l.id());
        }
        Ok(running)
    }

    /// Stops etcd cleanly (SIGTERM: it closes its WAL and database) and waits for it to
    /// exit, so its files can be read and appended to.
    pub async fn stop(&mut self, running: Running, limit: Duration) -> Result<(), String> {
        drop(running);
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("waiting for the scratch etcd to stop: {e}")),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(format!(
                    "the scratch etcd did not stop within {limit:?} of SIGTERM; its log: {}",
                    log_tail(&self.dir)
                ))
            }
        }
    }

    /// Kills etcd if it runs (the end of a replay: only its snapshot is kept).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    /// What etcd logged about requests it did not apply ("failed to apply request"):
    /// how many, and their distinct errors (it skips such an entry, with no revision).
    pub fn apply_failures(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).ok()?;
        let mut count = 0usize;
        let mut errors: Vec<String> = Vec::new();
        for line in log
            .lines()
            .filter(|l| l.contains("failed to apply request"))
        {
            count += 1;
            let error = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "no error given".into());
            if errors.len() < 5 && !errors.contains(&error) {
                errors.push(error);
            }
        }
        (count > 0).then(|| {
            format!(
                "etcd logged {count} request(s) it did not apply: {}",
                errors.join("; ")
            )
        })
    }
}

/// The member's revision, read linearizably: every entry committed before the read has
/// been applied when it answers.
pub(crate) async fn revision(client: &mut Client) -> Result<i64, String> {
    let r = client
        .get("/", Some(GetOptions::new().with_count_only()))
        .await
        .map_err(|e| format!("reading the scratch member's revision: {e}"))?;
    r.header()
        .map(|h| h.revision())
        .ok_or_else(|| "the scratch member answered without a header".into())
}

/// Keep-alive tasks, one per lease, aborted on drop.
#[derive(Default)]
struct KeepAlive {
    tasks: Vec<tokio_util::task::AbortOnDropHandle<()>>,
}

impl KeepAlive {
    fn start(&mut self, client: &Client, id: i64) {
        let mut c = client.clone();
        self.tasks
            .push(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                async move {
                    let Ok((mut keeper, mut stream)) = c.lease_keep_alive(id).await else {
                        return;
                    };
                    loop {
                        if keeper.keep_alive().await.is_err() || stream.message().await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
            )));
    }
}
