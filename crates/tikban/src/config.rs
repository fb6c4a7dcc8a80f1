//! Configuration from environment variables, read once at start.
//!
//! On RouterOS the only practical way to configure a container is `/container/envs`, so every
//! setting is an environment variable. Names follow the existing MikroTik bouncers
//! (`peers.md` §2), so users can migrate by swapping the image.
//!
//! Parsing is two steps, as in ripgrep's `LowArgs` → `HiArgs`: [`envy`] fills [`RawEnv`] with the
//! text of every known variable, then [`Config::from_raw`] checks each one and collects **every**
//! problem before failing, so a user fixes them all in one go. Secret values never appear in a
//! problem report.
//!
//! [`VARS`] is the one list of variables: `--help`, the docs test and the parser all use it.

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crowdsec_lapi::ClientCert;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::SecretString;
use serde::Deserialize;

/// One documented environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Var {
    /// The name, e.g. `CROWDSEC_URL`.
    pub name: &'static str,
    /// The default, as text; `None` when the variable is required or has no default.
    pub default: Option<&'static str>,
    /// The value's type or form, for `--help` and error messages.
    pub kind: &'static str,
    /// One-line description.
    pub help: &'static str,
    /// True for secrets: values are never echoed.
    pub secret: bool,
}

const fn var(
    name: &'static str,
    default: Option<&'static str>,
    kind: &'static str,
    help: &'static str,
) -> Var {
    Var {
        name,
        default,
        kind,
        help,
        secret: false,
    }
}

const fn secret(name: &'static str, kind: &'static str, help: &'static str) -> Var {
    Var {
        name,
        default: None,
        kind,
        help,
        secret: true,
    }
}

/// Form of duration values, in messages.
const DURATION: &str = "duration such as 10s, 1m30s, 1h or 1.5h";
const BOOL: &str = "true or false";
const LIST: &str = "list separated by commas or spaces";

/// Every variable tikban reads, in `--help` order.
pub const VARS: &[Var] = &[
    // LAPI
    var(
        "CROWDSEC_URL",
        None,
        "http:// or https:// URL",
        "CrowdSec Local API base URL (required)",
    ),
    secret(
        "CROWDSEC_BOUNCER_API_KEY",
        "text",
        "bouncer API key from `cscli bouncers add` (required unless a client certificate is set)",
    ),
    var(
        "CROWDSEC_UPDATE_FREQUENCY",
        Some("10s"),
        DURATION,
        "how often to poll the decision stream",
    ),
    var(
        "CROWDSEC_ORIGINS",
        None,
        LIST,
        "only decisions from these origins (e.g. crowdsec cscli CAPI lists); empty = all",
    ),
    var(
        "CROWDSEC_SCOPES",
        Some("ip,range"),
        LIST,
        "decision scopes to request",
    ),
    var(
        "CROWDSEC_DECISIONS_TYPES",
        Some("ban"),
        LIST,
        "decision types to enforce (compared case-insensitively)",
    ),
    var(
        "CROWDSEC_SCENARIOS_CONTAINING",
        None,
        LIST,
        "only decisions whose scenario contains one of these words",
    ),
    var(
        "CROWDSEC_SCENARIOS_NOT_CONTAINING",
        None,
        LIST,
        "skip decisions whose scenario contains one of these words",
    ),
    var(
        "CROWDSEC_LAPI_METRICS_INTERVAL",
        Some("30m"),
        "duration of at least 15m, or 0 to disable",
        "how often to push usage metrics to LAPI",
    ),
    // LAPI TLS
    var(
        "CROWDSEC_CERT_PATH",
        None,
        "file path",
        "client certificate (PEM) for mTLS; with it no API key is sent",
    ),
    var(
        "CROWDSEC_KEY_PATH",
        None,
        "file path",
        "client private key (PEM) for mTLS",
    ),
    var(
        "CROWDSEC_CA_CERT_PATH",
        None,
        "file path",
        "extra CA certificate (PEM) to trust for the LAPI, added to the web PKI roots",
    ),
    var(
        "CROWDSEC_CERT_PEM",
        None,
        "inline PEM",
        "client certificate as PEM text, instead of CROWDSEC_CERT_PATH",
    ),
    secret(
        "CROWDSEC_KEY_PEM",
        "inline PEM",
        "client private key as PEM text, instead of CROWDSEC_KEY_PATH",
    ),
    var(
        "CROWDSEC_CA_CERT_PEM",
        None,
        "inline PEM",
        "CA certificate as PEM text, instead of CROWDSEC_CA_CERT_PATH",
    ),
    var(
        "CROWDSEC_INSECURE_SKIP_VERIFY",
        Some("false"),
        BOOL,
        "do not verify the LAPI certificate (logs a warning; prefer a CA)",
    ),
    // Router
    var(
        "MIKROTIK_HOST",
        Some("172.17.0.1"),
        "host or host:port (IPv6 as [addr]:port)",
        "RouterOS API address; the port defaults to 8728, or 8729 with MIKROTIK_TLS",
    ),
    var(
        "MIKROTIK_USER",
        Some("tikban"),
        "text",
        "RouterOS API user (policy api,read,write)",
    ),
    secret("MIKROTIK_PASS", "text", "RouterOS API password (required)"),
    var(
        "MIKROTIK_TLS",
        Some("false"),
        BOOL,
        "use api-ssl; needs MIKROTIK_TLS_FINGERPRINT or MIKROTIK_TLS_CA",
    ),
    var(
        "MIKROTIK_TLS_FINGERPRINT",
        None,
        "64 hex digits, ':' separators allowed",
        "SHA-256 pin of the router's api-ssl certificate",
    ),
    var(
        "MIKROTIK_TLS_CA",
        None,
        "file path or inline PEM",
        "CA certificate that signed the router's api-ssl certificate",
    ),
    var(
        "MIKROTIK_CONN_TIMEOUT",
        Some("10s"),
        DURATION,
        "connect and login timeout",
    ),
    var(
        "MIKROTIK_CMD_TIMEOUT",
        Some("30s"),
        DURATION,
        "timeout of one router command",
    ),
    var(
        "MIKROTIK_PIPELINE_WINDOW",
        Some("64"),
        "integer 1..=1024",
        "router commands in flight at once on the connection",
    ),
    // Lists
    var(
        "FIREWALL_IPV4_ENABLED",
        Some("true"),
        BOOL,
        "manage the IPv4 address list",
    ),
    var(
        "FIREWALL_IPV4_ADDRESS_LIST",
        Some("crowdsec-banned"),
        "address-list name",
        "IPv4 address list (/ip/firewall/address-list)",
    ),
    var(
        "FIREWALL_IPV6_ENABLED",
        Some("true"),
        BOOL,
        "manage the IPv6 address list",
    ),
    var(
        "FIREWALL_IPV6_ADDRESS_LIST",
        Some("crowdsec6-banned"),
        "address-list name",
        "IPv6 address list (/ipv6/firewall/address-list)",
    ),
    var(
        "FIREWALL_COMMENT_PREFIX",
        Some("tikban"),
        "text without spaces",
        "comment prefix marking the entries tikban owns; others are never touched",
    ),
    var(
        "RECONCILIATION_INTERVAL",
        Some("1h"),
        DURATION,
        "full comparison of router and cache, repairing drift",
    ),
    // Logs and metrics
    var(
        "LOG_LEVEL",
        Some("info"),
        "error, warn, info, debug or trace",
        "log verbosity",
    ),
    var(
        "LOG_FORMAT",
        Some("text"),
        "text or json",
        "log line format",
    ),
    var(
        "METRICS_ENABLED",
        Some("true"),
        BOOL,
        "serve /metrics and /health",
    ),
    var(
        "METRICS_ADDR",
        Some("0.0.0.0"),
        "IP address",
        "address the metrics server binds",
    ),
    var(
        "METRICS_PORT",
        Some("2112"),
        "port",
        "port of the metrics server",
    ),
];

