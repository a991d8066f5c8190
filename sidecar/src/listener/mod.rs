//! One door for every local surface: the token API (Unix socket and loopback
//! TCP), every `[[api_proxy]]`, every `[[database_proxy]]` and `s2iam proxy` bind,
//! accept, count and identify their callers here, and keep only what is theirs
//! (the protocol, and how a refusal is worded in it).
//!
//! What a [`Door`] does, once for all of them:
//! - **bind**: a Unix socket (stale file replaced, live socket or non-socket
//!   refused, mode set, file removed when the door closes) or a TCP address;
//! - **who is calling**, decided at accept, before a byte is read: the peer's uid
//!   from `SO_PEERCRED` on a Unix socket, from the kernel's socket table on TCP
//!   ([`diag`]); the caller is allowed when `allowed_uids` is empty or names that
//!   uid. A uid that cannot be known is refused whenever `allowed_uids` is set.
//!   The surface gets the verdict ([`Peer::allowed`]) and answers a refused caller
//!   with its own refusal (HTTP 403, MySQL error 1045), then closes;
//! - **caps** ([`admit`]): connections in total, per peer uid (well below the
//!   total, so one user's flood leaves room for everyone else), a small pool for
//!   refused callers (who get one answer each, so they need no more), and the
//!   process's file-descriptor budget ([`fds`]). A connection over a cap gets the
//!   surface's "busy" bytes (HTTP 503, MySQL error 1040) and is closed at once,
//!   without reading anything;
//! - **drain**: on the stop signal the socket closes, open connections get
//!   `shutdown_timeout` to finish, the rest are cut.
//!
//! What a caller may send before it is known to be allowed is bounded by the
//! surface's protocol driver: [`http`] for the HTTP surfaces (header bytes,
//! header-read and idle time), the database proxy's handshake limits for MySQL.
//! Caller-chosen values reach the log only through [`s2iam::logging::field`], and
//! refusals through a [`s2iam::logging::Throttle`].

pub mod admit;
pub mod diag;
pub mod fds;
pub mod http;
pub mod tcp;
pub mod unix_socket;

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;

pub use admit::{Busy, Caps, WhenFull};

use s2iam::logging::{field, Throttle};

/// Where a door listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// A Unix socket file with this mode.
    Unix {
        /// The socket file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A TCP address (loopback, except where a surface allows otherwise).
    Tcp(SocketAddr),
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Unix { path, mode } => write!(f, "unix {} (mode {mode:04o})", path.display()),
            Bind::Tcp(addr) => write!(f, "tcp {addr}"),
        }
    }
}

/// A door could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{surface}: cannot listen on {what}: {source}")]
pub struct BindError {
    /// Which surface.
    pub surface: String,
    /// The address or socket path.
    pub what: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Who is at the other end of a connection, and whether the door lets them in.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The uid that owns the peer's socket, when the kernel says.
    pub uid: Option<u32>,
    /// The peer's pid (Unix socket only).
    pub pid: Option<i32>,
    /// The peer's address (TCP only).
    pub addr: Option<SocketAddr>,
    /// Whether `allowed_uids` admits this caller (decided here, once).
    pub allowed: bool,
}

impl Peer {
    /// Over TCP.
    pub fn is_tcp(&self) -> bool {
        self.addr.is_some()
    }
}

/// An accepted connection's stream: Unix or TCP.
pub enum Stream {
    /// A Unix-socket connection.
    Unix(UnixStream),
    /// A TCP connection.
    Tcp(TcpStream),
}

impl Stream {
    /// Writes what fits at once, never waiting (for a refusal on a connection
    /// that is closed right after).
    fn write_now(&self, bytes: &[u8]) {
        let _ = match self {
            Stream::Unix(s) => s.try_write(bytes),
            Stream::Tcp(s) => s.try_write(bytes),
        };
    }

