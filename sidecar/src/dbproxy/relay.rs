//! After the login: bytes relayed both ways, except `COM_CHANGE_USER` and a
//! `KILL` that names a session by the proxy's connection id.
//!
//! The client's bytes are relayed as they come, but the relay knows where each
//! packet starts (plain: 4-byte frames; compressed: 7-byte frames, inflated to
//! find the packets inside), so it sees every command's first byte. A
//! `COM_CHANGE_USER` carries the client's credential (a scramble, or a clear
//! password after an auth switch): it is never forwarded. The proxy answers it
//! itself: it sends its own `COM_CHANGE_USER` upstream as the proxy's user with
//! the *current* JWT (the auth switch to `mysql_clear_password` that follows
//! is answered with it), keeping the client's database, character set and
//! attributes, and passes the server's OK or error back. So a pool that resets
//! its connections with a change of user keeps working, gets a fresh JWT on
//! the upstream session, and never leaks what it sent. A `COM_CHANGE_USER`
//! the relay cannot take apart cleanly (it shares a compressed frame with
//! other packets) ends the session with an error instead. `COM_RESET_CONNECTION`
//! carries nothing secret and is relayed as any other command.
//!
//! A `COM_QUERY` whose first keyword is `KILL`, and `COM_PROCESS_KILL`, are
//! read whole and may go upstream with another id: clients know a session by
//! the id in the proxy's greeting, the server by its own ([`super::kill`]
//! says which becomes which, and why). Every other query is passed on as soon
//! as its first keyword is seen, so only a `KILL` waits for its last byte.
//!
//! The server's bytes are relayed untouched, except the reply to the proxy's
//! own `COM_CHANGE_USER`, which the downstream half reads packet by packet.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use mysql_common::constants::CapabilityFlags;

use super::kill;
use super::lifetime::{self, Turns, Walker};
use super::login::{self, codes, LoginReply};
use super::packet::{self, MAX_CHUNK};
use super::Shared;
use s2iam::secret::Secret;

/// `COM_CHANGE_USER`.
pub const COM_CHANGE_USER: u8 = 0x11;
/// `COM_QUIT`: the proxy's own, upstream, when it closes a session for age.
const COM_QUIT: u8 = 0x01;
/// A `COM_CHANGE_USER` is small (user, 1-byte-long auth data, database,
/// attributes); one larger than this is refused.
const CHANGE_USER_LIMIT: usize = 64 * 1024;
/// Plain frame header: 3-byte length, sequence id.
const HEADER: usize = 4;
/// Compressed frame header: 3-byte length, sequence id, 3-byte inflated length.
const COMPRESSED_HEADER: usize = 7;

/// Where the client's packet stream is: how much of the current frame is
/// left, and whether the next frame continues the same packet.
#[derive(Debug, Default)]
struct Packets {
    left: usize,
    continues: bool,
    /// `CLIENT_QUERY_ATTRIBUTES` was agreed: a `COM_QUERY`'s text comes after
    /// the attribute counts.
    query_attributes: bool,
    /// Keep the first byte of each command in `commands` (for
    /// `max_session_lifetime`, see [`lifetime`]).
    track: bool,
    /// Commands begun since the caller last took them.
    commands: Vec<u8>,
}

/// What the front of the client's bytes holds.
#[derive(Debug, PartialEq, Eq)]
enum Front {
    /// This many bytes belong to packets that pass as they came (0: more
    /// bytes are needed to tell).
    Pass(usize),
    /// A `COM_CHANGE_USER` frame starts at the front, with a payload this long.
    ChangeUser(usize),
    /// A whole command that may be a `KILL` (`COM_QUERY` or
    /// `COM_PROCESS_KILL`, see [`kill`]) is at the front, with a payload this long.
    Inspect(usize),
}

impl Packets {
    /// Reads the front of `data` (bytes not yet passed) and moves past what
    /// passes; `more`: whether more bytes may come before the relay must decide
    /// (plain frames), or `data` is all there is (the inside of a compressed frame).
    fn front(&mut self, data: &[u8], more: bool) -> Front {
        let mut at = 0usize;
        loop {
            if self.left > 0 {
                let k = self.left.min(data.len().saturating_sub(at));
                self.left = self.left.saturating_sub(k);
                at = at.saturating_add(k);
                if self.left > 0 {
                    return Front::Pass(at);
                }
            }
            let Some(h) = data.get(at..at.saturating_add(HEADER)) else {
                return Front::Pass(at);
            };
            let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
            if h[3] == 0 && !self.continues && len > 0 {
                let start = at.saturating_add(HEADER);
                match data.get(start) {
                    None => return Front::Pass(at),
                    Some(&COM_CHANGE_USER) if at == 0 => return Front::ChangeUser(len),
                    Some(&COM_CHANGE_USER) => return Front::Pass(at),
                    Some(&command) if len <= kill::INSPECT_LIMIT => {
                        let end = start.saturating_add(len).min(data.len());
                        let payload = data.get(start..end).unwrap_or_default();
                        let whole = payload.len() == len;
                        match self.inspect(command, payload, whole) {
                            Some(true) if whole && at == 0 => {
                                self.began(command);
                                return Front::Inspect(len);
                            }
                            Some(true) if whole || more => return Front::Pass(at),
                            None if more => return Front::Pass(at),
                            // Not a KILL, or a KILL cut by the end of a
                            // compressed frame (never seen): passed as it came.
                            _ => {}
                        }
                    }
                    Some(_) => {}
                }
                if let Some(&command) = data.get(start) {
                    self.began(command);
                }
            }
            self.continues = len == MAX_CHUNK;
            self.left = len;
            at = at.saturating_add(HEADER);
        }
    }

