//! api-ssl: rustls client configuration, fingerprint pinning, and handshake error mapping.
//!
//! rustls implements only ECDHE key exchange, so it cannot talk to an api-ssl service without a
//! certificate, which offers only anonymous DH (`docs/reference/routeros-api.md` §8). That failure is detected
//! and reported as [`ConnectError::AnonymousDhNotSupported`] with the fix. TLS 1.2 stays enabled:
//! the router is assumed to negotiate TLS 1.2 only (§8).

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, DigitallySignedStruct, OtherError, PeerIncompatible,
    PeerMisbehaved, RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256};

use crate::config::{TlsConfig, TlsTrust, format_fingerprint};
use crate::error::ConnectError;

/// Builds the rustls client configuration for `tls`.
pub(crate) fn client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, ConnectError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConnectError::TlsConfig(e.to_string()))?;
    let config = match &tls.trust {
        TlsTrust::Ca(certs) => {
            let mut roots = RootCertStore::empty();
            if certs.is_empty() {
                return Err(ConnectError::TlsConfig(
                    "no CA certificate given for the router".to_owned(),
                ));
            }
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| ConnectError::TlsConfig(format!("bad CA certificate: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pin: *pin,
                provider,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// The name rustls verifies and sends: the configured one, else the host (DNS name or IP).
pub(crate) fn server_name(
    tls: &TlsConfig,
    host: &str,
) -> Result<ServerName<'static>, ConnectError> {
    let name = tls.server_name.as_deref().unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_owned()).map_err(|_| {
        ConnectError::TlsConfig(format!("{name:?} is not a valid DNS name or IP address"))
    })
}

/// Trusts exactly one end-entity certificate, by the SHA-256 of its DER, and still checks that
/// the server holds its key (handshake signatures).
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

/// Carried inside a rustls error so the handshake failure can be reported with both values.
#[derive(Debug)]
struct PinMismatch {
    expected: [u8; 32],
    got: [u8; 32],
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate SHA-256 {} does not match the pinned {}",
            format_fingerprint(&self.got),
            format_fingerprint(&self.expected)
        )
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch {
                    expected: self.pin,
                    got,
                })),
            )))
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Turns a failed handshake into the most useful [`ConnectError`].
pub(crate) fn handshake_error(err: io::Error) -> ConnectError {
    let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return ConnectError::Tls(match err.kind() {
            io::ErrorKind::UnexpectedEof => {
                "the router closed the connection during the handshake (is this the api-ssl \
                 port?)"
                    .to_owned()
            }
            _ => err.to_string(),
        });
    };
    if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) = tls
        && let Some(m) = inner.downcast_ref::<PinMismatch>()
    {
        return ConnectError::FingerprintMismatch {
            expected: format_fingerprint(&m.expected),
            got: format_fingerprint(&m.got),
        };
    }
    if looks_like_anonymous_dh(tls) {
        return ConnectError::AnonymousDhNotSupported {
            detail: tls.to_string(),
        };
    }
    ConnectError::Tls(tls.to_string())
}

/// An api-ssl service without a certificate offers only `ADH-*` suites (`docs/reference/routeros-api.md` §8).
/// Against rustls' ECDHE-only hello, OpenSSL on the router finds no shared suite and answers
/// with a `handshake_failure` alert before any certificate; a server that picked an anonymous
/// suite anyway would make rustls report an unoffered suite or an incompatible peer.
fn looks_like_anonymous_dh(err: &rustls::Error) -> bool {
    match err {
        rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity,
        ) => true,
        rustls::Error::PeerIncompatible(p) => {
            !matches!(p, PeerIncompatible::ServerRejectedEncryptedClientHello(_))
        }
        rustls::Error::PeerMisbehaved(PeerMisbehaved::SelectedUnofferedCipherSuite) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(e: rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn handshake_failure_alert_maps_to_anonymous_dh() {
        let got = handshake_error(wrap(rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure,
        )));
        assert!(
            matches!(got, ConnectError::AnonymousDhNotSupported { .. }),
            "{got:?}"
        );
        let got = handshake_error(wrap(rustls::Error::PeerMisbehaved(
            PeerMisbehaved::SelectedUnofferedCipherSuite,
        )));
        assert!(matches!(got, ConnectError::AnonymousDhNotSupported { .. }));
    }

    #[test]
    fn pin_mismatch_maps_to_fingerprint_error_with_both_values() {
        let err = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            PinMismatch {
                expected: [1; 32],
                got: [2; 32],
            },
        ))));
        match handshake_error(wrap(err)) {
            ConnectError::FingerprintMismatch { expected, got } => {
                assert_eq!(expected, "01".repeat(32));
                assert_eq!(got, "02".repeat(32));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_errors_stay_generic() {
        let got = handshake_error(wrap(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )));
        assert!(matches!(got, ConnectError::Tls(_)), "{got:?}");
        let got = handshake_error(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(matches!(got, ConnectError::Tls(m) if m.contains("api-ssl")));
    }

    #[test]
    fn server_name_accepts_dns_names_and_ip_addresses() {
        let tls = TlsConfig::new(TlsTrust::Fingerprint([0; 32]));
        assert!(matches!(
            server_name(&tls, "192.0.2.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name(&tls, "[2001:db8::1]"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name(&tls, "router.lan"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name(&tls, "not a name").is_err());
    }

    #[test]
    fn empty_or_invalid_ca_certificates_are_config_errors() {
        let tls = TlsConfig::new(TlsTrust::Ca(Vec::new()));
        assert!(matches!(
            client_config(&tls),
            Err(ConnectError::TlsConfig(m)) if m.contains("no CA certificate")
        ));
        let tls = TlsConfig::new(TlsTrust::Ca(vec![CertificateDer::from(b"junk".to_vec())]));
        assert!(matches!(
            client_config(&tls),
            Err(ConnectError::TlsConfig(m)) if m.contains("bad CA certificate")
        ));
    }
}
