//! The node's one LMDB environment: the only module that imports heed.
//!
//! Every table holds raw bytes; callers own their key encodings (see `keys`). Writes go
//! through one writer thread, which drains every queued operation into one batch and runs it
//! over the **memtable** (`overlay`: the rows of earlier batches that are not in LMDB yet, laid
//! over LMDB's last commit). Each op's rows are kept apart until it succeeds, so a failed op is
//! rolled back alone. What makes a batch's writes durable depends on its operations:
//!
//! - [`Store::submit_logged`] and [`Store::write_logged`] (Raft log appends, a cold
//!   migration's rows): the op's rows go into one record of the write-ahead log (`wal`),
//!   flushed with one `fdatasync` of a few KiB at the end of the file.
//! - [`Store::write_replayable`] (state-machine applies, a pure function of the Raft log):
//!   nothing; a restart re-applies from the `last_applied` of the last checkpoint.
//! - [`Store::write`] and [`Store::submit`] (votes, truncations, snapshots, metadata facts):
//!   the batch runs inside the LMDB write transaction of a checkpoint, after every row of the
//!   memtable, and the writer waits for its commit. Such an op may run more than once: if one
//!   of them fails, the batch runs again with each op in a nested transaction of its own.
//!
//! Once durable, a batch's rows join the memtable, where every read finds them. A
//! **checkpoint** writes the memtable's oldest rows (one log generation's) into LMDB in one
//! transaction on the checkpointer thread and commits it with a full fsync, every
//! [`CHECKPOINT_EVERY`] or when the memtable or the log grow past their caps. The writer goes
//! on meanwhile with the next generation, in the log's other file: a Raft append waits for its
//! own flush, never for a checkpoint. The commit writes each dirty B-tree page once per
//! checkpoint instead of once per batch: with one Raft group per channel, a batch touches a
//! leaf of the log, dedup and state tables for every group in it.
//!
//! Invariants:
//! - Operations take effect in submission order; a completion runs only after its writes are
//!   visible to every read, and, unless the op was submitted as replayable, durable.
//! - At most one checkpoint runs at a time; generation n + 2 overwrites generation n's file
//!   only after n's checkpoint has committed.
//! - A checkpoint's commit records the log generation it covers (`Local` row `wal_done`);
//!   replay applies, oldest first, only newer generations, so a row the log holds is never
//!   laid over a newer committed state (a truncation runs in a checkpoint, so an appended and
//!   then truncated entry cannot come back).
//! - A failed checkpoint commit would lose acknowledged writes from the running process's view:
//!   the node exits, and the restart replays the log and re-applies.
//! - No heed transaction crosses an `.await`: reads run in `spawn_blocking` (point reads of a
//!   few rows of bounded size on the calling thread, `read_blocking`); LMDB's write
//!   transactions begin and end on the checkpointer thread (heed #339).

pub mod keys;
#[cfg(test)]
pub mod mem;
mod overlay;
mod scan;
mod wal;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};

/// Address space reserved for the memory map; the file grows sparsely as data arrives.
const MAP_SIZE: usize = 256 << 30;
/// More operations than this wait for the next batch, bounding a batch's latency.
const MAX_BATCH: usize = 4096;
/// The longest the open write transaction stays uncommitted.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Bytes of rows in the open transaction (held twice: LMDB's dirty pages and the overlay)
/// that trigger a checkpoint.
const CHECKPOINT_BYTES: usize = 32 << 20;
/// Bytes of one write-ahead log generation that trigger a checkpoint (the file's size).
const CHECKPOINT_WAL_BYTES: u64 = 64 << 20;
/// The `Local` row that records the last log generation a checkpoint made durable.
const WAL_DONE: &[u8] = b"wal_done";

/// The tables of the environment. Keys and values are opaque bytes to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Raft log entries of every group: group ++ index.
    Log,
    /// Raft vote and purge marker of every group: group ++ tag.
    Raft,
    /// State-machine state of every group (last applied, membership, seq, checksum): group.
    Sm,
    /// Users and their device tokens: uid.
    Users,
    /// Channels with subscribers and replica sets: channel key.
    Channels,
    /// Channel group id -> channel key.
    Groups,
    /// Cluster nodes and their addresses: node id.
    Nodes,
    /// Counters and format markers: name.
    Vars,
    /// Archived channel messages (restored from a backup; the rest live in the log): group ++ seq.
    Msgs,
    /// Idempotency index: group ++ hash(from_uid, client_msg_no) -> the seqs stored under it.
    Dedup,
    /// Facts about this node's data dir (node id, format); never replicated.
    Local,
    /// Where a channel's messages sit in its log: group ++ first seq -> `channel::Span`.
    Spans,
    /// A channel's sender blacklist and whitelist (`meta::SenderLists`): channel key.
    Lists,
    /// Where each node's client gateway listens (`meta::GatewayRecord`): node id.
    Gateways,
    /// Which channels each user is in (`meta::member_key`): len(uid) ++ uid ++ channel key ->
    /// nothing. Group subscribers and both users of a person channel; the metadata group
    /// keeps it.
    Members,
    /// Conversation state of a channel group (`channel::conversation`): group ++ uid -> a
    /// user's `ReadState`; group alone -> the channel's `ConvClock`.
    Convs,
}

const TABLES: [(Table, &str); 16] = [
    (Table::Log, "log"),
    (Table::Raft, "raft"),
    (Table::Sm, "sm"),
    (Table::Users, "users"),
    (Table::Channels, "channels"),
    (Table::Groups, "groups"),
    (Table::Nodes, "nodes"),
    (Table::Vars, "vars"),
    (Table::Msgs, "msgs"),
    (Table::Dedup, "dedup"),
    (Table::Local, "local"),
    (Table::Spans, "spans"),
    (Table::Lists, "lists"),
    (Table::Gateways, "gateways"),
    (Table::Members, "members"),
    (Table::Convs, "convs"),
];

