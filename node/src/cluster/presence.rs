//! The cluster-wide presence directory: which node each online user is connected to.
//!
//! Each uid has one **owner**, the live node that scores highest for it by rendezvous hashing
//! (`meta::placement`) over the metadata members not declared down, as WuKongIM's uid slot
//! leader. A node tells a uid's owner the device flags of that uid's connections on it
//! (`AppRpc::Presence`, absolute, so a repeat is harmless); the channel leader asks the owners
//! of a message's recipients where they are (`AppRpc::Locate`), one request per owner node.
//! So a connect or disconnect costs one message to one node, and the directory of N users is
//! spread over the live nodes, instead of every node holding and hearing about everyone.
//!
//! Invariants:
//! - An owner holds `uid -> node -> device flags`; a node's entry is what that node announced
//!   last (an empty list removes it).
//! - A node declared down loses its entries on every owner at once (`node_down`), and again
//!   on the next change of the live set, so its users are offline within the failure
//!   detection time.
//! - When the live set changes, owners drop the uids they no longer own and every node
//!   announces all its users to their (new) owners; every `REFRESH` it does so anyway, which
//!   repairs announcements lost to a peer that was briefly unreachable. An entry not announced
//!   again within `STALE` is dropped (its node restarted unnoticed, or stopped announcing).
//! - One task per node sends the announcements, reading the registry when it sends: updates
//!   of one uid are never reordered.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::Node;
use super::rpc::AppRpc;
use crate::raft::NodeId;

/// How often the announcing task looks at the live set (and sends what is pending).
const TICK: Duration = Duration::from_millis(200);
/// Every node announces all its users this often, whatever changed.
const REFRESH: Duration = Duration::from_secs(5);
/// An owner forgets an entry its node has not announced for this long (three refreshes).
const STALE: Duration = Duration::from_secs(15);
/// Deadline of one announcement or lookup to a peer.
const PEER_TTL: Duration = Duration::from_secs(2);

/// What a node tells an owner: the device flags of each uid's connections on `node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Announcement {
    pub node: NodeId,
    /// (uid, device flags of its connections on `node`; empty: none left).
    pub users: Vec<(String, Vec<u8>)>,
}

/// Where one uid is online: (node, device flags of its connections there).
pub type Located = (String, Vec<(NodeId, Vec<u8>)>);

/// What an owner knows of one uid on one node.
struct Entry {
    /// Device flags of the uid's connections there.
    flags: Vec<u8>,
    /// When the node last announced it.
    seen: Instant,
}

/// This node's part of the directory, and its pending announcements.
#[derive(Default)]
pub struct Presence {
    /// The uids this node owns. std mutex: a map lookup or edit, never across `.await`.
    owned: Mutex<HashMap<String, BTreeMap<NodeId, Entry>>>,
    /// Local uids whose connections changed since they were last announced. std mutex, same.
    dirty: Mutex<HashSet<String>>,
    /// Wakes the announcing task.
    wake: Notify,
}

/// The owner of `uid` among `live`.
pub fn owner(uid: &str, live: &BTreeSet<NodeId>) -> Option<NodeId> {
    let key = [b"presence/".as_slice(), uid.as_bytes()].concat();
    crate::meta::placement::place(&key, live.iter().copied(), 1)
        .first()
        .copied()
}

impl Presence {
    /// The connections of `uid` on this node changed.
    pub fn changed(&self, uid: &str) {
        self.dirty
            .lock()
            .expect("dirty lock poisoned")
            .insert(uid.to_string());
        self.wake.notify_one();
    }

    /// Record an announcement (this node owns its uids).
    pub fn apply(&self, a: Announcement) {
        let seen = Instant::now();
        let mut owned = self.owned.lock().expect("owned lock poisoned");
        for (uid, flags) in a.users {
            if flags.is_empty() {
                if let Some(nodes) = owned.get_mut(&uid) {
                    nodes.remove(&a.node);
                    if nodes.is_empty() {
                        owned.remove(&uid);
                    }
                }
            } else {
                owned
                    .entry(uid)
                    .or_default()
                    .insert(a.node, Entry { flags, seen });
            }
        }
    }

    /// Where each of `uids` (owned here) is online; offline uids are left out.
    pub fn lookup(&self, uids: &[String]) -> Vec<Located> {
        let owned = self.owned.lock().expect("owned lock poisoned");
        uids.iter()
            .filter_map(|u| {
                owned.get(u).map(|nodes| {
                    (
                        u.clone(),
                        nodes.iter().map(|(n, e)| (*n, e.flags.clone())).collect(),
                    )
                })
            })
            .collect()
    }

    /// `node` is down: its users are offline, and the uids it owned have new owners, which
    /// learn them from the announcements this wakes (until then they miss those users).
    pub fn node_down(&self, node: NodeId) {
        let mut owned = self.owned.lock().expect("owned lock poisoned");
        owned.retain(|_, nodes| {
            nodes.remove(&node);
            !nodes.is_empty()
        });
        drop(owned);
        self.wake.notify_one();
    }

    /// Keep only the entries of live nodes, announced since `STALE` before `now`, for uids
    /// `me` owns among `live`.
    fn retain_owned(&self, me: NodeId, live: &BTreeSet<NodeId>, now: Instant) {
        let mut owned = self.owned.lock().expect("owned lock poisoned");
        owned.retain(|uid, nodes| {
            nodes.retain(|n, e| live.contains(n) && now.saturating_duration_since(e.seen) < STALE);
            !nodes.is_empty() && owner(uid, live) == Some(me)
        });
    }
}

