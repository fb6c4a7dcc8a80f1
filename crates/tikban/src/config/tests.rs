use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Instant;

use super::check::parse_host;
use super::*;

fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

const MINIMAL: &[(&str, &str)] = &[
    ("CROWDSEC_URL", "http://127.0.0.1:8080"),
    ("CROWDSEC_BOUNCER_API_KEY", "k3y-s3cr3t"),
    ("MIKROTIK_PASS", "p4ss-s3cr3t"),
];

#[test]
fn minimal_environment_gets_documented_defaults() {
    let c = env(MINIMAL).unwrap();
    assert_eq!(c.lapi.update_frequency, Duration::from_secs(10));
    assert_eq!(c.lapi.scopes, ["ip", "range"]);
    assert_eq!(c.lapi.decision_types, ["ban"]);
    assert_eq!(c.lapi.metrics_interval, Some(Duration::from_secs(1800)));
    assert_eq!(c.router.port, 8728);
    assert_eq!(c.router.window, 64);
    assert_eq!(c.lists.v4.as_deref(), Some("crowdsec-banned"));
    assert_eq!(c.lists.v6.as_deref(), Some("crowdsec6-banned"));
    assert_eq!(c.lists.comment_prefix, "tikban");
    assert_eq!(c.reconciliation_interval, Duration::from_secs(3600));
    assert_eq!(c.metrics, Some("0.0.0.0:2112".parse().unwrap()));
    assert!(!c.log.json);
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(c.lapi.api_key.as_ref().unwrap()),
        "k3y-s3cr3t"
    );
}

#[test]
fn reports_every_problem_at_once_without_secrets() {
    let err = env(&[
        ("CROWDSEC_URL", "ftp://x"),
        ("CROWDSEC_UPDATE_FREQUENCY", "soon"),
        ("MIKROTIK_HOST", "a b"),
        ("MIKROTIK_TLS", "maybe"),
        ("MIKROTIK_PIPELINE_WINDOW", "0"),
        ("LOG_FORMAT", "xml"),
        ("METRICS_PORT", "70000"),
        ("CROWDSEC_KEY_PEM", "not-pem-s3cr3t"),
    ])
    .unwrap_err();
    let vars: Vec<&str> = err.problems.iter().map(|p| p.var).collect();
    for want in [
        "CROWDSEC_URL",
        "CROWDSEC_UPDATE_FREQUENCY",
        // A key without a certificate: mTLS was meant, so the missing API key is not reported.
        "CROWDSEC_CERT_PATH",
        "CROWDSEC_KEY_PEM",
        "MIKROTIK_HOST",
        "MIKROTIK_PASS",
        "MIKROTIK_TLS",
        "MIKROTIK_PIPELINE_WINDOW",
        "LOG_FORMAT",
        "METRICS_PORT",
    ] {
        assert!(vars.contains(&want), "{want} missing from {err}");
    }
    let text = err.to_string();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(
        text.contains("\"soon\""),
        "non-secret values are quoted: {text}"
    );
}

#[test]
fn secrets_are_redacted_in_debug() {
    let c = env(MINIMAL).unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("s3cr3t"), "{dbg}");
    assert!(dbg.contains("REDACTED"));
}

#[test]
fn origins_accept_spaces_and_commas() {
    let mut vars = MINIMAL.to_vec();
    vars.push(("CROWDSEC_ORIGINS", "crowdsec cscli,CAPI , lists"));
    let c = env(&vars).unwrap();
    assert_eq!(c.lapi.origins, ["crowdsec", "cscli", "CAPI", "lists"]);
}

#[test]
fn empty_values_count_as_unset() {
    let mut vars = MINIMAL.to_vec();
    vars.push(("CROWDSEC_UPDATE_FREQUENCY", ""));
    vars.push(("MIKROTIK_HOST", " "));
    let c = env(&vars).unwrap();
    assert_eq!(c.lapi.update_frequency, Duration::from_secs(10));
    assert_eq!(c.router.host, "172.17.0.1");
}

