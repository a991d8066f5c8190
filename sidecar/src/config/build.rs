//! Precedence: each setting from the flags, else the environment, else the file,
//! else its default; then validated, naming the setting at fault.

use std::path::PathBuf;
use std::time::Duration;

use super::aws_profile::aws_settings;
use super::file::{FileCache, FileConfig, FileListen, FileToken};
use super::value::{
    count, duration, millis, mode, parse_tcp, secs, MAX_CONNECTIONS, MAX_ON_DEMAND, MAX_RATE,
};
use super::{
    invalid, AccessConfig, CacheConfig, ClientConfig, ConfigError, ConnLimits, ListenConfig,
    LogConfig, LogFormat, ServeConfig, ServeOverrides, Sink, WarmToken, DEFAULT_SOCKET,
};
use s2iam::cache::{CachePolicy, RefreshMode};
use s2iam::env::Env;
use s2iam::exchange::JwtType;
use s2iam::provider::{DEFAULT_GCP_AUDIENCE, DEFAULT_ROLE_SESSION_NAME};

/// The configuration from the file's values, the environment and the flags.
pub(super) fn build(
    file: FileConfig,
    env: &Env,
    flags: &ServeOverrides,
) -> Result<ServeConfig, ConfigError> {
    let listen = listen(&file, env, flags)?;
    let client = client(&file, env, flags)?;
    let cache = CacheConfig {
        policy: cache_policy(&file.cache)?,
        tick: duration(
            "cache.tick",
            file.cache.tick.as_deref(),
            Duration::from_secs(1),
            millis(10)..=secs(60),
        )?,
    };
    let log = LogConfig {
        format: match flags
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
        },
        level: env
            .get("S2IAM_LOG")
            .or(file.log.level)
            .unwrap_or_else(|| "info".into()),
    };
    // After-render commands run with the sidecar's PATH, read here once.
    let path = env
        .get("PATH")
        .unwrap_or_else(|| crate::render::action::FALLBACK_PATH.into());
    let tokens = file
        .token
        .into_iter()
        .enumerate()
        .map(|(i, t)| warm_token(i, t, &client.gcp_audience, &path))
        .collect::<Result<Vec<_>, _>>()?;
    let aws = aws_settings(file.aws, file.aws_profile)?;
    let mut database_proxies = crate::dbproxy::config::build_all(file.database_proxy)
        .map_err(|e| super::invalid(&e.setting, e.message))?;
    // A database proxy of the sidecar without its own allowed_uids admits whom
    // the sidecar's API does: the proxy logs in as the workload too.
    for p in &mut database_proxies {
        if p.allowed_uids.is_empty() {
            p.allowed_uids = listen.allowed_uids.clone();
        }
    }
    let templates =
        crate::render::config::templates(file.template, &available(&tokens, &aws), &path)
            .map_err(|e| invalid(&e.setting, e.message))?;
    let api_proxies = super::api_proxy::parse_all(file.api_proxy, client.allow_http)?;
    if cache.policy.mode == RefreshMode::Lazy
        && (!templates.is_empty() || tokens.iter().any(|t| t.sink.is_some()))
    {
        // Files are read without asking the sidecar: nothing would refresh them.
        return Err(invalid(
            "cache.refresh",
            "\"lazy\" refreshes a token only when a request asks for it, so it cannot keep \
             [[template]] files or token sinks fresh; use \"ahead\" (the default) with them",
        ));
    }
    Ok(ServeConfig {
        listen,
        client,
        cache,
        access: AccessConfig {
            workspace_groups: file.access.workspace_groups.unwrap_or_default(),
            assume_roles: file.access.assume_roles.unwrap_or_default(),
            audiences: file.access.audiences.unwrap_or_default(),
            cold_fetches_per_second: count(
                "access.cold_fetches_per_second",
                file.access.cold_fetches_per_second,
                20,
                1..=MAX_RATE,
            )?,
            cold_fetches_per_caller_per_second: count(
                "access.cold_fetches_per_caller_per_second",
                file.access.cold_fetches_per_caller_per_second,
                5,
                1..=MAX_RATE,
            )?,
        },
        log,
        tokens,
        aws,
        database_proxies,
        templates,
        api_proxies,
        otel: s2iam::otel::OtelSettings::resolve(
            env,
            &s2iam::otel::settings::FileOtel {
                endpoint: file.otel.endpoint,
                service_name: file.otel.service_name,
            },
        )
        .map_err(|e| invalid(&e.setting, e.message))?,
        audit: super::AuditConfig {
            path: match file.audit.path {
                Some(p) if !p.is_absolute() => {
                    return Err(invalid("audit.path", "must be an absolute path"))
                }
                p => p,
            },
        },
    })
}

