//! The node's one LMDB environment: the only module that imports heed.
//!
//! Every table holds raw bytes; callers own their key encodings (see `keys`). Writes go
//! through one writer thread that drains every queued operation into a single write
//! transaction, commits it (one fsync for the appends of many Raft groups), and only then
//! runs each operation's completion. Operations run directly in that transaction; if one
//! fails, the transaction is aborted and the batch runs again with each operation in a nested
//! transaction, so the failed one is rolled back alone without poisoning its batch. (Nested
//! transactions on every batch cost LMDB a fresh dirty-page list per operation: a profile
//! showed the writer spending half its time in page faults.) An operation's work may
//! therefore run more than once; only the last run's writes are committed.
//!
//! A batch made only of *replayable* operations (state-machine applies: their result is a pure
//! function of the Raft log, which is durable on its own) commits with LMDB's `NO_META_SYNC`:
//! one flush (the data pages) instead of two (data, then the meta page). An OS crash may then
//! undo that last transaction, never corrupt the file; the next durable commit's flush also
//! persists it. A process crash loses nothing either way (the page cache survives it).
//!
//! Invariants:
//! - Operations commit in submission order; a completion runs only after its data is visible,
//!   and, unless the op was submitted as replayable, durable.
//! - No heed transaction crosses an `.await`: reads run in `spawn_blocking`, writes on the
//!   writer thread that opened them (heed #339).

pub mod keys;
#[cfg(test)]
pub mod mem;
mod scan;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};

/// Address space reserved for the memory map; the file grows sparsely as data arrives.
const MAP_SIZE: usize = 256 << 30;
/// More operations than this wait for the next transaction, bounding commit latency.
const MAX_BATCH: usize = 4096;

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
}

const TABLES: [(Table, &str); 14] = [
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

/// A read transaction, handed to closures run by [`Store::read`].
pub struct ReadTxn<'a> {
    txn: RoTxn<'a, WithoutTls>,
    dbs: &'a Dbs,
}

impl KvRead for ReadTxn<'_> {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
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
        read_range(self.dbs, &self.txn, t, from, to, limit, rev)
    }
}

/// A (nested) write transaction, handed to operations run by the writer thread.
pub struct WriteTxn<'a, 'b> {
    txn: &'a mut RwTxn<'b>,
    dbs: &'a Dbs,
}

impl KvRead for WriteTxn<'_, '_> {
    fn get(&self, t: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.dbs.of(t).get(self.txn, key)?.map(|v| v.to_vec()))
    }
    fn contains(&self, t: Table, key: &[u8]) -> Result<bool> {
        Ok(self.dbs.of(t).get(self.txn, key)?.is_some())
    }
    fn range(
        &self,
        t: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
        rev: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        read_range(self.dbs, self.txn, t, from, to, limit, rev)
    }
}

impl KvWrite for WriteTxn<'_, '_> {
    fn put(&mut self, t: Table, key: &[u8], value: &[u8]) -> Result<()> {
        crate::stats::STORE.put(value.len());
        Ok(self.dbs.of(t).put(self.txn, key, value)?)
    }
    fn delete(&mut self, t: Table, key: &[u8]) -> Result<()> {
        self.dbs.of(t).delete(self.txn, key)?;
        Ok(())
    }
    fn delete_range(&mut self, t: Table, from: &[u8], to: &[u8]) -> Result<usize> {
        if from >= to {
            return Ok(0);
        }
        Ok(self.dbs.of(t).delete_range(self.txn, &bounds(from, to))?)
    }
}

/// One queued write: `run` inside the batch transaction (possibly again, after another op of
/// the batch failed), `finish` after its commit.
trait Op: Send {
    /// Returns whether the op succeeded; on failure its writes must be rolled back.
    fn run(&mut self, txn: &mut WriteTxn<'_, '_>) -> bool;
    fn finish(self: Box<Self>, committed: Result<()>);
    /// Whether the op may commit without the meta-page flush (module doc).
    fn replayable(&self) -> bool;
}

struct TypedOp<T, W, D> {
    work: W,
    replayable: bool,
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

    fn replayable(&self) -> bool {
        self.replayable
    }
}

