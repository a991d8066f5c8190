//! AWS and S3 credential vending: named credential profiles, each resolved to
//! short-lived AWS credentials, kept warm in a [`Cache`], served to SDKs (the
//! container-credentials protocol, `credential_process`, the Rust SDK provider
//! behind the `aws-sdk` feature) and used to presign S3 URLs.
//!
//! A profile's credentials come from one of three sources:
//! - `self`: the workload's own AWS identity (the SDKs' default chain, made
//!   temporary with `GetSessionToken` when the keys are long-lived);
//! - `assume_role`: `AssumeRole` into `role_arn` with the workload's credentials;
//! - `web_identity`: `AssumeRoleWithWebIdentity` into `role_arn` with the workload's
//!   GCP ID token or Azure access token, so a pod on GCP or Azure gets S3 access
//!   with no AWS keys anywhere.
//!
//! A profile may carry a session policy generated from simple rules (see
//! [`policy`]); STS then issues credentials that can do at most what both the role
//! and the rules allow, and presigning refuses buckets outside the rules.
//!
//! Credentials are never handed out with less than `min_remaining` (default and
//! minimum 5 minutes) left: SDKs refresh only seconds before `Expiration`
//! (DESIGN §6).

pub mod local;
pub mod policy;
pub mod presign;
#[cfg(feature = "aws-sdk")]
pub mod sdk;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::cache::{Cache, CachePolicy, Expiring, Fetcher};
use crate::client::Client;
use crate::provider::aws::sts::{AssumeRoleRequest, StsError};
use crate::provider::aws::{credentials, region_from_env, Arn, AwsCredentials, AwsProvider};
use crate::provider::{
    CloudProvider, IdentityRequest, Provider, ProviderConfig, DEFAULT_AZURE_RESOURCE,
    DEFAULT_ROLE_SESSION_NAME,
};
use crate::secret::Secret;
use crate::util::rfc3339;
pub use policy::{PolicyRule, S3Action};

/// Never hand out credentials with less than this left (and the default).
pub const MIN_REMAINING: Duration = Duration::from_secs(300);
/// The default GCP audience of web identity tokens for AWS.
pub const DEFAULT_WEB_IDENTITY_AUDIENCE: &str = "sts.amazonaws.com";
/// Presigned URLs last this long unless asked otherwise (capped by the
/// credentials' remaining lifetime).
pub const DEFAULT_PRESIGN_EXPIRES: u64 = 3600;
/// Where credentials come from when a caller gives no `expiration`: assume this
/// lifetime and fetch again after it.
const UNKNOWN_EXPIRY_LIFETIME: Duration = Duration::from_secs(900);

/// Where a profile's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    /// The workload's own AWS identity.
    Workload,
    AssumeRole {
        role_arn: String,
        session_name: String,
        duration: Option<Duration>,
        external_id: Option<String>,
    },
    WebIdentity {
        role_arn: String,
        session_name: String,
        duration: Option<Duration>,
        /// `None`: the detected provider (which must be GCP or Azure).
        provider: Option<CloudProvider>,
        /// The GCP ID token's audience; for Azure, the resource of the access token.
        audience: Option<String>,
    },
}

impl ProfileSource {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Workload => "self",
            Self::AssumeRole { .. } => "assume_role",
            Self::WebIdentity { .. } => "web_identity",
        }
    }

    pub fn role_arn(&self) -> Option<&str> {
        match self {
            Self::Workload => None,
            Self::AssumeRole { role_arn, .. } | Self::WebIdentity { role_arn, .. } => {
                Some(role_arn)
            }
        }
    }
}

/// A named credential profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsProfile {
    pub name: String,
    pub source: ProfileSource,
    /// Session policy rules; empty: no session policy (the role's permissions).
    pub rules: Vec<PolicyRule>,
    /// Fetch at start and keep warm; readiness waits for it. Otherwise the
    /// credentials are fetched on first request.
    pub warm: bool,
}

