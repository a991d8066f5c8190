//! The IAM Identity Center (SSO) portal's `GetRoleCredentials`, the call the AWS
//! SDKs make for an `sso_session` profile once they hold an access token (from
//! `aws sso login`, cached in `~/.aws/sso/cache/`):
//! `GET /federation/credentials?account_id=...&role_name=...` with header
//! `x-amz-sso_bearer_token`. Answer:
//! `{"roleCredentials": {"accessKeyId", "secretAccessKey", "sessionToken",
//! "expiration" (epoch milliseconds)}}`, credentials the mock STS accepts, for
//! `arn:aws:sts::{account}:assumed-role/AWSReservedSSO_{role}/s2iam-sso-user`.
//! A wrong token is `401 UnauthorizedException`, as the portal answers.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{assumed_role_arn, constant_time_eq, role_unique_id};
use crate::cloud::MockCloud;

/// The access token the mock portal accepts (what a test writes into the SSO
/// token cache).
pub const SSO_ACCESS_TOKEN: &str = "s2iam-test-sso-access-token";

/// The portal route.
pub fn routes() -> Router<MockCloud> {
    Router::new().route("/federation/credentials", get(role_credentials))
}

async fn role_credentials(
    State(cloud): State<MockCloud>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get("x-amz-sso_bearer_token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !constant_time_eq(token, SSO_ACCESS_TOKEN.as_bytes()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UnauthorizedException",
            "Session token not found or invalid",
        );
    }
    let (Some(account), Some(role)) = (q.get("account_id"), q.get("role_name")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestException",
            "account_id and role_name are required",
        );
    };
    let role_name = format!("AWSReservedSSO_{role}");
    let arn = assumed_role_arn(account, &role_name, "s2iam-sso-user");
    let user_id = format!(
        "{}:s2iam-sso-user",
        role_unique_id(&super::role_arn(account, &role_name))
    );
    let cred = cloud.issue_session(&arn, &user_id, account);
    let expiration_ms = cred.expires.unwrap_or_default().saturating_mul(1000);
    Json(serde_json::json!({
        "roleCredentials": {
            "accessKeyId": cred.access_key_id,
            "secretAccessKey": cred.secret_access_key,
            "sessionToken": cred.session_token,
            "expiration": expiration_ms,
        }
    }))
    .into_response()
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut resp = (status, Json(serde_json::json!({ "message": message }))).into_response();
    if let Ok(v) = kind.parse() {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}
