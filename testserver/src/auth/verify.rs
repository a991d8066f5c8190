//! Verifies the cloud identity an exchange request presents, and negotiates the
//! identity format of the issued JWT's `sub`.
//!
//! The provider is chosen from the request headers, never from the body:
//!
//! - `X-AWS-Access-Key-ID` present → **AWS**. `X-AWS-Secret-Access-Key` is required,
//!   `X-AWS-Session-Token` optional (long-lived `AKIA` keys have none). The
//!   credentials are checked by calling the mock STS at [`Verifier::sts_url`]:
//!   `POST /` with the form `Action=GetCallerIdentity&Version=2011-06-15`,
//!   SigV4-signed (region `us-east-1`, service `sts`) with the presented keys. The
//!   `GetCallerIdentityResult` (`Arn`, `UserId`, `Account`) is the identity; an STS
//!   `ErrorResponse` (`<Code>`, `<Message>`) rejects it.
//! - otherwise `Authorization: Bearer <JWT>` → the unverified `iss` routes it:
//!   `https://accounts.google.com` (or `accounts.google.com`) → **GCP**, an issuer
//!   under `https://sts.windows.net/` or `https://login.microsoftonline.com/` →
//!   **Azure**. The token is then verified for real: RS256 with the mock issuer's
//!   key (`kid` must match), `exp`/`nbf`/`iat` with 60 s leeway, issuer, audience
//!   (GCP: `required_audience` when set, else one of `allowed_audiences`; Azure:
//!   `https://management.azure.com[/]` or one of `allowed_audiences`) and, for Azure,
//!   the tenant (`tid`, consistent with `iss`, equal to `azure_tenant` unless that is
//!   `common`).
//! - `X-Cloud-Provider`, when sent (the Python client sends it for AWS and Azure),
//!   must name the provider the credentials belong to.
//!
//! Identity formats (`X-S2IAM-Identity-Format-Preference`, comma separated, trimmed,
//! unknown tokens ignored) follow the reference `SelectIdentityFormat`: the first
//! preferred format valid for the identity, else the built-in order
//! `aws-arn, aws-iam-role-arn, aws-role-id, gcp-sa-email, gcp-sa-unique-id,
//! azure-object-id, azure-resource-id`, else the provider's floor. Valid formats:
//!
//! | provider | format              | value                                      | valid when            |
//! |----------|---------------------|--------------------------------------------|-----------------------|
//! | AWS      | `aws-arn` (floor)   | caller ARN                                 | always                |
//! | AWS      | `aws-iam-role-arn`  | `arn:{partition}:iam::{account}:role/{role}` | assumed-role ARN    |
//! | AWS      | `aws-role-id`       | `UserId` before `:`                        | assumed-role ARN      |
//! | GCP      | `gcp-sa-unique-id` (floor) | `sub`                               | always                |
//! | GCP      | `gcp-sa-email`      | `email`                                    | `email_verified: true`|
//! | Azure    | `azure-object-id` (floor) | `oid`, else `sub`, else `appid`      | always                |
//! | Azure    | `azure-resource-id` | `xms_mirid`                                | user-assigned identity|
//!
//! Errors: [`VerifyError::Malformed`] is a request the server cannot read (400),
//! [`VerifyError::Rejected`] is a credential that does not verify (401; the reference
//! answers 400 for both), [`VerifyError::Upstream`] is STS failing or unreachable
//! (502). Messages never contain credential values.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use super::{AuthConfig, VerifiedIdentity};
use crate::cloud::aws::sigv4::{self, SigningCredentials};
use crate::cloud::MockCloud;
use crate::keys::SigningKey;

/// Verifies the identities clients present.
#[derive(Clone)]
pub struct Verifier {
    /// The mock cloud whose tokens and credentials are checked.
    pub cloud: MockCloud,
    /// The mock STS `GetCallerIdentity` is forwarded to.
    pub sts_url: String,
    /// The client that forwards it.
    pub http: reqwest::Client,
}

/// Header naming the client's identity-format preference.
pub const PREFERENCE_HEADER: &str = "x-s2iam-identity-format-preference";

