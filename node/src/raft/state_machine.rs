//! The state machine of one group over LMDB. Group 0 applies metadata commands, every other
//! group applies channel commands; the logic itself lives in `meta` and `channel`.
//!
//! Invariants:
//! - The data an entry writes, `last_applied` and the membership are committed in one
//!   transaction.
//! - A channel client is answered once its entry is committed (durable on a quorum of logs)
//!   and has been applied by the store's writer (into its memtable): the state machine is a pure
//!   function of the log, so a crash before the next checkpoint re-applies the same entries to
//!   the same result. `apply` itself (and so openraft's `last_applied`, which channel reads
//!   wait on with ReadIndex) completes once the writes are visible to reads (the store's
//!   memtable), so a read never sees less than what was acknowledged.
//! - Applies are replayable writes (`Store::write_replayable`): nothing is flushed for them.
//! - Metadata is read from the local copy without ReadIndex, so metadata writes are answered
//!   only after their commit (read-your-writes on the node that took the write).
//! - Snapshots are the metadata group's only (`raft_config`). Its tables in LMDB are the
//!   snapshot: building one reads every row the group owns in one read (whole writer batches,
//!   so exactly the state at `last_applied`), and the current snapshot is that read done when
//!   asked, so nothing is stored twice and it always covers the purged log. Installing one
//!   replaces those rows, `last_applied` and the membership in one checkpointed transaction.
//!   A purge is a checkpoint submitted after the snapshot's read, so the applies the snapshot
//!   saw are durable before the entries behind them go: after any crash `last_applied` is at
//!   or past the purge point.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::startup::{self, Preload};
use super::{
    Entry, Fence, GroupId, LogId, META_GROUP, Request, Response, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::channel::{self, ChannelState};
use crate::meta;
use crate::store::{KvRead, KvWrite, Store, Table, encode, keys};

/// Per-group state kept beside the data, in the `Sm` table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Channel groups only.
    pub channel: ChannelState,
}

pub fn load_state(kv: &impl KvRead, g: GroupId) -> crate::store::Result<SmState> {
    Ok(kv.get_decoded(Table::Sm, &keys::group(g))?.unwrap_or_default())
}

/// Rows of a group's tables, each with its table's code.
pub type Rows = Vec<(u8, Vec<u8>, Vec<u8>)>;

/// A snapshot: every row the group owns, tagged with its table.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotRows {
    rows: Rows,
}

pub type SnapshotData = Vec<u8>;

#[derive(Clone)]
pub struct StateMachine {
    group: GroupId,
    store: Store,
    fence: Fence,
    /// The index of the last entry applied and committed to LMDB, set before the clients of
    /// the batch are answered (openraft's own metrics report it a core-loop turn later): what
    /// a cache of the group's tables may key on (`cluster::route::ChannelCache`).
    applied: Arc<AtomicU64>,
    /// What the start reads, read at once (`startup`); taken before the first write.
    preload: Preload,
}

impl StateMachine {
    pub fn new(
        group: GroupId,
        store: Store,
        fence: Fence,
        applied: Arc<AtomicU64>,
        preload: Preload,
    ) -> StateMachine {
        StateMachine {
            group,
            store,
            fence,
            applied,
            preload,
        }
    }
}

/// The key ranges group `g` owns in each table.
fn owned_ranges(g: GroupId) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
    let own = |t| (t, keys::group(g).to_vec(), keys::prefix_end(&keys::group(g)));
    if g == META_GROUP {
        meta::TABLES
            .iter()
            .map(|t| (*t, Vec::new(), vec![0xFF; 64]))
            .chain([own(Table::Sm)])
            .collect()
    } else {
        vec![
            own(Table::Msgs),
            own(Table::Dedup),
            own(Table::Spans),
            own(Table::Convs),
            own(Table::Sm),
        ]
    }
}

/// Channel groups have no Raft snapshots: their log is their data (`channel` module doc), so a
/// snapshot would have to carry every message, and installing one would purge the log that
/// holds them. Their logs are never purged and a replica always catches up from the log.
fn no_channel_snapshots(g: GroupId) -> Result<(), io::Error> {
    if g == META_GROUP {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "group {g}: channel groups take no Raft snapshots"
        )))
    }
}

fn apply_one(
    w: &mut impl KvWrite,
    g: GroupId,
    state: &mut SmState,
    index: u64,
    req: &Request,
) -> crate::store::Result<Response> {
    Ok(match (g == META_GROUP, req) {
        (true, Request::Meta(cmd)) => {
            let members = state.membership.membership().nodes().map(|(id, _)| *id).collect();
            Response::Meta(meta::apply(w, &members, cmd)?)
        }
        (false, Request::Channel(cmd)) => {
            Response::Channel(channel::apply(w, g, &mut state.channel, index, cmd)?)
        }
        // A request routed to the wrong kind of group is a bug upstream; it changes nothing.
        _ => {
            tracing::error!(group = g, %req, "request applied to the wrong kind of group");
            Response::None
        }
    })
}

