//! The GCE metadata server, `GET /computeMetadata/v1/...`, as a workload on a
//! Compute Engine VM sees it.
//!
//! Answers only while [`CloudConfig::gcp`](super::super::CloudConfig) is set; otherwise every
//! path is a plain 404, as another cloud's metadata server would answer. Every request
//! must carry `Metadata-Flavor: Google` and must not carry `X-Forwarded-For` (a proxied
//! request is an SSRF symptom); either failure is a 403 with Google's HTML error page.
//! Every answer, errors included, carries `Metadata-Flavor: Google` and
//! `Server: Metadata Server for VM`: clients detect GCE by that response header.
//!
//! - A directory is asked for with a trailing `/` and lists its entries one per line
//!   (sub-directories with a trailing `/`) as `application/text`; with
//!   `?recursive=true` it is the subtree as `application/json` with camelCase keys
//!   (`numericProjectId`; service-account keys stay emails). A directory asked for
//!   without its slash is a 301 to the slashed path.
//! - A leaf is `application/text`; `?alt=json` gives it as JSON (ids as numbers).
//! - `instance/{hostname,id,machine-type,name,zone}`, `zone` being
//!   `projects/{project_number}/zones/{zone}`; `project/{numeric-project-id,project-id}`.
//! - `instance/service-accounts/` lists `default/` and `{email}/`, each holding
//!   `aliases`, `email`, `scopes`, `token` and `identity`:
//!   - `token` → `{"access_token": "ya29.…", "expires_in": n, "token_type": "Bearer"}`
//!     (JSON); the token is opaque, remembered in [`AccessTokens`](super::AccessTokens) so IAM Credentials
//!     can tell whose it is;
//!   - `identity?audience=A[&format=standard|full][&licenses=TRUE|FALSE]` → an RS256
//!     ID token (text) signed with the Google key: `iss` `https://accounts.google.com`,
//!     `aud` A, `azp` = `sub` = the account's unique id, `email`, `email_verified`,
//!     `iat`, `exp` (token TTL, at most an hour); `format=full` adds
//!     `google.compute_engine` `{project_id, project_number, zone, instance_id,
//!     instance_name, instance_creation_timestamp}` and `licenses=TRUE` its
//!     `license_id` list. No audience → 400 `non-empty audience parameter required`.
//!
//!   With no service account the directory is empty and every path under it is a 404.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::super::{GcpIdentity, MockCloud, ServiceAccount};
use super::{id_token_claims, lifetime, sign};
use crate::util::{now_unix, query_param};

/// `instance_creation_timestamp` of the mock VM (the config has no such field).
const INSTANCE_CREATION_TIMESTAMP: u64 = 1_700_000_000;
/// The license of the mock VM's boot image (a Debian license id).
const LICENSE_ID: &str = "5926592092274602096";
const MACHINE_TYPE: &str = "e2-medium";
const SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
];
const TEXT: &str = "application/text";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=UTF-8";

/// What the identity endpoint's `format` and `licenses` parameters ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// No instance details.
    Standard,
    /// `google.compute_engine` with the instance details.
    Full,
    /// `Full` plus the boot image's `license_id` list.
    FullWithLicenses,
}

/// The ID token the metadata server's identity endpoint would return for the
/// instance's default service account; `None` when GCP is off, the instance has
/// no service account, or signing fails.
pub fn mint_id_token(cloud: &MockCloud, audience: &str, format: TokenFormat) -> Option<String> {
    let config = cloud.config();
    let gcp = config.gcp.as_ref()?;
    let sa = gcp.service_account.as_ref()?;
    let claims = metadata_id_token_claims(gcp, sa, audience, format, now_unix(), lifetime(cloud));
    sign(cloud, &claims).ok()
}

