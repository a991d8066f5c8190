//! What `serve --check` prints: every effective setting, one per line, in the
//! config file's terms (durations as `1m 30s`, file modes in octal), and the
//! filesystem checks that only `--check` makes. Every setting a config file can
//! change is shown, so `--check` answers "what will it do" without the source.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{invalid, ConfigError, LogFormat, ServeConfig};

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn path(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or("(none)".to_string(), |p| p.display().to_string())
}

/// A fraction as the config file would say it: `0.6667`, not `0.6666666666666666`.
fn frac(x: f64) -> String {
    let s = format!("{x:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn per_second(n: u32) -> String {
    if n == 0 {
        "(no limit)".to_string()
    } else {
        format!("{n}/s")
    }
}

fn list(v: &[String], empty: &str) -> String {
    if v.is_empty() {
        empty.to_string()
    } else {
        v.join(", ")
    }
}

impl fmt::Display for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.listen;
        writeln!(f, "[listen]")?;
        writeln!(
            f,
            "  socket = {} (mode {:04o})",
            path(&l.socket),
            l.socket_mode
        )?;
        let tcp = l.tcp.map_or("(off)".into(), |a| a.to_string());
        writeln!(f, "  tcp = {tcp}")?;
        let uids: Vec<String> = l.allowed_uids.iter().map(u32::to_string).collect();
        writeln!(
            f,
            "  allowed_uids = {} (every surface: socket and TCP)",
            list(&uids, "(any)")
        )?;
        writeln!(f, "  tcp_token_file = {}", path(&l.tcp_token_file))?;
        let lim = &l.limits;
        writeln!(
            f,
            "  header_read_timeout = {}",
            dur(lim.header_read_timeout)
        )?;
        writeln!(f, "  idle_timeout = {}", dur(lim.idle_timeout))?;
        writeln!(
            f,
            "  max_connections = {} (per listener)",
            lim.max_connections
        )?;
        writeln!(
            f,
            "  max_connections_per_uid = {} (Unix socket)",
            lim.max_connections_per_uid
        )?;
        writeln!(f, "  max_header_bytes = {}", lim.max_header_bytes)?;
        writeln!(f, "  shutdown_timeout = {}", dur(lim.shutdown_timeout))?;
        let c = &self.client;
        writeln!(f, "[auth]")?;
        let url = c
            .server_url
            .as_deref()
            .unwrap_or("(S2IAM_JWT_SERVER_URL, else production)");
        writeln!(f, "  server_url = {url}")?;
        writeln!(f, "  allow_http = {}", c.allow_http)?;
        writeln!(f, "  timeout = {}", dur(c.timeout))?;
        writeln!(f, "  validate_jwks = {}", c.validate_jwks)?;
        let prefs = c
            .identity_format_preference
            .as_deref()
            .map_or("(server default)".into(), |v| v.join(", "));
        writeln!(f, "  identity_format_preference = {prefs}")?;
        writeln!(f, "[identity]")?;
        let provider = c.provider.map_or("(detect)".into(), |p| p.to_string());
        writeln!(f, "  provider = {provider}")?;
        writeln!(f, "  detect_timeout = {}", dur(c.detect_timeout))?;
        writeln!(f, "  startup_timeout = {}", dur(c.startup_timeout))?;
        writeln!(f, "  gcp_audience = {}", c.gcp_audience)?;
        writeln!(f, "  role_session_name = {}", c.role_session_name)?;
        let p = &self.cache.policy;
        writeln!(f, "[cache]")?;
        let mode = match p.mode {
            s2iam::cache::RefreshMode::Ahead => "ahead",
            s2iam::cache::RefreshMode::Lazy => "lazy",
        };
        writeln!(f, "  refresh = {mode}")?;
        writeln!(
            f,
            "  refresh_at = {} (of a token's lifetime)",
            frac(p.refresh_at)
        )?;
        writeln!(f, "  jitter = {}", frac(p.jitter))?;
        writeln!(f, "  min_remaining = {}", dur(p.min_remaining))?;
        writeln!(f, "  idle_evict = {}", dur(p.idle_evict))?;
        writeln!(f, "  tick = {}", dur(self.cache.tick))?;
        writeln!(f, "  max_on_demand = {}", p.max_on_demand)?;
        writeln!(f, "  negative_ttl = {}", dur(p.negative_ttl))?;
        writeln!(
            f,
            "  retry = {} doubling to {}",
            dur(p.retry_base),
            dur(p.retry_max)
        )?;
        writeln!(f, "[access]")?;
        let a = &self.access;
        writeln!(
            f,
            "  workspace_groups = {}",
            list(&a.workspace_groups, "(any)")
        )?;
        writeln!(f, "  assume_roles = {}", list(&a.assume_roles, "(none)"))?;
        writeln!(
            f,
            "  audiences = {}",
            list(&a.audiences, "(none besides the configured ones)")
        )?;
        writeln!(
            f,
            "  cold_fetches_per_second = {}",
            per_second(a.cold_fetches_per_second)
        )?;
        writeln!(
            f,
            "  cold_fetches_per_caller_per_second = {}",
            per_second(a.cold_fetches_per_caller_per_second)
        )?;
        writeln!(f, "[log]")?;
        let format = match self.log.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        writeln!(f, "  format = {format}")?;
        writeln!(f, "  level = {}", self.log.level)?;
        writeln!(f, "[otel]")?;
        match &self.otel {
            // Never the exporter's headers: they often carry an API key.
            Some(o) => {
                writeln!(f, "  traces = {} (OTLP/HTTP JSON)", o.endpoint_for_logs())?;
                writeln!(f, "  service_name = {}", o.service_name)?;
            }
            None => writeln!(f, "  traces = off")?,
        }
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
        for t in &self.templates {
            writeln!(f, "[[template]]")?;
            writeln!(f, "  source = {}", t.name)?;
            writeln!(
                f,
                "  destination = {} (mode {:04o})",
                t.destination.display(),
                t.file.mode
            )?;
            if t.on_change.is_some() {
                writeln!(f, "  on_change = (set)")?;
            }
        }
        for p in &self.database_proxies {
            writeln!(f, "[[database_proxy]]")?;
            writeln!(f, "  name = {}", p.name)?;
            if let Some(addr) = p.listen {
                writeln!(f, "  listen = {addr}")?;
            }
            if let Some(socket) = &p.socket {
                writeln!(
                    f,
                    "  socket = {} (mode {:04o})",
                    socket.display(),
                    p.socket_mode
                )?;
            }
            writeln!(f, "  upstream = {}", p.upstream())?;
            writeln!(f, "  workspace_group_id = {}", p.workspace_group_id)?;
            writeln!(f, "  max_connections = {}", p.max_connections)?;
            writeln!(f, "  connect_timeout = {}", dur(p.connect_timeout))?;
            let idle = p.idle_timeout.map_or("(none)".to_string(), dur);
            writeln!(f, "  idle_timeout = {idle}")?;
            let age = p.max_session_lifetime.map_or("(none)".to_string(), dur);
            writeln!(f, "  max_session_lifetime = {age}")?;
            writeln!(f, "  drain_timeout = {}", dur(p.drain_timeout))?;
        }
        let a = &self.aws;
        if !a.profiles.is_empty() || a.authorization_token_file.is_some() {
            writeln!(f, "[aws]")?;
            let file = path(&a.authorization_token_file);
            let mode = a.authorization_token_mode;
            writeln!(f, "  authorization_token_file = {file} (mode {mode:04o})")?;
            writeln!(f, "  min_remaining = {}", dur(a.min_remaining))?;
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
        for p in &self.api_proxies {
            writeln!(f, "[[api_proxy]]")?;
            writeln!(f, "  name = {}", p.name)?;
            if let Some(addr) = p.listen {
                writeln!(f, "  listen = {addr}")?;
            }
            if let Some(socket) = &p.socket {
                writeln!(f, "  socket = {}", socket.display())?;
            }
            writeln!(f, "  upstream = {}", p.upstream)?;
            writeln!(f, "  timeout = {}", dur(p.timeout))?;
            writeln!(f, "  max_connections = {}", p.max_connections)?;
        }
        writeln!(f, "[who can connect]")?;
        for line in self.doors() {
            writeln!(f, "  {line}")?;
        }
        let nofile = crate::listener::fds::limits();
        writeln!(
            f,
            "[open files]\n  RLIMIT_NOFILE = {} (hard {}); connections may use {}, the caps above need {}",
            nofile.soft,
            nofile.hard,
            nofile.budget(),
            self.fd_needs()
                .iter()
                .map(|(_, n, per)| n.saturating_mul(*per))
                .fold(0usize, usize::saturating_add)
        )?;
        if let Some(warning) = crate::listener::fds::check(&self.fd_needs(), nofile.budget()) {
            writeln!(f, "  WARNING: {warning}")?;
        }
        Ok(())
    }
}

