//! The local API, the same on the Unix socket and on TCP:
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/token/database?workspaceGroupID=<id>` | `{"token","expires_at","expires_in","jwt_type","workspace_group_id"}` |
//! | `GET /v1/token/api` | same, for an API token |
//! | `GET /v1/identity` | the workload's cloud identity (no secrets) |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 while identity works, every configured token is warm and the sidecar is not stopping, else 503 with the reasons |
//! | `GET /startupz` | 200 from the first time `/readyz` would say 200 on (the startupProbe) |
//! | `POST /quitquitquit` | stop the sidecar (exit 0); see [`super::lifecycle`] |
//! | `GET /metrics` | Prometheus text |
//! | `GET /v1/aws/credentials/{profile}` | AWS container credentials (see [`super::aws_routes`]) |
//! | `GET /v1/s3/presign?...` | a presigned S3 URL (see [`super::aws_routes`]) |
//!
//! Token routes also take `assumeRole` (if allowed by `access.assume_roles`) and
//! `audience` (GCP). `?format=raw` or `Accept: text/plain` returns the bare token.
//! Errors are JSON `{"error","message"}`: 400 bad parameters, 403 not allowed,
//! 404 unknown route, 405 wrong method, 502 the auth service refused, 503 the
//! identity or the auth service is unavailable.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{MatchedPath, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};

use super::limits::Caller;
use super::local_api::{api_error, ApiError};
use super::{describe, AppState};
use s2iam::cache::GetError;
use s2iam::client::{Error, TokenRequest};
use s2iam::exchange::{ExchangeError, JwtType};
use s2iam::provider::CloudProvider;

/// Builds the API router (caller checks are layered on by the listener).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/token/database", get(database_token))
        .route("/v1/token/api", get(api_token))
        .route("/v1/identity", get(identity))
        .route("/v1/aws/credentials/{profile}", get(super::aws_routes::credentials))
        .route("/v1/s3/presign", get(super::aws_routes::presign))
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/startupz", get(startupz))
        .route("/quitquitquit", axum::routing::post(quitquitquit))
        .route("/metrics", get(metrics))
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "not_found", "unknown route; see GET /v1/token/database, /v1/token/api, /v1/identity, /v1/aws/credentials/{profile}, /v1/s3/presign, /healthz, /readyz, /startupz, /metrics, POST /quitquitquit") })
        .method_not_allowed_fallback(|| async { api_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "only GET is supported (POST for /quitquitquit)") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(axum::middleware::from_fn(newline_after_json))
        .with_state(state)
}

/// Ends every JSON answer of the router with a newline (answers are small:
/// buffering them costs nothing measurable).
async fn newline_after_json(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "answer too large",
        );
    };
    if bytes.ends_with(b"\n") {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    let mut line = bytes.to_vec();
    line.push(b'\n');
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(line))
}

async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    // MatchedPath clones an Arc, not the string.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics.count_request(route, resp.status().as_u16());
    resp
}

async fn database_token(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    via_tcp: Option<Extension<super::local_api::ViaTcp>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let caller = caller.map_or(Caller::Unknown, |c| c.0);
    let tcp = via_tcp.is_some();
    token(state, JwtType::Database, (tcp, caller), query, headers).await
}

async fn api_token(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    via_tcp: Option<Extension<super::local_api::ViaTcp>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let caller = caller.map_or(Caller::Unknown, |c| c.0);
    let tcp = via_tcp.is_some();
    token(state, JwtType::Api, (tcp, caller), query, headers).await
}

/// `Content-Type` of the bare token.
pub(crate) const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
/// `Content-Type` of JSON answers.
pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");

pub(crate) const TOKEN_PARAMS: &[&str] = &["workspaceGroupID", "assumeRole", "audience", "format"];

async fn token(
    state: Arc<AppState>,
    jwt_type: JwtType,
    (tcp, caller): (bool, Caller),
    query: Option<String>,
    headers: HeaderMap,
) -> Response {
    let params = match TokenParams::parse(query.as_deref()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let raw = match wants_raw(&params, &headers) {
        Ok(raw) => raw,
        Err(e) => return e.into_response(),
    };
    let req = match token_request(&state, jwt_type, &params) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let admit = || state.cold.check(caller);
    let got = state.cache.get_admitted(&req, admit).await;
    if let (Ok(token), true) = (&got, state.audit.enabled()) {
        super::audit::audit_token(
            &state,
            tcp,
            caller,
            jwt_type,
            &token.fingerprint,
            token.token.expires_at,
        );
    }
    match got {
        // Pre-encoded with the cache entry: no JSON document built per request.
        Ok(token) if raw => ([(header::CONTENT_TYPE, TEXT)], token.raw()).into_response(),
        Ok(token) => ([(header::CONTENT_TYPE, JSON)], token.json()).into_response(),
        Err(GetError::Refused { retry_after }) => {
            let secs = retry_after
                .as_secs()
                .saturating_add(u64::from(retry_after.subsec_nanos() > 0));
            let mut resp = api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many tokens not yet cached were asked for; retry in {secs} s (access.cold_fetches_per_second, access.cold_fetches_per_caller_per_second)"),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            resp
        }
        Err(GetError::Failed(e)) => {
            tracing::warn!(token = %describe(&req), error = %e, "cannot serve token");
            upstream_error(&e.error)
        }
    }
}

/// The token routes' query parameters, borrowed from the query string unless
/// they needed unescaping (so the hot path allocates nothing to read them).
#[derive(Debug, Default)]
pub(crate) struct TokenParams<'a> {
    workspace_group_id: Option<Cow<'a, str>>,
    assume_role: Option<Cow<'a, str>>,
    audience: Option<Cow<'a, str>>,
    format: Option<Cow<'a, str>>,
}

impl<'a> TokenParams<'a> {
    /// Parses a query string, refusing unknown and repeated parameters (with
    /// the messages of [`super::local_api::parse_query`]).
    pub(crate) fn parse(query: Option<&'a str>) -> Result<Self, ApiError> {
        let mut params = Self::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match k.as_ref() {
                "workspaceGroupID" => &mut params.workspace_group_id,
                "assumeRole" => &mut params.assume_role,
                "audience" => &mut params.audience,
                "format" => &mut params.format,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unknown parameter {k:?}; known: {}",
                        TOKEN_PARAMS.join(", ")
                    )))
                }
            };
            if slot.replace(v).is_some() {
                return Err(ApiError::bad_request(format!(
                    "parameter {k:?} given twice"
                )));
            }
        }
        Ok(params)
    }
}

/// Whether the bare token is asked for (`format=raw`, or `Accept: text/plain`
/// without `format`).
pub(crate) fn wants_raw(params: &TokenParams<'_>, headers: &HeaderMap) -> Result<bool, ApiError> {
    match params.format.as_deref() {
        None | Some("json") => Ok(wants_text(headers)),
        Some("raw") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "format {other:?} is not json or raw"
        ))),
    }
}

/// Longest GCP audience accepted.
const MAX_AUDIENCE_CHARS: usize = 512;

/// The audience a token request uses. Only GCP identity tokens carry one, so on
/// other clouds `audience=` is refused and never part of the cache key; on GCP
/// (or before detection) it must be the default, a configured token's, or in
/// `access.audiences`.
fn audience(state: &AppState, given: Option<&str>) -> Result<String, ApiError> {
    let cfg = &state.config;
    let Some(aud) = given.filter(|a| !a.is_empty()) else {
        return Ok(cfg.client.gcp_audience.clone());
    };
    let detected = match &*state.detect.lock().unwrap_or_else(|p| p.into_inner()) {
        super::DetectState::Detected(p) => Some(*p),
        _ => None,
    };
    if detected.is_some_and(|p| p != CloudProvider::Gcp) {
        return Err(ApiError::bad_request(
            "audience applies to GCP identity tokens only; this workload is not on GCP",
        ));
    }
    if aud.len() > MAX_AUDIENCE_CHARS {
        return Err(ApiError::bad_request("audience is too long"));
    }
    let allowed = aud == cfg.client.gcp_audience
        || cfg.access.audiences.iter().any(|a| a == aud)
        || cfg.tokens.iter().any(|t| t.gcp_audience == aud);
    if !allowed {
        return Err(ApiError::forbidden(
            "this audience is not in access.audiences",
        ));
    }
    Ok(aud.to_string())
}

/// The cache key of a token request, after the access checks.
pub(crate) fn token_request(
    state: &AppState,
    jwt_type: JwtType,
    params: &TokenParams<'_>,
) -> Result<TokenRequest, ApiError> {
    let cfg = &state.config;
    let workspace_group_id = params
        .workspace_group_id
        .as_deref()
        .filter(|s| !s.is_empty());
    match (jwt_type, &workspace_group_id) {
        (JwtType::Database, None) => {
            return Err(ApiError::bad_request(
                "workspaceGroupID is required for database tokens",
            ))
        }
        (JwtType::Api, Some(_)) => {
            return Err(ApiError::bad_request(
                "workspaceGroupID applies to database tokens only",
            ))
        }
        _ => {}
    }
    if let Some(wg) = &workspace_group_id {
        if s2iam::exchange::check_workspace_group_id(wg).is_err() {
            return Err(ApiError::bad_request(format!(
                "workspaceGroupID must be 1 to {} letters, digits, '-', '_' or '.'",
                s2iam::exchange::MAX_WORKSPACE_GROUP_CHARS
            )));
        }
        let configured = cfg
            .tokens
            .iter()
            .any(|t| t.workspace_group_id.as_deref() == Some(wg));
        if !cfg.access.workspace_groups.is_empty()
            && !cfg.access.workspace_groups.iter().any(|w| w == wg)
            && !configured
        {
            return Err(ApiError::forbidden(format!(
                "workspace group {wg:?} is not in access.workspace_groups"
            )));
        }
    }
    let assume_role = params.assume_role.as_deref().filter(|s| !s.is_empty());
    if let Some(role) = assume_role {
        let configured = cfg
            .tokens
            .iter()
            .any(|t| t.assume_role.as_deref() == Some(role));
        if !cfg.access.assume_roles.iter().any(|r| r == role) && !configured {
            return Err(ApiError::forbidden(
                "this role is not in access.assume_roles",
            ));
        }
    }
    Ok(TokenRequest {
        jwt_type,
        workspace_group_id: workspace_group_id.map(str::to_string),
        assume_role: assume_role.map(str::to_string),
        role_session_name: cfg.client.role_session_name.clone(),
        gcp_audience: audience(state, params.audience.as_deref())?,
    })
}

fn wants_text(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/plain")))
}

/// Maps a flow error to a status: the auth service said no → 502; anything
/// unavailable (identity, network, auth 5xx) → 503.
fn upstream_error(e: &Error) -> Response {
    let message = e.to_string();
    match e {
        Error::Exchange(ExchangeError::Status { status, .. })
            if (400..500).contains(status) && *status != 429 =>
        {
            api_error(StatusCode::BAD_GATEWAY, "auth_rejected", message)
        }
        Error::Exchange(
            ExchangeError::EmptyJwt
            | ExchangeError::MalformedResponse(_)
            | ExchangeError::ExpiredJwt { .. }
            | ExchangeError::Jwks(_),
        ) => api_error(StatusCode::BAD_GATEWAY, "auth_bad_response", message),
        Error::Detect(_) | Error::Provider(_) | Error::Deadline { .. } => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_unavailable",
            message,
        ),
        Error::Exchange(_) => {
            api_error(StatusCode::SERVICE_UNAVAILABLE, "auth_unavailable", message)
        }
    }
}

async fn identity(State(state): State<Arc<AppState>>) -> Response {
    match state.identity().await {
        Ok(id) => Json(id).into_response(),
        Err(e) => upstream_error(&e),
    }
}

/// 200 from the first time the sidecar is ready on (see [`super::lifecycle`]).
async fn startupz(State(state): State<Arc<AppState>>) -> Response {
    if state.lifecycle.started() {
        return Json(serde_json::json!({"started": true})).into_response();
    }
    match state.readiness() {
        Ok(()) => {
            state.lifecycle.mark_started();
            Json(serde_json::json!({"started": true})).into_response()
        }
        Err(problems) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"started": false, "problems": problems})),
        )
            .into_response(),
    }
}

/// Stops the sidecar (the caller passed the listener's checks, like every route).
async fn quitquitquit(State(state): State<Arc<AppState>>) -> Response {
    tracing::info!("POST /quitquitquit: stopping");
    state.lifecycle.request_quit();
    Json(serde_json::json!({"quitting": true})).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.readiness() {
        Ok(()) => Json(serde_json::json!({"ready": true})).into_response(),
        Err(problems) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"ready": false, "problems": problems})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // Per-key series for the configured (pinned) tokens only: labels must not
    // grow with what callers ask for. On-demand keys are a count.
    let tokens: Vec<(String, String, f64)> = state
        .cache
        .pinned_status()
        .into_iter()
        .filter_map(|s| {
            let remaining = s.remaining?;
            Some((
                s.key.jwt_type.to_string(),
                s.key.workspace_group_id.clone().unwrap_or_default(),
                remaining.as_secs_f64(),
            ))
        })
        .collect();
    let aws: Vec<(String, f64)> = state
        .aws
        .cache()
        .status()
        .into_iter()
        .filter_map(|s| Some((s.key, s.remaining?.as_secs_f64())))
        .collect();
    let mut body = state.metrics.render(
        state.cache.stats(),
        state.cache.key_counts(),
        &tokens,
        &aws,
        state.aws.cache().stats(),
        state.readiness().is_ok(),
    );
    body.push_str(&super::metrics::render_clock_skew(
        &state.client.provider_config().aws_clock_skew.reading(),
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
