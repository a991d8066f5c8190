//! The HTTP side of the mock auth service: the exchange endpoint, the key and
//! request-log endpoints of the reference test server, and run-time behaviour.
//!
//! `POST /auth/iam/{database|api}`:
//! - query `workspaceGroupID` (the Go client) or body field `workspace_group_id`
//!   (the Python client); optional for both JWT types, as in the reference. Both
//!   present and different → 400.
//! - body optional; when present it must be a JSON object (the Python client sends
//!   `{"provider", "identity": {...}, "workspace_group_id"?}`, which is recorded and
//!   never trusted). Over the listener's 64 KiB limit → 413. For `"provider":
//!   "aws"`, `identity.additional_claims` may hold only the reference clients'
//!   `UserId`, `AssumedRoleArn` and `RoleSessionName` (400 otherwise): a client
//!   sending more is not wire-identical to the reference.
//! - identity headers and format negotiation: see [`super::verify`].
//!
//! Checks run in this order: JWT type (404), body (413, 400), the [`AuthConfig`]
//! toggles (`return_error` → `error_code`, `fail_verification` → 401), verification
//! (400 / 401 / 502), then issuing (`return_empty_jwt` → 200 `{"jwt": ""}`).
//!
//! 200 → `{"jwt": "<RS256 JWT>", "expires_at": "<RFC 3339>", "identityFormat": "<format>"}`.
//! The JWT header has the auth key's `kid`; its claims are `sub` (the negotiated
//! identifier), `provider`, `accountID`, `region`, `resourceType`, `jwtType`,
//! `workspaceGroupID` (when given), `identityFormat`, `iat`, `exp`, `iss`
//! (`http://{Host}` or `s2iam-testserver`), `createdByTestServer: true`, then the
//! identity's additional claims where they do not collide.
//!
//! Every error is JSON `{"error": "<code>", "message": "<text>"}`:
//! `invalid_request` 400, `verification_failed` 401, `not_found` 404,
//! `method_not_allowed` 405 (with `Allow`), `payload_too_large` 413,
//! `upstream_error` 502 (STS down), and for `return_error` the configured status
//! with its reason as the code (e.g. `service_unavailable`) and `error_message`.
//!
//! Also served:
//! - `GET /auth/oidc/op/Customer/.well-known/jwks.json` → `{"keys": [JWK]}`;
//! - `GET /info/public-key` → the key as a PKCS#1 PEM, `text/plain`;
//! - `GET /info/requests` → `[ExchangeRecord]` (every exchange attempt, credential
//!   headers `<redacted>`); `DELETE` clears it (204);
//! - `GET /health` → `{"status": "healthy", "time", "config": {"port",
//!   "failVerification", "returnEmptyJWT", "returnError"}}`;
//! - `GET /_mock/behaviour` → [`AuthConfig`]; `PUT` replaces it with the given
//!   fields over the defaults (unknown fields or bad values → 400) and answers the
//!   new config.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::header::{ALLOW, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::verify::{VerifyError, PREFERENCE_HEADER};
use super::{AuthConfig, ExchangeRecord, MockAuth, VerifiedIdentity};
use crate::util::{json_error, now_unix, rfc3339};

/// The JWKS route, where the issued JWTs' key is published.
pub const JWKS_PATH: &str = "/auth/oidc/op/Customer/.well-known/jwks.json";

/// The issuer of our JWTs when the request has no usable `Host` header.
const DEFAULT_ISSUER: &str = "s2iam-testserver";

/// Request headers whose values are credentials; `/info/requests` never shows them.
const REDACTED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-aws-secret-access-key",
    "x-aws-session-token",
    "x-amz-security-token",
];

/// The exchange and JWKS routes.
pub fn routes() -> Router<MockAuth> {
    Router::new()
        .route("/auth/iam/{jwt_type}", only("POST", post(exchange)))
        .route(JWKS_PATH, only("GET, HEAD", get(jwks)))
        .route("/info/public-key", only("GET, HEAD", get(public_key)))
        .route(
            "/info/requests",
            only(
                "GET, HEAD, DELETE",
                get(list_requests).delete(clear_requests),
            ),
        )
        .route("/health", only("GET, HEAD", get(health)))
        .route(
            "/_mock/behaviour",
            only("GET, HEAD, PUT", get(get_behaviour).put(put_behaviour)),
        )
        .fallback(not_found)
}

