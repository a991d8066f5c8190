//! Sidecar throughput and latency, against the practical ceiling, in one run.
//!
//! Starts `s2iam serve` as a separate process against the mocks (loopback only),
//! warms one API token, then drives cached-token requests (`?format=raw`) over the
//! Unix socket and over TCP with `BENCH_CONNS` keep-alive connections for
//! `BENCH_SECS` seconds each. The baseline is this same binary re-executed as a
//! minimal hyper server answering a fixed body of the same size on the same kinds
//! of listener; the figures that matter are the ratios sidecar/baseline. Each
//! round also reads the server's CPU time (`/proc/<pid>/stat`) and reports CPU
//! per request: on a machine busy with other work, throughput and tail latency
//! swing with the scheduler, CPU per request much less. Also reports the
//! daemon's RSS idle and after load (`VmRSS`, `VmHWM`, and `RssAnon`: the part
//! that is not the binary's code mapped from the page cache).
//!
//! Rounds interleave baseline and sidecar (`BENCH_ROUNDS`, default 3) and the
//! figures are medians; `BENCH_CONNS` takes a list (`16,64`). With `BENCH_WRK=1`
//! the TCP comparison is repeated with `wrk`, an external load generator.
//!
//!   cargo bench --bench sidecar                      # release build
//!   BENCH_CONNS=16,64 BENCH_WRK=1 cargo bench --bench sidecar
//!   BENCH_SECS=1 BENCH_CONNS=4 BENCH_ROUNDS=1 cargo bench --bench sidecar
//!
//! `BENCH_S2IAM=/path/to/s2iam` measures another build of the binary (say, the
//! previous commit's) against the same baseline.
//!
//! Results: stdout and `target/bench/sidecar.json`.

// Tests and benches own their environment and clock (rule 4 is for the library).
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;

const FIXED_SERVER_ARG: &str = "--serve-fixed-body";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(FIXED_SERVER_ARG) {
        return serve_fixed(&args[2], &args[3], args[4].parse().expect("body size"));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

/// The baseline: a minimal hyper server with a fixed body on a Unix socket and TCP.
fn serve_fixed(socket: &str, tcp: &str, size: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let body = bytes::Bytes::from(vec![b'x'; size]);
        let uds = tokio::net::UnixListener::bind(socket).unwrap();
        let tcp = tokio::net::TcpListener::bind(tcp).await.unwrap();
        let b = body.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = uds.accept().await.unwrap();
                tokio::spawn(serve_conn(TokioIo::new(s), b.clone()));
            }
        });
        loop {
            let (s, _) = tcp.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            tokio::spawn(serve_conn(TokioIo::new(s), body.clone()));
        }
    });
}

