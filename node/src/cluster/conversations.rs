//! A user's conversations, gathered on any node (`/conversation/sync`), and their changes
//! (`/conversations/setUnread|clearUnread|delete`). The rules live in `channel::conversation`;
//! this is where they are read and written across the cluster.
//!
//! Sync, on the node that took the request:
//! 1. the user's channels from this node's copy of the metadata (the `members` index, then
//!    each channel's record): no network;
//! 2. at once: this node reads its own copy of the channels it replicates
//!    (`Node::conversation_rows`), and asks every other node that replicates any of them how
//!    far it applied each (`AppRpc::GroupSizes`: a few bytes per channel);
//! 3. per channel the most advanced replica wins (the highest applied log index: applied
//!    entries are committed, so a higher index holds everything a lower one does); the
//!    channels whose winner is another node are read there (`AppRpc::Conversations`, one
//!    request per node): in the steady state none, so a sync moves no rows between nodes;
//! 4. replicas read their copy from disk, running group or not: a sync never wakes a
//!    hibernated channel.
//!
//! Invariants: every answer is a replica's applied state, so a sync never shows what was not
//! committed; with every replica asked, a conversation is missing or stale only while all of
//! the replicas that applied its newest entry are unreachable. Writes go through the channel's
//! leader like a send and are answered after their commit, so a read position or unread count
//! a client was told survives any minority loss.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Node;
use super::route::REQUEST_TIMEOUT;
use super::rpc::{AppRpc, write_err};
use crate::channel::conversation::{self, ConvCmd, ConvView, ReadState};
use crate::channel::{self, ChannelCmd, ChannelKey, StoredMessage};
use crate::error::{NodeError, Result};
use crate::meta::{self, ChannelRecord};
use crate::raft::{GroupId, NodeId, Request, Response};

/// How long one node may take to answer its part of a sync: it reads LMDB, nothing else.
const PEER_TTL: Duration = Duration::from_secs(2);

/// What one node is asked for a sync: `uid`'s view of these groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConvQuery {
    pub uid: String,
    /// Versions at or below this are not wanted (0: every conversation).
    pub since: u64,
    /// How many of the newest messages each conversation carries.
    pub msg_count: u32,
    /// (group, newest seq the client holds): `recents` holds only newer messages.
    pub groups: Vec<(GroupId, u64)>,
}

/// One node's copy of one user's conversation on one channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConvRow {
    pub group: GroupId,
    /// The replica's applied log index: the most advanced answer wins.
    pub applied: u64,
    pub view: ConvView,
    /// The channel's last message (None when the conversation is not wanted).
    pub last: Option<StoredMessage>,
    /// The newest messages, oldest first.
    pub recents: Vec<StoredMessage>,
}

/// A conversation as the sync found it: the channel and the winning row.
#[derive(Debug, Clone)]
pub struct Found {
    /// The channel's record, without its subscribers (`meta::channel_place`).
    pub rec: ChannelRecord,
    pub row: ConvRow,
}

/// Read one group's row for `q` from this node's store; None when the node holds nothing of it.
fn read_row(
    r: &impl crate::store::KvRead,
    g: GroupId,
    after: u64,
    q: &ConvQuery,
) -> crate::store::Result<Option<ConvRow>> {
    let st = crate::raft::state_machine::load_state(r, g)?;
    if st.last_applied.is_none() && st.channel.last_seq == 0 {
        return Ok(None);
    }
    let last_seq = st.channel.last_seq;
    let view = ConvView {
        last_seq,
        read: conversation::read_state(r, g, &q.uid)?,
        msg_version: conversation::clock(r, g)?.msg_version,
    };
    let mut row = ConvRow {
        group: g,
        applied: st.last_applied.map(|l| l.index).unwrap_or(0),
        view,
        last: None,
        recents: Vec::new(),
    };
    if !view.changed_since(q.since) {
        return Ok(Some(row));
    }
    let lo = (last_seq + 1)
        .saturating_sub(q.msg_count as u64)
        .max(after + 1)
        .max(view.read.deleted_to + 1)
        .max(1);
    if q.msg_count > 0 && lo <= last_seq {
        row.recents = channel::read_messages(r, g, &st.channel, lo, last_seq)?;
    }
    row.last = match row.recents.last() {
        Some(m) if m.message_seq == last_seq => Some(m.clone()),
        _ => channel::read_messages(r, g, &st.channel, last_seq, last_seq)?.pop(),
    };
    Ok(Some(row))
}

