//! `wkctl conversation list UID`: WuKongIM's `/conversation/sync`, for operators.

use anyhow::Context;
use wk_api::ConversationSyncReq;

use crate::Outcome;
use crate::cli::{ConversationListArgs, GlobalArgs};
use crate::output;

/// Lists a user's conversations with their last message; JSON output is the raw answer.
pub async fn list(global: &GlobalArgs, args: ConversationListArgs) -> anyhow::Result<Outcome> {
    let client = super::client(global)?;
    let req = ConversationSyncReq {
        uid: args.uid,
        version: args.since,
        last_msg_seqs: String::new(),
        msg_count: 1,
    };
    let convs = client
        .conversation_sync(&req)
        .await
        .context("POST /conversation/sync")?;
    output::print(global.output, &convs, || output::conversations_text(&convs))?;
    Ok(Outcome::Ok)
}
