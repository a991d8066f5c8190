//! Azure's identity surfaces as a workload sees them: the VM's Instance Metadata
//! Service (IMDS), the App Service / Container Apps identity endpoint, and Azure AD's
//! token endpoint as AKS workload identity uses it.
//!
//! # IMDS: `GET /metadata/...`
//!
//! Answers only while [`CloudConfig::azure`](super::CloudConfig) is set (otherwise a
//! plain 404). Every request needs `Metadata: true`, must not carry
//! `X-Forwarded-For`, and needs an `api-version` query parameter (`YYYY-MM-DD`); all
//! three failures are 400.
//!
//! - `/metadata/instance?api-version=V` → `{"compute": {azEnvironment, location, name,
//!   osType, resourceGroupName, resourceId, subscriptionId, tags, tagsList, vmId,
//!   vmSize, zone, ...}, "network": {"interface": [...]}}`. A sub-path
//!   (`/metadata/instance/compute/location`) selects a node; leaves need
//!   `format=text`. Errors: `{"error": "Bad request. ..."}` (plus `newest-versions` for
//!   api-version errors), 404 `{"error": "Not found"}`.
//! - `/metadata/identity/oauth2/token?api-version=V&resource=R[&client_id=|&object_id=|&msi_res_id=]`
//!   → `{access_token, client_id, expires_in, expires_on, ext_expires_in, not_before,
//!   resource, token_type: "Bearer"}`, every number a string. No selector picks the
//!   system identity, else the only user-assigned one. Errors are OAuth-shaped
//!   `{"error": "invalid_request", "error_description": ...}`; a selector matching
//!   nothing, or no identity at all, is exactly
//!   `{"error":"invalid_request","error_description":"Identity not found"}`, which
//!   clients read as "Azure, but no identity".
//!
//! # App Service: `GET /msi/token?api-version=2019-08-01&resource=R[&client_id=|&principal_id=|&mi_res_id=]`
//!
//! Needs `X-IDENTITY-HEADER` equal to `azure.identity_header` (401 missing, 403
//! wrong). → `{access_token, expires_on (epoch string), resource, token_type,
//! client_id}`; errors `{"statusCode", "message", "correlationId"}`.
//!
//! # Azure AD: `POST /{tenant}/oauth2/v2.0/token`
//!
//! Global, always served. Form `grant_type=client_credentials`, `client_id`,
//! `scope=<resource>/.default`, `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
//! `client_assertion=<AKS service-account token>` (RS256 by the cluster key, `iss`
//! [`AKS_ISSUER`], `aud` containing `api://AzureADTokenExchange`, unexpired). The
//! tenant must be `azure.tenant_id` and the client id one of
//! `azure.workload_client_ids`. → `{token_type: "Bearer", expires_in, ext_expires_in,
//! access_token}` (numbers). Errors are AAD's `{error, error_description: "AADSTSnnn:
//! ...", error_codes, timestamp, trace_id, correlation_id}`, all 400.
//!
//! # Access tokens
//!
//! RS256 JWTs signed with the Azure key, AAD v1 shape: `aud` (the resource, or the
//! scope minus `/.default`), `iss` = `idp` = `https://sts.windows.net/{tenant}/`,
//! `iat`, `nbf`, `exp` (token TTL), `oid` = `sub` = the identity's object id, `tid`,
//! `appid` = its client id, `appidacr` `"2"`, `idtyp` `"app"`, `uti`, `ver` `"1.0"`;
//! managed-identity tokens add `xms_mirid` (the identity's resource id) and, when
//! minted on the VM, `xms_az_rid` (the VM's resource id).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::{AzureIdentity, ManagedIdentity, MockCloud, AKS_ISSUER};
use crate::keys::KeyError;
use crate::util::{now_unix, query_param, random_uuid, rfc3339};

/// The audience AKS projects into workload-identity tokens.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const JSON: &str = "application/json; charset=utf-8";
/// Versions IMDS lists in its api-version errors.
const NEWEST_VERSIONS: [&str; 3] = ["2023-07-01", "2021-12-13", "2021-11-15"];
/// The oldest IMDS api-version.
const OLDEST_API_VERSION: &str = "2017-03-01";
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
const VM_SIZE: &str = "Standard_D2s_v3";

