//! The default command (`s2iam [--jwt-type ...]`): a token printed as text, env or
//! JSON, the auth service from flags or the environment, `--validate`, `--timeout`,
//! and hostile auth answers.

use crate::common::{fixed_auth, mocks, sub_of, unsigned_jwt};
use crate::{run, run_ok, s2iam, stderr, stdout, text, with_server};
use s2iam_testserver::{CloudConfig, FaultRule};
use std::time::{Duration, Instant};

#[tokio::test]
async fn database_token_is_printed_alone_on_stdout() {
    let server = mocks(CloudConfig::gcp()).await;
    let mut cmd = s2iam(&server);
    cmd.args(["--workspace-group-id", "wg-cli"]);
    with_server(&mut cmd, &server);
    let out = run_ok(cmd).await;
    let text = stdout(&out);
    let jwt = text.trim_end_matches('\n');
    assert_eq!(text.lines().count(), 1);
    assert_eq!(
        sub_of(jwt).as_deref(),
        Some("s2iam-test@s2iam-test-project.iam.gserviceaccount.com")
    );
    let record = &server.auth().records()[0];
    assert_eq!(record.path, "/auth/iam/database");
    assert_eq!(record.workspace_group_id.as_deref(), Some("wg-cli"));
    assert!(
        stderr(&out).is_empty(),
        "quiet by default: {}",
        stderr(&out)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn env_output_for_eval_and_status_on_failure() {
    let server = mocks(CloudConfig::gcp()).await;
    let mut cmd = s2iam(&server);
    cmd.args([
        "--jwt-type",
        "api",
        "--env-name",
        "TOKEN",
        "--env-status",
        "STATUS",
    ]);
    with_server(&mut cmd, &server);
    let out = run_ok(cmd).await;
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], "STATUS=0");
    assert!(lines[1].starts_with("TOKEN=ey"), "{text}");

    server.auth().update(|c| c.fail_verification = true);
    let mut cmd = s2iam(&server);
    cmd.args([
        "--jwt-type",
        "api",
        "--env-name",
        "TOKEN",
        "--env-status",
        "STATUS",
    ]);
    with_server(&mut cmd, &server);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "STATUS=1\n");
    let err = stderr(&out);
    assert!(err.starts_with("Error: ") && err.contains("401"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn json_output_has_token_expiry_provider_and_identity() {
    let server = mocks(CloudConfig::azure()).await;
    let mut cmd = s2iam(&server);
    cmd.args(["--jwt-type", "api", "--json"]);
    with_server(&mut cmd, &server);
    let out = run_ok(cmd).await;
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["provider"], "azure");
    assert_eq!(doc["jwt_type"], "api");
    assert!(doc["jwt"].as_str().unwrap().starts_with("ey"));
    assert!(doc["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(doc["identity"]["identifier"], doc["sub"]);
    server.shutdown().await;
}

#[tokio::test]
async fn aws_with_assume_role_gets_the_roles_identity() {
    let server = mocks(CloudConfig::aws()).await;
    let role = "arn:aws:iam::123456789012:role/analytics";
    let mut cmd = s2iam(&server);
    cmd.args([
        "--jwt-type",
        "api",
        "--provider",
        "aws",
        "--assume-role",
        role,
        "--print-sub",
    ]);
    with_server(&mut cmd, &server);
    let out = run_ok(cmd).await;
    assert_eq!(
        stderr(&out).trim(),
        role,
        "--print-sub prints the verified identity"
    );
    assert_eq!(sub_of(stdout(&out).trim()).as_deref(), Some(role));
    let calls = server.cloud().sts_calls();
    let assume = calls
        .iter()
        .find(|c| c.action == "AssumeRole")
        .expect("AssumeRole called");
    assert_eq!(assume.role_session_name.as_deref(), Some("s2iam-session"));
    server.shutdown().await;
}

#[tokio::test]
async fn server_url_from_the_environment() {
    let server = mocks(CloudConfig::gcp()).await;
    let mut cmd = s2iam(&server);
    cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template());
    cmd.args(["--jwt-type", "api", "--allow-http"]);
    run_ok(cmd).await;
    assert_eq!(server.auth().records().len(), 1);
    server.shutdown().await;
}

/// The sidecar honours S2IAM_ALLOW_HTTP; so does the CLI now.
#[tokio::test]
async fn the_cli_honours_s2iam_allow_http() {
    let server = mocks(CloudConfig::gcp()).await;
    let mut cmd = s2iam(&server);
    cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1")
        .args(["--jwt-type", "api"]);
    let out = run_ok(cmd).await;
    assert!(text(&out.stdout).starts_with("ey"));
    server.shutdown().await;
}

/// `--json` names the token `token`, as the sidecar does; `jwt` stays for the
/// scripts that read it.
#[tokio::test]
async fn json_names_the_token_as_the_sidecar_does() {
    let server = mocks(CloudConfig::gcp()).await;
    let mut cmd = s2iam(&server);
    cmd.args([
        "--jwt-type",
        "api",
        "--json",
        "--allow-http",
        "--server-url",
        &server.exchange_url_template(),
    ]);
    let out = run_ok(cmd).await;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["token"].as_str().unwrap().starts_with("ey"));
    assert_eq!(doc["token"], doc["jwt"]);
    server.shutdown().await;
}

/// Issue 23 (11): the CLI refuses a workspace group ID the sidecar would
/// refuse, before any request.
#[tokio::test]
async fn the_cli_refuses_a_workspace_group_id_the_sidecar_refuses() {
    let server = mocks(CloudConfig::gcp()).await;
    let mut cmd = s2iam(&server);
    cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1")
        .args(["--workspace-group-id", "bad group!"]);
    let out = run(cmd).await;
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("invalid workspace group id"), "{err}");
    assert!(out.stdout.is_empty());
    assert!(server.auth().records().is_empty(), "no exchange was tried");
    server.shutdown().await;
}

