//! The database proxy: any MySQL client connects to a local listener with no
//! password, and the proxy logs in to SingleStore with the workload's current
//! database JWT (`mysql_clear_password` over verified TLS, as SingleStore's JWT
//! login documents), then relays bytes both ways — like the Cloud SQL and AlloyDB
//! Auth Proxies' automatic IAM login.
//!
//! - [`config`]: the `database_proxy` tables.
//! - [`login`]: the client-side and upstream handshakes.
//! - [`session`]: one connection: limits, token, login, relay.
//! - [`tls`], [`packet`], [`metrics`].
//!
//! Tokens come from the sidecar's cache (one fetch however many connections open
//! at once; a connection opened after a refresh logs in with the new token; open
//! sessions are never touched by a refresh). Shutdown stops accepting at once and
//! gives open sessions `drain_timeout` to finish.

pub mod config;
pub mod login;
pub mod metrics;
pub mod packet;
pub mod session;
pub mod standalone;
pub mod tls;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};

pub use config::DatabaseProxyConfig;
use metrics::{DbProxyMetrics, ProxyCounters};

use std::future::Future;
use std::pin::Pin;

use crate::cache::Cache;
use crate::client::TokenRequest;
use crate::secret::Secret;

/// Why a database proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("database proxy {name}: cannot listen on {what}: {source}")]
    /// A listener could not be bound.
    Listen {
        /// The proxy.
        name: String,
        /// The address or socket path.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    #[error("database proxy {name}: {source}")]
    /// The TLS client could not be set up.
    Tls {
        /// The proxy.
        name: String,
        /// Why.
        source: tls::TlsSetupError,
    },
    #[error("database proxy {name}: server_name {server_name:?} is not a DNS name or IP address")]
    /// `server_name` is not a valid name.
    ServerName {
        /// The proxy.
        name: String,
        /// The name given.
        server_name: String,
    },
}

/// Reads the current JWT for one request from a token cache.
type JwtFetch =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Secret, String>> + Send>> + Send + Sync>;

/// Where a proxy's database JWT comes from: a token cache (the sidecar's, or
/// `s2iam proxy`'s own), whatever form its values take.
#[derive(Clone)]
pub struct TokenSource {
    fetch: JwtFetch,
    request: TokenRequest,
}

impl TokenSource {
    /// Tokens for `request` from `cache`; `jwt` takes the JWT out of a cached value.
    pub fn new<V, E>(
        cache: Cache<TokenRequest, V, E>,
        request: TokenRequest,
        jwt: fn(&V) -> Secret,
    ) -> Self
    where
        V: crate::cache::Expiring,
        E: std::fmt::Display + Send + Sync + 'static,
    {
        let key = request.clone();
        let fetch: JwtFetch = Arc::new(move || {
            let (cache, key) = (cache.clone(), key.clone());
            Box::pin(async move {
                cache
                    .get(key)
                    .await
                    .map(|v| jwt(&v))
                    .map_err(|e| e.error.to_string())
            })
        });
        Self { fetch, request }
    }

    /// The current JWT, or why there is none (no secrets in the message).
    pub async fn jwt(&self) -> Result<Secret, String> {
        (self.fetch)().await
    }

    /// The token request (the cache key).
    pub fn request(&self) -> &TokenRequest {
        &self.request
    }
}

/// The token request a proxy logs in with (the same key the sidecar keeps warm).
pub fn token_request(
    config: &DatabaseProxyConfig,
    role_session_name: &str,
    gcp_audience: &str,
) -> TokenRequest {
    TokenRequest {
        assume_role: config.assume_role.clone(),
        role_session_name: role_session_name.to_string(),
        gcp_audience: gcp_audience.to_string(),
        ..TokenRequest::database(&config.workspace_group_id)
    }
}

/// What every session of one proxy shares.
pub struct Shared {
    /// The proxy's settings.
    pub config: DatabaseProxyConfig,
    tokens: TokenSource,
    tls: tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    slots: Arc<Semaphore>,
    counters: Arc<ProxyCounters>,
}

/// A running database proxy.
pub struct DatabaseProxy {
    name: String,
    tcp_addr: Option<SocketAddr>,
    socket: Option<PathBuf>,
    task: tokio::task::JoinHandle<()>,
}

