//! `ProviderConfig`: everything a credential source reads from the outside world —
//! environment, files, the wall clock, the HTTP client and the endpoints — injected
//! in one value, so each source is tested with a fake environment, a fake clock and
//! a mock cloud on loopback, without touching the real process environment.
//!
//! No module below `provider` calls `std::env`, `std::fs` or `SystemTime::now`
//! directly; they go through this.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::endpoints::Endpoints;

/// Environment variables: the process's, or a fixed map for tests.
#[derive(Clone, Debug)]
pub struct Env {
    vars: Option<Arc<HashMap<String, String>>>,
}

impl Env {
    /// The real process environment.
    pub fn real() -> Self {
        Self { vars: None }
    }

    /// A fixed environment (nothing from the process leaks in).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: Some(Arc::new(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            )),
        }
    }

    /// The variable's value; set-but-empty counts as unset, as in the AWS and Google
    /// SDKs.
    pub fn get(&self, name: &str) -> Option<String> {
        let value = match &self.vars {
            None => std::env::var(name).ok(),
            Some(vars) => vars.get(name).cloned(),
        };
        value.filter(|v| !v.trim().is_empty())
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Files the sources read (token files, credential files): the real filesystem, or
/// an in-memory one for tests.
#[derive(Clone, Debug)]
pub struct Fs {
    files: Option<Arc<HashMap<PathBuf, String>>>,
}

/// Credential files are small; anything bigger is not one.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

impl Fs {
    pub fn real() -> Self {
        Self { files: None }
    }

    pub fn from_files<P: Into<PathBuf>, C: Into<String>>(
        files: impl IntoIterator<Item = (P, C)>,
    ) -> Self {
        Self {
            files: Some(Arc::new(
                files
                    .into_iter()
                    .map(|(p, c)| (p.into(), c.into()))
                    .collect(),
            )),
        }
    }

    /// Reads a whole (small, UTF-8) file.
    pub fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
        match &self.files {
            Some(files) => files
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
            None => {
                let meta = std::fs::metadata(path)?;
                if meta.len() > MAX_FILE_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("larger than {MAX_FILE_BYTES} bytes"),
                    ));
                }
                std::fs::read_to_string(path)
            }
        }
    }

    pub fn exists(&self, path: &Path) -> bool {
        match &self.files {
            Some(files) => files.contains_key(path),
            None => path.is_file(),
        }
    }
}

/// The wall clock, replaceable so expiry and clock skew are tested without waiting.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that reads `SystemTime::now()` shifted by a fixed offset (tests of skew).
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock(pub i64);

impl Clock for OffsetClock {
    fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        if self.0 >= 0 {
            now + Duration::from_secs(self.0 as u64)
        } else {
            now - Duration::from_secs(self.0.unsigned_abs())
        }
    }
}

/// A clock whose offset from the system clock can be changed at run time, to
/// test what a wall-clock jump does to cached credentials.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset_secs: std::sync::atomic::AtomicI64,
}

impl ManualClock {
    /// Moves the clock to `SystemTime::now() + offset_secs`.
    pub fn set_offset(&self, offset_secs: i64) {
        self.offset_secs
            .store(offset_secs, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        OffsetClock(self.offset_secs.load(std::sync::atomic::Ordering::SeqCst)).now()
    }
}

/// What every credential source is given.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub env: Env,
    pub fs: Fs,
    pub clock: Arc<dyn Clock>,
    /// One client for every metadata, STS and identity call (connection pooling).
    pub http: reqwest::Client,
    pub endpoints: Endpoints,
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
        let http = http_client(&env);
        Self {
            env,
            fs,
            clock: Arc::new(SystemClock),
            http,
            endpoints,
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn now_unix(&self) -> u64 {
        self.clock
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// Hosts no request to is ever sent through a proxy: the metadata services
/// (link-local: a proxy cannot reach them, and must not see their tokens) and this
/// machine.
pub const NEVER_PROXIED: &str =
    "169.254.0.0/16,fd00:ec2::/32,metadata.google.internal,metadata,localhost,127.0.0.0/8,::1";

/// The client every credential source shares (one connection pool): rustls, a
/// short connect timeout so a missing metadata service fails fast, and the proxy
/// settings of `env` (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, either
/// case) for the global services (STS, IAM Credentials, Azure AD), as the cloud
/// SDKs do — never for [`NEVER_PROXIED`] hosts.
pub fn http_client(env: &Env) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("s2iam/", env!("CARGO_PKG_VERSION")));
    let proxies = env_proxies(env);
    if proxies.is_empty() {
        builder = builder.no_proxy();
    }
    for proxy in proxies {
        builder = builder.proxy(proxy);
    }
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}

pub(crate) fn env_proxies(env: &Env) -> Vec<reqwest::Proxy> {
    let var = |upper: &str| {
        env.get(upper)
            .or_else(|| env.get(&upper.to_ascii_lowercase()))
    };
    let no_proxy = match var("NO_PROXY") {
        Some(list) => format!("{list},{NEVER_PROXIED}"),
        None => NEVER_PROXIED.to_string(),
    };
    type MakeProxy = fn(&str) -> reqwest::Result<reqwest::Proxy>;
    let kinds: [(&str, MakeProxy); 3] = [
        ("HTTPS_PROXY", |u| reqwest::Proxy::https(u)),
        ("HTTP_PROXY", |u| reqwest::Proxy::http(u)),
        ("ALL_PROXY", |u| reqwest::Proxy::all(u)),
    ];
    kinds
        .iter()
        .filter_map(|(name, make)| {
            let url = var(name)?;
            match make(&url) {
                Ok(p) => Some(p.no_proxy(reqwest::NoProxy::from_string(&no_proxy))),
                Err(e) => {
                    tracing::warn!(variable = name, error = %e, "ignoring an unusable proxy setting");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_env_ignores_process_env_and_empty_values() {
        let env = Env::from_pairs([("A", "1"), ("EMPTY", " ")]);
        assert_eq!(env.get("A").as_deref(), Some("1"));
        assert!(env.get("EMPTY").is_none());
        assert!(env.get("PATH").is_none());
    }

    #[test]
    fn in_memory_fs() {
        let fs = Fs::from_files([("/t", "tok")]);
        assert_eq!(fs.read_to_string(Path::new("/t")).unwrap(), "tok");
        assert!(fs.read_to_string(Path::new("/u")).is_err());
        assert!(fs.exists(Path::new("/t")));
    }
}
