//! `s2iam doctor`: why s2iam does or does not work here, and what it will do.
//!
//! Each check is a small function in the module of its group returning a typed
//! [`Check`] (PASS, WARN, FAIL or SKIP, one line of what was found, one line of
//! how to fix it). [`run`] calls them in the order a token request meets them:
//!
//! | check | module | what it looks at |
//! |---|---|---|
//! | `proxy` | [`proxy`] | `HTTP(S)_PROXY`, `ALL_PROXY`, `NO_PROXY` and which endpoints they capture |
//! | `token_files` | [`files`] | web identity, federated and credential files, the sidecar's sinks |
//! | `detect` | [`detect`] | the environment, then every metadata probe with its timing |
//! | `imds_hop_limit` | [`imds`] | an IMDSv2 token PUT left unanswered while GETs or TCP work |
//! | `metadata` | [`metadata`] | the detected metadata service serving the identity path |
//! | `credentials` | [`identity`] | the credential source and the cloud identity |
//! | `principal` | [`identity`], [`principal`] | the `sub` the auth service will issue, after format negotiation |
//! | `clock_skew` | [`clock`] | `Date` headers of metadata, STS and the auth service against this clock |
//! | `auth_service` | [`auth`] | DNS, TCP, TLS and the JWKS of the auth service — never an exchange |
//! | `exchange` | [`exchange`] | only when asked (`--exchange`): one real token request; the token is never shown |
//!
//! Everything goes through the injected [`ProviderConfig`] (endpoints, proxy
//! settings, files, clock), so tests point every check at a mock on loopback.
//! Nothing here prints a secret: token files are reported by their claims
//! (`exp`, `iss`, `aud`), credentials by their source.

pub mod auth;
pub mod clock;
pub mod detect;
pub mod exchange;
pub mod files;
pub mod identity;
pub mod imds;
pub mod metadata;
pub mod principal;
pub mod proxy;
pub mod report;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::env::ProviderConfig;
use crate::provider::CloudProvider;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works as it should.
    Pass,
    /// Not applicable here.
    Skip,
    /// Works, but something is likely to bite.
    Warn,
    /// s2iam will not work until this is fixed.
    Fail,
}

impl Status {
    /// `PASS`, `WARN`, `FAIL` or `SKIP`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier (`detect`, `clock_skew`, ...), for scripts.
    pub id: &'static str,
    /// The verdict.
    pub status: Status,
    /// What was found, on one line.
    pub message: String,
    /// How to fix it (WARN and FAIL), on one line.
    pub fix: Option<String>,
    /// Facts behind the verdict (probe timings, claims, addresses); never secrets.
    pub details: BTreeMap<String, String>,
    /// How long the check took.
    pub elapsed_ms: u64,
}

impl Check {
    /// A check with `status` and `message`.
    pub fn new(id: &'static str, status: Status, message: impl Into<String>) -> Self {
        Self {
            id,
            status,
            message: message.into(),
            fix: None,
            details: BTreeMap::new(),
            elapsed_ms: 0,
        }
    }

    /// PASS.
    pub fn pass(id: &'static str, message: impl Into<String>) -> Self {
        Self::new(id, Status::Pass, message)
    }

    /// WARN with a fix.
    pub fn warn(id: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(id, Status::Warn, message).with_fix(fix)
    }

    /// FAIL with a fix.
    pub fn fail(id: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(id, Status::Fail, message).with_fix(fix)
    }

    /// SKIP, saying why.
    pub fn skip(id: &'static str, message: impl Into<String>) -> Self {
        Self::new(id, Status::Skip, message)
    }

    /// The same check with a fix.
    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// The same check with one more detail.
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    fn timed(mut self, started: Instant) -> Self {
        self.elapsed_ms = millis(started.elapsed());
        self
    }
}

/// What doctor is asked to check: the same knobs a token request has.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// `--provider`: skip detection's choice (probes still run, for the report).
    pub provider: Option<CloudProvider>,
    /// `--force-detect`: ignore environment evidence, as the client would.
    pub force_detect: bool,
    /// A role to assume (AWS role ARN, GCP service account, Azure client id).
    pub assume_role: Option<String>,
    /// Session name of an assumed AWS role.
    pub role_session_name: String,
    /// Audience of the GCP ID token.
    pub gcp_audience: String,
    /// `X-S2IAM-Identity-Format-Preference`, in order.
    pub identity_format_preference: Vec<String>,
    /// The auth service URL template; `None`: the endpoints' (env or production).
    pub server_url: Option<String>,
    /// Allow an `http://` auth service (testing only).
    pub allow_http: bool,
    /// Deadline of each network check.
    pub timeout: Duration,
    /// Further token files to inspect, e.g. the sidecar's sinks: `(label, path)`.
    pub token_files: Vec<(String, PathBuf)>,
    /// Also make one real token request (`--exchange`); `None`: never exchange.
    pub exchange: Option<exchange::ExchangeProbe>,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            provider: None,
            force_detect: false,
            assume_role: None,
            role_session_name: crate::provider::DEFAULT_ROLE_SESSION_NAME.into(),
            gcp_audience: crate::provider::DEFAULT_GCP_AUDIENCE.into(),
            identity_format_preference: crate::exchange::DEFAULT_IDENTITY_FORMAT_PREFERENCE
                .iter()
                .map(|s| s.to_string())
                .collect(),
            server_url: None,
            allow_http: false,
            timeout: Duration::from_secs(5),
            token_files: Vec::new(),
            exchange: None,
        }
    }
}

