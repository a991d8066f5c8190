//! Every address s2iam talks to, with its override, in one place. Tests and the
//! `s2iam dev` demo point all of them at a mock on loopback; production uses the
//! defaults.
//!
//! | endpoint | default | override (first set wins) |
//! |---|---|---|
//! | AWS IMDS | `http://169.254.169.254`; `http://[fd00:ec2::254]` with `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6` | `AWS_EC2_METADATA_SERVICE_ENDPOINT` |
//! | AWS STS | `https://sts.{region}.{partition suffix}`, FIPS and dual-stack forms, `https://sts.amazonaws.com` without a region (see [`super::aws_endpoints`]) | `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL` |
//! | AWS S3 (presigned URLs) | `https://s3.{region}.{partition suffix}` and S3's FIPS and dual-stack forms | the sidecar's `s3_endpoint`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` |
//! | ECS container credentials host | `http://169.254.170.2` | `S2IAM_ECS_CREDENTIALS_ENDPOINT` |
//! | GCE metadata | `http://metadata.google.internal` | `S2IAM_GCP_METADATA_ENDPOINT` (URL), `GCE_METADATA_HOST` (`host[:port]`) |
//! | GCE detection probe | `http://169.254.169.254` (no DNS on the hot path) | `S2IAM_GCP_METADATA_ENDPOINT`, `GCE_METADATA_IP`, `GCE_METADATA_HOST` |
//! | Google IAM Credentials | `https://iamcredentials.googleapis.com` | `S2IAM_GCP_IAMCREDENTIALS_ENDPOINT` (a credential file's `service_account_impersonation_url` wins for it) |
//! | Google STS, OAuth token endpoint, credential-source URLs | from the Google credential file (`token_url`, `token_uri`, `credential_source.url`...; `https://oauth2.googleapis.com/token` for an `authorized_user` file without one) | the file itself (see `provider::gcp::adc`) |
//! | Azure IMDS | `http://169.254.169.254` | `S2IAM_AZURE_IMDS_ENDPOINT` |
//! | Azure AD authority | `https://login.microsoftonline.com` | `AZURE_AUTHORITY_HOST` |
//! | Azure App Service identity | — | `IDENTITY_ENDPOINT` (+ `IDENTITY_HEADER`) |
//! | Azure Arc agent | `http://localhost:40342/metadata/identity/oauth2/token` when `/opt/azcmagent/bin/himds` exists | `IDENTITY_ENDPOINT` (+ `IMDS_ENDPOINT`) |
//! | Azure legacy managed identity | — | `MSI_ENDPOINT` (+ `MSI_SECRET`) |
//! | Azure CLI (a command, not an address) | `az` on `PATH` | `S2IAM_AZURE_CLI` |
//! | SingleStore auth service | `https://authsvc.singlestore.com/auth/iam/:jwtType` | `--server-url`, `S2IAM_JWT_SERVER_URL` (Python reference), `S2IAM_SERVER_URL` (Go reference) |
//!
//! `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` makes the AWS SDKs ignore the
//! `AWS_ENDPOINT_URL*` variables, and s2iam with them.
//!
//! The `S2IAM_*` names exist where the ecosystem has no standard variable, and they
//! deliberately do not trigger fast-path detection the way `GCE_METADATA_HOST` does,
//! so tests can point detection at a mock without deciding its outcome.

use super::aws_endpoints::{self, AwsEndpoint, AwsEndpointSettings, EndpointError};
use super::vars::Env;

