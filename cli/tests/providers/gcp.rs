//! The GCP provider against the mock GCE metadata server and IAM Credentials API:
//! detection (fast path and probe, positive and every negative), ID tokens for the
//! default and custom audiences, impersonation allowed and denied, no service
//! account, retries, and the headers verified end to end by the mock auth service.

use crate::common::{bearer, claims, exchange_api_token, mocks as start, refused_url};

use std::time::{Duration, Instant};

use s2iam::env::ProviderConfig;
use s2iam::env::{Env, Fs};
use s2iam::http::RetryPolicy;
use s2iam::provider::gcp::{GcpProvider, PROBE_TIMEOUT};
use s2iam::provider::{CloudProvider, IdentityRequest, ProbeError, ProviderError};
use s2iam::{detect_provider, DetectOptions};
use s2iam_testserver::{CloudConfig, FaultRule, ServiceAccount, TestServer};

const IDENTITY_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/identity";
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const GENERATE_PATH: &str = "/v1/projects/-/serviceAccounts/";

fn cfg_at(base: &str, extra: &[(&str, &str)]) -> ProviderConfig {
    let env = s2iam::env::endpoints::mock_env(base)
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ProviderConfig::with_env(Env::from_pairs(env), Fs::from_files::<&str, &str>([]))
}

fn cfg(server: &TestServer) -> ProviderConfig {
    cfg_at(&server.cloud_url(), &[])
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        budget: Duration::from_secs(2),
    }
}

fn default_account() -> ServiceAccount {
    CloudConfig::gcp().gcp.unwrap().service_account.unwrap()
}

fn target_account() -> ServiceAccount {
    CloudConfig::gcp().gcp.unwrap().impersonable[0].clone()
}

// ---------------------------------------------------------------------------
// Detection
// ---------------------------------------------------------------------------

#[tokio::test]
async fn probe_finds_the_gce_metadata_server() {
    let server = start(CloudConfig::gcp()).await;
    GcpProvider::probe(&cfg(&server))
        .await
        .expect("GCP detected");
    assert_eq!(
        server
            .cloud_requests()
            .count("/computeMetadata/v1/instance/id"),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn probe_says_refused_when_nothing_listens() {
    let err = GcpProvider::probe(&cfg_at(&refused_url(), &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Refused { .. }), "{err:?}");
}

#[tokio::test]
async fn probe_of_a_blackhole_times_out_within_its_timeout() {
    let server = start(CloudConfig::gcp()).await;
    server
        .cloud_faults()
        .add(FaultRule::blackhole("/computeMetadata/v1/instance/id"));
    let start = Instant::now();
    let err = GcpProvider::probe(&cfg(&server)).await.unwrap_err();
    assert!(matches!(err, ProbeError::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < PROBE_TIMEOUT + Duration::from_secs(1));
    server.shutdown().await;
}

#[tokio::test]
async fn probe_of_another_clouds_metadata_server_is_negative() {
    for cloud in [
        CloudConfig::azure(),
        CloudConfig::aws(),
        CloudConfig::none(),
    ] {
        let server = start(cloud).await;
        let err = GcpProvider::probe(&cfg(&server)).await.unwrap_err();
        assert!(
            matches!(err, ProbeError::Status { status: 404, .. }),
            "{err:?}"
        );
        server.shutdown().await;
    }
}

/// The mock always sends `Metadata-Flavor: Google`; a bare server shows that a 200
/// without it is not taken for GCE.
#[tokio::test]
async fn probe_rejects_a_200_without_the_metadata_flavor_header() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let fake = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf).await;
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\n1234")
            .await;
    });
    let err = GcpProvider::probe(&cfg_at(&base, &[])).await.unwrap_err();
    assert!(
        matches!(&err, ProbeError::NotThisCloud(m) if m.contains("Metadata-Flavor")),
        "{err:?}"
    );
    fake.await.unwrap();
}

