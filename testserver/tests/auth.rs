//! The mock auth service driven over HTTP with a plain reqwest client.
//!
//! Google and Azure tokens are minted here with the mock issuers' keys using the
//! real claim shapes, so these tests do not depend on the metadata mocks. The
//! `aws_sts_*` tests call the mock STS through `cloud::aws::sigv4::sign`, and need both
//! to be implemented (they are being written on other branches).

mod common;

use std::time::Duration;

use common::{client, send, Reply};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use s2iam_testserver::{AuthConfig, CloudConfig, FaultRule, TestServer, TestServerConfig};
use serde_json::{json, Value};

const AUD: &str = "https://authsvc.singlestore.com";
const SA_EMAIL: &str = "s2iam-test@s2iam-test-project.iam.gserviceaccount.com";
const SA_ID: &str = "104561834567890123456";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OID: &str = "6e4f2a10-0000-4000-8000-0000000000a1";
const UAMI: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourcegroups/s2iam-test-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/s2iam-test-uami";
const VM: &str = "/subscriptions/11111111-2222-3333-4444-555555555555/resourcegroups/s2iam-test-rg/providers/Microsoft.Compute/virtualMachines/s2iam-test-vm";

async fn start() -> TestServer {
    start_with(AuthConfig::default()).await
}

