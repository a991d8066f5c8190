//! IAM Credentials: `POST /v1/projects/-/serviceAccounts/{email}:generateIdToken`
//! (and `:generateAccessToken`, `{"scope": [...], "lifetime"?: "3600s"}` →
//! `{"accessToken", "expireTime"}`, which Google's libraries call for
//! `service_account_impersonation_url`)
//!
//! A global API, always served. `Authorization: Bearer` must hold a live token the
//! mock minted; who may impersonate whom:
//!
//! - the instance's default service account (an access token or ID token from the
//!   metadata server; the reference Go client sends the ID token): the target and
//!   every delegate in `gcp.impersonable`;
//! - a federated principal of the workload identity pool (an access token from
//!   Google STS, `principal://...`): a target in `google.pool.service_accounts`, no
//!   delegates;
//! - a service-account key or a user (access tokens from the OAuth token
//!   endpoint): a target in `google.impersonable`, no delegates.
//!
//! Body `{"audience": "...", "includeEmail"?: bool, "delegates"?: [...]}`; the
//! target is named by email or unique id. Returns
//! `{"token": "<ID token>"}` with `azp` = `sub` = the target's unique id and `email`
//! only when `includeEmail` is true. Errors use Google's JSON shape
//! `{"error": {"code", "message", "status"}}`: 401 `UNAUTHENTICATED`,
//! 403 `PERMISSION_DENIED`, 400 `INVALID_ARGUMENT`, 404 `NOT_FOUND`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::{CloudConfig, GcpIdentity, MockCloud, ServiceAccount};
use super::{id_token_claims, lifetime, sign, GOOGLE_ISSUER};
use crate::util::now_unix;

const UNAUTHENTICATED_MESSAGE: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
const PERMISSION_DENIED_MESSAGE: &str =
    "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist).";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct GenerateIdTokenRequest {
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    include_email: Option<bool>,
    #[serde(default, deserialize_with = "null_as_empty")]
    delegates: Vec<String>,
}

/// Who a bearer token belongs to: an email for access tokens, a unique id (`sub`)
/// for ID tokens.
#[derive(Debug, PartialEq, Eq)]
enum Caller {
    Email(String),
    UniqueId(String),
}

impl Caller {
    fn is(&self, sa: &ServiceAccount) -> bool {
        match self {
            Caller::Email(e) => *e == sa.email,
            Caller::UniqueId(id) => *id == sa.unique_id,
        }
    }
}

/// Google's error JSON.
fn google_error(status: StatusCode, google_status: &str, message: &str) -> Response {
    let body =
        json!({"error": {"code": status.as_u16(), "message": message, "status": google_status}});
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
        );
    }
    resp
}

fn unauthenticated() -> Response {
    google_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        UNAUTHENTICATED_MESSAGE,
    )
}

fn permission_denied() -> Response {
    google_error(
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        PERMISSION_DENIED_MESSAGE,
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The caller behind `Authorization: Bearer`, if the token is one this mock minted
/// and still live.
fn authenticate(cloud: &MockCloud, headers: &HeaderMap) -> Option<Caller> {
    let token = bearer(headers)?;
    if let Some(email) = cloud.gcp_access_tokens().owner(token) {
        return Some(Caller::Email(email));
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[GOOGLE_ISSUER]);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let claims: Value = cloud.keys().google.verify(token, &validation).ok()?;
    claims["sub"]
        .as_str()
        .map(|s| Caller::UniqueId(s.to_string()))
}

/// The account named by `name` (email or unique id) in `accounts`.
fn named<'a>(accounts: &'a [ServiceAccount], name: &str) -> Option<&'a ServiceAccount> {
    accounts
        .iter()
        .find(|sa| sa.email == name || sa.unique_id == name)
}

/// The impersonable account named by `name` (email or unique id).
fn impersonable<'a>(gcp: &'a GcpIdentity, name: &str) -> Option<&'a ServiceAccount> {
    named(&gcp.impersonable, name)
}

/// The target account, when the caller may mint tokens for it (see the module
/// documentation for the rules).
fn authorize<'a>(
    config: &'a CloudConfig,
    caller: &Caller,
    target: &str,
    delegates: &[String],
) -> Option<&'a ServiceAccount> {
    let own = config.gcp.as_ref().and_then(|g| g.service_account.as_ref());
    match (config.gcp.as_ref(), own) {
        (Some(gcp), Some(own)) if caller.is(own) => authorize_instance(gcp, target, delegates),
        _ => {
            let Caller::Email(owner) = caller else {
                return None;
            };
            if !delegates.is_empty() {
                return None;
            }
            let google = &config.google;
            match &google.pool {
                Some(pool) if owner.starts_with(&pool.principal_prefix()) => {
                    named(&pool.service_accounts, target)
                }
                _ if owner.starts_with("principal://") => None,
                _ => named(&google.impersonable, target),
            }
        }
    }
}

/// The instance's default account impersonating `target` through `delegates`.
fn authorize_instance<'a>(
    gcp: &'a GcpIdentity,
    target: &str,
    delegates: &[String],
) -> Option<&'a ServiceAccount> {
    for delegate in delegates {
        let name = delegate
            .strip_prefix("projects/-/serviceAccounts/")
            .unwrap_or(delegate);
        impersonable(gcp, name)?;
    }
    impersonable(gcp, target)
}

