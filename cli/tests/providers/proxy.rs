//! Proxies: the global services (here STS) go through `HTTPS_PROXY`/`HTTP_PROXY`
//! as the cloud SDKs do; the metadata services and loopback never do.
//!
//! The "proxy" is a listener on loopback that records each request line and answers
//! 502; the STS host is a reserved `.invalid` name that only the proxy ever sees.

use std::sync::{Arc, Mutex};

use crate::common::mocks;
use s2iam::env::ProviderConfig;
use s2iam::env::{Env, Fs};
use s2iam::provider::aws::AwsProvider;
use s2iam::provider::IdentityRequest;
use s2iam_testserver::CloudConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fake proxy: records the first line of every request, answers 502.
async fn fake_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let text = String::from_utf8_lossy(&buf[..n]);
                log.lock()
                    .unwrap()
                    .push(text.lines().next().unwrap_or("").to_string());
                let _ = conn
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn sts_goes_through_the_proxy_and_metadata_never_does() {
    let server = mocks(CloudConfig::aws()).await;
    let (proxy, seen) = fake_proxy().await;
    let env = Env::from_pairs([
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.cloud_url()),
        (
            "AWS_ENDPOINT_URL_STS",
            "http://sts.s2iam-test.invalid".to_string(),
        ),
        ("HTTP_PROXY", proxy.clone()),
        ("https_proxy", proxy),
    ]);
    let cfg = ProviderConfig::with_env(env, Fs::from_files::<&str, &str>([]));
    let err = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("502"), "{err}");
    let lines = seen.lock().unwrap().clone();
    assert!(!lines.is_empty(), "the STS call went through the proxy");
    for line in &lines {
        assert!(
            line.starts_with("POST http://sts.s2iam-test.invalid/"),
            "{line}"
        );
    }
    assert!(
        server.cloud_requests().count("/latest/") > 0,
        "IMDS was reached directly, not through the proxy"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn loopback_services_bypass_the_proxy() {
    let server = mocks(CloudConfig::aws()).await;
    let (proxy, seen) = fake_proxy().await;
    let env = Env::from_pairs(
        s2iam::env::endpoints::mock_env(&server.cloud_url())
            .into_iter()
            .chain([
                ("HTTP_PROXY".to_string(), proxy),
                ("NO_PROXY".to_string(), "example.com".to_string()),
            ]),
    );
    let cfg = ProviderConfig::with_env(env, Fs::from_files::<&str, &str>([]));
    let (_, identity) = AwsProvider::default()
        .identity(&cfg, &IdentityRequest::default())
        .await
        .expect("loopback STS is reached directly");
    assert!(identity.identifier.starts_with("arn:aws:sts::"));
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing went through the proxy"
    );
    server.shutdown().await;
}
