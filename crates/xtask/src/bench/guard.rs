//! Scenario 7: `tikban guard replay` over a generated 1,000,000-line RouterOS log, through the
//! release binary: lines per second, CPU seconds and peak RSS (VmHWM). Target: at least 500,000
//! lines per second.
//!
//! The log mixes every shape replay reads, the way a router's remote syslog and its console
//! dumps look, over one simulated day (2026-10-02, about 86 ms per line):
//!
//! | share | lines |
//! |---|---|
//! | 35 % | rsyslog BSD `login failure` from 50,000 background sources, hostile user names among them |
//! | 5 % | 40 attackers in turn, each for 20,000 lines (a failure every 1.7 s or so) |
//! | 10 % | logins and logouts |
//! | 30 % | ISO 8601 firewall drops from 100,000 sources to random ports (port scan on) |
//! | 8 % | other system lines (not events) |
//! | 6 % | CEF login failures with `src=` |
//! | 6 % | console `/log print` lines with dates |
//!
//! The CPU time is read from `/proc/<pid>/stat` once the process is a zombie (its final
//! utime + stime), and VmHWM is sampled every 2 ms while it runs, so neither needs a libc call.

use std::fmt::Write as _;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Bench, Row};
use crate::procs;

/// Lines in the generated log.
pub const LINES: usize = 1_000_000;
/// The target throughput.
const TARGET_LINES_PER_S: f64 = 500_000.0;

/// What one replay cost.
#[derive(Debug, Clone)]
pub struct Figures {
    pub lines: usize,
    pub bytes: u64,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub peak_rss: u64,
    pub bans: usize,
}

/// Scenario 7: generates the log in the bench's work directory, replays it, pushes the rows.
pub fn replay(b: &mut Bench) -> Result<()> {
    let s7 = "7 guard replay 1M lines";
    eprintln!("=== bench: {s7}");
    let log = b.work.path().join("guard-bench.log");
    let bytes = generate(&log, LINES)?;
    let f = measure(&b.tikban, &log, bytes)?;
    std::fs::remove_file(&log).ok();
    let rate = f.lines as f64 / f.wall_s;
    b.push(
        Row::new(
            s7,
            "wall time (1M lines, 2 s = 500k lines/s)",
            f.wall_s,
            "s",
        )
        .limit(f.lines as f64 / TARGET_LINES_PER_S),
    );
    b.push(Row::new(s7, "lines per second", rate, "lines/s"));
    b.push(Row::new(s7, "CPU (user + system)", f.cpu_s, "s"));
    b.push(Row::new(
        s7,
        "peak RSS (VmHWM)",
        f.peak_rss as f64 / (1024.0 * 1024.0),
        "MiB",
    ));
    b.push(Row::new(s7, "log size", f.bytes as f64 / 1e6, "MB"));
    b.push(Row::new(s7, "bans printed", f.bans as f64, "bans"));
    Ok(())
}

/// Runs `tikban guard replay --year 2026 --portscan-enabled true FILE` and measures it.
pub fn measure(tikban: &Path, log: &Path, bytes: u64) -> Result<Figures> {
    let started = Instant::now();
    let mut child = Command::new(tikban)
        .args([
            "guard",
            "replay",
            "--year",
            "2026",
            "--portscan-enabled",
            "true",
        ])
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", tikban.display()))?;
    let pid = child.id();
    let mut stdout = child.stdout.take().context("replay stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let mut peak_rss = 0;
    let deadline = started + Duration::from_secs(600);
    let (wall_s, cpu_s) = loop {
        if is_zombie(pid)? {
            // Exited, not yet reaped: /proc still holds its final CPU times.
            let wall = started.elapsed().as_secs_f64();
            break (wall, procs::cpu_secs(pid)?);
        }
        if let Ok(hwm) = procs::vm_hwm(pid) {
            peak_rss = peak_rss.max(hwm);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("guard replay did not finish within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let status = child.wait()?;
    let out = reader
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))??;
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            e.read_to_string(&mut err).ok();
        }
        bail!("guard replay exited with {status}: {err}");
    }
    let lines = summary_lines(&out).context("no summary line in the replay output")?;
    if lines != LINES as u64 {
        bail!("guard replay read {lines} lines, expected {LINES}");
    }
    Ok(Figures {
        lines: LINES,
        bytes,
        wall_s,
        cpu_s,
        peak_rss,
        bans: out.lines().filter(|l| l.contains(" ban ")).count(),
    })
}

