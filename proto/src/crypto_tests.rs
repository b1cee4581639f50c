//! SPEC §7's crypto vectors (checked against the real JS SDK), both sides of the handshake, and
//! the refusals of bad keys, salts, base64, lengths and padding.

use super::*;
use crate::packet::Packet;
use crate::vectors::{self, unhex, unhex32};
use crate::{ProtoVersion, encode_frame};

fn client() -> KeyPair {
    KeyPair::from_secret(unhex32(vectors::CLIENT_SECRET))
}

fn server() -> KeyPair {
    KeyPair::from_secret(unhex32(vectors::SERVER_SECRET))
}

/// The server's session of the vectors.
fn session() -> Session {
    server()
        .session(vectors::CLIENT_PUBLIC, vectors::SALT)
        .expect("session")
}

#[test]
fn key_pairs_match_the_vectors() {
    assert_eq!(client().public_key_base64(), vectors::CLIENT_PUBLIC);
    assert_eq!(server().public_key_base64(), vectors::SERVER_PUBLIC);
}

#[test]
fn both_sides_agree_on_the_shared_secret_and_key() {
    let shared = unhex32(vectors::SHARED);
    assert_eq!(server().shared_secret(vectors::CLIENT_PUBLIC), Ok(shared));
    assert_eq!(client().shared_secret(vectors::SERVER_PUBLIC), Ok(shared));
    assert_eq!(BASE64.encode(shared), vectors::SHARED_BASE64);
    assert_eq!(&aes_key(&shared), vectors::AES_KEY.as_bytes());
    let client_session = client()
        .session(vectors::SERVER_PUBLIC, vectors::SALT)
        .expect("session");
    assert_eq!(client_session.encrypt(b"x"), session().encrypt(b"x"));
}

#[test]
fn payload_vector_both_ways() {
    let session = session();
    assert_eq!(
        session.encrypt(vectors::PLAINTEXT.as_bytes()),
        vectors::PAYLOAD.as_bytes()
    );
    assert_eq!(
        session.decrypt(vectors::PAYLOAD.as_bytes()),
        Ok(vectors::PLAINTEXT.as_bytes().to_vec())
    );
    let by_key = Session::new(
        vectors::AES_KEY.as_bytes().try_into().expect("16"),
        vectors::SALT.as_bytes().try_into().expect("16"),
    );
    assert_eq!(
        by_key.encrypt(vectors::PLAINTEXT.as_bytes()),
        vectors::PAYLOAD.as_bytes()
    );
}

#[test]
fn send_msg_key_vector() {
    let session = session();
    let send = vectors::send();
    assert_eq!(send_sign(&send), vectors::SEND_SIGN.as_bytes());
    assert_eq!(
        session.encrypt(vectors::SEND_SIGN.as_bytes()),
        vectors::SEND_SIGN_ENCRYPTED.as_bytes()
    );
    assert_eq!(
        session.msg_key(vectors::SEND_SIGN.as_bytes()),
        vectors::SEND_MSG_KEY
    );
    assert_eq!(session.verify_send(&send), Ok(()));
    assert_eq!(
        session.open_send(&send),
        Ok(vectors::PLAINTEXT.as_bytes().to_vec())
    );
}

#[test]
fn tampered_send_fails_its_msg_key() {
    let session = session();
    for tamper in [
        (|s: &mut SendPacket| s.client_seq = 2) as fn(&mut SendPacket),
        |s| s.client_msg_no.push('x'),
        |s| s.channel_id = "eve".into(),
        |s| s.channel_type = crate::ChannelType::Group,
        |s| s.payload[0] ^= 1,
        |s| s.msg_key = s.msg_key.to_uppercase(),
    ] {
        let mut send = vectors::send();
        tamper(&mut send);
        assert_eq!(session.open_send(&send), Err(ProtoError::BadMsgKey));
    }
    // Fields outside the sign string do not matter.
    let mut send = vectors::send();
    send.expire = 9;
    send.topic = Some("t".into());
    assert_eq!(session.verify_send(&send), Ok(()));
}

#[test]
fn recv_msg_key_vector_and_sealed_bytes() {
    let session = session();
    let recv = vectors::recv();
    assert_eq!(recv_sign(&recv), vectors::RECV_SIGN.as_bytes());
    assert_eq!(session.msg_key(&recv_sign(&recv)), vectors::RECV_MSG_KEY);
    let mut sealed = vectors::recv();
    sealed.payload.clear();
    sealed.msg_key.clear();
    session.seal_recv(&mut sealed, vectors::PLAINTEXT.as_bytes());
    assert_eq!(sealed, recv);
    assert_eq!(
        encode_frame(&Packet::Recv(sealed), ProtoVersion::V2),
        Ok(unhex(vectors::RECV_V2))
    );
}

