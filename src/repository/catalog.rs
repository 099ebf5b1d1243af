//! What is in storage, read as untrusted input: which backups can be restored, which
//! manifests have lost their data, which are refused.
//!
//! A backup exists only when its manifest *and* its data object exist. Three listings
//! decide it without trusting any name: the manifest file names (each must be a backup
//! id), the data objects (with their sizes), and for each manifest read, its checks
//! ([`Manifest::validate`]: the id equals its file name, the data key is the one the id
//! implies, and so on). Retention, `latest`, `/readyz` and the metrics only ever see
//! [`State::Restorable`] backups.
//!
//! Manifests never change once written, so a [`Repository`] keeps those it has read
//! (keyed by location, size and modification time): the daemon re-reads the storage
//! every few seconds without a GET per backup.

use std::collections::HashMap;

use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStoreExt};

use super::manifest::check_id;
use super::{Manifest, RepoError, Repository};

/// One manifest file found in storage and what it is worth.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The id its file name carries (for a refused name: the file name itself).
    pub id: String,
    pub state: State,
}

#[derive(Debug, Clone)]
pub enum State {
    /// Manifest valid, data object present with the recorded size.
    Restorable { manifest: Box<Manifest> },
    /// Manifest valid but its data object is missing or has another size: cannot be
    /// restored. Reported, never counted, never deleted by retention.
    NoData {
        manifest: Box<Manifest>,
        problem: String,
    },
    /// Not a manifest lifeboat will act on (unreadable, malformed, failing its checks):
    /// reported by name, never used, never deleted.
    Refused { problem: String },
}

impl Entry {
    /// As `list -w json` prints it: the manifest's fields (when it has one) plus `state`
    /// and, unless restorable, `problem`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = match self.manifest().map(serde_json::to_value) {
            Some(Ok(serde_json::Value::Object(map))) => map,
            _ => {
                let mut map = serde_json::Map::new();
                map.insert("id".into(), self.id.clone().into());
                map
            }
        };
        v.insert("state".into(), self.state_name().into());
        if let Some(p) = self.problem() {
            v.insert("problem".into(), p.into());
        }
        serde_json::Value::Object(v)
    }

    pub fn restorable(&self) -> Option<&Manifest> {
        match &self.state {
            State::Restorable { manifest } => Some(manifest),
            _ => None,
        }
    }
    pub fn manifest(&self) -> Option<&Manifest> {
        match &self.state {
            State::Restorable { manifest } | State::NoData { manifest, .. } => Some(manifest),
            State::Refused { .. } => None,
        }
    }
    pub fn problem(&self) -> Option<&str> {
        match &self.state {
            State::Restorable { .. } => None,
            State::NoData { problem, .. } | State::Refused { problem } => Some(problem),
        }
    }
    /// `restorable`, `no-data` or `refused`, as `list` prints it.
    pub fn state_name(&self) -> &'static str {
        match &self.state {
            State::Restorable { .. } => "restorable",
            State::NoData { .. } => "no-data",
            State::Refused { .. } => "refused",
        }
    }
}

/// The newest restorable backup, and the newer manifests passed over on the way.
#[derive(Debug, Clone)]
pub struct Latest {
    pub manifest: Manifest,
    pub passed_over: Vec<Entry>,
}

/// The names in storage: manifest files (newest first) and data objects.
pub(crate) struct Listing {
    /// (file name without `.json`, its metadata), newest id first.
    pub manifests: Vec<(String, ObjectMeta)>,
    /// Data objects by key relative to the cluster's directory.
    pub data: HashMap<String, ObjectMeta>,
}

/// Manifests already read and checked, by location, size and modification time.
pub(crate) type ManifestCache =
    std::sync::Mutex<HashMap<String, (u64, i64, Result<Manifest, String>)>>;

impl Repository {
    pub(crate) async fn listing(&self) -> Result<Listing, RepoError> {
        let list = |dir: &'static str, what: &'static str| {
            let prefix = self.path(dir);
            async move {
                self.store
                    .list(Some(&prefix))
                    .try_collect::<Vec<ObjectMeta>>()
                    .await
                    .map_err(|e| self.access_error(what, e))
            }
        };
        let (manifests, data) = futures::try_join!(
            list("manifests", "listing backups"),
            list("snapshots", "listing data objects")
        )?;
        let mut manifests: Vec<(String, ObjectMeta)> = manifests
            .into_iter()
            .filter_map(|m| {
                let key = self.relative_key(&m.location)?;
                let name = key.strip_prefix("manifests/")?;
                // Deeper paths and other suffixes are not manifests of ours.
                if name.contains('/') {
                    return None;
                }
                let id = name.strip_suffix(".json")?.to_owned();
                Some((id, m))
            })
            .collect();
        manifests.sort_by(|a, b| b.0.cmp(&a.0));
        // Forget manifests that are gone (pruned), so a daemon's cache stays the size of
        // the storage, not of every backup it ever saw.
        if let Ok(mut cache) = self.manifests.lock() {
            let present: std::collections::HashSet<String> = manifests
                .iter()
                .map(|(_, m)| m.location.to_string())
                .collect();
            cache.retain(|key, _| present.contains(key));
        }
        let data = data
            .into_iter()
            .filter_map(|m| Some((self.relative_key(&m.location)?, m)))
            .collect();
        Ok(Listing { manifests, data })
    }

