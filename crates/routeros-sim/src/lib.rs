//! A RouterOS API emulator: the router that tikban's tests, benchmarks and demo talk to.
//!
//! RouterOS cannot run here, so this crate plays a MikroTik router on the binary API (8728, and
//! api-ssl on 8729). It speaks the real wire protocol through `routeros-proto` and follows
//! `docs/reference/routeros-api.md` (the project's reference, cited by section in comments) to the letter:
//! login and its failures, tags and interleaving, `!empty` on 7.18+, `/cancel`, `/quit`, and the
//! address-list semantics of §9 (normalisation, duplicates, timeout range, dynamic vs static).
//! Behaviour the reference marks or leaves **unverified** is marked the same way where it is
//! implemented, and listed in the README; `tests/calibration.rs` replays public recordings of
//! real routers against the sim (findings: `docs/reference/routeros-sim-calibration.md`).
//!
//! What it must **not** do: it is not a router. It never touches the host's network
//! configuration, never asks real DNS (DNS-name entries resolve through [`Sim::set_dns`]), and
//! models only these menus:
//! `/ip|ipv6/firewall/address-list`, `/ip|ipv6/firewall/filter|raw`, `/system/resource`,
//! `/system/identity`, `/log`, `/user/active`, `/system/script` and `/file` (the last two only
//! to count flash writes).
//!
//! # Main types
//!
//! - [`Sim`]: the router (cheap `Clone`, shared state). [`Sim::serve`] / [`Sim::serve_tls`] start
//!   a server on a spawned task and return a [`RunningSim`]; [`Sim::run`] is the binary's loop.
//! - [`SimConfig`]: users and their policies ([`User`]), modelled version, [`CostModel`],
//!   transcript, limits.
//! - Test controls: [`SimClock`] (advance time instead of sleeping), [`Faults`] (drop, stall,
//!   trap a fraction of adds, reboot; and a hostile router: endless or trickling prints
//!   ([`HostilePrint`]), a session killed on every print, a desynchronised connection), inspection ([`Sim::address_list`], [`Entry`],
//!   [`Sim::persistent_writes`], [`Sim::stats`]), [`Sim::transcript`], the memory log
//!   ([`Sim::log`] to play ssh or winbox failures, [`Sim::logs`]), logged-in users
//!   ([`Sim::add_active_session`] for an admin on winbox), RAM ([`Sim::set_memory`]), and
//!   [`control`], the same controls as text lines for the binary.
//!
//! ```text
//!  client ──TCP/TLS──▶ reader ─▶ executor (login, policies, cost, menus under the state lock)
//!                                   │
//!  client ◀────────── writer ◀──────┘ replies, each `latency` after its command arrived
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use routeros_proto::{Command, Decoder, Limits, Reply};
//! use routeros_sim::{Family, Sim, SimConfig};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Sim::new(SimConfig::default().with_user("tikban", "secret"));
//! let server = sim.serve("127.0.0.1:0").await?;
//! let mut sock = tokio::net::TcpStream::connect(server.addr()).await?;
//!
//! let mut wire = Vec::new();
//! routeros_proto::login::login_command("tikban", b"secret")?.encode(&mut wire);
//! Command::builder("/ip/firewall/address-list/add")
//!     .attr("list", "crowdsec")
//!     .attr("address", "192.0.2.1/32")
//!     .attr("timeout", "1h")
//!     .tag("1")
//!     .build()?
//!     .encode(&mut wire);
//! sock.write_all(&wire).await?;
//!
//! let mut dec = Decoder::new(Limits::default());
//! let mut replies = Vec::new();
//! let mut buf = [0u8; 4096];
//! while replies.len() < 2 {
//!     let n = sock.read(&mut buf).await?;
//!     dec.feed(&buf[..n]);
//!     while let Some(s) = dec.poll_sentence()? {
//!         replies.push(Reply::parse(&s)?);
//!     }
//! }
//! assert_eq!(replies[1].ret(), Some(&b"*1"[..]));
//!
//! let entries = sim.address_list(Family::V4, "crowdsec");
//! assert_eq!(entries[0].address, "192.0.2.1"); // a /32 is stored bare (§9)
//! assert!(entries[0].dynamic);
//! assert_eq!(sim.persistent_writes(), 0);
//!
//! sim.clock().advance(Duration::from_secs(3600)); // the timeout runs out
//! assert!(sim.address_list(Family::V4, "crowdsec").is_empty());
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod clock;
mod cmd;
mod config;
pub mod control;
mod memlog;
pub mod normalize;
pub mod query;
mod server;
mod sessions;
mod shared;
mod sim;
mod state;
pub mod timefmt;
mod tls;

pub use clock::{ClockMode, SimClock};
pub use config::{CostModel, LogTimeFormat, SimConfig, TrapCodes, User};
pub use memlog::{LogEntry, NewLogEntry};
pub use server::RunningSim;
pub use sessions::{ActiveSession, NewActiveSession};
pub use shared::{Direction, TranscriptEntry};
pub use sim::{DESYNC_WORD, Faults, HostilePrint, Sim, SimError};
pub use state::{Entry, Family, NewEntry, Rule, Stats, Table, format_id, parse_id};
pub use tls::TlsIdentity;
