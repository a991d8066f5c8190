//! The database proxy: any MySQL client connects to a local listener with no
//! password, and the proxy logs in to SingleStore with the workload's current
//! database JWT (`mysql_clear_password` over verified TLS, as SingleStore's JWT
//! login documents), then relays bytes both ways — like the Cloud SQL and AlloyDB
//! Auth Proxies' automatic IAM login.
//!
//! - [`config`]: the `database_proxy` tables.
//! - [`login`]: the client-side and upstream handshakes.
//! - [`session`]: one connection: limits, token, login.
//! - [`relay`]: after the login, bytes both ways; `COM_CHANGE_USER` is answered
//!   by the proxy with its own login, never forwarded.
//! - [`lifetime`]: `max_session_lifetime`, and how the relay knows a session
//!   is between commands.
//! - [`kill`]: the connection id in each client's greeting (the proxy's own),
//!   and a client's `KILL` of one sent with the server's thread id.
//! - [`tls`], [`packet`], [`metrics`].
//!
//! Tokens come from the sidecar's cache (one fetch however many connections open
//! at once; a connection opened after a refresh logs in with the new token; open
//! sessions are never touched by a refresh). Shutdown stops accepting at once and
//! gives open sessions `drain_timeout` to finish.
//!
//! The door is [`crate::listener`]'s: `allowed_uids` on the Unix socket and on TCP
//! alike (the kernel names a loopback TCP peer's uid; a peer it cannot name is
//! refused while the list is set), `max_connections` sessions, at most three
//! quarters of them per uid (so one user's flood leaves a quarter for the
//! others), two file descriptors per session from the process's budget, and a
//! connection over any cap gets error 1040 at once.

pub mod config;
pub mod kill;
pub mod lifetime;
pub mod login;
pub mod metrics;
pub mod packet;
pub mod relay;
pub mod session;
pub mod standalone;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

pub use config::DatabaseProxyConfig;
use metrics::{DbProxyMetrics, ProxyCounters};

use std::future::Future;
use std::pin::Pin;

use crate::listener::{self, Bind, Busy, Caps, Conn, Door, Surface, WhenFull};
use s2iam::cache::Cache;
use s2iam::client::TokenRequest;
use s2iam::logging::Throttle;
use s2iam::secret::Secret;

/// Why a database proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("database proxy {name}: {source}")]
    /// A listener could not be bound.
    Listen {
        /// The proxy.
        name: String,
        /// Why.
        source: listener::BindError,
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
        V: s2iam::cache::Expiring,
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
    counters: Arc<ProxyCounters>,
    /// The greeting clients get before anything is opened upstream: the last
    /// one SingleStore sent (its capabilities, version, collation), or a
    /// conservative one until SingleStore has been reached.
    offer: Mutex<Arc<login::Greeting>>,
    /// The connection ids the proxy gave its live sessions, and the server's
    /// for each: a client's `KILL <id from its greeting>` reaches the right
    /// server thread (see [`kill`]).
    ids: kill::SessionIds,
    /// Refused and failed logins are logged at a bounded rate.
    log: Throttle,
    /// Each session is an `s2iam.db_proxy.session` span when tracing is on.
    tracer: s2iam::otel::Tracer,
}

/// A running database proxy.
pub struct DatabaseProxy {
    name: String,
    tcp_addr: Option<SocketAddr>,
    socket: Option<PathBuf>,
    doors: Vec<listener::Running>,
}

/// The door of one proxy: its `allowed_uids`, `max_connections` with three
/// quarters per uid, two fds per session, error 1040 when full.
pub fn door(config: &DatabaseProxyConfig) -> Arc<Door> {
    let per_uid = config
        .max_connections
        .saturating_sub(config.max_connections / 4)
        .max(1);
    let mut caps = Caps::new(config.max_connections, per_uid, config.drain_timeout);
    caps.fds_per_connection = 2;
    caps.when_full = WhenFull::Refuse;
    Door::new(
        format!("database_proxy {}", config.name),
        config.allowed_uids.clone(),
        caps,
    )
    .moved_by("--listen (s2iam proxy), database_proxy.listen or --mysql (s2iam dev)")
}

