//! The pod-template annotations `s2iam inject` and the webhook read, all under
//! `s2iam.singlestore.com/`:
//!
//! | annotation | value | effect |
//! |---|---|---|
//! | `inject` | `"true"` | add s2iam to this pod (nothing happens without it) |
//! | `workspace-group` | workspace group ID | the database token's workspace group (and the only one callers may ask for) |
//! | `token-files` | `database`, `api`, both comma-separated, or `none` | token files kept fresh in `/run/s2iam/{database,api}.jwt` (default: `database` with a workspace group, else `api`; none with `config-map`) |
//! | `database-proxy` | `host:port` of the workspace | a database proxy on `127.0.0.1:3306`: the app connects as user `*`, no password |
//! | `data-api-proxy` | `https://` URL of the workspace's Data API | a proxy on `127.0.0.1:8081` adding the database JWT |
//! | `env` | `"true"` (default) or `"false"` | the app containers get `S2IAM_SOCKET`, the token files' paths and the proxies' addresses |
//! | `containers` | container names, comma-separated | which app containers get the mount and the environment (default: all) |
//! | `image` | image reference | the sidecar's image (default: the injector's `--image`) |
//! | `cpu-request`, `memory-request`, `cpu-limit`, `memory-limit` | quantities | the sidecar's resources (default 10m, 32Mi, 500m, 128Mi: measured, see deploy/kubernetes/base) |
//! | `config-map` | ConfigMap name | the sidecar's whole configuration from that ConfigMap's `config.toml` (mounted at `/etc/s2iam`) instead of the one the annotations make |
//! | `status` | written by s2iam: `injected` | marks a pod template s2iam was added to |
//!
//! Every value is checked against a strict alphabet before it goes anywhere (the
//! TOML config, the pod spec): a bad value is an error naming the annotation, never
//! text spliced into a config.

use serde_json::{Map, Value};

/// The annotations' common prefix.
pub const PREFIX: &str = "s2iam.singlestore.com/";
/// `s2iam.singlestore.com/inject`.
pub const INJECT: &str = "s2iam.singlestore.com/inject";
/// `s2iam.singlestore.com/status`, written on the pod template s2iam was added to.
pub const STATUS: &str = "s2iam.singlestore.com/status";

/// A token file the sidecar keeps fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFile {
    /// `/run/s2iam/database.jwt`.
    Database,
    /// `/run/s2iam/api.jwt`.
    Api,
}

/// What the annotations ask for, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `workspace-group`.
    pub workspace_group: Option<String>,
    /// `token-files`.
    pub token_files: Vec<TokenFile>,
    /// `database-proxy`: the upstream `host:port`.
    pub database_proxy: Option<String>,
    /// `data-api-proxy`: the upstream URL.
    pub data_api_proxy: Option<String>,
    /// `env`.
    pub env: bool,
    /// `containers`: `None` = every app container.
    pub containers: Option<Vec<String>>,
    /// `image`.
    pub image: Option<String>,
    /// `cpu-request`, `memory-request`, `cpu-limit`, `memory-limit`.
    pub resources: Resources,
    /// `config-map`.
    pub config_map: Option<String>,
}

/// The sidecar's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// CPU request.
    pub cpu_request: String,
    /// Memory request.
    pub memory_request: String,
    /// CPU limit.
    pub cpu_limit: String,
    /// Memory limit.
    pub memory_limit: String,
}

impl Default for Resources {
    fn default() -> Self {
        // deploy/kubernetes/base: 9.5 MiB RSS idle, 10 MiB after 2.2 M requests.
        Self {
            cpu_request: "10m".into(),
            memory_request: "32Mi".into(),
            cpu_limit: "500m".into(),
            memory_limit: "128Mi".into(),
        }
    }
}

