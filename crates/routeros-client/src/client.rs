//! The cloneable [`Client`] handle and the futures and streams it returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use routeros_proto::login::{legacy_login_command, legacy_response, login_command};
use routeros_proto::{Attributes, Command};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;

use crate::config::ClientConfig;
use crate::conn::{self, Msg, Shared, Sink, StreamEvent, StreamItem};
use crate::error::{ConnectError, Error};
use crate::mux::{Kind, MuxStats, Tag};
use crate::response::Response;
use crate::tls;

/// A connection to one router. Cheap to clone; every clone shares the connection, its window
/// and its driver task. The connection closes on [`Client::quit`], on any connection loss, or
/// when the last handle (including pending responses and row streams) is dropped.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
    window: usize,
    command_timeout: Duration,
    stream_buffer: usize,
    /// The TCP connection's local and peer addresses, when it is one.
    addrs: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
}

// === impl Client ===

impl Client {
    /// Connects (TCP, then TLS if [`ClientConfig::tls`] is set) and logs in, all within
    /// [`ClientConfig::connect_timeout`].
    pub async fn connect(config: ClientConfig) -> Result<Client, ConnectError> {
        let after = config.connect_timeout;
        tokio::time::timeout(after, connect_inner(&config))
            .await
            .map_err(|_| ConnectError::Timeout { after })?
    }

