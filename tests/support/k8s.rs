//! Kubernetes' own encoder for realistic etcd values: `k8s-encode`
//! (`tests/tools/k8s-encode/main.go`, built by `scripts/install-test-deps.sh` from the
//! Debian sid packages of the Kubernetes 1.36 Go libraries into `.tools/bin/`). It turns
//! JSON objects into exactly the bytes kube-apiserver writes to etcd — `k8s\0` +
//! `runtime.Unknown` protobuf for built-in types, compact JSON + `"\n"` for custom
//! resources — and, given an `EncryptionConfiguration`, encrypts them with the
//! apiserver's own transformers (`k8s:enc:<provider>:v1:<key name>:...`), the etcd key
//! as authenticated data. Our decoder must never produce the values it reads itself.
//!
//! ```ignore
//! let values = k8s::encode(
//!     &[EncodeInput::new("/registry/configmaps/team-a/settings", json!({
//!         "apiVersion": "v1", "kind": "ConfigMap",
//!         "metadata": {"name": "settings", "namespace": "team-a"},
//!     }))],
//!     None,
//! );
//! // values[0] == ("/registry/configmaps/team-a/settings".into(), b"k8s\0...".to_vec())
//! ```
//!
//! The objects are encoded as given: the apiserver's defaulting is not applied, and a
//! field the typed object does not have is an error (the apiserver would drop it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::tools::{require_binary, tools_dir};

/// The `k8s-encode` binary (panics naming `make test` when it is not installed).
pub fn encoder() -> PathBuf {
    require_binary(tools_dir().join("bin").join("k8s-encode"))
}

/// One object to encode: one input line of `k8s-encode`.
#[derive(Clone, Debug)]
pub struct EncodeInput {
    /// The etcd key, e.g. `/registry/secrets/team-a/db`; the authenticated data of
    /// encryption, and echoed in the result.
    pub key: String,
    /// The full object, with `apiVersion` and `kind`.
    pub object: Value,
    /// `Some("protobuf")` or `Some("json")`; `None`: protobuf for built-in types, JSON
    /// for everything else (custom resources, CRDs, APIServices), as the apiserver does.
    pub format: Option<&'static str>,
    /// The group resource an encryption configuration is matched against (`secrets`,
    /// `deployments.apps`, `widgets.example.com`); `None`: taken from the key
    /// (`/registry/<resource>/...`, `/registry/<group>/<resource>/...`).
    pub resource: Option<String>,
}

impl EncodeInput {
    pub fn new(key: impl Into<String>, object: Value) -> Self {
        EncodeInput {
            key: key.into(),
            object,
            format: None,
            resource: None,
        }
    }

    pub fn format(mut self, format: &'static str) -> Self {
        self.format = Some(format);
        self
    }

    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    fn line(&self) -> String {
        let mut line = json!({ "key": self.key, "object": self.object });
        if let Some(format) = self.format {
            line["format"] = json!(format);
        }
        if let Some(resource) = &self.resource {
            line["resource"] = json!(resource);
        }
        line.to_string()
    }
}

/// `(key, exact etcd value)` for each object, in order; panics with the tool's message
/// when it refuses one.
pub fn encode(objects: &[EncodeInput], encryption_config: Option<&Path>) -> Vec<(String, Vec<u8>)> {
    try_encode(objects, encryption_config).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`encode`], but a refusal is `Err(what k8s-encode printed on stderr)`.
pub fn try_encode(
    objects: &[EncodeInput],
    encryption_config: Option<&Path>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let bin = encoder();
    let mut cmd = Command::new(&bin);
    if let Some(config) = encryption_config {
        cmd.arg("--encryption-config").arg(config);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let mut input = String::new();
    for object in objects {
        input.push_str(&object.line());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written from a thread: the tool answers line by line, so a large input would
    // otherwise fill both pipes.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("wait for k8s-encode");
    // A refusal closes stdin early (broken pipe): the exit status says what happened.
    let _ = writer.join().expect("stdin writer");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!("k8s-encode failed ({}): {stderr}", out.status));
    }
    let stdout = String::from_utf8(out.stdout).expect("k8s-encode writes UTF-8 JSON lines");
    let values: Vec<(String, Vec<u8>)> = stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("k8s-encode printed a line that is not JSON ({e}): {line}")
            });
            let key = v["key"].as_str().expect("\"key\" in the output").to_owned();
            let value = base64_decode(v["value"].as_str().expect("\"value\" in the output"))
                .unwrap_or_else(|| panic!("\"value\" is not base64: {line}"));
            (key, value)
        })
        .collect();
    assert_eq!(
        values.len(),
        objects.len(),
        "k8s-encode printed {} values for {} objects; stderr: {stderr}",
        values.len(),
        objects.len()
    );
    Ok(values)
}

