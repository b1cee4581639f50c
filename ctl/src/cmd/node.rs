//! `wkctl node list|show|evacuate-leaders|remove`: one node at a time.
//!
//! `evacuate-leaders` and `remove` are single blocking calls on the node
//! (`POST /cluster/nodes/{id}/evacuate|remove`); while they run, `wkctl` polls the cluster
//! views to show progress (an indicatif bar on a terminal, plain lines otherwise, both on
//! stderr), and prints the node's final answer on stdout.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wk_api::{Client, NodesResp};

use super::channel::{self, PAGE};
use crate::Outcome;
use crate::cli::{GlobalArgs, RemoveArgs};
use crate::output;
use crate::render::{self, NodeDetail};

/// Upper bound for the blocking operator calls (every leadership moved, every replica
/// migrated); `--timeout` still bounds each progress poll.
const LONG_OP_TIMEOUT: Duration = Duration::from_secs(3600);
/// How often progress is polled while a blocking call runs.
const POLL: Duration = Duration::from_millis(500);
/// `node remove --wait` lists the channels still on the node when nothing moved for this long.
const STALL: Duration = Duration::from_secs(30);

/// `wkctl node list`.
pub async fn list(global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let resp = super::client(global)?
        .nodes()
        .await
        .context("GET /cluster/nodes")?;
    output::print(global.output, &resp, || render::node_list_text(&resp))?;
    Ok(Outcome::Ok)
}

fn find(nodes: &NodesResp, id: u64) -> anyhow::Result<wk_api::NodeStatus> {
    match nodes.nodes.iter().find(|n| n.id == id) {
        Some(n) => Ok(n.clone()),
        None => {
            let known: Vec<u64> = nodes.nodes.iter().map(|n| n.id).collect();
            bail!("node {id} is not in the cluster (nodes: {})", render::ids(&known))
        }
    }
}

/// `wkctl node show ID`: the node's row and the channels it replicates (and leads).
pub async fn show(global: &GlobalArgs, id: u64) -> anyhow::Result<Outcome> {
    let client = super::client(global)?;
    let nodes = client.nodes().await.context("GET /cluster/nodes")?;
    let node = find(&nodes, id)?;
    let list = client
        .channels_all(u64::MAX, PAGE)
        .await
        .context("GET /cluster/channels")?;
    let mine: Vec<_> = list
        .channels
        .into_iter()
        .filter(|c| c.replicas.contains(&id))
        .collect();
    let mut channels = Vec::new();
    let mut failed = 0;
    for (info, res) in channel::replicas_of(&client, mine).await {
        match res {
            Ok(c) => channels.push(c),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "wkctl: channel {}: {e}",
                    channel::key(&info.channel_id, info.channel_type)
                );
            }
        }
    }
    let detail = NodeDetail {
        meta_leader: nodes.meta_leader == Some(id),
        node,
        channels,
    };
    output::print(global.output, &detail, || render::node_show_text(&detail))?;
    Ok(if failed > 0 {
        Outcome::CheckFailed
    } else {
        Outcome::Ok
    })
}

