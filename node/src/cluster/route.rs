//! Routing: take a request on any node and get it served by the right group leader, retrying
//! across replicas and elections until a deadline. Retries are safe because every message
//! carries its idempotency key and ids fixed before the first attempt.

use openraft::async_runtime::WatchReceiver;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Node;
use super::rpc::{AppReply, AppRpc};
use crate::channel::ChannelKey;
use crate::error::{NodeError, Result};
use crate::meta::{self, ChannelRecord, MetaCmd, MetaResp, SenderLists};
use crate::raft::network::{CallError, Reply, Rpc};
use crate::raft::{GroupId, META_GROUP, NodeId};

/// How long a client request may take before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// One forwarding attempt may take this long: a leader that went silent (isolated, paused)
/// must not eat the whole request deadline while the others elect a new one.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Rows of the local metadata copy (channel records, sender lists), valid while the metadata
/// group's applied index stays where it was when they were read. Any metadata change empties
/// it: it exists for the steady state, where every send would otherwise cost LMDB reads off
/// the runtime.
pub(super) struct MetaCache<V> {
    /// (applied index the values were read at or after, values). std mutex: a lookup or an
    /// insert, nothing slow under it.
    inner: Mutex<(u64, HashMap<ChannelKey, V>)>,
}

impl<V> Default for MetaCache<V> {
    fn default() -> Self {
        MetaCache {
            inner: Mutex::new((0, HashMap::new())),
        }
    }
}

/// Past this many values a cache starts over (it holds the channels in use, not all).
const META_CACHE_MAX: usize = 100_000;

impl<V: Clone> MetaCache<V> {
    fn get(&self, key: &ChannelKey, applied: u64) -> Option<V> {
        let mut inner = self.inner.lock().expect("metadata cache lock poisoned");
        if inner.0 != applied {
            *inner = (applied, HashMap::new());
            return None;
        }
        inner.1.get(key).cloned()
    }

    /// Remember `value` for `key`, read after the metadata had applied `applied`.
    fn put(&self, key: &ChannelKey, value: &V, applied: u64) {
        let mut inner = self.inner.lock().expect("metadata cache lock poisoned");
        if inner.0 != applied {
            return;
        }
        if inner.1.len() >= META_CACHE_MAX {
            inner.1.clear();
        }
        inner.1.insert(key.clone(), value.clone());
    }
}

/// One value computed from a whole table of the local metadata copy (a scan of the channel
/// table), kept while its key stays: the metadata's applied index ([`Node::meta_applied`]) and
/// whatever else the value depends on. Dashboards and scrapers poll such values every second.
pub(super) struct MetaMemo<K, V>(Mutex<Option<(K, Arc<V>)>>);

impl<K, V> Default for MetaMemo<K, V> {
    fn default() -> Self {
        MetaMemo(Mutex::new(None))
    }
}

impl<K: PartialEq, V> MetaMemo<K, V> {
    /// The value kept for `key`, else what `read` returns, kept for `key`. Take the key before
    /// reading: a value read after a newer apply is then kept under the older index, which
    /// the next call finds stale; never the other way round.
    pub(super) async fn get_or_read(&self, key: K, read: impl Future<Output = Result<V>>) -> Result<Arc<V>> {
        if let Some((at, value)) = self.0.lock().expect("memo lock poisoned").as_ref()
            && *at == key
        {
            return Ok(value.clone());
        }
        let value = Arc::new(read.await?);
        *self.0.lock().expect("memo lock poisoned") = Some((key, value.clone()));
        Ok(value)
    }
}