/// Clock skew tolerated on `exp`, `nbf` and `iat` of presented tokens.
const LEEWAY_SECS: u64 = 60;
const GOOGLE_ISSUERS: &[&str] = &["https://accounts.google.com", "accounts.google.com"];
const AZURE_V1_ISSUER_PREFIX: &str = "https://sts.windows.net/";
const AZURE_V2_ISSUER_PREFIX: &str = "https://login.microsoftonline.com/";
/// The audience of the ARM tokens the Azure clients fetch; always accepted, as in
/// the reference verifier.
const AZURE_MANAGEMENT_AUDIENCE: &str = "https://management.azure.com/";
const STS_REGION: &str = "us-east-1";
const STS_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
const STS_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// Every identity format, in the reference's built-in default order; within each
/// provider the historical default comes first.
const DEFAULT_FORMATS: &[&str] = &[
    "aws-arn",
    "aws-iam-role-arn",
    "aws-role-id",
    "gcp-sa-email",
    "gcp-sa-unique-id",
    "azure-object-id",
    "azure-resource-id",
];

/// JWT claims never copied from a presented token into the issued one: they would
/// describe the presented token (its issuer, audience, lifetime), not ours.
const REGISTERED_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// Why a request's identity was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The request itself is unreadable (e.g. a header that is not ASCII).
    #[error("{0}")]
    Malformed(String),
    /// The credentials are missing, malformed or do not verify.
    #[error("verification failed: {0}")]
    Rejected(String),
    /// STS failed or could not be reached, so nothing could be verified.
    #[error("cannot verify AWS credentials: {0}")]
    Upstream(String),
}

impl VerifyError {
    /// The HTTP status the refusal maps to.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::Rejected(_) => 401,
            Self::Upstream(_) => 502,
        }
    }

    /// The `error` field of the JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "invalid_request",
            Self::Rejected(_) => "verification_failed",
            Self::Upstream(_) => "upstream_error",
        }
    }
}

fn rejected(msg: impl Into<String>) -> VerifyError {
    VerifyError::Rejected(msg.into())
}

/// The cloud a verified identity belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// AWS.
    Aws,
    /// GCP.
    Gcp,
    /// Azure.
    Azure,
}

impl Provider {
    /// `aws`, `gcp` or `azure`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Gcp => "gcp",
            Self::Azure => "azure",
        }
    }
}

/// One representation of a verified principal: `(format, value)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The identity format (`aws-iam-role-arn`, ...).
    pub format: &'static str,
    /// The identifier in that format.
    pub value: String,
}

fn candidate(format: &'static str, value: impl Into<String>) -> Candidate {
    Candidate {
        format,
        value: value.into(),
    }
}

/// What verification established, before identity-format negotiation.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The cloud.
    pub provider: Provider,
    /// Valid formats for this identity, floor first (never empty).
    pub candidates: Vec<Candidate>,
    /// AWS account, GCP project, Azure subscription.
    pub account_id: String,
    /// Region or location, when known.
    pub region: String,
    /// Role, service account or managed identity.
    pub resource_type: String,
    /// Other verified facts.
    pub additional_claims: BTreeMap<String, String>,
}

impl Verified {
    /// Picks the `sub` for `preference` (the raw header value, possibly empty).
    pub fn negotiate(self, preference: &str) -> VerifiedIdentity {
        let prefs = parse_preference(preference);
        let chosen = select_identity_format(&self.candidates, &prefs)
            .cloned()
            .unwrap_or_else(|| candidate("", ""));
        VerifiedIdentity {
            provider: self.provider.as_str().to_string(),
            identifier: chosen.value,
            identity_format: chosen.format.to_string(),
            account_id: self.account_id,
            region: self.region,
            resource_type: self.resource_type,
            additional_claims: self.additional_claims,
        }
    }
}

