//! `s2iam dev`: the quick start a newcomer runs, and a failed start leaving nothing
//! behind.

use crate::common;
use crate::common::{eventually, signal, temp_dir, uds_get, wait_exit, Proc};
use crate::{run, s2iam_with_auth, text};
use std::process::{Command, Stdio};
use std::time::Duration;

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
    let socket = dir.join("s2iam.sock");
    // The ports are free when picked and bound by `dev` a moment later: another test
    // can take one in between (seen once in CI). A start that fails is retried with
    // new ports; its stderr says why.
    let mut started = None;
    let mut why = String::new();
    for attempt in 0..3 {
        let (port, data_port, mgmt_port) = (free_port(), free_port(), free_port());
        let stderr = dir.join(format!("dev-stderr-{attempt}"));
        let mut child = Proc(
            s2iam_with_auth(None)
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
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .unwrap(),
        );
        let up = eventually(Duration::from_secs(20), async || {
            socket.exists() || matches!(child.0.try_wait(), Ok(Some(_)))
        })
        .await;
        if up && socket.exists() {
            started = Some((child, port, data_port, mgmt_port));
            break;
        }
        drop(child);
        why = std::fs::read_to_string(&stderr).unwrap_or_default();
    }
    let Some((mut child, port, data_port, mgmt_port)) = started else {
        panic!("s2iam dev did not start in 3 attempts; last stderr:\n{why}");
    };
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
    signal(child.0.id(), "TERM");
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

/// `s2iam dev` prints the `export` lines the CLI needs to use its mocks (and
/// they work), serves a demo AWS profile on `--cloud aws`, and leaves no JWT
/// behind in its temporary directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_working_exports_serves_a_demo_profile_and_cleans_up() {
    use std::io::BufRead;
    let log = common::temp_dir("dev-aws-log").join("stderr");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_s2iam"))
        .env_clear()
        .args(["dev", "--cloud", "aws", "--exit-after", "60s", "--tcp"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("Ctrl-C stops everything");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    let exports: Vec<(String, String)> = banner
        .iter()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(
        exports.iter().any(|(k, _)| k == "S2IAM_JWT_SERVER_URL"),
        "{banner:#?}"
    );
    let socket = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("socket:"))
        .map(|s| std::path::PathBuf::from(s.trim()))
        .expect("the banner names the socket");
    let dir = socket.parent().unwrap().to_path_buf();

    // The CLI with exactly the printed environment gets a token from the mocks.
    let mut cli = Command::new(env!("CARGO_BIN_EXE_s2iam"));
    cli.env_clear()
        .envs(exports.iter().cloned())
        .args(["--jwt-type", "api"]);
    let out = run(cli).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ey"));
    // So does `s2iam doctor`, which the banner suggests: nothing fails.
    let mut doctor = Command::new(env!("CARGO_BIN_EXE_s2iam"));
    doctor
        .env_clear()
        .envs(exports.iter().cloned())
        .arg("doctor");
    let out = run(doctor).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(banner.iter().any(|l| l.trim().starts_with("s2iam doctor")));

    assert!(
        common::eventually(std::time::Duration::from_secs(20), async || {
            common::uds_get(&socket, "/readyz").await.0 == 200
        })
        .await
    );
    let (status, body) = common::uds_get(&socket, "/v1/aws/credentials/demo").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("AccessKeyId"),
        "the demo profile's credentials"
    );
    assert!(dir.join("database-token").exists());

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    assert!(!dir.exists(), "{} removed on exit", dir.display());
    // Issue 23 (11): dev's own setup (its demo AWS profile, its mocks) draws no
    // warning (the default log level shows warnings and errors).
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(
        !err.contains("WARN") && !err.contains("ERROR"),
        "dev --cloud aws warns about itself:\n{err}"
    );
}

/// Issue 23 (4): a failed `s2iam dev` (a port in use) leaves nothing behind:
/// not its temporary directory, and in a `--dir` that existed, not the socket,
/// the CA file or the token file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dev_leaves_nothing_behind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let tmp = common::temp_dir("newcomer-dev-fail");
    let kept = tmp.join("kept");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("mine"), "not dev's").unwrap();
    for dir in [None, Some(&kept)] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_s2iam"));
        cmd.env_clear().env("TMPDIR", &tmp).args([
            "dev",
            "--tcp",
            "127.0.0.1:0",
            "--data-api-proxy",
            "127.0.0.1:0",
            "--management-api-proxy",
            "127.0.0.1:0",
            "--mysql",
            &busy,
        ]);
        if let Some(dir) = dir {
            cmd.arg("--dir").arg(dir);
        }
        let out = run(cmd).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("choose another port"), "{err}");
        let mut left: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .chain(std::fs::read_dir(&kept).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["kept", "mine"], "{dir:?} left behind: {left:?}");
    }
    drop(taken);
}
