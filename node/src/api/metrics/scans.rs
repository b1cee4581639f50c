//! What a scrape gathers beyond a glance, cached per node in the metadata Raft's extensions (so
//! the cache lives and dies with the node): the backlog view (refreshed in the background,
//! `BACKLOG_TTL`, waited for at most `BACKLOG_WAIT`), and the watcher of the metadata group's
//! elections and leader changes. The channel-table scan is the node's (`Node::channel_scan`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use openraft::async_runtime::WatchReceiver;
use wk_api::Backlog;

use crate::cluster::Node;
use crate::raft::NodeId;

/// How long a backlog view is reused before a scrape asks for a fresh one.
const BACKLOG_TTL: Duration = Duration::from_secs(10);
/// How long a scrape waits for a backlog refresh before serving the previous view.
const BACKLOG_WAIT: Duration = Duration::from_millis(1500);

/// Per-node state of the exporter, kept in the metadata Raft's extensions.
#[derive(Clone, Default)]
pub(super) struct MetricsState(pub(super) Arc<StateInner>);

#[derive(Default)]
pub(super) struct StateInner {
    /// Set once the metadata watcher runs.
    watching: AtomicBool,
    /// Terms the metadata group moved through since the watcher started (one per election).
    pub(super) elections: AtomicU64,
    /// New (term, leader) pairs seen since the watcher started.
    pub(super) leader_changes: AtomicU64,
    /// std mutex: held only to read or replace the cached view and its refresh handle.
    backlog: Mutex<BacklogCache>,
}

type Pending = Shared<BoxFuture<'static, ()>>;

#[derive(Default)]
struct BacklogCache {
    /// The last view that could be built, and when.
    view: Option<(Instant, Arc<Backlog>)>,
    /// When the last refresh started (failed ones too: a failing view is not retried per scrape).
    attempted: Option<Instant>,
    /// The refresh in flight, if any.
    pending: Option<Pending>,
}

/// Start the metadata watcher once per node.
pub(super) fn watch_meta(node: &Node, state: &MetricsState) {
    if state.0.watching.swap(true, Ordering::Relaxed) {
        return;
    }
    let mut rx = node.meta.metrics();
    let state = state.clone();
    // Ends when the metadata group stops (its metrics sender is dropped).
    tokio::spawn(async move {
        let mut term = rx.borrow_and_update().current_term;
        let mut leadership: Option<(u64, NodeId)> = {
            let m = rx.borrow_watched();
            m.current_leader.map(|l| (m.current_term, l))
        };
        while rx.changed().await.is_ok() {
            let (t, leader) = {
                let m = rx.borrow_and_update();
                (m.current_term, m.current_leader)
            };
            if t > term {
                state.0.elections.fetch_add(t - term, Ordering::Relaxed);
                term = t;
            }
            if let Some(l) = leader
                && leadership != Some((t, l))
            {
                if leadership.is_some() {
                    state.0.leader_changes.fetch_add(1, Ordering::Relaxed);
                }
                leadership = Some((t, l));
            }
        }
    });
}

/// The backlog view and its age: refreshed in the background when older than `BACKLOG_TTL`,
/// waited for at most `BACKLOG_WAIT`.
pub(super) async fn cached_backlog(node: &Node, state: &MetricsState) -> Option<(Duration, Arc<Backlog>)> {
    let pending = {
        let mut c = state.0.backlog.lock().expect("metrics backlog lock poisoned");
        // A refresh whose task died (it cannot clear `pending` itself) is forgotten.
        if c.pending.as_ref().is_some_and(|p| p.peek().is_some()) {
            c.pending = None;
        }
        let due = c.attempted.is_none_or(|at| at.elapsed() >= BACKLOG_TTL);
        if due && c.pending.is_none() {
            c.attempted = Some(Instant::now());
            let (node, state) = (node.clone(), state.clone());
            let task = tokio::spawn(async move {
                let view = node.backlog_view(0).await;
                let mut c = state.0.backlog.lock().expect("metrics backlog lock poisoned");
                match view {
                    Ok(v) => c.view = Some((Instant::now(), Arc::new(v))),
                    Err(e) => tracing::debug!(error = %e, "metrics: building the backlog view"),
                }
                c.pending = None;
            });
            c.pending = Some(task.map(|_| ()).boxed().shared());
        }
        c.pending.clone()
    };
    if let Some(p) = pending {
        let _ = tokio::time::timeout(BACKLOG_WAIT, p).await;
    }
    let c = state.0.backlog.lock().expect("metrics backlog lock poisoned");
    c.view.as_ref().map(|(at, v)| (at.elapsed(), v.clone()))
}
