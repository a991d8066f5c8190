//! Rate limits on exchanges for keys the cache does not hold yet ("cold" keys):
//! every caller together, and each caller (its uid on the Unix socket, its
//! address on TCP). A cached key is never limited, and concurrent callers of one
//! cold key count once (the cache asks only the caller that creates the key).
//! Over the limit the caller gets 429 with `Retry-After`.
//!
//! `governor` (GCRA, the crate made for this) instead of a hand-written bucket:
//! without its default features it adds 15 small crates to the lock (no clock
//! calibration, std `Instant`); the keyed store is pruned so it cannot grow with
//! callers.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Who is asking, for the per-caller limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A Unix-socket caller, by its uid (`SO_PEERCRED`).
    Uid(u32),
    /// A TCP caller, by its address.
    Addr(IpAddr),
    /// A caller the listener could not identify (they share one budget).
    Unknown,
}

/// As the audit trail names a caller: `uid:1000`, an address, or `unknown`.
impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Uid(uid) => write!(f, "uid:{uid}"),
            Caller::Addr(ip) => write!(f, "{ip}"),
            Caller::Unknown => f.write_str("unknown"),
        }
    }
}

/// Keyed-store size above which idle callers are pruned.
const PRUNE_ABOVE: usize = 1024;

/// The two limits.
pub struct ColdLimits {
    global: DefaultDirectRateLimiter,
    per_caller: DefaultKeyedRateLimiter<Caller>,
    clock: DefaultClock,
}

impl ColdLimits {
    /// `global` and `per_caller` new keys per second (each also the burst).
    pub fn new(global: u32, per_caller: u32) -> Self {
        let quota = |n: u32| Quota::per_second(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            global: RateLimiter::direct(quota(global)),
            per_caller: RateLimiter::keyed(quota(per_caller)),
            clock: DefaultClock::default(),
        }
    }

    /// `Ok` to fetch a new key for `caller`, or how long to wait.
    pub fn check(&self, caller: Caller) -> Result<(), Duration> {
        if self.per_caller.len() > PRUNE_ABOVE {
            self.per_caller.retain_recent();
        }
        self.per_caller
            .check_key(&caller)
            .map_err(|n| n.wait_time_from(self.clock.now()))?;
        self.global
            .check()
            .map_err(|n| n.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_caller_then_global() {
        let l = ColdLimits::new(5, 2);
        let a = Caller::Uid(1);
        assert!(l.check(a).is_ok());
        assert!(l.check(a).is_ok());
        let wait = l.check(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        for uid in 2..=4 {
            assert!(l.check(Caller::Uid(uid)).is_ok());
        }
        assert!(l.check(Caller::Uid(9)).is_err(), "global burst of 5 spent");
    }
}
