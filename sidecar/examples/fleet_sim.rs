//! A fleet of sidecars against one auth service, on a virtual clock.
//!
//! `scripts/fleet-sim --sidecars N --scenario NAME` runs this. Each simulated
//! sidecar is the real code, not a model of it: the sidecar's configuration
//! defaults (`ServeConfig` from an empty file), its [`Cache`] with the
//! sidecar's policy (refresh ahead, jitter, single flight, stale while valid,
//! backoff), the sidecar's refresh loop ([`Cache::run_refresher`]), its
//! detection retries at start ([`s2iam_sidecar::serve::startup_backoff`]), the GCP
//! metadata identity call's retries ([`s2iam::http::retry`] with
//! `provider::gcp::DEFAULT_RETRY`) and the exchange client with its own
//! retries and `Retry-After` handling ([`ExchangeClient`]). Only the far ends
//! are simulated: the auth service (a capacity in exchanges per second beyond
//! which it answers 429 with `Retry-After`, 503 during an outage) and one
//! metadata server per node (a rate limit, and optionally not ready for the
//! first seconds of each pod), both in-process, reached through
//! [`ExchangeTransport`] instead of sockets, because sockets cannot run on
//! Tokio's paused clock.
//!
//! Time is Tokio's paused clock on one thread: it jumps to the next timer
//! whenever every task is idle, so hours of a fleet take seconds to minutes.
//! The wall clock the exchange reads is derived from it ([`SimClock`]).
//!
//! Output: an SVG plot of exchanges per second, and as the last stdout line
//! one JSON object with the figures (see `Report`).

#![allow(missing_docs)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use rand::Rng as _;
use s2iam::cache::{Cache, Fetcher};
use s2iam::env::{Clock, Env, Fs, ProviderConfig};
use s2iam::exchange::{
    ExchangeClient, ExchangeConfig, ExchangeRequest, ExchangeTransport, ServerUrl, TransportRequest,
};
use s2iam::http::{retry, GaveUp, Reply, Step, TransportError};
use s2iam::provider::{CloudIdentity, CloudProvider, IdentityHeaders};
use s2iam::token::Token;
use s2iam::JwtType;
use s2iam_sidecar::config::{ServeConfig, ServeOverrides};

const LIFETIME: u64 = 3600;
const PODS_PER_NODE: usize = 32;
/// Requests a node's metadata server answers per second before 429 (GKE's
/// metadata server and Azure IMDS both throttle per node).
const METADATA_PER_NODE_PER_SECOND: u32 = 20;
/// How often each application asks its sidecar for the token.
const REQUEST_EVERY: u64 = 300;
/// The default window of `peak_rate`: per-second counts of 100,000 sidecars
/// carry Poisson noise that a 10-second mean smooths out (smaller fleets need
/// wider windows: `--peak-window`).
const PEAK_WINDOW: usize = 10;

#[derive(Debug, Clone)]
struct Scenario {
    name: String,
    /// Pods start uniformly over this many seconds from 0.
    start_spread: u64,
    /// Auth outage [from, to) in seconds.
    outage: Option<(u64, u64)>,
    /// Each pod's metadata server is not ready this long after the pod starts.
    metadata_not_ready: u64,
    /// Virtual seconds simulated.
    duration: u64,
    /// The steady-state window [from, to), if fixed in advance (else: from when
    /// every sidecar holds a token, for three lifetimes).
    steady_window: Option<(u64, u64)>,
}

fn scenario(name: &str) -> Option<Scenario> {
    let l = LIFETIME;
    let base = Scenario {
        name: name.to_string(),
        start_spread: l,
        outage: None,
        metadata_not_ready: 0,
        duration: 4 * l,
        steady_window: Some((l, 4 * l)),
    };
    Some(match name {
        "steady" => base,
        "mass-start" => Scenario {
            start_spread: 60,
            duration: 4 * l,
            steady_window: None,
            ..base
        },
        "outage-10m" => Scenario {
            outage: Some((2 * l, 2 * l + 600)),
            duration: 2 * l + 600 + 3600,
            steady_window: Some((l, 2 * l)),
            ..base
        },
        "outage-1h" => Scenario {
            outage: Some((2 * l, 3 * l)),
            duration: 3 * l + 5400,
            steady_window: Some((l, 2 * l)),
            ..base
        },
        "metadata-slow-start" => Scenario {
            start_spread: 60,
            metadata_not_ready: 30,
            duration: 2 * l,
            steady_window: None,
            ..base
        },
        _ => return None,
    })
}