/// `N` of the summary's `replay: N lines, …`.
fn summary_lines(out: &str) -> Option<u64> {
    out.lines()
        .find_map(|l| l.strip_prefix("replay: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
}

/// True once `/proc/<pid>/stat` says `Z`.
fn is_zombie(pid: u32) -> Result<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad /proc stat")?.1;
    Ok(after.trim_start().starts_with('Z'))
}

/// A small deterministic PRNG (xorshift64*), so every run replays the same log.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const USERS: [&str; 8] = [
    "admin",
    "root",
    "support",
    "user",
    "x from 6.6.6.6 via ssh",
    "",
    "guest app=ssh duser=guest outcome=failure src=6.6.6.6",
    "user with space",
];
const SERVICES: [&str; 6] = ["ssh", "winbox", "web", "api", "api-ssl", "ftp"];
const MONTH: &str = "Oct";

/// Writes `lines` lines to `path`; returns its size in bytes.
pub fn generate(path: &Path, lines: usize) -> Result<u64> {
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut rng = Rng(0x6775_6172_645f_6265);
    let mut line = String::with_capacity(512);
    let mut bytes = 0u64;
    for i in 0..lines {
        // Seconds and milliseconds into 2026-10-02, about 86.4 ms per line.
        let ms = i as u64 * 86_400_000 / lines as u64;
        let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        let bsd = format!("{MONTH}  2 {h:02}:{m:02}:{s:02}");
        line.clear();
        let roll = rng.below(100);
        match roll {
            0..35 => {
                let n = rng.below(50_000);
                let user = USERS[rng.below(USERS.len() as u64) as usize];
                let svc = SERVICES[rng.below(SERVICES.len() as u64) as usize];
                write!(
                    line,
                    "{bsd} gw.local system,error,critical login failure for user {user} from \
                     10.{}.{}.{} via {svc}",
                    n >> 16,
                    (n >> 8) & 0xff,
                    n & 0xff
                )?;
            }
            35..40 => {
                // One attacker at a time for 20,000 lines (about 29 minutes): a failure every
                // 1.7 s or so, a ban after a few; 40 attackers in turn.
                let a = (i / 20_000) % 40;
                write!(
                    line,
                    "{bsd} gw.local system,error,critical login failure for user admin from \
                     203.0.113.{a} via ssh"
                )?;
            }
            40..50 => {
                let n = rng.below(200);
                let verb = if roll < 45 { "in" } else { "out" };
                write!(
                    line,
                    "{bsd} gw.local system,info,account user admin logged {verb} from \
                     192.168.88.{n} via winbox"
                )?;
            }
            50..80 => {
                let n = rng.below(100_000) as u32;
                let src = std::net::Ipv4Addr::from(0x6400_0000 + n);
                let port = rng.below(65_535) + 1;
                write!(
                    line,
                    "2026-10-02T{h:02}:{m:02}:{s:02}.{milli:03}000+00:00 gw firewall,info drop-in \
                     input: in:ether1-WAN out:(unknown 0), connection-state:new src-mac \
                     00:17:10:88:bc:02, proto TCP (SYN), {src}:{}->81.82.202.145:{port}, len 40",
                    40_000 + rng.below(20_000)
                )?;
            }
            80..88 => {
                write!(line, "{bsd} gw.local system,info log rule changed by admin")?;
            }
            88..94 => {
                let n = rng.below(50_000);
                write!(
                    line,
                    "{bsd} MikroTik CEF:0|MikroTik|RB5009|7.24|10|system,error,critical|High|\
                     dvchost=MikroTik dvc=192.168.88.1 msg=login failure for user admin from \
                     10.{0}.{1}.{2} via ssh app=ssh duser=admin outcome=failure src=10.{0}.{1}.{2}",
                    n >> 16,
                    (n >> 8) & 0xff,
                    n & 0xff
                )?;
            }
            _ => {
                let n = rng.below(50_000);
                write!(
                    line,
                    "2026-10-02 {h:02}:{m:02}:{s:02} system,error,critical login failure for \
                     user root from 10.{}.{}.{} via winbox",
                    n >> 16,
                    (n >> 8) & 0xff,
                    n & 0xff
                )?;
            }
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
    }
    out.flush()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_log_is_what_replay_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.log");
        let bytes = generate(&path, 2000).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len() as u64, bytes);
        assert_eq!(text.lines().count(), 2000);
        // Every line goes through replay's line reader and, but for the "other" lines, parses.
        let mut out = Vec::new();
        let s = tikban::guard::replay::run(
            text.as_bytes(),
            &mut out,
            tikban::guard::Settings::default(),
            2026,
            [1, 2],
        )
        .unwrap();
        let other_share = s.other as f64 / 2000.0;
        assert!((0.05..0.12).contains(&other_share), "{s:?}");
        assert_eq!((s.too_long, s.untimed), (0, 0));
        let out = String::from_utf8(out).unwrap();
        assert_eq!(summary_lines(&out), Some(2000));
    }

    #[test]
    fn summary_line_count_is_read_back() {
        assert_eq!(
            summary_lines("x ban y\nreplay: 12 lines, 3 events\nreplay: 1 ban"),
            Some(12)
        );
        assert_eq!(summary_lines("nothing"), None);
    }
}
