//! Guard's I/O (`docs/guard.md`): the log follower, a second API session that streams the
//! router's log, and the watcher task that shares guard's bans with LAPI. Everything they see
//! goes to the supervisor as events; the detectors and the bans live there.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crowdsec_lapi::{Alert, AllowlistAnswer, Value, Watcher, WatcherConfig};
use routeros_client::{Client, ClientConfig, Command};
use tokio::sync::mpsc;

use crate::backoff::Backoff;
use crate::supervisor::guard::LogRow;
use crate::supervisor::{Event, Failure, FailureKind};

/// Newest rows of the recent buffer read after a (re)connect. The default memory log keeps
/// 1000 lines; a router configured for more (up to 65535) is read and the oldest dropped.
const BACKFILL_ROWS: usize = 2000;
/// Live rows handed to the supervisor at once at most (they are sent as soon as they arrive).
const LIVE_BATCH: usize = 256;
/// A follower connection that streamed this long resets the reconnect backoff.
const PROVEN: Duration = Duration::from_secs(60);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn log_row(attrs: &routeros_client::Attributes) -> LogRow {
    let text = |k| {
        attrs
            .get_lossy(k)
            .map(|v| v.into_owned())
            .unwrap_or_default()
    };
    LogRow {
        id: attrs
            .get_str(".id")
            .and_then(|i| i.strip_prefix('*'))
            .and_then(|h| u32::from_str_radix(h, 16).ok()),
        time: text("time"),
        topics: text("topics"),
        message: text("message"),
    }
}

fn log_print(follow: bool) -> Result<Command, routeros_client::CommandError> {
    let b = Command::builder("/log/print").proplist(&[".id", "time", "topics", "message"]);
    if follow { b.flag("follow-only") } else { b }.build()
}

/// Follows the router's log for guard until the supervisor's channel closes: connect, read the
/// recent buffer (so an attack in progress is caught), then stream new entries; reconnect with
/// backoff on any failure. Its own API session: a stalled log never holds up the writer.
pub async fn follow_log(config: ClientConfig, events: mpsc::Sender<Event>) {
    let mut backoff = match Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 0.3) {
        Ok(b) => b,
        // 0 < 1 s <= 60 s and a jitter within 0..=1: these constants are valid.
        Err(_) => unreachable!("constant backoff parameters are valid"),
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
    let mut first_failure = true;
    loop {
        let started = Instant::now();
        let result = follow_once(&config, &events).await;
        if events.send(Event::LogFollower(false)).await.is_err() {
            return;
        }
        if started.elapsed() >= PROVEN {
            backoff.reset();
        }
        let delay = backoff.next_delay(&mut rng);
        match result {
            Ok(()) => return, // the supervisor is gone
            Err(cause) if first_failure => {
                let hint = crate::supervisor::policy_hint(&cause);
                tracing::warn!(cause = %cause, retry_in = ?delay, "guard cannot follow the router log (/log/print); retrying{hint}");
                first_failure = false;
            }
            Err(cause) => {
                tracing::debug!(cause = %cause, retry_in = ?delay, "guard log follower failed again")
            }
        }
        tokio::time::sleep(delay).await;
    }
}

