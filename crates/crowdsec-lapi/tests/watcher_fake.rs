//! The watcher against a scripted keep-alive HTTP server on 127.0.0.1: JWT renewal before
//! expiry and after a 401, deadlines, caps, hostile error bodies and the allowlist answers of a
//! newer LAPI, which the 1.4.6 LAPI does not produce on demand (its JWT lasts an hour).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crowdsec_lapi::{
    Alert, AllowlistAnswer, BanAlert, LapiError, Value, Watcher, WatcherConfig, WatcherError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const PASSWORD: &str = "pa55-0123456789-s3cr3t";

/// One answer of the server, to the next request whatever the connection.
#[derive(Clone)]
enum Step {
    /// Status line rest (`200 OK`), extra header lines, body.
    Reply(&'static str, String, String),
    /// Answers nothing and holds the connection.
    Stall,
}

/// A request as the server saw it.
#[derive(Debug)]
struct Seen {
    line: String,
    head: String,
    body: String,
}

impl Seen {
    fn bearer(&self) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: Bearer "))
    }
}

/// Serves `steps` in order over any number of kept-alive connections.
async fn serve(steps: Vec<Step>) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let steps = Arc::new(Mutex::new(steps.into_iter()));
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(conn(sock, steps.clone(), tx.clone()));
        }
    });
    (format!("http://{addr}/"), rx)
}

