//! The authenticated client connections of this node, by uid, and the outbox of each.
//!
//! Invariants:
//! - A connection is in the registry from its successful CONNACK until it closes (or is
//!   kicked: a kicked connection leaves at once, so nothing is pushed to it afterwards).
//! - Per (uid, device_flag) a master login kicks every other connection with another
//!   device_id (DISCONNECT ConnectKick, then close) and silently closes one with the same
//!   device_id; a slave login closes only a connection with the same device_id (SPEC §2.14).
//! - Pushing never blocks the pusher: an outbox is bounded, and a connection whose outbox is
//!   full is closed instead (one slow client never stalls others).
//!
//! Delivery (`deliver`) pushes a RECV to uid U on this node through `connections_of_all`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wk_proto::{DeviceFlag, ProtoVersion, Session};

/// What the writer task of a connection is asked to do.
#[derive(Debug)]
pub(super) enum Outbound {
    /// Write one encoded frame (shared with the connection's retry entry, if any).
    Frame(Bytes),
    /// Write what came before, then end the connection.
    Close,
}

/// The sending side of one connection's bounded write queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    /// Cancelled when the connection must end now (its queue is full, or its writer failed).
    closed: CancellationToken,
}

impl Outbox {
    pub(super) fn new(capacity: usize) -> (Outbox, mpsc::Receiver<Outbound>, CancellationToken) {
        let (tx, rx) = mpsc::channel(capacity);
        let closed = CancellationToken::new();
        (
            Outbox {
                tx,
                closed: closed.clone(),
            },
            rx,
            closed,
        )
    }

    /// Queue a frame without waiting; a full queue closes the connection (the client does not
    /// read). False if the frame was not queued.
    pub fn try_push(&self, frame: Bytes) -> bool {
        match self.tx.try_send(Outbound::Frame(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!("gateway: closing a connection whose outbox is full");
                self.closed.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queue a frame, waiting for room: for answers to the connection's own requests, so a
    /// client that does not read slows only itself. False if the connection is gone.
    pub(super) async fn push(&self, frame: Bytes) -> bool {
        tokio::select! {
            r = self.tx.send(Outbound::Frame(frame)) => r.is_ok(),
            _ = self.closed.cancelled() => false,
        }
    }

    /// Write what is queued, then end the connection (at once if the queue is full).
    pub fn close(&self) {
        if self.tx.try_send(Outbound::Close).is_err() {
            self.closed.cancel();
        }
    }
}

/// One authenticated connection, as the registry lists it.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Unique on this node for the process's life.
    pub id: u64,
    pub device_flag: DeviceFlag,
    /// The client's device id (the JS SDK makes a new one per connect).
    pub device_id: String,
    /// Device level 1 (set by `/user/token`): decides the kick rule.
    pub master: bool,
    /// The negotiated protocol version every frame to it is encoded for.
    pub version: ProtoVersion,
    /// Its payload cipher.
    pub session: Arc<Session>,
    pub outbox: Outbox,
    /// Its RECVs waiting for a RECVACK.
    pub retries: Arc<super::deliver::Retries>,
}

/// Why an older connection must go when a new one of the same user logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Another device took the master slot: DISCONNECT(ConnectKick), then close.
    Kick,
    /// The same device connected again: close without a word.
    Replace,
}

/// The kick rule (SPEC §2.14): what a new login of (`device_flag`, `device_id`, `master`)
/// does to an existing connection of the same uid.
pub fn eviction(new: (DeviceFlag, &str, bool), old: (DeviceFlag, &str)) -> Option<Eviction> {
    let (flag, device_id, master) = new;
    if flag != old.0 {
        return None;
    }
    if device_id == old.1 {
        Some(Eviction::Replace)
    } else if master {
        Some(Eviction::Kick)
    } else {
        None
    }
}

/// The registry: uid -> that user's connections on this node.
#[derive(Debug, Default)]
pub struct Registry {
    /// std mutex: held for a map lookup or edit, never across `.await`. Shared entries: a
    /// delivery takes a uid's list for the price of reference counts.
    by_uid: Mutex<HashMap<String, Vec<Arc<Conn>>>>,
    next_id: AtomicU64,
}

impl Registry {
    /// A fresh connection id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Add `conn` for `uid`; answers the connections it evicts (already removed), each with why.
    pub fn register(&self, uid: &str, conn: Conn) -> Vec<(Arc<Conn>, Eviction)> {
        let mut map = self.by_uid.lock().expect("registry lock poisoned");
        let list = map.entry(uid.to_string()).or_default();
        let mut evicted = Vec::new();
        list.retain(|old| {
            match eviction(
                (conn.device_flag, &conn.device_id, conn.master),
                (old.device_flag, &old.device_id),
            ) {
                Some(e) => {
                    evicted.push((old.clone(), e));
                    false
                }
                None => true,
            }
        });
        list.push(Arc::new(conn));
        evicted
    }