struct Inner {
    env: &'static Env<WithoutTls>,
    dbs: Dbs,
    /// Feeds the writer thread; `None` once shut down.
    writer: std::sync::Mutex<Option<mpsc::Sender<Box<dyn Op>>>>,
    /// Extra delay after every commit, for the slow-disk drill (0 = off).
    fsync_delay_ms: std::sync::atomic::AtomicU64,
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
        let (tx, rx) = mpsc::channel::<Box<dyn Op>>();
        let inner = Arc::new(Inner {
            env,
            dbs: Dbs(dbs),
            writer: std::sync::Mutex::new(Some(tx)),
            fsync_delay_ms: Default::default(),
        });
        let for_thread = inner.clone();
        std::thread::Builder::new()
            .name("lmdb-writer".into())
            .spawn(move || writer_loop(&for_thread, rx))
            .map_err(|e| StoreError::Lmdb(format!("spawn writer: {e}")))?;
        Ok(Store { inner })
    }

    /// Queue `work` for the next write transaction; `done` runs after it committed (or failed).
    /// `work` may run more than once (see the module doc): it must not consume what it needs
    /// for a second run, and only the last run's writes count.
    pub fn submit<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send + 'static,
        done: impl FnOnce(Result<T>) + Send + 'static,
    ) {
        self.enqueue(Box::new(TypedOp {
            work,
            replayable: false,
            outcome: None,
            done,
        }));
    }

    /// Queue `work` and wait for its completion (see `write` and `write_replayable`).
    async fn write_op<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send + 'static,
        replayable: bool,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(Box::new(TypedOp {
            work,
            replayable,
            outcome: None,
            done: move |r| {
                let _ = tx.send(r);
            },
        }));
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

    /// Run `work` in the next write transaction and wait until it is durable.
    pub async fn write<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_op(work, false).await
    }

    /// Like [`Store::write`] for work whose result the Raft log can rebuild (a state-machine
    /// apply): it returns once the write is visible, possibly before it is durable (module doc).
    pub async fn write_replayable<T: Send + 'static>(
        &self,
        work: impl FnMut(&mut WriteTxn<'_, '_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_op(work, true).await
    }

    /// Run `f` in a read transaction off the async runtime.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTxn<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(f))
            .await
            .map_err(|e| StoreError::Lmdb(format!("read task: {e}")))?
    }

    /// Run `f` in a read transaction on the current thread (must not be an async worker).
    pub fn read_blocking<T>(&self, f: impl FnOnce(&ReadTxn<'_>) -> Result<T>) -> Result<T> {
        let txn = self.inner.env.read_txn()?;
        f(&ReadTxn {
            txn,
            dbs: &self.inner.dbs,
        })
    }

    /// Delay every commit by `ms` (slow-disk drill); 0 turns it off.
    pub fn set_fsync_delay(&self, ms: u64) {
        self.inner
            .fsync_delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stop accepting writes; queued writes still commit.
    pub fn shutdown(&self) {
        self.inner.writer.lock().expect("writer lock poisoned").take();
    }
}

fn writer_loop(inner: &Inner, rx: mpsc::Receiver<Box<dyn Op>>) {
    let mut meta_sync = true;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let want_meta_sync = !batch.iter().all(|op| op.replayable());
        if want_meta_sync != meta_sync {
            let mode = if want_meta_sync {
                heed::FlagSetMode::Disable
            } else {
                heed::FlagSetMode::Enable
            };
            // SAFETY: only this thread writes, and no write transaction is open. NO_META_SYNC
            // keeps LMDB consistent (an OS crash may undo the last transaction, which holds
            // only replayable work); the durable commits turn it off again.
            match unsafe { inner.env.set_flags(heed::EnvFlags::NO_META_SYNC, mode) } {
                Ok(()) => meta_sync = want_meta_sync,
                Err(e) => tracing::error!(error = %e, "switching the meta-page flush"),
            }
        }
        let result = run_batch(inner, &mut batch);
        if let Err(e) = &result {
            tracing::error!(error = %e, "write transaction failed");
        }
        let delay = inner.fsync_delay_ms.load(std::sync::atomic::Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        for op in batch {
            op.finish(result.clone());
        }
    }
}

/// Run every op of `batch` in one transaction and commit it. Fast path: all ops directly in
/// the transaction. If one fails, abort and run the batch again, each op in a nested
/// transaction, so only the failing ones are rolled back.
fn run_batch(inner: &Inner, batch: &mut [Box<dyn Op>]) -> Result<()> {
    let mut wtxn = inner.env.write_txn()?;
    let mut all_ok = true;
    for op in batch.iter_mut() {
        let mut txn = WriteTxn {
            txn: &mut wtxn,
            dbs: &inner.dbs,
        };
        if !op.run(&mut txn) {
            all_ok = false;
            break;
        }
    }
    if all_ok {
        return commit(wtxn, batch.len());
    }
    wtxn.abort();
    let mut wtxn = inner.env.write_txn()?;
    for op in batch.iter_mut() {
        let mut nested = inner.env.nested_write_txn(&mut wtxn)?;
        if op.run(&mut WriteTxn {
            txn: &mut nested,
            dbs: &inner.dbs,
        }) {
            nested.commit()?;
        } else {
            nested.abort();
        }
    }
    commit(wtxn, batch.len())
}

/// Commit a batch's transaction (the fsync), timed for the metrics.
fn commit(wtxn: RwTxn<'_>, ops: usize) -> Result<()> {
    let started = std::time::Instant::now();
    let committed = wtxn.commit();
    crate::stats::STORE.commit(started.elapsed(), ops, committed.is_ok());
    Ok(committed?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        key: &'static [u8],
        fail: bool,
        runs: Arc<std::sync::atomic::AtomicUsize>,
        out: mpsc::Sender<(&'static [u8], bool)>,
    ) -> Box<dyn Op> {
        Box::new(TypedOp {
            replayable: false,
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

    #[test]
    fn a_failing_op_is_rolled_back_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let mut batch = vec![
            op(b"a", false, runs.clone(), tx.clone()),
            op(b"b", true, runs.clone(), tx.clone()),
            op(b"c", false, runs.clone(), tx.clone()),
        ];
        let committed = run_batch(&store.inner, &mut batch);
        assert!(committed.is_ok());
        for o in batch {
            o.finish(committed.clone());
        }
        let mut results: Vec<_> = rx.try_iter().collect();
        results.sort();
        assert_eq!(
            results,
            vec![(&b"a"[..], true), (&b"b"[..], false), (&b"c"[..], true)]
        );
        // Fast path ran a and b; the retry ran all three.
        assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 5);
        let stored = store
            .read_blocking(|r| Ok([b"a", b"b", b"c"].map(|k| r.get(Table::Vars, k).expect("get").is_some())))
            .expect("read");
        assert_eq!(stored, [true, false, true]);
    }

    #[test]
    fn a_clean_batch_runs_each_op_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, _rx) = mpsc::channel();
        let mut batch = vec![
            op(b"a", false, runs.clone(), tx.clone()),
            op(b"b", false, runs.clone(), tx),
        ];
        run_batch(&store.inner, &mut batch).expect("commit");
        assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
