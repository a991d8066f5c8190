//! `s2iam run [options] -- CMD ARGS...`: exec mode, like Vault Agent's
//! `exec` / envconsul and aws-vault's `exec`. Gets the tokens, starts CMD with them
//! in environment variables, forwards signals to it, and exits with its exit code.
//!
//! A token in an environment cannot be refreshed, so before the first of them
//! reaches `refresh_at` of its lifetime (`[cache] refresh_at`, default 2/3),
//! fresh tokens are fetched and, per `--on-expiry`:
//!
//! - `restart` (default): SIGTERM, up to `--grace` for the child to exit (then
//!   SIGKILL), and the command started again at once with the new tokens;
//! - `signal`: the child gets `--signal` (for a child that re-reads its token
//!   from a file or the sidecar);
//! - `none`: nothing; the child lives with its tokens until it exits.
//!
//! A child that fails within [`CRASH_WINDOW`] of a restart is started again after
//! 1, 2, 4, 8 and 16 s, then given up on (its exit code is ours): never a tight
//! restart loop. A fetch that fails at rotation time is retried with backoff
//! while the child keeps running. A SIGTERM, SIGINT or SIGQUIT sent to `s2iam run`
//! is passed on to the child, which then has `--grace` to exit before SIGKILL:
//! `s2iam run` never waits forever on a child that ignores the signal. Exit codes of `s2iam run` itself, like `env`'s:
//! 125 no token, 126 the command cannot run, 127 not found.

mod child;
mod source;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::config::{ServeConfig, ServeOverrides};
use s2iam::env::ProviderConfig;
use s2iam::exchange::JwtType;
use s2iam::util::instant_after;
pub use source::{Fetched, Source, TokenSpec};

/// A restarted child that fails sooner than this counts as a crash.
pub const CRASH_WINDOW: Duration = Duration::from_secs(10);
/// Restarts after crashes before giving up.
pub const MAX_CRASH_RESTARTS: u32 = 5;

/// What to do before a token in the child's environment expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExpiry {
    /// SIGTERM, wait up to the grace period, start again with fresh tokens.
    Restart,
    /// Send the configured signal; the child keeps running.
    Signal,
    /// Nothing.
    None,
}

impl std::str::FromStr for OnExpiry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "restart" => Ok(Self::Restart),
            "signal" => Ok(Self::Signal),
            "none" => Ok(Self::None),
            other => Err(format!("{other:?} is not restart, signal or none")),
        }
    }
}

/// What `s2iam run` is asked to do (the command line's flags, parsed).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Config file (default: `S2IAM_CONFIG`): its `[[token]]`s and client settings.
    pub config: Option<PathBuf>,
    /// Ask the running sidecar on this Unix socket instead of exchanging here.
    pub socket: Option<PathBuf>,
    /// `NAME=database:WORKSPACE_GROUP` or `NAME=api`, one per variable.
    pub env: Vec<String>,
    /// Shorthand for `S2_PASSWORD=database:<id>`.
    pub workspace_group_id: Option<String>,
    /// What to do before a token expires.
    pub on_expiry: OnExpiry,
    /// The signal of [`OnExpiry::Signal`], e.g. `SIGHUP`.
    pub signal: String,
    /// How long the command has to exit after SIGTERM before it is killed.
    pub grace: Duration,
    /// Auth service URL (own exchange only).
    pub server_url: Option<String>,
    /// Allow an http:// auth service URL (testing only).
    pub allow_http: bool,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// Why `s2iam run` could not do its job (never contains a token).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The options do not make sense.
    #[error("{0}")]
    Usage(String),
    /// The config file is not valid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The client could not be set up.
    #[error(transparent)]
    Client(#[from] s2iam::client::Error),
    /// A token could not be had.
    #[error("cannot get {what}: {message}")]
    Token {
        /// Which variable and token.
        what: String,
        /// Why.
        message: String,
    },
    /// The command could not be started.
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    /// Waiting for the child failed.
    #[error("lost track of the child: {0}")]
    Wait(std::io::Error),
}

impl RunError {
    /// `env`'s convention: 127 not found, 126 cannot run, 125 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
            RunError::Spawn { .. } => 126,
            _ => 125,
        }
    }
}

/// Everything the loop needs, decided once from the arguments.
struct Plan {
    specs: Vec<TokenSpec>,
    source: Source,
    refresh_at: f64,
    on_expiry: OnExpiry,
    signal: Signal,
    grace: Duration,
    command: Vec<String>,
}

