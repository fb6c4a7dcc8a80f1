//! The alert a watcher pushes to LAPI (`POST /v1/alerts`), as the swagger `Alert`, `Event`,
//! `Decision` and `Source` definitions describe it (`pkg/models/localapi_swagger.yaml`, the same
//! required fields from 1.4.6 to 1.7).
//!
//! Build one with [`Alert::ban`] from plain parts ([`BanAlert`]); add the log evidence with
//! [`Alert::add_event`]. Text from outside (router log lines: user names, addresses) is escaped
//! and truncated, and the number of events is capped, so an alert stays small whatever the log
//! holds.
//!
//! What LAPI does with it (`docs/reference/crowdsec-lapi.md` §10):
//! - With `decisions` present, LAPI stores them as given (no profile is applied) and every
//!   bouncer's stream carries them, with the origin given here (`crowdsec`).
//! - A decision lasts from the alert's **`stop_at`** plus its `duration` (seen on 1.4.6), so
//!   `stop_at` comes from the sender's clock: a router clock far behind LAPI's makes a decision
//!   that is already expired. See [`Watcher::clock_offset`](crate::Watcher::clock_offset).
//! - An empty `scenario_hash` marks a *custom* scenario: an enrolled LAPI shares it with the
//!   Central API only when the console option `share_custom` is on (its default).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::Value;
use crate::text::peer_text;
use crate::timefmt::{format_rfc3339, go_duration_secs};

/// Most events kept in one alert (the evidence; `events_count` still counts them all).
pub const MAX_ALERT_EVENTS: usize = 10;
/// Most `key`/`value` pairs kept in one event.
pub const MAX_EVENT_META: usize = 16;
/// Longest meta key kept, in characters (after escaping).
pub const MAX_META_KEY_CHARS: usize = 64;
/// Longest meta value kept, in characters (after escaping); longer ones end with `…`.
pub const MAX_META_VALUE_CHARS: usize = 256;
/// Longest scenario name, scenario version and message, in characters.
pub const MAX_ALERT_TEXT_CHARS: usize = 512;

/// Decision origin of alerts from a detection engine; the stream carries it to every bouncer.
pub const ORIGIN_CROWDSEC: &str = "crowdsec";

/// One alert, as LAPI's swagger `Alert` (the fields a watcher sends).
///
/// Field names and JSON shapes are LAPI's; every field the swagger marks required is always
/// present. Build it with [`Alert::ban`] rather than by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Scenario name, `author/name`, e.g. `tikban/routeros-login-bf`.
    pub scenario: String,
    /// Hash of the scenario file; empty for a scenario that is not from the hub ("custom").
    pub scenario_hash: String,
    /// Scenario version, e.g. `0.1`.
    pub scenario_version: String,
    /// Human-readable summary.
    pub message: String,
    /// How many events led to the alert (all of them, not only those in `events`).
    pub events_count: i32,
    /// First event, RFC 3339.
    pub start_at: String,
    /// Last event, RFC 3339. LAPI starts the decisions' durations from here.
    pub stop_at: String,
    /// Bucket capacity (events allowed before the alert).
    pub capacity: i32,
    /// Bucket leak speed, Go duration text (`10s`).
    pub leakspeed: String,
    /// Simulation mode: LAPI stores simulated decisions but bouncers ignore them. Always false
    /// here.
    pub simulated: bool,
    /// Whether the alert carries remediation (its decisions).
    pub remediation: bool,
    /// The attacker.
    pub source: AlertSource,
    /// Evidence: at most [`MAX_ALERT_EVENTS`] events.
    pub events: Vec<AlertEvent>,
    /// The decisions to apply; when empty LAPI's profiles decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<AlertDecision>,
    /// Alert-level context (`key`/`value`), shown by `cscli alerts inspect`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meta: Vec<MetaItem>,
}

/// The swagger `Source`: what the alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertSource {
    /// `Ip` or `Range`.
    pub scope: String,
    /// The address or network, canonical text.
    pub value: String,
    /// The address, for scope `Ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The network, for scope `Range`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
}

/// The swagger `Event`: one piece of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// When it happened, RFC 3339.
    pub timestamp: String,
    /// What happened, as `key`/`value` pairs (crowdsec uses keys such as `source_ip`,
    /// `target_user`, `service`, `log_type`).
    pub meta: Vec<MetaItem>,
}

/// One `key`/`value` pair of the swagger `Meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaItem {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// The swagger `Decision` as a watcher sends it (no `id`, `until` or `uuid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertDecision {
    /// Go duration text, counted from the alert's `stop_at` (e.g. `4h0m0s`).
    pub duration: String,
    /// Origin, [`ORIGIN_CROWDSEC`].
    pub origin: String,
    /// The alert's scenario.
    pub scenario: String,
    /// `Ip` or `Range`.
    pub scope: String,
    /// `ban`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The address or network, canonical text.
    pub value: String,
}

