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
        ObjectRow {
            key: String::from_utf8_lossy(kv.key).into_owned(),
            ..ObjectRow::keyless(place, kv, keyring)
        }
    }

    /// [`ObjectRow::of`] with an empty `key`, for a caller that holds the key already.
    fn keyless(place: Place, kv: &KeyValue<'_>, keyring: Option<&Keyring>) -> ObjectRow {
        let inspected = kube::inspect(kv.key, kv.value, keyring);
        let (object, error) = match inspected.object {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e)),
        };
        ObjectRow {
            key: String::new(),
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
        let mut row = ObjectRow::keyless(place, kv, keyring);
        if let Some(m) = &mut row.object {
            m.api_version = shared.get(&m.api_version);
            m.kind = shared.get(&m.kind);
        }
        Some(row)
    })?;
    let objects = with_keys(v.keys);
    Ok(Listing {
        revision: v.revision,
        unreadable: objects.iter().filter(|o| o.error.is_some()).count(),
        objects,
    })
}

/// [`list`] without reading the values: each row has its key, place, revisions and
/// size, no `object`, until [`fill`] reads it. What a diff needs to find what changed.
pub fn list_keys(
    path: &Path,
    scan: ScanOptions,
    selection: &Selection,
    at: Option<i64>,
) -> Result<Listing, ReadError> {
    let mut shared = Interner::default();
    // Small rows while the view sorts them; whole ones once sorted.
    let v = view::read(path, scan, &selection.range(), at, &mut |kv| {
        let place = shared.place(selection.place(kv.key)?);
        let revisions = [kv.create_revision, kv.mod_revision, kv.version];
        Some((place, kv.value.len() as u64, revisions))
    })?;
    let objects = v
        .keys
        .into_iter()
        .map(
            |(key, (place, size, [create, modified, version]))| ObjectRow {
                key: text(key),
                place,
                size,
                create_revision: create,
                mod_revision: modified,
                version,
                encryption: None,
                object: None,
                error: None,
            },
        )
        .collect();
    Ok(Listing {
        revision: v.revision,
        unreadable: 0,
        objects,
    })
}

/// Reads the values of `rows`, from [`list_keys`] of the same file at the same
/// revision `at`, into them: one more pass over the file, decoding only those.
pub fn fill(
    path: &Path,
    at: i64,
    selection: &Selection,
    rows: Vec<&mut ObjectRow>,
    keyring: Option<&Keyring>,
) -> Result<(), ReadError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut wanted: std::collections::HashMap<String, &mut ObjectRow> =
        rows.into_iter().map(|r| (r.key.clone(), r)).collect();
    // The trailer was checked by the first pass.
    let scan = ScanOptions {
        verify_trailer: false,
    };
    let v = view::read(path, scan, &selection.range(), Some(at), &mut |kv| {
        let key = String::from_utf8_lossy(kv.key);
        let place = wanted.get(key.as_ref())?.place.clone();
        Some(ObjectRow::of(place, kv, keyring))
    })?;
    for (_, row) in v.keys {
        if let Some(r) = wanted.get_mut(&row.key) {
            **r = row;
        }
    }
    Ok(())
}

/// The rows of a view, each given the view's copy of its key.
fn with_keys(keys: Vec<(Vec<u8>, ObjectRow)>) -> Vec<ObjectRow> {
    keys.into_iter()
        .map(|(key, row)| ObjectRow {
            key: text(key),
            ..row
        })
        .collect()
}

/// A key as a row shows it (lossy where it is not UTF-8), without a copy when it is.
fn text(key: Vec<u8>) -> String {
    String::from_utf8(key).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A listing already in JSON: each row serialized as its record is read, while its
/// strings are still in the cache, rather than at the end from a quarter of a million
/// scattered allocations (half the time of a large listing went to those reads).
/// [`RenderedListing::write`] prints exactly what serializing the [`Listing`] would.
pub struct RenderedListing {
    pub revision: i64,
    /// Each row's JSON object, in key order.
    pub rows: Vec<Box<[u8]>>,
    pub unreadable: usize,
}

impl RenderedListing {
    /// Writes the listing as one line of JSON, the shape of [`Listing`].
    pub fn write(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        write!(out, "{{\"revision\":{},\"objects\":[", self.revision)?;
        for (i, row) in self.rows.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            out.write_all(row)?;
        }
        writeln!(out, "],\"unreadable\":{}}}", self.unreadable)
    }
}

/// [`list`], each row rendered as JSON as it is read. Memory follows the objects
/// selected: the key and its row's JSON (about 300 bytes per Kubernetes object).
pub fn list_rendered(
    path: &Path,
    scan: ScanOptions,
    selection: &Selection,
    at: Option<i64>,
    keyring: Option<&Keyring>,
) -> Result<RenderedListing, ReadError> {
    let mut shared = Interner::default();
    let mut json = Vec::with_capacity(1024);
    let v = view::read(path, scan, &selection.range(), at, &mut |kv| {
        let place = shared.place(selection.place(kv.key)?);
        let row = ObjectRow::of(place, kv, keyring);
        json.clear();
        // Only strings and integers: serializing cannot fail.
        serde_json::to_writer(&mut json, &row).unwrap_or_default();
        Some((Box::<[u8]>::from(json.as_slice()), row.error.is_some()))
    })?;
    let unreadable = v.keys.iter().filter(|(_, (_, bad))| *bad).count();
    Ok(RenderedListing {
        revision: v.revision,
        rows: v.keys.into_iter().map(|(_, (json, _))| json).collect(),
        unreadable,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::select::place_under;

    #[test]
    fn a_rendered_listing_prints_what_the_listing_serializes_to() {
        let row = |key: &str, error: Option<&str>| ObjectRow {
            key: key.into(),
            place: place_under(b"/registry/", key.as_bytes()).unwrap(),
            size: 3,
            create_revision: 1,
            mod_revision: 2,
            version: 1,
            encryption: None,
            object: None,
            error: error.map(str::to_owned),
        };
        for objects in [
            vec![],
            vec![
                row("/registry/pods/a/p", None),
                row("/registry/pods/a/\"q", Some("bad")),
            ],
        ] {
            let listing = Listing {
                revision: 7,
                unreadable: objects.iter().filter(|o| o.error.is_some()).count(),
                objects,
            };
            let rendered = RenderedListing {
                revision: 7,
                rows: listing
                    .objects
                    .iter()
                    .map(|o| serde_json::to_vec(o).unwrap().into_boxed_slice())
                    .collect(),
                unreadable: listing.unreadable,
            };
            let mut out = Vec::new();
            rendered.write(&mut out).unwrap();
            let mut want = serde_json::to_vec(&listing).unwrap();
            want.push(b'\n');
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
    }
}
