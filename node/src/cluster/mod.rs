//! The node runtime: the metadata group, starting and stopping channel groups (their registry
//! is `groups`), membership and addresses, and the routing that lets any node serve any
//! request.
//!
//! Idle channel groups hibernate: the leader of a group with no client reads or writes for
//! `--channel-idle-timeout` tells the other replicas to stop it and stops it itself. Nothing
//! of a hibernated group runs (no timers, no heartbeats); its log, vote and state stay in LMDB.
//! The next client request on a replica starts it again and asks for an election at once (a
//! real vote if this process hibernated it, else a pre-vote, so a live leader elsewhere is
//! left alone); a peer RPC starts it too. Awake groups with no traffic go quiet (`quiet`).
//!
//! Channel groups start lazily: on the first client request or peer RPC that names them. A
//! replica that gets a client request for a group that was never initialized initializes it
//! with the replica set recorded in the metadata group (the same set on every replica, which
//! openraft allows); normally only the preferred leader (the first replica, tried first)
//! does so and the others learn the membership from it.

mod cold;
pub mod conversations;
mod failure;
mod fanout;
mod groups;
pub mod ids;
mod messages;
mod ops;
pub mod presence;
mod quiet;
mod repair;
mod route;
pub mod rpc;
mod scale;
pub mod status;
pub mod verify;

use openraft::async_runtime::WatchReceiver;
use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use groups::GroupSlot;

use crate::config::Config;
use crate::error::{NodeError, Result};
use crate::meta::{self, ChannelRecord, MetaCmd, NodeRecord, SenderLists};
use crate::raft::log_store::LogStore;
use crate::raft::network::{NetworkFactory, Router, Transport};
use crate::raft::state_machine::StateMachine;
use crate::raft::{Fence, GroupId, META_GROUP, NodeId, Peer, Raft, raft_config};
use crate::store::{KvRead, KvWrite, Store, Table, encode};

/// On-disk format of the data dir; a node refuses a data dir of another format.
/// 3: a channel's messages live in its Raft log (`channel` module doc), dedup rows are keyed
/// by a hash. Format 2 data is carried over by a backup: `wkctl snapshot save` against the old
/// build, `wknode --restore` with this one (it reads format 2 and 3 snapshots).
pub const FORMAT_VERSION: u32 = 3;

/// How long a client request that woke a group this process hibernated waits for its
/// campaign (one vote round) before it goes on and lets routing retry.
const WAKE_ELECTION_WAIT: Duration = Duration::from_millis(500);

/// The `local` row present once this node was removed from the cluster.
pub const REMOVED_KEY: &[u8] = b"removed";

pub struct Inner {
    pub id: NodeId,
    pub http_addr: String,
    pub cluster_addr: String,
    /// The client gateway's advertised addresses, set once it listens (`set_gateway`);
    /// registered in the metadata like `http_addr`, for `/cluster/nodes`.
    gateway: std::sync::OnceLock<meta::GatewayRecord>,
    /// Replicas per channel (capped by the number of nodes).
    pub replication: usize,
    pub store: Store,
    pub transport: Arc<Transport>,
    /// The metadata group, replicated to every node.
    pub meta: Raft,
    /// The metadata group's applied index, as its state machine sets it before answering a
    /// write (openraft's metrics lag it): local metadata reads key their caches on it.
    meta_applied: Arc<AtomicU64>,
    /// The channel groups on this node (`groups`).
    groups: groups::Groups,
    /// How long a channel may go without client requests before it hibernates.
    pub idle_timeout: Duration,
    /// Most channel groups kept running on this node.
    pub max_active: usize,
    /// Progress of the backlog drain while this node leads the metadata group.
    drain: Mutex<Option<wk_api::DrainStatus>>,
    /// Wakes the drain loop when this node, as metadata leader, committed a drain request.
    drain_requested: tokio::sync::Notify,
    /// The sync backlog (`backlog_list`), by metadata applied index and members.
    backlog_memo: route::MetaMemo<(u64, std::collections::BTreeSet<NodeId>), Backlogged>,
    /// The last scan of the channel table (`channel_scan`), by metadata applied index.
    scan_memo: route::MetaMemo<u64, status::ChannelScan>,
    /// Nodes being decommissioned, refreshed from the metadata (placement skips them).
    decommissioned: std::sync::RwLock<std::collections::BTreeSet<NodeId>>,
    /// `--allow-drills`: accept fault-injection requests.
    pub allow_drills: bool,
    /// Bumped by every drill, so a drill's heal timer only heals its own drill.
    drill_generation: std::sync::atomic::AtomicU64,
    /// Last node seen leading each group, to route without asking around.
    hints: Mutex<HashMap<GroupId, NodeId>>,
    /// Channel records and sender lists read from the local metadata, so a send costs no
    /// LMDB read.
    /// Shared, not copied, per request: a record holds every subscriber of its channel.
    channel_cache: route::MetaCache<Arc<ChannelRecord>>,
    lists_cache: route::MetaCache<SenderLists>,
    ids: ids::IdGen,
    /// A `--seed` node waits here until the cluster admits it.
    joining: AtomicBool,
    /// This node was removed from the metadata membership (`wkctl node remove`): it answers
    /// every request `removed` (`api`), refuses client connections, and keeps saying so
    /// after a restart (the `local` row [`REMOVED_KEY`]).
    removed: AtomicBool,
    /// The node's long-running tasks (`spawn_task`); `shutdown` aborts them. std mutex: a
    /// spawn or the abort.
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// The runtime the node started on: Raft groups start here, also when a task of the
    /// background runtime (`crate::background`) starts them.
    runtime: tokio::runtime::Handle,
    /// Replica sets of finished migrations waiting for the next metadata write (they go as
    /// one `SetReplicasBatch`), each with its caller. std mutex: a push or a take.
    replica_updates: Mutex<Vec<scale::ReplicaUpdate>>,
    /// Held while this node's batch of replica sets is being written: one batch in flight,
    /// the next one collects meanwhile.
    replica_flush: tokio::sync::Mutex<()>,
    /// The client connections of this node by uid (the gateway adds and removes them;
    /// deliveries push to them).
    pub registry: Arc<crate::gateway::Registry>,
    /// This node's part of the presence directory (`presence`).
    pub presence: presence::Presence,
    /// Per-channel delivery queues while this node leads channels (`fanout`).
    fanout: fanout::Fanout,
}

