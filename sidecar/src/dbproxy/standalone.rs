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
use std::sync::Arc;
use std::time::Duration;

use super::config::{self, FileDatabaseProxy};
use super::metrics::DbProxyMetrics;
use super::{token_request, DatabaseProxy, ProxyError, TokenSource};
use s2iam::cache::{Cache, CachePolicy, Fetcher};
use s2iam::client::{Client, JwtOptions, TokenRequest};
use s2iam::env::ProviderConfig;
use s2iam::provider::{DEFAULT_GCP_AUDIENCE, DEFAULT_ROLE_SESSION_NAME};
use s2iam::token::Token;

/// What `s2iam proxy` runs: one proxy, and how to reach the auth service.
#[derive(Debug, Clone, Default)]
pub struct StandaloneOptions {
    /// The proxy, as a `[[database_proxy]]` table gives it.
    pub proxy: FileDatabaseProxy,
    /// Authentication server URL template (`None`: `S2IAM_JWT_SERVER_URL`, else production).
    pub server_url: Option<String>,
    /// Allow an http:// server URL (testing only).
    pub allow_http: bool,
    /// Cloud provider (aws, gcp, azure); `None` detects it.
    pub provider: Option<String>,
    /// Timeout of one token exchange.
    pub timeout: Duration,
}

/// Why `s2iam proxy` could not run.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// A setting is not valid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The proxy could not start.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The token client could not be built.
    #[error(transparent)]
    Client(#[from] s2iam::client::Error),
    /// A flag is not valid.
    #[error("{0}")]
    Usage(String),
    /// An `OTEL_*` variable is not valid.
    #[error(transparent)]
    Otel(#[from] s2iam::otel::OtelError),
}

/// Runs the proxy until `shutdown` resolves, then drains.
pub async fn run(
    args: &StandaloneOptions,
    provider_config: ProviderConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StandaloneError> {
    let config = config::build(0, args.proxy.clone())?;
    let provider = args
        .provider
        .as_deref()
        .map(|p| p.parse())
        .transpose()
        .map_err(|e: s2iam::provider::UnknownProvider| StandaloneError::Usage(e.to_string()))?;
    // Traces as the sidecar makes them, configured by the `OTEL_*` variables only
    // (this command has no config file); off without them.
    let otel = s2iam::otel::OtelSettings::resolve(
        &provider_config.env,
        &s2iam::otel::settings::FileOtel::default(),
    )?;
    let tracer = s2iam::otel::Tracer::start(
        otel.as_ref(),
        s2iam::http::client(&provider_config.env.proxy_settings()),
        provider_config.clock.clone(),
    );
    let client = Arc::new(Client::new(JwtOptions {
        server_url: args.server_url.clone(),
        allow_http: args.allow_http,
        provider,
        timeout: args.timeout,
        provider_config: Some(provider_config),
        tracer: tracer.clone(),
        ..JwtOptions::default()
    })?);
    let fetch: Fetcher<TokenRequest, Token, s2iam::client::Error> = Arc::new(move |req| {
        let client = client.clone();
        Box::pin(async move { client.token(&req).await })
    });
    let cache = Cache::new(CachePolicy::default(), fetch).with_tracer(tracer.clone());
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
    let metrics = DbProxyMetrics::default();
    let proxy = DatabaseProxy::start(
        config,
        TokenSource::new(cache.clone(), request.clone(), |t: &Token| t.jwt().clone()),
        &metrics,
        tracer.clone(),
        stopped,
    )
    .await?;
    // Only once the listeners are bound: a port in use fails before any token
    // is asked for.
    let warm = {
        tokio::spawn(async move {
            match cache.pin(request).await {
                Ok(_) => tracing::info!("database token fetched"),
                Err(e) => {
                    tracing::warn!(error = %e.error, "no database token yet (connections get an error saying why until one is fetched)")
                }
            }
        })
    };
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
    tracer.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
