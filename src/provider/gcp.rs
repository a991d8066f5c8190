//! Gcp identity (being written).

use super::{
    CloudIdentity, IdentityHeaders, IdentityRequest, ProbeError, ProviderConfig, ProviderError,
};

/// The Gcp provider.
#[derive(Debug, Clone, Default)]
pub struct GcpProvider {}

impl GcpProvider {
    /// Evidence of Gcp in the environment alone (no I/O), e.g. `"AWS_REGION is set"`.
    pub fn fast_detect(_cfg: &ProviderConfig) -> Option<String> {
        None
    }

    /// Probes the metadata service. Must be cancel-safe: detection drops it when
    /// another cloud wins or the overall timeout passes.
    pub async fn probe(_cfg: &ProviderConfig) -> Result<(), ProbeError> {
        Err(ProbeError::NotThisCloud("not implemented".into()))
    }

    pub fn assume_role(&self, _role: &str) -> Result<Self, ProviderError> {
        Ok(self.clone())
    }

    pub async fn identity(
        &self,
        _cfg: &ProviderConfig,
        _req: &IdentityRequest,
    ) -> Result<(IdentityHeaders, CloudIdentity), ProviderError> {
        unimplemented!()
    }
}
