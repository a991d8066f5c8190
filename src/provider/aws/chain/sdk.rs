//! The AWS SDK's default credential chain (`aws-config`), last in the chain
//! (feature `aws-config` only): SSO (`sso_session`, `sso_start_url`), `aws login`
//! (`login_session`) and any profile the native [`super::shared_config`] source does
//! not resolve, which defers to it ([`super::Skip::Deferred`]).
//!
//! The SDK reads the *process's* environment and files (aws-config injects
//! others only in its own tests), so with an injected, fixed environment (tests)
//! this source does nothing rather than read a different world than the rest of
//! the chain; the binary, which runs in the real environment, uses it. Its HTTPS
//! client is aws-smithy-http-client on rustls with ring, the TLS backend the rest
//! of s2iam uses (the SDK's default would add aws-lc-rs).

use aws_config::BehaviorVersion;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::ProvideCredentials as _;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider as TlsProvider};

use super::{AwsCredentials, CredentialSource, ProvideCredentials, ProvideFuture, Provided, Skip};
use crate::env::ProviderConfig;
use crate::secret::Secret;

/// The AWS SDK's default chain as a source.
#[derive(Debug, Clone, Copy, Default)]
pub struct SdkFallback;

impl SdkFallback {
    /// The SDK's credentials for `AWS_PROFILE` (or its default profile).
    pub async fn load(&self, cfg: &ProviderConfig) -> Result<Provided, Skip> {
        if cfg.env.fixed_vars().is_some() {
            return Err(Skip::NotConfigured(
                "the AWS SDK reads the process environment, not an injected one".into(),
            ));
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(TlsProvider::Rustls(CryptoMode::Ring))
            .build_https();
        let profile = cfg.env.get("AWS_PROFILE");
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
        if let Some(p) = &profile {
            loader = loader.profile_name(p.trim());
        }
        let sdk = loader.load().await;
        let provider = sdk.credentials_provider().ok_or_else(|| {
            Skip::NotConfigured("the AWS SDK built no credentials provider".into())
        })?;
        let creds = provider.provide_credentials().await.map_err(|e| {
            let text = with_causes(&e);
            match e {
                CredentialsError::CredentialsNotLoaded(_) => Skip::NotConfigured(text),
                _ => Skip::Failed(text),
            }
        })?;
        Ok(Provided {
            credentials: AwsCredentials {
                access_key_id: creds.access_key_id().to_string(),
                secret: Secret::new(creds.secret_access_key()),
                session_token: creds.session_token().map(Secret::new),
                expiration: creds.expiry(),
                account_id: creds.account_id().map(|a| a.as_str().to_string()),
            },
            region: sdk.region().map(|r| r.to_string()),
            detail: Some(format!(
                "{} (profile `{}`)",
                CredentialSource::AwsSdk,
                profile.as_deref().unwrap_or("default")
            )),
        })
    }
}

/// The error and its causes, "a: b: c" (the SDK's errors say little at the top).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl ProvideCredentials for SdkFallback {
    fn source(&self) -> CredentialSource {
        CredentialSource::AwsSdk
    }

    fn provide<'a>(&'a self, cfg: &'a ProviderConfig) -> ProvideFuture<'a> {
        Box::pin(self.load(cfg))
    }

    fn is_fallback(&self) -> bool {
        true
    }
}
