//! One client connection: the listener's verdict on the caller, the client's
//! handshake (answered from the proxy's own greeting, with a connection id of
//! the proxy's own, so a client that never says anything costs nothing
//! upstream), the user allow-list, then the token,
//! SingleStore's handshake (see [`super::login`]), and the byte relay until either
//! side closes, the idle timeout passes, or the drain deadline cuts it.
//!
//! Traces: with tracing on, a session of an allowed caller is an
//! `s2iam.db_proxy.session` server span from accept to close (a token fetched in
//! line for its login is its child), naming the proxy, the workspace group, the
//! caller's uid, the connection id the client was given, the outcome (`relayed`
//! or the failure's metric label) and a failure's message (escaped and cut, as
//! the log has it; never a credential); a caller `allowed_uids` refuses starts
//! none.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_common::constants::CapabilityFlags;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::kill::SessionId;
use super::login::{self, codes, ClientLogin, Failure, Greeting, Outcome};
use super::metrics::FailureReason;
use super::packet;
use super::relay;
use super::Shared;
use crate::listener::Peer;
use s2iam::logging::field;
use s2iam::otel::{Span, SpanKind};

/// The most a client's handshake response may take: the caller is not yet
/// known to be a MySQL client, so it gets little (a response is a few hundred
/// bytes; connection attributes a few more).
pub const CLIENT_HANDSHAKE_LIMIT: usize = 16 * 1024;

/// The longest a client may take to answer the greeting (less when
/// `connect_timeout` is shorter): a real client answers in milliseconds, a
/// silent one should not hold a place for long.
pub const CLIENT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client stream: TCP or Unix socket.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// Serves one client the listener let in (`peer.allowed` says whether the
/// caller passed `allowed_uids`).
pub async fn serve(shared: Arc<Shared>, mut client: Box<dyn ClientIo>, peer: Peer) {
    let counters = &shared.counters;
    counters.total.fetch_add(1, Ordering::Relaxed);
    counters.open.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    // Held until the session ends: while it is, `KILL <this id>` reaches it.
    let id = shared.ids.open();
    let mut span = session_span(&shared, &peer, id.id());
    let login = span
        .scope(connect(&shared, &mut client, &peer, started, &id))
        .await;
    match login {
        Ok((ok_seq, ok, upstream, caps)) => {
            if login::reply(&mut client, ok_seq, &ok).await.is_ok() {
                counters.connected(started.elapsed());
                span.set("s2iam.db_proxy.outcome", "relayed");
                relay::relay(&shared, client, *upstream, caps).await;
            }
        }
        Err((seq, f)) => {
            span.set("s2iam.db_proxy.outcome", f.reason.label());
            span.fail(&f.message);
            fail(&shared, &mut client, seq, f).await
        }
    }
    counters.open.fetch_sub(1, Ordering::Relaxed);
}

/// The session's span: off with tracing off or for a caller `allowed_uids` refuses.
fn session_span(shared: &Shared, peer: &Peer, connection_id: u32) -> Span {
    if !peer.allowed {
        return Span::off();
    }
    let mut span = shared
        .tracer
        .span("s2iam.db_proxy.session", SpanKind::Server);
    span.set("s2iam.proxy", shared.config.name.as_str());
    span.set(
        "s2iam.workspace_group_id",
        shared.config.workspace_group_id.as_str(),
    );
    span.set("db.system", "mysql");
    // The id the client's handshake carries (and `KILL` takes): the session's
    // key in the client's own logs.
    span.set("s2iam.db_proxy.connection_id", connection_id);
    if let Some(uid) = peer.uid {
        span.set("s2iam.peer.uid", uid);
    }
    span
}

type Upstream = Box<tokio_rustls::client::TlsStream<login::UpstreamIo>>;

