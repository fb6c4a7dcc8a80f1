//! `cargo xtask soak --minutes N`: steady churn with faults, watching tikban's memory.
//!
//! The real CrowdSec LAPI, `routeros-sim` in-process (so faults can be injected), and a release
//! `tikban`. For N minutes:
//! - about 100 decision changes a second: batches of new bans with short durations (10–40 s)
//!   imported through `cscli`, which then expire (LAPI reports them deleted), plus explicit
//!   deletes through `cscli`;
//! - a fault every ~20 s, in turn: the router drops every connection, reboots (dynamic entries
//!   vanish), traps 10 % of adds for 5 s, stalls longer than the command timeout;
//! - tikban's RSS sampled every second from `/proc`.
//!
//! Then churn and faults stop, long-lived bans and deletes go in, and after the short bans have
//! run out the router must equal LAPI's truth exactly: the same addresses, each once. RSS must be
//! flat after warm-up (the first quarter): the least-squares slope over the rest, extrapolated to
//! the whole window, must stay under 2 MiB. tikban must never exit. Results go to stdout and to
//! `target/soak/result.json`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crowdsec_lapi::testing::Lapi;
use routeros_sim::{Family, Sim, SimConfig};

use crate::procs::{self, Tikban};
use crate::util;

const LIST: &str = "crowdsec-banned";
/// Decision changes per second to aim for.
const RATE: u64 = 100;
const FAULT_EVERY: Duration = Duration::from_secs(20);
/// Allowed RSS growth over the measured window, extrapolated from the trend.
const MAX_GROWTH: f64 = 2.0 * 1024.0 * 1024.0;

