//! MySQL packet framing for the handshake; after it the proxy relays raw bytes.
//!
//! Packet contents are `mysql_common` types. The 4-byte frame header (3-byte
//! length, sequence id) is read and written here by hand: `mysql_common`'s
//! `PacketCodec` keeps its own sequence counter and buffers, while the proxy has to
//! renumber packets between two connections whose counters differ, and reads
//! exactly one packet at a time so that nothing after the handshake is consumed.

use std::io;

use mysql_common::packets::{ErrPacket, ServerError, SqlState};
use mysql_common::proto::MySerialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Payloads of 2^24 - 1 bytes continue in the next packet.
pub const MAX_CHUNK: usize = 0xFF_FFFF;

/// Handshake packets are small; a JWT is a few kilobytes.
pub const HANDSHAKE_LIMIT: usize = 256 * 1024;

/// Reads one logical packet (joining continuations): (sequence id of its last
/// frame, payload). Payloads over `limit` bytes are an error.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R, limit: usize) -> io::Result<(u8, Vec<u8>)> {
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 4];
        r.read_exact(&mut header).await?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        if len > limit.saturating_sub(payload.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a handshake packet larger than {limit} bytes"),
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

/// Writes `payload` as one packet starting at `seq` and flushes; returns the next id.
pub async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut seq: u8,
    payload: &[u8],
) -> io::Result<u8> {
    let mut out = Vec::with_capacity(payload.len().saturating_add(8));
    let mut chunks = payload.chunks(MAX_CHUNK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[0, 0, 0, seq]);
        seq = seq.wrapping_add(1);
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
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(seq)
}

/// `payload` framed as one packet with sequence id `seq`, for the proxy's own
/// small packets (an error sent without waiting); cut below 16 MiB.
pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let body = payload
        .get(..MAX_CHUNK.saturating_sub(1))
        .unwrap_or(payload);
    let len = u32::try_from(body.len()).unwrap_or(0).to_le_bytes();
    let mut out = Vec::with_capacity(body.len().saturating_add(4));
    out.extend_from_slice(&[len[0], len[1], len[2], seq]);
    out.extend_from_slice(body);
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_small_and_continued_packets() {
        for size in [0usize, 5, MAX_CHUNK, MAX_CHUNK + 1] {
            let mut out = Vec::new();
            let next = write(&mut out, 7, &vec![1u8; size]).await.unwrap();
            let frames = size / MAX_CHUNK + 1;
            assert_eq!(next as usize, 7 + frames);
            let (seq, back) = read(&mut out.as_slice(), 1 << 25).await.unwrap();
            assert_eq!((seq as usize, back.len()), (7 + frames - 1, size));
        }
        let mut out = Vec::new();
        write(&mut out, 0, &[0u8; 64]).await.unwrap();
        assert!(read(&mut out.as_slice(), 10).await.is_err());
    }
}
