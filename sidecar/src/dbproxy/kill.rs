//! Connection ids through the proxy, and `KILL` of one.
//!
//! The proxy greets a client before it opens anything upstream (a client that
//! never answers costs SingleStore nothing), so the server's thread id is not
//! known when the greeting goes out. Drivers cancel a query by the greeting's
//! connection id: Connector/J's `Statement.cancel()` and query timeouts, Node
//! `mysql2`'s query `timeout`, PyMySQL's `kill()` open a second connection and
//! send `KILL [QUERY] <id>`. So each session gets an id of the proxy's own in
//! its greeting ([`SessionIds::open`]), the proxy remembers which server thread
//! it logged in as ([`SessionId::logged_in`]), and the relay rewrites a
//! client's `KILL` that names a session of this proxy ([`rewrite`]).
//!
//! What reaches the server for `KILL <n>` (text, `COM_QUERY`, or
//! `COM_PROCESS_KILL`), for the `n` a client sends:
//!
//! | `n` is | the server gets |
//! |---|---|
//! | the proxy id of a live session of this proxy | that session's server thread id |
//! | the server thread id of a live session of this proxy (`SELECT CONNECTION_ID()` gives it) | `n`, unchanged |
//! | anything else (a session that has ended, another proxy's, another client's, one not yet logged in), or both of the above | `0`, which names no thread: the server's own `1094 Unknown thread id: 0` comes back |
//!
//! Why refuse the rest rather than pass it on: every session of one proxy
//! logs in as the same workload, so the server would let any of them kill any
//! other session of that workload, on every host. A client of the proxy has
//! no business with sessions it did not open through this proxy, and an id it
//! holds for a session that has ended (a driver's late cancel) would name
//! whatever server thread now has that number. Answering with the server's
//! own error, rather than the proxy's, keeps the reply in its place in the
//! stream: a client may have sent other commands before its `KILL` whose
//! results are still on the way. Forms other than `KILL [HARD | SOFT]
//! [CONNECTION | QUERY] <digits>` (`KILL USER u`, `KILL QUERY ID q`, an
//! expression, a second statement after it) name nothing the proxy can check
//! and become `KILL QUERY 0` the same way.
//!
//! This confines what drivers and people send; it is not the security
//! boundary. A statement the relay does not read as a `KILL` (one inside
//! `PREPARE`, a stored procedure, a multi-statement after another statement,
//! an executable `/*! */` comment, more than [`INSPECT_LIMIT`] bytes of
//! comments before it, or a `COM_QUERY` with query attributes) reaches the
//! server as sent, where the server's own privilege check decides, as it would
//! for the workload connecting directly.
//!
//! Proxy ids start at [`FIRST_ID`], far above the thread ids servers hand out
//! (which count up from 1 since the server started), so that an id from
//! `SELECT CONNECTION_ID()` is never mistaken for a proxy id; below 2^31, for
//! drivers that keep the id in a signed 32-bit integer (Connector/J).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// `COM_QUERY`.
pub const COM_QUERY: u8 = 0x03;
/// `COM_PROCESS_KILL`: a 4-byte thread id (deprecated in MySQL 5.7, still served).
pub const COM_PROCESS_KILL: u8 = 0x0C;
/// The first proxy id.
pub const FIRST_ID: u32 = 1_000_000_000;
/// The last proxy id (`i32::MAX`): then the ids start again at [`FIRST_ID`].
pub const LAST_ID: u32 = 0x7FFF_FFFF;
/// A `COM_QUERY` whose first keyword is not visible in this many bytes (a
/// statement behind that many bytes of comments) is not read as a `KILL`: the
/// relay holds at most this much of a query to decide.
pub const INSPECT_LIMIT: usize = 64 * 1024;

/// The next id to try, for every proxy of the process: two proxies of one
/// sidecar hand out different ids (until the range wraps), so an id given by
/// one never names a session of the other.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// The live sessions of one proxy: proxy id → the server's thread id for it
/// (`None` until its upstream login is done).
#[derive(Debug, Default)]
pub struct SessionIds {
    live: Mutex<HashMap<u32, Option<u32>>>,
}

