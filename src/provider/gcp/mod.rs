//! Google Cloud: detection, and identity from a credential file or the GCE
//! metadata server, in the Google SDKs' Application Default Credentials order
//! (`adc.rs`).
//!
//! Detection:
//! - fast path (no network): `GOOGLE_APPLICATION_CREDENTIALS` names a credential
//!   file s2iam can use (`external_account`, `service_account`, `authorized_user`),
//!   or `GCE_METADATA_HOST` is set;
//! - probe: `GET {probe}/computeMetadata/v1/instance/id` with `Metadata-Flavor: Google`;
//!   positive only on 200 with the response header `Metadata-Flavor: Google`, the way
//!   Google's own libraries tell the metadata server from anything else listening on
//!   169.254.169.254.
//!
//! - after every probe failed: gcloud's well-known application-default file
//!   exists (a developer laptop after `gcloud auth application-default login`),
//!   see [`GcpProvider::fallback_detect`].
//!
//! Identity: an ID token for the requested audience, sent as `Authorization:
//! Bearer <token>` — the one header the reference clients send for GCP — from the
//! first of:
//! 1. a credential file (`adc.rs`): `external_account` (workload identity
//!    federation: `external/`, `sts.rs`, then `impersonate.rs`),
//!    `service_account` (a JWT signed with the key, `oauth.rs`) or
//!    `authorized_user` (a refresh token, `oauth.rs`);
//! 2. the metadata server (`metadata.rs`).
//!
//! With a service-account email to act as (`assume_role`), the source's access
//! token is exchanged for that account's ID token with IAM Credentials
//! `generateIdToken` (`impersonate.rs`).

pub mod adc;
mod claims;
mod external;
mod impersonate;
mod metadata;
mod oauth;
mod sts;

/// The GCP parsers of metadata-server, IAM Credentials and STS answers, credential
/// files and executable outputs, for the fuzz targets (`crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_responses(body: &str) {
    let _ = metadata::zone_name(body);
    let _ = impersonate::token_of(body);
    let zone = claims::region_of(body);
    let _ = claims::identity_from_token(body, Some(&zone));
    let _ = claims::identity_from_token(body, None);
    let _ = adc::parse(body);
    let _ = sts::access_token_of(body);
    let _ = external::executable::parse_response(body, true, 0);
}

use std::path::Path;
use std::time::Duration;

