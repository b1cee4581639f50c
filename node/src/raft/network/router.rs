//! The openraft side of the transport: openraft-multi's `GroupRouter`, which sends every
//! group's Raft RPCs to a peer as [`Rpc`]s over the one shared connection, and the network
//! factory the groups are built with.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::OptionalSend;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft_multi::{GroupNetworkAdapter, GroupNetworkFactory, GroupRouter};

use super::{CallError, Reply, Rpc, Transport};
use crate::raft::state_machine::SnapshotData;
use crate::raft::{GroupId, NodeId, Peer, TypeConfig, Vote};

/// Least time an append (or heartbeat) may wait for its answer. openraft gives them the
/// heartbeat interval (100 ms); on the loaded 2-core machine that timed out thousands of
/// appends to live peers, which openraft then resent. A dead peer is noticed by the transport
/// (refused or lost connection) long before this.
const MIN_APPEND_TTL: Duration = Duration::from_secs(1);

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

impl Router {
    /// A vote or pre-vote request; both are answered with a `VoteResponse`.
    async fn ask_vote(
        &self,
        target: NodeId,
        rpc: Rpc,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .0
            .call(target, rpc, option.hard_ttl())
            .await
            .map_err(rpc_err)?
        {
            Reply::Vote(r) => Ok(r),
            other => Err(unexpected(target, other)),
        }
    }
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
        self.ask_vote(target, Rpc::Vote(group, rpc), option).await
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_vote(target, Rpc::PreVote(group, rpc), option).await
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
