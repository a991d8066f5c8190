//! A cached token with its answers already encoded, so the hot path (a cached
//! token asked for again) copies bytes instead of building a JSON document and
//! formatting a timestamp per request. Only `expires_in` changes from one request
//! to the next; it is spliced between a fixed head and tail.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;

use s2iam::cache::Expiring;
use s2iam::client::TokenRequest;
use s2iam::token::Token;
use s2iam::util::rfc3339;

/// What the token cache holds: the token and its two encodings.
#[derive(Clone)]
pub struct EncodedToken {
    /// The token itself (expiry, claims).
    pub token: Token,
    /// What the audit trail names it by (computed once, never the token).
    pub fingerprint: String,
    raw: Bytes,
    /// `{"token":…,"expires_at":…,"expires_in":`
    json_head: Bytes,
    /// `,"jwt_type":…,"workspace_group_id":…}` and a newline.
    json_tail: Bytes,
}

impl EncodedToken {
    /// Encodes `token`, fetched for `req`.
    pub fn new(token: Token, req: &TokenRequest) -> Arc<Self> {
        let jwt = token.jwt().expose();
        let head = format!(
            "{{\"token\":{},\"expires_at\":{},\"expires_in\":",
            json(&jwt),
            json(&rfc3339(token.expires_at).as_str()),
        );
        let tail = format!(
            ",\"jwt_type\":{},\"workspace_group_id\":{}}}\n",
            json(&req.jwt_type),
            json(&req.workspace_group_id),
        );
        Arc::new(Self {
            fingerprint: super::audit::fingerprint(super::audit::jwt_signature(jwt)),
            raw: Bytes::from(jwt.as_bytes().to_vec()),
            json_head: Bytes::from(head.into_bytes()),
            json_tail: Bytes::from(tail.into_bytes()),
            token,
        })
    }

    /// The bare token (shared, not copied).
    pub fn raw(&self) -> Bytes {
        self.raw.clone()
    }

    /// The JSON document, with `expires_in` as of now.
    pub fn json(&self) -> Vec<u8> {
        let secs = self.token.remaining().as_secs().to_string();
        let capacity = self
            .json_head
            .len()
            .saturating_add(secs.len())
            .saturating_add(self.json_tail.len());
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(&self.json_head);
        out.extend_from_slice(secs.as_bytes());
        out.extend_from_slice(&self.json_tail);
        out
    }
}

/// Never prints the token.
impl fmt::Debug for EncodedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedToken")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Expiring for EncodedToken {
    fn received(&self) -> Instant {
        self.token.received()
    }
    fn expires(&self) -> Instant {
        self.token.expires_mono()
    }
}

/// JSON text of a string, enum or optional string (which cannot fail to encode).
fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own their clock and environment
mod tests {
    use super::*;
    use s2iam::exchange::JwtType;
    use s2iam::secret::Secret;
    use std::time::{Duration, SystemTime};

    #[test]
    fn both_encodings_carry_the_token_and_the_json_is_valid() {
        let now = SystemTime::now();
        let token = Token::new(
            Secret::new("a.b\"c"),
            now + Duration::from_secs(600),
            now,
            None,
        );
        let req = TokenRequest {
            workspace_group_id: Some("wg-1".into()),
            ..TokenRequest::api()
        };
        let req = TokenRequest {
            jwt_type: JwtType::Database,
            ..req
        };
        let e = EncodedToken::new(token, &req);
        assert_eq!(&e.raw()[..], b"a.b\"c");
        let v: serde_json::Value = serde_json::from_slice(&e.json()).unwrap();
        assert_eq!(v["token"], "a.b\"c");
        assert!((598..=600).contains(&v["expires_in"].as_u64().unwrap()));
        assert_eq!(v["jwt_type"], "database");
        assert_eq!(v["workspace_group_id"], "wg-1");
        assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
        assert!(!format!("{e:?}").contains("a.b"), "no token in Debug");
    }
}
