//! Packet bodies: SPEC §7's vectors both ways at v2 and v5, the version-dependent fields, and the
//! refusals (streams, EVENT before v5, inconsistent CONNACK, over-long strings).

use super::*;
use crate::vectors::{self, unhex};
use crate::{decode_frame, encode_frame};

const ALL_VERSIONS: [ProtoVersion; 4] = [
    ProtoVersion::V2,
    ProtoVersion::V3,
    ProtoVersion::V4,
    ProtoVersion::V5,
];

/// Decodes one whole frame, which must use every byte.
fn decode(bytes: &[u8], v: ProtoVersion) -> Packet {
    let (packet, used) = decode_frame(bytes, v).expect("decodes").expect("complete frame");
    assert_eq!(used, bytes.len(), "frame length");
    packet
}

/// `packet` encodes to `hex` at `v`, and `hex` decodes to `packet`.
fn both_ways(packet: Packet, hex: &str, v: ProtoVersion) {
    assert_eq!(
        encode_frame(&packet, v).expect("encodes"),
        unhex(hex),
        "encode {v}"
    );
    assert_eq!(decode(&unhex(hex), v), packet, "decode {v}");
}

#[test]
fn send_vectors_v2_and_v5() {
    both_ways(Packet::Send(vectors::send()), vectors::SEND_V2, ProtoVersion::V2);
    both_ways(Packet::Send(vectors::send()), vectors::SEND_V5, ProtoVersion::V5);
}

#[test]
fn recv_vectors_v2_and_v5() {
    both_ways(Packet::Recv(vectors::recv()), vectors::RECV_V2, ProtoVersion::V2);
    both_ways(Packet::Recv(vectors::recv()), vectors::RECV_V5, ProtoVersion::V5);
}

#[test]
fn connack_vectors_v2_and_v5() {
    let v2 = vectors::connack(ProtoVersion::V2);
    assert_eq!((v2.server_version, v2.node_id), (None, None));
    both_ways(Packet::Connack(v2), vectors::CONNACK_V2, ProtoVersion::V2);
    let v5 = vectors::connack(ProtoVersion::V5);
    assert_eq!((v5.server_version, v5.node_id), (Some(5), Some(1)));
    both_ways(Packet::Connack(v5), vectors::CONNACK_V5, ProtoVersion::V5);
}

#[test]
fn connack_shape_follows_the_version() {
    for v in ALL_VERSIONS {
        let bytes = encode_frame(&Packet::Connack(vectors::connack(v)), v).expect("encodes");
        let modern = v >= ProtoVersion::V4;
        assert_eq!(bytes[0], if modern { 0x21 } else { 0x20 }, "header at {v}");
        // Body: time_diff 8 + reason 1 + key 46 + salt 18, plus server_version 1 and node_id 8.
        assert_eq!(
            usize::from(bytes[1]),
            73 + if modern { 9 } else { 0 },
            "length at {v}"
        );
        assert_eq!(decode(&bytes, v), Packet::Connack(vectors::connack(v)));
    }
}

#[test]
fn sendack_and_recvack_vectors_at_every_version() {
    for v in ALL_VERSIONS {
        both_ways(Packet::Sendack(vectors::sendack()), vectors::SENDACK, v);
        both_ways(Packet::Recvack(vectors::recvack()), vectors::RECVACK, v);
    }
}

#[test]
fn ping_and_pong_are_single_bytes() {
    for v in ALL_VERSIONS {
        both_ways(Packet::Ping, "70", v);
        both_ways(Packet::Pong, "80", v);
    }
}

#[test]
fn connect_layout_is_the_same_at_every_version() {
    let connect = Packet::Connect(ConnectPacket {
        version: 2,
        device_flag: DeviceFlag::Web,
        device_id: "d1W".into(),
        uid: "alice".into(),
        token: "t".into(),
        client_timestamp: 1_700_000_000_000,
        client_key: vectors::CLIENT_PUBLIC.into(),
    });
    let hex = [
        "1047",             // CONNECT, 71 bytes
        "0201",             // version 2, device_flag web
        "0003643157",       // "d1W"
        "0005616c696365",   // "alice"
        "000174",           // "t"
        "0000018bcfe56800", // 1700000000000 ms
        "002c",             // 44 bytes of base64
        "42364e38764251676b38693356647762454f687374435933537446717146507443392f41737268744848773d",
    ]
    .concat();
    for v in ALL_VERSIONS {
        both_ways(connect.clone(), &hex, v);
    }
}

