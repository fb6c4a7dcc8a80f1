//! The LAPI task: polls and usage-metrics pushes run here, beside the router work, so a stalled
//! LAPI never holds up expiry, refreshes, reconnects or reconciles.

use std::time::{Duration, Instant};

use crowdsec_lapi::{LapiClient, LapiError, MetricsOutcome, UsageMetrics};
use tokio::sync::mpsc;

use crate::supervisor::{Event, Failure, FailureKind};

/// Deadline of one usage-metrics push (go-cs-bouncer uses 10 s, `docs/reference/crowdsec-lapi.md` §8).
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Work for the LAPI task.
#[derive(Debug)]
pub enum Request {
    /// Poll the stream by `deadline`.
    Poll {
        /// Ask for a snapshot.
        startup: bool,
        /// Stream the snapshot into a fresh cache.
        fresh: bool,
        /// Overall deadline.
        deadline: Instant,
    },
    /// Push usage metrics.
    Push(UsageMetrics),
}

/// Starts the task; its answers arrive on `events`.
pub fn spawn(client: LapiClient, events: mpsc::Sender<Event>) -> mpsc::Sender<Request> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(run(client, rx, events));
    tx
}

async fn run(
    mut client: LapiClient,
    mut requests: mpsc::Receiver<Request>,
    events: mpsc::Sender<Event>,
) {
    while let Some(request) = requests.recv().await {
        let event = match request {
            Request::Poll {
                fresh: true,
                deadline,
                ..
            } => {
                let budget = deadline.saturating_duration_since(Instant::now());
                let result = client
                    .poll_snapshot(deadline.into())
                    .await
                    .map(|(cache, stats)| (Box::new(cache), stats))
                    .map_err(|e| poll_failure(e, budget));
                Event::Snapshot(result)
            }
            Request::Poll {
                startup, deadline, ..
            } => {
                if startup {
                    client.force_startup();
                }
                let budget = deadline.saturating_duration_since(Instant::now());
                let result = client
                    .poll(deadline.into())
                    .await
                    .map_err(|e| poll_failure(e, budget));
                Event::Polled(result)
            }
            Request::Push(payload) => {
                let result =
                    tokio::time::timeout(PUSH_TIMEOUT, client.push_usage_metrics(&payload)).await;
                Event::UsagePushed(match result {
                    Ok(Ok(MetricsOutcome::Unsupported)) => Ok(false),
                    Ok(Ok(_)) => Ok(true),
                    Ok(Err(e)) => Err(failure(&e)),
                    Err(_) => Err(Failure::new(
                        FailureKind::Timeout,
                        format!("no answer within {PUSH_TIMEOUT:?}"),
                    )),
                })
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

fn poll_failure(e: LapiError, budget: std::time::Duration) -> Failure {
    match e {
        LapiError::Timeout { .. } | LapiError::Deadline { .. } => Failure::new(
            FailureKind::Timeout,
            format!("no complete response within {budget:?} (CROWDSEC_POLL_TIMEOUT): {e}"),
        ),
        e => failure(&e),
    }
}

fn failure(e: &LapiError) -> Failure {
    let kind = if e.is_auth() {
        FailureKind::Auth
    } else {
        FailureKind::Refused
    };
    Failure::new(kind, e.to_string())
}
