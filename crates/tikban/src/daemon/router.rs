//! Router jobs: each action that talks to the router runs as one task, which reports what it saw
//! as [`RouterEvent`]s. The supervisor owns every deadline; the daemon aborts a job it gives up
//! on.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures_util::StreamExt;
use routeros_client::{Client, ClientConfig, Command, Error as RouterError, Query};
use tokio::sync::mpsc;

use crate::engine::{Family, Op, Outcome, wire};
use crate::rostime;
use crate::supervisor::{Failure, FailureKind, JobId, Resource, RouterEvent, RuleScan};

/// Rows handed to the supervisor at once while a list print streams.
const ROWS_PER_EVENT: usize = 1024;

/// What a job sends back to the daemon.
#[derive(Debug)]
pub enum Msg {
    /// A new logged-in client (the answer to a connect job).
    Client(Client),
    /// An event for the supervisor.
    Event(RouterEvent),
}

/// A job's mailbox.
pub type Outbox = mpsc::Sender<(JobId, Msg)>;

/// Everything a job needs besides the client.
#[derive(Debug, Clone)]
pub struct Wire {
    /// Comment prefix.
    pub prefix: String,
    /// List names per family (empty when disabled).
    pub lists: [String; 2],
}

/// The supervisor's view of a client error.
pub fn failure(e: &RouterError) -> Failure {
    let kind = match e {
        RouterError::ConnectionLost { .. } => FailureKind::Lost,
        RouterError::Timeout { .. } => FailureKind::Timeout,
        _ => FailureKind::Refused,
    };
    Failure::new(kind, e.to_string())
}

async fn report(out: &Outbox, job: JobId, event: RouterEvent) {
    let _ = out.send((job, Msg::Event(event))).await;
}

/// Connects and logs in.
pub async fn connect(config: ClientConfig, job: JobId, out: Outbox) {
    let target = format!("{}:{}", config.host, config.port);
    let tls = config.tls.is_some();
    match Client::connect(config).await {
        Ok(client) => {
            tracing::info!(router = %target, tls, "router connected");
            let _ = out.send((job, Msg::Client(client))).await;
        }
        Err(e) => {
            let f = Failure::new(FailureKind::Refused, format!("{target}: {e}"));
            report(&out, job, RouterEvent::ConnectFailed(f)).await;
        }
    }
}

/// Sends ops pipelined and reports every outcome, in order.
///
/// Each command is built when the pipeline window has room for it, not all up front: a job
/// holds its ops, their outcomes and a window of commands (`docs/benchmarks.md`, "Memory at
/// scale").
pub async fn send(client: Client, wire: Wire, ops: Vec<Op>, job: JobId, out: Outbox) {
    let mut outcomes: Vec<Option<Outcome>> = ops.iter().map(|_| None).collect();
    {
        // Indices of the ops whose command went out, in order; a build failure is answered at
        // once and sends nothing.
        let sent = Mutex::new(VecDeque::new());
        let failed = Mutex::new(Vec::new());
        // Indices, not `iter()`: a closure over `&Op` items makes the future not `Send`.
        let commands = (0..ops.len()).filter_map(|i| {
            let op = &ops[i];
            match wire::command(op, &wire.prefix, &wire.lists) {
                Ok(c) => {
                    lock(&sent).push_back(i);
                    Some(c)
                }
                Err(e) => {
                    tracing::error!(cause = %e, op = op.kind(), "cannot build a router command");
                    lock(&failed).push((i, wire::build_failed(&e)));
                    None
                }
            }
        });
        let mut replies = std::pin::pin!(client.pipeline_stream(commands));
        while let Some(reply) = replies.next().await {
            let Some(i) = lock(&sent).pop_front() else {
                break;
            };
            let op = &ops[i];
            if tracing::enabled!(tracing::Level::DEBUG) {
                tracing::debug!(op = op.kind(), value = %op.value(), ok = reply.is_ok(), "router command");
            }
            outcomes[i] = Some(wire::outcome(op, reply));
        }
        for (i, outcome) in lock(&failed).drain(..) {
            outcomes[i] = Some(outcome);
        }
    }
    // An op without an outcome was never answered: the stream ended early, the connection is
    // lost.
    let results = ops
        .into_iter()
        .zip(outcomes)
        .map(|(op, outcome)| (op, outcome.unwrap_or(Outcome::Lost)))
        .collect();
    report(&out, job, RouterEvent::OpsDone(results)).await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Streams the print of one list in chunks of rows.
pub async fn print(client: Client, family: Family, list: String, job: JobId, out: Outbox) {
    let result = async {
        let cmd = wire::list_print(family, &list).map_err(|e| {
            Failure::new(FailureKind::Refused, format!("cannot build the print: {e}"))
        })?;
        let mut rows = client.stream(cmd).await.map_err(|e| failure(&e))?;
        let mut chunk = Vec::with_capacity(ROWS_PER_EVENT);
        while let Some(row) = rows.next().await {
            chunk.push(wire::row(&row.map_err(|e| failure(&e))?));
            if chunk.len() == ROWS_PER_EVENT {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(ROWS_PER_EVENT));
                report(&out, job, RouterEvent::Rows(full)).await;
            }
        }
        if !chunk.is_empty() {
            report(&out, job, RouterEvent::Rows(chunk)).await;
        }
        Ok(())
    }
    .await;
    let event = match result {
        Ok(()) => RouterEvent::PrintDone,
        Err(f) => RouterEvent::Failed(f),
    };
    report(&out, job, event).await;
}

