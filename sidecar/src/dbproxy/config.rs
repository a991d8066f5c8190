//! `[[database_proxy]]`: one local MySQL listener in front of one SingleStore
//! endpoint. Parsed and validated once, with the rest of the sidecar's
//! configuration (or from `s2iam proxy`'s flags, through the same checks).
//!
//! ```toml
//! [[database_proxy]]
//! listen = "127.0.0.1:3306"          # loopback TCP; and/or:
//! socket = "/run/s2iam/mysql.sock"   # a Unix socket (mode socket_mode, default 0660)
//! upstream = "svc-123.aws-virginia-1.svc.singlestore.com:3306"
//! workspace_group_id = "wg-1"        # whose database JWT logs in
//! user = "*"                         # the upstream user; "*" = the JWT's user
//! server_name = "svc-123.aws-virginia-1.svc.singlestore.com"  # default: upstream's host
//! ca_file = "/etc/s2iam/singlestore-ca.pem"   # default: the system's CA store
//! allowed_users = []                 # client user names accepted; empty = any
//! allowed_uids = []                  # callers accepted by uid (socket and TCP); empty = listen.allowed_uids (sidecar), any (s2iam proxy)
//! max_connections = 1000            # 1 ..= 100000
//! connect_timeout = "10s"            # token + TCP + TLS + login (100ms ..= 10m)
//! idle_timeout = "8h"                # no bytes either way this long: closed ("0" = never; ..= 30d)
//! max_session_lifetime = "0"         # older than this: closed between commands, outside a transaction ("0" = never; 1s ..= 30d)
//! drain_timeout = "30s"              # on shutdown, open sessions get this long (0 ..= 1h)
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use s2iam::util::parse_duration;

/// A `[[database_proxy]]` setting that is not valid (the sidecar's configuration
/// reports it as its own `ConfigError::Invalid`).
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {message}")]
pub struct ConfigError {
    /// The setting, e.g. `database_proxy[0].upstream`.
    pub setting: String,
    /// What is wrong with it.
    pub message: String,
}

/// The file's shape.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDatabaseProxy {
    /// Loopback `ip:port` to listen on.
    pub listen: Option<String>,
    /// Unix socket to listen on.
    pub socket: Option<PathBuf>,
    /// Octal mode of the socket file.
    pub socket_mode: Option<String>,
    /// Accept a non-loopback `listen` address.
    pub allow_non_loopback: Option<bool>,
    /// SingleStore endpoint, `host:port`.
    pub upstream: Option<String>,
    /// Name checked against the certificate and sent as SNI.
    pub server_name: Option<String>,
    /// CA certificates (PEM) to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Workspace group whose database JWT logs in.
    pub workspace_group_id: Option<String>,
    /// Role to assume for the JWT.
    pub assume_role: Option<String>,
    /// Upstream user (`*`: the JWT's).
    pub user: Option<String>,
    /// Client user names accepted.
    pub allowed_users: Option<Vec<String>>,
    /// Unix-socket peer uids accepted.
    pub allowed_uids: Option<Vec<u32>>,
    /// Client connections open at once.
    pub max_connections: Option<usize>,
    /// Budget for token, TCP, TLS and login.
    pub connect_timeout: Option<String>,
    /// Close a session silent this long.
    pub idle_timeout: Option<String>,
    /// Close a session older than this at its next quiet moment.
    pub max_session_lifetime: Option<String>,
    /// How long open sessions may go on at shutdown.
    pub drain_timeout: Option<String>,
}

/// One validated database proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseProxyConfig {
    /// Label in logs and metrics: the listen address or socket path.
    pub name: String,
    /// Loopback TCP listener.
    pub listen: Option<SocketAddr>,
    /// Unix-socket listener.
    pub socket: Option<PathBuf>,
    /// Mode of the socket file.
    pub socket_mode: u32,
    /// SingleStore host.
    pub upstream_host: String,
    /// SingleStore port.
    pub upstream_port: u16,
    /// Checked against the server certificate and sent as SNI.
    pub server_name: String,
    /// CA certificates (PEM) to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Workspace group whose database JWT logs in.
    pub workspace_group_id: String,
    /// Role to assume for the JWT.
    pub assume_role: Option<String>,
    /// Upstream user (`*`: the JWT's).
    pub user: String,
    /// Client user names accepted (empty: any).
    pub allowed_users: Vec<String>,
    /// Unix-socket peer uids accepted (empty: any).
    pub allowed_uids: Vec<u32>,
    /// Client connections open at once.
    pub max_connections: usize,
    /// Budget for token, TCP, TLS and login.
    pub connect_timeout: Duration,
    /// `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Sessions older than this are closed between commands, outside a
    /// transaction ([`super::lifetime`]); `None`: never.
    pub max_session_lifetime: Option<Duration>,
    /// How long open sessions may go on at shutdown.
    pub drain_timeout: Duration,
}

