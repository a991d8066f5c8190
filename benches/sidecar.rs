//! Sidecar throughput and latency, against the practical ceiling, in one run.
//!
//! Starts `s2iam serve` as a separate process against the mocks (loopback only),
//! warms one API token, then drives cached-token requests (`?format=raw`) over the
//! Unix socket and over TCP with `BENCH_CONNS` keep-alive connections for
//! `BENCH_SECS` seconds each. The baseline is this same binary re-executed as a
//! minimal hyper server answering a fixed body of the same size on the same kinds
//! of listener; the figures that matter are the ratios sidecar/baseline. Also
//! reports the daemon's RSS idle and after load (`VmRSS`, `VmHWM`).
//!
//!   cargo bench --bench sidecar                      # release build
//!   BENCH_SECS=1 BENCH_CONNS=4 cargo bench --bench sidecar
//!
//! Results: stdout and `target/bench/sidecar.json`.

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

    let path = "/v1/token/api?format=raw";
    let mut results = Vec::new();
    for (name, target) in [
        ("baseline unix", Target::Unix(base_sock.clone())),
        ("sidecar unix", Target::Unix(sock.clone())),
        (
            "baseline tcp",
            Target::Tcp(format!("127.0.0.1:{base_port}")),
        ),
        ("sidecar tcp", Target::Tcp(format!("127.0.0.1:{port}"))),
    ] {
        let r = load(&target, path, conns, Duration::from_secs(secs)).await;
        println!(
            "{name:<14} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  ({} requests, {} errors)",
            r.rps, r.p50_us, r.p99_us, r.count, r.errors
        );
        results.push((name, r));
    }
    let loaded_rss = rss_kib(pid, "VmRSS:");
    let peak_rss = rss_kib(pid, "VmHWM:");
    let ratio = |a: usize, b: usize| results[a].1.rps / results[b].1.rps;
    let (unix_ratio, tcp_ratio) = (ratio(1, 0), ratio(3, 2));
    println!("sidecar/baseline throughput: unix {unix_ratio:.2}, tcp {tcp_ratio:.2}");
    println!("sidecar RSS: idle {idle_rss} KiB, after load {loaded_rss} KiB, peak {peak_rss} KiB");
    let doc = serde_json::json!({
        "secs_per_target": secs,
        "connections": conns,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "targets": results.iter().map(|(n, r)| serde_json::json!({
            "name": n, "rps": r.rps, "p50_us": r.p50_us, "p99_us": r.p99_us, "requests": r.count, "errors": r.errors,
        })).collect::<Vec<_>>(),
        "ratio_unix": unix_ratio,
        "ratio_tcp": tcp_ratio,
        "rss_kib": {"idle": idle_rss, "after_load": loaded_rss, "peak": peak_rss},
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("sidecar.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    let errors: u64 = results.iter().map(|(_, r)| r.errors).sum();
    drop(sidecar);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(errors, 0, "requests failed during the benchmark");
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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s2iam"));
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
    }
}
