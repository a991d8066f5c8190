//! Azure: detection and managed-identity access tokens.
//!
//! Detection:
//! - fast path (no network), as the reference client: `AZURE_FEDERATED_TOKEN_FILE`
//!   naming an existing file, `AZURE_CLIENT_ID` (with or without `AZURE_TENANT_ID`),
//!   `AZURE_ENV`, `MSI_ENDPOINT` or `IDENTITY_ENDPOINT` set; beyond the reference, the
//!   Azure Arc agent installed (`/opt/azcmagent/bin/himds`). The evidence names the
//!   credential source the environment selects;
//! - probe: `GET {imds}/metadata/instance?api-version=2021-02-01` with `Metadata: true`;
//!   positive on 200 with a JSON `compute` object;
//! - last resort ([`AzureProvider::fallback_detect`], after every cloud's probe
//!   failed): the Azure CLI installed.
//!
//! Identity: an access token for `IdentityRequest::azure_resource`, from the first
//! source the environment offers, in azure-identity's `DefaultAzureCredential`
//! order (`chain.rs` has the rules and their test):
//! 1. AKS workload identity (`workload.rs`);
//! 2. App Service / Container Apps (`app_service.rs`): `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`;
//! 3. Azure Arc (`arc.rs`): `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`, the 401 challenge
//!    and its key file;
//! 4. the legacy `MSI_ENDPOINT` (`msi.rs`): Azure ML, older App Service (`MSI_SECRET`),
//!    Cloud Shell;
//! 5. IMDS (`imds.rs`), plus its instance metadata for subscription, resource group
//!    and region;
//! 6. the Azure CLI's login (`az_cli.rs`), when there is no IMDS.
//!
//! `identity_source` in the identity's additional claims names the source used.
//!
//! Headers, as the reference Python client sends them: `X-Cloud-Provider: azure`,
//! `Authorization: Bearer <access token>`, and `X-Azure-Subscription-ID` /
//! `X-Azure-Resource-Group` when known.
//!
//! Retries of token requests follow [`RetryPolicy`]; by default the reference's
//! `S2IAM_AZURE_MI_RETRIES` (attempts, default 6) and `S2IAM_AZURE_MI_BACKOFF_MS`
//! (base backoff, default 50 ms) apply.

mod app_service;
mod arc;
mod az_cli;
mod chain;
mod imds;
mod msi;
mod token;
mod workload;

/// The Azure parsers of IMDS, App Service, Arc, MSI and Azure AD answers, for the fuzz
/// targets (`crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_responses(body: &str) {
    let _ = token::access_token(body, 0);
    let _ = az_cli::parse(body.as_bytes());
    let _ = arc::realm_path(body);
    let compute = imds::parse_compute(body).unwrap_or_default();
    for origin in [
        token::Origin::Imds,
        token::Origin::AppService,
        token::Origin::WorkloadIdentity,
        token::Origin::Arc,
    ] {
        let _ = token::identity_from_token(body, &compute, origin);
    }
}

use std::path::Path;
use std::time::Duration;

use super::{
    CloudIdentity, CloudProvider, IdentityHeaders, IdentityRequest, ProbeError, ProviderError,
};
use crate::env::ProviderConfig;
use crate::http::RetryPolicy;
use token::{Compute, Origin};

/// Per-attempt timeout of the detection probe (the reference's 1 s).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probe attempts; only 429, 5xx and dropped connections are retried (nothing
/// listening, or nothing answering, is a clear "not here").
const PROBE_ATTEMPTS: u32 = 3;

/// The default token retry policy (the reference's 6 attempts from 50 ms), with a
/// budget that leaves room for one late retry after IMDS's 410 "being updated".
pub const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 6,
    base_delay: Duration::from_millis(50),
    max_delay: Duration::from_millis(1600),
    budget: Duration::from_secs(30),
};

