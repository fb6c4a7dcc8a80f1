//! The thin I/O shell: HTTP/1.1 (hyper 1) over TCP or rustls, one kept-alive connection.
//!
//! Endpoints used (`docs/reference/crowdsec-lapi.md` §1, §3): `GET /v1/decisions/stream`, `GET /health`,
//! `POST /v1/usage-metrics`. Never `HEAD` on the stream (1.4.6 advances the cursor and the delta is
//! lost) and never live `GET /v1/decisions` with the stream key (it moves the same cursor).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use secrecy::{ExposeSecret, SecretString};

use crate::batch::Batch;
use crate::cache::DecisionCache;
use crate::config::{ConfigError, LapiConfig};
use crate::decision::Interner;
use crate::http::{
    Answer, Endpoint, check_timeouts, parse_url, read_error_text, tls_connector, user_agent,
};
use crate::metrics::UsageMetrics;
use crate::stream_parser::{DecisionStream, ParseError, StreamEvent, StreamParser, StreamStats};
use crate::text::{MAX_PEER_TEXT, peer_text, redact_url};

/// Backstop for the response headers of a `startup=true` snapshot. The caller's overall deadline
/// for the snapshot (tikban: 10 × `CROWDSEC_POLL_TIMEOUT`, at least 5 min) ends the wait first.
const SNAPSHOT_HEADERS_WITHIN: Duration = Duration::from_secs(3600);

/// A request to LAPI failed. The caller keeps its previous state and retries with a
/// backoff (the daemon owns the retry policy). Messages never contain the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LapiError {
    /// TCP connect failed.
    #[error("cannot connect to LAPI at {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (certificate not trusted, client certificate refused, …).
    #[error("TLS handshake with LAPI {server} failed: {source}")]
    Tls {
        /// Server name used for verification.
        server: String,
        /// The error.
        source: std::io::Error,
    },
    /// The whole poll did not finish by the deadline its caller gave
    /// ([`LapiClient::poll`]): a stalled, trickling or endless response. The connection was
    /// dropped and the next poll is a startup snapshot.
    #[error(
        "LAPI poll did not finish by its deadline ({after:?} after it started); the connection \
         was dropped and nothing of the response was applied"
    )]
    Deadline {
        /// Time from the start of the poll to the deadline.
        after: Duration,
    },
    /// A phase took longer than its limit.
    #[error("LAPI {phase} timed out after {after:?}")]
    Timeout {
        /// `connect`, `response headers` or `response body`.
        phase: &'static str,
        /// The limit.
        after: Duration,
    },
    /// HTTP protocol error (connection reset, bad framing, body cut short).
    #[error("HTTP error talking to LAPI: {0}")]
    Http(#[from] hyper::Error),
    /// LAPI answered with an unexpected status.
    #[error("LAPI {endpoint} answered {status}, expected {expected}: {message}{hint}",
        hint = if *status == 401 || *status == 403 { " (check the API key or client certificate)" } else { "" })]
    Status {
        /// The path called.
        endpoint: &'static str,
        /// The status wanted.
        expected: u16,
        /// The status received.
        status: u16,
        /// LAPI's `message`, or the start of the body: at most 256 characters, control characters
        /// escaped, any occurrence of the API key replaced by `<redacted>`.
        message: String,
    },
    /// The stream body is malformed or truncated: nothing from it was applied.
    #[error("LAPI stream body rejected: {0}")]
    Parse(#[from] ParseError),
}

impl LapiError {
    /// True for 401/403: a wrong key or refused certificate; retrying will not help.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            LapiError::Status {
                status: 401 | 403,
                ..
            }
        )
    }
}

/// Outcome of [`LapiClient::push_usage_metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsOutcome {
    /// LAPI accepted the payload (201).
    Sent,
    /// LAPI is older than 1.6.3 (404). Logged once; later calls return this without a request.
    Unsupported,
}

