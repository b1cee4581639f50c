//! Raft plumbing shared by every group on the node: the openraft type configuration, the log
//! store and state machine over LMDB, and the multiplexed network.
//!
//! All groups (the metadata group 0 and one group per channel) use one type configuration;
//! the state machine dispatches on the group id.

pub mod log_store;
pub mod network;
pub mod startup;
pub mod state_machine;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

use crate::channel::{ChannelCmd, ChannelResp};
use crate::meta::{MetaCmd, MetaResp};

pub type NodeId = u64;
pub type GroupId = u64;

/// The metadata group; channel groups are numbered from 1 by the metadata state machine.
pub const META_GROUP: GroupId = 0;

/// The metadata group takes a snapshot once this many entries were committed since the last
/// one. A snapshot reads the metadata tables (tens of MB at most), so this bounds both the log
/// and how often that read happens.
pub const META_SNAPSHOT_EVERY: u64 = 10_000;
/// Entries the metadata group keeps behind its snapshot, so a replica that fell only a little
/// behind (a restart, a short partition) catches up from the log, not with a snapshot.
pub const META_LOG_KEPT: u64 = 1_000;
/// How long sending one snapshot (one frame) may take, ms.
const SNAPSHOT_TIMEOUT_MS: u64 = 30_000;

/// What a membership records about a node: where to reach its cluster transport.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Peer {
    pub cluster_addr: String,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.cluster_addr)
    }
}

/// A log entry's application payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Meta(MetaCmd),
    Channel(ChannelCmd),
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Meta(c) => write!(f, "meta:{c:?}"),
            Request::Channel(ChannelCmd::Send(m)) => write!(f, "send:{}", m.len()),
            Request::Channel(ChannelCmd::Conversation(c)) => write!(f, "conversation:{:?}", c.op),
        }
    }
}

/// What applying a [`Request`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Blank and membership entries, and requests sent to the wrong kind of group.
    None,
    Meta(MetaResp),
    Channel(ChannelResp),
}

openraft::declare_raft_types!(
    /// One type configuration for every group on the node.
    pub TypeConfig:
        D = Request,
        R = Response,
        Node = Peer,
);

pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// Closed when a group's rows on this node are about to be deleted (`Node::drop_group`). Every
/// write of the group instance that shares it checks it inside the writer's transaction: the
/// writer runs transactions in submission order, so a write that comes after the delete (an
/// append or an apply still queued when the group stopped: openraft's shutdown does not wait
/// for its state-machine worker) fails instead of leaving stray rows behind.
#[derive(Clone, Default)]
pub struct Fence(Arc<FenceState>);

#[derive(Default)]
pub struct FenceState {
    closed: AtomicBool,
    /// A write was refused: the instance had queued a write that was never stored.
    refused: AtomicBool,
}

impl Fence {
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// Whether a write of the instance was refused: after its stop, false means every write
    /// it queued is stored (so its log holds every entry it replicated).
    pub fn refused(&self) -> bool {
        self.0.refused.load(Ordering::Acquire)
    }

    /// Inside a write transaction of group `g`: refuse it once the fence is closed.
    pub fn check(&self, g: GroupId) -> crate::store::Result<()> {
        if self.is_closed() {
            self.0.refused.store(true, Ordering::Release);
            return Err(crate::store::StoreError::Fenced(g));
        }
        Ok(())
    }
}

/// The tables holding a channel group's rows, each under the group's key prefix.
pub const GROUP_TABLES: [crate::store::Table; 7] = {
    use crate::store::Table;
    [
        Table::Log,
        Table::Raft,
        Table::Sm,
        Table::Msgs,
        Table::Dedup,
        Table::Spans,
        Table::Convs,
    ]
};

/// Delete every row of channel group `g` on this node (it is no longer a replica).
pub fn delete_group(w: &mut impl crate::store::KvWrite, g: GroupId) -> crate::store::Result<()> {
    use crate::store::keys;
    let (from, to) = (keys::group(g), keys::prefix_end(&keys::group(g)));
    for t in GROUP_TABLES {
        w.delete_range(t, &from, &to)?;
    }
    Ok(())
}

