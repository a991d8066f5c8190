//! The HTTP/1.1 connection driver every HTTP surface (the token API, the API
//! proxies) runs its connections on: hyper with a header-size limit, a
//! header-read timeout (a request head, or the next one on a keep-alive
//! connection, must arrive within it), an idle timeout, a bounded write buffer,
//! a graceful close on the stop signal, and a lingering close (`linger`: a last
//! answer is never lost to a reset).
//!
//! Both timeouts are judged by the connection's own periodic tick from plain
//! counters, not by a timer per request (hyper's header-read timer put an
//! allocation and two timer-wheel updates on every request).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::Stream;

/// What an HTTP connection may do.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time allowed for a request's head, counted from when the connection is
    /// ready for one (so it also closes idle keep-alive connections).
    pub header_read_timeout: Duration,
    /// A connection with no bytes read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Largest request line plus headers; larger gets 431.
    pub max_header_bytes: usize,
    /// Whether the connection may carry more than one request.
    pub keep_alive: bool,
}

/// A `503 Service Unavailable` that closes the connection: what an HTTP surface
/// answers a connection turned away at a cap.
pub fn busy_answer(why: super::Busy) -> Vec<u8> {
    let body = format!("{{\"error\":\"busy\",\"message\":\"connection refused: {why}\"}}\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one connection with `service` until it closes, times out, or the stop
/// signal has let its request in flight finish.
pub async fn serve<S, B>(
    io: Stream,
    service: S,
    limits: &HttpLimits,
    mut stopped: watch::Receiver<bool>,
) where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<B>,
            Error = std::convert::Infallible,
        > + Send,
    S::Future: Unpin + Send,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let progress = Arc::new(Progress::default());
    let io = TokioIo::new(Activity {
        inner: io,
        progress: progress.clone(),
    });
    let service = Tracked {
        inner: service,
        progress: progress.clone(),
    };
    // hyper's buffer limit bounds the request head read and the answer bytes
    // queued for a client that does not read (its default is about 400 KB per
    // connection): here twice the header limit, at least 16 KB.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(limits.max_header_bytes.max(8192).saturating_mul(2))
        .max_header_size(limits.max_header_bytes)
        .keep_alive(limits.keep_alive);
    let mut conn = builder.serve_connection(io, service);
    // Both timeouts are judged at this tick: a connection is closed at most one
    // tick after its timeout, never before.
    let check = limits
        .idle_timeout
        .min(limits.header_read_timeout)
        .checked_div(8)
        .unwrap_or_default()
        .max(Duration::from_millis(10));
    let mut watch = Watch::new(&progress);
    let mut shutting_down = false;
    let ended = loop {
        tokio::select! {
            ended = &mut conn => break ended,
            _ = stopped.wait_for(|s| *s), if !shutting_down => {
                shutting_down = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
            _ = tokio::time::sleep(check) => {
                if let Some(why) = watch.expired(&progress, limits) {
                    // A timeout cuts the connection: no lingering for a client
                    // that is too slow or has gone quiet.
                    tracing::debug!("closing connection: {why}");
                    return;
                }
            }
        }
    };
    let io = conn.into_parts().io.into_inner().inner;
    linger(io, ended.is_err()).await;
}

/// Longest a closed connection is read for after its last answer.
const LINGER_MAX: Duration = Duration::from_secs(2);
/// A lingering connection that sends nothing for this long is closed.
const LINGER_QUIET: Duration = Duration::from_millis(500);
/// Most bytes read and dropped from a lingering connection.
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Closes a connection hyper has finished with, without destroying its last
/// answer.
///
/// Why: closing a TCP socket with bytes still unread makes the kernel send a
/// reset, and a reset can wipe out an answer the client has not read yet (RFC
/// 9112 §9.6). A client still sending a request the driver refused (a 431 for
/// a 390 KB head) then sees "connection reset" instead of the 431, as a CI run
/// of `scripts/attacks/05-memory` once did. So when bytes are waiting, or the
/// connection ended on an error (the client is mid-request), the write side is
/// shut (the answer and a FIN are out) and whatever the client still sends is
/// read and dropped until it closes, is quiet for [`LINGER_QUIET`], or
/// [`LINGER_MAX`] or [`LINGER_BYTES`] is reached, as Apache and nginx do. A
/// connection that ended cleanly with nothing unread closes at once.
async fn linger(mut io: Stream, ended_on_error: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 512];
    let mut dropped = match io.try_read(&mut buf) {
        Ok(0) => return, // the client has closed: nothing can follow
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && ended_on_error => 0,
        Err(_) => return,
    };
    // hyper has already shut the write side when it finished cleanly; again is
    // harmless, and an error here (the peer reset) only ends the lingering early.
    let _ = io.shutdown().await;
    let mut buf = vec![0u8; 16 * 1024];
    let start = tokio::time::Instant::now();
    let deadline = start.checked_add(LINGER_MAX).unwrap_or(start);
    while dropped < LINGER_BYTES {
        let now = tokio::time::Instant::now();
        let quiet = now.checked_add(LINGER_QUIET).unwrap_or(now).min(deadline);
        match tokio::time::timeout_at(quiet, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => dropped = dropped.saturating_add(n),
            _ => break,
        }
    }
    tracing::debug!(
        dropped,
        ms = start.elapsed().as_millis() as u64,
        "lingering close"
    );
}

/// A service counting the requests begun and answered (for the header-read
/// timeout, which runs only while no request is in flight).
struct Tracked<S> {
    inner: S,
    progress: Arc<Progress>,
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedAnswer<S::Future>;

    fn call(&self, req: R) -> Self::Future {
        self.progress.begun.fetch_add(1, Ordering::Relaxed);
        TrackedAnswer {
            inner: self.inner.call(req),
            progress: self.progress.clone(),
        }
    }
}

/// An answer, counted as answered when it is ready.
pub struct TrackedAnswer<F> {
    inner: F,
    progress: Arc<Progress>,
}

impl<F: Future + Unpin> Future for TrackedAnswer<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.inner).poll(cx);
        if answer.is_ready() {
            this.progress.answered.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }
}