/// EC2 instance metadata.
pub const DEFAULT_AWS_IMDS: &str = "http://169.254.169.254";
/// EC2 instance metadata over IPv6 (Nitro instances with the IPv6 endpoint enabled).
pub const DEFAULT_AWS_IMDS_IPV6: &str = "http://[fd00:ec2::254]";
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
    /// An explicit STS endpoint; `None`: derive from the region.
    pub aws_sts: Option<String>,
    /// An explicit S3 endpoint (`AWS_ENDPOINT_URL_S3`); `None`: derive from the region.
    pub aws_s3: Option<String>,
    /// FIPS, dual-stack and legacy-STS settings for derived AWS endpoints, or why
    /// they are invalid.
    pub aws_settings: Result<AwsEndpointSettings, EndpointError>,
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
        let ignore_urls = env
            .get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let aws_url = |names: &[&str]| if ignore_urls { None } else { first(names) };
        Self {
            aws_imds: first(&["AWS_EC2_METADATA_SERVICE_ENDPOINT"])
                .unwrap_or_else(|| imds_for_mode(env).into()),
            aws_sts: aws_url(&["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]),
            aws_s3: aws_url(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]),
            aws_settings: AwsEndpointSettings::from_env(env),
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

    /// The STS endpoint for `region` and the region to sign for: the explicit
    /// endpoint if one is set (signed for `region`), else derived from the region
    /// (see [`aws_endpoints::sts`]).
    pub fn sts(&self, region: Option<&str>) -> Result<AwsEndpoint, EndpointError> {
        match &self.aws_sts {
            Some(url) => Ok(explicit(url, region)),
            None => aws_endpoints::sts(region, self.aws_settings.as_ref().map_err(Clone::clone)?),
        }
    }

    /// The S3 endpoint for `region` (presigned URLs): the explicit one if set, else
    /// derived from the region (see [`aws_endpoints::s3`]).
    pub fn s3(&self, region: &str) -> Result<AwsEndpoint, EndpointError> {
        match &self.aws_s3 {
            Some(url) => Ok(explicit(url, Some(region))),
            None => aws_endpoints::s3(region, self.aws_settings.as_ref().map_err(Clone::clone)?),
        }
    }

    /// Every endpoint pointed at one mock base URL (`http://127.0.0.1:port`), the
    /// way the test server serves all clouds on one listener.
    pub fn all_at(base: &str) -> Self {
        let base = trim_slash(base.to_string());
        Self {
            aws_imds: base.clone(),
            aws_sts: Some(base.clone()),
            aws_s3: None,
            aws_settings: Ok(AwsEndpointSettings::default()),
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

/// An explicit endpoint, signed for `region` (as the SDKs sign requests to a custom
/// endpoint for the configured region), `us-east-1` without one.
fn explicit(url: &str, region: Option<&str>) -> AwsEndpoint {
    AwsEndpoint {
        url: url.to_string(),
        signing_region: region
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .unwrap_or(aws_endpoints::GLOBAL_STS_SIGNING_REGION)
            .to_string(),
        partition: None,
    }
}

/// `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`: `IPv4` (default) or `IPv6`, any case.
/// Another value is a mistake the SDKs refuse; s2iam warns and uses IPv4.
fn imds_for_mode(env: &Env) -> &'static str {
    match env
        .get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
        .map(|m| m.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("ipv6") => DEFAULT_AWS_IMDS_IPV6,
        None | Some("") | Some("ipv4") => DEFAULT_AWS_IMDS,
        Some(other) => {
            tracing::warn!(
                value = %other.chars().take(20).collect::<String>(),
                "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE is neither IPv4 nor IPv6; using IPv4"
            );
            DEFAULT_AWS_IMDS
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
/// without triggering fast-path detection (for tests and `s2iam dev`). The Azure CLI
/// is turned off (`S2IAM_AZURE_CLI=off`): a developer's own `az` login must not
/// answer for a mock cloud that has no identity.
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
    .chain([("S2IAM_AZURE_CLI".to_string(), "off".to_string())])
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
            e.sts(Some("eu-west-1")).unwrap().url,
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(e.sts(None).unwrap().url, "https://sts.amazonaws.com");
        assert_eq!(
            e.s3("cn-north-1").unwrap().url,
            "https://s3.cn-north-1.amazonaws.com.cn"
        );
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
        let sts = e.sts(Some("eu-west-1")).unwrap();
        assert_eq!(sts.url, "http://127.0.0.1:7");
        assert_eq!(sts.signing_region, "eu-west-1");
        assert_eq!(sts.partition, None);
    }

    #[test]
    fn explicit_aws_endpoints_win_over_derived_ones() {
        let env = |pairs: &[(&str, &str)]| Endpoints::from_env(&Env::from_pairs(pairs.to_vec()));
        let fips = ("AWS_USE_FIPS_ENDPOINT", "true");
        let e = env(&[fips]);
        assert_eq!(
            e.sts(Some("us-west-2")).unwrap().url,
            "https://sts-fips.us-west-2.amazonaws.com"
        );
        // The specific variable beats the generic one; both beat FIPS.
        let e = env(&[
            fips,
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:2"),
        ]);
        assert_eq!(e.sts(Some("us-west-2")).unwrap().url, "http://127.0.0.1:2");
        assert_eq!(e.s3("us-west-2").unwrap().url, "http://127.0.0.1:1");
        // ... unless the SDKs are told to ignore configured endpoint URLs.
        let e = env(&[
            ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:2"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ]);
        assert_eq!(
            e.sts(Some("cn-north-1")).unwrap().url,
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        // A bad setting is reported when an endpoint is derived, not ignored.
        let e = env(&[("AWS_USE_DUALSTACK_ENDPOINT", "maybe")]);
        assert!(e.sts(Some("us-east-1")).is_err());
        assert!(e.s3("us-east-1").is_err());
    }

    #[test]
    fn imds_endpoint_mode() {
        let imds =
            |pairs: &[(&str, &str)]| Endpoints::from_env(&Env::from_pairs(pairs.to_vec())).aws_imds;
        let mode = "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE";
        assert_eq!(imds(&[]), "http://169.254.169.254");
        assert_eq!(imds(&[(mode, "IPv6")]), "http://[fd00:ec2::254]");
        assert_eq!(imds(&[(mode, "ipv6")]), "http://[fd00:ec2::254]");
        assert_eq!(imds(&[(mode, "IPv4")]), "http://169.254.169.254");
        assert_eq!(imds(&[(mode, "IPv5")]), "http://169.254.169.254");
        // The explicit endpoint wins over the mode.
        assert_eq!(
            imds(&[
                (mode, "IPv6"),
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://[::1]:8080/")
            ]),
            "http://[::1]:8080"
        );
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
