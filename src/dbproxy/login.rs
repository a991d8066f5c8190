//! The two handshakes of one proxied connection.
//!
//! ```text
//! client            proxy                          SingleStore
//!                     ──── TCP connect ────────────────▶
//!                     ◀─── greeting (seq 0) ───────────
//!   ◀── greeting (seq 0): the server's, without CLIENT_SSL
//!   ─── response (seq 1): user, db, charset, attrs ─▶
//!                     ──── SSLRequest (seq 1) ─────────▶
//!                     ═════ TLS (SNI, verified) ═══════
//!                     ──── response (seq 2): user '*', JWT as mysql_clear_password,
//!                          the client's capabilities, db, charset, attributes ─▶
//!                     ◀─── [auth switch to mysql_clear_password → JWT again]
//!                     ◀─── OK or ERR ─────────────────
//!   ◀── the same OK or ERR (seq 2)
//! ```
//!
//! The client sees the server's version, connection id, status and capabilities
//! (less TLS: the client leg is loopback or a Unix socket), so everything after
//! the handshake — result sets, EOF/OK forms, compression, session tracking —
//! follows the flags both ends agreed on, and the bytes are relayed untouched.
//! The client's own password (if any) is ignored.

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse, SslRequest,
};
use mysql_common::proto::MyDeserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::metrics::FailureReason;
use super::packet::{self, HANDSHAKE_LIMIT};
use crate::secret::Secret;

/// Why a connection got no session: what to tell the client, and the metric label.
#[derive(Debug)]
pub struct Failure {
    /// The metric label.
    pub reason: FailureReason,
    /// The error packet payload for the client.
    pub packet: Vec<u8>,
    /// For the log (no secrets).
    pub message: String,
}

impl Failure {
    /// A failure the proxy describes with its own error packet.
    pub fn new(reason: FailureReason, code: u16, state: &[u8; 5], message: String) -> Self {
        Self {
            reason,
            packet: packet::err(code, state, &format!("s2iam proxy: {message}")),
            message,
        }
    }
}

/// MySQL error codes used in the proxy's own error packets.
pub mod codes {
    /// ER_ACCESS_DENIED_ERROR.
    pub const ACCESS_DENIED: u16 = 1045;
    /// ER_CON_COUNT_ERROR.
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    /// ER_HANDSHAKE_ERROR.
    pub const HANDSHAKE: u16 = 1043;
    /// CR_CONN_HOST_ERROR: the client library's "can't connect" code.
    pub const CONN_HOST_ERROR: u16 = 2003;
    /// CR_SSL_CONNECTION_ERROR.
    pub const SSL_CONNECTION_ERROR: u16 = 2026;
}

/// The server's greeting, as read from the upstream connection.
pub struct Greeting {
    raw: Vec<u8>,
}

impl Greeting {
    /// Reads and checks the upstream greeting. An error packet in its place (the
    /// server is full, or refuses this host) is passed on to the client as is.
    pub async fn read(tcp: &mut TcpStream) -> Result<Self, Failure> {
        let (_, raw) = packet::read(tcp, HANDSHAKE_LIMIT).await.map_err(|e| {
            Failure::new(
                FailureReason::UpstreamUnreachable,
                codes::CONN_HOST_ERROR,
                b"HY000",
                format!("SingleStore sent no greeting: {e}"),
            )
        })?;
        if raw.first() == Some(&0xFF) {
            return Err(Failure {
                reason: FailureReason::Refused,
                message: "SingleStore refused the connection before the handshake".into(),
                packet: raw,
            });
        }
        let greeting = Self { raw };
        let caps = greeting.parse()?.capabilities();
        let required = [
            (CapabilityFlags::CLIENT_SSL, "TLS"),
            (CapabilityFlags::CLIENT_PROTOCOL_41, "protocol 4.1"),
            (
                CapabilityFlags::CLIENT_PLUGIN_AUTH,
                "authentication plugins",
            ),
            (
                CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
                "long authentication data",
            ),
        ];
        for (flag, what) in required {
            if !caps.contains(flag) {
                return Err(protocol(format!(
                    "SingleStore does not offer {what}; a JWT login needs it"
                )));
            }
        }
        Ok(greeting)
    }

