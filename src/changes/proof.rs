//! The chain proof: replaying the change log from one full backup must give exactly the
//! next full backup. A proof replays the chain from backup A to the revision S of a later
//! backup B, starts a scratch member on the result and one on B, and compares them at
//! revision S: every key with its value, create/mod revision, version and lease, page by
//! page (never the whole keyspace in memory), and HashKV at S when both members keep the
//! same compaction revision. Reading at S makes the comparison immune to leases that
//! expire on the scratch members meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use serde::Serialize;

use super::replay::{self, ReplayOptions};
use crate::encryption::Identities;
use crate::repository::{Manifest, Repository};
use crate::restore::drill::{Scratch, ScratchMember};

#[derive(Debug, Clone, Serialize)]
pub struct ProofReport {
    pub from_backup: String,
    pub to_backup: String,
    pub revision: i64,
    pub revisions_replayed: u64,
    /// The replay's rate (docs/restore.md: the replay itself, checked).
    pub revisions_per_second: f64,
    pub keys_compared: u64,
    /// `None` when the two members keep different compaction revisions.
    pub hash_kv: Option<u32>,
    pub seconds: f64,
}

/// Proves the chain between backups `from` and `to` (same chain, `from` older).
pub async fn prove(
    repo: &Repository,
    (from, to): (&Manifest, &Manifest),
    identities: Option<&Arc<Identities>>,
    o: &ReplayOptions,
) -> Result<ProofReport, String> {
    let t0 = Instant::now();
    let s = to.store_revision();
    let plan = replay::plan_from(repo, from, s, identities.map(|a| a.as_ref())).await?;
    let scratch = Scratch::create(&o.scratch)?;
    let dir = scratch.0.clone();
    let replayed = dir.join("replayed.db");
    let report = replay::replay(repo, &plan, identities, o, &replayed).await?;
    let expected = dir.join("expected.db");
    crate::fetch::fetch(repo, to, &expected, identities)
        .await
        .map_err(|e| format!("fetching backup {}: {e}", to.id))?;
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    for d in [&dir_a, &dir_b] {
        std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let member = |name| ScratchMember {
        name,
        etcd: &o.etcd,
        etcdutl: &o.etcdutl,
        extra: &[],
    };
    let (mut a, url_a) = member("replayed").start(&replayed, &dir_a).await?;
    let (mut b, url_b) = member("expected").start(&expected, &dir_b).await?;
    let compared = compare(&url_a, &url_b, s, o.timeout).await;
    for child in [&mut a, &mut b] {
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    }
    let (keys_compared, hash_kv) = compared.map_err(|e| {
        format!(
            "the change log from backup {} to revision {s} does not give backup {}: {e}",
            from.id, to.id
        )
    })?;
    drop(scratch);
    Ok(ProofReport {
        from_backup: from.id.clone(),
        to_backup: to.id.clone(),
        revision: s,
        revisions_replayed: report.revisions,
        revisions_per_second: report.revisions_per_second,
        keys_compared,
        hash_kv,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

async fn connect(url: &str, timeout: Duration) -> Result<Client, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let mut c = Client::connect([url], None).await?;
            c.status().await?;
            Ok::<_, etcd_client::Error>(c)
        };
        match attempt.await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => return Err(format!("{url}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Compares both members' keyspaces at revision `s`, a page at a time.
async fn compare(
    url_a: &str,
    url_b: &str,
    s: i64,
    timeout: Duration,
) -> Result<(u64, Option<u32>), String> {
    let mut a = connect(url_a, timeout).await?;
    let mut b = connect(url_b, timeout).await?;
    const PAGE: i64 = 1000;
    let mut start: Vec<u8> = vec![0];
    let mut keys = 0u64;
    loop {
        let page = |c: &mut Client, from: Vec<u8>| {
            let mut c = c.kv_client().max_decoding_message_size(usize::MAX);
            async move {
                c.get(
                    from,
                    Some(
                        GetOptions::new()
                            .with_from_key()
                            .with_revision(s)
                            .with_limit(PAGE)
                            .with_sort(
                                etcd_client::SortTarget::Key,
                                etcd_client::SortOrder::Ascend,
                            ),
                    ),
                )
                .await
                .map_err(|e| e.to_string())
            }
        };
        let (pa, pb) = (
            page(&mut a, start.clone()).await?,
            page(&mut b, start.clone()).await?,
        );
        let (ka, kb) = (pa.kvs(), pb.kvs());
        for (x, y) in ka.iter().zip(kb) {
            let fields = |k: &etcd_client::KeyValue| {
                (
                    k.key().to_vec(),
                    k.value().to_vec(),
                    k.create_revision(),
                    k.mod_revision(),
                    k.version(),
                    k.lease(),
                )
            };
            if fields(x) != fields(y) {
                let key =
                    String::from_utf8_lossy(if x.key() <= y.key() { x.key() } else { y.key() })
                        .into_owned();
                return Err(format!(
                    "key {key:?} differs (replayed: mod revision {}, version {}, lease {:x}, {} value bytes; backup: mod revision {}, version {}, lease {:x}, {} value bytes)",
                    x.mod_revision(),
                    x.version(),
                    x.lease(),
                    x.value().len(),
                    y.mod_revision(),
                    y.version(),
                    y.lease(),
                    y.value().len()
                ));
            }
        }
        if ka.len() != kb.len() {
            return Err(format!(
                "after {} equal keys the replayed member has {} more keys in a page, the backup {}",
                keys + ka.len().min(kb.len()) as u64,
                ka.len(),
                kb.len()
            ));
        }
        keys += ka.len() as u64;
        match ka.last() {
            Some(last) if pa.more() || pb.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    let (ha, hb) = (
        a.hash_kv(s).await.map_err(|e| format!("hashkv: {e}"))?,
        b.hash_kv(s).await.map_err(|e| format!("hashkv: {e}"))?,
    );
    if ha.compact_version() != hb.compact_version() {
        return Ok((keys, None));
    }
    if ha.hash() != hb.hash() {
        return Err(format!(
            "HashKV at revision {s} differs: {} replayed, {} in the backup",
            ha.hash(),
            hb.hash()
        ));
    }
    Ok((keys, Some(ha.hash())))
}

/// The backup before `to` in the same chain, to prove from.
pub async fn previous_in_chain(repo: &Repository, to: &Manifest) -> Result<Manifest, String> {
    let chains = replay::chains(repo, None).await?;
    let s = to.store_revision();
    let chain = chains
        .iter()
        .find(|c| c.cluster_id == to.cluster_id && c.from_revision < s && s <= c.covered_to)
        .ok_or_else(|| format!("no change log chain covers backup {} (revision {s})", to.id))?;
    let catalog = repo.catalog().await.map_err(|e| e.to_string())?;
    catalog
        .iter()
        .filter_map(|e| e.restorable())
        .filter(|m| {
            m.cluster_id == to.cluster_id
                && m.store_revision() >= chain.from_revision
                && m.store_revision() < s
        })
        .max_by_key(|m| m.store_revision())
        .cloned()
        .ok_or_else(|| {
            format!(
                "no earlier restorable backup in the chain {} to prove from",
                chain.id
            )
        })
}
