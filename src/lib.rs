//! s2iam: turn a workload's cloud identity into SingleStore JWTs, with no keys in
//! config.
//!
//! The flow, one module per step, data flowing one way:
//!
//! | step | module |
//! |---|---|
//! | every endpoint and its override | [`env::endpoints`] |
//! | environment, files, clock, HTTP client (injected) | [`env`](mod@env), [`http`] |
//! | AWS credentials vended to applications | [`aws_vending`] |
//! | which cloud (environment, then concurrent probes) | [`provider::detect`] |
//! | identity headers on AWS, GCP, Azure | [`provider::aws`], [`provider::gcp`], [`provider::azure`] |
//! | headers → JWT | [`exchange`] → [`token`] |
//! | the whole flow, reusable | [`client`] |
//! | keep tokens warm | [`cache`] |
//! | traces (OpenTelemetry, OTLP/HTTP), off until configured | [`otel`] |
//! | why it does or does not work here (`s2iam doctor`) | [`doctor`] |
//!
//! The sidecar (its config, the local API, the API and database proxies, templates,
//! `run`, the sidecar's clients) is the `s2iam-sidecar` crate on top of this one, and
//! the `s2iam` command the `s2iam-cli` crate on top of both. This crate needs no
//! server, command line, config file or mocks: no axum, clap, toml.
//!
//! The crates, the module map, the import rules and how the tests reach every endpoint are in
//! `docs/architecture.md` in the repository.
//!
//! A database JWT in three lines:
//!
//! ```no_run
//! # async fn demo() -> Result<(), s2iam::Error> {
//! let token = s2iam::get_database_jwt("my-workspace-group", &s2iam::JwtOptions::default()).await?;
//! let jwt: &str = token.jwt().expose();
//! println!("{} bytes, expires at {:?}", jwt.len(), token.expires_at);
//! # Ok(()) }
//! ```
//!
//! Detection and identity on their own:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use s2iam::{detect_provider, DetectOptions, IdentityRequest, ProviderConfig};
//! let cfg = ProviderConfig::from_env();
//! let detection = detect_provider(&cfg, &DetectOptions::default()).await?;
//! let (_headers, identity) = detection.provider.identity(&cfg, &IdentityRequest::default()).await?;
//! println!("{} on {}", identity.identifier, identity.provider);
//! # Ok(()) }
//! ```

pub mod aws_vending;
pub mod cache;
pub mod client;
pub mod doctor;
pub mod env;
pub mod exchange;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod logging;
pub mod otel;
pub mod provider;
pub mod secret;
pub mod token;
pub mod util;

pub use client::{get_api_jwt, get_database_jwt, Client, Error, JwtOptions, TokenRequest};
pub use env::ProviderConfig;
pub use exchange::{ExchangeConfig, ExchangeError, JwtType};
pub use provider::detect::{detect_provider, DetectError, DetectOptions, Detection};
pub use provider::{
    CloudIdentity, CloudProvider, IdentityHeaders, IdentityRequest, Provider, ProviderError,
};
pub use secret::Secret;
pub use token::Token;
