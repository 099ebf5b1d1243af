//! `lifeboat get`: etcdctl's `get`, offline, on a snapshot file; the same selection,
//! the same history (back to the snapshot's compaction), the same output.

use std::io::{self, Write};
use std::path::Path;

use base64::Engine;
use serde::Serialize;

use super::view::{self, KeyRange, ReadError};
use crate::snapshot::ScanOptions;

/// What to read.
#[derive(Debug, Clone)]
pub struct GetOptions {
    pub range: KeyRange,
    /// Read at this revision (etcdctl `--rev`); `None`: the snapshot's.
    pub revision: Option<i64>,
    pub keys_only: bool,
    /// At most this many keys (etcdctl `--limit`; 0: all).
    pub limit: usize,
    pub scan: ScanOptions,
}

/// One key as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: i64,
}

/// What a `get` found: the keys (at most the limit), how many matched, and the revision
/// of the store (what etcd's response header carries).
#[derive(Debug, Clone)]
pub struct GetResult {
    pub kvs: Vec<Kv>,
    pub count: usize,
    pub more: bool,
    pub header_revision: i64,
}

pub fn get(path: &Path, o: &GetOptions) -> Result<GetResult, ReadError> {
    let keys_only = o.keys_only;
    let v = view::read(path, o.scan, &o.range, o.revision, &mut |kv| {
        Some(Kv {
            key: Vec::new(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: if keys_only {
                Vec::new()
            } else {
                kv.value.to_vec()
            },
            lease: kv.lease,
        })
    })?;
    let count = v.keys.len();
    let take = if o.limit == 0 {
        count
    } else {
        o.limit.min(count)
    };
    let kvs = v
        .keys
        .into_iter()
        .take(take)
        .map(|(key, kv)| Kv { key, ..kv })
        .collect();
    Ok(GetResult {
        kvs,
        count,
        more: take < count,
        header_revision: v.history.revision,
    })
}

/// What etcdctl's JSON header holds that a snapshot file cannot tell: from the backup's
/// manifest when there is one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Header {
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_term: u64,
}

/// `-w simple`: key and value lines as etcdctl prints them (`--print-value-only`: the
/// values alone).
pub fn write_simple(out: &mut dyn Write, r: &GetResult, value_only: bool) -> io::Result<()> {
    for kv in &r.kvs {
        if !value_only {
            out.write_all(&kv.key)?;
            out.write_all(b"\n")?;
        }
        out.write_all(&kv.value)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// `-w json`: etcdctl's shape (Go's encoding of `RangeResponse`: zero fields left out,
/// keys and values in base64).
pub fn write_json(out: &mut dyn Write, r: &GetResult, h: Header) -> io::Result<()> {
    fn zero(n: &i64) -> bool {
        *n == 0
    }
    fn zero_u(n: &u64) -> bool {
        *n == 0
    }
    #[derive(Serialize)]
    struct JsonHeader {
        #[serde(skip_serializing_if = "zero_u")]
        cluster_id: u64,
        #[serde(skip_serializing_if = "zero_u")]
        member_id: u64,
        #[serde(skip_serializing_if = "zero")]
        revision: i64,
        #[serde(skip_serializing_if = "zero_u")]
        raft_term: u64,
    }
    #[derive(Serialize)]
    struct JsonKv {
        #[serde(skip_serializing_if = "String::is_empty")]
        key: String,
        #[serde(skip_serializing_if = "zero")]
        create_revision: i64,
        #[serde(skip_serializing_if = "zero")]
        mod_revision: i64,
        #[serde(skip_serializing_if = "zero")]
        version: i64,
        #[serde(skip_serializing_if = "String::is_empty")]
        value: String,
        #[serde(skip_serializing_if = "zero")]
        lease: i64,
    }
    #[derive(Serialize)]
    struct Response {
        header: JsonHeader,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        kvs: Vec<JsonKv>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        more: bool,
        #[serde(skip_serializing_if = "zero_u")]
        count: u64,
    }
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let resp = Response {
        header: JsonHeader {
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            revision: r.header_revision,
            raft_term: h.raft_term,
        },
        kvs: r
            .kvs
            .iter()
            .map(|kv| JsonKv {
                key: b64(&kv.key),
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                value: b64(&kv.value),
                lease: kv.lease,
            })
            .collect(),
        more: r.more,
        count: r.count as u64,
    };
    serde_json::to_writer(&mut *out, &resp)?;
    out.write_all(b"\n")
}
