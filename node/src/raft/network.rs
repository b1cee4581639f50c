//! The cluster transport: one multiplexed TCP connection from this node to each peer, carrying
//! the Raft RPCs of every group (tagged with the group id) and the app's own RPCs (forwarded
//! client requests, status probes) as opaque bytes.
//!
//! Wire format: `u32` big-endian length, then a postcard-encoded [`Frame`]. Frames over
//! [`MAX_FRAME`] close the connection: nothing a peer sends can make us allocate more.
//!
//! Every connection starts with a mutual challenge-response: `Hello` (version, node id,
//! cluster id, client nonce) -> `Challenge` (server's cluster id and nonce, HMAC-SHA256 of
//! both nonces under the cluster secret) -> `Proof` (the client's HMAC). The secret never
//! crosses the wire. A peer of another protocol version, another cluster id or without the
//! secret is refused and logged. A node that has no cluster id yet (one started with
//! `--seed`) adopts its first authenticated peer's.
//!
//! With TLS (`--tls-*`, `crate::tls`) each connection is mutual TLS first: the accepting node
//! requires a client certificate from the CA, the connecting node verifies the accepting one's
//! certificate against the CA and the host of the address it dialled. The handshake above then
//! runs inside TLS, and the frames are unchanged. A TLS failure (wrong CA, name mismatch, a
//! plain-TCP peer) is logged on both sides like a refused cluster handshake and counts as a
//! failed connection the same way: the call is `Unreachable`, a ping that meets it declares the
//! peer down, exactly as a wrong secret does.
//!
//! Fault injection lives here too (the node's transport is the seam): traffic to or from a
//! blocked peer is dropped in both directions.
//!
//! Failure detection is node-level and lives here as well: [`Transport::watch_peers`] pings
//! every known peer over the shared connection every [`PING_INTERVAL`], and at once when the
//! connection to a peer is lost (a killed process's sockets close with it, so a kill is noticed
//! within a connect attempt, not a ping interval). A peer whose ping fails (connection refused
//! or lost: a killed process; or blocked by a drill) is declared down at once, and the
//! `on_down` callback runs once per transition; an answered ping declares it up.
//! A ping unanswered within [`PING_DEADLINE`] changes nothing: silence is left to the Raft
//! timers, because on the loaded 2-core machine pings of live nodes went unanswered for over
//! 600 ms often enough that declaring silent peers down made the cluster flap (measured in
//! `failover_under_load`: more than 20 false "down"s in one run). One ping per node pair,
//! whatever the number of groups.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use openraft::OptionalSend;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft_multi::{GroupNetworkAdapter, GroupNetworkFactory, GroupRouter};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::state_machine::SnapshotData;
use super::{GroupId, NodeId, Peer, SnapshotMeta, TypeConfig, Vote};
use crate::tls::PeerTls;

/// Bumped on any incompatible change to [`Frame`].
pub const PROTOCOL_VERSION: u32 = 3;
/// Large enough for a snapshot of a big channel, small enough to refuse garbage lengths.
pub const MAX_FRAME: usize = 512 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Read buffer of a peer connection: room for a burst of small frames.
const READ_BUFFER: usize = 64 << 10;
/// How often each peer is pinged: it bounds how late a peer is declared up again, and paces
/// the silence count. Not how late a kill is noticed (a lost connection is probed at once).
/// At 50 ms the pings were a third of an idle node's CPU (0.9 % of a core of 2.5 %).
pub const PING_INTERVAL: Duration = Duration::from_millis(200);
/// How long a ping may wait for its answer (including a reconnect); past it the ping is
/// dropped without a verdict and the next one is sent.
pub const PING_DEADLINE: Duration = Duration::from_millis(300);
/// Least time an append (or heartbeat) may wait for its answer. openraft gives them the
/// heartbeat interval (100 ms); on the loaded 2-core machine that timed out thousands of
/// appends to live peers, which openraft then resent. A dead peer is noticed by the transport
/// (refused or lost connection) long before this.
const MIN_APPEND_TTL: Duration = Duration::from_secs(1);
/// Unanswered pings in a row (about a second) after which `on_silent` runs. Silence declares
/// nothing down (module doc); it only lets the node restart timers it had stopped.
const SILENT_PINGS: u32 = 3;