/// The plain parts of a ban, for [`Alert::ban`]: no knowledge of the LAPI schema needed.
#[derive(Debug, Clone)]
pub struct BanAlert<'a> {
    /// Scenario name, `author/name` (e.g. `tikban/routeros-login-bf`).
    pub scenario: &'a str,
    /// Scenario version (e.g. `0.1`).
    pub scenario_version: &'a str,
    /// The attacker: an address (scope `Ip`) or a network (scope `Range`).
    pub source: Value,
    /// How long the ban lasts, counted from `last_seen` (whole seconds, at least 1 s).
    pub duration: Duration,
    /// First event.
    pub first_seen: SystemTime,
    /// Last event; LAPI counts the ban's duration from here.
    pub last_seen: SystemTime,
    /// How many events (failed logins…) led to the ban.
    pub events_count: u32,
    /// Events allowed before the ban (the bucket capacity).
    pub capacity: u32,
    /// The rate at which the bucket forgets one event.
    pub leakspeed: Duration,
    /// A summary; `None` builds crowdsec's usual one
    /// (`Ip 192.0.2.7 performed 'tikban/routeros-login-bf' (6 events over 30s) at …`).
    pub message: Option<&'a str>,
}

fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Text from outside made safe and bounded: control characters escaped, at most `max`
/// characters after escaping, plus `…` when cut.
fn bounded(text: &str, max: usize) -> String {
    let t = peer_text(text, None, max);
    if t.chars().count() <= max + 1 {
        return t;
    }
    let mut cut: String = t.chars().take(max).collect();
    cut.push('…');
    cut
}

impl Alert {
    /// An alert with one `ban` decision on `parts.source` (origin `crowdsec`), no events yet,
    /// `simulated` false, `remediation` true, `scenario_hash` empty (a custom scenario).
    pub fn ban(parts: &BanAlert<'_>) -> Alert {
        let (first, last) = if parts.first_seen <= parts.last_seen {
            (parts.first_seen, parts.last_seen)
        } else {
            (parts.last_seen, parts.first_seen)
        };
        let scenario = bounded(parts.scenario, MAX_ALERT_TEXT_CHARS);
        let value = parts.source.to_string();
        let (scope, ip, range) = if parts.source.is_network() {
            ("Range", None, Some(value.clone()))
        } else {
            ("Ip", Some(value.clone()), None)
        };
        let stop_at = format_rfc3339(last);
        let message = match parts.message {
            Some(m) => bounded(m, MAX_ALERT_TEXT_CHARS),
            None => {
                let span = last.duration_since(first).unwrap_or_default().as_secs();
                format!(
                    "{scope} {value} performed '{scenario}' ({} events over {span}s) at {stop_at}",
                    parts.events_count
                )
            }
        };
        Alert {
            decisions: vec![AlertDecision {
                duration: go_duration_secs(parts.duration),
                origin: ORIGIN_CROWDSEC.into(),
                scenario: scenario.clone(),
                scope: scope.into(),
                kind: "ban".into(),
                value: value.clone(),
            }],
            scenario,
            scenario_hash: String::new(),
            scenario_version: bounded(parts.scenario_version, MAX_ALERT_TEXT_CHARS),
            message,
            events_count: clamp_i32(parts.events_count),
            start_at: format_rfc3339(first),
            stop_at,
            capacity: clamp_i32(parts.capacity),
            leakspeed: go_duration_secs(parts.leakspeed),
            simulated: false,
            remediation: true,
            source: AlertSource {
                scope: scope.into(),
                value,
                ip,
                range,
            },
            events: Vec::new(),
            meta: Vec::new(),
        }
    }

    /// Adds one piece of evidence: its time and `key`/`value` pairs (at most
    /// [`MAX_EVENT_META`] pairs kept; keys and values escaped and truncated to
    /// [`MAX_META_KEY_CHARS`] / [`MAX_META_VALUE_CHARS`]). Returns false, adding nothing, once
    /// the alert holds [`MAX_ALERT_EVENTS`] events.
    pub fn add_event(&mut self, at: SystemTime, meta: &[(&str, &str)]) -> bool {
        if self.events.len() >= MAX_ALERT_EVENTS {
            return false;
        }
        self.events.push(AlertEvent {
            timestamp: format_rfc3339(at),
            meta: meta_items(meta),
        });
        true
    }

    /// Sets the alert-level context (same bounds as an event's meta).
    pub fn set_meta(&mut self, meta: &[(&str, &str)]) {
        self.meta = meta_items(meta);
    }

