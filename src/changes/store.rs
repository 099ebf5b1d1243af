//! Segments in storage: the data object and its manifest, written in that order (the
//! manifest is the commit point, as for backups), and read back with every field checked.
//!
//! ```text
//! <url>/<cluster>/changes/<chain>/<from>-<to>-<writer>.json          the segment manifest
//! <url>/<cluster>/changes/<chain>/<from>-<to>-<writer>.seg.zst[.age]  its records
//! ```
//! `<chain>` is the id of the full backup the chain starts from; `<from>` and `<to>` are
//! 20-digit revisions: the segment holds every revision r with from < r ≤ to (none when
//! from = to, a segment of marks only); `<writer>` is 8 hex digits chosen by the recorder
//! that wrote it, so two recorders never write the same name.

use std::io::{Read, Write};

use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::segment::{self, Record};
use crate::encryption::{Identities, Sink};
use crate::repository::manifest::{self, StoredObject};
use crate::repository::{RepoError, Repository};

/// The storage format of change-log segments.
pub const FORMAT: u32 = 2;

/// One committed segment, as its manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentManifest {
    pub format: u32,
    pub cluster: String,
    /// etcd's cluster id, hex.
    pub cluster_id: String,
    /// The full backup the chain starts from.
    pub chain: String,
    /// That backup's revision.
    pub base_revision: i64,
    /// Every revision r with `from_revision` < r ≤ `to_revision` is in this segment.
    pub from_revision: i64,
    pub to_revision: i64,
    /// When the recorder saw the first and the last record (ms since the epoch, UTC).
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// RFC 3339 of `last_seen_ms`, for people.
    pub last_seen: String,
    pub revisions: u64,
    pub events: u64,
    pub writer: String,
    pub object: StoredObject,
    pub lifeboat_version: String,
}

/// The name shared by a segment's manifest and data object, without the extension.
pub fn stem(chain: &str, from: i64, to: i64, writer: &str) -> String {
    format!("changes/{chain}/{from:020}-{to:020}-{writer}")
}

pub fn manifest_key(chain: &str, from: i64, to: i64, writer: &str) -> String {
    format!("{}.json", stem(chain, from, to, writer))
}

pub fn data_key(chain: &str, from: i64, to: i64, writer: &str, encrypted: bool) -> String {
    let ext = if encrypted { "seg.zst.age" } else { "seg.zst" };
    format!("{}.{ext}", stem(chain, from, to, writer))
}

fn check_writer(w: &str) -> Result<(), String> {
    if w.len() == 8
        && w.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!("writer {w:?} is not 8 lower-case hex digits"))
    }
}

impl SegmentManifest {
    /// Checks a manifest read from `key`: the format, the chain id grammar, a sane
    /// revision range, a writer of 8 hex digits, and that its own key and its data
    /// object's key are exactly the ones its fields imply (so nothing it names can point
    /// elsewhere).
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "segment format {} is not {FORMAT} (a newer lifeboat wrote it?)",
                self.format
            ));
        }
        manifest::check_id(&self.chain)?;
        check_writer(&self.writer)?;
        if self.base_revision < 1
            || self.from_revision < self.base_revision
            || self.to_revision < self.from_revision
        {
            return Err(format!(
                "revisions base {} from {} to {} are not base ≤ from ≤ to",
                self.base_revision, self.from_revision, self.to_revision
            ));
        }
        let span = (self.to_revision - self.from_revision) as u64;
        if self.revisions != span {
            return Err(format!(
                "it counts {} revisions for the range ({}, {}]",
                self.revisions, self.from_revision, self.to_revision
            ));
        }
        let expect = manifest_key(
            &self.chain,
            self.from_revision,
            self.to_revision,
            &self.writer,
        );
        if key != expect {
            return Err(format!(
                "its fields name it {expect}, it is stored as {key}"
            ));
        }
        let encrypted = match self.object.encryption.as_str() {
            "none" => false,
            "age" => true,
            other => return Err(format!("unknown encryption {other:?}")),
        };
        if self.object.compression != "zstd" {
            return Err(format!("unknown compression {:?}", self.object.compression));
        }
        let data = data_key(
            &self.chain,
            self.from_revision,
            self.to_revision,
            &self.writer,
            encrypted,
        );
        if self.object.key != data {
            return Err(format!(
                "its data object is {:?}, its fields imply {data}",
                self.object.key
            ));
        }
        if self.object.sha256.len() != 64
            || !self.object.sha256.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err("its sha256 is not 64 hex digits".into());
        }
        Ok(())
    }
}