/// Splits a preference header: trimmed, empty entries dropped, unknown tokens kept
/// (they simply never match).
pub fn parse_preference(header: &str) -> Vec<&str> {
    header
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// The reference negotiation: client preference, then the built-in order, then
/// the floor (the first candidate). Only ever reorders among already-verified
/// representations; `None` only for an empty candidate list.
pub fn select_identity_format<'a>(
    candidates: &'a [Candidate],
    preference: &[&str],
) -> Option<&'a Candidate> {
    let lists: [&[&str]; 2] = [preference, DEFAULT_FORMATS];
    lists
        .iter()
        .flat_map(|list| list.iter())
        .find_map(|wanted| candidates.iter().find(|c| c.format == *wanted))
        .or_else(|| candidates.first())
}

impl Verifier {
    /// Verifies whichever identity `headers` carry.
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        config: &AuthConfig,
    ) -> Result<Verified, VerifyError> {
        let claimed = header(headers, "x-cloud-provider")?.map(|p| p.trim().to_ascii_lowercase());
        let verified = if header(headers, "x-aws-access-key-id")?.is_some() {
            check_claimed_provider(claimed.as_deref(), Provider::Aws)?;
            self.verify_aws(headers).await?
        } else {
            let token = bearer_token(headers)?;
            match route_bearer(token)? {
                BearerIssuer::Google => {
                    check_claimed_provider(claimed.as_deref(), Provider::Gcp)?;
                    self.verify_gcp(token, config)?
                }
                BearerIssuer::AzureAd => {
                    check_claimed_provider(claimed.as_deref(), Provider::Azure)?;
                    self.verify_azure(token, config)?
                }
            }
        };
        Ok(verified)
    }

    fn verify_gcp(&self, token: &str, config: &AuthConfig) -> Result<Verified, VerifyError> {
        let claims = verify_jwt(&self.cloud.keys().google, token, "Google")?;
        let iss = str_claim(&claims, "iss").unwrap_or_default();
        if !GOOGLE_ISSUERS.contains(&iss) {
            return Err(rejected("Google token has the wrong issuer"));
        }
        let aud =
            str_claim(&claims, "aud").ok_or_else(|| rejected("Google token has no audience"))?;
        check_gcp_audience(aud, config)?;
        gcp_identity(&claims)
    }

    fn verify_azure(&self, token: &str, config: &AuthConfig) -> Result<Verified, VerifyError> {
        let claims = verify_jwt(&self.cloud.keys().azure, token, "Azure AD")?;
        let tid =
            str_claim(&claims, "tid").ok_or_else(|| rejected("Azure token has no tid claim"))?;
        let iss = str_claim(&claims, "iss").unwrap_or_default();
        if iss != format!("{AZURE_V1_ISSUER_PREFIX}{tid}/")
            && iss != format!("{AZURE_V2_ISSUER_PREFIX}{tid}/v2.0")
        {
            return Err(rejected(
                "Azure token issuer does not match its tenant (tid)",
            ));
        }
        if config.azure_tenant != "common" && tid != config.azure_tenant {
            return Err(rejected(format!(
                "Azure token is from tenant {tid}, only tenant {} is accepted",
                config.azure_tenant
            )));
        }
        let aud =
            str_claim(&claims, "aud").ok_or_else(|| rejected("Azure token has no audience"))?;
        // ARM tokens carry the resource with or without its trailing slash,
        // depending on how the client named it (`resource=` vs `scope=.../.default`).
        let arm = aud.trim_end_matches('/') == AZURE_MANAGEMENT_AUDIENCE.trim_end_matches('/');
        if !arm && !config.allowed_audiences.iter().any(|a| a == aud) {
            return Err(rejected(format!("Azure token has invalid audience {aud}")));
        }
        azure_identity(&claims, tid)
    }

    async fn verify_aws(&self, headers: &HeaderMap) -> Result<Verified, VerifyError> {
        let creds = aws_credentials(headers)?;
        let caller = self.get_caller_identity(&creds).await?;
        Ok(aws_identity(&caller))
    }

    /// Calls STS `GetCallerIdentity` signed with `creds`.
    async fn get_caller_identity(
        &self,
        creds: &SigningCredentials,
    ) -> Result<CallerIdentity, VerifyError> {
        let url = url::Url::parse(&self.sts_url)
            .and_then(|u| u.join("/"))
            .map_err(|_| VerifyError::Upstream("no STS endpoint is configured".into()))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return Err(VerifyError::Upstream("the STS endpoint has no host".into())),
        };
        let base = vec![
            ("host".to_string(), host),
            ("content-type".to_string(), STS_CONTENT_TYPE.to_string()),
        ];
        let signed = sigv4::sign(
            "POST",
            &url,
            &base,
            STS_BODY.as_bytes(),
            creds,
            STS_REGION,
            "sts",
            // The auth service's clock is right: the cloud's.
            self.cloud.now_unix(),
        );
        let mut req = self
            .http
            .post(url)
            .header("content-type", STS_CONTENT_TYPE)
            .body(STS_BODY);
        for (name, value) in signed {
            req = req.header(name, value);
        }
        let resp = req.send().await.map_err(|e| {
            VerifyError::Upstream(format!("STS request failed: {}", e.without_url()))
        })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| {
            VerifyError::Upstream(format!("cannot read the STS response: {}", e.without_url()))
        })?;
        if status.is_success() {
            parse_caller_identity(&body)
        } else if status.is_client_error() {
            let code = xml_text(&body, "Code").unwrap_or_else(|| status.as_u16().to_string());
            let message = xml_text(&body, "Message").unwrap_or_default();
            Err(rejected(format!(
                "STS rejected the AWS credentials: {code}: {message}"
            )))
        } else {
            Err(VerifyError::Upstream(format!(
                "STS answered {}",
                status.as_u16()
            )))
        }
    }
}

