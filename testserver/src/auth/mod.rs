//! The mock SingleStore auth service: a stricter twin of the reference
//! `s2iam_test_server`.
//!
//! Endpoints (details in [`exchange`] and [`verify`]):
//! - `POST /auth/iam/{database|api}` (optional `?workspaceGroupID=`; the Python
//!   client sends `workspace_group_id` in its JSON body instead, which is accepted
//!   too). Identity comes from headers: `X-AWS-Access-Key-ID` /
//!   `X-AWS-Secret-Access-Key` / `X-AWS-Session-Token` (verified by calling the mock
//!   STS `GetCallerIdentity` signed with them), or `Authorization: Bearer <JWT>` from
//!   Google or Azure AD (verified by signature, issuer, audience, tenant and expiry).
//!   `X-Cloud-Provider`, when sent, must agree. `X-S2IAM-Identity-Format-Preference`
//!   picks the identity format of `sub`.
//!   200 → `{"jwt", "expires_at", "identityFormat"}` (`{"jwt": ""}` with
//!   `return_empty_jwt`); errors are JSON `{"error", "message"}`: 400 malformed
//!   request, 401 verification failed (the reference answers 400 for every
//!   verification failure), 404 unknown JWT type or path, 405 wrong method, 413 body
//!   too large, 502 STS unavailable, and the configured status for `return_error`.
//! - `GET /auth/oidc/op/Customer/.well-known/jwks.json`: the issuing key.
//! - `GET /info/public-key`: the same key as a PKCS#1 PEM.
//! - `GET /info/requests`: every exchange attempt, credential headers redacted;
//!   `DELETE` clears it.
//! - `GET /health`.
//! - `GET|PUT /_mock/behaviour`: read or replace [`AuthConfig`] at run time.

pub mod exchange;
pub mod verify;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use serde::{Deserialize, Serialize};

use crate::keys::SigningKey;

/// The reference test server's flags, as a value that can change at run time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthConfig {
    /// Answer 401 to every exchange without verifying.
    pub fail_verification: bool,
    /// Answer 200 with `{"jwt": ""}` after verifying.
    pub return_empty_jwt: bool,
    /// Answer `error_code` with `error_message` to every exchange.
    pub return_error: bool,
    /// The status `return_error` answers with.
    pub error_code: u16,
    /// The message `return_error` answers with.
    pub error_message: String,
    /// When set, GCP tokens must carry exactly this audience.
    pub required_audience: Option<String>,
    /// Audiences accepted on GCP tokens (when `required_audience` is unset).
    pub allowed_audiences: Vec<String>,
    /// Azure tenant whose tokens are accepted; `common` accepts any tenant.
    pub azure_tenant: String,
    /// Lifetime of issued JWTs.
    #[serde(with = "crate::util::serde_secs")]
    pub token_expiry: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            fail_verification: false,
            return_empty_jwt: false,
            return_error: false,
            error_code: 500,
            error_message: "Internal Server Error".into(),
            required_audience: None,
            allowed_audiences: vec!["https://authsvc.singlestore.com".into()],
            azure_tenant: "common".into(),
            token_expiry: Duration::from_secs(3600),
        }
    }
}

/// One exchange request as `/info/requests` reports it. Header values that are
/// credentials are replaced by `<redacted>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExchangeRecord {
    /// When it arrived (RFC 3339).
    pub time: String,
    /// The HTTP method.
    pub method: String,
    /// The path, `:jwtType` filled in.
    pub path: String,
    /// The query string.
    pub query: String,
    /// `database` or `api`.
    pub jwt_type: String,
    /// The workspace group, from the query or the body.
    pub workspace_group_id: Option<String>,
    /// Request headers, credentials redacted.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The JSON body the client sent, if any (the Python client sends its own view
    /// of the identity there; the server never trusts it).
    pub body: Option<serde_json::Value>,
    /// The status answered.
    pub status: u16,
    /// What verification established, when it succeeded.
    pub identity: Option<VerifiedIdentity>,
    /// The claims of the issued JWT.
    pub claims: Option<serde_json::Value>,
    /// Why the request was refused, if it was.
    pub error: Option<String>,
}

/// An identity the server verified.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// `aws`, `gcp` or `azure`.
    pub provider: String,
    /// The `sub` of the issued JWT, in the negotiated format.
    pub identifier: String,
    /// The identity format that produced `identifier` (e.g. `aws-iam-role-arn`).
    pub identity_format: String,
    /// AWS account, GCP project, Azure subscription.
    pub account_id: String,
    /// Region or location, when known.
    pub region: String,
    /// Role, service account or managed identity.
    pub resource_type: String,
    /// Other verified facts (instance id, tenant, ...).
    pub additional_claims: std::collections::BTreeMap<String, String>,
}

/// The mock auth service's shared state. Cheap to clone.
#[derive(Clone)]
pub struct MockAuth {
    inner: Arc<Inner>,
}

struct Inner {
    config: RwLock<AuthConfig>,
    key: Arc<SigningKey>,
    /// Verifies AWS identities (the mock STS) and Google/Azure tokens (their keys).
    verifier: verify::Verifier,
    records: Mutex<Vec<ExchangeRecord>>,
}

impl MockAuth {
    /// A mock auth service signing with `key` and verifying with `verifier`.
    pub fn new(config: AuthConfig, key: Arc<SigningKey>, verifier: verify::Verifier) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: RwLock::new(config),
                key,
                verifier,
                records: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The current behaviour settings.
    pub fn config(&self) -> AuthConfig {
        self.inner
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes behaviour at run time, e.g. start failing every exchange.
    pub fn update(&self, f: impl FnOnce(&mut AuthConfig)) {
        f(&mut self.inner.config.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// The key the issued JWTs are signed with.
    pub fn key(&self) -> &Arc<SigningKey> {
        &self.inner.key
    }

    /// How identities are verified.
    pub fn verifier(&self) -> &verify::Verifier {
        &self.inner.verifier
    }

    /// Every exchange request so far.
    pub fn records(&self) -> Vec<ExchangeRecord> {
        self.inner
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forgets the recorded exchanges.
    pub fn clear_records(&self) {
        self.inner
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub(crate) fn record(&self, record: ExchangeRecord) {
        let mut records = self.inner.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() >= 100_000 {
            records.drain(..10_000);
        }
        records.push(record);
    }

    /// The service's routes, with fault injection and request logging.
    pub fn router(&self) -> Router {
        exchange::routes().with_state(self.clone())
    }
}
