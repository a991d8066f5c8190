//! Google Cloud: detection and identity from the GCE metadata server.
//!
//! Detection:
//! - fast path (no network): `GCE_METADATA_HOST` is set, or
//!   `GOOGLE_APPLICATION_CREDENTIALS` names a JSON file with `"type": "external_account"`;
//! - probe: `GET {probe}/computeMetadata/v1/instance/id` with `Metadata-Flavor: Google`;
//!   positive only on 200 with the response header `Metadata-Flavor: Google`, the way
//!   Google's own libraries tell the metadata server from anything else listening on
//!   169.254.169.254.
//!
//! Identity (see `metadata.rs` and `impersonate.rs`): an ID token for the requested
//! audience, sent as `Authorization: Bearer <token>` — the one header the reference
//! clients send for GCP. With a service-account email to act as, the instance's
//! access token is exchanged for that account's ID token with IAM Credentials
//! `generateIdToken`.

mod claims;
mod impersonate;
mod metadata;

/// The GCP parsers of metadata-server and IAM Credentials answers, for the fuzz
/// targets (`crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_responses(body: &str) {
    let _ = metadata::zone_name(body);
    let _ = impersonate::token_of(body);
    let zone = claims::region_of(body);
    let _ = claims::identity_from_token(body, Some(&zone));
    let _ = claims::identity_from_token(body, None);
}

use std::path::Path;
use std::time::Duration;

use super::{
    CloudIdentity, CloudProvider, IdentityHeaders, IdentityRequest, ProbeError, ProviderConfig,
    ProviderError,
};
use crate::http::{fetch, RetryPolicy};

/// Per-request timeout of the detection probe. A real metadata server answers in
/// milliseconds; detection's overall deadline bounds the whole race anyway.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Identity requests are retried on connection errors, 429 and 5xx: GKE's metadata
/// server can take seconds to answer on a freshly started pod.
pub const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    base_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(2),
    budget: Duration::from_secs(8),
};

/// The GCP provider: the instance's default service account, or one it impersonates.
#[derive(Debug, Clone, Default)]
pub struct GcpProvider {
    impersonate: Option<String>,
    retry: Option<RetryPolicy>,
}

impl GcpProvider {
    /// Evidence of GCP in the environment alone (no network; reads the credential
    /// file `GOOGLE_APPLICATION_CREDENTIALS` names).
    pub fn fast_detect(cfg: &ProviderConfig) -> Option<String> {
        if let Some(path) = cfg.env.get("GOOGLE_APPLICATION_CREDENTIALS") {
            if is_external_account(cfg, Path::new(&path)) {
                return Some(format!(
                    "GOOGLE_APPLICATION_CREDENTIALS names an external_account credential file ({path})"
                ));
            }
        }
        cfg.env
            .is_set("GCE_METADATA_HOST")
            .then(|| "GCE_METADATA_HOST is set".to_string())
    }

    /// Probes the metadata server. Cancel-safe: one request, nothing to clean up.
    pub async fn probe(cfg: &ProviderConfig) -> Result<(), ProbeError> {
        let url = format!(
            "{}/computeMetadata/v1/instance/id",
            cfg.endpoints.gcp_metadata_probe
        );
        let req = cfg.http.get(&url).header("Metadata-Flavor", "Google");
        let reply = fetch(req, &url, PROBE_TIMEOUT)
            .await
            .map_err(ProbeError::from)?;
        check_probe_reply(&url, reply.status, reply.header("Metadata-Flavor"))
    }

    /// A provider that acts as service account `email` (through `generateIdToken`).
    pub fn assume_role(&self, email: &str) -> Result<Self, ProviderError> {
        let email = email.trim();
        validate_service_account(email).map_err(|reason| ProviderError::InvalidRole {
            provider: CloudProvider::Gcp,
            role: email.to_string(),
            reason: reason.to_string(),
        })?;
        Ok(Self {
            impersonate: Some(email.to_string()),
            ..self.clone()
        })
    }

    /// The service account this provider impersonates, if any.
    pub fn impersonation_target(&self) -> Option<&str> {
        self.impersonate.as_deref()
    }

    /// The same provider with another retry policy for identity requests.
    pub fn with_retry_policy(&self, policy: RetryPolicy) -> Self {
        Self {
            retry: Some(policy),
            ..self.clone()
        }
    }

    /// `Authorization: Bearer <ID token>` for `req.gcp_audience`, and who it names.
    pub async fn identity(
        &self,
        cfg: &ProviderConfig,
        req: &IdentityRequest,
    ) -> Result<(IdentityHeaders, CloudIdentity), ProviderError> {
        let md = metadata::Metadata::new(cfg, self.retry.unwrap_or(DEFAULT_RETRY));
        // The zone is only for display; fetch it alongside the token.
        let (token, zone) = tokio::join!(self.id_token(cfg, &md, &req.gcp_audience), md.zone());
        let token = token?;
        let identity = claims::identity_from_token(token.expose(), zone.as_deref())?;
        let mut headers = IdentityHeaders::default();
        headers.push("Authorization", format!("Bearer {}", token.expose()));
        Ok((headers, identity))
    }

