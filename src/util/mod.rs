//! Small shared helpers, importing nothing from the crate: times, durations,
//! error snippets, atomic file writes, jsonwebtoken's cryptography on ring.

pub mod atomic_file;
pub(crate) mod jwt_crypto;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// RFC 3339 UTC (`2026-11-23T12:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// Parses RFC 3339 (`2026-11-23T12:00:00Z`, with fractions or offsets).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, t.nanosecond()))
}

/// Unix seconds to `SystemTime`; `None` past what the platform's clock can hold
/// (a JWT's `exp` is untrusted input).
pub fn from_unix(secs: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// The monotonic clock: `std::time::Instant::now()`, except under a Tokio
/// runtime whose time is paused (tests, `sidecar/examples/fleet_sim.rs`), where it is
/// the runtime's virtual time, so expiry, refresh-ahead and backoff run on the
/// same clock as `tokio::time::sleep`. Without Tokio's `test-util` feature (the
/// release binary) this is `Instant::now()`; with it but never paused, one
/// atomic load more.
pub fn mono_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// `at + d` on the monotonic clock, saturating: a duration too long for the
/// clock (only reachable from unchecked input) gives a moment [`MAX_DURATION`]
/// away instead, and `at` itself if even that overflows.
pub fn instant_after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(MAX_DURATION))
        .unwrap_or(at)
}

/// `t + d` on the wall clock, saturating as [`instant_after`] does.
pub fn time_after(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d)
        .or_else(|| t.checked_add(MAX_DURATION))
        .unwrap_or(t)
}

/// The largest char boundary of `text` at or below `max` (what the unstable
/// `str::floor_char_boundary` does).
pub fn char_floor(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// At most `max` bytes of `text`, on a char boundary, for error messages that
/// quote a server's body.
pub fn snippet(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.trim().to_string();
    }
    let end = char_floor(text, max);
    format!("{}…", text.get(..end).unwrap_or_default().trim())
}

/// The longest duration any setting or parameter takes (a year). Every duration
/// the program reads is added to an `Instant` or `SystemTime` somewhere; this
/// bound keeps that arithmetic far from overflow whatever the input.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a duration (the text, cut).
    #[error("invalid duration {0:?}: use e.g. 10s, 1m30s, 1.5h, 250ms (a bare number is seconds)")]
    Invalid(String),
    /// Longer than [`MAX_DURATION`] (the text, cut).
    #[error("duration {0:?} is longer than the maximum of 365 days")]
    TooLong(String),
}

/// Parses a Go-style duration (`10s`, `1m30s`, `1.5h`, `250ms`, `0`), the form the
/// reference CLI's `--timeout` takes; a bare number (`2`, `0.5`) is seconds.
/// Anything longer than [`MAX_DURATION`] is refused, so no input can overflow the
/// clock arithmetic downstream.
///
/// Units are parsed by `humantime`, whose arithmetic is checked; it also accepts
/// the spelled-out units (`1 hour`). The crate built for Go's syntax
/// (`go-parse-duration` 0.1.1) was measured and rejected: it panics on a
/// multi-byte character after a unit letter (`1aé`) and rejects nothing we need.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let text = s.trim();
    let shown = || snippet(text, 40);
    let parsed = if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        text.parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
    } else {
        humantime::parse_duration(text).ok()
    };
    let d = parsed.ok_or_else(|| DurationError::Invalid(shown()))?;
    if d > MAX_DURATION {
        return Err(DurationError::TooLong(shown()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("-1").is_err());
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("365d").unwrap(), MAX_DURATION);
    }

    /// Each of these panicked in `Duration::from_secs_f64` (issue 13).
    #[test]
    fn huge_durations_are_refused_not_panics() {
        for text in [
            "1e20",
            "1e30",
            "1e20s",
            "99999999999999999999999h",
            "18446744073709551615s",
            "366d",
            "inf",
            "NaN",
            "1aé",
            ".",
            "",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
        assert!(matches!(
            parse_duration("1e20"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse_duration("400d"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = from_unix(1_800_000_000).unwrap();
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert!(from_unix(u64::MAX).is_none());
        assert!(parse_rfc3339("yesterday").is_none());
        assert!(parse_rfc3339("2026-11-23T12:00:00.5+01:00").is_some());
    }

    #[test]
    fn clock_arithmetic_saturates() {
        let now = Instant::now();
        assert_eq!(
            instant_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(instant_after(now, Duration::MAX) >= now + MAX_DURATION);
        let t = from_unix(1_800_000_000).unwrap();
        assert_eq!(
            time_after(t, Duration::from_secs(1)),
            from_unix(1_800_000_001).unwrap()
        );
        assert!(time_after(t, Duration::MAX) >= t + MAX_DURATION);
    }

    #[test]
    fn snippet_cuts_on_char_boundary() {
        assert_eq!(snippet("héllo", 2), "h…");
        assert_eq!(snippet("ok", 10), "ok");
    }
}
