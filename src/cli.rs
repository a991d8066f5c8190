//! The command line: a drop-in for the reference `s2iam` command (same flags, same
//! defaults, same output and exit codes), plus subcommands.
//!
//! Reference behaviour kept: Go-style single-dash long flags (`-jwt-type api`) are
//! accepted; the token goes to stdout alone, or as `NAME=<jwt>` with `--env-name`
//! (preceded by `STATUS=0` with `--env-status`); on failure `STATUS=1` is printed
//! to stdout with `--env-status`, the error goes to stderr as `Error: ...`, and the
//! exit code is 1; a malformed command line exits with 2.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub mod inject;
pub mod lifecycle;
pub mod webhook;

use s2iam::client::{Client, Error, JwtOptions, TokenRequest};
use s2iam::exchange::{ExchangeConfig, JwtType};
use s2iam::provider::detect::{detect_provider, DetectOptions, DetectionMethod};
use s2iam::provider::{
    CloudProvider, ProviderConfig, DEFAULT_GCP_AUDIENCE, DEFAULT_ROLE_SESSION_NAME,
};
use s2iam::util::{parse_duration, rfc3339};

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
    pub token: TokenArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

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

/// Flags shared by every command that gets an identity.
#[derive(Debug, Clone, Args)]
pub struct IdentityFlags {
    /// Cloud provider: 'aws', 'gcp', or 'azure' (auto-detect if not specified).
    #[arg(long)]
    pub provider: Option<String>,
    /// Force provider detection even if a provider is specified.
    #[arg(long)]
    pub force_detect: bool,
    /// Role to assume (ARN for AWS, service account for GCP, managed identity
    /// client id for Azure).
    #[arg(long)]
    pub assume_role: Option<String>,
    /// AWS STS RoleSessionName for --assume-role.
    #[arg(long, default_value = DEFAULT_ROLE_SESSION_NAME)]
    pub assume_role_session_name: String,
    /// GCP audience for the identity token.
    #[arg(long, default_value = DEFAULT_GCP_AUDIENCE)]
    pub gcp_audience: String,
    /// Timeout for operations (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Enable verbose logging (stderr; secrets are never logged).
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Detect the cloud provider and say how it was found.
    Detect(DetectArgs),
    /// Show the workload's cloud identity (no secrets).
    Identity(IdentityArgs),
    /// Check why s2iam does or does not work here and what it will do: one line
    /// per check (PASS/WARN/FAIL/SKIP) with a fix; exit 1 if any check FAILs.
    /// Never exchanges a token.
    Doctor(DoctorArgs),
    /// Run the sidecar: keep tokens warm and serve them locally.
    Serve(ServeArgs),
    /// Run a database proxy alone: MySQL clients connect with no password, the
    /// proxy logs in to SingleStore with the workload's database JWT.
    Proxy(ProxyArgs),
    /// Run a command with tokens in its environment; restart or signal it before
    /// they expire (`s2iam run [options] -- CMD ARGS...`).
    Run(RunArgs),
    /// Ask the local sidecar over its Unix socket (for exec probes): exit 0 if
    /// GET PATH answers 200, else 1.
    Probe(ProbeArgs),
    /// Print AWS credentials of a profile for `credential_process` (from the
    /// running sidecar, else resolved in-process from the config file).
    CredentialProcess(CredentialProcessArgs),
    /// S3 helpers (presigned URLs).
    S3 {
        #[command(subcommand)]
        command: S3Command,
    },
    /// Run a mock cloud, a mock auth service and the sidecar on loopback (a demo
    /// that never touches a real metadata service).
    #[cfg(feature = "dev")]
    Dev(DevArgs),
    /// Add s2iam to every Kubernetes workload annotated
    /// `s2iam.singlestore.com/inject: "true"` (manifests in, manifests out).
    Inject(inject::InjectArgs),
    /// Serve the mutating admission webhook that does what `inject` does.
    Webhook(webhook::WebhookArgs),
    /// Ask the local sidecar to stop (POST /quitquitquit on its socket; for a
    /// preStop hook or a Job's last step).
    Shutdown(lifecycle::ShutdownArgs),
}

