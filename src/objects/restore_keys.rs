//! `lifeboat restore keys`: selected keys of a backup written back into a live etcd,
//! byte for byte, without ever destroying what is there.
//!
//! Each key is one transaction. By default it compares `create_revision == 0` (the key
//! does not exist) and only then puts: a key created meanwhile, by anyone, is kept.
//! With `overwrite`, a key whose value differs is replaced by a second transaction that
//! compares the `mod_revision` just read, so a write that lands in between is kept too.
//! Nothing is ever deleted. Keys go in dependency order ([`super::order`]).

use std::collections::HashSet;
use std::path::Path;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use serde::Serialize;

use super::kube;
use super::order;
use super::select::{DEFAULT_PREFIX, Place, Selection, place_under};
use super::view::{self, KeyRange, ReadError};
use crate::etcd::describe;
use crate::snapshot::ScanOptions;

/// Which keys: a raw prefix, or Kubernetes objects.
#[derive(Debug, Clone)]
pub enum Target {
    Prefix(Vec<u8>),
    Objects(Selection),
}

/// One key to write, as the backup holds it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub place: Option<Place>,
    pub encrypted: Option<String>,
    /// Owner uids of the object, and its own uid, when its value could be read.
    pub uid: Option<String>,
    pub owners: Vec<(String, String)>,
}

/// The selected keys of the snapshot at `path`, in the order they are written.
pub fn plan(path: &Path, scan: ScanOptions, target: &Target) -> Result<Vec<Planned>, ReadError> {
    let (range, selection) = match target {
        Target::Prefix(p) => (KeyRange::prefix(p), None),
        Target::Objects(s) => (s.range(), Some(s)),
    };
    let v = view::read(path, scan, &range, None, &mut |kv| {
        let place = match selection {
            Some(s) => Some(s.place(kv.key)?),
            None => place_under(DEFAULT_PREFIX.as_bytes(), kv.key),
        };
        // Only the metadata that the summary's warnings need.
        let inspected = kube::inspect(kv.key, kv.value, None);
        let (uid, owners) = match &inspected.object {
            Ok(m) => (
                Some(m.uid.clone()),
                m.owner_references
                    .iter()
                    .map(|o| (format!("{}/{}", o.kind, o.name), o.uid.clone()))
                    .collect(),
            ),
            Err(_) => (None, Vec::new()),
        };
        Some(Planned {
            key: Vec::new(),
            value: kv.value.to_vec(),
            lease: kv.lease,
            place,
            encrypted: inspected
                .encryption
                .map(|e| format!("{}:{}", e.provider, e.key)),
            uid,
            owners,
        })
    })?;
    let mut planned: Vec<Planned> = v
        .keys
        .into_iter()
        .map(|(key, p)| Planned { key, ..p })
        .collect();
    // Stable: within a rank, key order.
    planned.sort_by_key(|p| order::rank(p.place.as_ref()));
    Ok(planned)
}

/// What happened (or, in a dry run, would happen) to one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It did not exist: written.
    Written,
    /// It existed with another value: replaced (`--overwrite`).
    Overwritten,
    /// It exists with the backup's value already.
    SkippedSame,
    /// It exists with another value and `--overwrite` was not given.
    SkippedExists,
    /// It was written by someone else while we restored: kept as they wrote it.
    SkippedConcurrent,
}

