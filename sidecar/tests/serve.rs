//! The sidecar end to end, in-process, against the mock cloud (GCP) and the mock
//! auth service, over its real Unix socket and TCP listeners.

#[path = "../../tests/common/mod.rs"]
mod common;

/// The audit trail, in the same test binary (one link fewer).
#[path = "serve/audit.rs"]
mod audit;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    eventually, exchanges, mocks, provider_config, sidecar_config, start_sidecar, sub_of, temp_dir,
    uds_get, uds_request,
};
use s2iam::env::ManualClock;
use s2iam::exchange::JwtType;
use s2iam_sidecar::config::{ServeConfig, Sink, WarmToken};
use s2iam_sidecar::serve::Sidecar;
use s2iam_testserver::{CloudConfig, FaultRule, TestServer};

/// A sidecar config for tests: socket in `dir`, TCP on a random loopback port,
/// fast refresher ticks.
fn config(server: &TestServer, dir: &std::path::Path) -> ServeConfig {
    let mut c = sidecar_config(server, dir, "");
    c.listen.tcp = Some("127.0.0.1:0".parse().unwrap());
    c.cache.tick = Duration::from_millis(50);
    c.cache.policy.min_remaining = Duration::from_millis(500);
    c.cache.policy.retry_base = Duration::from_millis(100);
    c.cache.policy.retry_max = Duration::from_millis(400);
    c
}

