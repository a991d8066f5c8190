//! The sidecar's listeners: a Unix socket (default `/run/s2iam/s2iam.sock`, mode
//! 0660) and optionally loopback TCP, both HTTP/1.1 with keep-alive, both
//! shutting down gracefully.
//!
//! Callers are checked here: on the Unix socket by the peer's uid (`SO_PEERCRED`)
//! against `listen.allowed_uids`; on TCP by the `Host` header (loopback names only,
//! against DNS rebinding) and, when `tcp_token_file` is set, an exact
//! `Authorization: Bearer <token>` (except on the AWS routes, which take the raw
//! container-credentials token instead; see [`super::aws`]).
//!
//! Every connection is bounded (see `ConnLimits`): a header-read timeout (a
//! request head, or the next one on a keep-alive connection, must arrive within
//! it), hyper's header-size limit, an idle timeout, a cap per listener and per
//! peer uid; shutdown waits for in-flight requests at most
//! `listen.shutdown_timeout`. Both timeouts are checked by the connection's own
//! periodic tick, not by a timer per request (hyper's header-read timer put an
//! allocation and two timer-wheel updates on every request).
//!
//! A socket file left behind by a crashed sidecar is replaced; one that a live
//! sidecar still answers on, or a path that is not a socket, is an error.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::config::ConnLimits;

use super::api::{api_error, constant_time_eq, is_aws_path, ViaTcp};
use super::limits::Caller;
use super::{hot, routes};
use super::{AppState, ServeError};
use crate::logging::field;

/// The peer of a Unix-socket connection.
#[derive(Debug, Clone, Copy)]
pub struct UnixPeer {
    /// The caller's uid, when the kernel says.
    pub uid: Option<u32>,
    /// The caller's pid, when the kernel says.
    pub pid: Option<i32>,
}

/// A listener being served.
pub enum Running {
    /// The Unix socket listener.
    Unix {
        /// The file.
        path: PathBuf,
        /// The accept loop.
        task: tokio::task::JoinHandle<()>,
    },
    /// The loopback TCP listener.
    Tcp {
        /// The bound address.
        addr: SocketAddr,
        /// The accept loop.
        task: tokio::task::JoinHandle<()>,
    },
}

impl Running {
    /// The socket file, for a Unix listener.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match self {
            Running::Unix { path, .. } => Some(path.clone()),
            Running::Tcp { .. } => None,
        }
    }

    /// The bound address, for a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Running::Tcp { addr, .. } => Some(*addr),
            Running::Unix { .. } => None,
        }
    }

    /// Waits for the server to finish its in-flight requests (after the stop
    /// signal, at most `listen.shutdown_timeout`), then removes the socket file.
    pub async fn wait(self) {
        match self {
            Running::Unix { path, task } => {
                let _ = task.await;
                let _ = std::fs::remove_file(&path);
            }
            Running::Tcp { task, .. } => {
                let _ = task.await;
            }
        }
    }
}

/// Binds every configured listener and serves the API on each.
pub async fn start_all(
    state: Arc<AppState>,
    stopped: watch::Receiver<bool>,
) -> Result<Vec<Running>, ServeError> {
    let mut running = Vec::new();
    if let Some(path) = state.config.listen.socket.clone() {
        running.push(start_unix(state.clone(), &path, stopped.clone()).await?);
    }
    if let Some(addr) = state.config.listen.tcp {
        running.push(start_tcp(state.clone(), addr, stopped).await?);
    }
    Ok(running)
}

async fn start_unix(
    state: Arc<AppState>,
    path: &Path,
    stopped: watch::Receiver<bool>,
) -> Result<Running, ServeError> {
    let listen_err = |source| ServeError::Listen {
        what: path.display().to_string(),
        source,
    };
    crate::util::unix_socket::prepare_socket_path(path)
        .await
        .map_err(listen_err)?;
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    std::fs::set_permissions(
        path,
        std::fs::Permissions::from_mode(state.config.listen.socket_mode),
    )
    .map_err(listen_err)?;
    let app = routes::router(state.clone()).layer(axum::middleware::from_fn_with_state(
        state.clone(),
        check_unix_peer,
    ));
    tracing::info!(socket = %path.display(), "listening on unix socket");
    let task = tokio::spawn(serve(UnixAccept(listener), app, state, stopped));
    Ok(Running::Unix {
        path: path.to_path_buf(),
        task,
    })
}

