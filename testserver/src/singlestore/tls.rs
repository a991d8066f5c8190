//! The mock SingleStore's TLS: a fresh CA per start, and a server certificate it
//! signs for the configured server name, `localhost` and 127.0.0.1. Clients trust
//! the CA through the PEM file the test server writes (like its info file).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the mock's certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the mock SingleStore certificates: {0}")]
    /// rcgen failed.
    Generate(#[from] rcgen::Error),
    #[error("cannot build the mock SingleStore TLS configuration: {0}")]
    /// rustls refused the certificate.
    Rustls(#[from] rustls::Error),
}

/// The CA (PEM, for clients) and the server side of TLS.
#[derive(Clone)]
pub struct MockTls {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The server side of TLS.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for MockTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockTls").finish_non_exhaustive()
    }
}

impl MockTls {
    /// A fresh CA and a certificate for `server_name`, `localhost` and 127.0.0.1.
    pub fn generate(server_name: &str) -> Result<Self, TlsError> {
        let mut names = vec![server_name.to_string()];
        if server_name != "localhost" {
            names.push("localhost".into());
        }
        Self::for_names("s2iam mock SingleStore CA", names)
    }

    /// A fresh CA named `ca_name` and a certificate for every name in `names`
    /// (the first is also its common name) and 127.0.0.1.
    pub fn for_names(ca_name: &str, names: Vec<String>) -> Result<Self, TlsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key)?;

        let key = KeyPair::generate()?;
        let common_name = names.first().cloned().unwrap_or_default();
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let cert = params.signed_by(&key, &ca, &ca_key)?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        Ok(Self {
            ca_pem: ca.pem(),
            server_config: Arc::new(server_config),
        })
    }

    /// The CA certificate in DER form.
    pub fn ca_der(&self) -> Vec<CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(self.ca_pem.as_bytes())
            .filter_map(Result::ok)
            .collect()
    }
}
