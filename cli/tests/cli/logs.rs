//! Log hygiene of `s2iam serve` as a process logging to a file: caller-chosen
//! values cannot forge lines or write escape sequences, refusals a caller can
//! trigger at will are rate-limited, and no ANSI colour goes to a non-terminal
//! (issue 13).

use crate::common;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{eventually, mocks, temp_dir, uds_get};
use s2iam_testserver::CloudConfig;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_values_are_escaped_refusals_throttled_and_no_colour_in_files() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("logs");
    let socket = dir.join("s2iam.sock");
    let log_path = dir.join("s2iam.log");
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s2iam"));
    cmd.env_clear();
    for (k, v) in s2iam::env::endpoints::mock_env(&server.cloud_url()) {
        cmd.env(k, v);
    }
    cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1")
        .args(["serve", "--tcp", &format!("127.0.0.1:{port}"), "--socket"])
        .arg(&socket)
        .stderr(std::fs::File::create(&log_path).unwrap());
    let child = common::Proc(cmd.stdout(Stdio::null()).spawn().unwrap());
    assert!(eventually(Duration::from_secs(20), async || socket.exists()).await);
    assert!(
        eventually(Duration::from_secs(20), async || uds_get(
            &socket, "/readyz"
        )
        .await
        .0 == 200)
        .await
    );

    // A workspace group with a newline, an ESC sequence and a bidi override.
    let (status, body) = uds_get(
        &socket,
        "/v1/token/database?workspaceGroupID=wg%0a2026-01-01T00:00:00Z%20INFO%20forged%1b%5b31m%E2%80%AE",
    )
    .await;
    // Refused by the workspace-group character set (before any log line), or
    // served: either way no forged line below.
    assert!(status == 400 || status == 200, "{status} {body}");

    // 200 refusals with a 10 KB Host header.
    // A bidi override (bytes allowed in a header value) and 10 KB (under the
    // 16 KB head limit, over the logged field limit).
    let host = format!("evil\u{202e}{}", "h".repeat(10_000));
    for _ in 0..200 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET /v1/token/api HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "{}",
            &answer[..answer.len().min(200)]
        );
    }

    let logs = stop_and_read_log(child, &dir);
    assert!(
        !logs.contains('\u{1b}'),
        "no escape byte (colour or caller's)"
    );
    assert!(!logs.contains('\u{202e}'), "no bidi override");
    assert!(
        !logs.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line:\n{logs}"
    );
    let refusals = logs
        .lines()
        .filter(|l| l.contains("non-loopback Host"))
        .count();
    assert!((1..=25).contains(&refusals), "{refusals} refusal lines");
    assert!(logs.len() < 64 * 1024, "{} bytes of logs", logs.len());
    server.shutdown().await;
}

/// `s2iam serve` on a Unix socket only, logging to `s2iam.log` in `dir`, with
/// `extra` arguments; returns once `/readyz` answers 200.
async fn serve_logging(
    server: &s2iam_testserver::TestServer,
    dir: &std::path::Path,
    extra: &[&str],
) -> (common::Proc, std::path::PathBuf) {
    let socket = dir.join("s2iam.sock");
    let log = std::fs::File::create(dir.join("s2iam.log")).unwrap();
    let child = common::s2iam_cmd(server)
        .args(["serve", "--socket"])
        .arg(&socket)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let child = common::Proc(child);
    assert!(
        eventually(Duration::from_secs(20), async || socket.exists()
            && uds_get(&socket, "/readyz").await.0 == 200)
        .await
    );
    (child, socket)
}

/// SIGTERM, wait, and the log it wrote.
fn stop_and_read_log(mut child: common::Proc, dir: &std::path::Path) -> String {
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let _ = child.0.wait();
    std::fs::read_to_string(dir.join("s2iam.log")).unwrap()
}

/// Tokens that live no longer than `cache.min_remaining` (60 s by default) are
/// fetched anew on every request: said once per token, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_living_no_longer_than_min_remaining_are_warned_about_once_per_token() {
    let server = common::mocks_with_expiry(Duration::from_secs(30)).await;
    let dir = temp_dir("logs-short-lived");
    let (child, socket) = serve_logging(&server, &dir, &[]).await;
    for path in [
        "/v1/token/database?workspaceGroupID=wg-short",
        "/v1/token/database?workspaceGroupID=wg-short",
        "/v1/token/database?workspaceGroupID=wg-short",
        "/v1/token/api",
    ] {
        let (status, body) = uds_get(&socket, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let logs = stop_and_read_log(child, &dir);
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("no longer than cache.min_remaining"))
        .collect();
    assert_eq!(warnings.len(), 2, "one per token:\n{logs}");
    assert!(
        warnings.iter().any(|l| l.contains("database/wg-short")),
        "{logs}"
    );
    assert!(warnings.iter().any(|l| l.contains("token=api ")), "{logs}");
    assert!(warnings.iter().all(|l| l.contains("lifetime_s=")), "{logs}");
    server.shutdown().await;
}

/// A failed on-demand fetch says which token failed, down to its audience,
/// escaped (the audience comes from the caller).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_on_demand_fetch_names_its_audience_escaped() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("logs-audience");
    let audience = "https://aud.example/x\u{1b}[31m\nforged";
    let config = dir.join("s2iam.toml");
    std::fs::write(
        &config,
        format!(
            "[access]\naudiences = [{}]\n",
            serde_json::to_string(audience).unwrap()
        ),
    )
    .unwrap();
    let (child, socket) =
        serve_logging(&server, &dir, &["--config", config.to_str().unwrap()]).await;
    server
        .auth_faults()
        .add(s2iam_testserver::FaultRule::status("/auth/iam", 403));
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("audience", audience)
        .finish();
    let (status, body) = uds_get(&socket, &format!("/v1/token/api?{query}")).await;
    assert!(status >= 400, "{status} {body}");
    let logs = stop_and_read_log(child, &dir);
    let failed: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("token fetch failed"))
        .collect();
    assert!(!failed.is_empty(), "{logs}");
    assert!(
        failed
            .iter()
            .all(|l| l.contains(r"api for audience https://aud.example/x\u{1b}[31m\nforged")),
        "{logs}"
    );
    assert!(!logs.contains('\u{1b}'), "{logs}");
    assert!(!logs.lines().any(|l| l.starts_with("forged")), "{logs}");
    server.shutdown().await;
}
