//! Google credential files through the mock Google STS, OAuth token endpoint and
//! IAM Credentials: `external_account` with each credential source (file, url,
//! executable, aws1 from the environment and from IMDSv2), `service_account`
//! keys and `authorized_user` logins; every error a user can meet (bad file, wrong
//! type, plain http, executables not allowed or too slow, STS refusals); the ID
//! token accepted by the mock auth service; detection and the CLI naming the
//! source.

// Tests and benches own their environment and clock (rule 4 is for the library).
#![allow(clippy::disallowed_methods)]

use crate::common;
use std::path::Path;
use std::time::Duration;

use crate::common::claims;
use crate::common::google::{self, AWS4, JWT};
use s2iam::env::Fs;
use s2iam::env::ProviderConfig;
use s2iam::exchange::{ExchangeClient, ExchangeConfig, ExchangeRequest, JwtType, ServerUrl};
use s2iam::provider::gcp::GcpProvider;
use s2iam::provider::{CloudIdentity, IdentityRequest, ProviderError};
use s2iam::{detect_provider, DetectOptions};
use s2iam_testserver::{AwsIdentity, CloudConfig, TestServer};
use serde_json::json;

/// Every endpoint at the mock, the real filesystem, and `extra`.
fn cfg(server: &TestServer, extra: &[(&str, &str)]) -> ProviderConfig {
    ProviderConfig::with_env(common::mock_env(server, extra), Fs::real())
}

fn cfg_with_file(server: &TestServer, file: &Path, extra: &[(&str, &str)]) -> ProviderConfig {
    let path = file.to_str().unwrap();
    let mut vars = vec![("GOOGLE_APPLICATION_CREDENTIALS", path)];
    vars.extend_from_slice(extra);
    cfg(server, &vars)
}

async fn identity(
    provider: &GcpProvider,
    cfg: &ProviderConfig,
) -> Result<(String, CloudIdentity), ProviderError> {
    let (headers, identity) = provider.identity(cfg, &IdentityRequest::default()).await?;
    let auth = headers.get("Authorization").unwrap().expose();
    Ok((auth.strip_prefix("Bearer ").unwrap().to_string(), identity))
}

/// The mock auth service's verdict on the ID token: the `sub` it issued.
async fn exchange(
    server: &TestServer,
    token: &str,
    identity: &CloudIdentity,
) -> Result<String, String> {
    let url = ServerUrl::parse(&server.exchange_url_template(), true).unwrap();
    let mut headers = s2iam::IdentityHeaders::default();
    headers.push("Authorization", format!("Bearer {token}"));
    let req = ExchangeRequest {
        jwt_type: JwtType::Database,
        workspace_group_id: Some("wg"),
        headers: &headers,
        identity,
    };
    ExchangeClient::new(ExchangeConfig::default())
        .exchange(&url, req, Duration::from_secs(10))
        .await
        .map(|_| {
            let record = server.auth().records().pop().unwrap();
            record.identity.unwrap().identifier
        })
        .map_err(|e| e.to_string())
}

async fn start() -> TestServer {
    common::mocks(CloudConfig::none()).await
}

/// Asserts the ID token is the federated service account's for the s2iam
/// audience, and the auth service accepts it.
async fn assert_federated(server: &TestServer, token: &str, identity: &CloudIdentity, kind: &str) {
    let sa = google::federated_account();
    let c = claims(token);
    assert_eq!(c["aud"], s2iam::provider::DEFAULT_GCP_AUDIENCE);
    assert_eq!(c["email"], sa.email.as_str());
    assert_eq!(identity.identifier, sa.email);
    assert_eq!(identity.resource_type, "gcp-service-account");
    let source = &identity.additional_claims["credential_source"];
    assert!(
        source.starts_with(&format!(
            "external_account ({kind}) from GOOGLE_APPLICATION_CREDENTIALS="
        )),
        "{source}"
    );
    assert_eq!(exchange(server, token, identity).await.unwrap(), sa.email);
}

