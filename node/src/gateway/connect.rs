//! CONNECT: who the client is, checked against the token `/user/token` stored for
//! (uid, device_flag) in this node's copy of the metadata, and the handshake that gives the
//! connection its `Session`.
//!
//! Every refusal is a reason code for the CONNACK (SPEC §2.2): a bad uid, device flag, token or
//! client key is AuthFail (2), an empty client key ClientKeyIsEmpty (21), a failed metadata
//! read SystemError (15). The token comparison takes constant time.

use wk_proto::packet::{ConnackPacket, ConnectPacket};
use wk_proto::{KeyPair, ProtoVersion, ReasonCode, Session, random_salt};

use crate::api::validate::check_id;
use crate::channel;
use crate::cluster::Node;
use crate::config::Secret;
use crate::meta;

/// A CONNECT that passed: what the connection keeps.
pub(super) struct Accepted {
    pub session: Session,
    /// Device level 1.
    pub master: bool,
    /// The CONNACK to send.
    pub connack: ConnackPacket,
}

/// Checks `c` and makes the session; `Err` is the refusal CONNACK's reason.
pub(super) async fn authenticate(
    node: &Node,
    c: &ConnectPacket,
    v: ProtoVersion,
) -> Result<Accepted, ReasonCode> {
    if node.is_removed() {
        // Its tokens are stale: the client must connect to a member.
        return Err(ReasonCode::NodeNotMatch);
    }
    if check_id("uid", &c.uid).is_err() || c.uid == channel::SYSTEM_UID {
        return Err(ReasonCode::AuthFail);
    }
    if c.client_key.is_empty() {
        return Err(ReasonCode::ClientKeyIsEmpty);
    }
    let flag = u8::from(c.device_flag);
    let uid = c.uid.clone();
    let user = node
        .store
        .read(move |r| meta::get_user(r, &uid))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "gateway: reading a user's token failed");
            ReasonCode::SystemError
        })?;
    let device = user
        .as_ref()
        .and_then(|u| u.devices.get(&flag))
        .ok_or(ReasonCode::AuthFail)?;
    let stored = Secret::new(device.token.clone()).ok_or(ReasonCode::AuthFail)?;
    if !stored.matches(&c.token) {
        return Err(ReasonCode::AuthFail);
    }
    let keys = KeyPair::generate().map_err(|_| ReasonCode::SystemError)?;
    let salt = random_salt().map_err(|_| ReasonCode::SystemError)?;
    let session = keys
        .session(&c.client_key, &salt)
        .map_err(|_| ReasonCode::AuthFail)?;
    let connack = ConnackPacket::new(
        v,
        time_diff(c.client_timestamp),
        ReasonCode::Success,
        keys.public_key_base64(),
        salt,
        node.id,
    );
    Ok(Accepted {
        session,
        master: device.level == 1,
        connack,
    })
}

/// The CONNACK of a refused CONNECT: the success shape, empty key and salt (SPEC §2.2).
pub(super) fn refusal(node_id: u64, c: &ConnectPacket, v: ProtoVersion, reason: ReasonCode) -> ConnackPacket {
    ConnackPacket::new(
        v,
        time_diff(c.client_timestamp),
        reason,
        String::new(),
        String::new(),
        node_id,
    )
}

/// Server clock minus the client's, in ms.
fn time_diff(client_timestamp: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    now.saturating_sub(client_timestamp)
}