#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    Append(GroupId, AppendEntriesRequest<TypeConfig>),
    Vote(GroupId, VoteRequest<TypeConfig>),
    PreVote(GroupId, VoteRequest<TypeConfig>),
    Snapshot(
        GroupId,
        Vote,
        SnapshotMeta,
        #[serde(with = "serde_bytes")] SnapshotData,
    ),
    TransferLeader(GroupId, TransferLeaderRequest<TypeConfig>),
    /// An application request, encoded by the cluster layer.
    App(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Node-level liveness probe, answered by the transport itself with [`Reply::Pong`].
    Ping,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    /// `Err` carries the target's reason for refusing the transfer.
    TransferLeader(Result<(), String>),
    App(#[serde(with = "serde_bytes")] Vec<u8>),
    Pong,
}

type Nonce = [u8; 16];

#[derive(Debug, Serialize, Deserialize)]
enum Frame {
    Hello {
        version: u32,
        node_id: NodeId,
        cluster_id: Option<u64>,
        nonce: Nonce,
    },
    Challenge {
        cluster_id: Option<u64>,
        nonce: Nonce,
        proof: Vec<u8>,
    },
    Proof {
        proof: Vec<u8>,
    },
    Request {
        id: u64,
        rpc: Rpc,
    },
    /// `Err` is the remote's error message: the request reached it and failed there.
    Response {
        id: u64,
        result: Result<Reply, String>,
    },
    /// The handshake failed; the reason is for the peer's log.
    Refused {
        reason: String,
    },
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// Not connected (refused, down, blocked, no address): back off before retrying.
    #[error("node {0} unreachable: {1}")]
    Unreachable(NodeId, String),
    #[error("node {0} did not answer in time")]
    Timeout(NodeId),
    /// The peer received the request and answered with an error.
    #[error("node {0}: {1}")]
    Remote(NodeId, String),
}

/// Serves incoming RPCs; implemented by the cluster layer.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        from: NodeId,
        rpc: Rpc,
    ) -> Pin<Box<dyn Future<Output = Result<Reply, String>> + Send + '_>>;
}

/// An outgoing connection: a writer task fed by `tx`, a reader task resolving `pending`.
struct Conn {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// Calls awaiting their response; std mutex, touched only to insert/remove.
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Reply, String>>>>,
    closed: AtomicBool,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        // Dropping the senders wakes every waiter with an error.
        self.pending.lock().expect("pending lock poisoned").clear();
    }
}

/// The read half of an established peer connection (plain TCP or TLS).
type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;
/// The write half of an established peer connection.
type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;

pub struct Transport {
    node_id: NodeId,
    /// HMAC key of the handshake (`--cluster-secret`; empty when none is set).
    secret: Vec<u8>,
    /// Mutual TLS around every connection (`--tls-*`); None: plain TCP.
    tls: Option<PeerTls>,
    /// The cluster this node belongs to; None until a `--seed` node meets its first peer.
    cluster_id: Mutex<Option<u64>>,
    /// Persists an adopted cluster id.
    on_adopt: OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
    /// Peer cluster addresses, from the metadata group's membership.
    addrs: RwLock<HashMap<NodeId, String>>,
    conns: Mutex<HashMap<NodeId, Arc<Conn>>>,
    next_id: AtomicU64,
    handler: OnceLock<Arc<dyn Handler>>,
    /// Peers whose traffic is dropped in both directions (the isolate drill).
    blocked: RwLock<HashSet<NodeId>>,
    /// Peers the pings declare down (see the module doc).
    down: RwLock<HashSet<NodeId>>,
    /// Peers with a ping in flight: at most one each, so a silent peer costs one timer.
    probing: Mutex<HashSet<NodeId>>,
    /// Called once each time a peer goes from up (or unknown) to down.
    on_down: OnceLock<Box<dyn Fn(NodeId) + Send + Sync>>,
    /// Consecutive unanswered pings per peer.
    silent: Mutex<HashMap<NodeId, u32>>,
    /// Called each time a peer's pings have gone unanswered [`SILENT_PINGS`] times in a row.
    on_silent: OnceLock<Box<dyn Fn(NodeId) + Send + Sync>>,
    /// Peers whose outgoing connection just ended: `watch_peers` pings them at once.
    lost: mpsc::UnboundedSender<NodeId>,
    lost_rx: Mutex<Option<mpsc::UnboundedReceiver<NodeId>>>,
}

fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut buf = vec![0u8; 4];
    postcard::to_io(frame, &mut buf).expect("writing to a Vec cannot fail");
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> std::io::Result<Frame> {
    let len = r.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    // Grow with the bytes that actually arrive: a length alone must not cost memory.
    buf.clear();
    (&mut *r).take(len as u64).read_to_end(buf).await?;
    if buf.len() != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "frame cut short",
        ));
    }
    postcard::from_bytes(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Drain `rx` into `w`, flushing whenever the queue is empty (so bursts share a syscall).
async fn write_loop(w: impl AsyncWriteExt + Unpin, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut w = BufWriter::with_capacity(256 << 10, w);
    while let Some(frame) = rx.recv().await {
        if w.write_all(&frame).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if w.write_all(&more).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
}

fn nonce() -> Nonce {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).expect("the OS random source is available");
    n
}

/// HMAC-SHA256 over a role tag and both nonces, so a proof cannot be replayed in the other
/// direction or on another connection.
fn proof(secret: &[u8], role: &[u8], first: &Nonce, second: &Nonce) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(role);
    mac.update(first);
    mac.update(second);
    mac
}

async fn write_frame(w: &mut (impl AsyncWriteExt + Unpin), frame: &Frame) -> std::io::Result<()> {
    w.write_all(&encode_frame(frame)).await?;
    w.flush().await
}

fn refused(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg)
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

impl Transport {
    pub fn new(
        node_id: NodeId,
        secret: Vec<u8>,
        cluster_id: Option<u64>,
        tls: Option<PeerTls>,
    ) -> Arc<Transport> {
        let (lost, lost_rx) = mpsc::unbounded_channel();
        Arc::new(Transport {
            node_id,
            secret,
            tls,
            cluster_id: Mutex::new(cluster_id),
            on_adopt: OnceLock::new(),
            addrs: Default::default(),
            conns: Default::default(),
            next_id: AtomicU64::new(1),
            handler: OnceLock::new(),
            blocked: Default::default(),
            down: Default::default(),
            probing: Default::default(),
            on_down: OnceLock::new(),
            silent: Default::default(),
            on_silent: OnceLock::new(),
            lost,
            lost_rx: Mutex::new(Some(lost_rx)),
        })
    }

    pub fn set_handler(&self, h: Arc<dyn Handler>) {
        let _ = self.handler.set(h);
    }

    /// Called once with the cluster id a joining node adopts, to persist it.
    pub fn set_on_adopt(&self, f: Box<dyn Fn(u64) + Send + Sync>) {
        let _ = self.on_adopt.set(f);
    }

    pub fn cluster_id(&self) -> Option<u64> {
        *self.cluster_id.lock().expect("cluster id lock poisoned")
    }

