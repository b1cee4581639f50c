//! Requests between nodes beyond Raft's own: forwarded client operations and status probes.
//! A node executes an [`AppRpc`] the same way whether it came from a peer or from its own
//! HTTP layer, so routing code has one path for "local" and "remote".

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::ReadPolicy;
use openraft::error::{ClientWriteError, ForwardReason, LinearizableReadError, RaftError};
use serde::{Deserialize, Serialize};

use super::Node;
use super::cold::{ColdOp, GroupRows, SealState};
use super::conversations::{ConvQuery, ConvRow};
use super::presence::{self, Located};
use super::status::{GroupStatus, LocalNodeStatus};
use crate::channel::conversation::{ConvCmd, ReadState};
use crate::channel::{ChannelKey, NewMessage, Sent, StoredMessage};
use crate::error::NodeError;
use crate::gateway::deliver::{self, ConnRef, Delivery};
use crate::meta::{self, ChannelRecord, MetaCmd, MetaResp, NodeRecord};
use crate::raft::network::{Handler, Reply, Rpc};
use crate::raft::{GroupId, NodeId, Raft, Request, Response, TypeConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AppRpc {
    /// Propose a metadata command (served by the metadata leader).
    MetaWrite(MetaCmd),
    /// Linearizable read of a channel record (served by the metadata leader).
    GetChannel(ChannelKey),
    /// Append messages to a channel (served by its leader, which then pushes them to the
    /// subscribers' connections, except the sending one). The record is shared, not copied,
    /// when the leader is this node (a group's subscribers may be thousands).
    Send(Arc<ChannelRecord>, Vec<NewMessage>, Option<ConnRef>),
    /// Linearizable read of a channel's messages (served by its leader).
    Sync(Arc<ChannelRecord>, SyncQuery),
    NodeStatus,
    GroupStatus(ChannelRecord),
    /// Admit a node (served by the metadata leader).
    Join(NodeRecord),
    /// A `--auto-join` node asks any member to get it admitted (that member routes a `Join`).
    RequestJoin(NodeRecord),
    /// Move a channel's replicas to the given set (served by the channel leader).
    Migrate(ChannelRecord, Vec<NodeId>),
    /// The sender no longer counts this node as a replica of the group: stop it, delete it.
    DropGroup(GroupId),
    /// The groups' leader hibernated them: stop them here too.
    Hibernate(Vec<GroupId>),
    /// Which channel groups run here as leader.
    ActiveGroups,
    /// (group, last applied index, payload bytes) of each group held here (sizing a
    /// migration; how far a replica is, for a conversation sync).
    GroupSizes(Vec<GroupId>),
    DrainStatus,
    /// Hand the channel's leadership to the node (served by the channel leader).
    TransferLeader(ChannelRecord, NodeId),
    /// Take the node out of the metadata group (served by the metadata leader).
    RemoveMember(NodeId),
    /// Re-read this replica's copy of the group: every seal, and the running checksum over
    /// messages `1..=upto` (`cluster::verify`).
    Verify(GroupId, u64),
    /// The node's copy of the channel is corrupt: replace it with a fresh learner (served by
    /// the channel leader, `cluster::repair`).
    Repair(ChannelRecord, NodeId),
    /// The groups' leader stopped their ticks (`cluster::quiet`): stop them here too.
    Quiet(Vec<GroupId>),
    /// The device flags of users' connections on a node, for the uids this node owns in the
    /// presence directory (`cluster::presence`).
    Presence(presence::Announcement),
    /// Where these uids (owned here) are online.
    Locate(Vec<String>),
    /// Push committed messages to this node's connections of the listed users
    /// (`cluster::fanout`, `gateway::deliver`).
    Deliver(Delivery),
    /// `Locate` for node `.0`, which caches the answer: it is told `Moved` when any of these
    /// uids' entries changes (`cluster::presence`).
    Watch(NodeId, Vec<String>),
    /// These uids' connections changed: drop their cached locations.
    Moved(Vec<String>),
    /// `Deliver`, several at once, queued for this node's pusher and answered at once; pushed
    /// in the order they arrive (one request in flight per peer, `cluster::fanout`).
    DeliverAll(Vec<Delivery>),
    /// The node was removed from the cluster (`Node::remove_node`): stop serving.
    Removed,
    /// A user's conversations on the listed channels, from this node's copy on disk
    /// (`cluster::conversations`; never wakes a group).
    Conversations(ConvQuery),
    /// Change a user's conversation on a channel (served by the channel leader).
    Conversation(Arc<ChannelRecord>, ConvCmd),
    /// Cold migration (`cluster::cold`): seal the groups that do not run here for
    /// coordinator `.0` (taking over seals older than `.2`), and say how their logs end.
    Seal(u64, Vec<GroupId>, Option<Duration>),
    /// Cold migration: write to groups that coordinator `.0` sealed here.
    ColdWrite(u64, Vec<(GroupId, ColdOp)>),
    /// Cold migration: the rows of groups sealed here, for their new replicas.
    GroupRows(u64, Vec<GroupId>),
    /// Cold migration: release these seals; delete the rows of the groups in `drop`.
    Release {
        owner: u64,
        groups: Vec<GroupId>,
        drop: Vec<GroupId>,
    },
    /// Node `.0` holds these seals for long: finish or release them (served by the metadata
    /// leader).
    ResolveSeals(NodeId, Vec<GroupId>),
}

impl AppRpc {
    /// Client reads and writes answer within a second from a healthy leader; admin actions
    /// (joins, migrations) legitimately take longer and get the whole deadline per attempt.
    pub fn is_quick(&self) -> bool {
        matches!(
            self,
            AppRpc::MetaWrite(_)
                | AppRpc::GetChannel(_)
                | AppRpc::Send(..)
                | AppRpc::Sync(..)
                | AppRpc::Conversations(_)
                | AppRpc::Conversation(..)
        )
    }

    /// A cold migration's steps, served on the background runtime (`crate::background`).
    pub fn is_background(&self) -> bool {
        matches!(
            self,
            AppRpc::Seal(..)
                | AppRpc::ColdWrite(..)
                | AppRpc::GroupRows(..)
                | AppRpc::Release { .. }
                | AppRpc::ResolveSeals(..)
        )
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SyncQuery {
    pub start: u64,
    pub end: u64,
    pub limit: u64,
    pub pull_up: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncResult {
    pub last_seq: u64,
    pub messages: Vec<StoredMessage>,
    pub more: bool,
}

impl AppReply {
    /// The answer as the type the request expects: `Err` is the remote's error, a reply of
    /// another kind an internal error (a bug, or a peer of another version).
    pub fn typed<T: FromReply>(self) -> Result<T, NodeError> {
        match self {
            AppReply::Err(e) => Err(e),
            other => T::from_reply(other)
                .map_err(|other| NodeError::Internal(format!("unexpected reply {other:?}"))),
        }
    }
}

/// A type an [`AppReply`] variant carries.
pub trait FromReply: Sized {
    /// `Err` gives back a reply of another kind.
    fn from_reply(r: AppReply) -> Result<Self, AppReply>;
}

/// Defines [`AppReply`] from one list of (variant, carried type), with a [`FromReply`] impl
/// per variant, so the answers and their types are written once.
macro_rules! app_replies {
    ($($variant:ident($t:ty)),* $(,)?) => {
        /// The answer to an [`AppRpc`]: one variant per kind of answer, plus `Done` and `Err`.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        pub enum AppReply {
            $($variant($t),)*
            Done,
            Err(NodeError),
        }

        $(
            impl FromReply for $t {
                fn from_reply(r: AppReply) -> Result<Self, AppReply> {
                    match r {
                        AppReply::$variant(v) => Ok(v),
                        other => Err(other),
                    }
                }
            }
        )*
    };
}

app_replies!(
    Meta(MetaResp),
    Channel(Option<ChannelRecord>),
    Sent(Vec<Sent>),
    Synced(SyncResult),
    NodeStatus(LocalNodeStatus),
    GroupStatus(GroupStatus),
    Joined(wk_api::JoinResp),
    Groups(Vec<GroupId>),
    Sizes(Vec<(GroupId, u64, u64)>),
    Drain(Option<wk_api::DrainStatus>),
    Verified(super::verify::LocalVerify),
    Located(Vec<Located>),
    Convs(Vec<ConvRow>),
    ConvState(ReadState),
    SealStates(Vec<SealState>),
    Rows(Vec<GroupRows>),
);

/// [`AppReply::Done`].
impl FromReply for () {
    fn from_reply(r: AppReply) -> Result<Self, AppReply> {
        match r {
            AppReply::Done => Ok(()),
            other => Err(other),
        }
    }
}

/// How long a follower waits for an election to finish before telling the caller to retry.
const LEADER_WAIT: Duration = Duration::from_millis(1500);

impl Handler for Node {
    fn handle(
        &self,
        _from: NodeId,
        rpc: Rpc,
    ) -> Pin<Box<dyn Future<Output = Result<Reply, String>> + Send + '_>> {
        Box::pin(async move {
            let s = |e: &dyn std::fmt::Display| e.to_string();
            Ok(match rpc {
                Rpc::Append(g, req) => {
                    let raft = self.group(g).await.map_err(|e| s(&e))?;
                    if !req.entries.is_empty() {
                        // Followers see writes only as appends; they count as activity.
                        let _ = self.touch(g);
                    }
                    Reply::Append(raft.append_entries(req).await.map_err(|e| s(&e))?)
                }
                Rpc::Vote(g, mut req) => {
                    let (raft, started) = self.group_started(g).await.map_err(|e| s(&e))?;
                    // The leader lease exists to protect a live leader. Here there is none: ours
                    // is known dead, or this vote just started the group (it was hibernating, so
                    // it follows nobody; openraft still grants a freshly started group a lease,
                    // which would make the candidate of a wake-up wait out the election timer).
                    req.leadership_transfer |= started || self.leader_is_down(&raft);
                    Reply::Vote(raft.vote(req).await.map_err(|e| s(&e))?)
                }
                Rpc::PreVote(g, req) => Reply::Vote(
                    self.group(g)
                        .await
                        .map_err(|e| s(&e))?
                        .pre_vote(req)
                        .await
                        .map_err(|e| s(&e))?,
                ),
                Rpc::Snapshot(g, vote, meta, data) => {
                    let snapshot =
                        openraft::alias::SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: data };
                    let raft = self.group(g).await.map_err(|e| s(&e))?;
                    Reply::Snapshot(
                        raft.install_full_snapshot(vote, snapshot)
                            .await
                            .map_err(|e| s(&e))?,
                    )
                }
                Rpc::TransferLeader(g, req) => {
                    let raft = self.group(g).await.map_err(|e| s(&e))?;
                    let res = raft.handle_transfer_leader(req).await.map_err(|e| s(&e))?;
                    Reply::TransferLeader(res.map_err(|e| format!("{e:?}")))
                }
                // Answered by the transport before it reaches a handler.
                Rpc::Ping => Reply::Pong,
                Rpc::App(bytes) => {
                    let rpc: AppRpc =
                        postcard::from_bytes(&bytes).map_err(|e| format!("bad app request: {e}"))?;
                    if rpc.is_background() {
                        let node = self.clone();
                        let reply = crate::background::run(async move {
                            crate::store::encode(&node.serve_app(rpc).await)
                        });
                        Reply::App(reply.await.ok_or("a background task failed")?)
                    } else {
                        Reply::App(crate::store::encode(&self.serve_app(rpc).await))
                    }
                }
            })
        })
    }
}

/// Wait briefly for `raft` to know a leader, then say where to go.
async fn not_leader(raft: &Raft, known: Option<NodeId>) -> NodeError {
    let leader_hint = match known {
        Some(l) => Some(l),
        None => raft
            .wait(Some(LEADER_WAIT))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
            .ok()
            .and_then(|m| m.current_leader),
    };
    NodeError::NotLeader { leader_hint }
}

/// A Raft API error as the caller must see it: a redirect becomes NotLeader (after waiting
/// briefly for an election), anything else Unavailable, so routing tries again. A stopped group
/// (hibernated, or dropped by a migration under the request) is retried too: routing again
/// starts it, or finds its new replicas.
async fn raft_err<E: std::fmt::Display>(
    raft: &Raft,
    e: RaftError<TypeConfig, E>,
    redirect: impl FnOnce(&E) -> Option<Option<NodeId>>,
) -> NodeError {
    match e {
        RaftError::APIError(api) => match redirect(&api) {
            Some(leader) => not_leader(raft, leader).await,
            None => NodeError::Unavailable(api.to_string()),
        },
        RaftError::Fatal(f) => NodeError::Unavailable(format!("group stopped: {f}")),
    }
}

pub(super) async fn write_err(
    raft: &Raft,
    e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
) -> NodeError {
    if let RaftError::APIError(ClientWriteError::ForwardToLeader(f)) = &e
        && f.reason == ForwardReason::LeaseExpired
    {
        // Still the leader, only without a fresh quorum ack: renew it, and routing asks this
        // node again (it names itself) instead of touring the followers.
        super::quiet::renew_lease(raft).await;
    }
    raft_err(raft, e, |api| match api {
        ClientWriteError::ForwardToLeader(f) => Some(f.leader_id),
        _ => None,
    })
    .await
}

pub(super) async fn read_err(
    raft: &Raft,
    e: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>,
) -> NodeError {
    raft_err(raft, e, |api| match api {
        LinearizableReadError::ForwardToLeader(f) => Some(f.leader_id),
        _ => None,
    })
    .await
}

impl Node {
    /// Execute an app request on this node.
    /// Boxed: serving can route again (a migration writes metadata, a join migrates).
    pub fn serve_app(&self, rpc: AppRpc) -> Pin<Box<dyn Future<Output = AppReply> + Send + '_>> {
        Box::pin(async move {
            match self.try_serve_app(rpc).await {
                Ok(r) => r,
                Err(e) => AppReply::Err(e),
            }
        })
    }

    async fn try_serve_app(&self, rpc: AppRpc) -> Result<AppReply, NodeError> {
        Ok(match rpc {
            AppRpc::MetaWrite(cmd) => {
                let starts_drain = matches!(cmd, MetaCmd::SetDrain { rate_milli: Some(_) });
                let resp = self.meta.client_write(Request::Meta(cmd)).await;
                match resp {
                    Ok(r) => match r.data {
                        Response::Meta(m) => {
                            if starts_drain {
                                self.drain_requested.notify_one();
                            }
                            AppReply::Meta(m)
                        }
                        other => return Err(NodeError::Internal(format!("metadata answered {other:?}"))),
                    },
                    Err(e) => return Err(write_err(&self.meta, e).await),
                }
            }
            AppRpc::GetChannel(key) => {
                if let Err(e) = self.meta.ensure_linearizable(ReadPolicy::ReadIndex).await {
                    return Err(read_err(&self.meta, e).await);
                }
                AppReply::Channel(self.store.read(move |r| meta::get_channel(r, &key)).await?)
            }
            AppRpc::Send(rec, msgs, origin) => AppReply::Sent(self.append(&rec, msgs, origin).await?),
            AppRpc::Sync(rec, q) => AppReply::Synced(self.read_range(&rec, q).await?),
            AppRpc::Conversations(q) => AppReply::Convs(self.conversation_rows(q).await?),
            AppRpc::Conversation(rec, cmd) => AppReply::ConvState(self.apply_conversation(&rec, cmd).await?),
            AppRpc::NodeStatus => AppReply::NodeStatus(self.local_status().await?),
            AppRpc::GroupStatus(rec) => AppReply::GroupStatus(self.group_status(&rec).await?),
            AppRpc::Join(node) => AppReply::Joined(self.admit(node).await?),
            AppRpc::RequestJoin(node) => AppReply::Joined(self.join(node).await?),
            AppRpc::Migrate(rec, desired) => {
                AppReply::Channel(Some(self.migrate_local(&rec, desired, true).await?))
            }
            AppRpc::DropGroup(g) => {
                self.drop_group(g).await?;
                AppReply::Done
            }
            AppRpc::Hibernate(gs) => {
                futures::future::join_all(gs.iter().map(|g| self.hibernate(*g))).await;
                AppReply::Done
            }
            AppRpc::Quiet(gs) => {
                for g in gs {
                    // Only a follower: a node that leads the group now decides for itself.
                    if self.live_group(g).is_some_and(|r| !r.is_leader()) {
                        self.quiet(g);
                    }
                }
                AppReply::Done
            }
            AppRpc::ActiveGroups => AppReply::Groups(
                self.live_groups()
                    .into_iter()
                    .filter(|(_, r)| r.is_leader())
                    .map(|(g, _)| g)
                    .collect(),
            ),
            AppRpc::GroupSizes(gs) => AppReply::Sizes(
                self.store
                    .read(move |r| {
                        gs.iter()
                            .map(|g| {
                                let st = crate::raft::state_machine::load_state(r, *g)?;
                                Ok((
                                    *g,
                                    st.last_applied.map(|l| l.index).unwrap_or(0),
                                    st.channel.bytes,
                                ))
                            })
                            .collect::<crate::store::Result<Vec<_>>>()
                    })
                    .await?,
            ),
            AppRpc::DrainStatus => AppReply::Drain(self.local_drain_status()),
            AppRpc::TransferLeader(rec, to) => {
                self.transfer_local(&rec, to).await?;
                AppReply::Done
            }
            AppRpc::Removed => {
                self.mark_removed("the node that removed it said so").await;
                AppReply::Done
            }
            AppRpc::RemoveMember(node) => {
                self.remove_member(node).await?;
                AppReply::Done
            }
            AppRpc::Verify(g, upto) => AppReply::Verified(self.verify_local(g, upto).await?),
            AppRpc::Repair(rec, bad) => AppReply::Channel(Some(self.repair_local(&rec, bad).await?)),
            AppRpc::Presence(a) => {
                self.presence.apply(a);
                AppReply::Done
            }
            AppRpc::Locate(uids) => AppReply::Located(self.presence.lookup(&uids)),
            AppRpc::Deliver(d) => {
                deliver::push(&self.registry, self.id, &d);
                AppReply::Done
            }
            AppRpc::Watch(from, uids) => AppReply::Located(self.presence.watch(from, &uids)),
            AppRpc::Moved(uids) => {
                self.presence.moved(&uids);
                AppReply::Done
            }
            AppRpc::Seal(owner, gs, take_over) => {
                AppReply::SealStates(self.seal_local(gs, owner, take_over).await?)
            }
            AppRpc::ColdWrite(owner, ops) => AppReply::Groups(self.cold_write_local(owner, ops).await?),
            AppRpc::GroupRows(owner, gs) => AppReply::Rows(self.group_rows_local(owner, gs).await?),
            AppRpc::Release { owner, groups, drop } => {
                self.release_local(owner, groups, drop).await?;
                AppReply::Done
            }
            AppRpc::ResolveSeals(from, gs) => {
                self.resolve_seals(from, gs).await?;
                AppReply::Done
            }
            AppRpc::DeliverAll(ds) => {
                self.accept_deliveries(ds);
                AppReply::Done
            }
        })
    }

    /// The channel's group on this node, which must be one of its replicas.
    pub(super) async fn replica_group(&self, rec: &ChannelRecord) -> Result<Raft, NodeError> {
        if !rec.replicas.contains(&self.id) {
            return Err(NodeError::NotLeader { leader_hint: None });
        }
        self.channel_group(rec).await
    }
}
