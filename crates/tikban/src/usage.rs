//! The usage-metrics payload tikban pushes to LAPI (`crowdsec-lapi.md` §7): `active_decisions`
//! per origin and IP type (a gauge, absolute), and `dropped` bytes and packets per IP type read
//! from the firewall rules that use tikban's lists (counters, sent as deltas). Pure: the daemon
//! passes the counts, the clock and the delta state.

use crowdsec_lapi::{
    ActiveCount, CounterDeltas, MetricItem, MetricsMeta, MetricsWindow, OsInfo,
    RemediationComponent, UsageMetrics,
};

use crate::engine::Family;

/// Builds one push. `dropped[i]` is the absolute (bytes, packets) of family `Family::ALL[i]`;
/// `deltas` turns them into increases since the last push (absolute after a counter reset).
pub fn payload(
    counts: &[ActiveCount],
    dropped: [(u64, u64); 2],
    deltas: &mut CounterDeltas,
    started_unix: i64,
    now_unix: i64,
    window_secs: u64,
) -> UsageMetrics {
    let mut items = MetricItem::active_decisions(counts);
    for (i, family) in Family::ALL.into_iter().enumerate() {
        let (bytes, packets) = dropped[i];
        for (unit, absolute) in [("byte", bytes), ("packet", packets)] {
            let key = format!("dropped/{unit}/{}", family.label());
            let delta = deltas.delta(&key, absolute);
            items.push(MetricItem {
                name: "dropped".into(),
                unit: unit.into(),
                value: delta as f64,
                labels: [("ip_type".to_owned(), family.label().to_owned())].into(),
            });
        }
    }
    UsageMetrics::new(RemediationComponent {
        kind: "tikban".into(),
        name: None,
        version: format!("v{}", env!("CARGO_PKG_VERSION")),
        utc_startup_timestamp: started_unix,
        os: Some(OsInfo {
            name: "linux".into(),
            version: "routeros-container".into(),
        }),
        feature_flags: Vec::new(),
        metrics: vec![MetricsWindow {
            meta: MetricsMeta {
                window_size_seconds: window_secs,
                utc_now_timestamp: now_unix,
            },
            items,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crowdsec_lapi::Label;

    fn item<'a>(
        json: &'a serde_json::Value,
        name: &str,
        unit: &str,
        ip: &str,
    ) -> &'a serde_json::Value {
        json["remediation_components"][0]["metrics"][0]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name && i["unit"] == unit && i["labels"]["ip_type"] == ip)
            .unwrap_or_else(|| panic!("no {name}/{unit}/{ip}"))
    }

    #[test]
    fn active_decisions_are_absolute_and_drops_are_deltas() {
        let counts = [
            ActiveCount {
                origin: Label::new("CAPI"),
                ipv6: false,
                count: 500,
            },
            ActiveCount {
                origin: Label::new("cscli"),
                ipv6: true,
                count: 2,
            },
        ];
        let mut deltas = CounterDeltas::default();
        let first = payload(
            &counts,
            [(3800, 100), (0, 0)],
            &mut deltas,
            1_700_000_000,
            1_700_001_800,
            1800,
        );
        let second = payload(
            &counts,
            [(5000, 130), (64, 1)],
            &mut deltas,
            1_700_000_000,
            1_700_003_600,
            1800,
        );
        let a: serde_json::Value = serde_json::from_slice(&first.to_json()).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&second.to_json()).unwrap();
        let c = &a["remediation_components"][0];
        assert_eq!(c["type"], "tikban");
        assert_eq!(c["version"], format!("v{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(c["utc_startup_timestamp"], 1_700_000_000);
        assert!(
            c["metrics"].is_array(),
            "metrics is an array (crowdsec-lapi.md §7)"
        );
        assert_eq!(c["metrics"][0]["meta"]["window_size_seconds"], 1800);
        let active = c["metrics"][0]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "active_decisions" && i["labels"]["origin"] == "CAPI")
            .unwrap();
        assert_eq!(active["value"], 500.0);
        assert_eq!(active["unit"], "ip");
        assert_eq!(item(&a, "dropped", "byte", "ipv4")["value"], 3800.0);
        assert_eq!(item(&b, "dropped", "byte", "ipv4")["value"], 1200.0);
        assert_eq!(item(&b, "dropped", "packet", "ipv4")["value"], 30.0);
        assert_eq!(item(&b, "dropped", "packet", "ipv6")["value"], 1.0);
        // A counter that went backwards (router reboot) is sent absolute.
        let third = payload(
            &counts,
            [(10, 1), (64, 1)],
            &mut deltas,
            1_700_000_000,
            1_700_005_400,
            1800,
        );
        let t: serde_json::Value = serde_json::from_slice(&third.to_json()).unwrap();
        assert_eq!(item(&t, "dropped", "byte", "ipv4")["value"], 10.0);
    }
}