#[test]
fn tls_needs_a_pin_or_ca_and_changes_the_default_port() {
    let mut vars = MINIMAL.to_vec();
    vars.push(("MIKROTIK_TLS", "true"));
    let err = env(&vars).unwrap_err();
    assert_eq!(err.problems[0].var, "MIKROTIK_TLS");
    let fp = "AB:".repeat(31) + "AB";
    vars.push(("MIKROTIK_TLS_FINGERPRINT", &fp));
    let c = env(&vars).unwrap();
    assert_eq!(c.router.port, 8729);
    assert_eq!(c.router.tls, Some(RouterTls::Fingerprint([0xAB; 32])));
}

#[test]
fn host_forms() {
    assert_eq!(parse_host("10.0.0.1"), Some(("10.0.0.1".into(), None)));
    assert_eq!(
        parse_host("router.lan:8729"),
        Some(("router.lan".into(), Some(8729)))
    );
    assert_eq!(parse_host("fd00::1"), Some(("fd00::1".into(), None)));
    assert_eq!(
        parse_host("[fd00::1]:8728"),
        Some(("fd00::1".into(), Some(8728)))
    );
    assert_eq!(parse_host("host:99999"), None);
    assert_eq!(parse_host(""), None);
    assert_eq!(parse_host("[zz]:1"), None);
}

#[test]
fn durations_in_go_and_humantime_forms() {
    let s = Duration::from_secs;
    assert_eq!(parse_duration("10s"), Some(s(10)));
    assert_eq!(parse_duration("1h30m"), Some(s(5400)));
    assert_eq!(parse_duration("1h 30m"), Some(s(5400)));
    assert_eq!(parse_duration("1.5h"), Some(s(5400)));
    assert_eq!(parse_duration("2days"), Some(s(172_800)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_duration("10"), None);
    assert_eq!(parse_duration("-1s"), None);
    assert_eq!(parse_duration("1x"), None);
    assert_eq!(parse_duration(""), None);
}

#[test]
fn metrics_interval_zero_disables_and_short_is_refused() {
    let mut vars = MINIMAL.to_vec();
    vars.push(("CROWDSEC_LAPI_METRICS_INTERVAL", "0"));
    assert_eq!(env(&vars).unwrap().lapi.metrics_interval, None);
    vars.pop();
    vars.push(("CROWDSEC_LAPI_METRICS_INTERVAL", "5m"));
    assert_eq!(
        env(&vars).unwrap_err().problems[0].var,
        "CROWDSEC_LAPI_METRICS_INTERVAL"
    );
}

/// A self-signed EC certificate and its key (PEM), shared with crowdsec-lapi's tests.
const CERT_PEM: &str = include_str!("../../../crowdsec-lapi/src/testdata/client.pem");
const KEY_PEM: &str = include_str!("../../../crowdsec-lapi/src/testdata/client-key.pem");

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn client_certificate_replaces_the_api_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write(&dir, "bouncer.pem", CERT_PEM);
    let key = write(&dir, "bouncer-key.pem", KEY_PEM);
    let err = env(&[
        ("CROWDSEC_URL", "https://lapi:8080"),
        ("CROWDSEC_CERT_PATH", &cert),
        ("MIKROTIK_PASS", "x"),
    ])
    .unwrap_err();
    assert_eq!(err.problems[0].var, "CROWDSEC_KEY_PATH");
    let c = env(&[
        ("CROWDSEC_URL", "https://lapi:8080"),
        ("CROWDSEC_CERT_PATH", &cert),
        ("CROWDSEC_KEY_PATH", &key),
        ("CROWDSEC_BOUNCER_API_KEY", "ignored"),
        ("MIKROTIK_PASS", "x"),
    ])
    .unwrap();
    assert!(c.lapi.api_key.is_none());
    assert_eq!(
        c.lapi.client_cert.as_ref().map(|c| c.chain().len()),
        Some(1)
    );
    // Inline PEM works the same way.
    let c = env(&[
        ("CROWDSEC_URL", "https://lapi:8080"),
        ("CROWDSEC_CERT_PEM", CERT_PEM),
        ("CROWDSEC_KEY_PEM", KEY_PEM),
        ("CROWDSEC_CA_CERT_PEM", CERT_PEM),
        ("MIKROTIK_PASS", "x"),
    ])
    .unwrap();
    assert!(c.lapi.client_cert.is_some());
    assert_eq!(c.lapi.ca.len(), 1);
    let dbg = format!("{c:?}");
    assert!(!dbg.contains(&KEY_PEM[30..60]), "{dbg}");
}

