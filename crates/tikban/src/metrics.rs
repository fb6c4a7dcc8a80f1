//! Prometheus metrics (text exposition format 0.0.4) and the `/health` state.
//!
//! A small hand-written registry: tikban exports a dozen series, and a full Prometheus client
//! would cost binary size on a router for nothing. Every series name starts with `tikban_`.
//! `docs/operations.md` lists them; a test keeps that list and [`FAMILIES`] in step.
//!
//! Some label values come from outside (decision origins from LAPI), so the registry bounds what
//! they can cost (docs/operations.md, "Metrics"): a label value is cut at
//! [`MAX_LABEL_VALUE_BYTES`]; a family holds at most [`MAX_SERIES_PER_FAMILY`] series, further new
//! ones are dropped and counted in [`SERIES_DROPPED`]; [`Metrics::replace_capped`] keeps the
//! largest values of one label and sums the rest into [`OTHER`]. Rendering escapes label values
//! and help texts, and replaces control characters, so no value can break the text format.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Kinds of metric families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Bucketed observations.
    Histogram,
}

/// One metric family: name, kind and help text.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// Full name, `tikban_…`.
    pub name: &'static str,
    /// Kind.
    pub kind: Kind,
    /// Help text.
    pub help: &'static str,
    /// Label names, for the docs.
    pub labels: &'static [&'static str],
}

/// Decisions in the cache.
pub const DECISIONS: &str = "tikban_decisions";
/// Entries tikban holds on the router.
pub const ROUTER_ENTRIES: &str = "tikban_router_entries";
/// Router commands sent.
pub const ROUTER_COMMANDS: &str = "tikban_router_commands_total";
/// Sync batch durations.
pub const SYNC_BATCH_SECONDS: &str = "tikban_sync_batch_duration_seconds";
/// LAPI polls.
pub const LAPI_POLLS: &str = "tikban_lapi_polls_total";
/// Decisions skipped as unparseable.
pub const LAPI_SKIPPED: &str = "tikban_lapi_skipped_decisions_total";
/// Connection state.
pub const CONNECTED: &str = "tikban_connected";
/// Router reconnects.
pub const ROUTER_CONNECTS: &str = "tikban_router_connects_total";
/// Full reconciliations.
pub const RECONCILIATIONS: &str = "tikban_reconciliations_total";
/// Dropped packets.
pub const DROPPED_PACKETS: &str = "tikban_dropped_packets_total";
/// Dropped bytes.
pub const DROPPED_BYTES: &str = "tikban_dropped_bytes_total";
/// Build information.
pub const BUILD_INFO: &str = "tikban_build_info";
/// Decisions not written, by reason (safety rules, budget).
pub const DECISIONS_SKIPPED: &str = "tikban_decisions_skipped_total";
/// The entry budget in force.
pub const ENTRY_BUDGET: &str = "tikban_entry_budget";
/// Banned values the budget leaves out.
pub const OVER_BUDGET: &str = "tikban_decisions_over_budget";
/// The router's memory.
pub const ROUTER_MEMORY: &str = "tikban_router_memory_bytes";
/// Guard: login events seen in the router log.
pub const GUARD_EVENTS: &str = "tikban_guard_events_total";
/// Guard: detections.
pub const GUARD_DETECTIONS: &str = "tikban_guard_detections_total";
/// Guard: bans made.
pub const GUARD_BANS: &str = "tikban_guard_bans_total";
/// Guard: sources tracked.
pub const GUARD_TRACKED: &str = "tikban_guard_tracked_sources";
/// Guard: tracked sources evicted.
pub const GUARD_EVICTIONS: &str = "tikban_guard_evictions_total";
/// Guard: log lines read.
pub const GUARD_LINES: &str = "tikban_guard_log_lines_total";
/// Guard: alerts to LAPI.
pub const GUARD_ALERTS: &str = "tikban_guard_alerts_total";
/// Guard: the log follower's connection.
pub const GUARD_LOG_CONNECTED: &str = "tikban_guard_log_connected";
/// New series refused by the per-family cap.
pub const SERIES_DROPPED: &str = "tikban_metrics_series_dropped_total";

