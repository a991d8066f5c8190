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
//! retried with exponential backoff and jitter (honouring `Retry-After`) within the
//! caller's deadline; other 4xx are final. Response bodies are capped at 1 MiB.
//! The returned JWT can be checked against the server's JWKS
//! (`/auth/oidc/op/Customer/.well-known/jwks.json`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::provider::{CloudIdentity, CloudProvider, IdentityHeaders};
use crate::secret::Secret;
use crate::token::{Claims, Token};
use crate::util::{from_unix, parse_rfc3339, rfc3339, snippet};

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
    #[error("the auth server returned a JWT that is already expired (expiry {expired_at}); check the server's and this machine's clocks")]
    /// The token's expiry (stated or from its `exp`) is not in the future.
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

/// A validated server URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    template: String,
}

impl ServerUrl {
    /// Validates `template` before any I/O: it must parse as a URL once its
    /// placeholders are filled, and use https unless `allow_http`.
    pub fn parse(template: &str, allow_http: bool) -> Result<Self, ExchangeError> {
        let probe = fill(template, JwtType::Database, CloudProvider::Aws);
        let url = url::Url::parse(&probe).map_err(|e| ExchangeError::InvalidServerUrl {
            url: template.to_string(),
            reason: e.to_string(),
        })?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => {
                return Err(ExchangeError::HttpNotAllowed {
                    url: template.to_string(),
                })
            }
            other => {
                return Err(ExchangeError::InvalidServerUrl {
                    url: template.to_string(),
                    reason: format!("scheme {other:?} is not https"),
                })
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ExchangeError::InvalidServerUrl {
                url: template.to_string(),
                reason: "no host".into(),
            });
        }
        Ok(Self {
            template: template.to_string(),
        })
    }

    /// The template as given.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The URL for one request, with `workspaceGroupID` added for database tokens.
    pub fn resolve(
        &self,
        jwt_type: JwtType,
        provider: CloudProvider,
        workspace_group_id: Option<&str>,
    ) -> url::Url {
        let mut url = url::Url::parse(&fill(&self.template, jwt_type, provider))
            .expect("validated in ServerUrl::parse");
        if let (JwtType::Database, Some(id)) = (jwt_type, workspace_group_id) {
            url.query_pairs_mut().append_pair("workspaceGroupID", id);
        }
        url
    }

    /// Whether the server is on this machine (`localhost` or a loopback address).
    pub fn is_loopback(&self) -> bool {
        let url = self.resolve(JwtType::Api, CloudProvider::Aws, None);
        match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
    }

    /// Where the server publishes its signing keys.
    pub fn jwks_url(&self) -> url::Url {
        let mut url = self.resolve(JwtType::Api, CloudProvider::Aws, None);
        url.set_path(JWKS_PATH);
        url.set_query(None);
        url
    }
}

fn fill(template: &str, jwt_type: JwtType, provider: CloudProvider) -> String {
    template
        .replace(":jwtType", jwt_type.as_str())
        .replace(":cloudProvider", provider.as_str())
}

/// Retries of transient failures (connection errors, 429, 5xx): the same policy
/// type the metadata clients use. The exchange's own deadline (the caller's
/// timeout) bounds it as well as `budget`.
pub use crate::provider::RetryPolicy;

/// The exchange's default retries: four attempts, 200 ms doubling to 5 s.
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
    config: ExchangeConfig,
    jwks: Arc<Mutex<Option<(Instant, String, jsonwebtoken::jwk::JwkSet)>>>,
}

impl std::fmt::Debug for ExchangeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ExchangeResponse {
    #[serde(default)]
    jwt: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    audience: Option<String>,
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
    /// A client that honours `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` (the auth service
    /// is on the internet; corporate networks reach it through a proxy).
    pub fn new(config: ExchangeConfig) -> Self {
        Self::build(config, true)
    }

    /// A client for `server`: proxies are honoured, except for a loopback server
    /// (a local test server or tunnel), which no proxy can reach.
    pub fn for_server(config: ExchangeConfig, server: &ServerUrl) -> Self {
        Self::build(config, !server.is_loopback())
    }

