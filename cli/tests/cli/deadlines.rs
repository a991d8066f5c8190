//! `--timeout` and the sidecar's request budget are overall deadlines: a metadata
//! service or auth service that accepts and never answers (the test server's
//! blackhole fault) cannot hold a request past them, on any cloud (issue 13:
//! GCP took 27 s and Azure 31 s with `--timeout 2s`).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{eventually, mocks, provider_config, temp_dir, uds_get};
use s2iam::env::Env;
use s2iam_sidecar::config::{ServeConfig, ServeOverrides};
use s2iam_sidecar::serve::Sidecar;
use s2iam_testserver::{CloudConfig, FaultRule, TestServer};

/// A generous bound: catches the 27-31 s of before, not scheduling noise.
const BOUND: Duration = Duration::from_secs(6);

fn clouds() -> [(&'static str, CloudConfig, &'static str); 3] {
    [
        ("gcp", CloudConfig::gcp(), "/computeMetadata"),
        ("azure", CloudConfig::azure(), "/metadata"),
        ("aws", CloudConfig::aws(), "/latest"),
    ]
}

async fn cli(server: &TestServer, args: &[&str]) -> (Option<i32>, String, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_s2iam"));
    cmd.env_clear();
    for (k, v) in s2iam::env::endpoints::mock_env(&server.cloud_url()) {
        cmd.env(k, v);
    }
    cmd.args(args).args([
        "--server-url",
        &server.exchange_url_template(),
        "--allow-http",
    ]);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err, started.elapsed())
}

#[tokio::test]
async fn cli_timeout_holds_when_metadata_never_answers() {
    for (cloud, config, path) in clouds() {
        let server = mocks(config).await;
        server.cloud_faults().add(FaultRule::blackhole(path));
        // With the provider given (no detection) and with detection.
        for provider in [Some(cloud), None] {
            let mut args = vec!["--jwt-type", "api", "--timeout", "2s"];
            if let Some(p) = provider {
                args.extend(["--provider", p]);
            }
            let (code, err, took) = cli(&server, &args).await;
            assert_eq!(code, Some(1), "{cloud} {provider:?}: {err}");
            assert!(took < BOUND, "{cloud} {provider:?}: took {took:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
        assert_eq!(server.auth_requests().count("/auth/iam/"), 0);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn cli_timeout_holds_when_the_auth_service_never_answers() {
    for (cloud, config, _) in clouds() {
        let server = mocks(config).await;
        server.auth_faults().add(FaultRule::blackhole("/auth/iam"));
        let (code, err, took) = cli(
            &server,
            &["--jwt-type", "api", "--timeout", "2s", "--provider", cloud],
        )
        .await;
        assert_eq!(code, Some(1), "{cloud}: {err}");
        assert!(took < BOUND, "{cloud}: took {took:?}: {err}");
        assert!(err.contains("did not answer within"), "{cloud}: {err}");
        server.shutdown().await;
    }
}

/// The sidecar's budget (`auth.timeout`) covers the identity step too: a
/// metadata service that stops answering after startup yields a 503 in time.
#[tokio::test]
async fn sidecar_request_budget_covers_identity() {
    for (cloud, config, path) in clouds() {
        let server = mocks(config).await;
        let mut c = ServeConfig::from_toml(
            "[auth]\ntimeout = \"2s\"\n",
            &Env::from_pairs::<&str, &str>([]),
            &ServeOverrides::default(),
        )
        .unwrap();
        c.listen.socket = Some(temp_dir("deadline").join("s2iam.sock"));
        c.listen.tcp = None;
        c.client.server_url = Some(server.exchange_url_template());
        c.client.allow_http = true;
        let sidecar = Sidecar::start(c, provider_config(&server))
            .await
            .expect("sidecar starts");
        let socket = sidecar.socket_path().unwrap();
        // Detection done while the metadata service still answered.
        let ready = eventually(Duration::from_secs(20), async || {
            uds_get(&socket, "/readyz").await.0 == 200
        })
        .await;
        assert!(ready, "{cloud}: the sidecar never became ready");
        server.cloud_faults().add(FaultRule::blackhole(path));
        let started = Instant::now();
        let (status, body) = uds_get(&socket, "/v1/token/api").await;
        let took = started.elapsed();
        assert_eq!(status, 503, "{cloud}: {body}");
        assert!(took < BOUND, "{cloud}: took {took:?}: {body}");
        sidecar.shutdown().await;
        server.shutdown().await;
    }
}
