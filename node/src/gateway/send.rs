//! SEND: `msg_key` verified and the payload decrypted with the connection's session, then the
//! message goes through `api::send_message`, the same path as HTTP `/message/send` (checks,
//! channel routing, `(from_uid, client_msg_no)` dedup, person channel `a@b` keys). The SENDACK
//! is built from what that returned, i.e. after the quorum commit. The message carries its
//! connection, so the leader's push skips that connection (`deliver`).

use wk_proto::packet::{SendPacket, SendackPacket};
use wk_proto::{ReasonCode, Session};

use super::deliver::ConnRef;
use crate::api::validate::{check_id, check_type};
use crate::api::{self, Outgoing};
use crate::channel::Header;
use crate::cluster::Node;
use crate::error::NodeError;

/// The SENDACK for `send` from `uid`.
pub(super) async fn handle(
    node: &Node,
    uid: &str,
    conn: u64,
    session: &Session,
    send: SendPacket,
) -> SendackPacket {
    let (message_id, message_seq, reason) = match store(node, uid, conn, session, &send).await {
        Ok(r) => (
            // Snowflake ids are below 2^63 and seqs below 2^32 for any real channel; the SDKs
            // read both unsigned, so never send a negative or wrapped value.
            i64::try_from(r.message_id).unwrap_or(0),
            u32::try_from(r.message_seq).unwrap_or(u32::MAX),
            ReasonCode::Success,
        ),
        Err(reason) => (0, 0, reason),
    };
    SendackPacket {
        flags: send.flags,
        message_id,
        client_seq: send.client_seq,
        message_seq,
        reason_code: reason,
    }
}

async fn store(
    node: &Node,
    uid: &str,
    conn: u64,
    session: &Session,
    send: &SendPacket,
) -> Result<wk_api::SendResp, ReasonCode> {
    if send.stream_no.is_some() {
        return Err(ReasonCode::NotAllowSend);
    }
    let channel_type = u8::from(send.channel_type);
    if check_type(channel_type).is_err() {
        return Err(ReasonCode::NotSupportChannelType);
    }
    if check_id("channel_id", &send.channel_id).is_err() {
        return Err(ReasonCode::ChannelIdError);
    }
    let payload = session.open_send(send).map_err(|e| {
        tracing::debug!(uid, client_seq = send.client_seq, error = %e, "gateway: SEND refused");
        ReasonCode::PayloadDecodeError
    })?;
    let flags = send.flags;
    let m = Outgoing {
        from_uid: uid.to_string(),
        // Person channels: the recipient's uid, as `/message/send` takes it.
        channel_id: send.channel_id.clone(),
        channel_type,
        client_msg_no: send.client_msg_no.clone(),
        header: Header {
            no_persist: u8::from(flags.no_persist()),
            red_dot: u8::from(flags.red_dot()),
            sync_once: u8::from(flags.sync_once()),
        },
        payload,
        origin: Some(ConnRef { node: node.id, conn }),
    };
    api::send_message(node, m).await.map_err(|e| {
        let reason = reason_of(&e);
        if reason == ReasonCode::SystemError {
            tracing::warn!(uid, error = %e, "gateway: SEND failed");
        }
        reason
    })
}

/// The SENDACK reason of a failed send.
pub(super) fn reason_of(e: &NodeError) -> ReasonCode {
    match e {
        NodeError::ChannelNotFound(_) => ReasonCode::ChannelNotExist,
        NodeError::NotSubscriber(_) => ReasonCode::SubscriberNotExist,
        NodeError::InBlacklist(_) => ReasonCode::InBlacklist,
        NodeError::NotInWhitelist(_) => ReasonCode::NotInWhitelist,
        NodeError::BadRequest(_) | NodeError::PayloadTooLarge(_) => ReasonCode::NotAllowSend,
        NodeError::Forbidden(_) | NodeError::Unauthorized(_) => ReasonCode::NotAllowSend,
        NodeError::Overloaded { .. } => ReasonCode::RateLimit,
        NodeError::Removed(_) => ReasonCode::NodeNotMatch,
        NodeError::NotLeader { .. }
        | NodeError::Unavailable(_)
        | NodeError::Corrupt(_)
        | NodeError::Storage(_)
        | NodeError::Internal(_) => ReasonCode::SystemError,
    }
}