/// Cheap-clone handle to the node runtime.
#[derive(Clone)]
pub struct Node(Arc<Inner>);

/// The sync backlog (`Node::backlog_list`): the channels whose replica set differs from their
/// placement for the members, with that placement.
type Backlogged = Vec<(ChannelRecord, Vec<NodeId>)>;

impl Deref for Node {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Run `work`, whose tasks live on, on `runtime` (the node's) if the caller is on the
/// background runtime (`crate::background`).
async fn on_runtime<T: Send + 'static>(
    runtime: tokio::runtime::Handle,
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    if !crate::background::is_current() {
        return work.await;
    }
    runtime
        .spawn(work)
        .await
        .map_err(|e| NodeError::Internal(format!("start a group: {e}")))?
}

fn new_raft_group(
    id: NodeId,
    g: GroupId,
    store: &Store,
    transport: &Arc<Transport>,
    fence: Fence,
    applied: Arc<AtomicU64>,
    resume: bool,
) -> impl std::future::Future<Output = Result<Raft>> + use<> {
    let (store, transport) = (store.clone(), transport.clone());
    async move {
        let network = NetworkFactory::new(Router(transport), g);
        let preload = crate::raft::startup::read(&store, g);
        let raft = Raft::new(
            id,
            raft_config(g, resume),
            network,
            LogStore::new(g, store.clone(), fence.clone(), preload.clone()),
            StateMachine::new(g, store, fence, applied, preload.clone()),
        )
        .await;
        crate::raft::startup::take(&preload);
        raft.map_err(|e| match crate::integrity::corrupt(g) {
            // Loading the log hit a bad row: say so, so routing tries another replica.
            Some(c) => NodeError::Corrupt(format!("group {g}: {}", c.reason)),
            None => NodeError::Internal(format!("start group {g}: {e}")),
        })
    }
}

/// Follows the leader and membership changes of group `g` on this node: one log line per
/// change, with the ids, and the ticks restarted when this node becomes leader of a quiet
/// group. (A quiet follower made leader by a leadership transfer would otherwise send no
/// heartbeats, while its followers, woken by its first append, time out and elect again.)
/// Server metrics change only on votes, roles and membership (not per entry), so this costs
/// nothing in the steady state; it ends when the group stops.
async fn watch_role_changes(g: GroupId, slot: std::sync::Weak<GroupSlot>, raft: Raft) {
    let mut rx = raft.server_metrics();
    drop(raft);
    let (mut leader, mut voters) = (None, Vec::new());
    loop {
        {
            let m = rx.borrow_watched();
            let now_voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            if m.current_leader != leader {
                leader = m.current_leader;
                tracing::info!(group = g, leader = ?leader, term = m.vote.leader_id().term, node_id = m.id, "leader changed");
                if leader == Some(m.id)
                    && let Some(slot) = slot.upgrade()
                {
                    slot.unquiet();
                }
            }
            if now_voters != voters {
                voters = now_voters;
                tracing::info!(group = g, voters = ?voters, node_id = m.id, "membership changed");
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl Node {
    /// Open the data dir, start the metadata group and bootstrap or join as configured.
    pub async fn start(cfg: &Config, http_addr: String, cluster_addr: String) -> anyhow::Result<Node> {
        use anyhow::Context;
        let store = Store::open(&cfg.data_dir.join("lmdb")).context("open the data dir")?;
        check_identity(&store, cfg.node_id).await?;
        index_members_once(&store).await?;
        store
            .read(|r| crate::integrity::load(r))
            .await
            .context("load the corrupt-replica register")?;
        let cluster_id = cluster_identity(&store, cfg).await?;
        let secret = cfg
            .cluster_secret
            .as_ref()
            .map(|s| s.expose().as_bytes().to_vec())
            .unwrap_or_default();
        let tls = cfg.tls.as_ref().map(|t| t.peer());
        let transport = Transport::new(cfg.node_id, secret, cluster_id, tls);
        let persist = store.clone();
        transport.set_on_adopt(Box::new(move |id| {
            persist.submit(
                move |w| w.put(Table::Local, b"cluster_id", &encode(&id)),
                |r| {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "persisting the adopted cluster id");
                    }
                },
            );
        }));
        for (id, addr) in cfg.init_nodes.iter().chain(cfg.seed.iter()) {
            transport.set_addr(*id, addr);
        }
        transport.set_addr(cfg.node_id, &cluster_addr);
        let meta_applied = Arc::new(AtomicU64::new(0));
        let meta = new_raft_group(
            cfg.node_id,
            META_GROUP,
            &store,
            &transport,
            Fence::default(),
            meta_applied.clone(),
            false,
        )
        .await?;
        let reserved_ids = store
            .read(|r| r.get_decoded::<u64>(Table::Local, ids::RESERVATION_KEY))
            .await?
            .unwrap_or(0);
        let removed = store.read(|r| r.get(Table::Local, REMOVED_KEY)).await?.is_some();
        if removed {
            tracing::warn!(
                node_id = cfg.node_id,
                "this node was removed from the cluster: it serves nothing (wipe the data dir to add it again)"
            );
        }
        tokio::spawn(watch_role_changes(
            META_GROUP,
            std::sync::Weak::new(),
            meta.clone(),
        ));
        let node = Node(Arc::new(Inner {
            id: cfg.node_id,
            http_addr,
            cluster_addr: cluster_addr.clone(),
            replication: cfg.channel_replicas.max(1),
            store,
            transport: transport.clone(),
            meta: meta.clone(),
            meta_applied,
            groups: Default::default(),
            hints: Default::default(),
            channel_cache: Default::default(),
            gateway: Default::default(),
            lists_cache: Default::default(),
            ids: ids::IdGen::resume(cfg.node_id, reserved_ids),
            joining: AtomicBool::new(false),
            removed: AtomicBool::new(removed),
            tasks: Default::default(),
            runtime: tokio::runtime::Handle::current(),
            idle_timeout: cfg.channel_idle_timeout,
            max_active: cfg.max_active_channels,
            drain: Default::default(),
            drain_requested: Default::default(),
            backlog_memo: Default::default(),
            scan_memo: Default::default(),
            decommissioned: Default::default(),
            allow_drills: cfg.allow_drills,
            drill_generation: Default::default(),
            replica_updates: Default::default(),
            replica_flush: Default::default(),
            registry: Default::default(),
            presence: Default::default(),
            fanout: Default::default(),
        }));
        node.load_seals().await?;
        transport.set_handler(Arc::new(node.clone()));
        let on_down = node.clone();
        transport.set_on_down(Box::new(move |peer| on_down.peer_down(peer)));
        let on_silent = node.clone();
        transport.set_on_silent(Box::new(move |peer| on_silent.peer_silent(peer)));
        node.spawn_task(transport.clone().watch_peers());

        if !meta.is_initialized().await.context("read metadata state")? {
            let members: BTreeMap<NodeId, Peer> = if !cfg.init_nodes.is_empty() {
                cfg.init_nodes
                    .iter()
                    .map(|(id, addr)| {
                        (
                            *id,
                            Peer {
                                cluster_addr: addr.clone(),
                            },
                        )
                    })
                    .collect()
            } else if cfg.seed.is_none() {
                BTreeMap::from([(cfg.node_id, Peer { cluster_addr })])
            } else {
                BTreeMap::new()
            };
            if members.is_empty() {
                tracing::info!(seed = ?cfg.seed, "waiting to be admitted to the cluster (joining)");
                node.joining.store(true, Ordering::Relaxed);
            } else {
                anyhow::ensure!(
                    members.contains_key(&cfg.node_id),
                    "--init-nodes does not list this node's id {}",
                    cfg.node_id
                );
                tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "bootstrapping the metadata group");
                if let Err(e) = meta.initialize(members).await {
                    // Another member's identical initialization may have reached us first.
                    tracing::info!(error = %e, "metadata group initialization skipped");
                }
            }
        }
        node.reserve_ids().await?;
        node.spawn_task(node.clone().resume_unapplied());
        node.spawn_task(node.clone().keep_ids_reserved());
        node.spawn_task(node.clone().maintain_membership());
        node.spawn_task(node.clone().hibernate_idle_groups());
        node.spawn_task(node.clone().quiet_idle_groups());
        node.spawn_background_task(node.clone().run_drain());
        node.spawn_background_task(node.clone().report_stale_seals());
        node.spawn_task(node.clone().repair_corrupt());
        node.spawn_task(node.clone().announce_presence());
        if let (true, Some((seed_id, _))) = (node.is_joining(), cfg.seed.clone()) {
            node.spawn_task(node.clone().announce(seed_id, cfg.auto_join));
        }
        Ok(node)
    }

    /// Run `task` on the node's runtime until it ends or `shutdown` aborts it.
    pub(crate) fn spawn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks().spawn_on(task, &self.runtime);
    }

    /// Like [`Node::spawn_task`], on the background runtime (`crate::background`).
    fn spawn_background_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks().spawn_on(task, crate::background::handle());
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, tokio::task::JoinSet<()>> {
        let mut tasks = self.tasks.lock().expect("tasks lock poisoned");
        // Forget the tasks that ended (a JoinSet keeps them until joined).
        while tasks.try_join_next().is_some() {}
        tasks
    }

    /// Store the next message-id reservation durably, then let ids use it (`ids` module doc).
    async fn reserve_ids(&self) -> Result<()> {
        let until = self.ids.wanted_reservation();
        self.store
            .write(move |w| w.put(Table::Local, ids::RESERVATION_KEY, &encode(&until)))
            .await?;
        self.ids.reserve(until);
        Ok(())
    }

    /// Start every channel group whose stored log runs past its stored `last_applied`. A
    /// process that stops between two checkpoints loses its latest applies (they are replayed
    /// from the log: `store` module doc), and a group that nothing wakes would keep serving
    /// status, verification and migrations from its older state. A started group learns the
    /// commit index from its leader (or elects one) and applies the rest.
    async fn resume_unapplied(self) {
        let behind = self
            .store
            .read(|r| {
                let mut behind = Vec::new();
                for (k, v) in r.range(Table::Sm, b"", &[0xFF; 9], usize::MAX, false)? {
                    let Some(g) = crate::store::keys::u64_suffix(&k).filter(|_| k.len() == 8) else {
                        continue;
                    };
                    if g == META_GROUP {
                        continue;
                    }
                    let state: crate::raft::state_machine::SmState = crate::store::decode(Table::Sm, &v)?;
                    let applied = state.last_applied.map(|l| l.index);
                    let last = crate::raft::log_store::last_index(r, g)?;
                    if last > applied {
                        behind.push(g);
                    }
                }
                Ok(behind)
            })
            .await;
        match behind {
            Ok(behind) => {
                if !behind.is_empty() {
                    tracing::info!(
                        groups = behind.len(),
                        "starting the groups whose last applies were lost"
                    );
                }
                for g in behind {
                    if let Err(e) = self.group(g).await {
                        tracing::warn!(group = g, error = %e, "starting a group to re-apply its log");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "finding groups with entries to re-apply"),
        }
    }

    /// Keep the message-id reservation ahead of the clock.
    async fn keep_ids_reserved(self) {
        let mut every = tokio::time::interval(ids::RESERVE_EVERY);
        loop {
            every.tick().await;
            if let Err(e) = self.reserve_ids().await {
                tracing::warn!(error = %e, "renewing the message-id reservation");
            }
        }
    }

    /// The gateway's advertised addresses, once it listens: registered in the metadata by the
    /// membership task. Later calls change nothing.
    pub fn set_gateway(&self, route: &wk_api::RouteResp) {
        let _ = self.gateway.set(meta::GatewayRecord {
            tcp_addr: route.tcp_addr.clone(),
            ws_addr: route.ws_addr.clone(),
        });
    }

    pub fn is_joining(&self) -> bool {
        self.joining.load(Ordering::Relaxed)
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// This node is no longer a member of the cluster (`why`): from now on, and after any
    /// restart, it serves nothing but `/health`. Idempotent.
    pub async fn mark_removed(&self, why: &str) {
        if self.removed.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(
            node_id = self.id,
            why,
            "this node was removed from the cluster: it serves nothing from now on"
        );
        if let Err(e) = self.store.write(|w| w.put(Table::Local, REMOVED_KEY, b"1")).await {
            tracing::error!(error = %e, "recording that this node was removed");
        }
        // Its clients must reconnect elsewhere: stale tokens and memberships must not serve.
        for conn in self.registry.all() {
            conn.outbox.close();
        }
    }

    /// The group's Raft, started from its stored state if it is not running yet.
    pub async fn group(&self, g: GroupId) -> Result<Raft> {
        Ok(self.group_started(g).await?.0)
    }

    /// The group's Raft and whether this call started it.
    async fn group_started(&self, g: GroupId) -> Result<(Raft, bool)> {
        if g == META_GROUP {
            return Ok((self.meta.clone(), false));
        }
        // A corrupt replica never runs the group (no serving, no campaigning, no replicating
        // from its log) until the repair deleted its rows (see `integrity`).
        if let Some(c) = crate::integrity::corrupt(g) {
            return Err(NodeError::Corrupt(format!(
                "group {g} on node {}: {}",
                self.id, c.reason
            )));
        }
        let sealed_until = Instant::now() + cold::SEALED_WAIT;
        let (slot, raft, started) = loop {
            let released = self.groups.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let Some(slot) = self.groups.slot_or_new(g) else {
                // A cold migration holds the group here (`cold`): it takes milliseconds.
                if tokio::time::timeout_at(sealed_until.into(), released)
                    .await
                    .is_err()
                {
                    return Err(NodeError::Unavailable(format!(
                        "group {g} is moving to new replicas; try again"
                    )));
                }
                continue;
            };
            if slot.fence.is_closed() {
                // The group is stopping here (`stop_group`): wait until it is done.
                drop(slot.stopping.lock().await);
                continue;
            }
            let mut started = false;
            let raft = match slot
                .raft
                .get_or_try_init(|| {
                    started = true;
                    let start = new_raft_group(
                        self.id,
                        g,
                        &self.store,
                        &self.transport,
                        slot.fence.clone(),
                        Default::default(),
                        self.groups.resumable(g),
                    );
                    on_runtime(self.runtime.clone(), start)
                })
                .await
            {
                Ok(raft) => raft.clone(),
                // Stopped while it started (its first writes hit the fence): start afresh.
                Err(_) if slot.fence.is_closed() => continue,
                Err(e) => return Err(e),
            };
            // A stop that came while this instance was starting did not see it: stop it here.
            if slot.fence.is_closed() {
                if started {
                    let _ = raft.shutdown().await;
                }
                continue;
            }
            break (slot, raft, started);
        };
        if started {
            slot.last_active.store(route::now_ms(), Ordering::Relaxed);
            self.runtime
                .spawn(watch_role_changes(g, Arc::downgrade(&slot), raft.clone()));
        }
        Ok((raft, started))
    }

    /// Record client activity on a group (it stays awake).
    /// Answers whether the group was quiet (its ticks were stopped) until now.
    pub(super) fn touch(&self, g: GroupId) -> bool {
        self.slot(g).is_some_and(|slot| {
            slot.last_active.store(route::now_ms(), Ordering::Relaxed);
            slot.unquiet()
        })
    }

    fn slot(&self, g: GroupId) -> Option<Arc<GroupSlot>> {
        self.groups.slot(g)
    }

    /// Stop a channel group here; its state stays in LMDB and any request restarts it.
    pub async fn hibernate(&self, g: GroupId) {
        let Some(slot) = self.slot(g) else {
            return;
        };
        if self.stop_group(g, |_| Ok(())).await.0 {
            self.groups.mark_hibernated(g, !slot.fence.refused());
            tracing::debug!(group = g, "channel group hibernated");
        }
    }

    /// Stop group `g`'s instance here, if one runs, and commit `after` before the group can
    /// start again. The instance's fence closes (see `raft::Fence`) and a closed slot holds its
    /// place (requests for the group wait on it) until the instance stopped, every write it
    /// had queued left the writer (failed on the fence), and `after` committed. So two
    /// instances of a group never write at once, and a new one never reads state that an old
    /// write is still changing. Answers whether an instance ran, and what `after` answered.
    ///
    /// The stop runs as a task of its own: a caller that gives up (a timeout, a client gone)
    /// must not leave it half done, e.g. the slot free again with the delete still queued.
    pub(super) async fn stop_group<T: Send + 'static>(
        &self,
        g: GroupId,
        after: impl FnMut(&mut crate::store::WriteTxn<'_, '_>) -> crate::store::Result<T> + Send + 'static,
    ) -> (bool, crate::store::Result<T>) {
        debug_assert_ne!(g, META_GROUP, "the metadata group never stops");
        let node = self.clone();
        match tokio::spawn(async move { node.stop_group_now(g, after).await }).await {
            Ok(stopped) => stopped,
            Err(e) => (
                false,
                Err(crate::store::StoreError::Lmdb(format!("stopping group {g}: {e}"))),
            ),
        }
    }

    async fn stop_group_now<T: Send + 'static>(
        &self,
        g: GroupId,
        after: impl FnMut(&mut crate::store::WriteTxn<'_, '_>) -> crate::store::Result<T> + Send + 'static,
    ) -> (bool, crate::store::Result<T>) {
        // The stand-in removes the closed slot however this ends, a panic included.
        let (old, _standing_in) = self.groups.stand_in(g);
        let Some(old) = old else {
            return (false, self.store.write(after).await);
        };
        if old.fence.is_closed() {
            // Another stop of the group is under way (a hibernation during a drop): let it
            // finish first, so its write cannot commit after ours.
            drop(old.stopping.lock().await);
        }
        old.fence.close();
        let raft = old.raft.get().cloned();
        if let Some(raft) = &raft {
            let _ = raft.shutdown().await;
        }
        (raft.is_some(), self.store.write(after).await)
    }

    /// Milliseconds (unix) of the last client request for the group here, if it runs.
    pub(super) fn last_active(&self, g: GroupId) -> Option<u64> {
        self.groups.last_active(g)
    }

    /// Hibernate one group led here now: stop it here first, then on its other `replicas`
    /// (see `hibernate_idle_groups`).
    pub(super) async fn hibernate_led(&self, g: GroupId, replicas: &[NodeId]) {
        self.hibernate(g).await;
        let asks = replicas
            .iter()
            .filter(|n| **n != self.id)
            .map(|p| self.ask(*p, rpc::AppRpc::Hibernate(vec![g]), Duration::from_secs(2)));
        futures::future::join_all(asks).await;
    }

    /// The group's Raft if it runs here (never starts it).
    pub fn live_group(&self, g: GroupId) -> Option<Raft> {
        self.groups.live(g)
    }

    /// The running channel groups and their Rafts.
    pub fn live_groups(&self) -> Vec<(GroupId, Raft)> {
        self.groups.all_live()
    }

    /// A channel's group on this replica for a client request: started (and an election asked
    /// for, if it was hibernating) or initialized with its replica set if it never was.
    pub async fn channel_group(&self, rec: &ChannelRecord) -> Result<Raft> {
        Ok(self.wake_channel_group(rec).await?.0)
    }

    /// `channel_group`, and whether this call woke the group from hibernation here.
    pub(super) async fn wake_channel_group(&self, rec: &ChannelRecord) -> Result<(Raft, bool)> {
        let (raft, started) = self.group_started(rec.group_id).await?;
        if self.touch(rec.group_id) {
            quiet::renew_lease(&raft).await;
        }
        // The metrics of a group that just started may not be published yet (they show no
        // voters): only the core itself can say it holds no state. Asking it every time a
        // group's metrics show no voters costs a round trip only until it is initialized.
        let no_voters = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .next()
            .is_none();
        let uninitialized = no_voters
            && !raft
                .is_initialized()
                .await
                .map_err(|e| NodeError::Unavailable(format!("group {}: {e}", rec.group_id)))?;
        if started && !uninitialized {
            let slept_here = self.groups.take_hibernated(rec.group_id);
            // A group hibernated here with every write it queued stored started as leader if
            // it led (`raft::raft_config`): no campaign, only the lease to renew.
            let resumed = slept_here
                && raft
                    .with_raft_state(|st| st.server_state == openraft::ServerState::Leader)
                    .await
                    .unwrap_or(false);
            if resumed {
                quiet::renew_lease(&raft).await;
                return Ok((raft, true));
            }
            // A group this process put to sleep: hibernation is leader-driven and stops every
            // replica, so no leader runs anywhere; campaign at once (a pre-vote would wait out
            // the lease openraft grants a freshly started group: the election timer, ~650 ms).
            // A group not seen since this process started may have a live leader elsewhere:
            // pre-vote, so it is left alone. (A restarted group is never leader yet: leader
            // restore is off, see `raft_config`.)
            let _ = raft.trigger().elect(!slept_here).await;
            if slept_here {
                // The campaign takes one vote round; wait for it, so the request is served
                // here at once instead of bouncing off a candidate (NotLeader) to the others.
                let me = self.id;
                let _ = raft
                    .wait(Some(WAKE_ELECTION_WAIT))
                    .metrics(
                        |m| {
                            m.state == openraft::ServerState::Leader
                                || m.current_leader.is_some_and(|l| l != me)
                        },
                        "the woken group elected a leader",
                    )
                    .await;
                quiet::renew_lease(&raft).await;
            }
        }
        if uninitialized {
            let members: BTreeMap<NodeId, Peer> = rec
                .replicas
                .iter()
                .map(|id| {
                    (
                        *id,
                        Peer {
                            cluster_addr: self.transport.addr_of(*id).unwrap_or_default(),
                        },
                    )
                })
                .collect();
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(group = rec.group_id, error = %e, "channel group already initialized");
            }
        }
        Ok((raft, started && !uninitialized))
    }

    /// Keep the address book in step with the metadata group, and register this node's
    /// HTTP address (and, once the gateway listens, its gateway addresses) there once a
    /// leader exists.
    async fn maintain_membership(self) {
        let mut metrics = self.meta.metrics();
        let mut registered = false;
        // Whether this process saw itself in the *applied* metadata membership: only a
        // committed membership without it, seen after that, means it was removed (an effective
        // one may be an uncommitted entry a new leader truncates; a joining node's applied
        // membership lacks it until its admission is applied).
        let mut applied_member = false;
        loop {
            let membership = metrics.borrow_watched().membership_config.clone();
            let in_cluster = membership.membership().nodes().any(|(id, _)| *id == self.id);
            if in_cluster {
                self.joining.store(false, Ordering::Relaxed);
            }
            if !self.is_removed()
                && let Ok(state) = self
                    .store
                    .read(|r| crate::raft::state_machine::load_state(r, META_GROUP))
                    .await
            {
                let nodes: Vec<NodeId> = state.membership.membership().nodes().map(|(id, _)| *id).collect();
                if nodes.contains(&self.id) {
                    applied_member = true;
                } else if applied_member && !nodes.is_empty() {
                    self.mark_removed("the applied metadata membership no longer lists it")
                        .await;
                }
            }
            for (id, peer) in membership.membership().nodes() {
                if *id != self.id && !peer.cluster_addr.is_empty() {
                    self.transport.set_addr(*id, &peer.cluster_addr);
                }
            }
            if let Ok(gone) = self.store.read(|r| meta::decommissioned(r)).await {
                *self.decommissioned.write().expect("decommissioned lock poisoned") = gone;
            }
            if let Ok(nodes) = self.store.read(|r| meta::nodes(r)).await {
                for n in nodes.iter().filter(|n| n.id != self.id) {
                    self.transport.set_addr(n.id, &n.cluster_addr);
                }
                let me = NodeRecord {
                    id: self.id,
                    http_addr: self.http_addr.clone(),
                    cluster_addr: self.cluster_addr.clone(),
                };
                registered = nodes.contains(&me);
                if !registered
                    && in_cluster
                    && let Err(e) = self.meta_write(MetaCmd::RegisterNode(me)).await
                {
                    tracing::debug!(error = %e, "registering this node's addresses; will retry");
                }
            }
            if let Some(gateway) = self.gateway.get() {
                let id = self.id;
                let stored = self.store.read(move |r| meta::gateways(r)).await;
                let gateway_registered = stored.is_ok_and(|g| g.get(&id) == Some(gateway));
                registered &= gateway_registered;
                if !gateway_registered && in_cluster {
                    let cmd = MetaCmd::SetGateway {
                        node: id,
                        gateway: gateway.clone(),
                    };
                    if let Err(e) = self.meta_write(cmd).await {
                        tracing::debug!(error = %e, "registering this node's gateway; will retry");
                    }
                }
            }
            // Metrics change on every heartbeat: look at most every 200 ms.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let wait = if registered {
                Duration::from_secs(2)
            } else {
                Duration::ZERO
            };
            let _ = tokio::time::timeout(wait, metrics.changed()).await;
        }
    }

