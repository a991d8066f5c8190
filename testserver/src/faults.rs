//! Fault injection: rules that make an endpoint slow, failing, throttled, reset or
//! silent, so clients can be tested against every way a metadata service or auth
//! server misbehaves in the field.
//!
//! A rule matches requests by path prefix (and optionally method). The first matching
//! rule decides; a rule with `times` set stops matching after that many hits. Rules are
//! set in-process through [`Faults`], or over HTTP on every mock listener:
//!
//! - `POST /_mock/faults` with a [`FaultRule`] as JSON adds a rule;
//! - `GET /_mock/faults` lists the rules with their hit counts;
//! - `DELETE /_mock/faults` removes them all.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a matching request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer normally, after the rule's latency.
    Delay,
    /// Answer with the rule's `status` and a JSON error body.
    Status,
    /// Reset the TCP connection (RST) without answering.
    Reset,
    /// Accept the request and never answer.
    Blackhole,
}

/// One fault rule. Build it with the constructors, or send it as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Path prefix the rule applies to, e.g. `/metadata/identity/oauth2/token`.
    pub path: String,
    /// Only this method, when set (`GET`, `PUT`, …).
    #[serde(default)]
    pub method: Option<String>,
    /// What to do with a matching request.
    pub action: FaultAction,
    /// Status for [`FaultAction::Status`] (default 500).
    #[serde(default)]
    pub status: Option<u16>,
    /// Added latency in milliseconds, applied before the action.
    #[serde(default)]
    pub latency_ms: u64,
    /// Stop matching after this many hits (`None` = forever). "429 for the first N
    /// calls" is `FaultRule::status("/path", 429).times(N)`.
    #[serde(default)]
    pub times: Option<u32>,
    /// How many requests this rule has matched so far.
    #[serde(default)]
    pub hits: u32,
}

impl FaultRule {
    fn new(path: &str, action: FaultAction) -> Self {
        Self {
            path: path.to_string(),
            method: None,
            action,
            status: None,
            latency_ms: 0,
            times: None,
            hits: 0,
        }
    }

    /// Answer `status` with a JSON error.
    pub fn status(path: &str, status: u16) -> Self {
        Self {
            status: Some(status),
            ..Self::new(path, FaultAction::Status)
        }
    }

    /// Answer normally after `latency`.
    pub fn latency(path: &str, latency: Duration) -> Self {
        Self {
            latency_ms: latency.as_millis() as u64,
            ..Self::new(path, FaultAction::Delay)
        }
    }

    /// Reset the connection.
    pub fn reset(path: &str) -> Self {
        Self::new(path, FaultAction::Reset)
    }

    /// Never answer.
    pub fn blackhole(path: &str) -> Self {
        Self::new(path, FaultAction::Blackhole)
    }

    /// Match only the first `n` requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Match only `method`.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Add `latency` before the action.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency_ms = latency.as_millis() as u64;
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        let left = self.times.is_none_or(|t| self.hits < t);
        method_ok && left && path.starts_with(&self.path)
    }
}

/// What the listener does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Wait this long first.
    pub latency: Duration,
    /// Then do this.
    pub action: FaultAction,
    /// The status for [`FaultAction::Status`].
    pub status: u16,
}

/// The fault rules of one mock listener. Cloning shares the rules.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<FaultRule>>>,
}

impl Faults {
    /// Adds a rule.
    pub fn add(&self, rule: FaultRule) {
        self.lock().push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The rules, with their hit counts.
    pub fn list(&self) -> Vec<FaultRule> {
        self.lock().clone()
    }

    /// The fault for a request, counting the hit; `None` when no rule matches.
    pub fn decide(&self, method: &str, path: &str) -> Option<Decision> {
        let mut rules = self.lock();
        let rule = rules.iter_mut().find(|r| r.matches(method, path))?;
        rule.hits = rule.hits.saturating_add(1);
        Some(Decision {
            latency: Duration::from_millis(rule.latency_ms),
            action: rule.action,
            status: rule.status.unwrap_or(500),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FaultRule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_n_then_pass() {
        let f = Faults::default();
        f.add(FaultRule::status("/a", 429).times(2));
        assert_eq!(f.decide("GET", "/a/b").unwrap().status, 429);
        assert_eq!(f.decide("GET", "/a").unwrap().status, 429);
        assert!(f.decide("GET", "/a").is_none());
        assert_eq!(f.list()[0].hits, 2);
    }

    #[test]
    fn method_and_prefix_must_match() {
        let f = Faults::default();
        f.add(FaultRule::reset("/latest/api/token").method("put"));
        assert!(f.decide("GET", "/latest/api/token").is_none());
        assert!(f.decide("PUT", "/latest/meta-data").is_none());
        assert_eq!(
            f.decide("PUT", "/latest/api/token").unwrap().action,
            FaultAction::Reset
        );
    }

    #[test]
    fn rules_parse_from_json() {
        let r: FaultRule =
            serde_json::from_str(r#"{"path":"/x","action":"blackhole","latency_ms":5}"#).unwrap();
        assert_eq!(r.action, FaultAction::Blackhole);
        assert_eq!(r.latency_ms, 5);
    }
}
