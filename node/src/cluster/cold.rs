//! Cold migration: moving hibernated channels to their new replicas in batches, without
//! starting their Raft groups (the drain, `scale::run_drain`).
//!
//! A migration through Raft (`scale::migrate_local`) wakes the group on every replica, writes
//! three membership entries and puts the group back to sleep: about 12 CPU-ms of the cluster
//! per channel. A hibernated group runs nowhere, so the coordinator (the metadata leader) can
//! do the leader's work itself, for hundreds of groups per round trip:
//!
//! 1. **Seal** the group on every old and new replica ([`AppRpc::Seal`]): only where it does
//!    not run, durably (a `local` row), and from then on it does not start there. Each replica
//!    answers how its log ends.
//! 2. **Plan**: the old replicas' logs must be identical, end with an entry of the leader `L`
//!    of the last term, and have the old replica set as their configuration. The change is
//!    one membership entry `E` (the new replica set) right after the last entry, with that same
//!    leader id: the entry `L` itself would have appended.
//! 3. **Write** `E` on `L` first, then on the other old replicas (appended and applied: every
//!    entry before it is on every replica, so committed), and install the whole group (log and
//!    state machine rows, read from `L`) on each new replica.
//! 4. **Record** the new replica sets in the metadata (one write for the batch), then
//!    **release** the seals ([`AppRpc::Release`]); removed replicas delete their rows in the
//!    same transaction.
//!
//! Why it is safe: while a group is sealed on every old replica it runs nowhere (a group
//! starts only where it is not sealed), so no leader can append anything meanwhile. An entry
//! with `L`'s leader id at `E`'s index can come only from `L`, and `L` has `E` before anyone
//! else does, so a resumed `L` (leader restore) never gives that index to another entry. The
//! seals stay until `E` is on every old replica and the new ones hold the whole log: from
//! then on each replica's configuration is the new set (or, for a removed replica, one without
//! itself), so no leader of the old configuration can be elected (a candidate without `E` is
//! behind every replica that has it). A direct change from one set to the other is safe here
//! because it is committed on every old replica before any of them runs again: there is no
//! moment at which both configurations could elect.
//!
//! An interrupted migration leaves its seals (they survive restarts). If `E` may be on some
//! replica but not all, the group stays sealed until a coordinator finishes it: the next
//! drain round, or the metadata leader when a replica reports a seal older than
//! [`STALE_SEAL`] ([`AppRpc::ResolveSeals`]); it copies `L`'s `E` to the rest, never writes
//! another. Where the old replicas' logs are identical, nothing was written, so the seals are
//! simply released. A channel that does not fit (its group runs somewhere, its logs differ,
//! it is large, a replica is unreachable) is released and migrates through Raft.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::entry::RaftEntry;
use serde::{Deserialize, Serialize};

use super::Node;
use super::rpc::AppRpc;
use crate::error::{NodeError, Result};
use crate::meta::{self, ChannelRecord, MetaCmd};
use crate::raft::state_machine::{self, load_state};
use crate::raft::{Entry, GroupId, LogId, NodeId, Peer};
use crate::store::{KvRead, KvWrite, Table, keys};

/// How long a request for a sealed group waits for its release before it is refused.
pub(super) const SEALED_WAIT: Duration = Duration::from_secs(3);
/// Channels one cold round takes on.
pub(super) const COLD_BATCH: usize = 128;
/// Groups one writer turn of a cold write takes on (`Node::write_in_turns`).
const WRITE_TURN: usize = 16;
/// Payload bytes of the channels one round copies to new replicas at most; the rest wait
/// for the next round.
const COLD_ROUND_BYTES: u64 = 32 << 20;
/// A channel holding more payload than this migrates through Raft (which streams its log).
const COLD_MAX_BYTES: u64 = 4 << 20;
/// A replica reports a seal this old to the metadata leader, which finishes or releases it.
const STALE_SEAL: Duration = Duration::from_secs(10);
/// Each cold step's requests wait this long for an answer.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

const SEAL_PREFIX: &[u8] = b"seal/";

/// A node's identity and lock as a coordinator of cold migrations. Seals carry the token of
/// the coordinator that holds them: another one (a new metadata leader) takes them over only
/// once they are [`STALE_SEAL`] old, and every write and release names its token, so a
/// coordinator that was slow (paused, cut off) cannot act on a group another took over.
pub(super) struct Coordinator {
    token: u64,
    /// One migration of this node at a time: the drain's and the resolution of stale seals.
    busy: tokio::sync::Mutex<()>,
}

impl Default for Coordinator {
    fn default() -> Coordinator {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("the OS random source is available");
        Coordinator {
            token: u64::from_le_bytes(b),
            busy: Default::default(),
        }
    }
}

fn seal_key(g: GroupId) -> Vec<u8> {
    [SEAL_PREFIX, &g.to_be_bytes()].concat()
}

