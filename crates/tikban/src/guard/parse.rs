//! RouterOS log messages → [`Event`]s. Sans-IO and allocation-free: events borrow the message.
//!
//! Input is one log entry as `/log/print` returns it: its `topics` (`system,error,critical`) and
//! its `message`. The shapes (docs/guard.md, "What the router writes"):
//!
//! - `login failure for user <user> from <address> via <service>`
//! - `user <user> logged in from <address> via <service>` and `… logged out …`
//! - `denied winbox/dude connect from <address>`
//! - firewall rules with `log=yes`: `[<prefix> ]<chain>: in:<if> out:<if>, …, proto <P>, <src>->
//!   <dst>, len <n>`
//!
//! **The user name is chosen by the peer.** It may be empty, hold spaces, ` from <address>`,
//! ` via x`, or a whole fake `with-extra-info` tail. Only text the router itself writes decides
//! the address:
//!
//! - without extra info, the message ends with ` from <address> via <service>` (the service is one
//!   word), so the address is the text after the **last** ` from `, right before the final
//!   ` via <service>`;
//! - with `with-extra-info` (RouterOS 7.19+), the router appends
//!   ` app=<service> duser=<user> outcome=<word> src=<address>`: the final ` src=` is the router's,
//!   and it wins. The user and service are then recovered only when the message decomposes
//!   exactly (the user appears twice, identical); otherwise they are reported unknown, never
//!   guessed.
//!
//! Addresses: IPv4, IPv6, IPv4-mapped IPv6 (taken as the IPv4 address, as the address lists hold
//! it), and IPv6 with a `%zone` suffix, whose zone is dropped: a RouterOS address list holds no
//! zone, and a link-local peer is on an attached segment where the bare address is what a rule
//! matches.
//!
//! Topics: a line with the `script` topic is never an event (`:log` writes any text a script
//! builds, possibly from peer input); a firewall event needs the `firewall` topic. Empty topics
//! mean "unknown" (BSD syslog carries none) and are accepted.

use std::net::IpAddr;

/// The message prefix of a failed login.
const FAILURE: &str = "login failure for user";
/// The message prefix of a refused Winbox or Dude connection (RouterOS 7.9+).
const DENIED: &str = "denied winbox/dude connect from ";
/// At most this many ` app=` positions are tried when decomposing an extra-info tail. A user
/// name can hold the marker any number of times; past the cap the event keeps the router's
/// `src=` and reports user and service unknown, so the work per message stays linear.
const MAX_EXTRA_CANDIDATES: usize = 8;

/// The RouterOS service a login used (`via <service>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `ssh`.
    Ssh,
    /// `telnet`.
    Telnet,
    /// `ftp`.
    Ftp,
    /// `winbox`.
    Winbox,
    /// `web` (WebFig, RouterOS 7).
    Web,
    /// `www`.
    Www,
    /// `www-ssl`.
    WwwSsl,
    /// `api`.
    Api,
    /// `api-ssl`.
    ApiSsl,
    /// `rest-api`.
    RestApi,
    /// `dude`.
    Dude,
    /// A `denied winbox/dude connect` line.
    WinboxDude,
    /// Any other word, or unknown.
    Other,
}

impl Service {
    /// Every service, in [`Service::index`] order.
    pub const ALL: [Service; 13] = [
        Service::Ssh,
        Service::Telnet,
        Service::Ftp,
        Service::Winbox,
        Service::Web,
        Service::Www,
        Service::WwwSsl,
        Service::Api,
        Service::ApiSsl,
        Service::RestApi,
        Service::Dude,
        Service::WinboxDude,
        Service::Other,
    ];

