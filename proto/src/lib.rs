//! The wire format and crypto of WuKongIM client connections ("wkproto"), as the official
//! SDKs speak it on TCP :5100 and WebSocket :5200 (reference: `shared/wkproto/SPEC.md`).
//!
//! This crate owns:
//! - [`packet`]: typed packets and their bodies, for protocol versions 2 to 5;
//! - [`frame`]: the fixed header, the remaining-length varint, the 1 MiB limit, and a
//!   [`Decoder`] that cuts packets out of a byte stream that may hold partial or several frames;
//! - [`crypto`]: the X25519 handshake, the per-connection AES-128-CBC payload cipher and
//!   `msg_key`.
//!
//! It does no I/O: callers feed it bytes and write the bytes it returns. Every version-dependent
//! step takes the connection's negotiated [`ProtoVersion`] as an explicit parameter; no state is
//! global. Nothing a peer sends can make it panic: malformed input is a [`ProtoError`].
//!
//! It may depend on thiserror, base64, getrandom and small pure-Rust crypto crates (x25519-dalek,
//! aes, cbc, md-5) only; never on the node, an async runtime or a network stack.

pub mod crypto;
mod error;
pub mod frame;
pub mod packet;
mod types;
mod wire;

pub use crypto::{KeyPair, Session, random_salt};
pub use error::ProtoError;
pub use frame::{Decoder, MAX_REMAINING_LENGTH, decode_frame, encode_frame, encode_frame_into};
pub use packet::Packet;
pub use types::{ChannelType, DeviceFlag, Flags, PacketType, ProtoVersion, ReasonCode, Setting};

#[cfg(test)]
mod vectors;
