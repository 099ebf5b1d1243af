//! Leader election through etcd itself, so that of several daemons (one per control-plane
//! node) exactly one takes the scheduled backups.
//!
//! Each daemon holds a lease with a TTL and campaigns on `/lifeboat/leader/<cluster>`
//! (etcd's election API, the same one `etcdctl elect` uses). The winner keeps its lease
//! alive; if it dies, the lease expires after the TTL and the next campaigner wins.
//! A daemon counts itself leader only while its keep-alives are answered: it gives up
//! leadership after two thirds of the TTL without an answer, before etcd can expire the
//! lease and elect someone else, so two daemons never both believe they lead.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, LeaderKey, ResignOptions};
use tokio_util::sync::CancellationToken;

use crate::etcd::{self, EtcdSettings};

/// Whether this daemon leads, shared with the scheduler and the metrics.
///
/// Each term of leadership has its own cancellation token, a child of the daemon's
/// shutdown token: every job started as leader runs under it, so losing leadership (the
/// lease expired, was revoked, keep-alives went unanswered) cancels the running backup,
/// prune, verify and drill through their normal failure paths at once, not at the next
/// tick.
#[derive(Debug, Clone)]
pub struct Leadership {
    term: Arc<Mutex<Option<CancellationToken>>>,
    parent: CancellationToken,
}

impl Leadership {
    /// Always leader (election switched off, a single daemon), until `shutdown`.
    pub fn always(shutdown: &CancellationToken) -> Leadership {
        let l = Leadership::not_yet(shutdown);
        l.set(true);
        l
    }

    fn not_yet(shutdown: &CancellationToken) -> Leadership {
        Leadership {
            term: Arc::new(Mutex::new(None)),
            parent: shutdown.clone(),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.term().is_some()
    }

    /// The current term's token while this daemon leads: cancelled when it stops
    /// leading or shuts down.
    pub fn term(&self) -> Option<CancellationToken> {
        let term = self.term.lock().unwrap_or_else(|e| e.into_inner());
        term.as_ref().filter(|t| !t.is_cancelled()).cloned()
    }

    fn set(&self, leader: bool) {
        let mut term = self.term.lock().unwrap_or_else(|e| e.into_inner());
        match (leader, term.as_ref()) {
            (true, Some(t)) if !t.is_cancelled() => {}
            (true, _) => *term = Some(self.parent.child_token()),
            (false, _) => {
                if let Some(t) = term.take() {
                    t.cancel();
                }
            }
        }
    }
}

/// The lease TTL etcd is asked for: whole seconds, rounded up, so the server never
/// expires the lease before the client's own deadline (two thirds of `ttl`) has passed.
pub fn server_ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// How long after the last keep-alive was *sent* (etcd renews the lease when it
/// receives it, which is later) this daemon still counts itself leader.
pub fn give_up_after(ttl: Duration) -> Duration {
    ttl * 2 / 3
}

/// Starts campaigning in the background. The task ends, resigning if it leads, when
/// `shutdown` is cancelled.
pub fn spawn(
    settings: EtcdSettings,
    name: String,
    ttl: Duration,
    shutdown: CancellationToken,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let leadership = Leadership::not_yet(&shutdown);
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
    let ttl_secs = server_ttl_secs(ttl);
    let granted_at = Instant::now();
    let lease = client
        .lease_grant(ttl_secs, None)
        .await
        .map_err(|e| format!("granting a lease at {endpoint}: {}", etcd::describe(&e)))?
        .id();
    let lost = CancellationToken::new();
    let keeper = tokio::spawn(keep_alive(
        client.clone(),
        lease,
        ttl,
        granted_at,
        lost.clone(),
    ));

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
            tracing::warn!("leadership lost: the election lease expired, was revoked, or its keep-alives went unanswered; running jobs are cancelled");
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
/// TTL passed since the last keep-alive that etcd answered was sent, or when etcd says
/// the lease is gone (expired or revoked).
async fn keep_alive(
    mut client: Client,
    lease: i64,
    ttl: Duration,
    granted_at: Instant,
    lost: CancellationToken,
) {
    let give_up = give_up_after(ttl);
    let mut renewed_at = granted_at;
    let mut channel = None;
    loop {
        let left = give_up.saturating_sub(renewed_at.elapsed());
        if left.is_zero() {
            lost.cancel();
            return;
        }
        if channel.is_none() {
            channel = tokio::time::timeout(left, client.lease_keep_alive(lease))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some((keeper, stream)) = channel.as_mut() {
            let sent = Instant::now();
            let round = async {
                keeper.keep_alive().await.ok()?;
                stream.message().await.ok().flatten()
            };
            let wait = (ttl / 3).min(give_up.saturating_sub(renewed_at.elapsed()));
            match tokio::time::timeout(wait, round).await {
                Ok(Some(resp)) if resp.ttl() > 0 => renewed_at = sent,
                Ok(Some(_)) => {
                    // TTL 0: etcd already expired or revoked the lease.
                    lost.cancel();
                    return;
                }
                _ => channel = None,
            }
        }
        let since = renewed_at.elapsed();
        let pause = (ttl / 3).saturating_sub(since.min(ttl / 3));
        let pause = pause.min(give_up.saturating_sub(since));
        tokio::time::sleep(pause.max(Duration::from_millis(50))).await;
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

pub(super) fn hostname() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(text.trim().to_owned()).filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_gives_up_before_the_server_expires_the_lease() {
        for ms in [2000u64, 2001, 2500, 2999, 3000, 14_500, 15_000, 60_000] {
            let ttl = Duration::from_millis(ms);
            let server = Duration::from_secs(u64::try_from(server_ttl_secs(ttl)).unwrap());
            assert!(
                server >= ttl,
                "{ms} ms: server TTL {server:?} below the configured TTL"
            );
            assert!(
                give_up_after(ttl) * 3 / 2 <= server,
                "{ms} ms: the client keeps leading until {:?}, the server expires at {server:?}",
                give_up_after(ttl)
            );
        }
    }

    #[test]
    fn losing_leadership_cancels_the_term() {
        let shutdown = CancellationToken::new();
        let l = Leadership::not_yet(&shutdown);
        assert!(l.term().is_none());
        l.set(true);
        let term = l.term().unwrap();
        l.set(true);
        assert!(
            !term.is_cancelled(),
            "re-asserting leadership keeps the term"
        );
        l.set(false);
        assert!(term.is_cancelled() && !l.is_leader());
        l.set(true);
        let next = l.term().unwrap();
        shutdown.cancel();
        assert!(
            next.is_cancelled() && !l.is_leader(),
            "shutdown ends the term"
        );
    }
}