    /// Check a peer's cluster id against ours, adopting it if we have none.
    fn agree_cluster(&self, peer: NodeId, theirs: Option<u64>) -> std::io::Result<()> {
        let mut ours = self.cluster_id.lock().expect("cluster id lock poisoned");
        match (*ours, theirs) {
            (Some(a), Some(b)) if a != b => Err(refused(format!(
                "node {peer} belongs to cluster {b:016x}, this node to {a:016x}"
            ))),
            (None, Some(b)) => {
                *ours = Some(b);
                drop(ours);
                tracing::info!(cluster_id = %format!("{b:016x}"), from = peer, "adopted the cluster id");
                if let Some(f) = self.on_adopt.get() {
                    f(b);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The client half of the handshake, on a fresh connection to `target`.
    async fn client_handshake(
        &self,
        target: NodeId,
        stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        use hmac::Mac;
        let mine = nonce();
        write_frame(
            stream,
            &Frame::Hello {
                version: PROTOCOL_VERSION,
                node_id: self.node_id,
                cluster_id: self.cluster_id(),
                nonce: mine,
            },
        )
        .await?;
        let mut buf = Vec::new();
        let (cluster_id, theirs, server_proof) = match read_frame(stream, &mut buf).await? {
            Frame::Challenge {
                cluster_id,
                nonce,
                proof,
            } => (cluster_id, nonce, proof),
            Frame::Refused { reason } => return Err(refused(format!("node {target} refused us: {reason}"))),
            other => return Err(refused(format!("node {target} answered {other:?}"))),
        };
        proof(&self.secret, b"server", &mine, &theirs)
            .verify_slice(&server_proof)
            .map_err(|_| refused(format!("node {target} does not know the cluster secret")))?;
        self.agree_cluster(target, cluster_id)?;
        let p = proof(&self.secret, b"client", &theirs, &mine)
            .finalize()
            .into_bytes()
            .to_vec();
        write_frame(stream, &Frame::Proof { proof: p }).await
    }

    /// The server half: answers who the peer is once it proved it knows the secret.
    async fn server_handshake(
        &self,
        stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    ) -> std::io::Result<NodeId> {
        use hmac::Mac;
        let mut buf = Vec::new();
        let (version, peer, cluster_id, theirs) = match read_frame(stream, &mut buf).await? {
            Frame::Hello {
                version,
                node_id,
                cluster_id,
                nonce,
            } => (version, node_id, cluster_id, nonce),
            other => return Err(refused(format!("expected Hello, got {other:?}"))),
        };
        if version != PROTOCOL_VERSION {
            let reason = format!("protocol version {version}, this node speaks {PROTOCOL_VERSION}");
            let _ = write_frame(
                stream,
                &Frame::Refused {
                    reason: reason.clone(),
                },
            )
            .await;
            return Err(refused(format!("node {peer}: {reason}")));
        }
        if let (Some(a), Some(b)) = (self.cluster_id(), cluster_id)
            && a != b
        {
            let reason = format!("cluster id {b:016x} is not this cluster ({a:016x})");
            let _ = write_frame(
                stream,
                &Frame::Refused {
                    reason: reason.clone(),
                },
            )
            .await;
            return Err(refused(format!("node {peer}: {reason}")));
        }
        let mine = nonce();
        let p = proof(&self.secret, b"server", &theirs, &mine)
            .finalize()
            .into_bytes()
            .to_vec();
        write_frame(
            stream,
            &Frame::Challenge {
                cluster_id: self.cluster_id(),
                nonce: mine,
                proof: p,
            },
        )
        .await?;
        let client_proof = match read_frame(stream, &mut buf).await? {
            Frame::Proof { proof } => proof,
            other => return Err(refused(format!("node {peer}: expected Proof, got {other:?}"))),
        };
        proof(&self.secret, b"client", &mine, &theirs)
            .verify_slice(&client_proof)
            .map_err(|_| refused(format!("node {peer} does not know the cluster secret")))?;
        self.agree_cluster(peer, cluster_id)?;
        Ok(peer)
    }

    /// Record (or change) where a peer listens.
    pub fn set_addr(&self, id: NodeId, addr: &str) {
        let mut addrs = self.addrs.write().expect("addrs lock poisoned");
        if addrs.get(&id).map(String::as_str) != Some(addr) {
            addrs.insert(id, addr.to_string());
            drop(addrs);
            // An address change invalidates the old connection.
            if let Some(c) = self.conns.lock().expect("conns lock poisoned").remove(&id) {
                c.close();
            }
        }
    }

    pub fn addr_of(&self, id: NodeId) -> Option<String> {
        self.addrs.read().expect("addrs lock poisoned").get(&id).cloned()
    }

    /// Drop all traffic to and from `peers` (empty: heal).
    pub fn set_blocked(&self, peers: HashSet<NodeId>) {
        *self.blocked.write().expect("blocked lock poisoned") = peers.clone();
        let conns = self.conns.lock().expect("conns lock poisoned");
        for p in &peers {
            if let Some(c) = conns.get(p) {
                c.close();
            }
        }
    }

    fn is_blocked(&self, id: NodeId) -> bool {
        self.blocked.read().expect("blocked lock poisoned").contains(&id)
    }

    /// Called with each peer the pings declare down (once per up-to-down transition).
    pub fn set_on_down(&self, f: Box<dyn Fn(NodeId) + Send + Sync>) {
        let _ = self.on_down.set(f);
    }

    /// Called with a peer whose pings went unanswered [`SILENT_PINGS`] times in a row.
    pub fn set_on_silent(&self, f: Box<dyn Fn(NodeId) + Send + Sync>) {
        let _ = self.on_silent.set(f);
    }

    /// Count an answered (`false`) or unanswered (`true`) ping of `peer`.
    fn note_silence(&self, peer: NodeId, silent: bool) {
        let mut counts = self.silent.lock().expect("silent lock poisoned");
        if !silent {
            counts.remove(&peer);
            return;
        }
        let n = counts.entry(peer).or_default();
        *n += 1;
        if *n == SILENT_PINGS {
            drop(counts);
            if let Some(f) = self.on_silent.get() {
                f(peer);
            }
        }
    }

    /// `peer` answered, or connected to us: it is up and not silent.
    fn heard_from(&self, peer: NodeId) {
        self.note_silence(peer, false);
        self.set_down(peer, false);
    }

    /// Whether the last ping to `id` failed. A peer never pinged yet counts as up.
    pub fn is_down(&self, id: NodeId) -> bool {
        self.down.read().expect("down lock poisoned").contains(&id)
    }

    fn set_down(&self, peer: NodeId, down: bool) {
        let changed = {
            let mut set = self.down.write().expect("down lock poisoned");
            if down { set.insert(peer) } else { set.remove(&peer) }
        };
        if !changed {
            return;
        }
        if down {
            tracing::info!(peer, "peer declared down");
            if let Some(f) = self.on_down.get() {
                f(peer);
            }
        } else {
            tracing::info!(peer, "peer up");
        }
    }

    /// Ping every known peer every [`PING_INTERVAL`], and a peer whose connection was lost at
    /// once, forever; see the module doc.
    pub async fn watch_peers(self: Arc<Self>) {
        let Some(mut lost) = self.lost_rx.lock().expect("lost lock poisoned").take() else {
            return; // already watched
        };
        let mut tick = tokio::time::interval(PING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let peers: Vec<NodeId> = tokio::select! {
                _ = tick.tick() => self
                    .addrs
                    .read()
                    .expect("addrs lock poisoned")
                    .keys()
                    .copied()
                    .filter(|id| *id != self.node_id)
                    .collect(),
                Some(peer) = lost.recv() => vec![peer],
            };
            for peer in peers {
                self.clone().ping(peer);
            }
        }
    }

    /// Ping `peer` unless a ping to it is in flight, and record the verdict.
    fn ping(self: Arc<Self>, peer: NodeId) {
        if !self.probing.lock().expect("probing lock poisoned").insert(peer) {
            return;
        }
        tokio::spawn(async move {
            // The deadline covers a reconnect too (connect and handshake included).
            let r = tokio::time::timeout(PING_DEADLINE, self.call(peer, Rpc::Ping, PING_DEADLINE)).await;
            self.probing.lock().expect("probing lock poisoned").remove(&peer);
            match r {
                // A remote error means the peer received the ping: it is alive.
                Ok(Ok(_)) | Ok(Err(CallError::Remote(..))) => self.heard_from(peer),
                // Refused, lost or blocked: no process answers there.
                Ok(Err(CallError::Unreachable(..))) => self.set_down(peer, true),
                // Silent: maybe paused, maybe just slow; see the module doc.
                Ok(Err(CallError::Timeout(_))) | Err(_) => self.note_silence(peer, true),
            }
        });
    }

    /// Send `rpc` to `target` and wait up to `ttl` for its reply.
    pub async fn call(&self, target: NodeId, rpc: Rpc, ttl: Duration) -> Result<Reply, CallError> {
        if self.is_blocked(target) {
            return Err(CallError::Unreachable(target, "blocked by drill".into()));
        }
        let conn = match self.open_conn(target) {
            Some(c) => c,
            // Only pings dial a peer declared down: after a kill, every group it led or
            // followed here otherwise tried a connection per heartbeat and per replication
            // retry (a profile of 517 groups failing over spent 9 % of the survivors' CPU in
            // refused connects). An answered ping, or the peer connecting to us, ends it.
            None if !matches!(rpc, Rpc::Ping) && self.is_down(target) => {
                return Err(CallError::Unreachable(target, "declared down".into()));
            }
            None => self.dial(target).await?,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().expect("pending lock poisoned").insert(id, tx);
        if conn.closed.load(Ordering::Relaxed)
            || conn.tx.send(encode_frame(&Frame::Request { id, rpc })).is_err()
        {
            conn.pending.lock().expect("pending lock poisoned").remove(&id);
            return Err(CallError::Unreachable(target, "connection closed".into()));
        }
        match tokio::time::timeout(ttl, rx).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(msg))) => Err(CallError::Remote(target, msg)),
            Ok(Err(_)) => Err(CallError::Unreachable(target, "connection lost".into())),
            Err(_) => {
                conn.pending.lock().expect("pending lock poisoned").remove(&id);
                Err(CallError::Timeout(target))
            }
        }
    }

    /// The established connection to `target`, if any.
    fn open_conn(&self, target: NodeId) -> Option<Arc<Conn>> {
        let conns = self.conns.lock().expect("conns lock poisoned");
        conns
            .get(&target)
            .filter(|c| !c.closed.load(Ordering::Relaxed))
            .cloned()
    }

    /// Open a connection to `target` (`call` found none open).
    async fn dial(&self, target: NodeId) -> Result<Arc<Conn>, CallError> {
        let addr = self
            .addr_of(target)
            .ok_or_else(|| CallError::Unreachable(target, "no known address".into()))?;
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(CallError::Unreachable(target, format!("{addr}: {e}"))),
            Err(_) => {
                return Err(CallError::Unreachable(
                    target,
                    format!("{addr}: connect timed out"),
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        let (r, w) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.open(target, &addr, stream)).await {
            Ok(Ok(halves)) => halves,
            Ok(Err(e)) => {
                tracing::warn!(target_node = target, error = %e, "cluster handshake failed");
                return Err(CallError::Unreachable(target, e.to_string()));
            }
            Err(_) => return Err(CallError::Unreachable(target, "handshake timed out".into())),
        };
        // Buffered: one read syscall fetches many frames (a length prefix alone costs one).
        let mut r = tokio::io::BufReader::with_capacity(READ_BUFFER, r);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(w, rx));
        let conn = Arc::new(Conn {
            tx,
            pending: Default::default(),
            closed: AtomicBool::new(false),
        });
        let (reader_conn, lost) = (conn.clone(), self.lost.clone());
        let opened = std::time::Instant::now();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                match read_frame(&mut r, &mut buf).await {
                    Ok(Frame::Response { id, result }) => {
                        let waiter = reader_conn
                            .pending
                            .lock()
                            .expect("pending lock poisoned")
                            .remove(&id);
                        if let Some(w) = waiter {
                            let _ = w.send(result);
                        }
                    }
                    Ok(other) => {
                        tracing::warn!(target_node = target, "unexpected frame from server: {other:?}");
                        break;
                    }
                    Err(_) => break,
                }
            }
            reader_conn.close();
            // A connection that ends as soon as it opens waits for the regular ping, so a peer
            // that keeps closing them cannot make this a reconnect loop.
            if opened.elapsed() >= PING_INTERVAL {
                let _ = lost.send(target);
            }
        });
        let mut conns = self.conns.lock().expect("conns lock poisoned");
        match conns.get(&target) {
            // Another caller connected meanwhile: use theirs, let ours close.
            Some(c) if !c.closed.load(Ordering::Relaxed) => {
                conn.close();
                Ok(c.clone())
            }
            _ => {
                conns.insert(target, conn.clone());
                Ok(conn)
            }
        }
    }

