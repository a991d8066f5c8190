//! The mock Azure IMDS, App Service identity endpoint and Azure AD token endpoint,
//! driven over loopback HTTP with a plain client.

mod common;

use common::{client, send, start, Reply};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation};
use s2iam_testserver::cloud::azure::{self, TOKEN_EXCHANGE_AUDIENCE};
use s2iam_testserver::cloud::AKS_ISSUER;
use s2iam_testserver::{AzureIdentity, CloudConfig, FaultRule, ManagedIdentity, TestServer};
use serde_json::{json, Value};

const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const ARM: &str = "https://management.azure.com/";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// GET an IMDS path (with its query) with `Metadata: true`.
async fn imds(server: &TestServer, path_and_query: &str) -> Reply {
    send(
        client()
            .get(format!("{}{path_and_query}", server.cloud_url()))
            .header("Metadata", "true"),
    )
    .await
}

async fn imds_token(server: &TestServer, extra: &str) -> Reply {
    imds(
        server,
        &format!("{TOKEN_PATH}?api-version=2018-02-01&resource={ARM}{extra}"),
    )
    .await
}

fn az(server: &TestServer) -> AzureIdentity {
    server.cloud().config().azure.unwrap()
}

fn verify_azure(server: &TestServer, token: &str, audience: &str) -> Value {
    let tenant = az(server).tenant_id;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[audience]);
    v.set_issuer(&[format!("https://sts.windows.net/{tenant}/")]);
    server
        .cloud()
        .keys()
        .azure
        .verify(token, &v)
        .expect("token verifies with the Azure key")
}

fn assert_oauth_error(r: &Reply, status: u16, error: &str, description: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"error": error, "error_description": description})
    );
}

fn uami(n: u8) -> ManagedIdentity {
    ManagedIdentity {
        client_id: format!("00000000-0000-4000-8000-0000000000c{n}"),
        object_id: format!("00000000-0000-4000-8000-0000000000b{n}"),
        resource_id: format!(
            "/subscriptions/11111111-2222-3333-4444-555555555555/resourcegroups/s2iam-test-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami{n}"
        ),
    }
}

// ---------------------------------------------------------------------------
// Instance metadata
// ---------------------------------------------------------------------------

#[tokio::test]
async fn instance_document_has_the_compute_and_network_shape() {
    let server = start(CloudConfig::azure()).await;
    let a = az(&server);
    let r = imds(&server, "/metadata/instance?api-version=2021-02-01").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("application/json"));
    let j = r.json();
    let c = &j["compute"];
    assert_eq!(c["location"], a.location);
    assert_eq!(c["name"], a.vm_name);
    assert_eq!(c["resourceGroupName"], a.resource_group);
    assert_eq!(c["subscriptionId"], a.subscription_id);
    assert_eq!(c["vmId"], a.vm_id);
    assert_eq!(c["azEnvironment"], "AzurePublicCloud");
    assert_eq!(c["osType"], "Linux");
    assert!(c["vmSize"].as_str().unwrap().starts_with("Standard_"));
    assert_eq!(c["resourceId"], azure::vm_resource_id(&a));
    assert!(c["tagsList"].is_array());
    assert!(j["network"]["interface"][0]["ipv4"]["ipAddress"].is_array());
    server.shutdown().await;
}