/// Apply `entries` in order: their data, `last_applied` and the membership, in `state`
/// (the caller stores it).
fn apply_entries(
    w: &mut impl KvWrite,
    g: GroupId,
    state: &mut SmState,
    entries: &[Entry],
) -> crate::store::Result<Vec<Response>> {
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        state.last_applied = Some(entry.log_id);
        out.push(match &entry.payload {
            EntryPayload::Blank => Response::None,
            EntryPayload::Normal(req) => apply_one(w, g, state, entry.log_id.index(), req)?,
            EntryPayload::Membership(m) => {
                state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                Response::None
            }
        });
    }
    Ok(out)
}

/// A cold migration's write (`cluster::cold`) on a replica where channel group `g` does not
/// run: append `entry` right after `prev`, the group's last stored entry, then apply every
/// stored entry not applied yet and `entry` itself. The caller has made sure that every entry
/// up to `prev` is on every replica (so committed) and that `entry` reaches them all before
/// the group runs anywhere again. Answers false, writing nothing, when the log ends neither at
/// `prev` nor at `entry` (already written).
pub fn append_applied(
    w: &mut impl KvWrite,
    g: GroupId,
    prev: LogId,
    entry: &Entry,
) -> crate::store::Result<bool> {
    use openraft::entry::RaftEntry;
    let (last, _) = super::log_store::stored_log_state(w, g)?;
    if last == Some(entry.log_id()) {
        // Written before, by this migration: the very entry, or nothing may be written.
        let key = keys::group_u64(g, entry.index());
        let stored = match w.get(Table::Log, &key)? {
            Some(v) => Some(crate::integrity::decode::<Entry>(Table::Log, &key, &v)?),
            None => None,
        };
        return Ok(stored.as_ref() == Some(entry));
    }
    if last != Some(prev) {
        return Ok(false);
    }
    // Every read (and seal check) before the first write: a refusal leaves nothing behind.
    let mut state = load_state(w, g)?;
    let from = state.last_applied.map_or(0, |l| l.index() + 1);
    let mut unapplied = w
        .range(
            Table::Log,
            &keys::group_u64(g, from),
            &keys::group_u64(g, entry.index()),
            usize::MAX,
            false,
        )?
        .iter()
        .map(|(k, v)| crate::integrity::decode::<Entry>(Table::Log, k, v))
        .collect::<Result<Vec<_>, _>>()?;
    unapplied.push(entry.clone());
    let key = keys::group_u64(g, entry.index());
    w.put(Table::Log, &key, &crate::integrity::seal(&key, encode(entry)))?;
    apply_entries(w, g, &mut state, &unapplied)?;
    w.put(Table::Sm, &keys::group(g), &encode(&state))?;
    Ok(true)
}

/// Tables a new replica of a channel group copies: its log and its state machine's rows (not
/// its vote: the new replica has voted for nobody).
fn copied_ranges(g: GroupId) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
    let mut ranges = owned_ranges(g);
    ranges.push((
        Table::Log,
        keys::group(g).to_vec(),
        keys::prefix_end(&keys::group(g)),
    ));
    ranges
}

/// Every row of channel group `g` that a new replica copies (`install_rows`), with its table.
pub fn group_rows(r: &impl KvRead, g: GroupId) -> crate::store::Result<Rows> {
    let mut rows = Vec::new();
    for (t, from, to) in copied_ranges(g) {
        for (k, v) in r.range(t, &from, &to, usize::MAX, false)? {
            rows.push((t.code(), k, v));
        }
    }
    Ok(rows)
}

/// Replace every row of channel group `g` here with `rows` (`group_rows` of another replica).
/// A row outside the group's ranges is refused: nothing is written then.
pub fn install_rows(
    w: &mut impl KvWrite,
    g: GroupId,
    rows: &[(u8, Vec<u8>, Vec<u8>)],
) -> crate::store::Result<()> {
    let ranges = copied_ranges(g);
    let bad = |reason: String| crate::store::StoreError::Corrupt {
        table: Table::Sm,
        reason,
    };
    for (code, k, _) in rows {
        let t = Table::from_code(*code).ok_or_else(|| bad(format!("unknown table {code}")))?;
        if !ranges
            .iter()
            .any(|(rt, from, to)| *rt == t && k.as_slice() >= from.as_slice() && k.as_slice() < to.as_slice())
        {
            return Err(bad(format!("a row of group {g} outside its ranges")));
        }
    }
    // A new replica normally holds nothing; what it holds is deleted row by row, so the
    // write needs no checkpoint (`Store::write_logged`).
    super::delete_group_rows(w, g)?;
    for (code, k, v) in rows {
        let t = Table::from_code(*code).ok_or_else(|| bad(format!("unknown table {code}")))?;
        w.put(t, k, v)?;
    }
    Ok(())
}

fn answer(responders: Vec<Option<openraft::storage::ApplyResponder<TypeConfig>>>, out: Vec<Response>) {
    for (responder, response) in responders.into_iter().zip(out) {
        if let Some(r) = responder {
            r.send(response);
        }
    }
}