    /// The service of a `via` word; [`Service::Other`] for words RouterOS is not known to write.
    pub fn parse(word: &str) -> Service {
        match word {
            "ssh" => Service::Ssh,
            "telnet" => Service::Telnet,
            "ftp" => Service::Ftp,
            "winbox" => Service::Winbox,
            "web" => Service::Web,
            "www" => Service::Www,
            "www-ssl" => Service::WwwSsl,
            "api" => Service::Api,
            "api-ssl" => Service::ApiSsl,
            "rest-api" => Service::RestApi,
            "dude" => Service::Dude,
            "winbox/dude" => Service::WinboxDude,
            _ => Service::Other,
        }
    }

    /// The label for metrics and summaries (`ssh`, `www-ssl`, `other`).
    pub fn label(self) -> &'static str {
        match self {
            Service::Ssh => "ssh",
            Service::Telnet => "telnet",
            Service::Ftp => "ftp",
            Service::Winbox => "winbox",
            Service::Web => "web",
            Service::Www => "www",
            Service::WwwSsl => "www-ssl",
            Service::Api => "api",
            Service::ApiSsl => "api-ssl",
            Service::RestApi => "rest-api",
            Service::Dude => "dude",
            Service::WinboxDude => "winbox/dude",
            Service::Other => "other",
        }
    }

    /// Position in [`Service::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A login, failed login or logout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Login<'a> {
    /// The user name as the router printed it, peer-chosen; `None` when it could not be told
    /// apart from the rest of the message. Escape it before printing ([`super::escape`]).
    pub user: Option<&'a str>,
    /// The peer's address.
    pub source: IpAddr,
    /// The service.
    pub service: Service,
}

/// The transport protocol of a firewall log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `TCP` (or `proto 6`).
    Tcp,
    /// `UDP` (or `proto 17`).
    Udp,
    /// `ICMP` (or `proto 1`).
    Icmp,
    /// Another protocol given by number (`proto 47` is GRE).
    Number(u8),
    /// Another protocol given by name.
    Other,
}

/// A packet a firewall rule logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// The rule's `log-prefix`, empty when unset (set by the router's administrator).
    pub prefix: &'a str,
    /// The chain (`input`, `forward`, …).
    pub chain: &'a str,
    /// The protocol.
    pub protocol: Protocol,
    /// Source address.
    pub src: IpAddr,
    /// Source port, when the protocol has ports.
    pub src_port: Option<u16>,
    /// Destination address (before NAT, as the rule saw it).
    pub dst: IpAddr,
    /// Destination port, when the protocol has ports.
    pub dst_port: Option<u16>,
}

