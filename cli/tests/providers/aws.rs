//! The AWS provider against the mock cloud (IMDS, STS, ECS and EKS Pod Identity
//! endpoints) on loopback: every credential source, assume-role, the probe, and the
//! ways each of them fails.

use crate::common::{exchange_api_token, mocks as start, refused_url};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use s2iam::env::{Env, Fs};
use s2iam::provider::aws::{AwsProvider, CredentialSource};
use s2iam::provider::ProbeError;
use s2iam::{CloudProvider, IdentityRequest, ProviderConfig, ProviderError};
use s2iam_testserver::{AwsIdentity, CloudConfig, FaultRule, TestServer};

const ACCOUNT: &str = "123456789012";
const INSTANCE_ROLE: &str = "s2iam-test-role";
const INSTANCE_ID: &str = "i-0123456789abcdef0";

/// A config pointing every endpoint at the mock, plus `extra` variables and `files`.
fn config(
    server: &TestServer,
    extra: &[(&str, &str)],
    files: Vec<(String, String)>,
) -> ProviderConfig {
    config_with_fs(server, extra, Fs::from_files(files))
}

fn config_with_fs(server: &TestServer, extra: &[(&str, &str)], fs: Fs) -> ProviderConfig {
    let env = s2iam::env::endpoints::mock_env(&server.cloud_url())
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ProviderConfig::with_env(Env::from_pairs(env), fs)
}

fn header(headers: &s2iam::IdentityHeaders, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("header {name} missing"))
        .expose()
        .to_string()
}

fn sts_actions(server: &TestServer) -> Vec<String> {
    server
        .cloud()
        .sts_calls()
        .into_iter()
        .map(|c| c.action)
        .collect()
}

fn instance_arn() -> String {
    format!("arn:aws:sts::{ACCOUNT}:assumed-role/{INSTANCE_ROLE}/{INSTANCE_ID}")
}

// ---- credential sources -------------------------------------------------------------

#[tokio::test]
async fn environment_keys_are_turned_into_session_credentials() {
    let server = start(CloudConfig::aws()).await;
    let user = server.cloud().user_key();
    let cfg = config(
        &server,
        &[
            ("AWS_ACCESS_KEY_ID", &user.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &user.secret_access_key),
        ],
        vec![],
    );
    let (headers, id) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();

    // Only temporary credentials leave the process.
    let key = header(&headers, "X-AWS-Access-Key-ID");
    assert!(key.starts_with("ASIA"), "{key}");
    assert_ne!(key, user.access_key_id);
    assert_ne!(
        header(&headers, "X-AWS-Secret-Access-Key"),
        user.secret_access_key
    );
    assert!(!header(&headers, "X-AWS-Session-Token").is_empty());
    assert_eq!(header(&headers, "X-Cloud-Provider"), "aws");

    assert_eq!(id.provider, CloudProvider::Aws);
    assert_eq!(id.identifier, user.arn);
    assert_eq!(id.account_id, ACCOUNT);
    assert_eq!(id.resource_type, "user");
    assert_eq!(id.region, "");
    assert_eq!(id.additional_claims["UserId"], user.user_id);
    assert!(!id.additional_claims.contains_key("AssumedRoleArn"));

    assert_eq!(
        sts_actions(&server),
        ["GetSessionToken", "GetCallerIdentity"]
    );
    let calls = server.cloud().sts_calls();
    assert_eq!(calls[1].caller_access_key_id.as_deref(), Some(key.as_str()));
    // The environment source won: IMDS was never asked.
    assert_eq!(server.cloud_requests().count("/latest"), 0);
}

#[tokio::test]
async fn environment_session_credentials_are_used_as_they_are() {
    let server = start(CloudConfig::aws()).await;
    let session = server.cloud().issue_session(
        &format!("arn:aws:sts::{ACCOUNT}:assumed-role/dev/me"),
        "AROAEXAMPLE:me",
        ACCOUNT,
    );
    let cfg = config(
        &server,
        &[
            ("AWS_ACCESS_KEY_ID", &session.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &session.secret_access_key),
            (
                "AWS_SESSION_TOKEN",
                session.session_token.as_deref().unwrap(),
            ),
        ],
        vec![],
    );
    let (headers, id) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert_eq!(
        header(&headers, "X-AWS-Access-Key-ID"),
        session.access_key_id
    );
    assert_eq!(id.resource_type, "assumed-role");
    assert_eq!(id.additional_claims["RoleSessionName"], "me");
    assert_eq!(sts_actions(&server), ["GetCallerIdentity"]);
}

