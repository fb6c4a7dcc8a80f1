//! `tikban --healthcheck`: asks the running daemon's `/health` and exits 0 on `200`, 1 otherwise.
//!
//! It runs inside the container next to the daemon, for RouterOS `/app` and container
//! healthchecks (the image has no shell and no `wget`, so the probe is tikban itself). It reads
//! only `METRICS_ENABLED`, `METRICS_PORT` and `METRICS_ADDR`, never the rest of the
//! configuration, and says nothing on success (a healthcheck runs every 30 s and its output may
//! land in the router's 1000-line log).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::eval::safe;

/// The whole probe's deadline: connect, request and answer.
pub const DEADLINE: Duration = Duration::from_secs(3);
/// `METRICS_PORT`'s default.
const DEFAULT_PORT: u16 = 2112;
/// Bytes of the answer read at most.
const MAX_ANSWER: usize = 8 * 1024;

/// The `--healthcheck` entry point.
pub fn main() -> ExitCode {
    let var = |name: &str| -> Result<Option<String>, String> {
        match std::env::var_os(name) {
            None => Ok(None),
            Some(v) => v
                .into_string()
                .map(Some)
                .map_err(|_| format!("{name} is not valid UTF-8")),
        }
    };
    let result = (|| {
        let addr = target(
            var("METRICS_ENABLED")?.as_deref(),
            var("METRICS_ADDR")?.as_deref(),
            var("METRICS_PORT")?.as_deref(),
        )?;
        probe(addr, DEADLINE)
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tikban --healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where the daemon's `/health` listens, from the three variables (an empty value counts as
/// unset, as everywhere in tikban's configuration). A wildcard or unset `METRICS_ADDR` is
/// reached on `127.0.0.1` (a `::` socket accepts IPv4 too); a specific address is used as it is.
pub fn target(
    enabled: Option<&str>,
    addr: Option<&str>,
    port: Option<&str>,
) -> Result<SocketAddr, String> {
    fn set(v: Option<&str>) -> Option<&str> {
        v.map(str::trim).filter(|v| !v.is_empty())
    }
    if let Some(e) = set(enabled) {
        match e.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => {}
            "false" | "no" | "0" | "off" => {
                return Err(
                    "METRICS_ENABLED is false, so there is no /health to ask; set \
                     METRICS_ENABLED=true (the default) to use --healthcheck"
                        .into(),
                );
            }
            _ => {
                return Err(format!(
                    "METRICS_ENABLED={} is not a boolean; expected true or false",
                    safe(e, 64)
                ));
            }
        }
    }
    let port = match set(port) {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(0) => {
                return Err(
                    "METRICS_PORT=0 lets the daemon pick a port at start, which a \
                            healthcheck cannot know; set a fixed port"
                        .into(),
                );
            }
            Ok(p) => p,
            Err(_) => {
                return Err(format!(
                    "METRICS_PORT={} is not a port number (1-65535)",
                    safe(p, 64)
                ));
            }
        },
    };
    let ip = match set(addr) {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(a) => match a.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Ok(ip) => ip,
            Err(_) => {
                return Err(format!("METRICS_ADDR={} is not an IP address", safe(a, 64)));
            }
        },
    };
    Ok(SocketAddr::new(ip, port))
}

/// `GET /health` on `addr`; `Ok` on a `200` within `within`.
pub fn probe(addr: SocketAddr, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("http://{addr}/health did not answer within {within:?}"))
    };
    let mut s = TcpStream::connect_timeout(&addr, left()?)
        .map_err(|e| format!("cannot connect to http://{addr}/health (is tikban running?): {e}"))?;
    s.set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!(
            "GET /health HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tikban-healthcheck\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .map_err(|e| format!("cannot send the request to http://{addr}/health: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // Read until the end (Connection: close), the cap, or the deadline.
    while answer.len() < MAX_ANSWER {
        s.set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n.min(MAX_ANSWER - answer.len())]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // The status line may already be in: judge what arrived.
                if status(&answer).is_some() {
                    break;
                }
                return Err(format!(
                    "http://{addr}/health did not answer within {within:?}"
                ));
            }
            Err(e) => return Err(format!("reading the answer of http://{addr}/health: {e}")),
        }
    }
    match status(&answer) {
        Some(200) => Ok(()),
        Some(code) => {
            let text = String::from_utf8_lossy(&answer);
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
            Err(format!(
                "http://{addr}/health answered {code}: {}",
                safe(body, 512)
            ))
        }
        None => Err(format!(
            "http://{addr}/health did not answer with an HTTP status line"
        )),
    }
}

/// The status code of an HTTP/1.x answer, once its status line is complete.
fn status(answer: &[u8]) -> Option<u16> {
    let end = answer.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&answer[..end]).ok()?;
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_comes_from_the_three_variables() {
        let local = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        assert_eq!(target(None, None, None), Ok(local(2112)));
        assert_eq!(target(Some(""), Some(""), Some("")), Ok(local(2112)));
        assert_eq!(
            target(Some("yes"), Some("0.0.0.0"), Some("9100")),
            Ok(local(9100))
        );
        assert_eq!(target(None, Some("::"), None), Ok(local(2112)));
        assert_eq!(
            target(None, Some("172.17.0.2"), Some("2112")),
            Ok("172.17.0.2:2112".parse().unwrap())
        );
        assert_eq!(
            target(None, Some("::1"), Some("2112")),
            Ok("[::1]:2112".parse().unwrap())
        );
    }

    #[test]
    fn disabled_metrics_and_bad_values_fail_with_a_clear_message() {
        let e = target(Some("false"), None, None).unwrap_err();
        assert!(e.contains("METRICS_ENABLED is false"), "{e}");
        let e = target(None, None, Some("0")).unwrap_err();
        assert!(e.contains("fixed port"), "{e}");
        let e = target(None, None, Some("http\n")).unwrap_err();
        assert!(e.contains("METRICS_PORT"), "{e}");
        let e = target(Some("maybe\u{1b}[31m"), None, None).unwrap_err();
        assert!(!e.contains('\u{1b}'), "{e:?}");
        let e = target(None, Some("localhost"), None).unwrap_err();
        assert!(e.contains("METRICS_ADDR"), "{e}");
    }

    #[test]
    fn status_lines_are_parsed_strictly() {
        assert_eq!(status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status(b"HTTP/1.0 503 Service Unavailable\r\nx"), Some(503));
        assert_eq!(status(b"HTTP/1.1 200 OK"), None, "incomplete");
        assert_eq!(status(b"SSH-2.0-x\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 2000 OK\r\n"), None);
    }

    #[test]
    fn a_port_nobody_listens_on_fails_and_a_silent_one_fails_at_the_deadline() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(probe(addr, Duration::from_secs(1)).is_err());

        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let started = Instant::now();
        let e = probe(addr, Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("did not answer"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_200_passes_and_a_503_fails_with_its_escaped_body() {
        for (answer, ok) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"[..], true),
            (
                &b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"router\":\"down\"}\n\x1b[31m"[..],
                false,
            ),
        ] {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let server = std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                s.write_all(answer).unwrap();
            });
            let result = probe(addr, Duration::from_secs(3));
            server.join().unwrap();
            match result {
                Ok(()) => assert!(ok),
                Err(e) => {
                    assert!(!ok, "{e}");
                    assert!(e.contains("answered 503"), "{e}");
                    assert!(e.contains("\"router\":\"down\""), "{e}");
                    assert!(!e.contains('\u{1b}'), "{e:?}");
                }
            }
        }
    }
}