    /// The connecting side of a new connection to `target` at `addr`: TLS (when configured),
    /// then the cluster handshake; the halves of the authenticated stream.
    async fn open(
        &self,
        target: NodeId,
        addr: &str,
        mut tcp: TcpStream,
    ) -> std::io::Result<(ReadHalf, WriteHalf)> {
        let Some(tls) = &self.tls else {
            self.client_handshake(target, &mut tcp).await?;
            let (r, w) = tcp.into_split();
            return Ok((Box::new(r), Box::new(w)));
        };
        let name = crate::tls::server_name(addr)?;
        let mut stream = tls
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| refused(format!("TLS handshake with node {target} at {addr}: {e}")))?;
        // In TLS 1.3 the peer checks our certificate after our side of the handshake is done:
        // its refusal arrives as an alert on the first read, here.
        self.client_handshake(target, &mut stream).await.map_err(|e| {
            let alert = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some();
            if alert {
                refused(format!("TLS with node {target} at {addr}: {e}"))
            } else {
                e
            }
        })?;
        let (r, w) = tokio::io::split(stream);
        Ok((Box::new(r), Box::new(w)))
    }

    /// The accepting side: TLS (when configured), then the cluster handshake; the peer's id
    /// and the halves of the authenticated stream.
    async fn accept(&self, mut tcp: TcpStream) -> std::io::Result<(NodeId, ReadHalf, WriteHalf)> {
        let Some(tls) = &self.tls else {
            let peer = self.server_handshake(&mut tcp).await?;
            let (r, w) = tcp.into_split();
            return Ok((peer, Box::new(r), Box::new(w)));
        };
        let mut stream = tls
            .acceptor
            .accept(tcp)
            .await
            .map_err(|e| refused(format!("TLS handshake: {e}")))?;
        let peer = self.server_handshake(&mut stream).await?;
        let (r, w) = tokio::io::split(stream);
        Ok((peer, Box::new(r), Box::new(w)))
    }

    /// Accept peer connections until the listener fails or the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer_addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.serve_conn(stream).await {
                    tracing::debug!(%peer_addr, error = %e, "peer connection ended");
                }
            });
        }
    }

    async fn serve_conn(self: Arc<Self>, stream: TcpStream) -> std::io::Result<()> {
        let _ = stream.set_nodelay(true);
        let peer_addr = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let (from, r, w) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.accept(stream)).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(e)) => {
                tracing::warn!(%peer_addr, error = %e, "refused a cluster connection");
                return Ok(());
            }
            Err(_) => {
                tracing::warn!(%peer_addr, "refused a cluster connection: handshake timed out");
                return Ok(());
            }
        };
        // A peer that just proved it knows the secret is up (a restarted node dials its peers
        // at once); otherwise calls to it would fail until our next ping.
        if !self.is_blocked(from) {
            self.heard_from(from);
        }
        let mut r = tokio::io::BufReader::with_capacity(READ_BUFFER, r);
        let mut buf = Vec::new();
        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(write_loop(w, rx));
        loop {
            let frame = read_frame(&mut r, &mut buf).await?;
            let Frame::Request { id, rpc } = frame else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "expected a request",
                ));
            };
            if self.is_blocked(from) {
                continue;
            }
            if let Rpc::Ping = rpc {
                // Answered here, not by the handler: liveness of the node, not of its groups.
                let _ = tx.send(encode_frame(&Frame::Response {
                    id,
                    result: Ok(Reply::Pong),
                }));
                continue;
            }
            let Some(handler) = self.handler.get().cloned() else {
                continue;
            };
            let (tx, me) = (tx.clone(), self.clone());
            tokio::spawn(async move {
                let result = handler.handle(from, rpc).await;
                // A drill may have started while the request was served.
                if !me.is_blocked(from) {
                    let _ = tx.send(encode_frame(&Frame::Response { id, result }));
                }
            });
        }
    }
}

