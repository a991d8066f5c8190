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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sigv4::{self, SigV4Error, SignedRequest};
use super::{assumed_role_arn, constant_time_eq, role_unique_id};
use crate::cloud::{AwsCredential, MockCloud, AKS_ISSUER, EKS_ISSUER};
use crate::util::{now_unix, rfc3339};

/// The XML namespace of every STS response.
pub const NAMESPACE: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
/// The only API version STS has.
pub const VERSION: &str = "2011-06-15";
/// Longest plaintext session policy STS accepts.
pub const MAX_POLICY_CHARS: usize = 2048;

/// One successful STS call, as tests want to see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StsCall {
    /// The STS action.
    pub action: String,
    /// ARN of the signing credential (`None` for `AssumeRoleWithWebIdentity`).
    pub caller_arn: Option<String>,
    /// The signing access key id.
    pub caller_access_key_id: Option<String>,
    /// `RoleArn`.
    pub role_arn: Option<String>,
    /// `RoleSessionName`.
    pub role_session_name: Option<String>,
    /// `DurationSeconds`.
    pub duration_seconds: Option<u64>,
    /// `ExternalId`.
    pub external_id: Option<String>,
    /// The session policy (`Policy`), parsed.
    pub policy: Option<Value>,
    /// Managed session policies (`PolicyArns.member.N.arn`).
    pub policy_arns: Vec<String>,
    /// `sub` of the web identity token.
    pub web_identity_subject: Option<String>,
    /// Access key id of the credentials issued, if any.
    pub issued_access_key_id: Option<String>,
}

impl StsCall {
    fn new(action: Action, caller: Option<&AwsCredential>) -> Self {
        Self {
            action: action.name().to_string(),
            caller_arn: caller.map(|c| c.arn.clone()),
            caller_access_key_id: caller.map(|c| c.access_key_id.clone()),
            role_arn: None,
            role_session_name: None,
            duration_seconds: None,
            external_id: None,
            policy: None,
            policy_arns: Vec::new(),
            web_identity_subject: None,
            issued_access_key_id: None,
        }
    }
}

/// STS-side state: the call record.
#[derive(Default)]
pub(crate) struct StsState {
    calls: Mutex<Vec<StsCall>>,
}

impl MockCloud {
    /// Every successful STS call so far, oldest first.
    pub fn sts_calls(&self) -> Vec<StsCall> {
        self.lock_sts_calls().clone()
    }

    /// Forgets the recorded STS calls.
    pub fn clear_sts_calls(&self) {
        self.lock_sts_calls().clear();
    }

    /// The `Policy` of the most recent successful `AssumeRole` or
    /// `AssumeRoleWithWebIdentity` (`None` if that call sent none, or there was none).
    pub fn last_session_policy(&self) -> Option<Value> {
        self.lock_sts_calls()
            .iter()
            .rev()
            .find(|c| c.action.starts_with("AssumeRole"))
            .and_then(|c| c.policy.clone())
    }

    fn record_sts_call(&self, call: StsCall) {
        let mut calls = self.lock_sts_calls();
        if calls.len() >= 100_000 {
            calls.drain(..10_000);
        }
        calls.push(call);
    }

