//! The mock AWS side end to end over loopback HTTP: IMDS (v1 and v2), the ECS and
//! EKS Pod Identity credential endpoints, and STS with real SigV4 signatures.

mod common;

use std::time::Duration;

use common::{client, start};
use reqwest::{Client, StatusCode};
use s2iam_testserver::cloud::aws::sigv4::{self, SigningCredentials};
use s2iam_testserver::util::now_unix;
use s2iam_testserver::{AwsCredential, CloudConfig, FaultRule, TestServer, TestServerConfig};
use serde_json::Value;

const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";

// ---------- IMDS helpers ----------

async fn imds_token(c: &Client, server: &TestServer) -> String {
    let resp = c
        .put(format!("{}/latest/api/token", server.cloud_url()))
        .header(TTL_HEADER, "21600")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

async fn imds_get(
    c: &Client,
    server: &TestServer,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String, String) {
    let mut req = c.get(format!("{}{path}", server.cloud_url()));
    if let Some(t) = token {
        req = req.header(TOKEN_HEADER, t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

fn creds_from_json(v: &Value) -> SigningCredentials {
    SigningCredentials {
        access_key_id: v["AccessKeyId"].as_str().unwrap().to_string(),
        secret_access_key: v["SecretAccessKey"].as_str().unwrap().to_string(),
        session_token: Some(v["Token"].as_str().unwrap().to_string()),
    }
}

async fn instance_creds(c: &Client, server: &TestServer) -> SigningCredentials {
    let token = imds_token(c, server).await;
    let (status, _, body) = imds_get(
        c,
        server,
        "/latest/meta-data/iam/security-credentials/s2iam-test-role",
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    creds_from_json(&serde_json::from_str(&body).unwrap())
}

fn parse_rfc3339(s: &str) -> u64 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
        .unix_timestamp() as u64
}

// ---------- STS helpers ----------

fn signing(cred: &AwsCredential) -> SigningCredentials {
    SigningCredentials {
        access_key_id: cred.access_key_id.clone(),
        secret_access_key: cred.secret_access_key.clone(),
        session_token: cred.session_token.clone(),
    }
}

/// A signed STS POST: the headers to send (besides `host`, which reqwest sets to the
/// same value) and the body.
fn signed_post(
    server: &TestServer,
    params: &[(&str, &str)],
    creds: &SigningCredentials,
    at: u64,
) -> (Vec<(String, String)>, String) {
    let body = form(params);
    let url = url::Url::parse(&format!("{}/", server.cloud_url())).unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut headers = vec![
        ("host".to_string(), host),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
    ];
    let added = sigv4::sign(
        "POST",
        &url,
        &headers,
        body.as_bytes(),
        creds,
        "us-east-1",
        "sts",
        at,
    );
    headers.extend(added);
    headers.retain(|(k, _)| k != "host");
    (headers, body)
}

fn form(params: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn send_post(
    c: &Client,
    server: &TestServer,
    headers: &[(String, String)],
    body: String,
) -> (StatusCode, String) {
    let mut req = c.post(format!("{}/", server.cloud_url())).body(body);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    if status != StatusCode::PAYLOAD_TOO_LARGE {
        assert_eq!(resp.headers()["content-type"], "text/xml");
        assert!(resp.headers().contains_key("x-amzn-requestid"));
    }
    (status, resp.text().await.unwrap())
}

async fn sts(
    c: &Client,
    server: &TestServer,
    params: &[(&str, &str)],
    creds: &SigningCredentials,
) -> (StatusCode, String) {
    let (headers, body) = signed_post(server, params, creds, now_unix());
    send_post(c, server, &headers, body).await
}

async fn caller_identity(
    c: &Client,
    server: &TestServer,
    creds: &SigningCredentials,
) -> (StatusCode, String) {
    sts(
        c,
        server,
        &[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")],
        creds,
    )
    .await
}

/// The text of the first `<name>` element.
fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(&xml[start..end])
}

/// Asserts the real STS error shape and returns the code.
fn error_code(xml: &str) -> String {
    assert!(
        xml.starts_with("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"),
        "{xml}"
    );
    assert_eq!(tag(xml, "Type"), Some("Sender"));
    assert!(tag(xml, "Message").is_some_and(|m| !m.is_empty()));
    assert_eq!(tag(xml, "RequestId").map(str::len), Some(36));
    tag(xml, "Code").unwrap().to_string()
}

fn creds_from_xml(xml: &str) -> SigningCredentials {
    SigningCredentials {
        access_key_id: tag(xml, "AccessKeyId").unwrap().to_string(),
        secret_access_key: tag(xml, "SecretAccessKey").unwrap().to_string(),
        session_token: Some(tag(xml, "SessionToken").unwrap().to_string()),
    }
}

const V: (&str, &str) = ("Version", "2011-06-15");

// ---------- IMDS ----------

#[tokio::test]
async fn imdsv2_token_flow() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let resp = c
        .put(format!("{}/latest/api/token", server.cloud_url()))
        .header(TTL_HEADER, "300")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.headers()[TTL_HEADER], "300");
    let token = resp.text().await.unwrap();
    assert!(token.len() >= 32);

    let (s, ctype, body) =
        imds_get(&c, &server, "/latest/meta-data/instance-id", Some(&token)).await;
    assert_eq!(
        (s, ctype.as_str(), body.as_str()),
        (StatusCode::OK, "text/plain", "i-0123456789abcdef0")
    );
    let (_, _, region) = imds_get(
        &c,
        &server,
        "/latest/meta-data/placement/region",
        Some(&token),
    )
    .await;
    assert_eq!(region, "us-east-1");
    let (_, _, az) = imds_get(
        &c,
        &server,
        "/latest/meta-data/placement/availability-zone",
        Some(&token),
    )
    .await;
    assert_eq!(az, "us-east-1a");
    let (s, _, listing) = imds_get(&c, &server, "/latest/meta-data/", Some(&token)).await;
    assert_eq!(s, StatusCode::OK);
    let entries: Vec<&str> = listing.lines().collect();
    for e in ["instance-id", "iam/", "placement/", "local-ipv4"] {
        assert!(entries.contains(&e), "{e} missing from {listing}");
    }
    let (s, ctype, body) =
        imds_get(&c, &server, "/latest/meta-data/no-such-thing", Some(&token)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(ctype, "text/html");
    assert!(body.contains("404 - Not Found"));
    server.shutdown().await;
}

#[tokio::test]
async fn imdsv1_allowed_only_when_enabled() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let (s, _, body) = imds_get(&c, &server, "/latest/meta-data/instance-id", None).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "i-0123456789abcdef0"));

    server
        .cloud()
        .update(|cfg| cfg.aws.as_mut().unwrap().imds_v1 = false);
    let (s, ctype, body) = imds_get(&c, &server, "/latest/meta-data/instance-id", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(ctype, "text/html");
    assert!(body.contains("401 - Unauthorized"));
    // Even the listing and unknown paths demand the token first.
    let (s, _, _) = imds_get(&c, &server, "/latest/meta-data/no-such-thing", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let token = imds_token(&c, &server).await;
    let (s, _, _) = imds_get(&c, &server, "/latest/meta-data/instance-id", Some(&token)).await;
    assert_eq!(s, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn token_request_rejections() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let url = format!("{}/latest/api/token", server.cloud_url());
    let resp = c.put(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "missing TTL");
    for bad in ["0", "21601", "abc", "-1", "1.5", ""] {
        let resp = c.put(&url).header(TTL_HEADER, bad).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "TTL {bad:?}");
    }
    let resp = c
        .put(&url)
        .header(TTL_HEADER, "60")
        .header("X-Forwarded-For", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "PUT");
    let resp = c
        .post(format!("{}/latest/meta-data/", server.cloud_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_token_is_401_even_with_v1_allowed() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let (s, _, _) = imds_get(
        &c,
        &server,
        "/latest/meta-data/instance-id",
        Some("not-a-token"),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A token that has expired is as bad as a made-up one.
    let resp = c
        .put(format!("{}/latest/api/token", server.cloud_url()))
        .header(TTL_HEADER, "1")
        .send()
        .await
        .unwrap();
    let short = resp.text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, _, _) = imds_get(&c, &server, "/latest/meta-data/instance-id", Some(&short)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    server.shutdown().await;
}

#[tokio::test]
async fn role_listing_and_credentials_shape() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let token = imds_token(&c, &server).await;
    let (s, _, roles) = imds_get(
        &c,
        &server,
        "/latest/meta-data/iam/security-credentials/",
        Some(&token),
    )
    .await;
    assert_eq!((s, roles.as_str()), (StatusCode::OK, "s2iam-test-role"));

    let path = "/latest/meta-data/iam/security-credentials/s2iam-test-role";
    let (s, ctype, body) = imds_get(&c, &server, path, Some(&token)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ctype, "text/plain");
    let v: Value = serde_json::from_str(&body).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = vec![
        "AccessKeyId",
        "Code",
        "Expiration",
        "LastUpdated",
        "SecretAccessKey",
        "Token",
        "Type",
    ];
    expected.sort();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    assert_eq!(v["Code"], "Success");
    assert_eq!(v["Type"], "AWS-HMAC");
    assert!(v["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    assert_eq!(v["SecretAccessKey"].as_str().unwrap().len(), 40);
    let expires = parse_rfc3339(v["Expiration"].as_str().unwrap());
    let updated = parse_rfc3339(v["LastUpdated"].as_str().unwrap());
    assert!(expires > now_unix() + 3000 && expires <= now_unix() + 3600);
    assert!(updated <= now_unix());
    // The same keys until rotation is due, as real IMDS.
    let (_, _, again) = imds_get(&c, &server, path, Some(&token)).await;
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["AccessKeyId"], v["AccessKeyId"]);

    let (s, _, _) = imds_get(
        &c,
        &server,
        "/latest/meta-data/iam/security-credentials/some-other-role",
        Some(&token),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, _, info) = imds_get(&c, &server, "/latest/meta-data/iam/info", Some(&token)).await;
    assert_eq!(s, StatusCode::OK);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["Code"], "Success");
    assert_eq!(
        info["InstanceProfileArn"],
        "arn:aws:iam::123456789012:instance-profile/s2iam-test-role"
    );

    // The keys sign STS requests as the instance's role session.
    let creds = creds_from_json(&v);
    let (s, xml) = caller_identity(&c, &server, &creds).await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    assert_eq!(
        tag(&xml, "Arn"),
        Some("arn:aws:sts::123456789012:assumed-role/s2iam-test-role/i-0123456789abcdef0")
    );
    let user_id = tag(&xml, "UserId").unwrap();
    assert!(user_id.starts_with("AROA") && user_id.ends_with(":i-0123456789abcdef0"));
    assert_eq!(tag(&xml, "Account"), Some("123456789012"));
    server.shutdown().await;
}

#[tokio::test]
async fn shortened_ttl_rotates_instance_credentials() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let first = instance_creds(&c, &server).await;
    server
        .cloud()
        .update(|cfg| cfg.token_ttl = Duration::from_secs(600));
    let second = instance_creds(&c, &server).await;
    assert_ne!(first.access_key_id, second.access_key_id);
    server.shutdown().await;
}

#[tokio::test]
async fn no_role_means_404() {
    let server = start(CloudConfig::aws()).await;
    server
        .cloud()
        .update(|cfg| cfg.aws.as_mut().unwrap().role_name = None);
    let c = client();
    let token = imds_token(&c, &server).await;
    for path in [
        "/latest/meta-data/iam/security-credentials/",
        "/latest/meta-data/iam/security-credentials/s2iam-test-role",
        "/latest/meta-data/iam/info",
        "/latest/meta-data/iam/",
    ] {
        let (s, _, _) = imds_get(&c, &server, path, Some(&token)).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    let (_, _, listing) = imds_get(&c, &server, "/latest/meta-data/", Some(&token)).await;
    assert!(!listing.lines().any(|l| l == "iam/"));
    let resp = c
        .get(format!("{}/v2/credentials/abc", server.cloud_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert!(v["code"].is_string() && v["message"].is_string());
    server.shutdown().await;
}

#[tokio::test]
async fn instance_identity_document() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let token = imds_token(&c, &server).await;
    let (s, ctype, body) = imds_get(
        &c,
        &server,
        "/latest/dynamic/instance-identity/document",
        Some(&token),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ctype, "text/plain");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["accountId"], "123456789012");
    assert_eq!(doc["region"], "us-east-1");
    assert_eq!(doc["instanceId"], "i-0123456789abcdef0");
    assert_eq!(doc["availabilityZone"], "us-east-1a");
    assert_eq!(doc["version"], "2017-09-30");
    for field in ["architecture", "imageId", "instanceType", "privateIp"] {
        assert!(
            doc[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}"
        );
    }
    assert!(parse_rfc3339(doc["pendingTime"].as_str().unwrap()) <= now_unix());
    server.shutdown().await;
}

#[tokio::test]
async fn custom_identity_is_served() {
    let mut cfg = CloudConfig::aws();
    {
        let aws = cfg.aws.as_mut().unwrap();
        aws.account_id = "210987654321".into();
        aws.region = "eu-west-1".into();
        aws.availability_zone = "eu-west-1b".into();
        aws.role_name = Some("other-role".into());
    }
    let server = start(cfg).await;
    let c = client();
    let (_, _, region) = imds_get(&c, &server, "/latest/meta-data/placement/region", None).await;
    assert_eq!(region, "eu-west-1");
    let (_, _, role) = imds_get(
        &c,
        &server,
        "/latest/meta-data/iam/security-credentials/",
        None,
    )
    .await;
    assert_eq!(role, "other-role");
    let (s, _, body) = imds_get(
        &c,
        &server,
        "/latest/meta-data/iam/security-credentials/other-role",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let creds = creds_from_json(&serde_json::from_str(&body).unwrap());
    let (_, xml) = caller_identity(&c, &server, &creds).await;
    assert_eq!(
        tag(&xml, "Arn"),
        Some("arn:aws:sts::210987654321:assumed-role/other-role/i-0123456789abcdef0")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn aws_paths_404_when_aws_is_off() {
    let server = start(CloudConfig::gcp()).await;
    let c = client();
    let base = server.cloud_url();
    let resp = c
        .put(format!("{base}/latest/api/token"))
        .header(TTL_HEADER, "60")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    for path in [
        "/latest/api/token",
        "/latest/meta-data/",
        "/latest/meta-data/instance-id",
        "/v2/credentials/abc",
        "/v1/credentials",
    ] {
        let resp = c
            .get(format!("{base}{path}"))
            .header("Authorization", "s2iam-test-pod-identity-token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    server.shutdown().await;
}

// ---------- container credentials ----------

fn assert_container_shape(v: &Value) {
    for field in [
        "AccessKeyId",
        "SecretAccessKey",
        "Token",
        "Expiration",
        "RoleArn",
        "AccountId",
    ] {
        assert!(v[field].is_string(), "{field} missing in {v}");
    }
    assert!(v["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    assert_eq!(
        v["RoleArn"],
        "arn:aws:iam::123456789012:role/s2iam-test-role"
    );
    assert_eq!(v["AccountId"], "123456789012");
    assert!(parse_rfc3339(v["Expiration"].as_str().unwrap()) > now_unix());
}

#[tokio::test]
async fn ecs_container_credentials() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let resp = c
        .get(format!(
            "{}/v2/credentials/0e8d1a2b-0000-4000-8000-123456789abc",
            server.cloud_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let v: Value = resp.json().await.unwrap();
    assert_container_shape(&v);
    let (s, xml) = caller_identity(&c, &server, &creds_from_json(&v)).await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    assert!(tag(&xml, "Arn")
        .unwrap()
        .starts_with("arn:aws:sts::123456789012:assumed-role/s2iam-test-role/"));
    server.shutdown().await;
}

#[tokio::test]
async fn eks_pod_identity_credentials() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let url = format!("{}/v1/credentials", server.cloud_url());
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "missing Authorization"
    );
    let v: Value = resp.json().await.unwrap();
    assert!(v["code"].is_string() && v["message"].is_string());
    for wrong in [
        "wrong",
        "Bearer s2iam-test-pod-identity-token",
        "s2iam-test-pod-identity-token2",
    ] {
        let resp = c
            .get(&url)
            .header("Authorization", wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{wrong}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["code"].is_string() && v["message"].is_string());
        assert!(!v.to_string().contains("s2iam-test-pod-identity-token"));
    }
    let resp = c
        .get(&url)
        .header("Authorization", "s2iam-test-pod-identity-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_container_shape(&v);
    let (s, xml) = caller_identity(&c, &server, &creds_from_json(&v)).await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    assert!(tag(&xml, "Arn")
        .unwrap()
        .contains(":assumed-role/s2iam-test-role/eks-"));
    server.shutdown().await;
}

// ---------- STS ----------

#[tokio::test]
async fn get_caller_identity_with_instance_credentials() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let creds = instance_creds(&c, &server).await;
    let (s, xml) = caller_identity(&c, &server, &creds).await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    assert!(xml.starts_with(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    ));
    assert!(tag(&xml, "GetCallerIdentityResult").is_some());
    assert_eq!(tag(&xml, "RequestId").map(str::len), Some(36));
    let calls = server.cloud().sts_calls();
    assert_eq!(calls.last().unwrap().action, "GetCallerIdentity");
    assert_eq!(
        calls.last().unwrap().caller_access_key_id.as_deref(),
        Some(creds.access_key_id.as_str())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn get_caller_identity_signed_get() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let user = signing(&server.cloud().user_key());
    let url = url::Url::parse(&format!(
        "{}/?Action=GetCallerIdentity&Version=2011-06-15",
        server.cloud_url()
    ))
    .unwrap();
    let host = format!("127.0.0.1:{}", url.port().unwrap());
    let added = sigv4::sign(
        "GET",
        &url,
        &[("host".into(), host)],
        b"",
        &user,
        "eu-central-1",
        "sts",
        now_unix(),
    );
    let mut req = c.get(url.as_str());
    for (k, v) in &added {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let xml = resp.text().await.unwrap();
    assert_eq!(
        tag(&xml, "Arn"),
        Some("arn:aws:iam::123456789012:user/s2iam-test-user")
    );
    assert!(tag(&xml, "UserId").unwrap().starts_with("AIDA"));
    server.shutdown().await;
}

#[tokio::test]
async fn get_session_token_with_user_key() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let user = signing(&server.cloud().user_key());
    assert!(user.access_key_id.starts_with("AKIA"));
    let (s, xml) = sts(
        &c,
        &server,
        &[("Action", "GetSessionToken"), V, ("DurationSeconds", "900")],
        &user,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    assert!(xml.starts_with("<GetSessionTokenResponse"));
    let session = creds_from_xml(&xml);
    assert!(session.access_key_id.starts_with("ASIA"));
    let expires = parse_rfc3339(tag(&xml, "Expiration").unwrap());
    assert!(expires <= now_unix() + 900 && expires > now_unix() + 800);

    // The session keeps the user's identity.
    let (s, who) = caller_identity(&c, &server, &session).await;
    assert_eq!(s, StatusCode::OK, "{who}");
    assert_eq!(
        tag(&who, "Arn"),
        Some("arn:aws:iam::123456789012:user/s2iam-test-user")
    );
    // A session may not ask for another session.
    let (s, err) = sts(&c, &server, &[("Action", "GetSessionToken"), V], &session).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&err), "AccessDenied");
    // Out-of-range duration.
    let (s, err) = sts(
        &c,
        &server,
        &[("Action", "GetSessionToken"), V, ("DurationSeconds", "60")],
        &user,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "ValidationError");
    server.shutdown().await;
}

const ROLE: &str = "arn:aws:iam::210987654321:role/s2iam-s3-reader";

#[tokio::test]
async fn assume_role_with_session_policy() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let user = signing(&server.cloud().user_key());
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":"arn:aws:s3:::bucket-a/*"}]}"#;
    let (s, xml) = sts(
        &c,
        &server,
        &[
            ("Action", "AssumeRole"),
            V,
            ("RoleArn", ROLE),
            ("RoleSessionName", "s2iam-session"),
            ("DurationSeconds", "900"),
            ("ExternalId", "ext-123"),
            ("Policy", policy),
            (
                "PolicyArns.member.1.arn",
                "arn:aws:iam::aws:policy/ReadOnlyAccess",
            ),
        ],
        &user,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    assert!(
        xml.starts_with("<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">")
    );
    let assumed = tag(&xml, "AssumedRoleUser").unwrap();
    assert_eq!(
        tag(assumed, "Arn"),
        Some("arn:aws:sts::210987654321:assumed-role/s2iam-s3-reader/s2iam-session")
    );
    let id = tag(assumed, "AssumedRoleId").unwrap();
    assert!(id.starts_with("AROA") && id.ends_with(":s2iam-session"));
    assert!(
        tag(&xml, "PackedPolicySize")
            .unwrap()
            .parse::<u32>()
            .unwrap()
            > 0
    );
    let expires = parse_rfc3339(tag(&xml, "Expiration").unwrap());
    assert!(expires <= now_unix() + 900 && expires > now_unix() + 800);

    let sent: Value = serde_json::from_str(policy).unwrap();
    assert_eq!(server.cloud().last_session_policy(), Some(sent.clone()));
    let call = server.cloud().sts_calls().pop().unwrap();
    assert_eq!(call.action, "AssumeRole");
    assert_eq!(call.role_arn.as_deref(), Some(ROLE));
    assert_eq!(call.external_id.as_deref(), Some("ext-123"));
    assert_eq!(call.duration_seconds, Some(900));
    assert_eq!(call.policy_arns, ["arn:aws:iam::aws:policy/ReadOnlyAccess"]);
    assert_eq!(
        call.caller_arn.as_deref(),
        Some("arn:aws:iam::123456789012:user/s2iam-test-user")
    );

    // The same record over HTTP, for out-of-process tests.
    let calls: Value = c
        .get(format!("{}/_mock/sts/calls", server.cloud_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls.as_array().unwrap().last().unwrap()["policy"], sent);

    // The role's keys identify as the role session.
    let role_creds = creds_from_xml(&xml);
    let (s, who) = caller_identity(&c, &server, &role_creds).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        tag(&who, "Arn"),
        Some("arn:aws:sts::210987654321:assumed-role/s2iam-s3-reader/s2iam-session")
    );
    assert_eq!(tag(&who, "Account"), Some("210987654321"));

    // Without a policy, none is recorded.
    let (s, _) = sts(
        &c,
        &server,
        &[
            ("Action", "AssumeRole"),
            V,
            ("RoleArn", ROLE),
            ("RoleSessionName", "plain"),
        ],
        &user,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(server.cloud().last_session_policy(), None);
    server.shutdown().await;
}

#[tokio::test]
async fn assume_role_from_instance_role_is_chained() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let creds = instance_creds(&c, &server).await;
    let base = [
        ("Action", "AssumeRole"),
        V,
        ("RoleArn", ROLE),
        ("RoleSessionName", "chain"),
    ];
    let mut long = base.to_vec();
    long.push(("DurationSeconds", "7200"));
    let (s, err) = sts(&c, &server, &long, &creds).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "ValidationError");
    assert!(err.contains("role chaining"));
    let (s, xml) = sts(&c, &server, &base, &creds).await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    assert_eq!(
        server
            .cloud()
            .sts_calls()
            .last()
            .unwrap()
            .caller_arn
            .as_deref(),
        Some("arn:aws:sts::123456789012:assumed-role/s2iam-test-role/i-0123456789abcdef0")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn assume_role_only_listed_roles() {
    let server = start(CloudConfig::aws()).await;
    server
        .cloud()
        .update(|cfg| cfg.aws.as_mut().unwrap().assumable_roles = vec![ROLE.to_string()]);
    let c = client();
    let user = signing(&server.cloud().user_key());
    let other = "arn:aws:iam::210987654321:role/admin";
    let (s, err) = sts(
        &c,
        &server,
        &[
            ("Action", "AssumeRole"),
            V,
            ("RoleArn", other),
            ("RoleSessionName", "s"),
        ],
        &user,
    )
    .await;
    // "s" is too short: validation comes first.
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::BAD_REQUEST, "ValidationError")
    );
    let (s, err) = sts(
        &c,
        &server,
        &[
            ("Action", "AssumeRole"),
            V,
            ("RoleArn", other),
            ("RoleSessionName", "sess"),
        ],
        &user,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&err), "AccessDenied");
    assert!(err.contains("is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::210987654321:role/admin"));
    let (s, _) = sts(
        &c,
        &server,
        &[
            ("Action", "AssumeRole"),
            V,
            ("RoleArn", ROLE),
            ("RoleSessionName", "sess"),
        ],
        &user,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn assume_role_validation() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let user = signing(&server.cloud().user_key());
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("RoleSessionName", "sess")], "ValidationError"),
        (vec![("RoleArn", ROLE)], "ValidationError"),
        (
            vec![
                ("RoleArn", "arn:aws:iam::123:role/x"),
                ("RoleSessionName", "sess"),
            ],
            "ValidationError",
        ),
        (
            vec![
                ("RoleArn", "arn:aws:iam::123456789012:user/bob"),
                ("RoleSessionName", "sess"),
            ],
            "ValidationError",
        ),
        (
            vec![("RoleArn", ROLE), ("RoleSessionName", "bad name")],
            "ValidationError",
        ),
        (
            vec![
                ("RoleArn", ROLE),
                ("RoleSessionName", "sess"),
                ("DurationSeconds", "899"),
            ],
            "ValidationError",
        ),
        (
            vec![
                ("RoleArn", ROLE),
                ("RoleSessionName", "sess"),
                ("DurationSeconds", "43201"),
            ],
            "ValidationError",
        ),
        (
            vec![
                ("RoleArn", ROLE),
                ("RoleSessionName", "sess"),
                ("ExternalId", "x"),
            ],
            "ValidationError",
        ),
        (
            vec![
                ("RoleArn", ROLE),
                ("RoleSessionName", "sess"),
                ("Policy", "{nope"),
            ],
            "MalformedPolicyDocument",
        ),
        (
            vec![
                ("RoleArn", ROLE),
                ("RoleSessionName", "sess"),
                ("Policy", "[]"),
            ],
            "MalformedPolicyDocument",
        ),
    ];
    for (extra, code) in cases {
        let mut params = vec![("Action", "AssumeRole"), V];
        params.extend(extra.iter().copied());
        let (s, err) = sts(&c, &server, &params, &user).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{extra:?}");
        assert_eq!(error_code(&err), code, "{extra:?}");
    }
    assert!(server.cloud().sts_calls().is_empty());
    server.shutdown().await;
}

async fn web_identity(c: &Client, server: &TestServer, token: &str) -> (StatusCode, String) {
    let body = form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        V,
        ("RoleArn", "arn:aws:iam::123456789012:role/s2iam-irsa"),
        ("RoleSessionName", "botocore-session-1"),
        ("WebIdentityToken", token),
    ]);
    send_post(
        c,
        server,
        &[(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body,
    )
    .await
}

#[tokio::test]
async fn assume_role_with_web_identity_eks() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let token = server
        .cloud()
        .mint_eks_web_identity_token("system:serviceaccount:default:app")
        .unwrap();
    let (s, xml) = web_identity(&c, &server, &token).await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    assert!(xml.starts_with(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
    ));
    assert_eq!(
        tag(&xml, "SubjectFromWebIdentityToken"),
        Some("system:serviceaccount:default:app")
    );
    assert_eq!(tag(&xml, "Audience"), Some("sts.amazonaws.com"));
    assert_eq!(
        tag(&xml, "Provider"),
        Some("arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/S2IAMTESTCLUSTER")
    );
    assert_eq!(
        tag(&xml, "Arn"),
        Some("arn:aws:sts::123456789012:assumed-role/s2iam-irsa/botocore-session-1")
    );
    let creds = creds_from_xml(&xml);
    let (s, who) = caller_identity(&c, &server, &creds).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        tag(&who, "Arn"),
        Some("arn:aws:sts::123456789012:assumed-role/s2iam-irsa/botocore-session-1")
    );
    let call = server
        .cloud()
        .sts_calls()
        .into_iter()
        .find(|c| c.action == "AssumeRoleWithWebIdentity")
        .unwrap();
    assert_eq!(
        call.web_identity_subject.as_deref(),
        Some("system:serviceaccount:default:app")
    );
    assert_eq!(call.caller_arn, None);
    server.shutdown().await;
}

#[tokio::test]
async fn assume_role_with_web_identity_rejections() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let (s, err) = web_identity(&c, &server, "garbage-token").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "InvalidIdentityToken");

    let keys = server.cloud().keys().clone();
    let now = now_unix();
    let claims = |iss: &str, exp: u64| {
        serde_json::json!({"iss": iss, "sub": "system:serviceaccount:default:app",
            "aud": ["sts.amazonaws.com"], "iat": exp - 3600, "exp": exp})
    };
    let eks_iss = s2iam_testserver::cloud::EKS_ISSUER;
    let expired = keys.eks.sign(&claims(eks_iss, now - 600)).unwrap();
    let (s, err) = web_identity(&c, &server, &expired).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&err), "ExpiredTokenException");

    // Signed by a key no identity provider uses (the auth service's).
    let foreign = keys.auth.sign(&claims(eks_iss, now + 600)).unwrap();
    let (s, err) = web_identity(&c, &server, &foreign).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::BAD_REQUEST, "InvalidIdentityToken")
    );

    // The cluster's key, but claiming another issuer.
    let wrong_iss = keys
        .eks
        .sign(&claims("https://evil.example", now + 600))
        .unwrap();
    let (s, err) = web_identity(&c, &server, &wrong_iss).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::BAD_REQUEST, "InvalidIdentityToken")
    );

    // A tampered payload breaks the signature.
    let good = server
        .cloud()
        .mint_eks_web_identity_token("system:serviceaccount:default:app")
        .unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let other = server
        .cloud()
        .mint_eks_web_identity_token("system:serviceaccount:kube-system:admin")
        .unwrap();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        other.split('.').nth(1).unwrap(),
        parts[2]
    );
    let (s, err) = web_identity(&c, &server, &tampered).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::BAD_REQUEST, "InvalidIdentityToken")
    );

    // Missing token parameter.
    let body = form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        V,
        ("RoleArn", "arn:aws:iam::123456789012:role/s2iam-irsa"),
        ("RoleSessionName", "sess"),
    ]);
    let (s, err) = send_post(
        &c,
        &server,
        &[(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body,
    )
    .await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::BAD_REQUEST, "ValidationError")
    );
    assert!(server.cloud().sts_calls().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn assume_role_with_web_identity_google_and_aks() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let now = now_unix();
    let google = server
        .cloud()
        .keys()
        .google
        .sign(
            &serde_json::json!({"iss": "https://accounts.google.com", "sub": "1234567890",
            "aud": "s2iam-aws", "iat": now, "exp": now + 600}),
        )
        .unwrap();
    let (s, xml) = web_identity(&c, &server, &google).await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    assert_eq!(tag(&xml, "Provider"), Some("accounts.google.com"));
    assert_eq!(tag(&xml, "Audience"), Some("s2iam-aws"));
    let aks = server
        .cloud()
        .mint_aks_federated_token("system:serviceaccount:default:app")
        .unwrap();
    let (s, xml) = web_identity(&c, &server, &aks).await;
    assert_eq!(s, StatusCode::OK, "{xml}");
    server.shutdown().await;
}

#[tokio::test]
async fn signature_rejections() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let user = signing(&server.cloud().user_key());
    let gci = [("Action", "GetCallerIdentity"), V];

    let wrong_secret = SigningCredentials {
        secret_access_key: "x".repeat(40),
        ..user.clone()
    };
    let (s, err) = sts(&c, &server, &gci, &wrong_secret).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
    );
    assert!(!err.contains(&user.secret_access_key));

    let unknown = SigningCredentials {
        access_key_id: "AKIAUNKNOWNKEY000000".into(),
        ..user.clone()
    };
    let (s, err) = sts(&c, &server, &gci, &unknown).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::FORBIDDEN, "InvalidClientTokenId")
    );

    // Stale and future X-Amz-Date.
    for at in [now_unix() - 20 * 60, now_unix() + 20 * 60] {
        let (headers, body) = signed_post(&server, &gci, &user, at);
        let (s, err) = send_post(&c, &server, &headers, body).await;
        assert_eq!(
            (s, error_code(&err).as_str()),
            (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
        );
    }

    // Body changed after signing.
    let (headers, _) = signed_post(&server, &gci, &user, now_unix());
    let (s, err) = send_post(
        &c,
        &server,
        &headers,
        form(&[("Action", "GetSessionToken"), V]),
    )
    .await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
    );

    // Signed for another service.
    let body = form(&gci);
    let url = url::Url::parse(&format!("{}/", server.cloud_url())).unwrap();
    let host = format!("127.0.0.1:{}", url.port().unwrap());
    let mut headers = vec![
        ("host".to_string(), host),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
    ];
    headers.extend(sigv4::sign(
        "POST",
        &url,
        &headers,
        body.as_bytes(),
        &user,
        "us-east-1",
        "iam",
        now_unix(),
    ));
    headers.retain(|(k, _)| k != "host");
    let (s, err) = send_post(&c, &server, &headers, body).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
    );

    // Garbage Authorization, and none at all.
    let (mut headers, body) = signed_post(&server, &gci, &user, now_unix());
    for (k, v) in headers.iter_mut() {
        if k == "Authorization" {
            *v = "garbage".into();
        }
    }
    let (s, err) = send_post(&c, &server, &headers, body.clone()).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::BAD_REQUEST, "IncompleteSignature")
    );
    headers.retain(|(k, _)| k != "Authorization");
    let (s, err) = send_post(&c, &server, &headers, body).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::FORBIDDEN, "MissingAuthenticationToken")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn session_token_must_accompany_session_keys() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let creds = instance_creds(&c, &server).await;
    let gci = [("Action", "GetCallerIdentity"), V];
    let without = SigningCredentials {
        session_token: None,
        ..creds.clone()
    };
    let (s, err) = sts(&c, &server, &gci, &without).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::FORBIDDEN, "InvalidClientTokenId")
    );
    let other = SigningCredentials {
        session_token: Some("IQoJb3JpZ2luX2VjEnot-the-token".into()),
        ..creds.clone()
    };
    let (s, err) = sts(&c, &server, &gci, &other).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::FORBIDDEN, "InvalidClientTokenId")
    );
    // Long-term keys must not carry one.
    let user = SigningCredentials {
        session_token: Some("anything".into()),
        ..signing(&server.cloud().user_key())
    };
    let (s, err) = sts(&c, &server, &gci, &user).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::FORBIDDEN, "InvalidClientTokenId")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn expired_session_is_expired_token() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let expired = server.cloud().issue_session_for(
        "arn:aws:sts::123456789012:assumed-role/r/s",
        "AROAEXAMPLE:s",
        "123456789012",
        Duration::ZERO,
    );
    let (s, err) = caller_identity(&c, &server, &signing(&expired)).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::BAD_REQUEST, "ExpiredToken")
    );

    // Credentials from IMDS after token_ttl is cut to zero expire at once too.
    server.cloud().update(|cfg| cfg.token_ttl = Duration::ZERO);
    let creds = instance_creds(&c, &server).await;
    let (s, err) = caller_identity(&c, &server, &creds).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::BAD_REQUEST, "ExpiredToken")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn actions_and_bodies() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let user = signing(&server.cloud().user_key());
    let (s, err) = sts(&c, &server, &[("Action", "ListUsers"), V], &user).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::BAD_REQUEST, "InvalidAction")
    );
    let (s, err) = sts(
        &c,
        &server,
        &[("Action", "GetCallerIdentity"), ("Version", "2010-05-08")],
        &user,
    )
    .await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::BAD_REQUEST, "InvalidAction")
    );
    let (s, err) = sts(&c, &server, &[("Version", "2011-06-15")], &user).await;
    assert_eq!(
        (s, error_code(&err).as_str()),
        (StatusCode::BAD_REQUEST, "MissingAction")
    );

    let huge = "a".repeat(200 * 1024);
    let resp = c
        .post(format!("{}/", server.cloud_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "Action=GetCallerIdentity&Version=2011-06-15&Pad={huge}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        error_code(&resp.text().await.unwrap()),
        "RequestEntityTooLarge"
    );

    // A POST whose body is not a form carries no parameters.
    let json = r#"{"Action":"GetCallerIdentity","Version":"2011-06-15"}"#;
    let resp = c
        .post(format!("{}/", server.cloud_url()))
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&resp.text().await.unwrap()), "MissingAction");
    let resp = c
        .put(format!("{}/", server.cloud_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    server.shutdown().await;
}

// ---------- faults and the request log ----------

#[tokio::test]
async fn throttled_token_endpoint_recovers() {
    let server = start(CloudConfig::aws()).await;
    server
        .cloud_faults()
        .add(FaultRule::status("/latest/api/token", 429).times(2));
    let c = client();
    let url = format!("{}/latest/api/token", server.cloud_url());
    for _ in 0..2 {
        let resp = c.put(&url).header(TTL_HEADER, "60").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let resp = c.put(&url).header(TTL_HEADER, "60").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let token = resp.text().await.unwrap();
    let (s, _, _) = imds_get(&c, &server, "/latest/meta-data/instance-id", Some(&token)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(server.cloud_requests().count("/latest/api/token"), 3);
    assert_eq!(server.cloud_faults().list()[0].hits, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn reset_credentials_endpoint_then_recover() {
    let server = start(CloudConfig::aws()).await;
    server
        .cloud_faults()
        .add(FaultRule::reset("/latest/meta-data/iam/security-credentials/").times(1));
    let c = client();
    let token = imds_token(&c, &server).await;
    let url = format!(
        "{}/latest/meta-data/iam/security-credentials/s2iam-test-role",
        server.cloud_url()
    );
    let err = c.get(&url).header(TOKEN_HEADER, &token).send().await;
    assert!(err.is_err(), "the reset must surface as a transport error");
    let resp = c
        .get(&url)
        .header(TOKEN_HEADER, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn sts_fault_then_success() {
    let server = start(CloudConfig::aws()).await;
    server
        .cloud_faults()
        .add(FaultRule::status("/", 503).method("POST").times(1));
    let c = client();
    let user = signing(&server.cloud().user_key());
    let (headers, body) = signed_post(
        &server,
        &[("Action", "GetCallerIdentity"), V],
        &user,
        now_unix(),
    );
    let mut req = c
        .post(format!("{}/", server.cloud_url()))
        .body(body.clone());
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    assert_eq!(
        req.send().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (s, _) = send_post(&c, &server, &headers, body).await;
    assert_eq!(s, StatusCode::OK);
    server.shutdown().await;
}

/// The `Date` header of a response as Unix seconds.
fn date_of(resp: &reqwest::Response) -> u64 {
    let value = resp.headers()["date"].to_str().unwrap();
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value, &fmt)
        .unwrap()
        .assume_utc()
        .unix_timestamp() as u64
}

#[tokio::test]
async fn clock_offset_moves_every_date_header_and_the_sts_time_check() {
    for offset in [20 * 60_i64, -20 * 60] {
        let server = start(CloudConfig::aws().with_clock_offset(offset)).await;
        let c = client();
        let expected = now_unix().saturating_add_signed(offset);
        // IMDS, STS and the other clouds' paths all answer with the cloud's clock.
        for path in [
            "/latest/meta-data/instance-id",
            "/computeMetadata/v1/instance/id",
            "/",
        ] {
            let resp = c
                .get(format!("{}{path}", server.cloud_url()))
                .send()
                .await
                .unwrap();
            let date = date_of(&resp);
            assert!(date.abs_diff(expected) <= 2, "{path}: {date} vs {expected}");
        }

        // Signed with this machine's clock: refused as the real STS refuses it,
        // naming the server's time.
        let user = signing(&server.cloud().user_key());
        let (headers, body) = signed_post(
            &server,
            &[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")],
            &user,
            now_unix(),
        );
        let (s, err) = send_post(&c, &server, &headers, body).await;
        assert_eq!(
            (s, error_code(&err).as_str()),
            (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
        );
        let message = tag(&err, "Message").unwrap();
        let server_time = sigv4::format_amz_date(expected);
        let prefix = if offset > 0 {
            "Signature expired: "
        } else {
            "Signature not yet current: "
        };
        assert!(message.starts_with(prefix), "{message}");
        // `(20261130T101500Z - 15 min.)`: the server's time, to the minute.
        assert!(
            message.contains(&format!("({}", &server_time[..13])),
            "{message} vs {server_time}"
        );

        // Signed with the cloud's clock: accepted, and the credentials it issues
        // expire by the cloud's clock.
        let (headers, body) = signed_post(
            &server,
            &[("Action", "GetSessionToken"), ("Version", "2011-06-15")],
            &user,
            expected,
        );
        let (s, xml) = send_post(&c, &server, &headers, body).await;
        assert_eq!(s, StatusCode::OK, "{xml}");
        let expires = parse_rfc3339(tag(&xml, "Expiration").unwrap());
        assert!(expires.abs_diff(expected + 3600) <= 2);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn clock_offset_can_change_while_running() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    let url = format!("{}/latest/meta-data/instance-id", server.cloud_url());
    let before = date_of(&c.get(&url).send().await.unwrap());
    assert!(before.abs_diff(now_unix()) <= 2);
    server.cloud().update(|cfg| cfg.clock_offset_secs = 600);
    let after = date_of(&c.get(&url).send().await.unwrap());
    assert!(after.abs_diff(now_unix() + 600) <= 2);
    server.shutdown().await;
}

/// A GetCallerIdentity POST signed for `region` and sent with `Host: host`.
async fn caller_identity_via_host(
    c: &Client,
    server: &TestServer,
    host: &str,
    region: &str,
) -> (StatusCode, String) {
    let body = form(&[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")]);
    let url = url::Url::parse(&format!("https://{host}/")).unwrap();
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        ),
    ];
    let user = signing(&server.cloud().user_key());
    let added = sigv4::sign(
        "POST",
        &url,
        &headers,
        body.as_bytes(),
        &user,
        region,
        "sts",
        now_unix(),
    );
    headers.extend(added);
    send_post(c, server, &headers, body).await
}

#[tokio::test]
async fn sts_host_names_pick_the_signing_region_and_partition() {
    let server = start(CloudConfig::aws()).await;
    let c = client();
    for (host, region, partition) in [
        ("sts.cn-north-1.amazonaws.com.cn", "cn-north-1", "aws-cn"),
        ("sts.amazonaws.com", "us-east-1", "aws"),
        (
            "sts-fips.us-gov-west-1.api.aws",
            "us-gov-west-1",
            "aws-us-gov",
        ),
        (
            "sts.us-iso-east-1.c2s.ic.gov:443",
            "us-iso-east-1",
            "aws-iso",
        ),
    ] {
        let (s, xml) = caller_identity_via_host(&c, &server, host, region).await;
        assert_eq!(s, StatusCode::OK, "{host}: {xml}");
        let arn = tag(&xml, "Arn").unwrap();
        assert!(arn.starts_with(&format!("arn:{partition}:iam::")), "{arn}");

        let (s, err) = caller_identity_via_host(&c, &server, host, "eu-west-1").await;
        assert_eq!(
            (s, error_code(&err).as_str()),
            (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
            "{host}"
        );
        assert_eq!(
            tag(&err, "Message"),
            Some("Credential should be scoped to a valid region. ")
        );
    }
    // Loopback (the usual test endpoint) takes any region.
    let (s, _) = caller_identity_via_host(&c, &server, "127.0.0.1:1", "eu-west-1").await;
    assert_eq!(s, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn the_cloud_is_served_over_https_for_given_names() {
    let server = TestServer::start(
        TestServerConfig::new(CloudConfig::aws()).with_cloud_tls(&["sts.eu-west-1.amazonaws.com"]),
    )
    .await
    .unwrap();
    let ca = reqwest::Certificate::from_pem(server.cloud_ca_pem().unwrap().as_bytes()).unwrap();
    let c = Client::builder()
        .no_proxy()
        .add_root_certificate(ca)
        .resolve(
            "sts.eu-west-1.amazonaws.com",
            server.cloud_tls_addr().unwrap(),
        )
        .build()
        .unwrap();
    let resp = c
        .get("https://sts.eu-west-1.amazonaws.com/latest/meta-data/instance-id")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "i-0123456789abcdef0");
    server.shutdown().await;
}
