//! Fan-out on the channel leader: every message it commits is pushed to every online
//! connection of the channel's subscribers (person channels: both users), wherever they are.
//!
//! Path: `AppRpc::Send` commits → `Node::submit_delivery` queues the new messages per channel →
//! one task per channel with pending messages takes them all, in message_seq order, finds
//! where the recipients are (`presence`: cached, asking their owners only on a miss), pushes
//! to this node's registry directly and queues one `Delivery` per other node that has any,
//! then takes the next batch at once. Per peer node one task sends what is queued for it, all
//! channels together, one `AppRpc::DeliverAll` in flight at a time. The peer queues a
//! request's deliveries behind those it has not pushed yet and answers at once; one task per
//! node pushes what peers sent, in arrival order, so a peer's pushes overlap the next request.
//!
//! Invariants:
//! - Per channel, batches are taken one after the other and sorted by seq, and they enter
//!   each peer's queue in that order; a peer has one request in flight, queues a request's
//!   deliveries for its pusher before it answers, and the pusher takes them in arrival order,
//!   so a connection receives a channel's messages in message_seq order. A batch whose first
//!   seq is past the next expected one waits for the sends that complete the gap (woken by
//!   each message queued, at most `GAP_WAIT` in all); then the missing messages are read back
//!   from the store (this leader applied them before the later ones) and pushed first. A batch is a run of consecutive seqs, so a
//!   message is never pushed after a later one, nor twice.
//! - Duplicates (a retried send answered from the dedup rows) are not pushed again.
//! - Best effort: a request a peer does not answer within `DELIVER_TTL` is lost; past
//!   `PEER_QUEUE_MAX` queued messages (or `PEER_QUEUE_MAX_BYTES` of payload) a peer's oldest
//!   deliveries are dropped, and likewise the oldest of what peers sent that is not pushed
//!   yet; one slow peer delays only its own queue. Users recover with
//!   `/channel/messagesync`. Nothing here blocks a send's answer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Node;
use super::presence::Found;
use super::rpc::AppRpc;
use crate::channel::{ChannelKey, NewMessage, Sent, StoredMessage};
use crate::gateway::deliver::{self, ConnRef, Delivery, Pushed};
use crate::meta::ChannelRecord;
use crate::raft::{GroupId, NodeId};
use crate::stats::GATEWAY;

/// How long a batch waits for the message before it to be committed here too.
const GAP_WAIT: Duration = Duration::from_millis(20);
/// Deadline of one delivery to a node.
const DELIVER_TTL: Duration = Duration::from_secs(2);
/// Channels whose next seq is remembered; past this, idle ones are forgotten.
const MAX_TRACKED: usize = 10_000;
/// Messages queued for one peer at most; past this its oldest deliveries are dropped.
const PEER_QUEUE_MAX: usize = 20_000;
/// Payload bytes queued for one peer at most, likewise.
const PEER_QUEUE_MAX_BYTES: usize = 64 << 20;
/// Deliveries in one request to a peer at most.
const PER_REQUEST: usize = 512;
/// Payload bytes in one request at most (but always one delivery).
const PER_REQUEST_BYTES: usize = 8 << 20;

/// The pending pushes of one channel.
struct Queue {
    key: ChannelKey,
    /// Committed, not yet pushed, with when they were committed.
    pending: Vec<(Pushed, Instant)>,
    /// The seq after the last one pushed.
    next: Option<u64>,
    /// A task is draining this queue.
    running: bool,
    /// Wakes the draining task when a message is queued (it may fill a gap).
    queued: Arc<Notify>,
    /// Where the recipients of the last batch were online, and the channel record they were
    /// read from (None: a person channel): the next batch uses it while it holds.
    found: Option<(Option<Arc<ChannelRecord>>, Arc<Found>)>,
}

/// What a channel's drain does next.
enum Step {
    /// Give the sends that complete a gap until then to queue their messages; the notify
    /// wakes the drain at each message queued.
    Wait(Instant, Arc<Notify>),
    /// Read the gap's messages (first, last seq) back from the store.
    Fill((u64, u64)),
    /// Push this batch.
    Push((ChannelKey, Vec<(Pushed, Instant)>)),
}

