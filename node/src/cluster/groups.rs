//! The registry of the channel groups on this node: one slot per group that runs (or is
//! starting, or stopping), which groups this process hibernated, and which ones a cold
//! migration holds (`cluster::cold`).
//!
//! Invariants:
//! - At most one instance of a group runs here: a slot's openraft instance is created once
//!   (`GroupSlot::raft`), and `Node::stop_group` puts a closed slot (a [`StandIn`]) in the
//!   group's place until the old instance has stopped and its writes have left the writer.
//! - A slot's fence closes before its instance stops; a closed slot is never reused.
//! - A sealed group has no slot, and gets none until it is released: sealing and starting
//!   decide under one lock.
//! - The locks here guard only a lookup, an insert or a removal; nothing awaits under them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, OnceCell};

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

/// A group a cold migration holds on this node (`cluster::cold`): it does not start here, and
/// the migration's writes to its rows check `open` inside the writer's transaction. The
/// release (or another coordinator taking the seal over) closes it there too, so a write
/// queued after that changes nothing.
pub(super) struct Seal {
    open: AtomicBool,
    pub(super) since: Instant,
    /// The coordinator holding it (`cold::Coordinator::token`).
    pub(super) owner: u64,
}

impl Seal {
    pub(super) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub(super) fn close(&self) {
        self.open.store(false, Ordering::Release);
    }
}

#[derive(Default)]
struct Registry {
    slots: HashMap<GroupId, Arc<GroupSlot>>,
    sealed: HashMap<GroupId, Arc<Seal>>,
}

#[derive(Default)]
pub(super) struct Groups {
    registry: Mutex<Registry>,
    /// Notified when seals are released: requests for a sealed group wait on it.
    pub(super) released: Notify,
    /// This node's part when it coordinates cold migrations.
    pub(super) coordinator: super::cold::Coordinator,
    /// Groups this process stopped by hibernation (their wake-up campaigns at once), and
    /// whether each may resume its leadership (every write it queued was stored).
    hibernated: Mutex<HashMap<GroupId, bool>>,
}

impl Groups {
    pub(super) fn slot(&self, g: GroupId) -> Option<Arc<GroupSlot>> {
        self.registry().slots.get(&g).cloned()
    }

    /// The group's slot, a new (empty) one if it has none; None while it is sealed.
    pub(super) fn slot_or_new(&self, g: GroupId) -> Option<Arc<GroupSlot>> {
        let mut r = self.registry();
        if r.sealed.contains_key(&g) {
            return None;
        }
        Some(r.slots.entry(g).or_default().clone())
    }

    /// Seal each group that has no slot here (it does not run, start or stop) for `owner`.
    /// A group sealed by another coordinator is taken over only once its seal is older than
    /// `take_over_after`. Answers each seal `owner` now holds, and whether this call made it
    /// where there was none.
    pub(super) fn seal(
        &self,
        gs: &[GroupId],
        owner: u64,
        take_over_after: Option<std::time::Duration>,
    ) -> Vec<(GroupId, Arc<Seal>, bool)> {
        let mut r = self.registry();
        let mut out = Vec::new();
        for g in gs {
            if r.slots.contains_key(g) {
                continue;
            }
            let made = Arc::new(Seal {
                open: AtomicBool::new(true),
                since: Instant::now(),
                owner,
            });
            match r.sealed.get(g) {
                None => {
                    r.sealed.insert(*g, made.clone());
                    out.push((*g, made, true));
                }
                Some(s) if s.owner == owner => out.push((*g, s.clone(), false)),
                Some(s) if take_over_after.is_some_and(|d| s.since.elapsed() >= d) => {
                    s.close();
                    r.sealed.insert(*g, made.clone());
                    out.push((*g, made, false));
                }
                Some(_) => {}
            }
        }
        out
    }

    /// The group's seal, if it has one.
    pub(super) fn sealed(&self, g: GroupId) -> Option<Arc<Seal>> {
        self.registry().sealed.get(&g).cloned()
    }

    /// Every seal held here.
    pub(super) fn all_sealed(&self) -> Vec<(GroupId, Arc<Seal>)> {
        self.registry()
            .sealed
            .iter()
            .map(|(g, s)| (*g, s.clone()))
            .collect()
    }

    /// Forget the groups' seals (their release committed): they may start again.
    pub(super) fn unseal(&self, seals: &[(GroupId, Arc<Seal>)]) {
        {
            let mut r = self.registry();
            for (g, seal) in seals {
                // Only that seal: another coordinator may have taken the group over since.
                if r.sealed.get(g).is_some_and(|s| Arc::ptr_eq(s, seal)) {
                    r.sealed.remove(g);
                }
            }
        }
        self.released.notify_waiters();
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
        let old = self.registry().slots.insert(g, closed.clone());
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
        self.registry()
            .slots
            .get(&g)
            .map(|s| s.last_active.load(Ordering::Relaxed))
    }

    /// The group's Raft if it runs here.
    pub(super) fn live(&self, g: GroupId) -> Option<Raft> {
        self.registry().slots.get(&g).and_then(|s| s.raft.get().cloned())
    }

    /// The running groups and their Rafts.
    pub(super) fn all_live(&self) -> Vec<(GroupId, Raft)> {
        self.registry()
            .slots
            .iter()
            .filter_map(|(g, s)| s.raft.get().map(|r| (*g, r.clone())))
            .collect()
    }

    /// The running groups that no migration holds, with their last client request (ms).
    pub(super) fn live_unmigrating(&self) -> Vec<(u64, GroupId, Raft)> {
        self.registry()
            .slots
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

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().expect("groups lock poisoned")
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
        let mut r = self.groups.registry();
        let slots = &mut r.slots;
        if slots.get(&self.g).is_some_and(|s| Arc::ptr_eq(s, &self.closed)) {
            slots.remove(&self.g);
        }
    }
}
