//! The daemon loop: LAPI polls feed the cache, the cache's change-sets feed the engine, the
//! engine's ops go to the router pipelined, outcomes go back to the engine.
//!
//! ```text
//!  LAPI ──poll──▶ DecisionCache ──ChangeSet──▶ Engine ──Op──▶ Client (window of N) ──▶ router
//!                      ▲    │expire                ▲                 │
//!                      │    └──────ChangeSet───────┤◀────Outcome─────┘
//!                      │                           └◀── print rows (reconcile: start, reconnect,
//!                      │                                 reboot, every RECONCILIATION_INTERVAL)
//! ```
//!
//! Outage rules (issue 5):
//! - LAPI down: the cache is kept, so router entries stay exactly as they are. Polls retry with
//!   capped, jittered backoff. The router is never reconciled before the first LAPI snapshot, so
//!   an unknown desired state can never wipe the lists.
//! - Router down: the cache is kept; reconnect with backoff, then reconcile (one print per list,
//!   then the diff).
//! - Router reboot: seen as `/system/resource` uptime going backwards; a full resync follows.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crowdsec_lapi::{
    Backoff, ChangeSet, CounterDeltas, DecisionCache, LapiClient, LapiConfig, MetricsOutcome,
};
use futures_util::StreamExt;
use routeros_client::{Client, ClientConfig, Command, Error as RouterError, Query, Response};

use crate::config::{Config, RouterTls};
use crate::engine::{Engine, EngineConfig, Family, Op, Outcome, RouterId, RouterRow, Tally};
use crate::metrics::{self, Health, Metrics};
use crate::rostime;

/// How often the loop wakes up at most: refresh checks and retries run on this tick.
const TICK: Duration = Duration::from_secs(5);
/// How often to read `/system/resource` uptime and the firewall rule counters.
const HOUSEKEEPING: Duration = Duration::from_secs(60);
/// Grace period for in-flight work at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Follow-up rounds per batch (adoption lookups, re-adds): bounded so a confused router cannot
/// keep the loop busy.
const MAX_ROUNDS: usize = 4;
/// Adds planned at once during a reconcile: bounds the memory of a cold sync while keeping the
/// pipeline window full.
const RECONCILE_CHUNK: usize = 4096;
/// At most one warning per this interval for commands the router refused or timed out
/// (RouterOS keeps 1000 log lines); repeats within it go to debug.
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(60);

/// Everything the daemon owns.
pub struct Daemon {
    config: Config,
    lapi: LapiClient,
    lapi_backoff: Backoff,
    /// A snapshot has been applied: the cache is the truth and the router may be reconciled.
    lapi_synced: bool,
    lapi_up: bool,
    next_poll: Instant,
    cache: DecisionCache,
    engine: Engine,
    router: Option<Client>,
    router_config: ClientConfig,
    router_backoff: Backoff,
    next_router_attempt: Instant,
    router_failures: u32,
    last_uptime: Option<Duration>,
    next_housekeeping: Instant,
    next_reconcile: Instant,
    next_metrics_push: Option<Instant>,
    deltas: CounterDeltas,
    dropped: [(u64, u64); 2],
    started_unix: i64,
    synced: bool,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<Health>>,
    warnings: Vec<String>,
    /// When refused commands were last reported at warn level.
    last_refusal_warn: Option<Instant>,
}

/// A hint for traps that mean the API user lacks a policy (issue 9, least privilege).
fn policy_hint(message: &str) -> &'static str {
    if message.contains("not enough permissions") {
        "; the router user's group needs the policies api,read,write (docs/security.md)"
    } else {
        ""
    }
}

/// The LAPI client settings from the configuration.
pub fn lapi_config(config: &Config) -> LapiConfig {
    let l = &config.lapi;
    let mut c = LapiConfig::new(l.url.clone());
    c.api_key = l.api_key.clone();
    c.client_cert = l.client_cert.clone();
    c.ca_certs = l.ca.clone();
    c.insecure_skip_verify = l.insecure_skip_verify;
    c.scopes = l.scopes.clone();
    c.origins = l.origins.clone();
    c.scenarios_containing = l.scenarios_containing.clone();
    c.scenarios_not_containing = l.scenarios_not_containing.clone();
    c.decision_types = l.decision_types.clone();
    c.version = env!("CARGO_PKG_VERSION").to_owned();
    c
}

