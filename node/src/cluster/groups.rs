//! The registry of the channel groups on this node: one slot per group that runs (or is
//! starting, or stopping), and which groups this process hibernated.
//!
//! Invariants:
//! - At most one instance of a group runs here: a slot's openraft instance is created once
//!   (`GroupSlot::raft`), and `Node::stop_group` puts a closed slot (a [`StandIn`]) in the
//!   group's place until the old instance has stopped and its writes have left the writer.
//! - A slot's fence closes before its instance stops; a closed slot is never reused.
//! - The locks here guard only a lookup, an insert or a removal; nothing awaits under them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::raft::{Fence, GroupId, Raft};

/// A running (or starting) channel group.
#[derive(Default)]
pub(super) struct GroupSlot {
    pub(super) raft: OnceCell<Raft>,
    /// Milliseconds (unix) of the last client request served for this group here.
    pub(super) last_active: AtomicU64,
    /// Its openraft ticks are stopped (`quiet`).
    pub(super) quiet: AtomicBool,
    /// Closed when the instance stops (`Node::stop_group`): it writes nothing more.
    pub(super) fence: Fence,
    /// Held by `Node::stop_group` while a closed slot stands in for a stopping group: a
    /// request for the group waits on it, then starts a new instance.
    pub(super) stopping: Arc<tokio::sync::Mutex<()>>,
    /// Held by a migration of the group on its leader (`migrate_local`): a second one (a
    /// retried send, the drain) waits for it instead of failing on its membership change,
    /// and the group does not hibernate halfway through.
    pub(super) migration: tokio::sync::Mutex<()>,
}

#[derive(Default)]
pub(super) struct Groups {
    slots: Mutex<HashMap<GroupId, Arc<GroupSlot>>>,
    /// Groups this process stopped by hibernation (their wake-up campaigns at once), and
    /// whether each may resume its leadership (every write it queued was stored).
    hibernated: Mutex<HashMap<GroupId, bool>>,
}

impl Groups {
    pub(super) fn slot(&self, g: GroupId) -> Option<Arc<GroupSlot>> {
        self.slots().get(&g).cloned()
    }

    /// The group's slot, a new (empty) one if it has none.
    pub(super) fn slot_or_new(&self, g: GroupId) -> Arc<GroupSlot> {
        self.slots().entry(g).or_default().clone()
    }

    /// Put a closed slot in the group's place; returns the slot it replaced and the stand-in,
    /// which removes the closed slot again when dropped.
    pub(super) fn stand_in(&self, g: GroupId) -> (Option<Arc<GroupSlot>>, StandIn<'_>) {
        let closed = Arc::new(GroupSlot::default());
        closed.fence.close();
        let held = closed
            .stopping
            .clone()
            .try_lock_owned()
            .expect("a new slot's stopping lock is free");
        let old = self.slots().insert(g, closed.clone());
        (
            old,
            StandIn {
                groups: self,
                g,
                closed,
                _held: held,
            },
        )
    }

    /// Milliseconds (unix) of the last client request for the group here, if it runs.
    pub(super) fn last_active(&self, g: GroupId) -> Option<u64> {
        self.slots()
            .get(&g)
            .map(|s| s.last_active.load(Ordering::Relaxed))
    }

    /// The group's Raft if it runs here.
    pub(super) fn live(&self, g: GroupId) -> Option<Raft> {
        self.slots().get(&g).and_then(|s| s.raft.get().cloned())
    }

    /// The running groups and their Rafts.
    pub(super) fn all_live(&self) -> Vec<(GroupId, Raft)> {
        self.slots()
            .iter()
            .filter_map(|(g, s)| s.raft.get().map(|r| (*g, r.clone())))
            .collect()
    }

    /// The running groups that no migration holds, with their last client request (ms).
    pub(super) fn live_unmigrating(&self) -> Vec<(u64, GroupId, Raft)> {
        self.slots()
            .iter()
            .filter(|(_, s)| s.migration.try_lock().is_ok())
            .filter_map(|(g, s)| {
                s.raft
                    .get()
                    .map(|r| (s.last_active.load(Ordering::Relaxed), *g, r.clone()))
            })
            .collect()
    }

    pub(super) fn mark_hibernated(&self, g: GroupId, resumable: bool) {
        self.hibernated
            .lock()
            .expect("hibernated lock poisoned")
            .insert(g, resumable);
    }

    /// Whether this process hibernated the group; forgets it.
    pub(super) fn take_hibernated(&self, g: GroupId) -> bool {
        self.hibernated
            .lock()
            .expect("hibernated lock poisoned")
            .remove(&g)
            .is_some()
    }

    /// Whether the group was hibernated here with every write it queued stored: if it led,
    /// it may lead again in the same term (`raft::raft_config`).
    pub(super) fn resumable(&self, g: GroupId) -> bool {
        self.hibernated
            .lock()
            .expect("hibernated lock poisoned")
            .get(&g)
            .copied()
            .unwrap_or(false)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, Arc<GroupSlot>>> {
        self.slots.lock().expect("groups lock poisoned")
    }
}

/// The closed slot `Node::stop_group` put in a group's place: removed (unless a later stop
/// replaced it) when this drops, then the requests waiting on it go on.
pub(super) struct StandIn<'a> {
    groups: &'a Groups,
    g: GroupId,
    closed: Arc<GroupSlot>,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for StandIn<'_> {
    fn drop(&mut self) {
        let mut slots = self.groups.slots();
        if slots.get(&self.g).is_some_and(|s| Arc::ptr_eq(s, &self.closed)) {
            slots.remove(&self.g);
        }
    }
}
