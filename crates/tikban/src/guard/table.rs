//! The table of tracked sources: a fixed number of 96-byte records and an open-addressed index,
//! both allocated once, so guard's memory does not grow under attack (docs/guard.md, "Memory and
//! eviction").
//!
//! - **Records** live in a `Vec` whose capacity is reserved once at the cap. A full table reuses
//!   a record in place; nothing is freed or allocated after start.
//! - **Index**: linear probing in a power-of-two array of at least 1.5 × the cap (load ≤ 2/3),
//!   keyed by SipHash-1-3 with a caller-supplied random key, so a peer who picks addresses
//!   cannot pile them onto one probe chain. A slot is one `u32`: the record number (20 bits), a
//!   6-bit tag from the hash (a probe reads a record only when the tag matches) and the
//!   distance from the home slot (6 bits; 63 = farther, recomputed from the key). Removal shifts
//!   the chain back (no tombstones) using the stored distances, so it touches no record.
//! - **Eviction** is a clock hand over the records. It takes the first *cold* record it meets
//!   (no bucket above one event's worth of level: a single stale failure, an idle or already
//!   detected source) and skips *hot* ones. After [`SCAN`] hot records in a row it refuses the
//!   newcomer instead: a source with one event must not push out one that is building up.

use std::net::IpAddr;

/// Records the clock hand inspects per insertion before it gives up.
pub const SCAN: usize = 32;

/// Slots in the distinct-value ring of a source (user-name hashes and destination ports).
pub const RING: usize = 16;

/// No record at this index slot. Its record bits (2^20 − 1) exceed any record number.
const EMPTY: u32 = u32::MAX;
/// Bits of an index slot that hold the record number (records < 2^20, as max sources ≤ 10^6).
const RECORD_BITS: u32 = 20;
const RECORD_MASK: u32 = (1 << RECORD_BITS) - 1;
/// A stored distance of 63 means "63 or more": recompute it from the key.
const FAR: u32 = 63;

/// Bucket numbers in [`Source`].
pub const LOGIN: usize = 0;
/// The user-enumeration bucket.
pub const USER_ENUM: usize = 1;
/// The port-scan bucket.
pub const PORTSCAN: usize = 2;

/// One tracked source: 96 bytes (asserted below).
///
/// Bucket state is a GCRA ("virtual scheduling") form of the leaky bucket: `off[b]` is how many
/// milliseconds after `base` the bucket is empty again, so its level is `off / leakspeed` events
/// and no separate "last leak" time is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The address: IPv4 as `::ffff:a.b.c.d`, the way [`key_of`] writes it.
    pub key: [u8; 16],
    /// The latest event time (ms since the Unix epoch); offsets below count from it.
    pub base: u64,
    /// Per bucket: ms after `base` until the bucket is empty; while quiet, until the quiet
    /// (ban) period ends.
    pub off: [u32; 3],
    /// Per bucket: Unix seconds of the first event of the current run.
    pub first: [u32; 3],
    /// Per bucket: events since the bucket was last empty (saturating).
    pub count: [u16; 3],
    /// Distinct values: user-name hashes and destination ports, oldest first.
    pub ring: [u16; RING],
    /// Bit `i` set: `ring[i]` is a port, else a user-name hash.
    pub ring_ports: u16,
    /// Services seen in the current login run, bit per [`super::Service::index`].
    pub services: u16,
    /// Used entries of `ring`.
    pub ring_len: u8,
    /// Bit `b` set: bucket `b` is quiet (it fired; no new detection until `off[b]`).
    pub quiet: u8,
}

const _: () = assert!(std::mem::size_of::<Source>() == 96);

impl Source {
    fn new(key: [u8; 16], now: u64) -> Self {
        Source {
            key,
            base: now,
            off: [0; 3],
            first: [0; 3],
            count: [0; 3],
            ring: [0; RING],
            ring_ports: 0,
            services: 0,
            ring_len: 0,
            quiet: 0,
        }
    }

    /// The address.
    pub fn addr(&self) -> IpAddr {
        addr_of(&self.key)
    }

