//! The pure half of the checks: what was observed ([`Facts`]) in, the checklist ([`Report`])
//! out. No I/O and no clock: the local time of the LAPI answer is part of the facts, so every
//! rule here is unit-tested with hand-made observations.
//!
//! Every piece of text that came from a peer (a router message, a version string, a rule id, a
//! `Date` header) is escaped by [`safe`] or was escaped by the client that produced it, so no
//! line can be forged and no terminal escape can reach the reader.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Clock skew against LAPI beyond which the clock item fails, in seconds.
pub const MAX_SKEW_SECS: u64 = 30;

/// The policies tikban's router user needs (`docs/reference/routeros-containers.md` §5.4).
pub const NEEDED_POLICIES: [&str; 3] = ["api", "read", "write"];

/// The outcome of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// It holds.
    Pass,
    /// It does not hold: the item carries a hint.
    Fail,
    /// Not applicable, informative only, or not checked because an earlier step failed.
    Skip,
}

impl Mark {
    /// `✓`, `✗` or `–`.
    pub fn symbol(self) -> &'static str {
        match self {
            Mark::Pass => "✓",
            Mark::Fail => "✗",
            Mark::Skip => "–",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The outcome.
    pub mark: Mark,
    /// What was checked, e.g. `LAPI key`.
    pub name: String,
    /// What was seen.
    pub detail: String,
    /// What to do about a failure; `Some` exactly for [`Mark::Fail`].
    pub hint: Option<String>,
}

impl Item {
    fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Item {
            mark: Mark::Pass,
            name: name.into(),
            detail: detail.into(),
            hint: None,
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Item {
            mark: Mark::Fail,
            name: name.into(),
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    fn skip(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Item {
            mark: Mark::Skip,
            name: name.into(),
            detail: detail.into(),
            hint: None,
        }
    }

    /// `✓ name: detail`, without the hint.
    pub fn line(&self) -> String {
        format!("{} {}: {}", self.mark.symbol(), self.name, self.detail)
    }
}

/// The whole checklist, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The items.
    pub items: Vec<Item>,
}

impl Report {
    /// True when no item failed.
    pub fn ok(&self) -> bool {
        self.count(Mark::Fail) == 0
    }

    /// How many items have `mark`.
    pub fn count(&self, mark: Mark) -> usize {
        self.items.iter().filter(|i| i.mark == mark).count()
    }

    /// The checklist as `tikban check` prints it: one line per item, each failure followed by
    /// an indented `hint:` line, then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for item in &self.items {
            let _ = writeln!(out, "{}", item.line());
            if let Some(h) = &item.hint {
                let _ = writeln!(out, "  hint: {h}");
            }
        }
        let failed = self.count(Mark::Fail);
        if failed == 0 {
            let _ = writeln!(out, "all checks passed");
        } else {
            let _ = writeln!(
                out,
                "{failed} of {} checks failed (see docs/troubleshooting.md)",
                self.items.len()
            );
        }
        out
    }
}

/// Text from a peer made safe to print: control and invisible characters escaped as with
/// [`char::escape_debug`] (quotes left alone), at most `max` characters, `…` when cut (the LAPI
/// crate's [`crowdsec_lapi::peer_text`], with no secret to redact).
pub fn safe(text: &str, max: usize) -> String {
    crowdsec_lapi::peer_text(text, None, max)
}

/// Short peer values (versions, ids, chains, group names).
fn short(text: &str) -> String {
    safe(text, 64)
}

/// The outcome of one I/O step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// It answered.
    Done(T),
    /// It failed; the text is already safe to print.
    Failed(String),
    /// No answer within the step's deadline.
    TimedOut(Duration),
    /// Not run; the reason, e.g. `no router connection`.
    NotRun(String),
}

// ==== facts =====================================================================================

/// Everything observed.
#[derive(Debug, Clone)]
pub struct Facts {
    /// LAPI.
    pub lapi: LapiFacts,
    /// The router.
    pub router: RouterFacts,
}

/// How the LAPI connection is secured, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LapiTls {
    /// `http://`.
    Plain,
    /// `https://`, the certificate verified against the web PKI roots, plus the configured CA
    /// when `extra_ca`.
    Verified {
        /// `CROWDSEC_CA_CERT_PATH` or `CROWDSEC_CA_CERT_PEM` is set.
        extra_ca: bool,
    },
    /// `https://` with `CROWDSEC_INSECURE_SKIP_VERIFY=true`.
    Insecure,
}

