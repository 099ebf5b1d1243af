//! The live keys of a snapshot, in memory that follows the number of distinct keys but
//! not their length.
//!
//! The `key` bucket holds one record per revision, in revision order; a key is live when
//! its last record is a put. Instead of a map from key bytes to value size (which costs
//! the key's length plus about 50 bytes of map overhead for every key: over 100 MiB for
//! a million Kubernetes keys), each key is represented by a 128-bit fingerprint: two
//! SipHash-1-3 hashes under keys drawn at random for each scan. Two distinct keys get
//! the same fingerprint with probability about n²/2¹²⁹ (below 10⁻²⁶ for a million
//! keys), whatever the file holds, since the hash keys are unknown to whoever wrote it.
//!
//! The set is a vector of fingerprints of live keys sorted by fingerprint, plus a short
//! vector of records in arrival order. When the latter fills up (a quarter of the set,
//! at least 64 Ki records) it is sorted (stably, so the last record of a key wins),
//! deduplicated and merged into the set in place: puts replace or insert, deletes
//! remove. Peak memory is about 1.6 × the set: 26 bytes per live key for the count,
//! 38 with the value size and group that `inspect` needs.
//!
//! The stream check fingerprints keys while they stream past, in pieces
//! ([`KeyHasher`]), long before it knows which records are live; it gives its
//! [`Fingerprinter`] to the set that counts them later ([`LiveSet::with_fingerprinter`]).

use std::hash::{BuildHasher, DefaultHasher, Hasher, RandomState};

/// A key's fingerprint. Bit 0 of `lo` is not part of it: in a record, it marks a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct Fingerprint {
    hi: u64,
    lo: u64,
}

impl Fingerprint {
    fn key(self) -> (u64, u64) {
        (self.hi, self.lo & !1)
    }
    fn is_delete(self) -> bool {
        self.lo & 1 == 1
    }
}

/// A key's fingerprint as it is stored: 16 bytes, the delete bit clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyPrint(pub(crate) [u8; 16]);

impl KeyPrint {
    fn record(self, delete: bool) -> Fingerprint {
        let (hi, lo) = self.0.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        Fingerprint {
            hi: word(hi),
            lo: (word(lo) & !1) | u64::from(delete),
        }
    }
}

/// Hashes keys into fingerprints (fresh random hash keys for each instance).
#[derive(Clone)]
pub(crate) struct Fingerprinter {
    a: RandomState,
    b: RandomState,
}

impl Fingerprinter {
    pub(crate) fn new() -> Self {
        Fingerprinter {
            a: RandomState::new(),
            b: RandomState::new(),
        }
    }

    /// A hasher for one key fed in pieces.
    pub(crate) fn key_hasher(&self) -> KeyHasher {
        KeyHasher {
            a: self.a.build_hasher(),
            b: self.b.build_hasher(),
        }
    }

    fn of(&self, key: &[u8], delete: bool) -> Fingerprint {
        let mut h = self.key_hasher();
        h.write(key);
        h.finish().record(delete)
    }
}

/// One key's fingerprint, computed from its bytes in pieces: SipHash is defined on the
/// byte string, so the pieces' boundaries do not matter (a test checks it).
#[derive(Clone)]
pub(crate) struct KeyHasher {
    a: DefaultHasher,
    b: DefaultHasher,
}

impl KeyHasher {
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        self.a.write(bytes);
        self.b.write(bytes);
    }

    pub(crate) fn finish(&self) -> KeyPrint {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.a.finish().to_le_bytes());
        out[8..].copy_from_slice(&(self.b.finish() & !1).to_le_bytes());
        KeyPrint(out)
    }
}

const MIN_PENDING: usize = 1 << 16;

/// The live keys, each with a payload `P` (the last put's).
pub(crate) struct LiveSet<P: Copy + Default> {
    hasher: Fingerprinter,
    /// Live keys, sorted by fingerprint, no duplicates, delete bit clear.
    live: Vec<(Fingerprint, P)>,
    /// Records not yet merged, in arrival (revision) order.
    pending: Vec<(Fingerprint, P)>,
}

impl<P: Copy + Default> LiveSet<P> {
    pub(crate) fn new() -> Self {
        Self::with_fingerprinter(Fingerprinter::new())
    }