    /// Moves `base` to `now` (never backwards), keeping every bucket's absolute end time.
    pub fn rebase(&mut self, now: u64) {
        if now <= self.base {
            return;
        }
        let step = now - self.base;
        for off in &mut self.off {
            *off = u32::try_from(u64::from(*off).saturating_sub(step)).unwrap_or(u32::MAX);
        }
        self.base = now;
    }

    /// The highest bucket level at `now`, in thousandths of an event; quiet buckets count 0.
    /// `leak_ms[b]` is bucket `b`'s leak interval.
    pub fn heat(&self, now: u64, leak_ms: &[u64; 3]) -> u64 {
        let ahead = now.saturating_sub(self.base);
        (0..3)
            .filter(|b| self.quiet & (1 << b) == 0)
            .map(|b| u64::from(self.off[b]).saturating_sub(ahead) * 1000 / leak_ms[b].max(1))
            .max()
            .unwrap_or(0)
    }

    /// True when `value` of this kind is among the remembered distinct values.
    pub fn ring_contains(&self, port: bool, value: u16) -> bool {
        (0..usize::from(self.ring_len))
            .any(|i| self.ring[i] == value && (self.ring_ports >> i) & 1 == u16::from(port))
    }

    /// Remembers `value`, dropping the oldest entry when the ring is full.
    pub fn ring_push(&mut self, port: bool, value: u16) {
        let mut len = usize::from(self.ring_len);
        if len == RING {
            self.ring.copy_within(1.., 0);
            self.ring_ports >>= 1;
            len -= 1;
        }
        self.ring[len] = value;
        self.ring_ports = (self.ring_ports & !(1 << len)) | (u16::from(port) << len);
        self.ring_len = (len + 1) as u8;
    }

    /// Forgets every value of one kind (its bucket emptied).
    pub fn ring_clear(&mut self, port: bool) {
        let (mut kept, mut kinds) = (0usize, 0u16);
        for i in 0..usize::from(self.ring_len) {
            let is_port = (self.ring_ports >> i) & 1 == 1;
            if is_port != port {
                self.ring[kept] = self.ring[i];
                kinds |= u16::from(is_port) << kept;
                kept += 1;
            }
        }
        self.ring_len = kept as u8;
        self.ring_ports = kinds;
    }

    /// The remembered values of one kind, oldest first.
    pub fn ring_values(&self, port: bool) -> impl Iterator<Item = u16> + '_ {
        (0..usize::from(self.ring_len))
            .filter(move |i| (self.ring_ports >> i) & 1 == u16::from(port))
            .map(|i| self.ring[i])
    }
}

/// The 16-byte key of an address.
pub fn key_of(ip: IpAddr) -> [u8; 16] {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address of a key.
pub fn addr_of(key: &[u8; 16]) -> IpAddr {
    IpAddr::V6((*key).into()).to_canonical()
}

/// What [`Table::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// A free record was used.
    New(usize),
    /// A cold record was reused; it held the returned address's state.
    Evicted(usize),
    /// Every record the hand inspected was hot: the newcomer is not tracked.
    Refused,
}

/// The bounded table. See the module docs.
#[derive(Debug)]
pub struct Table {
    sources: Vec<Source>,
    index: Vec<u32>,
    mask: usize,
    cap: usize,
    hand: usize,
    key: (u64, u64),
}

impl Table {
    /// A table for at most `cap` sources (at least 1), with a SipHash key.
    pub fn new(cap: usize, key: [u64; 2]) -> Self {
        let cap = cap.max(1);
        let slots = (cap + cap / 2).next_power_of_two();
        Table {
            sources: Vec::with_capacity(cap),
            index: vec![EMPTY; slots],
            mask: slots - 1,
            cap,
            hand: 0,
            key: (key[0], key[1]),
        }
    }

    /// Sources held.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Bytes allocated on the heap: the records at capacity and the index.
    pub fn heap_bytes(&self) -> usize {
        self.sources.capacity() * std::mem::size_of::<Source>()
            + self.index.capacity() * std::mem::size_of::<u32>()
    }