/// How a sealed group's log ends on one replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealState {
    pub group: GroupId,
    /// The seal was made by this request (none was left by an earlier migration).
    pub fresh: bool,
    pub last: Option<LogId>,
    /// The entry before `last`.
    pub prev: Option<LogId>,
    /// The last entry, when it is a membership change.
    pub last_membership: Option<Entry>,
    /// The voters of the configuration the log ends in, when it is known here (applied, or
    /// the last entry) and plain (not joint, no learners).
    pub voters: Option<BTreeSet<NodeId>>,
    /// Payload bytes stored.
    pub bytes: u64,
}

/// One write of a cold migration to a sealed group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ColdOp {
    /// Append `entry` after `prev` and apply both (`state_machine::append_applied`).
    Append { prev: LogId, entry: Entry },
    /// Replace the group's rows with another replica's (`state_machine::install_rows`).
    Install { rows: state_machine::Rows },
}

/// A group's rows as `state_machine::group_rows` reads them.
pub type GroupRows = (GroupId, state_machine::Rows);

fn seal_state(r: &impl KvRead, g: GroupId, fresh: bool) -> crate::store::Result<SealState> {
    let (last, _) = crate::raft::log_store::stored_log_state(r, g)?;
    let entry_at = |i: u64| -> crate::store::Result<Option<Entry>> {
        r.get(Table::Log, &keys::group_u64(g, i))?
            .map(|v| crate::integrity::decode::<Entry>(Table::Log, &keys::group_u64(g, i), &v))
            .transpose()
    };
    let last_entry = match last {
        Some(l) => entry_at(l.index())?,
        None => None,
    };
    let prev = match last {
        Some(l) if l.index() > 0 => {
            let key = keys::group_u64(g, l.index() - 1);
            r.get(Table::Log, &key)?
                .map(|v| crate::raft::log_store::entry_log_id(&key, &v))
                .transpose()?
        }
        _ => None,
    };
    let last_membership = last_entry.filter(|e| e.get_membership().is_some());
    let state = load_state(r, g)?;
    let plain = |m: &openraft::Membership<NodeId, Peer>| {
        let voters: BTreeSet<NodeId> = m.voter_ids().collect();
        (m.get_joint_config().len() == 1 && m.nodes().count() == voters.len()).then_some(voters)
    };
    let voters = match (&last_membership, state.last_applied == last) {
        (Some(e), _) => e.get_membership().as_ref().and_then(plain),
        (None, true) => plain(state.membership.membership()),
        (None, false) => None,
    };
    Ok(SealState {
        group: g,
        fresh,
        last,
        prev,
        last_membership,
        voters,
        bytes: state.channel.bytes,
    })
}

/// What a round does with one channel.
enum Plan {
    /// Write `entry` (the replica set `target`) after `prev`, `leader` first.
    Move {
        entry: Entry,
        prev: LogId,
        leader: NodeId,
        target: Vec<NodeId>,
    },
    /// Every old replica already has the change (an interrupted migration): install it where
    /// a new replica lacks it, record it and release.
    Record { leader: NodeId },
    /// Nothing was written anywhere: release the seals (it migrates through Raft later).
    Release,
    /// A change may be on some replicas only: keep the seals until a later round finishes it.
    Hold,
}

/// One channel a round moves.
struct Job {
    rec: ChannelRecord,
    desired: Vec<NodeId>,
    /// The leader of the log's last term: written first, copied from.
    leader: NodeId,
    /// The change (after the entry it follows), unless every old replica has it.
    append: Option<(LogId, Entry)>,
    /// Old replicas that lack the change, and new ones that lack the group.
    appends: Vec<NodeId>,
    installs: Vec<NodeId>,
}