#[test]
fn the_client_side_seals_the_vector_send_and_opens_the_vector_recv() {
    let session = session();
    let mut sealed = vectors::send();
    sealed.payload.clear();
    sealed.msg_key.clear();
    session.seal_send(&mut sealed, vectors::PLAINTEXT.as_bytes());
    assert_eq!(sealed, vectors::send());
    assert_eq!(
        session.open_recv(&vectors::recv()),
        Ok(vectors::PLAINTEXT.as_bytes().to_vec())
    );
    let mut tampered = vectors::recv();
    tampered.message_seq += 1;
    assert_eq!(session.open_recv(&tampered), Err(ProtoError::BadMsgKey));
}

#[test]
fn bad_payloads_are_errors() {
    let session = session();
    assert_eq!(session.decrypt(b"not base64!"), Err(ProtoError::BadBase64));
    assert_eq!(
        session.decrypt(b"osCCSwLzwq49FmcOr6wm5LNHsBiw3mVITLODizLFr/M"),
        Err(ProtoError::BadBase64)
    );
    assert_eq!(
        session.decrypt(b""),
        Err(ProtoError::BadCiphertextLength { len: 0 })
    );
    assert_eq!(
        session.decrypt(BASE64.encode([0u8; 15]).as_bytes()),
        Err(ProtoError::BadCiphertextLength { len: 15 })
    );
    // Another key decrypts to garbage whose padding is almost surely invalid; this one is.
    let other = Session::new(*b"0123456789abcdef", *b"abcdefghijklmnop");
    assert_eq!(
        other.decrypt(vectors::PAYLOAD.as_bytes()),
        Err(ProtoError::BadPadding)
    );
}

#[test]
fn padding_is_validated_in_full() {
    let session = session();
    // A block whose plaintext ends in ..., 0x01, 0x02: the last byte claims two bytes of padding,
    // the one before it disagrees. WuKongIM v2 would strip it; we refuse.
    let key = *vectors::AES_KEY.as_bytes().first_chunk::<16>().expect("16");
    let mut block = aes::Block::from([0u8; 16]);
    block[14] = 1;
    block[15] = 2;
    for (b, iv) in block.iter_mut().zip(vectors::SALT.as_bytes()) {
        *b ^= iv;
    }
    aes::cipher::BlockEncrypt::encrypt_block(&Aes128::new(&key.into()), &mut block);
    assert_eq!(
        session.decrypt(BASE64.encode(block).as_bytes()),
        Err(ProtoError::BadPadding)
    );
}

#[test]
fn bad_keys_and_salts_are_errors() {
    let server = server();
    assert_eq!(
        server.session("%%%", vectors::SALT).map(|_| ()),
        Err(ProtoError::BadBase64)
    );
    let short = BASE64.encode([9u8; 31]);
    assert_eq!(
        server.session(&short, vectors::SALT).map(|_| ()),
        Err(ProtoError::BadKeyLength { len: 31 })
    );
    assert_eq!(
        server.session("", vectors::SALT).map(|_| ()),
        Err(ProtoError::BadKeyLength { len: 0 })
    );
    // Longer keys: the first 32 bytes count, as in WuKongIM.
    let mut long = BASE64.decode(vectors::CLIENT_PUBLIC).expect("b64");
    long.push(0xff);
    assert_eq!(
        server.shared_secret(&BASE64.encode(long)),
        Ok(unhex32(vectors::SHARED))
    );
    assert_eq!(
        server.session(vectors::CLIENT_PUBLIC, "short").map(|_| ()),
        Err(ProtoError::BadSalt { len: 5 })
    );
    // A longer salt: its first 16 bytes are the IV (the JS SDK's rule).
    let long_salt = server
        .session(vectors::CLIENT_PUBLIC, "abcdefghijklmnopXYZ")
        .expect("session");
    assert_eq!(
        long_salt.encrypt(vectors::PLAINTEXT.as_bytes()),
        vectors::PAYLOAD.as_bytes()
    );
}

#[test]
fn fresh_keys_and_salts() {
    let (a, b) = (
        KeyPair::generate().expect("key"),
        KeyPair::generate().expect("key"),
    );
    assert_ne!(a.public_key_base64(), b.public_key_base64());
    assert_eq!(a.public_key_base64().len(), 44);
    let salt = random_salt().expect("salt");
    assert_eq!(salt.len(), 16);
    assert!(salt.bytes().all(|c| c.is_ascii_alphanumeric()), "{salt}");
    assert_ne!(salt, random_salt().expect("salt"));
    // A fresh handshake round trip: the client's session decrypts what the server's encrypts.
    let server_session = a.session(&b.public_key_base64(), &salt).expect("session");
    let client_session = b.session(&a.public_key_base64(), &salt).expect("session");
    let wire = server_session.encrypt(vectors::PLAINTEXT.as_bytes());
    assert_eq!(
        client_session.decrypt(&wire),
        Ok(vectors::PLAINTEXT.as_bytes().to_vec())
    );
    // Debug shows no secrets.
    assert_eq!(format!("{server_session:?}"), "Session { .. }");
    assert_eq!(
        format!("{a:?}"),
        format!("KeyPair {{ public: {:?}, .. }}", a.public_key_base64())
    );
}
