//! One Raft group's log and vote, stored in the node's shared LMDB environment.
//!
//! `append` returns at once and completes its `IOFlushed` callback when the writer thread
//! has made the batch holding it durable (its record in the store's write-ahead log). The entries stay in memory, in the group's **tail**:
//! until they are durable (openraft requires appended entries to be readable when `append`
//! returns) and then as a cache of the newest entries, which replication reads right after
//! the append, often after the commit: without it, each of those reads was an LMDB read on
//! a blocking thread. The tail keeps every entry not yet durable, plus durable ones up to
//! [`TAIL_ENTRIES`] and [`TAIL_BYTES`]. Votes, truncations and purges wait for their commit
//! before returning; since the writer commits in submission order, every write of a group
//! is durable in the order it was made.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::startup::{self, Preload};
use super::{Entry, Fence, GroupId, LogId, TypeConfig, Vote};
use crate::store::{KvRead, KvWrite, Store, Table, encode, keys};

const TAG_VOTE: u8 = 1;
const TAG_PURGED: u8 = 2;

/// Entries read on the async worker itself (a point read: the start's search for its key log
/// ids, a woken follower's first appends); longer ranges go to the blocking pool.
const POINT_READ_ENTRIES: u64 = 4;

/// Bytes of entries one AppendEntries carries at most (but always one entry). openraft caps
/// a payload by count only (`max_payload_entries`), and one entry can be a 4 MiB sendbatch.
const MAX_PAYLOAD_BYTES: usize = 16 << 20;
/// Runs this short cannot exceed `MAX_FRAME` whatever their entries (4 MiB request bodies),
/// so the common small append skips measuring.
const UNMEASURED_ENTRIES: u64 = 64;
/// Entries a capped read takes from the log at a time (at most 1 GiB of 4 MiB sendbatches).
const READ_CHUNK: u64 = 256;
/// Durable entries the tail keeps at most (entries not yet durable are always kept).
const TAIL_ENTRIES: usize = 64;
/// Bytes of durable entries the tail keeps at most.
const TAIL_BYTES: usize = 256 << 10;

/// The key of group `g`'s vote.
pub fn vote_key(g: GroupId) -> [u8; 9] {
    raft_key(g, TAG_VOTE)
}

fn raft_key(g: GroupId, tag: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&g.to_be_bytes());
    k[8] = tag;
    k
}

#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    store: Store,
    fence: Fence,
    /// The newest entries (module doc). A std mutex: held only to copy or edit the map,
    /// never across an `.await`.
    tail: Arc<Mutex<Tail>>,
    /// What the start reads, read at once (`startup`); taken before the first write.
    preload: Preload,
}

/// The newest entries of the log, by index.
#[derive(Default)]
struct Tail {
    entries: BTreeMap<u64, TailEntry>,
    /// Durable entries held, and their bytes.
    durable: usize,
    durable_bytes: usize,
}

struct TailEntry {
    entry: Entry,
    /// Its row's size, for the byte cap.
    bytes: usize,
    /// Committed by the writer: LMDB has it, so the tail may drop it.
    durable: bool,
}

impl Tail {
    /// Mark `ids` durable where the tail still holds those very entries (a truncation and a
    /// new append may have replaced one), then drop the oldest durable entries over the caps.
    fn flushed(&mut self, ids: &[LogId]) {
        for id in ids {
            if let Some(t) = self.entries.get_mut(&id.index())
                && t.entry.log_id() == *id
                && !t.durable
            {
                t.durable = true;
                self.durable += 1;
                self.durable_bytes += t.bytes;
            }
        }
        while self.durable > TAIL_ENTRIES || self.durable_bytes > TAIL_BYTES {
            let Some(oldest) = self.entries.first_entry() else {
                break;
            };
            if !oldest.get().durable {
                break;
            }
            self.durable -= 1;
            self.durable_bytes -= oldest.remove().bytes;
        }
    }

