//! Service-account impersonation with the IAM Credentials API:
//!
//! ```text
//! POST {gcp_iamcredentials}/v1/projects/-/serviceAccounts/{email}:generateIdToken
//! Authorization: Bearer <the instance's access token>
//! {"audience": "<aud>", "includeEmail": true}
//! → 200 {"token": "<ID token of {email}>"}
//! ```
//!
//! Google errors come as `{"error": {"code", "message", "status"}}`; a 403 means the
//! caller lacks `roles/iam.serviceAccountTokenCreator` on the target.

use std::time::Duration;

use serde::Deserialize;

use super::super::{CloudProvider, ProviderError};
use crate::env::ProviderConfig;
use crate::http::{fetch, retry, GaveUp, Reply, RetryPolicy, Step, TransportError};
use crate::Secret;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Where to ask for a service account's ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    /// `.../v1/projects/-/serviceAccounts/{email}:generateIdToken`.
    pub url: String,
    /// The service account (for messages).
    pub email: String,
}

impl Target {
    /// `email` at the IAM Credentials API `base`.
    pub fn at_base(base: &str, email: &str) -> Self {
        Self {
            url: format!(
                "{}/v1/projects/-/serviceAccounts/{email}:generateIdToken",
                base.trim_end_matches('/')
            ),
            email: email.to_string(),
        }
    }

    /// From an `external_account` file's `service_account_impersonation_url`
    /// (`.../serviceAccounts/{email}:generateAccessToken`): the same account's
    /// `:generateIdToken`.
    pub fn from_access_token_url(url: &url::Url) -> Result<Self, String> {
        let path = url.path();
        let (prefix, rest) = path
            .rsplit_once("/serviceAccounts/")
            .ok_or("expected .../projects/-/serviceAccounts/EMAIL:generateAccessToken")?;
        let email = rest
            .strip_suffix(":generateAccessToken")
            .ok_or("expected it to end in :generateAccessToken")?;
        let email = email.replace("%40", "@");
        super::validate_service_account(&email).map_err(str::to_string)?;
        let mut id_url = url.clone();
        id_url.set_query(None);
        id_url.set_path(&format!("{prefix}/serviceAccounts/{email}:generateIdToken"));
        Ok(Self {
            url: id_url.to_string(),
            email,
        })
    }
}

/// `email`'s ID token for `audience`, minted with the caller's `access` token at
/// the configured IAM Credentials endpoint.
pub(super) async fn generate_id_token(
    cfg: &ProviderConfig,
    policy: &RetryPolicy,
    email: &str,
    audience: &str,
    access: &Secret,
) -> Result<Secret, ProviderError> {
    let target = Target::at_base(&cfg.endpoints.gcp_iamcredentials, email);
    generate_id_token_at(cfg, policy, &target.url, email, audience, access).await
}

/// `email`'s ID token for `audience` from `url` (a `:generateIdToken` URL).
pub(super) async fn generate_id_token_at(
    cfg: &ProviderConfig,
    policy: &RetryPolicy,
    url: &str,
    email: &str,
    audience: &str,
    access: &Secret,
) -> Result<Secret, ProviderError> {
    let body = serde_json::json!({"audience": audience, "includeEmail": true});
    retry(
        policy,
        |_| {
            let req = cfg
                .http
                .post(url)
                .header("Authorization", format!("Bearer {}", access.expose()))
                .json(&body);
            async move { classify(email, fetch(req, url, TIMEOUT).await) }
        },
        |g: GaveUp| upstream(email, g.to_string()),
    )
    .await
}

fn classify(email: &str, result: Result<Reply, TransportError>) -> Step<Secret, ProviderError> {
    let reply = match Step::from_transport(result, |e| upstream(email, e)) {
        Ok(reply) => reply,
        Err(step) => return step,
    };
    match reply.status {
        200..=299 => Step::Done(match token_of(&reply.body) {
            Some(t) => t,
            None => {
                return Step::Fail(upstream(
                    email,
                    "the answer has no \"token\" (expected {\"token\": \"...\"})",
                ))
            }
        }),
        429 | 500..=599 => Step::Retry {
            reason: format!("HTTP {}: {}", reply.status, google_message(&reply)),
            after: None,
        },
        status => Step::Fail(upstream(
            email,
            format!(
                "HTTP {status}: {}{}",
                google_message(&reply),
                hint(status, email)
            ),
        )),
    }
}