#[tokio::test]
async fn web_identity_token_file_is_exchanged_with_sts() {
    let server = start(CloudConfig::aws()).await;
    let token_path = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";
    let token = server
        .cloud()
        .mint_eks_web_identity_token("system:serviceaccount:default:app")
        .unwrap();
    let role = format!("arn:aws:iam::{ACCOUNT}:role/irsa-app");
    let cfg = config(
        &server,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path),
            ("AWS_ROLE_ARN", &role),
            ("AWS_ROLE_SESSION_NAME", "app-pod"),
        ],
        vec![(token_path.to_string(), format!("{token}\n"))],
    );
    assert_eq!(
        AwsProvider::fast_detect(&cfg).as_deref(),
        Some("AWS_WEB_IDENTITY_TOKEN_FILE is set")
    );
    let session = AwsProvider::default()
        .session(&cfg, "ignored")
        .await
        .unwrap();
    assert_eq!(session.source, CredentialSource::WebIdentity);
    assert_eq!(session.region, "us-east-1");

    let (headers, id) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert_eq!(
        id.identifier,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/irsa-app/app-pod")
    );
    assert_eq!(id.additional_claims["RoleSessionName"], "app-pod");
    assert_eq!(id.additional_claims["AssumedRoleArn"], id.identifier);
    assert!(header(&headers, "X-AWS-Access-Key-ID").starts_with("ASIA"));
    let calls = server.cloud().sts_calls();
    assert_eq!(calls[0].action, "AssumeRoleWithWebIdentity");
    assert_eq!(
        calls[0].web_identity_subject.as_deref(),
        Some("system:serviceaccount:default:app")
    );
    assert_eq!(calls[0].role_arn.as_deref(), Some(role.as_str()));
}

#[tokio::test]
async fn web_identity_with_an_unreadable_or_forged_token_fails_without_falling_through() {
    let server = start(CloudConfig::aws()).await;
    let role = format!("arn:aws:iam::{ACCOUNT}:role/irsa-app");
    let missing = config(
        &server,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nowhere/token"),
            ("AWS_ROLE_ARN", &role),
        ],
        vec![],
    );
    let err = AwsProvider::default()
        .identity(&missing, &IdentityRequest::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NoIdentity { .. }), "{err}");
    assert!(err.to_string().contains("/nowhere/token"), "{err}");

    let forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    let cfg = config(
        &server,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ROLE_ARN", &role),
        ],
        vec![("/t".to_string(), forged.to_string())],
    );
    let err = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("AssumeRoleWithWebIdentity"), "{err}");
    assert!(!err.contains(forged), "the token leaked: {err}");
    // The instance role was not used instead.
    assert_eq!(server.cloud_requests().count("/latest"), 0);
}

#[tokio::test]
async fn ecs_relative_uri() {
    let server = start(CloudConfig::aws()).await;
    let cfg = config(
        &server,
        &[(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/task-1",
        )],
        vec![],
    );
    let (headers, id) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert!(
        id.identifier.starts_with(&format!(
            "arn:aws:sts::{ACCOUNT}:assumed-role/{INSTANCE_ROLE}/"
        )),
        "{}",
        id.identifier
    );
    assert!(header(&headers, "X-AWS-Session-Token").len() > 20);
    assert_eq!(server.cloud_requests().count("/v2/credentials/task-1"), 1);
    assert_eq!(server.cloud_requests().count("/latest"), 0);
    assert_eq!(sts_actions(&server), ["GetCallerIdentity"]);
}

#[tokio::test]
async fn eks_pod_identity_full_uri_with_token_file() {
    let server = start(CloudConfig::aws()).await;
    let token = AwsIdentity::default().container_auth_token;
    let token_path =
        "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token";
    let full_uri = format!("{}/v1/credentials", server.cloud_url());
    let cfg = config(
        &server,
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full_uri),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_path),
        ],
        vec![(token_path.to_string(), format!("{token}\n"))],
    );
    let creds = AwsProvider::default().credentials(&cfg).await.unwrap();
    assert!(creds.is_temporary());
    assert_eq!(creds.account_id.as_deref(), Some(ACCOUNT));
    assert!(creds.expiration.is_some());
    let (_, id) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert!(
        id.identifier.contains(":assumed-role/"),
        "{}",
        id.identifier
    );
    assert_eq!(server.cloud_requests().count("/v1/credentials"), 2);
}

