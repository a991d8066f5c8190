//! Every address s2iam talks to, with its override, in one place. Tests and the
//! `s2iam dev` demo point all of them at a mock on loopback; production uses the
//! defaults.
//!
//! | endpoint | default | override (first set wins) |
//! |---|---|---|
//! | AWS IMDS | `http://169.254.169.254` | `AWS_EC2_METADATA_SERVICE_ENDPOINT` |
//! | AWS STS | `https://sts.{region}.amazonaws.com` (`https://sts.amazonaws.com` without a region) | `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL` |
//! | ECS container credentials host | `http://169.254.170.2` | `S2IAM_ECS_CREDENTIALS_ENDPOINT` |
//! | GCE metadata | `http://metadata.google.internal` | `S2IAM_GCP_METADATA_ENDPOINT` (URL), `GCE_METADATA_HOST` (`host[:port]`) |
//! | GCE detection probe | `http://169.254.169.254` (no DNS on the hot path) | `S2IAM_GCP_METADATA_ENDPOINT`, `GCE_METADATA_IP`, `GCE_METADATA_HOST` |
//! | Google IAM Credentials | `https://iamcredentials.googleapis.com` | `S2IAM_GCP_IAMCREDENTIALS_ENDPOINT` (a credential file's `service_account_impersonation_url` wins for it) |
//! | Google STS, OAuth token endpoint, credential-source URLs | from the Google credential file (`token_url`, `token_uri`, `credential_source.url`...; `https://oauth2.googleapis.com/token` for an `authorized_user` file without one) | the file itself (see `provider::gcp::adc`) |
//! | Azure IMDS | `http://169.254.169.254` | `S2IAM_AZURE_IMDS_ENDPOINT` |
//! | Azure AD authority | `https://login.microsoftonline.com` | `AZURE_AUTHORITY_HOST` |
//! | Azure App Service identity | — | `IDENTITY_ENDPOINT` (+ `IDENTITY_HEADER`) |
//! | SingleStore auth service | `https://authsvc.singlestore.com/auth/iam/:jwtType` | `--server-url`, `S2IAM_JWT_SERVER_URL` (Python reference), `S2IAM_SERVER_URL` (Go reference) |
//!
//! The `S2IAM_*` names exist where the ecosystem has no standard variable, and they
//! deliberately do not trigger fast-path detection the way `GCE_METADATA_HOST` does,
//! so tests can point detection at a mock without deciding its outcome.

use super::vars::Env;

/// EC2 instance metadata.
pub const DEFAULT_AWS_IMDS: &str = "http://169.254.169.254";
/// ECS container credentials.
pub const DEFAULT_ECS_CREDENTIALS: &str = "http://169.254.170.2";
/// GCE metadata, by name.
pub const DEFAULT_GCP_METADATA: &str = "http://metadata.google.internal";
/// GCE metadata by address, for detection without DNS.
pub const DEFAULT_GCP_METADATA_IP: &str = "http://169.254.169.254";
/// Google IAM Credentials (service-account impersonation).
pub const DEFAULT_GCP_IAMCREDENTIALS: &str = "https://iamcredentials.googleapis.com";
/// Azure instance metadata.
pub const DEFAULT_AZURE_IMDS: &str = "http://169.254.169.254";
/// Azure AD.
pub const DEFAULT_AZURE_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The SingleStore auth service (`:jwtType` filled in per request).
pub const DEFAULT_AUTH_SERVER: &str = "https://authsvc.singlestore.com/auth/iam/:jwtType";

/// Resolved endpoints (base URLs without a trailing slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// AWS IMDS base URL.
    pub aws_imds: String,
    /// `None`: derive from the region (`https://sts.{region}.amazonaws.com`).
    pub aws_sts: Option<String>,
    /// ECS container-credentials host.
    pub ecs_credentials: String,
    /// GCE metadata base URL.
    pub gcp_metadata: String,
    /// GCE metadata base URL used by detection.
    pub gcp_metadata_probe: String,
    /// Google IAM Credentials base URL.
    pub gcp_iamcredentials: String,
    /// Azure IMDS base URL.
    pub azure_imds: String,
    /// Azure AD authority.
    pub azure_authority: String,
    /// Auth service URL template.
    pub auth_server: String,
}

