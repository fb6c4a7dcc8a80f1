//! The tikban daemon: configuration, decision cache, sync engine, and metrics/health server.
//!
//! This crate is the glue. It reads the environment once ([`config`]), then joins the CrowdSec
//! LAPI client, the decision cache and the RouterOS client so that the router's address lists
//! follow CrowdSec's decisions with the fewest router commands. It must never write a file (logs
//! go to stdout, state lives in RAM), never print a secret, and never remove or change a router
//! entry whose comment does not carry its prefix.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod backoff;
pub mod checks;
pub mod config;
pub mod daemon;

pub mod engine;
pub mod guard;
pub mod heap;
pub mod http;
pub mod metrics;
#[doc(hidden)]
pub mod model;
pub mod rostime;
pub mod safety;
pub mod supervisor;
pub mod usage;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use metrics::{Health, Metrics};

/// Runs the daemon until SIGTERM or SIGINT. Exit status 0 on a clean shutdown, 1 when it cannot
/// start (an unreadable certificate file, a busy metrics port).
pub fn run(config: config::Config) -> ExitCode {
    init_logging(&config.log);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tikban: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(config))
}

async fn async_main(config: config::Config) -> ExitCode {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Mutex::new(Health::default()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut server = None;
    if let Some(addr) = config.metrics {
        match http::bind(addr).await {
            Ok(listener) => {
                // The bound address: with METRICS_PORT=0 the system picks a free port.
                let addr = listener.local_addr().unwrap_or(addr);
                tracing::info!(%addr, "serving /metrics and /health");
                let state = http::State {
                    metrics: metrics.clone(),
                    health: health.clone(),
                };
                server = Some(tokio::spawn(http::run(listener, state, wait_stop())));
            }
            Err(e) => {
                tracing::error!(%addr, cause = %e, "cannot bind the metrics server (METRICS_ADDR, METRICS_PORT)");
                return ExitCode::FAILURE;
            }
        }
    }
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "tikban started");
    // The checklist, once, in its own task with its own router session: the sync does not wait.
    checks::spawn_at_start(&config);
    let result = daemon::run(config, metrics, health, signal::shutdown()).await;
    let _ = stop_tx.send(true);
    if let Err(e) = result {
        tracing::error!(cause = %e, "invalid client configuration");
        return ExitCode::FAILURE;
    }
    if let Some(s) = server {
        let _ = s.await;
    }
    ExitCode::SUCCESS
}

fn init_logging(log: &config::LogSettings) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    // Our crates at the configured level; dependencies at warn, so `debug` does not flood the
    // router's 1000-line log with hyper internals.
    let ours = match log.level.as_str() {
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    };
    let dependencies = LevelFilter::WARN;
    let filter = filter_fn(move |meta| {
        let max = if is_ours(meta.target()) {
            ours
        } else {
            dependencies
        };
        *meta.level() <= max
    })
    .with_max_level_hint(ours.max(dependencies));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .with_target(false);
    let layer = if log.json {
        layer.json().with_filter(filter).boxed()
    } else {
        layer.with_filter(filter).boxed()
    };
    tracing_subscriber::registry().with(layer).init();
}

/// True for events of tikban's own crates (`tikban`, `crowdsec_lapi`, `routeros_client`, and
/// their modules), which log at `LOG_LEVEL`.
fn is_ours(target: &str) -> bool {
    ["tikban", "crowdsec_lapi", "routeros_client"]
        .iter()
        .any(|c| {
            target
                .strip_prefix(c)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

#[cfg(test)]
mod logging_tests {
    #[test]
    fn our_crates_and_their_modules_are_ours_and_nothing_else() {
        for t in [
            "tikban",
            "tikban::daemon",
            "crowdsec_lapi::client",
            "routeros_client",
        ] {
            assert!(super::is_ours(t), "{t}");
        }
        for t in [
            "hyper",
            "hyper::proto",
            "tikban_tests",
            "rustls::client",
            "routeros_sim",
        ] {
            assert!(!super::is_ours(t), "{t}");
        }
    }
}

mod signal {
    /// Completes on SIGTERM or SIGINT.
    pub async fn shutdown() {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
