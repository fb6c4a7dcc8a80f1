//! Usage-metrics payload for `POST /v1/usage-metrics` (LAPI ≥ 1.6.3), remediation-component
//! schema (`docs/reference/crowdsec-lapi.md` §7).
//!
//! - `metrics` is an **array** (a docs example wrongly shows an object);
//! - `active_decisions` (unit `ip`) is a gauge, sent absolute, per `origin` + `ip_type`;
//! - every other counter is summed across pushes by LAPI, so it is sent as a **delta**:
//!   [`CounterDeltas`] turns absolute counters into deltas (absolute again if a counter went
//!   backwards, as cs-firewall-bouncer does);
//! - origin `lists` is labelled `lists:<scenario>`.
//!
//! Sans-IO: the caller passes the timestamps.

use std::collections::BTreeMap;
use std::collections::HashMap;

use serde::Serialize;

use crate::cache::ActiveCount;

/// The whole request body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageMetrics {
    /// Exactly one component (LAPI answers 400 for none or more than one).
    pub remediation_components: Vec<RemediationComponent>,
}

/// One remediation component (this bouncer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RemediationComponent {
    /// Component type, `tikban`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Optional name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Version, `v0.1.0` (≤ 255 chars).
    pub version: String,
    /// Process start, Unix seconds.
    pub utc_startup_timestamp: i64,
    /// OS name and version; both or nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<OsInfo>,
    /// Feature flags (none).
    pub feature_flags: Vec<String>,
    /// Metric windows: an array.
    pub metrics: Vec<MetricsWindow>,
}

/// `os` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OsInfo {
    /// e.g. `linux`.
    pub name: String,
    /// e.g. `6.1`.
    pub version: String,
}

/// One window of items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsWindow {
    /// Window and push time.
    pub meta: MetricsMeta,
    /// The items.
    pub items: Vec<MetricItem>,
}

/// `meta` of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MetricsMeta {
    /// Seconds covered (the push interval; LAPI's minimum is 15 minutes).
    pub window_size_seconds: u64,
    /// Push time, Unix seconds. LAPI silently drops a payload whose timestamp it already has.
    pub utc_now_timestamp: i64,
}

/// One measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricItem {
    /// `active_decisions`, `dropped`, `processed`, …
    pub name: String,
    /// `ip`, `packet`, `byte`, `request`.
    pub unit: String,
    /// The value (a float in the schema).
    pub value: f64,
    /// Labels: `origin`, `ip_type` (`ipv4`/`ipv6`), `remediation`.
    pub labels: BTreeMap<String, String>,
}

impl MetricItem {
    /// `active_decisions` items (unit `ip`) from the cache's per-origin counts.
    pub fn active_decisions(counts: &[ActiveCount]) -> Vec<MetricItem> {
        counts
            .iter()
            .map(|c| MetricItem {
                name: "active_decisions".into(),
                unit: "ip".into(),
                value: c.count as f64,
                labels: BTreeMap::from([
                    ("origin".into(), c.origin.to_string()),
                    (
                        "ip_type".into(),
                        if c.ipv6 { "ipv6" } else { "ipv4" }.into(),
                    ),
                ]),
            })
            .collect()
    }
}

impl UsageMetrics {
    /// A payload with one component and one window.
    pub fn new(component: RemediationComponent) -> Self {
        UsageMetrics {
            remediation_components: vec![component],
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs with string keys cannot fail; an empty body would be refused
        // by LAPI with 400 rather than panicking here.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Turns absolute, monotonically increasing counters into the deltas LAPI wants.
#[derive(Debug, Default)]
pub struct CounterDeltas {
    last: HashMap<String, u64>,
}

impl CounterDeltas {
    /// The increase of counter `key` since the previous call; the absolute value on the first call
    /// or when the counter went backwards (a router reset).
    pub fn delta(&mut self, key: &str, absolute: u64) -> u64 {
        let prev = self.last.insert(key.to_owned(), absolute);
        match prev {
            Some(p) if p <= absolute => absolute - p,
            _ => absolute,
        }
    }

    /// Forgets a counter's previous value, e.g. when a push failed and the delta must be resent
    /// in full next time.
    pub fn rollback(&mut self, key: &str, previous: Option<u64>) {
        match previous {
            Some(p) => self.last.insert(key.to_owned(), p),
            None => self.last.remove(key),
        };
    }

    /// The last absolute value seen for `key`.
    pub fn last(&self, key: &str) -> Option<u64> {
        self.last.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Label;

    #[test]
    fn serialises_the_remediation_component_schema() {
        let counts = vec![
            ActiveCount {
                origin: Label::new("lists:firehol_voipbl"),
                ipv6: false,
                count: 500,
            },
            ActiveCount {
                origin: Label::new("CAPI"),
                ipv6: true,
                count: 3,
            },
        ];
        let m = UsageMetrics::new(RemediationComponent {
            kind: "tikban".into(),
            name: None,
            version: "v0.1.0".into(),
            utc_startup_timestamp: 1_707_399_316,
            os: Some(OsInfo {
                name: "linux".into(),
                version: "6.1".into(),
            }),
            feature_flags: vec![],
            metrics: vec![MetricsWindow {
                meta: MetricsMeta {
                    window_size_seconds: 1800,
                    utc_now_timestamp: 1_707_399_916,
                },
                items: MetricItem::active_decisions(&counts),
            }],
        });
        let v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        let c = &v["remediation_components"][0];
        assert_eq!(c["type"], "tikban");
        assert!(c.get("name").is_none());
        assert_eq!(c["os"]["name"], "linux");
        assert!(c["feature_flags"].as_array().unwrap().is_empty());
        assert!(c["metrics"].is_array(), "metrics must be an array (§7)");
        let items = &c["metrics"][0]["items"];
        assert_eq!(items[0]["name"], "active_decisions");
        assert_eq!(items[0]["unit"], "ip");
        assert_eq!(items[0]["value"], 500.0);
        assert_eq!(items[0]["labels"]["origin"], "lists:firehol_voipbl");
        assert_eq!(items[0]["labels"]["ip_type"], "ipv4");
        assert_eq!(items[1]["labels"]["ip_type"], "ipv6");
        assert_eq!(c["metrics"][0]["meta"]["window_size_seconds"], 1800);
    }

    #[test]
    fn counters_are_sent_as_deltas() {
        let mut d = CounterDeltas::default();
        assert_eq!(d.delta("dropped/CAPI", 100), 100);
        assert_eq!(d.delta("dropped/CAPI", 150), 50);
        assert_eq!(d.delta("dropped/CAPI", 150), 0);
        assert_eq!(d.delta("dropped/CAPI", 20), 20, "went backwards: absolute");
        d.rollback("dropped/CAPI", Some(150));
        assert_eq!(d.last("dropped/CAPI"), Some(150));
    }
}
