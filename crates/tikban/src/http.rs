//! The `/metrics` and `/health` HTTP server.
//!
//! HTTP/1.1 only, GET and HEAD only. Everything a client can make the server hold is bounded,
//! and a health probe still gets an answer while hostile clients hold every connection they can
//! (docs/security.md, "The metrics port"):
//!
//! - At most [`MAX_CONNECTIONS`] connections live at once. When a new one arrives at the cap,
//!   the server does not refuse it: it closes the **oldest** connection that is not answering a
//!   request, provided that connection has had [`MIN_AGE`] to send its request. Refusing the
//!   newest let 24 clients that reopen whatever is closed keep every probe out; evicting the
//!   oldest makes every hostile connection short-lived while a newcomer always gets its turn.
//!   While every connection is younger than [`MIN_AGE`], the server stops accepting for that
//!   long (the kernel's backlog holds the newcomers in order) rather than refusing.
//! - A request head must arrive within [`HEADER_TIMEOUT`], counted from the connection's start
//!   or from the end of the previous response; the same timeout closes idle keep-alive
//!   connections. A slowloris sending a byte a second is cut off at that point.
//! - A request head may be at most [`MAX_HEADER_BYTES`]; the read buffer at most
//!   [`MAX_BUF_BYTES`]. Larger heads get `431`.
//! - Requests in flight: one per connection (HTTP/1 answers pipelined requests one at a time),
//!   so at most [`MAX_CONNECTIONS`]; answering is synchronous (a registry render or a health
//!   snapshot), and a connection in the middle of a response is evicted only after it had
//!   [`EVICT_GRACE`] to finish, so requests in flight cannot lock a probe out either.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::metrics::{Health, Metrics};

/// Most connections alive at once. Each costs a task and hyper's buffers (a few KiB while idle).
pub const MAX_CONNECTIONS: usize = 32;
/// A connection is never evicted before it has been open this long: time enough to send a request
/// and be answered, even on a busy router.
pub const MIN_AGE: Duration = Duration::from_millis(500);
/// Longest time a request head may take to arrive, and longest idle time between two requests
/// on a keep-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest request head (request line and headers) in bytes.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Largest read buffer of one connection in bytes (hyper's minimum is 8 KiB).
pub const MAX_BUF_BYTES: usize = 16 * 1024;
/// How long an evicted connection that is in the middle of a response may take to finish it.
pub const EVICT_GRACE: Duration = Duration::from_secs(1);
/// Longest time a new connection waits for room before it is dropped. Room normally comes within
/// [`MIN_AGE`] or [`EVICT_GRACE`]; this only guards against a stalled runtime.
const ADMIT_WAIT: Duration = Duration::from_secs(2);

/// What the server reads from.
#[derive(Debug, Clone)]
pub struct State {
    /// The registry.
    pub metrics: Arc<Metrics>,
    /// The health snapshot, updated by the sync engine.
    pub health: Arc<Mutex<Health>>,
}

