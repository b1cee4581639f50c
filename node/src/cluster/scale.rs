//! Scale-out: admitting a node, moving channel replicas to their new placement, and the sync
//! backlog.
//!
//! After a join the placement of some channels includes the new node. Channels that are
//! active (their group runs) migrate at once; hibernated ones are left alone and form the
//! sync backlog: every channel whose replica set differs from its placement. The backlog is
//! derived from the metadata, so it is exactly as durable as the metadata, and it keeps every
//! old replica until the migration finishes, so nothing is at risk while a channel waits.
//! A channel leaves the backlog when it becomes active (it migrates before it serves) or when
//! the drain (a durable request, run by whichever node leads the metadata group) reaches it.
//!
//! The drain moves hibernated channels cold, many per round trip, without starting their
//! groups (`cold`); the rest, and every on-demand migration, go through Raft.
//!
//! A migration through Raft runs on the channel leader: add each new replica as a learner
//! and wait until it has caught up, change the voters to the placement (joint consensus,
//! never below a quorum of either configuration), tell removed replicas to drop the group,
//! then record the new replica set in the metadata. Every step is idempotent, so an
//! interrupted migration is simply run again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use openraft::async_runtime::WatchReceiver;
use wk_api::{Backlog, BacklogEntry, BacklogTarget, DrainStatus, JoinResp};

use super::Node;
use super::rpc::{AppReply, AppRpc};
use crate::channel::ChannelKey;
use crate::error::{NodeError, Result};
use crate::meta::{self, ChannelRecord, MetaCmd, NodeRecord};
use crate::raft::{GroupId, META_GROUP, NodeId, Peer};

/// A channel's new replica set waiting for the next metadata write, and who waits for it.
pub(super) type ReplicaUpdate = (
    ChannelKey,
    Vec<NodeId>,
    tokio::sync::oneshot::Sender<Result<Option<ChannelRecord>>>,
);

/// A join waits this long for the new node to catch up on the metadata.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// One channel migration may take this long before it is retried later.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Migrations running at once during a rebalance or drain.
const MIGRATE_PARALLEL: usize = 16;
/// Most backlogged channels one drain round takes on before it reads the backlog again.
const DRAIN_ROUND: usize = 1024;

/// Wait until `node` has replicated everything `raft` (the leader) had when asked.
/// openraft's blocking `add_learner` only waits until the lag is under its replication
/// threshold, which a small log satisfies before the learner was ever reached.
async fn caught_up(raft: &crate::raft::Raft, node: NodeId, timeout: Duration) -> Result<()> {
    let target = raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
    raft.wait(Some(timeout))
        .metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&node).cloned().flatten())
                    .is_some_and(|matched| matched.index >= target)
            },
            "the new replica caught up",
        )
        .await
        .map(|_| ())
        .map_err(|e| NodeError::Unavailable(format!("node {node} did not catch up: {e}")))
}