    /// A command begins (it is about to pass).
    fn began(&mut self, command: u8) {
        if self.track {
            self.commands.push(command);
        }
    }

    /// Whether a command (its `payload` so far, all of it when `whole`) must
    /// be read whole as a possible `KILL`; `None`: more bytes are needed to tell.
    fn inspect(&self, command: u8, payload: &[u8], whole: bool) -> Option<bool> {
        match command {
            kill::COM_PROCESS_KILL => Some(true),
            kill::COM_QUERY => {
                if self.query_attributes && payload.len() < 3 && !whole {
                    return None;
                }
                let Some(start) = kill::query_text_start(payload, self.query_attributes) else {
                    return Some(false);
                };
                let text = payload.get(start..).unwrap_or_default();
                Some(kill::looks(text, whole) == kill::Looks::MaybeKill)
            }
            _ => Some(false),
        }
    }
}

/// The parts of a client's `COM_CHANGE_USER` the proxy keeps (its credential is
/// dropped at parse time).
#[derive(Debug, PartialEq, Eq)]
pub struct ChangeUser {
    /// The user the client asked for (checked against `allowed_users`).
    pub user: Vec<u8>,
    database: Vec<u8>,
    /// Character set, auth plugin name and attributes, as the client sent them.
    charset: Option<u16>,
    attributes: Option<Vec<u8>>,
}

impl ChangeUser {
    /// Takes a client's `COM_CHANGE_USER` apart: `0x11`, user (NUL-ended), auth
    /// data (1-byte length), database (NUL-ended), then optionally character
    /// set (2 bytes), plugin name (NUL-ended, with `CLIENT_PLUGIN_AUTH`) and
    /// attributes (length-encoded, with `CLIENT_CONNECT_ATTRS`). Written here
    /// because `mysql_common`'s `ComChangeUser` has no getters and always
    /// writes attributes, whether or not they were agreed on.
    pub fn parse(payload: &[u8], plugin_auth: bool) -> Option<Self> {
        let rest = payload.strip_prefix(&[COM_CHANGE_USER])?;
        let (user, rest) = nul_string(rest)?;
        let (&auth_len, rest) = rest.split_first()?;
        let rest = rest.get(auth_len as usize..)?;
        let (database, rest) = nul_string(rest)?;
        let mut change = Self {
            user: user.to_vec(),
            database: database.to_vec(),
            charset: None,
            attributes: None,
        };
        let Some(cs) = rest.get(..2) else {
            return Some(change);
        };
        change.charset = Some(u16::from_le_bytes([cs[0], cs[1]]));
        let mut rest = &rest[2..];
        if plugin_auth {
            rest = nul_string(rest).map(|(_, r)| r).unwrap_or_default();
        }
        if !rest.is_empty() {
            change.attributes = Some(rest.to_vec());
        }
        Some(change)
    }

    /// The proxy's own `COM_CHANGE_USER`: `user`, no auth data, and the plugin
    /// named `mysql_native_password`, so the server answers with an auth switch
    /// to `mysql_clear_password`, and the JWT goes in the switch response (the
    /// auth data here has a 1-byte length, too short for a JWT).
    pub fn upstream(&self, user: &str, plugin_auth: bool, attributes: bool) -> Vec<u8> {
        let mut out = vec![COM_CHANGE_USER];
        out.extend_from_slice(user.as_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.database);
        out.push(0);
        let charset = self.charset.unwrap_or(45);
        out.extend_from_slice(&charset.to_le_bytes());
        if plugin_auth {
            out.extend_from_slice(b"mysql_native_password\0");
        }
        if attributes {
            match &self.attributes {
                Some(a) => out.extend_from_slice(a),
                None => out.push(0),
            }
        }
        out
    }
}

fn nul_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|c| *c == 0)?;
    Some((&b[..end], &b[end.saturating_add(1)..]))
}

