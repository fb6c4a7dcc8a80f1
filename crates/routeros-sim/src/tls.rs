//! api-ssl: a self-signed certificate and a TLS 1.2 acceptor (`docs/reference/routeros-api.md` §8).
//!
//! The router with a certificate negotiates TLS 1.2 ECDHE; TLS 1.3 was never seen (§8,
//! **unverified**), so the sim offers TLS 1.2 only. Anonymous (certificate-less) api-ssl is not
//! modelled: rustls cannot speak it anyway.

use std::io;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl TlsIdentity {
    /// A fresh self-signed certificate for `localhost` and `127.0.0.1`.
    pub fn generate() -> io::Result<Self> {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let ck = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
        Ok(Self {
            cert_pem: ck.cert.pem(),
            key_pem: ck.key_pair.serialize_pem(),
        })
    }

    /// The certificate in DER.
    pub fn cert_der(&self) -> io::Result<CertificateDer<'static>> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// SHA-256 of the certificate DER: what a client pins.
    pub fn fingerprint_sha256(&self) -> io::Result<[u8; 32]> {
        Ok(Sha256::digest(self.cert_der()?.as_ref()).into())
    }

    pub(crate) fn acceptor(&self) -> io::Result<TlsAcceptor> {
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der()?], key)
            .map_err(io::Error::other)?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
