//! `s2iam dev`: the mock cloud, the mock auth service and the sidecar on loopback.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{logging, shutdown_signal, CliError};

/// `s2iam dev`'s flags.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// The cloud to pretend to be: aws, gcp or azure.
    #[arg(long, default_value = "gcp")]
    pub cloud: String,
    /// Directory for the socket and the token file (default: a new temporary one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Loopback HTTP address of the sidecar.
    #[arg(long, default_value = "127.0.0.1:7869")]
    pub tcp: std::net::SocketAddr,
    /// Workspace group of the database token kept warm.
    #[arg(long, default_value = "dev-workspace-group")]
    pub workspace_group_id: String,
    /// Where the database proxy in front of the mock SingleStore listens.
    #[arg(long, default_value = "127.0.0.1:3306")]
    pub mysql: std::net::SocketAddr,
    /// Loopback address of the API proxy to the mock Data API (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub data_api_proxy: std::net::SocketAddr,
    /// Loopback address of the API proxy to the mock Management API.
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub management_api_proxy: std::net::SocketAddr,
    /// Stop after this long (1s to 30 days; default: run until Ctrl-C).
    #[arg(long, value_parser = super::ranges::exit_after)]
    pub exit_after: Option<Duration>,
}

/// `s2iam dev`.
pub async fn run(args: &DevArgs, out: &mut impl Write) -> Result<(), CliError> {
    logging::init(false);
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("s2iam-dev-{}", std::process::id())));
    let stop = shutdown_signal();
    let dev = s2iam_sidecar::serve::dev::Dev::start(s2iam_sidecar::serve::dev::DevOptions {
        cloud: args.cloud.clone(),
        remove_dir_on_exit: args.dir.is_none() && !dir.exists(),
        dir,
        tcp: args.tcp,
        workspace_group_id: args.workspace_group_id.clone(),
        mysql: args.mysql,
        data_api_proxy: args.data_api_proxy,
        management_api_proxy: args.management_api_proxy,
    })
    .await?;
    writeln!(out, "{}", dev.banner())?;
    out.flush()?;
    match args.exit_after {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop => {}
            }
        }
        None => stop.await,
    }
    dev.shutdown().await;
    Ok(())
}
