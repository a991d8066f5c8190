//! The EC2 instance metadata service (IMDS).
//!
//! Protocol: IMDSv2 first — `PUT {imds}/latest/api/token` with
//! `X-aws-ec2-metadata-token-ttl-seconds: 21600` returns a session token, sent as
//! `X-aws-ec2-metadata-token` on every `GET {imds}/latest/meta-data/...`. When the
//! PUT is answered 403, 404 or 405, or refused, the instance (or something posing as
//! it) does not do IMDSv2, and plain IMDSv1 GETs are tried. Paths used:
//! `meta-data/instance-id` (probe), `meta-data/placement/region`,
//! `meta-data/iam/security-credentials/` (the role name) and
//! `meta-data/iam/security-credentials/{role}` (JSON `Code`, `AccessKeyId`,
//! `SecretAccessKey`, `Token`, `Expiration`). IMDS answers 404 on the
//! credentials path when no role is attached, and 401 to IMDSv1 when the instance
//! requires tokens.
//!
//! A token PUT that times out while the metadata address accepts TCP connections is
//! the signature of an IMDSv2 hop limit of 1 seen from a container: the answer is
//! dropped one hop short. That case gets its own error naming the cause and fixes.

use std::time::Duration;

use super::http;
use crate::http::TransportError;
use crate::secret::Secret;

/// Per-request timeout: IMDS is link-local and answers in milliseconds.
pub const IMDS_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the hop-limit check waits for a TCP connection.
const CONNECT_CHECK_TIMEOUT: Duration = Duration::from_millis(500);
const TOKEN_PATH: &str = "/latest/api/token";
const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
const TOKEN_TTL_SECS: &str = "21600";

/// An IMDS failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImdsError {
    #[error(transparent)]
    /// No HTTP answer.
    Transport(#[from] TransportError),
    #[error("{url} answered HTTP 404 (not found)")]
    /// 404: the path does not exist on this instance.
    NotFound {
        /// The address, without its query string.
        url: String,
    },
    #[error("{url} answered HTTP {status}{hint}")]
    /// Another error status.
    Status {
        /// The address, without its query string.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What usually causes this status.
        hint: &'static str,
    },
    #[error("{url} answered an empty body")]
    /// 200 with nothing in it.
    Empty {
        /// The address, without its query string.
        url: String,
    },
    /// The token PUT timed out although the address accepts connections.
    #[error("IMDSv2 token request PUT {token_url}: {}", hop_limit_explanation(*timeout_ms, then))]
    HopLimit {
        /// The token URL.
        token_url: String,
        /// The deadline, in milliseconds.
        timeout_ms: u64,
        /// What the IMDSv1 fallback then got.
        then: Box<ImdsError>,
    },
}

/// The cause and the fixes of an IMDSv2 token timeout: the hop limit of 1 that
/// drops the token response one network hop short of a container.
pub fn hop_limit_explanation(timeout_ms: u64, then: &ImdsError) -> String {
    format!(
        "no answer within {timeout_ms} ms although the metadata service accepts connections \
         (IMDSv1 fallback: {then}). This is what a container sees on an EC2 instance whose \
         IMDSv2 hop limit (HttpPutResponseHopLimit) is 1: the token response is dropped one \
         network hop short. Fix it by raising the hop limit to 2 (aws ec2 \
         modify-instance-metadata-options --instance-id <id> --http-put-response-hop-limit 2, \
         or MetadataOptions in the launch template), or give the pod its own identity with \
         IRSA (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN) or EKS Pod Identity"
    )
}

/// How requests are authorised for the rest of a session.
#[derive(Debug, Clone)]
pub enum Session {
    /// IMDSv2, with its session token.
    V2(Secret),
    /// No token. `token_timeout_ms` is set when the token PUT timed out on an address
    /// that accepts connections (the hop-limit case), so a failing GET can say so.
    V1 {
        /// Milliseconds the token PUT waited, when it timed out.
        token_timeout_ms: Option<u64>,
    },
}

