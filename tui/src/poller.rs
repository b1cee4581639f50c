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
//! It also performs the drills the operator confirmed ([`Poller::drill`], one task each):
//! posts the drill to the target node alone, writes probe messages to one channel meanwhile,
//! polls the affected channels' `/config` until each has another leader, and reports
//! [`Action::DrillStarted`] and [`Action::DrillDone`]. Each step is bounded by a timeout.
//!
//! And scale-outs ([`Poller::scale_out`]): start a local node through the launcher (demo
//! only), `POST /cluster/join` it, and report each step as [`Action::ScaleProgress`]; the
//! new node's metadata sync shows meanwhile in the Nodes pane (its applied index), the
//! backlog it creates in the Sync backlog pane.
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

use crate::app::{Action, Severity};
use crate::drill::{DrillKind, DrillPlan, DrillReport};
use crate::scale::{Launch, Launcher, ScaleRequest};
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

/// How long a drill waits for new leaders (plus the isolation time) before it gives up.
const DRILL_PATIENCE: Duration = Duration::from_secs(30);
/// Time between probe writes and leader checks while a drill runs.
const DRILL_STEP: Duration = Duration::from_millis(100);
/// Each probe write or leader check gives up after this long.
const DRILL_CALL: Duration = Duration::from_secs(1);
/// Prefix of the probe's client_msg_nos (it writes system messages, so they alone keep its
/// writes apart).
const PROBE_UID: &str = "wk-top-probe";

/// Performs `plan` and measures it: see the module doc. Never panics; every failure ends up
/// in the report's `error`.
pub async fn run_drill(client: Client, plan: DrillPlan, tx: mpsc::Sender<Action>) {
    let _ = tx
        .send(Action::DrillStarted {
            wall: SystemTime::now(),
            text: plan.kind.to_string(),
        })
        .await;
    let report = measure_drill(&client, &plan).await;
    let _ = tx
        .send(Action::DrillDone {
            wall: SystemTime::now(),
            report: Box::new(report),
        })
        .await;
}

async fn measure_drill(client: &Client, plan: &DrillPlan) -> DrillReport {
    let mut report = DrillReport {
        kind: plan.kind.clone(),
        elected: plan.affected.iter().map(|k| (k.clone(), None)).collect(),
        probe_writes: 0,
        probe_failures: 0,
        probe_window: None,
        error: None,
    };
    let target = match client.only(&client.node_url(&plan.target_http)) {
        Ok(t) => t,
        Err(e) => {
            report.error = Some(format!("bad node address {}: {e}", plan.target_http));
            return report;
        }
    };
    let (req, extra) = match &plan.kind {
        DrillKind::KillLeader { .. } | DrillKind::KillNode { .. } => {
            (wk_api::DrillReq::Crash, Duration::ZERO)
        }
        DrillKind::Isolate { secs, .. } => (
            wk_api::DrillReq::Isolate {
                peers: Vec::new(),
                duration_ms: secs * 1000,
            },
            Duration::from_secs(*secs),
        ),
        // The app runs a restart through the launcher (`run_restart`), never as a drill.
        DrillKind::Restart { node } => {
            report.error = Some(format!("node {node} is restarted by the demo, not by a drill"));
            return report;
        }
    };
    let node = plan.kind.node();
    let start = Instant::now();
    match tokio::time::timeout(DRILL_CALL * 2, target.drill(&req)).await {
        Ok(Ok(_)) => {}
        // A crashing node may drop the connection before it answers.
        Ok(Err(ClientError::Unreachable(_))) | Err(_) if req == wk_api::DrillReq::Crash => {}
        Ok(Err(ClientError::Api(e))) if e.error_code() == Some(wk_api::ErrorCode::Forbidden) => {
            report.error = Some(format!(
                "node {node} refuses drills (start it with --allow-drills)"
            ));
            return report;
        }
        Ok(Err(e)) => {
            report.error = Some(format!("node {node}: {e}"));
            return report;
        }
        Err(_) => {
            report.error = Some(format!("node {node} did not answer the drill"));
            return report;
        }
    }
    let deadline = start + DRILL_PATIENCE + extra;
    let mut first_fail: Option<Duration> = None;
    let mut last_fail: Option<Duration> = None;
    let mut seq = 0u64;
    loop {
        let step_at = Instant::now();
        if let Some(k) = &plan.probe {
            seq += 1;
            let req = wk_api::SendReq {
                header: Default::default(),
                client_msg_no: format!("{PROBE_UID}-{}-{seq}", start.elapsed().as_nanos()),
                // A system message: the probe is no member of the channel it writes to.
                from_uid: String::new(),
                channel_id: k.id.clone(),
                channel_type: k.ty,
                payload: "cHJvYmU=".into(),
            };
            let t0 = start.elapsed();
            let ok = matches!(
                tokio::time::timeout(DRILL_CALL, client.send(&req)).await,
                Ok(Ok(_))
            );
            report.probe_writes += 1;
            if !ok {
                report.probe_failures += 1;
                first_fail.get_or_insert(t0);
                last_fail = Some(start.elapsed());
            }
        }
        for (k, elected) in report.elected.iter_mut().filter(|(_, e)| e.is_none()) {
            if let Ok(Ok(c)) = tokio::time::timeout(DRILL_CALL, client.channel_config(&k.id, k.ty)).await
                && c.leader.is_some_and(|l| l != node)
            {
                *elected = Some(start.elapsed());
            }
        }
        let all_elected = report.elected.iter().all(|(_, e)| e.is_some());
        // Done once every channel has a new leader and the probe wrote again after its last
        // failure (a few writes, so a failure that is about to start is seen).
        let probe_settled = plan.probe.is_none()
            || (report.probe_writes >= 5 && last_fail.is_none_or(|f| f < start.elapsed() - DRILL_STEP));
        if (all_elected && probe_settled) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(DRILL_STEP.saturating_sub(step_at.elapsed())).await;
    }
    report.probe_window = first_fail.zip(last_fail).map(|(a, b)| b.saturating_sub(a));
    report
}

