//! Shared test helpers: a mock cloud and auth service, ProviderConfigs pointed at
//! them, and a tiny HTTP client for Unix sockets.
//!
//! The one copy for every package's integration tests: the sidecar's
//! (`sidecar/tests`) and the binary's (`cli/tests`) include it with
//! `#[path = ".../tests/common/mod.rs"] mod common;`, so a helper is written once
//! whichever crate a test exercises (the library's own `tests/exchange.rs` needs
//! none). A dev crate could not hand out the binary: `CARGO_BIN_EXE_s2iam` exists
//! only in the test crates of the package that has the binary (`s2iam-cli`).

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
    let mut cmd = s2iam_clouds(server);
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("S2IAM_JWT_SERVER_URL", server.exchange_url_template())
        .env("S2IAM_ALLOW_HTTP", "1");
    cmd
}

/// A sidecar configuration for in-process tests: `toml` read with an empty
/// environment, the Unix socket in `dir`, the auth service at `server` over
/// plain HTTP. Tests add their own listeners and timings.
pub fn sidecar_config(
    server: &TestServer,
    dir: &Path,
    toml: &str,
) -> s2iam_sidecar::config::ServeConfig {
    let mut c = mock_auth_config(server, toml);
    c.listen.socket = Some(dir.join("s2iam.sock"));
    c
}

/// The same, listening on a random loopback TCP port only (no Unix socket).
pub fn tcp_sidecar_config(server: &TestServer, toml: &str) -> s2iam_sidecar::config::ServeConfig {
    let mut c = mock_auth_config(server, toml);
    c.listen.socket = None;
    c.listen.tcp = Some("127.0.0.1:0".parse().expect("a socket address"));
    c
}

/// `toml` read with an empty environment, the auth service at `server` over
/// plain HTTP; the listeners as the file (or its defaults) says.
fn mock_auth_config(server: &TestServer, toml: &str) -> s2iam_sidecar::config::ServeConfig {
    let mut c = s2iam_sidecar::config::ServeConfig::from_toml(
        toml,
        &Env::from_pairs::<&str, &str>([]),
        &s2iam_sidecar::config::ServeOverrides::default(),
    )
    .expect("test config parses");
    c.client.server_url = Some(server.exchange_url_template());
    c.client.allow_http = true;
    c
}

/// The sidecar, in-process, on the mocks of `server`.
pub async fn start_sidecar(
    server: &TestServer,
    config: s2iam_sidecar::config::ServeConfig,
) -> s2iam_sidecar::serve::Sidecar {
    s2iam_sidecar::serve::Sidecar::start(config, provider_config(server))
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

/// The real `s2iam` binary with an empty environment and every cloud endpoint
/// pointed at `server`; no auth service, no `PATH` (tests add what they need).
pub fn s2iam_clouds(server: &TestServer) -> std::process::Command {
    let mut cmd = std::process::Command::new(s2iam_bin());
    cmd.env_clear();
    for (k, v) in s2iam::env::endpoints::mock_env(&server.cloud_url()) {
        cmd.env(k, v);
    }
    cmd
}

/// The `s2iam` binary cargo built for this test: only the `s2iam-cli` package's
/// tests have it (`CARGO_BIN_EXE_s2iam`); a test elsewhere that asks for it fails
/// saying where it belongs.
pub fn s2iam_bin() -> &'static str {
    match option_env!("CARGO_BIN_EXE_s2iam") {
        Some(path) => path,
        None => panic!("only tests of the s2iam-cli package (cli/tests) run the s2iam binary"),
    }
}

/// Runs `cmd` to completion off the async runtime.
pub async fn run(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"))
        .await
        .unwrap()
}

/// Bytes (a process's stdout or stderr) as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends `sig` (a name such as `TERM`) to `pid` with `kill`.
pub fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

/// Waits for `child` to exit, failing the test if it has not within `within`.
pub async fn wait_exit(
    child: &mut std::process::Child,
    within: Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process did not exit within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback URL where nothing listens.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// The claims of a JWT, decoded without verifying it.
pub fn claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The token of an `Authorization: Bearer` identity header.
pub fn bearer(headers: &s2iam::IdentityHeaders) -> String {
    let value = headers
        .get("Authorization")
        .expect("Authorization")
        .expose();
    value
        .strip_prefix("Bearer ")
        .expect("a Bearer token")
        .to_string()
}

/// An auth service that answers every exchange with `body` (HTTP 200); its
/// exchange URL template.
pub async fn fixed_auth(body: String) -> String {
    let app = axum::Router::new().route(
        "/auth/iam/{t}",
        axum::routing::post(move || {
            let body = body.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/auth/iam/:jwtType")
}

/// A JWT-shaped string with `payload` as its claims and a signature that is not one.
pub fn unsigned_jwt(payload: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(payload))
}

/// An API token for `headers` and `identity` from the mock auth service of
/// `server`, which verifies them with the cloud.
pub async fn exchange_api_token(
    server: &TestServer,
    headers: &s2iam::IdentityHeaders,
    identity: &s2iam::CloudIdentity,
) -> Result<s2iam::Token, s2iam::exchange::ExchangeError> {
    use s2iam::exchange::{ExchangeClient, ExchangeConfig, ExchangeRequest, JwtType, ServerUrl};
    let url = ServerUrl::parse(&server.exchange_url_template(), true).unwrap();
    let req = ExchangeRequest {
        jwt_type: JwtType::Api,
        workspace_group_id: None,
        headers,
        identity,
    };
    ExchangeClient::new(ExchangeConfig::default())
        .exchange(&url, req, Duration::from_secs(10))
        .await
}
