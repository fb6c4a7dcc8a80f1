//! `cargo xtask smoke`: one real end-to-end run of a dist binary under qemu-user.
//!
//! A real CrowdSec LAPI (Debian 1.4.6, through `crowdsec_lapi::testing`), `routeros-sim` built
//! for the host, and `dist/tikban-<version>-<arch>` under `qemu-*-static`, configured only by
//! environment variables as on the router. `cscli decisions add --ip 192.0.2.7` must show up in
//! the sim's `crowdsec-banned` list within [`DEADLINE`]. The sim is read with a few lines of
//! blocking client over `routeros_proto`, not with tikban's own client, so the check does not
//! trust the code under test.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crowdsec_lapi::testing::Lapi;
use routeros_proto::{Command as ApiCommand, Query};

use crate::ros;
use crate::targets::Target;
use crate::util;

/// How long the ban may take to reach the router.
pub const DEADLINE: Duration = Duration::from_secs(60);
const BANNED: &str = "192.0.2.7";
const LIST: &str = "crowdsec-banned";
const USER: &str = "tikban";
const PASSWORD: &str = "smoke-test-password";

/// Kills the child when dropped, so no process outlives a failed smoke.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let (sim, sim_addr) = start_sim(&sim_bin)?;

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
            tail(&log_path),
            lapi.log_tail()
        ),
    }
}

/// Starts `routeros-sim` on a free port and waits for its `listening on ADDR` line.
fn start_sim(sim_bin: &Path) -> Result<(Reaper, SocketAddr)> {
    let mut child = Command::new(sim_bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--user",
            USER,
            "--password",
            PASSWORD,
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", sim_bin.display()))?;
    let stdout = child.stdout.take().context("routeros-sim stdout")?;
    let sim = Reaper(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("read routeros-sim output")?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("routeros-sim printed {line:?}, expected `listening on ADDR`"))?
        .parse()
        .context("routeros-sim address")?;
    Ok((sim, addr))
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

/// The last 4 KiB of a file, for failure reports.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(4096);
    text.get(start..).unwrap_or(&text).to_owned()
}
