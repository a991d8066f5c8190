//! Azure Instance Metadata Service: `GET /metadata/...`
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

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{
    imds_token_answer, json_response, oauth_error, parse_selector, select_identity, vm_resource_id,
    AzureIdentity, MockCloud, SelectorKind, Subject,
};
use crate::util::query_param;

/// Versions IMDS lists in its api-version errors.
const NEWEST_VERSIONS: [&str; 3] = ["2023-07-01", "2021-12-13", "2021-11-15"];
/// The oldest IMDS api-version.
const OLDEST_API_VERSION: &str = "2017-03-01";
const VM_SIZE: &str = "Standard_D2s_v3";

/// Which IMDS API a path belongs to; they word their errors differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Instance,
    Identity,
}

/// An IMDS error in the API's own shape.
fn imds_error(api: Api, status: StatusCode, message: &str) -> Response {
    match api {
        Api::Instance => json_response(status, &json!({ "error": message })),
        Api::Identity => oauth_error(status, "invalid_request", message),
    }
}

/// `YYYY-MM-DD` (optionally `-preview`), not older than IMDS itself.
pub(super) fn valid_api_version(v: &str) -> bool {
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

pub(super) async fn imds(State(cloud): State<MockCloud>, uri: Uri, headers: HeaderMap) -> Response {
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

pub(super) const IMDS_SELECTORS: [(&str, SelectorKind); 4] = [
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
    imds_token_answer(
        cloud,
        &Subject::managed(az, &identity),
        &identity.client_id,
        &resource,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn az() -> AzureIdentity {
        AzureIdentity::default()
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
}
