//! Client configuration: URL, credentials, TLS trust, filters and timeouts.
//!
//! Built once by the daemon from its typed config and checked by
//! [`LapiClient::new`](crate::LapiClient::new), which reports every problem as a [`ConfigError`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use secrecy::SecretString;

/// A client certificate chain and its private key for mTLS, parsed (DER).
///
/// Built with [`ClientCert::new`], which checks that the key loads with rustls' ring provider and
/// matches the first certificate, so a configuration can report a bad key before any connection.
/// Reading and parsing PEM is the caller's job (tikban's configuration does it, with size limits).
/// `Debug` shows the number of certificates, never the key.
pub struct ClientCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ClientCert {
    /// Checks and wraps a chain (end-entity certificate first) and its key.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, ConfigError> {
        if chain.is_empty() {
            return Err(ConfigError::EmptyCertChain);
        }
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)?;
        Ok(ClientCert { chain, key })
    }

    /// The certificate chain, end-entity first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

impl Clone for ClientCert {
    fn clone(&self) -> Self {
        ClientCert {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCert")
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Everything the client needs. [`LapiConfig::new`] fills the defaults.
#[derive(Debug, Clone)]
pub struct LapiConfig {
    /// LAPI base URL, `http://…` or `https://…`; a path prefix is kept (`/` is appended).
    pub url: String,
    /// Bouncer API key, sent as `X-Api-Key`. Ignored when `client_cert` is set.
    pub api_key: Option<SecretString>,
    /// Client certificate and key for mTLS; the certificate's OU must be in LAPI's
    /// `bouncers_allowed_ou` (`docs/reference/crowdsec-lapi.md` §2).
    pub client_cert: Option<ClientCert>,
    /// Extra CA certificates trusted besides the webpki roots.
    pub ca_certs: Vec<CertificateDer<'static>>,
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
    /// `docs/reference/crowdsec-lapi.md` §2), without the `v`.
    pub version: String,
    /// Cap on one decision element in the stream body, counting only the fields tikban keeps
    /// (`docs/reference/crowdsec-lapi.md` §5): a larger element is skipped and counted in
    /// [`StreamStats::oversized`](crate::StreamStats::oversized), the rest of the body applies.
    pub max_element_bytes: usize,
    /// Cap on one stream response body. Past it the poll fails and nothing is applied.
    ///
    /// The default, 512 MiB, admits a 1,000,000-decision startup snapshot with room to spare:
    /// about 138 B per decision on 1.4.6 and 185 B with `uuid` on ≥ 1.5
    /// (`docs/reference/crowdsec-lapi.md` §6), so 1,000,000 × 185 B ≈ 185 MB ≈ 176 MiB, about
    /// a third of the cap. The body is parsed as it streams, so the cap bounds time and traffic,
    /// not memory.
    pub max_body_bytes: u64,
    /// Cap on the decisions (`new` and `deleted` elements together) in one response. Past it the
    /// poll fails and nothing is applied.
    ///
    /// The default, 2,000,000, is twice the 1,000,000-decision snapshot the body cap is sized for;
    /// it bounds the [`Batch`](crate::Batch), which holds every decision of a response (about
    /// 48 B each) until it is applied.
    pub max_decisions: u64,
}

/// Default [`LapiConfig::max_body_bytes`]: 512 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 512 * 1024 * 1024;
/// Default [`LapiConfig::max_decisions`].
pub const DEFAULT_MAX_DECISIONS: u64 = 2_000_000;

impl LapiConfig {
    /// Defaults: scopes `ip,range`, types `ban`, connect 10 s, request 30 s, this crate's version.
    pub fn new(url: impl Into<String>) -> Self {
        LapiConfig {
            url: url.into(),
            api_key: None,
            client_cert: None,
            ca_certs: Vec::new(),
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
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_decisions: DEFAULT_MAX_DECISIONS,
        }
    }

    /// Sets the API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(SecretString::from(key.into()));
        self
    }
}

/// A configuration the client cannot work with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL does not parse.
    #[error("LAPI url \"{url}\" is invalid: {reason}")]
    InvalidUrl {
        /// The URL given, with any user-info redacted ([`redact_url`](crate::redact_url)).
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
    /// mTLS over plain HTTP.
    #[error("a client certificate needs an https:// LAPI url, got \"{url}\"")]
    CertNeedsHttps {
        /// The URL given, with any user-info redacted.
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
    /// A client certificate chain without any certificate.
    #[error("the client certificate chain is empty")]
    EmptyCertChain,
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
        for c in &cfg.ca_certs {
            roots.add(c.clone())?;
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match &cfg.client_cert {
        Some(c) => builder.with_client_auth_cert(c.chain.clone(), c.key.clone_key())?,
        None => builder.with_no_client_auth(),
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
        let cfg = LapiConfig::new("http://x").with_api_key("hunter2-key");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn client_cert_checks_the_key_and_never_prints_it() {
        let ck = fixture_pair();
        let c = ClientCert::new(vec![ck.0.clone()], ck.1.clone_key()).unwrap();
        let dbg = format!("{c:?} {:?}", c.clone());
        assert!(dbg.contains("<redacted>"), "{dbg}");
        assert!(!dbg.contains("PrivatePkcs8KeyDer"), "{dbg}");
        assert!(matches!(
            ClientCert::new(Vec::new(), ck.1.clone_key()),
            Err(ConfigError::EmptyCertChain)
        ));
        let garbage = PrivateKeyDer::Pkcs8(b"not a key".to_vec().into());
        assert!(matches!(
            ClientCert::new(vec![ck.0], garbage),
            Err(ConfigError::Tls(_))
        ));
    }

    /// A self-signed certificate and its key, from the fixture in `testdata/`.
    fn fixture_pair() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        use rustls_pki_types::pem::PemObject;
        let cert = CertificateDer::from_pem_slice(include_bytes!("testdata/client.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("testdata/client-key.pem")).unwrap();
        (cert, key)
    }
}
