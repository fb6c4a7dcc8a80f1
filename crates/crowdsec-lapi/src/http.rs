//! HTTP/1.1 plumbing shared by [`LapiClient`](crate::LapiClient) and
//! [`Watcher`](crate::Watcher): URL checks, the `type/version` User-Agent, TLS setup, connecting
//! (TCP or rustls, within the connect timeout), sending one request on a kept-alive connection,
//! and reading bodies with a size cap.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::client::LapiError;
use crate::config::{ConfigError, LapiConfig, tls_config};
use crate::text::redact_url;

/// A response whose body is still to be read, and the connection to hand back once it is.
pub(crate) type Answer = (
    http::Response<hyper::body::Incoming>,
    SendRequest<Full<Bytes>>,
);

/// The checked parts of a LAPI URL.
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) host_header: HeaderValue,
    /// Path prefix without the trailing `/` (empty for none).
    pub(crate) base_path: String,
    pub(crate) https: bool,
}

/// Checks a LAPI base URL: `http` or `https`, a host, no user-info, no query. Errors show the
/// URL with any user-info redacted.
pub(crate) fn parse_url(url: &str) -> Result<Target, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidUrl {
        url: redact_url(url),
        reason: reason.into(),
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| invalid("missing scheme"))?
        .to_ascii_lowercase();
    let https = match scheme.as_str() {
        "http" => false,
        "https" => true,
        _ => return Err(ConfigError::UnsupportedScheme { scheme }),
    };
    let authority = uri.authority().ok_or_else(|| invalid("missing host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("credentials in the URL are not supported"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if host.is_empty() {
        return Err(invalid("missing host"));
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host_header = HeaderValue::from_str(authority.as_str())
        .map_err(|_| invalid("host is not a valid header"))?;
    let mut base_path = uri.path().trim_end_matches('/').to_owned();
    if uri.query().is_some() {
        return Err(invalid("a query string is not allowed"));
    }
    if base_path == "/" {
        base_path.clear();
    }
    Ok(Target {
        host,
        port,
        host_header,
        base_path,
        https,
    })
}

/// `tikban/v<version>`: LAPI wants exactly `type/version` (`docs/reference/crowdsec-lapi.md`
/// §2; a watcher login with any other shape is refused).
pub(crate) fn user_agent(version: &str) -> Result<HeaderValue, ConfigError> {
    let bad = || ConfigError::InvalidVersion {
        version: version.to_owned(),
    };
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(bad());
    }
    let ua = format!("tikban/v{}", version.trim_start_matches('v'));
    HeaderValue::from_str(&ua).map_err(|_| bad())
}

/// Both limits must be non-zero.
pub(crate) fn check_timeouts(connect: Duration, request: Duration) -> Result<(), ConfigError> {
    if connect.is_zero() {
        return Err(ConfigError::ZeroTimeout { which: "connect" });
    }
    if request.is_zero() {
        return Err(ConfigError::ZeroTimeout { which: "request" });
    }
    Ok(())
}

/// TLS connector and server name for an `https` target (`None` for `http`). Trust, client
/// certificate and `insecure_skip_verify` come from `tls` (its other fields are unused).
pub(crate) fn tls_connector(
    target: &Target,
    tls: &LapiConfig,
    url: &str,
) -> Result<Option<(TlsConnector, ServerName<'static>)>, ConfigError> {
    if !target.https {
        return Ok(None);
    }
    let config = tls_config(tls)?;
    let name = match target.host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => {
            ServerName::try_from(target.host.clone()).map_err(|_| ConfigError::InvalidUrl {
                url: redact_url(url),
                reason: "host is not a valid TLS server name".into(),
            })?
        }
    };
    Ok(Some((TlsConnector::from(Arc::new(config)), name)))
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Where and how to reach LAPI: everything a request needs except credentials.
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) host_header: HeaderValue,
    pub(crate) base_path: String,
    pub(crate) tls: Option<(TlsConnector, ServerName<'static>)>,
    pub(crate) user_agent: HeaderValue,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
}

