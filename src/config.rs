//! The sidecar's configuration: a TOML file, then environment variables, then
//! flags, each overriding the one before. Built and validated once at start
//! (`s2iam serve --check` stops there); nothing reads configuration later.
//!
//! ```toml
//! [listen]
//! socket = "/run/s2iam/s2iam.sock"   # Unix socket of the local API
//! socket_mode = "0660"
//! tcp = "127.0.0.1:7869"             # optional loopback HTTP (off by default)
//! allow_non_loopback = false         # refuse a non-loopback tcp address unless true
//! allowed_uids = [1000]              # Unix-socket callers allowed (SO_PEERCRED); empty = any
//! tcp_token_file = "/run/s2iam/tcp-token"  # optional: TCP callers must send "Authorization: Bearer <it>"
//!
//! [auth]
//! server_url = "https://authsvc.singlestore.com/auth/iam/:jwtType"
//! allow_http = false
//! timeout = "10s"
//! validate_jwks = false
//!
//! [identity]
//! provider = "aws"                   # optional: skip detection
//! detect_timeout = "5s"
//! startup_timeout = "120s"           # keep retrying detection this long at start
//! gcp_audience = "https://authsvc.singlestore.com"
//!
//! [cache]
//! refresh_at = 0.67                  # fraction of the lifetime
//! jitter = 0.05
//! min_remaining = "60s"
//! idle_evict = "1h"
//! tick = "1s"
//!
//! [access]
//! workspace_groups = ["wg-1"]        # on-demand database tokens allowed; empty = any
//! assume_roles = []                  # roles local callers may ask for; empty = none
//!
//! [log]
//! format = "text"                    # or "json"
//! level = "info"
//!
//! [[token]]                          # fetched at start and kept warm
//! type = "database"
//! workspace_group_id = "wg-1"
//! sink = "/run/s2iam/tokens/database"  # optional file, rewritten atomically on refresh
//! sink_mode = "0640"
//! ```
//!
//! Environment: `S2IAM_CONFIG` (file), `S2IAM_SOCKET`, `S2IAM_TCP_LISTEN`,
//! `S2IAM_JWT_SERVER_URL`, `S2IAM_ALLOW_HTTP`, `S2IAM_LOG_FORMAT`, `S2IAM_LOG`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cache::CachePolicy;
use crate::exchange::JwtType;
use crate::provider::config::Env;
use crate::provider::{CloudProvider, DEFAULT_GCP_AUDIENCE, DEFAULT_ROLE_SESSION_NAME};
use crate::util::parse_duration;

pub const DEFAULT_SOCKET: &str = "/run/s2iam/s2iam.sock";

/// Configuration errors, each naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {setting}: {message}")]
    Invalid { setting: String, message: String },
}

fn invalid(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_string(),
        message: message.into(),
    }
}