/// What s2iam will do, as far as the checks could tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The cloud a token request will use.
    pub provider: Option<CloudProvider>,
    /// How it is found (`explicit`, `environment`, `metadata`).
    pub detected_by: Option<String>,
    /// Where the workload's credentials come from.
    pub credential_source: Option<String>,
    /// The `sub` the auth service will issue.
    pub sub: Option<String>,
    /// Its identity format.
    pub identity_format: Option<String>,
    /// The auth service URL template.
    pub auth_server: Option<String>,
}

/// Every check's result and the outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
    /// What a token request will do.
    pub outcome: Outcome,
}

impl Report {
    /// No check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// How many checks ended with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// The check called `id`.
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// Runs every check. Each network check is bounded by `opts.timeout`, so with no
/// cloud at all doctor still ends within a few timeouts.
pub async fn run(cfg: &ProviderConfig, opts: &DoctorOptions) -> Report {
    let mut checks = Vec::new();
    let mut outcome = Outcome::default();
    let mut dates = Vec::new();

    let started = Instant::now();
    let proxies = proxy::analyse(cfg, opts);
    checks.push(proxy::check(&proxies).timed(started));

    let started = Instant::now();
    checks.push(files::check(cfg, &opts.token_files).timed(started));

    let started = Instant::now();
    let detection = detect::run(cfg, opts).await;
    checks.push(detect::check(&detection).timed(started));
    let provider = detection.chosen.as_ref().map(|c| c.provider);
    outcome.provider = provider;
    outcome.detected_by = detection.chosen.as_ref().map(|c| c.method.to_string());

    let started = Instant::now();
    let hop = match provider {
        Some(CloudProvider::Aws) | None => imds::check(cfg, opts.timeout).await,
        Some(other) => Check::skip(
            imds::ID,
            format!("not on AWS ({other} detected): no EC2 instance metadata to check"),
        ),
    }
    .timed(started);

    let started = Instant::now();
    let found = identity::run(cfg, opts, provider).await;
    let credentials = found.credentials.clone().timed(started);
    outcome.credential_source = found.source.clone();
    checks.push(imds::relevance(
        hop,
        found.uses_metadata,
        found.source.as_deref(),
    ));
    checks.push(credentials);

    let started = Instant::now();
    let ready = metadata::run(cfg, opts.timeout, provider, found.uses_metadata).await;
    dates.extend(ready.date.clone());
    checks.push(ready.check.timed(started));

    let started = Instant::now();
    let principal = identity::principal_check(&found, &opts.identity_format_preference);
    if let Some(chosen) = &found.chosen(&opts.identity_format_preference) {
        outcome.sub = Some(chosen.value.clone());
        outcome.identity_format = Some(chosen.format.to_string());
    }
    checks.push(principal.timed(started));

    let started = Instant::now();
    let auth = auth::run(cfg, opts, &proxies).await;
    outcome.auth_server = auth.template.clone();
    dates.extend(auth.date.clone());
    let auth_check = auth.check.timed(started);

    let started = Instant::now();
    if provider == Some(CloudProvider::Aws) {
        if let Some(d) = clock::sts_date(cfg, found.region.as_deref(), opts.timeout).await {
            dates.push(d);
        }
    }
    let correction = if provider == Some(CloudProvider::Aws) {
        cfg.aws_clock_skew.reading().correction_secs
    } else {
        0
    };
    checks.push(clock::check(&dates, correction).timed(started));
    checks.push(auth_check);

    if let Some(probe) = &opts.exchange {
        let started = Instant::now();
        let check = exchange::check(cfg, opts, probe, provider, outcome.sub.as_deref()).await;
        checks.push(check.timed(started));
    }

    Report { checks, outcome }
}

/// The STS base URL a token request would use in `region` (else the
/// environment's region).
pub(crate) fn sts_url(cfg: &ProviderConfig, region: Option<&str>) -> Option<String> {
    let region = region
        .map(str::to_owned)
        .or_else(|| crate::provider::aws::region_from_env(cfg));
    cfg.endpoints.sts(region.as_deref()).ok().map(|e| e.url)
}

/// `d` in whole milliseconds (saturating).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `fut` bounded by `timeout`: `None` when it did not finish in time.
pub(crate) async fn within<T>(timeout: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(timeout, fut).await.ok()
}
