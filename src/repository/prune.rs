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
    /// Manifests that are not restorable backups (no data, refused), with the reason:
    /// reported, never touched.
    pub dangling: Vec<String>,
    #[serde(skip)]
    manifests: Vec<Manifest>,
}

impl Plan {
    pub fn deletions(&self) -> usize {
        self.decisions.iter().filter(|d| !d.keep).count()
    }

    /// The restorable backups this plan keeps.
    pub fn kept(&self) -> Vec<Manifest> {
        self.manifests
            .iter()
            .filter(|m| self.decisions.iter().any(|d| d.keep && d.id == m.id))
            .cloned()
            .collect()
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

/// Reads the storage and decides; changes nothing. Only restorable backups (manifest
/// valid and data present) take part in retention, so a manifest without data can never
/// take the "newest" protection or a `keep-last` slot from a backup that can be restored.
/// Manifests without data and refused manifests are reported and never touched; a data
/// object is a leftover only when no manifest file name (valid or not) implies its key.
pub async fn plan(
    repo: &Repository,
    policy: &Policy,
    grace: Duration,
    now: DateTime<Utc>,
) -> Result<Plan, RepoError> {
    let (entries, objects) = repo.catalog_and_data().await?;
    let manifests: Vec<Manifest> = entries
        .iter()
        .filter_map(|e| e.restorable().cloned())
        .collect();
    let mut candidates = Vec::with_capacity(manifests.len());
    for m in &manifests {
        // validate() checked started_at already.
        let Some(time) = taken_at(m) else { continue };
        candidates.push(Candidate {
            id: m.id.clone(),
            time,
        });
    }
    let decisions = retention::decide(&candidates, policy, now);

    // Every key any manifest file could stand for, whatever its state.
    let mut named: HashSet<String> = HashSet::new();
    for e in &entries {
        named.insert(Repository::data_key(&e.id, false));
        named.insert(Repository::data_key(&e.id, true));
        named.insert(Repository::bundle_key(&e.id));
        if let Some(m) = e.manifest() {
            named.insert(m.object.key.clone());
        }
    }
    // A grace too large to subtract keeps every leftover.
    let cutoff = chrono::Duration::from_std(grace)
        .ok()
        .and_then(|g| now.checked_sub_signed(g))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut leftovers = Vec::new();
    // Bundles (bundles/<id>.age) of runs that never wrote a manifest, with the data.
    let bundles: Vec<object_store::ObjectMeta> = {
        use futures::TryStreamExt;
        repo.store()
            .list(Some(&repo.path("bundles")))
            .try_collect()
            .await
            .map_err(|e| repo.access_error("listing bundles", e))?
    };
    let objects = objects.into_iter().chain(
        bundles
            .into_iter()
            .filter_map(|m| Some((repo.relative_key(&m.location)?, m))),
    );
    for (key, meta) in objects {
        if named.contains(key.as_str()) {
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
    leftovers.sort_by(|a, b| a.key.cmp(&b.key));
    if let Some(dir) = repo.local_snapshots_dir() {
        leftovers.extend(staged_uploads(&dir, cutoff));
    }
    let dangling = entries
        .iter()
        .filter(|e| e.restorable().is_none())
        .map(|e| {
            format!(
                "{} ({}: {})",
                e.id,
                e.state_name(),
                e.problem().unwrap_or_default()
            )
        })
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
        if let Some(b) = &m.bundle {
            repo.delete(&b.key).await?;
        }
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
