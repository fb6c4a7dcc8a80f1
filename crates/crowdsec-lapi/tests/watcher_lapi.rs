//! The watcher against the real CrowdSec LAPI (Debian 1.4.6), one instance per test: login,
//! alerts shared with every bouncer, allowlists unsupported, mTLS agents.
//! Requires `scripts/install-crowdsec.sh`; the harness fails (never skips) without it.

use std::time::{Duration, SystemTime};

use crowdsec_lapi::testing::{Lapi, TestPki};
use crowdsec_lapi::{
    Alert, AllowlistAnswer, BanAlert, ClientCert, LapiClient, LapiConfig, Value, Watcher,
    WatcherConfig, WatcherError,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

const SCENARIO: &str = "tikban/routeros-login-bf";

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

fn watcher(lapi: &Lapi, name: &str) -> Watcher {
    let (id, password) = lapi.add_machine(name);
    let mut cfg = WatcherConfig::new(lapi.url(), id, password);
    cfg.scenarios = vec![SCENARIO.into()];
    Watcher::new(cfg).expect("watcher")
}

fn ban(ip: &str) -> Alert {
    let now = SystemTime::now();
    let mut a = Alert::ban(&BanAlert {
        scenario: SCENARIO,
        scenario_version: "0.1",
        source: Value::parse(ip).expect("ip"),
        duration: Duration::from_secs(4 * 3600),
        first_seen: now - Duration::from_secs(30),
        last_seen: now,
        events_count: 6,
        capacity: 5,
        leakspeed: Duration::from_secs(10),
        message: None,
    });
    a.add_event(
        now - Duration::from_secs(30),
        &[
            ("log_type", "routeros_login_failed"),
            ("source_ip", ip),
            ("target_user", "admin"),
            ("service", "winbox"),
        ],
    );
    a
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("cscli json")
}

/// The guard's path end to end: the alert lands in LAPI with its decision, and another
/// bouncer's stream carries the ban with origin `crowdsec`.
#[tokio::test]
async fn a_pushed_ban_reaches_lapi_and_every_bouncer() {
    let lapi = Lapi::start();
    let mut w = watcher(&lapi, "guard");
    w.login(deadline()).await.expect("login");
    assert_eq!(w.logins(), 1);
    let offset = w.clock_offset().expect("LAPI sends Date");
    assert!(offset.abs() <= 2, "same host, same clock: {offset}");
    let refresh = w.token_refresh_at().expect("token");
    // 1.4.6 tokens last one hour; renewal is planned a minute before.
    let left = refresh - tokio::time::Instant::now();
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3540),
        "{left:?}"
    );

    // One alert with evidence, one without (`events: []` is accepted).
    let mut bare = ban("2001:DB8::77");
    bare.events.clear();
    let ids = w
        .push_alerts(&[ban("192.0.2.77"), bare], deadline())
        .await
        .expect("push");
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.iter().all(|id| id.parse::<u64>().is_ok()), "{ids:?}");
    assert_eq!(w.logins(), 1, "the token was reused");

    let alerts = json(&lapi.cscli(&["alerts", "list", "-o", "json"]));
    let a = alerts
        .as_array()
        .and_then(|l| l.iter().find(|a| a["source"]["ip"] == "192.0.2.77"))
        .unwrap_or_else(|| panic!("alert not listed: {alerts}"));
    assert_eq!(a["scenario"], SCENARIO);
    assert_eq!(a["machine_id"], "guard");
    assert_eq!(a["events_count"], 6);
    assert_eq!(a["simulated"], false);
    let meta = &a["events"][0]["meta"];
    assert!(
        meta.as_array().is_some_and(|m| m
            .iter()
            .any(|kv| kv["key"] == "target_user" && kv["value"] == "admin")),
        "{meta}"
    );

    let decisions = json(&lapi.cscli(&["decisions", "list", "-o", "json"]));
    let d: Vec<&serde_json::Value> = decisions
        .as_array()
        .map(|l| {
            l.iter()
                .flat_map(|a| a["decisions"].as_array().into_iter().flatten())
                .collect()
        })
        .unwrap_or_default();
    let d4 = d
        .iter()
        .find(|d| d["value"] == "192.0.2.77")
        .unwrap_or_else(|| panic!("decision not listed: {decisions}"));
    assert_eq!(d4["origin"], "crowdsec");
    assert_eq!(d4["type"], "ban");
    assert_eq!(d4["scope"], "Ip");
    assert_eq!(d4["scenario"], SCENARIO);
    assert!(
        d.iter().any(|d| d["value"] == "2001:db8::77"),
        "{decisions}"
    );

    // Another bouncer, a fresh key: its stream carries both bans.
    let key = lapi.add_bouncer("firewall");
    let mut bouncer =
        LapiClient::new(LapiConfig::new(lapi.url()).with_api_key(key)).expect("client");
    let batch = bouncer.poll(deadline()).await.expect("poll");
    let mut seen: Vec<(String, String)> = batch
        .adds()
        .iter()
        .map(|a| (a.value.to_string(), a.origin.as_str().to_owned()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("192.0.2.77".to_owned(), "crowdsec".to_owned()),
            ("2001:db8::77".to_owned(), "crowdsec".to_owned())
        ]
    );
    let until = batch.adds()[0].duration.to_std().expect("positive");
    assert!(
        until > Duration::from_secs(4 * 3600 - 120) && until <= Duration::from_secs(4 * 3600),
        "the ban lasts 4 h from the last event: {until:?}"
    );

    // The machine row: the User-Agent filled the version, the login the scenarios.
    let machines = json(&lapi.cscli(&["machines", "list", "-o", "json"]));
    let m = machines
        .as_array()
        .and_then(|l| l.iter().find(|m| m["machineId"] == "guard"))
        .unwrap_or_else(|| panic!("machine row: {machines}"));
    assert_eq!(m["version"], format!("v{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(m["scenarios"], SCENARIO);

    let log = lapi.log();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("tikban/v")).collect();
    assert_eq!(
        ours.iter()
            .filter(|l| l.contains("POST /v1/watchers/login HTTP/1.1 200"))
            .count(),
        1,
        "{ours:#?}"
    );
    assert_eq!(
        ours.iter()
            .filter(|l| l.contains("POST /v1/alerts HTTP/1.1 201"))
            .count(),
        1,
        "{ours:#?}"
    );
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_without_the_password() {
    let lapi = Lapi::start();
    let (id, _real) = lapi.add_machine("guard");
    let secret = "definitely-wrong-password-0123456789";
    let mut w = Watcher::new(WatcherConfig::new(lapi.url(), id, secret)).expect("watcher");
    let err = w.login(deadline()).await.expect_err("refused");
    assert!(
        matches!(err, WatcherError::LoginRefused { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.is_auth() && err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("incorrect Username or Password"), "{text}");
    assert!(text.contains("\"guard\""), "{text}");
    for shown in [text, format!("{err:?}"), format!("{w:?}")] {
        assert!(!shown.contains(secret), "{shown}");
    }
    // A push logs in first and fails the same way; nothing was pushed.
    let err = w
        .push_alerts(&[ban("192.0.2.78")], deadline())
        .await
        .expect_err("refused");
    assert!(err.is_auth(), "{err}");
    assert_eq!(w.token_refresh_at(), None);

    // An unknown machine: LAPI says so.
    let mut w = Watcher::new(WatcherConfig::new(lapi.url(), "nobody", secret)).expect("watcher");
    let err = w.login(deadline()).await.expect_err("unknown machine");
    assert!(err.to_string().contains("machine not found"), "{err}");
}

#[tokio::test]
async fn allowlist_check_is_unsupported_on_1_4_6_and_asked_once() {
    let lapi = Lapi::start();
    let mut w = watcher(&lapi, "guard");
    for ip in ["192.0.2.79", "2001:db8::79"] {
        let answer = w
            .allowlist_check(ip.parse().expect("ip"), deadline())
            .await
            .expect("check");
        assert_eq!(answer, AllowlistAnswer::Unsupported);
    }
    let log = lapi.log();
    let asked: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("/v1/allowlists/check/"))
        .collect();
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert!(
        asked[0].contains("GET /v1/allowlists/check/192.0.2.79 HTTP/1.1 404"),
        "{asked:#?}"
    );
}

/// mTLS for agents: a certificate whose OU is in `agents_allowed_ou` logs in without a password,
/// as `<CN>@<ip>`; one with the bouncers' OU is refused.
#[tokio::test]
async fn an_agent_certificate_logs_in_without_a_password() {
    let pki = TestPki::new();
    let lapi = Lapi::start_tls(&pki);
    let tls_watcher = |ou: &str| {
        let (cert, key) = pki.client_cert("tikban-guard", ou);
        let mut cfg = WatcherConfig::new(lapi.url(), "", "");
        cfg.password = None;
        cfg.ca_certs = vec![CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA")];
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
        cfg.client_cert = Some(ClientCert::new(chain, key).expect("client cert"));
        cfg.scenarios = vec![SCENARIO.into()];
        Watcher::new(cfg).expect("watcher")
    };
    let mut ok = tls_watcher("agent-ou");
    let ids = ok
        .push_alerts(&[ban("192.0.2.80")], deadline())
        .await
        .expect("agent-ou accepted");
    assert_eq!(ids.len(), 1);
    let machines = json(&lapi.cscli(&["machines", "list", "-o", "json"]));
    assert!(
        machines.as_array().is_some_and(|l| l
            .iter()
            .any(|m| m["machineId"] == "tikban-guard@127.0.0.1" && m["auth_type"] == "tls")),
        "{machines}"
    );

    let mut refused = tls_watcher("bouncer-ou");
    let err = refused.login(deadline()).await.expect_err("wrong OU");
    assert!(err.is_auth(), "{err}");
}
