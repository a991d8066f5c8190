//! The GCE metadata server (`{gcp_metadata}/computeMetadata/v1/...`, every request
//! with `Metadata-Flavor: Google`):
//!
//! - `instance/service-accounts/default/identity?audience=<aud>&format=full` →
//!   the ID token as plain text;
//! - `instance/service-accounts/default/token` →
//!   `{"access_token", "expires_in", "token_type"}` (for impersonation);
//! - `instance/zone` → `projects/<number>/zones/<zone>`.
//!
//! A 404 on the service-account paths means the instance has no service account.
//! Connection errors, 429 and 5xx are retried under the provider's policy.

use std::time::Duration;

use serde::Deserialize;

use super::super::{CloudProvider, ProviderError};
use crate::env::ProviderConfig;
use crate::http::{fetch, retry, GaveUp, Reply, RetryPolicy, Step, TransportError};
use crate::Secret;

/// Per-request timeout of token requests.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(5);
/// The zone is for display only: one short attempt.
const ZONE_TIMEOUT: Duration = Duration::from_secs(2);

const SERVICE_ACCOUNT: &str = "/computeMetadata/v1/instance/service-accounts/default";

/// A metadata-server client for one identity call.
pub(super) struct Metadata<'a> {
    cfg: &'a ProviderConfig,
    policy: RetryPolicy,
}

impl<'a> Metadata<'a> {
    pub fn new(cfg: &'a ProviderConfig, policy: RetryPolicy) -> Self {
        Self { cfg, policy }
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The default service account's ID token for `audience`.
    pub async fn identity_token(&self, audience: &str) -> Result<Secret, ProviderError> {
        let mut url = url::Url::parse(&format!(
            "{}{SERVICE_ACCOUNT}/identity",
            self.cfg.endpoints.gcp_metadata
        ))
        .map_err(|e| bad_endpoint(&self.cfg.endpoints.gcp_metadata, e))?;
        url.query_pairs_mut()
            .append_pair("audience", audience)
            .append_pair("format", "full");
        let body = self.get_token(url.as_str(), "ID token request").await?;
        let token = body.trim();
        if token.is_empty() {
            return Err(upstream(
                "ID token request",
                "the metadata server returned an empty token",
            ));
        }
        Ok(Secret::new(token))
    }

    /// The default service account's OAuth access token.
    pub async fn access_token(&self) -> Result<Secret, ProviderError> {
        let url = format!("{}{SERVICE_ACCOUNT}/token", self.cfg.endpoints.gcp_metadata);
        let body = self.get_token(&url, "access token request").await?;
        #[derive(Deserialize)]
        struct AccessToken {
            access_token: Option<String>,
        }
        match serde_json::from_str::<AccessToken>(&body) {
            Ok(AccessToken {
                access_token: Some(t),
            }) if !t.is_empty() => Ok(Secret::new(t)),
            _ => Err(upstream(
                "access token request",
                "the metadata server's answer has no access_token",
            )),
        }
    }

    /// The instance's zone (`us-central1-a`), or `None` if the metadata server
    /// does not say.
    pub async fn zone(&self) -> Option<String> {
        let url = format!(
            "{}/computeMetadata/v1/instance/zone",
            self.cfg.endpoints.gcp_metadata
        );
        let req = self.cfg.http.get(&url).header("Metadata-Flavor", "Google");
        match fetch(req, &url, ZONE_TIMEOUT).await {
            Ok(reply) if reply.is_success() => zone_name(&reply.body),
            Ok(reply) => {
                tracing::debug!(status = reply.status, "GCE metadata: no zone");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "GCE metadata: no zone");
                None
            }
        }
    }

    async fn get_token(&self, url: &str, what: &'static str) -> Result<String, ProviderError> {
        retry(
            &self.policy,
            |_| async move {
                let req = self.cfg.http.get(url).header("Metadata-Flavor", "Google");
                classify(what, fetch(req, url, TOKEN_TIMEOUT).await)
            },
            |g: GaveUp| upstream(what, g.to_string()),
        )
        .await
    }
}

/// One attempt's answer, sorted into success, "no service account", transient or
/// final failure.
fn classify(what: &str, result: Result<Reply, TransportError>) -> Step<String, ProviderError> {
    let reply = match Step::from_transport(result, |e| upstream(what, e)) {
        Ok(reply) => reply,
        Err(step) => return step,
    };
    match reply.status {
        200..=299 => Step::Done(reply.body),
        404 => Step::Fail(ProviderError::NoIdentity {
            provider: CloudProvider::Gcp,
            reason: "the instance has no service account (the metadata server answered 404 \
                     for service-accounts/default); attach one to the VM or node pool"
                .into(),
        }),
        429 | 500..=599 => Step::Retry {
            reason: format!("HTTP {}: {}", reply.status, reply.snippet()),
            after: None,
        },
        status => Step::Fail(upstream(
            what,
            format!("HTTP {status}: {}", reply.snippet()),
        )),
    }
}

/// `projects/123/zones/us-central1-a` → `us-central1-a`.
pub(super) fn zone_name(body: &str) -> Option<String> {
    let zone = body.trim().rsplit('/').next()?.trim();
    (!zone.is_empty()).then(|| zone.to_string())
}

fn upstream(what: &str, reason: impl Into<String>) -> ProviderError {
    ProviderError::Upstream {
        provider: CloudProvider::Gcp,
        what: format!("GCE metadata {what}"),
        reason: reason.into(),
    }
}

fn bad_endpoint(base: &str, e: url::ParseError) -> ProviderError {
    ProviderError::Upstream {
        provider: CloudProvider::Gcp,
        what: "GCE metadata endpoint".into(),
        reason: format!("{base:?} is not a URL: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Result<Reply, TransportError> {
        Ok(Reply {
            status,
            headers: Default::default(),
            body: body.into(),
        })
    }

    #[test]
    fn statuses_sort_into_done_missing_retry_and_fail() {
        assert!(matches!(classify("x", reply(200, "tok")), Step::Done(b) if b == "tok"));
        assert!(matches!(
            classify("x", reply(404, "Not Found")),
            Step::Fail(ProviderError::NoIdentity { .. })
        ));
        for s in [429, 500, 503] {
            assert!(
                matches!(classify("x", reply(s, "")), Step::Retry { .. }),
                "{s}"
            );
        }
        assert!(matches!(
            classify("x", reply(403, "forbidden")),
            Step::Fail(ProviderError::Upstream { reason, .. }) if reason.contains("403") && reason.contains("forbidden")
        ));
        let refused = Err(TransportError::Refused { url: "u".into() });
        assert!(matches!(classify("x", refused), Step::Retry { .. }));
        let big = Err(TransportError::TooLarge {
            url: "u".into(),
            limit: 1,
        });
        assert!(matches!(classify("x", big), Step::Fail(_)));
    }

    #[test]
    fn zone_is_the_last_path_segment() {
        assert_eq!(
            zone_name("projects/123/zones/us-central1-a\n").as_deref(),
            Some("us-central1-a")
        );
        assert_eq!(
            zone_name("europe-west4-b").as_deref(),
            Some("europe-west4-b")
        );
        assert_eq!(zone_name(""), None);
        assert_eq!(zone_name("projects/1/zones/"), None);
    }
}
