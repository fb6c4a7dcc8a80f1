//! Client configuration: URL, credentials, TLS trust, filters and timeouts.
//!
//! Built once by the daemon from its typed config and checked by
//! [`LapiClient::new`](crate::LapiClient::new), which reports every problem as a [`ConfigError`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// A secret string (the bouncer API key). Its `Debug` and `Display` print `<redacted>`; the only
/// way to read it is crate-internal, where it goes into the `X-Api-Key` header (marked sensitive).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// PEM material given as a file path or inline text.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// Read from this file when the client is built.
    Path(PathBuf),
    /// The PEM text itself.
    Inline(String),
}

impl PemSource {
    /// Inline when the text contains a PEM header (`-----BEGIN`), otherwise a path.
    pub fn from_config(s: &str) -> Self {
        if s.contains("-----BEGIN") {
            PemSource::Inline(s.to_owned())
        } else {
            PemSource::Path(PathBuf::from(s))
        }
    }

    fn describe(&self) -> String {
        match self {
            PemSource::Path(p) => p.display().to_string(),
            PemSource::Inline(_) => "inline PEM".to_owned(),
        }
    }

    fn read(&self, what: &'static str) -> Result<Vec<u8>, ConfigError> {
        match self {
            PemSource::Inline(s) => Ok(s.as_bytes().to_vec()),
            PemSource::Path(p) => std::fs::read(p).map_err(|source| ConfigError::ReadPem {
                what,
                path: p.clone(),
                source: Arc::new(source),
            }),
        }
    }
}

impl fmt::Debug for PemSource {
    /// Inline PEM may be a private key: only its length is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::Path(p) => f.debug_tuple("Path").field(p).finish(),
            PemSource::Inline(s) => write!(f, "Inline(<{} bytes>)", s.len()),
        }
    }
}

/// Everything the client needs. [`LapiConfig::new`] fills the defaults.
#[derive(Debug, Clone)]
pub struct LapiConfig {
    /// LAPI base URL, `http://…` or `https://…`; a path prefix is kept (`/` is appended).
    pub url: String,
    /// Bouncer API key, sent as `X-Api-Key`. Ignored when `client_cert` is set.
    pub api_key: Option<Secret>,
    /// Client certificate (PEM chain) for mTLS; its OU must be in LAPI's `bouncers_allowed_ou`.
    pub client_cert: Option<PemSource>,
    /// Private key for `client_cert`.
    pub client_key: Option<PemSource>,
    /// Extra CA certificates trusted besides the webpki roots.
    pub ca_cert: Option<PemSource>,
    /// Accept any server certificate. Logged as a warning; for tests and emergencies only.
    pub insecure_skip_verify: bool,
    /// `scopes` query parameter; default `ip`, `range`. Empty leaves it out (LAPI's default).
    pub scopes: Vec<String>,
    /// `origins` query parameter (exact, case-sensitive on LAPI's side); empty = all.
    pub origins: Vec<String>,
    /// `scenarios_containing` query parameter.
    pub scenarios_containing: Vec<String>,
    /// `scenarios_not_containing` query parameter.
    pub scenarios_not_containing: Vec<String>,
    /// Decision types kept (compared case-insensitively, on the client side); default `ban`.
    pub decision_types: Vec<String>,
    /// Limit for TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Limit for the response headers, and for each gap between body chunks (a large snapshot may
    /// take longer in total, but it must keep moving).
    pub request_timeout: Duration,
    /// Version for the `User-Agent: tikban/v<version>` header (LAPI wants exactly `type/version`,
    /// `crowdsec-lapi.md` §2), without the `v`.
    pub version: String,
    /// Cap on one decision element in the stream body.
    pub max_element_bytes: usize,
}

impl LapiConfig {
    /// Defaults: scopes `ip,range`, types `ban`, connect 10 s, request 30 s, this crate's version.
    pub fn new(url: impl Into<String>) -> Self {
        LapiConfig {
            url: url.into(),
            api_key: None,
            client_cert: None,
            client_key: None,
            ca_cert: None,
            insecure_skip_verify: false,
            scopes: vec!["ip".into(), "range".into()],
            origins: Vec::new(),
            scenarios_containing: Vec::new(),
            scenarios_not_containing: Vec::new(),
            decision_types: vec!["ban".into()],
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            version: env!("CARGO_PKG_VERSION").into(),
            max_element_bytes: crate::StreamParser::DEFAULT_MAX_ELEMENT,
        }
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret::new(key));
        self
    }
}