/// `router` answering 405 with `Allow: allow` to every other method.
fn only(allow: &'static str, router: MethodRouter<MockAuth>) -> MethodRouter<MockAuth> {
    router.fallback(move || async move {
        let mut resp = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("method not allowed; use {allow}"),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        resp
    })
}

async fn not_found(uri: Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such endpoint: {}", uri.path()),
    )
}

/// Why an exchange did not issue a JWT.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("unknown JWT type {0:?}: use database or api")]
    UnknownJwtType(String),
    #[error("request body is larger than {} bytes", crate::server::MAX_BODY_BYTES)]
    TooLarge,
    #[error("{0}")]
    BadRequest(String),
    /// `return_error`.
    #[error("{message}")]
    Configured { status: StatusCode, message: String },
    /// `fail_verification`.
    #[error("verification failed")]
    FailVerification,
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("cannot sign the JWT: {0}")]
    Sign(String),
}

impl ExchangeError {
    fn status(&self) -> StatusCode {
        match self {
            Self::UnknownJwtType(_) => StatusCode::NOT_FOUND,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Configured { status, .. } => *status,
            Self::FailVerification => StatusCode::UNAUTHORIZED,
            Self::Verify(e) => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
            Self::Sign(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> String {
        match self {
            Self::UnknownJwtType(_) => "not_found".into(),
            Self::TooLarge => "payload_too_large".into(),
            Self::BadRequest(_) => "invalid_request".into(),
            Self::Configured { status, .. } => reason_code(*status),
            Self::FailVerification => "verification_failed".into(),
            Self::Verify(e) => e.code().into(),
            Self::Sign(_) => "internal_error".into(),
        }
    }

    fn into_response(self) -> Response {
        json_error(self.status(), &self.code(), self.to_string())
    }
}

/// `service_unavailable` for 503: the code of a configured error.
fn reason_code(status: StatusCode) -> String {
    status
        .canonical_reason()
        .map(|r| {
            r.to_ascii_lowercase()
                .replace([' ', '-'], "_")
                .replace('\'', "")
        })
        .unwrap_or_else(|| "error".into())
}

/// A successful exchange.
struct Issued {
    jwt: String,
    expires_at: u64,
    identity_format: String,
}

async fn exchange(
    State(auth): State<MockAuth>,
    jwt_type: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let jwt_type = jwt_type.map(|Path(t)| t).unwrap_or_default();
    let mut record = ExchangeRecord {
        time: rfc3339(now_unix()),
        method: "POST".into(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        jwt_type: jwt_type.clone(),
        workspace_group_id: None,
        headers: capture_headers(&headers),
        body: None,
        status: 0,
        identity: None,
        claims: None,
        error: None,
    };
    let response = match run_exchange(&auth, &jwt_type, &uri, &headers, body, &mut record).await {
        Ok(Some(issued)) => Json(json!({
            "jwt": issued.jwt,
            "expires_at": rfc3339(issued.expires_at),
            "identityFormat": issued.identity_format,
        }))
        .into_response(),
        Ok(None) => Json(json!({ "jwt": "" })).into_response(),
        Err(e) => {
            tracing::debug!(status = e.status().as_u16(), error = %e, "exchange rejected");
            record.error = Some(e.to_string());
            e.into_response()
        }
    };
    record.status = response.status().as_u16();
    auth.record(record);
    response
}

/// The exchange proper; fills in `record` as facts become known. `Ok(None)` is the
/// `return_empty_jwt` answer.
async fn run_exchange(
    auth: &MockAuth,
    jwt_type: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    record: &mut ExchangeRecord,
) -> Result<Option<Issued>, ExchangeError> {
    if jwt_type != "database" && jwt_type != "api" {
        return Err(ExchangeError::UnknownJwtType(
            jwt_type.chars().take(64).collect(),
        ));
    }
    let body = read_body(body)?;
    record.body = body.clone();
    check_aws_claims(body.as_ref())?;
    let workspace_group_id = workspace_group_id(uri.query(), body.as_ref())?;
    record.workspace_group_id = workspace_group_id.clone();
    let preference = preference(headers)?;

    let config = auth.config();
    if config.return_error {
        return Err(configured_error(&config));
    }
    if config.fail_verification {
        return Err(ExchangeError::FailVerification);
    }

    let identity = auth
        .verifier()
        .verify(headers, &config)
        .await?
        .negotiate(&preference);
    record.identity = Some(identity.clone());
    if config.return_empty_jwt {
        return Ok(None);
    }

    let now = now_unix();
    let expires_at = now.saturating_add(config.token_expiry.as_secs());
    let claims = issue_claims(
        &identity,
        jwt_type,
        workspace_group_id.as_deref(),
        &issuer(headers),
        now,
        expires_at,
    );
    let jwt = auth
        .key()
        .sign(&claims)
        .map_err(|e| ExchangeError::Sign(e.to_string()))?;
    record.claims = Some(Value::Object(claims));
    tracing::debug!(
        provider = %identity.provider,
        identifier = %identity.identifier,
        identity_format = %identity.identity_format,
        jwt_type,
        "issued JWT"
    );
    Ok(Some(Issued {
        jwt,
        expires_at,
        identity_format: identity.identity_format,
    }))
}

fn configured_error(config: &AuthConfig) -> ExchangeError {
    let status = StatusCode::from_u16(config.error_code)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ExchangeError::Configured {
        status,
        message: config.error_message.clone(),
    }
}

/// The JSON object body, `None` when there is none.
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Option<Value>, ExchangeError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ExchangeError::TooLarge
        } else {
            ExchangeError::BadRequest("cannot read the request body".into())
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ExchangeError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ExchangeError::BadRequest(
            "request body must be a JSON object".into(),
        ));
    }
    Ok(Some(value))
}

/// The `additional_claims` keys the reference clients send for AWS.
const AWS_REFERENCE_CLAIMS: [&str; 3] = ["UserId", "AssumedRoleArn", "RoleSessionName"];

/// Refuses an AWS body whose `identity.additional_claims` holds a key the
/// reference clients never send.
fn check_aws_claims(body: Option<&Value>) -> Result<(), ExchangeError> {
    let Some(body) = body else { return Ok(()) };
    if body.get("provider").and_then(Value::as_str) != Some("aws") {
        return Ok(());
    }
    let claims = body
        .get("identity")
        .and_then(|i| i.get("additional_claims"))
        .and_then(Value::as_object);
    let extra: Vec<&str> = claims
        .into_iter()
        .flat_map(|c| c.keys())
        .map(String::as_str)
        .filter(|k| !AWS_REFERENCE_CLAIMS.contains(k))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    let extra: String = extra.join(", ").chars().take(200).collect();
    Err(ExchangeError::BadRequest(format!(
        "identity.additional_claims for aws may hold only {} (the reference client's), not {extra}",
        AWS_REFERENCE_CLAIMS.join(", ")
    )))
}

/// `workspaceGroupID` from the query or `workspace_group_id` from the body.
fn workspace_group_id(
    query: Option<&str>,
    body: Option<&Value>,
) -> Result<Option<String>, ExchangeError> {
    let from_query = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "workspaceGroupID")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    });
    let from_body = match body.and_then(|b| b.get("workspace_group_id")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ExchangeError::BadRequest(
                "workspace_group_id in the body must be a string".into(),
            ))
        }
    };
    match (from_query, from_body) {
        (Some(q), Some(b)) if q != b => Err(ExchangeError::BadRequest(
            "workspaceGroupID in the query and workspace_group_id in the body differ".into(),
        )),
        (q, b) => Ok(q.or(b)),
    }
}

