//! `max_session_lifetime`: a session older than this is closed at its first
//! quiet moment between commands, so the client's next connection logs in with
//! the current JWT.
//!
//! SingleStore checks a JWT when a session logs in, not while it runs (README
//! "Connection lifetime"), so a session opened with a JWT outlives it. Pools
//! that recycle their connections (`pool_recycle`, HikariCP's `maxLifetime`)
//! bound that themselves; this is for clients that never do.
//!
//! Closing a session is only harmless between two commands: never while the
//! server is still answering (a slow query, a result with pauses in it), and
//! never inside a transaction (closing would roll it back). The relay passes
//! the server's bytes untouched, so to know where an answer ends it follows
//! the protocol's turns here: [`Turns`] learns each command from the client
//! half and each of the server's packets (its first bytes, from [`Walker`])
//! from the other half, and says when the whole answer has come. Anything it
//! does not follow (a replication stream, a command it does not know) counts
//! as "not between commands" until the client's next command, so a mistake can
//! only keep a session open, never close one mid-answer.
//!
//! Compressed sessions are not followed (their packets are inside zlib frames
//! that the relay passes without inflating, for speed): a proxy with
//! `max_session_lifetime` set never closes them for age. The local leg gains
//! nothing from compression, so clients of the proxy rarely ask for it.

use std::time::Duration;

use super::packet::MAX_CHUNK;

/// `max_session_lifetime`: 0 (never) or 1 second up to 30 days.
pub const MAX_SESSION_LIFETIME: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(30 * 24 * 3600);

/// How long a session must have been silent both ways, after the server's
/// whole answer, before it is closed for age: a pool that pings a connection
/// and then uses it (SQLAlchemy's `pool_pre_ping`) does so within
/// milliseconds, so a ping that succeeded is not followed by a closed socket.
pub const QUIET: Duration = Duration::from_secs(1);

/// How many of a packet's first bytes [`Turns`] reads: an OK packet's status
/// comes after two length-encoded integers (up to 9 bytes each).
pub const HEAD: usize = 32;

/// `SERVER_STATUS_IN_TRANS`.
const IN_TRANS: u16 = 0x0001;
/// `SERVER_MORE_RESULTS_EXISTS`: another result set follows.
const MORE_RESULTS: u16 = 0x0008;
/// `SERVER_STATUS_CURSOR_EXISTS`: rows come with `COM_STMT_FETCH`, not now.
const CURSOR_EXISTS: u16 = 0x0040;
/// `SERVER_STATUS_IN_TRANS_READONLY`.
const IN_TRANS_READONLY: u16 = 0x2000;

/// Commands, by their first byte (MySQL's `COM_*`).
mod com {
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const REFRESH: u8 = 0x07;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_KILL: u8 = 0x0c;
    pub const DEBUG: u8 = 0x0d;
    pub const PING: u8 = 0x0e;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const RESET_CONNECTION: u8 = 0x1f;
}

/// Where the conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The server has answered the last command whole.
    Between,
    /// An answer of one packet (OK, ERR, EOF or a string) is due.
    Single,
    /// An answer that may be a result set (or a `LOCAL INFILE` request) is due.
    Results,
    /// The answer to `COM_STMT_PREPARE` is due.
    Prepare,
    /// `left` definitions (parameters or columns) to pass, then an EOF
    /// packet when `eof`, then `next`.
    Definitions { left: u64, eof: bool, next: Next },
    /// An EOF packet after definitions, then `next`.
    Eof(Next),
    /// Rows (or column definitions, for `COM_FIELD_LIST`) until an EOF, OK or ERR.
    Rows,
    /// Not followed (an unknown command, a replication stream, a compressed
    /// session): never between commands until the client's next command.
    Lost,
}

/// What comes after definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Rows of a result set.
    Rows,
    /// A prepared statement's column definitions (this many).
    Columns(u64),
    /// Nothing: the answer is whole.
    Done,
}

