//! The batch exporter: spans queue in a bounded channel ([`super::Span`]'s
//! drop never waits); one task sends them as OTLP/HTTP JSON every
//! `schedule_delay`, or as soon as `max_batch_size` are waiting, and once more
//! at shutdown. A failed POST is logged (at most once a minute) and its spans
//! dropped: traces are never worth retrying at the cost of memory.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, oneshot};

use super::{OtelSettings, SpanData, Value};

/// Runs until `stop` fires (then sends what is queued) or every sender is gone.
pub async fn run(
    settings: OtelSettings,
    http: reqwest::Client,
    mut queue: mpsc::Receiver<SpanData>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut exporter = Exporter {
        settings,
        http,
        last_warning: None,
    };
    let mut batch: Vec<SpanData> = Vec::new();
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let deadline = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => {
                while let Ok(span) = queue.try_recv() {
                    batch.push(span);
                }
                exporter.send_all(&mut batch).await;
                return;
            }
            span = queue.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= exporter.settings.max_batch_size {
                        exporter.send_all(&mut batch).await;
                        due = None;
                    } else if due.is_none() {
                        let now = tokio::time::Instant::now();
                        due = Some(now.checked_add(exporter.settings.schedule_delay).unwrap_or(now));
                    }
                }
                None => {
                    exporter.send_all(&mut batch).await;
                    return;
                }
            },
            _ = deadline => {
                exporter.send_all(&mut batch).await;
                due = None;
            }
        }
    }
}

struct Exporter {
    settings: OtelSettings,
    http: reqwest::Client,
    last_warning: Option<Instant>,
}

impl Exporter {
    async fn send_all(&mut self, batch: &mut Vec<SpanData>) {
        while !batch.is_empty() {
            let n = batch.len().min(self.settings.max_batch_size);
            let chunk: Vec<SpanData> = batch.drain(..n).collect();
            self.send(&chunk).await;
        }
    }

    async fn send(&mut self, spans: &[SpanData]) {
        let body = encode(&self.settings, spans).to_string();
        let mut request = self
            .http
            .post(self.settings.endpoint.clone())
            .timeout(self.settings.timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (k, v) in &self.settings.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let outcome = match request.send().await {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
            Err(e) => crate::http::error_chain(&e.without_url()),
        };
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(60))
        {
            self.last_warning = Some(now);
            tracing::warn!(
                endpoint = %self.settings.endpoint_for_logs(),
                spans = spans.len(),
                error = %outcome,
                "cannot export spans (dropped; warned at most once a minute)"
            );
        }
    }
}

/// One `ExportTraceServiceRequest` in OTLP's JSON form: ids in hex, enums as
/// numbers, 64-bit integers as strings.
pub fn encode(settings: &OtelSettings, spans: &[SpanData]) -> Json {
    let mut resource = vec![kv(
        "service.name",
        &Value::Str(settings.service_name.clone()),
    )];
    resource.extend(
        settings
            .resource
            .iter()
            .map(|(k, v)| kv(k, &Value::Str(v.clone()))),
    );
    let spans: Vec<Json> = spans.iter().map(span_json).collect();
    json!({
        "resourceSpans": [{
            "resource": {"attributes": resource},
            "scopeSpans": [{
                "scope": {"name": "s2iam", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans,
            }],
        }],
    })
}

fn span_json(s: &SpanData) -> Json {
    let mut span = json!({
        "traceId": hex::encode(s.ctx.trace_id),
        "spanId": hex::encode(s.ctx.span_id),
        "name": s.name,
        "kind": s.kind.otlp(),
        "startTimeUnixNano": unix_nanos(s.start),
        "endTimeUnixNano": unix_nanos(s.end),
        "attributes": s.attributes.iter().map(|(k, v)| kv(k, v)).collect::<Vec<_>>(),
        "status": match &s.error {
            Some(message) => json!({"code": 2, "message": message}),
            None => json!({"code": 0}),
        },
    });
    if let (Some(parent), Some(map)) = (s.parent, span.as_object_mut()) {
        map.insert("parentSpanId".into(), Json::String(hex::encode(parent)));
    }
    span
}

fn kv(key: &str, value: &Value) -> Json {
    let value = match value {
        Value::Str(s) => json!({"stringValue": s}),
        Value::Int(i) => json!({"intValue": i.to_string()}),
        Value::Bool(b) => json!({"boolValue": b}),
    };
    json!({"key": key, "value": value})
}

fn unix_nanos(t: SystemTime) -> String {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::super::{SpanContext, SpanKind};
    use super::*;

    #[test]
    fn encodes_otlp_json() {
        let settings = OtelSettings::resolve(
            &crate::env::Env::from_pairs([
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_RESOURCE_ATTRIBUTES", "host.name=h1"),
            ]),
            &Default::default(),
        )
        .unwrap()
        .unwrap();
        let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_123);
        let span = SpanData {
            ctx: SpanContext {
                trace_id: [0xab; 16],
                span_id: [0xcd; 8],
                sampled: true,
            },
            parent: Some([0xef; 8]),
            name: "s2iam.exchange",
            kind: SpanKind::Client,
            start,
            end: start + Duration::from_millis(5),
            attributes: vec![
                ("s2iam.jwt_type", Value::from("api")),
                ("http.response.status_code", Value::from(200u16)),
            ],
            error: Some("boom".into()),
        };
        let j = encode(&settings, &[span]);
        let rs = &j["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"],
            "s2iam"
        );
        assert_eq!(rs["resource"]["attributes"][1]["key"], "host.name");
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "abababababababababababababababab");
        assert_eq!(s["spanId"], "cdcdcdcdcdcdcdcd");
        assert_eq!(s["parentSpanId"], "efefefefefefefef");
        assert_eq!(s["kind"], 3);
        assert_eq!(s["startTimeUnixNano"], "1700000000000000123");
        assert_eq!(s["endTimeUnixNano"], "1700000000005000123");
        assert_eq!(s["attributes"][1]["value"]["intValue"], "200");
        assert_eq!(s["status"]["code"], 2);
    }
}
