//! `[[api_proxy]]` in the sidecar config: the file's shape and its validation.
//!
//! ```toml
//! [[api_proxy]]
//! name = "data-api"                  # in logs and metrics; default "api_proxy[N]"
//! listen = "127.0.0.1:8081"          # loopback only
//! socket = "/run/s2iam/data-api.sock"  # optional Unix socket (mode listen.socket_mode)
//! upstream = "https://svc-xxxx-dml.aws-virginia-6.svc.singlestore.com"
//! token = "database"                 # the Data API: a database JWT ...
//! workspace_group_id = "wg-1"        # ... for this workspace group
//! ca_file = "/etc/s2iam/upstream-ca.pem"  # optional: trust this CA (PEM) besides the built-in Mozilla roots
//! connect_timeout = "10s"
//! timeout = "5m"                     # until the response headers (request upload included), and longest silence in a body
//! max_connections = 256              # client connections served at once
//!
//! [[api_proxy]]
//! name = "management-api"
//! listen = "127.0.0.1:8082"
//! upstream = "https://api.singlestore.com"
//! token = "api"                      # the Management API: the API JWT
//! ```
//!
//! `upstream` must be `https://` unless `auth.allow_http` is on (testing only).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};
use s2iam::exchange::JwtType;

/// One `[[api_proxy]]` table as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApiProxy {
    name: Option<String>,
    listen: Option<String>,
    socket: Option<PathBuf>,
    upstream: String,
    token: String,
    workspace_group_id: Option<String>,
    ca_file: Option<PathBuf>,
    connect_timeout: Option<String>,
    timeout: Option<String>,
    max_connections: Option<usize>,
}

/// `connect_timeout`: reaching the upstream.
pub const CONNECT_TIMEOUT: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(600);
/// `timeout`: until the response headers, and the longest silence in a body.
pub const TIMEOUT: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// Which JWT the proxy adds to every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyToken {
    /// The database JWT of a workspace group (the Data API).
    Database {
        /// The workspace group the token is for.
        workspace_group_id: String,
    },
    /// The API JWT (the Management API).
    Api,
}

impl ProxyToken {
    /// The kind of JWT the auth service is asked for.
    pub fn jwt_type(&self) -> JwtType {
        match self {
            ProxyToken::Database { .. } => JwtType::Database,
            ProxyToken::Api => JwtType::Api,
        }
    }

    /// The workspace group, for a database token.
    pub fn workspace_group_id(&self) -> Option<&str> {
        match self {
            ProxyToken::Database { workspace_group_id } => Some(workspace_group_id),
            ProxyToken::Api => None,
        }
    }
}

/// A validated `[[api_proxy]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiProxyConfig {
    /// The name in logs and metric labels.
    pub name: String,
    /// Loopback TCP address to listen on.
    pub listen: Option<SocketAddr>,
    /// Unix socket to listen on.
    pub socket: Option<PathBuf>,
    /// Base URL without a trailing slash; the client's path and query are appended.
    pub upstream: String,
    /// Which JWT is added to every request.
    pub token: ProxyToken,
    /// Extra CA certificates (PEM) trusted for the upstream, beside the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// How long connecting to the upstream may take.
    pub connect_timeout: Duration,
    /// How long a whole request may take, counted from its start.
    pub timeout: Duration,
    /// Client connections served at once; more wait for a free slot.
    pub max_connections: usize,
}

impl ApiProxyConfig {
    /// A proxy on `listen` to `upstream` with the default limits.
    pub fn new(name: &str, listen: SocketAddr, upstream: &str, token: ProxyToken) -> Self {
        Self {
            name: name.to_string(),
            listen: Some(listen),
            socket: None,
            upstream: upstream.trim_end_matches('/').to_string(),
            token,
            ca_file: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            max_connections: 256,
        }
    }
}

