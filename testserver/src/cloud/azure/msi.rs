//! The legacy `MSI_ENDPOINT` identity endpoint (here `/MSI/token`):
//!
//! - with `MSI_SECRET` (Azure ML compute, App Service before 2019):
//!   `GET /MSI/token?api-version=2017-09-01&resource=R[&clientid=|&client_id=]` with
//!   header `secret: <MSI_SECRET>` (401 missing, 403 wrong) →
//!   `{access_token, expires_on, resource, token_type, client_id}`. Azure ML answers
//!   `expires_on` in epoch seconds; App Service 2017-09-01 answered a UTC date string
//!   (`"06/20/2019 02:57:58 +00:00"`), which `azure.msi_date_expiry` selects.
//!   Errors are App Service's `{"statusCode", "message", "correlationId"}`.
//! - without (Cloud Shell): `POST /MSI/token` with `Metadata: true` and the form
//!   `resource=R` → the same token; 400 OAuth-shaped errors.
//!
//! Azure ML's 2017 API reads the client id as `clientid`; `client_id` is accepted
//! too, as App Service does.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::app_service::app_service_error;
use super::{
    access_token_claims, json_response, oauth_error, parse_selector, select_identity, sign, ttl,
    AzureIdentity, MockCloud, SelectError, SelectorKind, Subject,
};
use crate::util::{now_unix, query_param};

/// The endpoint's path on the mock.
pub(super) const PATH: &str = "/MSI/token";
const API_VERSION: &str = "2017-09-01";

const SELECTORS: [(&str, SelectorKind); 2] = [
    ("clientid", SelectorKind::Client),
    ("client_id", SelectorKind::Client),
];

/// `GET`: Azure ML / old App Service, with the `secret` header.
pub(super) async fn token(
    State(cloud): State<MockCloud>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let config = cloud.config();
    let Some(az) = config.azure.as_ref() else {
        return (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    };
    match headers.get("secret") {
        None => return app_service_error(StatusCode::UNAUTHORIZED, "Missing secret header."),
        Some(v) if v.as_bytes() != az.msi_secret.as_bytes() => {
            return app_service_error(StatusCode::FORBIDDEN, "Invalid secret header.")
        }
        Some(_) => {}
    }
    let query = uri.query();
    match query_param(query, "api-version") {
        Some(v) if v == API_VERSION => {}
        Some(v) if !v.is_empty() => {
            return app_service_error(
                StatusCode::BAD_REQUEST,
                &format!("Unsupported api-version '{v}'; this endpoint speaks {API_VERSION}."),
            )
        }
        _ => return app_service_error(StatusCode::BAD_REQUEST, "api-version is required."),
    }
    let resource = query_param(query, "resource").unwrap_or_default();
    if resource.is_empty() {
        return app_service_error(StatusCode::BAD_REQUEST, "resource is required.");
    }
    let identity = match parse_selector(query, &SELECTORS).and_then(|s| select_identity(az, &s)) {
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
    issue(&cloud, az, &identity, &resource)
}

/// `POST`: Cloud Shell, `Metadata: true` and a form body.
pub(super) async fn cloud_shell_token(
    State(cloud): State<MockCloud>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = cloud.config();
    let Some(az) = config.azure.as_ref() else {
        return (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    };
    if headers.get("metadata").map(|v| v.as_bytes()) != Some(b"true".as_slice()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let resource = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "resource")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if resource.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required form field 'resource' is missing",
        );
    }
    match select_identity(az, &super::Selector::Default) {
        Ok(identity) => issue(&cloud, az, &identity, &resource),
        Err(e) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    }
}

fn issue(
    cloud: &MockCloud,
    az: &AzureIdentity,
    identity: &super::ManagedIdentity,
    resource: &str,
) -> Response {
    let (now, ttl) = (now_unix(), ttl(cloud));
    let claims = access_token_claims(&Subject::managed(az, identity), resource, now, ttl);
    let Ok(token) = sign(cloud, &claims) else {
        return app_service_error(StatusCode::INTERNAL_SERVER_ERROR, "signing failed");
    };
    let expires = now.saturating_add(ttl);
    let expires_on = if az.msi_date_expiry {
        app_service_date(expires)
    } else {
        expires.to_string()
    };
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "expires_on": expires_on,
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }),
    )
}

/// `MM/DD/YYYY HH:MM:SS +00:00`, as App Service's 2017-09-01 API wrote it on Linux.
fn app_service_date(unix: u64) -> String {
    let t = crate::util::rfc3339(unix); // YYYY-MM-DDTHH:MM:SSZ
    let (date, time) = t.split_once('T').unwrap_or((&t, ""));
    let mut parts = date.split('-');
    let (y, m, d) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    format!("{m}/{d}/{y} {} +00:00", time.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_service_dates() {
        assert_eq!(
            app_service_date(1_561_085_878),
            "06/21/2019 02:57:58 +00:00"
        );
    }
}
