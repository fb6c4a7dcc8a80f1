//! The processes xtask drives (bench, demo, smoke, soak): `routeros-sim`, `tikban`, and what
//! `/proc` says about them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use routeros_proto::{Command as ApiCommand, Decoder, Limits, Query, Reply, ReplyKind, login};

pub const USER: &str = "tikban";
pub const PASSWORD: &str = "xtask-router-password";
pub const LIST: &str = "crowdsec-banned";

/// Kills the child when dropped.
pub struct Reaper(pub Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sim's cost model, as flags.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub per_write_ms: f64,
    pub latency_ms: f64,
}

/// A running `routeros-sim`.
pub struct Sim {
    _proc: Reaper,
    pub addr: SocketAddr,
}

impl Sim {
    pub fn start(bin: &Path, cost: Option<Cost>) -> Result<Sim> {
        Ok(Sim::spawn(bin, cost, false)?.0)
    }

    /// A sim without cost model that takes control lines on its stdin (`--control-stdin`, the
    /// grammar of `routeros_sim::control`), e.g. to play router log lines.
    pub fn start_controlled(bin: &Path) -> Result<(Sim, SimControl)> {
        let (sim, control) = Sim::spawn(bin, None, true)?;
        Ok((sim, control.context("routeros-sim control pipes")?))
    }

    fn spawn(
        bin: &Path,
        cost: Option<Cost>,
        controlled: bool,
    ) -> Result<(Sim, Option<SimControl>)> {
        let mut cmd = Command::new(bin);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--user",
            USER,
            "--password",
            PASSWORD,
        ]);
        if let Some(c) = cost {
            cmd.args(["--per-write-ms", &c.per_write_ms.to_string()]);
            cmd.args(["--latency-ms", &c.latency_ms.to_string()]);
        }
        if controlled {
            cmd.arg("--control-stdin").stdin(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let stdout = child.stdout.take().context("routeros-sim stdout")?;
        let stdin = child.stdin.take();
        let proc = Reaper(child);
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .context("read routeros-sim output")?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("routeros-sim printed {line:?}"))?
            .parse()
            .context("routeros-sim address")?;
        let control = stdin.map(|stdin| SimControl {
            stdin: BufWriter::with_capacity(64 * 1024, stdin),
            stdout,
        });
        Ok((Sim { _proc: proc, addr }, control))
    }

    /// Number of entries in [`LIST`] (one full print).
    pub fn count(&self) -> Result<usize> {
        let mut c = ApiClient::connect(self.addr)?;
        let print = ApiCommand::builder("/ip/firewall/address-list/print")
            .proplist(&["address"])
            .query(Query::Eq("list".to_owned(), LIST.as_bytes().to_vec()))
            .build()?;
        c.send(&print)?;
        let mut n = 0;
        loop {
            let reply = c.read()?;
            match reply.kind {
                ReplyKind::Re => n += 1,
                ReplyKind::Done => return Ok(n),
                ReplyKind::Empty => {}
                k => bail!("print answered {k:?}"),
            }
        }
    }

    /// Opens `print =follow-only=` on [`LIST`] and reports each address seen for the first time,
    /// with the wall-clock time it was read, until `want` are seen or `within` passes.
    pub fn follow(&self, want: usize, within: Duration) -> Result<mpsc::Receiver<Seen>> {
        let mut c = ApiClient::connect(self.addr)?;
        let print = ApiCommand::builder("/ip/firewall/address-list/print")
            .attr("follow-only", "")
            .query(Query::Eq("list".to_owned(), LIST.as_bytes().to_vec()))
            .build()?;
        c.send(&print)?;
        c.stream
            .set_read_timeout(Some(Duration::from_millis(200)))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let deadline = Instant::now() + within;
            let mut seen = std::collections::HashSet::new();
            while seen.len() < want && Instant::now() < deadline {
                match c.read() {
                    Ok(reply) if reply.kind == ReplyKind::Re => {
                        let at = SystemTime::now();
                        if reply.attributes.get_lossy(".dead").is_some() {
                            continue;
                        }
                        if let Some(a) = reply.attributes.get_lossy("address") {
                            let a = a.into_owned();
                            if seen.insert(a.clone()) && tx.send(Seen { address: a, at }).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => return,
                }
            }
        });
        Ok(rx)
    }

    /// Follows `/log/print =follow-only=` on a session of its own and keeps the highest log
    /// `.id` read so far (0 before the first): how far a log follower can have got, to pace a
    /// writer against the sim's log ring.
    pub fn follow_log(&self) -> Result<std::sync::Arc<std::sync::atomic::AtomicU64>> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let mut c = ApiClient::connect(self.addr)?;
        let print = ApiCommand::builder("/log/print")
            .attr("follow-only", "")
            .proplist(&[".id"])
            .build()?;
        c.send(&print)?;
        let last = std::sync::Arc::new(AtomicU64::new(0));
        let out = last.clone();
        std::thread::spawn(move || {
            while let Ok(reply) = c.read() {
                if std::sync::Arc::strong_count(&last) == 1 {
                    return;
                }
                if let Some(id) = reply
                    .attributes
                    .get_lossy(".id")
                    .and_then(|id| u64::from_str_radix(id.trim_start_matches('*'), 16).ok())
                {
                    last.fetch_max(id, Ordering::SeqCst);
                }
            }
        });
        Ok(out)
    }
}

