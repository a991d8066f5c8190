//! The two handshakes of one proxied connection.
//!
//! ```text
//! client            proxy                          SingleStore
//!   ◀── greeting (seq 0): the proxy's (SingleStore's last one, without CLIENT_SSL)
//!   ─── response (seq 1): user, db, charset, attrs ─▶
//!                     ──── TCP connect ────────────────▶
//!                     ◀─── greeting (seq 0) ───────────
//!                     ──── SSLRequest (seq 1) ─────────▶
//!                     ═════ TLS (SNI, verified) ═══════
//!                     ──── response (seq 2): user '*', the client's capabilities,
//!                          db, charset, attributes, and the JWT as
//!                          mysql_clear_password where the greeting offers long
//!                          auth data (MariaDB, MySQL); SingleStore's offers
//!                          none: mysql_native_password, no data ─▶
//!                     ◀─── auth switch to mysql_clear_password; ─── the JWT ─▶
//!                     ◀─── OK or ERR ─────────────────
//!   ◀── the same OK or ERR (seq 2)
//! ```
//!
//! The client is answered before anything is opened upstream (a client that
//! never speaks costs SingleStore nothing), so its greeting is the proxy's: the
//! version, status and capabilities of the last greeting SingleStore sent (less
//! TLS: the client leg is loopback or a Unix socket; before SingleStore has been
//! reached, a conservative set every MySQL-protocol server offers), a scramble of
//! its own, and a connection id of the proxy's own (the server's is not known
//! yet; the relay turns a `KILL` of the proxy's id into one of the server's, see
//! [`super::kill`]). The capabilities sent upstream
//! are those the client agreed to with the proxy, so everything after
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
use s2iam::secret::Secret;

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
#[derive(Clone)]
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
        Self::from_packet(raw)
    }

    /// Checks a greeting's payload: an error packet, or a greeting without what
    /// a JWT login needs, is a failure.
    pub fn from_packet(raw: Vec<u8>) -> Result<Self, Failure> {
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
        if let Some(len) = auth_data_len(&self.raw).filter(|len| *len >= 0x80) {
            return Err(protocol(format!(
                "SingleStore's greeting gives an authentication data length of {len}: not a MySQL greeting"
            )));
        }
        HandshakePacket::deserialize((), &mut ParseBuf(&self.raw))
            .map_err(|e| protocol(format!("cannot parse SingleStore's greeting: {e}")))
    }

    /// What the proxy offers clients before it has reached SingleStore: the
    /// flags every MySQL-protocol server SingleStore's clients meet has, all of
    /// them in SingleStore's own greeting ([`SINGLESTORE_CAPABILITIES`]; no
    /// `CLIENT_DEPRECATE_EOF`, session tracking or long authentication data),
    /// version 5.7.32, utf8_general_ci (33) as SingleStore's.
    pub fn conservative() -> Self {
        let caps = CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_FOUND_ROWS
            | CapabilityFlags::CLIENT_LONG_FLAG
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB
            | CapabilityFlags::CLIENT_IGNORE_SPACE
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_INTERACTIVE
            | CapabilityFlags::CLIENT_SSL
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_MULTI_STATEMENTS
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_CONNECT_ATTRS;
        let g = HandshakePacket::new(
            10,
            &b"5.7.32"[..],
            0,
            [b'x'; 8],
            Some(&b"xxxxxxxxxxxx\0"[..]),
            caps,
            33,
            mysql_common::constants::StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            Some(&b"mysql_native_password"[..]),
        );
        Self {
            raw: packet::encode(&g),
        }
    }

    /// The greeting the client gets: this one's version, status, collation and
    /// capabilities without TLS, a fresh scramble, and `connection_id` (the
    /// proxy's id for the session).
    pub fn for_client(&self, connection_id: u32) -> Result<Vec<u8>, Failure> {
        let g = self.parse()?;
        let caps = g.capabilities().difference(CapabilityFlags::CLIENT_SSL);
        let scramble = scramble();
        let (scramble_1, scramble_2) = scramble.split_at(8);
        let scramble_1: [u8; 8] = scramble_1
            .try_into()
            .map_err(|_| protocol("the greeting's scramble is short".into()))?;
        // The second part goes out NUL-terminated, as servers send it (the
        // MariaDB client waits for the terminator).
        let mut scramble_2 = scramble_2.to_vec();
        scramble_2.push(0);
        let client = HandshakePacket::new(
            g.protocol_version(),
            g.server_version_ref(),
            connection_id,
            scramble_1,
            Some(scramble_2),
            caps,
            g.default_collation(),
            g.status_flags(),
            g.auth_plugin_name_ref(),
        );
        Ok(packet::encode(&client))
    }

    /// The server's connection (thread) id for this session: what `SELECT
    /// CONNECTION_ID()` answers and what `KILL` takes (0 if it cannot be read;
    /// a greeting that parses was checked when it was read).
    pub fn connection_id(&self) -> u32 {
        self.parse().map(|g| g.connection_id()).unwrap_or(0)
    }

    /// The server's capability flags.
    pub fn capabilities(&self) -> CapabilityFlags {
        self.parse()
            .map(|g| g.capabilities())
            .unwrap_or_else(|_| CapabilityFlags::empty())
    }
}

