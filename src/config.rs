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
//! allowed_uids = [1000]              # Unix-socket callers allowed (SO_PEERCRED); empty = any.
//!                                    # Not checkable on TCP: with tcp on, tcp_token_file is required
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
//!
//! [aws]                              # AWS/S3 credential vending (see crate::aws_creds)
//! authorization_token_file = "/run/s2iam/aws-token"  # random token written at start
//! authorization_token_mode = "0640"
//! region = "us-east-1"               # default: AWS_REGION, AWS_DEFAULT_REGION, us-east-1
//! s3_endpoint = "https://s3.example.com"  # S3-compatible store for presigning
//! s3_path_style = false
//! min_remaining = "5m"               # never hand out credentials with less left (>= 5m)
//!
//! [[aws_profile]]
//! name = "analytics"
//! source = "assume_role"             # or "self", "web_identity"
//! role_arn = "arn:aws:iam::123456789012:role/data"
//! session_name = "s2iam-session"
//! duration = "1h"
//! external_id = "..."                # assume_role only
//! # provider = "gcp"                 # web_identity: gcp or azure (default: detected)
//! # audience = "sts.amazonaws.com"   # web_identity: GCP audience / Azure resource
//! [[aws_profile.session_policy]]
//! buckets = ["*-analytics-*"]
//! prefixes = ["reports/"]            # optional; default the whole bucket
//! actions = ["read", "list"]         # read, write, delete, list, all
//! ```
//!
//! Environment: `S2IAM_CONFIG` (file), `S2IAM_SOCKET`, `S2IAM_TCP_LISTEN`,
//! `S2IAM_JWT_SERVER_URL`, `S2IAM_ALLOW_HTTP`, `S2IAM_LOG_FORMAT`, `S2IAM_LOG`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::aws_creds::{AwsProfile, AwsSettings, PolicyRule, ProfileSource};
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
    #[serde(default)]
    aws: FileAws,
    #[serde(default)]
    aws_profile: Vec<FileAwsProfile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAws {
    authorization_token_file: Option<PathBuf>,
    authorization_token_mode: Option<String>,
    region: Option<String>,
    s3_endpoint: Option<String>,
    s3_path_style: Option<bool>,
    min_remaining: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAwsProfile {
    name: String,
    source: String,
    role_arn: Option<String>,
    session_name: Option<String>,
    duration: Option<String>,
    external_id: Option<String>,
    provider: Option<String>,
    audience: Option<String>,
    #[serde(default)]
    warm: bool,
    #[serde(default)]
    session_policy: Vec<FilePolicyRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePolicyRule {
    buckets: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    actions: Vec<String>,
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
    /// `[aws]` and the `[[aws_profile]]`s.
    pub aws: AwsSettings,
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
        // allowed_uids is checked with SO_PEERCRED, which TCP has not: refuse a
        // config that would look restricted but serve any local process over TCP.
        let uids_set = file
            .listen
            .allowed_uids
            .as_ref()
            .is_some_and(|u| !u.is_empty());
        if uids_set && tcp.is_some() && file.listen.tcp_token_file.is_none() {
            return Err(invalid(
                "listen.allowed_uids",
                "applies to the Unix socket only, and listen.tcp is on without listen.tcp_token_file: any local process could use TCP; set tcp_token_file or turn tcp off",
            ));
        }
        let cache = cache_policy(&file.cache)?;
        let tick = duration(
            "cache.tick",
            file.cache.tick.as_deref(),
            Duration::from_secs(1),
            millis(10)..=secs(60),
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
        let aws = aws_settings(file.aws, file.aws_profile)?;
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
                millis(100)..=secs(600),
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
                millis(100)..=secs(600),
            )?,
            startup_timeout: duration(
                "identity.startup_timeout",
                file.identity.startup_timeout.as_deref(),
                Duration::from_secs(120),
                Duration::ZERO..=secs(24 * 3600),
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
            aws,
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

/// A duration setting, refused outside `limits` (a zero `cache.tick` would stop
/// both refreshers; a 100-year `auth.timeout` would overflow the deadline clock).
fn duration(
    setting: &str,
    value: Option<&str>,
    default: Duration,
    limits: std::ops::RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let d = parse_duration(text).map_err(|e| invalid(setting, e.to_string()))?;
    if !limits.contains(&d) {
        let show = |d: &Duration| humantime::format_duration(*d).to_string();
        return Err(invalid(
            setting,
            format!(
                "{:?} is outside {} ..= {}",
                crate::util::snippet(text, 40),
                show(limits.start()),
                show(limits.end())
            ),
        ));
    }
    Ok(d)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
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
            // Below half the auth service's one-hour token lifetime, else a fresh
            // token would already be "too old" to hand out.
            Duration::ZERO..=secs(30 * 60),
        )?,
        idle_evict: duration(
            "cache.idle_evict",
            c.idle_evict.as_deref(),
            d.idle_evict,
            secs(1)..=secs(7 * 24 * 3600),
        )?,
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

fn aws_settings(a: FileAws, profiles: Vec<FileAwsProfile>) -> Result<AwsSettings, ConfigError> {
    let d = AwsSettings::default();
    let min_remaining = duration(
        "aws.min_remaining",
        a.min_remaining.as_deref(),
        d.min_remaining,
        // Vended credentials live at most 12 h (STS).
        Duration::ZERO..=secs(6 * 3600),
    )?;
    if min_remaining < crate::aws_creds::MIN_REMAINING {
        return Err(invalid(
            "aws.min_remaining",
            "must be at least 5m: AWS SDKs refresh vended credentials only seconds before they expire",
        ));
    }
    if let Some(r) = &a.region {
        let ok = !r.is_empty()
            && r.len() <= 32
            && r.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(invalid(
                "aws.region",
                format!("{r:?} is not a region name like \"us-east-1\""),
            ));
        }
    }
    if let Some(e) = &a.s3_endpoint {
        let ok = url::Url::parse(e).ok().is_some_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && u.query().is_none()
        });
        if !ok {
            return Err(invalid(
                "aws.s3_endpoint",
                format!("{e:?} is not an http(s) URL without a query"),
            ));
        }
    }
    let mut out: Vec<AwsProfile> = Vec::new();
    for (i, p) in profiles.into_iter().enumerate() {
        let profile = aws_profile(i, p, min_remaining)?;
        if out.iter().any(|q| q.name == profile.name) {
            return Err(invalid(
                &format!("aws_profile[{i}].name"),
                format!("profile {:?} is defined twice", profile.name),
            ));
        }
        out.push(profile);
    }
    Ok(AwsSettings {
        authorization_token_file: a.authorization_token_file,
        authorization_token_mode: mode(
            "aws.authorization_token_mode",
            a.authorization_token_mode.as_deref(),
            d.authorization_token_mode,
        )?,
        region: a.region,
        s3_endpoint: a.s3_endpoint.map(|e| e.trim_end_matches('/').to_string()),
        s3_path_style: a.s3_path_style.unwrap_or(false),
        min_remaining,
        profiles: out,
    })
}

fn aws_profile(
    i: usize,
    p: FileAwsProfile,
    min_remaining: Duration,
) -> Result<AwsProfile, ConfigError> {
    let setting = |field: &str| format!("aws_profile[{i}].{field}");
    crate::aws_creds::validate_profile_name(&p.name).map_err(|e| invalid(&setting("name"), e))?;
    let named = |field: &str| format!("aws_profile[{i}] ({}).{field}", p.name);
    let needs_role = matches!(p.source.as_str(), "assume_role" | "web_identity");
    let only = |field: &str, present: bool, allowed: &[&str]| {
        if present && !allowed.contains(&p.source.as_str()) {
            Err(invalid(
                &named(field),
                format!(
                    "applies to source = {} only",
                    allowed
                        .iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ))
        } else {
            Ok(())
        }
    };
    only(
        "role_arn",
        p.role_arn.is_some(),
        &["assume_role", "web_identity"],
    )?;
    only(
        "session_name",
        p.session_name.is_some(),
        &["assume_role", "web_identity"],
    )?;
    only(
        "duration",
        p.duration.is_some(),
        &["assume_role", "web_identity"],
    )?;
    only("external_id", p.external_id.is_some(), &["assume_role"])?;
    only("provider", p.provider.is_some(), &["web_identity"])?;
    only("audience", p.audience.is_some(), &["web_identity"])?;
    if !p.session_policy.is_empty() && !needs_role {
        return Err(invalid(
            &named("session_policy"),
            "STS applies session policies only when assuming a role: use source = \"assume_role\" or \"web_identity\"",
        ));
    }
    let role_arn = if needs_role {
        let arn = p
            .role_arn
            .clone()
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| invalid(&named("role_arn"), "required for this source"))?;
        crate::provider::aws::validate_role_arn(&arn)
            .map_err(|e| invalid(&named("role_arn"), format!("{arn:?}: {e}")))?;
        arn.trim().to_string()
    } else {
        String::new()
    };
    let session_name = p
        .session_name
        .clone()
        .unwrap_or_else(|| DEFAULT_ROLE_SESSION_NAME.into());
    let name_ok = (2..=64).contains(&session_name.len())
        && session_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if !name_ok {
        return Err(invalid(
            &named("session_name"),
            format!("{session_name:?}: 2-64 characters of A-Z, a-z, 0-9 and _+=,.@-"),
        ));
    }
    let duration_value = match &p.duration {
        Some(text) => {
            let d = parse_duration(text).map_err(|e| invalid(&named("duration"), e.to_string()))?;
            if !(900..=43_200).contains(&d.as_secs()) {
                return Err(invalid(
                    &named("duration"),
                    "must be between 15m and 12h (STS limits)",
                ));
            }
            if d <= min_remaining {
                return Err(invalid(
                    &named("duration"),
                    "must be longer than aws.min_remaining",
                ));
            }
            Some(d)
        }
        None => None,
    };
    if let Some(id) = &p.external_id {
        let ok = (2..=1224).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c));
        if !ok {
            return Err(invalid(
                &named("external_id"),
                "2-1224 characters of A-Z, a-z, 0-9 and _+=,.@:/-",
            ));
        }
    }
    let source = match p.source.as_str() {
        "self" => ProfileSource::Workload,
        "assume_role" => ProfileSource::AssumeRole {
            role_arn,
            session_name,
            duration: duration_value,
            external_id: p.external_id.clone(),
        },
        "web_identity" => {
            let provider = match p.provider.as_deref() {
                None => None,
                Some(text) => match text.parse::<CloudProvider>() {
                    Ok(k @ (CloudProvider::Gcp | CloudProvider::Azure)) => Some(k),
                    _ => {
                        return Err(invalid(
                            &named("provider"),
                            format!("{text:?}: web identity comes from gcp or azure"),
                        ))
                    }
                },
            };
            if p.audience.as_deref().is_some_and(|a| a.trim().is_empty()) {
                return Err(invalid(&named("audience"), "must not be empty"));
            }
            ProfileSource::WebIdentity {
                role_arn,
                session_name,
                duration: duration_value,
                provider,
                audience: p.audience.clone(),
            }
        }
        other => {
            return Err(invalid(
                &named("source"),
                format!("{other:?} is not self, assume_role or web_identity"),
            ))
        }
    };
    let mut rules = Vec::new();
    for (j, r) in p.session_policy.iter().enumerate() {
        let rule_setting = named(&format!("session_policy[{j}]"));
        let rule = PolicyRule {
            buckets: r.buckets.clone(),
            prefixes: r.prefixes.clone(),
            actions: crate::aws_creds::policy::parse_actions(&r.actions)
                .map_err(|e| invalid(&format!("{rule_setting}.actions"), e))?,
        };
        rule.validate().map_err(|e| {
            let (field, message) = e.split_once(": ").unwrap_or(("", e.as_str()));
            invalid(&format!("{rule_setting}.{field}"), message)
        })?;
        rules.push(rule);
    }
    let profile = AwsProfile {
        name: p.name.clone(),
        source,
        rules,
        warm: p.warm,
    };
    if let Some(policy) = profile.session_policy() {
        let chars = policy.chars().count();
        if chars > crate::aws_creds::policy::MAX_POLICY_CHARS {
            return Err(invalid(
                &named("session_policy"),
                format!(
                    "the generated policy has {chars} characters; STS accepts at most {}: use fewer buckets or prefixes",
                    crate::aws_creds::policy::MAX_POLICY_CHARS
                ),
            ));
        }
    }
    Ok(profile)
}