#[test]
fn pem_problems_are_reported_at_configuration_time() {
    let dir = tempfile::tempdir().unwrap();
    let two_keys = write(&dir, "two.pem", &format!("{KEY_PEM}{KEY_PEM}"));
    let no_cert = write(&dir, "nocert.pem", KEY_PEM);
    let missing = dir.path().join("missing.pem").display().to_string();
    let err = env(&[
        ("CROWDSEC_URL", "https://lapi:8080"),
        ("CROWDSEC_CERT_PATH", &no_cert),
        ("CROWDSEC_KEY_PATH", &two_keys),
        ("CROWDSEC_CA_CERT_PATH", &missing),
        ("MIKROTIK_PASS", "x"),
        ("MIKROTIK_TLS", "true"),
        (
            "MIKROTIK_TLS_CA",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        ),
    ])
    .unwrap_err();
    let text = err.to_string();
    for want in [
        "CROWDSEC_CERT_PATH: file",
        "holds no CERTIFICATE block",
        "CROWDSEC_KEY_PATH: file",
        "holds 2 private keys; expected exactly one",
        "CROWDSEC_CA_CERT_PATH: file",
        "cannot be read",
        "MIKROTIK_TLS_CA: the PEM text is not valid PEM",
    ] {
        assert!(text.contains(want), "{want:?} missing from {text}");
    }
    assert!(!text.contains("MIKROTIK_TLS:"), "{text}");
    assert!(!text.contains(&KEY_PEM[30..60]), "{text}");
}

#[test]
fn a_key_that_does_not_fit_is_a_configuration_problem() {
    // Valid PEM framing around bytes that are no key: caught before any connection.
    let key = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXJrZXI=\n-----END PRIVATE KEY-----\n";
    let err = env(&[
        ("CROWDSEC_URL", "https://lapi:8080"),
        ("CROWDSEC_CERT_PEM", CERT_PEM),
        ("CROWDSEC_KEY_PEM", key),
        ("MIKROTIK_PASS", "x"),
    ])
    .unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].var, "CROWDSEC_KEY_PEM");
    assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
}

#[test]
fn both_families_disabled_is_an_error() {
    let mut vars = MINIMAL.to_vec();
    vars.push(("FIREWALL_IPV4_ENABLED", "false"));
    vars.push(("FIREWALL_IPV6_ENABLED", "no"));
    assert_eq!(
        env(&vars).unwrap_err().problems[0].var,
        "FIREWALL_IPV4_ENABLED"
    );
}

#[test]
fn raw_env_has_a_field_for_every_var() {
    // Each documented variable must reach its field: set alone, it changes the raw env.
    let empty = format!("{:?}", RawEnv::default());
    for v in VARS {
        let raw: RawEnv = envy::from_iter([(v.name.to_string(), "x".to_string())]).unwrap();
        let dbg = format!("{raw:?}");
        assert_ne!(dbg, empty, "{} does not map to a RawEnv field", v.name);
        if v.secret {
            assert!(!dbg.contains("\"x\""), "{} printed by Debug: {dbg}", v.name);
        } else {
            assert!(dbg.contains("Some(\"x\")"), "{}: {dbg}", v.name);
        }
    }
}