impl DatabaseProxy {
    /// Binds the listeners and serves until `stopped` turns true, then drains.
    pub async fn start(
        config: DatabaseProxyConfig,
        tokens: TokenSource,
        metrics: &DbProxyMetrics,
        tracer: s2iam::otel::Tracer,
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
        let door = door(&config);
        let shared = Arc::new(Shared {
            counters: metrics.proxy(&config.name),
            tls: tokio_rustls::TlsConnector::from(tls),
            server_name,
            tokens,
            offer: Mutex::new(Arc::new(login::Greeting::conservative())),
            ids: kill::SessionIds::default(),
            log: Throttle::for_refusals(),
            tracer,
            config,
        });
        let surface = Arc::new(DbSurface(shared.clone()));
        let listen_err = |source| ProxyError::Listen {
            name: name.clone(),
            source,
        };
        let mut doors = Vec::new();
        if let Some(addr) = shared.config.listen {
            doors.push(
                listener::open(&door, &Bind::Tcp(addr), surface.clone(), stopped.clone())
                    .await
                    .map_err(listen_err)?,
            );
        }
        if let Some(path) = &shared.config.socket {
            let bind = Bind::Unix {
                path: path.clone(),
                mode: shared.config.socket_mode,
            };
            doors.push(
                listener::open(&door, &bind, surface, stopped)
                    .await
                    .map_err(listen_err)?,
            );
        }
        let tcp_addr = doors.iter().find_map(|d| d.tcp_addr);
        let socket = shared.config.socket.clone();
        tracing::info!(proxy = %name, tcp = ?tcp_addr, socket = ?socket, upstream = %shared.config.upstream(), workspace_group = %shared.config.workspace_group_id, "database proxy listening");
        Ok(Self {
            name,
            tcp_addr,
            socket,
            doors,
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

    /// Waits until the proxy has stopped (after the stop signal and the drain,
    /// at most `drain_timeout`), and removes the socket file.
    pub async fn wait(self) {
        for door in self.doors {
            door.wait().await;
        }
        tracing::info!(proxy = %self.name, "database proxy stopped");
    }
}

/// The MySQL side of the door.
struct DbSurface(Arc<Shared>);

impl Surface for DbSurface {
    fn serve(this: Arc<Self>, conn: Conn) -> impl Future<Output = ()> + Send + 'static {
        session::serve(this.0.clone(), Box::new(conn.io), conn.peer)
    }

    fn busy(&self, why: Busy) -> Vec<u8> {
        self.0
            .counters
            .total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0
            .counters
            .failure(metrics::FailureReason::TooManyConnections);
        let message = match why {
            Busy::Fds => format!("s2iam proxy: too many connections ({why})"),
            _ => format!(
                "s2iam proxy: too many connections ({why}; max_connections = {})",
                self.0.config.max_connections
            ),
        };
        let payload = packet::err(login::codes::TOO_MANY_CONNECTIONS, b"08004", &message);
        packet::frame(0, &payload)
    }
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
    tracer: &s2iam::otel::Tracer,
    stopped: &watch::Receiver<bool>,
) -> Result<Vec<DatabaseProxy>, ProxyError>
where
    V: s2iam::cache::Expiring,
    E: std::fmt::Display + Send + Sync + 'static,
{
    let mut running = Vec::new();
    for c in configs {
        let tokens = TokenSource::new(
            cache.clone(),
            token_request(c, role_session_name, gcp_audience),
            jwt,
        );
        running.push(
            DatabaseProxy::start(c.clone(), tokens, metrics, tracer.clone(), stopped.clone())
                .await?,
        );
    }
    Ok(running)
}
