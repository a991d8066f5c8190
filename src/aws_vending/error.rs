//! Why vending failed, and the HTTP status and code each reason maps to.

use crate::provider::aws::sts::StsError;

/// Why credentials or a presigned URL could not be had. Messages never contain a
/// credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VendError {
    #[error("unknown AWS profile {name:?}; configured: {}", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    /// The profile is not configured.
    UnknownProfile {
        /// The name asked for (cut to 80 characters).
        name: String,
        /// The configured names.
        known: Vec<String>,
    },
    #[error("{0}")]
    /// The request is malformed (HTTP 400).
    BadRequest(String),
    #[error("{0}")]
    /// The profile's rules do not allow this bucket, key or action (HTTP 403).
    Forbidden(String),
    #[error("profile {profile:?}: no identity to get AWS credentials with: {reason}")]
    /// The workload's own identity could not be had.
    Identity {
        /// The profile.
        profile: String,
        /// What went wrong.
        reason: String,
    },
    #[error("profile {profile:?}: {reason}")]
    /// STS said no: retrying will not help (HTTP 502).
    Refused {
        /// The profile.
        profile: String,
        /// What went wrong.
        reason: String,
    },
    #[error("profile {profile:?}: {reason}")]
    /// STS could not be reached or was busy: a retry may help (HTTP 503).
    Unavailable {
        /// The profile.
        profile: String,
        /// What went wrong.
        reason: String,
    },
    #[error("profile {profile:?}: the credentials have only {remaining_secs}s left, less than aws.min_remaining ({min_secs}s); a refresh is pending")]
    /// The cached credentials are too close to expiry to hand out.
    Expiring {
        /// The profile.
        profile: String,
        /// Seconds left.
        remaining_secs: u64,
        /// The configured minimum, in seconds.
        min_secs: u64,
    },
}

impl VendError {
    /// The HTTP status the sidecar answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownProfile { .. } => 404,
            Self::BadRequest(_) => 400,
            Self::Forbidden(_) => 403,
            Self::Refused { .. } => 502,
            Self::Identity { .. } | Self::Unavailable { .. } | Self::Expiring { .. } => 503,
        }
    }

    /// The `code` of the container-credentials error document.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownProfile { .. } => "unknown_profile",
            Self::BadRequest(_) => "bad_request",
            Self::Forbidden(_) => "forbidden",
            Self::Identity { .. } => "identity_unavailable",
            Self::Refused { .. } => "sts_refused",
            Self::Unavailable { .. } => "sts_unavailable",
            Self::Expiring { .. } => "credentials_expiring",
        }
    }

    pub(crate) fn sts(profile: &str, e: &StsError) -> Self {
        let reason = e.to_string();
        let profile = profile.to_string();
        match e {
            // A 4xx is a refusal whether or not STS (or a proxy in front of it)
            // sent an error document: retrying will not help.
            StsError::Service { status, .. } | StsError::Status { status, .. }
                if (400..500).contains(status) && *status != 429 =>
            {
                Self::Refused { profile, reason }
            }
            _ => Self::Unavailable { profile, reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_statuses() {
        let e = VendError::UnknownProfile {
            name: "x".into(),
            known: vec!["a".into()],
        };
        assert_eq!((e.status(), e.code()), (404, "unknown_profile"));
        assert!(e.to_string().contains("configured: a"));
        assert_eq!(VendError::Forbidden(String::new()).status(), 403);
    }
}
