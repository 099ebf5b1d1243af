//! Leader election through etcd itself, so that of several daemons (one per control-plane
//! node) exactly one takes the scheduled backups.
//!
//! Each daemon holds a lease with a TTL and campaigns on `/lifeboat/leader/<cluster>`
//! (etcd's election API, the same one `etcdctl elect` uses). The winner keeps its lease
//! alive; if it dies, the lease expires after the TTL and the next campaigner wins.
//! A daemon counts itself leader only while its keep-alives are answered: it gives up
//! leadership after two thirds of the TTL without an answer, before etcd can expire the
//! lease and elect someone else, so two daemons never both believe they lead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, LeaderKey, ResignOptions};
use tokio_util::sync::CancellationToken;

use crate::etcd::{self, EtcdSettings};

/// Whether this daemon leads, shared with the scheduler and the metrics.
#[derive(Debug, Clone)]
pub struct Leadership {
    flag: Arc<AtomicBool>,
}

impl Leadership {
    /// Always leader: election switched off (a single daemon).
    pub fn always() -> Leadership {
        Leadership {
            flag: Arc::new(AtomicBool::new(true)),
        }
    }

    fn not_yet() -> Leadership {
        Leadership {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    fn set(&self, leader: bool) {
        self.flag.store(leader, Ordering::SeqCst);
    }
}

/// Starts campaigning in the background. The task ends, resigning if it leads, when
/// `shutdown` is cancelled.
pub fn spawn(
    settings: EtcdSettings,
    name: String,
    ttl: Duration,
    shutdown: CancellationToken,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let leadership = Leadership::not_yet();
    let task = tokio::spawn(campaign_forever(
        settings,
        name,
        ttl,
        leadership.clone(),
        shutdown,
    ));
    (leadership, task)
}

async fn campaign_forever(
    settings: EtcdSettings,
    name: String,
    ttl: Duration,
    leadership: Leadership,
    shutdown: CancellationToken,
) {
    let me = format!(
        "{}:{}",
        hostname().unwrap_or_else(|| "unknown".into()),
        std::process::id()
    );
    let mut backoff = Duration::from_secs(1);
    while !shutdown.is_cancelled() {
        match one_term(&settings, &name, ttl, &me, &leadership, &shutdown).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(error = %e, "leader election: will try again");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => {}
                }
                backoff = (backoff * 2).min(ttl.max(Duration::from_secs(2)));
            }
        }
        leadership.set(false);
    }
}

/// One lease: campaign with it, lead while it lives. Returns when the lease is lost or
/// on shutdown (after resigning).
async fn one_term(
    settings: &EtcdSettings,
    name: &str,
    ttl: Duration,
    me: &str,
    leadership: &Leadership,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let (mut client, endpoint) = etcd::connect_any(settings)
        .await
        .map_err(|e| e.to_string())?;
    let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let lease = client
        .lease_grant(ttl_secs, None)
        .await
        .map_err(|e| format!("granting a lease at {endpoint}: {}", etcd::describe(&e)))?
        .id();
    let lost = CancellationToken::new();
    let keeper = tokio::spawn(keep_alive(client.clone(), lease, ttl, lost.clone()));

    let campaign = client.campaign(name, me, lease);
    let won = tokio::select! {
        r = campaign => r.map_err(|e| format!("campaigning at {endpoint}: {}", etcd::describe(&e))),
        () = lost.cancelled() => Err("the lease was lost while campaigning".into()),
        () = shutdown.cancelled() => Err(String::new()),
    };
    let key = match won {
        Ok(mut response) => response.take_leader(),
        Err(e) => {
            keeper.abort();
            revoke(&mut client, lease).await;
            return if e.is_empty() { Ok(()) } else { Err(e) };
        }
    };
    leadership.set(true);
    tracing::info!(instance = me, endpoint = %endpoint, "elected leader: this daemon takes the scheduled backups");

    tokio::select! {
        () = lost.cancelled() => {
            leadership.set(false);
            tracing::warn!("leadership lost: keep-alives of the election lease went unanswered");
        }
        () = shutdown.cancelled() => {
            leadership.set(false);
            resign(&mut client, key).await;
        }
    }
    keeper.abort();
    revoke(&mut client, lease).await;
    Ok(())
}

/// Keeps the lease alive every third of its TTL; cancels `lost` once two thirds of the
/// TTL passed without an answer, or when etcd says the lease is gone.
async fn keep_alive(mut client: Client, lease: i64, ttl: Duration, lost: CancellationToken) {
    let give_up = ttl * 2 / 3;
    let mut last_ok = Instant::now();
    let mut channel = None;
    loop {
        if last_ok.elapsed() >= give_up {
            lost.cancel();
            return;
        }
        if channel.is_none() {
            channel = client.lease_keep_alive(lease).await.ok();
        }
        if let Some((keeper, stream)) = channel.as_mut() {
            let round = async {
                keeper.keep_alive().await.ok()?;
                stream.message().await.ok().flatten()
            };
            match tokio::time::timeout(ttl / 3, round).await {
                Ok(Some(resp)) if resp.ttl() > 0 => last_ok = Instant::now(),
                Ok(Some(_)) => {
                    // TTL 0: etcd already expired the lease.
                    lost.cancel();
                    return;
                }
                _ => channel = None,
            }
        }
        let pause = (ttl / 3).saturating_sub(last_ok.elapsed().min(ttl / 3));
        tokio::time::sleep(pause.max(Duration::from_millis(100))).await;
    }
}

async fn resign(client: &mut Client, key: Option<LeaderKey>) {
    let Some(key) = key else { return };
    let resign = client.resign(Some(ResignOptions::new().with_leader(key)));
    match tokio::time::timeout(Duration::from_secs(2), resign).await {
        Ok(Ok(_)) => tracing::info!("resigned leadership"),
        Ok(Err(e)) => {
            tracing::warn!(error = %etcd::describe(&e), "could not resign; the lease will expire")
        }
        Err(_) => tracing::warn!("resigning timed out; the lease will expire"),
    }
}

async fn revoke(client: &mut Client, lease: i64) {
    let _ = tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await;
}

fn hostname() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(text.trim().to_owned()).filter(|h| !h.is_empty())
}
