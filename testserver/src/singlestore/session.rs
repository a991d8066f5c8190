//! One client connection to the mock SingleStore: greeting, TLS, JWT login, then
//! the few commands it answers.
//!
//! Login is what SingleStore's JWT authentication documents: the JWT is the
//! password, sent with `mysql_clear_password`, over TLS only; user `*` takes the
//! user name from the JWT. The greeting offers `mysql_native_password` (as
//! SingleStore does), so a client that answers with another plugin is switched to
//! `mysql_clear_password` with an auth-switch request.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use mysql_common::constants::{CapabilityFlags, ColumnFlags, ColumnType, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakeResponse;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest, Column, HandshakePacket};
use mysql_common::proto::MyDeserialize;
use rand::Rng;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::packet::{self, ResultSet};
use super::{LoginRecord, Shared};

/// Version string in the greeting: SingleStore's (it reports a MySQL 5.7
/// version; `SELECT @@memsql_version` has its own).
pub const SERVER_VERSION: &str = "5.7.32";
/// utf8_general_ci, as SingleStore's greeting names.
const DEFAULT_COLLATION: u8 = 33;
/// Handshake packets are small; a JWT is a few kilobytes.
const HANDSHAKE_LIMIT: usize = 64 * 1024;
const COMMAND_LIMIT: usize = 16 * 1024 * 1024;

const ER_ACCESS_DENIED: u16 = 1045;
const ER_UNKNOWN_COM: u16 = 1047;
const ER_NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
const ER_SYNTAX: u16 = 1064;
const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
const ER_NO_SUCH_THREAD: u16 = 1094;

/// The capabilities SingleStore's greeting offers (0x801FF7DF, as a third
/// party's protocol tests give them for SingleStoreDB Dev 0.2.35; the same
/// value is `s2iam::dbproxy::login::SINGLESTORE_CAPABILITIES`), plus TLS,
/// which SingleStore's cloud requires for JWT logins. Among them: no
/// `CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA` (so a JWT, longer than 250 bytes,
/// comes in an auth-switch response), no `CLIENT_DEPRECATE_EOF` (result sets
/// end with EOF packets), no session tracking.
pub fn server_capabilities() -> CapabilityFlags {
    CapabilityFlags::from_bits_truncate(0x801F_F7DF) | CapabilityFlags::CLIENT_SSL
}

type Io = Box<dyn Stream>;
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Serves one connection until the client quits or the socket closes.
pub(crate) async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    match login(&shared, tcp, peer, id).await {
        Ok(Some((io, mut session))) => {
            if let Err(e) = commands(&shared, io, &mut session, peer, id).await {
                tracing::debug!(error = %e, "mock SingleStore session ended");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "mock SingleStore handshake failed"),
    }
}

/// A logged-in session.
struct Session {
    /// The connection id from the greeting (`SELECT CONNECTION_ID()`).
    id: u32,
    user: String,
    capabilities: CapabilityFlags,
}

