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
//!
//! Channel leaders cache what owners answered (`Node::locate_cached`, for the fan-out), so a
//! delivery batch goes straight to the recipients' nodes instead of asking their owners first:
//! - A cached lookup is made with `AppRpc::Watch`: the owner remembers who asked, and when that
//!   uid's entry changes (a connect or disconnect announced, a node down, an entry expired) it
//!   tells them `AppRpc::Moved` (sent by the announcing task) and forgets them; the leader
//!   drops those uids. A Watch answer that crosses any `Moved` is used but not cached, so a
//!   change is never hidden by an older answer arriving later.
//! - An entry lives at most `CACHE_TTL` (a lost `Moved` costs at most that), and the whole
//!   cache goes when the live set changes (owners move). The uids this node owns are looked
//!   up directly, never cached.
//! - The presence **epoch** is bumped by everything that can change an answer of
//!   `locate_cached`: a `Moved`, a live-set change, a change of an entry this node owns. An
//!   answer found under one epoch holds while the epoch and the live set stay and its oldest
//!   cached part is younger than `CACHE_TTL`, if every owner answered (`Found::holds`); the
//!   fan-out keeps each channel's answer on that rule. While it holds, every owner it asked
//!   still watches for this node, so a change reaches it as a `Moved`.
//! - `/user/onlinestatus` asks the owners every time (`Node::locate`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
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
/// How long a leader uses a location learned from an owner; `Moved` drops it sooner.
const CACHE_TTL: Duration = Duration::from_secs(10);
/// Locations a leader caches at most (it starts over when full).
const CACHE_MAX: usize = 100_000;

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

/// The uids this node owns, and who cached where they are.
#[derive(Default)]
struct Directory {
    /// uid -> node -> what that node announced.
    users: HashMap<String, BTreeMap<NodeId, Entry>>,
    /// uid -> nodes that cached its location (`watch`), with when they asked: told `Moved`
    /// when its entry changes, forgotten after `CACHE_TTL` (their cache forgot it too).
    watchers: HashMap<String, BTreeMap<NodeId, Instant>>,
    /// `Moved` notifications for the announcing task to send: node -> uids.
    moved: HashMap<NodeId, BTreeSet<String>>,
}

impl Directory {
    /// `uid`'s entry changed: queue `Moved` for whoever cached it.
    fn changed(&mut self, uid: &str) {
        if let Some(w) = self.watchers.remove(uid) {
            for n in w.into_keys() {
                self.moved.entry(n).or_default().insert(uid.to_string());
            }
        }
    }
}

/// Where a leader last found uids (`Node::locate_cached`).
#[derive(Default)]
struct Cache {
    /// uid -> the nodes it is online on (empty: offline), and when the owner said so.
    by_uid: HashMap<String, (Vec<NodeId>, Instant)>,
    /// The live set the entries were learned under.
    live: BTreeSet<NodeId>,
}

/// This node's part of the directory, its pending announcements and its location cache.
#[derive(Default)]
pub struct Presence {
    /// The uids this node owns. std mutex: a map lookup or edit, never across `.await`.
    owned: Mutex<Directory>,
    /// Locations learned from other owners. std mutex, same.
    cache: Mutex<Cache>,
    /// Local uids whose connections changed since they were last announced. std mutex, same.
    dirty: Mutex<HashSet<String>>,
    /// Wakes the announcing task.
    wake: Notify,
    /// Bumped by every change that can alter a `locate_cached` answer (see the module doc):
    /// an answer that crossed a bump is not kept.
    epoch: AtomicU64,
}

/// Where recipients are online, as `Node::locate_cached` found them.
#[derive(Debug, Clone)]
pub struct Found {
    /// node -> the uids online there.
    pub by_node: BTreeMap<NodeId, Vec<String>>,
    /// The presence epoch before the lookup.
    epoch: u64,
    /// The live set it was made under.
    live: BTreeSet<NodeId>,
    /// When its oldest part was learned from an owner.
    learned: Instant,
    /// Every owner answered (a uid whose owner did not counts as offline, for this answer
    /// only: it is not kept).
    complete: bool,
}

