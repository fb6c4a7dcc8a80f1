//! Integration tests against the real CrowdSec LAPI (Debian 1.4.6), one instance per test.
//! Requires `scripts/install-crowdsec.sh`; the harness fails (never skips) without it.

use std::time::{Duration, Instant};

use crowdsec_lapi::testing::{Lapi, TestPki};
use crowdsec_lapi::{
    Batch, Change, ClientCert, DecisionCache, LapiClient, LapiConfig, MetricsMeta, MetricsOutcome,
    MetricsWindow, RemediationComponent, UsageMetrics, Value,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

fn client(lapi: &Lapi, name: &str) -> LapiClient {
    let key = lapi.add_bouncer(name);
    LapiClient::new(LapiConfig::new(lapi.url()).with_api_key(key)).expect("client")
}

/// A generous overall deadline for one poll of the test LAPI.
fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

fn v(s: &str) -> Value {
    Value::parse(s).expect("value")
}

fn added(b: &Batch) -> Vec<String> {
    let mut out: Vec<String> = b.adds().iter().map(|a| a.value.to_string()).collect();
    out.sort();
    out
}

fn deleted(b: &Batch) -> Vec<String> {
    let mut out: Vec<String> = b.deletes().iter().map(|d| d.value.to_string()).collect();
    out.sort();
    out.dedup();
    out
}

#[tokio::test]
async fn startup_snapshot_then_delta_add_then_delete() {
    let lapi = Lapi::start();
    lapi.add_decision("192.0.2.1", "4h", &[]);
    let mut c = client(&lapi, "flow");
    c.health().await.expect("health");

    assert!(c.next_poll_is_startup());
    let b = c.poll(deadline()).await.expect("startup poll");
    assert!(b.is_startup());
    assert_eq!(added(&b), ["192.0.2.1"]);
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let ch = cache.apply(&b, t0);
    assert!(
        matches!(&ch[..], [Change::Added { value, origin, expires_at }]
        if *value == v("192.0.2.1") && origin.as_str() == "cscli"
            && *expires_at > t0 + Duration::from_secs(4 * 3600 - 60)
            && *expires_at <= t0 + Duration::from_secs(4 * 3600 + 1))
    );

    // An empty delta is not "no decisions": the cache keeps its state.
    let b = c.poll(deadline()).await.expect("empty delta");
    assert!(!b.is_startup());
    assert!(b.adds().is_empty() && b.deletes().is_empty());
    assert!(cache.apply(&b, Instant::now()).is_empty());
    assert_eq!(cache.len(), 1);

    lapi.add_decision("192.0.2.2", "1h", &[]);
    let b = c.poll(deadline()).await.expect("delta add");
    assert_eq!(added(&b), ["192.0.2.2"]);
    assert_eq!(cache.apply(&b, Instant::now()).len(), 1);

    lapi.delete_decision(&["--ip", "192.0.2.1"]);
    let b = c.poll(deadline()).await.expect("delta delete");
    assert_eq!(deleted(&b), ["192.0.2.1"]);
    assert_eq!(
        cache.apply(&b, Instant::now()),
        vec![Change::Removed {
            value: v("192.0.2.1")
        }]
    );
    assert_eq!(cache.len(), 1);
    assert!(cache.expires_at(&v("192.0.2.2")).is_some());

    // LAPI logs every request: the client used only GET on the stream and /health, never HEAD
    // and never live GET /v1/decisions (both consume deltas on 1.4.6, §3).
    let log = lapi.log();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("tikban/v")).collect();
    assert_eq!(
        ours.iter()
            .filter(|l| l.contains("GET /v1/decisions/stream?startup=true"))
            .count(),
        1
    );
    assert!(
        ours.iter()
            .filter(|l| l.contains("GET /v1/decisions/stream?startup=false"))
            .count()
            >= 3
    );
    assert!(ours.iter().all(|l| !l.contains("HEAD ")
        && !l.contains("GET /v1/decisions?")
        && !l.contains("GET /v1/decisions ")));
}

#[tokio::test]
async fn ranges_ipv6_capitals_and_import_quirks_are_canonicalised() {
    let lapi = Lapi::start();
    lapi.add_decision("10.20.0.0/16", "1h", &[]);
    lapi.add_decision("2001:DB8::ABCD", "1h", &[]);
    // 1.4.6 import keeps values verbatim and forces scope Ip even for CIDRs (§5).
    lapi.import(
        r#"[{"value":"192.0.2.77/24","duration":"1h"},{"value":"::ffff:198.51.100.55","duration":"1h"},{"value":"203.0.113.9/32","duration":"1h"}]"#,
        &[],
    );
    let mut c = client(&lapi, "canon");
    let b = c.poll(deadline()).await.expect("poll");
    assert_eq!(
        added(&b),
        [
            "10.20.0.0/16",
            "192.0.2.0/24",
            "198.51.100.55",
            "2001:db8::abcd",
            "203.0.113.9"
        ]
    );
    let v6 = b.adds().iter().find(|a| a.value.is_ipv6()).expect("v6");
    assert_eq!(v6.value.to_string(), "2001:db8::abcd");
    let imported = b
        .adds()
        .iter()
        .find(|a| a.value == v("192.0.2.0/24"))
        .expect("import");
    assert_eq!(imported.origin.as_str(), "cscli-import");
}

