//! Google Security Token Service, `POST /v1/token` (`sts.googleapis.com`): the
//! RFC 8693 token exchange of workload identity federation, against the pool in
//! [`GoogleServices::pool`](crate::cloud::GoogleServices).
//!
//! Request: `application/x-www-form-urlencoded` (JSON is accepted too, as the real
//! service accepts it) with
//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`, `audience` (a
//! provider of the pool, `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/Q`),
//! `scope` (Google OAuth scopes, e.g. `https://www.googleapis.com/auth/cloud-platform`),
//! `requested_token_type=urn:ietf:params:oauth:token-type:access_token`,
//! `subject_token`, `subject_token_type`.
//!
//! Subject tokens, verified for real:
//! - OIDC provider (`subject_token_type` `...:jwt` or `...:id_token`): an RS256 JWT
//!   of the mock Kubernetes issuer (EKS or AKS; `kid` must match), unexpired, with a
//!   `sub`, and `aud` containing the provider's default allowed audience
//!   `https://iam.googleapis.com/projects/.../providers/Q` (or the `//iam...` form).
//!   The principal is `.../subject/{sub}`.
//! - AWS provider (`urn:ietf:params:aws:token-type:aws4_request`): the
//!   percent-encoded JSON `{"url","method","headers":[{"key","value"}]}` of a
//!   signed `POST` `GetCallerIdentity` to `sts[.region].amazonaws.com` (or
//!   loopback), whose `x-goog-cloud-target-resource` header is the audience (signing
//!   it is recommended, not required: google-auth adds it after signing, s2iam
//!   signs it).
//!   It is replayed through the mock AWS STS's own signature, session-token and
//!   expiry checks (`cloud::aws::sts::authenticate`), as Google replays it against
//!   AWS; the caller must be in the pool's AWS account. The principal is
//!   `.../subject/{caller ARN}`.
//!
//! Answer: `{"access_token", "issued_token_type", "token_type": "Bearer",
//! "expires_in"}`; the token is opaque and belongs to the principal (see
//! [`super::AccessTokens`]). Errors are OAuth's `{"error", "error_description"}`
//! with status 400: `unsupported_grant_type`, `invalid_request`, `invalid_target`
//! (unknown audience), `invalid_scope`, `invalid_grant` (the subject token).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::super::aws::sigv4::SignedRequest;
use super::super::{MockCloud, WorkloadIdentityPool, AKS_ISSUER, EKS_ISSUER};
use super::lifetime;

/// The grant type of every exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// What the exchange issues.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// OIDC subject tokens.
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// OIDC subject tokens, the other name.
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// AWS subject tokens.
pub const AWS4_REQUEST_TYPE: &str = "urn:ietf:params:aws:token-type:aws4_request";
const SAML2_TYPE: &str = "urn:ietf:params:oauth:token-type:saml2";
/// Every Google OAuth scope starts so (`.../cloud-platform`, `.../iam`: Google's
/// libraries ask for `iam` when the token is only for impersonation).
const GOOGLE_SCOPE_PREFIX: &str = "https://www.googleapis.com/auth/";
#[cfg(test)]
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
const INVALID_TARGET: &str = "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.";

impl MockCloud {
    /// A subject token the pool's OIDC provider accepts: a Kubernetes
    /// service-account token of the mock EKS cluster for `sub`, with the provider's
    /// default audience (`https://iam.googleapis.com/projects/.../providers/Q`), as a
    /// pod projects for Google workload identity federation. `None` without a pool.
    pub fn mint_federation_subject_token(&self, sub: &str) -> Option<String> {
        let config = self.config();
        let pool = config.google.pool.as_ref()?;
        let now = self.now_unix();
        let claims = json!({
            "iss": EKS_ISSUER,
            "sub": sub,
            "aud": [format!("https:{}", pool.audience(&pool.oidc_provider_id))],
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(lifetime(self)),
        });
        self.keys().eks.sign(&claims).ok()
    }
}

/// An OAuth error: `{"error", "error_description"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_grant`, ...
    pub code: &'static str,
    /// The description.
    pub description: String,
}

