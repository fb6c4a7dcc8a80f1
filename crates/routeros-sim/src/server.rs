//! Accept loop and per-connection tasks.
//!
//! ```text
//!  socket ─read─▶ reader ──Queued──▶ executor ──Out::Batch{at}──▶ writer ─write─▶ socket
//!                  │  (decode,        (login, policies, cost,      (waits until `at` =
//!                  │   transcript,     state lock, replies;         arrival + latency,
//!                  │   drop fault)     spawns follow streams)       honours stall)
//!                  └─ `/cancel` handled here: flags running commands, replies `!done`
//! ```
//!
//! Commands of one connection execute in arrival order, so pipelined writes apply in order; the
//! reader never waits for the executor, and the writer sends each reply `latency` after its
//! command arrived, so pipelining overlaps latency. `per_write` is a global CPU lock.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use routeros_proto::{Decoder, Request, Sentence, category};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::clock::lock;
use crate::cmd::login::LoginRecord;
use crate::cmd::{self, Outcome, Replier, Session, Trap};
use crate::shared::{Direction, Shared};
use crate::sim::Sim;
use crate::tls::TlsIdentity;

/// A sim serving on a socket, started by [`Sim::serve`] or [`Sim::serve_tls`]. Dropping it stops
/// the accept loop and drops its connections.
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    sim: Sim,
    tls: Option<TlsIdentity>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl RunningSim {
    /// The bound address (use `127.0.0.1:0` to get a free port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The sim behind this server.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// The server certificate, PEM (TLS servers only).
    pub fn cert_pem(&self) -> Option<String> {
        self.tls.as_ref().map(|t| t.cert_pem.clone())
    }

    /// The TLS identity (certificate and key), TLS servers only.
    pub fn tls_identity(&self) -> Option<&TlsIdentity> {
        self.tls.as_ref()
    }

    /// SHA-256 of the certificate DER (TLS servers only).
    pub fn fingerprint_sha256(&self) -> Option<[u8; 32]> {
        self.tls.as_ref().and_then(|t| t.fingerprint_sha256().ok())
    }

    /// [`Self::fingerprint_sha256`] as lower-case hex.
    pub fn fingerprint_hex(&self) -> Option<String> {
        self.fingerprint_sha256().map(hex::encode)
    }

    /// Stops accepting, drops every connection and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sim {
    /// Binds `addr` and serves the plain API (port 8728 semantics) on a spawned task.
    pub async fn serve(&self, addr: &str) -> io::Result<RunningSim> {
        self.spawn(addr, None).await
    }

    /// Binds `addr` and serves api-ssl (8729 semantics) with
    /// [`SimConfig::tls_identity`](crate::SimConfig::tls_identity) or a fresh self-signed
    /// certificate for `localhost`/`127.0.0.1`.
    pub async fn serve_tls(&self, addr: &str) -> io::Result<RunningSim> {
        let identity = match &self.shared.config.tls_identity {
            Some(id) => id.clone(),
            None => TlsIdentity::generate()?,
        };
        self.spawn(addr, Some(identity)).await
    }

    async fn spawn(&self, addr: &str, tls: Option<TlsIdentity>) -> io::Result<RunningSim> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let acceptor = tls.as_ref().map(TlsIdentity::acceptor).transpose()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let sim = self.clone();
        let task = tokio::spawn(async move {
            sim.run_inner(listener, acceptor, async {
                let _ = stopped.await;
            })
            .await
        });
        Ok(RunningSim {
            addr,
            sim: self.clone(),
            tls,
            stop: Some(stop),
            task,
        })
    }

    /// Serves the plain API on `listener` until `shutdown` completes (mini-redis style), then
    /// drops every connection. Connections beyond
    /// [`SimConfig::max_sessions`](crate::SimConfig::max_sessions) are closed at once.
    pub async fn run(&self, listener: TcpListener, shutdown: impl Future) -> io::Result<()> {
        self.run_inner(listener, None, shutdown).await
    }

    /// Like [`Sim::run`], serving api-ssl with `identity`.
    pub async fn run_tls(
        &self,
        listener: TcpListener,
        identity: &TlsIdentity,
        shutdown: impl Future,
    ) -> io::Result<()> {
        let acceptor = identity.acceptor()?;
        self.run_inner(listener, Some(acceptor), shutdown).await
    }

    async fn run_inner(
        &self,
        listener: TcpListener,
        acceptor: Option<TlsAcceptor>,
        shutdown: impl Future,
    ) -> io::Result<()> {
        // Connections watch `stop`: when this function returns (or is aborted), the sender
        // drops and every connection ends.
        let (_stop_tx, stop_rx) = watch::channel(());
        let sessions = Arc::new(Semaphore::new(self.shared.config.max_sessions));
        tokio::pin!(shutdown);
        loop {
            let (sock, peer) = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                res = listener.accept() => match res {
                    Ok(x) => x,
                    Err(err) => {
                        // EMFILE and friends: back off briefly rather than spin.
                        debug!(cause = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = sessions.clone().try_acquire_owned() else {
                debug!(%peer, "max-sessions reached; closing");
                continue;
            };
            let _ = sock.set_nodelay(true);
            let shared = self.shared.clone();
            let stop = stop_rx.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let ip = peer.ip().to_canonical();
                match acceptor {
                    None => connection(shared, sock, ip, stop).await,
                    Some(acc) => {
                        let hs = tokio::time::timeout(Duration::from_secs(10), acc.accept(sock));
                        match hs.await {
                            Ok(Ok(tls)) => connection(shared, tls, ip, stop).await,
                            Ok(Err(err)) => debug!(%peer, cause = %err, "tls handshake failed"),
                            Err(_) => debug!(%peer, "tls handshake timed out"),
                        }
                    }
                }
            });
        }
    }
}