/// Everything needed to write segments of one chain.
#[derive(Clone)]
pub struct ChainWriter {
    pub cluster_id: String,
    pub chain: String,
    pub base_revision: i64,
    pub writer: String,
    pub zstd_level: i32,
    pub recipients: Vec<age::x25519::Recipient>,
}

/// What a flushed segment covered.
#[derive(Debug, Clone)]
pub struct Written {
    pub manifest: SegmentManifest,
}

/// Compresses (and encrypts) the records of (from, to] and commits them: data object,
/// then manifest. A failure removes what was written, manifest first.
pub async fn put_segment(
    repo: &Repository,
    w: &ChainWriter,
    (from, to): (i64, i64),
    records: &[Record],
) -> Result<Written, RepoError> {
    let mut enc = segment::Encoder::new();
    let (mut first_seen, mut last_seen, mut events) = (i64::MAX, i64::MIN, 0u64);
    for r in records {
        enc.push(r);
        let seen = match r {
            Record::Revision {
                seen_ms, events: e, ..
            } => {
                events += e.len() as u64;
                *seen_ms
            }
            Record::Mark { seen_ms, .. } | Record::Lease { seen_ms, .. } => *seen_ms,
        };
        first_seen = first_seen.min(seen);
        last_seen = last_seen.max(seen);
    }
    let plain = enc.finish();
    let plain_size = plain.len() as u64;
    let encrypted = !w.recipients.is_empty();
    let level = w.zstd_level;
    let recipients = w.recipients.clone();
    let stored = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let zst = zstd::bulk::compress(&plain, level)?;
        let mut sink = Sink::new(Vec::new(), &recipients)?;
        sink.write_all(&zst)?;
        sink.finish()
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r)
    .map_err(|e| RepoError::Access {
        url: repo.url().to_owned(),
        reason: format!("compressing a change-log segment: {e}"),
    })?;
    let sha = Sha256::digest(&stored);
    let data = data_key(&w.chain, from, to, &w.writer, encrypted);
    let mkey = manifest_key(&w.chain, from, to, &w.writer);
    let last_seen_ms = if last_seen == i64::MIN { 0 } else { last_seen };
    let m = SegmentManifest {
        format: FORMAT,
        cluster: repo.cluster().to_owned(),
        cluster_id: w.cluster_id.clone(),
        chain: w.chain.clone(),
        base_revision: w.base_revision,
        from_revision: from,
        to_revision: to,
        first_seen_ms: if first_seen == i64::MAX {
            0
        } else {
            first_seen
        },
        last_seen_ms,
        last_seen: chrono::DateTime::from_timestamp_millis(last_seen_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        revisions: (to - from) as u64,
        events,
        writer: w.writer.clone(),
        object: StoredObject {
            key: data.clone(),
            size: stored.len() as u64,
            sha256: crate::snapshot::status::hex(&sha),
            plain_size,
            compression: "zstd".into(),
            encryption: if encrypted { "age" } else { "none" }.into(),
        },
        lifeboat_version: env!("CARGO_PKG_VERSION").into(),
    };
    // Never write what a reader would refuse.
    m.validate(&mkey).map_err(|reason| RepoError::BadManifest {
        url: repo.url().to_owned(),
        key: mkey.clone(),
        reason,
    })?;
    let json = serde_json::to_vec_pretty(&m).map_err(|e| RepoError::BadManifest {
        url: repo.url().to_owned(),
        key: mkey.clone(),
        reason: e.to_string(),
    })?;
    let put = |key: String, bytes: Vec<u8>| async move {
        repo.store()
            .put(&repo.path(&key), PutPayload::from(bytes))
            .await
            .map_err(|e| repo.access_error(&format!("writing {key}"), e))?;
        repo.sync(&key).await
    };
    if let Err(e) = put(data.clone(), stored).await {
        let _ = repo.delete(&data).await;
        return Err(e);
    }
    if let Err(e) = put(mkey.clone(), json).await {
        // The manifest may have been stored although the reply was lost.
        for key in [&mkey, &data] {
            if let Err(left) = repo.delete(key).await {
                tracing::error!(key = %key, error = %left, "could not remove a segment that failed to commit");
            }
        }
        return Err(e);
    }
    Ok(Written { manifest: m })
}

/// A segment manifest found in storage, checked, or why it was refused.
#[derive(Debug, Clone)]
pub enum Listed {
    Segment(Box<SegmentManifest>),
    Refused { key: String, reason: String },
}