impl Found {
    /// Whether this answer still holds on `node` (see the module doc).
    pub fn holds(&self, node: &Node) -> bool {
        self.complete
            && self.epoch == node.presence.epoch.load(Ordering::Acquire)
            && self.learned.elapsed() < CACHE_TTL
            && self.live == node.live_nodes()
    }
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

    /// Record an announcement (this node owns its uids); whoever cached a uid whose entry
    /// changed is told (`Moved`, sent by the announcing task).
    pub fn apply(&self, a: Announcement) {
        let seen = Instant::now();
        let mut guard = self.owned.lock().expect("owned lock poisoned");
        let dir = &mut *guard;
        let (mut moved, mut any) = (false, false);
        for (uid, flags) in a.users {
            let before = dir.users.get(&uid).and_then(|nodes| nodes.get(&a.node));
            let changed = before.map_or(!flags.is_empty(), |e| e.flags != flags);
            any |= changed;
            if flags.is_empty() {
                if let Some(nodes) = dir.users.get_mut(&uid) {
                    nodes.remove(&a.node);
                    if nodes.is_empty() {
                        dir.users.remove(&uid);
                    }
                }
            } else {
                dir.users
                    .entry(uid.clone())
                    .or_default()
                    .insert(a.node, Entry { flags, seen });
            }
            if changed && dir.watchers.contains_key(&uid) {
                dir.changed(&uid);
                moved = true;
            }
        }
        drop(guard);
        if any {
            self.bump();
        }
        if moved {
            self.wake.notify_one();
        }
    }

    /// Something an answer of `locate_cached` may hold changed.
    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Like `lookup`, and remember that `from` caches the answer (see the module doc).
    pub fn watch(&self, from: NodeId, uids: &[String]) -> Vec<Located> {
        let now = Instant::now();
        let mut dir = self.owned.lock().expect("owned lock poisoned");
        for u in uids {
            dir.watchers.entry(u.clone()).or_default().insert(from, now);
        }
        drop(dir);
        self.lookup(uids)
    }

    /// The owners say these uids' connections changed: forget where they were.
    pub fn moved(&self, uids: &[String]) {
        let mut cache = self.cache.lock().expect("cache lock poisoned");
        self.bump();
        for u in uids {
            cache.by_uid.remove(u);
        }
    }

