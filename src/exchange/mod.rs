//! Identity headers → JWT, over the auth service's wire protocol.
//!
//! `POST {server}` where the server URL template may contain `:jwtType`
//! (`database` | `api`) and `:cloudProvider` (default
//! `https://authsvc.singlestore.com/auth/iam/:jwtType`). Database tokens carry
//! `?workspaceGroupID=<id>` (the Go reference) and, like the Python reference, a JSON
//! body `{"provider", "identity": {...}, "workspace_group_id"?}`; the identity
//! headers prove who we are, plus `X-S2IAM-Identity-Format-Preference`.
//!
//! 200 → `{"jwt": "...", "expires_at"?: RFC 3339, "audience"?}` (an empty `jwt` is an
//! error). 401 = verification failed, 404 = no matching principal, 429/5xx =
//! retried with exponential backoff and jitter (honouring `Retry-After`, plus up to half
//! of it again) within the caller's deadline — except that a caller holding a valid
//! token (inside [`crate::http::caller_retries`]: the cache's refresh) gets one
//! attempt for a failure without `Retry-After`; other 4xx are final. Response bodies are capped at 1 MiB.
//! The returned JWT can be checked against the server's JWKS
//! (`/auth/oidc/op/Customer/.well-known/jwks.json`).

mod jwks;
pub(crate) mod response;
mod server_url;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::env::{Clock, ProviderConfig};
use crate::http::{fetch, Reply, TransportError};
use crate::provider::{CloudIdentity, IdentityHeaders};
use crate::token::Token;
use crate::util::{instant_after, mono_now};
use response::{parse_success, server_message, status_hint};
pub use server_url::ServerUrl;

use crate::http::RetryPolicy;

/// The longest `Retry-After` obeyed; a server asking for more is retried sooner.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Largest response body read from the auth service.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The identity-format preference header of the reference clients.
pub const IDENTITY_FORMAT_HEADER: &str = "X-S2IAM-Identity-Format-Preference";
/// The reference clients' default preference (v0.6.0+): pin every provider's format.
pub const DEFAULT_IDENTITY_FORMAT_PREFERENCE: &[&str] = &[
    "aws-iam-role-arn",
    "aws-arn",
    "gcp-sa-email",
    "gcp-sa-unique-id",
    "azure-object-id",
];
const JWKS_PATH: &str = "/auth/oidc/op/Customer/.well-known/jwks.json";
const JWKS_TTL: Duration = Duration::from_secs(600);

/// Which kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JwtType {
    /// A database token, for one workspace group.
    Database,
    /// An API token.
    Api,
}

impl JwtType {
    /// `database` or `api`, as in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtType::Database => "database",
            JwtType::Api => "api",
        }
    }
}

impl std::fmt::Display for JwtType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest workspace group ID accepted (SingleStore's are 36-character UUIDs).
pub const MAX_WORKSPACE_GROUP_CHARS: usize = 128;

/// The one check of a workspace group ID, for the CLI's flag, the sidecar's
/// `workspaceGroupID=`, the config file and the library's requests alike: 1 to
/// [`MAX_WORKSPACE_GROUP_CHARS`] letters, digits, `-`, `_` or `.` (UUID-like;
/// nothing that needs escaping in a query string, a log line or a file name).
pub fn check_workspace_group_id(wg: &str) -> Result<(), ExchangeError> {
    let ok = !wg.is_empty()
        && wg.len() <= MAX_WORKSPACE_GROUP_CHARS
        && wg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ExchangeError::InvalidWorkspaceGroup(crate::util::snippet(
            wg, 40,
        )))
    }
}

impl std::str::FromStr for JwtType {
    type Err = ExchangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "database" => Ok(JwtType::Database),
            "api" => Ok(JwtType::Api),
            other => Err(ExchangeError::InvalidJwtType(other.to_string())),
        }
    }
}