    /// Leaders stop their groups that saw no client request for `idle_timeout`, and the least
    /// recently used ones past `max_active`, all at once, then tell each other replica in one
    /// message which groups to stop: well within their election timeout, so they do not
    /// campaign (one by one, the last followers would time out and wake the group again).
    async fn hibernate_idle_groups(self) {
        let tick = (self.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::time::sleep(tick).await;
            let now = route::now_ms();
            let mut led = self.groups.live_unmigrating();
            let over = led.len().saturating_sub(self.max_active);
            led.retain(|(_, _, r)| r.metrics().borrow_watched().state == openraft::ServerState::Leader);
            led.sort_by_key(|(t, _, _)| *t);
            let idle_ms = self.idle_timeout.as_millis() as u64;
            let mut by_peer: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
            let mut stopping = Vec::new();
            for (i, (last, g, raft)) in led.into_iter().enumerate() {
                if now.saturating_sub(last) < idle_ms && i >= over {
                    continue;
                }
                let m = raft.metrics().borrow_watched().membership_config.clone();
                for (id, _) in m.membership().nodes().filter(|(id, _)| **id != self.id) {
                    by_peer.entry(*id).or_default().push(g);
                }
                stopping.push(g);
            }
            if stopping.is_empty() {
                continue;
            }
            // Stop here first: heartbeats sent after a follower stopped would start it again.
            futures::future::join_all(stopping.iter().map(|g| self.hibernate(*g))).await;
            let asks = by_peer
                .into_iter()
                .map(|(p, gs)| self.ask(p, rpc::AppRpc::Hibernate(gs), Duration::from_secs(2)));
            futures::future::join_all(asks).await;
            tracing::debug!(groups = stopping.len(), "hibernated idle channel groups");
        }
    }

