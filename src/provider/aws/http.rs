//! The HTTP plumbing every AWS source shares: per-request timeouts, bounded
//! retries of throttling and server errors, capped response bodies, and transport
//! errors that name the URL but never a header (headers carry credentials).

use std::time::Duration;

use crate::http::TransportError;
use crate::http::{fetch, retry_answers, RetryPolicy};

/// How many times a request is sent when it keeps getting 429 or 5xx.
pub const ATTEMPTS: u32 = 3;

/// The AWS sources' retries: [`ATTEMPTS`] tries, 200 ms doubling (with equal
/// jitter: 100-200 ms, then 200-400 ms), `Retry-After` honoured within the budget.
pub const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: ATTEMPTS,
    base_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(2),
    budget: Duration::from_secs(5),
};

/// A complete HTTP answer.
pub type Answer = crate::http::Reply;

fn retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Sends the request `build` makes, with `timeout` per attempt, retrying 429 and
/// 5xx answers under [`RETRY`]. Returns the last answer, whatever its status; a
/// transport failure is returned at once (the callers decide what a refused or
/// silent metadata service means).
pub async fn send(
    url: &str,
    timeout: Duration,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Answer, TransportError> {
    retry_answers(&RETRY, retryable, || fetch(build(), url, timeout)).await
}

/// Removes every occurrence of each secret from `text` (error messages from
/// services sometimes echo parts of a request), and caps its length.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "<redacted>");
    }
    if out.len() > 512 {
        out.truncate(crate::util::char_floor(&out, 512));
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_secrets_and_caps() {
        assert_eq!(
            scrub("key abcd1234 bad", &["abcd1234"]),
            "key <redacted> bad"
        );
        assert_eq!(scrub("x", &[""]), "x");
        let long = "é".repeat(600);
        assert!(scrub(&long, &[]).len() <= 515);
    }
}