/// A compressed frame: (sequence id, inflated payload), or why not.
fn inflate(frame: &[u8]) -> Result<(u8, Vec<u8>), String> {
    let h = frame
        .get(..COMPRESSED_HEADER)
        .ok_or("a short compressed frame")?;
    let inflated = u32::from_le_bytes([h[4], h[5], h[6], 0]) as usize;
    let body = &frame[COMPRESSED_HEADER..];
    if inflated == 0 {
        return Ok((h[3], body.to_vec()));
    }
    let mut out = Vec::with_capacity(inflated);
    flate2::read::ZlibDecoder::new(body)
        .take(inflated as u64)
        .read_to_end(&mut out)
        .map_err(|e| format!("a compressed frame does not inflate: {e}"))?;
    if out.len() != inflated {
        return Err("a compressed frame inflates to another length than announced".into());
    }
    Ok((h[3], out))
}

/// Length of the complete frame at the front of `data`, if it is all there.
fn whole_frame(data: &[u8], compressed: bool) -> Option<usize> {
    let header = if compressed {
        COMPRESSED_HEADER
    } else {
        HEADER
    };
    let h = data.get(..header)?;
    let len = (u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize).saturating_add(header);
    (data.len() >= len).then_some(len)
}

/// `payload` as one frame (compressed frames are sent uncompressed: an
/// inflated length of 0). Only for the proxy's own small packets.
fn frame(seq: u8, compressed_seq: Option<u8>, payload: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(payload.len().saturating_add(HEADER));
    let len = (payload.len() as u32).to_le_bytes();
    inner.extend_from_slice(&[len[0], len[1], len[2], seq]);
    inner.extend_from_slice(payload);
    match compressed_seq {
        Some(cseq) => compressed_frame(cseq, &inner),
        None => inner,
    }
}

/// `inner` (whole packets, under 16 MiB) as one compressed frame sent
/// uncompressed (an inflated length of 0).
fn compressed_frame(cseq: u8, inner: &[u8]) -> Vec<u8> {
    let clen = (inner.len() as u32).to_le_bytes();
    let mut out = Vec::with_capacity(inner.len().saturating_add(COMPRESSED_HEADER));
    out.extend_from_slice(&[clen[0], clen[1], clen[2], cseq, 0, 0, 0]);
    out.extend_from_slice(inner);
    out
}

/// A client's `COM_QUERY` or `COM_PROCESS_KILL` that may be a `KILL` (a whole
/// packet, header first): the packet to send in its place, or `None` to send
/// it as it came. The table of what becomes what is in [`kill`].
fn kill_rewrite<CW, UW>(state: &State<'_, CW, UW>, packet: &[u8]) -> Option<Vec<u8>> {
    let seq = *packet.get(3)?;
    let payload = packet.get(HEADER..)?;
    let shared = state.shared;
    let instead = match kill::rewrite(payload, &shared.ids, state.query_attributes) {
        kill::Rewrite::Keep => return None,
        kill::Rewrite::Translate {
            proxy_id,
            thread,
            payload,
        } => {
            tracing::debug!(proxy = %shared.config.name, proxy_id, thread, "KILL of a proxy connection id sent with the server's thread id");
            payload
        }
        kill::Rewrite::Refuse { id, why, payload } => {
            // A client can send these at will: at a bounded rate (the id is a number).
            s2iam::refusal!(shared.log, proxy = %shared.config.name, id = ?id, why, "database proxy: KILL sent as KILL of thread 0");
            payload
        }
    };
    Some(frame(seq, None, &instead))
}

/// The proxy's own `COM_CHANGE_USER`, handed from the upstream half (which
/// sent it) to the downstream half (which reads the server's reply).
struct Pending {
    jwt: Secret,
    done: oneshot::Sender<()>,
}

/// What both halves share: the two writers (each half writes to one, and
/// both may write to either while a `COM_CHANGE_USER` is answered).
struct State<'a, CW, UW> {
    shared: &'a Shared,
    compressed: bool,
    query_attributes: bool,
    plugin_auth: bool,
    attributes: bool,
    client: tokio::sync::Mutex<CW>,
    upstream: tokio::sync::Mutex<UW>,
    pending: Mutex<Option<Pending>>,
    /// Where the conversation is, when `max_session_lifetime` is set.
    turns: Option<Mutex<Turns>>,
    last: AtomicU64,
    epoch: Instant,
}

