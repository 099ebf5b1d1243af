//! Where backups live: a storage URL (`file:///dir`, `s3://bucket/prefix` or
//! `az://container/prefix`, opened by [`location`]), the object layout under it, and the
//! catalog of manifests.
//!
//! ```text
//! <url>/<cluster>/manifests/<id>.json          the manifest: the backup exists iff this does
//! <url>/<cluster>/snapshots/<id>.db.zst[.age]  the data: snapshot file, zstd, maybe age
//! <url>/<cluster>/bundles/<id>.age             the restore bundle, if any: always age
//! ```

mod catalog;
mod location;
pub mod manifest;
pub mod prune;
pub mod retention;
pub mod upload;

use std::collections::HashMap;
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

pub use catalog::{Entry, Latest, State};
pub use manifest::{Manifest, StoredObject};

/// The storage default when nothing is configured.
pub const DEFAULT_URL: &str = "./lifeboat-backups";

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("storage URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("storage {url}: {reason}")]
    Access { url: String, reason: String },
    #[error("storage {url}: no backup {id:?} for cluster {cluster:?}")]
    NoSuchBackup {
        url: String,
        cluster: String,
        id: String,
    },
    #[error("storage {url}: manifest {key}: {reason}")]
    BadManifest {
        url: String,
        key: String,
        reason: String,
    },
    #[error("{0}")]
    BadId(String),
    #[error("storage {url}: backup {id} of cluster {cluster:?} cannot be used: {reason}")]
    Unusable {
        url: String,
        cluster: String,
        id: String,
        reason: String,
    },
    #[error(
        "storage {url}: cluster {cluster:?} has no backup that can be restored{}",
        if passed_over.is_empty() { String::new() } else { format!(" (passed over: {})", passed_over.join("; ")) }
    )]
    NoRestorableBackup {
        url: String,
        cluster: String,
        passed_over: Vec<String>,
    },
}

impl RepoError {
    pub fn is_config(&self) -> bool {
        matches!(self, RepoError::Url { .. } | RepoError::BadId(_))
    }
}

/// The backups of one cluster in one storage location.
#[derive(Clone)]
pub struct Repository {
    store: Arc<dyn ObjectStore>,
    /// The directory behind a file:// store, so written objects can be fsynced.
    local_dir: Option<std::path::PathBuf>,
    /// Prefix (from the URL) + cluster name.
    base: ObjectPath,
    url: String,
    cluster: String,
    /// Manifests already read and checked (see [`catalog`]).
    manifests: Arc<catalog::ManifestCache>,
}

