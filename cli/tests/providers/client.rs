//! The whole flow through the library's `Client`: detection, identity, exchange,
//! for every provider and both token types, with and without assume-role, the
//! mock auth service verifying every identity for real.

use crate::common::{mocks, provider_config};
use s2iam::{Client, JwtOptions, JwtType, TokenRequest};
use s2iam_testserver::{CloudConfig, TestServer};

fn client(server: &TestServer) -> Client {
    Client::new(JwtOptions {
        server_url: Some(server.exchange_url_template()),
        allow_http: true,
        provider_config: Some(provider_config(server)),
        ..JwtOptions::default()
    })
    .unwrap()
}

#[tokio::test]
async fn every_provider_gets_database_and_api_tokens() {
    for (cloud, name, sub) in [
        (
            CloudConfig::aws(),
            "aws",
            "arn:aws:iam::123456789012:role/s2iam-test-role",
        ),
        (
            CloudConfig::gcp(),
            "gcp",
            "s2iam-test@s2iam-test-project.iam.gserviceaccount.com",
        ),
        (
            CloudConfig::azure(),
            "azure",
            "6e4f2a10-0000-4000-8000-0000000000a1",
        ),
    ] {
        let server = mocks(cloud).await;
        let client = client(&server);
        let db = client.token(&TokenRequest::database("wg-7")).await.unwrap();
        let api = client.token(&TokenRequest::api()).await.unwrap();
        for (token, jwt_type) in [(&db, "database"), (&api, "api")] {
            assert_eq!(token.claims.provider.as_deref(), Some(name));
            assert_eq!(token.claims.sub.as_deref(), Some(sub), "{name} {jwt_type}");
            assert_eq!(token.claims.jwt_type.as_deref(), Some(jwt_type));
        }
        assert_eq!(db.claims.workspace_group_id.as_deref(), Some("wg-7"));
        let records = server.auth().records();
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.status == 200));
        assert_eq!(records[0].identity.as_ref().unwrap().provider, name);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn assume_role_on_each_provider() {
    let cases = [
        (
            CloudConfig::aws(),
            "arn:aws:iam::123456789012:role/reporting",
            "arn:aws:iam::123456789012:role/reporting",
        ),
        (
            CloudConfig::gcp(),
            "s2iam-target@s2iam-test-project.iam.gserviceaccount.com",
            "s2iam-target@s2iam-test-project.iam.gserviceaccount.com",
        ),
        (
            CloudConfig::azure(),
            "0d3c6a77-0000-4000-8000-00000000c1d2",
            "7f5e3b21-0000-4000-8000-0000000000a2",
        ),
    ];
    for (cloud, role, want_sub) in cases {
        let server = mocks(cloud).await;
        let client = client(&server);
        let req = TokenRequest {
            assume_role: Some(role.to_string()),
            ..TokenRequest::api()
        };
        let token = client
            .token(&req)
            .await
            .unwrap_or_else(|e| panic!("{role}: {e}"));
        assert_eq!(token.claims.sub.as_deref(), Some(want_sub), "{role}");
        // The detected identity is untouched by the assumed one.
        let plain = client.token(&TokenRequest::api()).await.unwrap();
        assert_ne!(plain.claims.sub.as_deref(), Some(want_sub));
        server.shutdown().await;
    }
}

#[tokio::test]
async fn database_tokens_need_a_workspace_group_before_any_io() {
    let server = mocks(CloudConfig::gcp()).await;
    let client = client(&server);
    let req = TokenRequest {
        jwt_type: JwtType::Database,
        workspace_group_id: None,
        ..TokenRequest::api()
    };
    let err = client.token(&req).await.unwrap_err();
    assert!(err.to_string().contains("workspace group"), "{err}");
    assert!(server.cloud_requests().entries().is_empty());
    let err = s2iam::get_database_jwt("", &JwtOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("workspace group"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn detection_runs_once_per_client() {
    let server = mocks(CloudConfig::gcp()).await;
    let client = client(&server);
    for _ in 0..3 {
        client.token(&TokenRequest::api()).await.unwrap();
    }
    assert_eq!(
        server
            .cloud_requests()
            .count("/computeMetadata/v1/instance/id"),
        1
    );
    server.shutdown().await;
}
