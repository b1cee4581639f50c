//! The only module that does I/O. Each refresh it asks the cluster (through `wk_api::Client`,
//! which fails over between endpoints) for:
//! - `GET /cluster/nodes`: every node's role, term, progress and channel counts;
//! - `GET /cluster/channels?limit=N`: the channel list with replica sets;
//! - `GET /cluster/channels/{id}/{type}/replicas` for a bounded number of channels: the ones
//!   the screen shows first (busiest), then a rotating share of the rest;
//! - `GET /cluster/backlog?limit=N`: the sync backlog per target node and the drain's state;
//!
//! and sends the result to the app as one [`Action::Snapshot`] (or [`Action::PollFailed`]).
//!
//! Invariant: a whole poll is bounded by [`PollConfig::deadline`], so a node that stops
//! answering (SIGSTOP, network loss) costs one deadline and turns into "unreachable", never
//! into a frozen screen: the UI loop runs separately and only receives finished snapshots.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use wk_api::{Client, ClientError};

use crate::app::Action;
use crate::snapshot::{Backlog, ChannelKey, Snapshot};

/// What to ask for and how long to wait.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Time between polls.
    pub refresh: Duration,
    /// `limit` for `GET /cluster/channels`: the dashboard lists at most this many channels.
    pub channel_limit: u64,
    /// At most this many replica polls per refresh (they fan out to the replicas' nodes).
    pub replica_budget: usize,
    /// How many replica polls run at once.
    pub concurrency: usize,
    /// A poll that takes longer fails as a whole ("no answer within ...").
    pub deadline: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            refresh: Duration::from_secs(1),
            channel_limit: 200,
            replica_budget: 48,
            concurrency: 8,
            deadline: Duration::from_secs(4),
        }
    }
}

/// Which channels to ask about this time: `focus` first, then the others from `*rotation`
/// on, wrapping, until `budget` is reached. Advances `*rotation` past the ones taken, so
/// every channel is polled within `len / budget` refreshes.
pub fn pick(
    all: &[ChannelKey],
    focus: &[ChannelKey],
    rotation: &mut usize,
    budget: usize,
) -> Vec<ChannelKey> {
    let mut out: Vec<ChannelKey> = focus
        .iter()
        .filter(|k| all.contains(k))
        .take(budget)
        .cloned()
        .collect();
    let rest: Vec<&ChannelKey> = all.iter().filter(|k| !out.contains(k)).collect();
    if rest.is_empty() {
        return out;
    }
    let start = *rotation % rest.len();
    let take = budget.saturating_sub(out.len()).min(rest.len());
    out.extend((0..take).map(|i| rest[(start + i) % rest.len()].clone()));
    *rotation = (start + take) % rest.len();
    out
}

/// One poll, bounded by `cfg.deadline`; any failure becomes an action the UI shows.
pub async fn poll_once(
    client: &Client,
    cfg: &PollConfig,
    focus: &[ChannelKey],
    rotation: &mut usize,
) -> Action {
    let at = Instant::now();
    let wall = SystemTime::now();
    match tokio::time::timeout(cfg.deadline, gather(client, cfg, focus, rotation, at, wall)).await {
        Ok(action) => action,
        Err(_) => Action::PollFailed {
            at,
            wall,
            error: format!("no answer within {:?}", cfg.deadline),
        },
    }
}

async fn gather(
    client: &Client,
    cfg: &PollConfig,
    focus: &[ChannelKey],
    rotation: &mut usize,
    at: Instant,
    wall: SystemTime,
) -> Action {
    let (nodes, channels, backlog) = tokio::join!(
        client.nodes(),
        client.channels(cfg.channel_limit),
        client.backlog(BACKLOG_ENTRIES)
    );
    let nodes = match nodes {
        Ok(n) => n,
        Err(e) => {
            return Action::PollFailed {
                at,
                wall,
                error: e.to_string(),
            };
        }
    };
    let channels = channels.map_err(|e| e.to_string());
    let all: Vec<ChannelKey> = channels
        .as_ref()
        .map(|l| {
            l.channels
                .iter()
                .map(|c| ChannelKey::new(c.channel_id.clone(), c.channel_type))
                .collect()
        })
        .unwrap_or_default();
    let keys = pick(&all, focus, rotation, cfg.replica_budget);
    let answers: Vec<_> = futures::stream::iter(keys)
        .map(|k| async move {
            let r = client.channel_replicas(&k.id, k.ty).await;
            (k, r)
        })
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    let mut replicas = Vec::new();
    let mut replica_errors = Vec::new();
    for (k, r) in answers {
        match r {
            Ok(r) => replicas.push(r),
            Err(e) => replica_errors.push((k, e.to_string())),
        }
    }
    Action::Snapshot(Box::new(Snapshot {
        at,
        wall,
        nodes,
        channels,
        replicas,
        replica_errors,
        backlog: backlog_of(backlog),
    }))
}