impl OAuthError {
    fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    /// The 400 (401 for `invalid_client`) answer.
    pub fn response(&self) -> Response {
        let status = if self.code == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            json!({"error": self.code, "error_description": self.description}).to_string(),
        )
            .into_response()
    }
}

/// The request's parameters: a form, or a JSON object of strings.
pub(super) fn params(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HashMap<String, String>, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match content_type.as_str() {
        "application/x-www-form-urlencoded" => Ok(url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()),
        "application/json" => {
            let v: Value = serde_json::from_slice(body).map_err(|_| {
                OAuthError::new("invalid_request", "Invalid JSON payload received.")
            })?;
            Ok(v.as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect())
        }
        _ => Err(OAuthError::new(
            "invalid_request",
            "Invalid Content-Type: expected application/x-www-form-urlencoded or application/json.",
        )),
    }
}

/// `GET /_mock/google/subject-token?sub=...`: what
/// [`MockCloud::mint_federation_subject_token`] mints, as text (404 without a pool).
pub(super) async fn subject_token(
    State(cloud): State<MockCloud>,
    uri: axum::http::Uri,
) -> Response {
    let sub =
        crate::util::query_param(uri.query(), "sub").unwrap_or_else(|| "s2iam-workload".into());
    match cloud.mint_federation_subject_token(&sub) {
        Some(token) => (StatusCode::OK, token).into_response(),
        None => (StatusCode::NOT_FOUND, "no workload identity pool").into_response(),
    }
}

/// `POST /v1/token`.
pub(super) async fn token(
    State(cloud): State<MockCloud>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match exchange(&cloud, &headers, &body) {
        Ok(principal) => {
            let lifetime = lifetime(&cloud);
            let token = cloud.gcp_access_tokens().issue(&principal, lifetime);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                json!({
                    "access_token": token,
                    "issued_token_type": ACCESS_TOKEN_TYPE,
                    "token_type": "Bearer",
                    "expires_in": lifetime,
                })
                .to_string(),
            )
                .into_response()
        }
        Err(e) => e.response(),
    }
}

/// The federated principal the request's subject token proves.
fn exchange(cloud: &MockCloud, headers: &HeaderMap, body: &[u8]) -> Result<String, OAuthError> {
    let p = params(headers, body)?;
    let get = |name: &str| p.get(name).map(String::as_str).filter(|s| !s.is_empty());
    match get("grant_type") {
        Some(TOKEN_EXCHANGE) => {}
        Some(other) => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                format!("Invalid grant_type: {}", printable(other)),
            ))
        }
        None => return Err(missing("grant_type")),
    }
    match get("requested_token_type") {
        Some(ACCESS_TOKEN_TYPE) => {}
        Some(_) => return Err(invalid_value("requested_token_type")),
        None => return Err(missing("requested_token_type")),
    }
    let subject_type = get("subject_token_type").ok_or_else(|| missing("subject_token_type"))?;
    if ![JWT_TYPE, ID_TOKEN_TYPE, AWS4_REQUEST_TYPE, SAML2_TYPE].contains(&subject_type) {
        return Err(invalid_value("subject_token_type"));
    }
    let subject = get("subject_token").ok_or_else(|| missing("subject_token"))?;
    let audience = get("audience").ok_or_else(|| missing("audience"))?;
    let config = cloud.config();
    let pool = config
        .google
        .pool
        .as_ref()
        .ok_or_else(|| OAuthError::new("invalid_target", INVALID_TARGET))?;
    let provider = provider_of(pool, audience)
        .ok_or_else(|| OAuthError::new("invalid_target", INVALID_TARGET))?;
    let scopes: Vec<&str> = get("scope").unwrap_or("").split_whitespace().collect();
    if scopes.is_empty() || !scopes.iter().all(|s| s.starts_with(GOOGLE_SCOPE_PREFIX)) {
        return Err(OAuthError::new(
            "invalid_scope",
            "The scope must be one or more Google OAuth scopes (https://www.googleapis.com/auth/...).",
        ));
    }
    let subject_id = match (provider, subject_type) {
        (Provider::Oidc, JWT_TYPE | ID_TOKEN_TYPE) => verify_oidc(cloud, pool, subject)?,
        (Provider::Aws, AWS4_REQUEST_TYPE) => verify_aws(cloud, pool, audience, subject)?,
        _ => {
            return Err(OAuthError::new(
                "invalid_request",
                format!(
                "The subject_token_type {subject_type} is not valid for the provider {audience}."
            ),
            ))
        }
    };
    Ok(format!("{}{subject_id}", pool.principal_prefix()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Oidc,
    Aws,
}

/// Which of the pool's providers `audience` names (with or without `https:`).
fn provider_of(pool: &WorkloadIdentityPool, audience: &str) -> Option<Provider> {
    let aud = audience.strip_prefix("https:").unwrap_or(audience);
    if aud == pool.audience(&pool.oidc_provider_id) {
        Some(Provider::Oidc)
    } else if aud == pool.audience(&pool.aws_provider_id) {
        Some(Provider::Aws)
    } else {
        None
    }
}

fn verify_oidc(
    cloud: &MockCloud,
    pool: &WorkloadIdentityPool,
    token: &str,
) -> Result<String, OAuthError> {
    let grant = |d: &str| OAuthError::new("invalid_grant", d);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[EKS_ISSUER, AKS_ISSUER]);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let claims: Value = cloud
        .keys()
        .eks
        .verify(token, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => grant("The provided subject token has expired."),
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                grant("The issuer in the subject token does not match the provider's issuer.")
            }
            _ => grant("Invalid subject token: the signature or format does not verify against the provider's JWKS."),
        })?;
    let allowed = pool.audience(&pool.oidc_provider_id);
    let allowed = [format!("https:{allowed}"), allowed];
    let aud_ok = match &claims["aud"] {
        Value::String(a) => allowed.contains(a),
        Value::Array(list) => list
            .iter()
            .any(|a| a.as_str().is_some_and(|a| allowed.iter().any(|x| x == a))),
        _ => false,
    };
    if !aud_ok {
        return Err(grant(&format!(
            "The audience in ID Token [{}] does not match the expected audience {}.",
            printable(&claims["aud"].to_string()),
            allowed[0]
        )));
    }
    claims["sub"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| grant("The subject token has no sub claim."))
}