/// Decide a channel's plan from its replicas' seal states (`None`: did not answer or could
/// not seal, e.g. the group runs there).
fn plan(
    rec: &ChannelRecord,
    desired: &[NodeId],
    states: &HashMap<NodeId, SealState>,
    addrs: &BTreeMap<NodeId, Peer>,
) -> Plan {
    let olds: Vec<Option<&SealState>> = rec.replicas.iter().map(|n| states.get(n)).collect();
    let present: Vec<&SealState> = olds.iter().flatten().copied().collect();
    let identical = present.windows(2).all(|w| w[0].last == w[1].last);
    // Without every old replica's answer nothing may be written. Releasing is safe when no
    // earlier migration can have left a change behind: a seal made now means none did (a
    // change is written only once every old replica holds a seal, and those stay until it
    // is everywhere), and so do identical logs on every old replica, or on those that
    // answered if the leader of their last entry is one of them (a change is written on
    // that leader first).
    let last_leader = present
        .iter()
        .filter_map(|s| s.last)
        .max_by_key(|l| l.index())
        .map(|l| l.committed_leader_id().node_id);
    let releasable = present.iter().any(|s| s.fresh)
        || (identical
            && (present.len() == olds.len()
                || last_leader.is_some_and(|l| states.contains_key(&l) && rec.replicas.contains(&l))));
    let fallback = if releasable { Plan::Release } else { Plan::Hold };
    if present.len() < olds.len() {
        return fallback;
    }
    let want: BTreeSet<NodeId> = desired.iter().copied().collect();
    let was: BTreeSet<NodeId> = rec.replicas.iter().copied().collect();
    let Some(top) = present.iter().max_by_key(|s| s.last.map(|l| l.index())) else {
        return fallback;
    };
    let Some(last) = top.last else {
        return fallback;
    };
    let leader = last.committed_leader_id().node_id;
    if !was.contains(&leader) || states.get(&leader).map(|s| s.last) != Some(top.last) {
        return fallback;
    }
    if identical {
        if desired.iter().any(|n| !states.contains_key(n)) {
            return fallback;
        }
        return match &top.voters {
            Some(v) if *v == want => Plan::Record { leader },
            Some(v) if *v == was && want != was && top.bytes <= COLD_MAX_BYTES => {
                let nodes: BTreeMap<NodeId, Peer> = desired
                    .iter()
                    .map(|n| (*n, addrs.get(n).cloned().unwrap_or_default()))
                    .collect();
                match openraft::Membership::new(vec![want], nodes) {
                    Ok(m) => Plan::Move {
                        entry: Entry::new_membership(
                            LogId::new(*last.committed_leader_id(), last.index() + 1),
                            m,
                        ),
                        prev: last,
                        leader,
                        target: desired.to_vec(),
                    },
                    Err(_) => Plan::Release,
                }
            }
            _ => Plan::Release,
        };
    }
    // The leader is one entry ahead of some replicas: a change of ours that did not reach
    // them all. Finish it with the leader's own entry, to the set it names (the placement
    // may have changed since: the channel then stays in the backlog and moves again).
    match (&top.last_membership, top.prev, &top.voters) {
        (Some(entry), Some(prev), Some(v))
            if v.iter().all(|n| states.contains_key(n))
                && present.iter().all(|s| s.last == top.last || s.last == Some(prev)) =>
        {
            Plan::Move {
                entry: entry.clone(),
                prev,
                leader,
                target: desired
                    .iter()
                    .filter(|n| v.contains(n))
                    .chain(v.iter().filter(|n| !want.contains(n)))
                    .copied()
                    .collect(),
            }
        }
        _ => fallback,
    }
}

impl Node {
    /// How many groups a cold migration holds sealed here (`/metrics`).
    pub fn sealed_groups(&self) -> usize {
        self.groups.all_sealed().len()
    }

    /// Load the seals kept across a restart (before anything is served).
    pub(super) async fn load_seals(&self) -> Result<()> {
        let gs = self
            .store
            .read(|r| {
                Ok(r.range(
                    Table::Local,
                    SEAL_PREFIX,
                    &keys::prefix_end(SEAL_PREFIX),
                    usize::MAX,
                    false,
                )?
                .into_iter()
                .filter_map(|(k, v)| {
                    Some((
                        keys::u64_suffix(&k)?,
                        crate::store::decode::<u64>(Table::Local, &v).ok()?,
                    ))
                })
                .collect::<Vec<_>>())
            })
            .await?;
        if !gs.is_empty() {
            tracing::warn!(
                groups = gs.len(),
                "channel groups sealed by an unfinished cold migration"
            );
        }
        for (g, owner) in gs {
            self.groups.seal(&[g], owner, None);
        }
        Ok(())
    }

    /// [`AppRpc::Seal`]: seal the groups that do not run here for coordinator `owner`
    /// (taking over seals older than `take_over_after`); answers their states.
    ///
    /// When it resolves stale seals (`take_over_after`), a group that runs here without
    /// leading is stopped first, so it can be sealed too. Such a group may be waiting on the
    /// very seals being resolved: an interrupted release freed it here, a request woke it, and
    /// it campaigns in vain while its other replicas stay sealed; without its answer the plan
    /// could only hold them. A follower or candidate stops as a hibernated one does, and
    /// starts again at the next request or message once it is released.
    pub(super) async fn seal_local(
        &self,
        gs: Vec<GroupId>,
        owner: u64,
        take_over_after: Option<Duration>,
    ) -> Result<Vec<SealState>> {
        if take_over_after.is_some() {
            for g in &gs {
                let follows = self
                    .live_group(*g)
                    .is_some_and(|r| r.metrics().borrow_watched().state != openraft::ServerState::Leader);
                if follows {
                    // Not a hibernation: a leader may run elsewhere, so the group wakes with a
                    // pre-vote (`wake_channel_group`), not a campaign.
                    let _ = self.stop_group(*g, |_| Ok(())).await;
                }
            }
        }
        let sealed: Vec<(GroupId, bool)> = self
            .groups
            .seal(&gs, owner, take_over_after)
            .into_iter()
            .map(|(g, _, fresh)| (g, fresh))
            .collect();
        let items = sealed.into_iter().map(|(g, fresh)| (g, fresh, owner)).collect();
        self.write_in_turns(items, |w, (g, fresh, owner)| {
            w.put(Table::Local, &seal_key(*g), &crate::store::encode(owner))?;
            seal_state(w, *g, *fresh).map(Some)
        })
        .await
    }

