//! Parsing and validation: [`Config::from_raw`] checks every variable of a [`RawEnv`] and
//! collects every problem before failing.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crowdsec_lapi::ClientCert;
use secrecy::{ExposeSecret, SecretString};

use super::pem::{PemInput, PemSource};
use super::vars::{BOOL, DURATION, default_of};
use super::{
    Config, ConfigError, GuardConfig, LapiSettings, ListSettings, LogSettings, Problem, RawEnv,
    RouterSettings, RouterTls, SafetySettings, VARS,
};

/// Longest part of a value echoed in a problem, in characters; the rest becomes `…`.
pub const MAX_ECHO: usize = 64;
/// Longest `CROWDSEC_URL`, in bytes.
pub const MAX_URL: usize = 2048;
/// Longest host part of `MIKROTIK_HOST`: a DNS name is at most 253 characters (RFC 1035).
pub const MAX_HOST: usize = 253;
/// Longest `MIKROTIK_USER`. RouterOS documents no limit; user names are short.
pub const MAX_USER: usize = 64;
/// Longest address-list name. RouterOS documents no limit; 63 keeps names readable and every
/// command small.
pub const MAX_LIST_NAME: usize = 63;
/// Longest `FIREWALL_COMMENT_PREFIX`: every entry's comment is the prefix plus the origin.
pub const MAX_COMMENT_PREFIX: usize = 32;

/// A non-secret value as a problem shows it: quoted, escaped (`escape_debug`: a `\n` or an ANSI
/// escape cannot reach the terminal as such), and at most [`MAX_ECHO`] characters, then `…`.
pub(super) fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for (n, c) in value.chars().enumerate() {
        if n == MAX_ECHO {
            out.push_str("\"…");
            return out;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

/// `url` without its user-info (`user:password@` becomes `<redacted>@`), for messages.
fn without_userinfo(url: &str) -> (String, bool) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => (format!("{}<redacted>{}", &url[..start], &rest[at..]), true),
        None => (url.to_owned(), false),
    }
}

/// Collects problems while parsing.
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

impl Checker {
    pub(super) fn problem(&mut self, var: &'static str, message: impl Into<String>) {
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
            quote(value)
        }
    }

    pub(super) fn value(raw: &Option<String>) -> Option<&str> {
        raw.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }

    fn secret_value(raw: &Option<SecretString>) -> Option<&str> {
        raw.as_ref()
            .map(|s| s.expose_secret().trim())
            .filter(|v| !v.is_empty())
    }

    /// A problem when `text` is longer than `max` characters.
    fn bounded(&mut self, var: &'static str, text: &str, max: usize, what: &str) -> bool {
        let len = text.chars().count();
        if len > max {
            self.problem(
                var,
                format!("is {len} characters long; {what} is at most {max}"),
            );
            return false;
        }
        true
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
}

