//! What a tree walk remembers in order to check the tree: the pages already reached
//! (one bit per page) and the ordering of one bucket's keys.

/// The ordering rules of one bucket's keys while its tree is walked in order: strictly
/// increasing, and the first key under a branch element not below that element's key.
#[derive(Default)]
pub(super) struct KeyOrder {
    pub(super) last: Option<Vec<u8>>,
    lower: Option<Vec<u8>>,
}

impl KeyOrder {
    pub(super) fn raise_lower_bound(&mut self, key: &[u8]) {
        if self.lower.as_deref().is_none_or(|l| key > l) {
            self.lower = Some(key.to_vec());
        }
    }

    /// Records the next key in walk order; false when it breaks the order.
    pub(super) fn accept(&mut self, key: &[u8]) -> bool {
        if self.last.as_deref().is_some_and(|prev| key <= prev) {
            return false;
        }
        if self
            .lower
            .take()
            .is_some_and(|lower| key < lower.as_slice())
        {
            return false;
        }
        match &mut self.last {
            Some(k) => {
                k.clear();
                k.extend_from_slice(key);
            }
            None => self.last = Some(key.to_vec()),
        }
        true
    }
}

/// One bit per page id.
pub(super) struct PageSet {
    bits: Vec<u64>,
}

impl PageSet {
    pub(super) fn new(pages: u64) -> Self {
        PageSet {
            bits: vec![0; pages.div_ceil(64) as usize],
        }
    }
    /// Returns false when the page was already in the set.
    pub(super) fn insert(&mut self, id: u64) -> bool {
        let (w, b) = ((id / 64) as usize, id % 64);
        match self.bits.get_mut(w) {
            Some(word) => {
                let had = *word & (1 << b) != 0;
                *word |= 1 << b;
                !had
            }
            None => false,
        }
    }
    pub(super) fn contains(&self, id: u64) -> bool {
        self.bits
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
}
