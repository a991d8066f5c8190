//! Where and how spans are exported: the standard `OTEL_*` variables, over the
//! sidecar's `[otel]` section.
//!
//! | variable | meaning | default, range |
//! |---|---|---|
//! | `OTEL_SDK_DISABLED` | `true`: off whatever else is set | |
//! | `OTEL_TRACES_EXPORTER` | `otlp` or `none` (off) | `otlp` |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the full URL spans are POSTed to | |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL; `/v1/traces` is appended | `[otel] endpoint` |
//! | `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL` | `http/json`; `http/protobuf` is accepted and sent as JSON (collectors take both on `/v1/traces`); `grpc` is refused | `http/json` |
//! | `OTEL_EXPORTER_OTLP[_TRACES]_HEADERS` | `key=value,…`, values percent-decoded; never logged | |
//! | `OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT` | milliseconds per export | 10000, 1..=60000 |
//! | `OTEL_SERVICE_NAME` | `service.name` | `[otel] service_name`, else `s2iam` |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,…` resource attributes | at most 64 |
//! | `OTEL_TRACES_SAMPLER` | `parentbased_always_on`, `always_on`, `always_off` (off), `traceidratio`, `parentbased_traceidratio`, `parentbased_always_off` | `parentbased_always_on` |
//! | `OTEL_TRACES_SAMPLER_ARG` | the ratio | 1.0, 0..=1 |
//! | `OTEL_BSP_SCHEDULE_DELAY` | milliseconds between exports | 5000, 1..=60000 |
//! | `OTEL_BSP_MAX_QUEUE_SIZE` | spans queued before new ones are dropped | 2048, 1..=65536 |
//! | `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | spans per POST | 512, 1..=queue size |
//!
//! With no endpoint at all, tracing is off.

use std::time::Duration;

use crate::env::Env;

/// A setting that cannot be used. Names the variable, never its value when the
/// value may be a credential (the headers).
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct OtelError {
    /// The variable or `[otel]` key.
    pub setting: String,
    /// What is wrong.
    pub message: String,
}

fn err(setting: &str, message: impl Into<String>) -> OtelError {
    OtelError {
        setting: setting.to_string(),
        message: message.into(),
    }
}

/// Which traces are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Every trace.
    AlwaysOn,
    /// This fraction of new traces (by trace id).
    Ratio(f64),
    /// A remote parent's decision when there is one, else `root`.
    ParentBased {
        /// For traces s2iam starts.
        root: RootSampler,
    },
}

/// The root decision of a parent-based sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampler {
    /// Record.
    AlwaysOn,
    /// Do not record.
    AlwaysOff,
    /// This fraction, by trace id.
    Ratio(f64),
}

impl Sampler {
    /// Whether a span with this parent and trace id is recorded.
    pub fn sampled(&self, parent: Option<super::SpanContext>, trace_id: &[u8; 16]) -> bool {
        match (self, parent) {
            (Sampler::AlwaysOn, _) => true,
            (Sampler::Ratio(r), _) => by_ratio(*r, trace_id),
            (Sampler::ParentBased { .. }, Some(p)) => p.sampled,
            (Sampler::ParentBased { root }, None) => match root {
                RootSampler::AlwaysOn => true,
                RootSampler::AlwaysOff => false,
                RootSampler::Ratio(r) => by_ratio(*r, trace_id),
            },
        }
    }
}

