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
//! The door is [`crate::listener`]'s: `listen.allowed_uids` on the Unix socket
//! and on TCP alike (the kernel names the TCP peer's uid), `max_connections`
//! client connections at once (more wait in the kernel's accept queue), at most
//! `listen.max_connections_per_uid` of them per uid, request heads capped at
//! `listen.max_header_bytes` and `listen.header_read_timeout`. Then
//! `connect_timeout` to reach the upstream, `timeout` until its response headers
//! (counted from the start, so a request upload is included) and for any silence
//! within a response body. An answer a client does not read holds at most about
//! twice `listen.max_header_bytes` of buffer on its connection. On shutdown the
//! listener stops accepting and in-flight requests get [`DRAIN_GRACE`] to finish.
//!
//! [`crate::config::api_proxy`] has the settings, [`forward`] what happens to one request.

pub mod body;
pub mod forward;
pub mod target;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use self::forward::{Caller, Proxy};
use super::{AppState, ServeError};
use crate::listener::http::HttpLimits;
use crate::listener::{self, Bind, Busy, Caps, Conn, Door, Surface};
use s2iam::env::Env;

/// How long in-flight requests may run on after the stop signal.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

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

/// A running proxy: its listeners.
pub struct Running {
    /// The proxy's name.
    pub name: String,
    /// The bound TCP address (the real port when 0 was asked for).
    pub tcp_addr: Option<SocketAddr>,
    /// The Unix socket path.
    pub socket: Option<PathBuf>,
    doors: Vec<listener::Running>,
}

impl Running {
    /// Waits for the listeners to drain (after the stop signal) and removes the
    /// socket file.
    pub async fn wait(self) {
        for door in self.doors {
            door.wait().await;
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

/// The door of one API proxy: `listen.allowed_uids`, its `max_connections`, and
/// `listen.max_connections_per_uid` of them per uid; each connection may hold an
/// upstream connection too.
pub fn door(state: &AppState, proxy: &crate::config::api_proxy::ApiProxyConfig) -> Arc<Door> {
    let l = &state.config.listen;
    let mut caps = Caps::new(
        proxy.max_connections,
        l.limits.max_connections_per_uid,
        DRAIN_GRACE,
    );
    caps.fds_per_connection = 2;
    caps.park_timeout = l.limits.header_read_timeout;
    Door::new(
        format!("api_proxy {}", proxy.name),
        l.allowed_uids.clone(),
        caps,
    )
    .moved_by("api_proxy.listen (s2iam dev: --data-api-proxy, --management-api-proxy)")
}

async fn start(
    proxy: Arc<Proxy>,
    state: &AppState,
    stopped: watch::Receiver<bool>,
) -> Result<Running, ServeError> {
    let config = &proxy.config;
    let door = door(state, config);
    let mut running = Running {
        name: config.name.clone(),
        tcp_addr: None,
        socket: None,
        doors: Vec::new(),
    };
    let l = &state.config.listen.limits;
    let limits = HttpLimits {
        header_read_timeout: l.header_read_timeout,
        // A request waits on the upstream up to `timeout` with nothing moving.
        idle_timeout: l.idle_timeout.max(config.timeout),
        max_header_bytes: l.max_header_bytes,
        keep_alive: true,
    };
    let surface = Arc::new(ApiProxySurface {
        proxy: proxy.clone(),
        limits,
    });
    if let Some(addr) = config.listen {
        let door_running =
            listener::open(&door, &Bind::Tcp(addr), surface.clone(), stopped.clone()).await?;
        tracing::info!(proxy = %config.name, addr = ?door_running.tcp_addr, upstream = %config.upstream, "API proxy listening");
        running.tcp_addr = door_running.tcp_addr;
        running.doors.push(door_running);
    }
    if let Some(path) = &config.socket {
        let bind = Bind::Unix {
            path: path.clone(),
            mode: state.config.listen.socket_mode,
        };
        let door_running = listener::open(&door, &bind, surface, stopped).await?;
        tracing::info!(proxy = %config.name, socket = %path.display(), upstream = %config.upstream, "API proxy listening");
        running.socket = Some(path.clone());
        running.doors.push(door_running);
    }
    Ok(running)
}

/// One API proxy behind its door.
struct ApiProxySurface {
    proxy: Arc<Proxy>,
    limits: HttpLimits,
}

impl Surface for ApiProxySurface {
    fn serve(this: Arc<Self>, conn: Conn) -> impl Future<Output = ()> + Send + 'static {
        let caller = match (conn.peer.allowed, conn.peer.is_tcp()) {
            (false, _) => Caller::Refused,
            (true, true) => Caller::Tcp,
            (true, false) => Caller::UnixAllowed,
        };
        let mut limits = this.limits.clone();
        // A refused caller gets its 403 and the connection closes.
        limits.keep_alive = conn.peer.allowed;
        let proxy = this.proxy.clone();
        let svc = hyper::service::service_fn(move |req| {
            let proxy = proxy.clone();
            Box::pin(async move { Ok::<_, Infallible>(proxy.handle(req, caller).await) })
        });
        async move { listener::http::serve(conn.io, svc, &limits, conn.stopped).await }
    }

    fn busy(&self, why: Busy) -> Vec<u8> {
        listener::http::busy_answer(why)
    }
}
