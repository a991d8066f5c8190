//! Bad input to every endpoint of both mocks: garbage headers, malformed tokens,
//! huge and malformed bodies, unknown paths and methods. Every answer must be a
//! clear client error (never a 5xx, never a dropped connection), and the servers
//! must keep serving afterwards.

use s2iam_testserver::{CloudConfig, TestServer, TestServerConfig};

const CLOUD_PATHS: &[&str] = &[
    "/",
    "/latest/api/token",
    "/latest/meta-data/iam/security-credentials/s2iam-test-role",
    "/latest/dynamic/instance-identity/document",
    "/v1/credentials",
    "/v2/credentials/abc",
    "/computeMetadata/v1/instance/service-accounts/default/identity?audience=x",
    "/computeMetadata/v1/instance/id",
    "/v1/projects/-/serviceAccounts/a@b.iam.gserviceaccount.com:generateIdToken",
    "/metadata/instance?api-version=2021-02-01",
    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x",
    "/msi/token?api-version=2019-08-01&resource=x",
    "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token",
    "/jwks/nobody",
    "/no/such/path",
    "/%ff%fe",
];

const AUTH_PATHS: &[&str] = &[
    "/auth/iam/database?workspaceGroupID=x",
    "/auth/iam/api",
    "/auth/iam/moon",
    "/auth/oidc/op/Customer/.well-known/jwks.json",
    "/info/requests",
    "/no/such/path",
];

fn header_sets() -> Vec<Vec<(&'static str, String)>> {
    vec![
        vec![],
        vec![("Authorization", "Bearer !!!not-a-jwt!!!".into())],
        vec![("Authorization", "Bearer a.b.c".into())],
        vec![(
            "Authorization",
            "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2FjY291bnRzLmdvb2dsZS5jb20ifQ.".into(),
        )],
        vec![(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=garbage".into(),
        )],
        vec![
            ("X-AWS-Access-Key-ID", "AKIA0000".into()),
            ("X-AWS-Secret-Access-Key", "x".into()),
        ],
        vec![
            ("Metadata", "true".into()),
            ("Metadata-Flavor", "Google".into()),
            ("X-Forwarded-For", "1.2.3.4".into()),
        ],
        vec![
            ("X-aws-ec2-metadata-token-ttl-seconds", "-5".into()),
            ("X-aws-ec2-metadata-token", "nope".into()),
        ],
        vec![
            ("Content-Type", "application/json".into()),
            ("X-Long", "x".repeat(8000)),
        ],
    ]
}

fn bodies() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"{not json".to_vec(),
        b"Action=AssumeRole&RoleArn=%ZZ&&&==".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01],
        vec![b'a'; 200 * 1024],
    ]
}

async fn hammer(base: &str, paths: &[&str]) {
    let http = reqwest::Client::new();
    for path in paths {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            for headers in header_sets() {
                for body in bodies() {
                    let mut req = http
                        .request(method.parse().unwrap(), format!("{base}{path}"))
                        .body(body.clone());
                    for (k, v) in &headers {
                        req = req.header(*k, v);
                    }
                    let resp = req.send().await.unwrap_or_else(|e| {
                        panic!("{method} {path} {headers:?}: connection failed: {e}")
                    });
                    let status = resp.status().as_u16();
                    assert!(
                        status < 500,
                        "{method} {path} with {:?} and a {}-byte body: {status}",
                        headers.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
                        body.len()
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn no_input_makes_a_mock_fail_or_panic() {
    for cloud in [
        CloudConfig::aws(),
        CloudConfig::gcp(),
        CloudConfig::azure(),
        CloudConfig::none(),
    ] {
        let server = TestServer::start(TestServerConfig::new(cloud))
            .await
            .unwrap();
        hammer(&server.cloud_url(), CLOUD_PATHS).await;
        hammer(&server.auth_url(), AUTH_PATHS).await;
        // Still serving.
        let health = reqwest::get(format!("{}/health", server.auth_url()))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let server = TestServer::start(TestServerConfig::new(CloudConfig::aws()))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for url in [
        format!("{}/", server.cloud_url()),
        format!("{}/auth/iam/api", server.auth_url()),
    ] {
        let resp = http
            .post(&url)
            .body(vec![b'x'; 1024 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413, "{url}");
    }
    server.shutdown().await;
}
