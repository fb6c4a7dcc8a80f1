//! The daemon: a thin driver around the [`Supervisor`]. It performs each [`Action`] (a LAPI
//! request in the LAPI task, a router job in its own task), feeds every result back as an
//! [`Event`], publishes `/health` and the gauges, and sleeps until the supervisor's next timer.
//! Every scheduling rule lives in the supervisor, where it is unit-tested with a hand-driven
//! clock.

/// The client settings the daemon (and `tikban check`) build from the configuration.
pub(crate) mod clients;
mod guard;
mod lapi;
mod router;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crowdsec_lapi::LapiClient;
use routeros_client::{Client, ClientConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::{Health, Metrics};
use crate::supervisor::{Action, Event, RouterEvent, Settings, Supervisor};
use router::{Msg, Wire};

/// Grace period for `/quit` at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The gauges walk the cache: at most this often.
const GAUGES_EVERY: Duration = Duration::from_secs(1);
/// The LAPI host's addresses are resolved again this often (they are protected,
/// `docs/safety.md`).
const RESOLVE_LAPI_EVERY: Duration = Duration::from_secs(300);
/// Deadline of one resolution.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves the LAPI host every [`RESOLVE_LAPI_EVERY`] and reports its addresses. A failed
/// resolution keeps the last addresses (nothing is sent).
async fn resolve_lapi(host: String, port: u16, events: mpsc::Sender<Event>) {
    loop {
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        if let Ok(Ok(addrs)) = tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            let mut ips: Vec<std::net::IpAddr> = addrs.map(|a| a.ip()).take(64).collect();
            ips.sort();
            ips.dedup();
            if events.send(Event::LapiAddresses(ips)).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(RESOLVE_LAPI_EVERY).await;
    }
}

/// The host and port of the LAPI URL (already validated by the configuration).
fn lapi_host(url: &str) -> Option<(String, u16)> {
    let uri: hyper::Uri = url.parse().ok()?;
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Some((host, port))
}

/// The router side of the driver: the client and the job running on it.
struct RouterIo {
    config: ClientConfig,
    wire: Wire,
    client: Option<Client>,
    job: Option<JoinHandle<()>>,
    out: router::Outbox,
}

impl RouterIo {
    fn start(&mut self, job: impl Future<Output = ()> + Send + 'static) {
        if let Some(old) = self.job.replace(tokio::spawn(job)) {
            old.abort();
        }
    }

    fn disconnect(&mut self) {
        if let Some(job) = self.job.take() {
            job.abort();
        }
        self.client = None;
    }

    /// Runs one router action. Without a client (it went away between the supervisor's decision
    /// and now) the job reports the loss itself.
    fn perform(&mut self, action: Action) {
        let out = self.out.clone();
        let job_id = match &action {
            Action::Connect { job }
            | Action::Send { job, .. }
            | Action::Print { job, .. }
            | Action::ReadResource { job }
            | Action::ReadRules { job }
            | Action::ReadSessions { job } => *job,
            Action::Disconnect { .. }
            | Action::Poll { .. }
            | Action::PushUsage { .. }
            | Action::PushAlerts(_) => 0,
        };
        if let Action::Connect { job } = action {
            self.disconnect();
            self.start(router::connect(self.config.clone(), job, out));
            return;
        }
        if let Action::Disconnect { .. } = action {
            self.disconnect();
            return;
        }
        let Some(client) = self.client.clone() else {
            let lost = routeros_client::Error::ConnectionLost {
                reason: routeros_client::LostReason::Eof,
            };
            let event = RouterEvent::Failed(router::failure(&lost));
            self.start(async move {
                let _ = out.send((job_id, Msg::Event(event))).await;
            });
            return;
        };
        let wire = self.wire.clone();
        match action {
            Action::Send { job, ops } => self.start(router::send(client, wire, ops, job, out)),
            Action::Print { job, family } => {
                let list = wire.lists[family.index()].clone();
                self.start(router::print(client, family, list, job, out));
            }
            Action::ReadResource { job } => self.start(router::resource(client, job, out)),
            Action::ReadRules { job } => self.start(router::rules(client, wire, job, out)),
            Action::ReadSessions { job } => self.start(router::sessions(client, job, out)),
            _ => {}
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Guard's tasks, when it runs.
struct GuardTasks {
    follower: Option<JoinHandle<()>>,
    watcher: Option<mpsc::Sender<Vec<crowdsec_lapi::Alert>>>,
}

/// Starts guard's log follower and, with machine credentials, its watcher task.
fn start_guard(config: &Config, events: &mpsc::Sender<Event>) -> Result<GuardTasks, String> {
    let Some(settings) = &config.guard.settings else {
        return Ok(GuardTasks {
            follower: None,
            watcher: None,
        });
    };
    let follower = tokio::spawn(guard::follow_log(
        clients::router_config(config),
        events.clone(),
    ));
    let watcher = match &config.guard.machine {
        None => {
            tracing::info!(
                "guard bans locally only: set CROWDSEC_MACHINE_ID and CROWDSEC_MACHINE_PASSWORD to share its bans with LAPI"
            );
            None
        }
        Some((id, password)) => {
            let mut w = crowdsec_lapi::WatcherConfig::new(config.lapi.url.clone(), id.clone(), "");
            w.password = Some(password.clone());
            w.ca_certs = config.lapi.ca.clone();
            w.insecure_skip_verify = config.lapi.insecure_skip_verify;
            w.version = env!("CARGO_PKG_VERSION").to_owned();
            w.scenarios = crate::guard::Scenario::ALL
                .iter()
                .filter(|s| match s {
                    crate::guard::Scenario::LoginBf => settings.login.enabled,
                    crate::guard::Scenario::UserEnum => settings.user_enum.enabled,
                    crate::guard::Scenario::PortScan => settings.portscan.enabled,
                })
                .map(|s| s.name().to_owned())
                .collect();
            Some(guard::spawn_watcher(w, events.clone())?)
        }
    };
    Ok(GuardTasks {
        follower: Some(follower),
        watcher,
    })
}

/// Runs the daemon until `shutdown` completes, then abandons in-flight work, sends `/quit`
/// within 5 s, and returns. Router entries stay and expire by their own timeouts. Fails only if
/// the LAPI client cannot be built from the (already validated) configuration.
pub async fn run(
    config: Config,
    metrics: Arc<Metrics>,
    health: Arc<Mutex<Health>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let started_unix = unix_now();
    let lapi = LapiClient::new(clients::lapi_config(&config)).map_err(|e| e.to_string())?;
    let (events_tx, mut events) = mpsc::channel::<Event>(8);
    let resolver = lapi_host(&config.lapi.url)
        .filter(|_| config.safety.settings.protections.lapi)
        .map(|(host, port)| tokio::spawn(resolve_lapi(host, port, events_tx.clone())));
    let guard_tasks = start_guard(&config, &events_tx)?;
    let lapi = lapi::spawn(lapi, events_tx);
    let (router_tx, mut router_rx) = mpsc::channel::<(u64, Msg)>(8);
    let settings = Settings::from_config(&config);
    let mut io = RouterIo {
        config: clients::router_config(&config),
        wire: Wire {
            prefix: settings.comment_prefix.clone(),
            lists: settings.lists.clone().map(Option::unwrap_or_default),
        },
        client: None,
        job: None,
        out: router_tx,
    };
    let mut sup = Supervisor::new(settings, metrics, rand::random(), Instant::now());
    let mut gauges_at = Instant::now();
    // Something happened since the gauges were last set.
    let mut gauges_stale = true;
    tokio::pin!(shutdown);
    loop {
        let now = Instant::now();
        if io.client.as_ref().is_some_and(Client::is_closed) {
            // The connection ended while idle (a router reboot, a killed session).
            io.client = None;
            sup.handle(
                now,
                Event::RouterClosed("connection closed by the router".into()),
            );
        }
        while let Some(action) = sup.poll_action(now) {
            gauges_stale = true;
            match action {
                Action::Poll {
                    startup,
                    deadline,
                    fresh,
                } => {
                    let _ = lapi.try_send(lapi::Request::Poll {
                        startup,
                        deadline,
                        fresh,
                    });
                }
                Action::PushUsage { items, window } => {
                    let payload = crate::usage::payload(items, started_unix, unix_now(), window);
                    let _ = lapi.try_send(lapi::Request::Push(payload));
                }
                Action::PushAlerts(alerts) => {
                    if let Some(w) = &guard_tasks.watcher
                        && w.try_send(alerts).is_err()
                    {
                        sup.handle(
                            now,
                            Event::AlertsPushed(Err(crate::supervisor::Failure::new(
                                crate::supervisor::FailureKind::Timeout,
                                "the watcher task is busy",
                            ))),
                        );
                    }
                }
                other => io.perform(other),
            }
        }
        *health.lock().unwrap_or_else(|p| p.into_inner()) = sup.health(now);
        if gauges_stale && now >= gauges_at {
            sup.publish(now);
            gauges_at = now + GAUGES_EVERY;
            gauges_stale = false;
        }
        let mut wake = sup.next_timeout(now);
        if gauges_stale {
            wake = wake.min(gauges_at);
        }
        let wake = wake.max(now + Duration::from_millis(1));
        tokio::select! {
            _ = &mut shutdown => break,
            Some(event) = events.recv() => {
                sup.handle(Instant::now(), event);
                gauges_stale = true;
            }
            Some((job, msg)) = router_rx.recv() => {
                let event = match msg {
                    Msg::Client(client) => {
                        let local = client.local_addr().map(|a| a.ip());
                        let peer = client.peer_addr().map(|a| a.ip());
                        io.client = Some(client);
                        RouterEvent::Connected { local, peer }
                    }
                    Msg::Event(e) => e,
                };
                sup.handle(Instant::now(), Event::Router(job, event));
                gauges_stale = true;
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    if let Some(job) = io.job.take() {
        job.abort();
    }
    if let Some(r) = resolver {
        r.abort();
    }
    if let Some(f) = guard_tasks.follower {
        f.abort();
    }
    if let Some(client) = io.client.take() {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, client.quit()).await;
    }
    log_memory_profile(&sup);
    tracing::info!("tikban stopped");
    Ok(())
}

/// The `memory profile` line (`docs/benchmarks.md`): heap bytes per structure, and the process
/// totals when the binary counts allocations (the `heap-profile` feature).
fn log_memory_profile(sup: &Supervisor) {
    let p = sup.heap_profile();
    let (heap_now, heap_peak) = crate::heap::allocated().map_or((None, None), |a| {
        (Some(a.current as u64), Some(a.peak as u64))
    });
    tracing::info!(
        decisions = sup.cache().len(),
        cache_v4 = p.cache.v4 as u64,
        cache_other = p.cache.other as u64,
        cache_multi = p.cache.multi as u64,
        router_view = p.view as u64,
        guard = p.guard as u64,
        heap_now,
        heap_peak,
        "memory profile (bytes)"
    );
}