/// One log entry guard understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// `login failure for user … from … via …`.
    LoginFailure(Login<'a>),
    /// `user … logged in from … via …`.
    LoggedIn(Login<'a>),
    /// `user … logged out from … via …`.
    LoggedOut(Login<'a>),
    /// `denied winbox/dude connect from …`.
    Denied {
        /// The peer's address.
        source: IpAddr,
    },
    /// A firewall rule's log line.
    Firewall(Packet<'a>),
}

impl<'a> Event<'a> {
    /// The address the event is about (the packet's source for a firewall line).
    pub fn source(&self) -> IpAddr {
        match self {
            Event::LoginFailure(l) | Event::LoggedIn(l) | Event::LoggedOut(l) => l.source,
            Event::Denied { source } => *source,
            Event::Firewall(p) => p.src,
        }
    }

    /// The same event with the source replaced, for a login, logout, failure or denied line
    /// whose address arrived in a separate trusted field (CEF `src=`). Firewall lines keep
    /// theirs.
    pub fn with_source(self, source: IpAddr) -> Event<'a> {
        match self {
            Event::LoginFailure(l) => Event::LoginFailure(Login { source, ..l }),
            Event::LoggedIn(l) => Event::LoggedIn(Login { source, ..l }),
            Event::LoggedOut(l) => Event::LoggedOut(Login { source, ..l }),
            Event::Denied { .. } => Event::Denied { source },
            fw @ Event::Firewall(_) => fw,
        }
    }
}

/// True when the comma-separated `topics` hold `topic`.
pub fn has_topic(topics: &str, topic: &str) -> bool {
    topics
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t == topic.as_bytes())
}

/// Whether `topics` hold `script` and `firewall`, in one pass.
fn topic_flags(topics: &str) -> (bool, bool) {
    let (mut script, mut firewall) = (false, false);
    for t in topics.as_bytes().split(|&b| b == b',') {
        script |= t == b"script";
        firewall |= t == b"firewall";
    }
    (script, firewall)
}

/// `text` split at its last space.
fn split_last_space(text: &str) -> Option<(&str, &str)> {
    // A byte scan: these texts are short, and a char searcher costs more to set up.
    let i = text.as_bytes().iter().rposition(|&b| b == b' ')?;
    Some((&text[..i], &text[i + 1..]))
}

/// The first position of `needle` in `text` at or after `from`. For the short ASCII markers
/// of firewall lines: a byte scan for the first byte, then a compare (cheaper than building a
/// substring searcher for every line).
fn find_at(text: &str, needle: &str, from: usize) -> Option<usize> {
    let (b, n) = (text.as_bytes(), needle.as_bytes());
    let first = *n.first()?;
    let mut i = from;
    while i + n.len() <= b.len() {
        let at = i + b[i..].iter().position(|&c| c == first)?;
        if b.get(at..at + n.len()) == Some(n) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// Parses one log entry. `None` for anything that is not one of the shapes above, including
/// every line whose topics include `script`.
pub fn parse<'a>(topics: &str, message: &'a str) -> Option<Event<'a>> {
    let (script, firewall) = topic_flags(topics);
    if script {
        return None;
    }
    match message.as_bytes().first()? {
        b'l' | b'u' | b'd' => {
            if let Some(ev) = parse_account(message) {
                return Some(ev);
            }
        }
        _ => {}
    }
    if topics.is_empty() || firewall {
        parse_firewall(message).map(Event::Firewall)
    } else {
        None
    }
}

/// Which of the account messages a line starts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Failure,
    User,
    Denied,
}

fn kind_of(message: &str) -> Option<Kind> {
    if message.starts_with(FAILURE) {
        Some(Kind::Failure)
    } else if message.starts_with(DENIED) {
        Some(Kind::Denied)
    } else if message.starts_with("user") {
        Some(Kind::User)
    } else {
        None
    }
}

/// Login failures, logins, logouts and denied connections, with or without the extra-info tail.
fn parse_account(message: &str) -> Option<Event<'_>> {
    let kind = kind_of(message)?;
    match split_extra(message) {
        Some((head, src)) => Some(match decompose(kind, head) {
            Some(ev) => ev.with_source(src),
            None => unknown_details(kind, head, src)?,
        }),
        None => {
            let (ev, _) = parse_plain(kind, message)?;
            Some(ev)
        }
    }
}

/// Splits ` outcome=<word> src=<address>` off the end. `None` when the message does not end
/// that way (no extra info).
fn split_extra(message: &str) -> Option<(&str, IpAddr)> {
    // The address and the outcome word hold no space: each is the text after a last space.
    let (head, src) = split_last_space(message)?;
    let src = parse_ip(src.strip_prefix("src=")?)?;
    let (head, outcome) = split_last_space(head)?;
    if outcome.strip_prefix("outcome=")?.is_empty() {
        return None;
    }
    Some((head, src))
}

/// `head` is `<base> app=<service> duser=<user>`, where `<base>` is the plain message. Tries the
/// first few ` app=` positions; accepts one only when `<base>` parses, its service word equals
/// `app=`, and its user equals `duser=`.
fn decompose(kind: Kind, head: &str) -> Option<Event<'_>> {
    for (at, _) in head.match_indices(" app=").take(MAX_EXTRA_CANDIDATES) {
        let base = &head[..at];
        let Some((app, duser)) = head[at + 5..].split_once(" duser=") else {
            continue;
        };
        if app.is_empty() || app.contains(' ') {
            continue;
        }
        let Some((ev, word)) = parse_plain(kind, base) else {
            continue;
        };
        if word != app {
            continue;
        }
        let user_matches = match ev {
            Event::LoginFailure(l) | Event::LoggedIn(l) | Event::LoggedOut(l) => {
                l.user == Some(duser)
            }
            _ => true,
        };
        if user_matches {
            return Some(ev);
        }
    }
    None
}