/// The fuzz seam (`fuzz/fuzz_targets/peer_frames.rs`), not used by the node: decode `bytes`
/// as the frames a peer sends on one connection, the way both connection readers do (length,
/// size check, postcard, `Debug` for the log), until the first error. Returns the opaque `App`
/// payloads of requests and replies, which the cluster layer decodes next.
#[doc(hidden)]
pub fn decode_peer_bytes(bytes: &[u8]) -> Vec<Vec<u8>> {
    let (mut r, mut buf, mut apps) = (bytes, Vec::new(), Vec::new());
    while let Ok(frame) = futures::executor::block_on(read_frame(&mut r, &mut buf)) {
        let _ = format!("{frame:?}");
        match frame {
            Frame::Request { rpc: Rpc::App(b), .. }
            | Frame::Response {
                result: Ok(Reply::App(b)),
                ..
            } => apps.push(b),
            _ => {}
        }
    }
    apps
}

/// The openraft-multi router: every group's RPCs to a peer go over the same connection.
#[derive(Clone)]
pub struct Router(pub Arc<Transport>);

fn rpc_err(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected(target: NodeId, reply: Reply) -> RPCError<TypeConfig> {
    let e = CallError::Remote(target, format!("unexpected reply {reply:?}"));
    RPCError::Network(NetworkError::new(&e))
}

impl GroupRouter<TypeConfig, GroupId> for Router {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .0
            .call(
                target,
                Rpc::Append(group, rpc),
                option.hard_ttl().max(MIN_APPEND_TTL),
            )
            .await
            .map_err(rpc_err)?
        {
            Reply::Append(r) => Ok(r),
            other => Err(unexpected(target, other)),
        }
    }

    async fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .0
            .call(target, Rpc::Vote(group, rpc), option.hard_ttl())
            .await
            .map_err(rpc_err)?
        {
            Reply::Vote(r) => Ok(r),
            other => Err(unexpected(target, other)),
        }
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .0
            .call(target, Rpc::PreVote(group, rpc), option.hard_ttl())
            .await
            .map_err(rpc_err)?
        {
            Reply::Vote(r) => Ok(r),
            other => Err(unexpected(target, other)),
        }
    }

    async fn full_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotData>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let rpc = Rpc::Snapshot(group, vote, snapshot.meta, snapshot.snapshot);
        match self.0.call(target, rpc, option.hard_ttl()).await {
            Ok(Reply::Snapshot(r)) => Ok(r),
            Ok(other) => Err(StreamingError::Network(NetworkError::from_string(format!(
                "unexpected reply {other:?}"
            )))),
            Err(e @ CallError::Unreachable(..)) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(StreamingError::Network(NetworkError::new(&e))),
        }
    }

    async fn transfer_leader(
        &self,
        target: NodeId,
        group: GroupId,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .0
            .call(target, Rpc::TransferLeader(group, req), option.hard_ttl())
            .await
            .map_err(rpc_err)?
        {
            Reply::TransferLeader(Ok(())) => Ok(Ok(())),
            Reply::TransferLeader(Err(msg)) => Err(RPCError::Network(NetworkError::from_string(msg))),
            other => Err(unexpected(target, other)),
        }
    }
}