#[tokio::test]
async fn eks_pod_identity_with_a_wrong_token_fails_and_does_not_fall_back_to_imds() {
    let server = start(CloudConfig::aws()).await;
    let full_uri = format!("{}/v1/credentials", server.cloud_url());
    let cfg = config(
        &server,
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full_uri),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "not-the-pod-token"),
        ],
        vec![],
    );
    let err = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProviderError::NoIdentity { .. }), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(text.contains("InvalidTokenException"), "{text}");
    assert!(!text.contains("not-the-pod-token"), "{text}");
    assert_eq!(server.cloud_requests().count("/latest"), 0);

    // No token at all: the error says which variable is missing.
    let cfg = config(
        &server,
        &[("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full_uri)],
        vec![],
    );
    let text = AwsProvider::default()
        .credentials(&cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
        "{text}"
    );
}

#[tokio::test]
async fn container_token_file_is_reread_on_every_call() {
    let server = start(CloudConfig::aws()).await;
    let dir = std::env::temp_dir().join(format!("s2iam-aws-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file: PathBuf = dir.join("eks-pod-identity-token");
    std::fs::write(&token_file, "stale-token").unwrap();
    let full_uri = format!("{}/v1/credentials", server.cloud_url());
    let cfg = config_with_fs(
        &server,
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &full_uri),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
        ],
        Fs::real(),
    );
    assert!(AwsProvider::default().credentials(&cfg).await.is_err());
    std::fs::write(&token_file, AwsIdentity::default().container_auth_token).unwrap();
    assert!(AwsProvider::default().credentials(&cfg).await.is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn full_uri_over_plain_http_to_a_foreign_host_is_refused_before_any_request() {
    let server = start(CloudConfig::aws()).await;
    let cfg = config(
        &server,
        &[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://198.51.100.7/v1/credentials",
        )],
        vec![],
    );
    let err = AwsProvider::default()
        .credentials(&cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("plain http is only allowed"), "{err}");
    assert!(server.cloud_requests().entries().is_empty());
}

#[tokio::test]
async fn shared_credentials_file_default_and_named_profile() {
    let server = start(CloudConfig::aws()).await;
    let user = server.cloud().user_key();
    let file = format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\nregion = eu-west-1\n\
         [other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = nope\n\
         [ci]\n# comment\naws_access_key_id={}\naws_secret_access_key={}\noutput=json\n",
        user.access_key_id, user.secret_access_key, user.access_key_id, user.secret_access_key
    );
    let files = || vec![("/home/test/.aws/credentials".to_string(), file.clone())];

    let cfg = config(&server, &[("HOME", "/home/test")], files());
    let session = AwsProvider::default().session(&cfg, "x").await.unwrap();
    assert_eq!(session.source, CredentialSource::SharedConfig);
    let (headers, id) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert_eq!(id.identifier, user.arn);
    assert!(header(&headers, "X-AWS-Access-Key-ID").starts_with("ASIA"));

    let cfg = config(
        &server,
        &[("HOME", "/home/test"), ("AWS_PROFILE", "ci")],
        files(),
    );
    let (_, id) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert_eq!(id.identifier, user.arn);

    let cfg = config(
        &server,
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", "/etc/creds"),
            ("AWS_PROFILE", "missing"),
        ],
        vec![("/etc/creds".to_string(), file.clone())],
    );
    let err = AwsProvider::default().credentials(&cfg).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("AWS_PROFILE names profile `missing`"),
        "{err}"
    );
}

#[tokio::test]
async fn imds_v2_instance_role() {
    let server = start(CloudConfig::aws()).await;
    let cfg = config(&server, &[], vec![]);
    let session = AwsProvider::default().session(&cfg, "x").await.unwrap();
    assert_eq!(session.source, CredentialSource::InstanceMetadata);
    assert_eq!(session.region, "us-east-1");

    let (headers, id) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert_eq!(id.identifier, instance_arn());
    assert_eq!(id.resource_type, "assumed-role");
    assert_eq!(id.additional_claims["RoleSessionName"], INSTANCE_ID);
    assert!(header(&headers, "X-AWS-Access-Key-ID").starts_with("ASIA"));
    let puts: Vec<_> = server
        .cloud_requests()
        .entries()
        .into_iter()
        .filter(|r| r.path == "/latest/api/token")
        .collect();
    assert!(!puts.is_empty());
    assert!(puts.iter().all(|r| r.method == "PUT" && r.status == 200));
    // Session credentials are presented as they are: no GetSessionToken.
    assert!(!sts_actions(&server).contains(&"GetSessionToken".to_string()));
}

