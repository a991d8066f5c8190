//! The EC2 instance metadata service (IMDS) and the container credential endpoints,
//! as an instance, an ECS task or an EKS pod sees them. Everything here answers 404
//! unless [`CloudConfig::aws`](super::CloudConfig) is set.
//!
//! IMDS (`/latest/...`), every body `text/plain` like the real one (errors are its
//! small XHTML pages, `text/html`):
//! - `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 1..=21600`
//!   returns a session token, echoing the TTL header. No or bad TTL: 400; a request
//!   carrying `X-Forwarded-For` (i.e. one that came through a proxy): 403; any other
//!   method: 405.
//! - `GET` metadata with `X-aws-ec2-metadata-token: <token>` (IMDSv2), or without it
//!   when `imds_v1` is on (IMDSv1). An invalid token is always 401; no token with
//!   IMDSv1 off (`HttpTokens=required`) is 401. Paths: `meta-data/` (listing),
//!   `meta-data/{ami-id,hostname,instance-id,instance-type,local-hostname,local-ipv4}`,
//!   `meta-data/placement/{,region,availability-zone}`, `meta-data/iam/{,info}`,
//!   `meta-data/iam/security-credentials/` (the role name) and
//!   `meta-data/iam/security-credentials/{role}` →
//!   `{"Code":"Success","LastUpdated","Type":"AWS-HMAC","AccessKeyId","SecretAccessKey","Token","Expiration"}`,
//!   `dynamic/instance-identity/{,document}`. Without a role the `iam/` paths are 404.
//!
//! Container credentials, both answering
//! `{"AccessKeyId","SecretAccessKey","Token","Expiration","RoleArn","AccountId"}`:
//! - ECS: `GET /v2/credentials/{id}` (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`), no
//!   authentication (the link-local address is the protection);
//! - EKS Pod Identity: `GET /v1/credentials` (`AWS_CONTAINER_CREDENTIALS_FULL_URI`)
//!   with `Authorization: <container_auth_token>` (the raw token, no `Bearer`); a
//!   missing or wrong one is 401 `{"code","message"}`.
//!
//! Role credentials are issued through the mock STS's credential store, so they sign
//! requests the mock STS accepts. Repeated reads return the same keys until they are
//! within a quarter of their lifetime of expiring, as the real services rotate ahead
//! of expiry.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde::Serialize;

pub mod sigv4;
pub mod sso;
pub mod sts;

use super::{AwsCredential, AwsIdentity, MockCloud, KEY_ALPHABET};
use crate::util::{now_unix, rfc3339};

/// The header that asks for (and reports) an IMDSv2 session token's lifetime.
pub const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The header carrying an IMDSv2 session token.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// Longest IMDSv2 session token lifetime (6 hours).
pub const MAX_TOKEN_TTL_SECS: u64 = 21_600;

const AMI_ID: &str = "ami-0abcdef1234567890";
const INSTANCE_TYPE: &str = "t3.micro";
const PRIVATE_IP: &str = "10.0.0.12";

/// AWS-side state: when the instance "launched" and the role sessions handed out.
pub(crate) struct AwsState {
    launched: u64,
    /// Current session per session ARN, with its issue time.
    sessions: Mutex<HashMap<String, (AwsCredential, u64)>>,
}

impl Default for AwsState {
    fn default() -> Self {
        Self {
            launched: now_unix(),
            sessions: Mutex::new(HashMap::new()),
        }
    }
}

impl MockCloud {
    /// The role session currently handed out for `arn`: reused while more than a
    /// quarter of the configured lifetime is left (and no longer than the current
    /// TTL allows, so shortening `token_ttl` takes effect at once), else a new one.
    /// Returns the credential and when it was issued.
    pub(crate) fn current_role_session(
        &self,
        arn: &str,
        user_id: &str,
        account: &str,
    ) -> (AwsCredential, u64) {
        let ttl = self.config().token_ttl.as_secs();
        let now = self.now_unix();
        let mut sessions = self
            .inner
            .aws
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((cred, issued)) = sessions.get(arn) {
            let left = cred.expires.unwrap_or(0).saturating_sub(now);
            if left > ttl / 4 && left <= ttl && cred.user_id == user_id {
                return (cred.clone(), *issued);
            }
        }
        let cred = self.issue_session(arn, user_id, account);
        sessions.insert(arn.to_string(), (cred.clone(), now));
        (cred, now)
    }
}

/// A role's unique id (`AROA...`), stable for a given role ARN like the real one.
pub fn role_unique_id(role_arn: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(role_arn.as_bytes());
    let id: String = digest
        .iter()
        .take(17)
        .filter_map(|b| KEY_ALPHABET.get(usize::from(*b).checked_rem(KEY_ALPHABET.len())?))
        .map(|c| char::from(*c))
        .collect();
    format!("AROA{id}")
}