#[tokio::test]
async fn detection_picks_gcp_by_probe_and_by_environment() {
    let server = start(CloudConfig::gcp()).await;
    let opts = DetectOptions {
        timeout: Duration::from_secs(5),
        ..DetectOptions::default()
    };
    let found = detect_provider(&cfg(&server), &opts)
        .await
        .expect("detected");
    assert_eq!(found.provider.kind(), CloudProvider::Gcp);
    assert_eq!(
        found.method,
        s2iam::provider::detect::DetectionMethod::Metadata
    );

    let host = server.cloud_url().trim_start_matches("http://").to_string();
    let env_cfg = cfg_at(&server.cloud_url(), &[("GCE_METADATA_HOST", host.as_str())]);
    let found = detect_provider(&env_cfg, &opts).await.expect("detected");
    assert_eq!(found.provider.kind(), CloudProvider::Gcp);
    assert!(matches!(
        found.method,
        s2iam::provider::detect::DetectionMethod::Environment(ref e) if e.contains("GCE_METADATA_HOST")
    ));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------

#[tokio::test]
async fn identity_is_one_bearer_header_and_the_default_service_account() {
    let server = start(CloudConfig::gcp()).await;
    let (headers, identity) = GcpProvider::default()
        .identity(&cfg(&server), &IdentityRequest::default())
        .await
        .expect("identity");
    let names: Vec<&str> = headers.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["Authorization"]);
    let token = bearer(&headers);
    let c = claims(&token);
    let sa = default_account();
    assert_eq!(c["aud"], "https://authsvc.singlestore.com");
    assert_eq!(c["sub"], sa.unique_id.as_str());
    assert_eq!(
        c["google"]["compute_engine"]["zone"], "us-central1-a",
        "format=full"
    );

    assert_eq!(identity.provider, CloudProvider::Gcp);
    assert_eq!(identity.identifier, sa.email);
    assert_eq!(identity.account_id, sa.unique_id);
    assert_eq!(identity.region, "us-central1");
    assert_eq!(identity.resource_type, "gcp-compute-instance");
    assert_eq!(
        identity.additional_claims["project_id"],
        "s2iam-test-project"
    );
    assert_eq!(identity.additional_claims["zone"], "us-central1-a");
    // Headers and identities never print the token.
    assert!(!format!("{headers:?} {identity:?}").contains(&token));
    server.shutdown().await;
}

#[tokio::test]
async fn a_custom_audience_reaches_the_token() {
    let server = start(CloudConfig::gcp()).await;
    let req = IdentityRequest {
        gcp_audience: "https://example.test/aud?x=1&y=2".into(),
        ..IdentityRequest::default()
    };
    let (headers, identity) = GcpProvider::default()
        .identity(&cfg(&server), &req)
        .await
        .expect("identity");
    assert_eq!(
        claims(&bearer(&headers))["aud"],
        "https://example.test/aud?x=1&y=2"
    );
    assert_eq!(identity.additional_claims["audience"], req.gcp_audience);
    let seen = server.cloud_requests().entries();
    let q = &seen.iter().find(|r| r.path == IDENTITY_PATH).unwrap().query;
    assert!(q.contains("format=full"), "{q}");
    server.shutdown().await;
}

