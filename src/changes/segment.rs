//! The records of a change-log segment and their byte encoding (storage format 2,
//! docs/storage-format.md).
//!
//! A segment's plain bytes (before zstd, and age when encryption is on) are the magic
//! `LBCHG\x02\n`, then records, each a one-byte tag and its fields, little-endian:
//!
//! ```text
//! 1 revision  rev i64, seen_ms i64, events u32, then per event:
//!             type u8 (0 put, 1 delete), create i64, mod i64, version i64, lease i64,
//!             key (u32 length + bytes), value (u32 length + bytes)
//! 2 mark      seen_ms i64, rev i64        everything up to rev was seen by seen_ms
//! 3 lease     id i64, granted_ttl i64, seen_ms i64
//! 0 end       records u64                 the count of records before it
//! ```
//!
//! Segments come back from storage, which someone else may have written: decoding checks
//! every length against what is left, every count against a bound, the order of
//! revisions, and that each event belongs to its revision, and says which byte is wrong.

use std::fmt;

const MAGIC: &[u8] = b"LBCHG\x02\n";
const TAG_END: u8 = 0;
const TAG_REVISION: u8 = 1;
const TAG_MARK: u8 = 2;
const TAG_LEASE: u8 = 3;

/// An event of one revision, as the watch delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: Vec<u8>,
    /// Empty for a delete.
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One record of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Every event of one revision, in the order etcd applied them, and when the
    /// recorder saw it (milliseconds since the Unix epoch, UTC).
    Revision {
        revision: i64,
        seen_ms: i64,
        events: Vec<Event>,
    },
    /// Every revision up to `revision` had been seen at `seen_ms`: maps quiet time to
    /// revisions.
    Mark { seen_ms: i64, revision: i64 },
    /// A lease first seen on a key, with the TTL it was granted.
    Lease {
        id: i64,
        granted_ttl: i64,
        seen_ms: i64,
    },
}

impl Record {
    /// Bytes this record takes encoded (for the segment's size limit).
    pub fn encoded_len(&self) -> usize {
        match self {
            Record::Revision { events, .. } => {
                1 + 8
                    + 8
                    + 4
                    + events
                        .iter()
                        .map(|e| 1 + 8 * 4 + 4 + e.key.len() + 4 + e.value.len())
                        .sum::<usize>()
            }
            Record::Mark { .. } => 1 + 16,
            Record::Lease { .. } => 1 + 24,
        }
    }
}

