//! A mock SingleStore database endpoint: the MySQL protocol over TLS, with
//! SingleStore's JWT login.
//!
//! - TLS with its own CA, generated at start ([`MockSingleStore::ca_pem`], written
//!   to a file by the binary's `--singlestore-ca-file`); the server certificate names
//!   the configured server name, `localhost` and 127.0.0.1.
//! - Login only with `mysql_clear_password` over TLS, and only with a JWT signed by
//!   the mock auth service's key, unexpired, of type `database`, for the configured
//!   workspace group; user `*` becomes the JWT's user (`username`, else `sub`).
//! - Answers `SELECT 1`, `SELECT CURRENT_USER()`, `SELECT CONNECTION_ID()`,
//!   `KILL [QUERY | CONNECTION] n` (recorded, see [`MockSingleStore::kills`]),
//!   `SELECT @@variable, ...`,
//!   `SET ...`, `COM_PING`, `COM_RESET_CONNECTION`, `COM_CHANGE_USER` (a new
//!   JWT login on the open connection, recorded like the first), and `SELECT * FROM s2iam_rows [LIMIT n]` (a large result
//!   set for throughput); everything else gets an error packet.
//! - Every login attempt is recorded ([`MockSingleStore::logins`]), with the SHA-256
//!   of the JWT rather than the JWT.

pub mod packet;
pub mod session;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::keys::SigningKey;

/// How the mock SingleStore is set up.
#[derive(Debug, Clone)]
pub struct SingleStoreConfig {
    /// Where to listen (port 0: any free port).
    pub addr: SocketAddr,
    /// The name in the server certificate (clients check it against SNI).
    pub server_name: String,
    /// JWTs must carry this `workspaceGroupID`; `None` accepts any (but one must be
    /// present).
    pub workspace_group_id: Option<String>,
    /// Rows of `SELECT * FROM s2iam_rows` without a LIMIT.
    pub large_rows: usize,
    /// Bytes of each row's payload column.
    pub large_row_bytes: usize,
    /// Append every login attempt here too, one JSON line each (for scripts).
    pub logins_file: Option<std::path::PathBuf>,
}

impl Default for SingleStoreConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            server_name: "singlestore.mock".into(),
            workspace_group_id: None,
            large_rows: 100_000,
            large_row_bytes: 100,
            logins_file: None,
        }
    }
}

/// One login attempt as the mock saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoginRecord {
    /// The connection id from the greeting.
    pub connection_id: u32,
    /// The user the client sent (`*` for "from the JWT").
    pub requested_user: String,
    /// The user the session runs as, when the login succeeded.
    pub user: Option<String>,
    /// Why it was refused.
    pub error: Option<String>,
    /// SHA-256 (hex) of the JWT that was the password.
    pub jwt_sha256: String,
    /// The database the client asked for.
    pub database: Option<String>,
    /// The client's collation id.
    pub collation: u8,
    /// The client's connection attributes.
    pub connect_attributes: std::collections::HashMap<String, String>,
    /// The capability flags in effect (client's, within the server's).
    pub capabilities: u32,
    /// A `COM_CHANGE_USER` on an open connection rather than a first login.
    pub change_user: bool,
    /// The JWT came in an auth-switch response (as it must: the greeting
    /// offers no long authentication data), not in the first response.
    pub via_switch: bool,
}

impl Shared {
    /// Keeps a login attempt (and appends it to `logins_file`, if set).
    pub(crate) fn record(&self, login: LoginRecord) {
        if let Some(path) = &self.config.logins_file {
            if let Ok(mut line) = serde_json::to_string(&login) {
                line.push('\n');
                use std::io::Write;
                let _ = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(line.as_bytes()));
            }
        }
        self.logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(login);
    }
}

pub(crate) struct Shared {
    config: SingleStoreConfig,
    tls: tls::MockTls,
    key: Arc<SigningKey>,
    logins: Mutex<Vec<LoginRecord>>,
    /// The thread ids named by the `KILL` statements received.
    kills: Mutex<Vec<u32>>,
    next_id: AtomicU32,
}

/// A running mock SingleStore.
pub struct MockSingleStore {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Why the mock SingleStore could not start.
#[derive(Debug, thiserror::Error)]
pub enum SingleStoreError {
    #[error("cannot listen on {addr}: {source}")]
    /// The listener could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    #[error(transparent)]
    /// The certificates could not be made.
    Tls(#[from] tls::TlsError),
}

impl MockSingleStore {
    /// Generates the CA and certificate, binds, and serves in the background. JWTs
    /// are checked against `key` (the mock auth service's signing key).
    pub async fn start(
        config: SingleStoreConfig,
        key: Arc<SigningKey>,
    ) -> Result<Self, SingleStoreError> {
        let tls = tls::MockTls::generate(&config.server_name)?;
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| SingleStoreError::Bind {
                    addr: config.addr,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SingleStoreError::Bind {
                addr: config.addr,
                source,
            })?;
        let shared = Arc::new(Shared {
            config,
            tls,
            key,
            logins: Mutex::new(Vec::new()),
            kills: Mutex::new(Vec::new()),
            next_id: AtomicU32::new(1),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared.clone(), stopped));
        tracing::info!(%addr, "mock SingleStore listening");
        Ok(Self {
            shared,
            addr,
            stop,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name in the server certificate.
    pub fn server_name(&self) -> &str {
        &self.shared.config.server_name
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.shared.tls.ca_pem
    }

    /// Every login attempt so far.
    pub fn logins(&self) -> Vec<LoginRecord> {
        self.shared
            .logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The thread ids named by every `KILL [QUERY | CONNECTION] n` so far
    /// (recorded and answered, not carried out: OK for the id of a session
    /// that logged in, else `1094 Unknown thread id`).
    pub fn kills(&self) -> Vec<u32> {
        self.shared
            .kills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops accepting and ends every open session.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
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
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    sessions.spawn(session::serve(shared.clone(), tcp, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "mock SingleStore accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    sessions.abort_all();
}