    /// Runs the client over an already connected stream (TCP, TLS, or an in-memory
    /// `tokio::io::duplex` in tests) and logs in. [`ClientConfig::host`], `port`, `tls` and
    /// `connect_timeout` are not used.
    pub async fn from_stream<S>(io: S, config: &ClientConfig) -> Result<Client, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::start(io, config, None).await
    }

    async fn start<S>(
        io: S,
        config: &ClientConfig,
        addrs: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    ) -> Result<Client, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let window = config.window.max(1);
        let shared = Arc::new(Shared::new(window));
        let tx = conn::spawn(io, window, config.limits, shared.clone());
        let client = Client {
            inner: Arc::new(Inner {
                tx,
                shared,
                window,
                command_timeout: config.command_timeout,
                stream_buffer: config.stream_buffer.max(1),
                addrs,
            }),
        };
        if let Err(e) = login(&client, &config.user, &config.password).await {
            // The socket state after a failed login is unverified (docs/reference/routeros-api.md §4): close.
            let _ = client.inner.tx.send(Msg::Shutdown);
            return Err(e);
        }
        Ok(client)
    }

    /// The local address of the TCP connection (the container's own address, as the router
    /// sees it); `None` for a client made with [`Client::from_stream`].
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.addrs.map(|(l, _)| l)
    }

    /// The router's address of the TCP connection; `None` for [`Client::from_stream`].
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.addrs.map(|(_, p)| p)
    }

    /// Runs one command and collects its rows. For large outputs use [`Client::stream`].
    ///
    /// Waits for a window slot first; [`ClientConfig::command_timeout`] runs from the moment
    /// the command is queued. Any `.tag` already on `command` is replaced. Many `execute`s may
    /// run concurrently (e.g. from a `FuturesUnordered`); up to `window` of them are in flight on
    /// the connection at once.
    pub async fn execute(&self, command: Command) -> Result<Response, Error> {
        self.send(command).await?.await
    }

    /// Queues `command` once a window slot is free and returns the future of its response,
    /// without waiting for it. Commands are written in the order `send` completes.
    ///
    /// The window slot is released when the router finishes the command, whether or not the
    /// [`PendingResponse`] is polled; its timeout is checked when it is polled. Dropping it
    /// abandons the command (it is cancelled on the router).
    pub async fn send(&self, mut command: Command) -> Result<PendingResponse, Error> {
        let permit = self
            .inner
            .shared
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.inner.shared.lost())?;
        let tag = self.inner.shared.next_tag();
        command.set_tag(tag.to_string())?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Send {
                tag,
                command,
                kind: Kind::Command,
                sink: Sink::Collect {
                    rows: Vec::new(),
                    tx,
                },
                permit: Some(permit),
            })
            .map_err(|_| self.inner.shared.lost())?;
        Ok(PendingResponse::new(self.inner.clone(), tag, rx))
    }

    /// Runs `commands` pipelined, up to `window` in flight, and returns their results in order.
    ///
    /// A `!trap` fails only its own command. After a connection loss the remaining commands fail
    /// with [`Error::ConnectionLost`].
    ///
    /// ```no_run
    /// # async fn demo(client: routeros_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use routeros_client::Command;
    /// let adds = (0..10_000u32).map(|i| {
    ///     Command::builder("/ip/firewall/address-list/add")
    ///         .attr("list", "crowdsec-banned")
    ///         .attr("address", format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
    ///         .attr("timeout", "3600s")
    ///         .build()
    /// }).collect::<Result<Vec<_>, _>>()?;
    /// for result in client.pipeline(adds).await {
    ///     match result {
    ///         Ok(response) => println!("added {:?}", response.ret_str()),
    ///         Err(e) if e.is_connection_lost() => return Err(e.into()),
    ///         Err(e) => eprintln!("router refused: {e}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn pipeline<I>(&self, commands: I) -> Vec<Result<Response, Error>>
    where
        I: IntoIterator<Item = Command>,
    {
        self.pipeline_stream(commands).collect().await
    }

    /// Like [`Client::pipeline`], but yields each result, in order, as soon as it and all
    /// before it are done.
    pub fn pipeline_stream<I>(&self, commands: I) -> impl Stream<Item = Result<Response, Error>>
    where
        I: IntoIterator<Item = Command>,
    {
        futures_util::stream::iter(commands)
            .map(move |command| self.execute(command))
            .buffered(self.inner.window)
    }

    /// Starts a command whose rows are consumed as they arrive (`print` of a large list,
    /// `listen`, `=follow=`). Rows are buffered up to [`ClientConfig::stream_buffer`]; beyond
    /// that the connection stops reading until the consumer catches up, which stalls every
    /// other command on this connection too: drain or drop the stream promptly. The stream
    /// holds one window slot until it ends, is cancelled, or is dropped (which cancels it).
    pub async fn stream(&self, mut command: Command) -> Result<RowStream, Error> {
        let permit = self
            .inner
            .shared
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.inner.shared.lost())?;
        let tag = self.inner.shared.next_tag();
        command.set_tag(tag.to_string())?;
        let (tx, rx) = mpsc::channel(self.inner.stream_buffer);
        self.inner
            .tx
            .send(Msg::Send {
                tag,
                command,
                kind: Kind::Command,
                sink: Sink::Stream { tx },
                permit: Some(permit),
            })
            .map_err(|_| self.inner.shared.lost())?;
        Ok(RowStream {
            timeout: Some(self.inner.command_timeout),
            inner: self.inner.clone(),
            tag,
            rx,
            done: None,
            finished: false,
        })
    }

    /// Sends `/cancel =tag=<tag>` and waits for the router to confirm it. The cancelled command
    /// itself ends the router's way: its waiter gets an [`Error::Trap`] of category 2
    /// ([`Error::is_interrupted`]), `docs/reference/routeros-api.md` §5. Tags come from
    /// [`RowStream::tag`] or [`PendingResponse::tag`].
    pub async fn cancel(&self, tag: Tag) -> Result<(), Error> {
        let cancel_tag = self.inner.shared.next_tag();
        let command = Command::builder("/cancel")
            .attr("tag", tag.to_string())
            .tag(cancel_tag.to_string())
            .build()?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Send {
                tag: cancel_tag,
                command,
                kind: Kind::Internal,
                sink: Sink::Collect {
                    rows: Vec::new(),
                    tx,
                },
                permit: None,
            })
            .map_err(|_| self.inner.shared.lost())?;
        PendingResponse::new(self.inner.clone(), cancel_tag, rx)
            .await
            .map(|_| ())
    }

    /// Sends `/quit` and closes the connection once the router answers with `!fatal` (`session
    /// terminated on request`, `docs/reference/routeros-api.md` §3) or closes the socket. Commands still in
    /// flight fail with [`Error::ConnectionLost`]. Returns `Ok` if the connection was already
    /// closed; [`Error::Timeout`] (with the connection closed anyway) if the router did not
    /// answer within the command timeout.
    pub async fn quit(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        let tag = self.inner.shared.next_tag();
        if self.inner.tx.send(Msg::Quit { tag, ack: tx }).is_err() {
            return Ok(());
        }
        let after = self.inner.command_timeout;
        match tokio::time::timeout(after, rx).await {
            Ok(_) => Ok(()),
            Err(_) => {
                let _ = self.inner.tx.send(Msg::Shutdown);
                Err(Error::Timeout { after })
            }
        }
    }

    /// True once the connection has ended; every later command fails with
    /// [`Error::ConnectionLost`].
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closed() || self.inner.tx.is_closed()
    }

    /// The pipelining window of this connection.
    pub fn window(&self) -> usize {
        self.inner.window
    }

    /// Counters of routed and dropped reply sentences.
    pub fn stats(&self) -> MuxStats {
        self.inner.shared.stats()
    }
}