    /// Reads and checks one manifest (cached). `Err(problem)` says why it is refused;
    /// storage that does not answer is the outer error.
    pub(crate) async fn read_checked(
        &self,
        id: &str,
        meta: &ObjectMeta,
    ) -> Result<Result<Manifest, String>, RepoError> {
        let key = meta.location.to_string();
        let stamp = meta.last_modified.timestamp_millis();
        if let Ok(cache) = self.manifests.lock()
            && let Some((size, modified, read)) = cache.get(&key)
            && *size == meta.size
            && *modified == stamp
        {
            return Ok(read.clone());
        }
        let read = if let Err(problem) = check_id(id) {
            Err(format!("file name: {problem}"))
        } else if meta.size > MAX_MANIFEST_BYTES {
            Err(format!(
                "{} bytes is too large for a manifest (at most {MAX_MANIFEST_BYTES})",
                meta.size
            ))
        } else {
            let bytes = async { self.store.get(&meta.location).await?.bytes().await }
                .await
                .map_err(|e| self.access_error(&format!("reading {}", meta.location), e))?;
            Manifest::from_json(&bytes).and_then(|m| m.validate(id, &self.cluster).map(|()| m))
        };
        if let Ok(mut cache) = self.manifests.lock() {
            cache.insert(key, (meta.size, stamp, read.clone()));
        }
        Ok(read)
    }

    /// The state of one manifest file, given the data objects listed.
    async fn entry(
        &self,
        id: &str,
        meta: &ObjectMeta,
        data: &HashMap<String, ObjectMeta>,
    ) -> Result<Entry, RepoError> {
        let state = match self.read_checked(id, meta).await? {
            Err(problem) => State::Refused { problem },
            Ok(m) => match data.get(&m.object.key) {
                None => State::NoData {
                    problem: format!("its data object {} is missing", m.object.key),
                    manifest: Box::new(m),
                },
                Some(d) if d.size != m.object.size => State::NoData {
                    problem: format!(
                        "its data object {} has {} bytes, the manifest says {}",
                        m.object.key, d.size, m.object.size
                    ),
                    manifest: Box::new(m),
                },
                Some(_) => State::Restorable {
                    manifest: Box::new(m),
                },
            },
        };
        Ok(Entry {
            id: id.to_owned(),
            state,
        })
    }

    /// Every manifest file, newest first, each with its state.
    pub async fn catalog(&self) -> Result<Vec<Entry>, RepoError> {
        Ok(self.catalog_and_data().await?.0)
    }

    /// [`Repository::catalog`], and the data objects listed on the way (for prune, so
    /// the data directory is listed once).
    pub(crate) async fn catalog_and_data(
        &self,
    ) -> Result<(Vec<Entry>, HashMap<String, ObjectMeta>), RepoError> {
        let listing = self.listing().await?;
        let mut out = Vec::with_capacity(listing.manifests.len());
        for (id, meta) in &listing.manifests {
            out.push(self.entry(id, meta, &listing.data).await?);
        }
        Ok((out, listing.data))
    }

    /// The newest backup that can be restored. Newer manifests that cannot (no data,
    /// refused) are returned too, so the caller can warn about them by name. Reads
    /// manifests newest first and stops at the first restorable one.
    pub async fn latest(&self) -> Result<Latest, RepoError> {
        let listing = self.listing().await?;
        let mut passed_over = Vec::new();
        for (id, meta) in &listing.manifests {
            let entry = self.entry(id, meta, &listing.data).await?;
            if let Some(m) = entry.restorable() {
                for skipped in &passed_over {
                    let skipped: &Entry = skipped;
                    tracing::warn!(
                        id = %skipped.id,
                        problem = skipped.problem().unwrap_or_default(),
                        "a newer backup cannot be restored; `latest` is {}", m.id
                    );
                }
                return Ok(Latest {
                    manifest: m.clone(),
                    passed_over,
                });
            }
            passed_over.push(entry);
        }
        Err(RepoError::NoRestorableBackup {
            url: self.url.clone(),
            cluster: self.cluster.clone(),
            passed_over: passed_over
                .iter()
                .map(|e| format!("{}: {}", e.id, e.problem().unwrap_or_default()))
                .collect(),
        })
    }
}

/// Manifests are about 1.5 KiB; anything far larger is not one (and is not read).
const MAX_MANIFEST_BYTES: u64 = 1 << 20;