/// How many backlog entries to ask for (the pane shows per-target totals and the first few).
const BACKLOG_ENTRIES: u64 = 5;

/// A node without the endpoint answers 404: that is "not reported", not a failure.
fn backlog_of(r: Result<wk_api::Backlog, ClientError>) -> Backlog {
    match r {
        Ok(b) => Backlog::Report(b),
        Err(ClientError::Api(e)) if e.status == 404 => Backlog::NotReported,
        Err(e) => Backlog::Failed(e.to_string()),
    }
}

/// What the UI tells the poller between polls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    /// While frozen the poller does not poll (only `refresh_now` makes it).
    pub frozen: bool,
    /// Channels to ask about first (what the screen shows).
    pub focus: Vec<ChannelKey>,
}

/// The background polling task; dropping the handle stops it.
pub struct Poller {
    control: watch::Sender<Control>,
    now: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Poller {
    /// Polls at once, then every `cfg.refresh`, sending each result to `tx` until it closes.
    pub fn spawn(client: Client, cfg: PollConfig, tx: mpsc::Sender<Action>) -> Poller {
        let (control, control_rx) = watch::channel(Control::default());
        let now = Arc::new(Notify::new());
        let wake = now.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(cfg.refresh);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut rotation = 0;
            loop {
                let forced = tokio::select! {
                    _ = tick.tick() => false,
                    _ = wake.notified() => true,
                };
                let ctl = control_rx.borrow().clone();
                if ctl.frozen && !forced {
                    continue;
                }
                let action = poll_once(&client, &cfg, &ctl.focus, &mut rotation).await;
                if tx.send(action).await.is_err() {
                    break;
                }
                if forced {
                    tick.reset();
                }
            }
        });
        Poller { control, now, task }
    }

    /// Polls as soon as possible (the `r` key), even while frozen.
    pub fn refresh_now(&self) {
        self.now.notify_one();
    }

    /// Updates what the poller should do; a no-op when nothing changed.
    pub fn set(&self, c: Control) {
        self.control.send_if_modified(|old| {
            if *old == c {
                false
            } else {
                *old = c;
                true
            }
        });
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<ChannelKey> {
        names.iter().map(|n| ChannelKey::new(*n, 2)).collect()
    }

    #[test]
    fn backlog_404_means_not_reported() {
        let api = |status| {
            Err(ClientError::Api(wk_api::ApiError {
                status,
                msg: "x".into(),
                code: "x".into(),
            }))
        };
        assert_eq!(backlog_of(api(404)), Backlog::NotReported);
        assert!(matches!(backlog_of(api(503)), Backlog::Failed(e) if e.contains("503")));
        assert!(matches!(
            backlog_of(Err(ClientError::Unreachable("down".into()))),
            Backlog::Failed(_)
        ));
    }

    #[test]
    fn pick_takes_focus_then_rotates_through_the_rest() {
        let all = keys(&["a", "b", "c", "d", "e"]);
        let mut rot = 0;
        // Focus first (unknown channels ignored), then the rest in turn.
        assert_eq!(
            pick(&all, &keys(&["c", "zz"]), &mut rot, 3),
            keys(&["c", "a", "b"])
        );
        assert_eq!(pick(&all, &keys(&["c"]), &mut rot, 3), keys(&["c", "d", "e"]));
        assert_eq!(pick(&all, &keys(&["c"]), &mut rot, 3), keys(&["c", "a", "b"]));
        // Everything fits: everything, once.
        let mut rot = 3;
        assert_eq!(pick(&all, &[], &mut rot, 10).len(), 5);
        // Budget smaller than the focus.
        let mut rot = 0;
        assert_eq!(pick(&all, &keys(&["e", "d"]), &mut rot, 1), keys(&["e"]));
        assert_eq!(pick(&[], &keys(&["a"]), &mut rot, 4), Vec::<ChannelKey>::new());
    }
}
