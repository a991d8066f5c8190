//! The one retry policy: bounded attempts, capped exponential backoff with
//! jitter, `Retry-After` honoured, every wait capped by what is left of the
//! policy's budget. Waiting is `tokio::time::sleep`, so dropping the future (a
//! lost detection race, a caller's timeout) cancels it cleanly.

use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::Rng as _;

use super::error::TransportError;
use super::fetch::Reply;
use crate::util::mono_now;

/// How hard to try before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles after each failure.
    pub base_delay: Duration,
    /// Longest computed backoff (a server's `Retry-After` may ask for more).
    pub max_delay: Duration,
    /// Longest total time spent waiting between attempts.
    pub budget: Duration,
}

impl RetryPolicy {
    /// The backoff before attempt `attempt + 1` after `attempt` failures: exponential,
    /// capped, with "equal jitter" (half fixed, half random) so many clients
    /// throttled together do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let full = exp.min(self.max_delay);
        let half = full.checked_div(2).unwrap_or_default();
        let jitter_ns =
            rand::thread_rng().gen_range(0..=half.as_nanos().min(u64::MAX as u128) as u64);
        half.saturating_add(Duration::from_nanos(jitter_ns))
    }
}

/// How long to wait when a server asked for `after` (`Retry-After`): at least
/// that, plus up to half of it again at random. Why: a throttling server hands
/// every client it turns away in one second the same `Retry-After`; obeyed to
/// the millisecond, they all come back within one second again, late in it
/// (they were the ones past the quota), after that second's quota is gone, and
/// are turned away again — an echo every `Retry-After` seconds
/// (`sidecar/examples/fleet_sim.rs`, 100,000 sidecars after an outage: 133, 73, 40, 24
/// rejections two seconds apart, each one another request to the service).
pub fn after_retry_after(after: Duration) -> Duration {
    let half = after.checked_div(2).unwrap_or_default();
    let ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    after.saturating_add(Duration::from_millis(rand::thread_rng().gen_range(0..=ms)))
}

tokio::task_local! {
    static CALLER_RETRIES: ();
}

/// Runs `f` telling the code in it that its caller retries on a schedule of
/// its own (the cache refreshing a value that is still valid). Only the
/// exchange reads it (`ExchangeClient::exchange`, which says why): an attempt
/// that fails without the server naming a time to come back (`Retry-After`)
/// is not repeated in the call. [`retry`] and [`retry_answers`] (metadata
/// services, STS) do not look at it.
pub async fn caller_retries<F: Future>(f: F) -> F::Output {
    CALLER_RETRIES.scope((), f).await
}

/// Whether the running task is inside [`caller_retries`].
pub fn caller_retries_set() -> bool {
    CALLER_RETRIES.try_with(|_| ()).is_ok()
}

/// What one attempt came to.
pub enum Step<T, E> {
    /// Succeeded with this value.
    Done(T),
    /// Not worth retrying.
    Fail(E),
    /// Transient: try again, after `after` if the server said how long.
    Retry {
        /// Why, for the log and the final error.
        reason: String,
        /// The server's `Retry-After`, if it sent one.
        after: Option<Duration>,
    },
}

impl<T, E> Step<T, E> {
    /// The reply of an attempt, or the step its transport failure calls for:
    /// another try when the failure is transient, else `fail(reason)`.
    pub fn from_transport(
        result: Result<Reply, TransportError>,
        fail: impl FnOnce(String) -> E,
    ) -> Result<Reply, Self> {
        match result {
            Ok(reply) => Ok(reply),
            Err(e) if e.is_transient() => Err(Step::Retry {
                reason: e.to_string(),
                after: None,
            }),
            Err(e) => Err(Step::Fail(fail(e.to_string()))),
        }
    }
}

/// Why [`retry`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaveUp {
    /// Attempts made.
    pub attempts: u32,
    /// Time since the first attempt.
    pub elapsed: Duration,
    /// The last attempt's failure.
    pub last: String,
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gave up after {} attempt{} in {} ms; last error: {}",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" },
            self.elapsed.as_millis(),
            self.last
        )
    }
}

/// Runs `op(attempt)` (attempt counts from 1) until it is done, fails for good, or
/// the policy is spent; `give_up` turns the last transient failure into an error.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    mut op: F,
    give_up: impl FnOnce(GaveUp) -> E,
) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Step<T, E>>,
{
    let start = mono_now();
    let mut waited = Duration::ZERO;
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let (reason, after) = match op(attempt).await {
            Step::Done(value) => return Ok(value),
            Step::Fail(e) => return Err(e),
            Step::Retry { reason, after } => (reason, after),
        };
        let left = policy.budget.saturating_sub(waited);
        if attempt >= max_attempts || left.is_zero() {
            return Err(give_up(GaveUp {
                attempts: attempt,
                elapsed: mono_now().saturating_duration_since(start),
                last: reason,
            }));
        }
        let wait = after.unwrap_or_else(|| policy.backoff(attempt)).min(left);
        tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, %reason, "retrying");
        tokio::time::sleep(wait).await;
        waited = waited.saturating_add(wait);
        attempt = attempt.saturating_add(1);
    }
}