/// Every `X-S2IAM-Identity-Format-Preference` value, joined.
fn preference(headers: &HeaderMap) -> Result<String, ExchangeError> {
    let values: Result<Vec<&str>, _> = headers
        .get_all(PREFERENCE_HEADER)
        .iter()
        .map(|v| v.to_str())
        .collect();
    values.map(|v| v.join(",")).map_err(|_| {
        ExchangeError::BadRequest(
            "header X-S2IAM-Identity-Format-Preference is not valid ASCII".into(),
        )
    })
}

/// `http://{Host}` when the Host header is a plausible `host[:port]`.
fn issuer(headers: &HeaderMap) -> String {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
        })
        .map(|h| format!("http://{h}"))
        .unwrap_or_else(|| DEFAULT_ISSUER.to_string())
}

fn issue_claims(
    identity: &VerifiedIdentity,
    jwt_type: &str,
    workspace_group_id: Option<&str>,
    iss: &str,
    now: u64,
    expires_at: u64,
) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("sub".into(), identity.identifier.clone().into());
    claims.insert("provider".into(), identity.provider.clone().into());
    claims.insert("accountID".into(), identity.account_id.clone().into());
    claims.insert("region".into(), identity.region.clone().into());
    claims.insert("resourceType".into(), identity.resource_type.clone().into());
    claims.insert("jwtType".into(), jwt_type.into());
    if let Some(id) = workspace_group_id {
        claims.insert("workspaceGroupID".into(), id.into());
    }
    claims.insert(
        "identityFormat".into(),
        identity.identity_format.clone().into(),
    );
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), expires_at.into());
    claims.insert("iss".into(), iss.into());
    claims.insert("createdByTestServer".into(), true.into());
    for (k, v) in &identity.additional_claims {
        claims
            .entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    claims
}

