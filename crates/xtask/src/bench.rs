//! `cargo xtask bench [--full] [--only LIST] [--heap-profile] [--baseline BIN]`: what a MikroTik owner feels, measured against the real LAPI and
//! `routeros-sim`, printed as one table and written to `target/bench/results.json`.
//!
//! 1. Cold sync: N decisions into an empty router, the sim at 1 ms per serialised write plus
//!    0.3 ms latency (an RB5009); wall time to converged against the floor N × 1 ms, and the same
//!    with `MIKROTIK_PIPELINE_WINDOW=1`.
//! 2. Warm restart: tikban restarts against the router it filled; writes and prints.
//! 3. A day of churn, in compressed time: a model run of the real engine ([`churn`]).
//! 4. Burst latency: 1,000 bans in one poll; poll response to entry on the router.
//! 5. Memory and CPU at 10k, 100k and (with `--full`) 1M decisions from the real LAPI: peak RSS
//!    of the shipped static musl build against 8 MiB at 100k and 48 MiB at 1M (the host build
//!    beside it), bytes per decision, one write per decision; with `--heap-profile`, heap bytes
//!    per structure from the counting allocator. With `--baseline BIN` (an older tikban build),
//!    that binary converges on the same LAPI and sim right after, at 100k and 1M, and its wall
//!    time is the limit ("no slower than before"); without it the 1M limit is the 52.2 s recorded
//!    before issue 19.
//! 6. Footprint: binary and image tar sizes from `dist/` (never rebuilt here).
//! 7. Guard replay: `tikban guard replay` over a generated 1,000,000-line log ([`guard`]).
//! 8. Entry budget: the cold sync of scenario 1 with `MAX_ENTRIES` at 30 % of N; wall time against
//!    the floor of the entries kept, writes, peak RSS (≤ 16 MiB at 100k).
//! 9. Guard live: RSS during a 1M-source spray and log line → router entry p50/p99 ([`guard_live`]),
//!    with a LAPI of its own that holds no decisions (an idle router).
//!
//! These are benchmarks, not tests: nothing here runs under `cargo test` except the unit tests of
//! the pure helpers. `docs/benchmarks.md` records a run.

mod churn;
mod guard;
mod guard_live;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use crowdsec_lapi::testing::Lapi;
use serde_json::json;

use crate::procs::{self, Cost, Sim, Tikban};
use crate::{dist, targets, tools, util};

/// The RB5009-like cost model of scenarios 1, 2 and 4.
const RB5009: Cost = Cost {
    per_write_ms: 1.0,
    latency_ms: 0.3,
};
const BURST: usize = 1000;
/// Issue 19's targets: peak RSS at 100k and at 1M decisions (MiB).
const MEM_100K_MIB: f64 = 8.0;
const MEM_1M_MIB: f64 = 48.0;
/// The 1M cold sync before issue 19 (real LAPI, a sim without write cost, 2 cores): no slower.
const SYNC_1M_BEFORE_S: f64 = 52.2;

/// One row of the table.
struct Row {
    scenario: String,
    figure: String,
    value: f64,
    unit: &'static str,
    /// The target (value must be ≤ limit); `None` for figures reported without a target.
    limit: Option<f64>,
}

impl Row {
    fn new(scenario: &str, figure: &str, value: f64, unit: &'static str) -> Row {
        Row {
            scenario: scenario.to_owned(),
            figure: figure.to_owned(),
            value,
            unit,
            limit: None,
        }
    }

    fn limit(mut self, limit: f64) -> Row {
        self.limit = Some(limit);
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.limit.filter(|l| *l > 0.0).map(|l| self.value / l)
    }

    fn pass(&self) -> Option<bool> {
        self.limit.map(|l| self.value <= l + 1e-9)
    }
}

struct Bench {
    rows: Vec<Row>,
    /// The static musl build users run (scenario 5's binary of record), when scenario 5 runs.
    shipped: Option<PathBuf>,
    tikban: PathBuf,
    sim: PathBuf,
    work: tempfile::TempDir,
    /// Built with the counting allocator: scenario 5 reports heap bytes per structure.
    heap_profile: bool,
    /// `--baseline BIN`: an older tikban build that scenario 5 runs beside, as the limit.
    baseline: Option<PathBuf>,
}

impl Bench {
    fn push(&mut self, row: Row) {
        eprintln!(
            "bench: {} | {} = {} {}{}",
            row.scenario,
            row.figure,
            fmt_value(row.value),
            row.unit,
            row.limit
                .map(|l| format!(" (limit {} {})", fmt_value(l), row.unit))
                .unwrap_or_default()
        );
        self.rows.push(row);
    }
}

