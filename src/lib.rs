//! s2iam: turn a workload's cloud identity into SingleStore JWTs, with no keys in
//! config.
//!
//! The flow, one module per step: [`provider::detect`] finds the cloud,
//! [`provider`] gets the workload's identity headers there, and the exchange turns
//! them into a JWT.

pub mod endpoints;
pub mod provider;
pub mod secret;

pub use provider::detect::{detect_provider, DetectError, DetectOptions, Detection};
pub use provider::{
    CloudIdentity, CloudProvider, IdentityHeaders, IdentityRequest, Provider, ProviderConfig,
    ProviderError,
};
pub use secret::Secret;