    /// Reads what is waiting, never waiting (`WouldBlock` when nothing is).
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.try_read(buf),
            Stream::Tcp(s) => s.try_read(buf),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Tcp(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A connection the door let in: the stream, who is calling, the stop signal.
/// (Its place under the caps is held by the listener until the surface's
/// `serve` future ends.)
pub struct Conn {
    /// The stream.
    pub io: Stream,
    /// Who is calling, and the verdict.
    pub peer: Peer,
    /// Turns true when the door closes: finish the request in flight, then close.
    pub stopped: watch::Receiver<bool>,
}

/// What a surface keeps: its protocol.
pub trait Surface: Send + Sync + 'static {
    /// Serves one connection until it closes. A refused caller
    /// (`!conn.peer.allowed`) gets the surface's refusal, and the connection ends.
    fn serve(this: Arc<Self>, conn: Conn) -> impl Future<Output = ()> + Send + 'static;
    /// The bytes a connection turned away at a cap gets (an HTTP 503, a MySQL
    /// error 1040), written once without waiting, then the connection is closed.
    fn busy(&self, why: Busy) -> Vec<u8>;
}

/// One surface's door: its name in logs, who may call, its caps. Several binds
/// (a TCP address and a socket) may share one door, and so one set of caps.
pub struct Door {
    /// The surface's name in logs and `serve --check`, e.g. `token API`.
    pub surface: String,
    /// Callers allowed by uid; empty: any.
    pub allowed_uids: Vec<u32>,
    /// The caps.
    pub caps: Caps,
    /// Open connections (a gauge for `/metrics`).
    pub open: Arc<AtomicU64>,
    /// Connections turned away at a cap (a counter for `/metrics`).
    pub turned_away: Arc<AtomicU64>,
    /// The flag or config key that moves this door's TCP port, named by the
    /// "address in use" hint ([`Door::moved_by`]).
    pub moved_by: String,
    counts: admit::Counts,
    log: Throttle,
}

impl Door {
    /// A door for `surface` admitting `allowed_uids` (empty: any caller).
    pub fn new(surface: impl Into<String>, allowed_uids: Vec<u32>, caps: Caps) -> Arc<Self> {
        Arc::new(Self {
            surface: surface.into(),
            allowed_uids,
            caps,
            open: Arc::default(),
            turned_away: Arc::default(),
            moved_by: String::new(),
            counts: admit::Counts::default(),
            log: Throttle::for_refusals(),
        })
    }

    /// The same, counting into the given gauge and counter.
    pub fn with_metrics(
        mut self: Arc<Self>,
        open: Arc<AtomicU64>,
        turned_away: Arc<AtomicU64>,
    ) -> Arc<Self> {
        if let Some(d) = Arc::get_mut(&mut self) {
            d.open = open;
            d.turned_away = turned_away;
        }
        self
    }

    /// The same, naming `setting` (e.g. `--tcp or listen.tcp`) in the "address
    /// in use" hint of its TCP binds.
    pub fn moved_by(mut self: Arc<Self>, setting: impl Into<String>) -> Arc<Self> {
        if let Some(d) = Arc::get_mut(&mut self) {
            d.moved_by = setting.into();
        }
        self
    }

    /// Whether a caller with this uid may use the door.
    pub fn allows(&self, uid: Option<u32>) -> bool {
        self.allowed_uids.is_empty() || uid.is_some_and(|u| self.allowed_uids.contains(&u))
    }

