//! `cargo xtask`: developer tasks for tikban that cargo alone does not do.
//!
//! - `dist [--all] [--target T]…` builds fully static musl release binaries with zig as linker
//!   and C compiler, checks each against the size budget, checks that it has no program
//!   interpreter, runs `--version` (under qemu-user for foreign architectures), and writes one
//!   docker-archive tar per RouterOS architecture into `dist/` ([`image`]), and one multi-platform
//!   OCI image layout for registries, `dist/oci` ([`oci`]).
//! - `registry-check [--all] [--target T]…` pushes `dist/oci` to a loopback registry, pulls each
//!   platform back as a router would, unpacks it and runs it ([`registry`]).
//! - `validate-image TAR…` checks tars with third-party tools: `skopeo inspect`, then
//!   `skopeo copy` to an OCI layout and `umoci unpack`, then runs the unpacked `/tikban`.
//! - `demo [--once]` walks through tikban's story with the real LAPI, `routeros-sim` and a
//!   release `tikban` ([`demo`]).
//! - `smoke [--target T]` runs a dist binary under qemu against a real CrowdSec LAPI and
//!   `routeros-sim` and waits for one ban to reach the address list.
//!
//! This is a tool for the people who build tikban. It is never shipped, and it must not grow
//! into a second build system: cargo builds, zig links, and this only sequences and checks.
//! It shells out to tools on `PATH` (`cargo-zigbuild`, `readelf`, `qemu-*-static`, `skopeo`,
//! `umoci`); `dist` checks them first and `dist --install-tools` installs them ([`tools`]).
//! See `docs/packaging.md`.

mod bench;
mod demo;
mod dist;
mod image;
mod oci;
mod procs;
mod registry;
mod ros;
mod smoke;
mod soak;
mod targets;
mod tools;
mod util;
mod validate;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  soak [--minutes N]             churn (~100 changes/s) with router faults against the real LAPI;
                                 RSS must stay flat, the router must end equal to LAPI (default 2)
  demo [--once]                  real LAPI + routeros-sim + tikban: ban, show, unban, metrics;
                                 then a live status line until Ctrl-C (--once: stop after the
                                 story, exit non-zero if a checkpoint fails)
  dist [--all] [--target T]...   build static binaries, RouterOS image tars and an OCI image
                                 index for registries (dist/oci) into dist/ (default: aarch64
                                 and x86_64; --all adds armv7 and armv5te; T is a triple or
                                 arm64|x86|arm|armv5); first checks the tools and prints the
                                 install command of each missing one
  dist [...] --install-tools     install those tools (versions: scripts/dist-tools.env)
  registry-check [--all] [--target T]... [--install-tools]
                                 push dist/oci to a loopback docker-registry with skopeo, pull
                                 each platform back, umoci unpack, run --version (same targets
                                 as the dist run before it)
  validate-image TAR...          skopeo inspect, skopeo copy to OCI, umoci unpack, run --version
  smoke [--target T]             qemu end-to-end: real LAPI + routeros-sim, one ban must appear
                                 (default target: aarch64; needs `cargo xtask dist` first)
  bench [--full] [--only LIST] [--heap-profile] [--baseline BIN]
                                 benchmarks against the real LAPI and routeros-sim: one table,
                                 target/bench/results.json (docs/benchmarks.md); --only 4,5 runs
                                 some scenarios; --heap-profile reports scenario 5's heap per
                                 structure (counting allocator); --baseline runs an older tikban
                                 build beside scenario 5 as its time limit; scenario 5 measures
                                 the static x86_64 musl build, so it needs dist's tools";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        bail!("no command\n{USAGE}");
    };
    match command.as_str() {
        "dist" => {
            let (install, targets, rerun) = tool_task("dist", rest, targets::DEFAULT)?;
            if install {
                dist::install_tools(&targets, &rerun)
            } else {
                dist::run(&targets, &rerun)
            }
        }
        "registry-check" => {
            let (install, targets, rerun) = tool_task("registry-check", rest, targets::DEFAULT)?;
            if install {
                registry::install_tools(&targets, &rerun)
            } else {
                registry::run(&targets, &rerun)
            }
        }
        "validate-image" => {
            if rest.is_empty() {
                bail!("validate-image needs at least one tar\n{USAGE}");
            }
            rest.iter()
                .try_for_each(|tar| validate::image(tar.as_ref()))
        }
        "smoke" => {
            let targets = parse_targets(rest, &["aarch64-unknown-linux-musl"])?;
            targets.iter().try_for_each(|t| smoke::run(t))
        }
        "demo" => demo::run(rest),
        "soak" => soak::run(rest),
        "bench" => bench::run(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

/// `[--all] [--target T]… [--install-tools]` of a task that checks its tools first → whether to
/// install them, the targets, and the command line that installs them.
fn tool_task(
    task: &str,
    args: &[String],
    default: &[&str],
) -> Result<(bool, Vec<&'static targets::Target>, String)> {
    let install = args.iter().any(|a| a == "--install-tools");
    let args: Vec<String> = args
        .iter()
        .filter(|a| *a != "--install-tools")
        .cloned()
        .collect();
    let targets = parse_targets(&args, default)?;
    let rerun = ["cargo", "xtask", task]
        .into_iter()
        .chain(args.iter().map(String::as_str))
        .chain(["--install-tools"])
        .collect::<Vec<_>>()
        .join(" ");
    Ok((install, targets, rerun))
}

/// `[--all] [--target T]…` → targets, in [`targets::ALL`] order.
fn parse_targets(args: &[String], default: &[&str]) -> Result<Vec<&'static targets::Target>> {
    let mut names: Vec<String> = Vec::new();
    let mut all = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--all" => all = true,
            "--target" => names.push(it.next().context("--target needs a value")?.clone()),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if all {
        return Ok(targets::ALL.iter().collect());
    }
    if names.is_empty() {
        names = default.iter().map(|s| (*s).to_owned()).collect();
    }
    let mut chosen = Vec::new();
    for name in &names {
        let t = targets::find(name).with_context(|| {
            let known: Vec<_> = targets::ALL.iter().map(|t| t.triple).collect();
            format!("unknown target {name:?}; known: {known:?}")
        })?;
        chosen.push(t);
    }
    chosen.sort_by_key(|t| targets::ALL.iter().position(|a| a == *t));
    chosen.dedup();
    Ok(chosen)
}
