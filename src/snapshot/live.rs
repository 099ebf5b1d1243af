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

use std::hash::{BuildHasher, Hasher, RandomState};

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

/// Hashes keys into fingerprints (fresh random hash keys for each instance).
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

    fn of(&self, key: &[u8], delete: bool) -> Fingerprint {
        let mut a = self.a.build_hasher();
        a.write(key);
        let mut b = self.b.build_hasher();
        b.write(key);
        Fingerprint {
            hi: a.finish(),
            lo: (b.finish() & !1) | u64::from(delete),
        }
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
        LiveSet {
            hasher: Fingerprinter::new(),
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
