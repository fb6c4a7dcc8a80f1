//! [`Sim`]: the shared router state plus the test controls (clock, faults, inspection,
//! transcript).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::clock::SimClock;
use crate::cmd;
use crate::config::SimConfig;
use crate::memlog::{LogEntry, NewLogEntry};
use crate::sessions::{ActiveSession, NewActiveSession};
use crate::shared::{Shared, TranscriptEntry};
use crate::state::{Entry, Family, NewEntry, Rule, Stats, Table, format_id, parse_id};
use crate::timefmt;

/// A RouterOS API emulator. Cheap to clone: clones share one router.
///
/// Serve it with [`Sim::serve`] / [`Sim::serve_tls`] (tests) or [`Sim::run`] (the binary);
/// inspect and steer it with the other methods while clients talk to it.
#[derive(Debug, Clone)]
pub struct Sim {
    pub(crate) shared: Arc<Shared>,
}

/// A refusal from a library call, with the trap message the router would send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SimError {
    /// The trap message.
    pub message: String,
}

impl Sim {
    /// A sim in its just-booted state.
    pub fn new(config: SimConfig) -> Sim {
        Sim {
            shared: Arc::new(Shared::new(config)),
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
                    creation_time: timefmt::format_date_time(
                        sh.clock.wall(e.created_at),
                        sh.version.date_style(),
                    ),
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

    /// Sets what the router's resolver answers for `name` (no real DNS is ever asked): an
    /// address-list entry whose `address` is `name` gets one dynamic child entry per address of
    /// its family, commented with the name. Entries already holding `name` are resolved again
    /// at once; an empty `addresses` forgets the name (their children go). At most 1024 names
    /// and 64 addresses per name are kept; more are refused.
    pub fn set_dns(&self, name: &str, addresses: &[IpAddr]) -> Result<(), SimError> {
        const MAX_NAMES: usize = 1024;
        const MAX_ADDRESSES: usize = 64;
        if addresses.len() > MAX_ADDRESSES {
            return Err(SimError {
                message: format!("at most {MAX_ADDRESSES} addresses per name"),
            });
        }
        let now = self.shared.clock.now();
        self.shared.with_state(|s| {
            if addresses.is_empty() {
                s.dns.remove(name);
            } else {
                if !s.dns.contains_key(name) && s.dns.len() >= MAX_NAMES {
                    return Err(SimError {
                        message: format!("at most {MAX_NAMES} names"),
                    });
                }
                s.dns.insert(name.to_owned(), addresses.to_vec());
            }
            s.purge(now);
            s.resync_name(name, now);
            Ok(())
        })
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

    /// Adds a line to the memory log (`/log`), as if the router logged it now: e.g.
    /// `sim.log("system,error,critical", "login failure for user admin from 192.0.2.7 via ssh")`
    /// to play an ssh attack. Returns its `.id`. Running `print =follow-only=` streams see it at
    /// once.
    pub fn log(&self, topics: &str, message: &str) -> String {
        self.push_log(NewLogEntry::new(topics, message))
    }

    /// Adds a log entry with every field (e.g. an `extra-info`); returns its `.id`.
    pub fn push_log(&self, entry: NewLogEntry) -> String {
        format_id(self.shared.log(entry))
    }

    /// The memory log, oldest first: the newest
    /// [`SimConfig::log_memory_lines`](crate::SimConfig::log_memory_lines) entries since the
    /// last boot.
    pub fn logs(&self) -> Vec<LogEntry> {
        let sh = &self.shared;
        sh.with_state(|s| {
            s.log
                .iter()
                .map(|e| LogEntry {
                    id: format_id(e.id),
                    time: sh.clock.wall(e.at),
                    topics: e.topics.clone(),
                    message: e.message.clone(),
                    extra_info: e.extra_info.clone(),
                })
                .collect()
        })
    }

    /// Adds a `/user/active` row, e.g. `sim.add_active_session("admin", "192.0.2.10",
    /// "winbox")` for an admin on winbox, and logs `user admin logged in from 192.0.2.10 via
    /// winbox` (`system,info,account`) as the router would. Returns its `.id`; refused when the
    /// table is full (4096 rows).
    pub fn add_active_session(
        &self,
        name: &str,
        address: &str,
        via: &str,
    ) -> Result<String, SimError> {
        self.push_active_session(NewActiveSession::new(name, address, via))
    }

    /// Like [`Sim::add_active_session`], with every field.
    pub fn push_active_session(&self, session: NewActiveSession) -> Result<String, SimError> {
        let line = NewLogEntry::logged_in(&session.name, &session.address, &session.via);
        let id = self.shared.open_session(session).ok_or_else(|| SimError {
            message: "too many active sessions".to_owned(),
        })?;
        self.shared.log(line);
        Ok(format_id(id))
    }

    /// Ends a `/user/active` session: the user logs out, and
    /// `user <name> logged out from <address> via <via>` is logged. False if no row has that
    /// `.id`. Ending an API session this way removes its row only; its connection stays open.
    pub fn remove_active_session(&self, id: &str) -> bool {
        let Some(id) = parse_id(id) else {
            return false;
        };
        match self.shared.close_session(id) {
            Some(s) => {
                self.shared
                    .log(NewLogEntry::logged_out(&s.name, &s.address, &s.via));
                true
            }
            None => false,
        }
    }

    /// `/user/active`, in `.id` order (the sim's own API sessions included).
    pub fn active_sessions(&self) -> Vec<ActiveSession> {
        let sh = &self.shared;
        sh.with_state(|s| {
            s.active
                .iter()
                .map(|x| ActiveSession {
                    id: format_id(x.id),
                    when: sh.clock.wall(x.at),
                    name: x.session.name.clone(),
                    address: x.session.address.clone(),
                    via: x.session.via.clone(),
                    group: x.session.group.clone(),
                    radius: x.session.radius,
                })
                .collect()
        })
    }

    /// Sets `/system/resource` `total-memory` and `free-memory`, in bytes. `free` is capped at
    /// `total`.
    pub fn set_memory(&self, total: u64, free: u64) {
        self.shared.with_state(|s| {
            s.memory.total = total;
            s.memory.free = free.min(total);
        });
    }

    /// Every sentence in and out so far (empty unless
    /// [`SimConfig::record_transcript`] is set).
    pub fn transcript(&self) -> Vec<TranscriptEntry> {
        self.shared.transcript()
    }

    /// Forgets the transcript recorded so far.
    pub fn clear_transcript(&self) {
        self.shared.clear_transcript();
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
        self.shared.set_drop_after(n);
    }

    /// Stop answering (and executing) while `true`; sockets stay open and input is buffered.
    pub fn stall(&self, on: bool) {
        self.shared.stall.send_replace(on);
    }

    /// Trap this fraction (0.0..=1.0) of address-list `add`s with `failure: simulated fault`,
    /// drawn from an RNG seeded by [`SimConfig::seed`].
    pub fn trap_add_fraction(&self, fraction: f64) {
        self.shared.set_trap_add_fraction(fraction);
    }

    /// A router reboot: dynamic entries vanish (§9 "Persistence"), rule counters reset, the
    /// memory log empties, every connection drops (logging no logout), uptime restarts at 0;
    /// `.id`s keep counting.
    pub fn reboot(&self) {
        // Connections die first, so that no command they had read runs after the wipe.
        self.kill_connections();
        let now = self.shared.clock.now();
        self.shared.with_state(|s| {
            s.purge(now);
            s.reboot(now);
        });
    }

    /// Drops every open connection at once.
    pub fn kill_connections(&self) {
        self.shared.kill.send_modify(|g| *g += 1);
    }

    // --- Hostile router (issue 17): a router that is broken or hostile rather than slow. ---

    /// While `Some`, every one-shot `print` of `/ip/firewall/address-list` or
    /// `/ipv6/firewall/address-list` (not `follow`, not `count-only`) answers with its real rows
    /// and then with invented rows forever, never `!done`, until the client cancels it or the
    /// connection ends. Purpose: a client must bound what a print may cost it (rows kept in
    /// memory, time spent in one print); see [`HostilePrint`] for what the rows look like and how
    /// fast they come. A print already streaming keeps streaming when the fault is turned off;
    /// prints started afterwards are normal again.
    pub fn hostile_print(&self, print: Option<HostilePrint>) {
        self.shared.set_hostile_print(print);
    }

    /// Invented rows the hostile prints have handed to their connections so far (proof that the
    /// fault was exercised).
    pub fn hostile_rows_sent(&self) -> u64 {
        self.shared.hostile.rows.load(Ordering::SeqCst)
    }

    /// While `true`, a session is dropped abruptly the moment a `print` command (any menu) comes
    /// in: it is neither executed nor answered. Purpose: a router that kills the session on every
    /// print, so that each connection logs in and dies at once; a client whose reconnect backoff
    /// starts over at every successful login would log in about once a second, and each login
    /// writes a line into the router's 1000-line memory log.
    pub fn kill_on_print(&self, on: bool) {
        self.shared
            .hostile
            .kill_on_print
            .store(on, Ordering::SeqCst);
    }

    /// Sessions [`Faults::kill_on_print`] has dropped so far.
    pub fn print_kills(&self) -> u64 {
        self.shared.hostile.print_kills.load(Ordering::SeqCst)
    }

    /// Desynchronises every connection open now: each one receives the length prefix of a
    /// [`DESYNC_WORD`]-byte word and then nothing more. The router keeps executing what it
    /// receives, but its replies vanish into the unfinished word: to the client every later
    /// command simply times out, with no error and no closed socket. The announced length stays
    /// below a client's usual 64 KiB word limit, so the decoder waits for the word instead of
    /// failing. Connections opened later are not affected. Purpose: a client must notice a
    /// connection that answers nothing at all (a few timeouts in a row) and rebuild it, rather
    /// than time out on it forever.
    pub fn desync(&self) {
        self.shared.desync.send_modify(|g| *g += 1);
    }

    /// Connections that have received the desync bytes so far ([`Faults::desync`]).
    pub fn desynced_connections(&self) -> u64 {
        self.shared.hostile.desynced.load(Ordering::SeqCst)
    }
}

/// The length a [`Faults::desync`] announces: the word that never ends.
pub const DESYNC_WORD: u32 = 60_000;

/// What a hostile address-list print sends ([`Faults::hostile_print`]).
///
/// Each invented row is shaped like a real one of the printed list (`.id`, `list`, `address`,
/// `creation-time`, `timeout` of one day, `dynamic=true`, `disabled=false`, `comment`), projected
/// through the print's `.proplist`, with a fresh `.id` (from `*10000000` up, never reused) and a
/// fresh address (IPv4 from `100.64.0.0/10`, IPv6 from `2001:db8:ffff::/48`; they wrap after four
/// million rows). Its `list` is the one the print asked for (`?list=NAME`), so the rows match
/// the query. Invented rows are not recorded in the transcript ([`Sim::transcript`]): an endless
/// print would fill the test's memory. The stream follows the client's reading speed (at most
/// two batches of 256 rows wait for the socket), so neither side's memory grows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostilePrint {
    /// The comment every invented row carries, e.g. `tikban cscli` for rows that look like a
    /// client's own entries.
    pub comment: String,
    /// Pause between two invented rows; zero sends them as fast as the client reads.
    pub every: Duration,
}

impl HostilePrint {
    /// Rows carrying `comment`, as fast as the client reads, forever.
    pub fn endless(comment: &str) -> Self {
        HostilePrint {
            comment: comment.to_owned(),
            every: Duration::ZERO,
        }
    }

    /// One row carrying `comment` every `every`, forever.
    pub fn trickle(comment: &str, every: Duration) -> Self {
        HostilePrint {
            comment: comment.to_owned(),
            every,
        }
    }
}