async fn connect_inner(config: &ClientConfig) -> Result<Client, ConnectError> {
    // Build the TLS settings first, so configuration mistakes show without touching the network.
    let tls = match &config.tls {
        Some(t) => Some((tls::client_config(t)?, tls::server_name(t, &config.host)?)),
        None => None,
    };
    let host = config.host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, config.port))
        .await
        .map_err(|source| ConnectError::Connect {
            addr: format!("{}:{}", config.host, config.port),
            source,
        })?;
    // Commands are small and latency-bound.
    let _ = tcp.set_nodelay(true);
    let addrs = tcp.local_addr().ok().zip(tcp.peer_addr().ok());
    match tls {
        None => Client::start(tcp, config, addrs).await,
        Some((tls_config, name)) => {
            let stream = tokio_rustls::TlsConnector::from(Arc::new(tls_config))
                .connect(name, tcp)
                .await
                .map_err(tls::handshake_error)?;
            Client::start(stream, config, addrs).await
        }
    }
}

/// `/login =name= =password=`, then the legacy challenge if `=ret=` comes back
/// (`docs/reference/routeros-api.md` §4).
async fn login(client: &Client, user: &str, password: &SecretString) -> Result<(), ConnectError> {
    let password = password.expose_secret().as_bytes();
    let command = login_command(user, password)
        .map_err(|e| ConnectError::Protocol(format!("cannot build /login: {e}")))?;
    let response = client.execute(command).await.map_err(login_error)?;
    let Some(challenge) = response.done.get("ret") else {
        return Ok(());
    };
    tracing::debug!("router asked for the pre-6.43 challenge login");
    let answer =
        legacy_response(challenge, password).map_err(|e| ConnectError::Protocol(e.to_string()))?;
    let command = legacy_login_command(user, &answer)
        .map_err(|e| ConnectError::Protocol(format!("cannot build /login: {e}")))?;
    client.execute(command).await.map_err(login_error)?;
    Ok(())
}

fn login_error(e: Error) -> ConnectError {
    match e {
        Error::Trap { message, .. } => ConnectError::LoginFailed { message },
        Error::ConnectionLost { reason } => ConnectError::ConnectionLost { reason },
        Error::Timeout { after } => ConnectError::Timeout { after },
        other => ConnectError::Protocol(other.to_string()),
    }
}

/// The response of a command queued with [`Client::send`]. Resolves to the [`Response`], the
/// router's [`Error::Trap`], [`Error::Timeout`] (the command is then cancelled) or
/// [`Error::ConnectionLost`]. Dropping it before it resolves abandons the command.
#[derive(Debug)]
#[must_use = "dropping a PendingResponse cancels its command"]
pub struct PendingResponse {
    inner: Arc<Inner>,
    tag: Tag,
    rx: oneshot::Receiver<Result<Response, Error>>,
    deadline: Pin<Box<Sleep>>,
    finished: bool,
}

