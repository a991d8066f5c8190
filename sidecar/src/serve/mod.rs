//! `s2iam serve`: the sidecar. It owns the workload's identity, keeps the configured
//! tokens warm in a [`Cache`], and serves tokens to local processes over a Unix
//! socket and, optionally, loopback HTTP (see [`routes`] for the API). Its
//! [`api_proxy`] listeners forward HTTP to SingleStore's APIs with those tokens added.
//!
//! Start-up: listeners first (so `/healthz` answers at once), then detection, retried
//! with backoff within `startup_timeout` (and more slowly after it: a metadata service
//! that comes up late still gets used), then every configured token. `/readyz` stays
//! 503 until identity works and every configured token is warm, so a Kubernetes
//! native sidecar's startup probe holds the application back until then.
//!
//! Shutdown (SIGTERM/SIGINT or the given future): stop accepting, let in-flight
//! requests finish (at most `listen.shutdown_timeout`), remove the socket file.
//! SIGHUP is logged and ignored.

pub mod adopt;
pub mod api_proxy;
pub mod audit;
pub mod aws_routes;
#[cfg(feature = "dev")]
pub mod dev;
pub mod encoded;
mod hot;
pub mod lifecycle;
pub mod limits;
pub mod listen;
pub mod local_api;
pub mod metrics;
pub mod once;
pub mod routes;
pub mod short_lived;
pub mod templates;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{ServeConfig, Sink};
use s2iam::aws_vending::AwsCredentialVendor;
use s2iam::cache::{Cache, CacheError, Fetcher};
use s2iam::client::{Client, Error, TokenRequest};
use s2iam::env::ProviderConfig;
use s2iam::provider::CloudIdentity;
use s2iam::secret::Secret;
use s2iam::token::Token;
use s2iam::util::rfc3339;