/// WuKongIM's `last_msg_seqs`: `channel_id:channel_type:seq` joined by `|`. Person channels
/// name the other user. A malformed entry is a 400.
pub fn parse_last_msg_seqs(s: &str) -> Result<Vec<(String, u8, u64)>> {
    let mut out = Vec::new();
    for part in s.split('|').filter(|p| !p.trim().is_empty()) {
        let f: Vec<&str> = part.trim().split(':').collect();
        let bad = || {
            NodeError::BadRequest(format!(
                "last_msg_seqs entry {part:?} is not channel_id:channel_type:seq"
            ))
        };
        if f.len() != 3 {
            return Err(bad());
        }
        let t = f[1].parse::<u8>().map_err(|_| bad())?;
        let seq = f[2].parse::<u64>().map_err(|_| bad())?;
        out.push((f[0].to_string(), t, seq));
    }
    Ok(out)
}

/// A conversation command of `uid`, stamped now (before the first attempt, so a retry
/// proposes the same entry).
pub fn command(uid: &str, op: conversation::ConvOp) -> ConvCmd {
    ConvCmd {
        uid: uid.to_string(),
        op,
        at_ms: super::route::now_ms(),
    }
}

impl Node {
    /// On a replica: `q`'s rows from this node's copy, read from disk. A group whose rows fail
    /// their seal is reported like any other bad read and left out; the others still answer.
    pub(super) async fn conversation_rows(&self, q: ConvQuery) -> Result<Vec<ConvRow>> {
        let (rows, bad) = self
            .store
            .read(move |r| {
                let (mut rows, mut bad) = (Vec::with_capacity(q.groups.len()), Vec::new());
                for &(g, after) in &q.groups {
                    if crate::integrity::corrupt(g).is_some() {
                        continue;
                    }
                    match read_row(r, g, after, &q) {
                        Ok(Some(row)) => rows.push(row),
                        Ok(None) => {}
                        Err(e) => bad.push((g, e)),
                    }
                }
                Ok((rows, bad))
            })
            .await?;
        for (g, e) in bad {
            let _ = crate::integrity::check::<()>(g, Err(e));
        }
        Ok(rows)
    }

