//! A storage URL and the object store behind it:
//!
//! | URL | store | settings |
//! |---|---|---|
//! | `file:///DIR` or a plain path | a local directory | none |
//! | `s3://BUCKET/PREFIX` | S3 or any S3-compatible store | `AWS_*` variables, then `[storage.options]` |
//! | `az://CONTAINER/PREFIX` | Azure Blob Storage (or Azurite) | `AZURE_*` variables, then `[storage.options]` |
//!
//! The variables are read exactly as object_store's `AmazonS3Builder::from_env` and
//! `MicrosoftAzureBuilder::from_env` read them; `[storage.options]` takes object_store's
//! config keys (`endpoint`, `region`, `account_name`, `use_emulator`, ...) on top, plus
//! our own `retry_timeout`. The bucket or container always comes from the URL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::RetryConfig;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::local::LocalFileSystem;

/// The store a URL names, and where in it this repository's objects live.
pub(crate) struct Opened {
    pub store: Arc<dyn ObjectStore>,
    /// The directory behind a file:// store, so written objects can be fsynced.
    pub local_dir: Option<PathBuf>,
    /// The URL's prefix inside the bucket or container, without slashes at either end.
    pub prefix: String,
}

/// The schemes lifeboat opens, for error messages.
const SCHEMES: &str = "file:///DIR, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX";

/// Opens the store at `url`; the error is the reason, for [`super::RepoError::Url`].
pub(crate) fn open(url: &str, options: &HashMap<String, String>) -> Result<Opened, String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = split_location(rest, "bucket", "s3://BUCKET/PREFIX")?;
        super::use_ring_for_http_tls();
        let mut builder = AmazonS3Builder::from_env();
        let retry = with_options::<AmazonS3ConfigKey>(options, "S3", |key, value| {
            builder = std::mem::take(&mut builder).with_config(key, value);
        })?;
        if let Some(retry) = retry {
            builder = builder.with_retry(retry);
        }
        let store = builder
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| format!("S3 settings: {e}"))?;
        return Ok(Opened {
            store: Arc::new(store),
            local_dir: None,
            prefix,
        });
    }
    if let Some(rest) = url.strip_prefix("az://") {
        let (container, prefix) = split_location(rest, "container", "az://CONTAINER/PREFIX")?;
        if container.contains(['@', '.', ':']) {
            return Err(format!(
                "container name {container:?}: use az://CONTAINER/PREFIX and set the \
                 account in AZURE_STORAGE_ACCOUNT_NAME (or [storage.options] account_name)"
            ));
        }
        super::use_ring_for_http_tls();
        let mut builder = MicrosoftAzureBuilder::from_env();
        let retry = with_options::<AzureConfigKey>(options, "Azure", |key, value| {
            builder = std::mem::take(&mut builder).with_config(key, value);
        })?;
        if let Some(retry) = retry {
            builder = builder.with_retry(retry);
        }
        // The workload identity webhook sets AZURE_AUTHORITY_HOST with a trailing slash
        // (`https://login.microsoftonline.com/`); object_store appends `/<tenant>/oauth2/
        // v2.0/token` to it as it is.
        if let Some(host) = builder.get_config_value(&AzureConfigKey::AuthorityHost)
            && host.ends_with('/')
        {
            let trimmed = host.trim_end_matches('/').to_owned();
            builder = builder.with_config(AzureConfigKey::AuthorityHost, trimmed);
        }
        let store = builder
            .with_container_name(container)
            .build()
            .map_err(|e| format!("Azure settings: {e}"))?;
        return Ok(Opened {
            store: Arc::new(store),
            local_dir: None,
            prefix,
        });
    }
    let dir = match url.strip_prefix("file://") {
        Some(path) => path.to_owned(),
        None if url.contains("://") => {
            return Err(format!("unsupported scheme: use {SCHEMES}"));
        }
        None => url.to_owned(),
    };
    if !options.is_empty() {
        return Err("storage options only apply to s3:// and az:// URLs".into());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create directory {dir}: {e}"))?;
    let store =
        LocalFileSystem::new_with_prefix(&dir).map_err(|e| format!("directory {dir}: {e}"))?;
    Ok(Opened {
        store: Arc::new(store),
        local_dir: Some(PathBuf::from(dir)),
        prefix: String::new(),
    })
}