pub type NetworkFactory = GroupNetworkFactory<Router, GroupId>;

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = GroupNetworkAdapter<TypeConfig, GroupId, Router>;

    async fn new_client(&mut self, target: NodeId, node: &Peer) -> Self::Network {
        // Memberships carry addresses too; they seed the address book for new peers.
        if self.factory.0.addr_of(target).is_none() && !node.cluster_addr.is_empty() {
            self.factory.0.set_addr(target, &node.cluster_addr);
        }
        GroupNetworkAdapter::new(self.factory.clone(), target, self.group_id)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// In-memory readers need no runtime: a plain executor keeps each case cheap.
    fn run<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    proptest! {
        /// Whatever bytes a peer sends, decoding answers an error or a frame, never a panic,
        /// and memory grows only with the bytes received, whatever length a frame announces.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = postcard::from_bytes::<Frame>(&bytes);
            let mut r = &bytes[..];
            let mut buf = Vec::new();
            let _ = run(read_frame(&mut r, &mut buf));
            prop_assert!(buf.capacity() <= 2 * bytes.len() + 64);
        }

        /// App requests and handshake frames survive the codec unchanged.
        #[test]
        fn frames_round_trip(id in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..4096),
                             node in any::<u64>(), cluster in any::<Option<u64>>(), nonce in any::<[u8; 16]>()) {
            for frame in [
                Frame::Request { id, rpc: Rpc::App(body.clone()) },
                Frame::Response { id, result: Ok(Reply::App(body.clone())) },
                Frame::Response { id, result: Err("refused".into()) },
                Frame::Hello { version: PROTOCOL_VERSION, node_id: node, cluster_id: cluster, nonce },
            ] {
                let wire = encode_frame(&frame);
                let mut r = &wire[..];
                let mut buf = Vec::new();
                let back = run(read_frame(&mut r, &mut buf)).expect("decodes");
                prop_assert_eq!(format!("{back:?}"), format!("{frame:?}"));
            }
        }
    }

    #[test]
    fn oversized_lengths_are_refused_without_allocating() {
        let mut wire = ((MAX_FRAME as u32) + 1).to_be_bytes().to_vec();
        wire.extend_from_slice(&[0; 16]);
        let mut r = &wire[..];
        let mut buf = Vec::new();
        let err = run(read_frame(&mut r, &mut buf)).expect_err("too large");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn proofs_depend_on_secret_role_and_nonces() {
        use hmac::Mac;
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let p = |secret: &[u8], role: &[u8], x: &Nonce, y: &Nonce| {
            proof(secret, role, x, y).finalize().into_bytes()
        };
        assert_eq!(p(b"s", b"client", &a, &b), p(b"s", b"client", &a, &b));
        assert_ne!(p(b"s", b"client", &a, &b), p(b"t", b"client", &a, &b));
        assert_ne!(p(b"s", b"client", &a, &b), p(b"s", b"server", &a, &b));
        assert_ne!(p(b"s", b"client", &a, &b), p(b"s", b"client", &b, &a));
    }
}