    /// Drop the entries from `from` on (a truncation).
    fn truncate(&mut self, from: u64) {
        let dropped = self.entries.split_off(&from);
        self.forget(dropped);
    }

    /// Drop the entries up to `upto` (a purge).
    fn purge(&mut self, upto: u64) {
        let kept = self.entries.split_off(&upto.saturating_add(1));
        let dropped = std::mem::replace(&mut self.entries, kept);
        self.forget(dropped);
    }

    fn forget(&mut self, dropped: BTreeMap<u64, TailEntry>) {
        for t in dropped.values().filter(|t| t.durable) {
            self.durable -= 1;
            self.durable_bytes -= t.bytes;
        }
    }
}

impl LogStore {
    pub fn new(group: GroupId, store: Store, fence: Fence, preload: Preload) -> LogStore {
        LogStore {
            group,
            store,
            fence,
            tail: Default::default(),
            preload,
        }
    }

    fn tail_range(&self, lo: u64, hi_excl: u64) -> BTreeMap<u64, Entry> {
        let tail = self.tail.lock().expect("tail lock poisoned");
        tail.entries
            .range(lo..hi_excl)
            .map(|(k, t)| (*k, t.entry.clone()))
            .collect()
    }
}

/// Read the stored last log id and last purged log id of group `g`.
pub fn stored_log_state(
    kv: &impl KvRead,
    g: GroupId,
) -> crate::store::Result<(Option<LogId>, Option<LogId>)> {
    let purged: Option<LogId> = kv.get_decoded(Table::Raft, &raft_key(g, TAG_PURGED))?;
    let last = last_row(kv, g)?.map(|(k, v)| entry_log_id(&k, &v)).transpose()?;
    Ok((last.or(purged), purged))
}

/// The log id of a stored entry row, checked against its seal but decoded without its payload
/// (a batch of messages): an entry's encoding starts with its log id.
pub fn entry_log_id(key: &[u8], row: &[u8]) -> crate::store::Result<LogId> {
    let value = crate::integrity::open(Table::Log, key, row)?;
    postcard::take_from_bytes::<LogId>(value)
        .map(|(id, _)| id)
        .map_err(|e| crate::store::StoreError::Corrupt {
            table: Table::Log,
            reason: e.to_string(),
        })
}

/// The index of group `g`'s last stored log entry (not its purge marker).
pub fn last_index(kv: &impl KvRead, g: GroupId) -> crate::store::Result<Option<u64>> {
    Ok(last_row(kv, g)?.and_then(|(k, _)| keys::u64_suffix(&k)))
}