/// The text of every known variable, as [`envy`] finds it. Empty values count as unset: RouterOS
/// `/container/envs` entries are easy to leave empty.
#[derive(Debug, Default, Deserialize)]
#[allow(missing_docs)]
pub struct RawEnv {
    pub crowdsec_url: Option<String>,
    pub crowdsec_bouncer_api_key: Option<String>,
    pub crowdsec_update_frequency: Option<String>,
    pub crowdsec_origins: Option<String>,
    pub crowdsec_scopes: Option<String>,
    pub crowdsec_decisions_types: Option<String>,
    pub crowdsec_scenarios_containing: Option<String>,
    pub crowdsec_scenarios_not_containing: Option<String>,
    pub crowdsec_lapi_metrics_interval: Option<String>,
    pub crowdsec_cert_path: Option<String>,
    pub crowdsec_key_path: Option<String>,
    pub crowdsec_ca_cert_path: Option<String>,
    pub crowdsec_cert_pem: Option<String>,
    pub crowdsec_key_pem: Option<String>,
    pub crowdsec_ca_cert_pem: Option<String>,
    pub crowdsec_insecure_skip_verify: Option<String>,
    pub mikrotik_host: Option<String>,
    pub mikrotik_user: Option<String>,
    pub mikrotik_pass: Option<String>,
    pub mikrotik_tls: Option<String>,
    pub mikrotik_tls_fingerprint: Option<String>,
    pub mikrotik_tls_ca: Option<String>,
    pub mikrotik_conn_timeout: Option<String>,
    pub mikrotik_cmd_timeout: Option<String>,
    pub mikrotik_pipeline_window: Option<String>,
    pub firewall_ipv4_enabled: Option<String>,
    pub firewall_ipv4_address_list: Option<String>,
    pub firewall_ipv6_enabled: Option<String>,
    pub firewall_ipv6_address_list: Option<String>,
    pub firewall_comment_prefix: Option<String>,
    pub reconciliation_interval: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub metrics_enabled: Option<String>,
    pub metrics_addr: Option<String>,
    pub metrics_port: Option<String>,
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

/// Collects problems while parsing.
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, var: &'static str, message: impl Into<String>) {
        self.problems.push(Problem {
            var,
            message: message.into(),
        });
    }

    /// Quotes a value for an error message, unless the variable is secret.
    fn shown(var: &str, value: &str) -> String {
        let secret = VARS.iter().any(|v| v.name == var && v.secret);
        if secret {
            "the given value".to_owned()
        } else {
            format!("{value:?}")
        }
    }

    fn value(raw: &Option<String>) -> Option<&str> {
        raw.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }

    fn or_default<'a>(raw: &'a Option<String>, var: &'static str) -> &'a str {
        Self::value(raw).unwrap_or_else(|| default_of(var))
    }

    fn duration(&mut self, raw: &Option<String>, var: &'static str) -> Duration {
        let text = Self::or_default(raw, var);
        match parse_duration(text) {
            Some(d) => d,
            None => {
                self.problem(
                    var,
                    format!(
                        "{} is not a duration; expected a {DURATION}",
                        Self::shown(var, text)
                    ),
                );
                Duration::ZERO
            }
        }
    }

    fn positive_duration(&mut self, raw: &Option<String>, var: &'static str) -> Duration {
        let d = self.duration(raw, var);
        if d.is_zero() && parse_duration(Self::or_default(raw, var)).is_some() {
            self.problem(var, "must be greater than zero");
        }
        d
    }

    fn boolean(&mut self, raw: &Option<String>, var: &'static str) -> bool {
        let text = Self::or_default(raw, var);
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => true,
            "false" | "no" | "0" | "off" => false,
            _ => {
                self.problem(
                    var,
                    format!(
                        "{} is not a boolean; expected {BOOL}",
                        Self::shown(var, text)
                    ),
                );
                false
            }
        }
    }

    fn list(raw: &Option<String>, var: &'static str) -> Vec<String> {
        split_list(Self::or_default(raw, var))
    }

    /// Where one PEM input comes from: its path variable or its inline variable (not both).
    fn pem_source<'a>(
        &mut self,
        path_var: &'static str,
        path: &'a Option<String>,
        pem_var: &'static str,
        inline: &'a Option<String>,
    ) -> Option<PemSource<'a>> {
        let secret = VARS.iter().any(|v| v.name == pem_var && v.secret);
        match (Self::value(path), Self::value(inline)) {
            (Some(_), Some(_)) => {
                self.problem(
                    pem_var,
                    format!("set either {path_var} or {pem_var}, not both"),
                );
                None
            }
            (Some(p), None) => Some(PemSource {
                var: path_var,
                input: PemInput::Path(p),
                secret: false,
            }),
            (None, Some(text)) if !text.contains("-----BEGIN ") => {
                self.problem(
                    pem_var,
                    "is not PEM text; expected a block starting with -----BEGIN",
                );
                None
            }
            (None, Some(text)) => Some(PemSource {
                var: pem_var,
                input: PemInput::Inline(text),
                secret,
            }),
            (None, None) => None,
        }
    }

    /// Reads and parses certificates: at least one `CERTIFICATE` block.
    fn certificates(&mut self, src: PemSource<'_>) -> Option<Vec<CertificateDer<'static>>> {
        let bytes = self.pem_bytes(src)?;
        let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
        match parsed {
            Ok(certs) if certs.is_empty() => {
                self.problem(
                    src.var,
                    format!("{} holds no CERTIFICATE block", src.describe()),
                );
                None
            }
            Ok(certs) => Some(certs),
            Err(e) => {
                self.problem(src.var, format!("{} {}", src.describe(), pem_error(&e)));
                None
            }
        }
    }

    /// Reads and parses a private key: exactly one `PRIVATE KEY` block (PKCS#8, PKCS#1 or SEC1).
    fn private_key(&mut self, src: PemSource<'_>) -> Option<PrivateKeyDer<'static>> {
        let bytes = self.pem_bytes(src)?;
        let parsed: Result<Vec<_>, _> = PrivateKeyDer::pem_slice_iter(&bytes).collect();
        match parsed {
            Ok(mut keys) if keys.len() == 1 => keys.pop(),
            Ok(keys) if keys.is_empty() => {
                self.problem(
                    src.var,
                    format!(
                        "{} holds no PRIVATE KEY block (PKCS#8, RSA or EC)",
                        src.describe()
                    ),
                );
                None
            }
            Ok(keys) => {
                self.problem(
                    src.var,
                    format!(
                        "{} holds {} private keys; expected exactly one",
                        src.describe(),
                        keys.len()
                    ),
                );
                None
            }
            Err(e) => {
                self.problem(src.var, format!("{} {}", src.describe(), pem_error(&e)));
                None
            }
        }
    }

    /// The bytes of a PEM input, within [`MAX_PEM_BYTES`].
    fn pem_bytes<'a>(&mut self, src: PemSource<'a>) -> Option<std::borrow::Cow<'a, [u8]>> {
        let result = match src.input {
            PemInput::Inline(text) if text.len() as u64 > MAX_PEM_BYTES => Err(format!(
                "is {} bytes; PEM text is limited to {MAX_PEM_BYTES} bytes (1 MiB)",
                text.len()
            )),
            PemInput::Inline(text) => Ok(std::borrow::Cow::Borrowed(text.as_bytes())),
            PemInput::Path(path) => read_pem_file(Path::new(path))
                .map(std::borrow::Cow::Owned)
                .map_err(|e| format!("{} {e}", src.describe())),
        };
        result.map_err(|m| self.problem(src.var, m)).ok()
    }
}