/// Deliveries waiting for one task: to be sent to a peer node, or, sent by peers, to be
/// pushed here. Bounded: past [`PEER_QUEUE_MAX`] messages or [`PEER_QUEUE_MAX_BYTES`] of
/// payload the oldest are dropped.
#[derive(Default)]
struct Deliveries {
    /// In order, each with when its first message was committed (to a peer: the push-latency
    /// metric reads it) or when it arrived (from peers: nothing reads it yet).
    queue: VecDeque<(Delivery, Instant)>,
    /// Messages in `queue`.
    messages: usize,
    /// Their payload bytes.
    bytes: usize,
    /// A task is taking from this queue.
    running: bool,
}

impl Deliveries {
    /// Queue `d`, dropping the oldest past the bounds; answers whether the taking task must
    /// be started. `peer`: where the queue sends to (none: deliveries peers sent here).
    fn push(&mut self, d: Delivery, at: Instant, peer: Option<NodeId>) -> bool {
        self.messages += d.messages.len();
        self.bytes += payload_bytes(&d);
        self.queue.push_back((d, at));
        while (self.messages > PEER_QUEUE_MAX || self.bytes > PEER_QUEUE_MAX_BYTES) && self.queue.len() > 1 {
            if let Some((old, _)) = self.queue.pop_front() {
                self.messages -= old.messages.len();
                self.bytes -= payload_bytes(&old);
                tracing::debug!(?peer, channel = %old.channel, "fanout: a delivery queue is full; dropped its oldest");
            }
        }
        !std::mem::replace(&mut self.running, true)
    }

    /// The next deliveries, at most [`PER_REQUEST`] and [`PER_REQUEST_BYTES`] of payload (but
    /// always one); none when the queue is empty, and then the taking task must stop.
    fn take(&mut self) -> Vec<(Delivery, Instant)> {
        let mut taken = Vec::new();
        let mut bytes = 0;
        while let Some((d, _)) = self.queue.front()
            && (taken.is_empty()
                || (taken.len() < PER_REQUEST && bytes + payload_bytes(d) <= PER_REQUEST_BYTES))
        {
            bytes += payload_bytes(d);
            self.messages -= d.messages.len();
            taken.extend(self.queue.pop_front());
        }
        self.bytes -= bytes;
        self.running = !taken.is_empty();
        taken
    }
}

/// The channel leader's fan-out queues, and what peers sent to push here.
#[derive(Default)]
pub struct Fanout {
    /// std mutex: a push or a take, never across `.await`.
    queues: Mutex<HashMap<GroupId, Queue>>,
    /// Per peer node. std mutex, same.
    peers: Mutex<HashMap<NodeId, Deliveries>>,
    /// std mutex, same.
    inbound: Mutex<Deliveries>,
}

impl Node {
    /// Queue the messages this leader just committed for delivery.
    pub(super) fn submit_delivery(
        &self,
        g: GroupId,
        key: &ChannelKey,
        msgs: Vec<NewMessage>,
        sent: &[Sent],
        origin: Option<ConnRef>,
    ) {
        let now = Instant::now();
        let mut queues = self.fanout.queues.lock().expect("fanout lock poisoned");
        if queues.len() >= MAX_TRACKED {
            queues.retain(|_, q| q.running);
        }
        let q = queues.entry(g).or_insert_with(|| Queue {
            key: key.clone(),
            pending: Vec::new(),
            next: None,
            running: false,
            queued: Arc::default(),
            found: None,
        });
        for (m, s) in msgs.into_iter().zip(sent).filter(|(_, s)| !s.duplicate) {
            let message = StoredMessage {
                message_id: m.message_id,
                message_seq: s.message_seq,
                client_msg_no: m.client_msg_no,
                from_uid: m.from_uid,
                header: m.header,
                timestamp: m.timestamp,
                payload: m.payload,
            };
            q.pending.push((Pushed { message, origin }, now));
        }
        q.queued.notify_one();
        if !q.running && !q.pending.is_empty() {
            q.running = true;
            self.spawn_task(self.clone().drain_deliveries(g));
        }
    }

