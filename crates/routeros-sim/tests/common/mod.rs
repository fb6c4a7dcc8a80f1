//! Helpers shared by the socket test binaries: a raw API connection and reply assertions.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use routeros_proto::{Decoder, Limits, Reply, ReplyKind, Sentence};
use routeros_sim::{RunningSim, Sim, SimConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw API connection.
pub struct Conn {
    pub io: Box<dyn Io>,
    pub dec: Decoder,
}

pub const WAIT: Duration = Duration::from_secs(5);

impl Conn {
    pub async fn open(server: &RunningSim) -> Conn {
        let sock = TcpStream::connect(server.addr()).await.unwrap();
        Conn::wrap(Box::new(sock))
    }

    pub fn wrap(io: Box<dyn Io>) -> Conn {
        Conn {
            io,
            dec: Decoder::new(Limits::default()),
        }
    }

    pub async fn login_as(server: &RunningSim, user: &str, pass: &str) -> Conn {
        let mut c = Conn::open(server).await;
        let r = c
            .call(&[
                "/login",
                &format!("=name={user}"),
                &format!("=password={pass}"),
            ])
            .await;
        assert_eq!(kinds(&r), [ReplyKind::Done], "{r:?}");
        c
    }

    pub async fn admin(server: &RunningSim) -> Conn {
        Conn::login_as(server, "admin", "").await
    }

    pub fn encode(words: &[&str], out: &mut Vec<u8>) {
        Sentence::new(words.iter().map(|w| w.as_bytes().to_vec()).collect()).encode(out);
    }

    pub async fn send(&mut self, words: &[&str]) {
        let mut buf = Vec::new();
        Conn::encode(words, &mut buf);
        self.io.write_all(&buf).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// Next reply, or `None` on EOF / reset.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Reply> {
        let s = self.try_recv_sentence(wait).await?;
        Some(Reply::parse(&s).unwrap())
    }

    /// Next sentence as it came off the wire (words in wire order), or `None` on EOF / reset.
    pub async fn try_recv_sentence(&mut self, wait: Duration) -> Option<Sentence> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(s) = self.dec.poll_sentence().unwrap() {
                return Some(s);
            }
            let mut buf = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.io.read(&mut buf)).await {
                Err(_) => panic!("no reply within {wait:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.dec.feed(&buf[..n]),
            }
        }
    }

    pub async fn recv(&mut self) -> Reply {
        self.try_recv(WAIT).await.expect("connection closed")
    }

    /// Next sentence's words as text, in wire order.
    pub async fn recv_words(&mut self) -> Vec<String> {
        let s = self
            .try_recv_sentence(WAIT)
            .await
            .expect("connection closed");
        s.words()
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect()
    }

    /// Replies up to and including `!done` (untagged use).
    pub async fn until_done(&mut self) -> Vec<Reply> {
        let mut out = Vec::new();
        loop {
            let r = self.recv().await;
            let done = r.kind == ReplyKind::Done;
            out.push(r);
            if done {
                return out;
            }
        }
    }

    pub async fn call(&mut self, words: &[&str]) -> Vec<Reply> {
        self.send(words).await;
        self.until_done().await
    }

    /// Waits until every command sent before on this connection has started: commands run in
    /// arrival order, so the `!done` of a later one is the signal (no sleeping).
    pub async fn sync(&mut self) {
        self.send(&["/system/identity/print", ".tag=sync"]).await;
        loop {
            let r = self.recv().await;
            if r.tag_str() == Some("sync") && r.kind == ReplyKind::Done {
                return;
            }
        }
    }

    /// True if the sim closes the connection within `wait` (no further sentence arrives).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        matches!(
            tokio::time::timeout(wait, self.try_recv(wait + Duration::from_secs(1))).await,
            Ok(None)
        )
    }
}

pub fn kinds(replies: &[Reply]) -> Vec<ReplyKind> {
    replies.iter().map(|r| r.kind).collect()
}

pub fn msg(r: &Reply) -> &str {
    std::str::from_utf8(r.message().unwrap_or_default()).unwrap()
}

pub fn attr<'a>(r: &'a Reply, k: &str) -> &'a str {
    r.attributes
        .get_str(k)
        .unwrap_or_else(|| panic!("{k} missing in {r:?}"))
}

/// Asserts `!trap` with `message`, then `!done`.
pub fn assert_trap(replies: &[Reply], message: &str) {
    assert_eq!(
        kinds(replies),
        [ReplyKind::Trap, ReplyKind::Done],
        "{replies:?}"
    );
    assert_eq!(msg(&replies[0]), message);
}

pub async fn serve(config: SimConfig) -> (Sim, RunningSim) {
    let sim = Sim::new(config);
    let server = sim.serve("127.0.0.1:0").await.unwrap();
    (sim, server)
}

pub const AL: &str = "/ip/firewall/address-list";

/// The words of a reply as text (lossy), reply word first.
pub fn words(r: &Reply) -> Vec<String> {
    r.to_sentence()
        .words()
        .iter()
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

/// The attribute names of a reply, in wire order.
pub fn keys(r: &Reply) -> Vec<String> {
    r.attributes
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// True for `YYYY-MM-DD HH:MM:SS`.
pub fn is_iso_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}
