//! The sidecar's listeners under hostile or careless callers, over real sockets:
//! header-read and idle timeouts, connection caps (per listener and per uid),
//! the header-size limit, a shutdown deadline that a half-sent request cannot
//! hold up, and SIGHUP.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, mocks, sidecar_config, start_sidecar, temp_dir, uds_get};
use s2iam_sidecar::config::ServeConfig;
use s2iam_testserver::{CloudConfig, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Socket and TCP on a random loopback port.
fn config(server: &TestServer, dir: &Path, toml: &str) -> ServeConfig {
    let mut c = sidecar_config(server, dir, toml);
    c.listen.tcp = Some("127.0.0.1:0".parse().unwrap());
    c
}

/// Reads until the peer closes; `None` if it is still open after `within`.
async fn closed_within<S: AsyncReadExt + Unpin>(s: &mut S, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(start + within),
            s.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_and_idle_connections_are_timed_out() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("limits-timeouts");
    let sidecar = start_sidecar(
        &server,
        config(
            &server,
            &dir,
            "[listen]\nheader_read_timeout = \"300ms\"\nidle_timeout = \"30s\"\n",
        ),
    )
    .await;
    let addr = sidecar.tcp_addr().unwrap();

    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut unix_half = UnixStream::connect(sidecar.socket_path().unwrap())
        .await
        .unwrap();
    unix_half
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    for (name, closed) in [
        (
            "half-sent tcp",
            closed_within(&mut half, Duration::from_secs(3)).await,
        ),
        (
            "connect-only tcp",
            closed_within(&mut silent, Duration::from_secs(3)).await,
        ),
        (
            "half-sent unix",
            closed_within(&mut unix_half, Duration::from_secs(3)).await,
        ),
    ] {
        assert!(closed.is_some(), "{name} connection still open after 3 s");
    }

    // A keep-alive connection that answered one request is closed when idle.
    let mut keep = TcpStream::connect(addr).await.unwrap();
    keep.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = keep.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut keep, Duration::from_secs(3))
            .await
            .is_some(),
        "idle keep-alive connection still open"
    );
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_traffic_is_closed_after_the_idle_timeout() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("limits-idle");
    let sidecar = start_sidecar(
        &server,
        config(
            &server,
            &dir,
            "[listen]\nheader_read_timeout = \"60s\"\nidle_timeout = \"300ms\"\n",
        ),
    )
    .await;
    let mut silent = TcpStream::connect(sidecar.tcp_addr().unwrap())
        .await
        .unwrap();
    let closed = closed_within(&mut silent, Duration::from_secs(3)).await;
    assert!(
        closed.is_some(),
        "connection open after 3 s with a 300 ms idle timeout"
    );
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_listener_and_per_uid() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("limits-cap");
    let sidecar = start_sidecar(
        &server,
        config(
            &server,
            &dir,
            "[listen]\nmax_connections = 5\nmax_connections_per_uid = 3\n",
        ),
    )
    .await;
    let addr = sidecar.tcp_addr().unwrap();
    let socket = sidecar.socket_path().unwrap();

    // This test's uid may hold 3 TCP places: the other two connections, and a
    // sixth, wait unread for one of them.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let waited = tokio::time::timeout(Duration::from_millis(500), extra.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "the sixth TCP connection was served: {waited:?}"
    );
    // The Unix socket is another listener: still served.
    assert_eq!(uds_get(&socket, "/healthz").await.0, 200);

    // Per uid on the socket: this test's uid may hold 3 (each answers a request,
    // so each is surely accepted and counted).
    // (Retried: the client side of an earlier request may still be closing.)
    let mut unix_held = Vec::new();
    for _ in 0..3 {
        let mut held = None;
        let ok = eventually(Duration::from_secs(3), async || {
            let Ok(mut s) = UnixStream::connect(&socket).await else {
                return false;
            };
            if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .is_err()
            {
                return false;
            }
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap_or(0);
            if buf[..n].starts_with(b"HTTP/1.1 200") {
                held = Some(s);
            }
            held.is_some()
        })
        .await;
        assert!(ok, "connection {} of 3 served", unix_held.len() + 1);
        unix_held.extend(held);
    }
    // A fourth waits for one of the three.
    let fourth = tokio::spawn({
        let socket = socket.clone();
        async move { common::uds_request(&socket, "GET", "/metrics", &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !fourth.is_finished(),
        "a fourth connection of one uid was served at once"
    );
    drop(unix_held.pop());
    let (status, _, metrics) = tokio::time::timeout(Duration::from_secs(3), fourth)
        .await
        .expect("a place freed by a closed connection goes to the waiting one")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("s2iam_connections_open{listener=\"tcp\"} 3"),
        "{metrics}"
    );

    // The three TCP places freed: the two waiting connections and the sixth get them.
    held.drain(..3);
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), extra.read_to_end(&mut out))
        .await
        .expect("the waiting connection is served once a place frees")
        .unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_headers_get_431() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("limits-431");
    let sidecar = start_sidecar(
        &server,
        config(&server, &dir, "[listen]\nmax_header_bytes = 4096\n"),
    )
    .await;
    let socket = sidecar.socket_path().unwrap();
    let big = "x".repeat(8000);
    let r = common::uds_request(&socket, "GET", "/healthz", &[("x-big", &big)]).await;
    assert!(matches!(r, Ok((431, _, _))), "{r:?}");
    let small = "x".repeat(1000);
    let r = common::uds_request(&socket, "GET", "/healthz", &[("x-small", &small)]).await;
    assert!(matches!(r, Ok((200, _, _))), "{r:?}");
    sidecar.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_not_held_up_by_a_half_sent_request() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("limits-shutdown");
    let sidecar = start_sidecar(
        &server,
        config(
            &server,
            &dir,
            "[listen]\nheader_read_timeout = \"60s\"\nidle_timeout = \"60s\"\nshutdown_timeout = \"500ms\"\n",
        ),
    )
    .await;
    let mut half = TcpStream::connect(sidecar.tcp_addr().unwrap())
        .await
        .unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let mut unix_half = UnixStream::connect(sidecar.socket_path().unwrap())
        .await
        .unwrap();
    unix_half.write_all(b"GET /heal").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), sidecar.shutdown())
        .await
        .expect("shutdown finished within 5 s despite half-sent requests");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(closed_within(&mut half, Duration::from_secs(1))
        .await
        .is_some());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_ignored_and_sigterm_still_exits_cleanly() {
    let server = mocks(CloudConfig::gcp()).await;
    let dir = temp_dir("limits-hup");
    let socket = dir.join("s2iam.sock");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s2iam"));
    cmd.env_clear();
    for (k, v) in s2iam::env::endpoints::mock_env(&server.cloud_url()) {
        cmd.env(k, v);
    }
    let mut child = cmd
        .env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1")
        .args(["serve", "--socket"])
        .arg(&socket)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    assert!(
        eventually(Duration::from_secs(20), async || socket.exists()
            && common::uds_request(&socket, "GET", "/healthz", &[])
                .await
                .is_ok())
        .await
    );
    for _ in 0..2 {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "SIGHUP ended the process"
        );
        assert_eq!(uds_get(&socket, "/healthz").await.0, 200);
    }
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // 143 on SIGTERM unless --exit-zero-on-sigterm (README "Lifecycle").
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert!(!socket.exists(), "socket removed");
    server.shutdown().await;
}
