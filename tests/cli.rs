//! The `s2iam` binary as a drop-in for the reference CLI: flags, output formats,
//! exit codes and subcommands, against the mock cloud and auth service.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{mocks, sub_of};
use s2iam_testserver::{CloudConfig, FaultRule, TestServer};

/// The binary with a clean environment pointing every endpoint at `server`.
fn s2iam(server: &TestServer) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s2iam"));
    cmd.env_clear();
    for (k, v) in s2iam::env::endpoints::mock_env(&server.cloud_url()) {
        cmd.env(k, v);
    }
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"))
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn with_server(cmd: &mut Command, server: &TestServer) {
    cmd.args([
        "--server-url",
        &server.exchange_url_template(),
        "--allow-http",
    ]);
}

#[tokio::test]
async fn database_token_is_printed_alone_on_stdout() {
    let server = mocks(CloudConfig::gcp()).await;
    let mut cmd = s2iam(&server);
    cmd.args(["--workspace-group-id", "wg-cli"]);
    with_server(&mut cmd, &server);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
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
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
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
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
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
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
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
async fn go_style_single_dash_flags_work() {
    let server = mocks(CloudConfig::gcp()).await;
    let mut cmd = s2iam(&server);
    cmd.args([
        "-jwt-type",
        "api",
        "-server-url",
        &server.exchange_url_template(),
        "-allow-http",
    ]);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    server.shutdown().await;
}

#[tokio::test]
async fn server_url_from_the_environment() {
    let server = mocks(CloudConfig::gcp()).await;
    let mut cmd = s2iam(&server);
    cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template());
    cmd.args(["--jwt-type", "api", "--allow-http"]);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.auth().records().len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_command_lines_fail_before_any_request() {
    let server = mocks(CloudConfig::gcp()).await;
    let tmpl = server.exchange_url_template();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["--allow-http", "--server-url", &tmpl],
            1,
            "--workspace-group-id is required",
        ),
        (
            vec!["--jwt-type", "token", "--allow-http", "--server-url", &tmpl],
            1,
            "invalid JWT type",
        ),
        (
            vec![
                "--jwt-type",
                "api",
                "--provider",
                "ibm",
                "--allow-http",
                "--server-url",
                &tmpl,
            ],
            1,
            "invalid provider",
        ),
        (vec!["--jwt-type", "api", "--server-url", &tmpl], 1, "https"),
        (
            vec![
                "--jwt-type",
                "api",
                "--server-url",
                "not a url",
                "--allow-http",
            ],
            1,
            "invalid auth server URL",
        ),
        (
            vec!["--jwt-type", "api", "--timeout", "soon"],
            2,
            "invalid duration",
        ),
        (vec!["--no-such-flag"], 2, "no-such-flag"),
    ];
    for (args, code, needle) in cases {
        let mut cmd = s2iam(&server);
        cmd.args(&args).args(["--env-status", "STATUS"]);
        let out = run(cmd).await;
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).contains("STATUS=0"), "{args:?}");
        assert!(!stderr(&out).contains("panicked"), "{args:?}");
    }
    assert!(server.auth().records().is_empty(), "no request was sent");
    server.shutdown().await;
}

