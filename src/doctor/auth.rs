//! The auth service reachable, without exchanging: the URL is valid, its host
//! resolves (DNS), a TCP connection opens, and a `GET` of its JWKS (the TLS
//! handshake included, through the same client and proxy settings a token request
//! uses) answers with signing keys. No identity is ever sent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::clock::DateSample;
use super::proxy::Analysis;
use super::{millis, within, Check, DoctorOptions};
use crate::env::ProviderConfig;
use crate::exchange::ServerUrl;
use crate::http::{error_chain, fetch, TransportError};

/// The check's id.
pub const ID: &str = "auth_service";

/// The check, the URL template checked, and the server's `Date`.
#[derive(Debug, Clone)]
pub struct AuthResult {
    /// The verdict.
    pub check: Check,
    /// The URL template, when valid.
    pub template: Option<String>,
    /// The `Date` of the JWKS answer.
    pub date: Option<DateSample>,
}

/// Checks the auth service of `opts` (else of the endpoints).
pub async fn run(cfg: &ProviderConfig, opts: &DoctorOptions, proxies: &Analysis) -> AuthResult {
    let template = opts
        .server_url
        .clone()
        .unwrap_or_else(|| cfg.endpoints.auth_server.clone());
    let server = match ServerUrl::parse(&template, opts.allow_http) {
        Ok(s) => s,
        Err(e) => {
            return AuthResult {
                check: Check::fail(
                    ID,
                    e.to_string(),
                    "set --server-url or S2IAM_JWT_SERVER_URL to the https URL of the auth service (http:// only with --allow-http, for testing)",
                ),
                template: None,
                date: None,
            }
        }
    };
    let jwks = server.jwks_url();
    let mut details = BTreeMap::from([("jwks_url".to_string(), jwks.to_string())]);
    let mut steps = Vec::new();
    match proxies.route("auth_service").and_then(|r| r.proxy.clone()) {
        Some(p) => {
            steps.push(format!("via proxy {p}"));
            details.insert("proxy".into(), p);
        }
        None => match connect(&jwks, opts.timeout).await {
            Ok((dns, tcp)) => steps.extend([dns, tcp]),
            Err(fail) => {
                return AuthResult {
                    check: with_details(fail, details),
                    template: Some(template),
                    date: None,
                }
            }
        },
    }
    let https = jwks.scheme() == "https";
    if !https {
        details.insert("tls".into(), "none: http:// allowed for testing".into());
    }
    let started = Instant::now();
    let url = jwks.to_string();
    let reply = fetch(cfg.http.get(jwks), &url, opts.timeout).await;
    let ms = millis(started.elapsed());
    let (check, date) = match reply {
        Err(e) => (http_failure(&e, https, opts.timeout), None),
        Ok(r) => {
            let date = DateSample::from_header(ID, r.header("date"), cfg.clock.now());
            let keys = serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v.get("keys").and_then(|k| k.as_array()).map(Vec::len));
            let tls = if https { "TLS handshake and " } else { "" };
            steps.push(format!("{tls}GET JWKS: HTTP {} in {ms} ms", r.status));
            let check = match (r.status, keys) {
                (200, Some(n)) if n > 0 => Check::pass(
                    ID,
                    format!("reachable: {} ({n} signing key(s))", steps.join(", ")),
                ),
                (status, _) => Check::warn(
                    ID,
                    format!(
                        "reachable, but its JWKS is not served as expected ({}; HTTP {status})",
                        steps.join(", ")
                    ),
                    "check the server URL (--server-url, S2IAM_JWT_SERVER_URL): it should be the auth service's /auth/iam/:jwtType",
                ),
            };
            (check, date)
        }
    };
    AuthResult {
        check: with_details(check, details),
        template: Some(template),
        date,
    }
}

fn with_details(mut c: Check, details: BTreeMap<String, String>) -> Check {
    c.details.extend(details);
    c
}

