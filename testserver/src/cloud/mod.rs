//! The mock cloud: AWS, GCP and Azure metadata services plus the global services
//! clients reach from a VM (AWS STS, Google `iamcredentials`, Azure AD's token
//! endpoint), all routed by path on one listener, the way 169.254.169.254 serves
//! every cloud's paths on the real thing:
//!
//! | paths                                   | service                              | module  |
//! |-----------------------------------------|--------------------------------------|---------|
//! | `/latest/...`                           | AWS IMDS (v2 tokens, v1 fallback)    | `aws`   |
//! | `/v2/credentials/{id}`, `/v1/credentials` | ECS / EKS Pod Identity container credentials | `aws` |
//! | `POST /` (form), `GET /?Action=`        | AWS STS query API                    | `sts`   |
//! | `/computeMetadata/v1/...`               | GCE metadata server                  | `gcp`   |
//! | `/v1/projects/-/serviceAccounts/{sa}:generateIdToken` | IAM Credentials API    | `gcp`   |
//! | `POST /v1/token`, `POST /token`         | Google STS, Google OAuth token endpoint | `gcp` |
//! | `/metadata/...`                         | Azure IMDS (instance, managed identity) | `azure` |
//! | `/msi/token`                            | App Service / Container Apps identity endpoint | `azure` |
//! | `POST /{tenant}/oauth2/v2.0/token`      | Azure AD (workload identity exchange) | `azure` |
//! | `/.well-known/...`, `/jwks/{issuer}`    | issuers' JWKS                        | here    |
//!
//! A cloud that is switched off in [`CloudConfig`] answers 404 on its metadata paths,
//! as another cloud's metadata server would; the global services always answer.

pub mod aws;
pub mod azure;
pub mod gcp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::keys::{Issuer, KeySet};
use crate::util::{now_unix, random_from};

/// Which clouds answer, and who the workload is on each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloudConfig {
    /// Serve AWS metadata as this instance.
    pub aws: Option<AwsIdentity>,
    /// Serve GCE metadata as this instance.
    pub gcp: Option<GcpIdentity>,
    /// Serve Azure IMDS as this VM.
    pub azure: Option<AzureIdentity>,
    /// Lifetime of every credential and token the cloud issues.
    #[serde(with = "crate::util::serde_secs")]
    pub token_ttl: Duration,
    /// Seconds the cloud's clock is ahead of this machine's (negative: behind), as
    /// if the workload's clock had drifted. Applied to the `Date` header of every
    /// response and to STS (its SigV4 time check, the times it issues), so a
    /// request signed with the local clock is refused once the offset passes STS's
    /// 15 minutes. See [`MockCloud::now_unix`].
    #[serde(default)]
    pub clock_offset_secs: i64,
    /// Google's global services off GCE: workload identity federation, and who may
    /// impersonate whom with IAM Credentials.
    #[serde(default)]
    pub google: GoogleServices,
}

impl CloudConfig {
    /// Every cloud off: metadata paths all answer 404.
    pub fn none() -> Self {
        Self {
            aws: None,
            gcp: None,
            azure: None,
            token_ttl: Duration::from_secs(3600),
            clock_offset_secs: 0,
            google: GoogleServices::default(),
        }
    }

    /// The same config with the cloud's clock `offset_secs` ahead of this
    /// machine's (negative: behind).
    pub fn with_clock_offset(mut self, offset_secs: i64) -> Self {
        self.clock_offset_secs = offset_secs;
        self
    }

    /// An AWS instance with default identities.
    pub fn aws() -> Self {
        Self {
            aws: Some(AwsIdentity::default()),
            ..Self::none()
        }
    }

    /// A GCE instance with default identities.
    pub fn gcp() -> Self {
        Self {
            gcp: Some(GcpIdentity::default()),
            ..Self::none()
        }
    }

    /// An Azure VM with default identities.
    pub fn azure() -> Self {
        Self {
            azure: Some(AzureIdentity::default()),
            ..Self::none()
        }
    }

    /// Parses `aws`, `gcp`, `azure` or `none`.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "aws" => Some(Self::aws()),
            "gcp" => Some(Self::gcp()),
            "azure" => Some(Self::azure()),
            "none" => Some(Self::none()),
            _ => None,
        }
    }
}

