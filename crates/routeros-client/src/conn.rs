//! The connection driver: one task per connection that owns the socket.
//!
//! ```text
//!  Client handles ──Msg (unbounded mpsc)──▶ Driver ──encode──▶ out buffer ──write/flush──▶ socket
//!                                              ▲
//!  socket ──read──▶ Decoder ──Sentence──▶ Mux ──Event──▶ Slot sink: oneshot (execute),
//!                                                         bounded mpsc (stream), ack, discard
//! ```
//!
//! The task never blocks on one thing: reading, writing, flushing, taking new commands and
//! delivering to a full stream channel are branches of one `select!`, all cancel-safe. When a
//! [`crate::RowStream`] consumer falls behind, the driver stops *reading* the socket (so TCP
//! pushes back on the router) but keeps writing, and keeps taking `/cancel`s.
//!
//! When the connection ends for any reason the driver records the [`LostReason`] in [`Shared`]
//! *before* dropping every sink, so a waiter that sees its channel close reports that reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use routeros_proto::{Attributes, Command, Decoder, Limits, Sentence};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::error::{Error, LostReason};
use crate::mux::{Event, Kind, Mux, MuxStats, Tag, Traps};
use crate::response::Response;

/// Size of one socket read.
const READ_CHUNK: usize = 16 * 1024;
/// Queued commands are encoded into one write until this many bytes are pending.
const COALESCE_BYTES: usize = 64 * 1024;
/// How long closing waits for the peer to take a TLS `close_notify` / FIN.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// State shared by the handles and the driver.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Why the connection ended; set once, before any sink is dropped.
    close_reason: OnceLock<LostReason>,
    closed: AtomicBool,
    /// `window` permits: one per caller command in flight.
    pub(crate) window: Arc<Semaphore>,
    /// A mutex, not an `AtomicU64`: ARMv5 (armv5te, EN7562CT routers) has no 64-bit atomics.
    next_tag: Mutex<u64>,
    stats: Mutex<MuxStats>,
}

impl Shared {
    pub(crate) fn new(window: usize) -> Self {
        Self {
            close_reason: OnceLock::new(),
            closed: AtomicBool::new(false),
            window: Arc::new(Semaphore::new(window)),
            next_tag: Mutex::new(1),
            stats: Mutex::new(MuxStats::default()),
        }
    }

    /// A fresh tag; tags are never reused on a connection.
    pub(crate) fn next_tag(&self) -> Tag {
        // The counter cannot be left half-updated, so a poisoned lock is still correct.
        let mut next = self.next_tag.lock().unwrap_or_else(|p| p.into_inner());
        let tag = *next;
        *next += 1;
        tag
    }

    /// The error for a waiter whose channel closed.
    pub(crate) fn lost(&self) -> Error {
        Error::lost(
            self.close_reason
                .get()
                .cloned()
                .unwrap_or(LostReason::DriverGone),
        )
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn stats(&self) -> MuxStats {
        // A poisoned lock only means a panic elsewhere; the counters are still meaningful.
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request from a handle to the driver.
pub(crate) enum Msg {
    /// Register `tag` and write `command` (already tagged).
    Send {
        tag: Tag,
        command: Command,
        kind: Kind,
        sink: Sink,
        /// Held until the command completes or is abandoned.
        permit: Option<OwnedSemaphorePermit>,
    },
    /// The caller no longer waits for `tag`: free its slot, drop its late sentences and send
    /// `/cancel`. `ack` resolves when the router confirms the `/cancel`.
    Abandon {
        tag: Tag,
        ack: Option<oneshot::Sender<Result<(), Error>>>,
    },
    /// Send `/quit` and close once the router's `!fatal` (or EOF) arrives.
    Quit { tag: Tag, ack: oneshot::Sender<()> },
    /// Close now.
    Shutdown,
}

/// Where a command's replies go.
pub(crate) enum Sink {
    /// Rows collected here; the whole response goes out at `!done` ([`crate::Client::execute`]).
    Collect {
        rows: Vec<Attributes>,
        tx: oneshot::Sender<Result<Response, Error>>,
    },
    /// Rows as they arrive, through a bounded channel ([`crate::Client::stream`]).
    Stream { tx: mpsc::Sender<StreamItem> },
    /// Only the outcome matters (`/cancel` from [`crate::RowStream::cancel`]).
    Ack(oneshot::Sender<Result<(), Error>>),
    /// Nobody waits (`/cancel` after a timeout, `/quit`).
    Discard,
}

/// What a stream channel carries.
pub(crate) type StreamItem = Result<StreamEvent, Error>;

/// One step of a streamed command.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    Row(Attributes),
    Done(Attributes),
}

struct Slot {
    sink: Sink,
    _permit: Option<OwnedSemaphorePermit>,
}

/// A stream item that did not fit in its channel; the driver waits for room before decoding
/// further.
struct Blocked {
    tag: Tag,
    tx: mpsc::Sender<StreamItem>,
    item: StreamItem,
}

/// Starts the driver task for `io` and returns the channel to it.
pub(crate) fn spawn<S>(
    io: S,
    window: usize,
    limits: Limits,
    shared: Arc<Shared>,
) -> mpsc::UnboundedSender<Msg>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let (reader, writer) = tokio::io::split(io);
    let driver = Driver {
        reader,
        writer,
        rx,
        decoder: Decoder::new(limits),
        mux: Mux::new(window),
        slots: HashMap::new(),
        blocked: None,
        out: Vec::new(),
        out_pos: 0,
        need_flush: false,
        quit_ack: None,
        shared,
    };
    tokio::spawn(driver.run());
    tx
}

struct Driver<S> {
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    rx: mpsc::UnboundedReceiver<Msg>,
    decoder: Decoder,
    mux: Mux,
    slots: HashMap<Tag, Slot>,
    blocked: Option<Blocked>,
    /// Encoded commands not yet written; `out[out_pos..]` is pending.
    out: Vec<u8>,
    out_pos: usize,
    need_flush: bool,
    quit_ack: Option<oneshot::Sender<()>>,
    shared: Arc<Shared>,
}

// === impl Driver ===

impl<S: AsyncRead + AsyncWrite + Send + 'static> Driver<S> {
    async fn run(mut self) {
        let reason = self.run_loop().await;
        tracing::debug!(%reason, "RouterOS connection closed");
        // Record the reason first: waiters read it when their channel closes.
        let _ = self.shared.close_reason.set(reason);
        self.shared.closed.store(true, Ordering::Release);
        self.shared.window.close();
        self.mux.fail_all();
        self.publish_stats();
        self.blocked = None;
        self.slots.clear();
        self.rx.close();
        while self.rx.try_recv().is_ok() {}
        if let Some(ack) = self.quit_ack.take() {
            let _ = ack.send(());
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.writer.shutdown()).await;
    }

