//! The manifest: one JSON document per backup, written last. Its presence is what makes
//! a backup exist (the commit point). Format documented in docs/storage-format.md.

use serde::{Deserialize, Serialize};

/// Version of the manifest format; readers refuse a newer one.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// `YYYYMMDDTHHMMSS.mmmZ-xxxxxxxx`: sorts by time.
    pub id: String,
    /// The name the backups are filed under (`--cluster`), not etcd's cluster id.
    pub cluster: String,
    /// etcd's cluster and member ids, hex as etcdctl prints them.
    pub cluster_id: String,
    pub member_id: String,
    pub endpoint: String,
    pub etcd_version: String,
    /// The server's storage version (the db file's, etcd 3.6+); absent for older servers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub storage_version: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: String,
    /// The revision inside the snapshot (`snapshot status` revision).
    pub revision: i64,
    /// The store's revision as etcd opens the snapshot: `revision`, but at least the
    /// compaction revision and at least 1 (an empty store is at 1). The change log
    /// continues a backup from here. 0 in manifests written before it existed (read it
    /// through [`Manifest::store_revision`]).
    #[serde(default)]
    pub store_revision: i64,
    /// The revision the member reported before the snapshot was streamed; `revision` is
    /// at least this.
    pub header_revision: i64,
    /// The revision a linearizable read through the same member returned just before
    /// streaming: proof the member was caught up with its leader. `revision` is at least
    /// this. 0 in manifests written before it existed.
    #[serde(default)]
    pub read_revision: i64,
    pub raft_term: u64,
    pub raft_index: u64,
    /// Size of the bbolt database (`totalSize`), without the 32-byte trailer.
    pub db_size: u64,
    /// sha256 of the bbolt bytes: the snapshot's own trailer.
    pub db_sha256: String,
    /// `snapshot status` figures, as etcdutl reports them.
    pub hash: u32,
    pub total_key: u64,
    pub live_keys: u64,
    /// Names of the cluster's members inside the snapshot, so a restore can check it
    /// rebuilds the same membership. Absent in manifests written before it existed.
    #[serde(default)]
    pub members: Vec<String>,
    pub object: StoredObject,
    pub lifeboat_version: String,
    /// The restore bundle stored with this backup (`[bundle] files`), always encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<Bundle>,
}

/// The files a restore needs besides the snapshot (PKI, the apiserver's
/// EncryptionConfiguration, kubeadm's config...), stored as one age-encrypted object:
/// their contents one after the other, in the order listed here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// `bundles/<id>.age`, relative to the cluster's directory.
    pub key: String,
    /// Bytes stored.
    pub size: u64,
    /// sha256 of the bytes stored.
    pub sha256: String,
    pub files: Vec<BundleFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleFile {
    /// Absolute path on the host it came from.
    pub path: String,
    /// Permission bits (e.g. 0o600), at most 0o777.
    pub mode: u32,
    pub size: u64,
    /// sha256 of the contents.
    pub sha256: String,
}

/// The most a bundle may hold: PKI and configuration files, not data.
pub const MAX_BUNDLE_BYTES: u64 = 64 << 20;

impl Bundle {
    /// Checks a bundle read back from storage: its key, digests, sizes, modes, and
    /// paths (absolute, no `.` or `..` parts, no control characters, each once), since
    /// they become files written on a host.
    pub fn validate(&self, id: &str) -> Result<(), String> {
        let want = super::Repository::bundle_key(id);
        if self.key != want {
            return Err(format!("its bundle key {:?} is not {want}", self.key));
        }
        let hex = |h: &str| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit());
        if !hex(&self.sha256) {
            return Err("bundle.sha256 is not a sha256 in hex".into());
        }
        let mut total = 0u64;
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            check_bundle_path(&f.path)?;
            if !seen.insert(f.path.as_str()) {
                return Err(format!("bundle file {:?} is listed twice", f.path));
            }
            if f.mode > 0o777 {
                return Err(format!("bundle file {:?} has mode {:o}", f.path, f.mode));
            }
            if !hex(&f.sha256) {
                return Err(format!("bundle file {:?}: sha256 is not in hex", f.path));
            }
            total = total.saturating_add(f.size);
        }
        if total > MAX_BUNDLE_BYTES || self.size > MAX_BUNDLE_BYTES + (1 << 20) {
            return Err(format!(
                "the bundle claims {total} bytes, more than a bundle holds"
            ));
        }
        Ok(())
    }
}

