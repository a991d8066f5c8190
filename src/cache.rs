//! A keyed cache of expiring credentials (JWTs, AWS credentials) that keeps them
//! warm for the sidecar.
//!
//! - **Refresh ahead**: a value is refreshed in the background once it has lived
//!   `refresh_at` of its lifetime (default 2/3), with ±`jitter` so many sidecars do
//!   not refresh in lockstep. Pinned keys (the configured tokens) always are;
//!   on-demand keys only if they were asked for again since their last fetch, so a
//!   key asked for once costs one exchange and is dropped when it expires.
//! - **Single flight**: however many callers ask for a cold key at once, one
//!   upstream fetch runs; the others wait for its result — value or error —
//!   instead of starting their own.
//! - **Never wait while valid**: a caller whose key holds a still-valid value gets
//!   it at once, even when it is due for refresh or a refresh is in flight (the
//!   refresh then runs in the background; see `serve_while_refreshing` for AWS
//!   credentials, which wait for a fresh value unless the refresh is failing).
//! - **Stale while valid**: when a refresh fails, the current value keeps being
//!   served until it truly expires; the refresh is retried at a random point
//!   of `retry_max`, then every `retry_max` (95–100 % of it), never more than half of the value's remaining
//!   life apart, so several attempts happen before it expires. Such a fetch runs inside
//!   [`crate::http::caller_retries`], so the exchange does not repeat a failed
//!   attempt in the call (the retries here are spread; its are not). With no valid
//!   value, retries back off exponentially from `retry_base` to `retry_max`.
//! - **A fleet spreads out by itself**: a value fetched off schedule (the first
//!   one, or one that came after failures) gets its first refresh at a uniformly
//!   random point of the refresh period (after failures: not before
//!   `retry_max`), so sidecars that fetched together (a node pool starting at
//!   once, the end of an outage) refresh evenly spread from then on; see
//!   `Cache::refresh_time` and `sidecar/examples/fleet_sim.rs`.
//! - **Lazy mode** ([`RefreshMode::Lazy`], for CPU-throttled platforms): no
//!   background refresher; a request that finds its value due refreshes it in
//!   line (one fetch for all concurrent callers) and nothing runs between
//!   requests.
//! - **Negative cache**: a failed fetch with no valid value to fall back on is
//!   answered from the cache for `negative_ttl`; then an on-demand key is
//!   forgotten (it is not retried in the background), a pinned one retried.
//! - **Bounded**: at most `max_on_demand` unpinned keys, least recently used
//!   dropped first; unpinned keys idle for `idle_evict` are dropped too. Admission
//!   of a new key goes through a caller-supplied check (the sidecar's rate limit).
//! - **Monotonic expiry**: freshness is judged on `Instant`s fixed when the value
//!   was received, never on the wall clock.
//!
//! The hot path (a cached, fresh value) takes two shared read locks and touches
//! two atomics; nothing walks the whole cache except the background refresher,
//! which does it under a read lock.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::util::{instant_after, mono_now};

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

impl<T: Expiring> Expiring for Arc<T> {
    fn received(&self) -> Instant {
        (**self).received()
    }
    fn expires(&self) -> Instant {
        (**self).expires()
    }
}

/// The upstream call that produces a value for a key.
pub type Fetcher<K, V, E> =
    Arc<dyn Fn(K) -> Pin<Box<dyn Future<Output = Result<V, E>> + Send>> + Send + Sync>;

/// When values are refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefreshMode {
    /// By a background refresher, ahead of expiry: requests never wait while a
    /// value is valid. The default.
    #[default]
    Ahead,
    /// By the request that finds the value due, in line (single flight); no
    /// background task or timer at all. For platforms that throttle the CPU
    /// between requests (Cloud Run without always-on CPU, Lambda, Azure
    /// Functions), where a background refresh would be frozen half-way.
    Lazy,
}

/// Tuning of refresh and retry.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePolicy {
    /// Refresh ahead in the background, or lazily in line.
    pub mode: RefreshMode,
    /// Fraction of the lifetime after which a value is refreshed (0 < x < 1).
    pub refresh_at: f64,
    /// Random spread of `refresh_at`, as a fraction of the lifetime.
    pub jitter: f64,
    /// A value with less than this left is refreshed before it is handed out
    /// again (callers such as AWS SDKs refresh only seconds before expiry); while
    /// that refresh runs or fails, the still-valid value is served.
    pub min_remaining: Duration,
    /// First retry delay after a failed fetch with no valid value to serve;
    /// doubles up to `retry_max`.
    pub retry_base: Duration,
    /// Longest retry delay after failed fetches, and the period of retries
    /// while a still-valid value is served (see `Cache::backoff`).
    pub retry_max: Duration,
    /// Unpinned keys not requested for this long are evicted.
    pub idle_evict: Duration,
    /// Most unpinned (on-demand) keys kept; the least recently used goes first.
    pub max_on_demand: usize,
    /// How long a failed fetch (with no valid value) is answered from the cache.
    pub negative_ttl: Duration,
    /// A valid value below `min_remaining` is handed out at once while its
    /// refresh runs behind the caller (JWTs: any valid token opens a
    /// connection). When false (AWS credentials, which SDKs keep until near
    /// expiry), the caller waits for the refresh unless it is backing off.
    pub serve_while_refreshing: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            mode: RefreshMode::Ahead,
            refresh_at: 2.0 / 3.0,
            jitter: 0.05,
            min_remaining: Duration::from_secs(30),
            retry_base: Duration::from_secs(1),
            // Under five minutes, so that after an outage every sidecar has
            // retried (and is fresh) within five minutes of the recovery; see
            // `Cache::backoff` for why the retries are not faster.
            retry_max: Duration::from_secs(270),
            idle_evict: Duration::from_secs(3600),
            max_on_demand: 1000,
            negative_ttl: Duration::from_secs(5),
            serve_while_refreshing: true,
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
    /// Failures answered from the negative cache.
    pub negative_hits: AtomicU64,
    /// New keys the admission check refused.
    pub refused: AtomicU64,
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

