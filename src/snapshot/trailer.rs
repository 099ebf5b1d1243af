//! Splitting a snapshot stream into its bbolt bytes and its 32-byte sha256 trailer
//! while it streams: everything but the last 32 bytes seen so far is hashed as database,
//! and the last 32 bytes are held back until the end, when they are the trailer.

use sha2::{Digest, Sha256};

use super::db::TRAILER_LEN;

const T: usize = TRAILER_LEN as usize;

#[derive(Default)]
pub struct TrailerSplit {
    sha: Sha256,
    tail: Vec<u8>,
    db_len: u64,
    total: u64,
}

/// What a whole stream held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Bytes before the trailer.
    pub db_len: u64,
    /// All bytes, trailer included.
    pub total: u64,
    /// sha256 of the bytes before the trailer.
    pub db_sha256: [u8; 32],
    /// The last 32 bytes; `None` when the stream was shorter than that.
    pub trailer: Option<[u8; 32]>,
}

impl TrailerSplit {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        if chunk.len() >= T {
            // Everything held back, and all but the last 32 bytes of this chunk, is db.
            self.sha.update(&self.tail);
            let (body, last) = chunk.split_at(chunk.len() - T);
            self.sha.update(body);
            self.db_len += (self.tail.len() + body.len()) as u64;
            self.tail.clear();
            self.tail.extend_from_slice(last);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(T);
            self.sha.update(&self.tail[..excess]);
            self.db_len += excess as u64;
            self.tail.drain(..excess);
        }
    }

    pub fn finish(self) -> Split {
        Split {
            db_len: self.db_len,
            total: self.total,
            db_sha256: self.sha.finalize().into(),
            trailer: <[u8; 32]>::try_from(self.tail.as_slice()).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_chunking_gives_the_same_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected_sha: [u8; 32] = Sha256::digest(&data[..968]).into();
        for chunk in [1, 5, 31, 32, 33, 100, 1000] {
            let mut s = TrailerSplit::new();
            for c in data.chunks(chunk) {
                s.update(c);
            }
            let split = s.finish();
            assert_eq!(split.db_len, 968, "chunk {chunk}");
            assert_eq!(split.total, 1000);
            assert_eq!(split.db_sha256, expected_sha, "chunk {chunk}");
            assert_eq!(split.trailer.as_ref().map(|t| &t[..]), Some(&data[968..]));
        }
        let mut short = TrailerSplit::new();
        short.update(b"tiny");
        assert_eq!(short.finish().trailer, None);
    }
}