/// `BUCKET/PREFIX` → (bucket, prefix without slashes at either end).
fn split_location(rest: &str, what: &str, form: &str) -> Result<(String, String), String> {
    let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if name.is_empty() {
        return Err(format!("no {what} name ({form})"));
    }
    Ok((name.to_owned(), prefix.trim_matches('/').to_owned()))
}

/// Hands every option but `retry_timeout` to `set` as object_store config key `K`;
/// returns the retry settings `retry_timeout` asks for. Values are never quoted in an
/// error: an option may be a secret (an account key, a SAS token).
fn with_options<K: FromStr>(
    options: &HashMap<String, String>,
    store: &str,
    mut set: impl FnMut(K, String),
) -> Result<Option<RetryConfig>, String> {
    let mut retry = None;
    let mut keys: Vec<&String> = options.keys().collect();
    keys.sort();
    for k in keys {
        let v = &options[k];
        // Ours, not object_store's: how long failed requests are retried (object_store's
        // default is 3 minutes).
        if k == "retry_timeout" {
            let timeout = crate::duration::parse_duration(v)
                .ok_or_else(|| format!("retry_timeout {v:?} is not a duration"))?;
            retry = Some(RetryConfig {
                retry_timeout: timeout,
                ..Default::default()
            });
            continue;
        }
        let key: K = k
            .parse()
            .map_err(|_| format!("unknown {store} option {k:?}"))?;
        set(key, v.clone());
    }
    Ok(retry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::Repository;

    fn options(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn reason(url: &str, pairs: &[(&str, &str)]) -> String {
        match open(url, &options(pairs)) {
            Ok(_) => panic!("{url} opened"),
            Err(e) => e,
        }
    }

    #[test]
    fn urls_name_their_bucket_or_container() {
        assert!(reason("az:///etcd", &[]).contains("no container name"));
        assert!(reason("s3://", &[]).contains("no bucket name"));
        let e = reason("az://backups@account.blob.core.windows.net/etcd", &[]);
        assert!(e.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{e}");
        let e = reason("gs://bucket/etcd", &[]);
        assert!(
            e.contains("unsupported scheme") && e.contains("az://"),
            "{e}"
        );
        let e = reason("/tmp/x", &[("endpoint", "http://127.0.0.1:1")]);
        assert!(e.contains("only apply to s3:// and az://"), "{e}");
    }

    #[test]
    fn an_unknown_option_is_named_without_its_value() {
        let e = reason(
            "az://backups/etcd",
            &[("account_name", "a"), ("acess_key", "c2VjcmV0LXZhbHVl")],
        );
        assert!(e.contains("unknown Azure option \"acess_key\""), "{e}");
        assert!(!e.contains("c2VjcmV0LXZhbHVl"), "{e}");
        let e = reason("az://backups", &[("retry_timeout", "soon")]);
        assert!(e.contains("is not a duration"), "{e}");
    }

    #[test]
    fn an_azure_repository_opens_offline_and_never_prints_its_key() {
        // 32 bytes, base64: what an account key looks like.
        let key = "bGlmZWJvYXQtdGVzdC1rZXktMzItYnl0ZXMtbG9uZyE=";
        let repo = Repository::open(
            "az://backups/prod/",
            &options(&[
                ("account_name", "lifeboattest"),
                ("access_key", key),
                ("retry_timeout", "5s"),
            ]),
            "c1",
        )
        .expect("open");
        assert_eq!(
            repo.path("manifests/x.json").as_ref(),
            "prod/c1/manifests/x.json"
        );
        let debug = format!("{repo:?}");
        assert_eq!(
            debug,
            "Repository { url: \"az://backups/prod/\", cluster: \"c1\", .. }"
        );
        // The key's bytes, as a derived Debug of object_store's AzureAccessKey prints them.
        assert!(!debug.contains(key) && !debug.contains("108, 105, 102"));
        // A key that is not base64 is refused without quoting it.
        let e = reason(
            "az://backups",
            &[("account_name", "a"), ("access_key", "not base64!")],
        );
        assert!(
            e.contains("Azure settings") && !e.contains("not base64!"),
            "{e}"
        );
    }
}
