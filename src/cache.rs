//! A keyed cache of expiring credentials (JWTs, AWS credentials) that keeps them
//! warm for the sidecar.
//!
//! - **Refresh ahead**: a value is refreshed in the background once it has lived
//!   `refresh_at` of its lifetime (default 2/3), with ±`jitter` so many sidecars do
//!   not refresh in lockstep.
//! - **Single flight**: however many callers ask for a cold (or too-old) key at
//!   once, one upstream fetch runs; the others wait for its result — value or
//!   error — instead of starting their own.
//! - **Stale while valid**: when a refresh fails, the current value keeps being
//!   served until it truly expires; the refresh is retried with capped
//!   exponential backoff and jitter.
//! - **Monotonic expiry**: freshness is judged on `Instant`s fixed when the value
//!   was received, never on the wall clock.
//! - **Eviction**: keys not requested for `idle_evict` are dropped, unless pinned
//!   (configured tokens the sidecar keeps warm from start).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

/// A cached value with a monotonic lifetime.
pub trait Expiring: Clone + Send + Sync + 'static {
    /// When it was received.
    fn received(&self) -> Instant;
    /// When it expires.
    fn expires(&self) -> Instant;
}

impl Expiring for crate::token::Token {
    fn received(&self) -> Instant {
        crate::token::Token::received(self)
    }
    fn expires(&self) -> Instant {
        self.expires_mono()
    }
}

/// The upstream call that produces a value for a key.
pub type Fetcher<K, V, E> =
    Arc<dyn Fn(K) -> Pin<Box<dyn Future<Output = Result<V, E>> + Send>> + Send + Sync>;

/// Tuning of refresh and retry.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    /// Fraction of the lifetime after which a value is refreshed (0 < x < 1).
    pub refresh_at: f64,
    /// Random spread of `refresh_at`, as a fraction of the lifetime.
    pub jitter: f64,
    /// A value with less than this left is not handed out while a fresh one can
    /// be fetched (callers such as AWS SDKs refresh only seconds before expiry).
    pub min_remaining: Duration,
    /// First retry delay after a failed refresh; doubles up to `retry_max`.
    pub retry_base: Duration,
    /// Longest retry delay after failed refreshes.
    pub retry_max: Duration,
    /// Unpinned keys not requested for this long are evicted.
    pub idle_evict: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            refresh_at: 2.0 / 3.0,
            jitter: 0.05,
            min_remaining: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            idle_evict: Duration::from_secs(3600),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Requests answered from the cache.
    pub hits: AtomicU64,
    /// Requests that had to wait for a fetch.
    pub misses: AtomicU64,
    /// Upstream fetches started.
    pub fetches: AtomicU64,
    /// Upstream fetches that failed.
    pub fetch_failures: AtomicU64,
    /// Background refreshes that failed.
    pub refresh_failures: AtomicU64,
    /// Values served after a failed refresh while still valid.
    pub stale_served: AtomicU64,
    /// Keys dropped after `idle_evict`.
    pub evictions: AtomicU64,
}

/// What a caller gets when no value can be served.
#[derive(Debug, Clone)]
pub struct CacheError<E> {
    /// The fetch's error, shared by every caller that waited for it.
    pub error: Arc<E>,
}

impl<E: fmt::Display> fmt::Display for CacheError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for CacheError<E> {}

struct Slot<V, E> {
    value: Option<V>,
    /// When the background refresher should next fetch.
    refresh_due: Option<Instant>,
    /// Failed refreshes in a row (drives the backoff).
    failures: u32,
    last_error: Option<Arc<E>>,
    /// Incremented by every completed fetch, so waiters can tell one happened.
    generation: u64,
    last_access: Instant,
    pinned: bool,
}

struct Entry<V, E> {
    slot: Mutex<Slot<V, E>>,
    /// Held while fetching: the single flight.
    flight: tokio::sync::Mutex<()>,
}

type Entries<K, V, E> = Arc<Mutex<HashMap<K, Arc<Entry<V, E>>>>>;

