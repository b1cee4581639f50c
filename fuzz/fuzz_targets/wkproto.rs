//! Whatever bytes a WuKongIM client sends on its TCP or WebSocket connection: the wkproto frame
//! decoder (header, remaining length, 1 MiB limit) and every packet body at each protocol
//! version 2 to 5, one frame at a time and through the stream `Decoder` fed in two pieces; and
//! the same bytes as an encrypted payload and as a client key. Decoding may fail; it must never
//! panic, and whatever decodes must encode to bytes that decode to the same packet.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use wk_proto::{Decoder, KeyPair, ProtoError, ProtoVersion, Session, decode_frame, encode_frame};

static KEYS: LazyLock<KeyPair> = LazyLock::new(|| KeyPair::from_secret([7; 32]));
static SESSION: LazyLock<Session> = LazyLock::new(|| Session::new(*b"8e65549ac3e59ba4", *b"abcdefghijklmnop"));

fuzz_target!(|data: &[u8]| {
    for client_version in 2..=5 {
        let v = ProtoVersion::negotiate(client_version);
        let mut rest = data;
        while let Ok(Some((packet, used))) = decode_frame(rest, v) {
            match encode_frame(&packet, v) {
                Ok(bytes) => assert_eq!(decode_frame(&bytes, v), Ok(Some((packet, bytes.len())))),
                // A SEND of a stream message is decoded so the server can refuse it, never encoded.
                Err(err) => assert_eq!(err, ProtoError::StreamNotSupported),
            }
            rest = &rest[used..];
        }
        let mut decoder = Decoder::new();
        let (head, tail) = data.split_at(data.len() / 2);
        for piece in [head, tail] {
            decoder.extend(piece);
            while let Ok(Some(_)) = decoder.next_packet(v) {}
        }
    }
    let _ = SESSION.decrypt(data);
    if let Ok(key) = std::str::from_utf8(data) {
        let _ = KEYS.session(key, "abcdefghijklmnop");
    }
});