/// Exchange errors. None of them contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("invalid JWT type {0:?}: must be 'database' or 'api'")]
    /// Not `database` or `api`.
    InvalidJwtType(String),
    #[error("a workspace group id is required for database tokens")]
    /// A database token needs a workspace group.
    MissingWorkspaceGroup,
    #[error("invalid workspace group id {0:?}: must be 1 to {MAX_WORKSPACE_GROUP_CHARS} letters, digits, '-', '_' or '.'")]
    /// Not a workspace group ID ([`check_workspace_group_id`]).
    InvalidWorkspaceGroup(String),
    #[error("invalid auth server URL {url:?}: {reason}")]
    /// The server URL cannot be used.
    InvalidServerUrl {
        /// The address, without its query string.
        url: String,
        /// What went wrong.
        reason: String,
    },
    #[error("auth server URL {url:?} must use https (plain http is allowed only with --allow-http, for testing)")]
    /// A plain-http server URL without `allow_http`.
    HttpNotAllowed {
        /// The address, without its query string.
        url: String,
    },
    #[error("cannot reach the auth server at {url} after {attempts} attempt(s): {reason}")]
    /// No HTTP answer after every attempt.
    Transport {
        /// The address, without its query string.
        url: String,
        /// Requests sent.
        attempts: u32,
        /// What went wrong.
        reason: String,
    },
    #[error(
        "the auth server at {url} did not answer within {timeout_ms} ms ({attempts} attempt(s))"
    )]
    /// No answer within the deadline.
    Timeout {
        /// The address, without its query string.
        url: String,
        /// Requests sent.
        attempts: u32,
        /// The deadline, in milliseconds.
        timeout_ms: u64,
    },
    #[error("the auth server at {url} answered HTTP {status}{hint}: {message}")]
    /// The auth service answered with an error status.
    Status {
        /// The address, without its query string.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What usually causes this status.
        hint: &'static str,
        /// The server's own words.
        message: String,
        /// Requests sent.
        attempts: u32,
    },
    #[error("the auth server returned an empty JWT")]
    /// The auth service answered 200 with an empty `jwt`.
    EmptyJwt,
    #[error("the auth server's response is not valid: {0}")]
    /// The answer is not the expected JSON.
    MalformedResponse(String),
    /// The token's expiry (stated or from its `exp`) is not in the future.
    #[error("the auth server returned a JWT that is already expired (expiry {expired_at}); check the server's and this machine's clocks")]
    ExpiredJwt {
        /// The expiry, RFC 3339.
        expired_at: String,
    },
    #[error("the auth server's response is larger than {MAX_RESPONSE_BYTES} bytes")]
    /// The answer is larger than [`MAX_RESPONSE_BYTES`].
    ResponseTooLarge,
    #[error("the returned JWT failed validation against the server's JWKS: {0}")]
    /// The JWT failed validation against the server's JWKS.
    Jwks(String),
}

impl ExchangeError {
    /// The HTTP status the server answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ExchangeError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The exchange's default retries (of transient failures: connection errors,
/// 429, 5xx; the same [`RetryPolicy`] the metadata clients use; the caller's
/// timeout bounds it as well as `budget`): four attempts, 200 ms doubling to 5 s.
pub const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    base_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(5),
    budget: Duration::from_secs(30),
};

/// How tokens are requested.
#[derive(Debug, Clone)]
pub struct ExchangeConfig {
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Lifetime assumed when neither `expires_at` nor the JWT's `exp` says.
    pub default_lifetime: Duration,
    /// Sent as `X-S2IAM-Identity-Format-Preference`; empty sends none.
    pub identity_format_preference: Vec<String>,
    /// Verify the returned JWT's signature against the server's JWKS.
    pub validate_jwks: bool,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            retry: DEFAULT_RETRY,
            default_lifetime: Duration::from_secs(3600),
            identity_format_preference: DEFAULT_IDENTITY_FORMAT_PREFERENCE
                .iter()
                .map(|s| s.to_string())
                .collect(),
            validate_jwks: false,
        }
    }
}

/// One token request.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeRequest<'a> {
    /// Database or API.
    pub jwt_type: JwtType,
    /// Required for database tokens.
    pub workspace_group_id: Option<&'a str>,
    /// The identity proof.
    pub headers: &'a IdentityHeaders,
    /// Who we are, for the request body.
    pub identity: &'a CloudIdentity,
}