/// One session's proxy id, held until the session ends (then it is free again).
#[derive(Debug)]
pub struct SessionId<'a> {
    ids: &'a SessionIds,
    id: u32,
}

/// What a `KILL` naming `n` becomes (see the table in the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A proxy id of a live session: the server's thread id for it.
    Translate(u32),
    /// A server thread id of a live session of this proxy: as it is.
    Keep,
    /// Anything else: thread 0 instead, and why (for the log).
    Refuse(&'static str),
}

impl SessionIds {
    /// A fresh proxy id, unique among this proxy's live sessions (and, until
    /// the range of about a billion wraps, among all the process's proxies).
    pub fn open(&self) -> SessionId<'_> {
        const SPAN: u32 = LAST_ID - FIRST_ID + 1;
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        // At most `live.len() + 1` turns: the counter gives a new value each time.
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let id = FIRST_ID.saturating_add(n.checked_rem(SPAN).unwrap_or(0));
            if let std::collections::hash_map::Entry::Vacant(slot) = live.entry(id) {
                slot.insert(None);
                return SessionId { ids: self, id };
            }
        }
    }

    /// What `KILL n` becomes.
    pub fn target(&self, n: u64) -> Target {
        let Ok(n) = u32::try_from(n) else {
            return Target::Refuse("not a session of this proxy");
        };
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let as_proxy_id = live.get(&n).copied();
        let as_thread = live.values().any(|t| *t == Some(n));
        match (as_proxy_id, as_thread) {
            (Some(_), true) => Target::Refuse(
                "ambiguous: the proxy id of one session and the server's id of another",
            ),
            (Some(Some(thread)), false) => Target::Translate(thread),
            (Some(None), false) => Target::Refuse("that session has not logged in upstream yet"),
            (None, true) => Target::Keep,
            (None, false) => Target::Refuse("not a session of this proxy"),
        }
    }

    /// How many sessions are live (for tests and metrics).
    pub fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionId<'_> {
    /// The id the client's greeting carries.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Records the server's thread id for this session (from its greeting,
    /// once the login has succeeded): from now on `KILL <proxy id>` reaches it.
    pub fn logged_in(&self, thread: u32) {
        let mut live = self.ids.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = live.get_mut(&self.id) {
            *slot = Some(thread);
        }
    }
}

