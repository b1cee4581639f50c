//! Where a drill runs: a local cluster the tool starts itself (every fault possible, OS-level
//! included) or a remote one reached through `--endpoint` (HTTP drills only).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use wk_api::{Client, DrillReq};

use crate::local::LocalCluster;

/// Starts the local cluster of a drill: `n` nodes with `--allow-drills` and the scenario's
/// `node_args`. `WK_DRILL_KEEP=1` keeps the nodes' data dirs, to inspect a failed drill's
/// replicas.
pub async fn start_local(
    wknode: Option<&Path>,
    n: u64,
    node_args: &[String],
) -> anyhow::Result<LocalCluster> {
    LocalCluster::builder()
        .nodes(n)
        .wknode(wknode)
        .temp_prefix("wkctl-drill-")
        .keep_dir(std::env::var_os("WK_DRILL_KEEP").is_some())
        .args(["--allow-drills"])
        .args(node_args.iter().cloned())
        .start()
        .await
}

/// The cluster under test.
pub enum Target {
    Local(Box<LocalCluster>),
    /// Reached through `--endpoint`; node endpoints come from `/cluster/nodes`.
    Remote {
        endpoints: BTreeMap<u64, String>,
    },
}

impl Target {
    pub fn is_local(&self) -> bool {
        matches!(self, Target::Local(_))
    }

    pub fn local(&mut self, what: &str) -> anyhow::Result<&mut LocalCluster> {
        match self {
            Target::Local(c) => Ok(c),
            Target::Remote { .. } => bail!(
                "{what} needs a cluster started by wkctl itself (SIGKILL, SIGSTOP, wiping a data dir and \
                 starting nodes are OS-level faults); against --remote/--endpoint only the HTTP drills \
                 (isolate, partition, slow-disk, remove) are possible"
            ),
        }
    }

    pub fn endpoint(&self, id: u64) -> Option<String> {
        match self {
            Target::Local(c) => c.endpoint(id),
            Target::Remote { endpoints } => endpoints.get(&id).cloned(),
        }
    }

    /// `POST /cluster/drill` on node `id`.
    pub async fn drill(&self, admin: &Client, id: u64, req: &DrillReq) -> anyhow::Result<()> {
        let ep = self
            .endpoint(id)
            .with_context(|| format!("no endpoint for node {id}"))?;
        let one = admin.only(&ep).with_context(|| ep.clone())?;
        match one.drill(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.error_code() == Some(wk_api::ErrorCode::Forbidden) => bail!(
                "node {id} refused the drill ({e}); start the nodes with --allow-drills (and pass \
                 --admin-token if they have one)"
            ),
            Err(e) => Err(e).with_context(|| format!("POST /cluster/drill on node {id}")),
        }
    }
}