#[tokio::test]
async fn instance_sub_paths_and_leaf_formats() {
    let server = start(CloudConfig::azure()).await;
    let r = imds(
        &server,
        "/metadata/instance/compute/location?api-version=2021-02-01&format=text",
    )
    .await;
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "eastus"));
    let r = imds(&server, "/metadata/instance/compute?api-version=2021-02-01").await;
    assert_eq!(r.json()["vmId"], az(&server).vm_id);
    let r = imds(
        &server,
        "/metadata/instance/network/interface/0/macAddress?api-version=2021-02-01&format=text",
    )
    .await;
    assert_eq!(r.status, 200);
    // A leaf without format=text, an unknown format, and unknown nodes.
    let r = imds(
        &server,
        "/metadata/instance/compute/location?api-version=2021-02-01",
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("Bad request."));
    let r = imds(
        &server,
        "/metadata/instance?api-version=2021-02-01&format=xml",
    )
    .await;
    assert_eq!(r.status, 400);
    for path in [
        "/metadata/instance/compute/nope?api-version=2021-02-01",
        "/metadata/instance/network/interface/7?api-version=2021-02-01",
        "/metadata/elsewhere?api-version=2021-02-01",
        "/metadata/instancex?api-version=2021-02-01",
    ] {
        let r = imds(&server, path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json(), json!({"error": "Not found"}));
    }
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Header and query checks
// ---------------------------------------------------------------------------

