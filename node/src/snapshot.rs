//! Backup and restore, etcd's model: `GET /cluster/snapshot` streams one node's data as of one
//! LMDB read transaction; `wknode --restore FILE` builds from such a file a data dir from which
//! the node bootstraps a NEW one-node cluster holding the same data.
//!
//! The file format is `wk_api::snapshot` (shared with `wkctl`, which must not depend on node
//! internals); this module decides which rows go in and how they come back.
//!
//! What a snapshot holds: the metadata tables (users with tokens, channels with subscribers,
//! sender blacklists and whitelists, group ids, node and gateway records, counters) and, for every channel
//! this node replicates, its state (last seq, running checksum) and its messages as `msgs`
//! rows (read out of the Raft log, where they live: `channel` module doc). Not the Raft logs or votes, nor the dedup rows:
//! the messages are complete without them, the logs belong to the old cluster, and a restore
//! rebuilds the dedup rows from the messages.
//!
//! What a restore writes, so that the data dir starts as a fresh one-node cluster (like
//! `etcdctl snapshot restore`: new membership and cluster id, data kept):
//! - no log, no vote, no metadata-group state: the node, started without `--init-nodes` or
//!   `--seed`, bootstraps group 0 with itself as the only member and a new random cluster id,
//!   then registers its own addresses;
//! - every channel's replica set becomes `[this node]`; each channel group keeps its last seq
//!   and checksum but forgets its applied log id and membership, so the first request
//!   initializes it as a one-replica group that continues the seqs where they were; its
//!   messages become archived rows (`ChannelState::archived`), since its new log starts empty;
//! - a snapshot of data format 2 (dedup rows keyed by the whole client_msg_no, a shorter
//!   channel state) is read too: that is the upgrade path from a format-2 data dir;
//! - the old node and gateway records, a drain in progress and the decommission set are dropped.
//!
//! Invariant: the read transaction lives on one blocking thread for the whole stream and never
//! crosses an `.await`; a bounded channel carries the bytes to the HTTP body, so a slow reader
//! slows the scan instead of filling memory.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use axum::body::Bytes;
use wk_api::snapshot::{
    SnapshotHeader, SnapshotReader, SnapshotStatus, SnapshotTrailer, SnapshotWriter, verify,
};

use crate::channel::{ChannelState, StoredMessage};
use crate::cluster::{FORMAT_VERSION, Node};
use crate::meta::ChannelRecord;
use crate::raft::META_GROUP;
use crate::raft::state_machine::SmState;
use crate::store::{KvWrite, Store, Table, decode, encode, keys};

/// The tables a snapshot carries as they are, in file order; the `msgs` rows follow.
const TABLES: [Table; 9] = [
    Table::Users,
    Table::Channels,
    Table::Groups,
    Table::Nodes,
    Table::Gateways,
    Table::Vars,
    Table::Lists,
    Table::Sm,
    // Users' conversation state, kept by group id like the messages.
    Table::Convs,
];
/// Messages read per page when a snapshot writes a channel's messages.
const MESSAGE_PAGE: u64 = 1024;
/// The data formats a restore reads.
const RESTORES_FORMATS: [u32; 2] = [2, FORMAT_VERSION];

/// Bytes per chunk handed to the HTTP body.
const CHUNK: usize = 256 << 10;
/// Chunks in flight between the scanning thread and the HTTP body.
const CHUNKS_IN_FLIGHT: usize = 4;