/// The Azure IMDS, App Service and Azure AD routes.
pub fn routes() -> Router<MockCloud> {
    Router::new()
        .route("/metadata", get(imds))
        .route("/metadata/", get(imds))
        .route("/metadata/{*path}", get(imds))
        .route("/msi/token", get(app_service_token))
        .route("/{tenant}/oauth2/v2.0/token", post(aad_token))
}

// ---------------------------------------------------------------------------
// Public helpers
// ---------------------------------------------------------------------------

/// The IMDS access token for `identity` and `resource`; `None` when Azure is off
/// or signing fails.
pub fn mint_managed_identity_token(
    cloud: &MockCloud,
    identity: &ManagedIdentity,
    resource: &str,
) -> Option<String> {
    let config = cloud.config();
    let az = config.azure.as_ref()?;
    let subject = Subject::managed(az, identity);
    let claims = access_token_claims(&subject, resource, now_unix(), ttl(cloud));
    sign(cloud, &claims).ok()
}

/// The ARM resource id of the mock VM (`xms_az_rid`, `compute.resourceId`).
pub fn vm_resource_id(az: &AzureIdentity) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
        az.subscription_id, az.resource_group, az.vm_name
    )
}

// ---------------------------------------------------------------------------
// Access tokens
// ---------------------------------------------------------------------------

/// Who an access token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subject {
    tenant_id: String,
    client_id: String,
    object_id: String,
    mirid: Option<String>,
    az_rid: Option<String>,
}

impl Subject {
    /// A managed identity acting from the mock VM.
    fn managed(az: &AzureIdentity, identity: &ManagedIdentity) -> Self {
        Self {
            tenant_id: az.tenant_id.clone(),
            client_id: identity.client_id.clone(),
            object_id: identity.object_id.clone(),
            mirid: Some(identity.resource_id.clone()),
            az_rid: Some(vm_resource_id(az)),
        }
    }

    /// The identity AKS workload identity federates to: the user-assigned identity
    /// with that client id, or else an app registration whose service-principal
    /// object id is derived from the client id.
    fn workload(az: &AzureIdentity, client_id: &str) -> Self {
        let managed = az
            .user_identities
            .iter()
            .chain(az.system_identity.iter())
            .find(|i| i.client_id.eq_ignore_ascii_case(client_id));
        Self {
            tenant_id: az.tenant_id.clone(),
            client_id: client_id.to_string(),
            object_id: managed
                .map(|i| i.object_id.clone())
                .unwrap_or_else(|| stable_uuid(client_id)),
            mirid: managed.map(|i| i.resource_id.clone()),
            az_rid: None,
        }
    }
}

/// A UUID derived from `seed`, stable across runs.
fn stable_uuid(seed: &str) -> String {
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(format!("s2iam-sp:{seed}").as_bytes()));
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn issuer(tenant_id: &str) -> String {
    format!("https://sts.windows.net/{tenant_id}/")
}

fn access_token_claims(subject: &Subject, audience: &str, now: u64, ttl: u64) -> Value {
    let iss = issuer(&subject.tenant_id);
    let mut claims = json!({
        "aud": audience,
        "iss": iss,
        "iat": now,
        "nbf": now,
        "exp": now.saturating_add(ttl),
        "aio": crate::util::random_hex(24),
        "appid": subject.client_id,
        "appidacr": "2",
        "idp": iss,
        "idtyp": "app",
        "oid": subject.object_id,
        "sub": subject.object_id,
        "tid": subject.tenant_id,
        "uti": crate::util::random_hex(11),
        "ver": "1.0",
    });
    if let Some(mirid) = &subject.mirid {
        claims["xms_mirid"] = json!(mirid);
    }
    if let Some(rid) = &subject.az_rid {
        claims["xms_az_rid"] = json!(rid);
    }
    claims
}

fn ttl(cloud: &MockCloud) -> u64 {
    cloud.config().token_ttl.as_secs()
}

