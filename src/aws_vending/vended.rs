//! Credentials as handed to applications, in the two JSON forms AWS SDKs read:
//! the container-credentials document and the `credential_process` answer.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::cache::Expiring;
use crate::provider::aws::AwsCredentials;
use crate::secret::Secret;
use crate::util::{instant_after, rfc3339, time_after};

/// Where credentials come from when a caller gives no `expiration`: assume this
/// lifetime and fetch again after it.
const UNKNOWN_EXPIRY_LIFETIME: Duration = Duration::from_secs(900);

/// Credentials as vended, with their lifetime on the monotonic clock.
#[derive(Debug, Clone)]
pub struct VendedCredentials {
    /// The credentials themselves.
    pub credentials: AwsCredentials,
    /// The wall-clock expiry reported to SDKs.
    pub expiration: SystemTime,
    received: Instant,
    expires: Instant,
}

impl VendedCredentials {
    /// Fixes the lifetime at receipt: `now` is the wall clock, `at` the monotonic.
    pub fn new(credentials: AwsCredentials, now: SystemTime, at: Instant) -> Self {
        let expiration = credentials
            .expiration
            .unwrap_or_else(|| time_after(now, UNKNOWN_EXPIRY_LIFETIME));
        let lifetime = expiration.duration_since(now).unwrap_or(Duration::ZERO);
        Self {
            credentials,
            expiration,
            received: at,
            expires: instant_after(at, lifetime),
        }
    }

    /// Time left on the monotonic clock.
    pub fn remaining(&self) -> Duration {
        self.expires.saturating_duration_since(Instant::now())
    }

    /// The AWS container-credentials answer.
    pub fn container_json(&self) -> Value {
        let c = &self.credentials;
        let mut doc = json!({
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret.expose(),
            "Token": c.session_token.as_ref().map(|t| t.expose()).unwrap_or(""),
            "Expiration": rfc3339(self.expiration),
        });
        if let Some(account) = &c.account_id {
            doc["AccountId"] = json!(account);
        }
        doc
    }

    /// The `credential_process` answer.
    pub fn credential_process_json(&self) -> Value {
        let c = &self.credentials;
        let mut doc = json!({
            "Version": 1,
            "AccessKeyId": c.access_key_id,
            "SecretAccessKey": c.secret.expose(),
            "SessionToken": c.session_token.as_ref().map(|t| t.expose()).unwrap_or(""),
            "Expiration": rfc3339(self.expiration),
        });
        if let Some(account) = &c.account_id {
            doc["AccountId"] = json!(account);
        }
        doc
    }

    /// Reads a container-credentials answer (what the sidecar serves) back.
    pub fn from_container_json(doc: &Value, now: SystemTime) -> Option<Self> {
        let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        let expiration = s("Expiration").and_then(|e| crate::util::parse_rfc3339(&e))?;
        let credentials = AwsCredentials {
            access_key_id: s("AccessKeyId")?,
            secret: Secret::new(s("SecretAccessKey")?),
            session_token: s("Token").filter(|t| !t.is_empty()).map(Secret::new),
            expiration: Some(expiration),
            account_id: s("AccountId"),
        };
        Some(Self::new(credentials, now, Instant::now()))
    }
}

impl Expiring for VendedCredentials {
    fn received(&self) -> Instant {
        self.received
    }
    fn expires(&self) -> Instant {
        self.expires
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own their clock and environment
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vended_json_shapes_and_lifetime() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut c = AwsCredentials::new_static("ASIAX", "sec");
        c.session_token = Some(Secret::new("tok"));
        c.expiration = Some(now + Duration::from_secs(3600));
        c.account_id = Some("123456789012".into());
        let at = Instant::now();
        let v = VendedCredentials::new(c, now, at);
        assert_eq!(v.expires() - v.received(), Duration::from_secs(3600));
        assert_eq!(
            v.container_json(),
            json!({"AccessKeyId": "ASIAX", "SecretAccessKey": "sec", "Token": "tok",
                   "Expiration": "2023-11-14T23:13:20Z", "AccountId": "123456789012"})
        );
        let p = v.credential_process_json();
        assert_eq!(p["Version"], 1);
        assert_eq!(p["SessionToken"], "tok");
        let back =
            VendedCredentials::from_container_json(&v.container_json(), SystemTime::UNIX_EPOCH)
                .unwrap();
        assert_eq!(back.credentials, v.credentials);
        // Debug output of the vended value never shows the secret.
        assert!(!format!("{v:?}").contains("sec\""));
    }

    #[test]
    fn missing_expiry_is_assumed_short() {
        let now = SystemTime::now();
        let v = VendedCredentials::new(AwsCredentials::new_static("A", "s"), now, Instant::now());
        assert_eq!(v.expiration, now + UNKNOWN_EXPIRY_LIFETIME);
    }
}
