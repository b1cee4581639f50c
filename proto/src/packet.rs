//! Typed packets and their bodies (SPEC §2), for protocol versions 2 to 5.
//!
//! A body is everything after the fixed header and the remaining length; [`crate::frame`] adds
//! and strips those. Which fields a body holds depends on the connection's [`ProtoVersion`]:
//! - SEND and RECV carry `expire` iff v >= 3;
//! - SEND and RECV carry stream fields iff 2 <= v <= 4 and a stream bit is set. Streams are
//!   not supported: a decoded SEND keeps its `stream_no` so the server can refuse it with a
//!   SENDACK; encoding either packet with a stream, or decoding such a RECV, is
//!   [`ProtoError::StreamNotSupported`];
//! - EVENT exists only in v5;
//! - CONNECT and CONNACK describe their own shape (CONNACK: `server_version` iff header bit0,
//!   `node_id` iff `server_version >= 4`, the way every SDK reads it). [`ConnackPacket::new`]
//!   builds the shape a version needs.
//!
//! Topic strings are on the wire iff the setting's topic bit is set; the encoder sets or clears
//! that bit from `topic.is_some()`, so the two cannot disagree. Bytes after the last field of a
//! packet without payload are ignored, as WuKongIM's decoders do (its newest server appends
//! `client_msg_no` to SENDACK).

use crate::ProtoError;
use crate::types::{ChannelType, DeviceFlag, Flags, PacketType, ProtoVersion, ReasonCode, Setting};
use crate::wire::{Reader, put_i32, put_i64, put_string, put_u8, put_u32, put_u64};

/// One packet of the protocol, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(ConnectPacket),
    Connack(ConnackPacket),
    Send(SendPacket),
    Sendack(SendackPacket),
    Recv(RecvPacket),
    Recvack(RecvackPacket),
    /// Client heartbeat: one byte `0x70`, no remaining length. Answer with [`Packet::Pong`].
    Ping,
    /// Answer to PING: one byte `0x80`.
    Pong,
    Disconnect(DisconnectPacket),
    Sub(SubPacket),
    Suback(SubackPacket),
    Event(EventPacket),
}

/// CONNECT (1), client to server, the first packet of a connection. Same layout in every version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectPacket {
    /// The client's protocol version; the connection speaks [`ProtoVersion::negotiate`] of it.
    pub version: u8,
    /// What kind of device; with `uid` it selects the token and the kick rules.
    pub device_flag: DeviceFlag,
    /// The JS SDK makes a new one on every (re)connect.
    pub device_id: String,
    pub uid: String,
    pub token: String,
    /// The client's clock in ms; CONNACK's `time_diff` is measured against it.
    pub client_timestamp: i64,
    /// Standard padded base64 of the client's 32-byte X25519 public key.
    pub client_key: String,
}

/// CONNACK (2), server to client: the handshake answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnackPacket {
    /// Present iff header bit0 (HasServerVersion) is set, which the server does iff the
    /// negotiated version is >= 4; then it is that version. A v2 JS client reads the fields
    /// below at fixed offsets, so it must be absent for it.
    pub server_version: Option<u8>,
    /// Server clock minus `client_timestamp`, in ms (the SDKs ignore it).
    pub time_diff: i64,
    /// `Success` (1) or why the connection is refused.
    pub reason_code: ReasonCode,
    /// Standard padded base64 of the server's X25519 public key for this connection; empty on
    /// failure.
    pub server_key: String,
    /// The 16-character AES IV; empty on failure.
    pub salt: String,
    /// Present iff `server_version >= 4` (clients read it only then).
    pub node_id: Option<u64>,
}

impl ConnackPacket {
    /// A CONNACK of the shape version `v` needs: `server_version` and `node_id` iff v >= 4.
    pub fn new(
        v: ProtoVersion,
        time_diff: i64,
        reason_code: ReasonCode,
        server_key: String,
        salt: String,
        node_id: u64,
    ) -> Self {
        let modern = v >= ProtoVersion::V4;
        Self {
            server_version: modern.then_some(v.get()),
            time_diff,
            reason_code,
            server_key,
            salt,
            node_id: modern.then_some(node_id),
        }
    }