    /// Push channel `g`'s pending messages, batch after batch, until none are left.
    async fn drain_deliveries(self, g: GroupId) {
        // When the gap the pending messages wait behind was first seen.
        let mut gap_since: Option<Instant> = None;
        loop {
            let batch = {
                let mut queues = self.fanout.queues.lock().expect("fanout lock poisoned");
                let q = queues.get_mut(&g).expect("a running queue stays");
                // A message whose seq was pushed already (read back to fill a gap) is not
                // pushed again, nor out of order.
                if let Some(n) = q.next {
                    q.pending.retain(|(p, _)| p.message.message_seq >= n);
                }
                q.pending.sort_by_key(|(p, _)| p.message.message_seq);
                let first = q.pending.first().map(|(p, _)| p.message.message_seq);
                match first {
                    None => {
                        q.running = false;
                        return;
                    }
                    Some(f) if q.next.is_some_and(|n| f > n) => {
                        let gap = (q.next.unwrap_or(f), f - 1);
                        let since = *gap_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= GAP_WAIT {
                            Step::Fill(gap)
                        } else {
                            Step::Wait(since + GAP_WAIT, q.queued.clone())
                        }
                    }
                    Some(_) => Step::Push(self.take_pending(q)),
                }
            };
            match batch {
                Step::Wait(until, queued) => {
                    let _ = tokio::time::timeout_at(until.into(), queued.notified()).await;
                }
                Step::Fill((lo, hi)) => {
                    gap_since = None;
                    self.fill_gap(g, lo, hi).await;
                }
                Step::Push((key, batch)) => {
                    gap_since = None;
                    self.deliver_batch(g, key, batch).await;
                }
            }
        }
    }

    /// The run of consecutive seqs that `q.pending` (sorted) starts with; `next` moves past
    /// it. A later run waits for the gap before it to be filled.
    fn take_pending(&self, q: &mut Queue) -> (ChannelKey, Vec<(Pushed, Instant)>) {
        let seqs: Vec<u64> = q.pending.iter().map(|(p, _)| p.message.message_seq).collect();
        let run = 1 + seqs.windows(2).take_while(|w| w[1] == w[0] + 1).count();
        let rest = q.pending.split_off(run.min(q.pending.len()));
        let batch = std::mem::replace(&mut q.pending, rest);
        let last = batch.last().map(|(p, _)| p.message.message_seq).unwrap_or(0);
        q.next = Some(q.next.map_or(last + 1, |n| n.max(last + 1)));
        (q.key.clone(), batch)
    }

    /// The sends of seqs `lo..=hi` did not queue them in time (their requests are slow, or
    /// were dropped, or another leader committed them): read them back from this replica,
    /// which applied them before the later seqs it holds, and queue them in their place, so
    /// the channel's order holds. Without the sending connection, which then gets its own
    /// message too. If they cannot be read, the gap is given up: users recover them with
    /// `/channel/messagesync`.
    async fn fill_gap(&self, g: GroupId, lo: u64, hi: u64) {
        let read = self
            .store
            .read(move |r| {
                let st = crate::raft::state_machine::load_state(r, g)?.channel;
                crate::channel::read_messages(r, g, &st, lo, hi)
            })
            .await;
        let now = Instant::now();
        let mut queues = self.fanout.queues.lock().expect("fanout lock poisoned");
        let q = queues.get_mut(&g).expect("a running queue stays");
        match read {
            Ok(messages) => {
                let queued: std::collections::HashSet<u64> =
                    q.pending.iter().map(|(p, _)| p.message.message_seq).collect();
                q.pending.extend(
                    messages
                        .into_iter()
                        .filter(|m| !queued.contains(&m.message_seq))
                        .map(|message| {
                            (
                                Pushed {
                                    message,
                                    origin: None,
                                },
                                now,
                            )
                        }),
                );
            }
            Err(e) => tracing::debug!(group = g, error = %e, "fanout: cannot read a gap back"),
        }
        // Whatever was not found is given up: the batch goes out from its own first seq.
        if let Some(f) = q.pending.iter().map(|(p, _)| p.message.message_seq).min()
            && q.next.is_some_and(|n| n < f)
        {
            q.next = Some(f);
        }
    }