/// An IMDS client over the shared HTTP client.
#[derive(Debug, Clone)]
pub struct Imds {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

impl Imds {
    /// A client of the IMDS at `base`.
    pub fn new(http: reqwest::Client, base: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            timeout: IMDS_TIMEOUT,
        }
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Gets an IMDSv2 token, or decides on IMDSv1.
    pub async fn session(&self) -> Result<Session, ImdsError> {
        let url = format!("{}{TOKEN_PATH}", self.base);
        let answer = http::send(&url, self.timeout, || {
            self.http.put(&url).header(TOKEN_TTL_HEADER, TOKEN_TTL_SECS)
        })
        .await;
        match answer {
            Ok(a) if a.is_success() && !a.body.trim().is_empty() => {
                Ok(Session::V2(Secret::new(a.body.trim())))
            }
            Ok(a) if a.is_success() => Err(ImdsError::Empty { url }),
            Ok(a) if matches!(a.status, 403..=405) => {
                tracing::debug!(status = a.status, "IMDSv2 token refused; using IMDSv1");
                Ok(Session::V1 {
                    token_timeout_ms: None,
                })
            }
            Ok(a) => Err(status_error(url, a.status, false)),
            Err(TransportError::Refused { .. }) => Ok(Session::V1 {
                token_timeout_ms: None,
            }),
            Err(TransportError::Timeout { url, timeout_ms }) => {
                if self.accepts_connections().await {
                    Ok(Session::V1 {
                        token_timeout_ms: Some(timeout_ms),
                    })
                } else {
                    Err(TransportError::Timeout { url, timeout_ms }.into())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `GET {imds}/latest/{path}` in `session`; the body, trimmed.
    pub async fn get(&self, session: &Session, path: &str) -> Result<String, ImdsError> {
        let result = self.get_once(session, path).await;
        match (result, session) {
            (
                Err(e),
                Session::V1 {
                    token_timeout_ms: Some(ms),
                },
            ) => Err(ImdsError::HopLimit {
                token_url: format!("{}{TOKEN_PATH}", self.base),
                timeout_ms: *ms,
                then: Box::new(e),
            }),
            (
                Ok(body),
                Session::V1 {
                    token_timeout_ms: Some(ms),
                },
            ) => {
                tracing::warn!(
                    "IMDSv2 token request timed out after {ms} ms (IMDSv2 hop limit 1 seen from a \
                     container?); continuing with IMDSv1"
                );
                Ok(body)
            }
            (r, _) => r,
        }
    }

    async fn get_once(&self, session: &Session, path: &str) -> Result<String, ImdsError> {
        let url = format!("{}/latest/{}", self.base, path.trim_start_matches('/'));
        let answer = http::send(&url, self.timeout, || {
            let req = self.http.get(&url);
            match session {
                Session::V2(token) => req.header(TOKEN_HEADER, token.expose()),
                Session::V1 { .. } => req,
            }
        })
        .await?;
        match answer.status {
            200..=299 if answer.body.trim().is_empty() => Err(ImdsError::Empty { url }),
            200..=299 => Ok(answer.body.trim().to_string()),
            404 => Err(ImdsError::NotFound { url }),
            s => Err(status_error(url, s, matches!(session, Session::V1 { .. }))),
        }
    }

    /// Whether a TCP connection to the metadata address succeeds quickly.
    async fn accepts_connections(&self) -> bool {
        let Ok(url) = url::Url::parse(&self.base) else {
            return false;
        };
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        matches!(
            tokio::time::timeout(
                CONNECT_CHECK_TIMEOUT,
                tokio::net::TcpStream::connect((host, port))
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// Probes: a session, then the instance id.
    pub async fn instance_id(&self) -> Result<String, ImdsError> {
        let session = self.session().await?;
        self.get(&session, "meta-data/instance-id").await
    }
}

fn status_error(url: String, status: u16, v1: bool) -> ImdsError {
    let hint = match status {
        401 if v1 => {
            ": the instance requires IMDSv2 tokens (HttpTokens=required) and no token could be \
             obtained"
        }
        401 => ": the IMDSv2 token was rejected",
        429 => ": throttled (too many metadata requests; share one s2iam sidecar)",
        _ => "",
    };
    ImdsError::Status { url, status, hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_limit_message_names_cause_and_fixes() {
        let e = ImdsError::HopLimit {
            token_url: "http://169.254.169.254/latest/api/token".into(),
            timeout_ms: 1000,
            then: Box::new(ImdsError::Status {
                url: "u".into(),
                status: 401,
                hint: "",
            }),
        };
        let s = e.to_string();
        for needle in [
            "hop limit",
            "1000 ms",
            "accepts connections",
            "--http-put-response-hop-limit 2",
            "IRSA",
            "EKS Pod Identity",
        ] {
            assert!(s.contains(needle), "{needle:?} missing from {s}");
        }
    }
}