/// Runs the soak. `args`: `--minutes N` (default 2).
pub fn run(args: &[String]) -> Result<()> {
    let minutes: f64 = match args {
        [] => 2.0,
        [flag, n] if flag == "--minutes" => n.parse().context("--minutes takes a number")?,
        other => bail!("soak takes --minutes N, got {other:?}"),
    };
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let meta = util::metadata()?;
    let work = meta.target_dir.join("soak");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    eprintln!("=== soak: build tikban (release)");
    util::status(
        util::cargo()
            .args(["build", "--release", "--quiet", "-p", "tikban"])
            .current_dir(util::root()),
    )?;
    let tikban_bin = meta.target_dir.join("release").join("tikban");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let sim = Sim::new(SimConfig::default().with_user(procs::USER, procs::PASSWORD));
    let server = rt.block_on(sim.serve("127.0.0.1:0"))?;
    let lapi = Lapi::start_in(&work);
    let key = lapi.add_bouncer("tikban-soak");
    let mut tikban = Tikban::start(
        &tikban_bin,
        &lapi.url(),
        &key,
        server.addr(),
        &work,
        &[
            ("CROWDSEC_UPDATE_FREQUENCY", "1s"),
            ("RECONCILIATION_INTERVAL", "30s"),
            ("MIKROTIK_CMD_TIMEOUT", "2s"),
        ],
    )?;
    tikban.wait_healthy(Duration::from_secs(60), |_| {})?;
    eprintln!(
        "=== soak: {minutes} min of ~{RATE} changes/s with a fault every {}s",
        FAULT_EVERY.as_secs()
    );

    let start = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut next_sample = start;
    let mut next_fault = start + FAULT_EVERY;
    let mut fault_no = 0u32;
    let mut serial = 0u64;
    let mut changes = 0u64;
    let mut recent: Vec<String> = Vec::new();
    while start.elapsed() < duration {
        if tikban.exited()? {
            bail!("tikban exited during the soak:\n{}", tikban.log_text());
        }
        // One batch: RATE/2 new short bans; as many expire each second in steady state.
        let batch = RATE / 2;
        let values: Vec<String> = (0..batch)
            .map(|_| {
                serial += 1;
                addr(serial)
            })
            .collect();
        let json = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    r#"{{"duration":"{}s","origin":"cscli","reason":"soak","scope":"Ip","type":"ban","value":"{v}"}}"#,
                    10 + (serial as usize + i) % 31
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        lapi.import(&format!("[{json}]"), &[]);
        changes += batch;
        // A few explicit unbans of recent values.
        recent.extend(values);
        for v in recent.drain(..).step_by(25).take(2) {
            lapi.delete_decision(&["--ip", &v]);
            changes += 1;
        }
        if Instant::now() >= next_fault {
            inject(&sim, fault_no);
            fault_no += 1;
            next_fault += FAULT_EVERY;
        }
        if Instant::now() >= next_sample {
            let rss = procs::vm_rss(tikban.pid)? as f64;
            samples.push((start.elapsed().as_secs_f64(), rss));
            next_sample += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    sim.faults().trap_add_fraction(0.0);
    sim.faults().stall(false);
    eprintln!("=== soak: churn stopped after {changes} changes and {fault_no} faults; settling");

    // Final truth: long-lived bans, some of them deleted again.
    let finals: Vec<String> = (0..200)
        .map(|i| format!("198.18.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let json = finals
        .iter()
        .map(|v| format!(r#"{{"duration":"1h","origin":"cscli","reason":"soak-final","scope":"Ip","type":"ban","value":"{v}"}}"#))
        .collect::<Vec<_>>()
        .join(",");
    lapi.import(&format!("[{json}]"), &[]);
    for v in finals.iter().step_by(10) {
        lapi.delete_decision(&["--ip", v]);
    }
    // Every short ban (≤ 40 s) runs out; then one reconcile interval and a few polls.
    let settle_until = Instant::now() + Duration::from_secs(45 + 35);
    let mut last_mismatch = String::new();
    let converged = loop {
        let truth = truth(&lapi)?;
        let (router, duplicates) = router(&sim);
        if Instant::now() >= settle_until {
            if truth == router && duplicates == 0 {
                break true;
            }
            last_mismatch = format!(
                "router has {} addresses ({duplicates} duplicated), LAPI {}; only on router: {:?}; missing: {:?}",
                router.len(),
                truth.len(),
                router.difference(&truth).take(5).collect::<Vec<_>>(),
                truth.difference(&router).take(5).collect::<Vec<_>>()
            );
            if Instant::now() > settle_until + Duration::from_secs(60) {
                break false;
            }
        }
        if tikban.exited()? {
            bail!("tikban exited while settling:\n{}", tikban.log_text());
        }
        let rss = procs::vm_rss(tikban.pid)? as f64;
        samples.push((start.elapsed().as_secs_f64(), rss));
        std::thread::sleep(Duration::from_secs(1));
    };

    let measured: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= duration.as_secs_f64() / 4.0)
        .collect();
    let slope = slope(&measured);
    let window = measured.last().map_or(0.0, |l| l.0) - measured.first().map_or(0.0, |f| f.0);
    let growth = slope * window;
    let peak = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let first = measured.first().map_or(0.0, |s| s.1);
    let last = measured.last().map_or(0.0, |s| s.1);
    let restarts = count(&tikban.log_text(), "router connected");
    let hwm = tikban.stop()?;
    let result = serde_json::json!({
        "minutes": minutes,
        "changes": changes,
        "faults": fault_no,
        "router_reconnects": restarts.saturating_sub(1),
        "rss_first_mib": first / 1048576.0,
        "rss_last_mib": last / 1048576.0,
        "rss_peak_mib": peak / 1048576.0,
        "vm_hwm_mib": hwm as f64 / 1048576.0,
        "rss_trend_mib_over_window": growth / 1048576.0,
        "converged": converged,
    });
    std::fs::write(
        work.join("result.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    println!(
        "soak: {minutes} min, {changes} decision changes, {fault_no} faults, {} router reconnects",
        restarts.saturating_sub(1)
    );
    println!(
        "soak: RSS after warm-up {:.1} MiB → {:.1} MiB, peak {:.1} MiB, trend {:+.2} MiB over {:.0} s (limit ±{:.0} MiB)",
        first / 1048576.0,
        last / 1048576.0,
        peak / 1048576.0,
        growth / 1048576.0,
        window,
        MAX_GROWTH / 1048576.0
    );
    if !converged {
        bail!("router does not equal LAPI's truth after settling: {last_mismatch}");
    }
    println!(
        "soak: router equals LAPI's truth ({} addresses, no duplicates)",
        truth(&lapi)?.len()
    );
    if growth > MAX_GROWTH {
        bail!(
            "RSS keeps growing: {:+.2} MiB over {window:.0} s",
            growth / 1048576.0
        );
    }
    println!("soak ok");
    drop(server);
    drop(lapi);
    Ok(())
}

/// The n-th soak address, spread over 10.64.0.0/10.
fn addr(n: u64) -> String {
    let n = n % (1 << 22);
    format!("10.{}.{}.{}", 64 + (n >> 16), (n >> 8) & 255, n & 255)
}

fn inject(sim: &Sim, n: u32) {
    let faults = sim.faults();
    match n % 4 {
        0 => {
            eprintln!("  fault: the router drops every connection");
            faults.kill_connections();
        }
        1 => {
            eprintln!("  fault: the router reboots (dynamic entries vanish)");
            faults.reboot();
        }
        2 => {
            eprintln!("  fault: the router traps 10% of adds for 5 s");
            faults.trap_add_fraction(0.1);
            std::thread::sleep(Duration::from_secs(5));
            faults.trap_add_fraction(0.0);
        }
        _ => {
            eprintln!("  fault: the router stalls for 4 s (command timeout 2 s)");
            faults.stall(true);
            std::thread::sleep(Duration::from_secs(4));
            faults.stall(false);
        }
    }
}

/// Active ban values according to LAPI.
fn truth(lapi: &Lapi) -> Result<BTreeSet<String>> {
    // `-a`: imported decisions (origin cscli-import) are hidden without it on 1.4.6.
    let out = lapi.cscli(&["decisions", "list", "-a", "-o", "json", "--limit", "0"]);
    let alerts: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
    let mut values = BTreeSet::new();
    for alert in alerts.as_array().into_iter().flatten() {
        for d in alert["decisions"].as_array().into_iter().flatten() {
            let expired = d["duration"].as_str().is_some_and(|t| t.starts_with('-'));
            if let (Some(v), false) = (d["value"].as_str(), expired) {
                values.insert(v.to_owned());
            }
        }
    }
    Ok(values)
}

/// Addresses on the router's list, and how many appear more than once.
fn router(sim: &Sim) -> (BTreeSet<String>, usize) {
    let entries = sim.address_list(Family::V4, LIST);
    let total = entries.len();
    let set: BTreeSet<String> = entries.into_iter().map(|e| e.address).collect();
    let dups = total - set.len();
    (set, dups)
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// Least-squares slope of y over x.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 1.0)).collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64, if i % 2 == 0 { 5.0 } else { 7.0 }))
            .collect();
        assert!(slope(&flat).abs() < 0.3);
        assert_eq!(slope(&[(1.0, 1.0)]), 0.0);
    }

    #[test]
    fn soak_addresses_are_distinct_ipv4() {
        let a: BTreeSet<String> = (0..70_000).map(addr).collect();
        assert_eq!(a.len(), 70_000);
        assert!(a.iter().all(|s| s.parse::<std::net::Ipv4Addr>().is_ok()));
    }
}
