//! Security end to end (issue 9): secrets never printed, TLS towards the LAPI and the router,
//! and the least-privilege RouterOS user. The real LAPI 1.4.6, `routeros-sim` and the `tikban`
//! binary, as in `e2e.rs`.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crowdsec_lapi::testing::{Lapi, TestPki};
use routeros_sim::{Direction, Family, Sim, SimConfig, Table, User};
use support::{PASSWORD, POLLS_ERROR, Tikban, USER, V4, World, with_env};

const POLL: Duration = Duration::from_secs(20);

// === Secrets ===

/// At trace level, through a normal start and sync, a refused router password, a refused API
/// key, a client-configuration error and an env error: neither the API key nor the router
/// password (nor the wrong ones, nor an inline private key) is ever printed.
#[test]
fn secrets_never_appear_in_stdout_or_stderr_at_trace_level() {
    const WRONG_PASS: &str = "wr0ng-r0uter-pass-7731";
    const WRONG_KEY: &str = "wr0ngl4pik3y0000000000000000000000007731";
    const KEY_PEM_BODY: &str = "c2VjcmV0LXByaXZhdGUta2V5LW1hcmtlcg";
    let w = World::start();
    let secrets = [
        w.key.as_str(),
        PASSWORD,
        WRONG_PASS,
        WRONG_KEY,
        KEY_PEM_BODY,
    ];
    let mut outputs = Vec::new();

    // 1. Startup and a sync.
    let mut t = w.tikban_with(&[("LOG_LEVEL", "trace")]);
    t.wait_healthy(POLL);
    w.lapi.add_decision("192.0.2.80", "1h", &[]);
    w.wait_until("the ban", POLL, |w| {
        w.addresses(Family::V4, V4) == ["192.0.2.80"]
    });
    assert!(t.terminate().success());
    let out = t.output();
    assert!(out.contains("TRACE"), "trace level is on:\n{out}");
    outputs.push(("startup and sync", out));

    // 2. The router refuses the password.
    let mut t = w.tikban_with(&[("LOG_LEVEL", "trace"), ("MIKROTIK_PASS", WRONG_PASS)]);
    wait_for_output(&mut t, "invalid user name or password");
    t.terminate();
    outputs.push(("bad router password", t.output()));

    // 3. The LAPI refuses the API key.
    let mut t = w.tikban_with(&[
        ("LOG_LEVEL", "trace"),
        ("CROWDSEC_BOUNCER_API_KEY", WRONG_KEY),
    ]);
    wait_for_output(&mut t, "403");
    t.terminate();
    outputs.push(("bad API key", t.output()));

    // 4. A client configuration error: an inline client key that is not a usable key.
    let key_pem =
        format!("-----BEGIN PRIVATE KEY-----\n{KEY_PEM_BODY}\n-----END PRIVATE KEY-----\n");
    let cert_pem = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA\n-----END CERTIFICATE-----\n";
    let env = with_env(
        w.env(),
        &[
            ("LOG_LEVEL", "trace"),
            ("CROWDSEC_CERT_PEM", cert_pem),
            ("CROWDSEC_KEY_PEM", &key_pem),
        ],
    );
    let out = run_to_exit(&env);
    assert_ne!(
        out.0,
        Some(0),
        "a broken client key cannot start:\n{}",
        out.1
    );
    outputs.push(("client key error", out.1));

    // 5. An env error: every problem is listed, exit 2.
    let env = with_env(
        w.env(),
        &[
            ("LOG_LEVEL", "trace"),
            ("MIKROTIK_PIPELINE_WINDOW", "zero"),
            ("LOG_FORMAT", "yaml"),
            ("CROWDSEC_URL", "ftp://nope"),
        ],
    );
    let out = run_to_exit(&env);
    assert_eq!(out.0, Some(2), "{}", out.1);
    for var in ["MIKROTIK_PIPELINE_WINDOW", "LOG_FORMAT", "CROWDSEC_URL"] {
        assert!(out.1.contains(var), "{var} missing: {}", out.1);
    }
    outputs.push(("env error", out.1));

    for (phase, out) in &outputs {
        assert!(!out.is_empty(), "{phase}: no output at all");
        for s in secrets {
            assert!(!out.contains(s), "{phase}: secret {s:?} printed:\n{out}");
        }
    }
}

