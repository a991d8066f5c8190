//! The token API's surface behind [`crate::listener`]: a Unix socket (default
//! `/run/s2iam/s2iam.sock`, mode 0660) and optionally loopback TCP, both HTTP/1.1
//! with keep-alive on the listener's HTTP driver ([`crate::listener::http`]).
//!
//! Who may call is the listener's verdict ([`Peer::allowed`]: the peer's uid
//! against `listen.allowed_uids`, from `SO_PEERCRED` on the socket and from the
//! kernel's socket table on TCP). On TCP two checks of the token API's own come
//! after it: the `Host` header (loopback names only, against DNS rebinding) and,
//! when `tcp_token_file` is set, an exact `Authorization: Bearer <token>` (except
//! on the AWS routes, which take the raw container-credentials token instead; see
//! [`super::aws_routes`]).
//!
//! Caps, timeouts, header limits, socket files and the drain are the listener's
//! (`listen.*` settings, see `ConnLimits`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use tokio::sync::watch;
use tower::ServiceExt;

use super::limits::Caller;
use super::local_api::{api_error, constant_time_eq, is_aws_path, ViaTcp};
use super::{hot, routes};
use super::{AppState, ServeError};
use crate::listener::http::HttpLimits;
use crate::listener::{self, Bind, Busy, Caps, Conn, Door, Peer, Surface};
use s2iam::logging::field;

/// A listener being served.
pub struct Running(listener::Running);

impl Running {
    /// The socket file, for a Unix listener.
    pub fn socket_path(&self) -> Option<PathBuf> {
        self.0.socket.clone()
    }

    /// The bound address, for a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.0.tcp_addr
    }

    /// Waits for the server to finish its in-flight requests (after the stop
    /// signal, at most `listen.shutdown_timeout`), then removes the socket file.
    pub async fn wait(self) {
        self.0.wait().await;
    }
}

/// The token API's door: `listen.allowed_uids` and `listen.*` caps.
pub fn door(state: &AppState, transport: &'static str) -> Arc<Door> {
    let l = &state.config.listen;
    let mut caps = Caps::new(
        l.limits.max_connections,
        l.limits.max_connections_per_uid,
        l.limits.shutdown_timeout,
    );
    caps.park_timeout = l.limits.header_read_timeout;
    Door::new(
        format!("token API ({transport})"),
        l.allowed_uids.clone(),
        caps,
    )
    .with_metrics(
        state.metrics.connections_open(transport),
        state.metrics.connections_refused.clone(),
    )
    .moved_by("--tcp or listen.tcp")
}

/// Binds every configured listener and serves the API on each.
pub async fn start_all(
    state: Arc<AppState>,
    stopped: watch::Receiver<bool>,
) -> Result<Vec<Running>, ServeError> {
    let mut running = Vec::new();
    let listen = &state.config.listen;
    if let Some(path) = listen.socket.clone() {
        let bind = Bind::Unix {
            path,
            mode: listen.socket_mode,
        };
        let app = routes::router(state.clone()).layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_unix_peer,
        ));
        let surface = Arc::new(TokenApi {
            state: state.clone(),
            app,
            tcp: false,
        });
        let door = door(&state, "unix");
        running.push(Running(
            listener::open(&door, &bind, surface, stopped.clone()).await?,
        ));
    }
    if let Some(addr) = listen.tcp {
        let app = routes::router(state.clone()).layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_tcp_caller,
        ));
        let surface = Arc::new(TokenApi {
            state: state.clone(),
            app,
            tcp: true,
        });
        let door = door(&state, "tcp");
        running.push(Running(
            listener::open(&door, &Bind::Tcp(addr), surface, stopped).await?,
        ));
    }
    Ok(running)
}

/// The token API on one listener.
struct TokenApi {
    state: Arc<AppState>,
    app: Router,
    tcp: bool,
}

