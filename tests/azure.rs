//! The Azure provider against the mock IMDS, App Service identity endpoint and Azure
//! AD: detection (positive and every negative), system and user-assigned managed
//! identities, "Identity not found", throttling and bounded retries, App Service with
//! the right and a wrong header, AKS workload identity with a good and a bad
//! assertion, and the headers verified end to end by the mock auth service.

mod common;

use common::mocks as start;

use std::time::{Duration, Instant};

use base64::Engine as _;
use s2iam::env::{Env, Fs};
use s2iam::exchange::{ExchangeClient, ExchangeConfig, ExchangeRequest, JwtType, ServerUrl};
use s2iam::provider::azure::{AzureProvider, PROBE_TIMEOUT};
use s2iam::provider::{
    CloudProvider, IdentityRequest, ProbeError, ProviderConfig, ProviderError, RetryPolicy,
};
use s2iam::{detect_provider, DetectOptions, IdentityHeaders};
use s2iam_testserver::{AzureIdentity, CloudConfig, FaultRule, TestServer};

const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const INSTANCE_PATH: &str = "/metadata/instance";
const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";

fn cfg_with(base: &str, extra: &[(&str, &str)], fs: Fs) -> ProviderConfig {
    let env = s2iam::env::endpoints::mock_env(base)
        .into_iter()
        // Fast backoff through the reference client's own knob.
        .chain([("S2IAM_AZURE_MI_BACKOFF_MS".to_string(), "2".to_string())])
        .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ProviderConfig::with_env(Env::from_pairs(env), fs)
}

fn cfg(server: &TestServer) -> ProviderConfig {
    cfg_with(&server.cloud_url(), &[], Fs::from_files::<&str, &str>([]))
}

fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

fn azure() -> AzureIdentity {
    CloudConfig::azure().azure.unwrap()
}

fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

fn bearer(headers: &IdentityHeaders) -> String {
    let value = headers
        .get("Authorization")
        .expect("Authorization")
        .expose();
    value.strip_prefix("Bearer ").expect("Bearer").to_string()
}

fn header<'a>(headers: &'a IdentityHeaders, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.expose())
}

async fn identity(
    provider: &AzureProvider,
    cfg: &ProviderConfig,
) -> Result<(IdentityHeaders, s2iam::CloudIdentity), ProviderError> {
    provider.identity(cfg, &IdentityRequest::default()).await
}

// ---------------------------------------------------------------------------
// Detection
// ---------------------------------------------------------------------------

#[tokio::test]
async fn probe_finds_imds() {
    let server = start(CloudConfig::azure()).await;
    AzureProvider::probe(&cfg(&server)).await.expect("Azure");
    server.shutdown().await;
}

#[tokio::test]
async fn probe_negatives_refused_blackhole_and_other_clouds() {
    let err = AzureProvider::probe(&cfg_with(
        &refused_url(),
        &[],
        Fs::from_files::<&str, &str>([]),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, ProbeError::Refused { .. }), "{err:?}");

    let server = start(CloudConfig::azure()).await;
    server
        .cloud_faults()
        .add(FaultRule::blackhole(INSTANCE_PATH));
    let start_at = Instant::now();
    let err = AzureProvider::probe(&cfg(&server)).await.unwrap_err();
    assert!(matches!(err, ProbeError::Timeout { .. }), "{err:?}");
    assert!(start_at.elapsed() < PROBE_TIMEOUT + Duration::from_secs(1));
    server.shutdown().await;

    for cloud in [CloudConfig::gcp(), CloudConfig::aws(), CloudConfig::none()] {
        let server = start(cloud).await;
        let err = AzureProvider::probe(&cfg(&server)).await.unwrap_err();
        assert!(
            matches!(err, ProbeError::Status { status: 404, .. }),
            "{err:?}"
        );
        server.shutdown().await;
    }
}

