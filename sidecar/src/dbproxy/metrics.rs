//! The database proxies' part of `/metrics`:
//!
//! - `s2iam_dbproxy_connections_open{proxy}`: client sessions open now;
//! - `s2iam_dbproxy_connections_total{proxy}`: client connections accepted;
//! - `s2iam_dbproxy_login_failures_total{proxy,reason}`: connections that never
//!   reached the relay, by [`FailureReason`];
//! - `s2iam_dbproxy_bytes_total{proxy,direction}`: bytes relayed after login
//!   (`to_upstream`, `to_client`);
//! - `s2iam_dbproxy_connect_seconds{proxy}`: histogram of accept → login OK;
//! - `s2iam_dbproxy_sessions_closed_total{proxy,reason}`: sessions the proxy
//!   closed itself (`idle_timeout`, `max_session_lifetime`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a client connection did not get a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// No database JWT could be had.
    TokenUnavailable,
    /// TCP connect, or the server's greeting, failed or timed out.
    UpstreamUnreachable,
    /// The TLS handshake failed (e.g. the certificate does not match).
    Tls,
    /// The server refused the login.
    Refused,
    /// `max_connections` reached.
    TooManyConnections,
    /// The client's user name or uid is not allowed.
    ClientNotAllowed,
    /// Either side spoke something the proxy cannot relay.
    Protocol,
}

impl FailureReason {
    /// Every reason, in metric order.
    pub const ALL: [FailureReason; 7] = [
        Self::TokenUnavailable,
        Self::UpstreamUnreachable,
        Self::Tls,
        Self::Refused,
        Self::TooManyConnections,
        Self::ClientNotAllowed,
        Self::Protocol,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::TokenUnavailable => "token_unavailable",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::Tls => "tls",
            Self::Refused => "refused",
            Self::TooManyConnections => "too_many_connections",
            Self::ClientNotAllowed => "client_not_allowed",
            Self::Protocol => "protocol",
        }
    }
}

/// Upper bounds (seconds) of the connect-latency histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The counters of one proxy.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Sessions open now.
    pub open: AtomicU64,
    /// Client connections accepted.
    pub total: AtomicU64,
    failures: [AtomicU64; 7],
    /// Bytes relayed client → SingleStore.
    pub to_upstream: AtomicU64,
    /// Bytes relayed SingleStore → client.
    pub to_client: AtomicU64,
    /// Sessions closed after `idle_timeout`.
    pub closed_idle: AtomicU64,
    /// Sessions closed for being older than `max_session_lifetime`.
    pub closed_age: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    connect_count: AtomicU64,
    connect_micros: AtomicU64,
}