/// What the LAPI probe saw.
#[derive(Debug, Clone)]
pub struct LapiFacts {
    /// `CROWDSEC_URL`, redacted and escaped.
    pub url: String,
    /// TLS as configured.
    pub tls: LapiTls,
    /// A client certificate authenticates instead of the API key.
    pub client_cert: bool,
    /// The outcome of `HEAD /v1/decisions`.
    pub probe: LapiOutcome,
}

/// The outcome of the LAPI probe. Texts are safe to print.
#[derive(Debug, Clone)]
pub enum LapiOutcome {
    /// LAPI answered.
    Answered {
        /// HTTP status.
        status: u16,
        /// The `Date` header, escaped.
        date: Option<String>,
        /// The negotiated TLS version, over `https://`.
        tls_version: Option<String>,
        /// Time to the answer.
        elapsed: Duration,
        /// Local time when the answer arrived.
        local_time: SystemTime,
    },
    /// The configuration cannot make a request.
    Config(String),
    /// No TCP connection.
    Unreachable(String),
    /// TCP connected, the TLS handshake failed.
    Tls(String),
    /// Connected, but the answer was not HTTP (a wrong scheme or port).
    Protocol(String),
    /// No connection within the deadline.
    TimedOut(Duration),
    /// Connected (and the TLS handshake done), but no answer within the deadline.
    NoAnswer(Duration),
}

/// How the router connection went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterConnect {
    /// Connected and logged in.
    Connected,
    /// No TCP connection (refused, no route, …).
    Unreachable(String),
    /// The TLS setup or handshake failed.
    Tls(String),
    /// The router answered and refused the login, or broke off during it.
    Login(String),
    /// Connect, TLS and login did not finish within the deadline.
    TimedOut(Duration),
}

/// What the write probe saw (`tikban check` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteProbe {
    /// The probe entry was added and removed again; `leftover` when an earlier probe entry was
    /// still there and was removed instead.
    Done {
        /// An earlier probe's entry was found and removed.
        leftover: bool,
    },
    /// The router refused the add; its message.
    Refused(String),
    /// The add worked, the removal did not; what went wrong.
    NotRemoved(String),
}

/// The user's group and its policy, as `/user` and `/user/group` print them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFacts {
    /// The group name.
    pub group: String,
    /// The `policy` property, e.g. `api,read,write,!ftp,…`.
    pub policy: String,
}

/// How the user's right to write address lists was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// `tikban check`: a probe entry added and removed.
    WriteProbe(Step<WriteProbe>),
    /// At daemon start (which never writes anything but its own entries): the group's policy, if
    /// the user may read it (`None`: no row came back).
    Policy(Step<Option<PolicyFacts>>),
}

/// One managed list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFacts {
    /// `IPv4` or `IPv6`.
    pub family: &'static str,
    /// The `FIREWALL_IPV*_ENABLED` variable of the family.
    pub enabled_var: &'static str,
    /// The list name; `None` when the family is disabled.
    pub name: Option<String>,
    /// The count, when the family is enabled.
    pub count: Step<ListCount>,
}

/// Entries of one list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCount {
    /// Every entry of the list.
    pub total: u64,
    /// Entries whose comment carries tikban's prefix; `None` when not counted (at daemon start
    /// the reconcile counts them).
    pub owned: Option<Owned>,
}

/// tikban's entries of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owned {
    /// Counted so far.
    pub count: u64,
    /// False when the count stopped at the deadline.
    pub complete: bool,
}

/// A firewall table that can hold drop rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `raw` (before connection tracking).
    Raw,
    /// `filter`.
    Filter,
}

impl Table {
    /// The menu name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Raw => "raw",
            Table::Filter => "filter",
        }
    }
}

/// Properties of a firewall rule that do not restrict which packets it matches: identity,
/// bookkeeping, logging, and the parameters of actions. Every other property with a value is a
/// matcher (`src-address`, `in-interface-list`, `protocol`, `connection-state`, …, also ones
/// this list does not know), so an unknown property never makes a rule look like accept-all.
const NOT_MATCHERS: &[&str] = &[
    ".id",
    ".nextid",
    ".about",
    "chain",
    "action",
    "comment",
    "disabled",
    "dynamic",
    "invalid",
    "log",
    "log-prefix",
    "bytes",
    "packets",
    "jump-target",
    "reject-with",
    "address-list",
    "address-list-timeout",
    "hw-offload",
];

/// One printed firewall rule, reduced to what the shadowing rule needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRow {
    /// `raw` or `filter`.
    pub table: Table,
    /// `.id`, e.g. `*3`.
    pub id: String,
    /// `chain`.
    pub chain: String,
    /// `action`.
    pub action: String,
    /// Neither `disabled` nor `invalid`.
    pub enabled: bool,
    /// `src-address-list`, if set.
    pub src_list: Option<String>,
    /// Names of the matcher properties that have a value.
    pub matchers: Vec<String>,
}