/// `cargo xtask bench [--full] [--only LIST] [--heap-profile] [--baseline BIN]`.
pub fn run(args: &[String]) -> Result<()> {
    let mut full = false;
    let mut only: Option<Vec<u8>> = None;
    let mut heap_profile = false;
    let mut baseline: Option<PathBuf> = None;
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--full" => full = true,
            "--heap-profile" => heap_profile = true,
            "--only" => {
                let list = args
                    .next()
                    .context("bench: --only needs a list, e.g. --only 5")?;
                only = Some(parse_only(list)?);
            }
            "--baseline" => {
                let bin = args.next().context(
                    "bench: --baseline needs a tikban binary, e.g. --baseline /tmp/base/target/release/tikban",
                )?;
                let bin = PathBuf::from(bin);
                if !bin.is_file() {
                    bail!("bench: --baseline {}: no such file", bin.display());
                }
                baseline = Some(bin);
            }
            other => {
                bail!(
                    "bench: unknown argument {other:?} (--full, --only LIST, --heap-profile, --baseline BIN)"
                )
            }
        }
    }
    let wanted = |s: u8| only.as_ref().is_none_or(|o| o.contains(&s));
    let started = Instant::now();
    let sizes_sync: &[usize] = if full {
        &[10_000, 30_000, 100_000]
    } else {
        &[10_000]
    };
    let sizes_mem: &[usize] = if full {
        &[10_000, 100_000, 1_000_000]
    } else {
        &[10_000, 100_000]
    };

    let meta = util::metadata()?;
    // Recorded before the build: the figures describe the binaries built from this tree.
    let commit = commit_description();
    let mut build = vec![
        "build",
        "--release",
        "--quiet",
        "-p",
        "tikban",
        "-p",
        "routeros-sim",
    ];
    if heap_profile {
        // The counting allocator: heap figures per structure; RSS figures then include its
        // (small) cost, so a profile run is not the run of record for RSS.
        build.extend(["--features", "tikban/heap-profile"]);
    }
    eprintln!("=== bench: cargo {}", build.join(" "));
    util::status(util::cargo().args(&build).current_dir(util::root()))?;
    let release = meta.target_dir.join("release");
    // Scenario 5's binary of record is the one users run: the static musl build of `cargo xtask
    // dist`, without the glibc shared objects a host build maps.
    let shipped = if wanted(5) && !heap_profile {
        Some(shipped_build(&meta)?)
    } else {
        None
    };
    let mut b = Bench {
        rows: Vec::new(),
        shipped,
        tikban: release.join("tikban"),
        sim: release.join("routeros-sim"),
        work: tempfile::tempdir().context("temporary directory")?,
        heap_profile,
        baseline,
    };

    eprintln!("=== bench: start the CrowdSec LAPI");
    let lapi = Lapi::start();
    let mut held = 0usize; // decisions LAPI holds

    if wanted(4) {
        burst(&mut b, &lapi, &mut held)?;
    }
    // Ascending sizes, so LAPI holds exactly N (the burst's 1,000 included) when N is measured.
    let mut sizes: Vec<usize> = sizes_sync.iter().chain(sizes_mem).copied().collect();
    sizes.sort_unstable();
    sizes.dedup();
    for n in sizes {
        if sizes_sync.contains(&n) && (wanted(1) || wanted(2)) {
            import_up_to(&lapi, &mut held, n)?;
            cold_and_warm(&mut b, &lapi, n)?;
        }
        if sizes_sync.contains(&n) && wanted(8) {
            import_up_to(&lapi, &mut held, n)?;
            budget(&mut b, &lapi, n)?;
        }
        if sizes_mem.contains(&n) && wanted(5) {
            memory(&mut b, &lapi, &mut held, n)?;
        }
    }
    drop(lapi);
    if wanted(9) {
        // Guard live measures an idle router: a LAPI of its own, without decisions. The shared
        // one holds N by now (a million after `--full`'s scenario 5), which tikban would first
        // write to the sim, and the bench's follower of the list would then read a million
        // adds before the ban it waits for.
        eprintln!("=== bench: start a LAPI without decisions for scenario 9");
        let lapi = Lapi::start();
        guard_live::run(&mut b, &lapi)?;
    }
    if wanted(3) {
        churn_day(&mut b);
    }
    if wanted(7) {
        guard::replay(&mut b)?;
    }
    if wanted(6) {
        footprint(&mut b, &meta.version);
    }

    let runtime = started.elapsed();
    print_table(&b.rows);
    write_json(&b.rows, full, runtime, &commit, &meta.target_dir)?;
    println!(
        "bench: {} in {:.0} s; results in {}",
        if full { "--full" } else { "default sizes" },
        runtime.as_secs_f64(),
        meta.target_dir.join("bench/results.json").display()
    );
    Ok(())
}