/// Largest PEM file or inline PEM value accepted. A CA bundle is tens of KiB (Mozilla's whole
/// root store is about 200 KiB), so 1 MiB is generous while a mistaken path such as `/dev/zero`
/// or a log file cannot make tikban read without end.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// One PEM input and the variable it came from.
#[derive(Debug, Clone, Copy)]
struct PemSource<'a> {
    var: &'static str,
    input: PemInput<'a>,
    /// The inline text is a secret (a private key): never quoted.
    secret: bool,
}

#[derive(Debug, Clone, Copy)]
enum PemInput<'a> {
    Path(&'a str),
    Inline(&'a str),
}

impl PemSource<'_> {
    /// How messages name the input: the quoted path, or "the PEM text". Never the text itself.
    fn describe(&self) -> String {
        match self.input {
            PemInput::Path(p) => format!("file {p:?}"),
            PemInput::Inline(_) if self.secret => "the given PEM text".to_owned(),
            PemInput::Inline(_) => "the PEM text".to_owned(),
        }
    }
}

/// What is wrong with PEM text, without quoting any of it (it may be a private key).
fn pem_error(e: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "is not valid PEM: a block has no -----END line",
        E::IllegalSectionStart { .. } => "is not valid PEM: a -----BEGIN line is malformed",
        E::Base64Decode(_) => "is not valid PEM: a block is not valid base64",
        E::SectionTooLarge => "is not valid PEM: a block is too large",
        _ => "is not valid PEM",
    }
}

