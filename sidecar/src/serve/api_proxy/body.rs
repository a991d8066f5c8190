//! Bodies that stream through the proxy frame by frame (nothing is buffered) and
//! count their bytes for `/metrics`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;

use super::super::metrics::Metrics;

/// What a body error is boxed as.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Counters are updated every this many bytes and at the end, not per frame.
const FLUSH_EVERY: u64 = 1 << 20;

/// `inner`, counting the bytes of its data frames into
/// `s2iam_api_proxy_bytes_total{proxy, direction}`, and a response body that
/// fails midway (the upstream broke off) into
/// `s2iam_api_proxy_upstream_errors_total{proxy, reason="body"}`.
pub struct Counted<B> {
    inner: B,
    metrics: Arc<Metrics>,
    proxy: Arc<str>,
    direction: &'static str,
    pending: u64,
}

impl<B> Counted<B> {
    /// Wraps `inner`, counting its bytes under `proxy` and `direction`.
    pub fn new(inner: B, metrics: Arc<Metrics>, proxy: Arc<str>, direction: &'static str) -> Self {
        Self {
            inner,
            metrics,
            proxy,
            direction,
            pending: 0,
        }
    }

    fn flush(&mut self) {
        if self.pending > 0 {
            self.metrics
                .api_proxy
                .add_bytes(&self.proxy, self.direction, self.pending);
            self.pending = 0;
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.pending = this.pending.saturating_add(data.len() as u64);
                    if this.pending >= FLUSH_EVERY {
                        this.flush();
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.flush();
                if this.direction == "downstream" {
                    this.metrics
                        .api_proxy
                        .count_upstream_error(&this.proxy, "body");
                }
            }
            Poll::Ready(_) => this.flush(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A complete small body (the proxy's own JSON errors).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
