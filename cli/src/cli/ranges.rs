//! The ranges of the command line's numeric flags, as clap value parsers, so a
//! value out of range is a usage error (exit 2) naming the flag's range, never
//! a panic or a wait of a year. The config file's ranges are in
//! `s2iam_sidecar::config` next to each setting; README "Configuration" lists both.

use std::ops::RangeInclusive;
use std::time::Duration;

use s2iam::util::parse_duration;

/// `--timeout` of the token commands, `proxy`, `probe`, `credential-process`
/// and `s3 presign`: one exchange or one local request.
pub const TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(3600);
/// `run --grace`: 0 (SIGKILL at once) up to an hour.
pub const GRACE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);
/// `dev --exit-after` (the `dev` feature's command).
#[cfg(feature = "dev")]
pub const EXIT_AFTER: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(30 * 24 * 3600);

/// A duration within `range`; the error names the range.
pub fn duration_in(text: &str, range: &RangeInclusive<Duration>) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| e.to_string())?;
    if !range.contains(&d) {
        return Err(format!(
            "{} is outside {} ..= {}",
            humantime::format_duration(d),
            humantime::format_duration(*range.start()),
            humantime::format_duration(*range.end())
        ));
    }
    Ok(d)
}

/// Value parser of every `--timeout` ([`TIMEOUT`]).
pub fn timeout(text: &str) -> Result<Duration, String> {
    duration_in(text, &TIMEOUT)
}

/// Value parser of `run --grace` ([`GRACE`]).
pub fn grace(text: &str) -> Result<Duration, String> {
    duration_in(text, &GRACE)
}

/// Value parser of `dev --exit-after` ([`EXIT_AFTER`]).
#[cfg(feature = "dev")]
pub fn exit_after(text: &str) -> Result<Duration, String> {
    duration_in(text, &EXIT_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_of_each_range() {
        assert!(timeout("10ms").is_ok() && timeout("1h").is_ok());
        for bad in ["0", "9ms", "1h1s", "365d", "-1", "1e20"] {
            assert!(timeout(bad).is_err(), "{bad}");
        }
        assert_eq!(grace("0").unwrap(), Duration::ZERO);
        let e = grace("2h").unwrap_err();
        assert!(e.contains("0s ..= 1h"), "{e}");
        #[cfg(feature = "dev")]
        assert!(exit_after("0").is_err() && exit_after("30days").is_ok());
    }
}
