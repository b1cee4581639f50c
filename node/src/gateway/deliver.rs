//! RECV: a stored message pushed to this node's connections of its recipients, and the
//! per-connection retry entries that RECVACK clears.
//!
//! Invariants:
//! - A connection gets the messages of one `Delivery` in the order they are listed (the
//!   channel leader lists them in message_seq order and sends one delivery at a time per
//!   channel, `cluster::fanout`), because pushing to an outbox is a synchronous FIFO append.
//! - The connection that sent a message never gets it back; the sender's other connections do
//!   (RedDot cleared for them).
//! - Each RECV is sealed with the receiving connection's own session (payload and msg_key)
//!   and encoded for its protocol version. Person channels show the other party's uid.
//! - Pushing never waits: a connection whose outbox is full is closed (`Outbox::try_push`).
//! - A connection keeps at most `MAX_UNACKED` retry entries of at most `MAX_UNACKED_BYTES`
//!   together (the oldest go first); each is
//!   pushed again every `RETRY_AFTER`, at most `MAX_RETRIES` times, until its RECVACK.
//!   NoPersist messages get none.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wk_proto::packet::RecvPacket;
use wk_proto::{ChannelType, Flags, Packet, Setting, encode_frame};

use super::registry::{Conn, Registry};
use crate::channel::{self, ChannelKey, StoredMessage};
use crate::raft::NodeId;
use crate::stats::GATEWAY;

/// Un-acked RECVs kept per connection.
pub const MAX_UNACKED: usize = 256;
/// Bytes of un-acked RECV frames kept per connection (a payload may be up to 1 MiB).
pub const MAX_UNACKED_BYTES: usize = 4 << 20;
/// How long a RECV waits for its RECVACK before it is pushed again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Pushes of one RECV after the first.
pub const MAX_RETRIES: u8 = 3;

/// One connection in the cluster: the node it is on and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRef {
    pub node: NodeId,
    pub conn: u64,
}

/// A committed message to push, and the connection that sent it (none over HTTP).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pushed {
    pub message: StoredMessage,
    pub origin: Option<ConnRef>,
}

/// What a channel leader hands a node: messages of one channel, in seq order, for the
/// recipients connected there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub channel: ChannelKey,
    pub messages: Vec<Pushed>,
    pub uids: Vec<String>,
}

/// Push `d` to this node's (`me`) connections of its recipients; answers the RECVs queued.
pub fn push(registry: &Registry, me: NodeId, d: &Delivery) -> usize {
    let mut queued = 0;
    for (uid, conn) in registry.connections_of_all(&d.uids) {
        for p in &d.messages {
            if p.origin
                == Some(ConnRef {
                    node: me,
                    conn: conn.id,
                })
            {
                continue;
            }
            let Some(frame) = recv_frame(&conn, uid, &d.channel, &p.message) else {
                continue;
            };
            if p.message.header.no_persist == 0 {
                conn.retries.track(p.message.message_id, frame.clone());
            }
            if !conn.outbox.try_push(frame) {
                break; // closed or closing: nothing more for it
            }
            queued += 1;
        }
    }
    GATEWAY.recvs.fetch_add(queued as u64, Ordering::Relaxed);
    queued
}

/// The RECV of `m` for `conn` of `uid`, sealed and encoded; None if it does not encode (a
/// bug, logged).
fn recv_frame(conn: &Conn, uid: &str, key: &ChannelKey, m: &StoredMessage) -> Option<Bytes> {
    let own = m.from_uid == uid;
    let channel_id = if key.channel_type == wk_api::CHANNEL_TYPE_PERSON {
        if own {
            channel::person_display_id(&key.channel_id, &m.from_uid)
        } else {
            m.from_uid.clone()
        }
    } else {
        key.channel_id.clone()
    };
    let flags = Flags::default()
        .with_red_dot(m.header.red_dot != 0 && !own)
        .with_sync_once(m.header.sync_once != 0)
        .with_no_persist(m.header.no_persist != 0);
    let mut recv = RecvPacket {
        flags,
        setting: Setting::default(),
        msg_key: String::new(),
        from_uid: if m.from_uid == channel::SYSTEM_UID {
            String::new()
        } else {
            m.from_uid.clone()
        },
        channel_id,
        channel_type: ChannelType::from(key.channel_type),
        expire: 0,
        client_msg_no: m.client_msg_no.clone(),
        // Ids below 2^63 and seqs below 2^32 for any real channel; never wrap to negative.
        message_id: i64::try_from(m.message_id).unwrap_or(i64::MAX),
        message_seq: u32::try_from(m.message_seq).unwrap_or(u32::MAX),
        timestamp: i32::try_from(m.timestamp).unwrap_or(i32::MAX),
        topic: None,
        payload: Vec::new(),
    };
    conn.session.seal_recv(&mut recv, &m.payload);
    match encode_frame(&Packet::Recv(recv), conn.version) {
        Ok(f) => Some(Bytes::from(f)),
        Err(e) => {
            tracing::error!(error = %e, "gateway: cannot encode a RECV");
            None
        }
    }
}

