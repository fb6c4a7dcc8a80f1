//! End-to-end harness: the real CrowdSec LAPI (Debian 1.4.6), `routeros-sim` in-process, and the
//! `tikban` binary configured only through env vars, as on a router.
#![allow(dead_code)]

pub mod fault_proxy;

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `tikban` process; its stdout and stderr are collected.
pub struct Tikban {
    child: Child,
    output: Arc<Mutex<String>>,
    pub metrics_port: u16,
}

impl Tikban {
    /// Starts the binary with exactly `env` (plus PATH), nothing inherited.
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

    /// The env a router owner would set, pointed at this world.
    pub fn env(&self, metrics_port: u16) -> Vec<(String, String)> {
        self.env_for(&self.lapi.url(), self.server.addr(), metrics_port)
    }

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
        let port = free_port();
        Tikban::spawn(&self.env(port), port)
    }

    pub fn tikban_with(&self, extra: &[(&str, &str)]) -> Tikban {
        let port = free_port();
        let mut env = self.env(port);
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push(((*k).to_owned(), (*v).to_owned()));
        }
        Tikban::spawn(&env, port)
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