/// The control pipes of a `routeros-sim --control-stdin` ([`Sim::start_controlled`]).
pub struct SimControl {
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl SimControl {
    /// Sends one control line; what follows its `ok`, or an error with the sim's reason.
    pub fn control(&mut self, line: &str) -> Result<String> {
        self.stdin.write_all(line.as_bytes())?;
        self.stdin.write_all(b"\n")?;
        self.stdin.flush()?;
        self.answer(line)
    }

    /// Sends `lines` (each ending in a newline) in one write, then reads one answer per line:
    /// the sim applies them in order, so this is as fast as its control loop goes. Keep a batch
    /// under the pipe's 64 KiB, or the sim's answers fill theirs while this still writes.
    /// Returns the last line's answer (for `log`, the entry's `.id`).
    pub fn batch(&mut self, lines: &str) -> Result<String> {
        self.stdin.write_all(lines.as_bytes())?;
        self.stdin.flush()?;
        let mut last = String::new();
        for line in lines.lines() {
            last = self.answer(line)?;
        }
        Ok(last)
    }

    fn answer(&mut self, line: &str) -> Result<String> {
        let mut answer = String::new();
        if self.stdout.read_line(&mut answer)? == 0 {
            bail!("routeros-sim closed its control output");
        }
        match answer.trim_end().strip_prefix("ok") {
            Some(rest) => Ok(rest.trim_start().to_owned()),
            None => bail!("routeros-sim refused {line:?}: {}", answer.trim_end()),
        }
    }
}

fn is_timeout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    })
}

/// One entry seen on the router.
pub struct Seen {
    pub address: String,
    pub at: SystemTime,
}

/// A few lines of blocking client over `routeros_proto`, so the bench does not read the router
/// through the code under test.
struct ApiClient {
    stream: TcpStream,
    decoder: Decoder,
}

