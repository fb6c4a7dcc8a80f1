//! `routeros-sim`: the emulator as a process, for tools that are not Rust (librouteros, the demo).
//!
//! ```text
//! routeros-sim --listen 127.0.0.1:PORT --user NAME --password PASS [--version 7.20.1]
//!              [--tls] [--tls-cert-out FILE] [--per-write-ms MS] [--latency-ms MS]
//!              [--identity NAME] [--arch NAME] [--max-sessions N] [--control-stdin]
//! ```
//!
//! Prints `tls sha256 fingerprint HEX` (with `--tls`) and then `listening on ADDR` when ready;
//! exits 0 on SIGTERM or SIGINT. Bad flags exit 64 (`EX_USAGE`).
//!
//! With `--control-stdin` it reads control lines from stdin (the grammar of
//! `routeros_sim::control`, e.g. `log system,error,critical login failure for user admin from
//! 192.0.2.7 via ssh`) and answers each on stdout with `ok <result>` or `error <reason>`. The end
//! of stdin ends only the control loop.

use std::process::ExitCode;
use std::time::Duration;

use routeros_sim::control::MAX_CONTROL_LINE;
use routeros_sim::{Sim, SimConfig, TlsIdentity, User};
use tokio::net::TcpListener;

const USAGE: &str = "usage: routeros-sim --listen ADDR [--user NAME] [--password PASS] \
[--version V] [--tls] [--tls-cert-out FILE] [--per-write-ms MS] [--latency-ms MS] \
[--identity NAME] [--arch NAME] [--max-sessions N] [--control-stdin]";

/// Flags as typed.
struct Args {
    listen: String,
    config: SimConfig,
    tls: bool,
    cert_out: Option<String>,
    control_stdin: bool,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config = SimConfig::default();
    let (mut listen, mut user, mut password) = (None, "admin".to_owned(), String::new());
    let (mut tls, mut cert_out, mut control_stdin) = (false, None, false);
    // Fractions are allowed (`--latency-ms 0.3`): a real router's API latency is sub-millisecond.
    let ms = |v: String, flag: &str| -> Result<Duration, String> {
        v.parse::<f64>()
            .ok()
            .filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms < 1e9)
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            .ok_or_else(|| format!("{flag}: expected milliseconds, got {v:?}"))
    };
    while let Some(flag) = it.next() {
        if flag == "--tls" {
            tls = true;
            continue;
        }
        if flag == "--control-stdin" {
            control_stdin = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--user" => user = value,
            "--password" => password = value,
            "--version" => config.version = value,
            "--identity" => config.identity = value,
            "--arch" => config.architecture = value,
            "--tls-cert-out" => cert_out = Some(value),
            "--per-write-ms" => config.cost.per_write = ms(value, &flag)?,
            "--latency-ms" => config.cost.latency = ms(value, &flag)?,
            "--max-sessions" => {
                config.max_sessions = value
                    .parse()
                    .map_err(|_| format!("--max-sessions: expected a number, got {value:?}"))?;
            }
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    let listen = listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?;
    config.users = vec![User::new(&user, &password)];
    Ok(Args {
        listen,
        config,
        tls,
        cert_out,
        control_stdin,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(64);
        }
    };
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("routeros-sim: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    let sim = Sim::new(args.config);
    let identity = if args.tls {
        let id = TlsIdentity::generate()?;
        if let Some(path) = &args.cert_out {
            std::fs::write(path, &id.cert_pem)?;
        }
        println!(
            "tls sha256 fingerprint {}",
            hex::encode(id.fingerprint_sha256()?)
        );
        Some(id)
    } else {
        None
    };
    // Register the signal handlers before announcing readiness: a signal sent right after
    // `listening on` must reach them, not the default action (which kills the process).
    let shutdown = shutdown_signal()?;
    println!("listening on {addr}");
    use std::io::Write;
    std::io::stdout().flush()?;
    // After the readiness line, so `listening on` is always the last line before any `ok`.
    if args.control_stdin {
        let sim = sim.clone();
        std::thread::spawn(move || control_loop(sim));
    }
    match identity {
        Some(id) => sim.run_tls(listener, &id, shutdown).await,
        None => sim.run(listener, shutdown).await,
    }
}

/// Applies control lines from stdin until it ends, on a plain thread (stdin is blocking).
/// Lines longer than [`MAX_CONTROL_LINE`] are refused whole, never buffered past the bound.
fn control_loop(sim: Sim) {
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    loop {
        let chunk = match stdin.fill_buf() {
            Ok([]) | Err(_) => return,
            Ok(chunk) => chunk,
        };
        let (part, end) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if overlong || line.len() + part.len() > MAX_CONTROL_LINE {
            overlong = true;
            line.clear();
        } else {
            line.extend_from_slice(part);
        }
        let used = end.unwrap_or(chunk.len());
        stdin.consume(used);
        if end.is_none() {
            continue;
        }
        let reply = if overlong {
            "error line too long".to_owned()
        } else {
            match sim.apply_control(&String::from_utf8_lossy(&line)) {
                Ok(out) => format!("ok {out}"),
                Err(err) => format!("error {err}"),
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{reply}");
        let _ = out.flush();
        line.clear();
        overlong = false;
    }
}

/// Completes on SIGTERM or SIGINT (docs/reference/style.md #8). The handlers are registered when this returns,
/// not when the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Completes on Ctrl-C (docs/reference/style.md #8).
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