impl Endpoint {
    pub(crate) fn new(
        target: Target,
        tls: Option<(TlsConnector, ServerName<'static>)>,
        user_agent: HeaderValue,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        Endpoint {
            host: target.host,
            port: target.port,
            host_header: target.host_header,
            base_path: target.base_path,
            tls,
            user_agent,
            connect_timeout,
            request_timeout,
        }
    }

    /// A request with `Host`, `User-Agent`, `Accept: application/json`, and for a `POST`
    /// `Content-Type: application/json`. `path` includes the base path.
    pub(crate) fn request(&self, method: Method, path: &str) -> http::request::Builder {
        let is_post = method == Method::POST;
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host_header.clone())
            .header(USER_AGENT, self.user_agent.clone())
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if is_post {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        builder
    }

    /// Sends `req` on the idle connection in `conn` (taken out), or on a new one; waits at most
    /// the request timeout for the response headers. The connection is handed back with the
    /// response: the caller returns it to `conn` only after reading the whole body, so a request
    /// abandoned midway never leaves a half-read response on a kept-alive connection.
    pub(crate) async fn send(
        &self,
        conn: &mut Option<SendRequest<Full<Bytes>>>,
        req: Request<Full<Bytes>>,
    ) -> Result<Answer, LapiError> {
        self.send_waiting(conn, req, self.request_timeout).await
    }

    /// [`send`](Self::send), waiting up to `headers_within` for the response headers.
    pub(crate) async fn send_waiting(
        &self,
        conn: &mut Option<SendRequest<Full<Bytes>>>,
        req: Request<Full<Bytes>>,
        headers_within: Duration,
    ) -> Result<Answer, LapiError> {
        let mut sender = match conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => self.connect().await?,
        };
        let sent = async {
            sender.ready().await?;
            sender.send_request(req).await
        };
        match tokio::time::timeout(headers_within, sent).await {
            Ok(Ok(resp)) => Ok((resp, sender)),
            Ok(Err(e)) => Err(LapiError::Http(e)),
            Err(_) => Err(LapiError::Timeout {
                phase: "response headers",
                after: headers_within,
            }),
        }
    }

    /// A new connection (TCP, then TLS if configured), within the connect timeout.
    pub(crate) async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, LapiError> {
        let addr = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let fut = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|source| LapiError::Connect {
                    addr: addr.clone(),
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = match &self.tls {
                None => Box::new(tcp),
                Some((connector, name)) => Box::new(
                    connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|source| LapiError::Tls {
                            server: self.host.clone(),
                            source,
                        })?,
                ),
            };
            // A 64 KiB read buffer instead of hyper's adaptive ~400 KiB: body chunks are consumed
            // at once by the parser, so a bigger buffer only raises the memory peak.
            let (sender, conn) = hyper::client::conn::http1::Builder::new()
                .max_buf_size(64 * 1024)
                .handshake(TokioIo::new(io))
                .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(cause = %e, "LAPI connection closed");
                }
            });
            Ok(sender)
        };
        match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(LapiError::Timeout {
                phase: "connect",
                after: self.connect_timeout,
            }),
        }
    }
}

/// How reading a capped body ended.
pub(crate) enum BodyEnd {
    /// The body ended within the cap.
    Complete,
    /// More than the cap arrived; the bytes kept are the first `max`.
    TooLarge,
    /// A wait for the next chunk exceeded the gap limit.
    Stalled,
    /// The connection failed mid-body.
    Failed(hyper::Error),
}

/// Reads at most `max` bytes of `body`, each wait for a chunk bounded by `gap`.
pub(crate) async fn read_capped(
    body: &mut hyper::body::Incoming,
    max: usize,
    gap: Duration,
) -> (Vec<u8>, BodyEnd) {
    let mut buf = Vec::new();
    loop {
        match tokio::time::timeout(gap, body.frame()).await {
            Err(_) => return (buf, BodyEnd::Stalled),
            Ok(None) => return (buf, BodyEnd::Complete),
            Ok(Some(Err(e))) => return (buf, BodyEnd::Failed(e)),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    let room = max - buf.len();
                    if d.len() > room {
                        buf.extend_from_slice(&d[..room]);
                        return (buf, BodyEnd::TooLarge);
                    }
                    buf.extend_from_slice(&d);
                }
            }
        }
    }
}

/// Reads at most 4 KiB of an error body and extracts LAPI's `message` (or the start of the body),
/// **not yet** escaped or redacted: the caller passes it through
/// [`peer_text`](crate::text::peer_text) with its secret. The flag is true when the body ended.
pub(crate) async fn read_error_text(
    body: &mut hyper::body::Incoming,
    gap: Duration,
) -> (String, bool) {
    const MAX: usize = 4096;
    let (buf, end) = read_capped(body, MAX, gap).await;
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: String,
    }
    let text = match serde_json::from_slice::<ErrorBody>(&buf) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(&buf).into_owned(),
    };
    (text, matches!(end, BodyEnd::Complete))
}
