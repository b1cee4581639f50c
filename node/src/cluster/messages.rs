//! A channel's messages on their way in and out, one step per item; the rest of the path is
//! named where it lives.
//!
//! Sending (`/message/send`, `/message/sendbatch`, the gateway's SEND):
//! 1. `api::send_message` (or `send_batch`): input checks (`api::validate`), the person
//!    channel's `a@b` key, then who may send (`meta::permit`, from this node's metadata).
//! 2. [`Node::new_message`]: the message id (`ids`, unique across restarts) and timestamp,
//!    fixed before the first attempt so that retries reuse them.
//! 3. [`Node::send`]: routing (`route`) to the channel's leader, waking or starting its group
//!    on the way, as the local call or an `AppRpc::Send` to the node that leads it.
//! 4. [`Node::append`] on the leader: the group's Raft write (`raft`: the entry is appended to
//!    every replica's log, `log_store`, and committed once a quorum has flushed it; the log is
//!    the message store), applied by `channel::apply` (seq, dedup, spans), answered with the
//!    seqs; then the committed messages are queued for live delivery (`fanout`, `presence`,
//!    `gateway::deliver`).
//!
//! Reading (`/channel/messagesync`): [`Node::sync`] routes like a send; [`Node::read_range`]
//! on the leader confirms its leadership (ReadIndex) and reads the range from the log through
//! the group's spans (`channel::read_messages`).
//!
//! Invariants: a send is answered only after its entry is committed and applied; a read on
//! the leader never sees less than what was acknowledged; a replica that finds a row failing
//! its seal stops serving the group (`integrity`), and routing tries another.

use std::sync::Arc;
use std::time::Instant;

use openraft::ReadPolicy;

use super::Node;
use super::route::REQUEST_TIMEOUT;
use super::route::now_ms;
use super::rpc::{AppRpc, SyncQuery, SyncResult, read_err, write_err};
use crate::channel::{self, ChannelCmd, NewMessage, Sent};
use crate::error::{NodeError, Result};
use crate::gateway::deliver::ConnRef;
use crate::meta::{self, ChannelRecord};
use crate::raft::{Raft, Request, Response};

impl Node {
    /// Fix ids and timestamps for new messages (before any attempt, so retries reuse them).
    pub fn new_message(&self, mut m: NewMessage) -> Result<NewMessage> {
        m.message_id = self.ids.next().map_err(|_| NodeError::Overloaded {
            what: "new messages (message ids wait for their durable reservation)".into(),
            retry_after: 1,
        })?;
        m.timestamp = now_ms() / 1000;
        if m.client_msg_no.is_empty() {
            // WuKongIM generates a uuid-like key with a trailing "0"; ours is unique per id.
            m.client_msg_no = format!("{:016x}{:016x}0", m.message_id, now_ms());
        }
        Ok(m)
    }

    /// Append messages to a channel through its leader; answers once they are committed (the
    /// leader then pushes them to every connection of the subscribers but `origin`).
    pub async fn send(
        &self,
        rec: &Arc<ChannelRecord>,
        msgs: Vec<NewMessage>,
        origin: Option<ConnRef>,
    ) -> Result<Vec<Sent>> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        self.route(
            rec.group_id,
            &rec.replicas,
            AppRpc::Send(rec.clone(), msgs, origin),
            deadline,
        )
        .await?
        .typed()
    }

    pub async fn sync(&self, rec: &Arc<ChannelRecord>, q: SyncQuery) -> Result<SyncResult> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        self.route(
            rec.group_id,
            &rec.replicas,
            AppRpc::Sync(rec.clone(), q),
            deadline,
        )
        .await?
        .typed()
    }

    /// Step 4, on the leader: append `msgs` to the channel and queue them for delivery.
    pub(super) async fn append(
        &self,
        rec: &ChannelRecord,
        msgs: Vec<NewMessage>,
        origin: Option<ConnRef>,
    ) -> Result<Vec<Sent>> {
        let raft = self.serving_replica(rec).await?;
        // Kept for the push after the commit (the log entry takes the originals).
        let pushed = msgs.clone();
        match raft.client_write(Request::Channel(ChannelCmd::Send(msgs))).await {
            Ok(r) => match r.data {
                Response::Channel(channel::ChannelResp::Sent(sent)) => {
                    self.submit_delivery(rec.group_id, &rec.key, pushed, &sent, origin);
                    Ok(sent)
                }
                other => Err(NodeError::Internal(format!("channel answered {other:?}"))),
            },
            Err(e) => Err(write_err(&raft, e).await),
        }
    }

    /// On the leader: a `messagesync` range, read after confirming the leadership.
    pub(super) async fn read_range(&self, rec: &ChannelRecord, q: SyncQuery) -> Result<SyncResult> {
        let raft = self.serving_replica(rec).await?;
        if let Err(e) = raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            return Err(read_err(&raft, e).await);
        }
        let g = rec.group_id;
        let read = self
            .store
            .read(move |r| {
                let st = crate::raft::state_machine::load_state(r, g)?.channel;
                let last_seq = st.last_seq;
                let Some((lo, hi, more)) = channel::sync_range(last_seq, q.start, q.end, q.limit, q.pull_up)
                else {
                    return Ok(SyncResult {
                        last_seq,
                        messages: Vec::new(),
                        more: false,
                    });
                };
                Ok(SyncResult {
                    last_seq,
                    messages: channel::read_messages(r, g, &st, lo, hi)?,
                    more,
                })
            })
            .await;
        // A row that fails its seal: never served; this replica stops serving the group and
        // routing tries another.
        Ok(crate::integrity::check(g, read)?)
    }

    /// This node's replica of the channel, to serve a send or read with. A leader whose
    /// channel is in the sync backlog migrates it first; the migration may move this replica
    /// away, and then the caller is told to route again.
    pub(super) async fn serving_replica(&self, rec: &ChannelRecord) -> Result<Raft> {
        let raft = self.replica_group(rec).await?;
        if !(raft.is_leader() && self.migrate_if_backlogged(rec).await) {
            return Ok(raft);
        }
        let key = rec.key.clone();
        match self.store.read(move |r| meta::get_channel(r, &key)).await? {
            Some(now) if now.replicas.contains(&self.id) => self.replica_group(&now).await,
            _ => Err(NodeError::NotLeader { leader_hint: None }),
        }
    }
}