    /// Push one batch of a channel here and queue it for every other node with a recipient
    /// online; returns without waiting for them.
    async fn deliver_batch(&self, g: GroupId, key: ChannelKey, batch: Vec<(Pushed, Instant)>) {
        let Some(found) = self.recipients_found(g, &key).await else {
            return;
        };
        let committed = batch.first().map(|(_, t)| *t).unwrap_or_else(Instant::now);
        let messages: Vec<Pushed> = batch.into_iter().map(|(p, _)| p).collect();
        for (&n, uids) in &found.by_node {
            let d = Delivery {
                channel: key.clone(),
                messages: messages.clone(),
                uids: uids.clone(),
            };
            if n == self.id {
                deliver::push(&self.registry, self.id, &d);
                GATEWAY.push_seconds.observe(committed.elapsed().as_secs_f64());
            } else {
                self.queue_for_peer(n, d, committed);
            }
        }
    }

    /// Queue `d` for peer `n`, starting its sending task if none runs.
    fn queue_for_peer(&self, n: NodeId, d: Delivery, committed: Instant) {
        let start = {
            let mut peers = self.fanout.peers.lock().expect("fanout lock poisoned");
            peers.entry(n).or_default().push(d, committed, Some(n))
        };
        if start {
            self.spawn_task(self.clone().send_to_peer(n));
        }
    }

    /// Send peer `n` what is queued for it, one request at a time, until nothing is left.
    async fn send_to_peer(self, n: NodeId) {
        loop {
            let taken = {
                let mut peers = self.fanout.peers.lock().expect("fanout lock poisoned");
                peers.get_mut(&n).expect("a running peer queue stays").take()
            };
            if taken.is_empty() {
                return;
            }
            let (ds, times): (Vec<Delivery>, Vec<Instant>) = taken.into_iter().unzip();
            match self
                .ask(n, AppRpc::DeliverAll(ds), DELIVER_TTL)
                .await
                .and_then(|r| r.typed::<()>())
            {
                Ok(()) => {
                    for t in times {
                        GATEWAY.push_seconds.observe(t.elapsed().as_secs_f64());
                    }
                }
                Err(e) => tracing::debug!(node = n, error = %e, "fanout: a delivery failed"),
            }
        }
    }

    /// [`AppRpc::DeliverAll`] from a peer leader: queue its deliveries behind those not pushed
    /// yet, starting the pusher if none runs. The peer sends its next request after this
    /// returns, so its deliveries are pushed in the order it sent them.
    pub(super) fn accept_deliveries(&self, ds: Vec<Delivery>) {
        let now = Instant::now();
        let start = {
            let mut inbound = self.fanout.inbound.lock().expect("fanout lock poisoned");
            let mut start = false;
            for d in ds {
                start |= inbound.push(d, now, None);
            }
            start
        };
        if start {
            self.spawn_task(self.clone().push_inbound());
        }
    }

