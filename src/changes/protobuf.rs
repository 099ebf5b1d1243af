//! The few protobuf wire-format pieces the WAL replay needs, written by hand: varints,
//! field tags, length-delimited fields, and a reader that walks a message's fields and
//! says where one is broken. Only wire types 0 (varint) and 2 (length-delimited) occur
//! in the messages we read (`walpb.Record`, `raftpb.Entry`, `raftpb.HardState`,
//! `walpb.Snapshot`); anything else is refused.

/// Appends `v` as a base-128 varint.
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Bytes `v` takes as a varint.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A varint field, emitted even when zero (gogo's non-nullable proto2 scalars).
pub(crate) fn put_uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(buf, u64::from(field) << 3);
    put_varint(buf, v);
}

/// A length-delimited field (bytes, string or an embedded message).
pub(crate) fn put_bytes(buf: &mut Vec<u8>, field: u32, b: &[u8]) {
    put_varint(buf, (u64::from(field) << 3) | 2);
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// Bytes a length-delimited field of `len` bytes takes, tag included.
pub(crate) fn bytes_field_len(field: u32, len: usize) -> usize {
    varint_len((u64::from(field) << 3) | 2) + varint_len(len as u64) + len
}

/// One field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The fields of one message, in wire order; an error names the byte it stopped at.
pub(crate) struct Fields<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Fields { b, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.b.get(self.at) else {
                return Err(format!("a varint runs past the end at byte {}", self.at));
            };
            self.at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("a varint longer than 10 bytes at byte {}", self.at))
    }

    /// The next field, `None` at the end.
    #[allow(clippy::should_implement_trait)]
    pub(crate) fn next(&mut self) -> Result<Option<(u32, Value<'a>)>, String> {
        if self.at == self.b.len() {
            return Ok(None);
        }
        let start = self.at;
        let key = self.varint()?;
        let field = u32::try_from(key >> 3)
            .map_err(|_| format!("field number {} at byte {start}", key >> 3))?;
        match key & 7 {
            0 => Ok(Some((field, Value::Varint(self.varint()?)))),
            2 => {
                let len = self.varint()?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| self.at.checked_add(l))
                    .filter(|&e| e <= self.b.len())
                    .ok_or_else(|| {
                        format!(
                            "field {field} at byte {start} claims {len} bytes, {} are left",
                            self.b.len() - self.at
                        )
                    })?;
                let v = &self.b[self.at..end];
                self.at = end;
                Ok(Some((field, Value::Bytes(v))))
            }
            w => Err(format!("field {field} at byte {start} has wire type {w}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_know_their_length() {
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            let mut m = Vec::new();
            put_uint(&mut m, 3, v);
            assert_eq!(Fields::new(&m).next(), Ok(Some((3, Value::Varint(v)))));
        }
        let mut b = Vec::new();
        put_varint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
    }

    #[test]
    fn a_broken_message_is_an_error_not_a_panic() {
        // A length past the end, a varint cut short, a fixed64 field.
        for bad in [&[0x1a, 0x05, 0x01][..], &[0x08, 0x80], &[0x09, 0, 0, 0, 0]] {
            let mut f = Fields::new(bad);
            assert!(f.next().is_err(), "{bad:x?}");
        }
        let mut m = Vec::new();
        put_bytes(&mut m, 100, b"");
        assert_eq!(m, [0xa2, 0x06, 0x00]);
        assert_eq!(bytes_field_len(100, 0), 3);
    }
}
