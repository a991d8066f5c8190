//! Prometheus text exposition of the sidecar's counters (`GET /metrics`):
//!
//! - `s2iam_requests_total{route,status}`: local API requests;
//! - `s2iam_upstream_exchanges_total`, `s2iam_upstream_failures_total`: token fetches;
//! - `s2iam_refresh_failures_total`: background refreshes that failed;
//! - `s2iam_cache_hits_total`, `s2iam_cache_misses_total`, `s2iam_stale_served_total`,
//!   `s2iam_cache_evictions_total`;
//! - `s2iam_token_seconds_to_expiry{jwt_type,workspace_group}`: per configured token
//!   (on-demand tokens are counted in `s2iam_cached_tokens{kind}`, never labelled,
//!   so the series cannot grow with what callers ask for);
//! - `s2iam_negative_cache_hits_total`, `s2iam_cold_fetches_refused_total`;
//! - `s2iam_connections_open{listener}`, `s2iam_connections_refused_total`;
//! - `s2iam_aws_credentials_seconds_to_expiry{profile}`, `s2iam_aws_sts_calls_total`,
//!   `s2iam_aws_sts_failures_total`: AWS credential profiles;
//! - `s2iam_aws_clock_skew_seconds` (AWS's clock minus this one, from STS's `Date`),
//!   `s2iam_aws_clock_skew_correction_seconds` (what SigV4 signing applies; see
//!   [`s2iam::env::skew`]);
//! - `s2iam_sink_write_failures_total`, `s2iam_ready`;
//! - `s2iam_dbproxy_*`: the database proxies (see [`crate::dbproxy::metrics`]).
//! - `s2iam_api_proxy_requests_total{proxy,class}` (`2xx`..`5xx` as the client saw it),
//!   `s2iam_api_proxy_upstream_errors_total{proxy,reason}` (`token`, `connect`,
//!   `timeout`, `other`, `body`: broke off mid-response), `s2iam_api_proxy_bytes_total{proxy,direction}` (`upstream`:
//!   request bodies sent, `downstream`: response bodies relayed).
//!
//! Why the text is formatted here rather than by the `prometheus-client` crate
//! (measured 2026-11-30: +60 KB stripped release binary, ~18 s extra release build on
//! 2 cores, so cost was not the reason): that crate writes OpenMetrics (`# EOF`
//! trailer, `_total` appended to counter names, its own content type), which would
//! change the exposition every existing scraper, dashboard and test of ours reads.
//! The label sets are fixed here by construction (enums and configured names only),
//! which is the guarantee its typed families would have added.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use s2iam::cache::CacheStats;

/// The routes `s2iam_requests_total` counts (the router's matched paths), and
/// `unmatched`: fixed, so the series cannot grow with what callers send.
pub const ROUTES: [&str; 9] = [
    "/v1/token/database",
    "/v1/token/api",
    "/v1/identity",
    "/v1/aws/credentials/{profile}",
    "/v1/s3/presign",
    "/healthz",
    "/readyz",
    "/metrics",
    "unmatched",
];

/// The statuses counted one by one; any other is counted as `other`.
const STATUSES: [u16; 12] = [200, 400, 401, 403, 404, 405, 429, 500, 502, 503, 504, 0];

/// Counters the routes update: plain atomics, no lock on the request path.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[AtomicU64; STATUSES.len()]; ROUTES.len()],
    /// Sink files that could not be written.
    pub sink_write_failures: AtomicU64,
    /// The database proxies' series (rendered after the rest).
    pub database_proxy: crate::dbproxy::metrics::DbProxyMetrics,
    /// Requests, errors and bytes of the API proxies.
    pub api_proxy: ApiProxyMetrics,
    /// Connections closed at once because a cap was reached.
    pub connections_refused: Arc<AtomicU64>,
    unix_open: Arc<AtomicU64>,
    tcp_open: Arc<AtomicU64>,
}

/// Counters of the `[[api_proxy]]` listeners, keyed by proxy name and a label.
#[derive(Debug, Default)]
pub struct ApiProxyMetrics {
    requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    upstream_errors: Mutex<BTreeMap<(String, &'static str), u64>>,
    bytes: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl ApiProxyMetrics {
    /// A request answered with `status` (by the upstream or by the proxy).
    pub fn count_request(&self, proxy: &str, status: u16) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        add(&self.requests, proxy, class, 1);
    }

    /// `reason`: `token`, `connect`, `timeout`, `other` or `body`.
    pub fn count_upstream_error(&self, proxy: &str, reason: &'static str) {
        add(&self.upstream_errors, proxy, reason, 1);
    }

    /// `direction`: `upstream` (request body) or `downstream` (response body).
    pub fn add_bytes(&self, proxy: &str, direction: &'static str, n: u64) {
        add(&self.bytes, proxy, direction, n);
    }

    fn render(&self, out: &mut String) {
        let families = [
            (
                "s2iam_api_proxy_requests_total",
                "API proxy requests by status class.",
                "class",
                &self.requests,
            ),
            (
                "s2iam_api_proxy_upstream_errors_total",
                "API proxy requests that got no upstream answer, by reason.",
                "reason",
                &self.upstream_errors,
            ),
            (
                "s2iam_api_proxy_bytes_total",
                "Body bytes relayed by the API proxies.",
                "direction",
                &self.bytes,
            ),
        ];
        for (name, help, label, map) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((proxy, value), n) in map.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = writeln!(
                    out,
                    "{name}{{proxy=\"{}\",{label}=\"{value}\"}} {n}",
                    escape(proxy)
                );
            }
        }
    }
}

