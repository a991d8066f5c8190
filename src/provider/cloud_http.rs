//! HTTP plumbing shared by the GCP and Azure providers.
//!
//! - [`fetch`] sends one request with its own timeout and reads at most
//!   [`MAX_BODY_BYTES`] of the answer, whatever the status: metadata services are
//!   trusted for reachability, not for size.
//! - [`retry`] runs an operation under a [`RetryPolicy`]: bounded attempts, capped
//!   exponential backoff with jitter, `Retry-After` honoured, every wait capped by
//!   what is left of the policy's budget. Waiting is `tokio::time::sleep`, so dropping
//!   the future (a lost detection race, a caller's timeout) cancels it cleanly.
//! - [`jwt_claims`] decodes the claims of a token the cloud just handed us, without
//!   verifying it: the auth service verifies; we only read who we are for display.
//!
//! Error texts name URLs without their query string and never include request
//! headers or bodies, so a credential cannot leak through them.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use rand::Rng as _;
use reqwest::header::HeaderMap;

use super::{error_chain, ProbeError};

/// Largest response body read from a metadata service or token endpoint.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest excerpt of an error body quoted in an error message.
const SNIPPET_CHARS: usize = 200;

/// A complete answer: status, headers and the (capped) body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The start of the body on one line, for error messages. Only used for error
    /// answers, which carry diagnostics, never for a successful token response.
    pub fn snippet(&self) -> String {
        snippet(&self.body)
    }

    /// The `Retry-After` header as a wait, relative to `now` for an HTTP date.
    pub fn retry_after(&self, now: SystemTime) -> Option<Duration> {
        let value = self
            .headers
            .get(reqwest::header::RETRY_AFTER)?
            .to_str()
            .ok()?;
        parse_retry_after(value, now)
    }

    /// A response header's value, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request got no answer at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("no answer from {url} within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
    #[error("connection refused by {url}")]
    Refused { url: String },
    #[error("cannot reach {url}: {reason}")]
    Other { url: String, reason: String },
    #[error("the answer from {url} is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge { url: String },
}

impl FetchError {
    /// Worth another attempt: the service may be starting, restarting or busy. A
    /// body too large will be as large next time.
    pub fn is_transient(&self) -> bool {
        !matches!(self, FetchError::TooLarge { .. })
    }

    pub fn into_probe_error(self) -> ProbeError {
        match self {
            FetchError::Timeout { url, timeout_ms } => ProbeError::Timeout { url, timeout_ms },
            FetchError::Refused { url } => ProbeError::Refused { url },
            FetchError::Other { url, reason } => ProbeError::Unreachable { url, reason },
            e @ FetchError::TooLarge { .. } => ProbeError::NotThisCloud(e.to_string()),
        }
    }
}

/// Sends `req` with `timeout` and reads the whole (capped) answer. `url` is the
/// request's address, named in errors without its query string.
pub(crate) async fn fetch(
    req: reqwest::RequestBuilder,
    url: &str,
    timeout: Duration,
) -> Result<Reply, FetchError> {
    let shown = display_url(url);
    let transport = |e: reqwest::Error| transport_error(&shown, timeout, e);
    let mut resp = req.timeout(timeout).send().await.map_err(transport)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(FetchError::TooLarge { url: shown });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(FetchError::TooLarge { url: shown });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn transport_error(url: &str, timeout: Duration, e: reqwest::Error) -> FetchError {
    let e = e.without_url();
    if e.is_timeout() {
        return FetchError::Timeout {
            url: url.to_string(),
            timeout_ms: timeout.as_millis() as u64,
        };
    }
    let reason = error_chain(&e);
    if reason.contains("refused") {
        FetchError::Refused {
            url: url.to_string(),
        }
    } else {
        FetchError::Other {
            url: url.to_string(),
            reason,
        }
    }
}

/// `scheme://host[:port]/path` of `url`: query strings can carry client ids and
/// resources today and who knows what tomorrow, so errors leave them out.
pub(crate) fn display_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or_default().to_string(),
    }
}

/// The start of `body` on one line.
pub(crate) fn snippet(body: &str) -> String {
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return "(empty body)".into();
    }
    let mut out: String = one_line.chars().take(SNIPPET_CHARS).collect();
    if one_line.chars().count() > SNIPPET_CHARS {
        out.push('…');
    }
    out
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.unix_timestamp()).ok()?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How hard to try before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles after each failure.
    pub base_delay: Duration,
    /// Longest computed backoff (a server's `Retry-After` may ask for more).
    pub max_delay: Duration,
    /// Longest total time spent waiting between attempts.
    pub budget: Duration,
}

impl RetryPolicy {
    /// The backoff before attempt `attempt + 1` after `attempt` failures: exponential,
    /// capped, with "equal jitter" (half fixed, half random) so many clients
    /// throttled together do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let full = exp.min(self.max_delay);
        let half = full / 2;
        let jitter_ns =
            rand::thread_rng().gen_range(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        half + Duration::from_nanos(jitter_ns)
    }
}