/// Runs tikban with exactly `env` until it exits: (exit code, stdout + stderr).
fn run_to_exit(env: &[(String, String)]) -> (Option<i32>, String) {
    let out = std::process::Command::new(support::tikban_bin())
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn wait_for_output(t: &mut Tikban, needle: &str) {
    let deadline = Instant::now() + POLL;
    while !t.output().contains(needle) {
        assert!(t.is_running(), "tikban exited:\n{}", t.output());
        assert!(
            Instant::now() < deadline,
            "{needle:?} never logged:\n{}",
            t.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// === TLS towards the LAPI ===

/// A router sim plus its runtime, for tests that bring their own LAPI.
struct Router {
    sim: Sim,
    server: routeros_sim::RunningSim,
    _rt: tokio::runtime::Runtime,
}

impl Router {
    fn start() -> Router {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sim = Sim::new(SimConfig::default().with_user(USER, PASSWORD));
        let server = rt.block_on(sim.serve("127.0.0.1:0")).unwrap();
        Router {
            sim,
            server,
            _rt: rt,
        }
    }

    /// The env for `lapi`, metrics on port 0 ([`Tikban::start`]).
    fn env(&self, lapi: &Lapi, extra: &[(&str, String)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("CROWDSEC_URL", lapi.url()),
            ("CROWDSEC_UPDATE_FREQUENCY", "1s".into()),
            ("MIKROTIK_HOST", self.server.addr().to_string()),
            ("MIKROTIK_USER", USER.into()),
            ("MIKROTIK_PASS", PASSWORD.into()),
            ("METRICS_ADDR", "127.0.0.1".into()),
            ("METRICS_PORT", "0".into()),
            ("LOG_LEVEL", "debug".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    }

    fn wait_for(&self, addresses: &[&str], t: &mut Tikban) {
        let deadline = Instant::now() + POLL;
        loop {
            let got: Vec<String> = self
                .sim
                .address_list(Family::V4, V4)
                .into_iter()
                .map(|e| e.address)
                .collect();
            if got == addresses {
                return;
            }
            assert!(t.is_running(), "tikban exited:\n{}", t.output());
            assert!(
                Instant::now() < deadline,
                "router has {got:?}, expected {addresses:?}:\n{}",
                t.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn lapi_https_with_the_right_ca_is_accepted() {
    let pki = TestPki::new();
    let lapi = Lapi::start_tls(&pki);
    let key = lapi.add_bouncer("tikban");
    let router = Router::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = write_temp(&dir, "ca.pem", &pki.ca_pem);
    let env = router.env(
        &lapi,
        &[
            ("CROWDSEC_BOUNCER_API_KEY", key),
            ("CROWDSEC_CA_CERT_PATH", ca),
        ],
    );
    assert!(lapi.url().starts_with("https://"));
    let mut t = Tikban::start(&env);
    t.wait_healthy(POLL);
    lapi.add_decision("192.0.2.90", "1h", &[]);
    router.wait_for(&["192.0.2.90"], &mut t);
    assert!(t.terminate().success());
}

#[test]
fn lapi_https_with_a_wrong_ca_is_refused_with_a_clear_error() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let lapi = Lapi::start_tls(&pki);
    let key = lapi.add_bouncer("tikban");
    lapi.add_decision("192.0.2.91", "1h", &[]);
    let router = Router::start();
    let env = router.env(
        &lapi,
        &[
            ("CROWDSEC_BOUNCER_API_KEY", key),
            ("CROWDSEC_CA_CERT_PEM", other.ca_pem.clone()),
        ],
    );
    let mut t = Tikban::start(&env);
    wait_for_output(&mut t, "TLS handshake with LAPI");
    let out = t.output();
    let line = out
        .lines()
        .find(|l| l.contains("TLS handshake with LAPI"))
        .unwrap();
    eprintln!("{line}");
    assert!(line.contains("WARN"), "reported at warn level: {line}");
    assert!(
        line.to_ascii_lowercase().contains("certificate")
            || line.to_ascii_lowercase().contains("issuer"),
        "the error names the certificate problem: {line}"
    );
    // Two more refused polls: time for a poll to have slipped through, had one done so.
    let errors = t.metric(POLLS_ERROR);
    t.wait_metric(POLLS_ERROR, errors + 2.0, POLL);
    let (code, body) = t.get("/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"lapi\":\"down\""), "{body}");
    assert!(
        router.sim.address_list(Family::V4, V4).is_empty(),
        "nothing from an unverified LAPI"
    );
    assert!(t.is_running(), "keeps retrying:\n{}", t.output());
}

/// mTLS: no API key, a client certificate with the bouncer OU; the LAPI (1.4.6) creates the
/// bouncer from the certificate.
#[test]
fn lapi_mtls_with_a_client_certificate_is_accepted() {
    let pki = TestPki::new();
    let lapi = Lapi::start_tls(&pki);
    let (cert, key) = pki.client_cert("tikban-router", "bouncer-ou");
    let router = Router::start();
    let dir = tempfile::tempdir().unwrap();
    let env = router.env(
        &lapi,
        &[
            (
                "CROWDSEC_CA_CERT_PATH",
                write_temp(&dir, "ca.pem", &pki.ca_pem),
            ),
            ("CROWDSEC_CERT_PATH", write_temp(&dir, "cert.pem", &cert)),
            ("CROWDSEC_KEY_PATH", write_temp(&dir, "key.pem", &key)),
        ],
    );
    let mut t = Tikban::start(&env);
    t.wait_healthy(POLL);
    lapi.add_decision("192.0.2.92", "1h", &[]);
    router.wait_for(&["192.0.2.92"], &mut t);
    let bouncers = lapi.cscli(&["bouncers", "list", "-o", "json"]);
    assert!(
        bouncers.contains("tikban-router"),
        "the LAPI registered the certificate's bouncer: {bouncers}"
    );
    assert!(t.terminate().success());
    assert!(
        !t.output().contains(&key),
        "the client key is never printed"
    );
}

// === TLS towards the router (api-ssl) ===

#[test]
fn router_api_ssl_with_the_pinned_fingerprint_is_accepted() {
    let w = World::start();
    let tls = w.rt.block_on(w.sim.serve_tls("127.0.0.1:0")).unwrap();
    let pin = tls.fingerprint_hex().unwrap();
    let mut env = w.env_for(&w.lapi.url(), tls.addr(), 0);
    env.push(("MIKROTIK_TLS".into(), "true".into()));
    env.push(("MIKROTIK_TLS_FINGERPRINT".into(), pin));
    let mut t = Tikban::start(&env);
    t.wait_healthy(POLL);
    assert!(t.output().contains("tls=true"), "{}", t.output());
    w.lapi.add_decision("192.0.2.93", "1h", &[]);
    w.wait_until("the ban over api-ssl", POLL, |w| {
        w.addresses(Family::V4, V4) == ["192.0.2.93"]
    });
    assert!(t.terminate().success());
}

#[test]
fn router_api_ssl_with_a_wrong_pin_is_refused() {
    let w = World::start();
    let tls = w.rt.block_on(w.sim.serve_tls("127.0.0.1:0")).unwrap();
    let real = tls.fingerprint_hex().unwrap();
    // The same pin with its last digit changed.
    let mut wrong = real.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let mut env = w.env_for(&w.lapi.url(), tls.addr(), 0);
    env.push(("MIKROTIK_TLS".into(), "true".into()));
    env.push(("MIKROTIK_TLS_FINGERPRINT".into(), wrong));
    w.lapi.add_decision("192.0.2.94", "1h", &[]);
    let mut t = Tikban::start(&env);
    wait_for_output(&mut t, "does not match the pinned");
    let out = t.output();
    let line = out
        .lines()
        .find(|l| l.contains("does not match the pinned"))
        .unwrap();
    eprintln!("{line}");
    assert!(line.contains("WARN"), "{line}");
    let real_plain: String = real.chars().filter(char::is_ascii_hexdigit).collect();
    let line_plain: String = line
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase();
    assert!(
        line_plain.contains(&real_plain.to_ascii_lowercase()),
        "the error shows the certificate's real fingerprint: {line}"
    );
    let logins = w
        .sim
        .transcript()
        .iter()
        .filter(|e| e.direction == Direction::In)
        .count();
    assert_eq!(
        logins, 0,
        "not a single sentence (no password) sent to an unpinned peer"
    );
    assert_eq!(t.get("/health").0, 503);
    assert!(w.sim.all_entries(Family::V4).is_empty());
    assert!(t.is_running());
}

// === Least privilege ===

fn world_with_policies(policies: &str) -> World {
    let mut config = SimConfig::default()
        .with_transcript()
        .add_user(User::new(USER, PASSWORD).with_policies(policies));
    config.users.retain(|u| u.name == USER);
    config.enforce_policies = true;
    World::start_with(config)
}

/// Every command path tikban may send. The least-privilege claim of `docs/security.md` rests on
/// this list: reads and writes of the two address lists, reads of firewall rules, of
/// `/system/resource`, of the router log (guard), of the active admin sessions (safety), of its
/// own user and group and the container settings (the checklist at start), and session commands.
const ALLOWED: &[&str] = &[
    "/login",
    "/cancel",
    "/quit",
    "/log/print",
    "/user/active/print",
    "/user/print",
    "/user/group/print",
    "/container/print",
    "/container/config/print",
    "/ip/firewall/address-list/print",
    "/ip/firewall/address-list/add",
    "/ip/firewall/address-list/set",
    "/ip/firewall/address-list/remove",
    "/ipv6/firewall/address-list/print",
    "/ipv6/firewall/address-list/add",
    "/ipv6/firewall/address-list/set",
    "/ipv6/firewall/address-list/remove",
    "/ip/firewall/raw/print",
    "/ip/firewall/filter/print",
    "/ipv6/firewall/raw/print",
    "/ipv6/firewall/filter/print",
    "/system/resource/print",
];

#[test]
fn api_read_write_policies_are_enough() {
    let w = world_with_policies("api,read,write");
    w.sim
        .add_rule(
            Family::V4,
            Table::Raw,
            &[
                ("chain", "prerouting"),
                ("action", "drop"),
                ("src-address-list", V4),
            ],
        )
        .unwrap();
    let mut t = w.tikban_with(&[("LOG_LEVEL", "info"), ("RECONCILIATION_INTERVAL", "2s")]);
    t.wait_healthy(POLL);
    w.lapi.add_decision("192.0.2.95", "1h", &[]);
    w.lapi.add_decision("2001:db8::95", "1h", &[]);
    w.lapi.add_decision("192.0.2.96", "1h", &[]);
    w.wait_until("the bans", POLL, |w| {
        w.addresses(Family::V4, V4).len() == 2 && w.sim.all_entries(Family::V6).len() == 1
    });
    w.lapi.delete_decision(&["--ip", "192.0.2.96"]);
    w.wait_until("the unban", POLL, |w| {
        w.addresses(Family::V4, V4) == ["192.0.2.95"]
    });
    // Two periodic reconciles have started, so the first one is over (one router job at a time).
    t.wait_metric(
        "tikban_reconciliations_total{reason=\"periodic\"}",
        2.0,
        POLL,
    );
    let transcript = w.sim.transcript();
    let sent: BTreeSet<String> = transcript
        .iter()
        .filter(|e| e.direction == Direction::In)
        .filter_map(|e| e.words.first())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    for path in &sent {
        assert!(
            ALLOWED.contains(&path.as_str()),
            "unexpected command {path}"
        );
    }
    for path in [
        "/ip/firewall/address-list/add",
        "/ip/firewall/address-list/remove",
        "/ipv6/firewall/address-list/add",
        "/system/resource/print",
        "/ip/firewall/raw/print",
    ] {
        assert!(sent.contains(path), "{path} was exercised: {sent:?}");
    }
    let refused = transcript
        .iter()
        .filter(|e| e.direction == Direction::Out)
        .flat_map(|e| e.words.iter())
        .any(|w| w.windows(11).any(|x| x == b"permissions"));
    assert!(!refused, "no command was refused");
    let out = t.output();
    assert!(!out.contains("WARN router"), "{out}");
    assert!(t.terminate().success());
}

#[test]
fn without_write_the_refused_adds_are_reported() {
    let w = world_with_policies("api,read");
    let mut t = w.tikban_with(&[("LOG_LEVEL", "info")]);
    w.lapi.add_decision("192.0.2.97", "1h", &[]);
    wait_for_output(&mut t, "not enough permissions");
    let out = t.output();
    let line = out
        .lines()
        .find(|l| l.contains("not enough permissions"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("api,read,write"), "names the fix: {line}");
    assert!(w.sim.all_entries(Family::V4).is_empty());
    assert!(t.is_running());
}

#[test]
fn without_read_the_refused_prints_are_reported() {
    let w = world_with_policies("api,write");
    let mut t = w.tikban_with(&[("LOG_LEVEL", "info")]);
    wait_for_output(&mut t, "not enough permissions");
    let out = t.output();
    let line = out
        .lines()
        .find(|l| l.contains("not enough permissions"))
        .unwrap();
    assert!(line.contains("WARN") && line.contains("print"), "{line}");
    assert!(line.contains("api,read,write"), "names the fix: {line}");
    assert!(t.is_running());
}

#[test]
fn without_api_the_login_is_refused_and_reported() {
    let w = world_with_policies("read,write");
    let mut t = w.tikban_with(&[("LOG_LEVEL", "info")]);
    wait_for_output(&mut t, "router connection failed");
    let out = t.output();
    let line = out
        .lines()
        .find(|l| l.contains("router connection failed"))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains("login refused"),
        "{line}"
    );
    assert_eq!(t.get("/health").0, 503);
    assert!(t.is_running());
}

// === Bad configuration (issue 17 item 8, issue 12 item 4) ===

/// Runs tikban with exactly `env` (any bytes) until it exits: (exit code, stdout + stderr, time).
fn run_env_os(
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
) -> (Option<i32>, String, Duration) {
    // The binary is built (once) before the clock starts.
    let bin = support::tikban_bin();
    let started = Instant::now();
    let out = std::process::Command::new(bin)
        .env_clear()
        .envs(env)
        .output()
        .expect("tikban runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text, started.elapsed())
}

/// A bad-configuration case: its name, the variables it sets, and what the output must contain.
type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, Vec<&'a str>);

fn os_env(pairs: &[(&str, &[u8])]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    use std::os::unix::ffi::OsStringExt;
    pairs
        .iter()
        .map(|(k, v)| (k.into(), std::ffi::OsString::from_vec(v.to_vec())))
        .collect()
}

/// Every bad configuration exits 2 within a second, with every problem in one message and no
/// secret in the output: PEM paths that are not small regular files (`/dev/zero`, a FIFO, a
/// directory, a 100 MB sparse file), a non-UTF-8 byte in an unrelated variable (this used to
/// panic) and in one of tikban's, a 127 KiB value (echoed truncated), and a URL with a password.
#[test]
fn bad_configurations_exit_2_at_once_listing_every_problem_without_secrets() {
    const KEY: &str = "k3y-e2e-s3cr3t-0123456789";
    const PASS: &str = "p4ss-e2e-s3cr3t";
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("fifo.pem");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let sparse = dir.path().join("sparse.pem");
    std::fs::File::create(&sparse)
        .and_then(|f| f.set_len(100 * 1024 * 1024))
        .expect("sparse file");
    let fifo = fifo.display().to_string();
    let sparse = sparse.display().to_string();
    let dir_path = dir.path().display().to_string();
    let long = format!("1{}", "9".repeat(127 * 1024));
    let base: &[(&str, &[u8])] = &[
        ("CROWDSEC_URL", b"https://127.0.0.1:1"),
        ("CROWDSEC_BOUNCER_API_KEY", KEY.as_bytes()),
        ("MIKROTIK_PASS", PASS.as_bytes()),
        ("METRICS_ENABLED", b"false"),
    ];
    let cases: Vec<Case> = vec![
        (
            "PEM paths",
            vec![
                ("CROWDSEC_CA_CERT_PATH", b"/dev/zero"),
                ("CROWDSEC_CERT_PATH", fifo.as_bytes()),
                ("CROWDSEC_KEY_PATH", dir_path.as_bytes()),
                ("MIKROTIK_TLS", b"true"),
                ("MIKROTIK_TLS_CA", sparse.as_bytes()),
            ],
            vec![
                "(4 problems)",
                "CROWDSEC_CERT_PATH: file",
                "(a FIFO)",
                "CROWDSEC_KEY_PATH: file",
                "(a directory)",
                "CROWDSEC_CA_CERT_PATH: file \"/dev/zero\" is not a regular file",
                "MIKROTIK_TLS_CA: file",
                "is 104857600 bytes; PEM files are limited to 1048576 bytes",
            ],
        ),
        (
            "non-UTF-8 in another variable",
            vec![("UNRELATED", b"\xff\xfe"), ("LOG_FORMAT", b"xml")],
            vec!["(1 problem)", "LOG_FORMAT: \"xml\" is not text or json"],
        ),
        (
            "non-UTF-8 in ours",
            vec![("MIKROTIK_USER", b"admin\xff"), ("LOG_FORMAT", b"xml")],
            vec![
                "(2 problems)",
                "MIKROTIK_USER: is not valid UTF-8",
                "LOG_FORMAT",
            ],
        ),
        (
            "a 127 KiB value",
            vec![("CROWDSEC_UPDATE_FREQUENCY", long.as_bytes())],
            vec!["CROWDSEC_UPDATE_FREQUENCY: \"1999", "\"… is not a duration"],
        ),
        (
            "a password in the URL",
            vec![("CROWDSEC_URL", b"http://bob:PASSWORD@127.0.0.1:1/")],
            vec!["CROWDSEC_URL: \"http://<redacted>@127.0.0.1:1/\" must not carry credentials"],
        ),
    ];
    for (name, extra, wants) in cases {
        let mut pairs: Vec<(&str, &[u8])> = base
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        pairs.extend(extra);
        let (code, out, took) = run_env_os(os_env(&pairs));
        assert_eq!(code, Some(2), "{name}: {out}");
        assert!(took < Duration::from_secs(1), "{name}: took {took:?}");
        assert_eq!(
            out.matches("invalid configuration").count(),
            1,
            "{name}: one message: {out}"
        );
        for want in wants {
            assert!(out.contains(want), "{name}: {want:?} missing: {out}");
        }
        assert!(out.len() < 4096, "{name}: {} bytes of output", out.len());
        for secret in [KEY, PASS, "PASSWORD"] {
            assert!(!out.contains(secret), "{name}: {secret} printed: {out}");
        }
    }
}