async fn serve_conn<I>(io: I, body: bytes::Bytes)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |_req| {
        let body = body.clone();
        async move {
            Ok::<_, std::convert::Infallible>(
                hyper::Response::builder()
                    .header("content-type", "text/plain")
                    .body(Full::new(body))
                    .unwrap(),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, svc)
        .await;
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn run() {
    let secs = env_num("BENCH_SECS", 5);
    let conns = env_num("BENCH_CONNS", 16) as usize;
    let dir = std::env::temp_dir().join(format!("s2iam-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let (_ts, auth_url, cloud_url) = start_testserver().await;
    let sock = dir.join("s2iam.sock");
    let port = free_port();
    let sidecar = start_sidecar(&dir, &sock, port, &auth_url, &cloud_url).await;
    let pid = sidecar.0.id();
    let token = get(&Target::Unix(sock.clone()), "/v1/token/api?format=raw").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(pid, "VmRSS:");
    let idle_anon = rss_kib(pid, "RssAnon:");

    let base_sock = dir.join("baseline.sock");
    let base_port = free_port();
    let _baseline = Proc(
        Command::new(std::env::current_exe().unwrap())
            .args([
                FIXED_SERVER_ARG,
                base_sock.to_str().unwrap(),
                &format!("127.0.0.1:{base_port}"),
                &token.len().to_string(),
            ])
            .spawn()
            .unwrap(),
    );
    wait_for(|| base_sock.exists(), Duration::from_secs(10));
    let base_pid = _baseline.0.id();
    let tick = clock_ticks_per_second();

    let path = "/v1/token/api?format=raw";
    let rounds = env_num("BENCH_ROUNDS", 3).max(1) as usize;
    let conn_counts: Vec<usize> = std::env::var("BENCH_CONNS")
        .unwrap_or_else(|_| conns.to_string())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let targets = [
        ("baseline unix", Target::Unix(base_sock.clone()), base_pid),
        ("sidecar unix", Target::Unix(sock.clone()), pid),
        (
            "baseline tcp",
            Target::Tcp(format!("127.0.0.1:{base_port}")),
            base_pid,
        ),
        ("sidecar tcp", Target::Tcp(format!("127.0.0.1:{port}")), pid),
    ];
    // Rounds interleave baseline and sidecar, so drift in the machine's load
    // (other processes, thermal) hits both alike; the figures are medians.
    let mut summary = Vec::new();
    let mut errors = 0;
    for &c in &conn_counts {
        let mut per_target: Vec<Vec<LoadResult>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (i, (_, target, server)) in targets.iter().enumerate() {
                let cpu_before = cpu_ticks(*server);
                let mut r = load(target, path, c, Duration::from_secs(secs)).await;
                let cpu = cpu_ticks(*server).saturating_sub(cpu_before) as f64 / tick;
                r.cpu_us_per_req = cpu * 1e6 / (r.count.max(1) as f64);
                errors += r.errors;
                per_target[i].push(r);
            }
        }
        for (i, (name, _, _)) in targets.iter().enumerate() {
            let m = Medians::of(&per_target[i]);
            println!(
                "{c:>3} conns  {name:<14} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  server CPU {:>5.1} µs/req  (median of {rounds} rounds)",
                m.rps, m.p50_us, m.p99_us, m.cpu_us_per_req
            );
            summary.push(serde_json::json!({
                "connections": c, "name": name, "rps": m.rps, "p50_us": m.p50_us, "p99_us": m.p99_us,
                "cpu_us_per_req": m.cpu_us_per_req,
                "rounds": per_target[i].iter().map(|r| serde_json::json!({"rps": r.rps, "p99_us": r.p99_us, "requests": r.count, "cpu_us_per_req": r.cpu_us_per_req})).collect::<Vec<_>>(),
            }));
        }
        let ratio = |s: usize, b: usize| {
            median_f64(
                per_target[s]
                    .iter()
                    .zip(&per_target[b])
                    .map(|(s, b)| s.rps / b.rps)
                    .collect(),
            )
        };
        let (unix_ratio, tcp_ratio) = (ratio(1, 0), ratio(3, 2));
        println!("{c:>3} conns  sidecar/baseline throughput (median of per-round ratios): unix {unix_ratio:.2}, tcp {tcp_ratio:.2}");
        let cpu_ratio = |s: usize, b: usize| {
            median_f64(
                per_target[s]
                    .iter()
                    .zip(&per_target[b])
                    .map(|(s, b)| s.cpu_us_per_req / b.cpu_us_per_req.max(f64::MIN_POSITIVE))
                    .collect(),
            )
        };
        let (unix_cpu, tcp_cpu) = (cpu_ratio(1, 0), cpu_ratio(3, 2));
        println!("{c:>3} conns  sidecar/baseline server CPU per request (median of per-round ratios; 1.00 = as cheap as the baseline): unix {unix_cpu:.2}, tcp {tcp_cpu:.2}");
        summary.push(
            serde_json::json!({"connections": c, "ratio_unix": unix_ratio, "ratio_tcp": tcp_ratio, "cpu_ratio_unix": unix_cpu, "cpu_ratio_tcp": tcp_cpu}),
        );
    }
    let external = if std::env::var("BENCH_WRK").is_ok_and(|v| v == "1") {
        wrk_rounds(
            (port, pid),
            (base_port, base_pid),
            &conn_counts,
            rounds,
            secs,
            tick,
        )
    } else {
        serde_json::Value::Null
    };
    let loaded_rss = rss_kib(pid, "VmRSS:");
    let loaded_anon = rss_kib(pid, "RssAnon:");
    let peak_rss = rss_kib(pid, "VmHWM:");
    println!("sidecar RSS: idle {idle_rss} KiB, after load {loaded_rss} KiB, peak {peak_rss} KiB; of which anonymous (not the binary's code from the page cache): idle {idle_anon} KiB, after load {loaded_anon} KiB");
    let doc = serde_json::json!({
        "secs_per_round": secs,
        "rounds": rounds,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "results": summary,
        "wrk": external,
        "rss_kib": {"idle": idle_rss, "after_load": loaded_rss, "peak": peak_rss, "anon_idle": idle_anon, "anon_after_load": loaded_anon},
        "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    // The workspace's target/ (this crate is cli/).
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("sidecar.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    drop(sidecar);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(errors, 0, "requests failed during the benchmark");
}

struct Medians {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    cpu_us_per_req: f64,
}

impl Medians {
    fn of(rounds: &[LoadResult]) -> Self {
        let median_u64 = |mut v: Vec<u64>| {
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        Self {
            rps: median_f64(rounds.iter().map(|r| r.rps).collect()),
            p50_us: median_u64(rounds.iter().map(|r| r.p50_us).collect()),
            p99_us: median_u64(rounds.iter().map(|r| r.p99_us).collect()),
            cpu_us_per_req: median_f64(rounds.iter().map(|r| r.cpu_us_per_req).collect()),
        }
    }
}

/// User + system CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at `) `.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 11 and 12 here.
    field(11) + field(12)
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The same comparison with an external load generator (`wrk`, TCP only: it has
/// no Unix-socket mode), so the figures do not depend on this file's client.
fn wrk_rounds(
    (port, pid): (u16, u32),
    (base_port, base_pid): (u16, u32),
    conn_counts: &[usize],
    rounds: usize,
    secs: u64,
    tick: f64,
) -> serde_json::Value {
    let mut out = Vec::new();
    for &c in conn_counts {
        let (mut base, mut side) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            base.push(wrk(base_port, base_pid, c, secs, tick));
            side.push(wrk(port, pid, c, secs, tick));
        }
        let (base, side): (Vec<_>, Vec<_>) = (
            base.into_iter().flatten().collect(),
            side.into_iter().flatten().collect(),
        );
        if base.is_empty() || side.is_empty() {
            println!("wrk: no result (is wrk installed?)");
            return serde_json::Value::Null;
        }
        let ratio = median_f64(side.iter().zip(&base).map(|(s, b)| s.0 / b.0).collect());
        let cpu_ratio = median_f64(
            side.iter()
                .zip(&base)
                .map(|(s, b)| s.3 / b.3.max(f64::MIN_POSITIVE))
                .collect(),
        );
        let med = |v: &[WrkResult], f: fn(&WrkResult) -> f64| median_f64(v.iter().map(f).collect());
        let (s_rps, s_p50, s_p99) = (
            med(&side, |r| r.0),
            med(&side, |r| r.1),
            med(&side, |r| r.2),
        );
        let (b_rps, b_p50, b_p99) = (
            med(&base, |r| r.0),
            med(&base, |r| r.1),
            med(&base, |r| r.2),
        );
        let (s_cpu, b_cpu) = (med(&side, |r| r.3), med(&base, |r| r.3));
        println!(
            "wrk {c:>3} conns tcp: sidecar {s_rps:>9.0} req/s p50 {s_p50:.0} µs p99 {s_p99:.0} µs CPU {s_cpu:.1} µs/req | baseline {b_rps:>9.0} req/s p50 {b_p50:.0} µs p99 {b_p99:.0} µs CPU {b_cpu:.1} µs/req | throughput ratio {ratio:.2}, CPU per request ratio {cpu_ratio:.2} (medians of {rounds} interleaved rounds)"
        );
        out.push(serde_json::json!({
            "connections": c,
            "sidecar": {"rps": s_rps, "p50_us": s_p50, "p99_us": s_p99, "cpu_us_per_req": s_cpu},
            "baseline": {"rps": b_rps, "p50_us": b_p50, "p99_us": b_p99, "cpu_us_per_req": b_cpu},
            "ratio": ratio,
            "cpu_ratio": cpu_ratio,
        }));
    }
    serde_json::Value::Array(out)
}

/// One `wrk` run: (requests/s, p50 µs, p99 µs, server CPU µs per request).
type WrkResult = (f64, f64, f64, f64);

/// One `wrk` run against the server on `port`, process `pid`.
fn wrk(port: u16, pid: u32, conns: usize, secs: u64, tick: f64) -> Option<WrkResult> {
    let cpu_before = cpu_ticks(pid);
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            "-H",
            "Host: localhost",
            &format!("http://127.0.0.1:{port}/v1/token/api?format=raw"),
        ])
        .output()
        .ok()?;
    let cpu = cpu_ticks(pid).saturating_sub(cpu_before) as f64 / tick;
    let text = String::from_utf8_lossy(&out.stdout);
    // "  123456 requests in 3.00s, 45.6MB read"
    let requests: f64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())?;
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let micros = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n,
            "ms" => n * 1e3,
            "s" => n * 1e6,
            _ => return None,
        })
    };
    if text.contains("Non-2xx") {
        println!("wrk: non-2xx answers from port {port}:\n{text}");
        return None;
    }
    Some((
        field("Requests/sec:")?.parse().ok()?,
        micros(field("50%")?)?,
        micros(field("99%")?)?,
        cpu * 1e6 / requests.max(1.0),
    ))
}

fn wait_for(mut f: impl FnMut() -> bool, within: Duration) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The mocks run in this process: they answer one exchange at start, then idle.
async fn start_testserver() -> (s2iam_testserver::TestServer, String, String) {
    let server = s2iam_testserver::TestServer::start(s2iam_testserver::TestServerConfig::new(
        s2iam_testserver::CloudConfig::gcp(),
    ))
    .await
    .unwrap();
    let (auth, cloud) = (server.exchange_url_template(), server.cloud_url());
    (server, auth, cloud)
}

async fn start_sidecar(
    dir: &Path,
    sock: &Path,
    port: u16,
    auth_url: &str,
    cloud_url: &str,
) -> Proc {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nsocket = {sock:?}\ntcp = \"127.0.0.1:{port}\"\n[log]\nlevel = \"warn\"\n[[token]]\ntype = \"api\"\n"
        ),
    )
    .unwrap();
    let binary = std::env::var_os("BENCH_S2IAM")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_s2iam")), PathBuf::from);
    let mut cmd = Command::new(binary);
    cmd.args(["serve", "--config"]).arg(&config).env_clear();
    for (var, value) in s2iam::env::endpoints::mock_env(cloud_url) {
        cmd.env(var, value);
    }
    cmd.env("S2IAM_JWT_SERVER_URL", auth_url)
        .env("S2IAM_ALLOW_HTTP", "1");
    let child = Proc(cmd.stderr(Stdio::piped()).spawn().unwrap());
    let target = Target::Unix(sock.to_path_buf());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = request(&target, "/readyz").await {
            break;
        }
        assert!(Instant::now() < deadline, "sidecar never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(String),
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>;

async fn connect(target: &Target) -> std::io::Result<Sender> {
    let sender = match target {
        Target::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            sender
        }
        Target::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a).await?;
            s.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            sender
        }
    };
    Ok(sender)
}

