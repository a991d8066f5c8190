//! The mock GCE metadata server and IAM Credentials API, driven over loopback HTTP
//! with a plain client, the way s2iam (and the reference clients) talk to them.

mod common;

use common::{client, send, start, Reply};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation};
use s2iam_testserver::cloud::gcp::{self, GOOGLE_ISSUER};
use s2iam_testserver::{CloudConfig, FaultRule, GcpIdentity, ServiceAccount, TestServer};
use serde_json::{json, Value};

const MD: &str = "/computeMetadata/v1";
const AUD: &str = "https://authsvc.singlestore.com";

fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET a metadata path with `Metadata-Flavor: Google`.
async fn md(server: &TestServer, path: &str) -> Reply {
    send(
        client()
            .get(format!("{}{MD}/{path}", server.cloud_url()))
            .header("Metadata-Flavor", "Google"),
    )
    .await
}

fn sa(server: &TestServer) -> ServiceAccount {
    server
        .cloud()
        .config()
        .gcp
        .unwrap()
        .service_account
        .unwrap()
}

fn target(server: &TestServer) -> ServiceAccount {
    server.cloud().config().gcp.unwrap().impersonable[0].clone()
}

fn verify_google(server: &TestServer, token: &str, audience: &str) -> Value {
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[audience]);
    v.set_issuer(&[GOOGLE_ISSUER]);
    server
        .cloud()
        .keys()
        .google
        .verify(token, &v)
        .expect("token verifies with the Google key")
}

async fn identity(server: &TestServer, query: &str) -> Reply {
    md(
        server,
        &format!("instance/service-accounts/default/identity?{query}"),
    )
    .await
}

async fn access_token(server: &TestServer) -> String {
    let r = md(server, "instance/service-accounts/default/token").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}

async fn generate_id_token(
    server: &TestServer,
    account: &str,
    bearer: Option<&str>,
    body: &str,
) -> Reply {
    let mut req = client()
        .post(format!(
            "{}/v1/projects/-/serviceAccounts/{account}:generateIdToken",
            server.cloud_url()
        ))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    send(req).await
}

