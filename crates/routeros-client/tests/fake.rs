//! Tests against a scripted fake router: a tokio listener on 127.0.0.1:0 that reads the client's
//! sentences and answers with canned replies. It reaches cases the emulator does not model
//! (legacy login, stray tags, `!fatal`, broken replies, TLS alerts).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use routeros_client::{
    Client, ClientConfig, Command, ConnectError, Error, LostReason, proto::Decoder, proto::Limits,
    proto::Sentence,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The router side of one connection.
pub struct Peer<S> {
    io: S,
    dec: Decoder,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            dec: Decoder::new(Limits::default()),
        }
    }

    /// The next sentence from the client as lossy strings; `None` on EOF.
    pub async fn recv(&mut self) -> Option<Vec<String>> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(s) = self.dec.poll_sentence().expect("client sent garbage") {
                return Some(
                    s.words()
                        .iter()
                        .map(|w| String::from_utf8_lossy(w).into_owned())
                        .collect(),
                );
            }
            let n = self.io.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            self.dec.feed(&buf[..n]);
        }
    }

    /// Sends one reply sentence.
    pub async fn send(&mut self, words: &[&str]) {
        let s = Sentence::new(words.iter().map(|w| w.as_bytes().to_vec()).collect());
        // The client may already have gone; tests check what the client saw.
        let _ = self.io.write_all(&s.to_bytes()).await;
    }

    /// Answers the v7 `/login` and checks the credentials.
    pub async fn accept_login(&mut self) {
        let login = self.recv().await.expect("login");
        assert_eq!(login[0], "/login");
        assert!(login.contains(&"=name=admin".to_owned()), "{login:?}");
        let tag = tag_of(&login);
        self.send(&["!done", &tag]).await;
    }

    pub fn into_inner(self) -> S {
        self.io
    }
}

/// The `.tag=N` word of a sentence.
pub fn tag_of(words: &[String]) -> String {
    words
        .iter()
        .find(|w| w.starts_with(".tag="))
        .cloned()
        .expect("every client command is tagged")
}

/// Serves one connection with `script`.
pub async fn fake<F, Fut>(script: F) -> (SocketAddr, JoinHandle<()>)
where
    F: FnOnce(Peer<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        script(Peer::new(stream)).await;
    });
    (addr, task)
}

pub fn config(addr: SocketAddr) -> ClientConfig {
    let mut c = ClientConfig::new("127.0.0.1", "admin", "s3cret-pw");
    c.port = addr.port();
    c.connect_timeout = Duration::from_secs(5);
    c.command_timeout = Duration::from_secs(5);
    c
}

fn cmd(path: &str) -> Command {
    Command::builder(path).build().unwrap()
}

