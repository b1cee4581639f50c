//! Failover: when the transport declares a peer down (see `raft::network`), every group
//! running here whose leader is that peer elects a new leader at once instead of waiting out
//! its election timer and the leader lease.
//!
//! - **Who campaigns.** The survivors (voters not declared down) take turns, [`STAGGER`] apart,
//!   in an order fixed per group by rendezvous hashing, so the new leaders spread over the
//!   survivors: the first campaigns at once, the next only if no leader emerged from that, and
//!   so on round the survivors until one wins. Turns keep survivors from splitting the vote;
//!   going round matters because the first may be unable to win (a voter holds a longer log).
//! - **Why the vote is granted.** openraft's followers refuse votes for the leader lease
//!   (`election_timeout_max` after the last heartbeat). A voter that itself sees the leader
//!   down marks the vote request as a leadership transfer (`cluster::rpc`), which is exactly
//!   the lease bypass openraft gives a transfer the leader authorised: the lease protects a
//!   live leader, and this one is known dead by both candidate and voter. Raft's own rules
//!   (term, log up to date) still decide the vote, so safety does not depend on the detector;
//!   a wrong "down" costs one election, never data.
//! - **A slow winner is not deposed.** A survivor whose turn comes while it has voted for
//!   another live survivor in a newer term gives that campaign one more turn: with hundreds of
//!   groups electing at once, the winner may need longer than [`STAGGER`] to announce itself,
//!   and a second campaign then cost both a new term (measured: up to 4 s for 336 groups).
//! - **Cut-off nodes stay quiet.** A node that sees no quorum of voters up is the one cut off;
//!   it does not campaign (a term it cannot win would only disturb the others on heal).
//!
//! The presence directory forgets the peer's users at once (`presence`).
//!
//! Hibernated groups are not running and need nothing: the next request starts them with an
//! election.

use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;

use super::Node;
use crate::raft::{GroupId, META_GROUP, NodeId, Raft, TypeConfig};

/// Between the survivors' turns: long enough for a campaign to finish on a loaded machine (one
/// vote round trip and one fsync; a turn that comes too early deposes the campaign before it),
/// short against the failover target. Only paid when the first in turn cannot win.
const STAGGER: Duration = Duration::from_millis(300);
/// After this the group's own election timer is in charge again.
const GIVE_UP: Duration = Duration::from_secs(3);

impl Node {
    /// The transport declared `peer` down: replace it in every group here that it leads.
    pub(super) fn peer_down(&self, peer: NodeId) {
        self.presence.node_down(peer);
        let groups = std::iter::once((META_GROUP, self.meta.clone())).chain(self.live_groups());
        let mut led = 0;
        for (g, raft) in groups {
            if raft.metrics().borrow_watched().current_leader == Some(peer) {
                led += 1;
                // A quiet group's own timers are stopped; they are the fallback below.
                let _ = self.unquiet(g);
                self.spawn_task(self.clone().replace_leader(g, raft, peer));
            }
        }
        if led > 0 {
            tracing::info!(
                peer,
                groups = led,
                "electing new leaders for the groups a down peer led"
            );
        }
    }

    /// Whether the leader `raft` follows here is a peer declared down.
    pub(super) fn leader_is_down(&self, raft: &Raft) -> bool {
        let leader = raft.metrics().borrow_watched().current_leader;
        leader.is_some_and(|l| l != self.id && self.transport.is_down(l))
    }

    async fn replace_leader(self, g: GroupId, raft: Raft, dead: NodeId) {
        let voters: Vec<NodeId> = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let up: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|v| *v == self.id || !self.transport.is_down(*v))
            .collect();
        if !up.contains(&self.id) || up.len() * 2 <= voters.len() {
            return;
        }
        let turn = campaign_order(g, &up)
            .iter()
            .position(|n| *n == self.id)
            .expect("this node is among the survivors");
        let dead_term = raft.metrics().borrow_watched().vote.leader_id().term;
        let deadline = Instant::now() + GIVE_UP;
        let mut backed_once = false;
        let mut next_turn = tokio::time::Instant::now() + STAGGER * turn as u32;
        loop {
            let live = |m: &openraft::RaftMetrics<TypeConfig>| {
                m.current_leader
                    .is_some_and(|l| l != dead && !self.transport.is_down(l))
            };
            // Returns at once if a live leader is known, else when this node's turn comes.
            let until = next_turn.saturating_duration_since(tokio::time::Instant::now());
            if raft
                .wait(Some(until))
                .metrics(live, "a live leader")
                .await
                .is_ok()
                || Instant::now() >= deadline
            {
                return;
            }
            // This node granted its vote to a live candidate since the leader died: that
            // campaign is winning, only slowly (hundreds of elections at once on a loaded
            // machine). Campaigning now would depose it; its result is waited for, one turn.
            // Only one: a candidate that had the vote and still did not win may never (a lost
            // answer), and waiting on it for good left a group leaderless for 3 s.
            let backing = !backed_once && {
                let v = *raft.metrics().borrow_watched().vote.leader_id();
                v.term > dead_term
                    && v.node_id != self.id
                    && v.node_id != dead
                    && !self.transport.is_down(v.node_id)
            };
            backed_once |= backing;
            if !backing && raft.trigger().elect(false).await.is_err() {
                return; // the group stopped (hibernated or dropped)
            }
            next_turn += STAGGER * up.len() as u32;
        }
    }
}

/// The order in which the survivors of group `g` campaign: rendezvous hashing of (group,
/// node), the same on every node, different per group.
pub(super) fn campaign_order(g: GroupId, up: &[NodeId]) -> Vec<NodeId> {
    let score = |n: &NodeId| {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&g.to_be_bytes());
        key[8..].copy_from_slice(&n.to_be_bytes());
        xxhash_rust::xxh3::xxh3_64(&key)
    };
    let mut order = up.to_vec();
    order.sort_by_key(|n| std::cmp::Reverse(score(n)));
    order
}

#[cfg(test)]
mod tests {
    use super::campaign_order;

    #[test]
    fn campaign_order_is_deterministic_and_spreads() {
        let up = [1, 2, 3];
        let mut first = [0usize; 4];
        for g in 0..3000 {
            let order = campaign_order(g, &up);
            assert_eq!(order, campaign_order(g, &[3, 1, 2]), "independent of input order");
            first[order[0] as usize] += 1;
        }
        for n in up {
            assert!((800..1200).contains(&first[n as usize]), "{first:?}");
        }
    }
}