use super::{
    CloudIdentity, CloudProvider, IdentityHeaders, IdentityRequest, ProbeError, ProviderError,
};
use crate::env::ProviderConfig;
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
    ///
    /// `GOOGLE_APPLICATION_CREDENTIALS` is an explicit choice, so a file of a type
    /// s2iam can use is evidence; one that cannot be read or parsed is not (the
    /// probes then decide, and identity reports the file's problem).
    pub fn fast_detect(cfg: &ProviderConfig) -> Option<String> {
        if let Some(path) = cfg.env.get("GOOGLE_APPLICATION_CREDENTIALS") {
            if let Ok(file) = adc::read(cfg, Path::new(path.trim())) {
                return Some(format!(
                    "GOOGLE_APPLICATION_CREDENTIALS names a {} credential file ({path})",
                    file.kind()
                ));
            }
        }
        cfg.env
            .is_set("GCE_METADATA_HOST")
            .then(|| "GCE_METADATA_HOST is set".to_string())
    }

    /// Evidence for GCP when no metadata service answered: gcloud's well-known
    /// application-default file, readable and of a usable type. It is ambient (a
    /// developer's login), not an explicit choice, so it never outranks a cloud
    /// whose metadata service answers.
    pub fn fallback_detect(cfg: &ProviderConfig) -> Option<String> {
        let path = adc::well_known_path(cfg)?;
        if !cfg.fs.exists(&path) {
            return None;
        }
        let file = adc::read(cfg, &path).ok()?;
        Some(format!(
            "no metadata service answered, and gcloud's application-default credentials file ({}) holds {} credentials",
            path.display(),
            file.kind()
        ))
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
        let found = adc::locate(cfg).map_err(|e| ProviderError::NoIdentity {
            provider: CloudProvider::Gcp,
            reason: e.to_string(),
        })?;
        let (token, identity) = match found {
            Some(found) => self.file_identity(cfg, &found, &req.gcp_audience).await?,
            None => self.metadata_identity(cfg, &req.gcp_audience).await?,
        };
        let mut headers = IdentityHeaders::default();
        headers.push("Authorization", format!("Bearer {}", token.expose()));
        Ok((headers, identity))
    }

    async fn metadata_identity(
        &self,
        cfg: &ProviderConfig,
        audience: &str,
    ) -> Result<(crate::Secret, CloudIdentity), ProviderError> {
        let md = metadata::Metadata::new(cfg, self.retry.unwrap_or(DEFAULT_RETRY));
        // The zone is only for display; fetch it alongside the token.
        let (token, zone) = tokio::join!(self.id_token(cfg, &md, audience), md.zone());
        let token = token?;
        let mut identity = claims::identity_from_token(token.expose(), zone.as_deref())?;
        identity.additional_claims.insert(
            CREDENTIAL_SOURCE_CLAIM.into(),
            self.described("GCE metadata server"),
        );
        Ok((token, identity))
    }

    /// The ID token from a credential file, and who it names.
    async fn file_identity(
        &self,
        cfg: &ProviderConfig,
        found: &adc::Found,
        audience: &str,
    ) -> Result<(crate::Secret, CloudIdentity), ProviderError> {
        let policy = self.retry.unwrap_or(DEFAULT_RETRY);
        let impersonate = self.impersonate.as_deref();
        let (token, resource_type) = match &found.file {
            adc::CredentialsFile::ExternalAccount(account) => (
                external::id_token(cfg, &policy, account, audience, impersonate).await?,
                "gcp-service-account",
            ),
            adc::CredentialsFile::ServiceAccount(key) => {
                let token = match impersonate {
                    None => oauth::service_account_id_token(cfg, &policy, key, audience).await?,
                    Some(email) => {
                        let access = oauth::service_account_access_token(cfg, &policy, key).await?;
                        impersonate::generate_id_token(cfg, &policy, email, audience, &access)
                            .await?
                    }
                };
                (token, "gcp-service-account")
            }
            adc::CredentialsFile::AuthorizedUser(user) => {
                let (access, id) = oauth::refresh_user(cfg, &policy, user).await?;
                match impersonate {
                    Some(email) => (
                        impersonate::generate_id_token(cfg, &policy, email, audience, &access)
                            .await?,
                        "gcp-service-account",
                    ),
                    None => (user_id_token(id, &user.client_id, audience)?, "gcp-user"),
                }
            }
        };
        let mut identity = claims::identity_from_token(token.expose(), None)?;
        identity.resource_type = resource_type.into();
        identity.additional_claims.insert(
            CREDENTIAL_SOURCE_CLAIM.into(),
            self.described(&found.describe()),
        );
        Ok((token, identity))
    }

    fn described(&self, source: &str) -> String {
        match &self.impersonate {
            Some(email) => format!("{source}, impersonating {email}"),
            None => source.to_string(),
        }
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

/// The `additional_claims` key naming where the identity came from.
pub const CREDENTIAL_SOURCE_CLAIM: &str = "credential_source";

/// A user's ID token from the refresh-token grant. Its `aud` is the OAuth client
/// id the user logged in through, not `audience`: Google mints user ID tokens only
/// for the client. The auth service sees that client id as the audience and
/// accepts the token only if it is configured to trust it.
fn user_id_token(
    id: Option<crate::Secret>,
    client_id: &str,
    audience: &str,
) -> Result<crate::Secret, ProviderError> {
    let token = id.ok_or_else(|| ProviderError::NoIdentity {
        provider: CloudProvider::Gcp,
        reason: "the authorized_user refresh token returned no id_token (it was not granted the \
                 openid scope): run `gcloud auth application-default login` again, or pass \
                 --assume-role EMAIL to impersonate a service account"
            .into(),
    })?;
    tracing::warn!(
        client_id,
        audience,
        "authorized_user credentials: the ID token's audience is the OAuth client id, not the \
         requested audience; the auth service accepts it only if it trusts that client id \
         (use --assume-role EMAIL for a service account's token with the right audience)"
    );
    Ok(token)
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
    fn fast_detect_needs_gce_host_or_a_usable_credential_file() {
        assert!(GcpProvider::fast_detect(&cfg(&[], &[])).is_none());
        let e = GcpProvider::fast_detect(&cfg(&[("GCE_METADATA_HOST", "127.0.0.1:1")], &[]));
        assert_eq!(e.as_deref(), Some("GCE_METADATA_HOST is set"));
        let ext = r#"{"type": "external_account", "audience": "//iam.googleapis.com/x",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": "https://sts.googleapis.com/v1/token", "credential_source": {"file": "/t"}}"#;
        let sa = r#"{"type": "service_account", "client_email": "a@p.iam.gserviceaccount.com", "private_key": "k"}"#;
        for (content, kind) in [(ext, "external_account (file)"), (sa, "service_account")] {
            let e = GcpProvider::fast_detect(&cfg(
                &[("GOOGLE_APPLICATION_CREDENTIALS", "/creds.json")],
                &[("/creds.json", content)],
            ));
            assert!(e.unwrap().contains(kind), "{kind}");
        }
        // A missing file, garbage and incomplete files are not evidence.
        for (path, content) in [
            ("/other.json", ext),
            ("/creds.json", "not json external_account"),
            ("/creds.json", r#"{"type": "service_account"}"#),
            (
                "/creds.json",
                r#"{"type": "external_account", "audience": "x"}"#,
            ),
        ] {
            let c = cfg(
                &[("GOOGLE_APPLICATION_CREDENTIALS", "/creds.json")],
                &[(path, content)],
            );
            assert!(GcpProvider::fast_detect(&c).is_none(), "{path} {content}");
        }
    }

    #[test]
    fn fallback_detect_needs_the_well_known_file() {
        let user =
            r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#;
        let path = "/h/.config/gcloud/application_default_credentials.json";
        let e = GcpProvider::fallback_detect(&cfg(&[("HOME", "/h")], &[(path, user)]));
        assert!(e.unwrap().contains("authorized_user"));
        assert!(GcpProvider::fallback_detect(&cfg(&[("HOME", "/h")], &[])).is_none());
        assert!(GcpProvider::fallback_detect(&cfg(&[("HOME", "/h")], &[(path, "{}")])).is_none());
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
