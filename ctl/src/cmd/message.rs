//! `wkctl message send|sync`: WuKongIM's `/message/send` and `/channel/messagesync`.

use anyhow::Context;
use base64::Engine;
use wk_api::{MessageHeader, SendReq, SyncReq};

use crate::Outcome;
use crate::cli::{GlobalArgs, SendArgs, SyncArgs};
use crate::output;

/// Sends `args.text` as the (base64) payload and prints the assigned id and seq.
pub async fn send(global: &GlobalArgs, args: SendArgs) -> anyhow::Result<Outcome> {
    let client = super::client(global)?;
    let req = SendReq {
        header: MessageHeader::default(),
        client_msg_no: args.client_msg_no.unwrap_or_default(),
        from_uid: args.from_uid,
        channel_id: args.channel_id,
        channel_type: args.channel_type,
        payload: base64::engine::general_purpose::STANDARD.encode(args.text.as_bytes()),
    };
    let resp = client.send(&req).await.context("POST /message/send")?;
    output::print(global.output, &resp, || output::send_text(&resp))?;
    Ok(Outcome::Ok)
}

/// Reads a range of messages; text output decodes payloads, JSON output is the raw answer.
pub async fn sync(global: &GlobalArgs, args: SyncArgs) -> anyhow::Result<Outcome> {
    let client = super::client(global)?;
    let req = SyncReq {
        login_uid: args.login_uid,
        channel_id: args.channel_id,
        channel_type: args.channel_type,
        start_message_seq: args.start,
        end_message_seq: args.end,
        limit: args.limit,
        pull_mode: args.pull_mode,
    };
    let resp = client.sync(&req).await.context("POST /channel/messagesync")?;
    output::print(global.output, &resp, || {
        output::messages_text(&resp.messages, resp.more != 0)
    })?;
    Ok(Outcome::Ok)
}
