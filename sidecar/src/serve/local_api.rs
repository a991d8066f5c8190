//! What the routes and the listeners share: the JSON error shape, query parsing,
//! the via-TCP marker, which paths are AWS routes, and a constant-time compare
//! for tokens. It imports no sibling, so `routes`, `aws_routes` and `listen` can all use
//! it without importing each other in a circle.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A JSON error response.
pub fn api_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// A request the API refuses: `{"error": code, "message"}` with `status`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    /// A refusal with `status` and `code`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_line(
            self.status,
            &serde_json::json!({"error": self.code, "message": self.message}),
        )
    }
}

/// A JSON document with the trailing newline every line-oriented tool expects
/// (`curl` output, `read`, `jq -c` streams).
pub fn json_line(status: StatusCode, doc: &serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        format!("{doc}\n"),
    )
        .into_response()
}

/// Parses a query string, refusing unknown and repeated parameters.
pub(crate) fn parse_query(
    query: Option<&str>,
    known: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let mut params = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !known.contains(&k.as_ref()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter {k:?}; known: {}",
                known.join(", ")
            )));
        }
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ApiError::bad_request(format!(
                "parameter {k:?} given twice"
            )));
        }
    }
    Ok(params)
}

/// Marks a request that came in over TCP (set by the TCP listener's caller check).
#[derive(Debug, Clone, Copy)]
pub struct ViaTcp;

/// Paths whose TCP callers are checked against the AWS token instead of the
/// `listen.tcp_token_file` bearer token.
pub fn is_aws_path(path: &str) -> bool {
    path.starts_with("/v1/aws/") || path.starts_with("/v1/s3/")
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