#[tokio::test]
async fn imds_region_is_used_when_the_environment_names_none() {
    let server = start(CloudConfig {
        aws: Some(AwsIdentity {
            region: "eu-west-1".into(),
            availability_zone: "eu-west-1b".into(),
            ..AwsIdentity::default()
        }),
        ..CloudConfig::none()
    })
    .await;
    let session = AwsProvider::default()
        .session(&config(&server, &[], vec![]), "x")
        .await
        .unwrap();
    assert_eq!(session.region, "eu-west-1");
    let session = AwsProvider::default()
        .session(
            &config(&server, &[("AWS_REGION", "ap-south-1")], vec![]),
            "x",
        )
        .await
        .unwrap();
    assert_eq!(session.region, "ap-south-1");
}

#[tokio::test]
async fn imds_v1_fallback_when_the_token_put_is_404() {
    let server = start(CloudConfig::aws()).await;
    server
        .cloud_faults()
        .add(FaultRule::status("/latest/api/token", 404).method("PUT"));
    let cfg = config(&server, &[], vec![]);
    let (_, id) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert_eq!(id.identifier, instance_arn());
    let seen = server.cloud_requests().entries();
    assert!(seen
        .iter()
        .any(|r| r.path == "/latest/api/token" && r.status == 404));
    assert!(seen
        .iter()
        .any(|r| r.path == "/latest/meta-data/iam/security-credentials/" && r.status == 200));
}

#[tokio::test]
async fn imds_throttling_is_retried() {
    let server = start(CloudConfig::aws()).await;
    server
        .cloud_faults()
        .add(FaultRule::status("/latest/meta-data/iam", 429).times(2));
    let cfg = config(&server, &[], vec![]);
    let (_, id) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert_eq!(id.identifier, instance_arn());
}

#[tokio::test]
async fn no_role_attached_is_no_identity() {
    let server = start(CloudConfig {
        aws: Some(AwsIdentity {
            role_name: None,
            ..AwsIdentity::default()
        }),
        ..CloudConfig::none()
    })
    .await;
    let cfg = config(&server, &[], vec![]);
    // The probe still finds AWS: detected, but no identity.
    AwsProvider::probe(&cfg).await.unwrap();
    let err = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProviderError::NoIdentity { .. }), "{text}");
    assert!(text.contains("no IAM role attached"), "{text}");
    // Every source is listed with its reason.
    for source in [
        "environment keys: AWS_ACCESS_KEY_ID is not set",
        "web identity",
        "container credentials",
        "shared config profile",
        "instance metadata",
    ] {
        assert!(text.contains(source), "{source:?} missing from {text}");
    }
}

#[tokio::test]
async fn token_put_timeout_explains_the_hop_limit() {
    let server = start(CloudConfig {
        aws: Some(AwsIdentity {
            imds_v1: false,
            ..AwsIdentity::default()
        }),
        ..CloudConfig::none()
    })
    .await;
    server
        .cloud_faults()
        .add(FaultRule::blackhole("/latest/api/token"));
    let cfg = config(&server, &[], vec![]);

    let started = Instant::now();
    let err = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for needle in [
        "IMDSv2 token request",
        "accepts connections",
        "hop limit",
        "--http-put-response-hop-limit 2",
        "IRSA",
        "EKS Pod Identity",
        "HttpTokens=required",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from {err}");
    }

    match AwsProvider::probe(&cfg).await.unwrap_err() {
        ProbeError::Unreachable { url, reason } => {
            assert!(url.ends_with("/latest/api/token"), "{url}");
            assert!(reason.contains("hop limit"), "{reason}");
        }
        other => panic!("expected the hop-limit diagnosis, got {other:?}"),
    }
}

#[tokio::test]
async fn token_put_timeout_with_imds_v1_allowed_still_works() {
    let server = start(CloudConfig::aws()).await;
    server
        .cloud_faults()
        .add(FaultRule::blackhole("/latest/api/token"));
    let cfg = config(&server, &[], vec![]);
    let (_, id) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert_eq!(id.identifier, instance_arn());
}

// ---- assume-role --------------------------------------------------------------------

