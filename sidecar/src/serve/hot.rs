//! The hot path: a cached token asked for again (`GET /v1/token/api` or
//! `/v1/token/database`, the answer fresh in the cache) is answered here, before
//! the router, with none of its per-request work (route matching, boxed
//! middleware futures, a copied header map, a query map, request extensions).
//!
//! It only ever answers with the success the router would give: anything else
//! (a caller the listener's check refuses, a bad or unusual parameter, a key not
//! cached or due for refresh, another route) returns `None` and the request goes
//! through the router, which answers, counts and logs it as before. What it does
//! answer is counted in `s2iam_requests_total` and `s2iam_cache_hits_total` like
//! the router's answer, with the same headers and body.
//!
//! See docs/architecture.md ("The sidecar's hot path") for the measurements
//! behind it.

use axum::body::Bytes;
use axum::http::{header, Method, Request, Response};
use http_body_util::Full;

use super::limits::Caller;
use super::routes::{token_request, wants_raw, TokenParams, JSON, TEXT};
use super::AppState;
use s2iam::exchange::JwtType;

/// The token routes, as the router names them (and `/metrics` counts them).
const API_ROUTE: &str = "/v1/token/api";
const DATABASE_ROUTE: &str = "/v1/token/database";

/// The answer to `req` if it asks for a token that is cached and fresh; `None`
/// (having changed nothing) for anything the router must answer. The caller has
/// already passed the listener's caller check.
pub(super) fn answer<B>(
    state: &AppState,
    req: &Request<B>,
    caller: Caller,
    tcp: bool,
) -> Option<Response<Full<Bytes>>> {
    if req.method() != Method::GET {
        return None;
    }
    let (route, jwt_type) = match req.uri().path() {
        API_ROUTE => (API_ROUTE, JwtType::Api),
        DATABASE_ROUTE => (DATABASE_ROUTE, JwtType::Database),
        _ => return None,
    };
    let params = TokenParams::parse(req.uri().query()).ok()?;
    let raw = wants_raw(&params, req.headers()).ok()?;
    let key = token_request(state, jwt_type, &params).ok()?;
    let token = state.cache.get_fresh(&key)?;
    state.metrics.count_request(route, 200);
    if state.audit.enabled() {
        super::audit::audit_token(
            state,
            tcp,
            caller,
            jwt_type,
            &token.fingerprint,
            token.token.expires_at,
        );
    }
    let (content_type, body) = if raw {
        (TEXT, token.raw())
    } else {
        (JSON, Bytes::from(token.json()))
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    Some(resp)
}