/// The Azure provider: the system-assigned managed identity, or the user-assigned
/// one with `client_id`.
#[derive(Debug, Clone, Default)]
pub struct AzureProvider {
    client_id: Option<String>,
    retry: Option<RetryPolicy>,
}

impl AzureProvider {
    /// Evidence of Azure in the environment alone (no network), naming the
    /// credential source it selects.
    pub fn fast_detect(cfg: &ProviderConfig) -> Option<String> {
        Self::fast_evidence(cfg).map(|evidence| {
            let source = chain::Chosen::from_env(cfg, None);
            format!("{evidence}; credential source: {}", source.describe())
        })
    }

    fn fast_evidence(cfg: &ProviderConfig) -> Option<String> {
        if let Some(path) = cfg.env.get("AZURE_FEDERATED_TOKEN_FILE") {
            if cfg.fs.exists(Path::new(&path)) {
                return Some(format!("AZURE_FEDERATED_TOKEN_FILE names a file ({path})"));
            }
        }
        if cfg.env.is_set("AZURE_CLIENT_ID") && cfg.env.is_set("AZURE_TENANT_ID") {
            return Some("AZURE_CLIENT_ID and AZURE_TENANT_ID are set".into());
        }
        if cfg.env.is_set("IDENTITY_ENDPOINT") && cfg.env.is_set("IMDS_ENDPOINT") {
            return Some("IDENTITY_ENDPOINT and IMDS_ENDPOINT are set".into());
        }
        let found = [
            "AZURE_ENV",
            "AZURE_CLIENT_ID",
            "MSI_ENDPOINT",
            "IDENTITY_ENDPOINT",
        ]
        .into_iter()
        .find(|v| cfg.env.is_set(v))
        .map(|v| format!("{v} is set"));
        found.or_else(|| {
            cfg.fs
                .exists(Path::new(arc::HIMDS_BINARY))
                .then(|| format!("the Azure Arc agent is installed ({})", arc::HIMDS_BINARY))
        })
    }

    /// The last resort of detection, after every metadata service failed to
    /// answer: a developer machine with the Azure CLI, whose login is then the
    /// identity (as `DefaultAzureCredential` ends with `AzureCliCredential`). No
    /// process is run here; `S2IAM_AZURE_CLI=off` turns it off.
    pub fn fallback_detect(cfg: &ProviderConfig) -> Option<String> {
        az_cli::AzureCli::from_env(cfg).map(|cli| {
            format!(
                "no metadata service answered and the Azure CLI is installed ({});                  credential source: {}",
                cli.program.display(),
                Origin::AzureCli.describe()
            )
        })
    }

    /// Probes IMDS. Cancel-safe: requests and sleeps only.
    pub async fn probe(cfg: &ProviderConfig) -> Result<(), ProbeError> {
        let url = format!("{}{}", cfg.endpoints.azure_imds, imds::INSTANCE_PATH);
        let mut attempt = 1;
        loop {
            let last = match imds::instance(cfg, PROBE_TIMEOUT).await {
                Ok(reply) if reply.status == 429 || reply.status >= 500 => ProbeError::Status {
                    url: crate::http::display_url(&url),
                    status: reply.status,
                },
                Ok(reply) => return imds::check_probe_reply(&url, &reply),
                Err(e @ crate::http::TransportError::Other { .. }) => e.into(),
                Err(e) => return Err(e.into()),
            };
            if attempt >= PROBE_ATTEMPTS {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(
                50u64.saturating_mul(u64::from(attempt)),
            ))
            .await;
            attempt = attempt.saturating_add(1);
        }
    }

    /// A provider using the user-assigned managed identity with this client id (a
    /// GUID). The reference detector refuses assume-role on Azure, but its CLI
    /// documents user-assigned identity selection; this is that.
    pub fn assume_role(&self, client_id: &str) -> Result<Self, ProviderError> {
        let client_id = client_id.trim();
        if !is_guid(client_id) {
            return Err(ProviderError::InvalidRole {
                provider: CloudProvider::Azure,
                role: client_id.to_string(),
                reason: "expected the client id (a GUID such as \
                         0d3c6a77-0000-4000-8000-00000000c1d2) of a user-assigned managed identity"
                    .into(),
            });
        }
        Ok(Self {
            client_id: Some(client_id.to_string()),
            ..self.clone()
        })
    }

