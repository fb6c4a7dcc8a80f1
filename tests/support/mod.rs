//! End-to-end harness: the real CrowdSec LAPI (Debian 1.4.6), `routeros-sim` in-process, and the
//! `tikban` binary configured only through env vars, as on a router.
#![allow(dead_code)]

pub mod fault_proxy;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crowdsec_lapi::testing::Lapi;
use routeros_sim::{Direction, Family, RunningSim, Sim, SimConfig};

pub const USER: &str = "tikban";
pub const PASSWORD: &str = "r0uter-s3cret-pw";
pub const V4: &str = "crowdsec-banned";
pub const V6: &str = "crowdsec6-banned";

/// Path of a workspace binary (`tikban`, `routeros-sim`), built once per test process.
///
/// This package's tests span crates, so cargo does not hand them `CARGO_BIN_EXE_*` of another
/// package. They build the binaries with the same cargo, profile and target directory instead
/// (a no-op when up to date) and find them next to the test executable.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "tikban",
            "-p",
            "routeros-sim",
            "--bins",
        ]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("run cargo to build the tikban and routeros-sim binaries");
        assert!(status.success(), "cargo build of the binaries failed");
    });
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The `tikban` binary.
pub fn tikban_bin() -> std::path::PathBuf {
    workspace_bin("tikban")
}

/// A port that was free a moment ago. Racy: another process may take it before the child binds
/// it. Tikban does not need it ([`Tikban::start`] lets it bind port 0 and reads the port from
/// its log); it stays for callers that still choose the port themselves.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// How long tikban may take to log its metrics address after it starts.
const STARTUP: Duration = Duration::from_secs(30);