#[test]
fn disconnect_sub_suback_layouts() {
    let disconnect = Packet::Disconnect(DisconnectPacket {
        reason_code: ReasonCode::ConnectKick,
        reason: "login in other device".into(),
    });
    both_ways(
        disconnect,
        "90180c00156c6f67696e20696e206f7468657220646576696365",
        ProtoVersion::V2,
    );
    let sub = Packet::Sub(SubPacket {
        setting: Setting(0),
        sub_no: "s1".into(),
        channel_id: "c".into(),
        channel_type: ChannelType::Data,
        action: 1,
        param: String::new(),
    });
    both_ways(sub, "a00c000002733100016307010000", ProtoVersion::V2);
    let suback = Packet::Suback(SubackPacket {
        sub_no: "s1".into(),
        channel_id: "c".into(),
        channel_type: ChannelType::Data,
        action: 1,
        reason_code: ReasonCode::Success,
    });
    both_ways(suback, "b00a00027331000163070101", ProtoVersion::V5);
}

#[test]
fn event_exists_only_in_v5() {
    let event = Packet::Event(EventPacket {
        id: "e".into(),
        event_type: "t".into(),
        timestamp: 1,
        data: b"{}".to_vec(),
    });
    let hex = ["c010", "000165", "000174", "0000000000000001", "7b7d"].concat();
    both_ways(event.clone(), &hex, ProtoVersion::V5);
    let refused = ProtoError::NotInVersion {
        packet_type: 12,
        version: 4,
    };
    assert_eq!(encode_frame(&event, ProtoVersion::V4), Err(refused.clone()));
    let bytes = encode_frame(&event, ProtoVersion::V5).expect("encodes");
    assert_eq!(decode_frame(&bytes, ProtoVersion::V4), Err(refused));
}

#[test]
fn expire_is_on_the_wire_from_v3() {
    let mut send = vectors::send();
    send.expire = 0x0102_0304;
    for v in ALL_VERSIONS {
        let bytes = encode_frame(&Packet::Send(send.clone()), v).expect("encodes");
        let Packet::Send(back) = decode(&bytes, v) else {
            panic!("not a SEND")
        };
        assert_eq!(
            back.expire,
            if v >= ProtoVersion::V3 { 0x0102_0304 } else { 0 },
            "at {v}"
        );
        let has_expire = bytes.windows(4).any(|w| w == [1, 2, 3, 4]);
        assert_eq!(has_expire, v >= ProtoVersion::V3, "at {v}");
    }
}

#[test]
fn topic_follows_the_option_not_the_bit() {
    let mut send = vectors::send();
    send.setting = Setting(Setting::TOPIC | Setting::RECEIPT);
    let no_topic = encode_frame(&Packet::Send(send.clone()), ProtoVersion::V5).expect("encodes");
    assert_eq!(no_topic[2], Setting::RECEIPT, "topic bit cleared without a topic");
    send.topic = Some("news".into());
    let bytes = encode_frame(&Packet::Send(send.clone()), ProtoVersion::V5).expect("encodes");
    assert_eq!(bytes[2], Setting::RECEIPT | Setting::TOPIC);
    assert_eq!(decode(&bytes, ProtoVersion::V5), Packet::Send(send));

    let mut recv = vectors::recv();
    recv.topic = Some("news".into());
    recv.setting = Setting(Setting::TOPIC);
    let bytes = encode_frame(&Packet::Recv(recv.clone()), ProtoVersion::V3).expect("encodes");
    assert_eq!(decode(&bytes, ProtoVersion::V3), Packet::Recv(recv));
}

#[test]
fn stream_send_is_decoded_for_refusal_but_never_encoded() {
    // A v4 SEND with the new stream bit: stream_no "s" sits between client_msg_no and channel_id.
    let body = [
        "00000001",
        "00026d31",
        "000173",
        "0003626f62",
        "01",
        "00000000",
        "00026b6b",
        "7878",
    ]
    .concat();
    for bit in [Setting::STREAM_NEW, Setting::STREAM_OLD] {
        let bytes = unhex(&format!("32{:02x}{bit:02x}{body}", body.len() / 2 + 1));
        let Packet::Send(send) = decode(&bytes, ProtoVersion::V4) else {
            panic!("not a SEND")
        };
        assert_eq!(send.stream_no.as_deref(), Some("s"));
        assert_eq!(
            (send.channel_id.as_str(), send.msg_key.as_str(), &send.payload[..]),
            ("bob", "kk", &b"xx"[..])
        );
        assert_eq!(
            encode_frame(&Packet::Send(send), ProtoVersion::V4),
            Err(ProtoError::StreamNotSupported)
        );
    }
    // In v5 the stream bits change no layout.
    let mut send = vectors::send();
    send.setting = Setting(Setting::STREAM_NEW);
    let bytes = encode_frame(&Packet::Send(send.clone()), ProtoVersion::V5).expect("encodes");
    assert_eq!(decode(&bytes, ProtoVersion::V5), Packet::Send(send));
}

