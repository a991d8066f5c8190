//! Google Cloud as a workload sees it, one file per service (mirroring
//! `src/provider/gcp/`):
//!
//! | paths | service | module |
//! |---|---|---|
//! | `GET /computeMetadata/v1/...` | the GCE metadata server | [`metadata`] |
//! | `POST /v1/projects/-/serviceAccounts/{sa}:generateIdToken` (`:generateAccessToken`) | IAM Credentials | [`iam`] |
//! | `POST /v1/token` | Security Token Service (workload identity federation) | [`sts`] |
//! | `GET /_mock/google/subject-token?sub=` | a subject token the pool's OIDC provider accepts, for out-of-process checks | [`sts`] |
//! | `POST /token` | the OAuth 2.0 token endpoint (service-account keys, refresh tokens) | [`oauth`] |
//!
//! The metadata server answers only while [`CloudConfig::gcp`](super::CloudConfig) is
//! set; the global APIs always answer. Every token they mint is RS256, signed with
//! the mock Google key, `iss` [`GOOGLE_ISSUER`]. Access tokens are opaque and
//! remembered in [`AccessTokens`] with their owner (a service account, a user, or a
//! federated `principal://` of a workload identity pool), so IAM Credentials can
//! tell whose a bearer token is.

pub mod iam;
pub mod metadata;
pub mod oauth;
pub mod sts;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::{MockCloud, ServiceAccount};
use crate::keys::KeyError;
use crate::util::now_unix;

pub use metadata::{mint_id_token, TokenFormat};

/// `iss` of every Google ID token.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// Google never issues access or ID tokens that live longer than an hour.
const MAX_TOKEN_LIFETIME_SECS: u64 = 3600;

/// The GCE metadata, IAM Credentials, STS and OAuth routes.
pub fn routes() -> Router<MockCloud> {
    Router::new()
        .route("/computeMetadata", get(metadata::metadata))
        .route("/computeMetadata/", get(metadata::metadata))
        .route("/computeMetadata/{*path}", get(metadata::metadata))
        .route(
            "/v1/projects/-/serviceAccounts/{name}",
            post(iam::service_account_method),
        )
        .route("/v1/token", post(sts::token))
        .route("/_mock/google/subject-token", get(sts::subject_token))
        .route("/token", post(oauth::token))
}

/// The ID token `generateIdToken` would return for `target`.
pub fn mint_impersonated_id_token(
    cloud: &MockCloud,
    target: &ServiceAccount,
    audience: &str,
    include_email: bool,
) -> Result<String, KeyError> {
    let claims = id_token_claims(target, audience, include_email, now_unix(), lifetime(cloud));
    sign(cloud, &claims)
}

/// OAuth access tokens the mock has minted (metadata server, STS, OAuth token
/// endpoint), by token, with their owner (a service-account or user email, or a
/// federated `principal://`), so IAM Credentials can tell whose a bearer token is
/// (real access tokens are opaque too). Never printed: the tokens are credentials.
#[derive(Default)]
pub struct AccessTokens {
    tokens: Mutex<HashMap<String, (String, u64)>>,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("count", &self.lock().len())
            .finish()
    }
}

impl AccessTokens {
    /// Mints a token for `email` that lives `lifetime_secs`.
    pub fn issue(&self, email: &str, lifetime_secs: u64) -> String {
        let token = format!("ya29.c.{}", crate::util::random_hex(48));
        let now = now_unix();
        let mut tokens = self.lock();
        tokens.retain(|_, (_, exp)| *exp > now);
        tokens.insert(
            token.clone(),
            (email.to_string(), now.saturating_add(lifetime_secs)),
        );
        token
    }

    /// The service account a live token belongs to.
    pub fn owner(&self, token: &str) -> Option<String> {
        self.lock()
            .get(token)
            .filter(|(_, exp)| *exp > now_unix())
            .map(|(email, _)| email.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, u64)>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Seconds a token lives: the configured TTL, capped like Google caps it.
fn lifetime(cloud: &MockCloud) -> u64 {
    cloud
        .config()
        .token_ttl
        .as_secs()
        .min(MAX_TOKEN_LIFETIME_SECS)
}

fn sign(cloud: &MockCloud, claims: &Value) -> Result<String, KeyError> {
    cloud.keys().google.sign(claims)
}

/// The claims every Google-signed service-account ID token has.
fn id_token_claims(
    sa: &ServiceAccount,
    audience: &str,
    include_email: bool,
    now: u64,
    lifetime: u64,
) -> Value {
    let mut claims = json!({
        "aud": audience,
        "azp": sa.unique_id,
        "exp": now.saturating_add(lifetime),
        "iat": now,
        "iss": GOOGLE_ISSUER,
        "sub": sa.unique_id,
    });
    if include_email {
        claims["email"] = json!(sa.email);
        claims["email_verified"] = json!(true);
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_expire_and_debug_hides_them() {
        let tokens = AccessTokens::default();
        let live = tokens.issue("a@b", 60);
        let dead = tokens.issue("c@d", 0);
        assert_eq!(tokens.owner(&live).as_deref(), Some("a@b"));
        assert_eq!(tokens.owner(&dead), None);
        assert!(!format!("{tokens:?}").contains(&live));
    }
}
