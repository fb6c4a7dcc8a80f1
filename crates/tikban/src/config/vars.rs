//! [`VARS`]: every variable tikban reads, with its form, default and help. The one list that
//! `--help`, the docs test (`tests/docs.rs`) and the parser use.

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
pub(super) const DURATION: &str = "duration such as 10s, 1m30s, 1h or 1.5h";
pub(super) const BOOL: &str = "true or false";
const LIST: &str = "list separated by commas or spaces";

/// Every variable tikban reads: [`VARS`], then guard's thresholds (`crate::guard::VARS`), in
/// `--help` order. `--help`, the docs test and the parser use this.
pub fn all_vars() -> impl Iterator<Item = Var> {
    VARS.iter()
        .copied()
        .chain(crate::guard::VARS.iter().map(|g| Var {
            name: g.name,
            default: (!g.default.is_empty()).then_some(g.default),
            kind: g.kind,
            help: g.help,
            secret: false,
        }))
}

/// The daemon's own variables, in `--help` order ([`all_vars`] adds guard's thresholds).
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
        "CROWDSEC_POLL_TIMEOUT",
        None,
        DURATION,
        "overall deadline of one delta poll (default 3 x CROWDSEC_UPDATE_FREQUENCY, at least 30s); startup snapshots get 10 x this, at least 5m",
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
    // Safety (docs/safety.md)
    var(
        "ALLOWLIST",
        None,
        LIST,
        "addresses and CIDRs (IPv4, IPv6) never banned, from LAPI or guard; a ban covering one is skipped whole",
    ),
    var(
        "PROTECT_SELF",
        Some("true"),
        BOOL,
        "never ban tikban's own address (as the router sees it)",
    ),
    var(
        "PROTECT_ROUTER",
        Some("true"),
        BOOL,
        "never ban the router address tikban talks to (MIKROTIK_HOST)",
    ),
    var(
        "PROTECT_LOOPBACK",
        Some("true"),
        BOOL,
        "never ban 127.0.0.0/8 and ::1",
    ),
    var(
        "PROTECT_LINK_LOCAL",
        Some("true"),
        BOOL,
        "never ban 169.254.0.0/16 and fe80::/10",
    ),
    var(
        "PROTECT_LAPI",
        Some("true"),
        BOOL,
        "never ban the LAPI host's addresses (resolved again every 5 minutes)",
    ),
    var(
        "PROTECT_ADMIN_SESSIONS",
        Some("true"),
        BOOL,
        "never ban the address of an active admin session on the router (/user/active)",
    ),
    var(
        "MAX_RANGE_V4",
        Some("8"),
        "prefix length 0..=32",
        "refuse IPv4 ranges wider than this prefix",
    ),
    var(
        "MAX_RANGE_V6",
        Some("32"),
        "prefix length 0..=128",
        "refuse IPv6 ranges wider than this prefix",
    ),
    var(
        "MAX_ENTRIES",
        Some("auto"),
        "auto, 0 (no limit) or a number",
        "the most router entries tikban holds across both lists; auto derives it from the router's memory",
    ),
    var(
        "IPV6_BAN_PREFIX",
        Some("128"),
        "prefix length 1..=128",
        "enforce IPv6 bans as their prefix of this length (64: one entry per /64); 128 = as given",
    ),
    // Guard (docs/guard.md); its thresholds follow, from crate::guard::VARS
    var(
        "GUARD_ENABLED",
        Some("true"),
        BOOL,
        "watch the router's own log for brute force against it and ban on the spot",
    ),
    var(
        "CROWDSEC_MACHINE_ID",
        None,
        "text",
        "a machine from `cscli machines add`: guard then shares its bans with LAPI as alerts",
    ),
    secret(
        "CROWDSEC_MACHINE_PASSWORD",
        "text",
        "that machine's password",
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

/// The documented default of `var`, or `""` when it has none.
pub(super) fn default_of(var: &str) -> &'static str {
    VARS.iter()
        .find(|v| v.name == var)
        .and_then(|v| v.default)
        .unwrap_or("")
}

/// The `--help` text: usage, then every variable with its form and default.
pub fn help_text() -> String {
    let mut out = format!(
        "tikban {} — CrowdSec bouncer for MikroTik RouterOS address lists\n\n\
         Usage: tikban [--help | --version]\n\n\
         Configuration comes only from environment variables:\n",
        env!("CARGO_PKG_VERSION")
    );
    for v in all_vars() {
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