#[test]
fn raw_env_debug_never_prints_a_secret() {
    let raw: RawEnv = envy::from_iter([
        ("MIKROTIK_PASS".to_string(), "p4ss-s3cr3t".to_string()),
        (
            "CROWDSEC_BOUNCER_API_KEY".to_string(),
            "k3y-s3cr3t".to_string(),
        ),
        ("CROWDSEC_KEY_PEM".to_string(), "pem-s3cr3t".to_string()),
    ])
    .unwrap();
    let dbg = format!("{raw:?} {raw:#?}");
    assert!(!dbg.contains("s3cr3t"), "{dbg}");
}

fn os(pairs: &[(&[u8], &[u8])]) -> Vec<(OsString, OsString)> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                OsString::from_vec(k.to_vec()),
                OsString::from_vec(v.to_vec()),
            )
        })
        .collect()
}

#[test]
fn non_utf8_bytes_in_other_variables_are_ignored() {
    let c = Config::from_vars_os(os(&[
        (b"CROWDSEC_URL", b"http://127.0.0.1:8080"),
        (b"CROWDSEC_BOUNCER_API_KEY", b"k3y"),
        (b"MIKROTIK_PASS", b"p4ss"),
        (b"UNRELATED", b"\xff\xfe"),
        (b"\xffNAME", b"x"),
    ]))
    .unwrap();
    assert_eq!(c.router.user, "tikban");
}

#[test]
fn a_non_utf8_value_of_ours_is_one_problem_without_the_bytes() {
    let err = Config::from_vars_os(os(&[
        (b"CROWDSEC_URL", b"http://127.0.0.1:8080"),
        (b"CROWDSEC_BOUNCER_API_KEY", b"k3y"),
        (b"MIKROTIK_PASS", b"s3cr3t\xff"),
        (b"LOG_FORMAT", b"x\xffml"),
    ]))
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.problems.len(), 2, "{text}");
    assert_eq!(err.problems[0].var, "MIKROTIK_PASS");
    assert!(
        err.problems[0].message.contains("not valid UTF-8"),
        "{text}"
    );
    assert_eq!(err.problems[1].var, "LOG_FORMAT");
    assert!(
        !text.contains("s3cr3t") && !text.contains("required"),
        "{text}"
    );
}

#[test]
fn echoed_values_are_escaped_and_truncated() {
    let long = format!("1x\n\u{1b}[31m{}", "y".repeat(127 * 1024));
    let err = env(&[
        ("CROWDSEC_URL", "http://127.0.0.1:8080"),
        ("MIKROTIK_PASS", "p"),
        ("CROWDSEC_BOUNCER_API_KEY", "k"),
        ("CROWDSEC_UPDATE_FREQUENCY", &long),
        ("LOG_FORMAT", &long),
    ])
    .unwrap_err();
    let text = err.to_string();
    assert!(text.len() < 1000, "{} bytes", text.len());
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert_eq!(text.matches("\"1x\\n\\u{1b}[31myyy").count(), 2, "{text}");
    assert_eq!(text.matches('…').count(), 2, "{text}");
}