/// One un-acked RECV.
#[derive(Debug)]
struct Unacked {
    message_id: u64,
    /// The RECV as first pushed: the same bytes the outbox held.
    frame: Bytes,
    due: Instant,
    retries: u8,
}

/// The entries and the bytes of their frames.
#[derive(Debug, Default)]
struct Entries {
    queue: VecDeque<Unacked>,
    bytes: usize,
}

/// A connection's un-acked RECVs, oldest first.
#[derive(Debug, Default)]
pub struct Retries {
    /// std mutex: a push, a remove or a scan, never across `.await`.
    entries: Mutex<Entries>,
}

impl Retries {
    fn track(&self, message_id: u64, frame: Bytes) {
        let mut guard = self.entries.lock().expect("retries lock poisoned");
        let e = &mut *guard;
        e.bytes += frame.len();
        while e.queue.len() >= MAX_UNACKED || (e.bytes > MAX_UNACKED_BYTES && !e.queue.is_empty()) {
            if let Some(old) = e.queue.pop_front() {
                e.bytes -= old.frame.len();
            }
            GATEWAY.retries_dropped.fetch_add(1, Ordering::Relaxed);
        }
        e.queue.push_back(Unacked {
            message_id,
            frame,
            due: Instant::now() + RETRY_AFTER,
            retries: 0,
        });
    }

    /// RECVACK of `message_id`.
    pub fn ack(&self, message_id: i64) {
        let Ok(id) = u64::try_from(message_id) else { return };
        let mut guard = self.entries.lock().expect("retries lock poisoned");
        let e = &mut *guard;
        if let Some(i) = e.queue.iter().position(|u| u.message_id == id)
            && let Some(u) = e.queue.remove(i)
        {
            e.bytes -= u.frame.len();
        }
    }

    /// The frames due again at `now` (their entries rescheduled, or dropped after the last).
    fn due(&self, now: Instant) -> Vec<Bytes> {
        let mut guard = self.entries.lock().expect("retries lock poisoned");
        let e = &mut *guard;
        let mut frames = Vec::new();
        let mut freed = 0;
        e.queue.retain_mut(|u| {
            if u.due > now {
                return true;
            }
            frames.push(u.frame.clone());
            u.retries += 1;
            u.due = now + RETRY_AFTER;
            let keep = u.retries < MAX_RETRIES;
            if !keep {
                freed += u.frame.len();
            }
            keep
        });
        e.bytes -= freed;
        frames
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("retries lock poisoned").queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Push every due retry of every connection on this node once.
pub fn retry_due(registry: &Registry) {
    let now = Instant::now();
    for conn in registry.all() {
        for frame in conn.retries.due(now) {
            GATEWAY.retries.fetch_add(1, Ordering::Relaxed);
            if !conn.outbox.try_push(frame) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_acked_and_given_up() {
        let r = Retries::default();
        for id in 0..(MAX_UNACKED as u64 + 3) {
            r.track(id, Bytes::from(vec![id as u8]));
        }
        assert_eq!(r.len(), MAX_UNACKED);
        r.ack(3); // the oldest three went when it was full: 3 is the oldest now
        r.ack(-1);
        assert_eq!(r.len(), MAX_UNACKED - 1);
        let mut later = Instant::now();
        assert!(r.due(later).is_empty());
        for _ in 0..MAX_RETRIES {
            later += RETRY_AFTER;
            assert_eq!(r.due(later).len(), MAX_UNACKED - 1);
        }
        assert!(r.is_empty());
        // Big frames: the byte bound holds before the count does.
        for id in 0..8 {
            r.track(id, Bytes::from(vec![0; MAX_UNACKED_BYTES / 4]));
        }
        assert_eq!(r.len(), 4);
        r.ack(7);
        assert_eq!(r.len(), 3);
    }
}
