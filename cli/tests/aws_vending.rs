//! AWS credential vending end to end, in-process, against the mock cloud's STS:
//! every profile kind, the session policy STS receives, the container-credentials
//! endpoint and its authorization, presigning and its refusals, expiry and refresh,
//! and the `credential-process` / `s3 presign` commands. No secret may appear in a
//! response that refuses, or in the logs.

// Tests and benches own their environment and clock (rule 4 is for the library).
#![allow(clippy::disallowed_methods)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use common::{mocks, provider_config, temp_dir, uds_get};
use s2iam::env::Env;
use s2iam::provider::aws::{AwsCredentials, StsClient};
use s2iam::Secret;
use s2iam_sidecar::config::{ServeConfig, ServeOverrides};
use s2iam_sidecar::serve::Sidecar;
use s2iam_testserver::{CloudConfig, TestServer};
use serde_json::{json, Value};

const ACCOUNT: &str = "123456789012";
const DATA_ROLE: &str = "arn:aws:iam::123456789012:role/data";

// ---- log capture ----------------------------------------------------------------------

/// Everything every sidecar in this test binary logged (debug and up).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("s2iam=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

fn assert_not_logged(secrets: &[&str]) {
    let text = log_text();
    for s in secrets {
        assert!(!s.is_empty());
        assert!(!text.contains(s), "a secret was logged");
    }
}

// ---- setup ---------------------------------------------------------------------------------

const PROFILES: &str = r#"
[[aws_profile]]
name = "analytics"
source = "assume_role"
role_arn = "arn:aws:iam::123456789012:role/data"
external_id = "ext-42"
duration = "1h"
[[aws_profile.session_policy]]
buckets = ["*-analytics-*"]
actions = ["read", "list"]

[[aws_profile]]
name = "writer"
source = "assume_role"
role_arn = "arn:aws:iam::123456789012:role/data"
session_name = "writer-session"
[[aws_profile.session_policy]]
buckets = ["inbox"]
prefixes = ["uploads/"]
actions = ["write", "read"]

[[aws_profile]]
name = "admin"
source = "self"
"#;

struct Setup {
    server: TestServer,
    sidecar: Sidecar,
    token: String,
    dir: std::path::PathBuf,
}

impl Setup {
    fn tcp_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.sidecar.tcp_addr().unwrap())
    }

    fn socket(&self) -> std::path::PathBuf {
        self.sidecar.socket_path().unwrap()
    }

    /// GET over TCP with an optional raw `Authorization`.
    async fn tcp_get(&self, path: &str, auth: Option<&str>) -> (u16, Value) {
        let mut req = reqwest::Client::new().get(self.tcp_url(path));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    async fn creds(&self, profile: &str) -> (u16, Value) {
        self.tcp_get(&format!("/v1/aws/credentials/{profile}"), Some(&self.token))
            .await
    }

    async fn presign(&self, query: &str) -> (u16, Value) {
        self.tcp_get(&format!("/v1/s3/presign?{query}"), Some(&self.token))
            .await
    }
}

fn sidecar_config(toml: &str, dir: &Path, provider: &str) -> ServeConfig {
    let text = format!(
        "[identity]\nprovider = \"{provider}\"\n[aws]\nauthorization_token_file = \"{}\"\ns3_endpoint = \"http://127.0.0.1:9\"\ns3_path_style = true\n{toml}",
        dir.join("aws-token").display()
    );
    let mut c = ServeConfig::from_toml(
        &text,
        &Env::from_pairs::<&str, &str>([]),
        &ServeOverrides::default(),
    )
    .unwrap();
    c.listen.socket = Some(dir.join("s2iam.sock"));
    c.listen.tcp = Some("127.0.0.1:0".parse().unwrap());
    c.cache.tick = Duration::from_millis(50);
    c.cache.policy.retry_base = Duration::from_millis(100);
    c.cache.policy.retry_max = Duration::from_millis(400);
    c
}

async fn setup_with(cloud: CloudConfig, toml: &str, provider: &str) -> Setup {
    logs();
    let server = mocks(cloud).await;
    let dir = temp_dir("aws-creds");
    let config = sidecar_config(toml, &dir, provider);
    let sidecar = Sidecar::start(config, provider_config(&server))
        .await
        .expect("sidecar starts");
    let token = std::fs::read_to_string(dir.join("aws-token")).unwrap();
    Setup {
        server,
        sidecar,
        token,
        dir,
    }
}