/// The turns of one session's conversation (see the module doc).
#[derive(Debug)]
pub struct Turns {
    phase: Phase,
    /// `CLIENT_DEPRECATE_EOF` was agreed: result sets end with an OK packet
    /// headed `0xFE`, and no EOF follows definitions.
    deprecate_eof: bool,
    /// The last status the server gave said "in a transaction".
    in_transaction: bool,
    /// False for a compressed session: never followed, never closable.
    followed: bool,
}

impl Turns {
    /// A session just logged in (between commands, no transaction);
    /// `followed`: false for a compressed session.
    pub fn new(deprecate_eof: bool, followed: bool) -> Self {
        Self {
            phase: if followed {
                Phase::Between
            } else {
                Phase::Lost
            },
            deprecate_eof,
            in_transaction: false,
            followed,
        }
    }

    /// Whether the session may be closed now: the last answer is whole and no
    /// transaction is open.
    pub fn closable(&self) -> bool {
        self.phase == Phase::Between && !self.in_transaction
    }

    /// The client began a command (its first byte). Commands with no answer
    /// change nothing.
    pub fn command(&mut self, command: u8) {
        if !self.followed {
            return;
        }
        self.phase = match command {
            com::QUERY | com::STMT_EXECUTE => Phase::Results,
            com::STMT_PREPARE => Phase::Prepare,
            com::FIELD_LIST | com::STMT_FETCH => Phase::Rows,
            com::PING
            | com::INIT_DB
            | com::RESET_CONNECTION
            | com::SET_OPTION
            | com::STMT_RESET
            | com::PROCESS_KILL
            | com::DEBUG
            | com::STATISTICS
            | com::REFRESH => Phase::Single,
            com::STMT_CLOSE | com::STMT_SEND_LONG_DATA | com::QUIT => return,
            _ => Phase::Lost,
        };
    }

    /// The proxy answered a `COM_CHANGE_USER` itself, and the server's reply
    /// has been passed on: a fresh session, between commands.
    pub fn changed_user(&mut self) {
        if self.followed {
            self.phase = Phase::Between;
            self.in_transaction = false;
        }
    }

    /// One of the server's packets: `head` is its first bytes (up to
    /// [`HEAD`]), `len` its payload length (`MAX_CHUNK`: it continues).
    pub fn server_packet(&mut self, head: &[u8], len: usize) {
        let first = head.first().copied();
        self.phase = match (self.phase, first) {
            (Phase::Between | Phase::Lost, _) => return,
            (Phase::Single, _) => {
                self.status(head, len);
                Phase::Between
            }
            (Phase::Results, Some(0x00)) => self.end_of_results(head, len),
            (_, Some(0xFF)) => Phase::Between,
            // A LOCAL INFILE request: the client sends the file, then the
            // server's OK or ERR is due, as for a result.
            (Phase::Results, Some(0xFB)) => Phase::Results,
            (Phase::Results, Some(_)) => match lenenc(head) {
                Some((0, _)) | None => Phase::Lost,
                Some((columns, _)) => Phase::Definitions {
                    left: columns,
                    eof: !self.deprecate_eof,
                    next: Next::Rows,
                },
            },
            (Phase::Prepare, Some(0x00)) => self.prepared(head),
            (Phase::Definitions { left, eof, next }, Some(_)) => {
                let left = left.saturating_sub(1);
                match (left, eof) {
                    (0, true) => Phase::Eof(next),
                    (0, false) => self.after_definitions(next),
                    _ => Phase::Definitions { left, eof, next },
                }
            }
            (Phase::Eof(next), Some(0xFE)) if len < 9 => {
                self.status(head, len);
                let cursor = self.read_status(head, len).unwrap_or(0) & CURSOR_EXISTS != 0;
                if next == Next::Rows && cursor {
                    Phase::Between
                } else {
                    self.after_definitions(next)
                }
            }
            (Phase::Rows, Some(0xFE)) if self.terminal(len) => self.end_of_results(head, len),
            (Phase::Rows, _) => Phase::Rows,
            _ => Phase::Lost,
        };
    }

