//! `[[api_proxy]]` end to end: the sidecar in-process with its API proxies on real
//! loopback sockets, in front of the mock Data API and Management API, with tokens
//! from the mock auth service (GCP identity).

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/tls_front.rs"]
mod tls_front;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, mocks, provider_config, temp_dir, uds_get, uds_request};
use s2iam::env::Env;
use s2iam_sidecar::config::api_proxy::ProxyToken;
use s2iam_sidecar::config::{ApiProxyConfig, ServeConfig, ServeOverrides};
use s2iam_sidecar::serve::Sidecar;
use s2iam_testserver::api::fingerprint;
use s2iam_testserver::{ApiConfig, CloudConfig, FaultRule, MockApiServer, TestServer};
use serde_json::Value;

const WG: &str = "wg-1";

struct World {
    server: TestServer,
    api: MockApiServer,
    sidecar: Sidecar,
}

impl World {
    async fn start(tweak: impl FnOnce(&mut ServeConfig, &TestServer)) -> Self {
        let server = mocks(CloudConfig::gcp()).await;
        let api = MockApiServer::start(
            ApiConfig::default(),
            server.auth().key().clone(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let dir = temp_dir("api_proxy");
        let mut c = ServeConfig::from_toml(
            "",
            &Env::from_pairs::<&str, &str>([]),
            &ServeOverrides::default(),
        )
        .unwrap();
        c.listen.socket = Some(dir.join("s2iam.sock"));
        c.client.server_url = Some(server.exchange_url_template());
        c.client.allow_http = true;
        c.cache.tick = Duration::from_millis(50);
        c.cache.policy.min_remaining = Duration::from_millis(500);
        c.cache.policy.retry_base = Duration::from_millis(100);
        c.cache.policy.retry_max = Duration::from_millis(400);
        let any = loopback_any();
        c.api_proxies = vec![
            ApiProxyConfig::new(
                "data",
                any,
                &api.url(),
                ProxyToken::Database {
                    workspace_group_id: WG.into(),
                },
            ),
            ApiProxyConfig::new("mgmt", any, &api.url(), ProxyToken::Api),
        ];
        tweak(&mut c, &server);
        let sidecar = Sidecar::start(c, provider_config(&server)).await.unwrap();
        Self {
            server,
            api,
            sidecar,
        }
    }

    fn url(&self, proxy: &str, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.sidecar.api_proxy_addr(proxy).unwrap()
        )
    }

    /// The sidecar's current token, from its local API.
    async fn token(&self, path: &str) -> String {
        let (status, body) = uds_get(&self.sidecar.socket_path().unwrap(), path).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn metrics(&self) -> String {
        uds_get(&self.sidecar.socket_path().unwrap(), "/metrics")
            .await
            .1
    }

    async fn stop(self) {
        self.sidecar.shutdown().await;
        self.api.shutdown().await;
        self.server.shutdown().await;
    }
}

fn loopback_any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn query(w: &World, proxy: &str, sql: &str) -> (u16, String) {
    let resp = http()
        .post(w.url(proxy, "/api/v2/query/rows"))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_with_the_database_jwt_and_never_the_clients_authorization() {
    let w = World::start(|_, _| {}).await;
    let resp = http()
        .post(w.url("data", "/api/v2/query/rows?trace=1"))
        .header("authorization", "Bearer client-secret-never-forwarded")
        .header("x-request-id", "req-42")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "hop-by-hop")
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"results": [{"rows": [{"1": 1}]}]}));

    let jwt = w
        .token(&format!(
            "/v1/token/database?workspaceGroupID={WG}&format=raw"
        ))
        .await;
    let records = w.api.api().records();
    assert_eq!(records.len(), 1, "{records:?}");
    let seen = &records[0];
    assert_eq!(seen.path, "/api/v2/query/rows");
    assert_eq!(seen.query, "trace=1");
    assert_eq!(seen.authorization_headers, 1, "exactly one Authorization");
    assert_eq!(
        seen.bearer_sha256.as_deref(),
        Some(fingerprint(&jwt).as_str())
    );
    assert_ne!(
        seen.bearer_sha256.as_deref(),
        Some(fingerprint("client-secret-never-forwarded").as_str())
    );
    assert_eq!(seen.claims.as_ref().unwrap()["workspaceGroupID"], WG);
    assert_eq!(seen.headers["x-request-id"], "req-42");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert!(
        !seen.headers.contains_key("x-hop"),
        "a header named by Connection is hop-by-hop: {:?}",
        seen.headers
    );
    assert!(seen.headers["host"].starts_with("127.0.0.1:"));
    assert_eq!(
        seen.headers["host"],
        w.api.addr().to_string(),
        "Host is the upstream's"
    );

    let (status, body) = query(&w, "data", "SELECT CURRENT_USER()").await;
    assert_eq!(status, 200, "{body}");
    let sub = common::sub_of(&jwt).unwrap();
    assert!(body.contains(&format!("{sub}@%")), "{body}");

    let resp = http()
        .post(w.url("data", "/api/v2/exec"))
        .json(&serde_json::json!({"sql": "CREATE TABLE t (a INT)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({"lastInsertId": 0, "rowsAffected": 0})
    );

    // The upstream's errors pass through unchanged.
    let (status, body) = query(&w, "data", "DROP DATABASE x").await;
    assert_eq!(status, 400);
    assert!(body.starts_with("Error 1149:"), "{body}");

    let metrics = w.metrics().await;
    assert!(
        metrics.contains("s2iam_api_proxy_requests_total{proxy=\"data\",class=\"2xx\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("s2iam_api_proxy_requests_total{proxy=\"data\",class=\"4xx\"} 1"));
    assert!(
        metrics.contains("s2iam_api_proxy_bytes_total{proxy=\"data\",direction=\"downstream\"}")
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_gets_the_api_jwt_and_each_api_refuses_the_other_token() {
    let w = World::start(|_, _| {}).await;
    let resp = http()
        .get(w.url("mgmt", "/v1/workspaceGroups"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let groups: Value = resp.json().await.unwrap();
    assert_eq!(groups[0]["workspaceGroupID"], WG);
    let api_jwt = w.token("/v1/token/api?format=raw").await;
    let last = w.api.api().records().pop().unwrap();
    assert_eq!(last.bearer_sha256.unwrap(), fingerprint(&api_jwt));

    // The Data API proxy's database JWT is refused by the Management API, and the
    // other way round: each proxy really sends its own kind of token.
    let resp = http()
        .get(w.url("data", "/v1/workspaceGroups"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, body) = query(&w, "mgmt", "SELECT 1").await;
    assert_eq!(status, 401);
    assert!(body.contains("database JWT"), "{body}");

    // Straight to the mock: no token, a forged one.
    let direct = format!("{}/api/v2/query/rows", w.api.url());
    for auth in [None, Some("Bearer not-a-jwt")] {
        let mut req = http()
            .post(&direct)
            .json(&serde_json::json!({"sql": "SELECT 1"}));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_share_one_exchange() {
    let w = World::start(|_, _| {}).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let url = w.url("data", "/api/v2/query/rows");
        tasks.spawn(async move {
            http()
                .post(url)
                .json(&serde_json::json!({"sql": "SELECT 1"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap(), 200);
    }
    let database_exchanges = w
        .server
        .auth()
        .records()
        .iter()
        .filter(|r| r.jwt_type == "database")
        .count();
    assert_eq!(database_exchanges, 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_a_refresh_carries_the_new_token() {
    let w = World::start(|c, server| {
        c.cache.policy.refresh_at = 0.3;
        c.cache.policy.jitter = 0.0;
        server
            .auth()
            .update(|a| a.token_expiry = Duration::from_secs(6));
    })
    .await;
    let path = format!("/v1/token/database?workspaceGroupID={WG}&format=raw");
    let first = w.token(&path).await;
    let (status, _) = query(&w, "data", "SELECT 1").await;
    assert_eq!(status, 200);
    let before = w.api.api().records().pop().unwrap().bearer_sha256.unwrap();
    assert_eq!(before, fingerprint(&first));
    // Wait for the background refresh, then send another request.
    let mut second = String::new();
    let refreshed = eventually(Duration::from_secs(15), async || {
        second = w.token(&path).await;
        second != first
    })
    .await;
    assert!(refreshed, "the sidecar refreshed its token");
    let (status, _) = query(&w, "data", "SELECT 1").await;
    assert_eq!(status, 200);
    let after = w.api.api().records().pop().unwrap().bearer_sha256.unwrap();
    assert_eq!(after, fingerprint(&second), "the new token was forwarded");
    assert_ne!(after, before);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_unavailable_is_a_503_saying_why() {
    let w = World::start(|_, server| server.auth().update(|a| a.fail_verification = true)).await;
    let (status, body) = query(&w, "data", "SELECT 1").await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "token_unavailable");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("database/wg-1"), "{message}");
    assert!(
        message.contains("401") || message.contains("verification"),
        "{message}"
    );
    assert!(
        w.api.api().records().is_empty(),
        "nothing reached the upstream"
    );
    let metrics = w.metrics().await;
    assert!(
        metrics.contains("s2iam_api_proxy_upstream_errors_total{proxy=\"data\",reason=\"token\"}"),
        "{metrics}"
    );
    // Once the auth service recovers, requests go through.
    w.server.auth().update(|c| c.fail_verification = false);
    assert!(
        eventually(Duration::from_secs(10), async || query(
            &w, "data", "SELECT 1"
        )
        .await
        .0 == 200)
        .await
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_502_and_a_slow_upstream_a_504() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let w = World::start(|c, _| {
        let mut down = ApiProxyConfig::new(
            "down",
            loopback_any(),
            &format!("http://{closed}"),
            ProxyToken::Api,
        );
        down.connect_timeout = Duration::from_secs(2);
        c.api_proxies.push(down);
        c.api_proxies[0].timeout = Duration::from_secs(1);
    })
    .await;
    let started = std::time::Instant::now();
    let resp = http()
        .get(w.url("down", "/v1/workspaceGroups"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unreachable");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("cannot connect to http://{closed}")),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    w.api.faults().add(FaultRule::latency(
        "/api/v2/query/rows",
        Duration::from_secs(4),
    ));
    let (status, body) = query(&w, "data", "SELECT 1").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("upstream_timeout"), "{body}");
    let metrics = w.metrics().await;
    assert!(
        metrics
            .contains("s2iam_api_proxy_upstream_errors_total{proxy=\"down\",reason=\"connect\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("s2iam_api_proxy_upstream_errors_total{proxy=\"data\",reason=\"timeout\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("s2iam_api_proxy_requests_total{proxy=\"down\",class=\"5xx\"} 1"));
    w.stop().await;
}

/// One raw HTTP/1.1 request, to send a Host header no client library would.
fn raw_status(addr: SocketAddr, host: &str) -> String {
    raw_request(addr, "GET /api/v2/ping", host)
}

fn raw_request(addr: SocketAddr, request_line: &str, host: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{request_line} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_host_header_is_refused() {
    let w = World::start(|_, _| {}).await;
    let addr = w.sidecar.api_proxy_addr("data").unwrap();
    let refused = tokio::task::spawn_blocking(move || raw_status(addr, "evil.example:80"))
        .await
        .unwrap();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("loopback"), "{refused}");
    for host in ["localhost:1", "127.0.0.1", "[::1]:8"] {
        let ok = tokio::task::spawn_blocking(move || raw_status(addr, host))
            .await
            .unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{host}: {ok}");
        assert!(ok.ends_with("pong"), "{ok}");
    }
    assert_eq!(
        w.api.requests().count("/api/v2/ping"),
        3,
        "the refused request never reached the upstream"
    );
    let tunnel = tokio::task::spawn_blocking(move || {
        raw_request(addr, "CONNECT example.com:443", "127.0.0.1")
    })
    .await
    .unwrap();
    assert!(tunnel.starts_with("HTTP/1.1 405"), "{tunnel}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_listener_forwards_too() {
    let dir = temp_dir("apiproxy-uds");
    let path = dir.join("mgmt.sock");
    let w = World::start(|c, _| {
        c.api_proxies[1].socket = Some(path.clone());
        c.api_proxies[1].listen = None;
    })
    .await;
    let socket = w.sidecar.api_proxy_socket("mgmt").unwrap();
    assert_eq!(socket, path);
    let (status, _, body) = uds_request(&socket, "GET", "/v1/workspaceGroups", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(WG));
    w.stop().await;
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

/// `n` bytes of zeros, in 64 KiB frames, generated as they are read.
struct Zeros(u64);

impl http_body::Body for Zeros {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        let n = self.0.min(64 * 1024);
        self.0 -= n;
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
            0u8;
            n as usize
        ])))))
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_without_buffering() {
    const BIG: u64 = 64 << 20;
    let w = World::start(|_, _| {}).await;

    // Download: the first bytes arrive while the upstream is held after its first
    // chunk, so the proxy cannot be waiting for the whole body.
    w.api.api().hold_streams(true);
    let rows = 600_000; // about 75 MiB of JSON
    let send = http()
        .post(w.url("data", "/api/v2/query/rows"))
        .json(&serde_json::json!({ "sql": format!("SELECT * FROM large LIMIT {rows}") }))
        .send();
    let mut resp = tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("response headers arrive while the upstream is still held")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("the first chunk arrives while the upstream is still held")
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b"{\"results\":[{\"rows\":["));
    w.api.api().hold_streams(false);

    let baseline = rss_bytes();
    let mut peak = baseline;
    let mut total = first.len() as u64;
    let mut tail = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        total += chunk.len() as u64;
        tail = chunk.to_vec();
        peak = peak.max(rss_bytes());
    }
    assert!(total > BIG, "{total} bytes");
    assert!(tail.ends_with(b"]}]}"));
    let growth = peak.saturating_sub(baseline);
    println!("download: {total} bytes, RSS growth {} KiB", growth / 1024);
    assert!(
        growth < 32 << 20,
        "RSS grew by {growth} bytes while {total} bytes streamed through"
    );

    // Upload: 64 MiB generated on the fly, counted by the mock as it streams.
    let baseline = rss_bytes();
    let resp = http()
        .post(w.url("data", "/_mock/upload"))
        .body(reqwest::Body::wrap(Zeros(BIG)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["bytes"], BIG);
    let growth = rss_bytes().saturating_sub(baseline);
    assert!(growth < 32 << 20, "RSS grew by {growth} bytes on upload");

    let metrics = w.metrics().await;
    let counted = |direction: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "s2iam_api_proxy_bytes_total{{proxy=\"data\",direction=\"{direction}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(counted("downstream") >= total, "{metrics}");
    assert!(counted("upstream") >= BIG, "{metrics}");
    w.stop().await;
}

/// A TLS terminator in front of the mock APIs, with a certificate for `names`
/// issued by a fresh CA: (its https URL, the CA's PEM).
async fn https_front(upstream: SocketAddr, names: &[&str]) -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "s2iam test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .unwrap();
    let addr = tls_front::tls_front(leaf.der().clone(), &leaf_key, upstream).await;
    (format!("https://{addr}"), ca_cert.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_verified_against_the_ca_file() {
    let server = mocks(CloudConfig::gcp()).await;
    let api = MockApiServer::start(
        ApiConfig::default(),
        server.auth().key().clone(),
        loopback_any(),
    )
    .await
    .unwrap();
    let (good_url, good_ca) = https_front(api.addr(), &["127.0.0.1", "localhost"]).await;
    let (wrong_name_url, wrong_name_ca) = https_front(api.addr(), &["db.example.com"]).await;
    let dir = temp_dir("apiproxy-tls");
    std::fs::write(dir.join("good-ca.pem"), &good_ca).unwrap();
    std::fs::write(dir.join("wrong-name-ca.pem"), &wrong_name_ca).unwrap();
    std::fs::write(dir.join("not-pem.pem"), "hello").unwrap();

    let proxy = |name: &str, url: &str, ca: Option<&str>| {
        let mut p = ApiProxyConfig::new(
            name,
            loopback_any(),
            url,
            ProxyToken::Database {
                workspace_group_id: WG.into(),
            },
        );
        p.ca_file = ca.map(|f| dir.join(f));
        p
    };
    let config = |proxies: Vec<ApiProxyConfig>| {
        let mut c = ServeConfig::from_toml(
            "",
            &Env::from_pairs::<&str, &str>([]),
            &ServeOverrides::default(),
        )
        .unwrap();
        c.listen.socket = Some(dir.join(format!("s2iam-{}.sock", rand::random::<u32>())));
        c.client.server_url = Some(server.exchange_url_template());
        c.client.allow_http = true; // for the mock auth service only: the upstreams are https
        c.api_proxies = proxies;
        c
    };
    let sidecar = Sidecar::start(
        config(vec![
            proxy("trusted", &good_url, Some("good-ca.pem")),
            proxy("unknown-ca", &good_url, None),
            proxy("wrong-name", &wrong_name_url, Some("wrong-name-ca.pem")),
        ]),
        provider_config(&server),
    )
    .await
    .unwrap();
    let call = |name: &str| {
        let url = format!(
            "http://{}/api/v2/query/rows",
            sidecar.api_proxy_addr(name).unwrap()
        );
        async move {
            let resp = http()
                .post(url)
                .json(&serde_json::json!({"sql": "SELECT 1"}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (status, body) = call("trusted").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.api().records().len(), 1, "one request reached the API");
    for name in ["unknown-ca", "wrong-name"] {
        let (status, body) = call(name).await;
        println!("{name}: {body}");
        assert_eq!(status, 502, "{name}: {body}");
        assert!(body.contains("certificate"), "{name}: {body}");
    }
    assert_eq!(
        api.api().records().len(),
        1,
        "no request (and no token) crossed an unverified connection"
    );
    sidecar.shutdown().await;

    let err = Sidecar::start(
        config(vec![proxy("bad-ca", &good_url, Some("not-pem.pem"))]),
        provider_config(&server),
    )
    .await
    .err()
    .expect("a ca_file without a certificate is refused at start");
    let message = err.to_string();
    assert!(
        message.contains("api_proxy bad-ca") && message.contains("not-pem.pem"),
        "{message}"
    );
    api.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_wait_for_a_free_slot() {
    let w = World::start(|c, _| c.api_proxies[0].max_connections = 2).await;
    let addr = w.sidecar.api_proxy_addr("data").unwrap();
    // Two idle keep-alive connections take both slots.
    let idle1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let idle2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = tokio::task::spawn_blocking(move || raw_status(addr, "127.0.0.1"));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!third.is_finished(), "a third connection is not served yet");
    drop(idle1);
    let answer = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle2);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_streaming_response_finish_and_refuses_new_connections() {
    let w = World::start(|_, _| {}).await;
    let addr = w.sidecar.api_proxy_addr("data").unwrap();
    w.api.api().hold_streams(true);
    let mut resp = http()
        .post(format!("http://{addr}/api/v2/query/rows"))
        .json(&serde_json::json!({"sql": "SELECT * FROM large LIMIT 20000"}))
        .send()
        .await
        .unwrap();
    let mut total = resp.chunk().await.unwrap().unwrap().len();
    let World {
        server,
        api,
        sidecar,
    } = w;
    let stopping = tokio::spawn(sidecar.shutdown());
    assert!(
        eventually(Duration::from_secs(5), async || {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "the listener closes at once"
    );
    api.api().hold_streams(false);
    let mut tail = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        total += chunk.len();
        tail = chunk.to_vec();
    }
    assert!(tail.ends_with(b"]}]}"), "the in-flight response completed");
    assert!(total > 2_000_000, "{total}");
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("shutdown finishes once the response is done")
        .unwrap();
    api.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_breaks_off_mid_body_is_an_error_for_the_client_not_a_short_answer() {
    let w = World::start(|_, _| {}).await;
    w.api.api().hold_streams(true);
    let mut resp = http()
        .post(w.url("data", "/api/v2/query/rows"))
        .json(&serde_json::json!({"sql": "SELECT * FROM large LIMIT 20000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.chunk().await.unwrap().is_some());
    w.api.api().break_streams();
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("no hang");
    assert!(
        rest.is_err(),
        "the client sees the body fail, not a clean end"
    );
    let metrics = w.metrics().await;
    assert!(
        metrics.contains("s2iam_api_proxy_upstream_errors_total{proxy=\"data\",reason=\"body\"} 1"),
        "{metrics}"
    );
    // The proxy is fine afterwards.
    w.api.api().hold_streams(false);
    assert_eq!(query(&w, "data", "SELECT 1").await.0, 200);
    w.stop().await;
}

/// Issue 18, item 8: an upstream with a base path (`.../api`) is a confinement.
/// No spelling of `..` (plain, percent-encoded, with encoded slashes or
/// backslashes, behind double slashes) reaches `/v1/workspaceGroups` with the
/// proxy's token; `OPTIONS *` and absolute-form targets are a 400, not
/// `<upstream>*`. Paths that stay inside are normalised and forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_confined_to_the_upstreams_base_path() {
    let w = World::start(|c, _| {
        for p in &mut c.api_proxies {
            p.upstream = format!("{}/api", p.upstream);
        }
    })
    .await;
    let addr = w.sidecar.api_proxy_addr("mgmt").unwrap();
    let raw = move |line: String| {
        tokio::task::spawn_blocking(move || raw_request(addr, &line, "127.0.0.1"))
    };
    for inside in [
        "GET /v2/ping",
        "GET /v2/./x/../ping",
        "GET //v2//ping",
        "GET /v1/../v2/ping",
    ] {
        let answer = raw(inside.to_string()).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{inside}: {answer}");
        assert!(answer.ends_with("pong"), "{inside}: {answer}");
    }
    let absolute = format!("GET http://{}/v1/workspaceGroups", w.api.addr());
    let escapes = [
        "GET /../v1/workspaceGroups",
        "GET /v2/../../v1/workspaceGroups",
        "GET //../v1/workspaceGroups",
        "GET /%2e%2e/v1/workspaceGroups",
        "GET /%2E%2e/v1/workspaceGroups",
        "GET /.%2e/v1/workspaceGroups",
        "GET /..%2fv1/workspaceGroups",
        "GET /v2/%2f..%2f..%2fv1/workspaceGroups",
        "GET /..%5cv1/workspaceGroups",
        "GET /..\\v1/workspaceGroups",
        "OPTIONS *",
        absolute.as_str(),
    ];
    for attack in escapes {
        let answer = raw(attack.to_string()).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{attack}: {answer}");
    }
    // Ours, not hyper's: the JSON error says why.
    let answer = raw("OPTIONS *".into()).await.unwrap();
    assert!(
        answer.contains("bad_request_target") && answer.contains("origin-form"),
        "{answer}"
    );
    let answer = raw("GET /%2e%2e/v1/workspaceGroups".into()).await.unwrap();
    assert!(answer.contains("base path"), "{answer}");
    let reached: Vec<String> = w
        .api
        .requests()
        .entries()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert!(
        reached.iter().all(|p| p == "/api/v2/ping"),
        "only paths under the base path reached the upstream: {reached:?}"
    );
    assert_eq!(w.api.requests().count("/api/v2/ping"), 4);
    w.stop().await;
}