/// `wkctl node evacuate-leaders ID`: exit 1 when the node still leads a channel at the end.
pub async fn evacuate(global: &GlobalArgs, id: u64) -> anyhow::Result<Outcome> {
    let client = super::client(global)?;
    let before = find(&client.nodes().await.context("GET /cluster/nodes")?, id)?;
    eprintln!(
        "node {id} leads {} channels; moving every leadership off it...",
        before.channels_led
    );
    let pb = std::io::stderr()
        .is_terminal()
        .then(|| output::progress_bar(before.channels_led, &format!("node {id}"), "moved"));
    let watcher = {
        let (client, pb, led) = (client.clone(), pb.clone(), before.channels_led);
        tokio::spawn(async move {
            let mut last = led;
            loop {
                tokio::time::sleep(POLL).await;
                let Ok(nodes) = client.nodes().await else { continue };
                let Some(n) = nodes.nodes.iter().find(|n| n.id == id) else {
                    continue;
                };
                match &pb {
                    Some(pb) => pb.set_position(led.saturating_sub(n.channels_led)),
                    None if n.channels_led != last => {
                        eprintln!("node {id} still leads {} channels", n.channels_led)
                    }
                    None => {}
                }
                last = n.channels_led;
            }
        })
    };
    let result = super::client_with_timeout(global, LONG_OP_TIMEOUT)?
        .evacuate(id)
        .await;
    watcher.abort();
    let resp = result.with_context(|| format!("POST /cluster/nodes/{id}/evacuate"))?;
    if let Some(pb) = pb {
        pb.set_length(resp.led);
        pb.set_position(resp.moved);
        pb.finish_with_message(if resp.stuck.is_empty() {
            "done"
        } else {
            "some stuck"
        });
    }
    output::print(global.output, &resp, || render::evacuate_text(&resp))?;
    Ok(if resp.stuck.is_empty() {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

/// Channels whose replica set still includes `id`.
async fn channels_on(client: &Client, id: u64) -> anyhow::Result<Vec<String>> {
    let list = client
        .channels_all(u64::MAX, PAGE)
        .await
        .context("GET /cluster/channels")?;
    Ok(list
        .channels
        .iter()
        .filter(|c| c.replicas.contains(&id))
        .map(|c| channel::key(&c.channel_id, c.channel_type))
        .collect())
}

/// `wkctl node remove ID`: decommission. Exit 1 when a channel is stuck on the node or the
/// node did not leave the metadata group.
pub async fn remove(global: &GlobalArgs, args: RemoveArgs) -> anyhow::Result<Outcome> {
    let id = args.node_id;
    let client = super::client(global)?;
    if args.dry_run {
        let plan = client
            .remove_node(id, true)
            .await
            .with_context(|| format!("POST /cluster/nodes/{id}/remove (dry run)"))?;
        output::print(global.output, &plan, || render::remove_plan_text(&plan))?;
        return Ok(Outcome::Ok);
    }
    find(&client.nodes().await.context("GET /cluster/nodes")?, id)?;
    let initial = channels_on(&client, id).await?.len() as u64;
    eprintln!("decommissioning node {id}: {initial} channel replicas to move off it...");
    let pb = (args.wait && std::io::stderr().is_terminal())
        .then(|| output::progress_bar(initial, &format!("node {id}"), "replicas moved"));
    let watcher = args.wait.then(|| {
        let (client, pb) = (client.clone(), pb.clone());
        tokio::spawn(async move {
            let (mut last, mut since) = (initial, Instant::now());
            let mut reported_stall = false;
            loop {
                tokio::time::sleep(POLL).await;
                let Ok(left) = channels_on(&client, id).await else {
                    continue;
                };
                let remaining = left.len() as u64;
                match &pb {
                    Some(pb) => {
                        pb.set_position(initial.saturating_sub(remaining));
                        pb.set_message(format!("{remaining} left"));
                    }
                    None if remaining != last => {
                        eprintln!("node {id}: {remaining} of {initial} channel replicas left")
                    }
                    None => {}
                }
                if remaining != last {
                    (last, since, reported_stall) = (remaining, Instant::now(), false);
                } else if remaining > 0 && !reported_stall && since.elapsed() >= STALL {
                    reported_stall = true;
                    let shown = left.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
                    let more = if left.len() > 10 {
                        format!(" and {} more", left.len() - 10)
                    } else {
                        String::new()
                    };
                    let msg = format!(
                        "no progress for {}s; still on node {id}: {shown}{more}",
                        STALL.as_secs()
                    );
                    match &pb {
                        Some(pb) => pb.println(msg),
                        None => eprintln!("{msg}"),
                    }
                }
            }
        })
    });
    let result = super::client_with_timeout(global, LONG_OP_TIMEOUT)?
        .remove_node(id, false)
        .await;
    if let Some(w) = watcher {
        w.abort();
    }
    let resp = result.with_context(|| format!("POST /cluster/nodes/{id}/remove"))?;
    if let Some(pb) = pb {
        pb.set_position(resp.moved.min(initial));
        pb.finish_with_message(if resp.stuck.is_empty() {
            "done"
        } else {
            "some stuck"
        });
    }
    output::print(global.output, &resp, || render::remove_text(&resp))?;
    Ok(if resp.removed && resp.stuck.is_empty() {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}