/// A command waiting for the executor.
struct Queued {
    req: Request,
    seq: u64,
    arrived: Instant,
    cancel: watch::Receiver<bool>,
    /// The drop-after-N fault fires once this command has executed.
    drop_after: bool,
}

/// What the writer does.
enum Out {
    /// Write these sentences at `at` (arrival + latency) or later.
    Batch {
        at: Instant,
        sentences: Vec<Sentence>,
    },
    /// Flush, wait, close.
    Close { delay: Duration },
    /// Invented rows of a hostile print, written as soon as the socket takes them; the permit
    /// goes back when they are written, which paces the print to the client's reading speed.
    /// Not recorded in the transcript.
    Paced {
        sentences: Vec<Sentence>,
        _permit: OwnedSemaphorePermit,
    },
    /// Write the start of a word that never ends, then nothing more ([`crate::Faults::desync`]).
    Desync,
}

/// Commands that have not finished, by sequence number.
type Running = Arc<Mutex<HashMap<u64, RunningCmd>>>;

/// A command that has not finished.
struct RunningCmd {
    tag: Option<Vec<u8>>,
    /// Set by `/cancel`.
    cancel: watch::Sender<bool>,
    /// The `!done` of each `/cancel` aimed at this command, to send after its `!trap` (see
    /// [`cancel`]). Shared by every command one `/cancel` hits: the first to end sends it.
    acks: Vec<CancelAck>,
}

/// A `/cancel`'s `!done`, sent once.
type CancelAck = Arc<Mutex<Option<Sentence>>>;

/// The session's login, copied out of the executor so the connection can log the logout.
type LoginSlot = Arc<Mutex<Option<LoginRecord>>>;

/// Streams (`follow`, `follow-only`) one connection may run at once. RouterOS documents no
/// limit; this bound only keeps a hostile client from piling up tasks (**unverified** refusal).
const MAX_STREAMS: usize = 256;

