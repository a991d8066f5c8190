//! Google credential files pointed at the mock: `external_account` (each credential
//! source kind), `service_account` keys and `authorized_user` logins, written to a
//! temporary directory the way gcloud writes them.

use std::path::{Path, PathBuf};

use s2iam_testserver::{CloudConfig, TestServer};
use serde_json::{json, Value};

/// The pool's OIDC provider audience (`//iam.googleapis.com/...`).
pub fn oidc_audience(server: &TestServer) -> String {
    let pool = server.cloud().config().google.pool.expect("a pool");
    pool.audience(&pool.oidc_provider_id)
}

/// The pool's AWS provider audience.
pub fn aws_audience(server: &TestServer) -> String {
    let pool = server.cloud().config().google.pool.expect("a pool");
    pool.audience(&pool.aws_provider_id)
}

/// The service account the pool's principals may impersonate.
pub fn federated_account() -> s2iam_testserver::ServiceAccount {
    CloudConfig::none()
        .google
        .pool
        .expect("a pool")
        .service_accounts[0]
        .clone()
}

/// The service account keys and users may impersonate.
pub fn impersonable_account() -> s2iam_testserver::ServiceAccount {
    CloudConfig::none().google.impersonable[0].clone()
}

/// An `external_account` file with `credential_source`, impersonating the pool's
/// service account through the mock IAM Credentials API (or not).
pub fn external_account(
    server: &TestServer,
    audience: &str,
    subject_token_type: &str,
    credential_source: Value,
    impersonate: bool,
) -> Value {
    let base = server.cloud_url();
    let mut file = json!({
        "universe_domain": "googleapis.com",
        "type": "external_account",
        "audience": audience,
        "subject_token_type": subject_token_type,
        "token_url": format!("{base}/v1/token"),
        "credential_source": credential_source,
    });
    if impersonate {
        file["service_account_impersonation_url"] = json!(format!(
            "{base}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
            federated_account().email
        ));
    }
    file
}

/// `urn:ietf:params:oauth:token-type:jwt`.
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// `urn:ietf:params:aws:token-type:aws4_request`.
pub const AWS4: &str = "urn:ietf:params:aws:token-type:aws4_request";

/// Writes `value` as JSON to `dir/name`.
pub fn write_json(dir: &Path, name: &str, value: &Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

/// An executable shell script at `dir/name`.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
