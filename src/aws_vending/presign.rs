//! S3 presigned URLs: SigV4 in the query string (AWS "Authenticating Requests: Using
//! Query Parameters"), built from the header-signing pieces of
//! [`crate::provider::aws::sigv4`].
//!
//! The URL carries `X-Amz-Algorithm=AWS4-HMAC-SHA256`, `X-Amz-Credential=AKID/date/region/s3/aws4_request`,
//! `X-Amz-Date`, `X-Amz-Expires` (seconds, at most 7 days), `X-Amz-SignedHeaders=host`,
//! `X-Amz-Security-Token` for session credentials (signed, as the SDKs do), and
//! `X-Amz-Signature`. The payload is `UNSIGNED-PAYLOAD`, so the holder of a PUT URL
//! may upload any body. S3 paths are not double-encoded.
//!
//! Addressing: virtual-hosted (`https://BUCKET.s3.REGION.amazonaws.com/KEY`) unless
//! path style is asked for, the endpoint's host is an IP address or `localhost`, or
//! the bucket name has a dot and the scheme is https (the certificate would not
//! match) — then `https://s3.REGION.amazonaws.com/BUCKET/KEY`.

use std::time::SystemTime;

use crate::provider::aws::sigv4;

/// The longest validity S3 accepts for a presigned URL.
pub const MAX_EXPIRES_SECS: u64 = 7 * 24 * 3600;

/// What to sign.
#[derive(Clone, Copy)]
pub struct PresignParams<'a> {
    /// `GET` or `PUT`.
    pub method: &'a str,
    /// The S3 endpoint (`https://s3.us-east-1.amazonaws.com`, or an S3-compatible
    /// store's), possibly with a base path.
    pub endpoint: &'a url::Url,
    /// Force path-style addressing (S3-compatible stores).
    pub path_style: bool,
    /// The bucket.
    pub bucket: &'a str,
    /// The object key, not yet encoded.
    pub key: &'a str,
    /// The region the signature is scoped to.
    pub region: &'a str,
    /// How long the URL works (at most 7 days).
    pub expires_secs: u64,
    /// The signing time (from the injected clock).
    pub time: SystemTime,
    /// The signing key id.
    pub access_key_id: &'a str,
    /// The signing secret.
    pub secret_access_key: &'a str,
    /// The session token of temporary credentials, signed into the URL.
    pub session_token: Option<&'a str>,
}

/// Whether `params` would use path-style addressing.
pub fn uses_path_style(endpoint: &url::Url, bucket: &str, path_style: bool) -> bool {
    let ip_or_local = match endpoint.host() {
        Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_)) | None => true,
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
    };
    path_style || ip_or_local || (bucket.contains('.') && endpoint.scheme() == "https")
}