/// Answers one request.
pub fn respond(state: &State, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(ctype),
        );
        resp
    };
    if method != Method::GET && method != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        );
    }
    match path {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.render(),
        ),
        "/health" | "/healthz" => {
            let health = state
                .health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let status = if health.ok() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "application/json", health.to_json())
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` completes.
pub async fn run(listener: TcpListener, state: State, shutdown: impl Future<Output = ()>) {
    serve(
        listener,
        state,
        Arc::new(Tracker::new(Limits::DEFAULT)),
        shutdown,
    )
    .await;
}

/// The server's limits; [`run`] uses [`Limits::DEFAULT`], tests smaller ones.
#[derive(Debug, Clone, Copy)]
struct Limits {
    connections: usize,
    min_age: Duration,
    header_timeout: Duration,
    evict_grace: Duration,
    admit_wait: Duration,
}

impl Limits {
    const DEFAULT: Self = Self {
        connections: MAX_CONNECTIONS,
        min_age: MIN_AGE,
        header_timeout: HEADER_TIMEOUT,
        evict_grace: EVICT_GRACE,
        admit_wait: ADMIT_WAIT,
    };
}

async fn serve(
    listener: TcpListener,
    state: State,
    tracker: Arc<Tracker>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::debug!(cause = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admitted = tokio::select! {
            _ = &mut shutdown => return,
            t = tracker.admit() => t,
        };
        let Some(ticket) = admitted else {
            tracing::debug!("metrics server full; connection dropped");
            continue;
        };
        tokio::spawn(connection(stream, state.clone(), ticket));
    }
}

/// Serves one connection until it ends, times out or is evicted.
async fn connection(stream: TcpStream, state: State, ticket: Ticket) {
    let limits = ticket.tracker.limits;
    let id = ticket.id;
    let tracker = ticket.tracker.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let busy = Busy::start(tracker.clone(), id);
        let resp =
            respond(&state, req.method(), req.uri().path()).map(|body| Reply { body, _busy: busy });
        async move { Ok::<_, Infallible>(resp) }
    });
    let conn = http1::Builder::new()
        // The timer is set, so header_read_timeout cannot panic; MAX_BUF_BYTES is above hyper's
        // minimum (8 KiB), so max_buf_size cannot panic.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_BUF_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let evict = ticket.evict.clone();
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(cause = %e, "metrics connection ended with an error");
            }
        }
        _ = evict.notified() => {
            // The connection is not polled here, so its busy state cannot change under us.
            if ticket.is_busy() {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(limits.evict_grace, conn).await;
            }
            // Otherwise dropping it closes the socket: nothing was in progress.
        }
    }
    drop(ticket);
}

/// A response body that keeps its connection marked busy until hyper has taken all of it.
#[derive(Debug)]
struct Reply {
    body: Full<Bytes>,
    _busy: Busy,
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

// === impl Tracker ===

/// The table of live connections: who may be evicted, and room for newcomers.
#[derive(Debug)]
struct Tracker {
    limits: Limits,
    table: Mutex<Table>,
    /// The number of live connections, sent on every change (admission waits on it).
    live: watch::Sender<usize>,
}

/// At most `limits.connections` entries: [`Tracker::try_admit`] checks before it pushes.
#[derive(Debug, Default)]
struct Table {
    conns: Vec<Conn>,
    next_id: u64,
    /// Most connections ever alive at once (for tests).
    peak: usize,
    /// Connections evicted so far (for tests).
    evicted: u64,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    accepted: Instant,
    /// A request is being answered (from the service call to the body's end).
    busy: bool,
    /// Asked to close; it will within [`Limits::evict_grace`].
    evicting: bool,
    evict: Arc<Notify>,
}

impl Tracker {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            table: Mutex::new(Table {
                conns: Vec::with_capacity(limits.connections),
                ..Table::default()
            }),
            live: watch::Sender::new(0),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Plain field updates under the lock: a panic cannot leave the table half-written.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Room for one more connection, evicting the oldest one if needed; `None` if none came
    /// within `limits.admit_wait`.
    async fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let deadline = Instant::now() + self.limits.admit_wait;
        loop {
            // Subscribed before looking: a connection that ends after try_admit wakes us.
            let mut changed = self.live.subscribe();
            let now = Instant::now();
            let wake = match self.try_admit(now) {
                Ok(ticket) => return Some(ticket),
                Err(wake) => wake,
            };
            if now >= deadline {
                return None;
            }
            let until = wake.map_or(deadline, |w| w.min(deadline));
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Admits at once if there is room. Otherwise asks the best victim to close and returns
    /// `Err(None)` (wait for a connection to end), or returns `Err(Some(t))` when no connection may be
    /// evicted before `t`.
    fn try_admit(self: &Arc<Self>, now: Instant) -> Result<Ticket, Option<Instant>> {
        let limits = self.limits;
        let mut t = self.table();
        if t.conns.len() < limits.connections {
            let id = t.next_id;
            t.next_id += 1;
            let evict = Arc::new(Notify::new());
            t.conns.push(Conn {
                id,
                accepted: now,
                busy: false,
                evicting: false,
                evict: evict.clone(),
            });
            t.peak = t.peak.max(t.conns.len());
            self.live.send_replace(t.conns.len());
            return Ok(Ticket {
                tracker: self.clone(),
                id,
                evict,
            });
        }
        if t.conns.iter().any(|c| c.evicting) {
            // One is already on its way out: one eviction per newcomer.
            return Err(None);
        }
        // Idle before busy, then oldest first, among those old enough.
        let victim = t
            .conns
            .iter_mut()
            .filter(|c| c.accepted + limits.min_age <= now)
            .min_by_key(|c| (c.busy, c.accepted));
        if let Some(c) = victim {
            c.evicting = true;
            c.evict.notify_one();
            t.evicted += 1;
            return Err(None);
        }
        Err(t.conns.iter().map(|c| c.accepted + limits.min_age).min())
    }

    fn set_busy(&self, id: u64, busy: bool) {
        if let Some(c) = self.table().conns.iter_mut().find(|c| c.id == id) {
            c.busy = busy;
        }
    }
}

/// A connection's place in the table; leaving it frees the place.
#[derive(Debug)]
struct Ticket {
    tracker: Arc<Tracker>,
    id: u64,
    evict: Arc<Notify>,
}

impl Ticket {
    fn is_busy(&self) -> bool {
        let t = self.tracker.table();
        t.conns.iter().any(|c| c.id == self.id && c.busy)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut t = self.tracker.table();
        t.conns.retain(|c| c.id != self.id);
        self.tracker.live.send_replace(t.conns.len());
    }
}

/// Marks a connection busy while it lives.
#[derive(Debug)]
struct Busy {
    tracker: Arc<Tracker>,
    id: u64,
}

impl Busy {
    fn start(tracker: Arc<Tracker>, id: u64) -> Self {
        tracker.set_busy(id, true);
        Self { tracker, id }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.tracker.set_busy(self.id, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn state(ok: bool) -> State {
        State {
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Mutex::new(Health {
                lapi_up: ok,
                router_up: ok,
                synced: ok,
                warnings: vec![],
                skipped: Default::default(),
            })),
        }
    }

    #[test]
    fn health_is_200_only_when_everything_is_up() {
        assert_eq!(
            respond(&state(true), &Method::GET, "/health").status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&state(false), &Method::GET, "/health").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn unknown_paths_and_methods_are_refused() {
        assert_eq!(
            respond(&state(true), &Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&state(true), &Method::POST, "/metrics").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn serves_metrics_over_tcp() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(listener, state(true), async {
            let _ = stopped.await;
        }));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("tikban_build_info"), "{body}");
        let _ = stop.send(());
        server.await.unwrap();
    }

    // === the server under attack ===

    /// The server on its own thread and current-thread runtime, as `tikban::run` runs it, so that
    /// the attackers on the test's runtime do not share its scheduler.
    struct Running {
        addr: SocketAddr,
        tracker: Arc<Tracker>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Running {
        fn start(limits: Limits) -> Self {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            std_listener.set_nonblocking(true).unwrap();
            let addr = std_listener.local_addr().unwrap();
            let tracker = Arc::new(Tracker::new(limits));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let t = tracker.clone();
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).unwrap();
                    serve(listener, state(true), t, async {
                        let _ = stopped.await;
                    })
                    .await;
                });
            });
            Self {
                addr,
                tracker,
                stop: Some(stop),
                thread: Some(thread),
            }
        }

        fn live(&self) -> usize {
            self.tracker.table().conns.len()
        }

        /// Waits (up to 5 s) until the server holds `n` connections.
        async fn wait_live(&self, n: usize) {
            let mut live = self.tracker.live.subscribe();
            let waited =
                tokio::time::timeout(Duration::from_secs(5), live.wait_for(|l| *l == n)).await;
            assert!(
                matches!(waited, Ok(Ok(_))),
                "server holds {} connections, not {n}",
                self.live()
            );
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Attacker {
        /// Connects and sends nothing.
        Silent,
        /// Sends half a request head and stops.
        HalfRequest,
        /// Sends a request line, then a header byte a second.
        Slowloris,
        /// Sends a whole request, reads the answer, then keeps the connection idle.
        IdleKeepAlive,
    }

    /// One hostile client: opens a connection, misbehaves until the server closes it, reopens at
    /// once. Counts the closes in `churn`.
    async fn attack(addr: SocketAddr, kind: Attacker, churn: watch::Sender<usize>) {
        loop {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                tokio::task::yield_now().await;
                continue;
            };
            let first: &[u8] = match kind {
                Attacker::Silent => b"",
                Attacker::HalfRequest => b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
                Attacker::Slowloris => b"GET /health HTTP/1.1\r\n",
                Attacker::IdleKeepAlive => b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            };
            let mut open = s.write_all(first).await.is_ok();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let drip = b"X-Pad: 0\r\n";
            let mut i = 0;
            let mut buf = [0u8; 4096];
            while open {
                tokio::select! {
                    r = s.read(&mut buf) => open = matches!(r, Ok(n) if n > 0),
                    _ = tick.tick(), if matches!(kind, Attacker::Slowloris) => {
                        open = s.write_all(&drip[i % drip.len()..][..1]).await.is_ok();
                        i += 1;
                    }
                }
            }
            churn.send_modify(|n| *n += 1);
        }
    }

    /// One `GET /health`: `Ok` if `200` arrived within 2 s.
    async fn probe(addr: SocketAddr) -> Result<(), String> {
        let answer = tokio::time::timeout(Duration::from_secs(2), async {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        })
        .await;
        match answer {
            Err(_) => Err("no answer within 2 s".into()),
            Ok(Err(e)) => Err(format!("connection failed: {e}")),
            Ok(Ok(out)) if out.starts_with(b"HTTP/1.1 200 ") => Ok(()),
            Ok(Ok(out)) => Err(format!(
                "answer {:?}",
                String::from_utf8_lossy(&out[..out.len().min(40)])
            )),
        }
    }

    /// Issue 17: 24 clients reopening idle connections kept every probe out of the old server
    /// (16 connections, newest refused): 0 of 20 probes were answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_is_answered_during_a_connection_flood() {
        let server = Running::start(Limits::DEFAULT);
        let (churn, mut churned) = watch::channel(0usize);
        let kinds = [
            Attacker::Silent,
            Attacker::HalfRequest,
            Attacker::Slowloris,
            Attacker::IdleKeepAlive,
        ];
        let attackers: Vec<_> = (0..48)
            .map(|i| tokio::spawn(attack(server.addr, kinds[i % 4], churn.clone())))
            .collect();
        // In full swing: the server is full and has closed as many connections as there are
        // attackers (each reopened at once).
        tokio::time::timeout(Duration::from_secs(15), churned.wait_for(|n| *n >= 48))
            .await
            .expect("the attack never got going")
            .unwrap();
        let before = *churned.borrow();
        let mut failures = Vec::new();
        for i in 0..20 {
            if let Err(e) = probe(server.addr).await {
                failures.push(format!("probe {i}: {e}"));
            }
        }
        let after = *churned.borrow();
        for a in &attackers {
            a.abort();
        }
        assert!(
            failures.is_empty(),
            "{} of 20 probes unanswered: {failures:#?}",
            failures.len()
        );
        assert!(after > before, "the attack stopped during the probes");
        let peak = server.tracker.table().peak;
        assert_eq!(peak, MAX_CONNECTIONS, "live connections exceeded the cap");
    }

    /// At the cap, a newcomer evicts the oldest idle connection, never a younger one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newcomer_at_the_cap_evicts_the_oldest_idle_connection() {
        let server = Running::start(Limits {
            connections: 4,
            min_age: Duration::from_millis(50),
            ..Limits::DEFAULT
        });
        let mut idle = Vec::new();
        for n in 1..=4 {
            idle.push(TcpStream::connect(server.addr).await.unwrap());
            server.wait_live(n).await;
        }
        probe(server.addr).await.unwrap();
        // The first connection was closed, the other three are still open.
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(2), idle[0].read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "the oldest connection is still open: {closed:?}"
        );
        for s in &idle[1..] {
            let mut one = [0u8; 1];
            assert!(
                matches!(s.try_read(&mut one), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
                "a younger connection was closed"
            );
        }
        assert_eq!(server.tracker.table().evicted, 1);
        assert!(server.tracker.table().peak <= 4);
    }

    /// A connection answering a request is not evicted while an idle one may be.
    #[test]
    fn busy_connections_are_evicted_last() {
        let tracker = Arc::new(Tracker::new(Limits {
            connections: 2,
            ..Limits::DEFAULT
        }));
        let t0 = Instant::now();
        let old = tracker.try_admit(t0).unwrap();
        let young = tracker.try_admit(t0 + Duration::from_millis(10)).unwrap();
        let busy = Busy::start(tracker.clone(), old.id);
        assert!(old.is_busy());
        // Nobody old enough yet: wait until the oldest is.
        assert_eq!(
            tracker.try_admit(t0 + Duration::from_millis(100)).err(),
            Some(Some(t0 + MIN_AGE))
        );
        let later = t0 + Duration::from_secs(1);
        assert_eq!(tracker.try_admit(later).err(), Some(None));
        let t = tracker.table();
        let evicting: Vec<_> = t
            .conns
            .iter()
            .filter(|c| c.evicting)
            .map(|c| c.id)
            .collect();
        assert_eq!(evicting, vec![young.id], "the idle one goes first");
        drop(t);
        // One eviction at a time.
        assert_eq!(tracker.try_admit(later).err(), Some(None));
        assert_eq!(tracker.table().evicted, 1);
        drop(young);
        let third = tracker.try_admit(later).unwrap();
        drop(busy);
        assert!(!old.is_busy());
        drop(third);
        assert_eq!(tracker.table().conns.len(), 1);
    }

    /// A client that sends its headers a byte a second is cut off after HEADER_TIMEOUT.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slowloris_is_cut_off_after_the_header_timeout() {
        let server = Running::start(Limits::DEFAULT);
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let started = Instant::now();
        s.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        let drip = b"X-Pad: 0\r\n";
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        let mut i = 0;
        let deadline = tokio::time::sleep(HEADER_TIMEOUT + Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                _ = tick.tick() => {
                    if s.write_all(&drip[i % drip.len()..][..1]).await.is_err() {
                        break;
                    }
                    i += 1;
                }
                _ = &mut deadline => panic!("still open after {:?}", started.elapsed()),
            }
        }
        assert!(
            started.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(100),
            "closed too early: {:?}",
            started.elapsed()
        );
        assert!(!got.starts_with(b"HTTP/1.1 200"), "it was answered");
        server.wait_live(0).await;
    }

    /// A request head over MAX_HEADER_BYTES gets 431, and the connection is closed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_request_head_is_refused() {
        let server = Running::start(Limits::DEFAULT);
        for size in [MAX_HEADER_BYTES + 100, 4 * MAX_BUF_BYTES] {
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            let head = format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(size)
            );
            // The server may close before it has read everything: the write may fail.
            let _ = s.write_all(head.as_bytes()).await;
            let mut out = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(2), async {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            assert!(read.is_ok(), "{size}: the connection stayed open");
            let text = String::from_utf8_lossy(&out);
            if size < MAX_BUF_BYTES {
                // Read whole, then refused.
                assert!(text.starts_with("HTTP/1.1 431"), "{size}: {text}");
            } else {
                // Refused once the buffer is full; the close may reset the connection before
                // the 431 is read.
                assert!(
                    text.is_empty() || text.starts_with("HTTP/1.1 431"),
                    "{size}: {text}"
                );
            }
        }
        // A normal head is still answered.
        probe(server.addr).await.unwrap();
    }
}