/// Sends until the answer's status is not `retryable` or `policy` is spent, and
/// returns the last answer whatever its status (the caller reads the error
/// document); waits honour `Retry-After`. A transport failure ends it at once.
pub async fn retry_answers<F, Fut>(
    policy: &RetryPolicy,
    retryable: fn(u16) -> bool,
    mut send: F,
) -> Result<Reply, TransportError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Reply, TransportError>>,
{
    let mut waited = Duration::ZERO;
    let mut attempt = 1;
    loop {
        let answer = send().await?;
        let left = policy.budget.saturating_sub(waited);
        if !retryable(answer.status) || attempt >= policy.max_attempts.max(1) || left.is_zero() {
            return Ok(answer);
        }
        // A `Retry-After` date is a wait the server asks for, not a lifetime: it is
        // measured against the real clock, which `http` (below `env`) reads here.
        #[allow(clippy::disallowed_methods)]
        let wait = answer
            .retry_after(SystemTime::now())
            .unwrap_or_else(|| policy.backoff(attempt))
            .min(left);
        tracing::debug!(
            attempt,
            status = answer.status,
            wait_ms = wait.as_millis() as u64,
            "retrying"
        );
        tokio::time::sleep(wait).await;
        waited = waited.saturating_add(wait);
        attempt = attempt.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
            budget: Duration::from_secs(10),
        };
        for _ in 0..50 {
            let d1 = p.backoff(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.backoff(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d9 = p.backoff(9);
            assert!(d9 >= Duration::from_millis(400) && d9 <= Duration::from_millis(800));
        }
        assert!(p.backoff(u32::MAX) <= Duration::from_millis(800));
    }

    fn policy(max_attempts: u32, budget_ms: u64) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            budget: Duration::from_millis(budget_ms),
        }
    }

    #[tokio::test]
    async fn retry_stops_at_max_attempts_and_reports_the_last_error() {
        let mut calls = 0;
        let r: Result<(), String> = retry(
            &policy(4, 1000),
            |n| {
                calls += 1;
                async move {
                    Step::Retry {
                        reason: format!("busy {n}"),
                        after: None,
                    }
                }
            },
            |g| g.to_string(),
        )
        .await;
        assert_eq!(calls, 4);
        let e = r.unwrap_err();
        assert!(
            e.contains("after 4 attempts") && e.contains("busy 4"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn retry_succeeds_after_transient_failures_and_stops_on_fatal() {
        let r: Result<u32, String> = retry(
            &policy(5, 1000),
            |n| async move {
                if n < 3 {
                    Step::Retry {
                        reason: "429".into(),
                        after: Some(Duration::from_millis(1)),
                    }
                } else {
                    Step::Done(n)
                }
            },
            |g| g.to_string(),
        )
        .await;
        assert_eq!(r.unwrap(), 3);
        let r: Result<u32, String> = retry(
            &policy(5, 1000),
            |_| async { Step::Fail("fatal".to_string()) },
            |g| g.to_string(),
        )
        .await;
        assert_eq!(r.unwrap_err(), "fatal");
    }

    #[tokio::test]
    async fn a_long_retry_after_is_capped_by_the_budget() {
        let start = std::time::Instant::now();
        let r: Result<(), String> = retry(
            &policy(3, 50),
            |_| async {
                Step::Retry {
                    reason: "410".into(),
                    after: Some(Duration::from_secs(70)),
                }
            },
            |g| g.to_string(),
        )
        .await;
        assert!(r.unwrap_err().contains("after 2 attempts"));
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_retry_after_is_obeyed_with_up_to_half_of_it_again() {
        let waits: Vec<Duration> = (0..200)
            .map(|_| after_retry_after(Duration::from_secs(2)))
            .collect();
        assert!(waits
            .iter()
            .all(|w| *w >= Duration::from_secs(2) && *w <= Duration::from_secs(3)));
        assert!(waits.iter().any(|w| *w < Duration::from_millis(2500)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(2500)));
        assert_eq!(after_retry_after(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn caller_retries_is_seen_only_inside_its_scope() {
        assert!(!caller_retries_set());
        assert!(caller_retries(async { caller_retries_set() }).await);
        assert!(!caller_retries_set());
    }
}