    async fn id_token(
        &self,
        cfg: &ProviderConfig,
        md: &metadata::Metadata<'_>,
        audience: &str,
    ) -> Result<crate::Secret, ProviderError> {
        match &self.impersonate {
            None => md.identity_token(audience).await,
            Some(email) => {
                let access = md.access_token().await?;
                impersonate::generate_id_token(cfg, md.policy(), email, audience, &access).await
            }
        }
    }
}

/// Whether `path` is a readable JSON credential file of type `external_account`
/// (workload identity federation).
fn is_external_account(cfg: &ProviderConfig, path: &Path) -> bool {
    let Ok(text) = cfg.fs.read_to_string(path) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .is_some_and(|t| t == "external_account")
}

/// A 200 is the metadata server only if it says so: anything else on the address (a
/// proxy, another cloud's IMDS, a captive portal) does not send `Metadata-Flavor`.
fn check_probe_reply(url: &str, status: u16, flavor: Option<&str>) -> Result<(), ProbeError> {
    if status != 200 {
        return Err(ProbeError::Status {
            url: crate::http::display_url(url),
            status,
        });
    }
    match flavor {
        Some(f) if f.trim().eq_ignore_ascii_case("Google") => Ok(()),
        _ => Err(ProbeError::NotThisCloud(format!(
            "{} answered 200 without the response header `Metadata-Flavor: Google`: not a GCE metadata server",
            crate::http::display_url(url)
        ))),
    }
}

/// A service-account email is `name@domain` with a dotted domain, in the characters
/// email addresses use; it becomes a URL path segment, so nothing else may pass.
fn validate_service_account(email: &str) -> Result<(), &'static str> {
    let (local, domain) = email
        .split_once('@')
        .ok_or("expected a service-account email (name@project.iam.gserviceaccount.com)")?;
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c));
    if local_ok && domain_ok {
        Ok(())
    } else {
        Err("expected a service-account email (name@project.iam.gserviceaccount.com)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Fs};

    fn cfg(env: &[(&str, &str)], files: &[(&str, &str)]) -> ProviderConfig {
        ProviderConfig::with_env(
            Env::from_pairs(env.iter().copied()),
            Fs::from_files(files.iter().copied()),
        )
    }

    #[test]
    fn fast_detect_needs_gce_host_or_an_external_account_file() {
        assert!(GcpProvider::fast_detect(&cfg(&[], &[])).is_none());
        let e = GcpProvider::fast_detect(&cfg(&[("GCE_METADATA_HOST", "127.0.0.1:1")], &[]));
        assert_eq!(e.as_deref(), Some("GCE_METADATA_HOST is set"));
        let ext = r#"{"type": "external_account", "audience": "//iam.googleapis.com/x"}"#;
        let e = GcpProvider::fast_detect(&cfg(
            &[("GOOGLE_APPLICATION_CREDENTIALS", "/creds.json")],
            &[("/creds.json", ext)],
        ));
        assert!(e.unwrap().contains("external_account"));
        // A service-account key file, a missing file and garbage are not evidence.
        for (path, content) in [
            ("/creds.json", r#"{"type": "service_account"}"#),
            ("/other.json", ext),
            ("/creds.json", "not json external_account"),
        ] {
            let c = cfg(
                &[("GOOGLE_APPLICATION_CREDENTIALS", "/creds.json")],
                &[(path, content)],
            );
            assert!(GcpProvider::fast_detect(&c).is_none(), "{path} {content}");
        }
    }

    #[test]
    fn probe_needs_200_and_the_flavor_header() {
        let url = "http://127.0.0.1:1/computeMetadata/v1/instance/id";
        assert!(check_probe_reply(url, 200, Some("Google")).is_ok());
        assert!(matches!(
            check_probe_reply(url, 200, None),
            Err(ProbeError::NotThisCloud(m)) if m.contains("Metadata-Flavor")
        ));
        assert!(check_probe_reply(url, 200, Some("Amazon")).is_err());
        assert_eq!(
            check_probe_reply(url, 404, Some("Google")),
            Err(ProbeError::Status {
                url: url.into(),
                status: 404
            })
        );
    }

    #[test]
    fn assume_role_validates_and_leaves_the_original_alone() {
        let p = GcpProvider::default();
        let q = p
            .assume_role(" target@proj.iam.gserviceaccount.com ")
            .unwrap();
        assert_eq!(
            q.impersonation_target(),
            Some("target@proj.iam.gserviceaccount.com")
        );
        assert!(p.impersonation_target().is_none());
        for bad in [
            "",
            "arn:aws:iam::1:role/x",
            "no-at-sign",
            "@proj.iam.gserviceaccount.com",
            "a@nodot",
            "a/b@x.com",
            "a@x.com/../../v1",
            "a@x.com?q",
            "a b@x.com",
            "a@.x.com",
        ] {
            assert!(
                matches!(p.assume_role(bad), Err(ProviderError::InvalidRole { .. })),
                "{bad}"
            );
        }
    }
}