/// Validates every `[[api_proxy]]`; `allow_http` is `auth.allow_http`.
pub fn parse_all(
    proxies: Vec<FileApiProxy>,
    allow_http: bool,
) -> Result<Vec<ApiProxyConfig>, ConfigError> {
    let mut out: Vec<ApiProxyConfig> = Vec::new();
    for (i, p) in proxies.into_iter().enumerate() {
        let proxy = parse_one(i, p, allow_http)?;
        let setting = format!("api_proxy[{i}]");
        if out.iter().any(|q| q.name == proxy.name) {
            return Err(invalid(
                &format!("{setting}.name"),
                format!("{:?} is used twice", proxy.name),
            ));
        }
        let same_listener = |q: &ApiProxyConfig| {
            (proxy.listen.is_some() && q.listen == proxy.listen)
                || (proxy.socket.is_some() && q.socket == proxy.socket)
        };
        if out.iter().any(same_listener) {
            return Err(invalid(
                &setting,
                "listens where another api_proxy already does",
            ));
        }
        out.push(proxy);
    }
    Ok(out)
}

fn parse_one(i: usize, p: FileApiProxy, allow_http: bool) -> Result<ApiProxyConfig, ConfigError> {
    let setting = |field: &str| format!("api_proxy[{i}].{field}");
    let name = p.name.unwrap_or_else(|| format!("api_proxy[{i}]"));
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c == '"') {
        return Err(invalid(
            &setting("name"),
            "1-64 printable characters without quotes",
        ));
    }
    let listen = p
        .listen
        .map(|text| {
            let addr: SocketAddr = text.parse().map_err(|_| {
                invalid(
                    &setting("listen"),
                    format!("{text:?} is not an ip:port address"),
                )
            })?;
            if !addr.ip().is_loopback() {
                return Err(invalid(
                    &setting("listen"),
                    format!("{addr} is not a loopback address: the proxy adds credentials to every request, so only this machine may use it"),
                ));
            }
            Ok(addr)
        })
        .transpose()?;
    if listen.is_none() && p.socket.is_none() {
        return Err(invalid(
            &setting("listen"),
            "give a loopback listen address, a socket, or both",
        ));
    }
    let upstream =
        upstream_url(&p.upstream, allow_http).map_err(|m| invalid(&setting("upstream"), m))?;
    let wg = p.workspace_group_id.filter(|w| !w.trim().is_empty());
    let token = match (p.token.as_str(), wg) {
        ("database", Some(workspace_group_id)) => ProxyToken::Database { workspace_group_id },
        ("database", None) => {
            return Err(invalid(
                &setting("workspace_group_id"),
                "required with token = \"database\" (the Data API takes the database JWT of one workspace group)",
            ))
        }
        ("api", None) => ProxyToken::Api,
        ("api", Some(_)) => {
            return Err(invalid(
                &setting("workspace_group_id"),
                "applies to token = \"database\" only",
            ))
        }
        (other, _) => {
            return Err(invalid(
                &setting("token"),
                format!("{other:?} is not database (Data API) or api (Management API)"),
            ))
        }
    };
    let defaults =
        ApiProxyConfig::new("", SocketAddr::from(([127, 0, 0, 1], 0)), "", token.clone());
    let duration = |field: &str, value: Option<String>, default: Duration, limits| {
        super::value::duration(&setting(field), value.as_deref(), default, limits)
    };
    let max_connections = p.max_connections.unwrap_or(defaults.max_connections);
    let max_connections = super::value::count(
        &setting("max_connections"),
        Some(max_connections),
        max_connections,
        1..=super::value::MAX_CONNECTIONS,
    )?;
    Ok(ApiProxyConfig {
        name,
        listen,
        socket: p.socket,
        upstream,
        token,
        ca_file: p.ca_file,
        connect_timeout: duration(
            "connect_timeout",
            p.connect_timeout,
            defaults.connect_timeout,
            CONNECT_TIMEOUT,
        )?,
        timeout: duration("timeout", p.timeout, defaults.timeout, TIMEOUT)?,
        max_connections,
    })
}

