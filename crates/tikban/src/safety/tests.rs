//! The protections and range limits together, and the update rule, against a naive model.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crowdsec_lapi::Value;
use proptest::prelude::*;

use super::*;

fn v(s: &str) -> Value {
    Value::parse(s).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn with_allowlist(text: &str) -> Safety {
    Safety::new(Settings {
        allowlist: AddrSet::parse(text).unwrap(),
        ..Settings::default()
    })
}

const SKIP: fn(Reason) -> Verdict = Verdict::Skip;

// === labels ===

#[test]
fn reasons_have_the_documented_labels_in_check_order() {
    let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
    assert_eq!(
        labels,
        [
            "range-v4",
            "range-v6",
            "allowlist",
            "loopback",
            "link-local",
            "self",
            "router",
            "lapi",
            "admin-session"
        ]
    );
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert_eq!(r.to_string(), r.label());
        assert!(!r.why().is_empty());
    }
    for (i, k) in Kind::ALL.iter().enumerate() {
        assert_eq!(k.index(), i);
        assert_eq!(k.reason().kind(), Some(*k));
        assert_eq!(k.label(), k.reason().label());
    }
    assert_eq!(Reason::RangeV4.kind(), None);
}

// === defaults ===

#[test]
fn defaults_protect_loopback_and_link_local_and_limit_ranges() {
    let s = Safety::new(Settings::default());
    assert_eq!(s.check(&v("203.0.113.9")), Verdict::Enforce);
    assert_eq!(s.check(&v("2001:db8::9")), Verdict::Enforce);
    assert_eq!(s.check(&v("127.0.0.53")), SKIP(Reason::Loopback));
    assert_eq!(s.check(&v("127.0.0.0/8")), SKIP(Reason::Loopback));
    assert_eq!(s.check(&v("::1")), SKIP(Reason::Loopback));
    assert_eq!(s.check(&v("::ffff:127.0.0.1")), SKIP(Reason::Loopback));
    assert_eq!(s.check(&v("::2")), Verdict::Enforce);
    assert_eq!(s.check(&v("169.254.169.254")), SKIP(Reason::LinkLocal));
    assert_eq!(
        s.check(&v("169.254.0.0/15")),
        SKIP(Reason::LinkLocal),
        "covers it"
    );
    assert_eq!(s.check(&v("fe80::1")), SKIP(Reason::LinkLocal));
    assert_eq!(s.check(&v("febf:ffff::1")), SKIP(Reason::LinkLocal));
    assert_eq!(s.check(&v("fec0::1")), Verdict::Enforce);
    assert_eq!(
        s.protected().to_string(),
        "127.0.0.0/8, 169.254.0.0/16, ::1, fe80::/10"
    );
    assert_eq!(s.generation(), 0);
    assert_eq!(s.protections(), Protections::default());
    assert_eq!(s.ranges(), RangeLimits { v4: 8, v6: 32 });
}

#[test]
fn range_limits_at_their_edges() {
    let s = Safety::new(Settings::default());
    assert_eq!(s.check(&v("10.0.0.0/8")), Verdict::Enforce);
    assert_eq!(s.check(&v("10.0.0.0/7")), SKIP(Reason::RangeV4));
    assert_eq!(s.check(&v("0.0.0.0/0")), SKIP(Reason::RangeV4));
    assert_eq!(s.check(&v("128.0.0.0/1")), SKIP(Reason::RangeV4));
    assert_eq!(s.check(&v("2001:db8::/32")), Verdict::Enforce);
    assert_eq!(s.check(&v("2001:db8::/31")), SKIP(Reason::RangeV6));
    assert_eq!(s.check(&v("::/0")), SKIP(Reason::RangeV6));
    // A mapped /104 is an IPv4 /8: the IPv4 limit applies.
    assert_eq!(s.check(&v("::ffff:10.0.0.0/104")), Verdict::Enforce);
    assert_eq!(s.check(&v("::ffff:10.0.0.0/103")), SKIP(Reason::RangeV4));

    let open = Safety::new(Settings {
        ranges: RangeLimits { v4: 0, v6: 0 },
        protections: Protections {
            loopback: false,
            link_local: false,
            ..Protections::default()
        },
        ..Settings::default()
    });
    assert_eq!(open.check(&v("0.0.0.0/0")), Verdict::Enforce);
    assert_eq!(open.check(&v("::/0")), Verdict::Enforce);

    let hosts_only = Safety::new(Settings {
        ranges: RangeLimits { v4: 32, v6: 128 },
        ..Settings::default()
    });
    assert_eq!(hosts_only.check(&v("203.0.113.9")), Verdict::Enforce);
    assert_eq!(
        hosts_only.check(&v("203.0.113.8/31")),
        SKIP(Reason::RangeV4)
    );
    assert_eq!(
        hosts_only.check(&v("2001:db8::/127")),
        SKIP(Reason::RangeV6)
    );
}

