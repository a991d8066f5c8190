//! The HTTP plumbing every AWS source shares: per-request timeouts, bounded
//! retries of throttling and server errors, capped response bodies, and transport
//! errors that name the URL but never a header (headers carry credentials).

use std::time::Duration;

use rand::Rng;

use crate::provider::{probe_error, ProbeError};

/// Metadata services, STS and container endpoints answer in bytes or kilobytes; a
/// bigger body is not theirs.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How many times a request is sent when it keeps getting 429 or 5xx.
pub const ATTEMPTS: u32 = 3;

/// A request that got no usable HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("connection refused by {url}")]
    Refused { url: String },
    #[error("no answer from {url} within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
    #[error("cannot reach {url}: {reason}")]
    Other { url: String, reason: String },
    #[error("response from {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

impl TransportError {
    pub fn from_reqwest(url: &str, timeout: Duration, e: &reqwest::Error) -> Self {
        match probe_error(url, timeout, e) {
            ProbeError::Refused { url } => Self::Refused { url },
            ProbeError::Timeout { url, timeout_ms } => Self::Timeout { url, timeout_ms },
            ProbeError::Unreachable { url, reason } => Self::Other { url, reason },
            other => Self::Other {
                url: url.to_string(),
                reason: other.to_string(),
            },
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

/// A complete HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// Sends the request `build` makes, with `timeout` per attempt, retrying 429 and
/// 5xx answers up to [`ATTEMPTS`] times with jittered exponential backoff
/// (100 ms, 200 ms, ...). Returns the last answer, whatever its status.
pub async fn send(
    url: &str,
    timeout: Duration,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Answer, TransportError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let resp = build()
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| TransportError::from_reqwest(url, timeout, &e))?;
        let status = resp.status().as_u16();
        let body = read_body(url, timeout, resp).await?;
        if !retryable(status) || attempt >= ATTEMPTS {
            return Ok(Answer { status, body });
        }
        tracing::debug!(url, status, attempt, "retrying");
        tokio::time::sleep(backoff(attempt)).await;
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = 100u64 << (attempt - 1).min(6);
    Duration::from_millis(base + rand::thread_rng().gen_range(0..=base / 2))
}

/// Reads at most [`MAX_BODY_BYTES`]; invalid UTF-8 is replaced, not an error (the
/// callers parse the text and report what they did not find).
async fn read_body(
    url: &str,
    timeout: Duration,
    mut resp: reqwest::Response,
) -> Result<String, TransportError> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| TransportError::from_reqwest(url, timeout, &e))?
    {
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(TransportError::TooLarge {
                url: url.to_string(),
                limit: MAX_BODY_BYTES,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Removes every occurrence of each secret from `text` (error messages from
/// services sometimes echo parts of a request), and caps its length.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "<redacted>");
    }
    if out.len() > 512 {
        let mut cut = 512;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
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

    #[test]
    fn backoff_grows() {
        assert!(backoff(1) >= Duration::from_millis(100));
        assert!(backoff(2) >= Duration::from_millis(200));
        assert!(backoff(2) <= Duration::from_millis(300));
    }
}