#[test]
fn stream_recv_is_refused_in_v2_to_v4() {
    let mut recv = vectors::recv();
    recv.setting = Setting(Setting::STREAM_OLD);
    for v in [ProtoVersion::V2, ProtoVersion::V3, ProtoVersion::V4] {
        assert_eq!(
            encode_frame(&Packet::Recv(recv.clone()), v),
            Err(ProtoError::StreamNotSupported)
        );
        let mut bytes = unhex(vectors::RECV_V2);
        bytes[2] = Setting::STREAM_NEW;
        assert_eq!(decode_frame(&bytes, v), Err(ProtoError::StreamNotSupported));
    }
    let bytes = encode_frame(&Packet::Recv(recv.clone()), ProtoVersion::V5).expect("encodes");
    assert_eq!(decode(&bytes, ProtoVersion::V5), Packet::Recv(recv));
}

#[test]
fn inconsistent_connack_is_refused() {
    let mut connack = vectors::connack(ProtoVersion::V2);
    connack.node_id = Some(1);
    let err = encode_frame(&Packet::Connack(connack), ProtoVersion::V2);
    assert!(matches!(err, Err(ProtoError::Inconsistent(_))), "{err:?}");
    let mut connack = vectors::connack(ProtoVersion::V5);
    connack.server_version = Some(3);
    let err = encode_frame(&Packet::Connack(connack), ProtoVersion::V5);
    assert!(matches!(err, Err(ProtoError::Inconsistent(_))), "{err:?}");
}

#[test]
fn sendack_with_trailing_client_msg_no_is_accepted() {
    // WuKongIM's newest server appends client_msg_no; older decoders ignore it, so do we.
    let hex = format!("4215{}00026d31", &vectors::SENDACK[4..]);
    assert_eq!(
        decode(&unhex(&hex), ProtoVersion::V5),
        Packet::Sendack(vectors::sendack())
    );
}

#[test]
fn truncated_bodies_name_the_field() {
    // A whole frame whose body stops inside client_msg_no.
    let bytes = unhex("3207000000000100026d");
    assert_eq!(
        decode_frame(&bytes, ProtoVersion::V2),
        Err(ProtoError::Truncated {
            field: "client_msg_no"
        })
    );
    let bytes = unhex("6203000000");
    assert_eq!(
        decode_frame(&bytes, ProtoVersion::V2),
        Err(ProtoError::Truncated { field: "message_id" })
    );
}

#[test]
fn strings_are_utf8_and_at_most_32767_bytes() {
    let mut send = vectors::send();
    send.channel_id = "x".repeat(32_768);
    assert_eq!(
        encode_frame(&Packet::Send(send.clone()), ProtoVersion::V2),
        Err(ProtoError::StringTooLong {
            field: "channel_id",
            len: 32_768,
            max: 32_767
        })
    );
    send.channel_id = "x".repeat(32_767);
    let bytes = encode_frame(&Packet::Send(send.clone()), ProtoVersion::V2).expect("encodes");
    assert_eq!(decode(&bytes, ProtoVersion::V2), Packet::Send(send));
    // A length of 0x8000 is refused before looking for the bytes.
    let bytes = unhex("90030c8000");
    assert_eq!(
        decode_frame(&bytes, ProtoVersion::V2),
        Err(ProtoError::StringTooLong {
            field: "reason",
            len: 32_768,
            max: 32_767
        })
    );
    let bytes = unhex("90040c0001ff");
    assert_eq!(
        decode_frame(&bytes, ProtoVersion::V2),
        Err(ProtoError::BadUtf8 { field: "reason" })
    );
}

#[test]
fn unnamed_codes_survive_a_round_trip() {
    let mut send = vectors::send();
    send.channel_type = ChannelType::Other(200);
    let bytes = encode_frame(&Packet::Send(send.clone()), ProtoVersion::V5).expect("encodes");
    assert_eq!(decode(&bytes, ProtoVersion::V5), Packet::Send(send));
    for n in 0..=u8::MAX {
        assert_eq!(u8::from(ReasonCode::from(n)), n);
        assert_eq!(u8::from(ChannelType::from(n)), n);
        assert_eq!(u8::from(DeviceFlag::from(n)), n);
    }
    assert_eq!(ReasonCode::from(25), ReasonCode::SendBan);
    assert_eq!(DeviceFlag::from(99), DeviceFlag::System);
    assert_eq!(ChannelType::from(12), ChannelType::AgentGroup);
}

#[test]
fn version_negotiation_keeps_two_to_five() {
    let got: Vec<u8> = [0, 1, 2, 3, 4, 5, 6, 255]
        .map(|c| ProtoVersion::negotiate(c).get())
        .to_vec();
    assert_eq!(got, [2, 2, 2, 3, 4, 5, 5, 5]);
}
