//! The sidecar's lifecycle through the binary (README "Lifecycle"): SIGTERM with
//! open proxied database sessions and the minimum and maximum delays, `POST
//! /quitquitquit` and `s2iam shutdown` (allowed callers only), exit codes, and a
//! token that survives restarts (an init `serve --once` then the sidecar: one
//! exchange; a restarted sidecar serves its adopted token with zero exchanges).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    eventually, exchanges, s2iam_cmd, signal, temp_dir, uds_get, uds_request, wait_exit, Proc,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use s2iam_testserver::{CloudConfig, SingleStoreConfig, TestServer, TestServerConfig};

const WG: &str = "wg-life";

async fn mocks() -> TestServer {
    let config = TestServerConfig::new(CloudConfig::gcp()).with_singlestore(SingleStoreConfig {
        workspace_group_id: Some(WG.into()),
        ..SingleStoreConfig::default()
    });
    TestServer::start(config).await.expect("mocks start")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config with the socket, a database token kept in a sink, and (with a port) a
/// database proxy whose drain_timeout is long, so only the max delay can cut it.
fn config(server: &TestServer, dir: &Path, proxy_port: Option<u16>, extra: &str) -> PathBuf {
    let mut text = format!(
        "[listen]\nsocket = {sock:?}\n{extra}\n[[token]]\ntype = \"database\"\nworkspace_group_id = \"{WG}\"\nsink = {sink:?}\n",
        sock = dir.join("s2iam.sock").display().to_string(),
        sink = dir.join("database.jwt").display().to_string(),
    );
    if let Some(port) = proxy_port {
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, server.singlestore().unwrap().ca_pem()).unwrap();
        text.push_str(&format!(
            "[[database_proxy]]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"{up}\"\nserver_name = \"singlestore.mock\"\nca_file = {ca:?}\nworkspace_group_id = \"{WG}\"\ndrain_timeout = \"60s\"\n",
            up = server.singlestore().unwrap().addr(),
            ca = ca.display().to_string(),
        ));
    }
    let path = dir.join("s2iam.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(server: &TestServer, config: &Path, flags: &[&str]) -> Proc {
    Proc(
        s2iam_cmd(server)
            .args(["serve", "--config"])
            .arg(config)
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn ready(socket: &Path) {
    assert!(
        eventually(Duration::from_secs(20), async || socket.exists()).await,
        "socket created"
    );
    assert!(
        eventually(Duration::from_secs(20), async || uds_get(socket, "/readyz")
            .await
            .0
            == 200)
        .await,
        "sidecar ready"
    );
}

fn via_proxy(port: u16) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("*"))
        .prefer_socket(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_proxies_accepting_for_the_min_delay_and_exits_by_the_max() {
    let server = mocks().await;
    let dir = temp_dir("life-sigterm");
    let port = free_port();
    let cfg = config(&server, &dir, Some(port), "");
    let socket = dir.join("s2iam.sock");
    let mut child = serve(
        &server,
        &cfg,
        &["--sigterm-min-delay", "3s", "--sigterm-max-delay", "6s"],
    );
    ready(&socket).await;
    assert_eq!(uds_get(&socket, "/startupz").await.0, 200);
    let mut open = Conn::new(via_proxy(port)).await.unwrap();
    let signalled = Instant::now();
    signal(child.0.id(), "TERM");
    // At once: not ready any more (the Service stops sending), still alive.
    assert!(
        eventually(Duration::from_secs(2), async || uds_get(&socket, "/readyz")
            .await
            .0
            == 503)
        .await
    );
    let (status, body) = uds_get(&socket, "/readyz").await;
    assert!(body.contains("draining"), "{status} {body}");
    assert_eq!(
        uds_get(&socket, "/healthz").await.0,
        200,
        "alive while draining"
    );
    assert_eq!(
        uds_get(&socket, "/startupz").await.0,
        200,
        "started stays started"
    );
    // The app is still draining: a new proxied session is accepted and works.
    let mut late = Conn::new(via_proxy(port))
        .await
        .expect("a new session during the min delay");
    let one: Option<i64> = late.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "the checks above ran inside the min delay (loaded machine?)"
    );
    // Then no new connections, while the open sessions go on.
    assert!(
        eventually(Duration::from_secs(8), async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
        })
        .await,
        "stops accepting after the min delay"
    );
    let still: Option<i64> = open.query_first("SELECT 1").await.unwrap();
    assert_eq!(still, Some(1), "an open session goes on while draining");
    // drain_timeout is 60 s, the max delay 6 s: the process exits with sessions open.
    let status = wait_exit(&mut child.0, Duration::from_secs(20)).await;
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(143),
        "SIGTERM without --exit-zero-on-sigterm"
    );
    assert!(
        took >= Duration::from_secs(3),
        "not before the min delay: {took:?}"
    );
    assert!(
        open.query_drop("SELECT 3").await.is_err(),
        "the open session was cut at the max delay"
    );
    drop(late);

    // --exit-zero-on-sigterm, no delays: 0.
    let mut child = serve(&server, &cfg, &["--exit-zero-on-sigterm"]);
    ready(&socket).await;
    signal(child.0.id(), "TERM");
    assert_eq!(
        wait_exit(&mut child.0, Duration::from_secs(15))
            .await
            .code(),
        Some(0)
    );
    // Out-of-range delays are refused at start, naming the flag.
    let out = s2iam_cmd(&server)
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--sigterm-min-delay", "10s", "--sigterm-max-delay", "5s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sigterm-max-delay"));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_and_shutdown_stop_it_for_allowed_callers_only() {
    let server = mocks().await;
    let dir = temp_dir("life-quit");
    let me = nix::unistd::geteuid().as_raw();
    // Anyone may open the socket file; the listener's caller check decides.
    let cfg = config(
        &server,
        &dir,
        None,
        &format!("socket_mode = \"0666\"\nallowed_uids = [{me}]\n"),
    );
    let socket = dir.join("s2iam.sock");
    let mut child = serve(&server, &cfg, &[]);
    ready(&socket).await;
    assert_eq!(
        uds_get(&socket, "/quitquitquit").await.0,
        405,
        "GET does not quit"
    );
    // Another uid is refused by the caller check and the sidecar goes on.
    let setpriv = Path::new("/usr/bin/setpriv");
    if me == 0 && setpriv.exists() {
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = Command::new(setpriv)
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_s2iam"),
                "shutdown",
                "--socket",
            ])
            .arg(&socket)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("403"), "{err}");
        assert!(child.0.try_wait().unwrap().is_none(), "still running");
        assert_eq!(uds_get(&socket, "/readyz").await.0, 200);
    } else {
        eprintln!("(not root or no setpriv: the other-uid refusal is not exercised here)");
    }
    // `s2iam shutdown` as the allowed uid: exit 0 for both.
    let out = s2iam_cmd(&server)
        .args(["shutdown", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        wait_exit(&mut child.0, Duration::from_secs(15))
            .await
            .code(),
        Some(0),
        "quit exits 0"
    );
    assert!(!socket.exists(), "socket removed");
    // POST /quitquitquit directly, even with a min delay configured: no delay.
    let mut child = serve(&server, &cfg, &["--sigterm-min-delay", "30s"]);
    ready(&socket).await;
    let (status, _, body) = uds_request(&socket, "POST", "/quitquitquit", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        wait_exit(&mut child.0, Duration::from_secs(15))
            .await
            .code(),
        Some(0)
    );
    // Nothing listening: shutdown says so and fails.
    let out = s2iam_cmd(&server)
        .args(["shutdown", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_sink_survives_restarts_with_zero_exchanges() {
    let server = mocks().await;
    let dir = temp_dir("life-adopt");
    let cfg = config(&server, &dir, None, "");
    let socket = dir.join("s2iam.sock");
    let sink = dir.join("database.jwt");
    // The init container: one exchange, the file written.
    let out = s2iam_cmd(&server)
        .args(["serve", "--once", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(exchanges(&server), 1);
    let jwt = std::fs::read_to_string(&sink).unwrap();
    // Again: kept, no exchange.
    let out = s2iam_cmd(&server)
        .args(["serve", "--once", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kept"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(exchanges(&server), 1);
    // The sidecar after the init container: serves that token, no exchange.
    for round in 0..2 {
        let mut child = serve(&server, &cfg, &["--exit-zero-on-sigterm"]);
        ready(&socket).await;
        let (status, token) = uds_get(
            &socket,
            &format!("/v1/token/database?workspaceGroupID={WG}&format=raw"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            token.trim(),
            jwt.trim(),
            "round {round}: the adopted token is served"
        );
        assert_eq!(
            exchanges(&server),
            1,
            "round {round}: init container + sidecar (+ restart) = one exchange"
        );
        signal(child.0.id(), "TERM");
        assert_eq!(
            wait_exit(&mut child.0, Duration::from_secs(15))
                .await
                .code(),
            Some(0)
        );
    }
    // A token for another workspace group is not adopted: one more exchange.
    let other = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("workspace_group_id = \"{WG}\""),
        "workspace_group_id = \"wg-other\"",
    );
    std::fs::write(&cfg, other).unwrap();
    let out = s2iam_cmd(&server)
        .args(["serve", "--once", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(exchanges(&server), 2);
    assert_ne!(std::fs::read_to_string(&sink).unwrap(), jwt);
    // A sink writable by others is not trusted.
    std::fs::set_permissions(&sink, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let out = s2iam_cmd(&server)
        .args(["serve", "--once", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        exchanges(&server),
        3,
        "a group- or world-writable sink is exchanged over"
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
