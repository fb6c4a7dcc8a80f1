//! An HTTP-aware fault proxy in front of the real LAPI.
//!
//! Every accepted connection carries exactly one request: the proxy reads it, forwards it to the
//! LAPI as HTTP/1.0 (so the answer is close-delimited, never chunked), reads the whole answer,
//! then replies to tikban according to the current [`Mode`] with `Connection: close`. A mode
//! change therefore applies from the next request on, and no keep-alive connection can slip past
//! a fault.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward the LAPI's answer unchanged (status, headers, body).
    Pass,
    /// Answer `500 Internal Server Error` with a JSON message; the LAPI is not asked.
    Status500,
    /// Forward the request, then send the first half of the LAPI's body as a complete HTTP
    /// response (a correct `Content-Length` for the half): HTTP succeeds, the JSON is cut. The
    /// LAPI has advanced the bouncer's stream cursor, so the lost delta is really lost.
    Truncated,
    /// `200 OK`, `application/json`, and a body of seeded random bytes after a JSON-like start.
    Garbage,
    /// The LAPI's real answer, with the body trickled `chunk` bytes every `every`.
    Slow { chunk: usize, every: Duration },
    /// Close every connection at once, without a byte.
    Cut,
}

/// The proxy; it runs on the runtime given to [`FaultProxy::start`] until dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    served: Arc<Mutex<Vec<(Mode, String)>>>,
    faulted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream` (plain HTTP).
    pub fn start(rt: &tokio::runtime::Runtime, upstream: SocketAddr) -> FaultProxy {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let served: Arc<Mutex<Vec<(Mode, String)>>> = Arc::default();
        let faulted = Arc::new(AtomicU64::new(0));
        let (m, s, f) = (mode.clone(), served.clone(), faulted.clone());
        let task = rt.spawn(async move {
            let mut seed = 0x5eed_u64;
            while let Ok((conn, _)) = listener.accept().await {
                seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let (m, s, f) = (m.clone(), s.clone(), f.clone());
                tokio::spawn(async move {
                    let _ = handle(conn, upstream, &m, &s, &f, seed).await;
                });
            }
        });
        FaultProxy {
            addr,
            mode,
            served,
            faulted,
            task,
        }
    }

    /// `http://ADDR/`, for `CROWDSEC_URL`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Requests answered with a fault (any mode but `Pass`) so far.
    pub fn faulted(&self) -> u64 {
        self.faulted.load(Ordering::SeqCst)
    }

    /// `(mode, request line)` of every request seen so far.
    pub fn served(&self) -> Vec<(Mode, String)> {
        self.served.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    mut conn: TcpStream,
    upstream: SocketAddr,
    mode: &Mutex<Mode>,
    served: &Mutex<Vec<(Mode, String)>>,
    faulted: &AtomicU64,
    seed: u64,
) -> std::io::Result<()> {
    let current = *mode.lock().unwrap();
    if current == Mode::Cut {
        faulted.fetch_add(1, Ordering::SeqCst);
        served.lock().unwrap().push((current, String::new()));
        return Ok(()); // dropped: the client sees EOF or a reset
    }
    let Some((head, body)) = read_request(&mut conn).await? else {
        return Ok(());
    };
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    served.lock().unwrap().push((current, request_line.clone()));
    if current != Mode::Pass {
        faulted.fetch_add(1, Ordering::SeqCst);
    }
    match current {
        Mode::Status500 => {
            let body = br#"{"message":"injected fault: internal error"}"#;
            return respond(&mut conn, "500 Internal Server Error", &[], body).await;
        }
        Mode::Garbage => {
            let mut body = br#"{"new":[{"duration":"#.to_vec();
            let mut x = seed | 1;
            for _ in 0..2048 {
                // xorshift64: deterministic bytes, any value including NUL and invalid UTF-8.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                body.push((x >> 24) as u8);
            }
            let ct = [("Content-Type".to_owned(), "application/json".to_owned())];
            return respond(&mut conn, "200 OK", &ct, &body).await;
        }
        _ => {}
    }
    let Ok(answer) = forward(upstream, &head, &body).await else {
        return Ok(()); // LAPI down: close, like the LAPI itself would refuse
    };
    let Some((status, headers, body)) = parse_response(&answer) else {
        return Ok(());
    };
    match current {
        Mode::Truncated => {
            let half = &body[..body.len() / 2];
            respond(&mut conn, &status, &headers, half).await
        }
        Mode::Slow { chunk, every } => {
            let head = response_head(&status, &headers, body.len());
            conn.write_all(&head).await?;
            for part in body.chunks(chunk.max(1)) {
                tokio::time::sleep(every).await;
                conn.write_all(part).await?;
                conn.flush().await?;
            }
            conn.shutdown().await
        }
        _ => respond(&mut conn, &status, &headers, body).await,
    }
}

/// Reads one request: the head (up to the blank line) and a `Content-Length` body.
async fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some((head, body)))
}

/// Sends the request to the LAPI as HTTP/1.0 with `Connection: close` and reads it all.
async fn forward(upstream: SocketAddr, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let request_line = lines.next().unwrap_or_default();
    let request_line = match request_line.rsplit_once(' ') {
        Some((start, _version)) => format!("{start} HTTP/1.0"),
        None => request_line.to_owned(),
    };
    let mut out = format!("{request_line}\r\n");
    for line in lines {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name != "connection" && name != "keep-alive" {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut up = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream))
        .await
        .map_err(|_| std::io::Error::other("connect timeout"))??;
    up.write_all(out.as_bytes()).await?;
    up.write_all(body).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), up.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("upstream timeout"))??;
    Ok(answer)
}

/// `(status text such as "200 OK", headers without framing ones, body)`.
type Parsed<'a> = (String, Vec<(String, String)>, &'a [u8]);

fn parse_response(answer: &[u8]) -> Option<Parsed<'_>> {
    let end = find(answer, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_once(' ')?.1.to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k != "content-length" && k != "transfer-encoding" && k != "connection"
        })
        .collect();
    Some((status, headers, &answer[end + 4..]))
}

fn response_head(status: &str, headers: &[(String, String)], length: usize) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ));
    out.into_bytes()
}

async fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = response_head(status, headers, body.len());
    out.extend_from_slice(body);
    conn.write_all(&out).await?;
    conn.shutdown().await
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
