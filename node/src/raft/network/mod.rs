//! The cluster transport: one multiplexed TCP connection from this node to each peer, carrying
//! the Raft RPCs of every group (tagged with the group id) and the app's own RPCs (forwarded
//! client requests, status probes) as opaque bytes.
//!
//! Its seams, one module each: the wire format (`frame`), who is on the other end (`handshake`:
//! the cluster-secret challenge and optional mutual TLS), node-level failure detection
//! (`liveness`: pings, down and silent peers), fault injection for the drills (`faults`), and
//! the openraft-multi router the groups use (`router`). This file holds the connections: the
//! address book, dialling, calls with their deadline, and serving a peer's requests.

mod faults;
mod frame;
mod handshake;
mod liveness;
mod router;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use frame::{Frame, READ_BUFFER, encode_frame, read_frame, write_loop};
pub use frame::{MAX_FRAME, PROTOCOL_VERSION, Reply, Rpc, decode_peer_bytes};
use handshake::HANDSHAKE_TIMEOUT;
pub use liveness::{PING_DEADLINE, PING_INTERVAL};
pub use router::{NetworkFactory, Router};

use super::NodeId;
use crate::tls::PeerTls;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

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
    /// The runtime the node started on, where every connection's tasks run, whoever dialed
    /// (a caller on the background runtime too, `crate::background`).
    runtime: tokio::runtime::Handle,
}

impl Transport {
    /// Call it on the node's runtime: the connections' tasks run there.
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
            runtime: tokio::runtime::Handle::current(),
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
        self.runtime.spawn(write_loop(w, rx));
        let conn = Arc::new(Conn {
            tx,
            pending: Default::default(),
            closed: AtomicBool::new(false),
        });
        let (reader_conn, lost) = (conn.clone(), self.lost.clone());
        let opened = std::time::Instant::now();
        self.runtime.spawn(async move {
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