impl RuleRow {
    /// A rule from its printed properties, in print order.
    pub fn from_props<'a>(
        table: Table,
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut row = RuleRow {
            table,
            id: String::new(),
            chain: String::new(),
            action: String::new(),
            enabled: true,
            src_list: None,
            matchers: Vec::new(),
        };
        for (k, v) in props {
            match k {
                ".id" => row.id = v.to_owned(),
                "chain" => row.chain = v.to_owned(),
                "action" => row.action = v.to_owned(),
                "disabled" | "invalid" if is_true(v) => row.enabled = false,
                _ => {}
            }
            if k == "src-address-list" && !v.is_empty() {
                row.src_list = Some(v.to_owned());
            }
            if !v.is_empty() && !NOT_MATCHERS.contains(&k) {
                row.matchers.push(k.to_owned());
            }
        }
        row
    }

    fn at(&self) -> String {
        format!(
            "{} {} {}",
            self.table.name(),
            short(&self.chain),
            short(&self.id)
        )
    }
}

/// `true`/`yes` (v7 and older spellings, `docs/reference/routeros-api.md` §7).
fn is_true(v: &str) -> bool {
    matches!(v, "true" | "yes")
}

/// True for an **accept-all** rule: enabled, action `accept`, and no matcher at all (every
/// property it has is one of [`NOT_MATCHERS`]). Such a rule accepts every packet that reaches
/// it, so any rule after it in the same chain never sees a packet. A rule with any matcher
/// (`src-address=`, `in-interface-list=`, `connection-state=`, …) is not accept-all, even if
/// the matcher happens to include the banned sources: the check reports only what is certain.
pub fn is_accept_all(rule: &RuleRow) -> bool {
    rule.enabled && rule.action == "accept" && rule.matchers.is_empty()
}

/// True for a rule that drops the sources on `list`: `src-address-list=<list>` (not the negated
/// `!<list>`) with action `drop`, `reject` or `tarpit`, as the daemon counts them.
fn drops(rule: &RuleRow, list: &str) -> bool {
    rule.src_list.as_deref() == Some(list)
        && matches!(rule.action.as_str(), "drop" | "reject" | "tarpit")
}

/// Where a list's bans are enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropStatus {
    /// An enabled drop rule that no earlier accept-all shadows (`table chain id`).
    Enforced(String),
    /// Every enabled drop rule sits after an accept-all in its chain: the first such pair.
    Shadowed {
        /// The drop rule.
        rule: RuleRow,
        /// The earliest accept-all before it.
        by: RuleRow,
    },
    /// Drop rules exist but none is enabled: the first one.
    Disabled(RuleRow),
    /// No rule drops the list's sources.
    Missing,
}

/// The drop-rule status of `list` over `rules` (one family, each table in print order).
///
/// A drop rule is shadowed when an accept-all rule ([`is_accept_all`]) comes before it in the
/// same table and chain. Jumps are not followed: a drop rule in a custom chain counts as present
/// whether or not a rule jumps to it.
pub fn drop_status(rules: &[RuleRow], list: &str) -> DropStatus {
    let mut shadowed = None;
    let mut disabled = None;
    for (i, rule) in rules.iter().enumerate() {
        if !drops(rule, list) {
            continue;
        }
        if !rule.enabled {
            disabled.get_or_insert_with(|| rule.clone());
            continue;
        }
        let by = rules[..i]
            .iter()
            .find(|r| r.table == rule.table && r.chain == rule.chain && is_accept_all(r));
        match by {
            None => return DropStatus::Enforced(rule.at()),
            Some(by) => {
                shadowed.get_or_insert_with(|| (rule.clone(), by.clone()));
            }
        }
    }
    match (shadowed, disabled) {
        (Some((rule, by)), _) => DropStatus::Shadowed { rule, by },
        (None, Some(rule)) => DropStatus::Disabled(rule),
        (None, None) => DropStatus::Missing,
    }
}

/// The drop rules of one enabled list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFacts {
    /// `/ip` or `/ipv6`.
    pub base: &'static str,
    /// The list.
    pub list: String,
    /// Every rule of `raw` then `filter`.
    pub rules: Step<Vec<RuleRow>>,
}

/// One container's memory settings, as `/container/print` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerRow {
    /// `name`.
    pub name: Option<String>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `memory-high` (7.20+).
    pub memory_high: Option<String>,
    /// `memory-max` (7.23+).
    pub memory_max: Option<String>,
}