/// 20 printable random bytes: the client's password is never used (the proxy
/// logs in with the JWT), but a client computes its answer from them.
fn scramble() -> Vec<u8> {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric
        .sample_string(&mut rand::thread_rng(), 20)
        .into_bytes()
}

/// The greeting's auth-plugin-data length byte, if the greeting reaches it:
/// after the protocol version, the NUL-terminated server version, and 20 bytes
/// (connection id, scramble, filler, capabilities, collation, status,
/// capabilities). A real server sends 21, or 0 without plugin auth.
/// `mysql_common` computes `len as i8 - 8`, which overflows (a panic where
/// overflow checks are on, as in debug builds) for 0x80 to 0x87; found by the
/// `mysql_packets` fuzz target. Lengths from 0x80 up are refused.
fn auth_data_len(greeting: &[u8]) -> Option<u8> {
    let version_len = greeting.get(1..)?.iter().position(|b| *b == 0)?;
    greeting.get(version_len.saturating_add(22)).copied()
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

    /// The client's capability flags (as agreed with the proxy's greeting).
    pub fn capabilities(&self) -> CapabilityFlags {
        self.raw
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| CapabilityFlags::from_bits_truncate(u32::from_le_bytes(b)))
            .unwrap_or_else(CapabilityFlags::empty)
    }

    /// Keeps of the client's flags those the proxy offered (`offered`), so that
    /// SingleStore is told what the client and the proxy agreed.
    pub fn agree_with(&mut self, offered: CapabilityFlags) {
        let agreed = self.capabilities() & offered.difference(CapabilityFlags::CLIENT_SSL);
        if let Some(head) = self.raw.get_mut(..4) {
            head.copy_from_slice(&agreed.bits().to_le_bytes());
        }
    }

    /// The user name the client sent.
    pub fn user(&self) -> String {
        self.response()
            .map(|r| String::from_utf8_lossy(r.user()).into_owned())
            .unwrap_or_default()
    }

    /// The response SingleStore gets: the client's capabilities, database,
    /// character set, attributes and max packet size, with `user` and the JWT
    /// as a `mysql_clear_password` password: (its capabilities, max packet size,
    /// payload).
    pub(crate) fn upstream_response(
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
        // Without long authentication data (SingleStore's greeting offers
        // none) the response's auth data has a 1-byte length, too short for a
        // JWT: the response names `mysql_native_password` with no data, the
        // server switches to `mysql_clear_password`, and the JWT goes in the
        // switch response ([`LoginReply::SendPassword`]), as for the proxy's
        // own `COM_CHANGE_USER`. With it (MariaDB, MySQL) the JWT goes at once.
        let (password, plugin) =
            if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
                let mut password = jwt.expose().as_bytes().to_vec();
                password.push(0);
                (password, AuthPlugin::MysqlClearPassword)
            } else {
                (Vec::new(), AuthPlugin::MysqlNativePassword)
            };
        let attrs = r
            .connect_attributes()
            .filter(|_| caps.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS));
        let response = HandshakeResponse::new(
            Some(password),
            (5, 7, 0),
            Some(user.as_bytes()),
            r.db_name(),
            Some(plugin),
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
/// own login needs (all of which only concern the handshake): long
/// authentication data only where the server offers it.
pub fn upstream_capabilities(client: CapabilityFlags, server: CapabilityFlags) -> CapabilityFlags {
    (client & server)
        | CapabilityFlags::CLIENT_SSL
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | (server & CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)
}

/// The capability flags in SingleStore's greeting (0x801FF7DF, without
/// `CLIENT_SSL`, which it sets where TLS is configured), as a third party's
/// protocol tests give them (their fixture names SingleStoreDB Dev 0.2.35; no
/// live SingleStore was reached from here to confirm): no
/// `CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA`, `CLIENT_DEPRECATE_EOF` or
/// `CLIENT_SESSION_TRACK`. The mock SingleStore's greeting is this plus TLS;
/// the proxy's [`Greeting::conservative`] offers nothing outside it.
pub const SINGLESTORE_CAPABILITIES: u32 = 0x801F_F7DF;

/// What one packet from SingleStore during the login says.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginReply {
    /// OK: logged in.
    Ok,
    /// ERR: refused.
    Refused,
    /// An auth switch to `mysql_clear_password`: send the JWT again.
    SendPassword,
}

