//! `wkctl cluster join ID@ADDR`: admit a node started with `--seed`, following its metadata
//! catch-up and the move of the active channels (`--wait`, the default), or only starting the
//! join (`--no-wait`: the node that took the request runs it on).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use wk_api::JoinReq;

use crate::Outcome;
use crate::cli::{GlobalArgs, JoinArgs, OutputFormat};
use crate::output;

/// A join blocks until the node caught up on the metadata and the active channels moved.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(180);

/// `wkctl cluster join ID@ADDR [--wait|--no-wait]`: admit a node started with `--seed`;
/// `--no-wait` returns once the cluster took the join on.
pub async fn join(global: &GlobalArgs, args: JoinArgs) -> anyhow::Result<Outcome> {
    let (id, addr) = args
        .node
        .split_once('@')
        .with_context(|| format!("{:?} is not NODE_ID@CLUSTER_ADDR", args.node))?;
    let node_id: u64 = id
        .parse()
        .with_context(|| format!("node id {id:?} is not a number"))?;
    let req = JoinReq {
        node_id,
        cluster_addr: addr.to_string(),
        http_addr: args.http_addr.unwrap_or_default(),
        wait: !args.no_wait,
    };
    let client = crate::cmd::endpoint_client(global, JOIN_TIMEOUT)?;
    if args.no_wait {
        let resp = client.join(&req).await.context("POST /cluster/join")?;
        output::print(global.output, &resp, || {
            format!(
                "join of node {} started; `wkctl cluster status` lists it once it is admitted\n",
                resp.node_id
            )
        })?;
        return Ok(Outcome::Ok);
    }
    let progress = std::io::stderr().is_terminal() && global.output == OutputFormat::Text;
    let meta_bar = progress.then(|| output::progress_bar(0, "metadata", ""));
    // While the node blocks in the join, watch the new node's applied index close in on the
    // metadata leader's log.
    let watcher = meta_bar.clone().map(|pb| {
        let client = crate::cmd::client(global).ok();
        tokio::spawn(async move {
            let Some(client) = client else { return };
            loop {
                if let Ok(nodes) = client.nodes().await {
                    let leader_last = nodes.meta_leader_last_index().unwrap_or(0);
                    pb.set_length(leader_last);
                    if let Some(n) = nodes.nodes.iter().find(|n| n.id == node_id) {
                        pb.set_position(n.applied_index.min(leader_last));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let started = Instant::now();
    let result = client.join(&req).await;
    if let Some(w) = watcher {
        w.abort();
    }
    let resp = result.context("POST /cluster/join")?;
    if let Some(pb) = meta_bar {
        pb.set_position(pb.length().unwrap_or(0));
        pb.finish_with_message(format!("applied in {} ms", resp.metadata_ms));
        let ch = output::progress_bar(resp.active_migrated, "channels", "");
        ch.set_position(resp.active_migrated);
        ch.finish_with_message("active channels replicated");
    }
    output::print(global.output, &resp, || {
        format!(
            "node {} joined in {} ms ({}): metadata synced in {} ms, {} active channels now replicated \
             to it, {} inactive channels left in the backlog (wkctl backlog show)\n",
            resp.node_id,
            started.elapsed().as_millis(),
            if resp.voter { "voter" } else { "learner" },
            resp.metadata_ms,
            resp.active_migrated,
            resp.backlog
        )
    })?;
    Ok(Outcome::Ok)
}