/// Everything up to the login OK: (its sequence id for the client, the OK
/// packet, the upstream stream, the capabilities agreed with the server), or
/// the failure with the sequence id its error packet takes.
async fn connect(
    shared: &Shared,
    client: &mut Box<dyn ClientIo>,
    peer: &Peer,
    started: Instant,
    id: &SessionId<'_>,
) -> Result<(u8, Vec<u8>, Upstream, CapabilityFlags), (u8, Failure)> {
    let config = &shared.config;
    if !peer.allowed {
        let why = match peer.uid {
            Some(uid) => format!("uid {uid} is not in allowed_uids"),
            None => "the connecting user cannot be known (the kernel did not name the peer's uid) and allowed_uids is set".into(),
        };
        return Err((0, not_allowed(why)));
    }
    let deadline = s2iam::util::instant_after(started, config.connect_timeout);
    let within = |what: &'static str| {
        move |_| {
            Failure::new(
                FailureReason::UpstreamUnreachable,
                codes::CONN_HOST_ERROR,
                b"HY000",
                format!(
                    "{what} took longer than connect_timeout ({:?})",
                    config.connect_timeout
                ),
            )
        }
    };
    // The client's side first, from the proxy's own greeting: nothing is opened
    // upstream for a client that never answers it.
    let (reply_seq, login) = client_login(shared, client, started, id.id()).await?;
    let token = tokio::time::timeout_at(deadline.into(), shared.tokens.jwt())
        .await
        .map_err(|_| {
            Failure::new(
                FailureReason::TokenUnavailable,
                codes::ACCESS_DENIED,
                b"28000",
                format!(
                    "no database token for workspace group {} within connect_timeout",
                    config.workspace_group_id
                ),
            )
        })
        .and_then(|r| {
            r.map_err(|why| {
                Failure::new(
                    FailureReason::TokenUnavailable,
                    codes::ACCESS_DENIED,
                    b"28000",
                    format!(
                        "no database token for workspace group {}: {why}",
                        config.workspace_group_id
                    ),
                )
            })
        })
        .map_err(|f| (reply_seq, f))?;
    let upstream = config.upstream();
    let mut tcp = tokio::time::timeout_at(deadline.into(), TcpStream::connect(&upstream))
        .await
        .map_err(within("connecting to SingleStore"))
        .and_then(|r| {
            r.map_err(|e| {
                Failure::new(
                    FailureReason::UpstreamUnreachable,
                    codes::CONN_HOST_ERROR,
                    b"HY000",
                    format!("cannot connect to SingleStore at {upstream}: {e}"),
                )
            })
        })
        .map_err(|f| (reply_seq, f))?;
    let _ = tcp.set_nodelay(true);
    let greeting = tokio::time::timeout_at(deadline.into(), Greeting::read(&mut tcp))
        .await
        .map_err(within("waiting for SingleStore's greeting"))
        .and_then(|r| r)
        .map_err(|f| (reply_seq, f))?;
    agree(shared, &greeting, &login).map_err(|f| (reply_seq, f))?;
    let outcome = tokio::time::timeout_at(
        deadline.into(),
        login::upstream_login(
            tcp,
            &greeting,
            &login,
            &shared.tls,
            shared.server_name.clone(),
            &config.user,
            &token,
        ),
    )
    .await
    .map_err(within("logging in to SingleStore"))
    .and_then(|r| r)
    .map_err(|f| (reply_seq, f))?;
    match outcome {
        Outcome::Ok(ok, upstream) => {
            id.logged_in(greeting.connection_id());
            let caps = login::upstream_capabilities(login.capabilities(), greeting.capabilities());
            Ok((login.seq.wrapping_add(1), ok, upstream, caps))
        }
        Outcome::Refused(err) => {
            let message = server_message(&err);
            Err((
                reply_seq,
                Failure {
                    reason: FailureReason::Refused,
                    packet: err,
                    message: format!("SingleStore refused the login: {message}"),
                },
            ))
        }
    }
}

