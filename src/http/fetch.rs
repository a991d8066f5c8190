//! One request, its answer read whole but capped: [`fetch`] sends with its own
//! timeout and reads at most [`MAX_BODY_BYTES`], whatever the status (services
//! are trusted for reachability, not for size). Error texts name URLs without
//! their query string ([`display_url`]) and never include request headers or
//! bodies, so a credential cannot leak through them.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use super::error::TransportError;

/// Largest response body read from a metadata service or token endpoint.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest excerpt of an error body quoted in an error message.
const SNIPPET_CHARS: usize = 200;

/// A complete answer: status, headers and the (capped) body.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
}

impl Reply {
    /// A 2xx status.
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

/// Sends `req` with `timeout` and reads the whole (capped) answer. `url` is the
/// request's address, named in errors without its query string.
pub async fn fetch(
    req: reqwest::RequestBuilder,
    url: &str,
    timeout: Duration,
) -> Result<Reply, TransportError> {
    let shown = display_url(url);
    let transport = |e: reqwest::Error| TransportError::from_reqwest(&shown, timeout, e);
    let mut resp = req.timeout(timeout).send().await.map_err(transport)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(TransportError::TooLarge {
            url: shown,
            limit: MAX_BODY_BYTES,
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if chunk.len() > MAX_BODY_BYTES.saturating_sub(body.len()) {
            return Err(TransportError::TooLarge {
                url: shown,
                limit: MAX_BODY_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `scheme://host[:port]/path` of `url`: query strings can carry client ids and
/// resources today and who knows what tomorrow, so errors leave them out.
pub fn display_url(url: &str) -> String {
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
pub fn snippet(body: &str) -> String {
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
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
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
    let at = crate::util::from_unix(u64::try_from(at.unix_timestamp()).ok()?)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
