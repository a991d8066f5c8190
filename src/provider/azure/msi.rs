//! The legacy managed-identity endpoint `MSI_ENDPOINT`:
//!
//! - with `MSI_SECRET` (Azure Machine Learning compute, App Service before the 2019
//!   API):
//!   ```text
//!   GET {MSI_ENDPOINT}?api-version=2017-09-01&resource=<r>[&clientid=<id>]
//!   secret: {MSI_SECRET}
//!   → 200 {"access_token", "expires_on", "resource", "token_type", ...}
//!   ```
//!   `expires_on` is epoch seconds (Azure ML) or a UTC date string (App Service),
//!   both read by [`super::token::parse_expires_on`]. Azure ML's 2017 API reads the
//!   client id as `clientid`, as azure-identity and MSAL send it.
//! - without (Azure Cloud Shell): `POST {MSI_ENDPOINT}` with `Metadata: true` and the
//!   form `resource=<r>`; Cloud Shell has only the signed-in user's identity.
//!
//! `MSI_SECRET` is re-read from the environment on every call and never appears in
//! errors.

use std::time::Duration;

use super::super::{CloudProvider, ProviderError};
use super::token::{AccessToken, Origin, Source};
use crate::env::ProviderConfig;
use crate::http::{fetch, retry, GaveUp, RetryPolicy};
use crate::Secret;

const TIMEOUT: Duration = Duration::from_secs(5);
const API_VERSION: &str = "2017-09-01";

/// The endpoint and, outside Cloud Shell, its secret.
#[derive(Debug, Clone)]
pub(super) struct Msi {
    pub endpoint: String,
    pub secret: Option<Secret>,
}

impl Msi {
    pub fn from_env(cfg: &ProviderConfig) -> Option<Self> {
        Some(Self {
            endpoint: cfg.env.get("MSI_ENDPOINT")?.trim().to_string(),
            secret: cfg.env.get("MSI_SECRET").map(|s| Secret::new(s.trim())),
        })
    }

    /// Which flavour this is.
    pub fn origin(&self) -> Origin {
        match self.secret {
            Some(_) => Origin::MsiEndpoint,
            None => Origin::CloudShell,
        }
    }

    /// An access token for `resource`.
    pub async fn token(
        &self,
        cfg: &ProviderConfig,
        policy: &RetryPolicy,
        resource: &str,
        client_id: Option<&str>,
    ) -> Result<AccessToken, ProviderError> {
        let source = Source {
            what: match self.secret {
                Some(_) => "managed identity token request (MSI_ENDPOINT)",
                None => "Cloud Shell managed identity token request (MSI_ENDPOINT)",
            },
            not_found: Some(match client_id {
                Some(id) => format!(
                    "the user-assigned managed identity with client id {id} is not assigned here"
                ),
                None => "no managed identity is assigned here; assign one, or select a \
                         user-assigned identity by its client id (assume-role)"
                    .into(),
            }),
            hint,
        };
        let mut url =
            url::Url::parse(&self.endpoint).map_err(|e| super::bad_endpoint("MSI_ENDPOINT", e))?;
        let Some(secret) = &self.secret else {
            if client_id.is_some() {
                return Err(ProviderError::AssumeRoleNotSupported {
                    provider: CloudProvider::Azure,
                    hint: ": Cloud Shell's MSI_ENDPOINT serves only the signed-in user's identity"
                        .into(),
                });
            }
            let url = url.as_str();
            let form = [("resource", resource)];
            return retry(
                policy,
                |_| {
                    let req = cfg.http.post(url).header("Metadata", "true").form(&form);
                    let source = &source;
                    async move { source.classify(fetch(req, url, TIMEOUT).await, cfg.clock.now()) }
                },
                |g: GaveUp| source.upstream(g.to_string()),
            )
            .await;
        };
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", API_VERSION)
                .append_pair("resource", resource);
            if let Some(id) = client_id {
                q.append_pair("clientid", id);
            }
        }
        let url = url.as_str();
        retry(
            policy,
            |_| {
                let req = cfg.http.get(url).header("secret", secret.expose());
                let source = &source;
                async move { source.classify(fetch(req, url, TIMEOUT).await, cfg.clock.now()) }
            },
            |g: GaveUp| source.upstream(g.to_string()),
        )
        .await
    }
}

fn hint(status: u16) -> &'static str {
    match status {
        401 | 403 => {
            " (the endpoint rejected the secret header: MSI_SECRET in this process's \
             environment is missing or stale)"
        }
        _ => "",
    }
}
