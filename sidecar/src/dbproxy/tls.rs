//! TLS to SingleStore: rustls (ring), TLS 1.2 or 1.3, the server certificate
//! checked against the system's CA store or a configured CA file, SNI set to the
//! configured server name.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Why the TLS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA file {path}: {message}")]
    /// The CA file cannot be read or parsed.
    CaFile {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    #[error("CA file {0} holds no usable certificate")]
    /// The CA file has no certificate rustls accepts.
    NoCertificate(String),
    #[error("no CA certificates found in the system store; set ca_file")]
    /// No `ca_file` and an empty system store.
    NoSystemRoots,
    #[error("cannot build the TLS client: {0}")]
    /// rustls refused the configuration.
    Rustls(#[from] rustls::Error),
}

/// The client configuration for one proxy's upstream.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let shown = path.display().to_string();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| TlsSetupError::CaFile {
                    path: shown.clone(),
                    message: e.to_string(),
                })?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsSetupError::CaFile {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsSetupError::NoCertificate(shown));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "skipping part of the system CA store");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsSetupError::NoSystemRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
