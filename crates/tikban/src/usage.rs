//! The usage-metrics payload tikban pushes to LAPI (`docs/reference/crowdsec-lapi.md` §7): `active_decisions`
//! per origin and IP type (a gauge, absolute), and `dropped` bytes and packets per IP type read
//! from the firewall rules that use tikban's lists (counters, sent as deltas). Pure: the
//! supervisor builds the items with its delta state, the daemon adds the clock.

use crowdsec_lapi::{
    ActiveCount, CounterDeltas, MetricItem, MetricsMeta, MetricsWindow, OsInfo,
    RemediationComponent, UsageMetrics,
};

use crate::engine::Family;

/// The items of one push. `dropped[i]` is the absolute (bytes, packets) of family
/// `Family::ALL[i]`; `deltas` turns them into increases since the last push (absolute after a
/// counter reset). Also returns each moved counter's previous value: if the push fails, rolling
/// them back keeps the window for the next push.
pub fn items(
    counts: &[ActiveCount],
    dropped: [(u64, u64); 2],
    deltas: &mut CounterDeltas,
) -> (Vec<MetricItem>, Vec<(String, Option<u64>)>) {
    let mut items = MetricItem::active_decisions(counts);
    let mut rollback = Vec::new();
    for (i, family) in Family::ALL.into_iter().enumerate() {
        let (bytes, packets) = dropped[i];
        for (unit, absolute) in [("byte", bytes), ("packet", packets)] {
            let key = format!("dropped/{unit}/{}", family.label());
            rollback.push((key.clone(), deltas.last(&key)));
            let delta = deltas.delta(&key, absolute);
            items.push(MetricItem {
                name: "dropped".into(),
                unit: unit.into(),
                value: delta as f64,
                labels: [("ip_type".to_owned(), family.label().to_owned())].into(),
            });
        }
    }
    (items, rollback)
}

/// One push of `items` over a window of `window_secs`.
pub fn payload(
    items: Vec<MetricItem>,
    started_unix: i64,
    now_unix: i64,
    window_secs: u64,
) -> UsageMetrics {
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
        let push = |dropped, deltas: &mut CounterDeltas, now| {
            payload(items(&counts, dropped, deltas).0, 1_700_000_000, now, 1800)
        };
        let first = push([(3800, 100), (0, 0)], &mut deltas, 1_700_001_800);
        let second = push([(5000, 130), (64, 1)], &mut deltas, 1_700_003_600);
        let a: serde_json::Value = serde_json::from_slice(&first.to_json()).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&second.to_json()).unwrap();
        let c = &a["remediation_components"][0];
        assert_eq!(c["type"], "tikban");
        assert_eq!(c["version"], format!("v{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(c["utc_startup_timestamp"], 1_700_000_000);
        assert!(
            c["metrics"].is_array(),
            "metrics is an array (docs/reference/crowdsec-lapi.md §7)"
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
        let third = push([(10, 1), (64, 1)], &mut deltas, 1_700_005_400);
        let t: serde_json::Value = serde_json::from_slice(&third.to_json()).unwrap();
        assert_eq!(item(&t, "dropped", "byte", "ipv4")["value"], 10.0);
    }

    #[test]
    fn a_rolled_back_push_resends_its_window() {
        let mut deltas = CounterDeltas::default();
        let (_, _) = items(&[], [(100, 10), (0, 0)], &mut deltas);
        let (failed, rollback) = items(&[], [(150, 15), (0, 0)], &mut deltas);
        let byte = |items: &[MetricItem]| {
            items
                .iter()
                .find(|i| i.unit == "byte" && i.labels["ip_type"] == "ipv4")
                .unwrap()
                .value
        };
        assert_eq!(byte(&failed), 50.0);
        for (key, previous) in rollback {
            deltas.rollback(&key, previous);
        }
        let (next, _) = items(&[], [(170, 17), (0, 0)], &mut deltas);
        assert_eq!(
            byte(&next),
            70.0,
            "the failed window's 50 bytes are not lost"
        );
    }
}
