//! A JWT issued by the auth service, with its expiry.
//!
//! Expiry is tracked twice: as the wall-clock instant the server stated (for
//! display and for `expires_at` in the local API), and as a monotonic deadline
//! computed from the moment the token was received (`received + (expires_at -
//! now_at_receipt)`), which is what freshness decisions use, so a wall clock that
//! jumps after issue can neither keep an expired token alive nor discard a valid one.

use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use crate::secret::Secret;

/// What the client reads from the token's payload (unverified unless JWKS
/// validation is on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    #[serde(default)]
    /// Subject: the workload's identity as the auth service saw it.
    pub sub: Option<String>,
    #[serde(default)]
    /// The cloud the identity came from.
    pub provider: Option<String>,
    #[serde(default)]
    /// Expiry, Unix seconds.
    pub exp: Option<u64>,
    #[serde(default)]
    /// Issue time, Unix seconds.
    pub iat: Option<u64>,
    #[serde(default, rename = "jwtType")]
    /// `database` or `api`.
    pub jwt_type: Option<String>,
    #[serde(default, rename = "workspaceGroupID")]
    /// The workspace group of a database token.
    pub workspace_group_id: Option<String>,
}

impl Claims {
    /// Decodes the payload segment without verifying the signature.
    pub fn decode_unverified(jwt: &str) -> Option<Claims> {
        let mut parts = jwt.split('.');
        let (_h, payload, _s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// An issued JWT. `Debug` never prints the token.
#[derive(Clone)]
pub struct Token {
    jwt: Secret,
    /// Wall-clock expiry as the server (or the JWT, or the default) stated it.
    pub expires_at: SystemTime,
    /// Monotonic deadline equivalent to `expires_at`.
    expires_mono: Instant,
    /// When it was received (monotonic).
    received: Instant,
    /// The audience the server reported, if any.
    pub audience: Option<String>,
    /// The token's claims, decoded.
    pub claims: Claims,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("jwt", &self.jwt)
            .field("expires_at", &crate::util::rfc3339(self.expires_at))
            .field("sub", &self.claims.sub)
            .finish()
    }
}

impl Token {
    /// A token received now, whose wall-clock expiry is `expires_at` according to a
    /// clock that reads `now` at this moment.
    pub fn new(
        jwt: Secret,
        expires_at: SystemTime,
        now: SystemTime,
        audience: Option<String>,
    ) -> Self {
        let claims = Claims::decode_unverified(jwt.expose()).unwrap_or_default();
        let received = Instant::now();
        let lifetime = expires_at.duration_since(now).unwrap_or(Duration::ZERO);
        Self {
            jwt,
            expires_at,
            expires_mono: received + lifetime,
            received,
            audience,
            claims,
        }
    }

    /// The JWT.
    pub fn jwt(&self) -> &Secret {
        &self.jwt
    }

    /// Time left before expiry, on the monotonic clock.
    pub fn remaining(&self) -> Duration {
        self.expires_mono.saturating_duration_since(Instant::now())
    }

    /// Total lifetime as received.
    pub fn lifetime(&self) -> Duration {
        self.expires_mono.saturating_duration_since(self.received)
    }

    /// When it was received (monotonic).
    pub fn received(&self) -> Instant {
        self.received
    }

    /// When it expires (monotonic).
    pub fn expires_mono(&self) -> Instant {
        self.expires_mono
    }

    /// Whether it has expired.
    pub fn is_expired(&self) -> bool {
        self.remaining().is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt_with(payload: &str) -> String {
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn claims_decode_and_garbage_is_none() {
        let c = Claims::decode_unverified(&jwt_with(r#"{"sub":"a","exp":5}"#)).unwrap();
        assert_eq!(c.sub.as_deref(), Some("a"));
        assert_eq!(c.exp, Some(5));
        assert!(Claims::decode_unverified("x.y").is_none());
        assert!(Claims::decode_unverified("a.!!!.c").is_none());
        assert!(Claims::decode_unverified("a.b.c.d").is_none());
    }

    #[test]
    fn expiry_is_relative_to_the_clock_at_receipt() {
        // A clock one day ahead: the server's expiry is "in the past" by that clock,
        // so the token is treated as already expired rather than trusted blindly.
        let now = SystemTime::now();
        let t = Token::new(
            Secret::new(jwt_with("{}")),
            now + Duration::from_secs(3600),
            now + Duration::from_secs(86_400),
            None,
        );
        assert!(t.is_expired());
        let t = Token::new(
            Secret::new(jwt_with("{}")),
            now + Duration::from_secs(3600),
            now,
            None,
        );
        assert!(t.remaining() > Duration::from_secs(3500));
        assert!(!format!("{t:?}").contains("e30"));
    }
}
