//! The shared config and credentials files as a credential source: profile
//! `AWS_PROFILE` (else `default`) of `AWS_CONFIG_FILE` (`~/.aws/config`) merged
//! with `AWS_SHARED_CREDENTIALS_FILE` (`~/.aws/credentials`).
//!
//! Three steps, one module each: [`files`] reads and merges the files the way the
//! SDKs do; [`resolve`] turns the profile into a [`resolve::Plan`] (a base and
//! the roles to assume on top, cycles and unsupported keys refused); this module
//! runs the plan: the base from static keys, [`process`] (`credential_process`),
//! a web identity token file, or a `credential_source` (the chain's own
//! environment, IMDS and container sources), then one STS `AssumeRole` per role
//! with its `external_id`, `role_session_name` and `duration_seconds`.
//!
//! The result is kept in a [`Cache`] (owned by the provider) and reused until
//! [`REFRESH_BEFORE`] ahead of its expiry, so `credential_process` and STS are not
//! called on every identity request, and are called again once the credentials
//! near their `Expiration`. Credentials without an expiry (static keys) are read
//! again each time instead.
//!
//! SSO (`sso_session`, `sso_start_url`) and `aws login` (`login_session`)
//! profiles are refused with a pointer to the `aws-config` feature; with that
//! feature they are deferred to the AWS SDK's chain.

pub mod files;
pub mod process;
pub mod resolve;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use super::container::ContainerCredentials;
use super::env::EnvKeys;
use super::imds::InstanceRole;
use super::web_identity::{WebIdentity, WebIdentityError};
use super::{
    AwsCredentials, CredentialSource, ProvideCredentials, ProvideFuture, Provided, Skip,
    SourceError,
};
use crate::env::ProviderConfig;
use crate::provider::aws::sts::{AssumeRoleRequest, StsClient, StsError};
use crate::provider::aws::{region_from_env, DEFAULT_REGION};
use crate::provider::DEFAULT_ROLE_SESSION_NAME;
use crate::secret::Secret;

pub use files::parse_ini;
pub use resolve::Plan;
use resolve::{Base, NamedSource, ResolveError};

/// Cached profile credentials are refreshed this long before they expire.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// The shared config source.
#[derive(Debug, Clone, Default)]
pub struct SharedConfig {
    cache: Cache,
}

/// Profile credentials kept between loads (one entry: the last profile
/// resolved). Cheap to clone; clones share the entry. Loads through one cache
/// are serialised, so concurrent requests run `credential_process` once.
#[derive(Clone, Default)]
pub struct Cache(Arc<tokio::sync::Mutex<Option<Cached>>>);

struct Cached {
    key: u64,
    provided: Provided,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cache")
    }
}

/// Why the shared config gave nothing.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProfileError {
    /// Neither file exists and `AWS_PROFILE` is unset: not configured.
    #[error("no AWS config or credentials file: {files}")]
    NoFiles {
        /// The paths looked at.
        files: String,
    },
    /// No `default` profile and `AWS_PROFILE` unset: not configured.
    #[error("no [default] profile in {files}")]
    NoDefaultProfile {
        /// The paths looked at.
        files: String,
    },
    /// A file exists but cannot be read.
    #[error(transparent)]
    File(#[from] files::FileError),
    /// The profile cannot be planned (cycle, bad key, SSO without the feature...).
    #[error(transparent)]
    Resolve(ResolveError),
    /// The profile has no credentials of its own kind: not configured (the SDKs
    /// move on too; a profile may set only `region`).
    #[error(transparent)]
    NoCredentials(ResolveError),
    /// `credential_process` failed.
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    /// The web identity token could not be exchanged.
    #[error("profile `{profile}`: {source}")]
    WebIdentity {
        /// The profile.
        profile: String,
        /// What went wrong.
        source: Box<WebIdentityError>,
    },
    /// A `credential_source` gave no credentials.
    #[error("profile `{profile}`: credential_source {source_name} gave no credentials: {reason}")]
    NamedSource {
        /// The profile.
        profile: String,
        /// The source.
        source_name: &'static str,
        /// Why.
        reason: String,
    },
    /// Static keys are incomplete.
    #[error("profile `{profile}` has no {missing}")]
    Incomplete {
        /// The profile.
        profile: String,
        /// What is missing.
        missing: &'static str,
    },
    /// STS refused a role.
    #[error("profile `{profile}`: assuming {role_arn} failed: {source}")]
    AssumeRole {
        /// The profile naming the role.
        profile: String,
        /// The role.
        role_arn: String,
        /// STS's answer.
        source: Box<StsError>,
    },
}

impl SourceError for ProfileError {
    fn is_not_configured(&self) -> bool {
        matches!(
            self,
            Self::NoFiles { .. } | Self::NoDefaultProfile { .. } | Self::NoCredentials(_)
        )
    }

