//! Usage: flags (the reference CLI's single-dash spellings too), help, and the
//! command lines refused before any request.

use crate::common::mocks;
use crate::{run, run_ok, s2iam, stderr, stdout, text};
use s2iam_testserver::CloudConfig;
use std::process::Command;

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
    run_ok(cmd).await;
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

#[test]
fn help_shows_no_empty_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_s2iam"))
        .arg("--help")
        .output()
        .unwrap();
    let help = text(&out.stdout);
    assert!(help.contains("--workspace-group-id"), "{help}");
    assert!(!help.contains("[default: ]"), "{help}");
    assert!(!help.contains("[default: \"\"]"), "{help}");
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