async fn login(
    shared: &Shared,
    mut tcp: TcpStream,
    peer: SocketAddr,
    id: u32,
) -> std::io::Result<Option<(Io, Session)>> {
    // Printable ASCII: `!` (33) to `~` (126).
    let scramble_1: [u8; 8] = std::array::from_fn(|_| rand::thread_rng().gen_range(33..=126));
    let mut scramble_2: Vec<u8> = (0..12)
        .map(|_| rand::thread_rng().gen_range(33..=126))
        .collect();
    scramble_2.push(0);
    let greeting = HandshakePacket::new(
        10,
        SERVER_VERSION.as_bytes(),
        id,
        scramble_1,
        Some(scramble_2),
        server_capabilities(),
        DEFAULT_COLLATION,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(&b"mysql_native_password"[..]),
    );
    packet::write(&mut tcp, 0, &packet::encode(&greeting)).await?;
    let (seq, first) = packet::read(&mut tcp, HANDSHAKE_LIMIT).await?;
    let client_caps = first
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| CapabilityFlags::from_bits_truncate(u32::from_le_bytes(b)))
        .unwrap_or_else(CapabilityFlags::empty);
    if !client_caps.contains(CapabilityFlags::CLIENT_SSL) {
        let msg = access_denied("?", peer, "mysql_clear_password (JWT) logins require TLS");
        packet::write(&mut tcp, seq.wrapping_add(1), &msg).await?;
        return Ok(None);
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.server_config.clone());
    let mut io: Io = Box::new(acceptor.accept(tcp).await?);
    let (seq, payload) = packet::read(&mut io, HANDSHAKE_LIMIT).await?;
    let response = match HandshakeResponse::deserialize((), &mut ParseBuf(&payload)) {
        Ok(r) => r,
        Err(e) => {
            let msg = packet::err(1043, b"08S01", &format!("Bad handshake: {e}"));
            packet::write(&mut io, seq.wrapping_add(1), &msg).await?;
            return Ok(None);
        }
    };
    let capabilities = response.capabilities() & server_capabilities();
    let user = String::from_utf8_lossy(response.user()).into_owned();
    let mut seq = seq.wrapping_add(1);
    let via_switch = response.auth_plugin() != Some(&AuthPlugin::MysqlClearPassword);
    let password = if !via_switch {
        response.scramble_buf().to_vec()
    } else if capabilities.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
        let switch = AuthSwitchRequest::new(&b"mysql_clear_password"[..], &b""[..]);
        packet::write(&mut io, seq, &packet::encode(&switch)).await?;
        let (s, data) = packet::read(&mut io, HANDSHAKE_LIMIT).await?;
        seq = s.wrapping_add(1);
        data
    } else {
        let msg = packet::err(
            ER_NOT_SUPPORTED_AUTH_MODE,
            b"08004",
            "Client does not support authentication protocol requested by server; consider upgrading MySQL client",
        );
        packet::write(&mut io, seq, &msg).await?;
        return Ok(None);
    };
    let password = password.strip_suffix(b"\0").unwrap_or(&password);
    let jwt = String::from_utf8_lossy(password);
    let outcome = verify(shared, &jwt, &user);
    shared.record(LoginRecord {
        connection_id: id,
        requested_user: user.clone(),
        user: outcome.as_ref().ok().cloned(),
        error: outcome.as_ref().err().cloned(),
        jwt_sha256: crate::util::sha256_hex(password),
        database: response
            .db_name()
            .map(|d| String::from_utf8_lossy(d).into_owned()),
        collation: response.collation(),
        connect_attributes: response.connect_attributes().unwrap_or_default(),
        capabilities: capabilities.bits(),
        change_user: false,
        via_switch,
    });
    match outcome {
        Ok(user) => {
            let ok = packet::ok(0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT);
            packet::write(&mut io, seq, &ok).await?;
            Ok(Some((
                io,
                Session {
                    id,
                    user,
                    capabilities,
                },
            )))
        }
        Err(reason) => {
            packet::write(&mut io, seq, &access_denied(&user, peer, &reason)).await?;
            Ok(None)
        }
    }
}

fn access_denied(user: &str, peer: SocketAddr, reason: &str) -> Vec<u8> {
    packet::err(
        ER_ACCESS_DENIED,
        b"28000",
        &format!(
            "Access denied for user '{user}'@'{}' (using password: YES): {reason}",
            peer.ip()
        ),
    )
}

