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
use crate::util::mono_now;

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

/// Why a string the auth service returned is not a JWT. The client refuses it
/// rather than handing callers and sinks something no database will accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedJwt {
    /// Not `header.payload.signature`.
    #[error("the JWT does not have three dot-separated segments")]
    Segments,
    /// The header does not decode to a JSON object.
    #[error("the JWT's header is not a base64url-encoded JSON object")]
    Header,
    /// The payload does not decode to a JSON object of the expected claim types.
    #[error("the JWT's payload is not a base64url-encoded JSON object with valid claims")]
    Payload,
    /// The signature is empty or not base64url.
    #[error("the JWT has no signature")]
    Signature,
}

impl Claims {
    /// Decodes the payload segment without verifying the signature.
    pub fn decode_unverified(jwt: &str) -> Option<Claims> {
        Self::decode_checked(jwt).ok()
    }

    /// Decodes the payload after checking the token is JWT-shaped: header and
    /// payload base64url JSON objects, a non-empty base64url signature. Nothing is
    /// verified cryptographically (that is JWKS validation's job).
    pub fn decode_checked(jwt: &str) -> Result<Claims, MalformedJwt> {
        let mut parts = jwt.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MalformedJwt::Segments);
        };
        let object = |segment: &str| {
            URL_SAFE_NO_PAD
                .decode(segment.trim_end_matches('='))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .filter(serde_json::Value::is_object)
        };
        object(header).ok_or(MalformedJwt::Header)?;
        let payload = object(payload).ok_or(MalformedJwt::Payload)?;
        let base64url = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        if signature.is_empty() || !signature.bytes().all(base64url) {
            return Err(MalformedJwt::Signature);
        }
        serde_json::from_value(payload).map_err(|_| MalformedJwt::Payload)
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
    /// A token issued at `issued` (its `iat`) and read back now, e.g. from a file
    /// s2iam wrote earlier: its lifetime counts from `issued`, so a cache refreshes
    /// it when it would have refreshed the original.
    pub fn issued(
        jwt: Secret,
        issued: SystemTime,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Self {
        let mut token = Self::new(jwt, expires_at, now, None);
        let age = now.duration_since(issued).unwrap_or(Duration::ZERO);
        if let Some(received) = token.received.checked_sub(age) {
            token.received = received;
        }
        token
    }

    /// A token received now, whose wall-clock expiry is `expires_at` according to a
    /// clock that reads `now` at this moment.
    pub fn new(
        jwt: Secret,
        expires_at: SystemTime,
        now: SystemTime,
        audience: Option<String>,
    ) -> Self {
        let claims = Claims::decode_unverified(jwt.expose()).unwrap_or_default();
        let received = mono_now();
        // Capped so no stated expiry, however absurd, overflows the monotonic clock.
        let lifetime = expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(crate::util::MAX_DURATION);
        Self {
            jwt,
            expires_at,
            expires_mono: received.checked_add(lifetime).unwrap_or(received),
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
        self.expires_mono.saturating_duration_since(mono_now())
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
#[allow(clippy::disallowed_methods)] // tests own their clock and environment
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
        assert_eq!(Claims::decode_checked("nope"), Err(MalformedJwt::Segments));
        assert_eq!(
            Claims::decode_checked(&format!("e30.{}.", URL_SAFE_NO_PAD.encode("{}"))),
            Err(MalformedJwt::Signature)
        );
        assert_eq!(
            Claims::decode_checked(&format!("bm9wZQ.{}.sig", URL_SAFE_NO_PAD.encode("{}"))),
            Err(MalformedJwt::Header)
        );
        assert_eq!(
            Claims::decode_checked(&jwt_with(r#"{"exp":"soon"}"#)),
            Err(MalformedJwt::Payload)
        );
    }

    #[test]
    fn an_absurd_expiry_does_not_overflow_the_clock() {
        let now = SystemTime::now();
        let far = std::time::UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2);
        let t = Token::new(Secret::new(jwt_with("{}")), far, now, None);
        assert!(t.remaining() <= crate::util::MAX_DURATION);
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