/// `--only 1,5`: the scenarios to run (1 and 2 run together).
fn parse_only(list: &str) -> Result<Vec<u8>> {
    list.split(',')
        .map(|s| match s.trim().parse::<u8>() {
            Ok(n @ 1..=9) => Ok(n),
            _ => bail!("bench: --only takes scenario numbers 1 to 9, comma-separated; got {s:?}"),
        })
        .collect()
}

/// `cscli decisions import` of `n - held` more bans (10.0.0.0 upwards), in one file.
fn import_up_to(lapi: &Lapi, held: &mut usize, n: usize) -> Result<()> {
    if n <= *held {
        return Ok(());
    }
    let start = Instant::now();
    let json = import_json(0x0A00_0000 + *held as u32, n - *held, "4h");
    lapi.import(&json, &[]);
    eprintln!(
        "=== bench: LAPI imported {} decisions in {:.1} s",
        n - *held,
        start.elapsed().as_secs_f64()
    );
    *held = n;
    Ok(())
}

/// A `cscli decisions import` file: `count` IPv4 bans from `first`.
fn import_json(first: u32, count: usize, duration: &str) -> String {
    let mut s = String::with_capacity(count * 110 + 2);
    s.push('[');
    for i in 0..count as u32 {
        if i > 0 {
            s.push(',');
        }
        let ip = std::net::Ipv4Addr::from(first + i);
        s.push_str(&format!(
            r#"{{"duration":"{duration}","origin":"cscli","reason":"bench","scope":"Ip","type":"ban","value":"{ip}"}}"#
        ));
    }
    s.push(']');
    s
}

/// Scenarios 1 and 2 for `n` decisions.
fn cold_and_warm(b: &mut Bench, lapi: &Lapi, n: usize) -> Result<()> {
    let s1 = format!("1 cold sync N={}", human(n));
    let floor = n as f64 * RB5009.per_write_ms / 1000.0;
    let within = Duration::from_secs_f64(floor * 10.0 + 120.0);

    eprintln!("=== bench: {s1}, pipeline window 64 (default)");
    let sim = Sim::start(&b.sim, Some(RB5009))?;
    let key = lapi.add_bouncer(&format!("bench-cold-{n}"));
    let mut t = Tikban::start(&b.tikban, &lapi.url(), &key, sim.addr, b.work.path(), &[])?;
    let wall = t.wait_healthy(within, |_| {})?.as_secs_f64();
    let cmds = t.commands()?;
    let cpu = procs::cpu_secs(t.pid)?;
    t.stop()?;
    let on_router = sim.count()?;
    if on_router != n {
        bail!("{s1}: the router holds {on_router} entries, expected {n}");
    }
    b.push(Row::new(&s1, "wall time to converged", wall, "s").limit(1.1 * floor));
    b.push(Row::new(
        &s1,
        "router commands",
        total(&cmds) as f64,
        "cmds",
    ));
    b.push(Row::new(&s1, "tikban CPU during the sync", cpu, "s"));

    eprintln!("=== bench: 2 warm restart N={}", human(n));
    let s2 = format!("2 warm restart N={}", human(n));
    let key = lapi.add_bouncer(&format!("bench-warm-{n}"));
    let mut t = Tikban::start(&b.tikban, &lapi.url(), &key, sim.addr, b.work.path(), &[])?;
    let wall = t.wait_healthy(within, |_| {})?.as_secs_f64();
    let cmds = t.commands()?;
    t.stop()?;
    drop(sim);
    b.push(Row::new(&s2, "write commands", writes(&cmds) as f64, "cmds").limit(0.0));
    b.push(
        Row::new(
            &s2,
            "prints (lists: v4 + v6)",
            get(&cmds, "print") as f64,
            "cmds",
        )
        .limit(2.0),
    );
    b.push(Row::new(&s2, "time to converged", wall, "s"));

    eprintln!("=== bench: {s1}, pipeline window 1 (sequential baseline)");
    let sim = Sim::start(&b.sim, Some(RB5009))?;
    let key = lapi.add_bouncer(&format!("bench-seq-{n}"));
    let mut t = Tikban::start(
        &b.tikban,
        &lapi.url(),
        &key,
        sim.addr,
        b.work.path(),
        &[("MIKROTIK_PIPELINE_WINDOW", "1")],
    )?;
    let wall = t.wait_healthy(within * 3, |_| {})?.as_secs_f64();
    t.stop()?;
    drop(sim);
    b.push(Row::new(&s1, "window 1: wall time (baseline)", wall, "s"));
    b.push(Row::new(&s1, "window 1: ratio to floor", wall / floor, "x"));
    Ok(())
}