impl AwsProfile {
    /// The session policy JSON sent to STS, if the profile has rules.
    pub fn session_policy(&self) -> Option<String> {
        let partition = self
            .source
            .role_arn()
            .and_then(Arn::parse)
            .map(|a| a.partition)
            .unwrap_or("aws");
        policy::session_policy(&self.rules, partition)
    }
}

/// Profile names: what goes in a URL path and a shell command line.
pub fn validate_profile_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a profile name (1-64 characters of A-Z, a-z, 0-9, '-', '_', '.')",
            crate::util::snippet(name, 80)
        ))
    }
}

/// The `[aws]` settings and the `[[aws_profile]]`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// The sidecar writes its random container-credentials token here at start.
    pub authorization_token_file: Option<PathBuf>,
    pub authorization_token_mode: u32,
    /// STS and S3 region; `None`: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// An S3-compatible endpoint for presigning; `None`: `https://s3.{region}.amazonaws.com`.
    pub s3_endpoint: Option<String>,
    pub s3_path_style: bool,
    pub min_remaining: Duration,
    pub profiles: Vec<AwsProfile>,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            authorization_token_file: None,
            authorization_token_mode: 0o640,
            region: None,
            s3_endpoint: None,
            s3_path_style: false,
            min_remaining: MIN_REMAINING,
            profiles: Vec::new(),
        }
    }
}

impl AwsSettings {
    pub fn profile(&self, name: &str) -> Option<&AwsProfile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    pub fn region(&self, cfg: &ProviderConfig) -> String {
        self.region
            .clone()
            .or_else(|| region_from_env(cfg))
            .unwrap_or_else(|| crate::provider::aws::DEFAULT_REGION.to_string())
    }

    pub fn s3_endpoint(&self, cfg: &ProviderConfig) -> String {
        self.s3_endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", self.region(cfg)))
    }
}

/// Credentials as vended, with their lifetime on the monotonic clock.
#[derive(Debug, Clone)]
pub struct VendedCredentials {
    pub credentials: AwsCredentials,
    /// The wall-clock expiry reported to SDKs.
    pub expiration: SystemTime,
    received: Instant,
    expires: Instant,
}

impl VendedCredentials {
    /// Fixes the lifetime at receipt: `now` is the wall clock, `at` the monotonic.
    pub fn new(credentials: AwsCredentials, now: SystemTime, at: Instant) -> Self {
        let expiration = credentials
            .expiration
            .unwrap_or(now + UNKNOWN_EXPIRY_LIFETIME);
        let lifetime = expiration.duration_since(now).unwrap_or(Duration::ZERO);
        Self {
            credentials,
            expiration,
            received: at,
            expires: at + lifetime,
        }
    }

    pub fn remaining(&self) -> Duration {
        self.expires.saturating_duration_since(Instant::now())
    }

    /// The AWS container-credentials answer.
    pub fn container_json(&self) -> Value {
        let c = &self.credentials;
        let mut doc = json!({
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret.expose(),
            "Token": c.session_token.as_ref().map(|t| t.expose()).unwrap_or(""),
            "Expiration": rfc3339(self.expiration),
        });
        if let Some(account) = &c.account_id {
            doc["AccountId"] = json!(account);
        }
        doc
    }

    /// The `credential_process` answer.
    pub fn credential_process_json(&self) -> Value {
        let c = &self.credentials;
        let mut doc = json!({
            "Version": 1,
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret.expose(),
            "SessionToken": c.session_token.as_ref().map(|t| t.expose()).unwrap_or(""),
            "Expiration": rfc3339(self.expiration),
        });
        if let Some(account) = &c.account_id {
            doc["AccountId"] = json!(account);
        }
        doc
    }

