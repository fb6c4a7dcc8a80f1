//! Guard: brute-force and scan detection from the router's own log (issue 13).
//!
//! The router logs every failed login (`login failure for user … from … via ssh`), every refused
//! Winbox/Dude connection and, for rules with `log=yes`, every packet those rules see. Guard turns
//! such lines into bans the way CrowdSec's leaky-bucket scenarios do: one bucket per source and
//! scenario, a capacity and a leak interval, and a detection when an event arrives at a full
//! bucket. docs/guard.md describes what is detected, the defaults and why.
//!
//! Sans-IO, like [`crate::engine`]: nothing here reads a clock, a socket or a file. The caller
//! passes each log entry with the time it belongs to ([`Timestamp`]: the receive time in the live
//! path, the line's own time in [`replay`]) and pulls detections out:
//!
//! ```text
//!  (now, topics, message) ──handle_log──▶ parse ──▶ Event ──▶ buckets per source ──▶ Detection
//!                                                                 (bounded table)     poll_detection
//! ```
//!
//! ```
//! use tikban::guard::{Guard, Scenario, Settings, Timestamp};
//!
//! let mut guard = Guard::new(Settings::default(), [7, 11]).unwrap();
//! for i in 0..6u64 {
//!     let now = Timestamp::from_millis(1_790_962_595_000 + i * 500);
//!     let msg = "login failure for user admin from 203.0.113.9 via ssh";
//!     guard.handle_log(now, "system,error,critical", msg);
//! }
//! let d = guard.poll_detection().expect("six failures in 2.5 s overflow a bucket of 5");
//! assert_eq!(d.scenario, Scenario::LoginBf);
//! assert_eq!(d.source.to_string(), "203.0.113.9");
//! assert_eq!(d.events, 6);
//! assert!(guard.poll_detection().is_none());
//! ```
//!
//! Order of calls: [`Guard::handle_log`] (or [`Guard::handle_event`]) for each entry, then
//! [`Guard::poll_detection`] until `None`. At most [`QUEUE`] detections wait; more are counted
//! in [`Counters::detections_dropped`] and lost. Each call yields at most two.
//!
//! Memory is fixed at start: [`Settings::max_sources`] records of 96 bytes plus an index
//! ([`Guard::heap_bytes`]; the table is 1,025,536 bytes at the default 10,000). Peer text never
//! reaches a [`Detection`] unescaped ([`escape`]).

pub mod line;
pub mod parse;
pub mod replay;
pub mod settings;
mod table;
pub mod time;

#[doc(hidden)]
pub mod fuzzing;

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::net::IpAddr;

pub use parse::{Event, Login, Packet, Protocol, Service};
pub use settings::{Bucket, Cidr, Settings, SettingsError, VARS};
pub use time::Timestamp;

use table::{Inserted, LOGIN, PORTSCAN, Source, Table, USER_ENUM};

/// Most detections waiting for [`Guard::poll_detection`].
pub const QUEUE: usize = 16;
/// Characters of a user name kept in a [`Detection`] (before escaping).
pub const USER_CHARS: usize = 32;

/// What guard detects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Too many failed logins or refused Winbox/Dude connections.
    LoginBf,
    /// Too many distinct user names in failed logins.
    UserEnum,
    /// Too many distinct destination ports in firewall log lines.
    PortScan,
}

impl Scenario {
    /// Every scenario, in [`Scenario::index`] order.
    pub const ALL: [Scenario; 3] = [Scenario::LoginBf, Scenario::UserEnum, Scenario::PortScan];

    /// The CrowdSec scenario name for the LAPI alert.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LoginBf => "tikban/routeros-login-bf",
            Scenario::UserEnum => "tikban/routeros-user-enum",
            Scenario::PortScan => "tikban/routeros-portscan",
        }
    }

    /// A short label for metrics: `login-bf`, `user-enum`, `portscan`.
    pub fn label(self) -> &'static str {
        match self {
            Scenario::LoginBf => "login-bf",
            Scenario::UserEnum => "user-enum",
            Scenario::PortScan => "portscan",
        }
    }

    /// Position in [`Scenario::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The outcome of a login-related event, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `login failure for user …`.
    Failure,
    /// `user … logged in …`.
    Success,
    /// `user … logged out …`.
    Logout,
    /// `denied winbox/dude connect …`.
    Denied,
}

impl Outcome {
    /// Every outcome, in [`Outcome::index`] order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Failure,
        Outcome::Success,
        Outcome::Logout,
        Outcome::Denied,
    ];

    /// `failure`, `success`, `logout`, `denied`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Failure => "failure",
            Outcome::Success => "success",
            Outcome::Logout => "logout",
            Outcome::Denied => "denied",
        }
    }

    /// Position in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A set of services.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Services(u16);

