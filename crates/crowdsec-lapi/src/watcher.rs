//! The watcher (machine) side of LAPI: log in, push alerts, ask the allowlists.
//!
//! tikban's guard bans locally, then shares the ban: [`Watcher::push_alerts`] sends it as an
//! [`Alert`] with a decision, LAPI hands the decision to every bouncer's stream, and an enrolled
//! LAPI shares it with the Central API.
//!
//! Endpoints (`docs/reference/crowdsec-lapi.md` §10; `pkg/models/localapi_swagger.yaml`):
//! - `POST /v1/watchers/login` with `{"machine_id","password","scenarios"}` answers
//!   `{"code":200,"expire":"<RFC 3339>","token":"<JWT>"}`; the JWT lasts one hour (gin-jwt
//!   `Timeout: time.Hour` in `pkg/apiserver/middlewares/v1/jwt.go`). A refused login is a 401
//!   `{"code":401,"message":…}`, and so is a User-Agent that is not exactly `type/version`.
//!   With a client certificate whose OU is in LAPI's `agents_allowed_ou`, LAPI ignores the
//!   password and names the machine `<CN>@<client-ip>`.
//! - `POST /v1/alerts` with `Authorization: Bearer <JWT>` and a JSON array of alerts answers 201
//!   with the array of new alert ids (`["1"]`). An expired or unknown JWT gets a 401.
//! - `GET /v1/allowlists/check/{ip}` (LAPI 1.6.6 and later) answers
//!   `{"allowlisted":bool,"reason":…}`; older LAPIs answer 404 with an empty body.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, DATE, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use rustls_pki_types::CertificateDer;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

use crate::alert::Alert;
use crate::client::LapiError;
use crate::config::{ClientCert, ConfigError, LapiConfig};
use crate::http::{
    BodyEnd, Endpoint, check_timeouts, parse_url, read_capped, tls_connector, user_agent,
};
use crate::text::{MAX_PEER_TEXT, peer_text, redact_url};
use crate::timefmt::{parse_http_date, parse_rfc3339, unix_seconds};
use crate::value::Value;

/// Longest JWT accepted from a login answer, in bytes (LAPI's are about 200).
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest token life believed; a longer `expire` is treated as this.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Token life assumed when `expire` cannot be used (unparsable, or already past by the clocks
/// at hand). A shorter real life only costs a 401 and a new login.
const FALLBACK_TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Renew this long before the token expires (at most a quarter of its life).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Longest alert id kept from a push answer, in characters.
const MAX_ALERT_ID_CHARS: usize = 64;

/// Everything the watcher needs. [`WatcherConfig::new`] fills the defaults.
///
/// `Debug` never shows the password (`SecretString`) or the client key ([`ClientCert`]).
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    /// LAPI base URL, `http://…` or `https://…`; a path prefix is kept.
    pub url: String,
    /// The machine name registered with `cscli machines add NAME --password …`. Ignored by
    /// LAPI when a client certificate is used.
    pub machine_id: String,
    /// The machine's password. Optional only with a client certificate.
    pub password: Option<SecretString>,
    /// Client certificate and key for mTLS; LAPI accepts it for a watcher only if its OU is in
    /// `agents_allowed_ou` (not `bouncers_allowed_ou`), and then ignores the password.
    pub client_cert: Option<ClientCert>,
    /// Extra CA certificates trusted besides the webpki roots.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// Accept any server certificate. Logged as a warning; for tests and emergencies only.
    pub insecure_skip_verify: bool,
    /// Scenarios the watcher declares at login (shown by `cscli machines list`), e.g.
    /// `["tikban/routeros-login-bf"]`.
    pub scenarios: Vec<String>,
    /// Limit for TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Limit for the response headers, and for each gap between body chunks.
    pub request_timeout: Duration,
    /// Overall limit of one call (a login and the request, and a second login and request
    /// after a 401), used by [`Watcher::default_deadline`].
    pub call_timeout: Duration,
    /// Version for the `User-Agent: tikban/v<version>` header, without the `v`.
    pub version: String,
    /// Cap on any response body, in bytes; past it the call fails.
    pub max_response_bytes: usize,
}