/// A header as text; absent and empty are the same. Non-ASCII is a malformed request.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, VerifyError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s).filter(|s| !s.trim().is_empty()))
            .map_err(|_| VerifyError::Malformed(format!("header {name} is not valid ASCII"))),
    }
}

fn check_claimed_provider(claimed: Option<&str>, actual: Provider) -> Result<(), VerifyError> {
    match claimed {
        Some(c) if c != actual.as_str() => Err(rejected(format!(
            "X-Cloud-Provider says {c:?} but the credentials are {}",
            actual.as_str()
        ))),
        _ => Ok(()),
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer_token(headers: &HeaderMap) -> Result<&str, VerifyError> {
    let Some(auth) = header(headers, "authorization")? else {
        return Err(rejected(
            "no identity headers: send X-AWS-Access-Key-ID/X-AWS-Secret-Access-Key[/X-AWS-Session-Token] \
             or Authorization: Bearer <Google ID token or Azure access token>",
        ));
    };
    let (scheme, token) = auth.trim().split_once(' ').unwrap_or((auth.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(rejected("the Authorization header is not a Bearer token"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(rejected("the Bearer token is empty"));
    }
    Ok(token)
}

/// Who issued a Bearer token, by its unverified `iss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BearerIssuer {
    Google,
    AzureAd,
}

/// Picks the verifier from the token's unverified issuer.
fn route_bearer(token: &str) -> Result<BearerIssuer, VerifyError> {
    let claims =
        crate::keys::peek_claims(token).ok_or_else(|| rejected("the Bearer token is not a JWT"))?;
    let iss =
        str_claim(&claims, "iss").ok_or_else(|| rejected("the Bearer token has no issuer"))?;
    if GOOGLE_ISSUERS.contains(&iss) {
        Ok(BearerIssuer::Google)
    } else if iss.starts_with(AZURE_V1_ISSUER_PREFIX) || iss.starts_with(AZURE_V2_ISSUER_PREFIX) {
        Ok(BearerIssuer::AzureAd)
    } else {
        Err(rejected(format!(
            "tokens from issuer {} are not accepted",
            printable(iss, 120)
        )))
    }
}

/// Checks signature, algorithm, `kid` and time claims.
fn verify_jwt(key: &SigningKey, token: &str, issuer: &str) -> Result<Value, VerifyError> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    let claims: Value = key.verify(token, &validation).map_err(|e| {
        rejected(match e.kind() {
            ErrorKind::ExpiredSignature => format!("{issuer} token has expired"),
            ErrorKind::ImmatureSignature => format!("{issuer} token is not valid yet (nbf)"),
            ErrorKind::InvalidSignature => {
                format!("{issuer} token signature does not verify with the {issuer} signing key")
            }
            ErrorKind::InvalidAlgorithm => format!("{issuer} token is not signed with RS256"),
            ErrorKind::MissingRequiredClaim(c) => format!("{issuer} token has no {c} claim"),
            _ => format!("{issuer} token is malformed: {e}"),
        })
    })?;
    if !claims.is_object() {
        return Err(rejected(format!(
            "{issuer} token claims are not a JSON object"
        )));
    }
    let now = crate::util::now_unix();
    if let Some(iat) = claims.get("iat") {
        let iat = iat
            .as_u64()
            .ok_or_else(|| rejected(format!("{issuer} token has a malformed iat claim")))?;
        if iat > now.saturating_add(LEEWAY_SECS) {
            return Err(rejected(format!(
                "{issuer} token is issued in the future (iat)"
            )));
        }
    }
    Ok(claims)
}

fn check_gcp_audience(aud: &str, config: &AuthConfig) -> Result<(), VerifyError> {
    let ok = match &config.required_audience {
        Some(required) if !required.is_empty() => aud == required,
        _ => config.allowed_audiences.iter().any(|a| a == aud),
    };
    if ok {
        Ok(())
    } else {
        Err(rejected(format!(
            "Google token has invalid audience {}",
            printable(aud, 200)
        )))
    }
}

fn str_claim<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Every string claim except the registered ones, for the issued JWT.
fn string_claims(claims: &Value) -> BTreeMap<String, String> {
    claims
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !REGISTERED_CLAIMS.contains(&k.as_str()))
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect()
}

/// The reference GCP identity: `accountID` is the numeric `sub`; `resourceType` is
/// the first key of the `google` claim (`compute_engine`) or `instance`; the region
/// comes from `google.compute_engine.zone`.
fn gcp_identity(claims: &Value) -> Result<Verified, VerifyError> {
    let sub = str_claim(claims, "sub").ok_or_else(|| rejected("Google token has no sub claim"))?;
    let mut candidates = vec![candidate("gcp-sa-unique-id", sub)];
    if let Some(email) = str_claim(claims, "email") {
        if claims.get("email_verified").and_then(Value::as_bool) == Some(true) {
            candidates.push(candidate("gcp-sa-email", email));
        }
    }
    let google = claims.get("google").and_then(Value::as_object);
    let resource_type = google
        .and_then(|g| g.keys().min().cloned())
        .unwrap_or_else(|| "instance".to_string());
    let region = if resource_type == "compute_engine" {
        google
            .and_then(|g| g.get("compute_engine"))
            .and_then(|ce| ce.get("zone"))
            .and_then(Value::as_str)
            .map(region_from_zone)
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(Verified {
        provider: Provider::Gcp,
        candidates,
        account_id: sub.to_string(),
        region,
        resource_type,
        additional_claims: string_claims(claims),
    })
}

/// `us-east4-c` → `us-east4`; anything with fewer than three dash-separated parts
/// has no region.
fn region_from_zone(zone: &str) -> String {
    let parts: Vec<&str> = zone.split('-').collect();
    if parts.len() >= 3 {
        parts[..parts.len().saturating_sub(1)].join("-")
    } else {
        String::new()
    }
}

/// The reference Azure identity, except `accountID`: the reference tries to parse
/// the tenant out of the issuer and always ends up empty; here it is the tenant.
fn azure_identity(claims: &Value, tid: &str) -> Result<Verified, VerifyError> {
    let principal = ["oid", "sub", "appid"]
        .iter()
        .find_map(|c| str_claim(claims, c))
        .ok_or_else(|| rejected("Azure token has no oid, sub or appid claim"))?;
    let mut candidates = vec![candidate("azure-object-id", principal)];
    let mirid = str_claim(claims, "xms_mirid");
    if let Some(m) = mirid.filter(|m| is_user_assigned(m)) {
        candidates.push(candidate("azure-resource-id", m));
    }
    let (region, resource_type) = mirid.map(azure_resource_facts).unwrap_or_default();
    Ok(Verified {
        provider: Provider::Azure,
        candidates,
        account_id: tid.to_string(),
        region,
        resource_type: if resource_type.is_empty() {
            "unknown".to_string()
        } else {
            resource_type
        },
        additional_claims: string_claims(claims),
    })
}

/// Whether an ARM resource id names a user-assigned managed identity (the only
/// identities `azure-resource-id` is valid for).
fn is_user_assigned(mirid: &str) -> bool {
    mirid
        .to_ascii_lowercase()
        .contains("/providers/microsoft.managedidentity/userassignedidentities/")
}

/// Region and resource type from `xms_mirid`, exactly as the reference derives them:
/// the last two dash-separated parts of a `resourceGroups` segment with more than
/// two parts (case-sensitive, so the lowercase `resourcegroups` Azure really sends
/// gives no region), and the segment after the last `providers`.
fn azure_resource_facts(mirid: &str) -> (String, String) {
    let parts: Vec<&str> = mirid.split('/').collect();
    let mut region = String::new();
    let mut resource_type = String::new();
    for pair in parts.windows(2) {
        if pair[0] == "resourceGroups" {
            let rg: Vec<&str> = pair[1].split('-').collect();
            if let [.., a, b] = rg.as_slice() {
                if rg.len() > 2 {
                    region = format!("{a}-{b}");
                }
            }
        }
        if pair[0] == "providers" {
            resource_type = pair[1].to_string();
        }
    }
    (region, resource_type)
}

fn aws_credentials(headers: &HeaderMap) -> Result<SigningCredentials, VerifyError> {
    let access_key_id = header(headers, "x-aws-access-key-id")?
        .unwrap_or_default()
        .trim();
    let secret = header(headers, "x-aws-secret-access-key")?
        .ok_or_else(|| rejected("X-AWS-Access-Key-ID was sent without X-AWS-Secret-Access-Key"))?;
    let session_token = header(headers, "x-aws-session-token")?;
    Ok(SigningCredentials {
        access_key_id: access_key_id.to_string(),
        secret_access_key: secret.trim().to_string(),
        session_token: session_token.map(|t| t.trim().to_string()),
    })
}

/// `GetCallerIdentityResult`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The caller's ARN.
    pub arn: String,
    /// The caller's unique id.
    pub user_id: String,
    /// The caller's account.
    pub account: String,
}

fn parse_caller_identity(xml: &str) -> Result<CallerIdentity, VerifyError> {
    let result = xml_text(xml, "GetCallerIdentityResult").ok_or_else(|| {
        VerifyError::Upstream("STS answered without a GetCallerIdentityResult".into())
    })?;
    let field = |tag: &str| xml_text(&result, tag).unwrap_or_default();
    let caller = CallerIdentity {
        arn: field("Arn"),
        user_id: field("UserId"),
        account: field("Account"),
    };
    if caller.arn.is_empty() || caller.account.is_empty() {
        return Err(VerifyError::Upstream(
            "STS returned an empty Arn or Account".into(),
        ));
    }
    Ok(caller)
}

/// The unescaped text between `<tag>` and `</tag>` (first occurrence). Enough for
/// the flat, attribute-free elements of STS responses.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let (_, from_open) = xml.split_at(xml.find(&open)?);
    let inner = from_open.strip_prefix(open.as_str())?;
    let inner = inner.get(..inner.find(&close)?)?;
    Some(xml_unescape(inner.trim()))
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// An ARN's six fields, when it is one.
struct Arn<'a> {
    partition: &'a str,
    service: &'a str,
    region: &'a str,
    resource: &'a str,
}

fn parse_arn(arn: &str) -> Option<Arn<'_>> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, service, region, _account, resource] => Some(Arn {
            partition,
            service,
            region,
            resource,
        }),
        _ => None,
    }
}

