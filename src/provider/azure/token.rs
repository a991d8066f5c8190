//! What the three Azure token sources (IMDS, App Service, Azure AD) have in common:
//!
//! - success: `{"access_token": "...", "expires_on"|"expires_in": ..., ...}`;
//! - errors: `{"error": "...", "error_description": "..."}` (IMDS, Azure AD) or
//!   `{"statusCode": 400, "message": "..."}` (App Service);
//! - 429, 410 and 5xx are transient: retried after `Retry-After` when given (410:
//!   Azure documents "retry after up to 70 s"), else after the policy's backoff;
//! - "Identity not found" (400/404) means Azure is detected but this identity is not
//!   assigned: [`ProviderError::NoIdentity`].
//!
//! The identity a token names comes from its (unverified) claims: `oid`, else
//! `sub`, else `appid`, as the reference client reads them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::super::{CloudIdentity, CloudProvider, ProviderError};
use crate::http::{snippet, Reply, Step, TransportError};
use crate::provider::jwt::{claim_str, jwt_claims};
use crate::Secret;

pub(super) const RESOURCE_TYPE: &str = "azure-managed-identity";

/// IMDS answers 410 while it is being updated, for up to about 70 s.
const GONE_WAIT: Duration = Duration::from_secs(70);

/// How to read one source's answers.
pub(super) struct Source<'a> {
    /// For errors: "IMDS managed identity token request", ...
    pub what: &'a str,
    /// `Some(reason)`: "Identity not found" answers are [`ProviderError::NoIdentity`]
    /// with this reason.
    pub not_found: Option<String>,
    /// Added to final errors of this status (how to fix it), or "".
    pub hint: fn(u16) -> &'static str,
}

impl Source<'_> {
    /// Sorts one attempt's outcome into success, transient or final failure.
    pub fn classify(
        &self,
        result: Result<Reply, TransportError>,
        now: SystemTime,
    ) -> Step<Secret, ProviderError> {
        let reply = match Step::from_transport(result, |e| self.upstream(e)) {
            Ok(reply) => reply,
            Err(step) => return step,
        };
        if reply.is_success() {
            return match access_token(&reply.body) {
                Some(token) => Step::Done(token),
                None => Step::Fail(self.upstream("the answer has no access_token")),
            };
        }
        let described = describe(&reply);
        match reply.status {
            429 | 500..=599 => Step::Retry {
                reason: described,
                after: reply.retry_after(now),
            },
            410 => Step::Retry {
                reason: described,
                after: Some(reply.retry_after(now).unwrap_or(GONE_WAIT)),
            },
            400 | 404 if self.not_found.is_some() && identity_not_found(&reply) => {
                Step::Fail(ProviderError::NoIdentity {
                    provider: CloudProvider::Azure,
                    reason: self.not_found.clone().unwrap_or_default(),
                })
            }
            status => Step::Fail(self.upstream(format!("{described}{}", (self.hint)(status)))),
        }
    }

    pub fn upstream(&self, reason: impl Into<String>) -> ProviderError {
        ProviderError::Upstream {
            provider: CloudProvider::Azure,
            what: self.what.to_string(),
            reason: reason.into(),
        }
    }
}

pub(super) fn access_token(body: &str) -> Option<Secret> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
    }
    let token = serde_json::from_str::<Answer>(body).ok()?.access_token?;
    let token = token.trim();
    (!token.is_empty()).then(|| Secret::new(token))
}

/// The parts of an error answer worth quoting.
#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<serde_json::Value>,
    error_description: Option<String>,
    message: Option<String>,
    #[serde(rename = "Message")]
    message_upper: Option<String>,
}

fn error_body(reply: &Reply) -> ErrorBody {
    serde_json::from_str(&reply.body).unwrap_or_default()
}