impl ProxyCounters {
    /// Counts a connection that got no session.
    pub fn failure(&self, reason: FailureReason) {
        let i = FailureReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.failures[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections that got no session for `reason`.
    pub fn failures(&self, reason: FailureReason) -> u64 {
        let i = FailureReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.failures[i].load(Ordering::Relaxed)
    }

    /// Records a login that succeeded after `latency`.
    pub fn connected(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.connect_count.fetch_add(1, Ordering::Relaxed);
        self.connect_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Every proxy's counters, by name. Cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct DbProxyMetrics {
    proxies: Arc<Mutex<BTreeMap<String, Arc<ProxyCounters>>>>,
}

impl DbProxyMetrics {
    /// The counters of proxy `name` (created on first use).
    pub fn proxy(&self, name: &str) -> Arc<ProxyCounters> {
        self.proxies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Appends the text exposition (nothing when no proxy is configured).
    pub fn render(&self, out: &mut String) {
        let proxies = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        if proxies.is_empty() {
            return;
        }
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        header(
            out,
            "s2iam_dbproxy_connections_open",
            "gauge",
            "Database proxy client sessions open.",
        );
        for (p, c) in proxies.iter() {
            let _ = writeln!(
                out,
                "s2iam_dbproxy_connections_open{{proxy=\"{}\"}} {}",
                esc(p),
                load(&c.open)
            );
        }
        header(
            out,
            "s2iam_dbproxy_connections_total",
            "counter",
            "Database proxy client connections accepted.",
        );
        for (p, c) in proxies.iter() {
            let _ = writeln!(
                out,
                "s2iam_dbproxy_connections_total{{proxy=\"{}\"}} {}",
                esc(p),
                load(&c.total)
            );
        }
        header(
            out,
            "s2iam_dbproxy_login_failures_total",
            "counter",
            "Database proxy connections that got no session, by reason.",
        );
        for (p, c) in proxies.iter() {
            for r in FailureReason::ALL {
                let _ = writeln!(
                    out,
                    "s2iam_dbproxy_login_failures_total{{proxy=\"{}\",reason=\"{}\"}} {}",
                    esc(p),
                    r.label(),
                    c.failures(r)
                );
            }
        }
        header(
            out,
            "s2iam_dbproxy_sessions_closed_total",
            "counter",
            "Database proxy sessions the proxy closed itself, by reason.",
        );
        for (p, c) in proxies.iter() {
            for (reason, n) in [
                ("idle_timeout", &c.closed_idle),
                ("max_session_lifetime", &c.closed_age),
            ] {
                let _ = writeln!(
                    out,
                    "s2iam_dbproxy_sessions_closed_total{{proxy=\"{}\",reason=\"{reason}\"}} {}",
                    esc(p),
                    load(n)
                );
            }
        }
        header(
            out,
            "s2iam_dbproxy_bytes_total",
            "counter",
            "Bytes relayed after login.",
        );
        for (p, c) in proxies.iter() {
            for (dir, n) in [("to_upstream", &c.to_upstream), ("to_client", &c.to_client)] {
                let _ = writeln!(
                    out,
                    "s2iam_dbproxy_bytes_total{{proxy=\"{}\",direction=\"{dir}\"}} {}",
                    esc(p),
                    load(n)
                );
            }
        }
        header(
            out,
            "s2iam_dbproxy_connect_seconds",
            "histogram",
            "Client accepted to upstream login done.",
        );
        for (p, c) in proxies.iter() {
            let p = esc(p);
            for (bound, n) in BUCKETS.iter().zip(&c.buckets) {
                let _ = writeln!(
                    out,
                    "s2iam_dbproxy_connect_seconds_bucket{{proxy=\"{p}\",le=\"{bound}\"}} {}",
                    load(n)
                );
            }
            let count = load(&c.connect_count);
            let _ = writeln!(
                out,
                "s2iam_dbproxy_connect_seconds_bucket{{proxy=\"{p}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "s2iam_dbproxy_connect_seconds_sum{{proxy=\"{p}\"}} {}",
                load(&c.connect_micros) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "s2iam_dbproxy_connect_seconds_count{{proxy=\"{p}\"}} {count}"
            );
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = DbProxyMetrics::default();
        let mut empty = String::new();
        m.render(&mut empty);
        assert!(empty.is_empty());
        let c = m.proxy("127.0.0.1:3306");
        c.total.fetch_add(2, Ordering::Relaxed);
        c.failure(FailureReason::Refused);
        c.connected(Duration::from_millis(3));
        c.to_client.fetch_add(10, Ordering::Relaxed);
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "s2iam_dbproxy_connections_total{proxy=\"127.0.0.1:3306\"} 2",
            "s2iam_dbproxy_login_failures_total{proxy=\"127.0.0.1:3306\",reason=\"refused\"} 1",
            "s2iam_dbproxy_login_failures_total{proxy=\"127.0.0.1:3306\",reason=\"tls\"} 0",
            "s2iam_dbproxy_bytes_total{proxy=\"127.0.0.1:3306\",direction=\"to_client\"} 10",
            "s2iam_dbproxy_connect_seconds_bucket{proxy=\"127.0.0.1:3306\",le=\"0.005\"} 1",
            "s2iam_dbproxy_connect_seconds_bucket{proxy=\"127.0.0.1:3306\",le=\"0.0025\"} 0",
            "s2iam_dbproxy_connect_seconds_count{proxy=\"127.0.0.1:3306\"} 1",
        ] {
            assert!(out.contains(line), "missing {line}\n{out}");
        }
    }
}
