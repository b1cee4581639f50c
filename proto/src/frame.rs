//! Framing (SPEC §1): a fixed header byte (type in the high nibble, flags in the low one), the
//! remaining length as an MQTT-style varint of at most 4 bytes, then the body.
//!
//! Invariants:
//! - PING and PONG are single bytes with no remaining length, both ways.
//! - A body over [`MAX_REMAINING_LENGTH`] is refused from its length prefix alone, before any of
//!   it is buffered; the encoder refuses to produce one too.
//! - An unknown packet type is an error as soon as its header byte is seen.
//! - [`decode_frame`] returns `Ok(None)` while the buffer holds only part of a frame, and never
//!   reads past a frame: the count it returns is exactly that frame's bytes.

use crate::ProtoError;
use crate::packet::Packet;
use crate::types::{PacketType, ProtoVersion};

/// The largest body WuKongIM accepts (`MaxRemaingLength`, 1 MiB).
pub const MAX_REMAINING_LENGTH: usize = 1024 * 1024;

/// The remaining-length varint has at most this many bytes.
const MAX_LENGTH_BYTES: usize = 4;

/// Decodes the first packet in `buf`, which may hold part of a frame or several frames.
///
/// Returns `Ok(None)` until a whole frame is there, else the packet and how many bytes of `buf`
/// it used. `v` is the connection's negotiated version; CONNECT decodes the same at every
/// version, so before the handshake any version will do. An error means the stream is out of
/// step: close the connection.
pub fn decode_frame(buf: &[u8], v: ProtoVersion) -> Result<Option<(Packet, usize)>, ProtoError> {
    let Some((&header, rest)) = buf.split_first() else {
        return Ok(None);
    };
    let ptype = PacketType::from_header(header)?;
    match ptype {
        PacketType::Ping => return Ok(Some((Packet::Ping, 1))),
        PacketType::Pong => return Ok(Some((Packet::Pong, 1))),
        _ => {}
    }
    let Some((len, len_bytes)) = remaining_length(rest)? else {
        return Ok(None);
    };
    if len > MAX_REMAINING_LENGTH {
        return Err(ProtoError::TooLarge {
            len,
            max: MAX_REMAINING_LENGTH,
        });
    }
    let Some(body) = rest.get(len_bytes..len_bytes + len) else {
        return Ok(None);
    };
    let packet = Packet::decode_body(ptype, header & 0x0f, body, v)?;
    Ok(Some((packet, 1 + len_bytes + len)))
}

/// Reads the varint at the start of `bytes`: `Ok(Some((value, bytes used)))`, or `Ok(None)` if
/// it continues past the end of `bytes`.
fn remaining_length(bytes: &[u8]) -> Result<Option<(usize, usize)>, ProtoError> {
    let mut value = 0usize;
    for (i, &byte) in bytes.iter().take(MAX_LENGTH_BYTES).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= MAX_LENGTH_BYTES {
        Err(ProtoError::BadRemainingLength)
    } else {
        Ok(None)
    }
}

/// Encodes `packet` as one frame for a connection of version `v`.
pub fn encode_frame(packet: &Packet, v: ProtoVersion) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::new();
    encode_frame_into(packet, v, &mut out)?;
    Ok(out)
}

/// Appends one frame of `packet` to `out`; on error `out` is left as it was.
pub fn encode_frame_into(packet: &Packet, v: ProtoVersion, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    let ptype = packet.packet_type() as u8;
    if matches!(packet, Packet::Ping | Packet::Pong) {
        out.push(ptype << 4);
        return Ok(());
    }
    let mut body = Vec::new();
    let nibble = packet.encode_body(v, &mut body)?;
    if body.len() > MAX_REMAINING_LENGTH {
        return Err(ProtoError::TooLarge {
            len: body.len(),
            max: MAX_REMAINING_LENGTH,
        });
    }
    out.push((ptype << 4) | (nibble & 0x0f));
    let mut len = body.len();
    loop {
        // The mask makes the cast lossless.
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
    Ok(())
}

/// Cuts packets out of a byte stream (TCP, or the concatenated WebSocket messages of one
/// connection): feed it bytes as they arrive with [`Decoder::extend`], take packets with
/// [`Decoder::next_packet`] until it returns `Ok(None)`.
///
/// It keeps the bytes fed and not yet taken as packets; taking every packet after each `extend`
/// leaves at most one incomplete frame, at most [`MAX_REMAINING_LENGTH`] + 5 bytes (a larger
/// one fails from its length prefix). After an error the stream is out of step and the decoder
/// stays failed: close the connection.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes received; those before `start` are already decoded.
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    start: usize,
    /// The error that stopped decoding, returned again on every later call.
    failed: Option<ProtoError>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete packet, `Ok(None)` if more bytes are needed.
    pub fn next_packet(&mut self, v: ProtoVersion) -> Result<Option<Packet>, ProtoError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let pending = self.buf.get(self.start..).unwrap_or_default();
        match decode_frame(pending, v) {
            Ok(Some((packet, used))) => {
                self.start += used;
                Ok(Some(packet))
            }
            Ok(None) => Ok(None),
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    /// How many received bytes are not decoded yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
