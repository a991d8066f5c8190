//! The sidecar's listeners: a Unix socket (default `/run/s2iam/s2iam.sock`, mode
//! 0660) and optionally loopback TCP, both HTTP/1.1 with keep-alive, both
//! shutting down gracefully.
//!
//! Callers are checked here: on the Unix socket by the peer's uid (`SO_PEERCRED`)
//! against `listen.allowed_uids`; on TCP by the `Host` header (loopback names only,
//! against DNS rebinding) and, when `tcp_token_file` is set, an exact
//! `Authorization: Bearer <token>` (except on the AWS routes, which take the raw
//! container-credentials token instead; see [`super::aws`]).
//!
//! A socket file left behind by a crashed sidecar is replaced; one that a live
//! sidecar still answers on, or a path that is not a socket, is an error.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use super::api::{api_error, constant_time_eq, is_aws_path, ViaTcp};
use super::routes;
use super::{AppState, ServeError};
use crate::logging::field;

/// The peer of a Unix-socket connection.
#[derive(Debug, Clone, Copy)]
pub struct UnixPeer {
    /// The caller's uid, when the kernel says.
    pub uid: Option<u32>,
    /// The caller's pid, when the kernel says.
    pub pid: Option<i32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for UnixPeer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let cred = stream.io().peer_cred().ok();
        Self {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        }
    }
}

/// A listener being served.
pub enum Running {
    /// The Unix socket listener.
    Unix {
        /// The file.
        path: PathBuf,
        /// The accept loop.
        task: tokio::task::JoinHandle<()>,
    },
    /// The loopback TCP listener.
    Tcp {
        /// The bound address.
        addr: SocketAddr,
        /// The accept loop.
        task: tokio::task::JoinHandle<()>,
    },
}

impl Running {
    /// The socket file, for a Unix listener.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match self {
            Running::Unix { path, .. } => Some(path.clone()),
            Running::Tcp { .. } => None,
        }
    }

    /// The bound address, for a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Running::Tcp { addr, .. } => Some(*addr),
            Running::Unix { .. } => None,
        }
    }

    /// Waits for the server to finish its in-flight requests (after the stop
    /// signal), then removes the socket file.
    pub async fn wait(self) {
        match self {
            Running::Unix { path, task } => {
                let _ = task.await;
                let _ = std::fs::remove_file(&path);
            }
            Running::Tcp { task, .. } => {
                let _ = task.await;
            }
        }
    }
}

/// Binds every configured listener and serves the API on each.
pub async fn start_all(
    state: Arc<AppState>,
    stopped: watch::Receiver<bool>,
) -> Result<Vec<Running>, ServeError> {
    let mut running = Vec::new();
    if let Some(path) = state.config.listen.socket.clone() {
        running.push(start_unix(state.clone(), &path, stopped.clone()).await?);
    }
    if let Some(addr) = state.config.listen.tcp {
        running.push(start_tcp(state.clone(), addr, stopped).await?);
    }
    Ok(running)
}

async fn start_unix(
    state: Arc<AppState>,
    path: &Path,
    stopped: watch::Receiver<bool>,
) -> Result<Running, ServeError> {
    let listen_err = |source| ServeError::Listen {
        what: path.display().to_string(),
        source,
    };
    prepare_socket_path(path).await.map_err(listen_err)?;
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(state.config.listen.socket_mode),
    )
    .map_err(listen_err)?;
    let app = routes::router(state.clone())
        .layer(axum::middleware::from_fn_with_state(state, check_unix_peer))
        .into_make_service_with_connect_info::<UnixPeer>();
    tracing::info!(socket = %path.display(), "listening on unix socket");
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(stop_signal(stopped))
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "unix socket server failed");
        }
    });
    Ok(Running::Unix {
        path: path.to_path_buf(),
        task,
    })
}

