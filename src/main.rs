//! The `s2iam` binary: parse the command line, run the library, map errors to the
//! reference CLI's output and exit codes.

use std::process::ExitCode;

mod cli;

use clap::Parser;
use cli::{Cli, CliError, Command};

fn main() -> ExitCode {
    let cli = Cli::parse_from(cli::normalize_args(std::env::args_os()));
    let verbose = match &cli.command {
        None => cli.token.identity.verbose,
        Some(Command::Detect(a)) => a.identity.verbose,
        Some(Command::Identity(a)) => a.identity.verbose,
        Some(Command::Doctor(a)) => a.identity.verbose,
        Some(Command::Serve(_)) | Some(Command::Proxy(_)) => false,
        Some(Command::Run(a)) => a.verbose,
        Some(Command::Probe(_)) => false,
        Some(Command::CredentialProcess(_)) | Some(Command::S3 { .. }) => false,
        Some(Command::Inject(_)) | Some(Command::Webhook(_)) | Some(Command::Shutdown(_)) => false,
        #[cfg(feature = "dev")]
        Some(Command::Dev(_)) => false,
    };
    match &cli.command {
        // The sidecar configures its own (text or JSON) logging.
        Some(Command::Serve(_)) | Some(Command::Proxy(_)) | Some(Command::Webhook(_)) => {}
        #[cfg(feature = "dev")]
        Some(Command::Dev(_)) => cli::init_logging(false),
        // Doctor's report says what the library's warnings would (hop limit, ...).
        Some(Command::Doctor(_)) if !verbose => cli::init_logging_quiet(),
        _ => cli::init_logging(verbose),
    }
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
    if let Some(Command::Run(args)) = &cli.command {
        // Exec mode: the child's exit code is ours.
        let result = args
            .options()
            .map(|options| runtime.block_on(s2iam::run::run(&options)));
        return match result.and_then(|r| r) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    let result: Result<(), CliError> = runtime.block_on(async {
        match &cli.command {
            None => cli::run_token(&cli.token, &mut out, &mut err).await,
            Some(Command::Detect(args)) => cli::run_detect(args, &mut out).await,
            Some(Command::Identity(args)) => cli::run_identity(args, &mut out).await,
            Some(Command::Doctor(args)) => cli::run_doctor(args, &mut out).await,
            Some(Command::Serve(args)) => cli::run_serve(args, &mut out).await,
            Some(Command::Proxy(args)) => cli::run_proxy(args).await,
            Some(Command::Run(_)) => unreachable!("handled above"),
            Some(Command::Probe(args)) => cli::run_probe(args).await,
            Some(Command::CredentialProcess(args)) => {
                cli::run_credential_process(args, &mut out).await
            }
            Some(Command::S3 { command }) => cli::run_s3(command, &mut out).await,
            Some(Command::Inject(args)) => cli::inject::run(args, &mut out),
            Some(Command::Webhook(args)) => cli::webhook::run(args).await,
            Some(Command::Shutdown(args)) => cli::lifecycle::shutdown(args).await,
            #[cfg(feature = "dev")]
            Some(Command::Dev(args)) => cli::run_dev(args, &mut out).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `serve` stopped by SIGTERM (143) or SIGINT (130): the code is the answer.
        Err(CliError::Stopped(code)) => ExitCode::from(code),
        Err(e) => {
            // Usage errors come before any attempt: the reference prints no status.
            if let (None, Some(status), false) = (
                &cli.command,
                &cli.token.env_status,
                matches!(e, CliError::Usage(_)),
            ) {
                use std::io::Write;
                let _ = writeln!(out, "{status}=1");
            }
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
