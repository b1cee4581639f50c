//! Failure detection is node-level: [`Transport::watch_peers`] pings every known peer over the
//! shared connection every [`PING_INTERVAL`], and at once when the connection to a peer is lost
//! (a killed process's sockets close with it, so a kill is noticed within a connect attempt,
//! not a ping interval). A peer whose ping fails (connection refused or lost: a killed process;
//! or blocked by a drill) is declared down at once, and the `on_down` callback runs once per
//! transition; an answered ping declares it up. A ping unanswered within [`PING_DEADLINE`]
//! changes nothing: silence is left to the Raft timers, because on the loaded 2-core machine
//! pings of live nodes went unanswered for over 600 ms often enough that declaring silent peers
//! down made the cluster flap (measured in `failover_under_load`: more than 20 false "down"s in
//! one run). One ping per node pair, whatever the number of groups.

use std::sync::Arc;
use std::time::Duration;

use super::{CallError, NodeId, Rpc, Transport};

/// How often each peer is pinged: it bounds how late a peer is declared up again, and paces
/// the silence count. Not how late a kill is noticed (a lost connection is probed at once).
/// At 50 ms the pings were a third of an idle node's CPU (0.9 % of a core of 2.5 %).
pub const PING_INTERVAL: Duration = Duration::from_millis(200);
/// How long a ping may wait for its answer (including a reconnect); past it the ping is
/// dropped without a verdict and the next one is sent.
pub const PING_DEADLINE: Duration = Duration::from_millis(300);
/// Unanswered pings in a row (about a second) after which `on_silent` runs. Silence declares
/// nothing down (module doc); it only lets the node restart timers it had stopped.
const SILENT_PINGS: u32 = 3;

impl Transport {
    /// Called with each peer the pings declare down (once per up-to-down transition).
    pub fn set_on_down(&self, f: Box<dyn Fn(NodeId) + Send + Sync>) {
        let _ = self.on_down.set(f);
    }

    /// Called with a peer whose pings went unanswered [`SILENT_PINGS`] times in a row.
    pub fn set_on_silent(&self, f: Box<dyn Fn(NodeId) + Send + Sync>) {
        let _ = self.on_silent.set(f);
    }

    /// Count an answered (`false`) or unanswered (`true`) ping of `peer`.
    fn note_silence(&self, peer: NodeId, silent: bool) {
        let mut counts = self.silent.lock().expect("silent lock poisoned");
        if !silent {
            counts.remove(&peer);
            return;
        }
        let n = counts.entry(peer).or_default();
        *n += 1;
        if *n == SILENT_PINGS {
            drop(counts);
            if let Some(f) = self.on_silent.get() {
                f(peer);
            }
        }
    }

    /// `peer` answered, or connected to us: it is up and not silent.
    pub(super) fn heard_from(&self, peer: NodeId) {
        self.note_silence(peer, false);
        self.set_down(peer, false);
    }

    /// Whether the last ping to `id` failed. A peer never pinged yet counts as up.
    pub fn is_down(&self, id: NodeId) -> bool {
        self.down.read().expect("down lock poisoned").contains(&id)
    }

    fn set_down(&self, peer: NodeId, down: bool) {
        let changed = {
            let mut set = self.down.write().expect("down lock poisoned");
            if down { set.insert(peer) } else { set.remove(&peer) }
        };
        if !changed {
            return;
        }
        if down {
            tracing::info!(peer, "peer declared down");
            if let Some(f) = self.on_down.get() {
                f(peer);
            }
        } else {
            tracing::info!(peer, "peer up");
        }
    }

    /// Ping every known peer every [`PING_INTERVAL`], and a peer whose connection was lost at
    /// once, forever; see the module doc.
    pub async fn watch_peers(self: Arc<Self>) {
        let Some(mut lost) = self.lost_rx.lock().expect("lost lock poisoned").take() else {
            return; // already watched
        };
        let mut tick = tokio::time::interval(PING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let peers: Vec<NodeId> = tokio::select! {
                _ = tick.tick() => self
                    .addrs
                    .read()
                    .expect("addrs lock poisoned")
                    .keys()
                    .copied()
                    .filter(|id| *id != self.node_id)
                    .collect(),
                Some(peer) = lost.recv() => vec![peer],
            };
            for peer in peers {
                self.clone().ping(peer);
            }
        }
    }

    /// Ping `peer` unless a ping to it is in flight, and record the verdict.
    fn ping(self: Arc<Self>, peer: NodeId) {
        if !self.probing.lock().expect("probing lock poisoned").insert(peer) {
            return;
        }
        self.runtime.clone().spawn(async move {
            // The deadline covers a reconnect too (connect and handshake included).
            let r = tokio::time::timeout(PING_DEADLINE, self.call(peer, Rpc::Ping, PING_DEADLINE)).await;
            self.probing.lock().expect("probing lock poisoned").remove(&peer);
            match r {
                // A remote error means the peer received the ping: it is alive.
                Ok(Ok(_)) | Ok(Err(CallError::Remote(..))) => self.heard_from(peer),
                // Refused, lost or blocked: no process answers there.
                Ok(Err(CallError::Unreachable(..))) => self.set_down(peer, true),
                // Silent: maybe paused, maybe just slow; see the module doc.
                Ok(Err(CallError::Timeout(_))) | Err(_) => self.note_silence(peer, true),
            }
        });
    }
}
