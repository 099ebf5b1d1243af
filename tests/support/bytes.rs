//! Byte surgery on snapshot files: a bit flipped, a little-endian field overwritten.

/// A copy of `bytes` with bit `bit` of byte `offset` flipped.
pub fn flip(bytes: &[u8], offset: usize, bit: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[offset] ^= 1 << bit;
    b
}

pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
