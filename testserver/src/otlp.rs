//! A small OTLP/HTTP trace receiver: what an OpenTelemetry Collector's
//! `otlp` receiver on port 4318 accepts for traces, kept for tests to read.
//!
//! - `POST /v1/traces` with `Content-Type: application/json` (OTLP's JSON
//!   form): 200 `{"partialSuccess": {}}`; every span is kept. A body that is not
//!   an `ExportTraceServiceRequest` gets 400; another content type 415 (the mock
//!   understands JSON only).
//! - `GET /_mock/otlp/spans`: `[ReceivedSpan]`; `DELETE` clears them.
//!
//! [`MockOtlp::raw_bodies`] keeps every body as received, so a test can
//! assert that no secret is anywhere in what was exported, and
//! [`MockOtlp::headers`] the request headers (an exporter's API key).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::server::{self, Listener, RequestLog};
use crate::util::json_error;
use crate::{Faults, StartError};

/// One span as received, flattened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of its resource.
    pub service_name: String,
    /// Hex, 32 digits.
    pub trace_id: String,
    /// Hex, 16 digits.
    pub span_id: String,
    /// Hex, 16 digits; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// The span's name.
    pub name: String,
    /// OTLP `SpanKind` (1 internal, 2 server, 3 client).
    pub kind: u64,
    /// Start and end, nanoseconds since the epoch.
    pub start_unix_nano: u128,
    /// End.
    pub end_unix_nano: u128,
    /// Attributes, values as strings.
    pub attributes: BTreeMap<String, String>,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status_code: u64,
}

#[derive(Default)]
struct Store {
    spans: Vec<ReceivedSpan>,
    bodies: Vec<String>,
    headers: Vec<BTreeMap<String, String>>,
}

/// The receiver's state. Cheap to clone.
#[derive(Clone, Default)]
pub struct MockOtlp {
    store: Arc<Mutex<Store>>,
}

impl MockOtlp {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    /// Every request body as received.
    pub fn raw_bodies(&self) -> Vec<String> {
        self.lock().bodies.clone()
    }

    /// Every request's headers (lowercase names).
    pub fn headers(&self) -> Vec<BTreeMap<String, String>> {
        self.lock().headers.clone()
    }

    /// Forgets everything received.
    pub fn clear(&self) {
        *self.lock() = Store::default();
    }

    /// The routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/traces", post(receive))
            .route("/_mock/otlp/spans", get(list).delete(clear))
            .with_state(self.clone())
    }
}

async fn receive(State(otlp): State<MockOtlp>, headers: HeaderMap, body: Bytes) -> Response {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the mock OTLP receiver takes application/json only",
        );
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let parsed = serde_json::from_str::<Value>(&text)
        .map_err(|e| e.to_string())
        .and_then(|v| flatten(&v));
    let spans = match parsed {
        Ok(spans) => spans,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("not an OTLP ExportTraceServiceRequest: {e}"),
            )
        }
    };
    let mut store = otlp.lock();
    store.spans.extend(spans);
    store.bodies.push(text);
    store.headers.push(
        headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    );
    (StatusCode::OK, Json(json!({"partialSuccess": {}}))).into_response()
}

async fn list(State(otlp): State<MockOtlp>) -> Json<Vec<ReceivedSpan>> {
    Json(otlp.spans())
}

async fn clear(State(otlp): State<MockOtlp>) -> StatusCode {
    otlp.clear();
    StatusCode::NO_CONTENT
}