    /// The seals `owner` holds here, of the groups asked for.
    fn seals_of(
        &self,
        gs: impl IntoIterator<Item = GroupId>,
        owner: u64,
    ) -> Vec<(GroupId, Arc<super::groups::Seal>)> {
        gs.into_iter()
            .filter_map(|g| self.groups.sealed(g).filter(|s| s.owner == owner).map(|s| (g, s)))
            .collect()
    }

    /// [`AppRpc::ColdWrite`]: the writes to groups sealed here; answers those done.
    pub(super) async fn cold_write_local(
        &self,
        owner: u64,
        ops: Vec<(GroupId, ColdOp)>,
    ) -> Result<Vec<GroupId>> {
        let ops = ops
            .into_iter()
            .filter_map(|(g, op)| {
                self.groups
                    .sealed(g)
                    .filter(|s| s.owner == owner)
                    .map(|s| (g, s, op))
            })
            .collect();
        self.write_in_turns(ops, |w, (g, seal, op)| {
            // Released meanwhile: the group may run again.
            if !seal.is_open() {
                return Ok(None);
            }
            let res = match op {
                ColdOp::Append { prev, entry } => state_machine::append_applied(w, *g, *prev, entry),
                ColdOp::Install { rows } => state_machine::install_rows(w, *g, rows).map(|()| true),
            };
            match res {
                Ok(done) => Ok(done.then_some(*g)),
                Err(crate::store::StoreError::Lmdb(e)) => Err(crate::store::StoreError::Lmdb(e)),
                Err(e) => {
                    tracing::warn!(group = g, error = %e, "cold migration write refused");
                    Ok(None)
                }
            }
        })
        .await
    }

    /// [`AppRpc::GroupRows`]: the rows a new replica copies, for groups sealed here.
    pub(super) async fn group_rows_local(&self, owner: u64, gs: Vec<GroupId>) -> Result<Vec<GroupRows>> {
        let gs: Vec<GroupId> = self.seals_of(gs, owner).into_iter().map(|(g, _)| g).collect();
        Ok(self
            .store
            .read(move |r| {
                gs.iter()
                    .map(|g| Ok((*g, state_machine::group_rows(r, *g)?)))
                    .collect::<crate::store::Result<Vec<_>>>()
            })
            .await?)
    }

    /// [`AppRpc::Release`]: release the seals of `gs`, deleting the rows of those in `drop`
    /// (this node is no longer their replica) in the same transaction.
    pub(super) async fn release_local(&self, owner: u64, gs: Vec<GroupId>, drop: Vec<GroupId>) -> Result<()> {
        let items = self
            .seals_of(gs, owner)
            .into_iter()
            .map(|(g, seal)| (g, seal, drop.contains(&g)))
            .collect();
        let released = self
            .write_in_turns(items, |w, (g, seal, drop)| {
                seal.close();
                w.delete(Table::Local, &seal_key(*g))?;
                if *drop {
                    crate::raft::delete_group_rows(w, *g)?;
                    crate::integrity::forget(w, *g)?;
                }
                Ok(Some((*g, seal.clone(), *drop)))
            })
            .await?;
        for (g, _, dropped) in &released {
            if *dropped {
                self.groups.take_hibernated(*g);
                crate::integrity::cleared(*g);
            }
        }
        let seals: Vec<_> = released.into_iter().map(|(g, seal, _)| (g, seal)).collect();
        self.groups.unseal(&seals);
        Ok(())
    }

    /// Run `each` on `items`, [`WRITE_TURN`] of them per writer turn (each durable through the
    /// write-ahead log), so other writes, a foreground send's, are not held up behind a whole
    /// batch. Answers what `each` returned, in order, without the `None`s.
    async fn write_in_turns<I, T>(
        &self,
        mut items: Vec<I>,
        each: fn(&mut crate::store::WriteTxn<'_, '_>, &I) -> crate::store::Result<Option<T>>,
    ) -> Result<Vec<T>>
    where
        I: Send + 'static,
        T: Send + 'static,
    {
        let mut out = Vec::with_capacity(items.len());
        while !items.is_empty() {
            let turn: Vec<I> = items.drain(..items.len().min(WRITE_TURN)).collect();
            out.extend(
                self.store
                    .write_logged(move |w| {
                        let mut done = Vec::new();
                        for item in &turn {
                            done.extend(each(w, item)?);
                        }
                        Ok(done)
                    })
                    .await?,
            );
        }
        Ok(out)
    }

