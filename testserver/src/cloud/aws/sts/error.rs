//! Why STS refused a request, with the real service's codes and statuses.

use super::super::sigv4::SigV4Error;

/// Why STS refused a request. [`StsError::code`] and [`StsError::status`] are the
/// real service's; messages never include a secret.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    #[error(transparent)]
    /// The SigV4 signature did not verify.
    Signature(#[from] SigV4Error),
    #[error("Missing Action")]
    /// No `Action` parameter.
    MissingAction,
    #[error("Could not find operation {action} for version {version}")]
    /// An action or version the mock does not serve.
    InvalidAction {
        /// The STS action.
        action: String,
        /// The `Version` parameter.
        version: String,
    },
    #[error("{0}")]
    /// A parameter is out of range.
    Validation(String),
    #[error("The security token included in the request is expired")]
    /// The presented credentials have expired.
    ExpiredToken,
    #[error("{0}")]
    /// The caller may not assume the role.
    AccessDenied(String),
    #[error("{0}")]
    /// The session policy is not valid.
    MalformedPolicyDocument(String),
    #[error("{0}")]
    /// The web identity token was rejected.
    InvalidIdentityToken(String),
    /// An expired web identity token (`ExpiredTokenException`).
    #[error("{0}")]
    ExpiredWebIdentityToken(String),
    /// The body could not be read (too large, broken connection).
    #[error("{message}")]
    /// The body could not be read.
    Body {
        /// The HTTP status.
        status: u16,
        /// The server's own words.
        message: String,
    },
}

impl StsError {
    /// The STS error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Signature(e) => e.code(),
            Self::MissingAction => "MissingAction",
            Self::InvalidAction { .. } => "InvalidAction",
            Self::Validation(_) => "ValidationError",
            Self::ExpiredToken => "ExpiredToken",
            Self::AccessDenied(_) => "AccessDenied",
            Self::MalformedPolicyDocument(_) => "MalformedPolicyDocument",
            Self::InvalidIdentityToken(_) => "InvalidIdentityToken",
            Self::ExpiredWebIdentityToken(_) => "ExpiredTokenException",
            Self::Body { status: 413, .. } => "RequestEntityTooLarge",
            Self::Body { .. } => "MalformedInput",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Signature(e) => e.status(),
            Self::AccessDenied(_) => 403,
            Self::Body { status, .. } => *status,
            _ => 400,
        }
    }

    pub(super) fn validation(member: &str, value: Option<&str>, constraint: &str) -> Self {
        let value = match value {
            Some(v) => format!("'{v}'"),
            None => "null".to_string(),
        };
        Self::Validation(format!(
            "1 validation error detected: Value {value} at '{member}' failed to satisfy constraint: {constraint}"
        ))
    }
}