/// The file's shape (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    listen: FileListen,
    #[serde(default)]
    auth: FileAuth,
    #[serde(default)]
    identity: FileIdentity,
    #[serde(default)]
    cache: FileCache,
    #[serde(default)]
    access: FileAccess,
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    token: Vec<FileToken>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListen {
    socket: Option<PathBuf>,
    socket_mode: Option<String>,
    tcp: Option<String>,
    allow_non_loopback: Option<bool>,
    allowed_uids: Option<Vec<u32>>,
    tcp_token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    server_url: Option<String>,
    allow_http: Option<bool>,
    timeout: Option<String>,
    validate_jwks: Option<bool>,
    identity_format_preference: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIdentity {
    provider: Option<String>,
    detect_timeout: Option<String>,
    startup_timeout: Option<String>,
    gcp_audience: Option<String>,
    role_session_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    refresh_at: Option<f64>,
    jitter: Option<f64>,
    min_remaining: Option<String>,
    idle_evict: Option<String>,
    tick: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAccess {
    workspace_groups: Option<Vec<String>>,
    assume_roles: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    #[serde(rename = "type")]
    jwt_type: String,
    workspace_group_id: Option<String>,
    assume_role: Option<String>,
    gcp_audience: Option<String>,
    sink: Option<PathBuf>,
    sink_mode: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A token kept warm from start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmToken {
    pub jwt_type: JwtType,
    pub workspace_group_id: Option<String>,
    pub assume_role: Option<String>,
    pub gcp_audience: String,
    pub sink: Option<Sink>,
}

/// A file a token is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    pub path: PathBuf,
    pub mode: u32,
}

/// The validated configuration of `s2iam serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub socket: Option<PathBuf>,
    pub socket_mode: u32,
    pub tcp: Option<SocketAddr>,
    pub allowed_uids: Vec<u32>,
    pub tcp_token_file: Option<PathBuf>,
    pub server_url: Option<String>,
    pub allow_http: bool,
    pub timeout: Duration,
    pub validate_jwks: bool,
    pub identity_format_preference: Option<Vec<String>>,
    pub provider: Option<CloudProvider>,
    pub detect_timeout: Duration,
    pub startup_timeout: Duration,
    pub gcp_audience: String,
    pub role_session_name: String,
    pub cache: CachePolicy,
    pub tick: Duration,
    pub allowed_workspace_groups: Vec<String>,
    pub allowed_assume_roles: Vec<String>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub tokens: Vec<WarmToken>,
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct ServeOverrides {
    pub config: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub no_socket: bool,
    pub tcp: Option<String>,
    pub allow_non_loopback: bool,
    pub server_url: Option<String>,
    pub allow_http: bool,
    pub log_format: Option<String>,
}

impl ServeConfig {
    /// File (from `--config` or `S2IAM_CONFIG`, if any), then environment, then flags.
    pub fn load(env: &Env, flags: &ServeOverrides) -> Result<Self, ConfigError> {
        let path = flags
            .config
            .clone()
            .or_else(|| env.get("S2IAM_CONFIG").map(PathBuf::from));
        let file = match &path {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        Self::build(file, env, flags)
    }

    /// Parses TOML text (for tests and `--check`).
    pub fn from_toml(text: &str, env: &Env, flags: &ServeOverrides) -> Result<Self, ConfigError> {
        let file = parse(text, Path::new("<inline>"))?;
        Self::build(file, env, flags)
    }

    fn build(file: FileConfig, env: &Env, flags: &ServeOverrides) -> Result<Self, ConfigError> {
        let socket = if flags.no_socket {
            None
        } else {
            Some(
                flags
                    .socket
                    .clone()
                    .or_else(|| env.get("S2IAM_SOCKET").map(PathBuf::from))
                    .or(file.listen.socket)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            )
        };
        let tcp_text = flags
            .tcp
            .clone()
            .or_else(|| env.get("S2IAM_TCP_LISTEN"))
            .or(file.listen.tcp);
        let allow_non_loopback =
            flags.allow_non_loopback || file.listen.allow_non_loopback.unwrap_or(false);
        let tcp = tcp_text
            .map(|t| parse_tcp(&t, allow_non_loopback))
            .transpose()?;
        if socket.is_none() && tcp.is_none() {
            return Err(invalid(
                "listen",
                "no listener: give a socket or a tcp address",
            ));
        }
        let cache = cache_policy(&file.cache)?;
        let tick = duration(
            "cache.tick",
            file.cache.tick.as_deref(),
            Duration::from_secs(1),
        )?;
        let log_format = match flags
            .log_format
            .clone()
            .or_else(|| env.get("S2IAM_LOG_FORMAT"))
            .or(file.log.format)
            .as_deref()
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log.format",
                    format!("{other:?} is not text or json"),
                ))
            }
        };
        let gcp_audience = file
            .identity
            .gcp_audience
            .unwrap_or_else(|| DEFAULT_GCP_AUDIENCE.into());
        let tokens = file
            .token
            .into_iter()
            .enumerate()
            .map(|(i, t)| warm_token(i, t, &gcp_audience))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            socket,
            socket_mode: mode(
                "listen.socket_mode",
                file.listen.socket_mode.as_deref(),
                0o660,
            )?,
            tcp,
            allowed_uids: file.listen.allowed_uids.unwrap_or_default(),
            tcp_token_file: file.listen.tcp_token_file,
            server_url: flags
                .server_url
                .clone()
                .or_else(|| env.get("S2IAM_JWT_SERVER_URL"))
                .or(file.auth.server_url),
            allow_http: flags.allow_http
                || env
                    .get("S2IAM_ALLOW_HTTP")
                    .is_some_and(|v| v == "1" || v == "true")
                || file.auth.allow_http.unwrap_or(false),
            timeout: duration(
                "auth.timeout",
                file.auth.timeout.as_deref(),
                Duration::from_secs(10),
            )?,
            validate_jwks: file.auth.validate_jwks.unwrap_or(false),
            identity_format_preference: file.auth.identity_format_preference,
            provider: file
                .identity
                .provider
                .map(|p| {
                    p.parse().map_err(|e: crate::provider::UnknownProvider| {
                        invalid("identity.provider", e.to_string())
                    })
                })
                .transpose()?,
            detect_timeout: duration(
                "identity.detect_timeout",
                file.identity.detect_timeout.as_deref(),
                Duration::from_secs(5),
            )?,
            startup_timeout: duration(
                "identity.startup_timeout",
                file.identity.startup_timeout.as_deref(),
                Duration::from_secs(120),
            )?,
            gcp_audience,
            role_session_name: file
                .identity
                .role_session_name
                .unwrap_or_else(|| DEFAULT_ROLE_SESSION_NAME.into()),
            cache,
            tick,
            allowed_workspace_groups: file.access.workspace_groups.unwrap_or_default(),
            allowed_assume_roles: file.access.assume_roles.unwrap_or_default(),
            log_format,
            log_level: env
                .get("S2IAM_LOG")
                .or(file.log.level)
                .unwrap_or_else(|| "info".into()),
            tokens,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn parse_tcp(text: &str, allow_non_loopback: bool) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| invalid("listen.tcp", format!("{text:?} is not an ip:port address")))?;
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(invalid(
            "listen.tcp",
            format!("{addr} is not a loopback address; tokens would be served to the network (set allow_non_loopback = true to force)"),
        ));
    }
    Ok(addr)
}

