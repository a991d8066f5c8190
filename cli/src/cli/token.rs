//! The default command (no subcommand): the reference CLI's flags; get a token and
//! print it.

use std::io::Write;

use clap::Args;

use s2iam::client::{Client, JwtOptions, TokenRequest};
use s2iam::env::ProviderConfig;
use s2iam::exchange::{ExchangeConfig, JwtType};
use s2iam::util::rfc3339;

use super::flags::{parse_provider, IdentityFlags};
use super::{logging, CliError};

/// The reference CLI's flags.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// JWT type: 'database' or 'api'.
    #[arg(long, default_value = "database")]
    pub jwt_type: String,
    /// Workspace group ID (required for database JWT).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub workspace_group_id: String,
    #[command(flatten)]
    pub identity: IdentityFlags,
    /// Comma-separated identity-format preference (overrides
    /// S2IAM_IDENTITY_FORMAT_PREFERENCE).
    #[arg(long)]
    pub identity_format_preference: Option<String>,
    /// Authentication server URL (default: $S2IAM_JWT_SERVER_URL, else production).
    #[arg(long)]
    pub server_url: Option<String>,
    /// Allow http:// authentication server URLs (for testing only; also
    /// S2IAM_ALLOW_HTTP=1, as for the sidecar).
    #[arg(long)]
    pub allow_http: bool,
    /// Environment variable name for JWT output (prints `NAME=<jwt>`).
    #[arg(long)]
    pub env_name: Option<String>,
    /// Environment variable name for status output (NAME=0 or NAME=1).
    #[arg(long)]
    pub env_status: Option<String>,
    /// Print the issued JWT's 'sub' claim (the verified identity) to stderr.
    #[arg(long)]
    pub print_sub: bool,
    /// Verify the issued JWT against the server's JWKS before printing it.
    #[arg(long)]
    pub validate: bool,
    /// Print {"token","expires_at","provider","identity",...} as JSON (`jwt` is
    /// the same token, kept for older scripts).
    #[arg(long)]
    pub json: bool,
}

/// The default command: get a token and print it. On failure, `STATUS=1` goes to
/// stdout with `--env-status` (not for a usage error: the reference prints no status
/// before any attempt).
pub async fn run(
    args: &TokenArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    logging::init(args.identity.verbose);
    let result = token(args, out, err).await;
    if let (Err(e), Some(status)) = (&result, &args.env_status) {
        if !matches!(e, CliError::Usage(_)) {
            let _ = writeln!(out, "{status}=1");
        }
    }
    result
}

async fn token(
    args: &TokenArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    let jwt_type: JwtType = args.jwt_type.parse().map_err(|_| {
        CliError::Usage(format!(
            "invalid JWT type: {} (must be 'database' or 'api')",
            args.jwt_type
        ))
    })?;
    if jwt_type == JwtType::Database && args.workspace_group_id.is_empty() {
        return Err(CliError::Usage(
            "--workspace-group-id is required for database JWT".into(),
        ));
    }
    // The sidecar's check, before any request: refused as it would refuse it.
    if !args.workspace_group_id.is_empty() {
        s2iam::exchange::check_workspace_group_id(&args.workspace_group_id)
            .map_err(|e| CliError::Usage(format!("--workspace-group-id: {e}")))?;
    }
    let options = jwt_options(&args.identity, Some(args))?;
    let client = Client::new(options)?;
    let req = token_request(&args.identity, jwt_type, &args.workspace_group_id);
    let (token, identity) = client.token_with_identity(&req).await?;
    if args.print_sub {
        writeln!(err, "{}", token.claims.sub.as_deref().unwrap_or(""))?;
    }
    if args.json {
        let doc = serde_json::json!({
            "token": token.jwt().expose(),
            "jwt": token.jwt().expose(),
            "expires_at": rfc3339(token.expires_at),
            "expires_in": token.remaining().as_secs(),
            "jwt_type": jwt_type,
            "provider": identity.provider,
            "identity": identity,
            "sub": token.claims.sub,
        });
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        )?;
    } else if let Some(name) = &args.env_name {
        if let Some(status) = &args.env_status {
            writeln!(out, "{status}=0")?;
        }
        writeln!(out, "{name}={}", token.jwt().expose())?;
    } else {
        writeln!(out, "{}", token.jwt().expose())?;
    }
    Ok(())
}

/// The library's options from the identity flags and, for the token command, its
/// server and exchange flags (the environment fills in what they leave out).
pub fn jwt_options(
    flags: &IdentityFlags,
    args: Option<&TokenArgs>,
) -> Result<JwtOptions, CliError> {
    let cfg = ProviderConfig::from_env();
    let mut exchange = ExchangeConfig::default();
    if let Some(args) = args {
        let pref = args
            .identity_format_preference
            .clone()
            .or_else(|| cfg.env.get("S2IAM_IDENTITY_FORMAT_PREFERENCE"));
        if let Some(pref) = pref {
            exchange.identity_format_preference = pref
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        exchange.validate_jwks = args.validate;
    }
    Ok(JwtOptions {
        server_url: args
            .and_then(|a| a.server_url.clone())
            .filter(|s| !s.is_empty()),
        allow_http: args.is_some_and(|a| a.allow_http) || cfg.env.allow_http(),
        provider: parse_provider(flags)?,
        force_detect: flags.force_detect,
        timeout: flags.timeout,
        detect_timeout: flags.timeout,
        exchange,
        provider_config: Some(cfg),
        tracer: s2iam::otel::Tracer::off(),
    })
}

/// The request the identity flags describe.
pub fn token_request(
    flags: &IdentityFlags,
    jwt_type: JwtType,
    workspace_group_id: &str,
) -> TokenRequest {
    TokenRequest {
        jwt_type,
        workspace_group_id: Some(workspace_group_id.to_string()).filter(|s| !s.is_empty()),
        assume_role: flags.assume_role.clone().filter(|s| !s.is_empty()),
        role_session_name: flags.assume_role_session_name.clone(),
        gcp_audience: flags.gcp_audience.clone(),
    }
}