/// What a connection has done, counted as it happens (plain counters: one
/// connection's task touches them, no clock is read per request).
#[derive(Default)]
pub struct Progress {
    /// Reads and writes that moved bytes.
    moved: AtomicU64,
    /// Requests whose head was read (handed to the service).
    begun: AtomicU64,
    /// Requests answered.
    answered: AtomicU64,
}

/// The tick's view of a connection: since when nothing has moved, and since when
/// it has been waiting for a request head.
struct Watch {
    moved: u64,
    still_since: Instant,
    answered: u64,
    waiting_since: Instant,
}

impl Watch {
    fn new(progress: &Progress) -> Self {
        let now = Instant::now();
        Self {
            moved: progress.moved.load(Ordering::Relaxed),
            still_since: now,
            answered: progress.answered.load(Ordering::Relaxed),
            waiting_since: now,
        }
    }

    /// Which timeout, if any, has expired. A change seen at this tick restarts
    /// its clock from now, so the time measured is never more than the real one.
    fn expired(&mut self, progress: &Progress, limits: &HttpLimits) -> Option<&'static str> {
        let now = Instant::now();
        let moved = progress.moved.load(Ordering::Relaxed);
        if moved != self.moved {
            self.moved = moved;
            self.still_since = now;
        }
        if now.saturating_duration_since(self.still_since) >= limits.idle_timeout {
            return Some("idle timeout");
        }
        let begun = progress.begun.load(Ordering::Relaxed);
        let answered = progress.answered.load(Ordering::Relaxed);
        if begun != answered || answered != self.answered {
            // A request in flight, or one answered since the last tick: the
            // wait for the next head starts (again) now.
            self.answered = answered;
            self.waiting_since = now;
        }
        if now.saturating_duration_since(self.waiting_since) >= limits.header_read_timeout {
            return Some("no request head within the header-read timeout");
        }
        None
    }
}

/// Counts the reads and writes that move bytes (for the idle timeout).
struct Activity<I> {
    inner: I,
    progress: Arc<Progress>,
}

impl<I> Activity<I> {
    fn touch(&self) {
        self.progress.moved.fetch_add(1, Ordering::Relaxed);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Activity<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Activity<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