impl WatcherConfig {
    /// Defaults: no certificate, connect 10 s, request 30 s, call 60 s, responses ≤ 1 MiB, this
    /// crate's version.
    pub fn new(
        url: impl Into<String>,
        machine_id: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        WatcherConfig {
            url: url.into(),
            machine_id: machine_id.into(),
            password: Some(SecretString::from(password.into())),
            client_cert: None,
            ca_certs: Vec::new(),
            insecure_skip_verify: false,
            scenarios: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(60),
            version: env!("CARGO_PKG_VERSION").into(),
            max_response_bytes: 1024 * 1024,
        }
    }
}

/// A watcher configuration that cannot work.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WatcherConfigError {
    /// The URL, TLS material, version or timeouts (as for the bouncer client).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Neither a password nor a client certificate.
    #[error(
        "no watcher credentials: set a machine id and password, or a client certificate whose OU \
         is in LAPI's agents_allowed_ou"
    )]
    NoCredentials,
    /// The machine id is empty (without a client certificate), too long, or not printable.
    #[error("machine id {machine_id:?} must be 1 to 255 visible characters")]
    InvalidMachineId {
        /// The id given, escaped and bounded.
        machine_id: String,
    },
    /// The password would not fit in JSON text safely (the password itself is not shown).
    #[error("the watcher password is empty or contains control characters (password not shown)")]
    InvalidPassword,
    /// The overall call limit must be non-zero.
    #[error("call timeout must be > 0")]
    ZeroCallTimeout,
}

/// A watcher call failed. Messages never contain the password or the JWT.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatcherError {
    /// Connecting, the TLS handshake, a phase timeout or the HTTP exchange failed
    /// ([`LapiError::Connect`], [`LapiError::Tls`], [`LapiError::Timeout`],
    /// [`LapiError::Http`]). The connection was dropped.
    #[error(transparent)]
    Transport(LapiError),
    /// The whole call did not finish by its deadline; the connection was dropped.
    #[error("LAPI watcher {what} did not finish by its deadline ({after:?} after it started)")]
    Deadline {
        /// `login`, `alerts push` or `allowlist check`.
        what: &'static str,
        /// Time from the start of the call to the deadline.
        after: Duration,
    },
    /// LAPI refused the login (wrong machine id or password, machine not validated, refused
    /// certificate, or a User-Agent that is not `type/version`).
    #[error(
        "LAPI refused the login of machine {machine_id:?}: {status} {message} (check the machine \
         id and password, or the client certificate's OU against agents_allowed_ou, and that \
         `cscli machines list` shows the machine validated)"
    )]
    LoginRefused {
        /// The configured machine id, escaped.
        machine_id: String,
        /// The HTTP status (401, or 403 for a refused certificate).
        status: u16,
        /// LAPI's message: escaped, at most 256 characters, secrets redacted.
        message: String,
    },
    /// LAPI answered with an unexpected status.
    #[error("LAPI {endpoint} answered {status}, expected {expected}: {message}")]
    Status {
        /// The path called.
        endpoint: &'static str,
        /// The status wanted.
        expected: u16,
        /// The status received.
        status: u16,
        /// LAPI's `message`, or the start of the body: escaped, at most 256 characters, the
        /// password and JWT redacted.
        message: String,
    },
    /// A success answer whose body is not what the API describes.
    #[error("LAPI {endpoint} answer is malformed: {reason}")]
    BadResponse {
        /// The path called.
        endpoint: &'static str,
        /// What is wrong (escaped, bounded).
        reason: String,
    },
    /// A response body larger than [`WatcherConfig::max_response_bytes`].
    #[error("LAPI {endpoint} answer is larger than {max} bytes")]
    ResponseTooLarge {
        /// The path called.
        endpoint: &'static str,
        /// The cap.
        max: usize,
    },
    /// The request could not be built (not expected with a checked configuration).
    #[error("cannot build the {endpoint} request")]
    Request {
        /// The path called.
        endpoint: &'static str,
    },
}