/// Checks the JWT and returns the user the session runs as.
fn verify(shared: &Shared, jwt: &str, user: &str) -> Result<String, String> {
    if jwt.is_empty() {
        return Err("no JWT given as the password".into());
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp"]);
    let claims: Value = shared
        .key
        .verify(jwt, &validation)
        .map_err(|e| format!("the JWT is not valid: {e}"))?;
    if claims.get("jwtType").and_then(Value::as_str) != Some("database") {
        return Err("the JWT is not a database JWT".into());
    }
    let wg = claims.get("workspaceGroupID").and_then(Value::as_str);
    match (&shared.config.workspace_group_id, wg) {
        (_, None) => return Err("the JWT has no workspace group".into()),
        (Some(want), Some(got)) if want != got => {
            return Err(format!(
                "the JWT is for workspace group {got}, not this one ({want})"
            ))
        }
        _ => {}
    }
    let jwt_user = claims
        .get("username")
        .or_else(|| claims.get("sub"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("the JWT names no user")?;
    if user != "*" && user != jwt_user {
        return Err(format!("the JWT is for user {jwt_user}, not {user}"));
    }
    Ok(jwt_user.to_string())
}

async fn commands(
    shared: &Shared,
    mut io: Io,
    session: &mut Session,
    peer: SocketAddr,
    id: u32,
) -> std::io::Result<()> {
    loop {
        let (_, payload) = packet::read(&mut io, COMMAND_LIMIT).await?;
        let Some((&command, body)) = payload.split_first() else {
            continue;
        };
        let reply = match command {
            0x01 => return Ok(()),             // COM_QUIT
            0x02 | 0x0e | 0x1f => ok_packet(), // COM_INIT_DB, COM_PING, COM_RESET_CONNECTION
            0x11 => {
                if change_user(shared, &mut io, session, body, peer, id).await? {
                    continue;
                }
                return Ok(());
            }
            0x03 => {
                let query = String::from_utf8_lossy(body);
                if let Some(limit) = rows_query(&query) {
                    let rows = limit.unwrap_or(shared.config.large_rows);
                    stream_rows(&mut io, session, rows, shared.config.large_row_bytes).await?;
                    continue;
                }
                query_reply(shared, session, &query)
            }
            other => framed(packet::err(
                ER_UNKNOWN_COM,
                b"08S01",
                &format!("the mock SingleStore does not support command 0x{other:02x}"),
            )),
        };
        io.write_all(&reply).await?;
        io.flush().await?;
    }
}

/// `COM_CHANGE_USER` (its body after the command byte): a new login on the
/// open connection, checked and recorded as the first one. The plugin the
/// client names is never `mysql_clear_password` with a JWT (its auth data has
/// a 1-byte length), so the mock always switches to it. Returns whether the
/// session goes on (a refused change of user ends it, as in MySQL).
async fn change_user(
    shared: &Shared,
    io: &mut Io,
    session: &mut Session,
    body: &[u8],
    peer: SocketAddr,
    id: u32,
) -> std::io::Result<bool> {
    let (user, rest) = split_nul(body).unwrap_or_default();
    let user = String::from_utf8_lossy(user).into_owned();
    let database = rest
        .split_first()
        .and_then(|(len, r)| r.get(*len as usize..))
        .and_then(split_nul)
        .map(|(db, _)| String::from_utf8_lossy(db).into_owned())
        .filter(|db| !db.is_empty());
    let switch = AuthSwitchRequest::new(&b"mysql_clear_password"[..], &b""[..]);
    packet::write(io, 1, &packet::encode(&switch)).await?;
    let (seq, password) = packet::read(io, HANDSHAKE_LIMIT).await?;
    let password = password.strip_suffix(b"\0").unwrap_or(&password);
    let outcome = verify(shared, &String::from_utf8_lossy(password), &user);
    shared.record(LoginRecord {
        connection_id: id,
        requested_user: user.clone(),
        user: outcome.as_ref().ok().cloned(),
        error: outcome.as_ref().err().cloned(),
        jwt_sha256: crate::util::sha256_hex(password),
        database,
        collation: 0,
        connect_attributes: Default::default(),
        capabilities: session.capabilities.bits(),
        change_user: true,
        via_switch: true,
    });
    let seq = seq.wrapping_add(1);
    match outcome {
        Ok(new_user) => {
            session.user = new_user;
            let ok = packet::ok(0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT);
            packet::write(io, seq, &ok).await?;
            Ok(true)
        }
        Err(reason) => {
            packet::write(io, seq, &access_denied(&user, peer, &reason)).await?;
            Ok(false)
        }
    }
}

fn split_nul(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|c| *c == 0)?;
    Some((
        &b[..end],
        b.get(end.saturating_add(1)..).unwrap_or_default(),
    ))
}

fn framed(payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    packet::frame(1, &payload, &mut out);
    out
}

fn ok_packet() -> Vec<u8> {
    framed(packet::ok(0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT))
}

/// The reply to a text query: a result set, OK, or an error.
fn query_reply(shared: &Shared, session: &Session, query: &str) -> Vec<u8> {
    let q = normalize(query);
    let status = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
    let single = |name: &str, column_type: ColumnType, value: Option<&[u8]>| {
        let column = column(name, column_type);
        let mut rs = ResultSet::new(&[column], session.capabilities, status);
        rs.row(&[value]);
        rs.finish()
    };
    if q == "select 1" {
        return single("1", ColumnType::MYSQL_TYPE_LONGLONG, Some(b"1"));
    }
    if q == "select current_user()" || q == "select current_user" {
        let who = format!("{}@%", session.user);
        return single(
            "CURRENT_USER()",
            ColumnType::MYSQL_TYPE_VAR_STRING,
            Some(who.as_bytes()),
        );
    }
    if q == "select connection_id()" {
        let id = session.id.to_string();
        return single(
            "CONNECTION_ID()",
            ColumnType::MYSQL_TYPE_LONGLONG,
            Some(id.as_bytes()),
        );
    }
    if let Some(target) = kill_query(query) {
        // Recorded, not carried out (the mock runs nothing long enough to
        // interrupt): what a test checks is which id arrived.
        shared
            .kills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(target);
        let live = shared
            .logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|l| l.connection_id == target && l.user.is_some());
        if live {
            return ok_packet();
        }
        return framed(packet::err(
            ER_NO_SUCH_THREAD,
            b"HY000",
            &format!("Unknown thread id: {target}"),
        ));
    }
    if q.starts_with("set ") || q.starts_with("use ") || q == "commit" || q == "rollback" {
        return ok_packet();
    }
    if let Some(vars) = variables_query(&q) {
        return match vars {
            Ok(items) => {
                let columns: Vec<Column> = items
                    .iter()
                    .map(|(name, _)| column(name, ColumnType::MYSQL_TYPE_VAR_STRING))
                    .collect();
                let mut rs = ResultSet::new(&columns, session.capabilities, status);
                let values: Vec<Option<&[u8]>> =
                    items.iter().map(|(_, v)| v.map(str::as_bytes)).collect();
                rs.row(&values);
                rs.finish()
            }
            Err(name) => framed(packet::err(
                ER_UNKNOWN_SYSTEM_VARIABLE,
                b"HY000",
                &format!("Unknown system variable '{name}'"),
            )),
        };
    }
    framed(packet::err(
        ER_SYNTAX,
        b"42000",
        &format!(
            "the mock SingleStore does not run {:?}: it answers SELECT 1, SELECT CURRENT_USER(), SELECT @@variable and SELECT * FROM s2iam_rows [LIMIT n]",
            query.chars().take(200).collect::<String>()
        ),
    ))
}

fn column(name: &str, column_type: ColumnType) -> Column {
    let (charset, flags) = if column_type == ColumnType::MYSQL_TYPE_LONGLONG {
        (63, ColumnFlags::NOT_NULL_FLAG | ColumnFlags::BINARY_FLAG)
    } else {
        (DEFAULT_COLLATION as u16, ColumnFlags::empty())
    };
    Column::new(column_type)
        .with_name(name.as_bytes())
        .with_org_name(name.as_bytes())
        .with_character_set(charset)
        .with_flags(flags)
        .with_column_length(if charset == 63 { 20 } else { 1024 })
}

/// Lower case, single spaces, no trailing `;`.
fn normalize(query: &str) -> String {
    query
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// `KILL [QUERY | CONNECTION] n`, `/* comments */` anywhere: `Some(n)`.
fn kill_query(query: &str) -> Option<u32> {
    let mut text = query.to_string();
    while let Some(start) = text.find("/*") {
        let end = text[start..].find("*/")?;
        text.replace_range(start..start.saturating_add(end).saturating_add(2), " ");
    }
    let q = normalize(&text);
    let rest = q.strip_prefix("kill ")?;
    let rest = rest
        .strip_prefix("query ")
        .or_else(|| rest.strip_prefix("connection "))
        .unwrap_or(rest);
    rest.trim().parse().ok()
}

/// `SELECT * FROM s2iam_rows [LIMIT n]`: `Some(limit)`.
fn rows_query(query: &str) -> Option<Option<usize>> {
    let q = normalize(query);
    let rest = q.strip_prefix("select * from s2iam_rows")?;
    match rest.trim() {
        "" => Some(None),
        r => r
            .strip_prefix("limit ")
            .and_then(|n| n.trim().parse().ok())
            .map(Some),
    }
}

/// A column of a variables query: its name and value (`None` is NULL).
type Variable = (String, Option<&'static str>);

/// `SELECT @@a, @@session.b [AS x] [LIMIT 1]`: each column's name and value, or
/// the first unknown variable.
fn variables_query(q: &str) -> Option<Result<Vec<Variable>, String>> {
    let list = q.strip_prefix("select @@")?;
    let list = list.strip_suffix(" limit 1").unwrap_or(list);
    let mut items = Vec::new();
    for (i, item) in list.split(',').enumerate() {
        let item = item.trim();
        let item = if i == 0 {
            item
        } else {
            item.strip_prefix("@@")?
        };
        let (var, alias) = match item.split_once(" as ") {
            Some((v, a)) => (v.trim(), Some(a.trim().trim_matches('`'))),
            None => (item, None),
        };
        let name = var
            .strip_prefix("session.")
            .or_else(|| var.strip_prefix("global."))
            .unwrap_or(var);
        let Some(value) = variable(name) else {
            return Some(Err(name.to_string()));
        };
        items.push((alias.map(String::from).unwrap_or(format!("@@{var}")), value));
    }
    Some(Ok(items))
}

fn variable(name: &str) -> Option<Option<&'static str>> {
    Some(match name {
        "max_allowed_packet" => Some("67108864"),
        "wait_timeout" => Some("28800"),
        "interactive_timeout" => Some("28800"),
        "net_write_timeout" => Some("60"),
        "version_comment" => Some("s2iam mock SingleStore"),
        "version" => Some(SERVER_VERSION),
        "socket" => None,
        "autocommit" => Some("1"),
        "character_set_client"
        | "character_set_connection"
        | "character_set_results"
        | "character_set_server" => Some("utf8mb4"),
        "collation_connection" | "collation_server" => Some("utf8mb4_general_ci"),
        "time_zone" => Some("SYSTEM"),
        "system_time_zone" => Some("UTC"),
        "sql_mode" => Some("STRICT_ALL_TABLES"),
        "lower_case_table_names" => Some("2"),
        "auto_increment_increment" => Some("1"),
        "transaction_isolation" | "tx_isolation" => Some("READ-COMMITTED"),
        "license" => Some("Apache-2.0"),
        "memsql_version" => Some("8.9.0"),
        _ => return None,
    })
}

/// Streams `rows` rows of `(id, payload)`, flushing every 64 KiB.
async fn stream_rows(
    io: &mut Io,
    session: &Session,
    rows: usize,
    row_bytes: usize,
) -> std::io::Result<()> {
    let columns = [
        column("id", ColumnType::MYSQL_TYPE_LONGLONG),
        column("payload", ColumnType::MYSQL_TYPE_VAR_STRING),
    ];
    let mut rs = ResultSet::new(
        &columns,
        session.capabilities,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
    );
    let payload = vec![b'x'; row_bytes];
    for i in 0..rows {
        rs.row(&[Some(i.to_string().as_bytes()), Some(&payload)]);
        if rs.len() >= 64 * 1024 {
            io.write_all(&rs.take()).await?;
        }
    }
    io.write_all(&rs.finish()).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_queries() {
        assert_eq!(rows_query("SELECT *  FROM s2iam_rows;"), Some(None));
        assert_eq!(
            rows_query("select * from s2iam_rows limit 5"),
            Some(Some(5))
        );
        assert_eq!(rows_query("select * from other"), None);
        assert_eq!(kill_query("KILL QUERY 12;"), Some(12));
        assert_eq!(kill_query("/* c */ kill\n connection /**/ 12 ;"), Some(12));
        assert_eq!(kill_query("kill connection 3"), Some(3));
        assert_eq!(kill_query("kill 4"), Some(4));
        assert_eq!(kill_query("kill user x"), None);
        let vars = variables_query(&normalize(
            "SELECT @@max_allowed_packet, @@session.wait_timeout AS wt",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(vars[0], ("@@max_allowed_packet".into(), Some("67108864")));
        assert_eq!(vars[1], ("wt".into(), Some("28800")));
        assert_eq!(
            variables_query("select @@nope").unwrap().unwrap_err(),
            "nope"
        );
    }
}
