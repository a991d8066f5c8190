//! A warning when the auth service issues tokens that live no longer than
//! `cache.min_remaining`: the cache never hands such a token out as fresh, so
//! every request for it fetches a new one. Said once per token (its
//! description names no secret), so the log shows the misconfiguration without
//! repeating it on every request.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use super::describe;
use s2iam::client::TokenRequest;

/// Tokens remembered as already warned about; past this many (on-demand keys
/// come and go), no more warnings rather than unbounded memory.
const MAX_WARNED: usize = 1024;

/// Remembers which tokens were warned about.
#[derive(Debug)]
pub struct ShortLived {
    min_remaining: Duration,
    warned: Mutex<HashSet<TokenRequest>>,
}

impl ShortLived {
    /// Warns about lifetimes up to `min_remaining` (`cache.min_remaining`).
    pub fn new(min_remaining: Duration) -> Self {
        Self {
            min_remaining,
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// Logs a warning the first time `req` gets a token living no longer than
    /// `min_remaining`; true if this call warned.
    pub fn check(&self, req: &TokenRequest, lifetime: Duration) -> bool {
        if lifetime > self.min_remaining {
            return false;
        }
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.len() >= MAX_WARNED || !warned.insert(req.clone()) {
            return false;
        }
        tracing::warn!(
            token = %describe(req),
            lifetime_s = lifetime.as_secs(),
            min_remaining_s = self.min_remaining.as_secs(),
            "the auth service issues tokens that live no longer than cache.min_remaining: every request fetches a new one; lower cache.min_remaining below the token lifetime"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_per_token_and_only_for_short_lifetimes() {
        let s = ShortLived::new(Duration::from_secs(60));
        let a = TokenRequest::database("wg-a");
        let b = TokenRequest::database("wg-b");
        assert!(!s.check(&a, Duration::from_secs(61)), "long enough");
        assert!(s.check(&a, Duration::from_secs(60)));
        assert!(!s.check(&a, Duration::from_secs(30)), "once per token");
        assert!(s.check(&b, Duration::from_secs(1)));
        assert!(s.check(&TokenRequest::api(), Duration::ZERO));
    }

    #[test]
    fn remembers_a_bounded_number_of_tokens() {
        let s = ShortLived::new(Duration::from_secs(60));
        for i in 0..MAX_WARNED {
            assert!(s.check(&TokenRequest::database(&format!("wg-{i}")), Duration::ZERO));
        }
        assert!(!s.check(&TokenRequest::database("one-more"), Duration::ZERO));
        assert_eq!(s.warned.lock().unwrap().len(), MAX_WARNED);
    }
}