    /// Push what peers sent, in arrival order, until nothing is left; a request's worth at a
    /// time, yielding the worker between them.
    async fn push_inbound(self) {
        loop {
            let taken = self.fanout.inbound.lock().expect("fanout lock poisoned").take();
            if taken.is_empty() {
                return;
            }
            for (d, _) in &taken {
                deliver::push(&self.registry, self.id, d);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Where channel `g`'s recipients are online: both users of a person channel, else its
    /// subscribers (from the local metadata). The answer of the channel's previous batch is
    /// used while its recipients are the same and it holds (`Found::holds`), so a message to
    /// a large group costs no lookup per member. None if the channel is unknown here.
    async fn recipients_found(&self, g: GroupId, key: &ChannelKey) -> Option<Arc<Found>> {
        let rec = if key.channel_type == wk_api::CHANNEL_TYPE_PERSON {
            None
        } else {
            match self.resolve_channel(key, false).await {
                Ok(Some(rec)) => Some(rec),
                Ok(None) => return None,
                Err(e) => {
                    tracing::debug!(channel = %key, error = %e, "fanout: no subscribers");
                    return None;
                }
            }
        };
        let kept = {
            let queues = self.fanout.queues.lock().expect("fanout lock poisoned");
            queues.get(&g).and_then(|q| q.found.clone())
        };
        if let Some((was, found)) = kept
            && same_recipients(was.as_deref(), rec.as_deref())
            && found.holds(self)
        {
            // A newer read of the same record: compared by pointer next time.
            if let (Some(was), Some(rec)) = (&was, &rec)
                && !Arc::ptr_eq(was, rec)
                && let Some(q) = self
                    .fanout
                    .queues
                    .lock()
                    .expect("fanout lock poisoned")
                    .get_mut(&g)
            {
                q.found = Some((Some(rec.clone()), found.clone()));
            }
            return Some(found);
        }
        let found = Arc::new(match &rec {
            Some(rec) => self.locate_cached(rec.subscribers.iter().cloned()).await,
            None => {
                let mut uids: Vec<String> = key.channel_id.split('@').map(str::to_string).collect();
                uids.dedup();
                self.locate_cached(uids).await
            }
        });
        if let Some(q) = self
            .fanout
            .queues
            .lock()
            .expect("fanout lock poisoned")
            .get_mut(&g)
        {
            q.found = Some((rec, found.clone()));
        }
        Some(found)
    }
}

/// Whether two reads of a channel's record name the same recipients (None: a person channel).
fn same_recipients(a: Option<&ChannelRecord>, b: Option<&ChannelRecord>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => std::ptr::eq(a, b) || a.subscribers == b.subscribers,
        _ => false,
    }
}

/// The payload bytes of a delivery's messages.
fn payload_bytes(d: &Delivery) -> usize {
    d.messages.iter().map(|p| p.message.payload.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Header;

    fn delivery(seq: u64) -> Delivery {
        Delivery {
            channel: ChannelKey {
                channel_id: "g".into(),
                channel_type: 2,
            },
            messages: vec![Pushed {
                message: StoredMessage {
                    message_id: seq,
                    message_seq: seq,
                    client_msg_no: seq.to_string(),
                    from_uid: "u".into(),
                    header: Header::default(),
                    timestamp: 0,
                    payload: vec![0; 10],
                },
                origin: None,
            }],
            uids: vec!["v".into()],
        }
    }

    /// A delivery queue keeps its order, drops its oldest past the bound, hands out a
    /// request's worth at a time and says when its task starts and stops.
    #[test]
    fn a_delivery_queue_is_bounded_ordered_and_taken_in_requests() {
        let mut q = Deliveries::default();
        let now = Instant::now();
        assert!(q.push(delivery(0), now, None), "the first push starts the task");
        for seq in 1..=PEER_QUEUE_MAX as u64 {
            assert!(!q.push(delivery(seq), now, None));
        }
        assert_eq!(q.messages, PEER_QUEUE_MAX);
        let seqs = |taken: &[(Delivery, Instant)]| -> Vec<u64> {
            taken
                .iter()
                .map(|(d, _)| d.messages[0].message.message_seq)
                .collect()
        };
        let first = q.take();
        assert_eq!(seqs(&first), (1..=PER_REQUEST as u64).collect::<Vec<_>>());
        let mut left = 0;
        loop {
            let taken = q.take();
            if taken.is_empty() {
                break;
            }
            left += taken.len();
        }
        assert_eq!(left, PEER_QUEUE_MAX - PER_REQUEST);
        assert_eq!((q.messages, q.bytes), (0, 0));
        assert!(
            q.push(delivery(99), now, None),
            "an emptied queue starts its task again"
        );
    }
}
