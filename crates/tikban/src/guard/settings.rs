//! Guard's settings: one type for the live path and for `tikban guard replay`.
//!
//! [`VARS`] names every setting once, as the environment variable the daemon will read
//! (`GUARD_LOGIN_CAPACITY`) and as the replay flag derived from it (`--login-capacity`), with its
//! default and help. [`Settings::set`] parses one value by either name, so the env reader and the
//! flag parser share the rules. The defaults and where they come from are in docs/guard.md
//! ("Defaults").

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::table::RING;

/// Most entries in [`Settings::allowlist`].
pub const MAX_ALLOWLIST: usize = 64;
/// Largest [`Settings::max_sources`].
pub const MAX_SOURCES: usize = 1_000_000;
/// Largest capacity of the login bucket (events are counted in 16 bits).
pub const MAX_CAPACITY: u32 = 10_000;
/// Largest capacity of a distinct-count bucket: its distinct values must all fit the ring.
pub const MAX_DISTINCT_CAPACITY: u32 = RING as u32 - 1;
/// Longest leak interval.
pub const MAX_LEAKSPEED: Duration = Duration::from_secs(24 * 3600);
/// Longest bucket window (capacity × leak interval): bucket offsets are 32-bit milliseconds.
pub const MAX_WINDOW: Duration = Duration::from_millis(i32::MAX as u64);
/// Longest ban (quiet) period.
pub const MAX_BAN: Duration = Duration::from_secs(365 * 24 * 3600);

/// One leaky bucket: it overflows when an event arrives while it holds `capacity` events; one
/// event leaks out every `leakspeed` (continuously: half an event after half the interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Off: the detector ignores every event.
    pub enabled: bool,
    /// Events the bucket holds without overflowing (CrowdSec `capacity`).
    pub capacity: u32,
    /// Time for one event to leak out (CrowdSec `leakspeed`).
    pub leakspeed: Duration,
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `192.0.2.0/24`, `2001:db8::/32`, or a bare address (/32 or /128). Host bits must be
    /// zero, as RouterOS requires in address lists.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.parse::<IpAddr>().ok()?, None),
        };
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        let cidr = Cidr { addr, prefix };
        (cidr.mask(addr) == bits(addr)).then_some(cidr)
    }

    /// True when `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.mask(ip) == bits(self.addr)
    }

    fn mask(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host = width - u32::from(self.prefix);
        if host >= 128 {
            0
        } else {
            bits(ip) >> host << host
        }
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Everything guard's detectors need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `tikban/routeros-login-bf`: failed logins and refused Winbox/Dude connections.
    pub login: Bucket,
    /// `tikban/routeros-user-enum`: distinct user names in failed logins.
    pub user_enum: Bucket,
    /// `tikban/routeros-portscan`: distinct destination ports in firewall log lines.
    pub portscan: Bucket,
    /// After a detection, the same source and scenario stay quiet this long.
    pub ban_duration: Duration,
    /// Most sources tracked at once.
    pub max_sources: usize,
    /// Sources that are never tracked nor detected.
    pub allowlist: Vec<Cidr>,
}

impl Default for Settings {
    /// The documented defaults (docs/guard.md, "Defaults").
    fn default() -> Self {
        Settings {
            login: Bucket {
                enabled: true,
                capacity: 5,
                leakspeed: Duration::from_secs(10),
            },
            user_enum: Bucket {
                enabled: true,
                capacity: 10,
                leakspeed: Duration::from_secs(60),
            },
            portscan: Bucket {
                enabled: false,
                capacity: 15,
                leakspeed: Duration::from_secs(5),
            },
            ban_duration: Duration::from_secs(4 * 3600),
            max_sources: 10_000,
            allowlist: Vec::new(),
        }
    }
}