/// Appends records to a segment's plain bytes.
pub struct Encoder {
    buf: Vec<u8>,
    records: u64,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            buf: MAGIC.to_vec(),
            records: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn push(&mut self, record: &Record) {
        let b = &mut self.buf;
        match record {
            Record::Revision {
                revision,
                seen_ms,
                events,
            } => {
                b.push(TAG_REVISION);
                b.extend_from_slice(&revision.to_le_bytes());
                b.extend_from_slice(&seen_ms.to_le_bytes());
                b.extend_from_slice(&(events.len() as u32).to_le_bytes());
                for e in events {
                    b.push(match e.kind {
                        EventKind::Put => 0,
                        EventKind::Delete => 1,
                    });
                    for v in [e.create_revision, e.mod_revision, e.version, e.lease] {
                        b.extend_from_slice(&v.to_le_bytes());
                    }
                    for bytes in [&e.key, &e.value] {
                        b.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                        b.extend_from_slice(bytes);
                    }
                }
            }
            Record::Mark { seen_ms, revision } => {
                b.push(TAG_MARK);
                b.extend_from_slice(&seen_ms.to_le_bytes());
                b.extend_from_slice(&revision.to_le_bytes());
            }
            Record::Lease {
                id,
                granted_ttl,
                seen_ms,
            } => {
                b.push(TAG_LEASE);
                for v in [id, granted_ttl, seen_ms] {
                    b.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        self.records += 1;
    }

    /// The finished plain bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(TAG_END);
        self.buf.extend_from_slice(&self.records.to_le_bytes());
        self.buf
    }
}

/// Why a segment's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub offset: usize,
    pub reason: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for Malformed {}

/// etcd refuses keys and requests larger than its request limit, which can be raised but
/// not past what gRPC carries; no real event is larger than this.
const MAX_FIELD: usize = 2 << 30;

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, Malformed> {
        Err(Malformed {
            offset: self.at,
            reason: reason.into(),
        })
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        match self.b.get(self.at..self.at.saturating_add(n)) {
            Some(s) if self.at.checked_add(n).is_some() => {
                self.at += n;
                Ok(s)
            }
            _ => self.fail(format!(
                "{what} needs {n} bytes, {} are left",
                self.b.len() - self.at
            )),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.take(1, what)?[0])
    }
    fn i64(&mut self, what: &str) -> Result<i64, Malformed> {
        let s = self.take(8, what)?;
        Ok(i64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
    }
    fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
    }
    fn bytes(&mut self, what: &str) -> Result<Vec<u8>, Malformed> {
        let n = self.u32(what)? as usize;
        if n > MAX_FIELD {
            return self.fail(format!("{what} claims {n} bytes"));
        }
        Ok(self.take(n, what)?.to_vec())
    }
}

/// Decodes a segment's plain bytes, checking its structure: revisions strictly
/// increasing, every event's mod revision equal to its revision, kinds and counts sane,
/// the end record present and counting what came before it, nothing after it.
pub fn decode(bytes: &[u8]) -> Result<Vec<Record>, Malformed> {
    let mut r = Reader { b: bytes, at: 0 };
    if r.take(MAGIC.len(), "the magic")? != MAGIC {
        return Err(Malformed {
            offset: 0,
            reason: "not a lifeboat change-log segment (wrong magic)".into(),
        });
    }
    let mut records = Vec::new();
    let mut last_revision: Option<i64> = None;
    loop {
        let tag_at = r.at;
        match r.u8("a record tag")? {
            TAG_END => {
                let count = r.i64("the record count")? as u64;
                if count != records.len() as u64 {
                    return r.fail(format!(
                        "the end record counts {count} records, {} came before it",
                        records.len()
                    ));
                }
                if r.at != bytes.len() {
                    return r.fail(format!("{} bytes after the end record", bytes.len() - r.at));
                }
                return Ok(records);
            }
            TAG_REVISION => {
                let revision = r.i64("a revision")?;
                let seen_ms = r.i64("a time")?;
                let n = r.u32("an event count")? as usize;
                if revision < 1 {
                    return r.fail(format!("revision {revision} is not positive"));
                }
                if let Some(prev) = last_revision.filter(|p| revision <= *p) {
                    return r.fail(format!("revision {revision} follows revision {prev}"));
                }
                if n == 0 {
                    return r.fail(format!("revision {revision} has no events"));
                }
                // Each event takes at least 41 bytes: a count beyond what is left is a lie.
                if n > (bytes.len() - r.at) / 41 {
                    return r.fail(format!("revision {revision} claims {n} events"));
                }
                let mut events = Vec::with_capacity(n);
                for _ in 0..n {
                    let kind = match r.u8("an event type")? {
                        0 => EventKind::Put,
                        1 => EventKind::Delete,
                        t => {
                            return r
                                .fail(format!("event type {t} is neither put (0) nor delete (1)"));
                        }
                    };
                    let create_revision = r.i64("a create revision")?;
                    let mod_revision = r.i64("a mod revision")?;
                    let version = r.i64("a version")?;
                    let lease = r.i64("a lease")?;
                    let key = r.bytes("a key")?;
                    let value = r.bytes("a value")?;
                    if mod_revision != revision {
                        return r.fail(format!(
                            "an event with mod revision {mod_revision} inside revision {revision}"
                        ));
                    }
                    if key.is_empty() {
                        return r.fail("an event with an empty key");
                    }
                    events.push(Event {
                        kind,
                        key,
                        value,
                        create_revision,
                        mod_revision,
                        version,
                        lease,
                    });
                }
                last_revision = Some(revision);
                records.push(Record::Revision {
                    revision,
                    seen_ms,
                    events,
                });
            }
            TAG_MARK => {
                let seen_ms = r.i64("a time")?;
                let revision = r.i64("a revision")?;
                records.push(Record::Mark { seen_ms, revision });
            }
            TAG_LEASE => {
                let id = r.i64("a lease id")?;
                let granted_ttl = r.i64("a TTL")?;
                let seen_ms = r.i64("a time")?;
                records.push(Record::Lease {
                    id,
                    granted_ttl,
                    seen_ms,
                });
            }
            t => {
                return Err(Malformed {
                    offset: tag_at,
                    reason: format!("unknown record tag {t}"),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::Lease {
                id: 7,
                granted_ttl: 30,
                seen_ms: 1,
            },
            Record::Revision {
                revision: 5,
                seen_ms: 2,
                events: vec![
                    Event {
                        kind: EventKind::Put,
                        key: b"/registry/a".to_vec(),
                        value: vec![0; 300],
                        create_revision: 5,
                        mod_revision: 5,
                        version: 1,
                        lease: 7,
                    },
                    Event {
                        kind: EventKind::Delete,
                        key: b"/registry/b".to_vec(),
                        value: vec![],
                        create_revision: 0,
                        mod_revision: 5,
                        version: 0,
                        lease: 0,
                    },
                ],
            },
            Record::Mark {
                seen_ms: 3,
                revision: 5,
            },
        ]
    }

    fn encode(records: &[Record]) -> Vec<u8> {
        let mut e = Encoder::new();
        for r in records {
            e.push(r);
        }
        e.finish()
    }

    #[test]
    fn round_trip_and_sizes() {
        let records = sample();
        let bytes = encode(&records);
        let sum: usize = records.iter().map(Record::encoded_len).sum();
        assert_eq!(bytes.len(), MAGIC.len() + sum + 9);
        assert_eq!(decode(&bytes).expect("decodes"), records);
    }

    #[test]
    fn refuses_what_is_not_consistent() {
        let good = sample();
        let mut twice = good.clone();
        twice.push(good[1].clone());
        let e = decode(&encode(&twice)).unwrap_err();
        assert!(e.reason.contains("follows revision 5"), "{e}");
        let mut bytes = encode(&good);
        bytes.push(0);
        assert!(decode(&bytes).unwrap_err().reason.contains("after the end"));
        let bytes = encode(&good);
        let cut = &bytes[..bytes.len() - 9];
        assert!(decode(cut).is_err());
        assert!(decode(b"LBCHG\x01\n").unwrap_err().reason.contains("magic"));
    }

    proptest! {
        #[test]
        fn any_damage_is_an_error_or_decodes_sanely(at in 0usize..1000, bit in 0u8..8) {
            let mut bytes = encode(&sample());
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
            // Never a panic; when it still decodes, the invariants hold.
            if let Ok(records) = decode(&bytes) {
                for r in records {
                    if let Record::Revision { revision, events, .. } = r {
                        prop_assert!(events.iter().all(|e| e.mod_revision == revision));
                    }
                }
            }
        }

        #[test]
        fn truncation_is_always_an_error(cut in 0usize..1000) {
            let bytes = encode(&sample());
            let cut = cut % bytes.len();
            prop_assert!(decode(&bytes[..cut]).is_err());
        }
    }
}
