//! What a group's instance reads while it starts, read at once.
//!
//! openraft's start (`get_initial_state`) asks the log store and the state machine one thing
//! at a time: the vote, the log state (twice), the applied state (three times), the first
//! entry. Each ask was a store read on a blocking thread, ~70 µs of thread hand-offs on this
//! machine, and a hibernated channel's first request waits for two starts in a row (its
//! leader's, then a follower's). [`read`] gets all of it in one store read, and the group's
//! [`LogStore`](super::log_store::LogStore) and [`StateMachine`](super::state_machine::StateMachine)
//! answer from it.
//!
//! Invariant: an answer from the preload is what the store holds. The preload is taken
//! before the instance's first write of any kind (vote, append, truncation, purge, apply,
//! snapshot), and dropped once the instance has started; while the instance exists nothing
//! else writes the group's rows (a cold migration or a repair needs the group stopped here).

use std::sync::{Arc, Mutex};

use openraft::entry::RaftEntry;

use super::state_machine::{SmState, load_state};
use super::{Entry, GroupId, LogId, Vote};
use crate::store::{KvRead, Store, Table, keys};

/// The stored state openraft reads to start group `g` here.
pub struct Startup {
    pub vote: Option<Vote>,
    /// The stored last log id and last purged log id (`log_store::stored_log_state`).
    pub log_state: (Option<LogId>, Option<LogId>),
    pub sm: SmState,
    /// The first stored entry, right after the purged ones.
    pub first: Option<Entry>,
}

impl Startup {
    /// The first entry, if it is the one at `index`.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.first.as_ref().filter(|e| e.index() == index)
    }
}

/// Shared by one instance's log store and state machine; `None` once taken.
pub type Preload = Arc<Mutex<Option<Startup>>>;

/// Read what starting group `g` needs, in one store read of a few rows, on the calling thread
/// (`Store::read_blocking`). A failed read (a row that fails its seal, say) preloads nothing:
/// the start then reads row by row and reports the corruption as it always does.
pub fn read(store: &Store, g: GroupId) -> Preload {
    let read = store.read_blocking(move |r| {
        let log_state = super::log_store::stored_log_state(r, g)?;
        let first_index = log_state.1.map_or(0, |p| p.index() + 1);
        let key = keys::group_u64(g, first_index);
        let first = match r.get(Table::Log, &key)? {
            Some(v) => Some(crate::integrity::decode::<Entry>(Table::Log, &key, &v)?),
            None => None,
        };
        Ok(Startup {
            vote: r.get_decoded(Table::Raft, &super::log_store::vote_key(g))?,
            log_state,
            sm: load_state(r, g)?,
            first,
        })
    });
    Arc::new(Mutex::new(read.ok()))
}

/// Answer `f` of the preload, if it is still there.
pub fn with<T>(preload: &Preload, f: impl FnOnce(&Startup) -> T) -> Option<T> {
    preload.lock().expect("preload lock poisoned").as_ref().map(f)
}

/// Drop the preload: the instance is about to write, or has started.
pub fn take(preload: &Preload) {
    preload.lock().expect("preload lock poisoned").take();
}