impl ServeConfig {
    /// Every local surface, where it listens and who may connect (the
    /// listener's rule: `allowed_uids` by the peer's uid, on the socket from
    /// `SO_PEERCRED`, on TCP from the kernel's socket table).
    pub fn doors(&self) -> Vec<String> {
        let l = &self.listen;
        let who = crate::listener::who(&l.allowed_uids);
        let mut out = Vec::new();
        if let Some(p) = &l.socket {
            out.push(format!(
                "token API: unix {} (mode {:04o}): {who} (SO_PEERCRED), among those the file mode lets connect",
                p.display(),
                l.socket_mode
            ));
        }
        if let Some(addr) = l.tcp {
            let bearer = if l.tcp_token_file.is_some() {
                "; and the bearer token of listen.tcp_token_file (AWS routes: the container-credentials token)"
            } else {
                "; no bearer token (listen.tcp_token_file unset)"
            };
            out.push(format!(
                "token API: tcp {addr}: {who} (peer uid from the kernel; unknown uid refused when allowed_uids is set); Host must name loopback{bearer}"
            ));
        }
        for p in &self.api_proxies {
            if let Some(addr) = p.listen {
                out.push(format!("api_proxy {}: tcp {addr}: {who} (peer uid from the kernel); Host must name loopback", p.name));
            }
            if let Some(s) = &p.socket {
                out.push(format!(
                    "api_proxy {}: unix {} (mode {:04o}): {who} (SO_PEERCRED)",
                    p.name,
                    s.display(),
                    l.socket_mode
                ));
            }
        }
        for p in &self.database_proxies {
            let who = crate::listener::who(&p.allowed_uids);
            let users = if p.allowed_users.is_empty() {
                "any client user name".to_string()
            } else {
                format!("client user names {}", p.allowed_users.join(", "))
            };
            if let Some(addr) = p.listen {
                out.push(format!(
                    "database_proxy {}: tcp {addr}: {who} (peer uid from the kernel); {users}",
                    p.name
                ));
            }
            if let Some(s) = &p.socket {
                out.push(format!(
                    "database_proxy {}: unix {} (mode {:04o}): {who} (SO_PEERCRED); {users}",
                    p.name,
                    s.display(),
                    p.socket_mode
                ));
            }
        }
        out
    }

