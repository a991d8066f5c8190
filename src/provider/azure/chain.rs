//! Which Azure credential source a process uses, in the order azure-identity's
//! `DefaultAzureCredential` tries them (its `EnvironmentCredential`, a client
//! secret in the environment, is deliberately not supported: no keys in config):
//!
//! 1. AKS workload identity: `AZURE_FEDERATED_TOKEN_FILE` + `AZURE_CLIENT_ID` +
//!    `AZURE_TENANT_ID` ([`super::workload`]);
//! 2. managed identity, chosen from the environment as `ManagedIdentityCredential`
//!    chooses:
//!    - App Service / Container Apps: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`
//!      ([`super::app_service`]);
//!    - Azure Arc: `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`, or the agent installed at
//!      `/opt/azcmagent/bin/himds` ([`super::arc`]);
//!    - `MSI_ENDPOINT` (+ `MSI_SECRET`): Azure ML, older App Service, Cloud Shell
//!      ([`super::msi`]);
//!    - else IMDS ([`super::imds`]);
//! 3. the Azure CLI's login ([`super::az_cli`]), only when IMDS does not answer a
//!    quick probe (as `DefaultAzureCredential` probes IMDS before falling through).
//!
//! Nothing here does I/O except [`Chosen::resolve_imds_or_cli`], which probes IMDS.

use super::app_service::AppService;
use super::arc::Arc;
use super::az_cli::AzureCli;
use super::msi::Msi;
use super::token::Origin;
use super::workload::WorkloadIdentity;
use super::AzureProvider;
use crate::env::ProviderConfig;
use crate::provider::ProbeError;

/// The source the environment selects.
#[derive(Debug, Clone)]
pub(super) enum Chosen {
    Workload(WorkloadIdentity),
    AppService(AppService),
    Arc(Arc),
    Msi(Msi),
    /// IMDS, or the Azure CLI when IMDS is not there and the CLI is.
    ImdsOrCli(Option<AzureCli>),
}

impl Chosen {
    /// The first source the environment offers; `client_id` (from assume-role)
    /// overrides `AZURE_CLIENT_ID` for workload identity.
    pub fn from_env(cfg: &ProviderConfig, client_id: Option<&str>) -> Self {
        if let Some(wi) = WorkloadIdentity::from_env(cfg, client_id) {
            return Chosen::Workload(wi);
        }
        if let Some(app) = AppService::from_env(cfg) {
            return Chosen::AppService(app);
        }
        if let Some(arc) = Arc::from_env(cfg) {
            return Chosen::Arc(arc);
        }
        if let Some(msi) = Msi::from_env(cfg) {
            return Chosen::Msi(msi);
        }
        Chosen::ImdsOrCli(AzureCli::from_env(cfg))
    }

    /// The source's label, without deciding between IMDS and the CLI.
    pub fn origin(&self) -> Origin {
        match self {
            Chosen::Workload(_) => Origin::WorkloadIdentity,
            Chosen::AppService(_) => Origin::AppService,
            Chosen::Arc(_) => Origin::Arc,
            Chosen::Msi(m) => m.origin(),
            Chosen::ImdsOrCli(_) => Origin::Imds,
        }
    }

    /// The source as a person names it, for detection's evidence.
    pub fn describe(&self) -> String {
        match self {
            Chosen::ImdsOrCli(Some(_)) => format!(
                "{}, else {}",
                Origin::Imds.describe(),
                Origin::AzureCli.describe()
            ),
            other => other.origin().describe().to_string(),
        }
    }

    /// Whether this is an Azure VM (one quick probe of IMDS), when the CLI is the
    /// alternative. IMDS throttling (429) or failing (5xx) still means a VM: its
    /// managed identity is the one to use, and a flaky IMDS must not silently turn
    /// the workload into the developer's `az login`.
    pub async fn imds_answers(cfg: &ProviderConfig) -> bool {
        match AzureProvider::probe(cfg).await {
            Ok(()) => true,
            Err(ProbeError::Status { status, .. }) if status == 429 || status >= 500 => true,
            Err(e) => {
                tracing::debug!(error = %e, "no Azure IMDS here: using the Azure CLI's login");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, Fs};

    fn origin(env: &[(&str, &str)], files: &[&str]) -> Origin {
        let cfg = ProviderConfig::with_env(
            Env::from_pairs(env.iter().copied()),
            Fs::from_files(files.iter().map(|f| (*f, "t"))),
        );
        Chosen::from_env(&cfg, None).origin()
    }

    /// The order of `DefaultAzureCredential` / `ManagedIdentityCredential`.
    #[test]
    fn precedence_follows_azure_identity() {
        let wi = [
            ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_TENANT_ID", "t"),
        ];
        let app = [("IDENTITY_ENDPOINT", "http://a"), ("IDENTITY_HEADER", "h")];
        let arc = [
            ("IDENTITY_ENDPOINT", "http://a"),
            ("IMDS_ENDPOINT", "http://i"),
        ];
        let msi = [("MSI_ENDPOINT", "http://m"), ("MSI_SECRET", "s")];
        let all: Vec<_> = wi
            .iter()
            .chain(&app)
            .chain(&arc[1..])
            .chain(&msi)
            .copied()
            .collect();
        assert_eq!(origin(&all, &[]), Origin::WorkloadIdentity);
        let no_wi: Vec<_> = app.iter().chain(&arc[1..]).chain(&msi).copied().collect();
        assert_eq!(
            origin(&no_wi, &[]),
            Origin::AppService,
            "App Service before Arc"
        );
        let arc_msi: Vec<_> = arc.iter().chain(&msi).copied().collect();
        assert_eq!(
            origin(&arc_msi, &[]),
            Origin::Arc,
            "Arc before MSI_ENDPOINT"
        );
        assert_eq!(origin(&msi, &[]), Origin::MsiEndpoint);
        assert_eq!(origin(&msi[..1], &[]), Origin::CloudShell);
        assert_eq!(origin(&[], &[super::super::arc::HIMDS_BINARY]), Origin::Arc);
        // IDENTITY_ENDPOINT alone is neither App Service nor Arc.
        assert_eq!(origin(&arc[..1], &[]), Origin::Imds);
        assert_eq!(origin(&[], &[]), Origin::Imds);
        // The token file named but missing: workload identity still selected (its
        // error names the file), as azure-identity does.
        assert_eq!(origin(&wi, &[]), Origin::WorkloadIdentity);
    }
}