/// Performs a scale-out; see the module doc.
pub async fn run_scale(
    join_client: Client,
    launcher: Option<Launcher>,
    req: ScaleRequest,
    tx: mpsc::Sender<Action>,
) {
    let say = |severity: Severity, text: String, done: bool| {
        let tx = tx.clone();
        async move {
            let _ = tx
                .send(Action::ScaleProgress {
                    wall: SystemTime::now(),
                    severity,
                    text,
                    done,
                })
                .await;
        }
    };
    let (node_id, cluster_addr, http_addr) = match req {
        ScaleRequest::Admit {
            node_id,
            cluster_addr,
        } => (node_id, cluster_addr, String::new()),
        ScaleRequest::Local => {
            let Some(launch) = launcher else {
                say(Severity::Bad, "✗ scale-out: no local launcher".into(), true).await;
                return;
            };
            say(
                Severity::Info,
                "→ scale-out: starting a local wknode".into(),
                false,
            )
            .await;
            match launch(Launch::Next).await {
                Ok(l) => {
                    say(
                        Severity::Info,
                        format!(
                            "→ scale-out: node {} started (http {}, cluster {}), waiting to be admitted",
                            l.node_id, l.http_addr, l.cluster_addr
                        ),
                        false,
                    )
                    .await;
                    (l.node_id, l.cluster_addr, l.http_addr)
                }
                Err(e) => {
                    say(
                        Severity::Bad,
                        format!("✗ scale-out: could not start a node: {e}"),
                        true,
                    )
                    .await;
                    return;
                }
            }
        }
    };
    say(
        Severity::Info,
        format!("→ scale-out: admitting node {node_id} ({cluster_addr}); metadata sync shows in Nodes"),
        false,
    )
    .await;
    let join = wk_api::JoinReq {
        node_id,
        cluster_addr,
        http_addr,
        wait: true,
    };
    match join_client.join(&join).await {
        Ok(r) => {
            say(
                Severity::Good,
                format!(
                    "✓ node {} joined ({}): metadata synced in {} ms, {} active channel(s) moved, {} in the backlog",
                    r.node_id,
                    if r.voter { "voter" } else { "learner" },
                    r.metadata_ms,
                    r.active_migrated,
                    r.backlog
                ),
                true,
            )
            .await
        }
        Err(e) => say(Severity::Bad, format!("✗ scale-out: join of node {node_id} failed: {e}"), true).await,
    }
}