/// What `serve --check` prints: every effective setting, one per line, in the
/// config file's terms (durations as `1m 30s`, file modes in octal).
impl std::fmt::Display for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("(none)".to_string(), |p| p.display().to_string())
        };
        let list = |v: &[String]| {
            if v.is_empty() {
                "(any)".to_string()
            } else {
                v.join(", ")
            }
        };
        writeln!(f, "[listen]")?;
        writeln!(
            f,
            "  socket = {} (mode {:04o})",
            path(&self.socket),
            self.socket_mode
        )?;
        writeln!(
            f,
            "  tcp = {}",
            self.tcp.map_or("(off)".into(), |a| a.to_string())
        )?;
        let uids: Vec<String> = self.allowed_uids.iter().map(u32::to_string).collect();
        writeln!(f, "  allowed_uids = {} (Unix socket only)", list(&uids))?;
        writeln!(f, "  tcp_token_file = {}", path(&self.tcp_token_file))?;
        writeln!(f, "[auth]")?;
        writeln!(
            f,
            "  server_url = {}",
            self.server_url
                .as_deref()
                .unwrap_or("(S2IAM_JWT_SERVER_URL, else production)")
        )?;
        writeln!(f, "  allow_http = {}", self.allow_http)?;
        writeln!(f, "  timeout = {}", d(self.timeout))?;
        writeln!(f, "  validate_jwks = {}", self.validate_jwks)?;
        writeln!(
            f,
            "  identity_format_preference = {}",
            self.identity_format_preference
                .as_deref()
                .map_or("(server default)".into(), |v| v.join(", "))
        )?;
        writeln!(f, "[identity]")?;
        writeln!(
            f,
            "  provider = {}",
            self.provider.map_or("(detect)".into(), |p| p.to_string())
        )?;
        writeln!(f, "  detect_timeout = {}", d(self.detect_timeout))?;
        writeln!(f, "  startup_timeout = {}", d(self.startup_timeout))?;
        writeln!(f, "  gcp_audience = {}", self.gcp_audience)?;
        writeln!(f, "  role_session_name = {}", self.role_session_name)?;
        let c = &self.cache;
        writeln!(f, "[cache]")?;
        writeln!(f, "  refresh_at = {}", c.refresh_at)?;
        writeln!(f, "  jitter = {}", c.jitter)?;
        writeln!(f, "  min_remaining = {}", d(c.min_remaining))?;
        writeln!(f, "  idle_evict = {}", d(c.idle_evict))?;
        writeln!(f, "  tick = {}", d(self.tick))?;
        writeln!(f, "[access]")?;
        writeln!(
            f,
            "  workspace_groups = {}",
            list(&self.allowed_workspace_groups)
        )?;
        let roles = if self.allowed_assume_roles.is_empty() {
            "(none)".to_string()
        } else {
            self.allowed_assume_roles.join(", ")
        };
        writeln!(f, "  assume_roles = {roles}")?;
        writeln!(f, "[log]")?;
        let format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        writeln!(f, "  format = {format}")?;
        writeln!(f, "  level = {}", self.log_level)?;
        for t in &self.tokens {
            writeln!(f, "[[token]]")?;
            writeln!(f, "  type = {}", t.jwt_type)?;
            if let Some(wg) = &t.workspace_group_id {
                writeln!(f, "  workspace_group_id = {wg}")?;
            }
            if let Some(role) = &t.assume_role {
                writeln!(f, "  assume_role = {role}")?;
            }
            if let Some(sink) = &t.sink {
                writeln!(
                    f,
                    "  sink = {} (mode {:04o})",
                    sink.path.display(),
                    sink.mode
                )?;
            }
        }
        let a = &self.aws;
        if !a.profiles.is_empty() || a.authorization_token_file.is_some() {
            writeln!(f, "[aws]")?;
            writeln!(
                f,
                "  authorization_token_file = {} (mode {:04o})",
                path(&a.authorization_token_file),
                a.authorization_token_mode
            )?;
            writeln!(f, "  min_remaining = {}", d(a.min_remaining))?;
            for p in &a.profiles {
                writeln!(f, "[[aws_profile]]")?;
                writeln!(f, "  name = {}", p.name)?;
                writeln!(f, "  source = {}", p.source.kind())?;
                if let Some(arn) = p.source.role_arn() {
                    writeln!(f, "  role_arn = {arn}")?;
                }
                writeln!(f, "  session_policy rules = {}", p.rules.len())?;
            }
        }
        Ok(())
    }
}