impl WatcherError {
    /// True when LAPI refused the credentials (a refused login, or 401/403 after a fresh
    /// login). Retrying with the same configuration will not help until the machine is fixed
    /// on LAPI's side (`cscli machines add/validate`).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            WatcherError::LoginRefused { .. }
                | WatcherError::Status {
                    status: 401 | 403,
                    ..
                }
        )
    }

    /// False only when LAPI refused the request itself (a 4xx other than 401, 403, 404, 408 and
    /// 429, or a request that cannot be built): sending the same alerts again would fail again.
    /// Everything else (unreachable, timeouts, 5xx, refused credentials, an odd answer) may
    /// succeed later, so an [`AlertQueue`](crate::AlertQueue) keeps the alerts.
    pub fn is_retryable(&self) -> bool {
        match self {
            WatcherError::Status { status, .. } => {
                !(400..500).contains(status) || matches!(status, 401 | 403 | 404 | 408 | 429)
            }
            WatcherError::Request { .. } => false,
            _ => true,
        }
    }
}

/// Answer of [`Watcher::allowlist_check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowlistAnswer {
    /// The address is in a LAPI allowlist: do not ban it.
    Allowlisted {
        /// The matching entry as LAPI describes it (escaped, at most 256 characters).
        reason: String,
    },
    /// The address is in no allowlist.
    NotAllowlisted,
    /// This LAPI has no allowlists (older than 1.6.6: the route answers 404). The watcher
    /// remembers it and answers `Unsupported` from then on without a request; the caller should
    /// stop asking.
    Unsupported,
}

/// The current JWT.
struct Token {
    /// `Bearer <jwt>`, marked sensitive.
    bearer: HeaderValue,
    /// The JWT as text, only to redact it from error bodies.
    text: SecretString,
    /// When to log in again (before LAPI's expiry).
    refresh_at: Instant,
}

/// One finished exchange: the status and the whole (capped) body.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    /// The `Date` header in Unix seconds, if it parsed.
    date: Option<i64>,
}

/// A LAPI watcher: logs in with a machine id and password (or a client certificate) and keeps
/// the JWT fresh, pushes alerts, asks the allowlists.
///
/// One kept-alive connection; every call has an overall deadline. Cancel safety: dropping a
/// call's future leaves the watcher usable (the connection in use is dropped with it; the token
/// is replaced only by a complete login).
pub struct Watcher {
    ep: Endpoint,
    machine_id: String,
    password: Option<SecretString>,
    scenarios: Vec<String>,
    call_timeout: Duration,
    max_response: usize,
    conn: Option<SendRequest<Full<Bytes>>>,
    token: Option<Token>,
    allowlists_supported: bool,
    clock_offset: Option<i64>,
    logins: u64,
}

