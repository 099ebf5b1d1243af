//! `lifeboat objects`: the Kubernetes objects in a snapshot, each with its type and
//! metadata, read from its value (see [`super::kube`]). A value that cannot be read is
//! listed with the reason; it never stops the listing.

use std::path::Path;

use serde::Serialize;

use super::kube::{self, Encryption, Keyring, ObjectMeta};
use super::select::{Interner, Place, Selection};
use super::view::{self, ReadError};
use crate::snapshot::ScanOptions;
use crate::snapshot::mvcc::KeyValue;

/// One object: where its key puts it, its record, and what its value says.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectRow {
    pub key: String,
    #[serde(flatten)]
    pub place: Place,
    /// Bytes of the stored value.
    pub size: u64,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectMeta>,
    /// Why the value could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ObjectRow {
    /// The row of a record whose key the selection put at `place`.
    pub fn of(place: Place, kv: &KeyValue<'_>, keyring: Option<&Keyring>) -> ObjectRow {
        let inspected = kube::inspect(kv.key, kv.value, keyring);
        let (object, error) = match inspected.object {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        ObjectRow {
            key: String::from_utf8_lossy(kv.key).into_owned(),
            place,
            size: kv.value.len() as u64,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            encryption: inspected.encryption,
            object,
            error,
        }
    }
}

/// The objects of a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The revision read at.
    pub revision: i64,
    pub objects: Vec<ObjectRow>,
    /// How many of them could not be read.
    pub unreadable: usize,
}

/// Lists the selected objects of the snapshot at `path`, as of revision `at` (`None`: the
/// snapshot's). Memory follows the objects selected.
pub fn list(
    path: &Path,
    scan: ScanOptions,
    selection: &Selection,
    at: Option<i64>,
    keyring: Option<&Keyring>,
) -> Result<Listing, ReadError> {
    let mut shared = Interner::default();
    let v = view::read(path, scan, &selection.range(), at, &mut |kv| {
        let place = shared.place(selection.place(kv.key)?);
        let mut row = ObjectRow::of(place, kv, keyring);
        if let Some(m) = &mut row.object {
            m.api_version = shared.get(&m.api_version);
            m.kind = shared.get(&m.kind);
        }
        Some(row)
    })?;
    // The view's copy of each key goes as the rows are taken out.
    let objects: Vec<ObjectRow> = v.keys.into_iter().map(|(_, row)| row).collect();
    Ok(Listing {
        revision: v.revision,
        unreadable: objects.iter().filter(|o| o.error.is_some()).count(),
        objects,
    })
}

/// The cells of the table and simple output, in the order of [`COLUMNS`].
pub fn cells(o: &ObjectRow) -> Vec<String> {
    let m = o.object.as_ref();
    let text = |f: fn(&ObjectMeta) -> String| m.map(f).unwrap_or_default();
    let dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
    vec![
        o.place.resource.to_string(),
        o.place.namespace.as_deref().unwrap_or("-").to_owned(),
        o.place.name.clone(),
        dash(text(|m| m.api_version.to_string())),
        dash(text(|m| m.kind.to_string())),
        dash(text(|m| m.uid.clone())),
        dash(text(|m| m.creation_timestamp.clone().unwrap_or_default())),
        dash(text(|m| m.deletion_timestamp.clone().unwrap_or_default())),
        dash(text(|m| {
            m.owner_references
                .iter()
                .map(|r| format!("{}/{} ({})", r.kind, r.name, r.uid))
                .collect::<Vec<_>>()
                .join(", ")
        })),
        dash(text(|m| m.finalizers.join(", "))),
        o.size.to_string(),
        o.mod_revision.to_string(),
        dash(
            o.encryption
                .as_ref()
                .map(|e| format!("{}:{}", e.provider, e.key))
                .unwrap_or_default(),
        ),
        dash(o.error.clone().unwrap_or_default()),
    ]
}

pub const COLUMNS: [&str; 14] = [
    "resource",
    "namespace",
    "name",
    "api version",
    "kind",
    "uid",
    "created",
    "deleted",
    "owners",
    "finalizers",
    "size",
    "mod rev",
    "encrypted",
    "error",
];