/// The spans of one `ExportTraceServiceRequest`, checked as a collector would:
/// ids of the right length in hex, a name, numeric times.
fn flatten(v: &Value) -> Result<Vec<ReceivedSpan>, String> {
    let mut out = Vec::new();
    let resource_spans = v["resourceSpans"]
        .as_array()
        .ok_or("no resourceSpans array")?;
    for rs in resource_spans {
        let resource = attributes(&rs["resource"]["attributes"])?;
        let service_name = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs["scopeSpans"].as_array().ok_or("no scopeSpans array")? {
            for s in ss["spans"].as_array().ok_or("no spans array")? {
                let id = |field: &str, len: usize| -> Result<String, String> {
                    let id = s[field].as_str().ok_or(format!("no {field}"))?;
                    if id.len() != len || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(format!("{field} is not {len} hex digits: {id:?}"));
                    }
                    Ok(id.to_string())
                };
                let nanos = |field: &str| -> Result<u128, String> {
                    match &s[field] {
                        Value::String(t) => t.parse().map_err(|_| format!("{field}: {t:?}")),
                        Value::Number(n) => n
                            .as_u64()
                            .map(u128::from)
                            .ok_or(format!("{field} is not a count of nanoseconds")),
                        _ => Err(format!("no {field}")),
                    }
                };
                let parent = match s.get("parentSpanId") {
                    None => None,
                    Some(Value::String(p)) if p.is_empty() => None,
                    Some(_) => Some(id("parentSpanId", 16)?),
                };
                out.push(ReceivedSpan {
                    service_name: service_name.clone(),
                    trace_id: id("traceId", 32)?,
                    span_id: id("spanId", 16)?,
                    parent_span_id: parent,
                    name: s["name"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .ok_or("a span without a name")?
                        .to_string(),
                    kind: s["kind"].as_u64().unwrap_or(0),
                    start_unix_nano: nanos("startTimeUnixNano")?,
                    end_unix_nano: nanos("endTimeUnixNano")?,
                    attributes: attributes(&s["attributes"])?,
                    status_code: s["status"]["code"].as_u64().unwrap_or(0),
                });
            }
        }
    }
    Ok(out)
}

/// `[{"key", "value": {"stringValue"|"intValue"|"boolValue"|"doubleValue"}}]`
/// as key → value text.
fn attributes(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let Some(list) = v.as_array() else {
        return Ok(out);
    };
    for kv in list {
        let key = kv["key"].as_str().ok_or("an attribute without a key")?;
        let value = &kv["value"];
        let text = if let Some(s) = value["stringValue"].as_str() {
            s.to_string()
        } else if let Some(i) = value.get("intValue") {
            match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        } else if let Some(b) = value["boolValue"].as_bool() {
            b.to_string()
        } else if let Some(d) = value["doubleValue"].as_f64() {
            d.to_string()
        } else {
            return Err(format!(
                "attribute {key:?} has no value the mock understands"
            ));
        };
        out.insert(key.to_string(), text);
    }
    Ok(out)
}

/// The receiver on its own listener.
pub struct MockOtlpServer {
    otlp: MockOtlp,
    listener: Listener,
    faults: Faults,
}

impl MockOtlpServer {
    /// Listens on `addr` (port 0: a free port).
    pub async fn start(addr: SocketAddr) -> Result<Self, StartError> {
        let otlp = MockOtlp::default();
        let faults = Faults::default();
        let tcp = server::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let listener = server::spawn(tcp, otlp.router(), faults.clone(), RequestLog::default())
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Self {
            otlp,
            listener,
            faults,
        })
    }

    /// `http://127.0.0.1:port`: what `OTEL_EXPORTER_OTLP_ENDPOINT` takes.
    pub fn url(&self) -> String {
        self.listener.url()
    }

    /// The receiver, to read what arrived.
    pub fn otlp(&self) -> &MockOtlp {
        &self.otlp
    }

    /// Fault rules of this listener (e.g. 503 to see an exporter cope).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Stops the listener.
    pub async fn shutdown(self) {
        self.listener.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_a_request_and_refuses_malformed_ids() {
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s2iam"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "0123456789abcdef0123456789abcdef", "spanId": "0123456789abcdef",
                "parentSpanId": "", "name": "x", "kind": 2,
                "startTimeUnixNano": "1", "endTimeUnixNano": 2,
                "attributes": [{"key": "n", "value": {"intValue": "7"}}],
                "status": {"code": 2}
            }]}]
        }]});
        let spans = flatten(&body).unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].service_name, "s2iam");
        assert_eq!(spans[0].parent_span_id, None);
        assert_eq!(spans[0].attributes["n"], "7");
        assert_eq!(spans[0].end_unix_nano, 2);
        let mut bad = body.clone();
        bad["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = json!("xyz");
        assert!(flatten(&bad).unwrap_err().contains("spanId"));
    }
}