fn verify_aws(
    cloud: &MockCloud,
    pool: &WorkloadIdentityPool,
    audience: &str,
    token: &str,
) -> Result<String, OAuthError> {
    let grant = |d: String| OAuthError::new("invalid_grant", d);
    let decoded = percent_decode(token)
        .ok_or_else(|| grant("The AWS subject token is not percent-encoded JSON.".into()))?;
    let request: Value = serde_json::from_str(&decoded)
        .map_err(|_| grant("The AWS subject token is not percent-encoded JSON.".into()))?;
    if request["method"].as_str() != Some("POST") {
        return Err(grant("The AWS request must use POST.".into()));
    }
    let raw_url = request["url"]
        .as_str()
        .ok_or_else(|| grant("The AWS request has no url.".into()))?;
    let url = url::Url::parse(raw_url)
        .map_err(|_| grant("The AWS request's url is not a URL.".into()))?;
    if !is_sts_host(&url) {
        return Err(grant(format!(
            "The AWS request's host {} is not an AWS STS endpoint.",
            printable(url.host_str().unwrap_or(""))
        )));
    }
    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
    if query.get("Action").map(String::as_str) != Some("GetCallerIdentity")
        || query.get("Version").map(String::as_str) != Some("2011-06-15")
    {
        return Err(grant(
            "The AWS request must be Action=GetCallerIdentity&Version=2011-06-15.".into(),
        ));
    }
    let mut headers = HeaderMap::new();
    for h in request["headers"].as_array().into_iter().flatten() {
        let (Some(k), Some(v)) = (h["key"].as_str(), h["value"].as_str()) else {
            return Err(grant(
                "The AWS request's headers are not {key, value} pairs.".into(),
            ));
        };
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| grant("The AWS request has an invalid header name.".into()))?;
        let value = HeaderValue::from_str(v)
            .map_err(|_| grant("The AWS request has an invalid header value.".into()))?;
        headers.append(name, value);
    }
    let target = headers
        .get("x-goog-cloud-target-resource")
        .and_then(|v| v.to_str().ok());
    if target.map(|t| t.strip_prefix("https:").unwrap_or(t))
        != Some(audience.strip_prefix("https:").unwrap_or(audience))
    {
        return Err(grant(
            "The AWS request's x-goog-cloud-target-resource header does not match the audience."
                .into(),
        ));
    }
    let req = SignedRequest {
        method: "POST",
        path: url.path(),
        raw_query: url.query().unwrap_or(""),
        headers: &headers,
        body: b"",
    };
    let caller = crate::cloud::aws::sts::authenticate(cloud, &req).map_err(|e| {
        grant(format!(
            "Received invalid AWS response of type {} with error message: {e}",
            e.code()
        ))
    })?;
    if caller.account != pool.aws_account_id {
        return Err(grant(format!(
            "The AWS account {} is not trusted by the provider.",
            caller.account
        )));
    }
    Ok(caller.arn)
}