impl Services {
    /// The services in the set, in [`Service::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Service> {
        Service::ALL
            .into_iter()
            .filter(move |s| self.0 & (1 << s.index()) != 0)
    }

    /// True when empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Services {
    /// `ssh,winbox`, or `-` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(s.label())?;
        }
        Ok(())
    }
}

/// A source crossed a scenario's threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// The source to ban.
    pub source: IpAddr,
    /// The scenario.
    pub scenario: Scenario,
    /// Events in the bucket's current run, the triggering one included (distinct values for
    /// the distinct-count scenarios).
    pub events: u32,
    /// The run's first event, to the second.
    pub first: Timestamp,
    /// The triggering event.
    pub last: Timestamp,
    /// Services of the failed logins in the run (login scenarios; empty for port scans).
    pub services: Services,
    /// Distinct user names the source tried lately (at most 16 remembered).
    pub users: u32,
    /// The triggering event's user name, escaped ([`escape`]) and cut to [`USER_CHARS`]
    /// characters; `None` for a denied connection, a port scan or an unknown user.
    pub last_user: Option<String>,
    /// Distinct destination ports of a port scan, ascending (at most 16); empty otherwise.
    pub ports: Vec<u16>,
}

impl Detection {
    /// The evidence in one line of `key=value` pairs, for the LAPI alert's message and the
    /// replay output: `events=6 first=2026-10-02T17:36:30Z services=ssh users=1
    /// last-user="admin"`. Plain printable ASCII: peer text is escaped.
    pub fn summary(&self) -> String {
        let mut s = format!("events={} first={}", self.events, self.first);
        if self.scenario == Scenario::PortScan {
            s.push_str(" ports=");
            for (i, p) in self.ports.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{p}");
            }
        } else {
            let _ = write!(s, " services={} users={}", self.services, self.users);
            if let Some(u) = &self.last_user {
                let _ = write!(s, " last-user=\"{u}\"");
            }
        }
        s
    }
}

impl fmt::Display for Detection {
    /// `<last> <source> <scenario> <summary>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.last,
            self.source,
            self.scenario.name(),
            self.summary()
        )
    }
}

/// Counters for metrics: plain numbers the daemon maps to Prometheus series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Entries given to [`Guard::handle_log`].
    pub lines: u64,
    /// Entries that were not an event guard knows ([`Guard::handle_log`] only).
    pub other_lines: u64,
    /// Login events by service ([`Service::index`]) and outcome ([`Outcome::index`]).
    pub events: [[u64; 4]; 13],
    /// Firewall log lines.
    pub firewall: u64,
    /// Detections by scenario ([`Scenario::index`]).
    pub detections: [u64; 3],
    /// Detections lost because [`QUEUE`] were already waiting.
    pub detections_dropped: u64,
    /// Sources tracked now (a gauge).
    pub tracked_sources: u64,
    /// Tracked sources replaced by a new one.
    pub evictions: u64,
    /// Events of new sources not tracked because every candidate for eviction was hot.
    pub untracked: u64,
    /// Events from allowlisted sources.
    pub allowlisted: u64,
}

impl Counters {
    /// The login events of one service and outcome.
    pub fn event_count(&self, service: Service, outcome: Outcome) -> u64 {
        self.events[service.index()][outcome.index()]
    }

    /// Every non-zero (service, outcome, count).
    pub fn event_counts(&self) -> impl Iterator<Item = (Service, Outcome, u64)> + '_ {
        Service::ALL.into_iter().flat_map(move |s| {
            Outcome::ALL
                .into_iter()
                .map(move |o| (s, o, self.event_count(s, o)))
                .filter(|(_, _, n)| *n > 0)
        })
    }

    /// Login events of one outcome, over every service.
    pub fn outcome_total(&self, outcome: Outcome) -> u64 {
        self.events.iter().map(|row| row[outcome.index()]).sum()
    }
}

/// The detectors. See the module docs.
#[derive(Debug)]
pub struct Guard {
    settings: Settings,
    table: Table,
    key: [u64; 2],
    /// Leak interval per bucket, ms.
    leak_ms: [u64; 3],
    /// Capacity × leak interval per bucket, ms: a bucket whose emptying time goes past this
    /// overflows.
    full_ms: [u64; 3],
    ban_secs: u64,
    queue: VecDeque<Detection>,
    counters: Counters,
}