pub(super) fn token_of(body: &str) -> Option<Secret> {
    #[derive(Deserialize)]
    struct Answer {
        token: Option<String>,
    }
    let token = serde_json::from_str::<Answer>(body).ok()?.token?;
    (!token.trim().is_empty()).then(|| Secret::new(token.trim()))
}

/// `error.message` (with `error.status`) of a Google error, else the body's start.
fn google_message(reply: &Reply) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<GoogleError>,
    }
    #[derive(Deserialize)]
    struct GoogleError {
        message: Option<String>,
        status: Option<String>,
    }
    match serde_json::from_str::<Envelope>(&reply.body) {
        Ok(Envelope {
            error:
                Some(GoogleError {
                    message: Some(m),
                    status,
                }),
        }) => match status {
            Some(s) => format!("{s}: {}", crate::http::snippet(&m)),
            None => crate::http::snippet(&m),
        },
        _ => reply.snippet(),
    }
}

fn hint(status: u16, email: &str) -> String {
    match status {
        403 => format!(
            " (the caller (the instance's service account, the federated principal or the user) needs roles/iam.serviceAccountTokenCreator on {email}, or roles/iam.workloadIdentityUser for a workload identity pool)"
        ),
        404 => format!(" (does the service account {email} exist?)"),
        _ => String::new(),
    }
}

fn upstream(email: &str, reason: impl Into<String>) -> ProviderError {
    ProviderError::Upstream {
        provider: CloudProvider::Gcp,
        what: format!("impersonating {email} (IAM Credentials generateIdToken)"),
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
    fn denied_names_the_missing_role() {
        let body = r#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getOpenIdToken' denied","status":"PERMISSION_DENIED"}}"#;
        match classify("t@p.iam.gserviceaccount.com", reply(403, body)) {
            Step::Fail(ProviderError::Upstream { reason, what, .. }) => {
                assert!(what.contains("t@p.iam.gserviceaccount.com"));
                assert!(reason.contains("PERMISSION_DENIED: Permission"), "{reason}");
                assert!(reason.contains("serviceAccountTokenCreator"), "{reason}");
            }
            _ => panic!("expected a final failure"),
        }
    }

    #[test]
    fn impersonation_urls_become_generate_id_token_urls() {
        let u = url::Url::parse("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken").unwrap();
        let t = Target::from_access_token_url(&u).unwrap();
        assert_eq!(t.email, "sa@p.iam.gserviceaccount.com");
        assert_eq!(t.url, "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateIdToken");
        let local = url::Url::parse("http://127.0.0.1:9/v1/projects/-/serviceAccounts/sa%40p.iam.gserviceaccount.com:generateAccessToken").unwrap();
        assert_eq!(
            Target::from_access_token_url(&local).unwrap().url,
            "http://127.0.0.1:9/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateIdToken"
        );
        for bad in [
            "https://x/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:signBlob",
            "https://x/v1/other",
            "https://x/v1/projects/-/serviceAccounts/a%2F..%2Fb@x.com:generateAccessToken",
        ] {
            assert!(
                Target::from_access_token_url(&url::Url::parse(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            Target::at_base("http://h/", "e@x.com").url,
            "http://h/v1/projects/-/serviceAccounts/e@x.com:generateIdToken"
        );
    }

    #[test]
    fn answers_without_a_token_are_errors() {
        for body in ["", "{}", r#"{"token": ""}"#, "[1]", r#"{"token": 5}"#] {
            assert!(
                matches!(classify("e", reply(200, body)), Step::Fail(_)),
                "{body}"
            );
        }
        assert!(matches!(
            classify("e", reply(200, r#"{"token": "a.b.c"}"#)),
            Step::Done(t) if t.expose() == "a.b.c"
        ));
        assert!(matches!(classify("e", reply(503, "x")), Step::Retry { .. }));
    }
}
