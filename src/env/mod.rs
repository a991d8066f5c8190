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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

pub use clock::{Clock, ManualClock, OffsetClock, SystemClock};
pub use endpoints::Endpoints;
pub use files::Fs;
pub use skew::{ClockSkew, SkewReading};
pub use vars::Env;

/// Where the Azure Arc agent writes the key files of its challenges on Linux. The
/// SDKs read a key only from this directory: a process that can answer on the
/// agent's port must not be able to make us read, and send away, any other file.
pub const DEFAULT_AZURE_ARC_KEY_DIR: &str = "/var/opt/azcmagent/tokens";

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
    /// The only directory an Azure Arc challenge may name a key file in
    /// ([`DEFAULT_AZURE_ARC_KEY_DIR`]). Deliberately not read from the environment:
    /// only a program embedding the library (its tests) can move it.
    pub azure_arc_key_dir: PathBuf,
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
            azure_arc_key_dir: PathBuf::from(DEFAULT_AZURE_ARC_KEY_DIR),
            endpoints,
            aws_clock_skew: Arc::new(ClockSkew::default()),
        }
    }

    /// The same config with another Azure Arc key directory (tests, whose mock
    /// agent writes its key files into a temporary directory).
    pub fn with_azure_arc_key_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.azure_arc_key_dir = dir.into();
        self
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