#[test]
fn range_limits_are_checked() {
    assert_eq!(RangeLimits::default().check(), Ok(()));
    assert_eq!(RangeLimits { v4: 32, v6: 128 }.check(), Ok(()));
    let e = RangeLimits { v4: 33, v6: 129 }.check().unwrap_err();
    assert_eq!(e, [RangeError::V4(33), RangeError::V6(129)]);
    assert_eq!(
        e[0].to_string(),
        "MAX_RANGE_V4: 33 is not a prefix length from 0 to 32"
    );
}

// === allowlist and precedence ===

#[test]
fn allowlist_skips_inside_and_covering_values() {
    let s = with_allowlist("192.168.88.0/24, 203.0.113.7, 2001:db8:1::/48");
    assert_eq!(s.check(&v("192.168.88.200")), SKIP(Reason::Allowlist));
    assert_eq!(s.check(&v("192.168.88.128/25")), SKIP(Reason::Allowlist));
    assert_eq!(s.check(&v("192.168.0.0/16")), SKIP(Reason::Allowlist));
    assert_eq!(
        s.check(&v("203.0.113.0/24")),
        SKIP(Reason::Allowlist),
        "covers a host"
    );
    assert_eq!(
        s.check(&v("203.0.113.6/31")),
        SKIP(Reason::Allowlist),
        "covers a host"
    );
    assert_eq!(
        s.check(&v("203.0.113.8/31")),
        Verdict::Enforce,
        "adjacent above"
    );
    assert_eq!(
        s.check(&v("203.0.113.6")),
        Verdict::Enforce,
        "adjacent below"
    );
    assert_eq!(s.check(&v("2001:db8::/32")), SKIP(Reason::Allowlist));
    assert_eq!(s.check(&v("2001:db8:1:2::5")), SKIP(Reason::Allowlist));
    assert_eq!(s.check(&v("2001:db8:2::5")), Verdict::Enforce);
    assert_eq!(s.check(&v("::ffff:192.168.88.1")), SKIP(Reason::Allowlist));
}

#[test]
fn the_first_reason_in_check_order_is_reported() {
    // Range beats the allowlist; the allowlist beats the automatic protections.
    let mut s = with_allowlist("127.0.0.0/8, 10.0.0.0/8");
    assert_eq!(s.check(&v("10.0.0.0/7")), SKIP(Reason::RangeV4));
    assert_eq!(s.check(&v("127.0.0.1")), SKIP(Reason::Allowlist));
    s.set_kind(Kind::Router, [ip("169.254.1.1")]);
    assert_eq!(s.check(&v("169.254.1.1")), SKIP(Reason::LinkLocal));
    s.set_kind(Kind::Own, [ip("172.17.0.2")]);
    s.set_kind(Kind::Router, [ip("172.17.0.1")]);
    s.set_kind(Kind::Lapi, [ip("172.17.0.0")]);
    assert_eq!(s.check(&v("172.17.0.0/30")), SKIP(Reason::Own));
    assert_eq!(s.check(&v("172.17.0.0/31")), SKIP(Reason::Router));
    assert_eq!(s.check(&v("172.17.0.0")), SKIP(Reason::Lapi));
}

