//! The command line: a drop-in for the reference `s2iam` command (same flags, same
//! defaults, same output and exit codes), plus subcommands.
//!
//! Reference behaviour kept: Go-style single-dash long flags (`-jwt-type api`) are
//! accepted; the token goes to stdout alone, or as `NAME=<jwt>` with `--env-name`
//! (preceded by `STATUS=0` with `--env-status`); on failure `STATUS=1` is printed
//! to stdout with `--env-status`, the error goes to stderr as `Error: ...`, and the
//! exit code is 1; a malformed command line exits with 2.

//! One file per command: its flags (a clap `Args` struct) and its handler
//! (`run`). This file holds the command enum and the one `match` that dispatches on
//! it; `error` maps failures to exit codes, `logging` installs the stderr logger each
//! handler asks for, `flags` holds the flags several commands share, `ranges` the
//! numeric flags' ranges as clap value parsers.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod completions;
mod credential_process;
mod detect;
#[cfg(feature = "dev")]
mod dev;
mod doctor;
mod error;
mod flags;
mod identity;
mod inject;
mod lifecycle;
mod logging;
mod man;
mod probe;
mod proxy;
mod ranges;
mod run;
mod s3;
mod serve;
mod token;
mod version;
mod webhook;

pub use error::CliError;
pub use flags::normalize_args;

const EXAMPLES: &str = "\
Examples:
  # A database JWT for a workspace group
  s2iam --workspace-group-id=my-workspace-group

  # An API JWT
  s2iam --jwt-type=api

  # For shell evaluation
  eval $(s2iam --env-status=STATUS --env-name=TOKEN --workspace-group-id=wg)

  # A specific provider and role
  s2iam --provider=aws --assume-role=arn:aws:iam::123456789012:role/MyRole --jwt-type=api

  # Token, expiry and identity as JSON
  s2iam --jwt-type=api --json

  # Which cloud is this, and who am I there?
  s2iam detect
  s2iam identity --json

  # Why does it (not) work here, and what will it do?
  s2iam doctor";

/// Obtain a JWT from SingleStore IAM authentication using this workload's cloud
/// identity (AWS, GCP or Azure). No keys in config.
#[derive(Debug, Parser)]
#[command(name = "s2iam", version, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(flatten)]
    pub token: token::TokenArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands; none is the reference CLI's token command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Detect the cloud provider and say how it was found.
    Detect(detect::DetectArgs),
    /// Show the workload's cloud identity (no secrets).
    Identity(identity::IdentityArgs),
    /// Check why s2iam does or does not work here and what it will do: one line
    /// per check (PASS/WARN/FAIL/SKIP) with a fix; exit 1 if any check FAILs.
    /// Never exchanges a token.
    Doctor(doctor::DoctorArgs),
    /// Run the sidecar: keep tokens warm and serve them locally.
    Serve(serve::ServeArgs),
    /// Run a database proxy alone: MySQL clients connect with no password, the
    /// proxy logs in to SingleStore with the workload's database JWT.
    Proxy(proxy::ProxyArgs),
    /// Run a command with tokens in its environment; restart or signal it before
    /// they expire (`s2iam run [options] -- CMD ARGS...`).
    Run(run::RunArgs),
    /// Ask the local sidecar over its Unix socket (for exec probes): exit 0 if
    /// GET PATH answers 200, else 1.
    Probe(probe::ProbeArgs),
    /// Print AWS credentials of a profile for `credential_process` (from the
    /// running sidecar, else resolved in-process from the config file).
    CredentialProcess(credential_process::CredentialProcessArgs),
    /// S3 helpers (presigned URLs).
    S3 {
        #[command(subcommand)]
        command: s3::S3Command,
    },
    /// Run a mock cloud, a mock auth service and the sidecar on loopback (a demo
    /// that never touches a real metadata service).
    #[cfg(feature = "dev")]
    Dev(dev::DevArgs),
    /// Which build this is (`--json`: version, commit, features, target, rustc).
    Version(version::VersionArgs),
    /// Print the shell completion script (bash, zsh or fish).
    Completions(completions::CompletionsArgs),
    /// Print the man page, or write one page per command (`--dir DIR`).
    Man(man::ManArgs),
    /// Add s2iam to every Kubernetes workload annotated
    /// `s2iam.singlestore.com/inject: "true"` (manifests in, manifests out).
    Inject(inject::InjectArgs),
    /// Serve the mutating admission webhook that does what `inject` does.
    Webhook(webhook::WebhookArgs),
    /// Ask the local sidecar to stop (POST /quitquitquit on its socket; for a
    /// preStop hook or a Job's last step).
    Shutdown(lifecycle::ShutdownArgs),
}

/// Resolves on SIGTERM or SIGINT, for commands that stop the same way on both:
/// [`lifecycle::stop_signal`] (handlers installed at the call) without saying which.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let stop = lifecycle::stop_signal();
    async move {
        stop.await;
    }
}

/// Runs the parsed command line on a two-thread runtime: the exit code, with the
/// error (if any) printed to stderr as `Error: ...`.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The one place that knows every command: each arm calls the command's handler,
/// which sets up its own logging.
async fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    let stdout = std::io::stdout;
    match &cli.command {
        None => token::run(&cli.token, &mut stdout().lock(), &mut std::io::stderr()).await?,
        Some(Command::Detect(args)) => detect::run(args, &mut stdout().lock()).await?,
        Some(Command::Identity(args)) => identity::run(args, &mut stdout().lock()).await?,
        Some(Command::Doctor(args)) => doctor::run(args, &mut stdout().lock()).await?,
        // The stop decides the exit code (README "Lifecycle").
        Some(Command::Serve(args)) => return serve::run(args, &mut stdout().lock()).await,
        Some(Command::Proxy(args)) => proxy::run(args).await?,
        // Exec mode: the child's exit code is ours.
        Some(Command::Run(args)) => return run::run(args).await.map(ExitCode::from),
        Some(Command::Probe(args)) => probe::run(args).await?,
        Some(Command::CredentialProcess(args)) => {
            credential_process::run(args, &mut stdout().lock()).await?
        }
        Some(Command::S3 { command }) => s3::run(command, &mut stdout().lock()).await?,
        #[cfg(feature = "dev")]
        Some(Command::Dev(args)) => dev::run(args, &mut stdout().lock()).await?,
        Some(Command::Version(args)) => version::run(args, &mut stdout().lock())?,
        Some(Command::Completions(args)) => completions::run(args, &mut stdout().lock())?,
        Some(Command::Man(args)) => man::run(args, &mut stdout().lock())?,
        Some(Command::Inject(args)) => inject::run(args, &mut stdout().lock())?,
        Some(Command::Webhook(args)) => webhook::run(args).await?,
        Some(Command::Shutdown(args)) => lifecycle::shutdown(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}