/// Standard base64 with padding (what Go's `base64.StdEncoding` writes).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for chunk in b.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | sextet(c)?;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

/// One field of a protobuf message, as the tests look at it (no schema).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtoField<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64(u64),
    Fixed32(u32),
}

impl<'a> ProtoField<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        match self {
            ProtoField::Bytes(b) => b,
            other => panic!("expected a length-delimited field, got {other:?}"),
        }
    }

    pub fn str(&self) -> &'a str {
        std::str::from_utf8(self.bytes()).expect("a UTF-8 string field")
    }
}

/// The top-level fields of one protobuf message, in order: `(field number, value)`.
/// Panics on bytes that are not a protobuf message (a test tool, not our decoder).
pub fn proto_fields(mut msg: &[u8]) -> Vec<(u32, ProtoField<'_>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first().expect("a varint runs past the end");
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
        }
        panic!("a varint longer than 10 bytes")
    }
    fn take<'a>(b: &mut &'a [u8], n: usize) -> &'a [u8] {
        assert!(n <= b.len(), "a field of {n} bytes runs past the end");
        let (head, rest) = b.split_at(n);
        *b = rest;
        head
    }
    let mut fields = Vec::new();
    while !msg.is_empty() {
        let tag = varint(&mut msg);
        let number = u32::try_from(tag >> 3).expect("field number");
        let field = match tag & 7 {
            0 => ProtoField::Varint(varint(&mut msg)),
            1 => ProtoField::Fixed64(u64::from_le_bytes(take(&mut msg, 8).try_into().unwrap())),
            2 => {
                let n = usize::try_from(varint(&mut msg)).expect("length");
                ProtoField::Bytes(take(&mut msg, n))
            }
            5 => ProtoField::Fixed32(u32::from_le_bytes(take(&mut msg, 4).try_into().unwrap())),
            t => panic!("wire type {t} in field {number}"),
        };
        fields.push((number, field));
    }
    fields
}

/// Every value of field `number` in `fields`.
pub fn proto_all<'a>(fields: &[(u32, ProtoField<'a>)], number: u32) -> Vec<ProtoField<'a>> {
    fields
        .iter()
        .filter(|(n, _)| *n == number)
        .map(|(_, f)| f.clone())
        .collect()
}

/// The single value of field `number` (panics when it is absent or repeated).
pub fn proto_one<'a>(fields: &[(u32, ProtoField<'a>)], number: u32) -> ProtoField<'a> {
    let mut all = proto_all(fields, number);
    assert_eq!(
        all.len(),
        1,
        "field {number} appears {} times in {fields:?}",
        all.len()
    );
    all.remove(0)
}

/// The `runtime.Unknown` envelope of a protobuf value: `k8s\0` and then
/// `{1: typeMeta {1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding, 4: contentType}`.
#[derive(Debug)]
pub struct Unknown<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub raw: &'a [u8],
    pub content_encoding: &'a str,
    pub content_type: &'a str,
}

/// Reads the envelope of a `k8s\0` value (panics naming what is missing).
pub fn unknown(value: &[u8]) -> Unknown<'_> {
    let body = value
        .strip_prefix(b"k8s\0")
        .unwrap_or_else(|| panic!("not a k8s\\0 value: {:?}", String::from_utf8_lossy(value)));
    let fields = proto_fields(body);
    let type_meta = proto_fields(proto_one(&fields, 1).bytes());
    Unknown {
        api_version: proto_str(&type_meta, 1),
        kind: proto_str(&type_meta, 2),
        raw: proto_one(&fields, 2).bytes(),
        content_encoding: proto_str(&fields, 3),
        content_type: proto_str(&fields, 4),
    }
}

/// The first value of string field `number`, or "" when it is absent (proto's default).
pub fn proto_str<'a>(fields: &[(u32, ProtoField<'a>)], number: u32) -> &'a str {
    proto_all(fields, number)
        .first()
        .map(|f| f.str())
        .unwrap_or("")
}