/// Why [`Cache::get_admitted`] gave no value.
#[derive(Debug, Clone)]
pub enum GetError<E> {
    /// The key was not cached and the admission check refused it; try again
    /// after this long.
    Refused {
        /// When the admission check expects to say yes.
        retry_after: Duration,
    },
    /// The fetch failed (now or within `negative_ttl`).
    Failed(CacheError<E>),
}

struct Slot<V, E> {
    value: Option<V>,
    /// When the background refresher should next fetch.
    refresh_due: Option<Instant>,
    /// Failed refreshes in a row (drives the backoff).
    failures: u32,
    last_error: Option<Arc<E>>,
    /// When the last fetch failed (the negative cache).
    failed_at: Option<Instant>,
    /// When the last fetch completed, either way.
    attempted_ms: u64,
    /// Incremented by every completed fetch, so waiters can tell one happened.
    generation: u64,
}

struct Entry<V, E> {
    slot: RwLock<Slot<V, E>>,
    /// Held while fetching: the single flight.
    flight: Arc<tokio::sync::Mutex<()>>,
    /// Milliseconds since the cache's epoch of the last request (atomic so the hot
    /// path needs no write lock).
    last_access_ms: AtomicU64,
    pinned: AtomicBool,
}

impl<V, E> Entry<V, E> {
    fn pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }
}

struct Table<K, V, E> {
    map: HashMap<K, Arc<Entry<V, E>>>,
    /// The pinned keys, so readiness and metrics look at these without walking
    /// the on-demand ones.
    pinned: Vec<(K, Arc<Entry<V, E>>)>,
}

/// The cache. Clone to share.
pub struct Cache<K, V, E> {
    table: Arc<RwLock<Table<K, V, E>>>,
    fetch: Fetcher<K, V, E>,
    policy: CachePolicy,
    stats: Arc<CacheStats>,
    epoch: Instant,
    /// Woken when a fetch completes or a key is pinned, so the refresher can
    /// sleep until the next refresh is due instead of waking every tick.
    changed: Arc<tokio::sync::Notify>,
    /// A `s2iam.cache.refresh` span per fetch (off unless configured).
    tracer: crate::otel::Tracer,
}

