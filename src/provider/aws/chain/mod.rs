//! The workload's *own* AWS credential chain (not the credentials the sidecar
//! vends to applications: that is [`crate::aws_vending`]), in the order of the AWS
//! SDKs' default chain. As in aws-config, each source is a small type with its own
//! error implementing one trait, [`ProvideCredentials`], and the chain is a list
//! of them ([`Chain`]) tried in order:
//!
//! 1. environment keys ([`env::EnvKeys`]): `AWS_ACCESS_KEY_ID`,
//!    `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`;
//! 2. the shared config and credentials files ([`shared_config::SharedConfig`]): profile
//!    `AWS_PROFILE` (or `default`) of `~/.aws/config` merged with
//!    `~/.aws/credentials`: static keys, `credential_process`, `role_arn` with
//!    `source_profile` chains, `credential_source` or `web_identity_token_file`
//!    (botocore and aws-config both try the profile before web identity and
//!    container credentials, so an explicit `AWS_PROFILE` wins on EKS and ECS);
//! 3. web identity ([`web_identity::WebIdentity`]): `AWS_WEB_IDENTITY_TOKEN_FILE` +
//!    `AWS_ROLE_ARN` (+ `AWS_ROLE_SESSION_NAME`) exchanged with STS
//!    `AssumeRoleWithWebIdentity` (IRSA on EKS);
//! 4. container credentials ([`container::ContainerCredentials`]):
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS) or
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` (EKS Pod Identity and others);
//! 5. instance role ([`imds::InstanceRole`]): the EC2 instance profile's role from
//!    IMDS;
//! 6. with the `aws-config` feature only, the AWS SDK's own default chain
//!    (`sdk::SdkFallback`), for SSO and `aws login` profiles, which the native
//!    profile source defers to it.
//!
//! A source that is not configured passes to the next. A source that is configured
//! but fails stops the chain: silently falling through would hand the workload a
//! different identity (typically the node's instance role instead of the pod's).
//! A source that is configured for something only the fallback resolves
//! ([`Skip::Deferred`]) jumps straight to the fallback.

pub mod container;
pub mod env;
pub mod imds;
#[cfg(feature = "aws-config")]
pub mod sdk;
pub mod shared_config;
pub mod web_identity;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use super::keys::AwsCredentials;
use crate::env::ProviderConfig;

/// Which source the chain took credentials from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID` and friends.
    Environment,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (IRSA).
    WebIdentity,
    /// ECS or EKS Pod Identity container credentials.
    Container,
    /// A profile of `~/.aws/config` and `~/.aws/credentials`.
    SharedConfig,
    /// The EC2 instance role, from IMDS.
    InstanceMetadata,
    /// The AWS SDK's default chain (feature `aws-config`).
    AwsSdk,
}

impl CredentialSource {
    /// A short description for logs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "environment keys",
            Self::WebIdentity => "web identity (IRSA)",
            Self::Container => "container credentials",
            Self::SharedConfig => "shared config profile",
            Self::InstanceMetadata => "instance metadata (IMDS) role",
            Self::AwsSdk => "AWS SDK default chain (aws-config)",
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
    /// A region the source learned on the way (IMDS placement, a profile's
    /// `region`), if any.
    pub region: Option<String>,
    /// More than the source's kind, e.g. the profile and its roles.
    pub detail: Option<String>,
}

impl Loaded {
    /// What `detect` and `identity` print: the detail when there is one (it
    /// names the source itself), else the source's kind.
    pub fn describe(&self) -> String {
        self.detail
            .clone()
            .unwrap_or_else(|| self.source.as_str().to_string())
    }
}

/// One source's outcome when it produced no credentials.
#[derive(Debug, Clone)]
pub enum Skip {
    /// Not set up here: the chain moves on. The text says what was looked for.
    NotConfigured(String),
    /// Set up but failing: the chain stops.
    Failed(String),
    /// Set up for something only the AWS SDK fallback (feature `aws-config`)
    /// resolves: the chain skips to it.
    Deferred(String),
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
            Skip::NotConfigured(_) | Skip::Deferred(_) => None,
        })
    }
}

