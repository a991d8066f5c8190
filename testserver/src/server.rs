//! The HTTP listener every mock runs on: HTTP/1.1 with keep-alive, a body-size limit,
//! fault injection in front of the routes, a log of every request, and graceful
//! shutdown.
//!
//! Faults are applied here, below the router, because a connection reset has to
//! happen at the socket: the connection task keeps a duplicate of the socket's file
//! descriptor, sets `SO_LINGER` to zero on it and fails the request, so the kernel
//! answers with an RST instead of a FIN.
//!
//! Every listener also serves:
//! - `GET|POST|DELETE /_mock/faults` (see [`crate::faults`]);
//! - `GET /_mock/requests`: `[{"method","path","query","status","fault"}]`, with the
//!   values of secret-bearing query parameters replaced by `<redacted>`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, Response, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::faults::{FaultAction, FaultRule, Faults};

/// Largest request body any mock accepts; real metadata services take no bodies and
/// STS and the auth service take small forms and JSON documents.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long shutdown waits for in-flight requests (a blackholed one never finishes).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// One request as the listener saw it.
#[derive(Debug, Clone, Serialize)]
pub struct SeenRequest {
    /// The HTTP method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The status answered.
    pub status: u16,
    /// The fault applied, if any.
    pub fault: Option<FaultAction>,
}

/// The requests one listener has seen. Cloning shares the log.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    entries: Arc<Mutex<Vec<SeenRequest>>>,
}

impl RequestLog {
    /// Every request seen so far.
    pub fn entries(&self) -> Vec<SeenRequest> {
        self.lock().clone()
    }

    /// How many requests had a path starting with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.lock()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }

    /// Forgets the requests seen.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn push(&self, entry: SeenRequest) {
        let mut entries = self.lock();
        // Bounded so a long-running `s2iam dev` cannot grow without limit.
        if entries.len() >= 100_000 {
            entries.drain(..10_000);
        }
        entries.push(entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SeenRequest>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running listener. Dropping it does not stop it; call [`Listener::shutdown`].
#[derive(Debug)]
pub struct Listener {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ip:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish (up to a short grace period)
    /// and returns when the listener is closed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Serves `app` on `listener` with fault injection and request logging; fails
/// only if the listener cannot tell its address.
pub fn spawn(
    listener: TcpListener,
    app: Router,
    faults: Faults,
    log: RequestLog,
) -> std::io::Result<Listener> {
    spawn_with(listener, app, faults, log, None)
}

/// [`spawn`] over TLS: HTTPS with `tls`'s certificate (the mock cloud under real
/// AWS host names, e.g. `sts.cn-north-1.amazonaws.com.cn`, for clients that resolve
/// them to this listener and trust the mock CA).
pub fn spawn_tls(
    listener: TcpListener,
    app: Router,
    faults: Faults,
    log: RequestLog,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<Listener> {
    spawn_with(listener, app, faults, log, Some(tls))
}

fn spawn_with(
    listener: TcpListener,
    app: Router,
    faults: Faults,
    log: RequestLog,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<Listener> {
    let addr = listener.local_addr()?;
    let app = app
        .merge(admin_routes(faults.clone(), log.clone()))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let (stop, stopped) = watch::channel(false);
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let task = tokio::spawn(accept_loop(listener, app, faults, log, tls, stopped));
    Ok(Listener { addr, stop, task })
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    faults: Faults,
    log: RequestLog,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let conn = Connection { app: app.clone(), faults: faults.clone(), log: log.clone() };
                match &tls {
                    None => {
                        if let Some(fut) = conn.serve(stream, &graceful) {
                            tokio::spawn(fut);
                        }
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move { conn.serve_tls(stream, acceptor, watcher).await });
                    }
                }
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

#[derive(Clone)]
struct Connection {
    app: Router,
    faults: Faults,
    log: RequestLog,
}

/// The error that makes hyper drop a connection; see the module docs.
#[derive(Debug, thiserror::Error)]
#[error("connection reset by fault injection")]
struct ResetByFault;

impl Connection {
    fn serve(
        self,
        stream: TcpStream,
        graceful: &hyper_util::server::graceful::GracefulShutdown,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let _ = stream.set_nodelay(true);
        let std_stream = stream.into_std().ok()?;
        let raw = Arc::new(std_stream.try_clone().ok()?);
        let stream = TcpStream::from_std(std_stream).ok()?;
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let conn = self.clone();
            let raw = raw.clone();
            async move { conn.handle(req.map(Body::new), &raw).await }
        });
        let http =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
        let watched = graceful.watch(http);
        Some(async move {
            let _ = watched.await;
        })
    }

    /// [`Connection::serve`] after a TLS handshake (a failed one just closes).
    async fn serve_tls(
        self,
        stream: TcpStream,
        acceptor: tokio_rustls::TlsAcceptor,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let _ = stream.set_nodelay(true);
        let Some(raw) = stream
            .into_std()
            .ok()
            .and_then(|s| Some((Arc::new(s.try_clone().ok()?), s)))
        else {
            return;
        };
        let (raw, std_stream) = raw;
        let Ok(stream) = TcpStream::from_std(std_stream) else {
            return;
        };
        let Ok(tls) = acceptor.accept(stream).await else {
            return;
        };
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let conn = self.clone();
            let raw = raw.clone();
            async move { conn.handle(req.map(Body::new), &raw).await }
        });
        let http =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc);
        let _ = watcher.watch(http).await;
    }

