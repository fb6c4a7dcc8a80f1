//! `cargo xtask demo [--once]`: tikban's story on a laptop.
//!
//! The real CrowdSec LAPI (Debian 1.4.6, unpacked under `target/`) with a fresh bouncer key,
//! `routeros-sim` standing in for the router, and a release `tikban` configured only by
//! environment variables, as on a router. Then, with `cscli`: ban an IPv4, an IPv6 and a range,
//! show the router's address lists, unban one, show the metrics. Then guard: failed logins are
//! played into the router's log (the sim's control stdin), the attacker lands on the router's
//! list, and `cscli` shows guard's alert and its decision in LAPI (tikban has machine
//! credentials). Without `--once` it then keeps a live status line until Ctrl-C. Every step is
//! also a checkpoint: `--once` (CI) exits non-zero if one fails. Everything it writes lives under
//! `target/demo/`, removed on exit; every process it starts is stopped on exit.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crowdsec_lapi::testing::Lapi;
use indicatif::{ProgressBar, ProgressStyle};
use routeros_proto::{Attributes, Command as ApiCommand, Query};

use crate::procs::{self, PASSWORD, Reaper, USER, free_port, http_get};
use crate::ros::Session;
use crate::util;

const V4: &str = "crowdsec-banned";
const V6: &str = "crowdsec6-banned";
/// tikban polls this often in the demo; every wait below allows a few polls.
const POLL: &str = "2s";
const WAIT: Duration = Duration::from_secs(30);
/// The attacker of the guard step (TEST-NET-3) and the failed logins it makes.
const ATTACKER: &str = "203.0.113.7";
const FAILED_LOGINS: u32 = 10;