fn add(
    map: &Mutex<BTreeMap<(String, &'static str), u64>>,
    proxy: &str,
    label: &'static str,
    n: u64,
) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    match map.iter_mut().find(|((p, l), _)| *l == label && p == proxy) {
        Some((_, v)) => *v = v.saturating_add(n),
        None => {
            map.insert((proxy.to_string(), label), n);
        }
    }
}

impl Metrics {
    /// The gauge of open connections of the listener named `listener`.
    pub fn connections_open(&self, listener: &str) -> Arc<AtomicU64> {
        if listener == "unix" {
            self.unix_open.clone()
        } else {
            self.tcp_open.clone()
        }
    }

    /// Counts a request to `route` (one of [`ROUTES`]; anything else counts as
    /// `unmatched`) answered with `status`.
    pub fn count_request(&self, route: &str, status: u16) {
        let r = ROUTES
            .iter()
            .position(|x| *x == route)
            .unwrap_or(ROUTES.len().saturating_sub(1));
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUSES.len().saturating_sub(1));
        if let Some(n) = self.requests.get(r).and_then(|row| row.get(s)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Renders everything in the text format.
    pub fn render(
        &self,
        cache: &CacheStats,
        (pinned, on_demand): (usize, usize),
        tokens: &[(String, String, f64)],
        aws: &[(String, f64)],
        aws_cache: &CacheStats,
        ready: bool,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP s2iam_requests_total Local API requests by route and status."
        );
        let _ = writeln!(out, "# TYPE s2iam_requests_total counter");
        for (route, row) in ROUTES.iter().zip(&self.requests) {
            for (status, n) in STATUSES.iter().zip(row) {
                let n = n.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let status = match status {
                    0 => "other".to_string(),
                    s => s.to_string(),
                };
                let _ = writeln!(
                    out,
                    "s2iam_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let counters = [
            (
                "s2iam_upstream_exchanges_total",
                "Token fetches from the auth service.",
                &cache.fetches,
            ),
            (
                "s2iam_upstream_failures_total",
                "Token fetches that failed.",
                &cache.fetch_failures,
            ),
            (
                "s2iam_refresh_failures_total",
                "Background refreshes that failed.",
                &cache.refresh_failures,
            ),
            (
                "s2iam_cache_hits_total",
                "Requests answered from the cache.",
                &cache.hits,
            ),
            (
                "s2iam_cache_misses_total",
                "Requests that needed a fetch.",
                &cache.misses,
            ),
            (
                "s2iam_stale_served_total",
                "Still-valid tokens served after a failed fetch.",
                &cache.stale_served,
            ),
            (
                "s2iam_cache_evictions_total",
                "Idle tokens dropped.",
                &cache.evictions,
            ),
            (
                "s2iam_negative_cache_hits_total",
                "Requests answered with a recent failure instead of a new fetch.",
                &cache.negative_hits,
            ),
            (
                "s2iam_cold_fetches_refused_total",
                "Requests for tokens not yet cached refused by the rate limit (429).",
                &cache.refused,
            ),
            (
                "s2iam_sink_write_failures_total",
                "Failed file-sink writes.",
                &self.sink_write_failures,
            ),
            (
                "s2iam_connections_refused_total",
                "Connections closed at once because listen.max_connections(_per_uid) was reached.",
                &self.connections_refused,
            ),
        ];
        write_counters(&mut out, &counters);
        let _ = writeln!(
            out,
            "# HELP s2iam_connections_open Open connections per listener.\n# TYPE s2iam_connections_open gauge\ns2iam_connections_open{{listener=\"unix\"}} {}\ns2iam_connections_open{{listener=\"tcp\"}} {}",
            self.unix_open.load(Ordering::Relaxed),
            self.tcp_open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP s2iam_cached_tokens Tokens in the cache: configured (pinned) and on demand.\n# TYPE s2iam_cached_tokens gauge\ns2iam_cached_tokens{{kind=\"configured\"}} {pinned}\ns2iam_cached_tokens{{kind=\"on_demand\"}} {on_demand}"
        );
        let _ = writeln!(
            out,
            "# HELP s2iam_token_seconds_to_expiry Seconds until each cached token expires."
        );
        let _ = writeln!(out, "# TYPE s2iam_token_seconds_to_expiry gauge");
        for (jwt_type, wg, secs) in tokens {
            let _ = writeln!(
                out,
                "s2iam_token_seconds_to_expiry{{jwt_type=\"{}\",workspace_group=\"{}\"}} {secs:.0}",
                escape(jwt_type),
                escape(wg)
            );
        }
        let _ = writeln!(
            out,
            "# HELP s2iam_aws_credentials_seconds_to_expiry Seconds until each AWS profile's cached credentials expire."
        );
        let _ = writeln!(out, "# TYPE s2iam_aws_credentials_seconds_to_expiry gauge");
        for (profile, secs) in aws {
            let _ = writeln!(
                out,
                "s2iam_aws_credentials_seconds_to_expiry{{profile=\"{}\"}} {secs:.0}",
                escape(profile)
            );
        }
        let aws_counters = [
            (
                "s2iam_aws_sts_calls_total",
                "AWS credential fetches (STS or the workload's own).",
                &aws_cache.fetches,
            ),
            (
                "s2iam_aws_sts_failures_total",
                "AWS credential fetches that failed.",
                &aws_cache.fetch_failures,
            ),
        ];
        write_counters(&mut out, &aws_counters);
        let _ = writeln!(
            out,
            "# HELP s2iam_ready 1 when identity works and every configured token is warm."
        );
        let _ = writeln!(
            out,
            "# TYPE s2iam_ready gauge\ns2iam_ready {}",
            u8::from(ready)
        );
        self.database_proxy.render(&mut out);
        self.api_proxy.render(&mut out);
        out
    }
}

/// The clock-skew gauges: the last offset measured from STS answers (0 before
/// any) and the correction signing applies.
pub fn render_clock_skew(reading: &s2iam::env::SkewReading) -> String {
    format!(
        "# HELP s2iam_aws_clock_skew_seconds AWS's clock minus this machine's, from the Date of STS answers.\n\
         # TYPE s2iam_aws_clock_skew_seconds gauge\n\
         s2iam_aws_clock_skew_seconds {}\n\
         # HELP s2iam_aws_clock_skew_correction_seconds The correction SigV4 signing applies to this machine's clock.\n\
         # TYPE s2iam_aws_clock_skew_correction_seconds gauge\n\
         s2iam_aws_clock_skew_correction_seconds {}\n",
        reading.measured_secs.unwrap_or(0),
        reading.correction_secs
    )
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `# HELP`, `# TYPE … counter` and the value of each (name, help, counter).
fn write_counters(out: &mut String, counters: &[(&str, &str, &AtomicU64)]) {
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            value.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::default();
        m.count_request("/v1/token/api", 200);
        m.count_request("/v1/token/api", 200);
        let stats = CacheStats::default();
        stats.hits.store(5, Ordering::Relaxed);
        let aws_stats = CacheStats::default();
        aws_stats.fetches.store(3, Ordering::Relaxed);
        let text = m.render(
            &stats,
            (1, 2),
            &[("database".into(), "w\"g".into(), 12.4)],
            &[("analytics".into(), 900.2)],
            &aws_stats,
            true,
        );
        assert!(text.contains("s2iam_aws_credentials_seconds_to_expiry{profile=\"analytics\"} 900"));
        assert!(text.contains("s2iam_aws_sts_calls_total 3"));
        assert!(text.contains("s2iam_requests_total{route=\"/v1/token/api\",status=\"200\"} 2"));
        assert!(text.contains("s2iam_cache_hits_total 5"));
        assert!(text.contains("workspace_group=\"w\\\"g\"} 12"));
        assert!(text.contains("s2iam_ready 1"));
        assert!(text.contains("s2iam_cached_tokens{kind=\"on_demand\"} 2"));
    }

    #[test]
    fn renders_clock_skew() {
        let text = render_clock_skew(&s2iam::env::SkewReading {
            measured_secs: Some(-601),
            correction_secs: -601,
        });
        assert!(
            text.contains("\ns2iam_aws_clock_skew_seconds -601\n"),
            "{text}"
        );
        assert!(text.contains("\ns2iam_aws_clock_skew_correction_seconds -601\n"));
        assert!(text.contains("# TYPE s2iam_aws_clock_skew_seconds gauge\n"));
    }

    #[test]
    fn renders_api_proxy_counters() {
        let m = Metrics::default();
        m.api_proxy.count_request("data", 200);
        m.api_proxy.count_request("data", 204);
        m.api_proxy.count_request("data", 503);
        m.api_proxy.count_upstream_error("data", "connect");
        m.api_proxy.add_bytes("data", "downstream", 10);
        m.api_proxy.add_bytes("data", "downstream", 5);
        let text = m.render(
            &CacheStats::default(),
            (0, 0),
            &[],
            &[],
            &CacheStats::default(),
            false,
        );
        assert!(
            text.contains("s2iam_api_proxy_requests_total{proxy=\"data\",class=\"2xx\"} 2"),
            "{text}"
        );
        assert!(text.contains("s2iam_api_proxy_requests_total{proxy=\"data\",class=\"5xx\"} 1"));
        assert!(text.contains(
            "s2iam_api_proxy_upstream_errors_total{proxy=\"data\",reason=\"connect\"} 1"
        ));
        assert!(text
            .contains("s2iam_api_proxy_bytes_total{proxy=\"data\",direction=\"downstream\"} 15"));
    }
}