/// What is wrong with a setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A name that is neither a `GUARD_*` variable nor its flag.
    #[error("unknown setting {0:?}")]
    Unknown(String),
    /// A value that does not parse or is out of range.
    #[error("{name}: {value:?} is not {expected}")]
    Invalid {
        /// The variable name.
        name: &'static str,
        /// The value given (settings hold no secrets).
        value: String,
        /// The accepted form.
        expected: &'static str,
    },
    /// A combination that cannot work.
    #[error("{0}")]
    Inconsistent(String),
}

/// One documented setting.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    /// The environment variable, `GUARD_LOGIN_CAPACITY`.
    pub name: &'static str,
    /// The default, as text.
    pub default: &'static str,
    /// The value's form.
    pub kind: &'static str,
    /// One-line description.
    pub help: &'static str,
}

impl Var {
    /// The replay flag: `GUARD_LOGIN_CAPACITY` → `--login-capacity`.
    pub fn flag(&self) -> String {
        let stem = self.name.strip_prefix("GUARD_").unwrap_or(self.name);
        format!("--{}", stem.to_ascii_lowercase().replace('_', "-"))
    }
}

const BOOL: &str = "true or false";
const COUNT: &str = "a whole number";
const DURATION: &str = "a duration such as 500ms, 10s, 1m30s or 4h";

/// Every guard setting, in help order. `GUARD_ENABLED` (whether the daemon runs guard at all)
/// belongs to the live path and is not here.
pub const VARS: &[Var] = &[
    Var {
        name: "GUARD_LOGIN_ENABLED",
        default: "true",
        kind: BOOL,
        help: "detect login brute force (failed logins and denied Winbox/Dude connections)",
    },
    Var {
        name: "GUARD_LOGIN_CAPACITY",
        default: "5",
        kind: COUNT,
        help: "failures a source may have in its bucket; one more is a detection",
    },
    Var {
        name: "GUARD_LOGIN_LEAKSPEED",
        default: "10s",
        kind: DURATION,
        help: "one failure leaks out of the bucket per this interval",
    },
    Var {
        name: "GUARD_USERENUM_ENABLED",
        default: "true",
        kind: BOOL,
        help: "detect user enumeration (many distinct user names from one source)",
    },
    Var {
        name: "GUARD_USERENUM_CAPACITY",
        default: "10",
        kind: "a whole number from 0 to 15",
        help: "distinct user names a source may have in its bucket",
    },
    Var {
        name: "GUARD_USERENUM_LEAKSPEED",
        default: "1m",
        kind: DURATION,
        help: "one user name leaks out of the bucket per this interval",
    },
    Var {
        name: "GUARD_PORTSCAN_ENABLED",
        default: "false",
        kind: BOOL,
        help: "detect port scans in firewall log lines (log=yes rules)",
    },
    Var {
        name: "GUARD_PORTSCAN_CAPACITY",
        default: "15",
        kind: "a whole number from 0 to 15",
        help: "distinct destination ports a source may have in its bucket",
    },
    Var {
        name: "GUARD_PORTSCAN_LEAKSPEED",
        default: "5s",
        kind: DURATION,
        help: "one port leaks out of the bucket per this interval",
    },
    Var {
        name: "GUARD_BAN_DURATION",
        default: "4h",
        kind: DURATION,
        help: "after a detection, no new one for the same source and scenario for this long",
    },
    Var {
        name: "GUARD_MAX_SOURCES",
        default: "10000",
        kind: "a whole number from 1 to 1000000",
        help: "sources tracked at once (about 100 bytes each, allocated at start)",
    },
    Var {
        name: "GUARD_ALLOWLIST",
        default: "",
        kind: "addresses or CIDR networks, separated by commas or spaces (at most 64)",
        help: "sources never tracked nor banned, e.g. your management network",
    },
];

