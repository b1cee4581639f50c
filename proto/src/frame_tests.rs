//! Framing: partial and coalesced frames, the size limit decided from the prefix, the varint,
//! the stream [`Decoder`], and property tests: arbitrary bytes never panic, and packets
//! round-trip at every version.

use super::*;
use crate::packet::*;
use crate::vectors::{self, unhex};
use crate::{ChannelType, DeviceFlag, Flags, ReasonCode, Setting};
use proptest::prelude::*;

const ALL_VERSIONS: [ProtoVersion; 4] = [
    ProtoVersion::V2,
    ProtoVersion::V3,
    ProtoVersion::V4,
    ProtoVersion::V5,
];

#[test]
fn every_strict_prefix_is_incomplete() {
    for (hex, v) in [
        (vectors::SEND_V2, ProtoVersion::V2),
        (vectors::RECV_V5, ProtoVersion::V5),
    ] {
        let bytes = unhex(hex);
        for end in 0..bytes.len() {
            assert_eq!(decode_frame(&bytes[..end], v), Ok(None), "prefix of {end} bytes");
        }
    }
}

#[test]
fn coalesced_frames_decode_one_at_a_time() {
    let mut bytes = unhex(vectors::SEND_V2);
    let first = bytes.len();
    bytes.extend(unhex("70"));
    bytes.extend(unhex(vectors::RECVACK));
    let (packet, used) = decode_frame(&bytes, ProtoVersion::V2)
        .expect("ok")
        .expect("frame");
    assert_eq!((packet, used), (Packet::Send(vectors::send()), first));
    assert_eq!(
        decode_frame(&bytes[used..], ProtoVersion::V2),
        Ok(Some((Packet::Ping, 1)))
    );
    let rest = &bytes[used + 1..];
    assert_eq!(
        decode_frame(rest, ProtoVersion::V2),
        Ok(Some((Packet::Recvack(vectors::recvack()), rest.len())))
    );
}

#[test]
fn size_limit_is_decided_from_the_length_prefix() {
    // 0x81 0x80 0x40 = 1 + (64 << 14) = 1 MiB + 1, with no body bytes buffered yet.
    assert_eq!(
        decode_frame(&unhex("32818040"), ProtoVersion::V2),
        Err(ProtoError::TooLarge {
            len: MAX_REMAINING_LENGTH + 1,
            max: MAX_REMAINING_LENGTH
        })
    );
    // Exactly 1 MiB (0x80 0x80 0x40) is allowed: still incomplete.
    assert_eq!(decode_frame(&unhex("32808040"), ProtoVersion::V2), Ok(None));
    let mut send = vectors::send();
    send.payload = vec![b'a'; MAX_REMAINING_LENGTH];
    let err = encode_frame(&Packet::Send(send), ProtoVersion::V2);
    assert!(matches!(err, Err(ProtoError::TooLarge { .. })), "{err:?}");
}

#[test]
fn remaining_length_varint() {
    // 321 = 0xC1 0x02 (SPEC §1.2); a non-minimal 0x80 0x00 is 0, which Go also accepts.
    assert_eq!(remaining_length(&[0xc1, 0x02]), Ok(Some((321, 2))));
    assert_eq!(remaining_length(&[0x80, 0x00]), Ok(Some((0, 2))));
    assert_eq!(remaining_length(&[0xc1]), Ok(None));
    assert_eq!(remaining_length(&[]), Ok(None));
    assert_eq!(
        remaining_length(&[0xff, 0xff, 0xff, 0x7f]),
        Ok(Some(((1 << 28) - 1, 4)))
    );
    assert_eq!(
        remaining_length(&[0xff, 0xff, 0xff, 0xff]),
        Err(ProtoError::BadRemainingLength)
    );
    // The encoder writes the shortest form.
    let mut recv = vectors::recv();
    recv.payload = vec![b'a'; 321 - (0x72 - vectors::PAYLOAD.len())];
    let bytes = encode_frame(&Packet::Recv(recv), ProtoVersion::V2).expect("encodes");
    assert_eq!(&bytes[..3], &[0x52, 0xc1, 0x02]);
}