#[tokio::test]
async fn logs_in_routes_rows_and_keeps_the_connection_after_a_trap() {
    let (addr, server) = fake(|mut p| async move {
        p.accept_login().await;
        // add → ret
        let add = p.recv().await.unwrap();
        assert_eq!(add[0], "/ip/firewall/address-list/add");
        p.send(&["!done", "=ret=*1A", &tag_of(&add)]).await;
        // duplicate add → trap, then done
        let dup = p.recv().await.unwrap();
        let t = tag_of(&dup);
        p.send(&[
            "!trap",
            "=category=1",
            "=message=failure: already have such entry",
            &t,
        ])
        .await;
        p.send(&["!done", &t]).await;
        // print with rows, plus noise: unknown tag, untagged reply
        let print = p.recv().await.unwrap();
        let t = tag_of(&print);
        p.send(&["!re", "=.id=*1A", "=address=192.0.2.1", &t]).await;
        p.send(&["!re", "=.id=*99", ".tag=424242"]).await;
        p.send(&["!done", ".tag=424242"]).await;
        p.send(&["!re", "=x=untagged"]).await;
        p.send(&["!re", "=.id=*1B", "=address=192.0.2.2", &t]).await;
        p.send(&["!done", &t]).await;
        // empty print: !empty then !done
        let empty = p.recv().await.unwrap();
        let t = tag_of(&empty);
        p.send(&["!empty", &t]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        p.send(&["!done", &t]).await;
        assert!(p.recv().await.is_none(), "client closes when dropped");
    })
    .await;

    let client = Client::connect(config(addr)).await.unwrap();
    let add = Command::builder("/ip/firewall/address-list/add")
        .attr("list", "l")
        .attr("address", "192.0.2.1")
        .build()
        .unwrap();
    let r = client.execute(add.clone()).await.unwrap();
    assert_eq!(r.ret_str(), Some("*1A"));

    match client.execute(add).await {
        Err(Error::Trap {
            category: Some(1),
            message,
            count: 1,
        }) => assert_eq!(message, "failure: already have such entry"),
        other => panic!("{other:?}"),
    }
    assert!(!client.is_closed(), "a trap never closes the connection");

    let rows = client
        .execute(cmd("/ip/firewall/address-list/print"))
        .await
        .unwrap()
        .rows;
    let ids: Vec<_> = rows.iter().map(|r| r.get_str(".id").unwrap()).collect();
    assert_eq!(ids, ["*1A", "*1B"]);
    let stats = client.stats();
    assert_eq!(stats.dropped_unknown_tag, 2);
    assert_eq!(stats.dropped_untagged, 1);

    let started = Instant::now();
    let r = client
        .execute(cmd("/ip/firewall/address-list/print"))
        .await
        .unwrap();
    assert!(r.rows.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(15),
        "!empty must not complete the command before !done"
    );
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn falls_back_to_the_legacy_challenge_login() {
    let (addr, server) = fake(|mut p| async move {
        let first = p.recv().await.unwrap();
        assert!(
            first.contains(&"=password=passTest".to_owned()),
            "{first:?}"
        );
        p.send(&["!done", "=ret=abc123", &tag_of(&first)]).await;
        let second = p.recv().await.unwrap();
        assert_eq!(second[0], "/login");
        // docs/reference/routeros-api.md §4 vector: challenge abc123, password passTest.
        assert!(
            second.contains(&"=response=0021277bff9ac7caf06aa608e46616d47f".to_owned()),
            "{second:?}"
        );
        p.send(&["!done", &tag_of(&second)]).await;
        let _ = p.recv().await;
    })
    .await;
    let mut c = config(addr);
    c.password = "passTest".into();
    let client = Client::connect(c).await.unwrap();
    assert!(!client.is_closed());
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn bad_credentials_give_login_failed_with_the_router_message_and_no_password() {
    let (addr, server) = fake(|mut p| async move {
        let login = p.recv().await.unwrap();
        let t = tag_of(&login);
        p.send(&["!trap", "=message=invalid user name or password (6)", &t])
            .await;
        p.send(&["!done", &t]).await;
        assert!(
            p.recv().await.is_none(),
            "the client closes after a failed login"
        );
    })
    .await;
    let err = Client::connect(config(addr)).await.unwrap_err();
    match &err {
        ConnectError::LoginFailed { message } => {
            assert_eq!(message, "invalid user name or password (6)")
        }
        other => panic!("{other:?}"),
    }
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    server.await.unwrap();
}

#[tokio::test]
async fn fatal_fails_every_pending_command_and_closes() {
    let (addr, server) = fake(|mut p| async move {
        p.accept_login().await;
        let _a = p.recv().await.unwrap();
        let _b = p.recv().await.unwrap();
        p.send(&["!fatal", "out of memory"]).await;
        let _ = p.recv().await;
    })
    .await;
    let client = Client::connect(config(addr)).await.unwrap();
    let (a, b) = tokio::join!(
        client.execute(cmd("/system/resource/print")),
        client.execute(cmd("/system/identity/print")),
    );
    for r in [a, b] {
        match r {
            Err(Error::ConnectionLost {
                reason: LostReason::Fatal(reason),
            }) => assert_eq!(reason, "out of memory"),
            other => panic!("{other:?}"),
        }
    }
    assert!(client.is_closed());
    let later = client.execute(cmd("/system/resource/print")).await;
    assert!(matches!(later, Err(e) if e.is_connection_lost()));
    server.await.unwrap();
}

#[tokio::test]
async fn quit_sends_quit_and_closes_cleanly() {
    let (addr, server) = fake(|mut p| async move {
        p.accept_login().await;
        let quit = p.recv().await.unwrap();
        assert_eq!(quit[0], "/quit");
        p.send(&["!fatal", "session terminated on request"]).await;
        drop(p);
    })
    .await;
    let client = Client::connect(config(addr)).await.unwrap();
    client.quit().await.unwrap();
    assert!(client.is_closed());
    match client.execute(cmd("/system/resource/print")).await {
        Err(Error::ConnectionLost {
            reason: LostReason::Closed,
        }) => {}
        other => panic!("{other:?}"),
    }
    // Quitting twice is harmless.
    client.quit().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn eof_surfaces_as_connection_lost() {
    let (addr, server) = fake(|mut p| async move {
        p.accept_login().await;
        let _ = p.recv().await.unwrap();
        // Drop mid-command.
    })
    .await;
    let client = Client::connect(config(addr)).await.unwrap();
    match client.execute(cmd("/system/resource/print")).await {
        Err(Error::ConnectionLost {
            reason: LostReason::Eof,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(client.is_closed());
    server.await.unwrap();
}

#[tokio::test]
async fn unparseable_reply_closes_the_connection() {
    let (addr, server) = fake(|mut p| async move {
        p.accept_login().await;
        let c = p.recv().await.unwrap();
        p.send(&["!weird", &tag_of(&c)]).await;
        let _ = p.recv().await;
    })
    .await;
    let client = Client::connect(config(addr)).await.unwrap();
    match client.execute(cmd("/system/resource/print")).await {
        Err(Error::ConnectionLost {
            reason: LostReason::Protocol(_),
        }) => {}
        other => panic!("{other:?}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn timeout_cancels_the_command_and_the_connection_stays_up() {
    let (addr, server) = fake(|mut p| async move {
        p.accept_login().await;
        let slow = p.recv().await.unwrap();
        let slow_tag = tag_of(&slow);
        // Say nothing until the client gives up and cancels.
        let cancel = p.recv().await.unwrap();
        assert_eq!(cancel[0], "/cancel");
        assert_eq!(
            cancel[1],
            format!("=tag={}", slow_tag.trim_start_matches(".tag="))
        );
        // Late sentences of the cancelled command (docs/reference/routeros-api.md §5), then the cancel's done.
        p.send(&["!re", "=late=1", &slow_tag]).await;
        p.send(&["!trap", "=category=2", "=message=interrupted", &slow_tag])
            .await;
        p.send(&["!empty", &slow_tag]).await;
        p.send(&["!done", &slow_tag]).await;
        p.send(&["!done", &tag_of(&cancel)]).await;
        let next = p.recv().await.unwrap();
        p.send(&["!done", "=ret=ok", &tag_of(&next)]).await;
        let _ = p.recv().await;
    })
    .await;
    let mut c = config(addr);
    c.command_timeout = Duration::from_millis(200);
    c.window = 1;
    let client = Client::connect(c).await.unwrap();
    match client.execute(cmd("/system/resource/print")).await {
        Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("{other:?}"),
    }
    assert!(!client.is_closed());
    // The window slot of the timed-out command is free again (window = 1).
    let r = client.execute(cmd("/system/identity/print")).await.unwrap();
    assert_eq!(r.ret_str(), Some("ok"));
    assert_eq!(client.stats().dropped_cancelled, 4);
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn stream_delivers_many_rows_with_a_small_buffer() {
    const ROWS: usize = 5_000;
    let (addr, server) = fake(|mut p| async move {
        p.accept_login().await;
        let print = p.recv().await.unwrap();
        let t = tag_of(&print);
        // Meanwhile another command runs on the same connection.
        let other = p.recv().await.unwrap();
        for i in 0..ROWS {
            p.send(&["!re", &format!("=.id=*{i:X}"), &t]).await;
            if i == 10 {
                p.send(&["!done", "=ret=other", &tag_of(&other)]).await;
            }
        }
        p.send(&["!done", &t]).await;
        let _ = p.recv().await;
    })
    .await;
    let mut c = config(addr);
    c.stream_buffer = 4;
    let client = Client::connect(c).await.unwrap();
    let mut rows = client
        .stream(cmd("/ip/firewall/address-list/print"))
        .await
        .unwrap();
    // The other command's reply sits behind rows in the socket, so the stream must be drained
    // while it is awaited: a stream that nobody drains stalls the whole connection (documented
    // on `Client::stream`).
    let consume = async {
        let mut n = 0;
        while let Some(row) = rows.next().await {
            let row = row.unwrap();
            assert_eq!(row.get_str(".id"), Some(format!("*{n:X}").as_str()));
            n += 1;
            if n % 1000 == 0 {
                // A slow consumer: the driver must wait, not drop or buffer without bound.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        n
    };
    let (n, other) = tokio::join!(consume, client.execute(cmd("/system/identity/print")));
    assert_eq!(other.unwrap().ret_str(), Some("other"));
    assert_eq!(n, ROWS);
    assert!(rows.done().is_some());
    // The connection closes when the last handle, streams included, is gone.
    drop(rows);
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn cancelling_a_stream_sends_cancel_and_drops_late_rows() {
    let (addr, server) = fake(|mut p| async move {
        p.accept_login().await;
        let follow = p.recv().await.unwrap();
        let t = tag_of(&follow);
        p.send(&["!re", "=.id=*1", &t]).await;
        let cancel = p.recv().await.unwrap();
        assert_eq!(cancel[0], "/cancel");
        p.send(&["!re", "=.id=*2", &t]).await;
        p.send(&["!trap", "=category=2", "=message=interrupted", &t])
            .await;
        p.send(&["!empty", &t]).await;
        p.send(&["!done", &t]).await;
        p.send(&["!done", &tag_of(&cancel)]).await;
        let next = p.recv().await.unwrap();
        p.send(&["!done", &tag_of(&next)]).await;
        let _ = p.recv().await;
    })
    .await;
    let client = Client::connect(config(addr)).await.unwrap();
    let mut rows = client
        .stream(
            Command::builder("/ip/firewall/address-list/print")
                .flag("follow")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let first = rows.next().await.unwrap().unwrap();
    assert_eq!(first.get_str(".id"), Some("*1"));
    rows.cancel().await.unwrap();
    client.execute(cmd("/system/identity/print")).await.unwrap();
    assert_eq!(client.stats().dropped_cancelled, 4);
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn client_cancel_interrupts_a_running_command() {
    let (addr, server) = fake(|mut p| async move {
        p.accept_login().await;
        let follow = p.recv().await.unwrap();
        let t = tag_of(&follow);
        let cancel = p.recv().await.unwrap();
        assert_eq!(cancel[1], format!("=tag={}", t.trim_start_matches(".tag=")));
        p.send(&["!trap", "=category=2", "=message=interrupted", &t])
            .await;
        p.send(&["!done", &t]).await;
        p.send(&["!done", &tag_of(&cancel)]).await;
        let _ = p.recv().await;
    })
    .await;
    let client = Client::connect(config(addr)).await.unwrap();
    let pending = client.send(cmd("/ping")).await.unwrap();
    client.cancel(pending.tag()).await.unwrap();
    let err = pending.await.unwrap_err();
    assert!(err.is_interrupted(), "{err:?}");
    drop(client);
    server.await.unwrap();
}

#[tokio::test]
async fn connect_timeout_covers_a_silent_router() {
    let (addr, server) = fake(|mut p| async move {
        let _ = p.recv().await; // swallow the login, never answer
        let _ = p.recv().await;
    })
    .await;
    let mut c = config(addr);
    c.connect_timeout = Duration::from_millis(200);
    match Client::connect(c).await {
        Err(ConnectError::Timeout { after }) => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("{other:?}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    match Client::connect(config(addr)).await {
        Err(ConnectError::Connect { addr: a, .. }) => {
            assert!(a.ends_with(&addr.port().to_string()))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn window_limits_commands_in_flight() {
    const WINDOW: usize = 3;
    let (addr, server) = fake(|mut p| async move {
        p.accept_login().await;
        // Only WINDOW commands may arrive before the first reply.
        let mut got = Vec::new();
        for _ in 0..WINDOW {
            got.push(p.recv().await.unwrap());
        }
        let extra = tokio::time::timeout(Duration::from_millis(150), p.recv()).await;
        assert!(
            extra.is_err(),
            "a command beyond the window was sent: {extra:?}"
        );
        // Answer in reverse order: routing is by tag, not position.
        for c in got.iter().rev() {
            p.send(&["!done", &format!("=ret={}", c[1]), &tag_of(c)])
                .await;
        }
        for _ in 0..2 {
            let c = p.recv().await.unwrap();
            p.send(&["!done", &format!("=ret={}", c[1]), &tag_of(&c)])
                .await;
        }
        let _ = p.recv().await;
    })
    .await;
    let mut c = config(addr);
    c.window = WINDOW;
    let client = Client::connect(c).await.unwrap();
    let commands = (0..WINDOW + 2).map(|i| {
        Command::builder("/x/add")
            .attr("n", i.to_string())
            .build()
            .unwrap()
    });
    let results = client.pipeline(commands).await;
    let rets: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().unwrap().ret_str().unwrap().to_owned())
        .collect();
    assert_eq!(rets, ["=n=0", "=n=1", "=n=2", "=n=3", "=n=4"]);
    drop(client);
    server.await.unwrap();
}
