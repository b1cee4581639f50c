//! All dashboard state and the one place it changes: [`App::update`]. It does no I/O and
//! reads no clock: time arrives in actions (`Tick(now)`, a snapshot's `at`/`wall`), so every
//! state, and every screen rendered from it, is reproducible in tests. What the state wants
//! done outside (quit, poll now, run a drill, start a node) `update` returns as [`Effect`]s,
//! which the run loop performs (gitui's shape).
//!
//! Invariants:
//! - The last good cluster view is kept while polls fail; the screen marks it stale (with its
//!   age) instead of going blank or freezing.
//! - While frozen, no snapshot or failure changes the data (`r` lets exactly one through).
//! - Events are derived only by diffing consecutive snapshots, so they appear once each.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use wk_api::{Agreement, ChannelReplicas, NodeStatus, NodesResp, Role};

use crate::drill::{AFFECTED_MAX, DrillKind, DrillPlan, DrillReport};
use crate::event::Key;
use crate::scale::{ScaleRequest, parse_member};
use crate::snapshot::{Backlog, ChannelKey, Snapshot};

/// Everything that can change the dashboard's state.
#[derive(Debug, Clone)]
pub enum Action {
    /// A new cluster view from the poller.
    Snapshot(Box<Snapshot>),
    /// The poller could not get a view (every endpoint failed or timed out).
    PollFailed {
        at: Instant,
        wall: SystemTime,
        error: String,
    },
    /// The clock moved; the data's age and staleness are computed against this.
    Tick(Instant),
    /// A key press; what it means depends on the mode (help, filter, details, normal).
    Key(Key),
    /// Nothing changed but the screen must be redrawn (terminal resized).
    Redraw,
    /// The poller sent a confirmed drill to its node (or is about to): the drill window opens.
    DrillStarted { wall: SystemTime, text: String },
    /// The drill ended: what it measured. The drill window closes.
    DrillDone {
        wall: SystemTime,
        report: Box<DrillReport>,
    },
    /// A step of a node restart (started, entries behind, caught up): a line in Events.
    RestartProgress {
        wall: SystemTime,
        severity: Severity,
        text: String,
    },
    /// A step of a running scale-out (node started, join sent, joined); `done` ends it.
    ScaleProgress {
        wall: SystemTime,
        severity: Severity,
        text: String,
        done: bool,
    },
}

/// What [`App::update`] asks the run loop to do: the only way the state asks for I/O or an
/// exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Stop the dashboard.
    Quit,
    /// Poll now instead of at the next refresh.
    Refresh,
    /// Run this confirmed drill (the poller sends it to its node).
    Drill(DrillPlan),
    /// Start or admit a node (the poller does it, through the launcher for a local cluster).
    ScaleOut(ScaleRequest),
    /// Start node N again on its data dir and follow its catch-up (local cluster only).
    Restart(u64),
}

/// The panes `Tab` cycles through, in screen order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Nodes,
    Throughput,
    Channels,
    Events,
    Backlog,
}

impl Pane {
    pub const ALL: [Pane; 5] = [
        Pane::Nodes,
        Pane::Throughput,
        Pane::Channels,
        Pane::Events,
        Pane::Backlog,
    ];

    fn index(self) -> usize {
        Pane::ALL
            .iter()
            .position(|p| *p == self)
            .expect("every pane is in ALL")
    }

    fn next(self) -> Pane {
        Pane::ALL[(self.index() + 1) % Pane::ALL.len()]
    }

    fn prev(self) -> Pane {
        Pane::ALL[(self.index() + Pane::ALL.len() - 1) % Pane::ALL.len()]
    }
}

/// What the keyboard is talking to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// The key help overlay.
    Help,
    /// Typing the channel filter after `/`.
    Filter,
    /// The replica table of the selected channel.
    Detail,
    /// The failover drill menu (`d`).
    DrillMenu,
    /// "Really run this drill? y/n" for [`App::drill_pending`].
    DrillConfirm,
    /// "Start a local node and admit it? y/n" (`s` with a local cluster).
    ScaleConfirm,
    /// Typing the `ID@ADDR` of a node to admit (`s` with a remote cluster).
    ScaleInput,
}

/// The drill menu's entries, in order; keys `1`..`4` pick them directly.
pub const DRILL_MENU: [&str; 4] = [
    "kill the leader of the selected channel",
    "kill the selected node (Nodes pane)",
    "isolate the selected node for N seconds",
    "restart the selected killed node (demo)",
];

/// The isolate drill's default length and bounds (`+`/`-` in the menu change it by 5 s).
pub const ISOLATE_SECS_DEFAULT: u64 = 10;
const ISOLATE_SECS_MAX: u64 = 120;

/// Columns the channel table sorts by; keys `1`..`5` pick them, the same key again reverses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortColumn {
    Channel,
    Rate,
    Seq,
    Leader,
    Lag,
}

impl SortColumn {
    pub const ALL: [SortColumn; 5] = [
        SortColumn::Channel,
        SortColumn::Rate,
        SortColumn::Seq,
        SortColumn::Leader,
        SortColumn::Lag,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SortColumn::Channel => "channel",
            SortColumn::Rate => "msg/s",
            SortColumn::Seq => "seq",
            SortColumn::Leader => "leader",
            SortColumn::Lag => "lag",
        }
    }

    /// Numbers (rates, seqs, lags) sort biggest first by default, names alphabetically.
    fn default_descending(self) -> bool {
        matches!(self, SortColumn::Rate | SortColumn::Seq | SortColumn::Lag)
    }
}