    /// Stop the background tasks and every Raft group; the store flushes what is queued.
    pub async fn shutdown(&self) {
        self.tasks.lock().expect("tasks lock poisoned").abort_all();
        for (_, raft) in self.live_groups() {
            let _ = raft.shutdown().await;
        }
        let _ = self.meta.shutdown().await;
        self.store.shutdown().await;
    }
}

/// The cluster id: stored, else derived from `--init-nodes` (the same on every member), else
/// random for a self-bootstrapped single node; None for a `--seed` node until it adopts one.
async fn cluster_identity(store: &Store, cfg: &Config) -> anyhow::Result<Option<u64>> {
    if let Some(id) = store
        .read(|r| r.get_decoded::<u64>(Table::Local, b"cluster_id"))
        .await?
    {
        return Ok(Some(id));
    }
    let id = if !cfg.init_nodes.is_empty() {
        let mut members: Vec<String> = cfg
            .init_nodes
            .iter()
            .map(|(id, addr)| format!("{id}@{addr}"))
            .collect();
        members.sort();
        xxhash_rust::xxh3::xxh3_64(members.join(",").as_bytes())
    } else if cfg.seed.is_none() {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("random cluster id: {e}"))?;
        u64::from_le_bytes(b)
    } else {
        return Ok(None);
    };
    store
        .write(move |w| w.put(Table::Local, b"cluster_id", &encode(&id)))
        .await?;
    Ok(Some(id))
}