async fn connection<S>(shared: Arc<Shared>, stream: S, peer: IpAddr, mut stop: watch::Receiver<()>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    shared.with_state(|s| s.stats.connections += 1);
    let (mut rd, wr) = tokio::io::split(stream);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let running: Running = Arc::default();
    let logged_in = Arc::new(AtomicBool::new(false));
    let login: LoginSlot = Arc::default();
    let drop_now = Arc::new(Notify::new());
    let mut writer = tokio::spawn(writer(shared.clone(), conn, wr, out_rx));
    let executor = tokio::spawn(executor(
        shared.clone(),
        peer,
        cmd_rx,
        out_tx.clone(),
        running.clone(),
        logged_in.clone(),
        login.clone(),
        drop_now.clone(),
    ));
    let mut kill = shared.kill.subscribe();
    let mut desync = shared.desync.subscribe();
    let mut decoder = Decoder::new(shared.config.limits);
    let mut buf = vec![0u8; 16 * 1024];
    let (mut received, mut seq) = (0u64, 0u64);
    let mut reading = true;
    let graceful = 'conn: loop {
        tokio::select! {
            n = rd.read(&mut buf), if reading => {
                let n = match n {
                    Ok(0) | Err(_) => break 'conn true,
                    Ok(n) => n,
                };
                decoder.feed(&buf[..n]);
                loop {
                    let sentence = match decoder.poll_sentence() {
                        Ok(Some(s)) => s,
                        Ok(None) => break,
                        Err(err) => {
                            // Malformed input: close this connection, never panic.
                            debug!(conn, cause = %err, "undecodable input; closing");
                            break 'conn false;
                        }
                    };
                    received += 1;
                    shared.record(conn, Direction::In, sentence.words());
                    let drop_after = shared.drop_after().is_some_and(|n| received >= n);
                    let arrived = Instant::now();
                    let queued = match Request::parse(&sentence) {
                        Err(_) => {
                            // Not a command word: answer like an unknown command.
                            let r = Replier::new(None).with_codes(shared.config.trap_codes);
                            let trap = Trap::new(Some(0), "no such command prefix");
                            let _ = out_tx.send(batch(&shared, arrived, r.trap_done(&trap)));
                            None
                        }
                        Ok(req) if req.path.ends_with(b"/print") && shared.kill_on_print() => {
                            // The hostile-router fault: the print kills the session, unanswered.
                            shared.hostile.print_kills.fetch_add(1, Ordering::SeqCst);
                            debug!(conn, "print received; killing the session (kill-on-print fault)");
                            break 'conn false;
                        }
                        Ok(req) if req.path == b"/cancel" && logged_in.load(Ordering::Acquire) => {
                            let done = Replier::new(req.tag.clone()).done();
                            if let Some(done) = cancel(&running, &req, done) {
                                let _ = out_tx.send(batch(&shared, arrived, vec![done]));
                            }
                            None
                        }
                        Ok(req) => {
                            seq += 1;
                            let (flag, cancel) = watch::channel(false);
                            let cmd = RunningCmd { tag: req.tag.clone(), cancel: flag, acks: Vec::new() };
                            lock(&running).insert(seq, cmd);
                            Some(Queued { req, seq, arrived, cancel, drop_after })
                        }
                    };
                    if drop_after {
                        reading = false;
                        match queued {
                            Some(q) => { let _ = cmd_tx.send(q); }
                            None => drop_now.notify_one(),
                        }
                        break;
                    }
                    if let Some(q) = queued {
                        let _ = cmd_tx.send(q);
                    }
                }
            }
            _ = kill.changed() => break 'conn false,
            res = desync.changed() => {
                if res.is_err() {
                    break 'conn false;
                }
                let _ = out_tx.send(Out::Desync);
            }
            _ = stop.changed() => break 'conn false,
            _ = &mut writer => break 'conn false,
            _ = drop_now.notified() => break 'conn false,
        }
    };
    if graceful {
        // The client closed its side: let queued replies go out (bounded), then close.
        drop(cmd_tx);
        drop(out_tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
    }
    executor.abort();
    writer.abort();
    let ended = lock(&login).take();
    if let Some(rec) = ended {
        cmd::login::logout(&shared, &rec);
    }
    debug!(conn, graceful, "connection closed");
}

fn batch(shared: &Shared, arrived: Instant, sentences: Vec<Sentence>) -> Out {
    Out::Batch {
        at: arrived + shared.config.cost.latency,
        sentences,
    }
}