fn warm(jwt_type: JwtType, wg: Option<&str>, sink: Option<PathBuf>) -> WarmToken {
    WarmToken {
        jwt_type,
        workspace_group_id: wg.map(String::from),
        assume_role: None,
        gcp_audience: "https://authsvc.singlestore.com".into(),
        sink: sink.map(|path| Sink {
            path,
            mode: 0o640,
            owner: None,
            group: None,
            on_change: None,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_of_a_cold_key_cause_one_exchange() {
    let server = mocks(CloudConfig::gcp()).await;
    server
        .auth_faults()
        .add(FaultRule::latency("/auth/iam", Duration::from_millis(300)));
    let dir = temp_dir("serve-1k");
    let sidecar = start_sidecar(&server, config(&server, &dir)).await;
    let socket = sidecar.socket_path().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let socket = socket.clone();
        tasks.spawn(async move {
            uds_get(
                &socket,
                "/v1/token/database?workspaceGroupID=wg-cold&format=raw",
            )
            .await
        });
    }
    let mut tokens = std::collections::HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let (status, body) = r.unwrap();
        assert_eq!(status, 200, "{body}");
        tokens.insert(body);
    }
    assert_eq!(tokens.len(), 1, "everyone got the same token");
    assert_eq!(exchanges(&server), 1, "exactly one upstream exchange");
    assert_eq!(server.auth().records().len(), 1);
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_a_valid_token_while_the_auth_service_fails_then_recovers() {
    let server = mocks(CloudConfig::gcp()).await;
    server
        .auth()
        .update(|c| c.token_expiry = Duration::from_secs(6));
    let dir = temp_dir("serve-outage");
    let mut cfg = config(&server, &dir);
    cfg.cache.policy.refresh_at = 0.4;
    cfg.cache.policy.jitter = 0.0;
    cfg.tokens = vec![warm(JwtType::Api, None, None)];
    let sidecar = start_sidecar(&server, cfg).await;
    let socket = sidecar.socket_path().unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || uds_get(
            &socket, "/readyz"
        )
        .await
        .0 == 200)
        .await
    );
    let (_, first) = uds_get(&socket, "/v1/token/api?format=raw").await;

    // Fail for 3.5 s: longer than the refresh interval (0.4 × 6 s = 2.4 s).
    server.auth().update(|c| c.fail_verification = true);
    let outage_start = Instant::now();
    let mut served = 0;
    while outage_start.elapsed() < Duration::from_millis(3500) {
        let (status, body) = uds_get(&socket, "/v1/token/api?format=raw").await;
        assert_eq!(
            status, 200,
            "a local request failed during the outage: {body}"
        );
        assert_eq!(body, first, "the still-valid token is served");
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served > 20);
    let failed = server
        .auth()
        .records()
        .iter()
        .filter(|r| r.status == 401)
        .count();
    assert!(failed >= 1, "refreshes were attempted during the outage");

    server.auth().update(|c| c.fail_verification = false);
    let recovered = eventually(Duration::from_secs(3), async || {
        let (status, body) = uds_get(&socket, "/v1/token/api?format=raw").await;
        status == 200 && body != first
    })
    .await;
    assert!(
        recovered,
        "a fresh token after the outage, before the old one expired"
    );
    let (_, metrics) = uds_get(&socket, "/metrics").await;
    assert!(
        metrics.contains("s2iam_refresh_failures_total"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("s2iam_refresh_failures_total 0"),
        "{metrics}"
    );
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_follows_the_monotonic_clock_whatever_the_wall_clock_does() {
    let server = mocks(CloudConfig::gcp()).await;
    server
        .auth()
        .update(|c| c.token_expiry = Duration::from_secs(3));
    let dir = temp_dir("serve-clock");
    let clock = Arc::new(ManualClock::default());
    let pcfg = provider_config(&server).with_clock(clock.clone());
    let mut cfg = config(&server, &dir);
    cfg.cache.policy.refresh_at = 0.95;
    let sidecar = Sidecar::start(cfg, pcfg).await.unwrap();
    let socket = sidecar.socket_path().unwrap();
    let (status, first) = uds_get(&socket, "/v1/token/api?format=raw").await;
    assert_eq!(status, 200);

    // The wall clock jumps two hours ahead: the token is still valid for ~3 s.
    clock.set_offset(7200);
    let (status, body) = uds_get(&socket, "/v1/token/api?format=raw").await;
    assert_eq!(
        (status, body.as_str()),
        (200, first.as_str()),
        "no spurious expiry"
    );

    // Then an hour back, and the auth service goes down: once 3 s have really
    // passed the token is expired even though the wall clock says it has an hour.
    clock.set_offset(-3600);
    server.auth().update(|c| c.fail_verification = true);
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let (status, body) = uds_get(&socket, "/v1/token/api?format=raw").await;
    assert_ne!(body, first, "an expired token was served");
    assert_eq!(status, 502, "{body}");
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_files_are_never_seen_partially_written() {
    let server = mocks(CloudConfig::gcp()).await;
    server
        .auth()
        .update(|c| c.token_expiry = Duration::from_secs(2));
    let dir = temp_dir("serve-sink");
    let sink = dir.join("tokens/database");
    std::fs::create_dir_all(sink.parent().unwrap()).unwrap();
    let mut cfg = config(&server, &dir);
    cfg.cache.policy.refresh_at = 0.3;
    cfg.cache.policy.min_remaining = Duration::from_millis(100);
    cfg.tokens = vec![warm(JwtType::Database, Some("wg-sink"), Some(sink.clone()))];
    let sidecar = start_sidecar(&server, cfg).await;
    assert!(eventually(Duration::from_secs(10), async || sink.exists()).await);

    let reader = {
        let sink = sink.clone();
        std::thread::spawn(move || {
            let mut seen = std::collections::HashSet::new();
            let started = Instant::now();
            let mut reads = 0u32;
            while started.elapsed() < Duration::from_millis(3000) {
                let text = std::fs::read_to_string(&sink).expect("the sink always exists");
                let parts: Vec<&str> = text.split('.').collect();
                assert_eq!(parts.len(), 3, "partial or garbled token: {text:?}");
                assert!(sub_of(&text).is_some(), "undecodable token: {text:?}");
                seen.insert(text);
                reads += 1;
            }
            (seen.len(), reads)
        })
    };
    let (distinct, reads) = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert!(reads > 100, "the reader polled ({reads} reads)");
    assert!(
        distinct >= 2,
        "the token was rewritten during the test ({distinct} distinct)"
    );
    let mode = std::fs::metadata(&sink).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    // Listed after shutdown: while the sidecar runs, a rewrite in progress has its
    // temporary file for a moment (tokens here live 2 s, so rewrites are frequent).
    sidecar.shutdown().await;
    let leftovers: Vec<_> = std::fs::read_dir(sink.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "database")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn local_api_routes_formats_and_errors() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("serve-api");
    let mut cfg = config(&server, &dir);
    cfg.access.workspace_groups = vec!["wg-ok".into()];
    let sidecar = start_sidecar(&server, cfg).await;
    let socket = sidecar.socket_path().unwrap();

    let (status, body) = uds_get(&socket, "/v1/token/database?workspaceGroupID=wg-ok").await;
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let jwt = doc["token"].as_str().unwrap();
    assert_eq!(doc["jwt_type"], "database");
    assert_eq!(doc["workspace_group_id"], "wg-ok");
    assert!(doc["expires_in"].as_u64().unwrap() > 3000);
    assert!(doc["expires_at"].as_str().unwrap().ends_with('Z'));

    let (status, ctype, raw) = uds_request(
        &socket,
        "GET",
        "/v1/token/database?workspaceGroupID=wg-ok",
        &[("accept", "text/plain")],
    )
    .await
    .unwrap();
    assert_eq!((status, raw.as_str()), (200, jwt));
    assert!(ctype.starts_with("text/plain"));

    for (path, want) in [
        ("/v1/token/database", 400),
        ("/v1/token/database?workspaceGroupID=wg-other", 403),
        ("/v1/token/api?workspaceGroupID=x", 400),
        ("/v1/token/api?bogus=1", 400),
        ("/v1/token/api?format=xml", 400),
        (
            "/v1/token/api?assumeRole=arn:aws:iam::123456789012:role/x",
            403,
        ),
        ("/v1/token/api?format=raw&format=json", 400),
        ("/v2/nothing", 404),
        ("/", 404),
    ] {
        let (status, body) = uds_get(&socket, path).await;
        assert_eq!(status, want, "{path}: {body}");
        let doc: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
        assert!(
            doc["error"].is_string() && doc["message"].is_string(),
            "{path}: {body}"
        );
    }
    let (status, _, _) = uds_request(&socket, "POST", "/v1/token/api", &[])
        .await
        .unwrap();
    assert_eq!(status, 405);

    let (status, body) = uds_get(&socket, "/v1/identity").await;
    assert_eq!(status, 200, "{body}");
    let id: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(id["provider"], "gcp");
    assert!(!body.contains("eyJ"), "no token in the identity document");

    assert_eq!(uds_get(&socket, "/healthz").await.0, 200);
    let (_, metrics) = uds_get(&socket, "/metrics").await;
    assert!(
        metrics.contains("s2iam_requests_total{route=\"/v1/token/database\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("s2iam_upstream_exchanges_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("s2iam_cache_hits_total 1"), "{metrics}");
    // An on-demand token is counted, not labelled (issue 13: series must not
    // grow with what callers ask for); configured tokens get per-token series.
    assert!(
        metrics.contains("s2iam_cached_tokens{kind=\"on_demand\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("wg-ok"), "{metrics}");
    assert!(!metrics.contains(jwt), "no token in metrics");
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn readiness_waits_for_identity_and_warm_tokens() {
    let server = mocks(CloudConfig::gcp()).await;
    server.auth().update(|c| c.fail_verification = true);
    let dir = temp_dir("serve-ready");
    let mut cfg = config(&server, &dir);
    cfg.tokens = vec![warm(JwtType::Database, Some("wg-1"), None)];
    let sidecar = start_sidecar(&server, cfg).await;
    let socket = sidecar.socket_path().unwrap();
    assert_eq!(
        uds_get(&socket, "/healthz").await.0,
        200,
        "alive from the start"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = uds_get(&socket, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("database/wg-1"), "{body}");
    server.auth().update(|c| c.fail_verification = false);
    assert!(
        eventually(Duration::from_secs(10), async || uds_get(
            &socket, "/readyz"
        )
        .await
        .0 == 200)
        .await,
        "ready once the configured token is warm"
    );
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn readiness_reports_detection_failure() {
    let server = mocks(CloudConfig::none()).await;
    let dir = temp_dir("serve-nocloud");
    let mut cfg = config(&server, &dir);
    cfg.client.detect_timeout = Duration::from_millis(500);
    let sidecar = start_sidecar(&server, cfg).await;
    let socket = sidecar.socket_path().unwrap();
    let ok = eventually(Duration::from_secs(10), async || {
        let (status, body) = uds_get(&socket, "/readyz").await;
        status == 503 && body.contains("no cloud provider detected")
    })
    .await;
    assert!(ok);
    let (status, body) = uds_get(&socket, "/v1/token/api").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("identity_unavailable"), "{body}");
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn unix_socket_mode_stale_file_and_removal() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("serve-socket");
    let path = dir.join("s2iam.sock");
    // A socket file left by a crashed process.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let sidecar = start_sidecar(&server, config(&server, &dir)).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    assert_eq!(uds_get(&path, "/healthz").await.0, 200);

    // A second sidecar on the same live socket refuses to start.
    let err = Sidecar::start(config(&server, &dir), provider_config(&server))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("another process"), "{err}");

    sidecar.shutdown().await;
    assert!(!path.exists(), "socket file removed on shutdown");

    // A regular file is never replaced.
    std::fs::write(&path, "not a socket").unwrap();
    let err = Sidecar::start(config(&server, &dir), provider_config(&server))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    server.shutdown().await;
}

#[tokio::test]
async fn unix_socket_peer_uid_allow_list() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("serve-uid");
    let my_uid = std::fs::metadata(&dir).unwrap().uid();
    let mut cfg = config(&server, &dir);
    cfg.listen.allowed_uids = vec![my_uid + 1];
    let sidecar = start_sidecar(&server, cfg).await;
    let (status, body) = uds_get(&sidecar.socket_path().unwrap(), "/v1/token/api").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(exchanges(&server), 0, "refused before any upstream call");
    sidecar.shutdown().await;

    let mut cfg = config(&server, &dir);
    cfg.listen.allowed_uids = vec![my_uid];
    let sidecar = start_sidecar(&server, cfg).await;
    assert_eq!(
        uds_get(&sidecar.socket_path().unwrap(), "/v1/token/api")
            .await
            .0,
        200
    );
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_listener_checks_host_and_bearer_token() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("serve-tcp");
    let token_file = dir.join("tcp-token");
    std::fs::write(&token_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut cfg = config(&server, &dir);
    cfg.listen.tcp_token_file = Some(token_file);
    let sidecar = start_sidecar(&server, cfg).await;
    let base = format!("http://{}", sidecar.tcp_addr().unwrap());
    let http = reqwest::Client::new();

    let resp = http
        .get(format!("{base}/v1/token/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(format!("{base}/v1/token/api"))
        .bearer_auth("wrong-wrong-wrong-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(format!("{base}/v1/token/api?format=raw"))
        .bearer_auth("0123456789abcdef0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap().split('.').count(), 3);
    let resp = http
        .get(format!("{base}/healthz"))
        .header("host", "attacker.example")
        .bearer_auth("0123456789abcdef0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "DNS-rebinding Host refused");
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_short_tcp_token_file_is_refused() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("serve-tcp-short");
    let token_file = dir.join("tcp-token");
    std::fs::write(&token_file, "short").unwrap();
    let mut cfg = config(&server, &dir);
    cfg.listen.tcp_token_file = Some(token_file);
    let err = Sidecar::start(cfg, provider_config(&server))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("at least 16"), "{err}");
    server.shutdown().await;
}

/// A token already cached is answered before the router (sidecar/src/serve/hot.rs): the
/// same status, headers and body as the router's first answer, counted the same,
/// and never past a caller check (a cached token is refused to a wrong Host or
/// bearer token, and the refusal is the router's).
#[tokio::test]
async fn a_cached_token_is_answered_as_the_router_answers_it_and_only_to_allowed_callers() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("serve-hot");
    let token_file = dir.join("tcp-token");
    std::fs::write(&token_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut cfg = config(&server, &dir);
    cfg.listen.tcp_token_file = Some(token_file);
    let sidecar = start_sidecar(&server, cfg).await;
    let socket = sidecar.socket_path().unwrap();
    let base = format!("http://{}", sidecar.tcp_addr().unwrap());
    let bearer = "0123456789abcdef0123456789abcdef";
    let http = reqwest::Client::new();

    // The first ask fetches (the router's path); the second is a cache hit.
    let path = "/v1/token/database?workspaceGroupID=wg-hot";
    let (status, ctype, first) = uds_request(&socket, "GET", path, &[]).await.unwrap();
    assert_eq!(
        (status, ctype.as_str()),
        (200, "application/json"),
        "{first}"
    );
    let (status, ctype, second) = uds_request(&socket, "GET", path, &[]).await.unwrap();
    assert_eq!(
        (status, ctype.as_str()),
        (200, "application/json"),
        "{second}"
    );
    assert!(first.ends_with("}\n") && second.ends_with("}\n"));
    let (a, b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&first).unwrap(),
        serde_json::from_str(&second).unwrap(),
    );
    for field in ["token", "expires_at", "jwt_type", "workspace_group_id"] {
        assert_eq!(a[field], b[field], "{field}");
    }
    let jwt = a["token"].as_str().unwrap();
    for headers in [&[][..], &[("accept", "text/plain")][..]] {
        let raw_path = if headers.is_empty() {
            format!("{path}&format=raw")
        } else {
            path.to_string()
        };
        let (status, ctype, body) = uds_request(&socket, "GET", &raw_path, headers)
            .await
            .unwrap();
        assert_eq!(
            (status, ctype.as_str(), body.as_str()),
            (200, "text/plain; charset=utf-8", jwt)
        );
    }

    // Over TCP the cached token needs a loopback Host and the bearer token.
    let resp = http
        .get(format!("{base}{path}&format=raw"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        jwt.len().to_string()
    );
    assert_eq!(resp.text().await.unwrap(), jwt);
    let resp = http
        .get(format!("{base}{path}&format=raw"))
        .header("host", "attacker.example")
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "DNS-rebinding Host refused");
    assert!(!resp.text().await.unwrap().contains(jwt));
    let resp = http
        .get(format!("{base}{path}&format=raw"))
        .bearer_auth("wrong-wrong-wrong-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Escapes in the query are decoded as the router decodes them.
    let (status, _, body) = uds_request(&socket, "GET", &format!("{path}&format=r%61w"), &[])
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, jwt));

    let (_, metrics) = uds_get(&socket, "/metrics").await;
    // 1 fetch; 6 answered 200 (1 miss, 5 hits); the refused callers are not
    // counted by route, on either path.
    for want in [
        "s2iam_requests_total{route=\"/v1/token/database\",status=\"200\"} 6",
        "s2iam_upstream_exchanges_total 1",
        "s2iam_cache_hits_total 5",
    ] {
        assert!(metrics.contains(want), "{want}\n{metrics}");
    }
    sidecar.shutdown().await;
    server.shutdown().await;
}