impl StateMachine {
    /// The group's rows and state as of one read: a snapshot at its `last_applied` (the read
    /// sees whole writer batches, and an apply is one operation of one batch).
    async fn read_snapshot(
        &self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let g = self.group;
        no_channel_snapshots(g)?;
        let (state, rows) = self
            .store
            .read(move |r| {
                let state = load_state(r, g)?;
                let mut rows = Vec::new();
                for (t, from, to) in owned_ranges(g) {
                    for (k, v) in r.range(t, &from, &to, usize::MAX, false)? {
                        rows.push((t.code(), k, v));
                    }
                }
                Ok((state, rows))
            })
            .await?;
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
        };
        Ok(openraft::alias::SnapshotOf::<TypeConfig, SnapshotData> {
            meta,
            snapshot: encode(&SnapshotRows { rows }),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let snapshot = self.read_snapshot().await?;
        tracing::info!(
            group = self.group,
            last_log_id = %snapshot.meta.last_log_id.as_ref().map(|l| l.to_string()).unwrap_or_default(),
            bytes = snapshot.snapshot.len(),
            "snapshot taken"
        );
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        if let Some(applied) = startup::with(&self.preload, |s| (s.sm.last_applied, s.sm.membership.clone()))
        {
            return Ok(applied);
        }
        let g = self.group;
        let state = self.store.read_blocking(move |r| load_state(r, g))?;
        Ok((state.last_applied, state.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        while let Some((entry, responder)) = entries.try_next().await? {
            batch.push(entry);
            responders.push(responder);
        }
        if batch.is_empty() {
            return Ok(());
        }
        startup::take(&self.preload);
        let (g, fence) = (self.group, self.fence.clone());
        let last = batch.last().map(|e| e.log_id.index());
        // Channel clients are answered inside the transaction (module doc), metadata clients
        // after the commit. The work may run twice (store module doc): the first run that gets
        // through every entry takes the early responders, so nobody is answered twice.
        let (mut early, late) = if g == META_GROUP {
            (None, Some(responders))
        } else {
            (Some(responders), None)
        };
        // Replayable: a crash that undoes this commit re-applies the same entries.
        let written = self
            .store
            .write_replayable(move |w| {
                fence.check(g)?;
                let mut state = load_state(w, g)?;
                let out = apply_entries(w, g, &mut state, &batch)?;
                w.put(Table::Sm, &keys::group(g), &encode(&state))?;
                if let Some(responders) = early.take() {
                    answer(responders, out.clone());
                }
                Ok(out)
            })
            .await;
        // A bad row read while applying (a retried message's original) is reported like any
        // other read of it, so the replica is repaired rather than failing the same apply forever.
        let out = crate::integrity::check(g, written)?;
        if let Some(last) = last {
            self.applied.store(last, Ordering::Release);
        }
        if let Some(responders) = late {
            answer(responders, out);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        startup::take(&self.preload);
        let (g, fence) = (self.group, self.fence.clone());
        no_channel_snapshots(g)?;
        let rows: SnapshotRows = crate::store::decode(Table::Sm, &snapshot)?;
        let rows_count = rows.rows.len();
        let (last_applied, membership) = (meta.last_log_id, meta.last_membership.clone());
        self.store
            .write(move |w| {
                fence.check(g)?;
                for (t, from, to) in owned_ranges(g) {
                    w.delete_range(t, &from, &to)?;
                }
                for (code, k, v) in &rows.rows {
                    let t = Table::from_code(*code).ok_or_else(|| crate::store::StoreError::Corrupt {
                        table: Table::Sm,
                        reason: format!("snapshot names unknown table {code}"),
                    })?;
                    w.put(t, k, v)?;
                }
                let mut state = load_state(w, g)?;
                state.last_applied = last_applied;
                state.membership = membership.clone();
                w.put(Table::Sm, &keys::group(g), &encode(&state))?;
                Ok(())
            })
            .await?;
        // The tables changed wholesale: caches keyed on the applied index must see it move.
        if let Some(l) = last_applied {
            self.applied.store(l.index(), Ordering::Release);
        }
        tracing::info!(
            group = g,
            rows = rows_count,
            last_log_id = %last_applied.map(|l| l.to_string()).unwrap_or_default(),
            "snapshot installed"
        );
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<TypeConfig, SnapshotData>>, io::Error> {
        // A channel group reports none, and saying so matters: openraft purges logs up to a
        // reported snapshot (minus `max_in_snapshot_log_to_keep`) and ships snapshots to
        // replicas that fall behind; a channel's log is its messages.
        if self.group != META_GROUP {
            return Ok(None);
        }
        // The metadata tables are the snapshot: the current one is read from them as they are
        // now, at `last_applied` (never older than any snapshot built before, so it covers
        // every purged entry). Nothing is stored twice.
        let snapshot = self.read_snapshot().await?;
        Ok(snapshot.meta.last_log_id.is_some().then_some(snapshot))
    }
}
