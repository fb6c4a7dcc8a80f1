//! [`Sim`]: the shared router state plus the test controls (clock, faults, inspection,
//! transcript).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::clock::{SimClock, lock};
use crate::cmd;
use crate::config::{SimConfig, Version};
use crate::state::{Entry, Family, NewEntry, Rule, State, Stats, Table, format_id, parse_id};
use crate::timefmt;

/// A RouterOS API emulator. Cheap to clone: clones share one router.
///
/// Serve it with [`Sim::serve`] / [`Sim::serve_tls`] (tests) or [`Sim::run`] (the binary);
/// inspect and steer it with the other methods while clients talk to it.
#[derive(Debug, Clone)]
pub struct Sim {
    pub(crate) shared: Arc<Shared>,
}

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

/// A refusal from a library call, with the trap message the router would send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SimError {
    /// The trap message.
    pub message: String,
}

#[derive(Debug)]
pub(crate) struct FaultState {
    pub drop_after: Option<u64>,
    pub trap_add_fraction: f64,
    pub rng: StdRng,
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
    pub faults: Mutex<FaultState>,
    pub stall: watch::Sender<bool>,
    /// Bumped to drop every connection.
    pub kill: watch::Sender<u64>,
    /// Address-list generation, for `print =follow=`.
    pub changes: watch::Sender<u64>,
    transcript: Mutex<Vec<TranscriptEntry>>,
    pub next_conn: AtomicU64,
}

impl Shared {
    /// Runs `f` on the state, then wakes follow streams if address lists changed.
    pub(crate) fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (out, generation) = {
            let mut s = lock(&self.state);
            let out = f(&mut s);
            (out, s.generation)
        };
        self.changes.send_if_modified(|g| {
            let changed = *g != generation;
            *g = generation;
            changed
        });
        out
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
}

impl Sim {
    /// A sim in its just-booted state.
    pub fn new(config: SimConfig) -> Sim {
        let version = config.parsed_version();
        let clock = SimClock::new(config.clock);
        let rng = StdRng::seed_from_u64(config.seed);
        Sim {
            shared: Arc::new(Shared {
                version,
                clock,
                state: Mutex::new(State::new()),
                cpu: tokio::sync::Mutex::new(None),
                faults: Mutex::new(FaultState {
                    drop_after: None,
                    trap_add_fraction: 0.0,
                    rng,
                }),
                stall: watch::channel(false).0,
                kill: watch::channel(0).0,
                changes: watch::channel(0).0,
                transcript: Mutex::new(Vec::new()),
                next_conn: AtomicU64::new(1),
                config,
            }),
        }
    }

    /// The configuration the sim was built with.
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// The sim clock: [`SimClock::advance`] jumps time forward.
    pub fn clock(&self) -> SimClock {
        self.shared.clock.clone()
    }

    /// Fault injection controls.
    pub fn faults(&self) -> Faults {
        Faults {
            shared: self.shared.clone(),
        }
    }

    /// Live entries of one list, in id order.
    pub fn address_list(&self, family: Family, list: &str) -> Vec<Entry> {
        self.entries_where(family, |l| l == list)
    }

    /// Live entries of every list of a family, in id order.
    pub fn all_entries(&self, family: Family) -> Vec<Entry> {
        self.entries_where(family, |_| true)
    }

    fn entries_where(&self, family: Family, keep: impl Fn(&str) -> bool) -> Vec<Entry> {
        let sh = &self.shared;
        let now = sh.clock.now();
        sh.with_state(|s| {
            s.purge(now);
            s.entries(family)
                .filter(|e| keep(&e.list))
                .map(|e| Entry {
                    id: format_id(e.id),
                    list: e.list.clone(),
                    address: e.address.clone(),
                    timeout_remaining: e.expires_at.map(|at| at.saturating_sub(now)),
                    dynamic: e.dynamic,
                    comment: e.comment.clone(),
                    disabled: e.disabled,
                    creation_time: timefmt::format_calendar(sh.clock.wall(e.created_at)),
                })
                .collect()
        })
    }

    /// Seeds an entry (e.g. a user's manual entry) with the same validation as `add`. Does not
    /// count as a persistent write: the counter measures what clients do. Returns the `.id`.
    pub fn insert_entry(&self, family: Family, entry: NewEntry) -> Result<String, SimError> {
        let sh = &self.shared;
        sh.with_state(|s| cmd::address_list::insert(sh, s, family, entry, false))
            .map(format_id)
            .map_err(|t| SimError { message: t.message })
    }