/// The byte stream of a snapshot of this node, produced by a blocking thread. A failure midway
/// ends the stream with an error (the client sees a cut body, which `verify` refuses).
pub fn stream(node: &Node) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let header = SnapshotHeader {
        node_id: node.id,
        cluster_id: node
            .transport
            .cluster_id()
            .map(|c| format!("{c:016x}"))
            .unwrap_or_default(),
        created_unix_ms: 0,
        data_format: FORMAT_VERSION,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let store = node.store.clone();
    tokio::task::spawn_blocking(move || {
        let sink = ChunkSink {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        match write_snapshot(&store, header, sink) {
            Ok(t) => tracing::info!(rows = t.rows, "snapshot streamed"),
            Err(e) => {
                tracing::warn!(error = %e, "snapshot stream failed");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) },
    )
}

/// Every snapshot row of the store, from one read transaction, into `out`.
fn write_snapshot(store: &Store, mut header: SnapshotHeader, out: impl Write) -> io::Result<SnapshotTrailer> {
    store
        .read_blocking(|r| {
            // The time the consistent view was taken: now, inside the transaction.
            header.created_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let run = || -> io::Result<SnapshotTrailer> {
                let mut w = SnapshotWriter::new(out, &header)?;
                for t in TABLES {
                    r.for_each(t, |k, v| w.row(t.name(), k, v))?;
                }
                let mut groups = Vec::new();
                r.for_each(Table::Sm, |k, _| {
                    groups
                        .extend(keys::u64_suffix(k).filter(|_| k.len() == 8 && k != keys::group(META_GROUP)));
                    Ok::<_, io::Error>(())
                })?;
                for g in groups {
                    write_messages(r, g, &mut w)?;
                }
                let (mut out, trailer) = w.finish()?;
                out.flush()?;
                Ok(trailer)
            };
            Ok(run())
        })
        .map_err(io::Error::from)?
}

/// Every message of channel group `g` as a sealed `msgs` row.
fn write_messages(
    r: &crate::store::ReadTxn<'_>,
    g: u64,
    w: &mut SnapshotWriter<impl Write>,
) -> io::Result<()> {
    let st = crate::raft::state_machine::load_state(r, g)
        .map_err(io::Error::from)?
        .channel;
    let mut lo = 1;
    while lo <= st.last_seq {
        let hi = st.last_seq.min(lo + MESSAGE_PAGE - 1);
        for m in crate::channel::read_messages(r, g, &st, lo, hi).map_err(io::Error::from)? {
            let key = keys::group_u64(g, m.message_seq);
            w.row(
                Table::Msgs.name(),
                &key,
                &crate::integrity::seal(&key, encode(&m)),
            )?;
        }
        lo = hi + 1;
    }
    Ok(())
}

/// Buffers writes into chunks and sends them to the HTTP body; fails once the client is gone.
struct ChunkSink {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkSink {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// What a restore wrote.
#[derive(Debug, serde::Serialize)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub node_id: u64,
    pub snapshot: SnapshotStatus,
    pub users: u64,
    pub channels: u64,
    pub messages: u64,
}

/// `wknode --restore FILE`: check the file, then write a new data dir for `node_id` (the
/// snapshot's node when `None`) under `data_dir` (`./wukong-data/<id>` when `None`).
pub async fn restore(
    file: &Path,
    node_id: Option<u64>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Restored> {
    let open = || std::fs::File::open(file).with_context(|| format!("open {}", file.display()));
    let status =
        verify(io::BufReader::new(open()?)).with_context(|| format!("{} is refused", file.display()))?;
    let format = status.header.data_format;
    if !RESTORES_FORMATS.contains(&format) {
        bail!("the snapshot holds data format {format}, this wknode restores formats {RESTORES_FORMATS:?}");
    }
    let node_id = node_id.unwrap_or(status.header.node_id);
    let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(format!("./wukong-data/{node_id}")));
    let lmdb = data_dir.join("lmdb");
    if lmdb.join("data.mdb").exists() {
        bail!(
            "{} already holds a node's data; restore into a new directory",
            data_dir.display()
        );
    }
    let fresh = !lmdb.exists();
    let written = write_restored(&lmdb, open()?, node_id, format).await;
    if written.is_err() && fresh {
        // Leave nothing half-made behind, so the same command can be run again.
        let _ = std::fs::remove_dir_all(&lmdb);
    }
    let counts = written?;
    Ok(Restored {
        data_dir,
        node_id,
        snapshot: status,
        users: counts.0,
        channels: counts.1,
        messages: counts.2,
    })
}

/// Write every row of the snapshot in `input` into a new store at `lmdb`, in one transaction;
/// returns the (users, channels, messages) written.
async fn write_restored(
    lmdb: &Path,
    input: std::fs::File,
    node_id: u64,
    format: u32,
) -> anyhow::Result<(u64, u64, u64)> {
    let store = Store::open(lmdb).context("create the data dir")?;
    let counts = store
        .write(move |w| {
            let corrupt = |reason: String| crate::store::StoreError::Corrupt {
                table: Table::Local,
                reason,
            };
            // The writer may run this work twice (store module doc): read from the start.
            let mut file = &input;
            io::Seek::seek(&mut file, io::SeekFrom::Start(0)).map_err(|e| corrupt(e.to_string()))?;
            let (mut r, _) =
                SnapshotReader::open(io::BufReader::new(file)).map_err(|e| corrupt(e.to_string()))?;
            let mut counts = (0u64, 0u64, 0u64);
            // The newest message id restored: the node's first ids must come after it.
            let mut newest_id = 0u64;
            while let Some(row) = r.next_row().map_err(|e| corrupt(e.to_string()))? {
                let t = Table::from_name(&row.table)
                    .filter(|t| TABLES.contains(t) || [Table::Msgs, Table::Dedup].contains(t))
                    .ok_or_else(|| corrupt(format!("unknown table {:?}", row.table)))?;
                match t {
                    Table::Users => counts.0 += 1,
                    Table::Channels => {
                        counts.1 += 1;
                        crate::meta::index_channel(w, &decode(t, &row.value)?)?;
                    }
                    Table::Msgs => {
                        counts.2 += 1;
                        newest_id = newest_id.max(restore_dedup(w, &row.key, &row.value)?);
                    }
                    _ => {}
                }
                if let Some(value) = restored_value(t, node_id, format, &row.key, row.value)? {
                    w.put(t, &row.key, &value)?;
                }
            }
            w.put(Table::Local, b"node_id", &encode(&node_id))?;
            w.put(Table::Local, b"format", &encode(&FORMAT_VERSION))?;
            w.put(
                Table::Local,
                crate::cluster::ids::RESERVATION_KEY,
                &encode(&crate::cluster::ids::IdGen::millis_of(newest_id)),
            )?;
            Ok(counts)
        })
        .await
        .with_context(|| format!("write {}", lmdb.display()));
    store.shutdown().await;
    counts
}

/// The dedup row of a restored message (`msgs` row `key`, `row`): its seq joins the list.
/// Returns the message's id.
fn restore_dedup(w: &mut impl KvWrite, key: &[u8], row: &[u8]) -> crate::store::Result<u64> {
    let m: StoredMessage = crate::integrity::decode(Table::Msgs, key, row)?;
    let g = keys::u64_suffix(&key[..8.min(key.len())]).ok_or_else(|| crate::store::StoreError::Corrupt {
        table: Table::Msgs,
        reason: "a message key without a group".into(),
    })?;
    let dedup = keys::dedup(g, &m.from_uid, &m.client_msg_no);
    let mut seqs: Vec<u64> = w.get_decoded(Table::Dedup, &dedup)?.unwrap_or_default();
    seqs.push(m.message_seq);
    w.put(Table::Dedup, &dedup, &encode(&seqs))?;
    Ok(m.message_id)
}

/// A channel group's state as data format 2 stored it.
#[derive(serde::Deserialize)]
struct SmStateV2 {
    _last_applied: Option<crate::raft::LogId>,
    _membership: crate::raft::StoredMembership,
    channel: ChannelStateV2,
}

#[derive(serde::Deserialize)]
struct ChannelStateV2 {
    last_seq: u64,
    checksum: u64,
    bytes: u64,
}

/// The value to write for a snapshot row (of data `format`) in the new one-node cluster;
/// `None` drops the row.
fn restored_value(
    t: Table,
    node_id: u64,
    format: u32,
    key: &[u8],
    value: Vec<u8>,
) -> crate::store::Result<Option<Vec<u8>>> {
    Ok(match t {
        Table::Channels => {
            let mut rec: ChannelRecord = decode(t, &value)?;
            rec.replicas = vec![node_id];
            Some(encode(&rec))
        }
        // Rebuilt from the channel records (`meta::index_channel`).
        Table::Members => None,
        // The node registers its own records when it starts.
        Table::Nodes | Table::Gateways => None,
        Table::Vars => crate::meta::var_survives_restore(key).then_some(value),
        Table::Sm if key == keys::group(META_GROUP) => None,
        Table::Sm => {
            // Keep the channel's seq and checksum; forget the old group's log position and
            // membership so the group starts anew with this node as its only replica. Its
            // messages are the archived `msgs` rows.
            let (last_seq, checksum, bytes) = if format == 2 {
                let old: SmStateV2 = decode(t, &value)?;
                (old.channel.last_seq, old.channel.checksum, old.channel.bytes)
            } else {
                let old: SmState = decode(t, &value)?;
                (old.channel.last_seq, old.channel.checksum, old.channel.bytes)
            };
            Some(encode(&SmState {
                channel: ChannelState {
                    last_seq,
                    checksum,
                    bytes,
                    archived: last_seq,
                    linear: None,
                },
                ..SmState::default()
            }))
        }
        // Rebuilt from the messages (`restore_dedup`).
        Table::Dedup => None,
        _ => Some(value),
    })
}

/// The text a restore prints: what was written and how to start it.
pub fn describe(r: &Restored) -> String {
    let h = &r.snapshot.header;
    format!(
        "restored the snapshot of node {} (cluster {}, taken at {} ms since the epoch, checksum {}) \
         into {} as node {}: {} users, {} channels, {} messages\n\
         start it as a new one-node cluster (no --init-nodes, no --seed):\n  \
         wknode --node-id {} --data-dir {}",
        h.node_id,
        if h.cluster_id.is_empty() {
            "-"
        } else {
            &h.cluster_id
        },
        h.created_unix_ms,
        r.snapshot.checksum,
        r.data_dir.display(),
        r.node_id,
        r.users,
        r.channels,
        r.messages,
        r.node_id,
        r.data_dir.display(),
    )
}
