//! The Azure provider against the mock IMDS, App Service identity endpoint, Azure Arc
//! agent, legacy `MSI_ENDPOINT` and Azure AD, and a fake `az`: detection (positive
//! and every negative), system and user-assigned managed identities, "Identity not
//! found", throttling and bounded retries, App Service with the right and a wrong
//! header, Arc's challenge and every key file it must refuse, `MSI_ENDPOINT` with the
//! right and a wrong secret and both `expires_on` shapes, Cloud Shell, the Azure CLI
//! (logged in, not logged in, failing, hanging, missing), AKS workload identity with
//! a good and a bad assertion, and the tokens of every source verified end to end by
//! the mock auth service.

// Tests and benches own their environment and clock (rule 4 is for the library).
#![allow(clippy::disallowed_methods)]

use crate::common::{bearer, claims, exchange_api_token, mocks as start, refused_url};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use s2iam::env::ProviderConfig;
use s2iam::env::{Env, Fs};
use s2iam::http::RetryPolicy;
use s2iam::provider::azure::{AzureProvider, PROBE_TIMEOUT};
use s2iam::provider::{CloudProvider, IdentityRequest, ProbeError, ProviderError};
use s2iam::{detect_provider, DetectOptions, IdentityHeaders};
use s2iam_testserver::{ArcChallenge, AzureIdentity, CloudConfig, FaultRule, TestServer};

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

