//! etcd's MVCC records inside the bbolt file: revision keys of the `key` bucket and the
//! protobuf `mvccpb.KeyValue` values they map to.
//!
//! ```text
//! key bucket key (17 or 18 bytes)      mvccpb.KeyValue (protobuf)
//! off size                              field wire  meaning
//!   0    8 main revision (big-endian)      1   2    key
//!   8    1 '_'                             2   0    create_revision
//!   9    8 sub revision (big-endian)       3   0    mod_revision
//!  17    1 't' (present only on deletes)   4   0    version
//!                                          5   2    value
//!                                          6   0    lease
//! ```

/// A key of the `key` bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
    /// A delete (tombstone): the key stops existing at this revision.
    pub tombstone: bool,
}

impl Revision {
    /// Parses a `key` bucket key; `None` when it is not a revision.
    pub fn parse(k: &[u8]) -> Option<Revision> {
        let tombstone = match k.len() {
            17 => false,
            18 if k[17] == b't' => true,
            _ => return None,
        };
        if k[8] != b'_' {
            return None;
        }
        Some(Revision {
            main: i64::from_be_bytes(k[0..8].try_into().ok()?),
            sub: i64::from_be_bytes(k[9..17].try_into().ok()?),
            tombstone,
        })
    }

    /// The main revision in a `meta` bucket compaction record (17 bytes, like a key).
    pub fn parse_main(v: &[u8]) -> Option<i64> {
        Some(i64::from_be_bytes(v.get(0..8)?.try_into().ok()?))
    }
}

/// The fields of a `mvccpb.KeyValue` the inventory needs; the value itself is borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyValue<'a> {
    pub key: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: &'a [u8],
    pub lease: i64,
}

impl<'a> KeyValue<'a> {
    /// Decodes a protobuf `mvccpb.KeyValue`; unknown fields are skipped like protobuf does.
    pub fn decode(mut b: &'a [u8]) -> Result<Self, &'static str> {
        let mut kv = KeyValue::default();
        while !b.is_empty() {
            let tag = varint(&mut b).ok_or("truncated field tag")?;
            let (field, wire) = (tag >> 3, tag & 7);
            match wire {
                0 => {
                    let v = varint(&mut b).ok_or("truncated varint")? as i64;
                    match field {
                        2 => kv.create_revision = v,
                        3 => kv.mod_revision = v,
                        4 => kv.version = v,
                        6 => kv.lease = v,
                        _ => {}
                    }
                }
                2 => {
                    let len = varint(&mut b).ok_or("truncated length")?;
                    let len = usize::try_from(len).map_err(|_| "length too large")?;
                    if len > b.len() {
                        return Err("length past the end of the record");
                    }
                    let (bytes, rest) = b.split_at(len);
                    b = rest;
                    match field {
                        1 => kv.key = bytes,
                        5 => kv.value = bytes,
                        _ => {}
                    }
                }
                1 => b = b.get(8..).ok_or("truncated fixed64")?,
                5 => b = b.get(4..).ok_or("truncated fixed32")?,
                _ => return Err("unknown protobuf wire type"),
            }
            if field == 0 {
                return Err("field number 0");
            }
        }
        Ok(kv)
    }
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions() {
        let mut k = Vec::new();
        k.extend_from_slice(&5i64.to_be_bytes());
        k.push(b'_');
        k.extend_from_slice(&2i64.to_be_bytes());
        assert_eq!(
            Revision::parse(&k),
            Some(Revision {
                main: 5,
                sub: 2,
                tombstone: false
            })
        );
        k.push(b't');
        assert!(Revision::parse(&k).unwrap().tombstone);
        k[17] = b'x';
        assert_eq!(Revision::parse(&k), None);
        assert_eq!(Revision::parse(b"short"), None);
    }

    #[test]
    fn key_value_decodes_and_rejects_garbage() {
        // key "a", create 2, mod 300, version 1, value "xyz", lease 7
        let b = [
            0x0a, 1, b'a', 0x10, 2, 0x18, 0xac, 0x02, 0x20, 1, 0x2a, 3, b'x', b'y', b'z', 0x30, 7,
        ];
        let kv = KeyValue::decode(&b).unwrap();
        assert_eq!(kv.key, b"a");
        assert_eq!(kv.mod_revision, 300);
        assert_eq!(kv.value, b"xyz");
        assert_eq!(kv.lease, 7);
        assert!(KeyValue::decode(&b[..b.len() - 1]).is_err());
        assert!(KeyValue::decode(&[0x0a, 200]).is_err());
        assert!(KeyValue::decode(&[0x0f]).is_err());
    }
}
