//! Replaying over gRPC, one transaction per revision: the fallback when the restored
//! member's WAL is not in the layout the WAL replay knows, and the continuation after a
//! revision too large for the scratch etcd to read back from its WAL. Each recorded
//! lease is granted with its ID and TTL before its first key and kept alive; each
//! revision is one `Txn` of its events in order (each op in its own nested `Txn` when a
//! key repeats), and the header revision of every answer must be exactly the next one.
//! One round trip per revision: about 2,000 revisions/s on a small machine.

use std::collections::HashSet;

use etcd_client::{LeaseGrantOptions, PutOptions, Txn, TxnOp};

use super::revisions::Revisions;
use super::scratch::{self, Running};
use super::segment::EventKind;

/// Applies the rest of `log` to the running member; returns how many revisions.
pub(crate) async fn replay(running: &mut Running, log: &mut Revisions<'_>) -> Result<u64, String> {
    let mut expect = log.taken();
    let now = scratch::revision(&mut running.client).await?;
    if now != expect {
        return Err(format!(
            "the scratch member is at revision {now}, the replay at {expect}: the change log and the backup disagree"
        ));
    }
    let leases = running
        .client
        .leases()
        .await
        .map_err(|e| format!("listing the scratch member's leases: {e}"))?;
    let mut granted: HashSet<i64> = leases.leases().iter().map(|l| l.id()).collect();
    let mut replayed = 0u64;
    while let Some(r) = log.next().await? {
        let (revision, events) = (r.revision, r.events);
        for e in events
            .iter()
            .filter(|e| e.kind == EventKind::Put && e.lease != 0)
        {
            if granted.insert(e.lease) {
                running
                    .client
                    .lease_grant(
                        log.ttl(e.lease),
                        Some(LeaseGrantOptions::new().with_id(e.lease)),
                    )
                    .await
                    .map_err(|err| {
                        format!(
                            "granting lease {:x} before revision {revision}: {err}",
                            e.lease
                        )
                    })?;
                running.keep_alive(e.lease);
            }
        }
        let mut seen = HashSet::new();
        let repeats = events.iter().any(|e| !seen.insert(e.key.as_slice()));
        let ops: Vec<TxnOp> = events
            .iter()
            .map(|e| {
                let op = match e.kind {
                    EventKind::Put => TxnOp::put(
                        e.key.clone(),
                        e.value.clone(),
                        (e.lease != 0).then(|| PutOptions::new().with_lease(e.lease)),
                    ),
                    EventKind::Delete => TxnOp::delete(e.key.clone(), None),
                };
                // A key twice in one revision (sibling nested transactions): each op
                // in its own nested transaction, as the original was.
                if repeats {
                    TxnOp::txn(Txn::new().and_then(vec![op]))
                } else {
                    op
                }
            })
            .collect();
        let resp = running
            .client
            .kv_client()
            .max_decoding_message_size(usize::MAX)
            .txn(Txn::new().and_then(ops))
            .await
            .map_err(|e| format!("replaying revision {revision}: {e}"))?;
        let got = resp.header().map(|h| h.revision()).unwrap_or(0);
        expect += 1;
        if got != revision || got != expect {
            return Err(format!(
                "replaying revision {revision} left the scratch member at revision {got}: the change log and the backup disagree, or something else wrote to it"
            ));
        }
        replayed += 1;
    }
    Ok(replayed)
}
