//! Configuration of a [`Sim`](crate::Sim): users, modelled version, cost model, limits.

use std::time::Duration;

use crate::clock::ClockMode;
use crate::timefmt::DateStyle;
use crate::tls::TlsIdentity;

/// Everything a sim is built from. `Default` is an `admin` user with an empty password on
/// RouterOS `7.20.1`, identity `MikroTik`, architecture `arm64`, no cost, no transcript.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// API users. Login checks name and password; policies gate commands.
    pub users: Vec<User>,
    /// Modelled RouterOS version, e.g. `7.20.1`. `!empty` is sent iff ≥ 7.18
    /// (`docs/reference/routeros-api.md` §3); the legacy challenge login is used iff < 6.43 (§4); durations print
    /// in v6 form below 7.
    pub version: String,
    /// `/system/identity` `name`.
    pub identity: String,
    /// `/system/resource` `architecture-name`.
    pub architecture: String,
    /// `/system/resource` `board-name`.
    pub board_name: String,
    /// Processing cost per write command and per-connection latency.
    pub cost: CostModel,
    /// Record every sentence in and out ([`Sim::transcript`](crate::Sim::transcript)).
    pub record_transcript: bool,
    /// Refuse commands the logged-in user's policies do not allow (`not enough permissions (9)`).
    pub enforce_policies: bool,
    /// Concurrent API sessions; more are accepted and closed at once. RouterOS `/ip service`
    /// `max-sessions` defaults to 20 (§5); the over-limit behaviour is **unverified**.
    pub max_sessions: usize,
    /// Commands answered `not logged in` before the sim sends `!fatal` and closes. The real
    /// limit is undocumented (§1 "limited before login"): **unverified**.
    pub max_commands_before_login: u32,
    /// Delay between the `!done` of a failed login and closing the socket. The router's socket
    /// state after a failed login is **unverified** (§4).
    pub bad_login_close_delay: Duration,
    /// Decoder limits for incoming sentences.
    pub limits: routeros_proto::Limits,
    /// How the sim clock moves.
    pub clock: ClockMode,
    /// Seed for fault injection randomness.
    pub seed: u64,
    /// TLS identity for [`Sim::serve_tls`](crate::Sim::serve_tls); generated if `None`.
    pub tls_identity: Option<TlsIdentity>,
    /// How `/log/print` writes `time` (see [`LogTimeFormat`]).
    pub log_time: LogTimeFormat,
    /// Whether trap messages carry RouterOS's numeric suffix (see [`TrapCodes`]).
    pub trap_codes: TrapCodes,
    /// Entries the memory log keeps (the newest ones). RouterOS's default `memory` action keeps
    /// 1000 (`/system/logging/action` `memory-lines`, MikroTik manual "Log"); its range is
    /// 1..65535, and the sim clamps to it.
    pub log_memory_lines: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            users: vec![User::new("admin", "")],
            version: "7.20.1".to_owned(),
            identity: "MikroTik".to_owned(),
            architecture: "arm64".to_owned(),
            board_name: "RB5009UG+S+".to_owned(),
            cost: CostModel::default(),
            record_transcript: false,
            enforce_policies: true,
            max_sessions: 20,
            max_commands_before_login: 10,
            bad_login_close_delay: Duration::from_millis(100),
            limits: routeros_proto::Limits::default(),
            clock: ClockMode::Realtime,
            seed: 0x7153,
            tls_identity: None,
            log_time: LogTimeFormat::Auto,
            trap_codes: TrapCodes::Recorded,
            log_memory_lines: 1000,
        }
    }
}

impl SimConfig {
    /// Replaces the users with one user holding every API policy.
    pub fn with_user(mut self, name: &str, password: &str) -> Self {
        self.users = vec![User::new(name, password)];
        self
    }

    /// Adds a user.
    pub fn add_user(mut self, user: User) -> Self {
        self.users.push(user);
        self
    }

    /// Sets the modelled RouterOS version.
    pub fn with_version(mut self, version: &str) -> Self {
        self.version = version.to_owned();
        self
    }

    /// Sets the cost model.
    pub fn with_cost(mut self, cost: CostModel) -> Self {
        self.cost = cost;
        self
    }

    /// Turns the transcript recorder on.
    pub fn with_transcript(mut self) -> Self {
        self.record_transcript = true;
        self
    }

    /// Uses a clock that only moves when advanced.
    pub fn with_manual_clock(mut self) -> Self {
        self.clock = ClockMode::Manual;
        self
    }