    /// A record, mutably.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Source> {
        self.sources.get_mut(i)
    }

    /// The home slot and the tag of `key`.
    fn place(&self, key: &[u8; 16]) -> (usize, u32) {
        let h = sip13(self.key.0, self.key.1, &words(key), 16);
        ((h as usize) & self.mask, (h >> 58) as u32)
    }

    /// The record of `key`.
    pub fn find(&self, key: &[u8; 16]) -> Option<usize> {
        let (mut slot, tag) = self.place(key);
        loop {
            let e = self.index[slot];
            if e == EMPTY {
                return None;
            }
            if tag_of(e) == tag {
                let r = (e & RECORD_MASK) as usize;
                // As two integers: one compare, no call (the key is 16 bytes).
                if u128::from_ne_bytes(self.sources[r].key) == u128::from_ne_bytes(*key) {
                    return Some(r);
                }
            }
            slot = (slot + 1) & self.mask;
        }
    }

    /// Adds `key` (not present) at time `now`. `leak_ms` gives the buckets' leak intervals for
    /// the coldness test.
    pub fn insert(&mut self, key: [u8; 16], now: u64, leak_ms: &[u64; 3]) -> Inserted {
        let (record, outcome) = if self.sources.len() < self.cap {
            let r = self.sources.len();
            self.sources.push(Source::new(key, now));
            (r, Inserted::New(r))
        } else {
            let Some(victim) = self.pick_victim(now, leak_ms) else {
                return Inserted::Refused;
            };
            let old = self.sources[victim].key;
            self.unindex(victim, &old);
            self.sources[victim] = Source::new(key, now);
            (victim, Inserted::Evicted(victim))
        };
        let (home, tag) = self.place(&key);
        let mut slot = home;
        while self.index[slot] != EMPTY {
            slot = (slot + 1) & self.mask;
        }
        self.index[slot] = pack(record, tag, slot.wrapping_sub(home) & self.mask);
        outcome
    }

    /// The clock hand: the first cold record among the next [`SCAN`], else none.
    fn pick_victim(&mut self, now: u64, leak_ms: &[u64; 3]) -> Option<usize> {
        let n = self.sources.len();
        for _ in 0..SCAN.min(n) {
            let i = self.hand % n;
            self.hand = (i + 1) % n;
            if self.sources[i].heat(now, leak_ms) <= 1000 {
                return Some(i);
            }
        }
        None
    }

    /// Removes record `record` (whose key is `key`) from the index: backward-shift deletion,
    /// reading stored distances instead of records.
    fn unindex(&mut self, record: usize, key: &[u8; 16]) {
        let (mut hole, _) = self.place(key);
        loop {
            let e = self.index[hole];
            if e == EMPTY {
                return;
            }
            if (e & RECORD_MASK) as usize == record {
                break;
            }
            hole = (hole + 1) & self.mask;
        }
        let mut next = hole;
        loop {
            next = (next + 1) & self.mask;
            let e = self.index[next];
            if e == EMPTY {
                break;
            }
            let dist = match e >> 26 {
                FAR => {
                    let (home, _) = self.place(&self.sources[(e & RECORD_MASK) as usize].key);
                    next.wrapping_sub(home) & self.mask
                }
                d => d as usize,
            };
            let home = next.wrapping_sub(dist) & self.mask;
            // Move `next` into the hole unless its home lies cyclically in (hole, next].
            let stays = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !stays {
                let moved = next.wrapping_sub(hole) & self.mask;
                self.index[hole] = pack((e & RECORD_MASK) as usize, tag_of(e), dist - moved);
                hole = next;
            }
        }
        self.index[hole] = EMPTY;
    }
}

/// An index slot: record number, tag, distance from home (capped at [`FAR`]).
fn pack(record: usize, tag: u32, dist: usize) -> u32 {
    // `record < max sources ≤ 1_000_000 < 2^20` (checked by the settings).
    (record as u32 & RECORD_MASK)
        | (tag & 0x3f) << RECORD_BITS
        | (dist.min(FAR as usize) as u32) << 26
}

fn tag_of(slot: u32) -> u32 {
    (slot >> RECORD_BITS) & 0x3f
}

/// The little-endian word of an 8-byte slice (callers pass `chunks_exact(8)` chunks).
fn le_u64(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_le_bytes)
}

