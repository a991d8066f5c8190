//! `s2iam proxy`: one database proxy alone, without the sidecar.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use s2iam::env::ProviderConfig;

use super::{logging, shutdown_signal, CliError};

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
    /// Client connections open at once (1 to 100000).
    #[arg(long, default_value_t = 1000)]
    pub max_connections: usize,
    /// Token, TCP, TLS and login together must take less than this.
    #[arg(long, default_value = "10s")]
    pub connect_timeout: String,
    /// Close a session after this long with no bytes either way ("0" = never).
    #[arg(long, default_value = "8h")]
    pub idle_timeout: String,
    /// Close a session older than this at its next quiet moment between
    /// commands, outside a transaction, so the client's next connection logs
    /// in with the current JWT ("0" = never; 1s to 30d).
    #[arg(long, default_value = "0")]
    pub max_session_lifetime: String,
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
    /// Timeout of one token exchange (10ms to 1h).
    #[arg(long, default_value = "10s", value_parser = super::ranges::timeout)]
    pub timeout: Duration,
}

impl ProxyArgs {
    fn options(&self) -> s2iam_sidecar::dbproxy::standalone::StandaloneOptions {
        s2iam_sidecar::dbproxy::standalone::StandaloneOptions {
            proxy: s2iam_sidecar::dbproxy::config::FileDatabaseProxy {
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
                max_session_lifetime: Some(self.max_session_lifetime.clone()),
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

/// `s2iam proxy`: logs at info level (`S2IAM_LOG` overrides) like the sidecar.
pub async fn run(args: &ProxyArgs) -> Result<(), CliError> {
    logging::init_with_default("info");
    s2iam_sidecar::dbproxy::standalone::run(
        &args.options(),
        ProviderConfig::from_env(),
        shutdown_signal(),
    )
    .await?;
    Ok(())
}
