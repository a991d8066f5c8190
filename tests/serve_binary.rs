//! `s2iam serve` and `s2iam dev` as processes: signals, `--check`, and the quick
//! start a newcomer runs.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, mocks, temp_dir, uds_get};
use s2iam_testserver::{CloudConfig, FaultRule, TestServer};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn s2iam(server: Option<&TestServer>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s2iam"));
    cmd.env_clear();
    if let Some(server) = server {
        for (k, v) in s2iam::env::endpoints::mock_env(&server.cloud_url()) {
            cmd.env(k, v);
        }
        cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
            .env("S2IAM_ALLOW_HTTP", "1");
    }
    cmd
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_removes_the_socket() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("sigterm");
    let socket = dir.join("s2iam.sock");
    let mut child = Proc(
        s2iam(Some(&server))
            .args(["serve", "--socket"])
            .arg(&socket)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(eventually(Duration::from_secs(20), async || socket.exists()).await);
    assert!(
        eventually(Duration::from_secs(20), async || uds_get(
            &socket, "/readyz"
        )
        .await
        .0 == 200)
        .await
    );

    // A request that takes a while upstream is in flight when SIGTERM arrives.
    server
        .auth_faults()
        .add(FaultRule::latency("/auth/iam", Duration::from_millis(1500)));
    let in_flight = {
        let socket = socket.clone();
        tokio::spawn(async move {
            uds_get(
                &socket,
                "/v1/token/database?workspaceGroupID=wg-term&format=raw",
            )
            .await
        })
    };
    // The request has reached the (slow) auth service.
    assert!(
        eventually(Duration::from_secs(5), async || server.auth_faults().list()
            [0]
        .hits
            > 0)
        .await
    );
    signal(&child.0, "TERM");
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completed: {body}");
    assert_eq!(body.split('.').count(), 3);
    let exit = wait_exit(&mut child.0, Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit}");
    assert!(!socket.exists(), "socket file removed");
    server.shutdown().await;
}

#[tokio::test]
async fn sigint_stops_an_idle_sidecar_cleanly() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("sigint");
    let socket = dir.join("s2iam.sock");
    let mut child = Proc(
        s2iam(Some(&server))
            .args(["serve", "--log-format", "json", "--socket"])
            .arg(&socket)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert!(eventually(Duration::from_secs(20), async || socket.exists()).await);
    assert!(
        eventually(Duration::from_secs(20), async || uds_get(
            &socket, "/readyz"
        )
        .await
        .0 == 200)
        .await
    );
    signal(&child.0, "INT");
    let exit = wait_exit(&mut child.0, Duration::from_secs(15)).await;
    assert!(exit.success());
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut logs).unwrap();
    let first = logs.lines().next().expect("logs");
    let line: serde_json::Value = serde_json::from_str(first).expect("JSON log lines");
    assert!(line["fields"]["message"].is_string(), "{first}");
    assert!(!logs.contains("eyJ"), "no token in the logs");
    server.shutdown().await;
}

#[tokio::test]
async fn check_validates_a_config_and_exits() {
    let dir = temp_dir("check");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[listen]\nsocket = \"/tmp/x.sock\"\n[[token]]\ntype = \"api\"\n",
    )
    .unwrap();
    let out = s2iam(None)
        .args(["serve", "--check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[listen]\ntcp = \"0.0.0.0:80\"\n").unwrap();
    let out = s2iam(None)
        .args(["serve", "--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen.tcp") && err.contains("loopback"),
        "{err}"
    );

    // Issue 13: a huge duration panicked even under --check; a zero tick killed
    // both refreshers.
    for (text, setting) in [
        ("[auth]\ntimeout = \"1e20\"\n", "auth.timeout"),
        ("[auth]\ntimeout = \"9999999999h\"\n", "auth.timeout"),
        ("[cache]\ntick = \"0s\"\n", "cache.tick"),
        ("[cache]\nmin_remaining = \"2h\"\n", "cache.min_remaining"),
    ] {
        let path = dir.join("hostile.toml");
        std::fs::write(&path, text).unwrap();
        let out = s2iam(None)
            .args(["serve", "--check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(setting) && !err.contains("panicked"), "{err}");
    }

    let out = s2iam(None)
        .args(["serve", "--check", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));

    let out = s2iam(None)
        .args([
            "serve",
            "--check",
            "--server-url",
            "http://example.invalid/auth/iam/:jwtType",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "http refused without --allow-http"
    );
}

#[tokio::test]
async fn dev_serves_tokens_as_the_readme_says() {
    let dir = temp_dir("dev");
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, data_port, mgmt_port) = (free_port(), free_port(), free_port());
    let mut child = Proc(
        s2iam(None)
            .args([
                "dev",
                "--exit-after",
                "60s",
                "--tcp",
                &format!("127.0.0.1:{port}"),
                "--mysql",
                "127.0.0.1:0",
                "--data-api-proxy",
                &format!("127.0.0.1:{data_port}"),
                "--management-api-proxy",
                &format!("127.0.0.1:{mgmt_port}"),
                "--dir",
            ])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let socket = dir.join("s2iam.sock");
    assert!(eventually(Duration::from_secs(20), async || socket.exists()).await);
    assert!(
        eventually(Duration::from_secs(20), async || uds_get(
            &socket, "/readyz"
        )
        .await
        .0 == 200)
        .await
    );
    let (status, body) = uds_get(
        &socket,
        "/v1/token/database?workspaceGroupID=dev-workspace-group",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["token"].as_str().unwrap().starts_with("ey"));
    let raw = reqwest::get(format!("http://127.0.0.1:{port}/v1/token/api?format=raw"))
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert!(std::fs::read_to_string(dir.join("database-token"))
        .unwrap()
        .starts_with("ey"));
    // The API proxies' curl lines of the banner, without a token.
    let rows: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{data_port}/api/v2/query/rows"))
        .json(&serde_json::json!({"sql": "SELECT CURRENT_USER()"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user = rows["results"][0]["rows"][0]["CURRENT_USER()"].as_str();
    assert!(user.is_some_and(|u| u.ends_with("@%")), "{rows}");
    let groups: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{mgmt_port}/v1/workspaceGroups"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(groups[0]["workspaceGroupID"], "dev-workspace-group");
    signal(&child.0, "TERM");
    assert!(wait_exit(&mut child.0, Duration::from_secs(15))
        .await
        .success());
    let mut banner = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut banner).unwrap();
    assert!(
        banner.contains(&format!("curl -sS --unix-socket {}", socket.display())),
        "{banner}"
    );
    assert!(
        banner.contains(&format!(
            "curl -sS -w '\\n' http://127.0.0.1:{data_port}/api/v2/query/rows"
        )),
        "{banner}"
    );
    assert!(
        banner.contains(&format!(
            "curl -sS -w '\\n' http://127.0.0.1:{mgmt_port}/v1/workspaceGroups"
        )),
        "{banner}"
    );
    // Every curl line the same way: -sS, and -w '\n' where the answer has no
    // newline of its own; nothing the current mariadb client calls obsolete.
    for line in banner.lines().filter(|l| l.trim_start().contains("curl ")) {
        assert!(line.contains("curl -sS "), "{line}");
    }
    assert!(!banner.contains("--enable-cleartext-plugin"), "{banner}");
}
