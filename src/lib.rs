//! s2iam: turn a workload's cloud identity into SingleStore JWTs, with no keys in
//! config.
//!
//! The flow, one module per step: [`provider::detect`] finds the cloud,
//! [`provider`] gets the workload's identity headers there, and the exchange turns
//! them into a JWT.

pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod endpoints;
pub mod exchange;
pub mod probe;
pub mod provider;
pub mod secret;
pub mod serve;
pub mod token;
pub mod util;

pub use client::{get_api_jwt, get_database_jwt, Client, Error, JwtOptions, TokenRequest};
pub use exchange::{ExchangeConfig, ExchangeError, JwtType};
pub use provider::detect::{detect_provider, DetectError, DetectOptions, Detection};
pub use provider::{
    CloudIdentity, CloudProvider, IdentityHeaders, IdentityRequest, Provider, ProviderConfig,
    ProviderError,
};
pub use secret::Secret;
pub use token::Token;