/// Reads a PEM file: a regular file of at most [`MAX_PEM_BYTES`], checked with its metadata
/// **before** reading (so `/dev/zero`, a FIFO or a directory is refused without blocking or
/// reading), then read with a bounded read in case it grows meanwhile.
fn read_pem_file(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err(format!("is not a regular file ({})", file_kind(&meta)));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "is {} bytes; PEM files are limited to {MAX_PEM_BYTES} bytes (1 MiB)",
            meta.len()
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    // The path may name another file by now: check what was opened, too.
    let opened = file
        .metadata()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if !opened.is_file() {
        return Err(format!("is not a regular file ({})", file_kind(&opened)));
    }
    let mut bytes = Vec::with_capacity(opened.len().min(MAX_PEM_BYTES) as usize);
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "grew past {MAX_PEM_BYTES} bytes (1 MiB) while it was read"
        ));
    }
    Ok(bytes)
}

/// "a directory", "a FIFO", … for a path that is not a regular file.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// The documented default of `var`, or `""` when it has none.
fn default_of(var: &str) -> &'static str {
    VARS.iter()
        .find(|v| v.name == var)
        .and_then(|v| v.default)
        .unwrap_or("")
}

/// Splits a list on commas and whitespace (`peers.md` §2: peers use spaces, go-cs-bouncer commas).
pub fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses a duration in humantime form (`10s`, `1h 30m`, `2days`) or Go form (`1h30m`, `1.5h`,
/// `500ms`). A bare `0` is zero.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    // The Go form is the one LAPI itself prints; negative durations are refused.
    humantime::parse_duration(text).ok().or_else(|| {
        crowdsec_lapi::GoDuration::parse(text)
            .ok()
            .and_then(crowdsec_lapi::GoDuration::to_std)
    })
}

