//! Detection across all providers at once: first positive wins, the deadline is
//! respected, and a failure explains itself per provider.

use std::time::{Duration, Instant};

use crate::common::{mock_env, mocks};
use s2iam::env::ProviderConfig;
use s2iam::env::{Env, Fs};
use s2iam::provider::detect::{detect_provider, DetectOptions, DetectionMethod};
use s2iam::provider::{CloudProvider, ProbeError};
use s2iam_testserver::{CloudConfig, FaultRule};

fn closed_port_env() -> Env {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Env::from_pairs(s2iam::env::endpoints::mock_env(&format!(
        "http://127.0.0.1:{port}"
    )))
}

fn opts(timeout: Duration) -> DetectOptions {
    DetectOptions {
        timeout,
        ..DetectOptions::default()
    }
}

#[tokio::test]
async fn each_cloud_is_detected_by_its_metadata_service() {
    for (cloud, want) in [
        (CloudConfig::aws(), CloudProvider::Aws),
        (CloudConfig::gcp(), CloudProvider::Gcp),
        (CloudConfig::azure(), CloudProvider::Azure),
    ] {
        let server = mocks(cloud).await;
        let cfg =
            ProviderConfig::with_env(mock_env(&server, &[]), Fs::from_files::<&str, &str>([]));
        let d = detect_provider(&cfg, &opts(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(d.provider.kind(), want);
        assert_eq!(d.method, DetectionMethod::Metadata);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn nothing_listening_fails_promptly_with_every_reason() {
    let cfg = ProviderConfig::with_env(closed_port_env(), Fs::from_files::<&str, &str>([]));
    let started = Instant::now();
    let err = detect_provider(&cfg, &opts(Duration::from_secs(5)))
        .await
        .unwrap_err();
    // Generous bound (catches a hang); the benchmark measures the real figure.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.attempts.len(), 3);
    for a in &err.attempts {
        assert!(matches!(a.error, Some(ProbeError::Refused { .. })), "{a:?}");
    }
    let text = err.to_string();
    assert!(
        text.contains("aws: connection refused") && text.contains("azure:"),
        "{text}"
    );
}

#[tokio::test]
async fn a_blackholed_metadata_service_cannot_hold_detection_past_its_deadline() {
    let server = mocks(CloudConfig::none()).await;
    for path in ["/latest", "/computeMetadata", "/metadata"] {
        server.cloud_faults().add(FaultRule::blackhole(path));
    }
    let cfg = ProviderConfig::with_env(mock_env(&server, &[]), Fs::from_files::<&str, &str>([]));
    let timeout = Duration::from_millis(400);
    let started = Instant::now();
    let err = detect_provider(&cfg, &opts(timeout)).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(
        elapsed < timeout + Duration::from_millis(700),
        "deadline overrun: {elapsed:?}"
    );
    assert!(
        err.to_string()
            .contains("no answer before the detection deadline"),
        "{err}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_answering_cloud_wins_while_the_others_hang() {
    let server = mocks(CloudConfig::azure()).await;
    server.cloud_faults().add(FaultRule::blackhole("/latest"));
    server
        .cloud_faults()
        .add(FaultRule::blackhole("/computeMetadata"));
    let cfg = ProviderConfig::with_env(mock_env(&server, &[]), Fs::from_files::<&str, &str>([]));
    let started = Instant::now();
    let d = detect_provider(&cfg, &opts(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(d.provider.kind(), CloudProvider::Azure);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "did not wait for the losers"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn throttled_imds_then_success_is_still_detected() {
    let server = mocks(CloudConfig::azure()).await;
    server
        .cloud_faults()
        .add(FaultRule::status("/metadata/instance", 429).times(2));
    let cfg = ProviderConfig::with_env(mock_env(&server, &[]), Fs::from_files::<&str, &str>([]));
    let d = detect_provider(&cfg, &opts(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(d.provider.kind(), CloudProvider::Azure);
    server.shutdown().await;
}

#[tokio::test]
async fn identity_not_found_is_detected_without_identity() {
    let mut cloud = CloudConfig::azure();
    if let Some(az) = cloud.azure.as_mut() {
        az.system_identity = None;
        az.user_identities.clear();
    }
    let server = mocks(cloud).await;
    let cfg = ProviderConfig::with_env(mock_env(&server, &[]), Fs::from_files::<&str, &str>([]));
    let d = detect_provider(&cfg, &opts(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(d.provider.kind(), CloudProvider::Azure, "detected");
    let err = d
        .provider
        .identity(&cfg, &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, s2iam::ProviderError::NoIdentity { .. }),
        "{err}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_fast_path_does_no_io_and_an_explicit_provider_skips_detection() {
    let server = mocks(CloudConfig::none()).await;
    for (var, want) in [
        ("AWS_EXECUTION_ENV", CloudProvider::Aws),
        ("GCE_METADATA_HOST", CloudProvider::Gcp),
        ("MSI_ENDPOINT", CloudProvider::Azure),
    ] {
        let cfg = ProviderConfig::with_env(
            mock_env(&server, &[(var, "127.0.0.1:9")]),
            Fs::from_files::<&str, &str>([]),
        );
        let d = detect_provider(&cfg, &opts(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(d.provider.kind(), want, "{var}");
        assert!(
            matches!(d.method, DetectionMethod::Environment(ref e) if e.contains(var)),
            "{var}: {:?}",
            d.method
        );
    }
    let cfg = ProviderConfig::with_env(mock_env(&server, &[]), Fs::from_files::<&str, &str>([]));
    let d = detect_provider(
        &cfg,
        &DetectOptions {
            provider: Some(CloudProvider::Gcp),
            ..opts(Duration::from_secs(5))
        },
    )
    .await
    .unwrap();
    assert_eq!(d.method, DetectionMethod::Explicit);
    assert!(
        server.cloud_requests().entries().is_empty(),
        "no request was sent"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn assume_role_returns_a_new_provider_and_leaves_the_detected_one_alone() {
    let server = mocks(CloudConfig::aws()).await;
    let cfg = ProviderConfig::with_env(mock_env(&server, &[]), Fs::from_files::<&str, &str>([]));
    let d = detect_provider(&cfg, &opts(Duration::from_secs(5)))
        .await
        .unwrap();
    let role = "arn:aws:iam::123456789012:role/other";
    let assumed = d.provider.assume_role(role).unwrap();
    let (_, base_id) = d
        .provider
        .identity(&cfg, &Default::default())
        .await
        .unwrap();
    let (_, role_id) = assumed.identity(&cfg, &Default::default()).await.unwrap();
    assert!(
        base_id.identifier.contains("s2iam-test-role"),
        "{base_id:?}"
    );
    assert!(
        role_id
            .identifier
            .contains("assumed-role/other/s2iam-session"),
        "{role_id:?}"
    );
    assert!(d.provider.assume_role("not-an-arn").is_err());
    server.shutdown().await;
}