#[test]
fn unknown_types_fail_at_the_header_byte() {
    for header in [0x00, 0x0f, 0xd0, 0xe5, 0xff] {
        assert_eq!(
            decode_frame(&[header], ProtoVersion::V5),
            Err(ProtoError::UnknownPacketType(header >> 4))
        );
    }
    // PING and PONG ignore the low nibble and never wait for a length.
    assert_eq!(
        decode_frame(&[0x7f, 0xff], ProtoVersion::V2),
        Ok(Some((Packet::Ping, 1)))
    );
}

#[test]
fn decoder_reassembles_a_byte_stream() {
    let mut stream = unhex(vectors::SEND_V5);
    stream.push(0x70);
    stream.extend(unhex(vectors::RECVACK));
    let want = [
        Packet::Send(vectors::send()),
        Packet::Ping,
        Packet::Recvack(vectors::recvack()),
    ];
    for chunk in [1, 2, 7, 64, stream.len()] {
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            decoder.extend(piece);
            while let Some(packet) = decoder.next_packet(ProtoVersion::V5).expect("decodes") {
                got.push(packet);
            }
        }
        assert_eq!(got, want, "chunks of {chunk}");
        assert_eq!(decoder.buffered(), 0);
    }
}

#[test]
fn decoder_stays_failed_after_an_error() {
    let mut decoder = Decoder::new();
    decoder.extend(&[0x70, 0x00, 0x70]);
    assert_eq!(decoder.next_packet(ProtoVersion::V2), Ok(Some(Packet::Ping)));
    assert_eq!(
        decoder.next_packet(ProtoVersion::V2),
        Err(ProtoError::UnknownPacketType(0))
    );
    assert_eq!(
        decoder.next_packet(ProtoVersion::V2),
        Err(ProtoError::UnknownPacketType(0))
    );
}

fn version() -> impl Strategy<Value = ProtoVersion> {
    (2u8..=5).prop_map(ProtoVersion::negotiate)
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..64)
}