impl<CW, UW> State<'_, CW, UW>
where
    CW: AsyncWrite + Unpin,
    UW: AsyncWrite + Unpin,
{
    /// Applies `f` to the turns, when they are followed.
    fn turns(&self, f: impl FnOnce(&mut Turns)) {
        if let Some(t) = &self.turns {
            f(&mut t.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    async fn to_server(&self, bytes: &[u8]) -> Result<(), Stop> {
        let mut uw = self.upstream.lock().await;
        if uw.write_all(bytes).await.is_err() || uw.flush().await.is_err() {
            return Err(Stop::Closed);
        }
        Ok(())
    }

    async fn to_client(&self, bytes: &[u8]) -> Result<(), Stop> {
        let mut cw = self.client.lock().await;
        if cw.write_all(bytes).await.is_err() || cw.flush().await.is_err() {
            return Err(Stop::Closed);
        }
        Ok(())
    }
}

/// Why a half stopped.
#[derive(Debug)]
enum Stop {
    /// A side closed (or a write failed): the normal end.
    Closed,
    /// The relay ended the session (the client was told why, when it could be).
    Refused(String),
}

/// Relays until either side closes, the idle timeout passes, or the drain
/// deadline cuts it. `caps` are the capabilities agreed with the server.
pub async fn relay<C, U>(shared: &Shared, client: C, upstream: U, caps: CapabilityFlags)
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    U: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = tokio::io::split(upstream);
    let compressed = caps.contains(CapabilityFlags::CLIENT_COMPRESS);
    let turns = shared.config.max_session_lifetime.map(|_| {
        let deprecate_eof = caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        Mutex::new(Turns::new(deprecate_eof, !compressed))
    });
    let state = State {
        shared,
        compressed,
        query_attributes: caps.contains(CapabilityFlags::CLIENT_QUERY_ATTRIBUTES),
        plugin_auth: caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH),
        attributes: caps.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS),
        client: tokio::sync::Mutex::new(cw),
        upstream: tokio::sync::Mutex::new(uw),
        pending: Mutex::new(None),
        turns,
        last: AtomicU64::new(0),
        epoch: Instant::now(),
    };
    let up = async {
        let end = to_upstream(&state, cr).await;
        let _ = state.upstream.lock().await.shutdown().await;
        match end {
            Stop::Refused(why) => Err(why),
            Stop::Closed => Ok(()),
        }
    };
    let down = async {
        let end = to_client(&state, ur).await;
        let _ = state.client.lock().await.shutdown().await;
        match end {
            Stop::Refused(why) => Err(why),
            Stop::Closed => Ok(()),
        }
    };
    let both = async {
        if let Err(why) = tokio::try_join!(up, down) {
            tracing::warn!(proxy = %shared.config.name, error = %why, "database proxy session closed");
        }
    };
    let idle = async {
        match shared.config.idle_timeout {
            Some(idle) => idle_watch(&state.last, state.epoch, idle).await,
            None => std::future::pending().await,
        }
    };
    let age = async {
        match shared.config.max_session_lifetime {
            Some(max) => lifetime_watch(&state, max).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = both => {}
        _ = idle => {
            shared.counters.closed_idle.fetch_add(1, Ordering::Relaxed);
            tracing::info!(proxy = %shared.config.name, "database proxy session closed after idle_timeout");
        }
        _ = age => {
            shared.counters.closed_age.fetch_add(1, Ordering::Relaxed);
            tracing::info!(proxy = %shared.config.name, "database proxy session closed between commands: older than max_session_lifetime");
        }
    }
}

/// Returns once the session is older than `max`, between commands, outside a
/// transaction and silent both ways for [`lifetime::QUIET`]; then sends
/// `COM_QUIT` upstream (so the server ends the session cleanly, as if the
/// client had quit) unless a byte moved meanwhile.
async fn lifetime_watch<CW, UW>(state: &State<'_, CW, UW>, max: Duration)
where
    CW: AsyncWrite + Unpin,
    UW: AsyncWrite + Unpin,
{
    tokio::time::sleep(max.saturating_sub(state.epoch.elapsed())).await;
    loop {
        let last = state.last.load(Ordering::Relaxed);
        let quiet = state
            .epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(last));
        let mut closable = false;
        state.turns(|t| closable = t.closable());
        if closable && quiet >= lifetime::QUIET {
            if let Ok(mut uw) = state.upstream.try_lock() {
                if state.last.load(Ordering::Relaxed) == last {
                    let _ = uw.write_all(&frame(0, None, &[COM_QUIT])).await;
                    let _ = uw.flush().await;
                }
            }
            return;
        }
        let wait = if closable {
            lifetime::QUIET.saturating_sub(quiet)
        } else {
            lifetime::QUIET
        };
        tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
    }
}

/// Client → server, until the client closes or the relay stops the session.
async fn to_upstream<R, CW, UW>(state: &State<'_, CW, UW>, mut cr: R) -> Stop
where
    R: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UW: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut held: Vec<u8> = Vec::new();
    let mut packets = Packets {
        query_attributes: state.query_attributes,
        track: state.turns.is_some() && !state.compressed,
        ..Packets::default()
    };
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => return Stop::Closed,
            Ok(n) => n,
        };
        state.touch();
        if !held.is_empty() {
            held.extend_from_slice(&buf[..n]);
        }
        let data: &[u8] = if held.is_empty() { &buf[..n] } else { &held };
        let used = if state.compressed {
            compressed_frames(state, &mut packets, data).await
        } else {
            plain_frames(state, &mut packets, data).await
        };
        match used {
            Ok(used) => {
                let rest = data.get(used..).unwrap_or_default().to_vec();
                held = rest;
            }
            Err(stop) => return stop,
        }
    }
}