/// Scenario 8: a cold sync of `n` decisions with an entry budget of 30 % of them (issue 14): the
/// budget's cost is one write per entry kept, at the floor once the whole snapshot is in (the
/// budget ranks all N, so no write can start before), and memory stays within 16 MiB at 100k.
fn budget(b: &mut Bench, lapi: &Lapi, n: usize) -> Result<()> {
    let s8 = format!("8 budget 30 % N={}", human(n));
    let limit = n * 3 / 10;
    let floor = limit as f64 * RB5009.per_write_ms / 1000.0;
    let within = Duration::from_secs_f64(floor * 10.0 + 120.0);
    eprintln!("=== bench: {s8}");
    let sim = Sim::start(&b.sim, Some(RB5009))?;
    let key = lapi.add_bouncer(&format!("bench-budget-{n}"));
    let max = limit.to_string();
    let mut t = Tikban::start(
        &b.tikban,
        &lapi.url(),
        &key,
        sim.addr,
        b.work.path(),
        &[("MAX_ENTRIES", &max)],
    )?;
    // When the whole snapshot is in (`LAPI connected`): the budget can rank nothing before.
    let mut snapshot_in: Option<f64> = None;
    let wall = t
        .wait_healthy(within, |t| {
            if snapshot_in.is_none() && t.log_text().contains("LAPI connected") {
                snapshot_in = Some(t.started.elapsed().as_secs_f64());
            }
        })?
        .as_secs_f64();
    let cmds = t.commands()?;
    let (hwm, _) = t.terminate(Duration::from_secs(30))?;
    let on_router = sim.count()?;
    if on_router != limit {
        bail!("{s8}: the router holds {on_router} entries, expected the budget, {limit}");
    }
    b.push(Row::new(
        &s8,
        "wall time to converged (from start)",
        wall,
        "s",
    ));
    if let Some(at) = snapshot_in {
        b.push(Row::new(
            &s8,
            "LAPI snapshot of all N in (from start)",
            at,
            "s",
        ));
        // The budget's own cost: from the full snapshot to the kept entries all written,
        // against the floor of those writes (the issue's target is at 100k, a 30k budget).
        let mut cost = Row::new(&s8, "snapshot in → converged", wall - at, "s");
        if n == 100_000 {
            cost = cost.limit(1.1 * floor);
        }
        b.push(cost);
    }
    b.push(Row::new(&s8, "write commands", writes(&cmds) as f64, "cmds").limit(limit as f64));
    let mut rss = Row::new(
        &s8,
        "peak RSS (VmHWM), host build",
        hwm as f64 / (1024.0 * 1024.0),
        "MiB",
    );
    if n == 100_000 {
        rss = rss.limit(16.0);
    }
    b.push(rss);
    Ok(())
}

/// Scenario 4: 1,000 bans in one poll.
fn burst(b: &mut Bench, lapi: &Lapi, held: &mut usize) -> Result<()> {
    let s4 = "4 burst 1,000 bans";
    eprintln!("=== bench: {s4}");
    let sim = Sim::start(&b.sim, Some(RB5009))?;
    let key = lapi.add_bouncer("bench-burst");
    let mut t = Tikban::start(
        &b.tikban,
        &lapi.url(),
        &key,
        sim.addr,
        b.work.path(),
        &[("CROWDSEC_UPDATE_FREQUENCY", "1s"), ("LOG_LEVEL", "debug")],
    )?;
    t.wait_healthy(Duration::from_secs(120), |_| {})?;
    let follow = sim.follow(BURST, Duration::from_secs(120))?;
    // 172.16.0.0/22: apart from the bulk imports.
    lapi.import(&import_json(0xAC10_0000, BURST, "4h"), &[]);
    *held += BURST;
    let seen: Vec<procs::Seen> = follow.iter().take(BURST).collect();
    let log = t.log_text();
    t.stop()?;
    drop(sim);
    if seen.len() < BURST {
        bail!(
            "{s4}: only {} of {BURST} entries reached the router",
            seen.len()
        );
    }
    let polls = polls_with_news(&log);
    let mut latencies = Vec::with_capacity(BURST);
    for s in &seen {
        let at = unix_secs(s.at);
        let Some(poll) = polls.iter().rev().find(|p| **p <= at) else {
            bail!("{s4}: {} appeared before any poll returned it", s.address);
        };
        latencies.push((at - poll) * 1000.0);
    }
    let floor_ms = BURST as f64 * RB5009.per_write_ms;
    let p50 = percentile(&mut latencies, 50.0);
    let p99 = percentile(&mut latencies, 99.0);
    let max = percentile(&mut latencies, 100.0);
    let used = polls
        .iter()
        .filter(|p| seen.iter().any(|s| unix_secs(s.at) >= **p))
        .count();
    b.push(Row::new(s4, "p50 poll response → on router", p50, "ms"));
    b.push(Row::new(s4, "p99 poll response → on router", p99, "ms").limit(50.0 + floor_ms));
    b.push(Row::new(s4, "max poll response → on router", max, "ms"));
    b.push(Row::new(
        s4,
        "polls that carried the burst",
        used as f64,
        "polls",
    ));
    Ok(())
}