    fn has_node_id(server_version: Option<u8>) -> bool {
        server_version.is_some_and(|s| s >= 4)
    }
}

/// SEND (3), client to server: one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPacket {
    /// Header flags (the JS SDK always sets RedDot); SENDACK and RECV copy them.
    pub flags: Flags,
    /// Copied into RECV. The topic bit follows `topic`.
    pub setting: Setting,
    /// The SDK's counter, echoed in SENDACK; the SDK matches acks by it alone.
    pub client_seq: u32,
    /// Kept across resends after a reconnect: the de-duplication key.
    pub client_msg_no: String,
    /// Stream number, present iff 2 <= v <= 4 and a stream bit is set. Decoded only so the
    /// server can refuse the stream message; never encoded.
    pub stream_no: Option<String>,
    /// The channel; for person channels the recipient's uid.
    pub channel_id: String,
    pub channel_type: ChannelType,
    /// Seconds until the message expires, 0 never. On the wire iff v >= 3 (0 when absent).
    pub expire: u32,
    /// 32 lowercase hex chars over the packet (see [`crate::crypto::send_sign`]).
    pub msg_key: String,
    /// On the wire iff `Some` (the setting's topic bit).
    pub topic: Option<String>,
    /// Base64 text of the AES-CBC ciphertext, unless the NoEncrypt setting bit is set.
    pub payload: Vec<u8>,
}

/// SENDACK (4), server to client: the outcome of one SEND. Same layout in v2 to v5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendackPacket {
    /// WuKongIM copies the SEND's flags.
    pub flags: Flags,
    /// The stored message's id; positive (the JS SDK reads it as unsigned).
    pub message_id: i64,
    /// Echo of the SEND's `client_seq`.
    pub client_seq: u32,
    /// The message's sequence in its channel.
    pub message_seq: u32,
    pub reason_code: ReasonCode,
}

/// RECV (5), server to client: one message, encrypted for the receiving connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvPacket {
    /// RedDot (0 for the sender's own devices), SyncOnce and NoPersist of the SEND; DUP 0.
    pub flags: Flags,
    /// Copied from the SEND, stream bits cleared. The topic bit follows `topic`.
    pub setting: Setting,
    /// 32 lowercase hex chars over the packet (see [`crate::crypto::recv_sign`]).
    pub msg_key: String,
    /// The sender; empty for system messages.
    pub from_uid: String,
    /// The channel as this receiver sees it (person channels: the other party's uid).
    pub channel_id: String,
    pub channel_type: ChannelType,
    /// On the wire iff v >= 3 (0 when absent).
    pub expire: u32,
    pub client_msg_no: String,
    /// Non-negative (the JS SDK reads it as unsigned).
    pub message_id: i64,
    pub message_seq: u32,
    /// Unix seconds; non-negative (the JS SDK reads it as unsigned).
    pub timestamp: i32,
    /// On the wire iff `Some` (the setting's topic bit).
    pub topic: Option<String>,
    /// Base64 text of the ciphertext under this connection's key.
    pub payload: Vec<u8>,
}

/// RECVACK (6), client to server: a RECV was received and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvackPacket {
    /// The JS SDK copies NoPersist, SyncOnce and RedDot from the RECV.
    pub flags: Flags,
    pub message_id: i64,
    pub message_seq: u32,
}

/// DISCONNECT (9), server to client: the connection is being closed, e.g. kicked by a newer
/// login (`ConnectKick`, "login in other device"). Clients stop reconnecting after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectPacket {
    pub reason_code: ReasonCode,
    pub reason: String,
}

