//! `tikban check`, the same checklist logged once at daemon start, and `tikban --healthcheck`.
//!
//! The checklist answers "will this setup work?" in one run, from the daemon's own environment:
//!
//! | item | how |
//! |---|---|
//! | LAPI reachable, LAPI TLS, LAPI key | one `HEAD /v1/decisions` on a new connection ([`LapiClient::probe`](crowdsec_lapi::LapiClient::probe)): the one authenticated request that leaves the bouncer's stream cursor alone (`docs/reference/crowdsec-lapi.md` §3) |
//! | clock | tikban's clock against the `Date` header of that answer; more than [`MAX_SKEW_SECS`] s apart fails |
//! | router reachable, router login, RouterOS version | its own short-lived API session (one `logged in` line in the router's log), `/system/resource` `version` |
//! | address lists writable | `tikban check` only: adds `192.0.2.255` (TEST-NET-1) with `timeout=1m` to the scratch list `tikban-check` and removes it |
//! | API user policy | at daemon start instead, which never writes anything but its own entries: `/user` → `/user/group` `policy`, `–` when not readable |
//! | list *name* | `count-only` print; `tikban check` also counts the entries with tikban's comment prefix |
//! | drop rules | every rule of `raw` and `filter`: a drop rule per list, enabled, not after an accept-all in its chain ([`is_accept_all`]) |
//! | router log | `/log/print count-only` (guard reads the log) |
//! | container memory | `/container/print` and `/container/config/print`, informative: `–` when not reported |
//!
//! Each step has a deadline of [`STEP`]; the whole run has [`OVERALL`]. The I/O is in `gather`,
//! the judgement in [`eval`] (pure, unit-tested).

pub mod eval;
mod gather;
pub mod healthcheck;

use std::process::ExitCode;
use std::time::Duration;

pub use eval::{Item, MAX_SKEW_SECS, Mark, Report, is_accept_all};
pub use gather::{PROBE_ADDRESS, PROBE_LIST};

use crate::config::Config;

/// Deadline of one step (a LAPI probe, a router connection, one router query).
pub const STEP: Duration = Duration::from_secs(10);
/// Deadline of the whole checklist; steps not started by then are reported `–`.
pub const OVERALL: Duration = Duration::from_secs(60);

/// What the checklist may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `tikban check`: may add and remove a probe entry in a scratch list.
    Cli,
    /// At daemon start: reads only.
    Startup,
}

/// `--help` lines for `check` and `--healthcheck`.
pub const HELP: &str = "\nChecks:\n  \
     tikban check\n      \
     checks the setup once with the daemon's environment (LAPI reachable, TLS, key, clock; \
     router reachable, login, version, write access, lists, drop rules, log, container memory), \
     prints a checklist with a hint for each failure, and exits 0 when everything holds, 1 \
     otherwise, 2 on a bad configuration; it adds and removes one probe entry (192.0.2.255, \
     list tikban-check, timeout 1m)\n  \
     tikban --healthcheck\n      \
     asks the running daemon's http://127.0.0.1:METRICS_PORT/health (METRICS_ADDR when it is a \
     specific address) within 3 s; exit 0 on 200, 1 otherwise. Reads only METRICS_ENABLED, \
     METRICS_PORT and METRICS_ADDR\n";

/// Runs the checklist.
pub async fn run(config: &Config, mode: Mode) -> Report {
    let deadline = tokio::time::Instant::now() + OVERALL;
    let facts = gather::gather(config, mode, STEP, deadline).await;
    eval::evaluate(&facts)
}

/// `tikban check`: prints the checklist; exit status 0 when no item failed, 1 otherwise.
pub fn cli(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tikban: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(run(&config, Mode::Cli));
    print!("{}", report.render());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Logs the checklist once, one line per item (`check ✓ …` at info, `check ✗ … (hint: …)` at
/// warn), from a task of its own: the daemon's sync does not wait for it. Uses its own router
/// session, never the daemon's, and never writes to the router.
pub fn spawn_at_start(config: &Config) {
    let config = config.clone();
    tokio::spawn(async move {
        // `run` is bounded by OVERALL already; this outer bound only guards against a bug.
        let Ok(report) = tokio::time::timeout(OVERALL + STEP, run(&config, Mode::Startup)).await
        else {
            tracing::warn!("check did not finish within its deadline");
            return;
        };
        log(&report);
    });
}

fn log(report: &Report) {
    for item in &report.items {
        match (&item.mark, &item.hint) {
            (Mark::Fail, Some(hint)) => tracing::warn!("check {} (hint: {hint})", item.line()),
            _ => tracing::info!("check {}", item.line()),
        }
    }
    let summary = format!(
        "check done: {} ✓, {} ✗, {} –",
        report.count(Mark::Pass),
        report.count(Mark::Fail),
        report.count(Mark::Skip)
    );
    if report.ok() {
        tracing::info!("{summary}");
    } else {
        tracing::warn!("{summary} (tikban check explains each; see docs/troubleshooting.md)");
    }
}