impl Outcome {
    pub fn describe(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Outcome::Written, false) => "written",
            (Outcome::Written, true) => "would write",
            (Outcome::Overwritten, false) => "overwritten",
            (Outcome::Overwritten, true) => "would overwrite",
            (Outcome::SkippedSame, _) => "skipped: the live value is the backup's",
            (Outcome::SkippedExists, _) => {
                "skipped: exists live with another value (--overwrite replaces it)"
            }
            (Outcome::SkippedConcurrent, _) => {
                "skipped: written by someone else during the restore, kept"
            }
        }
    }

    pub fn writes(self) -> bool {
        matches!(self, Outcome::Written | Outcome::Overwritten)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyOutcome {
    pub key: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<std::sync::Arc<str>>,
    /// The backup's lease, which is not restored.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_lease: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub dry_run: bool,
    pub keys: Vec<KeyOutcome>,
    pub written: usize,
    pub overwritten: usize,
    pub skipped: usize,
    /// Providers and key names of encrypted values written (or to be written).
    pub encrypted: Vec<String>,
    /// Objects whose owner (kind/name, uid) is neither restored now nor live.
    pub unresolved_owners: Vec<(String, String, String)>,
}

/// Writes the planned keys through `client` (or, with `dry_run`, reads what is there and
/// says what it would do).
pub async fn restore(
    client: &mut Client,
    planned: &[Planned],
    overwrite: bool,
    dry_run: bool,
) -> Result<Summary, String> {
    let mut keys = Vec::with_capacity(planned.len());
    for p in planned {
        let outcome = if dry_run {
            would(client, p, overwrite).await?
        } else {
            write(client, p, overwrite).await?
        };
        keys.push(KeyOutcome {
            key: String::from_utf8_lossy(&p.key).into_owned(),
            outcome,
            resource: p.place.as_ref().map(|pl| pl.resource.clone()),
            dropped_lease: if outcome.writes() { p.lease } else { 0 },
        });
    }
    let count = |o: Outcome| keys.iter().filter(|k| k.outcome == o).count();
    let mut encrypted: Vec<String> = planned
        .iter()
        .zip(&keys)
        .filter(|(_, k)| k.outcome.writes())
        .filter_map(|(p, _)| p.encrypted.clone())
        .collect();
    encrypted.sort();
    encrypted.dedup();
    let unresolved_owners = unresolved_owners(client, planned).await?;
    Ok(Summary {
        dry_run,
        written: count(Outcome::Written),
        overwritten: count(Outcome::Overwritten),
        skipped: keys.len() - count(Outcome::Written) - count(Outcome::Overwritten),
        keys,
        encrypted,
        unresolved_owners,
    })
}

async fn current(client: &mut Client, key: &[u8]) -> Result<Option<(Vec<u8>, i64)>, String> {
    let resp = client
        .get(key, None)
        .await
        .map_err(|e| format!("reading {}: {}", key.escape_ascii(), describe(&e)))?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
}

async fn would(client: &mut Client, p: &Planned, overwrite: bool) -> Result<Outcome, String> {
    Ok(match current(client, &p.key).await? {
        None => Outcome::Written,
        Some((v, _)) if v == p.value => Outcome::SkippedSame,
        Some(_) if overwrite => Outcome::Overwritten,
        Some(_) => Outcome::SkippedExists,
    })
}

async fn write(client: &mut Client, p: &Planned, overwrite: bool) -> Result<Outcome, String> {
    let key = p.key.as_slice();
    let fail = |e: etcd_client::Error| format!("writing {}: {}", key.escape_ascii(), describe(&e));
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, p.value.as_slice(), None)])
        .or_else([TxnOp::get(key, None)]);
    let resp = client.txn(txn).await.map_err(fail)?;
    if resp.succeeded() {
        return Ok(Outcome::Written);
    }
    let Some((live, mod_revision)) = got(resp.op_responses()) else {
        // Deleted between the compare and the read: someone is writing it; keep out.
        return Ok(Outcome::SkippedConcurrent);
    };
    if live == p.value {
        return Ok(Outcome::SkippedSame);
    }
    if !overwrite {
        return Ok(Outcome::SkippedExists);
    }
    let txn = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
        .and_then([TxnOp::put(key, p.value.as_slice(), None)]);
    let resp = client.txn(txn).await.map_err(fail)?;
    Ok(if resp.succeeded() {
        Outcome::Overwritten
    } else {
        Outcome::SkippedConcurrent
    })
}

fn got(responses: Vec<TxnOpResponse>) -> Option<(Vec<u8>, i64)> {
    responses.into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())),
        _ => None,
    })
}

/// Objects whose owners (by uid) are neither restored now nor live. An owner is
/// looked for among the planned objects, then among the live objects of the namespaces
/// of the objects that have owners (owners are in the same namespace, or cluster-scoped
/// and then usually planned too).
async fn unresolved_owners(
    client: &mut Client,
    planned: &[Planned],
) -> Result<Vec<(String, String, String)>, String> {
    let mut known: HashSet<String> = planned.iter().filter_map(|p| p.uid.clone()).collect();
    let mut namespaces: Vec<&str> = planned
        .iter()
        .filter(|p| !p.owners.is_empty())
        .filter_map(|p| p.place.as_ref()?.namespace.as_deref())
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let missing = planned
        .iter()
        .flat_map(|p| &p.owners)
        .any(|(_, uid)| !known.contains(uid));
    if missing {
        for ns in namespaces {
            let selection = Selection::new(None, Some(ns.to_owned()), None, None);
            let (live, _) = super::live::list(client, "the live cluster", &selection, None).await?;
            known.extend(
                live.objects
                    .into_iter()
                    .filter_map(|o| o.object.map(|m| m.uid)),
            );
        }
    }
    Ok(planned
        .iter()
        .flat_map(|p| {
            p.owners
                .iter()
                .filter(|(_, uid)| !known.contains(uid))
                .map(|(owner, uid)| {
                    (
                        String::from_utf8_lossy(&p.key).into_owned(),
                        owner.clone(),
                        uid.clone(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect())
}
