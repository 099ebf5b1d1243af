//! Retention of the change log: a segment is kept while a kept backup needs it, that is
//! while it holds revisions after the earliest kept backup of its chain. Everything else
//! goes, manifest first, then data (as for backups: a prune cut short leaves at worst a
//! data object without its manifest, which no reader uses).

use serde::Serialize;

use super::store::{self, Listed, SegmentManifest};
use crate::repository::{Manifest, RepoError, Repository};

/// A segment no kept backup needs.
#[derive(Debug, Clone, Serialize)]
pub struct Unneeded {
    pub key: String,
    pub last_seen: String,
    pub why: String,
    #[serde(skip)]
    manifest: Box<SegmentManifest>,
}

/// Decides which segments go, given the backups that stay (restorable ones).
pub async fn plan(repo: &Repository, kept: &[Manifest]) -> Result<Vec<Unneeded>, RepoError> {
    let mut out = Vec::new();
    for l in store::list_segments(repo, None).await? {
        let Listed::Segment(m) = l else { continue }; // refused ones are never touched
        // The earliest kept backup this chain can restore from.
        let first = kept
            .iter()
            .filter(|b| b.cluster_id == m.cluster_id && b.store_revision() >= m.base_revision)
            .map(Manifest::store_revision)
            .min();
        let why = match first {
            None => Some(format!(
                "no kept backup of cluster {} at or after the chain's start (revision {})",
                m.cluster_id, m.base_revision
            )),
            Some(r) if m.to_revision < r || (m.to_revision == r && m.from_revision < r) => {
                Some(format!(
                    "its revisions are before the earliest kept backup of the chain (revision {r})"
                ))
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            out.push(Unneeded {
                key: store::manifest_key(&m.chain, m.from_revision, m.to_revision, &m.writer),
                last_seen: m.last_seen.clone(),
                why,
                manifest: m,
            });
        }
    }
    Ok(out)
}

/// Deletes them: manifest first, then data. Returns the manifest keys deleted.
pub async fn execute(repo: &Repository, plan: &[Unneeded]) -> Result<Vec<String>, RepoError> {
    let mut done = Vec::new();
    for u in plan {
        repo.delete(&u.key).await?;
        repo.delete(&u.manifest.object.key).await?;
        done.push(u.key.clone());
    }
    if !done.is_empty() {
        tracing::info!(segments = done.len(), "change-log segments pruned");
    }
    Ok(done)
}
