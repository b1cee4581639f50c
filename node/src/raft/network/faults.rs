//! Fault injection at the node's transport, the seam the drills use: traffic to or from a
//! blocked peer is dropped in both directions (calls fail as unreachable, requests from it are
//! not served, answers to it are not sent).

use std::collections::HashSet;

use super::{NodeId, Transport};

impl Transport {
    /// Drop all traffic to and from `peers` (empty: heal).
    pub fn set_blocked(&self, peers: HashSet<NodeId>) {
        *self.blocked.write().expect("blocked lock poisoned") = peers.clone();
        let conns = self.conns.lock().expect("conns lock poisoned");
        for p in &peers {
            if let Some(c) = conns.get(p) {
                c.close();
            }
        }
    }

    pub(super) fn is_blocked(&self, id: NodeId) -> bool {
        self.blocked.read().expect("blocked lock poisoned").contains(&id)
    }
}