/// Any packet this crate can encode at `v`, with fields absent at `v` at their decoded value.
fn packet(v: ProtoVersion) -> impl Strategy<Value = Packet> {
    let has_expire = v >= ProtoVersion::V3;
    // The stream bits are free in v5 only; below they would need stream fields.
    let setting_mask = if v >= ProtoVersion::V5 {
        0xff
    } else {
        !(Setting::STREAM_OLD | Setting::STREAM_NEW)
    };
    let setting = any::<u8>().prop_map(move |s| Setting(s & setting_mask));
    let flags = (0u8..16).prop_map(Flags::from_bits);
    let connect = (
        any::<u8>(),
        any::<u8>(),
        text(),
        text(),
        text(),
        any::<i64>(),
        text(),
    )
        .prop_map(
            |(version, device, device_id, uid, token, client_timestamp, client_key)| {
                Packet::Connect(ConnectPacket {
                    version,
                    device_flag: DeviceFlag::from(device),
                    device_id,
                    uid,
                    token,
                    client_timestamp,
                    client_key,
                })
            },
        );
    let connack = (any::<i64>(), any::<u8>(), text(), text(), any::<u64>()).prop_map(
        move |(time_diff, reason, key, salt, node_id)| {
            Packet::Connack(ConnackPacket::new(
                v,
                time_diff,
                ReasonCode::from(reason),
                key,
                salt,
                node_id,
            ))
        },
    );
    let send = (
        (
            flags.clone(),
            setting.clone(),
            any::<u32>(),
            text(),
            text(),
            any::<u8>(),
        ),
        (any::<u32>(), text(), proptest::option::of(text()), bytes()),
    )
        .prop_map(
            move |((flags, setting, client_seq, client_msg_no, channel_id, ct), rest)| {
                let (expire, msg_key, topic, payload) = rest;
                Packet::Send(SendPacket {
                    flags,
                    setting: setting.with(Setting::TOPIC, topic.is_some()),
                    client_seq,
                    client_msg_no,
                    stream_no: None,
                    channel_id,
                    channel_type: ChannelType::from(ct),
                    expire: if has_expire { expire } else { 0 },
                    msg_key,
                    topic,
                    payload,
                })
            },
        );
    let recv = (
        (
            flags.clone(),
            setting.clone(),
            text(),
            text(),
            text(),
            any::<u8>(),
            any::<u32>(),
        ),
        (
            text(),
            any::<i64>(),
            any::<u32>(),
            any::<i32>(),
            proptest::option::of(text()),
            bytes(),
        ),
    )
        .prop_map(
            move |((flags, setting, msg_key, from_uid, channel_id, ct, expire), rest)| {
                let (client_msg_no, message_id, message_seq, timestamp, topic, payload) = rest;
                Packet::Recv(RecvPacket {
                    flags,
                    setting: setting.with(Setting::TOPIC, topic.is_some()),
                    msg_key,
                    from_uid,
                    channel_id,
                    channel_type: ChannelType::from(ct),
                    expire: if has_expire { expire } else { 0 },
                    client_msg_no,
                    message_id,
                    message_seq,
                    timestamp,
                    topic,
                    payload,
                })
            },
        );
    let sendack = (
        flags.clone(),
        any::<i64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
    )
        .prop_map(|(flags, message_id, client_seq, message_seq, reason)| {
            Packet::Sendack(SendackPacket {
                flags,
                message_id,
                client_seq,
                message_seq,
                reason_code: ReasonCode::from(reason),
            })
        });
    let recvack = (flags, any::<i64>(), any::<u32>()).prop_map(|(flags, message_id, message_seq)| {
        Packet::Recvack(RecvackPacket {
            flags,
            message_id,
            message_seq,
        })
    });
    let disconnect = (any::<u8>(), text()).prop_map(|(reason, text)| {
        Packet::Disconnect(DisconnectPacket {
            reason_code: ReasonCode::from(reason),
            reason: text,
        })
    });
    let sub = (setting, text(), text(), any::<u8>(), any::<u8>(), text()).prop_map(
        |(setting, sub_no, channel_id, ct, action, param)| {
            Packet::Sub(SubPacket {
                setting,
                sub_no,
                channel_id,
                channel_type: ChannelType::from(ct),
                action,
                param,
            })
        },
    );
    let suback = (text(), text(), any::<u8>(), any::<u8>(), any::<u8>()).prop_map(
        |(sub_no, channel_id, ct, action, reason)| {
            Packet::Suback(SubackPacket {
                sub_no,
                channel_id,
                channel_type: ChannelType::from(ct),
                action,
                reason_code: ReasonCode::from(reason),
            })
        },
    );
    let event = (text(), text(), any::<i64>(), bytes()).prop_map(|(id, event_type, timestamp, data)| {
        Packet::Event(EventPacket {
            id,
            event_type,
            timestamp,
            data,
        })
    });
    // EVENT exists in v5 only.
    let event = if v >= ProtoVersion::V5 {
        event.boxed()
    } else {
        Just(Packet::Pong).boxed()
    };
    prop_oneof![
        connect,
        connack,
        send,
        recv,
        sendack,
        recvack,
        Just(Packet::Ping),
        Just(Packet::Pong),
        disconnect,
        sub,
        suback,
        event,
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for v in ALL_VERSIONS {
            if let Ok(Some((packet, used))) = decode_frame(&bytes, v) {
                prop_assert!(used <= bytes.len());
                // Whatever decodes re-encodes (unless it is a refused stream SEND) to bytes that
                // decode to the same packet.
                match encode_frame(&packet, v) {
                    Ok(again) => prop_assert_eq!(decode_frame(&again, v), Ok(Some((packet, again.len())))),
                    Err(err) => prop_assert_eq!(err, ProtoError::StreamNotSupported),
                }
            }
        }
    }

    #[test]
    fn typed_headers_with_arbitrary_bodies_never_panic(
        header in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // Well-framed bodies reach the packet decoders far more often than random bytes do.
        let mut frame = Vec::new();
        frame.push(header);
        let mut len = body.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 { frame.push(byte); break; }
            frame.push(byte | 0x80);
        }
        frame.extend(&body);
        for v in ALL_VERSIONS {
            let _ = decode_frame(&frame, v);
        }
    }

    #[test]
    fn packets_round_trip((v, packet) in version().prop_flat_map(|v| (Just(v), packet(v)))) {
        let bytes = encode_frame(&packet, v).expect("encodes");
        prop_assert_eq!(decode_frame(&bytes, v), Ok(Some((packet.clone(), bytes.len()))));
        // Split anywhere, the stream decoder gives the same packet.
        let mut decoder = Decoder::new();
        let cut = bytes.len() / 2;
        decoder.extend(&bytes[..cut]);
        let early = decoder.next_packet(v).expect("decodes");
        decoder.extend(&bytes[cut..]);
        let got = match early { Some(p) => Some(p), None => decoder.next_packet(v).expect("decodes") };
        prop_assert_eq!(got, Some(packet));
    }
}