/// Only the URL and the cluster: the store's own `Debug` would print its credentials
/// (object_store's Azure client shows an account key's bytes and a SAS token).
impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("url", &self.url)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// Opens the storage at `url` (object_store options in `options`, e.g. `endpoint`,
    /// `region`, `allow_http`, `account_name`; the AWS_* or AZURE_* variables are read
    /// too) for `cluster`.
    pub fn open(
        url: &str,
        options: &HashMap<String, String>,
        cluster: &str,
    ) -> Result<Repository, RepoError> {
        let bad = |reason: String| RepoError::Url {
            url: url.to_owned(),
            reason,
        };
        if cluster.is_empty()
            || cluster.contains('/')
            || cluster.starts_with('.')
            || cluster.chars().any(|c| c.is_control())
        {
            return Err(bad(format!(
                "cluster name {cluster:?} must be a non-empty single path segment"
            )));
        }
        let location::Opened {
            store,
            local_dir,
            prefix,
        } = location::open(url, options).map_err(bad)?;
        let base = if prefix.is_empty() {
            ObjectPath::from(cluster)
        } else {
            ObjectPath::from(format!("{prefix}/{cluster}"))
        };
        Ok(Repository {
            store,
            local_dir,
            base,
            url: url.to_owned(),
            cluster: cluster.to_owned(),
            manifests: Arc::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Full object path of a key relative to the cluster's directory.
    pub fn path(&self, key: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{key}", self.base))
    }

    /// The key (relative to the cluster's directory) of a full object path under it.
    pub fn relative_key(&self, location: &ObjectPath) -> Option<String> {
        let full = location.as_ref();
        let base = self.base.as_ref();
        full.strip_prefix(base)?
            .strip_prefix('/')
            .map(str::to_owned)
    }

    /// For a local directory: where the data objects are on disk.
    pub fn local_snapshots_dir(&self) -> Option<std::path::PathBuf> {
        let dir = self.local_dir.as_ref()?;
        Some(dir.join(self.base.as_ref()).join("snapshots"))
    }

    pub fn data_key(id: &str, encrypted: bool) -> String {
        if encrypted {
            format!("snapshots/{id}.db.zst.age")
        } else {
            format!("snapshots/{id}.db.zst")
        }
    }

    pub fn bundle_key(id: &str) -> String {
        format!("bundles/{id}.age")
    }

    pub fn manifest_key(id: &str) -> String {
        format!("manifests/{id}.json")
    }

    pub(crate) fn access_error(&self, what: &str, e: object_store::Error) -> RepoError {
        RepoError::Access {
            url: self.url.clone(),
            reason: format!("{what}: {}", explain(&e)),
        }
    }

    /// Checks that the storage answers and accepts the credentials (lists the manifests
    /// directory), so a backup fails before any snapshot is taken.
    pub async fn probe(&self) -> Result<(), RepoError> {
        let prefix = self.path("manifests");
        self.store
            .list_with_delimiter(Some(&prefix))
            .await
            .map(|_| ())
            .map_err(|e| self.access_error("listing backups", e))
    }

    /// Every manifest file, newest first, with its state (see [`catalog`]).
    pub async fn list(&self) -> Result<Vec<Entry>, RepoError> {
        self.catalog().await
    }

    /// The manifest of backup `id`, checked, with its data object present; for `latest`
    /// the newest backup that can be restored (newer ones that cannot are logged).
    pub async fn manifest(&self, id: &str) -> Result<Manifest, RepoError> {
        if id == "latest" {
            return Ok(self.latest().await?.manifest);
        }
        manifest::check_id(id).map_err(RepoError::BadId)?;
        let unusable = |reason: String| RepoError::Unusable {
            url: self.url.clone(),
            cluster: self.cluster.clone(),
            id: id.to_owned(),
            reason,
        };
        let path = self.path(&Self::manifest_key(id));
        let meta = match self.store.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => {
                return Err(RepoError::NoSuchBackup {
                    url: self.url.clone(),
                    cluster: self.cluster.clone(),
                    id: id.to_owned(),
                });
            }
            Err(e) => return Err(self.access_error(&format!("reading {path}"), e)),
            Ok(meta) => meta,
        };
        let m = self
            .read_checked(id, &meta)
            .await?
            .map_err(|reason| unusable(format!("its manifest is refused: {reason}")))?;
        match self.store.head(&self.path(&m.object.key)).await {
            Ok(d) if d.size == m.object.size => Ok(m),
            Ok(d) => Err(unusable(format!(
                "its data object {} has {} bytes, the manifest says {}",
                m.object.key, d.size, m.object.size
            ))),
            Err(object_store::Error::NotFound { .. }) => Err(unusable(format!(
                "its data object {} is missing",
                m.object.key
            ))),
            Err(e) => Err(self.access_error(&format!("reading {}", m.object.key), e)),
        }
    }

    /// Makes a written object durable: on a local directory, fsync the file and its
    /// directory (object stores acknowledge only what they have stored).
    pub async fn sync(&self, key: &str) -> Result<(), RepoError> {
        let Some(dir) = &self.local_dir else {
            return Ok(());
        };
        let file = dir.join(self.path(key).as_ref());
        let sync = move || -> std::io::Result<()> {
            std::fs::File::open(&file)?.sync_all()?;
            if let Some(parent) = file.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        };
        tokio::task::spawn_blocking(sync)
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| RepoError::Access {
                url: self.url.clone(),
                reason: format!("fsync {key}: {e}"),
            })
    }

    /// Writes a small object (a bundle) in one request, and makes it durable.
    pub async fn put_small(&self, key: &str, bytes: Vec<u8>) -> Result<(), RepoError> {
        let path = self.path(key);
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.access_error(&format!("writing {path}"), e))?;
        self.sync(key).await
    }

    /// Reads a small object whole, refusing one larger than `max` bytes.
    pub async fn get_small(&self, key: &str, max: u64) -> Result<Vec<u8>, RepoError> {
        let path = self.path(key);
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.access_error(&format!("reading {path}"), e))?;
        if got.meta.size > max {
            return Err(RepoError::Access {
                url: self.url.clone(),
                reason: format!(
                    "{key} has {} bytes, more than the {max} expected",
                    got.meta.size
                ),
            });
        }
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.access_error(&format!("reading {path}"), e))?;
        Ok(bytes.to_vec())
    }

    /// Writes the manifest: the commit point of a backup.
    pub async fn put_manifest(&self, m: &Manifest) -> Result<(), RepoError> {
        let json = serde_json::to_vec_pretty(m).map_err(|e| RepoError::BadManifest {
            url: self.url.clone(),
            key: Self::manifest_key(&m.id),
            reason: e.to_string(),
        })?;
        let path = self.path(&Self::manifest_key(&m.id));
        self.store
            .put(&path, PutPayload::from(json))
            .await
            .map_err(|e| self.access_error(&format!("writing {path}"), e))?;
        self.sync(&Self::manifest_key(&m.id)).await
    }

    /// Removes what a failed backup wrote, manifest first (so nothing looks valid even
    /// if the second delete fails), then the data object. Returns what it could not
    /// remove.
    pub async fn remove_backup(&self, id: &str, data_key: &str) -> Vec<String> {
        let mut left = Vec::new();
        for key in [Self::manifest_key(id), data_key.to_owned()] {
            if let Err(e) = self.delete(&key).await {
                left.push(format!("{key} ({e})"));
            }
        }
        left
    }

    /// Deletes an object, treating "already gone" as done.
    pub async fn delete(&self, key: &str) -> Result<(), RepoError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.access_error(&format!("deleting {key}"), e)),
        }
    }
}

