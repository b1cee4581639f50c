//! Small value types of the protocol: the negotiated version, packet types, the header flag
//! nibble, the SEND/RECV setting byte, and the u8 code tables (SPEC §2.13, §2.14).
//!
//! Code tables a peer may fill with anything keep unnamed values in `Other(u8)`, so decoding
//! never fails on them and `u8 -> T -> u8` is the identity. `Other` holds only values without a
//! name: `T::from(n)` never builds `Other(n)` for a named `n`.

use std::fmt;

/// The protocol version of one connection: `min(client's CONNECT version, 5)`, and at least 2.
/// Fixed for the connection's life; every encode and decode after CONNECT takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtoVersion(u8);

impl ProtoVersion {
    /// The base format (JS SDK 1.0.4, the Go SDK).
    pub const V2: Self = Self(2);
    /// Adds `expire` to SEND and RECV.
    pub const V3: Self = Self(3);
    /// Adds CONNACK's `server_version` (with header flag bit0) and `node_id` (Android, iOS).
    pub const V4: Self = Self(4);
    /// Drops the stream fields from SEND and RECV, knows EVENT (JS SDK 1.3.2+).
    pub const V5: Self = Self(5);
    /// The newest version this crate speaks.
    pub const LATEST: Self = Self::V5;

    /// The version to use with a client whose CONNECT said `client_version`. WuKongIM keeps
    /// `min(client_version, 5)`; versions 0 and 1 (no SDK sends them) are spoken as 2, whose
    /// layout WuKongIM's decoders also use for them.
    pub fn negotiate(client_version: u8) -> Self {
        Self(client_version.clamp(2, 5))
    }

    /// The version number as on the wire.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for ProtoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// The high nibble of the fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    Connect = 1,
    Connack = 2,
    Send = 3,
    Sendack = 4,
    Recv = 5,
    Recvack = 6,
    Ping = 7,
    Pong = 8,
    Disconnect = 9,
    Sub = 10,
    Suback = 11,
    Event = 12,
}

impl PacketType {
    /// The type in the high nibble of `header`; 0 and 13 to 15 are no packet type.
    pub fn from_header(header: u8) -> Result<Self, crate::ProtoError> {
        use PacketType::*;
        Ok(match header >> 4 {
            1 => Connect,
            2 => Connack,
            3 => Send,
            4 => Sendack,
            5 => Recv,
            6 => Recvack,
            7 => Ping,
            8 => Pong,
            9 => Disconnect,
            10 => Sub,
            11 => Suback,
            12 => Event,
            other => return Err(crate::ProtoError::UnknownPacketType(other)),
        })
    }
}

/// The low nibble of the fixed header of SEND, SENDACK, RECV and RECVACK (SPEC §1.1). Other
/// packets send it as 0 (CONNACK uses bit0 for itself); their decoders ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    const DUP: u8 = 0x08;
    const SYNC_ONCE: u8 = 0x04;
    const RED_DOT: u8 = 0x02;
    const NO_PERSIST: u8 = 0x01;

    /// The flags in the low nibble of a header byte (the high nibble is dropped).
    pub fn from_bits(bits: u8) -> Self {
        Self(bits & 0x0f)
    }
    /// The nibble as it goes in the header byte.
    pub fn bits(self) -> u8 {
        self.0
    }
    /// Retransmission. No SDK sets it, WuKongIM never acts on it.
    pub fn dup(self) -> bool {
        self.0 & Self::DUP != 0
    }
    /// A command-style message: synced or consumed once.
    pub fn sync_once(self) -> bool {
        self.0 & Self::SYNC_ONCE != 0
    }
    /// Show an unread badge. The JS SDK sets it on every SEND.
    pub fn red_dot(self) -> bool {
        self.0 & Self::RED_DOT != 0
    }
    /// Do not store the message.
    pub fn no_persist(self) -> bool {
        self.0 & Self::NO_PERSIST != 0
    }
    /// These flags with DUP set to `on`.
    pub fn with_dup(self, on: bool) -> Self {
        self.with(Self::DUP, on)
    }
    /// These flags with SyncOnce set to `on`.
    pub fn with_sync_once(self, on: bool) -> Self {
        self.with(Self::SYNC_ONCE, on)
    }
    /// These flags with RedDot set to `on`.
    pub fn with_red_dot(self, on: bool) -> Self {
        self.with(Self::RED_DOT, on)
    }
    /// These flags with NoPersist set to `on`.
    pub fn with_no_persist(self, on: bool) -> Self {
        self.with(Self::NO_PERSIST, on)
    }
    fn with(self, bit: u8, on: bool) -> Self {
        Self(if on { self.0 | bit } else { self.0 & !bit })
    }
}