#[tokio::test]
async fn impersonation_returns_the_targets_token() {
    let server = start(CloudConfig::gcp()).await;
    let target = target_account();
    let provider = GcpProvider::default().assume_role(&target.email).unwrap();
    let req = IdentityRequest {
        gcp_audience: "https://aud.example".into(),
        ..IdentityRequest::default()
    };
    let (headers, identity) = provider.identity(&cfg(&server), &req).await.unwrap();
    let c = claims(&bearer(&headers));
    assert_eq!(c["sub"], target.unique_id.as_str());
    assert_eq!(c["aud"], "https://aud.example");
    assert_eq!(c["email"], target.email.as_str(), "includeEmail is sent");
    assert_eq!(identity.identifier, target.email);
    assert_eq!(identity.account_id, target.unique_id);
    // The instance's access token was fetched, then exchanged; no ID token for self.
    let log = server.cloud_requests();
    assert_eq!(log.count(TOKEN_PATH), 1);
    assert_eq!(log.count(GENERATE_PATH), 1);
    assert_eq!(log.count(IDENTITY_PATH), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn impersonation_without_permission_is_a_clear_error_without_secrets() {
    let server = start(CloudConfig::gcp()).await;
    let provider = GcpProvider::default()
        .assume_role("stranger@other-project.iam.gserviceaccount.com")
        .unwrap();
    let err = provider
        .identity(&cfg(&server), &IdentityRequest::default())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::Upstream { .. }), "{err:?}");
    assert!(
        msg.contains("403") && msg.contains("PERMISSION_DENIED"),
        "{msg}"
    );
    assert!(msg.contains("serviceAccountTokenCreator"), "{msg}");
    assert!(
        msg.contains("stranger@other-project.iam.gserviceaccount.com"),
        "{msg}"
    );
    assert!(!msg.contains("ya29") && !msg.contains("Bearer"), "{msg}");
    assert_eq!(
        server.cloud_requests().count(GENERATE_PATH),
        1,
        "403 is not retried"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn assume_role_rejects_what_is_not_a_service_account_email() {
    for bad in ["arn:aws:iam::123456789012:role/x", "nobody", "a@b/../c.com"] {
        assert!(matches!(
            GcpProvider::default().assume_role(bad),
            Err(ProviderError::InvalidRole {
                provider: CloudProvider::Gcp,
                ..
            })
        ));
    }
}

#[tokio::test]
async fn no_service_account_is_no_identity() {
    let server = start(CloudConfig::gcp()).await;
    server
        .cloud()
        .update(|c| c.gcp.as_mut().unwrap().service_account = None);
    let cfg = cfg(&server);
    // Still GCP…
    GcpProvider::probe(&cfg).await.expect("GCP detected");
    // …but no identity, directly or through impersonation.
    let plain = GcpProvider::default();
    let impersonating = plain.assume_role(&target_account().email).unwrap();
    for provider in [plain, impersonating] {
        let err = provider
            .identity(&cfg, &IdentityRequest::default())
            .await
            .unwrap_err();
        match err {
            ProviderError::NoIdentity { provider, reason } => {
                assert_eq!(provider, CloudProvider::Gcp);
                assert!(reason.contains("no service account"), "{reason}");
            }
            other => panic!("expected NoIdentity, got {other:?}"),
        }
    }
    server.shutdown().await;
}

/// GKE's metadata server can be slow or failing right after pod start.
#[tokio::test]
async fn transient_metadata_failures_are_retried() {
    let server = start(CloudConfig::gcp()).await;
    server
        .cloud_faults()
        .add(FaultRule::status(IDENTITY_PATH, 503).times(2));
    let (_, identity) = GcpProvider::default()
        .with_retry_policy(fast_retry(5))
        .identity(&cfg(&server), &IdentityRequest::default())
        .await
        .expect("succeeds on the third attempt");
    assert_eq!(identity.identifier, default_account().email);
    assert_eq!(server.cloud_requests().count(IDENTITY_PATH), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn retries_are_bounded_and_say_so() {
    let server = start(CloudConfig::gcp()).await;
    server
        .cloud_faults()
        .add(FaultRule::status(IDENTITY_PATH, 500));
    let err = GcpProvider::default()
        .with_retry_policy(fast_retry(3))
        .identity(&cfg(&server), &IdentityRequest::default())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::Upstream { .. }), "{err:?}");
    assert!(
        msg.contains("gave up after 3 attempts") && msg.contains("HTTP 500"),
        "{msg}"
    );
    assert_eq!(server.cloud_requests().count(IDENTITY_PATH), 3);

    // Nothing listening at all: the same bounded retries, then a transport error.
    let err = GcpProvider::default()
        .with_retry_policy(fast_retry(2))
        .identity(&cfg_at(&refused_url(), &[]), &IdentityRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gave up after 2 attempts") && err.contains("refused"),
        "{err}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_auth_service_accepts_the_headers() {
    let server = start(CloudConfig::gcp()).await;
    for provider in [
        GcpProvider::default(),
        GcpProvider::default()
            .assume_role(&target_account().email)
            .unwrap(),
    ] {
        let (headers, identity) = provider
            .identity(&cfg(&server), &IdentityRequest::default())
            .await
            .unwrap();
        let token = exchange_api_token(&server, &headers, &identity)
            .await
            .expect("the mock auth service verifies the ID token");
        assert_eq!(token.claims.provider.as_deref(), Some("gcp"));
        let verified = server.auth().records().pop().unwrap().identity.unwrap();
        assert_eq!(verified.identifier, identity.identifier);
        assert_eq!(verified.account_id, identity.account_id);
    }
    server.shutdown().await;
}
