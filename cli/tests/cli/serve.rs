//! `s2iam serve` as a process: signals, `--check` and what it prints, ports and
//! sockets it cannot use, and its log.

use crate::common;
use crate::common::{eventually, mocks, signal, temp_dir, uds_get, wait_exit, Proc};
use crate::{run, s2iam, s2iam_with_auth, text};
use s2iam_testserver::{CloudConfig, FaultRule};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_removes_the_socket() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("sigterm");
    let socket = dir.join("s2iam.sock");
    let mut child = Proc(
        s2iam_with_auth(Some(&server))
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
    signal(child.0.id(), "TERM");
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completed: {body}");
    assert_eq!(body.split('.').count(), 3);
    let exit = wait_exit(&mut child.0, Duration::from_secs(15)).await;
    // 143 unless --exit-zero-on-sigterm (README "Lifecycle").
    assert_eq!(exit.code(), Some(143), "{exit}");
    assert!(!socket.exists(), "socket file removed");
    server.shutdown().await;
}

#[tokio::test]
async fn sigint_stops_an_idle_sidecar_cleanly() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("sigint");
    let socket = dir.join("s2iam.sock");
    let mut child = Proc(
        s2iam_with_auth(Some(&server))
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
    signal(child.0.id(), "INT");
    let exit = wait_exit(&mut child.0, Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(130), "{exit}");
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
    let out = s2iam_with_auth(None)
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
    let out = s2iam_with_auth(None)
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
        let out = s2iam_with_auth(None)
            .args(["serve", "--check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains(setting) && !err.contains("panicked"), "{err}");
    }

    let out = s2iam_with_auth(None)
        .args(["serve", "--check", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));

    let out = s2iam_with_auth(None)
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

fn check(toml: &str) -> Output {
    let dir = common::temp_dir("newcomer-check");
    let path = dir.join("s2iam.toml");
    std::fs::write(&path, toml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_s2iam"))
        .env_clear()
        .args(["serve", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

/// `serve --check` prints settings in the config file's terms, not Rust Debug
/// with file modes in decimal.
#[test]
fn check_prints_settings_not_debug() {
    let out = check(
        "[listen]\nsocket = \"/tmp/s2iam-check.sock\"\nsocket_mode = \"0660\"\n[cache]\nmin_remaining = \"90s\"\n[[token]]\ntype = \"api\"\nsink = \"/tmp/s2iam-check/api\"\n",
    );
    let text = text(&out.stdout);
    assert!(out.status.success(), "{}", text);
    assert!(text.contains("(mode 0660)"), "{text}");
    assert!(
        text.contains("(mode 0640)"),
        "the sink's default mode: {text}"
    );
    assert!(text.contains("min_remaining = 1m 30s"), "{text}");
    assert!(
        !text.contains("ServeConfig {") && !text.contains("432"),
        "{text}"
    );
}

/// A socket whose directory cannot be created fails the check, not the start.
#[test]
fn check_refuses_an_uncreatable_socket_dir() {
    for socket in ["/proc/s2iam-nope/s.sock", "/etc/hostname/s.sock"] {
        let out = check(&format!("[listen]\nsocket = \"{socket}\"\n"));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{socket}: {err}");
        assert!(err.contains("listen.socket"), "{socket}: {err}");
    }
}

/// `allowed_uids` applies on TCP too (the kernel names the peer's uid): TCP
/// without a token is accepted, and `--check` says who can connect where.
#[test]
fn allowed_uids_apply_on_tcp_and_check_says_who_can_connect() {
    let out = check("[listen]\nsocket = \"/tmp/s2iam-check.sock\"\ntcp = \"127.0.0.1:7869\"\nallowed_uids = [1000]\n");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("[who can connect]"), "{stdout}");
    assert!(
        stdout.contains("token API: tcp 127.0.0.1:7869: uid 1000 only"),
        "{stdout}"
    );
    assert!(
        stdout.contains("token API: unix /tmp/s2iam-check.sock (mode 0660): uid 1000 only"),
        "{stdout}"
    );
    assert!(stdout.contains("no bearer token"), "{stdout}");
}

/// Issue 23 (3): a user who cannot write the socket's directory (the default
/// `/run/s2iam` for anyone but root) learns it from `serve --check`. Run as
/// nobody when the test runs as root (root may write anywhere).
#[test]
fn check_refuses_a_socket_directory_this_user_cannot_write() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = common::temp_dir("newcomer-ro");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s2iam"));
    cmd.env_clear()
        .args(["serve", "--check", "--socket"])
        .arg(dir.join("s2iam.sock"));
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        cmd.uid(65534).gid(65534);
    } else {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not writable by this user"), "{err}");
    assert!(err.contains("--socket"), "{err}");
}

/// Issue 23 (7): `serve --check` shows every setting a file can change,
/// fractions as written.
#[test]
fn check_shows_limits_rate_limits_cache_and_templates() {
    let dest = common::temp_dir("newcomer-tpl").join("my.cnf");
    let out = check(&format!(
        "[listen]\nsocket = \"/tmp/s2iam-check.sock\"\n\
         [[template]]\ncontents = \"user={{{{ identity.principal }}}}\"\ndestination = \"{}\"\n",
        dest.display()
    ));
    let text = text(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "header_read_timeout = ",
        "idle_timeout = ",
        "max_connections = ",
        "max_connections_per_uid = ",
        "max_header_bytes = ",
        "shutdown_timeout = ",
        "max_on_demand = ",
        "negative_ttl = ",
        "cold_fetches_per_second = ",
        "cold_fetches_per_caller_per_second = ",
        "refresh_at = 0.6667 ",
        "[[template]]",
        &format!("destination = {} (mode 0", dest.display()),
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(!text.contains("0.66666"), "{text}");
}

/// A taken port says what to do, not just "Address in use".
#[tokio::test]
async fn port_in_use_gives_a_hint() {
    let server = mocks(CloudConfig::gcp()).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cmd = s2iam(&server);
    cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1")
        .args([
            "serve",
            "--no-socket",
            "--tcp",
            &format!("127.0.0.1:{port}"),
        ]);
    let out = run(cmd).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("choose another port"), "{err}");
    drop(taken);
    server.shutdown().await;
}

/// Issue 23 (3, 7): a socket in a missing directory fails `serve --check` with
/// what to do, and `serve` refuses it with the same words (it creates no
/// directory, as root or not).
#[tokio::test]
async fn a_socket_in_a_missing_directory_fails_the_check_and_the_start_alike() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = common::temp_dir("newcomer-nodir").join("missing");
    let socket = dir.join("s2iam.sock");
    let out = check(&format!("[listen]\nsocket = \"{}\"\n", socket.display()));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for hint in ["does not exist", "mkdir", "--socket", "XDG_RUNTIME_DIR"] {
        assert!(err.contains(hint), "{hint}: {err}");
    }
    let mut cmd = s2iam(&server);
    cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1")
        .args(["serve", "--socket"])
        .arg(&socket);
    let out = run(cmd).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for hint in ["does not exist", "mkdir", "--socket", "XDG_RUNTIME_DIR"] {
        assert!(err.contains(hint), "{hint}: {err}");
    }
    assert!(!dir.exists(), "serve created {}", dir.display());
    server.shutdown().await;
}

/// Issue 23 (11): the sidecar logs a failed fetch once (the warm-up at start
/// no longer logs it a second time): never more failure lines than requests
/// the auth service refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_is_logged_once() {
    let server = mocks(CloudConfig::gcp()).await;
    server.auth().update(|c| c.fail_verification = true);
    let dir = common::temp_dir("newcomer-fetch-once");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nsocket = \"{}\"\n[[token]]\ntype = \"api\"\n",
            dir.join("s2iam.sock").display()
        ),
    )
    .unwrap();
    let log = dir.join("stderr");
    let mut cmd = s2iam(&server);
    cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1")
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    let logged = common::eventually(std::time::Duration::from_secs(20), async || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("401"))
    })
    .await;
    // Past the warm-up: detection is done and the first fetch answered.
    let _ = common::uds_get(&dir.join("s2iam.sock"), "/readyz").await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(logged, "{text}");
    let failures = text.lines().filter(|l| l.contains("401")).count();
    let refused = server.auth().records().len();
    assert!(
        failures >= 1 && failures <= refused,
        "{failures} failure lines for {refused} refused requests:\n{text}"
    );
    server.shutdown().await;
}
