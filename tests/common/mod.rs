//! Shared test helpers: a mock cloud and auth service, ProviderConfigs pointed at
//! them, and a tiny HTTP client for Unix sockets.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use s2iam::env::{Env, Fs};
use s2iam::ProviderConfig;
use s2iam_testserver::{CloudConfig, TestServer, TestServerConfig};

pub async fn mocks(cloud: CloudConfig) -> TestServer {
    TestServer::start(TestServerConfig::new(cloud))
        .await
        .expect("test server starts")
}

/// Environment pointing every endpoint at `server`, plus `extra`.
pub fn mock_env(server: &TestServer, extra: &[(&str, &str)]) -> Env {
    Env::from_pairs(
        s2iam::env::endpoints::mock_env(&server.cloud_url())
            .into_iter()
            .chain(extra.iter().map(|(k, v)| (k.to_string(), v.to_string()))),
    )
}

pub fn provider_config(server: &TestServer) -> ProviderConfig {
    ProviderConfig::with_env(mock_env(server, &[]), Fs::from_files::<PathBuf, String>([]))
}

/// A fresh temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "s2iam-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One HTTP/1.1 request over a Unix socket: (status, content-type, body).
pub async fn uds_request(
    socket: &Path,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<bytes::Bytes>::new()).unwrap())
        .await
        .map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, ctype, String::from_utf8_lossy(&body).into_owned()))
}

pub async fn uds_get(socket: &Path, path_and_query: &str) -> (u16, String) {
    let (status, _, body) = uds_request(socket, "GET", path_and_query, &[])
        .await
        .expect("request over the unix socket");
    (status, body)
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually(within: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// The `sub` claim of a JWT (unverified).
pub fn sub_of(jwt: &str) -> Option<String> {
    s2iam::token::Claims::decode_unverified(jwt).and_then(|c| c.sub)
}

/// A child process killed and reaped when the test ends, pass or fail.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The mock cloud (GCP) and auth service, issuing tokens that live `expiry`.
pub async fn mocks_with_expiry(expiry: Duration) -> TestServer {
    TestServer::start(TestServerConfig::new(CloudConfig::gcp()).with_auth(
        s2iam_testserver::AuthConfig {
            token_expiry: expiry,
            ..s2iam_testserver::AuthConfig::default()
        },
    ))
    .await
    .expect("test server starts")
}

/// The real `s2iam` binary with an empty environment but `PATH`, every endpoint
/// pointed at `server`.
#[allow(clippy::disallowed_methods)] // the test process's own PATH
pub fn s2iam_cmd(server: &TestServer) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_s2iam"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in s2iam::env::endpoints::mock_env(&server.cloud_url()) {
        cmd.env(k, v);
    }
    cmd.env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1");
    cmd
}

/// A sidecar configuration for in-process tests: `toml` read with an empty
/// environment, the Unix socket in `dir`, the auth service at `server` over
/// plain HTTP. Tests add their own listeners and timings.
pub fn sidecar_config(server: &TestServer, dir: &Path, toml: &str) -> s2iam::config::ServeConfig {
    let mut c = s2iam::config::ServeConfig::from_toml(
        toml,
        &Env::from_pairs::<&str, &str>([]),
        &s2iam::config::ServeOverrides::default(),
    )
    .expect("test config parses");
    c.listen.socket = Some(dir.join("s2iam.sock"));
    c.client.server_url = Some(server.exchange_url_template());
    c.client.allow_http = true;
    c
}

/// The sidecar, in-process, on the mocks of `server`.
pub async fn start_sidecar(
    server: &TestServer,
    config: s2iam::config::ServeConfig,
) -> s2iam::serve::Sidecar {
    s2iam::serve::Sidecar::start(config, provider_config(server))
        .await
        .expect("sidecar starts")
}

/// How many token exchanges the mock auth service has answered.
pub fn exchanges(server: &TestServer) -> usize {
    server.auth_requests().count("/auth/iam/")
}

/// Waits (up to 15 s) for `/readyz` on `socket` to answer 200.
pub async fn wait_ready(socket: &Path) {
    assert!(
        eventually(Duration::from_secs(15), async || uds_get(socket, "/readyz")
            .await
            .0
            == 200)
        .await,
        "sidecar ready"
    );
}

pub mod google;