    /// Reads a container-credentials answer (what the sidecar serves) back.
    pub fn from_container_json(doc: &Value) -> Option<Self> {
        let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        let expiration = s("Expiration").and_then(|e| crate::util::parse_rfc3339(&e))?;
        let credentials = AwsCredentials {
            access_key_id: s("AccessKeyId")?,
            secret: Secret::new(s("SecretAccessKey")?),
            session_token: s("Token").filter(|t| !t.is_empty()).map(Secret::new),
            expiration: Some(expiration),
            account_id: s("AccountId"),
        };
        Some(Self::new(credentials, SystemTime::now(), Instant::now()))
    }
}

impl Expiring for VendedCredentials {
    fn received(&self) -> Instant {
        self.received
    }
    fn expires(&self) -> Instant {
        self.expires
    }
}

/// Why credentials or a presigned URL could not be had. Messages never contain a
/// credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsCredsError {
    #[error("unknown AWS profile {name:?}; configured: {}", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownProfile { name: String, known: Vec<String> },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("profile {profile:?}: no identity to get AWS credentials with: {reason}")]
    Identity { profile: String, reason: String },
    #[error("profile {profile:?}: {reason}")]
    Refused { profile: String, reason: String },
    #[error("profile {profile:?}: {reason}")]
    Unavailable { profile: String, reason: String },
    #[error("profile {profile:?}: the credentials have only {remaining_secs}s left, less than aws.min_remaining ({min_secs}s); a refresh is pending")]
    Expiring {
        profile: String,
        remaining_secs: u64,
        min_secs: u64,
    },
}

impl AwsCredsError {
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownProfile { .. } => 404,
            Self::BadRequest(_) => 400,
            Self::Forbidden(_) => 403,
            Self::Refused { .. } => 502,
            Self::Identity { .. } | Self::Unavailable { .. } | Self::Expiring { .. } => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownProfile { .. } => "unknown_profile",
            Self::BadRequest(_) => "bad_request",
            Self::Forbidden(_) => "forbidden",
            Self::Identity { .. } => "identity_unavailable",
            Self::Refused { .. } => "sts_refused",
            Self::Unavailable { .. } => "sts_unavailable",
            Self::Expiring { .. } => "credentials_expiring",
        }
    }

    fn sts(profile: &str, e: &StsError) -> Self {
        let reason = e.to_string();
        let profile = profile.to_string();
        match e {
            // A 4xx is a refusal whether or not STS (or a proxy in front of it)
            // sent an error document: retrying will not help.
            StsError::Service { status, .. } | StsError::Status { status, .. }
                if (400..500).contains(status) && *status != 429 =>
            {
                Self::Refused { profile, reason }
            }
            _ => Self::Unavailable { profile, reason },
        }
    }
}

/// The profile cache of the sidecar.
pub type AwsCache = Cache<String, VendedCredentials, AwsCredsError>;

/// Resolves profiles to credentials through a cache, and presigns.
#[derive(Clone)]
pub struct AwsCredentialVendor {
    settings: Arc<AwsSettings>,
    client: Arc<Client>,
    cache: AwsCache,
}

impl std::fmt::Debug for AwsCredentialVendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentialVendor")
            .field("profiles", &self.settings.profiles.len())
            .finish_non_exhaustive()
    }
}

/// A presign request (the query of `GET /v1/s3/presign`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignRequest {
    pub profile: String,
    pub bucket: String,
    pub key: String,
    /// `GET` (default) or `PUT`.
    pub method: Option<String>,
    /// Seconds; default 1 hour, at most 7 days and the credentials' remaining life.
    pub expires: Option<u64>,
}

/// A presigned URL.
#[derive(Debug, Clone)]
pub struct Presigned {
    pub url: String,
    pub method: &'static str,
    pub expires_at: SystemTime,
    pub expires_in: u64,
}

impl Presigned {
    pub fn json(&self) -> Value {
        json!({
            "url": self.url,
            "method": self.method,
            "expires_at": rfc3339(self.expires_at),
            "expires_in": self.expires_in,
        })
    }
}