/// What the router says about container memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerFacts {
    /// `/container/print`, if readable.
    pub containers: Option<Vec<ContainerRow>>,
    /// The memory properties `/container/config/print` has (`memory-high`, `memory-max`,
    /// `ram-high` before 7.20, `memory-current`), if readable.
    pub config: Option<Vec<(String, String)>>,
    /// This host's name (the container's `hostname`), to pick the row.
    pub hostname: Option<String>,
}

/// What the router connection saw.
#[derive(Debug, Clone)]
pub struct RouterFacts {
    /// `host:port`, escaped.
    pub target: String,
    /// `MIKROTIK_USER`, escaped.
    pub user: String,
    /// api-ssl.
    pub tls: bool,
    /// Connect and login.
    pub connect: RouterConnect,
    /// `/system/resource` `version`.
    pub version: Step<String>,
    /// Write access.
    pub access: Access,
    /// The managed lists, IPv4 then IPv6.
    pub lists: Vec<ListFacts>,
    /// Drop rules per enabled list.
    pub rules: Vec<RuleFacts>,
    /// `/log/print count-only`.
    pub log: Step<Option<u64>>,
    /// Container memory.
    pub container: Step<ContainerFacts>,
}

// ==== evaluation ================================================================================

/// The checklist for `facts`.
pub fn evaluate(facts: &Facts) -> Report {
    let mut items = lapi_items(&facts.lapi);
    items.extend(router_items(&facts.router));
    Report { items }
}

fn lapi_items(l: &LapiFacts) -> Vec<Item> {
    const REACH: &str = "LAPI reachable";
    const TLS: &str = "LAPI TLS";
    const CLOCK: &str = "clock";
    let key = if l.client_cert {
        "LAPI client certificate"
    } else {
        "LAPI key"
    };
    let https = l.tls != LapiTls::Plain;
    let not_checked = |why: &str| format!("not checked ({why})");
    let mut items = Vec::new();
    match &l.probe {
        LapiOutcome::Answered {
            status,
            date,
            tls_version,
            elapsed,
            local_time,
        } => {
            items.push(Item::pass(
                REACH,
                format!("{} answered in {} ms", l.url, elapsed.as_millis()),
            ));
            items.push(tls_item(l.tls, tls_version.as_deref()));
            items.push(key_item(key, l.client_cert, *status));
            items.push(clock_item(date.as_deref(), *local_time));
        }
        LapiOutcome::Config(e) => {
            items.push(Item::fail(
                REACH,
                format!("cannot make a request: {e}"),
                "fix CROWDSEC_URL and the LAPI credentials (tikban --help lists the forms)",
            ));
            for name in [TLS, key, CLOCK] {
                items.push(Item::skip(name, not_checked("no request")));
            }
        }
        LapiOutcome::Unreachable(e) => {
            items.push(Item::fail(
                REACH,
                e.clone(),
                "check CROWDSEC_URL; LAPI must listen on an address tikban reaches \
                 (api.server.listen_uri in CrowdSec's config.yaml, not 127.0.0.1 when LAPI runs \
                 on another host), and no firewall may drop that port",
            ));
            for name in [TLS, key, CLOCK] {
                items.push(Item::skip(name, not_checked("LAPI unreachable")));
            }
        }
        LapiOutcome::TimedOut(after) => {
            items.push(Item::fail(
                REACH,
                format!("{}: no answer within {} s", l.url, after.as_secs()),
                "nothing answered in time: a firewall between tikban and LAPI drops the \
                 traffic, or CROWDSEC_URL names the wrong address",
            ));
            for name in [TLS, key, CLOCK] {
                items.push(Item::skip(name, not_checked("LAPI unreachable")));
            }
        }
        LapiOutcome::NoAnswer(after) => {
            items.push(Item::fail(
                REACH,
                format!(
                    "{}: connected, but no answer within {} s",
                    l.url,
                    after.as_secs()
                ),
                "LAPI accepted the connection and sent nothing back in time: it is overloaded \
                 (a very large decision table, a slow database) or stalled; tikban's own \
                 requests wait longer (CROWDSEC_POLL_TIMEOUT), so watch whether the first sync \
                 follows",
            ));
            for name in [TLS, key, CLOCK] {
                items.push(Item::skip(name, not_checked("no answer")));
            }
        }
        LapiOutcome::Protocol(e) if !https => {
            items.push(Item::fail(
                REACH,
                format!("{}: the port answers, but not as HTTP: {e}", l.url),
                "check the scheme and port of CROWDSEC_URL (http:// or https://, and LAPI's \
                 port, 8080 by default)",
            ));
            for name in [TLS, key, CLOCK] {
                items.push(Item::skip(name, not_checked("no HTTP answer")));
            }
        }
        LapiOutcome::Tls(e) => {
            items.push(Item::pass(REACH, format!("{}: TCP connected", l.url)));
            items.push(Item::fail(TLS, e.clone(), tls_hint(l.client_cert)));
            for name in [key, CLOCK] {
                items.push(Item::skip(name, not_checked("no TLS session")));
            }
        }
        LapiOutcome::Protocol(e) => {
            // Over https: the handshake succeeded, the HTTP exchange did not.
            items.push(Item::fail(
                REACH,
                format!(
                    "{}: the TLS session works, the HTTP exchange failed: {e}",
                    l.url
                ),
                "check that CROWDSEC_URL names LAPI itself (a proxy in between may refuse or \
                 break the request)",
            ));
            items.push(tls_item(l.tls, None));
            for name in [key, CLOCK] {
                items.push(Item::skip(name, not_checked("no HTTP answer")));
            }
        }
    }
    items
}

