//! Helpers shared by the mock-service tests: start a test server, a plain client,
//! and a reply captured whole.

#![allow(dead_code)]

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use s2iam_testserver::{CloudConfig, TestServer, TestServerConfig};
use serde_json::Value;

pub async fn start(cloud: CloudConfig) -> TestServer {
    TestServer::start(TestServerConfig::new(cloud))
        .await
        .expect("test server starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A response read to the end.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request reaches the mock");
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}
