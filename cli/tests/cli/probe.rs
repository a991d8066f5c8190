//! `s2iam probe` (the Kubernetes exec probe), the real binary against a sidecar
//! started in-process with the mock cloud and auth service.

use std::path::Path;
use std::time::Duration;

use crate::common::{eventually, mocks, provider_config, temp_dir};
use s2iam::env::Env;
use s2iam::exchange::JwtType;
use s2iam_sidecar::config::{ServeConfig, ServeOverrides, WarmToken};
use s2iam_sidecar::serve::Sidecar;
use s2iam_testserver::CloudConfig;

/// Runs `s2iam probe ARGS`: (exit code, stdout, stderr).
async fn probe(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_s2iam"))
        .arg("probe")
        .args(args)
        .env_remove("S2IAM_SOCKET")
        .output()
        .await
        .expect("s2iam runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn socket_arg(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[tokio::test]
async fn probe_follows_health_and_readiness() {
    let server = mocks(CloudConfig::gcp()).await;
    server.auth().update(|c| c.fail_verification = true);
    let dir = temp_dir("probe");
    let mut cfg = ServeConfig::from_toml(
        "",
        &Env::from_pairs::<&str, &str>([]),
        &ServeOverrides::default(),
    )
    .unwrap();
    cfg.listen.socket = Some(dir.join("s2iam.sock"));
    cfg.client.server_url = Some(server.exchange_url_template());
    cfg.client.allow_http = true;
    cfg.cache.tick = Duration::from_millis(50);
    cfg.cache.policy.retry_base = Duration::from_millis(100);
    cfg.cache.policy.retry_max = Duration::from_millis(300);
    cfg.tokens = vec![WarmToken {
        jwt_type: JwtType::Database,
        workspace_group_id: Some("wg-probe".into()),
        assume_role: None,
        gcp_audience: "https://authsvc.singlestore.com".into(),
        sink: None,
    }];
    let sidecar = Sidecar::start(cfg, provider_config(&server))
        .await
        .expect("sidecar starts");
    let socket = socket_arg(&sidecar.socket_path().unwrap());

    // Alive at once; not ready while the auth service refuses.
    let (code, out, err) = probe(&["--socket", &socket, "/healthz"]).await;
    assert_eq!(code, 0, "healthz: {out} {err}");
    assert!(out.is_empty(), "a passing probe prints nothing: {out}");
    let (code, _, err) = probe(&["--socket", &socket, "/readyz"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("GET /readyz answered 503"), "{err}");
    assert!(err.contains("database/wg-probe"), "the reasons: {err}");

    // Ready once the token is warm; /readyz is the default path.
    server.auth().update(|c| c.fail_verification = false);
    assert!(
        eventually(Duration::from_secs(15), async || probe(&[
            "--socket", &socket
        ])
        .await
        .0 == 0)
        .await,
        "probe passes once the sidecar is ready"
    );
    // S2IAM_SOCKET is the fallback for --socket.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_s2iam"))
        .args(["probe", "/readyz"])
        .env("S2IAM_SOCKET", &socket)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());

    let (code, _, err) = probe(&["--socket", &socket, "/nope"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("answered 404"), "{err}");
    let (code, _, err) = probe(&["--socket", &socket, "readyz"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("must start with '/'"), "{err}");

    sidecar.shutdown().await;
    let (code, _, err) = probe(&["--socket", &socket, "/healthz"]).await;
    assert_eq!(code, 1, "no sidecar, no pass");
    assert!(err.contains("cannot reach the sidecar"), "{err}");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn probe_times_out_on_a_silent_socket() {
    let dir = temp_dir("probe-silent");
    let path = dir.join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    // Accept and hold connections without answering.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let started = std::time::Instant::now();
    let (code, _, err) = probe(&["--socket", &socket_arg(&path), "--timeout", "300ms"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no answer within"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