impl Table {
    /// A stable one-byte code, for snapshots that carry rows of several tables.
    pub fn code(self) -> u8 {
        TABLES
            .iter()
            .position(|(x, _)| *x == self)
            .expect("every table is in TABLES") as u8
    }

    pub fn from_code(code: u8) -> Option<Table> {
        TABLES.get(code as usize).map(|(t, _)| *t)
    }
}

type Db = Database<'static, Bytes, Bytes>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("lmdb: {0}")]
    Lmdb(String),
    #[error("corrupt record in {table:?}: {reason}")]
    Corrupt { table: Table, reason: String },
    #[error("the store is shut down")]
    Closed,
    #[error("group {0} is being removed from this node")]
    Fenced(u64),
}

impl From<heed::Error> for StoreError {
    fn from(e: heed::Error) -> Self {
        StoreError::Lmdb(e.to_string())
    }
}

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> Self {
        std::io::Error::other(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Decode a value with postcard, naming the table on failure.
pub fn decode<T: serde::de::DeserializeOwned>(table: Table, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("serialising plain data to a Vec cannot fail")
}

/// Read access shared by read and write transactions.
pub trait KvRead {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Whether `key` has a row, without copying its value.
    fn contains(&self, t: Table, key: &[u8]) -> Result<bool> {
        Ok(self.get(t, key)?.is_some())
    }
    /// Entries with `from <= key < to`, ascending (or descending with `rev`), at most `limit`.
    fn range(
        &self,
        t: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
        rev: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    fn get_decoded<T: serde::de::DeserializeOwned>(&self, t: Table, key: &[u8]) -> Result<Option<T>> {
        self.get(t, key)?.map(|v| decode(t, &v)).transpose()
    }
}

pub trait KvWrite: KvRead {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<()>;
    fn delete(&mut self, t: Table, key: &[u8]) -> Result<()>;
    /// Delete every key in `from <= key < to`.
    fn delete_range(&mut self, t: Table, from: &[u8], to: &[u8]) -> Result<usize>;
}

struct Dbs([Db; TABLES.len()]);

impl Dbs {
    fn of(&self, t: Table) -> Db {
        let i = TABLES
            .iter()
            .position(|(x, _)| *x == t)
            .expect("every table is in TABLES");
        self.0[i]
    }
}

/// LMDB has no empty keys: an empty `from` means "from the first key".
fn bounds<'k>(from: &'k [u8], to: &'k [u8]) -> (std::ops::Bound<&'k [u8]>, std::ops::Bound<&'k [u8]>) {
    let start = if from.is_empty() {
        std::ops::Bound::Unbounded
    } else {
        std::ops::Bound::Included(from)
    };
    (start, std::ops::Bound::Excluded(to))
}

fn read_range(
    dbs: &Dbs,
    txn: &RoTxn,
    t: Table,
    from: &[u8],
    to: &[u8],
    limit: usize,
    rev: bool,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let db = dbs.of(t);
    let bounds = bounds(from, to);
    let mut out = Vec::new();
    if from >= to || limit == 0 {
        return Ok(out);
    }
    if rev {
        for item in db.rev_range(txn, &bounds)? {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
    } else {
        for item in db.range(txn, &bounds)? {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// A read transaction, handed to closures run by [`Store::read`]: LMDB's last commit with the
/// overlay's rows on top (`overlay` module doc).
pub struct ReadTxn<'a> {
    view: overlay::View,
    txn: RoTxn<'a, WithoutTls>,
    dbs: &'a Dbs,
}

impl KvRead for ReadTxn<'_> {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(row) = self.view.get(t, key) {
            return Ok(row.map(<[u8]>::to_vec));
        }
        Ok(self.dbs.of(t).get(&self.txn, key)?.map(|v| v.to_vec()))
    }
    fn range(
        &self,
        t: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
        rev: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let over = if self.view.is_empty() {
            Default::default()
        } else {
            self.view.range(t, from, to)
        };
        layered_range(self.dbs, &self.txn, over, t, from, to, limit, rev)
    }
}

/// LMDB's rows of a range in `txn` with the memtable's rows `over` laid on top.
#[allow(clippy::too_many_arguments)]
fn layered_range(
    dbs: &Dbs,
    txn: &RoTxn<'_, WithoutTls>,
    over: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    t: Table,
    from: &[u8],
    to: &[u8],
    limit: usize,
    rev: bool,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if over.is_empty() {
        return read_range(dbs, txn, t, from, to, limit, rev);
    }
    if limit == 0 {
        return Ok(Vec::new());
    }
    let deleted = over.values().filter(|v| v.is_none()).count();
    let rows = read_range(dbs, txn, t, from, to, limit.saturating_add(deleted), rev)?;
    Ok(overlay::merge(rows, over, limit, rev))
}

/// What an op (or a batch) wrote over the memtable: rows for the overlay and the log.
#[derive(Default)]
struct Recorder {
    chunk: overlay::Chunk,
    wal: wal::Rows,
    /// The op's rows go into the write-ahead log.
    logged: bool,
}

impl Recorder {
    fn absorb(&mut self, later: Recorder) {
        self.chunk.absorb(later.chunk);
        self.wal.append(later.wal);
    }
}

/// A write transaction, handed to operations run by the writer thread.
pub struct WriteTxn<'a, 'b> {
    at: Backend<'a, 'b>,
    dbs: &'a Dbs,
}

/// Where a [`WriteTxn`] reads and writes.
enum Backend<'a, 'b> {
    /// Over the memtable: the op's own rows, the batch's earlier ones, the overlay's, then
    /// LMDB's last commit; writes are recorded in `rec`.
    Memtable {
        rec: &'a mut Recorder,
        batch: &'a overlay::Chunk,
        view: &'a overlay::View,
        txn: &'a RoTxn<'b, WithoutTls>,
    },
    /// Inside a checkpoint's LMDB write transaction, which holds every earlier write.
    Lmdb(&'a mut RwTxn<'b>),
}

impl WriteTxn<'_, '_> {
    /// The memtable's row for `key` (`Some(None)`: deleted), or `None` when LMDB decides.
    fn memtable_get(&self, t: Table, key: &[u8]) -> Option<Option<&[u8]>> {
        match &self.at {
            Backend::Memtable { rec, batch, view, .. } => rec
                .chunk
                .get(t, key)
                .or_else(|| batch.get(t, key))
                .or_else(|| view.get(t, key)),
            Backend::Lmdb(_) => None,
        }
    }

    fn record(&mut self, t: Table, key: &[u8], value: Option<&[u8]>) {
        if let Backend::Memtable { rec, .. } = &mut self.at {
            rec.chunk.record(t, key, value);
            if rec.logged {
                rec.wal.push(t, key, value);
            }
        }
    }
}

impl KvRead for WriteTxn<'_, '_> {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(row) = self.memtable_get(t, key) {
            return Ok(row.map(<[u8]>::to_vec));
        }
        let db = self.dbs.of(t);
        Ok(match &self.at {
            Backend::Memtable { txn, .. } => db.get(txn, key)?.map(<[u8]>::to_vec),
            Backend::Lmdb(txn) => db.get(txn, key)?.map(<[u8]>::to_vec),
        })
    }
    fn contains(&self, t: Table, key: &[u8]) -> Result<bool> {
        if let Some(row) = self.memtable_get(t, key) {
            return Ok(row.is_some());
        }
        let db = self.dbs.of(t);
        Ok(match &self.at {
            Backend::Memtable { txn, .. } => db.get(txn, key)?.is_some(),
            Backend::Lmdb(txn) => db.get(txn, key)?.is_some(),
        })
    }
    fn range(
        &self,
        t: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
        rev: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match &self.at {
            Backend::Memtable {
                rec,
                batch,
                view,
                txn,
            } => {
                let mut over = view.range(t, from, to);
                batch.range_into(t, from, to, &mut over);
                rec.chunk.range_into(t, from, to, &mut over);
                layered_range(self.dbs, txn, over, t, from, to, limit, rev)
            }
            Backend::Lmdb(txn) => read_range(self.dbs, txn, t, from, to, limit, rev),
        }
    }
}

impl KvWrite for WriteTxn<'_, '_> {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<()> {
        crate::stats::STORE.put(value.len());
        if let Backend::Lmdb(txn) = &mut self.at {
            self.dbs.of(t).put(txn, key, value)?;
        }
        self.record(t, key, Some(value));
        Ok(())
    }
    fn delete(&mut self, t: Table, key: &[u8]) -> Result<()> {
        if let Backend::Lmdb(txn) = &mut self.at {
            self.dbs.of(t).delete(txn, key)?;
        }
        self.record(t, key, None);
        Ok(())
    }
    fn delete_range(&mut self, t: Table, from: &[u8], to: &[u8]) -> Result<usize> {
        if from >= to {
            return Ok(0);
        }
        if let Backend::Lmdb(txn) = &mut self.at {
            return Ok(self.dbs.of(t).delete_range(txn, &bounds(from, to))?);
        }
        // The memtable holds no range deletions: one deleted row per key.
        let rows = self.range(t, from, to, usize::MAX, false)?;
        for (k, _) in &rows {
            self.record(t, k, None);
        }
        Ok(rows.len())
    }
}

/// How a queued write becomes durable (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// A checkpoint follows its batch.
    Checkpoint,
    /// Its rows go into the write-ahead log.
    Logged,
    /// Nothing: the Raft log rebuilds it.
    Replayable,
}

