//! The sidecar's configuration: a TOML file, then environment variables, then
//! flags, each overriding the one before. Built and validated once at start
//! (`s2iam serve --check` stops there); nothing reads configuration later.
//!
//! [`ServeConfig`] holds one struct per component of the sidecar — listeners,
//! the client (auth service and identity), cache, access rules, logging, AWS
//! vending — so each component takes only its own section. The file's shapes are
//! in [`file`](mod@file), the precedence rules in [`build`], the `[[aws_profile]]`
//! validation in [`aws_profile`], the `[[api_proxy]]` settings in [`api_proxy`].
//!
//! ```toml
//! [listen]
//! socket = "/run/s2iam/s2iam.sock"   # Unix socket of the local API
//! socket_mode = "0660"
//! tcp = "127.0.0.1:7869"             # optional loopback HTTP (off by default)
//! allow_non_loopback = false         # refuse a non-loopback tcp address unless true
//! allowed_uids = [1000]              # callers allowed, by uid, on every local surface: the socket
//!                                    # (SO_PEERCRED), TCP (the kernel's socket table), the proxies; empty = any
//! tcp_token_file = "/run/s2iam/tcp-token"  # optional: TCP callers must send "Authorization: Bearer <it>"
//! header_read_timeout = "10s"        # a request's headers must arrive within this (also closes idle keep-alive)
//! idle_timeout = "60s"               # a connection with no bytes either way for this long is closed
//! max_connections = 512              # per listener; more wait in the kernel's backlog
//! max_connections_per_uid = 128      # per peer uid (default: a quarter of max_connections); more get 503 at once
//! max_header_bytes = 16384           # larger request heads get 431
//! shutdown_timeout = "10s"           # after SIGTERM, connections still open after this are cut
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
//! refresh = "ahead"                  # or "lazy": no background refresh, a request refreshes in line
//! refresh_at = 0.67                  # fraction of the lifetime
//! jitter = 0.05
//! min_remaining = "60s"
//! idle_evict = "1h"
//! tick = "1s"
//! max_on_demand = 1000               # on-demand (unconfigured) keys kept; least recently used dropped
//! negative_ttl = "5s"                # a failed on-demand key answers its error this long, then is forgotten
//!
//! [access]
//! workspace_groups = ["wg-1"]        # on-demand database tokens allowed; empty = any
//! assume_roles = []                  # roles local callers may ask for; empty = none
//! audiences = []                     # GCP audiences callers may ask for besides the configured ones
//! cold_fetches_per_second = 20       # exchanges for keys not in the cache, all callers together
//! cold_fetches_per_caller_per_second = 5  # the same per caller (uid on the socket, address on TCP)
//!
//! [audit]
//! path = "/var/log/s2iam/audit.jsonl"  # one line per credential handed out (never the credential)
//!
//! [otel]                             # traces; the OTEL_* variables take precedence
//! endpoint = "http://127.0.0.1:4318" # OTLP/HTTP base URL (/v1/traces is appended)
//! service_name = "s2iam"
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
//! sink_owner = "app"                 # optional, name or number (sink_group too)
//!
//! [[template]]                       # see crate::render::config
//! source = "/etc/s2iam/my.cnf.j2"
//! destination = "/run/s2iam/my.cnf"
//!
//! [[database_proxy]]                 # connect without a token (see crate::dbproxy::config)
//! listen = "127.0.0.1:3306"
//! upstream = "svc-123.singlestore.com:3306"
//! workspace_group_id = "wg-1"
//!
//! [aws]                              # AWS/S3 credential vending (see s2iam::aws_vending)
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
//!
//! [[api_proxy]]                      # local HTTP proxy adding the JWT (see api_proxy)
//! listen = "127.0.0.1:8081"
//! upstream = "https://svc-xxxx-dml.aws-virginia-6.svc.singlestore.com"
//! token = "database"                 # or "api" (Management API)
//! workspace_group_id = "wg-1"
//! ```
//!
//! Environment: `S2IAM_CONFIG` (file), `S2IAM_CONFIG_TOML` (the file's text, instead
//! of a file), `S2IAM_SOCKET`, `S2IAM_TCP_LISTEN`,
//! `S2IAM_JWT_SERVER_URL`, `S2IAM_ALLOW_HTTP`, `S2IAM_LOG_FORMAT`, `S2IAM_LOG`.