async fn start_tcp(
    state: Arc<AppState>,
    addr: SocketAddr,
    stopped: watch::Receiver<bool>,
) -> Result<Running, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            what: addr.to_string(),
            source: in_use_hint(source, addr),
        })?;
    let addr = listener.local_addr().unwrap_or(addr);
    let app = routes::router(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state,
            check_tcp_caller,
        ))
        .into_make_service_with_connect_info::<SocketAddr>();
    tracing::info!(%addr, "listening on tcp");
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(stop_signal(stopped))
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "tcp server failed");
        }
    });
    Ok(Running::Tcp { addr, task })
}

/// "Address in use" with what to do about it.
fn in_use_hint(e: std::io::Error, addr: SocketAddr) -> std::io::Error {
    if e.kind() != std::io::ErrorKind::AddrInUse {
        return e;
    }
    std::io::Error::new(
        e.kind(),
        format!("{e}: another process (another s2iam, or `s2iam dev`?) is listening on port {}; stop it, or choose another port with --tcp or listen.tcp (`ss -ltnp` shows who)", addr.port()),
    )
}

async fn stop_signal(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Creates the socket's directory, and removes a stale socket file.
pub(crate) async fn prepare_socket_path(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Not the umask's choice (0777 under umask 000): owner and group only.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; refusing to replace it",
        ));
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another process is serving on this socket",
        )),
        Err(_) => {
            tracing::info!(socket = %path.display(), "replacing stale socket file");
            std::fs::remove_file(path)
        }
    }
}

async fn check_unix_peer(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<UnixPeer>,
    req: Request,
    next: Next,
) -> Response {
    let allowed = &state.config.listen.allowed_uids;
    if !allowed.is_empty() && !peer.uid.is_some_and(|uid| allowed.contains(&uid)) {
        crate::refusal!(state.refusals, uid = ?peer.uid, pid = ?peer.pid, path = %field(req.uri().path()), "refused unix-socket caller");
        return api_error(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "this user is not allowed to use the s2iam socket (listen.allowed_uids)",
        );
    }
    next.run(req).await
}

async fn check_tcp_caller(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    use axum::http::StatusCode;
    let mut hosts = req.headers().get_all(axum::http::header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().unwrap_or(""),
        // None or several: never a loopback name.
        _ => "",
    };
    if !host_is_loopback(host) && state.config.listen.tcp.is_none_or(|a| a.ip().is_loopback()) {
        crate::refusal!(state.refusals, %peer, host = %field(host), "refused request with a non-loopback Host header");
        return api_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the Host header must name a loopback address",
        );
    }
    let mut req = req;
    req.extensions_mut().insert(ViaTcp);
    if is_aws_path(req.uri().path()) {
        // These routes check the raw AWS container-credentials token themselves.
        return next.run(req).await;
    }
    if let Some(expected) = &state.tcp_token {
        let given = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
            crate::refusal!(state.refusals, %peer, path = %field(req.uri().path()), "refused tcp caller without the bearer token");
            return api_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <token from listen.tcp_token_file>",
            );
        }
    }
    next.run(req).await
}

/// Whether `host` is exactly a loopback name with an optional port: `localhost`,
/// `127.x.x.x` or `[::1]`, then nothing or `:` and digits. Anything after the
/// name (`[::1]evil`, `127.0.0.1:7869@evil`) is refused.
pub(crate) fn host_is_loopback(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((name, "")) => (name, None),
            Some((name, after)) => match after.strip_prefix(':') {
                Some(port) => (name, Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    let bracketed = host.starts_with('[');
    let name_ok = if bracketed {
        name.parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback())
    } else {
        name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    port_ok && name_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:80",
            "localhost",
            "LOCALHOST:7869",
            "[::1]:1",
            "127.0.0.5",
        ] {
            assert!(host_is_loopback(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:80",
            "10.0.0.1",
            "",
            "[fe80::1]:1",
            // Issue 13: trailing junk after a loopback name was accepted.
            "[::1]evil",
            "127.0.0.1:7869@evil",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "localhost:80:80",
            "[::1]:80x",
            "[127.0.0.1]",
            "127.0.0.1.evil",
        ] {
            assert!(!host_is_loopback(h), "{h}");
        }
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