/// Splits `host[:port]`; IPv6 must be bracketed when a port is given (`[fd00::1]:8728`).
fn parse_host(text: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host.to_owned(), None)),
            p => Some((host.to_owned(), Some(p.strip_prefix(':')?.parse().ok()?))),
        };
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return Some((text.to_owned(), None));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
        None => (text, None),
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    valid.then(|| (host.to_owned(), port))
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads variables from `vars` (tests pass a list instead of the process environment).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        // Only known names reach envy, so unknown variables cannot fail deserialisation, and
        // every field is a string, so envy itself cannot fail on a value.
        let known = vars
            .into_iter()
            .filter(|(k, _)| VARS.iter().any(|v| v.name == k));
        let raw: RawEnv = envy::from_iter(known).unwrap_or_default();
        Self::from_raw(&raw)
    }

    /// Validates raw values, reporting every problem at once.
    pub fn from_raw(raw: &RawEnv) -> Result<Self, ConfigError> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        type C = Checker;

        // --- LAPI
        let url = match C::value(&raw.crowdsec_url) {
            None => {
                c.problem(
                    "CROWDSEC_URL",
                    "is required; expected e.g. http://172.17.0.1:8080",
                );
                String::new()
            }
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => u.to_owned(),
            Some(u) => {
                c.problem(
                    "CROWDSEC_URL",
                    format!("{u:?} must start with http:// or https://"),
                );
                String::new()
            }
        };
        let api_key = C::value(&raw.crowdsec_bouncer_api_key).map(SecretString::from);
        let update_frequency =
            c.positive_duration(&raw.crowdsec_update_frequency, "CROWDSEC_UPDATE_FREQUENCY");
        let metrics_interval = {
            let d = c.duration(
                &raw.crowdsec_lapi_metrics_interval,
                "CROWDSEC_LAPI_METRICS_INTERVAL",
            );
            if d.is_zero() {
                None
            } else {
                // crowdsec-lapi.md §7: the spec's minimum interval is 15 minutes.
                if d < Duration::from_secs(15 * 60) {
                    c.problem(
                        "CROWDSEC_LAPI_METRICS_INTERVAL",
                        "must be at least 15m (the usage-metrics minimum), or 0 to disable",
                    );
                }
                Some(d)
            }
        };
        let cert_src = c.pem_source(
            "CROWDSEC_CERT_PATH",
            &raw.crowdsec_cert_path,
            "CROWDSEC_CERT_PEM",
            &raw.crowdsec_cert_pem,
        );
        let key_src = c.pem_source(
            "CROWDSEC_KEY_PATH",
            &raw.crowdsec_key_path,
            "CROWDSEC_KEY_PEM",
            &raw.crowdsec_key_pem,
        );
        let ca_src = c.pem_source(
            "CROWDSEC_CA_CERT_PATH",
            &raw.crowdsec_ca_cert_path,
            "CROWDSEC_CA_CERT_PEM",
            &raw.crowdsec_ca_cert_pem,
        );
        let chain = cert_src.and_then(|s| c.certificates(s));
        let key = key_src.and_then(|s| c.private_key(s));
        let cert_set = C::value(&raw.crowdsec_cert_path).is_some()
            || C::value(&raw.crowdsec_cert_pem).is_some();
        let key_set =
            C::value(&raw.crowdsec_key_path).is_some() || C::value(&raw.crowdsec_key_pem).is_some();
        let mtls_intended = cert_set || key_set;
        let client_cert = match (cert_set, key_src) {
            (true, Some(key_src)) => match (chain, key) {
                (Some(chain), Some(key)) => match ClientCert::new(chain, key) {
                    Ok(cc) => Some(cc),
                    Err(e) => {
                        c.problem(
                            key_src.var,
                            format!(
                                "the client key is unusable or does not match the client \
                                 certificate: {e}"
                            ),
                        );
                        None
                    }
                },
                // Each unreadable part was reported already.
                _ => None,
            },
            (false, None) if !key_set => None,
            (true, None) if key_set => None, // the key's problem was reported
            (true, None) => {
                c.problem(
                    "CROWDSEC_KEY_PATH",
                    "a client certificate is set but no key (CROWDSEC_KEY_PATH or CROWDSEC_KEY_PEM)",
                );
                None
            }
            (false, _) => {
                c.problem(
                    "CROWDSEC_CERT_PATH",
                    "a client key is set but no certificate (CROWDSEC_CERT_PATH or CROWDSEC_CERT_PEM)",
                );
                None
            }
        };
        if api_key.is_none() && !mtls_intended {
            c.problem(
                "CROWDSEC_BOUNCER_API_KEY",
                "is required unless a client certificate is set (CROWDSEC_CERT_PATH and CROWDSEC_KEY_PATH)",
            );
        }
        // With a client certificate no API key is sent (crowdsec-lapi.md §2: go-cs-bouncer refuses
        // both), so a key next to a certificate is ignored rather than an error.
        let api_key = if client_cert.is_some() { None } else { api_key };
        let ca = ca_src.and_then(|s| c.certificates(s)).unwrap_or_default();
        let insecure_skip_verify = c.boolean(
            &raw.crowdsec_insecure_skip_verify,
            "CROWDSEC_INSECURE_SKIP_VERIFY",
        );
        let scopes = C::list(&raw.crowdsec_scopes, "CROWDSEC_SCOPES");
        if scopes.is_empty() {
            c.problem(
                "CROWDSEC_SCOPES",
                "must name at least one scope, e.g. ip,range",
            );
        }
        let decision_types: Vec<String> =
            C::list(&raw.crowdsec_decisions_types, "CROWDSEC_DECISIONS_TYPES")
                .into_iter()
                .map(|t| t.to_ascii_lowercase())
                .collect();
        if decision_types.is_empty() {
            c.problem(
                "CROWDSEC_DECISIONS_TYPES",
                "must name at least one type, e.g. ban",
            );
        }
        let lapi = LapiSettings {
            url,
            api_key,
            update_frequency,
            origins: C::list(&raw.crowdsec_origins, "CROWDSEC_ORIGINS"),
            scopes,
            decision_types,
            scenarios_containing: C::list(
                &raw.crowdsec_scenarios_containing,
                "CROWDSEC_SCENARIOS_CONTAINING",
            ),
            scenarios_not_containing: C::list(
                &raw.crowdsec_scenarios_not_containing,
                "CROWDSEC_SCENARIOS_NOT_CONTAINING",
            ),
            metrics_interval,
            client_cert,
            ca,
            insecure_skip_verify,
        };

        // --- Router
        let tls_on = c.boolean(&raw.mikrotik_tls, "MIKROTIK_TLS");
        let host_text = C::or_default(&raw.mikrotik_host, "MIKROTIK_HOST");
        let (host, port) = match parse_host(host_text) {
            Some((h, p)) => (h, p.unwrap_or(if tls_on { 8729 } else { 8728 })),
            None => {
                c.problem(
                    "MIKROTIK_HOST",
                    format!(
                        "{host_text:?} is not host or host:port (IPv6 with a port as [addr]:port)"
                    ),
                );
                (String::new(), 0)
            }
        };
        let user = C::or_default(&raw.mikrotik_user, "MIKROTIK_USER").to_owned();
        let password = match C::value(&raw.mikrotik_pass) {
            Some(p) => SecretString::from(p),
            None => {
                c.problem("MIKROTIK_PASS", "is required");
                SecretString::default()
            }
        };
        let fingerprint = C::value(&raw.mikrotik_tls_fingerprint).and_then(|f| {
            let parsed = routeros_client::parse_fingerprint(f).ok();
            if parsed.is_none() {
                c.problem(
                    "MIKROTIK_TLS_FINGERPRINT",
                    format!("{f:?} is not a SHA-256 fingerprint; expected 64 hex digits"),
                );
            }
            parsed
        });
        let router_ca_set = C::value(&raw.mikrotik_tls_ca).is_some();
        let router_ca = C::value(&raw.mikrotik_tls_ca).and_then(|t| {
            let input = if t.contains("-----BEGIN ") {
                PemInput::Inline(t)
            } else {
                PemInput::Path(t)
            };
            c.certificates(PemSource {
                var: "MIKROTIK_TLS_CA",
                input,
                secret: false,
            })
        });
        let tls = match (tls_on, fingerprint, router_ca) {
            (false, _, _)
                if C::value(&raw.mikrotik_tls_fingerprint).is_none() && !router_ca_set =>
            {
                None
            }
            (false, _, _) => {
                c.problem(
                    "MIKROTIK_TLS",
                    "is false, but MIKROTIK_TLS_FINGERPRINT or MIKROTIK_TLS_CA is set; set MIKROTIK_TLS=true",
                );
                None
            }
            (true, Some(fp), None) => Some(RouterTls::Fingerprint(fp)),
            (true, None, Some(ca)) => Some(RouterTls::Ca(ca)),
            (true, Some(_), Some(_)) => {
                c.problem(
                    "MIKROTIK_TLS_FINGERPRINT",
                    "set either MIKROTIK_TLS_FINGERPRINT or MIKROTIK_TLS_CA, not both",
                );
                None
            }
            (true, None, None) => {
                // A silent "insecure" mode is exactly what the pin exists to avoid.
                // An invalid fingerprint or CA was reported above already.
                if C::value(&raw.mikrotik_tls_fingerprint).is_none() && !router_ca_set {
                    c.problem(
                        "MIKROTIK_TLS",
                        "is true but neither MIKROTIK_TLS_FINGERPRINT nor MIKROTIK_TLS_CA is set; \
                         pin the router certificate's SHA-256",
                    );
                }
                None
            }
        };
        let connect_timeout =
            c.positive_duration(&raw.mikrotik_conn_timeout, "MIKROTIK_CONN_TIMEOUT");
        let command_timeout =
            c.positive_duration(&raw.mikrotik_cmd_timeout, "MIKROTIK_CMD_TIMEOUT");
        let window_text = C::or_default(&raw.mikrotik_pipeline_window, "MIKROTIK_PIPELINE_WINDOW");
        let window = match window_text.parse::<usize>() {
            Ok(w @ 1..=1024) => w,
            _ => {
                c.problem(
                    "MIKROTIK_PIPELINE_WINDOW",
                    format!("{window_text:?} is not an integer between 1 and 1024"),
                );
                1
            }
        };
        let router = RouterSettings {
            host,
            port,
            user,
            password,
            tls,
            connect_timeout,
            command_timeout,
            window,
        };

        // --- Lists
        let mut list = |enabled: &Option<String>,
                        name: &Option<String>,
                        enabled_var: &'static str,
                        name_var: &'static str|
         -> Option<String> {
            let on = c.boolean(enabled, enabled_var);
            let name = C::or_default(name, name_var);
            if name.bytes().any(|b| b.is_ascii_control()) {
                c.problem(name_var, "must not contain control characters");
            }
            on.then(|| name.to_owned())
        };
        let v4 = list(
            &raw.firewall_ipv4_enabled,
            &raw.firewall_ipv4_address_list,
            "FIREWALL_IPV4_ENABLED",
            "FIREWALL_IPV4_ADDRESS_LIST",
        );
        let v6 = list(
            &raw.firewall_ipv6_enabled,
            &raw.firewall_ipv6_address_list,
            "FIREWALL_IPV6_ENABLED",
            "FIREWALL_IPV6_ADDRESS_LIST",
        );
        if v4.is_none() && v6.is_none() {
            c.problem(
                "FIREWALL_IPV4_ENABLED",
                "IPv4 and IPv6 are both disabled; enable at least one",
            );
        }
        let comment_prefix =
            C::or_default(&raw.firewall_comment_prefix, "FIREWALL_COMMENT_PREFIX").to_owned();
        if comment_prefix
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            c.problem(
                "FIREWALL_COMMENT_PREFIX",
                format!("{comment_prefix:?} must not contain spaces or control characters"),
            );
        }
        let lists = ListSettings {
            v4,
            v6,
            comment_prefix,
        };
        let reconciliation_interval =
            c.positive_duration(&raw.reconciliation_interval, "RECONCILIATION_INTERVAL");

        // --- Logs and metrics
        let level = C::or_default(&raw.log_level, "LOG_LEVEL").to_ascii_lowercase();
        let level = match level.as_str() {
            "error" | "warn" | "info" | "debug" | "trace" => level,
            "warning" => "warn".to_owned(),
            _ => {
                c.problem(
                    "LOG_LEVEL",
                    format!("{level:?} is not one of error, warn, info, debug, trace"),
                );
                "info".to_owned()
            }
        };
        let format = C::or_default(&raw.log_format, "LOG_FORMAT").to_ascii_lowercase();
        let json = match format.as_str() {
            "text" => false,
            "json" => true,
            _ => {
                c.problem("LOG_FORMAT", format!("{format:?} is not text or json"));
                false
            }
        };
        let metrics_on = c.boolean(&raw.metrics_enabled, "METRICS_ENABLED");
        let addr_text = C::or_default(&raw.metrics_addr, "METRICS_ADDR");
        let addr = addr_text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| {
                c.problem(
                    "METRICS_ADDR",
                    format!("{addr_text:?} is not an IP address, e.g. 0.0.0.0 or ::"),
                )
            })
            .ok();
        let port_text = C::or_default(&raw.metrics_port, "METRICS_PORT");
        let metrics_port = port_text
            .parse::<u16>()
            .map_err(|_| {
                c.problem(
                    "METRICS_PORT",
                    format!("{port_text:?} is not a port number (0-65535)"),
                )
            })
            .ok();
        let metrics = match (metrics_on, addr, metrics_port) {
            (true, Some(a), Some(p)) => Some(SocketAddr::new(a, p)),
            _ => None,
        };

        if c.problems.is_empty() {
            Ok(Config {
                lapi,
                router,
                lists,
                reconciliation_interval,
                log: LogSettings { level, json },
                metrics,
            })
        } else {
            let order = |p: &Problem| VARS.iter().position(|v| v.name == p.var);
            c.problems.sort_by_key(order);
            Err(ConfigError {
                problems: c.problems,
            })
        }
    }
}