fn tls_item(tls: LapiTls, version: Option<&str>) -> Item {
    const TLS: &str = "LAPI TLS";
    let version = version
        .map(short)
        .unwrap_or_else(|| "handshake done".into());
    match tls {
        LapiTls::Plain => Item::skip(TLS, "not used (CROWDSEC_URL is http://)"),
        LapiTls::Verified { extra_ca } => Item::pass(
            TLS,
            format!(
                "{version}, certificate verified against {}",
                if extra_ca {
                    "the web PKI roots and the configured CA"
                } else {
                    "the web PKI roots"
                }
            ),
        ),
        LapiTls::Insecure => Item::pass(
            TLS,
            format!(
                "{version}, certificate NOT verified (CROWDSEC_INSECURE_SKIP_VERIFY=true; prefer \
                 CROWDSEC_CA_CERT_PATH)"
            ),
        ),
    }
}

fn tls_hint(client_cert: bool) -> String {
    let mut hint = "the handshake failed with the configured trust: put the CA that signed \
                    LAPI's certificate in CROWDSEC_CA_CERT_PATH or CROWDSEC_CA_CERT_PEM, and use \
                    a host name or address in CROWDSEC_URL that the certificate names"
        .to_owned();
    if client_cert {
        hint.push_str("; LAPI must also trust the CA of tikban's client certificate");
    }
    hint
}

fn key_item(name: &str, client_cert: bool, status: u16) -> Item {
    match status {
        200..=299 => Item::pass(
            name,
            format!("accepted (HEAD /v1/decisions answered {status})"),
        ),
        401 | 403 => Item::fail(
            name,
            format!("refused (HEAD /v1/decisions answered {status})"),
            if client_cert {
                "LAPI refused the client certificate: its OU must be listed in LAPI's \
                 api.server.tls.bouncers_allowed_ou, and its CA must be LAPI's ca_cert_path"
            } else {
                "LAPI refused the key: create one on the CrowdSec host with `cscli bouncers add \
                 tikban` and set it in CROWDSEC_BOUNCER_API_KEY (one key per tikban)"
            },
        ),
        404 => Item::fail(
            name,
            "HEAD /v1/decisions answered 404",
            "CROWDSEC_URL does not point at LAPI: use its base URL, e.g. \
             http://192.168.88.10:8080",
        ),
        _ => Item::fail(
            name,
            format!("HEAD /v1/decisions answered {status}"),
            "LAPI (or a proxy in front of it) answered with an error: its log says why",
        ),
    }
}

fn clock_item(date: Option<&str>, local: SystemTime) -> Item {
    const CLOCK: &str = "clock";
    let Some(date) = date else {
        return Item::skip(CLOCK, "LAPI sent no Date header");
    };
    let Some(skew) = skew_secs(local, date) else {
        return Item::skip(
            CLOCK,
            format!("LAPI's Date header {date:?} is not an HTTP date"),
        );
    };
    let (size, side) = if skew >= 0 {
        (skew.unsigned_abs(), "ahead of")
    } else {
        (skew.unsigned_abs(), "behind")
    };
    if size <= 1 {
        Item::pass(CLOCK, "within 1 s of LAPI's")
    } else if size <= MAX_SKEW_SECS {
        Item::pass(CLOCK, format!("{size} s {side} LAPI's"))
    } else {
        Item::fail(
            CLOCK,
            format!("{size} s {side} LAPI's (more than {MAX_SKEW_SECS} s)"),
            "bans still last as long as they should (LAPI sends durations, not end times), but \
             the times in tikban's log (the router's clock: a container has none of its own), \
             the router's log and CrowdSec's alerts no longer line up for whoever compares \
             them: enable NTP on the router (/system/ntp/client/set enabled=yes \
             servers=pool.ntp.org) and on the CrowdSec host",
        )
    }
}