    /// Remove connection `id` of `uid` (a no-op if it was evicted already).
    pub fn remove(&self, uid: &str, id: u64) {
        let mut map = self.by_uid.lock().expect("registry lock poisoned");
        if let Some(list) = map.get_mut(uid) {
            list.retain(|c| c.id != id);
            if list.is_empty() {
                map.remove(uid);
            }
        }
    }

    /// The connections on this node of each of `uids`, with the uid they belong to (one lock
    /// for all: a delivery lists a channel's recipients on this node).
    pub fn connections_of_all<'a>(&self, uids: &'a [String]) -> Vec<(&'a str, Arc<Conn>)> {
        let map = self.by_uid.lock().expect("registry lock poisoned");
        uids.iter()
            .filter_map(|u| map.get(u.as_str()).map(|list| (u.as_str(), list)))
            .flat_map(|(u, list)| list.iter().map(move |c| (u, c.clone())))
            .collect()
    }

    /// Every authenticated connection on this node.
    pub fn all(&self) -> Vec<Arc<Conn>> {
        let map = self.by_uid.lock().expect("registry lock poisoned");
        map.values().flatten().cloned().collect()
    }

    /// The uids with a connection on this node.
    pub fn uids(&self) -> Vec<String> {
        let map = self.by_uid.lock().expect("registry lock poisoned");
        map.keys().cloned().collect()
    }

    /// The device flags of `uid`'s connections on this node (empty: none).
    pub fn device_flags_of(&self, uid: &str) -> Vec<u8> {
        let map = self.by_uid.lock().expect("registry lock poisoned");
        let mut flags: Vec<u8> = map
            .get(uid)
            .map(|l| l.iter().map(|c| u8::from(c.device_flag)).collect())
            .unwrap_or_default();
        flags.sort_unstable();
        flags.dedup();
        flags
    }

    /// Authenticated connections on this node.
    pub fn len(&self) -> usize {
        let map = self.by_uid.lock().expect("registry lock poisoned");
        map.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_rules() {
        use DeviceFlag::{App, Web};
        // (new flag, new device, new master, old flag, old device) -> eviction
        let cases = [
            ((Web, "d2", true), (Web, "d1"), Some(Eviction::Kick)),
            ((Web, "d1", true), (Web, "d1"), Some(Eviction::Replace)),
            ((Web, "d2", false), (Web, "d1"), None),
            ((Web, "d1", false), (Web, "d1"), Some(Eviction::Replace)),
            ((App, "d2", true), (Web, "d1"), None),
            ((App, "d1", true), (Web, "d1"), None),
        ];
        for (new, old, want) in cases {
            assert_eq!(eviction(new, old), want, "{new:?} over {old:?}");
        }
    }

    fn conn(r: &Registry, flag: DeviceFlag, device: &str, master: bool) -> (Conn, mpsc::Receiver<Outbound>) {
        let (outbox, rx, _) = Outbox::new(4);
        let c = Conn {
            id: r.next_id(),
            device_flag: flag,
            device_id: device.into(),
            master,
            version: ProtoVersion::V2,
            session: Arc::new(Session::new([1; 16], [2; 16])),
            outbox,
            retries: Default::default(),
        };
        (c, rx)
    }

    #[test]
    fn a_master_login_evicts_the_other_device_and_removal_is_idempotent() {
        let r = Registry::default();
        let (a, _ra) = conn(&r, DeviceFlag::Web, "d1", true);
        let (b, _rb) = conn(&r, DeviceFlag::App, "d9", true);
        let (c, _rc) = conn(&r, DeviceFlag::Web, "d2", true);
        assert!(r.register("u", a.clone()).is_empty());
        assert!(r.register("u", b.clone()).is_empty());
        let evicted = r.register("u", c.clone());
        assert_eq!(evicted.len(), 1);
        assert_eq!((evicted[0].0.id, evicted[0].1), (a.id, Eviction::Kick));
        let ids: Vec<u64> = r
            .connections_of_all(&["u".into()])
            .iter()
            .map(|(_, c)| c.id)
            .collect();
        assert_eq!(ids, vec![b.id, c.id]);
        r.remove("u", a.id);
        assert_eq!(r.len(), 2);
        r.remove("u", b.id);
        r.remove("u", c.id);
        assert!(r.is_empty());
        assert!(r.connections_of_all(&["u".into()]).is_empty());
    }

    #[test]
    fn a_full_outbox_closes_instead_of_blocking() {
        let (outbox, _rx, closed) = Outbox::new(1);
        assert!(outbox.try_push(Bytes::from_static(&[1])));
        assert!(!closed.is_cancelled());
        assert!(!outbox.try_push(Bytes::from_static(&[2])));
        assert!(closed.is_cancelled());
    }
}