/// The token cache of the sidecar.
pub type TokenCache = Cache<TokenRequest, Arc<encoded::EncodedToken>, Error>;

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    /// The client could not be built.
    Client(#[from] Error),
    #[error(transparent)]
    /// A door could not be opened.
    Bind(#[from] crate::listener::BindError),
    #[error("cannot write the AWS authorization token file {path}: {source}")]
    /// The AWS authorization token file could not be written.
    AwsTokenFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    /// A database proxy could not start.
    #[error(transparent)]
    DatabaseProxy(#[from] crate::dbproxy::ProxyError),
    /// A template cannot be compiled.
    #[error(transparent)]
    Template(#[from] crate::render::TemplateError),
    /// An API proxy could not start.
    #[error(transparent)]
    /// An API proxy could not start.
    ApiProxy(#[from] api_proxy::ApiProxyError),
    #[error("cannot read the TCP bearer token file {path}: {source}")]
    /// The TCP bearer token file could not be read.
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Where detection stands.
#[derive(Debug, Clone)]
pub enum DetectState {
    /// Not tried yet, or still trying.
    Pending,
    /// Found.
    Detected(s2iam::provider::CloudProvider),
    /// Every attempt so far failed.
    Failed(String),
}

/// Shared by every request handler.
pub struct AppState {
    /// The validated configuration.
    pub config: ServeConfig,
    /// The one client (detection, identity, exchange).
    pub client: Arc<Client>,
    /// The token cache.
    pub cache: TokenCache,
    /// Counters for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Where detection stands, for `/readyz`.
    pub detect: Mutex<DetectState>,
    /// The bearer token TCP callers must send, if configured.
    pub tcp_token: Option<Secret>,
    /// AWS credential profiles and presigning.
    pub aws: AwsCredentialVendor,
    /// The container-credentials token written to `aws.authorization_token_file`.
    pub aws_token: Option<Secret>,
    /// Rate limits on exchanges for keys not cached yet.
    pub cold: limits::ColdLimits,
    /// The `[[template]]`s.
    pub renderer: Arc<crate::render::Renderer>,
    /// Bounds the refusal logs a hostile caller can cause.
    pub refusals: s2iam::logging::Throttle,
    /// Started once, draining, quit requested (see [`lifecycle`]).
    pub lifecycle: lifecycle::Lifecycle,
    /// The audit trail (`[audit]`), off unless configured.
    pub audit: audit::Audit,
    /// OpenTelemetry spans (`[otel]`, `OTEL_*`), off unless configured.
    pub tracer: s2iam::otel::Tracer,
    identity: tokio::sync::Mutex<Option<(Instant, CloudIdentity)>>,
}

impl AppState {
    /// The token request for each configured token.
    pub fn warm_requests(&self) -> Vec<TokenRequest> {
        warm_requests(&self.config)
    }

    /// Identity works and every configured token has a valid value.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.lifecycle.draining() {
            problems.push("draining: the sidecar is stopping".to_string());
        }
        match &*self.detect.lock().unwrap_or_else(|p| p.into_inner()) {
            DetectState::Detected(_) => {}
            DetectState::Pending => problems.push("identity: detection in progress".to_string()),
            DetectState::Failed(e) => problems.push(format!("identity: {e}")),
        }
        // Pinned keys only: the cost follows the configuration, not the callers.
        let status = self.cache.pinned_status();
        for req in self.warm_requests() {
            let warm = status
                .iter()
                .any(|s| s.key == req && s.remaining.is_some_and(|r| !r.is_zero()));
            if !warm {
                problems.push(format!("token {} not warm", describe(&req)));
            }
        }
        let aws_status = self.aws.cache().pinned_status();
        for profile in self.config.aws.profiles.iter().filter(|p| p.warm) {
            let warm = aws_status
                .iter()
                .any(|s| s.key == profile.name && s.remaining.is_some_and(|r| !r.is_zero()));
            if !warm {
                problems.push(format!("AWS profile {} not warm", profile.name));
            }
        }
        for name in self.renderer.not_rendered() {
            problems.push(format!("template {name} not rendered yet"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The workload identity, cached for a few minutes (each lookup may mint a
    /// cloud token).
    pub async fn identity(&self) -> Result<CloudIdentity, Error> {
        let mut cached = self.identity.lock().await;
        if let Some((at, id)) = cached.as_ref() {
            if at.elapsed() < Duration::from_secs(300) {
                return Ok(id.clone());
            }
        }
        let req = TokenRequest {
            gcp_audience: self.config.client.gcp_audience.clone(),
            ..TokenRequest::api()
        };
        let (_, id) = self.client.identity(&req).await?;
        *cached = Some((Instant::now(), id.clone()));
        Ok(id)
    }
}

/// The configured tokens, then those the API proxies need (kept warm too).
fn warm_requests(config: &ServeConfig) -> Vec<TokenRequest> {
    let mut requests: Vec<TokenRequest> = config
        .tokens
        .iter()
        .map(|t| TokenRequest {
            jwt_type: t.jwt_type,
            workspace_group_id: t.workspace_group_id.clone(),
            assume_role: t.assume_role.clone(),
            role_session_name: config.client.role_session_name.clone(),
            gcp_audience: t.gcp_audience.clone(),
        })
        .collect();
    // Each proxy's token is kept warm too (after the configured tokens, whose
    // positions match config.tokens).
    for p in &config.database_proxies {
        let req = crate::dbproxy::token_request(
            p,
            &config.client.role_session_name,
            &config.client.gcp_audience,
        );
        if !requests.contains(&req) {
            requests.push(req);
        }
    }
    for proxy in &config.api_proxies {
        let req = api_proxy::forward::token_request(proxy, config);
        if !requests.contains(&req) {
            requests.push(req);
        }
    }
    requests
}

/// `database/wg-1` style name of a token request, for logs and errors; a GCP
/// audience other than the default is named too (`api for audience https://x`).
pub fn describe(req: &TokenRequest) -> String {
    let mut s = req.jwt_type.to_string();
    // Caller-chosen values: escaped and cut (s2iam::logging).
    if let Some(wg) = &req.workspace_group_id {
        s.push('/');
        s.push_str(&s2iam::logging::field(wg));
    }
    if let Some(role) = &req.assume_role {
        s.push_str(" as ");
        s.push_str(&s2iam::logging::field(role));
    }
    if req.gcp_audience != s2iam::provider::DEFAULT_GCP_AUDIENCE {
        s.push_str(" for audience ");
        s.push_str(&s2iam::logging::field(&req.gcp_audience));
    }
    s
}

/// A running sidecar.
pub struct Sidecar {
    /// Shared with every handler.
    pub state: Arc<AppState>,
    listeners: Vec<listen::Running>,
    database_proxies: Vec<crate::dbproxy::DatabaseProxy>,
    api_proxies: Vec<api_proxy::Running>,
    background: Vec<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Sidecar {
    /// Binds the listeners and starts detection, warm-up and refresh in the
    /// background.
    pub async fn start(
        config: ServeConfig,
        provider_config: ProviderConfig,
    ) -> Result<Self, ServeError> {
        let tcp_token = match &config.listen.tcp_token_file {
            Some(path) => Some(read_token_file(path)?),
            None => None,
        };
        let env = provider_config.env.clone();
        let tracer = s2iam::otel::Tracer::start(
            config.otel.as_ref(),
            s2iam::http::client(&env.proxy_settings()),
            provider_config.clock.clone(),
        );
        let mut options = config.jwt_options(provider_config);
        options.tracer = tracer.clone();
        let client = Arc::new(Client::new(options)?);
        let metrics = Arc::new(metrics::Metrics::default());
        let sinks = warm_requests(&config)
            .into_iter()
            .zip(config.tokens.iter())
            .filter_map(|(req, t)| t.sink.clone().map(|s| (req, s)))
            .collect::<HashMap<_, _>>();
        let aws_token = start_aws_token(&config)?;
        let renderer = Arc::new(crate::render::Renderer::new(config.templates.clone())?);
        let token_fetched = Arc::new(tokio::sync::Notify::new());
        let aws = AwsCredentialVendor::new(
            config.aws.clone(),
            client.clone(),
            config.cache.policy.clone(),
        );
        let audit = match &config.audit.path {
            Some(path) => audit::Audit::to_file(path, client.provider_config().clock.clone())?,
            None => audit::Audit::off(),
        };
        let state = Arc::new(AppState {
            aws,
            aws_token,
            cold: limits::ColdLimits::new(
                config.access.cold_fetches_per_second,
                config.access.cold_fetches_per_caller_per_second,
            ),
            cache: Cache::new(
                config.cache.policy.clone(),
                fetcher(
                    client.clone(),
                    sinks,
                    config.cache.policy.clone(),
                    metrics.clone(),
                    token_fetched.clone(),
                    Arc::new(short_lived::ShortLived::new(
                        config.cache.policy.min_remaining,
                    )),
                ),
            )
            .with_tracer(tracer.clone()),
            renderer,
            client,
            metrics,
            detect: Mutex::new(DetectState::Pending),
            tcp_token,
            refusals: s2iam::logging::Throttle::for_refusals(),
            lifecycle: lifecycle::Lifecycle::default(),
            audit,
            tracer,
            identity: tokio::sync::Mutex::new(None),
            config,
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let nofile = crate::listener::fds::limits();
        if nofile.soft > nofile.before {
            tracing::info!(
                from = nofile.before,
                to = nofile.soft,
                "raised the open-files limit (RLIMIT_NOFILE) to its hard limit"
            );
        }
        if let Some(warning) =
            crate::listener::fds::check(&state.config.fd_needs(), nofile.budget())
        {
            tracing::warn!("{warning}");
        }
        let listeners = listen::start_all(state.clone(), stopped.clone()).await?;
        let database_proxies = crate::dbproxy::start_all(
            &state.config.database_proxies,
            &state.cache,
            |t: &Arc<encoded::EncodedToken>| t.token.jwt().clone(),
            &state.config.client.role_session_name,
            &state.config.client.gcp_audience,
            &state.metrics.database_proxy,
            &state.tracer,
            &stopped,
        )
        .await?;
        let api_proxies = api_proxy::start_all(state.clone(), &env, stopped.clone()).await?;
        let mut background = Vec::new();
        background.push(tokio::spawn(startup(state.clone())));
        let tick = state.config.cache.tick;
        if state.config.cache.policy.mode == s2iam::cache::RefreshMode::Ahead {
            // Lazy mode has no background task: requests refresh in line.
            background.push(spawn_refresher(state.cache.clone(), tick, stopped.clone()));
            background.push(spawn_refresher(
                state.aws.cache().clone(),
                tick,
                stopped.clone(),
            ));
        }
        background.push(templates::spawn(state.clone(), token_fetched, stopped));
        Ok(Self {
            state,
            listeners,
            database_proxies,
            api_proxies,
            background,
            stop,
        })
    }

    /// The Unix socket's path, if listening on one.
    pub fn socket_path(&self) -> Option<PathBuf> {
        self.listeners.iter().find_map(|l| l.socket_path())
    }

    /// The TCP address, if listening on one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.listeners.iter().find_map(|l| l.tcp_addr())
    }

    /// The running database proxies.
    pub fn database_proxies(&self) -> &[crate::dbproxy::DatabaseProxy] {
        &self.database_proxies
    }

    /// The loopback address of the `[[api_proxy]]` called `name`.
    pub fn api_proxy_addr(&self, name: &str) -> Option<SocketAddr> {
        self.api_proxies
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.tcp_addr)
    }

    /// The Unix socket of the `[[api_proxy]]` called `name`.
    pub fn api_proxy_socket(&self, name: &str) -> Option<PathBuf> {
        self.api_proxies
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.socket.clone())
    }

    /// Stops accepting, waits for in-flight requests (and, up to their
    /// `drain_timeout`, open database sessions), removes the socket files.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for l in self.listeners {
            l.wait().await;
        }
        // Each proxy drains in its own task, all at once; this waits for the last.
        for p in self.database_proxies {
            p.wait().await;
        }
        for p in self.api_proxies {
            p.wait().await;
        }
        for task in self.background {
            task.abort();
        }
        // The last spans (this shutdown's requests) go out before the exit.
        self.state.tracer.shutdown(Duration::from_secs(5)).await;
        tracing::info!("s2iam sidecar stopped");
    }
}

/// Runs a cache's background refresher until the stop signal.
fn spawn_refresher<K, V, E>(
    cache: Cache<K, V, E>,
    tick: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()>
where
    K: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
    V: s2iam::cache::Expiring,
    E: Send + Sync + 'static,
{
    tokio::spawn(async move {
        cache
            .run_refresher(tick, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
    })
}

/// Runs until `shutdown` resolves or a caller asks `POST /quitquitquit`.
pub async fn run(
    config: ServeConfig,
    provider_config: ProviderConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let signal = async {
        shutdown.await;
        lifecycle::Stop::Terminate
    };
    run_with(
        config,
        provider_config,
        &lifecycle::LifecycleConfig::default(),
        signal,
    )
    .await
    .map(|_| ())
}

/// Runs until `signal` resolves (SIGTERM, SIGINT) or a caller asks `POST
/// /quitquitquit`, then stops as [`lifecycle`] describes; returns why it stopped.
pub async fn run_with(
    config: ServeConfig,
    provider_config: ProviderConfig,
    settings: &lifecycle::LifecycleConfig,
    signal: impl Future<Output = lifecycle::Stop>,
) -> Result<lifecycle::Stop, ServeError> {
    let sidecar = Sidecar::start(config, provider_config).await?;
    let hangup = on_sighup();
    let state = sidecar.state.clone();
    let stop = tokio::select! {
        stop = signal => stop,
        () = state.lifecycle.quit_requested() => lifecycle::Stop::Quit,
    };
    let signalled = Instant::now();
    state.lifecycle.start_draining();
    if stop == lifecycle::Stop::Terminate && !settings.min_delay.is_zero() {
        tracing::info!(min_delay = ?settings.min_delay, "SIGTERM: not ready any more; still accepting while the application drains");
        tokio::select! {
            () = tokio::time::sleep(settings.min_delay) => {}
            () = state.lifecycle.quit_requested() => {}
        }
    }
    if let Some(task) = hangup {
        task.abort();
    }
    tracing::info!(reason = ?stop, "shutting down: no new connections, finishing in-flight requests");
    match settings.max_delay {
        Some(max) => {
            let left = max.saturating_sub(signalled.elapsed());
            if tokio::time::timeout(left, sidecar.shutdown())
                .await
                .is_err()
            {
                tracing::warn!(max_delay = ?max, "sigterm max delay passed: exiting with connections still open");
            }
        }
        None => sidecar.shutdown().await,
    }
    Ok(stop)
}

/// SIGHUP is a documented no-op: the configuration is read once at start (a
/// reload would have to re-bind listeners and re-key the cache); without a
/// handler the signal's default action would kill the process uncleanly.
fn on_sighup() -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP ignored: the configuration is read at start only; restart s2iam serve to apply changes");
        }
    }))
}

/// With AWS profiles and a token file configured: a fresh random token, written
/// to the file (atomically, with its mode) for the applications' SDKs to read.
fn start_aws_token(config: &ServeConfig) -> Result<Option<Secret>, ServeError> {
    let aws = &config.aws;
    if aws.profiles.is_empty() {
        return Ok(None);
    }
    let Some(path) = &aws.authorization_token_file else {
        tracing::warn!("AWS profiles are configured without aws.authorization_token_file: the credential routes answer on the Unix socket only");
        return Ok(None);
    };
    let token = s2iam::aws_vending::generate_authorization_token();
    s2iam::aws_vending::write_authorization_token(path, &token, aws.authorization_token_mode)
        .map_err(|source| ServeError::AwsTokenFile {
            path: path.clone(),
            source,
        })?;
    tracing::info!(path = %path.display(), profiles = aws.profiles.len(), "AWS container-credentials token written");
    Ok(Some(token))
}

/// Fetches a token and, for configured tokens with a sink, writes it to its file;
/// then wakes the template loop.
fn fetcher(
    client: Arc<Client>,
    sinks: HashMap<TokenRequest, Sink>,
    policy: s2iam::cache::CachePolicy,
    metrics: Arc<metrics::Metrics>,
    fetched: Arc<tokio::sync::Notify>,
    short_lived: Arc<short_lived::ShortLived>,
) -> Fetcher<TokenRequest, Arc<encoded::EncodedToken>, Error> {
    // A sink's first fetch may adopt the token already in it (see `adopt`).
    let adoptable: Arc<Mutex<std::collections::HashSet<TokenRequest>>> =
        Arc::new(Mutex::new(sinks.keys().cloned().collect()));
    let policy = Arc::new(policy);
    // One action runner per sink, so a sink's actions never overlap.
    let sinks: Arc<HashMap<_, _>> = Arc::new(
        sinks
            .into_iter()
            .map(|(req, sink)| {
                let action = sink
                    .on_change
                    .clone()
                    .map(|a| crate::render::action::ActionRunner::new(a, sink.path.clone()));
                (req, (sink, action))
            })
            .collect(),
    );
    Arc::new(move |req: TokenRequest| {
        let client = client.clone();
        let sinks = sinks.clone();
        let metrics = metrics.clone();
        let fetched = fetched.clone();
        let short_lived = short_lived.clone();
        let first = adoptable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req);
        let policy = policy.clone();
        Box::pin(async move {
            if first {
                if let Some((sink, _)) = sinks.get(&req) {
                    let now = client.provider_config().clock.now();
                    match adopt::adopt(&req, sink, &policy, now) {
                        Ok(t) => {
                            tracing::info!(token = %describe(&req), path = %sink.path.display(), expires_at = %rfc3339(t.expires_at), "token adopted from its sink: no exchange");
                            fetched.notify_one();
                            return Ok(encoded::EncodedToken::new(t, &req));
                        }
                        Err(why) => {
                            tracing::debug!(token = %describe(&req), reason = %why, "sink token not adopted")
                        }
                    }
                }
            }
            let token = client.token(&req).await;
            match &token {
                Ok(t) => {
                    tracing::info!(token = %describe(&req), expires_at = %rfc3339(t.expires_at), "token fetched");
                    short_lived.check(&req, t.lifetime());
                    if let Some((sink, action)) = sinks.get(&req) {
                        if write_sink(sink, t, &metrics).await {
                            if let Some(action) = action {
                                action.spawn();
                            }
                        }
                    }
                    fetched.notify_one();
                }
                Err(e) => tracing::warn!(token = %describe(&req), error = %e, "token fetch failed"),
            }
            token.map(|t| encoded::EncodedToken::new(t, &req))
        })
    })
}

/// Writes the token to its sink; true if written.
async fn write_sink(sink: &Sink, token: &Token, metrics: &metrics::Metrics) -> bool {
    let path = sink.path.clone();
    let opts = s2iam::util::atomic_file::FileOptions {
        mode: sink.mode,
        owner: sink.owner,
        group: sink.group,
    };
    let body = token.jwt().expose().as_bytes().to_vec();
    let result = tokio::task::spawn_blocking(move || {
        s2iam::util::atomic_file::write_file(&path, &body, &opts)
    })
    .await;
    match result {
        Ok(Ok(())) => {
            tracing::debug!(path = %sink.path.display(), "sink written");
            true
        }
        Ok(Err(e)) => {
            metrics
                .sink_write_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(path = %sink.path.display(), error = %e, "cannot write token sink");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "sink writer task failed");
            false
        }
    }
}

/// Detection with retries, then the configured tokens.
async fn startup(state: Arc<AppState>) {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match state.client.provider().await {
            Ok(p) => {
                tracing::info!(provider = %p.kind(), elapsed_ms = started.elapsed().as_millis() as u64, "identity detected");
                *state.detect.lock().unwrap_or_else(|p| p.into_inner()) =
                    DetectState::Detected(p.kind());
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "detection failed; retrying");
                *state.detect.lock().unwrap_or_else(|p| p.into_inner()) =
                    DetectState::Failed(e.to_string());
                let (wait, next) = startup_backoff(
                    delay,
                    started.elapsed(),
                    state.config.client.startup_timeout,
                );
                tokio::time::sleep(wait).await;
                delay = next;
            }
        }
    }
    for req in state.warm_requests() {
        if let Err(CacheError { error }) = state.cache.pin(req.clone()).await {
            // The fetcher logged the failure (once per fetch); the refresher
            // retries it with backoff.
            tracing::debug!(token = %describe(&req), error = %error, "could not warm token yet");
        }
    }
    for profile in state.config.aws.profiles.iter().filter(|p| p.warm) {
        if let Err(CacheError { error }) = state.aws.cache().pin(profile.name.clone()).await {
            // Logged by the vendor's fetch already.
            tracing::debug!(profile = %profile.name, error = %error, "could not warm AWS credentials yet");
        }
    }
}

/// The wait after a failed detection at start, and the next nominal delay:
/// doubling from 200 ms to 5 s while within `startup_timeout`, then up to 60 s.
/// Each wait is drawn from [delay / 2, delay]: pods of a node pool started at
/// once would otherwise probe their metadata servers in step (GKE's is not
/// ready for the first seconds of a pod). `sidecar/examples/fleet_sim.rs` runs it.
pub fn startup_backoff(
    delay: Duration,
    elapsed: Duration,
    startup_timeout: Duration,
) -> (Duration, Duration) {
    let cap = if elapsed < startup_timeout {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(60)
    };
    let wait = delay.mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.5..=1.0));
    (wait, delay.saturating_mul(2).min(cap))
}

fn read_token_file(path: &std::path::Path) -> Result<Secret, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServeError::TokenFile {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(ServeError::TokenFile {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the token must be at least 16 characters",
            ),
        });
    }
    Ok(Secret::new(token))
}