    /// Ask every node in `by_node` the same kind of request, one per node, at once; answers
    /// per node (errors logged and left out).
    async fn ask_each<T: super::rpc::FromReply>(
        &self,
        by_node: BTreeMap<NodeId, AppRpc>,
        what: &str,
    ) -> BTreeMap<NodeId, T> {
        let asks = by_node.into_iter().map(|(n, rpc)| async move {
            (
                n,
                self.ask(n, rpc, STEP_TIMEOUT).await.and_then(|r| r.typed::<T>()),
            )
        });
        let mut out = BTreeMap::new();
        for (n, res) in futures::future::join_all(asks).await {
            match res {
                Ok(v) => {
                    out.insert(n, v);
                }
                Err(e) => tracing::warn!(node = n, error = %e, "cold migration: {what}"),
            }
        }
        out
    }

    /// [`AppRpc::ColdWrite`] on every node in `by_node` at once: the groups each one wrote.
    async fn cold_write_each(
        &self,
        owner: u64,
        by_node: BTreeMap<NodeId, Vec<(GroupId, ColdOp)>>,
        what: &str,
    ) -> BTreeMap<NodeId, Vec<GroupId>> {
        let rpcs = by_node
            .into_iter()
            .map(|(n, ops)| (n, AppRpc::ColdWrite(owner, ops)))
            .collect();
        self.ask_each(rpcs, what).await
    }