impl std::fmt::Debug for Watcher {
    /// Where and as whom; never the password or the JWT.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("host", &self.ep.host)
            .field("port", &self.ep.port)
            .field("base_path", &self.ep.base_path)
            .field("tls", &self.ep.tls.is_some())
            .field("machine_id", &self.machine_id)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allowlists_supported", &self.allowlists_supported)
            .field("logins", &self.logins)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Checks the configuration and prepares TLS. Does not connect.
    pub fn new(cfg: WatcherConfig) -> Result<Self, WatcherConfigError> {
        let target = parse_url(&cfg.url)?;
        let has_cert = cfg.client_cert.is_some();
        if has_cert && !target.https {
            return Err(ConfigError::CertNeedsHttps {
                url: redact_url(&cfg.url),
            }
            .into());
        }
        let password = match &cfg.password {
            Some(p) if p.expose_secret().is_empty() && has_cert => None,
            Some(p) => {
                if p.expose_secret().is_empty() || p.expose_secret().chars().any(char::is_control) {
                    return Err(WatcherConfigError::InvalidPassword);
                }
                Some(p.clone())
            }
            None if has_cert => None,
            None => return Err(WatcherConfigError::NoCredentials),
        };
        let id = &cfg.machine_id;
        if (id.is_empty() && !has_cert) || id.len() > 255 || id.chars().any(char::is_control) {
            return Err(WatcherConfigError::InvalidMachineId {
                machine_id: peer_text(id, None, 64),
            });
        }
        let ua = user_agent(&cfg.version)?;
        check_timeouts(cfg.connect_timeout, cfg.request_timeout)?;
        if cfg.call_timeout.is_zero() {
            return Err(WatcherConfigError::ZeroCallTimeout);
        }
        // The TLS settings go through the bouncer client's builder (same trust, same ALPN).
        let mut tls = LapiConfig::new(cfg.url.clone());
        tls.ca_certs = cfg.ca_certs.clone();
        tls.insecure_skip_verify = cfg.insecure_skip_verify;
        tls.client_cert = cfg.client_cert.clone();
        let connector = tls_connector(&target, &tls, &cfg.url)?;
        let ep = Endpoint::new(
            target,
            connector,
            ua,
            cfg.connect_timeout,
            cfg.request_timeout,
        );
        Ok(Watcher {
            ep,
            machine_id: cfg.machine_id,
            password,
            scenarios: cfg.scenarios,
            call_timeout: cfg.call_timeout,
            max_response: cfg.max_response_bytes.max(1),
            conn: None,
            token: None,
            allowlists_supported: true,
            clock_offset: None,
            logins: 0,
        })
    }

    /// Now plus [`WatcherConfig::call_timeout`]: the deadline for a call when the caller has
    /// none of its own.
    pub fn default_deadline(&self) -> Instant {
        Instant::now() + self.call_timeout
    }

