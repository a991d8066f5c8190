//! Google Security Token Service: the RFC 8693 token exchange of workload
//! identity federation.
//!
//! ```text
//! POST {token_url}                     (https://sts.googleapis.com/v1/token)
//! Content-Type: application/x-www-form-urlencoded
//! grant_type=urn:ietf:params:oauth:grant-type:token-exchange
//! &audience=//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/Q
//! &scope=https://www.googleapis.com/auth/cloud-platform
//! &requested_token_type=urn:ietf:params:oauth:token-type:access_token
//! &subject_token=<the credential source's token>&subject_token_type=<the file's>
//! → 200 {"access_token", "issued_token_type", "token_type": "Bearer", "expires_in"}
//! → 400 {"error": "invalid_grant", "error_description": "..."}
//! ```
//!
//! The access token names a federated principal, which Google cannot mint an ID
//! token for: it is only good for impersonating a service account (`impersonate.rs`).
//! A `client_id`/`client_secret` in the file is sent as HTTP Basic authentication;
//! `workforce_pool_user_project` as `options={"userProject": ...}`.

use std::time::Duration;

use serde::Deserialize;

use super::super::{CloudProvider, ProviderError};
use super::adc::{self, ExternalAccount, UrlUse};
use super::oauth::{oauth_error, CLOUD_PLATFORM};
use crate::env::ProviderConfig;
use crate::http::{fetch, retry, GaveUp, Reply, RetryPolicy, Step, TransportError};
use crate::Secret;

const TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Exchanges `subject_token` for a federated access token.
pub(super) async fn exchange(
    cfg: &ProviderConfig,
    policy: &RetryPolicy,
    account: &ExternalAccount,
    subject_token: &Secret,
) -> Result<Secret, ProviderError> {
    let url =
        adc::check_url(cfg, "token_url", &account.token_url, UrlUse::Service).map_err(|e| {
            ProviderError::NoIdentity {
                provider: CloudProvider::Gcp,
                reason: e.to_string(),
            }
        })?;
    let url = url.as_str();
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE.to_string()),
        ("audience", account.audience.clone()),
        ("scope", CLOUD_PLATFORM.to_string()),
        ("requested_token_type", ACCESS_TOKEN_TYPE.to_string()),
        ("subject_token", subject_token.expose().to_string()),
        ("subject_token_type", account.subject_token_type.clone()),
    ];
    if let (Some(project), None) = (&account.workforce_pool_user_project, &account.client_id) {
        form.push((
            "options",
            serde_json::json!({ "userProject": project }).to_string(),
        ));
    }
    retry(
        policy,
        |_| {
            let mut req = cfg.http.post(url).form(&form);
            if let (Some(id), Some(secret)) = (&account.client_id, &account.client_secret) {
                req = req.basic_auth(id, Some(secret.expose()));
            }
            async move { classify(fetch(req, url, TIMEOUT).await) }
        },
        |g: GaveUp| upstream(g.to_string()),
    )
    .await
}

fn classify(result: Result<Reply, TransportError>) -> Step<Secret, ProviderError> {
    let reply = match Step::from_transport(result, upstream) {
        Ok(reply) => reply,
        Err(step) => return step,
    };
    match reply.status {
        200..=299 => match access_token_of(&reply.body) {
            Some(t) => Step::Done(t),
            None => Step::Fail(upstream("the answer has no access_token")),
        },
        429 | 500..=599 => Step::Retry {
            reason: format!("HTTP {}: {}", reply.status, oauth_error(&reply)),
            after: None,
        },
        status => Step::Fail(upstream(format!(
            "HTTP {status}: {}{}",
            oauth_error(&reply),
            hint(&reply)
        ))),
    }
}

pub(super) fn access_token_of(body: &str) -> Option<Secret> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
    }
    let token = serde_json::from_str::<Answer>(body).ok()?.access_token?;
    (!token.trim().is_empty()).then(|| Secret::new(token.trim()))
}

/// What usually causes Google STS's answer.
fn hint(reply: &Reply) -> &'static str {
    if reply.body.contains("invalid_target") {
        " (the audience must name an existing, enabled workload identity pool provider)"
    } else if reply.body.contains("invalid_grant") {
        " (the subject token is expired, unsigned by the provider's issuer, or fails the provider's attribute condition)"
    } else {
        ""
    }
}

fn upstream(reason: impl Into<String>) -> ProviderError {
    ProviderError::Upstream {
        provider: CloudProvider::Gcp,
        what: "Google STS token exchange".into(),
        reason: reason.into(),
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
    fn errors_keep_the_oauth_code_and_description() {
        let body = r#"{"error":"invalid_grant","error_description":"The audience in ID Token [x] does not match the expected audience."}"#;
        match classify(reply(400, body)) {
            Step::Fail(ProviderError::Upstream { reason, .. }) => {
                assert!(
                    reason.starts_with("HTTP 400: invalid_grant: The audience"),
                    "{reason}"
                );
                assert!(reason.contains("attribute condition"), "{reason}");
            }
            _ => panic!("expected a failure"),
        }
        assert!(matches!(
            classify(reply(200, r#"{"access_token":"ya29.x","token_type":"Bearer"}"#)),
            Step::Done(t) if t.expose() == "ya29.x"
        ));
        assert!(matches!(classify(reply(200, "{}")), Step::Fail(_)));
        assert!(matches!(classify(reply(500, "")), Step::Retry { .. }));
    }
}