impl PendingResponse {
    fn new(inner: Arc<Inner>, tag: Tag, rx: oneshot::Receiver<Result<Response, Error>>) -> Self {
        let deadline = Box::pin(tokio::time::sleep(inner.command_timeout));
        Self {
            inner,
            tag,
            rx,
            deadline,
            finished: false,
        }
    }

    /// The command's `.tag` on the wire.
    pub fn tag(&self) -> Tag {
        self.tag
    }
}

impl Future for PendingResponse {
    type Output = Result<Response, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(Err(this.inner.shared.lost()));
        }
        // A response that already arrived wins over an elapsed deadline.
        if let Poll::Ready(result) = Pin::new(&mut this.rx).poll(cx) {
            this.finished = true;
            return Poll::Ready(result.unwrap_or_else(|_| Err(this.inner.shared.lost())));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.finished = true;
            let _ = this.inner.tx.send(Msg::Abandon {
                tag: this.tag,
                ack: None,
            });
            return Poll::Ready(Err(Error::Timeout {
                after: this.inner.command_timeout,
            }));
        }
        Poll::Pending
    }
}

impl Drop for PendingResponse {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.inner.tx.send(Msg::Abandon {
                tag: self.tag,
                ack: None,
            });
        }
    }
}

/// Rows of a command started with [`Client::stream`], as they arrive.
///
/// Dropping it before the end cancels the command on the router.
#[derive(Debug)]
pub struct RowStream {
    inner: Arc<Inner>,
    tag: Tag,
    rx: mpsc::Receiver<StreamItem>,
    done: Option<Attributes>,
    finished: bool,
    timeout: Option<Duration>,
}

impl RowStream {
    /// Sets how long [`RowStream::next`] waits for a reply before it gives up and cancels the
    /// command; `None` waits forever. Defaults to [`ClientConfig::command_timeout`]. Use `None`
    /// for `listen` and `=follow=` prints, which are silent while nothing changes.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// The next row; `None` after `!done` (see [`RowStream::done`]). An error ends the stream:
    /// [`Error::Trap`] from the router, [`Error::Timeout`] when no reply came within the timeout
    /// ([`RowStream::set_timeout`]; the command is then cancelled), or
    /// [`Error::ConnectionLost`].
    pub async fn next(&mut self) -> Option<Result<Attributes, Error>> {
        if self.finished {
            return None;
        }
        let received = match self.timeout {
            Some(after) => tokio::time::timeout(after, self.rx.recv())
                .await
                .map_err(|_| after),
            None => Ok(self.rx.recv().await),
        };
        let item = match received {
            Err(after) => {
                self.finished = true;
                let _ = self.inner.tx.send(Msg::Abandon {
                    tag: self.tag,
                    ack: None,
                });
                return Some(Err(Error::Timeout { after }));
            }
            Ok(None) => Err(self.inner.shared.lost()),
            Ok(Some(item)) => item,
        };
        match item {
            Ok(StreamEvent::Row(row)) => Some(Ok(row)),
            Ok(StreamEvent::Done(done)) => {
                self.finished = true;
                self.done = Some(done);
                None
            }
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }

    /// The `!done` attributes, once the stream has ended normally.
    pub fn done(&self) -> Option<&Attributes> {
        self.done.as_ref()
    }

    /// The command's `.tag` on the wire.
    pub fn tag(&self) -> Tag {
        self.tag
    }

    /// Stops the command: sends `/cancel =tag=<tag>` and waits (within the command timeout) for
    /// the router to confirm. Rows still in flight are dropped. Does nothing if the stream has
    /// already ended.
    pub async fn cancel(mut self) -> Result<(), Error> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Abandon {
                tag: self.tag,
                ack: Some(tx),
            })
            .map_err(|_| self.inner.shared.lost())?;
        let after = self.inner.command_timeout;
        match tokio::time::timeout(after, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.inner.shared.lost()),
            Err(_) => Err(Error::Timeout { after }),
        }
    }
}

impl Drop for RowStream {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.inner.tx.send(Msg::Abandon {
                tag: self.tag,
                ack: None,
            });
        }
    }
}