/// The cache. Clone to share.
pub struct Cache<K, V, E> {
    entries: Entries<K, V, E>,
    fetch: Fetcher<K, V, E>,
    policy: CachePolicy,
    stats: Arc<CacheStats>,
}

impl<K, V, E> Clone for Cache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            fetch: self.fetch.clone(),
            policy: self.policy.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// A snapshot of one key for `/metrics` and `/readyz`.
#[derive(Debug, Clone)]
pub struct KeyStatus<K> {
    /// The key.
    pub key: K,
    /// Time left on the cached value; `None`: nothing cached.
    pub remaining: Option<Duration>,
    /// Refresh failures in a row.
    pub failures: u32,
    /// Kept warm from start and never evicted.
    pub pinned: bool,
}

impl<K, V, E> Cache<K, V, E>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: Expiring,
    E: Send + Sync + 'static,
{
    /// An empty cache that fetches with `fetch`.
    pub fn new(policy: CachePolicy, fetch: Fetcher<K, V, E>) -> Self {
        Self {
            entries: Arc::new(Mutex::new(HashMap::new())),
            fetch,
            policy,
            stats: Arc::new(CacheStats::default()),
        }
    }

    /// Counters, for metrics.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// The policy it was built with.
    pub fn policy(&self) -> &CachePolicy {
        &self.policy
    }

    /// Marks `key` as kept warm (never evicted) and fetches it now.
    pub async fn pin(&self, key: K) -> Result<V, CacheError<E>> {
        self.entry(&key)
            .slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pinned = true;
        self.get(key).await
    }

    /// The current value of `key` if it is still valid, without fetching, counting
    /// a hit or touching its idle time (for the template renderer).
    pub fn peek(&self, key: &K) -> Option<V> {
        let entry = lock(&self.entries).get(key).cloned()?;
        let slot = lock(&entry.slot);
        slot.value.clone().filter(still_valid)
    }

    /// The value for `key`: cached if fresh enough, else fetched (one fetch for all
    /// concurrent callers), else the stale-but-valid value if the fetch failed.
    pub async fn get(&self, key: K) -> Result<V, CacheError<E>> {
        let entry = self.entry(&key);
        let seen_generation = {
            let mut slot = lock(&entry.slot);
            slot.last_access = Instant::now();
            if let Some(v) = slot.value.as_ref().filter(|v| self.servable(v)) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(v.clone());
            }
            // The last fetch failed and its retry is not due yet: serve the still
            // valid value rather than sending every caller upstream.
            let backing_off =
                slot.last_error.is_some() && slot.refresh_due.is_some_and(|t| t > Instant::now());
            if let Some(v) = slot
                .value
                .as_ref()
                .filter(|v| backing_off && still_valid(*v))
            {
                self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                return Ok(v.clone());
            }
            slot.generation
        };
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let _flight = entry.flight.lock().await;
        {
            // Someone else's fetch finished while we waited: take its result.
            let slot = lock(&entry.slot);
            if slot.generation != seen_generation {
                if let Some(v) = slot.value.as_ref().filter(|v| still_valid(*v)) {
                    return Ok(v.clone());
                }
                if let Some(e) = &slot.last_error {
                    return Err(CacheError { error: e.clone() });
                }
            }
        }
        self.fetch_into(&key, &entry).await
    }

    /// Fetches for `key` while holding its flight lock, records the outcome, and
    /// falls back to the current value if it is still valid.
    async fn fetch_into(&self, key: &K, entry: &Entry<V, E>) -> Result<V, CacheError<E>> {
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let result = (self.fetch)(key.clone()).await;
        let mut slot = lock(&entry.slot);
        slot.generation += 1;
        match result {
            Ok(v) => {
                slot.refresh_due = Some(self.refresh_time(&v));
                slot.failures = 0;
                slot.last_error = None;
                slot.value = Some(v.clone());
                Ok(v)
            }
            Err(e) => {
                self.stats.fetch_failures.fetch_add(1, Ordering::Relaxed);
                let e = Arc::new(e);
                slot.failures += 1;
                slot.last_error = Some(e.clone());
                slot.refresh_due = Some(Instant::now() + self.backoff(slot.failures));
                match slot.value.as_ref().filter(|v| still_valid(*v)) {
                    Some(v) => {
                        self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                        Ok(v.clone())
                    }
                    None => Err(CacheError { error: e }),
                }
            }
        }
    }

    /// One pass of the background refresher: refreshes what is due, evicts what is
    /// idle. Returns when the refreshes it started have finished.
    pub async fn refresh_due(&self) {
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut entries = lock(&self.entries);
            entries.retain(|_, e| {
                let slot = lock(&e.slot);
                let keep =
                    slot.pinned || now.duration_since(slot.last_access) < self.policy.idle_evict;
                if !keep {
                    self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                }
                keep
            });
            for (k, e) in entries.iter() {
                let slot = lock(&e.slot);
                if slot.refresh_due.is_some_and(|t| t <= now) {
                    due.push((k.clone(), e.clone()));
                }
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (key, entry) in due {
            let cache = self.clone();
            tasks.spawn(async move {
                let Ok(_flight) = entry.flight.try_lock() else {
                    return; // a caller is already fetching it
                };
                if lock(&entry.slot)
                    .refresh_due
                    .is_some_and(|t| t > Instant::now())
                {
                    return;
                }
                if cache.fetch_into(&key, &entry).await.is_err() || lock(&entry.slot).failures > 0 {
                    cache.stats.refresh_failures.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Runs [`Cache::refresh_due`] every `tick` until `stop` resolves.
    pub async fn run_refresher(&self, tick: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = interval.tick() => self.refresh_due().await,
            }
        }
    }

    /// Every key with its state.
    pub fn status(&self) -> Vec<KeyStatus<K>> {
        lock(&self.entries)
            .iter()
            .map(|(k, e)| {
                let slot = lock(&e.slot);
                KeyStatus {
                    key: k.clone(),
                    remaining: slot
                        .value
                        .as_ref()
                        .map(|v| v.expires().saturating_duration_since(Instant::now())),
                    failures: slot.failures,
                    pinned: slot.pinned,
                }
            })
            .collect()
    }

    fn entry(&self, key: &K) -> Arc<Entry<V, E>> {
        let mut entries = lock(&self.entries);
        // The hot path: the key exists, no clone of it needed.
        if let Some(e) = entries.get(key) {
            return e.clone();
        }
        entries
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Entry {
                    slot: Mutex::new(Slot {
                        value: None,
                        refresh_due: None,
                        failures: 0,
                        last_error: None,
                        generation: 0,
                        last_access: Instant::now(),
                        pinned: false,
                    }),
                    flight: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Fresh enough to hand out without fetching.
    fn servable(&self, v: &V) -> bool {
        v.expires().saturating_duration_since(Instant::now()) > self.policy.min_remaining
    }

    fn refresh_time(&self, v: &V) -> Instant {
        let lifetime = v.expires().saturating_duration_since(v.received());
        let jitter = if self.policy.jitter > 0.0 {
            rand::thread_rng().gen_range(-self.policy.jitter..=self.policy.jitter)
        } else {
            0.0
        };
        let fraction = (self.policy.refresh_at + jitter).clamp(0.05, 0.95);
        let at = v.received() + lifetime.mul_f64(fraction);
        // Never later than the point where the value stops being servable.
        let latest = v
            .expires()
            .checked_sub(self.policy.min_remaining)
            .unwrap_or(v.received());
        at.min(latest.max(v.received()))
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .policy
            .retry_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.policy.retry_max);
        let ms = exp.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
    }
}

fn still_valid<V: Expiring>(v: &V) -> bool {
    v.expires() > Instant::now()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[derive(Clone, Debug)]
    struct V {
        n: u32,
        received: Instant,
        expires: Instant,
    }

    impl Expiring for V {
        fn received(&self) -> Instant {
            self.received
        }
        fn expires(&self) -> Instant {
            self.expires
        }
    }

    fn policy() -> CachePolicy {
        CachePolicy {
            refresh_at: 0.5,
            jitter: 0.0,
            min_remaining: Duration::from_millis(0),
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(40),
            idle_evict: Duration::from_secs(60),
        }
    }

    /// A fetcher counting calls, failing while `fail` is set.
    fn counting(
        lifetime: Duration,
        delay: Duration,
    ) -> (
        Fetcher<u8, V, String>,
        Arc<AtomicU32>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, f) = (calls.clone(), fail.clone());
        let fetch: Fetcher<u8, V, String> = Arc::new(move |_k| {
            let (c, f) = (c.clone(), f.clone());
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                if f.load(Ordering::SeqCst) {
                    return Err(format!("upstream down (call {n})"));
                }
                let now = Instant::now();
                Ok(V {
                    n,
                    received: now,
                    expires: now + lifetime,
                })
            })
        });
        (fetch, calls, fail)
    }

    #[tokio::test]
    async fn concurrent_cold_callers_share_one_fetch() {
        let (fetch, calls, _) = counting(Duration::from_secs(60), Duration::from_millis(50));
        let cache = Cache::new(policy(), fetch);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let c = cache.clone();
            tasks.spawn(async move { c.get(1).await.map(|v| v.n) });
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap().unwrap(), 1);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_failure_too() {
        let (fetch, calls, fail) = counting(Duration::from_secs(60), Duration::from_millis(50));
        fail.store(true, Ordering::SeqCst);
        let cache = Cache::new(policy(), fetch);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let c = cache.clone();
            tasks.spawn(async move { c.get(1).await.is_err() });
        }
        while let Some(r) = tasks.join_next().await {
            assert!(r.unwrap());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refreshes_ahead_and_serves_stale_while_valid() {
        let (fetch, calls, fail) = counting(Duration::from_millis(400), Duration::ZERO);
        let cache = Cache::new(policy(), fetch);
        assert_eq!(cache.get(1).await.unwrap().n, 1);
        tokio::time::sleep(Duration::from_millis(220)).await;
        cache.refresh_due().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "refreshed at half-life");
        assert_eq!(cache.get(1).await.unwrap().n, 2);

        fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(220)).await;
        cache.refresh_due().await;
        assert_eq!(cache.stats().refresh_failures.load(Ordering::SeqCst), 1);
        assert_eq!(
            cache.get(1).await.unwrap().n,
            2,
            "stale but valid value served"
        );

        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(
            cache.get(1).await.is_err(),
            "expired values are never served"
        );
        fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(cache.get(1).await.is_ok(), "recovers");
    }

    #[tokio::test]
    async fn idle_unpinned_keys_are_evicted() {
        let (fetch, _, _) = counting(Duration::from_secs(60), Duration::ZERO);
        let cache = Cache::new(
            CachePolicy {
                idle_evict: Duration::from_millis(50),
                ..policy()
            },
            fetch,
        );
        cache.get(1).await.unwrap();
        cache.pin(2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        cache.refresh_due().await;
        let keys: Vec<u8> = cache.status().into_iter().map(|s| s.key).collect();
        assert_eq!(keys, vec![2]);
        assert_eq!(cache.stats().evictions.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn values_too_close_to_expiry_are_refetched() {
        let (fetch, calls, _) = counting(Duration::from_millis(100), Duration::ZERO);
        let cache = Cache::new(
            CachePolicy {
                min_remaining: Duration::from_secs(10),
                ..policy()
            },
            fetch,
        );
        cache.get(1).await.unwrap();
        cache.get(1).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failing_upstream_is_not_hammered_while_backing_off() {
        let (fetch, calls, fail) = counting(Duration::from_millis(500), Duration::ZERO);
        let cache = Cache::new(
            CachePolicy {
                min_remaining: Duration::from_secs(10),
                retry_base: Duration::from_secs(5),
                retry_max: Duration::from_secs(5),
                ..policy()
            },
            fetch,
        );
        cache.get(1).await.unwrap();
        fail.store(true, Ordering::SeqCst);
        for _ in 0..20 {
            assert_eq!(cache.get(1).await.unwrap().n, 1, "stale but valid");
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one failed fetch, then backoff"
        );
    }
}
