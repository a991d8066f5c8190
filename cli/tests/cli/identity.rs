//! `s2iam identity`: who this workload is, without secrets.

use crate::common::mocks;
use crate::{clouds, stdout_of};

#[tokio::test]
async fn identity_shows_who_without_secrets() {
    for (cloud, name) in clouds() {
        let server = mocks(cloud).await;
        let text = stdout_of(&server, &["identity", "--json"]).await;
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["provider"], name);
        assert!(!doc["identifier"].as_str().unwrap().is_empty());
        assert!(!text.contains("eyJ"), "{name}: a token leaked: {text}");
        let text = stdout_of(&server, &["identity"]).await;
        // Keys are aligned to the longest one, which differs by cloud.
        assert!(
            text.lines().any(|l| l
                .strip_prefix("provider:")
                .is_some_and(|v| v.trim() == name)),
            "{text}"
        );
        server.shutdown().await;
    }
}