    fn skip(&self) -> Skip {
        match self {
            Self::Resolve(ResolveError::NeedsSdk { profile, kind })
                if cfg!(feature = "aws-config") =>
            {
                Skip::Deferred(format!("profile `{profile}` uses {kind}"))
            }
            _ if self.is_not_configured() => Skip::NotConfigured(self.to_string()),
            _ => Skip::Failed(self.to_string()),
        }
    }
}

impl SharedConfig {
    /// The source, keeping resolved credentials in `cache`.
    pub fn new(cache: Cache) -> Self {
        Self { cache }
    }

    /// The plan for the selected profile; `None` when the files do not configure
    /// one (no files, or no `default` profile and no `AWS_PROFILE`, or a profile
    /// without credentials).
    pub fn plan(cfg: &ProviderConfig) -> Result<Option<Plan>, ProfileError> {
        match plan_for(cfg) {
            Ok(plan) => Ok(Some(plan)),
            Err(e) if e.is_not_configured() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The selected profile's credentials, the profile's region and the plan's
    /// description.
    pub async fn load(&self, cfg: &ProviderConfig) -> Result<Provided, ProfileError> {
        let plan = plan_for(cfg)?;
        let key = cache_key(&plan);
        let mut cached = self.cache.0.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.key == key) {
            if fresh(&c.provided.credentials, cfg) {
                tracing::debug!(profile = %plan.profile, "AWS profile credentials from the cache");
                return Ok(c.provided.clone());
            }
        }
        let provided = Provided {
            credentials: run(cfg, &plan).await?,
            region: plan.region.clone(),
            detail: Some(plan.to_string()),
        };
        *cached = provided.credentials.expiration.map(|_| Cached {
            key,
            provided: provided.clone(),
        });
        Ok(provided)
    }
}

fn plan_for(cfg: &ProviderConfig) -> Result<Plan, ProfileError> {
    let set = files::load(cfg)?;
    let explicit = cfg.env.get("AWS_PROFILE").map(|p| p.trim().to_string());
    if explicit.is_none() {
        if set.is_empty() {
            return Err(ProfileError::NoFiles {
                files: set.describe_files(),
            });
        }
        if !set.profiles.contains_key("default") {
            return Err(ProfileError::NoDefaultProfile {
                files: set.describe_files(),
            });
        }
    }
    let (profile, wanted_by) = match &explicit {
        Some(p) => (p.as_str(), "AWS_PROFILE"),
        None => ("default", "the default profile"),
    };
    resolve::plan(&set, profile, wanted_by).map_err(|e| match e {
        // The selected profile itself has nothing: move on, as the SDKs do. A
        // source profile without credentials is a broken chain.
        ResolveError::NoCredentials { profile: ref p } if p == profile => {
            ProfileError::NoCredentials(e)
        }
        e => ProfileError::Resolve(e),
    })
}

/// The same plan, files and environment-selected profile give the same key.
fn cache_key(plan: &Plan) -> u64 {
    let mut h = DefaultHasher::new();
    format!("{plan:?}").hash(&mut h);
    h.finish()
}

fn fresh(c: &AwsCredentials, cfg: &ProviderConfig) -> bool {
    c.expiration
        .and_then(|exp| exp.checked_sub(REFRESH_BEFORE))
        .is_some_and(|refresh_at| cfg.clock.now() < refresh_at)
}

/// Runs the plan: the base, then each role.
async fn run(cfg: &ProviderConfig, plan: &Plan) -> Result<AwsCredentials, ProfileError> {
    let region = region_from_env(cfg)
        .or_else(|| plan.region.clone())
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    let mut creds = base(cfg, &plan.base, &region).await?;
    let sts = StsClient::new(cfg, &region);
    for hop in &plan.hops {
        let mut req = AssumeRoleRequest::new(
            &hop.role_arn,
            hop.session_name
                .as_deref()
                .unwrap_or(DEFAULT_ROLE_SESSION_NAME),
        );
        req.external_id = hop.external_id.clone();
        req.duration_seconds = hop.duration_seconds;
        tracing::debug!(profile = %hop.profile, role = %hop.role_arn, "assuming a profile's role");
        creds = sts
            .assume_role(&creds, &req)
            .await
            .map_err(|source| ProfileError::AssumeRole {
                profile: hop.profile.clone(),
                role_arn: hop.role_arn.clone(),
                source: Box::new(source),
            })?
            .credentials;
    }
    Ok(creds)
}

async fn base(
    cfg: &ProviderConfig,
    base: &Base,
    region: &str,
) -> Result<AwsCredentials, ProfileError> {
    match base {
        Base::Static { profile } => static_keys(cfg, profile),
        Base::Process { profile, command } => Ok(process::run(cfg, profile, command).await?),
        Base::WebIdentity {
            profile,
            token_file,
            role,
        } => WebIdentity::new(
            token_file.clone(),
            &role.role_arn,
            role.session_name
                .as_deref()
                .unwrap_or(DEFAULT_ROLE_SESSION_NAME),
            role.duration_seconds,
            region,
        )
        .load(cfg)
        .await
        .map_err(|source| ProfileError::WebIdentity {
            profile: profile.clone(),
            source: Box::new(source),
        }),
        Base::Named { profile, source } => {
            let failed = |reason: String| ProfileError::NamedSource {
                profile: profile.clone(),
                source_name: source.as_str(),
                reason,
            };
            match source {
                NamedSource::Environment => EnvKeys.load(cfg).map_err(|e| failed(e.to_string())),
                NamedSource::Ec2InstanceMetadata => InstanceRole
                    .load(cfg)
                    .await
                    .map(|(c, _)| c)
                    .map_err(|e| failed(e.to_string())),
                NamedSource::EcsContainer => ContainerCredentials
                    .load(cfg)
                    .await
                    .map_err(|e| failed(e.to_string())),
            }
        }
    }
}

/// The keys of `profile`, read again from the files (a plan holds no secret).
fn static_keys(cfg: &ProviderConfig, profile: &str) -> Result<AwsCredentials, ProfileError> {
    let set = files::load(cfg)?;
    let keys = set.profiles.get(profile);
    let field = |name: &'static str| {
        keys.and_then(|k| resolve::value(k, name))
            .map(str::to_string)
            .ok_or_else(|| ProfileError::Incomplete {
                profile: profile.to_string(),
                missing: name,
            })
    };
    Ok(AwsCredentials {
        access_key_id: field("aws_access_key_id")?,
        secret: Secret::new(field("aws_secret_access_key")?),
        session_token: field("aws_session_token").ok().map(Secret::new),
        expiration: None,
        account_id: None,
    })
}