    fn lock_sts_calls(&self) -> std::sync::MutexGuard<'_, Vec<StsCall>> {
        self.inner
            .sts
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

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

/// Why STS refused a request. [`StsError::code`] and [`StsError::status`] are the
/// real service's; messages never include a secret.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    #[error(transparent)]
    /// The SigV4 signature did not verify.
    Signature(#[from] SigV4Error),
    #[error("Missing Action")]
    /// No `Action` parameter.
    MissingAction,
    #[error("Could not find operation {action} for version {version}")]
    /// An action or version the mock does not serve.
    InvalidAction {
        /// The STS action.
        action: String,
        /// The `Version` parameter.
        version: String,
    },
    #[error("{0}")]
    /// A parameter is out of range.
    Validation(String),
    #[error("The security token included in the request is expired")]
    /// The presented credentials have expired.
    ExpiredToken,
    #[error("{0}")]
    /// The caller may not assume the role.
    AccessDenied(String),
    #[error("{0}")]
    /// The session policy is not valid.
    MalformedPolicyDocument(String),
    #[error("{0}")]
    /// The web identity token was rejected.
    InvalidIdentityToken(String),
    /// An expired web identity token (`ExpiredTokenException`).
    #[error("{0}")]
    ExpiredWebIdentityToken(String),
    /// The body could not be read (too large, broken connection).
    #[error("{message}")]
    /// The body could not be read.
    Body {
        /// The HTTP status.
        status: u16,
        /// The server's own words.
        message: String,
    },
}

impl StsError {
    /// The STS error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Signature(e) => e.code(),
            Self::MissingAction => "MissingAction",
            Self::InvalidAction { .. } => "InvalidAction",
            Self::Validation(_) => "ValidationError",
            Self::ExpiredToken => "ExpiredToken",
            Self::AccessDenied(_) => "AccessDenied",
            Self::MalformedPolicyDocument(_) => "MalformedPolicyDocument",
            Self::InvalidIdentityToken(_) => "InvalidIdentityToken",
            Self::ExpiredWebIdentityToken(_) => "ExpiredTokenException",
            Self::Body { status: 413, .. } => "RequestEntityTooLarge",
            Self::Body { .. } => "MalformedInput",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Signature(e) => e.status(),
            Self::AccessDenied(_) => 403,
            Self::Body { status, .. } => *status,
            _ => 400,
        }
    }

    fn validation(member: &str, value: Option<&str>, constraint: &str) -> Self {
        let value = match value {
            Some(v) => format!("'{v}'"),
            None => "null".to_string(),
        };
        Self::Validation(format!(
            "1 validation error detected: Value {value} at '{member}' failed to satisfy constraint: {constraint}"
        ))
    }
}

/// The STS actions the mock implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    GetCallerIdentity,
    GetSessionToken,
    AssumeRole,
    AssumeRoleWithWebIdentity,
}

impl Action {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "GetCallerIdentity" => Self::GetCallerIdentity,
            "GetSessionToken" => Self::GetSessionToken,
            "AssumeRole" => Self::AssumeRole,
            "AssumeRoleWithWebIdentity" => Self::AssumeRoleWithWebIdentity,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::GetCallerIdentity => "GetCallerIdentity",
            Self::GetSessionToken => "GetSessionToken",
            Self::AssumeRole => "AssumeRole",
            Self::AssumeRoleWithWebIdentity => "AssumeRoleWithWebIdentity",
        }
    }
}

/// A request's parameters: the form body of a POST and the query string (first
/// occurrence of a name wins, body before query).
struct Params(HashMap<String, String>);

