//! `cargo xtask smoke`: one real end-to-end run of a dist binary under qemu-user.
//!
//! A real CrowdSec LAPI (Debian 1.4.6, through `crowdsec_lapi::testing`), `routeros-sim` built
//! for the host, and `dist/tikban-<version>-<arch>` under `qemu-*-static`, configured only by
//! environment variables as on the router. `cscli decisions add --ip 192.0.2.7` must show up in
//! the sim's `crowdsec-banned` list within [`DEADLINE`]. The sim is read with a few lines of
//! blocking client over `routeros_proto`, not with tikban's own client, so the check does not
//! trust the code under test.

use std::fs::File;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crowdsec_lapi::testing::Lapi;
use routeros_proto::{Command as ApiCommand, Query};

use crate::procs::{self, PASSWORD, Reaper, USER};
use crate::ros;
use crate::targets::Target;
use crate::util;

/// How long the ban may take to reach the router.
pub const DEADLINE: Duration = Duration::from_secs(60);
const BANNED: &str = "192.0.2.7";
const LIST: &str = "crowdsec-banned";

/// Runs the smoke for `target`; `cargo xtask dist` must have built its binary.
pub fn run(target: &Target) -> Result<()> {
    let meta = util::metadata()?;
    let binary = util::dist_dir().join(format!("tikban-{}-{}", meta.version, target.suffix));
    if !binary.is_file() {
        bail!(
            "{} is missing: run `cargo xtask dist --target {}` first",
            binary.display(),
            target.triple
        );
    }

    eprintln!(
        "=== smoke {}: build routeros-sim for the host",
        target.triple
    );
    util::status(
        util::cargo()
            .args([
                "build",
                "--quiet",
                "-p",
                "routeros-sim",
                "--bin",
                "routeros-sim",
            ])
            .current_dir(util::root()),
    )?;
    let sim_bin = meta.target_dir.join("debug").join("routeros-sim");

    eprintln!("=== smoke: start the CrowdSec LAPI and routeros-sim");
    let lapi = Lapi::start();
    let key = lapi.add_bouncer("tikban-smoke");
    let sim = procs::Sim::start(&sim_bin, None)?;
    let sim_addr = sim.addr;

    let work = tempfile::tempdir().context("temporary directory")?;
    let log_path = work.path().join("tikban.log");
    let log = File::create(&log_path).context("create tikban log")?;
    let mut cmd = match target.qemu {
        Some(q) => {
            let mut c = Command::new(q);
            c.arg(&binary);
            c
        }
        None => Command::new(&binary),
    };
    cmd.env_clear()
        .env("CROWDSEC_URL", lapi.url())
        .env("CROWDSEC_BOUNCER_API_KEY", &key)
        .env("CROWDSEC_UPDATE_FREQUENCY", "1s")
        .env("CROWDSEC_LAPI_METRICS_INTERVAL", "0")
        .env("MIKROTIK_HOST", sim_addr.to_string())
        .env("MIKROTIK_USER", USER)
        .env("MIKROTIK_PASS", PASSWORD)
        .env("FIREWALL_IPV4_ADDRESS_LIST", LIST)
        .env("METRICS_ENABLED", "false")
        .env("LOG_LEVEL", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("clone log handle")?)
        .stderr(log);
    eprintln!("=== smoke: {}", util::describe(&cmd));
    let mut tikban = Reaper(cmd.spawn().context("start tikban")?);

    lapi.add_decision(BANNED, "4h", &[]);
    let started = Instant::now();
    let outcome = loop {
        if let Some(status) = tikban.0.try_wait().context("wait for tikban")? {
            break Err(format!(
                "tikban exited with {status} before the ban arrived"
            ));
        }
        match list_addresses(sim_addr, LIST) {
            Ok(addrs) if addrs.iter().any(|a| a.trim_end_matches("/32") == BANNED) => break Ok(()),
            Ok(_) => {}
            Err(err) => eprintln!("smoke: reading the sim failed: {err:#}"),
        }
        if started.elapsed() > DEADLINE {
            break Err(format!(
                "{BANNED} not in {LIST} after {}s",
                DEADLINE.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(tikban);
    drop(sim);
    match outcome {
        Ok(()) => {
            println!(
                "smoke {}: {BANNED} reached {LIST} on routeros-sim in {:.1}s",
                target.triple,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(why) => bail!(
            "smoke {} failed: {why}\n--- tikban output ---\n{}\n--- LAPI log tail ---\n{}",
            target.triple,
            procs::tail(&log_path),
            lapi.log_tail()
        ),
    }
}

/// Logs in and prints `/ip/firewall/address-list ?list=<list>`; returns the addresses.
fn list_addresses(addr: SocketAddr, list: &str) -> Result<Vec<String>> {
    let mut session = ros::Session::login(addr, USER, PASSWORD)?;
    let print = ApiCommand::builder("/ip/firewall/address-list/print")
        .query(Query::Eq("list".to_owned(), list.as_bytes().to_vec()))
        .build()?;
    Ok(session
        .run(&print)?
        .iter()
        .filter_map(|row| row.get_lossy("address").map(|a| a.into_owned()))
        .collect())
}