async fn setup() -> Setup {
    setup_with(CloudConfig::aws(), PROFILES, "aws").await
}

fn credentials_of(doc: &Value) -> AwsCredentials {
    let s = |k: &str| doc[k].as_str().unwrap().to_string();
    AwsCredentials {
        access_key_id: s("AccessKeyId"),
        secret: Secret::new(s("SecretAccessKey")),
        session_token: Some(Secret::new(s("Token"))),
        expiration: None,
        account_id: None,
    }
}

/// Who STS says the credentials are (the mock STS verifies the signature).
async fn caller_arn(server: &TestServer, doc: &Value) -> String {
    StsClient::new(&provider_config(server), "us-east-1")
        .get_caller_identity(&credentials_of(doc))
        .await
        .expect("the vended credentials are accepted by STS")
        .arn
}

fn remaining_secs(doc: &Value) -> i64 {
    let exp = s2iam::util::parse_rfc3339(doc["Expiration"].as_str().unwrap()).unwrap();
    exp.duration_since(SystemTime::now())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(-1)
}

fn secrets_of(doc: &Value) -> Vec<String> {
    vec![
        doc["SecretAccessKey"].as_str().unwrap().to_string(),
        doc["Token"].as_str().unwrap().to_string(),
    ]
}

// ---- profile kinds ---------------------------------------------------------------------------