/// An ID token from the metadata server: always with the email, and with the
/// instance details when `format` asks for them.
fn metadata_id_token_claims(
    gcp: &GcpIdentity,
    sa: &ServiceAccount,
    audience: &str,
    format: TokenFormat,
    now: u64,
    lifetime: u64,
) -> Value {
    let mut claims = id_token_claims(sa, audience, true, now, lifetime);
    if format != TokenFormat::Standard {
        let mut compute = json!({
            "instance_creation_timestamp": INSTANCE_CREATION_TIMESTAMP,
            "instance_id": gcp.instance_id,
            "instance_name": gcp.instance_name,
            "project_id": gcp.project_id,
            "project_number": number_or_string(&gcp.project_number),
            "zone": gcp.zone,
        });
        if format == TokenFormat::FullWithLicenses {
            compute["license_id"] = json!([LICENSE_ID]);
        }
        claims["google"] = json!({ "compute_engine": compute });
    }
    claims
}

/// Numeric ids are JSON numbers on the real server (`project_number`, `id`).
fn number_or_string(s: &str) -> Value {
    s.parse::<u64>()
        .map(Value::from)
        .unwrap_or_else(|_| json!(s))
}

// ---------------------------------------------------------------------------
// Metadata tree
// ---------------------------------------------------------------------------

/// One node of the metadata tree. Directory entries are `(path name, JSON key, node)`:
/// paths are kebab-case, recursive JSON is camelCase.
#[derive(Debug, PartialEq)]
enum Node {
    Dir(Vec<(String, String, Node)>),
    Value(Value),
    Token(ServiceAccount),
    Identity(ServiceAccount),
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        match self {
            Node::Dir(entries) => entries
                .iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, _, c)| c),
            _ => None,
        }
    }

    /// `instance/\nproject/\n`: what a directory read returns.
    fn listing(&self) -> String {
        let Node::Dir(entries) = self else {
            return String::new();
        };
        entries
            .iter()
            .map(|(name, _, node)| match node {
                Node::Dir(_) => format!("{name}/\n"),
                _ => format!("{name}\n"),
            })
            .collect()
    }

    /// `?recursive=true`: the subtree without its minting endpoints.
    fn to_json(&self) -> Value {
        match self {
            Node::Dir(entries) => Value::Object(
                entries
                    .iter()
                    .filter(|(_, _, n)| !matches!(n, Node::Token(_) | Node::Identity(_)))
                    .map(|(_, key, n)| (key.clone(), n.to_json()))
                    .collect(),
            ),
            Node::Value(v) => v.clone(),
            Node::Token(_) | Node::Identity(_) => Value::Null,
        }
    }
}

/// A directory whose JSON keys are the camelCase of its path names.
fn dir(entries: Vec<(&str, Node)>) -> Node {
    Node::Dir(
        entries
            .into_iter()
            .map(|(name, node)| (name.to_string(), camel_case(name), node))
            .collect(),
    )
}

fn text(s: impl Into<String>) -> Node {
    Node::Value(Value::String(s.into()))
}