impl AwsCredentialVendor {
    /// `policy.min_remaining` is raised to `settings.min_remaining`.
    pub fn new(settings: AwsSettings, client: Arc<Client>, policy: CachePolicy) -> Self {
        let settings = Arc::new(settings);
        let policy = CachePolicy {
            min_remaining: settings.min_remaining.max(policy.min_remaining),
            ..policy
        };
        let cache = Cache::new(policy, fetcher(settings.clone(), client.clone()));
        Self {
            settings,
            client,
            cache,
        }
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    pub fn cache(&self) -> &AwsCache {
        &self.cache
    }

    fn provider_config(&self) -> &ProviderConfig {
        self.client.provider_config()
    }

    fn known(&self, name: &str) -> Result<&AwsProfile, AwsCredsError> {
        self.settings
            .profile(name)
            .ok_or_else(|| AwsCredsError::UnknownProfile {
                name: crate::util::snippet(name, 80),
                known: self
                    .settings
                    .profiles
                    .iter()
                    .map(|p| p.name.clone())
                    .collect(),
            })
    }

    /// The profile's credentials: cached, refreshed ahead of expiry, never with less
    /// than `min_remaining` left.
    pub async fn credentials(&self, profile: &str) -> Result<VendedCredentials, AwsCredsError> {
        self.known(profile)?;
        let vended = self
            .cache
            .get(profile.to_string())
            .await
            .map_err(|e| (*e.error).clone())?;
        let remaining = vended.remaining();
        let min = self.cache.policy().min_remaining;
        if remaining < min {
            return Err(AwsCredsError::Expiring {
                profile: profile.to_string(),
                remaining_secs: remaining.as_secs(),
                min_secs: min.as_secs(),
            });
        }
        Ok(vended)
    }

    /// A presigned S3 URL, checked against the profile's rules.
    pub async fn presign(&self, req: &PresignRequest) -> Result<Presigned, AwsCredsError> {
        let profile = self.known(&req.profile)?;
        let method = match req
            .method
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("GET") => "GET",
            Some("PUT") => "PUT",
            Some(other) => {
                return Err(AwsCredsError::BadRequest(format!(
                    "method {:?} is not GET or PUT",
                    crate::util::snippet(other, 20)
                )))
            }
        };
        policy::validate_bucket_name(&req.bucket).map_err(AwsCredsError::BadRequest)?;
        policy::validate_key(&req.key).map_err(AwsCredsError::BadRequest)?;
        if let Some(e) = req.expires {
            if e == 0 || e > presign::MAX_EXPIRES_SECS {
                return Err(AwsCredsError::BadRequest(format!(
                    "expires={e}: must be between 1 and {} seconds (7 days)",
                    presign::MAX_EXPIRES_SECS
                )));
            }
        }
        let action = if method == "GET" {
            S3Action::Read
        } else {
            S3Action::Write
        };
        if !policy::allowed(&profile.rules, action, &req.bucket, Some(&req.key)) {
            return Err(AwsCredsError::Forbidden(format!(
                "profile {:?} does not allow {action} on bucket {:?} key {:?}",
                profile.name,
                req.bucket,
                crate::util::snippet(&req.key, 200)
            )));
        }
        let creds = self.credentials(&req.profile).await?;
        let remaining = creds.remaining().as_secs();
        let expires = match req.expires {
            Some(e) if e > remaining => {
                return Err(AwsCredsError::BadRequest(format!(
                    "expires={e}: at most {remaining} seconds, the remaining lifetime of profile {:?}'s credentials (a presigned URL stops working when they expire)",
                    profile.name
                )))
            }
            Some(e) => e,
            None => DEFAULT_PRESIGN_EXPIRES.min(remaining),
        };
        let cfg = self.provider_config();
        let endpoint_text = self.settings.s3_endpoint(cfg);
        let endpoint = url::Url::parse(&endpoint_text).map_err(|e| AwsCredsError::Unavailable {
            profile: profile.name.clone(),
            reason: format!("aws.s3_endpoint {endpoint_text:?} is not a URL: {e}"),
        })?;
        let region = self.settings.region(cfg);
        let now = cfg.clock.now();
        let c = &creds.credentials;
        let url = presign::presign(&presign::PresignParams {
            method,
            endpoint: &endpoint,
            path_style: self.settings.s3_path_style,
            bucket: &req.bucket,
            key: &req.key,
            region: &region,
            expires_secs: expires,
            time: now,
            access_key_id: &c.access_key_id,
            secret_access_key: c.secret.expose(),
            session_token: c.session_token.as_ref().map(|t| t.expose()),
        })
        .map_err(AwsCredsError::BadRequest)?;
        tracing::info!(profile = %profile.name, method, bucket = %req.bucket, expires, "presigned S3 URL");
        Ok(Presigned {
            url,
            method,
            expires_at: now + Duration::from_secs(expires),
            expires_in: expires,
        })
    }
}

