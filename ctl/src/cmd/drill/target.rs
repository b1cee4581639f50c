//! Where a drill runs: a local cluster the tool starts itself (every fault possible, OS-level
//! included) or a remote one reached through `--endpoint` (HTTP drills only).
//!
//! Invariants (from `cmd::local`): nodes are spawned only from the future `main` blocks on,
//! never from a spawned task; the `Nodes` guard owns every child, and a paused (SIGSTOPped)
//! node is continued before it is stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use wk_api::{Client, DrillReq};

use crate::cmd::local::{NodePlan, Nodes, find_wknode, init_nodes, log_tail, plan_free_ports, wait_ready};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A local cluster of `wknode` children started with `--allow-drills`.
pub struct LocalCluster {
    /// Owns the children; dropped before the temp dir.
    nodes: Nodes,
    bin: PathBuf,
    /// Every node ever started, by id (removed ones stay, for their logs).
    plans: BTreeMap<u64, NodePlan>,
    /// Flags every node gets (`--allow-drills`, the scenario's `node_args`).
    extra: Vec<String>,
    /// How each node was started first (`--init-nodes` or `--seed`), for restarts.
    boot: BTreeMap<u64, Vec<String>>,
    /// Nodes currently SIGSTOPped.
    paused: BTreeSet<u64>,
    /// Holds the data dirs; dropped last.
    dir: tempfile::TempDir,
}

impl LocalCluster {
    pub async fn start(wknode: Option<&Path>, n: u64, node_args: &[String]) -> anyhow::Result<LocalCluster> {
        let bin = find_wknode(wknode)?;
        let mut dir = tempfile::Builder::new()
            .prefix("wkctl-drill-")
            .tempdir()
            .context("creating a temporary data directory")?;
        // WK_DRILL_KEEP=1 keeps the nodes' data dirs, to inspect a failed drill's replicas.
        if std::env::var_os("WK_DRILL_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("wkctl: keeping the data dirs in {}", dir.path().display());
        }
        let plan = plan_free_ports(n, dir.path())?;
        let init = init_nodes(&plan);
        let mut extra = vec!["--allow-drills".to_string()];
        extra.extend(node_args.iter().cloned());
        let mut c = LocalCluster {
            nodes: Nodes::default(),
            bin,
            plans: plan.iter().map(|p| (p.id, p.clone())).collect(),
            extra,
            boot: plan
                .iter()
                .map(|p| (p.id, vec!["--init-nodes".to_string(), init.clone()]))
                .collect(),
            paused: BTreeSet::new(),
            dir,
        };
        let mut waiting = Vec::new();
        for p in &plan {
            waiting.push((p.clone(), c.spawn(p.id)?));
        }
        for (p, rx) in waiting {
            wait_ready(&p, rx, READY_TIMEOUT).await?;
        }
        Ok(c)
    }

    fn spawn(
        &mut self,
        id: u64,
    ) -> anyhow::Result<tokio::sync::oneshot::Receiver<anyhow::Result<wk_api::ReadyLine>>> {
        let plan = self
            .plans
            .get(&id)
            .with_context(|| format!("no node {id}"))?
            .clone();
        let mut args = self.boot.get(&id).cloned().unwrap_or_default();
        args.extend(self.extra.iter().cloned());
        self.nodes.spawn_args(&self.bin, &plan, &args)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.plans.keys().copied().collect()
    }

    pub fn endpoint(&self, id: u64) -> Option<String> {
        self.plans
            .get(&id)
            .map(|p| format!("http://127.0.0.1:{}", p.http_port))
    }

    pub fn cluster_addr(&self, id: u64) -> Option<String> {
        self.plans
            .get(&id)
            .map(|p| format!("127.0.0.1:{}", p.cluster_port))
    }

    pub fn log_path(&self, id: u64) -> Option<PathBuf> {
        self.plans.get(&id).map(NodePlan::log_path)
    }

    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.paused.remove(&id);
        self.nodes.kill(id)
    }

    /// SIGTERM and wait (SIGKILL after `grace`).
    pub fn terminate(&mut self, id: u64, grace: Duration) -> anyhow::Result<()> {
        if self.paused.remove(&id) {
            self.nodes.signal(id, libc::SIGCONT)?;
        }
        self.nodes.signal(id, libc::SIGTERM)?;
        let deadline = std::time::Instant::now() + grace;
        while self.nodes.is_running(id) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.nodes.is_running(id) {
            return self.nodes.kill(id);
        }
        // Reaped already: `kill` would fail; forget it through `kill`'s bookkeeping.
        let _ = self.nodes.kill(id);
        Ok(())
    }

    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let plan = self
            .plans
            .get(&id)
            .with_context(|| format!("no node {id}"))?
            .clone();
        let rx = self.spawn(id)?;
        wait_ready(&plan, rx, READY_TIMEOUT).await?;
        Ok(())
    }

    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.nodes.signal(id, libc::SIGSTOP)?;
        self.paused.insert(id);
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.paused.remove(&id);
        self.nodes.signal(id, libc::SIGCONT)
    }

    pub fn resume_all(&mut self) {
        for id in std::mem::take(&mut self.paused) {
            let _ = self.nodes.signal(id, libc::SIGCONT);
        }
    }

    /// Deletes everything in the node's data dir except its log (a lost disk; the log is
    /// evidence). The node must be stopped.
    pub fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        let plan = self.plans.get(&id).with_context(|| format!("no node {id}"))?;
        for e in std::fs::read_dir(&plan.dir).with_context(|| format!("reading {}", plan.dir.display()))? {
            let p = e?.path();
            if p == plan.log_path() {
                continue;
            }
            if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            }
            .with_context(|| format!("removing {}", p.display()))?;
        }
        Ok(())
    }

    /// From now on node `id` starts with `--seed SEED_ID@ADDR` (an empty node that joins).
    pub fn boot_with_seed(&mut self, id: u64, seed: u64) -> anyhow::Result<()> {
        let addr = self
            .cluster_addr(seed)
            .with_context(|| format!("no node {seed}"))?;
        self.boot
            .insert(id, vec!["--seed".to_string(), format!("{seed}@{addr}")]);
        Ok(())
    }

    /// Lays out node `max id + 1` on free ports; `start_new` starts it.
    pub fn plan_new(&mut self) -> anyhow::Result<u64> {
        let id = self.plans.keys().max().copied().unwrap_or(0) + 1;
        let mut p = plan_free_ports(1, self.dir.path())?.remove(0);
        p.id = id;
        p.dir = self.dir.path().join(id.to_string());
        self.plans.insert(id, p);
        Ok(id)
    }

    /// Notices for nodes that exited on their own, with their log tails.
    pub fn exits(&mut self) -> Vec<String> {
        self.nodes
            .reap()
            .into_iter()
            .map(|n| {
                let id = n
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0);
                match self.log_path(id) {
                    Some(p) => format!("{n}\n{}", log_tail(&p, 30)),
                    None => n,
                }
            })
            .collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.resume_all();
    }
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
