//! OpenTelemetry traces over OTLP/HTTP (JSON), off until configured.
//!
//! Spans: `s2iam.detect`, `s2iam.identity`, `s2iam.exchange` (from
//! [`crate::client::Client`]), `s2iam.cache.refresh` (from
//! [`crate::cache::Cache`]), `s2iam.api_proxy.request` (from the API proxies'
//! `forward` module) and `s2iam.db_proxy.session` (from `s2iam_sidecar::dbproxy`).
//! A span started while another runs in the same task is its child (the current span travels in a Tokio task-local,
//! [`Span::scope`]). [`Tracer::span_from_remote`] continues a caller's W3C
//! `traceparent` and [`Span::traceparent`] gives the one to send on (the API
//! proxies put it in place of the caller's).
//!
//! Configured by the standard `OTEL_*` variables or the sidecar's `[otel]`
//! section ([`settings`]); with neither, a [`Tracer`] is off: a span is a `None`
//! and costs one branch.
//!
//! No secret in any attribute: attributes are set only here and at the call
//! sites listed above, from values that are not credentials (a provider name, a
//! token *kind*, a workspace group id, a status code, an error message, which
//! the crate's errors never fill with a credential); caller-chosen strings are
//! escaped and cut ([`crate::logging::field`]). The exporter's own headers
//! (`OTEL_EXPORTER_OTLP_HEADERS`, often an API key) are never logged or shown.
//!
//! Why an exporter of our own instead of the `opentelemetry` crates (the team
//! rule for heavy dependencies, README "Traces" has the figures):
//! `opentelemetry` 0.31 + `opentelemetry_sdk` + `opentelemetry-otlp` (features
//! `trace`, `http-json`, `reqwest-client`, no gRPC) + `tracing-opentelemetry`
//! bring 21 crates new to this tree, among them `tonic`, `prost` and
//! `proptest` even for OTLP/JSON, and a second `rand` (0.9). What the sidecar
//! needs of them is this module: span ids, parentage, W3C `traceparent`, the
//! standard sampler and `OTEL_*` variables, a bounded batch queue and one JSON
//! POST, on the HTTP client and JSON encoder already in the binary.

pub mod export;
pub mod settings;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::Rng as _;
use tokio::sync::{mpsc, oneshot};

pub use settings::{OtelError, OtelSettings, Sampler};

tokio::task_local! {
    static CURRENT: Option<Current>;
}

/// The span that runs in this task, as its children see it.
#[derive(Clone)]
struct Current {
    ctx: SpanContext,
}

/// A span's identity, as `traceparent` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// Whether the trace is recorded (the `traceparent` flag `01`).
    pub sampled: bool,
}

impl SpanContext {
    /// `00-<trace id>-<span id>-<flags>` (W3C Trace Context, version 00).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            if self.sampled { "01" } else { "00" }
        )
    }

    /// A `traceparent` header's value, or `None` if it is not a valid one
    /// (version `ff`, all-zero ids, wrong lengths or case: the header is then
    /// ignored, as the W3C specification says).
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four parts; a later version may add more.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !lower_hex(version) || !lower_hex(trace) || !lower_hex(span) || !lower_hex(flags) {
            return None;
        }
        let trace_id: [u8; 16] = hex::decode(trace).ok()?.try_into().ok()?;
        let span_id: [u8; 8] = hex::decode(span).ok()?.try_into().ok()?;
        let flags: [u8; 1] = hex::decode(flags).ok()?.try_into().ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }
}

/// What a span stands for (OTLP `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside s2iam.
    Internal,
    /// Serving a caller (an API proxy request, a database session).
    Server,
    /// A call to another service (the exchange).
    Client,
}