/// Most series one family holds. A new label set beyond it is not stored; it is counted in
/// [`SERIES_DROPPED`] instead. Existing series keep updating.
pub const MAX_SERIES_PER_FAMILY: usize = 1000;
/// Most distinct `origin` values [`DECISIONS`] shows (with [`Metrics::replace_capped`]); the
/// smaller origins are summed into `origin="other"`.
pub const MAX_ORIGINS: usize = 50;
/// Longest label value kept, in bytes; a longer one is cut at a character boundary.
pub const MAX_LABEL_VALUE_BYTES: usize = 128;
/// The label value that collects what [`Metrics::replace_capped`] leaves out.
pub const OTHER: &str = "other";

/// Every family tikban exports.
pub const FAMILIES: &[Family] = &[
    Family {
        name: DECISIONS,
        kind: Kind::Gauge,
        help: "Active decisions held in the cache.",
        labels: &["origin", "ip_type"],
    },
    Family {
        name: ROUTER_ENTRIES,
        kind: Kind::Gauge,
        help: "Address-list entries tikban owns on the router.",
        labels: &["ip_type"],
    },
    Family {
        name: ROUTER_COMMANDS,
        kind: Kind::Counter,
        help: "RouterOS API commands sent, by kind (add, remove, set, print) and result (ok, trap, error).",
        labels: &["kind", "result"],
    },
    Family {
        name: SYNC_BATCH_SECONDS,
        kind: Kind::Histogram,
        help: "Time to apply one batch of changes to the router.",
        labels: &[],
    },
    Family {
        name: LAPI_POLLS,
        kind: Kind::Counter,
        help: "Decision stream polls, by result (ok, error).",
        labels: &["result"],
    },
    Family {
        name: LAPI_SKIPPED,
        kind: Kind::Counter,
        help: "Decisions skipped because their value or duration could not be parsed, or because the element was larger than the element cap.",
        labels: &[],
    },
    Family {
        name: CONNECTED,
        kind: Kind::Gauge,
        help: "1 when the connection to the peer (lapi, router) is up.",
        labels: &["peer"],
    },
    Family {
        name: ROUTER_CONNECTS,
        kind: Kind::Counter,
        help: "Successful router logins (the first one and every reconnect).",
        labels: &[],
    },
    Family {
        name: RECONCILIATIONS,
        kind: Kind::Counter,
        help: "Full router reconciliations (startup, periodic, after reconnect or reboot).",
        labels: &["reason"],
    },
    Family {
        name: DROPPED_PACKETS,
        kind: Kind::Counter,
        help: "Packets dropped by the firewall rules that use tikban's lists.",
        labels: &["ip_type"],
    },
    Family {
        name: DROPPED_BYTES,
        kind: Kind::Counter,
        help: "Bytes dropped by the firewall rules that use tikban's lists.",
        labels: &["ip_type"],
    },
    Family {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        help: "Always 1; the version label tells the build.",
        labels: &["version"],
    },
    Family {
        name: SERIES_DROPPED,
        kind: Kind::Counter,
        help: "New series not stored because their family already had 1000 series, by family.",
        labels: &["family"],
    },
    Family {
        name: DECISIONS_SKIPPED,
        kind: Kind::Counter,
        help: "Banned values not written to the router, by reason: allowlist, self, router, loopback, link-local, lapi, admin-session, range-v4, range-v6, budget.",
        labels: &["reason"],
    },
    Family {
        name: ENTRY_BUDGET,
        kind: Kind::Gauge,
        help: "The most router entries tikban holds across both lists (MAX_ENTRIES, or derived from the router's memory); absent when unlimited.",
        labels: &[],
    },
    Family {
        name: OVER_BUDGET,
        kind: Kind::Gauge,
        help: "Banned values the entry budget leaves off the router (the lowest priority, the shortest remaining).",
        labels: &[],
    },
    Family {
        name: ROUTER_MEMORY,
        kind: Kind::Gauge,
        help: "The router's memory from /system/resource, by kind (total, free).",
        labels: &["kind"],
    },
    Family {
        name: GUARD_LOG_CONNECTED,
        kind: Kind::Gauge,
        help: "1 while guard's log follower is connected to the router.",
        labels: &[],
    },
    Family {
        name: GUARD_LINES,
        kind: Kind::Counter,
        help: "Router log lines guard has read.",
        labels: &[],
    },
    Family {
        name: GUARD_EVENTS,
        kind: Kind::Counter,
        help: "Login events in the router log, by service (ssh, winbox, api, ...) and outcome (failure, success, denied, logout).",
        labels: &["service", "outcome"],
    },
    Family {
        name: GUARD_DETECTIONS,
        kind: Kind::Counter,
        help: "Sources that crossed a guard scenario's threshold.",
        labels: &["scenario"],
    },
    Family {
        name: GUARD_BANS,
        kind: Kind::Counter,
        help: "Local bans guard made (detections of protected addresses are not banned).",
        labels: &["scenario"],
    },
    Family {
        name: GUARD_TRACKED,
        kind: Kind::Gauge,
        help: "Sources guard tracks now (at most GUARD_MAX_SOURCES).",
        labels: &[],
    },
    Family {
        name: GUARD_EVICTIONS,
        kind: Kind::Counter,
        help: "Tracked sources replaced by a new one because the table was full.",
        labels: &[],
    },
    Family {
        name: GUARD_ALERTS,
        kind: Kind::Counter,
        help: "Guard's alerts to LAPI, by result (sent, failed, dropped when the queue was full).",
        labels: &["result"],
    },
];

