//! `wkctl bench conversations`: how long `/conversation/sync` takes for a user in many
//! conversations (issue 19's figure: a user in 1,000 conversations).
//!
//! Runs its own local cluster: creates `--conversations` group channels, each with the
//! reader and a sender as subscribers, stores one message in each (so every conversation has
//! unread 1 and a recent message), then calls `/conversation/sync` for the reader
//! `--requests` times, one at a time, round-robin over the nodes (version 0: every
//! conversation, with `msg_count` 1, as the SDKs ask on login). Each answer must hold every
//! conversation with its unread count, or the bench fails.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use wk_api::{CHANNEL_TYPE_GROUP, ChannelReq, ConversationSyncReq};

use super::{LatencySummary, fill, new_histogram, summarize};
use crate::Outcome;
use crate::cli::{BenchConversationsArgs, GlobalArgs};
use crate::output;
use crate::probe::{interrupted, payload_pool, per_endpoint, run_tag};

/// The user whose conversations are synced.
const READER: &str = "conv-reader";
/// The user who sends the one message of each channel.
const SENDER: &str = "conv-sender";
/// Channel ids are this prefix plus 0, 1, ...
const PREFIX: &str = "conv-";

/// What `bench conversations --output json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationsReport {
    pub nodes: u64,
    /// Conversations of the reader (each answer held them all).
    pub conversations: u64,
    /// Sync requests timed.
    pub requests: u64,
    /// One `/conversation/sync`, end to end.
    pub lat: LatencySummary,
}

pub fn conversations_text(r: &ConversationsReport) -> String {
    format!(
        "bench conversations: {} nodes; a user in {} conversations, {} syncs one at a time\n\n\
         /conversation/sync  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms\n",
        r.nodes, r.conversations, r.requests, r.lat.p50_ms, r.lat.p90_ms, r.lat.p99_ms, r.lat.max_ms,
    )
}

pub async fn run(global: &GlobalArgs, args: BenchConversationsArgs) -> anyhow::Result<Outcome> {
    tokio::select! {
        r = inner(global, args) => r,
        e = interrupted() => Err(e),
    }
}

async fn inner(global: &GlobalArgs, args: BenchConversationsArgs) -> anyhow::Result<Outcome> {
    eprintln!("wkctl: starting a local {}-node cluster", args.nodes);
    let mut cluster = super::local_cluster(args.wknode.as_deref(), args.nodes, &[]).await?;
    let admin = super::cluster_client(&cluster, global, Duration::from_secs(10))?;
    let clients = per_endpoint(&admin)?;
    let n = args.conversations;

    fill::for_each("channels", &clients, n, 64, |c, i| {
        let req = ChannelReq {
            channel_id: fill::channel_id(PREFIX, i),
            channel_type: CHANNEL_TYPE_GROUP,
            subscribers: vec![READER.to_string(), SENDER.to_string()],
            reset: 0,
        };
        async move { c.channel_create(&req).await.map(|_| ()) }
    })
    .await?;
    let (payload, tag) = (payload_pool(100).swap_remove(0), run_tag());
    fill::for_each("messages", &clients, n, 64, move |c, i| {
        let req = fill::message(
            SENDER,
            &fill::channel_id(PREFIX, i),
            format!("{tag}-{i}"),
            &payload,
        );
        async move { c.send(&req).await.map(|_| ()) }
    })
    .await?;

    let req = ConversationSyncReq {
        uid: READER.to_string(),
        version: 0,
        last_msg_seqs: String::new(),
        msg_count: 1,
    };
    // One untimed sync per node first (connections, caches).
    for c in &clients {
        c.conversation_sync(&req)
            .await
            .context("POST /conversation/sync")?;
    }
    let mut hist = new_histogram();
    for i in 0..args.requests {
        let c = &clients[(i % clients.len() as u64) as usize];
        let t = Instant::now();
        let convs = c
            .conversation_sync(&req)
            .await
            .context("POST /conversation/sync")?;
        let us = t.elapsed().as_micros() as u64;
        hist.record(us.max(1)).context("recording a latency")?;
        let unread_ones = convs
            .iter()
            .filter(|c| c.unread == 1 && c.last_msg_seq == 1)
            .count();
        anyhow::ensure!(
            convs.len() as u64 == n && unread_ones as u64 == n,
            "sync #{i} answered {} conversations ({unread_ones} with unread 1), expected {n}",
            convs.len()
        );
    }

    let report = ConversationsReport {
        nodes: args.nodes,
        conversations: n,
        requests: args.requests,
        lat: summarize(&hist),
    };
    super::report_exits(&mut cluster);
    output::print(global.output, &report, || conversations_text(&report))?;
    Ok(Outcome::Ok)
}