/// Reads one packet SingleStore sent during the login (untrusted bytes).
pub fn login_reply(reply: &[u8]) -> Result<LoginReply, Failure> {
    match reply.first() {
        Some(0x00) => Ok(LoginReply::Ok),
        Some(0xFF) => Ok(LoginReply::Refused),
        Some(0xFE) => {
            let switch = AuthSwitchRequest::deserialize((), &mut ParseBuf(reply))
                .map_err(|e| protocol(format!("cannot parse SingleStore's auth switch: {e}")))?;
            if switch.auth_plugin() != AuthPlugin::MysqlClearPassword {
                return Err(protocol(format!(
                    "SingleStore asked for the {} authentication plugin; a JWT login uses mysql_clear_password",
                    String::from_utf8_lossy(switch.auth_plugin().as_bytes())
                )));
            }
            Ok(LoginReply::SendPassword)
        }
        other => Err(protocol(format!(
            "unexpected packet from SingleStore during login (type {})",
            other.map_or_else(|| "empty".to_string(), |b| format!("0x{b:02X}"))
        ))),
    }
}

/// The socket under the upstream TLS: buffered for reads, because rustls
/// asks its transport for 4 KiB at a time, four system calls per 16 KiB
/// record of a large result; the buffer takes what the socket has in one.
/// Writes pass straight through.
pub type UpstreamIo = tokio::io::BufReader<TcpStream>;

/// Bytes read from the upstream socket at a time.
const UPSTREAM_READ: usize = 64 * 1024;