// === each automatic protection, and its switch ===

#[test]
fn each_fed_kind_protects_its_addresses_and_can_be_switched_off() {
    let feeds = [
        (Kind::Own, "172.17.0.2"),
        (Kind::Router, "172.17.0.1"),
        (Kind::Lapi, "192.0.2.10"),
        (Kind::AdminSession, "198.51.100.23"),
    ];
    for (kind, addr) in feeds {
        let mut on = Safety::new(Settings::default());
        let up = on.set_kind(kind, [ip(addr)]);
        assert_eq!(up.verdicts.to_string(), addr, "{kind:?}");
        assert_eq!(on.check(&v(addr)), SKIP(kind.reason()));
        assert_eq!(on.set(kind).to_string(), addr);
        assert_eq!(on.generation(), 1);

        let mut protections = Protections::default();
        match kind {
            Kind::Own => protections.own = false,
            Kind::Router => protections.router = false,
            Kind::Lapi => protections.lapi = false,
            Kind::AdminSession => protections.admin_sessions = false,
            _ => unreachable!(),
        }
        assert!(!protections.enabled(kind));
        let mut off = Safety::new(Settings {
            protections,
            ..Settings::default()
        });
        let up = off.set_kind(kind, [ip(addr)]);
        assert!(up.is_empty());
        assert!(off.set(kind).is_empty());
        assert_eq!(off.check(&v(addr)), Verdict::Enforce, "{kind:?} off");
        assert_eq!(off.generation(), 0);
    }
}

#[test]
fn loopback_and_link_local_can_be_switched_off() {
    let s = Safety::new(Settings {
        protections: Protections {
            loopback: false,
            link_local: false,
            ..Protections::default()
        },
        ..Settings::default()
    });
    assert_eq!(s.check(&v("127.0.0.1")), Verdict::Enforce);
    assert_eq!(s.check(&v("fe80::1")), Verdict::Enforce);
    assert!(s.protected().is_empty());
    assert!(Protections::default().enabled(Kind::Allowlist));
}

// === updates ===

#[test]
fn an_unchanged_session_list_is_an_empty_update() {
    let mut s = Safety::new(Settings::default());
    let sessions = [ip("198.51.100.23"), ip("2001:db8::23")];
    let up = s.set_kind(Kind::AdminSession, sessions);
    assert!(!up.is_empty());
    assert_eq!(s.generation(), 1);
    // Same addresses, other order, a duplicate: nothing changed.
    let again = [ip("2001:db8::23"), ip("198.51.100.23"), ip("198.51.100.23")];
    let up = s.set_kind(Kind::AdminSession, again);
    assert!(up.is_empty());
    assert_eq!(up, Update::default());
    assert_eq!(s.generation(), 1);
}

#[test]
fn a_session_ending_names_only_its_address() {
    let mut s = Safety::new(Settings::default());
    s.set_kind(Kind::AdminSession, [ip("198.51.100.23"), ip("203.0.113.5")]);
    let up = s.set_kind(Kind::AdminSession, [ip("203.0.113.5")]);
    assert_eq!(up.verdicts.to_string(), "198.51.100.23");
    assert_eq!(up.reasons.to_string(), "198.51.100.23");
    assert!(up.verdicts.intersects(&v("198.51.100.0/24")));
    assert!(!up.verdicts.intersects(&v("203.0.113.0/24")));
    assert_eq!(s.check(&v("198.51.100.0/24")), Verdict::Enforce);
    assert_eq!(s.check(&v("203.0.113.0/24")), SKIP(Reason::AdminSession));
}

#[test]
fn a_session_inside_the_allowlist_changes_reasons_not_verdicts() {
    let mut s = with_allowlist("192.168.88.0/24");
    let up = s.set_kind(Kind::AdminSession, [ip("192.168.88.10")]);
    assert!(up.verdicts.is_empty(), "already protected");
    assert_eq!(up.reasons.to_string(), "192.168.88.10");
    assert!(!up.is_empty());
    assert_eq!(s.check(&v("192.168.88.10")), SKIP(Reason::Allowlist));
}