    /// What each surface's caps may take of the open-files budget:
    /// (surface, max connections, fds per connection).
    pub fn fd_needs(&self) -> Vec<(String, usize, usize)> {
        let l = &self.listen;
        let mut out = Vec::new();
        let listeners =
            usize::from(l.socket.is_some()).saturating_add(usize::from(l.tcp.is_some()));
        out.push((
            "token API".to_string(),
            l.limits.max_connections.saturating_mul(listeners),
            1,
        ));
        for p in &self.api_proxies {
            out.push((format!("api_proxy {}", p.name), p.max_connections, 2));
        }
        for p in &self.database_proxies {
            out.push((format!("database_proxy {}", p.name), p.max_connections, 2));
        }
        out
    }
}

/// For `serve --check`: every Unix socket the sidecar would bind (the API's,
/// each API proxy's and database proxy's) passes the check binding makes
/// ([`crate::listener::unix_socket::check_socket_dir`]).
pub fn check_sockets(config: &ServeConfig) -> Result<(), ConfigError> {
    let api = config.listen.socket.iter().map(|p| ("listen.socket", p));
    let api_proxies = config
        .api_proxies
        .iter()
        .filter_map(|p| p.socket.as_ref().map(|s| ("api_proxy.socket", s)));
    let db_proxies = config
        .database_proxies
        .iter()
        .filter_map(|p| p.socket.as_ref().map(|s| ("database_proxy.socket", s)));
    for (field, socket) in api.chain(api_proxies).chain(db_proxies) {
        crate::listener::unix_socket::check_socket_dir(socket)
            .map_err(|e| invalid(field, e.to_string()))?;
    }
    Ok(())
}

/// For `serve --check`: every socket's directory ([`check_sockets`]) and every
/// file the sidecar writes besides templates (token sinks, the AWS
/// authorization token file) can be written: no symlink on the way, the last
/// directory level at most missing, nothing but a regular file at the path.
/// Templates are checked when the configuration is loaded.
pub fn check_paths(config: &super::ServeConfig) -> Result<(), ConfigError> {
    check_sockets(config)?;
    let sinks = config.tokens.iter().enumerate().filter_map(|(i, t)| {
        t.sink
            .as_ref()
            .map(|s| (format!("token[{i}].sink"), &s.path))
    });
    let aws = config
        .aws
        .authorization_token_file
        .as_ref()
        .map(|p| ("aws.authorization_token_file".to_string(), p));
    for (setting, path) in sinks.chain(aws) {
        s2iam::util::atomic_file::check_destination(path).map_err(|m| invalid(&setting, m))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_read_as_written() {
        assert_eq!(frac(2.0 / 3.0), "0.6667");
        assert_eq!(frac(0.67), "0.67");
        assert_eq!(frac(0.05), "0.05");
        assert_eq!(frac(0.0), "0");
        assert_eq!(frac(1.0), "1");
    }
}
