//! Which cloud am I on, and who am I there.
//!
//! Each cloud is a small type in its own module ([`aws`], [`gcp`], [`azure`]) with the
//! same four operations: a fast, I/O-free detection from the environment
//! (`fast_detect`), a network probe of its metadata service (`probe`), an
//! identity for an alternate role (`assume_role`, returning a new value) and the
//! identity headers the auth service verifies (`identity`). [`Provider`] is the
//! closed set of them; [`detect::detect_provider`] picks one.

pub mod aws;
pub mod azure;
pub mod detect;
pub mod gcp;
pub(crate) mod jwt;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::env::ProviderConfig;
use crate::secret::Secret;

/// A cloud s2iam knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudProvider {
    /// Amazon Web Services.
    Aws,
    /// Google Cloud.
    Gcp,
    /// Microsoft Azure.
    Azure,
}

impl CloudProvider {
    /// Every cloud, in detection's reporting order.
    pub const ALL: [CloudProvider; 3] =
        [CloudProvider::Aws, CloudProvider::Gcp, CloudProvider::Azure];

    /// `aws`, `gcp` or `azure`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudProvider::Aws => "aws",
            CloudProvider::Gcp => "gcp",
            CloudProvider::Azure => "azure",
        }
    }
}

impl fmt::Display for CloudProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown provider name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown cloud provider {0:?}: expected aws, gcp or azure")]
pub struct UnknownProvider(pub String);

impl FromStr for CloudProvider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "aws" => Ok(CloudProvider::Aws),
            "gcp" | "google" => Ok(CloudProvider::Gcp),
            "azure" => Ok(CloudProvider::Azure),
            _ => Err(UnknownProvider(s.to_string())),
        }
    }
}

/// Who the workload is, as far as the client can tell. The auth service derives
/// the authoritative identity itself from the headers; this is for display, logs and
/// the request body the reference clients send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudIdentity {
    /// The cloud.
    pub provider: CloudProvider,
    /// AWS caller ARN, GCP service-account email (or numeric id), Azure object id.
    pub identifier: String,
    /// AWS account, GCP project, Azure subscription.
    pub account_id: String,
    /// Where the workload runs, when known.
    pub region: String,
    /// What kind of principal (role, service account, managed identity).
    pub resource_type: String,
    #[serde(default)]
    /// Whatever else the provider reports (for display).
    pub additional_claims: BTreeMap<String, String>,
    /// Where the workload's credentials came from, in words (e.g. "shared config
    /// profile `dev` (...)"), for `s2iam identity`; never sent to the auth service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_source: Option<String>,
}

/// HTTP headers that prove the identity to the auth service. Values are secrets;
/// `Debug` shows header names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdentityHeaders(pub Vec<(String, Secret)>);

impl IdentityHeaders {
    /// Adds a header.
    pub fn push(&mut self, name: &str, value: impl Into<Secret>) {
        self.0.push((name.to_string(), value.into()));
    }

    /// The first header called `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every header, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }
}

impl fmt::Debug for IdentityHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| format!("{n}: <redacted>")))
            .finish()
    }
}

/// Default audience of GCP ID tokens (the reference clients' default).
pub const DEFAULT_GCP_AUDIENCE: &str = "https://authsvc.singlestore.com";
/// Default resource of Azure managed-identity tokens.
pub const DEFAULT_AZURE_RESOURCE: &str = "https://management.azure.com/";
/// Default AWS `RoleSessionName` for assume-role.
pub const DEFAULT_ROLE_SESSION_NAME: &str = "s2iam-session";

/// Per-call parameters of an identity request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityRequest {
    /// The audience of the GCP ID token.
    pub gcp_audience: String,
    /// The resource of the Azure access token.
    pub azure_resource: String,
    /// The session name when an AWS role is assumed.
    pub role_session_name: String,
}

impl Default for IdentityRequest {
    fn default() -> Self {
        Self {
            gcp_audience: DEFAULT_GCP_AUDIENCE.into(),
            azure_resource: DEFAULT_AZURE_RESOURCE.into(),
            role_session_name: DEFAULT_ROLE_SESSION_NAME.into(),
        }
    }
}

/// Why one cloud's network probe said "not here".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("connection refused by {url}")]
    /// Nothing listens there: not this cloud.
    Refused {
        /// The address, without its query string.
        url: String,
    },
    #[error("no answer from {url} within {timeout_ms} ms")]
    /// No answer in time.
    Timeout {
        /// The address, without its query string.
        url: String,
        /// The deadline, in milliseconds.
        timeout_ms: u64,
    },
    #[error("{url} answered HTTP {status}")]
    /// An answer, but not this cloud's.
    Status {
        /// The address, without its query string.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    #[error("cannot reach {url}: {reason}")]
    /// The address cannot be reached.
    Unreachable {
        /// The address, without its query string.
        url: String,
        /// What went wrong.
        reason: String,
    },
    #[error("{0}")]
    /// Something answered, but it is not this cloud's metadata service.
    NotThisCloud(String),
}

