//! SPEC §7's test vectors, checked against the real JS SDK (1.0.4 for v2, 1.3.5 for v5), and the
//! packets they encode. Shared by the test modules.

use crate::packet::{ConnackPacket, RecvPacket, RecvackPacket, SendPacket, SendackPacket};
use crate::{ChannelType, Flags, ReasonCode, Setting};

pub const CLIENT_SECRET: &str = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";
pub const CLIENT_PUBLIC: &str = "B6N8vBQgk8i3VdwbEOhstCY3StFqqFPtC9/AsrhtHHw=";
pub const SERVER_SECRET: &str = "2122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40";
pub const SERVER_PUBLIC: &str = "WGmv9FBUlzLLqu1eXfmzCm2jHLDldCutWtShp2jxpns=";
pub const SHARED: &str = "a84dc7c3c8f058b1b2dc4cd1e9b5dc0a7987f88b6a9564cde3391fc421159e77";
pub const SHARED_BASE64: &str = "qE3Hw8jwWLGy3EzR6bXcCnmH+ItqlWTN4zkfxCEVnnc=";
pub const AES_KEY: &str = "8e65549ac3e59ba4";
pub const SALT: &str = "abcdefghijklmnop";
pub const PLAINTEXT: &str = r#"{"type":1,"content":"hi"}"#;
pub const PAYLOAD: &str = "osCCSwLzwq49FmcOr6wm5LNHsBiw3mVITLODizLFr/M=";

pub const SEND_SIGN: &str = "1m1bob1osCCSwLzwq49FmcOr6wm5LNHsBiw3mVITLODizLFr/M=";
pub const SEND_SIGN_ENCRYPTED: &str =
    "jdiR/L4y2M6UWvJ5sqH9uZO39tw3MCRe+AwhuNwqePufgY7cdq0KyerCvUFGR46gHKE8rXNceRunRZ48vDGaTg==";
pub const SEND_MSG_KEY: &str = "95f7397670e1b74e24ba2ae2e11a1a28";
pub const SEND_V2: &str = "325d000000000100026d310003626f6201002039356637333937363730653162373465323462613261653265313161316132386f73434353774c7a77713439466d634f7236776d354c4e4873426977336d5649544c4f44697a4c46722f4d3d";
pub const SEND_V5: &str = "3261000000000100026d310003626f620100000000002039356637333937363730653162373465323462613261653265313161316132386f73434353774c7a77713439466d634f7236776d354c4e4873426977336d5649544c4f44697a4c46722f4d3d";

pub const RECV_SIGN: &str = "10001m11700000000alicealice1osCCSwLzwq49FmcOr6wm5LNHsBiw3mVITLODizLFr/M=";
pub const RECV_MSG_KEY: &str = "1a8d40c0b6741e6fd0e86b5302626805";
pub const RECV_V2: &str = "527200002031613864343063306236373431653666643065383662353330323632363830350005616c6963650005616c6963650100026d3100000000000003e8000000016553f1006f73434353774c7a77713439466d634f7236776d354c4e4873426977336d5649544c4f44697a4c46722f4d3d";
pub const RECV_V5: &str = "527600002031613864343063306236373431653666643065383662353330323632363830350005616c6963650005616c696365010000000000026d3100000000000003e8000000016553f1006f73434353774c7a77713439466d634f7236776d354c4e4873426977336d5649544c4f44697a4c46722f4d3d";

pub const CONNACK_V2: &str = "2049000000000000000001002c57476d76394642556c7a4c4c7175316558666d7a436d326a484c446c644375745774536870326a78706e733d00106162636465666768696a6b6c6d6e6f70";
pub const CONNACK_V5: &str = "215205000000000000000001002c57476d76394642556c7a4c4c7175316558666d7a436d326a484c446c644375745774536870326a78706e733d00106162636465666768696a6b6c6d6e6f700000000000000001";
pub const SENDACK: &str = "421100000000000003e8000000010000000101";
pub const RECVACK: &str = "620c00000000000003e800000001";

/// Bytes of a hex string (test input only).
pub fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd-length hex");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

pub fn unhex32(hex: &str) -> [u8; 32] {
    unhex(hex).try_into().expect("32 bytes")
}

/// The SEND of the vectors: client_seq 1, `m1`, to `bob` (person), RedDot, expire 0.
pub fn send() -> SendPacket {
    SendPacket {
        flags: Flags::default().with_red_dot(true),
        setting: Setting::default(),
        client_seq: 1,
        client_msg_no: "m1".into(),
        stream_no: None,
        channel_id: "bob".into(),
        channel_type: ChannelType::Person,
        expire: 0,
        msg_key: SEND_MSG_KEY.into(),
        topic: None,
        payload: PAYLOAD.as_bytes().to_vec(),
    }
}

/// The RECV of the vectors: message 1000, seq 1, from `alice` in channel `alice`, RedDot.
pub fn recv() -> RecvPacket {
    RecvPacket {
        flags: Flags::default().with_red_dot(true),
        setting: Setting::default(),
        msg_key: RECV_MSG_KEY.into(),
        from_uid: "alice".into(),
        channel_id: "alice".into(),
        channel_type: ChannelType::Person,
        expire: 0,
        client_msg_no: "m1".into(),
        message_id: 1000,
        message_seq: 1,
        timestamp: 1_700_000_000,
        topic: None,
        payload: PAYLOAD.as_bytes().to_vec(),
    }
}

pub fn sendack() -> SendackPacket {
    SendackPacket {
        flags: Flags::default().with_red_dot(true),
        message_id: 1000,
        client_seq: 1,
        message_seq: 1,
        reason_code: ReasonCode::Success,
    }
}

pub fn recvack() -> RecvackPacket {
    RecvackPacket {
        flags: Flags::default().with_red_dot(true),
        message_id: 1000,
        message_seq: 1,
    }
}

pub fn connack(v: crate::ProtoVersion) -> ConnackPacket {
    ConnackPacket::new(v, 0, ReasonCode::Success, SERVER_PUBLIC.into(), SALT.into(), 1)
}