#[tokio::test]
async fn assume_role_with_the_instance_role() {
    let server = start(CloudConfig::aws()).await;
    let cfg = config(&server, &[], vec![]);
    let base = AwsProvider::default();
    let target = format!("arn:aws:iam::{ACCOUNT}:role/target");
    let assumed = base.assume_role(&target).unwrap();
    assert_eq!(base.role_arn(), None, "assume_role must not mutate");

    let req = IdentityRequest {
        role_session_name: "my-session".into(),
        ..IdentityRequest::default()
    };
    let (headers, id) = assumed.identity(&cfg, &req).await.unwrap();
    assert_eq!(
        id.identifier,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/target/my-session")
    );
    assert_eq!(id.additional_claims["RoleSessionName"], "my-session");
    let calls = server.cloud().sts_calls();
    let assume = calls.iter().find(|c| c.action == "AssumeRole").unwrap();
    assert_eq!(assume.role_arn.as_deref(), Some(target.as_str()));
    assert_eq!(assume.role_session_name.as_deref(), Some("my-session"));
    assert_eq!(assume.caller_arn.as_deref(), Some(instance_arn().as_str()));
    assert_eq!(
        assume.issued_access_key_id.as_deref(),
        Some(header(&headers, "X-AWS-Access-Key-ID").as_str())
    );
    // The default session name is the reference's.
    let (_, id) = assumed
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    assert!(
        id.identifier.ends_with("/target/s2iam-session"),
        "{}",
        id.identifier
    );
}

#[tokio::test]
async fn assume_role_with_long_lived_keys_skips_get_session_token() {
    let server = start(CloudConfig::aws()).await;
    let user = server.cloud().user_key();
    let cfg = config(
        &server,
        &[
            ("AWS_ACCESS_KEY_ID", &user.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &user.secret_access_key),
        ],
        vec![],
    );
    let p = AwsProvider::default()
        .assume_role(&format!("arn:aws:iam::{ACCOUNT}:role/target"))
        .unwrap();
    let (headers, _) = p.identity(&cfg, &IdentityRequest::default()).await.unwrap();
    assert!(headers.get("X-AWS-Session-Token").is_some());
    assert_eq!(sts_actions(&server), ["AssumeRole", "GetCallerIdentity"]);
}

#[tokio::test]
async fn assume_role_refused_by_the_trust_policy() {
    let server = start(CloudConfig {
        aws: Some(AwsIdentity {
            assumable_roles: vec![format!("arn:aws:iam::{ACCOUNT}:role/allowed")],
            ..AwsIdentity::default()
        }),
        ..CloudConfig::none()
    })
    .await;
    let cfg = config(&server, &[], vec![]);
    let denied = AwsProvider::default()
        .assume_role(&format!("arn:aws:iam::{ACCOUNT}:role/forbidden"))
        .unwrap();
    let err = denied
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProviderError::Upstream { .. }), "{text}");
    assert!(text.contains("AssumeRole"), "{text}");
    assert!(text.contains("AccessDenied"), "{text}");

    let allowed = AwsProvider::default()
        .assume_role(&format!("arn:aws:iam::{ACCOUNT}:role/allowed"))
        .unwrap();
    allowed
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
}

