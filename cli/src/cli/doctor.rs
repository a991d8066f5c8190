//! `s2iam doctor`: why s2iam does or does not work here, one line per check.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use s2iam::env::ProviderConfig;

use super::flags::{parse_provider, IdentityFlags};
use super::{logging, CliError};

/// `s2iam doctor`'s flags.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub identity: IdentityFlags,
    /// Comma-separated identity-format preference (default:
    /// $S2IAM_IDENTITY_FORMAT_PREFERENCE, else the config's, else the reference's).
    #[arg(long)]
    pub identity_format_preference: Option<String>,
    /// Authentication server URL (default: the config's, else
    /// $S2IAM_JWT_SERVER_URL, else production).
    #[arg(long)]
    pub server_url: Option<String>,
    /// Allow an http:// server URL (testing only; also S2IAM_ALLOW_HTTP=1).
    #[arg(long)]
    pub allow_http: bool,
    /// The sidecar's config file (default: $S2IAM_CONFIG): its auth settings and
    /// token sinks are checked too.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output as JSON (schema "s2iam-doctor/1").
    #[arg(long)]
    pub json: bool,
    /// Also make one real token request against the auth service (an API JWT,
    /// or a database JWT with --workspace-group-id); the token is never printed.
    #[arg(long)]
    pub exchange: bool,
    /// With --exchange: ask for a database JWT for this workspace group.
    #[arg(long, requires = "exchange")]
    pub workspace_group_id: Option<String>,
}

/// `s2iam doctor`: the library's checks, printed; an error (exit 1) when any
/// check fails.
pub async fn run(args: &DoctorArgs, out: &mut impl Write) -> Result<(), CliError> {
    // The report says what the library's warnings would (hop limit, ...).
    if args.identity.verbose {
        logging::init(true);
    } else {
        logging::init_quiet();
    }
    let cfg = ProviderConfig::from_env();
    let config = match args
        .config
        .clone()
        .or_else(|| cfg.env.get("S2IAM_CONFIG").map(PathBuf::from))
    {
        Some(path) => Some(s2iam_sidecar::config::ServeConfig::load(
            &cfg.env,
            &s2iam_sidecar::config::ServeOverrides {
                config: Some(path),
                ..Default::default()
            },
        )?),
        None => None,
    };
    let opts = doctor_options(args, &cfg, config.as_ref())?;
    let report = s2iam::doctor::run(&cfg, &opts).await;
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report.to_json()).unwrap_or_default()
        )?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    match report.count(s2iam::doctor::Status::Fail) {
        0 => Ok(()),
        n => Err(CliError::DoctorFailed(n)),
    }
}

/// Flags first, then the config file, then the environment, then defaults.
fn doctor_options(
    args: &DoctorArgs,
    cfg: &ProviderConfig,
    config: Option<&s2iam_sidecar::config::ServeConfig>,
) -> Result<s2iam::doctor::DoctorOptions, CliError> {
    let flags = &args.identity;
    let client = config.map(|c| &c.client);
    let mut opts = s2iam::doctor::DoctorOptions {
        provider: parse_provider(flags)?.or(client.and_then(|c| c.provider)),
        force_detect: flags.force_detect,
        assume_role: flags.assume_role.clone().filter(|s| !s.is_empty()),
        role_session_name: flags.assume_role_session_name.clone(),
        gcp_audience: flags.gcp_audience.clone(),
        server_url: args
            .server_url
            .clone()
            .or(client.and_then(|c| c.server_url.clone()))
            .filter(|s| !s.is_empty()),
        allow_http: args.allow_http || client.is_some_and(|c| c.allow_http) || cfg.env.allow_http(),
        timeout: flags.timeout,
        exchange: args.exchange.then(|| match &args.workspace_group_id {
            Some(wg) => s2iam::doctor::exchange::ExchangeProbe::Database(wg.clone()),
            None => s2iam::doctor::exchange::ExchangeProbe::Api,
        }),
        ..Default::default()
    };
    let pref = args
        .identity_format_preference
        .clone()
        .or_else(|| cfg.env.get("S2IAM_IDENTITY_FORMAT_PREFERENCE"))
        .map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .or(client.and_then(|c| c.identity_format_preference.clone()));
    if let Some(pref) = pref {
        opts.identity_format_preference = pref;
    }
    for t in config.map(|c| c.tokens.as_slice()).unwrap_or_default() {
        if let Some(sink) = &t.sink {
            let label = match &t.workspace_group_id {
                Some(wg) => format!("sink {}:{wg}", t.jwt_type),
                None => format!("sink {}", t.jwt_type),
            };
            opts.token_files.push((label, sink.path.clone()));
        }
    }
    Ok(opts)
}