/// `s2iam run [options] -- CMD ARGS...` (see `s2iam::run`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Config file (default: $S2IAM_CONFIG): its token tables (a database token
    /// goes to S2_PASSWORD, an API token to S2_API_TOKEN) and its auth, identity
    /// and cache settings.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Ask the running sidecar on this Unix socket instead of exchanging here.
    #[arg(long)]
    pub socket: Option<std::path::PathBuf>,
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
    /// How long the command has to exit after SIGTERM before it is killed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
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
    pub fn options(&self) -> Result<s2iam::run::RunOptions, s2iam::run::RunError> {
        Ok(s2iam::run::RunOptions {
            config: self.config.clone(),
            socket: self.socket.clone(),
            env: self.env.clone(),
            workspace_group_id: self.workspace_group_id.clone(),
            on_expiry: self
                .on_expiry
                .parse()
                .map_err(s2iam::run::RunError::Usage)?,
            signal: self.signal.clone(),
            grace: self.grace,
            server_url: self.server_url.clone(),
            allow_http: self.allow_http,
            command: self.command.clone(),
        })
    }
}

/// `s2iam proxy`'s flags (the `[[database_proxy]]` settings, plus the auth service).
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Loopback address to listen on, e.g. 127.0.0.1:3306.
    #[arg(long)]
    pub listen: Option<String>,
    /// Unix socket to listen on (in addition to, or instead of, --listen).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The SingleStore endpoint, host:port.
    #[arg(long)]
    pub upstream: String,
    /// Workspace group whose database JWT logs in.
    #[arg(long)]
    pub workspace_group_id: String,
    /// Upstream user; "*" takes the user from the JWT.
    #[arg(long, default_value = "*")]
    pub user: String,
    /// Name checked against the server certificate and sent as SNI (default: the
    /// upstream host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// CA certificates (PEM) to trust instead of the system's.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Client user names accepted (repeatable; default any).
    #[arg(long = "allowed-user")]
    pub allowed_users: Vec<String>,
    /// Unix-socket peer uids accepted (repeatable; default any).
    #[arg(long = "allowed-uid")]
    pub allowed_uids: Vec<u32>,
    #[arg(long, default_value_t = 1000)]
    pub max_connections: usize,
    /// Token, TCP, TLS and login together must take less than this.
    #[arg(long, default_value = "10s")]
    pub connect_timeout: String,
    /// Close a session after this long with no bytes either way ("0" = never).
    #[arg(long, default_value = "8h")]
    pub idle_timeout: String,
    /// On SIGTERM, how long open sessions may go on.
    #[arg(long, default_value = "30s")]
    pub drain_timeout: String,
    /// Role to assume for the JWT (as the token command's --assume-role).
    #[arg(long)]
    pub assume_role: Option<String>,
    /// Authentication server URL template (default: $S2IAM_JWT_SERVER_URL, else production).
    #[arg(long)]
    pub server_url: Option<String>,
    /// Allow an http:// server URL (testing only).
    #[arg(long)]
    pub allow_http: bool,
    /// Cloud provider: aws, gcp or azure (default: detected).
    #[arg(long)]
    pub provider: Option<String>,
    /// Timeout of one token exchange.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl ProxyArgs {
    fn options(&self) -> s2iam::dbproxy::standalone::StandaloneOptions {
        s2iam::dbproxy::standalone::StandaloneOptions {
            proxy: s2iam::dbproxy::config::FileDatabaseProxy {
                listen: self.listen.clone(),
                socket: self.socket.clone(),
                upstream: Some(self.upstream.clone()),
                server_name: self.server_name.clone(),
                ca_file: self.ca_file.clone(),
                workspace_group_id: Some(self.workspace_group_id.clone()),
                assume_role: self.assume_role.clone(),
                user: Some(self.user.clone()),
                allowed_users: Some(self.allowed_users.clone()),
                allowed_uids: Some(self.allowed_uids.clone()),
                max_connections: Some(self.max_connections),
                connect_timeout: Some(self.connect_timeout.clone()),
                idle_timeout: Some(self.idle_timeout.clone()),
                drain_timeout: Some(self.drain_timeout.clone()),
                ..Default::default()
            },
            server_url: self.server_url.clone(),
            allow_http: self.allow_http,
            provider: self.provider.clone(),
            timeout: self.timeout,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (default: $S2IAM_CONFIG, else built-in defaults).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Unix socket path (default /run/s2iam/s2iam.sock).
    #[arg(long)]
    pub socket: Option<std::path::PathBuf>,
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
    pub lifecycle: lifecycle::LifecycleArgs,
}

#[cfg(feature = "dev")]
#[derive(Debug, Args)]
pub struct DevArgs {
    /// The cloud to pretend to be: aws, gcp or azure.
    #[arg(long, default_value = "gcp")]
    pub cloud: String,
    /// Directory for the socket and the token file (default: a new temporary one).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
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
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = parse_duration)]
    pub exit_after: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct DetectArgs {
    #[command(flatten)]
    pub identity: IdentityFlags,
    /// Output as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IdentityArgs {
    #[command(flatten)]
    pub identity: IdentityFlags,
    /// Output as JSON.
    #[arg(long)]
    pub json: bool,
}

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
}