pub mod api_proxy;
pub mod aws_profile;
pub mod build;
pub mod file;
pub mod summary;
pub mod value;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use api_proxy::ApiProxyConfig;
use s2iam::aws_vending::AwsSettings;
use s2iam::cache::CachePolicy;
use s2iam::client::JwtOptions;
use s2iam::env::{Env, ProviderConfig};
use s2iam::exchange::{ExchangeConfig, JwtType};
use s2iam::provider::CloudProvider;
pub use summary::{check_paths, check_sockets};

/// The socket when none is configured.
pub const DEFAULT_SOCKET: &str = "/run/s2iam/s2iam.sock";

/// Configuration errors, each naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A setting has a value that cannot be used.
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        /// Where: `listen.tcp`, `aws_profile[0] (name).role_arn`, ...
        setting: String,
        /// What is wrong, and what would be right.
        message: String,
    },
}

pub(crate) fn invalid(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_string(),
        message: message.into(),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A token kept warm from start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmToken {
    /// Database or API.
    pub jwt_type: JwtType,
    /// Required for database tokens.
    pub workspace_group_id: Option<String>,
    /// A role to assume before the exchange.
    pub assume_role: Option<String>,
    /// The audience of the GCP ID token.
    pub gcp_audience: String,
    /// A file the token is written to on every refresh.
    pub sink: Option<Sink>,
}

/// A file a token is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    /// The file.
    pub path: PathBuf,
    /// Its mode.
    pub mode: u32,
    /// Numeric owner and group (`sink_owner`/`sink_group`, names resolved at load).
    pub owner: Option<u32>,
    /// See `owner`.
    pub group: Option<u32>,
    /// Run when the file is rewritten (`[token.on_change]`).
    pub on_change: Option<crate::render::action::Action>,
}

/// `[listen]`: where the local API listens and who may call it.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The Unix socket; `None` with `--no-socket`.
    pub socket: Option<PathBuf>,
    /// The socket file's mode.
    pub socket_mode: u32,
    /// Loopback HTTP, off by default.
    pub tcp: Option<SocketAddr>,
    /// Unix-socket callers allowed (`SO_PEERCRED`); empty: any.
    pub allowed_uids: Vec<u32>,
    /// TCP callers must send `Authorization: Bearer <contents>`.
    pub tcp_token_file: Option<PathBuf>,
    /// Timeouts and caps of each listener.
    pub limits: ConnLimits,
}

/// What one listener tolerates from its callers (`[listen]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time allowed for a request's headers, counted from when the connection is
    /// ready for one (so it also closes idle keep-alive connections).
    pub header_read_timeout: Duration,
    /// A connection with no bytes read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections per listener; more wait in the kernel's backlog until
    /// one closes.
    pub max_connections: usize,
    /// Open connections per peer uid (on the socket and on TCP); more are
    /// turned away at once. Well below `max_connections` by default (a quarter),
    /// so one user's flood leaves room for everyone else's health probe.
    pub max_connections_per_uid: usize,
    /// Largest request line plus headers; larger gets 431.
    pub max_header_bytes: usize,
    /// After the stop signal, connections still open after this are cut.
    pub shutdown_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_connections_per_uid: 128,
            max_header_bytes: 16 * 1024,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// `[auth]` and `[identity]`: the settings of the sidecar's one client (how it
/// finds its identity and reaches the auth service).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The auth service URL template; `None`: the default.
    pub server_url: Option<String>,
    /// Allow a plain-http auth service (tests, `s2iam dev`).
    pub allow_http: bool,
    /// Deadline of one token request.
    pub timeout: Duration,
    /// Check returned JWTs against the auth service's JWKS.
    pub validate_jwks: bool,
    /// `X-S2IAM-Identity-Format-Preference`; `None`: the default.
    pub identity_format_preference: Option<Vec<String>>,
    /// Skip detection and use this cloud.
    pub provider: Option<CloudProvider>,
    /// Deadline of one detection.
    pub detect_timeout: Duration,
    /// Keep retrying detection this long at start.
    pub startup_timeout: Duration,
    /// Default audience of GCP ID tokens.
    pub gcp_audience: String,
    /// Session name when assuming AWS roles.
    pub role_session_name: String,
}

