//! Flags several commands share, and the reference's Go-style single-dash flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use s2iam::provider::{CloudProvider, DEFAULT_GCP_AUDIENCE, DEFAULT_ROLE_SESSION_NAME};

use super::CliError;

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
    /// Timeout for operations (e.g. 10s, 1m; 10ms to 1h).
    #[arg(long, default_value = "10s", value_parser = super::ranges::timeout)]
    pub timeout: Duration,
    /// Enable verbose logging (stderr; secrets are never logged).
    #[arg(long)]
    pub verbose: bool,
}

/// Where AWS commands get credentials: the sidecar's socket, else the config file.
#[derive(Debug, Clone, Args)]
pub struct AwsSourceArgs {
    /// The credential profile (`[[aws_profile]]` name).
    #[arg(long)]
    pub profile: String,
    /// Unix socket of the sidecar (default: $S2IAM_SOCKET, else /run/s2iam/s2iam.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Config file to resolve the profile in-process when no sidecar answers
    /// (default: $S2IAM_CONFIG).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Give up after this long (10ms to 1h).
    #[arg(long, default_value = "30s", value_parser = super::ranges::timeout)]
    pub timeout: Duration,
}

impl AwsSourceArgs {
    /// The sidecar client's options.
    pub fn options(&self) -> s2iam_sidecar::sidecar_client::aws_credentials::LocalOptions {
        let provider_config = s2iam::ProviderConfig::from_env();
        s2iam_sidecar::sidecar_client::aws_credentials::LocalOptions {
            socket: s2iam_sidecar::sidecar_client::default_socket(
                self.socket.as_deref(),
                &provider_config.env,
            ),
            config: self.config.clone(),
            timeout: self.timeout,
            provider_config,
        }
    }
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

/// `--provider`, checked (empty means detect).
pub fn parse_provider(flags: &IdentityFlags) -> Result<Option<CloudProvider>, CliError> {
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
