//! Per-connection crypto (SPEC §3): the X25519 handshake, the AES-128-CBC payload cipher, and
//! `msg_key`.
//!
//! Handshake: the client sends its X25519 public key in CONNECT; the server makes a fresh
//! [`KeyPair`] for the connection and a 16-character [`random_salt`], sends its public key and
//! the salt in CONNACK, and both sides derive the same [`Session`]:
//! `aes_key = ASCII(lowercase_hex(MD5(base64(shared)))[..16])`, `iv = ASCII(salt[..16])`.
//!
//! Invariants, all required by the SDKs (so the design is weak, but interoperable):
//! - key and IV are fixed for the connection; every payload starts a fresh CBC chain at that IV;
//! - payloads travel as the standard padded base64 *text* of the PKCS#7-padded ciphertext;
//! - `msg_key = lowercase_hex(MD5(Session::encrypt(sign)))`, the sign string built from the
//!   packet's fields exactly as sent ([`send_sign`], [`recv_sign`]);
//! - decryption validates the padding, and nothing here panics on a peer's bytes.

use aes::Aes128;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::{Digest, Md5};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::ProtoError;
use crate::packet::{RecvPacket, SendPacket};

/// An X25519 key pair. The server makes a fresh one for every connection.
pub struct KeyPair {
    /// Zeroed on drop by x25519-dalek.
    secret: StaticSecret,
    /// Sent in CONNACK as base64.
    public: PublicKey,
}

impl KeyPair {
    /// A new key pair from the operating system's randomness.
    pub fn generate() -> Result<Self, ProtoError> {
        let mut secret = [0u8; 32];
        fill_random(&mut secret)?;
        Ok(Self::from_secret(secret))
    }