#[tokio::test]
async fn file_source_text_and_json_federate_to_the_service_accounts_id_token() {
    let server = start().await;
    let dir = common::temp_dir("gcp-file");
    let subject = server
        .cloud()
        .mint_federation_subject_token("system:serviceaccount:default:app")
        .unwrap();
    std::fs::write(dir.join("token"), &subject).unwrap();
    std::fs::write(
        dir.join("token.json"),
        json!({"access_token": subject}).to_string(),
    )
    .unwrap();
    let audience = google::oidc_audience(&server);
    for (source, name) in [
        (json!({"file": dir.join("token")}), "text.json"),
        (
            json!({"file": dir.join("token.json"), "format": {"type": "json", "subject_token_field_name": "access_token"}}),
            "json.json",
        ),
    ] {
        let file = google::external_account(&server, &audience, JWT, source, true);
        let path = google::write_json(&dir, name, &file);
        let (token, id) = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
            .await
            .unwrap();
        assert_federated(&server, &token, &id, "file").await;
    }
    // Google STS saw the RFC 8693 request.
    let seen = server.cloud_requests().entries();
    assert!(seen
        .iter()
        .any(|r| r.path == "/v1/token" && r.method == "POST"));
    server.shutdown().await;
}

#[tokio::test]
async fn url_source_sends_its_headers_and_reads_the_json_field() {
    use axum::http::HeaderMap;
    let server = start().await;
    let subject = server
        .cloud()
        .mint_federation_subject_token("url-workload")
        .unwrap();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::get(move |headers: HeaderMap| {
            let subject = subject.clone();
            async move {
                if headers.get("x-token-auth").and_then(|v| v.to_str().ok()) != Some("let-me-in") {
                    return (axum::http::StatusCode::UNAUTHORIZED, "no".to_string());
                }
                (
                    axum::http::StatusCode::OK,
                    json!({"id_token": subject}).to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = common::temp_dir("gcp-url");
    let audience = google::oidc_audience(&server);
    let json_format = json!({"type": "json", "subject_token_field_name": "id_token"});
    let file = google::external_account(
        &server,
        &audience,
        JWT,
        json!({"url": url, "headers": {"X-Token-Auth": "let-me-in"}, "format": json_format}),
        true,
    );
    let path = google::write_json(&dir, "url.json", &file);
    let (token, id) = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap();
    assert_federated(&server, &token, &id, "url").await;
    // Without the header the source answers 401, and the error says so.
    let file = google::external_account(
        &server,
        &audience,
        JWT,
        json!({"url": url, "format": json_format}),
        true,
    );
    let path = google::write_json(&dir, "noheader.json", &file);
    let e = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401"), "{e}");
    task.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn executable_source_needs_permission_passes_its_variables_and_caches() {
    let server = start().await;
    let dir = common::temp_dir("gcp-exe");
    let subject = server
        .cloud()
        .mint_federation_subject_token("exe-workload")
        .unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let response = json!({"version": 1, "success": true, "token_type": JWT, "id_token": subject, "expiration_time": exp});
    let runs = dir.join("runs");
    let seen_env = dir.join("env");
    let out = dir.join("cache.json");
    let script = google::write_script(
        &dir,
        "issue-token",
        &format!(
            "echo run >> {runs}\necho \"$GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE|$GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE|$GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE|$GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL|$1\" > {env}\necho '{resp}' > {out}\necho '{resp}'",
            runs = runs.display(),
            env = seen_env.display(),
            out = out.display(),
            resp = response
        ),
    );
    let audience = google::oidc_audience(&server);
    let source = json!({"executable": {"command": format!("{} --flag", script.display()), "timeout_millis": 5000, "output_file": out}});
    let path = google::write_json(
        &dir,
        "exe.json",
        &google::external_account(&server, &audience, JWT, source, true),
    );

    // Not allowed by default, as in Google's libraries; nothing runs.
    let e = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1"),
        "{e}"
    );
    assert!(!runs.exists());

    let allowed = cfg_with_file(
        &server,
        &path,
        &[("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")],
    );
    let (token, id) = identity(&GcpProvider::default(), &allowed).await.unwrap();
    assert_federated(&server, &token, &id, "executable").await;
    let env = std::fs::read_to_string(&seen_env).unwrap();
    assert_eq!(
        env.trim(),
        format!(
            "{audience}|{JWT}|0|{}|--flag",
            google::federated_account().email
        )
    );
    // The second call reads the still-valid output file instead of running it.
    identity(&GcpProvider::default(), &allowed).await.unwrap();
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn executable_failures_and_timeouts_are_clear_errors() {
    let server = start().await;
    let dir = common::temp_dir("gcp-exe-bad");
    let audience = google::oidc_audience(&server);
    let allow = [("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES", "1")];
    let fails = google::write_script(
        &dir,
        "fails",
        r#"echo '{"version": 1, "success": false, "code": "401", "message": "Caller not authorized."}'"#,
    );
    let slow = google::write_script(&dir, "slow", "exec sleep 30");
    let crashes = google::write_script(&dir, "crashes", "echo secret-looking-output; exit 3");
    for (script, timeout, want) in [
        (
            &fails,
            5000,
            "reported failure: 401: Caller not authorized.",
        ),
        (&slow, 5000, "did not finish within 5000 ms"),
        (&crashes, 5000, "failed (exit status: 3)"),
        (&fails, 1000, "timeout_millis 1000 is outside"),
    ] {
        let source = json!({"executable": {"command": script, "timeout_millis": timeout}});
        let file = google::external_account(&server, &audience, JWT, source, true);
        let path = google::write_json(&dir, "exe.json", &file);
        let started = std::time::Instant::now();
        let e = identity(
            &GcpProvider::default(),
            &cfg_with_file(&server, &path, &allow),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains(want), "{want}: {e}");
        assert!(!e.contains("secret-looking-output"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "bounded by the timeout"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn aws_source_from_environment_keys_signs_get_caller_identity() {
    let server = start().await;
    let dir = common::temp_dir("gcp-aws-env");
    let user = server.cloud().user_key();
    let source = json!({
        "environment_id": "aws1",
        "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
    });
    let file =
        google::external_account(&server, &google::aws_audience(&server), AWS4, source, true);
    let path = google::write_json(&dir, "aws.json", &file);
    let env = [
        ("AWS_ACCESS_KEY_ID", user.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", user.secret_access_key.as_str()),
        ("AWS_REGION", "us-east-2"),
    ];
    let (token, id) = identity(
        &GcpProvider::default(),
        &cfg_with_file(&server, &path, &env),
    )
    .await
    .unwrap();
    assert_federated(&server, &token, &id, "aws1").await;
    // The signed request was never sent to AWS (nor to the mock STS): only Google
    // STS replayed it.
    assert!(!server
        .cloud_requests()
        .entries()
        .iter()
        .any(|r| r.path == "/" && r.method == "POST"));

    // An account the provider does not trust: Google STS says invalid_grant.
    server
        .cloud()
        .update(|c| c.google.pool.as_mut().unwrap().aws_account_id = "999999999999".into());
    let e = identity(
        &GcpProvider::default(),
        &cfg_with_file(&server, &path, &env),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("invalid_grant") && e.contains("not trusted"),
        "{e}"
    );
    // A wrong secret: the replayed signature fails in the mock AWS STS.
    server.cloud().update(|c| c.google = Default::default());
    let bad = [
        ("AWS_ACCESS_KEY_ID", user.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
        ("AWS_REGION", "us-east-2"),
    ];
    let e = identity(
        &GcpProvider::default(),
        &cfg_with_file(&server, &path, &bad),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("SignatureDoesNotMatch"), "{e}");
    server.shutdown().await;
}

#[tokio::test]
async fn aws_source_from_imdsv2_reads_region_and_role_credentials() {
    let server = common::mocks(CloudConfig {
        aws: Some(AwsIdentity {
            imds_v1: false,
            ..AwsIdentity::default()
        }),
        ..CloudConfig::none()
    })
    .await;
    let base = server.cloud_url();
    let dir = common::temp_dir("gcp-aws-imds");
    let source = json!({
        "environment_id": "aws1",
        "region_url": format!("{base}/latest/meta-data/placement/availability-zone"),
        "url": format!("{base}/latest/meta-data/iam/security-credentials"),
        "imdsv2_session_token_url": format!("{base}/latest/api/token"),
        "regional_cred_verification_url": "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
    });
    let file = google::external_account(
        &server,
        &google::aws_audience(&server),
        AWS4,
        source.clone(),
        true,
    );
    let path = google::write_json(&dir, "aws.json", &file);
    let (token, id) = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap();
    assert_federated(&server, &token, &id, "aws1").await;
    let seen = server.cloud_requests().entries();
    assert!(seen
        .iter()
        .any(|r| r.path == "/latest/api/token" && r.method == "PUT"));

    // Without the IMDSv2 token URL, IMDS (HttpTokens=required) refuses.
    let mut v1 = source;
    v1.as_object_mut()
        .unwrap()
        .remove("imdsv2_session_token_url");
    let file = google::external_account(&server, &google::aws_audience(&server), AWS4, v1, true);
    let path = google::write_json(&dir, "aws-v1.json", &file);
    let e = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401"), "{e}");
    server.shutdown().await;
}

#[tokio::test]
async fn federation_without_impersonation_or_with_sts_refusals_fails_clearly() {
    let server = start().await;
    let dir = common::temp_dir("gcp-sts-errors");
    let subject = server.cloud().mint_federation_subject_token("w").unwrap();
    std::fs::write(dir.join("token"), &subject).unwrap();
    std::fs::write(dir.join("garbage"), "not-a-jwt").unwrap();
    let audience = google::oidc_audience(&server);
    let source = json!({"file": dir.join("token")});

    let no_imp = google::external_account(&server, &audience, JWT, source.clone(), false);
    let path = google::write_json(&dir, "noimp.json", &no_imp);
    let e = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no service_account_impersonation_url") && e.contains("cannot mint an ID"),
        "{e}"
    );
    // ... unless --assume-role names the account to impersonate.
    let provider = GcpProvider::default()
        .assume_role(&google::federated_account().email)
        .unwrap();
    let (token, _) = identity(&provider, &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap();
    assert_eq!(
        claims(&token)["email"],
        google::federated_account().email.as_str()
    );

    for (file, want) in [
        (
            google::external_account(
                &server,
                &format!("{audience}-nope"),
                JWT,
                source.clone(),
                true,
            ),
            "invalid_target",
        ),
        (
            google::external_account(
                &server,
                &audience,
                JWT,
                json!({"file": dir.join("garbage")}),
                true,
            ),
            "invalid_grant",
        ),
        (
            google::external_account(
                &server,
                &google::aws_audience(&server),
                JWT,
                source.clone(),
                true,
            ),
            "invalid_request",
        ),
    ] {
        let path = google::write_json(&dir, "err.json", &file);
        let e = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Google STS token exchange failed") && e.contains(want),
            "{want}: {e}"
        );
        assert!(!e.contains(&subject), "no token in errors");
    }
    // The pool may not impersonate an account outside its grants.
    let mut other = google::external_account(&server, &audience, JWT, source, true);
    other["service_account_impersonation_url"] = json!(format!(
        "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
        server.cloud_url(),
        google::impersonable_account().email
    ));
    let path = google::write_json(&dir, "other.json", &other);
    let e = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("PERMISSION_DENIED"), "{e}");
    server.shutdown().await;
}

#[tokio::test]
async fn bad_files_wrong_types_and_plain_http_are_refused() {
    let server = start().await;
    let dir = common::temp_dir("gcp-bad-files");
    let missing = dir.join("missing.json");
    let e = identity(
        &GcpProvider::default(),
        &cfg_with_file(&server, &missing, &[]),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("cannot read the Google credential file"), "{e}");
    for (content, want) in [
        ("{not json", "not JSON"),
        (r#"{"type": "gdch_service_account"}"#, "not supported"),
        (r#"{"type": "user"}"#, "unknown type"),
        (
            r#"{"type": "service_account", "client_email": "a@b.c"}"#,
            "missing field `private_key`",
        ),
    ] {
        std::fs::write(dir.join("bad.json"), content).unwrap();
        let e = identity(
            &GcpProvider::default(),
            &cfg_with_file(&server, &dir.join("bad.json"), &[]),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    let mut file = google::external_account(
        &server,
        &google::oidc_audience(&server),
        JWT,
        json!({"file": "/x"}),
        true,
    );
    file["token_url"] = json!("http://sts.example.com/v1/token");
    let path = google::write_json(&dir, "http.json", &file);
    let mut file2 = file.clone();
    file2["credential_source"] = json!({"file": dir.join("bad.json")});
    std::fs::write(dir.join("bad.json"), "tok").unwrap();
    let path2 = google::write_json(&dir, "http2.json", &file2);
    for p in [&path, &path2] {
        let e = identity(&GcpProvider::default(), &cfg_with_file(&server, p, &[]))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain http to a non-loopback host"), "{e}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn service_account_key_signs_a_jwt_for_an_id_token() {
    let server = start().await;
    let dir = common::temp_dir("gcp-sa");
    let sa = google::impersonable_account();
    let token_uri = format!("{}/token", server.cloud_url());
    let key = server
        .cloud()
        .create_service_account_key(&sa.email, &token_uri)
        .unwrap();
    let path = google::write_json(&dir, "sa.json", &key);
    let (token, id) = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap();
    let c = claims(&token);
    assert_eq!(c["aud"], s2iam::provider::DEFAULT_GCP_AUDIENCE);
    assert_eq!(c["sub"], sa.unique_id.as_str());
    assert_eq!(id.identifier, sa.email);
    assert_eq!(id.resource_type, "gcp-service-account");
    assert!(id.additional_claims["credential_source"]
        .starts_with("service_account from GOOGLE_APPLICATION_CREDENTIALS="));
    assert_eq!(exchange(&server, &token, &id).await.unwrap(), sa.email);

    // Another key under the same key id: the signature does not verify.
    let other = server
        .cloud()
        .create_service_account_key(&sa.email, &token_uri)
        .unwrap();
    let mut forged = key.clone();
    forged["private_key"] = other["private_key"].clone();
    let path = google::write_json(&dir, "forged.json", &forged);
    let e = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid_grant: Invalid JWT Signature."), "{e}");
    assert!(!e.contains("PRIVATE KEY"), "{e}");
    server.shutdown().await;
}

#[tokio::test]
async fn authorized_user_yields_the_clients_id_token_or_impersonates() {
    let server = start().await;
    let dir = common::temp_dir("gcp-user");
    let token_uri = format!("{}/token", server.cloud_url());
    let login = server
        .cloud()
        .create_authorized_user("dev@example.com", true, Some(&token_uri));
    let client_id = login["client_id"].as_str().unwrap().to_string();
    let path = google::write_json(&dir, "user.json", &login);
    let (token, id) = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap();
    // The audience limitation: aud is the OAuth client, not the s2iam audience.
    assert_eq!(claims(&token)["aud"], client_id.as_str());
    assert_eq!(id.identifier, "dev@example.com");
    assert_eq!(id.resource_type, "gcp-user");
    let e = exchange(&server, &token, &id).await.unwrap_err();
    assert!(e.contains("invalid audience"), "{e}");
    server
        .auth()
        .update(|a| a.allowed_audiences.push(client_id.clone()));
    assert_eq!(
        exchange(&server, &token, &id).await.unwrap(),
        "dev@example.com"
    );

    // With --assume-role the user's access token mints a service account's ID
    // token for the right audience.
    let target = google::impersonable_account();
    let provider = GcpProvider::default().assume_role(&target.email).unwrap();
    let (token, id) = identity(&provider, &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap();
    assert_eq!(claims(&token)["aud"], s2iam::provider::DEFAULT_GCP_AUDIENCE);
    assert_eq!(id.identifier, target.email);
    assert!(id.additional_claims["credential_source"]
        .ends_with(&format!("impersonating {}", target.email)));

    // A login without openid has no ID token; a revoked one is invalid_grant.
    let no_openid =
        server
            .cloud()
            .create_authorized_user("dev2@example.com", false, Some(&token_uri));
    let path = google::write_json(&dir, "noid.json", &no_openid);
    let e = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("returned no id_token"), "{e}");
    let mut revoked = login.clone();
    revoked["refresh_token"] = json!("1//0revoked");
    let path = google::write_json(&dir, "revoked.json", &revoked);
    let e = identity(&GcpProvider::default(), &cfg_with_file(&server, &path, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid_grant: Bad Request"), "{e}");
    assert!(!e.contains("1//0revoked"));
    server.shutdown().await;
}

#[tokio::test]
async fn detection_names_the_credential_file_and_falls_back_to_gclouds_file() {
    let server = start().await;
    let dir = common::temp_dir("gcp-detect");
    let key = server
        .cloud()
        .create_service_account_key(
            &google::impersonable_account().email,
            &format!("{}/token", server.cloud_url()),
        )
        .unwrap();
    let path = google::write_json(&dir, "sa.json", &key);
    let d = detect_provider(
        &cfg_with_file(&server, &path, &[]),
        &DetectOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(d.provider.kind(), s2iam::CloudProvider::Gcp);
    assert!(format!("{:?}", d.method).contains("names a service_account credential file"));

    // A developer laptop: no metadata service answers (every probe 404s here),
    // but gcloud's application-default file exists.
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".config/gcloud")).unwrap();
    let login = server
        .cloud()
        .create_authorized_user("dev@example.com", true, None);
    google::write_json(
        &home.join(".config/gcloud"),
        "application_default_credentials.json",
        &login,
    );
    let opts = DetectOptions {
        timeout: Duration::from_secs(3),
        ..DetectOptions::default()
    };
    let home_str = home.to_str().unwrap();
    let d = detect_provider(&cfg(&server, &[("HOME", home_str)]), &opts)
        .await
        .unwrap();
    assert_eq!(d.provider.kind(), s2iam::CloudProvider::Gcp);
    assert!(format!("{:?}", d.method).contains("gcloud's application-default credentials file"));
    assert!(detect_provider(&cfg(&server, &[]), &opts).await.is_err());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_names_the_source_in_detect_and_identity() {
    let server = start().await;
    let dir = common::temp_dir("gcp-cli");
    let key = server
        .cloud()
        .create_service_account_key(
            &google::impersonable_account().email,
            &format!("{}/token", server.cloud_url()),
        )
        .unwrap();
    let path = google::write_json(&dir, "sa.json", &key);
    let run = |args: &[&str]| {
        let out = common::s2iam_cmd(&server)
            .env("GOOGLE_APPLICATION_CREDENTIALS", &path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let detect = tokio::task::block_in_place(|| run(&["detect"]));
    assert!(detect.contains("gcp (from the environment: GOOGLE_APPLICATION_CREDENTIALS names a service_account credential file"), "{detect}");
    let id = tokio::task::block_in_place(|| run(&["identity"]));
    assert!(
        id.contains("credential_source: service_account from GOOGLE_APPLICATION_CREDENTIALS="),
        "{id}"
    );
    assert!(!id.contains("PRIVATE KEY"));
    server.shutdown().await;
}