/// The setting byte of SEND, RECV and SUB (SPEC §2.3.1). Kept as the raw byte, because the server
/// copies it from SEND to RECV; the accessors name the bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Setting(pub u8);

impl Setting {
    /// The message wants read receipts.
    pub const RECEIPT: u8 = 0x80;
    /// Signal-protocol end-to-end flag (stubbed out in the SDKs).
    pub const SIGNAL: u8 = 0x20;
    /// The payload is plaintext and `msg_key` is unused. No JS or mobile SDK sets it.
    pub const NO_ENCRYPT: u8 = 0x10;
    /// A topic string follows (the encoder sets or clears it from the packet's `topic`).
    pub const TOPIC: u8 = 0x08;
    /// The stream bit of JS <= 1.2.x, iOS, Android and GoProto <= v1.0.8.
    pub const STREAM_OLD: u8 = 0x04;
    /// The stream bit of GoProto >= v1.0.9 and JS >= 1.3.0.
    pub const STREAM_NEW: u8 = 0x02;

    /// Whether `bit` (one of the constants) is set.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
    /// Whether either stream bit is set. Old and new SDKs never set the other generation's bit,
    /// so at versions 2 to 4 either one means stream fields follow.
    pub fn is_stream(self) -> bool {
        self.has(Self::STREAM_OLD | Self::STREAM_NEW)
    }
    /// This setting with `bit` set to `on`.
    pub fn with(self, bit: u8, on: bool) -> Self {
        Self(if on { self.0 | bit } else { self.0 & !bit })
    }
}

/// Defines a u8 code table with named values and an `Other(u8)` fallback.
macro_rules! code_table {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value without a name here; kept so it survives a decode and re-encode.
            Other(u8),
        }

        impl From<u8> for $name {
            fn from(value: u8) -> Self {
                match value {
                    $($value => Self::$variant,)*
                    other => Self::Other(other),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> u8 {
                match value {
                    $($name::$variant => $value,)*
                    $name::Other(other) => other,
                }
            }
        }
    };
}

code_table! {
    /// Reason codes of CONNACK, SENDACK, DISCONNECT and SUBACK (SPEC §2.13).
    ReasonCode {
        Unknown = 0,
        Success = 1,
        AuthFail = 2,
        SubscriberNotExist = 3,
        InBlacklist = 4,
        ChannelNotExist = 5,
        UserNotOnNode = 6,
        SenderOffline = 7,
        MsgKeyError = 8,
        PayloadDecodeError = 9,
        ForwardSendPacketError = 10,
        NotAllowSend = 11,
        ConnectKick = 12,
        NotInWhitelist = 13,
        QueryTokenError = 14,
        SystemError = 15,
        ChannelIdError = 16,
        NodeMatchError = 17,
        NodeNotMatch = 18,
        Ban = 19,
        NotSupportHeader = 20,
        ClientKeyIsEmpty = 21,
        RateLimit = 22,
        NotSupportChannelType = 23,
        Disband = 24,
        SendBan = 25,
    }
}

code_table! {
    /// Channel types (SPEC §2.14).
    ChannelType {
        Person = 1,
        Group = 2,
        /// Deprecated.
        CustomerService = 3,
        Community = 4,
        CommunityTopic = 5,
        Info = 6,
        Data = 7,
        Temp = 8,
        Live = 9,
        Visitors = 10,
        Agent = 11,
        AgentGroup = 12,
    }
}

code_table! {
    /// The kind of device in CONNECT (SPEC §2.14). The JS SDK's default is `Web`.
    DeviceFlag {
        App = 0,
        Web = 1,
        Pc = 2,
        System = 99,
    }
}
