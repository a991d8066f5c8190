//! The exchange against the mock auth service (and, for responses the mock never
//! gives, a small misbehaving server): tokens, failure toggles, retries, limits,
//! timeouts, https enforcement, URL templating, JWKS validation.

// Tests and benches own their environment and clock (rule 4 is for the library).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant, SystemTime};

use s2iam::exchange::{
    ExchangeClient, ExchangeConfig, ExchangeError, ExchangeRequest, JwtType, ServerUrl,
};
use s2iam::http::RetryPolicy;
use s2iam::provider::{CloudIdentity, CloudProvider, IdentityHeaders};
use s2iam_testserver::{CloudConfig, FaultRule, TestServer, TestServerConfig};

const AUDIENCE: &str = "https://authsvc.singlestore.com";

async fn server() -> TestServer {
    TestServer::start(TestServerConfig::new(CloudConfig::gcp()))
        .await
        .expect("test server starts")
}

/// A Google ID token minted by the mock cloud's Google key, and the identity it is.
fn gcp_identity(server: &TestServer) -> (IdentityHeaders, CloudIdentity) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "100000000000000000001",
        "sub": "100000000000000000001",
        "email": "app@proj.iam.gserviceaccount.com",
        "email_verified": true,
        "iat": now,
        "exp": now + 600,
    });
    let token = server.cloud().keys().google.sign(&claims).unwrap();
    let mut headers = IdentityHeaders::default();
    headers.push("Authorization", format!("Bearer {token}"));
    let identity = CloudIdentity {
        provider: CloudProvider::Gcp,
        identifier: "app@proj.iam.gserviceaccount.com".into(),
        account_id: "100000000000000000001".into(),
        region: "us-central1".into(),
        resource_type: "gcp-compute-instance".into(),
        additional_claims: Default::default(),
        credential_source: None,
    };
    (headers, identity)
}

fn fast_retries() -> ExchangeConfig {
    ExchangeConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            budget: Duration::from_secs(5),
        },
        ..ExchangeConfig::default()
    }
}

async fn exchange(
    client: &ExchangeClient,
    template: &str,
    jwt_type: JwtType,
    wg: Option<&str>,
    id: &(IdentityHeaders, CloudIdentity),
    timeout: Duration,
) -> Result<s2iam::Token, ExchangeError> {
    let server = ServerUrl::parse(template, true).unwrap();
    let req = ExchangeRequest {
        jwt_type,
        workspace_group_id: wg,
        headers: &id.0,
        identity: &id.1,
    };
    client.exchange(&server, req, timeout).await
}

/// An API token (no workspace group), the call most tests make.
async fn api_token(
    client: &ExchangeClient,
    template: &str,
    id: &(IdentityHeaders, CloudIdentity),
    timeout: Duration,
) -> Result<s2iam::Token, ExchangeError> {
    exchange(client, template, JwtType::Api, None, id, timeout).await
}

#[tokio::test]
async fn database_and_api_tokens_carry_the_verified_identity() {
    let server = server().await;
    let id = gcp_identity(&server);
    let client = ExchangeClient::new(fast_retries());
    let template = server.exchange_url_template();

    let db = exchange(
        &client,
        &template,
        JwtType::Database,
        Some("wg-1"),
        &id,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(
        db.claims.sub.as_deref(),
        Some("app@proj.iam.gserviceaccount.com")
    );
    assert_eq!(db.claims.provider.as_deref(), Some("gcp"));
    assert_eq!(db.claims.jwt_type.as_deref(), Some("database"));
    assert_eq!(db.claims.workspace_group_id.as_deref(), Some("wg-1"));
    assert!(
        db.remaining() > Duration::from_secs(3000),
        "expires_at honoured"
    );

    let api = api_token(&client, &template, &id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(api.claims.jwt_type.as_deref(), Some("api"));

    let records = server.auth().records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].path, "/auth/iam/database");
    assert!(records[0].query.contains("workspaceGroupID=wg-1"));
    assert_eq!(records[0].workspace_group_id.as_deref(), Some("wg-1"));
    assert_eq!(
        records[0]
            .headers
            .get("x-s2iam-identity-format-preference")
            .map(String::as_str),
        Some("aws-iam-role-arn,aws-arn,gcp-sa-email,gcp-sa-unique-id,azure-object-id")
    );
    assert_eq!(records[1].path, "/auth/iam/api");
    server.shutdown().await;
}

#[tokio::test]
async fn database_token_without_workspace_group_fails_before_any_io() {
    let server = server().await;
    let id = gcp_identity(&server);
    let client = ExchangeClient::new(fast_retries());
    let err = exchange(
        &client,
        &server.exchange_url_template(),
        JwtType::Database,
        Some(""),
        &id,
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ExchangeError::MissingWorkspaceGroup), "{err}");
    assert_eq!(server.auth_requests().count("/auth/iam"), 0);
}