/// Local time minus the time in an HTTP `Date` header, in whole seconds (positive: the local
/// clock is ahead).
pub fn skew_secs(local: SystemTime, date: &str) -> Option<i64> {
    let remote = parse_http_date(date)?;
    let local = match local.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok()?,
        Err(e) => -i64::try_from(e.duration().as_secs()).ok()?,
    };
    Some(local - remote)
}

/// Seconds since the Unix epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110
/// §5.6.7), the only form Go's `net/http` (LAPI) writes.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let mut parts = text.split_ascii_whitespace();
    let weekday = parts.next()?;
    let day: u32 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" || parts.next().is_some() || !weekday.ends_with(',') {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let mut hms = time.split(':').map(|p| p.parse::<u32>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + i64::from(h * 3600 + m * 60 + s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The major version of a `/system/resource` `version` such as `7.20.8 (stable)`.
pub fn routeros_major(version: &str) -> Option<u32> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .find(|p| !p.is_empty())?
        .parse()
        .ok()
}

/// True when the `policy` property of a group grants `name` (RouterOS prints the policies a
/// group lacks with a `!`).
pub fn grants(policy: &str, name: &str) -> bool {
    policy.split(',').map(str::trim).any(|p| p == name)
}

fn router_items(r: &RouterFacts) -> Vec<Item> {
    const REACH: &str = "router reachable";
    const LOGIN: &str = "router login";
    let mut items = Vec::new();
    let via = if r.tls { "api-ssl" } else { "API" };
    match &r.connect {
        RouterConnect::Connected => {
            items.push(Item::pass(REACH, format!("{} ({via})", r.target)));
            items.push(Item::pass(LOGIN, format!("logged in as {}", r.user)));
        }
        RouterConnect::Unreachable(e) => {
            items.push(Item::fail(
                REACH,
                e.clone(),
                "check MIKROTIK_HOST (from the container the router is the veth gateway, e.g. \
                 172.17.0.1), that the api service is enabled on that port (/ip/service/print), \
                 and that an input rule accepts the container's traffic before the drop rules",
            ));
            items.push(Item::skip(LOGIN, "not checked (router unreachable)"));
        }
        RouterConnect::TimedOut(after) => {
            items.push(Item::fail(
                REACH,
                format!("{}: no answer within {} s", r.target, after.as_secs()),
                "nothing answered in time: an input rule drops the container's traffic to the \
                 API port, or MIKROTIK_HOST names the wrong address",
            ));
            items.push(Item::skip(LOGIN, "not checked (router unreachable)"));
        }
        RouterConnect::Tls(e) => {
            items.push(Item::fail(
                REACH,
                e.clone(),
                "api-ssl needs a certificate on the router's api-ssl service, and \
                 MIKROTIK_TLS_FINGERPRINT or MIKROTIK_TLS_CA must match it; over the container \
                 veth the plain API (MIKROTIK_TLS=false, port 8728) never leaves the router",
            ));
            items.push(Item::skip(LOGIN, "not checked (no TLS session)"));
        }
        RouterConnect::Login(e) => {
            items.push(Item::pass(REACH, format!("{} ({via})", r.target)));
            items.push(Item::fail(
                LOGIN,
                format!("as {}: {e}", r.user),
                "check MIKROTIK_USER and MIKROTIK_PASS, that the user's group has the api \
                 policy, and that the user's address= allows the container's address",
            ));
        }
    }
    items.push(version_item(&r.version));
    items.push(access_item(&r.access, &r.user));
    for l in &r.lists {
        items.push(list_item(l));
    }
    items.push(rules_item(&r.rules));
    items.push(log_item(&r.log));
    items.push(container_item(&r.container));
    items
}

/// The common handling of a step that did not answer: `✗` with the read-policy hint for a
/// failure or a timeout, `–` when not run.
fn not_done<T>(name: &str, step: &Step<T>, what: &str) -> Option<Item> {
    match step {
        Step::Done(_) => None,
        Step::Failed(e) => Some(Item::fail(
            name,
            format!("cannot read {what}: {e}"),
            "tikban's router user needs the read policy (group policy api,read,write)",
        )),
        Step::TimedOut(after) => Some(Item::fail(
            name,
            format!("{what}: no answer within {} s", after.as_secs()),
            "the router did not answer in time: is it overloaded? Run tikban check again",
        )),
        Step::NotRun(why) => Some(Item::skip(name, format!("not checked ({why})"))),
    }
}