/// One queued write: `run` inside the batch transaction (possibly again, after another op of
/// the batch failed), `finish` once its writes are visible (and durable, unless replayable).
trait Op: Send {
    /// Returns whether the op succeeded; on failure its writes must be rolled back.
    fn run(&mut self, txn: &mut WriteTxn<'_, '_>) -> bool;
    fn finish(self: Box<Self>, committed: Result<()>);
    fn durability(&self) -> Durability;
}

struct TypedOp<T, W, D> {
    work: W,
    durability: Durability,
    outcome: Option<Result<T>>,
    done: D,
}

impl<T, W, D> Op for TypedOp<T, W, D>
where
    T: Send,
    W: FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send,
    D: FnOnce(Result<T>) + Send,
{
    fn run(&mut self, txn: &mut WriteTxn<'_, '_>) -> bool {
        let outcome = (self.work)(txn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<()>) {
        let result = match (self.outcome, committed) {
            (Some(Err(e)), _) => Err(e),
            (_, Err(e)) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (None, Ok(())) => Err(StoreError::Closed),
        };
        (self.done)(result);
    }

    fn durability(&self) -> Durability {
        self.durability
    }
}

struct Inner {
    env: &'static Env<WithoutTls>,
    dbs: Dbs,
    /// Feeds the writer thread; `None` once shut down.
    writer: std::sync::Mutex<Option<mpsc::Sender<Box<dyn Op>>>>,
    /// The writer thread, joined by `shutdown` once its last checkpoint has committed.
    writer_thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Extra delay after every batch, for the slow-disk drill (0 = off).
    fsync_delay_ms: std::sync::atomic::AtomicU64,
    /// The memtable: written rows not yet in LMDB, for readers.
    overlay: overlay::Overlay,
}

/// Cheap-clone handle to the node's LMDB environment.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Open (or create) the environment under `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Lmdb(format!("create {}: {e}", dir.display())))?;
        // SAFETY: heed requires that the environment is opened once per process and that the
        // files are not modified by anything else; the node owns its data dir.
        let env = unsafe {
            EnvOpenOptions::new()
                .read_txn_without_tls()
                .map_size(MAP_SIZE)
                .max_dbs(TABLES.len() as u32)
                .max_readers(1024)
                .open(dir)?
        };
        // The environment lives as long as the process: databases borrow it for 'static.
        let env: &'static Env<WithoutTls> = Box::leak(Box::new(env));
        let wtxn = env.write_txn()?;
        let dbs = env
            .create_databases_and_commit(wtxn, |opener, wtxn| {
                let mut dbs = Vec::with_capacity(TABLES.len());
                for (_, name) in TABLES {
                    dbs.push(opener.create_database::<Bytes, Bytes>(wtxn, Some(name))?);
                }
                let arr: [Db; TABLES.len()] = dbs
                    .try_into()
                    .map_err(|_| heed::Error::Io(std::io::Error::other("table count mismatch")))?;
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit(arr))
            })?
            .unwrap_commit();
        let dbs = Dbs(dbs);
        let wal = replay_wal(env, &dbs, dir)?;
        let (tx, rx) = mpsc::channel::<Box<dyn Op>>();
        let inner = Arc::new(Inner {
            env,
            dbs,
            writer: std::sync::Mutex::new(Some(tx)),
            writer_thread: Default::default(),
            fsync_delay_ms: Default::default(),
            overlay: Default::default(),
        });
        let (checkpoints, jobs) = mpsc::channel::<Checkpoint>();
        let for_checkpointer = inner.clone();
        let checkpointer = std::thread::Builder::new()
            .name("lmdb-checkpoint".into())
            .spawn(move || checkpointer_loop(&for_checkpointer, jobs))
            .map_err(|e| StoreError::Lmdb(format!("spawn checkpointer: {e}")))?;
        let for_thread = inner.clone();
        let thread = std::thread::Builder::new()
            .name("lmdb-writer".into())
            .spawn(move || {
                Writer::new(&for_thread, wal, checkpoints).run(rx);
                if checkpointer.join().is_err() {
                    tracing::error!("the LMDB checkpointer thread failed");
                }
            })
            .map_err(|e| StoreError::Lmdb(format!("spawn writer: {e}")))?;
        *inner.writer_thread.lock().expect("writer thread lock poisoned") = Some(thread);
        Ok(Store { inner })
    }

    /// Queue `work` for a checkpoint; `done` runs after its commit (or failure).
    /// `work` may run more than once (see the module doc): it must not consume what it needs
    /// for a second run, and only the last run's writes count.
    pub fn submit<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send + 'static,
        done: impl FnOnce(Result<T>) + Send + 'static,
    ) {
        self.submit_op(work, Durability::Checkpoint, done);
    }

    /// Like [`Store::submit`], made durable by the write-ahead log instead of a checkpoint: for
    /// the Raft log's appends. `work` runs once.
    pub fn submit_logged<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send + 'static,
        done: impl FnOnce(Result<T>) + Send + 'static,
    ) {
        self.submit_op(work, Durability::Logged, done);
    }

    fn submit_op<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send + 'static,
        durability: Durability,
        done: impl FnOnce(Result<T>) + Send + 'static,
    ) {
        self.enqueue(Box::new(TypedOp {
            work,
            durability,
            outcome: None,
            done,
        }));
    }

    /// Queue `work` and wait for its completion (see `write` and `write_replayable`).
    async fn write_op<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send + 'static,
        durability: Durability,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit_op(work, durability, move |r| {
            let _ = tx.send(r);
        });
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn enqueue(&self, op: Box<dyn Op>) {
        // The lock only guards a clone of the sender; no I/O happens under it.
        let sender = self.inner.writer.lock().expect("writer lock poisoned").clone();
        match sender {
            Some(s) => {
                if let Err(mpsc::SendError(op)) = s.send(op) {
                    op.finish(Err(StoreError::Closed));
                }
            }
            None => op.finish(Err(StoreError::Closed)),
        }
    }

    /// Run `work` in a checkpoint and wait until it has committed (module doc).
    pub async fn write<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_op(work, Durability::Checkpoint).await
    }

    /// Like [`Store::write`], made durable by the write-ahead log (one small `fdatasync`)
    /// instead of a checkpoint, so it does not hold up the batches of other writes: for
    /// writes of many small rows off the Raft path (a cold migration's). A range delete in
    /// `work` records one deleted row per key, so it suits small ranges only.
    pub async fn write_logged<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_op(work, Durability::Logged).await
    }

    /// Like [`Store::write`] for work whose result the Raft log can rebuild (a state-machine
    /// apply): it returns once the write is visible, before it is durable (module doc).
    pub async fn write_replayable<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_op(work, Durability::Replayable).await
    }

    /// Run `f` in a read transaction off the async runtime (for scans; point reads may use
    /// [`Store::read_blocking`]).
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTxn<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(f))
            .await
            .map_err(|e| StoreError::Lmdb(format!("read task: {e}")))?
    }

    /// Run `f` in a read transaction on the current thread. On an async worker only for point
    /// reads of a few rows of bounded size (a group's Raft bookkeeping, a few log entries):
    /// they take microseconds on memory-resident pages, where the hop of [`Store::read`] to
    /// the blocking pool costs tens of microseconds and two thread wake-ups. Scans, and rows
    /// that grow with their data (a channel record holds every subscriber), go through
    /// [`Store::read`].
    pub fn read_blocking<T>(&self, f: impl FnOnce(&ReadTxn<'_>) -> Result<T>) -> Result<T> {
        // The view first, then the transaction (`overlay` module doc).
        let view = self.inner.overlay.view();
        let txn = self.inner.env.read_txn()?;
        f(&ReadTxn {
            view,
            txn,
            dbs: &self.inner.dbs,
        })
    }

    /// Delay every batch by `ms` (slow-disk drill); 0 turns it off.
    pub fn set_fsync_delay(&self, ms: u64) {
        self.inner
            .fsync_delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stop accepting writes; returns once the queued writes and a last checkpoint have
    /// committed, so a restart neither replays the write-ahead log nor re-applies Raft entries.
    pub async fn shutdown(&self) {
        self.inner.writer.lock().expect("writer lock poisoned").take();
        let thread = self
            .inner
            .writer_thread
            .lock()
            .expect("writer thread lock poisoned")
            .take();
        if let Some(thread) = thread {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                _ => tracing::error!("the LMDB writer thread failed before its last checkpoint"),
            }
        }
    }
}

