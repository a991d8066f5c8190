//! The profile model: named credential profiles, where each one's credentials
//! come from, and the `[aws]` settings around them (built by
//! `s2iam_sidecar::config::aws_profile` from the file).

use std::path::PathBuf;
use std::time::Duration;

use super::policy::{self, PolicyRule};
use crate::env::ProviderConfig;
use crate::provider::aws::{region_from_env, Arn};
use crate::provider::CloudProvider;

/// Never hand out credentials with less than this left (and the default).
pub const MIN_REMAINING: Duration = Duration::from_secs(300);
/// The default GCP audience of web identity tokens for AWS.
pub const DEFAULT_WEB_IDENTITY_AUDIENCE: &str = "sts.amazonaws.com";

/// Where a profile's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    /// The workload's own AWS identity.
    Workload,
    /// `AssumeRole` into `role_arn` with the workload's AWS credentials.
    AssumeRole {
        /// The role.
        role_arn: String,
        /// The session name, visible in CloudTrail.
        session_name: String,
        /// The session lifetime; `None`: the role's default.
        duration: Option<Duration>,
        /// Required by some trust policies.
        external_id: Option<String>,
    },
    /// `AssumeRoleWithWebIdentity` into `role_arn` with the workload's GCP or Azure token.
    WebIdentity {
        /// The role.
        role_arn: String,
        /// The session name, visible in CloudTrail.
        session_name: String,
        /// The session lifetime; `None`: the role's default.
        duration: Option<Duration>,
        /// `None`: the detected provider (which must be GCP or Azure).
        provider: Option<CloudProvider>,
        /// The GCP ID token's audience; for Azure, the resource of the access token.
        audience: Option<String>,
    },
}

impl ProfileSource {
    /// The name used in the config file (`self`, `assume_role`, `web_identity`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Workload => "self",
            Self::AssumeRole { .. } => "assume_role",
            Self::WebIdentity { .. } => "web_identity",
        }
    }

    /// The role assumed, if the source assumes one.
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
    /// The name callers ask for (`/v1/aws/credentials/{name}`).
    pub name: String,
    /// Where the credentials come from.
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
    /// The token file's mode.
    pub authorization_token_mode: u32,
    /// STS and S3 region; `None`: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// An S3-compatible endpoint for presigning; `None`: `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`, else derived from the region (partition, FIPS,
    /// dual-stack: `https://s3.{region}.amazonaws.com` in the `aws` partition).
    pub s3_endpoint: Option<String>,
    /// Presign path-style URLs (S3-compatible stores).
    pub s3_path_style: bool,
    /// Never hand out credentials with less than this left (at least 5 minutes).
    pub min_remaining: Duration,
    /// The named profiles.
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
    /// The profile called `name`.
    pub fn profile(&self, name: &str) -> Option<&AwsProfile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// The STS and S3 region: configured, else from the environment, else `us-east-1`.
    pub fn region(&self, cfg: &ProviderConfig) -> String {
        self.region
            .clone()
            .or_else(|| region_from_env(cfg))
            .unwrap_or_else(|| crate::provider::aws::DEFAULT_REGION.to_string())
    }

    /// The S3 endpoint presigned URLs point at: the configured one, else the
    /// environment's or the region's (see [`crate::env::aws_endpoints::s3`]).
    pub fn s3_endpoint(
        &self,
        cfg: &ProviderConfig,
    ) -> Result<String, crate::env::aws_endpoints::EndpointError> {
        match &self.s3_endpoint {
            Some(e) => Ok(e.clone()),
            None => cfg.endpoints.s3(&self.region(cfg)).map(|e| e.url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_endpoint_is_configured_else_derived_from_the_region() {
        use crate::env::{Env, Fs};
        let cfg = |pairs: &[(&str, &str)]| {
            ProviderConfig::with_env(
                Env::from_pairs(pairs.to_vec()),
                Fs::from_files::<std::path::PathBuf, String>([]),
            )
        };
        let settings = AwsSettings::default();
        assert_eq!(
            settings
                .s3_endpoint(&cfg(&[("AWS_REGION", "cn-north-1")]))
                .unwrap(),
            "https://s3.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            settings
                .s3_endpoint(&cfg(&[
                    ("AWS_REGION", "us-gov-west-1"),
                    ("AWS_USE_FIPS_ENDPOINT", "true"),
                    ("AWS_USE_DUALSTACK_ENDPOINT", "true"),
                ]))
                .unwrap(),
            "https://s3-fips.dualstack.us-gov-west-1.amazonaws.com"
        );
        let err = settings
            .s3_endpoint(&cfg(&[
                ("AWS_REGION", "cn-north-1"),
                ("AWS_USE_FIPS_ENDPOINT", "true"),
            ]))
            .unwrap_err();
        assert!(err.to_string().contains("does not support FIPS"), "{err}");
        let configured = AwsSettings {
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            ..AwsSettings::default()
        };
        assert_eq!(
            configured
                .s3_endpoint(&cfg(&[("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")]))
                .unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            settings
                .s3_endpoint(&cfg(&[("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")]))
                .unwrap(),
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn profile_names() {
        for ok in ["analytics", "admin-1", "a.b_c"] {
            assert!(validate_profile_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "a?x", &"x".repeat(65)] {
            assert!(validate_profile_name(bad).is_err(), "{bad}");
        }
    }
}
