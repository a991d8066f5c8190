//! s2iam's hand-written SigV4 signer (`provider::aws::sigv4::sign`, header form) and
//! S3 presigner (`aws_vending::presign::presign`, query form) against `aws-sigv4`,
//! the AWS SDK for Rust's signer, on generated requests: unicode and reserved
//! characters in paths, queries and keys, repeated and padded headers, session
//! tokens, ports (explicit default ones too), IPv6 hosts, path-style and
//! virtual-hosted S3 with base paths, empty and binary bodies, several services and
//! regions. The generator is seeded, so a failure names a case that reproduces.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody,
    SignableRequest, SignatureLocation, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use s2iam::aws_vending::presign::{presign, PresignParams};
use s2iam::provider::aws::sigv4::{self as ours, SigningParams};

/// Header-form cases.
const SIGN_CASES: usize = 300;
/// Presigned-URL cases.
const PRESIGN_CASES: usize = 300;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    /// 1..=max pieces from `pool`, joined.
    fn text(&mut self, pool: &[&str], max: usize) -> String {
        let n = 1 + self.below(max);
        (0..n).map(|_| self.pick(pool)).collect()
    }
}

/// Pieces of path segments, query names and values, and S3 keys: plain,
/// unreserved, reserved, space, percent, unicode (2-, 3- and 4-byte).
const PIECES: &[&str] = &[
    "a", "Z", "0", "abc", "-", ".", "_", "~", "!", "$", "&", "'", "(", ")", "*", "+", ",", ";",
    "=", ":", "@", " ", "%", "%20", "%2F", "%41", "%c3%a9", "é", "ß", "日本", "😀", "[", "]", "{",
    "|", "^", "`", "\"", "<", ">", "\\",
];
const SERVICES: &[&str] = &["sts", "execute-api", "iam", "lambda", "es", "ssm"];
const REGIONS: &[&str] = &[
    "us-east-1",
    "eu-west-1",
    "cn-north-1",
    "us-gov-west-1",
    "ap-southeast-2",
];
const HOSTS: &[&str] = &[
    "sts.us-east-1.amazonaws.com",
    "example.amazonaws.com",
    "sts.cn-north-1.amazonaws.com.cn",
    "127.0.0.1",
    "localhost",
    "[::1]",
];

fn time(rng: &mut Rng) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_500_000_000 + rng.next() % 500_000_000)
}

fn token(rng: &mut Rng) -> Option<String> {
    rng.chance(50)
        .then(|| format!("IQoJb3JpZ2luX2Vj{}+/=", rng.next()))
}

fn port(rng: &mut Rng, scheme: &str) -> String {
    match rng.below(3) {
        0 => String::new(),
        1 => format!(":{}", if scheme == "https" { 443 } else { 80 }),
        _ => format!(":{}", 1024 + rng.below(64_000)),
    }
}

type Pairs = Vec<(String, String)>;

/// One request for aws-sigv4 to sign.
struct Reference<'a> {
    method: &'a str,
    url: &'a str,
    headers: &'a [(String, String)],
    body: SignableBody<'a>,
    /// Access key id, secret, session token.
    creds: (&'a str, &'a str, Option<&'a str>),
    region: &'a str,
    service: &'a str,
    at: SystemTime,
    settings: SigningSettings,
}