    fn build(config: ExchangeConfig, use_proxy: bool) -> Self {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("s2iam/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60));
        if !use_proxy {
            builder = builder.no_proxy();
        }
        let http = builder.build().unwrap_or_else(|_| reqwest::Client::new());
        Self {
            http,
            config,
            jwks: Arc::new(Mutex::new(None)),
        }
    }

    /// How this client exchanges.
    pub fn config(&self) -> &ExchangeConfig {
        &self.config
    }

    /// Requests a token, retrying transient failures until `timeout` has passed.
    /// `now` is the caller's wall clock at the time of the call (injected so expiry
    /// is testable).
    pub async fn exchange(
        &self,
        server: &ServerUrl,
        req: ExchangeRequest<'_>,
        timeout: Duration,
        now: impl Fn() -> SystemTime,
    ) -> Result<Token, ExchangeError> {
        if req.jwt_type == JwtType::Database && req.workspace_group_id.is_none_or(str::is_empty) {
            return Err(ExchangeError::MissingWorkspaceGroup);
        }
        let url = server.resolve(req.jwt_type, req.identity.provider, req.workspace_group_id);
        let deadline = Instant::now() + timeout;
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let outcome =
                match tokio::time::timeout(left, self.attempt(&url, req, attempt, &now)).await {
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
                    let wait = after.unwrap_or_else(|| self.config.retry.backoff(attempt));
                    let left = deadline.saturating_duration_since(Instant::now());
                    let policy = &self.config.retry;
                    if attempt >= policy.max_attempts
                        || wait >= left
                        || waited + wait > policy.budget
                    {
                        return Err(error);
                    }
                    tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %error, "retrying token exchange");
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
            }
        }
    }

    async fn attempt(
        &self,
        url: &url::Url,
        req: ExchangeRequest<'_>,
        attempt: u32,
        now: &impl Fn() -> SystemTime,
    ) -> Attempt {
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
        let resp = match builder.send().await {
            Ok(resp) => resp,
            Err(e) => {
                return Attempt::Retry {
                    error: ExchangeError::Transport {
                        url: url.to_string(),
                        attempts: attempt,
                        reason: crate::provider::error_chain(&e),
                    },
                    after: None,
                }
            }
        };
        let status = resp.status().as_u16();
        let retry_after = retry_after(&resp);
        let body = match read_capped(resp).await {
            Ok(body) => body,
            Err(e) => return Attempt::Fail(e),
        };
        if status == 200 {
            return match parse_success(&body, now(), self.config.default_lifetime) {
                Ok(token) => Attempt::Done(token),
                Err(e) => Attempt::Fail(e),
            };
        }
        let error = ExchangeError::Status {
            url: url.to_string(),
            status,
            hint: status_hint(status),
            message: server_message(&body),
            attempts: attempt,
        };
        if status == 429 || (500..600).contains(&status) {
            Attempt::Retry {
                error,
                after: retry_after,
            }
        } else {
            Attempt::Fail(error)
        }
    }

    async fn validate(
        &self,
        server: &ServerUrl,
        token: &Token,
        left: Duration,
    ) -> Result<(), ExchangeError> {
        let header = jsonwebtoken::decode_header(token.jwt().expose())
            .map_err(|e| ExchangeError::Jwks(format!("unreadable JWT header: {e}")))?;
        let kid = header
            .kid
            .ok_or_else(|| ExchangeError::Jwks("the JWT has no kid".into()))?;
        let set = self.jwks(server, left, &kid).await?;
        let jwk = set
            .find(&kid)
            .ok_or_else(|| ExchangeError::Jwks(format!("no key {kid:?} in the server's JWKS")))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
            .map_err(|e| ExchangeError::Jwks(format!("unusable key {kid:?}: {e}")))?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.validate_aud = false;
        validation.leeway = 60;
        jsonwebtoken::decode::<serde_json::Value>(token.jwt().expose(), &key, &validation)
            .map(|_| ())
            .map_err(|e| ExchangeError::Jwks(e.to_string()))
    }

    /// The server's JWKS, cached for a while and refetched when a new `kid` appears
    /// (key rotation).
    async fn jwks(
        &self,
        server: &ServerUrl,
        left: Duration,
        kid: &str,
    ) -> Result<jsonwebtoken::jwk::JwkSet, ExchangeError> {
        let url = server.jwks_url();
        if let Some((at, cached_url, set)) =
            self.jwks.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            if at.elapsed() < JWKS_TTL && *cached_url == url.as_str() && set.find(kid).is_some() {
                return Ok(set.clone());
            }
        }
        let resp = self
            .http
            .get(url.clone())
            .timeout(left.max(Duration::from_millis(100)))
            .send()
            .await
            .map_err(|e| {
                ExchangeError::Jwks(format!(
                    "cannot fetch {url}: {}",
                    crate::provider::error_chain(&e)
                ))
            })?;
        if !resp.status().is_success() {
            return Err(ExchangeError::Jwks(format!(
                "{url} answered HTTP {}",
                resp.status().as_u16()
            )));
        }
        let body = read_capped(resp).await?;
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&body)
            .map_err(|e| ExchangeError::Jwks(format!("{url} is not a JWKS: {e}")))?;
        *self.jwks.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), url.to_string(), set.clone()));
        Ok(set)
    }
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