/// A configuration the client cannot work with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL does not parse.
    #[error("LAPI url {url:?} is invalid: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Only `http` and `https` are supported.
    #[error("LAPI url scheme must be http or https, got {scheme:?}")]
    UnsupportedScheme {
        /// The scheme given.
        scheme: String,
    },
    /// Neither an API key nor a client certificate.
    #[error("no LAPI credentials: set an API key or a client certificate and key")]
    NoCredentials,
    /// A certificate without a key or the reverse.
    #[error("client certificate and client key must be given together")]
    IncompleteClientCert,
    /// mTLS over plain HTTP.
    #[error("a client certificate needs an https:// LAPI url, got {url:?}")]
    CertNeedsHttps {
        /// The URL given.
        url: String,
    },
    /// The API key cannot be an HTTP header value (the key itself is not shown).
    #[error("the API key contains characters not allowed in an HTTP header (key not shown)")]
    InvalidApiKey,
    /// The version would not make a `type/version` User-Agent.
    #[error("user-agent version {version:?} must be non-empty visible ASCII without '/'")]
    InvalidVersion {
        /// The version given.
        version: String,
    },
    /// A PEM file could not be read.
    #[error("cannot read {what} from {}: {source}", path.display())]
    ReadPem {
        /// Which file (CA, client certificate, client key).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// PEM text without the expected item.
    #[error("{what} from {source_desc} holds no {expected}")]
    NoPemItem {
        /// Which input.
        what: &'static str,
        /// Path or "inline PEM".
        source_desc: String,
        /// The PEM item expected (`CERTIFICATE`, `PRIVATE KEY`).
        expected: &'static str,
    },
    /// rustls refused the material.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// Timeouts must be non-zero.
    #[error("{which} timeout must be > 0")]
    ZeroTimeout {
        /// `connect` or `request`.
        which: &'static str,
    },
}

fn certs(src: &PemSource, what: &'static str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = src.read(what)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &bytes[..])
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(ConfigError::NoPemItem {
            what,
            source_desc: src.describe(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn key(src: &PemSource) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let what = "client key";
    let bytes = src.read(what)?;
    match rustls_pemfile::private_key(&mut &bytes[..]) {
        Ok(Some(k)) => Ok(k),
        _ => Err(ConfigError::NoPemItem {
            what,
            source_desc: src.describe(),
            expected: "PRIVATE KEY",
        }),
    }
}

/// Builds the rustls client config: webpki roots + optional CA, optional client cert, ALPN
/// `http/1.1` (LAPI would speak HTTP/2 over TLS otherwise, §2; the client only speaks HTTP/1.1).
pub(crate) fn tls_config(cfg: &LapiConfig) -> Result<ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if cfg.insecure_skip_verify {
        tracing::warn!("LAPI TLS certificate verification is disabled (insecure_skip_verify)");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(ca) = &cfg.ca_cert {
            for c in certs(ca, "CA certificate")? {
                roots.add(c)?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(c), Some(k)) => {
            builder.with_client_auth_cert(certs(c, "client certificate")?, key(k)?)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(ConfigError::IncompleteClientCert),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any server certificate but still checks handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2-key");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        let cfg = LapiConfig::new("http://x").with_api_key("hunter2-key");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn inline_pem_is_not_printed() {
        let p =
            PemSource::from_config("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n");
        assert!(matches!(p, PemSource::Inline(_)));
        assert!(!format!("{p:?}").contains("abc"));
        assert!(matches!(
            PemSource::from_config("/etc/k.pem"),
            PemSource::Path(_)
        ));
    }

    #[test]
    fn missing_files_and_empty_pem_are_typed_errors() {
        let mut cfg = LapiConfig::new("https://x");
        cfg.ca_cert = Some(PemSource::Path("/nonexistent/ca.pem".into()));
        assert!(matches!(
            tls_config(&cfg),
            Err(ConfigError::ReadPem {
                what: "CA certificate",
                ..
            })
        ));
        cfg.ca_cert = Some(PemSource::Inline("-----BEGIN nothing".into()));
        assert!(matches!(
            tls_config(&cfg),
            Err(ConfigError::NoPemItem { .. })
        ));
        cfg.ca_cert = None;
        cfg.client_cert = Some(PemSource::Inline("x".into()));
        assert!(matches!(
            tls_config(&cfg),
            Err(ConfigError::IncompleteClientCert)
        ));
    }
}
