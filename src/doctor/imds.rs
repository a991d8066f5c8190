//! The IMDSv2 hop-limit symptom: the token `PUT` gets no answer while a plain
//! `GET` (IMDSv1) answers, or at least the TCP connection opens. That is what a
//! container sees on an EC2 instance whose `HttpPutResponseHopLimit` is 1: the
//! token response is dropped one network hop short, everything else arrives.

use std::time::{Duration, Instant};

use super::{millis, Check, Status};
use crate::env::ProviderConfig;
use crate::http::{fetch, TransportError};
use crate::provider::aws::imds::IMDS_TIMEOUT;

/// The check's id.
pub const ID: &str = "imds_hop_limit";

/// The fix for the hop-limit symptom.
pub const HOP_LIMIT_FIX: &str = "raise the instance's IMDSv2 hop limit to 2: aws ec2 modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2 (HttpPutResponseHopLimit: 2 in the launch template's MetadataOptions), or give the pod its own identity (IRSA or EKS Pod Identity)";

/// What the token PUT and the fallbacks got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The token PUT answered 200 with a token.
    Token {
        /// How long it took.
        ms: u64,
    },
    /// The token PUT answered this status.
    TokenStatus(u16),
    /// Nothing listens at the IMDS address.
    Refused,
    /// The address cannot be reached at all (no route, DNS).
    Unreachable(String),
    /// The PUT timed out; then the GET got this status.
    PutTimeoutGetAnswered(u16),
    /// The PUT and the GET timed out; the TCP connection opened (or not).
    Silent {
        /// Whether a TCP connection opened.
        connects: bool,
    },
}

/// Sends the PUT, and the GET and TCP connection when it times out.
pub async fn observe(cfg: &ProviderConfig, timeout: Duration) -> Observation {
    let base = cfg.endpoints.aws_imds.trim_end_matches('/');
    let t = IMDS_TIMEOUT.min(timeout);
    let token_url = format!("{base}/latest/api/token");
    let started = Instant::now();
    let put = cfg
        .http
        .put(&token_url)
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60");
    match fetch(put, &token_url, t).await {
        Ok(r) if r.is_success() && !r.body.trim().is_empty() => {
            return Observation::Token {
                ms: millis(started.elapsed()),
            }
        }
        Ok(r) => return Observation::TokenStatus(r.status),
        Err(TransportError::Refused { .. }) => return Observation::Refused,
        Err(TransportError::Timeout { .. }) => {}
        Err(e) => return Observation::Unreachable(e.to_string()),
    }
    let get_url = format!("{base}/latest/meta-data/instance-id");
    if let Ok(r) = fetch(cfg.http.get(&get_url), &get_url, t).await {
        return Observation::PutTimeoutGetAnswered(r.status);
    }
    Observation::Silent {
        connects: tcp_connects(base, t).await,
    }
}

async fn tcp_connects(base: &str, timeout: Duration) -> bool {
    let Ok(url) = url::Url::parse(base) else {
        return false;
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}

/// The verdict on what was observed.
pub fn verdict(o: &Observation, base: &str) -> Check {
    match o {
        Observation::Token { ms } => Check::pass(ID, format!("IMDSv2 token answered in {ms} ms")),
        Observation::TokenStatus(404) => Check::skip(
            ID,
            format!("{base} answers, but not as EC2's metadata service (token PUT: 404)"),
        ),
        Observation::TokenStatus(s @ 403..=405) => Check::warn(
            ID,
            format!("IMDSv2 is refused (token PUT: {s}): s2iam falls back to IMDSv1"),
            "enable IMDSv2 on the instance (aws ec2 modify-instance-metadata-options --http-endpoint enabled --http-tokens required)",
        ),
        Observation::TokenStatus(s) => Check::warn(
            ID,
            format!("the IMDSv2 token PUT answered HTTP {s}"),
            "check the instance metadata options (aws ec2 describe-instances --query 'Reservations[].Instances[].MetadataOptions')",
        ),
        Observation::Refused => Check::skip(ID, format!("nothing listens at {base}: not EC2")),
        Observation::Unreachable(why) => {
            Check::skip(ID, format!("{base} cannot be reached ({why}): not EC2"))
        }
        Observation::PutTimeoutGetAnswered(200) => Check::warn(
            ID,
            "hop-limit symptom: the IMDSv2 token PUT gets no answer while IMDSv1 GETs do; s2iam falls back to IMDSv1 after a timeout on every session",
            HOP_LIMIT_FIX,
        ),
        Observation::PutTimeoutGetAnswered(s) => Check::fail(
            ID,
            format!(
                "hop-limit symptom: the IMDSv2 token PUT gets no answer while a GET is answered (HTTP {s}{}): no instance credentials can be read",
                if *s == 401 { ", the instance requires tokens" } else { "" }
            ),
            HOP_LIMIT_FIX,
        ),
        Observation::Silent { connects: true } => Check::fail(
            ID,
            "hop-limit symptom: the metadata address accepts TCP connections but the IMDSv2 token PUT (and a GET) get no answer",
            HOP_LIMIT_FIX,
        ),
        Observation::Silent { connects: false } => Check::skip(
            ID,
            format!("no answer and no TCP connection at {base}: not EC2 (or a firewall drops metadata traffic)"),
        ),
    }
}

/// Observes and judges.
pub async fn check(cfg: &ProviderConfig, timeout: Duration) -> Check {
    let o = observe(cfg, timeout).await;
    verdict(&o, &cfg.endpoints.aws_imds).detail("imds", cfg.endpoints.aws_imds.clone())
}

/// A hop-limit FAIL is only a warning when s2iam's credentials do not come from
/// IMDS (IRSA, container credentials, keys): s2iam works, other SDKs on the
/// instance may not.
pub fn relevance(c: Check, uses_metadata: Option<bool>, source: Option<&str>) -> Check {
    match (c.status, uses_metadata, source) {
        (Status::Fail, Some(false), Some(source)) => Check {
            status: Status::Warn,
            message: format!(
                "{} (s2iam takes its credentials from {source}, so this does not stop it; other SDKs on this instance may be affected)",
                c.message
            ),
            ..c
        },
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let b = "http://127.0.0.1:1";
        let cases = [
            (Observation::Token { ms: 2 }, Status::Pass),
            (Observation::TokenStatus(404), Status::Skip),
            (Observation::TokenStatus(403), Status::Warn),
            (Observation::Refused, Status::Skip),
            (Observation::PutTimeoutGetAnswered(200), Status::Warn),
            (Observation::PutTimeoutGetAnswered(401), Status::Fail),
            (Observation::Silent { connects: true }, Status::Fail),
            (Observation::Silent { connects: false }, Status::Skip),
        ];
        for (o, want) in cases {
            let c = verdict(&o, b);
            assert_eq!(c.status, want, "{o:?}: {c:?}");
            if matches!(want, Status::Warn | Status::Fail) {
                assert!(c.fix.is_some(), "{o:?}");
            }
        }
        let c = verdict(&Observation::PutTimeoutGetAnswered(401), b);
        assert!(c
            .fix
            .clone()
            .unwrap()
            .contains("--http-put-response-hop-limit 2"));
        assert!(c.message.contains("requires tokens"));
        let irsa = relevance(c.clone(), Some(false), Some("web identity (IRSA)"));
        assert_eq!(irsa.status, Status::Warn);
        assert!(irsa.message.contains("does not stop it"), "{irsa:?}");
        assert_eq!(relevance(c.clone(), Some(true), Some("imds")), c);
        assert_eq!(relevance(c.clone(), None, None), c);
    }
}