/// How long a restarted node may take to catch up before the dashboard says it did not.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// Restarts node `node` of the local cluster through the launcher (same ports and data dir)
/// and reports its catch-up in Events: the metadata entries it is behind the leader once it
/// answers, then the time from its ready line until its applied index reached the leader's
/// last index of that moment.
pub async fn run_restart(client: Client, launcher: Option<Launcher>, node: u64, tx: mpsc::Sender<Action>) {
    let say = |severity: Severity, text: String| {
        let tx = tx.clone();
        async move {
            let _ = tx
                .send(Action::RestartProgress {
                    wall: SystemTime::now(),
                    severity,
                    text,
                })
                .await;
        }
    };
    let Some(launch) = launcher else {
        say(
            Severity::Bad,
            format!("✗ restart of node {node}: no local launcher"),
        )
        .await;
        return;
    };
    say(
        Severity::Info,
        format!("→ restarting node {node} on its data dir"),
    )
    .await;
    if let Err(e) = launch(Launch::Restart(node)).await {
        say(Severity::Bad, format!("✗ restart of node {node}: {e}")).await;
        return;
    }
    let ready = Instant::now();
    let deadline = ready + CATCH_UP_LIMIT;
    let mut target: Option<u64> = None;
    loop {
        if let Ok(nodes) = client.nodes().await {
            let leader_last = nodes.meta_leader_last_index();
            let me = nodes.nodes.iter().find(|n| n.id == node && n.online);
            if let (Some(last), Some(me)) = (leader_last, me) {
                let want = match target {
                    Some(t) => t,
                    None => {
                        say(
                            Severity::Info,
                            format!(
                                "→ node {node} is up: {} metadata entries behind the leader ({} of {last} applied)",
                                last.saturating_sub(me.applied_index),
                                me.applied_index
                            ),
                        )
                        .await;
                        *target.insert(last)
                    }
                };
                if me.applied_index >= want {
                    say(
                        Severity::Good,
                        format!("✓ node {node} caught up in {} ms", ready.elapsed().as_millis()),
                    )
                    .await;
                    return;
                }
            }
        }
        if Instant::now() >= deadline {
            say(
                Severity::Bad,
                format!(
                    "✗ node {node} did not catch up within {}s",
                    CATCH_UP_LIMIT.as_secs()
                ),
            )
            .await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The background polling task; dropping the handle stops it and any drill it runs.
pub struct Poller {
    control: watch::Sender<Control>,
    now: Arc<Notify>,
    task: JoinHandle<()>,
    /// A clone of the polling client and sender, for drills.
    client: Client,
    tx: mpsc::Sender<Action>,
    /// Running or finished drill and scale-out tasks (aborted on drop).
    drills: Vec<JoinHandle<()>>,
}

impl Poller {
    /// Polls at once, then every `cfg.refresh`, sending each result to `tx` until it closes.
    pub fn spawn(client: Client, cfg: PollConfig, tx: mpsc::Sender<Action>) -> Poller {
        let (drill_client, drill_tx) = (client.clone(), tx.clone());
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
        Poller {
            control,
            now,
            task,
            client: drill_client,
            tx: drill_tx,
            drills: Vec::new(),
        }
    }

    /// Runs a confirmed scale-out in the background; its progress arrives as actions.
    pub fn scale_out(&mut self, req: ScaleRequest, launcher: Option<Launcher>, join_client: Client) {
        self.drills.retain(|t| !t.is_finished());
        self.drills.push(tokio::spawn(run_scale(
            join_client,
            launcher,
            req,
            self.tx.clone(),
        )));
    }

    /// Restarts a node the dashboard killed (local cluster); its catch-up arrives as actions.
    pub fn restart(&mut self, node: u64, launcher: Option<Launcher>) {
        self.drills.retain(|t| !t.is_finished());
        self.drills.push(tokio::spawn(run_restart(
            self.client.clone(),
            launcher,
            node,
            self.tx.clone(),
        )));
    }

    /// Runs a confirmed drill in the background; its progress arrives as actions.
    pub fn drill(&mut self, plan: DrillPlan) {
        self.drills.retain(|t| !t.is_finished());
        self.drills.push(tokio::spawn(run_drill(
            self.client.clone(),
            plan,
            self.tx.clone(),
        )));
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
        for t in &self.drills {
            t.abort();
        }
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
                retry_after: None,
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
