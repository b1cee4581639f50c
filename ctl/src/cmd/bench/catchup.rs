//! `wkctl bench catchup`: how long a fresh node needs to hold the metadata and an active
//! channel (the peer harness's "fresh 4th member" figure).
//!
//! The local cluster runs with `--channel-replicas <nodes + 1>`, so every channel is placed
//! on every node, the joining one included: the filled channel must move to the new node,
//! whatever the placement hash says. The new node starts with `--seed` (state `joining`) and
//! is admitted with `POST /cluster/join`, the operator's path (`wkctl cluster join`). Both
//! clocks start at that request (the peers' "trigger"):
//! - **metadata**: until the new node's applied index of the metadata group reaches the
//!   leader's last log index taken before the join (so it holds every user);
//! - **channel**: until the new node's replica of the channel reports the last seq.
//!
//! Both are polled every 5 ms from the bench, concurrently with the join call, so each
//! figure carries up to one poll interval plus one HTTP round of overshoot.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use wk_api::{CHANNEL_TYPE_GROUP, Client};

use super::fill;
use crate::Outcome;
use crate::cli::{BenchCatchupArgs, GlobalArgs};
use crate::output;
use crate::probe::{create_channels, interrupted, per_endpoint};
use crate::wait::{self, Poll, wait_for};

/// The channel that is filled.
const CHANNEL: &str = "bench-catchup";
/// How often the new node's progress is polled.
const POLL: Duration = Duration::from_millis(5);
/// Longest wait for the new node to catch up.
const CATCHUP_TIMEOUT: Duration = Duration::from_secs(300);

/// What `bench catchup --output json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatchupReport {
    /// Nodes before the join.
    pub nodes: u64,
    pub users: u64,
    pub messages: u64,
    pub size: u32,
    /// Loading the users, seconds (and the rate, for context).
    pub users_load_s: f64,
    pub messages_load_s: f64,
    /// The metadata group's last log index the new node had to reach.
    pub meta_target_index: u64,
    /// `POST /cluster/join` to the new node holding all metadata, seconds.
    pub metadata_s: f64,
    /// `POST /cluster/join` to the new node's replica holding every message, seconds.
    pub channel_s: f64,
    /// Duration of the join call itself (it blocks until active channels moved), seconds.
    pub join_call_s: f64,
    /// What the node reported: its own metadata catch-up time, ms.
    pub join_metadata_ms: u64,
}

pub fn catchup_text(r: &CatchupReport) -> String {
    format!(
        "bench catchup: {} nodes + 1 fresh node; {} users, {} messages x {} B in one channel\n\
         loaded users in {:.1} s ({:.0}/s), messages in {:.1} s ({:.0}/s)\n\n\
         new node holds all metadata    {:.3} s after POST /cluster/join (meta index {})\n\
         new node holds the channel     {:.3} s after POST /cluster/join\n\
         join call returned             {:.3} s (node-reported metadata sync {} ms)\n",
        r.nodes,
        r.users,
        r.messages,
        r.size,
        r.users_load_s,
        r.users as f64 / r.users_load_s.max(1e-9),
        r.messages_load_s,
        r.messages as f64 / r.messages_load_s.max(1e-9),
        r.metadata_s,
        r.meta_target_index,
        r.channel_s,
        r.join_call_s,
        r.join_metadata_ms,
    )
}

pub async fn run(global: &GlobalArgs, args: BenchCatchupArgs) -> anyhow::Result<Outcome> {
    tokio::select! {
        r = inner(global, args) => r,
        e = interrupted() => Err(e),
    }
}

async fn inner(global: &GlobalArgs, args: BenchCatchupArgs) -> anyhow::Result<Outcome> {
    eprintln!(
        "wkctl: starting a local {}-node cluster (--channel-replicas {}: every channel on every node)",
        args.nodes,
        args.nodes + 1
    );
    let extra = vec!["--channel-replicas".to_string(), (args.nodes + 1).to_string()];
    let mut cluster = super::local_cluster(args.wknode.as_deref(), args.nodes, &extra).await?;
    let admin = super::cluster_client(&cluster, global, Duration::from_secs(10))?;
    let clients = per_endpoint(&admin)?;
    let uid = "bench".to_string();
    create_channels(&admin, &[CHANNEL.to_string()], &uid).await?;

    eprintln!("wkctl: registering {} users", args.users);
    let users_load = fill::users(&clients, "u", args.users, args.inflight as usize).await?;
    eprintln!("wkctl: sending {} messages to {CHANNEL}", args.messages);
    let messages_load = fill::fill_channel(&clients, CHANNEL, args.messages, &uid, args.size, 4).await?;

    let nodes = admin.nodes().await.context("GET /cluster/nodes")?;
    let meta_target_index = nodes
        .meta_leader_last_index()
        .context("no metadata leader in /cluster/nodes")?;
    let seq_target = admin
        .channel_replicas(CHANNEL, CHANNEL_TYPE_GROUP)
        .await
        .context("GET /cluster/channels/../replicas")?
        .replicas
        .iter()
        .map(|r| r.message_seq)
        .max()
        .unwrap_or(0);

    eprintln!("wkctl: starting a fresh node with --seed 1");
    let new_id = cluster.add_seeded(1).await?.node_id;
    let endpoint = cluster.endpoint(new_id).context("the new node's endpoint")?;
    let new_node = admin.only(&endpoint).context("new node endpoint")?;
    let joiner = Client::new(
        &[cluster.endpoint(1).context("node 1's endpoint")?],
        crate::cmd::cluster::join::JOIN_TIMEOUT,
    )
    .context("local endpoints")?
    .with_token(global.admin_token.clone());
    let req = cluster.join_req(new_id).context("the new node's addresses")?;
    let t0 = Instant::now();
    let join = tokio::spawn(async move {
        let r = joiner.join(&req).await;
        (r, Instant::now())
    });

    // Both clocks run at once; each stops when its condition first holds.
    let poll = Poll::new(CATCHUP_TIMEOUT, POLL);
    let metadata = wait_for(
        format!("node {new_id} to apply the metadata log to index {meta_target_index}"),
        poll,
        || async {
            let n = new_node.nodes().await.ok()?;
            n.nodes
                .iter()
                .any(|s| s.id == new_id && s.applied_index >= meta_target_index)
                .then(|| t0.elapsed())
        },
    );
    let channel = async {
        wait::caught_up(&admin, CHANNEL, CHANNEL_TYPE_GROUP, new_id, seq_target, poll).await?;
        anyhow::Ok(t0.elapsed())
    };
    let (metadata, channel) = tokio::join!(metadata, channel);
    let (metadata, channel) = (Some(metadata?), Some(channel?));
    let (resp, join_done) = join.await.context("join task")?;
    let resp = resp.context("POST /cluster/join")?;

    let report = CatchupReport {
        nodes: args.nodes,
        users: args.users,
        messages: seq_target,
        size: args.size,
        users_load_s: users_load.as_secs_f64(),
        messages_load_s: messages_load.as_secs_f64(),
        meta_target_index,
        metadata_s: metadata.map(|d| d.as_secs_f64()).unwrap_or_default(),
        channel_s: channel.map(|d| d.as_secs_f64()).unwrap_or_default(),
        join_call_s: join_done.saturating_duration_since(t0).as_secs_f64(),
        join_metadata_ms: resp.metadata_ms,
    };
    super::report_exits(&mut cluster);
    output::print(global.output, &report, || catchup_text(&report))?;
    Ok(Outcome::Ok)
}
