//! A one-shot probe of LAPI for `tikban check`: is it reachable, does the TLS handshake succeed
//! with the configured trust, is the key (or client certificate) accepted, and what time does
//! LAPI think it is.
//!
//! It sends `HEAD /v1/decisions?ip=192.0.2.255`, the one authenticated request that leaves the
//! bouncer's stream cursor alone in every LAPI version (`docs/reference/crowdsec-lapi.md` §1,
//! §3): never `HEAD` on the stream (1.4.6 consumes a delta) and never a live
//! `GET /v1/decisions` (it advances `last_pull`). LAPI runs the query behind a `HEAD` too, so
//! the probe asks about one documentation address (RFC 5737) that no ban covers: without the
//! filter LAPI 1.4.6 reads every active decision, 16 s at a million, while the snapshot it is
//! about to send needs the same CPU (`docs/benchmarks.md`, "Memory at scale"). It uses its own
//! short-lived connection, so it never disturbs a [`LapiClient`]'s kept-alive one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, DATE, HOST, HeaderValue, USER_AGENT};
use http::{Method, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::client::{LapiClient, LapiError};
use crate::config::{ConfigError, LapiConfig};
use crate::http as http_plumbing;
use crate::text::{peer_text, redact_url};

/// The address the probe asks about: TEST-NET-1 (RFC 5737), reserved for documentation, so no
/// real ban covers it and LAPI's query for it returns nothing, fast, at any table size.
const PROBE_IP: &str = "192.0.2.255";

/// The longest `Date` header kept, in characters (an IMF-fixdate is 29).
const MAX_DATE: usize = 64;

/// What LAPI answered to `HEAD /v1/decisions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// The HTTP status: 200 when the key or certificate is accepted, 403 when not.
    pub status: u16,
    /// The `Date` header as sent (escaped, at most 64 characters), if any.
    pub date: Option<String>,
    /// The negotiated TLS version (`TLSv1_3`, …) for an `https://` URL; `None` over plain HTTP.
    pub tls_version: Option<String>,
    /// Time from the start of the probe to the response headers.
    pub elapsed: Duration,
}

