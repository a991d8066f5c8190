//! OpenTelemetry traces end to end: the sidecar in-process on real loopback
//! sockets, exporting OTLP/HTTP JSON to the test server's OTLP receiver; the
//! spans, their parentage and attributes as the receiver got them, and no
//! secret anywhere in what was exported.

mod common;

use common::{mocks, provider_config, temp_dir, uds_get, wait_ready};
use s2iam::config::{ServeConfig, ServeOverrides};
use s2iam::env::Env;
use s2iam::serve::Sidecar;
use s2iam_testserver::{CloudConfig, MockOtlpServer, ReceivedSpan, TestServer};

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
