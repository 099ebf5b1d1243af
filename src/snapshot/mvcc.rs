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

/// Why bytes are not a protobuf `mvccpb.KeyValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvError {
    TruncatedTag,
    TruncatedVarint,
    TruncatedLength,
    LengthTooLarge,
    PastTheEnd,
    TruncatedFixed64,
    TruncatedFixed32,
    UnknownWireType,
    FieldZero,
}

impl KvError {
    const ALL: [KvError; 9] = [
        KvError::TruncatedTag,
        KvError::TruncatedVarint,
        KvError::TruncatedLength,
        KvError::LengthTooLarge,
        KvError::PastTheEnd,
        KvError::TruncatedFixed64,
        KvError::TruncatedFixed32,
        KvError::UnknownWireType,
        KvError::FieldZero,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KvError::TruncatedTag => "truncated field tag",
            KvError::TruncatedVarint => "truncated varint",
            KvError::TruncatedLength => "truncated length",
            KvError::LengthTooLarge => "length too large",
            KvError::PastTheEnd => "length past the end of the record",
            KvError::TruncatedFixed64 => "truncated fixed64",
            KvError::TruncatedFixed32 => "truncated fixed32",
            KvError::UnknownWireType => "unknown protobuf wire type",
            KvError::FieldZero => "field number 0",
        }
    }

    /// A one-byte code for storing the error (see [`KvError::from_code`]).
    pub(crate) fn code(self) -> u8 {
        KvError::ALL.iter().position(|&e| e == self).unwrap_or(0) as u8
    }

    pub(crate) fn from_code(code: u8) -> Option<KvError> {
        KvError::ALL.get(usize::from(code)).copied()
    }
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'a> KeyValue<'a> {
    /// Decodes a protobuf `mvccpb.KeyValue`; unknown fields are skipped like protobuf does.
    pub fn decode(mut b: &'a [u8]) -> Result<Self, KvError> {
        let mut kv = KeyValue::default();
        while !b.is_empty() {
            let tag = varint(&mut b).ok_or(KvError::TruncatedTag)?;
            let (field, wire) = (tag >> 3, tag & 7);
            match wire {
                0 => {
                    let v = varint(&mut b).ok_or(KvError::TruncatedVarint)? as i64;
                    match field {
                        2 => kv.create_revision = v,
                        3 => kv.mod_revision = v,
                        4 => kv.version = v,
                        6 => kv.lease = v,
                        _ => {}
                    }
                }
                2 => {
                    let len = varint(&mut b).ok_or(KvError::TruncatedLength)?;
                    let len = usize::try_from(len).map_err(|_| KvError::LengthTooLarge)?;
                    if len > b.len() {
                        return Err(KvError::PastTheEnd);
                    }
                    let (bytes, rest) = b.split_at(len);
                    b = rest;
                    match field {
                        1 => kv.key = bytes,
                        5 => kv.value = bytes,
                        _ => {}
                    }
                }
                1 => b = b.get(8..).ok_or(KvError::TruncatedFixed64)?,
                5 => b = b.get(4..).ok_or(KvError::TruncatedFixed32)?,
                _ => return Err(KvError::UnknownWireType),
            }
            if field == 0 {
                return Err(KvError::FieldZero);
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

/// What the stream check needs of a `mvccpb.KeyValue` it sees in pieces: whether
/// [`KeyValue::decode`] accepts it, the bytes of its key (handed to `on_key` as they
/// pass: called with `None` when a key field starts, since the last one counts) and the
/// length of its value. Fed exactly the record's bytes (its length is known from the
/// start), it reaches the same verdict as `decode` on the whole record.
pub struct KeyValueStream {
    /// Bytes of the record not yet fed.
    left: u64,
    state: KvState,
    value_len: u64,
}

#[derive(Debug, Clone, Copy)]
enum KvState {
    /// Reading a field tag (`n` bytes of it so far).
    Tag {
        v: u64,
        n: u32,
    },
    /// Reading the varint of a wire-type-0 field.
    Varint {
        field: u64,
        n: u32,
    },
    /// Reading the length of a wire-type-2 field.
    Len {
        field: u64,
        v: u64,
        n: u32,
    },
    /// Inside the bytes of a wire-type-2 field (`key`: of field 1) or a fixed-size one.
    Skip {
        key: bool,
        left: u64,
    },
    Failed(KvError),
}

impl KeyValueStream {
    /// A record of `len` bytes.
    pub fn new(len: u64) -> Self {
        KeyValueStream {
            left: len,
            state: KvState::Tag { v: 0, n: 0 },
            value_len: 0,
        }
    }

    /// The next bytes of the record (at most as many as are left of it).
    pub fn feed(&mut self, mut b: &[u8], on_key: &mut dyn FnMut(Option<&[u8]>)) {
        while !b.is_empty() {
            self.state = match self.state {
                KvState::Failed(_) => return,
                KvState::Skip { key, left: n } => {
                    let take = n.min(b.len() as u64) as usize;
                    if key {
                        on_key(Some(&b[..take]));
                    }
                    b = &b[take..];
                    self.left -= take as u64;
                    if n == take as u64 {
                        KvState::Tag { v: 0, n: 0 }
                    } else {
                        KvState::Skip {
                            key,
                            left: n - take as u64,
                        }
                    }
                }
                KvState::Tag { v, n } => {
                    let (byte, more) = (b[0], b[0] & 0x80 != 0);
                    b = &b[1..];
                    self.left -= 1;
                    let v = v | u64::from(byte & 0x7f) << (7 * n);
                    if more && (n + 1 == 10 || self.left == 0) {
                        KvState::Failed(KvError::TruncatedTag)
                    } else if more {
                        KvState::Tag { v, n: n + 1 }
                    } else {
                        self.start_field(v >> 3, v & 7)
                    }
                }
                KvState::Varint { field, n } => {
                    let more = b[0] & 0x80 != 0;
                    b = &b[1..];
                    self.left -= 1;
                    if more && (n + 1 == 10 || self.left == 0) {
                        KvState::Failed(KvError::TruncatedVarint)
                    } else if more {
                        KvState::Varint { field, n: n + 1 }
                    } else if field == 0 {
                        KvState::Failed(KvError::FieldZero)
                    } else {
                        KvState::Tag { v: 0, n: 0 }
                    }
                }
                KvState::Len { field, v, n } => {
                    let (byte, more) = (b[0], b[0] & 0x80 != 0);
                    b = &b[1..];
                    self.left -= 1;
                    let v = v | u64::from(byte & 0x7f) << (7 * n);
                    if more && (n + 1 == 10 || self.left == 0) {
                        KvState::Failed(KvError::TruncatedLength)
                    } else if more {
                        KvState::Len { field, v, n: n + 1 }
                    } else if usize::try_from(v).is_err() {
                        KvState::Failed(KvError::LengthTooLarge)
                    } else if v > self.left {
                        KvState::Failed(KvError::PastTheEnd)
                    } else if field == 0 {
                        KvState::Failed(KvError::FieldZero)
                    } else {
                        if field == 1 {
                            on_key(None);
                        } else if field == 5 {
                            self.value_len = v;
                        }
                        if v == 0 {
                            KvState::Tag { v: 0, n: 0 }
                        } else {
                            KvState::Skip {
                                key: field == 1,
                                left: v,
                            }
                        }
                    }
                }
            };
        }
    }

    /// The state after a complete tag of `field` and `wire` type.
    fn start_field(&self, field: u64, wire: u64) -> KvState {
        let fixed = |size: u64, short: KvError| {
            if self.left < size {
                KvState::Failed(short)
            } else if field == 0 {
                KvState::Failed(KvError::FieldZero)
            } else {
                KvState::Skip {
                    key: false,
                    left: size,
                }
            }
        };
        match wire {
            0 if self.left == 0 => KvState::Failed(KvError::TruncatedVarint),
            0 => KvState::Varint { field, n: 0 },
            2 if self.left == 0 => KvState::Failed(KvError::TruncatedLength),
            2 => KvState::Len { field, v: 0, n: 0 },
            1 => fixed(8, KvError::TruncatedFixed64),
            5 => fixed(4, KvError::TruncatedFixed32),
            _ => KvState::Failed(KvError::UnknownWireType),
        }
    }

    /// The verdict once every byte was fed: the length of the value field (the last
    /// one), or why `decode` rejects the record.
    pub fn finish(&self) -> Result<u64, KvError> {
        match self.state {
            KvState::Failed(e) => Err(e),
            _ if self.left > 0 => Err(KvError::PastTheEnd),
            KvState::Tag { n: 0, .. } => Ok(self.value_len),
            KvState::Tag { .. } => Err(KvError::TruncatedTag),
            KvState::Varint { .. } => Err(KvError::TruncatedVarint),
            KvState::Len { .. } => Err(KvError::TruncatedLength),
            KvState::Skip { .. } => Err(KvError::PastTheEnd),
        }
    }
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

    /// `KeyValueStream` fed in pieces: the verdict, the value length and the key.
    fn streamed(b: &[u8], cuts: &[usize]) -> (Result<u64, KvError>, Vec<u8>) {
        let mut s = KeyValueStream::new(b.len() as u64);
        let mut key = Vec::new();
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (b.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([b.len()]) {
            s.feed(&b[at..cut.max(at)], &mut |k| match k {
                None => key.clear(),
                Some(bytes) => key.extend_from_slice(bytes),
            });
            at = cut.max(at);
        }
        (s.finish(), key)
    }

    fn assert_same_as_decode(b: &[u8], cuts: &[usize]) {
        let (verdict, key) = streamed(b, cuts);
        match KeyValue::decode(b) {
            Ok(kv) => {
                assert_eq!(verdict, Ok(kv.value.len() as u64), "{b:?}");
                assert_eq!(key, kv.key, "{b:?}");
            }
            Err(e) => assert_eq!(verdict, Err(e), "{b:?}"),
        }
    }

    #[test]
    fn the_stream_decoder_agrees_with_decode_on_edge_cases() {
        let good = [
            0x0a, 1, b'a', 0x10, 2, 0x18, 0xac, 0x02, 0x20, 1, 0x2a, 3, b'x', b'y', b'z', 0x30, 7,
        ];
        for len in 0..=good.len() {
            for cut in 0..=len {
                assert_same_as_decode(&good[..len], &[cut]);
            }
        }
        let cases: &[&[u8]] = &[
            &[],
            &[0x0a, 0],                      // empty key
            &[0x0a, 1, b'a', 0x0a, 1, b'b'], // the last key counts
            &[0x02, 0],                      // field 0, length 0
            &[0x00, 5],                      // field 0 varint
            &[0x01, 1, 2, 3, 4, 5, 6, 7, 8], // field 0 fixed64
            &[0x09, 1, 2, 3, 4, 5, 6, 7],    // truncated fixed64
            &[0x0d, 1, 2, 3, 4],             // fixed32
            &[0x0d, 1, 2, 3],                // truncated fixed32
            &[0x0b],                         // wire type 3
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ], // tag too long
            &[
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ], // varint too long
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // huge length
            &[0x10],                         // varint missing
            &[0x0a],                         // length missing
            &[0x88],                         // tag cut
        ];
        for case in cases {
            for cut in 0..=case.len() {
                assert_same_as_decode(case, &[cut]);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_stream_decoder_agrees_with_decode(
            b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..4),
        ) {
            assert_same_as_decode(&b, &cuts);
        }

        #[test]
        fn the_stream_decoder_agrees_on_records(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            rev in 0u64..u64::MAX,
            damage in proptest::option::of((0usize..700, proptest::prelude::any::<u8>())),
            cuts in proptest::collection::vec(0usize..700, 0..4),
        ) {
            let mut b = Vec::new();
            let push_varint = |b: &mut Vec<u8>, mut v: u64| loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    b.push(byte);
                    break;
                }
                b.push(byte | 0x80);
            };
            b.push(0x0a);
            push_varint(&mut b, key.len() as u64);
            b.extend_from_slice(&key);
            b.push(0x10);
            push_varint(&mut b, rev);
            b.push(0x2a);
            push_varint(&mut b, value.len() as u64);
            b.extend_from_slice(&value);
            if let Some((at, x)) = damage {
                let at = at % b.len();
                b[at] ^= x;
            }
            assert_same_as_decode(&b, &cuts);
        }
    }
}