/// The probe could not get an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The configuration cannot make a request (a bad URL, an unusable certificate).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Connecting, the TLS handshake or the exchange failed, or the deadline passed before a
    /// connection was up ([`LapiError::Connect`], [`LapiError::Tls`], [`LapiError::Http`],
    /// [`LapiError::Deadline`]).
    #[error(transparent)]
    Lapi(#[from] LapiError),
    /// The connection (and TLS handshake) succeeded, but no answer came before the deadline:
    /// LAPI is up and overloaded or stalled, not unreachable.
    #[error("LAPI accepted the connection but sent no answer within {} s", after.as_secs())]
    NoAnswer {
        /// Time from the start of the probe to the deadline.
        after: Duration,
    },
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl LapiClient {
    /// Sends one `HEAD /v1/decisions` with `cfg`'s credentials and trust on a new connection,
    /// and returns the status and the `Date` header. Everything (connect, TLS handshake, the
    /// answer) must finish by `deadline`, else [`LapiError::Deadline`]. Leaves the stream cursor
    /// alone (`docs/reference/crowdsec-lapi.md` §3). Errors never carry the API key.
    pub async fn probe(
        cfg: &LapiConfig,
        deadline: tokio::time::Instant,
    ) -> Result<ProbeAnswer, ProbeError> {
        let target = Target::new(cfg)?;
        let started = tokio::time::Instant::now();
        let connected = AtomicBool::new(false);
        match tokio::time::timeout_at(deadline, target.head(started, &connected)).await {
            Ok(result) => Ok(result?),
            Err(_) => {
                let after = deadline.saturating_duration_since(started);
                Err(if connected.load(Ordering::Relaxed) {
                    ProbeError::NoAnswer { after }
                } else {
                    ProbeError::Lapi(LapiError::Deadline { after })
                })
            }
        }
    }
}

/// Where and how to send the probe, from the configuration.
struct Target {
    host: String,
    port: u16,
    host_header: HeaderValue,
    path: String,
    tls: Option<(TlsConnector, rustls_pki_types::ServerName<'static>)>,
    api_key: Option<HeaderValue>,
    user_agent: HeaderValue,
}

impl Target {
    fn new(cfg: &LapiConfig) -> Result<Self, ConfigError> {
        // The same URL, TLS and User-Agent rules as the stream client (`http.rs`).
        let url = http_plumbing::parse_url(&cfg.url)?;
        let has_cert = cfg.client_cert.is_some();
        if has_cert && !url.https {
            return Err(ConfigError::CertNeedsHttps {
                url: redact_url(&cfg.url),
            });
        }
        // As the stream client: a certificate wins, and then no key is sent (§2).
        let api_key = match (&cfg.api_key, has_cert) {
            (Some(k), false) => {
                if k.expose_secret().is_empty() {
                    return Err(ConfigError::InvalidApiKey);
                }
                let mut v = HeaderValue::from_str(k.expose_secret())
                    .map_err(|_| ConfigError::InvalidApiKey)?;
                v.set_sensitive(true);
                Some(v)
            }
            (None, false) => return Err(ConfigError::NoCredentials),
            (_, true) => None,
        };
        let user_agent = http_plumbing::user_agent(&cfg.version)?;
        let tls = http_plumbing::tls_connector(&url, cfg, &cfg.url)?;
        let path = format!("{}/v1/decisions?ip={PROBE_IP}", url.base_path);
        let http_plumbing::Target {
            host,
            port,
            host_header,
            ..
        } = url;
        Ok(Target {
            host,
            port,
            host_header,
            path,
            tls,
            api_key,
            user_agent,
        })
    }

    async fn head(
        &self,
        started: tokio::time::Instant,
        connected: &AtomicBool,
    ) -> Result<ProbeAnswer, LapiError> {
        let addr = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| LapiError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let (io, tls_version): (Box<dyn Io>, _) = match &self.tls {
            None => (Box::new(tcp), None),
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| LapiError::Tls {
                        server: self.host.clone(),
                        source,
                    })?;
                let version = stream
                    .get_ref()
                    .1
                    .protocol_version()
                    .map(|v| format!("{v:?}"));
                (Box::new(stream), version)
            }
        };
        connected.store(true, Ordering::Relaxed);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = Request::builder()
            .method(Method::HEAD)
            .uri(self.path.as_str())
            .header(HOST, self.host_header.clone())
            .header(USER_AGENT, self.user_agent.clone())
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(k) = &self.api_key {
            builder = builder.header("X-Api-Key", k.clone());
        }
        let request = builder
            .body(Empty::<Bytes>::new())
            .map_err(|_| LapiError::Status {
                endpoint: "request",
                expected: 0,
                status: 0,
                message: "cannot build the HEAD request".into(),
            })?;
        let response = sender.send_request(request).await;
        // One exchange only: the connection ends with this function.
        driver.abort();
        let response = response?;
        let date = response
            .headers()
            .get(DATE)
            .map(|v| peer_text(&String::from_utf8_lossy(v.as_bytes()), None, MAX_DATE));
        Ok(ProbeAnswer {
            status: response.status().as_u16(),
            date,
            tls_version,
            elapsed: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_targets_head_decisions_under_the_url_prefix() {
        let t = Target::new(&LapiConfig::new("http://lapi:8080/crowdsec/").with_api_key("k3y"))
            .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("lapi", 8080, "/crowdsec/v1/decisions?ip=192.0.2.255")
        );
        assert!(t.api_key.as_ref().unwrap().is_sensitive());
        let t = Target::new(&LapiConfig::new("http://[::1]").with_api_key("k")).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 80, "/v1/decisions?ip=192.0.2.255")
        );
    }

    #[test]
    fn bad_configurations_are_refused_without_echoing_secrets() {
        assert!(matches!(
            Target::new(&LapiConfig::new("http://x")),
            Err(ConfigError::NoCredentials)
        ));
        let e = Target::new(&LapiConfig::new("http://bob:PASSWORD@x/").with_api_key("k"))
            .err()
            .unwrap();
        assert!(!e.to_string().contains("PASSWORD"), "{e}");
        let e = Target::new(&LapiConfig::new("http://x").with_api_key("bad\nsecret-key"))
            .err()
            .unwrap();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(matches!(
            Target::new(&LapiConfig::new("ftp://x").with_api_key("k")),
            Err(ConfigError::UnsupportedScheme { .. })
        ));
    }

    #[tokio::test]
    async fn an_unreachable_lapi_is_a_connect_error_within_the_deadline() {
        // A port nothing listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let cfg = LapiConfig::new(format!("http://127.0.0.1:{port}")).with_api_key("k");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let e = LapiClient::probe(&cfg, deadline).await.unwrap_err();
        assert!(
            matches!(e, ProbeError::Lapi(LapiError::Connect { .. })),
            "{e}"
        );
    }

    /// A one-request server: records the request head, answers `response`.
    async fn one_answer(response: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before the end of its request");
                head.extend_from_slice(&buf[..n]);
            }
            s.write_all(response).await.unwrap();
            String::from_utf8_lossy(&head).into_owned()
        });
        (url, task)
    }

    #[tokio::test]
    async fn the_answer_carries_status_and_an_escaped_date_and_the_request_is_head() {
        let (url, server) = one_answer(
            b"HTTP/1.1 403 Forbidden\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Type: application/json\r\nContent-Length: 30\r\n\r\n",
        )
        .await;
        let cfg = LapiConfig::new(url).with_api_key("k3y-secret");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let answer = LapiClient::probe(&cfg, deadline).await.unwrap();
        assert_eq!(answer.status, 403);
        assert_eq!(
            answer.date.as_deref(),
            Some("Sun, 06 Nov 1994 08:49:37 GMT")
        );
        assert_eq!(answer.tls_version, None);
        let head = server.await.unwrap();
        assert!(
            head.starts_with("HEAD /v1/decisions?ip=192.0.2.255 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("x-api-key: k3y-secret\r\n"), "{head}");
        assert!(head.contains("user-agent: tikban/v"), "{head}");

        // A hostile Date header (a tab, a C1 control in UTF-8) cannot forge a line where it is
        // printed.
        let (url, _server) = one_answer(
            b"HTTP/1.1 200 OK\r\nDate: x\tforged\xc2\x85line\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let cfg = LapiConfig::new(url).with_api_key("k");
        let answer = LapiClient::probe(&cfg, deadline).await.unwrap();
        let date = answer.date.unwrap();
        assert_eq!(date, "x\\tforged\\u{85}line");
    }

    /// Accepts and never answers (LAPI busy with a huge query): overloaded, not unreachable.
    #[tokio::test]
    async fn a_silent_server_ends_at_the_deadline_as_no_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let cfg = LapiConfig::new(format!("http://{addr}")).with_api_key("k");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        let e = LapiClient::probe(&cfg, deadline).await.unwrap_err();
        assert!(matches!(e, ProbeError::NoAnswer { .. }), "{e}");
        assert!(e.to_string().contains("accepted the connection"), "{e}");
    }
}