#[test]
fn the_lapi_host_moving_is_one_update() {
    let mut s = Safety::new(Settings::default());
    s.set_kind(Kind::Lapi, [ip("192.0.2.10"), ip("2001:db8::10")]);
    let up = s.set_kind(Kind::Lapi, [ip("192.0.2.11"), ip("2001:db8::10")]);
    // The old and the new address, merged into one block.
    assert_eq!(up.verdicts.to_string(), "192.0.2.10/31");
    assert_eq!(s.check(&v("192.0.2.10")), Verdict::Enforce);
    assert_eq!(s.check(&v("192.0.2.11")), SKIP(Reason::Lapi));
    assert_eq!(s.generation(), 2);
}

#[test]
fn too_many_addresses_keep_the_first_and_count_the_rest() {
    let mut s = Safety::new(Settings::default());
    let many = (0..MAX_ENTRIES as u32 + 5).map(|i| IpAddr::V4(Ipv4Addr::from(0xC633_0000 + i)));
    let up = s.set_kind(Kind::AdminSession, many);
    assert_eq!(up.left_out, 5);
    assert_eq!(s.set(Kind::AdminSession).to_string(), "198.51.0.0/20");
    // The same list again: still reported, still no change.
    let many = (0..MAX_ENTRIES as u32 + 5).map(|i| IpAddr::V4(Ipv4Addr::from(0xC633_0000 + i)));
    let up = s.set_kind(Kind::AdminSession, many);
    assert_eq!(up.left_out, 5);
    assert!(up.is_empty());
}

#[test]
fn lookups_find_the_cached_values_an_update_touches() {
    let cache: HashSet<Value> = [
        "198.51.100.23",
        "198.51.100.0/24",
        "198.51.0.0/16",
        "198.51.100.24",
        "203.0.113.5",
    ]
    .iter()
    .map(|s| v(s))
    .collect();
    let mut s = Safety::new(Settings::default());
    let up = s.set_kind(Kind::AdminSession, [ip("198.51.100.23")]);
    let looks = up.verdicts.lookups(1000).unwrap();
    let mut touched: Vec<String> = looks
        .iter()
        .filter(|l| cache.contains(l))
        .map(|l| l.to_string())
        .collect();
    touched.sort();
    assert_eq!(
        touched,
        ["198.51.0.0/16", "198.51.100.0/24", "198.51.100.23"]
    );
    for t in &touched {
        assert_eq!(s.check(&v(t)), SKIP(Reason::AdminSession));
    }
    assert_eq!(s.check(&v("198.51.100.24")), Verdict::Enforce);
}

// === against a naive model ===

/// The model: every kind's entries as a list, the check a linear scan in priority order.
#[derive(Debug, Clone, Default)]
struct Model {
    sets: [Vec<Value>; 7],
}

fn span(v: &Value) -> (bool, u128, u128) {
    let width = if v.is_ipv6() { 128 } else { 32 };
    let bits = match v.addr() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let host = width - u32::from(v.prefix_len());
    let mask = if host == 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    (v.is_ipv6(), bits & !mask, bits | mask)
}

fn meets(a: &Value, b: &Value) -> bool {
    let (fa, a0, a1) = span(a);
    let (fb, b0, b1) = span(b);
    fa == fb && a0 <= b1 && b0 <= a1
}

impl Model {
    fn check(&self, ranges: RangeLimits, value: &Value) -> Verdict {
        let p = value.prefix_len();
        if !value.is_ipv6() && p < ranges.v4 {
            return Verdict::Skip(Reason::RangeV4);
        }
        if value.is_ipv6() && p < ranges.v6 {
            return Verdict::Skip(Reason::RangeV6);
        }
        for kind in Kind::ALL {
            if self.sets[kind.index()].iter().any(|e| meets(e, value)) {
                return Verdict::Skip(kind.reason());
            }
        }
        Verdict::Enforce
    }
}