/// What templates may read: the configured tokens and the warm AWS profiles.
fn available(
    tokens: &[WarmToken],
    aws: &s2iam::aws_vending::AwsSettings,
) -> crate::render::context::Available {
    crate::render::context::Available {
        workspace_groups: tokens
            .iter()
            .filter_map(|t| t.workspace_group_id.clone())
            .collect(),
        api: tokens.iter().any(|t| t.jwt_type == JwtType::Api),
        aws_profiles: aws
            .profiles
            .iter()
            .filter(|p| p.warm)
            .map(|p| p.name.clone())
            .collect(),
    }
}

fn listen(
    file: &FileConfig,
    env: &Env,
    flags: &ServeOverrides,
) -> Result<ListenConfig, ConfigError> {
    let socket = if flags.no_socket {
        None
    } else {
        Some(
            flags
                .socket
                .clone()
                .or_else(|| env.get("S2IAM_SOCKET").map(PathBuf::from))
                .or(file.listen.socket.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        )
    };
    let tcp_text = flags
        .tcp
        .clone()
        .or_else(|| env.get("S2IAM_TCP_LISTEN"))
        .or(file.listen.tcp.clone());
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
    Ok(ListenConfig {
        socket,
        socket_mode: mode(
            "listen.socket_mode",
            file.listen.socket_mode.as_deref(),
            0o660,
        )?,
        tcp,
        allowed_uids: file.listen.allowed_uids.clone().unwrap_or_default(),
        tcp_token_file: file.listen.tcp_token_file.clone(),
        limits: conn_limits(&file.listen)?,
    })
}

fn client(
    file: &FileConfig,
    env: &Env,
    flags: &ServeOverrides,
) -> Result<ClientConfig, ConfigError> {
    Ok(ClientConfig {
        server_url: flags
            .server_url
            .clone()
            .or_else(|| env.get("S2IAM_JWT_SERVER_URL"))
            .or(file.auth.server_url.clone()),
        allow_http: flags.allow_http || env.allow_http() || file.auth.allow_http.unwrap_or(false),
        timeout: duration(
            "auth.timeout",
            file.auth.timeout.as_deref(),
            Duration::from_secs(10),
            millis(100)..=secs(600),
        )?,
        validate_jwks: file.auth.validate_jwks.unwrap_or(false),
        identity_format_preference: file.auth.identity_format_preference.clone(),
        provider: file
            .identity
            .provider
            .as_ref()
            .map(|p| {
                p.parse().map_err(|e: s2iam::provider::UnknownProvider| {
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
        gcp_audience: file
            .identity
            .gcp_audience
            .clone()
            .unwrap_or_else(|| DEFAULT_GCP_AUDIENCE.into()),
        role_session_name: file
            .identity
            .role_session_name
            .clone()
            .unwrap_or_else(|| DEFAULT_ROLE_SESSION_NAME.into()),
    })
}

/// `listen.max_connections_per_uid`: 1 to `max_connections` (default: a quarter
/// of it, at most the default's 128).
fn per_uid(l: &FileListen, default: usize) -> Result<usize, ConfigError> {
    let max = l
        .max_connections
        .unwrap_or(ConnLimits::default().max_connections);
    let default = default.min(max.div_ceil(4));
    let v = count(
        "listen.max_connections_per_uid",
        l.max_connections_per_uid,
        default,
        1..=MAX_CONNECTIONS,
    )?;
    if v > max {
        return Err(invalid(
            "listen.max_connections_per_uid",
            format!("must be at most listen.max_connections ({max})"),
        ));
    }
    Ok(v)
}

fn conn_limits(l: &FileListen) -> Result<ConnLimits, ConfigError> {
    let d = ConnLimits::default();
    let nonzero = |setting: &str, value: Option<&str>, default: Duration| {
        let v = duration(setting, value, default, Duration::ZERO..=secs(24 * 3600))?;
        if v.is_zero() {
            return Err(invalid(setting, "must be greater than 0"));
        }
        Ok(v)
    };
    let max_header_bytes = l.max_header_bytes.unwrap_or(d.max_header_bytes);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        return Err(invalid(
            "listen.max_header_bytes",
            "must be between 1024 and 1048576",
        ));
    }
    Ok(ConnLimits {
        header_read_timeout: nonzero(
            "listen.header_read_timeout",
            l.header_read_timeout.as_deref(),
            d.header_read_timeout,
        )?,
        idle_timeout: nonzero(
            "listen.idle_timeout",
            l.idle_timeout.as_deref(),
            d.idle_timeout,
        )?,
        max_connections: count(
            "listen.max_connections",
            l.max_connections,
            d.max_connections,
            1..=MAX_CONNECTIONS,
        )?,
        max_connections_per_uid: per_uid(l, d.max_connections_per_uid)?,
        max_header_bytes,
        shutdown_timeout: nonzero(
            "listen.shutdown_timeout",
            l.shutdown_timeout.as_deref(),
            d.shutdown_timeout,
        )?,
    })
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
    let mode = match c.refresh.as_deref() {
        None | Some("ahead") => RefreshMode::Ahead,
        Some("lazy") => RefreshMode::Lazy,
        Some(other) => {
            return Err(invalid(
                "cache.refresh",
                format!("{other:?} is not \"ahead\" or \"lazy\""),
            ))
        }
    };
    Ok(CachePolicy {
        mode,
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
        max_on_demand: count(
            "cache.max_on_demand",
            c.max_on_demand,
            d.max_on_demand,
            1..=MAX_ON_DEMAND,
        )?,
        negative_ttl: duration(
            "cache.negative_ttl",
            c.negative_ttl.as_deref(),
            d.negative_ttl,
            Duration::ZERO..=secs(3600),
        )?,
        ..d
    })
}

fn warm_token(
    i: usize,
    t: FileToken,
    default_audience: &str,
    command_path: &str,
) -> Result<WarmToken, ConfigError> {
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
    if let Some(wg) = &workspace_group_id {
        s2iam::exchange::check_workspace_group_id(wg)
            .map_err(|e| invalid(&format!("{setting}.workspace_group_id"), e.to_string()))?;
    }
    let sink = match t.sink {
        Some(path) => {
            let file = crate::render::config::file_options(
                &setting,
                ("sink_mode", t.sink_mode.as_deref()),
                ("sink_owner", t.sink_owner.as_ref()),
                ("sink_group", t.sink_group.as_ref()),
            )
            .map_err(|e| invalid(&e.setting, e.message))?;
            let on_change = t
                .on_change
                .map(|a| {
                    crate::render::config::action(&format!("{setting}.on_change"), a, command_path)
                })
                .transpose()
                .map_err(|e| invalid(&e.setting, e.message))?;
            Some(Sink {
                path,
                mode: file.mode,
                owner: file.owner,
                group: file.group,
                on_change,
            })
        }
        None if t.sink_mode.is_some()
            || t.sink_owner.is_some()
            || t.sink_group.is_some()
            || t.on_change.is_some() =>
        {
            return Err(invalid(
                &setting,
                "sink_mode, sink_owner, sink_group and on_change need a sink",
            ))
        }
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