async fn send(sender: &mut Sender, path: &str) -> std::io::Result<(u16, bytes::Bytes)> {
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let resp = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, body))
}

async fn request(target: &Target, path: &str) -> std::io::Result<(u16, bytes::Bytes)> {
    send(&mut connect(target).await?, path).await
}

async fn get(target: &Target, path: &str) -> String {
    let (status, body) = request(target, path).await.unwrap();
    assert_eq!(status, 200);
    String::from_utf8(body.to_vec()).unwrap()
}

struct LoadResult {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    count: u64,
    errors: u64,
    /// The server's CPU time per request answered (set by the caller).
    cpu_us_per_req: f64,
}

async fn load(target: &Target, path: &str, conns: usize, duration: Duration) -> LoadResult {
    let path: Arc<str> = path.into();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (target, path) = (target.clone(), path.clone());
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut sender = connect(&target).await.unwrap();
            while Instant::now() < deadline {
                let t = Instant::now();
                match send(&mut sender, &path).await {
                    Ok((200, _)) => lat.push(t.elapsed().as_micros() as u64),
                    _ => {
                        errors += 1;
                        sender = connect(&target).await.unwrap();
                    }
                }
            }
            (lat, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        let (lat, e) = r.unwrap();
        all.extend(lat);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    LoadResult {
        rps: all.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        count: all.len() as u64,
        errors,
        cpu_us_per_req: 0.0,
    }
}