impl Node {
    /// Every node id in the metadata membership (voters and learners).
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.meta
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    }

    /// Admit a node through the metadata leader.
    pub async fn join(&self, node: NodeRecord) -> Result<JoinResp> {
        // Longer than the leader's own catch-up wait, so its reason comes back, not a timeout.
        let deadline = Instant::now() + JOIN_TIMEOUT + Duration::from_secs(5);
        self.route(META_GROUP, &self.meta_voters(), AppRpc::Join(node), deadline)
            .await?
            .typed()
    }

    /// On the metadata leader: learner, catch-up, voter if the odd-count rule allows, then
    /// migrate the active channels whose placement now includes it.
    pub(super) async fn admit(&self, node: NodeRecord) -> Result<JoinResp> {
        if !self.meta.is_leader() {
            return Err(NodeError::NotLeader {
                leader_hint: self.meta.metrics().borrow_watched().current_leader,
            });
        }
        tracing::info!(node_id = node.id, cluster_addr = %node.cluster_addr, "admitting node");
        self.transport.set_addr(node.id, &node.cluster_addr);
        let started = Instant::now();
        if !self.members().contains(&node.id) {
            let peer = Peer {
                cluster_addr: node.cluster_addr.clone(),
            };
            self.meta
                .add_learner(node.id, peer, false)
                .await
                .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        }
        if let Err(e) = caught_up(&self.meta, node.id, JOIN_TIMEOUT).await {
            // Never leave a member that cannot be reached (wrong secret, wrong address).
            let gone = openraft::ChangeMembers::RemoveNodes([node.id].into());
            let _ = self.meta.change_membership(gone, false).await;
            return Err(e);
        }
        let metadata_ms = started.elapsed().as_millis() as u64;
        if !node.http_addr.is_empty() {
            self.meta_write(MetaCmd::RegisterNode(node.clone())).await?;
        }
        let voter = self.promote_voters(node.id).await?;
        let migrated = self.rebalance_active().await;
        let backlog = self
            .backlog_list()
            .await?
            .iter()
            .filter(|(rec, desired)| desired.contains(&node.id) && !rec.replicas.contains(&node.id))
            .count() as u64;
        tracing::info!(
            node_id = node.id,
            metadata_ms,
            voter,
            migrated,
            backlog,
            "node admitted"
        );
        Ok(JoinResp {
            node_id: node.id,
            voter,
            metadata_ms,
            active_migrated: migrated,
            backlog,
            pending: false,
        })
    }

    /// Keep the metadata voters at the largest odd count up to 5; learners are promoted in
    /// id order. Answers whether `id` is a voter afterwards.
    async fn promote_voters(&self, id: NodeId) -> Result<bool> {
        let m = self.meta.metrics().borrow_watched().membership_config.clone();
        let voters: BTreeSet<NodeId> = m.membership().voter_ids().collect();
        let all: Vec<NodeId> = m.membership().nodes().map(|(id, _)| *id).collect();
        let target = match all.len().min(5) {
            n if n % 2 == 0 => n - 1,
            n => n,
        };
        if target > voters.len() {
            let mut next = voters.clone();
            next.extend(
                all.iter()
                    .filter(|n| !voters.contains(n))
                    .take(target - voters.len()),
            );
            self.meta
                .change_membership(next.clone(), true)
                .await
                .map_err(|e| NodeError::Unavailable(e.to_string()))?;
            return Ok(next.contains(&id));
        }
        Ok(voters.contains(&id))
    }

    /// Migrate every backlogged channel that is active somewhere (its group runs on its
    /// leader). Answers how many migrated.
    async fn rebalance_active(&self) -> u64 {
        let members = self.members();
        let asks = members
            .iter()
            .map(|n| self.ask(*n, AppRpc::ActiveGroups, Duration::from_secs(2)));
        let mut active = HashSet::new();
        for reply in futures::future::join_all(asks).await {
            if let Ok(AppReply::Groups(gs)) = reply {
                active.extend(gs);
            }
        }
        let backlog = match self.backlog_list().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "rebalance: read backlog");
                return 0;
            }
        };
        let todo: Vec<_> = backlog
            .iter()
            .filter(|(rec, _)| active.contains(&rec.group_id))
            .cloned()
            .collect();
        futures::stream::iter(todo)
            .map(|(rec, desired)| async move { self.migrate(&rec, desired).await.is_ok() })
            .buffer_unordered(MIGRATE_PARALLEL)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await as u64
    }

    /// Move a channel to `desired`, through its leader.
    pub async fn migrate(&self, rec: &ChannelRecord, desired: Vec<NodeId>) -> Result<ChannelRecord> {
        let deadline = Instant::now() + MIGRATE_TIMEOUT;
        let migrated: Option<ChannelRecord> = self
            .route(
                rec.group_id,
                &rec.replicas,
                AppRpc::Migrate(rec.clone(), desired),
                deadline,
            )
            .await?
            .typed()
            .inspect_err(|e| tracing::warn!(channel = %rec.key, error = %e, "migration failed"))?;
        migrated.ok_or_else(|| NodeError::Internal("a migration answered no record".into()))
    }

    /// On the channel leader: the migration steps (see the module doc).
    /// With `back_to_sleep`, a group this migration woke from hibernation (and no client
    /// used meanwhile) hibernates again right after: a drained channel is idle, and an awake
    /// group costs heartbeats to every replica until its idle timeout.
    pub(super) async fn migrate_local(
        &self,
        rec: &ChannelRecord,
        desired: Vec<NodeId>,
        back_to_sleep: bool,
    ) -> Result<ChannelRecord> {
        if !rec.replicas.contains(&self.id) {
            return Err(NodeError::NotLeader { leader_hint: None });
        }
        let (raft, woken) = self.wake_channel_group(rec).await?;
        let woken_at = self.last_active(rec.group_id);
        let g = rec.group_id;
        let slot = self
            .slot(g)
            .ok_or_else(|| NodeError::Unavailable(format!("group {g} stopped")))?;
        let _one_at_a_time = slot.migration.lock().await;
        let voters: BTreeSet<NodeId> = desired.iter().copied().collect();
        let membership = || {
            let m = raft.metrics().borrow_watched().membership_config.clone();
            let m = m.membership();
            let present: BTreeSet<NodeId> = m.nodes().map(|(id, _)| *id).collect();
            // Exactly the target: the same voters, no learner (a replica still being added),
            // not halfway (joint) either.
            let done = present == voters
                && m.voter_ids().collect::<BTreeSet<_>>() == voters
                && m.get_joint_config().len() == 1;
            (present, done)
        };
        // A migration we waited for may have done it all, record included.
        let key = rec.key.clone();
        if let Some(now) = self.store.read(move |kv| meta::get_channel(kv, &key)).await?
            && now.replicas.iter().copied().collect::<BTreeSet<_>>() == voters
            && membership().1
        {
            return Ok(now);
        }
        // A group just woken may still be settling its leadership: confirm it first.
        if let Err(e) = raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex).await {
            return Err(super::rpc::read_err(&raft, e).await);
        }
        let (present, done) = membership();
        for n in desired.iter().filter(|n| !present.contains(n)) {
            let peer = Peer {
                cluster_addr: self.transport.addr_of(*n).unwrap_or_default(),
            };
            if let Err(e) = raft.add_learner(*n, peer, false).await {
                return Err(super::rpc::write_err(&raft, e).await);
            }
        }
        for n in desired.iter().filter(|n| !present.contains(n)) {
            caught_up(&raft, *n, MIGRATE_TIMEOUT).await?;
        }
        // Already there (a migration we waited for got this far): only the record may be left.
        if !done && let Err(e) = raft.change_membership(voters.clone(), false).await {
            return Err(super::rpc::write_err(&raft, e).await);
        }
        // The removed replicas drop their copy while the metadata records the new set: both
        // only follow the membership change, neither needs the other.
        let drops = present
            .iter()
            .filter(|n| !voters.contains(n) && **n != self.id)
            .map(|gone| self.ask(*gone, AppRpc::DropGroup(g), Duration::from_secs(1)));
        let (_, updated) = futures::join!(
            futures::future::join_all(drops),
            self.set_replicas(rec.key.clone(), desired.clone())
        );
        let updated = updated?.unwrap_or_else(|| ChannelRecord {
            replicas: desired,
            ..rec.clone()
        });
        tracing::info!(channel = %rec.key, from = ?rec.replicas, to = ?updated.replicas, "channel migrated");
        if !voters.contains(&self.id) {
            let _ = self.drop_group(g).await;
        } else if back_to_sleep && woken && self.last_active(g) == woken_at {
            self.hibernate_led(g, &updated.replicas).await;
        }
        Ok(updated)
    }

    /// Whether a quorum of the channel's current replicas is down (as the transport sees it):
    /// the drain moves such channels first.
    fn at_risk(&self, rec: &ChannelRecord) -> bool {
        let up = rec
            .replicas
            .iter()
            .filter(|n| !self.transport.is_down(**n))
            .count();
        up < rec.replicas.len() / 2 + 1
    }

    /// Record a channel's new replica set in the metadata. Concurrent callers on this node
    /// share metadata writes: while one batch is being written the next one collects, so
    /// many migrations cost one Raft write of group 0 (and one fsync) instead of one each.
    async fn set_replicas(&self, key: ChannelKey, replicas: Vec<NodeId>) -> Result<Option<ChannelRecord>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.replica_updates
            .lock()
            .expect("replica updates lock poisoned")
            .push((key, replicas, tx));
        {
            let _flushing = self.replica_flush.lock().await;
            let batch = std::mem::take(
                &mut *self
                    .replica_updates
                    .lock()
                    .expect("replica updates lock poisoned"),
            );
            // Empty: an earlier flusher took (and answered) this caller's update.
            if !batch.is_empty() {
                let (updates, waiters): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|(k, r, tx)| ((k, r), tx)).unzip();
                let n = updates.len();
                let res = match self.meta_write(MetaCmd::SetReplicasBatch { updates }).await {
                    Ok(meta::MetaResp::Channels(recs)) if recs.len() == n => Ok(recs),
                    Ok(other) => Err(NodeError::Internal(format!("metadata answered {other:?}"))),
                    Err(e) => Err(e),
                };
                for (i, tx) in waiters.into_iter().enumerate() {
                    let _ = tx.send(match &res {
                        Ok(recs) => Ok(recs[i].clone()),
                        Err(e) => Err(e.clone()),
                    });
                }
            }
        }
        rx.await
            .map_err(|_| NodeError::Internal("a replica-set write was dropped".into()))?
    }

    /// Before serving a channel on its leader: migrate it first if it is in the backlog.
    /// Runs on every send and sync, so the common case (placement unchanged) is pure CPU.
    /// Answers whether it migrated.
    pub(super) async fn migrate_if_backlogged(&self, rec: &ChannelRecord) -> bool {
        let placeable: BTreeSet<NodeId> = {
            let gone = self.decommissioned.read().expect("decommissioned lock poisoned");
            self.members().into_iter().filter(|n| !gone.contains(n)).collect()
        };
        let desired = meta::placement::place(&rec.key.to_bytes(), placeable, self.replication);
        if desired.len() == rec.replicas.len() && desired.iter().all(|d| rec.replicas.contains(d)) {
            return false;
        }
        // The caller's record may be stale: decide on the current one.
        let key = rec.key.clone();
        let Ok(Some(current)) = self.store.read(move |kv| meta::get_channel(kv, &key)).await else {
            return false;
        };
        if desired.len() == current.replicas.len() && desired.iter().all(|d| current.replicas.contains(d)) {
            return false;
        }
        match tokio::time::timeout(MIGRATE_TIMEOUT, self.migrate_local(&current, desired, false)).await {
            Ok(Ok(_)) => true,
            // Serving matters more than moving: the channel stays in the backlog.
            Ok(Err(e)) => {
                tracing::warn!(channel = %current.key, error = %e, "on-demand migration failed");
                false
            }
            Err(_) => {
                tracing::warn!(channel = %current.key, "on-demand migration timed out");
                false
            }
        }
    }

    /// This node is no longer a replica: stop the group and delete its rows.
    pub(super) async fn drop_group(&self, g: GroupId) -> Result<()> {
        if g == crate::raft::META_GROUP {
            return Err(NodeError::BadRequest(
                "the metadata group is never dropped".into(),
            ));
        }
        let (_, deleted) = self
            .stop_group(g, move |w| {
                crate::raft::delete_group(w, g)?;
                crate::integrity::forget(w, g)
            })
            .await;
        match deleted {
            // Its rows are gone: whatever was corrupt here is too.
            Ok(()) => {
                crate::integrity::cleared(g);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(group = g, error = %e, "dropping a removed replica's data");
                Err(e.into())
            }
        }
    }

    /// The sync backlog: the channels whose replica set differs from their placement for
    /// the members, with that placement. A read of the whole channel table, so the answer is
    /// kept until the metadata or the members change (the drain, `/cluster/backlog`,
    /// `/metrics` and joins all ask; dashboards poll).
    pub(super) async fn backlog_list(&self) -> Result<Arc<super::Backlogged>> {
        let members = self.members();
        let (m, replication) = (members.clone(), self.replication);
        let read = self.store.read(move |kv| meta::backlog(kv, &m, replication));
        self.backlog_memo
            .get_or_read((self.meta_applied(), members), async { Ok(read.await?) })
            .await
    }

    /// `GET /cluster/backlog`: the backlog with per-target totals and at-risk channels.
    pub async fn backlog_view(&self, limit: usize) -> Result<Backlog> {
        let list = self.backlog_list().await?;
        // Who answers, as failure detection sees it (the drain's `at_risk` too): probing every
        // node's status here cost each poll a scan of the channel table on every node while
        // a drain changes the metadata.
        let online: HashSet<NodeId> = self
            .members()
            .into_iter()
            .filter(|n| *n == self.id || !self.transport.is_down(*n))
            .collect();
        // Sizes from the replicas themselves: one request per node for the groups it holds.
        let mut by_node: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
        for (rec, _) in list.iter() {
            if let Some(n) = rec.replicas.iter().find(|n| online.contains(n)) {
                by_node.entry(*n).or_default().push(rec.group_id);
            }
        }
        let asks = by_node
            .into_iter()
            .map(|(n, gs)| self.ask(n, AppRpc::GroupSizes(gs), Duration::from_secs(2)));
        let mut sizes: HashMap<GroupId, (u64, u64)> = HashMap::new();
        for reply in futures::future::join_all(asks).await {
            if let Ok(AppReply::Sizes(s)) = reply {
                sizes.extend(s.into_iter().map(|(g, e, b)| (g, (e, b))));
            }
        }
        let mut targets: BTreeMap<NodeId, BacklogTarget> = BTreeMap::new();
        let mut entries: Vec<BacklogEntry> = list
            .iter()
            .map(|(rec, desired)| {
                let size = sizes.get(&rec.group_id).copied();
                let healthy = rec.replicas.iter().filter(|n| online.contains(n)).count();
                for t in desired.iter().filter(|d| !rec.replicas.contains(d)) {
                    let e = targets.entry(*t).or_insert(BacklogTarget {
                        node_id: *t,
                        channels: 0,
                        entries: 0,
                        bytes: 0,
                    });
                    e.channels += 1;
                    e.entries += size.map(|s| s.0).unwrap_or(0);
                    e.bytes += size.map(|s| s.1).unwrap_or(0);
                }
                BacklogEntry {
                    channel_id: rec.key.channel_id.clone(),
                    channel_type: rec.key.channel_type,
                    group_id: rec.group_id,
                    at_risk: healthy < rec.replicas.len() / 2 + 1,
                    replicas: rec.replicas.clone(),
                    desired: desired.clone(),
                    entries: size.map(|s| s.0),
                    bytes: size.map(|s| s.1),
                }
            })
            .collect();
        entries.sort_by_key(|e| (!e.at_risk, e.group_id));
        let (total, at_risk) = (
            entries.len() as u64,
            entries.iter().filter(|e| e.at_risk).count() as u64,
        );
        entries.truncate(limit);
        let drain = self.drain_status().await;
        Ok(Backlog {
            total,
            at_risk,
            targets: targets.into_values().collect(),
            entries,
            drain,
        })
    }

    /// The drain's progress, from the metadata leader.
    async fn drain_status(&self) -> Option<DrainStatus> {
        let leader = self.meta.metrics().borrow_watched().current_leader?;
        match self
            .ask(leader, AppRpc::DrainStatus, Duration::from_secs(1))
            .await
        {
            Ok(AppReply::Drain(d)) => d,
            _ => None,
        }
    }

    pub(super) fn local_drain_status(&self) -> Option<DrainStatus> {
        self.drain.lock().expect("drain lock poisoned").clone()
    }

    /// Runs on every node; acts while this node leads the metadata group and a drain is
    /// requested: migrates backlogged channels at the requested rate, at-risk ones first,
    /// and clears the request when the backlog is empty.
    pub(super) async fn run_drain(self) {
        let mut idle = true;
        loop {
            // Right after a round that moved channels the next one starts at once, and so
            // does the first round of a drain this node committed.
            if idle {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = self.drain_requested.notified() => {}
                }
            }
            idle = true;
            let rate = match self.store.read(|kv| meta::drain_rate(kv)).await {
                Ok(Some(r)) if self.meta.is_leader() => r as f64 / 1000.0,
                _ => {
                    *self.drain.lock().expect("drain lock poisoned") = None;
                    continue;
                }
            };
            if rate <= 0.0 {
                continue;
            }
            {
                let mut d = self.drain.lock().expect("drain lock poisoned");
                let status = d.get_or_insert(DrainStatus {
                    rate,
                    migrated: 0,
                    errors: 0,
                });
                status.rate = rate;
            }
            let Ok(backlog) = self.backlog_list().await else {
                continue;
            };
            if backlog.is_empty() {
                tracing::info!("backlog drained");
                let _ = self.meta_write(MetaCmd::SetDrain { rate_milli: None }).await;
                continue;
            }
            // At-risk channels first; the backlog, the rate and the leadership are read
            // again after each round.
            let mut list: Vec<&(ChannelRecord, Vec<NodeId>)> = backlog.iter().collect();
            list.sort_by_key(|(rec, _)| !self.at_risk(rec));
            list.truncate(DRAIN_ROUND);
            let mut list: Vec<(ChannelRecord, Vec<NodeId>)> = list.into_iter().cloned().collect();
            let interval = Duration::from_secs_f64(1.0 / rate);
            let started = Instant::now();
            let n = list.len();
            // Hibernated channels move cold, in batches (`cold`); the rest through Raft.
            // A batch is what the rate allows in 100 ms (at least one channel).
            let per_batch = ((rate / 10.0).ceil() as usize).clamp(1, super::cold::COLD_BATCH);
            let (mut cold, mut rest) = (0, Vec::new());
            while !list.is_empty() {
                let batch: Vec<_> = list.drain(..list.len().min(per_batch)).collect();
                let batch_started = Instant::now();
                let (moved, left) = self.migrate_cold(batch, &BTreeSet::new(), None).await;
                // Half the time at most, so foreground requests find the cores free
                // between batches.
                tokio::time::sleep(batch_started.elapsed()).await;
                cold += moved;
                rest.extend(left);
                if let Some(status) = self.drain.lock().expect("drain lock poisoned").as_mut() {
                    status.migrated += moved;
                }
                // At the requested rate: the next batch starts once this one's share is up.
                tokio::time::sleep_until((started + interval.mul_f64(cold as f64)).into()).await;
            }
            let started = Instant::now();
            let moved = futures::stream::iter(rest.into_iter().enumerate())
                .map(|(i, (rec, desired))| {
                    let node = self.clone();
                    async move {
                        // Pace the starts: migration i starts no earlier than i intervals in.
                        let due = started + interval.mul_f64(i as f64);
                        tokio::time::sleep_until(due.into()).await;
                        node.migrate(&rec, desired).await.is_ok()
                    }
                })
                .buffer_unordered(MIGRATE_PARALLEL)
                .fold(0usize, |moved, ok| {
                    let mut d = self.drain.lock().expect("drain lock poisoned");
                    if let Some(status) = d.as_mut() {
                        if ok {
                            status.migrated += 1;
                        } else {
                            status.errors += 1;
                        }
                    }
                    std::future::ready(moved + ok as usize)
                })
                .await;
            tracing::debug!(
                n,
                cold,
                moved,
                ms = started.elapsed().as_millis() as u64,
                "drain round"
            );
            idle = cold == 0 && moved == 0;
        }
    }

    /// A `--seed --auto-join` node asks the seed to admit it until it is in.
    pub(super) async fn announce(self, seed: NodeId, auto_join: bool) {
        if !auto_join {
            return;
        }
        let me = NodeRecord {
            id: self.id,
            http_addr: self.http_addr.clone(),
            cluster_addr: self.cluster_addr.clone(),
        };
        while self.is_joining() {
            match self
                .ask(seed, AppRpc::RequestJoin(me.clone()), JOIN_TIMEOUT * 2)
                .await
            {
                Ok(AppReply::Joined(r)) => tracing::info!(?r, "admitted to the cluster"),
                Ok(AppReply::Err(e)) => tracing::warn!(error = %e, "auto-join refused; retrying"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "auto-join: seed unreachable; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