/// Removes the demo's working directory when dropped.
struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the demo. `args` may hold `--once`.
pub fn run(args: &[String]) -> Result<()> {
    let once = match args {
        [] => false,
        [a] if a == "--once" => true,
        other => bail!("demo takes only --once, got {other:?}"),
    };
    let meta = util::metadata()?;
    let work = Workdir(meta.target_dir.join("demo"));
    let _ = std::fs::remove_dir_all(&work.0);
    std::fs::create_dir_all(&work.0).context("create target/demo")?;

    headline("tikban demo: CrowdSec LAPI → tikban → (emulated) MikroTik router");
    ensure_crowdsec()?;
    let bins = build(&meta.target_dir)?;

    let spin = spinner("starting the CrowdSec LAPI (Debian 1.4.6) with a fresh bouncer key");
    let lapi = Lapi::start_in(&work.0);
    let key = lapi.add_bouncer("tikban-demo");
    // A machine (watcher) for guard, so its bans are shared through LAPI as alerts.
    let machine = lapi.add_machine("tikban-demo-router");
    done(&spin, format!("LAPI listening on {}", lapi.url()));

    // `--control-stdin`: the demo plays router log lines through the sim's control language
    // (`log <topics> <message>`), as the router would log them.
    let (sim, mut control) = procs::Sim::start_controlled(&bins.sim)?;
    let router = sim.addr;
    let mut session = Session::login(router, USER, PASSWORD)?;
    add_drop_rules(&mut session)?;
    println!(
        "  routeros-sim (the router) listening on {router}, raw drop rules for {V4} and {V6} in place"
    );

    let metrics_port = free_port()?;
    let mut tikban = start_tikban(
        &bins.tikban,
        &lapi,
        &key,
        &machine,
        router,
        metrics_port,
        &work.0,
    )?;
    let spin = spinner("tikban: first LAPI snapshot and router sync");
    wait_for(
        &spin,
        "tikban to report healthy",
        || Ok(http_get(metrics_port, "/health")?.0 == 200),
        &mut tikban,
        &work.0,
    )?;
    done(
        &spin,
        "tikban is healthy: LAPI up, router up, first sync done",
    );
    checkpoint("tikban started and synced");

    headline("1. ban an IPv4 address, an IPv6 address (in capitals) and a range with cscli");
    for (value, duration) in [
        ("192.0.2.10", "4h"),
        ("2001:DB8::BAD", "4h"),
        ("198.51.100.0/24", "1h"),
    ] {
        lapi.add_decision(value, duration, &["--reason", "demo"]);
        println!(
            "  cscli decisions add {} {value} --duration {duration}",
            if value.contains('/') {
                "--range"
            } else {
                "--ip"
            }
        );
    }
    let spin = spinner("waiting for the bans to reach the router (one poll)");
    let started = Instant::now();
    wait_for(
        &spin,
        "three bans on the router",
        || Ok(addresses(&mut session)? == ["192.0.2.10", "198.51.100.0/24", "2001:db8::bad/128"]),
        &mut tikban,
        &work.0,
    )?;
    done(
        &spin,
        format!(
            "on the router after {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
    print_lists(&mut session)?;
    checkpoint("three bans enforced (IPv6 lower-cased with /128, range kept as a network)");

    headline("2. unban the IPv4 address");
    lapi.delete_decision(&["--ip", "192.0.2.10"]);
    println!("  cscli decisions delete --ip 192.0.2.10");
    let spin = spinner("waiting for the unban to reach the router");
    wait_for(
        &spin,
        "the unban",
        || Ok(!addresses(&mut session)?.iter().any(|a| a == "192.0.2.10")),
        &mut tikban,
        &work.0,
    )?;
    done(&spin, "gone from the router");
    print_lists(&mut session)?;
    checkpoint("unban removed exactly one entry");

    headline("3. metrics");
    println!("  http://127.0.0.1:{metrics_port}/metrics and /health");
    let (_, metrics) = http_get(metrics_port, "/metrics")?;
    let figures: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && (l.starts_with("tikban_decisions")
                    || l.starts_with("tikban_router_entries")
                    || l.starts_with("tikban_router_commands_total")
                    || l.starts_with("tikban_connected"))
        })
        .collect();
    for line in &figures {
        println!("  {line}");
    }
    let adds = metric(
        &metrics,
        "tikban_router_commands_total{kind=\"add\",result=\"ok\"}",
    );
    let removes = metric(
        &metrics,
        "tikban_router_commands_total{kind=\"remove\",result=\"ok\"}",
    );
    if adds != Some(3.0) || removes != Some(1.0) {
        bail!("expected exactly 3 adds and 1 remove, metrics say {adds:?} and {removes:?}");
    }
    checkpoint("one router command per change: 3 adds, 1 remove");
    let (_, health) = http_get(metrics_port, "/health")?;
    println!("  /health: {}", health.trim());

    guard_step(
        &lapi,
        &mut control,
        &mut session,
        metrics_port,
        &mut tikban,
        &work.0,
    )?;

    if once {
        headline("demo ok");
    } else {
        live(&mut session, metrics_port, &mut tikban, &work.0)?;
    }
    drop(tikban);
    drop(control);
    drop(sim);
    drop(lapi);
    Ok(())
}

/// Follows the system with one status line until Ctrl-C.
fn live(session: &mut Session, metrics_port: u16, tikban: &mut Reaper, work: &Path) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("install the Ctrl-C handler")?;
    headline("live (Ctrl-C to stop; try `cscli decisions add` against the LAPI above)");
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    while !stop.load(Ordering::SeqCst) {
        if let Some(status) = tikban.0.try_wait()? {
            bar.abandon();
            bail!("tikban exited with {status}:\n{}", log_tail(work));
        }
        let (code, metrics) = http_get(metrics_port, "/metrics").unwrap_or((0, String::new()));
        let entries = addresses(session).map(|a| a.len()).unwrap_or(0);
        let sum = |prefix: &str| -> f64 {
            metrics
                .lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        bar.set_message(format!(
            "metrics {} · LAPI {} · router {} · {} decisions · {} router entries · {} commands sent",
            if code == 200 { "ok" } else { "down" },
            up(metric(&metrics, "tikban_connected{peer=\"lapi\"}")),
            up(metric(&metrics, "tikban_connected{peer=\"router\"}")),
            sum("tikban_decisions{"),
            entries,
            sum("tikban_router_commands_total{"),
        ));
        std::thread::sleep(Duration::from_millis(500));
    }
    done(&bar, "stopping: tikban, routeros-sim and the LAPI");
    Ok(())
}