/// Reads `/system/resource`.
pub async fn resource(client: Client, job: JobId, out: Outbox) {
    let event = match run_resource(&client).await {
        Ok(r) => RouterEvent::Resource(r),
        Err(e) => RouterEvent::Failed(failure(&e)),
    };
    report(&out, job, event).await;
}

async fn run_resource(client: &Client) -> Result<Resource, RouterError> {
    let cmd = Command::builder("/system/resource/print")
        .proplist(&["uptime", "version", "total-memory", "free-memory"])
        .build()?;
    let resp = client.execute(cmd).await?;
    let row = resp.rows.first();
    let field = |k| row.and_then(|r| r.get_str(k));
    let bytes = |k| field(k).and_then(|v| v.trim().parse::<u64>().ok());
    Ok(Resource {
        uptime: field("uptime").and_then(rostime::parse),
        total_memory: bytes("total-memory"),
        free_memory: bytes("free-memory"),
    })
}

/// Reads the addresses of the router's active sessions (`/user/active`). Rows without a usable
/// address (a MAC-Winbox session, an empty field) are skipped; at most `MAX_SESSIONS` are kept.
pub async fn sessions(client: Client, job: JobId, out: Outbox) {
    const MAX_SESSIONS: usize = 1024;
    let result = async {
        let cmd = Command::builder("/user/active/print")
            .proplist(&["address", "name", "via"])
            .build()?;
        let resp = client.execute(cmd).await?;
        Ok::<_, RouterError>(
            resp.rows
                .iter()
                .filter_map(|r| r.get_str("address"))
                .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
                .take(MAX_SESSIONS)
                .collect(),
        )
    }
    .await;
    let event = match result {
        Ok(addresses) => RouterEvent::Sessions(addresses),
        Err(e) => RouterEvent::Failed(failure(&e)),
    };
    report(&out, job, event).await;
}

/// Scans raw and filter rules per enabled family for drop rules that use the list.
pub async fn rules(client: Client, wire: Wire, job: JobId, out: Outbox) {
    let mut scans = Vec::new();
    for family in Family::ALL {
        let list = &wire.lists[family.index()];
        if list.is_empty() {
            continue;
        }
        let scan = scan_rules(&client, family, list).await;
        if let Err(e) = &scan
            && e.is_connection_lost()
        {
            report(&out, job, RouterEvent::Failed(failure(e))).await;
            return;
        }
        scans.push((family, scan.map_err(|e| failure(&e))));
    }
    report(&out, job, RouterEvent::Rules(scans)).await;
}

async fn scan_rules(client: &Client, family: Family, list: &str) -> Result<RuleScan, RouterError> {
    let base = if family == Family::V4 { "/ip" } else { "/ipv6" };
    let mut scan = RuleScan::default();
    for table in ["raw", "filter"] {
        let cmd = Command::builder(&format!("{base}/firewall/{table}/print"))
            .proplist(&["action", "src-address-list", "disabled", "bytes", "packets"])
            .query(Query::Eq(
                "src-address-list".into(),
                list.as_bytes().to_vec(),
            ))
            .build()?;
        let resp = client.execute(cmd).await?;
        for r in &resp.rows {
            let action = r.get_str("action").unwrap_or_default();
            let enabled = r.get_str("disabled") != Some("true");
            if enabled && matches!(action, "drop" | "reject" | "tarpit") {
                scan.found = true;
                let num = |k| {
                    r.get_str(k)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                scan.bytes = scan.bytes.saturating_add(num("bytes"));
                scan.packets = scan.packets.saturating_add(num("packets"));
            }
        }
    }
    Ok(scan)
}
