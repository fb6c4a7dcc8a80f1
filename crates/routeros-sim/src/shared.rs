//! [`Shared`]: the state every connection of a sim shares (config, clock, router state, fault
//! settings, transcript), and the transcript types.
//!
//! It sits below both [`crate::sim`] (the public handle and test controls) and [`crate::cmd`]
//! (the menus): the menus act on a `Shared`, the handle owns one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::clock::{SimClock, lock};
use crate::config::{SimConfig, Version};
use crate::memlog::NewLogEntry;
use crate::sessions::NewActiveSession;
use crate::sim::HostilePrint;
use crate::state::{Generations, State};

/// Direction of a transcript sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → sim.
    In,
    /// Sim → client.
    Out,
}

/// One recorded sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptEntry {
    /// Connection number (1, 2, ... in accept order).
    pub conn: u64,
    /// Which way it went.
    pub direction: Direction,
    /// The words; `=password=` and `=response=` values are replaced by `<redacted>`.
    pub words: Vec<Vec<u8>>,
}

#[derive(Debug)]
struct FaultState {
    drop_after: Option<u64>,
    trap_add_fraction: f64,
    rng: StdRng,
    hostile_print: Option<HostilePrint>,
}

/// Counters and switches of the hostile-router faults ([`crate::Faults::hostile_print`],
/// [`crate::Faults::kill_on_print`], [`crate::Faults::desync`]).
#[derive(Debug, Default)]
pub(crate) struct Hostile {
    /// Kill the session when a `print` arrives.
    pub kill_on_print: AtomicBool,
    /// Sessions killed that way.
    pub print_kills: AtomicU64,
    /// Invented rows handed to the writers by hostile prints.
    pub rows: AtomicU64,
    /// Numbers the invented rows (`.id` and address), never reused.
    pub next_row: AtomicU64,
    /// Connections that got the desync bytes.
    pub desynced: AtomicU64,
}

/// State shared by every connection of a sim.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: SimConfig,
    pub version: Version,
    pub clock: SimClock,
    state: Mutex<State>,
    /// The router CPU: write commands hold it for `cost.per_write`. Holds the instant the last
    /// write finished in model time (see the executor), `None` before the first.
    pub cpu: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    faults: Mutex<FaultState>,
    pub stall: watch::Sender<bool>,
    /// Bumped to drop every connection.
    pub kill: watch::Sender<u64>,
    /// Bumped to desynchronise every open connection ([`crate::Faults::desync`]).
    pub desync: watch::Sender<u64>,
    pub hostile: Hostile,
    /// Change counters, for streams (`print =follow=`, `listen`).
    pub changes: watch::Sender<Generations>,
    transcript: Mutex<Vec<TranscriptEntry>>,
    pub next_conn: AtomicU64,
}

impl Shared {
    /// A just-booted router built from `config`.
    pub(crate) fn new(config: SimConfig) -> Shared {
        let version = config.parsed_version();
        let clock = SimClock::new(config.clock);
        let rng = StdRng::seed_from_u64(config.seed);
        Shared {
            version,
            clock,
            state: Mutex::new(State::new(config.log_memory_lines)),
            cpu: tokio::sync::Mutex::new(None),
            faults: Mutex::new(FaultState {
                drop_after: None,
                trap_add_fraction: 0.0,
                rng,
                hostile_print: None,
            }),
            stall: watch::channel(false).0,
            kill: watch::channel(0).0,
            desync: watch::channel(0).0,
            hostile: Hostile::default(),
            changes: watch::channel(Generations::default()).0,
            transcript: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(1),
            config,
        }
    }

    /// Runs `f` on the state, then wakes the streams whose table changed.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (out, gens) = {
            let mut s = lock(&self.state);
            let out = f(&mut s);
            (out, s.gens)
        };
        self.changes.send_if_modified(|g| {
            let changed = *g != gens;
            *g = gens;
            changed
        });
        out
    }

    /// Adds a `/user/active` row at the current sim time; `None` when the table is full.
    pub(crate) fn open_session(&self, session: NewActiveSession) -> Option<u64> {
        let now = self.clock.now();
        self.with_state(|s| {
            let id = s.active.add(now, session)?;
            s.gens.active += 1;
            Some(id)
        })
    }

    /// Removes a `/user/active` row; returns it if it existed.
    pub(crate) fn close_session(&self, id: u64) -> Option<NewActiveSession> {
        self.with_state(|s| {
            let row = s.active.remove(id)?;
            s.gens.active += 1;
            Some(row.session)
        })
    }

    /// Appends to the memory log at the current sim time; returns the entry's id.
    pub(crate) fn log(&self, entry: NewLogEntry) -> u64 {
        let now = self.clock.now();
        self.with_state(|s| {
            s.gens.log += 1;
            s.log.push(now, entry)
        })
    }

    pub(crate) fn uptime(&self) -> Duration {
        let now = self.clock.now();
        self.with_state(|s| now.saturating_sub(s.boot_at))
    }

    /// True if this `add` should fail with the simulated fault.
    pub(crate) fn roll_add_fault(&self) -> bool {
        let mut f = lock(&self.faults);
        let p = f.trap_add_fraction;
        p > 0.0 && f.rng.gen_bool(p.min(1.0))
    }

    pub(crate) fn drop_after(&self) -> Option<u64> {
        lock(&self.faults).drop_after
    }

    pub(crate) fn record(&self, conn: u64, direction: Direction, words: &[Vec<u8>]) {
        if !self.config.record_transcript {
            return;
        }
        let words = words
            .iter()
            .map(|w| {
                for secret in [&b"=password="[..], b"=response="] {
                    if w.starts_with(secret) {
                        return [secret, b"<redacted>"].concat();
                    }
                }
                w.clone()
            })
            .collect();
        lock(&self.transcript).push(TranscriptEntry {
            conn,
            direction,
            words,
        });
    }

    pub(crate) fn transcript(&self) -> Vec<TranscriptEntry> {
        lock(&self.transcript).clone()
    }

    pub(crate) fn clear_transcript(&self) {
        lock(&self.transcript).clear();
    }

    /// Drop-after-N and trap-fraction settings ([`crate::Faults`]).
    pub(crate) fn set_drop_after(&self, n: Option<u64>) {
        lock(&self.faults).drop_after = n;
    }

    pub(crate) fn set_trap_add_fraction(&self, fraction: f64) {
        lock(&self.faults).trap_add_fraction = fraction.clamp(0.0, 1.0);
    }

    /// The hostile-print setting ([`crate::Faults::hostile_print`]).
    pub(crate) fn set_hostile_print(&self, print: Option<HostilePrint>) {
        lock(&self.faults).hostile_print = print;
    }

    pub(crate) fn hostile_print(&self) -> Option<HostilePrint> {
        lock(&self.faults).hostile_print.clone()
    }

    /// True if a `print` must kill its session ([`crate::Faults::kill_on_print`]).
    pub(crate) fn kill_on_print(&self) -> bool {
        self.hostile.kill_on_print.load(Ordering::SeqCst)
    }
}
