//! The client against a scripted HTTP server on 127.0.0.1: deadlines, cancellation, caps and
//! hostile error bodies, which the real LAPI does not produce on demand.

use std::time::Duration;

use crowdsec_lapi::{LapiClient, LapiConfig, LapiError, ParseError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const KEY: &str = "k3y-0123456789-s3cr3t";

/// What the server does on one connection, after reading the request head.
#[derive(Clone)]
enum Script {
    /// Writes these bytes, then keeps the connection open without a word.
    Stall(Vec<u8>),
    /// Writes these bytes, then one more byte of an endless JSON value every `every`.
    Trickle(Vec<u8>, Duration),
    /// Writes a whole response and closes.
    Full(Vec<u8>),
    /// Waits, then writes a whole response and closes (a LAPI encoding a large answer).
    Late(Duration, Vec<u8>),
}

/// A server that answers its n-th connection with `scripts[n]` and reports each request line.
async fn serve(scripts: Vec<Script>) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for script in scripts {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(run(sock, script, tx));
        }
    });
    (format!("http://{addr}/"), rx)
}

async fn run(mut sock: TcpStream, script: Script, tx: mpsc::UnboundedSender<String>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if sock.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let _ = tx.send(text.lines().next().unwrap_or_default().to_owned());
    match script {
        Script::Stall(bytes) => {
            let _ = sock.write_all(&bytes).await;
            // Hold the socket until the client drops it.
            let _ = sock.read(&mut byte).await;
        }
        Script::Trickle(bytes, every) => {
            let _ = sock.write_all(&bytes).await;
            loop {
                tokio::time::sleep(every).await;
                if sock.write_all(b"[").await.is_err() {
                    return;
                }
            }
        }
        Script::Full(bytes) => {
            let _ = sock.write_all(&bytes).await;
            let _ = sock.shutdown().await;
        }
        Script::Late(wait, bytes) => {
            tokio::time::sleep(wait).await;
            let _ = sock.write_all(&bytes).await;
            let _ = sock.shutdown().await;
        }
    }
}

fn response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn chunked_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec()
}

const BODY: &str = r#"{"deleted":null,"new":[{"duration":"1h","id":1,"origin":"cscli","scenario":"s","scope":"Ip","type":"ban","value":"192.0.2.1"},{"duration":"1h","id":2,"origin":"cscli","scenario":"s","scope":"Ip","type":"captcha","value":"192.0.2.2"}]}"#;

fn client(url: &str) -> LapiClient {
    let mut cfg = LapiConfig::new(url).with_api_key(KEY);
    cfg.request_timeout = Duration::from_secs(30);
    LapiClient::new(cfg).expect("client")
}

/// Asserts the poll ended with `Deadline` close to the deadline.
fn assert_deadline(result: Result<crowdsec_lapi::Batch, LapiError>, deadline: Instant) {
    let err = result.expect_err("the poll must fail");
    assert!(matches!(err, LapiError::Deadline { .. }), "{err}");
    let now = Instant::now();
    assert!(now >= deadline, "ended before the deadline: {err}");
    assert!(
        now < deadline + Duration::from_secs(2),
        "ended {:?} after the deadline",
        now - deadline
    );
    assert!(err.to_string().contains("deadline"), "{err}");
}