#[tokio::test]
async fn failure_toggles_map_to_clear_errors_and_only_transient_ones_retry() {
    let server = server().await;
    let id = gcp_identity(&server);
    let client = ExchangeClient::new(fast_retries());
    let template = server.exchange_url_template();
    let call = || api_token(&client, &template, &id, Duration::from_secs(10));

    server.auth().update(|c| c.fail_verification = true);
    let err = call().await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(err.to_string().contains("verification"), "{err}");
    assert_eq!(
        server.auth_requests().count("/auth/iam"),
        1,
        "401 is not retried"
    );

    server.auth().update(|c| {
        c.fail_verification = false;
        c.return_error = true;
        c.error_code = 503;
        c.error_message = "maintenance window".into();
    });
    let err = call().await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert!(err.to_string().contains("maintenance window"), "{err}");
    assert_eq!(
        server.auth_requests().count("/auth/iam"),
        1 + 3,
        "5xx retried up to max_attempts"
    );

    server.auth().update(|c| {
        c.error_code = 404;
        c.error_message = "no principal".into();
    });
    let err = call().await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(err.to_string().contains("no matching principal"), "{err}");
    assert_eq!(
        server.auth_requests().count("/auth/iam"),
        5,
        "404 is not retried"
    );

    server.auth().update(|c| {
        c.return_error = false;
        c.return_empty_jwt = true;
    });
    assert!(matches!(call().await.unwrap_err(), ExchangeError::EmptyJwt));

    server.auth().update(|c| c.return_empty_jwt = false);
    assert!(call().await.is_ok(), "recovers once the server does");
    server.shutdown().await;
}

