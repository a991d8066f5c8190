//! How the sidecar starts, says it is healthy, and stops — the contract a
//! Kubernetes pod (or systemd) relies on:
//!
//! | surface | meaning |
//! |---|---|
//! | `GET /startupz` | 200 once the sidecar has been ready once (identity works, every configured token warm), and from then on; else 503 with the reasons. The native sidecar's startupProbe: the app starts after it |
//! | `GET /readyz` | 200 while ready *now*: identity works, configured tokens valid, not draining; 503 with the reasons otherwise. Reads the cache only: it never dials the database, the auth service or the metadata service |
//! | `GET /healthz` | 200 while the process serves requests (liveness), draining included |
//! | `POST /quitquitquit` | stop now, as SIGTERM does but without the minimum delay, and exit 0; same callers as every other route (the listener's caller check) |
//! | `s2iam shutdown` | sends that over the Unix socket (for a preStop hook, or a Job's last step) |
//! | SIGTERM | draining: `/readyz` 503, the database and API proxies and the local API keep accepting for `--sigterm-min-delay` (the app is still draining its own work), then stop accepting; open sessions get their `drain_timeout`, all of it bounded by `--sigterm-max-delay` after the signal; exit 143, or 0 with `--exit-zero-on-sigterm` |
//! | SIGINT | as SIGTERM with no minimum delay; exit 130 |

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Why the sidecar stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM.
    Terminate,
    /// SIGINT.
    Interrupt,
    /// `POST /quitquitquit` (`s2iam shutdown`).
    Quit,
}

impl Stop {
    /// The process's exit code for this stop.
    pub fn exit_code(self, config: &LifecycleConfig) -> u8 {
        match self {
            Stop::Quit => 0,
            Stop::Terminate if config.exit_zero_on_sigterm => 0,
            // 128 + the signal's number, as a shell reports a process killed by it.
            Stop::Terminate => 143,
            Stop::Interrupt => 130,
        }
    }
}

/// The stop settings (flags of `s2iam serve`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// Exit 0 on SIGTERM instead of 143.
    pub exit_zero_on_sigterm: bool,
    /// After SIGTERM, keep accepting this long.
    pub min_delay: Duration,
    /// After SIGTERM, exit by then whatever is still open.
    pub max_delay: Option<Duration>,
}

/// The longest delay either setting takes.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Why the stop settings are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// Out of range, or the minimum above the maximum.
    #[error("{0}")]
    Range(String),
}

impl LifecycleConfig {
    /// Checks the ranges: each delay at most an hour, the minimum not above the maximum.
    pub fn new(
        exit_zero_on_sigterm: bool,
        min_delay: Duration,
        max_delay: Option<Duration>,
    ) -> Result<Self, LifecycleError> {
        if min_delay > MAX_DELAY || max_delay.is_some_and(|m| m > MAX_DELAY) {
            return Err(LifecycleError::Range(
                "--sigterm-min-delay and --sigterm-max-delay must be at most 1h".into(),
            ));
        }
        if max_delay.is_some_and(|m| m < min_delay) {
            return Err(LifecycleError::Range(
                "--sigterm-min-delay must not be longer than --sigterm-max-delay".into(),
            ));
        }
        Ok(Self {
            exit_zero_on_sigterm,
            min_delay,
            max_delay,
        })
    }
}

/// The sidecar's start and stop state, shared by the routes and [`super::run_with`].
#[derive(Debug, Default)]
pub struct Lifecycle {
    started: AtomicBool,
    draining: AtomicBool,
    quit: tokio::sync::Notify,
    quit_asked: AtomicBool,
}

impl Lifecycle {
    /// Records that the sidecar was ready once (`/startupz` stays 200).
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// Whether the sidecar was ready once.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// From now on `/readyz` says 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether a stop has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// `POST /quitquitquit`.
    pub fn request_quit(&self) {
        self.quit_asked.store(true, Ordering::Relaxed);
        self.quit.notify_waiters();
    }

    /// Resolves once a quit was requested (at once if it already was).
    pub async fn quit_requested(&self) {
        loop {
            let notified = self.quit.notified();
            if self.quit_asked.load(Ordering::Relaxed) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_exit_codes() {
        let s = Duration::from_secs;
        assert!(LifecycleConfig::new(false, s(5), Some(s(4))).is_err());
        assert!(LifecycleConfig::new(false, s(3601), None).is_err());
        assert!(LifecycleConfig::new(false, s(0), Some(s(7200))).is_err());
        let c = LifecycleConfig::new(false, s(5), Some(s(30))).unwrap();
        assert_eq!(Stop::Terminate.exit_code(&c), 143);
        assert_eq!(Stop::Quit.exit_code(&c), 0);
        assert_eq!(Stop::Interrupt.exit_code(&c), 130);
        let z = LifecycleConfig::new(true, s(0), None).unwrap();
        assert_eq!(Stop::Terminate.exit_code(&z), 0);
    }

    #[tokio::test]
    async fn a_quit_before_the_wait_is_not_lost() {
        let l = Lifecycle::default();
        l.request_quit();
        tokio::time::timeout(Duration::from_secs(5), l.quit_requested())
            .await
            .unwrap();
    }
}