/// How bad an event is; the UI pairs each with a symbol, not just a colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Good,
    Warn,
    Bad,
}

/// One line in the Events pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEntry {
    /// Wall-clock time of the snapshot that revealed it.
    pub wall: SystemTime,
    pub severity: Severity,
    pub text: String,
}

/// A node's state as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Up,
    /// Listed, but did not answer the status probe.
    Down,
    /// We have no fresh data at all (polls failing or old): the last view is shown as is.
    Stale,
}

/// A channel's overall verdict, worst first in [`ChannelHealth::rank`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelHealth {
    /// Replicas that applied the same messages report different checksums.
    Diverged,
    NoLeader,
    /// The replica poll failed.
    Error,
    /// A replica is offline.
    ReplicaDown,
    /// A replica is behind by more than [`LAG_WARN_ENTRIES`] or silent for [`ACK_WARN_MS`].
    Lagging,
    Ok,
    /// No replica runs the group (hibernated after idling; wakes on the next request).
    Hibernated,
    /// Not polled yet (large clusters are polled a share at a time).
    Unpolled,
}

/// Lag (entries) from which a replica counts as lagging.
pub const LAG_WARN_ENTRIES: u64 = 100;
/// Milliseconds without an ack from which a replica counts as lagging.
pub const ACK_WARN_MS: u64 = 1_000;

/// One channel in the Channels pane.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRow {
    pub key: ChannelKey,
    /// The replica set from the channel list (the first is the preferred leader).
    pub replicas: Vec<u64>,
    /// The last replica poll, if any: roles, lag, acks, seqs, checksums.
    pub status: Option<ChannelReplicas>,
    /// The highest message seq seen and when: the next sample's rate is computed from it.
    pub seq_sample: Option<(u64, Instant)>,
    /// Messages per second between the last two samples; None until there are two.
    pub rate: Option<f64>,
    /// Why the last replica poll failed, cleared by the next good one.
    pub error: Option<String>,
}

impl ChannelRow {
    fn new(key: ChannelKey, replicas: Vec<u64>) -> ChannelRow {
        ChannelRow {
            key,
            replicas,
            status: None,
            seq_sample: None,
            rate: None,
            error: None,
        }
    }

    pub fn leader(&self) -> Option<u64> {
        self.status.as_ref().and_then(|s| s.leader)
    }

    /// The highest message seq any online replica applied.
    pub fn seq(&self) -> Option<u64> {
        self.status.as_ref().map(ChannelReplicas::top_seq)
    }

    /// The largest lag (entries) of any replica, as the leader reports it.
    pub fn max_lag(&self) -> Option<u64> {
        self.status.as_ref().and_then(ChannelReplicas::max_lag)
    }

    pub fn health(&self) -> ChannelHealth {
        if self.error.is_some() {
            return ChannelHealth::Error;
        }
        let Some(s) = &self.status else {
            return ChannelHealth::Unpolled;
        };
        if let Agreement::Diverged(_) = s.agreement() {
            return ChannelHealth::Diverged;
        }
        if s.leader.is_none() {
            return if s.is_hibernated() {
                ChannelHealth::Hibernated
            } else {
                ChannelHealth::NoLeader
            };
        }
        if s.replicas.iter().any(|r| !r.online) {
            return ChannelHealth::ReplicaDown;
        }
        let lagging = s.replicas.iter().any(|r| {
            r.lag.is_some_and(|l| l > LAG_WARN_ENTRIES) || r.last_ack_ms.is_some_and(|a| a > ACK_WARN_MS)
        });
        if lagging {
            ChannelHealth::Lagging
        } else {
            ChannelHealth::Ok
        }
    }
}

/// Settings fixed for the dashboard's lifetime.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often the poller refreshes; data older than three of these is stale.
    pub refresh: Duration,
    /// Shown in the header, e.g. `demo: {nodes} local node(s)`; `{nodes}` becomes the number of
    /// nodes in the latest view (`App::title`).
    pub title: String,
    /// The endpoints polled, for the header.
    pub endpoint: String,
    /// The cluster is local (`wkctl demo`): `s` starts a node instead of asking for one.
    pub local_scale: bool,
}

/// How many throughput samples (one per snapshot) the sparkline keeps.
const THROUGHPUT_SAMPLES: usize = 300;
/// How many events are kept.
const EVENTS_KEPT: usize = 500;
/// A channel whose leader changed: key, old and new leader, whether it is now hibernated.
type LeaderChange = (ChannelKey, Option<u64>, Option<u64>, bool);

/// How many backlog samples the observed drain rate spans.
pub const BACKLOG_RATE_WINDOW: usize = 10;
/// More channel leader changes than this in one snapshot are summarised in one event.
const CHANNEL_EVENTS_PER_SNAPSHOT: usize = 3;

/// The cluster as last seen: what the header and the Nodes pane show.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// The last good node view, kept while polls fail so the screen does not go blank.
    pub view: Option<NodesResp>,
    /// When `view` was taken (monotonic, for its age).
    pub taken_at: Option<Instant>,
    /// Since when each listed node has been seen offline (for "down 12s").
    pub down_since: HashMap<u64, Instant>,
    /// The last poll error, cleared by the next good snapshot.
    pub last_error: Option<String>,
}

/// The Nodes pane's own state.
#[derive(Debug, Default)]
pub struct NodesPane {
    /// Index into the nodes sorted by id.
    pub sel: usize,
}

