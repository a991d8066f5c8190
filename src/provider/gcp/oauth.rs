//! Google's OAuth 2.0 token endpoint (`token_uri` of the credential file,
//! `https://oauth2.googleapis.com/token` by default), for the two file types that
//! talk to it:
//!
//! - `service_account`: a JWT signed RS256 with the file's private key (`kid` =
//!   `private_key_id`; claims `iss` = the account email, `aud` = `token_uri`, `iat`,
//!   `exp` = `iat` + 1 h, and `target_audience` = the audience wanted) is exchanged
//!   with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`
//!   for `{"id_token": ...}`: Google's own flow for a service account's ID token
//!   (google-auth `IDTokenCredentials`). With `scope` instead of
//!   `target_audience` it returns `{"access_token": ...}` (used to impersonate
//!   another account with `--assume-role`).
//! - `authorized_user`: `grant_type=refresh_token` with `client_id`,
//!   `client_secret`, `refresh_token` → `{"access_token", "id_token", ...}`. The ID
//!   token's `aud` is the OAuth client id (gcloud's), never the audience s2iam asks
//!   for: the auth service accepts it only if configured to trust that client id.
//!
//! Errors are OAuth's `{"error": "invalid_grant", "error_description": "..."}`.
//! The private key, client secret and refresh token never appear in logs or errors.

use std::time::Duration;

use serde::Deserialize;

use super::super::{CloudProvider, ProviderError};
use super::adc::{self, AuthorizedUser, ServiceAccountKey, UrlUse};
use crate::env::ProviderConfig;
use crate::http::{fetch, retry, GaveUp, Reply, RetryPolicy, Step, TransportError};
use crate::Secret;

const TIMEOUT: Duration = Duration::from_secs(10);
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime of the signed assertion (Google accepts at most one hour).
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// The scope of access tokens used to call IAM Credentials.
pub(super) const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// What the token endpoint answered (only the fields s2iam uses).
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
}

/// A service account's ID token for `audience`, from its key file.
pub(super) async fn service_account_id_token(
    cfg: &ProviderConfig,
    policy: &RetryPolicy,
    key: &ServiceAccountKey,
    audience: &str,
) -> Result<Secret, ProviderError> {
    let answer = jwt_grant(cfg, policy, key, ("target_audience", audience)).await?;
    answer
        .id_token
        .filter(|t| !t.trim().is_empty())
        .map(|t| Secret::new(t.trim()))
        .ok_or_else(|| upstream("service-account JWT grant", "the answer has no id_token"))
}

/// A service account's access token (scope cloud-platform), from its key file.
pub(super) async fn service_account_access_token(
    cfg: &ProviderConfig,
    policy: &RetryPolicy,
    key: &ServiceAccountKey,
) -> Result<Secret, ProviderError> {
    let answer = jwt_grant(cfg, policy, key, ("scope", CLOUD_PLATFORM)).await?;
    access_token_of(answer, "service-account JWT grant")
}

/// A user's access token and ID token, from an `authorized_user` file.
pub(super) async fn refresh_user(
    cfg: &ProviderConfig,
    policy: &RetryPolicy,
    user: &AuthorizedUser,
) -> Result<(Secret, Option<Secret>), ProviderError> {
    let raw = user
        .token_uri
        .as_deref()
        .unwrap_or(adc::DEFAULT_OAUTH_TOKEN_URL);
    let url = adc::check_url(cfg, "token_uri", raw, UrlUse::Service).map_err(invalid)?;
    let form = vec![
        ("grant_type", "refresh_token".to_string()),
        ("client_id", user.client_id.clone()),
        ("client_secret", user.client_secret.expose().to_string()),
        ("refresh_token", user.refresh_token.expose().to_string()),
    ];
    let answer = post_form(cfg, policy, url.as_str(), &form, "refresh-token grant").await?;
    let id = answer
        .id_token
        .clone()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Secret::new(t.trim()));
    Ok((access_token_of(answer, "refresh-token grant")?, id))
}

async fn jwt_grant(
    cfg: &ProviderConfig,
    policy: &RetryPolicy,
    key: &ServiceAccountKey,
    extra: (&str, &str),
) -> Result<TokenAnswer, ProviderError> {
    let raw = key
        .token_uri
        .as_deref()
        .unwrap_or(adc::DEFAULT_OAUTH_TOKEN_URL);
    let url = adc::check_url(cfg, "token_uri", raw, UrlUse::Service).map_err(invalid)?;
    let assertion = sign_assertion(key, url.as_str(), extra, cfg.now_unix())?;
    let form = vec![
        ("grant_type", JWT_BEARER.to_string()),
        ("assertion", assertion.expose().to_string()),
    ];
    post_form(
        cfg,
        policy,
        url.as_str(),
        &form,
        "service-account JWT grant",
    )
    .await
}

