//! The EC2 instance profile's role credentials from IMDS (v2, v1 fallback; see
//! [`crate::provider::aws::imds`]): the role name from
//! `meta-data/iam/security-credentials/`, then its credentials from
//! `meta-data/iam/security-credentials/{role}` (JSON `Code`, `AccessKeyId`,
//! `SecretAccessKey`, `Token`, `Expiration`). When no region is set in the
//! environment, the instance's `meta-data/placement/region` comes along.

use serde::Deserialize;

use super::{
    AwsCredentials, CredentialSource, ProvideCredentials, ProvideFuture, Provided, SourceError,
};
use crate::env::ProviderConfig;
use crate::http::TransportError;
use crate::provider::aws::imds::{Imds, ImdsError};
use crate::provider::aws::keys::parse_time;
use crate::provider::aws::region_from_env;
use crate::secret::Secret;

const ROLES_PATH: &str = "meta-data/iam/security-credentials/";

/// The instance-role source.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstanceRole;

#[derive(Debug, Clone, thiserror::Error)]
/// Why the instance role's credentials could not be had.
pub enum InstanceRoleError {
    #[error("no instance metadata service: {0}")]
    /// No metadata service here: not configured.
    Unavailable(ImdsError),
    #[error("the instance has no IAM role attached ({url} is empty)")]
    /// The instance has no role attached.
    NoRole {
        /// The address, without its query string.
        url: String,
    },
    #[error(transparent)]
    /// The metadata service failed.
    Imds(ImdsError),
    #[error("IMDS credentials for role {role} are not usable: {reason}")]
    /// The role's credentials document is not usable.
    Malformed {
        /// The role asked for.
        role: String,
        /// What went wrong.
        reason: String,
    },
}

impl SourceError for InstanceRoleError {
    fn is_not_configured(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::NoRole { .. })
    }
}

impl From<ImdsError> for InstanceRoleError {
    fn from(e: ImdsError) -> Self {
        match e {
            ImdsError::Transport(TransportError::Refused { .. })
            | ImdsError::Transport(TransportError::Timeout { .. }) => Self::Unavailable(e),
            e => Self::Imds(e),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    code: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

impl InstanceRole {
    /// The credentials and, when the environment names no region, the instance's.
    pub async fn load(
        &self,
        cfg: &ProviderConfig,
    ) -> Result<(AwsCredentials, Option<String>), InstanceRoleError> {
        let imds = Imds::new(cfg.http.clone(), &cfg.endpoints.aws_imds);
        let session = imds.session().await?;
        let role = match imds.get(&session, ROLES_PATH).await {
            Ok(list) => list.lines().next().unwrap_or_default().trim().to_string(),
            Err(ImdsError::NotFound { url }) | Err(ImdsError::Empty { url }) => {
                return Err(InstanceRoleError::NoRole { url })
            }
            Err(e) => return Err(e.into()),
        };
        let body = imds
            .get(&session, &format!("{ROLES_PATH}{role}"))
            .await
            .map_err(InstanceRoleError::Imds)?;
        let credentials = parse(&role, &body)?;
        let region = match region_from_env(cfg) {
            Some(_) => None,
            None => imds.get(&session, "meta-data/placement/region").await.ok(),
        };
        Ok((credentials, region))
    }
}

pub(crate) fn parse(role: &str, body: &str) -> Result<AwsCredentials, InstanceRoleError> {
    let malformed = |reason: String| InstanceRoleError::Malformed {
        role: role.to_string(),
        reason,
    };
    let doc: Document = serde_json::from_str(body).map_err(|e| malformed(e.to_string()))?;
    if let Some(code) = doc.code.as_deref().filter(|c| *c != "Success") {
        return Err(malformed(format!("Code is {code:?}")));
    }
    let (Some(id), Some(secret)) = (
        doc.access_key_id.filter(|s| !s.is_empty()),
        doc.secret_access_key.filter(|s| !s.is_empty()),
    ) else {
        return Err(malformed("no AccessKeyId/SecretAccessKey".into()));
    };
    let expiration = match doc.expiration.as_deref() {
        Some(t) => Some(
            parse_time(t).ok_or_else(|| malformed(format!("Expiration {t:?} is not RFC 3339")))?,
        ),
        None => None,
    };
    Ok(AwsCredentials {
        access_key_id: id,
        secret: Secret::new(secret),
        session_token: doc.token.filter(|t| !t.is_empty()).map(Secret::new),
        expiration,
        account_id: None,
    })
}

impl ProvideCredentials for InstanceRole {
    fn source(&self) -> CredentialSource {
        CredentialSource::InstanceMetadata
    }

    fn provide<'a>(&'a self, cfg: &'a ProviderConfig) -> ProvideFuture<'a> {
        Box::pin(async move {
            self.load(cfg)
                .await
                .map(|(credentials, region)| Provided {
                    credentials,
                    region,
                    detail: None,
                })
                .map_err(|e| e.skip())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_role_credentials() {
        let c = parse(
            "r",
            r#"{"Code":"Success","LastUpdated":"x","Type":"AWS-HMAC","AccessKeyId":"ASIA1",
                "SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(c.access_key_id, "ASIA1");
        assert!(c.expiration.is_some());
        assert!(parse("r", r#"{"Code":"Failure"}"#).is_err());
        assert!(parse("r", "garbage").is_err());
    }
}