    fn parse(&self) -> Result<HandshakePacket<'_>, Failure> {
        HandshakePacket::deserialize((), &mut ParseBuf(&self.raw))
            .map_err(|e| protocol(format!("cannot parse SingleStore's greeting: {e}")))
    }

    /// The greeting the client gets: the server's, without TLS.
    pub fn for_client(&self) -> Result<Vec<u8>, Failure> {
        let g = self.parse()?;
        let caps = g.capabilities().difference(CapabilityFlags::CLIENT_SSL);
        let scramble_1: [u8; 8] = g
            .scramble_1_ref()
            .try_into()
            .map_err(|_| protocol("the greeting's scramble is short".into()))?;
        let client = HandshakePacket::new(
            g.protocol_version(),
            g.server_version_ref(),
            g.connection_id(),
            scramble_1,
            g.scramble_2_ref(),
            caps,
            g.default_collation(),
            g.status_flags(),
            g.auth_plugin_name_ref(),
        );
        Ok(packet::encode(&client))
    }

    /// The server's capability flags.
    pub fn capabilities(&self) -> CapabilityFlags {
        self.parse()
            .map(|g| g.capabilities())
            .unwrap_or_else(|_| CapabilityFlags::empty())
    }
}

fn protocol(message: String) -> Failure {
    Failure::new(FailureReason::Protocol, codes::HANDSHAKE, b"08S01", message)
}

/// Length of an SSL request (capabilities, max packet, collation, filler).
const SSL_REQUEST_LEN: usize = 32;

/// What the client asked for in its handshake response.
pub struct ClientLogin {
    raw: Vec<u8>,
    /// Sequence id of the client's response.
    pub seq: u8,
}

impl ClientLogin {
    /// Parses the client's response; an SSL request is refused with a hint.
    pub fn parse(seq: u8, mut raw: Vec<u8>) -> Result<Self, Failure> {
        let caps = raw
            .get(..4)
            .map(|b| {
                CapabilityFlags::from_bits_truncate(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            })
            .ok_or_else(|| protocol("the client's handshake response is short".into()))?;
        // An SSL request is exactly the first 32 bytes of a response. Some clients
        // (singlestoredb with TLS options) set CLIENT_SSL in a full response to a
        // server that offered no TLS and go on in the clear: that flag is dropped.
        if caps.contains(CapabilityFlags::CLIENT_SSL) && raw.len() > SSL_REQUEST_LEN {
            let cleared = caps
                .difference(CapabilityFlags::CLIENT_SSL)
                .bits()
                .to_le_bytes();
            raw[..4].copy_from_slice(&cleared);
        } else if caps.contains(CapabilityFlags::CLIENT_SSL) {
            return Err(protocol(
                "TLS to the proxy is not offered (it listens on loopback or a Unix socket): connect without TLS (mariadb --skip-ssl, PyMySQL without ssl)".into(),
            ));
        }
        if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
            return Err(protocol("the client does not speak protocol 4.1".into()));
        }
        let login = Self { raw, seq };
        login.response()?;
        Ok(login)
    }

    fn response(&self) -> Result<HandshakeResponse<'_>, Failure> {
        HandshakeResponse::deserialize((), &mut ParseBuf(&self.raw))
            .map_err(|e| protocol(format!("cannot parse the client's handshake response: {e}")))
    }

    /// The user name the client sent.
    pub fn user(&self) -> String {
        self.response()
            .map(|r| String::from_utf8_lossy(r.user()).into_owned())
            .unwrap_or_default()
    }

    /// The response SingleStore gets: the client's capabilities, database,
    /// character set, attributes and max packet size, with `user` and the JWT
    /// as a `mysql_clear_password` password.
    fn upstream_response(
        &self,
        server_caps: CapabilityFlags,
        user: &str,
        jwt: &Secret,
    ) -> Result<(CapabilityFlags, u32, Vec<u8>), Failure> {
        let r = self.response()?;
        let caps = upstream_capabilities(r.capabilities(), server_caps);
        let max_packet = self
            .raw
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| protocol("the client's handshake response is short".into()))?;
        let mut password = jwt.expose().as_bytes().to_vec();
        password.push(0);
        let attrs = r
            .connect_attributes()
            .filter(|_| caps.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS));
        let response = HandshakeResponse::new(
            Some(password),
            (5, 7, 0),
            Some(user.as_bytes()),
            r.db_name(),
            Some(AuthPlugin::MysqlClearPassword),
            caps,
            attrs,
            max_packet,
        );
        let mut bytes = packet::encode(&response);
        // `HandshakeResponse::new` picks the collation from the server version;
        // the client's goes in its fixed place (after capabilities and max packet
        // size) instead.
        bytes[8] = r.collation();
        Ok((response.capabilities(), max_packet, bytes))
    }
}