/// A LAPI bouncer client.
///
/// Call order: [`poll`](Self::poll) every update interval (the first is `startup=true`), apply the
/// returned [`Batch`] to a [`DecisionCache`](crate::DecisionCache); on error keep the cache, wait
/// with a backoff and poll again.
/// [`push_usage_metrics`](Self::push_usage_metrics) every ≥ 15 minutes.
pub struct LapiClient {
    /// Host, TLS, User-Agent and timeouts (shared with the watcher).
    ep: Endpoint,
    api_key: Option<HeaderValue>,
    /// The key as text, only to redact it from error bodies that echo it.
    api_key_text: Option<SecretString>,
    filter_query: String,
    types: Vec<String>,
    max_element: usize,
    max_body: u64,
    max_decisions: u64,
    /// An idle kept-alive connection: present only between complete exchanges, so a request
    /// abandoned midway (an error, a deadline, a dropped future) can never leave a half-read
    /// response on it.
    conn: Option<SendRequest<Full<Bytes>>>,
    /// Labels decoded from the body (origins, scenarios, types).
    interner: Interner,
    /// Labels derived for the batch (`lists:<scenario>`).
    labels: Interner,
    needs_startup: bool,
    metrics_supported: bool,
}

impl std::fmt::Debug for LapiClient {
    /// Shows where and how the client connects; never the API key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LapiClient")
            .field("host", &self.ep.host)
            .field("port", &self.ep.port)
            .field("base_path", &self.ep.base_path)
            .field("tls", &self.ep.tls.is_some())
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("filter_query", &self.filter_query)
            .field("types", &self.types)
            .field("needs_startup", &self.needs_startup)
            .field("metrics_supported", &self.metrics_supported)
            .finish_non_exhaustive()
    }
}