fn camel_case(kebab: &str) -> String {
    let mut out = String::with_capacity(kebab.len());
    let mut upper = false;
    for c in kebab.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn service_account_dir(sa: &ServiceAccount) -> Node {
    dir(vec![
        ("aliases", Node::Value(json!(["default"]))),
        ("email", text(&sa.email)),
        ("identity", Node::Identity(sa.clone())),
        ("scopes", Node::Value(json!(SCOPES))),
        ("token", Node::Token(sa.clone())),
    ])
}

/// The tree under `/computeMetadata/`, built from the current configuration.
fn metadata_tree(gcp: &GcpIdentity) -> Node {
    let mut accounts = Vec::new();
    if let Some(sa) = &gcp.service_account {
        accounts.push((
            "default".to_string(),
            "default".to_string(),
            service_account_dir(sa),
        ));
        accounts.push((sa.email.clone(), sa.email.clone(), service_account_dir(sa)));
        accounts.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let instance = dir(vec![
        ("attributes", dir(vec![])),
        (
            "hostname",
            text(format!(
                "{}.{}.c.{}.internal",
                gcp.instance_name, gcp.zone, gcp.project_id
            )),
        ),
        ("id", Node::Value(number_or_string(&gcp.instance_id))),
        (
            "machine-type",
            text(format!(
                "projects/{}/machineTypes/{MACHINE_TYPE}",
                gcp.project_number
            )),
        ),
        ("name", text(&gcp.instance_name)),
        ("service-accounts", Node::Dir(accounts)),
        (
            "zone",
            text(format!(
                "projects/{}/zones/{}",
                gcp.project_number, gcp.zone
            )),
        ),
    ]);
    let project = dir(vec![
        ("attributes", dir(vec![])),
        (
            "numeric-project-id",
            Node::Value(number_or_string(&gcp.project_number)),
        ),
        ("project-id", text(&gcp.project_id)),
    ]);
    dir(vec![(
        "v1",
        dir(vec![("instance", instance), ("project", project)]),
    )])
}

/// Where a request path lands in the tree.
#[derive(Debug, PartialEq)]
enum Lookup<'a> {
    /// A directory asked for with its slash.
    Dir(&'a Node),
    /// A directory asked for without its slash: redirect.
    Redirect,
    Leaf(&'a Node),
    NotFound,
}

/// Resolves `rel`, the path after `/computeMetadata/`.
fn lookup<'a>(tree: &'a Node, rel: &str) -> Lookup<'a> {
    let wants_dir = rel.is_empty() || rel.ends_with('/');
    let trimmed = rel.strip_suffix('/').unwrap_or(rel);
    let mut node = tree;
    if !trimmed.is_empty() {
        for segment in trimmed.split('/') {
            if segment.is_empty() {
                return Lookup::NotFound;
            }
            // `%XX` decoded (`+` stays `+`, a bad escape stays literal, invalid UTF-8
            // becomes U+FFFD), as the metadata server reads a path segment.
            let segment = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
            match node.child(&segment) {
                Some(child) => node = child,
                None => return Lookup::NotFound,
            }
        }
    }
    match (node, wants_dir) {
        (Node::Dir(_), true) => Lookup::Dir(node),
        (Node::Dir(_), false) => Lookup::Redirect,
        (_, true) => Lookup::NotFound,
        (_, false) => Lookup::Leaf(node),
    }
}

// ---------------------------------------------------------------------------
// Metadata handlers
// ---------------------------------------------------------------------------

pub(super) async fn metadata(
    State(cloud): State<MockCloud>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let config = cloud.config();
    let Some(gcp) = config.gcp.as_ref() else {
        return (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    };
    let path = uri.path();
    if headers.contains_key("x-forwarded-for") {
        return error_page(
            StatusCode::FORBIDDEN,
            path,
            "Requests with an X-Forwarded-For header are refused.",
        );
    }
    if headers.get("metadata-flavor").map(|v| v.as_bytes()) != Some(b"Google".as_slice()) {
        return error_page(
            StatusCode::FORBIDDEN,
            path,
            "Missing Metadata-Flavor:Google header.",
        );
    }
    let rel = match path.strip_prefix("/computeMetadata") {
        Some("") => return redirect(&uri),
        Some(rest) => rest.strip_prefix('/').unwrap_or(rest),
        None => return error_page(StatusCode::NOT_FOUND, path, ""),
    };
    let tree = metadata_tree(gcp);
    let query = uri.query();
    match lookup(&tree, rel) {
        Lookup::Dir(node) => directory(node, query),
        Lookup::Redirect => redirect(&uri),
        Lookup::Leaf(Node::Token(sa)) => access_token(&cloud, sa),
        Lookup::Leaf(Node::Identity(sa)) => identity(&cloud, gcp, sa, query),
        Lookup::Leaf(Node::Value(v)) => leaf(v, query),
        Lookup::Leaf(Node::Dir(_)) | Lookup::NotFound => {
            error_page(StatusCode::NOT_FOUND, path, "")
        }
    }
}

fn is_true(v: Option<String>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn directory(node: &Node, query: Option<&str>) -> Response {
    if is_true(query_param(query, "recursive")) {
        gce(StatusCode::OK, JSON, node.to_json().to_string())
    } else {
        gce(StatusCode::OK, TEXT, node.listing())
    }
}

fn leaf(value: &Value, query: Option<&str>) -> Response {
    if query_param(query, "alt").as_deref() == Some("json") {
        return gce(StatusCode::OK, JSON, value.to_string());
    }
    let body = match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| format!("{}\n", i.as_str().unwrap_or_default()))
            .collect(),
        other => other.to_string(),
    };
    gce(StatusCode::OK, TEXT, body)
}

fn access_token(cloud: &MockCloud, sa: &ServiceAccount) -> Response {
    let lifetime = lifetime(cloud);
    let token = cloud.gcp_access_tokens().issue(&sa.email, lifetime);
    let body = json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"});
    gce(StatusCode::OK, JSON, body.to_string())
}

fn identity(
    cloud: &MockCloud,
    gcp: &GcpIdentity,
    sa: &ServiceAccount,
    query: Option<&str>,
) -> Response {
    let audience = query_param(query, "audience").unwrap_or_default();
    if audience.is_empty() {
        return gce(
            StatusCode::BAD_REQUEST,
            TEXT,
            "non-empty audience parameter required",
        );
    }
    let format = match parse_format(query) {
        Ok(f) => f,
        Err(message) => return gce(StatusCode::BAD_REQUEST, TEXT, message),
    };
    let claims = metadata_id_token_claims(gcp, sa, &audience, format, now_unix(), lifetime(cloud));
    match sign(cloud, &claims) {
        Ok(token) => gce(StatusCode::OK, TEXT, token),
        Err(_) => gce(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "internal error"),
    }
}

/// `format` (default `standard`) and `licenses` (default `FALSE`, only with `full`).
fn parse_format(query: Option<&str>) -> Result<TokenFormat, &'static str> {
    let licenses = match query_param(query, "licenses") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(_) => return Err("licenses parameter must be TRUE or FALSE"),
    };
    match query_param(query, "format").as_deref() {
        None | Some("standard") => Ok(TokenFormat::Standard),
        Some("full") if licenses => Ok(TokenFormat::FullWithLicenses),
        Some("full") => Ok(TokenFormat::Full),
        Some(_) => Err("format parameter must be standard or full"),
    }
}