impl DatabaseProxy {
    /// Binds the listeners and serves until `stopped` turns true, then drains.
    pub async fn start(
        config: DatabaseProxyConfig,
        tokens: TokenSource,
        metrics: &DbProxyMetrics,
        stopped: watch::Receiver<bool>,
    ) -> Result<Self, ProxyError> {
        let name = config.name.clone();
        let tls =
            tls::client_config(config.ca_file.as_deref()).map_err(|source| ProxyError::Tls {
                name: name.clone(),
                source,
            })?;
        let server_name = rustls::pki_types::ServerName::try_from(config.server_name.clone())
            .map_err(|_| ProxyError::ServerName {
                name: name.clone(),
                server_name: config.server_name.clone(),
            })?;
        let listen_err = |what: String| {
            let name = name.clone();
            move |source| ProxyError::Listen { name, what, source }
        };
        let tcp = match config.listen {
            Some(addr) => Some(
                crate::util::tcp::bind(addr, "--listen (s2iam proxy) or database_proxy.listen")
                    .await
                    .map_err(listen_err(addr.to_string()))?,
            ),
            None => None,
        };
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let unix = match &config.socket {
            Some(path) => {
                let what = path.display().to_string();
                crate::util::unix_socket::prepare_socket_path(path)
                    .await
                    .map_err(listen_err(what.clone()))?;
                let l = UnixListener::bind(path).map_err(listen_err(what.clone()))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode))
                    .map_err(listen_err(what))?;
                Some(l)
            }
            None => None,
        };
        let socket = config.socket.clone();
        let shared = Arc::new(Shared {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            counters: metrics.proxy(&config.name),
            tls: tokio_rustls::TlsConnector::from(tls),
            server_name,
            tokens,
            config,
        });
        tracing::info!(proxy = %name, tcp = ?tcp_addr, socket = ?socket, upstream = %shared.config.upstream(), workspace_group = %shared.config.workspace_group_id, "database proxy listening");
        let task = tokio::spawn(serve(shared, tcp, unix, stopped));
        Ok(Self {
            name,
            tcp_addr,
            socket,
            task,
        })
    }

    /// The proxy's name (its listen address or socket path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound TCP address (with the real port when configured with port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The Unix socket, if any.
    pub fn socket_path(&self) -> Option<&PathBuf> {
        self.socket.as_ref()
    }

    /// Waits until the proxy has stopped (after the stop signal and the drain).
    pub async fn wait(self) {
        let _ = self.task.await;
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Accepts until the stop signal, then drains the open sessions.
async fn serve(
    shared: Arc<Shared>,
    tcp: Option<TcpListener>,
    unix: Option<UnixListener>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut sessions = tokio::task::JoinSet::new();
    let stop = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(accepted) = accept_tcp(tcp.as_ref()) => match accepted {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    sessions.spawn(session::serve(shared.clone(), Box::new(stream), None));
                }
                Err(e) => accept_failed(&shared, e).await,
            },
            Some(accepted) = accept_unix(unix.as_ref()) => match accepted {
                Ok(stream) => {
                    let uid = stream.peer_cred().ok().map(|c| c.uid());
                    sessions.spawn(session::serve(shared.clone(), Box::new(stream), uid));
                }
                Err(e) => accept_failed(&shared, e).await,
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(tcp);
    drop(unix);
    let open = sessions.len();
    if open > 0 {
        tracing::info!(proxy = %shared.config.name, sessions = open, deadline = ?shared.config.drain_timeout, "database proxy draining");
        let drained = tokio::time::timeout(shared.config.drain_timeout, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(proxy = %shared.config.name, sessions = sessions.len(), "drain_timeout passed: closing the remaining database sessions");
            sessions.shutdown().await;
        }
    }
    tracing::info!(proxy = %shared.config.name, "database proxy stopped");
}

async fn accept_tcp(l: Option<&TcpListener>) -> Option<std::io::Result<tokio::net::TcpStream>> {
    match l {
        Some(l) => Some(l.accept().await.map(|(s, _)| s)),
        None => std::future::pending().await,
    }
}

async fn accept_unix(l: Option<&UnixListener>) -> Option<std::io::Result<tokio::net::UnixStream>> {
    match l {
        Some(l) => Some(l.accept().await.map(|(s, _)| s)),
        None => std::future::pending().await,
    }
}

/// Out of file descriptors and the like: log, and pause instead of spinning.
async fn accept_failed(shared: &Shared, e: std::io::Error) {
    tracing::warn!(proxy = %shared.config.name, error = %e, "database proxy accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

/// Starts every configured proxy on the sidecar's token cache (`jwt` takes the
/// JWT out of a cached value).
#[allow(clippy::too_many_arguments)]
pub async fn start_all<V, E>(
    configs: &[DatabaseProxyConfig],
    cache: &Cache<TokenRequest, V, E>,
    jwt: fn(&V) -> Secret,
    role_session_name: &str,
    gcp_audience: &str,
    metrics: &DbProxyMetrics,
    stopped: &watch::Receiver<bool>,
) -> Result<Vec<DatabaseProxy>, ProxyError>
where
    V: crate::cache::Expiring,
    E: std::fmt::Display + Send + Sync + 'static,
{
    let mut running = Vec::new();
    for c in configs {
        let tokens = TokenSource::new(
            cache.clone(),
            token_request(c, role_session_name, gcp_audience),
            jwt,
        );
        running.push(DatabaseProxy::start(c.clone(), tokens, metrics, stopped.clone()).await?);
    }
    Ok(running)
}