    /// The alert as the JSON LAPI reads.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs of strings, numbers and bools cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn meta_items(meta: &[(&str, &str)]) -> Vec<MetaItem> {
    meta.iter()
        .take(MAX_EVENT_META)
        .map(|(k, v)| MetaItem {
            key: bounded(k, MAX_META_KEY_CHARS),
            value: bounded(v, MAX_META_VALUE_CHARS),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::from_unix;

    fn parts(source: &str) -> BanAlert<'static> {
        BanAlert {
            scenario: "tikban/routeros-login-bf",
            scenario_version: "0.1",
            source: Value::parse(source).unwrap(),
            duration: Duration::from_secs(4 * 3600),
            first_seen: from_unix(1_796_163_480),
            last_seen: from_unix(1_796_163_510),
            events_count: 6,
            capacity: 5,
            leakspeed: Duration::from_secs(10),
            message: None,
        }
    }

    #[test]
    fn a_ban_has_every_required_field_in_lapi_shape() {
        let mut a = Alert::ban(&parts("192.0.2.7"));
        assert!(a.add_event(
            from_unix(1_796_163_480),
            &[("source_ip", "192.0.2.7"), ("target_user", "admin")]
        ));
        let v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        let expected = serde_json::json!({
            "scenario": "tikban/routeros-login-bf",
            "scenario_hash": "",
            "scenario_version": "0.1",
            "message": "Ip 192.0.2.7 performed 'tikban/routeros-login-bf' (6 events over 30s) at 2026-12-01T22:18:30Z",
            "events_count": 6,
            "start_at": "2026-12-01T22:18:00Z",
            "stop_at": "2026-12-01T22:18:30Z",
            "capacity": 5,
            "leakspeed": "10s",
            "simulated": false,
            "remediation": true,
            "source": {"scope": "Ip", "value": "192.0.2.7", "ip": "192.0.2.7"},
            "events": [{"timestamp": "2026-12-01T22:18:00Z", "meta": [
                {"key": "source_ip", "value": "192.0.2.7"},
                {"key": "target_user", "value": "admin"}]}],
            "decisions": [{"duration": "4h0m0s", "origin": "crowdsec",
                "scenario": "tikban/routeros-login-bf", "scope": "Ip", "type": "ban",
                "value": "192.0.2.7"}],
        });
        assert_eq!(v, expected);
        // Swagger-required fields of Alert, Event, Source, Decision (1.4.6 to 1.7).
        for k in [
            "scenario",
            "scenario_hash",
            "scenario_version",
            "message",
            "events_count",
            "start_at",
            "stop_at",
            "capacity",
            "leakspeed",
            "simulated",
            "events",
            "source",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn networks_are_scope_range_and_values_are_canonical() {
        let mut p = parts("2001:DB8::1/64");
        p.message = Some("custom\nline");
        std::mem::swap(&mut p.first_seen, &mut p.last_seen);
        let a = Alert::ban(&p);
        assert_eq!(a.source.scope, "Range");
        assert_eq!(a.source.value, "2001:db8::/64");
        assert_eq!(a.source.range.as_deref(), Some("2001:db8::/64"));
        assert_eq!(a.source.ip, None);
        assert_eq!(a.decisions[0].scope, "Range");
        assert_eq!(a.message, "custom\\nline");
        assert!(a.start_at < a.stop_at, "times are ordered");
        let mapped = Alert::ban(&parts("::ffff:192.0.2.9"));
        assert_eq!(mapped.source.value, "192.0.2.9");
    }

    #[test]
    fn events_and_peer_text_are_bounded() {
        let mut a = Alert::ban(&parts("192.0.2.7"));
        let user = format!("adm\u{1b}[31min\n{}", "x".repeat(10_000));
        let many: Vec<(&str, &str)> = (0..100).map(|_| ("target_user", user.as_str())).collect();
        for _ in 0..MAX_ALERT_EVENTS {
            assert!(a.add_event(from_unix(0), &many));
        }
        assert!(!a.add_event(from_unix(0), &many));
        assert_eq!(a.events.len(), MAX_ALERT_EVENTS);
        let e = &a.events[0];
        assert_eq!(e.meta.len(), MAX_EVENT_META);
        let v = &e.meta[0].value;
        assert!(v.chars().count() <= MAX_META_VALUE_CHARS + 1);
        assert!(v.ends_with('…'));
        assert!(!v.contains('\u{1b}') && !v.contains('\n'), "{v:?}");
        assert!(a.to_json().len() < 64 * 1024);
    }

    #[test]
    fn durations_and_counts_are_clamped() {
        let mut p = parts("192.0.2.7");
        p.duration = Duration::ZERO;
        p.events_count = u32::MAX;
        p.leakspeed = Duration::from_millis(1);
        let a = Alert::ban(&p);
        assert_eq!(a.decisions[0].duration, "1s");
        assert_eq!(a.leakspeed, "1s");
        assert_eq!(a.events_count, i32::MAX);
    }
}
