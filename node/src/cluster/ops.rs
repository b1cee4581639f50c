//! Operator actions: channel leader transfer, evacuating a node's leaderships, removing a
//! node (decommission), and fault-injection drills.
//!
//! A removal first marks the node decommissioned in the metadata (placement stops choosing
//! it), migrates every channel it holds (each migration adds the new replica and waits for it
//! to catch up before the old one leaves, so no channel drops below a quorum), and only when
//! none is left takes the node out of the metadata group.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use wk_api::{ChannelConfig, DrillReq, EvacuateResp, RemoveNodeResp, ReplicaMove};

use super::Node;
use super::rpc::AppRpc;
use crate::error::{NodeError, Result};
use crate::meta::{self, ChannelRecord, MetaCmd};
use crate::raft::{META_GROUP, NodeId};

const TRANSFER_WAIT: Duration = Duration::from_secs(5);

impl Node {
    /// Make `to` the channel's leader.
    pub async fn transfer_leader(&self, rec: &ChannelRecord, to: NodeId) -> Result<ChannelConfig> {
        if !rec.replicas.contains(&to) {
            return Err(NodeError::BadRequest(format!(
                "node {to} is not a replica of {}",
                rec.key
            )));
        }
        let deadline = Instant::now() + TRANSFER_WAIT;
        self.route(
            rec.group_id,
            &rec.replicas,
            AppRpc::TransferLeader(rec.clone(), to),
            deadline,
        )
        .await?
        .typed::<()>()?;
        Ok(self.channel_config(rec).await)
    }

    /// On the channel leader: hand leadership to `to` and wait until it has it.
    pub(super) async fn transfer_local(&self, rec: &ChannelRecord, to: NodeId) -> Result<()> {
        let raft = self.replica_group(rec).await?;
        if raft.metrics().borrow_watched().current_leader == Some(to) {
            return Ok(());
        }
        if !raft.is_leader() {
            return Err(NodeError::NotLeader {
                leader_hint: raft.metrics().borrow_watched().current_leader,
            });
        }
        raft.trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        raft.wait(Some(TRANSFER_WAIT))
            .metrics(|m| m.current_leader == Some(to), "leadership moved")
            .await
            .map_err(|e| NodeError::Unavailable(format!("leadership did not move to {to}: {e}")))?;
        Ok(())
    }

    /// Move every channel leadership off `node`, to another replica that answers.
    pub async fn evacuate(&self, node: NodeId) -> Result<EvacuateResp> {
        let led = self.groups_led_by(node).await?;
        let online: HashSet<NodeId> = self
            .cluster_nodes()
            .await?
            .nodes
            .iter()
            .filter(|n| n.online && n.id != node)
            .map(|n| n.id)
            .collect();
        let moved = futures::stream::iter(led.clone())
            .map(|rec| {
                let online = &online;
                async move {
                    let Some(to) = rec.replicas.iter().find(|r| online.contains(r)).copied() else {
                        return false;
                    };
                    self.transfer_leader(&rec, to).await.is_ok()
                }
            })
            .buffer_unordered(16)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await as u64;
        let stuck = self
            .groups_led_by(node)
            .await?
            .into_iter()
            .map(|r| r.key.to_string())
            .collect();
        Ok(EvacuateResp {
            node_id: node,
            led: led.len() as u64,
            moved,
            stuck,
        })
    }

    async fn groups_led_by(&self, node: NodeId) -> Result<Vec<ChannelRecord>> {
        let groups: Vec<crate::raft::GroupId> = self
            .ask(node, AppRpc::ActiveGroups, Duration::from_secs(2))
            .await?
            .typed()?;
        Ok(self
            .store
            .read(move |kv| {
                let mut out = Vec::new();
                for g in groups {
                    out.extend(meta::channel_by_group(kv, g)?);
                }
                Ok(out)
            })
            .await?)
    }