/// Talks to the auth service. Clone it freely: the HTTP connection pool and the
/// JWKS cache are shared.
#[derive(Clone)]
pub struct ExchangeClient {
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    config: ExchangeConfig,
    jwks: Arc<Mutex<Option<(Instant, String, jsonwebtoken::jwk::JwkSet)>>>,
    /// Set only by [`ExchangeClient::with_transport`]; `None` is HTTP.
    transport: Option<Arc<dyn ExchangeTransport>>,
}

impl std::fmt::Debug for ExchangeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Done(Token),
    Retry {
        error: ExchangeError,
        after: Option<Duration>,
    },
    Fail(ExchangeError),
}

impl ExchangeClient {
    /// A client in the process's own environment (proxies from `HTTPS_PROXY`,
    /// `HTTP_PROXY`, `NO_PROXY`; the system clock).
    pub fn new(config: ExchangeConfig) -> Self {
        Self::with_provider_config(config, &ProviderConfig::from_env())
    }

    /// A client in the injected environment: its HTTP client (one connection
    /// pool, proxies from the injected variables, never for loopback servers)
    /// and its clock (token lifetimes are fixed against it).
    pub fn with_provider_config(config: ExchangeConfig, cfg: &ProviderConfig) -> Self {
        // jsonwebtoken's signatures on ring, before anything in the process signs or
        // checks one (the first use fixes the provider for the process).
        crate::util::jwt_crypto::install();
        Self {
            http: cfg.http.clone(),
            clock: cfg.clock.clone(),
            config,
            jwks: Arc::new(Mutex::new(None)),
            transport: None,
        }
    }

    /// The same client sending its requests to `transport` instead of over HTTP
    /// (simulations; see [`ExchangeTransport`]).
    pub fn with_transport(mut self, transport: Arc<dyn ExchangeTransport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// How this client exchanges.
    pub fn config(&self) -> &ExchangeConfig {
        &self.config
    }

    /// Requests a token, retrying transient failures until `timeout` has passed.
    pub async fn exchange(
        &self,
        server: &ServerUrl,
        req: ExchangeRequest<'_>,
        timeout: Duration,
    ) -> Result<Token, ExchangeError> {
        if req.jwt_type == JwtType::Database && req.workspace_group_id.is_none_or(str::is_empty) {
            return Err(ExchangeError::MissingWorkspaceGroup);
        }
        let url = server.resolve(req.jwt_type, req.identity.provider, req.workspace_group_id);
        let deadline = instant_after(mono_now(), timeout);
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            attempt = attempt.saturating_add(1);
            let left = deadline.saturating_duration_since(mono_now());
            let outcome =
                match tokio::time::timeout(left, self.attempt(&url, req, attempt, left)).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        return Err(ExchangeError::Timeout {
                            url: url.to_string(),
                            attempts: attempt,
                            timeout_ms: timeout.as_millis() as u64,
                        })
                    }
                };
            match outcome {
                Attempt::Done(token) => {
                    if self.config.validate_jwks {
                        self.validate(server, &token, left).await?;
                    }
                    return Ok(token);
                }
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { error, after } => {
                    // A caller holding a still-valid token (the cache's refresh)
                    // retries on its own schedule, spread over `retry_max`: a
                    // failure the server gave no time for (5xx, no answer) ends
                    // the call. Why, measured with `sidecar/examples/fleet_sim.rs`
                    // (100,000 sidecars, 10-minute outage): retried in the call
                    // 0.2-1.4 s later, every refresh was four requests to a
                    // service that was down, and the refreshes in flight when
                    // it came back landed their retries in its first second
                    // (300 requests against a capacity of 167: the peak).
                    if after.is_none() && crate::http::caller_retries_set() {
                        return Err(error);
                    }
                    // A server-named wait is obeyed, with jitter on top (see
                    // `after_retry_after`).
                    let wait = after.map_or_else(
                        || self.config.retry.backoff(attempt),
                        crate::http::after_retry_after,
                    );
                    let left = deadline.saturating_duration_since(mono_now());
                    let policy = &self.config.retry;
                    if attempt >= policy.max_attempts
                        || wait >= left
                        || waited.saturating_add(wait) > policy.budget
                    {
                        return Err(error);
                    }
                    tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %error, "retrying token exchange");
                    tokio::time::sleep(wait).await;
                    waited = waited.saturating_add(wait);
                }
            }
        }
    }

    async fn attempt(
        &self,
        url: &url::Url,
        req: ExchangeRequest<'_>,
        attempt: u32,
        left: Duration,
    ) -> Attempt {
        let sent = match &self.transport {
            Some(transport) => {
                transport
                    .send(TransportRequest {
                        url: url.clone(),
                        jwt_type: req.jwt_type,
                        attempt,
                    })
                    .await
            }
            None => self.post(url, req, left).await,
        };
        let answer = match sent {
            Ok(answer) => answer,
            Err(TransportError::TooLarge { .. }) => {
                return Attempt::Fail(ExchangeError::ResponseTooLarge)
            }
            Err(e) => {
                return Attempt::Retry {
                    error: ExchangeError::Transport {
                        url: url.to_string(),
                        attempts: attempt,
                        reason: match e {
                            TransportError::Other { reason, .. } => reason,
                            e => e.to_string(),
                        },
                    },
                    after: None,
                }
            }
        };
        let status = answer.status;
        let body = answer.body.as_bytes();
        if status == 200 {
            return match parse_success(body, self.clock.now(), self.config.default_lifetime) {
                Ok(token) => Attempt::Done(token),
                Err(e) => Attempt::Fail(e),
            };
        }
        let error = ExchangeError::Status {
            url: url.to_string(),
            status,
            hint: status_hint(status),
            message: server_message(body),
            attempts: attempt,
        };
        if status == 429 || (500..600).contains(&status) {
            Attempt::Retry {
                error,
                after: answer
                    .retry_after(self.clock.now())
                    .map(|d| d.min(MAX_RETRY_AFTER)),
            }
        } else {
            Attempt::Fail(error)
        }
    }
}