/// Replay the write-ahead log into LMDB (module doc) and open it for writing.
fn replay_wal(env: &'static Env<WithoutTls>, dbs: &Dbs, dir: &Path) -> Result<wal::Wal> {
    let local = dbs.of(Table::Local);
    let done: u64 = {
        let r = env.read_txn()?;
        local
            .get(&r, WAL_DONE)?
            .map(|v| decode(Table::Local, v))
            .transpose()?
            .unwrap_or(0)
    };
    let mut wtxn = env.write_txn()?;
    let lmdb = |e: heed::Error| std::io::Error::other(e.to_string());
    let (wal, replayed) = wal::Wal::open(dir, done, |row| {
        let db = dbs.of(row.table);
        match row.value {
            Some(v) => db.put(&mut wtxn, row.key, v).map_err(lmdb),
            None => db.delete(&mut wtxn, row.key).map(|_| ()).map_err(lmdb),
        }
    })
    .map_err(|e| StoreError::Lmdb(format!("replay the write-ahead log in {}: {e}", dir.display())))?;
    if replayed > done {
        local.put(&mut wtxn, WAL_DONE, &encode(&replayed))?;
        wtxn.commit()?;
    }
    Ok(wal)
}

/// A checkpoint, run by the checkpointer thread: the chunks of one log generation written into
/// LMDB, then `batch` (ops that run inside LMDB's transaction), committed together.
struct Checkpoint {
    generation: u64,
    chunks: Vec<Arc<overlay::Chunk>>,
    batch: Vec<Box<dyn Op>>,
    /// Ops the chunks hold, for the statistics.
    ops: usize,
    /// Hands `batch` back with what its run returned, after the commit.
    done: mpsc::Sender<Ran>,
}