impl Params {
    fn parse(method: &Method, query: &str, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut map = HashMap::new();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if method == Method::POST && is_form {
            for (k, v) in url::form_urlencoded::parse(body) {
                map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
            }
        }
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Self(map)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A required parameter; `member` is its name in validation messages.
    fn required(&self, name: &str, member: &str) -> Result<&str, StsError> {
        self.get(name)
            .ok_or_else(|| StsError::validation(member, None, "Member must not be null"))
    }

    fn action(&self) -> Result<Action, StsError> {
        let name = self.get("Action").ok_or(StsError::MissingAction)?;
        let version = self.get("Version").unwrap_or("NO_VERSION_SPECIFIED");
        match Action::parse(name) {
            Some(action) if version == VERSION => Ok(action),
            _ => Err(StsError::InvalidAction {
                action: name.to_string(),
                version: version.to_string(),
            }),
        }
    }
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

/// What an STS host name says: the region signatures must be scoped to and the
/// partition (`sts.cn-north-1.amazonaws.com.cn`: `cn-north-1`, `aws-cn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpoint {
    /// The region in the host (`us-east-1` for the global `sts.amazonaws.com`).
    pub region: String,
    /// The partition the host's DNS suffix belongs to.
    pub partition: &'static str,
}

/// The DNS suffixes of STS endpoints (regional and dual-stack) by partition.
const STS_SUFFIXES: [(&str, &str); 14] = [
    ("amazonaws.com", "aws"),
    ("api.aws", "aws"),
    ("amazonaws.com.cn", "aws-cn"),
    ("api.amazonwebservices.com.cn", "aws-cn"),
    ("c2s.ic.gov", "aws-iso"),
    ("api.aws.ic.gov", "aws-iso"),
    ("sc2s.sgov.gov", "aws-iso-b"),
    ("api.aws.scloud", "aws-iso-b"),
    ("cloud.adc-e.uk", "aws-iso-e"),
    ("api.cloud-aws.adc-e.uk", "aws-iso-e"),
    ("csp.hci.ic.gov", "aws-iso-f"),
    ("api.aws.hci.ic.gov", "aws-iso-f"),
    ("amazonaws.eu", "aws-eusc"),
    ("api.amazonwebservices.eu", "aws-eusc"),
];

/// The endpoint a request's `Host` names, if it is a real STS host name
/// (`sts[-fips].{region}.{suffix}` or `sts.amazonaws.com`); `None` for the
/// loopback addresses tests usually use, which accept any region.
pub fn endpoint_for_host(headers: &HeaderMap) -> Option<HostEndpoint> {
    let host = headers.get("host")?.to_str().ok()?.to_ascii_lowercase();
    let host = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
    if host == "sts.amazonaws.com" {
        return Some(HostEndpoint {
            region: "us-east-1".into(),
            partition: "aws",
        });
    }
    let rest = host
        .strip_prefix("sts.")
        .or_else(|| host.strip_prefix("sts-fips."))?;
    let (region, suffix) = rest.split_once('.')?;
    let (_, mut partition) = STS_SUFFIXES.iter().find(|(s, _)| *s == suffix)?;
    // GovCloud shares the `aws` partition's suffixes.
    if partition == "aws" && region.starts_with("us-gov-") {
        partition = "aws-us-gov";
    }
    Some(HostEndpoint {
        region: region.to_string(),
        partition,
    })
}

/// A regional STS endpoint takes only signatures scoped to its own region (the
/// global one: `us-east-1`).
fn check_scope_region(req: &SignedRequest<'_>, endpoint: &HostEndpoint) -> Result<(), StsError> {
    let scoped = sigv4::scope_region(req.headers).unwrap_or_default();
    if scoped == endpoint.region {
        Ok(())
    } else {
        Err(SigV4Error::SignatureDoesNotMatch(
            "Credential should be scoped to a valid region. ".into(),
        )
        .into())
    }
}

/// `arn:aws:...` in `partition` (`arn:aws-cn:...`), as STS in that partition names it.
fn in_partition(arn: &str, partition: &str) -> String {
    match arn.strip_prefix("arn:aws:") {
        Some(rest) => format!("arn:{partition}:{rest}"),
        None => arn.to_string(),
    }
}

/// The signing credential, once its signature, session token and expiry check out.
/// Also how Google STS verifies an AWS subject token (`crate::cloud::gcp::sts`).
pub(crate) fn authenticate(
    cloud: &MockCloud,
    req: &SignedRequest<'_>,
) -> Result<AwsCredential, StsError> {
    let now = cloud.now_unix();
    let lookup = |akid: &str| cloud.credential(akid).map(|c| c.secret_access_key);
    let signer = sigv4::verify(req, "sts", lookup, now)?;
    let cred = cloud
        .credential(&signer.access_key_id)
        .ok_or(SigV4Error::InvalidClientTokenId)?;
    check_session_token(&cred, req.headers)?;
    if cred.expires.is_some_and(|exp| exp <= now) {
        return Err(StsError::ExpiredToken);
    }
    Ok(cred)
}

/// Session keys need their own token; long-term keys must not carry one.
fn check_session_token(cred: &AwsCredential, headers: &HeaderMap) -> Result<(), SigV4Error> {
    let presented = headers.get("x-amz-security-token").map(|v| v.as_bytes());
    let ok = match (&cred.session_token, presented) {
        (Some(expected), Some(got)) => constant_time_eq(expected.as_bytes(), got),
        (None, None) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(SigV4Error::InvalidClientTokenId)
    }
}

fn get_caller_identity(cloud: &MockCloud, caller: &AwsCredential) -> Result<String, StsError> {
    cloud.record_sts_call(StsCall::new(Action::GetCallerIdentity, Some(caller)));
    Ok(format!(
        "<Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>",
        xml_escape(&caller.arn),
        xml_escape(&caller.user_id),
        xml_escape(&caller.account)
    ))
}

fn get_session_token(
    cloud: &MockCloud,
    caller: &AwsCredential,
    params: &Params,
) -> Result<String, StsError> {
    if caller.session_token.is_some() {
        return Err(StsError::AccessDenied(
            "Cannot call GetSessionToken with session credentials".into(),
        ));
    }
    let duration = duration_seconds(params, 900, 129_600)?;
    let ttl = session_ttl(cloud, duration, 43_200);
    let cred = cloud.issue_session_for(&caller.arn, &caller.user_id, &caller.account, ttl);
    let mut call = StsCall::new(Action::GetSessionToken, Some(caller));
    call.duration_seconds = duration;
    call.issued_access_key_id = Some(cred.access_key_id.clone());
    cloud.record_sts_call(call);
    Ok(credentials_xml(&cred))
}

fn assume_role(
    cloud: &MockCloud,
    caller: &AwsCredential,
    params: &Params,
) -> Result<String, StsError> {
    let role = RoleArn::parse(params.required("RoleArn", "roleArn")?)?;
    let session = role_session_name(params)?;
    let duration = duration_seconds(params, 900, 43_200)?;
    if caller.arn.contains(":assumed-role/") && duration.is_some_and(|d| d > 3600) {
        return Err(StsError::Validation(
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.".into(),
        ));
    }
    let external_id = external_id(params)?;
    let policy = session_policy(params)?;
    let policy_arns = policy_arns(params)?;
    if !role_assumable(cloud, &role) || !external_id_matches(cloud, &role, external_id) {
        return Err(StsError::AccessDenied(format!(
            "User: {} is not authorized to perform: sts:AssumeRole on resource: {}",
            caller.arn, role.arn
        )));
    }
    let (user, cred) = issue_role_session(cloud, &role, session, duration);
    let mut call = StsCall::new(Action::AssumeRole, Some(caller));
    call.role_arn = Some(role.arn.clone());
    call.role_session_name = Some(session.to_string());
    call.duration_seconds = duration;
    call.external_id = external_id.map(str::to_string);
    call.policy_arns = policy_arns;
    call.issued_access_key_id = Some(cred.access_key_id.clone());
    let packed = policy.as_ref().map(|(raw, _)| packed_policy_size(raw));
    call.policy = policy.map(|(_, parsed)| parsed);
    cloud.record_sts_call(call);
    let mut xml = user + &credentials_xml(&cred);
    if let Some(size) = packed {
        xml.push_str(&format!("<PackedPolicySize>{size}</PackedPolicySize>"));
    }
    Ok(xml)
}

fn assume_role_with_web_identity(cloud: &MockCloud, params: &Params) -> Result<String, StsError> {
    let role = RoleArn::parse(params.required("RoleArn", "roleArn")?)?;
    let session = role_session_name(params)?;
    let token = params.required("WebIdentityToken", "webIdentityToken")?;
    if !(4..=20_000).contains(&token.len()) {
        return Err(StsError::validation(
            "webIdentityToken",
            Some("***"),
            "Member must have length between 4 and 20000",
        ));
    }
    let duration = duration_seconds(params, 900, 43_200)?;
    let policy = session_policy(params)?;
    let policy_arns = policy_arns(params)?;
    let identity = verify_web_identity(cloud, token)?;
    if !role_assumable(cloud, &role) {
        return Err(StsError::AccessDenied(
            "Not authorized to perform sts:AssumeRoleWithWebIdentity".into(),
        ));
    }
    let (user, cred) = issue_role_session(cloud, &role, session, duration);
    let mut call = StsCall::new(Action::AssumeRoleWithWebIdentity, None);
    call.role_arn = Some(role.arn.clone());
    call.role_session_name = Some(session.to_string());
    call.duration_seconds = duration;
    call.policy_arns = policy_arns;
    call.web_identity_subject = Some(identity.subject.clone());
    call.issued_access_key_id = Some(cred.access_key_id.clone());
    let packed = policy.as_ref().map(|(raw, _)| packed_policy_size(raw));
    call.policy = policy.map(|(_, parsed)| parsed);
    cloud.record_sts_call(call);
    let mut xml = format!(
        "<SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken><Audience>{}</Audience>",
        xml_escape(&identity.subject),
        xml_escape(&identity.audience)
    );
    xml.push_str(&user);
    xml.push_str(&credentials_xml(&cred));
    if let Some(size) = packed {
        xml.push_str(&format!("<PackedPolicySize>{size}</PackedPolicySize>"));
    }
    xml.push_str(&format!(
        "<Provider>{}</Provider>",
        xml_escape(&identity.provider(&role.account))
    ));
    Ok(xml)
}

/// A parsed `arn:{partition}:iam::{account}:role/{path/}{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RoleArn {
    arn: String,
    partition: String,
    account: String,
    name: String,
}