/// The presigned URL.
pub fn presign(p: &PresignParams<'_>) -> Result<String, String> {
    if !(1..=MAX_EXPIRES_SECS).contains(&p.expires_secs) {
        return Err(format!(
            "expiry must be between 1 and {MAX_EXPIRES_SECS} seconds"
        ));
    }
    let scheme = p.endpoint.scheme();
    let host = p
        .endpoint
        .host_str()
        .ok_or_else(|| "the S3 endpoint has no host".to_string())?;
    let port = p
        .endpoint
        .port()
        .map(|n| format!(":{n}"))
        .unwrap_or_default();
    let base_path = p.endpoint.path().trim_end_matches('/');
    let key = sigv4::uri_encode(p.key, false);
    let (authority, path) = if uses_path_style(p.endpoint, p.bucket, p.path_style) {
        (
            format!("{host}{port}"),
            format!("{base_path}/{}/{key}", p.bucket),
        )
    } else {
        (
            format!("{}.{host}{port}", p.bucket),
            format!("{base_path}/{key}"),
        )
    };
    let amz_date = sigv4::amz_date(p.time);
    let scope = sigv4::credential_scope(&amz_date[..8], p.region, "s3");
    let mut query: Vec<(&str, String)> = vec![
        ("X-Amz-Algorithm", sigv4::ALGORITHM.to_string()),
        ("X-Amz-Credential", format!("{}/{scope}", p.access_key_id)),
        ("X-Amz-Date", amz_date.clone()),
        ("X-Amz-Expires", p.expires_secs.to_string()),
    ];
    if let Some(token) = p.session_token {
        query.push(("X-Amz-Security-Token", token.to_string()));
    }
    query.push(("X-Amz-SignedHeaders", "host".to_string()));
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={}", sigv4::uri_encode(v, true)))
        .collect::<Vec<_>>()
        .join("&");
    let url = url::Url::parse(&format!("{scheme}://{authority}{path}?{query}"))
        .map_err(|e| format!("cannot build the URL: {e}"))?;
    let headers = [("host".to_string(), sigv4::host_header(&url))];
    let (canonical, _) =
        sigv4::canonical_request(p.method, &url, &headers, "UNSIGNED-PAYLOAD", false);
    let to_sign = sigv4::string_to_sign(&amz_date, &scope, &canonical);
    let key = sigv4::signing_key(p.secret_access_key, &amz_date[..8], p.region, "s3");
    let signature = hex::encode(sigv4::hmac(&key, to_sign.as_bytes()));
    Ok(format!("{url}&X-Amz-Signature={signature}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// AWS's published example ("Authenticating Requests: Using Query Parameters",
    /// S3 API reference): GET examplebucket/test.txt on 2013-05-24, 86400 s.
    #[test]
    fn aws_documented_example() {
        let endpoint = url::Url::parse("https://s3.amazonaws.com").unwrap();
        let url = presign(&PresignParams {
            method: "GET",
            endpoint: &endpoint,
            path_style: false,
            bucket: "examplebucket",
            key: "test.txt",
            region: "us-east-1",
            expires_secs: 86400,
            time: UNIX_EPOCH + Duration::from_secs(1_369_353_600),
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: None,
        })
        .unwrap();
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt\
             ?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    /// The same URL botocore 1.44 (`generate_presigned_url("put_object", ...)`,
    /// path style, s3v4, its clock fixed at 2024-01-02T03:04:05Z) produces.
    #[test]
    fn matches_botocore_with_a_session_token() {
        let endpoint = url::Url::parse("http://127.0.0.1:9").unwrap();
        let url = presign(&PresignParams {
            method: "PUT",
            endpoint: &endpoint,
            path_style: true,
            bucket: "b-x",
            key: "dir/a b.txt",
            region: "us-east-1",
            expires_secs: 600,
            time: UNIX_EPOCH + Duration::from_secs(1_704_164_645),
            access_key_id: "ASIAX",
            secret_access_key: "sec",
            session_token: Some("tok+/="),
        })
        .unwrap();
        assert_eq!(
            url,
            "http://127.0.0.1:9/b-x/dir/a%20b.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=ASIAX%2F20240102%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20240102T030405Z&X-Amz-Expires=600\
             &X-Amz-Security-Token=tok%2B%2F%3D&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=3716248a225a21e569f0db2e97623555f1f8b2313405945f6a293ef848a44ac9"
        );
    }

    fn params<'a>(endpoint: &'a url::Url, bucket: &'a str, key: &'a str) -> PresignParams<'a> {
        PresignParams {
            method: "PUT",
            endpoint,
            path_style: false,
            bucket,
            key,
            region: "eu-west-1",
            expires_secs: 3600,
            time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            access_key_id: "ASIAEXAMPLE",
            secret_access_key: "secret",
            session_token: Some("tok+/="),
        }
    }

    #[test]
    fn addressing_styles_and_encoding() {
        let aws = url::Url::parse("https://s3.eu-west-1.amazonaws.com").unwrap();
        let u = presign(&params(&aws, "bucket", "dir/a b+c.txt")).unwrap();
        assert!(
            u.starts_with("https://bucket.s3.eu-west-1.amazonaws.com/dir/a%20b%2Bc.txt?"),
            "{u}"
        );
        assert!(u.contains("&X-Amz-Security-Token=tok%2B%2F%3D&"), "{u}");
        // A dotted bucket over https: path style (the wildcard certificate would not match).
        let u = presign(&params(&aws, "my.bucket", "k")).unwrap();
        assert!(
            u.starts_with("https://s3.eu-west-1.amazonaws.com/my.bucket/k?"),
            "{u}"
        );
        // Forced path style, and a local endpoint with a port and a base path.
        let local = url::Url::parse("http://127.0.0.1:9000/store/").unwrap();
        let u = presign(&params(&local, "bucket", "k")).unwrap();
        assert!(
            u.starts_with("http://127.0.0.1:9000/store/bucket/k?"),
            "{u}"
        );
        let minio = url::Url::parse("https://minio.internal").unwrap();
        let mut p = params(&minio, "bucket", "k");
        p.path_style = true;
        assert!(presign(&p)
            .unwrap()
            .starts_with("https://minio.internal/bucket/k?"));
    }

    #[test]
    fn expiry_bounds() {
        let aws = url::Url::parse("https://s3.amazonaws.com").unwrap();
        let mut p = params(&aws, "bucket", "k");
        p.expires_secs = MAX_EXPIRES_SECS + 1;
        assert!(presign(&p).is_err());
        p.expires_secs = 0;
        assert!(presign(&p).is_err());
        p.expires_secs = MAX_EXPIRES_SECS;
        assert!(presign(&p).unwrap().contains("X-Amz-Expires=604800"));
    }
}