/// The proxy's greeting to the client and the client's answer, checked against
/// `allowed_users`: (the sequence id of the proxy's next packet, the login).
async fn client_login(
    shared: &Shared,
    client: &mut Box<dyn ClientIo>,
    started: Instant,
    connection_id: u32,
) -> Result<(u8, ClientLogin), (u8, Failure)> {
    let config = &shared.config;
    let offer = shared
        .offer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let hello = offer.for_client(connection_id).map_err(|f| (0, f))?;
    let from_client = async {
        packet::write(client, 0, &hello).await?;
        packet::read(client, CLIENT_HANDSHAKE_LIMIT).await
    };
    let wait = config.connect_timeout.min(CLIENT_HANDSHAKE_TIMEOUT);
    let answer_by = s2iam::util::instant_after(started, wait);
    let (seq, raw) = match tokio::time::timeout_at(answer_by.into(), from_client).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return Err((
                1,
                protocol_silent(format!("the client left during the handshake: {e}")),
            ))
        }
        Err(_) => {
            return Err((
                1,
                protocol_silent(format!(
                    "the client sent no handshake response within {wait:?}"
                )),
            ))
        }
    };
    let reply_seq = seq.wrapping_add(1);
    let mut login = ClientLogin::parse(seq, raw).map_err(|f| (reply_seq, f))?;
    // What the client agreed to: what it asked for, within what it was offered.
    login.agree_with(offer.capabilities());
    let user = login.user();
    if !config.allowed_users.is_empty() && !config.allowed_users.contains(&user) {
        return Err((
            reply_seq,
            not_allowed(format!("user '{}' is not in allowed_users", field(&user))),
        ));
    }
    Ok((reply_seq, login))
}

/// Remembers SingleStore's greeting for the next client, and checks that it
/// offers everything this client agreed to with the proxy (it always does once
/// the proxy has seen SingleStore's greeting, unless the server changed).
/// `CLIENT_LONG_PASSWORD` does not count: it changes nothing after a 4.1
/// login, and MariaDB servers never offer it (they use that bit to say
/// "MySQL client"), so the first client of a proxy in front of one would be
/// refused for nothing (found by `scripts/check-real-database`).
fn agree(shared: &Shared, greeting: &Greeting, login: &ClientLogin) -> Result<(), Failure> {
    *shared.offer.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(greeting.clone());
    let missing = login
        .capabilities()
        .difference(greeting.capabilities())
        .difference(CapabilityFlags::CLIENT_SSL | CapabilityFlags::CLIENT_LONG_PASSWORD);
    if missing.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        FailureReason::Protocol,
        codes::HANDSHAKE,
        b"08S01",
        format!("SingleStore does not offer every capability the proxy offered this client ({missing:?}); connect again: the proxy now offers SingleStore's own"),
    ))
}

fn not_allowed(message: String) -> Failure {
    Failure::new(
        FailureReason::ClientNotAllowed,
        codes::ACCESS_DENIED,
        b"28000",
        message,
    )
}

/// A handshake failure where the client is gone (its error packet goes nowhere).
fn protocol_silent(message: String) -> Failure {
    Failure::new(FailureReason::Protocol, codes::HANDSHAKE, b"08S01", message)
}

/// The text of a server error packet, for the log.
pub(crate) fn server_message(err: &[u8]) -> String {
    // 0xFF, code (2), '#', state (5), message.
    match err.get(3) {
        Some(b'#') => String::from_utf8_lossy(err.get(9..).unwrap_or_default()).into_owned(),
        _ => String::from_utf8_lossy(err.get(3..).unwrap_or_default()).into_owned(),
    }
}

async fn fail(shared: &Shared, client: &mut Box<dyn ClientIo>, seq: u8, f: Failure) {
    shared.counters.failure(f.reason);
    // A caller can cause these at will: at a bounded rate, the message cut.
    s2iam::refusal!(shared.log, proxy = %shared.config.name, reason = f.reason.label(), error = %field(&f.message), "database proxy connection refused");
    let _ = login::reply(client, seq, &f.packet).await;
    let _ = client.shutdown().await;
}