#[tokio::test]
async fn help_lists_flags_and_examples() {
    let server = mocks(CloudConfig::none()).await;
    let mut cmd = s2iam(&server);
    cmd.arg("--help");
    let out = run(cmd).await;
    assert!(out.status.success());
    let text = stdout(&out);
    for needle in [
        "--jwt-type",
        "--workspace-group-id",
        "--env-status",
        "--force-detect",
        "Examples:",
        "eval $(s2iam",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
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
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        server
            .auth_requests()
            .count("/auth/oidc/op/Customer/.well-known/jwks.json"),
        1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn detect_reports_the_cloud_and_how() {
    for (cloud, name) in [
        (CloudConfig::aws(), "aws"),
        (CloudConfig::gcp(), "gcp"),
        (CloudConfig::azure(), "azure"),
    ] {
        let server = mocks(cloud).await;
        let mut cmd = s2iam(&server);
        cmd.args(["detect", "--json"]);
        let out = run(cmd).await;
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(doc["provider"], name);
        assert_eq!(doc["method"], "metadata");

        let mut cmd = s2iam(&server);
        cmd.arg("detect");
        let out = run(cmd).await;
        assert!(
            stdout(&out).starts_with(&format!("{name} (its metadata service answered")),
            "{}",
            stdout(&out)
        );
        server.shutdown().await;
    }
}

#[tokio::test]
async fn detect_with_no_cloud_fails_fast_and_says_why() {
    let server = mocks(CloudConfig::none()).await;
    let mut cmd = s2iam(&server);
    cmd.arg("detect");
    let started = Instant::now();
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no cloud provider detected"), "{err}");
    for p in ["aws:", "gcp:", "azure:"] {
        assert!(
            err.contains(p),
            "per-provider reason for {p} missing: {err}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn detect_uses_the_environment_fast_path() {
    let server = mocks(CloudConfig::none()).await;
    let mut cmd = s2iam(&server);
    cmd.args(["detect", "--json"])
        .env("AWS_REGION", "eu-west-1");
    let out = run(cmd).await;
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["provider"], "aws");
    assert_eq!(doc["method"], "environment");
    assert!(doc["evidence"].as_str().unwrap().contains("AWS_REGION"));
    assert_eq!(
        server.cloud_requests().entries().len(),
        0,
        "no I/O on the fast path"
    );

    // --force-detect ignores the hint and probes.
    let mut cmd = s2iam(&server);
    cmd.args(["detect", "--force-detect"])
        .env("AWS_REGION", "eu-west-1");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    server.shutdown().await;
}

#[tokio::test]
async fn identity_shows_who_without_secrets() {
    for (cloud, name) in [
        (CloudConfig::aws(), "aws"),
        (CloudConfig::gcp(), "gcp"),
        (CloudConfig::azure(), "azure"),
    ] {
        let server = mocks(cloud).await;
        let mut cmd = s2iam(&server);
        cmd.args(["identity", "--json"]);
        let out = run(cmd).await;
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let text = stdout(&out);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["provider"], name);
        assert!(!doc["identifier"].as_str().unwrap().is_empty());
        assert!(!text.contains("eyJ"), "{name}: a token leaked: {text}");
        let mut cmd = s2iam(&server);
        cmd.arg("identity");
        let out = run(cmd).await;
        // Keys are aligned to the longest one, which differs by cloud.
        assert!(
            stdout(&out).lines().any(|l| l
                .strip_prefix("provider:")
                .is_some_and(|v| v.trim() == name)),
            "{}",
            stdout(&out)
        );
        server.shutdown().await;
    }
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
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", stderr(&out));
    server.shutdown().await;
}

/// An auth service that answers every exchange with `body` (HTTP 200).
async fn fixed_auth(body: String) -> String {
    let app = axum::Router::new().route(
        "/auth/iam/{t}",
        axum::routing::post(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/auth/iam/:jwtType")
}

fn unsigned_jwt(payload: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(payload))
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

/// Issue 13: `--timeout 1e20` panicked in `Duration::from_secs_f64`.
#[tokio::test]
async fn huge_timeouts_are_usage_errors_not_panics() {
    let server = mocks(CloudConfig::gcp()).await;
    for args in [
        &["--timeout", "1e20"][..],
        &["--timeout", "99999999999999999999h"][..],
        &["probe", "--timeout", "1e20"][..],
    ] {
        let mut cmd = s2iam(&server);
        cmd.args(args);
        let out = run(cmd).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("invalid duration") && !err.contains("panicked"),
            "{err}"
        );
    }
    server.shutdown().await;
}
