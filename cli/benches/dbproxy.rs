//! The database proxy against a direct connection, in one run.
//!
//! The mock SingleStore runs in this process on its own runtime; `s2iam proxy` runs
//! as a separate process in front of it (its release binary under `cargo bench`).
//! The client is `mysql_async` on another runtime. Two figures, each as a ratio to
//! the same client connecting straight to the mock with the JWT as password (TLS,
//! verified, `mysql_clear_password`), alternating direct and proxied rounds:
//!
//! - connection setup: connect + login + `SELECT 1` + quit, sequentially
//!   (`BENCH_RUNS` each way); median and p90; goal: proxy/direct within 1.5×;
//! - streaming `SELECT * FROM s2iam_rows` (`BENCH_DB_ROWS` rows of 100 bytes,
//!   `BENCH_STREAMS` times each way); MB/s; goal: proxy/direct at least 0.9.
//!
//!   cargo bench --bench dbproxy
//!   BENCH_RUNS=50 BENCH_DB_ROWS=20000 cargo bench --bench dbproxy
//!
//! Results: stdout and `target/bench/dbproxy.json`.

// Tests and benches own their environment and clock (rule 4 is for the library).
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};

const WG: &str = "wg-bench";

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

fn main() {
    let rows = env_num("BENCH_DB_ROWS", 200_000) as usize;
    // The mocks on their own runtime (one worker), so the client does not share it.
    let mock_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = mock_rt.block_on(async {
        let config = s2iam_testserver::TestServerConfig::new(s2iam_testserver::CloudConfig::gcp())
            .with_singlestore(s2iam_testserver::SingleStoreConfig {
                workspace_group_id: Some(WG.into()),
                large_rows: rows,
                large_row_bytes: 100,
                ..Default::default()
            });
        s2iam_testserver::TestServer::start(config).await.unwrap()
    });
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(run(&server, rows));
    mock_rt.block_on(server.shutdown());
}

async fn run(server: &s2iam_testserver::TestServer, rows: usize) {
    let runs = env_num("BENCH_RUNS", 300) as usize;
    let streams = env_num("BENCH_STREAMS", 5) as usize;
    let db = server.singlestore().unwrap();
    let dir = std::env::temp_dir().join(format!("s2iam-bench-dbproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, db.ca_pem()).unwrap();
    let (proxy, port) = start_proxy(server, &ca);
    let jwt = jwt(server).await;
    let direct = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(db.addr().port())
        .user(Some("*"))
        .pass(Some(jwt))
        .prefer_socket(false)
        .enable_cleartext_plugin(true)
        .ssl_opts(SslOpts::default().with_root_certs(vec![ca.clone().into()]));
    let proxied = OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("*"))
        .prefer_socket(false);
    // Warm both paths (and the proxy's token).
    for opts in [&direct, &proxied] {
        setup_once(opts).await;
    }

    let (mut d, mut p) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs.div_ceil(10) {
        for _ in 0..10 {
            d.push(setup_once(&direct).await);
        }
        for _ in 0..10 {
            p.push(setup_once(&proxied).await);
        }
    }
    let (d50, d90) = percentiles(&mut d);
    let (p50, p90) = percentiles(&mut p);
    let setup_ratio = p50 / d50;
    println!(
        "connection setup (connect + login + SELECT 1), {} each:",
        d.len()
    );
    println!("  direct  p50 {:>7.0} µs  p90 {:>7.0} µs", d50, d90);
    println!("  proxy   p50 {:>7.0} µs  p90 {:>7.0} µs", p50, p90);
    println!("  proxy/direct p50: {setup_ratio:.2} (goal <= 1.5)");

    let (mut ds, mut ps) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..streams {
        let (b, mbps) = stream(&direct, rows).await;
        bytes = b;
        ds.push(mbps);
        ps.push(stream(&proxied, rows).await.1);
    }
    let (dm, _) = percentiles(&mut ds);
    let (pm, _) = percentiles(&mut ps);
    let stream_ratio = pm / dm;
    println!(
        "streaming {rows} rows ({:.1} MB), {streams} each:",
        bytes as f64 / 1e6
    );
    println!("  direct  median {dm:>7.1} MB/s");
    println!("  proxy   median {pm:>7.1} MB/s");
    println!("  proxy/direct: {stream_ratio:.2} (goal >= 0.9)");

    let doc = serde_json::json!({
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "setup": {"runs": d.len(), "direct_p50_us": d50, "direct_p90_us": d90,
                  "proxy_p50_us": p50, "proxy_p90_us": p90, "ratio_p50": setup_ratio},
        "stream": {"rows": rows, "bytes": bytes, "runs": streams,
                   "direct_mb_s": dm, "proxy_mb_s": pm, "ratio": stream_ratio},
    });
    // The workspace's target/ (this crate is cli/).
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("dbproxy.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One connection: connect, log in, `SELECT 1`, quit; microseconds.
async fn setup_once(opts: &OptsBuilder) -> f64 {
    let started = Instant::now();
    let mut conn = Conn::new(opts.clone()).await.expect("connects");
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.disconnect().await.unwrap();
    started.elapsed().as_secs_f64() * 1e6
}

/// Streams the large result set on a fresh connection: (payload bytes, MB/s).
async fn stream(opts: &OptsBuilder, rows: usize) -> (usize, f64) {
    let mut conn = Conn::new(opts.clone()).await.expect("connects");
    let started = Instant::now();
    let mut result = conn.query_iter("SELECT * FROM s2iam_rows").await.unwrap();
    let (mut n, mut bytes) = (0usize, 0usize);
    while let Some(row) = result.next().await.unwrap() {
        let payload: Vec<u8> = row.get(1).unwrap();
        bytes += payload.len() + 8;
        n += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(n, rows);
    drop(result);
    conn.disconnect().await.unwrap();
    (bytes, bytes as f64 / 1e6 / secs)
}

/// (median, p90), sorting in place.
fn percentiles(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

/// The database JWT the direct client uses (the proxy gets its own).
async fn jwt(server: &s2iam_testserver::TestServer) -> String {
    use s2iam::env::{Env, Fs};
    let env = Env::from_pairs(s2iam::env::endpoints::mock_env(&server.cloud_url()));
    let client = s2iam::Client::new(s2iam::JwtOptions {
        server_url: Some(server.exchange_url_template()),
        allow_http: true,
        provider_config: Some(s2iam::ProviderConfig::with_env(env, Fs::real())),
        ..Default::default()
    })
    .unwrap();
    let token = client
        .token(&s2iam::TokenRequest::database(WG))
        .await
        .unwrap();
    token.jwt().expose().to_string()
}

/// `s2iam proxy` in front of the mock; waits until it has its token.
fn start_proxy(server: &s2iam_testserver::TestServer, ca: &Path) -> (Proc, u16) {
    let db = server.singlestore().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s2iam"));
    cmd.env_clear();
    for (var, value) in s2iam::env::endpoints::mock_env(&server.cloud_url()) {
        cmd.env(var, value);
    }
    cmd.env("S2IAM_LOG", "warn")
        .args(["proxy", "--listen", "127.0.0.1:0", "--upstream"])
        .arg(db.addr().to_string())
        .args(["--server-name", db.server_name(), "--ca-file"])
        .arg(ca)
        .args(["--workspace-group-id", WG, "--allow-http", "--server-url"])
        .arg(server.exchange_url_template())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (Proc(child), port)
}