/// An annotation with a value s2iam will not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {name}: {message}")]
pub struct AnnotationError {
    /// The annotation's full name.
    pub name: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Whether these annotations ask for s2iam.
pub fn wants_injection(annotations: Option<&Map<String, Value>>) -> bool {
    annotations
        .and_then(|a| a.get(INJECT))
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Reads and validates every `s2iam.singlestore.com/` annotation; an unknown one is
/// an error (a typo would otherwise be silently ignored).
pub fn parse(annotations: &Map<String, Value>) -> Result<Settings, AnnotationError> {
    let mut s = Settings {
        env: true,
        ..Settings::default()
    };
    let mut token_files = None;
    for (name, value) in annotations {
        let Some(key) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let err = |message: &str| AnnotationError {
            name: name.clone(),
            message: message.to_string(),
        };
        let Some(v) = value.as_str() else {
            return Err(err("must be a string"));
        };
        match key {
            "inject" => {
                if !matches!(v.to_ascii_lowercase().as_str(), "true" | "false") {
                    return Err(err("must be \"true\" or \"false\""));
                }
            }
            "status" => {}
            "workspace-group" => s.workspace_group = Some(ident(v, 128).map_err(|m| err(&m))?),
            "token-files" => token_files = Some(parse_token_files(v).map_err(|m| err(&m))?),
            "database-proxy" => s.database_proxy = Some(host_port(v).map_err(|m| err(&m))?),
            "data-api-proxy" => s.data_api_proxy = Some(https_url(v).map_err(|m| err(&m))?),
            "env" => s.env = boolean(v).map_err(|m| err(&m))?,
            "containers" => {
                let names = v
                    .split(',')
                    .map(|n| dns_label(n.trim()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|m| err(&m))?;
                s.containers = Some(names);
            }
            "image" => s.image = Some(image(v).map_err(|m| err(&m))?),
            "cpu-request" => s.resources.cpu_request = quantity(v).map_err(|m| err(&m))?,
            "memory-request" => s.resources.memory_request = quantity(v).map_err(|m| err(&m))?,
            "cpu-limit" => s.resources.cpu_limit = quantity(v).map_err(|m| err(&m))?,
            "memory-limit" => s.resources.memory_limit = quantity(v).map_err(|m| err(&m))?,
            "config-map" => s.config_map = Some(dns_subdomain(v).map_err(|m| err(&m))?),
            _ => {
                return Err(err(
                    "unknown s2iam annotation (see README \"Kubernetes in one annotation\")",
                ))
            }
        }
    }
    s.token_files = token_files.unwrap_or_else(|| {
        if s.config_map.is_some() {
            // The ConfigMap's config decides which files there are.
            Vec::new()
        } else if s.workspace_group.is_some() {
            vec![TokenFile::Database]
        } else {
            vec![TokenFile::Api]
        }
    });
    let needs_group = s.token_files.contains(&TokenFile::Database)
        || s.database_proxy.is_some()
        || s.data_api_proxy.is_some();
    if needs_group && s.workspace_group.is_none() && s.config_map.is_none() {
        return Err(AnnotationError {
            name: format!("{PREFIX}workspace-group"),
            message: "required for a database token file, the database proxy or the Data API proxy"
                .into(),
        });
    }
    Ok(s)
}

fn parse_token_files(v: &str) -> Result<Vec<TokenFile>, String> {
    if v.trim() == "none" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for part in v.split(',') {
        let f = match part.trim() {
            "database" => TokenFile::Database,
            "api" => TokenFile::Api,
            other => {
                return Err(format!(
                    "{:?} is not database, api or none",
                    s2iam::util::snippet(other, 40)
                ))
            }
        };
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Ok(out)
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be \"true\" or \"false\"".into()),
    }
}

fn all_of(v: &str, max: usize, ok: impl Fn(char) -> bool, what: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > max || !v.chars().all(ok) {
        return Err(format!("must be 1 to {max} characters of {what}"));
    }
    Ok(v.to_string())
}

/// Workspace group IDs: UUIDs in practice; letters, digits, `-`, `_`, `.`.
fn ident(v: &str, max: usize) -> Result<String, String> {
    all_of(
        v,
        max,
        |c| c.is_ascii_alphanumeric() || "-_.".contains(c),
        "letters, digits, '-', '_' and '.'",
    )
}

/// A container name (RFC 1123 label).
fn dns_label(v: &str) -> Result<String, String> {
    let s = all_of(
        v,
        63,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
        "lower-case letters, digits and '-'",
    )?;
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must not start or end with '-'".into());
    }
    Ok(s)
}

/// A ConfigMap name (RFC 1123 subdomain).
fn dns_subdomain(v: &str) -> Result<String, String> {
    let s = all_of(
        v,
        253,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.',
        "lower-case letters, digits, '-' and '.'",
    )?;
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !s.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(s)
}

fn host_chars(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.'
}

/// `host:port`, a DNS name or IPv4 address and a port 1-65535.
fn host_port(v: &str) -> Result<String, String> {
    let bad = || format!("{:?} is not host:port", s2iam::util::snippet(v, 80));
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    all_of(host, 253, host_chars, "a host name").map_err(|_| bad())?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.chars().all(|c| c.is_ascii_digit()) => Ok(v.to_string()),
        _ => Err(bad()),
    }
}