/// Runs the command; returns its exit code.
pub async fn run(args: &RunOptions) -> Result<u8, RunError> {
    let plan = plan(args)?;
    let mut tokens = plan.source.fetch_all(&plan.specs).await?;
    let mut signals = child::listen()?;
    let mut child = child::spawn(&plan.command, &environment(&plan.specs, &tokens))?;
    tracing::info!(pid = child.id(), "command started");
    let mut rotate_at = Some(rotation_time(&tokens, plan.refresh_at));
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut restarted_at: Option<Instant> = None;
    let mut crashes = 0u32;
    let mut stopping = false;
    // Set by the first stop signal: `--grace` later the child gets SIGKILL.
    let mut kill_at: Option<Instant> = None;
    loop {
        let due = rotate_at.filter(|_| plan.on_expiry != OnExpiry::None && !stopping);
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(RunError::Wait)?;
                let crashed = !status.success()
                    && !stopping
                    && restarted_at.is_some_and(|t| t.elapsed() < CRASH_WINDOW);
                if !crashed || crashes >= MAX_CRASH_RESTARTS {
                    tracing::info!(%status, "command exited");
                    return Ok(child::exit_code(status));
                }
                crashes = crashes.saturating_add(1);
                let delay = Duration::from_secs(1).saturating_mul(1 << crashes.saturating_sub(1).min(MAX_CRASH_RESTARTS));
                tracing::warn!(%status, attempt = crashes, delay = ?delay, "the restarted command failed at once; starting it again after a delay");
                if wait_or_stop(&mut signals, delay).await {
                    return Ok(child::exit_code(status));
                }
                child = child::spawn(&plan.command, &environment(&plan.specs, &tokens))?;
                restarted_at = Some(Instant::now());
            }
            Some(sig) = signals.recv() => {
                tracing::info!(%sig, "forwarding signal");
                child::signal(&child, sig);
                if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) {
                    stopping = true;
                    kill_at.get_or_insert_with(|| instant_after(Instant::now(), plan.grace));
                }
            }
            _ = sleep_until(kill_at) => {
                tracing::warn!(pid = child.id(), grace = ?plan.grace, "the command did not exit within --grace of the stop signal; killing it");
                kill_at = None;
                if let Err(e) = child.start_kill() {
                    tracing::warn!(error = %e, "cannot kill the command");
                }
            }
            _ = sleep_until(due) => {
                let fresh = match plan.source.fetch_all(&plan.specs).await {
                    Ok(fresh) if fresh.iter().zip(&tokens).any(|(a, b)| a.jwt != b.jwt) => fresh,
                    Ok(_) => {
                        // The sidecar has not refreshed yet: ask again shortly.
                        rotate_at = Some(instant_after(Instant::now(), retry.next()));
                        continue;
                    }
                    Err(e) => {
                        let delay = retry.next();
                        tracing::warn!(error = %e, retry_in = ?delay, "cannot refresh the tokens; the command keeps running");
                        rotate_at = Some(instant_after(Instant::now(), delay));
                        continue;
                    }
                };
                retry.reset();
                if restarted_at.is_none_or(|t| t.elapsed() >= CRASH_WINDOW) {
                    crashes = 0;
                }
                tokens = fresh;
                rotate_at = Some(rotation_time(&tokens, plan.refresh_at));
                match plan.on_expiry {
                    OnExpiry::Restart => {
                        let status = child::stop(&mut child, plan.grace).await.map_err(RunError::Wait)?;
                        child = child::spawn(&plan.command, &environment(&plan.specs, &tokens))?;
                        tracing::info!(old = %status, pid = child.id(), "command restarted with fresh tokens");
                        restarted_at = Some(Instant::now());
                    }
                    OnExpiry::Signal => {
                        tracing::info!(signal = %plan.signal, "tokens refreshed; signalling the command");
                        child::signal(&child, plan.signal);
                    }
                    OnExpiry::None => {}
                }
            }
        }
    }
}

/// Sleeps `delay`; true if a stop signal came first.
async fn wait_or_stop(
    signals: &mut tokio::sync::mpsc::UnboundedReceiver<Signal>,
    delay: Duration,
) -> bool {
    let deadline = tokio::time::Instant::from_std(instant_after(Instant::now(), delay));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return false,
            Some(sig) = signals.recv() => {
                if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) {
                    return true;
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// When the first token reaches `refresh_at` of its lifetime (at least 1 s away).
fn rotation_time(tokens: &[Fetched], refresh_at: f64) -> Instant {
    let earliest = tokens
        .iter()
        .map(|t| instant_after(t.received, t.lifetime.mul_f64(refresh_at)))
        .min()
        .unwrap_or_else(|| instant_after(Instant::now(), Duration::from_secs(3600)));
    earliest.max(instant_after(Instant::now(), Duration::from_secs(1)))
}

fn environment(specs: &[TokenSpec], tokens: &[Fetched]) -> Vec<(String, String)> {
    specs
        .iter()
        .zip(tokens)
        .map(|(s, t)| (s.env.clone(), t.jwt.expose().to_string()))
        .collect()
}

/// Capped doubling delay.
struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            next: base,
        }
    }
    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }
    fn reset(&mut self) {
        self.next = self.base;
    }
}

