//! A compact hash table for `u32` keys (IPv4 hosts): the bulk of every decision set.
//!
//! Why not `std::collections::HashMap`: its table has a power-of-two number of buckets, so a
//! million IPv4 values sit in 2,097,152 buckets, and each doubling briefly holds both tables
//! (`docs/benchmarks.md`, "Memory at scale"). This table stores keys and values in two plain
//! arrays of exactly the capacity asked for (any number, not a power of two), an occupancy bit
//! per slot, and no control bytes: at the 7/8 load it grows at, an entry of `V` costs
//! `(4 + size_of::<V>()) / 0.875` bytes plus a bit. Reserving the final size up front (the
//! snapshot's `Content-Length` tells it) means no resize runs at the peak.
//!
//! Linear probing with backward-shift deletion (no tombstones), a keyed multiplicative hash (the
//! keys come from LAPI, partly from public community lists: the seed is random per table, so
//! nobody can precompute colliding addresses), and slots addressed by index, so a caller can
//! walk the table in steps and resume where it stopped ([`U32Table::next_from`]).

use std::mem::size_of;

/// The load above which the table grows (7/8).
const MAX_LOAD_NUM: usize = 7;
const MAX_LOAD_DEN: usize = 8;

/// A `u32 → V` hash table. See the module docs.
#[derive(Clone)]
pub struct U32Table<V: Copy> {
    keys: Vec<u32>,
    vals: Vec<V>,
    used: Vec<u64>,
    len: usize,
    seed: u64,
    /// Bumped whenever slots move (growth): a walk by index must start again then.
    generation: u64,
}

impl<V: Copy + std::fmt::Debug> std::fmt::Debug for U32Table<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("U32Table")
            .field("len", &self.len)
            .field("capacity", &self.keys.len())
            .finish()
    }
}

impl<V: Copy + Default> Default for U32Table<V> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<V: Copy + Default> U32Table<V> {
    /// A table that holds `n` entries without growing.
    pub fn with_capacity(n: usize) -> Self {
        let slots = slots_for(n);
        U32Table {
            keys: vec![0; slots],
            vals: vec![V::default(); slots],
            used: vec![0; slots.div_ceil(64)],
            len: 0,
            seed: rand::random::<u64>() | 1,
            generation: 0,
        }
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.keys.len()
    }

    /// Heap bytes held (the three arrays).
    pub fn heap_bytes(&self) -> usize {
        self.keys.capacity() * 4 + self.vals.capacity() * size_of::<V>() + self.used.capacity() * 8
    }

    /// Changes whenever slots move; see [`U32Table::next_from`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn home(&self, key: u32) -> usize {
        let h = (u64::from(key) ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let h = h ^ (h >> 29);
        // Lemire's range reduction: any number of slots, no modulo.
        ((u128::from(h) * self.keys.len() as u128) >> 64) as usize
    }