/// `https://host[:port][/path]`, path of URL-safe characters.
fn https_url(v: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "{:?} is not an https:// URL of a host",
            s2iam::util::snippet(v, 80)
        )
    };
    let rest = v.strip_prefix("https://").ok_or_else(bad)?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => h,
        Some(_) => return Err(bad()),
        None => authority,
    };
    all_of(host, 253, host_chars, "a host name").map_err(|_| bad())?;
    if !path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~/".contains(c))
    {
        return Err(bad());
    }
    Ok(v.to_string())
}

/// An image reference: registry/name:tag@digest characters only.
fn image(v: &str) -> Result<String, String> {
    all_of(
        v,
        512,
        |c| c.is_ascii_alphanumeric() || "-._/:@".contains(c),
        "an image reference (letters, digits, '-', '.', '_', '/', ':', '@')",
    )
}

/// A Kubernetes quantity such as `10m`, `0.5`, `128Mi`, `1G`.
fn quantity(v: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "{:?} is not a quantity such as 10m, 0.5, 128Mi",
            s2iam::util::snippet(v, 80)
        )
    };
    let digits_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, suffix) = v.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && !number.starts_with('.')
        && !number.ends_with('.');
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "Ki" | "Mi" | "Gi" | "Ti"
    );
    if number_ok && suffix_ok && v.len() <= 32 {
        Ok(v.to_string())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), Value::String(v.to_string())))
            .collect()
    }

    #[test]
    fn defaults_and_values() {
        let s = parse(&map(&[("inject", "true"), ("workspace-group", "wg-1")])).unwrap();
        assert_eq!(s.token_files, vec![TokenFile::Database]);
        assert!(s.env);
        let s = parse(&map(&[("inject", "true")])).unwrap();
        assert_eq!(s.token_files, vec![TokenFile::Api]);
        let s = parse(&map(&[
            ("workspace-group", "wg-1"),
            ("token-files", "api, database"),
            ("database-proxy", "svc-1.example.com:3306"),
            ("data-api-proxy", "https://svc-1-dml.example.com"),
            ("containers", "app,worker"),
            ("memory-limit", "256Mi"),
            ("env", "false"),
        ]))
        .unwrap();
        assert_eq!(s.token_files, vec![TokenFile::Api, TokenFile::Database]);
        assert_eq!(s.database_proxy.as_deref(), Some("svc-1.example.com:3306"));
        assert_eq!(
            s.containers,
            Some(vec!["app".to_string(), "worker".to_string()])
        );
        assert_eq!(s.resources.memory_limit, "256Mi");
        assert!(!s.env);
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (k, v) in [
            ("workspace-group", "wg\"\n[x]"),
            ("token-files", "passwords"),
            ("database-proxy", "host"),
            ("database-proxy", "host:0"),
            ("database-proxy", "ho st:3306"),
            ("data-api-proxy", "http://plain.example.com"),
            ("data-api-proxy", "https://x.example.com/\"q"),
            ("containers", "App"),
            ("image", "img\nname"),
            ("cpu-limit", "lots"),
            ("memory-request", "1.2.3Mi"),
            ("config-map", "-x"),
            ("env", "yes"),
            ("inject", "sure"),
            ("tokens", "database"),
        ] {
            let e = parse(&map(&[("workspace-group", "wg"), (k, v)])).unwrap_err();
            assert_eq!(e.name, format!("{PREFIX}{k}"), "{k}={v:?}: {e}");
        }
        let e = parse(&map(&[("database-proxy", "h:3306")])).unwrap_err();
        assert!(e.name.ends_with("workspace-group"), "{e}");
        let mut m = map(&[]);
        m.insert(format!("{PREFIX}inject"), Value::Bool(true));
        assert!(parse(&m).is_err());
    }

    #[test]
    fn only_the_string_true_asks() {
        assert!(wants_injection(Some(&map(&[("inject", "true")]))));
        assert!(wants_injection(Some(&map(&[("inject", "True")]))));
        assert!(!wants_injection(Some(&map(&[("inject", "false")]))));
        assert!(!wants_injection(None));
    }
}
