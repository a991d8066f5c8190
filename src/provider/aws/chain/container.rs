//! The AWS container credentials protocol (ECS task roles, EKS Pod Identity, and
//! sidecars such as s2iam's own).
//!
//! - `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`: `GET {ecs endpoint}{relative uri}`
//!   (the ECS agent at `http://169.254.170.2`).
//! - `AWS_CONTAINER_CREDENTIALS_FULL_URI`: `GET {uri}`; plain `http` only to
//!   loopback, `169.254.170.2` (ECS), `169.254.170.23` or `[fd00:ec2::23]` (EKS Pod
//!   Identity), otherwise `https`.
//! - `Authorization: <token>` (raw) from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`,
//!   re-read on every call (EKS rotates it), else `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
//!
//! Answer: JSON `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration` (RFC 3339),
//! optional `AccountId`; errors `{"code","message"}`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{
    AwsCredentials, CredentialSource, ProvideCredentials, ProvideFuture, Provided, SourceError,
};
use crate::env::ProviderConfig;
use crate::http::TransportError;
use crate::provider::aws::http;
use crate::provider::aws::keys::parse_time;
use crate::secret::Secret;

/// Per-request timeout. The EKS Pod Identity agent calls EKS Auth before it
/// answers, so allow more than a metadata round-trip.
pub const CONTAINER_TIMEOUT: Duration = Duration::from_secs(5);

const ECS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
const EKS_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 23);
const EKS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23);

/// The container credentials source.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContainerCredentials;

#[derive(Debug, Clone, thiserror::Error)]
/// Why container credentials could not be had.
pub enum ContainerError {
    #[error(
        "neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor AWS_CONTAINER_CREDENTIALS_FULL_URI is set"
    )]
    /// Neither container-credentials variable is set.
    NotSet,
    #[error("AWS_CONTAINER_CREDENTIALS_FULL_URI {uri:?} is not allowed: {reason}")]
    /// The URI is not one the SDKs accept.
    InvalidUri {
        /// The configured URI.
        uri: String,
        /// What went wrong.
        reason: String,
    },
    #[error("cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {path}: {reason}")]
    /// The authorization token file cannot be read.
    TokenFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    #[error("the container authorization token contains a line break")]
    /// The authorization token is not a valid header value.
    InvalidToken,
    #[error(transparent)]
    /// No HTTP answer.
    Transport(#[from] TransportError),
    #[error("{url} answered HTTP {status}: {message}")]
    /// The endpoint answered with an error status.
    Status {
        /// The address, without its query string.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's own words.
        message: String,
    },
    #[error("{url} answered a malformed credentials document: {reason}")]
    /// The answer is not a credentials document.
    Malformed {
        /// The address, without its query string.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl SourceError for ContainerError {
    fn is_not_configured(&self) -> bool {
        matches!(self, Self::NotSet)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
    account_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorDocument {
    #[serde(alias = "Code", alias = "error")]
    code: Option<String>,
    #[serde(alias = "Message")]
    message: Option<String>,
}

impl ContainerCredentials {
    /// The credentials from the container endpoint.
    pub async fn load(&self, cfg: &ProviderConfig) -> Result<AwsCredentials, ContainerError> {
        let url = endpoint(cfg)?;
        let token = authorization(cfg)?;
        let answer = http::send(&url, CONTAINER_TIMEOUT, || {
            let req = cfg.http.get(&url).header("Accept", "application/json");
            match &token {
                Some(t) => req.header("Authorization", t.expose()),
                None => req,
            }
        })
        .await?;
        let secrets: Vec<&str> = token.iter().map(|t| t.expose()).collect();
        if !answer.is_success() {
            let mut message = http::scrub(&error_message(&answer.body), &secrets);
            if token.is_none() && matches!(answer.status, 401 | 403) {
                message.push_str(
                    " (no Authorization token was sent: set AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE \
                     or AWS_CONTAINER_AUTHORIZATION_TOKEN)",
                );
            }
            return Err(ContainerError::Status {
                url,
                status: answer.status,
                message,
            });
        }
        parse(&url, &answer.body)
    }
}

/// The URL to call, from whichever variable is set (relative first, as the SDKs do).
fn endpoint(cfg: &ProviderConfig) -> Result<String, ContainerError> {
    if let Some(rel) = cfg.env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        let rel = rel.trim();
        let sep = if rel.starts_with('/') { "" } else { "/" };
        return Ok(format!("{}{sep}{rel}", cfg.endpoints.ecs_credentials));
    }
    let full = cfg
        .env
        .get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .ok_or(ContainerError::NotSet)?;
    check_full_uri(full.trim())?;
    Ok(full.trim().to_string())
}

/// `https` anywhere; `http` only to the addresses the protocol allows.
pub fn check_full_uri(uri: &str) -> Result<(), ContainerError> {
    let invalid = |reason: &str| ContainerError::InvalidUri {
        uri: uri.to_string(),
        reason: reason.to_string(),
    };
    let url = url::Url::parse(uri).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let ok = match url.host() {
                Some(url::Host::Ipv4(ip)) => allowed_http_ip(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => allowed_http_ip(IpAddr::V6(ip)),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if ok {
                Ok(())
            } else {
                Err(invalid(
                    "plain http is only allowed to loopback, 169.254.170.2, 169.254.170.23 \
                     and fd00:ec2::23; use https",
                ))
            }
        }
        other => Err(invalid(&format!("unsupported scheme {other:?}"))),
    }
}

fn allowed_http_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4 == ECS_V4 || v4 == EKS_V4,
        IpAddr::V6(v6) => v6.is_loopback() || v6 == EKS_V6,
    }
}