    /// Where each of `uids` (owned here) is online; offline uids are left out.
    pub fn lookup(&self, uids: &[String]) -> Vec<Located> {
        let owned = self.owned.lock().expect("owned lock poisoned");
        uids.iter()
            .filter_map(|u| {
                owned.users.get(u).map(|nodes| {
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
        let mut guard = self.owned.lock().expect("owned lock poisoned");
        let dir = &mut *guard;
        let mut changed = Vec::new();
        dir.users.retain(|uid, nodes| {
            if nodes.remove(&node).is_some() {
                changed.push(uid.clone());
            }
            !nodes.is_empty()
        });
        for w in dir.watchers.values_mut() {
            w.remove(&node);
        }
        dir.watchers.retain(|_, w| !w.is_empty());
        let any = !changed.is_empty();
        for uid in changed {
            dir.changed(&uid);
        }
        drop(guard);
        if any {
            self.bump();
        }
        self.wake.notify_one();
    }

    /// Keep only the entries of live nodes, announced since `STALE` before `now`, for uids
    /// `me` owns among `live`.
    /// Watchers that asked `CACHE_TTL` before `now` or are not live are forgotten.
    fn retain_owned(&self, me: NodeId, live: &BTreeSet<NodeId>, now: Instant) {
        let mut guard = self.owned.lock().expect("owned lock poisoned");
        let dir = &mut *guard;
        let mut changed = Vec::new();
        dir.users.retain(|uid, nodes| {
            let before = nodes.len();
            nodes.retain(|n, e| live.contains(n) && now.saturating_duration_since(e.seen) < STALE);
            let keep = !nodes.is_empty() && owner(uid, live) == Some(me);
            if !keep || nodes.len() != before {
                changed.push(uid.clone());
            }
            keep
        });
        if !changed.is_empty() {
            self.bump();
        }
        for uid in changed {
            dir.changed(&uid);
        }
        dir.watchers.retain(|uid, w| {
            w.retain(|n, asked| live.contains(n) && now.saturating_duration_since(*asked) < CACHE_TTL);
            !w.is_empty() && owner(uid, live) == Some(me)
        });
    }

    /// The `Moved` notifications to send now: node -> uids.
    fn take_moved(&self) -> HashMap<NodeId, BTreeSet<String>> {
        std::mem::take(&mut self.owned.lock().expect("owned lock poisoned").moved)
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
            let moved = self.presence.take_moved();
            if uids.is_empty() && moved.is_empty() {
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
            // A lost `Moved` is not sent again: the entry it drops expires after CACHE_TTL.
            let moves = moved.into_iter().map(|(n, uids)| async move {
                let uids: Vec<String> = uids.into_iter().collect();
                if n == me.id {
                    me.presence.moved(&uids);
                    return;
                }
                let sent = me.ask(n, AppRpc::Moved(uids), PEER_TTL).await;
                if let Err(e) = sent.and_then(|r| r.typed::<()>()) {
                    tracing::debug!(node = n, error = %e, "presence: a Moved was lost");
                }
            });
            futures::future::join(futures::future::join_all(sends), futures::future::join_all(moves)).await;
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

impl Node {
    /// Where `uids` are online, for the fan-out. From this node's cache where it has a fresh
    /// entry, else from the owners (`AppRpc::Watch`), whose answers are cached (see the module
    /// doc). A uid whose owner does not answer counts as offline.
    pub async fn locate_cached(&self, uids: impl IntoIterator<Item = String>) -> Found {
        let live = self.live_nodes();
        let now = Instant::now();
        let mut learned = now;
        let mut by_node: BTreeMap<NodeId, Vec<String>> = BTreeMap::new();
        let mut misses: HashMap<NodeId, Vec<String>> = HashMap::new();
        let epoch = {
            let mut cache = self.presence.cache.lock().expect("cache lock poisoned");
            if cache.live != live {
                cache.by_uid.clear();
                cache.live = live.clone();
                self.presence.bump();
            }
            for uid in uids {
                let Some(o) = owner(&uid, &live) else { continue };
                match cache.by_uid.get(&uid) {
                    Some((nodes, at)) if o != self.id && now.saturating_duration_since(*at) < CACHE_TTL => {
                        learned = learned.min(*at);
                        for n in nodes {
                            by_node.entry(*n).or_default().push(uid.clone());
                        }
                    }
                    _ => misses.entry(o).or_default().push(uid),
                }
            }
            self.presence.epoch.load(Ordering::Acquire)
        };
        let found = |by_node, complete| Found {
            by_node,
            epoch,
            live,
            learned,
            complete,
        };
        if misses.is_empty() {
            return found(by_node, true);
        }
        let asks = misses.into_iter().map(|(o, uids)| async move {
            if o == self.id {
                return (o, uids.clone(), Some(self.presence.lookup(&uids)));
            }
            let found = self
                .ask(o, AppRpc::Watch(self.id, uids.clone()), PEER_TTL)
                .await
                .and_then(|r| r.typed::<Vec<Located>>());
            match found {
                Ok(found) => (o, uids, Some(found)),
                Err(e) => {
                    tracing::debug!(owner = o, error = %e, "presence: lookup failed");
                    (o, uids, None)
                }
            }
        });
        let answers = futures::future::join_all(asks).await;
        let complete = answers.iter().all(|(_, _, found)| found.is_some());
        let mut cache = self.presence.cache.lock().expect("cache lock poisoned");
        let keep = self.presence.epoch.load(Ordering::Acquire) == epoch;
        if keep && cache.by_uid.len() >= CACHE_MAX {
            cache.by_uid.clear();
        }
        for (o, asked, found) in answers {
            let Some(found) = found else { continue };
            let mut at: HashMap<String, Vec<NodeId>> = found
                .into_iter()
                .map(|(uid, nodes)| (uid, nodes.into_iter().map(|(n, _)| n).collect()))
                .collect();
            for uid in asked {
                let nodes = at.remove(&uid).unwrap_or_default();
                for n in &nodes {
                    by_node.entry(*n).or_default().push(uid.clone());
                }
                if keep && o != self.id {
                    cache.by_uid.insert(uid, (nodes, now));
                }
            }
        }
        drop(cache);
        found(by_node, complete)
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
    fn watchers_hear_of_changes_once() {
        let p = Presence::default();
        let ann = |node, uid: &str, f: &[u8]| Announcement {
            node,
            users: vec![(uid.to_string(), f.to_vec())],
        };
        let uids = |s: &[&str]| s.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        p.apply(ann(1, "a", &[1]));
        // Node 2 caches a (online) and b (offline); node 3 caches a.
        assert_eq!(p.watch(2, &uids(&["a", "b"])).len(), 1);
        assert_eq!(p.watch(3, &uids(&["a"])).len(), 1);
        // A refresh that changes nothing tells nobody.
        p.apply(ann(1, "a", &[1]));
        assert!(p.take_moved().is_empty());
        // b connects: its watcher hears, once.
        p.apply(ann(1, "b", &[0]));
        p.apply(ann(1, "b", &[]));
        let want: HashMap<NodeId, BTreeSet<String>> = [(2, ["b".to_string()].into())].into();
        assert_eq!(p.take_moved(), want);
        // a's node goes down: both watchers hear.
        p.node_down(1);
        let moved = p.take_moved();
        assert_eq!(moved.keys().copied().collect::<BTreeSet<_>>(), [2, 3].into());
        // A dead watcher is forgotten; old watches expire.
        p.watch(4, &uids(&["c"]));
        p.node_down(4);
        p.apply(ann(1, "c", &[1]));
        assert!(p.take_moved().is_empty());
        p.watch(2, &uids(&["c"]));
        let live: BTreeSet<NodeId> = [1, 2].into();
        let me = owner("c", &live).expect("two live nodes");
        p.retain_owned(me, &live, Instant::now() + CACHE_TTL);
        p.apply(ann(2, "c", &[1]));
        assert!(p.take_moved().is_empty());
    }

    #[test]
    fn a_changed_owned_entry_bumps_the_epoch_and_a_repeat_does_not() {
        let p = Presence::default();
        let epoch = || p.epoch.load(Ordering::Acquire);
        let ann = |flags: &[u8]| Announcement {
            node: 2,
            users: vec![("a".to_string(), flags.to_vec())],
        };
        p.apply(ann(&[1]));
        assert_eq!(epoch(), 1);
        p.apply(ann(&[1]));
        assert_eq!(epoch(), 1, "a repeated announcement changes nothing");
        p.apply(ann(&[1, 0]));
        assert_eq!(epoch(), 2);
        p.node_down(3);
        assert_eq!(epoch(), 2, "a node without entries going down changes nothing");
        p.node_down(2);
        assert_eq!(epoch(), 3);
    }

    #[test]
    fn moved_drops_cached_locations_and_bumps_the_epoch() {
        let p = Presence::default();
        {
            let mut c = p.cache.lock().expect("cache lock poisoned");
            c.by_uid.insert("a".into(), (vec![1], Instant::now()));
            c.by_uid.insert("b".into(), (vec![], Instant::now()));
        }
        p.moved(&["a".to_string()]);
        assert_eq!(p.epoch.load(Ordering::Acquire), 1);
        let c = p.cache.lock().expect("cache lock poisoned");
        assert!(!c.by_uid.contains_key("a"));
        assert!(c.by_uid.contains_key("b"));
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
