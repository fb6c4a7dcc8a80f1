//! CrowdSec LAPI bouncer client for tikban: streams decisions from `GET /v1/decisions/stream`,
//! turns them into canonical values, and keeps the desired ban state in RAM.
//!
//! What it must **not** do: it never writes files (the state lives only in memory and is rebuilt
//! from a `startup=true` snapshot), never sends `HEAD` to the stream and never calls live
//! `GET /v1/decisions` (both move the bouncer's stream cursor on older LAPIs and lose deltas,
//! `docs/reference/crowdsec-lapi.md` §3), never holds a whole response body in memory (a 100k snapshot is
//! ~14 MB, §6), never applies a failed or truncated response, and never logs or prints the API key.
//! It knows nothing about RouterOS.
//!
//! # Main types
//! - [`LapiClient`] (I/O, tokio + hyper + rustls): [`poll`](LapiClient::poll) returns a [`Batch`]
//!   only once the whole body parsed, within a deadline the caller gives; [`health`](LapiClient::health);
//!   [`push_usage_metrics`](LapiClient::push_usage_metrics). Configured by [`LapiConfig`].
//! - [`StreamParser`] / [`DecisionStream`] (sans-IO): incremental body parser, one element buffered
//!   at a time (its used fields only), bad and oversized elements counted and skipped, caps on
//!   the body and the decisions per response.
//! - [`Decision`], [`Value`], [`GoDuration`], [`Label`] (sans-IO): the canonical model.
//! - [`DecisionCache`] (sans-IO, time passed in): per-value decision ids and expiry;
//!   [`apply`](DecisionCache::apply) and [`expire`](DecisionCache::expire) return a [`ChangeSet`].
//! - [`UsageMetrics`], [`CounterDeltas`] (sans-IO): the usage-metrics payload.
//! - The watcher side, for bans tikban makes itself: [`Watcher`] (I/O) logs in as a machine
//!   (JWT, renewed before expiry and after a 401), [`push_alerts`](Watcher::push_alerts) shares
//!   a ban with every bouncer of the LAPI, [`allowlist_check`](Watcher::allowlist_check) asks
//!   LAPI's allowlists (1.6.6+); [`Alert`] / [`BanAlert`] build the swagger `Alert`;
//!   [`AlertQueue`] (sans-IO) holds alerts, bounded, while LAPI is unreachable.
//!
//! # Data flow
//! ```text
//!  LAPI ──HTTP chunks──▶ LapiClient ──bytes──▶ StreamParser ──element bytes──▶ DecisionStream
//!                          │                                                      │ StreamEvent
//!                          │◀───────────── Batch (only after the body ends well) ◀┘
//!                          ▼
//!  daemon: cache.apply(&batch, now) ──▶ ChangeSet ──▶ sync engine (router)
//!          cache.expire(now) at cache.next_expiry() ──▶ ChangeSet
//!          on Err: keep the cache, sleep backoff.next_delay(), poll again (a startup snapshot)
//! ```
//!
//! Why a [`Batch`] and not a callback into the cache: LAPI may send `new` before `deleted`
//! (1.7.8 chunked mode, §4), deletes must be applied first, and a response that breaks off midway
//! must change nothing. The batch is compact (canonical values, interned origins), so holding one
//! response's decisions costs far less than its JSON.
//!
//! # Example
//! ```
//! use std::time::Instant;
//! use crowdsec_lapi::{Batch, Change, DecisionCache, DecisionStream, Interner, StreamEvent};
//!
//! let body = br#"{"deleted":null,"new":[
//!   {"duration":"3h59m58.5s","id":1,"origin":"cscli","scenario":"manual","scope":"Ip","type":"ban","value":"2001:DB8::1"},
//!   {"duration":"1h","id":2,"origin":"cscli","scenario":"manual","scope":"Ip","type":"ban","value":"192.0.2.77/24"}]}"#;
//! let mut interner = Interner::default();
//! let mut batch = Batch::new(true);
//! let mut events = Vec::new();
//! let mut stream = DecisionStream::new(&mut interner);
//! for chunk in body.chunks(16) {
//!     stream.feed(chunk, &mut |e| events.push(e)).unwrap();
//! }
//! stream.finish().unwrap();
//! for e in events {
//!     match e {
//!         StreamEvent::New(d) => batch.push_new(d, &mut interner),
//!         StreamEvent::Deleted(d) => batch.push_deleted(d),
//!     }
//! }
//! let now = Instant::now();
//! let mut cache = DecisionCache::new(now);
//! let changes = cache.apply(&batch, now);
//! let added: Vec<String> = changes
//!     .iter()
//!     .filter_map(|c| match c { Change::Added { value, .. } => Some(value.to_string()), _ => None })
//!     .collect();
//! assert_eq!(added, ["2001:db8::1", "192.0.2.0/24"]);
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod alert;
mod alert_queue;
mod batch;
mod cache;
mod client;
mod config;
mod decision;
mod duration;
mod http;
mod metrics;
mod probe;
mod stream_parser;
mod table;
mod text;
mod timefmt;
mod value;
mod watcher;