/// `/cancel`: flags the command with `=tag=X`, or every running command without it (§5).
///
/// The `/cancel`'s own `!done` goes out between the cancelled command's `!trap` and its
/// `!done`, as recorded (librouteros `docs/api_analysis.rst`, "Canceling listen": `!trap
/// .tag=10 … interrupted`, `!done .tag=20`, `!done .tag=10`; "Canceling fetch" likewise with an
/// untagged `/cancel`): it is handed to the targets, and the first one to end sends it. With no
/// target it is returned to send at once (cancelling an unknown or finished tag just gets
/// `!done`, **unverified**).
fn cancel(running: &Running, req: &Request, done: Sentence) -> Option<Sentence> {
    let target = req.attributes.get("tag");
    let ack: CancelAck = Arc::new(Mutex::new(Some(done)));
    let mut hit = false;
    for cmd in lock(running).values_mut() {
        if target.is_none_or(|t| cmd.tag.as_deref() == Some(t)) {
            cmd.cancel.send_replace(true);
            cmd.acks.push(ack.clone());
            hit = true;
        }
    }
    if hit { None } else { lock(&ack).take() }
}

/// Forgets a finished command; returns the `/cancel` `!done`s it still has to send.
fn finish(running: &Running, seq: u64) -> Vec<Sentence> {
    let Some(cmd) = lock(running).remove(&seq) else {
        return Vec::new();
    };
    cmd.acks.iter().filter_map(|a| lock(a).take()).collect()
}

/// `!trap interrupted`, the pending `/cancel` `!done`s, `!empty` (streams on 7.18+, §3
/// [WIRE-7.24]), then `!done`.
fn interrupted_end(
    shared: &Shared,
    r: &Replier,
    running: &Running,
    seq: u64,
    stream: bool,
) -> Vec<Sentence> {
    let mut end = vec![r.trap(&Trap::interrupted())];
    end.extend(finish(running, seq));
    if stream && shared.version.has_empty() {
        end.push(r.empty());
    }
    end.push(r.done());
    end
}