fn sign(cloud: &MockCloud, claims: &Value) -> Result<String, KeyError> {
    cloud.keys().azure.sign(claims)
}

// ---------------------------------------------------------------------------
// Identity selection
// ---------------------------------------------------------------------------

/// How a token request names its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Default,
    ClientId(String),
    ObjectId(String),
    ResourceId(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SelectError {
    #[error("Identity not found")]
    NotFound,
    #[error("Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request")]
    Ambiguous,
    #[error("Only one of {0} may be specified")]
    TooManySelectors(String),
}

/// Reads the selector from `query`, given which parameter names select by what
/// (`client_id`, `object_id`/`principal_id`, `msi_res_id`/`mi_res_id`). Empty values
/// count as absent.
fn parse_selector(
    query: Option<&str>,
    params: &[(&str, SelectorKind)],
) -> Result<Selector, SelectError> {
    let given: Vec<(SelectorKind, String)> = params
        .iter()
        .filter_map(|(name, kind)| {
            query_param(query, name)
                .filter(|v| !v.is_empty())
                .map(|v| (*kind, v))
        })
        .collect();
    match given.as_slice() {
        [] => Ok(Selector::Default),
        [(kind, value)] => Ok(kind.select(value.clone())),
        _ => Err(SelectError::TooManySelectors(
            params
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SelectorKind {
    Client,
    Object,
    Resource,
}

impl SelectorKind {
    fn select(self, value: String) -> Selector {
        match self {
            SelectorKind::Client => Selector::ClientId(value),
            SelectorKind::Object => Selector::ObjectId(value),
            SelectorKind::Resource => Selector::ResourceId(value),
        }
    }
}

/// The identity a request gets: the system identity by default, or the only
/// user-assigned one; a selector must match one of the VM's identities. Ids compare
/// case-insensitively, as Azure's GUIDs and ARM ids do.
fn select_identity(
    az: &AzureIdentity,
    selector: &Selector,
) -> Result<ManagedIdentity, SelectError> {
    let all = || az.system_identity.iter().chain(az.user_identities.iter());
    let found = match selector {
        Selector::Default => {
            return match (&az.system_identity, az.user_identities.as_slice()) {
                (Some(system), _) => Ok(system.clone()),
                (None, [only]) => Ok(only.clone()),
                (None, []) => Err(SelectError::NotFound),
                (None, _) => Err(SelectError::Ambiguous),
            }
        }
        Selector::ClientId(id) => all().find(|i| i.client_id.eq_ignore_ascii_case(id)),
        Selector::ObjectId(id) => all().find(|i| i.object_id.eq_ignore_ascii_case(id)),
        Selector::ResourceId(id) => all().find(|i| i.resource_id.eq_ignore_ascii_case(id)),
    };
    found.cloned().ok_or(SelectError::NotFound)
}

// ---------------------------------------------------------------------------
// IMDS
// ---------------------------------------------------------------------------

/// Which IMDS API a path belongs to; they word their errors differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Instance,
    Identity,
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
}

/// An IMDS error in the API's own shape.
fn imds_error(api: Api, status: StatusCode, message: &str) -> Response {
    match api {
        Api::Instance => json_response(status, &json!({ "error": message })),
        Api::Identity => oauth_error(status, "invalid_request", message),
    }
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// `YYYY-MM-DD` (optionally `-preview`), not older than IMDS itself.
fn valid_api_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let shape_ok = date.len() == 10
        && date.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            _ => c.is_ascii_digit(),
        });
    shape_ok && date >= OLDEST_API_VERSION
}

/// The checks every IMDS request goes through, in the order IMDS applies them; the
/// rejection, if any.
fn imds_rejection(api: Api, headers: &HeaderMap, query: Option<&str>) -> Option<Response> {
    if headers.contains_key("x-forwarded-for") {
        let message = match api {
            Api::Instance => "Bad request. Requests with an X-Forwarded-For header are refused.",
            Api::Identity => "Requests with an X-Forwarded-For header are refused.",
        };
        return Some(imds_error(api, StatusCode::BAD_REQUEST, message));
    }
    if headers.get("metadata").map(|v| v.as_bytes()) != Some(b"true".as_slice()) {
        let message = match api {
            Api::Instance => "Bad request. Required metadata header not specified",
            Api::Identity => "Required metadata header not specified",
        };
        return Some(imds_error(api, StatusCode::BAD_REQUEST, message));
    }
    let version = query_param(query, "api-version").unwrap_or_default();
    if valid_api_version(&version) {
        return None;
    }
    Some(match api {
        Api::Instance => {
            let message = if version.is_empty() {
                "Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds"
            } else {
                "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds"
            };
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": message, "newest-versions": NEWEST_VERSIONS}),
            )
        }
        Api::Identity if version.is_empty() => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        ),
        Api::Identity => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid value for query variable 'api-version'",
        ),
    })
}

