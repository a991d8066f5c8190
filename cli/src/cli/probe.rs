//! `s2iam probe`: an exec probe asking the local sidecar.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{logging, CliError};

/// `s2iam probe` arguments.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Unix socket of the sidecar (default: $S2IAM_SOCKET, else /run/s2iam/s2iam.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Give up after this long (10ms to 1h; keep it below the probe's timeoutSeconds).
    #[arg(long, default_value = "2s", value_parser = super::ranges::timeout)]
    pub timeout: Duration,
    /// The route to GET: /readyz, /healthz, ...
    #[arg(default_value = "/readyz")]
    pub path: String,
}

/// `s2iam probe`: Ok only if the sidecar answered 200.
pub async fn run(args: &ProbeArgs) -> Result<(), CliError> {
    logging::init(false);
    let socket = s2iam_sidecar::sidecar_client::default_socket(
        args.socket.as_deref(),
        &s2iam::env::Env::real(),
    );
    s2iam_sidecar::sidecar_client::socket::probe(&socket, &args.path, args.timeout).await?;
    Ok(())
}
