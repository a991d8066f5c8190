//! The config file's shapes: every field optional, unknown fields refused. What
//! they become, and in which order file, environment and flags apply, is in
//! [`super::build`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The file's shape (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) listen: FileListen,
    #[serde(default)]
    pub(super) auth: FileAuth,
    #[serde(default)]
    pub(super) identity: FileIdentity,
    #[serde(default)]
    pub(super) cache: FileCache,
    #[serde(default)]
    pub(super) access: FileAccess,
    #[serde(default)]
    pub(super) log: FileLog,
    #[serde(default)]
    pub(super) token: Vec<FileToken>,
    #[serde(default)]
    pub(super) aws: FileAws,
    #[serde(default)]
    pub(super) aws_profile: Vec<FileAwsProfile>,
    /// `[[template]]`s (see `crate::render::config`).
    #[serde(default)]
    pub(super) template: Vec<crate::render::config::FileTemplate>,
    #[serde(default)]
    pub(super) database_proxy: Vec<crate::dbproxy::config::FileDatabaseProxy>,
    #[serde(default)]
    pub(super) api_proxy: Vec<super::api_proxy::FileApiProxy>,
    #[serde(default)]
    pub(super) audit: FileAudit,
    #[serde(default)]
    pub(super) otel: FileOtel,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAws {
    pub(super) authorization_token_file: Option<PathBuf>,
    pub(super) authorization_token_mode: Option<String>,
    pub(super) region: Option<String>,
    pub(super) s3_endpoint: Option<String>,
    pub(super) s3_path_style: Option<bool>,
    pub(super) min_remaining: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAwsProfile {
    pub(super) name: String,
    pub(super) source: String,
    pub(super) role_arn: Option<String>,
    pub(super) session_name: Option<String>,
    pub(super) duration: Option<String>,
    pub(super) external_id: Option<String>,
    pub(super) provider: Option<String>,
    pub(super) audience: Option<String>,
    #[serde(default)]
    pub(super) warm: bool,
    #[serde(default)]
    pub(super) session_policy: Vec<FilePolicyRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePolicyRule {
    pub(super) buckets: Vec<String>,
    #[serde(default)]
    pub(super) prefixes: Vec<String>,
    pub(super) actions: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileListen {
    pub(super) socket: Option<PathBuf>,
    pub(super) socket_mode: Option<String>,
    pub(super) tcp: Option<String>,
    pub(super) allow_non_loopback: Option<bool>,
    pub(super) allowed_uids: Option<Vec<u32>>,
    pub(super) tcp_token_file: Option<PathBuf>,
    pub(super) header_read_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_uid: Option<usize>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) shutdown_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    pub(super) server_url: Option<String>,
    pub(super) allow_http: Option<bool>,
    pub(super) timeout: Option<String>,
    pub(super) validate_jwks: Option<bool>,
    pub(super) identity_format_preference: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileIdentity {
    pub(super) provider: Option<String>,
    pub(super) detect_timeout: Option<String>,
    pub(super) startup_timeout: Option<String>,
    pub(super) gcp_audience: Option<String>,
    pub(super) role_session_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCache {
    pub(super) refresh: Option<String>,
    pub(super) refresh_at: Option<f64>,
    pub(super) jitter: Option<f64>,
    pub(super) min_remaining: Option<String>,
    pub(super) idle_evict: Option<String>,
    pub(super) tick: Option<String>,
    pub(super) max_on_demand: Option<usize>,
    pub(super) negative_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAccess {
    pub(super) workspace_groups: Option<Vec<String>>,
    pub(super) assume_roles: Option<Vec<String>>,
    pub(super) audiences: Option<Vec<String>>,
    pub(super) cold_fetches_per_second: Option<u32>,
    pub(super) cold_fetches_per_caller_per_second: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileOtel {
    pub(super) endpoint: Option<String>,
    pub(super) service_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAudit {
    pub(super) path: Option<std::path::PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLog {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileToken {
    #[serde(rename = "type")]
    pub(super) jwt_type: String,
    pub(super) workspace_group_id: Option<String>,
    pub(super) assume_role: Option<String>,
    pub(super) gcp_audience: Option<String>,
    pub(super) sink: Option<PathBuf>,
    pub(super) sink_mode: Option<String>,
    pub(super) sink_owner: Option<crate::render::config::IdOrName>,
    pub(super) sink_group: Option<crate::render::config::IdOrName>,
    pub(super) on_change: Option<crate::render::config::FileAction>,
}

/// Reads and parses the file at `path`.
pub(super) fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses TOML text; `path` names it in errors.
pub(super) fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