/// The router client settings from the configuration.
pub fn router_config(config: &Config) -> ClientConfig {
    let r = &config.router;
    let mut c = ClientConfig::new(r.host.clone(), r.user.clone(), r.password.clone());
    c.port = r.port;
    c.connect_timeout = r.connect_timeout;
    c.command_timeout = r.command_timeout;
    c.window = r.window;
    c.tls = r.tls.as_ref().map(|t| {
        routeros_client::TlsConfig::new(match t {
            RouterTls::Fingerprint(fp) => routeros_client::TlsTrust::Fingerprint(*fp),
            RouterTls::Ca(certs) => routeros_client::TlsTrust::Ca(certs.clone()),
        })
    });
    c
}

/// Maps a router reply to the engine's view of it.
fn outcome(op: &Op, result: Result<Response, RouterError>) -> Outcome {
    match result {
        Ok(resp) => match op {
            Op::Lookup { .. } => Outcome::Rows(resp.rows.iter().map(row).collect()),
            Op::Add { .. } => Outcome::Done(resp.ret_str().and_then(RouterId::parse)),
            _ => Outcome::Done(None),
        },
        Err(RouterError::Trap { message, .. }) => {
            // routeros-api.md §9: a duplicate and a missing id are device errors, not transport
            // errors; the connection stays.
            if message.contains("already have such entry") {
                Outcome::Duplicate
            } else if message.contains("no such item") {
                Outcome::NoSuchItem
            } else {
                Outcome::Trap(message)
            }
        }
        Err(e) if e.is_connection_lost() => Outcome::Lost,
        Err(e) => Outcome::Trap(e.to_string()),
    }
}