/// Request headers for the log: lowercase names, repeated values joined with `, `,
/// credentials replaced by `<redacted>`.
fn capture_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .keys()
        .map(|name| {
            let value = if REDACTED_HEADERS.contains(&name.as_str()) {
                "<redacted>".to_string()
            } else {
                headers
                    .get_all(name)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            (name.as_str().to_string(), value)
        })
        .collect()
}

async fn jwks(State(auth): State<MockAuth>) -> Json<Value> {
    Json(auth.key().jwks())
}

async fn public_key(State(auth): State<MockAuth>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain")],
        auth.key().public_pem().to_string(),
    )
        .into_response()
}

async fn list_requests(State(auth): State<MockAuth>) -> Json<Vec<ExchangeRecord>> {
    Json(auth.records())
}

async fn clear_requests(State(auth): State<MockAuth>) -> StatusCode {
    auth.clear_records();
    StatusCode::NO_CONTENT
}

async fn health(State(auth): State<MockAuth>, headers: HeaderMap) -> Json<Value> {
    let config = auth.config();
    let port = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<u16>().ok());
    Json(json!({
        "status": "healthy",
        "time": rfc3339(now_unix()),
        "config": {
            "port": port,
            "failVerification": config.fail_verification,
            "returnEmptyJWT": config.return_empty_jwt,
            "returnError": config.return_error,
        },
    }))
}

async fn get_behaviour(State(auth): State<MockAuth>) -> Json<AuthConfig> {
    Json(auth.config())
}

async fn put_behaviour(
    State(auth): State<MockAuth>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let parsed = body
        .map_err(|r| r.body_text())
        .and_then(|b| parse_behaviour(&b));
    match parsed {
        Ok(config) => {
            auth.update(|c| *c = config.clone());
            Json(config).into_response()
        }
        Err(message) => json_error(StatusCode::BAD_REQUEST, "invalid_behaviour", message),
    }
}