/// A checkpoint's batch, handed back with what its run returned.
type Ran = (Vec<Box<dyn Op>>, Result<()>);

/// The writer thread's state: the log generation being written and the checkpoint under way.
struct Writer<'a> {
    inner: &'a Inner,
    wal: wal::Wal,
    checkpoints: mpsc::Sender<Checkpoint>,
    /// The memtable's chunks of the generation being written, oldest first.
    chunks: Vec<Arc<overlay::Chunk>>,
    /// When the generation's first chunk was written.
    since: Instant,
    ops: usize,
    bytes: usize,
    /// The end of the checkpoint under way.
    running: Option<mpsc::Receiver<Ran>>,
}

impl<'a> Writer<'a> {
    fn new(inner: &'a Inner, wal: wal::Wal, checkpoints: mpsc::Sender<Checkpoint>) -> Writer<'a> {
        Writer {
            inner,
            wal,
            checkpoints,
            chunks: Vec::new(),
            since: Instant::now(),
            ops: 0,
            bytes: 0,
            running: None,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Box<dyn Op>>) {
        loop {
            let next = match self.deadline() {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            let first = match next {
                Ok(op) => op,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.checkpoint_if_due();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let (batch, result) = if batch.iter().any(|op| op.durability() == Durability::Checkpoint) {
                self.checkpoint_with(batch)
            } else {
                let result = self.write(&mut batch);
                (batch, result)
            };
            if let Err(e) = &result {
                tracing::error!(error = %e, "write batch failed");
            }
            let delay = self
                .inner
                .fsync_delay_ms
                .load(std::sync::atomic::Ordering::Relaxed);
            if delay > 0 {
                std::thread::sleep(Duration::from_millis(delay));
            }
            for op in batch {
                op.finish(result.clone());
            }
            self.checkpoint_if_due();
        }
        self.checkpoint_all();
    }

    /// Checkpoint everything written so far and wait for the commit.
    fn checkpoint_all(&mut self) {
        // An empty batch has nothing to fail.
        let _ = self.checkpoint_with(Vec::new());
    }

    /// When the writer must look up from its queue: the generation's checkpoint is due (a
    /// millisecond from now while the last one still runs).
    fn deadline(&self) -> Option<Instant> {
        if self.chunks.is_empty() {
            return None;
        }
        let due = self.since + CHECKPOINT_EVERY;
        let now = Instant::now();
        if self.running.is_some() && due <= now {
            return Some(now + Duration::from_millis(1));
        }
        Some(due)
    }

    /// Run `batch` over the memtable and make it as durable as its ops ask (module doc).
    fn write(&mut self, batch: &mut [Box<dyn Op>]) -> Result<()> {
        let rec = {
            // The view first, then the transaction (`overlay` module doc).
            let view = self.inner.overlay.view();
            let txn = self.inner.env.read_txn()?;
            run_over_memtable(&self.inner.dbs, &view, &txn, batch)
        };
        let mut durable = rec.wal.is_empty();
        if !durable {
            let started = Instant::now();
            match self.wal.append(&rec.wal) {
                Ok(()) => {
                    crate::stats::STORE.commit(started.elapsed(), batch.len(), true);
                    durable = true;
                }
                Err(e) => {
                    tracing::error!(error = %e, "writing the write-ahead log; a checkpoint makes the batch durable instead")
                }
            }
        }
        if !rec.chunk.is_empty() {
            if self.chunks.is_empty() {
                self.since = Instant::now();
            }
            self.ops += batch.len();
            self.bytes += rec.chunk.bytes;
            self.chunks.push(self.inner.overlay.push(rec.chunk));
        }
        if !durable {
            self.checkpoint_all();
        }
        Ok(())
    }

    /// Start a checkpoint of the generation if it is due and the last one has ended (waiting
    /// for that one when the memtable or the log are past their caps).
    fn checkpoint_if_due(&mut self) {
        if self.chunks.is_empty() {
            return;
        }
        let full = self.bytes > CHECKPOINT_BYTES || self.wal.len() > CHECKPOINT_WAL_BYTES;
        if !full && self.since.elapsed() < CHECKPOINT_EVERY {
            return;
        }
        if let Some(running) = &self.running {
            let ended = if full {
                let _ = running.recv();
                true
            } else {
                !matches!(running.try_recv(), Err(mpsc::TryRecvError::Empty))
            };
            if !ended {
                return;
            }
            self.running = None;
        }
        self.start_checkpoint(Vec::new());
    }

    /// Hand the generation's chunks and `batch` to the checkpointer and start the next
    /// generation in the log's other file. The last checkpoint must have ended.
    fn start_checkpoint(&mut self, batch: Vec<Box<dyn Op>>) {
        let (done, ended) = mpsc::channel();
        let job = Checkpoint {
            generation: self.wal.generation(),
            chunks: std::mem::take(&mut self.chunks),
            batch,
            ops: std::mem::take(&mut self.ops),
            done,
        };
        self.bytes = 0;
        self.wal.next_generation();
        if self.checkpoints.send(job).is_err() {
            fail_checkpoint("the checkpointer thread is gone");
        }
        self.running = Some(ended);
    }

    /// Run `batch` inside a checkpoint of everything written so far and wait for its commit;
    /// returns the batch and what its run returned.
    fn checkpoint_with(&mut self, batch: Vec<Box<dyn Op>>) -> Ran {
        if let Some(running) = self.running.take() {
            let _ = running.recv();
        }
        self.start_checkpoint(batch);
        let running = self.running.take().expect("started above");
        running
            .recv()
            .unwrap_or_else(|_| fail_checkpoint("the checkpointer thread is gone"))
    }
}

/// Run every op of `batch` over the memtable (`view` over `txn`), each recording its rows apart
/// and keeping them only if it succeeds. Returns what the kept writes recorded.
fn run_over_memtable(
    dbs: &Dbs,
    view: &overlay::View,
    txn: &RoTxn<'static, WithoutTls>,
    batch: &mut [Box<dyn Op>],
) -> Recorder {
    let mut kept = Recorder::default();
    for op in batch.iter_mut() {
        let mut own = Recorder {
            logged: op.durability() == Durability::Logged,
            ..Default::default()
        };
        let ok = op.run(&mut WriteTxn {
            at: Backend::Memtable {
                rec: &mut own,
                batch: &kept.chunk,
                view,
                txn,
            },
            dbs,
        });
        if ok {
            kept.absorb(own);
        }
    }
    kept
}

/// Run every op of `batch` in one nested transaction of `parent`. If one fails, abort it and
/// run the batch again, each op in a nested transaction of its own, so only the failing ones
/// are rolled back.
fn run_batch(inner: &Inner, parent: &mut RwTxn<'static>, batch: &mut [Box<dyn Op>]) -> Result<()> {
    let mut nested = inner.env.nested_write_txn(parent)?;
    let mut all_ok = true;
    for op in batch.iter_mut() {
        if !op.run(&mut WriteTxn {
            at: Backend::Lmdb(&mut nested),
            dbs: &inner.dbs,
        }) {
            all_ok = false;
            break;
        }
    }
    if all_ok {
        nested.commit()?;
        return Ok(());
    }
    nested.abort();
    for op in batch.iter_mut() {
        let mut nested = inner.env.nested_write_txn(parent)?;
        if op.run(&mut WriteTxn {
            at: Backend::Lmdb(&mut nested),
            dbs: &inner.dbs,
        }) {
            nested.commit()?;
        } else {
            nested.abort();
        }
    }
    Ok(())
}

/// Run checkpoints until the writer hangs up: each writes its chunks into LMDB, runs its
/// batch and commits with a full fsync, recording the log generation it covers; then the
/// chunks leave the memtable. A failed commit loses writes that were already acknowledged (or
/// visible): the node exits, and the restart replays the log.
fn checkpointer_loop(inner: &Inner, jobs: mpsc::Receiver<Checkpoint>) {
    for mut job in jobs {
        let started = Instant::now();
        let mut ran = Ok(());
        let committed = (|| {
            let mut txn = inner.env.write_txn()?;
            for chunk in &job.chunks {
                for (t, key, value) in chunk.rows() {
                    let db = inner.dbs.of(t);
                    match value {
                        Some(v) => db.put(&mut txn, key, v)?,
                        None => {
                            db.delete(&mut txn, key)?;
                        }
                    }
                }
            }
            if !job.batch.is_empty() {
                ran = run_batch(inner, &mut txn, &mut job.batch);
            }
            inner
                .dbs
                .of(Table::Local)
                .put(&mut txn, WAL_DONE, &encode(&job.generation))?;
            txn.commit()
        })();
        crate::stats::STORE.commit(started.elapsed(), job.ops + job.batch.len(), committed.is_ok());
        if let Err(e) = committed {
            fail_checkpoint(&e.to_string());
        }
        inner.overlay.remove_oldest(job.chunks.len());
        let _ = job.done.send((job.batch, ran));
    }
}

fn fail_checkpoint(why: &str) -> ! {
    tracing::error!(
        error = why,
        "LMDB checkpoint failed; exiting so that a restart replays the write-ahead log"
    );
    eprintln!("wknode: LMDB checkpoint failed: {why}; exiting so that a restart replays the write-ahead log");
    std::process::exit(74);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        key: &'static [u8],
        fail: bool,
        durability: Durability,
        runs: Arc<std::sync::atomic::AtomicUsize>,
        out: mpsc::Sender<(&'static [u8], bool)>,
    ) -> Box<dyn Op> {
        Box::new(TypedOp {
            durability,
            work: move |w: &mut WriteTxn<'_, '_>| {
                runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                w.put(Table::Vars, key, b"v")?;
                if fail {
                    return Err(StoreError::Lmdb("refused".into()));
                }
                Ok(())
            },
            outcome: None,
            done: move |r: Result<()>| out.send((key, r.is_ok())).expect("receiver alive"),
        })
    }

    /// Runs `batch` as a checkpoint would, in a transaction of its own, and commits it.
    fn run_in_checkpoint(store: &Store, batch: &mut [Box<dyn Op>]) {
        let mut parent = store.inner.env.write_txn().expect("write txn");
        run_batch(&store.inner, &mut parent, batch).expect("batch");
        parent.commit().expect("commit");
    }

    /// Runs `batch` over the memtable as the writer would; returns what it recorded.
    fn run_over(store: &Store, batch: &mut [Box<dyn Op>]) -> Recorder {
        let view = store.inner.overlay.view();
        let txn = store.inner.env.read_txn().expect("read txn");
        run_over_memtable(&store.inner.dbs, &view, &txn, batch)
    }

    #[test]
    fn a_failing_op_is_rolled_back_alone() {
        for durability in [Durability::Checkpoint, Durability::Logged] {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Store::open(dir.path()).expect("open");
            let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (tx, rx) = mpsc::channel();
            let mut batch = vec![
                op(b"a", false, durability, runs.clone(), tx.clone()),
                op(b"b", true, durability, runs.clone(), tx.clone()),
                op(b"c", false, durability, runs.clone(), tx.clone()),
            ];
            let kept = if durability == Durability::Checkpoint {
                run_in_checkpoint(&store, &mut batch);
                // The first run stopped at b; the retry ran all three.
                assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 5);
                store
                    .read_blocking(|r| {
                        Ok([b"a", b"b", b"c"].map(|k| r.get(Table::Vars, k).expect("get").is_some()))
                    })
                    .expect("read")
            } else {
                let rec = run_over(&store, &mut batch);
                assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 3);
                // Only the kept writes reach the memtable and the log.
                let mut want = wal::Rows::default();
                want.push(Table::Vars, b"a", Some(b"v"));
                want.push(Table::Vars, b"c", Some(b"v"));
                assert_eq!(rec.wal, want);
                [b"a", b"b", b"c"].map(|k| rec.chunk.get(Table::Vars, k).is_some())
            };
            assert_eq!(kept, [true, false, true], "{durability:?}");
            for o in batch {
                o.finish(Ok(()));
            }
            let mut results: Vec<_> = rx.try_iter().collect();
            results.sort();
            assert_eq!(
                results,
                vec![(&b"a"[..], true), (&b"b"[..], false), (&b"c"[..], true)]
            );
        }
    }

    #[test]
    fn a_clean_batch_runs_each_op_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, _rx) = mpsc::channel();
        let mut batch = vec![
            op(b"a", false, Durability::Checkpoint, runs.clone(), tx.clone()),
            op(b"b", false, Durability::Checkpoint, runs.clone(), tx),
        ];
        run_in_checkpoint(&store, &mut batch);
        assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    /// `Dedup` keys of the tests below.
    fn key(i: u8) -> [u8; 2] {
        [b'k', i]
    }

    /// A new store whose LMDB holds `key(0..n)` = `value`, written in a checkpoint.
    async fn store_with_rows(n: u8, value: &'static [u8]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        store
            .write(move |w| {
                for i in 0..n {
                    w.put(Table::Dedup, &key(i), value)?;
                }
                Ok(())
            })
            .await
            .expect("checkpointed write");
        (dir, store)
    }

    /// An op reads the same rows over the memtable as inside a checkpoint: LMDB's, the
    /// memtable's over them, and its own batch's earlier writes.
    #[tokio::test]
    async fn writes_read_the_same_rows_over_the_memtable_and_in_a_checkpoint() {
        let (_dir, store) = store_with_rows(4, b"lmdb").await;
        store
            .write_logged(move |w| {
                w.delete(Table::Dedup, &key(1))?;
                w.put(Table::Dedup, &key(5), b"memtable")
            })
            .await
            .expect("logged write");
        // What an op sees, then what it leaves after a range delete of k2..k5.
        let look = move |w: &mut WriteTxn<'_, '_>| {
            w.put(Table::Dedup, &key(6), b"batch")?;
            let seen = (
                w.get(Table::Dedup, &key(0))?,
                w.contains(Table::Dedup, &key(1))?,
                w.range(Table::Dedup, b"k", b"l", 10, false)?.len(),
                w.range(Table::Dedup, b"k", b"l", 2, true)?,
            );
            let deleted = w.delete_range(Table::Dedup, &key(2), &key(6))?;
            let left = w.range(Table::Dedup, b"k", b"l", 10, false)?;
            Ok((seen, deleted, left))
        };
        let row = |i: u8, v: &[u8]| (key(i).to_vec(), v.to_vec());
        let want = (
            (
                Some(b"lmdb".to_vec()),
                false,
                5,
                vec![row(6, b"batch"), row(5, b"memtable")],
            ),
            3,
            vec![row(0, b"lmdb"), row(6, b"batch")],
        );
        assert!(!store.inner.overlay.view().is_empty());
        let over = store.write_logged(look).await.expect("over the memtable");
        assert_eq!(over, want);
        // The same again inside a checkpoint, from the state before the last write.
        store
            .write(move |w| {
                w.delete(Table::Dedup, &key(6))?;
                for i in 2..4 {
                    w.put(Table::Dedup, &key(i), b"lmdb")?;
                }
                w.put(Table::Dedup, &key(5), b"memtable")
            })
            .await
            .expect("restore");
        assert!(store.inner.overlay.view().is_empty());
        assert_eq!(store.write(look).await.expect("in a checkpoint"), want);
    }

    /// A checkpoint runs on its own after [`CHECKPOINT_EVERY`]: the memtable empties, LMDB holds
    /// the rows and records the generation as done.
    #[tokio::test]
    async fn the_memtable_is_checkpointed_in_the_background() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        store
            .write_logged(|w| w.put(Table::Vars, b"x", b"1"))
            .await
            .expect("logged write");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !store.inner.overlay.view().is_empty() {
            assert!(Instant::now() < deadline, "no checkpoint within 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let txn = store.inner.env.read_txn().expect("read txn");
        let lmdb = |t: Table, k: &[u8]| {
            store
                .inner
                .dbs
                .of(t)
                .get(&txn, k)
                .expect("get")
                .map(<[u8]>::to_vec)
        };
        assert_eq!(lmdb(Table::Vars, b"x"), Some(b"1".to_vec()));
        assert_eq!(lmdb(Table::Local, WAL_DONE), Some(encode(&1u64)));
    }

    /// What a write returns is what every later read sees, whether the rows sit in the overlay
    /// (replayable and logged writes) or in LMDB (after a checkpoint).
    #[tokio::test]
    async fn reads_see_every_completed_write_before_and_after_its_checkpoint() {
        let (_dir, store) = store_with_rows(6, b"old").await;
        store
            .write_replayable(move |w| {
                w.delete(Table::Dedup, &key(1))?;
                w.delete(Table::Dedup, &key(2))?;
                w.put(Table::Dedup, &key(3), b"new")?;
                w.put(Table::Dedup, &key(9), b"new")
            })
            .await
            .expect("replayable write");
        let read = |store: Store| async move {
            store
                .read(move |r| {
                    let first3 = r.range(Table::Dedup, b"", b"z", 3, false)?;
                    let last2 = r.range(Table::Dedup, b"k", b"z", 2, true)?;
                    Ok((
                        r.get(Table::Dedup, &key(1))?,
                        r.get(Table::Dedup, &key(3))?,
                        first3,
                        last2,
                    ))
                })
                .await
                .expect("read")
        };
        let row = |i: u8, v: &[u8]| (key(i).to_vec(), v.to_vec());
        let want = (
            None,
            Some(b"new".to_vec()),
            vec![row(0, b"old"), row(3, b"new"), row(4, b"old")],
            vec![row(9, b"new"), row(5, b"old")],
        );
        assert_eq!(read(store.clone()).await, want, "from the overlay");
        store.write(|_| Ok(())).await.expect("checkpoint");
        assert!(store.inner.overlay.view().is_empty());
        assert_eq!(read(store.clone()).await, want, "from LMDB");
    }

    /// Rows of the log generations newer than the last checkpoint's are in LMDB once the store
    /// opens; an older generation's are not laid over it again.
    #[tokio::test]
    async fn opening_replays_only_newer_log_generations() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut log, done) = wal::Wal::open(dir.path(), 0, |_| Ok(())).expect("open log");
        assert_eq!(done, 0);
        let mut rows = wal::Rows::default();
        rows.push(Table::Log, b"entry", Some(b"first"));
        rows.push(Table::Log, b"other", Some(b"kept"));
        log.append(&rows).expect("append");
        log.next_generation();
        let mut rows = wal::Rows::default();
        rows.push(Table::Log, b"entry", Some(b"appended"));
        log.append(&rows).expect("append");
        drop(log);
        let store = Store::open(dir.path()).expect("open");
        let get = |store: &Store| {
            store
                .read_blocking(|r| r.get(Table::Log, b"entry"))
                .expect("read")
        };
        assert_eq!(
            get(&store),
            Some(b"appended".to_vec()),
            "generations replay oldest first"
        );
        assert_eq!(
            store
                .read_blocking(|r| r.get(Table::Log, b"other"))
                .expect("read"),
            Some(b"kept".to_vec())
        );
        let done: Option<u64> = store
            .read_blocking(|r| r.get_decoded(Table::Local, WAL_DONE))
            .expect("read");
        assert_eq!(done, Some(2), "the replay is recorded as done");
        // A newer state (a truncation, say) is checkpointed; the old generation is not laid
        // over it again.
        store
            .write(|w| w.put(Table::Log, b"entry", b"truncated"))
            .await
            .expect("checkpointed write");
        replay_wal(store.inner.env, &store.inner.dbs, dir.path()).expect("replay");
        assert_eq!(get(&store), Some(b"truncated".to_vec()));
    }

