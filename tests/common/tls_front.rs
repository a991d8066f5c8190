//! A TLS terminator in front of a plain-TCP upstream, for the tests that need an
//! `https://` endpoint (included with `#[path]` by the tests that use it, so the
//! other test binaries do not compile rcgen and rustls code they never call).

use std::net::SocketAddr;
use std::sync::Arc;

/// Serves TLS with `cert` and `key` on a random loopback port and relays every
/// connection to `upstream`; returns the port's address.
pub async fn tls_front(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: &rcgen::KeyPair,
    upstream: SocketAddr,
) -> SocketAddr {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    addr
}