    /// Who may use the door, for `serve --check` and the start-up log.
    pub fn who(&self) -> String {
        who(&self.allowed_uids)
    }
}

/// `allowed_uids` in words.
pub fn who(allowed_uids: &[u32]) -> String {
    if allowed_uids.is_empty() {
        "any local user".to_string()
    } else {
        let uids: Vec<String> = allowed_uids.iter().map(u32::to_string).collect();
        format!("uid {} only", uids.join(", "))
    }
}

/// A bound listener, serving until the stop signal.
pub struct Running {
    /// The surface's name.
    pub surface: String,
    /// The socket file (removed when the door closes).
    pub socket: Option<PathBuf>,
    /// The bound TCP address (the real port when 0 was asked for).
    pub tcp_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the door has closed and drained (after the stop signal),
    /// then removes the socket file.
    pub async fn wait(self) {
        let _ = self.task.await;
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds `bind` and serves `surface` behind `door` until `stopped` turns true.
pub async fn open<S: Surface>(
    door: &Arc<Door>,
    bind: &Bind,
    surface: Arc<S>,
    stopped: watch::Receiver<bool>,
) -> Result<Running, BindError> {
    let err = |what: String| {
        let surface = door.surface.clone();
        move |source| BindError {
            surface,
            what,
            source,
        }
    };
    let (listener, socket, tcp_addr) = match bind {
        Bind::Unix { path, mode } => {
            let what = path.display().to_string();
            crate::listener::unix_socket::prepare_socket_path(path)
                .await
                .map_err(err(what.clone()))?;
            let l = UnixListener::bind(path).map_err(err(what.clone()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
                .map_err(err(what))?;
            (Listener::Unix(l), Some(path.clone()), None)
        }
        Bind::Tcp(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| crate::listener::tcp::in_use_hint(e, *addr, &door.moved_by))
                .map_err(err(addr.to_string()))?;
            let bound = l.local_addr().map_err(err(addr.to_string()))?;
            (Listener::Tcp(l), None, Some(bound))
        }
    };
    let shown = match (&socket, tcp_addr) {
        (Some(p), _) => p.display().to_string(),
        (None, Some(a)) => a.to_string(),
        (None, None) => String::new(),
    };
    tracing::info!(surface = %door.surface, listen = %shown, callers = %door.who(), "listening");
    let task = tokio::spawn(accept_loop(listener, door.clone(), surface, stopped));
    Ok(Running {
        surface: door.surface.clone(),
        socket,
        tcp_addr,
        task,
    })
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Stream> {
        match self {
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        }
    }
}

/// Who is calling on `io`: `SO_PEERCRED` on a Unix socket, the kernel's socket
/// table on TCP.
fn identify(io: &Stream, diag: Option<&mut diag::Diag>, door: &Door) -> Peer {
    let (uid, pid, addr) = match io {
        Stream::Unix(s) => {
            let cred = s.peer_cred().ok();
            (cred.map(|c| c.uid()), cred.and_then(|c| c.pid()), None)
        }
        Stream::Tcp(s) => {
            let local = s.local_addr().ok();
            let peer = s.peer_addr().ok();
            let uid = match (diag, local, peer) {
                (Some(d), Some(l), Some(p)) => d.peer_uid(l, p),
                _ => None,
            };
            (uid, None, peer)
        }
    };
    Peer {
        uid,
        pid,
        addr,
        allowed: door.allows(uid),
    }
}

/// How many connections may wait for their uid's places, per door: this many
/// times `max_connections` (a burst from one application waits, as it would in
/// the kernel's backlog, while other uids are served at once).
const PARK_FACTOR: usize = 4;

/// Connections over their uid's share, waiting unread for one of its places
/// (each holds one fd of the budget).
#[derive(Default)]
struct Parked {
    by_uid:
        std::collections::HashMap<Option<u32>, std::collections::VecDeque<(Stream, Peer, Instant)>>,
    count: usize,
}

impl Parked {
    /// Parks a connection (its fd already taken from the budget).
    fn push(&mut self, io: Stream, peer: Peer, until: Instant) {
        self.by_uid
            .entry(peer.uid)
            .or_default()
            .push_back((io, peer, until));
        self.count = self.count.saturating_add(1);
    }

    /// The oldest waiting connection of `uid` still within its time.
    fn pop(&mut self, uid: Option<u32>, now: Instant) -> Option<(Stream, Peer)> {
        let queue = self.by_uid.get_mut(&uid)?;
        let mut found = None;
        while let Some((io, peer, until)) = queue.pop_front() {
            self.count = self.count.saturating_sub(1);
            fds::give(1);
            if until > now {
                found = Some((io, peer));
                break;
            }
        }
        if queue.is_empty() {
            self.by_uid.remove(&uid);
        }
        found
    }

    /// Removes and returns the connections whose time is up.
    fn expired(&mut self, now: Instant) -> Vec<Stream> {
        let mut out = Vec::new();
        for queue in self.by_uid.values_mut() {
            while queue.front().is_some_and(|(_, _, until)| *until <= now) {
                if let Some((io, _, _)) = queue.pop_front() {
                    out.push(io);
                }
            }
        }
        self.by_uid.retain(|_, q| !q.is_empty());
        self.count = self.count.saturating_sub(out.len());
        fds::give(out.len());
        out
    }
}

/// The accept loop's state: the door, the surface, the connections served.
struct Loop<S: Surface> {
    door: Arc<Door>,
    surface: Arc<S>,
    conns: tokio::task::JoinSet<Option<u32>>,
    parked: Parked,
    stopped: watch::Receiver<bool>,
}

impl<S: Surface> Loop<S> {
    /// Admits `peer` and serves it, parks it, or turns it away.
    fn admit(&mut self, io: Stream, peer: Peer) {
        let door = &self.door;
        let caps = &door.caps;
        match door.counts.admit(caps, &peer, &door.open) {
            Ok(slot) => {
                let uid = peer.uid;
                let conn = Conn {
                    io,
                    peer,
                    stopped: self.stopped.clone(),
                };
                let served = S::serve(self.surface.clone(), conn);
                self.conns.spawn(async move {
                    served.await;
                    drop(slot);
                    uid
                });
            }
            Err(Busy::PeerFull)
                if !caps.park_timeout.is_zero()
                    && self.parked.count < caps.max_connections.saturating_mul(PARK_FACTOR)
                    && fds::take(1) =>
            {
                let until = Instant::now()
                    .checked_add(caps.park_timeout)
                    .unwrap_or_else(Instant::now);
                self.parked.push(io, peer, until);
            }
            Err(why) => self.turn_away(io, &peer, why),
        }
    }

    fn turn_away(&self, io: Stream, peer: &Peer, why: Busy) {
        let door = &self.door;
        door.turned_away.fetch_add(1, Ordering::Relaxed);
        s2iam::refusal!(door.log, surface = %door.surface, uid = ?peer.uid, peer = %field(&peer.addr.map(|a| a.to_string()).unwrap_or_default()), reason = %why, "connection turned away");
        io.write_now(&self.surface.busy(why));
    }

    /// A connection of `uid` ended: its oldest waiting one, if any, gets the place.
    fn ended(&mut self, uid: Option<u32>) {
        if !self.door.counts.below_share(&self.door.caps, uid) {
            return;
        }
        if let Some((io, peer)) = self.parked.pop(uid, Instant::now()) {
            self.admit(io, peer);
        }
    }

    fn sweep(&mut self) {
        for io in self.parked.expired(Instant::now()) {
            io.write_now(&self.surface.busy(Busy::PeerFull));
            self.door.turned_away.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Accepts until the stop signal, then drains.
async fn accept_loop<S: Surface>(
    listener: Listener,
    door: Arc<Door>,
    surface: Arc<S>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut diag = match &listener {
        Listener::Tcp(_) => match diag::Diag::open() {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(surface = %door.surface, error = %e, "cannot ask the kernel who owns TCP peers (sock_diag netlink): TCP callers' uids are unknown, so allowed_uids refuses them all");
                None
            }
        },
        Listener::Unix(_) => None,
    };
    let sweep_every = door
        .caps
        .park_timeout
        .checked_div(4)
        .unwrap_or_default()
        .max(Duration::from_millis(50));
    let mut l = Loop {
        door: door.clone(),
        surface,
        conns: tokio::task::JoinSet::new(),
        parked: Parked::default(),
        stopped: stopped.clone(),
    };
    loop {
        let room = door.caps.when_full == WhenFull::Refuse || door.counts.has_room(&door.caps);
        tokio::select! {
            _ = until_stopped(&mut stopped) => break,
            Some(ended) = l.conns.join_next(), if !l.conns.is_empty() => {
                if let Ok(uid) = ended {
                    l.ended(uid);
                }
            }
            _ = tokio::time::sleep(sweep_every), if l.parked.count > 0 => l.sweep(),
            accepted = listener.accept(), if room => {
                let io = match accepted {
                    Ok(io) => io,
                    Err(e) => {
                        // Out of file descriptors, usually: back off a little
                        // rather than spin.
                        s2iam::refusal!(door.log, surface = %door.surface, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let peer = identify(&io, diag.as_mut(), &door);
                l.admit(io, peer);
            }
        }
    }
    // Stop signal: the listener closes here; waiting connections are closed;
    // the others finish their request and close, and whatever is left at the
    // deadline is cut.
    drop(listener);
    fds::give(l.parked.count);
    drop(l.parked);
    let mut conns = l.conns;
    let drained = tokio::time::timeout(door.caps.shutdown_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(surface = %door.surface, left = conns.len(), "shutdown timeout: closing connections still open");
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}