/// An EC2 instance (or ECS task / EKS pod) and its role.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AwsIdentity {
    /// The 12-digit account.
    pub account_id: String,
    /// The instance's region.
    pub region: String,
    /// The instance's availability zone.
    pub availability_zone: String,
    /// The instance id.
    pub instance_id: String,
    /// The instance profile's role; `None` means no role is attached, so
    /// `iam/security-credentials/` is empty (404), like a real instance.
    pub role_name: Option<String>,
    /// IMDSv1 (no session token) allowed; `false` is `HttpTokens=required`.
    pub imds_v1: bool,
    /// The `Authorization` value the EKS Pod Identity endpoint requires.
    pub container_auth_token: String,
    /// Roles `AssumeRole` may assume; empty means any role in any account.
    pub assumable_roles: Vec<String>,
    /// Roles whose trust policy requires an `sts:ExternalId`: role ARN → the id.
    /// `AssumeRole` without it (or with another) is denied, as STS does.
    #[serde(default)]
    pub role_external_ids: std::collections::BTreeMap<String, String>,
}

impl Default for AwsIdentity {
    fn default() -> Self {
        Self {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            availability_zone: "us-east-1a".into(),
            instance_id: "i-0123456789abcdef0".into(),
            role_name: Some("s2iam-test-role".into()),
            imds_v1: true,
            container_auth_token: "s2iam-test-pod-identity-token".into(),
            assumable_roles: Vec::new(),
            role_external_ids: Default::default(),
        }
    }
}

/// A GCE instance and its service account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcpIdentity {
    /// The project id.
    pub project_id: String,
    /// The numeric project id.
    pub project_number: String,
    /// The instance's zone.
    pub zone: String,
    /// The numeric instance id.
    pub instance_id: String,
    /// The instance name.
    pub instance_name: String,
    /// The default service account; `None` means the instance has none, so identity
    /// requests answer 404 like a real instance without a service account.
    pub service_account: Option<ServiceAccount>,
    /// Service accounts the default one may impersonate with `generateIdToken`.
    pub impersonable: Vec<ServiceAccount>,
}

/// A Google service account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccount {
    /// The service account's email.
    pub email: String,
    /// The numeric `sub` of its tokens.
    pub unique_id: String,
}

impl ServiceAccount {
    /// An account whose unique id is derived from its email, stable across runs.
    pub fn new(email: &str) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(email.as_bytes());
        let n = digest[..8]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        Self {
            email: email.to_string(),
            unique_id: format!("1{:020}", n),
        }
    }
}

impl Default for GcpIdentity {
    fn default() -> Self {
        Self {
            project_id: "s2iam-test-project".into(),
            project_number: "123456789012".into(),
            zone: "us-central1-a".into(),
            instance_id: "4520031799277581759".into(),
            instance_name: "s2iam-test-vm".into(),
            service_account: Some(ServiceAccount::new(
                "s2iam-test@s2iam-test-project.iam.gserviceaccount.com",
            )),
            impersonable: vec![ServiceAccount::new(
                "s2iam-target@s2iam-test-project.iam.gserviceaccount.com",
            )],
        }
    }
}

/// Google's global services as seen from outside GCE (a laptop, another cloud).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoogleServices {
    /// The workload identity pool Google STS federates; `None`: every exchange is
    /// refused with `invalid_target`.
    pub pool: Option<WorkloadIdentityPool>,
    /// Service accounts that service-account keys and users (the OAuth token
    /// endpoint's access tokens) may impersonate with `generateIdToken`.
    pub impersonable: Vec<ServiceAccount>,
}

impl Default for GoogleServices {
    fn default() -> Self {
        Self {
            pool: Some(WorkloadIdentityPool::default()),
            impersonable: vec![ServiceAccount::new(
                "s2iam-target@s2iam-test-project.iam.gserviceaccount.com",
            )],
        }
    }
}

/// A workload identity pool with two providers: OIDC (tokens of the mock's
/// Kubernetes issuer, EKS or AKS) and AWS (signed `GetCallerIdentity` requests
/// from one account).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadIdentityPool {
    /// The project the pool lives in.
    pub project_number: String,
    /// The pool id.
    pub pool_id: String,
    /// The OIDC provider's id.
    pub oidc_provider_id: String,
    /// The AWS provider's id.
    pub aws_provider_id: String,
    /// The AWS account the AWS provider trusts.
    pub aws_account_id: String,
    /// Service accounts every principal of the pool may impersonate
    /// (`roles/iam.workloadIdentityUser` granted to the whole pool).
    pub service_accounts: Vec<ServiceAccount>,
}