/// Where AWS commands get credentials: the sidecar's socket, else the config file.
#[derive(Debug, Clone, Args)]
pub struct AwsSourceArgs {
    /// The credential profile (`[[aws_profile]]` name).
    #[arg(long)]
    pub profile: String,
    /// Unix socket of the sidecar (default: $S2IAM_SOCKET, else /run/s2iam/s2iam.sock).
    #[arg(long)]
    pub socket: Option<std::path::PathBuf>,
    /// Config file to resolve the profile in-process when no sidecar answers
    /// (default: $S2IAM_CONFIG).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Give up after this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl AwsSourceArgs {
    fn options(&self) -> s2iam::sidecar_client::aws::LocalOptions {
        s2iam::sidecar_client::aws::LocalOptions {
            socket: s2iam::sidecar_client::default_socket(self.socket.as_deref()),
            config: self.config.clone(),
            timeout: self.timeout,
        }
    }
}

/// `s2iam probe` arguments.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Unix socket of the sidecar (default: $S2IAM_SOCKET, else /run/s2iam/s2iam.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Give up after this long (keep it below the probe's timeoutSeconds).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The route to GET: /readyz, /healthz, ...
    #[arg(default_value = "/readyz")]
    pub path: String,
}

#[derive(Debug, Args)]
pub struct CredentialProcessArgs {
    #[command(flatten)]
    pub source: AwsSourceArgs,
}

#[derive(Debug, Subcommand)]
pub enum S3Command {
    /// Print a presigned S3 URL (GET to download, PUT to upload).
    Presign(PresignArgs),
}

#[derive(Debug, Args)]
pub struct PresignArgs {
    #[command(flatten)]
    pub source: AwsSourceArgs,
    #[arg(long)]
    pub bucket: String,
    #[arg(long)]
    pub key: String,
    /// GET or PUT.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Validity: seconds or a duration (15m, 1h); default 1 hour, at most 7 days
    /// and the credentials' remaining lifetime.
    #[arg(long)]
    pub expires: Option<String>,
    /// Print {"url","method","expires_at","expires_in"} instead of the URL alone.
    #[arg(long)]
    pub json: bool,
}

/// `s2iam probe`: Ok only if the sidecar answered 200.
pub async fn run_probe(args: &ProbeArgs) -> Result<(), CliError> {
    let socket = s2iam::sidecar_client::default_socket(args.socket.as_deref());
    s2iam::sidecar_client::socket::probe(&socket, &args.path, args.timeout).await?;
    Ok(())
}

/// `s2iam credential-process`: one line of JSON on stdout, nothing secret on stderr.
pub async fn run_credential_process(
    args: &CredentialProcessArgs,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let v = s2iam::sidecar_client::aws::credentials(&args.source.options(), &args.source.profile)
        .await?;
    writeln!(out, "{}", v.credential_process_json())?;
    Ok(())
}

