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
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: String,
    /// The revision inside the snapshot (`snapshot status` revision).
    pub revision: i64,
    /// The revision the member reported before the snapshot was streamed; `revision` is
    /// at least this.
    pub header_revision: i64,
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
    fn newer_formats_are_refused() {
        let err = Manifest::from_json(br#"{"format": 99}"#).unwrap_err();
        assert!(err.contains("newer"), "{err}");
        assert!(Manifest::from_json(b"garbage").is_err());
    }
}