/// [`delete_group`] one row at a time, for a small group: without a range delete the write
/// can be made durable by the write-ahead log instead of a checkpoint (`cluster::cold`).
pub fn delete_group_rows(w: &mut impl crate::store::KvWrite, g: GroupId) -> crate::store::Result<()> {
    use crate::store::keys;
    let (from, to) = (keys::group(g), keys::prefix_end(&keys::group(g)));
    for t in GROUP_TABLES {
        for (k, _) in w.range(t, &from, &to, usize::MAX, false)? {
            w.delete(t, &k)?;
        }
    }
    Ok(())
}

/// The Raft configuration of group `g`. A dead leader is replaced through node-level failure
/// detection (`cluster::failure`), not by these timers; they only decide how soon a paused or
/// cut-off leader is replaced, and what a busy group pays for ticks (every heartbeat x 13/64)
/// and heartbeats per write. Channel groups: 500 ms heartbeats, 1.5-3 s elections (at 100 ms
/// and 0.4-0.8 s the timers cost about 15 % of the write throughput). The metadata group:
/// 250 ms and 1-2 s; it never goes quiet, so its ticks are a fixed cost of every node.
/// Channel groups leave a commit advance to the next append or heartbeat
/// (`commit_only_append`, vendor/PATCHES.md): a follower applies later, a write costs two
/// fewer round trips. The metadata group tells followers at once: every node answers from its
/// own applied metadata.
///
/// Only the metadata group takes snapshots and purges its log behind them
/// (`state_machine` module doc): every [`META_SNAPSHOT_EVERY`] entries, keeping the last
/// [`META_LOG_KEPT`]. A channel group's log is its message store and is never purged.
///
/// `resume`: the group was hibernated by this process with every write it queued stored, so
/// if it led, it leads again at once in the same term (see `build_config` for why that is
/// unsafe otherwise, and ARCHITECTURE for why it is safe then).
pub fn raft_config(g: GroupId, resume: bool) -> Arc<openraft::Config> {
    // Built and validated once each: every group start (a wake-up) asks for one.
    static META: LazyLock<Arc<openraft::Config>> =
        LazyLock::new(|| build_config(250, 1000, 2000, true, true, false));
    static CHANNEL: LazyLock<Arc<openraft::Config>> =
        LazyLock::new(|| build_config(500, 1500, 3000, false, false, false));
    static RESUMING: LazyLock<Arc<openraft::Config>> =
        LazyLock::new(|| build_config(500, 1500, 3000, false, false, true));
    if g == META_GROUP {
        META.clone()
    } else if resume {
        RESUMING.clone()
    } else {
        CHANNEL.clone()
    }
}

fn build_config(
    heartbeat_interval: u64,
    election_timeout_min: u64,
    election_timeout_max: u64,
    commit_only_append: bool,
    snapshots: bool,
    resume: bool,
) -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "wukong".into(),
        heartbeat_interval,
        election_timeout_min,
        election_timeout_max,
        snapshot_policy: if snapshots {
            openraft::SnapshotPolicy::LogsSinceLast(META_SNAPSHOT_EVERY)
        } else {
            // A channel group's log is its data: kept whole, and a replica that falls behind
            // catches up from it.
            openraft::SnapshotPolicy::Never
        },
        max_in_snapshot_log_to_keep: META_LOG_KEPT,
        // A snapshot of the metadata is one frame holding every user and channel record.
        install_snapshot_timeout: SNAPSHOT_TIMEOUT_MS,
        // Catch-up speed: a 50k-entry log in 13 appends, not 98. `LogStore` caps each payload
        // by bytes too.
        max_payload_entries: 4096,
        enable_pre_vote: Some(true),
        // A restarted leader must win a new election in a new term. Restoring leadership in
        // the same term is unsafe in general: the log store replicates entries from memory
        // before its own fsync (group commit), so a leader that crashed may come back without
        // entries its followers hold and give the same (term, index) to a different entry.
        // Found by the leader-kill drill: replicas with equal seqs, different checksums. Only a
        // group this process stopped with every queued write stored may resume (`resume`).
        enable_leader_restore: Some(resume),
        commit_only_append: Some(commit_only_append),
        // The per-stage latency rings are filled only with openraft's `runtime-stats`
        // feature, which is off, but every group start allocated them (6 x 1,024 entries,
        // ~150 KB): a wake-up paid their page faults and the allocator their purge.
        log_stage_capacity: Some(1),
        ..Default::default()
    };
    Arc::new(config.validate().expect("the static raft config is valid"))
}