/// The event of an extra-info message that did not decompose: the router's `src=` address,
/// unknown user and service.
fn unknown_details(kind: Kind, head: &str, source: IpAddr) -> Option<Event<'_>> {
    let login = Login {
        user: None,
        source,
        service: Service::Other,
    };
    Some(match kind {
        Kind::Failure => Event::LoginFailure(login),
        Kind::Denied => Event::Denied { source },
        // Which of the two the router wrote is in its fixed text after the user; a user name
        // can hold both phrases, so the last one wins, as the router's comes after the user.
        Kind::User => match (
            head.rfind(" logged in from "),
            head.rfind(" logged out from "),
        ) {
            (Some(i), Some(o)) if i > o => Event::LoggedIn(login),
            (Some(_), None) => Event::LoggedIn(login),
            (_, Some(_)) => Event::LoggedOut(login),
            (None, None) => return None,
        },
    })
}

/// A message without extra info. Returns the event and the `via` word.
fn parse_plain(kind: Kind, message: &str) -> Option<(Event<'_>, &str)> {
    if kind == Kind::Denied {
        let source = parse_ip(message.strip_prefix(DENIED)?)?;
        return Some((Event::Denied { source }, "winbox/dude"));
    }
    // From the end: ` from <address> via <word>`, where neither the word nor the address holds
    // a space. So the word follows the last space, and the address the last space before
    // ` via`: the same split as the last ` via ` and the last ` from ` before it.
    let (head, word) = split_last_space(message)?;
    if word.is_empty() {
        return None;
    }
    let (before, addr) = split_last_space(head.strip_suffix(" via")?)?;
    let source = parse_ip(addr)?;
    let before = before.strip_suffix(" from")?;
    let service = Service::parse(word);
    let event = match kind {
        Kind::Failure => {
            let user = user_text(before.strip_prefix(FAILURE)?)?;
            Event::LoginFailure(Login {
                user: Some(user),
                source,
                service,
            })
        }
        Kind::User => {
            let rest = before.strip_prefix("user")?;
            let (user, logged_in) = if let Some(u) = rest.strip_suffix(" logged in") {
                (u, true)
            } else {
                (rest.strip_suffix(" logged out")?, false)
            };
            let login = Login {
                user: Some(user_text(user)?),
                source,
                service,
            };
            if logged_in {
                Event::LoggedIn(login)
            } else {
                Event::LoggedOut(login)
            }
        }
        Kind::Denied => return None,
    };
    Some((event, word))
}

/// The user between a fixed word and the fixed text after it: empty, or one space then the name
/// (which may be empty too: `for user  from` has two spaces).
fn user_text(between: &str) -> Option<&str> {
    if between.is_empty() {
        Some("")
    } else {
        between.strip_prefix(' ')
    }
}

/// An address as RouterOS prints it in a log message. IPv4-mapped IPv6 becomes IPv4; an IPv6
/// `%zone` (1–32 characters of letters, digits, `.`, `_`, `-`) is dropped.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    // The longest textual IPv6 address is 45 characters; with a zone, 78.
    if text.is_empty() || text.len() > 78 {
        return None;
    }
    let percent = text.as_bytes().iter().position(|&b| b == b'%');
    let ip = match percent.map(|i| (&text[..i], &text[i + 1..])) {
        Some((addr, zone)) => {
            let zone_ok = !zone.is_empty()
                && zone.len() <= 32
                && zone
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !zone_ok {
                return None;
            }
            IpAddr::V6(addr.parse().ok()?)
        }
        None => match parse_ipv4(text.as_bytes()) {
            Some(v4) => return Some(IpAddr::V4(v4)),
            None => text.parse().ok()?,
        },
    };
    Some(ip.to_canonical())
}

