//! Fan-out on the channel leader: every message it commits is pushed to every online
//! connection of the channel's subscribers (person channels: both users), wherever they are.
//!
//! Path: `AppRpc::Send` commits → `Node::submit_delivery` queues the new messages per channel →
//! one task per channel with pending messages takes them all, in message_seq order, asks the
//! presence directory (`presence`) where the recipients are, and sends one `AppRpc::Deliver`
//! per node that has any (this node pushes to its own registry directly), all at once; it
//! takes the next batch when every node answered.
//!
//! Invariants:
//! - Per channel one batch is in flight at a time and a batch is sorted by seq, so a
//!   connection receives a channel's messages in message_seq order (a node queues a whole
//!   delivery into its outboxes before it answers). A batch whose first seq is past the next
//!   expected one waits `GAP_WAIT` once for the send that completes the gap.
//! - Duplicates (a retried send answered from the dedup rows) are not pushed again.
//! - Best effort: a node that does not answer within `DELIVER_TTL` misses that batch; its
//!   users recover with `/channel/messagesync`. Nothing here blocks a send's answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Node;
use super::rpc::AppRpc;
use crate::channel::{ChannelKey, NewMessage, Sent, StoredMessage};
use crate::gateway::deliver::{self, ConnRef, Delivery, Pushed};
use crate::raft::GroupId;
use crate::stats::GATEWAY;

/// How long a batch waits for the message before it to be committed here too.
const GAP_WAIT: Duration = Duration::from_millis(20);
/// Deadline of one delivery to a node.
const DELIVER_TTL: Duration = Duration::from_secs(2);
/// Channels whose next seq is remembered; past this, idle ones are forgotten.
const MAX_TRACKED: usize = 10_000;

/// The pending pushes of one channel.
struct Queue {
    key: ChannelKey,
    /// Committed, not yet pushed, with when they were committed.
    pending: Vec<(Pushed, Instant)>,
    /// The seq after the last one pushed.
    next: Option<u64>,
    /// A task is draining this queue.
    running: bool,
}

/// The channel leader's fan-out queues.
#[derive(Default)]
pub struct Fanout {
    /// std mutex: a push or a take, never across `.await`.
    queues: Mutex<HashMap<GroupId, Queue>>,
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
        if !q.running && !q.pending.is_empty() {
            q.running = true;
            tokio::spawn(self.clone().drain_deliveries(g));
        }
    }

    /// Push channel `g`'s pending messages, batch after batch, until none are left.
    async fn drain_deliveries(self, g: GroupId) {
        let mut waited = false;
        loop {
            let batch = {
                let mut queues = self.fanout.queues.lock().expect("fanout lock poisoned");
                let q = queues.get_mut(&g).expect("a running queue stays");
                q.pending.sort_by_key(|(p, _)| p.message.message_seq);
                let first = q.pending.first().map(|(p, _)| p.message.message_seq);
                match first {
                    None => {
                        q.running = false;
                        return;
                    }
                    Some(f) if !waited && q.next.is_some_and(|n| f > n) => None,
                    Some(_) => {
                        let batch = std::mem::take(&mut q.pending);
                        let last = batch.last().map(|(p, _)| p.message.message_seq).unwrap_or(0);
                        q.next = Some(q.next.map_or(last + 1, |n| n.max(last + 1)));
                        Some((q.key.clone(), batch))
                    }
                }
            };
            match batch {
                None => {
                    waited = true;
                    tokio::time::sleep(GAP_WAIT).await;
                }
                Some((key, batch)) => {
                    waited = false;
                    self.deliver_batch(key, batch).await;
                }
            }
        }
    }

    /// Push one batch of a channel to every node with a recipient online.
    async fn deliver_batch(&self, key: ChannelKey, batch: Vec<(Pushed, Instant)>) {
        let Some(uids) = self.recipients(&key).await else {
            return;
        };
        let committed = batch.first().map(|(_, t)| *t).unwrap_or_else(Instant::now);
        let messages: Vec<Pushed> = batch.into_iter().map(|(p, _)| p).collect();
        let by_node = self.locate(uids).await;
        let sends = by_node.into_iter().map(|(n, users)| {
            let d = Delivery {
                channel: key.clone(),
                messages: messages.clone(),
                uids: users.into_iter().map(|(u, _)| u).collect(),
            };
            async move {
                let ok = if n == self.id {
                    deliver::push(&self.registry, self.id, &d);
                    true
                } else {
                    match self
                        .ask(n, AppRpc::Deliver(d), DELIVER_TTL)
                        .await
                        .and_then(|r| r.typed::<()>())
                    {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::debug!(node = n, error = %e, "fanout: a delivery failed");
                            false
                        }
                    }
                };
                if ok {
                    GATEWAY.push_seconds.observe(committed.elapsed().as_secs_f64());
                }
            }
        });
        futures::future::join_all(sends).await;
    }

    /// Who receives a channel's messages: both users of a person channel, else its
    /// subscribers (from the local metadata). None if the channel is unknown here.
    async fn recipients(&self, key: &ChannelKey) -> Option<Vec<String>> {
        if key.channel_type == wk_api::CHANNEL_TYPE_PERSON {
            let mut uids: Vec<String> = key.channel_id.split('@').map(str::to_string).collect();
            uids.dedup();
            return Some(uids);
        }
        match self.resolve_channel(key, false).await {
            Ok(Some(rec)) => Some(rec.subscribers.into_iter().collect()),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(channel = %key, error = %e, "fanout: no subscribers");
                None
            }
        }
    }
}
