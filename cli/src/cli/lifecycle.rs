//! The sidecar's stop contract on the command line: `s2iam serve`'s SIGTERM flags
//! and exit codes, and `s2iam shutdown` (see `s2iam_sidecar::serve::lifecycle`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use s2iam::util::parse_duration;
use s2iam_sidecar::serve::lifecycle::{LifecycleConfig, Stop};

use super::CliError;

/// `s2iam serve`'s stop settings.
#[derive(Debug, Clone, Args)]
pub struct LifecycleArgs {
    /// Exit 0 on SIGTERM (default: 143, as a process killed by the signal).
    #[arg(long)]
    pub exit_zero_on_sigterm: bool,
    /// After SIGTERM, keep the local API and the database and API proxies accepting
    /// this long while the application drains (readiness says 503 at once); 0-1h.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub sigterm_min_delay: Duration,
    /// After SIGTERM, exit by this long whatever sessions are still open (default:
    /// each proxy's drain_timeout and listen.shutdown_timeout decide); 0-1h.
    #[arg(long, value_parser = parse_duration)]
    pub sigterm_max_delay: Option<Duration>,
}

impl LifecycleArgs {
    /// The checked settings.
    pub fn config(&self) -> Result<LifecycleConfig, CliError> {
        LifecycleConfig::new(
            self.exit_zero_on_sigterm,
            self.sigterm_min_delay,
            self.sigterm_max_delay,
        )
        .map_err(|e| CliError::Usage(e.to_string()))
    }
}

/// Resolves on SIGTERM or SIGINT, saying which. The handlers are installed
/// when this is called, not when the future is first polled (the sidecar polls
/// it only once it has started): a SIGTERM that arrives while it is still
/// starting is then a clean stop, not the default death by signal.
pub fn stop_signal() -> impl std::future::Future<Output = Stop> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).ok();
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            () = recv_or_pending(terminate.as_mut()) => Stop::Terminate,
            () = recv_or_pending(interrupt.as_mut()) => Stop::Interrupt,
        }
    }
}

/// One signal's next delivery; never, if its handler could not be installed.
async fn recv_or_pending(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Runs the sidecar; the exit code says how it stopped.
pub async fn serve(
    settings: &LifecycleConfig,
    config: s2iam_sidecar::config::ServeConfig,
    provider_config: s2iam::ProviderConfig,
    signal: impl std::future::Future<Output = Stop>,
) -> Result<ExitCode, CliError> {
    let stop = s2iam_sidecar::serve::run_with(config, provider_config, settings, signal).await?;
    Ok(ExitCode::from(stop.exit_code(settings)))
}

/// `s2iam shutdown`: ask the sidecar to stop (`POST /quitquitquit` on its socket).
#[derive(Debug, Clone, Args)]
pub struct ShutdownArgs {
    /// Unix socket of the sidecar (default: $S2IAM_SOCKET, else /run/s2iam/s2iam.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Exit 0 once the sidecar said it is stopping.
pub async fn shutdown(args: &ShutdownArgs) -> Result<(), CliError> {
    let socket = s2iam_sidecar::sidecar_client::default_socket(
        args.socket.as_deref(),
        &s2iam::env::Env::real(),
    );
    s2iam_sidecar::sidecar_client::socket::quit(&socket, args.timeout).await?;
    Ok(())
}