fn fetcher(
    settings: Arc<AwsSettings>,
    client: Arc<Client>,
) -> Fetcher<String, VendedCredentials, AwsCredsError> {
    Arc::new(move |name: String| {
        let settings = settings.clone();
        let client = client.clone();
        Box::pin(async move {
            let result = resolve(&settings, &client, &name).await;
            match &result {
                Ok(v) => tracing::info!(
                    profile = %name,
                    access_key_id = %v.credentials.access_key_id,
                    expiration = %rfc3339(v.expiration),
                    "AWS credentials fetched"
                ),
                Err(e) => {
                    tracing::warn!(profile = %name, error = %e, "AWS credentials fetch failed")
                }
            }
            result
        })
    })
}

/// One upstream resolution of a profile (no cache).
pub async fn resolve(
    settings: &AwsSettings,
    client: &Client,
    name: &str,
) -> Result<VendedCredentials, AwsCredsError> {
    let profile = settings
        .profile(name)
        .ok_or_else(|| AwsCredsError::UnknownProfile {
            name: name.to_string(),
            known: settings.profiles.iter().map(|p| p.name.clone()).collect(),
        })?;
    let cfg = client.provider_config();
    let region = settings.region(cfg);
    let sts = crate::provider::aws::StsClient::new(cfg, &region);
    let identity_err = |reason: String| AwsCredsError::Identity {
        profile: name.to_string(),
        reason,
    };
    let credentials = match &profile.source {
        ProfileSource::Workload => {
            AwsProvider::default()
                .session(cfg, DEFAULT_ROLE_SESSION_NAME)
                .await
                .map_err(|e| identity_err(e.to_string()))?
                .credentials
        }
        ProfileSource::AssumeRole {
            role_arn,
            session_name,
            duration,
            external_id,
        } => {
            let loaded = credentials::load(cfg, &region)
                .await
                .map_err(|e| identity_err(e.to_string()))?;
            let mut req = AssumeRoleRequest::new(role_arn, session_name);
            if let Some(d) = duration {
                req = req.duration_seconds(d.as_secs() as u32);
            }
            if let Some(id) = external_id {
                req = req.external_id(id);
            }
            if let Some(p) = profile.session_policy() {
                req = req.policy(p);
            }
            sts.assume_role(&loaded.credentials, &req)
                .await
                .map_err(|e| AwsCredsError::sts(name, &e))?
                .credentials
        }
        ProfileSource::WebIdentity {
            role_arn,
            session_name,
            duration,
            provider,
            audience,
        } => {
            let provider = match provider {
                Some(kind) => Provider::for_kind(*kind),
                None => client
                    .provider()
                    .await
                    .map_err(|e| identity_err(e.to_string()))?
                    .clone(),
            };
            let kind = provider.kind();
            if kind == CloudProvider::Aws {
                return Err(identity_err(
                    "web_identity needs a GCP or Azure identity, and this workload is on AWS; use source = \"assume_role\"".into(),
                ));
            }
            let id_req = IdentityRequest {
                gcp_audience: audience
                    .clone()
                    .unwrap_or_else(|| DEFAULT_WEB_IDENTITY_AUDIENCE.into()),
                azure_resource: audience
                    .clone()
                    .unwrap_or_else(|| DEFAULT_AZURE_RESOURCE.into()),
                role_session_name: session_name.clone(),
            };
            let (headers, _) = provider
                .identity(cfg, &id_req)
                .await
                .map_err(|e| identity_err(e.to_string()))?;
            let token = headers
                .get("Authorization")
                .and_then(|v| v.expose().strip_prefix("Bearer "))
                .map(Secret::new)
                .ok_or_else(|| identity_err(format!("the {kind} identity has no bearer token")))?;
            let mut req = AssumeRoleRequest::new(role_arn, session_name);
            if let Some(d) = duration {
                req = req.duration_seconds(d.as_secs() as u32);
            }
            if let Some(p) = profile.session_policy() {
                req = req.policy(p);
            }
            sts.assume_role_with_web_identity_request(&req, &token)
                .await
                .map_err(|e| AwsCredsError::sts(name, &e))?
                .credentials
        }
    };
    Ok(VendedCredentials::new(
        credentials,
        cfg.clock.now(),
        Instant::now(),
    ))
}

