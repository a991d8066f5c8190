//! OpenTelemetry traces end to end: the sidecar in-process on real loopback
//! sockets, exporting OTLP/HTTP JSON to the test server's OTLP receiver; the
//! spans, their parentage and attributes as the receiver got them, and no
//! secret anywhere in what was exported.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{mocks, provider_config, temp_dir, uds_get, wait_ready};
use mysql_async::prelude::Queryable;
use s2iam::env::Env;
use s2iam_sidecar::config::api_proxy::{ApiProxyConfig, ProxyToken};
use s2iam_sidecar::config::{ServeConfig, ServeOverrides};
use s2iam_sidecar::serve::Sidecar;
use s2iam_testserver::{
    ApiConfig, CloudConfig, MockApiServer, MockOtlpServer, ReceivedSpan, SingleStoreConfig,
    TestServer, TestServerConfig,
};

fn config(
    server: &TestServer,
    dir: &std::path::Path,
    toml: &str,
    env: &[(&str, &str)],
) -> ServeConfig {
    let mut c = ServeConfig::from_toml(
        toml,
        &Env::from_pairs(env.iter().copied()),
        &ServeOverrides::default(),
    )
    .expect("test config parses");
    c.listen.socket = Some(dir.join("s2iam.sock"));
    c.client.server_url = Some(server.exchange_url_template());
    c.client.allow_http = true;
    c
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn children<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    name: &str,
) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| {
            s.name == name
                && s.trace_id == parent.trace_id
                && s.parent_span_id.as_deref() == Some(parent.span_id.as_str())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_identity_exchange_and_refresh_spans_with_their_parentage_and_no_secret() {
    let server = mocks(CloudConfig::gcp()).await;
    let otlp = MockOtlpServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("otel");
    // The endpoint from the config file; the service name and an exporter
    // header (an API key, as a hosted backend wants) from the variables.
    let toml = format!(
        "[otel]\nendpoint = {:?}\n[[token]]\ntype = \"api\"\n",
        otlp.url()
    );
    let c = config(
        &server,
        &dir,
        &toml,
        &[
            ("OTEL_SERVICE_NAME", "checkout-sidecar"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=otlp-key-123"),
        ],
    );
    let sidecar = Sidecar::start(c, provider_config(&server)).await.unwrap();
    let socket = sidecar.socket_path().unwrap();
    wait_ready(&socket).await;
    // Warm (refreshed at start by the background), then one fetched in line by
    // the request.
    let (status, api_jwt) = uds_get(&socket, "/v1/token/api?format=raw").await;
    assert_eq!(status, 200, "{api_jwt}");
    let (status, db_jwt) = uds_get(
        &socket,
        "/v1/token/database?workspaceGroupID=wg-1&format=raw",
    )
    .await;
    assert_eq!(status, 200, "{db_jwt}");
    // Shutdown sends what is queued.
    sidecar.shutdown().await;
    let spans = otlp.otlp().spans();
    assert!(!spans.is_empty(), "no span arrived");
    assert!(spans.iter().all(|s| s.service_name == "checkout-sidecar"));
    assert!(otlp
        .otlp()
        .headers()
        .iter()
        .all(|h| h.get("x-api-key").map(String::as_str) == Some("otlp-key-123")));

    // Detection at start: a root span, naming the cloud.
    let detect = named(&spans, "s2iam.detect");
    assert_eq!(detect.len(), 1, "{spans:#?}");
    assert_eq!(detect[0].parent_span_id, None);
    assert_eq!(detect[0].attributes["cloud.provider"], "gcp");

    // Every fetch: a cache refresh with an identity and an exchange under it.
    let refreshes = named(&spans, "s2iam.cache.refresh");
    assert_eq!(refreshes.len(), 2, "{spans:#?}");
    let mut kinds = Vec::new();
    for r in &refreshes {
        assert_eq!(
            r.parent_span_id, None,
            "no span around the local API: a root"
        );
        assert_eq!(r.status_code, 0);
        let identity = children(&spans, r, "s2iam.identity");
        let exchange = children(&spans, r, "s2iam.exchange");
        assert_eq!(
            (identity.len(), exchange.len()),
            (1, 1),
            "{r:?} in {spans:#?}"
        );
        assert_eq!(identity[0].attributes["cloud.provider"], "gcp");
        assert_eq!(exchange[0].kind, 3, "the exchange is a client span");
        assert!(exchange[0].start_unix_nano >= r.start_unix_nano);
        assert!(exchange[0].end_unix_nano <= r.end_unix_nano);
        kinds.push((
            r.attributes["s2iam.cache.trigger"].clone(),
            exchange[0].attributes["s2iam.jwt_type"].clone(),
            exchange[0]
                .attributes
                .get("s2iam.workspace_group_id")
                .cloned(),
        ));
    }
    kinds.sort();
    let wg = Some("wg-1".to_string());
    assert_eq!(
        kinds,
        [
            ("in_line".into(), "api".into(), None),
            ("in_line".into(), "database".into(), wg),
        ]
    );

    // No secret anywhere: neither token, nor its signature, nor the exporter's key.
    let bodies = otlp.otlp().raw_bodies().join("\n");
    for jwt in [api_jwt.trim(), db_jwt.trim()] {
        let signature = jwt.rsplit('.').next().unwrap();
        assert!(signature.len() > 20);
        assert!(
            !bodies.contains(signature),
            "a token's signature was exported"
        );
    }
    assert!(!bodies.contains("otlp-key-123"));
    otlp.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_without_configuration_and_an_unreachable_collector_costs_no_request() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("otel-off");
    let c = config(&server, &dir, "[[token]]\ntype = \"api\"\n", &[]);
    assert!(c.otel.is_none());
    let sidecar = Sidecar::start(c, provider_config(&server)).await.unwrap();
    assert!(!sidecar.state.tracer.is_on());
    sidecar.shutdown().await;

    // A collector that is down: tokens are served all the same, and the
    // sidecar's shutdown is not held up beyond the export timeout.
    let dir = temp_dir("otel-down");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let c = config(
        &server,
        &dir,
        "[[token]]\ntype = \"api\"\n",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
        ],
    );
    let sidecar = Sidecar::start(c, provider_config(&server)).await.unwrap();
    let socket = sidecar.socket_path().unwrap();
    wait_ready(&socket).await;
    let (status, body) = uds_get(&socket, "/v1/token/api?format=raw").await;
    assert_eq!(status, 200, "{body}");
    tokio::time::timeout(std::time::Duration::from_secs(20), sidecar.shutdown())
        .await
        .expect("shutdown is not held up by a dead collector");
    server.shutdown().await;
}

/// `traceparent`'s parts: (trace id, parent span id, flags).
fn traceparent_parts(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_proxy_request_continues_the_callers_trace_and_the_upstream_continues_the_proxys() {
    let server = mocks(CloudConfig::gcp()).await;
    let api = MockApiServer::start(
        ApiConfig::default(),
        server.auth().key().clone(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let otlp = MockOtlpServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("otel-api-proxy");
    let toml = format!("[otel]\nendpoint = {:?}\n", otlp.url());
    let mut c = config(&server, &dir, &toml, &[]);
    c.api_proxies = vec![ApiProxyConfig::new(
        "data",
        "127.0.0.1:0".parse().unwrap(),
        &api.url(),
        ProxyToken::Database {
            workspace_group_id: "wg-1".into(),
        },
    )];
    let sidecar = Sidecar::start(c, provider_config(&server)).await.unwrap();
    wait_ready(&sidecar.socket_path().unwrap()).await;
    let url = format!(
        "http://{}/api/v2/query/rows?secret-ish=1",
        sidecar.api_proxy_addr("data").unwrap()
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let (caller_trace, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    for traceparent in [Some(format!("00-{caller_trace}-{caller_span}-01")), None] {
        let mut req = http
            .post(&url)
            .header("tracestate", "vendor=opaque")
            .json(&serde_json::json!({"sql": "SELECT 1"}));
        if let Some(t) = &traceparent {
            req = req.header("traceparent", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    sidecar.shutdown().await;
    let spans = otlp.otlp().spans();
    let mut proxied = named(&spans, "s2iam.api_proxy.request");
    assert_eq!(proxied.len(), 2, "{spans:#?}");
    proxied.sort_by_key(|s| s.start_unix_nano);
    let records = api.api().records();
    assert_eq!(records.len(), 2, "{records:?}");

    for (i, (span, seen)) in proxied.iter().zip(&records).enumerate() {
        assert_eq!(span.kind, 2, "a server span");
        assert_eq!(span.attributes["s2iam.proxy"], "data");
        assert_eq!(span.attributes["http.request.method"], "POST");
        assert_eq!(span.attributes["url.path"], "/api/v2/query/rows");
        assert_eq!(span.attributes["http.response.status_code"], "200");
        assert!(
            !span.attributes.values().any(|v| v.contains("secret-ish")),
            "the query string is not exported: {span:?}"
        );
        // The upstream continues the proxy's span, not the caller's.
        let sent = &seen.headers["traceparent"];
        let (trace, parent, flags) = traceparent_parts(sent);
        assert_eq!(
            (trace.as_str(), parent.as_str()),
            (span.trace_id.as_str(), span.span_id.as_str()),
            "upstream got {sent}"
        );
        assert_eq!(flags, "01", "sampled");
        assert_eq!(
            seen.headers["tracestate"], "vendor=opaque",
            "tracestate passes unchanged"
        );
        if i == 0 {
            assert_eq!(span.trace_id, caller_trace, "the caller's trace continues");
            assert_eq!(span.parent_span_id.as_deref(), Some(caller_span));
        } else {
            assert_ne!(span.trace_id, caller_trace, "no traceparent: a new trace");
            assert_eq!(span.parent_span_id, None);
        }
    }
    otlp.shutdown().await;
    api.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_proxy_session_is_a_span_with_its_outcome_and_no_secret() {
    const WG: &str = "wg-db";
    let server = TestServer::start(TestServerConfig::new(CloudConfig::gcp()).with_singlestore(
        SingleStoreConfig {
            workspace_group_id: Some(WG.into()),
            ..SingleStoreConfig::default()
        },
    ))
    .await
    .unwrap();
    let otlp = MockOtlpServer::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("otel-db-proxy");
    let db = server.singlestore().unwrap();
    let ca = dir.join("singlestore-ca.pem");
    std::fs::write(&ca, db.ca_pem()).unwrap();
    let toml = format!(
        "[otel]\nendpoint = {:?}\n[[database_proxy]]\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n\
         server_name = \"singlestore.mock\"\nca_file = {:?}\nworkspace_group_id = \"{WG}\"\n\
         allowed_users = [\"*\"]\n",
        otlp.url(),
        db.addr(),
        ca.display().to_string(),
    );
    let c = config(&server, &dir, &toml, &[]);
    let sidecar = Sidecar::start(c, provider_config(&server)).await.unwrap();
    let port = sidecar.database_proxies()[0].tcp_addr().unwrap().port();
    let opts = |user: &str| {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some(user.to_string()))
            .prefer_socket(false)
    };
    let mut conn = mysql_async::Conn::new(opts("*")).await.expect("connects");
    let handshake_id = conn.id();
    let one: Option<i64> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.disconnect().await.unwrap();
    // A user outside allowed_users: refused by the proxy, a failed session span.
    let refused = mysql_async::Conn::new(opts("mallory")).await;
    assert!(refused.is_err(), "mallory is not an allowed user");
    let (status, jwt) = uds_get(
        &sidecar.socket_path().unwrap(),
        &format!("/v1/token/database?workspaceGroupID={WG}&format=raw"),
    )
    .await;
    assert_eq!(status, 200, "{jwt}");
    sidecar.shutdown().await;

    let spans = otlp.otlp().spans();
    let mut sessions = named(&spans, "s2iam.db_proxy.session");
    assert_eq!(sessions.len(), 2, "{spans:#?}");
    sessions.sort_by_key(|s| s.start_unix_nano);
    for s in &sessions {
        assert_eq!(s.kind, 2, "a server span");
        assert_eq!(s.parent_span_id, None, "a session is a root");
        assert_eq!(s.attributes["s2iam.workspace_group_id"], WG);
        assert_eq!(s.attributes["db.system"], "mysql");
        assert!(s.attributes.contains_key("s2iam.proxy"), "{s:?}");
        assert!(
            s.attributes.contains_key("s2iam.peer.uid"),
            "loopback TCP names the uid: {s:?}"
        );
    }
    assert_eq!(sessions[0].attributes["s2iam.db_proxy.outcome"], "relayed");
    assert_eq!(
        sessions[0].attributes["s2iam.db_proxy.connection_id"],
        handshake_id.to_string(),
        "the id the client's handshake carried"
    );
    assert_eq!(sessions[0].status_code, 0);
    assert_ne!(sessions[1].attributes["s2iam.db_proxy.outcome"], "relayed");
    assert_eq!(sessions[1].status_code, 2, "a refused login fails its span");
    // A token fetched for a login is the session's child; none that was warm.
    for refresh in named(&spans, "s2iam.cache.refresh") {
        if let Some(parent) = &refresh.parent_span_id {
            assert_eq!(parent, &sessions[0].span_id, "{refresh:?}");
        }
    }
    let bodies = otlp.otlp().raw_bodies().join("\n");
    let signature = jwt.trim().rsplit('.').next().unwrap();
    assert!(
        !bodies.contains(signature),
        "a token's signature was exported"
    );
    otlp.shutdown().await;
    server.shutdown().await;
}