    /// Logs in now, replacing any token. Not needed before other calls (they log in when the
    /// token is missing or due for renewal); useful to check the credentials at start-up.
    pub async fn login(&mut self, deadline: Instant) -> Result<(), WatcherError> {
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, self.do_login()).await {
            Ok(r) => r,
            Err(_) => Err(self.deadline_passed("login", started, deadline)),
        }
    }

    /// Pushes alerts (`POST /v1/alerts`) and returns the ids LAPI gave them, in order. Logs in
    /// first if needed, and once more after a 401 (an expired or revoked JWT, a restarted
    /// LAPI), then retries once. An empty slice sends nothing.
    ///
    /// After an error the alerts may or may not be stored (a deadline or a broken connection
    /// can strike after LAPI stored them): keep them and retry when
    /// [`WatcherError::is_retryable`] says so. A duplicate alert only repeats the same ban (the
    /// stream sends one decision per value).
    pub async fn push_alerts(
        &mut self,
        alerts: &[Alert],
        deadline: Instant,
    ) -> Result<Vec<String>, WatcherError> {
        if alerts.is_empty() {
            return Ok(Vec::new());
        }
        const ENDPOINT: &str = "/v1/alerts";
        let body =
            serde_json::to_vec(alerts).map_err(|_| WatcherError::Request { endpoint: ENDPOINT })?;
        let path = format!("{}{ENDPOINT}", self.ep.base_path);
        let started = Instant::now();
        let call = self.authed(Method::POST, path, Bytes::from(body), ENDPOINT, 201);
        let reply = match tokio::time::timeout_at(deadline, call).await {
            Ok(r) => r?,
            Err(_) => return Err(self.deadline_passed("alerts push", started, deadline)),
        };
        if !matches!(reply.status, StatusCode::CREATED | StatusCode::OK) {
            return Err(self.status_error(ENDPOINT, 201, &reply));
        }
        let ids: Vec<serde_json::Value> =
            serde_json::from_slice(&reply.body).map_err(|e| WatcherError::BadResponse {
                endpoint: ENDPOINT,
                reason: peer_text(&e.to_string(), None, MAX_PEER_TEXT),
            })?;
        let ids: Vec<String> = ids
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) => peer_text(s, None, MAX_ALERT_ID_CHARS),
                other => peer_text(&other.to_string(), None, MAX_ALERT_ID_CHARS),
            })
            .collect();
        tracing::debug!(
            alerts = alerts.len(),
            ids = ids.len(),
            "alerts pushed to LAPI"
        );
        Ok(ids)
    }

    /// Asks LAPI whether `ip` is in one of its allowlists (`GET /v1/allowlists/check/{ip}`,
    /// LAPI 1.6.6 and later). An IPv4-mapped IPv6 address is asked as IPv4.
    ///
    /// A LAPI without allowlists (1.4.6 to 1.6.5) answers 404: that gives
    /// [`AllowlistAnswer::Unsupported`], logged once, and every later call returns it at once
    /// without a request. The caller should then stop asking.
    pub async fn allowlist_check(
        &mut self,
        ip: IpAddr,
        deadline: Instant,
    ) -> Result<AllowlistAnswer, WatcherError> {
        if !self.allowlists_supported {
            return Ok(AllowlistAnswer::Unsupported);
        }
        const ENDPOINT: &str = "/v1/allowlists/check";
        let path = format!("{}{ENDPOINT}/{}", self.ep.base_path, Value::from_ip(ip));
        let started = Instant::now();
        let call = self.authed(Method::GET, path, Bytes::new(), ENDPOINT, 200);
        let reply = match tokio::time::timeout_at(deadline, call).await {
            Ok(r) => r?,
            Err(_) => return Err(self.deadline_passed("allowlist check", started, deadline)),
        };
        match reply.status {
            StatusCode::OK => {
                #[derive(serde::Deserialize)]
                struct Check {
                    #[serde(default)]
                    allowlisted: bool,
                    #[serde(default)]
                    reason: String,
                }
                let c: Check =
                    serde_json::from_slice(&reply.body).map_err(|e| WatcherError::BadResponse {
                        endpoint: ENDPOINT,
                        reason: peer_text(&e.to_string(), None, MAX_PEER_TEXT),
                    })?;
                Ok(if c.allowlisted {
                    AllowlistAnswer::Allowlisted {
                        reason: self.peer(&c.reason),
                    }
                } else {
                    AllowlistAnswer::NotAllowlisted
                })
            }
            StatusCode::NOT_FOUND => {
                tracing::warn!(
                    "LAPI has no allowlists endpoint (older than 1.6.6?): allowlist checks disabled"
                );
                self.allowlists_supported = false;
                Ok(AllowlistAnswer::Unsupported)
            }
            _ => Err(self.status_error(ENDPOINT, 200, &reply)),
        }
    }

    /// When the current JWT will be renewed (`None` before the first login or after a 401).
    pub fn token_refresh_at(&self) -> Option<Instant> {
        self.token.as_ref().map(|t| t.refresh_at)
    }

    /// How far LAPI's clock is ahead of this host's, in seconds (negative: behind), from the
    /// `Date` header of the last answer; `None` before any answer carried one.
    ///
    /// LAPI counts a pushed decision's duration from the alert's `stop_at`, which comes from
    /// this host's clock: when the offset is large (a router without NTP), bans shared through
    /// LAPI are shortened or already expired. Warn about it; correcting the alert times by the
    /// offset is the caller's choice.
    pub fn clock_offset(&self) -> Option<i64> {
        self.clock_offset
    }

    /// Logins done so far (first ones and renewals).
    pub fn logins(&self) -> u64 {
        self.logins
    }

    // === internals ===

    fn deadline_passed(
        &mut self,
        what: &'static str,
        started: Instant,
        deadline: Instant,
    ) -> WatcherError {
        self.conn = None;
        WatcherError::Deadline {
            what,
            after: deadline.saturating_duration_since(started),
        }
    }

    /// Text from LAPI made safe: the password and the JWT redacted, escaped, bounded.
    fn peer(&self, text: &str) -> String {
        let mut t = std::borrow::Cow::Borrowed(text);
        if let Some(tok) = &self.token {
            let s = tok.text.expose_secret();
            if !s.is_empty() && t.contains(s) {
                t = std::borrow::Cow::Owned(t.replace(s, "<redacted>"));
            }
        }
        let pw = self.password.as_ref().map(|p| p.expose_secret());
        peer_text(&t, pw, MAX_PEER_TEXT)
    }

    /// LAPI's `message` (or the start of the body) of a failed answer, made safe.
    fn message(&self, reply: &Reply) -> String {
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            message: String,
        }
        let head = &reply.body[..reply.body.len().min(4096)];
        match serde_json::from_slice::<ErrorBody>(head) {
            Ok(e) => self.peer(&e.message),
            Err(_) => self.peer(&String::from_utf8_lossy(head)),
        }
    }

    fn status_error(&self, endpoint: &'static str, expected: u16, reply: &Reply) -> WatcherError {
        WatcherError::Status {
            endpoint,
            expected,
            status: reply.status.as_u16(),
            message: self.message(reply),
        }
    }

    /// Sends `req` and reads the whole answer (capped). The connection is kept only after a
    /// complete answer.
    async fn exchange(
        &mut self,
        req: Request<Full<Bytes>>,
        endpoint: &'static str,
    ) -> Result<Reply, WatcherError> {
        let (resp, sender) = self
            .ep
            .send(&mut self.conn, req)
            .await
            .map_err(WatcherError::Transport)?;
        let status = resp.status();
        let date = resp
            .headers()
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let mut body = resp.into_body();
        let (buf, end) = read_capped(&mut body, self.max_response, self.ep.request_timeout).await;
        match end {
            BodyEnd::Complete => self.conn = Some(sender),
            BodyEnd::TooLarge if status.is_success() => {
                return Err(WatcherError::ResponseTooLarge {
                    endpoint,
                    max: self.max_response,
                });
            }
            // An error answer: its start is enough for the message.
            BodyEnd::TooLarge => {}
            BodyEnd::Stalled => {
                return Err(WatcherError::Transport(LapiError::Timeout {
                    phase: "response body",
                    after: self.ep.request_timeout,
                }));
            }
            BodyEnd::Failed(e) => return Err(WatcherError::Transport(LapiError::Http(e))),
        }
        if let Some(d) = date {
            self.clock_offset = Some(d.saturating_sub(unix_seconds(SystemTime::now())));
        }
        Ok(Reply {
            status,
            body: buf,
            date,
        })
    }

    /// `POST /v1/watchers/login`; on success replaces the token.
    async fn do_login(&mut self) -> Result<(), WatcherError> {
        const ENDPOINT: &str = "/v1/watchers/login";
        #[derive(serde::Serialize)]
        struct Login<'a> {
            machine_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            password: Option<&'a str>,
            scenarios: &'a [String],
        }
        let body = serde_json::to_vec(&Login {
            machine_id: &self.machine_id,
            password: self.password.as_ref().map(|p| p.expose_secret()),
            scenarios: &self.scenarios,
        })
        .map_err(|_| WatcherError::Request { endpoint: ENDPOINT })?;
        let path = format!("{}{ENDPOINT}", self.ep.base_path);
        let req = self
            .ep
            .request(Method::POST, &path)
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| WatcherError::Request { endpoint: ENDPOINT })?;
        let sent_at = Instant::now();
        let reply = self.exchange(req, ENDPOINT).await?;
        match reply.status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.token = None;
                return Err(WatcherError::LoginRefused {
                    machine_id: peer_text(&self.machine_id, None, 64),
                    status: reply.status.as_u16(),
                    message: self.message(&reply),
                });
            }
            _ => return Err(self.status_error(ENDPOINT, 200, &reply)),
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: String,
            #[serde(default)]
            expire: String,
        }
        let bad = |reason: &str| WatcherError::BadResponse {
            endpoint: ENDPOINT,
            reason: reason.into(),
        };
        let answer: Answer =
            serde_json::from_slice(&reply.body).map_err(|_| bad("not a login answer"))?;
        if answer.token.is_empty() || answer.token.len() > MAX_TOKEN_BYTES {
            return Err(bad("the token is empty or too long"));
        }
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", answer.token))
            .map_err(|_| bad("the token is not a valid header value"))?;
        bearer.set_sensitive(true);
        let lifetime = token_lifetime(
            parse_rfc3339(&answer.expire),
            reply.date,
            unix_seconds(SystemTime::now()),
        );
        let margin = REFRESH_MARGIN.min(lifetime / 4);
        self.token = Some(Token {
            bearer,
            text: SecretString::from(answer.token),
            refresh_at: sent_at + (lifetime - margin),
        });
        self.logins += 1;
        tracing::debug!(lifetime = ?lifetime, "LAPI watcher logged in");
        Ok(())
    }

    /// The bearer header of a token good for now, logging in first when there is none or it is
    /// due for renewal.
    async fn bearer(&mut self) -> Result<HeaderValue, WatcherError> {
        let fresh = self
            .token
            .as_ref()
            .is_some_and(|t| Instant::now() < t.refresh_at);
        if !fresh {
            self.do_login().await?;
        }
        match &self.token {
            Some(t) => Ok(t.bearer.clone()),
            None => Err(WatcherError::Request {
                endpoint: "/v1/watchers/login",
            }),
        }
    }

    /// An authenticated exchange: logs in if needed; on a 401 drops the token, logs in again and
    /// retries once. A second 401 is an error (with `expected` as the wanted status).
    async fn authed(
        &mut self,
        method: Method,
        path: String,
        body: Bytes,
        endpoint: &'static str,
        expected: u16,
    ) -> Result<Reply, WatcherError> {
        let mut retried = false;
        loop {
            let bearer = self.bearer().await?;
            let req = self
                .ep
                .request(method.clone(), &path)
                .header(AUTHORIZATION, bearer)
                .body(Full::new(body.clone()))
                .map_err(|_| WatcherError::Request { endpoint })?;
            let reply = self.exchange(req, endpoint).await?;
            if reply.status != StatusCode::UNAUTHORIZED {
                return Ok(reply);
            }
            if retried {
                // Built while the token is still known, so an echo of it is redacted.
                let err = self.status_error(endpoint, expected, &reply);
                self.token = None;
                return Err(err);
            }
            // The middleware refused the JWT before the handler ran: nothing was stored.
            tracing::debug!(
                message = %self.message(&reply),
                "LAPI refused the watcher token: logging in again"
            );
            self.token = None;
            retried = true;
        }
    }
}