impl Endpoints {
    /// The production defaults with any overrides set in `env`.
    pub fn from_env(env: &Env) -> Self {
        let first = |names: &[&str]| names.iter().find_map(|n| env.get(n)).map(trim_slash);
        let gce_host = env.get("GCE_METADATA_HOST").map(|h| with_scheme(&h));
        let gcp_url = first(&["S2IAM_GCP_METADATA_ENDPOINT"]);
        let gcp_metadata = gcp_url
            .clone()
            .or(gce_host.clone())
            .unwrap_or_else(|| DEFAULT_GCP_METADATA.into());
        let gcp_metadata_probe = gcp_url
            .or(env.get("GCE_METADATA_IP").map(|h| with_scheme(&h)))
            .or(gce_host)
            .unwrap_or_else(|| DEFAULT_GCP_METADATA_IP.into());
        Self {
            aws_imds: first(&["AWS_EC2_METADATA_SERVICE_ENDPOINT"])
                .unwrap_or_else(|| DEFAULT_AWS_IMDS.into()),
            aws_sts: first(&["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]),
            ecs_credentials: first(&["S2IAM_ECS_CREDENTIALS_ENDPOINT"])
                .unwrap_or_else(|| DEFAULT_ECS_CREDENTIALS.into()),
            gcp_metadata,
            gcp_metadata_probe,
            gcp_iamcredentials: first(&["S2IAM_GCP_IAMCREDENTIALS_ENDPOINT"])
                .unwrap_or_else(|| DEFAULT_GCP_IAMCREDENTIALS.into()),
            azure_imds: first(&["S2IAM_AZURE_IMDS_ENDPOINT"])
                .unwrap_or_else(|| DEFAULT_AZURE_IMDS.into()),
            azure_authority: first(&["AZURE_AUTHORITY_HOST"])
                .unwrap_or_else(|| DEFAULT_AZURE_AUTHORITY.into()),
            // The Python reference reads S2IAM_JWT_SERVER_URL, the Go one S2IAM_SERVER_URL.
            auth_server: env
                .get("S2IAM_JWT_SERVER_URL")
                .or_else(|| env.get("S2IAM_SERVER_URL"))
                .unwrap_or_else(|| DEFAULT_AUTH_SERVER.into()),
        }
    }

    /// The STS endpoint for `region`.
    pub fn sts_for(&self, region: Option<&str>) -> String {
        match (&self.aws_sts, region) {
            (Some(url), _) => url.clone(),
            (None, Some(r)) if !r.is_empty() => format!("https://sts.{r}.amazonaws.com"),
            (None, _) => "https://sts.amazonaws.com".into(),
        }
    }

    /// Every endpoint pointed at one mock base URL (`http://127.0.0.1:port`), the
    /// way the test server serves all clouds on one listener.
    pub fn all_at(base: &str) -> Self {
        let base = trim_slash(base.to_string());
        Self {
            aws_imds: base.clone(),
            aws_sts: Some(base.clone()),
            ecs_credentials: base.clone(),
            gcp_metadata: base.clone(),
            gcp_metadata_probe: base.clone(),
            gcp_iamcredentials: base.clone(),
            azure_imds: base.clone(),
            azure_authority: base,
            auth_server: DEFAULT_AUTH_SERVER.into(),
        }
    }
}

fn trim_slash(s: String) -> String {
    s.trim_end_matches('/').to_string()
}

fn with_scheme(host: &str) -> String {
    if host.starts_with("http://") || host.starts_with("https://") {
        trim_slash(host.to_string())
    } else {
        format!("http://{}", host.trim_end_matches('/'))
    }
}

/// Environment variables that point every endpoint at a mock cloud at `base`
/// without triggering fast-path detection (for tests and `s2iam dev`).
pub fn mock_env(base: &str) -> Vec<(String, String)> {
    [
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_ENDPOINT_URL_STS",
        "S2IAM_ECS_CREDENTIALS_ENDPOINT",
        "S2IAM_GCP_METADATA_ENDPOINT",
        "S2IAM_GCP_IAMCREDENTIALS_ENDPOINT",
        "S2IAM_AZURE_IMDS_ENDPOINT",
        "AZURE_AUTHORITY_HOST",
    ]
    .iter()
    .map(|k| (k.to_string(), base.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_real_addresses() {
        let e = Endpoints::from_env(&Env::from_pairs::<&str, &str>([]));
        assert_eq!(e.aws_imds, "http://169.254.169.254");
        assert_eq!(e.gcp_metadata, "http://metadata.google.internal");
        assert_eq!(e.gcp_metadata_probe, "http://169.254.169.254");
        assert_eq!(e.azure_imds, "http://169.254.169.254");
        assert_eq!(
            e.sts_for(Some("eu-west-1")),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(e.sts_for(None), "https://sts.amazonaws.com");
        assert_eq!(e.auth_server, DEFAULT_AUTH_SERVER);
    }

    #[test]
    fn overrides_apply() {
        let e = Endpoints::from_env(&Env::from_pairs([
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9/"),
            ("GCE_METADATA_HOST", "127.0.0.1:8"),
            ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:7"),
        ]));
        assert_eq!(e.aws_imds, "http://127.0.0.1:9");
        assert_eq!(e.gcp_metadata, "http://127.0.0.1:8");
        assert_eq!(e.gcp_metadata_probe, "http://127.0.0.1:8");
        assert_eq!(e.sts_for(Some("x")), "http://127.0.0.1:7");
    }

    #[test]
    fn mock_env_covers_every_metadata_endpoint() {
        let env = Env::from_pairs(mock_env("http://127.0.0.1:1"));
        let e = Endpoints::from_env(&env);
        let mut want = Endpoints::all_at("http://127.0.0.1:1");
        want.auth_server = e.auth_server.clone();
        assert_eq!(e, want);
    }
}
