//! One client connection: its read loop (CONNECT first, then packets until it ends) and its
//! writer task, which alone writes to the socket, draining the connection's bounded outbox.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use wk_proto::packet::{DisconnectPacket, SendPacket};
use wk_proto::{Decoder, Packet, ProtoError, ProtoVersion, ReasonCode, encode_frame};

use super::registry::{Conn, Eviction, Outbound, Outbox};
use super::transport::{Reader, Transport, Writer};
use super::{CONNECT_TIMEOUT, IDLE_TIMEOUT, MAX_SENDS_IN_FLIGHT, OUTBOX_CAPACITY, Shared, connect, send};
use crate::stats::GATEWAY;

/// How long a closing connection may take to flush what is queued for it.
const LINGER: Duration = Duration::from_secs(2);
/// Most queued frames written in one go.
const WRITE_BATCH: usize = 64;

/// Why a connection ended; logged once per connection.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("client closed the connection")]
    Eof,
    #[error("no CONNECT within {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    #[error("refused at CONNECT: {0:?}")]
    Refused(ReasonCode),
    #[error("idle for {IDLE_TIMEOUT:?}")]
    Idle,
    #[error("malformed input: {0}")]
    Malformed(#[from] ProtoError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("client sent DISCONNECT")]
    ClientDisconnect,
    #[error("closed by the server (kicked by a newer login, outbox full, or write failed)")]
    Closed,
    #[error("node shutting down")]
    Shutdown,
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Counts the connection in the open-connections gauge while it lives.
struct Open;

impl Open {
    fn new() -> Open {
        GATEWAY.connections.fetch_add(1, Ordering::Relaxed);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        GATEWAY.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps an authenticated connection in the registry (and its uid in the presence directory)
/// while it lives.
struct Registered {
    node: crate::cluster::Node,
    uid: Arc<str>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.node.registry.remove(&self.uid, self.id);
        self.node.presence.changed(&self.uid);
    }
}

/// Serve one accepted connection until it ends.
pub(super) async fn serve(shared: Arc<Shared>, transport: Transport, peer: SocketAddr) {
    let _open = Open::new();
    let kind = transport.kind();
    let (mut reader, writer) = transport.split();
    let (outbox, rx, closed) = Outbox::new(OUTBOX_CAPACITY);
    let writer = shared.tasks.spawn(write_loop(writer, rx, closed.clone()));
    let mut uid = None;
    let end = run(&shared, &mut reader, &outbox, &closed, &mut uid).await;
    match &end {
        End::Malformed(_) | End::Protocol(_) => {
            tracing::info!(%peer, transport = kind, uid = uid.as_deref(), reason = %end, "gateway: connection closed")
        }
        _ => {
            tracing::debug!(%peer, transport = kind, uid = uid.as_deref(), reason = %end, "gateway: connection closed")
        }
    }
    outbox.close();
    if timeout(LINGER, writer).await.is_err() {
        closed.cancel();
    }
}

/// The read loop: CONNECT, then packets. Returns why the connection ends.
async fn run(
    shared: &Arc<Shared>,
    reader: &mut Reader,
    outbox: &Outbox,
    closed: &CancellationToken,
    uid_out: &mut Option<Arc<str>>,
) -> End {
    let mut decoder = Decoder::new();
    let first = tokio::select! {
        r = timeout(CONNECT_TIMEOUT, first_packet(reader, &mut decoder)) => match r {
            Err(_) => return End::ConnectTimeout,
            Ok(Err(end)) => return end,
            Ok(Ok(p)) => p,
        },
        _ = shared.shutdown.cancelled() => return End::Shutdown,
    };
    let Packet::Connect(c) = first else {
        return End::Protocol(format!("first packet is {:?}, not CONNECT", first.packet_type()));
    };
    let v = ProtoVersion::negotiate(c.version);
    let uid: Arc<str> = Arc::from(c.uid.as_str());
    *uid_out = Some(uid.clone());
    let accepted = match connect::authenticate(&shared.node, &c, v).await {
        Ok(a) => a,
        Err(reason) => {
            let refusal = connect::refusal(shared.node.id, &c, v, reason);
            if let Some(f) = encode(&Packet::Connack(refusal), v) {
                outbox.push(f).await;
            }
            return End::Refused(reason);
        }
    };
    let session = Arc::new(accepted.session);
    let Some(connack) = encode(&Packet::Connack(accepted.connack), v) else {
        return End::Protocol("CONNACK does not encode".into());
    };
    if !outbox.push(connack).await {
        return End::Closed;
    }
    let id = shared.registry.next_id();
    let retries = Arc::new(super::deliver::Retries::default());
    let conn = Conn {
        id,
        device_flag: c.device_flag,
        device_id: c.device_id.clone(),
        master: accepted.master,
        version: v,
        session: session.clone(),
        outbox: outbox.clone(),
        retries: retries.clone(),
    };
    let evicted = shared.registry.register(&uid, conn);
    shared.node.presence.changed(&uid);
    for (old, why) in evicted {
        tracing::info!(
            uid = &*uid,
            kicked = old.id,
            by = id,
            ?why,
            "gateway: newer login replaces a connection"
        );
        if why == Eviction::Kick {
            let kick = Packet::Disconnect(DisconnectPacket {
                reason_code: ReasonCode::ConnectKick,
                reason: "login in other device".into(),
            });
            if let Some(f) = encode(&kick, old.version) {
                old.outbox.try_push(f);
            }
        }
        old.outbox.close();
    }
    let _registered = Registered {
        node: shared.node.clone(),
        uid: uid.clone(),
        id,
    };

    let in_flight = Arc::new(Semaphore::new(MAX_SENDS_IN_FLIGHT));
    // Made once, not per read: each would register with a token or the timer wheel anew.
    let ended = async {
        tokio::select! {
            _ = closed.cancelled() => End::Closed,
            _ = shared.shutdown.cancelled() => End::Shutdown,
        }
    };
    tokio::pin!(ended);
    let mut last_read = Instant::now();
    let idle = tokio::time::sleep_until(last_read + IDLE_TIMEOUT);
    tokio::pin!(idle);
    loop {
        // Packets already buffered first: a client may pipeline packets behind its CONNECT.
        loop {
            let packet = match decoder.next_packet(v) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return End::Malformed(e),
            };
            GATEWAY.packets_in.fetch_add(1, Ordering::Relaxed);
            match packet {
                Packet::Ping => {
                    if let Some(f) = encode(&Packet::Pong, v)
                        && !outbox.try_push(f)
                    {
                        return End::Closed;
                    }
                }
                Packet::Send(s) => {
                    let permit = tokio::select! {
                        p = in_flight.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                        _ = closed.cancelled() => return End::Closed,
                    };
                    let work = answer_send(
                        shared.clone(),
                        uid.clone(),
                        id,
                        session.clone(),
                        v,
                        outbox.clone(),
                        s,
                    );
                    let shutdown = shared.shutdown.clone();
                    shared.tasks.spawn(async move {
                        tokio::select! {
                            _ = work => {}
                            _ = shutdown.cancelled() => {}
                        }
                        drop(permit);
                    });
                }
                Packet::Recvack(a) => retries.ack(a.message_id),
                // Ignored, as WuKongIM v2 does.
                Packet::Sub(_) => {}
                Packet::Disconnect(_) => return End::ClientDisconnect,
                Packet::Connect(_) => return End::Protocol("a second CONNECT".into()),
                other => {
                    return End::Protocol(format!("{:?} is not a client packet", other.packet_type()));
                }
            }
        }
        tokio::select! {
            r = reader.read() => match r {
                Ok(Some(b)) => {
                    decoder.extend(b);
                    last_read = Instant::now();
                }
                Ok(None) => return End::Eof,
                Err(e) => return End::Io(e),
            },
            // The timer is moved only when it fires: reads in between just note their time.
            () = &mut idle => {
                if last_read.elapsed() >= IDLE_TIMEOUT {
                    return End::Idle;
                }
                idle.as_mut().reset(last_read + IDLE_TIMEOUT);
            }
            end = &mut ended => return end,
        }
    }
}

/// Store one SEND and queue its SENDACK.
async fn answer_send(
    shared: Arc<Shared>,
    uid: Arc<str>,
    conn: u64,
    session: Arc<wk_proto::Session>,
    v: ProtoVersion,
    outbox: Outbox,
    s: SendPacket,
) {
    let ack = send::handle(&shared.node, &uid, conn, &session, s).await;
    if let Some(f) = encode(&Packet::Sendack(ack), v) {
        outbox.push(f).await;
    }
}

/// Read until the first whole packet.
async fn first_packet(reader: &mut Reader, decoder: &mut Decoder) -> Result<Packet, End> {
    loop {
        // Any version decodes CONNECT; a later packet is decoded again at the negotiated one.
        if let Some(p) = decoder.next_packet(ProtoVersion::V2)? {
            GATEWAY.packets_in.fetch_add(1, Ordering::Relaxed);
            return Ok(p);
        }
        match reader.read().await? {
            Some(bytes) => decoder.extend(bytes),
            None => return Err(End::Eof),
        }
    }
}

/// A frame of `p` for a connection of version `v`. Our packets always encode; a failure is a
/// bug, logged, and the packet is not sent.
fn encode(p: &Packet, v: ProtoVersion) -> Option<Bytes> {
    match encode_frame(p, v) {
        Ok(f) => Some(Bytes::from(f)),
        Err(e) => {
            tracing::error!(packet = ?p.packet_type(), error = %e, "gateway: cannot encode a packet");
            None
        }
    }
}

/// The writer task: writes queued frames in order until `Close`, a write error or `closed`,
/// then ends the connection from our side and cancels `closed` (which stops the read loop).
async fn write_loop(mut w: Writer, mut rx: mpsc::Receiver<Outbound>, closed: CancellationToken) {
    let cancelled = closed.cancelled();
    tokio::pin!(cancelled);
    loop {
        let next = tokio::select! {
            o = rx.recv() => o,
            () = &mut cancelled => None,
        };
        let Some(Outbound::Frame(first)) = next else { break };
        let mut frames = vec![first];
        let mut close = false;
        while frames.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(Outbound::Frame(f)) => frames.push(f),
                Ok(Outbound::Close) => {
                    close = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let n = frames.len() as u64;
        let written = tokio::select! {
            r = w.write(frames) => r.is_ok(),
            () = &mut cancelled => false,
        };
        if !written {
            break;
        }
        GATEWAY.packets_out.fetch_add(n, Ordering::Relaxed);
        if close {
            break;
        }
    }
    let _ = timeout(LINGER, w.close()).await;
    closed.cancel();
}