impl<K, V, E> Clone for Cache<K, V, E> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            fetch: self.fetch.clone(),
            policy: self.policy.clone(),
            stats: self.stats.clone(),
            epoch: self.epoch,
            changed: self.changed.clone(),
            tracer: self.tracer.clone(),
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
            table: Arc::new(RwLock::new(Table {
                map: HashMap::new(),
                pinned: Vec::new(),
            })),
            fetch,
            policy,
            stats: Arc::new(CacheStats::default()),
            epoch: mono_now(),
            changed: Arc::new(tokio::sync::Notify::new()),
            tracer: crate::otel::Tracer::off(),
        }
    }

    /// The same cache, with a `s2iam.cache.refresh` span around every fetch:
    /// the child of the request's span when a request fetches in line, the
    /// root of its own trace when the refresher does.
    pub fn with_tracer(mut self, tracer: crate::otel::Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Counters, for metrics.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// The policy it was built with.
    pub fn policy(&self) -> &CachePolicy {
        &self.policy
    }

    /// Marks `key` as kept warm (never evicted, always refreshed) and fetches it now.
    pub async fn pin(&self, key: K) -> Result<V, CacheError<E>> {
        {
            let mut table = write(&self.table);
            let entry = match table.map.get(&key) {
                Some(e) => e.clone(),
                None => {
                    let e = self.new_entry();
                    table.map.insert(key.clone(), e.clone());
                    e
                }
            };
            if !entry.pinned.swap(true, Ordering::Relaxed) {
                table.pinned.push((key.clone(), entry));
            }
        }
        self.changed.notify_one();
        self.get(key).await
    }

    /// The current value of `key` if it is still valid, without fetching, counting
    /// a hit or touching its idle time (for the template renderer).
    pub fn peek(&self, key: &K) -> Option<V> {
        let entry = read(&self.table).map.get(key).cloned()?;
        let slot = read(&entry.slot);
        slot.value.clone().filter(still_valid)
    }

    /// The value for `key`: cached if fresh enough, else fetched (one fetch for all
    /// concurrent callers), else the stale-but-valid value if the fetch failed.
    pub async fn get(&self, key: K) -> Result<V, CacheError<E>> {
        // Admitting everything, the lookup cannot refuse; the fallback (a detached
        // entry) keeps this free of panics all the same.
        let entry = self
            .entry(&key, || Ok(()))
            .unwrap_or_else(|_| self.new_entry());
        self.get_entry(&key, entry).await
    }

    /// Like [`Cache::get`], but a key not in the cache is first put to `admit`
    /// (called at most once, under the cache's lock, only by the caller that would
    /// create the key: concurrent callers of one cold key count once).
    pub async fn get_admitted(
        &self,
        key: &K,
        admit: impl FnOnce() -> Result<(), Duration>,
    ) -> Result<V, GetError<E>> {
        match self.entry(key, admit) {
            Ok(entry) => self.get_entry(key, entry).await.map_err(GetError::Failed),
            Err(retry_after) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err(GetError::Refused { retry_after })
            }
        }
    }

    /// The value for `key` only if it is cached and fresh enough to hand out
    /// without a refresh: the hit of [`Cache::get`] (counted as one), synchronous,
    /// and with no effect at all otherwise, so a caller can fall back to
    /// [`Cache::get_admitted`].
    ///
    /// Written for many readers on several cores: shared locks only, no `Arc`
    /// of the entry taken, one clock read, and the access time written only
    /// when it changed (a shared cache line that is only read stays in every
    /// core's cache).
    pub fn get_fresh(&self, key: &K) -> Option<V> {
        let now = mono_now();
        let table = read(&self.table);
        let entry = table.map.get(key)?;
        let v = {
            let slot = read(&entry.slot);
            let fresh =
                |v: &&V| v.expires().saturating_duration_since(now) > self.policy.min_remaining;
            if self.policy.mode == RefreshMode::Lazy && slot.refresh_due.is_some_and(|t| t <= now) {
                return None; // due: the caller refreshes it in line
            }
            slot.value.as_ref().filter(fresh)?.clone()
        };
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        if entry.last_access_ms.load(Ordering::Relaxed) != now_ms {
            entry.last_access_ms.store(now_ms, Ordering::Relaxed);
        }
        drop(table);
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(v)
    }

    async fn get_entry(&self, key: &K, entry: Arc<Entry<V, E>>) -> Result<V, CacheError<E>> {
        entry.last_access_ms.store(self.now_ms(), Ordering::Relaxed);
        let seen_generation = {
            let slot = read(&entry.slot);
            let due = slot.refresh_due.is_none_or(|t| t <= mono_now());
            let lazy = self.policy.mode == RefreshMode::Lazy;
            if let Some(v) = slot
                .value
                .as_ref()
                .filter(|v| self.servable(v) && !(lazy && due))
            {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(v.clone());
            }
            if let Some(v) = slot.value.as_ref().filter(|v| still_valid(*v)) {
                let backing_off = slot.last_error.is_some() && !due;
                // Lazy mode refreshes in line below (nothing may run after the
                // request is answered), unless it is backing off.
                if (self.policy.serve_while_refreshing && !lazy) || backing_off {
                    // Valid: hand it out now, refresh behind the caller's back.
                    self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                    let v = v.clone();
                    drop(slot);
                    if due {
                        self.spawn_refresh(key.clone(), entry.clone());
                    }
                    return Ok(v);
                }
            }
            if let (Some(e), Some(at)) = (&slot.last_error, slot.failed_at) {
                if mono_now().saturating_duration_since(at) < self.policy.negative_ttl {
                    self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
                    return Err(CacheError { error: e.clone() });
                }
            }
            slot.generation
        };
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let _flight = entry.flight.lock().await;
        {
            // Someone else's fetch finished while we waited: take its result.
            let slot = read(&entry.slot);
            if slot.generation != seen_generation {
                if let Some(v) = slot.value.as_ref().filter(|v| still_valid(*v)) {
                    return Ok(v.clone());
                }
                if let Some(e) = &slot.last_error {
                    return Err(CacheError { error: e.clone() });
                }
            }
        }
        let trigger = if self.policy.mode == RefreshMode::Lazy {
            "in_line_lazy"
        } else {
            "in_line"
        };
        self.fetch_into(key, &entry, trigger).await
    }

    /// Fetches `key` in the background unless a fetch for it is already running.
    fn spawn_refresh(&self, key: K, entry: Arc<Entry<V, E>>) {
        let Ok(flight) = entry.flight.clone().try_lock_owned() else {
            return;
        };
        let cache = self.clone();
        tokio::spawn(async move {
            let _flight = flight;
            if cache.fetch_into(&key, &entry, "background").await.is_err()
                || read(&entry.slot).failures > 0
            {
                cache.stats.refresh_failures.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Fetches for `key` while holding its flight lock, records the outcome, and
    /// falls back to the current value if it is still valid.
    async fn fetch_into(
        &self,
        key: &K,
        entry: &Entry<V, E>,
        trigger: &'static str,
    ) -> Result<V, CacheError<E>> {
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let mut span = self
            .tracer
            .span("s2iam.cache.refresh", crate::otel::SpanKind::Internal);
        span.set("s2iam.cache.trigger", trigger);
        // Holding a valid value, this cache retries a failed fetch itself (see
        // `Cache::backoff`), spread over `retry_max`; the fetch is told so, and
        // the exchange then does not repeat a failed attempt in the call.
        let holds_valid = read(&entry.slot).value.as_ref().is_some_and(still_valid);
        let fetch = span.scope((self.fetch)(key.clone()));
        let result = if holds_valid {
            crate::http::caller_retries(fetch).await
        } else {
            fetch.await
        };
        if result.is_err() {
            span.fail("fetch failed (see the child spans)");
        }
        let now_ms = self.now_ms();
        let mut slot = write(&entry.slot);
        slot.generation = slot.generation.wrapping_add(1);
        slot.attempted_ms = now_ms;
        // Only the refresher sleeps on this; a fetch is rare next to the hits.
        self.changed.notify_one();
        match result {
            Ok(v) => {
                let on_schedule = slot.value.is_some() && slot.failures == 0;
                let recovered = slot.value.is_some() && slot.failures > 0;
                slot.refresh_due = Some(self.refresh_time(&v, on_schedule, recovered));
                slot.failures = 0;
                slot.last_error = None;
                slot.failed_at = None;
                slot.value = Some(v.clone());
                Ok(v)
            }
            Err(e) => {
                self.stats.fetch_failures.fetch_add(1, Ordering::Relaxed);
                let e = Arc::new(e);
                slot.failures = slot.failures.saturating_add(1);
                slot.last_error = Some(e.clone());
                let now = mono_now();
                slot.failed_at = Some(now);
                let remaining = slot
                    .value
                    .as_ref()
                    .map(|v| v.expires().saturating_duration_since(now));
                slot.refresh_due = Some(instant_after(now, self.backoff(slot.failures, remaining)));
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

    /// One pass of the background refresher: refreshes what is due, drops what is
    /// idle, expired or failed (unpinned keys). Returns when the refreshes it
    /// started have finished, with when the next pass is needed: the earliest
    /// refresh not yet due, or now if on-demand keys are cached (their idle and
    /// "asked again" state changes without a fetch, so they are looked at every
    /// tick); `None` when nothing is scheduled.
    pub async fn refresh_due(&self) -> Option<Instant> {
        let now = mono_now();
        let now_ms = self.now_ms();
        let idle_ms = u64::try_from(self.policy.idle_evict.as_millis()).unwrap_or(u64::MAX);
        let mut due = Vec::new();
        let mut drop_keys = Vec::new();
        let mut next: Option<Instant> = None;
        {
            // A read lock: callers keep being served while this walks.
            let table = read(&self.table);
            for (k, e) in table.map.iter() {
                let slot = read(&e.slot);
                let pinned = e.pinned();
                if !pinned {
                    next = Some(now);
                    let last = e.last_access_ms.load(Ordering::Relaxed);
                    let idle = now_ms.saturating_sub(last) >= idle_ms;
                    let valid = slot.value.as_ref().is_some_and(still_valid);
                    let expired = slot.value.is_some() && !valid;
                    let failed_out = !valid
                        && slot
                            .failed_at
                            .is_some_and(|t| now.duration_since(t) >= self.policy.negative_ttl);
                    if idle || expired || failed_out {
                        drop_keys.push(k.clone());
                        continue;
                    }
                    // On-demand keys: refreshed only if asked for since the last
                    // fetch, and only while there is a value to keep fresh.
                    if !valid || last <= slot.attempted_ms {
                        continue;
                    }
                }
                match slot.refresh_due {
                    Some(t) if t <= now => due.push((k.clone(), e.clone())),
                    Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                    None => {}
                }
            }
        }
        if !drop_keys.is_empty() {
            let mut table = write(&self.table);
            for k in drop_keys {
                if table.map.get(&k).is_some_and(|e| !e.pinned()) {
                    table.map.remove(&k);
                    self.stats.evictions.fetch_add(1, Ordering::Relaxed);
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
                if read(&entry.slot)
                    .refresh_due
                    .is_some_and(|t| t > mono_now())
                {
                    return;
                }
                if cache.fetch_into(&key, &entry, "background").await.is_err()
                    || read(&entry.slot).failures > 0
                {
                    cache.stats.refresh_failures.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        next
    }

    /// Runs [`Cache::refresh_due`] until `stop` resolves: at most once per
    /// `tick`, and otherwise asleep until the next refresh is due or a fetch
    /// or a new pinned key changes the schedule. A sidecar holding only its
    /// configured tokens wakes a few times per token lifetime, not every tick
    /// (and a fleet simulation of 100,000 of them stays cheap).
    pub async fn run_refresher(&self, tick: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let tick = tick.max(Duration::from_millis(1));
        loop {
            let started = mono_now();
            let next = self.refresh_due().await;
            let earliest = tokio::time::Instant::from_std(instant_after(started, tick));
            let scheduled = async {
                match next {
                    Some(t) => {
                        let at = tokio::time::Instant::from_std(t).max(earliest);
                        tokio::time::sleep_until(at).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = scheduled => {}
                _ = self.changed.notified() => {
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep_until(earliest) => {}
                    }
                }
            }
        }
    }

    /// Every key with its state. Walks the whole cache: for tests and
    /// diagnostics, not for anything a caller can trigger often (see
    /// [`Cache::pinned_status`]).
    pub fn status(&self) -> Vec<KeyStatus<K>> {
        read(&self.table)
            .map
            .iter()
            .map(|(k, e)| key_status(k, e))
            .collect()
    }

    /// The pinned keys with their state (cost grows with the configuration, not
    /// with what callers ask for).
    pub fn pinned_status(&self) -> Vec<KeyStatus<K>> {
        read(&self.table)
            .pinned
            .iter()
            .map(|(k, e)| key_status(k, e))
            .collect()
    }

    /// How many keys are cached: (pinned, on demand).
    pub fn key_counts(&self) -> (usize, usize) {
        let table = read(&self.table);
        let pinned = table.pinned.len();
        (pinned, table.map.len().saturating_sub(pinned))
    }

    /// Whether `key` is cached (with or without a value).
    pub fn contains(&self, key: &K) -> bool {
        read(&self.table).map.contains_key(key)
    }

    /// The entry for `key`, created (after `admit` says yes) if new; the least
    /// recently used unpinned key makes room when `max_on_demand` is reached.
    fn entry(
        &self,
        key: &K,
        admit: impl FnOnce() -> Result<(), Duration>,
    ) -> Result<Arc<Entry<V, E>>, Duration> {
        // The hot path: the key exists; a shared lock, no clone of the key.
        if let Some(e) = read(&self.table).map.get(key) {
            return Ok(e.clone());
        }
        let mut table = write(&self.table);
        if let Some(e) = table.map.get(key) {
            return Ok(e.clone());
        }
        admit()?;
        let on_demand = table.map.len().saturating_sub(table.pinned.len());
        if on_demand >= self.policy.max_on_demand {
            // Bounded by max_on_demand, and only when a new key is admitted
            // (which the sidecar rate-limits).
            let oldest = table
                .map
                .iter()
                .filter(|(_, e)| !e.pinned())
                .min_by_key(|(_, e)| e.last_access_ms.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                table.map.remove(&k);
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        let e = self.new_entry();
        table.map.insert(key.clone(), e.clone());
        Ok(e)
    }

    fn new_entry(&self) -> Arc<Entry<V, E>> {
        Arc::new(Entry {
            slot: RwLock::new(Slot {
                value: None,
                refresh_due: None,
                failures: 0,
                last_error: None,
                failed_at: None,
                attempted_ms: 0,
                generation: 0,
            }),
            flight: Arc::new(tokio::sync::Mutex::new(())),
            last_access_ms: AtomicU64::new(self.now_ms()),
            pinned: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(mono_now().saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX)
    }

    /// Fresh enough to hand out without refreshing.
    fn servable(&self, v: &V) -> bool {
        v.expires().saturating_duration_since(mono_now()) > self.policy.min_remaining
    }

    /// When `v` is next refreshed. On schedule (the value replaced the previous
    /// one at its refresh point): `refresh_at` ± `jitter` of the lifetime, which
    /// keeps each sidecar's place in the fleet's rhythm. Off schedule (the first
    /// value, or one that came after failures): a uniformly random point of
    /// `(0, refresh_at]`. Why: sidecars that fetched together — a node pool
    /// started at once, every sidecar retrying after an outage — would
    /// otherwise refresh together again one period later, and again after that
    /// (±5 % jitter of a 40-minute period only spreads a burst over 4 minutes).
    /// A random phase spreads any burst evenly over a whole period at once:
    /// with N sidecars and period P the refresh rate is N / P from the first
    /// period on (`sidecar/examples/fleet_sim.rs`, scenario `mass-start`). The cost is
    /// one early refresh per start or recovery.
    ///
    /// After failures (`recovered`: a value held, refreshes failing) the point
    /// is drawn from `(retry_max, refresh_at]` instead: the other sidecars of
    /// an outage are still coming back over the next `retry_max` (see
    /// `Cache::backoff`), and early refreshes of those already back would land
    /// on top of them (10-minute outage, 100,000 sidecars: +0.25x the steady
    /// rate by the end of the recovery). The phases stay spread over nearly a
    /// whole period (2,130 of 2,400 s by default).
    fn refresh_time(&self, v: &V, on_schedule: bool, recovered: bool) -> Instant {
        let lifetime = v.expires().saturating_duration_since(v.received());
        let spread = !on_schedule && self.policy.mode == RefreshMode::Ahead;
        let fraction = if spread {
            let earliest = if recovered && !lifetime.is_zero() {
                (self.policy.retry_max.as_secs_f64() / lifetime.as_secs_f64())
                    .min(self.policy.refresh_at / 2.0)
            } else {
                0.0
            };
            rand::thread_rng().gen_range(earliest..=self.policy.refresh_at)
        } else if self.policy.jitter > 0.0 {
            self.policy.refresh_at
                + rand::thread_rng().gen_range(-self.policy.jitter..=self.policy.jitter)
        } else {
            self.policy.refresh_at
        };
        let fraction = fraction.clamp(0.0, 0.95);
        let at = instant_after(v.received(), lifetime.mul_f64(fraction));
        // Never later than the point where the value stops being servable.
        let latest = v
            .expires()
            .checked_sub(self.policy.min_remaining)
            .unwrap_or(v.received());
        at.min(latest.max(v.received()))
    }

    /// The wait before the next attempt after `failures` failed ones.
    ///
    /// With a valid value (`remaining`): the first retry of a failing spell at
    /// a uniformly random point of `retry_max`, the next ones `retry_max`
    /// (95–100 % of it) apart; never more than half of what the value has left
    /// (so the attempts crowd in before it expires instead of one landing
    /// after). Why, measured with `sidecar/examples/fleet_sim.rs` (10-minute outage):
    /// - not exponential from a second (Vault Agent's 1 s → 5 min): sidecars
    ///   fail at different moments of an outage and the recent ones retry most
    ///   often, so the service is hammered while down (6.5x the requests) and
    ///   the first seconds of the recovery see every recent failure at once
    ///   (5,000 sidecars: a peak of 27x the steady rate, capacity-bound);
    /// - not a fixed period from the failure: the retry phases then keep the
    ///   pattern of when refreshes fell due folded onto the period (600 s over
    ///   a 256 s period puts three due-seconds on some phases, two on others),
    ///   and the recovery peaked at 5.6x with 100,000 sidecars;
    /// - a random first retry makes every sidecar's phase uniform whatever the
    ///   moment its spell began, so after a recovery the backlog of an outage
    ///   of length O lands evenly over `retry_max`: O / `retry_max` times the
    ///   steady rate on top of it, and every sidecar is fresh within
    ///   `retry_max`. A brief failure is already retried within seconds by the
    ///   exchange itself.
    ///
    /// With no valid value: exponential from `retry_base` to `retry_max`,
    /// jittered down by up to half: a caller is waiting for it.
    fn backoff(&self, failures: u32, remaining: Option<Duration>) -> Duration {
        if let Some(r) = remaining.filter(|r| !r.is_zero()) {
            let fraction = if failures <= 1 {
                rand::thread_rng().gen_range(0.0..=1.0)
            } else {
                rand::thread_rng().gen_range(0.95..=1.0)
            };
            let period = self.policy.retry_max.mul_f64(fraction);
            return period.min(r.checked_div(2).unwrap_or(r).max(Duration::from_millis(50)));
        }
        let exp = self
            .policy
            .retry_base
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.policy.retry_max);
        let ms = u64::try_from(exp.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms.max(1)))
    }
}

fn key_status<K: Clone, V: Expiring, E>(k: &K, e: &Entry<V, E>) -> KeyStatus<K> {
    let slot = read(&e.slot);
    KeyStatus {
        key: k.clone(),
        remaining: slot
            .value
            .as_ref()
            .map(|v| v.expires().saturating_duration_since(mono_now())),
        failures: slot.failures,
        pinned: e.pinned(),
    }
}

fn still_valid<V: Expiring>(v: &V) -> bool {
    v.expires() > mono_now()
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
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
            mode: RefreshMode::Ahead,
            refresh_at: 0.5,
            jitter: 0.0,
            min_remaining: Duration::from_millis(0),
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(40),
            idle_evict: Duration::from_secs(60),
            max_on_demand: 100,
            negative_ttl: Duration::ZERO,
            serve_while_refreshing: true,
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
                let now = mono_now();
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
    async fn get_fresh_answers_only_fresh_hits_and_changes_nothing_otherwise() {
        let (fetch, calls, _) = counting(Duration::from_secs(60), Duration::ZERO);
        let cache = Cache::new(
            CachePolicy {
                min_remaining: Duration::from_secs(30),
                ..policy()
            },
            fetch,
        );
        assert!(cache.get_fresh(&1).is_none(), "not cached");
        assert!(!cache.contains(&1), "a miss creates no key");
        assert_eq!(cache.stats().misses.load(Ordering::Relaxed), 0);
        assert_eq!(cache.get(1).await.unwrap().n, 1);
        assert_eq!(cache.get_fresh(&1).map(|v| v.n), Some(1));
        assert_eq!(cache.stats().hits.load(Ordering::Relaxed), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a hit never fetches");

        // Below min_remaining: not fresh; get() then refreshes it.
        let (fetch, _, _) = counting(Duration::from_secs(20), Duration::ZERO);
        let cache = Cache::new(
            CachePolicy {
                min_remaining: Duration::from_secs(30),
                ..policy()
            },
            fetch,
        );
        cache.get(1).await.unwrap();
        assert!(cache.get_fresh(&1).is_none(), "due for refresh");
        assert_eq!(cache.stats().hits.load(Ordering::Relaxed), 0);
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
        assert_eq!(cache.pin(1).await.unwrap().n, 1);
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
        // The refetch runs behind the caller, who was not kept waiting.
        tokio::time::sleep(Duration::from_millis(20)).await;
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
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..20 {
            assert_eq!(cache.get(1).await.unwrap().n, 1, "stale but valid");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one failed fetch, then backoff"
        );
    }

    #[tokio::test]
    async fn a_valid_value_is_served_at_once_while_its_refresh_is_slow() {
        let (fetch, calls, _) = counting(Duration::from_millis(600), Duration::from_millis(300));
        let cache = Cache::new(
            CachePolicy {
                min_remaining: Duration::from_secs(10),
                ..policy()
            },
            fetch,
        );
        cache.pin(1).await.unwrap();
        let started = Instant::now();
        for _ in 0..10 {
            assert_eq!(cache.get(1).await.unwrap().n, 1);
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one background refetch");
    }

    #[test]
    fn retry_backoff_is_capped_by_the_remaining_lifetime() {
        let (fetch, _, _) = counting(Duration::from_secs(60), Duration::ZERO);
        let cache: Cache<u8, V, String> = Cache::new(
            CachePolicy {
                retry_base: Duration::from_secs(1),
                retry_max: Duration::from_secs(300),
                ..policy()
            },
            fetch,
        );
        for _ in 0..50 {
            assert!(cache.backoff(9, None) >= Duration::from_secs(128));
            assert!(cache.backoff(9, Some(Duration::from_secs(10))) <= Duration::from_secs(5));
            assert!(cache.backoff(9, Some(Duration::from_millis(20))) <= Duration::from_millis(50));
        }
    }

    #[tokio::test]
    async fn on_demand_keys_are_capped_least_recently_used_first_and_pins_stay() {
        let (fetch, _, _) = counting(Duration::from_secs(60), Duration::ZERO);
        let cache = Cache::new(
            CachePolicy {
                max_on_demand: 3,
                ..policy()
            },
            fetch,
        );
        cache.pin(100).await.unwrap();
        for k in 0..3u8 {
            cache.get(k).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cache.get(0).await.unwrap(); // 1 is now the least recently used
        tokio::time::sleep(Duration::from_millis(5)).await;
        cache.get(3).await.unwrap();
        let mut keys: Vec<u8> = cache.status().into_iter().map(|s| s.key).collect();
        keys.sort();
        assert_eq!(keys, vec![0, 2, 3, 100]);
        assert_eq!(cache.key_counts(), (1, 3));
        assert_eq!(cache.pinned_status().len(), 1);
    }

    #[tokio::test]
    async fn on_demand_keys_are_refreshed_only_if_asked_for_again() {
        // Lifetimes long enough that a loaded machine's late wake-ups (hundreds of
        // ms) still land between "refresh due" (1.5 s) and expiry (3 s).
        let (fetch, calls, _) = counting(Duration::from_secs(3), Duration::ZERO);
        let cache = Cache::new(policy(), fetch);
        cache.get(1).await.unwrap(); // asked once
        cache.get(2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        cache.get(2).await.unwrap(); // asked again
        tokio::time::sleep(Duration::from_millis(1600)).await;
        cache.refresh_due().await;
        assert_eq!(calls.load(Ordering::SeqCst), 3, "only key 2 refreshed");
        tokio::time::sleep(Duration::from_millis(1600)).await;
        cache.refresh_due().await;
        let keys: Vec<u8> = cache.status().into_iter().map(|s| s.key).collect();
        assert_eq!(keys, vec![2], "key 1 dropped once expired");
    }

    #[tokio::test]
    async fn a_failed_on_demand_key_is_answered_from_the_negative_cache_then_forgotten() {
        let (fetch, calls, fail) = counting(Duration::from_secs(60), Duration::ZERO);
        fail.store(true, Ordering::SeqCst);
        let cache = Cache::new(
            CachePolicy {
                negative_ttl: Duration::from_millis(100),
                ..policy()
            },
            fetch,
        );
        for _ in 0..10 {
            assert!(cache.get(1).await.is_err());
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one fetch, then the negative cache"
        );
        assert_eq!(cache.stats().negative_hits.load(Ordering::SeqCst), 9);
        for _ in 0..5 {
            cache.refresh_due().await;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "not retried in the background"
        );
        assert!(cache.status().is_empty(), "forgotten");
    }

    #[tokio::test]
    async fn admission_is_asked_once_per_new_key_not_per_caller() {
        let (fetch, calls, _) = counting(Duration::from_secs(60), Duration::from_millis(50));
        let cache = Cache::new(policy(), fetch);
        let asked = Arc::new(AtomicU32::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (c, asked) = (cache.clone(), asked.clone());
            tasks.spawn(async move {
                c.get_admitted(&7, || {
                    asked.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
                .is_ok()
            });
        }
        while let Some(r) = tasks.join_next().await {
            assert!(r.unwrap());
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let refused = cache.get_admitted(&8, || Err(Duration::from_secs(2))).await;
        assert!(
            matches!(refused, Err(GetError::Refused { retry_after }) if retry_after == Duration::from_secs(2))
        );
        assert!(!cache.contains(&8));
    }

    #[tokio::test(start_paused = true)]
    async fn lazy_mode_refreshes_in_line_once_and_leaves_nothing_running() {
        let (fetch, calls, _) = counting(Duration::from_secs(3600), Duration::from_millis(100));
        let lazy = CachePolicy {
            mode: RefreshMode::Lazy,
            refresh_at: 2.0 / 3.0,
            min_remaining: Duration::from_secs(60),
            ..policy()
        };
        let cache = Cache::new(lazy, fetch);
        assert_eq!(cache.pin(1).await.unwrap().n, 1);
        let metrics = tokio::runtime::Handle::current().metrics();
        // Virtual time: a background timer or task would run in these hours.
        tokio::time::sleep(Duration::from_secs(2399)).await;
        assert_eq!(cache.get_fresh(&1).map(|v| v.n), Some(1), "not due yet");
        assert_eq!(cache.get(1).await.unwrap().n, 1);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "nothing refreshed between requests"
        );
        assert!(cache.get_fresh(&1).is_none(), "due: the hot path declines");
        // Due: 50 concurrent requests, one in-line fetch, every caller gets its result.
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let c = cache.clone();
            tasks.spawn(async move { c.get(1).await.map(|v| v.n) });
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(
                r.unwrap().unwrap(),
                2,
                "in line: the new value, not the old"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "single flight");
        assert_eq!(metrics.num_alive_tasks(), 0, "no background task left");
        assert_eq!(cache.get_fresh(&1).map(|v| v.n), Some(2));

        // The same request in the default mode is answered at once and leaves a
        // background refresh running: what lazy mode avoids.
        let (fetch, calls, _) = counting(Duration::from_secs(3600), Duration::from_millis(100));
        let ahead = Cache::new(
            CachePolicy {
                refresh_at: 2.0 / 3.0,
                min_remaining: Duration::from_secs(3000),
                ..policy()
            },
            fetch,
        );
        ahead.get(1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(700)).await;
        assert_eq!(ahead.get(1).await.unwrap().n, 1, "the old value, at once");
        assert_eq!(metrics.num_alive_tasks(), 1, "a refresh behind the caller");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn lazy_mode_serves_the_valid_value_while_backing_off() {
        let (fetch, calls, fail) = counting(Duration::from_secs(3600), Duration::ZERO);
        let cache = Cache::new(
            CachePolicy {
                mode: RefreshMode::Lazy,
                refresh_at: 0.5,
                retry_max: Duration::from_secs(270),
                ..policy()
            },
            fetch,
        );
        cache.get(1).await.unwrap();
        fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1801)).await;
        assert_eq!(
            cache.get(1).await.unwrap().n,
            1,
            "failed in line: the valid value"
        );
        for _ in 0..10 {
            assert_eq!(cache.get(1).await.unwrap().n, 1);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "no retry before the backoff"
        );
        tokio::time::sleep(Duration::from_secs(271)).await;
        fail.store(false, Ordering::SeqCst);
        assert_eq!(cache.get(1).await.unwrap().n, 3, "retried in line after it");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sleeping_refresher_still_refreshes_on_time() {
        let (fetch, calls, _) = counting(Duration::from_secs(3600), Duration::ZERO);
        let cache = Cache::new(
            CachePolicy {
                refresh_at: 2.0 / 3.0,
                jitter: 0.05,
                ..policy()
            },
            fetch,
        );
        let c = cache.clone();
        let refresher = tokio::spawn(async move {
            c.run_refresher(
                Duration::from_secs(1),
                tokio::time::sleep(Duration::from_secs(3 * 3600)),
            )
            .await;
        });
        cache.pin(1).await.unwrap();
        for _ in 0..3 * 36 {
            tokio::time::sleep(Duration::from_secs(100)).await;
            assert!(cache.get_fresh(&1).is_some(), "always fresh");
        }
        refresher.await.unwrap();
        // The first value refreshed at a random point of its period, then every
        // 2400 s ± 180 s: 5 fetches in 3 h (4 to 6 with the random start).
        let n = calls.load(Ordering::SeqCst);
        assert!((4..=6).contains(&n), "{n} fetches");
    }

    #[test]
    fn retries_while_valid_come_about_every_retry_max_and_before_expiry() {
        let (fetch, _, _) = counting(Duration::from_secs(60), Duration::ZERO);
        let cache: Cache<u8, V, String> = Cache::new(
            CachePolicy {
                retry_base: Duration::from_secs(1),
                retry_max: Duration::from_secs(270),
                ..policy()
            },
            fetch,
        );
        for failures in [2, 5, 30] {
            let d = cache.backoff(failures, Some(Duration::from_secs(1200)));
            assert!(
                d >= Duration::from_millis(256_500) && d <= Duration::from_secs(270),
                "{d:?}"
            );
        }
        // The first retry of a spell: anywhere in the period, spread out.
        let firsts: Vec<Duration> = (0..200)
            .map(|_| cache.backoff(1, Some(Duration::from_secs(1200))))
            .collect();
        assert!(firsts.iter().all(|d| *d <= Duration::from_secs(270)));
        assert!(firsts.iter().any(|d| *d < Duration::from_secs(90)));
        assert!(firsts.iter().any(|d| *d > Duration::from_secs(180)));
        assert!(cache.backoff(1, Some(Duration::from_secs(100))) <= Duration::from_secs(50));
        // No valid value: exponential from retry_base.
        assert!(cache.backoff(1, None) <= Duration::from_secs(1));
        assert!(cache.backoff(3, None) <= Duration::from_secs(4));
    }

    #[test]
    fn after_failures_the_next_refresh_waits_out_retry_max() {
        let (fetch, _, _) = counting(Duration::from_secs(3600), Duration::ZERO);
        let cache: Cache<u8, V, String> = Cache::new(
            CachePolicy {
                refresh_at: 2.0 / 3.0,
                retry_max: Duration::from_secs(270),
                ..policy()
            },
            fetch,
        );
        let now = Instant::now();
        let v = V {
            n: 1,
            received: now,
            expires: now + Duration::from_secs(3600),
        };
        let after = |on_schedule, recovered| {
            (0..300)
                .map(|_| cache.refresh_time(&v, on_schedule, recovered) - now)
                .collect::<Vec<_>>()
        };
        // A first value: anywhere in (0, refresh_at].
        let first = after(false, false);
        assert!(first.iter().all(|d| *d <= Duration::from_secs(2400)));
        assert!(first.iter().any(|d| *d < Duration::from_secs(270)));
        // Back after failures: not before retry_max, still spread to refresh_at.
        let recovered = after(false, true);
        assert!(recovered
            .iter()
            .all(|d| *d >= Duration::from_secs(270) && *d <= Duration::from_secs(2400)));
        assert!(recovered.iter().any(|d| *d < Duration::from_secs(1000)));
        assert!(recovered.iter().any(|d| *d > Duration::from_secs(1800)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_of_a_valid_value_tells_the_fetch_that_the_cache_retries() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let fetch: Fetcher<u8, V, String> = Arc::new(move |_k| {
            let s = s.clone();
            Box::pin(async move {
                s.lock().unwrap().push(crate::http::caller_retries_set());
                let now = mono_now();
                Ok(V {
                    n: 1,
                    received: now,
                    expires: now + Duration::from_secs(60),
                })
            })
        });
        let cache = Cache::new(policy(), fetch);
        cache.pin(1).await.unwrap();
        tokio::time::sleep(Duration::from_secs(31)).await; // past refresh_at (30 s)
        cache.refresh_due().await;
        tokio::time::sleep(Duration::from_secs(61)).await; // expired
        cache.refresh_due().await;
        assert_eq!(
            *seen.lock().unwrap(),
            [false, true, false],
            "only the refresh of a still-valid value is inside caller_retries"
        );
    }
}