/// An absolute, plain path: `/` then names that are not `.` or `..`, no empty parts, no
/// control characters, at most 4096 bytes.
pub fn check_bundle_path(path: &str) -> Result<(), String> {
    let bad = || Err(format!("bundle path {path:?} is not a plain absolute path"));
    let Some(rest) = path.strip_prefix('/') else {
        return bad();
    };
    if path.len() > 4096 || path.chars().any(char::is_control) || rest.is_empty() {
        return bad();
    }
    if rest
        .split('/')
        .any(|p| p.is_empty() || p == "." || p == "..")
    {
        return bad();
    }
    Ok(())
}

/// The stored data object: the snapshot file (db ‖ trailer), compressed, maybe encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    /// Key relative to the cluster's directory, e.g. `snapshots/<id>.db.zst`.
    pub key: String,
    /// Bytes stored.
    pub size: u64,
    /// sha256 of the bytes stored.
    pub sha256: String,
    /// Size of the snapshot file inside (db + trailer).
    pub plain_size: u64,
    /// `zstd`.
    pub compression: String,
    /// `none` or `age`.
    pub encryption: String,
}

impl Manifest {
    /// Parses a manifest, refusing formats this version does not know.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| format!("not a lifeboat manifest: {e}"))?;
        if probe.format > FORMAT {
            return Err(format!(
                "manifest format {} is newer than this lifeboat understands ({FORMAT}): upgrade lifeboat",
                probe.format
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("malformed manifest: {e}"))
    }

    /// The revision etcd is at when it opens this snapshot (see `store_revision`).
    pub fn store_revision(&self) -> i64 {
        self.store_revision.max(self.revision).max(1)
    }

    /// Compression ratio: snapshot file size / stored size.
    pub fn ratio(&self) -> f64 {
        if self.object.size == 0 {
            return 0.0;
        }
        self.object.plain_size as f64 / self.object.size as f64
    }
}

/// A new backup id for a backup started at `now`: sortable by time to the millisecond
/// (two backups in one second happen with seconds-level schedules), unique enough that
/// two agents never collide (8 random hex digits).
pub fn new_id(now: chrono::DateTime<chrono::Utc>, random: u32) -> String {
    format!("{}-{random:08x}", now.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// Checks that `text` is a backup id: `YYYYMMDDTHHMMSS.mmmZ-xxxxxxxx` (lower-case hex),
/// or `YYYYMMDDTHHMMSSZ-xxxxxxxx` as written before ids carried milliseconds. Ids come
/// back from storage and from the command line and end up in object keys, local paths
/// and member commands, so nothing else is accepted: no `/`, `..`, spaces or shell
/// characters can get through.
pub fn check_id(text: &str) -> Result<(), String> {
    let refuse = || {
        Err(format!(
            "{text:?} is not a backup id (YYYYMMDDTHHMMSS.mmmZ-xxxxxxxx, as `lifeboat list` shows)"
        ))
    };
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let time_len = match b.get(15) {
        Some(b'.') => 19, // YYYYMMDDTHHMMSS.mmm
        _ => 15,
    };
    if b.len() != time_len + 10
        || !digits(0..8)
        || b[8] != b'T'
        || !digits(9..15)
        || (time_len == 19 && !digits(16..19))
        || b[time_len] != b'Z'
        || b[time_len + 1] != b'-'
        || !b[time_len + 2..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    {
        return refuse();
    }
    let stamp = format!(
        "{}{}",
        &text[..15],
        if time_len == 19 {
            &text[15..19]
        } else {
            ".000"
        }
    );
    if chrono::NaiveDateTime::parse_from_str(&stamp, "%Y%m%dT%H%M%S%.3f").is_err() {
        return refuse();
    }
    Ok(())
}

impl Manifest {
    /// Checks a manifest read back from storage, where anyone with write access to the
    /// bucket may have put it: `file_id` is the id its file name carries, `cluster` the
    /// cluster it was filed under. Every field that reaches a path, a command, a time
    /// comparison or a decision to delete is checked; the first problem is returned.
    pub fn validate(&self, file_id: &str, cluster: &str) -> Result<(), String> {
        check_id(file_id)?;
        if self.id != file_id {
            return Err(format!(
                "its id {:?} is not the id its file name carries ({file_id})",
                self.id
            ));
        }
        if self.cluster != cluster {
            return Err(format!(
                "it belongs to cluster {:?}, but is filed under {cluster:?}",
                self.cluster
            ));
        }
        let encrypted = match self.object.encryption.as_str() {
            "none" => false,
            "age" => true,
            other => return Err(format!("unknown encryption {other:?} (none or age)")),
        };
        if self.object.compression != "zstd" {
            return Err(format!(
                "unknown compression {:?} (zstd)",
                self.object.compression
            ));
        }
        let want = super::Repository::data_key(&self.id, encrypted);
        if self.object.key != want {
            return Err(format!(
                "its data key {:?} is not the key its id implies ({want})",
                self.object.key
            ));
        }
        for (what, text) in [
            ("started_at", &self.started_at),
            ("finished_at", &self.finished_at),
        ] {
            if chrono::DateTime::parse_from_rfc3339(text).is_err() {
                return Err(format!("{what} {text:?} is not an RFC 3339 time"));
            }
        }
        for (what, hex) in [
            ("db_sha256", &self.db_sha256),
            ("object.sha256", &self.object.sha256),
        ] {
            if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("{what} {hex:?} is not a sha256 in hex"));
            }
        }
        if self.revision < 0 || self.header_revision < 0 || self.read_revision < 0 {
            return Err("a revision is negative".into());
        }
        if self.object.size == 0 || self.object.plain_size < 32 {
            return Err(format!(
                "sizes {} (stored) and {} (snapshot) cannot hold a snapshot",
                self.object.size, self.object.plain_size
            ));
        }
        // Shown to people and compared with the restore configuration: plain text only
        // (no terminal escapes, no line breaks to forge log lines).
        let texts = [
            ("cluster_id", &self.cluster_id),
            ("member_id", &self.member_id),
            ("endpoint", &self.endpoint),
            ("etcd_version", &self.etcd_version),
            ("storage_version", &self.storage_version),
            ("lifeboat_version", &self.lifeboat_version),
        ];
        for (what, text) in texts
            .into_iter()
            .chain(self.members.iter().map(|m| ("members", m)))
        {
            if text.len() > 256 || text.chars().any(char::is_control) {
                return Err(format!(
                    "{what} {text:?} holds control characters or is too long"
                ));
            }
        }
        if let Some(b) = &self.bundle {
            b.validate(&self.id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time() {
        let t1 = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap();
        let t2 = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.007Z").unwrap();
        let t3 = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:06Z").unwrap();
        let a = new_id(t1.into(), 0xffff_ffff);
        let b = new_id(t2.into(), 0);
        let c = new_id(t3.into(), 0);
        assert_eq!(a, "20260102T030405.000Z-ffffffff");
        assert!(a < b && b < c, "{a} {b} {c}");
    }

    #[test]
    fn ids_are_checked() {
        for good in [
            "20260102T030405.000Z-ffffffff",
            "20261231T235959.999Z-0123abcd",
            "20260102T030405Z-ffffffff",
        ] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "x;reboot;",
            "../../etc/passwd",
            "20260102T030405.000Z-ffffffff/../x",
            "20260102T030405.000Z-$(reboot)",
            "20260102T030405.000Z-FFFFFFFF",
            "20261302T030405.000Z-ffffffff",
            "20260102T030405.000Z-ffffffff ",
            "20260102T030405.00Z-ffffffff0",
            "2026０102T030405.000Z-ffffffff",
        ] {
            let err = check_id(bad).unwrap_err();
            assert!(err.contains("not a backup id"), "{bad}: {err}");
        }
    }

    #[test]
    fn newer_formats_are_refused() {
        let err = Manifest::from_json(br#"{"format": 99}"#).unwrap_err();
        assert!(err.contains("newer"), "{err}");
        assert!(Manifest::from_json(b"garbage").is_err());
    }
}
