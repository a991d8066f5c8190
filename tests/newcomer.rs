//! The rough edges a newcomer hits with the CLI (issue 13), each pinned.

mod common;

use std::process::{Command, Output};

use common::mocks;
use s2iam_testserver::{CloudConfig, TestServer};

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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

/// The sidecar honours S2IAM_ALLOW_HTTP; so does the CLI now.
#[tokio::test]
async fn the_cli_honours_s2iam_allow_http() {
    let server = mocks(CloudConfig::gcp()).await;
    let mut cmd = s2iam(&server);
    cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1")
        .args(["--jwt-type", "api"]);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
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
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["token"].as_str().unwrap().starts_with("ey"));
    assert_eq!(doc["token"], doc["jwt"]);
    server.shutdown().await;
}

/// With no cloud, `--verbose` says what was probed and what each probe found.
#[tokio::test]
async fn verbose_explains_a_failed_detection() {
    let server = mocks(CloudConfig::none()).await;
    let mut cmd = s2iam(&server);
    cmd.args(["detect", "--verbose", "--timeout", "3s"]);
    let out = run(cmd).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("probing the metadata services"), "{err}");
    for cloud in ["aws", "gcp", "azure"] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("provider={cloud}"))),
            "{cloud}: {err}"
        );
    }
    server.shutdown().await;
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

/// `s2iam dev` prints the `export` lines the CLI needs to use its mocks (and
/// they work), serves a demo AWS profile on `--cloud aws`, and leaves no JWT
/// behind in its temporary directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_working_exports_serves_a_demo_profile_and_cleans_up() {
    use std::io::BufRead;
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
        .stderr(std::process::Stdio::null())
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

/// Issue 23 (6): `s2iam proxy` on a port in use fails before it asks for any
/// token, with the hint the sidecar gives, and its log carries no ANSI escapes
/// when stderr is not a terminal.
#[tokio::test]
async fn proxy_on_a_port_in_use_fails_with_the_hint_before_any_token() {
    let server = mocks(CloudConfig::gcp()).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cmd = s2iam(&server);
    cmd.args([
        "proxy",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--upstream",
        "127.0.0.1:9",
        "--workspace-group-id",
        "wg-busy",
        "--allow-http",
        "--server-url",
        &server.exchange_url_template(),
    ]);
    let out = run(cmd).await;
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("choose another port with --listen"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "ANSI escapes in a non-terminal log: {err:?}"
    );
    assert!(
        server.auth().records().is_empty(),
        "a token was asked for before the bind failed"
    );
    drop(taken);
    server.shutdown().await;
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
