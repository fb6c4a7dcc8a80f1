//! Configuration from environment variables, read once at start.
//!
//! On RouterOS the only practical way to configure a container is `/container/envs`, so every
//! setting is an environment variable. Names follow the existing MikroTik bouncers
//! (`docs/reference/peers.md` §2), so users can migrate by swapping the image.
//!
//! Parsing is two steps, as in ripgrep's `LowArgs` → `HiArgs`: [`envy`] fills [`RawEnv`] with the
//! text of every known variable, then [`Config::from_raw`] checks each one and collects **every**
//! problem before failing, so a user fixes them all in one go. Secret values never appear in a
//! problem report.
//!
//! [`VARS`] is the one list of variables: `--help`, the docs test and the parser all use it.
//!
//! Files: [`vars`](self) (the table), `env.rs` (reading the environment into [`RawEnv`]),
//! `check.rs` (validation into [`Config`]), `pem.rs` (reading and parsing PEM).

mod check;
mod env;
mod pem;
#[cfg(test)]
mod tests;
mod vars;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crowdsec_lapi::ClientCert;
use rustls_pki_types::CertificateDer;
use secrecy::SecretString;

pub use check::{
    MAX_COMMENT_PREFIX, MAX_ECHO, MAX_HOST, MAX_LIST_NAME, MAX_URL, MAX_USER, parse_duration,
    split_list,
};
pub use env::RawEnv;
pub use pem::MAX_PEM_BYTES;
pub use vars::{VARS, Var, all_vars, help_text};

/// What is never banned, and how much is written (`docs/safety.md`).
#[derive(Debug, Clone)]
pub struct SafetySettings {
    /// Allowlist, protections, range limits.
    pub settings: crate::safety::Settings,
    /// `MAX_ENTRIES`.
    pub max_entries: crate::supervisor::MaxEntries,
    /// `IPV6_BAN_PREFIX`.
    pub ipv6_prefix: u8,
}

/// Guard's settings (`docs/guard.md`).
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// The detectors' settings; `None` when `GUARD_ENABLED=false`.
    pub settings: Option<crate::guard::Settings>,
    /// `CROWDSEC_MACHINE_ID` and `CROWDSEC_MACHINE_PASSWORD`: guard shares its bans with LAPI.
    pub machine: Option<(String, SecretString)>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// CrowdSec Local API.
    pub lapi: LapiSettings,
    /// The router.
    pub router: RouterSettings,
    /// Address lists and ownership.
    pub lists: ListSettings,
    /// Interval of the full reconciliation.
    pub reconciliation_interval: Duration,
    /// Safety rules, entry budget, IPv6 aggregation.
    pub safety: SafetySettings,
    /// Guard.
    pub guard: GuardConfig,
    /// Logging.
    pub log: LogSettings,
    /// Where `/metrics` and `/health` listen; `None` when disabled.
    pub metrics: Option<SocketAddr>,
}

/// LAPI settings.
#[derive(Debug, Clone)]
pub struct LapiSettings {
    /// Base URL.
    pub url: String,
    /// API key; `None` with mTLS.
    pub api_key: Option<SecretString>,
    /// Poll interval.
    pub update_frequency: Duration,
    /// Overall deadline of a delta poll.
    pub poll_timeout: Duration,
    /// Overall deadline of a `startup=true` snapshot.
    pub snapshot_timeout: Duration,
    /// Origins filter (empty = all).
    pub origins: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Decision types, lower-cased.
    pub decision_types: Vec<String>,
    /// Scenario include filter.
    pub scenarios_containing: Vec<String>,
    /// Scenario exclude filter.
    pub scenarios_not_containing: Vec<String>,
    /// Usage-metrics push interval; `None` disables.
    pub metrics_interval: Option<Duration>,
    /// Client certificate and key for mTLS, read and checked at start.
    pub client_cert: Option<ClientCert>,
    /// Extra CA certificates (empty when none is configured).
    pub ca: Vec<CertificateDer<'static>>,
    /// Skip certificate verification.
    pub insecure_skip_verify: bool,
}

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Host name or address.
    pub host: String,
    /// API port.
    pub port: u16,
    /// API user.
    pub user: String,
    /// API password.
    pub password: SecretString,
    /// api-ssl trust, when TLS is on.
    pub tls: Option<RouterTls>,
    /// Connect and login timeout.
    pub connect_timeout: Duration,
    /// Per-command timeout.
    pub command_timeout: Duration,
    /// Commands in flight at once.
    pub window: usize,
}

/// How the router's api-ssl certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterTls {
    /// SHA-256 of the certificate.
    Fingerprint([u8; 32]),
    /// CA certificates, read and checked at start.
    Ca(Vec<CertificateDer<'static>>),
}

/// Address lists and ownership.
#[derive(Debug, Clone)]
pub struct ListSettings {
    /// IPv4 list name, `None` when disabled.
    pub v4: Option<String>,
    /// IPv6 list name, `None` when disabled.
    pub v6: Option<String>,
    /// Comment prefix of owned entries.
    pub comment_prefix: String,
}

/// Log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
    /// JSON lines instead of text.
    pub json: bool,
}

/// One invalid variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The variable.
    pub var: &'static str,
    /// What is wrong, and the expected form. Never contains a secret value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.message)
    }
}

/// Every problem found in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The problems, in [`VARS`] order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem{}):",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        write!(f, "run `tikban --help` for every variable and its form")
    }
}

impl std::error::Error for ConfigError {}