/// Where the upstream login ended.
pub enum Outcome {
    /// Logged in: the OK packet to pass on, and the TLS stream to relay over.
    Ok(Vec<u8>, Box<TlsStream<UpstreamIo>>),
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
    let tcp = tokio::io::BufReader::with_capacity(UPSTREAM_READ, tcp);
    let mut io = tls.connect(server_name, tcp).await.map_err(|e| {
        Failure::new(
            FailureReason::Tls,
            codes::SSL_CONNECTION_ERROR,
            b"HY000",
            format!("TLS to SingleStore ({shown}) failed: {e}"),
        )
    })?;
    packet::write(&mut io, 2, &response)
        .await
        .map_err(|e| io_failure("during login", e))?;
    loop {
        let (s, reply) = packet::read(&mut io, HANDSHAKE_LIMIT)
            .await
            .map_err(|e| io_failure("during login", e))?;
        match login_reply(&reply)? {
            LoginReply::Ok => return Ok(Outcome::Ok(reply, Box::new(io))),
            LoginReply::Refused => return Ok(Outcome::Refused(reply)),
            LoginReply::SendPassword => {
                let mut password = jwt.expose().as_bytes().to_vec();
                password.push(0);
                packet::write(&mut io, s.wrapping_add(1), &password)
                    .await
                    .map_err(|e| io_failure("during login", e))?;
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

    /// A packet from the fuzz corpus (`fuzz/seeds/mysql_packets/`), which
    /// doubles as a set of real-shaped packets here.
    fn seed(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../fuzz/seeds/mysql_packets/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn the_seed_packets_parse_as_what_they_are() {
        let greeting = Greeting::from_packet(seed("greeting")).unwrap();
        assert!(greeting
            .capabilities()
            .contains(CapabilityFlags::CLIENT_SSL));
        let for_client = greeting.for_client(1_000_000_007).unwrap();
        let parsed = HandshakePacket::deserialize((), &mut ParseBuf(&for_client)).unwrap();
        assert!(!parsed.capabilities().contains(CapabilityFlags::CLIENT_SSL));
        // The client's greeting is the proxy's: its connection id, its own scramble.
        assert_eq!(parsed.connection_id(), 1_000_000_007);
        assert_ne!(greeting.connection_id(), parsed.connection_id());
        assert_eq!(
            parsed.server_version_ref(),
            HandshakePacket::deserialize((), &mut ParseBuf(&seed("greeting")))
                .unwrap()
                .server_version_ref()
        );
        let conservative = Greeting::conservative();
        assert!(HandshakePacket::deserialize(
            (),
            &mut ParseBuf(&conservative.for_client(1).unwrap())
        )
        .is_ok());

        let login = ClientLogin::parse(1, seed("response")).unwrap();
        assert_eq!(login.user(), "app");
        let jwt = Secret::new("header.claims.signature");
        let (caps, max_packet, bytes) = login
            .upstream_response(greeting.capabilities(), "*", &jwt)
            .unwrap();
        assert!(caps.contains(CapabilityFlags::CLIENT_SSL));
        assert_eq!(max_packet, 16 * 1024 * 1024);
        let up = HandshakeResponse::deserialize((), &mut ParseBuf(&bytes)).unwrap();
        assert_eq!(up.user(), b"*");
        assert_eq!(up.db_name(), Some(&b"db1"[..]));
        assert_eq!(up.scramble_buf(), b"header.claims.signature\0");

        // CLIENT_SSL in a full response is dropped; an SSL request is refused.
        assert!(ClientLogin::parse(1, seed("response_ssl_flag")).is_ok());
        let refused = ClientLogin::parse(1, seed("ssl_request")).err().unwrap();
        assert!(refused.message.contains("TLS to the proxy is not offered"));
        // A greeting where an error packet stands is passed on as is.
        let err = Greeting::from_packet(seed("err")).err().unwrap();
        assert_eq!(err.packet, seed("err"));
    }

    /// Found by the `mysql_packets` fuzz target: an overflow inside
    /// `mysql_common`'s greeting parser (a panic with overflow checks on).
    #[test]
    fn a_greeting_with_an_auth_data_length_over_127_is_refused_not_a_panic() {
        use base64::Engine;
        let crash = base64::engine::general_purpose::STANDARD
            .decode("CaofAAAAAP8VBCMyODAwMEFj/12BgYGBgYGBgYGBgf//Y2VzcyBkZW5pZf8VBCMyOC4wMDBBH2P///8AAAD/FQQjMjBBY///////Y2VzcyBkZW7/Y2VzcyBk")
            .unwrap();
        let err = Greeting::from_packet(crash).err().unwrap();
        assert!(
            err.message.contains("authentication data length of 129"),
            "{}",
            err.message
        );
        // The same in a well-formed greeting, for each length mysql_common
        // cannot take, and one it can.
        let good = seed("greeting");
        assert_eq!(auth_data_len(&good), Some(21));
        for len in 0x80..=0x87u8 {
            let mut bad = good.clone();
            bad[40] = len;
            assert!(Greeting::from_packet(bad).is_err(), "{len:#x}");
        }
        assert!(auth_data_len(b"\x0a5.7").is_none());
    }

    #[test]
    fn login_replies() {
        assert_eq!(login_reply(&seed("ok")).unwrap(), LoginReply::Ok);
        assert_eq!(login_reply(&seed("err")).unwrap(), LoginReply::Refused);
        assert_eq!(
            login_reply(&seed("auth_switch_clear")).unwrap(),
            LoginReply::SendPassword
        );
        let native = login_reply(&seed("auth_switch_native")).unwrap_err();
        assert!(
            native.message.contains("mysql_native_password"),
            "{}",
            native.message
        );
        for garbage in [&b""[..], b"\x01", b"\xfe"] {
            assert!(login_reply(garbage).is_err(), "{garbage:?}");
        }
        assert!(login_reply(b"")
            .unwrap_err()
            .message
            .contains("(type empty)"));
    }

    /// SingleStore's greeting (its flags, version 5.7.32, utf8_general_ci, a
    /// 21-byte scramble, `mysql_native_password`): accepted, and the JWT
    /// waits for the auth switch, since the greeting offers no long
    /// authentication data.
    #[test]
    fn singlestores_greeting_logs_in_through_an_auth_switch() {
        let caps = CapabilityFlags::from_bits_truncate(SINGLESTORE_CAPABILITIES)
            | CapabilityFlags::CLIENT_SSL;
        let g = HandshakePacket::new(
            10,
            &b"5.7.32"[..],
            11,
            *b"gve'V,rQ",
            Some(&b"\"{v/;mYHB8.;\0"[..]),
            caps,
            33,
            mysql_common::constants::StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            Some(&b"mysql_native_password"[..]),
        );
        let greeting = Greeting::from_packet(packet::encode(&g)).expect("SingleStore's greeting");
        assert_eq!(auth_data_len(&packet::encode(&g)), Some(21));
        let login = ClientLogin::parse(1, seed("response")).unwrap();
        let jwt = Secret::new("header.claims.signature");
        let (up_caps, _, bytes) = login
            .upstream_response(greeting.capabilities(), "*", &jwt)
            .unwrap();
        assert!(!up_caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA));
        let up = HandshakeResponse::deserialize((), &mut ParseBuf(&bytes)).unwrap();
        assert_eq!(up.auth_plugin(), Some(&AuthPlugin::MysqlNativePassword));
        assert_eq!(up.scramble_buf(), b"");
        assert!(
            !bytes.windows(6).any(|w| w == b"header"),
            "the JWT waits for the switch"
        );
        // The proxy's offer before SingleStore is reached is within it.
        let offered = Greeting::conservative().capabilities();
        assert_eq!(
            offered.difference(caps),
            CapabilityFlags::empty(),
            "offered what SingleStore lacks"
        );
    }

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