#[tokio::test]
async fn timeout_bounds_a_blackholed_auth_service() {
    let server = mocks(CloudConfig::gcp()).await;
    server.auth_faults().add(FaultRule::blackhole("/auth/iam"));
    let mut cmd = s2iam(&server);
    cmd.args(["--jwt-type", "api", "--timeout", "1s"]);
    with_server(&mut cmd, &server);
    let started = Instant::now();
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("did not answer within"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn validate_checks_the_token_against_the_jwks() {
    let server = mocks(CloudConfig::gcp()).await;
    let mut cmd = s2iam(&server);
    cmd.args(["--jwt-type", "api", "--validate"]);
    with_server(&mut cmd, &server);
    run_ok(cmd).await;
    assert_eq!(
        server
            .auth_requests()
            .count("/auth/oidc/op/Customer/.well-known/jwks.json"),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_loopback_auth_server_is_reached_without_the_proxy() {
    let server = mocks(CloudConfig::aws()).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cmd = s2iam(&server);
    cmd.args(["--jwt-type", "api"])
        .env("HTTP_PROXY", format!("http://{dead}"))
        .env("HTTPS_PROXY", format!("http://{dead}"))
        .env("ALL_PROXY", format!("http://{dead}"));
    with_server(&mut cmd, &server);
    run_ok(cmd).await;
    server.shutdown().await;
}

/// Issue 13: `exp = u64::MAX` with no `expires_at` panicked the CLI; an expired
/// or non-JWT answer was printed as if it were a token.
#[tokio::test]
async fn hostile_auth_answers_are_clear_errors_not_panics() {
    let server = mocks(CloudConfig::gcp()).await;
    let cases = [
        (
            format!(
                r#"{{"jwt":"{}"}}"#,
                unsigned_jwt(r#"{"exp":18446744073709551615}"#)
            ),
            "is not a valid time",
        ),
        (
            format!(r#"{{"jwt":"{}"}}"#, unsigned_jwt(r#"{"exp":1000}"#)),
            "already expired",
        ),
        (r#"{"jwt":"hello"}"#.to_string(), "three dot-separated"),
    ];
    for (body, want) in cases {
        let url = fixed_auth(body.clone()).await;
        let mut cmd = s2iam(&server);
        cmd.args(["--jwt-type", "api", "--server-url", &url, "--allow-http"]);
        let out = run(cmd).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{body}: {err}");
        assert!(
            err.contains(want) && !err.contains("panicked"),
            "{body}: {err}"
        );
        assert!(stdout(&out).is_empty(), "nothing printed as a token");
    }
    server.shutdown().await;
}