/// `[cache]`: how tokens are kept warm.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Refresh-ahead, jitter, minimum lifetime, eviction.
    pub policy: CachePolicy,
    /// How often the refresher looks at the cache.
    pub tick: Duration,
}

/// `[access]`: what local callers may ask for.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// On-demand database tokens allowed for these groups; empty: any.
    pub workspace_groups: Vec<String>,
    /// Roles callers may ask to assume; empty: none.
    pub assume_roles: Vec<String>,
    /// GCP audiences callers may ask for besides the default and configured ones.
    pub audiences: Vec<String>,
    /// Exchanges for keys not yet cached, per second: all callers, and each caller.
    pub cold_fetches_per_second: u32,
    /// The same, for each caller (uid on the socket, address on TCP).
    pub cold_fetches_per_caller_per_second: u32,
}

/// `[log]`.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `s2iam=debug`).
    pub level: String,
}

/// The validated configuration of `s2iam serve`, one section per component.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `[listen]`.
    pub listen: ListenConfig,
    /// `[auth]` and `[identity]`.
    pub client: ClientConfig,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[access]`.
    pub access: AccessConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[[token]]`s kept warm from start.
    pub tokens: Vec<WarmToken>,
    /// `[aws]` and the `[[aws_profile]]`s.
    pub aws: AwsSettings,
    /// `[[database_proxy]]`s (see [`crate::dbproxy::config`]).
    pub database_proxies: Vec<crate::dbproxy::DatabaseProxyConfig>,
    /// `[[template]]`s, compiled and rendered with placeholders at load.
    pub templates: Vec<crate::render::TemplateSpec>,
    /// `[[api_proxy]]`: local HTTP proxies to the Data and Management APIs.
    pub api_proxies: Vec<ApiProxyConfig>,
    /// `[audit]`.
    pub audit: AuditConfig,
    /// `[otel]` and the `OTEL_*` variables: where spans go; `None`: tracing off.
    pub otel: Option<s2iam::otel::OtelSettings>,
}

