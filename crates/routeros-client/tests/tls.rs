//! api-ssl against a scripted TLS 1.2 server (rustls), and the anonymous-DH failure a
//! certificate-less RouterOS api-ssl produces (`docs/reference/routeros-api.md` §8).

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use routeros_client::{Client, ConnectError, TlsConfig, TlsTrust, format_fingerprint};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::fake::{Peer, config};

/// A CA and a server certificate it issued for `localhost` and `127.0.0.1`.
pub struct Pki {
    pub ca_pem: String,
    pub leaf_der: CertificateDer<'static>,
    pub leaf_key: PrivateKeyDer<'static>,
}

pub fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf_der: leaf.der().clone(),
        leaf_key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
    }
}

/// A TLS 1.2-only server (as RouterOS api-ssl is assumed to be) that accepts the login and then
/// answers one command. Handshake failures just end the task.
async fn tls_server(pki: &Pki) -> (SocketAddr, JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf_der.clone()], pki.leaf_key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(tls) = acceptor.accept(tcp).await else {
            return;
        };
        let mut p = Peer::new(tls);
        p.accept_login().await;
        if let Some(c) = p.recv().await {
            p.send(&["!done", "=ret=tls-ok", &crate::fake::tag_of(&c)])
                .await;
        }
        let _ = p.recv().await;
    });
    (addr, task)
}

async fn run(pki: &Pki, trust: TlsTrust) -> Result<(), ConnectError> {
    let (addr, server) = tls_server(pki).await;
    let mut c = config(addr);
    c.tls = Some(TlsConfig::new(trust));
    let result = match Client::connect(c).await {
        Ok(client) => {
            let r = client
                .execute(
                    routeros_client::Command::builder("/system/identity/print")
                        .build()
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(r.ret_str(), Some("tls-ok"));
            client.quit().await.ok();
            Ok(())
        }
        Err(e) => Err(e),
    };
    server.abort();
    let _ = server.await;
    result
}

#[tokio::test]
async fn pinned_fingerprint_connects() {
    let pki = pki();
    let pin: [u8; 32] = Sha256::digest(pki.leaf_der.as_ref()).into();
    run(&pki, TlsTrust::Fingerprint(pin)).await.unwrap();
}

#[tokio::test]
async fn wrong_pin_is_refused_with_both_fingerprints() {
    let pki = pki();
    let real: [u8; 32] = Sha256::digest(pki.leaf_der.as_ref()).into();
    let err = run(&pki, TlsTrust::Fingerprint([0x42; 32]))
        .await
        .unwrap_err();
    match &err {
        ConnectError::FingerprintMismatch { expected, got } => {
            assert_eq!(expected, &"42".repeat(32));
            assert_eq!(got, &format_fingerprint(&real));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("does not match the pinned"),
        "{err}"
    );
}

fn ca(pem: &str) -> TlsTrust {
    TlsTrust::Ca(vec![
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap(),
    ])
}

#[tokio::test]
async fn the_signing_ca_connects() {
    let pki = pki();
    run(&pki, ca(&pki.ca_pem)).await.unwrap();
}

#[tokio::test]
async fn unrelated_ca_is_refused() {
    let pki = pki();
    let other = self::pki();
    let err = run(&pki, ca(&other.ca_pem)).await.unwrap_err();
    assert!(matches!(err, ConnectError::Tls(_)), "{err:?}");
}

/// A certificate-less api-ssl offers only ADH suites; OpenSSL answers rustls' ECDHE-only
/// ClientHello with a fatal `handshake_failure` alert.
#[tokio::test]
async fn anonymous_dh_router_is_detected_and_the_fix_named() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 5];
        tcp.read_exact(&mut hello).await.unwrap();
        assert_eq!(hello[0], 0x16, "a TLS handshake record");
        // Alert record, TLS 1.2, length 2: fatal (2), handshake_failure (40).
        tcp.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
    });
    let mut c = config(addr);
    c.tls = Some(TlsConfig::new(TlsTrust::Fingerprint([0; 32])));
    let err = Client::connect(c).await.unwrap_err();
    assert!(
        matches!(err, ConnectError::AnonymousDhNotSupported { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("certificate=") && text.contains("8728"),
        "{text}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn plaintext_router_on_the_tls_port_is_a_tls_error() {
    let (addr, server) = crate::fake::fake(|p| async move {
        // A plain API service closes on garbage.
        drop(p.into_inner());
    })
    .await;
    let mut c = config(addr);
    c.tls = Some(TlsConfig::new(TlsTrust::Fingerprint([0; 32])));
    let err = Client::connect(c).await.unwrap_err();
    assert!(matches!(err, ConnectError::Tls(_)), "{err:?}");
    server.await.unwrap();
}