fn azure() -> AzureIdentity {
    CloudConfig::azure().azure.unwrap()
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
        let token = exchange_api_token(&server, &headers, &identity)
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

// ---------------------------------------------------------------------------
// Shared by the sources below
// ---------------------------------------------------------------------------

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("s2iam-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Exchanges `headers` at the mock auth service, which verifies the access token.
async fn exchange_accepts(
    server: &TestServer,
    headers: &IdentityHeaders,
    identity: &s2iam::CloudIdentity,
) {
    let token = exchange_api_token(server, headers, identity)
        .await
        .expect("the mock auth service verifies the access token");
    assert_eq!(token.claims.provider.as_deref(), Some("azure"));
    let verified = server.auth().records().pop().unwrap().identity.unwrap();
    assert_eq!(verified.identifier, identity.identifier);
}

// ---------------------------------------------------------------------------
// Azure Arc
// ---------------------------------------------------------------------------

const ARC_PATH: &str = "/arc/metadata/identity/oauth2/token";

async fn arc_server(keys: &TempDir, challenge: ArcChallenge) -> TestServer {
    let mut cloud = CloudConfig::azure();
    let az = cloud.azure.as_mut().unwrap();
    az.arc_key_dir = Some(keys.0.clone());
    az.arc_challenge = challenge;
    start(cloud).await
}

fn arc_cfg(server: &TestServer, allowed_dir: &std::path::Path) -> ProviderConfig {
    let base = server.cloud_url();
    let endpoint = format!("{base}{ARC_PATH}");
    let imds = format!("{base}/arc");
    cfg_with(
        &base,
        &[
            ("IDENTITY_ENDPOINT", endpoint.as_str()),
            ("IMDS_ENDPOINT", imds.as_str()),
        ],
        Fs::real(),
    )
    .with_azure_arc_key_dir(allowed_dir)
}

#[tokio::test]
async fn arc_challenge_key_file_and_basic_retry() {
    let keys = TempDir::new("arc");
    let server = arc_server(&keys, ArcChallenge::Normal).await;
    let cfg = arc_cfg(&server, &keys.0);
    let evidence = AzureProvider::fast_detect(&cfg).unwrap();
    assert!(
        evidence.contains("IMDS_ENDPOINT") && evidence.contains("Azure Arc"),
        "{evidence}"
    );
    let system = azure().system_identity.unwrap();
    let (headers, id) = identity(&AzureProvider::default(), &cfg).await.unwrap();
    assert_eq!(id.identifier, system.object_id);
    assert_eq!(id.additional_claims["identity_source"], "azure-arc");
    let c = claims(&bearer(&headers));
    assert!(c["xms_az_rid"]
        .as_str()
        .unwrap()
        .contains("Microsoft.HybridCompute/machines"));
    // First the challenge, then the answer; IMDS is not asked.
    let log = server.cloud_requests().entries();
    let arc: Vec<_> = log.iter().filter(|r| r.path == ARC_PATH).collect();
    assert_eq!(arc.iter().map(|r| r.status).collect::<Vec<_>>(), [401, 200]);
    assert!(
        arc[0].query.contains("api-version=2020-06-01"),
        "{}",
        arc[0].query
    );
    assert_eq!(server.cloud_requests().count("/metadata/"), 0);
    // The key the agent wrote never shows in what we return.
    let key_file = std::fs::read_dir(&keys.0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let key = std::fs::read_to_string(key_file).unwrap();
    assert!(!format!("{headers:?} {id:?}").contains(&key));
    exchange_accepts(&server, &headers, &id).await;

    // A user-assigned identity by client id.
    let uami = azure().user_identities[0].clone();
    let (_, id) = identity(
        &AzureProvider::default()
            .assume_role(&uami.client_id)
            .unwrap(),
        &cfg,
    )
    .await
    .unwrap();
    assert_eq!(id.identifier, uami.object_id);
    server.shutdown().await;
}

/// Every challenge the SDKs refuse to follow is refused, with one request only (no
/// key is sent), and the error says why.
#[tokio::test]
async fn arc_refuses_bad_challenges() {
    for (challenge, want) in [
        (ArcChallenge::MissingHeader, "without a Www-Authenticate"),
        (ArcChallenge::WrongDirectory, "not directly in"),
        (ArcChallenge::NotKeySuffix, "not a .key file"),
        (ArcChallenge::OversizeKey, "4097 bytes"),
    ] {
        let keys = TempDir::new("arc-bad");
        let server = arc_server(&keys, challenge).await;
        let err = identity(&AzureProvider::default(), &arc_cfg(&server, &keys.0))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ProviderError::Upstream { .. }),
            "{challenge:?}: {err:?}"
        );
        assert!(
            msg.contains(want) && msg.contains("Azure Arc"),
            "{challenge:?}: {msg}"
        );
        assert_eq!(
            server.cloud_requests().count(ARC_PATH),
            1,
            "{challenge:?}: not retried"
        );
        server.shutdown().await;
    }
}

/// The agent's key directory is where the key must be: a mock writing elsewhere
/// (here: any directory but the real one) is refused with the default setting.
#[tokio::test]
async fn arc_key_outside_the_agent_directory_is_refused() {
    let keys = TempDir::new("arc-elsewhere");
    let server = arc_server(&keys, ArcChallenge::Normal).await;
    let cfg = arc_cfg(
        &server,
        std::path::Path::new(s2iam::env::DEFAULT_AZURE_ARC_KEY_DIR),
    );
    let msg = identity(&AzureProvider::default(), &cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("not directly in /var/opt/azcmagent/tokens"),
        "{msg}"
    );
    server.shutdown().await;
}

/// An agent without user-assigned identities answers with the machine's own: the
/// token is refused rather than used as the wrong identity (as MSAL does).
#[tokio::test]
async fn arc_legacy_agent_ignoring_the_client_id_is_refused() {
    let keys = TempDir::new("arc-legacy");
    let mut cloud = CloudConfig::azure();
    let az = cloud.azure.as_mut().unwrap();
    az.arc_key_dir = Some(keys.0.clone());
    az.arc_legacy_agent = true;
    let server = start(cloud).await;
    let cfg = arc_cfg(&server, &keys.0);
    identity(&AzureProvider::default(), &cfg)
        .await
        .expect("system identity");
    let uami = azure().user_identities[0].client_id.clone();
    let msg = identity(&AzureProvider::default().assume_role(&uami).unwrap(), &cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("did not confirm the user-assigned identity"),
        "{msg}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn arc_transient_errors_restart_the_challenge() {
    let keys = TempDir::new("arc-retry");
    let server = arc_server(&keys, ArcChallenge::Normal).await;
    server
        .cloud_faults()
        .add(FaultRule::status(ARC_PATH, 503).times(1));
    identity(&AzureProvider::default(), &arc_cfg(&server, &keys.0))
        .await
        .expect("the second attempt succeeds");
    let statuses: Vec<u16> = server
        .cloud_requests()
        .entries()
        .iter()
        .filter(|r| r.path == ARC_PATH)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [503, 401, 200]);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Legacy MSI_ENDPOINT (Azure ML, older App Service, Cloud Shell)
// ---------------------------------------------------------------------------

const MSI_PATH: &str = "/MSI/token";

fn msi_cfg(server: &TestServer, secret: Option<&str>) -> ProviderConfig {
    let endpoint = format!("{}{MSI_PATH}", server.cloud_url());
    let mut env = vec![("MSI_ENDPOINT", endpoint.as_str())];
    if let Some(s) = secret {
        env.push(("MSI_SECRET", s));
    }
    cfg_with(&server.cloud_url(), &env, Fs::from_files::<&str, &str>([]))
}

#[tokio::test]
async fn msi_endpoint_with_the_right_secret() {
    let server = start(CloudConfig::azure()).await;
    let az = azure();
    let cfg = msi_cfg(&server, Some(&az.msi_secret));
    assert!(AzureProvider::fast_detect(&cfg)
        .unwrap()
        .contains("MSI_ENDPOINT"));
    let (headers, id) = identity(&AzureProvider::default(), &cfg).await.unwrap();
    assert_eq!(id.identifier, az.system_identity.clone().unwrap().object_id);
    assert_eq!(id.additional_claims["identity_source"], "msi-endpoint");
    let log = server.cloud_requests().entries();
    let q = &log.iter().find(|r| r.path == MSI_PATH).unwrap().query;
    assert!(
        q.contains("api-version=2017-09-01") && q.contains("resource="),
        "{q}"
    );
    assert_eq!(
        server.cloud_requests().count("/metadata/"),
        0,
        "IMDS is not asked"
    );
    exchange_accepts(&server, &headers, &id).await;

    // Azure ML's spelling of the client id selects the user-assigned identity.
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
    let log = server.cloud_requests().entries();
    assert!(log
        .last()
        .unwrap()
        .query
        .contains(&format!("clientid={}", uami.client_id)));
    server.shutdown().await;
}

#[tokio::test]
async fn msi_endpoint_with_a_wrong_or_missing_secret() {
    let server = start(CloudConfig::azure()).await;
    let wrong = "definitely-not-the-msi-secret";
    let err = identity(&AzureProvider::default(), &msi_cfg(&server, Some(wrong)))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("403") && msg.contains("MSI_SECRET"), "{msg}");
    assert!(!msg.contains(wrong), "the secret is a secret: {msg}");
    assert_eq!(server.cloud_requests().count(MSI_PATH), 1, "not retried");
    server.shutdown().await;
}

/// App Service's 2017-09-01 `expires_on` is a date string: it is read, so a token
/// the source reports expired (here: the local clock two hours ahead) is refused.
#[tokio::test]
async fn msi_endpoint_date_expiry_is_read() {
    let mut cloud = CloudConfig::azure();
    cloud.azure.as_mut().unwrap().msi_date_expiry = true;
    let server = start(cloud).await;
    let secret = azure().msi_secret;
    let cfg = msi_cfg(&server, Some(&secret));
    identity(&AzureProvider::default(), &cfg)
        .await
        .expect("fresh token");
    let ahead = std::sync::Arc::new(s2iam::env::OffsetClock(7200));
    let err = identity(&AzureProvider::default(), &cfg.with_clock(ahead))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expired") && err.contains("MSI_ENDPOINT"),
        "{err}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn cloud_shell_posts_with_metadata() {
    let server = start(CloudConfig::azure()).await;
    let cfg = msi_cfg(&server, None);
    let (headers, id) = identity(&AzureProvider::default(), &cfg).await.unwrap();
    assert_eq!(id.additional_claims["identity_source"], "cloud-shell");
    let log = server.cloud_requests().entries();
    let req = log.iter().find(|r| r.path == MSI_PATH).unwrap();
    assert_eq!((req.method.as_str(), req.status), ("POST", 200));
    exchange_accepts(&server, &headers, &id).await;
    let uami = azure().user_identities[0].client_id.clone();
    assert!(matches!(
        identity(&AzureProvider::default().assume_role(&uami).unwrap(), &cfg).await,
        Err(ProviderError::AssumeRoleNotSupported { .. })
    ));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// The Azure CLI (a fake `az`)
// ---------------------------------------------------------------------------

/// A fake `az` in `dir` running `body` (sh), after recording its arguments.
fn fake_az(dir: &TempDir, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.0.join("az");
    let args = dir.0.join("args");
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n{body}\n", args.display()),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn az_args(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.0.join("args")).unwrap_or_default()
}

/// A machine with no metadata service, and `az` as given.
fn cli_cfg(server: &TestServer, az: &str, extra: &[(&str, &str)]) -> ProviderConfig {
    let env: Vec<(&str, &str)> = [("S2IAM_AZURE_CLI", az)]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    cfg_with(&server.cloud_url(), &env, Fs::real())
}

fn az_json(token: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    format!(
        r#"{{"accessToken": "{token}", "expiresOn": "2030-01-01 00:00:00.000000", "expires_on": {exp}, "subscription": "sub-from-az", "tenant": "t", "tokenType": "Bearer"}}"#
    )
}

#[tokio::test]
async fn azure_cli_login_when_no_metadata_answers() {
    let server = start(CloudConfig::none()).await;
    // The token az would hold: the signed-in identity's ARM token.
    let mut on = CloudConfig::azure();
    on.token_ttl = Duration::from_secs(3600);
    server.cloud().update(|c| c.azure = on.azure.clone());
    let system = azure().system_identity.unwrap();
    let token = s2iam_testserver::cloud::azure::mint_managed_identity_token(
        server.cloud(),
        &system,
        "https://management.azure.com/",
    )
    .unwrap();
    server.cloud().update(|c| c.azure = None);
    let dir = TempDir::new("az");
    let az = fake_az(&dir, &format!("cat <<'EOF'\n{}\nEOF", az_json(&token)));
    let cfg = cli_cfg(
        &server,
        &az,
        &[("AZURE_TENANT_ID", "contoso.onmicrosoft.com")],
    );

    // Detection: nothing answers, the CLI is there.
    let found = detect_provider(&cfg, &DetectOptions::default())
        .await
        .expect("Azure");
    assert_eq!(found.provider.kind(), CloudProvider::Azure);
    match &found.method {
        s2iam::provider::detect::DetectionMethod::Environment(e) => {
            assert!(e.contains("Azure CLI") && e.contains(&az), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(az_args(&dir), "", "detection does not run az");

    let (headers, id) = identity(&AzureProvider::default(), &cfg).await.unwrap();
    assert_eq!(id.identifier, system.object_id);
    assert_eq!(id.additional_claims["identity_source"], "azure-cli");
    assert_eq!(id.account_id, "sub-from-az");
    assert_eq!(
        az_args(&dir).trim(),
        "account get-access-token --output json --resource https://management.azure.com/ --tenant contoso.onmicrosoft.com"
    );
    server.cloud().update(|c| c.azure = on.azure.clone());
    exchange_accepts(&server, &headers, &id).await;
    server.shutdown().await;
}

/// On a VM, IMDS answers and the CLI is not run (it is the last source).
#[tokio::test]
async fn azure_cli_is_not_used_where_imds_answers() {
    let server = start(CloudConfig::azure()).await;
    let dir = TempDir::new("az-vm");
    let az = fake_az(&dir, "exit 3");
    let (_, id) = identity(&AzureProvider::default(), &cli_cfg(&server, &az, &[]))
        .await
        .unwrap();
    assert_eq!(id.additional_claims["identity_source"], "imds");
    assert_eq!(az_args(&dir), "");
    server.shutdown().await;
}

/// A VM whose IMDS is throttled or failing is still a VM: its managed identity is
/// used (with retries), never the developer's `az` login.
#[tokio::test]
async fn azure_cli_is_not_used_when_imds_is_only_flaky() {
    let server = start(CloudConfig::azure()).await;
    server
        .cloud_faults()
        .add(FaultRule::status(INSTANCE_PATH, 503).times(3));
    let dir = TempDir::new("az-flaky");
    let az = fake_az(&dir, "exit 3");
    let (_, id) = identity(&AzureProvider::default(), &cli_cfg(&server, &az, &[]))
        .await
        .unwrap();
    assert_eq!(id.additional_claims["identity_source"], "imds");
    assert_eq!(az_args(&dir), "", "az was not run");
    server.shutdown().await;
}

#[tokio::test]
async fn azure_cli_failures_are_clear() {
    let server = start(CloudConfig::none()).await;
    let dir = TempDir::new("az-fail");

    let az = fake_az(
        &dir,
        "echo \"ERROR: Please run 'az login' to setup account.\" >&2; exit 1",
    );
    let err = identity(&AzureProvider::default(), &cli_cfg(&server, &az, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::NoIdentity { reason, .. }
            if reason.contains("not logged in") && reason.contains("Please run 'az login'")),
        "{err:?}"
    );

    let az = fake_az(
        &dir,
        "echo 'ERROR: AADSTS700082: The refresh token has expired. eyJhbGciOiJSUzI1NiJ9.e30.c2ln' >&2; exit 1",
    );
    let msg = identity(&AzureProvider::default(), &cli_cfg(&server, &az, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("status 1") && msg.contains("AADSTS700082"),
        "{msg}"
    );
    assert!(!msg.contains("eyJhbGciOiJSUzI1NiJ9"), "{msg}");

    // An old az printing only expiresOn (local time), long past in any zone.
    let az = fake_az(
        &dir,
        r#"echo '{"accessToken": "e30.e30.c2ln", "expiresOn": "2020-01-01 00:00:00.000000"}'"#,
    );
    let msg = identity(&AzureProvider::default(), &cli_cfg(&server, &az, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("expired") && msg.contains("Azure CLI"),
        "{msg}"
    );

    let az = fake_az(&dir, "echo 'not json'");
    let msg = identity(&AzureProvider::default(), &cli_cfg(&server, &az, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no accessToken"), "{msg}");

    let err = identity(
        &AzureProvider::default(),
        &cli_cfg(&server, "/nonexistent/bin/az", &[]),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ProviderError::NoIdentity { reason, .. } if reason.contains("not installed")),
        "{err:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn azure_cli_that_hangs_is_stopped() {
    let server = start(CloudConfig::none()).await;
    let dir = TempDir::new("az-hang");
    let az = fake_az(&dir, "exec sleep 30");
    let began = Instant::now();
    let msg = identity(
        &AzureProvider::default(),
        &cli_cfg(&server, &az, &[("S2IAM_AZURE_CLI_TIMEOUT", "1")]),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(msg.contains("did not answer within 1 s"), "{msg}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// The s2iam command names the source
// ---------------------------------------------------------------------------

async fn s2iam_cli(server: &TestServer, extra: &[(&str, &str)], args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_s2iam"));
    cmd.env_clear();
    for (k, v) in s2iam::env::endpoints::mock_env(&server.cloud_url()) {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn detect_and_identity_name_the_source() {
    let server = start(CloudConfig::azure()).await;
    let endpoint = format!("{}{MSI_PATH}", server.cloud_url());
    let secret = azure().msi_secret;
    let msi = [
        ("MSI_ENDPOINT", endpoint.as_str()),
        ("MSI_SECRET", secret.as_str()),
    ];
    let detect = s2iam_cli(&server, &msi, &["detect", "--json"]).await;
    let detect: serde_json::Value = serde_json::from_str(&detect).unwrap();
    assert_eq!(detect["provider"], "azure");
    let evidence = detect["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("MSI_ENDPOINT is set") && evidence.contains("MSI_SECRET"),
        "{evidence}"
    );
    let id = s2iam_cli(&server, &msi, &["identity", "--json"]).await;
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    assert_eq!(id["additional_claims"]["identity_source"], "msi-endpoint");

    // No metadata at all, and an az that is logged in: the Azure CLI, named as such.
    let system = azure().system_identity.unwrap();
    let token = s2iam_testserver::cloud::azure::mint_managed_identity_token(
        server.cloud(),
        &system,
        "https://management.azure.com/",
    )
    .unwrap();
    server.cloud().update(|c| c.azure = None);
    let dir = TempDir::new("az-cli");
    let az = fake_az(&dir, &format!("cat <<'EOF'\n{}\nEOF", az_json(&token)));
    let with_az = [("S2IAM_AZURE_CLI", az.as_str())];
    let detect = s2iam_cli(&server, &with_az, &["detect"]).await;
    assert!(
        detect.starts_with("azure (from the environment: no metadata service answered")
            && detect.contains("Azure CLI"),
        "{detect}"
    );
    let id = s2iam_cli(&server, &with_az, &["identity"]).await;
    assert!(id.contains("identity_source: azure-cli"), "{id}");
    assert!(id.contains(&system.object_id), "{id}");
    assert!(!id.contains(&token));
    server.shutdown().await;
}