/// Errors of identity operations. Messages never contain credential values.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider}: provider not detected; run detection (or choose the provider explicitly) first")]
    /// The provider's probe failed.
    NotDetected {
        /// The cloud.
        provider: CloudProvider,
    },
    #[error("{provider} detected, but no identity is available: {reason}")]
    /// The cloud gave no identity.
    NoIdentity {
        /// The cloud.
        provider: CloudProvider,
        /// What went wrong.
        reason: String,
    },
    #[error("{provider} does not support assume-role{hint}")]
    /// This provider cannot assume the role asked for.
    AssumeRoleNotSupported {
        /// The cloud.
        provider: CloudProvider,
        /// What usually causes this status.
        hint: String,
    },
    #[error("{provider}: invalid role identifier {role:?}: {reason}")]
    /// The role is not one this provider can assume.
    InvalidRole {
        /// The cloud.
        provider: CloudProvider,
        /// The role asked for.
        role: String,
        /// What went wrong.
        reason: String,
    },
    #[error("{provider}: {what} failed: {reason}")]
    /// A cloud service refused or failed.
    Upstream {
        /// The cloud.
        provider: CloudProvider,
        /// What was being fetched.
        what: String,
        /// What went wrong.
        reason: String,
    },
}

/// A detected cloud, ready to produce identity headers.
#[derive(Debug, Clone)]
pub enum Provider {
    /// AWS.
    Aws(aws::AwsProvider),
    /// GCP.
    Gcp(gcp::GcpProvider),
    /// Azure.
    Azure(azure::AzureProvider),
}

impl Provider {
    /// The provider for `kind` without detection (an explicit `--provider`).
    pub fn for_kind(kind: CloudProvider) -> Self {
        match kind {
            CloudProvider::Aws => Provider::Aws(aws::AwsProvider::default()),
            CloudProvider::Gcp => Provider::Gcp(gcp::GcpProvider::default()),
            CloudProvider::Azure => Provider::Azure(azure::AzureProvider::default()),
        }
    }

    /// Which cloud.
    pub fn kind(&self) -> CloudProvider {
        match self {
            Provider::Aws(_) => CloudProvider::Aws,
            Provider::Gcp(_) => CloudProvider::Gcp,
            Provider::Azure(_) => CloudProvider::Azure,
        }
    }

    /// A provider acting as `role` (AWS role ARN, GCP service-account email, Azure
    /// user-assigned identity client id). The detected provider is left untouched.
    pub fn assume_role(&self, role: &str) -> Result<Provider, ProviderError> {
        Ok(match self {
            Provider::Aws(p) => Provider::Aws(p.assume_role(role)?),
            Provider::Gcp(p) => Provider::Gcp(p.assume_role(role)?),
            Provider::Azure(p) => Provider::Azure(p.assume_role(role)?),
        })
    }

    /// Which credential source the provider would use, from the environment and
    /// local files alone (no network): what `s2iam detect` prints. `None` when
    /// the provider has only one source.
    pub fn credential_source_plan(&self, cfg: &ProviderConfig) -> Option<String> {
        match self {
            Provider::Aws(_) => Some(aws::chain::plan(cfg)),
            Provider::Gcp(_) | Provider::Azure(_) => None,
        }
    }

    /// The headers the auth service verifies, and the identity they prove.
    pub async fn identity(
        &self,
        cfg: &ProviderConfig,
        req: &IdentityRequest,
    ) -> Result<(IdentityHeaders, CloudIdentity), ProviderError> {
        match self {
            Provider::Aws(p) => p.identity(cfg, req).await,
            Provider::Gcp(p) => p.identity(cfg, req).await,
            Provider::Azure(p) => p.identity(cfg, req).await,
        }
    }
}

impl From<crate::http::TransportError> for ProbeError {
    /// A transport failure during a probe: refused and timed out mean no such
    /// service here; a body too large means something else answers.
    fn from(e: crate::http::TransportError) -> Self {
        use crate::http::TransportError as T;
        match e {
            T::Timeout { url, timeout_ms } => ProbeError::Timeout { url, timeout_ms },
            T::Refused { url } => ProbeError::Refused { url },
            T::Other { url, reason } => ProbeError::Unreachable { url, reason },
            e @ T::TooLarge { .. } => ProbeError::NotThisCloud(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_round_trip() {
        for p in CloudProvider::ALL {
            assert_eq!(p.as_str().parse::<CloudProvider>().unwrap(), p);
        }
        assert!("moon".parse::<CloudProvider>().is_err());
    }

    #[test]
    fn headers_debug_hides_values() {
        let mut h = IdentityHeaders::default();
        h.push("Authorization", "Bearer secret-token");
        let s = format!("{h:?}");
        assert!(s.contains("Authorization"));
        assert!(!s.contains("secret-token"));
    }
}