async fn imds(State(cloud): State<MockCloud>, uri: Uri, headers: HeaderMap) -> Response {
    let config = cloud.config();
    let Some(az) = config.azure.as_ref() else {
        return (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    };
    let rel = uri
        .path()
        .strip_prefix("/metadata")
        .unwrap_or_default()
        .trim_start_matches('/');
    let query = uri.query();
    let api = if rel.starts_with("identity") {
        Api::Identity
    } else {
        Api::Instance
    };
    if let Some(rejection) = imds_rejection(api, &headers, query) {
        return rejection;
    }
    if rel == "identity/oauth2/token" {
        return imds_token(&cloud, az, query);
    }
    match rel.strip_prefix("instance") {
        Some(sub) if sub.is_empty() || sub.starts_with('/') => instance(az, sub, query),
        _ => imds_error(api, StatusCode::NOT_FOUND, "Not found"),
    }
}

/// The instance document IMDS serves at `/metadata/instance`.
fn instance_document(az: &AzureIdentity) -> Value {
    json!({
        "compute": {
            "azEnvironment": "AzurePublicCloud",
            "isHostCompatibilityLayerVm": "false",
            "location": az.location,
            "name": az.vm_name,
            "offer": "0001-com-ubuntu-server-jammy",
            "osType": "Linux",
            "platformFaultDomain": "0",
            "platformUpdateDomain": "0",
            "provider": "Microsoft.Compute",
            "publisher": "canonical",
            "resourceGroupName": az.resource_group,
            "resourceId": vm_resource_id(az),
            "sku": "22_04-lts-gen2",
            "subscriptionId": az.subscription_id,
            "tags": "",
            "tagsList": [],
            "version": "22.04.202404080",
            "vmId": az.vm_id,
            "vmScaleSetName": "",
            "vmSize": VM_SIZE,
            "zone": "1",
        },
        "network": {
            "interface": [{
                "ipv4": {
                    "ipAddress": [{"privateIpAddress": "10.0.0.4", "publicIpAddress": ""}],
                    "subnet": [{"address": "10.0.0.0", "prefix": "24"}],
                },
                "ipv6": {"ipAddress": []},
                "macAddress": "000D3A1B2C3D",
            }],
        },
    })
}

/// The node of `doc` at `sub` (`/compute/location`, `/network/interface/0`).
fn instance_node<'a>(doc: &'a Value, sub: &str) -> Option<&'a Value> {
    sub.split('/')
        .filter(|s| !s.is_empty())
        .try_fold(doc, |node, segment| match node {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

fn instance(az: &AzureIdentity, sub: &str, query: Option<&str>) -> Response {
    let doc = instance_document(az);
    let Some(node) = instance_node(&doc, sub) else {
        return imds_error(Api::Instance, StatusCode::NOT_FOUND, "Not found");
    };
    let format = query_param(query, "format").unwrap_or_else(|| "json".into());
    let leaf = !matches!(node, Value::Object(_) | Value::Array(_));
    match (leaf, format.as_str()) {
        (false, "json") => json_response(StatusCode::OK, node),
        (true, "text") => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            node.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| node.to_string()),
        )
            .into_response(),
        (true, "json") => imds_error(
            Api::Instance,
            StatusCode::BAD_REQUEST,
            "Bad request. Query parameter 'format' must be 'text' when querying a leaf node",
        ),
        _ => imds_error(
            Api::Instance,
            StatusCode::BAD_REQUEST,
            "Bad request. Query parameter 'format' must be 'json' or 'text'",
        ),
    }
}

