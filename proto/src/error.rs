//! The one error type of this crate. Variants say what went wrong with the peer's bytes (or with
//! a packet the caller asked to encode), so the caller can choose: answer, drop, or close.

/// Why bytes could not be decoded, a packet could not be encoded, or a payload failed its crypto.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A complete frame's body ended before the named field. The peer is broken: close.
    #[error("packet truncated: body ends inside `{field}`")]
    Truncated { field: &'static str },
    /// The remaining length is over the limit. Decoding: decided from the length prefix alone,
    /// before the body is buffered; close the connection.
    #[error("packet body of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// The remaining-length varint did not end within its 4 bytes: close.
    #[error("remaining length does not end within 4 bytes")]
    BadRemainingLength,
    /// The high nibble of the fixed header is no packet type known to the negotiated version.
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    /// The packet type exists, but not at this protocol version (EVENT before v5). Never send it
    /// to such a client.
    #[error("packet type {packet_type} does not exist in protocol version {version}")]
    NotInVersion { packet_type: u8, version: u8 },
    /// A string is longer than the 32767 bytes every SDK decoder accepts.
    #[error("string `{field}` of {len} bytes is over the limit of {max}")]
    StringTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// A string field is not UTF-8.
    #[error("string `{field}` is not UTF-8")]
    BadUtf8 { field: &'static str },
    /// A SEND or RECV of a stream message (a stream bit in the setting, versions 2 to 4). Decoding
    /// SEND keeps its `stream_no` so the server can refuse it with a SENDACK; RECV with stream
    /// fields is neither encoded nor decoded, their layout differs by SDK generation.
    #[error("stream messages are not supported")]
    StreamNotSupported,
    /// The packet to encode contradicts itself (for example a CONNACK with `node_id` but no
    /// `server_version` of at least 4). A bug in the caller.
    #[error("inconsistent packet: {0}")]
    Inconsistent(&'static str),
    /// A payload or key is not standard padded base64: answer SENDACK PayloadDecodeError (9),
    /// or AuthFail (2) for the client key.
    #[error("not standard padded base64")]
    BadBase64,
    /// The ciphertext is empty or not a whole number of AES blocks.
    #[error("ciphertext of {len} bytes is not a whole number of 16-byte blocks")]
    BadCiphertextLength { len: usize },
    /// The decrypted payload does not end in valid PKCS#7 padding (wrong key or tampered).
    #[error("bad PKCS#7 padding")]
    BadPadding,
    /// The packet's `msg_key` does not match its contents under this connection's key: answer
    /// SENDACK PayloadDecodeError (9) (WuKongIM's v2 choice; MsgKeyError 8 is the alternative).
    #[error("msg_key does not match")]
    BadMsgKey,
    /// The peer's public key decodes to fewer than 32 bytes: answer CONNACK AuthFail (2).
    #[error("public key of {len} bytes, want 32")]
    BadKeyLength { len: usize },
    /// The salt (AES IV) is shorter than 16 bytes.
    #[error("salt of {len} bytes, want at least 16")]
    BadSalt { len: usize },
    /// The operating system gave no randomness for a key or salt: fail the handshake.
    #[error("no randomness from the operating system: {0}")]
    NoRandomness(String),
}