impl Default for WorkloadIdentityPool {
    fn default() -> Self {
        Self {
            project_number: "123456789012".into(),
            pool_id: "s2iam-pool".into(),
            oidc_provider_id: "s2iam-oidc".into(),
            aws_provider_id: "s2iam-aws".into(),
            aws_account_id: AwsIdentity::default().account_id,
            service_accounts: vec![ServiceAccount::new(
                "s2iam-federated@s2iam-test-project.iam.gserviceaccount.com",
            )],
        }
    }
}

impl WorkloadIdentityPool {
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/Q`:
    /// the `audience` of an `external_account` file.
    pub fn audience(&self, provider_id: &str) -> String {
        format!(
            "//iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{}/providers/{provider_id}",
            self.project_number, self.pool_id
        )
    }

    /// `principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/subject/`:
    /// the prefix of every federated principal.
    pub fn principal_prefix(&self) -> String {
        format!(
            "principal://iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{}/subject/",
            self.project_number, self.pool_id
        )
    }
}

/// An Azure VM and its managed identities.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AzureIdentity {
    /// The Azure AD tenant.
    pub tenant_id: String,
    /// The subscription.
    pub subscription_id: String,
    /// The resource group.
    pub resource_group: String,
    /// The VM's location.
    pub location: String,
    /// The VM name.
    pub vm_name: String,
    /// The VM id.
    pub vm_id: String,
    /// The system-assigned identity; `None` with no user-assigned ones is the real
    /// "Identity not found" case.
    pub system_identity: Option<ManagedIdentity>,
    /// User-assigned managed identities attached to the VM.
    pub user_identities: Vec<ManagedIdentity>,
    /// The `X-IDENTITY-HEADER` value the App Service identity endpoint requires.
    pub identity_header: String,
    /// Client ids that AKS workload identity may exchange a federated token for.
    pub workload_client_ids: Vec<String>,
    /// The `secret` header the legacy `MSI_ENDPOINT` requires (`MSI_SECRET`).
    #[serde(default = "default_msi_secret")]
    pub msi_secret: String,
    /// `expires_on` of the legacy `MSI_ENDPOINT` as App Service's date string
    /// instead of Azure ML's epoch seconds.
    #[serde(default)]
    pub msi_date_expiry: bool,
    /// Where the Azure Arc agent writes its challenge key files; `None`: a private
    /// temporary directory per mock cloud.
    #[serde(default)]
    pub arc_key_dir: Option<std::path::PathBuf>,
    /// How the Azure Arc agent answers the first, unauthenticated request.
    #[serde(default)]
    pub arc_challenge: azure::ArcChallenge,
    /// An Arc agent too old for user-assigned identities: it ignores the selector
    /// and answers with the machine's own identity.
    #[serde(default)]
    pub arc_legacy_agent: bool,
}

fn default_msi_secret() -> String {
    "s2iam-test-msi-secret".into()
}

/// A managed identity: the three ids a client may select it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedIdentity {
    /// The identity's client (application) id.
    pub client_id: String,
    /// The identity's object (principal) id.
    pub object_id: String,
    /// The ARM resource id (`xms_mirid`).
    pub resource_id: String,
}

impl Default for AzureIdentity {
    fn default() -> Self {
        let sub = "11111111-2222-3333-4444-555555555555";
        let rg = "s2iam-test-rg";
        Self {
            tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            subscription_id: sub.into(),
            resource_group: rg.into(),
            location: "eastus".into(),
            vm_name: "s2iam-test-vm".into(),
            vm_id: "02aab8a4-74ef-476e-8182-f6d2ba4166a6".into(),
            system_identity: Some(ManagedIdentity {
                client_id: "9a1c3f55-0000-4000-8000-00000000c1d1".into(),
                object_id: "6e4f2a10-0000-4000-8000-0000000000a1".into(),
                resource_id: format!(
                    "/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.Compute/virtualMachines/s2iam-test-vm"
                ),
            }),
            user_identities: vec![ManagedIdentity {
                client_id: "0d3c6a77-0000-4000-8000-00000000c1d2".into(),
                object_id: "7f5e3b21-0000-4000-8000-0000000000a2".into(),
                resource_id: format!(
                    "/subscriptions/{sub}/resourcegroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/s2iam-test-uami"
                ),
            }],
            identity_header: "s2iam-test-identity-header".into(),
            workload_client_ids: vec!["0d3c6a77-0000-4000-8000-00000000c1d2".into()],
            msi_secret: default_msi_secret(),
            msi_date_expiry: false,
            arc_key_dir: None,
            arc_challenge: azure::ArcChallenge::Normal,
            arc_legacy_agent: false,
        }
    }
}

/// Credentials the mock STS has issued (or the long-lived user keys it knows), by
/// access key id. The STS verifies signatures against these secrets.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AwsCredential {
    /// The access key id.
    pub access_key_id: String,
    /// The secret the signatures are checked with.
    pub secret_access_key: String,
    /// `None` for long-lived IAM user keys (`AKIA...`).
    pub session_token: Option<String>,
    /// The caller ARN `GetCallerIdentity` reports.
    pub arn: String,
    /// The unique id `GetCallerIdentity` reports.
    pub user_id: String,
    /// The account `GetCallerIdentity` reports.
    pub account: String,
    /// Unix seconds; `None` never expires.
    pub expires: Option<u64>,
}

impl std::fmt::Debug for AwsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredential")
            .field("access_key_id", &self.access_key_id)
            .field("arn", &self.arn)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Expired credentials and IMDS tokens are dropped once a store reaches this size,
/// so a long-running `s2iam dev` does not grow without bound.
const PRUNE_AT: usize = 4096;

const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The mock cloud's shared state. Cheap to clone (everything is behind `Arc`s).
#[derive(Clone)]
pub struct MockCloud {
    inner: Arc<Inner>,
}

struct Inner {
    config: RwLock<CloudConfig>,
    keys: KeySet,
    credentials: Mutex<HashMap<String, AwsCredential>>,
    imds_tokens: Mutex<HashMap<String, u64>>,
    user_key: AwsCredential,
    gcp_access_tokens: gcp::AccessTokens,
    google_oauth: gcp::oauth::OAuthState,
    aws: aws::AwsState,
    sts: aws::sts::StsState,
    azure_arc_keys: azure::ArcKeys,
}

impl MockCloud {
    /// A mock cloud serving `config`, signing with `keys`.
    pub fn new(config: CloudConfig, keys: KeySet) -> Self {
        let account = config
            .aws
            .as_ref()
            .map(|a| a.account_id.clone())
            .unwrap_or_else(|| AwsIdentity::default().account_id);
        let user_key = AwsCredential {
            access_key_id: format!("AKIA{}", random_from(KEY_ALPHABET, 16)),
            secret_access_key: random_from(SECRET_ALPHABET, 40),
            session_token: None,
            arn: format!("arn:aws:iam::{account}:user/s2iam-test-user"),
            user_id: format!("AIDA{}", random_from(KEY_ALPHABET, 17)),
            account,
            expires: None,
        };
        let mut credentials = HashMap::new();
        credentials.insert(user_key.access_key_id.clone(), user_key.clone());
        Self {
            inner: Arc::new(Inner {
                config: RwLock::new(config),
                keys,
                credentials: Mutex::new(credentials),
                imds_tokens: Mutex::new(HashMap::new()),
                user_key,
                gcp_access_tokens: gcp::AccessTokens::default(),
                google_oauth: Default::default(),
                aws: Default::default(),
                sts: Default::default(),
                azure_arc_keys: azure::ArcKeys::default(),
            }),
        }
    }

    /// A snapshot of the current configuration.
    pub fn config(&self) -> CloudConfig {
        self.inner
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the configuration of the running cloud (e.g. detach a role).
    pub fn update(&self, f: impl FnOnce(&mut CloudConfig)) {
        f(&mut self.inner.config.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// The cloud's clock in Unix seconds: this machine's plus
    /// [`CloudConfig::clock_offset_secs`]. STS checks signatures against it and
    /// every response's `Date` header shows it.
    pub fn now_unix(&self) -> u64 {
        offset_clock(now_unix(), self.config().clock_offset_secs)
    }

    /// The keys its tokens are signed with.
    pub fn keys(&self) -> &KeySet {
        &self.inner.keys
    }

    /// Long-lived IAM user keys (`AKIA...`), for the "environment keys" credential
    /// source: the STS accepts them and `GetSessionToken` turns them into a session.
    pub fn user_key(&self) -> AwsCredential {
        self.inner.user_key.clone()
    }

    /// Issues session credentials (`ASIA...`) for `arn` valid for the token TTL.
    pub fn issue_session(&self, arn: &str, user_id: &str, account: &str) -> AwsCredential {
        self.issue_session_for(arn, user_id, account, self.config().token_ttl)
    }

    /// Issues session credentials valid for `ttl`.
    pub fn issue_session_for(
        &self,
        arn: &str,
        user_id: &str,
        account: &str,
        ttl: Duration,
    ) -> AwsCredential {
        let cred = AwsCredential {
            access_key_id: format!("ASIA{}", random_from(KEY_ALPHABET, 16)),
            secret_access_key: random_from(SECRET_ALPHABET, 40),
            session_token: Some(format!(
                "IQoJb3JpZ2luX2VjE{}",
                random_from(SECRET_ALPHABET, 200)
            )),
            arn: arn.to_string(),
            user_id: user_id.to_string(),
            account: account.to_string(),
            expires: Some(self.now_unix().saturating_add(ttl.as_secs())),
        };
        let mut credentials = self.lock_credentials();
        if credentials.len() >= PRUNE_AT {
            let now = self.now_unix();
            credentials.retain(|_, c| c.expires.is_none_or(|e| e > now));
        }
        credentials.insert(cred.access_key_id.clone(), cred.clone());
        cred
    }

    /// The credential with this access key id, if the STS issued or knows it.
    pub fn credential(&self, access_key_id: &str) -> Option<AwsCredential> {
        self.lock_credentials().get(access_key_id).cloned()
    }

    /// Issues an IMDSv2 session token valid for `ttl_secs`.
    pub fn issue_imds_token(&self, ttl_secs: u64) -> String {
        let token = crate::util::random_hex(28);
        let mut tokens = self
            .inner
            .imds_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = now_unix();
        if tokens.len() >= PRUNE_AT {
            tokens.retain(|_, exp| *exp > now);
        }
        tokens.insert(token.clone(), now.saturating_add(ttl_secs));
        token
    }

    /// Whether `token` is a live IMDSv2 session token.
    pub fn imds_token_valid(&self, token: &str) -> bool {
        self.inner
            .imds_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .is_some_and(|exp| *exp > now_unix())
    }

    /// Mints the token an EKS cluster's OIDC issuer projects into a pod for IRSA
    /// (`AWS_WEB_IDENTITY_TOKEN_FILE`), for `sub` (e.g.
    /// `system:serviceaccount:default:app`).
    pub fn mint_eks_web_identity_token(&self, sub: &str) -> Result<String, crate::keys::KeyError> {
        let now = now_unix();
        let claims = serde_json::json!({
            "iss": EKS_ISSUER,
            "sub": sub,
            "aud": ["sts.amazonaws.com"],
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(self.config().token_ttl.as_secs()),
        });
        self.inner.keys.eks.sign(&claims)
    }

    /// Mints the token AKS projects into a pod for workload identity
    /// (`AZURE_FEDERATED_TOKEN_FILE`).
    pub fn mint_aks_federated_token(&self, sub: &str) -> Result<String, crate::keys::KeyError> {
        let now = now_unix();
        let claims = serde_json::json!({
            "iss": AKS_ISSUER,
            "sub": sub,
            "aud": ["api://AzureADTokenExchange"],
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(self.config().token_ttl.as_secs()),
        });
        self.inner.keys.eks.sign(&claims)
    }

    /// OAuth access tokens the GCE metadata server minted, so the IAM Credentials
    /// API can tell which service account a bearer token belongs to.
    pub fn gcp_access_tokens(&self) -> &gcp::AccessTokens {
        &self.inner.gcp_access_tokens
    }

    /// Service-account keys and users Google's OAuth token endpoint knows.
    pub(crate) fn google_oauth(&self) -> &gcp::oauth::OAuthState {
        &self.inner.google_oauth
    }

    fn lock_credentials(&self) -> std::sync::MutexGuard<'_, HashMap<String, AwsCredential>> {
        self.inner
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The keys the mock Azure Arc agent has handed out in its challenges.
    pub fn azure_arc_keys(&self) -> &azure::ArcKeys {
        &self.inner.azure_arc_keys
    }

    /// The router for every path in the module table.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(aws::routes())
            .merge(aws::sts::routes())
            .merge(gcp::routes())
            .merge(azure::routes())
            .route("/jwks/{issuer}", get(jwks))
            .layer(axum::middleware::map_response_with_state(
                self.clone(),
                date_header,
            ))
            .with_state(self.clone())
    }
}

/// `unix` moved by `offset_secs`, clamped at the epoch.
fn offset_clock(unix: u64, offset_secs: i64) -> u64 {
    if offset_secs >= 0 {
        unix.saturating_add(offset_secs.unsigned_abs())
    } else {
        unix.saturating_sub(offset_secs.unsigned_abs())
    }
}

/// Sets `Date` to the cloud's clock (hyper leaves a `Date` it finds alone), so a
/// client can measure its skew from any response as the SDKs do.
async fn date_header(
    State(cloud): State<MockCloud>,
    mut resp: axum::response::Response,
) -> axum::response::Response {
    if let Ok(value) = axum::http::HeaderValue::from_str(&http_date(cloud.now_unix())) {
        resp.headers_mut().insert(axum::http::header::DATE, value);
    }
    resp
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the `Date` header's form.
pub fn http_date(unix: u64) -> String {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    i64::try_from(unix)
        .ok()
        .and_then(|u| time::OffsetDateTime::from_unix_timestamp(u).ok())
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// The issuer of projected Kubernetes service-account tokens in the mock (EKS and
/// AKS clusters share one mock OIDC issuer key).
pub const EKS_ISSUER: &str = "https://oidc.eks.us-east-1.amazonaws.com/id/S2IAMTESTCLUSTER";
/// The issuer of the mock AKS service-account tokens.
pub const AKS_ISSUER: &str =
    "https://eastus.oic.prod-aks.azure.com/s2iam-test-tenant/s2iam-test-cluster/";

/// `GET /jwks/{google|azure|eks|auth}`: the JWKS of one mock issuer, for clients
/// that want to verify what the mock cloud minted.
async fn jwks(
    State(cloud): State<MockCloud>,
    Path(issuer): Path<String>,
) -> axum::response::Response {
    let issuer = match issuer.as_str() {
        "google" => Issuer::Google,
        "azure" => Issuer::Azure,
        "eks" | "aks" => Issuer::Eks,
        _ => {
            return crate::util::json_error(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "unknown issuer; use google, azure or eks",
            )
        }
    };
    use axum::response::IntoResponse;
    Json(cloud.keys().get(issuer).jwks()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_and_offsets() {
        assert_eq!(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(offset_clock(1000, 600), 1600);
        assert_eq!(offset_clock(1000, -600), 400);
        assert_eq!(offset_clock(100, -600), 0);
        let cloud = MockCloud::new(
            CloudConfig::aws().with_clock_offset(-600),
            KeySet::shared().unwrap(),
        );
        let skew = i128::from(cloud.now_unix()) - i128::from(now_unix());
        assert!((-601..=-599).contains(&skew), "{skew}");
    }

    #[test]
    fn expired_credentials_and_tokens_are_pruned_when_the_store_is_full() {
        let cloud = MockCloud::new(CloudConfig::aws(), KeySet::shared().unwrap());
        for _ in 0..PRUNE_AT {
            cloud.issue_session_for("arn:aws:sts::1:assumed-role/r/s", "u", "1", Duration::ZERO);
            cloud.issue_imds_token(0);
        }
        let live = cloud.issue_session("arn:aws:sts::1:assumed-role/r/s", "u", "1");
        let token = cloud.issue_imds_token(60);
        assert!(
            cloud.lock_credentials().len() < 10,
            "expired sessions dropped"
        );
        assert!(cloud.credential(&live.access_key_id).is_some());
        let user = cloud.user_key().access_key_id;
        assert!(cloud.credential(&user).is_some(), "user keys never expire");
        assert!(cloud.imds_token_valid(&token));
        assert!(cloud.inner.imds_tokens.lock().unwrap().len() < 10);
    }
}
