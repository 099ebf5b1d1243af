//! Just enough protobuf to read Kubernetes' storage envelope and `ObjectMeta`: a walk
//! over one message's fields that never reads past its bytes. Unknown fields are
//! skipped, as protobuf does; a field with a known number but another wire type is an
//! error (the value is not what it claims to be).

/// One field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64,
    Fixed32,
}

/// The fields of one message, in the order they are written.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
    /// The offset of `rest` in the outermost bytes, for messages.
    offset: usize,
}

/// Why bytes are not the message they should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed {
    pub what: String,
    pub offset: usize,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Fields::at(bytes, 0)
    }

    /// The fields of a nested message found at `offset` of the outermost bytes.
    pub(crate) fn at(bytes: &'a [u8], offset: usize) -> Self {
        Fields {
            rest: bytes,
            offset,
        }
    }

    fn fail(&self, what: &str) -> Malformed {
        Malformed {
            what: what.to_owned(),
            offset: self.offset,
        }
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.rest.split_first()?;
            self.rest = rest;
            self.offset += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        if n > self.rest.len() {
            return Err(self.fail(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        self.offset += n;
        Ok(head)
    }

    /// The next field: its number, its value, and the offset of a length-delimited value.
    pub(crate) fn next_field(&mut self) -> Option<Result<(u64, Value<'a>, usize), Malformed>> {
        if self.rest.is_empty() {
            return None;
        }
        Some(self.read_field())
    }

    fn read_field(&mut self) -> Result<(u64, Value<'a>, usize), Malformed> {
        let tag = self
            .varint()
            .ok_or_else(|| self.fail("truncated field tag"))?;
        let field = tag >> 3;
        if field == 0 {
            return Err(self.fail("field number 0"));
        }
        let value = match tag & 7 {
            0 => Value::Varint(self.varint().ok_or_else(|| self.fail("truncated varint"))?),
            1 => {
                self.skip(8, "truncated fixed64")?;
                Value::Fixed64
            }
            2 => {
                let len = self.varint().ok_or_else(|| self.fail("truncated length"))?;
                let len = usize::try_from(len).map_err(|_| self.fail("length too large"))?;
                let at = self.offset;
                let bytes = self.skip(len, "length past the end of the message")?;
                return Ok((field, Value::Bytes(bytes), at));
            }
            5 => {
                self.skip(4, "truncated fixed32")?;
                Value::Fixed32
            }
            w => return Err(self.fail(&format!("wire type {w}, which protobuf does not have"))),
        };
        Ok((field, value, self.offset))
    }
}

/// A length-delimited field as a string; `name` says which, for the error.
pub(crate) fn string(value: Value<'_>, name: &str, at: usize) -> Result<String, Malformed> {
    str(value, name, at).map(str::to_owned)
}

/// A string field, borrowed from the message.
pub(crate) fn str<'a>(value: Value<'a>, name: &str, at: usize) -> Result<&'a str, Malformed> {
    match value {
        Value::Bytes(b) => std::str::from_utf8(b).map_err(|_| Malformed {
            what: format!("{name} is not UTF-8"),
            offset: at,
        }),
        _ => Err(wrong_type(name, at)),
    }
}

/// A length-delimited field's bytes (a nested message).
pub(crate) fn bytes<'a>(value: Value<'a>, name: &str, at: usize) -> Result<&'a [u8], Malformed> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(wrong_type(name, at)),
    }
}

/// A varint field (int64, int32 or bool).
pub(crate) fn varint(value: Value<'_>, name: &str, at: usize) -> Result<u64, Malformed> {
    match value {
        Value::Varint(v) => Ok(v),
        _ => Err(wrong_type(name, at)),
    }
}

pub(crate) fn wrong_type(name: &str, at: usize) -> Malformed {
    Malformed {
        what: format!("{name} has the wrong wire type"),
        offset: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_and_bounds_are_kept() {
        // 1: "ab", 2: 150, 3: fixed32, 4: fixed64
        let msg = [
            0x0a, 2, b'a', b'b', 0x10, 0x96, 0x01, 0x1d, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let mut f = Fields::new(&msg);
        let got: Vec<_> = std::iter::from_fn(|| f.next_field())
            .map(|r| r.map(|(n, v, _)| (n, v)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            got,
            vec![
                (1, Value::Bytes(b"ab")),
                (2, Value::Varint(150)),
                (3, Value::Fixed32),
                (4, Value::Fixed64)
            ]
        );
        for bad in [
            &[0x0a, 5, b'a'][..],
            &[0x10, 0x96],
            &[0x1d, 0],
            &[0x0f],
            &[0x00],
        ] {
            let mut f = Fields::new(bad);
            assert!(f.next_field().unwrap().is_err(), "{bad:?}");
        }
    }
}
