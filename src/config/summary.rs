//! What `serve --check` prints: every effective setting, one per line, in the
//! config file's terms (durations as `1m 30s`, file modes in octal), and the
//! filesystem checks that only `--check` makes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{invalid, ConfigError, LogFormat, ServeConfig};

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn path(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or("(none)".to_string(), |p| p.display().to_string())
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
            "  allowed_uids = {} (Unix socket only)",
            list(&uids, "(any)")
        )?;
        writeln!(f, "  tcp_token_file = {}", path(&l.tcp_token_file))?;
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
            crate::cache::RefreshMode::Ahead => "ahead",
            crate::cache::RefreshMode::Lazy => "lazy",
        };
        writeln!(f, "  refresh = {mode}")?;
        writeln!(f, "  refresh_at = {}", p.refresh_at)?;
        writeln!(f, "  jitter = {}", p.jitter)?;
        writeln!(f, "  min_remaining = {}", dur(p.min_remaining))?;
        writeln!(f, "  idle_evict = {}", dur(p.idle_evict))?;
        writeln!(f, "  tick = {}", dur(self.cache.tick))?;
        writeln!(f, "[access]")?;
        let a = &self.access;
        writeln!(
            f,
            "  workspace_groups = {}",
            list(&a.workspace_groups, "(any)")
        )?;
        writeln!(f, "  assume_roles = {}", list(&a.assume_roles, "(none)"))?;
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

/// For `serve --check`: the socket's directory ([`check_socket_dir`]) and every
/// file the sidecar writes besides templates (token sinks, the AWS
/// authorization token file) can be written: no symlink on the way, the last
/// directory level at most missing, nothing but a regular file at the path.
/// Templates are checked when the configuration is loaded.
pub fn check_paths(config: &super::ServeConfig) -> Result<(), ConfigError> {
    if let Some(socket) = &config.listen.socket {
        check_socket_dir(socket)?;
    }
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
        crate::util::atomic_file::check_destination(path).map_err(|m| invalid(&setting, m))?;
    }
    Ok(())
}