    /// The key pair of a raw 32-byte private key (clamped by X25519 itself), for tests and
    /// test clients.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The public key as CONNECT's `client_key` and CONNACK's `server_key` carry it: standard
    /// padded base64, 44 characters.
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.public.as_bytes())
    }

    /// The session with the peer whose public key is `peer_key_base64`, under `salt` (the
    /// CONNACK's). The first 32 bytes of the decoded key are used, as WuKongIM does; fewer is
    /// [`ProtoError::BadKeyLength`].
    pub fn session(&self, peer_key_base64: &str, salt: &str) -> Result<Session, ProtoError> {
        Session::from_shared_secret(&self.shared_secret(peer_key_base64)?, salt)
    }

    /// The raw X25519 shared secret with the peer whose public key is `peer_key_base64`
    /// (RFC 7748, no hashing); [`KeyPair::session`] derives the session from it.
    pub fn shared_secret(&self, peer_key_base64: &str) -> Result<[u8; 32], ProtoError> {
        let peer = BASE64
            .decode(peer_key_base64)
            .map_err(|_| ProtoError::BadBase64)?;
        let peer: [u8; 32] = peer
            .get(..32)
            .and_then(|key| key.try_into().ok())
            .ok_or(ProtoError::BadKeyLength { len: peer.len() })?;
        Ok(self.secret.diffie_hellman(&PublicKey::from(peer)).to_bytes())
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

/// The AES key of a shared secret: the ASCII bytes of the first 16 lowercase hex characters of
/// `MD5(base64(shared))`.
pub fn aes_key(shared: &[u8; 32]) -> [u8; 16] {
    let digest = Md5::digest(BASE64.encode(shared).as_bytes());
    let mut key = [0u8; 16];
    for (pair, byte) in key.chunks_exact_mut(2).zip(digest.iter()) {
        pair.copy_from_slice(&hex_byte(*byte));
    }
    key
}

/// A random salt (AES IV) of 16 characters from `[0-9A-Za-z]`, for CONNACK.
pub fn random_salt() -> Result<String, ProtoError> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut salt = String::with_capacity(16);
    while salt.len() < 16 {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes)?;
        // Only bytes below 248 = 4 * 62, so every character is equally likely.
        for b in bytes.into_iter().filter(|&b| b < 248) {
            if salt.len() < 16 {
                salt.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    Ok(salt)
}

fn fill_random(buf: &mut [u8]) -> Result<(), ProtoError> {
    getrandom::fill(buf).map_err(|e| ProtoError::NoRandomness(e.to_string()))
}

/// The crypto state of one connection: AES-128 key (its key schedule, computed once) and IV.
#[derive(Clone)]
pub struct Session {
    /// The expanded AES key; cloned to start each CBC chain.
    cipher: Aes128,
    /// The salt's bytes, the IV of every payload.
    iv: [u8; 16],
}

impl Session {
    /// A session of a known key and IV.
    pub fn new(aes_key: [u8; 16], iv: [u8; 16]) -> Self {
        Self {
            cipher: Aes128::new(&aes_key.into()),
            iv,
        }
    }

    /// The session both sides derive from the X25519 shared secret and the CONNACK's salt; the
    /// first 16 bytes of the salt are the IV (the JS SDK's rule), fewer is an error.
    pub fn from_shared_secret(shared: &[u8; 32], salt: &str) -> Result<Self, ProtoError> {
        let iv: [u8; 16] = salt
            .as_bytes()
            .get(..16)
            .and_then(|iv| iv.try_into().ok())
            .ok_or(ProtoError::BadSalt { len: salt.len() })?;
        Ok(Self::new(aes_key(shared), iv))
    }

    /// `plaintext` encrypted as it goes on the wire: base64 text of the AES-CBC/PKCS#7
    /// ciphertext.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let ciphertext = cbc::Encryptor::<Aes128>::inner_iv_init(self.cipher.clone(), &self.iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        BASE64.encode(ciphertext).into_bytes()
    }

    /// The plaintext of an encrypted payload as it came on the wire.
    pub fn decrypt(&self, wire: &[u8]) -> Result<Vec<u8>, ProtoError> {
        let ciphertext = BASE64.decode(wire).map_err(|_| ProtoError::BadBase64)?;
        if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
            return Err(ProtoError::BadCiphertextLength {
                len: ciphertext.len(),
            });
        }
        cbc::Decryptor::<Aes128>::inner_iv_init(self.cipher.clone(), &self.iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext)
            .map_err(|_| ProtoError::BadPadding)
    }

    /// The `msg_key` of a sign string: 32 lowercase hex chars of `MD5(encrypt(sign))`.
    pub fn msg_key(&self, sign: &[u8]) -> String {
        let digest = Md5::digest(self.encrypt(sign));
        digest.iter().flat_map(|&b| hex_byte(b)).map(char::from).collect()
    }

    /// Checks a SEND's `msg_key`; do this before decrypting its payload.
    pub fn verify_send(&self, send: &SendPacket) -> Result<(), ProtoError> {
        if self.msg_key(&send_sign(send)) == send.msg_key {
            Ok(())
        } else {
            Err(ProtoError::BadMsgKey)
        }
    }

    /// A SEND's plaintext: its `msg_key` verified, then its payload decrypted. Any error is
    /// answered with SENDACK PayloadDecodeError (9); the connection stays open. The NoEncrypt
    /// setting bit is not honoured here (no SDK sets it; WuKongIM v2 ignores it too).
    pub fn open_send(&self, send: &SendPacket) -> Result<Vec<u8>, ProtoError> {
        self.verify_send(send)?;
        self.decrypt(&send.payload)
    }

    /// Fills a RECV's `payload` with `plaintext` encrypted for this connection, then its
    /// `msg_key` over the packet as it now is; set every other field first.
    pub fn seal_recv(&self, recv: &mut RecvPacket, plaintext: &[u8]) {
        recv.payload = self.encrypt(plaintext);
        recv.msg_key = self.msg_key(&recv_sign(recv));
    }

    /// The client's side of [`Session::open_send`]: fills a SEND's `payload` with `plaintext`
    /// encrypted for this connection, then its `msg_key`; set every other field first.
    pub fn seal_send(&self, send: &mut SendPacket, plaintext: &[u8]) {
        send.payload = self.encrypt(plaintext);
        send.msg_key = self.msg_key(&send_sign(send));
    }

    /// The client's side of [`Session::seal_recv`]: a RECV's plaintext, its `msg_key` checked
    /// first.
    pub fn open_recv(&self, recv: &RecvPacket) -> Result<Vec<u8>, ProtoError> {
        if self.msg_key(&recv_sign(recv)) != recv.msg_key {
            return Err(ProtoError::BadMsgKey);
        }
        self.decrypt(&recv.payload)
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// The sign string of a SEND: `client_seq`, `client_msg_no`, `channel_id`, `channel_type` and the
/// payload exactly as received, concatenated with no separators (numbers in decimal).
pub fn send_sign(send: &SendPacket) -> Vec<u8> {
    let mut sign = format!(
        "{}{}{}{}",
        send.client_seq,
        send.client_msg_no,
        send.channel_id,
        u8::from(send.channel_type)
    )
    .into_bytes();
    sign.extend_from_slice(&send.payload);
    sign
}

/// The sign string of a RECV: `message_id`, `message_seq`, `client_msg_no`, `timestamp`,
/// `from_uid`, `channel_id`, `channel_type` and the encrypted payload, concatenated with no
/// separators (numbers in decimal, signed as WuKongIM formats them; the SDKs read them unsigned,
/// so they must be non-negative).
pub fn recv_sign(recv: &RecvPacket) -> Vec<u8> {
    let mut sign = format!(
        "{}{}{}{}{}{}{}",
        recv.message_id,
        recv.message_seq,
        recv.client_msg_no,
        recv.timestamp,
        recv.from_uid,
        recv.channel_id,
        u8::from(recv.channel_type)
    )
    .into_bytes();
    sign.extend_from_slice(&recv.payload);
    sign
}

/// The two lowercase hex digits of `b`.
fn hex_byte(b: u8) -> [u8; 2] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]]
}

#[cfg(test)]
#[path = "crypto_tests.rs"]
mod tests;