/// Histogram bucket bounds in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Series {
    values: BTreeMap<(&'static str, Labels), f64>,
    /// Series per family in `values` (the [`SERIES_DROPPED`] ones aside).
    per_family: BTreeMap<&'static str, usize>,
    histograms: BTreeMap<&'static str, Histogram>,
}

impl Series {
    /// The value of one series, created at 0 if its family has room. `None` when the family is
    /// full: the label set is counted in [`SERIES_DROPPED`] instead. `SERIES_DROPPED` itself is
    /// keyed by family name, which the code chooses, so it needs no cap.
    fn slot(&mut self, name: &'static str, labels: Labels) -> Option<&mut f64> {
        let key = (name, labels);
        if !self.values.contains_key(&key) {
            let count = self.per_family.entry(name).or_default();
            if *count >= MAX_SERIES_PER_FAMILY {
                *self
                    .values
                    .entry((SERIES_DROPPED, vec![("family", name.to_owned())]))
                    .or_default() += 1.0;
                return None;
            }
            *count += 1;
        }
        Some(self.values.entry(key).or_default())
    }
}

/// The registry. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<Series>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (*k, clip(v).to_owned()))
        .collect()
}

/// `v` cut to at most [`MAX_LABEL_VALUE_BYTES`], at a character boundary.
fn clip(v: &str) -> &str {
    if v.len() <= MAX_LABEL_VALUE_BYTES {
        return v;
    }
    let mut end = MAX_LABEL_VALUE_BYTES;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

fn clip_owned(mut v: String) -> String {
    let len = clip(&v).len();
    v.truncate(len);
    v
}

/// Keeps the `max_values` values of `label` with the largest totals over `series` (ties broken by
/// name) and relabels the others [`OTHER`]; series that end up with the same labels are summed.
fn cap_label(series: Vec<(Labels, f64)>, label: &str, max_values: usize) -> Vec<(Labels, f64)> {
    let clipped: Vec<(Labels, f64)> = series
        .into_iter()
        .map(|(ls, v)| {
            let ls = ls
                .into_iter()
                .map(|(k, val)| (k, clip_owned(val)))
                .collect();
            (ls, v)
        })
        .collect();
    let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
    for (ls, v) in &clipped {
        for (_, val) in ls.iter().filter(|(k, _)| *k == label) {
            *totals.entry(val.as_str()).or_default() += v;
        }
    }
    let kept: BTreeSet<String> = if totals.len() <= max_values {
        totals.keys().map(|v| (*v).to_owned()).collect()
    } else {
        let mut ranked: Vec<(&str, f64)> = totals.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ranked
            .into_iter()
            .take(max_values)
            .map(|(v, _)| v.to_owned())
            .collect()
    };
    let mut out: BTreeMap<Labels, f64> = BTreeMap::new();
    for (mut ls, v) in clipped {
        for (k, val) in &mut ls {
            if *k == label && !kept.contains(val.as_str()) {
                *val = OTHER.to_owned();
            }
        }
        *out.entry(ls).or_default() += v;
    }
    out.into_iter().collect()
}

impl Metrics {
    /// An empty registry with `tikban_build_info` set.
    pub fn new() -> Self {
        let m = Self::default();
        m.set(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        m
    }

    fn with<R>(&self, f: impl FnOnce(&mut Series) -> R) -> R {
        // A panic while holding the lock cannot leave a series half-written (plain map
        // updates), so a poisoned lock is still usable.
        let mut guard = self.series.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Adds `by` to a counter.
    pub fn inc_by(&self, name: &'static str, pairs: &[(&'static str, &str)], by: f64) {
        self.with(|s| {
            if let Some(v) = s.slot(name, labels(pairs)) {
                *v += by;
            }
        });
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, pairs: &[(&'static str, &str)]) {
        self.inc_by(name, pairs, 1.0);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        self.with(|s| {
            if let Some(v) = s.slot(name, labels(pairs)) {
                *v = value;
            }
        });
    }

    /// Replaces every series of a gauge family at once (series absent from `series` vanish).
    /// At most [`MAX_SERIES_PER_FAMILY`] are kept; when label values come from outside, use
    /// [`Metrics::replace_capped`].
    pub fn replace(&self, name: &'static str, series: Vec<(Labels, f64)>) {
        self.with(|s| {
            s.values.retain(|(n, _), _| *n != name);
            s.per_family.remove(name);
            for (l, v) in series {
                let l = l.into_iter().map(|(k, val)| (k, clip_owned(val))).collect();
                if let Some(slot) = s.slot(name, l) {
                    *slot = v;
                }
            }
        });
    }

    /// [`Metrics::replace`], keeping at most `max_values` distinct values of `label`: the ones
    /// with the largest sums over `series`. The others are summed into `label="other"` (an
    /// origin that is really named `other` shares that series). The sum over all series stays
    /// the sum of `series`, so totals in queries stay right.
    pub fn replace_capped(
        &self,
        name: &'static str,
        series: Vec<(Labels, f64)>,
        label: &str,
        max_values: usize,
    ) {
        self.replace(name, cap_label(series, label, max_values));
    }

    /// The current value of one series (for tests and `/health`).
    pub fn value(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> Option<f64> {
        self.with(|s| s.values.get(&(name, labels(pairs))).copied())
    }

    /// Records one observation.
    pub fn observe(&self, name: &'static str, value: Duration) {
        let secs = value.as_secs_f64();
        self.with(|s| {
            let h = s.histograms.entry(name).or_default();
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        });
    }

    /// Renders every family in the Prometheus text format.
    pub fn render(&self) -> String {
        self.with(|s| {
            let mut out = String::new();
            for fam in FAMILIES {
                let kind = match fam.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Histogram => "histogram",
                };
                let _ = writeln!(out, "# HELP {} {}", fam.name, escape_help(fam.help));
                let _ = writeln!(out, "# TYPE {} {kind}", fam.name);
                if fam.kind == Kind::Histogram {
                    let empty = Histogram {
                        counts: vec![0; BUCKETS.len()],
                        ..Histogram::default()
                    };
                    let h = s.histograms.get(fam.name).unwrap_or(&empty);
                    for (bound, count) in BUCKETS.iter().zip(&h.counts) {
                        let _ = writeln!(out, "{}_bucket{{le=\"{bound}\"}} {count}", fam.name);
                    }
                    let _ = writeln!(out, "{}_bucket{{le=\"+Inf\"}} {}", fam.name, h.count);
                    let _ = writeln!(out, "{}_sum {}", fam.name, h.sum);
                    let _ = writeln!(out, "{}_count {}", fam.name, h.count);
                    continue;
                }
                for ((name, ls), v) in s.values.range((fam.name, Vec::new())..) {
                    if *name != fam.name {
                        break;
                    }
                    out.push_str(name);
                    if !ls.is_empty() {
                        out.push('{');
                        for (i, (k, val)) in ls.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            let _ = write!(out, "{k}=\"{}\"", escape(val));
                        }
                        out.push('}');
                    }
                    let _ = writeln!(out, " {v}");
                }
            }
            out
        })
    }
}

/// Escapes a label value (`\`, `"`, newline) as the exposition format requires, and replaces
/// other control characters (carriage return, NUL, …) with U+FFFD, which the format has no escape
/// for and some parsers choke on.
fn escape(v: &str) -> String {
    escape_with(v, true)
}

/// Escapes a help text (`\`, newline; quotes stay), as the exposition format requires.
fn escape_help(v: &str) -> String {
    escape_with(v, false)
}

fn escape_with(v: &str, quote: bool) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c if c.is_control() => out.push(char::REPLACEMENT_CHARACTER),
            c => out.push(c),
        }
    }
    out
}