    pub(crate) fn parsed_version(&self) -> Version {
        Version::parse(&self.version)
    }
}

/// Trap texts with or without their numeric suffix.
///
/// RouterOS 7 appends a number to some messages: `invalid user name or password (6)` (go-routeros
/// `TestLoginIncorrectPost643`; 6.47.6 and 6.49.14 traces in BenMenking/routeros-api issue 52 and
/// akpw/mktxp issue 131), `not enough permissions (9)` (reported from 7.24 routers in public
/// projects), `no such item (4)` (matched by public RouterOS 7 client code, e.g. DHCP-lease
/// removal scripts; REST answers `failure: no such item (4)`). The same messages also appear
/// without it (`no such item` in csrb and librouteros traces). Clients should accept both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrapCodes {
    /// Each message in the form its public traces show: `invalid user name or password (6)`,
    /// `not enough permissions (9)`, `no such item`.
    #[default]
    Recorded,
    /// Every message whose number is known carries it: `no such item (4)`,
    /// `invalid user name or password (6)`, `not enough permissions (9)`.
    Numbered,
    /// No message carries a number: `invalid user name or password`.
    Bare,
}

impl TrapCodes {
    /// Known numbers (see the type's doc for the sources).
    const KNOWN: &'static [(&'static str, u32)] = &[
        ("no such item", 4),
        ("invalid user name or password", 6),
        ("not enough permissions", 9),
    ];

    /// `message` as this mode writes it.
    pub(crate) fn apply(self, message: &str) -> String {
        let base = strip_code(message);
        match self {
            TrapCodes::Recorded => message.to_owned(),
            TrapCodes::Bare => base.to_owned(),
            TrapCodes::Numbered => match Self::KNOWN.iter().find(|(m, _)| *m == base) {
                Some((m, code)) => format!("{m} ({code})"),
                None => message.to_owned(),
            },
        }
    }
}

/// `message` without a trailing ` (<digits>)`.
fn strip_code(message: &str) -> &str {
    if let Some(open) = message.rfind(" (")
        && let Some(digits) = message[open + 2..].strip_suffix(')')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        return &message[..open];
    }
    message
}

/// How `/log/print` writes an entry's `time`.
///
/// Recorded API rows from 2025 routers give the full date even for entries of the day
/// (`'time': '2025-06-16 07:25:10'` in dev-drizzithiago/ProjetoAutomacao
/// `mikrotik_monitoramento/mikrotik_logs.py`; `'2025-11-21 12:41:09'` next to `extra-info`, so
/// 7.19+, in a public log-to-Loki script), while the manual describes the console dropping what
/// is implied (today: time only; this year: no year) and public rows show `'07:54:04'` and
/// `'08-31 07:08:09'` from routers of unknown version. Clients must accept every form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogTimeFormat {
    /// By version: from 7.10 the full date (`2025-06-16 07:25:10`, the recorded rows); before
    /// 7.10 the relative form of the manual (`07:54:04`, `sep/15 09:54:33`,
    /// `jan/02/1970 02:00:09`). The 7.10 boundary is the ISO date switch; when relative
    /// printing stopped is **unverified**.
    #[default]
    Auto,
    /// Always the full date, in the version's date style.
    Absolute,
    /// Always relative to the router's current date, in the version's date style (7.10+:
    /// `07:54:04`, `08-31 07:08:09`, `2024-12-31 23:00:00`).
    Relative,
}

/// An API user with its group policies (`api`, `read`, `write`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Password, compared byte for byte.
    pub password: String,
    /// Policy names. Default `api,read,write`. `api` is needed to log in over the API.
    pub policies: Vec<String>,
    /// The user's group, shown in `/user/active`. Default `full`.
    pub group: String,
}

impl User {
    /// A user with policies `api,read,write`.
    pub fn new(name: &str, password: &str) -> Self {
        Self {
            name: name.to_owned(),
            password: password.to_owned(),
            policies: vec!["api".into(), "read".into(), "write".into()],
            group: "full".into(),
        }
    }

    /// Sets the group name shown in `/user/active` (policies stay as they are).
    pub fn with_group(mut self, group: &str) -> Self {
        self.group = group.to_owned();
        self
    }

    /// Replaces the policies with a comma-separated list, e.g. `"api,read"`.
    pub fn with_policies(mut self, policies: &str) -> Self {
        self.policies = policies
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        self
    }