    /// After the last definition (and its EOF).
    fn after_definitions(&self, next: Next) -> Phase {
        match next {
            Next::Rows => Phase::Rows,
            Next::Columns(0) | Next::Done => Phase::Between,
            Next::Columns(columns) => Phase::Definitions {
                left: columns,
                eof: !self.deprecate_eof,
                next: Next::Done,
            },
        }
    }

    /// `COM_STMT_PREPARE`'s OK: statement id (4 bytes), columns (2), params (2).
    fn prepared(&self, head: &[u8]) -> Phase {
        let (Some(c), Some(p)) = (head.get(5..7), head.get(7..9)) else {
            return Phase::Lost;
        };
        let columns = u64::from(u16::from_le_bytes([c[0], c[1]]));
        let params = u64::from(u16::from_le_bytes([p[0], p[1]]));
        match (params, columns) {
            (0, 0) => Phase::Between,
            (0, columns) => Phase::Definitions {
                left: columns,
                eof: !self.deprecate_eof,
                next: Next::Done,
            },
            (params, columns) => Phase::Definitions {
                left: params,
                eof: !self.deprecate_eof,
                next: Next::Columns(columns),
            },
        }
    }

    /// An OK or EOF that ends a result (or a whole answer): another result
    /// follows when the server says so.
    fn end_of_results(&mut self, head: &[u8], len: usize) -> Phase {
        self.status(head, len);
        match self.read_status(head, len) {
            Some(status) if status & MORE_RESULTS != 0 => Phase::Results,
            Some(_) => Phase::Between,
            None => Phase::Lost,
        }
    }

    /// Whether a packet headed `0xFE` in rows ends them: an EOF (under 9
    /// bytes), or with `CLIENT_DEPRECATE_EOF` an OK (a row starting with
    /// `0xFE`, an 8-byte length, is at least 16 MiB long, so it fills the
    /// packet).
    fn terminal(&self, len: usize) -> bool {
        len < 9 || (self.deprecate_eof && len < MAX_CHUNK)
    }

    /// Remembers whether the server says a transaction is open.
    fn status(&mut self, head: &[u8], len: usize) {
        if let Some(status) = self.read_status(head, len) {
            self.in_transaction = status & (IN_TRANS | IN_TRANS_READONLY) != 0;
        }
    }

    /// The status flags of an OK (`0x00`, or `0xFE` with
    /// `CLIENT_DEPRECATE_EOF`) or EOF (`0xFE`, under 9 bytes) packet.
    fn read_status(&self, head: &[u8], len: usize) -> Option<u16> {
        let at = match head.first()? {
            0xFE if len < 9 => 3,
            0x00 | 0xFE => {
                let (_, a) = lenenc(head.get(1..)?)?;
                let (_, b) = lenenc(head.get(1usize.saturating_add(a)..)?)?;
                1usize.saturating_add(a).saturating_add(b)
            }
            _ => return None,
        };
        let s = head.get(at..at.saturating_add(2))?;
        Some(u16::from_le_bytes([s[0], s[1]]))
    }
}

/// A length-encoded integer at the front of `b`: (value, bytes it took).
/// `mysql_common`'s reader does the decoding; its NULL (`0xFB`) and error
/// (`0xFF`) markers read as 0 there, but here they are no count at all.
fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    if matches!(b.first(), Some(0xFB | 0xFF)) {
        return None;
    }
    let mut buf = mysql_common::io::ParseBuf(b);
    let value = buf.checked_eat_lenenc_int()?;
    Some((value, b.len().saturating_sub(buf.0.len())))
}

/// Cuts the server's plain (uncompressed) byte stream into packets as it
/// passes, however the reads split it, and hands each packet's first bytes to
/// [`Turns`]. A packet that continues a 16 MiB one is not a packet of its own.
#[derive(Debug, Default)]
pub struct Walker {
    /// Header bytes of the next packet read so far.
    header: Vec<u8>,
    /// Payload bytes of the current packet still to come.
    left: usize,
    /// The current packet's length.
    len: usize,
    /// The current packet continues the previous one.
    continuation: bool,
    /// The next packet continues the current one.
    continues: bool,
    /// The current packet's first bytes.
    head: Vec<u8>,
    /// The current packet was handed over (its head is complete).
    told: bool,
}