#[cfg(feature = "test-harness")]
pub mod testing;

pub use alert::{
    Alert, AlertDecision, AlertEvent, AlertSource, BanAlert, MAX_ALERT_EVENTS,
    MAX_ALERT_TEXT_CHARS, MAX_EVENT_META, MAX_META_KEY_CHARS, MAX_META_VALUE_CHARS, MetaItem,
    ORIGIN_CROWDSEC,
};
pub use alert_queue::{AlertQueue, QueueStats};
pub use batch::{Batch, BatchAdd};
pub use cache::{ActiveCount, Change, ChangeSet, DecisionCache, HeapBytes};
pub use client::{LapiClient, LapiError, MetricsOutcome};
pub use config::{ClientCert, ConfigError, LapiConfig};
pub use decision::{Decision, Deletion, ElementError, Interner, Label};
pub use duration::{DurationError, GoDuration};
pub use metrics::{
    CounterDeltas, MetricItem, MetricsMeta, MetricsWindow, OsInfo, RemediationComponent,
    UsageMetrics,
};
pub use probe::{ProbeAnswer, ProbeError};
pub use stream_parser::{
    DecisionStream, OversizedElement, ParseError, Section, StreamEvent, StreamParser, StreamStats,
};
pub use table::U32Table;
pub use text::{peer_text, redact_url};
pub use value::{Value, ValueError};
pub use watcher::{AllowlistAnswer, Watcher, WatcherConfig, WatcherConfigError, WatcherError};

/// Entry points for the fuzz targets (`fuzz/`). Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::{DecisionStream, GoDuration, Interner, StreamParser, Value};

    /// Feeds `data` to the stream parser in chunks whose sizes come from the first byte; checks
    /// that decoding never panics and that bytes consumed never exceed the input.
    pub fn stream_parser(data: &[u8]) {
        let (split, body) = match data.split_first() {
            Some((s, rest)) => (usize::from(*s).max(1), rest),
            None => return,
        };
        let mut interner = Interner::with_capacity_limit(64);
        let mut stream = DecisionStream::with_parser(StreamParser::new(512), &mut interner);
        for chunk in body.chunks(split) {
            if stream.feed(chunk, &mut |_| {}).is_err() {
                return;
            }
        }
        if let Ok(stats) = stream.finish() {
            assert_eq!(stats.bytes, body.len() as u64);
        }
    }

    /// Parses Go duration text; a parsed value must print and parse back to itself.
    pub fn go_duration(data: &[u8]) {
        if let Ok(s) = std::str::from_utf8(data) {
            if let Ok(d) = GoDuration::parse(s) {
                assert_eq!(GoDuration::parse(&d.to_string()), Ok(d));
            }
        }
    }

    /// Canonicalises a value; the canonical text must be a fixed point.
    pub fn canonical_value(data: &[u8]) {
        if let Ok(s) = std::str::from_utf8(data) {
            if let Ok(v) = Value::parse(s) {
                let again = Value::parse(&v.to_string());
                assert_eq!(again, Ok(v));
            }
        }
    }
}
