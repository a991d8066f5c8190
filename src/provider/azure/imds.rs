//! Azure Instance Metadata Service (`{azure_imds}`, every request with `Metadata: true`):
//!
//! - `GET /metadata/instance?api-version=2021-02-01` → `{"compute": {"subscriptionId",
//!   "resourceGroupName", "location", ...}, "network": {...}}` — detection, and the
//!   subscription / resource group / region the identity headers carry;
//! - `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=<r>[&client_id=<id>]`
//!   → `{"access_token", "expires_on", "resource", "token_type", "client_id"}`;
//!   `client_id` selects a user-assigned identity. 400 `{"error": "invalid_request",
//!   "error_description": "Identity not found"}` when the VM has no such identity.
//!
//! IMDS allows about 5 requests per second per VM and answers 429 beyond that, and
//! 410 while it is being updated: token requests retry (see [`super::token`]).

use std::time::Duration;

use serde::Deserialize;

use super::super::{ProbeError, ProviderError};
use super::token::{AccessToken, Compute, Source};
use crate::env::ProviderConfig;
use crate::http::{fetch, retry, GaveUp, Reply, RetryPolicy, TransportError};

pub(super) const INSTANCE_PATH: &str = "/metadata/instance?api-version=2021-02-01";
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const TOKEN_TIMEOUT: Duration = Duration::from_secs(5);
const INSTANCE_TIMEOUT: Duration = Duration::from_secs(2);

/// A managed-identity access token for `resource`, for the user-assigned identity
/// `client_id` or the system-assigned one.
pub(super) async fn token(
    cfg: &ProviderConfig,
    policy: &RetryPolicy,
    resource: &str,
    client_id: Option<&str>,
) -> Result<AccessToken, ProviderError> {
    let mut url = url::Url::parse(&format!("{}{TOKEN_PATH}", cfg.endpoints.azure_imds))
        .map_err(|e| super::bad_endpoint("S2IAM_AZURE_IMDS_ENDPOINT", e))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("api-version", "2018-02-01")
            .append_pair("resource", resource);
        if let Some(id) = client_id {
            q.append_pair("client_id", id);
        }
    }
    let source = Source {
        what: "IMDS managed identity token request",
        not_found: Some(match client_id {
            Some(id) => format!(
                "the user-assigned managed identity with client id {id} is not assigned to this VM"
            ),
            None => "no system-assigned managed identity on this VM; enable it, or select a \
                     user-assigned identity by its client id (assume-role)"
                .into(),
        }),
        hint: |_| "",
    };
    let url = url.as_str();
    retry(
        policy,
        |_| {
            let req = cfg.http.get(url).header("Metadata", "true");
            let source = &source;
            async move {
                let result = fetch(req, url, TOKEN_TIMEOUT).await;
                source.classify(result, cfg.clock.now())
            }
        },
        |g: GaveUp| source.upstream(g.to_string()),
    )
    .await
}

/// One `/metadata/instance` request.
pub(super) async fn instance(
    cfg: &ProviderConfig,
    timeout: Duration,
) -> Result<Reply, TransportError> {
    let url = format!("{}{INSTANCE_PATH}", cfg.endpoints.azure_imds);
    fetch(cfg.http.get(&url).header("Metadata", "true"), &url, timeout).await
}

/// The VM's subscription, resource group and region, best effort: the token is what
/// matters, these only label it.
pub(super) async fn compute(cfg: &ProviderConfig) -> Compute {
    match instance(cfg, INSTANCE_TIMEOUT).await {
        Ok(reply) if reply.is_success() => parse_compute(&reply.body).unwrap_or_default(),
        Ok(reply) => {
            tracing::debug!(status = reply.status, "Azure IMDS: no instance metadata");
            Compute::default()
        }
        Err(e) => {
            tracing::debug!(error = %e, "Azure IMDS: no instance metadata");
            Compute::default()
        }
    }
}

/// `compute.{subscriptionId, resourceGroupName, location}`; `None` unless the body
/// is a JSON object with a `compute` object (what makes it Azure IMDS).
pub(super) fn parse_compute(body: &str) -> Option<Compute> {
    #[derive(Deserialize)]
    struct Instance {
        compute: Option<serde_json::Map<String, serde_json::Value>>,
    }
    let compute = serde_json::from_str::<Instance>(body).ok()?.compute?;
    let field = |name: &str| {
        compute
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Some(Compute {
        subscription_id: field("subscriptionId"),
        resource_group: field("resourceGroupName"),
        location: field("location"),
    })
}

/// A detection answer: 200 with instance metadata is Azure; anything else is not.
pub(super) fn check_probe_reply(url: &str, reply: &Reply) -> Result<(), ProbeError> {
    let shown = crate::http::display_url(url);
    if reply.status != 200 {
        return Err(ProbeError::Status {
            url: shown,
            status: reply.status,
        });
    }
    match parse_compute(&reply.body) {
        Some(_) => Ok(()),
        None => Err(ProbeError::NotThisCloud(format!(
            "{shown} answered 200 without a \"compute\" object: not Azure instance metadata"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_fields_are_read_and_non_azure_bodies_rejected() {
        let body = r#"{"compute": {"subscriptionId": "s", "resourceGroupName": "rg",
                       "location": "eastus", "vmId": "x"}, "network": {}}"#;
        assert_eq!(
            parse_compute(body),
            Some(Compute {
                subscription_id: Some("s".into()),
                resource_group: Some("rg".into()),
                location: Some("eastus".into()),
            })
        );
        assert_eq!(
            parse_compute(r#"{"compute": {}}"#),
            Some(Compute::default())
        );
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"compute": null}"#,
            r#"{"compute": 5}"#,
            "ami-id\nhostname",
        ] {
            assert_eq!(parse_compute(bad), None, "{bad}");
        }
    }

    #[test]
    fn probe_needs_200_and_compute() {
        let r = |status, body: &str| Reply {
            status,
            headers: Default::default(),
            body: body.into(),
        };
        let url = "http://127.0.0.1:1/metadata/instance?api-version=2021-02-01";
        assert!(check_probe_reply(url, &r(200, r#"{"compute":{"location":"x"}}"#)).is_ok());
        assert!(matches!(
            check_probe_reply(url, &r(200, "{}")),
            Err(ProbeError::NotThisCloud(m)) if m.contains("compute")
        ));
        assert_eq!(
            check_probe_reply(url, &r(404, "")),
            Err(ProbeError::Status {
                url: "http://127.0.0.1:1/metadata/instance".into(),
                status: 404
            })
        );
    }
}