    /// The user-assigned identity selected by [`AzureProvider::assume_role`], if any.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The same provider with another retry policy for token requests.
    pub fn with_retry_policy(&self, policy: RetryPolicy) -> Self {
        Self {
            retry: Some(policy),
            ..self.clone()
        }
    }

    /// The identity headers for `req.azure_resource`, and who they name.
    pub async fn identity(
        &self,
        cfg: &ProviderConfig,
        req: &IdentityRequest,
    ) -> Result<(IdentityHeaders, CloudIdentity), ProviderError> {
        let policy = self.retry.unwrap_or_else(|| policy_from_env(cfg));
        let resource = req.azure_resource.as_str();
        let client_id = self.client_id.as_deref();
        let chosen = chain::Chosen::from_env(cfg, client_id);
        let (token, compute, origin) = match chosen {
            chain::Chosen::Workload(wi) => {
                let token = wi.token(cfg, &policy, resource).await?;
                (token, Compute::default(), Origin::WorkloadIdentity)
            }
            chain::Chosen::AppService(app) => {
                let token = app.token(cfg, &policy, resource, client_id).await?;
                (token, Compute::default(), Origin::AppService)
            }
            chain::Chosen::Arc(arc) => {
                let token = arc.token(cfg, &policy, resource, client_id).await?;
                (token, Compute::default(), Origin::Arc)
            }
            chain::Chosen::Msi(msi) => {
                let token = msi.token(cfg, &policy, resource, client_id).await?;
                (token, Compute::default(), msi.origin())
            }
            chain::Chosen::ImdsOrCli(Some(cli)) if !chain::Chosen::imds_answers(cfg).await => {
                if client_id.is_some() {
                    return Err(ProviderError::AssumeRoleNotSupported {
                        provider: CloudProvider::Azure,
                        hint: ": the Azure CLI's login is one identity; choose another with `az login`"
                            .into(),
                    });
                }
                let (token, subscription) = cli.token(resource).await?;
                let compute = Compute {
                    subscription_id: subscription,
                    ..Compute::default()
                };
                (token, compute, Origin::AzureCli)
            }
            chain::Chosen::ImdsOrCli(_) => {
                let (token, compute) = tokio::join!(
                    imds::token(cfg, &policy, resource, client_id),
                    imds::compute(cfg)
                );
                (token?, compute, Origin::Imds)
            }
        };
        tracing::debug!(
            source = origin.as_str(),
            expires_on = token.expires_on,
            "Azure access token obtained"
        );
        token.check_fresh(cfg.clock.now(), origin.describe())?;
        let identity = token::identity_from_token(token.token.expose(), &compute, origin)?;
        Ok((headers(token.token.expose(), &compute), identity))
    }
}

fn headers(access_token: &str, compute: &Compute) -> IdentityHeaders {
    let mut h = IdentityHeaders::default();
    h.push("X-Cloud-Provider", "azure");
    h.push("Authorization", format!("Bearer {access_token}"));
    if let Some(sub) = &compute.subscription_id {
        h.push("X-Azure-Subscription-ID", sub.as_str());
    }
    if let Some(rg) = &compute.resource_group {
        h.push("X-Azure-Resource-Group", rg.as_str());
    }
    h
}