/// A 16-byte key as two little-endian words.
fn words(key: &[u8; 16]) -> [u64; 2] {
    let k = u128::from_le_bytes(*key);
    [k as u64, (k >> 64) as u64]
}

/// A 16-bit keyed hash of a user name, for the distinct-user ring.
pub fn user_hash(key: [u64; 2], user: &str) -> u16 {
    // Another key than the index's, so the two hashes are unrelated.
    sip_bytes(key[0] ^ 0x7573_6572, key[1], user.as_bytes()) as u16
}

/// SipHash-1-3 of `bytes`.
pub fn sip_bytes(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    siphash::<1, 3>(k0, k1, bytes)
}

/// SipHash-1-3 of 16 bytes given as two little-endian words.
fn sip13(k0: u64, k1: u64, words: &[u64; 2], len: u8) -> u64 {
    let mut s = SipState::new(k0, k1);
    for &m in words {
        s.compress::<1>(m);
    }
    s.finish::<1, 3>(u64::from(len) << 56)
}

/// SipHash with `C` compression and `D` finalisation rounds (Aumasson and Bernstein, 2012).
fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    let mut s = SipState::new(k0, k1);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        s.compress::<C>(le_u64(chunk));
    }
    let mut last = (bytes.len() as u64 & 0xff) << 56;
    for (i, &b) in chunks.remainder().iter().enumerate() {
        last |= u64::from(b) << (8 * i);
    }
    s.finish::<C, D>(last)
}

