//! `s2iam run`: a command started with the tokens in its environment.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use s2iam_sidecar::run::{RunError, RunOptions};

use super::{logging, CliError};

/// `s2iam run [options] -- CMD ARGS...` (see `s2iam_sidecar::run`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Config file (default: $S2IAM_CONFIG): its token tables (a database token
    /// goes to S2_PASSWORD, an API token to S2_API_TOKEN) and its auth, identity
    /// and cache settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Ask the running sidecar on this Unix socket instead of exchanging here.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// NAME=database:WORKSPACE_GROUP or NAME=api (repeatable): which token goes
    /// into which environment variable.
    #[arg(long = "env", value_name = "NAME=TOKEN")]
    pub env: Vec<String>,
    /// Shorthand for --env S2_PASSWORD=database:ID.
    #[arg(long)]
    pub workspace_group_id: Option<String>,
    /// Before a token expires: restart the command, signal it, or do nothing.
    #[arg(long, default_value = "restart", value_parser = ["restart", "signal", "none"])]
    pub on_expiry: String,
    /// The signal for --on-expiry signal.
    #[arg(long, default_value = "SIGHUP")]
    pub signal: String,
    /// How long the command has to exit after SIGTERM before it is killed (0 to 1h;
    /// on rotation and when s2iam run itself gets SIGTERM or SIGINT).
    #[arg(long, default_value = "10s", value_parser = super::ranges::grace)]
    pub grace: Duration,
    /// Authentication server URL (own exchange only).
    #[arg(long)]
    pub server_url: Option<String>,
    /// Allow an http:// server URL (testing only).
    #[arg(long)]
    pub allow_http: bool,
    /// Log what happens (rotations, restarts) to stderr.
    #[arg(long)]
    pub verbose: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl RunArgs {
    /// The library's options.
    pub fn options(&self) -> Result<RunOptions, RunError> {
        Ok(RunOptions {
            config: self.config.clone(),
            socket: self.socket.clone(),
            env: self.env.clone(),
            workspace_group_id: self.workspace_group_id.clone(),
            on_expiry: self.on_expiry.parse().map_err(RunError::Usage)?,
            signal: self.signal.clone(),
            grace: self.grace,
            server_url: self.server_url.clone(),
            allow_http: self.allow_http,
            command: self.command.clone(),
        })
    }
}

/// Runs the command until it exits: its exit code is ours.
pub async fn run(args: &RunArgs) -> Result<u8, CliError> {
    logging::init(args.verbose);
    Ok(s2iam_sidecar::run::run(&args.options()?).await?)
}