/// Characters kept as-is in a query value; `,` separates list items for LAPI.
fn encode_query_value(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl LapiClient {
    /// Checks the configuration and prepares TLS. Does not connect.
    pub fn new(cfg: LapiConfig) -> Result<Self, ConfigError> {
        let target = parse_url(&cfg.url)?;
        let https = target.https;

        let has_cert = cfg.client_cert.is_some();
        if has_cert && !https {
            return Err(ConfigError::CertNeedsHttps {
                url: redact_url(&cfg.url),
            });
        }
        if !has_cert && cfg.api_key.is_none() {
            return Err(ConfigError::NoCredentials);
        }
        let api_key = match (&cfg.api_key, has_cert) {
            (Some(k), false) => {
                let mut v = HeaderValue::from_str(k.expose_secret())
                    .map_err(|_| ConfigError::InvalidApiKey)?;
                if k.expose_secret().is_empty() {
                    return Err(ConfigError::InvalidApiKey);
                }
                v.set_sensitive(true);
                Some(v)
            }
            (Some(_), true) => {
                // A presented certificate takes precedence on LAPI's side anyway (§2).
                tracing::info!("client certificate configured: the API key is not sent");
                None
            }
            (None, _) => None,
        };
        let user_agent = user_agent(&cfg.version)?;
        check_timeouts(cfg.connect_timeout, cfg.request_timeout)?;
        let tls = tls_connector(&target, &cfg, &cfg.url)?;
        let ep = Endpoint::new(
            target,
            tls,
            user_agent,
            cfg.connect_timeout,
            cfg.request_timeout,
        );

        let mut filter_query = String::new();
        for (k, list) in [
            ("scopes", &cfg.scopes),
            ("origins", &cfg.origins),
            ("scenarios_containing", &cfg.scenarios_containing),
            ("scenarios_not_containing", &cfg.scenarios_not_containing),
        ] {
            let items: Vec<&str> = list
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .collect();
            if items.is_empty() {
                continue;
            }
            filter_query.push('&');
            filter_query.push_str(k);
            filter_query.push('=');
            encode_query_value(&items.join(","), &mut filter_query);
        }
        let api_key_text = if api_key.is_some() {
            cfg.api_key.clone()
        } else {
            None
        };
        Ok(LapiClient {
            api_key_text,
            ep,
            api_key,
            filter_query,
            types: cfg
                .decision_types
                .iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect(),
            max_element: cfg.max_element_bytes,
            max_body: cfg.max_body_bytes,
            max_decisions: cfg.max_decisions,
            conn: None,
            interner: Interner::default(),
            labels: Interner::default(),
            needs_startup: true,
            metrics_supported: true,
        })
    }

    /// True when the next [`poll`](Self::poll) asks for `startup=true`: the first poll, and the
    /// first after any failed poll (1.4.6 advances the cursor before writing the body, §3, so a
    /// failed delta may be lost for good; a snapshot re-syncs).
    pub fn next_poll_is_startup(&self) -> bool {
        self.needs_startup
    }

    /// Forces the next poll to be a `startup=true` snapshot (e.g. after a router reboot).
    pub fn force_startup(&mut self) {
        self.needs_startup = true;
    }

    /// Polls the stream and returns the whole response as a compact [`Batch`]: `deleted` and
    /// `new` decisions, canonicalised, `new` filtered by decision type. Returns `Ok` only after
    /// the body parsed to its end; a failed, truncated or capped response is an `Err` and nothing
    /// of it can reach the cache.
    ///
    /// `deadline` bounds the whole poll: connecting, the response headers and the entire body.
    /// A stalled, trickling or endless body ends with [`LapiError::Deadline`] at `deadline`; the
    /// connection is dropped and the next poll is a startup snapshot. Give a deadline long enough
    /// for the largest snapshot expected (a 100k snapshot is ~14 MB,
    /// `docs/reference/crowdsec-lapi.md` §6).
    ///
    /// **Cancel safety**: dropping the future before it completes (a `select!` with a shutdown
    /// signal, a caller's own timeout) leaves the client usable: the connection in use is dropped
    /// with the future, nothing of the response is kept, the filters are untouched, and the next
    /// poll is a startup snapshot (as after any failed poll).
    pub async fn poll(&mut self, deadline: tokio::time::Instant) -> Result<Batch, LapiError> {
        let startup = self.needs_startup;
        // Cleared only once a whole response is in hand: a failed, timed-out or dropped poll
        // leaves the next one a snapshot (1.4.6 advances the cursor before writing the body, §3).
        self.needs_startup = true;
        let started = tokio::time::Instant::now();
        let batch = match tokio::time::timeout_at(deadline, self.poll_batch(startup)).await {
            Ok(result) => result?,
            Err(_) => {
                self.conn = None;
                return Err(LapiError::Deadline {
                    after: deadline.saturating_duration_since(started),
                });
            }
        };
        self.needs_startup = false;
        let stats = batch.stats();
        tracing::debug!(
            startup,
            new = stats.new,
            deleted = stats.deleted,
            skipped = stats.skipped,
            oversized = stats.oversized,
            bytes = stats.bytes,
            "LAPI stream polled"
        );
        Ok(batch)
    }

    /// A `startup=true` snapshot streamed straight into a fresh [`DecisionCache`], with no
    /// [`Batch`] in between: the cold start of a large decision set holds only the cache
    /// (`docs/benchmarks.md`, "Memory at scale"). The cache is sized once, from `Content-Length`
    /// and the size of the first decisions, so it does not grow while it fills. `deleted`
    /// elements are counted and ignored (a snapshot's deleted decisions ended before it and are
    /// not in a fresh cache). Same deadline, caps and cursor rules as [`poll`](Self::poll); a
    /// failed snapshot leaves nothing behind.
    pub async fn poll_snapshot(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<(DecisionCache, StreamStats), LapiError> {
        self.needs_startup = true;
        let started = tokio::time::Instant::now();
        let result = match tokio::time::timeout_at(deadline, self.poll_into_cache()).await {
            Ok(result) => result?,
            Err(_) => {
                self.conn = None;
                return Err(LapiError::Deadline {
                    after: deadline.saturating_duration_since(started),
                });
            }
        };
        self.needs_startup = false;
        Ok(result)
    }

    async fn poll_into_cache(&mut self) -> Result<(DecisionCache, StreamStats), LapiError> {
        let (mut body, sender, length) = self.stream_request_sized(true).await?;
        let parser = self.parser();
        let request_timeout = self.ep.request_timeout;
        let LapiClient {
            interner,
            labels,
            types,
            ..
        } = self;
        let now = std::time::Instant::now();
        let mut cache = DecisionCache::new(now);
        let read = AtomicU64::new(0);
        let mut added = 0u64;
        let mut sized = false;
        let mut sink = |ev| {
            let StreamEvent::New(d) = ev else { return };
            if !types.is_empty()
                && !types
                    .iter()
                    .any(|t| d.kind.as_str().eq_ignore_ascii_case(t))
            {
                return;
            }
            let origin = d.origin_label(labels);
            cache.insert(d.value, d.id, d.duration, &origin, now);
            added += 1;
            // Once 512 decisions and 64 KiB are in, size the rest of the body from them, once.
            let so_far = read.load(Ordering::Relaxed);
            if !sized && added >= 512 && so_far >= 64 * 1024 {
                sized = true;
                if let Some(total) = length {
                    let expected = u128::from(total) * u128::from(added) / u128::from(so_far);
                    let expected = usize::try_from(expected * 105 / 100).unwrap_or(usize::MAX);
                    let more = expected.saturating_sub(cache.len()).min(4_000_000);
                    cache.reserve(more);
                }
            }
        };
        let stats = read_stream_with(
            &mut body,
            parser,
            request_timeout,
            interner,
            &mut sink,
            &read,
        )
        .await?;
        // Without a `Content-Length` (LAPI sends large bodies chunked) the table was sized by
        // growth; give back the slack (a no-op when it was sized up front).
        cache.shrink();
        self.conn = Some(sender);
        Ok((cache, stats))
    }

    async fn poll_batch(&mut self, startup: bool) -> Result<Batch, LapiError> {
        let (mut body, sender) = self.stream_request(startup).await?;
        let parser = self.parser();
        let request_timeout = self.ep.request_timeout;
        let LapiClient {
            interner,
            labels,
            types,
            ..
        } = self;
        let mut batch = Batch::new(startup);
        let mut sink = |ev| match ev {
            StreamEvent::Deleted(d) => batch.push_deleted(d),
            StreamEvent::New(d) => {
                if types.is_empty()
                    || types
                        .iter()
                        .any(|t| d.kind.as_str().eq_ignore_ascii_case(t))
                {
                    batch.push_new(d, labels);
                } else {
                    batch.count_filtered();
                }
            }
        };
        let stats = read_stream(&mut body, parser, request_timeout, interner, &mut sink).await?;
        batch.set_stats(stats);
        // The exchange is complete: the connection may carry the next request.
        self.conn = Some(sender);
        Ok(batch)
    }

    /// The streaming primitive under [`poll`](Self::poll): `sink` sees every decoded element as
    /// the body arrives, unfiltered, before the response is known to be complete. A caller using
    /// it directly must buffer and apply only after `Ok` (as `poll` does). Does not change the
    /// startup/delta mode, and has no overall deadline of its own (wrap it in one).
    pub async fn poll_each(
        &mut self,
        startup: bool,
        sink: &mut impl FnMut(StreamEvent),
    ) -> Result<StreamStats, LapiError> {
        let (mut body, sender) = self.stream_request(startup).await?;
        let parser = self.parser();
        let stats = read_stream(
            &mut body,
            parser,
            self.ep.request_timeout,
            &mut self.interner,
            sink,
        )
        .await?;
        self.conn = Some(sender);
        Ok(stats)
    }

    fn parser(&self) -> StreamParser {
        StreamParser::new(self.max_element)
            .with_max_body(self.max_body)
            .with_max_elements(self.max_decisions)
    }

    /// Sends the stream request and checks the status and the announced length. On success
    /// returns the body and the connection, which goes back to `self.conn` only once the body
    /// has been read to its end.
    async fn stream_request(
        &mut self,
        startup: bool,
    ) -> Result<(hyper::body::Incoming, SendRequest<Full<Bytes>>), LapiError> {
        let (body, sender, _) = self.stream_request_sized(startup).await?;
        Ok((body, sender))
    }

    /// [`stream_request`](Self::stream_request), with the `Content-Length` when LAPI sent one.
    async fn stream_request_sized(
        &mut self,
        startup: bool,
    ) -> Result<(hyper::body::Incoming, SendRequest<Full<Bytes>>, Option<u64>), LapiError> {
        let path = format!(
            "{}/v1/decisions/stream?{}{}",
            self.ep.base_path,
            if startup {
                "startup=true"
            } else {
                "startup=false"
            },
            self.filter_query
        );
        // A snapshot's headers come only once LAPI has read and encoded every decision: with a
        // million, that can take minutes on a small LAPI host. Its wait is bounded by the
        // snapshot's overall deadline (the caller's), not by the request timeout.
        let headers_within = if startup {
            SNAPSHOT_HEADERS_WITHIN
        } else {
            self.ep.request_timeout
        };
        let (resp, sender) = self
            .send_waiting(Method::GET, &path, Bytes::new(), headers_within)
            .await?;
        let status = resp.status();
        let length = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = resp.into_body();
        if status != StatusCode::OK {
            let (message, _) = self.read_error_body(&mut body).await;
            return Err(LapiError::Status {
                endpoint: "/v1/decisions/stream",
                expected: 200,
                status: status.as_u16(),
                message,
            });
        }
        if length.is_some_and(|l| l > self.max_body) {
            return Err(LapiError::Parse(ParseError::BodyTooLarge {
                max: self.max_body,
            }));
        }
        Ok((body, sender, length))
    }

    /// `GET /health` (no auth, leaves the stream cursor alone): `Ok` on 200.
    pub async fn health(&mut self) -> Result<(), LapiError> {
        let (resp, sender) = self
            .send(Method::GET, "/health", Bytes::new(), false)
            .await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let (message, ended) = self.read_error_body(&mut body).await;
        if status == StatusCode::OK {
            if ended {
                self.conn = Some(sender);
            }
            Ok(())
        } else {
            Err(LapiError::Status {
                endpoint: "/health",
                expected: 200,
                status: status.as_u16(),
                message,
            })
        }
    }

    /// `POST /v1/usage-metrics`. A 404 (LAPI < 1.6.3) is logged once and disables the feature.
    pub async fn push_usage_metrics(
        &mut self,
        metrics: &UsageMetrics,
    ) -> Result<MetricsOutcome, LapiError> {
        if !self.metrics_supported {
            return Ok(MetricsOutcome::Unsupported);
        }
        let path = format!("{}/v1/usage-metrics", self.ep.base_path);
        let (resp, sender) = self
            .send(Method::POST, &path, Bytes::from(metrics.to_json()), true)
            .await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let (message, ended) = self.read_error_body(&mut body).await;
        if ended
            && matches!(
                status,
                StatusCode::CREATED | StatusCode::OK | StatusCode::NOT_FOUND
            )
        {
            self.conn = Some(sender);
        }
        match status {
            StatusCode::CREATED | StatusCode::OK => Ok(MetricsOutcome::Sent),
            StatusCode::NOT_FOUND => {
                tracing::warn!(
                    "LAPI has no usage-metrics endpoint (older than 1.6.3?): usage metrics disabled"
                );
                self.metrics_supported = false;
                Ok(MetricsOutcome::Unsupported)
            }
            _ => Err(LapiError::Status {
                endpoint: "/v1/usage-metrics",
                expected: 201,
                status: status.as_u16(),
                message,
            }),
        }
    }

    // === internals ===

    /// Reads at most a few KiB of a body and extracts LAPI's `message`, made safe to print
    /// (escaped, bounded, the API key redacted). The flag is true when the body ended.
    async fn read_error_body(&self, body: &mut hyper::body::Incoming) -> (String, bool) {
        let (text, ended) = read_error_text(body, self.ep.request_timeout).await;
        (self.peer(&text), ended)
    }

    /// Text from LAPI made safe for an error or a log line.
    fn peer(&self, text: &str) -> String {
        let key = self.api_key_text.as_ref().map(|k| k.expose_secret());
        peer_text(text, key, MAX_PEER_TEXT)
    }

    /// Sends a request; its response headers may take up to the request timeout.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        auth: bool,
    ) -> Result<Answer, LapiError> {
        let req = self.build(method, path, body, auth)?;
        self.ep.send(&mut self.conn, req).await
    }

    /// An authenticated request whose response headers may take up to `headers_within`.
    async fn send_waiting(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        headers_within: Duration,
    ) -> Result<Answer, LapiError> {
        let req = self.build(method, path, body, true)?;
        self.ep
            .send_waiting(&mut self.conn, req, headers_within)
            .await
    }

    /// The request, with the API key when `auth`.
    fn build(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        auth: bool,
    ) -> Result<Request<Full<Bytes>>, LapiError> {
        let mut builder = self.ep.request(method, path);
        if auth {
            if let Some(k) = &self.api_key {
                builder = builder.header("X-Api-Key", k.clone());
            }
        }
        // The kept-alive connection is reused unless the server closed it. It is handed back to
        // the caller, which returns it to `self.conn` only after reading the whole response; on
        // any error it is dropped and the next request reconnects.
        builder
            .body(Full::new(body))
            .map_err(|_| LapiError::Status {
                endpoint: "request",
                expected: 0,
                status: 0,
                message: format!("cannot build a request for path {path:?}"),
            })
    }
}

/// Reads a stream body into `sink` through a capped parser. Each wait for the next chunk is
/// bounded by `gap`.
async fn read_stream(
    body: &mut hyper::body::Incoming,
    parser: StreamParser,
    gap: Duration,
    interner: &mut Interner,
    sink: &mut impl FnMut(StreamEvent),
) -> Result<StreamStats, LapiError> {
    read_stream_with(body, parser, gap, interner, sink, &AtomicU64::new(0)).await
}

/// [`read_stream`], keeping `read` at the body bytes received so far (for the sink).
async fn read_stream_with(
    body: &mut hyper::body::Incoming,
    parser: StreamParser,
    gap: Duration,
    interner: &mut Interner,
    sink: &mut impl FnMut(StreamEvent),
    read: &AtomicU64,
) -> Result<StreamStats, LapiError> {
    let mut stream = DecisionStream::with_parser(parser, interner);
    loop {
        let frame = match tokio::time::timeout(gap, body.frame()).await {
            Err(_) => {
                return Err(LapiError::Timeout {
                    phase: "response body",
                    after: gap,
                });
            }
            Ok(None) => break,
            Ok(Some(f)) => f?,
        };
        if let Ok(data) = frame.into_data() {
            read.fetch_add(data.len() as u64, Ordering::Relaxed);
            stream.feed(&data, sink)?;
        }
    }
    Ok(stream.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn client(url: &str) -> Result<LapiClient, ConfigError> {
        LapiClient::new(LapiConfig::new(url).with_api_key("k3y"))
    }

    #[test]
    fn accepts_http_and_https_urls_with_prefixes() {
        let c = client("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            (c.ep.host.as_str(), c.ep.port, c.ep.base_path.as_str()),
            ("127.0.0.1", 8080, "")
        );
        let c = client("https://lapi.example/crowdsec/").unwrap();
        assert_eq!(
            (c.ep.host.as_str(), c.ep.port, c.ep.base_path.as_str()),
            ("lapi.example", 443, "/crowdsec")
        );
        let c = client("http://[::1]:81").unwrap();
        assert_eq!((c.ep.host.as_str(), c.ep.port), ("::1", 81));
    }

    #[test]
    fn rejects_bad_urls_and_credentials() {
        assert!(matches!(
            client("ftp://x"),
            Err(ConfigError::UnsupportedScheme { .. })
        ));
        assert!(client("localhost:8080").is_err());
        assert!(matches!(
            client("http://u:p@x/"),
            Err(ConfigError::InvalidUrl { .. })
        ));
        assert!(matches!(
            LapiClient::new(LapiConfig::new("http://x")),
            Err(ConfigError::NoCredentials)
        ));
        let mut cfg = LapiConfig::new("http://x");
        cfg.api_key = Some(SecretString::from("bad\nkey-secret"));
        let e = LapiClient::new(cfg).unwrap_err();
        assert!(matches!(e, ConfigError::InvalidApiKey));
        assert!(!e.to_string().contains("secret"));
        let mut cfg = LapiConfig::new("http://x").with_api_key("k");
        let cert =
            rustls_pki_types::pem::PemObject::from_pem_slice(include_bytes!("testdata/client.pem"))
                .unwrap();
        let key = rustls_pki_types::pem::PemObject::from_pem_slice(include_bytes!(
            "testdata/client-key.pem"
        ))
        .unwrap();
        cfg.client_cert = Some(crate::ClientCert::new(vec![cert], key).unwrap());
        assert!(matches!(
            LapiClient::new(cfg),
            Err(ConfigError::CertNeedsHttps { .. })
        ));
        let mut cfg = LapiConfig::new("http://x").with_api_key("k");
        cfg.version = "1.0/extra".into();
        assert!(matches!(
            LapiClient::new(cfg),
            Err(ConfigError::InvalidVersion { .. })
        ));
    }

    #[test]
    fn url_credentials_are_refused_and_never_echoed() {
        for url in [
            "http://bob:PASSWORD@lapi:8080/",
            "https://bob:PASSWORD@lapi/x?y",
        ] {
            let err = client(url).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(
                !text.contains("PASSWORD") && !text.contains("bob"),
                "{text}"
            );
            assert!(text.contains("<redacted>@lapi"), "{text}");
        }
        let mut cfg = LapiConfig::new("http://bob:PASSWORD@lapi/");
        cfg.client_cert = Some(test_cert());
        let text = LapiClient::new(cfg).unwrap_err().to_string();
        assert!(!text.contains("PASSWORD"), "{text}");
    }

    fn test_cert() -> crate::ClientCert {
        let cert =
            rustls_pki_types::pem::PemObject::from_pem_slice(include_bytes!("testdata/client.pem"))
                .unwrap();
        let key = rustls_pki_types::pem::PemObject::from_pem_slice(include_bytes!(
            "testdata/client-key.pem"
        ))
        .unwrap();
        crate::ClientCert::new(vec![cert], key).unwrap()
    }

    #[test]
    fn user_agent_is_exactly_type_slash_version() {
        let c = client("http://x").unwrap();
        assert_eq!(
            c.ep.user_agent.to_str().unwrap(),
            format!("tikban/v{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(c.ep.user_agent.to_str().unwrap().matches('/').count(), 1);
    }

    #[test]
    fn filters_become_encoded_query_parameters() {
        let mut cfg = LapiConfig::new("http://x").with_api_key("k");
        cfg.origins = vec!["crowdsec".into(), "lists".into()];
        cfg.scenarios_containing = vec!["ssh bf".into()];
        cfg.scenarios_not_containing = vec!["a&b".into()];
        let c = LapiClient::new(cfg).unwrap();
        assert_eq!(
            c.filter_query,
            "&scopes=ip,range&origins=crowdsec,lists&scenarios_containing=ssh%20bf&scenarios_not_containing=a%26b"
        );
    }

    #[test]
    fn api_key_header_is_sensitive_and_debug_hides_it() {
        let c = client("http://x").unwrap();
        assert!(c.api_key.as_ref().unwrap().is_sensitive());
        assert!(!format!("{c:?}").contains("k3y"));
    }
}