/// Refuse a data dir written by another node id or another format.
async fn check_identity(store: &Store, node_id: NodeId) -> anyhow::Result<()> {
    let (id, format) = store
        .read(|r| {
            Ok((
                r.get_decoded::<u64>(Table::Local, b"node_id")?,
                r.get_decoded::<u32>(Table::Local, b"format")?,
            ))
        })
        .await?;
    if let Some(format) = format {
        anyhow::ensure!(
            format == FORMAT_VERSION,
            "data dir has format {format}, this build reads {FORMAT_VERSION}{}",
            match format {
                0 | 1 => {
                    " (format 2 adds a checksum to every stored message and log entry; there is no in-place upgrade: run the build that wrote it, or build a new cluster)"
                }
                2 => {
                    " (format 3 keeps each message once, in the channel's Raft log; to upgrade, take a backup with the build that wrote it, `wkctl snapshot save FILE`, and restore it with this one, `wkctl snapshot restore FILE` (or `wknode --restore FILE`))"
                }
                _ => "",
            }
        );
    }
    match id {
        Some(id) if id != node_id => anyhow::bail!("data dir belongs to node {id}, not {node_id}"),
        Some(_) => Ok(()),
        None => {
            store
                .write(move |w| {
                    w.put(Table::Local, b"node_id", &encode(&node_id))?;
                    w.put(Table::Local, b"format", &encode(&FORMAT_VERSION))
                })
                .await?;
            Ok(())
        }
    }
}

