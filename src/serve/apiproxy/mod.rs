//! `[[api_proxy]]`: local HTTP proxies to SingleStore's Data API and Management API.
//!
//! An application sends plain HTTP to `127.0.0.1:<port>` (or a Unix socket) with no
//! credentials; the proxy forwards every request (method, path and query, headers,
//! body) to the configured upstream base URL over https and adds
//! `Authorization: Bearer <jwt>` from the sidecar's token cache: the database JWT
//! of a workspace group for the Data API, the API JWT for the Management API. So
//! any number of requests share one exchange, and the request after a refresh
//! carries the new token. Bodies stream both ways frame by frame: a result of any
//! size passes through in constant memory.
//!
//! Limits: `max_connections` client connections at once (more wait in the kernel's
//! accept queue), 30 s to send request headers (also the keep-alive idle limit),
//! `connect_timeout` to reach the upstream, `timeout` until its response headers
//! (counted from the start, so a request upload is included) and for any silence
//! within a response body. On shutdown the listener stops accepting and
//! in-flight requests get [`DRAIN_GRACE`] to finish.
//!
//! [`crate::config::api_proxy`] has the settings, [`forward`] what happens to one request.

pub mod body;
pub mod forward;
pub mod target;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use self::forward::{Caller, Proxy};
use super::{AppState, ServeError};
use crate::env::Env;

/// How long in-flight requests may run on after the stop signal.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// How long a client has to send its request headers (and how long an idle
/// keep-alive connection stays open).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an API proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiProxyError {
    #[error("api_proxy {name}: cannot use ca_file {path}: {message}")]
    /// The CA file could not be read or parsed.
    CaFile {
        /// The proxy's name.
        name: String,
        /// The CA file.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
    #[error("api_proxy {name}: cannot build the upstream HTTP client: {message}")]
    /// The HTTP client could not be built.
    Client {
        /// The proxy's name.
        name: String,
        /// What the HTTP client builder said.
        message: String,
    },
}

/// A running proxy: its listeners' tasks.
pub struct Running {
    /// The proxy's name.
    pub name: String,
    /// The bound TCP address (the real port when 0 was asked for).
    pub tcp_addr: Option<SocketAddr>,
    /// The Unix socket path.
    pub socket: Option<PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Waits for the listeners to drain (after the stop signal) and removes the
    /// socket file.
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds every configured proxy; `env` gives the `HTTPS_PROXY` settings.
pub async fn start_all(
    state: Arc<AppState>,
    env: &Env,
    stopped: watch::Receiver<bool>,
) -> Result<Vec<Running>, ServeError> {
    let mut running = Vec::new();
    for config in state.config.api_proxies.clone() {
        let proxy = Arc::new(Proxy::new(config, state.clone(), env)?);
        running.push(start(proxy, &state, stopped.clone()).await?);
    }
    Ok(running)
}

async fn start(
    proxy: Arc<Proxy>,
    state: &AppState,
    stopped: watch::Receiver<bool>,
) -> Result<Running, ServeError> {
    let config = &proxy.config;
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let mut running = Running {
        name: config.name.clone(),
        tcp_addr: None,
        socket: None,
        tasks: Vec::new(),
    };
    if let Some(addr) = config.listen {
        let listen_err = |source| ServeError::Listen {
            what: format!("{addr} (api_proxy {})", config.name),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(listen_err)?;
        let addr = listener.local_addr().map_err(listen_err)?;
        tracing::info!(proxy = %config.name, %addr, upstream = %config.upstream, "API proxy listening");
        running.tcp_addr = Some(addr);
        running.tasks.push(tokio::spawn(accept_loop(
            Acceptor::Tcp(listener),
            proxy.clone(),
            limit.clone(),
            stopped.clone(),
        )));
    }
    if let Some(path) = &config.socket {
        let listen_err = |source| ServeError::Listen {
            what: format!("{} (api_proxy {})", path.display(), config.name),
            source,
        };
        crate::util::unix_socket::prepare_socket_path(path)
            .await
            .map_err(listen_err)?;
        let listener = UnixListener::bind(path).map_err(listen_err)?;
        std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(state.config.listen.socket_mode),
        )
        .map_err(listen_err)?;
        tracing::info!(proxy = %config.name, socket = %path.display(), upstream = %config.upstream, "API proxy listening");
        running.socket = Some(path.clone());
        running.tasks.push(tokio::spawn(accept_loop(
            Acceptor::Unix(listener, state.config.listen.allowed_uids.clone()),
            proxy.clone(),
            limit,
            stopped,
        )));
    }
    Ok(running)
}

enum Acceptor {
    Tcp(TcpListener),
    /// With `listen.allowed_uids` (empty: any peer).
    Unix(UnixListener, Vec<u32>),
}

async fn accept_loop(
    acceptor: Acceptor,
    proxy: Arc<Proxy>,
    limit: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        // A free connection slot first: over the limit, clients wait in the backlog.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stopped.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            a = accept(&acceptor) => a,
            _ = stopped.wait_for(|s| *s) => break,
        };
        match accepted {
            Ok(Accepted::Tcp(stream)) => {
                let _ = stream.set_nodelay(true);
                serve(stream, Caller::Tcp, &proxy, permit, &graceful);
            }
            Ok(Accepted::Unix(stream, caller)) => serve(stream, caller, &proxy, permit, &graceful),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(proxy = %proxy.config.name, error = %e, "API proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(acceptor);
    if tokio::time::timeout(DRAIN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(proxy = %proxy.config.name, "API proxy requests still running at the drain deadline were cut");
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream, Caller),
}

async fn accept(acceptor: &Acceptor) -> std::io::Result<Accepted> {
    match acceptor {
        Acceptor::Tcp(l) => Ok(Accepted::Tcp(l.accept().await?.0)),
        Acceptor::Unix(l, allowed) => {
            let (stream, _) = l.accept().await?;
            let uid = stream.peer_cred().ok().map(|c| c.uid());
            let caller = if allowed.is_empty() || uid.is_some_and(|u| allowed.contains(&u)) {
                Caller::UnixAllowed
            } else {
                tracing::warn!(?uid, "refused API proxy unix-socket caller");
                Caller::UnixRefused
            };
            Ok(Accepted::Unix(stream, caller))
        }
    }
}

/// Serves one client connection (HTTP/1.1, keep-alive) until it closes.
fn serve<I>(
    io: I,
    caller: Caller,
    proxy: &Arc<Proxy>,
    permit: OwnedSemaphorePermit,
    graceful: &GracefulShutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let proxy = proxy.clone();
    let svc = hyper::service::service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, caller).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    let watched = graceful.watch(conn);
    tokio::spawn(async move {
        let _ = watched.await;
        drop(permit);
    });
}
