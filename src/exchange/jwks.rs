//! Checking a returned JWT against the auth service's published keys (JWKS),
//! cached for a while and refetched when a new `kid` appears (key rotation).

use std::time::{Duration, Instant};

use super::{ExchangeClient, ExchangeError, ServerUrl, JWKS_TTL};
use crate::http::{fetch, TransportError};
use crate::token::Token;

impl ExchangeClient {
    pub(super) async fn validate(
        &self,
        server: &ServerUrl,
        token: &Token,
        left: Duration,
    ) -> Result<(), ExchangeError> {
        let header = jsonwebtoken::decode_header(token.jwt().expose())
            .map_err(|e| ExchangeError::Jwks(format!("unreadable JWT header: {e}")))?;
        let kid = header
            .kid
            .ok_or_else(|| ExchangeError::Jwks("the JWT has no kid".into()))?;
        let set = self.jwks(server, left, &kid).await?;
        let jwk = set
            .find(&kid)
            .ok_or_else(|| ExchangeError::Jwks(format!("no key {kid:?} in the server's JWKS")))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk)
            .map_err(|e| ExchangeError::Jwks(format!("unusable key {kid:?}: {e}")))?;
        // jsonwebtoken's signatures on ring (no RustCrypto `rsa` in the binary).
        crate::util::jwt_crypto::install();
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.validate_aud = false;
        validation.leeway = 60;
        jsonwebtoken::decode::<serde_json::Value>(token.jwt().expose(), &key, &validation)
            .map(|_| ())
            .map_err(|e| ExchangeError::Jwks(e.to_string()))
    }

    /// The server's JWKS, cached for a while and refetched when a new `kid` appears
    /// (key rotation).
    async fn jwks(
        &self,
        server: &ServerUrl,
        left: Duration,
        kid: &str,
    ) -> Result<jsonwebtoken::jwk::JwkSet, ExchangeError> {
        let url = server.jwks_url();
        if let Some((at, cached_url, set)) =
            self.jwks.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            if at.elapsed() < JWKS_TTL && *cached_url == url.as_str() && set.find(kid).is_some() {
                return Ok(set.clone());
            }
        }
        let timeout = left.max(Duration::from_millis(100));
        let answer = fetch(self.http.get(url.clone()), url.as_str(), timeout)
            .await
            .map_err(|e| match e {
                TransportError::TooLarge { .. } => ExchangeError::ResponseTooLarge,
                e => ExchangeError::Jwks(format!("cannot fetch the JWKS: {e}")),
            })?;
        if !answer.is_success() {
            return Err(ExchangeError::Jwks(format!(
                "{url} answered HTTP {}",
                answer.status
            )));
        }
        let body = answer.body.into_bytes();
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&body)
            .map_err(|e| ExchangeError::Jwks(format!("{url} is not a JWKS: {e}")))?;
        *self.jwks.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), url.to_string(), set.clone()));
        Ok(set)
    }
}