impl RoleArn {
    fn parse(arn: &str) -> Result<Self, StsError> {
        Self::try_parse(arn).ok_or_else(|| {
            if arn.len() < 20 {
                StsError::validation(
                    "roleArn",
                    Some(arn),
                    "Member must have length greater than or equal to 20",
                )
            } else {
                StsError::Validation(format!("{arn} is invalid"))
            }
        })
    }

    fn try_parse(arn: &str) -> Option<Self> {
        if arn.len() > 2048 {
            return None;
        }
        let rest = arn.strip_prefix("arn:")?;
        let (partition, rest) = rest.split_once(':')?;
        if !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") {
            return None;
        }
        let rest = rest.strip_prefix("iam::")?;
        let (account, resource) = rest.split_once(':')?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let path_and_name = resource.strip_prefix("role/")?;
        let name = path_and_name.rsplit('/').next()?;
        let name_ok = (1..=64).contains(&name.len()) && name.chars().all(is_name_char);
        let path_ok = path_and_name
            .split('/')
            .all(|seg| !seg.is_empty() && seg.chars().all(|c| is_name_char(c) || c == '/'));
        (name_ok && path_ok).then(|| Self {
            arn: arn.to_string(),
            partition: partition.to_string(),
            account: account.to_string(),
            name: name.to_string(),
        })
    }
}

