//! Azure's identity surfaces as a workload sees them, one file per surface as in
//! `s2iam::provider::azure`:
//!
//! | file | surface | path on the mock |
//! |---|---|---|
//! | `imds.rs` | the VM's Instance Metadata Service | `GET /metadata/...` |
//! | `app_service.rs` | App Service / Container Apps identity endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) | `GET /msi/token` |
//! | `arc.rs` | the Azure Arc agent (HIMDS): 401 challenge, key file, `Basic` retry | `GET /arc/metadata/identity/oauth2/token` |
//! | `msi.rs` | the legacy `MSI_ENDPOINT` (+ `MSI_SECRET`: Azure ML, older App Service; without: Cloud Shell) | `GET`/`POST /MSI/token` |
//! | `aad.rs` | Azure AD's token endpoint as AKS workload identity uses it | `POST /{tenant}/oauth2/v2.0/token` |
//!
//! Every surface but Azure AD answers only while [`CloudConfig::azure`](super::CloudConfig)
//! is set (otherwise a plain 404). This file holds what they share: the access tokens
//! they mint and how a request selects one of the VM's identities.
//!
//! # Access tokens
//!
//! RS256 JWTs signed with the Azure key, AAD v1 shape: `aud` (the resource, or the
//! scope minus `/.default`), `iss` = `idp` = `https://sts.windows.net/{tenant}/`,
//! `iat`, `nbf`, `exp` (token TTL), `oid` = `sub` = the identity's object id, `tid`,
//! `appid` = its client id, `appidacr` `"2"`, `idtyp` `"app"`, `uti`, `ver` `"1.0"`;
//! managed-identity tokens add `xms_mirid` (the identity's resource id) and, when
//! minted on the VM, `xms_az_rid` (the VM's resource id).
//!
//! Every surface mints these tokens the same way, so the mock auth service
//! (`crate::auth::verify`) accepts a token from any of them.

mod aad;
mod app_service;
mod arc;
mod imds;
mod msi;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::{AzureIdentity, ManagedIdentity, MockCloud, AKS_ISSUER};
use crate::keys::KeyError;
use crate::util::{now_unix, query_param};

pub use aad::TOKEN_EXCHANGE_AUDIENCE;
pub use arc::{ArcChallenge, ArcKeys};

const JSON: &str = "application/json; charset=utf-8";

/// The Azure IMDS, App Service, Arc, legacy MSI and Azure AD routes.
pub fn routes() -> Router<MockCloud> {
    Router::new()
        .route("/metadata", get(imds::imds))
        .route("/metadata/", get(imds::imds))
        .route("/metadata/{*path}", get(imds::imds))
        .route("/msi/token", get(app_service::token))
        .route(arc::PATH, get(arc::token))
        .route(msi::PATH, get(msi::token).post(msi::cloud_shell_token))
        .route("/{tenant}/oauth2/v2.0/token", post(aad::token))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, JSON)], body.to_string()).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// The IMDS answer (as the Arc agent gives it too): an access token for `subject`
/// and `resource`, with `client_id`, the lifetimes as strings, and the token type.
fn imds_token_answer(
    cloud: &MockCloud,
    subject: &Subject,
    client_id: &str,
    resource: &str,
) -> Response {
    let (now, ttl) = (now_unix(), ttl(cloud));
    let claims = access_token_claims(subject, resource, now, ttl);
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
            "client_id": client_id,
            "expires_in": ttl.to_string(),
            "expires_on": now.saturating_add(ttl).to_string(),
            "ext_expires_in": ttl.to_string(),
            "not_before": now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}

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
        assert_eq!(
            parse_selector(None, &imds::IMDS_SELECTORS),
            Ok(Selector::Default)
        );
        assert_eq!(
            parse_selector(Some("client_id=&resource=x"), &imds::IMDS_SELECTORS),
            Ok(Selector::Default)
        );
        assert_eq!(
            parse_selector(Some("msi_res_id=%2Fsub"), &imds::IMDS_SELECTORS),
            Ok(Selector::ResourceId("/sub".into()))
        );
        assert!(matches!(
            parse_selector(Some("client_id=a&object_id=b"), &imds::IMDS_SELECTORS),
            Err(SelectError::TooManySelectors(_))
        ));
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