impl SpanKind {
    fn otlp(self) -> u8 {
        match self {
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        }
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u16> for Value {
    fn from(v: u16) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// A finished span, queued for export.
#[derive(Debug, Clone)]
pub struct SpanData {
    /// Its identity.
    pub ctx: SpanContext,
    /// The parent's span id (local or remote), if any.
    pub parent: Option<[u8; 8]>,
    /// `s2iam.exchange` etc.
    pub name: &'static str,
    /// Its kind.
    pub kind: SpanKind,
    /// Start (wall clock).
    pub start: SystemTime,
    /// End (wall clock).
    pub end: SystemTime,
    /// Attributes.
    pub attributes: Vec<(&'static str, Value)>,
    /// `Some(message)` when the work failed (status ERROR).
    pub error: Option<String>,
}

/// Starts spans and exports them; cheap to clone. [`Tracer::off`] (the
/// default) starts none.
#[derive(Clone, Default)]
pub struct Tracer {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    sampler: Sampler,
    /// Span times (the injected wall clock).
    clock: Arc<dyn crate::env::Clock>,
    queue: mpsc::Sender<SpanData>,
    dropped: AtomicU64,
    stop: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the exporter's headers.
        f.write_str(if self.inner.is_some() {
            "Tracer(on)"
        } else {
            "Tracer(off)"
        })
    }
}

impl Tracer {
    /// No tracing.
    pub fn off() -> Self {
        Self::default()
    }

    /// Tracing to `settings`' endpoint, or off for `None`. Starts the exporter
    /// task: call inside a Tokio runtime.
    pub fn start(
        settings: Option<&OtelSettings>,
        http: reqwest::Client,
        clock: Arc<dyn crate::env::Clock>,
    ) -> Self {
        let Some(settings) = settings else {
            return Self::off();
        };
        let (queue, receiver) = mpsc::channel(settings.max_queue_size);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(export::run(settings.clone(), http, receiver, stopped));
        tracing::info!(endpoint = %settings.endpoint_for_logs(), service = %crate::logging::field(&settings.service_name), "OpenTelemetry traces on");
        Self {
            inner: Some(Arc::new(Inner {
                sampler: settings.sampler,
                clock,
                queue,
                dropped: AtomicU64::new(0),
                stop: Mutex::new(Some((stop, task))),
            })),
        }
    }

    /// Whether spans are recorded at all.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Spans dropped because the export queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// A span, child of the task's current span if there is one, else the
    /// root of a new trace.
    pub fn span(&self, name: &'static str, kind: SpanKind) -> Span {
        let Some(inner) = &self.inner else {
            return Span::off();
        };
        let parent = CURRENT
            .try_with(|c| c.as_ref().map(|c| c.ctx))
            .ok()
            .flatten();
        Span::start(inner, name, kind, parent)
    }

    /// A span continuing the caller's trace (a `traceparent` header's value),
    /// or a new root if it has none or an invalid one.
    pub fn span_from_remote(
        &self,
        name: &'static str,
        kind: SpanKind,
        traceparent: Option<&str>,
    ) -> Span {
        let Some(inner) = &self.inner else {
            return Span::off();
        };
        let parent = traceparent.and_then(SpanContext::from_traceparent);
        Span::start(inner, name, kind, parent)
    }

    /// Sends what is queued and stops the exporter, waiting at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        let Some(inner) = &self.inner else {
            return;
        };
        let taken = inner.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, task)) = taken {
            let _ = stop.send(());
            if tokio::time::timeout(timeout, task).await.is_err() {
                tracing::warn!(
                    timeout_ms = timeout.as_millis() as u64,
                    "OpenTelemetry exporter did not finish sending spans in time"
                );
            }
        }
    }
}

/// A span in progress: ended (and queued for export) when dropped. A span of
/// a [`Tracer::off`] tracer is `None` inside and does nothing.
pub struct Span {
    rec: Option<Box<Recording>>,
}

struct Recording {
    inner: Arc<Inner>,
    data: SpanData,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.rec {
            Some(r) => write!(f, "Span({} {})", r.data.name, r.data.ctx.traceparent()),
            None => f.write_str("Span(off)"),
        }
    }
}

impl Span {
    /// A span that records nothing.
    pub fn off() -> Self {
        Self { rec: None }
    }

