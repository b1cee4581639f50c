//! `wkctl conversation list UID`: WuKongIM's `/conversation/sync`, for operators.

use anyhow::Context;
use wk_api::ConversationSyncReq;

use crate::Outcome;
use crate::cli::{ConversationListArgs, GlobalArgs, OutputFormat};
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
    let mut out = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json => output::write_json(&mut out, &convs)?,
        OutputFormat::Text => output::write_text(&mut out, &output::conversations_text(&convs))?,
    }
    Ok(Outcome::Ok)
}