/// `HTTP 400 invalid_request: Identity not found`, or the body's start.
pub(super) fn describe(reply: &Reply) -> String {
    let e = error_body(reply);
    let code = match &e.error {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Object(o)) => {
            o.get("code").and_then(|c| c.as_str()).map(str::to_owned)
        }
        _ => None,
    };
    let text = e
        .error_description
        .or(e.message)
        .or(e.message_upper)
        .or_else(|| match &e.error {
            Some(serde_json::Value::Object(o)) => {
                o.get("message").and_then(|m| m.as_str()).map(str::to_owned)
            }
            _ => None,
        });
    match (code, text) {
        (Some(c), Some(t)) => format!("HTTP {} {c}: {}", reply.status, snippet(&t)),
        (Some(c), None) => format!("HTTP {} {c}", reply.status),
        (None, Some(t)) => format!("HTTP {}: {}", reply.status, snippet(&t)),
        (None, None) => format!("HTTP {}: {}", reply.status, reply.snippet()),
    }
}

fn identity_not_found(reply: &Reply) -> bool {
    let e = error_body(reply);
    let text = [e.error_description, e.message, e.message_upper]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    text.contains("identity not found") || text.contains("no managed identity")
}

/// Where the token came from, for `additional_claims["identity_source"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Imds,
    AppService,
    WorkloadIdentity,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Imds => "imds",
            Origin::AppService => "app-service",
            Origin::WorkloadIdentity => "workload-identity",
        }
    }
}

/// The VM facts IMDS `/metadata/instance` gives (`compute.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Compute {
    pub subscription_id: Option<String>,
    pub resource_group: Option<String>,
    pub location: Option<String>,
}

/// The identity `token` proves: object id (else `sub`, else `appid`); the
/// subscription and region come from instance metadata when there is any.
pub(super) fn identity_from_token(
    token: &str,
    compute: &Compute,
    origin: Origin,
) -> Result<CloudIdentity, ProviderError> {
    let claims = jwt_claims(token).map_err(|e| bad_token(&e))?;
    let identifier = ["oid", "sub", "appid"]
        .iter()
        .find_map(|c| claim_str(&claims, c))
        .ok_or_else(|| bad_token("it has no oid, sub or appid claim"))?;
    let mut additional_claims = BTreeMap::new();
    additional_claims.insert("identity_source".into(), origin.as_str().into());
    for (claim, key) in [
        ("tid", "tenant_id"),
        ("appid", "app_id"),
        ("azp", "authorized_party"),
        ("xms_mirid", "xms_mirid"),
        ("aud", "audience"),
    ] {
        if let Some(v) = claim_str(&claims, claim) {
            additional_claims.insert(key.into(), v);
        }
    }
    if let Some(location) = &compute.location {
        additional_claims.insert("metadata_location".into(), location.clone());
    }
    Ok(CloudIdentity {
        provider: CloudProvider::Azure,
        identifier,
        account_id: compute.subscription_id.clone().unwrap_or_default(),
        region: compute.location.clone().unwrap_or_default(),
        resource_type: RESOURCE_TYPE.into(),
        additional_claims,
        credential_source: None,
    })
}