    fn is_used(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set_used(&mut self, i: usize, on: bool) {
        if on {
            self.used[i / 64] |= 1 << (i % 64);
        } else {
            self.used[i / 64] &= !(1 << (i % 64));
        }
    }

    fn find(&self, key: u32) -> Option<usize> {
        let n = self.keys.len();
        if n == 0 {
            return None;
        }
        let mut i = self.home(key);
        loop {
            if !self.is_used(i) {
                return None;
            }
            if self.keys[i] == key {
                return Some(i);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: u32) -> Option<&V> {
        self.find(key).map(|i| &self.vals[i])
    }

    /// The value of `key`, mutable.
    pub fn get_mut(&mut self, key: u32) -> Option<&mut V> {
        self.find(key).map(|i| &mut self.vals[i])
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: u32) -> bool {
        self.find(key).is_some()
    }

    /// Makes room for `additional` more entries without growing later.
    pub fn reserve(&mut self, additional: usize) {
        let want = self.len.saturating_add(additional);
        if slots_for(want) > self.keys.len() {
            self.rehash(slots_for(want));
        }
    }

    /// Gives back the slots beyond `len + headroom` entries (after a snapshot of unknown size
    /// filled the table by growth). The old and the new arrays live at once during the move,
    /// which is never more than the growth that made the table this large.
    pub fn shrink_to(&mut self, headroom: usize) {
        let want = slots_for(self.len.saturating_add(headroom));
        if want < self.keys.len() {
            self.rehash(want);
        }
    }

    fn rehash(&mut self, slots: usize) {
        let mut next = U32Table {
            keys: vec![0; slots],
            vals: vec![V::default(); slots],
            used: vec![0; slots.div_ceil(64)],
            len: 0,
            seed: self.seed,
            generation: self.generation.wrapping_add(1),
        };
        for i in 0..self.keys.len() {
            if self.is_used(i) {
                next.insert_new(self.keys[i], self.vals[i]);
            }
        }
        *self = next;
    }

    /// Inserts a key known to be absent, with room known to be there.
    fn insert_new(&mut self, key: u32, val: V) {
        let n = self.keys.len();
        let mut i = self.home(key);
        while self.is_used(i) {
            i += 1;
            if i == n {
                i = 0;
            }
        }
        self.keys[i] = key;
        self.vals[i] = val;
        self.set_used(i, true);
        self.len += 1;
    }

    /// Inserts or replaces; returns the previous value.
    pub fn insert(&mut self, key: u32, val: V) -> Option<V> {
        if let Some(i) = self.find(key) {
            return Some(std::mem::replace(&mut self.vals[i], val));
        }
        if (self.len + 1) * MAX_LOAD_DEN > self.keys.len() * MAX_LOAD_NUM {
            // Grow by half: a smaller peak than doubling (old + new live at once).
            let grown = self.keys.len() + self.keys.len() / 2;
            self.rehash(grown.max(slots_for(self.len + 1)));
        }
        self.insert_new(key, val);
        None
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: u32) -> Option<V> {
        let mut hole = self.find(key)?;
        let removed = self.vals[hole];
        self.set_used(hole, false);
        self.len -= 1;
        // Backward-shift: move later entries of the run into the hole when their home allows.
        let n = self.keys.len();
        let mut j = hole;
        loop {
            j += 1;
            if j == n {
                j = 0;
            }
            if !self.is_used(j) {
                break;
            }
            let home = self.home(self.keys[j]);
            // The entry at j may move to the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                home > hole && home <= j
            } else {
                home > hole || home <= j
            };
            if !stays {
                self.keys[hole] = self.keys[j];
                self.vals[hole] = self.vals[j];
                self.set_used(hole, true);
                self.set_used(j, false);
                hole = j;
            }
        }
        Some(removed)
    }

    /// Keeps the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(u32, &mut V) -> bool) {
        let mut doomed = Vec::new();
        for i in 0..self.keys.len() {
            if self.is_used(i) && !keep(self.keys[i], &mut self.vals[i]) {
                doomed.push(self.keys[i]);
            }
        }
        for k in doomed {
            self.remove(k);
        }
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &V)> + '_ {
        (0..self.keys.len())
            .filter(|i| self.is_used(*i))
            .map(|i| (self.keys[i], &self.vals[i]))
    }

    /// Every value, in slot order. Skips empty stretches 64 slots at a time.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.used.iter().enumerate().flat_map(move |(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(&self.vals[w * 64 + b])
            })
        })
    }

    /// Every value, mutable.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> + '_ {
        let used = &self.used;
        self.vals
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| used[i / 64] & (1 << (i % 64)) != 0)
            .map(|(_, v)| v)
    }

    /// The first entry at slot `from` or later, and the slot after it: a walk that can stop and
    /// resume. Entries inserted or removed meanwhile may be seen or missed; after growth
    /// ([`U32Table::generation`] changed) start again from 0.
    pub fn next_from(&self, from: usize) -> Option<(usize, u32, &V)> {
        (from..self.keys.len())
            .find(|i| self.is_used(*i))
            .map(|i| (i + 1, self.keys[i], &self.vals[i]))
    }

    /// Drops every entry, keeping the slots.
    pub fn clear(&mut self) {
        self.used.iter_mut().for_each(|w| *w = 0);
        self.len = 0;
    }
}

