//! Quiet groups: an awake channel group that saw no client request for [`QUIET_AFTER`] stops
//! its openraft ticks on every replica, so it costs no CPU until it is used again or
//! hibernates. (openraft ticks every group about every 20 ms; the ticks drive the leader's
//! heartbeats and the followers' election timers. A profile of 100 awake, idle groups spent
//! nearly all of a node's ~17 % of a core in those wake-ups.)
//!
//! - The leader decides, since it sees the writes: once a group is idle and every replica holds
//!   its whole log, it stops its own ticks, sends one last heartbeat (it carries the commit
//!   index to the followers), then tells each follower in one message per peer (like
//!   hibernation) to stop theirs.
//! - Any use restarts the ticks of the replica it reaches: a client request (`touch`), an
//!   append carrying entries, the leader's node declared down (`failure`), or becoming the
//!   leader (a transferred leadership; see `watch_role_changes`).
//! - Raft's safety does not depend on ticks; only liveness while quiet changes. A dead leader
//!   is replaced through node-level failure detection as before. A leader that stops answering
//!   while its connections stay up (paused, cut off) leaves its pings unanswered: after about a
//!   second of that its followers restart their ticks (`peer_silent`) and their election timers
//!   run out as they would have without quiet (no heartbeat for a while means no lease either).
//!   A live but slow leader may so lose a quiet group to an election; never data.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::async_runtime::Instant as _;
use openraft::async_runtime::WatchReceiver;

use super::{Node, route, rpc};
use crate::raft::{GroupId, NodeId, Raft};

/// A group with no client request for this long goes quiet.
pub const QUIET_AFTER: Duration = Duration::from_millis(500);
/// How long a request to a quiet leader waits for its lease to be renewed.
const LEASE_WAIT: Duration = Duration::from_millis(500);
/// A quorum ack this recent means the heartbeat just sent was answered.
const LEASE_FRESH: Duration = Duration::from_millis(50);
/// How often the leader looks for groups to quiet.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Whether every replica of the group `raft` leads holds its whole log (nothing to resend).
fn caught_up(raft: &Raft) -> bool {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    let last = m.last_log_index;
    m.replication.as_ref().is_some_and(|r| {
        r.values()
            .all(|matched| matched.as_ref().map(|l| l.index) == last)
    }) && m.last_applied.as_ref().map(|l| l.index) == last
}

impl super::groups::GroupSlot {
    /// Restart the group's ticks if it was quiet; answers whether it was.
    pub(super) fn unquiet(&self) -> bool {
        match self.raft.get() {
            Some(raft) if self.quiet.swap(false, Ordering::AcqRel) => {
                raft.runtime_config().tick(true);
                true
            }
            _ => false,
        }
    }
}

impl Node {
    /// Stop the ticks of group `g` here (it is quiet).
    pub(super) fn quiet(&self, g: GroupId) {
        if let Some(slot) = self.slot(g)
            && let Some(raft) = slot.raft.get()
            && !slot.quiet.swap(true, Ordering::AcqRel)
        {
            raft.runtime_config().tick(false);
        }
    }

    /// Restart the ticks of group `g` here if it was quiet; answers whether it was.
    pub(super) fn unquiet(&self, g: GroupId) -> bool {
        self.slot(g).is_some_and(|slot| slot.unquiet())
    }

    pub(super) fn is_quiet(&self, g: GroupId) -> bool {
        self.slot(g).is_some_and(|s| s.quiet.load(Ordering::Acquire))
    }

    /// `peer` stopped answering pings (paused, cut off, or very slow): restart the ticks of
    /// the quiet groups it leads here, so their election timers guard them again.
    pub(super) fn peer_silent(&self, peer: NodeId) {
        for (g, raft) in self.live_groups() {
            if self.is_quiet(g) && raft.metrics().borrow_watched().current_leader == Some(peer) {
                let _ = self.unquiet(g);
            }
        }
    }

    /// On every node: quiet the idle groups this node leads, then their followers.
    pub(super) async fn quiet_idle_groups(self) {
        let quiet_ms = QUIET_AFTER.as_millis() as u64;
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let now = route::now_ms();
            let mut by_peer: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
            for (g, raft) in self.live_groups() {
                let Some(slot) = self.slot(g) else { continue };
                let last = slot.last_active.load(Ordering::Relaxed);
                if slot.quiet.load(Ordering::Acquire)
                    || now.saturating_sub(last) < quiet_ms
                    || !raft.is_leader()
                    || !caught_up(&raft)
                {
                    continue;
                }
                self.quiet(g);
                // A request that came in meanwhile wins: it may already have seen the group
                // awake, so it would not restart the ticks.
                if slot.last_active.load(Ordering::Relaxed) != last {
                    let _ = self.unquiet(g);
                    continue;
                }
                // Followers learn a commit from the next append or heartbeat (channel groups
                // send no commit-only append), and a quiet leader sends neither: one heartbeat
                // now carries the last commit to them, or they would not apply the last write.
                let _ = raft.trigger().heartbeat().await;
                let m = raft.metrics().borrow_watched().membership_config.clone();
                for (id, _) in m.membership().nodes().filter(|(id, _)| **id != self.id) {
                    by_peer.entry(*id).or_default().push(g);
                }
            }
            let asks = by_peer
                .into_iter()
                .map(|(p, gs)| self.ask(p, rpc::AppRpc::Quiet(gs), Duration::from_secs(2)));
            futures::future::join_all(asks).await;
        }
    }
}

/// A leader without a recent quorum ack (quiet: no heartbeats were sent; just woken: only
/// votes so far) has no valid lease, and openraft refuses its writes (`LeaseExpired`) until a
/// quorum acks again: heartbeat now and wait for that (one round trip), instead of letting the
/// request bounce through routing until the next tick's heartbeat.
pub(super) async fn renew_lease(raft: &Raft) {
    if !raft.is_leader() {
        return;
    }
    let _ = raft.trigger().heartbeat().await;
    let _ = raft
        .wait(Some(LEASE_WAIT))
        .metrics(
            |m| {
                m.last_quorum_acked
                    .as_ref()
                    .is_some_and(|t| t.into_inner().elapsed() < LEASE_FRESH)
            },
            "the leader's lease renewed",
        )
        .await;
}