/// The reference client's knobs: `S2IAM_AZURE_MI_RETRIES` (1–20) and
/// `S2IAM_AZURE_MI_BACKOFF_MS` (1–5000); unparsable values keep the defaults.
fn policy_from_env(cfg: &ProviderConfig) -> RetryPolicy {
    let num = |name: &str| cfg.env.get(name).and_then(|v| v.trim().parse::<u64>().ok());
    let mut p = DEFAULT_RETRY;
    if let Some(n) = num("S2IAM_AZURE_MI_RETRIES") {
        p.max_attempts = n.clamp(1, 20) as u32;
    }
    if let Some(ms) = num("S2IAM_AZURE_MI_BACKOFF_MS") {
        p.base_delay = Duration::from_millis(ms.clamp(1, 5000));
        p.max_delay = p.max_delay.max(p.base_delay);
    }
    p
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits.
fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn bad_endpoint(variable: &str, e: url::ParseError) -> ProviderError {
    ProviderError::Upstream {
        provider: CloudProvider::Azure,
        what: "token endpoint".into(),
        reason: format!("{variable} is not a URL: {e}"),
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
    fn fast_detect_follows_the_reference() {
        assert!(AzureProvider::fast_detect(&cfg(&[], &[])).is_none());
        let file = [("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token")];
        assert!(AzureProvider::fast_detect(&cfg(&file, &[("/var/run/token", "t")])).is_some());
        assert!(AzureProvider::fast_detect(&cfg(&file, &[])).is_none());
        for var in [
            "AZURE_ENV",
            "AZURE_CLIENT_ID",
            "MSI_ENDPOINT",
            "IDENTITY_ENDPOINT",
        ] {
            let e = AzureProvider::fast_detect(&cfg(&[(var, "x")], &[])).unwrap();
            assert!(e.contains(var), "{e}");
        }
        let e = AzureProvider::fast_detect(&cfg(
            &[("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t")],
            &[],
        ))
        .unwrap();
        assert!(e.contains("AZURE_TENANT_ID"));
        assert!(AzureProvider::fast_detect(&cfg(&[("AZURE_TENANT_ID", "t")], &[])).is_none());
    }

    #[test]
    fn assume_role_takes_a_guid_and_returns_a_new_provider() {
        let p = AzureProvider::default();
        let q = p
            .assume_role(" 0D3C6A77-0000-4000-8000-00000000c1d2 ")
            .unwrap();
        assert_eq!(q.client_id(), Some("0D3C6A77-0000-4000-8000-00000000c1d2"));
        assert!(p.client_id().is_none());
        for bad in [
            "",
            "not-a-guid",
            "0d3c6a77-0000-4000-8000-00000000c1d",
            "0d3c6a77-0000-4000-8000-00000000c1dz",
            "0d3c6a77000040008000000000000c1d2",
            "0d3c6a77-0000-4000-8000-00000000c1d2&resource=x",
        ] {
            assert!(
                matches!(p.assume_role(bad), Err(ProviderError::InvalidRole { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn retry_knobs_come_from_the_reference_variables() {
        assert_eq!(policy_from_env(&cfg(&[], &[])), DEFAULT_RETRY);
        let p = policy_from_env(&cfg(
            &[
                ("S2IAM_AZURE_MI_RETRIES", "99"),
                ("S2IAM_AZURE_MI_BACKOFF_MS", "2"),
            ],
            &[],
        ));
        assert_eq!(
            (p.max_attempts, p.base_delay),
            (20, Duration::from_millis(2))
        );
        let p = policy_from_env(&cfg(&[("S2IAM_AZURE_MI_RETRIES", "many")], &[]));
        assert_eq!(p, DEFAULT_RETRY);
    }

    #[test]
    fn headers_omit_unknown_subscription_and_group() {
        let h = headers("tok", &Compute::default());
        let names: Vec<_> = h.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["X-Cloud-Provider", "Authorization"]);
        let h = headers(
            "tok",
            &Compute {
                subscription_id: Some("s".into()),
                resource_group: Some("rg".into()),
                location: None,
            },
        );
        assert_eq!(h.get("x-azure-subscription-id").unwrap().expose(), "s");
        assert_eq!(h.get("X-Azure-Resource-Group").unwrap().expose(), "rg");
        assert_eq!(h.get("Authorization").unwrap().expose(), "Bearer tok");
    }
}