/// What `/health` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// The last LAPI poll succeeded.
    pub lapi_up: bool,
    /// The router connection is logged in.
    pub router_up: bool,
    /// The first full sync finished.
    pub synced: bool,
    /// Warnings, e.g. a list no enabled drop rule uses.
    pub warnings: Vec<String>,
    /// Refused values: counts by reason, the latest few, the budget.
    pub skipped: SkipReport,
}

/// What `/health` says about values tikban does not write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipReport {
    /// Values refused since start, by reason label.
    pub counts: Vec<(&'static str, u64)>,
    /// The latest refused values, `value: reason`, newest last (a few).
    pub recent: Vec<String>,
    /// The entry budget (limit, values left out), when one is in force.
    pub budget: Option<(usize, usize)>,
}

impl Health {
    /// True when tikban protects: LAPI and router up, first sync done.
    pub fn ok(&self) -> bool {
        self.lapi_up && self.router_up && self.synced
    }

    /// The JSON body of `/health`.
    pub fn to_json(&self) -> String {
        let state = |up: bool| if up { "up" } else { "down" };
        serde_json::json!({
            "status": if self.ok() { "ok" } else { "degraded" },
            "lapi": state(self.lapi_up),
            "router": state(self.router_up),
            "synced": self.synced,
            "warnings": self.warnings,
            "skipped": {
                "counts": self.skipped.counts.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                "recent": self.skipped.recent,
                "budget": self.skipped.budget.map(|(limit, out)| serde_json::json!({"limit": limit, "over_budget": out})),
            },
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.inc(ROUTER_COMMANDS, &[("kind", "add"), ("result", "ok")]);
        m.inc(ROUTER_COMMANDS, &[("kind", "add"), ("result", "ok")]);
        m.set(CONNECTED, &[("peer", "router")], 1.0);
        m.observe(SYNC_BATCH_SECONDS, Duration::from_millis(30));
        let text = m.render();
        assert!(
            text.contains("tikban_router_commands_total{kind=\"add\",result=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("tikban_connected{peer=\"router\"} 1\n"));
        assert!(text.contains("tikban_sync_batch_duration_seconds_bucket{le=\"0.025\"} 0\n"));
        assert!(text.contains("tikban_sync_batch_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("tikban_sync_batch_duration_seconds_count 1\n"));
        assert!(text.contains("# TYPE tikban_router_commands_total counter\n"));
        assert!(text.contains(&format!(
            "tikban_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn every_series_is_prefixed_and_label_values_are_escaped() {
        let m = Metrics::new();
        m.set(
            DECISIONS,
            &[("origin", "li\"sts\\x\n"), ("ip_type", "ipv4")],
            3.0,
        );
        let text = m.render();
        assert!(text.contains(r#"origin="li\"sts\\x\n""#), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("tikban_"), "{line}");
        }
    }

    #[test]
    fn replace_drops_vanished_series() {
        let m = Metrics::new();
        m.set(DECISIONS, &[("origin", "CAPI"), ("ip_type", "ipv4")], 5.0);
        m.replace(
            DECISIONS,
            vec![(labels(&[("origin", "cscli"), ("ip_type", "ipv6")]), 1.0)],
        );
        assert_eq!(
            m.value(DECISIONS, &[("origin", "CAPI"), ("ip_type", "ipv4")]),
            None
        );
        assert_eq!(
            m.value(DECISIONS, &[("origin", "cscli"), ("ip_type", "ipv6")]),
            Some(1.0)
        );
    }

    /// A parsed sample: name, labels (unescaped), value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// One sample line of the text format, parsed strictly.
    fn parse_sample(line: &str) -> Result<Sample, String> {
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .ok_or("no value")?;
        let (name, mut rest) = line.split_at(name_end);
        let mut pairs = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let (key, r) = rest
                    .split_once("=\"")
                    .ok_or(format!("no label in {rest:?}"))?;
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next().ok_or("unterminated value")? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            c => return Err(format!("bad escape \\{c}")),
                        },
                        (_, c) => value.push(c),
                    }
                };
                pairs.push((key.to_owned(), value));
                rest = &r[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let value = rest
            .strip_prefix(' ')
            .ok_or(format!("no space in {rest:?}"))?;
        let value = value.parse().map_err(|e| format!("value {value:?}: {e}"))?;
        Ok((name.to_owned(), pairs, value))
    }

    /// Every line is a comment or a well-formed `tikban_` sample, and no raw control character
    /// other than the line ends is left.
    fn samples(text: &str) -> Vec<Sample> {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "raw control character in {text:?}"
        );
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let s = parse_sample(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
                assert!(s.0.starts_with("tikban_"), "{l}");
                s
            })
            .collect()
    }

    fn decision_series(origin: &str, ip_type: &str, n: f64) -> (Labels, f64) {
        (
            vec![
                ("origin", origin.to_owned()),
                ("ip_type", ip_type.to_owned()),
            ],
            n,
        )
    }

    #[test]
    fn hostile_label_values_cannot_break_the_format() {
        let long = "é".repeat(200);
        let hostile = [
            "li\"sts\\x\n",
            "evil\n# TYPE tikban_evil counter\ntikban_evil 1",
            "cr\rlf\r\n",
            "nul\0byte",
            "tab\tbell\u{7}del\u{7f}",
            "next\u{85}line",
            "} 1\ntikban_injected{a=\"",
            "\\",
            "\\\"",
            long.as_str(),
        ];
        let m = Metrics::new();
        let series = hostile
            .iter()
            .enumerate()
            .map(|(i, o)| decision_series(o, "ipv4", i as f64 + 1.0))
            .collect();
        m.replace(DECISIONS, series);
        let text = m.render();
        let got: Vec<_> = samples(&text)
            .into_iter()
            .filter(|s| s.0 == DECISIONS)
            .collect();
        assert_eq!(got.len(), hostile.len(), "{text}");
        assert!(!text.contains("\ntikban_evil"), "{text}");
        assert!(!text.contains("\ntikban_injected"), "{text}");
        for (i, o) in hostile.iter().enumerate() {
            // What a scraper reads back: the value, cut to the byte cap, control characters
            // other than newline replaced.
            let want: String = clip(o)
                .chars()
                .map(|c| {
                    if c.is_control() && c != '\n' {
                        char::REPLACEMENT_CHARACTER
                    } else {
                        c
                    }
                })
                .collect();
            let found = got
                .iter()
                .find(|s| s.2 == i as f64 + 1.0)
                .unwrap_or_else(|| panic!("{o:?} missing"));
            assert_eq!(found.1[0], ("origin".to_owned(), want), "{o:?}");
        }
        let long_back = &got.iter().find(|s| s.2 == hostile.len() as f64).unwrap().1[0].1;
        assert!(long_back.len() <= MAX_LABEL_VALUE_BYTES && long_back.len() > 120);
    }

    #[test]
    fn help_texts_are_escaped() {
        assert_eq!(escape_help("a\\b\nc \"d\""), "a\\\\b\\nc \"d\"");
        for fam in FAMILIES {
            assert!(
                !fam.help.contains('\n') && !fam.help.contains('\\'),
                "{}",
                fam.name
            );
        }
        let dropped = FAMILIES.iter().find(|f| f.name == SERIES_DROPPED).unwrap();
        assert!(dropped.help.contains(&MAX_SERIES_PER_FAMILY.to_string()));
    }

    #[test]
    fn twenty_thousand_origins_are_capped_to_the_largest_and_other() {
        // 50 large origins and 19 950 small ones, on both IP types.
        let mut series = Vec::new();
        let mut total = 0.0;
        let mut small = [0.0; 2];
        for i in 0..20_000 {
            let (origin, n) = if i < 50 {
                (format!("big-{i}"), 1000.0 + i as f64)
            } else {
                (format!("list-{i}"), (i % 10 + 1) as f64)
            };
            for (t, ip_type) in ["ipv4", "ipv6"].into_iter().enumerate() {
                let n = n * (t + 1) as f64;
                total += n;
                if i >= 50 {
                    small[t] += n;
                }
                series.push(decision_series(&origin, ip_type, n));
            }
        }
        let m = Metrics::new();
        m.replace_capped(DECISIONS, series, "origin", MAX_ORIGINS);
        let text = m.render();
        assert!(text.len() < 16 * 1024, "{} bytes of /metrics", text.len());
        let got: Vec<_> = samples(&text)
            .into_iter()
            .filter(|s| s.0 == DECISIONS)
            .collect();
        assert_eq!(got.len(), (MAX_ORIGINS + 1) * 2, "{text}");
        assert_eq!(got.iter().map(|s| s.2).sum::<f64>(), total);
        for i in 0..50 {
            let o = format!("big-{i}");
            assert_eq!(
                m.value(DECISIONS, &[("origin", &o), ("ip_type", "ipv6")]),
                Some((1000.0 + i as f64) * 2.0)
            );
        }
        assert_eq!(
            m.value(DECISIONS, &[("origin", OTHER), ("ip_type", "ipv4")]),
            Some(small[0])
        );
        assert_eq!(
            m.value(DECISIONS, &[("origin", OTHER), ("ip_type", "ipv6")]),
            Some(small[1])
        );
        assert!(!text.contains("list-"));
        assert_eq!(m.value(SERIES_DROPPED, &[("family", DECISIONS)]), None);
    }

    #[test]
    fn few_origins_are_kept_as_they_are() {
        let m = Metrics::new();
        m.replace_capped(
            DECISIONS,
            vec![
                decision_series("crowdsec", "ipv4", 3.0),
                decision_series("CAPI", "ipv4", 7.0),
                decision_series("CAPI", "ipv6", 1.0),
            ],
            "origin",
            MAX_ORIGINS,
        );
        assert_eq!(
            m.value(DECISIONS, &[("origin", "CAPI"), ("ip_type", "ipv4")]),
            Some(7.0)
        );
        assert_eq!(
            m.value(DECISIONS, &[("origin", "crowdsec"), ("ip_type", "ipv4")]),
            Some(3.0)
        );
        assert_eq!(
            m.value(DECISIONS, &[("origin", OTHER), ("ip_type", "ipv4")]),
            None
        );
        // Ties are broken by name, so the cap is deterministic.
        m.replace_capped(
            DECISIONS,
            vec![
                decision_series("b", "ipv4", 1.0),
                decision_series("a", "ipv4", 1.0),
                decision_series("c", "ipv4", 1.0),
            ],
            "origin",
            2,
        );
        let text = m.render();
        assert!(text.contains("tikban_decisions{origin=\"a\",ip_type=\"ipv4\"} 1\n"));
        assert!(text.contains("tikban_decisions{origin=\"b\",ip_type=\"ipv4\"} 1\n"));
        assert!(text.contains("tikban_decisions{origin=\"other\",ip_type=\"ipv4\"} 1\n"));
    }

    #[test]
    fn a_family_never_exceeds_its_series_cap() {
        let m = Metrics::new();
        for i in 0..MAX_SERIES_PER_FAMILY + 500 {
            m.set(
                DECISIONS,
                &[("origin", &format!("o{i}")), ("ip_type", "ipv4")],
                1.0,
            );
            m.inc(
                ROUTER_COMMANDS,
                &[("kind", &format!("k{i}")), ("result", "ok")],
            );
        }
        let count =
            |text: &str, name: &str| samples(text).into_iter().filter(|s| s.0 == name).count();
        let text = m.render();
        assert_eq!(count(&text, DECISIONS), MAX_SERIES_PER_FAMILY);
        assert_eq!(count(&text, ROUTER_COMMANDS), MAX_SERIES_PER_FAMILY);
        assert_eq!(
            m.value(SERIES_DROPPED, &[("family", DECISIONS)]),
            Some(500.0)
        );
        assert_eq!(
            m.value(SERIES_DROPPED, &[("family", ROUTER_COMMANDS)]),
            Some(500.0)
        );
        // Other families still take new series, and stored ones still update.
        m.set(CONNECTED, &[("peer", "lapi")], 1.0);
        assert_eq!(m.value(CONNECTED, &[("peer", "lapi")]), Some(1.0));
        m.set(DECISIONS, &[("origin", "o0"), ("ip_type", "ipv4")], 9.0);
        assert_eq!(
            m.value(DECISIONS, &[("origin", "o0"), ("ip_type", "ipv4")]),
            Some(9.0)
        );
        // replace() starts the family afresh, under the same cap.
        let many = (0..MAX_SERIES_PER_FAMILY + 10)
            .map(|i| decision_series(&format!("p{i}"), "ipv6", 1.0))
            .collect();
        m.replace(DECISIONS, many);
        assert_eq!(count(&m.render(), DECISIONS), MAX_SERIES_PER_FAMILY);
        assert_eq!(
            m.value(SERIES_DROPPED, &[("family", DECISIONS)]),
            Some(510.0)
        );
        m.replace(DECISIONS, vec![decision_series("q", "ipv4", 2.0)]);
        assert_eq!(count(&m.render(), DECISIONS), 1);
        m.set(DECISIONS, &[("origin", "r"), ("ip_type", "ipv4")], 1.0);
        assert_eq!(count(&m.render(), DECISIONS), 2);
    }

    #[test]
    fn health_json_names_the_part_that_is_down() {
        let h = Health {
            lapi_up: true,
            router_up: false,
            synced: false,
            warnings: vec!["no drop rule uses crowdsec-banned".into()],
            skipped: SkipReport::default(),
        };
        assert!(!h.ok());
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["lapi"], "up");
        assert_eq!(v["router"], "down");
        assert_eq!(v["warnings"][0], "no drop rule uses crowdsec-banned");
    }
}