/// The `local` row that says the `members` index holds every channel record.
const MEMBERS_INDEXED: &[u8] = b"members_indexed";

/// Build the `members` index (uid -> channels) from the channel records, once per data dir,
/// before any group starts: a data dir of an older build has channels but no index, and
/// conversations would miss them. The index is a function of the records, so every node
/// builds the same; writing a row twice is harmless.
async fn index_members_once(store: &Store) -> anyhow::Result<()> {
    store
        .write(|w| {
            if w.get(Table::Local, MEMBERS_INDEXED)?.is_some() {
                return Ok(());
            }
            for (_, v) in w.range(Table::Channels, &[], &[0xFF], usize::MAX, false)? {
                let rec: ChannelRecord = crate::store::decode(Table::Channels, &v)?;
                meta::index_channel(w, &rec)?;
            }
            w.put(Table::Local, MEMBERS_INDEXED, &[1])
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel created before the `members` index existed is indexed at the next start.
    #[tokio::test]
    async fn channels_of_an_older_build_are_indexed_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        let rec = ChannelRecord {
            key: crate::channel::ChannelKey {
                channel_id: "g1".into(),
                channel_type: wk_api::CHANNEL_TYPE_GROUP,
            },
            subscribers: ["alice".to_string(), "bob".to_string()].into(),
            group_id: 1,
            replicas: vec![1],
        };
        let k = rec.key.to_bytes();
        let v = encode(&rec);
        store
            .write(move |w| w.put(Table::Channels, &k, &v))
            .await
            .expect("write");
        index_members_once(&store).await.expect("index");
        let of = |uid: &'static str| store.read(move |r| meta::channels_of(r, uid));
        assert_eq!(of("alice").await.expect("read"), vec![rec.key.clone()]);
        assert_eq!(of("bob").await.expect("read"), vec![rec.key.clone()]);
        assert!(of("carol").await.expect("read").is_empty());
    }

    /// A format-2 data dir (messages stored twice) is refused with the way to upgrade it.
    #[tokio::test]
    async fn a_format_2_data_dir_is_refused_with_the_upgrade_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        store
            .write(|w| {
                w.put(Table::Local, b"node_id", &encode(&1u64))?;
                w.put(Table::Local, b"format", &encode(&2u32))
            })
            .await
            .expect("write");
        let err = check_identity(&store, 1).await.expect_err("format 2 is refused");
        let err = format!("{err:#}");
        assert!(err.contains("data dir has format 2, this build reads 3"), "{err}");
        assert!(
            err.contains("wkctl snapshot save") && err.contains("snapshot restore"),
            "{err}"
        );
        store
            .write(|w| w.put(Table::Local, b"format", &encode(&FORMAT_VERSION)))
            .await
            .expect("write");
        check_identity(&store, 1)
            .await
            .expect("the current format is read");
    }
}