impl Guard {
    /// Guard with checked settings. `key` seeds the table's keyed hash: pass random bits in the
    /// live path, so peers cannot aim addresses at one probe chain.
    pub fn new(settings: Settings, key: [u64; 2]) -> Result<Guard, Vec<SettingsError>> {
        settings.check()?;
        let buckets = [settings.login, settings.user_enum, settings.portscan];
        let leak_ms = buckets.map(|b| b.leakspeed.as_millis().max(1) as u64);
        let full_ms = [0, 1, 2].map(|i| u64::from(buckets[i].capacity) * leak_ms[i]);
        Ok(Guard {
            table: Table::new(settings.max_sources, key),
            ban_secs: settings.ban_duration.as_secs().max(1),
            settings,
            key,
            leak_ms,
            full_ms,
            queue: VecDeque::with_capacity(QUEUE),
            counters: Counters::default(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The counters, with the tracked-sources gauge filled in.
    pub fn counters(&self) -> Counters {
        Counters {
            tracked_sources: self.table.len() as u64,
            ..self.counters.clone()
        }
    }

    /// Sources tracked now.
    pub fn tracked_sources(&self) -> usize {
        self.table.len()
    }

    /// Heap bytes held: the source table (allocated once, at the cap) and the detection queue
    /// with its strings.
    pub fn heap_bytes(&self) -> usize {
        let queued: usize = self
            .queue
            .iter()
            .map(|d| {
                d.last_user.as_ref().map_or(0, String::capacity)
                    + d.ports.capacity() * std::mem::size_of::<u16>()
            })
            .sum();
        self.table.heap_bytes()
            + self.queue.capacity() * std::mem::size_of::<Detection>()
            + queued
            + self.settings.allowlist.capacity() * std::mem::size_of::<Cidr>()
    }

    /// One log entry as `/log/print` gives it.
    pub fn handle_log(&mut self, now: Timestamp, topics: &str, message: &str) {
        self.counters.lines += 1;
        match parse::parse(topics, message) {
            Some(event) => self.handle_event(now, &event),
            None => self.counters.other_lines += 1,
        }
    }

    /// One parsed event.
    pub fn handle_event(&mut self, now: Timestamp, event: &Event<'_>) {
        match *event {
            Event::LoginFailure(l) => {
                self.count(l.service, Outcome::Failure);
                self.login_event(now, l.source, l.service, l.user);
            }
            Event::Denied { source } => {
                self.count(Service::WinboxDude, Outcome::Denied);
                self.login_event(now, source, Service::WinboxDude, None);
            }
            Event::LoggedIn(l) => self.count(l.service, Outcome::Success),
            Event::LoggedOut(l) => self.count(l.service, Outcome::Logout),
            Event::Firewall(p) => {
                self.counters.firewall += 1;
                let ported = matches!(p.protocol, Protocol::Tcp | Protocol::Udp);
                if let (true, true, Some(port)) =
                    (self.settings.portscan.enabled, ported, p.dst_port)
                {
                    self.port_event(now, p.src, port);
                }
            }
        }
    }

    /// The next detection, oldest first.
    #[must_use]
    pub fn poll_detection(&mut self) -> Option<Detection> {
        self.queue.pop_front()
    }

    fn count(&mut self, service: Service, outcome: Outcome) {
        let n = &mut self.counters.events[service.index()][outcome.index()];
        *n = n.saturating_add(1);
    }

    /// The record of `addr`, created (or taken over) when needed; `None` when the source is
    /// allowlisted or the table refused it.
    fn track(&mut self, now: u64, addr: IpAddr) -> Option<usize> {
        if self.settings.allowed(addr) {
            self.counters.allowlisted += 1;
            return None;
        }
        let key = table::key_of(addr);
        if let Some(i) = self.table.find(&key) {
            return Some(i);
        }
        match self.table.insert(key, now, &self.leak_ms) {
            Inserted::New(i) => Some(i),
            Inserted::Evicted(i) => {
                self.counters.evictions += 1;
                Some(i)
            }
            Inserted::Refused => {
                self.counters.untracked += 1;
                None
            }
        }
    }

    fn login_event(&mut self, now: Timestamp, addr: IpAddr, service: Service, user: Option<&str>) {
        let login = self.settings.login.enabled;
        let user_enum = self.settings.user_enum.enabled && user.is_some();
        if !login && !user_enum {
            return;
        }
        let Some(i) = self.track(now.as_millis(), addr) else {
            return;
        };
        let user_hash = user.map(|u| table::user_hash(self.key, u));
        let mut fired = [None, None];
        let Some(src) = self.table.get_mut(i) else {
            return;
        };
        src.rebase(now.as_millis());
        let t = src.base;
        if src.off[LOGIN] == 0 && src.off[USER_ENUM] == 0 {
            src.services = 0;
        }
        src.services |= 1 << service.index();
        if login {
            fired[0] = pour(
                src,
                LOGIN,
                t,
                self.leak_ms[LOGIN],
                self.full_ms[LOGIN],
                self.ban_secs,
            );
        }
        if let (true, Some(h)) = (user_enum, user_hash) {
            if wake(src, USER_ENUM, t) {
                if src.off[USER_ENUM] == 0 {
                    src.ring_clear(false);
                }
                if !src.ring_contains(false, h) {
                    src.ring_push(false, h);
                    fired[1] = pour(
                        src,
                        USER_ENUM,
                        t,
                        self.leak_ms[USER_ENUM],
                        self.full_ms[USER_ENUM],
                        self.ban_secs,
                    );
                }
            }
        }
        let src = *src;
        for (scenario, run) in [Scenario::LoginBf, Scenario::UserEnum]
            .into_iter()
            .zip(fired)
        {
            if let Some(run) = run {
                self.emit(scenario, &src, run, t, user);
            }
        }
    }

    fn port_event(&mut self, now: Timestamp, addr: IpAddr, port: u16) {
        let Some(i) = self.track(now.as_millis(), addr) else {
            return;
        };
        let Some(src) = self.table.get_mut(i) else {
            return;
        };
        src.rebase(now.as_millis());
        let t = src.base;
        if !wake(src, PORTSCAN, t) {
            return;
        }
        if src.off[PORTSCAN] == 0 {
            src.ring_clear(true);
        }
        if src.ring_contains(true, port) {
            return;
        }
        src.ring_push(true, port);
        let fired = pour(
            src,
            PORTSCAN,
            t,
            self.leak_ms[PORTSCAN],
            self.full_ms[PORTSCAN],
            self.ban_secs,
        );
        let src = *src;
        if let Some(run) = fired {
            self.emit(Scenario::PortScan, &src, run, t, None);
        }
    }

    fn emit(&mut self, scenario: Scenario, src: &Source, run: Run, t: u64, user: Option<&str>) {
        self.counters.detections[scenario.index()] += 1;
        if self.queue.len() >= QUEUE {
            self.counters.detections_dropped += 1;
            return;
        }
        let login = scenario != Scenario::PortScan;
        let mut ports: Vec<u16> = if login {
            Vec::new()
        } else {
            src.ring_values(true).collect()
        };
        ports.sort_unstable();
        self.queue.push_back(Detection {
            source: src.addr(),
            scenario,
            events: u32::from(run.events),
            first: Timestamp::from_secs(u64::from(run.first)),
            last: Timestamp::from_millis(t),
            services: if login {
                Services(src.services)
            } else {
                Services::default()
            },
            users: src.ring_values(false).count() as u32,
            last_user: user.filter(|_| login).map(|u| escape(u, USER_CHARS)),
            ports,
        });
    }
}

/// The run a bucket had when it overflowed.
#[derive(Debug, Clone, Copy)]
struct Run {
    events: u16,
    first: u32,
}

/// Ends a quiet period that is over. False while the bucket is still quiet.
fn wake(src: &mut Source, b: usize, t: u64) -> bool {
    if src.quiet & (1 << b) == 0 {
        return true;
    }
    if t / 1000 < u64::from(src.first[b]) {
        return false;
    }
    src.quiet &= !(1 << b);
    src.off[b] = 0;
    src.count[b] = 0;
    true
}

/// Pours one event into bucket `b` at `t` (the source's base). On overflow the bucket turns
/// quiet for `ban_secs` and the run is returned.
fn pour(
    src: &mut Source,
    b: usize,
    t: u64,
    leak_ms: u64,
    full_ms: u64,
    ban_secs: u64,
) -> Option<Run> {
    if !wake(src, b, t) {
        return None;
    }
    let secs = u32::try_from(t / 1000).unwrap_or(u32::MAX);
    if src.off[b] == 0 {
        src.count[b] = 0;
        src.first[b] = secs;
    }
    src.count[b] = src.count[b].saturating_add(1);
    let level = u64::from(src.off[b]) + leak_ms;
    if level > full_ms {
        let run = Run {
            events: src.count[b],
            first: src.first[b],
        };
        src.quiet |= 1 << b;
        src.first[b] = u32::try_from(t / 1000 + ban_secs).unwrap_or(u32::MAX);
        src.off[b] = 0;
        src.count[b] = 0;
        return Some(run);
    }
    // level ≤ full_ms ≤ MAX_WINDOW < u32::MAX (checked by the settings).
    src.off[b] = level as u32;
    None
}

/// Peer text made safe for one line of output: printable ASCII stays, `"` and `\` are
/// backslashed, everything else becomes `\xNN` or `\u{…}`, and text past `max_chars` characters
/// is cut with `...`. A user name cannot start a new line, move the cursor or fake a quote.
pub fn escape(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars) + 3);
    for (n, c) in text.chars().enumerate() {
        if n == max_chars {
            out.push_str("...");
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