/// Forwards the decided bytes of `data` and answers a whole `COM_CHANGE_USER`;
/// returns how many bytes were used (the rest waits for more).
async fn plain_frames<CW, UW>(
    state: &State<'_, CW, UW>,
    packets: &mut Packets,
    data: &[u8],
) -> Result<usize, Stop>
where
    CW: AsyncWrite + Unpin,
    UW: AsyncWrite + Unpin,
{
    let mut used = 0usize;
    loop {
        let rest = data.get(used..).unwrap_or_default();
        let front = packets.front(rest, true);
        // Before the command passes: the server's answer cannot come first.
        if !packets.commands.is_empty() {
            state.turns(|t| packets.commands.drain(..).for_each(|c| t.command(c)));
        }
        match front {
            Front::Pass(0) => return Ok(used),
            Front::Pass(k) => {
                forward(state, &rest[..k]).await?;
                used = used.saturating_add(k);
            }
            Front::Inspect(len) => {
                let Some(packet) = rest.get(..HEADER.saturating_add(len)) else {
                    return Ok(used);
                };
                match kill_rewrite(state, packet) {
                    Some(instead) => forward(state, &instead).await?,
                    None => forward(state, packet).await?,
                }
                used = used.saturating_add(packet.len());
            }
            Front::ChangeUser(len) => {
                if len >= CHANGE_USER_LIMIT {
                    return Err(refuse_change_user(state, "it is too large").await);
                }
                let Some(payload) = rest.get(HEADER..HEADER.saturating_add(len)) else {
                    return Ok(used);
                };
                change_user(state, payload, false).await?;
                used = used.saturating_add(HEADER).saturating_add(len);
            }
        }
    }
}

/// The same for compressed frames: each whole frame is inflated and its
/// packets read; a frame holding exactly one `COM_CHANGE_USER` (as clients send
/// it) is answered, a `COM_CHANGE_USER` sharing a frame with anything else
/// ends the session; any other frame is forwarded as it came.
async fn compressed_frames<CW, UW>(
    state: &State<'_, CW, UW>,
    packets: &mut Packets,
    data: &[u8],
) -> Result<usize, Stop>
where
    CW: AsyncWrite + Unpin,
    UW: AsyncWrite + Unpin,
{
    let mut used = 0usize;
    while let Some(len) = whole_frame(data.get(used..).unwrap_or_default(), true) {
        let raw = &data[used..used.saturating_add(len)];
        let (cseq, inner) = inflate(raw).map_err(Stop::Refused)?;
        let mut at = 0usize;
        let mut answer = false;
        // Packets rewritten (a KILL of a proxy id): where, and what instead.
        let mut instead: Vec<(std::ops::Range<usize>, Vec<u8>)> = Vec::new();
        loop {
            match packets.front(inner.get(at..).unwrap_or_default(), false) {
                Front::Pass(0) => break,
                Front::Pass(k) => at = at.saturating_add(k),
                Front::Inspect(plen) => {
                    let end = at.saturating_add(HEADER).saturating_add(plen);
                    if let Some(new) = inner.get(at..end).and_then(|p| kill_rewrite(state, p)) {
                        instead.push((at..end, new));
                    }
                    at = end;
                }
                Front::ChangeUser(plen) => {
                    if cseq != 0 || at != 0 || inner.len() != HEADER.saturating_add(plen) {
                        return Err(refuse_change_user(
                            state,
                            "it shares a compressed frame with other packets",
                        )
                        .await);
                    }
                    answer = true;
                    break;
                }
            }
        }
        if answer {
            change_user(state, &inner[HEADER..], true).await?;
        } else if !instead.is_empty() && at == inner.len() {
            let mut rewritten = Vec::with_capacity(inner.len().saturating_add(16));
            let mut from = 0usize;
            for (range, new) in &instead {
                rewritten.extend_from_slice(inner.get(from..range.start).unwrap_or_default());
                rewritten.extend_from_slice(new);
                from = range.end;
            }
            rewritten.extend_from_slice(inner.get(from..).unwrap_or_default());
            if rewritten.len() > MAX_CHUNK {
                return Err(Stop::Refused(
                    "a compressed frame holding a KILL grew past 16 MiB when rewritten".into(),
                ));
            }
            forward(state, &compressed_frame(cseq, &rewritten)).await?;
        } else if at != inner.len() {
            // A packet header split between compressed frames: allowed by the
            // protocol, never seen from a client; the relay could not tell
            // which command it starts, so it stops rather than guess.
            return Err(Stop::Refused(
                "a client packet header split between compressed frames".into(),
            ));
        } else {
            forward(state, raw).await?;
        }
        used = used.saturating_add(len);
    }
    Ok(used)
}

