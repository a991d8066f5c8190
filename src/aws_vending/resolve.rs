//! One upstream resolution of a profile (no cache): the workload's own AWS
//! credentials, `AssumeRole` with them, or `AssumeRoleWithWebIdentity` with the
//! workload's GCP or Azure token.

use std::time::Instant;

use super::profile::{AwsSettings, ProfileSource, DEFAULT_WEB_IDENTITY_AUDIENCE};
use super::{VendError, VendedCredentials};
use crate::client::Client;
use crate::provider::aws::sts::AssumeRoleRequest;
use crate::provider::aws::{chain, AwsProvider};
use crate::provider::{
    CloudProvider, IdentityRequest, Provider, DEFAULT_AZURE_RESOURCE, DEFAULT_ROLE_SESSION_NAME,
};
use crate::secret::Secret;

/// One upstream resolution of a profile (no cache).
pub async fn resolve(
    settings: &AwsSettings,
    client: &Client,
    name: &str,
) -> Result<VendedCredentials, VendError> {
    let profile = settings
        .profile(name)
        .ok_or_else(|| VendError::UnknownProfile {
            name: name.to_string(),
            known: settings.profiles.iter().map(|p| p.name.clone()).collect(),
        })?;
    let cfg = client.provider_config();
    let region = settings.region(cfg);
    let sts = crate::provider::aws::StsClient::new(cfg, &region);
    let identity_err = |reason: String| VendError::Identity {
        profile: name.to_string(),
        reason,
    };
    let credentials = match &profile.source {
        ProfileSource::Workload => {
            AwsProvider::default()
                .session(cfg, DEFAULT_ROLE_SESSION_NAME)
                .await
                .map_err(|e| identity_err(e.to_string()))?
                .credentials
        }
        ProfileSource::AssumeRole {
            role_arn,
            session_name,
            duration,
            external_id,
        } => {
            let loaded = chain::load(cfg, &region)
                .await
                .map_err(|e| identity_err(e.to_string()))?;
            let mut req = AssumeRoleRequest::new(role_arn, session_name);
            if let Some(d) = duration {
                req = req.duration_seconds(d.as_secs() as u32);
            }
            if let Some(id) = external_id {
                req = req.external_id(id);
            }
            if let Some(p) = profile.session_policy() {
                req = req.policy(p);
            }
            sts.assume_role(&loaded.credentials, &req)
                .await
                .map_err(|e| VendError::sts(name, &e))?
                .credentials
        }
        ProfileSource::WebIdentity {
            role_arn,
            session_name,
            duration,
            provider,
            audience,
        } => {
            let provider = match provider {
                Some(kind) => Provider::for_kind(*kind),
                None => client
                    .provider()
                    .await
                    .map_err(|e| identity_err(e.to_string()))?
                    .clone(),
            };
            let kind = provider.kind();
            if kind == CloudProvider::Aws {
                return Err(identity_err(
                    "web_identity needs a GCP or Azure identity, and this workload is on AWS; use source = \"assume_role\"".into(),
                ));
            }
            let id_req = IdentityRequest {
                gcp_audience: audience
                    .clone()
                    .unwrap_or_else(|| DEFAULT_WEB_IDENTITY_AUDIENCE.into()),
                azure_resource: audience
                    .clone()
                    .unwrap_or_else(|| DEFAULT_AZURE_RESOURCE.into()),
                role_session_name: session_name.clone(),
            };
            let (headers, _) = provider
                .identity(cfg, &id_req)
                .await
                .map_err(|e| identity_err(e.to_string()))?;
            let token = headers
                .get("Authorization")
                .and_then(|v| v.expose().strip_prefix("Bearer "))
                .map(Secret::new)
                .ok_or_else(|| identity_err(format!("the {kind} identity has no bearer token")))?;
            let mut req = AssumeRoleRequest::new(role_arn, session_name);
            if let Some(d) = duration {
                req = req.duration_seconds(d.as_secs() as u32);
            }
            if let Some(p) = profile.session_policy() {
                req = req.policy(p);
            }
            sts.assume_role_with_web_identity_request(&req, &token)
                .await
                .map_err(|e| VendError::sts(name, &e))?
                .credentials
        }
    };
    Ok(VendedCredentials::new(
        credentials,
        cfg.clock.now(),
        Instant::now(),
    ))
}