fn row(attrs: &routeros_client::Attributes) -> RouterRow {
    RouterRow {
        id: attrs.get_lossy(".id").unwrap_or_default().into_owned(),
        address: attrs.get_lossy("address").unwrap_or_default().into_owned(),
        timeout: attrs.get_str("timeout").and_then(rostime::parse),
        comment: attrs.get_lossy("comment").map(|c| c.into_owned()),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Daemon {
    /// Builds the daemon. Fails only on client configuration errors (unreadable PEM files).
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        health: Arc<Mutex<Health>>,
    ) -> Result<Self, String> {
        let now = Instant::now();
        let lapi = LapiClient::new(lapi_config(&config)).map_err(|e| e.to_string())?;
        let router_config = router_config(&config);
        let engine = Engine::new(
            EngineConfig {
                lists: [config.lists.v4.clone(), config.lists.v6.clone()],
                prefix: config.lists.comment_prefix.clone(),
                // Refresh well before the router drops the entry, and at least a few polls ahead.
                refresh_margin: (config.lapi.update_frequency * 6).max(Duration::from_secs(300)),
            },
            now,
        );
        // min < max and jitter in range: these constants cannot fail.
        let backoff =
            |max| Backoff::new(Duration::from_secs(1), max, 0.3).map_err(|e| e.to_string());
        let next_metrics_push = config.lapi.metrics_interval.map(|i| now + i);
        Ok(Daemon {
            lapi_backoff: backoff(Duration::from_secs(60))?,
            router_backoff: backoff(Duration::from_secs(60))?,
            lapi,
            lapi_synced: false,
            lapi_up: false,
            next_poll: now,
            cache: DecisionCache::new(now),
            engine,
            router: None,
            router_config,
            next_router_attempt: now,
            router_failures: 0,
            last_uptime: None,
            next_housekeeping: now,
            next_reconcile: now + config.reconciliation_interval,
            next_metrics_push,
            deltas: CounterDeltas::default(),
            dropped: [(0, 0); 2],
            started_unix: unix_now(),
            synced: false,
            metrics,
            health,
            warnings: Vec::new(),
            last_refusal_warn: None,
            config,
        })
    }

    /// Runs until `shutdown` completes, then abandons in-flight work within 5 s, sends `/quit`,
    /// and returns. Router entries stay and expire by their own timeouts.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.step() => {}
            }
            let wake = self.next_wakeup();
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        tracing::info!("shutting down; router entries stay and expire by their timeouts");
        if let Some(router) = self.router.take() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, router.quit()).await;
        }
    }

    fn next_wakeup(&self) -> Instant {
        let now = Instant::now();
        let mut wake = (now + TICK).min(self.next_poll);
        if let Some(e) = self.cache.next_expiry() {
            // Expiry at most once a second: `expire` scans the cache.
            wake = wake.min(e.max(now + Duration::from_secs(1)));
        }
        if self.router.is_none() {
            wake = wake.min(self.next_router_attempt);
        }
        wake.max(now + Duration::from_millis(10))
    }

    /// One pass: poll, expire, connect, reconcile or apply, housekeeping.
    pub async fn step(&mut self) {
        let now = Instant::now();
        if self.router.as_ref().is_some_and(Client::is_closed) {
            // The driver saw EOF or `!fatal` while idle (a router reboot, a killed session).
            self.router_lost("connection closed by the router");
        }
        if now >= self.next_poll {
            self.poll_lapi().await;
        }
        if self
            .cache
            .next_expiry()
            .is_some_and(|e| e <= Instant::now())
        {
            let changes = self.cache.expire(Instant::now());
            self.apply(changes).await;
        }
        if self.router.is_none() && Instant::now() >= self.next_router_attempt {
            self.connect_router().await;
        }
        if self.router.is_some() && self.lapi_synced {
            if Instant::now() >= self.next_housekeeping {
                self.housekeeping().await;
            }
            if self.engine.is_stale() || Instant::now() >= self.next_reconcile {
                self.reconcile().await;
            }
            if self.router.is_some() && !self.engine.is_stale() {
                let ops = self.engine.plan_tick(&self.cache, Instant::now());
                self.execute(ops).await;
            }
        }
        if self.next_metrics_push.is_some_and(|t| Instant::now() >= t) {
            self.push_usage_metrics().await;
        }
        self.publish();
    }

    async fn poll_lapi(&mut self) {
        // The whole poll, body included, ends by this deadline (a stalled or endless body would
        // otherwise hold the loop); a 1M-decision snapshot streams well within it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        match self.lapi.poll(deadline).await {
            Ok(batch) => {
                self.metrics.inc(metrics::LAPI_POLLS, &[("result", "ok")]);
                let skipped = batch.stats().skipped;
                if skipped > 0 {
                    self.metrics
                        .inc_by(metrics::LAPI_SKIPPED, &[], skipped as f64);
                }
                if !self.lapi_up {
                    tracing::info!(
                        snapshot = batch.is_startup(),
                        new = batch.adds().len(),
                        deleted = batch.deletes().len(),
                        "LAPI connected"
                    );
                }
                self.lapi_up = true;
                self.lapi_backoff.reset();
                self.next_poll = Instant::now() + self.config.lapi.update_frequency;
                self.lapi_synced = true;
                if self.router.is_none() || self.engine.is_stale() {
                    // A reconcile against the whole cache comes next anyway: skip the change-set
                    // (a 100k snapshot would otherwise hold batch, change-set and cache at once).
                    self.cache.apply_quiet(&batch, Instant::now());
                    self.engine.mark_stale();
                } else {
                    let changes = self.cache.apply(&batch, Instant::now());
                    drop(batch);
                    self.apply(changes).await;
                }
            }
            Err(e) => {
                self.metrics
                    .inc(metrics::LAPI_POLLS, &[("result", "error")]);
                let delay = self.lapi_backoff.next_delay(&mut rand::thread_rng());
                if self.lapi_up || self.lapi_backoff.attempts() <= 1 {
                    tracing::warn!(cause = %e, retry_in = ?delay, "LAPI poll failed; router entries are kept as they are");
                } else {
                    tracing::debug!(cause = %e, retry_in = ?delay, "LAPI poll failed again");
                }
                self.lapi_up = false;
                self.next_poll = Instant::now() + delay;
            }
        }
    }

    /// Sends the ops of a change-set, or leaves them to the next reconcile when the router is
    /// away or its view is stale.
    async fn apply(&mut self, changes: ChangeSet) {
        if changes.is_empty() {
            return;
        }
        if self.router.is_none() || self.engine.is_stale() {
            self.engine.mark_stale();
            return;
        }
        let ops = self.engine.plan_changes(&changes, Instant::now());
        drop(changes);
        self.execute(ops).await;
    }

    async fn connect_router(&mut self) {
        let target = format!("{}:{}", self.router_config.host, self.router_config.port);
        match Client::connect(self.router_config.clone()).await {
            Ok(client) => {
                tracing::info!(router = %target, tls = self.router_config.tls.is_some(), "router connected");
                self.router = Some(client);
                self.router_backoff.reset();
                self.router_failures = 0;
                self.engine.mark_stale();
                self.next_housekeeping = Instant::now();
                self.metrics.inc(metrics::ROUTER_CONNECTS, &[]);
            }
            Err(e) => {
                let delay = self.router_backoff.next_delay(&mut rand::thread_rng());
                self.router_failures += 1;
                // Log the first failure and then every tenth: RouterOS keeps 1000 log lines.
                if self.router_failures == 1 || self.router_failures % 10 == 0 {
                    tracing::warn!(router = %target, cause = %e, retry_in = ?delay, failures = self.router_failures, "router connection failed");
                }
                self.next_router_attempt = Instant::now() + delay;
            }
        }
    }

    fn router_lost(&mut self, cause: &str) {
        if self.router.take().is_some() {
            tracing::warn!(
                cause,
                "router connection lost; will reconnect and reconcile"
            );
        }
        self.engine.mark_stale();
        self.next_router_attempt = Instant::now();
    }

    /// One print per enabled list, streamed into the engine, then the diff.
    async fn reconcile(&mut self) {
        let Some(client) = self.router.clone() else {
            return;
        };
        let reason = if self.engine.is_stale() {
            if self.synced { "resync" } else { "startup" }
        } else {
            "periodic"
        };
        self.metrics
            .inc(metrics::RECONCILIATIONS, &[("reason", reason)]);
        let mut ops = Vec::new();
        for family in Family::ALL {
            let Some(list) = self.engine.list(family).map(str::to_owned) else {
                continue;
            };
            let print = Command::builder(&format!("{}/print", family.menu()))
                .proplist(&[".id", "address", "timeout", "comment"])
                .query(Query::Eq("list".into(), list.into_bytes()))
                .build();
            let print = match print {
                Ok(p) => p,
                Err(e) => {
                    // Only a list name with bytes a query cannot carry gets here.
                    tracing::error!(cause = %e, "cannot build the list print");
                    return;
                }
            };
            let mut rows = match client.stream(print).await {
                Ok(r) => r,
                Err(e) => return self.router_failed(&e),
            };
            self.metrics.inc(
                metrics::ROUTER_COMMANDS,
                &[("kind", "print"), ("result", "ok")],
            );
            self.engine.begin_reconcile(family);
            while let Some(r) = rows.next().await {
                match r {
                    Ok(attrs) => {
                        self.engine
                            .reconcile_row(row(&attrs), &self.cache, Instant::now())
                    }
                    Err(e) => return self.router_failed(&e),
                }
            }
            ops.extend(self.engine.finish_reconcile(&self.cache));
        }
        let started = Instant::now();
        let mut tally = Tally::default();
        let mut complete = self.execute_counted(ops, &mut tally).await;
        // Adds in chunks: a cold sync of 100k values never holds 100k ops at once. Each chunk
        // is planned after the previous one finished, so the bound on rounds is generous.
        for family in Family::ALL {
            for _ in 0..=(self.cache.len() / RECONCILE_CHUNK + 1) {
                if !complete {
                    break;
                }
                let ops =
                    self.engine
                        .plan_missing(family, &self.cache, Instant::now(), RECONCILE_CHUNK);
                if ops.is_empty() {
                    break;
                }
                complete = self.execute_counted(ops, &mut tally).await;
            }
        }
        if !tally.is_empty() {
            tracing::info!(
                "{tally} in {} ms ({reason} reconcile)",
                started.elapsed().as_millis()
            );
        }
        if complete && self.router.is_some() {
            self.engine.mark_fresh();
            if !self.synced {
                tracing::info!(
                    decisions = self.cache.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "first sync done"
                );
            }
            self.synced = true;
            self.next_reconcile = Instant::now() + self.config.reconciliation_interval;
        }
    }

    fn router_failed(&mut self, e: &RouterError) {
        if e.is_connection_lost() {
            self.router_lost(&e.to_string());
        } else {
            // A trap or a timeout on a print: keep the connection, try again next tick. Warn at
            // most once a minute: a user without `read` would otherwise fill the router's
            // 1000-line log with one line per tick.
            let hint = policy_hint(&e.to_string());
            let now = Instant::now();
            if self
                .last_refusal_warn
                .is_none_or(|t| now.duration_since(t) >= REFUSAL_WARN_EVERY)
            {
                self.last_refusal_warn = Some(now);
                tracing::warn!(cause = %e, "router print failed{hint}");
            } else {
                tracing::debug!(cause = %e, "router print failed again");
            }
            self.engine.mark_stale();
        }
    }

    /// Sends ops pipelined and feeds outcomes back; returns false if the connection broke.
    async fn execute(&mut self, ops: Vec<Op>) -> bool {
        let mut tally = Tally::default();
        let started = Instant::now();
        let ok = self.execute_counted(ops, &mut tally).await;
        if !tally.is_empty() {
            tracing::info!("{tally} in {} ms", started.elapsed().as_millis());
        }
        ok
    }

    /// [`Daemon::execute`] without the log line: adds its writes to `tally` (a cold sync logs
    /// one line for all its chunks).
    async fn execute_counted(&mut self, mut ops: Vec<Op>, tally: &mut Tally) -> bool {
        let Some(client) = self.router.clone() else {
            if !ops.is_empty() {
                self.engine.mark_stale();
            }
            return false;
        };
        if ops.is_empty() {
            return true;
        }
        let started = Instant::now();
        let lists = [
            self.engine.list(Family::V4).unwrap_or_default().to_owned(),
            self.engine.list(Family::V6).unwrap_or_default().to_owned(),
        ];
        let mut lost = false;
        // Commands refused (a trap other than duplicate / no such item) or timed out, and the
        // first reason: reported once per batch so that a router that refuses every add (a user
        // without `write`) or stalls is visible at the default log level, not only at debug.
        let mut refused = 0usize;
        let mut first_refusal: Option<String> = None;
        for _ in 0..MAX_ROUNDS {
            if ops.is_empty() || lost {
                break;
            }
            let t = Tally::of(&ops);
            for i in 0..2 {
                tally.added[i] += t.added[i];
                tally.removed[i] += t.removed[i];
                tally.refreshed[i] += t.refreshed[i];
            }
            let mut follow = Vec::new();
            {
                let prefix = self.engine.prefix().to_owned();
                let commands = ops.iter().map(|op| build(op, &prefix, &lists));
                let mut results = std::pin::pin!(client.pipeline_stream(commands));
                let mut i = 0;
                while let Some(result) = results.next().await {
                    let Some(op) = ops.get(i) else { break };
                    i += 1;
                    let result_label = match &result {
                        Ok(_) => "ok",
                        Err(RouterError::Trap { .. }) => "trap",
                        Err(_) => "error",
                    };
                    self.metrics.inc(
                        metrics::ROUTER_COMMANDS,
                        &[("kind", op.kind()), ("result", result_label)],
                    );
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        tracing::debug!(op = op.kind(), value = %op.value(), result = result_label, "router command");
                    }
                    let out = outcome(op, result);
                    if out == Outcome::Lost {
                        lost = true;
                    }
                    if let Outcome::Trap(message) = &out {
                        refused += 1;
                        first_refusal.get_or_insert_with(|| message.clone());
                    }
                    follow.extend(self.engine.on_outcome(op, out, &self.cache, Instant::now()));
                }
            }
            ops = follow;
        }
        self.metrics
            .observe(metrics::SYNC_BATCH_SECONDS, started.elapsed());
        if let Some(first) = first_refusal {
            let now = Instant::now();
            let hint = policy_hint(&first);
            if self
                .last_refusal_warn
                .is_none_or(|t| now.duration_since(t) >= REFUSAL_WARN_EVERY)
            {
                self.last_refusal_warn = Some(now);
                tracing::warn!(refused, first = %first, "router refused or timed out commands; retrying on the next tick{hint}");
            } else {
                tracing::debug!(refused, first = %first, "router refused or timed out commands");
            }
        }
        if lost {
            self.router_lost("connection lost during a batch");
            return false;
        }
        true
    }

    /// Reboot detection and firewall rule check.
    async fn housekeeping(&mut self) {
        let Some(client) = self.router.clone() else {
            return;
        };
        self.next_housekeeping = Instant::now() + HOUSEKEEPING;
        let resource = Command::builder("/system/resource/print")
            .proplist(&["uptime", "version"])
            .build();
        if let Ok(cmd) = resource {
            match client.execute(cmd).await {
                Ok(resp) => {
                    let uptime = resp
                        .rows
                        .first()
                        .and_then(|r| r.get_str("uptime"))
                        .and_then(rostime::parse);
                    if let (Some(now), Some(before)) = (uptime, self.last_uptime)
                        && now < before
                    {
                        tracing::warn!("router rebooted (uptime went back); full resync");
                        self.engine.mark_stale();
                    }
                    if uptime.is_some() {
                        self.last_uptime = uptime;
                    }
                }
                Err(e) if e.is_connection_lost() => return self.router_lost(&e.to_string()),
                Err(e) => tracing::debug!(cause = %e, "cannot read /system/resource"),
            }
        }
        self.check_rules(&client).await;
    }

    /// Looks for enabled drop/reject rules using each list (raw and filter), and sums their
    /// counters for the dropped metrics. tikban changes no rules: the `.rsc` creates them.
    async fn check_rules(&mut self, client: &Client) {
        let mut warnings = Vec::new();
        for family in Family::ALL {
            let Some(list) = self.engine.list(family).map(str::to_owned) else {
                continue;
            };
            let base = if family == Family::V4 { "/ip" } else { "/ipv6" };
            let mut found = false;
            let (mut bytes, mut packets) = (0u64, 0u64);
            for table in ["raw", "filter"] {
                let cmd = Command::builder(&format!("{base}/firewall/{table}/print"))
                    .proplist(&["action", "src-address-list", "disabled", "bytes", "packets"])
                    .query(Query::Eq(
                        "src-address-list".into(),
                        list.clone().into_bytes(),
                    ))
                    .build();
                let Ok(cmd) = cmd else { continue };
                match client.execute(cmd).await {
                    Ok(resp) => {
                        for r in &resp.rows {
                            let action = r.get_str("action").unwrap_or_default();
                            let enabled = r.get_str("disabled") != Some("true");
                            if enabled && matches!(action, "drop" | "reject" | "tarpit") {
                                found = true;
                                bytes +=
                                    r.get_str("bytes").and_then(|b| b.parse().ok()).unwrap_or(0);
                                packets += r
                                    .get_str("packets")
                                    .and_then(|b| b.parse().ok())
                                    .unwrap_or(0);
                            }
                        }
                    }
                    Err(e) if e.is_connection_lost() => return self.router_lost(&e.to_string()),
                    Err(e) => tracing::debug!(cause = %e, table, "cannot read firewall rules"),
                }
            }
            if !found {
                warnings.push(format!(
                    "no enabled drop or reject rule in {base}/firewall raw or filter uses src-address-list={list}: bans are listed but not enforced"
                ));
            }
            let i = if family == Family::V4 { 0 } else { 1 };
            let (pb, pp) = self.dropped[i];
            let label = [("ip_type", family.label())];
            // Counters reset on reboot or rule changes: only count increases.
            self.metrics.inc_by(
                metrics::DROPPED_BYTES,
                &label,
                bytes.saturating_sub(pb) as f64,
            );
            self.metrics.inc_by(
                metrics::DROPPED_PACKETS,
                &label,
                packets.saturating_sub(pp) as f64,
            );
            self.dropped[i] = (bytes, packets);
        }
        if warnings != self.warnings {
            for w in &warnings {
                tracing::warn!("{w}");
            }
            self.warnings = warnings;
        }
    }

    async fn push_usage_metrics(&mut self) {
        let Some(interval) = self.config.lapi.metrics_interval else {
            return;
        };
        self.next_metrics_push = Some(Instant::now() + interval);
        let payload = crate::usage::payload(
            &self.cache.active_counts(),
            self.dropped,
            &mut self.deltas,
            self.started_unix,
            unix_now(),
            interval.as_secs(),
        );
        match self.lapi.push_usage_metrics(&payload).await {
            Ok(MetricsOutcome::Unsupported) => self.next_metrics_push = None,
            Ok(_) => {}
            Err(e) => tracing::debug!(cause = %e, "usage-metrics push failed"),
        }
    }

    /// Gauges and health.
    fn publish(&mut self) {
        let m = &self.metrics;
        m.set(
            metrics::CONNECTED,
            &[("peer", "lapi")],
            f64::from(u8::from(self.lapi_up)),
        );
        m.set(
            metrics::CONNECTED,
            &[("peer", "router")],
            f64::from(u8::from(self.router.is_some())),
        );
        for family in Family::ALL {
            m.set(
                metrics::ROUTER_ENTRIES,
                &[("ip_type", family.label())],
                self.engine.owned_count(family) as f64,
            );
        }
        let series = self
            .cache
            .active_counts()
            .into_iter()
            .map(|c| {
                (
                    vec![
                        ("origin", c.origin.to_string()),
                        ("ip_type", if c.ipv6 { "ipv6" } else { "ipv4" }.to_owned()),
                    ],
                    c.count as f64,
                )
            })
            .collect();
        m.replace(metrics::DECISIONS, series);
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        *h = Health {
            lapi_up: self.lapi_up,
            router_up: self.router.is_some(),
            synced: self.synced,
            warnings: self.warnings.clone(),
        };
    }
}