/// A body that stops halfway: the per-chunk timeout (30 s) would wait, the deadline does not.
/// The next poll reconnects and is a startup snapshot.
#[tokio::test]
async fn a_stalled_body_ends_at_the_deadline_and_the_next_poll_is_a_snapshot() {
    let mut stalled = response("200 OK", BODY);
    stalled.truncate(stalled.len() - BODY.len() / 2);
    let (url, mut requests) = serve(vec![
        Script::Full(response("200 OK", r#"{"deleted":null,"new":null}"#)),
        Script::Stall(stalled),
        Script::Full(response("200 OK", BODY)),
    ])
    .await;
    let mut c = client(&url);
    let far = || Instant::now() + Duration::from_secs(20);
    c.poll(far()).await.expect("first snapshot");
    assert!(!c.next_poll_is_startup());

    let deadline = Instant::now() + Duration::from_millis(500);
    assert_deadline(c.poll(deadline).await, deadline);
    assert!(c.next_poll_is_startup());

    let b = c.poll(far()).await.expect("the next poll works");
    assert!(b.is_startup());
    let lines: Vec<String> = std::iter::from_fn(|| requests.try_recv().ok()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[1].contains("startup=false"), "{lines:?}");
    assert!(lines[2].contains("startup=true"), "{lines:?}");
}

/// LAPI answers a snapshot only once it has read and encoded every decision (minutes with a
/// million on a small host): a snapshot's headers may take longer than the request timeout, up
/// to its overall deadline. A delta's headers still may not.
#[tokio::test]
async fn a_snapshot_may_answer_later_than_the_request_timeout_a_delta_may_not() {
    let late = Duration::from_millis(1600);
    let (url, _requests) = serve(vec![
        Script::Late(late, response("200 OK", BODY)),
        Script::Late(late, response("200 OK", r#"{"deleted":null,"new":null}"#)),
    ])
    .await;
    let mut cfg = LapiConfig::new(&url).with_api_key(KEY);
    cfg.request_timeout = Duration::from_secs(1);
    let mut c = LapiClient::new(cfg).expect("client");
    let started = Instant::now();
    let (cache, stats) = c
        .poll_snapshot(Instant::now() + Duration::from_secs(20))
        .await
        .expect("a late snapshot within its deadline is taken");
    assert!(started.elapsed() >= late);
    assert_eq!(stats.new, 2);
    assert!(!cache.is_empty());

    let started = Instant::now();
    let err = c
        .poll(Instant::now() + Duration::from_secs(20))
        .await
        .expect_err("a delta's headers are bounded by the request timeout");
    assert!(
        matches!(
            err,
            LapiError::Timeout {
                phase: "response headers",
                ..
            }
        ),
        "{err}"
    );
    assert!(started.elapsed() < late, "{:?}", started.elapsed());
}

/// An endless body that keeps trickling (each gap well under the per-chunk timeout) still ends
/// at the deadline.
#[tokio::test]
async fn an_endless_trickling_body_ends_at_the_deadline() {
    let mut head = chunked_head();
    head.extend_from_slice(b"8\r\n{\"x\":[[\r\n");
    // Each trickled "[" is sent raw; hyper sees a broken chunk or waits: either way the
    // deadline, not the 30 s gap timeout, ends the poll.
    let (url, _requests) = serve(vec![Script::Trickle(head, Duration::from_millis(50))]).await;
    let mut c = client(&url);
    let deadline = Instant::now() + Duration::from_millis(700);
    let result = c.poll(deadline).await;
    match result {
        Err(LapiError::Deadline { .. }) => assert_deadline(result, deadline),
        // A framing error is also a clean end, before the deadline.
        Err(LapiError::Http(_)) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(c.next_poll_is_startup());
}

/// Dropping `poll` midway (a shutdown `select!`) leaves the client usable: the next poll is a
/// snapshot and the decision-type filter still applies (it used to be lost: a captcha came
/// through as a ban).
#[tokio::test]
async fn a_poll_dropped_midway_leaves_the_client_usable() {
    let mut stalled = response("200 OK", BODY);
    stalled.truncate(stalled.len() - 40);
    let (url, mut requests) = serve(vec![
        Script::Full(response("200 OK", r#"{"deleted":null,"new":null}"#)),
        Script::Stall(stalled),
        Script::Full(response("200 OK", BODY)),
    ])
    .await;
    let mut c = client(&url);
    let far = Instant::now() + Duration::from_secs(20);
    c.poll(far).await.expect("first snapshot");
    let dropped = tokio::time::timeout(Duration::from_millis(300), c.poll(far)).await;
    assert!(dropped.is_err(), "the stalled poll must still be running");
    assert!(c.next_poll_is_startup());
    let b = c.poll(far).await.expect("the next poll works");
    assert!(b.is_startup());
    let added: Vec<String> = b.adds().iter().map(|a| a.value.to_string()).collect();
    assert_eq!(added, ["192.0.2.1"], "the captcha is filtered out");
    assert_eq!(b.filtered_by_type(), 1);
    let lines: Vec<String> = std::iter::from_fn(|| requests.try_recv().ok()).collect();
    assert!(lines[2].contains("startup=true"), "{lines:?}");
}

/// Past the decision cap or the body cap the poll fails and nothing is returned; the body cap
/// is checked against `Content-Length` before reading, and while streaming a chunked body.
#[tokio::test]
async fn caps_on_decisions_and_body_bytes_fail_the_poll() {
    let many = format!(
        r#"{{"deleted":null,"new":[{}]}}"#,
        [r#"{"duration":"1h","id":1,"type":"ban","value":"192.0.2.1"}"#; 3].join(",")
    );
    let mut chunked = chunked_head();
    chunked.extend_from_slice(format!("{:x}\r\n{many}\r\n0\r\n\r\n", many.len()).as_bytes());
    let (url, _r) = serve(vec![
        Script::Full(response("200 OK", &many)),
        Script::Full(response("200 OK", &many)),
        Script::Full(chunked),
    ])
    .await;
    let far = || Instant::now() + Duration::from_secs(20);

    let mut cfg = LapiConfig::new(url.as_str()).with_api_key(KEY);
    cfg.max_decisions = 2;
    let mut c = LapiClient::new(cfg).expect("client");
    let err = c.poll(far()).await.expect_err("3 decisions > 2");
    assert!(
        matches!(
            err,
            LapiError::Parse(ParseError::TooManyDecisions { max: 2 })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("more than 2 decisions"), "{err}");

    let mut cfg = LapiConfig::new(url.as_str()).with_api_key(KEY);
    cfg.max_body_bytes = 64;
    let mut c = LapiClient::new(cfg).expect("client");
    for what in ["Content-Length", "chunked"] {
        let err = c.poll(far()).await.expect_err(what);
        assert!(
            matches!(err, LapiError::Parse(ParseError::BodyTooLarge { max: 64 })),
            "{what}: {err}"
        );
    }
}

/// An error body is peer text: a `\n` must not forge a log line, an ANSI escape must not reach
/// the terminal, a body echoing the API key must not print it, and its length is bounded.
#[tokio::test]
async fn error_bodies_are_escaped_bounded_and_never_echo_the_api_key() {
    let message = format!(
        "bad key {KEY}\nINFO forged line \u{1b}[31mred {}",
        "x".repeat(5000)
    );
    let json = serde_json::json!({ "message": message }).to_string();
    let raw = format!("plain {KEY}\r\nWARN forged");
    let (url, _r) = serve(vec![
        Script::Full(response("403 Forbidden", &json)),
        Script::Full(response("500 Internal Server Error", &raw)),
    ])
    .await;
    let mut c = client(&url);
    for _ in 0..2 {
        let err = c
            .poll(Instant::now() + Duration::from_secs(20))
            .await
            .expect_err("refused");
        let text = err.to_string();
        assert!(!text.contains(KEY), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert!(!text.contains('\n') && !text.contains('\r'), "{text:?}");
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.len() < 600, "{} bytes", text.len());
        let debug = format!("{err:?}");
        assert!(!debug.contains(KEY), "{debug}");
    }
}