/// The row of group `g`'s last stored log entry.
fn last_row(kv: &impl KvRead, g: GroupId) -> crate::store::Result<Option<(Vec<u8>, Vec<u8>)>> {
    Ok(kv
        .range(
            Table::Log,
            &keys::group(g),
            &keys::prefix_end(&keys::group(g)),
            1,
            true,
        )?
        .pop())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let lo = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let hi_excl = match range.end_bound() {
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        if lo >= hi_excl {
            return Ok(Vec::new());
        }
        // Copy the tail first: an entry it drops meanwhile is then found in LMDB.
        let mut entries = self.tail_range(lo, hi_excl);
        // Replication usually asks for what was just appended: all in the tail.
        let tail_covers = entries.keys().next() == Some(&lo)
            && entries
                .keys()
                .next_back()
                .is_some_and(|last| last + 1 == hi_excl || hi_excl == u64::MAX)
            && entries.len() as u64 == entries.keys().next_back().map_or(0, |l| l - lo + 1);
        if tail_covers {
            return Ok(entries.into_values().collect());
        }
        // The start asks for the first entry alone.
        if hi_excl == lo.saturating_add(1)
            && let Some(Some(e)) = startup::with(&self.preload, |s| s.entry(lo).cloned())
        {
            return Ok(vec![e]);
        }
        let g = self.group;
        let read = move |r: &crate::store::ReadTxn<'_>| {
            r.range(
                Table::Log,
                &keys::group_u64(g, lo),
                &keys::group_u64(g, hi_excl),
                usize::MAX,
                false,
            )?
            .iter()
            .map(|(k, v)| crate::integrity::decode::<Entry>(Table::Log, k, v))
            .collect::<Result<Vec<_>, _>>()
        };
        // A few entries are a point read, done here (`Store::read_blocking`); more are a scan.
        let stored = if hi_excl - lo <= POINT_READ_ENTRIES {
            self.store.read_blocking(read)
        } else {
            self.store.read(read).await
        };
        // A log entry that fails its seal is never handed to openraft (it would replicate or
        // apply it): the read fails, the group stops, and the node repairs this replica.
        let stored = crate::integrity::check(g, stored)?;
        for e in stored {
            entries.entry(e.index()).or_insert(e);
        }
        // Only a contiguous run from `lo` is a valid answer.
        Ok((lo..)
            .zip(entries)
            .take_while(|(want, (idx, _))| want == idx)
            .map(|(_, (_, e))| e)
            .collect())
    }

    /// Replication reads here: a prefix of `[start, end)` within `MAX_PAYLOAD_BYTES`, read
    /// `READ_CHUNK` entries at a time so a run of large entries is never all in memory.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, io::Error> {
        if end.saturating_sub(start) <= UNMEASURED_ENTRIES {
            return self.try_get_log_entries(start..end).await;
        }
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        let mut lo = start;
        while lo < end {
            let hi = end.min(lo.saturating_add(READ_CHUNK));
            let chunk = self.try_get_log_entries(lo..hi).await?;
            let whole = chunk.len() as u64 == hi - lo;
            for e in chunk {
                bytes =
                    bytes.saturating_add(postcard::experimental::serialized_size(&e).unwrap_or(usize::MAX));
                if bytes > MAX_PAYLOAD_BYTES && !out.is_empty() {
                    return Ok(out);
                }
                out.push(e);
            }
            if !whole {
                break; // the end of the log
            }
            lo = hi;
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        if let Some(vote) = startup::with(&self.preload, |s| s.vote) {
            return Ok(vote);
        }
        let key = vote_key(self.group);
        Ok(self
            .store
            .read_blocking(move |r| r.get_decoded(Table::Raft, &key))?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let g = self.group;
        let (last, purged) = match startup::with(&self.preload, |s| s.log_state) {
            Some(stored) => stored,
            None => crate::integrity::check(g, self.store.read_blocking(move |r| stored_log_state(r, g)))?,
        };
        let tail_last = self
            .tail
            .lock()
            .expect("tail lock poisoned")
            .entries
            .values()
            .next_back()
            .map(|t| t.entry.log_id());
        let last_log_id = match (last, tail_last) {
            (Some(a), Some(b)) => Some(if b.index() >= a.index() { b } else { a }),
            (a, b) => a.or(b),
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        startup::take(&self.preload);
        let (g, fence) = (self.group, self.fence.clone());
        let (key, bytes) = (vote_key(g), encode(vote));
        Ok(self
            .store
            .write(move |w| {
                fence.check(g)?;
                w.put(Table::Raft, &key, &bytes)
            })
            .await?)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        startup::take(&self.preload);
        let g = self.group;
        let entries: Vec<Entry> = entries.into_iter().collect();
        // Sealed here, on the caller's task, so the writer thread stays a plain put loop.
        let rows: Vec<([u8; 16], Vec<u8>)> = entries
            .iter()
            .map(|e| {
                let key = keys::group_u64(g, e.index());
                (key, crate::integrity::seal(&key, encode(e)))
            })
            .collect();
        let ids: Vec<LogId> = entries.iter().map(|e| e.log_id()).collect();
        {
            let mut tail = self.tail.lock().expect("tail lock poisoned");
            // Entries from the first appended index on are replaced (openraft truncates first).
            if let Some(first) = ids.first() {
                tail.truncate(first.index());
            }
            for (e, (_, row)) in entries.into_iter().zip(&rows) {
                tail.entries.insert(
                    e.index(),
                    TailEntry {
                        entry: e,
                        bytes: row.len(),
                        durable: false,
                    },
                );
            }
        }
        let (tail, fence) = (self.tail.clone(), self.fence.clone());
        self.store.submit_logged(
            move |w| {
                fence.check(g)?;
                for (key, row) in &rows {
                    w.put(Table::Log, key, row)?;
                }
                Ok(())
            },
            move |res| {
                if res.is_ok() {
                    tail.lock().expect("tail lock poisoned").flushed(&ids);
                }
                callback.io_completed(res.map_err(io::Error::from));
            },
        );
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        startup::take(&self.preload);
        let (g, fence) = (self.group, self.fence.clone());
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        self.tail.lock().expect("tail lock poisoned").truncate(from);
        self.store
            .write(move |w| {
                fence.check(g)?;
                w.delete_range(
                    Table::Log,
                    &keys::group_u64(g, from),
                    &keys::prefix_end(&keys::group(g)),
                )
            })
            .await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        startup::take(&self.preload);
        let (g, fence) = (self.group, self.fence.clone());
        let upto = log_id.index();
        let marker = encode(&log_id);
        self.tail.lock().expect("tail lock poisoned").purge(upto);
        self.store
            .write(move |w| {
                fence.check(g)?;
                w.put(Table::Raft, &raft_key(g, TAG_PURGED), &marker)?;
                w.delete_range(
                    Table::Log,
                    &keys::group_u64(g, 0),
                    &keys::group_u64(g, upto.saturating_add(1)),
                )?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::RaftLogReader;
    use openraft::entry::RaftEntry;

    use super::*;
    use crate::channel::{ChannelCmd, Header, NewMessage};
    use crate::raft::Request;

    fn entry(index: u64, payload: usize) -> Entry {
        let msg = NewMessage {
            message_id: index,
            client_msg_no: index.to_string(),
            from_uid: "u".into(),
            header: Header::default(),
            timestamp: 0,
            payload: vec![7; payload],
        };
        Entry::new_normal(
            openraft::testing::log_id::<TypeConfig>(1, 1, index),
            Request::Channel(ChannelCmd::Send(vec![msg])),
        )
    }

    /// Entries 1..=n with payloads of `size(index)` bytes, stored as `append` stores them.
    async fn log_with(n: u64, size: impl Fn(u64) -> usize + Send + 'static) -> (tempfile::TempDir, LogStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        store
            .write(move |w| {
                for i in 1..=n {
                    let key = keys::group_u64(5, i);
                    w.put(
                        Table::Log,
                        &key,
                        &crate::integrity::seal(&key, encode(&entry(i, size(i)))),
                    )?;
                }
                Ok(())
            })
            .await
            .expect("write");
        (dir, LogStore::new(5, store, Fence::default(), Default::default()))
    }

    #[test]
    fn an_entry_log_id_is_read_without_its_payload() {
        let e = entry(7, 4096);
        let key = keys::group_u64(5, 7);
        let row = crate::integrity::seal(&key, encode(&e));
        assert_eq!(entry_log_id(&key, &row).expect("log id"), e.log_id());
        // The seal is still checked.
        let mut bad = row.clone();
        bad[row.len() / 2] ^= 1;
        assert!(entry_log_id(&key, &bad).is_err());
    }

    #[tokio::test]
    async fn the_start_preload_answers_as_the_store_does_until_the_first_write() {
        let (_dir, mut log) = log_with(3, |_| 10).await;
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");
        let preload = startup::read(&log.store, 5);
        assert!(startup::with(&preload, |_| ()).is_some(), "the preload read");
        let mut pre = LogStore::new(5, log.store.clone(), Fence::default(), preload.clone());
        let state = |s: LogState<TypeConfig>| (s.last_log_id, s.last_purged_log_id);
        assert_eq!(
            state(pre.get_log_state().await.expect("state")),
            state(log.get_log_state().await.expect("state"))
        );
        assert_eq!(pre.read_vote().await.expect("vote"), Some(Vote::new(1, 1)));

        pre.save_vote(&Vote::new(2, 1)).await.expect("vote");
        assert!(
            startup::with(&preload, |_| ()).is_none(),
            "a write takes the preload"
        );
        assert_eq!(pre.read_vote().await.expect("vote"), Some(Vote::new(2, 1)));
    }

    #[tokio::test]
    async fn a_replication_payload_stays_under_its_byte_cap() {
        let (_dir, mut log) = log_with(70, |_| 512 << 10).await;
        let got = log.limited_get_log_entries(1, 71).await.expect("read");
        assert_eq!(got.len(), 31, "31 entries of 512 KiB and a little fit in 16 MiB");
        assert_eq!(got.first().map(|e| e.index()), Some(1));
        // An entry over the cap still goes, alone: replication must always move forward.
        let (_dir, mut log) = log_with(70, |i| if i == 1 { MAX_PAYLOAD_BYTES } else { 100 }).await;
        assert_eq!(log.limited_get_log_entries(1, 71).await.expect("read").len(), 1);
    }

    #[tokio::test]
    async fn a_closed_fence_refuses_every_write_of_the_group() {
        let (_dir, log) = log_with(3, |_| 100).await;
        let fence = Fence::default();
        let mut log = LogStore::new(5, log.store.clone(), fence.clone(), Default::default());
        fence.close();
        let vote = Vote::new(2, 1);
        let err = log.save_vote(&vote).await.expect_err("a fenced vote");
        assert!(err.to_string().contains("group 5 is being removed"), "{err}");
        assert!(log.truncate_after(None).await.is_err());
        assert_eq!(log.read_vote().await.expect("read"), None, "no vote row");
        let kept = log.limited_get_log_entries(1, 4).await.expect("read");
        assert_eq!(kept.len(), 3, "the truncation wrote nothing");
    }

    /// Appends through the log store: the tail answers reads before and after the commit,
    /// keeps at most `TAIL_ENTRIES` durable entries, and a truncation plus a new append
    /// replaces what it held; LMDB answers for what the tail dropped.
    #[tokio::test]
    async fn the_tail_holds_the_newest_entries_and_follows_truncations() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut log = LogStore::new(
            5,
            Store::open(dir.path()).expect("open"),
            Fence::default(),
            Default::default(),
        );
        for i in 1..=100 {
            log.append([entry(i, 10)], IOFlushed::noop())
                .await
                .expect("append");
        }
        // The writer commits in order: once the vote is durable, so is every append.
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");
        let tail = log
            .tail
            .lock()
            .expect("lock")
            .entries
            .keys()
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(tail, (37..=100).collect::<Vec<_>>(), "the newest 64");
        let all = log.try_get_log_entries(1..=100).await.expect("read");
        assert_eq!(
            all.iter().map(|e| e.index()).collect::<Vec<_>>(),
            (1..=100).collect::<Vec<_>>()
        );
        // A new leader truncates 91.. and appends another entry 91 (another term).
        log.truncate_after(Some(all[89].log_id()))
            .await
            .expect("truncate");
        let replaced = Entry::new_blank(openraft::testing::log_id::<TypeConfig>(2, 1, 91));
        log.append([replaced.clone()], IOFlushed::noop())
            .await
            .expect("append");
        let got = log.try_get_log_entries(89..).await.expect("read");
        assert_eq!(
            got.iter().map(|e| e.log_id()).collect::<Vec<_>>(),
            vec![all[88].log_id(), all[89].log_id(), replaced.log_id()]
        );
    }

    #[tokio::test]
    async fn small_entries_are_not_cut() {
        let (_dir, mut log) = log_with(5000, |_| 100).await;
        assert_eq!(
            log.limited_get_log_entries(1, 5001).await.expect("read").len(),
            5000
        );
    }
}