async fn conn(
    mut sock: TcpStream,
    steps: Arc<Mutex<std::vec::IntoIter<Step>>>,
    tx: mpsc::UnboundedSender<Seen>,
) {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len.min(1 << 20)];
        if sock.read_exact(&mut body).await.is_err() {
            return;
        }
        let seen = Seen {
            line: head.lines().next().unwrap_or_default().to_owned(),
            head: head
                .lines()
                .map(|l| match l.split_once(": ") {
                    Some((k, v)) => format!("{}: {v}\n", k.to_ascii_lowercase()),
                    None => format!("{l}\n"),
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let _ = tx.send(seen);
        let step = steps.lock().expect("lock").next();
        match step {
            None => return,
            Some(Step::Stall) => {
                let _ = sock.read(&mut byte).await;
                return;
            }
            Some(Step::Reply(status, headers, body)) => {
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\n{headers}Content-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if sock.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// LAPI's `Date` for all answers, and login answers relative to it.
const DATE: &str = "Date: Tue, 01 Dec 2026 22:19:03 GMT\r\n";

/// A 1.4.6-shaped login answer whose token expires `secs` (< 1 h) after the `Date` above.
fn login(token: &str, secs: u32) -> Step {
    let t = 22 * 3600 + 19 * 60 + 3 + secs;
    let expire = format!(
        "2026-12-01T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    );
    Step::Reply(
        "200 OK",
        DATE.into(),
        format!(r#"{{"code":200,"expire":"{expire}","token":"{token}"}}"#),
    )
}

fn created(ids: &str) -> Step {
    Step::Reply("201 Created", DATE.into(), ids.into())
}

fn unauthorized(message: &str) -> Step {
    Step::Reply(
        "401 Unauthorized",
        format!("{DATE}Www-Authenticate: JWT realm=Crowdsec API local\r\n"),
        serde_json::json!({"code": 401, "message": message}).to_string(),
    )
}

fn watcher(url: &str) -> Watcher {
    let mut cfg = WatcherConfig::new(url, "guard", PASSWORD);
    cfg.scenarios = vec!["tikban/routeros-login-bf".into()];
    Watcher::new(cfg).expect("watcher")
}

fn alert() -> Alert {
    let now = SystemTime::now();
    Alert::ban(&BanAlert {
        scenario: "tikban/routeros-login-bf",
        scenario_version: "0.1",
        source: Value::parse("192.0.2.7").expect("ip"),
        duration: Duration::from_secs(3600),
        first_seen: now,
        last_seen: now,
        events_count: 5,
        capacity: 5,
        leakspeed: Duration::from_secs(10),
        message: None,
    })
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// The token lives as long as `expire` minus LAPI's `Date` (4 s here, whatever the local clock
/// says: the fake `Date` is fixed), and is renewed a quarter of that before it expires.
#[tokio::test]
async fn the_token_is_renewed_before_it_expires() {
    let (url, mut rx) = serve(vec![
        login("tok-one", 4),
        created(r#"["1"]"#),
        login("tok-two", 4),
        created(r#"["2"]"#),
    ])
    .await;
    let mut w = watcher(&url);
    assert_eq!(w.push_alerts(&[alert()], far()).await.expect("push"), ["1"]);
    let refresh = w.token_refresh_at().expect("token");
    let left = refresh - Instant::now();
    assert!(
        left > Duration::from_millis(2500) && left <= Duration::from_secs(3),
        "{left:?}"
    );
    tokio::time::sleep_until(refresh).await;
    assert_eq!(w.push_alerts(&[alert()], far()).await.expect("push"), ["2"]);
    assert_eq!(w.logins(), 2);

    let seen = drain(&mut rx);
    let lines: Vec<&str> = seen.iter().map(|s| s.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "POST /v1/watchers/login HTTP/1.1",
            "POST /v1/alerts HTTP/1.1",
            "POST /v1/watchers/login HTTP/1.1",
            "POST /v1/alerts HTTP/1.1"
        ]
    );
    assert_eq!(seen[1].bearer(), Some("tok-one"));
    assert_eq!(seen[3].bearer(), Some("tok-two"));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).expect("login json");
    assert_eq!(
        body,
        serde_json::json!({"machine_id": "guard", "password": PASSWORD,
            "scenarios": ["tikban/routeros-login-bf"]})
    );
    assert!(
        seen[0].head.contains(&format!(
            "user-agent: tikban/v{}\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        seen[0].head
    );
    let pushed: serde_json::Value = serde_json::from_str(&seen[1].body).expect("alerts json");
    assert_eq!(pushed[0]["source"]["value"], "192.0.2.7");
    assert!(seen[1].head.contains("content-type: application/json\n"));
    // LAPI's clock (the fixed fake Date) is years away from ours, and the watcher says so.
    let offset = w.clock_offset().expect("Date seen");
    let expected = 1_796_163_543
        - SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
    assert!((offset - expected).abs() <= 2, "{offset} vs {expected}");
}

/// A 401 on a call (LAPI restarted with a new JWT secret, or the token expired early): one new
/// login and one retry; the retry carries the new token.
#[tokio::test]
async fn a_401_logs_in_again_and_retries_once() {
    let (url, mut rx) = serve(vec![
        login("tok-one", 1800),
        unauthorized("Token is expired"),
        login("tok-two", 1800),
        created(r#"["7"]"#),
    ])
    .await;
    let mut w = watcher(&url);
    assert_eq!(w.push_alerts(&[alert()], far()).await.expect("push"), ["7"]);
    assert_eq!(w.logins(), 2);
    let seen = drain(&mut rx);
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[1].bearer(), Some("tok-one"));
    assert_eq!(seen[3].bearer(), Some("tok-two"));
}

/// A second 401 right after a fresh login is an auth error: no loop. LAPI's message is escaped,
/// and a message echoing the token or the password does not print them.
#[tokio::test]
async fn a_second_401_is_an_error_with_secrets_redacted() {
    let (url, _rx) = serve(vec![
        login("tok-one-SECRETJWT", 1800),
        unauthorized("bad token tok-one-SECRETJWT"),
        login("tok-two-SECRETJWT", 1800),
        unauthorized(&format!(
            "bad token tok-two-SECRETJWT pw {PASSWORD}\nINFO forged \u{1b}[31m"
        )),
    ])
    .await;
    let mut w = watcher(&url);
    let err = w
        .push_alerts(&[alert()], far())
        .await
        .expect_err("refused twice");
    assert!(
        matches!(err, WatcherError::Status { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.is_auth(), "{err}");
    for text in [err.to_string(), format!("{err:?}"), format!("{w:?}")] {
        assert!(
            !text.contains("SECRETJWT") && !text.contains(PASSWORD),
            "{text}"
        );
        assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text:?}");
    }
    assert!(
        err.to_string()
            .contains("bad token <redacted> pw <redacted>"),
        "{err}"
    );
    assert_eq!(w.token_refresh_at(), None, "the refused token is dropped");
}

/// A refused login: its message is escaped and bounded, and never carries the password.
#[tokio::test]
async fn a_hostile_login_refusal_is_escaped_and_redacted() {
    let message = format!("no {PASSWORD}\r\nWARN forged \u{1b}[2J{}", "x".repeat(5000));
    let (url, _rx) = serve(vec![unauthorized(&message)]).await;
    let mut w = watcher(&url);
    let err = w.login(far()).await.expect_err("refused");
    assert!(
        matches!(err, WatcherError::LoginRefused { status: 401, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        !text.contains(PASSWORD) && text.contains("no <redacted>"),
        "{text}"
    );
    assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text:?}");
    assert!(text.len() < 800, "{} bytes", text.len());
}

/// The whole call is bounded by its deadline even when each phase limit is long; the watcher
/// reconnects for the next call and keeps its token.
#[tokio::test]
async fn a_stalled_answer_ends_at_the_deadline_and_the_next_call_works() {
    let (url, mut rx) = serve(vec![
        login("tok-one", 1800),
        Step::Stall,
        created(r#"["3"]"#),
    ])
    .await;
    let mut w = watcher(&url);
    let deadline = Instant::now() + Duration::from_millis(700);
    let err = w
        .push_alerts(&[alert()], deadline)
        .await
        .expect_err("stalled");
    assert!(
        matches!(
            err,
            WatcherError::Deadline {
                what: "alerts push",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let now = Instant::now();
    assert!(
        now >= deadline && now < deadline + Duration::from_secs(2),
        "{:?}",
        now - deadline
    );
    assert_eq!(w.push_alerts(&[alert()], far()).await.expect("push"), ["3"]);
    assert_eq!(w.logins(), 1, "the token survived the failed call");
    let lines: Vec<String> = drain(&mut rx).into_iter().map(|s| s.line).collect();
    assert_eq!(
        lines,
        [
            "POST /v1/watchers/login HTTP/1.1",
            "POST /v1/alerts HTTP/1.1",
            "POST /v1/alerts HTTP/1.1"
        ]
    );
}

/// Answers are read with a cap; a success answer past it fails the call.
#[tokio::test]
async fn an_oversized_answer_fails_the_call() {
    let ids = format!("[{}]", vec!["\"1\""; 100_000].join(","));
    let (url, _rx) = serve(vec![login("tok-one", 1800), created(&ids)]).await;
    let mut cfg = WatcherConfig::new(url.as_str(), "guard", PASSWORD);
    cfg.max_response_bytes = 64 * 1024;
    let mut w = Watcher::new(cfg).expect("watcher");
    let err = w
        .push_alerts(&[alert()], far())
        .await
        .expect_err("too large");
    assert!(
        matches!(err, WatcherError::ResponseTooLarge { max: 65_536, .. }),
        "{err:?}"
    );
}

/// A 400/422 (LAPI refuses the payload) is not retryable: an [`AlertQueue`] drops the batch.
#[tokio::test]
async fn a_refused_payload_is_not_retryable() {
    let (url, _rx) = serve(vec![
        login("tok-one", 1800),
        Step::Reply(
            "422 Unprocessable Entity",
            DATE.into(),
            r#"{"message":"validation failure list:\nscenario in body is required"}"#.into(),
        ),
    ])
    .await;
    let mut w = watcher(&url);
    let err = w.push_alerts(&[alert()], far()).await.expect_err("refused");
    assert!(!err.is_retryable() && !err.is_auth(), "{err}");
    assert!(err.to_string().contains("422"), "{err}");
}

/// What a LAPI with allowlists (1.6.6+) answers, and the canonical address in the path.
#[tokio::test]
async fn allowlist_answers_of_a_newer_lapi() {
    let (url, mut rx) = serve(vec![
        login("tok-one", 1800),
        Step::Reply(
            "200 OK",
            DATE.into(),
            r#"{"allowlisted":true,"reason":"office (from allowlist 'admins')\n"}"#.into(),
        ),
        Step::Reply("200 OK", DATE.into(), "{}".into()),
        Step::Reply("200 OK", DATE.into(), "[not json".into()),
    ])
    .await;
    let mut w = watcher(&url);
    let mapped: IpAddr = "::ffff:192.0.2.9".parse().expect("ip");
    assert_eq!(
        w.allowlist_check(mapped, far()).await.expect("check"),
        AllowlistAnswer::Allowlisted {
            reason: "office (from allowlist 'admins')\\n".into()
        }
    );
    let v6: IpAddr = "2001:DB8::9".parse().expect("ip");
    assert_eq!(
        w.allowlist_check(v6, far()).await.expect("check"),
        AllowlistAnswer::NotAllowlisted
    );
    let err = w.allowlist_check(v6, far()).await.expect_err("garbage");
    assert!(matches!(err, WatcherError::BadResponse { .. }), "{err:?}");
    let lines: Vec<String> = drain(&mut rx).into_iter().map(|s| s.line).collect();
    assert_eq!(lines[1], "GET /v1/allowlists/check/192.0.2.9 HTTP/1.1");
    assert_eq!(lines[2], "GET /v1/allowlists/check/2001:db8::9 HTTP/1.1");
}

/// Nothing listens: a transport error, retryable, without secrets.
#[tokio::test]
async fn an_unreachable_lapi_is_a_retryable_transport_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut w = watcher(&format!("http://127.0.0.1:{port}/"));
    let err = w
        .push_alerts(&[alert()], far())
        .await
        .expect_err("unreachable");
    assert!(
        matches!(err, WatcherError::Transport(LapiError::Connect { .. })),
        "{err:?}"
    );
    assert!(err.is_retryable() && !err.is_auth());
    assert!(!format!("{err} {err:?}").contains(PASSWORD));
    assert!(
        w.push_alerts(&[], far())
            .await
            .expect("nothing to send")
            .is_empty()
    );
}