    fn start(
        inner: &Arc<Inner>,
        name: &'static str,
        kind: SpanKind,
        parent: Option<SpanContext>,
    ) -> Self {
        let mut rng = rand::thread_rng();
        let trace_id = parent.map_or_else(|| nonzero(&mut rng), |p| p.trace_id);
        let sampled = inner.sampler.sampled(parent, &trace_id);
        let span_id: [u8; 8] = loop {
            let id: [u8; 8] = rng.gen();
            if id != [0; 8] {
                break id;
            }
        };
        let now = inner.clock.now();
        Self {
            rec: Some(Box::new(Recording {
                inner: inner.clone(),
                data: SpanData {
                    ctx: SpanContext {
                        trace_id,
                        span_id,
                        sampled,
                    },
                    parent: parent.map(|p| p.span_id),
                    name,
                    kind,
                    start: now,
                    end: now,
                    attributes: Vec::new(),
                    error: None,
                },
            })),
        }
    }

    /// Whether this span records (tracing on; it may still be sampled out).
    pub fn is_on(&self) -> bool {
        self.rec.is_some()
    }

    /// Its identity, if tracing is on.
    pub fn context(&self) -> Option<SpanContext> {
        self.rec.as_ref().map(|r| r.data.ctx)
    }

    /// The `traceparent` a downstream service should get, if tracing is on.
    pub fn traceparent(&self) -> Option<String> {
        self.context().map(|c| c.traceparent())
    }

    /// Sets an attribute. Keys are static: callers name them in code.
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(r) = &mut self.rec {
            let value = value.into();
            match r.data.attributes.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => r.data.attributes.push((key, value)),
            }
        }
    }

    /// Marks the span failed with `message` (escaped and cut).
    pub fn fail(&mut self, message: &str) {
        if let Some(r) = &mut self.rec {
            r.data.error = Some(crate::logging::field(message));
        }
    }

    /// Runs `work` with this span as the task's current span, so spans started
    /// inside it are its children. A span that is off leaves the current one
    /// as it is.
    pub fn scope<F: Future>(&self, work: F) -> impl Future<Output = F::Output> {
        let current = match &self.rec {
            Some(r) => Some(Current { ctx: r.data.ctx }),
            None => CURRENT.try_with(|c| c.clone()).ok().flatten(),
        };
        CURRENT.scope(current, work)
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let Some(rec) = self.rec.take() else {
            return;
        };
        if !rec.data.ctx.sampled {
            return;
        }
        let Recording { inner, mut data } = *rec;
        data.end = inner.clock.now();
        if inner.queue.try_send(data).is_err() {
            // Full (or the exporter stopped): a span is never worth blocking for.
            inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A random id that is not all zero.
fn nonzero(rng: &mut impl rand::Rng) -> [u8; 16] {
    loop {
        let id: [u8; 16] = rng.gen();
        if id != [0; 16] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_invalid_ones_are_ignored() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = SpanContext::from_traceparent(v).unwrap();
        assert!(c.sampled);
        assert_eq!(c.traceparent(), v);
        let unsampled = SpanContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )
        .unwrap();
        assert!(!unsampled.sampled);
        // A later version with more fields is read as far as version 00 goes.
        assert!(SpanContext::from_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        )
        .is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert!(SpanContext::from_traceparent(bad).is_none(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_off_tracer_records_nothing_and_keeps_the_current_span() {
        let off = Tracer::off();
        let span = off.span("s2iam.detect", SpanKind::Internal);
        assert!(!span.is_on());
        assert!(span.traceparent().is_none());
        assert_eq!(format!("{off:?}"), "Tracer(off)");
        let parent = SpanContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        let seen = CURRENT
            .scope(Some(Current { ctx: parent }), async {
                span.scope(async { CURRENT.with(|c| c.as_ref().map(|c| c.ctx)) })
                    .await
            })
            .await;
        assert_eq!(seen, Some(parent));
    }
}