impl Settings {
    /// Sets one value, by variable name (`GUARD_LOGIN_CAPACITY`) or flag (`--login-capacity`).
    /// Call [`Settings::check`] after the last one.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingsError> {
        let var = VARS
            .iter()
            .find(|v| v.name == name || v.flag() == name)
            .ok_or_else(|| SettingsError::Unknown(name.to_owned()))?;
        let invalid = || SettingsError::Invalid {
            name: var.name,
            value: value.to_owned(),
            expected: var.kind,
        };
        let value = value.trim();
        let boolean = || match value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" => Ok(false),
            _ => Err(invalid()),
        };
        let count = || value.parse::<u32>().map_err(|_| invalid());
        let duration = || parse_duration(value).ok_or_else(invalid);
        match var.name {
            "GUARD_LOGIN_ENABLED" => self.login.enabled = boolean()?,
            "GUARD_LOGIN_CAPACITY" => self.login.capacity = count()?,
            "GUARD_LOGIN_LEAKSPEED" => self.login.leakspeed = duration()?,
            "GUARD_USERENUM_ENABLED" => self.user_enum.enabled = boolean()?,
            "GUARD_USERENUM_CAPACITY" => self.user_enum.capacity = count()?,
            "GUARD_USERENUM_LEAKSPEED" => self.user_enum.leakspeed = duration()?,
            "GUARD_PORTSCAN_ENABLED" => self.portscan.enabled = boolean()?,
            "GUARD_PORTSCAN_CAPACITY" => self.portscan.capacity = count()?,
            "GUARD_PORTSCAN_LEAKSPEED" => self.portscan.leakspeed = duration()?,
            "GUARD_BAN_DURATION" => self.ban_duration = duration()?,
            "GUARD_MAX_SOURCES" => {
                self.max_sources = value.parse::<usize>().map_err(|_| invalid())?;
            }
            "GUARD_ALLOWLIST" => {
                let mut list = Vec::new();
                for item in value.split([',', ' ']).filter(|s| !s.is_empty()) {
                    if list.len() == MAX_ALLOWLIST {
                        return Err(invalid());
                    }
                    list.push(Cidr::parse(item).ok_or_else(invalid)?);
                }
                self.allowlist = list;
            }
            _ => return Err(SettingsError::Unknown(name.to_owned())),
        }
        Ok(())
    }

    /// Checks ranges and combinations; every problem, in [`VARS`] order.
    pub fn check(&self) -> Result<(), Vec<SettingsError>> {
        let mut problems = Vec::new();
        let buckets = [
            ("GUARD_LOGIN", &self.login, MAX_CAPACITY),
            ("GUARD_USERENUM", &self.user_enum, MAX_DISTINCT_CAPACITY),
            ("GUARD_PORTSCAN", &self.portscan, MAX_DISTINCT_CAPACITY),
        ];
        for (stem, b, max) in buckets {
            if b.capacity > max {
                problems.push(SettingsError::Inconsistent(format!(
                    "{stem}_CAPACITY: {} is above the most, {max}",
                    b.capacity
                )));
            }
            if b.leakspeed < Duration::from_millis(1) || b.leakspeed > MAX_LEAKSPEED {
                problems.push(SettingsError::Inconsistent(format!(
                    "{stem}_LEAKSPEED: {:?} is not between 1ms and 24h",
                    b.leakspeed
                )));
            } else if b.leakspeed * (b.capacity + 1) > MAX_WINDOW {
                problems.push(SettingsError::Inconsistent(format!(
                    "{stem}_CAPACITY × {stem}_LEAKSPEED: a window of {:?} is longer than the \
                     most, 24 days",
                    b.leakspeed * (b.capacity + 1)
                )));
            }
        }
        if self.ban_duration < Duration::from_secs(1) || self.ban_duration > MAX_BAN {
            problems.push(SettingsError::Inconsistent(format!(
                "GUARD_BAN_DURATION: {:?} is not between 1s and 365 days",
                self.ban_duration
            )));
        }
        if !(1..=MAX_SOURCES).contains(&self.max_sources) {
            problems.push(SettingsError::Inconsistent(format!(
                "GUARD_MAX_SOURCES: {} is not between 1 and {MAX_SOURCES}",
                self.max_sources
            )));
        }
        if self.allowlist.len() > MAX_ALLOWLIST {
            problems.push(SettingsError::Inconsistent(format!(
                "GUARD_ALLOWLIST: {} entries, at most {MAX_ALLOWLIST}",
                self.allowlist.len()
            )));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// True when `ip` is in the allowlist.
    pub fn allowed(&self, ip: IpAddr) -> bool {
        self.allowlist.iter().any(|c| c.contains(ip))
    }
}

/// `10s`, `1m30s`, `4h`, `500ms` (Go syntax, as every tikban duration); negative values refused.
fn parse_duration(text: &str) -> Option<Duration> {
    crowdsec_lapi::GoDuration::parse(text)
        .ok()
        .and_then(crowdsec_lapi::GoDuration::to_std)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let s = Settings::default();
        assert_eq!(s.check(), Ok(()));
        let mut from_vars = Settings {
            login: Bucket {
                enabled: false,
                capacity: 0,
                leakspeed: Duration::ZERO,
            },
            ..Settings::default()
        };
        for v in VARS {
            from_vars.set(v.name, v.default).unwrap();
        }
        assert_eq!(from_vars, s, "VARS defaults equal Settings::default()");
    }

    #[test]
    fn names_and_flags_set_the_same_field() {
        let mut s = Settings::default();
        s.set("GUARD_LOGIN_CAPACITY", "3").unwrap();
        assert_eq!(s.login.capacity, 3);
        s.set("--login-capacity", "7").unwrap();
        assert_eq!(s.login.capacity, 7);
        s.set("--userenum-leakspeed", "1m30s").unwrap();
        assert_eq!(s.user_enum.leakspeed, Duration::from_secs(90));
        s.set("--portscan-enabled", "yes").unwrap();
        assert!(s.portscan.enabled);
        s.set("--allowlist", "10.0.0.0/8, 2001:db8::/32 192.0.2.7")
            .unwrap();
        assert!(s.allowed("10.9.9.9".parse().unwrap()));
        assert!(s.allowed("192.0.2.7".parse().unwrap()));
        assert!(s.allowed("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!s.allowed("192.0.2.8".parse().unwrap()));
        assert!(s.allowed("2001:db8:ffff::1".parse().unwrap()));
        assert!(!s.allowed("2001:db9::1".parse().unwrap()));
        assert_eq!(VARS[1].flag(), "--login-capacity");
    }

    #[test]
    fn bad_values_name_the_variable_and_the_form() {
        let mut s = Settings::default();
        let e = s.set("GUARD_LOGIN_LEAKSPEED", "soon").unwrap_err();
        assert_eq!(
            e.to_string(),
            "GUARD_LOGIN_LEAKSPEED: \"soon\" is not a duration such as 500ms, 10s, 1m30s or 4h"
        );
        assert!(matches!(
            s.set("GUARD_NOPE", "1"),
            Err(SettingsError::Unknown(_))
        ));
        assert!(s.set("--allowlist", "10.0.0.1/8").is_err(), "host bits set");
        assert!(s.set("--allowlist", "10.0.0.0/33").is_err());
        assert!(s.set("--max-sources", "-1").is_err());
        let many = vec!["10.0.0.1"; 65].join(",");
        assert!(s.set("--allowlist", &many).is_err());
    }

    #[test]
    fn check_reports_every_problem() {
        let mut s = Settings::default();
        s.login.capacity = 30;
        s.login.leakspeed = Duration::from_secs(24 * 3600);
        s.user_enum.capacity = 16;
        s.portscan.leakspeed = Duration::from_nanos(999_999);
        s.max_sources = 0;
        let problems = s.check().unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].to_string().contains("window"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1]
                .to_string()
                .starts_with("GUARD_USERENUM_CAPACITY")
        );
        assert!(
            problems[2]
                .to_string()
                .starts_with("GUARD_PORTSCAN_LEAKSPEED")
        );
        assert!(problems[3].to_string().starts_with("GUARD_MAX_SOURCES"));
    }
}