fn duration(
    setting: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    value
        .map(|v| parse_duration(v).map_err(|e| invalid(setting, e)))
        .transpose()
        .map(|d| d.unwrap_or(default))
}

fn mode(setting: &str, value: Option<&str>, default: u32) -> Result<u32, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    let m = u32::from_str_radix(v.trim_start_matches("0o"), 8).map_err(|_| {
        invalid(
            setting,
            format!("{v:?} is not an octal file mode like \"0640\""),
        )
    })?;
    if m > 0o777 {
        return Err(invalid(setting, format!("{v:?} is not a file mode")));
    }
    Ok(m)
}

fn cache_policy(c: &FileCache) -> Result<CachePolicy, ConfigError> {
    let d = CachePolicy::default();
    let refresh_at = c.refresh_at.unwrap_or(d.refresh_at);
    if !(0.1..=0.95).contains(&refresh_at) {
        return Err(invalid("cache.refresh_at", "must be between 0.1 and 0.95"));
    }
    let jitter = c.jitter.unwrap_or(d.jitter);
    if !(0.0..=0.2).contains(&jitter) {
        return Err(invalid("cache.jitter", "must be between 0 and 0.2"));
    }
    Ok(CachePolicy {
        refresh_at,
        jitter,
        min_remaining: duration(
            "cache.min_remaining",
            c.min_remaining.as_deref(),
            Duration::from_secs(60),
        )?,
        idle_evict: duration("cache.idle_evict", c.idle_evict.as_deref(), d.idle_evict)?,
        ..d
    })
}

