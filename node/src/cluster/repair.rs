//! Repairing a replica whose copy of a channel failed its checksums (`integrity`).
//!
//! In Raft terms the only safe repair is a membership change: wiping a voter's log and vote
//! in place could let it vote twice in a term or forget entries it acknowledged. So:
//! 1. The corrupt replica stops the group (it refuses to start while corrupt); if it led the
//!    group it first hands leadership to another replica, so nothing waits for an election.
//! 2. It asks the channel leader (routing skips itself) to repair it. The leader removes it
//!    from the group (the migration machinery of `cluster::scale`: joint consensus, the
//!    metadata records the smaller replica set), then tells it to drop the group: its rows go
//!    and so does its corrupt mark.
//! 3. The leader migrates the channel back to its full replica set: the replica comes back as
//!    a fresh learner, catches up from the leader's log (logs are never compacted), and is
//!    promoted.
//!
//! If no healthy replica can lead (a quorum is corrupt or down), the repair keeps failing
//! and says so in the log; the corrupt replica still serves nothing.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;

use super::Node;
use super::rpc::AppRpc;
use crate::error::{NodeError, Result};
use crate::meta::{self, ChannelRecord};
use crate::raft::{GroupId, META_GROUP, NodeId};

/// How often the node looks for newly found corruption.
const TICK: Duration = Duration::from_millis(200);
/// One repair attempt: two migrations, each bounded by the migration timeout.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(75);
/// Pause before a failed repair is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// How long a corrupt leader waits for its leadership to move before stopping anyway.
const HANDOVER_WAIT: Duration = Duration::from_secs(2);

impl Node {
    /// Runs on every node: repairs each group found corrupt here, one attempt at a time.
    pub(super) async fn repair_corrupt(self) {
        // Groups with an attempt under way. std mutex: only inserted into and removed from.
        let running: std::sync::Arc<Mutex<HashSet<GroupId>>> = Default::default();
        let mut told_meta = false;
        loop {
            tokio::time::sleep(TICK).await;
            for (g, c) in crate::integrity::corrupt_groups() {
                if g == META_GROUP {
                    if !told_meta {
                        tracing::error!(reason = %c.reason, "the metadata group's log is corrupt on this node; it cannot be repaired automatically");
                        told_meta = true;
                    }
                    continue;
                }
                if !running.lock().expect("repair set poisoned").insert(g) {
                    continue;
                }
                let (node, running) = (self.clone(), running.clone());
                self.spawn_task(async move {
                    if let Err(e) = node.repair_own(g).await {
                        tracing::error!(group = g, error = %e, "repair of the corrupt replica failed; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                    running.lock().expect("repair set poisoned").remove(&g);
                });
            }
        }
    }

    /// Steps 1 and 2 of the module doc, on the corrupt replica.
    async fn repair_own(&self, g: GroupId) -> Result<()> {
        self.store.write(move |w| crate::integrity::persist(w, g)).await?;
        let Some(rec) = self.store.read(move |r| meta::channel_by_group(r, g)).await? else {
            // No channel owns the group any more: its rows are garbage, not a risk.
            return self.drop_group(g).await;
        };
        if let Some(raft) = self.live_group(g) {
            let m = raft.metrics().borrow_watched().clone();
            if m.current_leader == Some(self.id)
                && let Some(to) = rec.replicas.iter().find(|r| **r != self.id).copied()
            {
                tracing::warn!(group = g, to, "corrupt replica hands over its leadership");
                if raft.trigger().transfer_leader(to).await.is_ok() {
                    let _ = raft
                        .wait(Some(HANDOVER_WAIT))
                        .metrics(|m| m.current_leader != Some(self.id), "leadership moved")
                        .await;
                }
            }
            self.hibernate(g).await;
        }
        let healthy: Vec<NodeId> = rec.replicas.iter().copied().filter(|r| *r != self.id).collect();
        if healthy.is_empty() {
            return Err(NodeError::Corrupt(format!(
                "channel {} has no other replica to repair from",
                rec.key
            )));
        }
        tracing::warn!(channel = %rec.key, group = g, "asking the channel leader to replace this corrupt replica");
        let deadline = Instant::now() + REPAIR_TIMEOUT;
        let r: Option<ChannelRecord> = self
            .route(g, &healthy, AppRpc::Repair(rec.clone(), self.id), deadline)
            .await?
            .typed()?;
        let r = r.ok_or_else(|| NodeError::Internal("a repair answered no record".into()))?;
        tracing::info!(channel = %rec.key, replicas = ?r.replicas, "corrupt replica replaced by a fresh copy");
        Ok(())
    }

    /// Steps 2 and 3 of the module doc, on the channel leader: replace `bad`'s copy.
    pub(super) async fn repair_local(&self, rec: &ChannelRecord, bad: NodeId) -> Result<ChannelRecord> {
        if bad == self.id {
            return Err(NodeError::NotLeader { leader_hint: None });
        }
        // Decide on the current record: an earlier attempt may have got past step 2.
        let key = rec.key.clone();
        let current = self
            .store
            .read(move |r| meta::get_channel(r, &key))
            .await?
            .ok_or_else(|| NodeError::ChannelNotFound(rec.key.to_string()))?;
        let raft = self.replica_group(&current).await?;
        if !raft.is_leader() {
            return Err(NodeError::NotLeader {
                leader_hint: raft.metrics().borrow_watched().current_leader,
            });
        }
        let full: Vec<NodeId> = if current.replicas.contains(&bad) {
            current.replicas.clone()
        } else {
            current.replicas.iter().copied().chain([bad]).collect()
        };
        let without: Vec<NodeId> = full.iter().copied().filter(|n| *n != bad).collect();
        let reduced = if current.replicas.contains(&bad) {
            tracing::warn!(channel = %rec.key, node = bad, "removing a corrupt replica");
            self.migrate_local(&current, without, false).await?
        } else {
            current
        };
        // The removed replica must have deleted its copy before it may rejoin: a copy that
        // kept its log would keep its corrupt rows. The migration asked it already; if that
        // did not arrive it is still marked corrupt (so nothing of the group runs there) and
        // is asked again. An unmarked replica is never asked: a fresh copy may already run
        // there, and deleting rows under a running group would tear its state.
        let status: super::status::GroupStatus = self
            .ask(bad, AppRpc::GroupStatus(reduced.clone()), Duration::from_secs(5))
            .await?
            .typed()?;
        if status.corrupt.is_some() {
            self.ask(bad, AppRpc::DropGroup(rec.group_id), Duration::from_secs(5))
                .await?
                .typed::<()>()?;
        }
        tracing::info!(channel = %rec.key, node = bad, "re-adding the replica as a fresh learner");
        self.migrate_local(&reduced, full, false).await
    }
}