impl Drop for SessionId<'_> {
    fn drop(&mut self) {
        self.ids
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// A statement whose first keyword is `KILL`.
#[derive(Debug, PartialEq, Eq)]
pub enum Kill {
    /// `KILL [HARD | SOFT] [CONNECTION | QUERY] <digits> [;]`: the id (`None`
    /// past `u64`) and where its digits are in the text.
    Id {
        /// The id named.
        id: Option<u64>,
        /// Where its digits are.
        digits: Range<usize>,
    },
    /// Any other `KILL` (`KILL USER`, `KILL QUERY ID`, an expression, more
    /// after it).
    Other,
}

/// What the first keyword of a query's text (as far as it has come) says.
#[derive(Debug, PartialEq, Eq)]
pub enum Looks {
    /// It is not `KILL`: the query passes untouched.
    NotKill,
    /// It is `KILL`, or cannot be told yet: the relay needs the whole query.
    MaybeKill,
}

/// Whether the text of a query (its first `text.len()` bytes, all of it when
/// `whole`) may be a `KILL`.
pub fn looks(text: &[u8], whole: bool) -> Looks {
    // Held long enough: whatever the text is, it is passed on as it came.
    let may_hold = !whole && text.len() < INSPECT_LIMIT;
    let at = skip_space(text, 0);
    let rest = text.get(at..).unwrap_or_default();
    // Nothing but space and comments yet, or what may start a comment.
    if rest.is_empty() || (!whole && matches!(rest, b"/" | b"-")) {
        return if may_hold {
            Looks::MaybeKill
        } else {
            Looks::NotKill
        };
    }
    let (w, end) = word(text, at);
    let kill = if whole || end < text.len() {
        w.eq_ignore_ascii_case(b"kill")
    } else {
        // The word runs to the end of what has come: it may go on.
        may_hold
            && b"kill"
                .get(..w.len())
                .is_some_and(|k| k.eq_ignore_ascii_case(w))
    };
    if kill {
        Looks::MaybeKill
    } else {
        Looks::NotKill
    }
}

/// Reads a whole query's text as a `KILL`, if its first keyword is `KILL`.
pub fn parse(text: &[u8]) -> Option<Kill> {
    let at = skip_space(text, 0);
    let (word0, at) = word(text, at);
    if !word0.eq_ignore_ascii_case(b"kill") {
        return None;
    }
    let mut at = skip_space(text, at);
    let (mut w, mut end) = word(text, at);
    if w.eq_ignore_ascii_case(b"hard") || w.eq_ignore_ascii_case(b"soft") {
        at = skip_space(text, end);
        (w, end) = word(text, at);
    }
    if w.eq_ignore_ascii_case(b"connection") || w.eq_ignore_ascii_case(b"query") {
        at = skip_space(text, end);
        (w, end) = word(text, at);
    }
    if w.is_empty() || !w.iter().all(u8::is_ascii_digit) {
        return Some(Kill::Other);
    }
    let id = w.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?
            .checked_add(u64::from(d.saturating_sub(b'0')))
    });
    let digits = at..end;
    let mut rest = skip_space(text, end);
    if text.get(rest) == Some(&b';') {
        rest = skip_space(text, rest.saturating_add(1));
    }
    if rest < text.len() {
        return Some(Kill::Other);
    }
    Some(Kill::Id { id, digits })
}

/// The word (letters, digits, `_`, `$`) at `at`, and where it ends.
fn word(text: &[u8], at: usize) -> (&[u8], usize) {
    let rest = text.get(at..).unwrap_or_default();
    let len = rest
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$'))
        .unwrap_or(rest.len());
    (&rest[..len], at.saturating_add(len))
}

/// Past whitespace and comments (`/* */`, `-- ` and `#` to the end of the
/// line; not `/*!` or `/*M!`, whose content the server runs).
fn skip_space(text: &[u8], mut at: usize) -> usize {
    loop {
        let rest = text.get(at..).unwrap_or_default();
        let skip = match rest {
            [c, ..] if c.is_ascii_whitespace() || *c == 0x0B => 1,
            [b'/', b'*', more @ ..] if !more.starts_with(b"!") && !more.starts_with(b"M!") => {
                match more.windows(2).position(|w| w == b"*/") {
                    Some(end) => end.saturating_add(4),
                    None => rest.len(),
                }
            }
            [b'-', b'-'] => 2,
            [b'-', b'-', c, ..] if c.is_ascii_whitespace() || *c == 0x0B => line_len(rest),
            [b'#', ..] => line_len(rest),
            _ => return at,
        };
        at = at.saturating_add(skip);
    }
}

/// Up to and with the end of the line.
fn line_len(rest: &[u8]) -> usize {
    rest.iter()
        .position(|c| *c == b'\n')
        .map_or(rest.len(), |n| n.saturating_add(1))
}

/// Where the text of a `COM_QUERY` starts (after the command byte, and with
/// `CLIENT_QUERY_ATTRIBUTES` the parameter counts): `None` when the query
/// carries attributes (the relay does not read those).
pub fn query_text_start(payload: &[u8], query_attributes: bool) -> Option<usize> {
    if !query_attributes {
        return Some(1);
    }
    // Two length-encoded integers: parameter count, parameter set count (1).
    // A count of zero is one byte; anything else is not read.
    match payload.get(1..3) {
        Some([0, 1]) => Some(3),
        _ => None,
    }
}