/// Slots for `n` entries at the 7/8 load.
fn slots_for(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n.saturating_mul(MAX_LOAD_DEN) / MAX_LOAD_NUM).max(8) + 1
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_million_entries_take_exactly_the_reserved_slots() {
        let mut t: U32Table<u64> = U32Table::with_capacity(1_000_000);
        let slots = t.slots();
        for k in 0..1_000_000u32 {
            t.insert(k.wrapping_mul(2_654_435_761), u64::from(k));
        }
        assert_eq!(t.len(), 1_000_000);
        assert_eq!(t.slots(), slots, "no growth");
        assert!(slots < 1_150_000, "{slots}: not a power of two");
        assert_eq!(t.get(7u32.wrapping_mul(2_654_435_761)), Some(&7));
    }

    #[test]
    fn a_table_grown_blind_shrinks_to_its_entries_and_keeps_them() {
        let mut t: U32Table<u32> = U32Table::default();
        for k in 0..100_000u32 {
            t.insert(k.wrapping_mul(2_654_435_761), k);
        }
        let grown = t.slots();
        t.shrink_to(100_000 / 16);
        assert!(t.slots() < grown, "{} of {grown}", t.slots());
        assert_eq!(t.slots(), slots_for(100_000 + 100_000 / 16));
        assert_eq!(t.len(), 100_000);
        for k in 0..100_000u32 {
            assert_eq!(t.get(k.wrapping_mul(2_654_435_761)), Some(&k));
        }
        // Already tight: nothing moves.
        let generation = t.generation;
        t.shrink_to(100_000 / 16);
        assert_eq!(t.generation, generation);
    }

    #[test]
    fn the_zero_key_is_a_key_like_any_other() {
        let mut t: U32Table<u8> = U32Table::default();
        assert_eq!(t.insert(0, 1), None);
        assert_eq!(t.get(0), Some(&1));
        assert_eq!(t.remove(0), Some(1));
        assert!(t.get(0).is_none() && t.is_empty());
    }

    #[test]
    fn a_walk_by_index_sees_every_entry_once() {
        let mut t: U32Table<u32> = U32Table::with_capacity(1000);
        for k in 0..1000 {
            t.insert(k, k);
        }
        let mut seen = Vec::new();
        let mut at = 0;
        while let Some((next, k, _)) = t.next_from(at) {
            seen.push(k);
            at = next;
        }
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }

    proptest! {
        /// Any sequence of inserts and removes matches a HashMap (backward-shift deletion
        /// keeps every run reachable).
        #[test]
        fn behaves_like_a_hash_map(ops in proptest::collection::vec((any::<bool>(), 0u32..64, any::<u16>()), 0..400)) {
            let mut t: U32Table<u16> = U32Table::default();
            let mut m: HashMap<u32, u16> = HashMap::new();
            for (insert, k, v) in ops {
                if insert {
                    prop_assert_eq!(t.insert(k, v), m.insert(k, v));
                } else {
                    prop_assert_eq!(t.remove(k), m.remove(&k));
                }
                prop_assert_eq!(t.len(), m.len());
            }
            for k in 0..64 {
                prop_assert_eq!(t.get(k), m.get(&k));
            }
            let mut got: Vec<(u32, u16)> = t.iter().map(|(k, v)| (k, *v)).collect();
            got.sort();
            let mut values: Vec<u16> = t.values().copied().collect();
            values.sort();
            let mut want: Vec<(u32, u16)> = m.into_iter().collect();
            want.sort();
            let mut want_values: Vec<u16> = want.iter().map(|(_, v)| *v).collect();
            want_values.sort();
            prop_assert_eq!(got, want);
            prop_assert_eq!(values, want_values);
        }
    }
}
