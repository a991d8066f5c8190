//! One client connection: limits and allow-lists, the token, the two handshakes
//! (see [`super::login`]), then the byte relay until either side closes, the idle
//! timeout passes, or the drain deadline cuts it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::login::{self, codes, ClientLogin, Failure, Greeting, Outcome};
use super::metrics::FailureReason;
use super::packet::{self, HANDSHAKE_LIMIT};
use super::relay;
use super::Shared;
use mysql_common::constants::CapabilityFlags;

/// A client stream: TCP or Unix socket.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// Serves one accepted client; `peer_uid` is known on Unix sockets.
pub async fn serve(shared: Arc<Shared>, mut client: Box<dyn ClientIo>, peer_uid: Option<u32>) {
    let counters = &shared.counters;
    counters.total.fetch_add(1, Ordering::Relaxed);
    let Ok(_permit) = shared.slots.clone().try_acquire_owned() else {
        let f = Failure::new(
            FailureReason::TooManyConnections,
            codes::TOO_MANY_CONNECTIONS,
            b"08004",
            format!(
                "too many connections (max_connections = {})",
                shared.config.max_connections
            ),
        );
        fail(&shared, &mut client, 0, f).await;
        return;
    };
    counters.open.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    match connect(&shared, &mut client, peer_uid, started).await {
        Ok((ok_seq, ok, upstream, caps)) => {
            if login::reply(&mut client, ok_seq, &ok).await.is_ok() {
                counters.connected(started.elapsed());
                relay::relay(&shared, client, *upstream, caps).await;
            }
        }
        Err((seq, f)) => fail(&shared, &mut client, seq, f).await,
    }
    counters.open.fetch_sub(1, Ordering::Relaxed);
}

type Upstream = Box<tokio_rustls::client::TlsStream<TcpStream>>;

/// Everything up to the login OK: (its sequence id for the client, the OK
/// packet, the upstream stream, the capabilities agreed with the server), or
/// the failure with the sequence id its error packet takes.
async fn connect(
    shared: &Shared,
    client: &mut Box<dyn ClientIo>,
    peer_uid: Option<u32>,
    started: Instant,
) -> Result<(u8, Vec<u8>, Upstream, CapabilityFlags), (u8, Failure)> {
    let config = &shared.config;
    if let Some(uid) = peer_uid {
        if !config.allowed_uids.is_empty() && !config.allowed_uids.contains(&uid) {
            return Err((0, not_allowed(format!("uid {uid} is not in allowed_uids"))));
        }
    }
    let deadline = crate::util::instant_after(started, config.connect_timeout);
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
        .map_err(|f| (0, f))?;
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
        .map_err(|f| (0, f))?;
    let _ = tcp.set_nodelay(true);
    let greeting = tokio::time::timeout_at(deadline.into(), Greeting::read(&mut tcp))
        .await
        .map_err(within("waiting for SingleStore's greeting"))
        .and_then(|r| r)
        .map_err(|f| (0, f))?;
    let hello = greeting.for_client().map_err(|f| (0, f))?;
    let from_client = async {
        packet::write(client, 0, &hello).await?;
        packet::read(client, HANDSHAKE_LIMIT).await
    };
    let (seq, raw) = match tokio::time::timeout_at(deadline.into(), from_client).await {
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
                protocol_silent(
                    "the client sent no handshake response within connect_timeout".into(),
                ),
            ))
        }
    };
    let reply_seq = seq.wrapping_add(1);
    let login = ClientLogin::parse(seq, raw).map_err(|f| (reply_seq, f))?;
    let user = login.user();
    if !config.allowed_users.is_empty() && !config.allowed_users.contains(&user) {
        return Err((
            reply_seq,
            not_allowed(format!("user '{user}' is not in allowed_users")),
        ));
    }
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
    tracing::warn!(proxy = %shared.config.name, reason = f.reason.label(), error = %f.message, "database proxy connection refused");
    let _ = login::reply(client, seq, &f.packet).await;
    let _ = client.shutdown().await;
}