/// The Channels pane: the rows and how they are selected, filtered and sorted.
#[derive(Debug)]
pub struct ChannelsPane {
    /// Channels in list order (by key); the UI sorts and filters a view of them.
    pub rows: BTreeMap<ChannelKey, ChannelRow>,
    /// `total` from the last channel list (may exceed the rows when the list is limited).
    pub total: u64,
    /// Why the last channel list failed, if it did.
    pub error: Option<String>,
    /// The selected channel, by key so it stays put while rows re-sort.
    pub sel: Option<ChannelKey>,
    /// Channel filter (case-insensitive substring of `id/type`).
    pub filter: String,
    pub sort: SortColumn,
    pub sort_desc: bool,
}

impl Default for ChannelsPane {
    fn default() -> ChannelsPane {
        ChannelsPane {
            rows: BTreeMap::new(),
            total: 0,
            error: None,
            sel: None,
            filter: String::new(),
            sort: SortColumn::Rate,
            sort_desc: true,
        }
    }
}

/// The Throughput pane: cluster messages/s over time, with the drill markers under it.
#[derive(Debug, Default)]
pub struct ThroughputPane {
    /// Cluster messages/s, one sample per snapshot, oldest first.
    pub samples: VecDeque<u64>,
    /// Per sample: whether a drill ran when it was taken (the marker row).
    pub drill_marks: VecDeque<bool>,
}

/// The Backlog pane: the sync backlog and how its drain moves.
#[derive(Debug, Default)]
pub struct BacklogPane {
    /// The sync backlog as last reported.
    pub report: Backlog,
    /// Backlog totals (channels) over time, oldest first: the sparkline and the drain rate.
    pub samples: VecDeque<(Instant, u64)>,
    /// When the backlog total last changed: a running drain that stops moving is "stalled".
    pub changed_at: Option<Instant>,
    /// Set once the current stall has been reported as an event.
    pub stall_reported: bool,
}

/// The Events pane.
#[derive(Debug, Default)]
pub struct EventsPane {
    /// Newest last; the UI shows them newest first.
    pub entries: VecDeque<EventEntry>,
    /// How many events from the newest the pane is scrolled down.
    pub scroll: usize,
}

/// The failover drills (`d`): the menu, the prompt, the one running and the last result.
#[derive(Debug)]
pub struct DrillState {
    /// Which drill menu entry is highlighted.
    pub choice: usize,
    /// How long the isolate drill lasts.
    pub isolate_secs: u64,
    /// The drill the confirmation prompt asks about.
    pub pending: Option<DrillPlan>,
    /// The drill in progress (one at a time), until its report arrives.
    pub running: Option<DrillPlan>,
    /// The last drill's measurements, shown in the Throughput pane.
    pub last: Option<DrillReport>,
    /// Nodes a drill of this dashboard crashed and nobody restarted since: what "restart the
    /// selected node" may start (local demo only).
    pub killed: std::collections::BTreeSet<u64>,
}

impl Default for DrillState {
    fn default() -> DrillState {
        DrillState {
            choice: 0,
            isolate_secs: ISOLATE_SECS_DEFAULT,
            pending: None,
            running: None,
            last: None,
            killed: Default::default(),
        }
    }
}

/// Scale-out (`s`).
#[derive(Debug, Default)]
pub struct ScaleState {
    /// What is typed after `s` against a remote cluster (`ID@HOST:PORT`).
    pub input: String,
    /// A scale-out is in progress (one at a time), until its last progress step.
    pub running: bool,
}

/// The dashboard: its state grouped per pane (each readable alone), what the keyboard talks
/// to, and the effects the current `update` asks for.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    /// The latest clock reading (from `Tick`): ages are computed against it.
    pub now: Instant,
    pub cluster: ClusterView,
    pub nodes_pane: NodesPane,
    pub channels: ChannelsPane,
    pub throughput: ThroughputPane,
    pub backlog: BacklogPane,
    pub events: EventsPane,
    pub drill: DrillState,
    pub scale: ScaleState,
    /// Which pane `Tab`, the arrows and `Enter` talk to.
    pub focus: Pane,
    pub mode: Mode,
    /// While frozen, snapshots and failures are ignored so the operator can read the screen.
    pub frozen: bool,
    /// Set by `r` while frozen: the next snapshot is applied anyway.
    pub accept_one: bool,
    /// A one-line message for the footer (e.g. "not available yet"), cleared by the next key.
    pub notice: Option<String>,
    /// What the current `update` asks for; handed out (and emptied) when it returns.
    effects: Vec<Effect>,
}

impl App {
    pub fn new(config: Config, now: Instant) -> App {
        App {
            config,
            now,
            cluster: ClusterView::default(),
            nodes_pane: NodesPane::default(),
            channels: ChannelsPane::default(),
            throughput: ThroughputPane::default(),
            backlog: BacklogPane::default(),
            events: EventsPane::default(),
            drill: DrillState::default(),
            scale: ScaleState::default(),
            focus: Pane::Channels,
            mode: Mode::Normal,
            frozen: false,
            accept_one: false,
            notice: None,
            effects: Vec::new(),
        }
    }