/// SUB (10), client to server: (un)subscribe a channel. WuKongIM v2 ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubPacket {
    pub setting: Setting,
    /// The client's id for this request, echoed in SUBACK.
    pub sub_no: String,
    pub channel_id: String,
    pub channel_type: ChannelType,
    /// 0 subscribe, 1 unsubscribe.
    pub action: u8,
    /// JSON or empty.
    pub param: String,
}

/// SUBACK (11), server to client: the outcome of one SUB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubackPacket {
    pub sub_no: String,
    pub channel_id: String,
    pub channel_type: ChannelType,
    pub action: u8,
    pub reason_code: ReasonCode,
}

/// EVENT (12), server to client, v5 only (older SDKs reconnect on an unknown packet type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPacket {
    pub id: String,
    /// The event's type name.
    pub event_type: String,
    /// Unix ms.
    pub timestamp: i64,
    /// All remaining bytes.
    pub data: Vec<u8>,
}

impl Packet {
    /// The type in the header's high nibble.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::Connack(_) => PacketType::Connack,
            Packet::Send(_) => PacketType::Send,
            Packet::Sendack(_) => PacketType::Sendack,
            Packet::Recv(_) => PacketType::Recv,
            Packet::Recvack(_) => PacketType::Recvack,
            Packet::Ping => PacketType::Ping,
            Packet::Pong => PacketType::Pong,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Sub(_) => PacketType::Sub,
            Packet::Suback(_) => PacketType::Suback,
            Packet::Event(_) => PacketType::Event,
        }
    }

    /// Appends the body to `out` and returns the header's low nibble.
    pub(crate) fn encode_body(&self, v: ProtoVersion, out: &mut Vec<u8>) -> Result<u8, ProtoError> {
        match self {
            Packet::Connect(p) => {
                put_u8(out, p.version);
                put_u8(out, p.device_flag.into());
                put_string(out, "device_id", &p.device_id)?;
                put_string(out, "uid", &p.uid)?;
                put_string(out, "token", &p.token)?;
                put_i64(out, p.client_timestamp);
                put_string(out, "client_key", &p.client_key)?;
                Ok(0)
            }
            Packet::Connack(p) => {
                if p.node_id.is_some() != ConnackPacket::has_node_id(p.server_version) {
                    return Err(ProtoError::Inconsistent(
                        "CONNACK has node_id iff server_version >= 4",
                    ));
                }
                if let Some(server_version) = p.server_version {
                    put_u8(out, server_version);
                }
                put_i64(out, p.time_diff);
                put_u8(out, p.reason_code.into());
                put_string(out, "server_key", &p.server_key)?;
                put_string(out, "salt", &p.salt)?;
                if let Some(node_id) = p.node_id {
                    put_u64(out, node_id);
                }
                Ok(u8::from(p.server_version.is_some()))
            }
            Packet::Send(p) => {
                if p.stream_no.is_some() || (has_stream_fields(v) && p.setting.is_stream()) {
                    return Err(ProtoError::StreamNotSupported);
                }
                put_u8(out, p.setting.with(Setting::TOPIC, p.topic.is_some()).0);
                put_u32(out, p.client_seq);
                put_string(out, "client_msg_no", &p.client_msg_no)?;
                put_string(out, "channel_id", &p.channel_id)?;
                put_u8(out, p.channel_type.into());
                if has_expire(v) {
                    put_u32(out, p.expire);
                }
                put_string(out, "msg_key", &p.msg_key)?;
                if let Some(topic) = &p.topic {
                    put_string(out, "topic", topic)?;
                }
                out.extend_from_slice(&p.payload);
                Ok(p.flags.bits())
            }
            Packet::Sendack(p) => {
                put_i64(out, p.message_id);
                put_u32(out, p.client_seq);
                put_u32(out, p.message_seq);
                put_u8(out, p.reason_code.into());
                Ok(p.flags.bits())
            }
            Packet::Recv(p) => {
                if has_stream_fields(v) && p.setting.is_stream() {
                    return Err(ProtoError::StreamNotSupported);
                }
                put_u8(out, p.setting.with(Setting::TOPIC, p.topic.is_some()).0);
                put_string(out, "msg_key", &p.msg_key)?;
                put_string(out, "from_uid", &p.from_uid)?;
                put_string(out, "channel_id", &p.channel_id)?;
                put_u8(out, p.channel_type.into());
                if has_expire(v) {
                    put_u32(out, p.expire);
                }
                put_string(out, "client_msg_no", &p.client_msg_no)?;
                put_i64(out, p.message_id);
                put_u32(out, p.message_seq);
                put_i32(out, p.timestamp);
                if let Some(topic) = &p.topic {
                    put_string(out, "topic", topic)?;
                }
                out.extend_from_slice(&p.payload);
                Ok(p.flags.bits())
            }
            Packet::Recvack(p) => {
                put_i64(out, p.message_id);
                put_u32(out, p.message_seq);
                Ok(p.flags.bits())
            }
            // Framed as single bytes by `frame`; they have no body.
            Packet::Ping | Packet::Pong => Ok(0),
            Packet::Disconnect(p) => {
                put_u8(out, p.reason_code.into());
                put_string(out, "reason", &p.reason)?;
                Ok(0)
            }
            Packet::Sub(p) => {
                put_u8(out, p.setting.0);
                put_string(out, "sub_no", &p.sub_no)?;
                put_string(out, "channel_id", &p.channel_id)?;
                put_u8(out, p.channel_type.into());
                put_u8(out, p.action);
                put_string(out, "param", &p.param)?;
                Ok(0)
            }
            Packet::Suback(p) => {
                put_string(out, "sub_no", &p.sub_no)?;
                put_string(out, "channel_id", &p.channel_id)?;
                put_u8(out, p.channel_type.into());
                put_u8(out, p.action);
                put_u8(out, p.reason_code.into());
                Ok(0)
            }
            Packet::Event(p) => {
                require_event(v)?;
                put_string(out, "id", &p.id)?;
                put_string(out, "type", &p.event_type)?;
                put_i64(out, p.timestamp);
                out.extend_from_slice(&p.data);
                Ok(0)
            }
        }
    }

    /// Decodes the body of a packet of type `ptype` whose header's low nibble was `nibble`.
    pub(crate) fn decode_body(
        ptype: PacketType,
        nibble: u8,
        body: &[u8],
        v: ProtoVersion,
    ) -> Result<Packet, ProtoError> {
        let mut r = Reader::new(body);
        let flags = Flags::from_bits(nibble);
        Ok(match ptype {
            PacketType::Connect => Packet::Connect(ConnectPacket {
                version: r.u8("version")?,
                device_flag: r.u8("device_flag")?.into(),
                device_id: r.string("device_id")?,
                uid: r.string("uid")?,
                token: r.string("token")?,
                client_timestamp: r.i64("client_timestamp")?,
                client_key: r.string("client_key")?,
            }),
            PacketType::Connack => {
                let server_version = if nibble & 0x01 != 0 {
                    Some(r.u8("server_version")?)
                } else {
                    None
                };
                let time_diff = r.i64("time_diff")?;
                let reason_code = r.u8("reason_code")?.into();
                let server_key = r.string("server_key")?;
                let salt = r.string("salt")?;
                let node_id = if ConnackPacket::has_node_id(server_version) {
                    Some(r.u64("node_id")?)
                } else {
                    None
                };
                Packet::Connack(ConnackPacket {
                    server_version,
                    time_diff,
                    reason_code,
                    server_key,
                    salt,
                    node_id,
                })
            }
            PacketType::Send => {
                let setting = Setting(r.u8("setting")?);
                let client_seq = r.u32("client_seq")?;
                let client_msg_no = r.string("client_msg_no")?;
                let stream_no = if has_stream_fields(v) && setting.is_stream() {
                    Some(r.string("stream_no")?)
                } else {
                    None
                };
                let channel_id = r.string("channel_id")?;
                let channel_type = r.u8("channel_type")?.into();
                let expire = if has_expire(v) { r.u32("expire")? } else { 0 };
                let msg_key = r.string("msg_key")?;
                let topic = if setting.has(Setting::TOPIC) {
                    Some(r.string("topic")?)
                } else {
                    None
                };
                Packet::Send(SendPacket {
                    flags,
                    setting,
                    client_seq,
                    client_msg_no,
                    stream_no,
                    channel_id,
                    channel_type,
                    expire,
                    msg_key,
                    topic,
                    payload: r.rest(),
                })
            }
            PacketType::Sendack => Packet::Sendack(SendackPacket {
                flags,
                message_id: r.i64("message_id")?,
                client_seq: r.u32("client_seq")?,
                message_seq: r.u32("message_seq")?,
                reason_code: r.u8("reason_code")?.into(),
            }),
            PacketType::Recv => {
                let setting = Setting(r.u8("setting")?);
                if has_stream_fields(v) && setting.is_stream() {
                    return Err(ProtoError::StreamNotSupported);
                }
                let msg_key = r.string("msg_key")?;
                let from_uid = r.string("from_uid")?;
                let channel_id = r.string("channel_id")?;
                let channel_type = r.u8("channel_type")?.into();
                let expire = if has_expire(v) { r.u32("expire")? } else { 0 };
                let client_msg_no = r.string("client_msg_no")?;
                let message_id = r.i64("message_id")?;
                let message_seq = r.u32("message_seq")?;
                let timestamp = r.i32("timestamp")?;
                let topic = if setting.has(Setting::TOPIC) {
                    Some(r.string("topic")?)
                } else {
                    None
                };
                Packet::Recv(RecvPacket {
                    flags,
                    setting,
                    msg_key,
                    from_uid,
                    channel_id,
                    channel_type,
                    expire,
                    client_msg_no,
                    message_id,
                    message_seq,
                    timestamp,
                    topic,
                    payload: r.rest(),
                })
            }
            PacketType::Recvack => Packet::Recvack(RecvackPacket {
                flags,
                message_id: r.i64("message_id")?,
                message_seq: r.u32("message_seq")?,
            }),
            PacketType::Ping => Packet::Ping,
            PacketType::Pong => Packet::Pong,
            PacketType::Disconnect => Packet::Disconnect(DisconnectPacket {
                reason_code: r.u8("reason_code")?.into(),
                reason: r.string("reason")?,
            }),
            PacketType::Sub => Packet::Sub(SubPacket {
                setting: Setting(r.u8("setting")?),
                sub_no: r.string("sub_no")?,
                channel_id: r.string("channel_id")?,
                channel_type: r.u8("channel_type")?.into(),
                action: r.u8("action")?,
                param: r.string("param")?,
            }),
            PacketType::Suback => Packet::Suback(SubackPacket {
                sub_no: r.string("sub_no")?,
                channel_id: r.string("channel_id")?,
                channel_type: r.u8("channel_type")?.into(),
                action: r.u8("action")?,
                reason_code: r.u8("reason_code")?.into(),
            }),
            PacketType::Event => {
                require_event(v)?;
                Packet::Event(EventPacket {
                    id: r.string("id")?,
                    event_type: r.string("type")?,
                    timestamp: r.i64("timestamp")?,
                    data: r.rest(),
                })
            }
        })
    }
}

/// SEND and RECV carry `expire` from v3 on.
fn has_expire(v: ProtoVersion) -> bool {
    v >= ProtoVersion::V3
}

/// SEND and RECV carry stream fields (when a stream bit is set) in v2 to v4 only.
fn has_stream_fields(v: ProtoVersion) -> bool {
    v <= ProtoVersion::V4
}

fn require_event(v: ProtoVersion) -> Result<(), ProtoError> {
    if v >= ProtoVersion::V5 {
        Ok(())
    } else {
        Err(ProtoError::NotInVersion {
            packet_type: PacketType::Event as u8,
            version: v.get(),
        })
    }
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