#[test]
fn lengths_are_bounded_with_clear_messages() {
    let host = "h".repeat(MAX_HOST + 1);
    let list = "l".repeat(MAX_LIST_NAME + 1);
    let prefix = "p".repeat(MAX_COMMENT_PREFIX + 1);
    let user = "u".repeat(MAX_USER + 1);
    let url = format!("http://{}", "a".repeat(MAX_URL));
    let err = env(&[
        ("CROWDSEC_URL", &url),
        ("CROWDSEC_BOUNCER_API_KEY", "k"),
        ("MIKROTIK_PASS", "p"),
        ("MIKROTIK_HOST", &host),
        ("MIKROTIK_USER", &user),
        ("FIREWALL_IPV4_ADDRESS_LIST", &list),
        ("FIREWALL_IPV6_ADDRESS_LIST", &list),
        ("FIREWALL_COMMENT_PREFIX", &prefix),
    ])
    .unwrap_err();
    let text = err.to_string();
    for want in [
        format!(
            "CROWDSEC_URL: is {} characters long; a URL is at most {MAX_URL}",
            MAX_URL + 7
        ),
        format!(
            "MIKROTIK_HOST: is {} characters long; a host name is at most {MAX_HOST}",
            MAX_HOST + 1
        ),
        format!(
            "MIKROTIK_USER: is {} characters long; a user name is at most {MAX_USER}",
            MAX_USER + 1
        ),
        format!(
            "FIREWALL_IPV4_ADDRESS_LIST: is {} characters long; an address-list name is at most {MAX_LIST_NAME}",
            MAX_LIST_NAME + 1
        ),
        format!(
            "FIREWALL_IPV6_ADDRESS_LIST: is {} characters long",
            MAX_LIST_NAME + 1
        ),
        format!(
            "FIREWALL_COMMENT_PREFIX: is {} characters long; the comment prefix is at most {MAX_COMMENT_PREFIX}",
            MAX_COMMENT_PREFIX + 1
        ),
    ] {
        assert!(text.contains(&want), "{want:?} missing from {text}");
    }
    // At the limits everything is accepted.
    let host = "h".repeat(MAX_HOST);
    let list = "l".repeat(MAX_LIST_NAME);
    let prefix = "p".repeat(MAX_COMMENT_PREFIX);
    env(&[
        ("CROWDSEC_URL", "http://127.0.0.1:8080"),
        ("CROWDSEC_BOUNCER_API_KEY", "k"),
        ("MIKROTIK_PASS", "p"),
        ("MIKROTIK_HOST", &host),
        ("FIREWALL_IPV4_ADDRESS_LIST", &list),
        ("FIREWALL_COMMENT_PREFIX", &prefix),
    ])
    .unwrap();
}

#[test]
fn credentials_in_the_url_are_refused_and_never_echoed() {
    let err = env(&[
        ("CROWDSEC_URL", "http://bob:PASSWORD@lapi:8080/"),
        ("CROWDSEC_BOUNCER_API_KEY", "k"),
        ("MIKROTIK_PASS", "p"),
    ])
    .unwrap_err();
    let text = err.to_string();
    assert!(
        !text.contains("PASSWORD") && !text.contains("bob"),
        "{text}"
    );
    assert!(text.contains("http://<redacted>@lapi:8080/"), "{text}");
    assert!(text.contains("must not carry credentials"), "{text}");
}

/// `/dev/zero`, a FIFO, a directory and a 100 MB sparse file: each refused from its metadata,
/// at once (a read would never end, block, fail, or take 100 MB).
#[test]
fn pem_paths_that_are_not_small_regular_files_are_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.pem");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    let sparse = dir.path().join("sparse.pem");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(100 * 1024 * 1024)
        .unwrap();
    let started = Instant::now();
    let err = env(&[
        ("CROWDSEC_URL", "https://lapi:8080"),
        ("MIKROTIK_PASS", "p4ss-s3cr3t"),
        ("CROWDSEC_CA_CERT_PATH", "/dev/zero"),
        ("CROWDSEC_CERT_PATH", fifo.to_str().unwrap()),
        ("CROWDSEC_KEY_PATH", dir.path().to_str().unwrap()),
        ("MIKROTIK_TLS", "true"),
        ("MIKROTIK_TLS_CA", sparse.to_str().unwrap()),
    ])
    .unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let text = err.to_string();
    for want in [
        "CROWDSEC_CERT_PATH: file",
        "is not a regular file (a FIFO)",
        "CROWDSEC_KEY_PATH: file",
        "is not a regular file (a directory)",
        "CROWDSEC_CA_CERT_PATH: file \"/dev/zero\" is not a regular file (a character device)",
        "MIKROTIK_TLS_CA: file",
        "is 104857600 bytes; PEM files are limited to 1048576 bytes (1 MiB)",
    ] {
        assert!(text.contains(want), "{want:?} missing from {text}");
    }
    assert_eq!(err.problems.len(), 4, "{text}");
    assert!(!text.contains("s3cr3t"));
}

#[test]
fn help_lists_every_variable() {
    let help = help_text();
    for v in VARS {
        assert!(help.contains(v.name), "{} missing from --help", v.name);
    }
}