/// Dotted-quad IPv4, the common case, without the general parser: four decimal octets of at
/// most three digits, no leading zero, at most 255, as `std` accepts them (checked against it
/// in the tests). `None` sends the text to the general parser.
fn parse_ipv4(text: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let mut n: u16 = 0;
        for &d in part {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u16::from(d - b'0');
        }
        *octet = u8::try_from(n).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(octets.into())
}

/// A firewall log line: `[<prefix> ]<chain>: in:<if> out:<if>, [connection-state:<s> ][src-mac
/// <mac>, ]proto <P>[ (<flags>)], <src>-><dst>, len <n>[, …]`.
fn parse_firewall(message: &str) -> Option<Packet<'_>> {
    let at = find_at(message, ": in:", 0)?;
    let (prefix, chain) = match message[..at].rsplit_once(' ') {
        Some((p, c)) => (p, c),
        None => ("", &message[..at]),
    };
    if chain.is_empty() {
        return None;
    }
    let tail = &message[at + 5..];
    let mut from = 0;
    let proto_at = loop {
        let i = find_at(tail, "proto ", from)?;
        if i > 0 && matches!(tail.as_bytes()[i - 1], b' ' | b',') {
            break i;
        }
        from = i + 1;
    };
    let after = &tail[proto_at + 6..];
    let end = after.find([' ', ',']).unwrap_or(after.len());
    let protocol = match &after[..end] {
        "TCP" | "6" => Protocol::Tcp,
        "UDP" | "17" => Protocol::Udp,
        "ICMP" | "1" => Protocol::Icmp,
        name => match name.parse::<u8>() {
            Ok(n) => Protocol::Number(n),
            Err(_) if name.is_empty() => return None,
            Err(_) => Protocol::Other,
        },
    };
    let mut rest = &after[end..];
    // TCP flags `(SYN)`, ICMP `(type 3, code 3)`: the parenthesis may hold a comma.
    if let Some(r) = rest.strip_prefix(" (") {
        rest = &r[r.find(')')? + 1..];
    }
    let rest = rest.strip_prefix(", ")?;
    let pair = &rest[..find_at(rest, ", ", 0).unwrap_or(rest.len())];
    let (src, dst) = pair.split_once("->")?;
    let (src, src_port) = parse_endpoint(src)?;
    let (dst, dst_port) = parse_endpoint(dst)?;
    Some(Packet {
        prefix,
        chain,
        protocol,
        src,
        src_port,
        dst,
        dst_port,
    })
}

