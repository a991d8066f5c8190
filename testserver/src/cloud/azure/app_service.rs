//! App Service / Container Apps managed identity: `GET /msi/token?api-version=2019-08-01&resource=R[&client_id=|&principal_id=|&mi_res_id=]`
//!
//! Needs `X-IDENTITY-HEADER` equal to `azure.identity_header` (401 missing, 403
//! wrong). → `{access_token, expires_on (epoch string), resource, token_type,
//! client_id}`; errors `{"statusCode", "message", "correlationId"}`.
//!

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{
    access_token_claims, json_response, parse_selector, select_identity, sign, ttl, MockCloud,
    SelectError, SelectorKind, Subject,
};
use crate::util::{now_unix, query_param, random_uuid};

const APP_SERVICE_API_VERSION: &str = "2019-08-01";

const APP_SERVICE_SELECTORS: [(&str, SelectorKind); 4] = [
    ("client_id", SelectorKind::Client),
    ("principal_id", SelectorKind::Object),
    ("object_id", SelectorKind::Object),
    ("mi_res_id", SelectorKind::Resource),
];

pub(super) fn app_service_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({"statusCode": status.as_u16(), "message": message, "correlationId": random_uuid()}),
    )
}

pub(super) async fn token(
    State(cloud): State<MockCloud>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let config = cloud.config();
    let Some(az) = config.azure.as_ref() else {
        return (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    };
    match headers.get("x-identity-header") {
        None => {
            return app_service_error(
                StatusCode::UNAUTHORIZED,
                "Missing X-IDENTITY-HEADER header.",
            )
        }
        Some(v) if v.as_bytes() != az.identity_header.as_bytes() => {
            return app_service_error(StatusCode::FORBIDDEN, "Invalid X-IDENTITY-HEADER header.")
        }
        Some(_) => {}
    }
    let query = uri.query();
    match query_param(query, "api-version") {
        Some(v) if v == APP_SERVICE_API_VERSION => {}
        Some(v) if !v.is_empty() => {
            return app_service_error(
                StatusCode::BAD_REQUEST,
                &format!(
                "Unsupported api-version '{v}'; this endpoint speaks {APP_SERVICE_API_VERSION}."
            ),
            )
        }
        _ => return app_service_error(StatusCode::BAD_REQUEST, "api-version is required."),
    }
    let resource = query_param(query, "resource").unwrap_or_default();
    if resource.is_empty() {
        return app_service_error(StatusCode::BAD_REQUEST, "resource is required.");
    }
    let identity =
        match parse_selector(query, &APP_SERVICE_SELECTORS).and_then(|s| select_identity(az, &s)) {
            Ok(i) => i,
            Err(SelectError::TooManySelectors(names)) => {
                return app_service_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Only one of {names} may be specified."),
                )
            }
            Err(_) => {
                return app_service_error(
                    StatusCode::BAD_REQUEST,
                    "No Managed Identity found for specified ClientId/ResourceId/PrincipalId.",
                )
            }
        };
    let (now, ttl) = (now_unix(), ttl(&cloud));
    let claims = access_token_claims(&Subject::managed(az, &identity), &resource, now, ttl);
    let Ok(token) = sign(&cloud, &claims) else {
        return app_service_error(StatusCode::INTERNAL_SERVER_ERROR, "signing failed");
    };
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "expires_on": now.saturating_add(ttl).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }),
    )
}