#[allow(clippy::too_many_arguments)]
async fn executor(
    shared: Arc<Shared>,
    peer: IpAddr,
    mut cmds: mpsc::UnboundedReceiver<Queued>,
    out: mpsc::UnboundedSender<Out>,
    running: Running,
    logged_in: Arc<AtomicBool>,
    login: LoginSlot,
    drop_now: Arc<Notify>,
) {
    let mut session = Session {
        peer: Some(peer),
        ..Session::default()
    };
    let mut streams = JoinSet::new();
    let mut stall = shared.stall.subscribe();
    let kill = shared.kill.subscribe();
    let per_write = shared.config.cost.per_write;
    while let Some(q) = cmds.recv().await {
        let Queued {
            req,
            seq,
            arrived,
            mut cancel,
            drop_after,
        } = q;
        let r = Replier::new(req.tag.clone()).with_codes(shared.config.trap_codes);
        let cancelled = |c: &watch::Receiver<bool>| *c.borrow();
        let outcome: Option<Outcome> = 'run: {
            if *stall.borrow() {
                tokio::select! {
                    _ = stall.wait_for(|s| !*s) => {}
                    _ = cancel.wait_for(|c| *c) => break 'run None,
                }
            }
            if cancelled(&cancel) {
                break 'run None;
            }
            let _cpu = if session.logged_in() && cmd::is_write(&req.path) {
                let mut guard = tokio::select! {
                    g = shared.cpu.lock() => g,
                    _ = cancel.wait_for(|c| *c) => break 'run None,
                };
                if !per_write.is_zero() {
                    // A work-conserving queue in model time: the write starts when it arrived or
                    // when the previous one finished, whichever is later. Sleeping `per_write`
                    // from "now" instead would add tokio's millisecond timer rounding to every
                    // write, and a 1 ms cost would cost 1.5-2 ms.
                    let start = guard.map_or(arrived, |free| free.max(arrived));
                    let done = start + per_write;
                    tokio::select! {
                        _ = tokio::time::sleep_until(done) => {}
                        _ = cancel.wait_for(|c| *c) => break 'run None,
                    }
                    *guard = Some(done);
                }
                Some(guard)
            } else {
                None
            };
            if kill.has_changed().unwrap_or(true) {
                // Killed (a reboot, `kill_connections`): what was read but not yet run is lost
                // with the connection, as on a real router. The connection task ends us.
                std::future::pending::<()>().await;
            }
            Some(cmd::execute(&shared, &mut session, &req))
        };
        logged_in.store(session.logged_in(), Ordering::Release);
        if session.login.is_some() {
            let mut slot = lock(&login);
            if slot.is_none() {
                *slot = session.login.clone();
            }
        }
        let mut close = false;
        match outcome {
            None => {
                let end = interrupted_end(&shared, &r, &running, seq, false);
                let _ = out.send(batch(&shared, arrived, end));
            }
            Some(Outcome::Reply(mut s)) => {
                s.extend(finish(&running, seq));
                let _ = out.send(batch(&shared, arrived, s));
            }
            Some(Outcome::Close(mut s, delay)) => {
                s.extend(finish(&running, seq));
                let _ = out.send(batch(&shared, arrived, s));
                let _ = out.send(Out::Close { delay });
                close = true;
            }
            Some(Outcome::Hostile(hostile, initial)) => {
                while streams.try_join_next().is_some() {}
                if streams.len() >= MAX_STREAMS {
                    let trap = Trap::new(Some(category::API), "too many running commands");
                    let mut s = r.trap_done(&trap);
                    s.extend(finish(&running, seq));
                    let _ = out.send(batch(&shared, arrived, s));
                } else {
                    if !initial.is_empty() {
                        let _ = out.send(batch(&shared, arrived, initial));
                    }
                    streams.spawn(run_hostile(
                        shared.clone(),
                        hostile,
                        cancel,
                        out.clone(),
                        running.clone(),
                        seq,
                    ));
                }
            }
            Some(Outcome::Follow(stream, initial)) => {
                while streams.try_join_next().is_some() {}
                if streams.len() >= MAX_STREAMS {
                    let trap = Trap::new(Some(category::API), "too many running commands");
                    let mut s = r.trap_done(&trap);
                    s.extend(finish(&running, seq));
                    let _ = out.send(batch(&shared, arrived, s));
                } else {
                    let _ = out.send(batch(&shared, arrived, initial));
                    streams.spawn(run_stream(
                        shared.clone(),
                        stream,
                        cancel,
                        out.clone(),
                        running.clone(),
                        seq,
                    ));
                }
            }
        }
        if drop_after {
            drop_now.notify_one();
            std::future::pending::<()>().await;
        }
        if close {
            // Nothing after `!fatal` or a failed login is executed.
            std::future::pending::<()>().await;
        }
    }
    // Input ended: streams die with the connection.
    streams.abort_all();
}

/// A stream (`print =follow=`, `=follow-only=`, `listen`): sends changes until cancelled; then
/// `!trap interrupted`, the `/cancel`'s `!done`, `!empty` (7.18+), `!done` ([`interrupted_end`]).
///
/// It wakes when its table changes, when the sim clock is advanced, and (real-time clock) when
/// the next address-list entry expires, so an expiry shows as `.dead` without waiting for an
/// unrelated change.
async fn run_stream(
    shared: Arc<Shared>,
    mut stream: cmd::print::Stream,
    mut cancel: watch::Receiver<bool>,
    out: mpsc::UnboundedSender<Out>,
    running: Running,
    seq: u64,
) {
    let mut changes = shared.changes.subscribe();
    let mut gens = *changes.borrow_and_update();
    let mut advances = shared.clock.advances();
    advances.mark_unchanged();
    loop {
        let expiry = stream
            .next_deadline(&shared)
            .and_then(|at| shared.clock.until(at))
            .map(|wait| Instant::now() + wait);
        tokio::select! {
            _ = cancel.wait_for(|c| *c) => break,
            res = changes.changed() => {
                if res.is_err() {
                    return;
                }
                let now = *changes.borrow_and_update();
                let news = stream.woken_by(&gens, &now);
                gens = now;
                if !news {
                    continue;
                }
            }
            res = advances.changed() => if res.is_err() { return },
            _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {}
        }
        let rows = stream.poll(&shared);
        if !rows.is_empty() {
            let _ = out.send(batch(&shared, Instant::now(), rows));
        }
    }
    let end = interrupted_end(&shared, &stream.replier, &running, seq, true);
    let _ = out.send(batch(&shared, Instant::now(), end));
}

