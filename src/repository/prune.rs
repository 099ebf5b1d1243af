//! Pruning: apply the retention decision to real storage, and clean up what failed runs
//! left behind.
//!
//! Order matters for "nothing is lost" and "nothing looks valid that is not": a backup is
//! deleted manifest first, then data, so a prune cut short leaves at worst a data object
//! without a manifest, which is a leftover and removed by a later prune once it is older
//! than the grace period. A data object is only ever a leftover when no manifest names it.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;

use super::retention::{self, Candidate, Decision, Policy};
use super::{Manifest, RepoError, Repository};

/// Something a failed run left behind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leftover {
    /// Key relative to the cluster's directory (or the local staging file's path).
    pub key: String,
    pub modified: DateTime<Utc>,
    pub size: u64,
    pub what: &'static str,
    /// Set for a local staging file, which is removed directly, not through the store.
    #[serde(skip)]
    pub file: Option<std::path::PathBuf>,
}

/// What a prune will do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Every backup, newest first, with keep/delete and the reasons.
    pub decisions: Vec<Decision>,
    pub leftovers: Vec<Leftover>,
    /// Manifests whose data object is missing: reported, never touched.
    pub dangling: Vec<String>,
    #[serde(skip)]
    manifests: Vec<Manifest>,
}

impl Plan {
    pub fn deletions(&self) -> usize {
        self.decisions.iter().filter(|d| !d.keep).count()
    }
}

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    pub deleted_backups: Vec<String>,
    pub deleted_leftovers: Vec<String>,
}

/// When the backup was taken, for retention: the manifest's `started_at`.
fn taken_at(m: &Manifest) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&m.started_at)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Reads the storage and decides; changes nothing.
pub async fn plan(
    repo: &Repository,
    policy: &Policy,
    grace: Duration,
    now: DateTime<Utc>,
) -> Result<Plan, RepoError> {
    let manifests = repo.list().await?;
    let mut candidates = Vec::with_capacity(manifests.len());
    for m in &manifests {
        let Some(time) = taken_at(m) else {
            return Err(RepoError::BadManifest {
                url: repo.url().to_owned(),
                key: Repository::manifest_key(&m.id),
                reason: format!("started_at {:?} is not a RFC 3339 time", m.started_at),
            });
        };
        candidates.push(Candidate {
            id: m.id.clone(),
            time,
        });
    }
    let decisions = retention::decide(&candidates, policy, now);

    let named: HashSet<&str> = manifests.iter().map(|m| m.object.key.as_str()).collect();
    let cutoff = now - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let prefix = repo.path("snapshots");
    let objects: Vec<_> = repo
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| repo.access_error("listing data objects", e))?;
    let mut present = HashSet::new();
    let mut leftovers = Vec::new();
    for meta in objects {
        let Some(key) = repo.relative_key(&meta.location) else {
            continue;
        };
        if named.contains(key.as_str()) {
            present.insert(key);
            continue;
        }
        if meta.last_modified < cutoff {
            leftovers.push(Leftover {
                key,
                modified: meta.last_modified,
                size: meta.size,
                what: "data object without a manifest",
                file: None,
            });
        }
    }
    if let Some(dir) = repo.local_snapshots_dir() {
        leftovers.extend(staged_uploads(&dir, cutoff));
    }
    let dangling = manifests
        .iter()
        .filter(|m| !present.contains(&m.object.key))
        .map(|m| m.id.clone())
        .collect();
    Ok(Plan {
        decisions,
        leftovers,
        dangling,
        manifests,
    })
}

/// A local directory's unfinished multipart uploads: object_store stages them as
/// `<key>#<n>` files, which its listing hides.
fn staged_uploads(dir: &Path, cutoff: DateTime<Utc>) -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, suffix)) = name.rsplit_once('#') else {
            continue;
        };
        if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let Ok(modified) = meta.modified() else {
            continue;
        };
        let modified = DateTime::<Utc>::from(modified);
        if modified < cutoff {
            out.push(Leftover {
                key: format!("snapshots/{name}"),
                modified,
                size: meta.len(),
                what: "unfinished upload (staging file)",
                file: Some(entry.path()),
            });
        }
    }
    out
}

/// Carries out a plan: each deleted backup loses its manifest first, then its data;
/// then the leftovers go. Stops at the first storage error (what was done is reported
/// in the log; a later prune finishes the job).
pub async fn execute(repo: &Repository, plan: &Plan) -> Result<Outcome, RepoError> {
    let mut outcome = Outcome::default();
    for d in plan.decisions.iter().filter(|d| !d.keep) {
        let Some(m) = plan.manifests.iter().find(|m| m.id == d.id) else {
            continue;
        };
        repo.delete(&Repository::manifest_key(&m.id)).await?;
        repo.delete(&m.object.key).await?;
        tracing::info!(id = %m.id, "backup pruned");
        outcome.deleted_backups.push(m.id.clone());
    }
    for l in &plan.leftovers {
        if let Some(file) = &l.file {
            match std::fs::remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(RepoError::Access {
                        url: repo.url().to_owned(),
                        reason: format!("deleting {}: {e}", file.display()),
                    });
                }
            }
        } else {
            repo.delete(&l.key).await?;
        }
        tracing::info!(key = %l.key, what = l.what, "leftover removed");
        outcome.deleted_leftovers.push(l.key.clone());
    }
    Ok(outcome)
}