/// How long a fresh token lives: `expire` minus LAPI's `Date` (both from LAPI's clock, so a
/// wrong local clock does not matter), else minus the local time; the fallback when neither
/// gives a positive life; at most a day.
fn token_lifetime(expire: Option<i64>, server_now: Option<i64>, local_now: i64) -> Duration {
    let Some(expire) = expire else {
        return FALLBACK_TOKEN_LIFETIME;
    };
    let now = server_now.unwrap_or(local_now);
    match u64::try_from(expire.saturating_sub(now)) {
        Ok(secs) if secs > 0 => Duration::from_secs(secs).min(MAX_TOKEN_LIFETIME),
        _ => FALLBACK_TOKEN_LIFETIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WatcherConfig {
        WatcherConfig::new("http://127.0.0.1:8080/", "guard", "pa55-s3cret")
    }

    #[test]
    fn token_life_comes_from_lapi_clocks() {
        // LAPI's Date wins over a local clock years off.
        assert_eq!(
            token_lifetime(Some(10_000), Some(6_400), 0),
            Duration::from_secs(3600)
        );
        assert_eq!(
            token_lifetime(Some(10_000), None, 6_400),
            Duration::from_secs(3600)
        );
        assert_eq!(
            token_lifetime(Some(10_000), None, 20_000),
            FALLBACK_TOKEN_LIFETIME
        );
        assert_eq!(token_lifetime(None, Some(1), 1), FALLBACK_TOKEN_LIFETIME);
        assert_eq!(
            token_lifetime(Some(i64::MAX), Some(i64::MIN), 0),
            MAX_TOKEN_LIFETIME
        );
    }

    #[test]
    fn configuration_is_checked_and_secrets_never_print() {
        let w = Watcher::new(cfg()).unwrap();
        let dbg = format!("{w:?} {:?}", cfg());
        assert!(!dbg.contains("pa55-s3cret"), "{dbg}");
        assert_eq!(
            w.ep.user_agent.to_str().unwrap(),
            format!("tikban/v{}", env!("CARGO_PKG_VERSION"))
        );

        let mut c = cfg();
        c.password = None;
        assert!(matches!(
            Watcher::new(c),
            Err(WatcherConfigError::NoCredentials)
        ));
        let mut c = cfg();
        c.password = Some(SecretString::from("bad\npa55-s3cret"));
        let e = Watcher::new(c).unwrap_err();
        assert!(matches!(e, WatcherConfigError::InvalidPassword));
        assert!(!e.to_string().contains("s3cret"));
        let mut c = cfg();
        c.machine_id = "a\u{1b}[31m".into();
        let e = Watcher::new(c).unwrap_err().to_string();
        assert!(!e.contains('\u{1b}'), "{e}");
        let mut c = cfg();
        c.machine_id = String::new();
        assert!(matches!(
            Watcher::new(c),
            Err(WatcherConfigError::InvalidMachineId { .. })
        ));
        let mut c = cfg();
        c.url = "http://bob:PASSWORD@lapi/".into();
        let e = Watcher::new(c).unwrap_err().to_string();
        assert!(!e.contains("PASSWORD"), "{e}");
        let mut c = cfg();
        c.version = "1/2".into();
        assert!(matches!(
            Watcher::new(c),
            Err(WatcherConfigError::Config(
                ConfigError::InvalidVersion { .. }
            ))
        ));
        let mut c = cfg();
        c.call_timeout = Duration::ZERO;
        assert!(matches!(
            Watcher::new(c),
            Err(WatcherConfigError::ZeroCallTimeout)
        ));
    }

    #[test]
    fn a_client_certificate_needs_https_and_makes_the_password_optional() {
        let cert =
            rustls_pki_types::pem::PemObject::from_pem_slice(include_bytes!("testdata/client.pem"))
                .unwrap();
        let key = rustls_pki_types::pem::PemObject::from_pem_slice(include_bytes!(
            "testdata/client-key.pem"
        ))
        .unwrap();
        let cc = ClientCert::new(vec![cert], key).unwrap();
        let mut c = cfg();
        c.client_cert = Some(cc.clone());
        assert!(matches!(
            Watcher::new(c),
            Err(WatcherConfigError::Config(
                ConfigError::CertNeedsHttps { .. }
            ))
        ));
        let mut c = cfg();
        c.url = "https://lapi.example/".into();
        c.client_cert = Some(cc);
        c.password = None;
        c.machine_id = String::new();
        let w = Watcher::new(c).unwrap();
        assert!(w.password.is_none());
    }

    #[test]
    fn retryable_and_auth_classification() {
        let status = |s| WatcherError::Status {
            endpoint: "/v1/alerts",
            expected: 201,
            status: s,
            message: String::new(),
        };
        assert!(!status(400).is_retryable());
        assert!(!status(422).is_retryable());
        for s in [401, 403, 404, 408, 429, 500, 503] {
            assert!(status(s).is_retryable(), "{s}");
        }
        assert!(status(401).is_auth() && !status(500).is_auth());
        let refused = WatcherError::LoginRefused {
            machine_id: "m".into(),
            status: 401,
            message: "incorrect Username or Password".into(),
        };
        assert!(refused.is_auth() && refused.is_retryable());
        assert!(
            WatcherError::Deadline {
                what: "login",
                after: Duration::from_secs(1)
            }
            .is_retryable()
        );
    }
}