/// `(partition, role, session)` of `arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
fn parse_assumed_role(arn: &str) -> Option<(&str, &str, &str)> {
    let parsed = parse_arn(arn)?;
    if parsed.service != "sts" {
        return None;
    }
    let mut segments = parsed.resource.splitn(3, '/');
    let kind = segments.next()?;
    let role = segments.next().filter(|r| !r.is_empty())?;
    let session = segments.next().unwrap_or("");
    (kind == "assumed-role").then_some((parsed.partition, role, session))
}

/// The reference AWS identity (go/s2iam/aws/identity.go).
fn aws_identity(caller: &CallerIdentity) -> Verified {
    let arn = caller.arn.as_str();
    let mut candidates = vec![candidate("aws-arn", arn)];
    let mut additional = BTreeMap::new();
    if !caller.user_id.is_empty() {
        additional.insert("UserId".to_string(), caller.user_id.clone());
    }
    if let Some((partition, role, session)) = parse_assumed_role(arn) {
        candidates.push(candidate(
            "aws-iam-role-arn",
            format!("arn:{partition}:iam::{}:role/{role}", caller.account),
        ));
        if let Some((role_id, _)) = caller.user_id.split_once(':') {
            if !role_id.is_empty() {
                candidates.push(candidate("aws-role-id", role_id));
            }
        }
        additional.insert("AssumedRoleArn".to_string(), arn.to_string());
        if !session.is_empty() {
            additional.insert("RoleSessionName".to_string(), session.to_string());
        }
    }
    let parsed = parse_arn(arn);
    Verified {
        provider: Provider::Aws,
        candidates,
        account_id: caller.account.clone(),
        region: parsed
            .as_ref()
            .map(|a| a.region.to_string())
            .unwrap_or_default(),
        resource_type: parsed
            .and_then(|a| a.resource.split_once('/').map(|(t, _)| t.to_string()))
            .unwrap_or_default(),
        additional_claims: additional,
    }
}