pub(crate) fn parse_success(
    body: &[u8],
    now: SystemTime,
    default_lifetime: Duration,
) -> Result<Token, ExchangeError> {
    let parsed: ExchangeResponse = serde_json::from_slice(body).map_err(|e| {
        ExchangeError::MalformedResponse(format!("not JSON with a \"jwt\" field: {e}"))
    })?;
    let jwt = parsed
        .jwt
        .filter(|j| !j.is_empty())
        .ok_or(ExchangeError::EmptyJwt)?;
    let stated = match parsed.expires_at.as_deref() {
        Some(s) => Some(parse_rfc3339(s).ok_or_else(|| {
            ExchangeError::MalformedResponse(format!(
                "expires_at {:?} is not RFC 3339",
                snippet(s, 64)
            ))
        })?),
        None => None,
    };
    let claims = Claims::decode_checked(&jwt)
        .map_err(|e| ExchangeError::MalformedResponse(e.to_string()))?;
    let expires_at = match (stated, claims.exp) {
        (Some(at), _) => at,
        (None, Some(exp)) => from_unix(exp).ok_or_else(|| {
            ExchangeError::MalformedResponse(format!("the JWT's exp {exp} is not a valid time"))
        })?,
        (None, None) => now.checked_add(default_lifetime).unwrap_or(now),
    };
    if expires_at <= now {
        return Err(ExchangeError::ExpiredJwt {
            expired_at: rfc3339(expires_at),
        });
    }
    Ok(Token::new(
        Secret::new(jwt),
        expires_at,
        now,
        parsed.audience,
    ))
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, ExchangeError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(ExchangeError::ResponseTooLarge);
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(ExchangeError::ResponseTooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(ExchangeError::MalformedResponse(format!(
                    "body cut short: {}",
                    crate::provider::error_chain(&e)
                )))
            }
        }
    }
}

/// The server's own words: `message`/`error` of a JSON error, else the text.
fn server_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        for key in ["message", "error_description", "error"] {
            if let Some(m) = v.get(key).and_then(|m| m.as_str()) {
                return snippet(m, 300);
            }
        }
    }
    if text.trim().is_empty() {
        "(empty body)".into()
    } else {
        snippet(&text, 300)
    }
}