/// The RouterOS command for an op.
fn build(op: &Op, prefix: &str, lists: &[String; 2]) -> Command {
    let family = Family::of(op.value());
    let list = &lists[if family == Family::V4 { 0 } else { 1 }];
    let menu = family.menu();
    let built = match op {
        Op::Add {
            value,
            timeout,
            origin,
        } => Command::builder(&format!("{menu}/add"))
            .attr("list", list)
            .attr("address", value.routeros_address())
            .attr("timeout", format!("{timeout}s"))
            .attr("comment", crate::engine::comment(prefix, origin.as_str()))
            .build(),
        Op::Remove { id, .. } => Command::builder(&format!("{menu}/remove"))
            .id(id.to_string())
            .build(),
        Op::Refresh { id, timeout, .. } => Command::builder(&format!("{menu}/set"))
            .id(id.to_string())
            .attr("timeout", format!("{timeout}s"))
            .build(),
        Op::Lookup { value } => Command::builder(&format!("{menu}/print"))
            .proplist(&[".id", "address", "timeout", "comment"])
            .query(Query::Eq("list".into(), list.clone().into_bytes()))
            .query(Query::Eq(
                "address".into(),
                value.routeros_address().into_bytes(),
            ))
            .build(),
    };
    // Paths and attribute names above are constants; values may be any bytes. Building cannot
    // fail, but a harmless print stands in rather than a panic.
    built.unwrap_or_else(|e| {
        tracing::error!(cause = %e, "cannot build a router command");
        fallback()
    })
}

fn fallback() -> Command {
    match Command::builder("/system/identity/print").build() {
        Ok(c) => c,
        Err(_) => unreachable!("a constant path builds"),
    }
}