/// The signed JWT assertion. The key is parsed here and dropped with the call.
///
/// Signed with ring (constant-time RSA, already in the tree through rustls), not
/// through jsonwebtoken's RustCrypto backend: `rsa`'s private-key operations are not
/// constant time (RUSTSEC-2023-0071, the Marvin attack), and this is the one
/// private-key operation s2iam does (see deny.toml). jsonwebtoken still parses the
/// PEM (PKCS#8 or PKCS#1) into the PKCS#1 DER that ring takes.
fn sign_assertion(
    key: &ServiceAccountKey,
    token_uri: &str,
    extra: (&str, &str),
    now: u64,
) -> Result<Secret, ProviderError> {
    use base64::Engine as _;
    let not_rsa = || {
        invalid_msg("the service_account file's private_key is not an RSA private key in PEM form")
    };
    let der = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.expose().as_bytes())
        .map_err(|_| not_rsa())?;
    let pair = ring::signature::RsaKeyPair::from_der(der.inner()).map_err(|_| not_rsa())?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = key.private_key_id.clone();
    let mut claims = serde_json::json!({
        "iss": key.client_email,
        "aud": token_uri,
        "iat": now,
        "exp": now.saturating_add(ASSERTION_LIFETIME_SECS),
    });
    claims[extra.0] = serde_json::Value::from(extra.1);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let cannot_sign = || invalid_msg("cannot sign with the service_account file's private_key");
    let header = serde_json::to_vec(&header).map_err(|_| cannot_sign())?;
    let claims = serde_json::to_vec(&claims).map_err(|_| cannot_sign())?;
    let signing_input = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| cannot_sign())?;
    Ok(Secret::new(format!(
        "{signing_input}.{}",
        b64.encode(signature)
    )))
}

fn access_token_of(answer: TokenAnswer, what: &str) -> Result<Secret, ProviderError> {
    answer
        .access_token
        .filter(|t| !t.trim().is_empty())
        .map(|t| Secret::new(t.trim()))
        .ok_or_else(|| upstream(what, "the answer has no access_token"))
}

/// POSTs a form to a Google token endpoint, retrying transient failures.
async fn post_form(
    cfg: &ProviderConfig,
    policy: &RetryPolicy,
    url: &str,
    form: &[(&str, String)],
    what: &'static str,
) -> Result<TokenAnswer, ProviderError> {
    retry(
        policy,
        |_| {
            let req = cfg.http.post(url).form(form);
            async move { classify(what, fetch(req, url, TIMEOUT).await) }
        },
        |g: GaveUp| upstream(what, g.to_string()),
    )
    .await
}

fn classify(what: &str, result: Result<Reply, TransportError>) -> Step<TokenAnswer, ProviderError> {
    let reply = match Step::from_transport(result, |e| upstream(what, e)) {
        Ok(reply) => reply,
        Err(step) => return step,
    };
    match reply.status {
        200..=299 => match serde_json::from_str::<TokenAnswer>(&reply.body) {
            Ok(a) => Step::Done(a),
            Err(_) => Step::Fail(upstream(what, "the answer is not the expected JSON")),
        },
        429 | 500..=599 => Step::Retry {
            reason: format!("HTTP {}: {}", reply.status, oauth_error(&reply)),
            after: None,
        },
        status => Step::Fail(upstream(
            what,
            format!("HTTP {status}: {}", oauth_error(&reply)),
        )),
    }
}

/// `error: error_description` of an OAuth error answer (RFC 6749 5.2, as Google's
/// token endpoint and STS send it), else the body's start.
pub(super) fn oauth_error(reply: &Reply) -> String {
    #[derive(Deserialize)]
    struct OAuthError {
        error: Option<serde_json::Value>,
        error_description: Option<String>,
    }
    match serde_json::from_str::<OAuthError>(&reply.body) {
        Ok(OAuthError {
            error: Some(serde_json::Value::String(code)),
            error_description,
        }) => match error_description {
            Some(d) => format!("{code}: {}", crate::http::snippet(&d)),
            None => code,
        },
        // Google APIs' `{"error": {"code", "message", "status"}}`.
        Ok(OAuthError {
            error: Some(serde_json::Value::Object(o)),
            ..
        }) => {
            let status = o.get("status").and_then(|s| s.as_str()).unwrap_or("");
            let message = o.get("message").and_then(|s| s.as_str()).unwrap_or("");
            format!("{status}: {}", crate::http::snippet(message))
        }
        _ => reply.snippet(),
    }
}

fn upstream(what: &str, reason: impl Into<String>) -> ProviderError {
    ProviderError::Upstream {
        provider: CloudProvider::Gcp,
        what: format!("Google OAuth {what}"),
        reason: reason.into(),
    }
}

fn invalid(e: adc::AdcError) -> ProviderError {
    invalid_msg(&e.to_string())
}

fn invalid_msg(reason: &str) -> ProviderError {
    ProviderError::NoIdentity {
        provider: CloudProvider::Gcp,
        reason: reason.to_string(),
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
    fn oauth_errors_are_reported_with_their_description() {
        let body = r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        match classify("x", reply(400, body)) {
            Step::Fail(ProviderError::Upstream { reason, .. }) => {
                assert_eq!(reason, "HTTP 400: invalid_grant: Invalid JWT Signature.")
            }
            _ => panic!("expected a final failure"),
        }
        assert!(matches!(
            classify("x", reply(503, "{}")),
            Step::Retry { .. }
        ));
        assert!(matches!(
            classify("x", reply(200, "not json")),
            Step::Fail(_)
        ));
    }

    #[test]
    fn a_key_that_is_not_rsa_pem_is_a_clear_error_without_the_key() {
        let key = ServiceAccountKey {
            client_email: "a@p.iam.gserviceaccount.com".into(),
            private_key_id: None,
            private_key: Secret::new(
                "-----BEGIN PRIVATE KEY-----\nNOTAKEY\n-----END PRIVATE KEY-----\n",
            ),
            token_uri: None,
        };
        let e = sign_assertion(&key, "https://x/token", ("scope", "s"), 1).unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("not an RSA private key"), "{shown}");
        assert!(!shown.contains("NOTAKEY"));
    }
}
