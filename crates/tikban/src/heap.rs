//! Heap accounting for the memory profile of `docs/benchmarks.md`.
//!
//! The structures that grow with the number of decisions report their own heap bytes
//! ([`crowdsec_lapi::DecisionCache::heap_bytes`], [`crate::engine::Engine::heap_bytes`]). The
//! process total comes from a counting global allocator that only the binary built with the
//! `heap-profile` feature installs (this crate forbids `unsafe`, which an allocator needs): it
//! registers its counters here with [`set_probe`]. The daemon logs both at shutdown
//! (`memory profile`), and `cargo xtask bench --only 5 --heap-profile` reads them back.

use std::sync::OnceLock;

/// Bytes the allocator has handed out: now, and the most ever at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocated {
    /// Live bytes.
    pub current: usize,
    /// The peak of live bytes since the start.
    pub peak: usize,
}

static PROBE: OnceLock<fn() -> Allocated> = OnceLock::new();

/// Registers the counting allocator's reader (once; later calls are ignored).
pub fn set_probe(probe: fn() -> Allocated) {
    let _ = PROBE.set(probe);
}

/// The allocator's counters, when the binary counts (the `heap-profile` feature).
pub fn allocated() -> Option<Allocated> {
    PROBE.get().map(|p| p())
}
