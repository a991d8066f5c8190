//! AKS workload identity: the pod's projected service-account token
//! (`AZURE_FEDERATED_TOKEN_FILE`) is exchanged at Azure AD for an access token of
//! the app or user-assigned identity `AZURE_CLIENT_ID` in tenant `AZURE_TENANT_ID`:
//!
//! ```text
//! POST {azure_authority}/{tenant}/oauth2/v2.0/token
//! Content-Type: application/x-www-form-urlencoded
//! grant_type=client_credentials&client_id=<id>&scope=<resource>/.default
//! &client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
//! &client_assertion=<token file contents>
//! → 200 {"access_token", "token_type", "expires_in"}
//! ```
//!
//! The file is re-read on every call: the kubelet rotates it.

use std::path::PathBuf;
use std::time::Duration;

use super::super::{CloudProvider, ProviderError};
use super::token::{AccessToken, Source};
use crate::env::ProviderConfig;
use crate::http::{fetch, retry, GaveUp, RetryPolicy};
use crate::Secret;

const TIMEOUT: Duration = Duration::from_secs(10);
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The workload-identity settings an AKS pod gets from the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WorkloadIdentity {
    pub token_file: PathBuf,
    pub client_id: String,
    pub tenant_id: String,
}

impl WorkloadIdentity {
    /// All three variables set; `client_id` (from assume-role) overrides `AZURE_CLIENT_ID`.
    pub fn from_env(cfg: &ProviderConfig, client_id: Option<&str>) -> Option<Self> {
        let token_file = cfg.env.get("AZURE_FEDERATED_TOKEN_FILE")?;
        let env_client = cfg.env.get("AZURE_CLIENT_ID")?;
        let tenant_id = cfg.env.get("AZURE_TENANT_ID")?;
        Some(Self {
            token_file: token_file.into(),
            client_id: client_id.map(str::to_owned).unwrap_or(env_client),
            tenant_id: tenant_id.trim().to_string(),
        })
    }

    /// An access token for `resource`.
    pub async fn token(
        &self,
        cfg: &ProviderConfig,
        policy: &RetryPolicy,
        resource: &str,
    ) -> Result<AccessToken, ProviderError> {
        let source = Source {
            what: "AKS workload identity token exchange (Azure AD)",
            not_found: None,
            hint,
        };
        if !valid_tenant(&self.tenant_id) {
            return Err(source.upstream(format!(
                "AZURE_TENANT_ID {:?} is not a tenant id or domain",
                self.tenant_id
            )));
        }
        let assertion = self.read_assertion(cfg)?;
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            cfg.endpoints.azure_authority, self.tenant_id
        );
        let scope = format!("{}/.default", resource.trim_end_matches('/'));
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("scope", scope.as_str()),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.expose()),
        ];
        retry(
            policy,
            |_| {
                let req = cfg.http.post(&url).form(&form);
                let (url, source) = (&url, &source);
                async move { source.classify(fetch(req, url, TIMEOUT).await, cfg.clock.now()) }
            },
            |g: GaveUp| source.upstream(g.to_string()),
        )
        .await
    }

    fn read_assertion(&self, cfg: &ProviderConfig) -> Result<Secret, ProviderError> {
        let path = self.token_file.display();
        let text = cfg.fs.read_to_string(&self.token_file).map_err(|e| {
            no_identity(format!(
                "cannot read AZURE_FEDERATED_TOKEN_FILE {path}: {e} (is the projected \
                 service-account token volume mounted?)"
            ))
        })?;
        let text = text.trim();
        if text.is_empty() {
            return Err(no_identity(format!(
                "AZURE_FEDERATED_TOKEN_FILE {path} is empty"
            )));
        }
        Ok(Secret::new(text))
    }
}

fn hint(status: u16) -> &'static str {
    match status {
        400 | 401 => {
            " (check that the identity AZURE_CLIENT_ID has a federated credential for this \
             cluster's issuer and service account)"
        }
        _ => "",
    }
}

/// A tenant is a GUID or a domain; it becomes a URL path segment.
pub(super) fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !tenant.starts_with('.')
}

fn no_identity(reason: String) -> ProviderError {
    ProviderError::NoIdentity {
        provider: CloudProvider::Azure,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Fs};

    #[test]
    fn needs_all_three_variables_and_assume_role_picks_the_client() {
        let all = [
            ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_TENANT_ID", "tenant"),
        ];
        let cfg = ProviderConfig::with_env(Env::from_pairs(all), Fs::from_files([("/t", "x")]));
        let wi = WorkloadIdentity::from_env(&cfg, None).unwrap();
        assert_eq!(
            (wi.client_id.as_str(), wi.tenant_id.as_str()),
            ("c", "tenant")
        );
        let wi = WorkloadIdentity::from_env(&cfg, Some("other")).unwrap();
        assert_eq!(wi.client_id, "other");
        for skip in 0..3 {
            let env: Vec<_> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, kv)| *kv)
                .collect();
            let cfg = ProviderConfig::with_env(Env::from_pairs(env), Fs::from_files([("/t", "x")]));
            assert!(WorkloadIdentity::from_env(&cfg, None).is_none());
        }
    }

    #[test]
    fn tenants_are_guids_or_domains() {
        assert!(valid_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(valid_tenant("contoso.onmicrosoft.com"));
        for bad in ["", "a/b", "..", "x?y", "a b"] {
            assert!(!valid_tenant(bad), "{bad}");
        }
    }
}