/// `[audit]`: the audit trail (see `serve::audit`).
#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    /// One JSON line per credential handed to a caller is appended here; `None`: off.
    pub path: Option<PathBuf>,
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct ServeOverrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--no-socket`.
    pub no_socket: bool,
    /// `--tcp`.
    pub tcp: Option<String>,
    /// `--allow-non-loopback`.
    pub allow_non_loopback: bool,
    /// `--server-url`.
    pub server_url: Option<String>,
    /// `--allow-http`.
    pub allow_http: bool,
    /// `--log-format`.
    pub log_format: Option<String>,
}

impl ServeConfig {
    /// File (from `--config` or `S2IAM_CONFIG`, if any), then environment, then flags.
    pub fn load(env: &Env, flags: &ServeOverrides) -> Result<Self, ConfigError> {
        let path = flags
            .config
            .clone()
            .or_else(|| env.get("S2IAM_CONFIG").map(PathBuf::from));
        let inline = env
            .get("S2IAM_CONFIG_TOML")
            .filter(|t| !t.trim().is_empty());
        let file = match (&path, inline) {
            (Some(_), Some(_)) => return Err(invalid(
                "S2IAM_CONFIG_TOML",
                "set either a config file (--config, S2IAM_CONFIG) or S2IAM_CONFIG_TOML, not both",
            )),
            (Some(p), None) => file::read(p)?,
            // The whole file's text in one variable: what `s2iam inject` gives the
            // sidecar, so a pod needs no ConfigMap.
            (None, Some(text)) => file::parse(&text, Path::new("$S2IAM_CONFIG_TOML"))?,
            (None, None) => file::FileConfig::default(),
        };
        build::build(file, env, flags)
    }

    /// Parses TOML text (for tests and `--check`).
    pub fn from_toml(text: &str, env: &Env, flags: &ServeOverrides) -> Result<Self, ConfigError> {
        let file = file::parse(text, Path::new("<inline>"))?;
        build::build(file, env, flags)
    }

    /// The options of the sidecar's one [`s2iam::client::Client`].
    pub fn jwt_options(&self, provider_config: ProviderConfig) -> JwtOptions {
        let c = &self.client;
        let mut exchange = ExchangeConfig {
            validate_jwks: c.validate_jwks,
            ..ExchangeConfig::default()
        };
        if let Some(pref) = &c.identity_format_preference {
            exchange.identity_format_preference = pref.clone();
        }
        JwtOptions {
            server_url: c.server_url.clone(),
            allow_http: c.allow_http,
            provider: c.provider,
            force_detect: false,
            timeout: c.timeout,
            detect_timeout: c.detect_timeout,
            exchange,
            provider_config: Some(provider_config),
            // Set by the sidecar, which starts the exporter (`serve::Sidecar`).
            tracer: s2iam::otel::Tracer::off(),
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
    fn config_text_from_the_environment() {
        let e = Env::from_pairs([("S2IAM_CONFIG_TOML", "[listen]\nsocket = \"/x.sock\"\n")]);
        let c = ServeConfig::load(&e, &ServeOverrides::default()).unwrap();
        assert_eq!(c.listen.socket.as_deref(), Some(Path::new("/x.sock")));
        let e = Env::from_pairs([("S2IAM_CONFIG_TOML", "[listen\n")]);
        let err = ServeConfig::load(&e, &ServeOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("S2IAM_CONFIG_TOML"), "{err}");
        let e = Env::from_pairs([
            ("S2IAM_CONFIG_TOML", "[log]\n"),
            ("S2IAM_CONFIG", "/c.toml"),
        ]);
        let err = ServeConfig::load(&e, &ServeOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn defaults_without_a_file() {
        let c = ServeConfig::load(&env(), &ServeOverrides::default()).unwrap();
        assert_eq!(c.listen.socket.as_deref(), Some(Path::new(DEFAULT_SOCKET)));
        assert_eq!(c.listen.socket_mode, 0o660);
        assert!(c.listen.tcp.is_none());
        assert_eq!(c.client.timeout, Duration::from_secs(10));
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
            tcp_token_file = "/tmp/tcp-token"
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
        assert_eq!(c.listen.socket_mode, 0o600);
        assert_eq!(c.listen.tcp.unwrap().port(), 7869);
        assert_eq!(c.client.provider, Some(CloudProvider::Gcp));
        assert_eq!(c.tokens.len(), 2);
        assert_eq!(c.tokens[0].sink.as_ref().unwrap().mode, 0o640);
        assert_eq!(c.cache.policy.refresh_at, 0.5);
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let text = "[listen]\nsocket = \"/file.sock\"\n";
        let e = Env::from_pairs([("S2IAM_SOCKET", "/env.sock")]);
        let c = ServeConfig::from_toml(text, &e, &ServeOverrides::default()).unwrap();
        assert_eq!(c.listen.socket.as_deref(), Some(Path::new("/env.sock")));
        let flags = ServeOverrides {
            socket: Some("/flag.sock".into()),
            ..Default::default()
        };
        let c = ServeConfig::from_toml(text, &e, &flags).unwrap();
        assert_eq!(c.listen.socket.as_deref(), Some(Path::new("/flag.sock")));
    }

    #[test]
    fn bad_settings_name_themselves() {
        let cases = [
            ("[listen]\ntcp = \"0.0.0.0:80\"", "listen.tcp"),
            ("[listen]\ntcp = \"nope\"", "listen.tcp"),
            ("[listen]\nsocket_mode = \"999\"", "socket_mode"),
            ("[auth]\ntimeout = \"ten\"", "auth.timeout"),
            ("[cache]\nrefresh_at = 2.0", "cache.refresh_at"),
            ("[cache]\nrefresh = \"eager\"", "cache.refresh"),
            (
                "[cache]\nrefresh = \"lazy\"\n[[token]]\ntype = \"api\"\nsink = \"/tmp/t\"",
                "cannot keep [[template]] files or token sinks fresh",
            ),
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
    fn lazy_refresh_is_a_cache_mode() {
        let c = ServeConfig::from_toml("", &env(), &ServeOverrides::default()).unwrap();
        assert_eq!(c.cache.policy.mode, s2iam::cache::RefreshMode::Ahead);
        let c = ServeConfig::from_toml(
            "[cache]\nrefresh = \"lazy\"\n[[token]]\ntype = \"api\"",
            &env(),
            &ServeOverrides::default(),
        )
        .unwrap();
        assert_eq!(c.cache.policy.mode, s2iam::cache::RefreshMode::Lazy);
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