    /// A set that also takes fingerprints made by `hasher` ([`LiveSet::put_print`]).
    pub(crate) fn with_fingerprinter(hasher: Fingerprinter) -> Self {
        LiveSet {
            hasher,
            live: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// A put of `key` (the newest record of it so far).
    pub(crate) fn put(&mut self, key: &[u8], payload: P) {
        let fp = self.hasher.of(key, false);
        self.push((fp, payload));
    }

    /// A delete of `key`.
    pub(crate) fn delete(&mut self, key: &[u8]) {
        let fp = self.hasher.of(key, true);
        self.push((fp, P::default()));
    }

    /// A put of the key whose fingerprint (by this set's fingerprinter) is `print`.
    pub(crate) fn put_print(&mut self, print: KeyPrint, payload: P) {
        self.push((print.record(false), payload));
    }

    /// A delete of the key whose fingerprint is `print`.
    pub(crate) fn delete_print(&mut self, print: KeyPrint) {
        self.push((print.record(true), P::default()));
    }

    fn push(&mut self, record: (Fingerprint, P)) {
        if self.pending.len() >= self.pending_limit() {
            self.merge();
        }
        if self.pending.len() == self.pending.capacity() {
            // Grow to the limit at once, not by doubling past it.
            let limit = self.pending_limit();
            self.pending
                .reserve_exact(limit.saturating_sub(self.pending.len()).max(1));
        }
        self.pending.push(record);
    }

    fn pending_limit(&self) -> usize {
        (self.live.len() / 4).max(MIN_PENDING)
    }

    /// Folds the pending records into the set.
    fn merge(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // Stable: records of one key stay in revision order, so the last one is kept.
        self.pending.sort_by_key(|r| r.0.key());
        let mut kept = 0;
        for i in 0..self.pending.len() {
            let last_of_key = self
                .pending
                .get(i + 1)
                .is_none_or(|next| next.0.key() != self.pending[i].0.key());
            if last_of_key {
                self.pending[kept] = self.pending[i];
                kept += 1;
            }
        }
        self.pending.truncate(kept);

        // Merge from the back into room made at the end of `live`: the write position
        // never overtakes the unread part of `live` (it stays >= i + j).
        let (n, m) = (self.live.len(), self.pending.len());
        self.live.reserve_exact(m);
        self.live
            .resize(n + m, (Fingerprint::default(), P::default()));
        let (mut i, mut j, mut k) = (n, m, n + m);
        while j > 0 {
            let (fp, payload) = self.pending[j - 1];
            if i > 0 && self.live[i - 1].0.key() > fp.key() {
                self.live[k - 1] = self.live[i - 1];
                i -= 1;
                k -= 1;
                continue;
            }
            if i > 0 && self.live[i - 1].0.key() == fp.key() {
                i -= 1; // replaced or removed by the newer record
            }
            if !fp.is_delete() {
                self.live[k - 1] = (fp, payload);
                k -= 1;
            }
            j -= 1;
        }
        // live[..i] is in place; the merged tail is live[k..]: close the gap.
        self.live.copy_within(k..n + m, i);
        self.live.truncate(i + (n + m - k));
        self.pending.clear();
    }

    /// The payloads of the live keys (in no meaningful order).
    pub(crate) fn finish(mut self) -> Vec<P> {
        self.merge();
        drop(self.pending);
        self.live.into_iter().map(|(_, p)| p).collect()
    }

    /// How many keys are live.
    pub(crate) fn count(mut self) -> u64 {
        self.merge();
        self.live.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn last_record_of_each_key_decides() {
        let mut set = LiveSet::<u32>::new();
        set.put(b"a", 1);
        set.put(b"b", 2);
        set.put(b"a", 3);
        set.delete(b"b");
        set.delete(b"never-put");
        set.put(b"c", 4);
        let mut got = set.finish();
        got.sort();
        assert_eq!(got, vec![3, 4]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Against a plain map, across many merges (keys from a small alphabet so that
        /// keys repeat, put again and are deleted across merge boundaries).
        #[test]
        fn equals_a_map(ops in proptest::collection::vec((0u32..3000, any::<bool>(), any::<u16>()), 0..150_000)) {
            let mut set = LiveSet::<u32>::new();
            let mut map = HashMap::new();
            for (k, put, v) in ops {
                let key = k.to_be_bytes();
                if put {
                    set.put(&key, u32::from(v));
                    map.insert(k, u32::from(v));
                } else {
                    set.delete(&key);
                    map.remove(&k);
                }
            }
            let mut got = set.finish();
            got.sort();
            let mut want: Vec<u32> = map.into_values().collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_key_hashed_in_pieces_has_the_fingerprint_of_the_whole() {
        let fp = Fingerprinter::new();
        let key: Vec<u8> = (0..300u32).map(|i| (i * 7 % 256) as u8).collect();
        let whole = {
            let mut h = fp.key_hasher();
            h.write(&key);
            h.finish()
        };
        for cuts in [&[0usize][..], &[1], &[7, 8], &[3, 64, 65, 200], &[299]] {
            let mut h = fp.key_hasher();
            let mut at = 0;
            for &c in cuts.iter().chain([&key.len()]) {
                h.write(&key[at..c]);
                at = c;
            }
            assert_eq!(h.finish(), whole, "cut at {cuts:?}");
        }
        let mut set = LiveSet::<()>::with_fingerprinter(fp.clone());
        set.put(&key, ());
        set.put_print(whole, ());
        set.put(b"other", ());
        set.delete_print({
            let mut h = fp.key_hasher();
            h.write(b"oth");
            h.write(b"er");
            h.finish()
        });
        assert_eq!(set.count(), 1);
    }

    #[test]
    fn many_distinct_keys_across_merges() {
        let mut set = LiveSet::<()>::new();
        for i in 0..500_000u32 {
            set.put(&i.to_le_bytes(), ());
            if i % 3 == 0 {
                set.delete(&(i / 2).to_le_bytes());
            }
        }
        let mut map = std::collections::HashSet::new();
        for i in 0..500_000u32 {
            map.insert(i);
            if i % 3 == 0 {
                map.remove(&(i / 2));
            }
        }
        assert_eq!(set.count(), map.len() as u64);
    }
}