/// `s` cut to `max` characters with control characters replaced, safe to echo in
/// an error message.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(arn: &str, user_id: &str) -> CallerIdentity {
        CallerIdentity {
            arn: arn.into(),
            user_id: user_id.into(),
            account: "111122223333".into(),
        }
    }

    #[test]
    fn assumed_role_has_three_candidates_and_audit_claims() {
        let v = aws_identity(&caller(
            "arn:aws:sts::111122223333:assumed-role/Example/sess-1",
            "AROAEXAMPLE:sess-1",
        ));
        assert_eq!(
            v.candidates,
            vec![
                candidate(
                    "aws-arn",
                    "arn:aws:sts::111122223333:assumed-role/Example/sess-1"
                ),
                candidate("aws-iam-role-arn", "arn:aws:iam::111122223333:role/Example"),
                candidate("aws-role-id", "AROAEXAMPLE"),
            ]
        );
        assert_eq!(v.resource_type, "assumed-role");
        assert_eq!(v.region, "");
        assert_eq!(v.additional_claims["RoleSessionName"], "sess-1");
        assert_eq!(v.additional_claims["UserId"], "AROAEXAMPLE:sess-1");
        assert!(v.additional_claims.contains_key("AssumedRoleArn"));
    }

    #[test]
    fn partition_is_preserved_and_users_only_have_the_floor() {
        let gov = aws_identity(&caller(
            "arn:aws-us-gov:sts::111122223333:assumed-role/R/S",
            "AROA1:S",
        ));
        assert_eq!(
            gov.candidates[1].value,
            "arn:aws-us-gov:iam::111122223333:role/R"
        );
        let user = aws_identity(&caller(
            "arn:aws:iam::111122223333:user/alice",
            "AIDAEXAMPLE",
        ));
        assert_eq!(user.candidates.len(), 1);
        assert_eq!(user.resource_type, "user");
        assert!(!user.additional_claims.contains_key("AssumedRoleArn"));
        let root = aws_identity(&caller("arn:aws:iam::111122223333:root", "111122223333"));
        assert_eq!(root.resource_type, "");
    }

    #[test]
    fn negotiation_follows_preference_then_defaults_then_floor() {
        let c = vec![
            candidate("aws-arn", "a"),
            candidate("aws-iam-role-arn", "r"),
            candidate("aws-role-id", "i"),
        ];
        let pick = |c: &[Candidate], p: &[&str]| select_identity_format(c, p).unwrap().clone();
        assert_eq!(pick(&c, &[]).format, "aws-arn");
        assert_eq!(pick(&c, &["aws-role-id"]).format, "aws-role-id");
        assert_eq!(
            pick(&c, &["future", "gcp-sa-email", "aws-iam-role-arn"]).format,
            "aws-iam-role-arn"
        );
        let g = vec![
            candidate("gcp-sa-unique-id", "1"),
            candidate("gcp-sa-email", "e"),
        ];
        assert_eq!(pick(&g, &[]).format, "gcp-sa-email");
        assert_eq!(pick(&g, &["aws-arn"]).format, "gcp-sa-email");
        let odd = vec![candidate("gcp-sa-unique-id", "1")];
        assert_eq!(pick(&odd, &["gcp-sa-email"]).value, "1");
        let unknown_floor = vec![candidate("future-format", "f")];
        assert_eq!(pick(&unknown_floor, &[]).value, "f");
        assert!(select_identity_format(&[], &[]).is_none());
        assert_eq!(parse_preference(" a , ,b,"), vec!["a", "b"]);
    }

    #[test]
    fn gcp_identity_matches_reference() {
        let claims = serde_json::json!({
            "iss": "https://accounts.google.com", "aud": "x", "sub": "1234", "azp": "1234",
            "email": "sa@p.iam.gserviceaccount.com", "email_verified": true,
            "google": {"compute_engine": {"zone": "us-east4-c", "project_id": "p"}},
        });
        let v = gcp_identity(&claims).unwrap();
        assert_eq!(v.account_id, "1234");
        assert_eq!(v.region, "us-east4");
        assert_eq!(v.resource_type, "compute_engine");
        assert_eq!(v.candidates.len(), 2);
        assert_eq!(
            v.additional_claims.get("email").unwrap(),
            "sa@p.iam.gserviceaccount.com"
        );
        assert!(!v.additional_claims.contains_key("iss"));
        assert!(!v.additional_claims.contains_key("aud"));
        let bare =
            gcp_identity(&serde_json::json!({"sub": "9", "email": "e", "email_verified": false}))
                .unwrap();
        assert_eq!(bare.resource_type, "instance");
        assert_eq!(bare.candidates, vec![candidate("gcp-sa-unique-id", "9")]);
        assert!(gcp_identity(&serde_json::json!({"email": "e"})).is_err());
    }

    #[test]
    fn azure_resource_facts_match_reference() {
        assert_eq!(
            azure_resource_facts("/subscriptions/s/resourceGroups/rg-east-us/providers/Microsoft.Compute/virtualMachines/vm"),
            ("east-us".to_string(), "Microsoft.Compute".to_string())
        );
        assert_eq!(
            azure_resource_facts("/subscriptions/s/resourcegroups/rg-east-us/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u"),
            (String::new(), "Microsoft.ManagedIdentity".to_string())
        );
        assert!(is_user_assigned(
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u"
        ));
        assert!(!is_user_assigned(
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
        ));
    }

    #[test]
    fn sts_xml_is_parsed_and_unescaped() {
        let ok = "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
            <GetCallerIdentityResult><Arn>arn:aws:iam::1:user/a</Arn><UserId>AIDA</UserId>\
            <Account>1</Account></GetCallerIdentityResult></GetCallerIdentityResponse>";
        assert_eq!(
            parse_caller_identity(ok).unwrap(),
            CallerIdentity {
                arn: "arn:aws:iam::1:user/a".into(),
                user_id: "AIDA".into(),
                account: "1".into()
            }
        );
        assert!(parse_caller_identity("<nope/>").is_err());
        assert_eq!(
            xml_text("<Message>a &amp; &lt;b&gt;</Message>", "Message").unwrap(),
            "a & <b>"
        );
        assert_eq!(xml_text("<Code>X", "Code"), None);
    }

    #[test]
    fn zones_and_bearer_routing() {
        assert_eq!(region_from_zone("us-central1-a"), "us-central1");
        assert_eq!(region_from_zone("weird"), "");
        assert!(matches!(
            route_bearer("garbage"),
            Err(VerifyError::Rejected(_))
        ));
        assert_eq!(printable("a\nb", 10), "a?b");
    }
}
