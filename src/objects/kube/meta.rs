//! What `lifeboat objects` shows of one Kubernetes object: its type and `ObjectMeta`,
//! read from the protobuf the apiserver stores (`k8s\0` + `runtime.Unknown`) or from
//! JSON (custom resources, CRDs, APIServices).
//!
//! ```text
//! runtime.Unknown            ObjectMeta (k8s.io/apimachinery .../meta/v1/generated.proto)
//!  1 typeMeta                  1 name          8 creationTimestamp (Time)
//!     1 apiVersion             2 generateName  9 deletionTimestamp (Time)
//!     2 kind                   3 namespace    10 deletionGracePeriodSeconds
//!  2 raw: the object, whose    5 uid          11 labels (map<string,string>)
//!    field 1 is ObjectMeta     6 resourceVersion (stored empty)
//!  3 contentEncoding           7 generation   13 ownerReferences
//!  4 contentType                              14 finalizers
//!                                             17 managedFields (skipped)
//! Time: 1 seconds (int64), 2 nanos (int32)
//! OwnerReference: 1 kind, 3 name, 4 uid, 5 apiVersion, 6 controller, 7 blockOwnerDeletion
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::protobuf::{self, Fields, Malformed};

/// The prefix of a protobuf value (`k8s.io/apimachinery/pkg/runtime/serializer/protobuf`).
pub const PROTOBUF_PREFIX: &[u8] = b"k8s\x00";

/// The type and metadata of one object.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub api_version: Arc<str>,
    pub kind: Arc<str>,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub uid: String,
    /// RFC 3339, UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// In key order, as a map in JSON.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "as_map")]
    pub labels: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<Owner>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// `protobuf` or `json`: how the apiserver stored it.
    pub encoding: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller: bool,
}

fn as_map<S: serde::Serializer>(labels: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(labels.iter().map(|(k, v)| (k, v)))
}

/// Decodes a plain (not encrypted) value: protobuf when it starts with `k8s\0`, JSON
/// when it starts with `{`, anything else is not a Kubernetes object.
pub fn decode(value: &[u8]) -> Result<ObjectMeta, String> {
    if let Some(envelope) = value.strip_prefix(PROTOBUF_PREFIX) {
        return decode_protobuf(envelope).map_err(|m| format!("protobuf envelope: {m}"));
    }
    if value.first() == Some(&b'{') {
        return decode_json(value);
    }
    Err(match value.first() {
        None => "empty value".to_owned(),
        Some(_) => format!(
            "neither Kubernetes protobuf (k8s\\0...) nor JSON: starts with {:?}",
            value[..value.len().min(8)].escape_ascii().to_string()
        ),
    })
}

fn decode_protobuf(envelope: &[u8]) -> Result<ObjectMeta, Malformed> {
    let mut meta = ObjectMeta {
        encoding: "protobuf",
        ..ObjectMeta::default()
    };
    let mut raw = None;
    let mut fields = Fields::new(envelope);
    while let Some(field) = fields.next_field() {
        let (n, v, at) = field?;
        match n {
            1 => {
                let mut tm = Fields::at(protobuf::bytes(v, "typeMeta", at)?, at);
                while let Some(field) = tm.next_field() {
                    let (n, v, at) = field?;
                    match n {
                        1 => meta.api_version = type_name(protobuf::str(v, "apiVersion", at)?),
                        2 => meta.kind = type_name(protobuf::str(v, "kind", at)?),
                        _ => {}
                    }
                }
            }
            2 => raw = Some((protobuf::bytes(v, "raw", at)?, at)),
            3 => {
                let encoding = protobuf::string(v, "contentEncoding", at)?;
                if !encoding.is_empty() {
                    return Err(Malformed {
                        what: format!("content encoding {encoding:?}, which lifeboat cannot read"),
                        offset: at,
                    });
                }
            }
            _ => {}
        }
    }
    if meta.kind.is_empty() {
        return Err(Malformed {
            what: "no kind in the envelope's typeMeta".into(),
            offset: 0,
        });
    }
    meta.labels.sort();
    meta.labels.dedup_by(|a, b| a.0 == b.0);
    let (raw, raw_at) = raw.ok_or(Malformed {
        what: "no raw object in the envelope".into(),
        offset: envelope.len(),
    })?;
    let mut object = Fields::at(raw, raw_at);
    while let Some(field) = object.next_field() {
        let (n, v, at) = field?;
        if n == 1 {
            object_meta(protobuf::bytes(v, "metadata", at)?, at, &mut meta)?;
            return Ok(meta);
        }
    }
    Err(Malformed {
        what: format!("the {} has no metadata (field 1)", meta.kind),
        offset: raw_at,
    })
}

/// The one copy of an `apiVersion` or `kind` on this thread: a snapshot holds few
/// distinct ones, a quarter of a million times each. At most [`TYPE_NAMES`] are kept
/// (values come from the snapshot, which may hold anything).
fn type_name(s: &str) -> Arc<str> {
    thread_local! {
        static NAMES: std::cell::RefCell<std::collections::HashSet<Arc<str>>> =
            Default::default();
    }
    NAMES.with_borrow_mut(|names| {
        if let Some(name) = names.get(s) {
            return name.clone();
        }
        let name: Arc<str> = s.into();
        if names.len() < TYPE_NAMES {
            names.insert(name.clone());
        }
        name
    })
}

const TYPE_NAMES: usize = 4096;