/// `sts.amazonaws.com`, `sts.{region}.amazonaws.com[.cn]`, or loopback (tests that
/// point the verification URL at the mock STS).
fn is_sts_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.to_ascii_lowercase();
            d == "localhost"
                || d == "sts.amazonaws.com"
                || (d.starts_with("sts.")
                    && (d.ends_with(".amazonaws.com") || d.ends_with(".amazonaws.com.cn")))
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `%XX` decoding (what Python's `urllib.parse.quote` encoded); `None` when the
/// result is not UTF-8.
fn percent_decode(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    percent_encoding::percent_decode_str(s).decode_utf8().ok()
}

fn missing(name: &str) -> OAuthError {
    OAuthError::new(
        "invalid_request",
        format!("Missing required parameter: {name}."),
    )
}

fn invalid_value(name: &str) -> OAuthError {
    OAuthError::new("invalid_request", format!("Invalid value for \"{name}\"."))
}

/// A client-chosen value shown in an error: printable ASCII, cut short.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiences_name_the_pool_providers() {
        let pool = WorkloadIdentityPool::default();
        let oidc = pool.audience(&pool.oidc_provider_id);
        assert_eq!(provider_of(&pool, &oidc), Some(Provider::Oidc));
        assert_eq!(
            provider_of(&pool, &format!("https:{oidc}")),
            Some(Provider::Oidc)
        );
        assert_eq!(
            provider_of(&pool, &pool.audience(&pool.aws_provider_id)),
            Some(Provider::Aws)
        );
        assert_eq!(provider_of(&pool, &pool.audience("other")), None);
    }

    #[test]
    fn sts_hosts() {
        for (u, ok) in [
            ("https://sts.amazonaws.com/?x", true),
            ("https://sts.us-east-2.amazonaws.com", true),
            ("https://sts.cn-north-1.amazonaws.com.cn", true),
            ("http://127.0.0.1:9/", true),
            ("https://evil.example.com/sts.amazonaws.com", false),
            ("https://sts.amazonaws.com.evil.example", false),
        ] {
            assert_eq!(is_sts_host(&url::Url::parse(u).unwrap()), ok, "{u}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("%7B%22a%22%3A1%7D").as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(percent_decode("%ff").as_deref(), None);
    }

    #[test]
    fn errors_have_the_oauth_shape() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let cloud = MockCloud::new(
            crate::cloud::CloudConfig::none(),
            crate::keys::KeySet::shared().unwrap(),
        );
        let e = exchange(&cloud, &h, b"grant_type=password").unwrap_err();
        assert_eq!(e.code, "unsupported_grant_type");
        let body = format!(
            "grant_type={}&requested_token_type={}&subject_token_type={}&subject_token=x&audience=//iam.googleapis.com/nope&scope={}",
            TOKEN_EXCHANGE, ACCESS_TOKEN_TYPE, JWT_TYPE, CLOUD_PLATFORM
        );
        assert_eq!(
            exchange(&cloud, &h, body.as_bytes()).unwrap_err().code,
            "invalid_target"
        );
        let e = exchange(
            &cloud,
            &h,
            b"grant_type=urn:ietf:params:oauth:grant-type:token-exchange",
        )
        .unwrap_err();
        assert_eq!(e, missing("requested_token_type"));
    }
}