/// object_store errors, shortened to what an operator acts on.
pub(crate) fn explain(e: &object_store::Error) -> String {
    let text = crate::error_text::full_chain(e);
    let lower = text.to_lowercase();
    // object_store names the store in its errors ("Generic MicrosoftAzure error: ...").
    let azure = lower.contains("microsoftazure") || lower.contains("azure");
    if lower.contains("169.254.169.254") {
        // object_store fell through its credentials chain to the instance metadata service.
        return if azure {
            "no Azure credentials found: set AZURE_STORAGE_ACCOUNT_KEY (or a SAS token, a \
             service principal, or workload identity: AZURE_CLIENT_ID, AZURE_TENANT_ID, \
             AZURE_FEDERATED_TOKEN_FILE), or run where a managed identity exists"
                .into()
        } else {
            "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a \
             web identity (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE), or run where \
             instance or pod credentials exist"
                .into()
        };
    }
    let hint = if lower.contains("nosuchbucket") || lower.contains("bucket does not exist") {
        " (the bucket does not exist: create it or fix the URL)"
    } else if lower.contains("containernotfound") || lower.contains("container does not exist") {
        " (the container does not exist: create it or fix the URL)"
    } else if azure
        && (lower.contains("authenticationfailed")
            || lower.contains("authorizationfailure")
            || lower.contains("authorizationpermissionmismatch")
            || lower.contains("403"))
    {
        " (access denied: check the Azure credentials, AZURE_STORAGE_ACCOUNT_NAME / \
         AZURE_STORAGE_ACCOUNT_KEY, the SAS token or the identity's role on the container)"
    } else if lower.contains("invalidaccesskeyid")
        || lower.contains("signaturedoesnotmatch")
        || lower.contains("accessdenied")
        || lower.contains("403")
    {
        " (access denied: check the S3 credentials, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, \
         or the role's policy)"
    } else if lower.contains("connection refused") || lower.contains("error sending request") {
        " (cannot reach the storage endpoint)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// object_store's HTTP client (reqwest, built without a provider of its own) takes the
/// process's default rustls provider: ring, as etcd's TLS does, so aws-lc is not built at
/// all. Call before building an S3 or Azure store; later calls do nothing.
pub fn use_ring_for_http_tls() {
    // An error means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
