//! Detection latency: the environment fast path, a full concurrent probe that a
//! mock metadata service answers, and a probe where nothing listens (refused),
//! all in one run. The refused case must stay well under 100 ms: a workload off
//! any cloud (a laptop, CI) must not pay for detection.
//!
//!   cargo bench --bench detect            (BENCH_RUNS=200 by default)
//!
//! Results: stdout and `target/bench/detect.json`.

// Tests and benches own their environment and clock (rule 4 is for the library).
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::time::{Duration, Instant};

use s2iam::env::{Env, Fs};
use s2iam::provider::detect::{detect_provider, DetectOptions};
use s2iam::ProviderConfig;
use s2iam_testserver::{CloudConfig, TestServer, TestServerConfig};

fn config(env: Env) -> ProviderConfig {
    ProviderConfig::with_env(env, Fs::from_files::<&str, &str>([]))
}

async fn measure(cfg: &ProviderConfig, runs: usize, expect_ok: bool) -> Vec<Duration> {
    let opts = DetectOptions::default();
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let result = detect_provider(cfg, &opts).await;
        samples.push(t.elapsed());
        assert_eq!(result.is_ok(), expect_ok, "{:?}", result.err());
    }
    samples.sort();
    samples
}

fn pct(s: &[Duration], p: f64) -> f64 {
    s[((s.len() as f64 * p) as usize).min(s.len() - 1)].as_secs_f64() * 1000.0
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fast = config(Env::from_pairs([("AWS_REGION", "us-east-1")]));
        let server = TestServer::start(TestServerConfig::new(CloudConfig::gcp())).await.unwrap();
        let answered = config(Env::from_pairs(s2iam::env::endpoints::mock_env(&server.cloud_url())));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let refused = config(Env::from_pairs(s2iam::env::endpoints::mock_env(&format!("http://127.0.0.1:{port}"))));

        let mut rows = Vec::new();
        for (name, cfg, ok) in [
            ("fast path (environment)", &fast, true),
            ("full detection (GCP answers)", &answered, true),
            ("nothing listening (refused)", &refused, false),
        ] {
            let s = measure(cfg, runs, ok).await;
            println!(
                "{name:<30} p50 {:>8.3} ms  p90 {:>8.3} ms  max {:>8.3} ms  ({runs} runs)",
                pct(&s, 0.5),
                pct(&s, 0.9),
                pct(&s, 1.0)
            );
            rows.push(serde_json::json!({"case": name, "p50_ms": pct(&s, 0.5), "p90_ms": pct(&s, 0.9), "max_ms": pct(&s, 1.0), "runs": runs}));
        }
        let refused_p90 = rows[2]["p90_ms"].as_f64().unwrap();
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("detect.json"), serde_json::to_string_pretty(&rows).unwrap()).unwrap();
        server.shutdown().await;
        assert!(refused_p90 < 100.0, "refused detection p90 {refused_p90:.1} ms is not well under 100 ms");
    });
}
