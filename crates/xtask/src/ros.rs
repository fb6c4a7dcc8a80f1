//! A few lines of blocking RouterOS API client over `routeros_proto`, for xtask's checks of
//! `routeros-sim`. Deliberately not tikban's own client: a check must not trust the code under
//! test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Result, bail};
use routeros_proto::{Attributes, Command, Decoder, Limits, Reply, ReplyKind, login};

/// One logged-in API session.
pub struct Session {
    stream: TcpStream,
    decoder: Decoder,
}

impl Session {
    /// Connects to `addr` and logs in.
    pub fn login(addr: SocketAddr, user: &str, password: &str) -> Result<Session> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut s = Session {
            stream,
            decoder: Decoder::new(Limits::default()),
        };
        s.run(&login::login_command(user, password.as_bytes())?)?;
        Ok(s)
    }

    /// Runs one command; returns its `!re` rows, or the router's `!trap` message as an error.
    pub fn run(&mut self, command: &Command) -> Result<Vec<Attributes>> {
        let mut wire = Vec::new();
        command.encode(&mut wire);
        self.stream.write_all(&wire)?;
        let mut rows = Vec::new();
        let mut trap = None;
        loop {
            let reply = self.read_reply()?;
            match reply.kind {
                ReplyKind::Re => rows.push(reply.attributes),
                ReplyKind::Empty => {}
                ReplyKind::Trap => {
                    trap.get_or_insert_with(|| {
                        reply
                            .attributes
                            .get_lossy("message")
                            .unwrap_or_default()
                            .into_owned()
                    });
                }
                ReplyKind::Fatal => bail!(
                    "router closed the session: {}",
                    reply
                        .fatal_reason()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default()
                ),
                ReplyKind::Done => {
                    return match trap {
                        Some(message) => bail!("router refused {:?}: {message}", command),
                        None => Ok(rows),
                    };
                }
            }
        }
    }

    fn read_reply(&mut self) -> Result<Reply> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(sentence) = self.decoder.poll_sentence()? {
                return Ok(Reply::parse(&sentence)?);
            }
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                bail!("the router closed the connection");
            }
            self.decoder.feed(&buf[..n]);
        }
    }
}