/// The `--help` text: usage, then every variable with its form and default.
pub fn help_text() -> String {
    let mut out = format!(
        "tikban {} — CrowdSec bouncer for MikroTik RouterOS address lists\n\n\
         Usage: tikban [--help | --version]\n\n\
         Configuration comes only from environment variables:\n",
        env!("CARGO_PKG_VERSION")
    );
    for v in VARS {
        out.push_str(&format!(
            "\n  {}\n      {}\n      form: {}",
            v.name, v.help, v.kind
        ));
        if let Some(d) = v.default {
            out.push_str(&format!("; default: {d}"));
        }
        if v.secret {
            out.push_str("; secret, never logged");
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    const MINIMAL: &[(&str, &str)] = &[
        ("CROWDSEC_URL", "http://127.0.0.1:8080"),
        ("CROWDSEC_BOUNCER_API_KEY", "k3y-s3cr3t"),
        ("MIKROTIK_PASS", "p4ss-s3cr3t"),
    ];

    #[test]
    fn minimal_environment_gets_documented_defaults() {
        let c = env(MINIMAL).unwrap();
        assert_eq!(c.lapi.update_frequency, Duration::from_secs(10));
        assert_eq!(c.lapi.scopes, ["ip", "range"]);
        assert_eq!(c.lapi.decision_types, ["ban"]);
        assert_eq!(c.lapi.metrics_interval, Some(Duration::from_secs(1800)));
        assert_eq!(c.router.port, 8728);
        assert_eq!(c.router.window, 64);
        assert_eq!(c.lists.v4.as_deref(), Some("crowdsec-banned"));
        assert_eq!(c.lists.v6.as_deref(), Some("crowdsec6-banned"));
        assert_eq!(c.lists.comment_prefix, "tikban");
        assert_eq!(c.reconciliation_interval, Duration::from_secs(3600));
        assert_eq!(c.metrics, Some("0.0.0.0:2112".parse().unwrap()));
        assert!(!c.log.json);
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(c.lapi.api_key.as_ref().unwrap()),
            "k3y-s3cr3t"
        );
    }

    #[test]
    fn reports_every_problem_at_once_without_secrets() {
        let err = env(&[
            ("CROWDSEC_URL", "ftp://x"),
            ("CROWDSEC_UPDATE_FREQUENCY", "soon"),
            ("MIKROTIK_HOST", "a b"),
            ("MIKROTIK_TLS", "maybe"),
            ("MIKROTIK_PIPELINE_WINDOW", "0"),
            ("LOG_FORMAT", "xml"),
            ("METRICS_PORT", "70000"),
            ("CROWDSEC_KEY_PEM", "not-pem-s3cr3t"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.problems.iter().map(|p| p.var).collect();
        for want in [
            "CROWDSEC_URL",
            "CROWDSEC_UPDATE_FREQUENCY",
            // A key without a certificate: mTLS was meant, so the missing API key is not reported.
            "CROWDSEC_CERT_PATH",
            "CROWDSEC_KEY_PEM",
            "MIKROTIK_HOST",
            "MIKROTIK_PASS",
            "MIKROTIK_TLS",
            "MIKROTIK_PIPELINE_WINDOW",
            "LOG_FORMAT",
            "METRICS_PORT",
        ] {
            assert!(vars.contains(&want), "{want} missing from {err}");
        }
        let text = err.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(
            text.contains("\"soon\""),
            "non-secret values are quoted: {text}"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = env(MINIMAL).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("REDACTED"));
    }

    #[test]
    fn origins_accept_spaces_and_commas() {
        let mut vars = MINIMAL.to_vec();
        vars.push(("CROWDSEC_ORIGINS", "crowdsec cscli,CAPI , lists"));
        let c = env(&vars).unwrap();
        assert_eq!(c.lapi.origins, ["crowdsec", "cscli", "CAPI", "lists"]);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let mut vars = MINIMAL.to_vec();
        vars.push(("CROWDSEC_UPDATE_FREQUENCY", ""));
        vars.push(("MIKROTIK_HOST", " "));
        let c = env(&vars).unwrap();
        assert_eq!(c.lapi.update_frequency, Duration::from_secs(10));
        assert_eq!(c.router.host, "172.17.0.1");
    }

    #[test]
    fn tls_needs_a_pin_or_ca_and_changes_the_default_port() {
        let mut vars = MINIMAL.to_vec();
        vars.push(("MIKROTIK_TLS", "true"));
        let err = env(&vars).unwrap_err();
        assert_eq!(err.problems[0].var, "MIKROTIK_TLS");
        let fp = "AB:".repeat(31) + "AB";
        vars.push(("MIKROTIK_TLS_FINGERPRINT", &fp));
        let c = env(&vars).unwrap();
        assert_eq!(c.router.port, 8729);
        assert_eq!(c.router.tls, Some(RouterTls::Fingerprint([0xAB; 32])));
    }

    #[test]
    fn host_forms() {
        assert_eq!(parse_host("10.0.0.1"), Some(("10.0.0.1".into(), None)));
        assert_eq!(
            parse_host("router.lan:8729"),
            Some(("router.lan".into(), Some(8729)))
        );
        assert_eq!(parse_host("fd00::1"), Some(("fd00::1".into(), None)));
        assert_eq!(
            parse_host("[fd00::1]:8728"),
            Some(("fd00::1".into(), Some(8728)))
        );
        assert_eq!(parse_host("host:99999"), None);
        assert_eq!(parse_host(""), None);
        assert_eq!(parse_host("[zz]:1"), None);
    }

    #[test]
    fn durations_in_go_and_humantime_forms() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("10s"), Some(s(10)));
        assert_eq!(parse_duration("1h30m"), Some(s(5400)));
        assert_eq!(parse_duration("1h 30m"), Some(s(5400)));
        assert_eq!(parse_duration("1.5h"), Some(s(5400)));
        assert_eq!(parse_duration("2days"), Some(s(172_800)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn metrics_interval_zero_disables_and_short_is_refused() {
        let mut vars = MINIMAL.to_vec();
        vars.push(("CROWDSEC_LAPI_METRICS_INTERVAL", "0"));
        assert_eq!(env(&vars).unwrap().lapi.metrics_interval, None);
        vars.pop();
        vars.push(("CROWDSEC_LAPI_METRICS_INTERVAL", "5m"));
        assert_eq!(
            env(&vars).unwrap_err().problems[0].var,
            "CROWDSEC_LAPI_METRICS_INTERVAL"
        );
    }

    /// A self-signed EC certificate and its key (PEM), shared with crowdsec-lapi's tests.
    const CERT_PEM: &str = include_str!("../../crowdsec-lapi/src/testdata/client.pem");
    const KEY_PEM: &str = include_str!("../../crowdsec-lapi/src/testdata/client-key.pem");

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn client_certificate_replaces_the_api_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = write(&dir, "bouncer.pem", CERT_PEM);
        let key = write(&dir, "bouncer-key.pem", KEY_PEM);
        let err = env(&[
            ("CROWDSEC_URL", "https://lapi:8080"),
            ("CROWDSEC_CERT_PATH", &cert),
            ("MIKROTIK_PASS", "x"),
        ])
        .unwrap_err();
        assert_eq!(err.problems[0].var, "CROWDSEC_KEY_PATH");
        let c = env(&[
            ("CROWDSEC_URL", "https://lapi:8080"),
            ("CROWDSEC_CERT_PATH", &cert),
            ("CROWDSEC_KEY_PATH", &key),
            ("CROWDSEC_BOUNCER_API_KEY", "ignored"),
            ("MIKROTIK_PASS", "x"),
        ])
        .unwrap();
        assert!(c.lapi.api_key.is_none());
        assert_eq!(
            c.lapi.client_cert.as_ref().map(|c| c.chain().len()),
            Some(1)
        );
        // Inline PEM works the same way.
        let c = env(&[
            ("CROWDSEC_URL", "https://lapi:8080"),
            ("CROWDSEC_CERT_PEM", CERT_PEM),
            ("CROWDSEC_KEY_PEM", KEY_PEM),
            ("CROWDSEC_CA_CERT_PEM", CERT_PEM),
            ("MIKROTIK_PASS", "x"),
        ])
        .unwrap();
        assert!(c.lapi.client_cert.is_some());
        assert_eq!(c.lapi.ca.len(), 1);
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(&KEY_PEM[30..60]), "{dbg}");
    }

    #[test]
    fn pem_problems_are_reported_at_configuration_time() {
        let dir = tempfile::tempdir().unwrap();
        let two_keys = write(&dir, "two.pem", &format!("{KEY_PEM}{KEY_PEM}"));
        let no_cert = write(&dir, "nocert.pem", KEY_PEM);
        let missing = dir.path().join("missing.pem").display().to_string();
        let err = env(&[
            ("CROWDSEC_URL", "https://lapi:8080"),
            ("CROWDSEC_CERT_PATH", &no_cert),
            ("CROWDSEC_KEY_PATH", &two_keys),
            ("CROWDSEC_CA_CERT_PATH", &missing),
            ("MIKROTIK_PASS", "x"),
            ("MIKROTIK_TLS", "true"),
            (
                "MIKROTIK_TLS_CA",
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            ),
        ])
        .unwrap_err();
        let text = err.to_string();
        for want in [
            "CROWDSEC_CERT_PATH: file",
            "holds no CERTIFICATE block",
            "CROWDSEC_KEY_PATH: file",
            "holds 2 private keys; expected exactly one",
            "CROWDSEC_CA_CERT_PATH: file",
            "cannot be read",
            "MIKROTIK_TLS_CA: the PEM text is not valid PEM",
        ] {
            assert!(text.contains(want), "{want:?} missing from {text}");
        }
        assert!(!text.contains("MIKROTIK_TLS:"), "{text}");
        assert!(!text.contains(&KEY_PEM[30..60]), "{text}");
    }

    #[test]
    fn a_key_that_does_not_fit_is_a_configuration_problem() {
        // Valid PEM framing around bytes that are no key: caught before any connection.
        let key =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXJrZXI=\n-----END PRIVATE KEY-----\n";
        let err = env(&[
            ("CROWDSEC_URL", "https://lapi:8080"),
            ("CROWDSEC_CERT_PEM", CERT_PEM),
            ("CROWDSEC_KEY_PEM", key),
            ("MIKROTIK_PASS", "x"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].var, "CROWDSEC_KEY_PEM");
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
    }

    #[test]
    fn both_families_disabled_is_an_error() {
        let mut vars = MINIMAL.to_vec();
        vars.push(("FIREWALL_IPV4_ENABLED", "false"));
        vars.push(("FIREWALL_IPV6_ENABLED", "no"));
        assert_eq!(
            env(&vars).unwrap_err().problems[0].var,
            "FIREWALL_IPV4_ENABLED"
        );
    }

    #[test]
    fn raw_env_has_a_field_for_every_var() {
        // Each documented variable must reach its field: set it alone to an invalid value where
        // the type allows, or check the value arrives.
        for v in VARS {
            let raw: RawEnv = envy::from_iter([(v.name.to_string(), "x".to_string())]).unwrap();
            let dbg = format!("{raw:?}");
            assert!(
                dbg.contains("Some(\"x\")"),
                "{} does not map to a RawEnv field",
                v.name
            );
        }
    }

    #[test]
    fn help_lists_every_variable() {
        let help = help_text();
        for v in VARS {
            assert!(help.contains(v.name), "{} missing from --help", v.name);
        }
    }
}
