//! `tikban check`, the checklist the daemon logs at start, and `tikban --healthcheck`, end to
//! end: the real CrowdSec LAPI 1.4.6, `routeros-sim` and the `tikban` binary configured only by
//! environment variables. Nothing is skipped: a missing LAPI or binary fails the test.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crowdsec_lapi::testing::{Lapi, TestPki};
use routeros_sim::{Direction, Family, NewEntry, Sim, SimConfig, Table, User};
use support::{PASSWORD, USER, V4, V6, World, free_port, tikban_bin, with_env};

/// `tikban check` has a 60 s overall deadline; a run must end well within this.
const RUN: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_secs(15);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `tikban <args>` with exactly `env` (plus PATH) and waits for it within `RUN`.
fn tikban(args: &[&str], env: &[(String, String)]) -> Run {
    let mut child = Command::new(tikban_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tikban");
    let deadline = Instant::now() + RUN;
    loop {
        if child.try_wait().expect("wait for tikban").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect tikban output");
            panic!(
                "tikban {args:?} did not end within {RUN:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("collect tikban output");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The environment a router owner would set, pointed at `w`, metrics on `port`.
fn env_of(w: &World, port: u16) -> Vec<(String, String)> {
    w.env_for(&w.lapi.url(), w.server.addr(), port)
}

/// The checklist lines that start with `mark`.
fn marked<'a>(out: &'a str, mark: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(mark)).collect()
}

/// The raw prerouting drop rules the setup script adds, and a default-firewall accept with a
/// matcher before them (it must not count as shadowing).
fn add_drop_rules(sim: &Sim) {
    for (family, list) in [(Family::V4, V4), (Family::V6, V6)] {
        sim.add_rule(
            family,
            Table::Filter,
            &[
                ("chain", "input"),
                ("action", "accept"),
                ("connection-state", "established,related,untracked"),
            ],
        )
        .expect("add the accept rule");
        sim.add_rule(
            family,
            Table::Raw,
            &[
                ("chain", "prerouting"),
                ("action", "drop"),
                ("src-address-list", list),
            ],
        )
        .expect("add the drop rule");
    }
}

/// The probe entry's adds and removes, and every other write, as the sim received them.
fn writes_by_list(sim: &Sim) -> Vec<String> {
    sim.transcript()
        .into_iter()
        .filter(|t| t.direction == Direction::In)
        .filter(|t| {
            t.words.first().is_some_and(|w| {
                w.ends_with(b"/add") || w.ends_with(b"/remove") || w.ends_with(b"/set")
            })
        })
        .map(|t| {
            t.words
                .iter()
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .filter(|w| !w.starts_with(".tag="))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn a_healthy_setup_passes_every_item_over_https() {
    let pki = TestPki::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sim = Sim::new(
        SimConfig::default()
            .with_user(USER, PASSWORD)
            .with_transcript(),
    );
    let server = rt
        .block_on(sim.serve("127.0.0.1:0"))
        .expect("start the sim");
    let lapi = Lapi::start_tls(&pki);
    let key = lapi.add_bouncer("tikban");
    let w = World {
        lapi,
        key,
        sim,
        server,
        rt,
    };
    add_drop_rules(&w.sim);
    for (address, comment) in [
        ("198.51.100.1", "tikban cscli"),
        ("198.51.100.2", "by hand"),
    ] {
        w.sim
            .insert_entry(
                Family::V4,
                NewEntry::new(V4, address)
                    .with_timeout(Duration::from_secs(3600))
                    .with_comment(comment),
            )
            .expect("insert an entry");
    }
    w.sim.clear_transcript();
    assert!(w.lapi.url().starts_with("https://"));
    let env = with_env(
        env_of(&w, free_port()),
        &[("CROWDSEC_CA_CERT_PEM", pki.ca_pem.as_str())],
    );

    let run = tikban(&["check"], &env);
    println!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(marked(&run.stdout, "✗").is_empty(), "{}", run.stdout);
    // Every item holds; the one "–" is the container memory, which routeros-sim does not report
    // (it has no /container menu): informative, never a failure.
    assert_eq!(
        marked(&run.stdout, "–"),
        ["– container memory: not reported"],
        "{}",
        run.stdout
    );
    let passed = marked(&run.stdout, "✓");
    assert_eq!(passed.len(), 12, "{}", run.stdout);
    for expected in [
        "✓ LAPI reachable: https://127.0.0.1:",
        "✓ LAPI TLS: TLSv1_",
        "✓ LAPI key: accepted (HEAD /v1/decisions answered 200)",
        "✓ clock: within 1 s of LAPI's",
        "✓ router login: logged in as tikban",
        "✓ RouterOS version: 7.20.1",
        "✓ address lists writable: a probe entry was added and removed",
        "✓ list crowdsec-banned: 2 entries, 1 of them tikban's",
        "✓ list crowdsec6-banned: 0 entries, 0 of them tikban's",
        "✓ drop rules: crowdsec-banned: /ip raw prerouting *",
        "✓ router log: readable",
    ] {
        assert!(
            passed.iter().any(|l| l.starts_with(expected)),
            "no line starting with {expected:?}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.ends_with("all checks passed\n"),
        "{}",
        run.stdout
    );

    // The only writes: one add and one remove of the probe entry, in the scratch list.
    let writes = writes_by_list(&w.sim);
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert!(
        writes[0].starts_with("/ip/firewall/address-list/add")
            && writes[0].contains("=list=tikban-check")
            && writes[0].contains("=address=192.0.2.255")
            && writes[0].contains("=timeout=1m")
            && writes[0].contains("=comment=tikban check"),
        "{writes:#?}"
    );
    assert!(
        writes[1].starts_with("/ip/firewall/address-list/remove"),
        "{writes:#?}"
    );
    assert!(w.sim.address_list(Family::V4, "tikban-check").is_empty());
    assert_eq!(
        w.addresses(Family::V4, V4),
        ["198.51.100.1", "198.51.100.2"]
    );
    assert_eq!(w.sim.persistent_writes(), 0, "no flash writes");

    // LAPI saw one HEAD /v1/decisions and no stream request: the bouncer's cursor is untouched.
    let log = w.lapi.log();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("tikban/v")).collect();
    assert!(
        ours.iter().any(|l| l.contains("HEAD /v1/decisions")),
        "{ours:#?}"
    );
    assert!(
        ours.iter().all(|l| !l.contains("/v1/decisions/stream")),
        "{ours:#?}"
    );
}

#[test]
fn a_read_only_user_no_drop_rule_and_a_wrong_key_fail_exactly_those_three_items() {
    let mut config = SimConfig::default().with_transcript();
    config.users = vec![
        User::new(USER, PASSWORD)
            .with_policies("api,read")
            .with_group("read"),
    ];
    let w = World::start_with(config);
    let wrong_key = "wrong-key-0123456789abcdef";
    let env = with_env(
        env_of(&w, free_port()),
        &[("CROWDSEC_BOUNCER_API_KEY", wrong_key)],
    );

    let run = tikban(&["check"], &env);
    println!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let failed = marked(&run.stdout, "✗");
    assert_eq!(failed.len(), 3, "{}", run.stdout);
    assert!(
        failed[0].starts_with("✗ LAPI key: refused (HEAD /v1/decisions answered 403)"),
        "{failed:#?}"
    );
    assert!(
        failed[1].starts_with("✗ address lists writable: adding a probe entry failed: ")
            && failed[1].contains("not enough permissions"),
        "{failed:#?}"
    );
    assert_eq!(
        failed[2],
        "✗ drop rules: crowdsec-banned: no drop rule; crowdsec6-banned: no drop rule"
    );
    // Each failure is followed by its hint.
    let lines: Vec<&str> = run.stdout.lines().collect();
    for f in &failed {
        let at = lines.iter().position(|l| l == f).expect("the line");
        let hint = lines.get(at + 1).copied().unwrap_or_default();
        assert!(
            hint.starts_with("  hint: "),
            "{f} has no hint:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("  hint: LAPI refused the key: create one on the CrowdSec host with `cscli bouncers add tikban`"));
    assert!(run.stdout.contains(
        "/user/group/add name=tikban policy=api,read,write, then /user/set tikban group=tikban"
    ));
    assert!(run.stdout.contains(
        "/ip/firewall/raw/add chain=prerouting action=drop src-address-list=crowdsec-banned"
    ));
    // Everything else still holds: reachable, login, read access.
    for expected in [
        "✓ LAPI reachable: http://127.0.0.1:",
        "✓ router login: logged in as tikban",
        "✓ list crowdsec-banned: 0 entries",
        "✓ router log: readable",
    ] {
        assert!(
            run.stdout.lines().any(|l| l.starts_with(expected)),
            "no line starting with {expected:?}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout
            .ends_with("3 of 13 checks failed (see docs/troubleshooting.md)\n")
    );
    // No secret in the output, and nothing written to the router.
    for secret in [PASSWORD, wrong_key, w.key.as_str()] {
        assert!(!run.stdout.contains(secret) && !run.stderr.contains(secret));
    }
    assert!(w.sim.address_list(Family::V4, "tikban-check").is_empty());
    assert_eq!(w.sim.persistent_writes(), 0);
}

#[test]
fn check_exits_2_on_a_bad_configuration_like_the_daemon() {
    let env = vec![
        ("MIKROTIK_PASS".to_owned(), PASSWORD.to_owned()),
        ("METRICS_PORT".to_owned(), "not-a-port".to_owned()),
    ];
    let run = tikban(&["check"], &env);
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("CROWDSEC_URL"), "{}", run.stderr);
    assert!(run.stderr.contains("METRICS_PORT"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(!run.stderr.contains(PASSWORD));
    let run = tikban(&["check", "--now"], &env);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
}

#[test]
fn the_daemon_logs_the_checklist_at_start_without_writing_to_the_router() {
    let w = World::start();
    add_drop_rules(&w.sim);
    w.sim.clear_transcript();
    let mut t = w.tikban();
    t.wait_healthy(POLL);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !t.output().contains("check done:") {
        assert!(t.is_running(), "tikban exited:\n{}", t.output());
        assert!(
            Instant::now() < deadline,
            "no checklist in the log:\n{}",
            t.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = t.output();
    let checks: Vec<&str> = out.lines().filter(|l| l.contains(" check ")).collect();
    println!("{}", checks.join("\n"));
    for expected in [
        "check ✓ LAPI key: accepted",
        "check ✓ router login: logged in as tikban",
        "check ✓ drop rules: crowdsec-banned: /ip raw prerouting",
        // routeros-sim has no /user menu: the policy cannot be read, so it is not judged.
        "check – API user policy: not readable by this user",
        "check done: 10 ✓, 0 ✗, 3 –",
    ] {
        assert!(
            checks.iter().any(|l| l.contains(expected)),
            "no log line with {expected:?}:\n{out}"
        );
    }
    assert!(
        checks.iter().all(|l| l.contains(" INFO ")),
        "a healthy checklist logs at info:\n{out}"
    );
    // No probe entry at start: the daemon writes nothing but its own entries.
    assert!(
        writes_by_list(&w.sim)
            .iter()
            .all(|w| !w.contains("tikban-check")),
        "{:#?}",
        writes_by_list(&w.sim)
    );
    // Its own session: the daemon's plus the check's logins (routeros-sim logs both).
    assert!(t.terminate().success());
}

#[test]
fn the_daemon_warns_with_a_hint_for_each_failed_item_at_start() {
    let w = World::start();
    let port = free_port();
    let env = with_env(
        env_of(&w, port),
        &[("CROWDSEC_BOUNCER_API_KEY", "wrong-key-0123456789abcdef")],
    );
    let t = support::Tikban::spawn(&env, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !t.output().contains("check done:") {
        assert!(
            Instant::now() < deadline,
            "no checklist in the log:\n{}",
            t.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = t.output();
    let warned: Vec<&str> = out.lines().filter(|l| l.contains(" check ✗ ")).collect();
    assert_eq!(warned.len(), 2, "{out}");
    for line in &warned {
        assert!(line.contains(" WARN "), "{line}");
        assert!(line.contains("(hint: "), "{line}");
    }
    assert!(warned[0].contains("check ✗ LAPI key: refused"), "{out}");
    assert!(warned[1].contains("check ✗ drop rules:"), "{out}");
    assert!(out.contains("check done: 8 ✓, 2 ✗, 3 –"), "{out}");
    assert!(!out.contains("wrong-key-0123456789abcdef") && !out.contains(PASSWORD));
}

#[test]
fn healthcheck_is_0_for_a_healthy_daemon_and_1_otherwise() {
    let w = World::start();
    let mut t = w.tikban();
    t.wait_healthy(POLL);
    let env = |port: u16| vec![("METRICS_PORT".to_owned(), port.to_string())];
    let run = tikban(&["--healthcheck"], &env(t.metrics_port));
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.is_empty() && run.stderr.is_empty(),
        "silent on success"
    );
    // Only the metrics variables matter: the rest of the configuration may be absent.
    let run = tikban(
        &["--healthcheck"],
        &[
            ("METRICS_ENABLED".to_owned(), "true".to_owned()),
            ("METRICS_ADDR".to_owned(), "0.0.0.0".to_owned()),
            ("METRICS_PORT".to_owned(), t.metrics_port.to_string()),
        ],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    // Unhealthy: the router is unreachable, /health answers 503.
    let port = free_port();
    let dead_router = format!("127.0.0.1:{}", free_port());
    let sick = support::Tikban::spawn(
        &with_env(env_of(&w, port), &[("MIKROTIK_HOST", dead_router.as_str())]),
        port,
    );
    let deadline = Instant::now() + POLL;
    while sick.get("/health").0 != 503 {
        assert!(
            Instant::now() < deadline,
            "/health never answered 503: {:?}\n{}",
            sick.get("/health"),
            sick.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = tikban(&["--healthcheck"], &env(port));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("answered 503"), "{}", run.stderr);
    assert!(run.stderr.contains("\"router\":\"down\""), "{}", run.stderr);

    // Not running.
    let run = tikban(&["--healthcheck"], &env(free_port()));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);

    // Metrics off: nothing to ask.
    let run = tikban(
        &["--healthcheck"],
        &[("METRICS_ENABLED".to_owned(), "false".to_owned())],
    );
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("METRICS_ENABLED is false"),
        "{}",
        run.stderr
    );

    // The healthy daemon stopped: the check fails.
    let port = t.metrics_port;
    assert!(t.terminate().success());
    let run = tikban(&["--healthcheck"], &env(port));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
}

#[test]
fn help_names_check_and_healthcheck() {
    let run = tikban(&["--help"], &[]);
    assert_eq!(run.code, Some(0));
    assert!(run.stdout.contains("\n  tikban check\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains("\n  tikban --healthcheck\n"),
        "{}",
        run.stdout
    );
}
