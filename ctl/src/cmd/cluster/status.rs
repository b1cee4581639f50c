//! `wkctl cluster ...`: read-only views of the cluster.

use std::time::Duration;

use anyhow::Context;
use wk_api::{Client, NodeStatus, NodesResp, Role};

use crate::Outcome;
use crate::cli::GlobalArgs;
use crate::output;

/// How long a removed node's `/health` may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// `wkctl cluster status`: GET /cluster/nodes, rendered; exit 1 when the cluster is degraded.
/// A node given as an endpoint that answers `removed` (taken out of the cluster, still
/// running) is listed with role `removed`: the members no longer list it.
pub async fn status(global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let client = crate::cmd::client(global)?;
    let mut resp = client.nodes().await.context("GET /cluster/nodes")?;
    add_removed(&client, &mut resp).await;
    output::print(global.output, &resp, || output::nodes_text(&resp))?;
    Ok(if output::verdict(&resp).healthy {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

/// Asks every endpoint's `/health` (concurrently) and adds those that say `removed` to
/// `resp`, unless the members still list them.
async fn add_removed(client: &Client, resp: &mut NodesResp) {
    let mut asks = tokio::task::JoinSet::new();
    for ep in client.endpoints() {
        let Ok(one) = client.only(&ep) else { continue };
        asks.spawn(async move {
            let h = tokio::time::timeout(HEALTH_TIMEOUT, one.health())
                .await
                .ok()?
                .ok()?;
            (h.state == "removed").then_some((h.node_id, ep))
        });
    }
    while let Some(answer) = asks.join_next().await {
        let Ok(Some((id, ep))) = answer else { continue };
        if resp.nodes.iter().any(|n| n.id == id) {
            continue;
        }
        let http_addr = ep
            .split_once("://")
            .map_or(ep.as_str(), |(_, rest)| rest)
            .to_string();
        resp.nodes.push(NodeStatus {
            id,
            http_addr,
            cluster_addr: String::new(),
            tcp_addr: String::new(),
            ws_addr: String::new(),
            online: true,
            role: Role::Removed,
            term: 0,
            last_log_index: 0,
            applied_index: 0,
            channels_led: 0,
            channels_replicated: 0,
            connections: 0,
        });
    }
    resp.nodes.sort_by_key(|n| n.id);
}