/// A metadata-server answer with the headers the real one always sends.
fn gce(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::HeaderName::from_static("metadata-flavor"), "Google"),
            (header::SERVER, "Metadata Server for VM"),
            (header::HeaderName::from_static("x-xss-protection"), "0"),
            (header::X_FRAME_OPTIONS, "SAMEORIGIN"),
        ],
        body.into(),
    )
        .into_response()
}

/// 301 from a directory without its slash to the slashed path, query kept.
fn redirect(uri: &Uri) -> Response {
    let location = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let mut resp = gce(StatusCode::MOVED_PERMANENTLY, HTML, format!("{location}\n"));
    if let Ok(value) = header::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, value);
    }
    resp
}

/// Google's HTML error page, as the metadata server sends it for 403 and 404.
fn error_page(status: StatusCode, path: &str, reason: &str) -> Response {
    let code = status.as_u16();
    let title = status.canonical_reason().unwrap_or("Error");
    let path = html_escape(path);
    let detail = match status {
        StatusCode::NOT_FOUND => {
            format!("The requested URL <code>{path}</code> was not found on this server.")
        }
        _ => format!(
            "Your client does not have permission to get URL <code>{path}</code> from this server. {reason}"
        ),
    };
    let body = format!(
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error {code} ({title})!!1</title>\n  <p><b>{code}.</b> <ins>That’s an error.</ins>\n  <p>{detail}  <ins>That’s all we know.</ins>\n"
    );
    gce(status, HTML, body)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcp() -> GcpIdentity {
        GcpIdentity::default()
    }

    #[test]
    fn camel_case_converts_kebab_names() {
        assert_eq!(camel_case("numeric-project-id"), "numericProjectId");
        assert_eq!(camel_case("id"), "id");
    }

    #[test]
    fn lookup_distinguishes_dirs_leaves_and_redirects() {
        let tree = metadata_tree(&gcp());
        assert!(matches!(lookup(&tree, "v1/instance/"), Lookup::Dir(_)));
        assert_eq!(lookup(&tree, "v1/instance"), Lookup::Redirect);
        assert!(matches!(lookup(&tree, "v1/instance/id"), Lookup::Leaf(_)));
        assert_eq!(lookup(&tree, "v1/instance/id/"), Lookup::NotFound);
        assert_eq!(lookup(&tree, "v1//instance/"), Lookup::NotFound);
        assert_eq!(lookup(&tree, "v1/nope"), Lookup::NotFound);
        let email = gcp().service_account.unwrap().email.replace('@', "%40");
        let path = format!("v1/instance/service-accounts/{email}/email");
        assert!(matches!(lookup(&tree, &path), Lookup::Leaf(Node::Value(_))));
    }

    #[test]
    fn listings_mark_directories_and_recursive_json_skips_minting_endpoints() {
        let tree = metadata_tree(&gcp());
        let Lookup::Dir(sa) = lookup(&tree, "v1/instance/service-accounts/default/") else {
            panic!("not a directory");
        };
        assert_eq!(sa.listing(), "aliases\nemail\nidentity\nscopes\ntoken\n");
        let json = sa.to_json();
        assert_eq!(json["aliases"], json!(["default"]));
        assert!(json.get("token").is_none() && json.get("identity").is_none());
        let Lookup::Dir(project) = lookup(&tree, "v1/project/") else {
            panic!("not a directory");
        };
        assert_eq!(
            project.to_json()["numericProjectId"],
            json!(123456789012u64)
        );
    }

    #[test]
    fn no_service_account_means_an_empty_directory() {
        let mut g = gcp();
        g.service_account = None;
        let tree = metadata_tree(&g);
        let Lookup::Dir(dir) = lookup(&tree, "v1/instance/service-accounts/") else {
            panic!("not a directory");
        };
        assert_eq!(dir.listing(), "");
        assert_eq!(
            lookup(&tree, "v1/instance/service-accounts/default/identity"),
            Lookup::NotFound
        );
    }

    #[test]
    fn format_parsing() {
        assert_eq!(parse_format(None), Ok(TokenFormat::Standard));
        assert_eq!(parse_format(Some("format=full")), Ok(TokenFormat::Full));
        assert_eq!(
            parse_format(Some("format=full&licenses=TRUE")),
            Ok(TokenFormat::FullWithLicenses)
        );
        assert!(parse_format(Some("format=weird")).is_err());
        assert!(parse_format(Some("licenses=maybe")).is_err());
    }

    #[test]
    fn full_claims_carry_the_instance() {
        let g = gcp();
        let sa = g.service_account.clone().unwrap();
        let c = metadata_id_token_claims(&g, &sa, "aud", TokenFormat::FullWithLicenses, 100, 60);
        assert_eq!(c["exp"], 160);
        assert_eq!(c["sub"], sa.unique_id);
        assert_eq!(c["email_verified"], true);
        let ce = &c["google"]["compute_engine"];
        assert_eq!(ce["project_number"], 123456789012u64);
        assert_eq!(ce["instance_id"], g.instance_id);
        assert_eq!(ce["license_id"], json!([LICENSE_ID]));
        let standard = id_token_claims(&sa, "aud", false, 100, 60);
        assert!(standard.get("email").is_none() && standard.get("google").is_none());
    }
}