/// What the relay sends in place of a client's command.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// Not a `KILL`, or one naming a server thread id of this proxy: as it came.
    Keep,
    /// A `KILL` of a proxy id: the same command naming the server's thread id.
    Translate {
        /// The proxy id the client named.
        proxy_id: u32,
        /// The server's thread id sent instead.
        thread: u32,
        /// The command to send.
        payload: Vec<u8>,
    },
    /// A `KILL` of something else: the same command naming thread 0.
    Refuse {
        /// The id the client named (`None`: a form without one, or past `u64`).
        id: Option<u64>,
        /// Why.
        why: &'static str,
        /// The command to send.
        payload: Vec<u8>,
    },
}

/// The command to send upstream for a client's `COM_QUERY` or
/// `COM_PROCESS_KILL` (whole `payload`, command byte first).
pub fn rewrite(payload: &[u8], ids: &SessionIds, query_attributes: bool) -> Rewrite {
    match payload.first() {
        Some(&COM_PROCESS_KILL) => {
            let Some(raw) = payload.get(1..5).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
                return Rewrite::Keep;
            };
            let n = u32::from_le_bytes(raw);
            let with = |id: u32| {
                let mut out = vec![COM_PROCESS_KILL];
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(payload.get(5..).unwrap_or_default());
                out
            };
            match ids.target(u64::from(n)) {
                Target::Keep => Rewrite::Keep,
                Target::Translate(thread) => Rewrite::Translate {
                    proxy_id: n,
                    thread,
                    payload: with(thread),
                },
                Target::Refuse(why) => Rewrite::Refuse {
                    id: Some(u64::from(n)),
                    why,
                    payload: with(0),
                },
            }
        }
        Some(&COM_QUERY) => {
            let Some(start) = query_text_start(payload, query_attributes) else {
                return Rewrite::Keep;
            };
            let head = payload.get(..start).unwrap_or_default();
            let text = payload.get(start..).unwrap_or_default();
            let replaced = |digits: &Range<usize>, with: &[u8]| {
                let mut out = head.to_vec();
                out.extend_from_slice(text.get(..digits.start).unwrap_or_default());
                out.extend_from_slice(with);
                out.extend_from_slice(text.get(digits.end..).unwrap_or_default());
                out
            };
            match parse(text) {
                None => Rewrite::Keep,
                Some(Kill::Other) => Rewrite::Refuse {
                    id: None,
                    why: "only KILL [CONNECTION | QUERY] <id> is passed on",
                    payload: [head, b"KILL QUERY 0".as_slice()].concat(),
                },
                Some(Kill::Id { id: None, digits }) => Rewrite::Refuse {
                    id: None,
                    why: "not a session of this proxy",
                    payload: replaced(&digits, b"0"),
                },
                Some(Kill::Id {
                    id: Some(n),
                    digits,
                }) => match ids.target(n) {
                    Target::Keep => Rewrite::Keep,
                    Target::Translate(thread) => Rewrite::Translate {
                        proxy_id: u32::try_from(n).unwrap_or_default(),
                        thread,
                        payload: replaced(&digits, thread.to_string().as_bytes()),
                    },
                    Target::Refuse(why) => Rewrite::Refuse {
                        id: Some(n),
                        why,
                        payload: replaced(&digits, b"0"),
                    },
                },
            }
        }
        _ => Rewrite::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nonzero_unique_among_live_sessions_and_freed_at_the_end() {
        let ids = SessionIds::default();
        let a = ids.open();
        let b = ids.open();
        assert_ne!(a.id(), b.id());
        for s in [&a, &b] {
            assert!((FIRST_ID..=LAST_ID).contains(&s.id()), "{}", s.id());
        }
        assert_eq!(ids.len(), 2);
        drop(a);
        assert_eq!(ids.len(), 1);
        drop(b);
        assert!(ids.is_empty());
    }

    #[test]
    fn the_counter_wraps_within_the_range_and_skips_ids_in_use() {
        let ids = SessionIds::default();
        // Other tests share the counter: park it just before the wrap, then
        // hold the first id of the range so the wrap must skip it.
        NEXT.store(LAST_ID - FIRST_ID, Ordering::Relaxed);
        let last = ids.open();
        let first = ids.open();
        let (last_id, first_id) = (last.id(), first.id());
        // Another test may have taken one in between; the ids stay in range.
        assert!((FIRST_ID..=LAST_ID).contains(&last_id));
        assert!((FIRST_ID..=LAST_ID).contains(&first_id));
        NEXT.store(LAST_ID - FIRST_ID + 1, Ordering::Relaxed);
        let next = ids.open();
        assert_ne!(next.id(), first_id);
        assert_ne!(next.id(), last_id);
        assert_ne!(next.id(), 0);
    }

    #[test]
    fn kill_targets() {
        let ids = SessionIds::default();
        let a = ids.open();
        let b = ids.open();
        a.logged_in(42);
        // A proxy id of a logged-in session: its thread.
        assert_eq!(ids.target(u64::from(a.id())), Target::Translate(42));
        // The server's id of one of this proxy's sessions (SELECT CONNECTION_ID()).
        assert_eq!(ids.target(42), Target::Keep);
        // A session not yet logged in upstream, an unknown id, 0, past u32.
        assert!(matches!(ids.target(u64::from(b.id())), Target::Refuse(_)));
        assert!(matches!(ids.target(43), Target::Refuse(_)));
        assert!(matches!(ids.target(0), Target::Refuse(_)));
        assert!(matches!(ids.target(1 << 40), Target::Refuse(_)));
        // Both at once: refused rather than guessed.
        b.logged_in(a.id());
        assert!(
            matches!(ids.target(u64::from(a.id())), Target::Refuse(w) if w.starts_with("ambiguous"))
        );
        drop(b);
        // An ended session's ids name nothing.
        let gone = a.id();
        drop(a);
        assert!(matches!(ids.target(u64::from(gone)), Target::Refuse(_)));
        assert!(matches!(ids.target(42), Target::Refuse(_)));
    }

    #[test]
    fn kill_statements_as_drivers_and_people_write_them() {
        let id = |s: &str| match parse(s.as_bytes()) {
            Some(Kill::Id { id, digits }) => {
                assert!(s[digits].bytes().all(|c| c.is_ascii_digit()));
                id
            }
            other => panic!("{s:?}: {other:?}"),
        };
        // Connector/J, mysql2, PyMySQL, the mariadb CLI.
        assert_eq!(id("KILL QUERY 1000000001"), Some(1_000_000_001));
        assert_eq!(id("KILL 7"), Some(7));
        assert_eq!(id("KILL CONNECTION 7"), Some(7));
        assert_eq!(id("kill query 7;"), Some(7));
        assert_eq!(id("  Kill\n\tQuery  7 ; \n"), Some(7));
        assert_eq!(
            id("/* ping */ KILL /* x */ QUERY -- why\n 7 # done"),
            Some(7)
        );
        assert_eq!(id("KILL/**/7"), Some(7));
        assert_eq!(id("KILL HARD QUERY 7"), Some(7));
        assert_eq!(id("KILL SOFT 7"), Some(7));
        assert_eq!(id("KILL 99999999999999999999999"), None);
        for other in [
            "KILL USER app",
            "KILL QUERY ID 7",
            "KILL 7; SELECT 1",
            "KILL 7 + 1",
            "KILL (7)",
            "KILL",
            "KILL QUERY",
            "KILL 7abc",
        ] {
            assert_eq!(parse(other.as_bytes()), Some(Kill::Other), "{other:?}");
        }
        for not_kill in [
            "SELECT 1",
            "KILLER 7",
            "SELECT 'KILL 7'",
            "/*!50000 KILL 7 */",
            "--KILL 7",
            "",
            "/* unterminated KILL 7",
            "-- KILL 7",
        ] {
            assert_eq!(parse(not_kill.as_bytes()), None, "{not_kill:?}");
        }
    }

    #[test]
    fn what_the_relay_must_hold_to_decide() {
        assert_eq!(looks(b"SELECT SLEEP(30)", true), Looks::NotKill);
        assert_eq!(looks(b"SELECT", false), Looks::NotKill);
        assert_eq!(looks(b"INS", false), Looks::NotKill);
        assert_eq!(looks(b"-", false), Looks::MaybeKill, "a comment may start");
        assert_eq!(looks(b"KIL", false), Looks::MaybeKill);
        assert_eq!(looks(b"KILL", false), Looks::MaybeKill, "KILL or KILLER");
        assert_eq!(looks(b"KILLER", false), Looks::NotKill);
        assert_eq!(looks(b"kill 5", true), Looks::MaybeKill);
        assert_eq!(looks(b"  /* comment */ ", false), Looks::MaybeKill);
        assert_eq!(looks(b"  /* comment */ ", true), Looks::NotKill);
        assert_eq!(looks(b"", false), Looks::MaybeKill);
        let mut padded = b"/*".to_vec();
        padded.resize(INSPECT_LIMIT, b' ');
        assert_eq!(
            looks(&padded, false),
            Looks::NotKill,
            "held at most INSPECT_LIMIT"
        );
    }

    fn query(text: &str) -> Vec<u8> {
        [&[COM_QUERY][..], text.as_bytes()].concat()
    }

    #[test]
    fn rewrites() {
        let ids = SessionIds::default();
        let a = ids.open();
        a.logged_in(42);
        let p = a.id();
        match rewrite(&query(&format!("/*c*/ KILL QUERY {p} ;")), &ids, false) {
            Rewrite::Translate {
                proxy_id,
                thread,
                payload,
            } => {
                assert_eq!((proxy_id, thread), (p, 42));
                assert_eq!(payload, query("/*c*/ KILL QUERY 42 ;"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(rewrite(&query("KILL 42"), &ids, false), Rewrite::Keep);
        assert_eq!(rewrite(&query("SELECT 1"), &ids, false), Rewrite::Keep);
        match rewrite(&query("KILL CONNECTION 43"), &ids, false) {
            Rewrite::Refuse { id, payload, .. } => {
                assert_eq!(id, Some(43));
                assert_eq!(payload, query("KILL CONNECTION 0"));
            }
            other => panic!("{other:?}"),
        }
        match rewrite(&query("KILL USER app"), &ids, false) {
            Rewrite::Refuse { id, payload, .. } => {
                assert_eq!(id, None);
                assert_eq!(payload, query("KILL QUERY 0"));
            }
            other => panic!("{other:?}"),
        }
        // With query attributes and no parameters: the text after the counts.
        let with_attrs = [&[COM_QUERY, 0, 1][..], format!("KILL {p}").as_bytes()].concat();
        match rewrite(&with_attrs, &ids, true) {
            Rewrite::Translate { payload, .. } => assert_eq!(payload, b"\x03\x00\x01KILL 42"),
            other => panic!("{other:?}"),
        }
        // With parameters: not read.
        let with_params = [&[COM_QUERY, 1, 1][..], b"\x00\x01..KILL 5"].concat();
        assert_eq!(rewrite(&with_params, &ids, true), Rewrite::Keep);
        // COM_PROCESS_KILL.
        let process_kill = |n: u32| [&[COM_PROCESS_KILL][..], &n.to_le_bytes()].concat();
        match rewrite(&process_kill(p), &ids, false) {
            Rewrite::Translate { payload, .. } => assert_eq!(payload, process_kill(42)),
            other => panic!("{other:?}"),
        }
        assert_eq!(rewrite(&process_kill(42), &ids, false), Rewrite::Keep);
        match rewrite(&process_kill(7), &ids, false) {
            Rewrite::Refuse { payload, .. } => assert_eq!(payload, process_kill(0)),
            other => panic!("{other:?}"),
        }
        assert_eq!(rewrite(&[COM_PROCESS_KILL, 1], &ids, false), Rewrite::Keep);
        // Other commands are never touched.
        assert_eq!(rewrite(b"\x0eKILL 5", &ids, false), Rewrite::Keep);
    }
}
