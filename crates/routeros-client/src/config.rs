//! Connection settings: where, who, how to trust the router, and the limits.

use std::time::Duration;

use routeros_proto::Limits;
use rustls_pki_types::CertificateDer;
use secrecy::SecretString;

/// Default plain API port.
pub const DEFAULT_PORT: u16 = 8728;
/// Default api-ssl port.
pub const DEFAULT_TLS_PORT: u16 = 8729;
/// Default [`ClientConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ClientConfig::command_timeout`].
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ClientConfig::window`].
pub const DEFAULT_WINDOW: usize = 64;
/// Default [`ClientConfig::stream_buffer`].
pub const DEFAULT_STREAM_BUFFER: usize = 256;

/// Everything [`crate::Client::connect`] needs.
///
/// Build it with [`ClientConfig::new`] and adjust the public fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Router address: a DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    /// API port: 8728 plain, 8729 api-ssl.
    pub port: u16,
    /// API user.
    pub user: String,
    /// API password. Its `Debug` prints `[REDACTED]`.
    pub password: SecretString,
    /// api-ssl settings; `None` for the plain API.
    pub tls: Option<TlsConfig>,
    /// Bound on TCP connect + TLS handshake + login together.
    pub connect_timeout: Duration,
    /// Bound on one command, from the moment it is queued for writing until its `!done`. For a
    /// [`crate::RowStream`], bound on each wait for the next row (see
    /// [`crate::RowStream::set_timeout`]). A command that exceeds it is
    /// cancelled on the router with `/cancel`; the connection stays up.
    pub command_timeout: Duration,
    /// Most caller commands in flight on the connection at once (at least 1). Pipelining depth:
    /// 1 means strict request/response.
    pub window: usize,
    /// Rows a [`crate::RowStream`] buffers before the connection stops reading from the socket
    /// (backpressure). Defaults to 256.
    pub stream_buffer: usize,
    /// Decoder limits against hostile or broken peers.
    pub limits: Limits,
}

impl ClientConfig {
    /// Plain API on port 8728 with the default timeouts and window.
    pub fn new(
        host: impl Into<String>,
        user: impl Into<String>,
        password: impl Into<SecretString>,
    ) -> Self {
        Self {
            host: host.into(),
            port: DEFAULT_PORT,
            user: user.into(),
            password: password.into(),
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            window: DEFAULT_WINDOW,
            stream_buffer: DEFAULT_STREAM_BUFFER,
            limits: Limits::default(),
        }
    }
}

/// api-ssl settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TlsConfig {
    /// How the router's certificate is trusted.
    pub trust: TlsTrust,
    /// Name to verify and to send as SNI. Defaults to [`ClientConfig::host`] (a DNS name or an
    /// IP address). Ignored by the fingerprint check, which trusts exactly one certificate.
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// TLS trusting `trust`, with the server name taken from the host.
    pub fn new(trust: TlsTrust) -> Self {
        Self {
            trust,
            server_name: None,
        }
    }
}

/// How to trust the router's certificate.
///
/// There is deliberately no "insecure" switch: for a self-signed router certificate, pin its
/// fingerprint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TlsTrust {
    /// Verify the chain against these CA certificates (WebPKI rules, including the name).
    /// Parsed by the caller (tikban's configuration reads and checks the PEM).
    Ca(Vec<CertificateDer<'static>>),
    /// Accept exactly the end-entity certificate whose SHA-256 (of its DER) is this. The
    /// handshake signature is still verified; name and validity dates are not, because a pinned
    /// certificate is trusted as itself. Parse text with [`parse_fingerprint`].
    Fingerprint([u8; 32]),
}

/// A fingerprint that is not 32 bytes of hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FingerprintError {
    /// A character other than a hex digit or a `:` separator.
    #[error("fingerprint contains {0:?}; expected hex digits, optionally separated by ':'")]
    InvalidChar(char),
    /// Not 64 hex digits.
    #[error("fingerprint has {0} hex digits; a SHA-256 fingerprint has 64")]
    WrongLength(usize),
}

/// Parses a SHA-256 fingerprint written as hex, with or without `:` separators, in either case:
/// `AB:CD:...` (openssl `x509 -fingerprint -sha256`) or `abcd...` (RouterOS `/certificate print`).
/// Surrounding whitespace is ignored.
///
/// ```
/// let a = routeros_client::parse_fingerprint(&"ab".repeat(32)).unwrap();
/// let b = routeros_client::parse_fingerprint(&vec!["AB"; 32].join(":")).unwrap();
/// assert_eq!(a, b);
/// assert_eq!(a, [0xab; 32]);
/// ```
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], FingerprintError> {
    let mut digits = Vec::with_capacity(64);
    for c in text.trim().chars() {
        match c {
            ':' => {}
            c if c.is_ascii_hexdigit() => digits.push(c as u8),
            c => return Err(FingerprintError::InvalidChar(c)),
        }
    }
    if digits.len() != 64 {
        return Err(FingerprintError::WrongLength(digits.len()));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(&digits, &mut out)
        .map_err(|_| FingerprintError::WrongLength(digits.len()))?;
    Ok(out)
}

/// Formats a fingerprint as lowercase hex without separators (as errors show it).
pub fn format_fingerprint(fingerprint: &[u8; 32]) -> String {
    hex::encode(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fingerprints_with_and_without_colons_in_any_case() {
        let plain = "0123456789abcdef".repeat(4);
        let want = parse_fingerprint(&plain).unwrap();
        assert_eq!(want[0], 0x01);
        assert_eq!(want[31], 0xef);
        let colons = plain
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), want);
        assert_eq!(parse_fingerprint(&format!("  {plain}\n")).unwrap(), want);
        assert_eq!(format_fingerprint(&want), plain);
    }

    #[test]
    fn rejects_bad_fingerprints() {
        assert_eq!(
            parse_fingerprint("ab"),
            Err(FingerprintError::WrongLength(2))
        );
        assert_eq!(
            parse_fingerprint(&"a".repeat(65)),
            Err(FingerprintError::WrongLength(65))
        );
        assert_eq!(
            parse_fingerprint(&format!("{}zz", "a".repeat(62))),
            Err(FingerprintError::InvalidChar('z'))
        );
        assert_eq!(
            parse_fingerprint(&format!("sha256:{}", "a".repeat(64))),
            Err(FingerprintError::InvalidChar('s'))
        );
        assert_eq!(parse_fingerprint(""), Err(FingerprintError::WrongLength(0)));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut cfg = ClientConfig::new("192.0.2.1", "tikban", "hunter2-secret");
        cfg.tls = Some(TlsConfig::new(TlsTrust::Fingerprint([7; 32])));
        let dbg = format!("{cfg:?} {:#?} {:?}", cfg, cfg.password);
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("REDACTED"), "{dbg}");
        assert!(dbg.contains("tikban"), "{dbg}");
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&cfg.password),
            "hunter2-secret"
        );
    }
}