struct SipState {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl SipState {
    fn new(k0: u64, k1: u64) -> Self {
        SipState {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    #[inline(always)]
    fn compress<const C: usize>(&mut self, m: u64) {
        self.v3 ^= m;
        for _ in 0..C {
            self.round();
        }
        self.v0 ^= m;
    }

    fn finish<const C: usize, const D: usize>(mut self, last: u64) -> u64 {
        self.compress::<C>(last);
        self.v2 ^= 0xff;
        for _ in 0..D {
            self.round();
        }
        self.v0 ^ self.v1 ^ self.v2 ^ self.v3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAK: [u64; 3] = [10_000, 60_000, 5_000];

    fn key(n: u32) -> [u8; 16] {
        key_of(IpAddr::V4(n.into()))
    }

    #[test]
    fn siphash_matches_the_reference_implementation() {
        // The paper's key 00..0f; std's SipHasher is SipHash-2-4.
        let (k0, k1) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        let msg: Vec<u8> = (0..64).collect();
        assert_eq!(siphash::<2, 4>(k0, k1, &[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash::<2, 4>(k0, k1, &msg[..15]), 0xa129_ca61_49be_45e5);
        for len in 0..64 {
            #[allow(deprecated)]
            let mut std = std::hash::SipHasher::new_with_keys(k0, k1);
            std::hash::Hasher::write(&mut std, &msg[..len]);
            assert_eq!(
                siphash::<2, 4>(k0, k1, &msg[..len]),
                std::hash::Hasher::finish(&std),
                "len {len}"
            );
        }
        // The word form used by the index equals the byte form.
        let k = key(0x0102_0304);
        assert_eq!(sip13(k0, k1, &words(&k), 16), sip_bytes(k0, k1, &k));
    }

    #[test]
    fn keys_round_trip_addresses() {
        for ip in ["192.0.2.1", "2001:db8::1", "::1", "0.0.0.0", "::"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(addr_of(&key_of(ip)), ip);
        }
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(key_of(mapped), key_of("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn insert_find_and_evict_keep_the_index_consistent() {
        let mut t = Table::new(100, [1, 2]);
        for n in 0..100 {
            assert_eq!(t.insert(key(n), 0, &LEAK), Inserted::New(n as usize));
        }
        // All cold: the hand evicts in insertion order, and every survivor is still found.
        for n in 100..1000 {
            assert!(matches!(t.insert(key(n), 0, &LEAK), Inserted::Evicted(_)));
            assert_eq!(t.find(&key(n - 100)), None);
            for m in n - 99..=n {
                assert!(t.find(&key(m)).is_some(), "{m} lost after inserting {n}");
            }
        }
        assert_eq!(t.len(), 100);
    }

    #[test]
    fn long_chains_past_the_stored_distance_stay_consistent() {
        // 100 keys with one home slot: distances up to 99, past the 6-bit field (FAR = 63).
        let mut t = Table::new(150, [5, 6]);
        let home = t.place(&key(0)).0;
        let same: Vec<u32> = (0..)
            .filter(|&n| t.place(&key(n)).0 == home)
            .take(100)
            .collect();
        let others: Vec<u32> = (10_000_000..)
            .filter(|&n| t.place(&key(n)).0 != home)
            .take(50)
            .collect();
        for &n in same.iter().chain(&others) {
            assert!(matches!(t.insert(key(n), 0, &LEAK), Inserted::New(_)));
        }
        assert!(t.index.iter().any(|&e| e != EMPTY && e >> 26 == FAR));
        // Each new key evicts the oldest record (the hand's order): the chain loses its head,
        // then its middle, and every survivor must still be found.
        let mut live: Vec<u32> = same.iter().chain(&others).copied().collect();
        for n in 20_000_000..20_000_120 {
            assert!(matches!(t.insert(key(n), 0, &LEAK), Inserted::Evicted(_)));
            let gone = live.remove(0);
            live.push(n);
            assert_eq!(t.find(&key(gone)), None, "{gone} still found");
            for &m in &live {
                assert!(t.find(&key(m)).is_some(), "{m} lost after inserting {n}");
            }
        }
        let used = t.index.iter().filter(|&&e| e != EMPTY).count();
        assert_eq!(used, 150);
    }

    #[test]
    fn hot_sources_are_skipped_and_a_hot_table_refuses_newcomers() {
        let mut t = Table::new(4, [3, 4]);
        for n in 0..4 {
            t.insert(key(n), 0, &LEAK);
        }
        // Source 0 holds two events' worth in the login bucket: hot.
        t.get_mut(0).unwrap().off[LOGIN] = 20_000;
        let Inserted::Evicted(v) = t.insert(key(9), 0, &LEAK) else {
            panic!()
        };
        assert_ne!(v, 0);
        assert!(t.find(&key(0)).is_some());
        for i in 0..4 {
            t.get_mut(i).unwrap().off[LOGIN] = 20_000;
        }
        assert_eq!(t.insert(key(10), 0, &LEAK), Inserted::Refused);
        // Ten seconds later every level is down to one event: cold again.
        assert!(matches!(
            t.insert(key(10), 10_000, &LEAK),
            Inserted::Evicted(_)
        ));
    }

    #[test]
    fn heat_counts_levels_and_ignores_quiet_buckets() {
        let mut s = Source::new(key(1), 1000);
        s.off = [15_000, 30_000, 0];
        assert_eq!(s.heat(1000, &LEAK), 1500);
        assert_eq!(s.heat(6000, &LEAK), 1000);
        s.quiet = 1 << LOGIN;
        assert_eq!(s.heat(1000, &LEAK), 500);
        s.rebase(4000);
        assert_eq!(
            (s.base, s.off[LOGIN], s.off[USER_ENUM]),
            (4000, 12_000, 27_000)
        );
        s.rebase(1000);
        assert_eq!(s.base, 4000, "time never goes back");
    }

    #[test]
    fn the_ring_keeps_kinds_apart_and_drops_the_oldest() {
        let mut s = Source::new(key(1), 0);
        s.ring_push(false, 7);
        s.ring_push(true, 7);
        assert!(s.ring_contains(false, 7) && s.ring_contains(true, 7));
        assert!(!s.ring_contains(true, 8));
        for v in 100..100 + RING as u16 {
            s.ring_push(true, v);
        }
        assert!(!s.ring_contains(false, 7), "oldest dropped");
        assert_eq!(s.ring_values(true).count(), RING);
        s.ring_push(false, 1);
        s.ring_clear(true);
        assert_eq!(s.ring_values(false).collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.ring_values(true).count(), 0);
    }

    #[test]
    fn heap_bytes_at_the_default_cap_fit_one_mebibyte() {
        let t = Table::new(10_000, [0, 0]);
        assert_eq!(t.heap_bytes(), 10_000 * 96 + 16_384 * 4);
        assert!(t.heap_bytes() <= 1 << 20);
    }
}
