//! The AWS routes of the local API:
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/aws/credentials/{profile}` | the AWS container-credentials document: `{"AccessKeyId","SecretAccessKey","Token","Expiration","AccountId"?}` |
//! | `GET /v1/s3/presign?profile=&bucket=&key=&method=GET\|PUT&expires=` | `{"url","method","expires_at","expires_in"}` |
//!
//! Errors are `{"code","message"}` (the container-credentials error shape): 400 bad
//! parameters, 401 missing or wrong authorization, 403 bucket or key outside the
//! profile's rules, 404 unknown profile, 502 STS refused, 503 identity or STS
//! unavailable or credentials too close to expiry.
//!
//! Authorization: on loopback TCP, `Authorization: <token>` — the raw random token
//! the sidecar wrote to `aws.authorization_token_file` at start, exactly what AWS
//! SDKs send from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` — is required (the
//! `listen.tcp_token_file` bearer token does not apply to these routes). On the Unix
//! socket no token is needed: the socket is already guarded by its file mode and
//! `listen.allowed_uids`. Every refusal is logged, never with the token or a
//! credential.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::local_api::{constant_time_eq, parse_query, ViaTcp};
use super::AppState;
use s2iam::aws_vending::{PresignRequest, VendError};
use s2iam::logging::field;

/// A refusal in the container-credentials error shape.
pub fn aws_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    super::local_api::json_line(
        status,
        &serde_json::json!({"code": code, "message": message.into()}),
    )
}

fn from_error(e: &VendError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    aws_error(status, e.code(), e.to_string())
}

/// On TCP, the exact raw token is required: `Some(refusal)` when it is not there.
fn check_token(
    state: &AppState,
    via_tcp: bool,
    headers: &HeaderMap,
    path: &str,
) -> Option<Response> {
    if !via_tcp {
        return None;
    }
    let Some(expected) = &state.aws_token else {
        s2iam::refusal!(
            state.refusals,
            path = %field(path),
            reason = "no aws.authorization_token_file configured",
            "refused AWS request on tcp"
        );
        return Some(aws_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "AWS routes on TCP need aws.authorization_token_file in the sidecar's config (or use the Unix socket)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(str::trim);
    let reason = match given {
        None | Some("") => "missing Authorization header",
        Some(g) if constant_time_eq(g.as_bytes(), expected.expose().as_bytes()) => return None,
        Some(_) => "wrong Authorization token",
    };
    s2iam::refusal!(state.refusals, path = %field(path), reason, "refused AWS request on tcp");
    Some(aws_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("{reason}: send Authorization: <the token in aws.authorization_token_file> (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)"),
    ))
}

/// `GET /v1/aws/credentials/{profile}`.
pub async fn credentials(
    State(state): State<Arc<AppState>>,
    Path(profile): Path<String>,
    via_tcp: Option<Extension<ViaTcp>>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_string();
    if let Some(r) = check_token(&state, via_tcp.is_some(), req.headers(), &path) {
        return r;
    }
    match state.aws.credentials(&profile).await {
        Ok(v) => {
            if state.audit.enabled() {
                let caller = req
                    .extensions()
                    .get::<super::limits::Caller>()
                    .copied()
                    .unwrap_or(super::limits::Caller::Unknown);
                state.audit.issued(
                    super::audit::Surface::AwsCredentials,
                    &caller,
                    "aws",
                    &super::audit::fingerprint(v.credentials.access_key_id.as_str()),
                    v.expiration,
                );
            }
            Json(v.container_json()).into_response()
        }
        Err(e) => {
            s2iam::refusal!(state.refusals, path = %field(&path), status = e.status(), error = %field(&e.to_string()), "refused AWS credentials request");
            from_error(&e)
        }
    }
}

pub(crate) const PRESIGN_PARAMS: &[&str] = &["profile", "bucket", "key", "method", "expires"];

/// `GET /v1/s3/presign`.
pub async fn presign(
    State(state): State<Arc<AppState>>,
    via_tcp: Option<Extension<ViaTcp>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = "/v1/s3/presign";
    if let Some(r) = check_token(&state, via_tcp.is_some(), &headers, path) {
        return r;
    }
    let req = match presign_request(query.as_deref()) {
        Ok(r) => r,
        Err(message) => {
            s2iam::refusal!(state.refusals, path, error = %field(&message), "refused presign request");
            return aws_error(StatusCode::BAD_REQUEST, "bad_request", message);
        }
    };
    match state.aws.presign(&req).await {
        Ok(p) => Json(p.json()).into_response(),
        Err(e) => {
            s2iam::refusal!(state.refusals, path, profile = %field(&req.profile), bucket = %field(&req.bucket), status = e.status(), error = %field(&e.to_string()), "refused presign request");
            from_error(&e)
        }
    }
}

pub(crate) fn presign_request(query: Option<&str>) -> Result<PresignRequest, String> {
    let params = parse_query(query, PRESIGN_PARAMS).map_err(|e| e.message)?;
    let required = |name: &str| {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| format!("parameter {name} is required"))
    };
    Ok(PresignRequest {
        profile: required("profile")?,
        bucket: required("bucket")?,
        key: required("key")?,
        method: params.get("method").cloned(),
        expires: params
            .get("expires")
            .map(|e| parse_expires(e))
            .transpose()?,
    })
}

/// Seconds (`3600`) or a duration (`15m`, `1h`).
pub fn parse_expires(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let secs = match text.parse::<u64>() {
        Ok(n) => n,
        Err(_) => s2iam::util::parse_duration(text)
            .map(|d| d.as_secs())
            .map_err(|e| format!("expires={:?}: {e}", s2iam::util::snippet(text, 40)))?,
    };
    let max = s2iam::aws_vending::presign::MAX_EXPIRES_SECS;
    if !(1..=max).contains(&secs) {
        return Err(format!(
            "expires={:?}: {secs} seconds is outside 1 ..= {max} (7 days)",
            s2iam::util::snippet(text, 40)
        ));
    }
    Ok(secs)
}