impl DatabaseProxyConfig {
    /// The upstream as `host:port`.
    pub fn upstream(&self) -> String {
        if self.upstream_host.contains(':') {
            format!("[{}]:{}", self.upstream_host, self.upstream_port)
        } else {
            format!("{}:{}", self.upstream_host, self.upstream_port)
        }
    }
}

/// The most client connections one database proxy holds (`max_connections`):
/// each needs two descriptors and a task; far below where tokio's semaphore
/// would panic (`Semaphore::MAX_PERMITS`).
pub const MAX_CONNECTIONS: usize = 100_000;
type Range = std::ops::RangeInclusive<Duration>;
/// `connect_timeout`: token, TCP, TLS and login together.
pub const CONNECT_TIMEOUT: Range = Duration::from_millis(100)..=Duration::from_secs(600);
/// `idle_timeout`: 0 (never) up to 30 days.
pub const IDLE_TIMEOUT: Range = Duration::ZERO..=Duration::from_secs(30 * 24 * 3600);
/// `drain_timeout`: 0 (cut at once) up to an hour.
pub const DRAIN_TIMEOUT: Range = Duration::ZERO..=Duration::from_secs(3600);

fn show(range: &Range) -> String {
    format!(
        "{} ..= {}",
        humantime::format_duration(*range.start()),
        humantime::format_duration(*range.end())
    )
}

fn invalid(setting: String, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

/// Validates `database_proxy[i]`.
pub fn build(i: usize, p: FileDatabaseProxy) -> Result<DatabaseProxyConfig, ConfigError> {
    let setting = |field: &str| format!("database_proxy[{i}].{field}");
    let listen = match &p.listen {
        Some(text) => {
            let addr: SocketAddr = text.parse().map_err(|_| {
                invalid(
                    setting("listen"),
                    format!("{text:?} is not an ip:port address"),
                )
            })?;
            if !addr.ip().is_loopback() && !p.allow_non_loopback.unwrap_or(false) {
                return Err(invalid(
                    setting("listen"),
                    format!("{addr} is not a loopback address; anyone who can reach it would log in as the workload (set allow_non_loopback = true to force)"),
                ));
            }
            Some(addr)
        }
        None => None,
    };
    if listen.is_none() && p.socket.is_none() {
        return Err(invalid(
            setting("listen"),
            "give a loopback address (listen) or a Unix socket (socket)",
        ));
    }
    let upstream = p
        .upstream
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            invalid(
                setting("upstream"),
                "required: the SingleStore endpoint as host:port",
            )
        })?;
    let (upstream_host, upstream_port) = split_host_port(upstream).ok_or_else(|| {
        invalid(
            setting("upstream"),
            format!("{upstream:?} is not host:port"),
        )
    })?;
    let server_name = p
        .server_name
        .clone()
        .unwrap_or_else(|| upstream_host.clone());
    rustls::pki_types::ServerName::try_from(server_name.clone()).map_err(|_| {
        invalid(
            setting("server_name"),
            format!("{server_name:?} is not a DNS name or IP address"),
        )
    })?;
    let workspace_group_id = p
        .workspace_group_id
        .clone()
        .filter(|w| !w.trim().is_empty())
        .ok_or_else(|| {
            invalid(
                setting("workspace_group_id"),
                "required: the workspace group whose database JWT logs in",
            )
        })?;
    s2iam::exchange::check_workspace_group_id(&workspace_group_id)
        .map_err(|e| invalid(setting("workspace_group_id"), e.to_string()))?;
    let user = p.user.clone().unwrap_or_else(|| "*".into());
    if user.is_empty() || user.contains('\0') {
        return Err(invalid(setting("user"), "must be a user name or \"*\""));
    }
    let max_connections = p.max_connections.unwrap_or(1000);
    if !(1..=MAX_CONNECTIONS).contains(&max_connections) {
        return Err(invalid(
            setting("max_connections"),
            format!("{max_connections} is outside 1 ..= {MAX_CONNECTIONS}"),
        ));
    }
    let duration = |field: &str, value: &Option<String>, default: Duration, range: Range| {
        let d = match value.as_deref() {
            None => default,
            Some(v) => parse_duration(v).map_err(|e| invalid(setting(field), e.to_string()))?,
        };
        if !range.contains(&d) {
            return Err(invalid(
                setting(field),
                format!(
                    "{} is outside {}",
                    humantime::format_duration(d),
                    show(&range)
                ),
            ));
        }
        Ok(d)
    };
    let connect_timeout = duration(
        "connect_timeout",
        &p.connect_timeout,
        Duration::from_secs(10),
        CONNECT_TIMEOUT,
    )?;
    let idle_timeout = duration(
        "idle_timeout",
        &p.idle_timeout,
        Duration::from_secs(8 * 3600),
        IDLE_TIMEOUT,
    )?;
    // 0 is "never"; anything else lies in MAX_SESSION_LIFETIME.
    let max_session_lifetime = duration(
        "max_session_lifetime",
        &p.max_session_lifetime,
        Duration::ZERO,
        Duration::ZERO..=*super::lifetime::MAX_SESSION_LIFETIME.end(),
    )?;
    if !max_session_lifetime.is_zero()
        && !super::lifetime::MAX_SESSION_LIFETIME.contains(&max_session_lifetime)
    {
        return Err(invalid(
            setting("max_session_lifetime"),
            format!(
                "{} is outside 0 (never) or {}",
                humantime::format_duration(max_session_lifetime),
                show(&super::lifetime::MAX_SESSION_LIFETIME)
            ),
        ));
    }
    let drain_timeout = duration(
        "drain_timeout",
        &p.drain_timeout,
        Duration::from_secs(30),
        DRAIN_TIMEOUT,
    )?;
    let socket_mode = match &p.socket_mode {
        None => 0o660,
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                invalid(
                    setting("socket_mode"),
                    format!("{m:?} is not an octal file mode like \"0660\""),
                )
            })?,
    };
    let name = match (&listen, &p.socket) {
        (Some(addr), _) => addr.to_string(),
        (None, Some(path)) => path.display().to_string(),
        (None, None) => unreachable!("checked above"),
    };
    Ok(DatabaseProxyConfig {
        name,
        listen,
        socket: p.socket,
        socket_mode,
        upstream_host,
        upstream_port,
        server_name,
        ca_file: p.ca_file,
        workspace_group_id,
        assume_role: p.assume_role.filter(|r| !r.is_empty()),
        user,
        allowed_users: p.allowed_users.unwrap_or_default(),
        allowed_uids: p.allowed_uids.unwrap_or_default(),
        max_connections,
        connect_timeout,
        idle_timeout: Some(idle_timeout).filter(|d| !d.is_zero()),
        max_session_lifetime: Some(max_session_lifetime).filter(|d| !d.is_zero()),
        drain_timeout,
    })
}