fn assert_google_error(r: &Reply, code: u16, status: &str) {
    assert_eq!(r.status.as_u16(), code, "{}", r.body);
    let j = r.json();
    assert_eq!(j["error"]["code"], code);
    assert_eq!(j["error"]["status"], status);
    assert!(j["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

// ---------------------------------------------------------------------------
// Metadata leaves and directories
// ---------------------------------------------------------------------------

#[tokio::test]
async fn instance_and_project_leaves() {
    let server = start(CloudConfig::gcp()).await;
    let g = GcpIdentity::default();
    let cases = [
        ("instance/id", g.instance_id.clone()),
        ("instance/name", g.instance_name.clone()),
        (
            "instance/zone",
            format!("projects/{}/zones/{}", g.project_number, g.zone),
        ),
        (
            "instance/hostname",
            format!("{}.{}.c.{}.internal", g.instance_name, g.zone, g.project_id),
        ),
        ("project/project-id", g.project_id.clone()),
        ("project/numeric-project-id", g.project_number.clone()),
        ("instance/service-accounts/default/email", sa(&server).email),
    ];
    for (path, want) in cases {
        let r = md(&server, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, want, "{path}");
        assert_eq!(r.header("metadata-flavor"), "Google", "{path}");
        assert_eq!(r.header("content-type"), "application/text", "{path}");
    }
    let r = md(&server, "instance/service-accounts/default/scopes").await;
    assert!(r
        .body
        .lines()
        .any(|l| l == "https://www.googleapis.com/auth/cloud-platform"));
    let r = md(&server, "instance/service-accounts/default/aliases").await;
    assert_eq!(r.body, "default\n");
    server.shutdown().await;
}

#[tokio::test]
async fn alt_json_gives_numbers_for_ids() {
    let server = start(CloudConfig::gcp()).await;
    let r = md(&server, "instance/id?alt=json").await;
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.json(), json!(4520031799277581759u64));
    let r = md(&server, "instance/name?alt=json").await;
    assert_eq!(r.json(), json!("s2iam-test-vm"));
    server.shutdown().await;
}

#[tokio::test]
async fn directories_list_and_redirect_without_slash() {
    let server = start(CloudConfig::gcp()).await;
    let r = md(&server, "").await;
    assert_eq!(r.body, "instance/\nproject/\n");
    let email = sa(&server).email;
    let r = md(&server, "instance/service-accounts/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, format!("default/\n{email}/\n"));
    let r = md(&server, "instance/service-accounts/default/").await;
    assert_eq!(r.body, "aliases\nemail\nidentity\nscopes\ntoken\n");

    let r = send(
        no_redirect_client()
            .get(format!(
                "{}{MD}/instance/service-accounts/default?recursive=true",
                server.cloud_url()
            ))
            .header("Metadata-Flavor", "Google"),
    )
    .await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        format!("{MD}/instance/service-accounts/default/?recursive=true")
    );
    // A following client lands on the directory.
    let r = md(&server, "instance/service-accounts/default?recursive=true").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["email"], email);
    server.shutdown().await;
}

#[tokio::test]
async fn recursive_service_account_is_json_by_default_and_by_email() {
    let server = start(CloudConfig::gcp()).await;
    let account = sa(&server);
    let want = json!({
        "aliases": ["default"],
        "email": account.email,
        "scopes": [
            "https://www.googleapis.com/auth/cloud-platform",
            "https://www.googleapis.com/auth/userinfo.email"
        ],
    });
    let r = md(&server, "instance/service-accounts/default/?recursive=true").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("metadata-flavor"), "Google");
    assert_eq!(r.json(), want);
    for name in [account.email.clone(), account.email.replace('@', "%40")] {
        let r = md(
            &server,
            &format!("instance/service-accounts/{name}/?recursive=TRUE"),
        )
        .await;
        assert_eq!(r.json(), want, "{name}");
    }
    let r = md(&server, "instance/service-accounts/?recursive=true").await;
    assert_eq!(r.json()["default"], want);
    assert_eq!(r.json()[&account.email], want);
    let r = md(&server, "project/?recursive=true").await;
    assert_eq!(r.json()["numericProjectId"], json!(123456789012u64));
    assert_eq!(r.json()["projectId"], "s2iam-test-project");
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_google_404_pages() {
    let server = start(CloudConfig::gcp()).await;
    for path in [
        "instance/nope",
        "instance/id/",
        "nope/",
        "instance/service-accounts/someone-else@x.iam.gserviceaccount.com/email",
        "instance//id",
    ] {
        let r = md(&server, path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("metadata-flavor"), "Google");
        assert!(r.body.contains("was not found on this server"), "{path}");
    }
    let r = send(
        client()
            .get(format!("{}/computeMetadata/v2/", server.cloud_url()))
            .header("Metadata-Flavor", "Google"),
    )
    .await;
    assert_eq!(r.status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_query_strings_are_survived() {
    let server = start(CloudConfig::gcp()).await;
    let r = md(&server, "instance/id?%%%&&=&alt&recursive=%ZZ").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, GcpIdentity::default().instance_id);
    let r = identity(&server, "audience=%zz%&format=full&&&").await;
    assert_eq!(r.status, 200);
    let claims = verify_google(&server, &r.body, "%zz%");
    assert_eq!(claims["aud"], "%zz%");
    let r = identity(&server, "audience=a&format=%00").await;
    assert_eq!(r.status, 400);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Header checks
// ---------------------------------------------------------------------------

#[tokio::test]
async fn missing_or_wrong_metadata_flavor_is_403() {
    let server = start(CloudConfig::gcp()).await;
    let url = format!("{}{MD}/instance/id", server.cloud_url());
    let r = send(client().get(&url)).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("metadata-flavor"), "Google");
    assert!(r.header("content-type").starts_with("text/html"));
    assert!(r.body.contains("Missing Metadata-Flavor:Google header"));
    assert!(r.body.contains("/computeMetadata/v1/instance/id"));
    for wrong in ["google", "Goog", "", "Google, Google", "GOOGLE"] {
        let r = send(client().get(&url).header("Metadata-Flavor", wrong)).await;
        assert_eq!(r.status, 403, "{wrong:?}");
    }
    // The identity endpoint is guarded too.
    let r = send(client().get(format!(
        "{}{MD}/instance/service-accounts/default/identity?audience=a",
        server.cloud_url()
    )))
    .await;
    assert_eq!(r.status, 403);
    // The wrong Google-ish header name does not count.
    let r = send(
        client()
            .get(&url)
            .header("X-Google-Metadata-Request", "True"),
    )
    .await;
    assert_eq!(r.status, 403);
    server.shutdown().await;
}

#[tokio::test]
async fn x_forwarded_for_is_refused() {
    let server = start(CloudConfig::gcp()).await;
    for path in ["instance/id", "instance/service-accounts/default/token"] {
        let r = send(
            client()
                .get(format!("{}{MD}/{path}", server.cloud_url()))
                .header("Metadata-Flavor", "Google")
                .header("X-Forwarded-For", "10.0.0.1"),
        )
        .await;
        assert_eq!(r.status, 403, "{path}");
        assert!(r.body.contains("X-Forwarded-For"));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn gcp_switched_off_is_404_but_iam_credentials_still_answers() {
    let server = start(CloudConfig::none()).await;
    for path in [
        "instance/id",
        "instance/service-accounts/default/identity?audience=a",
        "",
    ] {
        let r = md(&server, path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("metadata-flavor"), "", "no Google header when off");
    }
    let email = GcpIdentity::default().impersonable[0].email.clone();
    let r = generate_id_token(&server, &email, None, "{}").await;
    assert_google_error(&r, 401, "UNAUTHENTICATED");
    server.shutdown().await;

    // Switching GCP off at run time takes effect immediately.
    let server = start(CloudConfig::gcp()).await;
    assert_eq!(md(&server, "instance/id").await.status, 200);
    server.cloud().update(|c| c.gcp = None);
    assert_eq!(md(&server, "instance/id").await.status, 404);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Access and ID tokens
// ---------------------------------------------------------------------------

#[tokio::test]
async fn token_endpoint_mints_distinct_bearer_tokens() {
    let server = start(CloudConfig::gcp()).await;
    let r = md(&server, "instance/service-accounts/default/token").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json");
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 3600);
    let first = j["access_token"].as_str().unwrap().to_string();
    assert!(first.starts_with("ya29."));
    let by_email = md(
        &server,
        &format!(
            "instance/service-accounts/{}/token?scopes=a,b",
            sa(&server).email
        ),
    )
    .await;
    assert_ne!(by_email.json()["access_token"].as_str().unwrap(), first);
    assert_eq!(
        server.cloud().gcp_access_tokens().owner(&first),
        Some(sa(&server).email)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn identity_requires_an_audience() {
    let server = start(CloudConfig::gcp()).await;
    for query in ["", "audience=", "format=full", "audiences=x"] {
        let r = identity(&server, query).await;
        assert_eq!(r.status, 400, "{query}");
        assert_eq!(r.body, "non-empty audience parameter required");
        assert_eq!(r.header("metadata-flavor"), "Google");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn standard_identity_token_has_googles_claims() {
    let server = start(CloudConfig::gcp()).await;
    let account = sa(&server);
    let r = identity(&server, &format!("audience={AUD}")).await;
    assert_eq!(r.status, 200);
    let c = verify_google(&server, &r.body, AUD);
    assert_eq!(c["iss"], GOOGLE_ISSUER);
    assert_eq!(c["aud"], AUD);
    assert_eq!(c["sub"], account.unique_id);
    assert_eq!(c["azp"], account.unique_id);
    assert_eq!(c["email"], account.email);
    assert_eq!(c["email_verified"], true);
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        3600
    );
    assert!(c.get("google").is_none());
    // Signed by Google, not by the other issuers.
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_aud = false;
    assert!(server
        .cloud()
        .keys()
        .azure
        .verify::<Value>(&r.body, &v)
        .is_err());
    assert!(server
        .cloud()
        .keys()
        .auth
        .verify::<Value>(&r.body, &v)
        .is_err());
    // ... and for another audience it does not validate.
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&["https://elsewhere"]);
    assert!(server
        .cloud()
        .keys()
        .google
        .verify::<Value>(&r.body, &v)
        .is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn full_identity_token_carries_the_instance_and_licenses_on_request() {
    let server = start(CloudConfig::gcp()).await;
    let g = GcpIdentity::default();
    let r = identity(&server, &format!("audience={AUD}&format=full")).await;
    let c = verify_google(&server, &r.body, AUD);
    let ce = &c["google"]["compute_engine"];
    assert_eq!(ce["project_id"], g.project_id);
    assert_eq!(ce["project_number"], json!(123456789012u64));
    assert_eq!(ce["zone"], g.zone);
    assert_eq!(ce["instance_id"], g.instance_id);
    assert_eq!(ce["instance_name"], g.instance_name);
    assert!(ce["instance_creation_timestamp"].is_u64());
    assert!(ce.get("license_id").is_none());
    let r = identity(
        &server,
        &format!("audience={AUD}&format=full&licenses=TRUE"),
    )
    .await;
    let c = verify_google(&server, &r.body, AUD);
    assert!(c["google"]["compute_engine"]["license_id"].is_array());
    // The public helper mints the same shape.
    let minted = gcp::mint_id_token(server.cloud(), AUD, gcp::TokenFormat::Full).unwrap();
    let c = verify_google(&server, &minted, AUD);
    assert_eq!(c["google"]["compute_engine"]["instance_id"], g.instance_id);
    server.shutdown().await;
}

#[tokio::test]
async fn token_lifetime_follows_the_config_capped_at_an_hour() {
    let mut cloud = CloudConfig::gcp();
    cloud.token_ttl = Duration::from_secs(7200);
    let server = start(cloud).await;
    let c = verify_google(&server, &identity(&server, "audience=a").await.body, "a");
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        3600
    );
    server
        .cloud()
        .update(|c| c.token_ttl = Duration::from_secs(90));
    let c = verify_google(&server, &identity(&server, "audience=a").await.body, "a");
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 90);
    let r = md(&server, "instance/service-accounts/default/token").await;
    assert_eq!(r.json()["expires_in"], 90);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_format_and_licenses_are_400() {
    let server = start(CloudConfig::gcp()).await;
    for query in ["audience=a&format=compact", "audience=a&licenses=yes"] {
        assert_eq!(identity(&server, query).await.status, 400, "{query}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn no_service_account_means_404_on_its_paths() {
    let mut cloud = CloudConfig::gcp();
    if let Some(g) = cloud.gcp.as_mut() {
        g.service_account = None;
    }
    let server = start(cloud).await;
    for path in [
        "instance/service-accounts/default/",
        "instance/service-accounts/default/identity?audience=a",
        "instance/service-accounts/default/token",
        "instance/service-accounts/default/email",
    ] {
        let r = md(&server, path).await;
        assert_eq!(r.status, 404, "{path}");
    }
    let r = md(&server, "instance/service-accounts/").await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, ""));
    assert!(gcp::mint_id_token(server.cloud(), AUD, gcp::TokenFormat::Standard).is_none());
    // The instance itself is still there.
    assert_eq!(md(&server, "instance/id").await.status, 200);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// IAM Credentials generateIdToken
// ---------------------------------------------------------------------------

#[tokio::test]
async fn impersonation_with_an_access_token() {
    let server = start(CloudConfig::gcp()).await;
    let target = target(&server);
    let token = access_token(&server).await;
    let r = generate_id_token(
        &server,
        &target.email,
        Some(&token),
        &json!({"audience": AUD}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-type").starts_with("application/json"));
    let minted = r.json()["token"].as_str().unwrap().to_string();
    let c = verify_google(&server, &minted, AUD);
    assert_eq!(c["sub"], target.unique_id);
    assert_eq!(c["azp"], target.unique_id);
    assert_eq!(c["iss"], GOOGLE_ISSUER);
    assert!(c.get("email").is_none(), "no includeEmail, no email");

    let r = generate_id_token(
        &server,
        &target.email,
        Some(&token),
        &json!({"audience": AUD, "includeEmail": true}).to_string(),
    )
    .await;
    let c = verify_google(&server, r.json()["token"].as_str().unwrap(), AUD);
    assert_eq!(c["email"], target.email);
    assert_eq!(c["email_verified"], true);

    // The target may also be named by its unique id, and percent-encoded.
    for name in [target.unique_id.clone(), target.email.replace('@', "%40")] {
        let r = generate_id_token(&server, &name, Some(&token), r#"{"audience":"x"}"#).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn impersonation_with_a_metadata_id_token_like_the_go_client() {
    let server = start(CloudConfig::gcp()).await;
    let target = target(&server);
    let self_token = identity(&server, "audience=https://iamcredentials.googleapis.com/")
        .await
        .body;
    let r = generate_id_token(
        &server,
        &target.email,
        Some(&self_token),
        &json!({"audience": AUD}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = verify_google(&server, r.json()["token"].as_str().unwrap(), AUD);
    assert_eq!(c["sub"], target.unique_id);
    server.shutdown().await;
}

#[tokio::test]
async fn impersonating_an_account_not_granted_is_permission_denied() {
    let server = start(CloudConfig::gcp()).await;
    let token = access_token(&server).await;
    let body = json!({"audience": AUD}).to_string();
    let granted = target(&server).email;
    let r = generate_id_token(
        &server,
        "stranger@other-project.iam.gserviceaccount.com",
        Some(&token),
        &body,
    )
    .await;
    assert_google_error(&r, 403, "PERMISSION_DENIED");
    assert!(r.body.contains("iam.serviceAccounts.getOpenIdToken"));
    // Revoking the grant at run time denies the formerly allowed target.
    server.cloud().update(|c| {
        if let Some(g) = c.gcp.as_mut() {
            g.impersonable.clear();
        }
    });
    let r = generate_id_token(&server, &granted, Some(&token), &body).await;
    assert_google_error(&r, 403, "PERMISSION_DENIED");
    // A delegate chain through an account that is not granted is denied too.
    server.cloud().update(|c| {
        if let Some(g) = c.gcp.as_mut() {
            g.impersonable = GcpIdentity::default().impersonable;
        }
    });
    let r = generate_id_token(
        &server,
        &granted,
        Some(&token),
        &json!({"audience": AUD, "delegates": ["projects/-/serviceAccounts/x@y.iam.gserviceaccount.com"]})
            .to_string(),
    )
    .await;
    assert_google_error(&r, 403, "PERMISSION_DENIED");
    server.shutdown().await;
}

#[tokio::test]
async fn only_the_default_account_may_impersonate() {
    let server = start(CloudConfig::gcp()).await;
    let target = target(&server);
    // A token of the target itself is authentic but not the default account's.
    let targets_token =
        gcp::mint_impersonated_id_token(server.cloud(), &target, "x", true).unwrap();
    let r = generate_id_token(
        &server,
        &target.email,
        Some(&targets_token),
        r#"{"audience":"a"}"#,
    )
    .await;
    assert_google_error(&r, 403, "PERMISSION_DENIED");
    server.shutdown().await;
}

#[tokio::test]
async fn missing_or_invalid_bearer_is_unauthenticated() {
    let server = start(CloudConfig::gcp()).await;
    let email = target(&server).email;
    let body = json!({"audience": AUD}).to_string();

    let r = generate_id_token(&server, &email, None, &body).await;
    assert_google_error(&r, 401, "UNAUTHENTICATED");
    assert!(r.header("www-authenticate").starts_with("Bearer"));

    let forged = {
        // Google's claim shape, signed with the wrong (Azure) key.
        let now = jsonwebtoken::get_current_timestamp();
        server
            .cloud()
            .keys()
            .azure
            .sign(&json!({"iss": GOOGLE_ISSUER, "aud": "a", "sub": sa(&server).unique_id, "iat": now, "exp": now + 600}))
            .unwrap()
    };
    let expired = {
        let now = jsonwebtoken::get_current_timestamp();
        server
            .cloud()
            .keys()
            .google
            .sign(&json!({"iss": GOOGLE_ISSUER, "aud": "a", "sub": sa(&server).unique_id, "iat": now - 7200, "exp": now - 3600}))
            .unwrap()
    };
    for bad in [
        "ya29.c.not-one-of-ours",
        "garbage",
        forged.as_str(),
        expired.as_str(),
    ] {
        let r = generate_id_token(&server, &email, Some(bad), &body).await;
        assert_google_error(&r, 401, "UNAUTHENTICATED");
    }
    // Not a bearer scheme at all.
    let r = send(
        client()
            .post(format!(
                "{}/v1/projects/-/serviceAccounts/{email}:generateIdToken",
                server.cloud_url()
            ))
            .header(
                "Authorization",
                format!("Basic {}", access_token(&server).await),
            )
            .body(body.clone()),
    )
    .await;
    assert_google_error(&r, 401, "UNAUTHENTICATED");

    // An access token that has expired.
    server.cloud().update(|c| c.token_ttl = Duration::ZERO);
    let dead = access_token(&server).await;
    let r = generate_id_token(&server, &email, Some(&dead), &body).await;
    assert_google_error(&r, 401, "UNAUTHENTICATED");
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_generate_id_token_requests_are_rejected() {
    let server = start(CloudConfig::gcp()).await;
    let email = target(&server).email;
    let token = access_token(&server).await;
    for body in [
        "",
        "not json",
        "[]",
        r#"{"audience": 5}"#,
        r#"{"audience":"a","bogus":1}"#,
    ] {
        let r = generate_id_token(&server, &email, Some(&token), body).await;
        assert_google_error(&r, 400, "INVALID_ARGUMENT");
    }
    for body in [r#"{}"#, r#"{"audience":""}"#] {
        let r = generate_id_token(&server, &email, Some(&token), body).await;
        assert_google_error(&r, 400, "INVALID_ARGUMENT");
    }
    // Another method on the resource, or none at all.
    for path in [
        format!("/v1/projects/-/serviceAccounts/{email}:signBlob"),
        format!("/v1/projects/-/serviceAccounts/{email}"),
    ] {
        let r = send(
            client()
                .post(format!("{}{path}", server.cloud_url()))
                .bearer_auth(&token)
                .body(r#"{"audience":"a"}"#),
        )
        .await;
        assert_google_error(&r, 404, "NOT_FOUND");
    }
    // GET is not a method of the API.
    let r = send(client().get(format!(
        "{}/v1/projects/-/serviceAccounts/{email}:generateIdToken",
        server.cloud_url()
    )))
    .await;
    assert_eq!(r.status, 405);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------

#[tokio::test]
async fn throttled_identity_endpoint_recovers() {
    let server = start(CloudConfig::gcp()).await;
    let path = format!("{MD}/instance/service-accounts/default/identity");
    server
        .cloud_faults()
        .add(FaultRule::status(&path, 503).times(2));
    for _ in 0..2 {
        assert_eq!(identity(&server, "audience=a").await.status, 503);
    }
    let r = identity(&server, "audience=a").await;
    assert_eq!(r.status, 200);
    verify_google(&server, &r.body, "a");
    assert_eq!(server.cloud_requests().count(&path), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn blackholed_metadata_times_out_and_reset_is_a_connection_error() {
    let server = start(CloudConfig::gcp()).await;
    server
        .cloud_faults()
        .add(FaultRule::blackhole(&format!("{MD}/instance/id")));
    server
        .cloud_faults()
        .add(FaultRule::reset(&format!("{MD}/instance/name")));
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = quick
        .get(format!("{}{MD}/instance/id", server.cloud_url()))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let err = client()
        .get(format!("{}{MD}/instance/name", server.cloud_url()))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err}");
    // Other paths are untouched.
    assert_eq!(md(&server, "project/project-id").await.status, 200);
    server.shutdown().await;
}