/// Times (Unix seconds) of tikban's `LAPI stream polled` debug lines with `new` > 0.
fn polls_with_news(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("LAPI stream polled") && !l.contains(" new=0 "))
        .filter_map(|l| l.split_whitespace().next().and_then(parse_rfc3339))
        .collect()
}

/// One cold start of a tikban binary against the real LAPI's `n` decisions, to convergence.
struct MemoryRun {
    wall: f64,
    hwm: u64,
    ingest_cpu: Option<f64>,
    ingest_rss: Option<u64>,
    total_cpu: f64,
    writes: u64,
    log: String,
}

fn memory_run(
    b: &Bench,
    binary: &Path,
    lapi: &Lapi,
    key: &str,
    expected: usize,
) -> Result<MemoryRun> {
    let sim = Sim::start(&b.sim, None)?;
    // No entry budget: every decision goes to the router (the sim's 2 GiB would give `auto`
    // 511,000 entries), so the figures cover all N.
    let mut t = Tikban::start(
        binary,
        &lapi.url(),
        key,
        sim.addr,
        b.work.path(),
        &[("MAX_ENTRIES", "0")],
    )?;
    let mut ingest_cpu: Option<f64> = None;
    let mut ingest_rss: Option<u64> = None;
    let wall = t
        .wait_healthy(Duration::from_secs(900), |t| {
            if ingest_cpu.is_none() && t.log_text().contains("LAPI connected") {
                ingest_cpu = procs::cpu_secs(t.pid).ok();
                ingest_rss = procs::vm_hwm(t.pid).ok();
            }
        })?
        .as_secs_f64();
    let total_cpu = procs::cpu_secs(t.pid)?;
    let cmds = t.commands()?;
    let (hwm, log) = t.terminate(Duration::from_secs(30))?;
    let on_router = sim.count()?;
    if on_router != expected {
        bail!(
            "{}: the router holds {on_router} entries, expected {expected}",
            binary.display()
        );
    }
    Ok(MemoryRun {
        wall,
        hwm,
        ingest_cpu,
        ingest_rss,
        total_cpu,
        writes: writes(&cmds),
        log,
    })
}