impl ExchangeClient {
    /// One POST over HTTP.
    async fn post(
        &self,
        url: &url::Url,
        req: ExchangeRequest<'_>,
        left: Duration,
    ) -> Result<Reply, TransportError> {
        let mut builder = self.http.post(url.clone()).json(&request_body(&req));
        for (name, value) in req.headers.iter() {
            builder = builder.header(name, value.expose());
        }
        if !self.config.identity_format_preference.is_empty() {
            builder = builder.header(
                IDENTITY_FORMAT_HEADER,
                self.config.identity_format_preference.join(","),
            );
        }
        // The caller's deadline (the timeout around this attempt) decides; the
        // request's own timeout is only a backstop past it.
        fetch(
            builder,
            url.as_str(),
            left.saturating_add(Duration::from_secs(1)),
        )
        .await
    }
}

/// What an [`ExchangeTransport`] is asked to send (no identity: a transport
/// other than HTTP is a simulation's in-process auth service, which needs none).
#[derive(Debug, Clone)]
pub struct TransportRequest {
    /// The resolved exchange URL.
    pub url: url::Url,
    /// Database or API.
    pub jwt_type: JwtType,
    /// Which attempt of this exchange (from 1).
    pub attempt: u32,
}

/// Where exchange requests go instead of HTTP: `sidecar/examples/fleet_sim.rs` puts
/// thousands of sidecars' real retry, cache and refresh code against one
/// in-process auth service on Tokio's virtual clock, which sockets cannot run
/// on. The answer is read exactly as an HTTP answer is.
pub trait ExchangeTransport: Send + Sync {
    /// Sends one request.
    fn send(
        &self,
        request: TransportRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, TransportError>> + Send>>;
}

/// The body the Python reference sends; the server reads the workspace group from
/// it when the query has none.
fn request_body(req: &ExchangeRequest<'_>) -> serde_json::Value {
    let id = req.identity;
    let mut body = serde_json::json!({
        "provider": id.provider.as_str(),
        "identity": {
            "identifier": id.identifier,
            "account_id": id.account_id,
            "region": id.region,
            "resource_type": id.resource_type,
            "additional_claims": id.additional_claims,
        },
    });
    if let (JwtType::Database, Some(wg)) = (req.jwt_type, req.workspace_group_id) {
        body["workspace_group_id"] = serde_json::Value::String(wg.to_string());
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = DEFAULT_RETRY;
        for attempt in 1..20 {
            assert!(p.backoff(attempt) <= p.max_delay);
        }
        assert!(p.backoff(1) <= p.base_delay);
    }
}