/// `arn:aws:iam::{account}:role/{name}`.
pub fn role_arn(account: &str, role: &str) -> String {
    format!("arn:aws:iam::{account}:role/{role}")
}

/// `arn:aws:sts::{account}:assumed-role/{name}/{session}`.
pub fn assumed_role_arn(account: &str, role: &str, session: &str) -> String {
    format!("arn:aws:sts::{account}:assumed-role/{role}/{session}")
}

/// The EC2 IMDS and ECS container-credentials routes.
pub fn routes() -> Router<MockCloud> {
    Router::new()
        .route("/latest/api/token", any(imds_token))
        .route("/latest", any(imds_get_root))
        .route("/latest/", any(imds_get_root))
        .route("/latest/{*path}", any(imds_get))
        .route("/v2/credentials/{id}", any(ecs_credentials))
        .route("/v1/credentials", any(pod_identity_credentials))
        .merge(sso::routes())
}

/// The page real IMDS answers errors with.
fn imds_error(status: StatusCode) -> Response {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
         <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
         \t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n \
         <head>\n  <title>{code} - {reason}</title>\n </head>\n \
         <body>\n  <h1>{code} - {reason}</h1>\n </body>\n</html>\n"
    );
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    resp
}

fn text(body: impl Into<String>) -> Response {
    let mut resp = (StatusCode::OK, body.into()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// `PUT /latest/api/token`.
async fn imds_token(
    State(cloud): State<MockCloud>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if cloud.config().aws.is_none() {
        return imds_error(StatusCode::NOT_FOUND);
    }
    if method != Method::PUT {
        let mut resp = imds_error(StatusCode::METHOD_NOT_ALLOWED);
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("PUT"));
        return resp;
    }
    if headers.contains_key("x-forwarded-for") {
        return imds_error(StatusCode::FORBIDDEN);
    }
    let Some(ttl) = requested_token_ttl(&headers) else {
        return imds_error(StatusCode::BAD_REQUEST);
    };
    let mut resp = text(cloud.issue_imds_token(ttl));
    resp.headers_mut()
        .insert(TOKEN_TTL_HEADER, HeaderValue::from(ttl));
    resp
}

/// The TTL an IMDSv2 token request asks for, if it is a whole number of seconds in
/// `1..=21600`.
fn requested_token_ttl(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(TOKEN_TTL_HEADER)?.to_str().ok()?.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse::<u64>()
        .ok()
        .filter(|ttl| (1..=MAX_TOKEN_TTL_SECS).contains(ttl))
}

/// `GET /latest` and `/latest/`: the API versions' sub-trees.
async fn imds_get_root(
    State(cloud): State<MockCloud>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    serve_metadata(&cloud, &method, &headers, "")
}

/// `GET /latest/{path}`.
async fn imds_get(
    State(cloud): State<MockCloud>,
    method: Method,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    serve_metadata(&cloud, &method, &headers, &path)
}

fn serve_metadata(cloud: &MockCloud, method: &Method, headers: &HeaderMap, path: &str) -> Response {
    let Some(aws) = cloud.config().aws else {
        return imds_error(StatusCode::NOT_FOUND);
    };
    if method != Method::GET && method != Method::HEAD {
        return imds_error(StatusCode::METHOD_NOT_ALLOWED);
    }
    if let Err(status) = check_imds_session(cloud, &aws, headers) {
        return imds_error(status);
    }
    match metadata(cloud, &aws, path) {
        Some(body) => text(body),
        None => imds_error(StatusCode::NOT_FOUND),
    }
}

/// IMDSv2 token check: a presented token must be live; no token is IMDSv1, which
/// only an instance with `imds_v1` allows.
fn check_imds_session(
    cloud: &MockCloud,
    aws: &AwsIdentity,
    headers: &HeaderMap,
) -> Result<(), StatusCode> {
    match headers.get(TOKEN_HEADER) {
        Some(value) => {
            let valid = value
                .to_str()
                .ok()
                .is_some_and(|t| cloud.imds_token_valid(t.trim()));
            if valid {
                Ok(())
            } else {
                Err(StatusCode::UNAUTHORIZED)
            }
        }
        None if aws.imds_v1 => Ok(()),
        None => Err(StatusCode::UNAUTHORIZED),
    }
}

/// The body of one metadata path (relative to `/latest/`), or `None` for 404.
fn metadata(cloud: &MockCloud, aws: &AwsIdentity, path: &str) -> Option<String> {
    let role = aws.role_name.as_deref();
    let value = match path {
        "" => "dynamic\nmeta-data\n".to_string(),
        "meta-data" | "meta-data/" => meta_data_listing(role.is_some()),
        "meta-data/ami-id" => AMI_ID.to_string(),
        "meta-data/instance-id" => aws.instance_id.clone(),
        "meta-data/instance-type" => INSTANCE_TYPE.to_string(),
        "meta-data/local-ipv4" => PRIVATE_IP.to_string(),
        "meta-data/hostname" | "meta-data/local-hostname" => private_dns_name(&aws.region),
        "meta-data/placement" | "meta-data/placement/" => "availability-zone\nregion".into(),
        "meta-data/placement/region" => aws.region.clone(),
        "meta-data/placement/availability-zone" => aws.availability_zone.clone(),
        "meta-data/iam" | "meta-data/iam/" => {
            role?;
            "info\nsecurity-credentials/".to_string()
        }
        "meta-data/iam/info" => iam_info(cloud, aws, role?),
        "meta-data/iam/security-credentials" | "meta-data/iam/security-credentials/" => {
            role?.to_string()
        }
        "dynamic" | "dynamic/" => "instance-identity/".to_string(),
        "dynamic/instance-identity" | "dynamic/instance-identity/" => "document".to_string(),
        "dynamic/instance-identity/document" => identity_document(cloud, aws),
        other => {
            let requested = other.strip_prefix("meta-data/iam/security-credentials/")?;
            let role = role.filter(|r| *r == requested.trim_end_matches('/'))?;
            instance_credentials(cloud, aws, role)
        }
    };
    Some(value)
}

fn meta_data_listing(has_role: bool) -> String {
    let mut entries = vec!["ami-id", "hostname"];
    if has_role {
        entries.push("iam/");
    }
    entries.extend([
        "instance-id",
        "instance-type",
        "local-hostname",
        "local-ipv4",
        "placement/",
    ]);
    entries.join("\n")
}

/// `ip-10-0-0-12.ec2.internal` in us-east-1, `ip-10-0-0-12.{region}.compute.internal`
/// elsewhere.
fn private_dns_name(region: &str) -> String {
    let host = format!("ip-{}", PRIVATE_IP.replace('.', "-"));
    if region == "us-east-1" {
        format!("{host}.ec2.internal")
    } else {
        format!("{host}.{region}.compute.internal")
    }
}

/// `iam/info`: the instance profile the role comes from.
fn iam_info(cloud: &MockCloud, aws: &AwsIdentity, role: &str) -> String {
    let profile_arn = format!("arn:aws:iam::{}:instance-profile/{role}", aws.account_id);
    let profile_id = role_unique_id(&profile_arn).replacen("AROA", "AIPA", 1);
    let (_, issued) = instance_session(cloud, aws, role);
    pretty(&serde_json::json!({
        "Code": "Success",
        "LastUpdated": rfc3339(issued),
        "InstanceProfileArn": profile_arn,
        "InstanceProfileId": profile_id,
    }))
}

/// The instance role's session: `assumed-role/{role}/{instance id}`, user id
/// `AROA...:{instance id}`.
fn instance_session(cloud: &MockCloud, aws: &AwsIdentity, role: &str) -> (AwsCredential, u64) {
    let arn = assumed_role_arn(&aws.account_id, role, &aws.instance_id);
    let user_id = format!(
        "{}:{}",
        role_unique_id(&role_arn(&aws.account_id, role)),
        aws.instance_id
    );
    cloud.current_role_session(&arn, &user_id, &aws.account_id)
}

/// The IMDS credentials document, field for field (and in the same order) as EC2
/// serves it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsCredentials {
    code: &'static str,
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

fn instance_credentials(cloud: &MockCloud, aws: &AwsIdentity, role: &str) -> String {
    let (cred, issued) = instance_session(cloud, aws, role);
    pretty(&ImdsCredentials {
        code: "Success",
        last_updated: rfc3339(issued),
        kind: "AWS-HMAC",
        access_key_id: cred.access_key_id,
        secret_access_key: cred.secret_access_key,
        token: cred.session_token.unwrap_or_default(),
        expiration: rfc3339(cred.expires.unwrap_or(0)),
    })
}

fn identity_document(cloud: &MockCloud, aws: &AwsIdentity) -> String {
    pretty(&serde_json::json!({
        "accountId": aws.account_id,
        "architecture": "x86_64",
        "availabilityZone": aws.availability_zone,
        "billingProducts": null,
        "devpayProductCodes": null,
        "marketplaceProductCodes": null,
        "imageId": AMI_ID,
        "instanceId": aws.instance_id,
        "instanceType": INSTANCE_TYPE,
        "kernelId": null,
        "pendingTime": rfc3339(cloud.inner.aws.launched),
        "privateIp": PRIVATE_IP,
        "ramdiskId": null,
        "region": aws.region,
        "version": "2017-09-30",
    }))
}

fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// What both container endpoints answer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerCredentials {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
    role_arn: String,
    account_id: String,
}

