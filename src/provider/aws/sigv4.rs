//! AWS Signature Version 4 (header form), as STS's query API requires.
//!
//! Protocol: a canonical request (method, URI-encoded path, sorted query, sorted
//! lowercase headers, signed-header list, hex SHA-256 of the payload) is hashed into a
//! string to sign (`AWS4-HMAC-SHA256`, `X-Amz-Date`, credential scope
//! `date/region/service/aws4_request`), which is HMAC'd with a key derived from the
//! secret by the HMAC chain `"AWS4"+secret → date → region → service → "aws4_request"`.
//! The result goes in `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
//! Signature=…`, with `X-Amz-Date` (and `X-Amz-Security-Token` for session
//! credentials) sent and signed alongside.
//!
//! Why hand-written: the `aws-sigv4` crate drags in the smithy runtime (its HTTP,
//! identity and runtime-API crates) for what is ~80 lines of SHA-256 and HMAC on top
//! of dependencies s2iam already has. AWS's published test vector `get-vanilla`
//! anchors this implementation (see the tests), `xcheck/tests/sigv4.rs` compares it
//! (and the S3 presigner) with `aws-sigv4` on 600 generated requests, and the
//! building blocks are public so presigned S3 URLs can reuse them.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The algorithm name in the string to sign and `Authorization`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Who signs, where and when.
#[derive(Clone, Copy)]
pub struct SigningParams<'a> {
    /// The signing key id.
    pub access_key_id: &'a str,
    /// The signing secret.
    pub secret_access_key: &'a str,
    /// Sent as `X-Amz-Security-Token` when present.
    pub session_token: Option<&'a str>,
    /// The region the signature is scoped to.
    pub region: &'a str,
    /// The service (`sts`, `s3`).
    pub service: &'a str,
    /// The signing time.
    pub time: SystemTime,
}

impl std::fmt::Debug for SigningParams<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningParams")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Signs a request and returns the headers to add to it: `x-amz-date`,
/// `x-amz-security-token` (session credentials only) and `authorization`.
///
/// `headers` are the other headers the request will carry that should be signed
/// (e.g. `content-type`); `host` is derived from `url` the way HTTP clients send it
/// (with the port only when it is not the scheme's default).
pub fn sign(
    method: &str,
    url: &url::Url,
    headers: &[(String, String)],
    body: &[u8],
    params: &SigningParams<'_>,
) -> Vec<(String, String)> {
    let amz_date = amz_date(params.time);
    let mut added = vec![("x-amz-date".to_string(), amz_date.clone())];
    if let Some(token) = params.session_token {
        added.push(("x-amz-security-token".to_string(), token.to_string()));
    }
    let mut signed: Vec<(String, String)> = vec![("host".to_string(), host_header(url))];
    signed.extend(headers.iter().cloned());
    signed.extend(added.iter().cloned());

    let (canonical, signed_names) =
        canonical_request(method, url, &signed, &hex_sha256(body), true);
    let scope = credential_scope(&amz_date[..8], params.region, params.service);
    let to_sign = string_to_sign(&amz_date, &scope, &canonical);
    let key = signing_key(
        params.secret_access_key,
        &amz_date[..8],
        params.region,
        params.service,
    );
    let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
    added.push((
        "authorization".to_string(),
        format!(
            "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
            params.access_key_id
        ),
    ));
    added
}

/// `YYYYMMDD'T'HHMMSS'Z'` in UTC.
pub fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let dt =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

/// The `Host` header value for `url`.
pub fn host_header(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// `date/region/service/aws4_request`.
pub fn credential_scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// The canonical request and the `;`-joined signed header names.
/// `double_encode_path` is true for every service but S3.
pub fn canonical_request(
    method: &str,
    url: &url::Url,
    headers: &[(String, String)],
    payload_hash: &str,
    double_encode_path: bool,
) -> (String, String) {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), collapse_spaces(v)))
        .collect();
    hs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(hs.len());
    for (name, value) in hs {
        match merged.last_mut() {
            Some((last, v)) if *last == name => {
                v.push(',');
                v.push_str(&value);
            }
            _ => merged.push((name, value)),
        }
    }
    let canonical_headers: String = merged.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_names = merged
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let request = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed_names}\n{payload_hash}",
        canonical_uri(url.path(), double_encode_path),
        canonical_query(url.query().unwrap_or("")),
    );
    (request, signed_names)
}

/// The string to sign for a canonical request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    )
}