fn bad_token(why: &str) -> ProviderError {
    ProviderError::Upstream {
        provider: CloudProvider::Azure,
        what: "reading the access token".into(),
        reason: format!("the token is not a usable Azure access token: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn reply(status: u16, body: &str) -> Result<Reply, TransportError> {
        Ok(Reply {
            status,
            headers: Default::default(),
            body: body.into(),
        })
    }

    fn source() -> Source<'static> {
        Source {
            what: "IMDS token",
            not_found: Some("no identity".into()),
            hint: |s| if s == 401 { " (check it)" } else { "" },
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH
    }

    #[test]
    fn identity_not_found_is_no_identity() {
        let body = r#"{"error":"invalid_request","error_description":"Identity not found"}"#;
        assert!(matches!(
            source().classify(reply(400, body), now()),
            Step::Fail(ProviderError::NoIdentity { reason, .. }) if reason == "no identity"
        ));
        // Other 400s are plain failures with the description quoted.
        let body = r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#;
        match source().classify(reply(400, body), now()) {
            Step::Fail(ProviderError::Upstream { reason, .. }) => {
                assert_eq!(
                    reason,
                    "HTTP 400 invalid_request: Required metadata header not specified"
                )
            }
            _ => panic!(),
        }
    }

    #[test]
    fn transient_statuses_retry_and_410_waits_long() {
        for s in [429, 500, 503] {
            assert!(matches!(
                source().classify(reply(s, "{}"), now()),
                Step::Retry { after: None, .. }
            ));
        }
        assert!(matches!(
            source().classify(reply(410, ""), now()),
            Step::Retry { after: Some(d), .. } if d == Duration::from_secs(70)
        ));
        let mut with_header = Reply {
            status: 429,
            headers: Default::default(),
            body: String::new(),
        };
        with_header
            .headers
            .insert("retry-after", "3".parse().unwrap());
        assert!(matches!(
            source().classify(Ok(with_header), now()),
            Step::Retry { after: Some(d), .. } if d == Duration::from_secs(3)
        ));
    }

    #[test]
    fn success_needs_an_access_token_and_hints_apply() {
        assert!(matches!(
            source().classify(reply(200, r#"{"access_token":"a.b.c","expires_on":"1"}"#), now()),
            Step::Done(t) if t.expose() == "a.b.c"
        ));
        for body in ["", "{}", r#"{"access_token":""}"#, "<html>"] {
            assert!(matches!(
                source().classify(reply(200, body), now()),
                Step::Fail(_)
            ));
        }
        match source().classify(
            reply(401, r#"{"statusCode":401,"message":"Unauthorized"}"#),
            now(),
        ) {
            Step::Fail(ProviderError::Upstream { reason, .. }) => {
                assert_eq!(reason, "HTTP 401: Unauthorized (check it)")
            }
            _ => panic!(),
        }
        let aad = r#"{"error":"invalid_client","error_description":"AADSTS700016: app not found"}"#;
        assert_eq!(
            describe(&reply(400, aad).unwrap()),
            "HTTP 400 invalid_client: AADSTS700016: app not found"
        );
    }

    fn jwt(payload: serde_json::Value) -> String {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("e30.{}.c2ln", enc.encode(payload.to_string()))
    }

    #[test]
    fn identity_prefers_oid_then_sub_then_appid() {
        let compute = Compute {
            subscription_id: Some("sub-1".into()),
            resource_group: Some("rg".into()),
            location: Some("eastus".into()),
        };
        let t = jwt(serde_json::json!({"oid": "o", "sub": "s", "appid": "a", "tid": "t"}));
        let id = identity_from_token(&t, &compute, Origin::Imds).unwrap();
        assert_eq!(
            (
                id.identifier.as_str(),
                id.account_id.as_str(),
                id.region.as_str()
            ),
            ("o", "sub-1", "eastus")
        );
        assert_eq!(id.resource_type, "azure-managed-identity");
        assert_eq!(id.additional_claims["metadata_location"], "eastus");
        assert_eq!(id.additional_claims["tenant_id"], "t");
        assert_eq!(id.additional_claims["identity_source"], "imds");
        let t = jwt(serde_json::json!({"sub": "s", "appid": "a"}));
        let id = identity_from_token(&t, &Compute::default(), Origin::WorkloadIdentity).unwrap();
        assert_eq!((id.identifier.as_str(), id.account_id.as_str()), ("s", ""));
        assert!(!id.additional_claims.contains_key("metadata_location"));
        let t = jwt(serde_json::json!({"appid": "a"}));
        assert_eq!(
            identity_from_token(&t, &Compute::default(), Origin::AppService)
                .unwrap()
                .identifier,
            "a"
        );
        assert!(identity_from_token(
            &jwt(serde_json::json!({})),
            &Compute::default(),
            Origin::Imds
        )
        .is_err());
        assert!(identity_from_token("opaque", &Compute::default(), Origin::Imds).is_err());
    }
}