/// Splits a list on commas and whitespace (`docs/reference/peers.md` §2: peers use spaces, go-cs-bouncer commas).
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
pub(super) fn parse_host(text: &str) -> Option<(String, Option<u16>)> {
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
    /// Validates raw values, reporting every problem at once.
    pub fn from_raw(raw: &RawEnv) -> Result<Self, ConfigError> {
        Self::check(raw, Vec::new())
    }

    /// [`Config::from_raw`] after `problems` found while reading (a value that is not UTF-8):
    /// such a variable gets only that problem, not also "is required".
    pub(super) fn check(raw: &RawEnv, problems: Vec<Problem>) -> Result<Self, ConfigError> {
        let unreadable: Vec<&'static str> = problems.iter().map(|p| p.var).collect();
        let mut c = Checker { problems };
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
            Some(u) => {
                // A password in the URL must never be echoed (nor sent: LAPI takes a key).
                let (shown, userinfo) = without_userinfo(u);
                if !c.bounded("CROWDSEC_URL", u, MAX_URL, "a URL") {
                    String::new()
                } else if userinfo {
                    c.problem(
                        "CROWDSEC_URL",
                        format!(
                            "{} must not carry credentials (user:password@); use \
                             CROWDSEC_BOUNCER_API_KEY or a client certificate",
                            quote(&shown)
                        ),
                    );
                    String::new()
                } else if u.starts_with("http://") || u.starts_with("https://") {
                    u.to_owned()
                } else {
                    c.problem(
                        "CROWDSEC_URL",
                        format!("{} must start with http:// or https://", quote(&shown)),
                    );
                    String::new()
                }
            }
        };
        let api_key = C::secret_value(&raw.crowdsec_bouncer_api_key).map(SecretString::from);
        let update_frequency =
            c.positive_duration(&raw.crowdsec_update_frequency, "CROWDSEC_UPDATE_FREQUENCY");
        // crate::supervisor::default_poll_timeout explains the defaults.
        let poll_timeout = match C::value(&raw.crowdsec_poll_timeout) {
            None => crate::supervisor::default_poll_timeout(update_frequency),
            Some(_) => c.positive_duration(&raw.crowdsec_poll_timeout, "CROWDSEC_POLL_TIMEOUT"),
        };
        let snapshot_timeout = crate::supervisor::snapshot_timeout(poll_timeout);
        let metrics_interval = {
            let d = c.duration(
                &raw.crowdsec_lapi_metrics_interval,
                "CROWDSEC_LAPI_METRICS_INTERVAL",
            );
            if d.is_zero() {
                None
            } else {
                // docs/reference/crowdsec-lapi.md §7: the spec's minimum interval is 15 minutes.
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
            C::value(&raw.crowdsec_cert_path),
            "CROWDSEC_CERT_PEM",
            C::value(&raw.crowdsec_cert_pem),
        );
        let key_src = c.pem_source(
            "CROWDSEC_KEY_PATH",
            C::value(&raw.crowdsec_key_path),
            "CROWDSEC_KEY_PEM",
            C::secret_value(&raw.crowdsec_key_pem),
        );
        let ca_src = c.pem_source(
            "CROWDSEC_CA_CERT_PATH",
            C::value(&raw.crowdsec_ca_cert_path),
            "CROWDSEC_CA_CERT_PEM",
            C::value(&raw.crowdsec_ca_cert_pem),
        );
        let chain = cert_src.and_then(|s| c.certificates(s));
        let key = key_src.and_then(|s| c.private_key(s));
        let cert_set = C::value(&raw.crowdsec_cert_path).is_some()
            || C::value(&raw.crowdsec_cert_pem).is_some();
        let key_set = C::value(&raw.crowdsec_key_path).is_some()
            || C::secret_value(&raw.crowdsec_key_pem).is_some();
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
        // With a client certificate no API key is sent (docs/reference/crowdsec-lapi.md §2: go-cs-bouncer refuses
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
            poll_timeout,
            snapshot_timeout,
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
            Some((h, _)) if !c.bounded("MIKROTIK_HOST", &h, MAX_HOST, "a host name") => {
                (String::new(), 0)
            }
            Some((h, p)) => (h, p.unwrap_or(if tls_on { 8729 } else { 8728 })),
            None => {
                c.problem(
                    "MIKROTIK_HOST",
                    format!(
                        "{} is not host or host:port (IPv6 with a port as [addr]:port)",
                        quote(host_text)
                    ),
                );
                (String::new(), 0)
            }
        };
        let user = C::or_default(&raw.mikrotik_user, "MIKROTIK_USER").to_owned();
        if c.bounded("MIKROTIK_USER", &user, MAX_USER, "a user name")
            && user.chars().any(char::is_control)
        {
            c.problem("MIKROTIK_USER", "must not contain control characters");
        }
        let password = match C::secret_value(&raw.mikrotik_pass) {
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
                    format!(
                        "{} is not a SHA-256 fingerprint; expected 64 hex digits",
                        quote(f)
                    ),
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
                    format!(
                        "{} is not an integer between 1 and 1024",
                        quote(window_text)
                    ),
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
            if c.bounded(name_var, name, MAX_LIST_NAME, "an address-list name")
                && name.chars().any(char::is_control)
            {
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
        if !c.bounded(
            "FIREWALL_COMMENT_PREFIX",
            &comment_prefix,
            MAX_COMMENT_PREFIX,
            "the comment prefix",
        ) {
        } else if comment_prefix
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            c.problem(
                "FIREWALL_COMMENT_PREFIX",
                format!(
                    "{} must not contain spaces or control characters",
                    quote(&comment_prefix)
                ),
            );
        }
        let lists = ListSettings {
            v4,
            v6,
            comment_prefix,
        };
        let reconciliation_interval =
            c.positive_duration(&raw.reconciliation_interval, "RECONCILIATION_INTERVAL");

        // --- Safety
        let allowlist = match C::value(&raw.allowlist) {
            None => crate::safety::AddrSet::new(),
            Some(text) => crate::safety::AddrSet::parse(text).unwrap_or_else(|e| {
                c.problem("ALLOWLIST", e.to_string());
                crate::safety::AddrSet::new()
            }),
        };
        let protections = crate::safety::Protections {
            own: c.boolean(&raw.protect_self, "PROTECT_SELF"),
            router: c.boolean(&raw.protect_router, "PROTECT_ROUTER"),
            loopback: c.boolean(&raw.protect_loopback, "PROTECT_LOOPBACK"),
            link_local: c.boolean(&raw.protect_link_local, "PROTECT_LINK_LOCAL"),
            lapi: c.boolean(&raw.protect_lapi, "PROTECT_LAPI"),
            admin_sessions: c.boolean(&raw.protect_admin_sessions, "PROTECT_ADMIN_SESSIONS"),
        };
        let mut prefix = |raw: &Option<String>, var: &'static str, max: u8, min: u8| -> u8 {
            let text = C::or_default(raw, var);
            match text.parse::<u8>() {
                Ok(p) if (min..=max).contains(&p) => p,
                _ => {
                    c.problem(
                        var,
                        format!("{} is not a prefix length from {min} to {max}", quote(text)),
                    );
                    max
                }
            }
        };
        let ranges = crate::safety::RangeLimits {
            v4: prefix(&raw.max_range_v4, "MAX_RANGE_V4", 32, 0),
            v6: prefix(&raw.max_range_v6, "MAX_RANGE_V6", 128, 0),
        };
        let ipv6_prefix = prefix(&raw.ipv6_ban_prefix, "IPV6_BAN_PREFIX", 128, 1);
        let max_entries = {
            let text = C::or_default(&raw.max_entries, "MAX_ENTRIES");
            match text.to_ascii_lowercase().as_str() {
                "auto" => crate::supervisor::MaxEntries::Auto,
                "0" | "unlimited" => crate::supervisor::MaxEntries::Unlimited,
                n => match n.parse::<usize>() {
                    Ok(n) => crate::supervisor::MaxEntries::Fixed(n),
                    Err(_) => {
                        c.problem(
                            "MAX_ENTRIES",
                            format!("{} is not auto, 0 or a number of entries", quote(text)),
                        );
                        crate::supervisor::MaxEntries::Auto
                    }
                },
            }
        };
        let safety = SafetySettings {
            settings: crate::safety::Settings {
                allowlist,
                protections,
                ranges,
            },
            max_entries,
            ipv6_prefix,
        };

        // --- Logs and metrics
        let level = C::or_default(&raw.log_level, "LOG_LEVEL").to_ascii_lowercase();
        let level = match level.as_str() {
            "error" | "warn" | "info" | "debug" | "trace" => level,
            "warning" => "warn".to_owned(),
            _ => {
                c.problem(
                    "LOG_LEVEL",
                    format!(
                        "{} is not one of error, warn, info, debug, trace",
                        quote(&level)
                    ),
                );
                "info".to_owned()
            }
        };
        let format = C::or_default(&raw.log_format, "LOG_FORMAT").to_ascii_lowercase();
        let json = match format.as_str() {
            "text" => false,
            "json" => true,
            _ => {
                c.problem(
                    "LOG_FORMAT",
                    format!("{} is not text or json", quote(&format)),
                );
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
                    format!(
                        "{} is not an IP address, e.g. 0.0.0.0 or ::",
                        quote(addr_text)
                    ),
                )
            })
            .ok();
        let port_text = C::or_default(&raw.metrics_port, "METRICS_PORT");
        let metrics_port = port_text
            .parse::<u16>()
            .map_err(|_| {
                c.problem(
                    "METRICS_PORT",
                    format!("{} is not a port number (0-65535)", quote(port_text)),
                )
            })
            .ok();
        let metrics = match (metrics_on, addr, metrics_port) {
            (true, Some(a), Some(p)) => Some(SocketAddr::new(a, p)),
            _ => None,
        };

        // --- Guard
        let guard_on = c.boolean(&raw.guard_enabled, "GUARD_ENABLED");
        let mut settings = crate::guard::Settings::default();
        for (name, value) in &raw.guard {
            if let Err(e) = settings.set(name, value) {
                c.problem(name, e.to_string());
            }
        }
        if let Err(problems) = settings.check() {
            for p in problems {
                let text = p.to_string();
                // "GUARD_LOGIN_CAPACITY: …": the variable the problem names.
                let var = crate::guard::VARS
                    .iter()
                    .map(|g| g.name)
                    .find(|n| text.starts_with(n))
                    .unwrap_or("GUARD_ENABLED");
                c.problem(var, text);
            }
        }
        let machine = match (
            C::value(&raw.crowdsec_machine_id),
            raw.crowdsec_machine_password.as_ref(),
        ) {
            (None, None) => None,
            (Some(id), Some(pw)) if !pw.expose_secret().is_empty() => {
                Some((id.to_owned(), pw.clone()))
            }
            (Some(_), _) => {
                c.problem(
                    "CROWDSEC_MACHINE_PASSWORD",
                    "is required with CROWDSEC_MACHINE_ID",
                );
                None
            }
            (None, Some(_)) => {
                c.problem(
                    "CROWDSEC_MACHINE_ID",
                    "is required with CROWDSEC_MACHINE_PASSWORD",
                );
                None
            }
        };
        let guard = GuardConfig {
            settings: guard_on.then_some(settings),
            machine,
        };

        if c.problems.is_empty() {
            Ok(Config {
                lapi,
                router,
                lists,
                reconciliation_interval,
                safety,
                guard,
                log: LogSettings { level, json },
                metrics,
            })
        } else {
            // A value that could not be read at all gets that one problem, not also "required".
            let mut seen_unreadable = Vec::new();
            c.problems.retain(|p| {
                !unreadable.contains(&p.var) || {
                    let first = !seen_unreadable.contains(&p.var);
                    seen_unreadable.push(p.var);
                    first
                }
            });
            let order = |p: &Problem| super::all_vars().position(|v| v.name == p.var);
            c.problems.sort_by_key(order);
            Err(ConfigError {
                problems: c.problems,
            })
        }
    }
}
