//! MySQL packet framing and the few server packets the mock writes.
//!
//! Packet *contents* (handshake, handshake response, SSL request, error, auth switch,
//! column definitions) are `mysql_common` types. Hand-written here, because
//! `mysql_common` has no async reader and no serializer for them:
//! - the 4-byte frame header (3-byte length, sequence id) over a tokio stream;
//! - OK packets and text-protocol rows (a few length-encoded fields each).

use std::io;

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::BufMutExt;
use mysql_common::packets::{Column, ErrPacket, ServerError, SqlState};
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Payloads of 2^24 - 1 bytes continue in the next packet.
const MAX_CHUNK: usize = 0xFF_FFFF;

/// Reads one logical packet (joining continuation packets): (sequence id of the
/// last frame, payload). Refuses payloads over `limit` bytes.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R, limit: usize) -> io::Result<(u8, Vec<u8>)> {
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 4];
        r.read_exact(&mut header).await?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        if len > limit.saturating_sub(payload.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("packet larger than {limit} bytes"),
            ));
        }
        let start = payload.len();
        // Bounded by `limit` just above.
        payload.resize(start.saturating_add(len), 0);
        r.read_exact(&mut payload[start..]).await?;
        if len < MAX_CHUNK {
            return Ok((header[3], payload));
        }
    }
}

/// Frames `payload` starting at sequence id `seq` into `out`; returns the next id.
pub fn frame(mut seq: u8, payload: &[u8], out: &mut Vec<u8>) -> u8 {
    let mut chunks = payload.chunks(MAX_CHUNK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[0, 0, 0, seq]);
        return seq.wrapping_add(1);
    }
    while let Some(chunk) = chunks.next() {
        let len = (chunk.len() as u32).to_le_bytes();
        out.extend_from_slice(&[len[0], len[1], len[2], seq]);
        out.extend_from_slice(chunk);
        seq = seq.wrapping_add(1);
        if chunk.len() == MAX_CHUNK && chunks.peek().is_none() {
            out.extend_from_slice(&[0, 0, 0, seq]);
            seq = seq.wrapping_add(1);
        }
    }
    seq
}

/// Writes one packet and flushes; returns the next sequence id.
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, seq: u8, payload: &[u8]) -> io::Result<u8> {
    let mut out = Vec::with_capacity(payload.len().saturating_add(4));
    let next = frame(seq, payload, &mut out);
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(next)
}

/// Serializes a `mysql_common` packet.
pub fn encode<T: MySerialize>(packet: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    packet.serialize(&mut buf);
    buf
}

/// An error packet (protocol 4.1 form, with SQL state).
pub fn err(code: u16, state: &[u8; 5], message: &str) -> Vec<u8> {
    encode(&ErrPacket::Error(ServerError::new(
        code,
        Some(SqlState::new(*state)),
        message.as_bytes(),
    )))
}

/// An OK packet; `header` is 0x00, or 0xFE when it ends a result set under
/// `CLIENT_DEPRECATE_EOF`.
pub fn ok(header: u8, affected_rows: u64, status: StatusFlags) -> Vec<u8> {
    let mut buf = vec![header];
    buf.put_lenenc_int(affected_rows);
    buf.put_lenenc_int(0); // last insert id
    buf.extend_from_slice(&status.bits().to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes()); // warnings
    buf
}

/// The old EOF packet (clients without `CLIENT_DEPRECATE_EOF`).
pub fn eof(status: StatusFlags) -> Vec<u8> {
    let mut buf = vec![0xFE, 0, 0];
    buf.extend_from_slice(&status.bits().to_le_bytes());
    buf
}

/// A text-protocol result set, framed into one buffer from sequence id 1.
pub struct ResultSet {
    out: Vec<u8>,
    seq: u8,
    deprecate_eof: bool,
    status: StatusFlags,
}

impl ResultSet {
    /// Column count, column definitions, and (without `CLIENT_DEPRECATE_EOF`) an EOF.
    pub fn new(columns: &[Column], capabilities: CapabilityFlags, status: StatusFlags) -> Self {
        let deprecate_eof = capabilities.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        let mut rs = Self {
            out: Vec::new(),
            seq: 1,
            deprecate_eof,
            status,
        };
        let mut count = Vec::new();
        count.put_lenenc_int(columns.len() as u64);
        rs.push(&count);
        for c in columns {
            rs.push(&encode(c));
        }
        if !deprecate_eof {
            rs.push(&eof(status));
        }
        rs
    }

    /// One row of text values (`None` is SQL NULL).
    pub fn row(&mut self, values: &[Option<&[u8]>]) {
        let mut buf = Vec::new();
        for v in values {
            match v {
                Some(v) => buf.put_lenenc_str(v),
                None => buf.push(0xFB),
            }
        }
        self.push(&buf);
    }

    /// Bytes framed and not yet taken.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    /// Nothing framed since the last take.
    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Bytes framed so far (to flush large results in pieces).
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The terminator; returns everything not yet taken.
    pub fn finish(mut self) -> Vec<u8> {
        let end = if self.deprecate_eof {
            ok(0xFE, 0, self.status)
        } else {
            eof(self.status)
        };
        self.push(&end);
        self.out
    }

    fn push(&mut self, payload: &[u8]) {
        self.seq = frame(self.seq, payload, &mut self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_including_continuations() {
        for size in [0usize, 1, 100, MAX_CHUNK, MAX_CHUNK + 5] {
            let payload = vec![7u8; size];
            let mut out = Vec::new();
            let next = frame(3, &payload, &mut out);
            let frames = size / MAX_CHUNK + 1;
            assert_eq!(next, 3 + frames as u8, "size {size}");
            let (seq, back) = read(&mut out.as_slice(), 1 << 26).await.unwrap();
            assert_eq!(seq, 3 + frames as u8 - 1);
            assert_eq!(back.len(), size);
        }
    }

    #[tokio::test]
    async fn refuses_oversized_packets() {
        let mut out = Vec::new();
        frame(0, &[1u8; 100], &mut out);
        assert!(read(&mut out.as_slice(), 10).await.is_err());
    }
}
