//! What the Azure token sources (IMDS, App Service, Arc, `MSI_ENDPOINT`, Azure AD,
//! the Azure CLI) have in common:
//!
//! - success: `{"access_token": "...", "expires_on"|"expires_in": ..., ...}`, where
//!   `expires_on` is epoch seconds (a number or a string) or, from App Service's
//!   2017-09-01 API, a UTC date string (`"06/20/2019 02:57:58 +00:00"`, with
//!   `AM`/`PM` on Windows): [`parse_expires_on`] reads all of them;
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
    ) -> Step<AccessToken, ProviderError> {
        let reply = match Step::from_transport(result, |e| self.upstream(e)) {
            Ok(reply) => reply,
            Err(step) => return step,
        };
        self.classify_reply(&reply, now)
    }

    /// [`Source::classify`] for an answer already in hand.
    pub fn classify_reply(
        &self,
        reply: &Reply,
        now: SystemTime,
    ) -> Step<AccessToken, ProviderError> {
        if reply.is_success() {
            return match access_token(&reply.body, unix(now)) {
                Some(token) => Step::Done(token),
                None => Step::Fail(self.upstream("the answer has no access_token")),
            };
        }
        let described = describe(reply);
        match reply.status {
            429 | 500..=599 => Step::Retry {
                reason: described,
                after: reply.retry_after(now),
            },
            410 => Step::Retry {
                reason: described,
                after: Some(reply.retry_after(now).unwrap_or(GONE_WAIT)),
            },
            400 | 404 if self.not_found.is_some() && identity_not_found(reply) => {
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

/// An access token and, when the source said, when it expires.
#[derive(Debug, Clone)]
pub(super) struct AccessToken {
    pub token: Secret,
    /// Unix seconds.
    pub expires_on: Option<u64>,
}

impl AccessToken {
    /// Refuses a token its source already reports expired (a stale cache in the
    /// source, or a clock far off): the auth service would refuse it anyway, less
    /// clearly.
    pub fn check_fresh(&self, now: SystemTime, what: &str) -> Result<(), ProviderError> {
        match self.expires_on {
            Some(exp) if exp <= unix(now) => Err(ProviderError::Upstream {
                provider: CloudProvider::Azure,
                what: what.into(),
                reason: format!(
                    "the access token it returned expired {} s ago (check this machine's clock)",
                    unix(now).saturating_sub(exp)
                ),
            }),
            _ => Ok(()),
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `access_token` and its expiry (`expires_on`, else `now` + `expires_in`) from a
/// JSON answer.
pub(super) fn access_token(body: &str, now: u64) -> Option<AccessToken> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        expires_on: Option<serde_json::Value>,
        expires_in: Option<serde_json::Value>,
    }
    let answer = serde_json::from_str::<Answer>(body).ok()?;
    let token = answer.access_token?;
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    let expires_on = answer
        .expires_on
        .as_ref()
        .and_then(parse_expires_on)
        .or_else(|| {
            answer
                .expires_in
                .as_ref()
                .and_then(json_u64)
                .map(|s| now.saturating_add(s))
        });
    Some(AccessToken {
        token: Secret::new(token),
        expires_on,
    })
}

fn json_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `expires_on` as Unix seconds: a number, a numeric string, or App Service
/// 2017-09-01's `MM/DD/YYYY HH:MM:SS +00:00` (`h:MM:SS AM|PM` on Windows).
pub(super) fn parse_expires_on(v: &serde_json::Value) -> Option<u64> {
    if let Some(n) = json_u64(v) {
        return Some(n);
    }
    let text = v.as_str()?.trim().strip_suffix(" +00:00")?;
    let (date, time) = text.split_once(' ')?;
    let mut d = date.split('/').map(|p| p.parse::<u8>().ok());
    let (month, day) = (d.next()??, d.next()??);
    let year = date.rsplit('/').next()?.parse::<i32>().ok()?;
    let (clock, meridiem) = match time.split_once(' ') {
        Some((c, m)) => (c, Some(m)),
        None => (time, None),
    };
    let mut t = clock.split(':').map(|p| p.parse::<u8>().ok());
    let (mut hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    match meridiem {
        Some("AM") if hour == 12 => hour = 0,
        Some("PM") if hour < 12 => hour = hour.checked_add(12)?,
        Some("AM" | "PM") | None => {}
        Some(_) => return None,
    }
    let month = time::Month::try_from(month).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let at = date.with_hms(hour, minute, second).ok()?.assume_utc();
    u64::try_from(at.unix_timestamp()).ok()
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
    Arc,
    /// `MSI_ENDPOINT` with `MSI_SECRET` (Azure ML, App Service before 2019).
    MsiEndpoint,
    /// `MSI_ENDPOINT` without a secret.
    CloudShell,
    AzureCli,
}

impl Origin {
    /// The label `identity_source` carries.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Imds => "imds",
            Origin::AppService => "app-service",
            Origin::WorkloadIdentity => "workload-identity",
            Origin::Arc => "azure-arc",
            Origin::MsiEndpoint => "msi-endpoint",
            Origin::CloudShell => "cloud-shell",
            Origin::AzureCli => "azure-cli",
        }
    }

    /// The source as a person names it.
    pub fn describe(self) -> &'static str {
        match self {
            Origin::Imds => "the VM's managed identity (IMDS)",
            Origin::AppService => "App Service / Container Apps managed identity (IDENTITY_ENDPOINT + IDENTITY_HEADER)",
            Origin::WorkloadIdentity => "AKS workload identity (AZURE_FEDERATED_TOKEN_FILE)",
            Origin::Arc => "Azure Arc managed identity (the Arc agent, IDENTITY_ENDPOINT + IMDS_ENDPOINT)",
            Origin::MsiEndpoint => "legacy managed identity endpoint (MSI_ENDPOINT + MSI_SECRET: Azure ML, older App Service)",
            Origin::CloudShell => "Cloud Shell managed identity (MSI_ENDPOINT)",
            Origin::AzureCli => "the Azure CLI's login (az account get-access-token)",
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
            Step::Done(t) if t.token.expose() == "a.b.c" && t.expires_on == Some(1)
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

    #[test]
    fn expires_on_in_every_shape() {
        use serde_json::json;
        let p = |v: serde_json::Value| parse_expires_on(&v);
        assert_eq!(p(json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(p(json!("1700000000")), Some(1_700_000_000));
        // App Service 2017-09-01, Linux and Windows.
        assert_eq!(p(json!("06/20/2019 02:57:58 +00:00")), Some(1_560_999_478));
        assert_eq!(p(json!("1/16/2020 5:24:12 AM +00:00")), Some(1_579_152_252));
        assert_eq!(p(json!("1/16/2020 5:24:12 PM +00:00")), Some(1_579_195_452));
        assert_eq!(
            p(json!("1/16/2020 12:00:00 AM +00:00")),
            Some(1_579_132_800)
        );
        for bad in [
            json!("soon"),
            json!("06/20/2019 02:57:58"),
            json!("13/20/2019 02:57:58 +00:00"),
            json!("06/20/2019 25:57:58 +00:00"),
            json!("1/16/2020 5:24:12 XM +00:00"),
            json!(-5),
            json!(null),
        ] {
            assert_eq!(p(bad.clone()), None, "{bad}");
        }
        let t = access_token(r#"{"access_token":"x","expires_in":"60"}"#, 1000).unwrap();
        assert_eq!(t.expires_on, Some(1060));
        let t = access_token(r#"{"access_token":"x"}"#, 1000).unwrap();
        assert_eq!(t.expires_on, None);
        let expired = AccessToken {
            token: Secret::new("x"),
            expires_on: Some(10),
        };
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert!(expired.check_fresh(at(9), "t").is_ok());
        let e = expired.check_fresh(at(15), "t").unwrap_err().to_string();
        assert!(e.contains("expired 5 s ago"), "{e}");
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