impl Walker {
    /// Reads `data`, the next bytes from the server.
    pub fn feed(&mut self, mut data: &[u8], turns: &mut Turns) {
        loop {
            if self.left == 0 && self.header.len() < 4 {
                let k = 4usize.saturating_sub(self.header.len()).min(data.len());
                self.header.extend_from_slice(&data[..k]);
                data = &data[k..];
                if self.header.len() < 4 {
                    return;
                }
                self.start();
                if self.left == 0 {
                    self.tell(turns);
                    continue;
                }
            }
            if data.is_empty() {
                return;
            }
            let k = self.left.min(data.len());
            if !self.told {
                let want = HEAD.saturating_sub(self.head.len()).min(k);
                self.head.extend_from_slice(&data[..want]);
            }
            self.left = self.left.saturating_sub(k);
            data = &data[k..];
            if self.left == 0 || self.head.len() >= HEAD {
                self.tell(turns);
            }
        }
    }

    /// A whole header has been read: the packet it starts.
    fn start(&mut self) {
        let h = &self.header;
        self.len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
        self.left = self.len;
        self.continuation = self.continues;
        self.continues = self.len == MAX_CHUNK;
        self.head.clear();
        self.told = false;
    }

    /// Hands the packet's head over once; and, at the packet's end, gets
    /// ready for the next header.
    fn tell(&mut self, turns: &mut Turns) {
        if !self.told {
            self.told = true;
            if !self.continuation {
                turns.server_packet(&self.head, self.len);
            }
        }
        if self.left == 0 {
            self.header.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTOCOMMIT: u16 = 0x0002;

    /// An OK packet (`0x00`, or `0xFE` ending rows with `CLIENT_DEPRECATE_EOF`).
    fn ok(first: u8, status: u16) -> Vec<u8> {
        let s = status.to_le_bytes();
        vec![first, 0, 0, s[0], s[1], 0, 0]
    }

    /// An EOF packet.
    fn eof(status: u16) -> Vec<u8> {
        let s = status.to_le_bytes();
        vec![0xFE, 0, 0, s[0], s[1]]
    }

    const COLUMN: &[u8] = b"\x03def\x03app\x01t\x01t\x01a\x01a\x0c\x2d\x00";

    /// Feeds whole packets (as the server would send them, framed) and says
    /// whether the session may be closed after each.
    fn run(turns: &mut Turns, packets: &[Vec<u8>]) -> Vec<bool> {
        let mut walker = Walker::default();
        packets
            .iter()
            .enumerate()
            .map(|(i, p)| {
                walker.feed(&framed(i, p), turns);
                turns.closable()
            })
            .collect()
    }

    fn framed(seq: usize, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_le_bytes();
        let mut out = vec![len[0], len[1], len[2], (seq % 256) as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn a_text_result_set_ends_at_its_eof_not_before() {
        let mut t = Turns::new(false, true);
        assert!(t.closable(), "a fresh session is between commands");
        t.command(com::QUERY);
        assert!(!t.closable());
        let got = run(
            &mut t,
            &[
                vec![1],
                COLUMN.to_vec(),
                eof(AUTOCOMMIT),
                b"\x011".to_vec(),
                // A row whose first column is empty starts with 0x00, like an OK.
                b"\x00\x01x".to_vec(),
                eof(AUTOCOMMIT),
            ],
        );
        assert_eq!(got, [false, false, false, false, false, true]);
    }

    #[test]
    fn with_deprecate_eof_rows_end_at_an_ok_headed_0xfe() {
        let mut t = Turns::new(true, true);
        t.command(com::QUERY);
        let got = run(
            &mut t,
            &[
                vec![1],
                COLUMN.to_vec(),
                b"\x011".to_vec(),
                ok(0xFE, AUTOCOMMIT),
            ],
        );
        assert_eq!(got, [false, false, false, true]);
    }

    #[test]
    fn binary_rows_headed_0x00_are_rows() {
        let mut t = Turns::new(true, true);
        t.command(com::STMT_EXECUTE);
        let got = run(
            &mut t,
            &[
                vec![1],
                COLUMN.to_vec(),
                vec![0x00, 0x00, 1, 0, 0, 0, 0, 0, 0, 0],
                ok(0xFE, AUTOCOMMIT),
            ],
        );
        assert_eq!(got, [false, false, false, true]);
    }

    #[test]
    fn more_results_keep_the_server_s_turn() {
        let mut t = Turns::new(false, true);
        t.command(com::QUERY);
        let more = AUTOCOMMIT | MORE_RESULTS;
        let got = run(
            &mut t,
            &[
                ok(0x00, more),
                vec![1],
                COLUMN.to_vec(),
                eof(more),
                b"\x012".to_vec(),
                eof(more),
                ok(0x00, AUTOCOMMIT),
            ],
        );
        assert_eq!(got, [false, false, false, false, false, false, true]);
    }

    #[test]
    fn an_error_ends_the_answer_even_mid_rows() {
        let mut t = Turns::new(true, true);
        t.command(com::QUERY);
        let got = run(
            &mut t,
            &[
                vec![1],
                COLUMN.to_vec(),
                b"\x011".to_vec(),
                b"\xff\x15\x04#HY000boom".to_vec(),
            ],
        );
        assert_eq!(got, [false, false, false, true]);
    }

    #[test]
    fn a_transaction_is_never_closed() {
        let mut t = Turns::new(false, true);
        t.command(com::QUERY);
        assert_eq!(run(&mut t, &[ok(0x00, AUTOCOMMIT | IN_TRANS)]), [false]);
        t.command(com::PING);
        assert_eq!(run(&mut t, &[ok(0x00, AUTOCOMMIT | IN_TRANS)]), [false]);
        t.command(com::QUERY);
        assert_eq!(run(&mut t, &[ok(0x00, AUTOCOMMIT)]), [true]);
        t.command(com::QUERY);
        assert_eq!(run(&mut t, &[ok(0x00, IN_TRANS_READONLY)]), [false]);
        // An error leaves the transaction as it was.
        t.command(com::QUERY);
        assert_eq!(run(&mut t, &[b"\xff\x15\x04#HY000no".to_vec()]), [false]);
    }

    #[test]
    fn load_data_local_waits_for_the_ok_after_the_file() {
        let mut t = Turns::new(true, true);
        t.command(com::QUERY);
        let got = run(
            &mut t,
            &[b"\xfb/tmp/data.csv".to_vec(), ok(0x00, AUTOCOMMIT)],
        );
        assert_eq!(got, [false, true]);
    }

    #[test]
    fn a_prepare_ends_after_its_parameters_and_columns() {
        let prepare_ok = vec![0x00, 1, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
        let mut t = Turns::new(false, true);
        t.command(com::STMT_PREPARE);
        let got = run(
            &mut t,
            &[
                prepare_ok.clone(),
                COLUMN.to_vec(),
                COLUMN.to_vec(),
                eof(AUTOCOMMIT),
                COLUMN.to_vec(),
                eof(AUTOCOMMIT),
            ],
        );
        assert_eq!(got, [false, false, false, false, false, true]);
        let mut t = Turns::new(true, true);
        t.command(com::STMT_PREPARE);
        let got = run(
            &mut t,
            &[
                prepare_ok,
                COLUMN.to_vec(),
                COLUMN.to_vec(),
                COLUMN.to_vec(),
            ],
        );
        assert_eq!(got, [false, false, false, true]);
    }

    #[test]
    fn a_cursor_answers_with_definitions_only() {
        let mut t = Turns::new(false, true);
        t.command(com::STMT_EXECUTE);
        let got = run(
            &mut t,
            &[vec![1], COLUMN.to_vec(), eof(AUTOCOMMIT | CURSOR_EXISTS)],
        );
        assert_eq!(got, [false, false, true]);
        t.command(com::STMT_FETCH);
        assert_eq!(
            run(&mut t, &[vec![0x00, 0x00, 7], eof(AUTOCOMMIT)]),
            [false, true]
        );
    }

    #[test]
    fn unknown_commands_are_never_between_until_the_next_known_one() {
        let mut t = Turns::new(true, true);
        t.command(0x12); // COM_BINLOG_DUMP
        assert_eq!(
            run(&mut t, &[ok(0x00, AUTOCOMMIT), ok(0x00, AUTOCOMMIT)]),
            [false, false]
        );
        t.command(com::PING);
        assert_eq!(run(&mut t, &[ok(0x00, AUTOCOMMIT)]), [true]);
        // Commands with no answer change nothing.
        t.command(com::STMT_CLOSE);
        assert!(t.closable());
    }

    #[test]
    fn a_compressed_session_is_never_closable() {
        let mut t = Turns::new(true, false);
        assert!(!t.closable());
        t.command(com::PING);
        assert_eq!(run(&mut t, &[ok(0x00, AUTOCOMMIT)]), [false]);
        t.changed_user();
        assert!(!t.closable());
    }

    #[test]
    fn change_user_starts_the_turns_again() {
        let mut t = Turns::new(true, true);
        t.command(com::QUERY);
        run(&mut t, &[ok(0x00, AUTOCOMMIT | IN_TRANS)]);
        t.command(0x11);
        assert!(!t.closable());
        t.changed_user();
        assert!(t.closable());
    }

    /// The same stream cut at every byte gives the same answer.
    #[test]
    fn the_walker_does_not_care_how_reads_split_the_stream() {
        let packets = [
            vec![2],
            COLUMN.to_vec(),
            COLUMN.to_vec(),
            eof(AUTOCOMMIT),
            vec![0xFE; 40], // a long row starting 0xFE (not an EOF: 9 bytes or more)
            vec![],         // an empty packet
            b"\x00\x00".to_vec(),
            eof(AUTOCOMMIT),
        ];
        let stream: Vec<u8> = packets
            .iter()
            .enumerate()
            .flat_map(|(i, p)| framed(i + 1, p))
            .collect();
        for cut in 0..stream.len() {
            for step in [1usize, 3, 7] {
                let mut t = Turns::new(false, true);
                t.command(com::QUERY);
                let mut w = Walker::default();
                w.feed(&stream[..cut], &mut t);
                let before = t.closable();
                for chunk in stream[cut..].chunks(step) {
                    w.feed(chunk, &mut t);
                }
                assert!(
                    !before || cut == stream.len(),
                    "closable early at cut {cut}"
                );
                assert!(t.closable(), "cut {cut}, step {step}");
            }
        }
    }

    /// A 16 MiB row continues in the next packet, which may start with any
    /// byte (here 0xFE, 5 bytes long, like an EOF): not a packet of its own.
    #[test]
    fn a_continuation_is_not_a_packet() {
        let mut t = Turns::new(false, true);
        t.command(com::QUERY);
        let mut w = Walker::default();
        let mut stream = framed(1, &[1]);
        stream.extend(framed(2, COLUMN));
        stream.extend(framed(3, &eof(AUTOCOMMIT)));
        let mut big = vec![0xFC, 0xFF, 0xFF];
        big.resize(MAX_CHUNK, b'a');
        stream.extend(framed(4, &big));
        stream.extend(framed(5, &eof(AUTOCOMMIT)));
        w.feed(&stream, &mut t);
        assert!(!t.closable(), "the continuation ended the rows");
        w.feed(&framed(6, &eof(AUTOCOMMIT)), &mut t);
        assert!(t.closable());
    }

    #[test]
    fn length_encoded_integers() {
        assert_eq!(lenenc(&[0xFA]), Some((250, 1)));
        assert_eq!(lenenc(&[0xFC, 0x34, 0x12]), Some((0x1234, 3)));
        assert_eq!(lenenc(&[0xFD, 1, 2, 3]), Some((0x030201, 4)));
        assert_eq!(lenenc(&[0xFE, 1, 0, 0, 0, 0, 0, 0, 0]), Some((1, 9)));
        assert_eq!(lenenc(&[0xFE, 1]), None);
        assert_eq!(lenenc(&[0xFF]), None);
        assert_eq!(lenenc(&[]), None);
    }
}