fn version_item(step: &Step<String>) -> Item {
    const NAME: &str = "RouterOS version";
    if let Some(item) = not_done(NAME, step, "/system/resource") {
        return item;
    }
    let Step::Done(v) = step else {
        return Item::skip(NAME, "not checked");
    };
    match routeros_major(v) {
        Some(major) if major < 7 => Item::fail(
            NAME,
            short(v),
            "tikban runs as a RouterOS 7 container: upgrade to RouterOS 7 (7.15 or later for \
             the setup scripts)",
        ),
        _ => Item::pass(NAME, short(v)),
    }
}

/// How to give `user` a group of its own with exactly the policies tikban needs
/// (`docs/reference/routeros-containers.md` §5.4).
fn group_hint(user: &str) -> String {
    format!(
        "tikban's router user needs a group with the policies api,read,write: \
         /user/group/add name=tikban policy=api,read,write, then /user/set {user} group=tikban"
    )
}

fn access_item(access: &Access, user: &str) -> Item {
    match access {
        Access::WriteProbe(step) => {
            const NAME: &str = "address lists writable";
            let hint_policy = group_hint(user);
            match step {
                Step::Done(WriteProbe::Done { leftover }) => Item::pass(
                    NAME,
                    if *leftover {
                        "an earlier probe entry was still there and was removed"
                    } else {
                        "a probe entry was added and removed"
                    },
                ),
                Step::Done(WriteProbe::Refused(e)) => Item::fail(
                    NAME,
                    format!("adding a probe entry failed: {e}"),
                    hint_policy,
                ),
                Step::Done(WriteProbe::NotRemoved(e)) => Item::fail(
                    NAME,
                    format!("the probe entry was added but not removed: {e}"),
                    "it expires by itself within a minute; the user needs the write policy \
                     for remove as well, and nothing else may hold that entry",
                ),
                Step::Failed(e) => Item::fail(NAME, format!("the probe failed: {e}"), hint_policy),
                Step::TimedOut(after) => Item::fail(
                    NAME,
                    format!("no answer within {} s", after.as_secs()),
                    "the router did not answer in time: is it overloaded? Run tikban check again",
                ),
                Step::NotRun(why) => Item::skip(NAME, format!("not checked ({why})")),
            }
        }
        Access::Policy(step) => {
            const NAME: &str = "API user policy";
            match step {
                Step::Done(Some(p)) => {
                    let missing: Vec<&str> = NEEDED_POLICIES
                        .iter()
                        .copied()
                        .filter(|n| !grants(&p.policy, n))
                        .collect();
                    let group = short(&p.group);
                    if missing.is_empty() {
                        let granted = p
                            .policy
                            .split(',')
                            .filter(|x| !x.trim().starts_with('!') && !x.trim().is_empty())
                            .count();
                        let extra = if granted > NEEDED_POLICIES.len() {
                            " (and more than tikban needs)"
                        } else {
                            ""
                        };
                        Item::pass(NAME, format!("group {group} grants api,read,write{extra}"))
                    } else {
                        // The built-in groups are shared with other users: give tikban its own.
                        let hint = if matches!(p.group.as_str(), "read" | "write" | "full") {
                            group_hint(user)
                        } else {
                            format!(
                                "/user/group/set {group} policy=api,read,write (tikban check \
                                 confirms it with a probe entry)"
                            )
                        };
                        Item::fail(
                            NAME,
                            format!("group {group} lacks {}", missing.join(",")),
                            hint,
                        )
                    }
                }
                Step::Done(None) | Step::Failed(_) => Item::skip(
                    NAME,
                    "not readable by this user (tikban check tests it with a probe entry)",
                ),
                Step::TimedOut(_) => Item::skip(NAME, "not checked (no answer in time)"),
                Step::NotRun(why) => Item::skip(NAME, format!("not checked ({why})")),
            }
        }
    }
}

