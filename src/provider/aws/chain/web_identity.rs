//! IRSA-style web identity: the token in `AWS_WEB_IDENTITY_TOKEN_FILE` (re-read on
//! every load: the kubelet rotates it) is exchanged for `AWS_ROLE_ARN`'s credentials
//! with STS `AssumeRoleWithWebIdentity` (unsigned), session name
//! `AWS_ROLE_SESSION_NAME` or `s2iam-session`.

use std::path::PathBuf;

use super::{
    AwsCredentials, CredentialSource, ProvideCredentials, ProvideFuture, Provided, SourceError,
};
use crate::env::ProviderConfig;
use crate::provider::aws::sts::{AssumeRoleRequest, StsClient, StsError};
use crate::provider::DEFAULT_ROLE_SESSION_NAME;
use crate::secret::Secret;

/// The web identity source, as configured by the environment.
#[derive(Debug, Clone)]
pub struct WebIdentity {
    token_file: Option<PathBuf>,
    role_arn: Option<String>,
    session_name: String,
    sts_region: String,
    duration_seconds: Option<u32>,
}

#[derive(Debug, Clone, thiserror::Error)]
/// Why web identity gave nothing.
pub enum WebIdentityError {
    #[error("AWS_WEB_IDENTITY_TOKEN_FILE is not set")]
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` is not set: not configured.
    NotSet,
    #[error("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not")]
    /// A token file without `AWS_ROLE_ARN`.
    NoRoleArn,
    #[error("cannot read the web identity token file {path}: {reason}")]
    /// The token file cannot be read.
    TokenFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    #[error("the web identity token file {path} is empty")]
    /// The token file is empty.
    EmptyToken {
        /// The file.
        path: String,
    },
    #[error(transparent)]
    /// STS refused or failed.
    Sts(#[from] StsError),
}

impl SourceError for WebIdentityError {
    fn is_not_configured(&self) -> bool {
        matches!(self, Self::NotSet)
    }
}

impl WebIdentity {
    /// The source as the environment configures it.
    pub fn from_env(cfg: &ProviderConfig, sts_region: &str) -> Self {
        Self {
            token_file: cfg
                .env
                .get("AWS_WEB_IDENTITY_TOKEN_FILE")
                .map(PathBuf::from),
            role_arn: cfg.env.get("AWS_ROLE_ARN"),
            session_name: cfg
                .env
                .get("AWS_ROLE_SESSION_NAME")
                .unwrap_or_else(|| DEFAULT_ROLE_SESSION_NAME.to_string()),
            sts_region: sts_region.to_string(),
            duration_seconds: None,
        }
    }

    /// The source as a shared config profile configures it
    /// (`web_identity_token_file`, `role_arn`, `role_session_name`,
    /// `duration_seconds`).
    pub fn new(
        token_file: PathBuf,
        role_arn: &str,
        session_name: &str,
        duration_seconds: Option<u32>,
        sts_region: &str,
    ) -> Self {
        Self {
            token_file: Some(token_file),
            role_arn: Some(role_arn.to_string()),
            session_name: session_name.to_string(),
            sts_region: sts_region.to_string(),
            duration_seconds,
        }
    }

    /// Credentials from `AssumeRoleWithWebIdentity`.
    pub async fn load(&self, cfg: &ProviderConfig) -> Result<AwsCredentials, WebIdentityError> {
        let path = self.token_file.as_ref().ok_or(WebIdentityError::NotSet)?;
        let role_arn = self.role_arn.as_ref().ok_or(WebIdentityError::NoRoleArn)?;
        let shown = path.display().to_string();
        let token = cfg
            .fs
            .read_to_string(path)
            .map_err(|e| WebIdentityError::TokenFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        let token = Secret::new(token.trim());
        if token.is_empty() {
            return Err(WebIdentityError::EmptyToken { path: shown });
        }
        let sts = StsClient::new(cfg, &self.sts_region);
        let mut req = AssumeRoleRequest::new(role_arn, &self.session_name);
        req.duration_seconds = self.duration_seconds;
        let assumed = sts
            .assume_role_with_web_identity_request(&req, &token)
            .await?;
        Ok(assumed.credentials)
    }
}

impl ProvideCredentials for WebIdentity {
    fn source(&self) -> CredentialSource {
        CredentialSource::WebIdentity
    }

    fn provide<'a>(&'a self, cfg: &'a ProviderConfig) -> ProvideFuture<'a> {
        Box::pin(async move {
            self.load(cfg)
                .await
                .map(Provided::from)
                .map_err(|e| e.skip())
        })
    }
}
