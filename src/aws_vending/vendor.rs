//! The vendor: profiles resolved to credentials through a [`Cache`] (refresh
//! ahead, single flight), and S3 URLs presigned with them.

use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::policy::{self, S3Action};
use super::presign;
use super::profile::{AwsProfile, AwsSettings};
use super::resolve::resolve;
use super::{VendError, VendedCredentials};
use crate::cache::{Cache, CachePolicy, Fetcher};
use crate::client::Client;
use crate::env::ProviderConfig;
use crate::util::{rfc3339, time_after};

/// Presigned URLs last this long unless asked otherwise (capped by the
/// credentials' remaining lifetime).
pub const DEFAULT_PRESIGN_EXPIRES: u64 = 3600;

/// The profile cache of the sidecar.
pub type AwsCache = Cache<String, VendedCredentials, VendError>;

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
    /// The profile whose credentials sign the URL.
    pub profile: String,
    /// The bucket.
    pub bucket: String,
    /// The object key.
    pub key: String,
    /// `GET` (default) or `PUT`.
    pub method: Option<String>,
    /// Seconds; default 1 hour, at most 7 days and the credentials' remaining life.
    pub expires: Option<u64>,
}

/// A presigned URL.
#[derive(Debug, Clone)]
pub struct Presigned {
    /// The presigned URL.
    pub url: String,
    /// `GET` or `PUT`.
    pub method: &'static str,
    /// When the URL stops working.
    pub expires_at: SystemTime,
    /// Seconds the URL works from now.
    pub expires_in: u64,
}

impl Presigned {
    /// The `GET /v1/s3/presign` answer.
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
            serve_while_refreshing: false,
            ..policy
        };
        let cache = Cache::new(policy, fetcher(settings.clone(), client.clone()));
        Self {
            settings,
            client,
            cache,
        }
    }

    /// The `[aws]` settings and profiles.
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// The profile cache (for status, metrics and the refresher).
    pub fn cache(&self) -> &AwsCache {
        &self.cache
    }

    fn provider_config(&self) -> &ProviderConfig {
        self.client.provider_config()
    }

    fn known(&self, name: &str) -> Result<&AwsProfile, VendError> {
        self.settings
            .profile(name)
            .ok_or_else(|| VendError::UnknownProfile {
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
    pub async fn credentials(&self, profile: &str) -> Result<VendedCredentials, VendError> {
        self.known(profile)?;
        let vended = self
            .cache
            .get(profile.to_string())
            .await
            .map_err(|e| (*e.error).clone())?;
        let remaining = vended.remaining();
        let min = self.cache.policy().min_remaining;
        if remaining < min {
            return Err(VendError::Expiring {
                profile: profile.to_string(),
                remaining_secs: remaining.as_secs(),
                min_secs: min.as_secs(),
            });
        }
        Ok(vended)
    }

    /// A presigned S3 URL, checked against the profile's rules.
    pub async fn presign(&self, req: &PresignRequest) -> Result<Presigned, VendError> {
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
                return Err(VendError::BadRequest(format!(
                    "method {:?} is not GET or PUT",
                    crate::util::snippet(other, 20)
                )))
            }
        };
        policy::validate_bucket_name(&req.bucket).map_err(VendError::BadRequest)?;
        policy::validate_key(&req.key).map_err(VendError::BadRequest)?;
        if let Some(e) = req.expires {
            if e == 0 || e > presign::MAX_EXPIRES_SECS {
                return Err(VendError::BadRequest(format!(
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
            return Err(VendError::Forbidden(format!(
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
                return Err(VendError::BadRequest(format!(
                    "expires={e}: at most {remaining} seconds, the remaining lifetime of profile {:?}'s credentials (a presigned URL stops working when they expire)",
                    profile.name
                )))
            }
            Some(e) => e,
            None => DEFAULT_PRESIGN_EXPIRES.min(remaining),
        };
        let cfg = self.provider_config();
        let endpoint_text = self
            .settings
            .s3_endpoint(cfg)
            .map_err(|e| VendError::Unavailable {
                profile: profile.name.clone(),
                reason: format!("no S3 endpoint: {e}"),
            })?;
        let endpoint = url::Url::parse(&endpoint_text).map_err(|e| VendError::Unavailable {
            profile: profile.name.clone(),
            reason: format!("aws.s3_endpoint {endpoint_text:?} is not a URL: {e}"),
        })?;
        let region = self.settings.region(cfg);
        let now = cfg.clock.now();
        // Signed on AWS's clock when STS answers showed this one is off, so the
        // URL is valid now for S3 too (expiry below stays on the local clock).
        let signed_at = cfg.aws_clock_skew.corrected(now);
        let c = &creds.credentials;
        let url = presign::presign(&presign::PresignParams {
            method,
            endpoint: &endpoint,
            path_style: self.settings.s3_path_style,
            bucket: &req.bucket,
            key: &req.key,
            region: &region,
            expires_secs: expires,
            time: signed_at,
            access_key_id: &c.access_key_id,
            secret_access_key: c.secret.expose(),
            session_token: c.session_token.as_ref().map(|t| t.expose()),
        })
        .map_err(VendError::BadRequest)?;
        tracing::info!(profile = %profile.name, method, bucket = %req.bucket, expires, "presigned S3 URL");
        Ok(Presigned {
            url,
            method,
            expires_at: time_after(now, Duration::from_secs(expires)),
            expires_in: expires,
        })
    }
}

fn fetcher(
    settings: Arc<AwsSettings>,
    client: Arc<Client>,
) -> Fetcher<String, VendedCredentials, VendError> {
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