fn up(v: Option<f64>) -> &'static str {
    if v == Some(1.0) { "up" } else { "down" }
}

fn headline(text: &str) {
    println!("\n== {text}");
}

fn checkpoint(text: &str) {
    println!("  checkpoint ok: {text}");
}

/// Ends a spinner and prints its outcome as a plain line (also when stdout is not a terminal,
/// where indicatif draws nothing).
fn done(bar: &ProgressBar, message: impl std::fmt::Display) {
    bar.finish_and_clear();
    println!("  {message}");
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("  {spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Polls `check` until it holds; fails with tikban's log when tikban dies or time runs out.
fn wait_for(
    bar: &ProgressBar,
    what: &str,
    mut check: impl FnMut() -> Result<bool>,
    tikban: &mut Reaper,
    work: &Path,
) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if matches!(check(), Ok(true)) {
            return Ok(());
        }
        if let Some(status) = tikban.0.try_wait()? {
            bar.abandon();
            bail!(
                "tikban exited with {status} while waiting for {what}:\n{}",
                log_tail(work)
            );
        }
        if Instant::now() > deadline {
            bar.abandon();
            bail!(
                "timed out after {WAIT:?} waiting for {what}:\n{}",
                log_tail(work)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Unpacks Debian's crowdsec package under target/ when missing.
fn ensure_crowdsec() -> Result<()> {
    let bar = spinner("CrowdSec LAPI binaries (Debian's crowdsec 1.4.6, unpacked under target/)");
    let out = Command::new("bash")
        .arg(util::root().join("scripts/install-crowdsec.sh"))
        .stdin(Stdio::null())
        .output()
        .context("run scripts/install-crowdsec.sh")?;
    if !out.status.success() {
        bar.abandon();
        bail!(
            "could not fetch Debian's crowdsec package:\n{}\nRun, as root: apt-get update && bash scripts/install-crowdsec.sh",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    done(
        &bar,
        format!(
            "CrowdSec binaries in {}",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    );
    Ok(())
}

struct Binaries {
    tikban: PathBuf,
    sim: PathBuf,
}

fn build(target_dir: &Path) -> Result<Binaries> {
    let bar = spinner("building tikban and routeros-sim (release; the first build takes minutes)");
    let out = util::cargo()
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "tikban",
            "-p",
            "routeros-sim",
        ])
        .current_dir(util::root())
        .stdin(Stdio::null())
        .output()
        .context("run cargo build")?;
    if !out.status.success() {
        bar.abandon();
        bail!(
            "cargo build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    done(
        &bar,
        "built target/release/tikban and target/release/routeros-sim",
    );
    let release = target_dir.join("release");
    Ok(Binaries {
        tikban: release.join("tikban"),
        sim: release.join("routeros-sim"),
    })
}

/// What `routeros-scripts/tikban-setup.rsc` creates on a real router: raw prerouting drops.
fn add_drop_rules(session: &mut Session) -> Result<()> {
    for (menu, list) in [("/ip/firewall/raw/add", V4), ("/ipv6/firewall/raw/add", V6)] {
        let cmd = ApiCommand::builder(menu)
            .attr("chain", "prerouting")
            .attr("action", "drop")
            .attr("src-address-list", list)
            .attr("comment", "tikban-setup: drop CrowdSec bans")
            .build()?;
        session.run(&cmd)?;
    }
    Ok(())
}

fn start_tikban(
    bin: &Path,
    lapi: &Lapi,
    key: &str,
    machine: &(String, String),
    router: SocketAddr,
    metrics_port: u16,
    work: &Path,
) -> Result<Reaper> {
    let log = File::create(work.join("tikban.log")).context("create target/demo/tikban.log")?;
    let env = [
        ("CROWDSEC_URL", lapi.url()),
        ("CROWDSEC_BOUNCER_API_KEY", key.to_owned()),
        ("CROWDSEC_UPDATE_FREQUENCY", POLL.to_owned()),
        ("MIKROTIK_HOST", router.to_string()),
        ("MIKROTIK_USER", USER.to_owned()),
        ("MIKROTIK_PASS", PASSWORD.to_owned()),
        ("CROWDSEC_MACHINE_ID", machine.0.clone()),
        ("CROWDSEC_MACHINE_PASSWORD", machine.1.clone()),
        ("METRICS_ADDR", "127.0.0.1".to_owned()),
        ("METRICS_PORT", metrics_port.to_string()),
    ];
    println!("  tikban configured only by environment variables:");
    for (k, v) in &env {
        let shown = if k.contains("KEY") || k.contains("PASS") {
            "<secret>"
        } else {
            v.as_str()
        };
        println!("    {k}={shown}");
    }
    let child = Command::new(bin)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    Ok(Reaper(child))
}

/// Step 4: a login brute force against the router, caught by guard from the router's own log,
/// banned on the router and shared through LAPI.
fn guard_step(
    lapi: &Lapi,
    sim: &mut procs::SimControl,
    session: &mut Session,
    metrics_port: u16,
    tikban: &mut Reaper,
    work: &Path,
) -> Result<()> {
    headline("4. guard: a login brute force against the router itself");
    let spin = spinner("guard follows the router log over the API");
    wait_for(
        &spin,
        "guard's log follower",
        || {
            let (_, m) = http_get(metrics_port, "/metrics")?;
            Ok(metric(&m, "tikban_guard_log_connected") == Some(1.0))
        },
        tikban,
        work,
    )?;
    done(
        &spin,
        "guard follows the router log (/log/print =follow-only=)",
    );
    println!(
        "  the router logs {FAILED_LOGINS} failed ssh logins from {ATTACKER} within 2 s (played \
         into routeros-sim's log):"
    );
    let first = Instant::now();
    // The list is read after each line, so the demo shows at which failure the ban landed.
    let mut seen: Option<(u32, Duration)> = None;
    for i in 0..FAILED_LOGINS {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        let line = format!("login failure for user admin from {ATTACKER} via ssh");
        sim.control(&format!("log system,error,critical {line}"))?;
        if i < 2 || i == FAILED_LOGINS - 1 {
            println!("    system,error,critical {line}");
        } else if i == 2 {
            println!("    …");
        }
        if seen.is_none() && addresses(session)?.iter().any(|a| a == ATTACKER) {
            seen = Some((i + 1, first.elapsed()));
        }
    }
    let spin = spinner("waiting for guard's ban on the router");
    wait_for(
        &spin,
        "guard's ban on the router",
        || Ok(addresses(session)?.iter().any(|a| a == ATTACKER)),
        tikban,
        work,
    )?;
    let (n, at) = seen.unwrap_or((FAILED_LOGINS, first.elapsed()));
    done(
        &spin,
        format!(
            "{ATTACKER} was on the router's drop list by failed login {n} of {FAILED_LOGINS}, \
             {:.1} s after the first (guard bans at the 6th: capacity 5, leakspeed 10s)",
            at.as_secs_f64()
        ),
    );
    print_lists(session)?;
    checkpoint("guard banned the attacker on the router, comment `tikban guard:login-bf`");

    let spin = spinner("waiting for guard's alert in LAPI (tikban posts it as a machine)");
    wait_for(
        &spin,
        "guard's alert in cscli alerts list",
        || {
            let out = lapi.cscli(&["alerts", "list", "-o", "json"]);
            let alerts: serde_json::Value = serde_json::from_str(out.trim())?;
            Ok(alerts.as_array().is_some_and(|a| {
                a.iter().any(|a| {
                    a["scenario"] == "tikban/routeros-login-bf" && a["source"]["value"] == ATTACKER
                })
            }))
        },
        tikban,
        work,
    )?;
    done(&spin, "the alert is in LAPI");
    println!("  cscli alerts list");
    indent(&lapi.cscli(&["alerts", "list"]));
    println!("  cscli decisions list");
    let table = lapi.cscli(&["decisions", "list"]);
    indent(&table);
    let decisions: serde_json::Value =
        serde_json::from_str(lapi.cscli(&["decisions", "list", "-o", "json"]).trim())
            .context("cscli decisions list -o json")?;
    // 1.4.6 lists alerts, each with its decisions; a bare decision is accepted too.
    let is_ban = |d: &serde_json::Value| {
        d["value"] == ATTACKER && d["type"] == "ban" && d["scenario"] == "tikban/routeros-login-bf"
    };
    let shared = decisions.as_array().is_some_and(|items| {
        items.iter().any(|a| {
            is_ban(a)
                || a["decisions"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(is_ban))
        })
    });
    if !shared {
        bail!("no ban of {ATTACKER} by tikban/routeros-login-bf in cscli decisions list:\n{table}");
    }
    checkpoint("guard's ban is a LAPI decision: every bouncer of this LAPI blocks the attacker");
    let (_, metrics) = http_get(metrics_port, "/metrics")?;
    for line in metrics.lines().filter(|l| {
        l.starts_with("tikban_guard_bans_total")
            || l.starts_with("tikban_guard_alerts_total")
            || l.starts_with("tikban_guard_events_total{service=\"ssh\"")
    }) {
        println!("  {line}");
    }
    Ok(())
}

/// Prints command output indented under its command line.
fn indent(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

/// Every address on both lists, sorted.
fn addresses(session: &mut Session) -> Result<Vec<String>> {
    let mut all: Vec<String> = rows(session)?
        .iter()
        .filter_map(|(_, r)| r.get_lossy("address").map(|a| a.into_owned()))
        .collect();
    all.sort();
    Ok(all)
}

fn rows(session: &mut Session) -> Result<Vec<(&'static str, Attributes)>> {
    let mut out = Vec::new();
    for (menu, list) in [
        ("/ip/firewall/address-list/print", V4),
        ("/ipv6/firewall/address-list/print", V6),
    ] {
        let cmd = ApiCommand::builder(menu)
            .proplist(&["address", "timeout", "comment", "dynamic"])
            .query(Query::Eq("list".to_owned(), list.as_bytes().to_vec()))
            .build()?;
        out.extend(session.run(&cmd)?.into_iter().map(|r| (list, r)));
    }
    Ok(out)
}

/// The router's address lists as a table.
fn print_lists(session: &mut Session) -> Result<()> {
    println!(
        "  {:<18} {:<24} {:<16} {:<22} dynamic",
        "list", "address", "timeout", "comment"
    );
    for (list, r) in rows(session)? {
        let get = |k: &str| r.get_lossy(k).map(|v| v.into_owned()).unwrap_or_default();
        println!(
            "  {:<18} {:<24} {:<16} {:<22} {}",
            list,
            get("address"),
            get("timeout"),
            get("comment"),
            get("dynamic")
        );
    }
    Ok(())
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn log_tail(work: &Path) -> String {
    procs::tail(&work.join("tikban.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_reads_one_series() {
        let text =
            "# HELP x\ntikban_connected{peer=\"lapi\"} 1\ntikban_connected{peer=\"router\"} 0\n";
        assert_eq!(metric(text, "tikban_connected{peer=\"lapi\"}"), Some(1.0));
        assert_eq!(metric(text, "tikban_connected{peer=\"router\"}"), Some(0.0));
        assert_eq!(metric(text, "tikban_decisions"), None);
    }
}
