//! AWS credentials and the chain that finds them, in the order of the AWS SDKs'
//! default chain (aws-config style: each source a small type with its own error,
//! composed in order):
//!
//! 1. environment keys ([`env::EnvKeys`]): `AWS_ACCESS_KEY_ID`,
//!    `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`;
//! 2. web identity ([`web_identity::WebIdentity`]): `AWS_WEB_IDENTITY_TOKEN_FILE` +
//!    `AWS_ROLE_ARN` (+ `AWS_ROLE_SESSION_NAME`) exchanged with STS
//!    `AssumeRoleWithWebIdentity` (IRSA on EKS);
//! 3. container credentials ([`container::ContainerCredentials`]):
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS) or
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` (EKS Pod Identity and others);
//! 4. shared credentials file ([`profile::SharedCredentialsFile`]): static keys of
//!    `AWS_PROFILE` (or `default`) in `AWS_SHARED_CREDENTIALS_FILE` (or
//!    `~/.aws/credentials`);
//! 5. instance role ([`imds::InstanceRole`]): the EC2 instance profile's role from
//!    IMDS.
//!
//! A source that is not configured passes to the next. A source that is configured
//! but fails stops the chain: silently falling through would hand the workload a
//! different identity (typically the node's instance role instead of the pod's).

pub mod container;
pub mod env;
pub mod imds;
pub mod profile;
pub mod web_identity;

use std::fmt;
use std::time::SystemTime;

use crate::provider::ProviderConfig;
use crate::secret::Secret;

/// AWS credentials. `Debug` shows the key id (not a secret; it appears in every
/// signed request and CloudTrail) and redacts the rest.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret: Secret,
    /// Present for temporary credentials.
    pub session_token: Option<Secret>,
    pub expiration: Option<SystemTime>,
    /// When the source said (container endpoints, STS assumed roles).
    pub account_id: Option<String>,
}

impl AwsCredentials {
    /// Long-lived keys (no session token, no expiry).
    pub fn new_static(access_key_id: impl Into<String>, secret: impl Into<Secret>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret: secret.into(),
            session_token: None,
            expiration: None,
            account_id: None,
        }
    }

    pub fn is_temporary(&self) -> bool {
        self.session_token.is_some()
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &self.secret)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiration", &self.expiration)
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// Which source the chain took credentials from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Environment,
    WebIdentity,
    Container,
    SharedCredentialsFile,
    InstanceMetadata,
}

impl CredentialSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "environment keys",
            Self::WebIdentity => "web identity (IRSA)",
            Self::Container => "container credentials",
            Self::SharedCredentialsFile => "shared credentials file",
            Self::InstanceMetadata => "instance metadata (IMDS) role",
        }
    }
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the chain found.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub credentials: AwsCredentials,
    pub source: CredentialSource,
    /// A region the source learned on the way (IMDS placement), if any.
    pub region: Option<String>,
}

/// One source's outcome when it produced no credentials.
#[derive(Debug, Clone)]
pub enum Skip {
    /// Not set up here: the chain moves on. The text says what was looked for.
    NotConfigured(String),
    /// Set up but failing: the chain stops.
    Failed(String),
}

/// Every source error says whether the source was configured at all.
pub trait SourceError: std::error::Error {
    fn is_not_configured(&self) -> bool;

    fn skip(&self) -> Skip {
        if self.is_not_configured() {
            Skip::NotConfigured(self.to_string())
        } else {
            Skip::Failed(self.to_string())
        }
    }
}

/// The chain found no credentials (or a configured source failed).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", describe(.tried))]
pub struct ChainError {
    pub tried: Vec<(CredentialSource, Skip)>,
}

impl ChainError {
    /// The source that failed, when one was configured but broken.
    pub fn failed(&self) -> Option<(CredentialSource, &str)> {
        self.tried.iter().find_map(|(s, skip)| match skip {
            Skip::Failed(reason) => Some((*s, reason.as_str())),
            Skip::NotConfigured(_) => None,
        })
    }
}

fn describe(tried: &[(CredentialSource, Skip)]) -> String {
    let list = tried
        .iter()
        .map(|(s, skip)| match skip {
            Skip::NotConfigured(r) => format!("{s}: {r}"),
            Skip::Failed(r) => format!("{s}: FAILED: {r}"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if tried.iter().any(|(_, s)| matches!(s, Skip::Failed(_))) {
        format!("a configured AWS credential source failed ({list})")
    } else {
        format!("no AWS credentials found ({list})")
    }
}

/// Runs the chain. `sts_region` is the region for web identity's STS call.
pub async fn load(cfg: &ProviderConfig, sts_region: &str) -> Result<Loaded, ChainError> {
    let mut tried = Vec::new();
    macro_rules! attempt {
        ($source:expr, $result:expr) => {
            match $result {
                Ok((credentials, region)) => {
                    tracing::debug!(source = %$source, "AWS credentials found");
                    return Ok(Loaded {
                        credentials,
                        source: $source,
                        region,
                    });
                }
                Err(e) => {
                    let skip = SourceError::skip(&e);
                    let stop = matches!(skip, Skip::Failed(_));
                    tried.push(($source, skip));
                    if stop {
                        return Err(ChainError { tried });
                    }
                }
            }
        };
    }
    attempt!(
        CredentialSource::Environment,
        env::EnvKeys.load(cfg).map(|c| (c, None))
    );
    attempt!(
        CredentialSource::WebIdentity,
        web_identity::WebIdentity::from_env(cfg, sts_region)
            .load(cfg)
            .await
            .map(|c| (c, None))
    );
    attempt!(
        CredentialSource::Container,
        container::ContainerCredentials
            .load(cfg)
            .await
            .map(|c| (c, None))
    );
    attempt!(
        CredentialSource::SharedCredentialsFile,
        profile::SharedCredentialsFile.load(cfg).map(|c| (c, None))
    );
    attempt!(
        CredentialSource::InstanceMetadata,
        imds::InstanceRole.load(cfg).await
    );
    Err(ChainError { tried })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let mut c = AwsCredentials::new_static("AKIDEXAMPLE", "wJalrXUtnFEMI");
        c.session_token = Some(Secret::new("IQoJsessiontoken"));
        let s = format!("{c:?}");
        assert!(s.contains("AKIDEXAMPLE"));
        assert!(!s.contains("wJalrXUtnFEMI"));
        assert!(!s.contains("IQoJsessiontoken"));
    }

    #[test]
    fn chain_error_lists_every_source() {
        let e = ChainError {
            tried: vec![
                (
                    CredentialSource::Environment,
                    Skip::NotConfigured("AWS_ACCESS_KEY_ID is not set".into()),
                ),
                (
                    CredentialSource::InstanceMetadata,
                    Skip::NotConfigured("no role".into()),
                ),
            ],
        };
        let s = e.to_string();
        assert!(s.starts_with("no AWS credentials found"));
        assert!(s.contains("environment keys: AWS_ACCESS_KEY_ID is not set"));
        assert!(s.contains("instance metadata (IMDS) role: no role"));
        assert!(e.failed().is_none());
    }
}