    /// Removes an entry by `.id`; false if it did not exist.
    pub fn remove_entry(&self, family: Family, id: &str) -> bool {
        let Some(id) = parse_id(id) else { return false };
        self.shared
            .with_state(|s| s.remove_entry(family, id).is_some())
    }

    /// Persistent (flash) configuration writes caused by API clients so far: static
    /// address-list entries added, changed or removed, rule changes, scripts and files created.
    pub fn persistent_writes(&self) -> u64 {
        self.shared.with_state(|s| s.persistent_writes)
    }

    /// Command counters.
    pub fn stats(&self) -> Stats {
        self.shared.with_state(|s| s.stats.clone())
    }

    /// Time since boot (or the last [`Faults::reboot`]).
    pub fn uptime(&self) -> Duration {
        self.shared.uptime()
    }

    /// Adds a firewall rule, e.g. `&[("chain", "prerouting"), ("action", "drop"),
    /// ("src-address-list", "crowdsec")]`. Returns its `.id`.
    pub fn add_rule(
        &self,
        family: Family,
        table: Table,
        attrs: &[(&str, &str)],
    ) -> Result<String, SimError> {
        let attrs = attrs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.shared
            .with_state(|s| cmd::rules::add_rule(s, family, table, attrs, false, None))
            .map(format_id)
            .map_err(|t| SimError { message: t.message })
    }

    /// Sets a rule's counters; false if no rule has that `.id`.
    pub fn set_rule_counters(&self, id: &str, bytes: u64, packets: u64) -> bool {
        let Some(id) = parse_id(id) else { return false };
        self.shared.with_state(|s| {
            s.rules
                .iter_mut()
                .find(|r| r.id == id)
                .map(|r| {
                    r.bytes = bytes;
                    r.packets = packets;
                })
                .is_some()
        })
    }

    /// Rules of one table, in order.
    pub fn rules(&self, family: Family, table: Table) -> Vec<Rule> {
        self.shared.with_state(|s| {
            s.rules
                .iter()
                .filter(|r| r.family == family && r.table == table)
                .map(|r| Rule {
                    id: format_id(r.id),
                    family: r.family,
                    table: r.table,
                    attrs: r.attrs.clone(),
                    bytes: r.bytes,
                    packets: r.packets,
                    disabled: r.disabled,
                })
                .collect()
        })
    }

    /// `/system/script` entries as `(name, source)`.
    pub fn scripts(&self) -> Vec<(String, String)> {
        self.shared.with_state(|s| {
            s.scripts
                .iter()
                .map(|x| (x.name.clone(), x.source.clone()))
                .collect()
        })
    }

    /// Every sentence in and out so far (empty unless
    /// [`SimConfig::record_transcript`] is set).
    pub fn transcript(&self) -> Vec<TranscriptEntry> {
        lock(&self.shared.transcript).clone()
    }

    /// Forgets the transcript recorded so far.
    pub fn clear_transcript(&self) {
        lock(&self.shared.transcript).clear();
    }
}

/// Fault injection. Changes apply at once to every connection.
#[derive(Debug, Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Faults {
    /// Drop each connection abruptly once it has received `n` sentences (counting `/login`).
    /// The `n`-th sentence is executed, but neither its reply nor any reply still waiting for
    /// its latency is sent: "applied but unacknowledged". `None` turns this off.
    pub fn drop_after_sentences(&self, n: Option<u64>) {
        lock(&self.shared.faults).drop_after = n;
    }

    /// Stop answering (and executing) while `true`; sockets stay open and input is buffered.
    pub fn stall(&self, on: bool) {
        self.shared.stall.send_replace(on);
    }

    /// Trap this fraction (0.0..=1.0) of address-list `add`s with `failure: simulated fault`,
    /// drawn from an RNG seeded by [`SimConfig::seed`].
    pub fn trap_add_fraction(&self, fraction: f64) {
        lock(&self.shared.faults).trap_add_fraction = fraction.clamp(0.0, 1.0);
    }

    /// A router reboot: dynamic entries vanish (§9 "Persistence"), rule counters reset,
    /// every connection drops, uptime restarts at 0; `.id`s keep counting.
    pub fn reboot(&self) {
        let now = self.shared.clock.now();
        self.shared.with_state(|s| {
            s.purge(now);
            s.reboot(now);
        });
        self.kill_connections();
    }

    /// Drops every open connection at once.
    pub fn kill_connections(&self) {
        self.shared.kill.send_modify(|g| *g += 1);
    }
}