async fn start_tcp(
    state: Arc<AppState>,
    addr: SocketAddr,
    stopped: watch::Receiver<bool>,
) -> Result<Running, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            what: addr.to_string(),
            source: in_use_hint(source, addr),
        })?;
    let addr = listener.local_addr().unwrap_or(addr);
    let app = routes::router(state.clone()).layer(axum::middleware::from_fn_with_state(
        state.clone(),
        check_tcp_caller,
    ));
    tracing::info!(%addr, "listening on tcp");
    let task = tokio::spawn(serve(TcpAccept(listener), app, state, stopped));
    Ok(Running::Tcp { addr, task })
}

/// "Address in use" with what to do about it.
fn in_use_hint(e: std::io::Error, addr: SocketAddr) -> std::io::Error {
    if e.kind() != std::io::ErrorKind::AddrInUse {
        return e;
    }
    std::io::Error::new(
        e.kind(),
        format!("{e}: another process (another s2iam, or `s2iam dev`?) is listening on port {}; stop it, or choose another port with --tcp or listen.tcp (`ss -ltnp` shows who)", addr.port()),
    )
}

/// A listener's accepted connections, with what the routes need to know of the
/// peer (put into each request as `ConnectInfo`).
trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    type Peer: Clone + Send + Sync + 'static;
    const NAME: &'static str;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, Self::Peer)>> + Send;
    /// The uid whose per-uid connection cap applies, if any.
    fn uid(peer: &Self::Peer) -> Option<u32>;
    /// The caller as rate limits and the audit trail name it.
    fn caller(peer: &Self::Peer) -> Caller;
    /// Whether a request to a token route passes this listener's caller check
    /// (for the hot path; a refusal is answered and logged by the router's check).
    fn token_caller_allowed(
        state: &AppState,
        peer: &Self::Peer,
        req: &hyper::Request<Incoming>,
    ) -> bool;
}

struct UnixAccept(UnixListener);

impl Accept for UnixAccept {
    type Io = UnixStream;
    type Peer = UnixPeer;
    const NAME: &'static str = "unix";
    async fn accept(&self) -> std::io::Result<(UnixStream, UnixPeer)> {
        let (io, _) = self.0.accept().await?;
        let cred = io.peer_cred().ok();
        let peer = UnixPeer {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        };
        Ok((io, peer))
    }
    fn uid(peer: &UnixPeer) -> Option<u32> {
        peer.uid
    }
    fn caller(peer: &UnixPeer) -> Caller {
        peer.uid.map_or(Caller::Unknown, Caller::Uid)
    }
    fn token_caller_allowed(
        state: &AppState,
        peer: &UnixPeer,
        _: &hyper::Request<Incoming>,
    ) -> bool {
        unix_peer_allowed(state, peer)
    }
}

struct TcpAccept(TcpListener);

impl Accept for TcpAccept {
    type Io = TcpStream;
    type Peer = SocketAddr;
    const NAME: &'static str = "tcp";
    async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let (io, peer) = self.0.accept().await?;
        let _ = io.set_nodelay(true);
        Ok((io, peer))
    }
    fn uid(_: &SocketAddr) -> Option<u32> {
        None
    }
    fn caller(peer: &SocketAddr) -> Caller {
        Caller::Addr(peer.ip())
    }
    fn token_caller_allowed(
        state: &AppState,
        _: &SocketAddr,
        req: &hyper::Request<Incoming>,
    ) -> bool {
        tcp_host_allowed(state, req.headers()).is_ok() && tcp_bearer_ok(state, req.headers())
    }
}