impl ProvideCredentials for SharedConfig {
    fn source(&self) -> CredentialSource {
        CredentialSource::SharedConfig
    }

    fn provide<'a>(&'a self, cfg: &'a ProviderConfig) -> ProvideFuture<'a> {
        Box::pin(async move { self.load(cfg).await.map_err(|e| e.skip()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Fs};

    const FILE: &str = "# comment\n[default]\naws_access_key_id = AKIA1\n\
        aws_secret_access_key=s1\nregion = eu-west-1\n\n[dev]\n; c\n\
        AWS_ACCESS_KEY_ID = AKIA2\naws_secret_access_key = s2\naws_session_token = t2\n\
        [sso]\nsso_start_url = https://x\n[regiononly]\nregion = x\n";

    fn cfg(env: &[(&str, &str)]) -> ProviderConfig {
        ProviderConfig::with_env(
            Env::from_pairs(env.iter().copied()),
            Fs::from_files([("/home/u/.aws/credentials", FILE)]),
        )
    }

    async fn load(env: &[(&str, &str)]) -> Result<Provided, ProfileError> {
        SharedConfig::default().load(&cfg(env)).await
    }

    #[tokio::test]
    async fn default_and_named_profiles() {
        let p = load(&[("HOME", "/home/u")]).await.unwrap();
        assert_eq!(p.credentials.access_key_id, "AKIA1");
        assert!(p.credentials.session_token.is_none());
        assert_eq!(p.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            p.detail.as_deref(),
            Some("shared config profile `default` (static keys of `default`)")
        );
        let p = load(&[("HOME", "/home/u"), ("AWS_PROFILE", "dev")])
            .await
            .unwrap();
        assert_eq!(p.credentials.access_key_id, "AKIA2");
        assert_eq!(p.credentials.session_token.unwrap().expose(), "t2");
    }

    #[tokio::test]
    async fn missing_pieces() {
        let e = load(&[]).await.unwrap_err();
        assert!(e.is_not_configured(), "{e}");
        let e = load(&[("HOME", "/nowhere")]).await.unwrap_err();
        assert!(e.is_not_configured(), "{e}");
        let e = load(&[("HOME", "/home/u"), ("AWS_PROFILE", "nope")])
            .await
            .unwrap_err();
        assert!(!e.is_not_configured());
        assert!(
            e.to_string().contains("AWS_PROFILE names profile `nope`"),
            "{e}"
        );
        let e = load(&[("HOME", "/home/u"), ("AWS_PROFILE", "sso")])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("sso_start_url"), "{e}");
        // A profile with only a region passes to the next source, as in the SDKs.
        let e = load(&[("HOME", "/home/u"), ("AWS_PROFILE", "regiononly")])
            .await
            .unwrap_err();
        assert!(e.is_not_configured(), "{e}");
        let p = load(&[
            ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
            ("HOME", "/home/u"),
        ])
        .await
        .unwrap();
        assert_eq!(p.credentials.access_key_id, "AKIA1");
    }

    #[test]
    fn sso_defers_only_with_the_feature() {
        let e = ProfileError::Resolve(ResolveError::NeedsSdk {
            profile: "p".into(),
            kind: "sso_session",
        });
        let deferred = matches!(e.skip(), Skip::Deferred(_));
        assert_eq!(deferred, cfg!(feature = "aws-config"));
    }
}