    /// Migrate a batch of backlogged channels cold (module doc). Answers how many moved, and
    /// the channels left to migrate through Raft (their seals released).
    /// `also`: nodes to seal on besides the old and new replicas (resolving an interrupted
    /// migration, whose change may name nodes the placement no longer does).
    pub(super) async fn migrate_cold(
        &self,
        batch: Vec<(ChannelRecord, Vec<NodeId>)>,
        also: &BTreeSet<NodeId>,
        take_over_after: Option<Duration>,
    ) -> (u64, Vec<(ChannelRecord, Vec<NodeId>)>) {
        if batch.is_empty() {
            return (0, batch);
        }
        let _one_at_a_time = self.groups.coordinator.busy.lock().await;
        let owner = self.groups.coordinator.token;
        // 1. Seal on every old and new replica.
        let mut to_seal: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
        for (rec, desired) in &batch {
            for n in rec
                .replicas
                .iter()
                .chain(desired)
                .chain(also)
                .collect::<BTreeSet<_>>()
            {
                to_seal.entry(*n).or_default().push(rec.group_id);
            }
        }
        let sealed_on: BTreeMap<NodeId, Vec<GroupId>> = to_seal.clone();
        let replies: BTreeMap<NodeId, Vec<SealState>> = self
            .ask_each(
                to_seal
                    .into_iter()
                    .map(|(n, gs)| (n, AppRpc::Seal(owner, gs, take_over_after)))
                    .collect(),
                "seal",
            )
            .await;
        let mut states: HashMap<GroupId, HashMap<NodeId, SealState>> = HashMap::new();
        for (n, ss) in replies {
            for s in ss {
                states.entry(s.group).or_default().insert(n, s);
            }
        }
        // 2. Plan.
        let addrs: BTreeMap<NodeId, Peer> = self
            .members()
            .into_iter()
            .map(|n| {
                (
                    n,
                    Peer {
                        cluster_addr: self.transport.addr_of(n).unwrap_or_default(),
                    },
                )
            })
            .collect();
        let (mut jobs, mut release, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        let mut copy_bytes = 0u64;
        let empty = HashMap::new();
        for (rec, desired) in batch {
            let st = states.get(&rec.group_id).unwrap_or(&empty);
            let (leader, append, desired) = match plan(&rec, &desired, st, &addrs) {
                Plan::Move {
                    entry,
                    prev,
                    leader,
                    target,
                } => (leader, Some((prev, entry)), target),
                Plan::Record { leader } => (leader, None, desired),
                Plan::Release => {
                    release.push(rec.group_id);
                    rest.push((rec, desired));
                    continue;
                }
                Plan::Hold => {
                    tracing::warn!(channel = %rec.key, "cold migration: seals held until every replica answers");
                    continue;
                }
            };
            // Where the group ends once the change is in, and who still lacks it.
            let Some(end) = append
                .as_ref()
                .map(|(_, e)| e.log_id())
                .or(st.get(&leader).and_then(|s| s.last))
            else {
                continue;
            };
            let lacking = |n: &NodeId| st.get(n).is_some_and(|s| s.last != Some(end));
            let appends: Vec<NodeId> = rec.replicas.iter().filter(|n| lacking(n)).copied().collect();
            let installs: Vec<NodeId> = desired
                .iter()
                .filter(|n| !rec.replicas.contains(n) && lacking(n))
                .copied()
                .collect();
            if !installs.is_empty() {
                let bytes = st.get(&leader).map_or(0, |s| s.bytes);
                if copy_bytes + bytes > COLD_ROUND_BYTES && copy_bytes > 0 {
                    // Too much for this round; nothing was written yet, so nothing is held.
                    if append.is_some() && st.values().any(|s| s.fresh) {
                        release.push(rec.group_id);
                        rest.push((rec, desired));
                    }
                    continue;
                }
                copy_bytes += bytes;
            }
            jobs.push(Job {
                rec,
                desired,
                leader,
                append,
                appends,
                installs,
            });
        }
        // 3a. The leader of the last term first.
        let mut at_leader: BTreeMap<NodeId, Vec<(GroupId, ColdOp)>> = BTreeMap::new();
        for job in jobs.iter().filter(|j| j.appends.contains(&j.leader)) {
            if let Some((prev, entry)) = &job.append {
                at_leader.entry(job.leader).or_default().push((
                    job.rec.group_id,
                    ColdOp::Append {
                        prev: *prev,
                        entry: entry.clone(),
                    },
                ));
            }
        }
        let written = self
            .cold_write_each(owner, at_leader, "write the change on the leader")
            .await;
        // A leader that did not answer may still have written: those groups stay sealed.
        jobs.retain(|j| {
            !j.appends.contains(&j.leader)
                || written
                    .get(&j.leader)
                    .is_some_and(|gs| gs.contains(&j.rec.group_id))
        });
        // 3b. The new replicas copy the leader's rows (the change included).
        let mut rows_from: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
        for j in jobs.iter().filter(|j| !j.installs.is_empty()) {
            rows_from.entry(j.leader).or_default().push(j.rec.group_id);
        }
        let rows: HashMap<GroupId, state_machine::Rows> = self
            .ask_each::<Vec<GroupRows>>(
                rows_from
                    .into_iter()
                    .map(|(n, gs)| (n, AppRpc::GroupRows(owner, gs)))
                    .collect(),
                "read the rows to copy",
            )
            .await
            .into_values()
            .flatten()
            .collect();
        // 3c. The other old replicas append the change; the new ones install the rows.
        let mut writes: BTreeMap<NodeId, Vec<(GroupId, ColdOp)>> = BTreeMap::new();
        for j in &jobs {
            let g = j.rec.group_id;
            if let Some((prev, entry)) = &j.append {
                for n in j.appends.iter().filter(|n| **n != j.leader) {
                    writes.entry(*n).or_default().push((
                        g,
                        ColdOp::Append {
                            prev: *prev,
                            entry: entry.clone(),
                        },
                    ));
                }
            }
            if let Some(r) = rows.get(&g) {
                for n in &j.installs {
                    writes
                        .entry(*n)
                        .or_default()
                        .push((g, ColdOp::Install { rows: r.clone() }));
                }
            }
        }
        let written = self
            .cold_write_each(owner, writes, "write the change on the replicas")
            .await;
        let record: Vec<(ChannelRecord, Vec<NodeId>)> = jobs
            .into_iter()
            .filter(|j| {
                j.appends
                    .iter()
                    .chain(&j.installs)
                    .filter(|n| **n != j.leader)
                    .all(|n| written.get(n).is_some_and(|gs| gs.contains(&j.rec.group_id)))
            })
            .map(|j| (j.rec, j.desired))
            .collect();
        // 4. Record the new replica sets, then release (removed replicas drop their rows).
        let mut done: HashMap<GroupId, (Vec<NodeId>, Vec<NodeId>)> = HashMap::new();
        if !record.is_empty() {
            let updates = record
                .iter()
                .map(|(rec, desired)| (rec.key.clone(), desired.clone()))
                .collect();
            match self.meta_write(MetaCmd::SetReplicasBatch { updates }).await {
                Ok(_) => {
                    done = record
                        .into_iter()
                        .map(|(rec, desired)| (rec.group_id, (rec.replicas, desired)))
                        .collect()
                }
                // Sealed until the next round records them.
                Err(e) => tracing::warn!(error = %e, "cold migration: recording the new replica sets"),
            }
        }
        let release: HashSet<GroupId> = release.into_iter().collect();
        let mut releases: BTreeMap<NodeId, (Vec<GroupId>, Vec<GroupId>)> = BTreeMap::new();
        for (n, gs) in &sealed_on {
            let (free, drop) = releases.entry(*n).or_default();
            for g in gs {
                if release.contains(g) {
                    free.push(*g);
                } else if let Some((old, new)) = done.get(g) {
                    free.push(*g);
                    if old.contains(n) && !new.contains(n) {
                        drop.push(*g);
                    }
                }
            }
        }
        let moved = done.len() as u64;
        releases.retain(|_, (gs, _)| !gs.is_empty());
        let _: BTreeMap<NodeId, ()> = self
            .ask_each(
                releases
                    .into_iter()
                    .map(|(n, (gs, drop))| {
                        (
                            n,
                            AppRpc::Release {
                                owner,
                                groups: gs,
                                drop,
                            },
                        )
                    })
                    .collect(),
                "release",
            )
            .await;
        (moved, rest)
    }

    /// [`AppRpc::ResolveSeals`], on the metadata leader: finish or release seals a replica
    /// has held for long (an interrupted migration).
    pub(super) async fn resolve_seals(&self, from: NodeId, gs: Vec<GroupId>) -> Result<()> {
        if !self.meta.is_leader() {
            return Err(NodeError::NotLeader {
                leader_hint: self.meta.metrics().borrow_watched().current_leader,
            });
        }
        let members = self.members();
        let replication = self.replication;
        let (batch, orphans) = self
            .store
            .read(move |r| {
                let (mut batch, mut orphans) = (Vec::new(), Vec::new());
                for g in gs {
                    match meta::channel_by_group(r, g)? {
                        Some(rec) => {
                            let desired = meta::desired(r, &members, &rec, replication)?;
                            batch.push((rec, desired));
                        }
                        None => orphans.push(g),
                    }
                }
                Ok((batch, orphans))
            })
            .await?;
        // Sealed on every member: the change an interrupted migration wrote may name nodes
        // the placement no longer does, and the requester may be neither old nor new.
        let groups = batch.len();
        let (moved, _) = self.migrate_cold(batch, &self.members(), Some(STALE_SEAL)).await;
        tracing::info!(
            node = from,
            groups,
            moved,
            orphans = orphans.len(),
            "resolved stale seals"
        );
        if orphans.is_empty() {
            return Ok(());
        }
        // No channel uses these groups any more: nothing to finish; take them over, release.
        let owner = self.groups.coordinator.token;
        let seal = AppRpc::Seal(owner, orphans.clone(), Some(STALE_SEAL));
        self.ask(from, seal, STEP_TIMEOUT)
            .await?
            .typed::<Vec<SealState>>()?;
        let release = AppRpc::Release {
            owner,
            groups: orphans,
            drop: Vec::new(),
        };
        self.ask(from, release, STEP_TIMEOUT).await?.typed()
    }

    /// Report seals held here for longer than [`STALE_SEAL`] to the metadata leader, which
    /// finishes or releases them (an interrupted cold migration).
    pub(super) async fn report_stale_seals(self) {
        loop {
            tokio::time::sleep(STALE_SEAL / 2).await;
            let stale: Vec<GroupId> = self
                .groups
                .all_sealed()
                .into_iter()
                .filter(|(_, s)| s.since.elapsed() >= STALE_SEAL)
                .map(|(g, _)| g)
                .collect();
            if stale.is_empty() {
                continue;
            }
            let Some(leader) = self.meta.metrics().borrow_watched().current_leader else {
                continue;
            };
            if let Err(e) = self
                .ask(leader, AppRpc::ResolveSeals(self.id, stale), STEP_TIMEOUT * 4)
                .await
                .and_then(|r| r.typed::<()>())
            {
                tracing::warn!(error = %e, "asking the metadata leader to resolve stale seals");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelKey;

    fn id(term: u64, leader: NodeId, index: u64) -> LogId {
        openraft::testing::log_id::<crate::raft::TypeConfig>(term, leader, index)
    }

    fn change(at: LogId, voters: &[NodeId]) -> Entry {
        let nodes: BTreeMap<NodeId, Peer> = voters.iter().map(|n| (*n, Peer::default())).collect();
        let m = openraft::Membership::new(vec![voters.iter().copied().collect()], nodes).expect("membership");
        Entry::new_membership(at, m)
    }

    /// A replica whose log ends at `last` in configuration `voters`.
    fn state(last: LogId, prev: LogId, voters: &[NodeId], fresh: bool) -> SealState {
        SealState {
            group: 7,
            fresh,
            last: Some(last),
            prev: Some(prev),
            last_membership: None,
            voters: Some(voters.iter().copied().collect()),
            bytes: 100,
        }
    }

    fn rec() -> ChannelRecord {
        ChannelRecord {
            key: ChannelKey {
                channel_id: "g".into(),
                channel_type: 2,
            },
            subscribers: Default::default(),
            group_id: 7,
            replicas: vec![1, 2, 3],
        }
    }

    fn sorted(mut v: Vec<NodeId>) -> Vec<NodeId> {
        v.sort();
        v
    }

    fn states(list: Vec<(NodeId, SealState)>) -> HashMap<NodeId, SealState> {
        list.into_iter().collect()
    }

    /// Node 4 (new) holds nothing yet.
    fn empty_new() -> SealState {
        SealState {
            group: 7,
            fresh: true,
            last: None,
            prev: None,
            last_membership: None,
            voters: None,
            bytes: 0,
        }
    }

    #[test]
    fn identical_logs_get_the_change_the_last_leader_would_have_appended() {
        let (last, prev) = (id(3, 2, 20), id(3, 2, 19));
        let st = states(vec![
            (1, state(last, prev, &[1, 2, 3], true)),
            (2, state(last, prev, &[1, 2, 3], true)),
            (3, state(last, prev, &[1, 2, 3], true)),
            (4, empty_new()),
        ]);
        match plan(&rec(), &[1, 2, 4], &st, &BTreeMap::new()) {
            Plan::Move {
                entry,
                prev,
                leader,
                target,
            } => {
                assert_eq!(target, vec![1, 2, 4]);
                assert_eq!(leader, 2, "the leader of the last entry's term");
                assert_eq!(prev, last);
                assert_eq!(entry.log_id(), id(3, 2, 21), "the next index, the same leader id");
                let voters: BTreeSet<NodeId> =
                    entry.get_membership().expect("a change").voter_ids().collect();
                assert_eq!(voters, BTreeSet::from([1, 2, 4]));
            }
            _ => panic!("expected a move"),
        }
    }

    #[test]
    fn an_interrupted_change_is_finished_with_the_leaders_own_entry() {
        let (prev, e_id) = (id(3, 2, 20), id(3, 2, 21));
        let e = change(e_id, &[1, 2, 4]);
        let mut ahead = state(e_id, prev, &[1, 2, 4], false);
        ahead.last_membership = Some(e.clone());
        let st = states(vec![
            (1, state(prev, id(3, 2, 19), &[1, 2, 3], false)),
            (2, ahead),
            (3, state(prev, id(3, 2, 19), &[1, 2, 3], false)),
            (
                4,
                SealState {
                    fresh: false,
                    ..empty_new()
                },
            ),
            (
                5,
                SealState {
                    fresh: false,
                    ..empty_new()
                },
            ),
        ]);
        // Also when the placement changed meanwhile (node 5 joined): the leader's entry to the
        // set it names, never a second change at the same index.
        for desired in [[1, 2, 4], [1, 2, 5]] {
            match plan(&rec(), &desired, &st, &BTreeMap::new()) {
                Plan::Move {
                    entry,
                    prev: p,
                    leader,
                    target,
                } => {
                    assert_eq!((entry, p, leader), (e.clone(), prev, 2));
                    assert_eq!(sorted(target), vec![1, 2, 4]);
                }
                _ => panic!("expected the leader's entry"),
            }
        }
    }

    #[test]
    fn without_every_old_replica_nothing_is_written() {
        let (last, prev) = (id(3, 2, 20), id(3, 2, 19));
        let mut st = states(vec![
            (1, state(last, prev, &[1, 2, 3], true)),
            (3, state(last, prev, &[1, 2, 3], true)),
            (4, empty_new()),
        ]);
        // Node 2 did not answer; seals made now prove no earlier change is pending.
        assert!(matches!(
            plan(&rec(), &[1, 2, 4], &st, &BTreeMap::new()),
            Plan::Release
        ));
        // Seals left by an earlier round: the missing replica, the last leader, may hold a
        // change.
        for s in st.values_mut() {
            s.fresh = false;
        }
        assert!(matches!(
            plan(&rec(), &[1, 2, 4], &st, &BTreeMap::new()),
            Plan::Hold
        ));
        // The last leader answered and holds nothing more than the others: nobody does.
        let (last, prev) = (id(3, 1, 20), id(3, 1, 19));
        let st = states(vec![
            (1, state(last, prev, &[1, 2, 3], false)),
            (3, state(last, prev, &[1, 2, 3], false)),
            (
                4,
                SealState {
                    fresh: false,
                    ..empty_new()
                },
            ),
        ]);
        assert!(matches!(
            plan(&rec(), &[1, 2, 4], &st, &BTreeMap::new()),
            Plan::Release
        ));
    }

    #[test]
    fn a_recorded_or_foreign_configuration_is_not_changed_again() {
        let (last, prev) = (id(3, 2, 21), id(3, 2, 20));
        let done = states(vec![
            (1, state(last, prev, &[1, 2, 4], false)),
            (2, state(last, prev, &[1, 2, 4], false)),
            (3, state(last, prev, &[1, 2, 4], false)),
            (4, state(last, prev, &[1, 2, 4], false)),
        ]);
        assert!(matches!(
            plan(&rec(), &[1, 2, 4], &done, &BTreeMap::new()),
            Plan::Record { leader: 2 }
        ));
        // The log's configuration is neither the recorded nor the desired set: Raft's job.
        assert!(matches!(
            plan(&rec(), &[1, 3, 4], &done, &BTreeMap::new()),
            Plan::Release
        ));
        // Logs that differ otherwise (a follower behind on a normal entry).
        let differ = states(vec![
            (1, state(last, prev, &[1, 2, 3], true)),
            (2, state(last, prev, &[1, 2, 3], true)),
            (3, state(prev, id(3, 2, 19), &[1, 2, 3], true)),
            (4, empty_new()),
        ]);
        assert!(matches!(
            plan(&rec(), &[1, 2, 4], &differ, &BTreeMap::new()),
            Plan::Release
        ));
    }
}
