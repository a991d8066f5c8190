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

/// A client that never goes through a proxy, with a hang bound.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
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

    /// The `error` field of a JSON answer ("" when absent).
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The `message` field of a JSON answer ("" when absent).
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The `jwt` of an exchange's answer.
    pub fn jwt(&self) -> String {
        self.json()["jwt"].as_str().unwrap().to_string()
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