fn object_meta(bytes: &[u8], offset: usize, meta: &mut ObjectMeta) -> Result<(), Malformed> {
    let mut f = Fields::at(bytes, offset);
    while let Some(field) = f.next_field() {
        let (n, v, at) = field?;
        match n {
            1 => meta.name = protobuf::string(v, "name", at)?,
            3 => meta.namespace = protobuf::string(v, "namespace", at)?,
            5 => meta.uid = protobuf::string(v, "uid", at)?,
            8 => meta.creation_timestamp = time(protobuf::bytes(v, "creationTimestamp", at)?, at)?,
            9 => meta.deletion_timestamp = time(protobuf::bytes(v, "deletionTimestamp", at)?, at)?,
            11 => {
                meta.labels
                    .push(map_entry(protobuf::bytes(v, "labels", at)?, at)?);
            }
            13 => meta
                .owner_references
                .push(owner(protobuf::bytes(v, "ownerReferences", at)?, at)?),
            14 => meta.finalizers.push(protobuf::string(v, "finalizers", at)?),
            _ => {}
        }
    }
    Ok(())
}

/// A `metav1.Time`, as RFC 3339 UTC (`None` for the zero time, which Kubernetes omits).
fn time(bytes: &[u8], offset: usize) -> Result<Option<String>, Malformed> {
    let (mut seconds, mut nanos) = (0i64, 0u32);
    let mut f = Fields::at(bytes, offset);
    while let Some(field) = f.next_field() {
        let (n, v, at) = field?;
        match n {
            1 => seconds = protobuf::varint(v, "seconds", at)? as i64,
            2 => nanos = protobuf::varint(v, "nanos", at)? as u32,
            _ => {}
        }
    }
    if seconds == 0 && nanos == 0 {
        return Ok(None);
    }
    chrono::DateTime::from_timestamp(seconds, nanos)
        .map(|t| Some(rfc3339(t)))
        .ok_or(Malformed {
            what: format!("time {seconds}s {nanos}ns is out of range"),
            offset,
        })
}

pub(crate) fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn map_entry(bytes: &[u8], offset: usize) -> Result<(String, String), Malformed> {
    let (mut k, mut v) = (String::new(), String::new());
    let mut f = Fields::at(bytes, offset);
    while let Some(field) = f.next_field() {
        let (n, value, at) = field?;
        match n {
            1 => k = protobuf::string(value, "label key", at)?,
            2 => v = protobuf::string(value, "label value", at)?,
            _ => {}
        }
    }
    Ok((k, v))
}

fn owner(bytes: &[u8], offset: usize) -> Result<Owner, Malformed> {
    let mut o = Owner::default();
    let mut f = Fields::at(bytes, offset);
    while let Some(field) = f.next_field() {
        let (n, v, at) = field?;
        match n {
            1 => o.kind = protobuf::string(v, "owner kind", at)?,
            3 => o.name = protobuf::string(v, "owner name", at)?,
            4 => o.uid = protobuf::string(v, "owner uid", at)?,
            5 => o.api_version = protobuf::string(v, "owner apiVersion", at)?,
            6 => o.controller = protobuf::varint(v, "owner controller", at)? != 0,
            _ => {}
        }
    }
    Ok(o)
}

/// The fields of a JSON object that `objects` shows; others are ignored, a field of the
/// wrong type is an error.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonObject {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: JsonMeta,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct JsonMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    uid: String,
    creation_timestamp: Option<String>,
    deletion_timestamp: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    owner_references: Vec<Owner>,
    #[serde(default)]
    finalizers: Vec<String>,
}

fn decode_json(value: &[u8]) -> Result<ObjectMeta, String> {
    let o: JsonObject = serde_json::from_slice(value).map_err(|e| format!("JSON: {e}"))?;
    if o.kind.is_empty() || o.api_version.is_empty() {
        return Err("JSON without apiVersion and kind: not a Kubernetes object".into());
    }
    let when = |t: Option<String>, what: &str| -> Result<Option<String>, String> {
        match t {
            None => Ok(None),
            Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                .map(|d| Some(rfc3339(d.with_timezone(&chrono::Utc))))
                .map_err(|e| format!("JSON: metadata.{what} {t:?} is not RFC 3339: {e}")),
        }
    };
    let m = o.metadata;
    Ok(ObjectMeta {
        api_version: type_name(&o.api_version),
        kind: type_name(&o.kind),
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        creation_timestamp: when(m.creation_timestamp, "creationTimestamp")?,
        deletion_timestamp: when(m.deletion_timestamp, "deletionTimestamp")?,
        labels: m.labels.into_iter().collect(),
        owner_references: m.owner_references,
        finalizers: m.finalizers,
        encoding: "json",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_are_read_and_wrong_types_are_errors() {
        let m = decode(
            br#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w","namespace":"a","uid":"u1","creationTimestamp":"2026-01-02T03:04:05Z","finalizers":["f"],"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"c","uid":"u0","controller":true}]}}
"#,
        )
        .unwrap();
        assert_eq!((&*m.kind, m.name.as_str()), ("Widget", "w"));
        assert_eq!(
            m.creation_timestamp.as_deref(),
            Some("2026-01-02T03:04:05Z")
        );
        assert_eq!(m.owner_references[0].name, "c");
        assert!(decode(br#"{"apiVersion":"v1","kind":"X","metadata":{"name":5}}"#).is_err());
        assert!(decode(br#"{"metadata":{}}"#).is_err());
        assert!(decode(b"").is_err());
        assert!(decode(b"k8s\x00\x0a\x05").is_err());
        assert!(decode(b"garbage").is_err());
    }
}