/// For `serve --check`: the socket's directory exists or can be created (its
/// nearest existing ancestor is a writable directory), so a path under a file, in
/// `/proc` or on a read-only mount fails the check rather than the start.
pub fn check_socket_dir(socket: &Path) -> Result<(), ConfigError> {
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let mut ancestor = dir;
    loop {
        match std::fs::metadata(ancestor) {
            Ok(meta) if !meta.is_dir() => {
                return Err(invalid(
                    "listen.socket",
                    format!("{} is not a directory", ancestor.display()),
                ))
            }
            Ok(meta) if ancestor != dir && meta.permissions().readonly() => {
                return Err(invalid(
                    "listen.socket",
                    format!(
                        "cannot create {}: {} is read-only",
                        dir.display(),
                        ancestor.display()
                    ),
                ))
            }
            Ok(_) => return Ok(()),
            Err(_) => match ancestor.parent() {
                Some(up) if !up.as_os_str().is_empty() => ancestor = up,
                _ => return Ok(()),
            },
        }
    }
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

    const AWS: &str = r#"
        [aws]
        authorization_token_file = "/tmp/aws-token"
        region = "eu-west-1"
        s3_endpoint = "http://127.0.0.1:9000/"
        s3_path_style = true
        [[aws_profile]]
        name = "analytics"
        source = "assume_role"
        role_arn = "arn:aws:iam::123456789012:role/data"
        duration = "1h"
        external_id = "ext-1"
        [[aws_profile.session_policy]]
        buckets = ["*-analytics-*"]
        actions = ["read", "list"]
        [[aws_profile]]
        name = "admin"
        source = "self"
        [[aws_profile]]
        name = "gcp-s3"
        source = "web_identity"
        role_arn = "arn:aws:iam::123456789012:role/from-gcp"
        provider = "gcp"
        audience = "sts.amazonaws.com"
    "#;

    #[test]
    fn aws_profiles_parse() {
        let c = ServeConfig::from_toml(AWS, &env(), &ServeOverrides::default()).unwrap();
        let aws = &c.aws;
        assert_eq!(aws.min_remaining, Duration::from_secs(300));
        assert_eq!(aws.authorization_token_mode, 0o640);
        assert_eq!(aws.s3_endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(aws.profiles.len(), 3);
        let a = aws.profile("analytics").unwrap();
        assert_eq!(
            a.source,
            ProfileSource::AssumeRole {
                role_arn: "arn:aws:iam::123456789012:role/data".into(),
                session_name: "s2iam-session".into(),
                duration: Some(Duration::from_secs(3600)),
                external_id: Some("ext-1".into()),
            }
        );
        assert!(a
            .session_policy()
            .unwrap()
            .contains("arn:aws:s3:::*-analytics-*/*"));
        assert_eq!(
            aws.profile("admin").unwrap().source,
            ProfileSource::Workload
        );
        assert!(aws.profile("admin").unwrap().session_policy().is_none());
        assert!(matches!(
            aws.profile("gcp-s3").unwrap().source,
            ProfileSource::WebIdentity {
                provider: Some(CloudProvider::Gcp),
                ..
            }
        ));
        let none = ServeConfig::from_toml("", &env(), &ServeOverrides::default()).unwrap();
        assert!(none.aws.profiles.is_empty());
    }

    #[test]
    fn bad_aws_settings_name_themselves() {
        let p = |body: &str| format!("[[aws_profile]]\nname = \"p\"\n{body}");
        let role = "role_arn = \"arn:aws:iam::123456789012:role/r\"\n";
        let cases = [
            ("[aws]\nmin_remaining = \"60s\"".to_string(), "aws.min_remaining"),
            ("[aws]\nregion = \"US East\"".to_string(), "aws.region"),
            ("[aws]\ns3_endpoint = \"ftp://x\"".to_string(), "aws.s3_endpoint"),
            ("[aws]\nauthorization_token_mode = \"9\"".to_string(), "aws.authorization_token_mode"),
            ("[aws]\ntoken = \"x\"".to_string(), "unknown field"),
            ("[[aws_profile]]\nname = \"a b\"\nsource = \"self\"".to_string(), "aws_profile[0].name"),
            (p("source = \"moon\""), "(p).source"),
            (p("source = \"assume_role\""), "(p).role_arn"),
            (p("source = \"assume_role\"\nrole_arn = \"arn:aws:iam::1:role/r\""), "(p).role_arn"),
            (p("source = \"self\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\""), "(p).role_arn"),
            (p(&format!("source = \"assume_role\"\n{role}duration = \"5m\"")), "(p).duration"),
            (p(&format!("source = \"assume_role\"\n{role}session_name = \"a b\"")), "(p).session_name"),
            (p(&format!("source = \"assume_role\"\n{role}provider = \"gcp\"")), "(p).provider"),
            (p(&format!("source = \"web_identity\"\n{role}provider = \"aws\"")), "(p).provider"),
            (p(&format!("source = \"web_identity\"\n{role}external_id = \"xx\"")), "(p).external_id"),
            (p("source = \"self\"\n[[aws_profile.session_policy]]\nbuckets = [\"b\"]\nactions = [\"read\"]"), "(p).session_policy"),
            (p(&format!("source = \"assume_role\"\n{role}[[aws_profile.session_policy]]\nbuckets = [\"B!\"]\nactions = [\"read\"]")), "session_policy[0].buckets"),
            (p(&format!("source = \"assume_role\"\n{role}[[aws_profile.session_policy]]\nbuckets = [\"b\"]\nactions = [\"fly\"]")), "session_policy[0].actions"),
            (p(&format!("source = \"assume_role\"\n{role}[[aws_profile.session_policy]]\nbuckets = [\"b\"]\nprefixes = [\"a*\"]\nactions = [\"read\"]")), "session_policy[0].prefixes"),
            (format!("{}\n{}", p("source = \"self\""), p("source = \"self\"")), "defined twice"),
        ];
        for (text, needle) in cases {
            let err =
                ServeConfig::from_toml(&text, &env(), &ServeOverrides::default()).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}\n=> {err}");
        }
    }

    #[test]
    fn oversized_session_policy_is_refused() {
        let buckets: Vec<String> = (0..60).map(|i| format!("\"bucket-number-{i}\"")).collect();
        let text = format!(
            "[[aws_profile]]\nname = \"big\"\nsource = \"assume_role\"\nrole_arn = \"arn:aws:iam::123456789012:role/r\"\n[[aws_profile.session_policy]]\nbuckets = [{}]\nactions = [\"all\"]",
            buckets.join(",")
        );
        let err = ServeConfig::from_toml(&text, &env(), &ServeOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("at most 2048"), "{err}");
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
