//! Who a Google ID token names, read from its (unverified) claims the way the
//! reference client does: the identifier is the service-account email when
//! `email_verified` is true, else the numeric `sub`; the account id is `sub`; the
//! region is the zone without its last dash-part (`us-central1-a` → `us-central1`).
//!
//! A `format=full` token also carries `google.compute_engine.{project_id,
//! project_number, zone, instance_id, instance_name}`; those land in
//! `additional_claims`, and its zone stands in when the metadata server gave none.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::super::{CloudIdentity, CloudProvider, ProviderError};
use crate::provider::jwt::{claim_str, jwt_claims};

pub(super) const RESOURCE_TYPE: &str = "gcp-compute-instance";

/// The identity `token` proves; `zone` is the metadata server's, if it answered.
pub(super) fn identity_from_token(
    token: &str,
    zone: Option<&str>,
) -> Result<CloudIdentity, ProviderError> {
    let claims = jwt_claims(token).map_err(|e| bad_token(&e))?;
    let sub = claim_str(&claims, "sub").ok_or_else(|| bad_token("it has no sub claim"))?;
    let email = claim_str(&claims, "email");
    let identifier = match &email {
        Some(email) if is_true(claims.get("email_verified")) => email.clone(),
        _ => sub.clone(),
    };
    let compute = compute_engine(&claims);
    let zone = zone
        .map(str::to_owned)
        .or_else(|| compute.get("zone").cloned());
    let mut additional_claims = compute;
    if let Some(email) = email {
        additional_claims.insert("email".into(), email);
    }
    if let Some(aud) = claim_str(&claims, "aud") {
        additional_claims.insert("audience".into(), aud);
    }
    if let Some(zone) = &zone {
        additional_claims.insert("zone".into(), zone.clone());
    }
    Ok(CloudIdentity {
        provider: CloudProvider::Gcp,
        identifier,
        account_id: sub,
        region: zone.as_deref().map(region_of).unwrap_or_default(),
        resource_type: RESOURCE_TYPE.into(),
        additional_claims,
        credential_source: None,
    })
}

/// `us-central1-a` → `us-central1`; anything with fewer than three parts has no
/// recognisable region.
pub(super) fn region_of(zone: &str) -> String {
    let parts: Vec<&str> = zone.split('-').collect();
    if parts.len() >= 3 {
        parts[..parts.len().saturating_sub(1)].join("-")
    } else {
        String::new()
    }
}

fn is_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn compute_engine(claims: &Map<String, Value>) -> BTreeMap<String, String> {
    let Some(Value::Object(ce)) = claims.get("google").and_then(|g| g.get("compute_engine")) else {
        return BTreeMap::new();
    };
    [
        "project_id",
        "project_number",
        "zone",
        "instance_id",
        "instance_name",
    ]
    .iter()
    .filter_map(|k| claim_str(ce, k).map(|v| (k.to_string(), v)))
    .collect()
}

fn bad_token(why: &str) -> ProviderError {
    ProviderError::Upstream {
        provider: CloudProvider::Gcp,
        what: "reading the ID token".into(),
        reason: format!("the token is not a usable Google ID token: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn jwt(payload: Value) -> String {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("e30.{}.c2ln", enc.encode(payload.to_string()))
    }

    #[test]
    fn verified_email_is_the_identifier() {
        let token = jwt(serde_json::json!({
            "sub": "1042", "email": "sa@p.iam.gserviceaccount.com", "email_verified": true,
            "aud": "https://authsvc.singlestore.com",
            "google": {"compute_engine": {"project_id": "p", "project_number": 12,
                       "zone": "europe-west4-b", "instance_id": "99"}}
        }));
        let id = identity_from_token(&token, Some("us-central1-a")).unwrap();
        assert_eq!(id.identifier, "sa@p.iam.gserviceaccount.com");
        assert_eq!(id.account_id, "1042");
        assert_eq!(id.region, "us-central1");
        assert_eq!(id.resource_type, "gcp-compute-instance");
        assert_eq!(id.additional_claims["project_number"], "12");
        assert_eq!(id.additional_claims["zone"], "us-central1-a");
        assert_eq!(
            id.additional_claims["audience"],
            "https://authsvc.singlestore.com"
        );
        // Without the metadata zone, the token's zone is used.
        assert_eq!(
            identity_from_token(&token, None).unwrap().region,
            "europe-west4"
        );
    }

    #[test]
    fn unverified_or_missing_email_falls_back_to_sub() {
        for payload in [
            serde_json::json!({"sub": "7", "email": "x@y.com", "email_verified": false}),
            serde_json::json!({"sub": "7", "email": "x@y.com"}),
            serde_json::json!({"sub": "7"}),
        ] {
            let id = identity_from_token(&jwt(payload), None).unwrap();
            assert_eq!(id.identifier, "7");
            assert_eq!(id.region, "");
        }
    }

    #[test]
    fn tokens_without_sub_or_not_jwts_are_errors() {
        assert!(identity_from_token(&jwt(serde_json::json!({"email": "x"})), None).is_err());
        let e = identity_from_token("opaque-token", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a usable Google ID token"), "{e}");
        assert!(!e.contains("opaque-token"), "{e}");
    }

    #[test]
    fn regions_from_zones() {
        assert_eq!(region_of("us-central1-a"), "us-central1");
        assert_eq!(
            region_of("northamerica-northeast1-c"),
            "northamerica-northeast1"
        );
        assert_eq!(region_of("weird"), "");
    }
}
