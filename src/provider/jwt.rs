//! The claims of a token a cloud just handed us, decoded without verifying it:
//! the auth service verifies; we only read who we are, for display.

use base64::Engine as _;

/// The claims of a JWT, decoded but not verified.
pub(crate) fn jwt_claims(
    token: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut parts = token.trim().split('.');
    let payload = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(p), Some(_), None) if !p.is_empty() => p,
        _ => return Err("not a JWT (expected three dot-separated parts)".into()),
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the JWT payload is not base64url".to_string())?;
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err("the JWT payload is not a JSON object".into()),
    }
}

/// A string claim (numbers are rendered as text, as some issuers send ids as numbers).
pub(crate) fn claim_str(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<String> {
    match claims.get(name)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &serde_json::Value) -> String {
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            enc.encode(br#"{"alg":"RS256"}"#),
            enc.encode(payload.to_string())
        )
    }

    #[test]
    fn decodes_claims_and_rejects_garbage() {
        let claims = jwt_claims(&jwt(&serde_json::json!({"sub": "1", "n": 5}))).unwrap();
        assert_eq!(claim_str(&claims, "sub").as_deref(), Some("1"));
        assert_eq!(claim_str(&claims, "n").as_deref(), Some("5"));
        assert!(claim_str(&claims, "missing").is_none());
        for bad in ["", "abc", "a.b", "a.!!.c", "a.b.c.d", "a.W10.c"] {
            assert!(jwt_claims(bad).is_err(), "{bad}");
        }
        // Padded base64 is tolerated.
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"sub":"xy"}"#)
        );
        assert_eq!(
            claim_str(&jwt_claims(&padded).unwrap(), "sub").as_deref(),
            Some("xy")
        );
    }
}
