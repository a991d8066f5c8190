//! AWS credentials as a value: what the chain finds, STS returns, SigV4 signs
//! with and the sidecar vends. Imports nothing else of `provider::aws`.

use std::fmt;
use std::time::SystemTime;

use crate::secret::Secret;

/// AWS credentials. `Debug` shows the key id (not a secret; it appears in every
/// signed request and CloudTrail) and redacts the rest.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// The access key id (not a secret).
    pub access_key_id: String,
    /// The secret access key.
    pub secret: Secret,
    /// Present for temporary credentials.
    pub session_token: Option<Secret>,
    /// When temporary credentials expire.
    pub expiration: Option<SystemTime>,
    /// When the source said (container endpoints, STS assumed roles).
    pub account_id: Option<String>,
}

impl AwsCredentials {
    /// Long-lived keys (no session token, no expiry).
    pub fn new_static(access_key_id: impl Into<String>, secret: impl Into<Secret>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret: secret.into(),
            session_token: None,
            expiration: None,
            account_id: None,
        }
    }

    /// Temporary credentials carry a session token.
    pub fn is_temporary(&self) -> bool {
        self.session_token.is_some()
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret", &self.secret)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiration", &self.expiration)
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// An RFC 3339 time (what STS, IMDS and container endpoints send).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let t =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    crate::util::from_unix(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secrets() {
        let mut c = AwsCredentials::new_static("AKIDEXAMPLE", "wJalrXUtnFEMI");
        c.session_token = Some(Secret::new("IQoJsessiontoken"));
        let s = format!("{c:?}");
        assert!(s.contains("AKIDEXAMPLE"));
        assert!(!s.contains("wJalrXUtnFEMI"));
        assert!(!s.contains("IQoJsessiontoken"));
    }
}
