//! The `s2iam-testserver` binary: flags, `--info-file`, `--shutdown-on-stdin-close`,
//! `--timeout`, and its listeners answering on loopback.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_s2iam-testserver"))
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "s2iam-ts-bin-{}-{}",
        std::process::id(),
        s2iam_testserver::util::random_hex(4)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits (bounded) for the info file and returns it parsed.
fn wait_for_info(path: &Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text)
                .expect("info file is complete JSON when it appears");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("info file {} never appeared", path.display());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    })
}

#[test]
fn info_file_then_exit_when_stdin_closes() {
    let dir = temp_dir();
    let info = dir.join("info.json");
    let mut child = bin()
        .args([
            "--port",
            "0",
            "--cloud",
            "gcp",
            "--shutdown-on-stdin-close",
            "--info-file",
        ])
        .arg(&info)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let doc = wait_for_info(&info);
    let server_info = &doc["server_info"];
    let port = server_info["port"].as_u64().unwrap();
    assert!(port > 0, "port 0 must be resolved to the real port");
    assert_eq!(server_info["pid"].as_u64().unwrap(), u64::from(child.id()));
    assert!(server_info["started_at"].as_str().unwrap().ends_with('Z'));
    let health = server_info["endpoints"]["health"].as_str().unwrap();
    assert_eq!(health, format!("http://127.0.0.1:{port}/health"));
    let (status, _) = get(health);
    assert_eq!(status, 200);
    let cloud = server_info["cloud_url"].as_str().unwrap();
    let (status, _) = get(&format!("{cloud}/_mock/faults"));
    assert_eq!(status, 200);

    // Closing stdin stops the server.
    drop(child.stdin.take());
    let status = wait_exit(&mut child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    // No temporary files are left beside the info file.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("info.json")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stdout_carries_server_info_json() {
    let mut child = bin()
        .args(["--port", "0", "--timeout", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(doc["server_info"]["endpoints"]["auth"]
        .as_str()
        .unwrap()
        .ends_with("/auth/iam/:jwtType"));
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for args in [
        vec!["--cloud", "moon"],
        vec!["--token-expiry", "ten"],
        // Panicked in `Duration::from_secs_f64` before (issue 13).
        vec!["--token-expiry", "99999999999999999999999h"],
        vec!["--key-size", "12"],
    ] {
        let out = bin().args(&args).stdin(Stdio::null()).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.is_empty(), "{args:?}: no message");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn info_file_in_missing_directory_is_a_clear_error() {
    let mut child = bin()
        .args(["--port", "0", "--info-file", "/nonexistent-dir/x/info.json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.as_mut().unwrap().write_all(b"");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("--info-file"), "{err}");
}

#[test]
fn api_listen_serves_the_mock_apis_and_lists_them_in_the_info_file() {
    let dir = temp_dir();
    let info = dir.join("info.json");
    let mut child = bin()
        .args([
            "--port",
            "0",
            "--api-listen",
            "127.0.0.1:0",
            "--api-workspace-group",
            "wg-bin",
            "--timeout",
            "30s",
            "--info-file",
        ])
        .arg(&info)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let doc = wait_for_info(&info);
    let endpoints = &doc["server_info"]["endpoints"];
    let api = doc["server_info"]["api_url"].as_str().unwrap();
    assert_eq!(endpoints["data_api"], format!("{api}/api/v2"));
    assert_eq!(endpoints["management_api"], format!("{api}/v1"));
    assert_eq!(get(&format!("{api}/api/v2/ping")), (200, "pong".into()));
    let (status, body) = get(&format!("{api}/v1/workspaceGroups"));
    assert_eq!(status, 401, "{body}");
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 23 (6): the log carries no ANSI escapes when stderr is not a terminal.
#[test]
fn the_log_has_no_colour_off_a_terminal() {
    let mut child = bin()
        .args(["--port", "0", "--timeout", "1s"])
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.lines().count() >= 1,
        "the server logs something: {err:?}"
    );
    assert!(!err.contains('\u{1b}'), "{err:?}");
}