    /// `uid`'s conversations changed after version `since` (0: all), newest first, gathered
    /// from the replicas of every channel the user is in (module doc). `client_seqs` are the
    /// newest seqs the client holds, by channel.
    pub async fn conversations(
        &self,
        uid: &str,
        since: u64,
        msg_count: u32,
        client_seqs: &HashMap<ChannelKey, u64>,
    ) -> Result<Vec<Found>> {
        let u = uid.to_string();
        let recs: Vec<ChannelRecord> = self
            .store
            .read(move |r| {
                let mut recs = Vec::new();
                for key in meta::channels_of(r, &u)? {
                    recs.extend(meta::channel_place(r, &key)?);
                }
                Ok(recs)
            })
            .await?;
        let after = |rec: &ChannelRecord| client_seqs.get(&rec.key).copied().unwrap_or(0);
        let query = |groups| ConvQuery {
            uid: uid.to_string(),
            since,
            msg_count,
            groups,
        };
        // Phase 1: this node's rows, and how far every other replica applied each group.
        let mut applied_at: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
        let mut local = Vec::new();
        for rec in &recs {
            for &n in &rec.replicas {
                if n == self.id {
                    local.push((rec.group_id, after(rec)));
                } else {
                    applied_at.entry(n).or_default().push(rec.group_id);
                }
            }
        }
        let held_here = !local.is_empty();
        let local = async {
            if held_here {
                Some(self.conversation_rows(query(local)).await)
            } else {
                None
            }
        };
        let asks = applied_at.into_iter().map(|(n, groups)| async move {
            let answer = self
                .ask(n, AppRpc::GroupSizes(groups), PEER_TTL)
                .await
                .and_then(|a| a.typed::<Vec<(GroupId, u64, u64)>>());
            (n, answer)
        });
        let (local, remote) = futures::future::join(local, futures::future::join_all(asks)).await;
        let mut best: HashMap<GroupId, ConvRow> = HashMap::new();
        let (mut answered, mut failed) = (Vec::new(), Vec::new());
        match local {
            Some(Ok(rows)) => {
                answered.push(self.id);
                best.extend(rows.into_iter().map(|r| (r.group, r)));
            }
            Some(Err(e)) => failed.push((self.id, e)),
            None => {}
        }
        // The most advanced other replica of each group, where it is ahead of this node's row.
        let mut ahead: HashMap<GroupId, (u64, NodeId)> = HashMap::new();
        for (n, answer) in remote {
            match answer {
                Ok(applied) => {
                    answered.push(n);
                    for (g, index, _) in applied {
                        let here = best.get(&g).map(|r| r.applied);
                        if here.is_some_and(|h| h >= index) {
                            continue;
                        }
                        if ahead.get(&g).is_none_or(|(i, _)| *i < index) {
                            ahead.insert(g, (index, n));
                        }
                    }
                }
                Err(e) => failed.push((n, e)),
            }
        }
        // Phase 2: those groups' rows from the replicas ahead (none in the steady state, where
        // this node holds every group it replicates as far as anyone).
        let mut fetch: BTreeMap<NodeId, Vec<(GroupId, u64)>> = BTreeMap::new();
        for rec in &recs {
            if let Some((_, n)) = ahead.get(&rec.group_id) {
                fetch.entry(*n).or_default().push((rec.group_id, after(rec)));
            }
        }
        let asks = fetch.into_iter().map(|(n, groups)| {
            let q = query(groups);
            async move {
                (
                    n,
                    q.groups.clone(),
                    self.ask(n, AppRpc::Conversations(q), PEER_TTL).await,
                )
            }
        });
        // Groups whose most advanced replica did not give its row.
        let mut lost: HashSet<GroupId> = HashSet::new();
        for (n, asked, answer) in futures::future::join_all(asks).await {
            match answer.and_then(|a| a.typed::<Vec<ConvRow>>()) {
                Ok(rows) => {
                    for row in rows {
                        match best.get(&row.group) {
                            Some(b) if b.applied >= row.applied => {}
                            _ => {
                                best.insert(row.group, row);
                            }
                        }
                    }
                }
                Err(e) => {
                    lost.extend(asked.into_iter().map(|(g, _)| g));
                    failed.push((n, e));
                }
            }
        }
        // A channel none of whose replicas answered, or whose most advanced replica did not
        // give its row, cannot be shown: say so rather than answer a list with a hole that
        // looks complete. (A replica that answered without a row holds no applied state of
        // the channel: nothing to show.)
        if let Some(rec) = recs.iter().find(|rec| {
            !best.contains_key(&rec.group_id)
                && (lost.contains(&rec.group_id) || !rec.replicas.iter().any(|n| answered.contains(n)))
        }) {
            let why: Vec<String> = failed.iter().map(|(n, e)| format!("node {n}: {e}")).collect();
            return Err(NodeError::Unavailable(format!(
                "conversations of {uid}: no replica of {} answered ({})",
                rec.key,
                why.join("; ")
            )));
        }
        let mut out: Vec<Found> = recs
            .into_iter()
            .filter_map(|rec| {
                let row = best.remove(&rec.group_id)?;
                row.view.changed_since(since).then_some(Found { rec, row })
            })
            .collect();
        out.sort_by_key(|f| std::cmp::Reverse(f.row.view.version()));
        crate::stats::CONVERSATIONS_RETURNED
            .fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    /// Change `cmd.uid`'s conversation on `rec` through the channel's leader; answers the new
    /// state once it is committed.
    pub async fn edit_conversation(&self, rec: &Arc<ChannelRecord>, cmd: ConvCmd) -> Result<ReadState> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        self.route(
            rec.group_id,
            &rec.replicas,
            AppRpc::Conversation(rec.clone(), cmd),
            deadline,
        )
        .await?
        .typed()
    }

    /// On the leader: propose the conversation command.
    pub(super) async fn apply_conversation(&self, rec: &ChannelRecord, cmd: ConvCmd) -> Result<ReadState> {
        let raft = self.serving_replica(rec).await?;
        match raft
            .client_write(Request::Channel(ChannelCmd::Conversation(cmd)))
            .await
        {
            Ok(r) => match r.data {
                Response::Channel(channel::ChannelResp::Conversation(state)) => Ok(state),
                other => Err(NodeError::Internal(format!("channel answered {other:?}"))),
            },
            Err(e) => Err(write_err(&raft, e).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_msg_seqs_parse() {
        assert_eq!(
            parse_last_msg_seqs("g1:2:5|bob:1:7|").expect("ok"),
            vec![("g1".to_string(), 2, 5), ("bob".to_string(), 1, 7)]
        );
        assert_eq!(parse_last_msg_seqs("").expect("ok"), vec![]);
        for bad in ["g1:2", "g1:x:5", "g1:2:-1", "a:1:2:3"] {
            assert!(parse_last_msg_seqs(bad).is_err(), "{bad}");
        }
    }
}