impl Node {
    /// Metadata members not declared down (this node always counts).
    pub fn live_nodes(&self) -> BTreeSet<NodeId> {
        self.members()
            .into_iter()
            .filter(|n| *n == self.id || !self.transport.is_down(*n))
            .collect()
    }

    /// Announce this node's users to their owners, forever (see the module doc).
    pub(super) async fn announce_presence(self) {
        let mut live = BTreeSet::new();
        let mut refreshed = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.presence.wake.notified() => {}
            }
            let mut uids: HashSet<String> =
                std::mem::take(&mut *self.presence.dirty.lock().expect("dirty lock poisoned"));
            let now_live = self.live_nodes();
            if now_live != live || refreshed.elapsed() >= REFRESH {
                live = now_live;
                self.presence.retain_owned(self.id, &live, Instant::now());
                refreshed = Instant::now();
                uids.extend(self.registry.uids());
            }
            if uids.is_empty() {
                continue;
            }
            let mut by_owner: HashMap<NodeId, Vec<(String, Vec<u8>)>> = HashMap::new();
            for uid in uids {
                if let Some(o) = owner(&uid, &live) {
                    let flags = self.registry.device_flags_of(&uid);
                    by_owner.entry(o).or_default().push((uid, flags));
                }
            }
            let me = &self;
            let sends = by_owner.into_iter().map(|(o, users)| async move {
                let a = Announcement { node: me.id, users };
                if o == me.id {
                    me.presence.apply(a);
                    return;
                }
                let retry: Vec<String> = a.users.iter().map(|(u, _)| u.clone()).collect();
                let sent = me.ask(o, AppRpc::Presence(a), PEER_TTL).await;
                if let Err(e) = sent.and_then(|r| r.typed::<()>()) {
                    tracing::debug!(owner = o, error = %e, "presence: announcement failed; retried");
                    me.presence
                        .dirty
                        .lock()
                        .expect("dirty lock poisoned")
                        .extend(retry);
                }
            });
            futures::future::join_all(sends).await;
        }
    }

    /// Where `uids` are online, from their owners: node -> (uid, device flags) there. A uid
    /// whose owner does not answer counts as offline (delivery is best effort).
    pub async fn locate(
        &self,
        uids: impl IntoIterator<Item = String>,
    ) -> BTreeMap<NodeId, Vec<(String, Vec<u8>)>> {
        let live = self.live_nodes();
        let mut by_owner: HashMap<NodeId, Vec<String>> = HashMap::new();
        for uid in uids {
            if let Some(o) = owner(&uid, &live) {
                by_owner.entry(o).or_default().push(uid);
            }
        }
        let asks = by_owner.into_iter().map(|(o, uids)| async move {
            if o == self.id {
                return self.presence.lookup(&uids);
            }
            match self
                .ask(o, AppRpc::Locate(uids), PEER_TTL)
                .await
                .and_then(|r| r.typed())
            {
                Ok(found) => found,
                Err(e) => {
                    tracing::debug!(owner = o, error = %e, "presence: lookup failed");
                    Vec::new()
                }
            }
        });
        let mut by_node: BTreeMap<NodeId, Vec<(String, Vec<u8>)>> = BTreeMap::new();
        for (uid, nodes) in futures::future::join_all(asks).await.into_iter().flatten() {
            for (n, flags) in nodes {
                by_node.entry(n).or_default().push((uid.clone(), flags));
            }
        }
        by_node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_replace_and_a_down_node_leaves() {
        let p = Presence::default();
        let ann = |node, users: &[(&str, &[u8])]| Announcement {
            node,
            users: users.iter().map(|(u, f)| (u.to_string(), f.to_vec())).collect(),
        };
        p.apply(ann(1, &[("a", &[1]), ("b", &[0, 1])]));
        p.apply(ann(2, &[("a", &[0])]));
        let uids = |s: &[&str]| s.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        assert_eq!(
            p.lookup(&uids(&["a", "b", "c"])),
            vec![
                ("a".to_string(), vec![(1, vec![1]), (2, vec![0])]),
                ("b".to_string(), vec![(1, vec![0, 1])]),
            ]
        );
        p.apply(ann(1, &[("b", &[])]));
        p.node_down(2);
        assert_eq!(
            p.lookup(&uids(&["a", "b"])),
            vec![("a".to_string(), vec![(1, vec![1])])]
        );
        assert!(p.lookup(&uids(&["b"])).is_empty());
        // An entry its node stopped announcing goes after STALE.
        let live: BTreeSet<NodeId> = [1].into();
        p.retain_owned(1, &live, Instant::now());
        assert_eq!(p.lookup(&uids(&["a"])).len(), 1);
        p.retain_owned(1, &live, Instant::now() + STALE);
        assert!(p.lookup(&uids(&["a"])).is_empty());
    }

    #[test]
    fn owners_spread_and_only_moved_uids_change_owner() {
        let three: BTreeSet<NodeId> = [1, 2, 3].into();
        let two: BTreeSet<NodeId> = [1, 2].into();
        let mut per_node: HashMap<NodeId, usize> = HashMap::new();
        for i in 0..300 {
            let uid = format!("u{i}");
            let o = owner(&uid, &three).expect("three live nodes");
            *per_node.entry(o).or_default() += 1;
            if o != 3 {
                assert_eq!(owner(&uid, &two), Some(o), "{uid} moved though its owner lives");
            }
        }
        assert!(per_node.values().all(|n| *n > 50), "{per_node:?}");
        assert_eq!(owner("x", &BTreeSet::new()), None);
    }
}