/// Rows per batch of an endless hostile print.
const HOSTILE_BATCH: usize = 256;
/// Batches of a hostile print that may wait for the socket at once.
const HOSTILE_IN_FLIGHT: usize = 2;

/// A hostile print ([`crate::Faults::hostile_print`]): invented rows until `/cancel` (then
/// `!trap interrupted`, the `/cancel`'s `!done`, `!done`) or the end of the connection. Never
/// `!done` on its own. Paced by the writer: a batch is made only when one of the
/// [`HOSTILE_IN_FLIGHT`] slots is free.
async fn run_hostile(
    shared: Arc<Shared>,
    hostile: cmd::print::Hostile,
    mut cancel: watch::Receiver<bool>,
    out: mpsc::UnboundedSender<Out>,
    running: Running,
    seq: u64,
) {
    let slots = Arc::new(Semaphore::new(HOSTILE_IN_FLIGHT));
    let every = hostile.fault.every;
    let per_batch = if every.is_zero() { HOSTILE_BATCH } else { 1 };
    loop {
        let permit = tokio::select! {
            _ = cancel.wait_for(|c| *c) => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let sentences = hostile.rows(&shared, per_batch);
        if out
            .send(Out::Paced {
                sentences,
                _permit: permit,
            })
            .is_err()
        {
            return;
        }
        if !every.is_zero() {
            tokio::select! {
                _ = cancel.wait_for(|c| *c) => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
    let end = interrupted_end(&shared, &hostile.replier, &running, seq, false);
    let _ = out.send(batch(&shared, Instant::now(), end));
}

async fn writer<W: AsyncWrite>(
    shared: Arc<Shared>,
    conn: u64,
    wr: tokio::io::WriteHalf<W>,
    mut rx: mpsc::UnboundedReceiver<Out>,
) {
    let mut wr = wr;
    let mut stall = shared.stall.subscribe();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut next = rx.recv().await;
    // After [`Out::Desync`]: nothing more goes out.
    let mut silent = false;
    while let Some(out) = next.take() {
        if silent {
            if let Out::Close { delay } = out {
                tokio::time::sleep(delay).await;
                let _ = wr.shutdown().await;
                return;
            }
            // Dropped unwritten; a hostile print's permit goes back with it.
            next = rx.recv().await;
            continue;
        }
        match out {
            Out::Desync => {
                buf.clear();
                routeros_proto::length::encode_len(crate::sim::DESYNC_WORD, &mut buf);
                if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
                shared.hostile.desynced.fetch_add(1, Ordering::SeqCst);
                debug!(
                    conn,
                    "desynchronised: a word was opened and nothing more will be sent"
                );
                silent = true;
            }
            Out::Paced { sentences, _permit } => {
                let _ = stall.wait_for(|s| !*s).await;
                buf.clear();
                for s in &sentences {
                    s.encode(&mut buf);
                }
                if wr.write_all(&buf).await.is_err() {
                    return;
                }
            }
            Out::Batch { at, sentences } => {
                tokio::time::sleep_until(at).await;
                let _ = stall.wait_for(|s| !*s).await;
                buf.clear();
                let mut encode = |sentences: &[Sentence]| {
                    for s in sentences {
                        shared.record(conn, Direction::Out, s.words());
                        s.encode(&mut buf);
                    }
                };
                encode(&sentences);
                // Coalesce replies that are already due into one write.
                while let Ok(more) = rx.try_recv() {
                    match more {
                        Out::Batch { at, sentences } if at <= Instant::now() => encode(&sentences),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                if wr.write_all(&buf).await.is_err() {
                    return;
                }
            }
            Out::Close { delay } => {
                let _ = wr.flush().await;
                tokio::time::sleep(delay).await;
                let _ = wr.shutdown().await;
                return;
            }
        }
        if next.is_none() {
            next = rx.recv().await;
        }
    }
}