#[tokio::test]
async fn decision_types_are_filtered_on_the_client() {
    let lapi = Lapi::start();
    lapi.add_decision("192.0.2.10", "1h", &["--type", "captcha"]);
    lapi.add_decision("192.0.2.11", "1h", &[]);
    let mut c = client(&lapi, "types");
    let b = c.poll(deadline()).await.expect("poll");
    assert_eq!(added(&b), ["192.0.2.11"]);
    assert_eq!(b.filtered_by_type(), 1);

    let key = lapi.add_bouncer("types-captcha");
    let mut cfg = LapiConfig::new(lapi.url()).with_api_key(key);
    cfg.decision_types = vec!["BAN".into(), "Captcha".into()];
    let mut c = LapiClient::new(cfg).expect("client");
    assert_eq!(
        added(&c.poll(deadline()).await.expect("poll")),
        ["192.0.2.10", "192.0.2.11"]
    );
}

#[tokio::test]
async fn two_decisions_on_one_ip_the_shorter_expiring_does_not_unban() {
    let lapi = Lapi::start();
    let mut c = client(&lapi, "overlap");
    lapi.add_decision("192.0.2.20", "3s", &[]);
    let t0 = Instant::now();
    let mut cache = DecisionCache::new(t0);
    let b = c.poll(deadline()).await.expect("startup");
    cache.apply(&b, Instant::now());
    lapi.add_decision("192.0.2.20", "1h", &[]);
    let b = c.poll(deadline()).await.expect("delta");
    assert_eq!(added(&b), ["192.0.2.20"]);
    cache.apply(&b, Instant::now());
    assert_eq!(
        cache.holders(&v("192.0.2.20")),
        2,
        "both decision ids are tracked"
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    let b = c
        .poll(deadline())
        .await
        .expect("delta after the short one expired");
    // Whether or not LAPI reports the short one as deleted, the value must stay banned.
    cache.apply(&b, Instant::now());
    let gone = cache.expire(Instant::now());
    assert!(gone.is_empty(), "early unban: {gone:?}");
    assert_eq!(cache.holders(&v("192.0.2.20")), 1);
    let left = cache.expires_at(&v("192.0.2.20")).expect("still banned");
    assert!(left > Instant::now() + Duration::from_secs(3500));
}

#[tokio::test]
async fn repeated_deletes_in_the_two_second_overlap_are_idempotent() {
    let lapi = Lapi::start();
    lapi.add_decision("192.0.2.30", "1h", &[]);
    lapi.add_decision("192.0.2.31", "1h", &[]);
    let mut c = client(&lapi, "dup");
    let mut cache = DecisionCache::new(Instant::now());
    cache.apply(&c.poll(deadline()).await.expect("startup"), Instant::now());
    lapi.delete_decision(&["--ip", "192.0.2.30"]);
    let b1 = c.poll(deadline()).await.expect("delta 1");
    let b2 = c.poll(deadline()).await.expect("delta 2");
    assert_eq!(deleted(&b1), ["192.0.2.30"]);
    // Seen on 1.4.6: the same deletion comes again within the 2-second overlap (§3).
    assert_eq!(
        deleted(&b2),
        ["192.0.2.30"],
        "LAPI did not repeat the delete"
    );
    assert_eq!(
        cache.apply(&b1, Instant::now()),
        vec![Change::Removed {
            value: v("192.0.2.30")
        }]
    );
    assert_eq!(cache.apply(&b2, Instant::now()), vec![]);
    assert_eq!(cache.len(), 1);
}

#[tokio::test]
async fn bad_api_key_is_a_clear_error_without_the_key() {
    let lapi = Lapi::start();
    let _real = lapi.add_bouncer("real");
    let secret = "definitely-wrong-key-0123456789";
    let mut c = LapiClient::new(LapiConfig::new(lapi.url()).with_api_key(secret)).expect("client");
    let err = c.poll(deadline()).await.expect_err("wrong key must fail");
    assert!(err.is_auth(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("403") && text.contains("access forbidden"),
        "{text}"
    );
    assert!(!text.contains(secret), "{text}");
    assert!(!format!("{err:?}").contains(secret));
    assert!(!format!("{c:?}").contains(secret));
    assert!(
        c.next_poll_is_startup(),
        "a failed poll re-syncs with a snapshot"
    );
}

#[tokio::test]
async fn origins_filter_is_passed_to_lapi() {
    let lapi = Lapi::start();
    lapi.add_decision("192.0.2.40", "1h", &[]);
    lapi.import(r#"[{"value":"192.0.2.41","duration":"1h"}]"#, &[]);
    let key = lapi.add_bouncer("origins");
    let mut cfg = LapiConfig::new(lapi.url()).with_api_key(key);
    cfg.origins = vec!["cscli-import".into()];
    let mut c = LapiClient::new(cfg).expect("client");
    let b = c.poll(deadline()).await.expect("poll");
    assert_eq!(added(&b), ["192.0.2.41"]);
    assert_eq!(b.adds()[0].origin.as_str(), "cscli-import");
}

#[tokio::test]
async fn user_agent_fills_type_and_version_and_metrics_404_disables_the_feature() {
    let lapi = Lapi::start();
    let mut c = client(&lapi, "ua");
    c.poll(deadline()).await.expect("poll");
    let list = lapi.cscli(&["bouncers", "list", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&list).expect("bouncers json");
    let row = rows
        .as_array()
        .and_then(|r| r.iter().find(|b| b["name"] == "ua"))
        .expect("bouncer row");
    assert_eq!(row["type"], "tikban");
    assert_eq!(row["version"], format!("v{}", env!("CARGO_PKG_VERSION")));

    let m = UsageMetrics::new(RemediationComponent {
        kind: "tikban".into(),
        name: None,
        version: format!("v{}", env!("CARGO_PKG_VERSION")),
        utc_startup_timestamp: 1_700_000_000,
        os: None,
        feature_flags: vec![],
        metrics: vec![MetricsWindow {
            meta: MetricsMeta {
                window_size_seconds: 1800,
                utc_now_timestamp: 1_700_001_800,
            },
            items: vec![],
        }],
    });
    // 1.4.6 has no usage-metrics route: 404, logged once, then no more requests.
    assert_eq!(
        c.push_usage_metrics(&m).await.expect("push"),
        MetricsOutcome::Unsupported
    );
    assert_eq!(
        c.push_usage_metrics(&m).await.expect("push"),
        MetricsOutcome::Unsupported
    );
    let hits = lapi.log().matches("/v1/usage-metrics").count();
    // LAPI logs every request line; exactly one POST went out.
    assert_eq!(hits, 1, "usage-metrics requested {hits} times");
    assert!(lapi.log().contains("POST /v1/usage-metrics HTTP/1.1 404"));
    // The connection is still usable afterwards.
    c.poll(deadline()).await.expect("poll after metrics");
}

#[tokio::test]
async fn mtls_client_certificate_ou_decides_access() {
    let pki = TestPki::new();
    let lapi = Lapi::start_tls(&pki);
    lapi.add_decision("192.0.2.50", "1h", &[]);

    let tls_client = |ou: &str| {
        let (cert, key) = pki.client_cert("tikban-test", ou);
        let mut cfg = LapiConfig::new(lapi.url());
        cfg.ca_certs = vec![CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA")];
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
        cfg.client_cert = Some(ClientCert::new(chain, key).expect("client cert"));
        LapiClient::new(cfg).expect("client")
    };
    let mut ok = tls_client("bouncer-ou");
    let b = ok.poll(deadline()).await.expect("bouncer-ou accepted");
    assert_eq!(added(&b), ["192.0.2.50"]);
    ok.health().await.expect("health over TLS");

    let mut refused = tls_client("agent-ou");
    let err = refused
        .poll(deadline())
        .await
        .expect_err("wrong OU refused");
    assert!(err.is_auth(), "{err}");

    // Without the test CA the server certificate is not trusted.
    let mut cfg = LapiConfig::new(lapi.url()).with_api_key("unused");
    cfg.connect_timeout = Duration::from_secs(5);
    let mut untrusted = LapiClient::new(cfg).expect("client");
    let err = untrusted
        .poll(deadline())
        .await
        .expect_err("untrusted server");
    assert!(matches!(err, crowdsec_lapi::LapiError::Tls { .. }), "{err}");
}

/// The 1.4.6 poison pill (issue 17): `cscli decisions add --reason <17 KB>` makes a decision whose
/// `scenario` is larger than the element cap. It is skipped and counted; the normal decisions of
/// the same body apply, and later polls keep working (before, the whole body was rejected, for
/// good). In `deleted` the scenario is an unused field, so the deletion parses.
#[tokio::test]
async fn an_oversized_decision_is_skipped_and_counted_and_the_rest_applies() {
    let lapi = Lapi::start();
    lapi.add_decision("192.0.2.31", "1h", &[]);
    let reason = "r".repeat(17_000);
    lapi.add_decision("192.0.2.32", "1h", &["--reason", &reason]);
    lapi.add_decision("192.0.2.33", "1h", &[]);
    let mut c = client(&lapi, "poison");
    let b = c.poll(deadline()).await.expect("the body applies");
    assert_eq!(added(&b), ["192.0.2.31", "192.0.2.33"]);
    let stats = b.stats();
    assert_eq!((stats.oversized, stats.skipped), (1, 0));
    let first = stats.first_oversized.expect("first oversized element");
    assert_eq!(first.value, Some(v("192.0.2.32")));
    assert!(first.id.is_some());

    lapi.add_decision("192.0.2.34", "1h", &[]);
    let b = c.poll(deadline()).await.expect("the next delta works");
    assert_eq!(added(&b), ["192.0.2.34"]);

    lapi.delete_decision(&["--ip", "192.0.2.32"]);
    let b = c.poll(deadline()).await.expect("delta with the deletion");
    assert_eq!(deleted(&b), ["192.0.2.32"]);
    assert_eq!(b.stats().oversized, 0);
}
