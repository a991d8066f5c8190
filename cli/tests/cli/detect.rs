//! `s2iam detect`: the cloud and how it was found, the fast path, and a failed
//! detection explained per provider.

use crate::common::mocks;
use crate::{clouds, run, s2iam, stderr, stdout, stdout_of, text};
use s2iam_testserver::CloudConfig;
use std::time::{Duration, Instant};

#[tokio::test]
async fn detect_reports_the_cloud_and_how() {
    for (cloud, name) in clouds() {
        let server = mocks(cloud).await;
        let doc: serde_json::Value =
            serde_json::from_str(&stdout_of(&server, &["detect", "--json"]).await).unwrap();
        assert_eq!(doc["provider"], name);
        assert_eq!(doc["method"], "metadata");

        let text = stdout_of(&server, &["detect"]).await;
        assert!(
            text.starts_with(&format!("{name} (its metadata service answered")),
            "{text}"
        );
        server.shutdown().await;
    }
}

#[tokio::test]
async fn detect_with_no_cloud_fails_fast_and_says_why() {
    let server = mocks(CloudConfig::none()).await;
    let mut cmd = s2iam(&server);
    cmd.arg("detect");
    let started = Instant::now();
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no cloud provider detected"), "{err}");
    for p in ["aws:", "gcp:", "azure:"] {
        assert!(
            err.contains(p),
            "per-provider reason for {p} missing: {err}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn detect_uses_the_environment_fast_path() {
    let server = mocks(CloudConfig::none()).await;
    let mut cmd = s2iam(&server);
    cmd.args(["detect", "--json"])
        .env("AWS_REGION", "eu-west-1");
    let out = run(cmd).await;
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["provider"], "aws");
    assert_eq!(doc["method"], "environment");
    assert!(doc["evidence"].as_str().unwrap().contains("AWS_REGION"));
    assert_eq!(
        server.cloud_requests().entries().len(),
        0,
        "no I/O on the fast path"
    );

    // --force-detect ignores the hint and probes.
    let mut cmd = s2iam(&server);
    cmd.args(["detect", "--force-detect"])
        .env("AWS_REGION", "eu-west-1");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
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
