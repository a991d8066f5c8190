//! The mock Google STS (`POST /v1/token`), OAuth token endpoint (`POST /token`)
//! and `generateAccessToken`, driven over loopback HTTP with a plain client: the
//! RFC 8693 request validation and OAuth error shapes, and the tokens they issue.

mod common;

use common::{client, send, start, Reply};

use s2iam_testserver::CloudConfig;
use serde_json::Value;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

async fn post_form(url: &str, form: &[(&str, &str)]) -> Reply {
    send(client().post(url).form(form)).await
}

fn assert_oauth_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    let j = r.json();
    assert_eq!(j["error"], code, "{}", r.body);
    assert!(
        j["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn sts_validates_the_exchange_and_issues_a_federated_token() {
    let server = start(CloudConfig::none()).await;
    let url = format!("{}/v1/token", server.cloud_url());
    let pool = server.cloud().config().google.pool.unwrap();
    let audience = pool.audience(&pool.oidc_provider_id);
    let subject = server
        .cloud()
        .mint_federation_subject_token("system:serviceaccount:ns:app")
        .unwrap();
    let good = [
        ("grant_type", EXCHANGE),
        ("audience", audience.as_str()),
        ("scope", CLOUD_PLATFORM),
        ("requested_token_type", ACCESS),
        ("subject_token", subject.as_str()),
        ("subject_token_type", JWT),
    ];
    let r = post_form(&url, &good).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["issued_token_type"], ACCESS);
    assert_eq!(j["token_type"], "Bearer");
    assert!(j["expires_in"].as_u64().is_some_and(|s| s > 0 && s <= 3600));
    let federated = j["access_token"].as_str().unwrap().to_string();

    // The federated token may mint an access token for the pool's service account.
    let sa = &pool.service_accounts[0];
    let r = send(
        client()
            .post(format!(
                "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
                server.cloud_url(),
                sa.email
            ))
            .bearer_auth(&federated)
            .json(&serde_json::json!({"scope": [CLOUD_PLATFORM], "lifetime": "600s", "delegates": null})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["accessToken"]
        .as_str()
        .is_some_and(|t| t.starts_with("ya29.")));
    assert!(r.json()["expireTime"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let with = |name: &str, value: &'static str| {
        good.iter()
            .map(|(k, v)| if *k == name { (*k, value) } else { (*k, *v) })
            .collect::<Vec<_>>()
    };
    let without = |name: &str| {
        good.iter()
            .filter(|(k, _)| *k != name)
            .copied()
            .collect::<Vec<_>>()
    };
    for (form, status, code) in [
        (with("grant_type", "password"), 400, "unsupported_grant_type"),
        (without("grant_type"), 400, "invalid_request"),
        (with("requested_token_type", JWT), 400, "invalid_request"),
        (without("subject_token"), 400, "invalid_request"),
        (with("subject_token_type", "urn:x"), 400, "invalid_request"),
        (with("audience", "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/x/providers/y"), 400, "invalid_target"),
        (with("scope", "email"), 400, "invalid_scope"),
        (with("subject_token", "not-a-jwt"), 400, "invalid_grant"),
        (with("subject_token_type", "urn:ietf:params:aws:token-type:aws4_request"), 400, "invalid_request"),
    ] {
        assert_oauth_error(&post_form(&url, &form).await, status, code);
    }
    // Neither a form nor JSON.
    let r = send(client().post(&url).body("grant_type=x")).await;
    assert_oauth_error(&r, 400, "invalid_request");
    server.shutdown().await;
}

#[tokio::test]
async fn oauth_endpoint_refreshes_users_and_refuses_bad_clients() {
    let server = start(CloudConfig::none()).await;
    let url = format!("{}/token", server.cloud_url());
    let user = server
        .cloud()
        .create_authorized_user("dev@example.com", true, None);
    let s = |k: &str| user[k].as_str().unwrap().to_string();
    let (id, secret, refresh) = (s("client_id"), s("client_secret"), s("refresh_token"));
    let r = post_form(
        &url,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j: Value = r.json();
    assert!(j["scope"]
        .as_str()
        .unwrap()
        .split(' ')
        .any(|s| s == "openid"));
    assert!(j["id_token"].is_string() && j["access_token"].is_string());

    let r = post_form(
        &url,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &id),
            ("client_secret", "wrong"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_oauth_error(&r, 401, "invalid_client");
    let r = post_form(
        &url,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("refresh_token", "1//0nope"),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_grant");
    let r = post_form(
        &url,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", "a.b.c"),
        ],
    )
    .await;
    assert_oauth_error(&r, 400, "invalid_grant");
    assert_oauth_error(
        &post_form(&url, &[("grant_type", "client_credentials")]).await,
        400,
        "unsupported_grant_type",
    );
    server.shutdown().await;
}