    pub(crate) fn has(&self, policy: &str) -> bool {
        self.policies.iter().any(|p| p == policy)
    }
}

/// Cost of commands, to make benchmarks meaningful.
///
/// - `per_write`: processing time of each write command (`add`, `set`, `remove`, ...), serialised
///   across **all** connections like one router CPU.
/// - `latency`: each reply batch is written `latency` after its command arrived, without blocking
///   the reading of later commands: a window-of-one client is latency-bound, a pipelining one
///   overlaps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CostModel {
    /// Serialised processing time per write command.
    pub per_write: Duration,
    /// Delay from a command's arrival to its reply.
    pub latency: Duration,
}

/// A parsed `major.minor.patch` version; missing parts are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub(crate) fn parse(text: &str) -> Self {
        let mut parts = text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(0));
        Version(
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        )
    }

    /// `!empty` exists from 7.18 (`docs/reference/routeros-api.md` §3).
    pub(crate) fn has_empty(self) -> bool {
        self >= Version(7, 18, 0)
    }

    /// The challenge login is used before 6.43 (§4).
    pub(crate) fn legacy_login(self) -> bool {
        self < Version(6, 43, 0)
    }

    /// The challenge answer (`=response=`) logs in before 6.45.1 ("removed insecure password
    /// storage"; see `cmd::login`).
    pub(crate) fn accepts_challenge_response(self) -> bool {
        self < Version(6, 45, 1)
    }

    /// v7 prints `23h59m55s`, v6 `23:59:55` (§7).
    pub(crate) fn v7_durations(self) -> bool {
        self >= Version(7, 0, 0)
    }

    /// ISO dates from 7.10 ([`DateStyle`]).
    pub(crate) fn date_style(self) -> DateStyle {
        if self >= Version(7, 10, 0) {
            DateStyle::Iso
        } else {
            DateStyle::Legacy
        }
    }

    /// `/log/print` takes `with-extra-info` from 7.19 (RouterOS command schemas, tikoci/restraml
    /// `/console/inspect` dumps), and log rows carry `extra-info` (a recorded 7.19+ row:
    /// `'extra-info': 'app=api duser=apiuser outcome=failure src=192.168.1.47'`).
    pub(crate) fn log_extra_info(self) -> bool {
        self >= Version(7, 19, 0)
    }

    /// Log rows carry `buffer` (`memory`) in the current manual; rows recorded from 2025
    /// routers (7.19/7.20 era) have no such property. The 7.21 boundary is **unverified**.
    pub(crate) fn log_buffer_field(self) -> bool {
        self >= Version(7, 21, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_codes_add_or_strip_known_numbers() {
        let n = TrapCodes::Numbered;
        assert_eq!(n.apply("no such item"), "no such item (4)");
        assert_eq!(n.apply("no such item (4)"), "no such item (4)");
        assert_eq!(
            n.apply("invalid user name or password (6)"),
            "invalid user name or password (6)"
        );
        assert_eq!(
            n.apply("not enough permissions (9)"),
            "not enough permissions (9)"
        );
        assert_eq!(
            n.apply("failure: already have such entry"),
            "failure: already have such entry"
        );
        let b = TrapCodes::Bare;
        assert_eq!(
            b.apply("invalid user name or password (6)"),
            "invalid user name or password"
        );
        assert_eq!(b.apply("no such item"), "no such item");
        assert_eq!(b.apply("odd ()"), "odd ()");
        assert_eq!(TrapCodes::Recorded.apply("no such item"), "no such item");
    }

    #[test]
    fn version_thresholds() {
        assert!(Version::parse("7.18").has_empty());
        assert!(Version::parse("7.20.1").has_empty());
        assert!(!Version::parse("7.16").has_empty());
        assert!(!Version::parse("7.17.2").has_empty());
        assert!(Version::parse("6.42.12").legacy_login());
        assert!(!Version::parse("6.43").legacy_login());
        assert!(!Version::parse("6.49.10").v7_durations());
        assert_eq!(Version::parse("7.9.2").date_style(), DateStyle::Legacy);
        assert_eq!(Version::parse("7.10").date_style(), DateStyle::Iso);
        assert!(!Version::parse("7.18.2").log_extra_info());
        assert!(Version::parse("6.45.0").accepts_challenge_response());
        assert!(!Version::parse("6.45.1").accepts_challenge_response());
        assert!(Version::parse("7.19").log_extra_info());
    }
}
