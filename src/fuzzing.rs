//! Entry points for the `fuzz/` crate (built only with the `fuzzing` feature):
//! one function per family of parsers that read untrusted bytes — the config
//! file, local API queries, durations, cloud metadata answers, STS XML, the auth
//! service's answer, JWT claims, container credentials, session-policy rules and
//! the database proxy's MySQL packets.
//!
//! Each function feeds its input to every parser of the family and ignores the
//! result: a fuzz target fails only on a panic, a hang or an out-of-memory, and a
//! few functions also assert invariants the rest of the program relies on. The
//! parsers stay private to their modules; this module is the one place that sees
//! them all.

// Fuzz entry points need a "now", any will do: the real clock, not injected.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, SystemTime};

use crate::config::{ServeConfig, ServeOverrides};
use crate::env::Env;
use crate::provider::aws::chain::{container, imds as instance_role, profile};
use crate::provider::aws::sts;
use crate::util::{parse_duration, MAX_DURATION};

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

/// A duration as `--timeout`, the config file and `?expires=` take it. Whatever is
/// accepted is within [`MAX_DURATION`].
pub fn duration(data: &[u8]) {
    let input = text(data);
    if let Ok(d) = parse_duration(&input) {
        assert!(d <= MAX_DURATION, "{input:?} gave {d:?}");
        assert!(
            SystemTime::now().checked_add(d).is_some(),
            "{input:?} overflows the clock"
        );
    }
    let _ = crate::serve::aws::parse_expires(&input);
    let _ = crate::util::parse_rfc3339(&input);
    let _ = crate::provider::aws::keys::parse_time(&input);
    let _ = crate::http::fetch::parse_retry_after(&input, SystemTime::now());
}

/// The query string of a local API request (`/v1/token/*`, `/v1/s3/presign`).
pub fn local_api_query(data: &[u8]) {
    let query = text(data);
    let _ = crate::serve::api::parse_query(Some(&query), crate::serve::routes::TOKEN_PARAMS);
    let _ = crate::serve::aws::presign_request(Some(&query));
}

/// Answers of the metadata services and cloud token endpoints (GCP, Azure, AWS
/// IMDS role credentials), and the raw answer `s2iam probe` reads.
pub fn metadata_response(data: &[u8]) {
    let body = text(data);
    crate::provider::gcp::fuzz_responses(&body);
    crate::provider::azure::fuzz_responses(&body);
    let _ = instance_role::parse("role", &body);
    let _ = crate::sidecar_client::socket::parse_answer(data);
    let _ = profile::parse_ini(&body);
    let _ = profile::process::parse(data, std::time::SystemTime::UNIX_EPOCH);
}

/// An STS answer: AssumeRole, AssumeRoleWithWebIdentity, GetCallerIdentity, or an
/// error document.
pub fn sts_xml(data: &[u8]) {
    let xml = text(data);
    for result in ["AssumeRoleResult", "AssumeRoleWithWebIdentityResult"] {
        let _ = sts::parse_assumed(&xml, result, "AssumeRole");
    }
    let _ = sts::parse_credentials(&xml, "GetSessionToken");
    if let Some(error) = sts::xml::tag(&xml, "Error") {
        let _ = sts::xml::tag(&error, "Code");
        let _ = sts::xml::tag(&error, "Message");
    }
    let _ = sts::xml::tag(&xml, "Arn");
}

/// The auth service's answer to an exchange (HTTP 200 body). A token it accepts
/// has not expired and its deadline is representable.
pub fn exchange_response(data: &[u8]) {
    let now = SystemTime::now();
    if let Ok(token) =
        crate::exchange::response::parse_success(data, now, Duration::from_secs(3600))
    {
        assert!(token.expires_at > now);
        let _ = token.remaining();
        let _ = format!("{token:?}");
    }
}

/// A JWT as the auth service or a cloud returns it (claims read unverified).
pub fn jwt_claims(data: &[u8]) {
    let jwt = text(data);
    let _ = crate::token::Claims::decode_checked(&jwt);
    let _ = crate::provider::jwt::jwt_claims(&jwt);
    let _ = crate::token::Token::new(
        crate::Secret::new(jwt),
        crate::util::time_after(SystemTime::UNIX_EPOCH, Duration::from_secs(8_589_934_590)),
        SystemTime::now(),
        None,
    );
}

/// The ECS/EKS container-credentials endpoint's answer and its URI setting.
pub fn container_credentials(data: &[u8]) {
    let body = text(data);
    let _ = container::parse("http://127.0.0.1/creds", &body);
    let _ = container::error_message(&body);
    let _ = container::check_full_uri(&body);
}

/// Session-policy rules as written in `[[aws_profile.session_policy]]`, and a
/// caller's bucket and key checked against them. Lines: `bucket patterns`,
/// `prefixes`, `actions` (space-separated), then the bucket and key asked for.
pub fn session_policy(data: &[u8]) {
    use crate::aws_vending::policy;
    let input = text(data);
    let mut lines = input.lines();
    let mut words = || -> Vec<String> {
        lines
            .next()
            .unwrap_or("")
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(String::from)
            .collect()
    };
    let (buckets, prefixes, actions) = (words(), words(), words());
    let asked = words();
    let Ok(actions) = policy::parse_actions(&actions) else {
        return;
    };
    let rule = policy::PolicyRule {
        buckets,
        prefixes,
        actions,
    };
    let valid = rule.validate().is_ok();
    let rules = [rule];
    if valid {
        if let Some(doc) = policy::session_policy(&rules, "aws") {
            let parsed = serde_json::from_str::<serde_json::Value>(&doc);
            assert!(
                parsed.as_ref().is_ok_and(serde_json::Value::is_object),
                "the session policy is not a JSON object: {doc}"
            );
        }
    }
    let bucket = asked.first().map(String::as_str).unwrap_or("");
    let key = asked.get(1).map(String::as_str);
    let _ = policy::validate_bucket_name(bucket);
    if let Some(k) = key {
        let _ = policy::validate_key(k);
    }
    for action in policy::S3Action::ALL {
        let _ = policy::allowed(&rules, action, bucket, key);
    }
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
        let jwt = crate::Secret::new("eyJhbGciOiJub25lIn0.e30.");
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