impl Surface for TokenApi {
    fn serve(this: Arc<Self>, conn: Conn) -> impl Future<Output = ()> + Send + 'static {
        let l = &this.state.config.listen.limits;
        let limits = HttpLimits {
            header_read_timeout: l.header_read_timeout,
            idle_timeout: l.idle_timeout,
            max_header_bytes: l.max_header_bytes,
            // A refused caller gets its 403 and the connection closes.
            keep_alive: conn.peer.allowed,
        };
        let peer = conn.peer;
        let hot_state = this.state.clone();
        let app = this.app.clone();
        let tcp = this.tcp;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            // A cached token for an allowed caller: answered without the router.
            if token_caller_allowed(&hot_state, tcp, &peer, &req) {
                if let Some(resp) = hot::answer(&hot_state, &req, caller_of(&peer), tcp) {
                    return Answer::Hot(Some(resp));
                }
            }
            req.extensions_mut().insert(ConnectInfo(peer.clone()));
            Answer::Router(Box::pin(app.clone().oneshot(req)))
        });
        async move { listener::http::serve(conn.io, service, &limits, conn.stopped).await }
    }

    fn busy(&self, why: Busy) -> Vec<u8> {
        listener::http::busy_answer(why)
    }
}

/// The caller as rate limits and the audit trail name it: its uid when the
/// kernel says, else its address (TCP).
fn caller_of(peer: &Peer) -> Caller {
    match (peer.uid, peer.addr) {
        (Some(uid), _) => Caller::Uid(uid),
        (None, Some(a)) => Caller::Addr(a.ip()),
        (None, None) => Caller::Unknown,
    }
}

/// Whether a request to a token route passes this listener's caller checks (for
/// the hot path; a refusal is answered and logged by the router's check).
fn token_caller_allowed(
    state: &AppState,
    tcp: bool,
    peer: &Peer,
    req: &hyper::Request<Incoming>,
) -> bool {
    if !tcp {
        return peer.allowed;
    }
    peer.allowed
        && tcp_host_allowed(state, req.headers()).is_ok()
        && tcp_bearer_ok(state, req.headers())
}

/// The body of an answer: from the hot path, or the router's.
type AnswerBody = http_body_util::Either<http_body_util::Full<axum::body::Bytes>, axum::body::Body>;

/// The future of one request's answer: ready at once on the hot path (no
/// allocation), the router's (boxed) otherwise.
enum Answer {
    Hot(Option<hyper::Response<http_body_util::Full<axum::body::Bytes>>>),
    Router(Pin<Box<tower::util::Oneshot<Router, hyper::Request<Incoming>>>>),
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
            Answer::Router(fut) => fut
                .as_mut()
                .poll(cx)
                .map(|r| r.map(|resp| resp.map(http_body_util::Either::Right))),
        }
    }
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
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    if !peer.allowed {
        s2iam::refusal!(state.refusals, uid = ?peer.uid, pid = ?peer.pid, path = %field(req.uri().path()), "refused unix-socket caller");
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
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    use axum::http::StatusCode;
    let addr = peer.addr.map(|a| a.to_string()).unwrap_or_default();
    if !peer.allowed {
        s2iam::refusal!(state.refusals, uid = ?peer.uid, peer = %addr, path = %field(req.uri().path()), "refused tcp caller (listen.allowed_uids)");
        let message = match peer.uid {
            Some(_) => "this user is not allowed to use the s2iam API (listen.allowed_uids)",
            None => "the calling user cannot be known (the kernel did not say who owns the connection), and listen.allowed_uids is set",
        };
        return api_error(StatusCode::FORBIDDEN, "forbidden", message);
    }
    if let Err(host) = tcp_host_allowed(&state, req.headers()) {
        s2iam::refusal!(state.refusals, peer = %addr, host = %field(host), "refused request with a non-loopback Host header");
        return api_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the Host header must name a loopback address",
        );
    }
    let mut req = req;
    req.extensions_mut().insert(ViaTcp);
    req.extensions_mut().insert(caller_of(&peer));
    if is_aws_path(req.uri().path()) {
        // These routes check the raw AWS container-credentials token themselves.
        return next.run(req).await;
    }
    if !tcp_bearer_ok(&state, req.headers()) {
        s2iam::refusal!(state.refusals, peer = %addr, path = %field(req.uri().path()), "refused tcp caller without the bearer token");
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