#[tokio::test]
async fn probe_retries_a_throttled_imds_quickly() {
    let server = start(CloudConfig::azure()).await;
    server
        .cloud_faults()
        .add(FaultRule::status(INSTANCE_PATH, 429).times(2));
    AzureProvider::probe(&cfg(&server))
        .await
        .expect("third attempt answers");
    assert_eq!(server.cloud_requests().count(INSTANCE_PATH), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn detection_picks_azure_by_probe() {
    let server = start(CloudConfig::azure()).await;
    let found = detect_provider(&cfg(&server), &DetectOptions::default())
        .await
        .expect("detected");
    assert_eq!(found.provider.kind(), CloudProvider::Azure);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// IMDS managed identities
// ---------------------------------------------------------------------------

#[tokio::test]
async fn system_identity_headers_and_identity() {
    let server = start(CloudConfig::azure()).await;
    let az = azure();
    let system = az.system_identity.clone().unwrap();
    let (headers, id) = identity(&AzureProvider::default(), &cfg(&server))
        .await
        .expect("identity");
    let names: Vec<&str> = headers.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "X-Cloud-Provider",
            "Authorization",
            "X-Azure-Subscription-ID",
            "X-Azure-Resource-Group"
        ]
    );
    assert_eq!(header(&headers, "X-Cloud-Provider"), Some("azure"));
    assert_eq!(
        header(&headers, "X-Azure-Subscription-ID"),
        Some(az.subscription_id.as_str())
    );
    assert_eq!(
        header(&headers, "X-Azure-Resource-Group"),
        Some(az.resource_group.as_str())
    );
    let token = bearer(&headers);
    let c = claims(&token);
    assert_eq!(c["oid"], system.object_id.as_str());
    assert_eq!(c["aud"], "https://management.azure.com/");

    assert_eq!(id.provider, CloudProvider::Azure);
    assert_eq!(id.identifier, system.object_id);
    assert_eq!(id.account_id, az.subscription_id);
    assert_eq!(id.region, az.location);
    assert_eq!(id.resource_type, "azure-managed-identity");
    assert_eq!(id.additional_claims["metadata_location"], az.location);
    assert_eq!(id.additional_claims["tenant_id"], az.tenant_id);
    assert_eq!(id.additional_claims["identity_source"], "imds");
    assert!(!format!("{headers:?} {id:?}").contains(&token));

    let seen = server.cloud_requests().entries();
    let q = &seen.iter().find(|r| r.path == TOKEN_PATH).unwrap().query;
    assert!(
        q.contains("api-version=2018-02-01") && !q.contains("client_id"),
        "{q}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_custom_resource_reaches_the_token() {
    let server = start(CloudConfig::azure()).await;
    let req = IdentityRequest {
        azure_resource: "https://ossrdbms-aad.database.windows.net".into(),
        ..IdentityRequest::default()
    };
    let (headers, _) = AzureProvider::default()
        .identity(&cfg(&server), &req)
        .await
        .unwrap();
    assert_eq!(
        claims(&bearer(&headers))["aud"],
        "https://ossrdbms-aad.database.windows.net"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn user_assigned_identity_by_client_id() {
    let server = start(CloudConfig::azure()).await;
    let uami = azure().user_identities[0].clone();
    let base = AzureProvider::default();
    let provider = base.assume_role(&uami.client_id).unwrap();
    assert!(base.client_id().is_none(), "the original is untouched");
    let (headers, id) = identity(&provider, &cfg(&server)).await.unwrap();
    let c = claims(&bearer(&headers));
    assert_eq!(c["oid"], uami.object_id.as_str());
    assert_eq!(c["xms_mirid"], uami.resource_id.as_str());
    assert_eq!(id.identifier, uami.object_id);
    assert_eq!(id.additional_claims["xms_mirid"], uami.resource_id);
    let seen = server.cloud_requests().entries();
    let q = &seen.iter().find(|r| r.path == TOKEN_PATH).unwrap().query;
    assert!(q.contains(&format!("client_id={}", uami.client_id)), "{q}");
    server.shutdown().await;
}

#[tokio::test]
async fn assume_role_needs_a_client_id_guid() {
    for bad in [
        "arn:aws:iam::1:role/x",
        "sa@p.iam.gserviceaccount.com",
        "1234",
    ] {
        assert!(matches!(
            AzureProvider::default().assume_role(bad),
            Err(ProviderError::InvalidRole {
                provider: CloudProvider::Azure,
                ..
            })
        ));
    }
}

#[tokio::test]
async fn identity_not_found_is_no_identity() {
    let server = start(CloudConfig::azure()).await;
    // A client id that is not assigned to the VM.
    let stranger = "00000000-1111-4222-8333-444444444444";
    let err = identity(
        &AzureProvider::default().assume_role(stranger).unwrap(),
        &cfg(&server),
    )
    .await
    .unwrap_err();
    match err {
        ProviderError::NoIdentity { provider, reason } => {
            assert_eq!(provider, CloudProvider::Azure);
            assert!(reason.contains(stranger), "{reason}");
        }
        other => panic!("expected NoIdentity, got {other:?}"),
    }
    // A VM with no identity at all: still Azure, no identity, and no retries.
    server.cloud().update(|c| {
        let az = c.azure.as_mut().unwrap();
        az.system_identity = None;
        az.user_identities.clear();
    });
    server.cloud_requests().clear();
    AzureProvider::probe(&cfg(&server))
        .await
        .expect("still Azure");
    let err = identity(&AzureProvider::default(), &cfg(&server))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::NoIdentity { reason, .. } if reason.contains("system-assigned")),
        "{err:?}"
    );
    assert_eq!(server.cloud_requests().count(TOKEN_PATH), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn throttling_is_retried_until_it_passes() {
    let server = start(CloudConfig::azure()).await;
    server
        .cloud_faults()
        .add(FaultRule::status(TOKEN_PATH, 429).times(3));
    let (_, id) = identity(&AzureProvider::default(), &cfg(&server))
        .await
        .expect("the fourth attempt succeeds");
    assert_eq!(id.identifier, azure().system_identity.unwrap().object_id);
    let log = server.cloud_requests();
    assert_eq!(log.count(TOKEN_PATH), 4);
    let throttled = log
        .entries()
        .iter()
        .filter(|r| r.path == TOKEN_PATH && r.status == 429)
        .count();
    assert_eq!(throttled, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn retries_are_bounded_and_the_error_says_why() {
    let server = start(CloudConfig::azure()).await;
    server
        .cloud_faults()
        .add(FaultRule::status(TOKEN_PATH, 503));
    let cfg = cfg_with(
        &server.cloud_url(),
        &[("S2IAM_AZURE_MI_RETRIES", "4")],
        Fs::from_files::<&str, &str>([]),
    );
    let err = identity(&AzureProvider::default(), &cfg).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::Upstream { .. }), "{err:?}");
    assert!(msg.contains("gave up after 4 attempts"), "{msg}");
    assert!(msg.contains("HTTP 503"), "{msg}");
    assert!(msg.contains("IMDS managed identity token"), "{msg}");
    assert_eq!(server.cloud_requests().count(TOKEN_PATH), 4);
    server.shutdown().await;
}

/// IMDS answers 410 while it is updated and asks for a long wait; the wait is capped
/// by what is left of the retry budget.
#[tokio::test]
async fn gone_waits_within_the_budget_and_retries() {
    let server = start(CloudConfig::azure()).await;
    server
        .cloud_faults()
        .add(FaultRule::status(TOKEN_PATH, 410).times(1));
    let provider = AzureProvider::default().with_retry_policy(RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        budget: Duration::from_millis(300),
    });
    let start_at = Instant::now();
    identity(&provider, &cfg(&server))
        .await
        .expect("second attempt");
    let elapsed = start_at.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(server.cloud_requests().count(TOKEN_PATH), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn instance_metadata_is_best_effort() {
    let server = start(CloudConfig::azure()).await;
    server
        .cloud_faults()
        .add(FaultRule::status(INSTANCE_PATH, 500));
    let (headers, id) = identity(&AzureProvider::default(), &cfg(&server))
        .await
        .expect("the token is enough");
    assert!(header(&headers, "X-Azure-Subscription-ID").is_none());
    assert!(header(&headers, "X-Azure-Resource-Group").is_none());
    assert_eq!((id.account_id.as_str(), id.region.as_str()), ("", ""));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// App Service / Container Apps
// ---------------------------------------------------------------------------

fn app_service_cfg(server: &TestServer, header_value: &str) -> ProviderConfig {
    let endpoint = format!("{}/msi/token", server.cloud_url());
    cfg_with(
        &server.cloud_url(),
        &[
            ("IDENTITY_ENDPOINT", endpoint.as_str()),
            ("IDENTITY_HEADER", header_value),
        ],
        Fs::from_files::<&str, &str>([]),
    )
}

#[tokio::test]
async fn app_service_endpoint_with_the_right_header() {
    let server = start(CloudConfig::azure()).await;
    let az = azure();
    let cfg = app_service_cfg(&server, &az.identity_header);
    assert!(AzureProvider::fast_detect(&cfg)
        .unwrap()
        .contains("IDENTITY_ENDPOINT"));
    let (headers, id) = identity(&AzureProvider::default(), &cfg).await.unwrap();
    assert_eq!(id.identifier, az.system_identity.clone().unwrap().object_id);
    assert_eq!(id.additional_claims["identity_source"], "app-service");
    assert_eq!(header(&headers, "X-Cloud-Provider"), Some("azure"));
    assert!(header(&headers, "X-Azure-Subscription-ID").is_none());
    let log = server.cloud_requests();
    assert_eq!(log.count("/msi/token"), 1);
    assert_eq!(log.count("/metadata/"), 0, "IMDS is not asked");

    // A user-assigned identity by client id.
    let uami = az.user_identities[0].clone();
    let (_, id) = identity(
        &AzureProvider::default()
            .assume_role(&uami.client_id)
            .unwrap(),
        &cfg,
    )
    .await
    .unwrap();
    assert_eq!(id.identifier, uami.object_id);
    let unknown = AzureProvider::default()
        .assume_role("00000000-1111-4222-8333-444444444444")
        .unwrap();
    assert!(matches!(
        identity(&unknown, &cfg).await,
        Err(ProviderError::NoIdentity { .. })
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn app_service_endpoint_with_a_wrong_header() {
    let server = start(CloudConfig::azure()).await;
    let wrong = "definitely-not-the-identity-header";
    let err = identity(&AzureProvider::default(), &app_service_cfg(&server, wrong))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::Upstream { .. }), "{err:?}");
    assert!(
        msg.contains("403") && msg.contains("IDENTITY_HEADER"),
        "{msg}"
    );
    assert!(!msg.contains(wrong), "the header value is a secret: {msg}");
    assert_eq!(
        server.cloud_requests().count("/msi/token"),
        1,
        "not retried"
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// AKS workload identity
// ---------------------------------------------------------------------------

fn workload_cfg(server: &TestServer, fs: Fs) -> ProviderConfig {
    let az = azure();
    cfg_with(
        &server.cloud_url(),
        &[
            ("AZURE_FEDERATED_TOKEN_FILE", TOKEN_FILE),
            ("AZURE_CLIENT_ID", az.workload_client_ids[0].as_str()),
            ("AZURE_TENANT_ID", az.tenant_id.as_str()),
        ],
        fs,
    )
}

#[tokio::test]
async fn aks_workload_identity_exchanges_the_projected_token() {
    let server = start(CloudConfig::azure()).await;
    let az = azure();
    let assertion = server
        .cloud()
        .mint_aks_federated_token("system:serviceaccount:default:app")
        .unwrap();
    let cfg = workload_cfg(&server, Fs::from_files([(TOKEN_FILE, assertion.as_str())]));
    assert!(AzureProvider::fast_detect(&cfg).is_some());
    let (headers, id) = identity(&AzureProvider::default(), &cfg).await.unwrap();
    let c = claims(&bearer(&headers));
    assert_eq!(c["appid"], az.workload_client_ids[0].as_str());
    assert_eq!(c["tid"], az.tenant_id.as_str());
    assert_eq!(
        c["aud"], "https://management.azure.com",
        "scope = resource/.default"
    );
    assert_eq!(id.identifier, c["oid"].as_str().unwrap());
    assert_eq!(id.additional_claims["identity_source"], "workload-identity");
    assert!(header(&headers, "X-Azure-Subscription-ID").is_none());
    let log = server.cloud_requests();
    assert_eq!(
        log.count(&format!("/{}/oauth2/v2.0/token", az.tenant_id)),
        1
    );
    assert_eq!(log.count("/metadata/"), 0, "IMDS is not asked");
    server.shutdown().await;
}

#[tokio::test]
async fn aks_workload_identity_with_a_bad_assertion() {
    let server = start(CloudConfig::azure()).await;
    let garbage = "not-a-jwt-but-a-secret-looking-string";
    let cfg = workload_cfg(&server, Fs::from_files([(TOKEN_FILE, garbage)]));
    let err = identity(&AzureProvider::default(), &cfg).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::Upstream { .. }), "{err:?}");
    assert!(msg.contains("HTTP 400") && msg.contains("AADSTS"), "{msg}");
    assert!(!msg.contains(garbage), "the assertion is a secret: {msg}");

    // A valid assertion for a client id without a federated credential.
    let assertion = server
        .cloud()
        .mint_aks_federated_token("system:serviceaccount:default:app")
        .unwrap();
    let cfg = workload_cfg(&server, Fs::from_files([(TOKEN_FILE, assertion.as_str())]));
    let stranger = AzureProvider::default()
        .assume_role("00000000-1111-4222-8333-444444444444")
        .unwrap();
    let msg = identity(&stranger, &cfg).await.unwrap_err().to_string();
    assert!(
        msg.contains("HTTP 400") && msg.contains("federated credential"),
        "{msg}"
    );
    assert!(!msg.contains(&assertion));

    // The token file is missing.
    let cfg = workload_cfg(&server, Fs::from_files::<&str, &str>([]));
    let err = identity(&AzureProvider::default(), &cfg).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::NoIdentity { reason, .. } if reason.contains(TOKEN_FILE)),
        "{err:?}"
    );
    server.shutdown().await;
}

/// The kubelet rotates the projected token: every call reads the file again.
#[tokio::test]
async fn aks_token_file_is_reread_on_every_call() {
    let server = start(CloudConfig::azure()).await;
    let dir = std::env::temp_dir().join(format!("s2iam-aks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    let az = azure();
    let path_str = path.to_str().unwrap();
    let cfg = cfg_with(
        &server.cloud_url(),
        &[
            ("AZURE_FEDERATED_TOKEN_FILE", path_str),
            ("AZURE_CLIENT_ID", az.workload_client_ids[0].as_str()),
            ("AZURE_TENANT_ID", az.tenant_id.as_str()),
        ],
        Fs::real(),
    );
    let good = server
        .cloud()
        .mint_aks_federated_token("system:serviceaccount:default:app")
        .unwrap();
    std::fs::write(&path, &good).unwrap();
    identity(&AzureProvider::default(), &cfg)
        .await
        .expect("first call");
    std::fs::write(&path, "rotated-to-garbage").unwrap();
    assert!(identity(&AzureProvider::default(), &cfg).await.is_err());
    std::fs::write(&path, &good).unwrap();
    identity(&AzureProvider::default(), &cfg)
        .await
        .expect("third call");
    std::fs::remove_dir_all(&dir).unwrap();
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_auth_service_accepts_the_headers() {
    let server = start(CloudConfig::azure()).await;
    let uami = azure().user_identities[0].clone();
    for provider in [
        AzureProvider::default(),
        AzureProvider::default()
            .assume_role(&uami.client_id)
            .unwrap(),
    ] {
        let (headers, identity) = identity(&provider, &cfg(&server)).await.unwrap();
        let url = ServerUrl::parse(&server.exchange_url_template(), true).unwrap();
        let req = ExchangeRequest {
            jwt_type: JwtType::Api,
            workspace_group_id: None,
            headers: &headers,
            identity: &identity,
        };
        let token = ExchangeClient::new(ExchangeConfig::default())
            .exchange(&url, req, Duration::from_secs(10))
            .await
            .expect("the mock auth service verifies the access token");
        assert_eq!(token.claims.provider.as_deref(), Some("azure"));
        let record = server.auth().records().pop().unwrap();
        assert_eq!(
            record.headers.get("x-cloud-provider").map(String::as_str),
            Some("azure")
        );
        let verified = record.identity.unwrap();
        assert_eq!(verified.identifier, identity.identifier);
    }
    server.shutdown().await;
}