fn status_hint(status: u16) -> &'static str {
    match status {
        400 => " (bad request)",
        401 => " (identity verification failed)",
        403 => " (forbidden)",
        404 => " (no matching principal is registered for this identity, or wrong URL)",
        429 => " (rate limited)",
        500..=599 => " (server error)",
        _ => "",
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let value = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(300)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_validation() {
        assert!(ServerUrl::parse("https://a.example/auth/iam/:jwtType", false).is_ok());
        assert!(matches!(
            ServerUrl::parse("http://127.0.0.1:1/auth/iam/:jwtType", false),
            Err(ExchangeError::HttpNotAllowed { .. })
        ));
        assert!(ServerUrl::parse("http://127.0.0.1:1/auth/iam/:jwtType", true).is_ok());
        assert!(ServerUrl::parse("ftp://x/", true).is_err());
        assert!(ServerUrl::parse("not a url", true).is_err());
    }

    #[test]
    fn loopback_servers_are_recognised() {
        for (url, want) in [
            ("http://127.0.0.1:1/x", true),
            ("http://localhost:8/x", true),
            ("http://[::1]:8/x", true),
            ("https://authsvc.singlestore.com/auth/iam/:jwtType", false),
            ("http://10.0.0.1/x", false),
        ] {
            assert_eq!(
                ServerUrl::parse(url, true).unwrap().is_loopback(),
                want,
                "{url}"
            );
        }
    }

    #[test]
    fn templating_and_query() {
        let s = ServerUrl::parse("https://h/:cloudProvider/auth/iam/:jwtType?x=1", false).unwrap();
        let u = s.resolve(JwtType::Database, CloudProvider::Gcp, Some("wg 1"));
        assert_eq!(
            u.as_str(),
            "https://h/gcp/auth/iam/database?x=1&workspaceGroupID=wg+1"
        );
        let u = s.resolve(JwtType::Api, CloudProvider::Azure, Some("ignored"));
        assert_eq!(u.as_str(), "https://h/azure/auth/iam/api?x=1");
        assert_eq!(
            s.jwks_url().as_str(),
            "https://h/auth/oidc/op/Customer/.well-known/jwks.json"
        );
    }

    #[test]
    fn success_parsing() {
        let now = SystemTime::now();
        assert!(matches!(
            parse_success(br#"{"jwt":""}"#, now, Duration::ZERO),
            Err(ExchangeError::EmptyJwt)
        ));
        assert!(matches!(
            parse_success(br#"{}"#, now, Duration::ZERO),
            Err(ExchangeError::EmptyJwt)
        ));
        assert!(matches!(
            parse_success(b"<html>", now, Duration::ZERO),
            Err(ExchangeError::MalformedResponse(_))
        ));
        assert!(matches!(
            parse_success(
                br#"{"jwt":"a.b.c","expires_at":"soon"}"#,
                now,
                Duration::ZERO
            ),
            Err(ExchangeError::MalformedResponse(_))
        ));
        assert!(matches!(
            parse_success(br#"{"jwt":"a.b.c"}"#, now, Duration::from_secs(60)),
            Err(ExchangeError::MalformedResponse(_))
        ));
        let t = parse_success(
            format!(r#"{{"jwt":"{}"}}"#, jwt_with("{}")).as_bytes(),
            now,
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(
            t.remaining() <= Duration::from_secs(60) && t.remaining() > Duration::from_secs(50)
        );
    }

    fn jwt_with(payload: &str) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    /// Issue 13: `exp = u64::MAX` with no `expires_at` panicked in `from_unix`; an
    /// expired token was served; a non-JWT answer was passed through.
    #[test]
    fn hostile_expiries_and_shapes_are_refused() {
        let now = SystemTime::now();
        let body = |payload: &str| format!(r#"{{"jwt":"{}"}}"#, jwt_with(payload));
        let err = parse_success(
            body(r#"{"exp":18446744073709551615}"#).as_bytes(),
            now,
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(matches!(err, ExchangeError::MalformedResponse(_)), "{err}");
        let err =
            parse_success(body(r#"{"exp":1000}"#).as_bytes(), now, Duration::ZERO).unwrap_err();
        assert!(matches!(err, ExchangeError::ExpiredJwt { .. }), "{err}");
        let stale = format!(
            r#"{{"jwt":"{}","expires_at":"2001-01-01T00:00:00Z"}}"#,
            jwt_with("{}")
        );
        let err = parse_success(stale.as_bytes(), now, Duration::ZERO).unwrap_err();
        assert!(matches!(err, ExchangeError::ExpiredJwt { .. }), "{err}");
        let err = parse_success(br#"{"jwt":"not a token"}"#, now, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("three dot-separated"), "{err}");
        let ok = parse_success(
            body(r#"{"exp":4000000000}"#).as_bytes(),
            now,
            Duration::ZERO,
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn messages_prefer_the_servers_words() {
        assert_eq!(server_message(br#"{"error":"e","message":"m"}"#), "m");
        assert_eq!(server_message(b"plain"), "plain");
        assert_eq!(server_message(b""), "(empty body)");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = DEFAULT_RETRY;
        for attempt in 1..20 {
            assert!(p.backoff(attempt) <= p.max_delay);
        }
        assert!(p.backoff(1) <= p.base_delay);
    }
}
