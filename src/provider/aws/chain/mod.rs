//! The workload's *own* AWS credential chain (not the credentials the sidecar
//! vends to applications: that is [`crate::aws_vending`]), in the order of the AWS
//! SDKs' default chain. As in aws-config, each source is a small type with its own
//! error implementing one trait, [`ProvideCredentials`], and the chain is a list
//! of them ([`Chain`]) tried in order:
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
use std::future::Future;
use std::pin::Pin;

pub use super::keys::AwsCredentials;
use crate::provider::ProviderConfig;

/// Which source the chain took credentials from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID` and friends.
    Environment,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (IRSA).
    WebIdentity,
    /// ECS or EKS Pod Identity container credentials.
    Container,
    /// `~/.aws/credentials`.
    SharedCredentialsFile,
    /// The EC2 instance role, from IMDS.
    InstanceMetadata,
}

impl CredentialSource {
    /// A short description for logs and errors.
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
    /// The credentials.
    pub credentials: AwsCredentials,
    /// The source that supplied them.
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
    /// True when the source is not set up here, so the chain may move on.
    fn is_not_configured(&self) -> bool;

    /// What the chain does with this error.
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
    /// Each source tried, in order, and why it gave nothing.
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

/// What one source hands the chain: credentials, and a region it learned on
/// the way (IMDS placement), if any.
pub type Provided = (AwsCredentials, Option<String>);

/// The future a source returns.
pub type ProvideFuture<'a> = Pin<Box<dyn Future<Output = Result<Provided, Skip>> + Send + 'a>>;

/// One place the workload's AWS credentials may come from.
pub trait ProvideCredentials: Send + Sync + fmt::Debug {
    /// Which source this is, for logs and [`ChainError`].
    fn source(&self) -> CredentialSource;

    /// The credentials, or why not: [`Skip::NotConfigured`] passes to the next
    /// source, [`Skip::Failed`] stops the chain.
    fn provide<'a>(&'a self, cfg: &'a ProviderConfig) -> ProvideFuture<'a>;
}

/// Sources tried in order; the first that is configured decides.
#[derive(Debug, Default)]
pub struct Chain {
    sources: Vec<Box<dyn ProvideCredentials>>,
}

impl Chain {
    /// The AWS SDKs' default order. `sts_region` is the region of web identity's
    /// STS call.
    pub fn default_for(cfg: &ProviderConfig, sts_region: &str) -> Self {
        Self::default()
            .with(env::EnvKeys)
            .with(web_identity::WebIdentity::from_env(cfg, sts_region))
            .with(container::ContainerCredentials)
            .with(profile::SharedCredentialsFile)
            .with(imds::InstanceRole)
    }

    /// Appends a source.
    pub fn with(mut self, source: impl ProvideCredentials + 'static) -> Self {
        self.sources.push(Box::new(source));
        self
    }

    /// Tries each source in turn.
    pub async fn load(&self, cfg: &ProviderConfig) -> Result<Loaded, ChainError> {
        let mut tried = Vec::new();
        for source in &self.sources {
            let kind = source.source();
            match source.provide(cfg).await {
                Ok((credentials, region)) => {
                    tracing::debug!(source = %kind, "AWS credentials found");
                    return Ok(Loaded {
                        credentials,
                        source: kind,
                        region,
                    });
                }
                Err(skip) => {
                    let stop = matches!(skip, Skip::Failed(_));
                    tried.push((kind, skip));
                    if stop {
                        break;
                    }
                }
            }
        }
        Err(ChainError { tried })
    }
}

/// Runs the default chain. `sts_region` is the region for web identity's STS call.
pub async fn load(cfg: &ProviderConfig, sts_region: &str) -> Result<Loaded, ChainError> {
    Chain::default_for(cfg, sts_region).load(cfg).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
