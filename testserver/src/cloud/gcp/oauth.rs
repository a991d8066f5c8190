//! Google's OAuth 2.0 token endpoint, `POST /token` (`oauth2.googleapis.com/token`),
//! for the two credential files that talk to it. Parameters are a form (JSON is
//! accepted too); errors are OAuth's `{"error", "error_description"}`.
//!
//! - `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`: the
//!   JWT is RS256, signed with a key this mock generated
//!   ([`MockCloud::create_service_account_key`], which writes the key file), `kid`
//!   = its `private_key_id`; `iss` = the key's account; `aud` = Google's token URL
//!   (`https://oauth2.googleapis.com/token`) or this endpoint's own URL; `exp` at
//!   most an hour after `iat` and not past. With `target_audience` it answers
//!   `{"id_token"}` (a Google ID token of the account for that audience), with
//!   `scope` `{"access_token", "expires_in", "token_type"}`. Errors: unknown key or
//!   bad signature `invalid_grant` "Invalid JWT Signature.", wrong `aud` "Invalid
//!   JWT: Failed audience check.", times "Invalid JWT: Token must be a short-lived
//!   token (60 minutes) and in a reasonable timeframe...", neither
//!   `target_audience` nor `scope` `invalid_scope`.
//! - `grant_type=refresh_token` with `client_id`, `client_secret`, `refresh_token`
//!   (from [`MockCloud::create_authorized_user`]): `{"access_token", "expires_in",
//!   "scope", "token_type", "id_token"?}`; the ID token (only when the user granted
//!   `openid`) has `aud` = `azp` = the OAuth client id, as Google's does. Unknown
//!   refresh token: `invalid_grant` "Bad Request"; wrong client: 401
//!   `invalid_client` "Unauthorized".

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs8::EncodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

use super::super::{MockCloud, ServiceAccount};
use super::sts::{params, OAuthError};
use super::{id_token_claims, lifetime, sign, GOOGLE_ISSUER};
use crate::keys::KeyError;
use crate::util::now_unix;

/// Google's token URL, the `aud` Google's libraries put in service-account JWTs.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const USER_SCOPES: &str = "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/cloud-platform";
const MAX_ASSERTION_SECS: u64 = 3600;
const LEEWAY_SECS: u64 = 60;

/// Keys and users the endpoint knows. `Debug` shows counts only.
#[derive(Default)]
pub struct OAuthState {
    keys: Mutex<HashMap<String, (ServiceAccount, DecodingKey)>>,
    users: Mutex<HashMap<String, User>>,
}

impl std::fmt::Debug for OAuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthState").finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct User {
    account: ServiceAccount,
    client_id: String,
    client_secret: String,
    openid: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MockCloud {
    /// A new key for service account `email`: the `service_account` key file
    /// (JSON) naming `token_uri`, as `gcloud iam service-accounts keys create`
    /// writes it. Generating the RSA key takes a few hundred milliseconds.
    pub fn create_service_account_key(
        &self,
        email: &str,
        token_uri: &str,
    ) -> Result<Value, KeyError> {
        let mut rng = rand::thread_rng();
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048)
            .map_err(|source| KeyError::Generate { bits: 2048, source })?;
        let pem = private
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        let public = private.to_public_key();
        let decoding = DecodingKey::from_rsa_raw_components(
            &public.n().to_bytes_be(),
            &public.e().to_bytes_be(),
        );
        let key_id = crate::util::random_hex(20);
        let account = ServiceAccount::new(email);
        lock(&self.google_oauth().keys).insert(key_id.clone(), (account.clone(), decoding));
        let project = email
            .split_once('@')
            .and_then(|(_, d)| d.split('.').next())
            .unwrap_or("s2iam-test-project");
        Ok(json!({
            "type": "service_account",
            "project_id": project,
            "private_key_id": key_id,
            "private_key": pem.as_str(),
            "client_email": email,
            "client_id": account.unique_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        }))
    }

    /// A user who logged in with `gcloud auth application-default login`: the
    /// `authorized_user` file (JSON). `openid`: whether the grant included the
    /// `openid` scope (then refreshes return an ID token). `token_uri`, when set, is
    /// written into the file (gcloud writes none; tests point it at the mock).
    pub fn create_authorized_user(
        &self,
        email: &str,
        openid: bool,
        token_uri: Option<&str>,
    ) -> Value {
        let client_id = format!(
            "{}-s2iamtest.apps.googleusercontent.com",
            &crate::util::random_hex(6)
        );
        let client_secret = format!("GOCSPX-{}", crate::util::random_hex(14));
        let refresh_token = format!("1//0{}", crate::util::random_hex(48));
        lock(&self.google_oauth().users).insert(
            refresh_token.clone(),
            User {
                account: ServiceAccount::new(email),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                openid,
            },
        );
        let mut file = json!({
            "type": "authorized_user",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
            "quota_project_id": "s2iam-test-project",
            "universe_domain": "googleapis.com",
        });
        if let Some(uri) = token_uri {
            file["token_uri"] = json!(uri);
        }
        file
    }
}

