//! Entry points for the `fuzz/` crate (built only with the `fuzzing` feature):
//! one function per family of parsers that read untrusted bytes. The library's
//! families (`s2iam::fuzzing`: STS XML, the auth service's answer, JWT claims,
//! container credentials, session-policy rules) are re-exported as they are; this
//! crate adds the config file, local API queries and the database proxy's MySQL
//! packets, and its own parsers to the duration and metadata families.
//!
//! Each function feeds its input to every parser of the family and ignores the
//! result: a fuzz target fails only on a panic, a hang or an out-of-memory, and a
//! few functions also assert invariants the rest of the program relies on. The
//! parsers stay private to their modules; this module is the one place that sees
//! them all.

pub use s2iam::fuzzing::{
    container_credentials, exchange_response, jwt_claims, session_policy, sts_xml,
};

use crate::config::{ServeConfig, ServeOverrides};
use s2iam::env::Env;

/// Lossy UTF-8, as every parser here takes text.
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A sidecar config file (TOML), validated as `serve --check` does.
pub fn config_toml(data: &[u8]) {
    let _ = ServeConfig::from_toml(
        &text(data),
        &Env::from_pairs::<&str, &str>([]),
        &ServeOverrides::default(),
    );
}

/// A duration as `--timeout`, the config file and `?expires=` take it: the
/// library's parsers (`s2iam::fuzzing::duration`), then the local API's.
pub fn duration(data: &[u8]) {
    s2iam::fuzzing::duration(data);
    let _ = crate::serve::aws_routes::parse_expires(&text(data));
}

/// The query string of a local API request (`/v1/token/*`, `/v1/s3/presign`).
pub fn local_api_query(data: &[u8]) {
    let query = text(data);
    let _ = crate::serve::local_api::parse_query(Some(&query), crate::serve::routes::TOKEN_PARAMS);
    let _ = crate::serve::aws_routes::presign_request(Some(&query));
}

/// Answers of the metadata services and cloud token endpoints
/// (`s2iam::fuzzing::metadata_response`), and the raw answer `s2iam probe` reads.
pub fn metadata_response(data: &[u8]) {
    s2iam::fuzzing::metadata_response(data);
    let _ = crate::sidecar_client::socket::parse_answer(data);
}

/// The database proxy's reading of MySQL packets, each from the same bytes:
/// packet framing (and a write/read round trip of the bytes as a payload), the
/// server's greeting, the client's handshake response and the login the proxy
/// builds from it, the server's answers during the login (OK, ERR, auth
/// switch, anything else), a client's command read as a `KILL`, and the
/// server's stream followed for `max_session_lifetime` (whole, and cut in two).
pub fn mysql_packets(data: &[u8]) {
    use crate::dbproxy::{login, packet, session};
    use mysql_common::constants::CapabilityFlags;

    if let Some(Ok((_, payload))) = ready(packet::read(&mut &data[..], packet::HANDSHAKE_LIMIT)) {
        assert!(payload.len() <= packet::HANDSHAKE_LIMIT);
    }
    let mut framed = Vec::new();
    if let Some(Ok(next)) = ready(packet::write(&mut framed, 250, data)) {
        let back = ready(packet::read(&mut framed.as_slice(), usize::MAX));
        let Some(Ok((last, payload))) = back else {
            panic!("a written packet does not read back: {back:?}");
        };
        assert_eq!(payload, data, "the payload changed in a round trip");
        assert_eq!(last.wrapping_add(1), next, "sequence ids disagree");
    }
    let server_caps = match login::Greeting::from_packet(data.to_vec()) {
        Ok(greeting) => {
            let _ = greeting.for_client(1);
            greeting.capabilities()
        }
        Err(_) => CapabilityFlags::all(),
    };
    if let Ok(client) = login::ClientLogin::parse(1, data.to_vec()) {
        let _ = client.user();
        let jwt = s2iam::Secret::new("eyJhbGciOiJub25lIn0.e30.");
        let _ = client.upstream_response(server_caps, "u", &jwt);
    }
    let _ = login::login_reply(data);
    let _ = session::server_message(data);
    // A client's command as a possible KILL (the relay reads these from any client).
    let ids = crate::dbproxy::kill::SessionIds::default();
    let session = ids.open();
    session.logged_in(7);
    for query_attributes in [false, true] {
        let _ = crate::dbproxy::kill::rewrite(data, &ids, query_attributes);
    }
    let _ = crate::dbproxy::kill::looks(data, false);
    let _ = crate::dbproxy::kill::looks(data, true);
    server_turns(data);
}

/// The server's bytes after a command (the first byte of `data` picks which),
/// fed whole and cut in two: both readings agree.
fn server_turns(data: &[u8]) {
    use crate::dbproxy::lifetime::{Turns, Walker};
    let Some((&command, stream)) = data.split_first() else {
        return;
    };
    let run = |parts: &[&[u8]]| {
        let mut turns = Turns::new(command & 1 == 1, true);
        turns.command(command >> 1);
        let mut walker = Walker::default();
        for part in parts {
            walker.feed(part, &mut turns);
        }
        turns.closable()
    };
    let whole = run(&[stream]);
    let (a, b) = stream.split_at(stream.len() / 2);
    assert_eq!(
        whole,
        run(&[a, b]),
        "the reading depends on how reads split the stream"
    );
}

/// Polls `f` once: the readers and writers here are byte slices and vectors,
/// which never wait, so one poll finishes (`None` if it did not).
fn ready<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}