/// A container endpoint's JSON error `{"code","message"}`.
fn container_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}

/// Credentials for the role's session `session_name`.
fn container_credentials(
    cloud: &MockCloud,
    aws: &AwsIdentity,
    role: &str,
    session: &str,
) -> Response {
    let role_arn = role_arn(&aws.account_id, role);
    let arn = assumed_role_arn(&aws.account_id, role, session);
    let user_id = format!("{}:{session}", role_unique_id(&role_arn));
    let (cred, _) = cloud.current_role_session(&arn, &user_id, &aws.account_id);
    axum::Json(ContainerCredentials {
        access_key_id: cred.access_key_id,
        secret_access_key: cred.secret_access_key,
        token: cred.session_token.unwrap_or_default(),
        expiration: rfc3339(cred.expires.unwrap_or(0)),
        role_arn,
        account_id: aws.account_id.clone(),
    })
    .into_response()
}

/// A 32-hex-digit id derived from `seed`, standing in for an ECS task id.
fn stable_hex(seed: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(seed.as_bytes())[..16])
}

/// `GET /v2/credentials/{id}`: the ECS task role (session named after the task).
async fn ecs_credentials(
    State(cloud): State<MockCloud>,
    method: Method,
    Path(_id): Path<String>,
) -> Response {
    let Some(aws) = cloud.config().aws else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if method != Method::GET {
        return container_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "InvalidRequest",
            "only GET is supported",
        );
    }
    let Some(role) = aws.role_name.clone() else {
        return container_error(
            StatusCode::BAD_REQUEST,
            "InvalidIdInRequest",
            "CredentialsV2Request: ID not found",
        );
    };
    let task_id = stable_hex(&format!("ecs-task/{}", aws.instance_id));
    container_credentials(&cloud, &aws, &role, &task_id)
}