/// The reference signature: the headers and query parameters aws-sigv4 adds.
fn reference(r: Reference<'_>) -> (Pairs, Pairs) {
    let identity: Identity = Credentials::new(
        r.creds.0,
        r.creds.1,
        r.creds.2.map(str::to_string),
        None,
        "xcheck",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(r.region)
        .name(r.service)
        .time(r.at)
        .settings(r.settings)
        .build()
        .unwrap()
        .into();
    let request = SignableRequest::new(
        r.method,
        r.url,
        r.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        r.body,
    )
    .unwrap_or_else(|e| panic!("aws-sigv4 refuses {}: {e}", r.url));
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    let (hs, ps) = instructions.into_parts();
    (
        hs.iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect(),
        ps.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn sorted(mut v: Pairs) -> Pairs {
    v.sort();
    v
}

/// How many cases had each feature, so the generator cannot quietly stop making them.
#[derive(Default, Debug)]
struct Coverage {
    token: usize,
    port: usize,
    non_ascii: usize,
    percent: usize,
    query: usize,
    body: usize,
    path_style: usize,
    base_path: usize,
}

#[test]
fn header_signatures_match_aws_sigv4() {
    let mut rng = Rng(0x5eed_5167_0004);
    let mut seen = Coverage::default();
    for case in 0..SIGN_CASES {
        let scheme = if rng.chance(70) { "https" } else { "http" };
        let host = rng.pick(HOSTS);
        let port = port(&mut rng, scheme);
        let segments = rng.below(4);
        // Empty, `.` and `..` segments too (the URL parser resolves the dots; the
        // empty ones reach the signers).
        let mut path: String = (0..segments)
            .map(|_| match rng.below(8) {
                0 => "/".to_string(),
                1 => "/.".to_string(),
                2 => "/..".to_string(),
                _ => format!("/{}", rng.text(PIECES, 4).replace(['?', '#'], "")),
            })
            .collect();
        if path.is_empty() || rng.chance(20) {
            path.push('/');
        }
        let query: Vec<String> = (0..rng.below(5))
            .map(|_| {
                let name = rng.text(PIECES, 3).replace(['#', '&', '='], "");
                match rng.below(3) {
                    0 => name,
                    _ => format!("{name}={}", rng.text(PIECES, 3).replace(['#', '&'], "")),
                }
            })
            .collect();
        let raw = format!("{scheme}://{host}{port}{path}?{}", query.join("&"));
        let url = url::Url::parse(&raw).unwrap_or_else(|e| panic!("case {case}: {raw}: {e}"));

        let mut headers = Vec::new();
        if rng.chance(60) {
            headers.push((
                "Content-Type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ));
        }
        for _ in 0..rng.below(3) {
            let name = format!("X-Amz-Meta-{}", rng.pick(&["a", "B", "a"]));
            let value = format!("  {}   {} ", rng.pick(&["x", "y z"]), rng.next() % 100);
            headers.push((name, value));
        }
        let body: Vec<u8> = match rng.below(3) {
            0 => Vec::new(),
            1 => b"Action=GetCallerIdentity&Version=2011-06-15".to_vec(),
            _ => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        };
        let method = rng.pick(&["GET", "POST", "PUT"]);
        let service = rng.pick(SERVICES);
        let region = rng.pick(REGIONS);
        let at = time(&mut rng);
        let token = token(&mut rng);
        let secret = format!("wJalrXUtnFEMI/K7MDENG+bPxRfiCY{}", rng.next() % 1000);

        let got = ours::sign(
            method,
            &url,
            &headers,
            &body,
            &SigningParams {
                access_key_id: "AKIDEXAMPLE",
                secret_access_key: &secret,
                session_token: token.as_deref(),
                region,
                service,
                time: at,
            },
        );
        let (want, _) = reference(Reference {
            method,
            url: url.as_str(),
            headers: &headers,
            body: SignableBody::Bytes(&body),
            creds: ("AKIDEXAMPLE", &secret, token.as_deref()),
            region,
            service,
            at,
            settings: SigningSettings::default(),
        });
        assert_eq!(
            sorted(got),
            sorted(want),
            "case {case}: {method} {url} headers {headers:?}"
        );
        seen.token += usize::from(token.is_some());
        seen.port += usize::from(url.port().is_some());
        seen.non_ascii += usize::from(!raw.is_ascii());
        seen.percent += usize::from(path.contains('%') || query.iter().any(|q| q.contains('%')));
        seen.query += usize::from(url.query().is_some_and(|q| !q.is_empty()));
        seen.body += usize::from(!body.is_empty());
    }
    for (what, n) in [
        ("session tokens", seen.token),
        ("ports", seen.port),
        ("non-ASCII", seen.non_ascii),
        ("percent signs", seen.percent),
        ("queries", seen.query),
        ("bodies", seen.body),
    ] {
        assert!(n >= SIGN_CASES / 10, "only {n} cases with {what}: {seen:?}");
    }
}

#[test]
fn presigned_urls_match_aws_sigv4() {
    let mut rng = Rng(0x5eed_5167_0005);
    let mut seen = Coverage::default();
    let endpoints = [
        "https://s3.us-east-1.amazonaws.com",
        "https://s3.cn-north-1.amazonaws.com.cn",
        "http://127.0.0.1:9000",
        "http://localhost:9000/base/path",
        "https://minio.example.com:8443/prefix/",
        "https://s3.eu-west-1.amazonaws.com:443",
        "http://[::1]:9000",
    ];
    for case in 0..PRESIGN_CASES {
        let endpoint = url::Url::parse(rng.pick(&endpoints)).unwrap();
        let bucket = rng
            .pick(&["bucket", "my.bucket", "b-1", "logs"])
            .to_string();
        let key = (0..1 + rng.below(3))
            .map(|_| rng.text(PIECES, 4))
            .collect::<Vec<_>>()
            .join("/");
        let region = rng.pick(REGIONS);
        let method = rng.pick(&["GET", "PUT"]);
        let expires = 1 + rng.next() % 604_800;
        let at = time(&mut rng);
        let token = token(&mut rng);
        let path_style = rng.chance(50);
        let got = presign(&PresignParams {
            method,
            endpoint: &endpoint,
            path_style,
            bucket: &bucket,
            key: &key,
            region,
            expires_secs: expires,
            time: at,
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "secret/with+chars=",
            session_token: token.as_deref(),
        })
        .unwrap_or_else(|e| panic!("case {case}: {e}"));
        let (base, query) = got.split_once('?').unwrap();
        let ours: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();

        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(expires));
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
        settings.session_token_mode = SessionTokenMode::Include;
        let (_, want) = reference(Reference {
            method,
            url: base,
            headers: &[],
            body: SignableBody::UnsignedPayload,
            creds: ("AKIDEXAMPLE", "secret/with+chars=", token.as_deref()),
            region,
            service: "s3",
            at,
            settings,
        });
        assert_eq!(
            sorted(ours),
            sorted(want),
            "case {case}: {method} {got} (key {key:?}, path style {path_style})"
        );
        seen.token += usize::from(token.is_some());
        seen.non_ascii += usize::from(!key.is_ascii());
        seen.percent += usize::from(key.contains('%'));
        seen.path_style += usize::from(path_style);
        seen.base_path += usize::from(endpoint.path().len() > 1);
    }
    for (what, n) in [
        ("session tokens", seen.token),
        ("non-ASCII keys", seen.non_ascii),
        ("percent signs", seen.percent),
        ("path style", seen.path_style),
        ("base paths", seen.base_path),
    ] {
        assert!(
            n >= PRESIGN_CASES / 10,
            "only {n} cases with {what}: {seen:?}"
        );
    }
}