/// The client's flags as far as the server offers them, plus what the proxy's
/// own login needs (all of which only concern the handshake).
pub fn upstream_capabilities(client: CapabilityFlags, server: CapabilityFlags) -> CapabilityFlags {
    (client & server)
        | CapabilityFlags::CLIENT_SSL
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
}

/// Where the upstream login ended.
pub enum Outcome {
    /// Logged in: the OK packet to pass on, and the TLS stream to relay over.
    Ok(Vec<u8>, Box<TlsStream<TcpStream>>),
    /// The server's error packet, to pass on.
    Refused(Vec<u8>),
}

/// Upgrades the upstream connection to TLS and logs in.
pub async fn upstream_login(
    mut tcp: TcpStream,
    greeting: &Greeting,
    client: &ClientLogin,
    tls: &tokio_rustls::TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    user: &str,
    jwt: &Secret,
) -> Result<Outcome, Failure> {
    let (caps, max_packet, response) =
        client.upstream_response(greeting.capabilities(), user, jwt)?;
    let ssl = SslRequest::new(caps, max_packet, response[8]);
    let io_failure = |what: &str, e: std::io::Error| {
        Failure::new(
            FailureReason::UpstreamUnreachable,
            codes::CONN_HOST_ERROR,
            b"HY000",
            format!("SingleStore connection lost {what}: {e}"),
        )
    };
    packet::write(&mut tcp, 1, &packet::encode(&ssl))
        .await
        .map_err(|e| io_failure("before TLS", e))?;
    let shown = server_name.to_str().into_owned();
    let mut io = tls.connect(server_name, tcp).await.map_err(|e| {
        Failure::new(
            FailureReason::Tls,
            codes::SSL_CONNECTION_ERROR,
            b"HY000",
            format!("TLS to SingleStore ({shown}) failed: {e}"),
        )
    })?;
    let mut seq = packet::write(&mut io, 2, &response)
        .await
        .map_err(|e| io_failure("during login", e))?;
    loop {
        let (s, reply) = packet::read(&mut io, HANDSHAKE_LIMIT)
            .await
            .map_err(|e| io_failure("during login", e))?;
        match reply.first() {
            Some(0x00) => return Ok(Outcome::Ok(reply, Box::new(io))),
            Some(0xFF) => return Ok(Outcome::Refused(reply)),
            Some(0xFE) => {
                let switch =
                    AuthSwitchRequest::deserialize((), &mut ParseBuf(&reply)).map_err(|e| {
                        protocol(format!("cannot parse SingleStore's auth switch: {e}"))
                    })?;
                if switch.auth_plugin() != AuthPlugin::MysqlClearPassword {
                    return Err(protocol(format!(
                        "SingleStore asked for the {} authentication plugin; a JWT login uses mysql_clear_password",
                        String::from_utf8_lossy(switch.auth_plugin().as_bytes())
                    )));
                }
                let mut password = jwt.expose().as_bytes().to_vec();
                password.push(0);
                seq = packet::write(&mut io, s.wrapping_add(1), &password)
                    .await
                    .map_err(|e| io_failure("during login", e))?;
            }
            _ => {
                return Err(protocol(format!(
                    "unexpected packet from SingleStore during login (sequence {seq})"
                )))
            }
        }
    }
}

/// Sends `payload` to the client as the packet after its response.
pub async fn reply<W: AsyncWrite + AsyncRead + Unpin>(
    client: &mut W,
    seq: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    packet::write(client, seq, payload).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_capabilities_keep_the_clients_result_format_flags() {
        let server = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_DEPRECATE_EOF
            | CapabilityFlags::CLIENT_SSL
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        let client = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_MULTI_RESULTS;
        let up = upstream_capabilities(client, server);
        assert!(
            !up.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF),
            "client did not ask"
        );
        assert!(
            !up.contains(CapabilityFlags::CLIENT_MULTI_RESULTS),
            "server did not offer"
        );
        assert!(up.contains(CapabilityFlags::CLIENT_SSL | CapabilityFlags::CLIENT_PLUGIN_AUTH));
    }
}