/// DNS then TCP to the URL's host, each bounded by `timeout`: the two steps'
/// descriptions, or the failing check.
async fn connect(url: &url::Url, timeout: Duration) -> Result<(String, String), Check> {
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let started = Instant::now();
    let addrs: Vec<std::net::SocketAddr> =
        match within(timeout, tokio::net::lookup_host((host.as_str(), port))).await {
            None => {
                return Err(Check::fail(
                    ID,
                    format!("DNS: no answer for {host} within {} ms", millis(timeout)),
                    "check /etc/resolv.conf and that this network can resolve public names",
                ))
            }
            Some(Err(e)) => {
                return Err(Check::fail(
                    ID,
                    format!("DNS: cannot resolve {host}: {e}"),
                    "check the host name in the server URL and this machine's DNS",
                ))
            }
            Some(Ok(a)) => a.collect(),
        };
    let Some(first) = addrs.first().copied() else {
        return Err(Check::fail(
            ID,
            format!("DNS: {host} has no address"),
            "check the host name in the server URL",
        ));
    };
    let dns = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("no DNS ({host} is an address)")
    } else {
        format!(
            "DNS {host} → {} ({} ms)",
            first.ip(),
            millis(started.elapsed())
        )
    };
    let started = Instant::now();
    match within(timeout, tokio::net::TcpStream::connect(first)).await {
        Some(Ok(_)) => Ok((dns, format!("TCP {first} ({} ms)", millis(started.elapsed())))),
        Some(Err(e)) => Err(Check::fail(
            ID,
            format!("{dns}, but TCP to {first} failed: {e}"),
            "a firewall or egress policy blocks it: allow outbound TCP to the auth service (or set HTTPS_PROXY)",
        )),
        None => Err(Check::fail(
            ID,
            format!("{dns}, but TCP to {first} did not connect within {} ms", millis(timeout)),
            "a firewall or egress policy drops it: allow outbound TCP to the auth service (or set HTTPS_PROXY)",
        )),
    }
}

fn http_failure(e: &TransportError, https: bool, timeout: Duration) -> Check {
    let text = match e {
        TransportError::Other { reason, .. } => reason.clone(),
        other => error_chain(other),
    };
    let lower = text.to_ascii_lowercase();
    if https
        && (lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake"))
    {
        return Check::fail(
            ID,
            format!("TLS handshake failed: {text}"),
            "a TLS-intercepting proxy or an outdated CA store: trust the proxy's CA or bypass it for the auth service (NO_PROXY)",
        );
    }
    if e.is_timeout() {
        return Check::fail(
            ID,
            format!("no HTTP answer within {} ms", millis(timeout)),
            "the auth service or a proxy in between is not answering: check egress and proxy settings",
        );
    }
    Check::fail(
        ID,
        format!("the JWKS request failed: {e}"),
        "check egress to the auth service and the proxy settings",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn tls_failures_are_named() {
        let e = TransportError::Other {
            url: "https://x".into(),
            reason: "error sending request: invalid peer certificate: UnknownIssuer".into(),
        };
        let c = http_failure(&e, true, Duration::from_secs(1));
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.starts_with("TLS handshake failed"), "{c:?}");
        let e = TransportError::Timeout {
            url: "https://x".into(),
            timeout_ms: 1000,
        };
        assert!(http_failure(&e, true, Duration::from_secs(1))
            .message
            .contains("no HTTP answer"));
    }

    #[tokio::test]
    async fn invalid_urls_fail_before_any_io() {
        let cfg = ProviderConfig::with_env(
            crate::env::Env::from_pairs([(
                "S2IAM_JWT_SERVER_URL",
                "http://127.0.0.1:1/auth/iam/:jwtType",
            )]),
            crate::env::Fs::from_files::<&str, &str>([]),
        );
        let opts = DoctorOptions::default();
        let a = super::super::proxy::analyse(&cfg, &opts);
        let r = run(&cfg, &opts, &a).await;
        assert_eq!(r.check.status, Status::Fail);
        assert!(r.check.message.contains("must use https"), "{:?}", r.check);
        assert!(r.template.is_none());
    }
}