    async fn run_loop(&mut self) -> LostReason {
        let mut rbuf = vec![0u8; READ_CHUNK];
        loop {
            if let Err(reason) = self.drain_decoder() {
                return reason;
            }
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    // Every handle is gone: nobody can use the connection any more.
                    None => return LostReason::Closed,
                    Some(Msg::Shutdown) => return LostReason::Closed,
                    Some(msg) => {
                        self.on_msg(msg);
                        // Take what else is queued before writing: a pipeline that refills its
                        // window sends its commands in one write, not one syscall each.
                        while self.out.len() - self.out_pos < COALESCE_BYTES {
                            match self.rx.try_recv() {
                                Ok(Msg::Shutdown) => return LostReason::Closed,
                                Ok(msg) => self.on_msg(msg),
                                Err(_) => break,
                            }
                        }
                    }
                },
                permit = reserve(self.blocked.as_ref()) => {
                    if let Some(b) = self.blocked.take() {
                        match permit {
                            Ok(permit) => { permit.send(b.item); }
                            // The consumer went away: stop its command.
                            Err(_) => self.abandon(b.tag, None),
                        }
                    }
                }
                read = self.reader.read(&mut rbuf), if self.blocked.is_none() => match read {
                    Ok(0) => {
                        return if self.quit_ack.is_some() { LostReason::Closed } else { LostReason::Eof };
                    }
                    Ok(n) => self.decoder.feed(&rbuf[..n]),
                    Err(e) => return LostReason::Io(Arc::new(e)),
                },
                step = write_or_flush(&mut self.writer, &self.out[self.out_pos..]),
                    if self.out_pos < self.out.len() || self.need_flush =>
                {
                    match step {
                        Ok(WriteStep::Wrote(0)) => return LostReason::Eof,
                        Ok(WriteStep::Wrote(n)) => {
                            self.out_pos += n;
                            self.need_flush = true;
                            if self.out_pos == self.out.len() {
                                self.out.clear();
                                self.out_pos = 0;
                            }
                        }
                        Ok(WriteStep::Flushed) => self.need_flush = false,
                        Err(e) => return LostReason::Io(Arc::new(e)),
                    }
                }
            }
        }
    }

    /// Routes every complete sentence, unless a stream channel is full.
    fn drain_decoder(&mut self) -> Result<(), LostReason> {
        let mut any = false;
        let result = loop {
            if self.blocked.is_some() {
                break Ok(());
            }
            match self.decoder.poll_sentence() {
                Ok(Some(sentence)) => {
                    any = true;
                    if let Err(reason) = self.on_sentence(&sentence) {
                        break Err(reason);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(LostReason::Decode(e)),
            }
        };
        if any {
            self.publish_stats();
        }
        result
    }

    fn publish_stats(&self) {
        *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner()) = self.mux.stats();
    }

    fn on_sentence(&mut self, sentence: &Sentence) -> Result<(), LostReason> {
        let event = self
            .mux
            .handle_sentence(sentence)
            .map_err(LostReason::Protocol)?;
        match event {
            None => {}
            Some(Event::Row { tag, row }) => match self.slots.get_mut(&tag) {
                Some(Slot {
                    sink: Sink::Collect { rows, .. },
                    ..
                }) => rows.push(row),
                Some(Slot {
                    sink: Sink::Stream { tx },
                    ..
                }) => {
                    let tx = tx.clone();
                    self.deliver(tag, tx, Ok(StreamEvent::Row(row)));
                }
                // `/cancel` and `/quit` have no rows worth keeping.
                _ => {}
            },
            Some(Event::Done { tag, outcome, .. }) => {
                if let Some(slot) = self.slots.remove(&tag) {
                    self.complete(tag, slot, outcome);
                }
            }
            Some(Event::Fatal { reason, .. }) => {
                return Err(if self.quit_ack.is_some() {
                    if reason != "session terminated on request" {
                        tracing::debug!(%reason, "unexpected !fatal reason after /quit");
                    }
                    LostReason::Closed
                } else {
                    LostReason::Fatal(reason)
                });
            }
        }
        Ok(())
    }

    fn complete(&mut self, tag: Tag, slot: Slot, outcome: Result<Attributes, Traps>) {
        match slot.sink {
            Sink::Collect { rows, tx } => {
                let _ = tx.send(
                    outcome
                        .map(|done| Response { rows, done })
                        .map_err(Error::from_traps),
                );
            }
            Sink::Stream { tx } => {
                let item = outcome.map(StreamEvent::Done).map_err(Error::from_traps);
                self.deliver(tag, tx, item);
            }
            Sink::Ack(tx) => {
                let _ = tx.send(outcome.map(|_| ()).map_err(Error::from_traps));
            }
            Sink::Discard => {}
        }
        // `slot._permit` drops here: the window slot is free.
    }

    /// Hands a stream item over, or parks it until the consumer makes room.
    fn deliver(&mut self, tag: Tag, tx: mpsc::Sender<StreamItem>, item: StreamItem) {
        match tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(item)) => self.blocked = Some(Blocked { tag, tx, item }),
            Err(TrySendError::Closed(_)) => self.abandon(tag, None),
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Send {
                tag,
                command,
                kind,
                sink,
                permit,
            } => {
                if let Err(e) = self.mux.register(tag, kind) {
                    // Unreachable while permits match the window; the waiter sees a closed
                    // channel.
                    tracing::error!(tag, error = %e, "cannot register command");
                    return;
                }
                tracing::trace!(tag, path = %routeros_proto::lossy(command.path()), "sending");
                command.encode(&mut self.out);
                self.slots.insert(
                    tag,
                    Slot {
                        sink,
                        _permit: permit,
                    },
                );
            }
            Msg::Abandon { tag, ack } => self.abandon(tag, ack),
            Msg::Quit { tag, ack } => {
                self.quit_ack = Some(ack);
                self.send_internal(tag, "/quit", None, Sink::Discard);
            }
            // Handled by the loop.
            Msg::Shutdown => {}
        }
    }

    /// Stops waiting for `tag`: frees its slot, drops its late sentences, and cancels it on the
    /// router (`docs/reference/routeros-api.md` §5).
    fn abandon(&mut self, tag: Tag, ack: Option<oneshot::Sender<Result<(), Error>>>) {
        if self.blocked.as_ref().is_some_and(|b| b.tag == tag) {
            self.blocked = None;
        }
        let was_running = self.slots.remove(&tag).is_some();
        if was_running && self.mux.cancel(tag) {
            tracing::debug!(tag, "cancelling abandoned command");
            let cancel_tag = self.shared.next_tag();
            let sink = ack.map_or(Sink::Discard, Sink::Ack);
            self.send_internal(cancel_tag, "/cancel", Some(tag), sink);
        } else if let Some(ack) = ack {
            // Already finished: nothing to cancel.
            let _ = ack.send(Ok(()));
        }
    }

    fn send_internal(&mut self, tag: Tag, path: &str, cancel: Option<Tag>, sink: Sink) {
        let mut builder = Command::builder(path);
        if let Some(target) = cancel {
            builder = builder.attr("tag", target.to_string());
        }
        let command = match builder.tag(tag.to_string()).build() {
            Ok(c) => c,
            Err(e) => {
                // Fixed paths and numeric tags always build.
                tracing::error!(error = %e, path, "cannot build internal command");
                return;
            }
        };
        if self.mux.register(tag, Kind::Internal).is_err() {
            return;
        }
        command.encode(&mut self.out);
        self.slots.insert(
            tag,
            Slot {
                sink,
                _permit: None,
            },
        );
    }
}

enum WriteStep {
    Wrote(usize),
    Flushed,
}

/// Writes what is pending, or flushes once everything is written (TLS buffers inside rustls).
/// Cancel-safe: a cancelled `write` wrote nothing, a cancelled `flush` is simply retried.
async fn write_or_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    pending: &[u8],
) -> std::io::Result<WriteStep> {
    if pending.is_empty() {
        writer.flush().await.map(|()| WriteStep::Flushed)
    } else {
        writer.write(pending).await.map(WriteStep::Wrote)
    }
}

/// Waits for room in the blocked stream's channel; never completes when nothing is blocked.
async fn reserve(
    blocked: Option<&Blocked>,
) -> Result<mpsc::OwnedPermit<StreamItem>, mpsc::error::SendError<()>> {
    match blocked {
        Some(b) => b.tx.clone().reserve_owned().await,
        None => std::future::pending().await,
    }
}
