//! The upstream URL of one proxied request: the client's path, normalised and
//! confined to the upstream's base path.
//!
//! An upstream `https://host/api` is a confinement, not a prefix: `/../v1/x`
//! must not reach `https://host/v1/x` with the proxy's Bearer token. So the
//! client's path is resolved here, before anything reaches the URL parser
//! (which would resolve `..` and `%2e%2e` against the base on its own):
//!
//! - only origin-form targets (`/path?query`): `OPTIONS *`, absolute-form
//!   (`GET http://host/x`) and authority-form are refused;
//! - `.` and `..` segments, also percent-encoded (`%2e`, `.%2E`), are resolved;
//!   a `..` that would climb above the base is refused;
//! - an encoded slash or backslash in a segment (`%2f`, `%5c`), a raw
//!   backslash, and NUL are refused: upstream servers disagree on what they mean;
//! - empty segments (`//`) are dropped.
//!
//! Segments keep the client's own encoding; the query passes unchanged.

use axum::http::Uri;

/// Why a request target was refused (the proxy answers 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `*`, `http://host/x` or `host:port`.
    #[error("the request target must be a path (origin-form, \"/...\"): asterisk-form (OPTIONS *), absolute-form and authority-form targets are not forwarded")]
    NotOriginForm,
    /// `..` above the base path.
    #[error("the path climbs above the upstream's base path with \"..\"")]
    Escapes,
    /// `%2f`, `%5c`, `\` or NUL in a path segment.
    #[error("the path contains an encoded slash (%2f), a backslash or NUL, which upstream servers read differently")]
    AmbiguousSegment,
}

/// `base` (no trailing slash) joined with the client's path, normalised and
/// confined, and its query.
pub fn upstream_url(base: &str, uri: &Uri) -> Result<String, TargetError> {
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(TargetError::NotOriginForm);
    }
    let path = uri.path();
    if !path.starts_with('/') {
        return Err(TargetError::NotOriginForm);
    }
    let mut url = String::with_capacity(base.len().saturating_add(path.len()));
    url.push_str(base);
    url.push_str(&normalise(path)?);
    if let Some(query) = uri.query() {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

/// `path` (starting with `/`) with dot segments resolved and empty ones dropped.
fn normalise(path: &str) -> Result<String, TargetError> {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = true;
        if segment.contains('\\') {
            return Err(TargetError::AmbiguousSegment);
        }
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
        if decoded.iter().any(|b| matches!(b, b'/' | b'\\' | 0)) {
            return Err(TargetError::AmbiguousSegment);
        }
        match decoded.as_slice() {
            b"" | b"." => {}
            b".." => {
                if kept.pop().is_none() {
                    return Err(TargetError::Escapes);
                }
            }
            _ => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(target: &str) -> Result<String, TargetError> {
        upstream_url("https://h/api", &target.parse::<Uri>().unwrap())
    }

    #[test]
    fn confined_to_the_base_path() {
        let ok = [
            ("/v2/query/rows", "https://h/api/v2/query/rows"),
            ("/v2/x?a=1&b=/../", "https://h/api/v2/x?a=1&b=/../"),
            ("/", "https://h/api/"),
            ("/a/./b", "https://h/api/a/b"),
            ("/a/../b", "https://h/api/b"),
            ("//a//b/", "https://h/api/a/b/"),
            ("/a/%2E/b/..", "https://h/api/a/"),
            ("/a%20b/%41", "https://h/api/a%20b/%41"),
        ];
        for (target, want) in ok {
            assert_eq!(url(target).as_deref(), Ok(want), "{target}");
        }
        let refused = [
            ("/../v1/workspaceGroups", TargetError::Escapes),
            ("/a/../../v1", TargetError::Escapes),
            ("/%2e%2e/v1", TargetError::Escapes),
            ("/.%2E/v1", TargetError::Escapes),
            ("/..", TargetError::Escapes),
            ("/a%2f..%2f..%2fv1", TargetError::AmbiguousSegment),
            ("/a%2F..", TargetError::AmbiguousSegment),
            ("/a\\..\\..\\v1", TargetError::AmbiguousSegment),
            ("/a%5c..", TargetError::AmbiguousSegment),
            ("/a%00", TargetError::AmbiguousSegment),
            ("*", TargetError::NotOriginForm),
            ("http://evil.example/v1", TargetError::NotOriginForm),
        ];
        for (target, want) in refused {
            assert_eq!(url(target), Err(want), "{target}");
        }
    }
}
