//! Clock skew: this machine's clock against the `Date` headers of the services
//! s2iam talks to (the metadata service, STS, the auth service).
//!
//! AWS refuses SigV4 signatures 15 minutes off (STS: `SignatureDoesNotMatch`,
//! "Signature expired"), many verifiers of `iat`/`nbf`/`exp` allow a few minutes at
//! most, and every expiry s2iam computes from a wall-clock time is off by the
//! skew. So: PASS up to [`WARN_SECS`], WARN up to [`FAIL_SECS`] (the 5 minutes
//! SigV4 clients are told to stay within), FAIL beyond. A `Date`
//! header has one-second resolution; so does this check.

use std::time::{Duration, SystemTime};

use super::{within, Check};
use crate::env::ProviderConfig;
use crate::http::fetch;

/// The check's id.
pub const ID: &str = "clock_skew";
/// Skew (seconds) beyond which it is a warning.
pub const WARN_SECS: u64 = 60;
/// Skew (seconds) beyond which it is a failure (SigV4 clients are told to stay within 5 minutes).
pub const FAIL_SECS: u64 = 300;

/// One server's `Date` and this clock's time when the answer arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateSample {
    /// Who answered (`aws_imds`, `aws_sts`, `auth_service`, ...).
    pub source: String,
    /// The server's `Date`.
    pub server: SystemTime,
    /// This clock when the answer arrived.
    pub local: SystemTime,
}

impl DateSample {
    /// A sample from a `Date` header value, if it parses.
    pub fn from_header(source: &str, date: Option<&str>, local: SystemTime) -> Option<Self> {
        Some(Self {
            source: source.to_string(),
            server: parse_http_date(date?)?,
            local,
        })
    }

    /// Server minus local, in seconds (positive: this clock is behind).
    pub fn skew_secs(&self) -> i64 {
        match self.server.duration_since(self.local) {
            Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
            Err(behind) => i64::try_from(behind.duration().as_secs())
                .map(|s| s.saturating_neg())
                .unwrap_or(i64::MIN),
        }
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form servers send.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value.trim(), &format)
        .ok()?
        .assume_utc();
    crate::util::from_unix(u64::try_from(at.unix_timestamp()).ok()?)
}

/// STS's `Date`: an unsigned request to the STS endpoint, which answers (an error
/// about the missing signature) with its clock. Nothing is signed or exchanged.
pub async fn sts_date(
    cfg: &ProviderConfig,
    region: Option<&str>,
    timeout: Duration,
) -> Option<DateSample> {
    let url = format!("{}/", super::sts_url(cfg, region)?.trim_end_matches('/'));
    let req = cfg
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Action=GetCallerIdentity&Version=2011-06-15");
    let reply = within(timeout, fetch(req, &url, timeout)).await?.ok()?;
    DateSample::from_header("aws_sts", reply.header("date"), cfg.clock.now())
}

/// The verdict on every sample: the largest skew decides. `sigv4_correction`:
/// the offset s2iam's AWS signing applies (measured from STS, as the SDKs do).
pub fn check(samples: &[DateSample], sigv4_correction: i64) -> Check {
    let c = verdict(samples);
    if sigv4_correction == 0 {
        return c;
    }
    let mut c = c.detail("aws_sigv4_correction", format!("{sigv4_correction:+}"));
    c.message = format!(
        "{}; s2iam signs AWS requests {sigv4_correction:+} s off its clock to match STS (as the AWS SDKs do)",
        c.message
    );
    c
}

fn verdict(samples: &[DateSample]) -> Check {
    let Some(worst) = samples.iter().max_by_key(|s| s.skew_secs().unsigned_abs()) else {
        return Check::skip(ID, "no service answered with a Date header to compare with");
    };
    let skew = worst.skew_secs();
    let abs = skew.unsigned_abs();
    let direction = if skew > 0 { "behind" } else { "ahead of" };
    let all = samples
        .iter()
        .map(|s| format!("{} {:+} s", s.source, s.skew_secs()))
        .collect::<Vec<_>>()
        .join(", ");
    let fix = "synchronise this machine's clock (chrony or systemd-timesyncd against the cloud's time service: 169.254.169.123 on AWS, metadata.google.internal on GCP, the host on Azure)";
    let c = if abs > FAIL_SECS {
        Check::fail(
            ID,
            format!(
                "this clock is {abs} s {direction} {} (more than 5 minutes: AWS refuses SigV4 signatures from 15 minutes on, token verifiers from a few, and expiry times are off by as much); {all}",
                worst.source
            ),
            fix,
        )
    } else if abs > WARN_SECS {
        Check::warn(
            ID,
            format!(
                "this clock is {abs} s {direction} {} (more than {WARN_SECS} s); {all}",
                worst.source
            ),
            fix,
        )
    } else {
        Check::pass(ID, format!("within {WARN_SECS} s of every server: {all}"))
    };
    samples.iter().fold(c, |c, s| {
        c.detail(format!("skew.{}", s.source), format!("{:+}", s.skew_secs()))
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own their clock and environment
mod tests {
    use super::*;
    use crate::doctor::Status;

    fn sample(source: &str, skew: i64) -> DateSample {
        let local = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let server = if skew >= 0 {
            local + Duration::from_secs(skew.unsigned_abs())
        } else {
            local - Duration::from_secs(skew.unsigned_abs())
        };
        DateSample {
            source: source.into(),
            server,
            local,
        }
    }

    #[test]
    fn thresholds() {
        assert_eq!(check(&[], 0).status, Status::Skip);
        assert_eq!(
            check(&[sample("a", 1), sample("b", -59)], 0).status,
            Status::Pass
        );
        let c = check(&[sample("a", 1), sample("aws_sts", -120)], 0);
        assert_eq!(c.status, Status::Warn);
        assert!(c.message.contains("120 s ahead of aws_sts"), "{c:?}");
        let c = check(&[sample("auth_service", 600)], 600);
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("signs AWS requests +600 s"), "{c:?}");
        assert_eq!(c.details["aws_sigv4_correction"], "+600");
        assert!(c.message.contains("600 s behind"), "{c:?}");
        assert_eq!(c.details["skew.auth_service"], "+600");
        assert!(c.fix.is_some());
    }

    #[test]
    fn http_dates_parse() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
        assert!(parse_http_date("yesterday").is_none());
        assert!(DateSample::from_header("x", None, SystemTime::now()).is_none());
    }
}