#[tokio::test]
async fn assume_role_profile_sends_the_generated_session_policy() {
    let s = setup().await;
    let (status, doc) = s.creds("analytics").await;
    assert_eq!(status, 200, "{doc}");
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "AccessKeyId",
            "AccountId",
            "Expiration",
            "SecretAccessKey",
            "Token"
        ]
    );
    assert!(doc["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    assert_eq!(doc["AccountId"], ACCOUNT);
    assert!(remaining_secs(&doc) > 3500, "{doc}");

    let calls = s.server.cloud().sts_calls();
    let call = calls.iter().find(|c| c.action == "AssumeRole").unwrap();
    assert_eq!(call.role_arn.as_deref(), Some(DATA_ROLE));
    assert_eq!(call.role_session_name.as_deref(), Some("s2iam-session"));
    assert_eq!(call.external_id.as_deref(), Some("ext-42"));
    assert_eq!(call.duration_seconds, Some(3600));
    assert_eq!(
        call.issued_access_key_id.as_deref(),
        doc["AccessKeyId"].as_str()
    );
    assert_eq!(
        s.server.cloud().last_session_policy().unwrap(),
        json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "Objects0", "Effect": "Allow",
                 "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                 "Resource": ["arn:aws:s3:::*-analytics-*/*"]},
                {"Sid": "List0", "Effect": "Allow",
                 "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                 "Resource": ["arn:aws:s3:::*-analytics-*"]}
            ]
        })
    );
    // The caller was the instance role (the workload's own identity).
    assert!(call
        .caller_arn
        .as_deref()
        .unwrap()
        .contains("s2iam-test-role"));
    assert_eq!(
        caller_arn(&s.server, &doc).await,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/data/s2iam-session")
    );

    // Cached: the second caller gets the same credentials without another AssumeRole.
    let (_, again) = s.creds("analytics").await;
    assert_eq!(again["AccessKeyId"], doc["AccessKeyId"]);
    let assumes = |s: &Setup| {
        s.server
            .cloud()
            .sts_calls()
            .iter()
            .filter(|c| c.action == "AssumeRole")
            .count()
    };
    assert_eq!(assumes(&s), 1);

    // Another profile, another policy (prefix-scoped write + read).
    let (status, w) = s.creds("writer").await;
    assert_eq!(status, 200);
    assert_ne!(w["AccessKeyId"], doc["AccessKeyId"]);
    let policy = s.server.cloud().last_session_policy().unwrap();
    assert_eq!(
        policy["Statement"][0]["Resource"],
        json!(["arn:aws:s3:::inbox/uploads/*"])
    );
    assert_eq!(
        policy["Statement"][0]["Action"],
        json!([
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:PutObject",
            "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts"
        ])
    );
    let secrets: Vec<String> = [secrets_of(&doc), secrets_of(&w)].concat();
    assert_not_logged(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
    s.sidecar.shutdown().await;
}

#[tokio::test]
async fn self_profile_is_the_workload_identity_without_a_policy() {
    let s = setup().await;
    // On the Unix socket no token is needed.
    let (status, body) = uds_get(&s.socket(), "/v1/aws/credentials/admin").await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        caller_arn(&s.server, &doc).await,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/s2iam-test-role/i-0123456789abcdef0")
    );
    assert!(!s
        .server
        .cloud()
        .sts_calls()
        .iter()
        .any(|c| c.action.starts_with("AssumeRole")));
    s.sidecar.shutdown().await;
}

#[tokio::test]
async fn web_identity_from_gcp_needs_no_aws_keys() {
    let toml = r#"
[[aws_profile]]
name = "gcp-s3"
source = "web_identity"
role_arn = "arn:aws:iam::123456789012:role/from-gcp"
provider = "gcp"
audience = "sts.amazonaws.com"
duration = "2h"
[[aws_profile.session_policy]]
buckets = ["shared-*"]
prefixes = ["in/"]
actions = ["list"]
"#;
    let s = setup_with(CloudConfig::gcp(), toml, "gcp").await;
    let (status, body) = uds_get(&s.socket(), "/v1/aws/credentials/gcp-s3").await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    let calls = s.server.cloud().sts_calls();
    let call = calls
        .iter()
        .find(|c| c.action == "AssumeRoleWithWebIdentity")
        .expect("AssumeRoleWithWebIdentity was called");
    assert_eq!(
        call.role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/from-gcp")
    );
    assert_eq!(call.duration_seconds, Some(7200));
    // The subject is the GCE default service account's unique id.
    let sa = CloudConfig::gcp().gcp.unwrap().service_account.unwrap();
    assert_eq!(
        call.web_identity_subject.as_deref(),
        Some(sa.unique_id.as_str())
    );
    assert_eq!(
        s.server.cloud().last_session_policy().unwrap(),
        json!({
            "Version": "2012-10-17",
            "Statement": [{"Sid": "List0", "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": ["arn:aws:s3:::shared-*"],
                "Condition": {"StringLike": {"s3:prefix": ["in/*"]}}}]
        })
    );
    // The ID token was minted for the configured audience.
    let minted = s
        .server
        .cloud_requests()
        .entries()
        .into_iter()
        .find(|r| r.path.ends_with("/identity"))
        .expect("an ID token was requested");
    assert!(
        minted.query.contains("audience=sts.amazonaws.com"),
        "{}",
        minted.query
    );
    assert_eq!(
        caller_arn(&s.server, &doc).await,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/from-gcp/s2iam-session")
    );
    s.sidecar.shutdown().await;
}

#[tokio::test]
async fn web_identity_from_azure_uses_the_detected_provider() {
    let toml = r#"
[[aws_profile]]
name = "azure-s3"
source = "web_identity"
role_arn = "arn:aws:iam::123456789012:role/from-azure"
audience = "api://s2iam-aws"
"#;
    let s = setup_with(CloudConfig::azure(), toml, "azure").await;
    let (status, doc) = s.creds("azure-s3").await;
    assert_eq!(status, 200, "{doc}");
    let calls = s.server.cloud().sts_calls();
    let call = calls
        .iter()
        .find(|c| c.action == "AssumeRoleWithWebIdentity")
        .unwrap();
    assert!(call.web_identity_subject.is_some());
    assert!(call.policy.is_none(), "no rules, no session policy");
    let asked = s
        .server
        .cloud_requests()
        .entries()
        .into_iter()
        .any(|r| r.path.contains("/identity/oauth2/token") && r.query.contains("s2iam-aws"));
    assert!(
        asked,
        "the managed-identity token was asked for the audience"
    );
    assert_eq!(
        caller_arn(&s.server, &doc).await,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/from-azure/s2iam-session")
    );
    s.sidecar.shutdown().await;
}

#[tokio::test]
async fn web_identity_on_aws_is_refused_with_a_reason() {
    let toml = r#"
[[aws_profile]]
name = "wi"
source = "web_identity"
role_arn = "arn:aws:iam::123456789012:role/x"
"#;
    let s = setup_with(CloudConfig::aws(), toml, "aws").await;
    let (status, doc) = s.creds("wi").await;
    assert_eq!(status, 503);
    assert_eq!(doc["code"], "identity_unavailable");
    assert!(
        doc["message"].as_str().unwrap().contains("assume_role"),
        "{doc}"
    );
    s.sidecar.shutdown().await;
}

#[tokio::test]
async fn sts_refusal_is_a_502_naming_the_profile() {
    let mut cloud = CloudConfig::aws();
    cloud.aws.as_mut().unwrap().assumable_roles =
        vec!["arn:aws:iam::123456789012:role/other".into()];
    let s = setup_with(cloud, PROFILES, "aws").await;
    let (status, doc) = s.creds("analytics").await;
    assert_eq!(status, 502, "{doc}");
    assert_eq!(doc["code"], "sts_refused");
    let msg = doc["message"].as_str().unwrap();
    assert!(
        msg.contains("analytics") && msg.contains("AccessDenied"),
        "{msg}"
    );
    s.sidecar.shutdown().await;
}

/// Issue 13: an STS 403 without an XML error document (a proxy, a WAF) mapped to
/// 503 "unavailable", so callers retried a refusal.
#[tokio::test]
async fn sts_403_without_an_error_document_is_a_refusal() {
    let s = setup_with(CloudConfig::aws(), PROFILES, "aws").await;
    s.server
        .cloud_faults()
        .add(s2iam_testserver::FaultRule::status("/", 403).method("POST"));
    let (status, doc) = s.creds("analytics").await;
    assert_eq!(status, 502, "{doc}");
    assert_eq!(doc["code"], "sts_refused");
    s.sidecar.shutdown().await;
}

// ---- the container-credentials endpoint's authorization ------------------------------------

#[tokio::test]
async fn tcp_callers_need_the_exact_raw_token() {
    let s = setup().await;
    let meta = std::fs::metadata(s.dir.join("aws-token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(s.token.len(), 64);

    let path = "/v1/aws/credentials/analytics";
    let wrong = "0".repeat(64);
    let bearer = format!("Bearer {}", s.token);
    for auth in [None, Some(""), Some(wrong.as_str()), Some(bearer.as_str())] {
        let (status, doc) = s.tcp_get(path, auth).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(doc["code"], "unauthorized");
        assert!(doc["message"].as_str().unwrap().contains("Authorization"));
        assert!(!doc.to_string().contains(&s.token));
    }
    // Presigning is guarded the same way.
    let (status, _) = s
        .tcp_get(
            "/v1/s3/presign?profile=analytics&bucket=a-analytics-b&key=k",
            None,
        )
        .await;
    assert_eq!(status, 401);
    // Nothing was fetched for refused callers.
    assert!(s.server.cloud().sts_calls().is_empty());
    let (status, doc) = s.tcp_get(path, Some(&s.token)).await;
    assert_eq!(status, 200);
    // Refusals are logged, without the token (or any credential).
    let logged = log_text();
    assert!(logged.contains("refused AWS request on tcp"));
    let mut secrets = secrets_of(&doc);
    secrets.push(s.token.clone());
    assert_not_logged(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
    s.sidecar.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_clear_4xx() {
    let s = setup().await;
    let (status, doc) = s.creds("nope").await;
    assert_eq!(status, 404);
    assert_eq!(doc["code"], "unknown_profile");
    assert!(doc["message"]
        .as_str()
        .unwrap()
        .contains("analytics, writer, admin"));
    let cases = [
        (
            "profile=nope&bucket=a-analytics-b&key=k",
            404,
            "unknown_profile",
        ),
        (
            "profile=analytics&bucket=Bad_Bucket&key=k",
            400,
            "bad_request",
        ),
        (
            "profile=analytics&bucket=a-analytics-b&key=",
            400,
            "bad_request",
        ),
        (
            "profile=analytics&bucket=a-analytics-b&key=a/../b",
            400,
            "bad_request",
        ),
        (
            "profile=analytics&bucket=a-analytics-b&key=a%0Ab",
            400,
            "bad_request",
        ),
        (
            "profile=analytics&bucket=a-analytics-b&key=k&expires=604801",
            400,
            "bad_request",
        ),
        (
            "profile=analytics&bucket=a-analytics-b&key=k&expires=0",
            400,
            "bad_request",
        ),
        (
            "profile=analytics&bucket=a-analytics-b&key=k&expires=soon",
            400,
            "bad_request",
        ),
        // Issue 13: these panicked in Duration::from_secs_f64 (empty reply).
        (
            "profile=nope&bucket=b&key=k&expires=1e30",
            400,
            "bad_request",
        ),
        (
            "profile=analytics&bucket=a-analytics-b&key=k&expires=99999999999999999999h",
            400,
            "bad_request",
        ),
        (
            "profile=analytics&bucket=a-analytics-b&key=k&method=DELETE",
            400,
            "bad_request",
        ),
        (
            "profile=analytics&bucket=a-analytics-b&key=k&color=red",
            400,
            "bad_request",
        ),
        ("profile=analytics&key=k", 400, "bad_request"),
        // Outside the profile's rules: 403.
        ("profile=analytics&bucket=billing&key=k", 403, "forbidden"),
        (
            "profile=analytics&bucket=a-analytics-b&key=k&method=PUT",
            403,
            "forbidden",
        ),
        (
            "profile=writer&bucket=inbox&key=other/k&method=PUT",
            403,
            "forbidden",
        ),
    ];
    for (query, want, code) in cases {
        let (status, doc) = s.presign(query).await;
        assert_eq!(status, want, "{query}: {doc}");
        assert_eq!(doc["code"], code, "{query}");
        assert!(!doc["message"].as_str().unwrap().is_empty());
    }
    // Refused before any credential was fetched.
    assert!(s.server.cloud().sts_calls().is_empty());
    // Longer than the credentials live: 400 naming the limit.
    let (status, doc) = s
        .presign("profile=analytics&bucket=a-analytics-b&key=k&expires=48h")
        .await;
    assert_eq!(status, 400, "{doc}");
    assert!(doc["message"]
        .as_str()
        .unwrap()
        .contains("remaining lifetime"));
    s.sidecar.shutdown().await;
}

#[tokio::test]
async fn presigned_urls_for_allowed_buckets() {
    let s = setup().await;
    let (status, doc) = s
        .presign("profile=writer&bucket=inbox&key=uploads/a%20b.csv&method=PUT&expires=15m")
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["method"], "PUT");
    assert_eq!(doc["expires_in"], 900);
    let url = url::Url::parse(doc["url"].as_str().unwrap()).unwrap();
    assert_eq!(url.path(), "/inbox/uploads/a%20b.csv");
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
    assert_eq!(q["X-Amz-Expires"], "900");
    assert_eq!(q["X-Amz-SignedHeaders"], "host");
    assert_eq!(q["X-Amz-Signature"].len(), 64);
    let (_, creds) = s.creds("writer").await;
    assert!(q["X-Amz-Credential"].starts_with(creds["AccessKeyId"].as_str().unwrap()));
    assert!(q["X-Amz-Credential"].ends_with("/us-east-1/s3/aws4_request"));
    assert_eq!(q["X-Amz-Security-Token"], creds["Token"].as_str().unwrap());
    // Default expiry: one hour, capped by the credentials' lifetime.
    let (status, doc) = s
        .presign("profile=analytics&bucket=acme-analytics-eu&key=r.csv")
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["method"], "GET");
    let e = doc["expires_in"].as_u64().unwrap();
    assert!((3500..=3600).contains(&e), "{e}");
    // A profile without rules (the role decides) presigns any bucket.
    let (status, _) = s.presign("profile=admin&bucket=anything&key=k").await;
    assert_eq!(status, 200);
    s.sidecar.shutdown().await;
}

// ---- expiry and refresh ------------------------------------------------------------------------

#[tokio::test]
async fn credentials_are_refreshed_and_never_served_with_less_than_five_minutes() {
    // The mock issues credentials valid for 302 s: servable (>= 300 s left) for 2 s.
    let mut cloud = CloudConfig::aws();
    cloud.token_ttl = Duration::from_secs(302);
    let s = setup_with(cloud, PROFILES, "aws").await;
    let (status, first) = s.creds("analytics").await;
    assert_eq!(status, 200);
    assert!(remaining_secs(&first) >= 300, "{first}");
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (status, second) = s.creds("analytics").await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["AccessKeyId"], first["AccessKeyId"], "refreshed");
    assert!(remaining_secs(&second) >= 299, "{second}");
    s.sidecar.shutdown().await;

    // Credentials that live less than min_remaining are never handed out.
    let mut cloud = CloudConfig::aws();
    cloud.token_ttl = Duration::from_secs(120);
    let s = setup_with(cloud, PROFILES, "aws").await;
    let (status, doc) = s.creds("analytics").await;
    assert_eq!(status, 503, "{doc}");
    assert_eq!(doc["code"], "credentials_expiring");
    assert!(doc.get("SecretAccessKey").is_none());
    let (status, doc) = s
        .presign("profile=analytics&bucket=a-analytics-b&key=k")
        .await;
    assert_eq!(status, 503, "{doc}");
    s.sidecar.shutdown().await;
}

// ---- the commands -------------------------------------------------------------------------------

/// Runs the s2iam binary with only `env` (plus PATH) in its environment.
fn run_cli(args: &[&str], env: &[(String, String)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_s2iam"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().cloned())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_process_from_the_sidecar_and_in_process() {
    let s = setup().await;
    let socket = s.socket();
    let socket = socket.to_str().unwrap();
    let out = tokio::task::spawn_blocking({
        let socket = socket.to_string();
        move || {
            run_cli(
                &[
                    "credential-process",
                    "--profile",
                    "analytics",
                    "--socket",
                    &socket,
                ],
                &[],
            )
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["Version"], 1);
    for k in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(doc[k].as_str().is_some_and(|v| !v.is_empty()), "{k}");
    }
    let (_, served) = s.creds("analytics").await;
    assert_eq!(
        doc["AccessKeyId"], served["AccessKeyId"],
        "the sidecar's cached credentials"
    );
    assert!(out.stderr.is_empty());

    // An unknown profile: the sidecar's message on stderr, no fallback, exit 1.
    let out = tokio::task::spawn_blocking({
        let socket = socket.to_string();
        move || {
            run_cli(
                &[
                    "credential-process",
                    "--profile",
                    "nope",
                    "--socket",
                    &socket,
                ],
                &[],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("404") && err.contains("unknown AWS profile"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // No sidecar: resolved in-process from the config file, against the mock.
    let config = s.dir.join("config.toml");
    std::fs::write(
        &config,
        format!("[identity]\nprovider = \"aws\"\n{PROFILES}"),
    )
    .unwrap();
    let env: Vec<(String, String)> = s2iam::env::endpoints::mock_env(&s.server.cloud_url());
    let missing = s.dir.join("missing.sock");
    let (missing, config) = (
        missing.to_str().unwrap().to_string(),
        config.to_str().unwrap().to_string(),
    );
    let out = tokio::task::spawn_blocking({
        let (missing, config, env) = (missing.clone(), config.clone(), env.clone());
        move || {
            run_cli(
                &[
                    "credential-process",
                    "--profile",
                    "writer",
                    "--socket",
                    &missing,
                    "--config",
                    &config,
                ],
                &env,
            )
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(doc["AccessKeyId"], served["AccessKeyId"]);
    let mut vended = serde_json::Map::new();
    vended.insert("AccessKeyId".into(), doc["AccessKeyId"].clone());
    vended.insert("SecretAccessKey".into(), doc["SecretAccessKey"].clone());
    vended.insert("Token".into(), doc["SessionToken"].clone());
    assert_eq!(
        caller_arn(&s.server, &Value::Object(vended)).await,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/data/writer-session")
    );

    // `s3 presign`, from the sidecar and in-process.
    let out = tokio::task::spawn_blocking({
        let socket = socket.to_string();
        move || {
            run_cli(
                &[
                    "s3",
                    "presign",
                    "--profile",
                    "writer",
                    "--socket",
                    &socket,
                    "--bucket",
                    "inbox",
                    "--key",
                    "uploads/x",
                    "--method",
                    "PUT",
                    "--expires",
                    "600",
                ],
                &[],
            )
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:9/inbox/uploads/x?"),
        "{url}"
    );
    assert!(url.contains("X-Amz-Expires=600"));
    let out = tokio::task::spawn_blocking(move || {
        run_cli(
            &[
                "s3",
                "presign",
                "--profile",
                "writer",
                "--socket",
                &missing,
                "--config",
                &config,
                "--bucket",
                "elsewhere",
                "--key",
                "k",
            ],
            &env,
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not allow read on bucket \"elsewhere\""),
        "{err}"
    );
    s.sidecar.shutdown().await;
}

#[test]
fn credential_process_without_sidecar_or_config_says_what_to_do() {
    let out = run_cli(
        &[
            "credential-process",
            "--profile",
            "p",
            "--socket",
            "/nonexistent/s2iam.sock",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--config") && err.contains("S2IAM_CONFIG"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

// ---- the AWS SDK for Rust provider (feature aws-sdk) -----------------------------------------

#[cfg(feature = "aws-sdk")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_provider_from_the_sidecar_and_in_process() {
    use aws_credential_types::provider::ProvideCredentials;
    use s2iam_sidecar::sidecar_client::sdk::S2iamCredentialsProvider;
    let s = setup().await;
    let (_, served) = s.creds("analytics").await;
    let p = S2iamCredentialsProvider::sidecar_at("analytics", Some(s.socket()));
    let c = p.provide_credentials().await.unwrap();
    assert_eq!(c.access_key_id(), served["AccessKeyId"].as_str().unwrap());
    assert_eq!(
        c.secret_access_key(),
        served["SecretAccessKey"].as_str().unwrap()
    );
    assert_eq!(c.session_token(), served["Token"].as_str());
    assert!(c.expiry().unwrap() > SystemTime::now() + Duration::from_secs(3000));
    // Debug output of the SDK's credentials and of the provider shows no secret.
    assert!(!format!("{c:?} {p:?}").contains(served["SecretAccessKey"].as_str().unwrap()));

    let err = S2iamCredentialsProvider::sidecar_at("nope", Some(s.socket()))
        .provide_credentials()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("unknown AWS profile"),
        "{err:?}"
    );

    let vendor = s2iam::aws_vending::AwsCredentialVendor::new(
        sidecar_config(PROFILES, &s.dir, "aws").aws,
        std::sync::Arc::new(
            s2iam::Client::new(s2iam::JwtOptions {
                provider_config: Some(provider_config(&s.server)),
                ..Default::default()
            })
            .unwrap(),
        ),
        Default::default(),
    );
    let p = S2iamCredentialsProvider::in_process(vendor, "writer");
    let c = p.provide_credentials().await.unwrap();
    assert!(c.access_key_id().starts_with("ASIA"));
    let again = p.provide_credentials().await.unwrap();
    assert_eq!(again.access_key_id(), c.access_key_id(), "cached");
    s.sidecar.shutdown().await;
}

#[tokio::test]
async fn warm_profiles_are_fetched_at_start_gate_readiness_and_show_in_metrics() {
    let toml = r#"
[[aws_profile]]
name = "warm-one"
source = "assume_role"
role_arn = "arn:aws:iam::123456789012:role/data"
warm = true

[[aws_profile]]
name = "lazy-one"
source = "self"
"#;
    let s = setup_with(CloudConfig::aws(), toml, "aws").await;
    let socket = s.socket();
    let ready = common::eventually(Duration::from_secs(10), async || {
        common::uds_get(&socket, "/readyz").await.0 == 200
    })
    .await;
    assert!(ready, "ready once the warm profile has credentials");
    let calls = s.server.cloud().sts_calls();
    assert_eq!(
        calls.iter().filter(|c| c.action == "AssumeRole").count(),
        1,
        "the warm profile was fetched at start, before any request"
    );
    let (_, metrics) = common::uds_get(&socket, "/metrics").await;
    assert!(
        metrics.contains("s2iam_aws_credentials_seconds_to_expiry{profile=\"warm-one\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("lazy-one"),
        "lazy profiles are fetched on demand"
    );
    assert!(metrics.contains("s2iam_aws_sts_calls_total 1"), "{metrics}");
    s.sidecar.shutdown().await;
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_warm_profile_that_fails_keeps_the_sidecar_unready() {
    let mut cloud = CloudConfig::aws();
    if let Some(aws) = cloud.aws.as_mut() {
        aws.assumable_roles = vec!["arn:aws:iam::123456789012:role/other".into()];
    }
    let toml = r#"
[[aws_profile]]
name = "denied"
source = "assume_role"
role_arn = "arn:aws:iam::123456789012:role/data"
warm = true
"#;
    let s = setup_with(cloud, toml, "aws").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = common::uds_get(&s.socket(), "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("AWS profile denied not warm"), "{body}");
    s.sidecar.shutdown().await;
    s.server.shutdown().await;
}