/// The wall clock on the virtual timeline.
#[derive(Debug)]
struct SimClock {
    base: SystemTime,
    start: tokio::time::Instant,
}

impl Clock for SimClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

/// Per-second counters over the run.
struct Series {
    attempts: Vec<AtomicU64>,
    /// Attempts after the first of one exchange call (the client's own retries).
    in_call_retries: Vec<AtomicU64>,
    /// Answers of 429.
    throttled: Vec<AtomicU64>,
    /// Local requests that missed the hot path (`get_fresh`) and went to `get`.
    local_misses: Vec<AtomicU64>,
    ok: Vec<AtomicU64>,
    first_tokens: Vec<AtomicU64>,
    rejected_429: AtomicU64,
    rejected_503: AtomicU64,
    metadata_calls: AtomicU64,
    metadata_429: AtomicU64,
}

impl Series {
    fn new(seconds: u64) -> Self {
        let v = || (0..=seconds).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Self {
            attempts: v(),
            in_call_retries: v(),
            throttled: v(),
            local_misses: v(),
            ok: v(),
            first_tokens: v(),
            rejected_429: AtomicU64::new(0),
            rejected_503: AtomicU64::new(0),
            metadata_calls: AtomicU64::new(0),
            metadata_429: AtomicU64::new(0),
        }
    }
}

