//! The tikban daemon: configuration, decision cache, sync engine, and metrics/health server.
//!
//! This crate is the glue. It reads the environment once ([`config`]), then joins the CrowdSec
//! LAPI client, the decision cache and the RouterOS client so that the router's address lists
//! follow CrowdSec's decisions with the fewest router commands. It must never write a file (logs
//! go to stdout, state lives in RAM), never print a secret, and never remove or change a router
//! entry whose comment does not carry its prefix.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod engine;
pub mod guard;
pub mod http;
pub mod metrics;
pub mod rostime;
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
    let daemon = match daemon::Daemon::new(config, metrics, health) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(cause = %e, "invalid client configuration");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "tikban started");
    daemon.run(signal::shutdown()).await;
    let _ = stop_tx.send(true);
    if let Some(s) = server {
        let _ = s.await;
    }
    ExitCode::SUCCESS
}

fn init_logging(log: &config::LogSettings) {
    use tracing_subscriber::EnvFilter;
    // Our crates at the configured level; dependencies one step quieter at most (warn), so
    // `debug` does not flood the router's 1000-line log with hyper internals.
    let filter = EnvFilter::new(format!(
        "warn,tikban={0},crowdsec_lapi={0},routeros_client={0}",
        log.level
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .with_target(false);
    if log.json {
        builder.json().init();
    } else {
        builder.init();
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