/// The upstream base URL without a trailing slash: https (or http when allowed),
/// a host, no query, fragment or user info.
fn upstream_url(text: &str, allow_http: bool) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(format!(
                "{text:?} is http: tokens would cross the network in clear text (https is required; auth.allow_http = true allows http for testing)"
            ))
        }
        other => return Err(format!("{text:?}: scheme {other:?} is not https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{text:?}: a base URL takes no query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?}: no user info in the URL (the proxy adds the JWT itself)"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, allow_http: bool) -> Result<Vec<ApiProxyConfig>, ConfigError> {
        #[derive(Deserialize)]
        struct Doc {
            api_proxy: Vec<FileApiProxy>,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| invalid("toml", e.to_string()))?;
        parse_all(doc.api_proxy, allow_http)
    }

    #[test]
    fn both_kinds_parse_with_defaults() {
        let text = r#"
            [[api_proxy]]
            name = "data"
            listen = "127.0.0.1:8081"
            upstream = "https://dml.example.com/"
            token = "database"
            workspace_group_id = "wg-1"
            timeout = "30s"
            [[api_proxy]]
            socket = "/tmp/mgmt.sock"
            upstream = "https://api.example.com/base"
            token = "api"
            ca_file = "/tmp/ca.pem"
        "#;
        let p = parse(text, false).unwrap();
        assert_eq!(p[0].upstream, "https://dml.example.com");
        assert_eq!(
            p[0].token,
            ProxyToken::Database {
                workspace_group_id: "wg-1".into()
            }
        );
        assert_eq!(p[0].timeout, Duration::from_secs(30));
        assert_eq!(p[0].connect_timeout, Duration::from_secs(10));
        assert_eq!(p[1].name, "api_proxy[1]");
        assert_eq!(p[1].upstream, "https://api.example.com/base");
        assert_eq!(p[1].token, ProxyToken::Api);
        assert!(p[1].listen.is_none());
        assert_eq!(p[1].max_connections, 256);
    }

    #[test]
    fn bad_settings_name_themselves() {
        let base = |extra: &str| {
            format!("[[api_proxy]]\nlisten = \"127.0.0.1:1\"\nupstream = \"https://x.example\"\ntoken = \"api\"\n{extra}")
        };
        let cases = [
            (
                "[[api_proxy]]\nupstream = \"https://x\"\ntoken = \"api\"".to_string(),
                "api_proxy[0].listen",
            ),
            (
                "[[api_proxy]]\nlisten = \"0.0.0.0:1\"\nupstream = \"https://x\"\ntoken = \"api\"".to_string(),
                "not a loopback",
            ),
            (
                "[[api_proxy]]\nlisten = \"127.0.0.1:1\"\nupstream = \"http://x\"\ntoken = \"api\"".to_string(),
                "https is required",
            ),
            (
                "[[api_proxy]]\nlisten = \"127.0.0.1:1\"\nupstream = \"ftp://x\"\ntoken = \"api\"".to_string(),
                "api_proxy[0].upstream",
            ),
            (
                "[[api_proxy]]\nlisten = \"127.0.0.1:1\"\nupstream = \"https://u:p@x\"\ntoken = \"api\"".to_string(),
                "user info",
            ),
            (
                "[[api_proxy]]\nlisten = \"127.0.0.1:1\"\nupstream = \"https://x/?a=1\"\ntoken = \"api\"".to_string(),
                "no query",
            ),
            (
                "[[api_proxy]]\nlisten = \"127.0.0.1:1\"\nupstream = \"https://x\"\ntoken = \"database\"".to_string(),
                "api_proxy[0].workspace_group_id",
            ),
            (base("workspace_group_id = \"wg\""), "database\" only"),
            (
                "[[api_proxy]]\nlisten = \"127.0.0.1:1\"\nupstream = \"https://x\"\ntoken = \"moon\"".to_string(),
                "api_proxy[0].token",
            ),
            (base("timeout = \"0s\""), "api_proxy[0].timeout"),
            (base("connect_timeout = \"soon\""), "api_proxy[0].connect_timeout"),
            (base("max_connections = 0"), "api_proxy[0].max_connections"),
            (base("color = \"red\""), "unknown field"),
            (format!("{}\n{}", base(""), base("")), "api_proxy[1]"),
        ];
        for (text, needle) in cases {
            let err = parse(&text, false).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}\n=> {err}");
        }
        assert!(parse(
            "[[api_proxy]]\nlisten = \"127.0.0.1:1\"\nupstream = \"http://127.0.0.1:9\"\ntoken = \"api\"",
            true
        )
        .is_ok());
    }
}