/// One session; `Ok` only when the supervisor's channel closed.
async fn follow_once(config: &ClientConfig, events: &mpsc::Sender<Event>) -> Result<(), String> {
    let client = Client::connect(config.clone())
        .await
        .map_err(|e| e.to_string())?;
    if events.send(Event::LogFollower(true)).await.is_err() {
        return Ok(());
    }
    // The recent buffer, newest rows only.
    let cmd = log_print(false).map_err(|e| e.to_string())?;
    let mut rows = client.stream(cmd).await.map_err(|e| e.to_string())?;
    let mut backfill = std::collections::VecDeque::with_capacity(BACKFILL_ROWS);
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| e.to_string())?;
        if backfill.len() == BACKFILL_ROWS {
            backfill.pop_front();
        }
        backfill.push_back(log_row(&row));
    }
    let event = Event::Log {
        rows: backfill.into(),
        backfill: true,
        now_ms: now_ms(),
    };
    if events.send(event).await.is_err() {
        return Ok(());
    }
    // Then every new entry as it comes. The stream is silent while nothing is logged: no
    // timeout; a dead connection ends it with an error.
    let cmd = log_print(true).map_err(|e| e.to_string())?;
    let mut rows = client.stream(cmd).await.map_err(|e| e.to_string())?;
    rows.set_timeout(None);
    loop {
        let Some(row) = rows.next().await else {
            return Err("the log stream ended".into());
        };
        let mut batch = vec![log_row(&row.map_err(|e| e.to_string())?)];
        // Whatever else is already waiting goes in the same event.
        while batch.len() < LIVE_BATCH {
            match tokio::time::timeout(Duration::ZERO, rows.next()).await {
                Ok(Some(Ok(row))) => batch.push(log_row(&row)),
                Ok(Some(Err(e))) => return Err(e.to_string()),
                Ok(None) => return Err("the log stream ended".into()),
                Err(_) => break,
            }
        }
        let event = Event::Log {
            rows: batch,
            backfill: false,
            now_ms: now_ms(),
        };
        if events.send(event).await.is_err() {
            return Ok(());
        }
    }
}

/// Clock difference with LAPI, in seconds, above which the watcher warns (once): a shared ban's
/// duration counts from the alert's time (`docs/reference/crowdsec-lapi.md` §10).
const CLOCK_SKEW_WARN: i64 = 60;

/// The watcher task: logs in as the configured machine, checks each alert's source against
/// LAPI's allowlists (1.6.6+; 1.4.6 has none, and the question is not asked again), and pushes
/// the alerts. Answers arrive as [`Event::AlertsPushed`] and [`Event::LapiAllowlisted`].
pub fn spawn_watcher(
    config: WatcherConfig,
    events: mpsc::Sender<Event>,
) -> Result<mpsc::Sender<Vec<Alert>>, String> {
    let mut watcher = Watcher::new(config).map_err(|e| e.to_string())?;
    let (tx, mut rx) = mpsc::channel::<Vec<Alert>>(2);
    tokio::spawn(async move {
        let mut clock_warned = false;
        while let Some(alerts) = rx.recv().await {
            let mut keep = Vec::with_capacity(alerts.len());
            for alert in alerts {
                let ip = alert.source.value.parse::<std::net::IpAddr>().ok();
                if let Some(ip) = ip {
                    let deadline = watcher.default_deadline();
                    if let Ok(AllowlistAnswer::Allowlisted { reason }) =
                        watcher.allowlist_check(ip, deadline).await
                    {
                        let _ = events
                            .send(Event::LapiAllowlisted(Value::from_ip(ip), reason))
                            .await;
                        continue;
                    }
                }
                keep.push(alert);
            }
            let result = if keep.is_empty() {
                Ok(())
            } else {
                let deadline = watcher.default_deadline();
                watcher
                    .push_alerts(&keep, deadline)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        let kind = if e.is_retryable() {
                            FailureKind::Timeout
                        } else {
                            FailureKind::Refused
                        };
                        Failure::new(kind, e.to_string())
                    })
            };
            if let Some(offset) = watcher.clock_offset().filter(|o| o.abs() > CLOCK_SKEW_WARN) {
                if !clock_warned {
                    clock_warned = true;
                    tracing::warn!(
                        lapi_ahead_by_s = offset,
                        "this router's clock and LAPI's differ: LAPI counts a shared ban from the \
                         alert's time, so shared bans end early or late; set up NTP on the router \
                         (/system/ntp/client)"
                    );
                }
            }
            if events.send(Event::AlertsPushed(result)).await.is_err() {
                return;
            }
        }
    });
    Ok(tx)
}