#[tokio::test]
async fn missing_or_wrong_metadata_header_is_400() {
    let server = start(CloudConfig::azure()).await;
    let instance = format!(
        "{}/metadata/instance?api-version=2021-02-01",
        server.cloud_url()
    );
    let token = format!(
        "{}{TOKEN_PATH}?api-version=2018-02-01&resource={ARM}",
        server.cloud_url()
    );
    let r = send(client().get(&instance)).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": "Bad request. Required metadata header not specified"})
    );
    let r = send(client().get(&token)).await;
    assert_oauth_error(
        &r,
        400,
        "invalid_request",
        "Required metadata header not specified",
    );
    for wrong in ["True", "false", "1", "yes", ""] {
        for url in [&instance, &token] {
            let r = send(client().get(url).header("Metadata", wrong)).await;
            assert_eq!(r.status, 400, "{wrong:?} {url}");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn x_forwarded_for_is_refused() {
    let server = start(CloudConfig::azure()).await;
    for path in [
        "/metadata/instance?api-version=2021-02-01".to_string(),
        format!("{TOKEN_PATH}?api-version=2018-02-01&resource={ARM}"),
    ] {
        let r = send(
            client()
                .get(format!("{}{path}", server.cloud_url()))
                .header("Metadata", "true")
                .header("X-Forwarded-For", "203.0.113.9"),
        )
        .await;
        assert_eq!(r.status, 400, "{path}");
        assert!(r.body.contains("X-Forwarded-For"));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn api_version_is_required_and_checked() {
    let server = start(CloudConfig::azure()).await;
    let r = imds(&server, "/metadata/instance").await;
    assert_eq!(r.status, 400);
    let j = r.json();
    assert!(j["error"]
        .as_str()
        .unwrap()
        .starts_with("Bad request. api-version was not specified in the request."));
    assert!(j["newest-versions"].is_array());
    for bad in ["latest", "2016-01-01", "2021-2-1", "%00"] {
        let r = imds(&server, &format!("/metadata/instance?api-version={bad}")).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"].as_str().unwrap().contains("api-version"));
    }
    let r = imds(&server, &format!("{TOKEN_PATH}?resource={ARM}")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("api-version"));
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_query_strings_are_survived() {
    let server = start(CloudConfig::azure()).await;
    let r = imds(
        &server,
        "/metadata/instance?%%%&&=&api-version=2021-02-01&x=%ZZ",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = imds(
        &server,
        &format!("{TOKEN_PATH}?api-version=2018-02-01&&resource=%zz%&client_id"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    verify_azure(&server, r.json()["access_token"].as_str().unwrap(), "%zz%");
    server.shutdown().await;
}

#[tokio::test]
async fn azure_switched_off_is_404_but_azure_ad_still_answers() {
    let server = start(CloudConfig::none()).await;
    for path in [
        "/metadata/instance?api-version=2021-02-01".to_string(),
        format!("{TOKEN_PATH}?api-version=2018-02-01&resource={ARM}"),
    ] {
        assert_eq!(imds(&server, &path).await.status, 404, "{path}");
    }
    let r = send(
        client()
            .get(format!(
                "{}/msi/token?api-version=2019-08-01&resource={ARM}",
                server.cloud_url()
            ))
            .header("X-IDENTITY-HEADER", "x"),
    )
    .await;
    assert_eq!(r.status, 404);
    // Azure AD is global: it answers, but knows no tenant.
    let tenant = AzureIdentity::default().tenant_id;
    let r = aad(&server, &tenant, &[("grant_type", "client_credentials")]).await;
    assert_aad_error(&r, "invalid_request", 90002);
    server.shutdown().await;

    let server = start(CloudConfig::azure()).await;
    assert_eq!(imds_token(&server, "").await.status, 200);
    server.cloud().update(|c| c.azure = None);
    assert_eq!(imds_token(&server, "").await.status, 404);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Managed identity tokens
// ---------------------------------------------------------------------------

#[tokio::test]
async fn system_identity_token_is_imds_shaped_with_aad_v1_claims() {
    let mut cloud = CloudConfig::azure();
    cloud.token_ttl = Duration::from_secs(1800);
    let server = start(cloud).await;
    let a = az(&server);
    let system = a.system_identity.clone().unwrap();
    let r = imds_token(&server, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "client_id",
            "expires_in",
            "expires_on",
            "ext_expires_in",
            "not_before",
            "resource",
            "token_type"
        ]
    );
    for k in ["expires_in", "expires_on", "ext_expires_in", "not_before"] {
        assert!(j[k].is_string(), "{k} is a string");
    }
    assert_eq!(j["expires_in"], "1800");
    assert_eq!(j["ext_expires_in"], "1800");
    let on: u64 = j["expires_on"].as_str().unwrap().parse().unwrap();
    let nb: u64 = j["not_before"].as_str().unwrap().parse().unwrap();
    assert_eq!(on - nb, 1800);
    assert_eq!(j["resource"], ARM);
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["client_id"], system.client_id);

    let c = verify_azure(&server, j["access_token"].as_str().unwrap(), ARM);
    let iss = format!("https://sts.windows.net/{}/", a.tenant_id);
    assert_eq!(c["aud"], ARM);
    assert_eq!(c["iss"], iss);
    assert_eq!(c["idp"], iss);
    assert_eq!(c["tid"], a.tenant_id);
    assert_eq!(c["oid"], system.object_id);
    assert_eq!(c["sub"], system.object_id);
    assert_eq!(c["appid"], system.client_id);
    assert_eq!(c["appidacr"], "2");
    assert_eq!(c["xms_mirid"], system.resource_id);
    assert_eq!(c["xms_az_rid"], azure::vm_resource_id(&a));
    assert_eq!(c["ver"], "1.0");
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        1800
    );
    assert_eq!(c["nbf"], c["iat"]);
    // Signed by Azure AD only.
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_aud = false;
    let token = j["access_token"].as_str().unwrap();
    assert!(server
        .cloud()
        .keys()
        .google
        .verify::<Value>(token, &v)
        .is_err());
    // The resource becomes the audience, whatever it is.
    let r = imds(
        &server,
        &format!("{TOKEN_PATH}?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"),
    )
    .await;
    verify_azure(
        &server,
        r.json()["access_token"].as_str().unwrap(),
        "https://vault.azure.net",
    );
    server.shutdown().await;
}

#[tokio::test]
async fn missing_resource_is_the_imds_error() {
    let server = start(CloudConfig::azure()).await;
    for query in ["api-version=2018-02-01", "api-version=2018-02-01&resource="] {
        let r = imds(&server, &format!("{TOKEN_PATH}?{query}")).await;
        assert_oauth_error(
            &r,
            400,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn user_assigned_identity_by_client_object_or_resource_id() {
    let mut cloud = CloudConfig::azure();
    if let Some(a) = cloud.azure.as_mut() {
        a.user_identities = vec![uami(1), uami(2)];
    }
    let server = start(cloud).await;
    let want = uami(2);
    for selector in [
        format!("&client_id={}", want.client_id),
        format!("&object_id={}", want.object_id),
        format!("&msi_res_id={}", want.resource_id),
        format!("&mi_res_id={}", want.resource_id),
        format!("&client_id={}", want.client_id.to_uppercase()),
    ] {
        let r = imds_token(&server, &selector).await;
        assert_eq!(r.status, 200, "{selector}: {}", r.body);
        assert_eq!(r.json()["client_id"], want.client_id);
        let c = verify_azure(&server, r.json()["access_token"].as_str().unwrap(), ARM);
        assert_eq!(c["oid"], want.object_id, "{selector}");
        assert_eq!(c["appid"], want.client_id);
        assert_eq!(c["xms_mirid"], want.resource_id);
    }
    // With a system identity present, no selector still means the system identity.
    let r = imds_token(&server, "").await;
    let system = az(&server).system_identity.unwrap();
    assert_eq!(r.json()["client_id"], system.client_id);
    // Two selectors at once are refused.
    let r = imds_token(
        &server,
        &format!("&client_id={}&object_id={}", want.client_id, want.object_id),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
    server.shutdown().await;
}

#[tokio::test]
async fn identity_not_found_has_the_exact_body_clients_key_on() {
    let server = start(CloudConfig::azure()).await;
    // A selector that matches nothing.
    for selector in [
        "&client_id=99999999-0000-4000-8000-000000000000",
        "&object_id=nobody",
        "&msi_res_id=/subscriptions/x/nothing",
    ] {
        let r = imds_token(&server, selector).await;
        assert_eq!(r.status, 400, "{selector}");
        assert_eq!(
            r.body,
            r#"{"error":"invalid_request","error_description":"Identity not found"}"#
        );
    }
    // A VM with no identity at all.
    server.cloud().update(|c| {
        if let Some(a) = c.azure.as_mut() {
            a.system_identity = None;
            a.user_identities.clear();
        }
    });
    let r = imds_token(&server, "").await;
    assert_oauth_error(&r, 400, "invalid_request", "Identity not found");
    // The instance itself still answers: "Azure, but no identity".
    assert_eq!(
        imds(&server, "/metadata/instance?api-version=2021-02-01")
            .await
            .status,
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn user_identities_without_a_system_one() {
    let mut cloud = CloudConfig::azure();
    if let Some(a) = cloud.azure.as_mut() {
        a.system_identity = None;
        a.user_identities = vec![uami(1)];
    }
    let server = start(cloud).await;
    let r = imds_token(&server, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["client_id"], uami(1).client_id);
    server.cloud().update(|c| {
        if let Some(a) = c.azure.as_mut() {
            a.user_identities.push(uami(2));
        }
    });
    let r = imds_token(&server, "").await;
    assert_oauth_error(
        &r,
        400,
        "invalid_request",
        "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
    );
    let r = imds_token(&server, &format!("&client_id={}", uami(1).client_id)).await;
    assert_eq!(r.status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn public_helper_mints_what_imds_would() {
    let server = start(CloudConfig::azure()).await;
    let user = az(&server).user_identities[0].clone();
    let token = azure::mint_managed_identity_token(server.cloud(), &user, ARM).unwrap();
    let c = verify_azure(&server, &token, ARM);
    assert_eq!(c["oid"], user.object_id);
    server.cloud().update(|c| c.azure = None);
    assert!(azure::mint_managed_identity_token(server.cloud(), &user, ARM).is_none());
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// App Service / Container Apps identity endpoint
// ---------------------------------------------------------------------------

async fn app_service(server: &TestServer, query: &str, header: Option<&str>) -> Reply {
    let mut req = client().get(format!("{}/msi/token?{query}", server.cloud_url()));
    if let Some(h) = header {
        req = req.header("X-IDENTITY-HEADER", h);
    }
    send(req).await
}

#[tokio::test]
async fn app_service_endpoint_happy_path() {
    let server = start(CloudConfig::azure()).await;
    let a = az(&server);
    let query = format!("api-version=2019-08-01&resource={ARM}");
    let r = app_service(&server, &query, Some(&a.identity_header)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let system = a.system_identity.clone().unwrap();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["resource"], ARM);
    assert_eq!(j["client_id"], system.client_id);
    let on: u64 = j["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(on > jsonwebtoken::get_current_timestamp());
    let c = verify_azure(&server, j["access_token"].as_str().unwrap(), ARM);
    assert_eq!(c["oid"], system.object_id);
    // Selecting the user-assigned identity each way App Service allows.
    let user = a.user_identities[0].clone();
    for selector in [
        format!("&client_id={}", user.client_id),
        format!("&principal_id={}", user.object_id),
        format!("&mi_res_id={}", user.resource_id),
    ] {
        let r = app_service(
            &server,
            &format!("{query}{selector}"),
            Some(&a.identity_header),
        )
        .await;
        assert_eq!(r.status, 200, "{selector}");
        let c = verify_azure(&server, r.json()["access_token"].as_str().unwrap(), ARM);
        assert_eq!(c["oid"], user.object_id);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn app_service_endpoint_checks_header_version_resource_and_identity() {
    let server = start(CloudConfig::azure()).await;
    let secret = az(&server).identity_header;
    let good = format!("api-version=2019-08-01&resource={ARM}");
    let r = app_service(&server, &good, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["statusCode"], 401);
    let r = app_service(&server, &good, Some("not-the-header")).await;
    assert_eq!(r.status, 403);
    assert!(!r.body.contains(&secret), "the secret is never echoed");
    // The IMDS header does not stand in for it.
    let r = send(
        client()
            .get(format!("{}/msi/token?{good}", server.cloud_url()))
            .header("Metadata", "true"),
    )
    .await;
    assert_eq!(r.status, 401);
    for query in [
        format!("resource={ARM}"),
        format!("api-version=2017-09-01&resource={ARM}"),
        "api-version=2019-08-01".to_string(),
        format!("{good}&client_id=nobody"),
    ] {
        let r = app_service(&server, &query, Some(&secret)).await;
        assert_eq!(r.status, 400, "{query}");
        assert!(r.json()["message"].is_string());
    }
    let r = app_service(&server, &format!("{good}&client_id=nobody"), Some(&secret)).await;
    assert_eq!(
        r.json()["message"],
        "No Managed Identity found for specified ClientId/ResourceId/PrincipalId."
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Azure AD workload identity exchange
// ---------------------------------------------------------------------------

/// Form fields of a token request, in order.
type Form<'a> = Vec<(&'a str, &'a str)>;

async fn aad(server: &TestServer, tenant: &str, form: &[(&str, &str)]) -> Reply {
    send(
        client()
            .post(format!("{}/{tenant}/oauth2/v2.0/token", server.cloud_url()))
            .form(form),
    )
    .await
}

fn assert_aad_error(r: &Reply, error: &str, code: u32) {
    assert_eq!(r.status, 400, "{}", r.body);
    let j = r.json();
    assert_eq!(j["error"], error, "{}", r.body);
    assert_eq!(j["error_codes"], json!([code]));
    assert!(j["error_description"]
        .as_str()
        .unwrap()
        .starts_with(&format!("AADSTS{code}: ")));
    assert!(j["trace_id"].is_string() && j["correlation_id"].is_string());
}

/// A form for the workload client with `assertion`.
fn exchange_form<'a>(client_id: &'a str, assertion: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", "https://management.azure.com/.default"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ]
}

/// A projected service-account token with `patch` applied to its claims, signed by
/// the cluster key (or by the Google key, to forge one).
fn assertion(server: &TestServer, patch: Value, google_key: bool) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = json!({
        "iss": AKS_ISSUER,
        "sub": "system:serviceaccount:default:app",
        "aud": [TOKEN_EXCHANGE_AUDIENCE],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    });
    for (k, v) in patch.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let keys = server.cloud().keys();
    let key = if google_key { &keys.google } else { &keys.eks };
    key.sign(&claims).unwrap()
}

#[tokio::test]
async fn aks_federated_token_exchanges_for_the_user_identity() {
    let server = start(CloudConfig::azure()).await;
    let a = az(&server);
    let user = a.user_identities[0].clone();
    let federated = server
        .cloud()
        .mint_aks_federated_token("system:serviceaccount:default:app")
        .unwrap();
    let r = aad(
        &server,
        &a.tenant_id,
        &exchange_form(&user.client_id, &federated),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["expires_in"], 3600);
    assert_eq!(j["ext_expires_in"], 3600);
    let c = verify_azure(
        &server,
        j["access_token"].as_str().unwrap(),
        "https://management.azure.com",
    );
    assert_eq!(c["oid"], user.object_id);
    assert_eq!(c["sub"], user.object_id);
    assert_eq!(c["appid"], user.client_id);
    assert_eq!(c["tid"], a.tenant_id);
    assert_eq!(c["xms_mirid"], user.resource_id);
    assert!(c.get("xms_az_rid").is_none(), "not minted on a VM");
    assert_eq!(c["ver"], "1.0");
    server.shutdown().await;
}

#[tokio::test]
async fn aks_exchange_rejects_wrong_tenant_and_unknown_clients() {
    let server = start(CloudConfig::azure()).await;
    let a = az(&server);
    let client_id = a.workload_client_ids[0].clone();
    let federated = server
        .cloud()
        .mint_aks_federated_token("system:serviceaccount:x:y")
        .unwrap();
    let r = aad(
        &server,
        "00000000-0000-0000-0000-000000000000",
        &exchange_form(&client_id, &federated),
    )
    .await;
    assert_aad_error(&r, "invalid_request", 90002);
    let r = aad(
        &server,
        &a.tenant_id,
        &exchange_form("11111111-0000-4000-8000-000000000000", &federated),
    )
    .await;
    assert_aad_error(&r, "unauthorized_client", 700016);
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("11111111-0000-4000-8000-000000000000"));
    server.shutdown().await;
}

#[tokio::test]
async fn aks_exchange_rejects_bad_assertions() {
    let server = start(CloudConfig::azure()).await;
    let a = az(&server);
    let client_id = a.workload_client_ids[0].clone();
    let now = jsonwebtoken::get_current_timestamp();
    let cases = [
        ("garbage".to_string(), 50027),
        ("a.b.c".to_string(), 50027),
        (assertion(&server, json!({}), true), 700027),
        (
            assertion(
                &server,
                json!({"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}),
                false,
            ),
            700024,
        ),
        (
            assertion(&server, json!({"nbf": now + 3600}), false),
            700024,
        ),
        (
            assertion(&server, json!({"aud": ["sts.amazonaws.com"]}), false),
            70021,
        ),
        (
            assertion(&server, json!({"iss": "https://evil.example/"}), false),
            70021,
        ),
        (
            server
                .cloud()
                .mint_eks_web_identity_token("system:serviceaccount:a:b")
                .unwrap(),
            70021,
        ),
    ];
    for (token, code) in cases {
        let r = aad(&server, &a.tenant_id, &exchange_form(&client_id, &token)).await;
        assert_aad_error(&r, "invalid_client", code);
    }
    // A well-formed assertion still passes, so the cases above failed for their reason.
    let good = assertion(&server, json!({}), false);
    let r = aad(&server, &a.tenant_id, &exchange_form(&client_id, &good)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    server.shutdown().await;
}

#[tokio::test]
async fn aks_exchange_rejects_malformed_requests() {
    let server = start(CloudConfig::azure()).await;
    let a = az(&server);
    let client_id = a.workload_client_ids[0].clone();
    let federated = server
        .cloud()
        .mint_aks_federated_token("system:serviceaccount:x:y")
        .unwrap();
    let full = exchange_form(&client_id, &federated);
    let without = |name: &str| -> Vec<(&str, &str)> {
        full.iter().filter(|(k, _)| *k != name).cloned().collect()
    };
    let with = |name: &'static str, value: &'static str| -> Vec<(&str, &str)> {
        full.iter()
            .map(|(k, v)| if *k == name { (*k, value) } else { (*k, *v) })
            .collect()
    };
    let cases: Vec<(Form, &str, u32)> = vec![
        (without("grant_type"), "invalid_request", 900144),
        (
            with("grant_type", "password"),
            "unsupported_grant_type",
            70003,
        ),
        (without("client_id"), "invalid_request", 900144),
        (without("scope"), "invalid_request", 900144),
        (
            with("scope", "https://management.azure.com/user_impersonation"),
            "invalid_scope",
            1002012,
        ),
        (
            with("scope", "a/.default b/.default"),
            "invalid_scope",
            70011,
        ),
        (without("client_assertion"), "invalid_client", 7000216),
        (without("client_assertion_type"), "invalid_request", 90014),
        (
            with("client_assertion_type", "urn:other"),
            "invalid_request",
            90014,
        ),
    ];
    for (form, error, code) in cases {
        let r = aad(&server, &a.tenant_id, &form).await;
        assert_aad_error(&r, error, code);
    }
    // JSON instead of a form: nothing is read, so grant_type is missing.
    let r = send(
        client()
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                server.cloud_url(),
                a.tenant_id
            ))
            .json(&json!({"grant_type": "client_credentials"})),
    )
    .await;
    assert_aad_error(&r, "invalid_request", 900144);
    // Garbage bytes in a form body.
    let r = send(
        client()
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                server.cloud_url(),
                a.tenant_id
            ))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(vec![0xff, b'%', b'=', 0x00, b'&', b'&']),
    )
    .await;
    assert_aad_error(&r, "invalid_request", 900144);
    // GET is not allowed.
    let r = send(client().get(format!(
        "{}/{}/oauth2/v2.0/token",
        server.cloud_url(),
        a.tenant_id
    )))
    .await;
    assert_eq!(r.status, 405);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Fault injection
// ---------------------------------------------------------------------------

#[tokio::test]
async fn imds_throttles_three_times_then_answers() {
    let server = start(CloudConfig::azure()).await;
    server
        .cloud_faults()
        .add(FaultRule::status(TOKEN_PATH, 429).times(3));
    for attempt in 1..=3 {
        let r = imds_token(&server, "").await;
        assert_eq!(r.status, 429, "attempt {attempt}");
    }
    let r = imds_token(&server, "").await;
    assert_eq!(r.status, 200);
    verify_azure(&server, r.json()["access_token"].as_str().unwrap(), ARM);
    assert_eq!(server.cloud_requests().count(TOKEN_PATH), 4);
    // The instance endpoint was never throttled.
    assert_eq!(
        imds(&server, "/metadata/instance?api-version=2021-02-01")
            .await
            .status,
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn imds_latency_is_added() {
    let server = start(CloudConfig::azure()).await;
    server
        .cloud_faults()
        .add(FaultRule::latency(TOKEN_PATH, Duration::from_millis(300)));
    let started = Instant::now();
    let r = imds_token(&server, "").await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    server.shutdown().await;
}

#[tokio::test]
async fn blackholed_imds_times_out_the_client() {
    let server = start(CloudConfig::azure()).await;
    server.cloud_faults().add(FaultRule::blackhole(TOKEN_PATH));
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = quick
        .get(format!(
            "{}{TOKEN_PATH}?api-version=2018-02-01&resource={ARM}",
            server.cloud_url()
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn reset_imds_connection_is_a_client_error() {
    let server = start(CloudConfig::azure()).await;
    server
        .cloud_faults()
        .add(FaultRule::reset(TOKEN_PATH).times(1));
    let err = client()
        .get(format!(
            "{}{TOKEN_PATH}?api-version=2018-02-01&resource={ARM}",
            server.cloud_url()
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err}");
    // The next attempt goes through.
    assert_eq!(imds_token(&server, "").await.status, 200);
    server.shutdown().await;
}