    /// Decommission `node` (see the module doc); with `dry_run` only the plan.
    pub async fn remove_node(&self, node: NodeId, dry_run: bool) -> Result<RemoveNodeResp> {
        let members = self.members();
        if !members.contains(&node) {
            return Err(NodeError::BadRequest(format!("node {node} is not a member")));
        }
        if members.len() <= 1 {
            return Err(NodeError::BadRequest("cannot remove the last node".into()));
        }
        let replication = self.replication;
        let plan: Vec<(ChannelRecord, Vec<NodeId>)> = self
            .store
            .read(move |kv| {
                let placeable: BTreeSet<NodeId> = meta::placeable(kv, &members)?
                    .into_iter()
                    .filter(|n| *n != node)
                    .collect();
                Ok(meta::channels(kv, None, usize::MAX)?
                    .into_iter()
                    .filter(|c| c.replicas.contains(&node))
                    .map(|c| {
                        let to =
                            meta::placement::place(&c.key.to_bytes(), placeable.iter().copied(), replication);
                        (c, to)
                    })
                    .collect())
            })
            .await?;
        let moves = plan
            .iter()
            .map(|(c, to)| ReplicaMove {
                channel_id: c.key.channel_id.clone(),
                channel_type: c.key.channel_type,
                from: c.replicas.clone(),
                to: to.clone(),
            })
            .collect();
        let mut resp = RemoveNodeResp {
            node_id: node,
            dry_run,
            plan: moves,
            moved: 0,
            stuck: Vec::new(),
            removed: false,
        };
        if dry_run {
            return Ok(resp);
        }
        tracing::info!(node_id = node, channels = plan.len(), "decommissioning node");
        self.meta_write(MetaCmd::SetDecommissioned { node, on: true })
            .await?;
        let results: Vec<(String, bool)> = futures::stream::iter(plan)
            .map(|(rec, to)| async move { (rec.key.to_string(), self.migrate(&rec, to).await.is_ok()) })
            .buffer_unordered(16)
            .collect()
            .await;
        resp.moved = results.iter().filter(|(_, ok)| *ok).count() as u64;
        resp.stuck = results
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(k, _)| k)
            .collect();
        if resp.stuck.is_empty() {
            let deadline = Instant::now() + Duration::from_secs(30);
            self.route(
                META_GROUP,
                &self.meta_voters(),
                AppRpc::RemoveMember(node),
                deadline,
            )
            .await?
            .typed::<()>()?;
            self.meta_write(MetaCmd::UnregisterNode(node)).await?;
            self.meta_write(MetaCmd::SetDecommissioned { node, on: false })
                .await?;
            resp.removed = true;
            tracing::info!(node_id = node, moved = resp.moved, "node removed");
            // Tell it, so it stops serving its stale copy now (it also finds out from its
            // applied membership, if it received the entry that removed it).
            if let Err(e) = self.ask(node, AppRpc::Removed, Duration::from_secs(2)).await {
                tracing::info!(node_id = node, error = %e, "telling the removed node: not reached");
            }
        }
        Ok(resp)
    }

    /// On the metadata leader: take `node` out of the metadata group, keeping the voters odd
    /// (a learner is promoted when one is available).
    pub(super) async fn remove_member(&self, node: NodeId) -> Result<()> {
        if !self.meta.is_leader() {
            return Err(NodeError::NotLeader {
                leader_hint: self.meta.metrics().borrow_watched().current_leader,
            });
        }
        let m = self.meta.metrics().borrow_watched().membership_config.clone();
        let voters: BTreeSet<NodeId> = m.membership().voter_ids().collect();
        let err = |e: openraft::error::RaftError<_, _>| NodeError::Unavailable(e.to_string());
        if node == self.id {
            // Removing the leader itself would leave the group leaderless until an election:
            // hand the leadership over first and let the new leader do the removal.
            let Some(to) = voters.iter().copied().find(|v| *v != node) else {
                return Err(NodeError::BadRequest("cannot remove the only voter".into()));
            };
            self.meta
                .trigger()
                .transfer_leader(to)
                .await
                .map_err(|e| NodeError::Internal(e.to_string()))?;
            let _ = self
                .meta
                .wait(Some(TRANSFER_WAIT))
                .metrics(|m| m.current_leader == Some(to), "metadata leadership moved")
                .await;
            return Err(NodeError::NotLeader {
                leader_hint: Some(to),
            });
        }
        if voters.contains(&node) {
            let mut next: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != node).collect();
            if next.len().is_multiple_of(2) {
                let learner = m
                    .membership()
                    .nodes()
                    .map(|(id, _)| *id)
                    .find(|id| *id != node && !voters.contains(id));
                next.extend(learner);
            }
            self.meta.change_membership(next, false).await.map_err(err)?;
        } else {
            self.meta
                .change_membership(ChangeMembers::RemoveNodes([node].into()), false)
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// Inject a fault into this node (`--allow-drills` only).
    pub async fn drill(&self, req: DrillReq) -> Result<()> {
        if !self.allow_drills {
            return Err(NodeError::Forbidden(
                "drills are disabled on this node (start it with --allow-drills)".into(),
            ));
        }
        tracing::warn!(node_id = self.id, ?req, "drill");
        // Each drill bumps the generation, so a timer of an older drill never heals a newer one.
        let generation = self.drill_generation.fetch_add(1, Ordering::SeqCst) + 1;
        match req {
            DrillReq::Crash => {
                // SIGKILL ourselves: exactly `kill -9` (no destructors, no flush, no core file).
                // SAFETY: getpid and kill have no preconditions.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                unreachable!("SIGKILL cannot be caught");
            }
            DrillReq::Isolate { peers, duration_ms } => {
                let peers: HashSet<NodeId> = if peers.is_empty() {
                    self.members().into_iter().filter(|n| *n != self.id).collect()
                } else {
                    peers.into_iter().collect()
                };
                self.transport.set_blocked(peers);
                self.heal_after(generation, duration_ms);
            }
            DrillReq::SlowDisk {
                delay_ms,
                duration_ms,
            } => {
                self.store.set_fsync_delay(delay_ms);
                self.heal_after(generation, duration_ms);
            }
            DrillReq::Heal => self.heal(),
        }
        Ok(())
    }

    fn heal(&self) {
        self.transport.set_blocked(HashSet::new());
        self.store.set_fsync_delay(0);
        tracing::warn!(node_id = self.id, "drill healed");
    }

    fn heal_after(&self, generation: u64, ms: u64) {
        let node = self.clone();
        self.spawn_task(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if node.drill_generation.load(Ordering::SeqCst) == generation {
                node.heal();
            }
        });
    }
}