const IMDS_SELECTORS: [(&str, SelectorKind); 4] = [
    ("client_id", SelectorKind::Client),
    ("object_id", SelectorKind::Object),
    ("msi_res_id", SelectorKind::Resource),
    ("mi_res_id", SelectorKind::Resource),
];

fn imds_token(cloud: &MockCloud, az: &AzureIdentity, query: Option<&str>) -> Response {
    let resource = query_param(query, "resource").unwrap_or_default();
    if resource.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    }
    let identity = match parse_selector(query, &IMDS_SELECTORS)
        .and_then(|s| select_identity(az, &s))
    {
        Ok(i) => i,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    let (now, ttl) = (now_unix(), ttl(cloud));
    let claims = access_token_claims(&Subject::managed(az, &identity), &resource, now, ttl);
    let Ok(token) = sign(cloud, &claims) else {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknown",
            "signing failed",
        );
    };
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "client_id": identity.client_id,
            "expires_in": ttl.to_string(),
            "expires_on": now.saturating_add(ttl).to_string(),
            "ext_expires_in": ttl.to_string(),
            "not_before": now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}

// ---------------------------------------------------------------------------
// App Service / Container Apps
// ---------------------------------------------------------------------------

const APP_SERVICE_SELECTORS: [(&str, SelectorKind); 4] = [
    ("client_id", SelectorKind::Client),
    ("principal_id", SelectorKind::Object),
    ("object_id", SelectorKind::Object),
    ("mi_res_id", SelectorKind::Resource),
];

fn app_service_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({"statusCode": status.as_u16(), "message": message, "correlationId": random_uuid()}),
    )
}

async fn app_service_token(
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

// ---------------------------------------------------------------------------
// Azure AD token endpoint (workload identity)
// ---------------------------------------------------------------------------

/// An AAD error: `AADSTS{code}: {message}` plus AAD's trace fields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AadError {
    error: &'static str,
    code: u32,
    message: String,
}

impl AadError {
    fn new(error: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self {
            error,
            code,
            message: message.into(),
        }
    }

    fn missing(param: &str) -> Self {
        Self::new(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
        )
    }

    fn into_response(self) -> Response {
        let (trace, correlation) = (random_uuid(), random_uuid());
        let timestamp = rfc3339(now_unix()).replace('T', " ");
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {timestamp}",
            self.code, self.message
        );
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": self.error,
                "error_description": description,
                "error_codes": [self.code],
                "timestamp": timestamp,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
            }),
        )
    }
}