    /// Raft appends of many groups interleave, each at the end of its own key range (group ++
    /// index). LMDB splits a full page in the middle, which would leave each page behind a
    /// group's end half empty for good; the vendored LMDB ends the left page at the new key
    /// instead (vendor/PATCHES.md), so a log of many groups fills its pages.
    #[test]
    fn interleaved_appends_of_many_groups_fill_their_pages() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let value = [7u8; 170];
        for round in 0..40u64 {
            let mut txn = store.inner.env.write_txn().expect("write txn");
            for index in round * 10..(round + 1) * 10 {
                for group in 0..64u64 {
                    let key = keys::group_u64(group, index);
                    store
                        .inner
                        .dbs
                        .of(Table::Log)
                        .put(&mut txn, &key[..], &value[..])
                        .expect("put");
                }
            }
            txn.commit().expect("commit");
        }
        let txn = store.inner.env.read_txn().expect("read txn");
        let db = store.inner.dbs.of(Table::Log);
        let mut want = (0..64u64).flat_map(|g| (0..400u64).map(move |i| keys::group_u64(g, i)));
        for row in db.iter(&txn).expect("iter") {
            let (key, v) = row.expect("row");
            assert_eq!(Some(key), want.next().as_ref().map(|k| &k[..]));
            assert_eq!(v, &value[..]);
        }
        assert_eq!(want.next(), None);
        let stat = db.stat(&txn).expect("stat");
        // Node header 8 + key 16 + value 170, plus its 2-byte slot; 4,080 usable bytes a page.
        let used = stat.entries as f64 * (8.0 + 16.0 + 170.0 + 2.0);
        let fill = used / (stat.leaf_pages as f64 * 4080.0);
        assert!(fill > 0.9, "leaf pages {:.0} % full ({stat:?})", fill * 100.0);
    }
}