/// Scenario 5 for `n` decisions, all from the real LAPI: peak RSS, bytes per decision, CPU, and
/// at 100k and 1M the targets of issue 19 (`docs/benchmarks.md`). The figures of record come
/// from the shipped static binary; the host (glibc) build runs too, for comparison with figures
/// measured on it before.
fn memory(b: &mut Bench, lapi: &Lapi, held: &mut usize, n: usize) -> Result<()> {
    let s5 = format!("5 memory/CPU N={}", human(n));
    // The burst's 1,000 bans are part of the LAPI's content.
    import_up_to(lapi, held, n)?;
    let expected = *held;
    eprintln!("=== bench: {s5}");
    let mib = |x: u64| x as f64 / (1024.0 * 1024.0);
    let binary = b.shipped.clone().unwrap_or_else(|| b.tikban.clone());
    let key = lapi.add_bouncer(&format!("bench-mem-{n}"));
    let run = memory_run(b, &binary, lapi, &key, expected)?;
    // The older build, right after, on the same LAPI content and a fresh sim: its wall time is
    // the limit. It runs second, so any warm-up of LAPI's database favours it, not us.
    let base = match &b.baseline {
        Some(bin) if n >= 100_000 && !b.heap_profile => {
            let key = lapi.add_bouncer(&format!("bench-mem-base-{n}"));
            Some(memory_run(b, &bin.clone(), lapi, &key, expected)?)
        }
        _ => None,
    };
    let profile = memory_profile(&run.log)
        .with_context(|| format!("{s5}: no `memory profile` line in tikban's log"))?;
    for (field, figure) in [
        ("cache_v4", "heap: decision cache, IPv4 hosts"),
        ("cache_other", "heap: decision cache, IPv6 and ranges"),
        ("cache_multi", "heap: decision cache, several holders"),
        ("router_view", "heap: router view and adds queue"),
        ("heap_peak", "heap: process peak (counting allocator)"),
        ("heap_now", "heap: process live at shutdown"),
    ] {
        if let Some(bytes) = profile.get(field) {
            b.push(Row::new(&s5, figure, mib(*bytes), "MiB"));
        }
    }
    if b.heap_profile {
        // The counting allocator runs: these RSS figures carry its cost, no targets apply.
        b.push(Row::new(
            &s5,
            "peak RSS (VmHWM), profiling build",
            mib(run.hwm),
            "MiB",
        ));
        return Ok(());
    }
    let mut rss = Row::new(&s5, "peak RSS (VmHWM), sync included", mib(run.hwm), "MiB");
    match n {
        100_000 => rss = rss.limit(MEM_100K_MIB),
        1_000_000 => rss = rss.limit(MEM_1M_MIB),
        _ => {}
    }
    b.push(rss);
    b.push(Row::new(
        &s5,
        "bytes per decision (peak RSS / N)",
        run.hwm as f64 / expected as f64,
        "B",
    ));
    if let Some(r) = run.ingest_rss {
        b.push(Row::new(
            &s5,
            "peak RSS after snapshot ingest",
            mib(r),
            "MiB",
        ));
    }
    if let Some(c) = run.ingest_cpu {
        b.push(Row::new(&s5, "CPU to ingest the snapshot", c, "s"));
    }
    b.push(Row::new(
        &s5,
        "CPU to converged (ingest + sync)",
        run.total_cpu,
        "s",
    ));
    let mut sync = Row::new(&s5, "wall time to converged", run.wall, "s");
    match &base {
        Some(base) => sync = sync.limit(base.wall),
        None if n == 1_000_000 => sync = sync.limit(SYNC_1M_BEFORE_S),
        None => {}
    }
    b.push(sync);
    if let Some(base) = &base {
        b.push(Row::new(
            &s5,
            "wall time to converged, --baseline build",
            base.wall,
            "s",
        ));
        b.push(Row::new(
            &s5,
            "CPU to converged, --baseline build",
            base.total_cpu,
            "s",
        ));
    }
    // With every decision on the router (checked above), at most one write each is exactly one.
    b.push(
        Row::new(
            &s5,
            "writes per decision",
            run.writes as f64 / expected as f64,
            "cmds",
        )
        .limit(1.0),
    );
    // Marginal bytes per decision against the previous size.
    let prev = b
        .rows
        .iter()
        .rev()
        .find(|r| {
            r.scenario.starts_with("5 ")
                && r.scenario != s5
                && r.figure.starts_with("peak RSS (VmHWM)")
        })
        .map(|r| (r.scenario.clone(), r.value));
    if let Some((scenario, prev_mib)) = prev {
        let prev_n = parse_human(scenario.rsplit('=').next().unwrap_or_default());
        if let Some(prev_n) = prev_n.filter(|p| *p < n) {
            let per = (mib(run.hwm) - prev_mib) * 1024.0 * 1024.0 / (n - prev_n) as f64;
            b.push(Row::new(
                &s5,
                &format!("bytes per decision (marginal over N={})", human(prev_n)),
                per,
                "B",
            ));
        }
    }
    if b.shipped.is_some() {
        // The same start with the host build: its glibc, libm and loader mappings add a fixed
        // ~2.3 MiB of shared, clean pages.
        let key = lapi.add_bouncer(&format!("bench-mem-host-{n}"));
        let host = memory_run(b, &b.tikban.clone(), lapi, &key, expected)?;
        b.push(Row::new(
            &s5,
            "peak RSS, host glibc build (for comparison)",
            mib(host.hwm),
            "MiB",
        ));
    }
    Ok(())
}

