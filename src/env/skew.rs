//! How far this machine's clock is from AWS's, measured from the `Date` header of
//! STS answers (and, when a proxy strips it, the server time STS names in its
//! "Signature expired" message), and the correction SigV4 signing applies.
//!
//! Why: STS refuses a signature more than 15 minutes from its own clock
//! (`SignatureDoesNotMatch: Signature expired: ... (20261130T101500Z - 15 min.)`).
//! The AWS SDKs correct for it the same way: they record the offset of the server's
//! `Date` from the local clock, and when an answer is a clock-skew error they
//! re-sign with the corrected time and retry once; later requests are signed with
//! the correction too. Offsets under [`ClockSkew::THRESHOLD_SECS`] (the Java SDK's
//! 4 minutes) are noise (`Date` has whole seconds, the request takes time) and are
//! not applied.
//!
//! One [`ClockSkew`] lives in the [`super::ProviderConfig`], shared by every STS
//! client built from it, read by `/metrics` and `s2iam doctor`.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The measured offset of AWS's clock from this machine's.
#[derive(Debug, Default)]
pub struct ClockSkew {
    /// The correction applied to signing times, in seconds (server minus local).
    correction: AtomicI64,
    /// The last raw measurement, whether applied or not.
    last: AtomicI64,
    measured: AtomicBool,
}

/// A snapshot of [`ClockSkew`], for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkewReading {
    /// The last measured offset (server minus local), in seconds; `None` before
    /// any STS answer.
    pub measured_secs: Option<i64>,
    /// The correction signing applies now (0 when the offset is under the threshold).
    pub correction_secs: i64,
}

impl ClockSkew {
    /// Offsets smaller than this, either way, are not corrected.
    pub const THRESHOLD_SECS: i64 = 240;

    /// Records a measured offset (server minus local, seconds) and returns whether
    /// the correction changed by at least the threshold (a request signed before is
    /// then worth signing again).
    pub fn record(&self, measured_secs: i64) -> bool {
        self.last.store(measured_secs, Ordering::Relaxed);
        self.measured.store(true, Ordering::Relaxed);
        let correction = if measured_secs.unsigned_abs() >= Self::THRESHOLD_SECS.unsigned_abs() {
            measured_secs
        } else {
            0
        };
        let before = self.correction.swap(correction, Ordering::Relaxed);
        before.abs_diff(correction) >= Self::THRESHOLD_SECS.unsigned_abs()
    }

    /// The correction applied to signing times, in seconds.
    pub fn correction_secs(&self) -> i64 {
        self.correction.load(Ordering::Relaxed)
    }

    /// What was measured and what is applied.
    pub fn reading(&self) -> SkewReading {
        SkewReading {
            measured_secs: self
                .measured
                .load(Ordering::Relaxed)
                .then(|| self.last.load(Ordering::Relaxed)),
            correction_secs: self.correction_secs(),
        }
    }

    /// `local` moved by the correction: the time to sign with.
    pub fn corrected(&self, local: SystemTime) -> SystemTime {
        shift(local, self.correction_secs())
    }
}

/// `t` moved by `secs` (clamped at the epoch and far future).
pub fn shift(t: SystemTime, secs: i64) -> SystemTime {
    let by = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        t.checked_add(by).unwrap_or(t)
    } else {
        t.checked_sub(by)
            .filter(|s| *s >= UNIX_EPOCH)
            .unwrap_or(UNIX_EPOCH)
    }
}

/// The offset of `server` from `local` in whole seconds (server minus local).
pub fn offset_secs(server: SystemTime, local: SystemTime) -> i64 {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    };
    secs(server).saturating_sub(secs(local))
}

/// An HTTP `Date` (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(value.trim(), &fmt)
        .ok()?
        .assume_utc();
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// The server time STS states in a clock-skew message:
/// `Signature expired: A is now earlier than B (NOW - 15 min.)` or
/// `Signature not yet current: A is still later than B (NOW + 15 min.)`.
pub fn server_time_in_message(message: &str) -> Option<SystemTime> {
    let open = message.rfind('(')?;
    let stamp = message
        .get(open.checked_add(1)?..)?
        .split_whitespace()
        .next()?;
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(stamp, &fmt)
        .ok()?
        .assume_utc();
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Error codes the AWS SDKs treat as possible clock skew (the Java SDK's list).
pub const SKEW_ERROR_CODES: [&str; 6] = [
    "RequestTimeTooSkewed",
    "RequestExpired",
    "RequestInTheFuture",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AuthFailure",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn small_offsets_are_measured_but_not_applied() {
        let skew = ClockSkew::default();
        assert_eq!(skew.reading().measured_secs, None);
        assert!(!skew.record(3));
        assert_eq!(
            skew.reading(),
            SkewReading {
                measured_secs: Some(3),
                correction_secs: 0
            }
        );
        assert!(skew.record(-600));
        assert_eq!(skew.correction_secs(), -600);
        assert_eq!(skew.corrected(at(10_000)), at(9_400));
        // The same offset again is no change; a fixed clock resets the correction.
        assert!(!skew.record(-601));
        assert!(skew.record(1));
        assert_eq!(skew.correction_secs(), 0);
    }

    #[test]
    fn dates_and_messages() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(at(784_111_777))
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date(""), None);
        let expired = "Signature expired: 20270115T074400Z is now earlier than 20270115T074500Z (20270115T080000Z - 15 min.)";
        assert_eq!(server_time_in_message(expired), Some(at(1_800_000_000)));
        let future = "Signature not yet current: 20270115T081600Z is still later than 20270115T081500Z (20270115T080000Z + 15 min.)";
        assert_eq!(server_time_in_message(future), Some(at(1_800_000_000)));
        for other in [
            "The request signature we calculated does not match",
            "(",
            "(x",
            "",
        ] {
            assert_eq!(server_time_in_message(other), None, "{other}");
        }
        assert_eq!(offset_secs(at(1000), at(400)), 600);
        assert_eq!(offset_secs(at(400), at(1000)), -600);
        assert_eq!(shift(at(100), -600), UNIX_EPOCH);
    }
}
