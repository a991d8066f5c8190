//! App Service / Azure Functions / Container Apps managed identity: a local endpoint
//! the platform announces in the environment.
//!
//! ```text
//! GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=<r>[&client_id=<id>]
//! X-IDENTITY-HEADER: {IDENTITY_HEADER}
//! → 200 {"access_token", "expires_on", "resource", "token_type", "client_id"}
//! ```
//!
//! `IDENTITY_HEADER` is a secret the platform rotates; it is re-read from the
//! environment on every call and never appears in errors.

use std::time::Duration;

use super::super::ProviderError;
use super::token::{AccessToken, Source};
use crate::env::ProviderConfig;
use crate::http::{fetch, retry, GaveUp, RetryPolicy};
use crate::Secret;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint and its header, when the platform set both.
#[derive(Debug, Clone)]
pub(super) struct AppService {
    pub endpoint: String,
    pub header: Secret,
}

impl AppService {
    pub fn from_env(cfg: &ProviderConfig) -> Option<Self> {
        Some(Self {
            endpoint: cfg.env.get("IDENTITY_ENDPOINT")?.trim().to_string(),
            header: Secret::new(cfg.env.get("IDENTITY_HEADER")?.trim()),
        })
    }

    /// An access token for `resource`, for the user-assigned identity `client_id`
    /// or the app's system-assigned one.
    pub async fn token(
        &self,
        cfg: &ProviderConfig,
        policy: &RetryPolicy,
        resource: &str,
        client_id: Option<&str>,
    ) -> Result<AccessToken, ProviderError> {
        let source = Source {
            what: "App Service managed identity token request (IDENTITY_ENDPOINT)",
            not_found: Some(match client_id {
                Some(id) => format!(
                    "the user-assigned managed identity with client id {id} is not assigned to this app"
                ),
                None => "the app has no system-assigned managed identity; enable it, or select \
                         a user-assigned identity by its client id (assume-role)"
                    .into(),
            }),
            hint,
        };
        let mut url = url::Url::parse(&self.endpoint)
            .map_err(|e| super::bad_endpoint("IDENTITY_ENDPOINT", e))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", "2019-08-01")
                .append_pair("resource", resource);
            if let Some(id) = client_id {
                q.append_pair("client_id", id);
            }
        }
        let url = url.as_str();
        retry(
            policy,
            |_| {
                let req = cfg
                    .http
                    .get(url)
                    .header("X-IDENTITY-HEADER", self.header.expose());
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
            " (the endpoint rejected X-IDENTITY-HEADER: IDENTITY_HEADER in this process's \
             environment is missing or stale)"
        }
        _ => "",
    }
}