fn authorization(cfg: &ProviderConfig) -> Result<Option<Secret>, ContainerError> {
    let token = match cfg.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(path) => cfg
            .fs
            .read_to_string(Path::new(path.trim()))
            .map(|t| t.trim().to_string())
            .map_err(|e| ContainerError::TokenFile {
                path,
                reason: e.to_string(),
            })?,
        None => match cfg.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
            Some(t) => t.trim().to_string(),
            None => return Ok(None),
        },
    };
    if token.contains(['\r', '\n']) {
        return Err(ContainerError::InvalidToken);
    }
    Ok(Some(Secret::new(token)))
}

pub(crate) fn error_message(body: &str) -> String {
    match serde_json::from_str::<ErrorDocument>(body) {
        Ok(ErrorDocument { code, message }) => match (code, message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(s), None) | (None, Some(s)) => s,
            (None, None) => "no error message".into(),
        },
        Err(_) => "no error message".into(),
    }
}

pub(crate) fn parse(url: &str, body: &str) -> Result<AwsCredentials, ContainerError> {
    let malformed = |reason: String| ContainerError::Malformed {
        url: url.to_string(),
        reason,
    };
    // serde_json's messages quote no input values, only positions and field names.
    let doc: Document = serde_json::from_str(body).map_err(|e| malformed(e.to_string()))?;
    if doc.access_key_id.is_empty() || doc.secret_access_key.is_empty() {
        return Err(malformed("empty AccessKeyId or SecretAccessKey".into()));
    }
    let expiration = match doc.expiration.as_deref() {
        Some(text) => Some(
            parse_time(text)
                .ok_or_else(|| malformed(format!("Expiration {text:?} is not RFC 3339")))?,
        ),
        None => None,
    };
    Ok(AwsCredentials {
        access_key_id: doc.access_key_id,
        secret: Secret::new(doc.secret_access_key),
        session_token: doc.token.filter(|t| !t.is_empty()).map(Secret::new),
        expiration,
        account_id: doc.account_id.filter(|a| !a.is_empty()),
    })
}

impl ProvideCredentials for ContainerCredentials {
    fn source(&self) -> CredentialSource {
        CredentialSource::Container
    }

    fn provide<'a>(&'a self, cfg: &'a ProviderConfig) -> ProvideFuture<'a> {
        Box::pin(async move {
            self.load(cfg)
                .await
                .map(Provided::from)
                .map_err(|e| e.skip())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri_rules() {
        for ok in [
            "http://127.0.0.1:8080/creds",
            "http://169.254.170.2/v2/credentials/x",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
            "http://[::1]:9/x",
            "http://localhost:1/x",
            "https://creds.example.com/x",
        ] {
            assert!(check_full_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/x",
            "http://example.com/x",
            "http://169.254.169.254/latest",
            "ftp://127.0.0.1/x",
            "not a url",
        ] {
            assert!(check_full_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_documents() {
        let c = parse(
            "u",
            r#"{"AccessKeyId":"ASIA1","SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00Z","AccountId":"123456789012"}"#,
        )
        .unwrap();
        assert_eq!(c.access_key_id, "ASIA1");
        assert_eq!(c.account_id.as_deref(), Some("123456789012"));
        assert!(c.is_temporary());
        for bad in [
            "",
            "{}",
            "[1]",
            r#"{"AccessKeyId":"","SecretAccessKey":""}"#,
        ] {
            assert!(matches!(
                parse("u", bad),
                Err(ContainerError::Malformed { .. })
            ));
        }
        let e = parse(
            "u",
            r#"{"AccessKeyId":"A","SecretAccessKey":"topsecret","Expiration":"soon"}"#,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("topsecret"));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(r#"{"code":"AccessDenied","message":"bad token"}"#),
            "AccessDenied: bad token"
        );
        assert_eq!(error_message("<html>"), "no error message");
    }
}