impl Node {
    /// The metadata group's applied index on this node, as its state machine set it before
    /// answering (openraft's metrics report it later: a cache keyed on those served a record
    /// older than a write already answered).
    pub(super) fn meta_applied(&self) -> u64 {
        self.meta_applied.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Serve `rpc` on the leader of group `g`, trying `replicas` until `deadline`.
    pub(super) async fn route(
        &self,
        g: GroupId,
        replicas: &[NodeId],
        rpc: AppRpc,
        deadline: Instant,
    ) -> Result<AppReply> {
        if replicas.is_empty() {
            return Err(NodeError::Unavailable(format!("group {g} has no replicas")));
        }
        let mut hint = self.hints.lock().expect("hints lock poisoned").get(&g).copied();
        let mut next = 0usize;
        let mut last_err = String::from("no replica answered");
        let mut misses = 0usize;
        let mut asked_again = false;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(NodeError::Unavailable(format!("group {g}: {last_err}")));
            }
            let target = hint.take().unwrap_or_else(|| {
                next += 1;
                replicas[(next - 1) % replicas.len()]
            });
            let reply = if target == self.id {
                self.serve_app(rpc.clone()).await
            } else {
                let bytes = crate::store::encode(&rpc);
                let ttl = if rpc.is_quick() {
                    (deadline - now).min(ATTEMPT_TIMEOUT)
                } else {
                    deadline - now
                };
                match self.transport.call(target, Rpc::App(bytes), ttl).await {
                    Ok(Reply::App(b)) => postcard::from_bytes(&b)
                        .unwrap_or_else(|e| AppReply::Err(NodeError::Internal(format!("bad reply: {e}")))),
                    Ok(other) => AppReply::Err(NodeError::Internal(format!("unexpected reply {other:?}"))),
                    Err(e @ (CallError::Unreachable(..) | CallError::Timeout(_))) => {
                        AppReply::Err(NodeError::Unavailable(e.to_string()))
                    }
                    Err(e @ CallError::Remote(..)) => AppReply::Err(NodeError::Internal(e.to_string())),
                }
            };
            match reply {
                AppReply::Err(NodeError::NotLeader { leader_hint }) => {
                    // A replica that names itself won an election while it waited (a group
                    // woken by this very request): ask it again, once per request.
                    let again = leader_hint == Some(target) && !std::mem::replace(&mut asked_again, true);
                    hint = leader_hint.filter(|h| replicas.contains(h) && (*h != target || again));
                    last_err = format!("node {target} is not the leader");
                }
                AppReply::Err(NodeError::Unavailable(msg)) => last_err = msg,
                // A corrupt replica serves nothing of the group; another one may.
                AppReply::Err(e @ NodeError::Corrupt(_)) => last_err = e.to_string(),
                other => {
                    self.hints.lock().expect("hints lock poisoned").insert(g, target);
                    return Ok(other);
                }
            }
            self.hints.lock().expect("hints lock poisoned").remove(&g);
            if hint.is_none() {
                misses += 1;
                // A full round without a leader: an election is under way, give it a moment.
                if misses.is_multiple_of(replicas.len()) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    pub(super) fn meta_voters(&self) -> Vec<NodeId> {
        let m = self.meta.metrics().borrow_watched().membership_config.clone();
        let mut voters: Vec<NodeId> = m.membership().voter_ids().collect();
        // Try the known leader first.
        if let Some(l) = self.meta.metrics().borrow_watched().current_leader {
            voters.sort_by_key(|v| *v != l);
        }
        voters
    }

    pub async fn meta_write(&self, cmd: MetaCmd) -> Result<MetaResp> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        self.route(META_GROUP, &self.meta_voters(), AppRpc::MetaWrite(cmd), deadline)
            .await?
            .typed()
    }

    /// The channel's record: from the local copy of the metadata, else from the metadata
    /// leader (which creates it first when `create`).
    pub async fn resolve_channel(
        &self,
        key: &ChannelKey,
        create: bool,
    ) -> Result<Option<Arc<ChannelRecord>>> {
        let applied = self.meta_applied();
        if let Some(rec) = self.channel_cache.get(key, applied) {
            return Ok(Some(rec));
        }
        let k = key.clone();
        if let Some(rec) = self.store.read(move |r| meta::get_channel(r, &k)).await? {
            let rec = Arc::new(rec);
            self.channel_cache.put(key, &rec, applied);
            return Ok(Some(rec));
        }
        if create {
            let cmd = MetaCmd::EnsureChannel {
                key: key.clone(),
                replication: self.replication,
            };
            return match self.meta_write(cmd).await? {
                MetaResp::Channel(rec) => Ok(Some(Arc::new(rec))),
                other => Err(NodeError::Internal(format!("unexpected {other:?}"))),
            };
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        self.route(
            META_GROUP,
            &self.meta_voters(),
            AppRpc::GetChannel(key.clone()),
            deadline,
        )
        .await?
        .typed::<Option<ChannelRecord>>()
        .map(|rec| rec.map(Arc::new))
    }

    /// A channel's sender lists, from the local copy of the metadata only (`meta::permit`).
    pub async fn sender_lists(&self, key: &ChannelKey) -> Result<SenderLists> {
        let applied = self.meta_applied();
        if let Some(lists) = self.lists_cache.get(key, applied) {
            return Ok(lists);
        }
        let k = key.clone();
        let lists = self.store.read(move |r| meta::sender_lists(r, &k)).await?;
        self.lists_cache.put(key, &lists, applied);
        Ok(lists)
    }

    /// Ask `target` (or this node) an app request, for status probes.
    pub async fn ask(&self, target: NodeId, rpc: AppRpc, ttl: Duration) -> Result<AppReply> {
        if target == self.id {
            return Ok(self.serve_app(rpc).await);
        }
        match self
            .transport
            .call(target, Rpc::App(crate::store::encode(&rpc)), ttl)
            .await
        {
            Ok(Reply::App(b)) => {
                postcard::from_bytes(&b).map_err(|e| NodeError::Internal(format!("bad reply: {e}")))
            }
            Ok(other) => Err(NodeError::Internal(format!("unexpected reply {other:?}"))),
            Err(e) => Err(NodeError::Unavailable(e.to_string())),
        }
    }
}