fn warm_token(i: usize, t: FileToken, default_audience: &str) -> Result<WarmToken, ConfigError> {
    let setting = format!("token[{i}]");
    let jwt_type: JwtType = t.jwt_type.parse().map_err(|_| {
        invalid(
            &format!("{setting}.type"),
            format!("{:?} is not database or api", t.jwt_type),
        )
    })?;
    let workspace_group_id = t.workspace_group_id.filter(|s| !s.is_empty());
    if jwt_type == JwtType::Database && workspace_group_id.is_none() {
        return Err(invalid(
            &format!("{setting}.workspace_group_id"),
            "required for database tokens",
        ));
    }
    let sink = match t.sink {
        Some(path) => Some(Sink {
            path,
            mode: mode(
                &format!("{setting}.sink_mode"),
                t.sink_mode.as_deref(),
                0o640,
            )?,
        }),
        None => None,
    };
    Ok(WarmToken {
        jwt_type,
        workspace_group_id,
        assume_role: t.assume_role.filter(|s| !s.is_empty()),
        gcp_audience: t
            .gcp_audience
            .unwrap_or_else(|| default_audience.to_string()),
        sink,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env::from_pairs::<&str, &str>([])
    }

    #[test]
    fn defaults_without_a_file() {
        let c = ServeConfig::load(&env(), &ServeOverrides::default()).unwrap();
        assert_eq!(c.socket.as_deref(), Some(Path::new(DEFAULT_SOCKET)));
        assert_eq!(c.socket_mode, 0o660);
        assert!(c.tcp.is_none());
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert!(c.tokens.is_empty());
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
            [listen]
            socket = "/tmp/x.sock"
            socket_mode = "0600"
            tcp = "127.0.0.1:7869"
            allowed_uids = [1000]
            [auth]
            server_url = "http://127.0.0.1:1/auth/iam/:jwtType"
            allow_http = true
            timeout = "3s"
            [identity]
            provider = "gcp"
            [cache]
            refresh_at = 0.5
            [access]
            workspace_groups = ["wg-1"]
            [[token]]
            type = "database"
            workspace_group_id = "wg-1"
            sink = "/tmp/db"
            [[token]]
            type = "api"
        "#;
        let c = ServeConfig::from_toml(text, &env(), &ServeOverrides::default()).unwrap();
        assert_eq!(c.socket_mode, 0o600);
        assert_eq!(c.tcp.unwrap().port(), 7869);
        assert_eq!(c.provider, Some(CloudProvider::Gcp));
        assert_eq!(c.tokens.len(), 2);
        assert_eq!(c.tokens[0].sink.as_ref().unwrap().mode, 0o640);
        assert_eq!(c.cache.refresh_at, 0.5);
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let text = "[listen]\nsocket = \"/file.sock\"\n";
        let e = Env::from_pairs([("S2IAM_SOCKET", "/env.sock")]);
        let c = ServeConfig::from_toml(text, &e, &ServeOverrides::default()).unwrap();
        assert_eq!(c.socket.as_deref(), Some(Path::new("/env.sock")));
        let flags = ServeOverrides {
            socket: Some("/flag.sock".into()),
            ..Default::default()
        };
        let c = ServeConfig::from_toml(text, &e, &flags).unwrap();
        assert_eq!(c.socket.as_deref(), Some(Path::new("/flag.sock")));
    }

    #[test]
    fn bad_settings_name_themselves() {
        let cases = [
            ("[listen]\ntcp = \"0.0.0.0:80\"", "listen.tcp"),
            ("[listen]\ntcp = \"nope\"", "listen.tcp"),
            ("[listen]\nsocket_mode = \"999\"", "socket_mode"),
            ("[auth]\ntimeout = \"ten\"", "auth.timeout"),
            ("[cache]\nrefresh_at = 2.0", "cache.refresh_at"),
            ("[[token]]\ntype = \"database\"", "workspace_group_id"),
            ("[[token]]\ntype = \"moon\"", "token[0].type"),
            ("[identity]\nprovider = \"moon\"", "identity.provider"),
            ("[log]\nformat = \"xml\"", "log.format"),
            ("[listen]\nsocke = \"/x\"", "unknown field"),
            ("not toml", "not valid"),
        ];
        for (text, needle) in cases {
            let err = ServeConfig::from_toml(text, &env(), &ServeOverrides::default()).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn non_loopback_tcp_needs_force() {
        let flags = ServeOverrides {
            tcp: Some("0.0.0.0:7869".into()),
            allow_non_loopback: true,
            ..Default::default()
        };
        assert!(ServeConfig::from_toml("", &env(), &flags).is_ok());
    }
}
