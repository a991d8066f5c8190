//! `s2iam webhook`: the mutating admission webhook over HTTPS.
//!
//! | route | answer |
//! |---|---|
//! | `POST /mutate` | an `admission.k8s.io/v1` AdmissionReview answered (see [`super::admission`]) |
//! | `GET /healthz` | 200 `ok` (the Deployment's probes) |
//!
//! Bounds, because the API server is not the only thing that can reach a Service:
//! TLS handshake within 10 s, request headers within 10 s, the body (at most 3 MiB:
//! an object and its old version, each at most etcd's 1.5 MiB) within 10 s, at most
//! 256 connections at once. The API server's own `timeoutSeconds` (5 s in
//! deploy/kubernetes/webhook) is shorter than all of these; the mutation takes
//! microseconds.
//!
//! The certificate and key are read again when their files change (checked at most
//! every 30 s, at a handshake), so a certificate cert-manager renews is served
//! without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;

use super::admission::review;
use super::inject::{Options, Outcome};
use s2iam::logging::field;

/// Largest AdmissionReview body accepted.
pub const MAX_BODY: usize = 3 << 20;
/// TLS handshake, header and body deadlines.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How often the certificate files are looked at.
const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// Why the webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// The certificate and key, read again when their files change.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    checked: Instant,
    stamp: (Option<SystemTime>, Option<SystemTime>),
    key: Arc<CertifiedKey>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, WebhookError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| WebhookError::Tls(format!("certificate {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(WebhookError::Tls(format!(
            "certificate {}: no certificate in the file",
            cert.display()
        )));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| WebhookError::Tls(format!("key {}: {e}", key.display())))?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| WebhookError::Tls(format!("key {}: {e}", key.display())))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| WebhookError::Tls(format!("{} and {}: {e}", cert.display(), key.display())))?;
    Ok(Arc::new(certified))
}

impl Reloading {
    fn new(cert: &Path, key: &Path) -> Result<Self, WebhookError> {
        Ok(Self {
            current: Mutex::new(Loaded {
                checked: Instant::now(),
                stamp: (modified(cert), modified(key)),
                key: load(cert, key)?,
            }),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.checked.elapsed() >= RELOAD_EVERY {
            current.checked = Instant::now();
            let stamp = (modified(&self.cert), modified(&self.key));
            if stamp != current.stamp {
                match load(&self.cert, &self.key) {
                    Ok(key) => {
                        tracing::info!("webhook certificate reloaded");
                        current.key = key;
                        current.stamp = stamp;
                    }
                    // A half-written pair: keep the old one, try again later.
                    Err(e) => tracing::warn!(error = %e, "webhook certificate not reloaded"),
                }
            }
        }
        Some(current.key.clone())
    }
}

/// The webhook's settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// How to inject.
    pub options: Options,
}

/// A bound, running webhook.
pub struct Webhook {
    /// The bound address (port 0 resolved).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    /// Loads the certificate, binds, and serves in the background.
    pub async fn start(config: WebhookConfig) -> Result<Self, WebhookError> {
        let resolver = Arc::new(Reloading::new(&config.cert, &config.key)?);
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| WebhookError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| WebhookError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| WebhookError::Listen {
                addr: config.listen,
                source,
            })?;
        let options = Arc::new(config.options);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let options = options.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let Ok(Ok(tls)) = tokio::time::timeout(IO_TIMEOUT, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let options = options.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(req, &options).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(IO_TIMEOUT)
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// Stops accepting (open connections finish their request).
    pub fn stop(self) {
        self.task.abort();
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(req: Request<Incoming>, options: &Options) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::POST, "/mutate") => mutate(req, options).await,
        (_, "/mutate" | "/healthz") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => text(
            StatusCode::NOT_FOUND,
            "unknown route; see POST /mutate, GET /healthz",
        ),
    }
}

async fn mutate(req: Request<Incoming>, options: &Options) -> Response<Full<Bytes>> {
    let body = Limited::new(req.into_body(), MAX_BODY);
    let bytes = match tokio::time::timeout(IO_TIMEOUT, body.collect()).await {
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            )
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {MAX_BODY} bytes"),
            )
        }
        Ok(Err(_)) => return text(StatusCode::BAD_REQUEST, "the body could not be read"),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    match review(&bytes, options) {
        Ok((answer, d)) => {
            let outcome = match &d.result {
                Ok(Outcome::Injected) => "injected",
                Ok(Outcome::AlreadyPresent) => "already present",
                Ok(Outcome::NotAnnotated) => "not annotated",
                Err(_) => "refused",
            };
            tracing::info!(
                operation = %field(&d.operation),
                kind = %field(&d.kind),
                dry_run = d.dry_run,
                outcome,
                patch_ops = d.patch_ops,
                reason = %d.result.as_ref().err().map(|e| field(e.as_str())).unwrap_or_default(),
                "admission review"
            );
            let mut resp = Response::new(Full::new(Bytes::from(
                serde_json::to_vec(&answer).unwrap_or_default(),
            )));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => text(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}