/// An [`AuthConfig`] from a JSON object of some of its fields (the rest default).
fn parse_behaviour(bytes: &[u8]) -> Result<AuthConfig, String> {
    let patch: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let Value::Object(patch) = patch else {
        return Err("body must be a JSON object of AuthConfig fields".into());
    };
    let Ok(Value::Object(mut merged)) = serde_json::to_value(AuthConfig::default()) else {
        return Err("cannot serialise the default configuration".into());
    };
    for (key, value) in patch {
        if !merged.contains_key(&key) {
            return Err(format!("unknown field {key:?}"));
        }
        merged.insert(key, value);
    }
    let config: AuthConfig =
        serde_json::from_value(Value::Object(merged)).map_err(|e| format!("invalid value: {e}"))?;
    if !(200..=599).contains(&config.error_code) {
        return Err(format!(
            "error_code {} is not an HTTP status between 200 and 599",
            config.error_code
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_claims_are_the_reference_clients() {
        let ok = json!({"provider": "aws", "identity": {"additional_claims": {
            "UserId": "AROAX:s", "AssumedRoleArn": "arn", "RoleSessionName": "s"}}});
        assert!(check_aws_claims(Some(&ok)).is_ok());
        assert!(check_aws_claims(None).is_ok());
        let gcp = json!({"provider": "gcp", "identity": {"additional_claims": {"email": "e"}}});
        assert!(check_aws_claims(Some(&gcp)).is_ok());
        let extra = json!({"provider": "aws", "identity": {"additional_claims": {
            "UserId": "AROAX:s", "StsEndpoint": "https://sts.amazonaws.com"}}});
        let err = check_aws_claims(Some(&extra)).unwrap_err().to_string();
        assert!(err.contains("StsEndpoint"), "{err}");
    }

    #[test]
    fn workspace_group_id_sources() {
        let body = json!({"workspace_group_id": "wg-1"});
        assert_eq!(
            workspace_group_id(Some("workspaceGroupID=wg-1"), Some(&body)).unwrap(),
            Some("wg-1".into())
        );
        assert_eq!(
            workspace_group_id(None, Some(&body)).unwrap(),
            Some("wg-1".into())
        );
        assert_eq!(
            workspace_group_id(Some("a=b&workspaceGroupID=wg%202"), None).unwrap(),
            Some("wg 2".into())
        );
        assert_eq!(
            workspace_group_id(Some("workspaceGroupID="), None).unwrap(),
            None
        );
        assert!(workspace_group_id(Some("workspaceGroupID=x"), Some(&body)).is_err());
        assert!(workspace_group_id(None, Some(&json!({"workspace_group_id": 5}))).is_err());
    }

    #[test]
    fn bodies() {
        assert_eq!(read_body(Ok(Bytes::from_static(b"  \n"))).unwrap(), None);
        assert!(read_body(Ok(Bytes::from_static(b"{\"a\":1}")))
            .unwrap()
            .is_some());
        assert!(read_body(Ok(Bytes::from_static(b"[1]"))).is_err());
        assert!(read_body(Ok(Bytes::from_static(b"\xff\xfe"))).is_err());
    }

    #[test]
    fn behaviour_patch_over_defaults() {
        let c = parse_behaviour(br#"{"fail_verification": true, "token_expiry": 60}"#).unwrap();
        assert!(c.fail_verification);
        assert_eq!(c.token_expiry.as_secs(), 60);
        assert_eq!(c.azure_tenant, "common");
        assert!(parse_behaviour(br#"{"fail_verifcation": true}"#).is_err());
        assert!(parse_behaviour(br#"{"error_code": 42}"#).is_err());
        assert!(parse_behaviour(br#"{"error_code": "x"}"#).is_err());
        assert!(parse_behaviour(b"[]").is_err());
        assert!(parse_behaviour(b"nope").is_err());
    }

    #[test]
    fn issuer_and_reason_codes() {
        let mut h = HeaderMap::new();
        assert_eq!(issuer(&h), DEFAULT_ISSUER);
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert_eq!(issuer(&h), "http://127.0.0.1:8080");
        h.insert(HOST, HeaderValue::from_static("evil/path"));
        assert_eq!(issuer(&h), DEFAULT_ISSUER);
        assert_eq!(
            reason_code(StatusCode::SERVICE_UNAVAILABLE),
            "service_unavailable"
        );
        assert_eq!(reason_code(StatusCode::IM_A_TEAPOT), "im_a_teapot");
    }

    #[test]
    fn credential_headers_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer secret"));
        h.insert("x-aws-access-key-id", HeaderValue::from_static("AKIAX"));
        h.insert(
            "x-aws-secret-access-key",
            HeaderValue::from_static("s3cr3t"),
        );
        let captured = capture_headers(&h);
        assert_eq!(captured["authorization"], "<redacted>");
        assert_eq!(captured["x-aws-secret-access-key"], "<redacted>");
        assert_eq!(captured["x-aws-access-key-id"], "AKIAX");
    }
}