/// A fresh random token for the container-credentials endpoint (256 bits, hex).
pub fn generate_authorization_token() -> Secret {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret::new(hex::encode(bytes))
}

/// Writes the token to `path` atomically with `mode`, creating the directory.
pub fn write_authorization_token(
    path: &std::path::Path,
    token: &Secret,
    mode: u32,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::serve::sinks::write_atomic(path, token.expose().as_bytes(), mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names() {
        for ok in ["analytics", "admin-1", "a.b_c"] {
            assert!(validate_profile_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "a?x", &"x".repeat(65)] {
            assert!(validate_profile_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vended_json_shapes_and_lifetime() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut c = AwsCredentials::new_static("ASIAX", "sec");
        c.session_token = Some(Secret::new("tok"));
        c.expiration = Some(now + Duration::from_secs(3600));
        c.account_id = Some("123456789012".into());
        let at = Instant::now();
        let v = VendedCredentials::new(c, now, at);
        assert_eq!(v.expires() - v.received(), Duration::from_secs(3600));
        assert_eq!(
            v.container_json(),
            json!({"AccessKeyId": "ASIAX", "SecretAccessKey": "sec", "Token": "tok",
                   "Expiration": "2023-11-14T23:13:20Z", "AccountId": "123456789012"})
        );
        let p = v.credential_process_json();
        assert_eq!(p["Version"], 1);
        assert_eq!(p["SessionToken"], "tok");
        let back = VendedCredentials::from_container_json(&v.container_json()).unwrap();
        assert_eq!(back.credentials, v.credentials);
        // Debug output of the vended value never shows the secret.
        assert!(!format!("{v:?}").contains("sec\""));
    }

    #[test]
    fn missing_expiry_is_assumed_short() {
        let now = SystemTime::now();
        let v = VendedCredentials::new(AwsCredentials::new_static("A", "s"), now, Instant::now());
        assert_eq!(v.expiration, now + UNKNOWN_EXPIRY_LIFETIME);
    }

    #[test]
    fn error_statuses() {
        let e = AwsCredsError::UnknownProfile {
            name: "x".into(),
            known: vec!["a".into()],
        };
        assert_eq!((e.status(), e.code()), (404, "unknown_profile"));
        assert!(e.to_string().contains("configured: a"));
        assert_eq!(AwsCredsError::Forbidden(String::new()).status(), 403);
    }

    #[test]
    fn tokens_are_random_and_long() {
        let a = generate_authorization_token();
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, generate_authorization_token());
    }
}