/// `GET /v1/credentials`: the EKS Pod Identity Agent.
async fn pod_identity_credentials(
    State(cloud): State<MockCloud>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(aws) = cloud.config().aws else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if method != Method::GET {
        return container_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "InvalidRequest",
            "only GET is supported",
        );
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match presented {
        None => {
            return container_error(
                StatusCode::UNAUTHORIZED,
                "InvalidTokenException",
                "Service account token cannot be empty",
            )
        }
        Some(token) if !constant_time_eq(token.as_bytes(), aws.container_auth_token.as_bytes()) => {
            return container_error(
                StatusCode::UNAUTHORIZED,
                "InvalidTokenException",
                "Service account token cannot be validated",
            )
        }
        Some(_) => {}
    }
    let Some(role) = aws.role_name.clone() else {
        return container_error(
            StatusCode::BAD_REQUEST,
            "ResourceNotFoundException",
            "No Pod Identity Association found for the service account",
        );
    };
    let uuid = stable_hex(&format!("eks-pod/{}", aws.instance_id));
    let session = format!("eks-s2iam-test-s2iam-test-pod-{}", &uuid[..8]);
    container_credentials(&cloud, &aws, &role, &session)
}

/// Compares secrets without leaking where they differ through timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl_headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TOKEN_TTL_HEADER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn token_ttl_bounds() {
        assert_eq!(requested_token_ttl(&ttl_headers("21600")), Some(21600));
        assert_eq!(requested_token_ttl(&ttl_headers("1")), Some(1));
        for bad in ["0", "21601", "-5", "abc", "", "1.5", "+60"] {
            assert_eq!(requested_token_ttl(&ttl_headers(bad)), None, "{bad}");
        }
        assert_eq!(requested_token_ttl(&HeaderMap::new()), None);
    }

    #[test]
    fn role_ids_are_stable_and_aws_shaped() {
        let a = role_unique_id("arn:aws:iam::123456789012:role/x");
        assert_eq!(a, role_unique_id("arn:aws:iam::123456789012:role/x"));
        assert_ne!(a, role_unique_id("arn:aws:iam::123456789012:role/y"));
        assert_eq!(a.len(), 21);
        assert!(a.starts_with("AROA"));
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn hostnames() {
        assert_eq!(private_dns_name("us-east-1"), "ip-10-0-0-12.ec2.internal");
        assert_eq!(
            private_dns_name("eu-west-1"),
            "ip-10-0-0-12.eu-west-1.compute.internal"
        );
    }
}