/// `POST /token`.
pub(super) async fn token(
    State(cloud): State<MockCloud>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = params(&headers, &body).and_then(|p| {
        let get = |name: &str| p.get(name).map(String::as_str).filter(|s| !s.is_empty());
        match get("grant_type") {
            Some(JWT_BEARER) => jwt_bearer(&cloud, &headers, &get),
            Some("refresh_token") => refresh(&cloud, &get),
            Some(other) => Err(OAuthError {
                code: "unsupported_grant_type",
                description: format!(
                    "Invalid grant_type: {}",
                    other.chars().take(100).collect::<String>()
                ),
            }),
            None => Err(grant_error(
                "invalid_request",
                "Missing required parameter: grant_type",
            )),
        }
    });
    match answer {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body.to_string(),
        )
            .into_response(),
        Err(e) => e.response(),
    }
}

fn grant_error(code: &'static str, description: &str) -> OAuthError {
    OAuthError {
        code,
        description: description.to_string(),
    }
}

fn jwt_bearer<'a>(
    cloud: &MockCloud,
    headers: &HeaderMap,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Value, OAuthError> {
    let assertion = get("assertion")
        .ok_or_else(|| grant_error("invalid_request", "Missing required parameter: assertion"))?;
    let bad_signature = || grant_error("invalid_grant", "Invalid JWT Signature.");
    let kid = jsonwebtoken::decode_header(assertion)
        .map_err(|_| bad_signature())?
        .kid
        .ok_or_else(bad_signature)?;
    let (account, key) = lock(&cloud.google_oauth().keys)
        .get(&kid)
        .cloned()
        .ok_or_else(bad_signature)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["iss"]);
    let claims: Value = jsonwebtoken::decode(assertion, &key, &validation)
        .map_err(|_| bad_signature())?
        .claims;
    if claims["iss"].as_str() != Some(account.email.as_str()) {
        return Err(grant_error(
            "invalid_grant",
            "Invalid grant: account not found",
        ));
    }
    let own_url = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}/token"));
    let aud = claims["aud"].as_str().unwrap_or("");
    if aud != GOOGLE_TOKEN_URL && Some(aud) != own_url.as_deref() {
        return Err(grant_error(
            "invalid_grant",
            "Invalid JWT: Failed audience check.",
        ));
    }
    let now = now_unix();
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    let too_long = exp
        .checked_sub(iat)
        .is_none_or(|life| life > MAX_ASSERTION_SECS);
    if exp <= now || iat > now.saturating_add(LEEWAY_SECS) || too_long {
        return Err(grant_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    let lifetime = lifetime(cloud);
    if let Some(target) = claims["target_audience"].as_str().filter(|s| !s.is_empty()) {
        let claims = id_token_claims(&account, target, true, now, lifetime);
        let token =
            sign(cloud, &claims).map_err(|_| grant_error("internal_failure", "Internal error."))?;
        return Ok(json!({ "id_token": token }));
    }
    if claims["scope"]
        .as_str()
        .is_some_and(|s| !s.trim().is_empty())
    {
        let token = cloud.gcp_access_tokens().issue(&account.email, lifetime);
        return Ok(json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}));
    }
    Err(grant_error(
        "invalid_scope",
        "Invalid OAuth scope or ID token audience provided.",
    ))
}

fn refresh<'a>(
    cloud: &MockCloud,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Value, OAuthError> {
    let refresh_token = get("refresh_token").ok_or_else(|| {
        grant_error(
            "invalid_request",
            "Missing required parameter: refresh_token",
        )
    })?;
    let user = lock(&cloud.google_oauth().users)
        .get(refresh_token)
        .cloned()
        .ok_or_else(|| grant_error("invalid_grant", "Bad Request"))?;
    if get("client_id") != Some(user.client_id.as_str())
        || get("client_secret") != Some(user.client_secret.as_str())
    {
        return Err(grant_error("invalid_client", "Unauthorized"));
    }
    let lifetime = lifetime(cloud);
    let access = cloud
        .gcp_access_tokens()
        .issue(&user.account.email, lifetime);
    let mut answer = json!({
        "access_token": access,
        "expires_in": lifetime,
        "scope": if user.openid { USER_SCOPES } else { "https://www.googleapis.com/auth/cloud-platform" },
        "token_type": "Bearer",
    });
    if user.openid {
        let now = now_unix();
        let claims = json!({
            "iss": GOOGLE_ISSUER,
            "azp": user.client_id,
            "aud": user.client_id,
            "sub": user.account.unique_id,
            "email": user.account.email,
            "email_verified": true,
            "at_hash": URL_SAFE_NO_PAD.encode(crate::util::random_hex(8)),
            "iat": now,
            "exp": now.saturating_add(lifetime),
        });
        let token =
            sign(cloud, &claims).map_err(|_| grant_error("internal_failure", "Internal error."))?;
        answer["id_token"] = json!(token);
    }
    Ok(answer)
}
