//! Small helpers shared by the mocks.

use rand::RngCore;

/// Hex SHA-256 of `data`: how the mocks record a secret they saw without keeping it.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// `bytes` random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Random characters from `alphabet`, for AWS-style key ids and secrets.
pub fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut buf = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter()
        .filter_map(|b| alphabet.get(usize::from(*b).checked_rem(alphabet.len())?))
        .map(|c| char::from(*c))
        .collect()
}

/// Seconds since the Unix epoch on the wall clock.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 UTC timestamp (`2026-11-23T12:00:00Z`) for a Unix time.
pub fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// A JSON error body `{"error": "...", "message": "..."}` with `status`.
pub fn json_error(
    status: axum::http::StatusCode,
    code: &str,
    message: impl Into<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        axum::Json(serde_json::json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

/// Serde for a `Duration` as whole seconds.
pub mod serde_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes the duration as seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    /// Reads seconds as a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// The longest duration a flag takes (ten years): anything the mocks add to a
/// clock stays far from overflow.
pub const MAX_GO_DURATION: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86_400);

/// Parses a Go-style duration (`1h`, `90s`, `1h30m`, `250ms`, `0`), the form the
/// reference test server's `--token-expiry` and `--timeout` flags take. Longer
/// than [`MAX_GO_DURATION`] is an error, not a panic.
pub fn parse_go_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} is missing a unit (use e.g. 90s, 5m, 1h)"))?;
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("invalid number in duration {s:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += value * secs;
        rest = tail;
    }
    std::time::Duration::try_from_secs_f64(total)
        .ok()
        .filter(|d| *d <= MAX_GO_DURATION)
        .ok_or_else(|| format!("duration {s:?} is longer than the maximum of 10 years"))
}

/// The first value of query parameter `name`, form-decoded. Never fails: garbage in a
/// query string decodes lossily, the way lenient real servers read it.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A random version-4-shaped UUID, for object ids, trace and correlation ids.
pub fn random_uuid() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        ["8", "9", "a", "b"][usize::from(h.as_bytes()[16] % 4)],
        &h[17..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("5x").is_err());
        assert!(parse_go_duration("").is_err());
        // These panicked in `Duration::from_secs_f64` (issue 13).
        for huge in [
            "99999999999999999999999h",
            "1e20h",
            "5000000000000000000000s",
        ] {
            assert!(parse_go_duration(huge).is_err(), "{huge}");
        }
        let err = parse_go_duration("99999999999999999999999h").unwrap_err();
        assert!(err.contains("maximum of 10 years"), "{err}");
        assert!(parse_go_duration("87601h").is_err());
        assert_eq!(
            parse_go_duration("87600h").unwrap(),
            Duration::from_secs(87_600 * 3600)
        );
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn query_param_takes_first_and_survives_garbage() {
        assert_eq!(
            query_param(Some("a=1&a=2&b=x%20y"), "a").as_deref(),
            Some("1")
        );
        assert_eq!(query_param(Some("b=x%20y"), "b").as_deref(), Some("x y"));
        assert_eq!(query_param(Some("%%%&&=&a"), "a").as_deref(), Some(""));
        assert_eq!(query_param(None, "a"), None);
    }

    #[test]
    fn uuids_are_uuid_shaped() {
        let u = random_uuid();
        let parts: Vec<_> = u.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&u[14..15], "4");
    }
}