/// What one attempt came to.
pub(crate) enum Step<T, E> {
    Done(T),
    /// Not worth retrying.
    Fail(E),
    /// Transient: try again, after `after` if the server said how long.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
}

impl<T, E> Step<T, E> {
    /// The reply of an attempt, or the step its transport failure calls for:
    /// another try when the failure is transient, else `fail(reason)`.
    pub fn from_transport(
        result: Result<Reply, FetchError>,
        fail: impl FnOnce(String) -> E,
    ) -> Result<Reply, Self> {
        match result {
            Ok(reply) => Ok(reply),
            Err(e) if e.is_transient() => Err(Step::Retry {
                reason: e.to_string(),
                after: None,
            }),
            Err(e) => Err(Step::Fail(fail(e.to_string()))),
        }
    }
}

/// Why [`retry`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GaveUp {
    pub attempts: u32,
    pub elapsed: Duration,
    /// The last attempt's failure.
    pub last: String,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gave up after {} attempt{} in {} ms; last error: {}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.elapsed.as_millis(),
            self.last
        )
    }
}

/// Runs `op(attempt)` (attempt counts from 1) until it is done, fails for good, or
/// the policy is spent; `give_up` turns the last transient failure into an error.
pub(crate) async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    mut op: F,
    give_up: impl FnOnce(GaveUp) -> E,
) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Step<T, E>>,
{
    let start = Instant::now();
    let mut waited = Duration::ZERO;
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let (reason, after) = match op(attempt).await {
            Step::Done(value) => return Ok(value),
            Step::Fail(e) => return Err(e),
            Step::Retry { reason, after } => (reason, after),
        };
        let left = policy.budget.saturating_sub(waited);
        if attempt >= max_attempts || left.is_zero() {
            return Err(give_up(GaveUp {
                attempts: attempt,
                elapsed: start.elapsed(),
                last: reason,
            }));
        }
        let wait = after.unwrap_or_else(|| policy.backoff(attempt)).min(left);
        tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, %reason, "retrying");
        tokio::time::sleep(wait).await;
        waited += wait;
        attempt += 1;
    }
}

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

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
            budget: Duration::from_secs(10),
        };
        for _ in 0..50 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.backoff(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d9 = p.backoff(9);
            assert!(d9 >= Duration::from_millis(400) && d9 <= Duration::from_millis(800));
        }
        assert!(p.backoff(u32::MAX) <= Duration::from_millis(800));
    }

    #[test]
    fn urls_lose_their_query_and_snippets_are_short() {
        assert_eq!(
            display_url("http://127.0.0.1:9/a/b?client_id=x&resource=y"),
            "http://127.0.0.1:9/a/b"
        );
        assert_eq!(display_url("not a url?x=1"), "not a url");
        let long = "x".repeat(1000);
        assert!(snippet(&long).chars().count() <= SNIPPET_CHARS + 1);
        assert_eq!(snippet("a\n  b"), "a b");
        assert_eq!(snippet(""), "(empty body)");
    }

    fn policy(max_attempts: u32, budget_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            budget: Duration::from_millis(budget_ms),
        }
    }

    #[tokio::test]
    async fn retry_stops_at_max_attempts_and_reports_the_last_error() {
        let mut calls = 0;
        let r: Result<(), String> = retry(
            &policy(4, 1000),
            |n| {
                calls += 1;
                async move {
                    Step::Retry {
                        reason: format!("busy {n}"),
                        after: None,
                    }
                }
            },
            |g| g.to_string(),
        )
        .await;
        assert_eq!(calls, 4);
        let e = r.unwrap_err();
        assert!(
            e.contains("after 4 attempts") && e.contains("busy 4"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn retry_succeeds_after_transient_failures_and_stops_on_fatal() {
        let r: Result<u32, String> = retry(
            &policy(5, 1000),
            |n| async move {
                if n < 3 {
                    Step::Retry {
                        reason: "429".into(),
                        after: Some(Duration::from_millis(1)),
                    }
                } else {
                    Step::Done(n)
                }
            },
            |g| g.to_string(),
        )
        .await;
        assert_eq!(r.unwrap(), 3);
        let r: Result<u32, String> = retry(
            &policy(5, 1000),
            |_| async { Step::Fail("fatal".to_string()) },
            |g| g.to_string(),
        )
        .await;
        assert_eq!(r.unwrap_err(), "fatal");
    }

    #[tokio::test]
    async fn a_long_retry_after_is_capped_by_the_budget() {
        let start = Instant::now();
        let r: Result<(), String> = retry(
            &policy(3, 50),
            |_| async {
                Step::Retry {
                    reason: "410".into(),
                    after: Some(Duration::from_secs(70)),
                }
            },
            |g| g.to_string(),
        )
        .await;
        assert!(r.unwrap_err().contains("after 2 attempts"));
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
