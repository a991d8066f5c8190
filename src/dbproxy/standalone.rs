//! `s2iam proxy`: one database proxy on its own, without the sidecar's local API —
//! the same proxy as a `[[database_proxy]]`, with its own token cache (one
//! database JWT, fetched at start and refreshed ahead of expiry).
//!
//! ```sh
//! s2iam proxy --listen 127.0.0.1:3306 --upstream svc-123.singlestore.com:3306 \
//!   --workspace-group-id wg-1
//! mariadb -h 127.0.0.1 -P 3306 -u '*' -e 'SELECT CURRENT_USER()'
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::config::{self, FileDatabaseProxy};
use super::metrics::DbProxyMetrics;
use super::{token_request, DatabaseProxy, ProxyError, TokenSource};
use crate::cache::{Cache, CachePolicy, Fetcher};
use crate::client::{Client, JwtOptions, TokenRequest};
use crate::provider::{ProviderConfig, DEFAULT_GCP_AUDIENCE, DEFAULT_ROLE_SESSION_NAME};
use crate::token::Token;
use crate::util::parse_duration;

/// `s2iam proxy`'s flags (the `[[database_proxy]]` settings, plus the auth service).
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Loopback address to listen on, e.g. 127.0.0.1:3306.
    #[arg(long)]
    pub listen: Option<String>,
    /// Unix socket to listen on (in addition to, or instead of, --listen).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The SingleStore endpoint, host:port.
    #[arg(long)]
    pub upstream: String,
    /// Workspace group whose database JWT logs in.
    #[arg(long)]
    pub workspace_group_id: String,
    /// Upstream user; "*" takes the user from the JWT.
    #[arg(long, default_value = "*")]
    pub user: String,
    /// Name checked against the server certificate and sent as SNI (default: the
    /// upstream host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// CA certificates (PEM) to trust instead of the system's.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Client user names accepted (repeatable; default any).
    #[arg(long = "allowed-user")]
    pub allowed_users: Vec<String>,
    /// Unix-socket peer uids accepted (repeatable; default any).
    #[arg(long = "allowed-uid")]
    pub allowed_uids: Vec<u32>,
    #[arg(long, default_value_t = 1000)]
    pub max_connections: usize,
    /// Token, TCP, TLS and login together must take less than this.
    #[arg(long, default_value = "10s")]
    pub connect_timeout: String,
    /// Close a session after this long with no bytes either way ("0" = never).
    #[arg(long, default_value = "8h")]
    pub idle_timeout: String,
    /// On SIGTERM, how long open sessions may go on.
    #[arg(long, default_value = "30s")]
    pub drain_timeout: String,
    /// Role to assume for the JWT (as the token command's --assume-role).
    #[arg(long)]
    pub assume_role: Option<String>,
    /// Authentication server URL template (default: $S2IAM_JWT_SERVER_URL, else production).
    #[arg(long)]
    pub server_url: Option<String>,
    /// Allow an http:// server URL (testing only).
    #[arg(long)]
    pub allow_http: bool,
    /// Cloud provider: aws, gcp or azure (default: detected).
    #[arg(long)]
    pub provider: Option<String>,
    /// Timeout of one token exchange.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Why `s2iam proxy` could not run.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Client(#[from] crate::client::Error),
    #[error("{0}")]
    Usage(String),
}

impl ProxyArgs {
    fn file(&self) -> FileDatabaseProxy {
        FileDatabaseProxy {
            listen: self.listen.clone(),
            socket: self.socket.clone(),
            upstream: Some(self.upstream.clone()),
            server_name: self.server_name.clone(),
            ca_file: self.ca_file.clone(),
            workspace_group_id: Some(self.workspace_group_id.clone()),
            assume_role: self.assume_role.clone(),
            user: Some(self.user.clone()),
            allowed_users: Some(self.allowed_users.clone()),
            allowed_uids: Some(self.allowed_uids.clone()),
            max_connections: Some(self.max_connections),
            connect_timeout: Some(self.connect_timeout.clone()),
            idle_timeout: Some(self.idle_timeout.clone()),
            drain_timeout: Some(self.drain_timeout.clone()),
            ..FileDatabaseProxy::default()
        }
    }
}

/// Runs the proxy until `shutdown` resolves, then drains.
pub async fn run(
    args: &ProxyArgs,
    provider_config: ProviderConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StandaloneError> {
    let config = config::build(0, args.file())?;
    let provider = args
        .provider
        .as_deref()
        .map(|p| p.parse())
        .transpose()
        .map_err(|e: crate::provider::UnknownProvider| StandaloneError::Usage(e.to_string()))?;
    let client = Arc::new(Client::new(JwtOptions {
        server_url: args.server_url.clone(),
        allow_http: args.allow_http,
        provider,
        timeout: args.timeout,
        provider_config: Some(provider_config),
        ..JwtOptions::default()
    })?);
    let fetch: Fetcher<TokenRequest, Token, crate::client::Error> = Arc::new(move |req| {
        let client = client.clone();
        Box::pin(async move { client.token(&req).await })
    });
    let cache = Cache::new(CachePolicy::default(), fetch);
    let request = token_request(&config, DEFAULT_ROLE_SESSION_NAME, DEFAULT_GCP_AUDIENCE);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut refresher_stop = stopped.clone();
    let refresher = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .run_refresher(Duration::from_secs(1), async move {
                    let _ = refresher_stop.wait_for(|s| *s).await;
                })
                .await;
        })
    };
    let warm = {
        let (cache, request) = (cache.clone(), request.clone());
        tokio::spawn(async move {
            match cache.pin(request).await {
                Ok(_) => tracing::info!("database token fetched"),
                Err(e) => {
                    tracing::warn!(error = %e.error, "no database token yet (connections get an error saying why until one is fetched)")
                }
            }
        })
    };
    let metrics = DbProxyMetrics::default();
    let proxy =
        DatabaseProxy::start(config, TokenSource::new(cache, request), &metrics, stopped).await?;
    if let Some(addr) = proxy.tcp_addr() {
        println!("s2iam proxy listening on {addr}");
    }
    if let Some(path) = proxy.socket_path() {
        println!("s2iam proxy listening on {}", path.display());
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections, open sessions drain");
    let _ = stop.send(true);
    proxy.wait().await;
    warm.abort();
    refresher.abort();
    Ok(())
}
