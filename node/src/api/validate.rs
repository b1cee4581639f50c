//! Input checks shared by the handlers. Limits are generous for real use and small enough
//! that no single request can make a node allocate without bound.

use base64::Engine;
use wk_api::{CHANNEL_TYPE_PERSON, MAX_CHANNEL_TYPE};

use crate::channel::{self, ChannelKey};
use crate::error::NodeError;

pub const MAX_ID: usize = 256;
pub const MAX_TOKEN: usize = 1024;
pub const MAX_CLIENT_MSG_NO: usize = 128;
pub const MAX_PAYLOAD: usize = 1 << 20;
pub const MAX_SUBSCRIBERS_PER_CALL: usize = 10_000;
pub const DEFAULT_SYNC_LIMIT: u32 = 100;
pub const MAX_SYNC_LIMIT: u32 = 10_000;

pub fn check_len(name: &str, v: &str, max: usize) -> Result<(), NodeError> {
    if v.len() > max {
        return Err(NodeError::BadRequest(format!(
            "{name} is longer than {max} bytes"
        )));
    }
    Ok(())
}

/// uids and channel ids: non-empty, bounded, and free of WuKongIM's special characters
/// (`@` joins person-channel ids, `#` and `&` are reserved).
pub fn check_id(name: &str, v: &str) -> Result<(), NodeError> {
    if v.trim().is_empty() {
        return Err(NodeError::BadRequest(format!("{name} must not be empty")));
    }
    check_len(name, v, MAX_ID)?;
    if v.contains(['@', '#', '&']) || v.chars().any(char::is_control) {
        return Err(NodeError::BadRequest(format!(
            "{name} {v:?} contains a character that is not allowed (@ # & or control)"
        )));
    }
    Ok(())
}

pub fn check_type(t: u8) -> Result<(), NodeError> {
    if t == 0 || t > MAX_CHANNEL_TYPE {
        return Err(NodeError::BadRequest(format!(
            "unknown channel_type {t} (WuKongIM types are 1..={MAX_CHANNEL_TYPE})"
        )));
    }
    Ok(())
}

/// The stored key of the channel a reader names. For person channels `channel_id` is the
/// other party (with `login_uid` the reader) or, as in WuKongIM, an `a@b` id used as is.
pub fn reader_key(channel_id: &str, channel_type: u8, login_uid: &str) -> Result<ChannelKey, NodeError> {
    check_type(channel_type)?;
    if channel_type == CHANNEL_TYPE_PERSON {
        if channel_id.contains('@') {
            let parts: Vec<&str> = channel_id.split('@').collect();
            if parts.len() != 2 {
                return Err(NodeError::BadRequest(format!(
                    "person channel id {channel_id:?} is not uid@uid"
                )));
            }
            for p in parts {
                check_id("channel_id", p)?;
            }
            return Ok(ChannelKey {
                channel_id: channel_id.into(),
                channel_type,
            });
        }
        check_id("channel_id", channel_id)?;
        check_id("login_uid", login_uid)?;
        return Ok(ChannelKey {
            channel_id: channel::person_channel_id(login_uid, channel_id),
            channel_type,
        });
    }
    check_id("channel_id", channel_id)?;
    Ok(ChannelKey {
        channel_id: channel_id.into(),
        channel_type,
    })
}

/// Base64 (standard alphabet, padding optional) of at most `MAX_PAYLOAD` decoded bytes.
pub fn decode_payload(b64: &str) -> Result<Vec<u8>, NodeError> {
    if b64.is_empty() {
        return Err(NodeError::BadRequest("payload must not be empty".into()));
    }
    if b64.len() > MAX_PAYLOAD / 3 * 4 + 4 {
        return Err(NodeError::PayloadTooLarge(format!(
            "payload over {MAX_PAYLOAD} bytes"
        )));
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(b64)
        .map_err(|e| NodeError::BadRequest(format!("payload is not valid base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_types() {
        assert!(check_id("uid", "alice").is_ok());
        for bad in ["", " ", "a@b", "a#", "x&y", "nl\n"] {
            assert!(check_id("uid", bad).is_err(), "{bad:?}");
        }
        assert!(check_id("uid", &"x".repeat(MAX_ID + 1)).is_err());
        assert!(
            check_type(0).is_err()
                && check_type(12).is_err()
                && check_type(1).is_ok()
                && check_type(11).is_ok()
        );
    }

    #[test]
    fn person_keys_are_symmetric() {
        let a = reader_key("bob", 1, "alice").expect("valid");
        let b = reader_key("alice", 1, "bob").expect("valid");
        assert_eq!(a, b);
        assert_eq!(reader_key(&a.channel_id, 1, "").expect("fake id as is"), a);
        assert!(reader_key("bob", 1, "").is_err(), "login_uid is required");
        assert!(reader_key("a@b@c", 1, "").is_err());
    }

    #[test]
    fn payloads() {
        assert_eq!(decode_payload("aGk=").expect("padded"), b"hi");
        assert_eq!(decode_payload("aGk").expect("unpadded"), b"hi");
        assert!(matches!(decode_payload("!!!"), Err(NodeError::BadRequest(_))));
        assert!(matches!(decode_payload(""), Err(NodeError::BadRequest(_))));
        let big = "A".repeat(MAX_PAYLOAD / 3 * 4 + 8);
        assert!(matches!(decode_payload(&big), Err(NodeError::PayloadTooLarge(_))));
    }
}