/// `[\w+=,.@-]`, the characters of role, user and session names.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

fn role_session_name(params: &Params) -> Result<&str, StsError> {
    let name = params.required("RoleSessionName", "roleSessionName")?;
    if !(2..=64).contains(&name.len()) {
        return Err(StsError::validation(
            "roleSessionName",
            Some(name),
            "Member must have length between 2 and 64",
        ));
    }
    if !name.chars().all(is_name_char) {
        return Err(StsError::validation(
            "roleSessionName",
            Some(name),
            r"Member must satisfy regular expression pattern: [\w+=,.@-]*",
        ));
    }
    Ok(name)
}

fn duration_seconds(params: &Params, min: u64, max: u64) -> Result<Option<u64>, StsError> {
    let Some(raw) = params.get("DurationSeconds") else {
        return Ok(None);
    };
    let value: u64 = raw.trim().parse().map_err(|_| {
        StsError::validation("durationSeconds", Some(raw), "Member must be an integer")
    })?;
    if value < min {
        return Err(StsError::validation(
            "durationSeconds",
            Some(raw),
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if value > max {
        return Err(StsError::validation(
            "durationSeconds",
            Some(raw),
            &format!("Member must have value less than or equal to {max}"),
        ));
    }
    Ok(Some(value))
}

/// The lifetime of issued credentials: what was asked for (or STS's default), but
/// never longer than the mock cloud's `token_ttl`, so tests that shorten it to
/// exercise refresh get short-lived credentials from every path.
fn session_ttl(cloud: &MockCloud, requested: Option<u64>, default: u64) -> Duration {
    let ttl = cloud.config().token_ttl;
    Duration::from_secs(requested.unwrap_or(default)).min(ttl)
}

fn external_id(params: &Params) -> Result<Option<&str>, StsError> {
    let Some(id) = params.get("ExternalId") else {
        return Ok(None);
    };
    if !(2..=1224).contains(&id.len()) {
        return Err(StsError::validation(
            "externalId",
            Some(id),
            "Member must have length between 2 and 1224",
        ));
    }
    if !id.chars().all(|c| is_name_char(c) || c == ':' || c == '/') {
        return Err(StsError::validation(
            "externalId",
            Some(id),
            r"Member must satisfy regular expression pattern: [\w+=,.@:\/-]*",
        ));
    }
    Ok(Some(id))
}

/// The `Policy` parameter, raw and parsed: at most 2048 characters, a JSON object
/// with a `Statement`.
fn session_policy(params: &Params) -> Result<Option<(String, Value)>, StsError> {
    let Some(raw) = params.get("Policy") else {
        return Ok(None);
    };
    if raw.chars().count() > MAX_POLICY_CHARS {
        return Err(StsError::validation(
            "policy",
            Some("..."),
            &format!("Member must have length less than or equal to {MAX_POLICY_CHARS}"),
        ));
    }
    let parsed: Value = serde_json::from_str(raw).map_err(|_| {
        StsError::MalformedPolicyDocument("The policy is not in the valid JSON format.".into())
    })?;
    let statement_ok = parsed
        .get("Statement")
        .is_some_and(|s| s.is_array() || s.is_object());
    if !statement_ok {
        return Err(StsError::MalformedPolicyDocument(
            "Syntax errors in policy.".into(),
        ));
    }
    Ok(Some((raw.to_string(), parsed)))
}

/// `PolicyArns.member.N.arn`, N from 1, at most 10.
fn policy_arns(params: &Params) -> Result<Vec<String>, StsError> {
    let mut arns = Vec::new();
    for n in 1.. {
        let Some(arn) = params.get(&format!("PolicyArns.member.{n}.arn")) else {
            break;
        };
        if n > 10 {
            return Err(StsError::validation(
                "policyArns",
                None,
                "Member must have length less than or equal to 10",
            ));
        }
        if !(arn.starts_with("arn:aws:iam::") && arn.contains(":policy/")) {
            return Err(StsError::Validation(format!("{arn} is invalid")));
        }
        arns.push(arn.to_string());
    }
    Ok(arns)
}

/// The percentage of the packed-policy allowance a policy uses (STS compresses;
/// the mock approximates by length).
fn packed_policy_size(raw: &str) -> usize {
    raw.len()
        .saturating_mul(100)
        .div_ceil(MAX_POLICY_CHARS.saturating_mul(2))
        .max(1)
}

/// Whether the configured `assumable_roles` (empty = any) allow `role`.
fn role_assumable(cloud: &MockCloud, role: &RoleArn) -> bool {
    let allowed = cloud
        .config()
        .aws
        .map(|a| a.assumable_roles)
        .unwrap_or_default();
    allowed.is_empty() || allowed.contains(&role.arn)
}

/// A trust policy's `sts:ExternalId` condition: roles without one accept any (or
/// no) external id; the others only theirs (STS answers the same AccessDenied).
fn external_id_matches(cloud: &MockCloud, role: &RoleArn, sent: Option<&str>) -> bool {
    let required = cloud
        .config()
        .aws
        .and_then(|a| a.role_external_ids.get(&role.arn).cloned());
    match required {
        None => true,
        Some(id) => sent.is_some_and(|s| constant_time_eq(s.as_bytes(), id.as_bytes())),
    }
}

/// Issues `assumed-role/{name}/{session}` credentials; returns the
/// `<AssumedRoleUser>` XML and the credential.
fn issue_role_session(
    cloud: &MockCloud,
    role: &RoleArn,
    session: &str,
    duration: Option<u64>,
) -> (String, AwsCredential) {
    let arn = assumed_role_arn(&role.account, &role.name, session).replacen(
        "arn:aws:",
        &format!("arn:{}:", role.partition),
        1,
    );
    let user_id = format!("{}:{session}", role_unique_id(&role.arn));
    let ttl = session_ttl(cloud, duration, 3600);
    let cred = cloud.issue_session_for(&arn, &user_id, &role.account, ttl);
    let xml = format!(
        "<AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser>",
        xml_escape(&user_id),
        xml_escape(&arn)
    );
    (xml, cred)
}

fn credentials_xml(cred: &AwsCredential) -> String {
    format!(
        "<Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials>",
        xml_escape(&cred.access_key_id),
        xml_escape(&cred.secret_access_key),
        xml_escape(cred.session_token.as_deref().unwrap_or("")),
        rfc3339(cred.expires.unwrap_or(0))
    )
}

/// What a verified web identity token established.
#[derive(Debug, Clone)]
struct WebIdentity {
    issuer: String,
    subject: String,
    audience: String,
    google: bool,
}

impl WebIdentity {
    /// `accounts.google.com` for Google; otherwise the IAM OIDC provider's ARN.
    fn provider(&self, account: &str) -> String {
        if self.google {
            return "accounts.google.com".into();
        }
        let host_path = self
            .issuer
            .trim_start_matches("https://")
            .trim_end_matches('/');
        format!("arn:aws:iam::{account}:oidc-provider/{host_path}")
    }
}

/// Which mock issuer signed a token, by `kid`, and whether its `iss` is one that
/// issuer uses.
fn issuer_for(cloud: &MockCloud, kid: &str, iss: &str) -> Option<(crate::keys::Issuer, bool)> {
    use crate::keys::Issuer;
    let keys = cloud.keys();
    [Issuer::Eks, Issuer::Google, Issuer::Azure]
        .into_iter()
        .find(|i| keys.get(*i).kid() == kid)
        .map(|i| {
            let iss_ok = match i {
                Issuer::Eks => iss == EKS_ISSUER || iss == AKS_ISSUER,
                Issuer::Google => {
                    iss == "https://accounts.google.com" || iss == "accounts.google.com"
                }
                _ => {
                    iss.starts_with("https://login.microsoftonline.com/")
                        || iss.starts_with("https://sts.windows.net/")
                }
            };
            (i, iss_ok)
        })
}

fn verify_web_identity(cloud: &MockCloud, token: &str) -> Result<WebIdentity, StsError> {
    let not_jwt = || {
        StsError::InvalidIdentityToken(
            "The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)".into(),
        )
    };
    let header = jsonwebtoken::decode_header(token).map_err(|_| not_jwt())?;
    let peeked = crate::keys::peek_claims(token).ok_or_else(not_jwt)?;
    let iss = peeked.get("iss").and_then(Value::as_str).unwrap_or("");
    let (issuer, iss_ok) = issuer_for(cloud, header.kid.as_deref().unwrap_or(""), iss)
        .ok_or_else(|| {
            StsError::InvalidIdentityToken(
                "Couldn't retrieve verification key from your identity provider,  please reference AssumeRoleWithWebIdentity documentation for requirements".into(),
            )
        })?;
    if !iss_ok {
        return Err(StsError::InvalidIdentityToken(format!(
            "No OpenIDConnect provider found in your account for {iss}"
        )));
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let claims: Value = cloud
        .keys()
        .get(issuer)
        .verify(token, &validation)
        .map_err(|e| web_identity_error(&e, &peeked))?;
    let audience = match claims.get("aud") {
        Some(Value::String(a)) => Some(a.clone()),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
    .ok_or_else(|| StsError::InvalidIdentityToken("Incorrect token audience".into()))?;
    Ok(WebIdentity {
        issuer: iss.to_string(),
        subject: claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        audience,
        google: issuer == crate::keys::Issuer::Google,
    })
}

fn web_identity_error(err: &jsonwebtoken::errors::Error, claims: &Value) -> StsError {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::ExpiredSignature => StsError::ExpiredWebIdentityToken(format!(
            "Token expired: current date/time {} must be before the expiration date/time {}",
            now_unix(),
            claims.get("exp").and_then(Value::as_u64).unwrap_or(0)
        )),
        ErrorKind::ImmatureSignature => {
            StsError::InvalidIdentityToken("Token is not yet valid (nbf is in the future)".into())
        }
        ErrorKind::MissingRequiredClaim(c) => {
            StsError::InvalidIdentityToken(format!("The token is missing the '{c}' claim"))
        }
        _ => StsError::InvalidIdentityToken(
            "The web identity token that was passed could not be validated by AWS. Get a new identity token from the identity provider and then retry the request.".into(),
        ),
    }
}

/// A UUID-shaped request id, as STS sends.
fn request_id() -> String {
    let h = crate::util::random_hex(16);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    resp
}

fn success_response(action: Action, result: &str, request_id: &str) -> Response {
    let name = action.name();
    let body = format!(
        "<{name}Response xmlns=\"{NAMESPACE}\">\n  <{name}Result>{result}</{name}Result>\n  <ResponseMetadata>\n    <RequestId>{request_id}</RequestId>\n  </ResponseMetadata>\n</{name}Response>\n"
    );
    xml_response(StatusCode::OK, body, request_id)
}

fn error_response(err: &StsError, request_id: &str) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let body = format!(
        "<ErrorResponse xmlns=\"{NAMESPACE}\">\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{}</Code>\n    <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
        err.code(),
        xml_escape(&err.to_string())
    );
    xml_response(status, body, request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn role_arns() {
        let r = RoleArn::parse("arn:aws:iam::123456789012:role/path/to/App-Role").unwrap();
        assert_eq!(r.account, "123456789012");
        assert_eq!(r.name, "App-Role");
        assert_eq!(r.partition, "aws");
        for bad in [
            "arn:aws:iam::12345678901:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:sts::123456789012:role/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
            "arn:foo:iam::123456789012:role/x",
            "short",
        ] {
            let err = RoleArn::parse(bad).unwrap_err();
            assert_eq!(err.code(), "ValidationError", "{bad}");
        }
    }

    #[test]
    fn session_names() {
        assert!(role_session_name(&params(&[("RoleSessionName", "s2iam-session")])).is_ok());
        assert!(role_session_name(&params(&[("RoleSessionName", "a+b=c,d.e@f_g-1")])).is_ok());
        for bad in ["a", "has space", "slash/no", &"x".repeat(65)] {
            let err = role_session_name(&params(&[("RoleSessionName", bad)])).unwrap_err();
            assert_eq!(err.code(), "ValidationError", "{bad}");
        }
        let err = role_session_name(&params(&[])).unwrap_err();
        assert!(err.to_string().contains("Value null at 'roleSessionName'"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration_seconds(&params(&[]), 900, 43200).unwrap(), None);
        assert_eq!(
            duration_seconds(&params(&[("DurationSeconds", "900")]), 900, 43200).unwrap(),
            Some(900)
        );
        for bad in ["899", "43201", "abc", "-1", ""] {
            assert!(duration_seconds(&params(&[("DurationSeconds", bad)]), 900, 43200).is_err());
        }
    }

    #[test]
    fn policies() {
        let ok = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
        let (raw, parsed) = session_policy(&params(&[("Policy", ok)])).unwrap().unwrap();
        assert_eq!(raw, ok);
        assert_eq!(parsed["Statement"][0]["Action"], "s3:GetObject");
        let err = session_policy(&params(&[("Policy", "{not json")])).unwrap_err();
        assert_eq!(err.code(), "MalformedPolicyDocument");
        let err =
            session_policy(&params(&[("Policy", "{\"Version\":\"2012-10-17\"}")])).unwrap_err();
        assert_eq!(err.code(), "MalformedPolicyDocument");
        let long = format!("{{\"Statement\":[],\"x\":\"{}\"}}", "a".repeat(2100));
        assert_eq!(
            session_policy(&params(&[("Policy", &long)]))
                .unwrap_err()
                .code(),
            "ValidationError"
        );
    }

    #[test]
    fn external_ids() {
        assert_eq!(
            external_id(&params(&[("ExternalId", "abc:def/1")])).unwrap(),
            Some("abc:def/1")
        );
        assert!(external_id(&params(&[("ExternalId", "a")])).is_err());
        assert!(external_id(&params(&[("ExternalId", "a b")])).is_err());
    }

    #[test]
    fn actions_and_versions() {
        assert_eq!(
            params(&[("Action", "GetCallerIdentity"), ("Version", VERSION)])
                .action()
                .unwrap(),
            Action::GetCallerIdentity
        );
        assert_eq!(params(&[]).action().unwrap_err().code(), "MissingAction");
        let err = params(&[("Action", "GetCallerIdentity")])
            .action()
            .unwrap_err();
        assert_eq!(err.code(), "InvalidAction");
        assert!(err.to_string().contains("NO_VERSION_SPECIFIED"));
        let err = params(&[("Action", "Nope"), ("Version", VERSION)])
            .action()
            .unwrap_err();
        assert_eq!(err.code(), "InvalidAction");
    }

    #[test]
    fn error_body_shape() {
        let resp = error_response(&StsError::ExpiredToken, "rid-1");
        assert_eq!(resp.status(), 400);
        assert_eq!(resp.headers()["content-type"], "text/xml");
        assert_eq!(resp.headers()["x-amzn-requestid"], "rid-1");
    }

    #[test]
    fn escaping() {
        assert_eq!(xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(request_id().len(), 36);
    }
}