/// Values clustered in a few small regions (so sets and decisions meet often), plus anywhere.
fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u32..256, 22u8..=32).prop_map(|(x, p)| {
            Value::network(IpAddr::V4(Ipv4Addr::from(0xC633_6400 | x)), p).unwrap()
        }),
        1 => (0u32..16, 0u8..=32).prop_map(|(x, p)| {
            Value::network(IpAddr::V4(Ipv4Addr::from(0x7F00_0000 | (x << 20))), p).unwrap()
        }),
        1 => (any::<u32>(), 0u8..=32)
            .prop_map(|(x, p)| Value::network(IpAddr::V4(Ipv4Addr::from(x)), p).unwrap()),
        3 => (0u128..256, 118u8..=128).prop_map(|(x, p)| {
            let base: u128 = 0x2001_0db8 << 96;
            Value::network(IpAddr::V6(Ipv6Addr::from(base | x)), p).unwrap()
        }),
        1 => (any::<u128>(), 0u8..=128)
            .prop_map(|(x, p)| Value::network(IpAddr::V6(Ipv6Addr::from(x)), p).unwrap()),
        1 => (0u32..256, 96u8..=128).prop_map(|(x, p)| {
            let mapped = Ipv4Addr::from(0xC633_6400 | x).to_ipv6_mapped();
            Value::network(IpAddr::V6(mapped), p).unwrap()
        }),
    ]
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(Kind::ALL.to_vec())
}

fn arb_protections() -> impl Strategy<Value = Protections> {
    prop::array::uniform6(prop::bool::weighted(0.8)).prop_map(|b| Protections {
        own: b[0],
        router: b[1],
        loopback: b[2],
        link_local: b[3],
        lapi: b[4],
        admin_sessions: b[5],
    })
}

fn model_for(settings: &Settings, allow: &[Value]) -> Model {
    let mut m = Model::default();
    m.sets[Kind::Allowlist.index()] = allow.to_vec();
    if settings.protections.loopback {
        m.sets[Kind::Loopback.index()] = vec![v("127.0.0.0/8"), v("::1")];
    }
    if settings.protections.link_local {
        m.sets[Kind::LinkLocal.index()] = vec![v("169.254.0.0/16"), v("fe80::/10")];
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn check_matches_the_model_through_updates(
        allow in prop::collection::vec(arb_value(), 0..8),
        protections in arb_protections(),
        v4 in prop::sample::select(vec![0u8, 8, 16, 24, 32]),
        v6 in prop::sample::select(vec![0u8, 32, 64, 120, 128]),
        steps in prop::collection::vec(
            (arb_kind(), prop::collection::vec(arb_value(), 0..6)), 1..8),
        cache in prop::collection::vec(arb_value(), 1..60),
    ) {
        let (allowlist, _) = AddrSet::from_values(allow.iter().copied());
        let settings = Settings { allowlist, protections, ranges: RangeLimits { v4, v6 } };
        let mut model = model_for(&settings, &allow);
        let mut safety = Safety::new(settings.clone());
        for value in &cache {
            prop_assert_eq!(safety.check(value), model.check(settings.ranges, value));
        }
        for (kind, values) in steps {
            let before: Vec<Verdict> = cache.iter().map(|c| safety.check(c)).collect();
            let generation = safety.generation();
            let up = safety.set_kind(kind, values.iter().copied());
            if protections.enabled(kind) {
                model.sets[kind.index()] = values.clone();
            }
            for (value, old) in cache.iter().zip(before) {
                let new = safety.check(value);
                prop_assert_eq!(new, model.check(settings.ranges, value), "{:?}", value);
                // The update names every value whose verdict flipped, and every value whose
                // reason changed.
                if old.is_enforce() != new.is_enforce() {
                    prop_assert!(up.verdicts.intersects(value), "{:?} flipped unseen", value);
                }
                if old != new {
                    prop_assert!(up.reasons.intersects(value), "{:?} changed unseen", value);
                }
            }
            prop_assert_eq!(safety.generation() == generation, up.is_empty());
        }
    }
}
