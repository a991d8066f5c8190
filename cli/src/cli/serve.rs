//! `s2iam serve`: the sidecar.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use s2iam::env::ProviderConfig;

use super::{logging, CliError};

/// `s2iam serve`'s flags (they override the config file).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (default: $S2IAM_CONFIG, else built-in defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Unix socket path (default /run/s2iam/s2iam.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Serve no Unix socket (TCP only).
    #[arg(long)]
    pub no_socket: bool,
    /// Also serve loopback HTTP on this address, e.g. 127.0.0.1:7869.
    #[arg(long)]
    pub tcp: Option<String>,
    /// Allow a non-loopback --tcp address (tokens would be reachable from the network).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Authentication server URL template.
    #[arg(long)]
    pub server_url: Option<String>,
    /// Allow an http:// server URL (testing only).
    #[arg(long)]
    pub allow_http: bool,
    /// Log format: text or json.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Validate the configuration (rendering every template with placeholder
    /// values), print it, and exit.
    #[arg(long)]
    pub check: bool,
    /// Fetch every configured token, write every sink and template, and exit:
    /// 0 if all of it worked, 1 with the reasons otherwise.
    #[arg(long, visible_alias = "exit-after-auth")]
    pub once: bool,
    #[command(flatten)]
    pub lifecycle: super::lifecycle::LifecycleArgs,
}

/// `s2iam serve`: the exit code is the stop's (README "Lifecycle").
pub async fn run(args: &ServeArgs, out: &mut impl Write) -> Result<ExitCode, CliError> {
    let overrides = s2iam_sidecar::config::ServeOverrides {
        config: args.config.clone(),
        socket: args.socket.clone(),
        no_socket: args.no_socket,
        tcp: args.tcp.clone(),
        allow_non_loopback: args.allow_non_loopback,
        server_url: args.server_url.clone(),
        allow_http: args.allow_http,
        log_format: args.log_format.clone(),
    };
    let provider_config = ProviderConfig::from_env();
    let config = s2iam_sidecar::config::ServeConfig::load(&provider_config.env, &overrides)?;
    // Checked like the client does, before anything starts.
    s2iam::exchange::ServerUrl::parse(
        config
            .client
            .server_url
            .as_deref()
            .unwrap_or(&provider_config.endpoints.auth_server),
        config.client.allow_http,
    )
    .map_err(|e| CliError::Flow(e.into()))?;
    if args.check {
        s2iam_sidecar::config::check_paths(&config)?;
        write!(
            out,
            "configuration is valid ({} template(s) rendered with placeholder values):
{config}",
            config.templates.len()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let settings = args.lifecycle.config()?;
    logging::init_serve(&config, args.once);
    if args.once {
        for line in s2iam_sidecar::serve::once::run(config, provider_config).await? {
            writeln!(out, "{line}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Before anything starts: a SIGTERM during start-up is a clean stop.
    let signal = super::lifecycle::stop_signal();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "s2iam sidecar starting"
    );
    super::lifecycle::serve(&settings, config, provider_config, signal).await
}