fn describe(tried: &[(CredentialSource, Skip)]) -> String {
    let list = tried
        .iter()
        .map(|(s, skip)| match skip {
            Skip::NotConfigured(r) => format!("{s}: {r}"),
            Skip::Failed(r) => format!("{s}: FAILED: {r}"),
            Skip::Deferred(r) => format!("{s}: left to the AWS SDK: {r}"),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if tried.iter().any(|(_, s)| matches!(s, Skip::Failed(_))) {
        format!("a configured AWS credential source failed ({list})")
    } else {
        format!("no AWS credentials found ({list})")
    }
}

/// What one source hands the chain.
#[derive(Debug, Clone)]
pub struct Provided {
    /// The credentials.
    pub credentials: AwsCredentials,
    /// A region learned on the way (IMDS placement, a profile's `region`).
    pub region: Option<String>,
    /// What exactly supplied them, when the source's kind says too little.
    pub detail: Option<String>,
}

impl From<AwsCredentials> for Provided {
    fn from(credentials: AwsCredentials) -> Self {
        Self {
            credentials,
            region: None,
            detail: None,
        }
    }
}

/// The future a source returns.
pub type ProvideFuture<'a> = Pin<Box<dyn Future<Output = Result<Provided, Skip>> + Send + 'a>>;

/// One place the workload's AWS credentials may come from.
pub trait ProvideCredentials: Send + Sync + fmt::Debug {
    /// Which source this is, for logs and [`ChainError`].
    fn source(&self) -> CredentialSource;

    /// The credentials, or why not: [`Skip::NotConfigured`] passes to the next
    /// source, [`Skip::Failed`] stops the chain.
    fn provide<'a>(&'a self, cfg: &'a ProviderConfig) -> ProvideFuture<'a>;

    /// True for the AWS SDK fallback, the target of [`Skip::Deferred`].
    fn is_fallback(&self) -> bool {
        false
    }
}

/// Sources tried in order; the first that is configured decides.
#[derive(Debug, Default)]
pub struct Chain {
    sources: Vec<Box<dyn ProvideCredentials>>,
}

impl Chain {
    /// The AWS SDKs' default order. `sts_region` is the region of web identity's
    /// STS call; `profiles` keeps resolved profile credentials between loads.
    pub fn default_for(
        cfg: &ProviderConfig,
        sts_region: &str,
        profiles: &shared_config::Cache,
    ) -> Self {
        let chain = Self::default()
            .with(env::EnvKeys)
            .with(shared_config::SharedConfig::new(profiles.clone()))
            .with(web_identity::WebIdentity::from_env(cfg, sts_region))
            .with(container::ContainerCredentials)
            .with(imds::InstanceRole);
        #[cfg(feature = "aws-config")]
        let chain = chain.with(sdk::SdkFallback);
        chain
    }

    /// Appends a source.
    pub fn with(mut self, source: impl ProvideCredentials + 'static) -> Self {
        self.sources.push(Box::new(source));
        self
    }

    /// Tries each source in turn.
    pub async fn load(&self, cfg: &ProviderConfig) -> Result<Loaded, ChainError> {
        let mut tried = Vec::new();
        let mut deferred = false;
        for source in &self.sources {
            if deferred && !source.is_fallback() {
                continue;
            }
            let kind = source.source();
            match source.provide(cfg).await {
                Ok(p) => {
                    tracing::debug!(source = %kind, detail = ?p.detail, "AWS credentials found");
                    return Ok(Loaded {
                        credentials: p.credentials,
                        source: kind,
                        region: p.region,
                        detail: p.detail,
                    });
                }
                Err(skip) => {
                    let stop = matches!(skip, Skip::Failed(_));
                    deferred |= matches!(skip, Skip::Deferred(_));
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
/// Profile credentials are not kept between calls: see [`load_with`].
pub async fn load(cfg: &ProviderConfig, sts_region: &str) -> Result<Loaded, ChainError> {
    load_with(cfg, sts_region, &shared_config::Cache::default()).await
}

/// Runs the default chain, reusing profile credentials kept in `profiles` until
/// shortly before they expire.
pub async fn load_with(
    cfg: &ProviderConfig,
    sts_region: &str,
    profiles: &shared_config::Cache,
) -> Result<Loaded, ChainError> {
    Chain::default_for(cfg, sts_region, profiles)
        .load(cfg)
        .await
}

/// Which source the default chain would use, from the environment and the
/// profile files alone (no I/O beyond reading them): what `s2iam detect` prints.
/// IMDS is named when nothing else is configured, without asking it.
pub fn plan(cfg: &ProviderConfig) -> String {
    if cfg.env.is_set("AWS_ACCESS_KEY_ID") || cfg.env.is_set("AWS_SECRET_ACCESS_KEY") {
        return CredentialSource::Environment.as_str().to_string();
    }
    match shared_config::SharedConfig::plan(cfg) {
        Ok(Some(plan)) => return plan.to_string(),
        Ok(None) => {}
        Err(shared_config::ProfileError::Resolve(e))
            if e.needs_sdk() && cfg!(feature = "aws-config") =>
        {
            return CredentialSource::AwsSdk.as_str().to_string()
        }
        Err(e) => return format!("{}: {e}", CredentialSource::SharedConfig),
    }
    if cfg.env.is_set("AWS_WEB_IDENTITY_TOKEN_FILE") {
        return CredentialSource::WebIdentity.as_str().to_string();
    }
    if cfg.env.is_set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || cfg.env.is_set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    {
        return CredentialSource::Container.as_str().to_string();
    }
    CredentialSource::InstanceMetadata.as_str().to_string()
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