/// `cargo zigbuild` of the x86_64 musl target, as `cargo xtask dist` builds it; returns the
/// binary. Fails with the install commands when zig or cargo-zigbuild is missing.
fn shipped_build(meta: &util::Metadata) -> Result<PathBuf> {
    let target = targets::find("x86_64-unknown-linux-musl")
        .context("the x86_64 musl target is in targets.rs")?;
    tools::require(
        "bench",
        &tools::missing_for_dist(&[target])?,
        "cargo xtask dist --target x86 --install-tools",
    )?;
    eprintln!(
        "=== bench: cargo zigbuild --release -p tikban --target {}",
        target.triple
    );
    util::status(&mut dist::build_command(target))?;
    Ok(meta
        .target_dir
        .join(target.triple)
        .join("release")
        .join("tikban"))
}

/// The fields of tikban's `memory profile (bytes)` shutdown line: `name=123` pairs (fields that
/// are absent, or `None`, are left out).
fn memory_profile(log: &str) -> Option<std::collections::HashMap<String, u64>> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("memory profile (bytes)"))?;
    Some(
        line.split_whitespace()
            .filter_map(|w| {
                let (k, v) = w.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect(),
    )
}

/// Scenario 3.
fn churn_day(b: &mut Bench) {
    let s3 = "3 a day of churn (model run)";
    eprintln!("=== bench: {s3}");
    let started = Instant::now();
    let r = churn::run(&churn::Params::default());
    eprintln!(
        "=== bench: churn model ran in {:.1} s: {r:?}",
        started.elapsed().as_secs_f64()
    );
    b.push(Row::new(
        s3,
        "decisions in the trace",
        r.decisions as f64,
        "decisions",
    ));
    b.push(Row::new(
        s3,
        "real changes (ban + unban)",
        r.real_changes as f64,
        "writes",
    ));
    b.push(Row::new(
        s3,
        "refreshes the oracle needs",
        r.oracle_refreshes as f64,
        "writes",
    ));
    b.push(
        Row::new(
            s3,
            "tikban writes (lazy refresh)",
            r.tikban_writes() as f64,
            "writes",
        )
        .limit(r.bound() as f64 * 1.05),
    );
    b.push(Row::new(
        s3,
        "  of which set (refresh)",
        r.refreshes as f64,
        "writes",
    ));
    b.push(
        Row::new(
            s3,
            "writes planned by hourly reconciles",
            r.reconcile_writes as f64,
            "writes",
        )
        .limit(0.0),
    );
    b.push(Row::new(
        s3,
        "baseline: refresh on every re-insert",
        r.refresh_every_reinsert as f64,
        "writes",
    ));
    b.push(Row::new(
        s3,
        "baseline: rebuild the list hourly",
        r.hourly_rebuild as f64,
        "writes",
    ));
}

/// Scenario 6, from `dist/` only.
fn footprint(b: &mut Bench, version: &str) {
    let s6 = "6 footprint";
    let dist = util::dist_dir();
    for arch in ["arm64", "x86", "arm", "armv5"] {
        let bin = dist.join(format!("tikban-{version}-{arch}"));
        let tar = dist.join(format!("tikban-{version}-{arch}.tar"));
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
        match (size(&bin), size(&tar)) {
            (Some(bs), Some(ts)) => {
                let mib = |x: u64| x as f64 / (1024.0 * 1024.0);
                b.push(Row::new(s6, &format!("{arch}: binary"), mib(bs), "MiB"));
                b.push(Row::new(s6, &format!("{arch}: image tar"), mib(ts), "MiB"));
            }
            _ => eprintln!("bench: {arch}: not built (run `cargo xtask dist --all`)"),
        }
    }
}

fn get(cmds: &std::collections::HashMap<String, u64>, kind: &str) -> u64 {
    cmds.get(kind).copied().unwrap_or(0)
}

fn writes(cmds: &std::collections::HashMap<String, u64>) -> u64 {
    get(cmds, "add") + get(cmds, "remove") + get(cmds, "set")
}

fn total(cmds: &std::collections::HashMap<String, u64>) -> u64 {
    cmds.values().sum()
}

/// The `p`th percentile (nearest rank) of `xs`; sorts `xs`. NaN for an empty slice.
pub fn percentile(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

/// `2026-03-01T10:11:12.123456Z` (tracing-subscriber's UTC timestamp) → Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn parse_human(s: &str) -> Option<usize> {
    if let Some(m) = s.strip_suffix('M') {
        m.parse::<usize>().ok().map(|x| x * 1_000_000)
    } else if let Some(k) = s.strip_suffix('k') {
        k.parse::<usize>().ok().map(|x| x * 1000)
    } else {
        s.parse().ok()
    }
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn print_table(rows: &[Row]) {
    let head = ["scenario", "figure", "value", "limit", "ratio", "result"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.figure.clone(),
                format!("{} {}", fmt_value(r.value), r.unit),
                r.limit
                    .map(|l| format!("≤ {} {}", fmt_value(l), r.unit))
                    .unwrap_or_else(|| "-".into()),
                r.ratio()
                    .map(|x| format!("{x:.3}"))
                    .unwrap_or_else(|| "-".into()),
                match r.pass() {
                    Some(true) => "pass".into(),
                    Some(false) => "MISS".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let mut width = head.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let parts: Vec<String> = c
            .iter()
            .zip(width)
            .map(|(s, w)| format!("{s}{}", " ".repeat(w - s.chars().count())))
            .collect();
        format!("| {} |", parts.join(" | "))
    };
    println!("{}", line(&head.map(String::from)));
    println!(
        "|{}|",
        width
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for c in &cells {
        println!("{}", line(c));
    }
}

/// `git rev-parse --short HEAD`, plus ` + uncommitted changes` when the tree is dirty.
fn commit_description() -> String {
    let commit = util::output(
        std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(util::root()),
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    .unwrap_or_else(|_| "unknown".into());
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(util::root())
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{commit} + uncommitted changes")
    } else {
        commit
    }
}

fn write_json(
    rows: &[Row],
    full: bool,
    runtime: Duration,
    commit: &str,
    target: &Path,
) -> Result<()> {
    let machine = json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines()
            .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).ok(),
        "loadavg": std::fs::read_to_string("/proc/loadavg").map(|s| s.trim().to_owned()).ok(),
    });
    let out = json!({
        "command": if full { "cargo xtask bench --full" } else { "cargo xtask bench" },
        "unix_time": unix_secs(SystemTime::now()) as u64,
        "commit": commit,
        "runtime_s": runtime.as_secs_f64(),
        "machine": machine,
        "rows": rows.iter().map(|r| json!({
            "scenario": r.scenario,
            "figure": r.figure,
            "value": r.value,
            "unit": r.unit,
            "limit": r.limit,
            "ratio": r.ratio(),
            "pass": r.pass(),
        })).collect::<Vec<_>>(),
    });
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out)?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let mut xs: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut xs, 50.0), 50.0);
        assert_eq!(percentile(&mut xs, 99.0), 99.0);
        assert_eq!(percentile(&mut xs, 100.0), 100.0);
        assert_eq!(percentile(&mut [7.0], 99.0), 7.0);
        assert!(percentile(&mut [], 50.0).is_nan());
    }

    #[test]
    fn tracing_timestamps_parse_to_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00.000000Z"), Some(0.0));
        let t = parse_rfc3339("2026-03-01T10:11:12.250000Z").unwrap();
        assert!((t - 1_772_359_872.25).abs() < 1e-6, "{t}");
        assert_eq!(parse_rfc3339("not a time"), None);
    }

    #[test]
    fn polls_with_news_skip_empty_polls() {
        let log = "2026-03-01T10:11:12.250000Z DEBUG LAPI stream polled startup=false new=0 deleted=0\n\
                   2026-03-01T10:11:13.250000Z DEBUG LAPI stream polled startup=false new=1000 deleted=0\n";
        assert_eq!(polls_with_news(log).len(), 1);
    }

    #[test]
    fn the_memory_profile_line_is_read_back() {
        let log = "2026-12-01T00:00:00Z  INFO tikban::daemon: memory profile (bytes) \
                   decisions=100000 cache_v4=1828576 router_view=2228576 guard=0 heap_peak=5000000\n\
                   2026-12-01T00:00:00Z  INFO tikban::daemon: tikban stopped\n";
        let p = memory_profile(log).unwrap();
        assert_eq!(p["cache_v4"], 1_828_576);
        assert_eq!(p["heap_peak"], 5_000_000);
        assert!(!p.contains_key("heap_now"));
        assert!(memory_profile("tikban stopped").is_none());
    }

    #[test]
    fn scenario_lists_parse_and_reject_unknown_numbers() {
        assert_eq!(parse_only("5").unwrap(), vec![5]);
        assert_eq!(parse_only("1, 7").unwrap(), vec![1, 7]);
        assert_eq!(parse_only("8,9").unwrap(), vec![8, 9]);
        assert!(parse_only("10").is_err());
        assert!(parse_only("0").is_err());
        assert!(parse_only("memory").is_err());
    }

    #[test]
    fn sizes_print_and_parse_back() {
        for n in [10_000, 100_000, 1_000_000, 1234] {
            assert_eq!(parse_human(&human(n)), Some(n));
        }
    }
}