#[test]
fn assume_role_rejects_what_is_not_a_role_arn() {
    let p = s2iam::Provider::Aws(AwsProvider::default());
    for bad in [
        "my-role",
        "arn:aws:iam::123:role/x",
        "arn:aws:iam::123456789012:user/x",
        "arn:aws:sts::123456789012:assumed-role/x/y",
    ] {
        match p.assume_role(bad) {
            Err(ProviderError::InvalidRole { provider, role, .. }) => {
                assert_eq!(provider, CloudProvider::Aws);
                assert_eq!(role, bad);
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

// ---- STS failures and secrecy -------------------------------------------------------

#[tokio::test]
async fn rejected_signature_is_a_clear_error_without_the_secret() {
    let server = start(CloudConfig::aws()).await;
    let user = server.cloud().user_key();
    let wrong = "wrongwrongwrongwrongwrongwrongwrongwrong";
    let cfg = config(
        &server,
        &[
            ("AWS_ACCESS_KEY_ID", &user.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", wrong),
        ],
        vec![],
    );
    let err = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProviderError::Upstream { .. }), "{text}");
    assert!(text.contains("STS GetSessionToken failed"), "{text}");
    assert_eq!(text.matches("GetSessionToken").count(), 1, "{text}");
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!text.contains(&user.secret_access_key), "{text}");
    assert!(!format!("{err:?}").contains(wrong));
}

#[tokio::test]
async fn sts_unreachable_is_an_upstream_error_naming_the_endpoint() {
    let server = start(CloudConfig::aws()).await;
    let sts = refused_url();
    let cfg = config(&server, &[("AWS_ENDPOINT_URL_STS", &sts)], vec![]);
    let err = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("GetCallerIdentity"), "{err}");
    assert!(err.contains("refused"), "{err}");
}

#[tokio::test]
async fn credentials_debug_and_headers_debug_show_no_secret() {
    let server = start(CloudConfig::aws()).await;
    let cfg = config(&server, &[], vec![]);
    let creds = AwsProvider::default().credentials(&cfg).await.unwrap();
    let shown = format!("{creds:?}");
    assert!(shown.contains(&creds.access_key_id));
    assert!(!shown.contains(creds.secret.expose()), "{shown}");
    let token = creds.session_token.as_ref().unwrap().expose();
    assert!(!shown.contains(token), "{shown}");

    let (headers, _) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    let shown = format!("{headers:?}");
    assert!(!shown.contains(&header(&headers, "X-AWS-Secret-Access-Key")));
}

// ---- probe --------------------------------------------------------------------------

#[tokio::test]
async fn probe_finds_aws() {
    let server = start(CloudConfig::aws()).await;
    AwsProvider::probe(&config(&server, &[], vec![]))
        .await
        .unwrap();
    assert_eq!(
        server
            .cloud_requests()
            .count("/latest/meta-data/instance-id"),
        1
    );
}

#[tokio::test]
async fn probe_says_no_on_another_cloud() {
    let server = start(CloudConfig::gcp()).await;
    let err = AwsProvider::probe(&config(&server, &[], vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::NotThisCloud(_)), "{err:?}");
}

#[tokio::test]
async fn probe_refused_fails_fast() {
    let cfg = ProviderConfig::with_env(
        Env::from_pairs(s2iam::env::endpoints::mock_env(&refused_url())),
        Fs::from_files::<&str, &str>([]),
    );
    let started = Instant::now();
    let err = AwsProvider::probe(&cfg).await.unwrap_err();
    assert!(matches!(err, ProbeError::Refused { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn probe_blackhole_respects_the_timeout() {
    let server = start(CloudConfig::aws()).await;
    server.cloud_faults().add(FaultRule::blackhole("/latest"));
    let started = Instant::now();
    let err = AwsProvider::probe(&config(&server, &[], vec![]))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    // Token PUT (1 s), connect check, IMDSv1 GET (1 s).
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(
        matches!(
            err,
            ProbeError::Unreachable { .. } | ProbeError::Timeout { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn probe_retries_throttling() {
    let server = start(CloudConfig::aws()).await;
    server
        .cloud_faults()
        .add(FaultRule::status("/latest", 429).times(2));
    AwsProvider::probe(&config(&server, &[], vec![]))
        .await
        .unwrap();
    assert!(server.cloud_requests().count("/latest") >= 4);
}

#[tokio::test]
async fn detection_picks_aws_from_the_metadata_service() {
    let server = start(CloudConfig::aws()).await;
    let cfg = config(&server, &[], vec![]);
    let detection = s2iam::detect_provider(&cfg, &s2iam::DetectOptions::default())
        .await
        .unwrap();
    assert_eq!(detection.provider.kind(), CloudProvider::Aws);
}

// ---- end to end ---------------------------------------------------------------------

#[tokio::test]
async fn headers_are_accepted_by_the_auth_service() {
    let server = start(CloudConfig::aws()).await;
    let cfg = config(&server, &[], vec![]);
    let (headers, identity) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap();
    let token = exchange_api_token(&server, &headers, &identity)
        .await
        .unwrap();
    assert_eq!(token.claims.provider.as_deref(), Some("aws"));
    let sub = token.claims.sub.clone().unwrap_or_default();
    let role = format!("arn:aws:iam::{ACCOUNT}:role/{INSTANCE_ROLE}");
    assert!(sub == role || sub == instance_arn(), "{sub}");
    // The auth service checked the presented keys with STS itself.
    let presented = header(&headers, "X-AWS-Access-Key-ID");
    let verifications = server
        .cloud()
        .sts_calls()
        .into_iter()
        .filter(|c| {
            c.action == "GetCallerIdentity"
                && c.caller_access_key_id.as_deref() == Some(presented.as_str())
        })
        .count();
    assert_eq!(verifications, 2, "ours and the auth service's");
}