/// Validates every `[[database_proxy]]`; listeners must not collide.
pub fn build_all(proxies: Vec<FileDatabaseProxy>) -> Result<Vec<DatabaseProxyConfig>, ConfigError> {
    let mut out: Vec<DatabaseProxyConfig> = Vec::new();
    for (i, p) in proxies.into_iter().enumerate() {
        let p = build(i, p)?;
        let clash = out.iter().any(|q| {
            (p.listen.is_some() && p.listen == q.listen && p.listen.is_some_and(|a| a.port() != 0))
                || (p.socket.is_some() && p.socket == q.socket)
        });
        if clash {
            return Err(invalid(
                format!("database_proxy[{i}]"),
                format!("listens where another database proxy does ({})", p.name),
            ));
        }
        out.push(p);
    }
    Ok(out)
}

/// `host:port`, `[v6]:port`; the port is required.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, rest) = rest.split_once(']')?;
        (host, rest.strip_prefix(':')?)
    } else {
        s.rsplit_once(':')?
    };
    if host.is_empty() || host.contains(['/', ' ']) {
        return None;
    }
    Some((host.to_string(), port.parse().ok().filter(|p| *p != 0)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> FileDatabaseProxy {
        FileDatabaseProxy {
            listen: Some("127.0.0.1:3306".into()),
            upstream: Some("svc.example.com:3306".into()),
            workspace_group_id: Some("wg-1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults() {
        let c = build(0, base()).unwrap();
        assert_eq!(c.server_name, "svc.example.com");
        assert_eq!(c.user, "*");
        assert_eq!(c.max_connections, 1000);
        assert_eq!(c.upstream(), "svc.example.com:3306");
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(8 * 3600)));
    }

    #[test]
    fn refuses_bad_settings_naming_them() {
        let cases: Vec<(FileDatabaseProxy, &str)> = vec![
            (
                FileDatabaseProxy {
                    listen: Some("0.0.0.0:3306".into()),
                    ..base()
                },
                "listen",
            ),
            (
                FileDatabaseProxy {
                    listen: None,
                    ..base()
                },
                "listen",
            ),
            (
                FileDatabaseProxy {
                    upstream: None,
                    ..base()
                },
                "upstream",
            ),
            (
                FileDatabaseProxy {
                    upstream: Some("no-port".into()),
                    ..base()
                },
                "upstream",
            ),
            (
                FileDatabaseProxy {
                    workspace_group_id: None,
                    ..base()
                },
                "workspace_group_id",
            ),
            (
                FileDatabaseProxy {
                    max_connections: Some(0),
                    ..base()
                },
                "max_connections",
            ),
            (
                FileDatabaseProxy {
                    connect_timeout: Some("soon".into()),
                    ..base()
                },
                "connect_timeout",
            ),
            (
                FileDatabaseProxy {
                    server_name: Some("bad name!".into()),
                    ..base()
                },
                "server_name",
            ),
        ];
        for (file, field) in cases {
            let e = build(3, file).unwrap_err().to_string();
            assert!(e.contains(&format!("database_proxy[3].{field}")), "{e}");
        }
    }

    #[test]
    fn ipv6_upstream_and_collisions() {
        assert_eq!(split_host_port("[::1]:3306"), Some(("::1".into(), 3306)));
        assert!(build_all(vec![base(), base()]).is_err());
    }
}
