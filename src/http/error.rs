//! The one transport error: a request that got no usable HTTP answer.

use std::time::Duration;

/// Why a request got no answer at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No answer within the deadline.
    #[error("no answer from {url} within {timeout_ms} ms")]
    Timeout {
        /// The address, without its query string.
        url: String,
        /// The deadline.
        timeout_ms: u64,
    },
    /// Nothing listens there.
    #[error("connection refused by {url}")]
    Refused {
        /// The address, without its query string.
        url: String,
    },
    /// Any other failure to get an answer (DNS, TLS, reset).
    #[error("cannot reach {url}: {reason}")]
    Other {
        /// The address, without its query string.
        url: String,
        /// What went wrong, with its causes.
        reason: String,
    },
    /// The answer is bigger than any the service should send.
    #[error("the answer from {url} is larger than {limit} bytes")]
    TooLarge {
        /// The address, without its query string.
        url: String,
        /// The cap.
        limit: usize,
    },
}

impl TransportError {
    /// Worth another attempt: the service may be starting, restarting or busy. A
    /// body too large will be as large next time.
    pub fn is_transient(&self) -> bool {
        !matches!(self, TransportError::TooLarge { .. })
    }
}

impl TransportError {
    /// Classifies a reqwest failure of a request to `url` (shown as given).
    pub fn from_reqwest(url: &str, timeout: Duration, e: reqwest::Error) -> Self {
        let e = e.without_url();
        if e.is_timeout() {
            return Self::Timeout {
                url: url.to_string(),
                timeout_ms: timeout.as_millis() as u64,
            };
        }
        let reason = error_chain(&e);
        if reason.contains("refused") {
            Self::Refused {
                url: url.to_string(),
            }
        } else {
            Self::Other {
                url: url.to_string(),
                reason,
            }
        }
    }

    /// A timeout, which the AWS metadata client reads as the IMDSv2 hop limit.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

/// The error and its sources on one line (reqwest's top-level message alone is
/// "error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}