/// The form fields of a token request; a body that is not a form reads as empty,
/// so AAD's "missing parameter" errors follow, as they do on the real endpoint.
fn form_fields(headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Vec::new();
    }
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The resource a client-credentials `scope` names (`https://x/.default` → `https://x`).
fn scope_resource(scope: &str) -> Result<String, AadError> {
    let mut scopes = scope.split_whitespace();
    let (Some(only), None) = (scopes.next(), scopes.next()) else {
        return Err(AadError::new(
            "invalid_scope",
            70011,
            format!("The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."),
        ));
    };
    match only.strip_suffix("/.default") {
        Some(resource) if !resource.is_empty() => Ok(resource.to_string()),
        _ => Err(AadError::new(
            "invalid_scope",
            1002012,
            format!("The provided value for scope {only} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        )),
    }
}

/// Verifies an AKS federated token the way AAD checks a federated credential.
fn verify_assertion(cloud: &MockCloud, assertion: &str) -> Result<(), AadError> {
    use jsonwebtoken::errors::ErrorKind;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[AKS_ISSUER]);
    validation.set_audience(&[TOKEN_EXCHANGE_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    let Err(e) = cloud.keys().eks.verify::<Value>(assertion, &validation) else {
        return Ok(());
    };
    let peek = crate::keys::peek_claims(assertion).unwrap_or(Value::Null);
    let claim = |name: &str| match &peek[name] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    Err(match e.kind() {
        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => AadError::new(
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                rfc3339(now_unix()),
                claim("nbf"),
                claim("exp"),
            ),
        ),
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience | ErrorKind::MissingRequiredClaim(_) => {
            AadError::new(
                "invalid_client",
                70021,
                format!(
                    "No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: '{}'.",
                    claim("iss"),
                    claim("sub"),
                    claim("aud"),
                ),
            )
        }
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidRsaKey(_) => {
            AadError::new(
                "invalid_client",
                700027,
                "Client assertion contains an invalid signature.",
            )
        }
        _ => AadError::new("invalid_client", 50027, "JWT token is invalid or malformed."),
    })
}

/// Validates a workload-identity token request; on success, the client id and the
/// token's audience.
fn check_token_request(
    cloud: &MockCloud,
    az: &AzureIdentity,
    fields: &[(String, String)],
) -> Result<(String, String), AadError> {
    let grant_type = field(fields, "grant_type").ok_or_else(|| AadError::missing("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(AadError::new(
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = field(fields, "client_id").ok_or_else(|| AadError::missing("client_id"))?;
    let scope = field(fields, "scope").ok_or_else(|| AadError::missing("scope"))?;
    let audience = scope_resource(scope)?;
    if !az
        .workload_client_ids
        .iter()
        .any(|c| c.eq_ignore_ascii_case(client_id))
    {
        return Err(AadError::new(
            "unauthorized_client",
            700016,
            format!("Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.", az.tenant_id),
        ));
    }
    let assertion = field(fields, "client_assertion").ok_or_else(|| {
        AadError::new(
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        )
    })?;
    if field(fields, "client_assertion_type") != Some(JWT_BEARER) {
        return Err(AadError::new(
            "invalid_request",
            90014,
            format!(
                "The required field 'client_assertion_type' is missing or is not '{JWT_BEARER}'."
            ),
        ));
    }
    verify_assertion(cloud, assertion)?;
    Ok((client_id.to_string(), audience))
}

async fn aad_token(
    State(cloud): State<MockCloud>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let config = cloud.config();
    let Some(az) = config
        .azure
        .as_ref()
        .filter(|az| az.tenant_id.eq_ignore_ascii_case(&tenant))
    else {
        return AadError::new(
            "invalid_request",
            90002,
            format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        )
        .into_response();
    };
    let fields = form_fields(&headers, &body);
    let (client_id, audience) = match check_token_request(&cloud, az, &fields) {
        Ok(ok) => ok,
        Err(e) => return e.into_response(),
    };
    let ttl = ttl(&cloud);
    let claims = access_token_claims(
        &Subject::workload(az, &client_id),
        &audience,
        now_unix(),
        ttl,
    );
    let Ok(token) = sign(&cloud, &claims) else {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "signing failed",
        );
    };
    json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": ttl,
            "ext_expires_in": ttl,
            "access_token": token,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn az() -> AzureIdentity {
        AzureIdentity::default()
    }

    fn uami(n: u8) -> ManagedIdentity {
        ManagedIdentity {
            client_id: format!("client-{n}"),
            object_id: format!("object-{n}"),
            resource_id: format!("/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id{n}"),
        }
    }

    #[test]
    fn default_selection_prefers_system_then_the_only_user_identity() {
        let mut a = az();
        let system = a.system_identity.clone().unwrap();
        assert_eq!(select_identity(&a, &Selector::Default), Ok(system));
        a.system_identity = None;
        a.user_identities = vec![uami(1)];
        assert_eq!(select_identity(&a, &Selector::Default), Ok(uami(1)));
        a.user_identities.push(uami(2));
        assert_eq!(
            select_identity(&a, &Selector::Default),
            Err(SelectError::Ambiguous)
        );
        a.user_identities.clear();
        assert_eq!(
            select_identity(&a, &Selector::Default),
            Err(SelectError::NotFound)
        );
    }

    #[test]
    fn selectors_match_by_each_id_case_insensitively() {
        let mut a = az();
        a.user_identities = vec![uami(1), uami(2)];
        let by = |s| select_identity(&a, &s);
        assert_eq!(by(Selector::ClientId("CLIENT-2".into())), Ok(uami(2)));
        assert_eq!(by(Selector::ObjectId("object-1".into())), Ok(uami(1)));
        assert_eq!(
            by(Selector::ResourceId(uami(2).resource_id.to_uppercase())),
            Ok(uami(2))
        );
        assert_eq!(
            by(Selector::ClientId("nope".into())),
            Err(SelectError::NotFound)
        );
    }

    #[test]
    fn selector_parsing() {
        assert_eq!(parse_selector(None, &IMDS_SELECTORS), Ok(Selector::Default));
        assert_eq!(
            parse_selector(Some("client_id=&resource=x"), &IMDS_SELECTORS),
            Ok(Selector::Default)
        );
        assert_eq!(
            parse_selector(Some("msi_res_id=%2Fsub"), &IMDS_SELECTORS),
            Ok(Selector::ResourceId("/sub".into()))
        );
        assert!(matches!(
            parse_selector(Some("client_id=a&object_id=b"), &IMDS_SELECTORS),
            Err(SelectError::TooManySelectors(_))
        ));
    }

    #[test]
    fn api_versions() {
        assert!(valid_api_version("2018-02-01"));
        assert!(valid_api_version("2021-02-01"));
        assert!(valid_api_version("2020-06-01-preview"));
        assert!(!valid_api_version(""));
        assert!(!valid_api_version("2016-01-01"));
        assert!(!valid_api_version("latest"));
        assert!(!valid_api_version("2018-2-01x"));
    }

    #[test]
    fn scopes_must_name_one_resource_with_default() {
        assert_eq!(
            scope_resource("https://management.azure.com/.default").unwrap(),
            "https://management.azure.com"
        );
        assert_eq!(scope_resource("https://x/read").unwrap_err().code, 1002012);
        assert_eq!(scope_resource("/.default").unwrap_err().code, 1002012);
        assert_eq!(
            scope_resource("a/.default b/.default").unwrap_err().code,
            70011
        );
    }

    #[test]
    fn instance_paths_walk_objects_and_arrays() {
        let doc = instance_document(&az());
        assert_eq!(
            instance_node(&doc, "/compute/location"),
            Some(&json!("eastus"))
        );
        assert_eq!(
            instance_node(&doc, "/network/interface/0/macAddress"),
            Some(&json!("000D3A1B2C3D"))
        );
        assert_eq!(instance_node(&doc, "/network/interface/9"), None);
        assert_eq!(instance_node(&doc, "/compute/nope"), None);
        assert_eq!(instance_node(&doc, ""), Some(&doc));
    }

    #[test]
    fn claims_have_the_v1_shape() {
        let a = az();
        let system = a.system_identity.clone().unwrap();
        let c = access_token_claims(&Subject::managed(&a, &system), "https://r/", 100, 50);
        let iss = format!("https://sts.windows.net/{}/", a.tenant_id);
        assert_eq!(c["iss"], iss);
        assert_eq!(c["idp"], iss);
        assert_eq!(c["exp"], 150);
        assert_eq!(c["oid"], system.object_id);
        assert_eq!(c["sub"], system.object_id);
        assert_eq!(c["appid"], system.client_id);
        assert_eq!(c["xms_mirid"], system.resource_id);
        assert_eq!(c["xms_az_rid"], vm_resource_id(&a));
        assert_eq!(c["ver"], "1.0");
    }

    #[test]
    fn workload_subject_uses_the_matching_identity_or_a_stable_id() {
        let a = az();
        let user = a.user_identities[0].clone();
        let s = Subject::workload(&a, &user.client_id);
        assert_eq!(s.object_id, user.object_id);
        assert_eq!(s.mirid.as_deref(), Some(user.resource_id.as_str()));
        assert_eq!(s.az_rid, None);
        let app = Subject::workload(&a, "unknown-app");
        assert_eq!(
            app.object_id,
            Subject::workload(&a, "unknown-app").object_id
        );
        assert_eq!(app.object_id.len(), 36);
        assert_eq!(app.mirid, None);
    }
}