fn list_item(l: &ListFacts) -> Item {
    let Some(name) = &l.name else {
        return Item::skip(
            format!("{} list", l.family),
            format!("disabled ({}=false)", l.enabled_var),
        );
    };
    let title = format!("list {}", short(name));
    if let Some(item) = not_done(&title, &l.count, "the list") {
        return item;
    }
    let Step::Done(c) = &l.count else {
        return Item::skip(title, "not checked");
    };
    let total = plural(c.total, "entry", "entries");
    match c.owned {
        Some(Owned {
            count,
            complete: true,
        }) => Item::pass(title, format!("{total}, {count} of them tikban's")),
        Some(Owned {
            count,
            complete: false,
        }) => Item::pass(
            title,
            format!(
                "{total}, at least {count} of them tikban's (counting stopped at the deadline)"
            ),
        ),
        None => Item::pass(title, total),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn rules_item(rules: &[RuleFacts]) -> Item {
    const NAME: &str = "drop rules";
    if rules.is_empty() {
        return Item::skip(NAME, "not checked (no list enabled)");
    }
    let mut details = Vec::new();
    let mut hints = Vec::new();
    let mut failed = false;
    let mut skipped = None;
    for r in rules {
        let list = short(&r.list);
        let rows = match &r.rules {
            Step::Done(rows) => rows,
            other => {
                if let Some(item) = not_done(NAME, other, &format!("{}/firewall", r.base)) {
                    match item.mark {
                        Mark::Skip => skipped = Some(item),
                        _ => return item,
                    }
                }
                continue;
            }
        };
        match drop_status(rows, &r.list) {
            DropStatus::Enforced(at) => details.push(format!("{list}: {} {at}", r.base)),
            DropStatus::Missing => {
                failed = true;
                details.push(format!("{list}: no drop rule"));
                hints.push(format!(
                    "{}/firewall/raw/add chain=prerouting action=drop src-address-list={list}",
                    r.base
                ));
            }
            DropStatus::Disabled(rule) => {
                failed = true;
                details.push(format!("{list}: {} {} is disabled", r.base, rule.at()));
                hints.push(format!(
                    "{}/firewall/{}/enable {}",
                    r.base,
                    rule.table.name(),
                    short(&rule.id)
                ));
            }
            DropStatus::Shadowed { rule, by } => {
                failed = true;
                details.push(format!(
                    "{list}: {} {} comes after {} (accept with no matcher), which accepts \
                     every packet first",
                    r.base,
                    rule.at(),
                    short(&by.id)
                ));
                hints.push(format!(
                    "{}/firewall/{}/move {} destination={}",
                    r.base,
                    rule.table.name(),
                    short(&rule.id),
                    short(&by.id)
                ));
            }
        }
    }
    if let Some(item) = skipped
        && details.is_empty()
    {
        return item;
    }
    let detail = details.join("; ");
    if failed {
        Item::fail(
            NAME,
            detail,
            format!(
                "{} (routeros-scripts/tikban-setup.rsc adds raw prerouting drop rules)",
                hints.join("; ")
            ),
        )
    } else {
        Item::pass(NAME, detail)
    }
}

fn log_item(step: &Step<Option<u64>>) -> Item {
    const NAME: &str = "router log";
    match step {
        Step::Done(Some(n)) => {
            Item::pass(NAME, format!("readable ({})", plural(*n, "line", "lines")))
        }
        Step::Done(None) => Item::pass(NAME, "readable"),
        Step::Failed(e) => Item::fail(
            NAME,
            format!("cannot read /log: {e}"),
            "guard reads the router's log: the user needs the read policy (group policy \
             api,read,write)",
        ),
        other => not_done(NAME, other, "/log").unwrap_or_else(|| Item::skip(NAME, "not checked")),
    }
}

fn container_item(step: &Step<ContainerFacts>) -> Item {
    const NAME: &str = "container memory";
    let c = match step {
        Step::Done(c) => c,
        Step::NotRun(why) => return Item::skip(NAME, format!("not checked ({why})")),
        Step::Failed(_) | Step::TimedOut(_) => return Item::skip(NAME, "not reported"),
    };
    let mut parts = Vec::new();
    if let Some(rows) = &c.containers {
        let ours: Vec<&ContainerRow> = match rows.as_slice() {
            [one] => vec![one],
            _ => rows
                .iter()
                .filter(|r| {
                    c.hostname.is_some() && (r.hostname == c.hostname || r.name == c.hostname)
                })
                .collect(),
        };
        if let [row] = ours.as_slice() {
            let mut limits = Vec::new();
            if let Some(v) = &row.memory_high {
                limits.push(format!("memory-high={}", short(v)));
            }
            if let Some(v) = &row.memory_max {
                limits.push(format!("memory-max={}", short(v)));
            }
            if !limits.is_empty() {
                let name = row
                    .name
                    .as_deref()
                    .map(short)
                    .unwrap_or_else(|| "this".into());
                parts.push(format!("container {name}: {}", limits.join(", ")));
            }
        }
    }
    if let Some(config) = &c.config
        && !config.is_empty()
    {
        let text: Vec<String> = config
            .iter()
            .map(|(k, v)| format!("{}={}", short(k), short(v)))
            .collect();
        parts.push(format!("/container/config: {}", text.join(", ")));
    }
    if parts.is_empty() {
        Item::skip(NAME, "not reported")
    } else {
        Item::pass(NAME, parts.join("; "))
    }
}

#[cfg(test)]
mod tests;
