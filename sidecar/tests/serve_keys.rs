//! The sidecar's key space under callers choosing keys, over its real Unix
//! socket: audience and workspace-group validation, the cap on on-demand keys,
//! the negative cache, the rate limit on cold exchanges, bounded metrics, and a
//! caller with a valid token never waiting for a refresh.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    exchanges, mocks, sidecar_config, start_sidecar, temp_dir, uds_get, uds_request, wait_ready,
};
use s2iam::exchange::JwtType;
use s2iam_sidecar::config::{ServeConfig, WarmToken};
use s2iam_testserver::{CloudConfig, FaultRule, TestServer};

/// Socket only, fast refresher ticks.
fn config(server: &TestServer, dir: &Path, toml: &str) -> ServeConfig {
    let mut c = sidecar_config(server, dir, toml);
    c.cache.tick = Duration::from_millis(50);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_is_allow_listed_on_gcp_and_refused_elsewhere() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("keys-aud-gcp");
    let sidecar = start_sidecar(
        &server,
        config(
            &server,
            &dir,
            "[access]\naudiences = [\"https://extra.example\"]\n",
        ),
    )
    .await;
    let socket = sidecar.socket_path().unwrap();
    wait_ready(&socket).await;
    let (status, body) = uds_get(
        &socket,
        "/v1/token/api?audience=https%3A%2F%2Fother.example",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let long = "a".repeat(600);
    let (status, body) = uds_get(&socket, &format!("/v1/token/api?audience={long}")).await;
    assert_eq!(status, 400, "{body}");
    // Allowed: it goes to the auth service (whose mock then checks the audience
    // of the identity token against its own expectation).
    let before = exchanges(&server);
    let (status, body) = uds_get(
        &socket,
        "/v1/token/api?audience=https%3A%2F%2Fextra.example",
    )
    .await;
    assert!(status != 400 && status != 403, "{status} {body}");
    assert_eq!(exchanges(&server), before + 1);
    sidecar.shutdown().await;
    server.shutdown().await;

    let server = mocks(CloudConfig::aws()).await;
    let dir = temp_dir("keys-aud-aws");
    let sidecar = start_sidecar(&server, config(&server, &dir, "")).await;
    let socket = sidecar.socket_path().unwrap();
    wait_ready(&socket).await;
    let (status, _) = uds_get(&socket, "/v1/token/api").await;
    assert_eq!(status, 200);
    let before = exchanges(&server);
    for i in 0..5 {
        let (status, body) = uds_get(
            &socket,
            &format!("/v1/token/api?audience=https%3A%2F%2Fauthsvc.singlestore.com{i}"),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("GCP"), "{body}");
    }
    assert_eq!(
        exchanges(&server),
        before,
        "no exchange for a refused audience"
    );
    let (_, metrics) = uds_get(&socket, "/metrics").await;
    assert!(
        metrics.contains("s2iam_cached_tokens{kind=\"on_demand\"} 1"),
        "{metrics}"
    );
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_group_ids_are_checked_for_characters_and_length() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("keys-wg");
    let sidecar = start_sidecar(&server, config(&server, &dir, "")).await;
    let socket = sidecar.socket_path().unwrap();
    wait_ready(&socket).await;
    let long = "w".repeat(129);
    for wg in ["a%0aforged", "a%1b%5b31m", "a%20b", "a%2Fb", long.as_str()] {
        let (status, body) = uds_get(
            &socket,
            &format!("/v1/token/database?workspaceGroupID={wg}"),
        )
        .await;
        assert_eq!(status, 400, "{wg}: {body}");
    }
    assert_eq!(exchanges(&server), 0);
    let (status, body) = uds_get(
        &socket,
        "/v1/token/database?workspaceGroupID=3f0c9a8e-1b2c-4d5e-8f90-a1b2c3d4e5f6",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_keys_are_capped_and_metrics_stay_bounded() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("keys-cap");
    let mut cfg = config(
        &server,
        &dir,
        "[cache]\nmax_on_demand = 10\n[access]\ncold_fetches_per_second = 1000\ncold_fetches_per_caller_per_second = 1000\n",
    );
    cfg.tokens = vec![WarmToken {
        jwt_type: JwtType::Database,
        workspace_group_id: Some("wg-configured".into()),
        assume_role: None,
        gcp_audience: "https://authsvc.singlestore.com".into(),
        sink: None,
    }];
    let sidecar = start_sidecar(&server, cfg).await;
    let socket = sidecar.socket_path().unwrap();
    wait_ready(&socket).await;
    let (_, small) = uds_get(&socket, "/metrics").await;
    for i in 0..60 {
        let (status, body) = uds_get(
            &socket,
            &format!("/v1/token/database?workspaceGroupID=wg-{i}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, metrics) = uds_get(&socket, "/metrics").await;
    assert!(
        metrics.contains("s2iam_cached_tokens{kind=\"on_demand\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("s2iam_cached_tokens{kind=\"configured\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("workspace_group=\"wg-configured\""),
        "{metrics}"
    );
    assert!(
        !metrics.contains("wg-59"),
        "on-demand keys are not labels: {metrics}"
    );
    // The same size as before the 60 keys, give or take counter digits.
    assert!(
        metrics.len() < small.len() + 200,
        "metrics grew from {} to {} bytes",
        small.len(),
        metrics.len()
    );
    // The configured token survived the churn.
    let (status, _) = uds_get(&socket, "/v1/token/database?workspaceGroupID=wg-configured").await;
    assert_eq!(status, 200);
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_on_demand_key_is_negatively_cached_then_forgotten_not_retried() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("keys-negative");
    let sidecar = start_sidecar(
        &server,
        config(&server, &dir, "[cache]\nnegative_ttl = \"400ms\"\n"),
    )
    .await;
    let socket = sidecar.socket_path().unwrap();
    wait_ready(&socket).await;
    server.auth().update(|c| c.fail_verification = true);
    for _ in 0..10 {
        let (status, _) = uds_get(&socket, "/v1/token/database?workspaceGroupID=wg-bad").await;
        assert_eq!(status, 502);
    }
    assert_eq!(
        exchanges(&server),
        1,
        "one exchange, then the negative cache"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        exchanges(&server),
        1,
        "the failed key is not retried in the background"
    );
    let (_, metrics) = uds_get(&socket, "/metrics").await;
    assert!(
        metrics.contains("s2iam_cached_tokens{kind=\"on_demand\"} 0"),
        "forgotten: {metrics}"
    );
    assert!(
        !metrics.contains("s2iam_negative_cache_hits_total 0"),
        "{metrics}"
    );
    // Asked again after the negative TTL: one new attempt.
    server.auth().update(|c| c.fail_verification = false);
    let (status, _) = uds_get(&socket, "/v1/token/database?workspaceGroupID=wg-bad").await;
    assert_eq!(status, 200);
    assert_eq!(exchanges(&server), 2);
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_exchanges_are_rate_limited_with_retry_after_but_a_herd_counts_once() {
    let server = mocks(CloudConfig::gcp()).await;
    server
        .auth_faults()
        .add(FaultRule::latency("/auth/iam", Duration::from_millis(200)));
    let dir = temp_dir("keys-rate");
    let sidecar = start_sidecar(
        &server,
        config(
            &server,
            &dir,
            "[access]\ncold_fetches_per_second = 50\ncold_fetches_per_caller_per_second = 3\n",
        ),
    )
    .await;
    let socket = sidecar.socket_path().unwrap();
    wait_ready(&socket).await;

    // 200 concurrent callers of one cold key: one admission, one exchange.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let socket = socket.clone();
        tasks.spawn(async move {
            uds_get(
                &socket,
                "/v1/token/database?workspaceGroupID=wg-herd&format=raw",
            )
            .await
            .0
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap(), 200);
    }
    assert_eq!(exchanges(&server), 1);
    server.auth_faults().clear();

    // Distinct new keys from one caller: past the burst, 429 with Retry-After.
    let mut limited = None;
    for i in 0..10 {
        let r = uds_request(
            &socket,
            "GET",
            &format!("/v1/token/database?workspaceGroupID=wg-new-{i}"),
            &[],
        )
        .await
        .unwrap();
        if r.0 == 429 {
            limited = Some((i, r));
            break;
        }
    }
    let (i, (_, _, body)) = limited.expect("a 429 within 10 new keys");
    assert!(i <= 3, "limited after {i} new keys");
    assert!(body.contains("rate_limited"), "{body}");
    let raw = raw_get(&socket, "/v1/token/database?workspaceGroupID=wg-new-99").await;
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
    // Cached keys are never limited.
    for _ in 0..20 {
        let (status, _) = uds_get(&socket, "/v1/token/database?workspaceGroupID=wg-herd").await;
        assert_eq!(status, 200);
    }
    sidecar.shutdown().await;
    server.shutdown().await;
}

async fn raw_get(socket: &Path, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_with_a_valid_token_never_waits_for_a_blackholed_refresh() {
    let server = mocks(CloudConfig::gcp()).await;
    server
        .auth()
        .update(|c| c.token_expiry = Duration::from_secs(8));
    let dir = temp_dir("keys-nowait");
    let mut cfg = config(&server, &dir, "[auth]\ntimeout = \"5s\"\n");
    cfg.cache.policy.refresh_at = 0.2;
    cfg.cache.policy.jitter = 0.0;
    cfg.cache.policy.min_remaining = Duration::from_secs(7);
    cfg.tokens = vec![WarmToken {
        jwt_type: JwtType::Api,
        workspace_group_id: None,
        assume_role: None,
        gcp_audience: "https://authsvc.singlestore.com".into(),
        sink: None,
    }];
    let sidecar = start_sidecar(&server, cfg).await;
    let socket = sidecar.socket_path().unwrap();
    wait_ready(&socket).await;
    server.auth_faults().add(FaultRule::blackhole("/auth/iam"));
    // From 1 s on, the token has less than min_remaining left and is due: every
    // caller still gets it at once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..30 {
        let started = Instant::now();
        let (status, body) = uds_get(&socket, "/v1/token/api?format=raw").await;
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a caller waited {slowest:?}"
    );
    server.auth_faults().clear();
    sidecar.shutdown().await;
    server.shutdown().await;
}