/// The derived signing key for one day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// Lowercase hex SHA-256 of `data`.
pub fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // `new_from_slice` comes from the generic `KeyInit` trait; HMAC itself takes
    // keys of any length (RFC 2104 hashes long ones), so the error cannot happen.
    #[allow(clippy::expect_used)]
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The canonical path, as the AWS SDKs compute it from the path as sent (already
/// percent-encoded once, as in the request line). Non-S3 services: dot and empty
/// segments removed, then every byte but `A-Za-z0-9-_.~/` encoded — so an existing
/// `%XX` becomes `%25XX` (the "double encoding"). S3: the path as sent.
fn canonical_uri(path: &str, double_encode: bool) -> String {
    if path.is_empty() {
        return "/".into();
    }
    if double_encode {
        uri_encode(&normalize_path(path), false)
    } else {
        path.to_string()
    }
}

/// RFC 3986 "remove dot segments", also dropping empty segments, keeping a
/// trailing slash (the SDKs' normalisation).
fn normalize_path(path: &str) -> String {
    if !(path.contains('.') || path.contains("//")) && path.starts_with('/') {
        return path.to_string();
    }
    let mut kept: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            other => kept.push(other),
        }
    }
    let mut out = format!("/{}", kept.join("/"));
    let trailing = ["/", "/.", "/./", "/..", "/../"]
        .iter()
        .any(|s| path.ends_with(s));
    if trailing && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The canonical query: parameters form-decoded (`%XX` and `+` for a space, as the
/// SDKs and services read them), each name and value encoded, sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (uri_encode(&k, true), uri_encode(&v, true)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 encoding: everything but `A-Za-z0-9-_.~` (and `/` unless
/// `encode_slash`) becomes `%XX` (uppercase hex).
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn collapse_spaces(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2015-08-30T12:36:00Z, the time of AWS's published SigV4 test suite.
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn suite_params() -> SigningParams<'static> {
        SigningParams {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: None,
            region: "us-east-1",
            service: "service",
            time: suite_time(),
        }
    }

    #[test]
    fn amz_date_format() {
        assert_eq!(amz_date(suite_time()), "20150830T123600Z");
    }

    /// AWS SigV4 test suite, `get-vanilla` (note the host: example.amazon**aws**.com).
    #[test]
    fn get_vanilla_test_vector() {
        let url = url::Url::parse("https://example.amazonaws.com/").unwrap();
        let added = sign("GET", &url, &[], b"", &suite_params());
        let auth = &added.iter().find(|(n, _)| n == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// The canonical request of `get-vanilla`, as published.
    #[test]
    fn get_vanilla_canonical_request() {
        let url = url::Url::parse("https://example.amazonaws.com/").unwrap();
        let headers = vec![
            ("Host".to_string(), "example.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        let (req, signed) = canonical_request("GET", &url, &headers, &hex_sha256(b""), true);
        assert_eq!(signed, "host;x-amz-date");
        assert_eq!(
            req,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             host;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // The published string to sign and derived key of the same example.
        let scope = credential_scope("20150830", "us-east-1", "service");
        assert_eq!(
            string_to_sign("20150830T123600Z", &scope, &req),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            hex::encode(signing_key(
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                "20150830",
                "us-east-1",
                "service"
            )),
            "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75"
        );
    }

    /// AWS SigV4 test suite, `get-vanilla-query-order-key-case`: parameters are
    /// sorted by name.
    #[test]
    fn query_order_test_vector() {
        let url =
            url::Url::parse("https://example.amazonaws.com/?Param2=value2&Param1=value1").unwrap();
        let added = sign("GET", &url, &[], b"", &suite_params());
        let auth = &added.iter().find(|(n, _)| n == "authorization").unwrap().1;
        assert!(auth.ends_with(
            "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        ));
    }

    #[test]
    fn session_token_is_signed_and_port_kept_in_host() {
        let url = url::Url::parse("http://127.0.0.1:8080/").unwrap();
        let params = SigningParams {
            session_token: Some("tok"),
            ..suite_params()
        };
        let added = sign("POST", &url, &[], b"a=b", &params);
        assert!(added.contains(&("x-amz-security-token".into(), "tok".into())));
        let auth = &added.iter().find(|(n, _)| n == "authorization").unwrap().1;
        assert!(auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"));
        assert_eq!(host_header(&url), "127.0.0.1:8080");
    }

    #[test]
    fn encoding() {
        assert_eq!(uri_encode("a b/c~", false), "a%20b/c~");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
        assert_eq!(canonical_uri("/a%20b", true), "/a%2520b");
        assert_eq!(canonical_uri("/a%20b", false), "/a%20b");
        assert_eq!(canonical_query("b=2&a=x%2Fy&a=1"), "a=1&a=x%2Fy&b=2");
        // As the SDKs: `+` in a query is a space, an encoded `/` in a path stays
        // encoded (twice), reserved characters sent as-is are encoded once, dot and
        // empty segments go.
        assert_eq!(canonical_query("a=b+c&d=%4"), "a=b%20c&d=%254");
        assert_eq!(canonical_uri("/a%2Fb/+", true), "/a%252Fb/%2B");
        assert_eq!(canonical_uri("/a//b/./c/../", true), "/a/b/");
        assert_eq!(canonical_uri("/a/..", true), "/");
        assert_eq!(canonical_uri("/a//b/+", false), "/a//b/+");
        assert_eq!(collapse_spaces("  a   b "), "a b");
    }
}