/// `1.2.3.4:80`, `[2001:db8::1]:443`, `1.2.3.4`, `2001:db8::1`.
fn parse_endpoint(text: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let ip = parse_ip(addr)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((ip, port));
    }
    if let Some(ip) = parse_ip(text) {
        return Some((ip, None));
    }
    let (addr, port) = text.rsplit_once(':')?;
    match parse_ip(addr)? {
        ip @ IpAddr::V4(_) => Some((ip, Some(port.parse().ok()?))),
        IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS: &str = "system,error,critical";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn failure(user: Option<&'static str>, source: &str, service: Service) -> Event<'static> {
        Event::LoginFailure(Login {
            user,
            source: ip(source),
            service,
        })
    }

    #[test]
    fn login_failure_for_every_service() {
        for word in [
            "ssh", "winbox", "web", "www", "www-ssl", "api", "api-ssl", "ftp", "telnet",
            "rest-api", "dude", "gopher",
        ] {
            let m = format!("login failure for user admin from 192.168.88.17 via {word}");
            let ev = parse(SYS, &m).unwrap();
            assert_eq!(
                ev,
                failure(Some("admin"), "192.168.88.17", Service::parse(word)),
                "{m}"
            );
        }
        assert_eq!(Service::parse("gopher"), Service::Other);
        assert_eq!(Service::parse("www-ssl").label(), "www-ssl");
    }

    #[test]
    fn empty_and_spaced_user_names() {
        // fail2ban's test file: two spaces for the empty user.
        assert_eq!(
            parse(
                SYS,
                "login failure for user  from 2001:470:1:c84::24 via ssh"
            ),
            Some(failure(Some(""), "2001:470:1:c84::24", Service::Ssh))
        );
        assert_eq!(
            parse(SYS, "login failure for user from 10.0.0.1 via ssh"),
            Some(failure(Some(""), "10.0.0.1", Service::Ssh))
        );
        assert_eq!(
            parse(
                SYS,
                "login failure for user user with space from 1.2.3.4 via ssh"
            ),
            Some(failure(Some("user with space"), "1.2.3.4", Service::Ssh))
        );
    }

    #[test]
    fn a_user_name_cannot_choose_the_address() {
        let cases = [
            ("x from 6.6.6.6 via ssh", "10.0.0.1"),
            ("from 6.6.6.6", "10.0.0.1"),
            (" from 6.6.6.6 via winbox ", "10.0.0.1"),
            ("a app=ssh duser=a outcome=failure src=6.6.6.6", "10.0.0.1"),
            (
                "a from 6.6.6.6 via ssh app=ssh duser=a outcome=failure src=6.6.6.6",
                "10.0.0.1",
            ),
        ];
        for (user, real) in cases {
            let m = format!("login failure for user {user} from {real} via ssh");
            let ev = parse(SYS, &m).unwrap();
            assert_eq!(ev.source(), ip(real), "{m}");
            assert_eq!(ev, failure(Some(user), real, Service::Ssh), "{m}");
        }
    }

    #[test]
    fn extra_info_src_wins_and_details_are_recovered() {
        let m = "login failure for user guest from 192.168.88.17 via ssh app=ssh duser=guest \
                 outcome=failure src=192.168.88.17";
        assert_eq!(
            parse(SYS, m),
            Some(failure(Some("guest"), "192.168.88.17", Service::Ssh))
        );
        // A user holding a fake tail: the router's final src= still decides, and the real
        // decomposition (the user twice) is found.
        let user = "a from 6.6.6.6 via winbox app=winbox duser=b outcome=failure src=6.6.6.6";
        let m = format!(
            "login failure for user {user} from 10.0.0.1 via ssh app=ssh duser={user} \
             outcome=failure src=10.0.0.1"
        );
        assert_eq!(
            parse(SYS, &m),
            Some(failure(Some(user), "10.0.0.1", Service::Ssh))
        );
    }

    #[test]
    fn extra_info_that_does_not_decompose_keeps_src_and_drops_details() {
        // duser differs from the user in the message: no guess.
        let m = "login failure for user a from 10.0.0.1 via ssh app=ssh duser=b outcome=failure \
                 src=10.0.0.1";
        assert_eq!(
            parse(SYS, m),
            Some(failure(None, "10.0.0.1", Service::Other))
        );
        // More fake app= markers than the cap: still the router's src.
        let user = " app=ssh duser=".repeat(20);
        let m = format!(
            "login failure for user {user} from 10.0.0.1 via ssh app=ssh duser={user} \
             outcome=failure src=10.0.0.2"
        );
        assert_eq!(parse(SYS, &m).unwrap().source(), ip("10.0.0.2"));
    }

    #[test]
    fn logins_logouts_and_denied() {
        let login = |user: &'static str, source: &str, service| Login {
            user: Some(user),
            source: ip(source),
            service,
        };
        assert_eq!(
            parse(
                "system,info,account",
                "user admin logged in from 10.1.101.212 via winbox"
            ),
            Some(Event::LoggedIn(login(
                "admin",
                "10.1.101.212",
                Service::Winbox
            )))
        );
        assert_eq!(
            parse(
                "system,info,account",
                "user admin logged out from 10.1.101.212 via winbox"
            ),
            Some(Event::LoggedOut(login(
                "admin",
                "10.1.101.212",
                Service::Winbox
            )))
        );
        assert_eq!(
            parse(
                "system,info,account",
                "user x logged in from 6.6.6.6 via ssh logged out from 10.0.0.9 via api"
            ),
            Some(Event::LoggedOut(login(
                "x logged in from 6.6.6.6 via ssh",
                "10.0.0.9",
                Service::Api
            )))
        );
        assert_eq!(
            parse(
                "system,error",
                "denied winbox/dude connect from 203.0.113.9"
            ),
            Some(Event::Denied {
                source: ip("203.0.113.9")
            })
        );
        assert_eq!(parse("", "user admin logged in via ssh"), None);
    }

    #[test]
    fn script_topics_never_make_events() {
        let m = "login failure for user admin from 10.0.0.1 via ssh";
        assert!(parse("system,error,critical", m).is_some());
        assert!(parse("", m).is_some());
        assert_eq!(parse("script,info", m), None);
        let fw = "input: in:ether1 out:(unknown 0), proto TCP (SYN), 1.2.3.4:5->6.7.8.9:22, len 40";
        assert!(parse("firewall,info", fw).is_some());
        assert_eq!(parse("script,info", fw), None);
        assert_eq!(parse("dhcp,info", fw), None);
    }

    #[test]
    fn addresses_with_zone_and_mapped_v4() {
        assert_eq!(parse_ip("fe80::1%ether1"), Some(ip("fe80::1")));
        assert_eq!(parse_ip("::ffff:192.0.2.1"), Some(ip("192.0.2.1")));
        assert_eq!(parse_ip("fe80::1%"), None);
        assert_eq!(parse_ip("fe80::1%a b"), None);
        assert_eq!(parse_ip("1.2.3.4%eth0"), None);
        assert_eq!(parse_ip("1.2.3.4 "), None);
        assert_eq!(parse_ip("00:0c:42:04:4d:7a"), None);
        assert_eq!(
            parse(SYS, "login failure for user a from fe80::5%bridge via ssh")
                .unwrap()
                .source(),
            ip("fe80::5")
        );
    }

    #[test]
    fn firewall_shapes() {
        fn p(m: &str) -> Packet<'_> {
            match parse("firewall,info", m) {
                Some(Event::Firewall(p)) => p,
                other => panic!("{m}: {other:?}"),
            }
        }
        let a = p(
            "drop-in input: in:ether1-WAN out:(unknown 0), connection-state:new src-mac \
                   00:17:10:88:bc:02, proto UDP, 186.26.78.68:44355->81.82.202.145:53, len 65",
        );
        assert_eq!(
            (a.prefix, a.chain, a.protocol, a.src, a.dst, a.dst_port),
            (
                "drop-in",
                "input",
                Protocol::Udp,
                ip("186.26.78.68"),
                ip("81.82.202.145"),
                Some(53)
            )
        );
        let b = p(
            "input: in:WAN out:(unknown 0), connection-state:new src-mac e4:41:64:93:a8:0f, \
                   proto TCP (SYN), [2001:db8:1234::1]:40384->[2001:db8:1234::2]:20461, len 24",
        );
        assert_eq!(
            (b.prefix, b.protocol, b.src, b.src_port, b.dst_port),
            (
                "",
                Protocol::Tcp,
                ip("2001:db8:1234::1"),
                Some(40384),
                Some(20461)
            )
        );
        let c = p(
            "input: in:WAN out:(unknown 0), connection-state:new proto TCP (SYN), \
                   192.0.2.1:56282->192.0.2.2:36228, len 52",
        );
        assert_eq!((c.src, c.dst_port), (ip("192.0.2.1"), Some(36228)));
        let d = p("gre input: in:pppoe-out1 out:(unknown 0), proto 47, \
                   82.132.216.62->198.51.100.177, len 54");
        assert_eq!(
            (d.protocol, d.src, d.src_port, d.dst_port),
            (Protocol::Number(47), ip("82.132.216.62"), None, None)
        );
        let e = p(
            "input: in:ether1 out:(unknown 0), proto ICMP (type 8, code 0), \
                   203.0.113.5->192.0.2.1, len 84",
        );
        assert_eq!(
            (e.protocol, e.src, e.dst_port),
            (Protocol::Icmp, ip("203.0.113.5"), None)
        );
        let f = p(
            "input: in:ether1 out:(none), src-mac 00:0c:42:04:4d:7a, proto UDP, \
                   10.1.101.1:520->10.1.101.255:520, len 452",
        );
        assert_eq!((f.src, f.dst_port), (ip("10.1.101.1"), Some(520)));
        // A log prefix with spaces and colons stays the prefix.
        let g = p(
            "my drop: x input: in:e1 out:(unknown 0), proto TCP (SYN), 1.1.1.1:2->3.3.3.3:4, \
                   NAT (1.1.1.1:2->5.5.5.5:2)->3.3.3.3:4, len 60",
        );
        assert_eq!(
            (g.prefix, g.chain, g.dst, g.dst_port),
            ("my drop: x", "input", ip("3.3.3.3"), Some(4))
        );
    }

    #[test]
    fn the_ipv4_fast_path_agrees_with_std() {
        let cases = [
            "0.0.0.0",
            "255.255.255.255",
            "1.2.3.4",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "1..2.3",
            "1.2.3.4 ",
            "a.b.c.d",
            "1000.1.1.1",
            "",
            ".",
            "1.2.3.",
            "00.0.0.0",
            "10.0.0.010",
            "+1.2.3.4",
            "1.2.3.-4",
        ];
        for c in cases {
            let std: Option<std::net::Ipv4Addr> = c.parse().ok();
            assert_eq!(parse_ipv4(c.as_bytes()), std, "{c:?}");
        }
        for n in (0..=u32::MAX).step_by(7_919_993) {
            let ip = std::net::Ipv4Addr::from(n);
            assert_eq!(parse_ipv4(ip.to_string().as_bytes()), Some(ip));
        }
    }

    #[test]
    fn find_at_finds_markers_and_respects_the_start() {
        assert_eq!(find_at("a: in: b: in:", ": in:", 0), Some(1));
        assert_eq!(find_at("a: in: b: in:", ": in:", 2), Some(8));
        assert_eq!(find_at("a: i", ": in:", 0), None);
        assert_eq!(find_at("", "x", 0), None);
        assert_eq!(find_at("é proto x", "proto ", 0), Some(3));
        assert_eq!(find_at("abc", "abc", 1), None);
    }

    #[test]
    fn rejects_other_lines() {
        for m in [
            "",
            "log rule changed by admin",
            "login failure for user admin from 192.168.88.6 via",
            "login failure for user admin from 192.168.88.6 via web now",
            "login failure for user admin from nowhere via ssh",
            "login failure for useradmin from 1.2.3.4 via ssh",
            "denied winbox/dude connect from ",
            "denied winbox/dude connect from 1.2.3.4 extra",
            "user admin logged sideways from 1.2.3.4 via ssh",
            "input: in:ether1 out:(none), proto TCP, 1.2.3.4->",
            "input: in:ether1 out:(none), proto , 1.2.3.4->5.6.7.8, len 1",
            "input: in:ether1 out:(none), proto TCP (SYN, 1.2.3.4->5.6.7.8",
            ": in:x proto TCP, 1.1.1.1:1->2.2.2.2:2",
        ] {
            assert_eq!(parse("", m), None, "{m:?}");
        }
    }
}