/// The specification's `TraceIdRatioBased`: the trace id's last 8 bytes as a
/// number below `ratio` of the range, so every service decides alike.
fn by_ratio(ratio: f64, trace_id: &[u8; 16]) -> bool {
    if ratio >= 1.0 {
        return true; // 2^63 - 1 rounds up to 2^63 as an f64
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let x = u64::from_be_bytes(low) / 2; // 63 bits
    (x as f64) < ratio * 2f64.powi(63)
}

/// Resolved export settings.
#[derive(Clone, PartialEq)]
pub struct OtelSettings {
    /// The URL spans are POSTed to.
    pub endpoint: url::Url,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`): may hold an API key.
    pub headers: Vec<(String, String)>,
    /// Per export.
    pub timeout: Duration,
    /// `service.name`.
    pub service_name: String,
    /// Other resource attributes.
    pub resource: Vec<(String, String)>,
    /// Which traces are recorded.
    pub sampler: Sampler,
    /// Between exports.
    pub schedule_delay: Duration,
    /// Spans queued at most.
    pub max_queue_size: usize,
    /// Spans per POST at most.
    pub max_batch_size: usize,
}

impl std::fmt::Debug for OtelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelSettings")
            .field("endpoint", &self.endpoint_for_logs())
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("service_name", &self.service_name)
            .field("resource", &self.resource)
            .field("sampler", &self.sampler)
            .field("schedule_delay", &self.schedule_delay)
            .field("max_queue_size", &self.max_queue_size)
            .field("max_batch_size", &self.max_batch_size)
            .finish()
    }
}

/// The `[otel]` section of the config file (lower precedence than the
/// variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileOtel {
    /// Base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `service.name`.
    pub service_name: Option<String>,
}

impl OtelSettings {
    /// The endpoint without any user info or query (which could carry a key).
    pub fn endpoint_for_logs(&self) -> String {
        let mut u = self.endpoint.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.set_query(None);
        u.to_string()
    }

    /// The settings from `env` over `file`; `Ok(None)` when tracing is off.
    pub fn resolve(env: &Env, file: &FileOtel) -> Result<Option<Self>, OtelError> {
        if env
            .get("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        match env.get("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(err(
                    "OTEL_TRACES_EXPORTER",
                    format!(
                        "{:?} is not supported: s2iam exports \"otlp\" (HTTP) or \"none\"",
                        crate::logging::field(other)
                    ),
                ))
            }
        }
        let sampler = sampler(env)?;
        let Some(sampler) = sampler else {
            return Ok(None); // always_off
        };
        let endpoint = if let Some(full) = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            parse_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &full)?
        } else if let Some(base) = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            traces_url("OTEL_EXPORTER_OTLP_ENDPOINT", &base)?
        } else if let Some(base) = file.endpoint.as_deref().filter(|s| !s.trim().is_empty()) {
            traces_url("otel.endpoint", base)?
        } else {
            return Ok(None);
        };
        let protocol = first(
            env,
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        );
        if let Some((name, p)) = &protocol {
            match p.trim() {
                "http/json" => {}
                "http/protobuf" => tracing::info!(
                    "{name}=http/protobuf: s2iam sends OTLP/HTTP as JSON, which OTLP receivers accept on the same path"
                ),
                "grpc" => {
                    return Err(err(
                        name,
                        "OTLP over gRPC is not supported: use http/json (an OTLP/HTTP receiver, usually port 4318)",
                    ))
                }
                other => {
                    return Err(err(
                        name,
                        format!(
                            "{:?} is not http/json, http/protobuf or grpc",
                            crate::logging::field(other)
                        ),
                    ))
                }
            }
        }
        let headers = match first(
            env,
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ) {
            Some((name, v)) => headers(name, &v)?,
            None => Vec::new(),
        };
        let timeout = match first(
            env,
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            Some((name, v)) => Duration::from_millis(number(name, &v, 1, 60_000)?),
            None => Duration::from_secs(10),
        };
        let resource = match env.get("OTEL_RESOURCE_ATTRIBUTES") {
            Some(v) => pairs("OTEL_RESOURCE_ATTRIBUTES", &v)?,
            None => Vec::new(),
        };
        if resource.len() > 64 {
            return Err(err("OTEL_RESOURCE_ATTRIBUTES", "at most 64 attributes"));
        }
        let service_name = env
            .get("OTEL_SERVICE_NAME")
            .or_else(|| {
                resource
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .or_else(|| file.service_name.clone().filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| "s2iam".into());
        if service_name.chars().count() > 256 {
            return Err(err("OTEL_SERVICE_NAME", "at most 256 characters"));
        }
        let resource = resource
            .into_iter()
            .filter(|(k, _)| k != "service.name")
            .collect();
        let schedule_delay = match env.get("OTEL_BSP_SCHEDULE_DELAY") {
            Some(v) => Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", &v, 1, 60_000)?),
            None => Duration::from_secs(5),
        };
        let max_queue_size = match env.get("OTEL_BSP_MAX_QUEUE_SIZE") {
            Some(v) => usize_of(number("OTEL_BSP_MAX_QUEUE_SIZE", &v, 1, 65_536)?),
            None => 2048,
        };
        let max_batch_size = match env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            Some(v) => usize_of(number(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                &v,
                1,
                max_queue_size as u64,
            )?),
            None => 512.min(max_queue_size),
        };
        Ok(Some(Self {
            endpoint,
            headers,
            timeout,
            service_name,
            resource,
            sampler,
            schedule_delay,
            max_queue_size,
            max_batch_size,
        }))
    }
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The first of two variables that is set, with its name.
fn first(
    env: &Env,
    specific: &'static str,
    general: &'static str,
) -> Option<(&'static str, String)> {
    env.get(specific)
        .map(|v| (specific, v))
        .or_else(|| env.get(general).map(|v| (general, v)))
}

fn sampler(env: &Env) -> Result<Option<Sampler>, OtelError> {
    let arg = match env.get("OTEL_TRACES_SAMPLER_ARG") {
        Some(v) => {
            let r: f64 = v.trim().parse().map_err(|_| {
                err(
                    "OTEL_TRACES_SAMPLER_ARG",
                    "must be a number between 0 and 1",
                )
            })?;
            if !(0.0..=1.0).contains(&r) {
                return Err(err("OTEL_TRACES_SAMPLER_ARG", "must be between 0 and 1"));
            }
            r
        }
        None => 1.0,
    };
    Ok(Some(match env.get("OTEL_TRACES_SAMPLER").as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => Sampler::ParentBased {
            root: RootSampler::AlwaysOn,
        },
        Some("parentbased_always_off") => Sampler::ParentBased {
            root: RootSampler::AlwaysOff,
        },
        Some("parentbased_traceidratio") => Sampler::ParentBased {
            root: RootSampler::Ratio(arg),
        },
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => return Ok(None),
        Some("traceidratio") => Sampler::Ratio(arg),
        Some(other) => {
            return Err(err(
                "OTEL_TRACES_SAMPLER",
                format!(
                    "{:?} is not one of parentbased_always_on, parentbased_always_off, parentbased_traceidratio, always_on, always_off, traceidratio",
                    crate::logging::field(other)
                ),
            ))
        }
    }))
}

fn parse_url(setting: &str, value: &str) -> Result<url::Url, OtelError> {
    let u = url::Url::parse(value.trim()).map_err(|e| err(setting, format!("not a URL ({e})")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(err(
            setting,
            "must be an http:// or https:// URL with a host",
        ));
    }
    Ok(u)
}

/// `base` + `v1/traces`, as the specification builds the per-signal URL.
fn traces_url(setting: &str, base: &str) -> Result<url::Url, OtelError> {
    let mut u = parse_url(setting, base)?;
    let path = format!("{}/v1/traces", u.path().trim_end_matches('/'));
    u.set_path(&path);
    Ok(u)
}

fn number(setting: &str, value: &str, min: u64, max: u64) -> Result<u64, OtelError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            err(
                setting,
                format!("must be a whole number from {min} to {max}"),
            )
        })
}

/// `key=value,…` with percent-decoded values (the W3C Baggage form the
/// specification uses for both variables).
fn pairs(setting: &str, value: &str) -> Result<Vec<(String, String)>, OtelError> {
    let mut out = Vec::new();
    for item in value.split(',').filter(|i| !i.trim().is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| err(setting, "every entry must be key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(err(setting, "an entry has an empty key"));
        }
        let v = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|_| err(setting, "a value is not UTF-8 once percent-decoded"))?;
        out.push((k.to_string(), v.into_owned()));
    }
    Ok(out)
}

/// The exporter's headers: names and values valid in HTTP, the value never
/// in an error message (it is often an API key).
fn headers(setting: &str, value: &str) -> Result<Vec<(String, String)>, OtelError> {
    let list = pairs(setting, value)?;
    for (k, v) in &list {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(err(
                setting,
                format!("{:?} is not a valid header name", crate::logging::field(k)),
            ));
        }
        if http::HeaderValue::from_str(v).is_err() {
            return Err(err(
                setting,
                format!(
                    "the value of {:?} is not a valid header value",
                    crate::logging::field(k)
                ),
            ));
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(pairs: &[(&str, &str)], file: &FileOtel) -> Result<Option<OtelSettings>, OtelError> {
        OtelSettings::resolve(&Env::from_pairs(pairs.iter().copied()), file)
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert!(resolve(&[], &FileOtel::default()).unwrap().is_none());
        let file = FileOtel {
            endpoint: Some("http://127.0.0.1:4318".into()),
            service_name: None,
        };
        assert!(resolve(&[], &file).unwrap().is_some());
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ] {
            assert!(resolve(&[off], &file).unwrap().is_none(), "{off:?}");
        }
    }

    #[test]
    fn the_variables_win_over_the_file_and_build_the_traces_url() {
        let file = FileOtel {
            endpoint: Some("http://file:4318".into()),
            service_name: Some("from-file".into()),
        };
        let s = resolve(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/base/"),
                ("OTEL_SERVICE_NAME", "checkout"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "k8s.pod.name=p%2C1,service.name=x",
                ),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s3cr%3Dt"),
            ],
            &file,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint.as_str(), "http://collector:4318/base/v1/traces");
        assert_eq!(s.service_name, "checkout");
        assert_eq!(s.resource, vec![("k8s.pod.name".into(), "p,1".into())]);
        assert_eq!(s.headers, vec![("x-api-key".into(), "s3cr=t".into())]);
        assert!(!format!("{s:?}").contains("s3cr"), "{s:?}");
        let s = resolve(
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://c.example/custom",
            )],
            &file,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint.as_str(), "https://c.example/custom");
        assert_eq!(s.service_name, "from-file");
        let s = resolve(&[], &file).unwrap().unwrap();
        assert_eq!(s.endpoint.as_str(), "http://file:4318/v1/traces");
    }

    #[test]
    fn bad_values_are_refused_by_name_and_never_echo_a_header_value() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        for (pair, needle) in [
            (
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x"),
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                "gRPC is not supported",
            ),
            (("OTEL_EXPORTER_OTLP_TIMEOUT", "0"), "from 1 to 60000"),
            (
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "99999999999999999999"),
                "from 1 to 60000",
            ),
            (("OTEL_BSP_SCHEDULE_DELAY", "-5"), "OTEL_BSP_SCHEDULE_DELAY"),
            (
                ("OTEL_BSP_MAX_QUEUE_SIZE", "70000"),
                "OTEL_BSP_MAX_QUEUE_SIZE",
            ),
            (("OTEL_TRACES_SAMPLER", "sometimes"), "OTEL_TRACES_SAMPLER"),
            (("OTEL_TRACES_SAMPLER_ARG", "1.5"), "between 0 and 1"),
            (("OTEL_TRACES_SAMPLER_ARG", "NaN"), "between 0 and 1"),
            (("OTEL_TRACES_EXPORTER", "zipkin"), "OTEL_TRACES_EXPORTER"),
            (
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-key=top%0Asecret"),
                "not a valid header value",
            ),
            (("OTEL_EXPORTER_OTLP_HEADERS", "topsecret"), "key=value"),
        ] {
            let e = resolve(&[base, pair], &FileOtel::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{pair:?}: {e}");
            assert!(!e.contains("secret"), "{pair:?}: {e}");
        }
        let e = resolve(
            &[
                base,
                ("OTEL_BSP_MAX_QUEUE_SIZE", "10"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "11"),
            ],
            &FileOtel::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("from 1 to 10"), "{e}");
    }

    #[test]
    fn samplers_follow_the_parent_or_the_ratio() {
        let parent = |sampled| {
            Some(super::super::SpanContext {
                trace_id: [1; 16],
                span_id: [2; 8],
                sampled,
            })
        };
        let pb = Sampler::ParentBased {
            root: RootSampler::AlwaysOn,
        };
        assert!(pb.sampled(None, &[1; 16]));
        assert!(pb.sampled(parent(true), &[1; 16]));
        assert!(!pb.sampled(parent(false), &[1; 16]));
        assert!(Sampler::AlwaysOn.sampled(parent(false), &[1; 16]));
        let mut low = [0u8; 16];
        assert!(Sampler::Ratio(0.5).sampled(None, &low));
        low[8] = 0xff;
        assert!(!Sampler::Ratio(0.5).sampled(None, &low));
        assert!(!Sampler::Ratio(0.0).sampled(None, &[0; 16]));
        assert!(Sampler::Ratio(1.0).sampled(None, &[0xff; 16]));
    }
}
