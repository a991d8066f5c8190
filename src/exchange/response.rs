//! The auth service's answers: a token from a 200, the server's own words and
//! a hint from an error status.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::ExchangeError;
use crate::secret::Secret;
use crate::token::{Claims, Token};
use crate::util::{from_unix, parse_rfc3339, rfc3339, snippet};

#[derive(Deserialize)]
struct ExchangeResponse {
    #[serde(default)]
    jwt: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    audience: Option<String>,
}

pub(crate) fn parse_success(
    body: &[u8],
    now: SystemTime,
    default_lifetime: Duration,
) -> Result<Token, ExchangeError> {
    let parsed: ExchangeResponse = serde_json::from_slice(body).map_err(|e| {
        ExchangeError::MalformedResponse(format!("not JSON with a \"jwt\" field: {e}"))
    })?;
    let jwt = parsed
        .jwt
        .filter(|j| !j.is_empty())
        .ok_or(ExchangeError::EmptyJwt)?;
    let stated = match parsed.expires_at.as_deref() {
        Some(s) => Some(parse_rfc3339(s).ok_or_else(|| {
            ExchangeError::MalformedResponse(format!(
                "expires_at {:?} is not RFC 3339",
                snippet(s, 64)
            ))
        })?),
        None => None,
    };
    // A non-JWT answer is refused rather than handed to callers and sinks.
    let claims = Claims::decode_checked(&jwt)
        .map_err(|e| ExchangeError::MalformedResponse(e.to_string()))?;
    let expires_at = match (stated, claims.exp) {
        (Some(at), _) => at,
        (None, Some(exp)) => from_unix(exp).ok_or_else(|| {
            ExchangeError::MalformedResponse(format!("the JWT's exp {exp} is not a valid time"))
        })?,
        (None, None) => now.checked_add(default_lifetime).unwrap_or(now),
    };
    if expires_at <= now {
        return Err(ExchangeError::ExpiredJwt {
            expired_at: rfc3339(expires_at),
        });
    }
    Ok(Token::new(
        Secret::new(jwt),
        expires_at,
        now,
        parsed.audience,
    ))
}

/// The server's own words: `message`/`error` of a JSON error, else the text.
pub(super) fn server_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        for key in ["message", "error_description", "error"] {
            if let Some(m) = v.get(key).and_then(|m| m.as_str()) {
                return snippet(m, 300);
            }
        }
    }
    if text.trim().is_empty() {
        "(empty body)".into()
    } else {
        snippet(&text, 300)
    }
}

pub(super) fn status_hint(status: u16) -> &'static str {
    match status {
        400 => " (bad request)",
        401 => " (identity verification failed)",
        403 => " (forbidden)",
        404 => " (no matching principal is registered for this identity, or wrong URL)",
        429 => " (rate limited)",
        500..=599 => " (server error)",
        _ => "",
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own their clock and environment
mod tests {
    use super::*;

    #[test]
    fn success_parsing() {
        let now = SystemTime::now();
        assert!(matches!(
            parse_success(br#"{"jwt":""}"#, now, Duration::ZERO),
            Err(ExchangeError::EmptyJwt)
        ));
        assert!(matches!(
            parse_success(br#"{}"#, now, Duration::ZERO),
            Err(ExchangeError::EmptyJwt)
        ));
        assert!(matches!(
            parse_success(b"<html>", now, Duration::ZERO),
            Err(ExchangeError::MalformedResponse(_))
        ));
        assert!(matches!(
            parse_success(
                br#"{"jwt":"a.b.c","expires_at":"soon"}"#,
                now,
                Duration::ZERO
            ),
            Err(ExchangeError::MalformedResponse(_))
        ));
        assert!(matches!(
            parse_success(br#"{"jwt":"a.b.c"}"#, now, Duration::from_secs(60)),
            Err(ExchangeError::MalformedResponse(_))
        ));
        let t = parse_success(
            format!(r#"{{"jwt":"{}"}}"#, jwt_with("{}")).as_bytes(),
            now,
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(
            t.remaining() <= Duration::from_secs(60) && t.remaining() > Duration::from_secs(50)
        );
    }

    fn jwt_with(payload: &str) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    /// Issue 13: `exp = u64::MAX` with no `expires_at` panicked in `from_unix`; an
    /// expired token was served; a non-JWT answer was passed through.
    #[test]
    fn hostile_expiries_and_shapes_are_refused() {
        let now = SystemTime::now();
        let body = |payload: &str| format!(r#"{{"jwt":"{}"}}"#, jwt_with(payload));
        let err = parse_success(
            body(r#"{"exp":18446744073709551615}"#).as_bytes(),
            now,
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(matches!(err, ExchangeError::MalformedResponse(_)), "{err}");
        let err =
            parse_success(body(r#"{"exp":1000}"#).as_bytes(), now, Duration::ZERO).unwrap_err();
        assert!(matches!(err, ExchangeError::ExpiredJwt { .. }), "{err}");
        let stale = format!(
            r#"{{"jwt":"{}","expires_at":"2001-01-01T00:00:00Z"}}"#,
            jwt_with("{}")
        );
        let err = parse_success(stale.as_bytes(), now, Duration::ZERO).unwrap_err();
        assert!(matches!(err, ExchangeError::ExpiredJwt { .. }), "{err}");
        let err = parse_success(br#"{"jwt":"not a token"}"#, now, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("three dot-separated"), "{err}");
        let ok = parse_success(
            body(r#"{"exp":4000000000}"#).as_bytes(),
            now,
            Duration::ZERO,
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn messages_prefer_the_servers_words() {
        assert_eq!(server_message(br#"{"error":"e","message":"m"}"#), "m");
        assert_eq!(server_message(b"plain"), "plain");
        assert_eq!(server_message(b""), "(empty body)");
    }
}