impl ApiClient {
    fn connect(addr: SocketAddr) -> Result<ApiClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut c = ApiClient {
            stream,
            decoder: Decoder::new(Limits::default()),
        };
        c.send(&login::login_command(USER, PASSWORD.as_bytes())?)?;
        let reply = c.read()?;
        if reply.kind != ReplyKind::Done {
            bail!("login answered {:?}", reply.kind);
        }
        Ok(c)
    }

    fn send(&mut self, command: &ApiCommand) -> Result<()> {
        let mut wire = Vec::new();
        command.encode(&mut wire);
        self.stream.write_all(&wire)?;
        Ok(())
    }

    fn read(&mut self) -> Result<Reply> {
        let mut buf = [0u8; 16384];
        loop {
            if let Some(sentence) = self.decoder.poll_sentence()? {
                return Ok(Reply::parse(&sentence)?);
            }
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                bail!("routeros-sim closed the connection");
            }
            self.decoder.feed(&buf[..n]);
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `tikban`, configured by environment variables, logging to a file.
pub struct Tikban {
    proc: Reaper,
    pub pid: u32,
    pub log: PathBuf,
    pub metrics_port: u16,
    pub started: Instant,
}

impl Tikban {
    pub fn start(
        bin: &Path,
        lapi_url: &str,
        key: &str,
        sim: SocketAddr,
        dir: &Path,
        extra: &[(&str, &str)],
    ) -> Result<Tikban> {
        let metrics_port = free_port()?;
        let log = dir.join(format!("tikban-{metrics_port}.log"));
        let out = File::create(&log).context("create tikban log")?;
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("CROWDSEC_URL", lapi_url)
            .env("CROWDSEC_BOUNCER_API_KEY", key)
            .env("CROWDSEC_LAPI_METRICS_INTERVAL", "0")
            .env("MIKROTIK_HOST", sim.to_string())
            .env("MIKROTIK_USER", USER)
            .env("MIKROTIK_PASS", PASSWORD)
            .env("METRICS_ADDR", "127.0.0.1")
            .env("METRICS_PORT", metrics_port.to_string())
            .env("LOG_LEVEL", "info");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().context("clone log handle")?)
            .stderr(out);
        let started = Instant::now();
        let child = cmd.spawn().context("start tikban")?;
        let pid = child.id();
        Ok(Tikban {
            proc: Reaper(child),
            pid,
            log,
            metrics_port,
            started,
        })
    }

    /// Polls `/health` every 10 ms until 200; returns the time since start. Calls `each` on
    /// every round (to sample `/proc`).
    pub fn wait_healthy(
        &mut self,
        within: Duration,
        mut each: impl FnMut(&Self),
    ) -> Result<Duration> {
        let deadline = Instant::now() + within;
        loop {
            each(self);
            if http_get(self.metrics_port, "/health").is_ok_and(|(code, _)| code == 200) {
                return Ok(self.started.elapsed());
            }
            if let Some(st) = self.proc.0.try_wait()? {
                bail!("tikban exited with {st}:\n{}", tail(&self.log));
            }
            if Instant::now() > deadline {
                bail!("tikban not healthy within {within:?}:\n{}", tail(&self.log));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `tikban_router_commands_total` summed over results, by kind.
    pub fn commands(&self) -> Result<HashMap<String, u64>> {
        let (_, body) = http_get(self.metrics_port, "/metrics")?;
        Ok(parse_commands(&body))
    }

    /// True once the process has exited.
    pub fn exited(&mut self) -> Result<bool> {
        Ok(self.proc.0.try_wait()?.is_some())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops tikban with SIGTERM (a clean shutdown, which logs the memory profile) and waits
    /// up to `within` for it to exit; returns its peak RSS, read right before, and its log.
    pub fn terminate(mut self, within: Duration) -> Result<(u64, String)> {
        let hwm = vm_hwm(self.pid)?;
        // The shell's builtin: no dependence on a `kill` binary.
        crate::util::status(Command::new("sh").args(["-c", &format!("kill -TERM {}", self.pid)]))?;
        let deadline = Instant::now() + within;
        while self.proc.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("tikban did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((hwm, self.log_text()))
    }

    /// Stops tikban and returns its peak RSS, read right before.
    pub fn stop(mut self) -> Result<u64> {
        let hwm = vm_hwm(self.pid)?;
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
        Ok(hwm)
    }
}

/// `kind` → count from `tikban_router_commands_total{kind="add",result="ok"} 3` lines.
pub fn parse_commands(metrics: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("tikban_router_commands_total{kind=\"") else {
            continue;
        };
        let Some((kind, rest)) = rest.split_once('"') else {
            continue;
        };
        let Some(n) = rest.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()) else {
            continue;
        };
        *out.entry(kind.to_owned()).or_default() += n as u64;
    }
    out
}

/// Minimal HTTP/1.1 GET on 127.0.0.1: (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Peak RSS (`VmHWM`) in bytes.
pub fn vm_hwm(pid: u32) -> Result<u64> {
    status_kb(pid, "VmHWM:")
}

/// Current RSS (`VmRSS`) in bytes.
pub fn vm_rss(pid: u32) -> Result<u64> {
    status_kb(pid, "VmRSS:")
}

fn status_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kb * 1024)
}

/// utime + stime in seconds (`/proc/<pid>/stat`, clock ticks of 1/100 s).
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse().ok())
            .context("bad /proc stat field")
    };
    Ok((ticks(14)? + ticks(15)?) as f64 / clk_tck())
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The last 4 KiB of a file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(4096);
    text.get(start..).unwrap_or(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_summed_over_results() {
        let m = "# TYPE tikban_router_commands_total counter\n\
                 tikban_router_commands_total{kind=\"add\",result=\"ok\"} 10\n\
                 tikban_router_commands_total{kind=\"add\",result=\"trap\"} 2\n\
                 tikban_router_commands_total{kind=\"print\",result=\"ok\"} 2\n";
        let c = parse_commands(m);
        assert_eq!(c["add"], 12);
        assert_eq!(c["print"], 2);
    }
}