#[tokio::test]
async fn transient_failures_are_retried_and_visible_in_the_request_log() {
    let server = server().await;
    let id = gcp_identity(&server);
    server
        .auth_faults()
        .add(FaultRule::status("/auth/iam", 503).times(1));
    server
        .auth_faults()
        .add(FaultRule::status("/auth/iam", 429).times(1));
    let client = ExchangeClient::new(fast_retries());
    let token = api_token(
        &client,
        &server.exchange_url_template(),
        &id,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(!token.jwt().is_empty());
    let statuses: Vec<u16> = server
        .auth_requests()
        .entries()
        .iter()
        .filter(|r| r.path.starts_with("/auth/iam"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [503, 429, 200]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_retries_itself_gets_one_attempt_for_a_failure_without_retry_after() {
    // The cache refreshing a still-valid token runs the exchange inside
    // `caller_retries`: a 503 or 429 without `Retry-After` ends the call after
    // one request (the cache retries it later), where a plain call retries.
    let server = server().await;
    let id = gcp_identity(&server);
    let client = ExchangeClient::new(fast_retries());
    let template = server.exchange_url_template();
    for status in [503, 429] {
        server.auth_requests().clear();
        server
            .auth_faults()
            .add(FaultRule::status("/auth/iam", status).times(1));
        let err = s2iam::http::caller_retries(api_token(
            &client,
            &template,
            &id,
            Duration::from_secs(10),
        ))
        .await
        .unwrap_err();
        assert!(
            matches!(err, ExchangeError::Status { status: s, attempts: 1, .. } if s == status),
            "{err}"
        );
        assert_eq!(server.auth_requests().count("/auth/iam"), 1, "{status}");
        // The fault is spent: the cache's next attempt gets its token.
        let token = s2iam::http::caller_retries(api_token(
            &client,
            &template,
            &id,
            Duration::from_secs(10),
        ))
        .await;
        assert!(token.is_ok(), "{token:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn connection_resets_are_retried() {
    let server = server().await;
    let id = gcp_identity(&server);
    server
        .auth_faults()
        .add(FaultRule::reset("/auth/iam").times(2));
    let client = ExchangeClient::new(fast_retries());
    let token = api_token(
        &client,
        &server.exchange_url_template(),
        &id,
        Duration::from_secs(10),
    )
    .await;
    assert!(token.is_ok(), "{token:?}");
    assert_eq!(server.auth_requests().count("/auth/iam"), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn a_slow_server_hits_the_timeout() {
    let server = server().await;
    let id = gcp_identity(&server);
    server.auth_faults().add(FaultRule::blackhole("/auth/iam"));
    let client = ExchangeClient::new(fast_retries());
    let started = Instant::now();
    let err = api_token(
        &client,
        &server.exchange_url_template(),
        &id,
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ExchangeError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "timeout respected: {:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unreachable_server_is_a_transport_error_naming_the_url() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = server().await;
    let id = gcp_identity(&server);
    let client = ExchangeClient::new(fast_retries());
    let template = format!("http://127.0.0.1:{port}/auth/iam/:jwtType");
    let err = api_token(&client, &template, &id, Duration::from_secs(5))
        .await
        .unwrap_err();
    match &err {
        ExchangeError::Transport { url, attempts, .. } => {
            assert!(url.contains(&port.to_string()));
            assert_eq!(*attempts, 3);
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn url_template_fills_jwt_type_and_cloud_provider() {
    let server = server().await;
    let id = gcp_identity(&server);
    let client = ExchangeClient::new(fast_retries());
    let template = format!(
        "{}/auth/iam/:jwtType?cloud=:cloudProvider",
        server.auth_url()
    );
    api_token(&client, &template, &id, Duration::from_secs(10))
        .await
        .unwrap();
    let record = &server.auth().records()[0];
    assert_eq!(record.path, "/auth/iam/api");
    assert_eq!(record.query, "cloud=gcp");
    server.shutdown().await;
}

#[tokio::test]
async fn https_is_required_unless_allowed_and_checked_before_any_io() {
    let server = server().await;
    let err = s2iam::Client::new(s2iam::JwtOptions {
        server_url: Some(server.exchange_url_template()),
        allow_http: false,
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("https"), "{err}");
    assert_eq!(server.auth_requests().entries().len(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn jwks_validation_accepts_the_servers_tokens() {
    let server = server().await;
    let id = gcp_identity(&server);
    let client = ExchangeClient::new(ExchangeConfig {
        validate_jwks: true,
        ..fast_retries()
    });
    let template = server.exchange_url_template();
    for _ in 0..2 {
        api_token(&client, &template, &id, Duration::from_secs(10))
            .await
            .unwrap();
    }
    assert_eq!(
        server
            .auth_requests()
            .count("/auth/oidc/op/Customer/.well-known/jwks.json"),
        1,
        "the JWKS is cached"
    );
    server.shutdown().await;
}

/// A server that answers every request with a fixed status, headers and body, and
/// serves a JWKS, for responses the mock auth service never gives.
async fn fixed_server(status: u16, body: Vec<u8>, jwks: serde_json::Value) -> String {
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/auth/iam/{t}",
            post(move || {
                let body = body.clone();
                async move { (StatusCode::from_u16(status).unwrap(), body) }
            }),
        )
        .route(
            "/auth/oidc/op/Customer/.well-known/jwks.json",
            get(move || {
                let jwks = jwks.clone();
                async move { axum::Json(jwks) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/auth/iam/:jwtType")
}

#[tokio::test]
async fn malformed_and_oversized_responses_are_clear_errors() {
    let server = server().await;
    let id = gcp_identity(&server);
    let client = ExchangeClient::new(fast_retries());
    let jwks = serde_json::json!({"keys": []});

    type Expected = fn(&ExchangeError) -> bool;
    let cases: [(&str, Vec<u8>, Expected); 3] = [
        ("HTML", b"<html>oops</html>".to_vec(), |e| {
            matches!(e, ExchangeError::MalformedResponse(_))
        }),
        ("2 MiB", vec![b' '; 2 * 1024 * 1024], |e| {
            matches!(e, ExchangeError::ResponseTooLarge)
        }),
        (
            "a date that is not RFC 3339",
            br#"{"jwt":"a.b.c","expires_at":"tomorrow"}"#.to_vec(),
            |e| e.to_string().contains("RFC 3339"),
        ),
    ];
    for (what, body, expected) in cases {
        let url = fixed_server(200, body, jwks.clone()).await;
        let err = api_token(&client, &url, &id, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(expected(&err), "{what}: {err}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn jwks_validation_rejects_a_token_from_another_key() {
    let server = server().await;
    let id = gcp_identity(&server);
    // A token signed by the mock Google key, served next to the auth key's JWKS.
    let foreign = server
        .cloud()
        .keys()
        .google
        .sign(&serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}))
        .unwrap();
    let url = fixed_server(
        200,
        serde_json::to_vec(&serde_json::json!({"jwt": foreign})).unwrap(),
        server.auth().key().jwks(),
    )
    .await;
    let client = ExchangeClient::new(ExchangeConfig {
        validate_jwks: true,
        ..fast_retries()
    });
    let err = api_token(&client, &url, &id, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, ExchangeError::Jwks(_)), "{err}");
    assert!(
        !err.to_string().contains(&foreign),
        "the token is not in the message"
    );
    server.shutdown().await;
}
