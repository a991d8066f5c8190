//! The injected environment: everything s2iam reads from the outside world —
//! environment variables ([`vars`]), files ([`files`]), the wall clock
//! ([`clock`]), the endpoints and their overrides ([`endpoints`]) and the HTTP
//! client — in one value, [`ProviderConfig`], built once at start. Each credential
//! source is tested with a fake environment, a fake clock and a mock cloud on
//! loopback, without touching the real process environment.
//!
//! No other module calls `std::env`, `SystemTime::now` for a credential's
//! lifetime, or builds an HTTP client; they go through this. This module sits at
//! the bottom of the crate: it imports only [`crate::http`] (see
//! docs/architecture.md).

pub mod aws_endpoints;
pub mod clock;
pub mod endpoints;
pub mod files;
pub mod skew;
pub mod vars;

use std::sync::Arc;
use std::time::SystemTime;

pub use clock::{Clock, ManualClock, OffsetClock, SystemClock};
pub use endpoints::Endpoints;
pub use files::Fs;
pub use skew::{ClockSkew, SkewReading};
pub use vars::Env;

/// What every credential source is given.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// Environment variables.
    pub env: Env,
    /// Files.
    pub fs: Fs,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
    /// One client for every metadata, STS and identity call (connection pooling).
    pub http: reqwest::Client,
    /// Every address, with overrides applied.
    pub endpoints: Endpoints,
    /// How far AWS's clock is from this one, measured from STS answers and shared
    /// by every STS client made from this config (see [`skew`]).
    pub aws_clock_skew: Arc<ClockSkew>,
}

impl ProviderConfig {
    /// The real environment, filesystem and clock, with endpoints (and their
    /// overrides) read from the environment.
    pub fn from_env() -> Self {
        Self::with_env(Env::real(), Fs::real())
    }

    /// A config over the given environment and filesystem and the system clock.
    pub fn with_env(env: Env, fs: Fs) -> Self {
        let endpoints = Endpoints::from_env(&env);
        let http = crate::http::client(&env.proxy_settings());
        Self {
            env,
            fs,
            clock: Arc::new(SystemClock),
            http,
            endpoints,
            aws_clock_skew: Arc::new(ClockSkew::default()),
        }
    }

    /// The same config with another clock (tests of expiry and skew).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock's time in Unix seconds.
    pub fn now_unix(&self) -> u64 {
        self.clock
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}