    /// Applies `action`; answers what the run loop must do now.
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        self.apply_action(action);
        std::mem::take(&mut self.effects)
    }

    fn apply_action(&mut self, action: Action) {
        match action {
            Action::Snapshot(s) => {
                if self.frozen && !self.accept_one {
                    return;
                }
                self.accept_one = false;
                self.apply(*s);
            }
            Action::PollFailed { at, wall, error } => {
                if self.frozen && !self.accept_one {
                    return;
                }
                self.accept_one = false;
                if self.cluster.last_error.is_none() {
                    self.push_event(
                        wall,
                        Severity::Bad,
                        format!("✗ cannot reach the cluster: {error}"),
                    );
                }
                self.now = self.now.max(at);
                self.cluster.last_error = Some(error);
            }
            Action::Tick(now) => self.now = self.now.max(now),
            Action::Key(k) => self.on_key(k),
            Action::Redraw => {}
            Action::DrillStarted { wall, text } => {
                self.push_event(wall, Severity::Warn, format!("⚡ drill started: {text}"))
            }
            Action::RestartProgress { wall, severity, text } => self.push_event(wall, severity, text),
            Action::DrillDone { wall, report } => {
                let sev = if report.error.is_some() || report.all_elected().is_none() {
                    Severity::Bad
                } else {
                    Severity::Good
                };
                self.push_event(wall, sev, report.summary());
                self.drill.running = None;
                self.drill.last = Some(*report);
            }
            Action::ScaleProgress {
                wall,
                severity,
                text,
                done,
            } => {
                self.push_event(wall, severity, text);
                if done {
                    self.scale.running = false;
                }
            }
        }
    }

    /// The header's title: `config.title` with `{nodes}` replaced by the number of nodes in
    /// the latest view (so a demo's title follows its scale-outs), `…` before the first one.
    pub fn title(&self) -> String {
        let nodes = self
            .cluster
            .view
            .as_ref()
            .map_or_else(|| "…".to_string(), |v| v.nodes.len().to_string());
        self.config.title.replace("{nodes}", &nodes)
    }

    /// The age of the shown data.
    pub fn data_age(&self) -> Option<Duration> {
        self.cluster
            .taken_at
            .map(|t| self.now.saturating_duration_since(t))
    }

    /// Data older than three refreshes (at least 3 s) is stale: the cluster may have changed.
    pub fn stale_after(&self) -> Duration {
        (self.config.refresh * 3).max(Duration::from_secs(3))
    }

    pub fn is_stale(&self) -> bool {
        self.data_age().is_some_and(|a| a > self.stale_after()) || self.cluster.last_error.is_some()
    }

    /// Nodes sorted by id.
    pub fn nodes(&self) -> Vec<&NodeStatus> {
        let mut nodes: Vec<&NodeStatus> = self.cluster.view.iter().flat_map(|v| &v.nodes).collect();
        nodes.sort_by_key(|n| n.id);
        nodes
    }

    pub fn meta_leader(&self) -> Option<u64> {
        self.cluster.view.as_ref().and_then(|v| v.meta_leader)
    }

    pub fn node_state(&self, n: &NodeStatus) -> NodeState {
        if self.is_stale() {
            NodeState::Stale
        } else if n.online {
            NodeState::Up
        } else {
            NodeState::Down
        }
    }

    /// The channels the Channels pane shows: filtered, then sorted by the chosen column
    /// (ties by key, so the order is stable).
    pub fn visible_channels(&self) -> Vec<&ChannelRow> {
        let needle = self.channels.filter.to_lowercase();
        let mut rows: Vec<&ChannelRow> = self
            .channels
            .rows
            .values()
            .filter(|r| needle.is_empty() || r.key.to_string().to_lowercase().contains(&needle))
            .collect();
        let sort = self.channels.sort;
        rows.sort_by(|a, b| {
            let ord = match sort {
                SortColumn::Channel => a.key.cmp(&b.key),
                SortColumn::Rate => a
                    .rate
                    .unwrap_or(-1.0)
                    .total_cmp(&b.rate.unwrap_or(-1.0))
                    .then(a.seq().cmp(&b.seq())),
                SortColumn::Seq => a.seq().cmp(&b.seq()),
                SortColumn::Leader => a.leader().cmp(&b.leader()),
                SortColumn::Lag => a.max_lag().cmp(&b.max_lag()),
            };
            let ord = if self.channels.sort_desc {
                ord.reverse()
            } else {
                ord
            };
            ord.then_with(|| a.key.cmp(&b.key))
        });
        rows
    }

    /// Index of the selected channel in [`App::visible_channels`] (the first when none).
    pub fn selected_channel_index(&self, rows: &[&ChannelRow]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        Some(
            self.channels
                .sel
                .as_ref()
                .and_then(|k| rows.iter().position(|r| &r.key == k))
                .unwrap_or(0),
        )
    }

    pub fn selected_channel(&self) -> Option<&ChannelRow> {
        let rows = self.visible_channels();
        self.selected_channel_index(&rows).map(|i| rows[i])
    }

    /// The channels whose replicas the poller should ask about first: the top of the
    /// current view (busiest first by default) and the selection.
    pub fn focus_channels(&self, max: usize) -> Vec<ChannelKey> {
        let mut keys: Vec<ChannelKey> = Vec::new();
        if let Some(sel) = self.selected_channel() {
            keys.push(sel.key.clone());
        }
        for r in self.visible_channels() {
            if keys.len() >= max {
                break;
            }
            if !keys.contains(&r.key) {
                keys.push(r.key.clone());
            }
        }
        keys
    }

    fn push_event(&mut self, wall: SystemTime, severity: Severity, text: String) {
        self.events.entries.push_back(EventEntry { wall, severity, text });
        while self.events.entries.len() > EVENTS_KEPT {
            self.events.entries.pop_front();
        }
        // Keep the operator's place while scrolled down.
        if self.events.scroll > 0 {
            self.events.scroll += 1;
        }
    }

    fn apply(&mut self, s: Snapshot) {
        let prev_at = self.cluster.taken_at;
        let old = self.cluster.view.take();
        if self.cluster.last_error.take().is_some() && old.is_some() {
            self.push_event(s.wall, Severity::Good, "▲ cluster reachable again".into());
        }
        self.diff_nodes(old.as_ref(), &s.nodes, s.wall, s.at);

        match &s.channels {
            Ok(list) => {
                self.channels.error = None;
                self.channels.total = list.total;
                let mut rows = BTreeMap::new();
                for info in &list.channels {
                    let key = ChannelKey::new(info.channel_id.clone(), info.channel_type);
                    let mut row = self
                        .channels
                        .rows
                        .remove(&key)
                        .unwrap_or_else(|| ChannelRow::new(key.clone(), info.replicas.clone()));
                    row.replicas = info.replicas.clone();
                    rows.insert(key, row);
                }
                self.channels.rows = rows;
            }
            Err(e) => self.channels.error = Some(e.clone()),
        }

        let mut delta_sum = 0u64;
        let mut leader_changes = Vec::new();
        for rep in s.replicas {
            let key = ChannelKey::new(rep.channel_id.clone(), rep.channel_type);
            let Some(row) = self.channels.rows.get_mut(&key) else {
                continue;
            };
            let old_leader = row.status.as_ref().map(|st| st.leader);
            if let Some(old_leader) = old_leader
                && old_leader != rep.leader
            {
                leader_changes.push((key.clone(), old_leader, rep.leader, rep.is_hibernated()));
            }
            row.error = None;
            row.status = Some(rep);
            let seq = row.seq().unwrap_or(0);
            if let Some((s0, t0)) = row.seq_sample
                && s.at > t0
            {
                // A seq that went down means the channel's data was replaced: no rate.
                row.rate = seq.checked_sub(s0).map(|d| {
                    delta_sum += d;
                    d as f64 / (s.at - t0).as_secs_f64()
                });
            }
            row.seq_sample = Some((seq, s.at));
        }
        for (key, e) in s.replica_errors {
            if let Some(row) = self.channels.rows.get_mut(&key) {
                row.error = Some(e);
            }
        }
        self.channel_leader_events(leader_changes, s.wall);

        if let Some(p) = prev_at.filter(|p| s.at > *p) {
            let rate = delta_sum as f64 / (s.at - p).as_secs_f64();
            self.throughput.samples.push_back(rate.round() as u64);
            self.throughput
                .drill_marks
                .push_back(self.drill.running.is_some());
            while self.throughput.samples.len() > THROUGHPUT_SAMPLES {
                self.throughput.samples.pop_front();
            }
            while self.throughput.drill_marks.len() > THROUGHPUT_SAMPLES {
                self.throughput.drill_marks.pop_front();
            }
        }

        self.apply_backlog(s.backlog, s.at, s.wall);
        self.cluster.view = Some(s.nodes);
        self.cluster.taken_at = Some(s.at);
        self.now = self.now.max(s.at);
        self.clamp_selection();
    }

    /// Events for what changed between two node views.
    fn diff_nodes(&mut self, old: Option<&NodesResp>, new: &NodesResp, wall: SystemTime, at: Instant) {
        for n in &new.nodes {
            if n.online {
                self.cluster.down_since.remove(&n.id);
            } else {
                self.cluster.down_since.entry(n.id).or_insert(at);
            }
        }
        let Some(old) = old else {
            let up = new.nodes.iter().filter(|n| n.online).count();
            let leader = new.meta_leader.map_or_else(
                || "no metadata leader".to_string(),
                |l| format!("metadata leader *{l}"),
            );
            self.push_event(
                wall,
                Severity::Info,
                format!("· connected: {up}/{} nodes up, {leader}", new.nodes.len()),
            );
            return;
        };
        if old.meta_leader != new.meta_leader {
            match (old.meta_leader, new.meta_leader) {
                (_, None) => self.push_event(wall, Severity::Bad, "✗ metadata group has NO leader".into()),
                (None, Some(l)) => self.push_event(
                    wall,
                    Severity::Good,
                    format!("* metadata leader elected: node {l}"),
                ),
                (Some(a), Some(b)) => {
                    self.push_event(wall, Severity::Warn, format!("* metadata leader {a} → {b}"))
                }
            }
        }
        let max_term = |v: &NodesResp| v.nodes.iter().filter(|n| n.online).map(|n| n.term).max();
        if let (Some(a), Some(b)) = (max_term(old), max_term(new))
            && b > a
        {
            self.push_event(
                wall,
                Severity::Info,
                format!("↻ metadata term {a} → {b} (election)"),
            );
        }
        let old_by_id: HashMap<u64, &NodeStatus> = old.nodes.iter().map(|n| (n.id, n)).collect();
        let mut new_sorted: Vec<&NodeStatus> = new.nodes.iter().collect();
        new_sorted.sort_by_key(|n| n.id);
        for n in new_sorted {
            let Some(o) = old_by_id.get(&n.id) else {
                self.push_event(wall, Severity::Info, format!("+ node {} joined the view", n.id));
                continue;
            };
            match (o.online, n.online) {
                (true, false) => self.push_event(
                    wall,
                    Severity::Bad,
                    format!("✗ node {} down (not answering)", n.id),
                ),
                (false, true) => self.push_event(wall, Severity::Good, format!("▲ node {} up", n.id)),
                (true, true) if o.role != n.role && n.role != Role::Unknown => self.push_event(
                    wall,
                    Severity::Info,
                    format!("↻ node {} role {} → {}", n.id, o.role.as_str(), n.role.as_str()),
                ),
                _ => {}
            }
        }
        let mut gone: Vec<u64> = old
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| !new.nodes.iter().any(|n| n.id == *id))
            .collect();
        gone.sort_unstable();
        for id in gone {
            self.cluster.down_since.remove(&id);
            self.push_event(
                wall,
                Severity::Warn,
                format!("- node {id} left the view (no longer listed)"),
            );
        }
    }

    fn channel_leader_events(&mut self, changes: Vec<LeaderChange>, wall: SystemTime) {
        let text = |(k, a, b, idle): &LeaderChange| match (a, b) {
            (_, None) if *idle => format!("{k} hibernated (idle)"),
            (_, None) => format!("{k} lost its leader"),
            (None, Some(b)) => format!("{k} leader elected: {b}"),
            (Some(a), Some(b)) => format!("{k} leader {a} → {b}"),
        };
        if changes.len() > CHANNEL_EVENTS_PER_SNAPSHOT {
            let examples: Vec<String> = changes.iter().take(3).map(text).collect();
            self.push_event(
                wall,
                Severity::Warn,
                format!(
                    "* {} channels changed leader ({}, ...)",
                    changes.len(),
                    examples.join("; ")
                ),
            );
            return;
        }
        for c in &changes {
            let sev = match c {
                (_, _, None, true) | (_, None, Some(_), _) => Severity::Info,
                (_, _, None, false) => Severity::Bad,
                _ => Severity::Warn,
            };
            self.push_event(wall, sev, format!("* channel {}", text(c)));
        }
    }

    /// The backlog report, when the node sent one.
    pub fn backlog_report(&self) -> Option<&wk_api::Backlog> {
        match &self.backlog.report {
            Backlog::Report(b) => Some(b),
            _ => None,
        }
    }

    /// Channels per second leaving the backlog, observed over the last samples (up to
    /// [`BACKLOG_RATE_WINDOW`]): the decreases summed over the window's span, so new work
    /// arriving meanwhile does not hide the drain. None without two samples.
    pub fn backlog_rate(&self) -> Option<f64> {
        let n = self.backlog.samples.len();
        let window: Vec<(Instant, u64)> = self
            .backlog
            .samples
            .iter()
            .skip(n.saturating_sub(BACKLOG_RATE_WINDOW))
            .copied()
            .collect();
        let (t0, t1) = (window.first()?.0, window.last()?.0);
        if t1 <= t0 {
            return None;
        }
        let drained: u64 = window.windows(2).map(|w| w[0].1.saturating_sub(w[1].1)).sum();
        Some(drained as f64 / (t1 - t0).as_secs_f64())
    }

    /// Time until the backlog is empty at the observed rate (or the drain's limit while
    /// nothing was observed yet); None without a running drain or any rate.
    pub fn backlog_eta(&self) -> Option<Duration> {
        let b = self.backlog_report()?;
        let drain = b.drain.as_ref()?;
        if b.total == 0 {
            return Some(Duration::ZERO);
        }
        let rate = self.backlog_rate().filter(|r| *r > 0.0).unwrap_or(drain.rate);
        (rate > 0.0).then(|| Duration::from_secs_f64(b.total as f64 / rate))
    }

    /// A running drain with work left whose backlog has not moved for a while.
    pub fn backlog_stalled(&self) -> bool {
        let Some(b) = self.backlog_report() else {
            return false;
        };
        let patience = (self.config.refresh * 5).max(Duration::from_secs(10));
        b.drain.is_some()
            && b.total > 0
            && self
                .backlog
                .changed_at
                .is_some_and(|t| self.now.saturating_duration_since(t) > patience)
    }

    fn apply_backlog(&mut self, new: Backlog, at: Instant, wall: SystemTime) {
        let old = self.backlog_report().cloned();
        if let Backlog::Report(b) = &new {
            if let Some(o) = &old {
                match (o.total, b.total) {
                    (0, n) if n > 0 => self.push_event(
                        wall,
                        Severity::Warn,
                        format!("! sync backlog: {n} channels to move ({} at risk)", b.at_risk),
                    ),
                    (n, 0) if n > 0 => self.push_event(wall, Severity::Good, "✓ sync backlog drained".into()),
                    _ => {}
                }
                match (&o.drain, &b.drain) {
                    (None, Some(d)) => self.push_event(
                        wall,
                        Severity::Info,
                        format!("→ backlog drain started ({:.1} ch/s)", d.rate),
                    ),
                    (Some(_), None) => {
                        self.push_event(wall, Severity::Info, "· backlog drain stopped".into())
                    }
                    _ => {}
                }
            }
            if old.as_ref().is_none_or(|o| o.total != b.total) || b.drain.is_none() {
                self.backlog.changed_at = Some(at);
                self.backlog.stall_reported = false;
            }
            self.backlog.samples.push_back((at, b.total));
            while self.backlog.samples.len() > THROUGHPUT_SAMPLES {
                self.backlog.samples.pop_front();
            }
        }
        self.backlog.report = new;
        self.now = self.now.max(at);
        if self.backlog_stalled() && !self.backlog.stall_reported {
            self.backlog.stall_reported = true;
            let total = self.backlog_report().map_or(0, |b| b.total);
            self.push_event(
                wall,
                Severity::Bad,
                format!("✗ backlog drain stalled: {total} channels left, no progress"),
            );
        }
    }

    fn clamp_selection(&mut self) {
        let n = self.nodes().len();
        self.nodes_pane.sel = self.nodes_pane.sel.min(n.saturating_sub(1));
        self.events.scroll = self
            .events
            .scroll
            .min(self.events.entries.len().saturating_sub(1));
    }

    fn on_key(&mut self, key: Key) {
        if key == Key::CtrlC {
            self.effects.push(Effect::Quit);
            return;
        }
        self.notice = None;
        match self.mode {
            Mode::Help => {
                if matches!(key, Key::Char('?') | Key::Char('q') | Key::Esc) {
                    self.mode = Mode::Normal;
                }
            }
            Mode::Filter => match key {
                Key::Char(c) => self.channels.filter.push(c),
                Key::Backspace => {
                    self.channels.filter.pop();
                }
                Key::Enter => self.mode = Mode::Normal,
                Key::Esc => {
                    self.channels.filter.clear();
                    self.mode = Mode::Normal;
                }
                Key::Up | Key::Down => self.move_channel(if key == Key::Up { -1 } else { 1 }),
                _ => {}
            },
            Mode::Detail => match key {
                Key::Char('q') | Key::Esc | Key::Enter => self.mode = Mode::Normal,
                Key::Up | Key::Char('k') => self.move_channel(-1),
                Key::Down | Key::Char('j') => self.move_channel(1),
                Key::Char('f') => self.frozen = !self.frozen,
                Key::Char('r') => self.request_refresh(),
                _ => {}
            },
            Mode::DrillMenu => match key {
                Key::Char('q') | Key::Esc => self.mode = Mode::Normal,
                Key::Up | Key::Char('k') => self.drill.choice = step(self.drill.choice, -1, DRILL_MENU.len()),
                Key::Down | Key::Char('j') => {
                    self.drill.choice = step(self.drill.choice, 1, DRILL_MENU.len())
                }
                Key::Char('+') | Key::Char('=') => {
                    self.drill.isolate_secs = (self.drill.isolate_secs + 5).min(ISOLATE_SECS_MAX)
                }
                Key::Char('-') => self.drill.isolate_secs = self.drill.isolate_secs.saturating_sub(5).max(5),
                Key::Char(c @ '1'..='4') => {
                    self.drill.choice = c as usize - '1' as usize;
                    self.choose_drill();
                }
                Key::Enter => self.choose_drill(),
                _ => {}
            },
            Mode::DrillConfirm => match key {
                Key::Char('y') | Key::Char('Y') => {
                    self.mode = Mode::Normal;
                    match self.drill.pending.take() {
                        Some(DrillPlan {
                            kind: DrillKind::Restart { node },
                            ..
                        }) => {
                            self.drill.killed.remove(&node);
                            self.effects.push(Effect::Restart(node));
                        }
                        Some(p) => {
                            if let DrillKind::KillNode { node } | DrillKind::KillLeader { node, .. } = p.kind
                            {
                                self.drill.killed.insert(node);
                            }
                            self.effects.push(Effect::Drill(p.clone()));
                            self.drill.running = Some(p);
                        }
                        None => {}
                    }
                }
                Key::Char('n') | Key::Char('N') | Key::Char('q') | Key::Esc => {
                    self.mode = Mode::Normal;
                    self.drill.pending = None;
                    self.notice = Some("drill cancelled".into());
                }
                _ => {}
            },
            Mode::ScaleConfirm => match key {
                Key::Char('y') | Key::Char('Y') => {
                    self.mode = Mode::Normal;
                    self.start_scale(ScaleRequest::Local);
                }
                Key::Char('n') | Key::Char('N') | Key::Char('q') | Key::Esc => {
                    self.mode = Mode::Normal;
                    self.notice = Some("scale-out cancelled".into());
                }
                _ => {}
            },
            Mode::ScaleInput => match key {
                Key::Char(c) => self.scale.input.push(c),
                Key::Backspace => {
                    self.scale.input.pop();
                }
                Key::Esc => {
                    self.scale.input.clear();
                    self.mode = Mode::Normal;
                    self.notice = Some("scale-out cancelled".into());
                }
                Key::Enter => match parse_member(&self.scale.input) {
                    Ok(req) => {
                        self.mode = Mode::Normal;
                        self.scale.input.clear();
                        self.start_scale(req);
                    }
                    // Stay in the prompt so the operator can fix the typo.
                    Err(why) => self.notice = Some(why),
                },
                _ => {}
            },
            Mode::Normal => self.on_normal_key(key),
        }
    }

    fn start_scale(&mut self, req: ScaleRequest) {
        self.effects.push(Effect::ScaleOut(req));
        self.scale.running = true;
    }

    /// The plan for the highlighted menu entry, from what the screen shows: the selected
    /// channel's leader, or the node selected in the Nodes pane. Opens the confirmation, or
    /// explains in the footer why the drill cannot run.
    fn choose_drill(&mut self) {
        self.mode = Mode::Normal;
        match self.drill_plan(self.drill.choice) {
            Ok(p) => {
                self.drill.pending = Some(p);
                self.mode = Mode::DrillConfirm;
            }
            Err(why) => self.notice = Some(format!("drill not possible: {why}")),
        }
    }

    /// The drill `choice` (an index into [`DRILL_MENU`]) would run now.
    pub fn drill_plan(&self, choice: usize) -> Result<DrillPlan, String> {
        let selected = self.selected_channel().map(|r| r.key.clone());
        let kind = match choice {
            0 => {
                let row = self.selected_channel().ok_or("no channel selected")?;
                let node = row
                    .leader()
                    .ok_or_else(|| format!("{} has no known leader (wait for its replica poll)", row.key))?;
                DrillKind::KillLeader {
                    channel: row.key.clone(),
                    node,
                }
            }
            3 => {
                if !self.config.local_scale {
                    return Err("wkctl demo only".into());
                }
                let nodes = self.nodes();
                let n = nodes.get(self.nodes_pane.sel).ok_or("no node listed yet")?;
                if !self.drill.killed.contains(&n.id) {
                    return Err(format!("node {} was not killed here", n.id));
                }
                if n.online {
                    return Err(format!("node {} is running", n.id));
                }
                return Ok(DrillPlan {
                    kind: DrillKind::Restart { node: n.id },
                    target_http: n.http_addr.clone(),
                    affected: Vec::new(),
                    probe: None,
                });
            }
            1 | 2 => {
                let nodes = self.nodes();
                let n = nodes.get(self.nodes_pane.sel).ok_or("no node listed yet")?;
                if choice == 1 {
                    DrillKind::KillNode { node: n.id }
                } else {
                    DrillKind::Isolate {
                        node: n.id,
                        secs: self.drill.isolate_secs,
                    }
                }
            }
            _ => return Err("no such drill".into()),
        };
        let node = kind.node();
        let status = self
            .nodes()
            .into_iter()
            .find(|n| n.id == node)
            .cloned()
            .ok_or_else(|| format!("node {node} is not listed"))?;
        if !status.online {
            return Err(format!("node {node} is already down"));
        }
        if status.http_addr.is_empty() {
            // A node registers its HTTP address shortly after it starts.
            return Err(format!("node {node} has not reported its HTTP address yet"));
        }
        // The channels the target leads, the drilled channel first.
        let mut affected: Vec<ChannelKey> = Vec::new();
        if let DrillKind::KillLeader { channel, .. } = &kind {
            affected.push(channel.clone());
        }
        for r in self.channels.rows.values() {
            if affected.len() >= AFFECTED_MAX {
                break;
            }
            if r.leader() == Some(node) && !affected.contains(&r.key) {
                affected.push(r.key.clone());
            }
        }
        let probe = affected.first().cloned().or(selected);
        Ok(DrillPlan {
            kind,
            target_http: status.http_addr,
            affected,
            probe,
        })
    }

    fn on_normal_key(&mut self, key: Key) {
        match key {
            Key::Char('q') => self.effects.push(Effect::Quit),
            Key::Esc if !self.channels.filter.is_empty() => self.channels.filter.clear(),
            Key::Esc => self.effects.push(Effect::Quit),
            Key::Char('?') => self.mode = Mode::Help,
            Key::Char('f') => self.frozen = !self.frozen,
            Key::Char('r') => self.request_refresh(),
            Key::Tab => self.focus = self.focus.next(),
            Key::BackTab => self.focus = self.focus.prev(),
            Key::Up | Key::Char('k') => self.move_focused(-1),
            Key::Down | Key::Char('j') => self.move_focused(1),
            Key::PageUp => self.move_focused(-10),
            Key::PageDown => self.move_focused(10),
            Key::Home | Key::Char('g') => self.move_focused(-1_000_000),
            Key::End | Key::Char('G') => self.move_focused(1_000_000),
            Key::Char('/') => {
                self.focus = Pane::Channels;
                self.mode = Mode::Filter;
            }
            Key::Char(c @ '1'..='5') => {
                let col = SortColumn::ALL[c as usize - '1' as usize];
                if self.channels.sort == col {
                    self.channels.sort_desc = !self.channels.sort_desc;
                } else {
                    self.channels.sort = col;
                    self.channels.sort_desc = col.default_descending();
                }
            }
            Key::Enter if self.focus == Pane::Channels && self.selected_channel().is_some() => {
                self.channels.sel = self.selected_channel().map(|r| r.key.clone());
                self.mode = Mode::Detail;
            }
            Key::Char('s') if self.scale.running => {
                self.notice = Some("a scale-out is running; see the Events pane".into())
            }
            Key::Char('s') if self.config.local_scale => self.mode = Mode::ScaleConfirm,
            Key::Char('s') => self.mode = Mode::ScaleInput,
            Key::Char('d') => match &self.drill.running {
                Some(p) => self.notice = Some(format!("a drill is running: {}", p.kind)),
                None => self.mode = Mode::DrillMenu,
            },
            _ => {}
        }
    }

    fn request_refresh(&mut self) {
        self.effects.push(Effect::Refresh);
        if self.frozen {
            self.accept_one = true;
        }
    }

    fn move_focused(&mut self, delta: i64) {
        match self.focus {
            Pane::Nodes => {
                let n = self.nodes().len();
                self.nodes_pane.sel = step(self.nodes_pane.sel, delta, n);
            }
            Pane::Channels => self.move_channel(delta),
            Pane::Events => {
                self.events.scroll = step(self.events.scroll, delta, self.events.entries.len());
            }
            Pane::Throughput | Pane::Backlog => {}
        }
    }

    fn move_channel(&mut self, delta: i64) {
        let rows = self.visible_channels();
        let Some(i) = self.selected_channel_index(&rows) else {
            return;
        };
        let j = step(i, delta, rows.len());
        self.channels.sel = Some(rows[j].key.clone());
    }
}

/// `i + delta`, clamped to `0..len`.
fn step(i: usize, delta: i64, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let j = i as i64 + delta;
    j.clamp(0, len as i64 - 1) as usize
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