async fn forward<CW, UW>(state: &State<'_, CW, UW>, bytes: &[u8]) -> Result<(), Stop>
where
    CW: AsyncWrite + Unpin,
    UW: AsyncWrite + Unpin,
{
    state.to_server(bytes).await?;
    state
        .shared
        .counters
        .to_upstream
        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Answers a client's `COM_CHANGE_USER` (its payload): the proxy's own goes
/// upstream with the current JWT, and the downstream half passes the reply on.
async fn change_user<CW, UW>(
    state: &State<'_, CW, UW>,
    payload: &[u8],
    compressed: bool,
) -> Result<(), Stop>
where
    CW: AsyncWrite + Unpin,
    UW: AsyncWrite + Unpin,
{
    let config = &state.shared.config;
    let Some(change) = ChangeUser::parse(payload, state.plugin_auth) else {
        return Err(refuse_change_user(state, "it cannot be parsed").await);
    };
    let user = String::from_utf8_lossy(&change.user).into_owned();
    if !config.allowed_users.is_empty() && !config.allowed_users.contains(&user) {
        return Err(refuse_change_user(state, "that user is not in allowed_users").await);
    }
    let jwt = match tokio::time::timeout(config.connect_timeout, state.shared.tokens.jwt()).await {
        Ok(Ok(jwt)) => jwt,
        Ok(Err(why)) => {
            return Err(refuse_change_user(state, &format!("no database token: {why}")).await)
        }
        Err(_) => {
            return Err(refuse_change_user(state, "no database token within connect_timeout").await)
        }
    };
    // The reply is the proxy's to read; the turns start again after it.
    state.turns(|t| t.command(COM_CHANGE_USER));
    let own = change.upstream(&config.user, state.plugin_auth, state.attributes);
    let (done, answered) = oneshot::channel();
    *state.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(Pending { jwt, done });
    state
        .to_server(&frame(0, compressed.then_some(0), &own))
        .await?;
    tracing::debug!(proxy = %config.name, "COM_CHANGE_USER answered with the proxy's own login");
    // The downstream half reads the reply and passes it on; the client waits
    // for it, so nothing else comes from it meanwhile.
    answered.await.map_err(|_| Stop::Closed)?;
    state.turns(Turns::changed_user);
    Ok(())
}

/// Tells the client its `COM_CHANGE_USER` is refused, and why; the session ends.
async fn refuse_change_user<CW, UW>(state: &State<'_, CW, UW>, why: &str) -> Stop
where
    CW: AsyncWrite + Unpin,
    UW: AsyncWrite + Unpin,
{
    let message = format!("COM_CHANGE_USER refused: {why}; the session is closed");
    let err = packet::err(
        codes::ACCESS_DENIED,
        b"28000",
        &format!("s2iam proxy: {message}"),
    );
    // The client's command had sequence id 0 (compressed too); the reply is 1.
    let _ = state
        .to_client(&frame(1, state.compressed.then_some(1), &err))
        .await;
    Stop::Refused(message)
}

/// Server → client, until the server closes; the reply to the proxy's own
/// `COM_CHANGE_USER` is read packet by packet instead of relayed.
async fn to_client<R, CW, UW>(state: &State<'_, CW, UW>, mut ur: R) -> Stop
where
    R: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UW: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut reply: Option<Reply> = None;
    let mut walker = Walker::default();
    let follow = state.turns.is_some() && !state.compressed;
    loop {
        let n = match ur.read(&mut buf).await {
            Ok(0) | Err(_) => return Stop::Closed,
            Ok(n) => n,
        };
        state.touch();
        if reply.is_none() {
            reply = state
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .map(Reply::new);
        }
        let Some(r) = reply.as_mut() else {
            // Before the client sees the bytes: it answers only after that.
            if follow {
                state.turns(|t| walker.feed(&buf[..n], t));
            }
            if let Err(stop) = state.to_client(&buf[..n]).await {
                return stop;
            }
            state
                .shared
                .counters
                .to_client
                .fetch_add(n as u64, Ordering::Relaxed);
            continue;
        };
        r.raw.extend_from_slice(&buf[..n]);
        match r.step(state).await {
            Ok(false) => {}
            Ok(true) => {
                let rest = std::mem::take(&mut r.raw);
                if let Some(done) = reply.take().map(|r| r.pending.done) {
                    let _ = done.send(());
                }
                // The reply was read whole packets at a time: the next byte
                // starts a packet.
                walker = Walker::default();
                if follow {
                    state.turns(|t| walker.feed(&rest, t));
                }
                if !rest.is_empty() {
                    if let Err(stop) = state.to_client(&rest).await {
                        return stop;
                    }
                }
            }
            Err(stop) => return stop,
        }
    }
}

/// The server's reply to the proxy's own `COM_CHANGE_USER`, as it arrives.
struct Reply {
    pending: Pending,
    /// Bytes from the server not yet read as frames.
    raw: Vec<u8>,
    /// Inflated bytes not yet read as packets (compressed protocol).
    inner: Vec<u8>,
}

impl Reply {
    fn new(pending: Pending) -> Self {
        Self {
            pending,
            raw: Vec::new(),
            inner: Vec::new(),
        }
    }

    /// The next whole packet: (compressed sequence id, sequence id, payload).
    fn next_packet(&mut self, compressed: bool) -> Result<Option<(u8, u8, Vec<u8>)>, Stop> {
        if !compressed {
            let Some(len) = whole_frame(&self.raw, false) else {
                return Ok(None);
            };
            let frame: Vec<u8> = self.raw.drain(..len).collect();
            return Ok(Some((0, frame[3], frame[HEADER..].to_vec())));
        }
        loop {
            if let Some(len) = whole_frame(&self.inner, false) {
                let frame: Vec<u8> = self.inner.drain(..len).collect();
                return Ok(Some((0, frame[3], frame[HEADER..].to_vec())));
            }
            let Some(len) = whole_frame(&self.raw, true) else {
                return Ok(None);
            };
            let raw: Vec<u8> = self.raw.drain(..len).collect();
            let (_, inner) = inflate(&raw).map_err(Stop::Refused)?;
            self.inner.extend_from_slice(&inner);
        }
    }

    /// Reads what has come; true when the reply has been passed to the client.
    async fn step<CW, UW>(&mut self, state: &State<'_, CW, UW>) -> Result<bool, Stop>
    where
        CW: AsyncWrite + Unpin,
        UW: AsyncWrite + Unpin,
    {
        while let Some((_, seq, payload)) = self.next_packet(state.compressed)? {
            match login::login_reply(&payload) {
                Ok(LoginReply::SendPassword) => {
                    let mut password = self.pending.jwt.expose().as_bytes().to_vec();
                    password.push(0);
                    let next = seq.wrapping_add(1);
                    state
                        .to_server(&frame(next, state.compressed.then_some(next), &password))
                        .await?;
                }
                Ok(LoginReply::Ok | LoginReply::Refused) => {
                    state
                        .to_client(&frame(1, state.compressed.then_some(1), &payload))
                        .await?;
                    return Ok(true);
                }
                Err(f) => {
                    let _ = state
                        .to_client(&frame(1, state.compressed.then_some(1), &f.packet))
                        .await;
                    return Err(Stop::Refused(format!(
                        "the server's answer to COM_CHANGE_USER: {}",
                        f.message
                    )));
                }
            }
        }
        Ok(false)
    }
}

async fn idle_watch(last: &AtomicU64, epoch: Instant, idle: Duration) {
    loop {
        let since = epoch
            .elapsed()
            .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
        if since >= idle {
            return;
        }
        tokio::time::sleep(idle.saturating_sub(since)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(seq: u8, payload: &[u8]) -> Vec<u8> {
        frame(seq, None, payload)
    }

    #[test]
    fn finds_a_change_user_only_where_a_command_starts() {
        let mut p = Packets::default();
        let query = framed(0, b"\x03SELECT 1");
        assert_eq!(p.front(&query, true), Front::Pass(query.len()));
        let change = framed(0, b"\x11app\0\0\0");
        assert_eq!(p.front(&change, true), Front::ChangeUser(7));
        // After a query, in the same bytes: the query passes, then it stops there.
        let mut both = query.clone();
        both.extend_from_slice(&change);
        let mut p = Packets::default();
        assert_eq!(p.front(&both, true), Front::Pass(query.len()));
        assert_eq!(p.front(&both[query.len()..], true), Front::ChangeUser(7));
        // A 0x11 inside LOAD DATA content (sequence id > 0) is data, not a command.
        let mut p = Packets::default();
        let data = framed(2, b"\x11\x11\x11");
        assert_eq!(p.front(&data, true), Front::Pass(data.len()));
        // Undecided until the command byte is there.
        let mut p = Packets::default();
        assert_eq!(p.front(&change[..4], true), Front::Pass(0));
        assert_eq!(p.front(&change[..3], true), Front::Pass(0));
    }

    #[test]
    fn a_continued_packet_never_starts_a_command() {
        // A 16 MiB - 1 frame, then its continuation with sequence id 0 (after 256
        // frames it wraps) beginning with 0x11: data.
        let mut p = Packets::default();
        let mut big = vec![0xFF, 0xFF, 0xFF, 0, 0x03];
        big.resize(HEADER + MAX_CHUNK, b'x');
        assert_eq!(p.front(&big, true), Front::Pass(big.len()));
        let next = framed(0, b"\x11tail");
        assert_eq!(p.front(&next, true), Front::Pass(next.len()));
        assert_eq!(
            p.front(&framed(0, b"\x11a\0\0\0"), true),
            Front::ChangeUser(5)
        );
    }

    #[test]
    fn change_user_drops_the_credential_and_keeps_the_rest() {
        let mut payload = b"\x11someone\0".to_vec();
        payload.push(6);
        payload.extend_from_slice(b"SECRET");
        payload.extend_from_slice(b"analytics\0");
        payload.extend_from_slice(&33u16.to_le_bytes());
        payload.extend_from_slice(b"mysql_native_password\0");
        payload.extend_from_slice(b"\x05\x01a\x02bc");
        let c = ChangeUser::parse(&payload, true).unwrap();
        assert_eq!(c.user, b"someone");
        let up = c.upstream("proxy-user", true, true);
        assert!(
            !up.windows(6).any(|w| w == b"SECRET"),
            "the credential is gone"
        );
        let mut want = b"\x11proxy-user\0\0analytics\0".to_vec();
        want.extend_from_slice(&33u16.to_le_bytes());
        want.extend_from_slice(b"mysql_native_password\0\x05\x01a\x02bc");
        assert_eq!(up, want);
        // Old clients: no character set or plugin.
        let short = ChangeUser::parse(b"\x11u\0\x00db\0", false).unwrap();
        assert_eq!(short.upstream("p", false, false), b"\x11p\0\0db\0\x2d\x00");
        for bad in [&b""[..], b"\x03x", b"\x11u", b"\x11u\0\x09abc"] {
            assert!(ChangeUser::parse(bad, true).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn compressed_frames_inflate_and_are_checked() {
        use std::io::Write;
        let inner = framed(0, b"\x03SELECT 1");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&inner).unwrap();
        let body = z.finish().unwrap();
        let mut frame = (body.len() as u32).to_le_bytes()[..3].to_vec();
        frame.push(0);
        frame.extend_from_slice(&(inner.len() as u32).to_le_bytes()[..3]);
        frame.extend_from_slice(&body);
        assert_eq!(whole_frame(&frame, true), Some(frame.len()));
        assert_eq!(whole_frame(&frame[..frame.len() - 1], true), None);
        assert_eq!(inflate(&frame).unwrap(), (0, inner.clone()));
        let mut lying = frame.clone();
        lying[4] = lying[4].wrapping_add(1);
        assert!(inflate(&lying).is_err());
        // The proxy's own frames go uncompressed (inflated length 0).
        let own = super::frame(1, Some(1), b"\x00\x00\x00");
        assert_eq!(inflate(&own).unwrap(), (1, framed(1, b"\x00\x00\x00")));
    }

    #[test]
    fn a_kill_is_held_whole_and_every_other_query_passes_at_its_first_word() {
        let kill = framed(0, b"\x03KILL QUERY 1000000001");
        let mut p = Packets::default();
        assert_eq!(p.front(&kill, true), Front::Inspect(kill.len() - HEADER));
        // Cut anywhere: wait for the rest (plain frames).
        for cut in [5, 7, 9, kill.len() - 1] {
            let mut p = Packets::default();
            assert_eq!(p.front(&kill[..cut], true), Front::Pass(0), "cut at {cut}");
        }
        // A query passes as soon as its first word is not KILL, cut or not.
        let select = framed(0, b"\x03SELECT SLEEP(30)");
        let mut p = Packets::default();
        assert_eq!(p.front(&select[..12], true), Front::Pass(12));
        assert_eq!(p.front(&select[12..], true), Front::Pass(select.len() - 12));
        // Queries before a KILL go first; the KILL is then read on its own.
        let mut both = select.clone();
        both.extend_from_slice(&kill);
        let mut p = Packets::default();
        assert_eq!(p.front(&both, true), Front::Pass(select.len()));
        assert_eq!(
            p.front(&both[select.len()..], true),
            Front::Inspect(kill.len() - HEADER)
        );
        // COM_PROCESS_KILL, and KILL text as LOAD DATA content (sequence id > 0).
        let mut p = Packets::default();
        assert_eq!(
            p.front(&framed(0, b"\x0c\x01\0\0\0"), true),
            Front::Inspect(5)
        );
        let data = framed(2, b"\x03KILL 5");
        assert_eq!(p.front(&data, true), Front::Pass(data.len()));
        // Inside a compressed frame (all there is): a KILL cut by the frame's end passes.
        let mut p = Packets::default();
        assert_eq!(p.front(&kill[..9], false), Front::Pass(9));
        // A query longer than INSPECT_LIMIT is never held.
        let mut long = b"\x03KILL 5 /*".to_vec();
        long.resize(kill::INSPECT_LIMIT + 1, b' ');
        let long = framed(0, &long);
        let mut p = Packets::default();
        assert_eq!(p.front(&long[..100], true), Front::Pass(100));
    }
}
