//! The whole flow in one reusable value: detect once, then identity headers and
//! exchange for every token request.
//!
//! ```no_run
//! # async fn demo() -> Result<(), s2iam::Error> {
//! let token = s2iam::get_database_jwt("my-workspace-group", &s2iam::JwtOptions::default()).await?;
//! println!("{}", token.jwt().expose());
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::env::ProviderConfig;
use crate::exchange::{
    ExchangeClient, ExchangeConfig, ExchangeError, ExchangeRequest, JwtType, ServerUrl,
};
use crate::otel::{SpanKind, Tracer};
use crate::provider::detect::{detect_provider, DetectOptions, DEFAULT_DETECT_TIMEOUT};
use crate::provider::{
    CloudIdentity, CloudProvider, IdentityHeaders, IdentityRequest, Provider, ProviderError,
    DEFAULT_GCP_AUDIENCE, DEFAULT_ROLE_SESSION_NAME,
};
use crate::token::Token;
use crate::util::{instant_after, mono_now};
use crate::DetectError;

/// Any failure of the flow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    /// No cloud was detected.
    Detect(#[from] DetectError),
    #[error(transparent)]
    /// The cloud gave no identity.
    Provider(#[from] ProviderError),
    #[error(transparent)]
    /// The auth service gave no token.
    Exchange(#[from] ExchangeError),
    /// The request's overall deadline passed while the cloud was still being
    /// detected or asked for an identity (a metadata service that accepts and
    /// never answers).
    #[error("no {during} within the {timeout_ms} ms deadline (--timeout, auth.timeout): the metadata service is not answering")]
    Deadline {
        /// The step that was still running.
        during: &'static str,
        /// The deadline, in milliseconds.
        timeout_ms: u64,
    },
}

/// Options of [`Client`] and the one-call helpers. `Default` is the production
/// setup: auto-detection, the production auth service (or `S2IAM_JWT_SERVER_URL`).
#[derive(Debug, Clone)]
pub struct JwtOptions {
    /// Server URL template; `None` takes `S2IAM_JWT_SERVER_URL`, else production.
    pub server_url: Option<String>,
    /// Permit `http://` server URLs (testing only).
    pub allow_http: bool,
    /// Use this provider instead of detecting.
    pub provider: Option<CloudProvider>,
    /// Always probe the metadata services, ignoring environment hints.
    pub force_detect: bool,
    /// Overall deadline of one token request: identity (and detection, when it has
    /// not run yet), metadata retries and the exchange together.
    pub timeout: Duration,
    /// Deadline of detection.
    pub detect_timeout: Duration,
    /// How the exchange is done (retries, JWKS, identity format).
    pub exchange: ExchangeConfig,
    /// Environment, files, clock and endpoints; `None` is the real process's.
    pub provider_config: Option<ProviderConfig>,
    /// Spans for detection, identity and the exchange (children of the
    /// task's current span, e.g. a cache refresh); off by default.
    pub tracer: Tracer,
}

impl Default for JwtOptions {
    fn default() -> Self {
        Self {
            server_url: None,
            allow_http: false,
            provider: None,
            force_detect: false,
            timeout: Duration::from_secs(10),
            detect_timeout: DEFAULT_DETECT_TIMEOUT,
            exchange: ExchangeConfig::default(),
            provider_config: None,
            tracer: Tracer::off(),
        }
    }
}

/// One token to get. Also the key of the sidecar's cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenRequest {
    /// Database or API.
    pub jwt_type: JwtType,
    /// Required for database tokens.
    pub workspace_group_id: Option<String>,
    /// A role to assume before the exchange (AWS role ARN, GCP service account).
    pub assume_role: Option<String>,
    /// Session name of an assumed AWS role.
    pub role_session_name: String,
    /// Audience of the GCP ID token.
    pub gcp_audience: String,
}

impl TokenRequest {
    /// A database token for `workspace_group_id`.
    pub fn database(workspace_group_id: &str) -> Self {
        Self {
            jwt_type: JwtType::Database,
            workspace_group_id: Some(workspace_group_id.to_string()),
            ..Self::api()
        }
    }

    /// An API token.
    pub fn api() -> Self {
        Self {
            jwt_type: JwtType::Api,
            workspace_group_id: None,
            assume_role: None,
            role_session_name: DEFAULT_ROLE_SESSION_NAME.into(),
            gcp_audience: DEFAULT_GCP_AUDIENCE.into(),
        }
    }

    fn identity_request(&self) -> IdentityRequest {
        IdentityRequest {
            gcp_audience: self.gcp_audience.clone(),
            role_session_name: self.role_session_name.clone(),
            ..IdentityRequest::default()
        }
    }
}

/// Detects once and serves any number of token requests.
#[derive(Debug)]
pub struct Client {
    cfg: ProviderConfig,
    server: ServerUrl,
    exchange: ExchangeClient,
    options: JwtOptions,
    provider: OnceCell<Provider>,
}

impl Client {
    /// Validates the server URL (no I/O yet).
    pub fn new(options: JwtOptions) -> Result<Self, Error> {
        let cfg = options
            .provider_config
            .clone()
            .unwrap_or_else(ProviderConfig::from_env);
        let template = options
            .server_url
            .clone()
            .unwrap_or_else(|| cfg.endpoints.auth_server.clone());
        let server = ServerUrl::parse(&template, options.allow_http)?;
        Ok(Self {
            exchange: ExchangeClient::with_provider_config(options.exchange.clone(), &cfg),
            cfg,
            server,
            options,
            provider: OnceCell::new(),
        })
    }

    /// The injected environment the client runs in.
    pub fn provider_config(&self) -> &ProviderConfig {
        &self.cfg
    }

    /// The validated auth service URL.
    pub fn server_url(&self) -> &ServerUrl {
        &self.server
    }

    /// The detected (or chosen) provider; detection runs on first use and is
    /// retried on the next call if it failed.
    pub async fn provider(&self) -> Result<&Provider, Error> {
        let opts = DetectOptions {
            timeout: self.options.detect_timeout,
            provider: if self.options.force_detect {
                None
            } else {
                self.options.provider
            },
            skip_fast_path: self.options.force_detect,
        };
        self.provider
            .get_or_try_init(|| async {
                let mut span = self.options.tracer.span("s2iam.detect", SpanKind::Internal);
                let detected = span.scope(detect_provider(&self.cfg, &opts)).await;
                match &detected {
                    Ok(d) => span.set("cloud.provider", d.provider.kind().to_string()),
                    Err(e) => span.fail(&e.to_string()),
                }
                detected.map(|d| d.provider).map_err(Error::from)
            })
            .await
    }

    /// Identity headers (for the role, if any) and the identity they prove, within
    /// the request deadline (`timeout`).
    pub async fn identity(
        &self,
        req: &TokenRequest,
    ) -> Result<(IdentityHeaders, CloudIdentity), Error> {
        self.identity_until(req, instant_after(mono_now(), self.options.timeout))
            .await
    }

    async fn identity_until(
        &self,
        req: &TokenRequest,
        deadline: Instant,
    ) -> Result<(IdentityHeaders, CloudIdentity), Error> {
        let during = if self.provider.initialized() {
            "identity"
        } else {
            "cloud detection or identity"
        };
        let work = async {
            let detected = self.provider().await?;
            let provider = match &req.assume_role {
                Some(role) => detected.assume_role(role)?,
                None => detected.clone(),
            };
            Ok(provider
                .identity(&self.cfg, &req.identity_request())
                .await?)
        };
        let mut span = self
            .options
            .tracer
            .span("s2iam.identity", SpanKind::Internal);
        span.set("s2iam.assume_role", req.assume_role.is_some());
        let identity = span
            .scope(tokio::time::timeout_at(deadline.into(), work))
            .await
            .unwrap_or(Err(Error::Deadline {
                during,
                timeout_ms: duration_ms(self.options.timeout),
            }));
        match &identity {
            Ok((_, id)) => span.set("cloud.provider", id.provider.to_string()),
            Err(e) => span.fail(&e.to_string()),
        }
        identity
    }

    /// A fresh token from the auth service.
    pub async fn token(&self, req: &TokenRequest) -> Result<Token, Error> {
        self.token_with_identity(req).await.map(|(token, _)| token)
    }

    /// A fresh token and the identity the client presented for it. The whole
    /// flow shares one deadline, `timeout`: what identity took, the exchange
    /// does not get.
    pub async fn token_with_identity(
        &self,
        req: &TokenRequest,
    ) -> Result<(Token, CloudIdentity), Error> {
        if req.jwt_type == JwtType::Database
            && req.workspace_group_id.as_deref().is_none_or(str::is_empty)
        {
            return Err(ExchangeError::MissingWorkspaceGroup.into());
        }
        if let Some(wg) = req.workspace_group_id.as_deref() {
            crate::exchange::check_workspace_group_id(wg)?;
        }
        let deadline = instant_after(mono_now(), self.options.timeout);
        let (headers, identity) = self.identity_until(req, deadline).await?;
        let exchange_req = ExchangeRequest {
            jwt_type: req.jwt_type,
            workspace_group_id: req.workspace_group_id.as_deref(),
            headers: &headers,
            identity: &identity,
        };
        let mut span = self.options.tracer.span("s2iam.exchange", SpanKind::Client);
        span.set("s2iam.jwt_type", req.jwt_type.to_string());
        if let Some(wg) = &req.workspace_group_id {
            span.set("s2iam.workspace_group_id", crate::logging::field(wg));
        }
        let token = span
            .scope(self.exchange.exchange(
                &self.server,
                exchange_req,
                deadline.saturating_duration_since(mono_now()),
            ))
            .await;
        if let Err(e) = &token {
            span.fail(&e.to_string());
        }
        Ok((token?, identity))
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A database JWT for `workspace_group_id`, detecting the cloud.
pub async fn get_database_jwt(
    workspace_group_id: &str,
    options: &JwtOptions,
) -> Result<Token, Error> {
    if workspace_group_id.is_empty() {
        return Err(ExchangeError::MissingWorkspaceGroup.into());
    }
    Client::new(options.clone())?
        .token(&TokenRequest::database(workspace_group_id))
        .await
}

/// An API JWT, detecting the cloud.
pub async fn get_api_jwt(options: &JwtOptions) -> Result<Token, Error> {
    Client::new(options.clone())?
        .token(&TokenRequest::api())
        .await
}