/// `s2iam s3 presign`.
pub async fn run_s3(command: &S3Command, out: &mut impl Write) -> Result<(), CliError> {
    let S3Command::Presign(args) = command;
    let expires = args
        .expires
        .as_deref()
        .map(s2iam::serve::aws::parse_expires)
        .transpose()
        .map_err(CliError::Usage)?;
    let req = s2iam::aws_vending::PresignRequest {
        profile: args.source.profile.clone(),
        bucket: args.bucket.clone(),
        key: args.key.clone(),
        method: Some(args.method.clone()),
        expires,
    };
    let p = s2iam::sidecar_client::aws::presign(&args.source.options(), &req).await?;
    if args.json {
        writeln!(out, "{}", p.json())?;
    } else {
        writeln!(out, "{}", p.url)?;
    }
    Ok(())
}

/// Errors of the command line, each with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] s2iam::config::ConfigError),
    #[error(transparent)]
    Serve(#[from] s2iam::serve::ServeError),
    #[cfg(feature = "dev")]
    #[error(transparent)]
    Dev(#[from] s2iam::serve::dev::DevError),
    #[error(transparent)]
    Proxy(#[from] s2iam::dbproxy::standalone::StandaloneError),
    #[error(transparent)]
    Probe(#[from] s2iam::sidecar_client::socket::ProbeError),
    #[error(transparent)]
    Once(#[from] s2iam::serve::once::OnceError),
    #[error(transparent)]
    Flow(#[from] Error),
    #[error(transparent)]
    Aws(#[from] s2iam::sidecar_client::aws::LocalError),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0} check(s) failed (see the report above)")]
    DoctorFailed(usize),
    #[error(transparent)]
    Inject(#[from] s2iam::kube::yaml::YamlError),
    #[error(transparent)]
    Webhook(#[from] s2iam::kube::webhook::WebhookError),
    /// The sidecar stopped as asked, with this exit code (nothing to print).
    #[error("stopped (exit code {0})")]
    Stopped(u8),
}

/// Rewrites Go-style `-flag` into `--flag` for the reference's long flags.
pub fn normalize_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    const LONG: &[&str] = &[
        "jwt-type",
        "workspace-group-id",
        "gcp-audience",
        "provider",
        "assume-role",
        "assume-role-session-name",
        "identity-format-preference",
        "timeout",
        "server-url",
        "allow-http",
        "env-name",
        "env-status",
        "verbose",
        "print-sub",
        "force-detect",
        "help",
    ];
    args.into_iter()
        .map(|a| {
            let Some(s) = a.to_str() else { return a };
            let Some(rest) = s.strip_prefix('-').filter(|r| !r.starts_with('-')) else {
                return a;
            };
            let name = rest.split('=').next().unwrap_or("");
            if LONG.contains(&name) {
                format!("-{s}").into()
            } else {
                a
            }
        })
        .collect()
}

fn parse_provider(flags: &IdentityFlags) -> Result<Option<CloudProvider>, CliError> {
    flags
        .provider
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<CloudProvider>().map_err(|_| {
                CliError::Usage(format!(
                    "invalid provider: {p} (must be 'aws', 'gcp', or 'azure')"
                ))
            })
        })
        .transpose()
}

fn jwt_options(flags: &IdentityFlags, args: Option<&TokenArgs>) -> Result<JwtOptions, CliError> {
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
        allow_http: args.is_some_and(|a| a.allow_http)
            || cfg
                .env
                .get("S2IAM_ALLOW_HTTP")
                .is_some_and(|v| v == "1" || v == "true"),
        provider: parse_provider(flags)?,
        force_detect: flags.force_detect,
        timeout: flags.timeout,
        detect_timeout: flags.timeout,
        exchange,
        provider_config: Some(cfg),
    })
}

fn token_request(
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

/// The default command: get a token and print it.
pub async fn run_token(
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

/// `s2iam detect`.
pub async fn run_detect(args: &DetectArgs, out: &mut impl Write) -> Result<(), CliError> {
    let cfg = ProviderConfig::from_env();
    let opts = DetectOptions {
        timeout: args.identity.timeout,
        provider: if args.identity.force_detect {
            None
        } else {
            parse_provider(&args.identity)?
        },
        skip_fast_path: args.identity.force_detect,
    };
    let detection = detect_provider(&cfg, &opts).await.map_err(Error::from)?;
    let (method, evidence) = match &detection.method {
        DetectionMethod::Explicit => ("explicit", None),
        DetectionMethod::Environment(e) => ("environment", Some(e.clone())),
        DetectionMethod::Metadata => ("metadata", None),
    };
    let provider = detection.provider.kind();
    let credentials = detection.provider.credential_source_plan(&cfg);
    let sts = (provider == CloudProvider::Aws).then(|| aws_sts_endpoint(&cfg));
    if args.json {
        let mut doc = serde_json::json!({
            "provider": provider,
            "method": method,
            "evidence": evidence,
            "elapsed_ms": detection.elapsed.as_millis() as u64,
        });
        if let Some(c) = &credentials {
            doc["credential_source"] = serde_json::Value::from(c.as_str());
        }
        if let Some((endpoint, partition, region)) = &sts {
            doc["sts_endpoint"] = endpoint.clone().into();
            doc["sts_partition"] = partition.clone().into();
            doc["sts_region"] = region.clone().into();
        }
        writeln!(out, "{doc}")?;
    } else {
        let how = match (&detection.method, evidence) {
            (_, Some(e)) => format!("from the environment: {e}"),
            (DetectionMethod::Explicit, _) => "chosen explicitly".into(),
            _ => "its metadata service answered".into(),
        };
        writeln!(
            out,
            "{provider} ({how}; {} ms)",
            detection.elapsed.as_millis()
        )?;
        if let Some(c) = &credentials {
            writeln!(out, "credentials: {c}")?;
        }
        if let Some((endpoint, partition, region)) = &sts {
            writeln!(
                out,
                "STS endpoint: {endpoint} (partition {partition}, region {region})"
            )?;
        }
    }
    Ok(())
}

/// The STS endpoint the AWS identity will use, its partition and the region it
/// comes from (the environment's, else the default; an instance's own region is
/// only known once IMDS is asked, by `s2iam identity`).
fn aws_sts_endpoint(cfg: &ProviderConfig) -> (String, String, String) {
    let region = s2iam::provider::aws::region_from_env(cfg)
        .unwrap_or_else(|| s2iam::provider::aws::DEFAULT_REGION.to_string());
    match cfg.endpoints.sts(Some(&region)) {
        Ok(e) => (
            e.url,
            e.partition.unwrap_or("(explicit endpoint)").to_string(),
            region,
        ),
        Err(e) => (format!("none: {e}"), String::new(), region),
    }
}

/// `s2iam identity`.
pub async fn run_identity(args: &IdentityArgs, out: &mut impl Write) -> Result<(), CliError> {
    let options = jwt_options(&args.identity, None)?;
    let client = Client::new(JwtOptions {
        // Identity never reaches the auth service; any valid URL will do.
        server_url: Some(s2iam::env::endpoints::DEFAULT_AUTH_SERVER.into()),
        ..options
    })?;
    let req = token_request(&args.identity, JwtType::Api, "");
    let (_headers, identity) = client.identity(&req).await?;
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&identity).unwrap_or_default()
        )?;
    } else {
        writeln!(out, "provider:      {}", identity.provider)?;
        writeln!(out, "identifier:    {}", identity.identifier)?;
        writeln!(out, "account:       {}", identity.account_id)?;
        writeln!(out, "region:        {}", identity.region)?;
        writeln!(out, "resource type: {}", identity.resource_type)?;
        if let Some(source) = &identity.credential_source {
            writeln!(out, "credentials:   {source}")?;
        }
        for (k, v) in &identity.additional_claims {
            writeln!(out, "{k}: {v}")?;
        }
    }
    Ok(())
}

/// `s2iam doctor`: the library's checks, printed; an error (exit 1) when any
/// check fails.
pub async fn run_doctor(args: &DoctorArgs, out: &mut impl Write) -> Result<(), CliError> {
    let cfg = ProviderConfig::from_env();
    let config = match args
        .config
        .clone()
        .or_else(|| cfg.env.get("S2IAM_CONFIG").map(PathBuf::from))
    {
        Some(path) => Some(s2iam::config::ServeConfig::load(
            &cfg.env,
            &s2iam::config::ServeOverrides {
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
    config: Option<&s2iam::config::ServeConfig>,
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
        allow_http: args.allow_http
            || client.is_some_and(|c| c.allow_http)
            || cfg
                .env
                .get("S2IAM_ALLOW_HTTP")
                .is_some_and(|v| v == "1" || v == "true"),
        timeout: flags.timeout,
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

/// `s2iam serve`.
pub async fn run_serve(args: &ServeArgs, out: &mut impl Write) -> Result<(), CliError> {
    let overrides = s2iam::config::ServeOverrides {
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
    let config = s2iam::config::ServeConfig::load(&provider_config.env, &overrides)?;
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
        if let Some(socket) = &config.listen.socket {
            s2iam::config::check_socket_dir(socket)?;
        }
        write!(
            out,
            "configuration is valid ({} template(s) rendered with placeholder values):
{config}",
            config.templates.len()
        )?;
        return Ok(());
    }
    let settings = args.lifecycle.config()?;
    init_serve_logging(&config);
    if args.once {
        for line in s2iam::serve::once::run(config, provider_config).await? {
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "s2iam sidecar starting"
    );
    lifecycle::serve(&settings, config, provider_config).await
}

/// `s2iam proxy`: logs at info level (`S2IAM_LOG` overrides) like the sidecar.
pub async fn run_proxy(args: &ProxyArgs) -> Result<(), CliError> {
    let filter = std::env::var("S2IAM_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
    s2iam::dbproxy::standalone::run(
        &args.options(),
        ProviderConfig::from_env(),
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// `s2iam dev`.
#[cfg(feature = "dev")]
pub async fn run_dev(args: &DevArgs, out: &mut impl Write) -> Result<(), CliError> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("s2iam-dev-{}", std::process::id())));
    let dev = s2iam::serve::dev::Dev::start(s2iam::serve::dev::DevOptions {
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
                _ = shutdown_signal() => {}
            }
        }
        None => shutdown_signal().await,
    }
    dev.shutdown().await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_serve_logging(config: &s2iam::config::ServeConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(s2iam::logging::ansi_on_stderr(
            std::env::var_os("NO_COLOR").is_some(),
        ))
        .with_env_filter(filter);
    let _ = match config.log.format {
        s2iam::config::LogFormat::Json => builder.json().try_init(),
        s2iam::config::LogFormat::Text => builder.try_init(),
    };
}

/// Installs the stderr logger: warnings only, or debug with `--verbose`
/// (`S2IAM_LOG` overrides, e.g. `S2IAM_LOG=s2iam=trace`).
pub fn init_logging(verbose: bool) {
    let default = if verbose { "s2iam=debug,info" } else { "warn" };
    let filter = std::env::var("S2IAM_LOG").unwrap_or_else(|_| default.to_string());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(s2iam::logging::ansi_on_stderr(
            std::env::var_os("NO_COLOR").is_some(),
        ))
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
}

/// Installs the stderr logger for errors only (`S2IAM_LOG` overrides).
pub fn init_logging_quiet() {
    let filter = std::env::var("S2IAM_LOG").unwrap_or_else(|_| "error".to_string());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(s2iam::logging::ansi_on_stderr(
            std::env::var_os("NO_COLOR").is_some(),
        ))
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_flags_are_normalized() {
        let args = normalize_args(
            [
                "s2iam",
                "-jwt-type",
                "api",
                "-timeout=5s",
                "-x",
                "--verbose",
            ]
            .map(Into::into),
        );
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "s2iam",
                "--jwt-type",
                "api",
                "--timeout=5s",
                "-x",
                "--verbose"
            ]
        );
    }
}