/// Waits until `check` holds, polling every 50 ms; fails with `what` (and `context()`, e.g. the
/// tikban log) after `within`. The one way these tests wait: for a positive signal, with a
/// deadline.
pub fn wait_for(
    what: &str,
    within: Duration,
    mut context: impl FnMut() -> String,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of one series (`name{labels}` exactly as exposed) in a Prometheus text exposition;
/// 0 when absent (a counter that never moved).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `tikban_lapi_polls_total{result="error"}`: failed LAPI polls, the proof that time passed with
/// LAPI unreachable.
pub const POLLS_ERROR: &str = "tikban_lapi_polls_total{result=\"error\"}";
/// `tikban_router_connects_total`: the daemon's router logins (guard's log follower and the
/// start-up checklist log in on sessions of their own, which the sim counts too).
pub const CONNECTS: &str = "tikban_router_connects_total";
/// `tikban_lapi_polls_total{result="ok"}`.
pub const POLLS_OK: &str = "tikban_lapi_polls_total{result=\"ok\"}";

/// The last 6000 bytes of a log, for failure messages.
pub fn tail(out: &str) -> String {
    let mut start = out.len().saturating_sub(6000);
    while !out.is_char_boundary(start) {
        start += 1;
    }
    out[start..].to_owned()
}

/// A running `tikban` process; its stdout and stderr are collected.
pub struct Tikban {
    child: Child,
    output: Arc<Mutex<String>>,
    pub metrics_port: u16,
}

impl Tikban {
    /// Starts the binary with exactly `env` (plus PATH), nothing inherited, with `METRICS_PORT=0`:
    /// tikban binds a free port itself and logs it (`serving /metrics and /health
    /// addr=127.0.0.1:PORT`), and this waits for that line. No port race: nothing else can take
    /// the port between choosing and binding it.
    pub fn start(env: &[(String, String)]) -> Tikban {
        Self::start_with(Command::new(tikban_bin()), env)
    }

    /// [`Tikban::start`] for `cmd` (the binary, or a wrapper such as strace).
    pub fn start_with(cmd: Command, env: &[(String, String)]) -> Tikban {
        let env = with_env(env.to_vec(), &[("METRICS_PORT", "0")]);
        let mut t = Self::spawn_with(cmd, &env, 0);
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(port) = bound_metrics_port(&t.output()) {
                t.metrics_port = port;
                return t;
            }
            assert!(
                t.is_running(),
                "tikban exited before serving /metrics (it logs the bound port at info level):\n{}",
                t.output()
            );
            assert!(
                Instant::now() < deadline,
                "tikban did not log its metrics address within {STARTUP:?} (LOG_LEVEL must be \
                 info or lower):\n{}",
                t.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the binary with exactly `env` (plus PATH) on a metrics port the caller chose. Racy
    /// with [`free_port`]; prefer [`Tikban::start`].
    pub fn spawn(env: &[(String, String)], metrics_port: u16) -> Tikban {
        Self::spawn_with(Command::new(tikban_bin()), env, metrics_port)
    }

    /// Starts `cmd` (the binary, or a wrapper such as strace) with `env`.
    pub fn spawn_with(mut cmd: Command, env: &[(String, String)], metrics_port: u16) -> Tikban {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn tikban");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Tikban {
            child,
            output,
            metrics_port,
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id (of the wrapper, when started through one).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One series of `/metrics` (0 when absent).
    pub fn metric(&self, series: &str) -> f64 {
        metric(&self.get("/metrics").1, series)
    }

    /// `/health`: the status code and the parsed body (`null` when it does not parse).
    pub fn health(&self) -> (u16, serde_json::Value) {
        let (code, body) = self.get("/health");
        (
            code,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Waits until `check` holds; tikban must keep running meanwhile.
    pub fn wait(&mut self, what: &str, within: Duration, mut check: impl FnMut(&Tikban) -> bool) {
        let deadline = Instant::now() + within;
        while !check(self) {
            assert!(self.is_running(), "tikban exited:\n{}", self.output());
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}\n{}",
                tail(&self.output())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the series reaches `at_least`; returns its value then.
    pub fn wait_metric(&mut self, series: &str, at_least: f64, within: Duration) -> f64 {
        let mut last = 0.0;
        self.wait(&format!("{series} >= {at_least}"), within, |t| {
            last = t.metric(series);
            last >= at_least
        });
        last
    }

    /// Waits until the log contains `needle`.
    pub fn wait_output(&mut self, needle: &str, within: Duration) {
        self.wait(&format!("{needle:?} in the log"), within, |t| {
            t.output().contains(needle)
        });
    }

    /// SIGTERM, then the exit status (within 10 s).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal_pid(self.child.id())
    }

    /// SIGTERM to the process the wrapper (strace) started, then the wrapper's exit status.
    pub fn terminate_traced(&mut self) -> ExitStatus {
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.child.id()))
                .unwrap_or_default();
        let pid = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the traced tikban process");
        self.signal_pid(pid)
    }

    fn signal_pid(&mut self, pid: u32) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tikban ignored SIGTERM:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET a metrics-server path: (status code, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_port, path)
    }

    /// Waits until `/health` answers 200.
    pub fn wait_healthy(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.get("/health").0 == 200 {
                return;
            }
            assert!(self.is_running(), "tikban exited:\n{}", self.output());
            assert!(
                Instant::now() < deadline,
                "tikban not healthy within {within:?}: {:?}\n{}",
                self.get("/health"),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tikban {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `env` with each `(name, value)` of `extra` set, replacing an earlier value.
pub fn with_env(mut env: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The three pieces, wired together.
pub struct World {
    pub lapi: Lapi,
    pub key: String,
    pub sim: Sim,
    pub server: RunningSim,
    pub rt: tokio::runtime::Runtime,
}

impl World {
    pub fn start() -> World {
        Self::start_with(
            SimConfig::default()
                .with_user(USER, PASSWORD)
                .with_transcript(),
        )
    }

    pub fn start_with(config: SimConfig) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sim = Sim::new(config);
        let server = rt.block_on(sim.serve("127.0.0.1:0")).unwrap();
        let lapi = Lapi::start();
        let key = lapi.add_bouncer("tikban");
        World {
            lapi,
            key,
            sim,
            server,
            rt,
        }
    }

    /// The env a router owner would set, pointed at this world (metrics on port 0: see
    /// [`Tikban::start`]).
    pub fn env(&self) -> Vec<(String, String)> {
        self.env_for(&self.lapi.url(), self.server.addr(), 0)
    }

    /// The env for a LAPI and router address of the caller's choice (proxies). A
    /// `metrics_port` of 0 lets tikban pick one ([`Tikban::start`]).
    pub fn env_for(
        &self,
        lapi_url: &str,
        router: SocketAddr,
        metrics_port: u16,
    ) -> Vec<(String, String)> {
        [
            ("CROWDSEC_URL", lapi_url.to_owned()),
            ("CROWDSEC_BOUNCER_API_KEY", self.key.clone()),
            ("CROWDSEC_UPDATE_FREQUENCY", "1s".into()),
            ("MIKROTIK_HOST", router.to_string()),
            ("MIKROTIK_USER", USER.into()),
            ("MIKROTIK_PASS", PASSWORD.into()),
            ("MIKROTIK_CMD_TIMEOUT", "5s".into()),
            ("METRICS_ADDR", "127.0.0.1".into()),
            ("METRICS_PORT", metrics_port.to_string()),
            ("LOG_LEVEL", "debug".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub fn tikban(&self) -> Tikban {
        Tikban::start(&self.env())
    }

    pub fn tikban_with(&self, extra: &[(&str, &str)]) -> Tikban {
        Tikban::start(&with_env(self.env(), extra))
    }

    /// Addresses on a list, sorted.
    pub fn addresses(&self, family: Family, list: &str) -> Vec<String> {
        let mut a: Vec<String> = self
            .sim
            .address_list(family, list)
            .into_iter()
            .map(|e| e.address)
            .collect();
        a.sort();
        a
    }

    /// Waits until `check` holds (polling every 100 ms).
    pub fn wait_until(&self, what: &str, within: Duration, mut check: impl FnMut(&World) -> bool) {
        let deadline = Instant::now() + within;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; v4 = {:?}, v6 = {:?}",
                self.addresses(Family::V4, V4),
                self.addresses(Family::V6, V6)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `add` commands the sim received per address (a `/32` or `/128` suffix dropped), since the
    /// transcript was last cleared. The sim executes every command its transcript shows as
    /// received (the drop fault stops reading at the sentence it applies), so this counts the adds
    /// the router ran, answered or not.
    pub fn adds_per_address(&self) -> BTreeMap<String, usize> {
        let mut adds = BTreeMap::new();
        for t in self.sim.transcript() {
            if t.direction != Direction::In
                || !t.words.first().is_some_and(|w| w.ends_with(b"/add"))
            {
                continue;
            }
            let address = t.words.iter().find_map(|w| w.strip_prefix(b"=address="));
            if let Some(a) = address {
                let a = String::from_utf8_lossy(a);
                // A host's full prefix (`/32` for IPv4, `/128` for IPv6) is dropped; an IPv6
                // network's `/32` is kept.
                let host = if a.contains(':') { "/128" } else { "/32" };
                let a = a.strip_suffix(host).unwrap_or(&a).to_owned();
                *adds.entry(a).or_insert(0) += 1;
            }
        }
        adds
    }

    /// The newest connection number in the sim's transcript (0 before any).
    pub fn last_connection(&self) -> u64 {
        self.sim
            .transcript()
            .iter()
            .map(|e| e.conn)
            .max()
            .unwrap_or(0)
    }

    /// Waits until a connection newer than `after` has printed both lists and then, on the same
    /// connection, read `/system/resource`. The supervisor reconciles a stale view (a new
    /// connection's) before anything else, both prints and then the write phase, and only then
    /// does the housekeeping read: that read proves the whole reconcile, writes included, is over.
    /// (The start-up checklist reads the version before the lists, so its session does not
    /// match.)
    pub fn wait_for_reconcile_after(&self, after: u64, within: Duration) {
        self.wait_until("a reconcile on a new connection", within, |w| {
            let mut prints: BTreeMap<u64, usize> = BTreeMap::new();
            w.sim.transcript().iter().any(|e| {
                if e.conn <= after || e.direction != Direction::In {
                    return false;
                }
                let path = e.words.first().map(Vec::as_slice).unwrap_or_default();
                let printed = prints.entry(e.conn).or_default();
                if path.ends_with(b"address-list/print") {
                    *printed += 1;
                }
                path == b"/system/resource/print" && *printed >= 2
            })
        });
    }

    /// Successful logins the sim has seen (its counter; no transcript needed).
    pub fn logins(&self) -> u64 {
        self.sim.stats().logins
    }

    /// Write commands (`add`, `set`, `remove`) received by the sim since the transcript was
    /// last cleared.
    pub fn writes(&self) -> Vec<String> {
        self.sim
            .transcript()
            .into_iter()
            .filter(|t| t.direction == Direction::In)
            .filter_map(|t| {
                t.words
                    .first()
                    .map(|w| String::from_utf8_lossy(w).into_owned())
            })
            .filter(|p| p.ends_with("/add") || p.ends_with("/set") || p.ends_with("/remove"))
            .collect()
    }
}

/// A TCP proxy that can be cut and restored: the LAPI-outage fault.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub fn start(rt: &tokio::runtime::Runtime, target: SocketAddr) -> Proxy {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (u, c) = (up.clone(), conns.clone());
        let task = rt.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused-like reset
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(h.abort_handle());
            }
        });
        Proxy {
            addr,
            up,
            _task: task,
            conns,
        }
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// The port of `serving /metrics and /health addr=127.0.0.1:PORT` (text or JSON log format).
fn bound_metrics_port(log: &str) -> Option<u16> {
    let line = log
        .lines()
        .find(|l| l.contains("serving /metrics and /health"))?;
    let rest = match line.split_once("addr=") {
        Some((_, rest)) => rest,
        None => line.split_once("\"addr\":\"")?.1,
    };
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    addr.parse::<SocketAddr>().ok().map(|a| a.port())
}

/// The `retry_in` of every "router connection lost" line of a tikban log, in order: the
/// reconnect delays it announced.
pub fn retry_delays(log: &str) -> Vec<Duration> {
    log.lines()
        .filter(|l| l.contains("router connection lost"))
        .filter_map(|l| l.split_once("retry_in=").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(parse_debug_duration)
        .collect()
}

/// A `Duration` as `{:?}` prints it: `1.5s`, `862.1ms`, `12µs`, `7ns`.
pub fn parse_debug_duration(text: &str) -> Option<Duration> {
    for (unit, scale) in [("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)] {
        if let Some(number) = text.strip_suffix(unit) {
            return number
                .parse::<f64>()
                .ok()
                .map(|n| Duration::from_secs_f64(n * scale));
        }
    }
    None
}