/// Open connections of one listener, in total and per uid.
#[derive(Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// Releases a connection's place in [`Counts`] when the connection ends.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    uid: Option<u32>,
    open: Arc<AtomicU64>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(uid) = self.uid {
            if let Some(n) = c.per_uid.get_mut(&uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.per_uid.remove(&uid);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes a place for a new connection, or `None` when a cap is reached. The
/// listener cap is also applied before accepting (a full listener stops
/// accepting, so a burst waits in the backlog instead of being cut); the per-uid
/// cap can only be applied after, by closing the connection.
fn admit(
    counts: &Arc<Mutex<Counts>>,
    limits: &ConnLimits,
    uid: Option<u32>,
    open: &Arc<AtomicU64>,
) -> Option<Slot> {
    let mut c = lock(counts);
    if c.total >= limits.max_connections {
        return None;
    }
    if let Some(uid) = uid {
        let n = c.per_uid.entry(uid).or_insert(0);
        if *n >= limits.max_connections_per_uid {
            return None;
        }
        *n = n.saturating_add(1);
    }
    c.total = c.total.saturating_add(1);
    open.fetch_add(1, Ordering::Relaxed);
    Some(Slot {
        counts: counts.clone(),
        uid,
        open: open.clone(),
    })
}

/// The accept loop of one listener. Axum's own `serve` sets no timer on hyper (so
/// no header-read timeout fires) and caps nothing; this one gives every
/// connection hyper's header-read timeout and header-size limit, an idle timeout
/// of its own, a per-listener and per-uid cap, and on the stop signal a graceful
/// shutdown bounded by `shutdown_timeout`.
async fn serve<A: Accept>(
    listener: A,
    app: Router,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<bool>,
) {
    let limits = state.config.listen.limits.clone();
    let metrics = state.metrics.clone();
    let open = metrics.connections_open(A::NAME);
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut conns = tokio::task::JoinSet::new();
    let mut warned_full = false;
    let mut warned_uid = false;
    let conn_stopped = stopped.clone();
    loop {
        let room = lock(&counts).total < limits.max_connections;
        if !room && !warned_full {
            warned_full = true;
            tracing::warn!(
                listener = A::NAME,
                max = limits.max_connections,
                "listen.max_connections reached: new connections wait in the kernel's backlog"
            );
        }
        tokio::select! {
            _ = until_stopped(&mut stopped) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept(), if room => {
                let (io, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, usually: back off a little
                        // rather than spin.
                        tracing::error!(listener = A::NAME, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = admit(&counts, &limits, A::uid(&peer), &open) else {
                    metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
                    if !warned_uid {
                        warned_uid = true;
                        tracing::warn!(listener = A::NAME, per_uid = limits.max_connections_per_uid, "listen.max_connections_per_uid reached: closing that user's new connections");
                    }
                    drop(io);
                    continue;
                };
                if room {
                    warned_full = false;
                    warned_uid = false;
                }
                conns.spawn(connection::<A>(io, peer, app.clone(), state.clone(), conn_stopped.clone(), slot));
            }
        }
    }
    // Stop signal: the listener closes (dropped below); connections finish
    // their request and close, and whatever is left at the deadline is cut.
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener = A::NAME,
            left = conns.len(),
            "shutdown timeout: closing connections still open"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

/// Serves one connection until it closes, times out or is shut down.
async fn connection<A: Accept>(
    io: A::Io,
    peer: A::Peer,
    app: Router,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<bool>,
    _slot: Slot,
) {
    let limits = &state.config.listen.limits;
    let progress = Arc::new(Progress::default());
    let io = TokioIo::new(Activity {
        inner: io,
        progress: progress.clone(),
    });
    let hot_state = state.clone();
    let service_progress = progress.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        service_progress.begun.fetch_add(1, Ordering::Relaxed);
        // A cached token for an allowed caller: answered without the router.
        if A::token_caller_allowed(&hot_state, &peer, &req) {
            if let Some(resp) = hot::answer(&hot_state, &req, A::caller(&peer)) {
                service_progress.answered.fetch_add(1, Ordering::Relaxed);
                return Answer::Hot(Some(resp));
            }
        }
        req.extensions_mut().insert(ConnectInfo(peer.clone()));
        Answer::Router(Box::pin(app.clone().oneshot(req)), service_progress.clone())
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(limits.max_header_bytes.max(8192).saturating_mul(2))
        .max_header_size(limits.max_header_bytes);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
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
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = until_stopped(&mut stopped), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(check) => {
                if let Some(why) = watch.expired(&progress, limits) {
                    tracing::debug!("closing connection: {why}");
                    return;
                }
            }
        }
    }
}

/// What a connection has done, counted as it happens (plain counters: one
/// connection's task touches them, no clock is read per request).
#[derive(Default)]
struct Progress {
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
    fn expired(&mut self, progress: &Progress, limits: &ConnLimits) -> Option<&'static str> {
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

/// The body of an answer: from the hot path, or the router's.
type AnswerBody = http_body_util::Either<http_body_util::Full<axum::body::Bytes>, axum::body::Body>;

/// The future of one request's answer: ready at once on the hot path (no
/// allocation), the router's (boxed, counted as answered when it is) otherwise.
enum Answer {
    Hot(Option<hyper::Response<http_body_util::Full<axum::body::Bytes>>>),
    Router(
        Pin<Box<tower::util::Oneshot<Router, hyper::Request<Incoming>>>>,
        Arc<Progress>,
    ),
}

impl Future for Answer {
    type Output = Result<hyper::Response<AnswerBody>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Hot(resp) => match resp.take() {
                Some(resp) => Poll::Ready(Ok(resp.map(http_body_util::Either::Left))),
                // Polled again after it answered: hyper never does; answer empty.
                None => Poll::Ready(Ok(hyper::Response::new(http_body_util::Either::Right(
                    axum::body::Body::empty(),
                )))),
            },
            Answer::Router(fut, progress) => {
                let answer = fut.as_mut().poll(cx);
                if answer.is_ready() {
                    progress.answered.fetch_add(1, Ordering::Relaxed);
                }
                answer.map(|r| r.map(|resp| resp.map(http_body_util::Either::Right)))
            }
        }
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// The Unix-socket caller check: the peer's uid is in `listen.allowed_uids`
/// (when that is set).
fn unix_peer_allowed(state: &AppState, peer: &UnixPeer) -> bool {
    let allowed = &state.config.listen.allowed_uids;
    allowed.is_empty() || peer.uid.is_some_and(|uid| allowed.contains(&uid))
}

/// The TCP Host check (against DNS rebinding): exactly one `Host` header naming a
/// loopback address, unless the listener is bound to a non-loopback address.
/// `Err` carries the refused Host, for the log.
fn tcp_host_allowed<'h>(
    state: &AppState,
    headers: &'h axum::http::HeaderMap,
) -> Result<(), &'h str> {
    let mut hosts = headers.get_all(axum::http::header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().unwrap_or(""),
        // None or several: never a loopback name.
        _ => "",
    };
    if !host_is_loopback(host) && state.config.listen.tcp.is_none_or(|a| a.ip().is_loopback()) {
        return Err(host);
    }
    Ok(())
}

/// The TCP bearer check: the exact `listen.tcp_token_file` token, when one is set.
fn tcp_bearer_ok(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    let Some(expected) = &state.tcp_token else {
        return true;
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), expected.expose().as_bytes())
}

async fn check_unix_peer(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<UnixPeer>,
    req: Request,
    next: Next,
) -> Response {
    if !unix_peer_allowed(&state, &peer) {
        crate::refusal!(state.refusals, uid = ?peer.uid, pid = ?peer.pid, path = %field(req.uri().path()), "refused unix-socket caller");
        return api_error(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "this user is not allowed to use the s2iam socket (listen.allowed_uids)",
        );
    }
    let mut req = req;
    req.extensions_mut()
        .insert(peer.uid.map_or(Caller::Unknown, Caller::Uid));
    next.run(req).await
}

async fn check_tcp_caller(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    use axum::http::StatusCode;
    if let Err(host) = tcp_host_allowed(&state, req.headers()) {
        crate::refusal!(state.refusals, %peer, host = %field(host), "refused request with a non-loopback Host header");
        return api_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the Host header must name a loopback address",
        );
    }
    let mut req = req;
    req.extensions_mut().insert(ViaTcp);
    req.extensions_mut().insert(Caller::Addr(peer.ip()));
    if is_aws_path(req.uri().path()) {
        // These routes check the raw AWS container-credentials token themselves.
        return next.run(req).await;
    }
    if !tcp_bearer_ok(&state, req.headers()) {
        crate::refusal!(state.refusals, %peer, path = %field(req.uri().path()), "refused tcp caller without the bearer token");
        return api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <token from listen.tcp_token_file>",
        );
    }
    next.run(req).await
}

/// Whether `host` is exactly a loopback name with an optional port: `localhost`,
/// `127.x.x.x` or `[::1]`, then nothing or `:` and digits. Anything after the
/// name (`[::1]evil`, `127.0.0.1:7869@evil`) is refused.
pub(crate) fn host_is_loopback(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((name, "")) => (name, None),
            Some((name, after)) => match after.strip_prefix(':') {
                Some(port) => (name, Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok()
    });
    let bracketed = host.starts_with('[');
    let name_ok = if bracketed {
        name.parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback())
    } else {
        name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    port_ok && name_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:80",
            "localhost",
            "LOCALHOST:7869",
            "[::1]:1",
            "127.0.0.5",
        ] {
            assert!(host_is_loopback(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:80",
            "10.0.0.1",
            "",
            "[fe80::1]:1",
            // Issue 13: trailing junk after a loopback name was accepted.
            "[::1]evil",
            "127.0.0.1:7869@evil",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "localhost:80:80",
            "[::1]:80x",
            "[127.0.0.1]",
            "127.0.0.1.evil",
        ] {
            assert!(!host_is_loopback(h), "{h}");
        }
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