/// `POST .../serviceAccounts/{sa}:generateIdToken` and `:generateAccessToken`.
pub(super) async fn service_account_method(
    State(cloud): State<MockCloud>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match name.rsplit_once(':') {
        Some((target, "generateIdToken")) => generate_id_token(&cloud, target, &headers, &body),
        Some((target, "generateAccessToken")) => {
            generate_access_token(&cloud, target, &headers, &body)
        }
        _ => google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested method was not found on this service account resource.",
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateAccessTokenRequest {
    #[serde(default, deserialize_with = "null_as_empty")]
    scope: Vec<String>,
    #[serde(default)]
    lifetime: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    delegates: Vec<String>,
}

/// Google's JSON APIs read `null` as absent (google-auth sends `"delegates": null`).
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// `{"accessToken", "expireTime"}` for the target, owned by it (so it can call
/// IAM Credentials as itself); `lifetime` (`"3600s"`) at most an hour.
fn generate_access_token(
    cloud: &MockCloud,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let Some(caller) = authenticate(cloud, headers) else {
        return unauthenticated();
    };
    let request: GenerateAccessTokenRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {e}"),
            )
        }
    };
    let config = cloud.config();
    let Some(target) = authorize(&config, &caller, target, &request.delegates) else {
        return permission_denied();
    };
    if request.scope.is_empty() {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument: scope is required.",
        );
    }
    let mut secs = lifetime(cloud);
    if let Some(l) = &request.lifetime {
        match l.strip_suffix('s').and_then(|n| n.parse::<u64>().ok()) {
            Some(n) if (1..=3600).contains(&n) => secs = secs.min(n),
            _ => {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "Request contains an invalid argument: lifetime must be between 1s and 3600s.",
                )
            }
        }
    }
    let token = cloud.gcp_access_tokens().issue(&target.email, secs);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        json!({"accessToken": token, "expireTime": crate::util::rfc3339(now_unix().saturating_add(secs))})
            .to_string(),
    )
        .into_response()
}

fn generate_id_token(
    cloud: &MockCloud,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let cloud = cloud.clone();
    let Some(caller) = authenticate(&cloud, headers) else {
        return unauthenticated();
    };
    let request: GenerateIdTokenRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {e}"),
            )
        }
    };
    let config = cloud.config();
    let Some(target) = authorize(&config, &caller, target, &request.delegates) else {
        return permission_denied();
    };
    let audience = request.audience.unwrap_or_default();
    if audience.is_empty() {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument: audience is required.",
        );
    }
    let include_email = request.include_email.unwrap_or(false);
    let claims = id_token_claims(
        target,
        &audience,
        include_email,
        now_unix(),
        lifetime(&cloud),
    );
    match sign(&cloud, &claims) {
        Ok(token) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
            json!({ "token": token }).to_string(),
        )
            .into_response(),
        Err(_) => google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "Internal error encountered.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_requires_the_default_account_and_an_impersonable_target() {
        let config = CloudConfig::gcp();
        let g = config.gcp.clone().unwrap();
        let own = g.service_account.clone().unwrap();
        let target = g.impersonable[0].clone();
        let caller = Caller::Email(own.email.clone());
        assert_eq!(
            authorize(&config, &caller, &target.email, &[]),
            Some(&target)
        );
        assert_eq!(
            authorize(&config, &caller, &target.unique_id, &[]),
            Some(&target)
        );
        assert_eq!(
            authorize(&config, &caller, "other@x.iam.gserviceaccount.com", &[]),
            None
        );
        assert_eq!(
            authorize(&config, &Caller::UniqueId("1".into()), &target.email, &[]),
            None
        );
        assert_eq!(
            authorize(&config, &caller, &target.email, &["nobody@x".to_string()]),
            None
        );
    }

    #[test]
    fn federated_principals_and_oauth_callers_have_their_own_lists() {
        let config = CloudConfig::none();
        let pool = config.google.pool.clone().unwrap();
        let federated = Caller::Email(format!(
            "{}arn:aws:sts::1:assumed-role/r/s",
            pool.principal_prefix()
        ));
        let pool_sa = &pool.service_accounts[0];
        assert_eq!(
            authorize(&config, &federated, &pool_sa.email, &[]),
            Some(pool_sa)
        );
        let other_target = &config.google.impersonable[0];
        assert_eq!(
            authorize(&config, &federated, &other_target.email, &[]),
            None
        );
        assert_eq!(
            authorize(&config, &federated, &pool_sa.email, &["x".into()]),
            None
        );
        let foreign = Caller::Email("principal://iam.googleapis.com/projects/9/locations/global/workloadIdentityPools/other/subject/x".into());
        assert_eq!(authorize(&config, &foreign, &pool_sa.email, &[]), None);
        let user = Caller::Email("dev@example.com".into());
        assert_eq!(
            authorize(&config, &user, &other_target.email, &[]),
            Some(other_target)
        );
        assert_eq!(authorize(&config, &user, &pool_sa.email, &[]), None);
    }
}