/// Every segment manifest of every chain (or of `chain`), sorted by chain, then range.
pub async fn list_segments(
    repo: &Repository,
    chain: Option<&str>,
) -> Result<Vec<Listed>, RepoError> {
    use futures::TryStreamExt;
    let prefix = match chain {
        Some(c) => {
            manifest::check_id(c).map_err(RepoError::BadId)?;
            repo.path(&format!("changes/{c}"))
        }
        None => repo.path("changes"),
    };
    let objects: Vec<_> = repo
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| repo.access_error("listing change-log segments", e))?;
    let mut out = Vec::new();
    for meta in objects {
        let Some(key) = repo.relative_key(&meta.location) else {
            continue;
        };
        if !key.ends_with(".json") {
            continue;
        }
        if meta.size > 1 << 20 {
            out.push(Listed::Refused {
                key,
                reason: format!("{} bytes is too large for a segment manifest", meta.size),
            });
            continue;
        }
        let bytes = match repo.store().get(&meta.location).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| repo.access_error(&format!("reading {key}"), e))?,
            Err(object_store::Error::NotFound { .. }) => continue, // pruned meanwhile
            Err(e) => return Err(repo.access_error(&format!("reading {key}"), e)),
        };
        let parsed = serde_json::from_slice::<SegmentManifest>(&bytes)
            .map_err(|e| format!("not a segment manifest: {e}"))
            .and_then(|m| m.validate(&key).map(|()| m));
        out.push(match parsed {
            Ok(m) => Listed::Segment(Box::new(m)),
            Err(reason) => Listed::Refused { key, reason },
        });
    }
    out.sort_by_key(sort_key);
    Ok(out)
}

fn sort_key(l: &Listed) -> (String, i64, i64, String) {
    match l {
        Listed::Segment(m) => (
            m.chain.clone(),
            m.from_revision,
            m.to_revision,
            m.writer.clone(),
        ),
        Listed::Refused { key, .. } => (key.clone(), 0, 0, String::new()),
    }
}

/// Reads a segment's records: size and sha256 as the manifest says, decrypted when it
/// is encrypted, decompressed with a bound, decoded, and its revisions exactly
/// (from, to].
pub async fn read_segment(
    repo: &Repository,
    m: &SegmentManifest,
    identities: Option<&Identities>,
) -> Result<Vec<Record>, String> {
    let unreadable = |e: object_store::Error| {
        format!(
            "reading {}: {}",
            m.object.key,
            crate::repository::explain(&e)
        )
    };
    let stored = repo
        .store()
        .get(&repo.path(&m.object.key))
        .await
        .map_err(unreadable)?
        .bytes()
        .await
        .map_err(unreadable)?;
    if stored.len() as u64 != m.object.size {
        return Err(format!(
            "{} has {} bytes, its manifest says {}",
            m.object.key,
            stored.len(),
            m.object.size
        ));
    }
    let sha = crate::snapshot::status::hex(&Sha256::digest(&stored));
    if sha != m.object.sha256 {
        return Err(format!(
            "{} has sha256 {sha}, its manifest says {}",
            m.object.key, m.object.sha256
        ));
    }
    let zst = if m.object.encryption == "age" {
        let ids = identities.ok_or_else(|| {
            format!(
                "{} is encrypted: give the age identity (--identity)",
                m.object.key
            )
        })?;
        let dec = age::Decryptor::new(&stored[..]).map_err(|e| format!("{}: {e}", m.object.key))?;
        let mut out = Vec::new();
        dec.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| format!("decrypting {}: {e}", m.object.key))?
            .read_to_end(&mut out)
            .map_err(|e| format!("decrypting {}: {e}", m.object.key))?;
        out
    } else {
        stored.to_vec()
    };
    let limit = usize::try_from(m.object.plain_size)
        .ok()
        .filter(|n| *n <= 4 << 30)
        .ok_or_else(|| {
            format!(
                "{} claims {} plain bytes",
                m.object.key, m.object.plain_size
            )
        })?;
    let plain = zstd::bulk::decompress(&zst, limit)
        .map_err(|e| format!("decompressing {}: {e}", m.object.key))?;
    let records = segment::decode(&plain).map_err(|e| format!("{}: {e}", m.object.key))?;
    let mut expect = m.from_revision + 1;
    for r in &records {
        if let Record::Revision { revision, .. } = r {
            if *revision != expect {
                return Err(format!(
                    "{}: revision {revision} where {expect} was due",
                    m.object.key
                ));
            }
            expect += 1;
        }
    }
    if expect != m.to_revision + 1 {
        return Err(format!(
            "{}: holds revisions up to {}, its manifest says {}",
            m.object.key,
            expect - 1,
            m.to_revision
        ));
    }
    Ok(records)
}