fn bump(v: &[AtomicU64], second: u64) {
    if let Some(c) = v.get(second as usize) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The in-process auth service.
struct AuthService {
    start: tokio::time::Instant,
    clock: Arc<SimClock>,
    capacity: u64,
    outage: Option<(u64, u64)>,
    /// (second, admitted in it).
    window: Mutex<(u64, u64)>,
    series: Arc<Series>,
}

impl AuthService {
    fn second(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    fn answer(&self, attempt: u32) -> Reply {
        let now = self.second();
        bump(&self.series.attempts, now);
        if attempt > 1 {
            bump(&self.series.in_call_retries, now);
        }
        if self.outage.is_some_and(|(a, b)| (a..b).contains(&now)) {
            self.series.rejected_503.fetch_add(1, Ordering::Relaxed);
            return reply(503, &[], "{\"error\":\"unavailable\"}".into());
        }
        {
            let mut w = self.window.lock().unwrap();
            if w.0 != now {
                *w = (now, 0);
            }
            if w.1 >= self.capacity {
                self.series.rejected_429.fetch_add(1, Ordering::Relaxed);
                bump(&self.series.throttled, now);
                return reply(
                    429,
                    &[("retry-after", "2")],
                    "{\"error\":\"too many requests\"}".into(),
                );
            }
            w.1 += 1;
        }
        bump(&self.series.ok, now);
        let exp = self.clock.now() + Duration::from_secs(LIFETIME);
        let exp_unix = exp
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwt = format!(
            "{}.{}.c2ln",
            b64.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
            b64.encode(format!(r#"{{"sub":"sim","exp":{exp_unix}}}"#)),
        );
        reply(
            200,
            &[],
            format!(
                r#"{{"jwt":"{jwt}","expires_at":"{}"}}"#,
                s2iam::util::rfc3339(exp)
            ),
        )
    }
}

fn reply(status: u16, headers: &[(&'static str, &'static str)], body: String) -> Reply {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.insert(*k, http::HeaderValue::from_static(v));
    }
    Reply {
        status,
        headers: map,
        body,
    }
}

impl ExchangeTransport for AuthService {
    fn send(
        &self,
        request: TransportRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, TransportError>> + Send>>
    {
        let answer = self.answer(request.attempt);
        // A few milliseconds on the wire and in the service.
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(answer)
        })
    }
}

/// One node's metadata server: a rate limit, and not ready for each pod's
/// first seconds.
struct Metadata {
    start: tokio::time::Instant,
    window: Mutex<HashMap<usize, (u64, u32)>>,
    not_ready: Duration,
    series: Arc<Series>,
}

impl Metadata {
    /// One GET by pod `pod` (started at `pod_start`) on node `node`.
    async fn get(&self, node: usize, pod_start: tokio::time::Instant) -> Step<(), String> {
        self.series.metadata_calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
        if pod_start.elapsed() < self.not_ready {
            return Step::Retry {
                reason: "connection refused (metadata server not ready)".into(),
                after: None,
            };
        }
        let now = self.start.elapsed().as_secs();
        let mut w = self.window.lock().unwrap();
        let slot = w.entry(node).or_insert((now, 0));
        if slot.0 != now {
            *slot = (now, 0);
        }
        if slot.1 >= METADATA_PER_NODE_PER_SECOND {
            self.series.metadata_429.fetch_add(1, Ordering::Relaxed);
            return Step::Retry {
                reason: "HTTP 429".into(),
                after: None,
            };
        }
        slot.1 += 1;
        Step::Done(())
    }
}

/// What the simulation tracks about one sidecar besides its cache.
#[derive(Default)]
struct PodState {
    /// Fetches have been failing since this second (None: not failing).
    failing_since: Option<u64>,
    /// The token it last got: its expiry, in seconds.
    expires: Option<u64>,
}

struct World {
    scenario: Scenario,
    start: tokio::time::Instant,
    series: Arc<Series>,
    auth: Arc<AuthService>,
    metadata: Arc<Metadata>,
    exchange: ExchangeClient,
    server: ServerUrl,
    config: ServeConfig,
    pods: Vec<Mutex<PodState>>,
    failed_local_requests: AtomicU64,
    requests_without_token: AtomicU64,
    local_requests: AtomicU64,
    expired_tokens: AtomicU64,
    /// The last second at which a sidecar that had been failing got a token.
    last_recovery: AtomicU64,
    /// The second at which the last sidecar got its first token.
    all_ready: AtomicU64,
    ready_count: AtomicU64,
}

impl World {
    fn second(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// The sidecar's fetch: identity from the node's metadata server (with
    /// the GCP provider's retries), then the exchange (with its own), within
    /// the client's timeout — as `Client::token` does over HTTP.
    async fn fetch(
        self: Arc<Self>,
        pod: usize,
        pod_start: tokio::time::Instant,
    ) -> Result<Token, String> {
        let timeout = self.config.client.timeout;
        let work = async {
            let node = pod / PODS_PER_NODE;
            retry(
                &s2iam::provider::gcp::DEFAULT_RETRY,
                |_| self.metadata.get(node, pod_start),
                |g: GaveUp| g.to_string(),
            )
            .await?;
            let headers = IdentityHeaders::default();
            let identity = CloudIdentity {
                provider: CloudProvider::Gcp,
                identifier: "sim@example.iam.gserviceaccount.com".into(),
                account_id: String::new(),
                region: String::new(),
                resource_type: String::new(),
                additional_claims: Default::default(),
                credential_source: None,
            };
            self.exchange
                .exchange(
                    &self.server,
                    ExchangeRequest {
                        jwt_type: JwtType::Api,
                        workspace_group_id: None,
                        headers: &headers,
                        identity: &identity,
                    },
                    timeout,
                )
                .await
                .map_err(|e| e.to_string())
        };
        let result = tokio::time::timeout(timeout, work)
            .await
            .unwrap_or_else(|_| Err("deadline".into()));
        self.record(pod, &result);
        result
    }

    fn record(&self, pod: usize, result: &Result<Token, String>) {
        let now = self.second();
        let mut st = self.pods[pod].lock().unwrap();
        match result {
            Ok(token) => {
                if st.expires.is_none() {
                    bump(&self.series.first_tokens, now);
                    if self.ready_count.fetch_add(1, Ordering::Relaxed) + 1
                        == self.pods.len() as u64
                    {
                        self.all_ready.store(now, Ordering::Relaxed);
                    }
                } else if st.expires.is_some_and(|e| e < now) {
                    self.expired_tokens.fetch_add(1, Ordering::Relaxed);
                }
                if st.failing_since.take().is_some() {
                    self.last_recovery.fetch_max(now, Ordering::Relaxed);
                }
                st.expires = Some(now + token.remaining().as_secs());
            }
            Err(_) => {
                st.failing_since.get_or_insert(now);
            }
        }
    }

    /// One pod: start, detect (with the sidecar's start-up retries), warm its
    /// token, run the refresher, and have its application ask for the token
    /// every few minutes through the sidecar's local path.
    async fn pod(self: Arc<Self>, pod: usize, start_at: Duration) {
        tokio::time::sleep(start_at).await;
        let pod_start = tokio::time::Instant::now();
        let node = pod / PODS_PER_NODE;
        let mut delay = Duration::from_millis(200);
        loop {
            // Detection: one probe of the metadata server.
            match self.metadata.get(node, pod_start).await {
                Step::Done(()) => break,
                _ => {
                    let (wait, next) = s2iam_sidecar::serve::startup_backoff(
                        delay,
                        pod_start.elapsed(),
                        self.config.client.startup_timeout,
                    );
                    tokio::time::sleep(wait).await;
                    delay = next;
                }
            }
        }
        let world = self.clone();
        let fetch: Fetcher<u8, Token, String> =
            Arc::new(move |_key| Box::pin(world.clone().fetch(pod, pod_start)));
        let cache = Cache::new(self.config.cache.policy.clone(), fetch);
        let end = self.start + Duration::from_secs(self.scenario.duration);
        let refresher = {
            let cache = cache.clone();
            let tick = self.config.cache.tick;
            tokio::spawn(async move {
                cache
                    .run_refresher(tick, tokio::time::sleep_until(end))
                    .await
            })
        };
        let _ = cache.pin(0).await; // the refresher retries a failure
                                    // The application: a request every REQUEST_EVERY seconds, random phase.
        let phase = rand::thread_rng().gen_range(0..REQUEST_EVERY * 1000);
        tokio::time::sleep(Duration::from_millis(phase)).await;
        while tokio::time::Instant::now() < end {
            self.local_request(&cache);
            tokio::time::sleep(Duration::from_secs(REQUEST_EVERY)).await;
        }
        let _ = refresher.await;
    }

    /// What a caller of the local API gets: the hot path's `get_fresh`, else
    /// the router's `get` (which serves a valid token while it refreshes).
    fn local_request(self: &Arc<Self>, cache: &Cache<u8, Token, String>) {
        self.local_requests.fetch_add(1, Ordering::Relaxed);
        if cache.get_fresh(&0).is_some() {
            return;
        }
        bump(&self.series.local_misses, self.second());
        let held_valid = cache.peek(&0).is_some();
        let world = self.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            if cache.get(0).await.is_err() {
                if held_valid {
                    world.failed_local_requests.fetch_add(1, Ordering::Relaxed);
                } else {
                    world.requests_without_token.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

struct Args {
    sidecars: usize,
    scenario: String,
    capacity: Option<u64>,
    plot: Option<String>,
    /// Seconds per bin of the refresh-spread check (1: the issue's "no second").
    bin: usize,
    peak_window: usize,
    /// A CSV of the per-second counts (second, attempts, tokens issued, the
    /// exchange client's in-call retries, 429s, local requests that missed
    /// the hot path).
    series: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sidecars: 1000,
        scenario: "steady".into(),
        capacity: None,
        plot: None,
        bin: 1,
        peak_window: PEAK_WINDOW,
        series: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--sidecars" => {
                args.sidecars = value()?.parse().map_err(|e| format!("--sidecars: {e}"))?;
                if !(1..=1_000_000).contains(&args.sidecars) {
                    return Err("--sidecars must be between 1 and 1000000".into());
                }
            }
            "--scenario" => args.scenario = value()?,
            "--capacity" => {
                let c: u64 = value()?.parse().map_err(|e| format!("--capacity: {e}"))?;
                if c == 0 {
                    return Err("--capacity must be at least 1".into());
                }
                args.capacity = Some(c);
            }
            "--plot" => args.plot = Some(value()?),
            "--series" => args.series = Some(value()?),
            "--peak-window" => {
                args.peak_window = value()?
                    .parse()
                    .map_err(|e| format!("--peak-window: {e}"))?;
                if !(1..=3600).contains(&args.peak_window) {
                    return Err("--peak-window must be between 1 and 3600 seconds".into());
                }
            }
            "--bin" => {
                args.bin = value()?.parse().map_err(|e| format!("--bin: {e}"))?;
                if !(1..=3600).contains(&args.bin) {
                    return Err("--bin must be between 1 and 3600 seconds".into());
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fleet_sim: {e}\nusage: fleet_sim --sidecars N --scenario steady|mass-start|outage-10m|outage-1h|metadata-slow-start [--capacity R] [--plot FILE.svg] [--bin SECONDS] [--peak-window SECONDS] [--series FILE.csv]");
            std::process::exit(2);
        }
    };
    let Some(scenario) = scenario(&args.scenario) else {
        eprintln!("fleet_sim: unknown scenario {:?}", args.scenario);
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let wall = Instant::now();
    let report = rt.block_on(run(&args, scenario));
    let mut report = report;
    report.wall_seconds = (wall.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    println!("{}", serde_json::to_string(&report).expect("json"));
}

#[derive(serde::Serialize, Default)]
struct Report {
    scenario: String,
    sidecars: usize,
    token_lifetime_seconds: u64,
    refresh_period_seconds: f64,
    capacity: u64,
    expected_steady_rate: f64,
    steady_rate: f64,
    steady_rate_error: f64,
    peak_rate: f64,
    peak_rate_1s: u64,
    peak_ratio: f64,
    peak_window_seconds: usize,
    max_refresh_ratio: Option<f64>,
    refresh_bin_seconds: usize,
    failed_local_requests: u64,
    requests_without_token: u64,
    local_requests: u64,
    expired_tokens: u64,
    recovery_seconds: Option<u64>,
    exchanges: u64,
    exchanges_ok: u64,
    rejected_429: u64,
    rejected_503: u64,
    metadata_calls: u64,
    metadata_429: u64,
    virtual_seconds: u64,
    plot: Option<String>,
    wall_seconds: f64,
}

async fn run(args: &Args, scenario: Scenario) -> Report {
    let start = tokio::time::Instant::now();
    let config = ServeConfig::from_toml(
        "",
        &Env::from_pairs::<&str, &str>([]),
        &ServeOverrides::default(),
    )
    .expect("the sidecar's default configuration");
    let policy = &config.cache.policy;
    let period = LIFETIME as f64 * policy.refresh_at;
    let expected = args.sidecars as f64 / period;
    let capacity = args
        .capacity
        .unwrap_or_else(|| ((expected * 4.0).ceil() as u64).max(10));
    let series = Arc::new(Series::new(scenario.duration));
    let clock = Arc::new(SimClock {
        base: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        start,
    });
    let auth = Arc::new(AuthService {
        start,
        clock: clock.clone(),
        capacity,
        outage: scenario.outage,
        window: Mutex::new((0, 0)),
        series: series.clone(),
    });
    let metadata = Arc::new(Metadata {
        start,
        window: Mutex::new(HashMap::new()),
        not_ready: Duration::from_secs(scenario.metadata_not_ready),
        series: series.clone(),
    });
    let provider_config = ProviderConfig::with_env(Env::from_pairs::<&str, &str>([]), Fs::real())
        .with_clock(clock.clone());
    let exchange =
        ExchangeClient::with_provider_config(ExchangeConfig::default(), &provider_config)
            .with_transport(auth.clone());
    let world = Arc::new(World {
        scenario: scenario.clone(),
        start,
        series: series.clone(),
        auth,
        metadata,
        exchange,
        server: ServerUrl::parse("http://auth.sim.invalid/auth/iam/:jwtType", true)
            .expect("server url"),
        config,
        pods: (0..args.sidecars).map(|_| Mutex::default()).collect(),
        failed_local_requests: AtomicU64::new(0),
        requests_without_token: AtomicU64::new(0),
        local_requests: AtomicU64::new(0),
        expired_tokens: AtomicU64::new(0),
        last_recovery: AtomicU64::new(0),
        all_ready: AtomicU64::new(0),
        ready_count: AtomicU64::new(0),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut rng = rand::thread_rng();
    for pod in 0..args.sidecars {
        let at = Duration::from_millis(rng.gen_range(0..scenario.start_spread * 1000));
        tasks.spawn(world.clone().pod(pod, at));
    }
    while tasks.join_next().await.is_some() {}
    let _ = &world.auth;
    summarize(args, &scenario, &world, period, expected, capacity)
}

fn counts(v: &[AtomicU64]) -> Vec<u64> {
    v.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64
    }
}

fn summarize(
    args: &Args,
    scenario: &Scenario,
    world: &World,
    period: f64,
    expected: f64,
    capacity: u64,
) -> Report {
    let s = &world.series;
    let attempts = counts(&s.attempts);
    let ok = counts(&s.ok);
    let first = counts(&s.first_tokens);
    let end = scenario.duration as usize;
    let all_ready = world.all_ready.load(Ordering::Relaxed) as usize;
    let (w0, w1) = match scenario.steady_window {
        Some((a, b)) => (a as usize, b as usize),
        None => (all_ready, (all_ready + 3 * LIFETIME as usize).min(end)),
    };
    let steady = mean(&ok[w0..w1]);
    // Peak: after the outage if there is one, else over the whole run.
    let (p0, p1) = match scenario.outage {
        Some((_, b)) => (b as usize, end),
        None => (0, end),
    };
    let windowed = attempts[p0..p1]
        .windows(args.peak_window)
        .map(mean)
        .fold(0.0, f64::max);
    let peak_1s = attempts[p0..p1].iter().copied().max().unwrap_or(0);
    // After a (mass) start: refreshes (successful exchanges other than first
    // tokens) per second, against their mean, over the next three lifetimes.
    let max_refresh_ratio = scenario.steady_window.is_none().then(|| {
        let refreshes: Vec<u64> = ok[w0..w1]
            .iter()
            .zip(&first[w0..w1])
            .map(|(o, f)| o.saturating_sub(*f))
            .collect::<Vec<u64>>()
            .chunks_exact(args.bin)
            .map(|c| c.iter().sum())
            .collect();
        let m = mean(&refreshes);
        let max = refreshes.iter().copied().max().unwrap_or(0) as f64;
        if m > 0.0 {
            round2(max / m)
        } else {
            0.0
        }
    });
    let recovery = match scenario.outage {
        Some((_, b)) => Some(
            world
                .last_recovery
                .load(Ordering::Relaxed)
                .saturating_sub(b),
        ),
        None => Some(all_ready as u64),
    };
    if let Some(path) = &args.series {
        let (retries, throttled, misses) = (
            counts(&s.in_call_retries),
            counts(&s.throttled),
            counts(&s.local_misses),
        );
        let mut csv = String::from("second,attempts,ok,in_call_retries,throttled,local_misses\n");
        for (i, (a, o)) in attempts.iter().zip(&ok).enumerate() {
            let _ = writeln!(
                csv,
                "{i},{a},{o},{},{},{}",
                retries[i], throttled[i], misses[i]
            );
        }
        if let Err(e) = std::fs::write(path, csv) {
            eprintln!("fleet_sim: cannot write {path}: {e}");
        }
    }
    let plot = Some(args.plot.clone().unwrap_or_else(|| {
        let dir = "target/fleet-sim";
        let _ = std::fs::create_dir_all(dir);
        format!("{dir}/{}-{}.svg", scenario.name, args.sidecars)
    }));
    if let Some(path) = &plot {
        let svg = plot_svg(scenario, args.sidecars, &attempts, &ok, expected);
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("fleet_sim: cannot write {path}: {e}");
        }
    }
    Report {
        scenario: scenario.name.clone(),
        sidecars: args.sidecars,
        token_lifetime_seconds: LIFETIME,
        refresh_period_seconds: period,
        capacity,
        expected_steady_rate: round2(expected),
        steady_rate: round2(steady),
        steady_rate_error: round2((steady - expected).abs() / expected),
        peak_rate: round2(windowed),
        peak_rate_1s: peak_1s,
        peak_ratio: round2(windowed / steady.max(f64::MIN_POSITIVE)),
        peak_window_seconds: args.peak_window,
        max_refresh_ratio,
        refresh_bin_seconds: args.bin,
        failed_local_requests: world.failed_local_requests.load(Ordering::Relaxed),
        requests_without_token: world.requests_without_token.load(Ordering::Relaxed),
        local_requests: world.local_requests.load(Ordering::Relaxed),
        expired_tokens: world.expired_tokens.load(Ordering::Relaxed),
        recovery_seconds: recovery,
        exchanges: attempts.iter().sum(),
        exchanges_ok: ok.iter().sum(),
        rejected_429: s.rejected_429.load(Ordering::Relaxed),
        rejected_503: s.rejected_503.load(Ordering::Relaxed),
        metadata_calls: s.metadata_calls.load(Ordering::Relaxed),
        metadata_429: s.metadata_429.load(Ordering::Relaxed),
        virtual_seconds: scenario.duration,
        plot,
        wall_seconds: 0.0,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Exchanges per second (all, and successful) over time, as 60-second means,
/// in a small hand-written SVG (no plotting crate for two lines).
fn plot_svg(scenario: &Scenario, n: usize, attempts: &[u64], ok: &[u64], expected: f64) -> String {
    const W: f64 = 800.0;
    const H: f64 = 300.0;
    const M: f64 = 50.0;
    let bin = 60;
    let means = |v: &[u64]| v.chunks(bin).map(mean).collect::<Vec<f64>>();
    let (a, o) = (means(attempts), means(ok));
    let ymax = a.iter().chain(&o).fold(expected * 2.0, |m, &x| m.max(x)) * 1.1;
    let xs = |i: usize| M + (i as f64) / (a.len().max(2) - 1) as f64 * (W - 2.0 * M);
    let ys = |y: f64| H - M + -(y / ymax) * (H - 2.0 * M);
    let line = |v: &[f64]| {
        v.iter()
            .enumerate()
            .map(|(i, &y)| format!("{:.1},{:.1}", xs(i), ys(y)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{M}" y="20" font-size="14">fleet-sim {name}: {n} sidecars, exchanges/s (60 s means)</text>
<line x1="{M}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{M}" y1="{M}" x2="{M}" y2="{b}" stroke="black"/>
<text x="{M}" y="{lx}">0</text><text x="{r}" y="{lx}" text-anchor="end">{hours:.1} h</text>
<text x="{tx}" y="{M}" text-anchor="end">{ymax:.0}</text><text x="{tx}" y="{b}" text-anchor="end">0</text>
<line x1="{M}" y1="{ey:.1}" x2="{r}" y2="{ey:.1}" stroke="gray" stroke-dasharray="4 4"/>
<text x="{r}" y="{eyl:.1}" text-anchor="end" fill="gray">N / refresh period = {expected:.1}/s</text>
<polyline fill="none" stroke="#d62728" stroke-width="1" points="{pa}"/>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{po}"/>
<text x="{lg}" y="36" fill="#d62728">all requests (incl. 429/503)</text>
<text x="{lg}" y="50" fill="#1f77b4">tokens issued</text>
</svg>
"##,
        name = scenario.name,
        b = H - M,
        r = W - M,
        lx = H - M + 16.0,
        tx = M - 4.0,
        hours = scenario.duration as f64 / 3600.0,
        ey = ys(expected),
        eyl = ys(expected) - 4.0,
        pa = line(&a),
        po = line(&o),
        lg = W - M - 200.0,
    );
    svg
}