    async fn handle(
        &self,
        req: Request<Body>,
        raw: &std::net::TcpStream,
    ) -> Result<Response<Body>, ResetByFault> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = redact_query(req.uri().query().unwrap_or(""));
        let decision = if path.starts_with("/_mock/") {
            None
        } else {
            self.faults.decide(&method, &path)
        };
        let mut seen = SeenRequest {
            method,
            path,
            query,
            status: 0,
            fault: decision.as_ref().map(|d| d.action),
        };
        if let Some(d) = &decision {
            tokio::time::sleep(d.latency).await;
            match d.action {
                FaultAction::Delay => {}
                FaultAction::Status => {
                    let status =
                        StatusCode::from_u16(d.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    seen.status = status.as_u16();
                    self.log.push(seen);
                    return Ok(crate::util::json_error(
                        status,
                        "injected_fault",
                        format!("fault injected: status {}", status.as_u16()),
                    ));
                }
                FaultAction::Reset => {
                    self.log.push(seen);
                    let _ = socket2::SockRef::from(raw).set_linger(Some(Duration::ZERO));
                    return Err(ResetByFault);
                }
                FaultAction::Blackhole => {
                    self.log.push(seen.clone());
                    std::future::pending::<()>().await;
                }
            }
        }
        let resp = match self.app.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        seen.status = resp.status().as_u16();
        self.log.push(seen);
        Ok(resp)
    }
}

fn admin_routes(faults: Faults, log: RequestLog) -> Router {
    Router::new()
        .route(
            "/_mock/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .with_state(faults)
        .route(
            "/_mock/requests",
            get(|State(log): State<RequestLog>| async move { Json(log.entries()) }).delete(
                |State(log): State<RequestLog>| async move {
                    log.clear();
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(log)
}

async fn list_faults(State(faults): State<Faults>) -> Json<Vec<FaultRule>> {
    Json(faults.list())
}

async fn add_fault(
    State(faults): State<Faults>,
    body: axum::body::Bytes,
) -> Result<StatusCode, Response<Body>> {
    let rule: FaultRule = serde_json::from_slice(&body).map_err(|e| {
        crate::util::json_error(StatusCode::BAD_REQUEST, "invalid_fault", e.to_string())
    })?;
    faults.add(rule);
    Ok(StatusCode::CREATED)
}

async fn clear_faults(State(faults): State<Faults>) -> StatusCode {
    faults.clear();
    StatusCode::NO_CONTENT
}

/// Query parameters whose values are credentials (presigned URLs, SigV4 query auth).
const SECRET_QUERY_PARAMS: &[&str] = &[
    "x-amz-signature",
    "x-amz-security-token",
    "x-amz-credential",
    "signature",
    "client_assertion",
    "token",
];

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if SECRET_QUERY_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=<redacted>")
            }
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_query_values_are_redacted() {
        assert_eq!(
            redact_query("a=1&X-Amz-Signature=abc&token=t"),
            "a=1&X-Amz-Signature=<redacted>&token=<redacted>"
        );
    }
}
