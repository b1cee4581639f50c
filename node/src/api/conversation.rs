//! WuKongIM's conversation endpoints: `/conversation/sync` and
//! `/conversations/setUnread|clearUnread|delete` (the model: `channel::conversation`; the
//! cluster side: `cluster::conversations`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use wk_api::{CHANNEL_TYPE_PERSON, Conversation, ConversationReq, ConversationSyncReq, Ok200};

use super::validate::{check_id, reader_key};
use super::{ApiResult, Body, to_message};
use crate::channel::conversation::{ConvOp, person_peer};
use crate::cluster::Node;
use crate::cluster::conversations::{self, Found};
use crate::error::NodeError;
use crate::meta::ChannelRecord;

/// Most messages a conversation carries in `recents`.
pub const MAX_RECENTS: u32 = 100;

/// The `channel_id` `uid` sees for a channel: the other user of a person channel.
fn shown_id(rec: &ChannelRecord, uid: &str) -> String {
    if rec.key.channel_type == CHANNEL_TYPE_PERSON {
        person_peer(&rec.key.channel_id, uid).unwrap_or_else(|| rec.key.channel_id.clone())
    } else {
        rec.key.channel_id.clone()
    }
}

fn to_conversation(uid: &str, f: Found) -> Conversation {
    let channel_id = shown_id(&f.rec, uid);
    let v = f.row.view;
    Conversation {
        channel_type: f.rec.key.channel_type,
        unread: v.unread(),
        timestamp: f.row.last.as_ref().map_or(0, |m| m.timestamp),
        last_msg_seq: v.last_seq,
        last_client_msg_no: f.row.last.map(|m| m.client_msg_no).unwrap_or_default(),
        offset_msg_seq: 0,
        readed_to_msg_seq: v.read.read_seq,
        version: v.version(),
        recents: f
            .row
            .recents
            .into_iter()
            .map(|m| {
                let mut m = to_message(&f.rec, m);
                m.channel_id = channel_id.clone();
                m
            })
            .collect(),
        channel_id,
    }
}

/// `POST /conversation/sync`: the user's conversations changed since `version`, newest first.
pub async fn sync(
    State(node): State<Node>,
    Body(req): Body<ConversationSyncReq>,
) -> ApiResult<Vec<Conversation>> {
    check_id("uid", &req.uid)?;
    if req.msg_count > MAX_RECENTS {
        return Err(NodeError::BadRequest(format!("msg_count is at most {MAX_RECENTS}")).into());
    }
    let mut client_seqs = HashMap::new();
    for (id, t, seq) in conversations::parse_last_msg_seqs(&req.last_msg_seqs)? {
        client_seqs.insert(reader_key(&id, t, &req.uid)?, seq);
    }
    let found = node
        .conversations(&req.uid, req.version, req.msg_count, &client_seqs)
        .await?;
    Ok(Json(
        found.into_iter().map(|f| to_conversation(&req.uid, f)).collect(),
    ))
}

/// The channel a conversation request names, which the user must be in.
async fn channel_of(node: &Node, req: &ConversationReq) -> Result<Arc<ChannelRecord>, NodeError> {
    check_id("uid", &req.uid)?;
    let key = reader_key(&req.channel_id, req.channel_type, &req.uid)?;
    let rec = node
        .resolve_channel(&key, false)
        .await?
        .ok_or_else(|| NodeError::ChannelNotFound(format!("no conversation of {} on {key}", req.uid)))?;
    let member = if key.channel_type == CHANNEL_TYPE_PERSON {
        person_peer(&key.channel_id, &req.uid).is_some()
    } else {
        rec.subscribers.contains(&req.uid)
    };
    if !member {
        return Err(NodeError::NotSubscriber(format!("{} is not in {key}", req.uid)));
    }
    Ok(rec)
}

async fn edit(node: &Node, req: &ConversationReq, op: ConvOp) -> ApiResult<Ok200> {
    let rec = channel_of(node, req).await?;
    node.edit_conversation(&rec, conversations::command(&req.uid, op))
        .await?;
    Ok(Json(Ok200::default()))
}

/// `POST /conversations/setUnread`: the newest `unread` messages count as unread.
pub async fn set_unread(State(node): State<Node>, Body(req): Body<ConversationReq>) -> ApiResult<Ok200> {
    edit(&node, &req, ConvOp::SetUnread(req.unread)).await
}

/// `POST /conversations/clearUnread`: read up to `message_seq` (0: everything).
pub async fn clear_unread(State(node): State<Node>, Body(req): Body<ConversationReq>) -> ApiResult<Ok200> {
    edit(&node, &req, ConvOp::ClearUnread(req.message_seq)).await
}

/// `POST /conversations/delete`: hidden until a newer message arrives.
pub async fn delete(State(node): State<Node>, Body(req): Body<ConversationReq>) -> ApiResult<Ok200> {
    edit(&node, &req, ConvOp::Delete).await
}
