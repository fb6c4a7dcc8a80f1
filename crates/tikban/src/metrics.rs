//! Prometheus metrics (text exposition format 0.0.4) and the `/health` state.
//!
//! A small hand-written registry: tikban exports a dozen series, and a full Prometheus client
//! would cost binary size on a router for nothing. Every series name starts with `tikban_`.
//! `docs/operations.md` lists them; a test keeps that list and [`FAMILIES`] in step.

use std::collections::BTreeMap;
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
        help: "Decisions skipped because their value or duration could not be parsed.",
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
    histograms: BTreeMap<&'static str, Histogram>,
}

/// The registry. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    series: Mutex<Series>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
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
        self.with(|s| *s.values.entry((name, labels(pairs))).or_default() += by);
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, pairs: &[(&'static str, &str)]) {
        self.inc_by(name, pairs, 1.0);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        self.with(|s| {
            s.values.insert((name, labels(pairs)), value);
        });
    }

    /// Replaces every series of a gauge family at once (series absent from `series` vanish).
    pub fn replace(&self, name: &'static str, series: Vec<(Labels, f64)>) {
        self.with(|s| {
            s.values.retain(|(n, _), _| *n != name);
            for (l, v) in series {
                s.values.insert((name, l), v);
            }
        });
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
                let _ = writeln!(out, "# HELP {} {}", fam.name, fam.help);
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

/// Escapes a label value (`\`, `"`, newline), as the exposition format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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

    #[test]
    fn health_json_names_the_part_that_is_down() {
        let h = Health {
            lapi_up: true,
            router_up: false,
            synced: false,
            warnings: vec!["no drop rule uses crowdsec-banned".into()],
        };
        assert!(!h.ok());
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).unwrap();
        assert_eq!(v["status"], "degraded");
        assert_eq!(v["lapi"], "up");
        assert_eq!(v["router"], "down");
        assert_eq!(v["warnings"][0], "no drop rule uses crowdsec-banned");
    }
}