fn plan(args: &RunOptions) -> Result<Plan, RunError> {
    let provider_config = ProviderConfig::from_env();
    let overrides = ServeOverrides {
        config: args.config.clone(),
        server_url: args.server_url.clone(),
        allow_http: args.allow_http,
        ..Default::default()
    };
    let config = ServeConfig::load(&provider_config.env, &overrides)?;
    let specs = token_specs(args, &config)?;
    let signal = crate::render::action::parse_signal(&args.signal).map_err(RunError::Usage)?;
    let source = match &args.socket {
        Some(socket) => Source::Sidecar {
            socket: socket.clone(),
            timeout: config.client.timeout.saturating_add(Duration::from_secs(5)),
            clock: provider_config.clock.clone(),
        },
        None => Source::Local {
            client: Box::new(s2iam::client::Client::new(
                config.jwt_options(provider_config),
            )?),
            role_session_name: config.client.role_session_name.clone(),
            gcp_audience: config.client.gcp_audience.clone(),
        },
    };
    Ok(Plan {
        specs,
        source,
        refresh_at: config.cache.policy.refresh_at,
        on_expiry: args.on_expiry,
        signal,
        grace: args.grace,
        command: args.command.clone(),
    })
}

/// `--env`, then `--workspace-group-id`, then the config's `[[token]]`s.
fn token_specs(args: &RunOptions, config: &ServeConfig) -> Result<Vec<TokenSpec>, RunError> {
    let mut specs = args
        .env
        .iter()
        .map(|e| parse_env(e))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(wg) = &args.workspace_group_id {
        if !specs.iter().any(|s| s.env == "S2_PASSWORD") {
            specs.push(TokenSpec {
                env: "S2_PASSWORD".into(),
                jwt_type: JwtType::Database,
                workspace_group_id: Some(wg.clone()),
                assume_role: None,
            });
        }
    }
    if specs.is_empty() {
        for t in &config.tokens {
            let env = match t.jwt_type {
                JwtType::Database => "S2_PASSWORD",
                JwtType::Api => "S2_API_TOKEN",
            };
            specs.push(TokenSpec {
                env: env.into(),
                jwt_type: t.jwt_type,
                workspace_group_id: t.workspace_group_id.clone(),
                assume_role: t.assume_role.clone(),
            });
        }
    }
    if specs.is_empty() {
        return Err(RunError::Usage(
            "no token to put in the environment: give --workspace-group-id, --env NAME=database:<id> or NAME=api, or a config file with [[token]]".into(),
        ));
    }
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.env == s.env) {
            return Err(RunError::Usage(format!(
                "{} would get two tokens: name them with --env NAME=...",
                s.env
            )));
        }
    }
    Ok(specs)
}

/// `NAME=database:WG` or `NAME=api`.
fn parse_env(text: &str) -> Result<TokenSpec, RunError> {
    let usage = || {
        RunError::Usage(format!(
            "--env {text:?}: expected NAME=database:<workspace group id> or NAME=api"
        ))
    };
    let (name, what) = text.split_once('=').ok_or_else(usage)?;
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(RunError::Usage(format!(
            "--env {text:?}: {name:?} is not an environment variable name"
        )));
    }
    let (jwt_type, workspace_group_id) = match what.split_once(':') {
        Some(("database", wg)) if !wg.is_empty() => (JwtType::Database, Some(wg.to_string())),
        None if what == "api" => (JwtType::Api, None),
        _ => return Err(usage()),
    };
    Ok(TokenSpec {
        env: name.to_string(),
        jwt_type,
        workspace_group_id,
        assume_role: None,
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own their clock and environment
mod tests {
    use super::*;

    #[test]
    fn env_specs_parse() {
        let s = parse_env("DB_PASS=database:wg-1").unwrap();
        assert_eq!(s.env, "DB_PASS");
        assert_eq!(s.workspace_group_id.as_deref(), Some("wg-1"));
        assert_eq!(parse_env("T=api").unwrap().jwt_type, JwtType::Api);
        for bad in [
            "X",
            "1X=api",
            "X=database",
            "X=database:",
            "X=moon",
            "A-B=api",
        ] {
            assert!(parse_env(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rotation_is_at_the_fraction_of_the_shortest_lifetime() {
        let now = Instant::now();
        let t = |secs| Fetched {
            jwt: s2iam::secret::Secret::new("x"),
            expires_at: std::time::SystemTime::now(),
            received: now,
            lifetime: Duration::from_secs(secs),
        };
        let at = rotation_time(&[t(300), t(60)], 0.5);
        assert_eq!(at, now + Duration::from_secs(30));
        // Never sooner than a second away.
        assert!(rotation_time(&[t(0)], 0.5) >= now + Duration::from_secs(1));
    }
}
