//! The AWS STS query API, version `2011-06-15`, as `sts.amazonaws.com` speaks it.
//!
//! Requests: `POST /` with a form body (`Content-Type:
//! application/x-www-form-urlencoded`) or `GET /?...`, parameters
//! `Action=...&Version=2011-06-15&...`. Every action but
//! `AssumeRoleWithWebIdentity` must carry a SigV4 signature (service `sts`, any
//! region; see [`super::sigv4`]) by a key the mock cloud knows; session keys
//! (`ASIA...`) also need `X-Amz-Security-Token` equal to their session token and
//! must not have expired.
//!
//! Actions:
//! - `GetCallerIdentity` → `Arn`, `UserId`, `Account` of the signer;
//! - `GetSessionToken` (`DurationSeconds` 900..=129600), long-term keys only →
//!   `Credentials` keeping the user's identity;
//! - `AssumeRole` (`RoleArn`, `RoleSessionName`, `DurationSeconds` 900..=43200 (at
//!   most 3600 when the caller is itself a role session), `ExternalId` (required
//!   by roles listed in `AwsIdentity::role_external_ids`), `Policy`,
//!   `PolicyArns.member.N.arn`) → `AssumedRoleUser`, `Credentials`, and
//!   `PackedPolicySize` when a policy was sent;
//! - `AssumeRoleWithWebIdentity` (unsigned; `RoleArn`, `RoleSessionName`,
//!   `WebIdentityToken`, `DurationSeconds`, `Policy`) → `SubjectFromWebIdentityToken`,
//!   `Audience`, `AssumedRoleUser`, `Credentials`, `Provider`. The token must be an
//!   RS256 JWT from one of the mock issuers (EKS/AKS cluster, Google, Azure AD) with
//!   a matching `iss`, a `sub`, an `aud` and an unexpired `exp`.
//!
//! Responses are `text/xml`:
//! `<{Action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><{Action}Result>...</{Action}Result><ResponseMetadata><RequestId>...</RequestId></ResponseMetadata></{Action}Response>`;
//! errors are
//! `<ErrorResponse xmlns="..."><Error><Type>Sender</Type><Code>...</Code><Message>...</Message></Error><RequestId>...</RequestId></ErrorResponse>`
//! with the real codes and statuses (see [`StsError::code`]). Every response carries
//! `x-amzn-RequestId`.
//!
//! Every successful call is recorded (see [`MockCloud::sts_calls`]), and the record
//! is served at `GET /_mock/sts/calls` (`DELETE` clears it) so out-of-process tests
//! can check, for example, the session policy a client sent.
//!
//! One file a job: `params.rs` (the action and the parameter checks), `partition.rs`
//! (region and partition from the host), `signature.rs` (who signed), `actions.rs`
//! (the signed actions), `web_identity.rs` (`AssumeRoleWithWebIdentity`), `calls.rs`
//! (the record), `error.rs` and `xml.rs` (the answers); this file routes.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};

use super::sigv4::SignedRequest;
use crate::cloud::MockCloud;

mod actions;
mod calls;
mod error;
mod params;
mod partition;
mod signature;
mod web_identity;
mod xml;

pub use calls::StsCall;
pub(crate) use calls::StsState;
pub use error::StsError;
pub use partition::{endpoint_for_host, HostEndpoint};
pub(crate) use signature::authenticate;

use actions::{assume_role, get_caller_identity, get_session_token};
use params::{Action, Params};
use partition::{check_scope_region, in_partition};
use web_identity::assume_role_with_web_identity;
use xml::{error_response, request_id, success_response};

/// The XML namespace of every STS response.
pub const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// The only API version STS has.
pub const VERSION: &str = "2011-06-15";
/// Longest plaintext session policy STS accepts.
pub const MAX_POLICY_CHARS: usize = 2048;

/// The STS routes (`POST /` with `Action=`).
pub fn routes() -> Router<MockCloud> {
    Router::new()
        .route("/", get(query_api).post(query_api))
        .route(
            "/_mock/sts/calls",
            get(|State(cloud): State<MockCloud>| async move { Json(cloud.sts_calls()) }).delete(
                |State(cloud): State<MockCloud>| async move {
                    cloud.clear_sts_calls();
                    StatusCode::NO_CONTENT
                },
            ),
        )
}

/// `GET /` and `POST /`.
async fn query_api(
    State(cloud): State<MockCloud>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = request_id();
    let result = match body {
        Ok(body) => handle(&cloud, &method, &uri, &headers, &body),
        Err(rejection) => Err(StsError::Body {
            status: rejection.status().as_u16(),
            message: rejection.body_text(),
        }),
    };
    match result {
        Ok((action, result)) => success_response(action, &result, &request_id),
        Err(err) => error_response(&err, &request_id),
    }
}

fn handle(
    cloud: &MockCloud,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Action, String), StsError> {
    let query = uri.query().unwrap_or("");
    let params = Params::parse(method, query, headers, body);
    let action = params.action()?;
    if action == Action::AssumeRoleWithWebIdentity {
        return assume_role_with_web_identity(cloud, &params).map(|xml| (action, xml));
    }
    let req = SignedRequest {
        method: method.as_str(),
        path: uri.path(),
        raw_query: query,
        headers,
        body,
    };
    let mut caller = authenticate(cloud, &req)?;
    let endpoint = endpoint_for_host(headers);
    if let Some(endpoint) = &endpoint {
        check_scope_region(&req, endpoint)?;
    }
    let result = match action {
        Action::GetCallerIdentity => {
            if let Some(endpoint) = &endpoint {
                caller.arn = in_partition(&caller.arn, endpoint.partition);
            }
            get_caller_identity(cloud, &caller)
        }
        Action::GetSessionToken => get_session_token(cloud, &caller, &params),
        Action::AssumeRole => assume_role(cloud, &caller, &params),
        // Unsigned; answered above, before authentication.
        Action::AssumeRoleWithWebIdentity => assume_role_with_web_identity(cloud, &params),
    }?;
    Ok((action, result))
}
