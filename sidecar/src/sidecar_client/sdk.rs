//! A credentials provider for the AWS SDK for Rust (feature `aws-sdk`, built on
//! the small `aws-credential-types` crate):
//!
//! ```ignore
//! let provider = s2iam_sidecar::sidecar_client::sdk::S2iamCredentialsProvider::sidecar("analytics");
//! let config = aws_config::defaults(BehaviorVersion::latest())
//!     .credentials_provider(provider)
//!     .load()
//!     .await;
//! ```
//!
//! `sidecar` asks the running sidecar over its Unix socket (falling back to
//! resolving the profile in-process from `S2IAM_CONFIG`, like `s2iam
//! credential-process`); `in_process` uses an [`AwsCredentialVendor`] owned by the
//! application (its own cache, refresh-ahead and single flight).

use std::path::PathBuf;
use std::time::Duration;

use aws_credential_types::provider::{self, error::CredentialsError, ProvideCredentials};
use aws_credential_types::Credentials;

use super::aws_credentials::{self as local, LocalOptions};
use s2iam::aws_vending::{AwsCredentialVendor, VendedCredentials};
use s2iam::env::ProviderConfig;

#[derive(Debug, Clone)]
enum Source {
    Sidecar(Box<LocalOptions>),
    Vendor(AwsCredentialVendor),
}

/// Implements [`ProvideCredentials`] for one s2iam credential profile.
#[derive(Debug, Clone)]
pub struct S2iamCredentialsProvider {
    profile: String,
    source: Source,
}

impl S2iamCredentialsProvider {
    /// From the sidecar at `$S2IAM_SOCKET` (else `/run/s2iam/s2iam.sock`).
    pub fn sidecar(profile: impl Into<String>) -> Self {
        Self::sidecar_at(profile, None)
    }

    /// From the sidecar at `socket`.
    pub fn sidecar_at(profile: impl Into<String>, socket: Option<PathBuf>) -> Self {
        Self {
            profile: profile.into(),
            source: Source::Sidecar({
                let provider_config = ProviderConfig::from_env();
                Box::new(LocalOptions {
                    socket: super::default_socket(socket.as_deref(), &provider_config.env),
                    config: None,
                    timeout: Duration::from_secs(30),
                    provider_config,
                })
            }),
        }
    }

    /// Resolved in this process by `vendor`.
    pub fn in_process(vendor: AwsCredentialVendor, profile: impl Into<String>) -> Self {
        Self {
            profile: profile.into(),
            source: Source::Vendor(vendor),
        }
    }

    async fn fetch(&self) -> Result<VendedCredentials, CredentialsError> {
        match &self.source {
            Source::Sidecar(opts) => local::credentials(opts, &self.profile)
                .await
                .map_err(CredentialsError::provider_error),
            Source::Vendor(v) => v
                .credentials(&self.profile)
                .await
                .map_err(CredentialsError::provider_error),
        }
    }
}

impl ProvideCredentials for S2iamCredentialsProvider {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            let v = self.fetch().await?;
            let c = v.credentials;
            Ok(Credentials::new(
                c.access_key_id,
                c.secret.expose(),
                c.session_token.map(|t| t.expose().to_string()),
                Some(v.expiration),
                "s2iam",
            ))
        })
    }
}