async fn start_with(auth: AuthConfig) -> TestServer {
    TestServer::start(TestServerConfig::new(CloudConfig::aws()).with_auth(auth))
        .await
        .expect("test server starts")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A Google ID token's claims for a GCE instance (`format=full`).
fn google_claims() -> Value {
    let now = now();
    json!({
        "iss": "https://accounts.google.com",
        "aud": AUD,
        "azp": SA_ID,
        "sub": SA_ID,
        "email": SA_EMAIL,
        "email_verified": true,
        "iat": now,
        "exp": now + 3600,
        "google": {"compute_engine": {
            "project_id": "s2iam-test-project",
            "project_number": 123456789012u64,
            "zone": "us-central1-a",
            "instance_id": "4520031799277581759",
            "instance_name": "s2iam-test-vm",
        }},
    })
}

/// An Azure managed-identity access token's claims for ARM.
fn azure_claims(mirid: &str) -> Value {
    let now = now();
    json!({
        "aud": "https://management.azure.com/",
        "iss": format!("https://sts.windows.net/{TENANT}/"),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "oid": OID,
        "sub": OID,
        "tid": TENANT,
        "appid": "9a1c3f55-0000-4000-8000-00000000c1d1",
        "idtyp": "app",
        "xms_mirid": mirid,
    })
}

fn google_token(server: &TestServer, claims: &Value) -> String {
    server.cloud().keys().google.sign(claims).unwrap()
}

fn azure_token(server: &TestServer, claims: &Value) -> String {
    server.cloud().keys().azure.sign(claims).unwrap()
}

fn with(mut claims: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

/// `POST /auth/iam/{path_and_query}` with `headers` and an optional JSON body.
async fn exchange(
    server: &TestServer,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut req = client().post(format!("{}/auth/iam/{path_and_query}", server.auth_url()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    send(req).await
}

async fn exchange_bearer(server: &TestServer, path_and_query: &str, token: &str) -> Reply {
    let auth = format!("Bearer {token}");
    exchange(server, path_and_query, &[("Authorization", &auth)], None).await
}

/// Verifies an issued JWT with the key from the JWKS endpoint and returns its claims.
async fn verified_claims(server: &TestServer, jwt: &str) -> Value {
    let jwks: JwkSet = client()
        .get(format!(
            "{}/auth/oidc/op/Customer/.well-known/jwks.json",
            server.auth_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let jwk = jwks
        .find(header.kid.as_deref().expect("issued JWT has a kid"))
        .expect("the JWKS has the kid of the issued JWT");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[server.auth_url()]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("issued JWT verifies against the JWKS")
        .claims
}

async fn records(server: &TestServer) -> (Vec<Value>, String) {
    let text = client()
        .get(format!("{}/info/requests", server.auth_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (serde_json::from_str(&text).unwrap(), text)
}

// ---------------------------------------------------------------- GCP

#[tokio::test]
async fn gcp_database_with_query_issues_verified_jwt() {
    let server = start().await;
    let token = google_token(&server, &google_claims());
    let r = exchange_bearer(&server, "database?workspaceGroupID=wg-123", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body = r.json();
    assert_eq!(body["identityFormat"], "gcp-sa-email");
    let expires_at = time::OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp() as u64;
    assert!(expires_at.abs_diff(now() + 3600) <= 5);

    let claims = verified_claims(&server, &r.jwt()).await;
    assert_eq!(claims["sub"], SA_EMAIL);
    assert_eq!(claims["provider"], "gcp");
    assert_eq!(claims["accountID"], SA_ID);
    assert_eq!(claims["region"], "us-central1");
    assert_eq!(claims["resourceType"], "compute_engine");
    assert_eq!(claims["jwtType"], "database");
    assert_eq!(claims["workspaceGroupID"], "wg-123");
    assert_eq!(claims["identityFormat"], "gcp-sa-email");
    assert_eq!(claims["createdByTestServer"], true);
    assert_eq!(claims["iss"], server.auth_url());
    assert_eq!(claims["exp"].as_u64().unwrap(), expires_at);
    // Additional string claims of the Google token, but never its registered ones.
    assert_eq!(claims["email"], SA_EMAIL);
    assert_eq!(claims["azp"], SA_ID);
    assert!(claims.get("aud").is_none());

    let (recs, _) = records(&server).await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["status"], 200);
    assert_eq!(recs[0]["jwt_type"], "database");
    assert_eq!(recs[0]["workspace_group_id"], "wg-123");
    assert_eq!(recs[0]["identity"]["identifier"], SA_EMAIL);
    assert_eq!(recs[0]["identity"]["identity_format"], "gcp-sa-email");
    assert_eq!(recs[0]["claims"]["sub"], SA_EMAIL);
    assert!(recs[0]["error"].is_null());
}

#[tokio::test]
async fn gcp_database_with_python_style_body_and_api() {
    let server = start().await;
    let token = google_token(&server, &google_claims());
    let auth = format!("Bearer {token}");
    let body = json!({
        "provider": "gcp",
        "identity": {"identifier": "spoofed@example.com", "account_id": "1", "region": "",
                     "resource_type": "gcp-compute-instance", "additional_claims": {}},
        "workspace_group_id": "wg-body",
    });
    let r = exchange(&server, "database", &[("Authorization", &auth)], Some(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let claims = verified_claims(&server, &r.jwt()).await;
    assert_eq!(claims["workspaceGroupID"], "wg-body");
    assert_eq!(
        claims["sub"], SA_EMAIL,
        "the body's identity is never trusted"
    );

    let r = exchange_bearer(&server, "api", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let claims = verified_claims(&server, &r.jwt()).await;
    assert_eq!(claims["jwtType"], "api");
    assert!(claims.get("workspaceGroupID").is_none());

    // Database without a workspace group is issued, as by the reference.
    let r = exchange_bearer(&server, "database", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (recs, _) = records(&server).await;
    assert_eq!(recs.len(), 3);
    assert_eq!(
        recs[0]["body"]["identity"]["identifier"],
        "spoofed@example.com"
    );
    assert!(recs[2]["workspace_group_id"].is_null());
}

#[tokio::test]
async fn workspace_group_conflict_and_bad_type_are_400() {
    let server = start().await;
    let token = google_token(&server, &google_claims());
    let auth = format!("Bearer {token}");
    let r = exchange(
        &server,
        "database?workspaceGroupID=a",
        &[("Authorization", &auth)],
        Some(json!({"workspace_group_id": "b"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error(), "invalid_request");
    let r = exchange(
        &server,
        "database",
        &[("Authorization", &auth)],
        Some(json!({"workspace_group_id": 7})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Same value in both places is fine.
    let r = exchange(
        &server,
        "database?workspaceGroupID=a",
        &[("Authorization", &auth)],
        Some(json!({"workspace_group_id": "a"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn gcp_audience_rules() {
    let server = start().await;
    let other = google_token(
        &server,
        &with(google_claims(), json!({"aud": "https://other.example"})),
    );
    let r = exchange_bearer(&server, "api", &other).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "verification_failed");
    assert!(r.message().contains("audience"), "{}", r.body);

    // allowed_audiences widens, required_audience narrows to exactly one.
    server
        .auth()
        .update(|c| c.allowed_audiences.push("https://other.example".into()));
    assert_eq!(
        exchange_bearer(&server, "api", &other).await.status,
        StatusCode::OK
    );
    server
        .auth()
        .update(|c| c.required_audience = Some("https://required.example".into()));
    let default_aud = google_token(&server, &google_claims());
    let r = exchange_bearer(&server, "api", &default_aud).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let required = google_token(
        &server,
        &with(google_claims(), json!({"aud": "https://required.example"})),
    );
    assert_eq!(
        exchange_bearer(&server, "api", &required).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn gcp_time_claims() {
    let server = start().await;
    let n = now();
    let expired = google_token(
        &server,
        &with(google_claims(), json!({"iat": n - 7200, "exp": n - 3600})),
    );
    let r = exchange_bearer(&server, "api", &expired).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("expired"), "{}", r.body);

    let future_iat = google_token(
        &server,
        &with(google_claims(), json!({"iat": n + 3600, "exp": n + 7200})),
    );
    let r = exchange_bearer(&server, "api", &future_iat).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("future"), "{}", r.body);

    let future_nbf = google_token(&server, &with(google_claims(), json!({"nbf": n + 3600})));
    let r = exchange_bearer(&server, "api", &future_nbf).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("not valid yet"), "{}", r.body);

    let no_exp = google_token(&server, &with(google_claims(), json!({"exp": null})));
    let r = exchange_bearer(&server, "api", &no_exp).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("exp"), "{}", r.body);

    // Within the 60 s leeway.
    let just_expired = google_token(&server, &with(google_claims(), json!({"exp": n - 20})));
    assert_eq!(
        exchange_bearer(&server, "api", &just_expired).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn gcp_wrong_key_tampered_payload_and_wrong_algorithm() {
    let server = start().await;
    // Google issuer, Azure key: routed to the Google verifier, fails the signature.
    let wrong_key = azure_token(&server, &google_claims());
    let r = exchange_bearer(&server, "api", &wrong_key).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("signature"), "{}", r.body);

    // Valid token with its payload swapped for another identity's.
    let good = google_token(&server, &google_claims());
    let parts: Vec<&str> = good.split('.').collect();
    let forged = with(
        google_claims(),
        json!({"email": "admin@evil.example", "sub": "1"}),
    );
    let payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        serde_json::to_vec(&forged).unwrap(),
    );
    let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
    let r = exchange_bearer(&server, "api", &tampered).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("signature"), "{}", r.body);

    // HS256 with the Google kid: algorithm confusion is refused.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(server.cloud().keys().google.kid().to_string());
    let hs =
        jsonwebtoken::encode(&header, &google_claims(), &EncodingKey::from_secret(b"k")).unwrap();
    let r = exchange_bearer(&server, "api", &hs).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("RS256"), "{}", r.body);

    // None of these left a token in an error message.
    let (recs, text) = records(&server).await;
    assert_eq!(recs.len(), 3);
    assert!(!text.contains(&good[..40]));
    assert!(recs
        .iter()
        .all(|r| r["status"] == 401 && r["identity"].is_null()));
}

#[tokio::test]
async fn gcp_unverified_email_and_non_gce_tokens() {
    let server = start().await;
    let unverified = google_token(
        &server,
        &with(
            google_claims(),
            json!({"email_verified": false, "google": null}),
        ),
    );
    let r = exchange_bearer(&server, "api", &unverified).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["identityFormat"], "gcp-sa-unique-id");
    let claims = verified_claims(&server, &r.jwt()).await;
    assert_eq!(claims["sub"], SA_ID);
    assert_eq!(claims["resourceType"], "instance");
    assert_eq!(claims["region"], "");

    let no_sub = google_token(&server, &with(google_claims(), json!({"sub": null})));
    assert_eq!(
        exchange_bearer(&server, "api", &no_sub).await.status,
        StatusCode::UNAUTHORIZED
    );
    let bad_iss = google_token(
        &server,
        &with(
            google_claims(),
            json!({"iss": "https://accounts.google.com.evil"}),
        ),
    );
    assert_eq!(
        exchange_bearer(&server, "api", &bad_iss).await.status,
        StatusCode::UNAUTHORIZED
    );
    let short_iss = google_token(
        &server,
        &with(google_claims(), json!({"iss": "accounts.google.com"})),
    );
    assert_eq!(
        exchange_bearer(&server, "api", &short_iss).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn gcp_identity_format_preference() {
    let server = start().await;
    let token = google_token(&server, &google_claims());
    let auth = format!("Bearer {token}");
    let cases = [
        ("gcp-sa-unique-id", SA_ID, "gcp-sa-unique-id"),
        (
            " bogus , aws-arn,gcp-sa-unique-id ,gcp-sa-email",
            SA_ID,
            "gcp-sa-unique-id",
        ),
        ("gcp-sa-email,gcp-sa-unique-id", SA_EMAIL, "gcp-sa-email"),
        // Only other providers' or unknown tokens: the built-in order.
        (
            "aws-iam-role-arn,aws-arn,azure-object-id,future",
            SA_EMAIL,
            "gcp-sa-email",
        ),
        ("", SA_EMAIL, "gcp-sa-email"),
    ];
    for (pref, sub, format) in cases {
        let r = exchange(
            &server,
            "api",
            &[
                ("Authorization", &auth),
                ("X-S2IAM-Identity-Format-Preference", pref),
            ],
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{pref}: {}", r.body);
        assert_eq!(r.json()["identityFormat"], format, "{pref}");
        let claims = verified_claims(&server, &r.jwt()).await;
        assert_eq!(claims["sub"], sub, "{pref}");
        assert_eq!(claims["identityFormat"], format, "{pref}");
    }
    let (recs, _) = records(&server).await;
    assert_eq!(recs[0]["identity"]["identity_format"], "gcp-sa-unique-id");
}

// ---------------------------------------------------------------- Azure

#[tokio::test]
async fn azure_managed_identity_happy_path_and_formats() {
    let server = start().await;
    let token = azure_token(&server, &azure_claims(UAMI));
    let auth = format!("Bearer {token}");
    let r = exchange(
        &server,
        "database?workspaceGroupID=wg",
        &[("Authorization", &auth), ("X-Cloud-Provider", "azure")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["identityFormat"], "azure-object-id");
    let claims = verified_claims(&server, &r.jwt()).await;
    assert_eq!(claims["sub"], OID);
    assert_eq!(claims["provider"], "azure");
    assert_eq!(claims["accountID"], TENANT);
    assert_eq!(claims["resourceType"], "Microsoft.ManagedIdentity");
    assert_eq!(claims["xms_mirid"], UAMI);
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["iss"], server.auth_url());

    // A user-assigned identity may be named by its resource id.
    let r = exchange(
        &server,
        "api",
        &[
            ("Authorization", &auth),
            (
                "X-S2IAM-Identity-Format-Preference",
                "azure-resource-id,azure-object-id",
            ),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["identityFormat"], "azure-resource-id");
    assert_eq!(verified_claims(&server, &r.jwt()).await["sub"], UAMI);

    // A system-assigned identity cannot: it falls back to the object id.
    let system = azure_token(&server, &azure_claims(VM));
    let r = exchange(
        &server,
        "api",
        &[
            ("Authorization", &format!("Bearer {system}")),
            ("X-S2IAM-Identity-Format-Preference", "azure-resource-id"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["identityFormat"], "azure-object-id");
    let claims = verified_claims(&server, &r.jwt()).await;
    assert_eq!(claims["sub"], OID);
    assert_eq!(claims["resourceType"], "Microsoft.Compute");

    // No oid: sub is the floor.
    let no_oid = azure_token(
        &server,
        &with(azure_claims(VM), json!({"oid": null, "sub": "sub-only"})),
    );
    let r = exchange_bearer(&server, "api", &no_oid).await;
    assert_eq!(verified_claims(&server, &r.jwt()).await["sub"], "sub-only");

    // v2 issuer form.
    let v2 = azure_token(
        &server,
        &with(
            azure_claims(VM),
            json!({"iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0")}),
        ),
    );
    assert_eq!(
        exchange_bearer(&server, "api", &v2).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn azure_tenant_audience_issuer_and_time() {
    let server = start_with(AuthConfig {
        azure_tenant: TENANT.into(),
        ..AuthConfig::default()
    })
    .await;
    assert_eq!(
        exchange_bearer(&server, "api", &azure_token(&server, &azure_claims(VM)))
            .await
            .status,
        StatusCode::OK
    );
    let other_tenant = "00000000-1111-2222-3333-444444444444";
    let foreign = azure_token(
        &server,
        &with(
            azure_claims(VM),
            json!({"tid": other_tenant, "iss": format!("https://sts.windows.net/{other_tenant}/")}),
        ),
    );
    let r = exchange_bearer(&server, "api", &foreign).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("tenant"), "{}", r.body);
    // "common" accepts every tenant.
    server.auth().update(|c| c.azure_tenant = "common".into());
    assert_eq!(
        exchange_bearer(&server, "api", &foreign).await.status,
        StatusCode::OK
    );

    // iss and tid must agree.
    let mismatched = azure_token(
        &server,
        &with(azure_claims(VM), json!({"tid": other_tenant})),
    );
    assert_eq!(
        exchange_bearer(&server, "api", &mismatched).await.status,
        StatusCode::UNAUTHORIZED
    );
    let no_tid = azure_token(&server, &with(azure_claims(VM), json!({"tid": null})));
    assert_eq!(
        exchange_bearer(&server, "api", &no_tid).await.status,
        StatusCode::UNAUTHORIZED
    );

    let wrong_aud = azure_token(
        &server,
        &with(azure_claims(VM), json!({"aud": "https://vault.azure.net"})),
    );
    let r = exchange_bearer(&server, "api", &wrong_aud).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("audience"), "{}", r.body);
    // An allowed audience is accepted too, as by the reference.
    let aud_allowed = azure_token(&server, &with(azure_claims(VM), json!({"aud": AUD})));
    assert_eq!(
        exchange_bearer(&server, "api", &aud_allowed).await.status,
        StatusCode::OK
    );

    let n = now();
    let expired = azure_token(
        &server,
        &with(
            azure_claims(VM),
            json!({"exp": n - 600, "nbf": n - 4000, "iat": n - 4000}),
        ),
    );
    let r = exchange_bearer(&server, "api", &expired).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("expired"), "{}", r.body);
    let not_yet = azure_token(
        &server,
        &with(azure_claims(VM), json!({"nbf": n + 600, "exp": n + 4000})),
    );
    let r = exchange_bearer(&server, "api", &not_yet).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("not valid yet"), "{}", r.body);

    // Azure issuer, Google key.
    let wrong_key = google_token(&server, &azure_claims(VM));
    let r = exchange_bearer(&server, "api", &wrong_key).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("signature"), "{}", r.body);
}

// ---------------------------------------------------------------- routing and rejections

#[tokio::test]
async fn missing_and_malformed_credentials_are_401() {
    let server = start().await;
    let r = exchange(&server, "database?workspaceGroupID=x", &[], None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error(), "verification_failed");
    assert!(r.message().contains("no identity headers"), "{}", r.body);

    let unrouted = format!(
        "{}.e30.sig",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            b"{\"alg\":\"RS256\"}"
        )
    );
    let google_garbage = format!(
        "{}.{}.sig",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            b"not json"
        ),
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"iss":"https://accounts.google.com"}"#
        )
    );
    let foreign_issuer = server
        .cloud()
        .keys()
        .google
        .sign(&json!({"iss": "https://token.actions.githubusercontent.com", "exp": now() + 60}))
        .unwrap();
    for auth in [
        "Bearer".to_string(),
        "Bearer    ".to_string(),
        "Basic dXNlcjpwYXNz".to_string(),
        "Bearer not-a-jwt".to_string(),
        "Bearer a.b.c".to_string(),
        "Bearer ....".to_string(),
        format!("Bearer {unrouted}"),
        format!("Bearer {google_garbage}"),
        format!("Bearer {foreign_issuer}"),
        format!("Bearer {}", "x".repeat(8000)),
    ] {
        let r = exchange(&server, "api", &[("Authorization", &auth)], None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:.40}: {}", r.body);
        assert_eq!(r.error(), "verification_failed");
    }

    // AWS key id without its secret.
    let r = exchange(
        &server,
        "api",
        &[("X-AWS-Access-Key-ID", "AKIAEXAMPLE")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.message().contains("X-AWS-Secret-Access-Key"),
        "{}",
        r.body
    );

    // Every attempt was recorded.
    let (recs, _) = records(&server).await;
    assert_eq!(recs.len(), 12);
    assert!(recs
        .iter()
        .all(|r| r["status"] == 401 && r["error"].is_string()));
}

#[tokio::test]
async fn cloud_provider_header_must_agree() {
    let server = start().await;
    let token = google_token(&server, &google_claims());
    let auth = format!("Bearer {token}");
    let r = exchange(
        &server,
        "api",
        &[("Authorization", &auth), ("X-Cloud-Provider", "azure")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("X-Cloud-Provider"), "{}", r.body);
    let r = exchange(
        &server,
        "api",
        &[("Authorization", &auth), ("X-Cloud-Provider", "GCP")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let azure = format!("Bearer {}", azure_token(&server, &azure_claims(VM)));
    let r = exchange(
        &server,
        "api",
        &[("Authorization", &azure), ("X-Cloud-Provider", "aws")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = exchange(
        &server,
        "api",
        &[
            ("X-AWS-Access-Key-ID", "AKIAEXAMPLE"),
            ("X-AWS-Secret-Access-Key", "s"),
            ("X-Cloud-Provider", "gcp"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.message().contains("X-Cloud-Provider"), "{}", r.body);
}

#[tokio::test]
async fn non_ascii_headers_are_400() {
    let server = start().await;
    let token = google_token(&server, &google_claims());
    for name in [
        "x-cloud-provider",
        "x-s2iam-identity-format-preference",
        "authorization",
    ] {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_bytes(b"gcp\xff\xfe").unwrap(),
        );
        let r = send(
            client()
                .post(format!("{}/auth/iam/api", server.auth_url()))
                .headers(headers),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}: {}", r.body);
        assert_eq!(r.error(), "invalid_request");
    }
    // The log shows the raw bytes lossily, never fails.
    let (recs, _) = records(&server).await;
    assert_eq!(recs.len(), 3);
    assert!(recs[0]["headers"]["x-cloud-provider"]
        .as_str()
        .unwrap()
        .starts_with("gcp"));
}

#[tokio::test]
async fn unknown_type_path_method_and_bodies() {
    let server = start().await;
    let token = google_token(&server, &google_claims());
    let auth = format!("Bearer {token}");

    let r = exchange(&server, "admin", &[("Authorization", &auth)], None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "not_found");
    assert!(r.message().contains("database or api"), "{}", r.body);

    for path in [
        "/auth/iam/",
        "/auth/iam/database/extra",
        "/nope",
        "/auth/oidc",
    ] {
        let r = send(client().post(format!("{}{path}", server.auth_url()))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.error(), "not_found");
    }

    let r = send(client().get(format!("{}/auth/iam/database", server.auth_url()))).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error(), "method_not_allowed");
    assert_eq!(r.headers["allow"], "POST");
    let r = send(client().post(format!("{}/health", server.auth_url()))).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.error(), "method_not_allowed");
    let r = send(client().delete(format!("{}/info/public-key", server.auth_url()))).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    let url = format!("{}/auth/iam/api", server.auth_url());
    for (body, ctype) in [
        (b"not json".to_vec(), "application/json"),
        (b"[1,2]".to_vec(), "application/json"),
        (b"\"str\"".to_vec(), "text/plain"),
        (b"\xff\xfe\x00garbage".to_vec(), "application/octet-stream"),
        (b"{\"a\":".to_vec(), "application/json"),
    ] {
        let r = send(
            client()
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", ctype)
                .body(body.clone()),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:?}: {}", r.body);
        assert_eq!(r.error(), "invalid_request");
    }
    // A JSON object under another content type is read, whitespace is no body.
    let r = send(
        client()
            .post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = send(
        client()
            .post(&url)
            .header("Authorization", &auth)
            .body("  \n"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(100 * 1024));
    let r = send(
        client()
            .post(&url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .body(huge),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error(), "payload_too_large");

    let (recs, _) = records(&server).await;
    let statuses: Vec<u64> = recs.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![404, 400, 400, 400, 400, 400, 200, 200, 413]);
    assert_eq!(recs[0]["jwt_type"], "admin");
}

// ---------------------------------------------------------------- toggles

#[tokio::test]
async fn toggles_switched_in_process() {
    let server = start().await;
    let token = google_token(&server, &google_claims());
    let auth = server.auth();

    auth.update(|c| {
        c.return_error = true;
        c.error_code = 503;
        c.error_message = "down for maintenance".into();
        c.fail_verification = true; // return_error wins
    });
    let r = exchange_bearer(&server, "api", &token).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json(),
        json!({"error": "service_unavailable", "message": "down for maintenance"})
    );
    // Before verification: even no credentials get the configured error.
    assert_eq!(
        exchange(&server, "api", &[], None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    auth.update(|c| c.return_error = false);
    let r = exchange_bearer(&server, "api", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json(),
        json!({"error": "verification_failed", "message": "verification failed"})
    );

    auth.update(|c| {
        c.fail_verification = false;
        c.return_empty_jwt = true;
    });
    let r = exchange_bearer(&server, "api", &token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"jwt": ""}));
    // Verification still runs first.
    let expired = google_token(
        &server,
        &with(google_claims(), json!({"exp": now() - 3600})),
    );
    assert_eq!(
        exchange_bearer(&server, "api", &expired).await.status,
        StatusCode::UNAUTHORIZED
    );

    auth.update(|c| {
        c.return_empty_jwt = false;
        c.token_expiry = Duration::from_secs(120);
    });
    let r = exchange_bearer(&server, "api", &token).await;
    let claims = verified_claims(&server, &r.jwt()).await;
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        120
    );

    let (recs, _) = records(&server).await;
    let statuses: Vec<u64> = recs.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![503, 503, 401, 200, 401, 200]);
    assert_eq!(recs[0]["error"], "down for maintenance");
    // The empty-JWT answer still records who was verified.
    assert_eq!(recs[3]["identity"]["identifier"], SA_EMAIL);
    assert!(recs[3]["claims"].is_null());
}

#[tokio::test]
async fn toggles_switched_over_http() {
    let server = start().await;
    let token = google_token(&server, &google_claims());
    let url = format!("{}/_mock/behaviour", server.auth_url());

    let current: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current["fail_verification"], false);
    assert_eq!(current["azure_tenant"], "common");
    assert_eq!(current["token_expiry"], 3600);

    let r = send(
        client()
            .put(&url)
            .json(&json!({"return_error": true, "error_code": 429, "error_message": "slow down"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["error_code"], 429);
    assert!(server.auth().config().return_error);
    let r = exchange_bearer(&server, "api", &token).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.json(),
        json!({"error": "too_many_requests", "message": "slow down"})
    );

    // PUT replaces: fields left out go back to their defaults.
    send(client().put(&url).json(&json!({"fail_verification": true}))).await;
    let r = exchange_bearer(&server, "api", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.message(), "verification failed");

    send(client().put(&url).json(&json!({"return_empty_jwt": true}))).await;
    let r = exchange_bearer(&server, "api", &token).await;
    assert_eq!(r.json(), json!({"jwt": ""}));

    for bad in [
        "not json",
        "[]",
        r#"{"fail_verifcation": true}"#,
        r#"{"error_code": 99}"#,
        r#"{"token_expiry": "1h"}"#,
        r#"{"allowed_audiences": "x"}"#,
    ] {
        let r = send(client().put(&url).body(bad)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.error(), "invalid_behaviour");
    }
    assert!(
        server.auth().config().return_empty_jwt,
        "a rejected PUT changes nothing"
    );

    send(client().put(&url).json(&json!({}))).await;
    assert_eq!(server.auth().config(), AuthConfig::default());
    assert_eq!(
        exchange_bearer(&server, "api", &token).await.status,
        StatusCode::OK
    );
}

// ---------------------------------------------------------------- info endpoints

#[tokio::test]
async fn request_log_redacts_credentials_and_clears() {
    let server = start().await;
    let token = google_token(&server, &google_claims());
    let r = exchange(
        &server,
        "database?workspaceGroupID=wg",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Cookie", "session=cookie-secret"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let jwt = r.jwt();

    // AWS headers, with verification switched off so STS is never called.
    server.auth().update(|c| c.fail_verification = true);
    let key = server.cloud().issue_session(
        "arn:aws:sts::123456789012:assumed-role/s2iam-test-role/i-0123456789abcdef0",
        "AROAEXAMPLEROLEID:i-0123456789abcdef0",
        "123456789012",
    );
    let session_token = key.session_token.clone().unwrap();
    let r = exchange(
        &server,
        "api",
        &[
            ("X-AWS-Access-Key-ID", &key.access_key_id),
            ("X-AWS-Secret-Access-Key", &key.secret_access_key),
            ("X-AWS-Session-Token", &session_token),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let (recs, text) = records(&server).await;
    assert_eq!(recs.len(), 2);
    for secret in [
        token.as_str(),
        &token[token.len() - 30..],
        &key.secret_access_key,
        &session_token,
        "cookie-secret",
        &jwt,
    ] {
        assert!(
            !text.contains(secret),
            "a secret leaked into /info/requests"
        );
    }
    assert_eq!(recs[0]["headers"]["authorization"], "<redacted>");
    assert_eq!(recs[0]["headers"]["cookie"], "<redacted>");
    assert_eq!(recs[1]["headers"]["x-aws-secret-access-key"], "<redacted>");
    assert_eq!(recs[1]["headers"]["x-aws-session-token"], "<redacted>");
    assert_eq!(
        recs[1]["headers"]["x-aws-access-key-id"],
        key.access_key_id.as_str()
    );
    assert_eq!(recs[0]["query"], "workspaceGroupID=wg");
    assert_eq!(recs[0]["path"], "/auth/iam/database");
    assert_eq!(recs[0]["method"], "POST");
    assert!(recs[0]["time"].as_str().unwrap().ends_with('Z'));

    let r = send(client().delete(format!("{}/info/requests", server.auth_url()))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(records(&server).await.0.is_empty());
    assert!(server.auth().records().is_empty());
}

#[tokio::test]
async fn public_key_jwks_and_health() {
    let server = start().await;
    let r = send(client().get(format!("{}/info/public-key", server.auth_url()))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/plain");
    assert!(r.body.starts_with("-----BEGIN RSA PUBLIC KEY-----\n"));
    assert!(r.body.trim_end().ends_with("-----END RSA PUBLIC KEY-----"));
    let pem_key = DecodingKey::from_rsa_pem(r.body.as_bytes()).expect("a PKCS#1 PEM");

    // The PEM and the JWKS are the same key: both verify an issued JWT.
    let token = google_token(&server, &google_claims());
    let jwt = exchange_bearer(&server, "api", &token).await.jwt();
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_aud = false;
    jsonwebtoken::decode::<Value>(&jwt, &pem_key, &v).expect("verifies with the PEM key");
    let claims = verified_claims(&server, &jwt).await;
    assert_eq!(claims["sub"], SA_EMAIL);
    let jwks: Value = client()
        .get(format!(
            "{}/auth/oidc/op/Customer/.well-known/jwks.json",
            server.auth_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], server.auth().key().kid());
    assert_eq!(jwks["keys"][0]["alg"], "RS256");

    server.auth().update(|c| c.fail_verification = true);
    let r = send(client().get(format!("{}/health", server.auth_url()))).await;
    assert_eq!(r.status, StatusCode::OK);
    let h = r.json();
    assert_eq!(h["status"], "healthy");
    assert!(h["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(h["config"]["port"], server.auth_addr().port());
    assert_eq!(h["config"]["failVerification"], true);
    assert_eq!(h["config"]["returnEmptyJWT"], false);
    assert_eq!(h["config"]["returnError"], false);
}

// ---------------------------------------------------------------- fault injection

#[tokio::test]
async fn faults_on_the_exchange_endpoint() {
    let server = start().await;
    let token = google_token(&server, &google_claims());
    server
        .auth_faults()
        .add(FaultRule::status("/auth/iam/", 503).times(1));
    let r = exchange_bearer(&server, "api", &token).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error(), "injected_fault");
    assert_eq!(
        exchange_bearer(&server, "api", &token).await.status,
        StatusCode::OK
    );

    server
        .auth_faults()
        .add(FaultRule::reset("/auth/iam/").times(1));
    let auth = format!("Bearer {token}");
    let err = client()
        .post(format!("{}/auth/iam/api", server.auth_url()))
        .header("Authorization", &auth)
        .send()
        .await;
    assert!(err.is_err(), "the connection is reset");
    assert_eq!(
        exchange_bearer(&server, "api", &token).await.status,
        StatusCode::OK
    );

    server
        .auth_faults()
        .add(FaultRule::latency("/auth/iam/", Duration::from_millis(300)).times(1));
    let started = std::time::Instant::now();
    assert_eq!(
        exchange_bearer(&server, "api", &token).await.status,
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Injected faults never reach the service, so only real exchanges are recorded.
    assert_eq!(server.auth().records().len(), 3);
    // Info endpoints are not affected by exchange-path faults.
    server
        .auth_faults()
        .add(FaultRule::status("/auth/iam/", 500));
    assert_eq!(
        send(client().get(format!("{}/health", server.auth_url())))
            .await
            .status,
        StatusCode::OK
    );
}

// ---------------------------------------------------------------- AWS (needs sigv4::sign and the mock STS)

#[tokio::test]
async fn aws_sts_user_key_and_assumed_role_session() {
    let server = start().await;
    let user = server.cloud().user_key();
    let r = exchange(
        &server,
        "database?workspaceGroupID=wg",
        &[
            ("X-AWS-Access-Key-ID", &user.access_key_id),
            ("X-AWS-Secret-Access-Key", &user.secret_access_key),
            ("X-Cloud-Provider", "aws"),
            (
                "X-S2IAM-Identity-Format-Preference",
                "aws-iam-role-arn,aws-arn",
            ),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.json()["identityFormat"],
        "aws-arn",
        "a user has no role ARN"
    );
    let claims = verified_claims(&server, &r.jwt()).await;
    assert_eq!(claims["sub"], user.arn.as_str());
    assert_eq!(claims["provider"], "aws");
    assert_eq!(claims["accountID"], user.account.as_str());
    assert_eq!(claims["resourceType"], "user");
    assert_eq!(claims["UserId"], user.user_id.as_str());

    let arn = "arn:aws:sts::123456789012:assumed-role/s2iam-test-role/i-0123456789abcdef0";
    let session =
        server
            .cloud()
            .issue_session(arn, "AROAEXAMPLEROLEID:i-0123456789abcdef0", "123456789012");
    let token = session.session_token.clone().unwrap();
    let headers = |pref: &'static str| {
        vec![
            ("X-AWS-Access-Key-ID", session.access_key_id.clone()),
            ("X-AWS-Secret-Access-Key", session.secret_access_key.clone()),
            ("X-AWS-Session-Token", token.clone()),
            ("X-S2IAM-Identity-Format-Preference", pref.to_string()),
        ]
    };
    for (pref, format, sub) in [
        ("", "aws-arn", arn),
        (
            "aws-iam-role-arn,aws-arn",
            "aws-iam-role-arn",
            "arn:aws:iam::123456789012:role/s2iam-test-role",
        ),
        ("aws-role-id", "aws-role-id", "AROAEXAMPLEROLEID"),
        ("gcp-sa-email", "aws-arn", arn),
    ] {
        let h = headers(pref);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = exchange(&server, "api", &h, None).await;
        assert_eq!(r.status, StatusCode::OK, "{pref}: {}", r.body);
        assert_eq!(r.json()["identityFormat"], format, "{pref}");
        let claims = verified_claims(&server, &r.jwt()).await;
        assert_eq!(claims["sub"], sub, "{pref}");
        assert_eq!(claims["resourceType"], "assumed-role");
        assert_eq!(claims["region"], "");
        assert_eq!(claims["AssumedRoleArn"], arn);
        assert_eq!(claims["RoleSessionName"], "i-0123456789abcdef0");
        assert_eq!(claims["UserId"], "AROAEXAMPLEROLEID:i-0123456789abcdef0");
    }
}

#[tokio::test]
async fn aws_sts_bad_credentials_are_401_and_sts_outage_is_502() {
    let server = start().await;
    let user = server.cloud().user_key();
    // Change the last character to a different one (a fixed replacement would
    // leave the secret right whenever it already ended in that character).
    let secret = &user.secret_access_key;
    let last = if secret.ends_with('x') { "y" } else { "x" };
    let wrong_secret = format!("{}{last}", &secret[..secret.len() - 1]);
    assert_ne!(&wrong_secret, secret);
    let r = exchange(
        &server,
        "api",
        &[
            ("X-AWS-Access-Key-ID", &user.access_key_id),
            ("X-AWS-Secret-Access-Key", &wrong_secret),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.message().contains("SignatureDoesNotMatch"), "{}", r.body);
    assert!(!r.body.contains(&wrong_secret));

    let r = exchange(
        &server,
        "api",
        &[
            ("X-AWS-Access-Key-ID", "AKIAUNKNOWNUNKNOWN00"),
            ("X-AWS-Secret-Access-Key", "whatever"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert!(r.message().contains("InvalidClientTokenId"), "{}", r.body);

    server
        .cloud_faults()
        .add(FaultRule::status("/", 503).method("POST").times(1));
    let r = exchange(
        &server,
        "api",
        &[
            ("X-AWS-Access-Key-ID", &user.access_key_id),
            ("X-AWS-Secret-Access-Key", &user.secret_access_key),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
    assert_eq!(r.error(), "upstream_error");
}
