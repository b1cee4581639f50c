//! Failover drills started from the dashboard (`d`): what to do ([`DrillPlan`], built by the
//! app from what the screen shows) and what was measured ([`DrillReport`], built by the
//! poller, which alone performs the drill). Plain data, no I/O.

use std::fmt;
use std::time::Duration;

use crate::snapshot::ChannelKey;

/// The drills the menu offers, in menu order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrillKind {
    /// Crash the node that leads `channel` (its leader at the time of the last poll).
    KillLeader { channel: ChannelKey, node: u64 },
    /// Crash a node.
    KillNode { node: u64 },
    /// Drop all of a node's cluster traffic for `secs` seconds.
    Isolate { node: u64, secs: u64 },
    /// Start a node this dashboard killed again, on its data dir (local demo only): the
    /// launcher does it, not the node.
    Restart { node: u64 },
}

impl DrillKind {
    /// The node the drill is sent to.
    pub fn node(&self) -> u64 {
        match self {
            DrillKind::KillLeader { node, .. }
            | DrillKind::KillNode { node }
            | DrillKind::Isolate { node, .. }
            | DrillKind::Restart { node } => *node,
        }
    }
}

impl fmt::Display for DrillKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrillKind::KillLeader { channel, node } => {
                write!(f, "kill the leader of {channel} (node {node})")
            }
            DrillKind::KillNode { node } => write!(f, "kill node {node}"),
            DrillKind::Isolate { node, secs } => write!(f, "isolate node {node} for {secs}s"),
            DrillKind::Restart { node } => write!(f, "restart node {node} on its data dir"),
        }
    }
}

/// One drill, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillPlan {
    pub kind: DrillKind,
    /// The target node's HTTP address (`host:port`): the drill is posted to it alone.
    pub target_http: String,
    /// Channels the target led at the last poll: each must get another leader. Bounded by
    /// [`AFFECTED_MAX`].
    pub affected: Vec<ChannelKey>,
    /// The channel the probe writes to while the drill runs (the first affected one, else
    /// the selected one); None when there is no channel at all.
    pub probe: Option<ChannelKey>,
}

/// At most this many channels are watched for a new leader.
pub const AFFECTED_MAX: usize = 32;

/// What a drill measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillReport {
    pub kind: DrillKind,
    /// Per affected channel: the time from the drill until it had a leader other than the
    /// target, None when that did not happen before the drill gave up.
    pub elected: Vec<(ChannelKey, Option<Duration>)>,
    /// Probe writes sent while the drill ran, and how many failed.
    pub probe_writes: u64,
    pub probe_failures: u64,
    /// From the start of the first failed probe write to the end of the last one: the
    /// unavailability the probe saw. None when no write failed.
    pub probe_window: Option<Duration>,
    /// Why the drill could not be performed (e.g. the node refuses drills).
    pub error: Option<String>,
}

impl DrillReport {
    /// The slowest re-election, when every affected channel got a new leader.
    pub fn all_elected(&self) -> Option<Duration> {
        self.elected
            .iter()
            .map(|(_, d)| *d)
            .collect::<Option<Vec<_>>>()
            .map(|v| v.into_iter().max().unwrap_or_default())
    }

    /// One line for the events pane and the throughput pane.
    pub fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("✗ drill {} failed: {e}", self.kind);
        }
        let leaders = if self.elected.is_empty() {
            "no channel to re-elect".to_string()
        } else {
            match self.all_elected() {
                Some(d) => format!("{} channel(s) re-elected in {}", self.elected.len(), fmt_secs(d)),
                None => format!(
                    "✗ {}/{} channel(s) without a new leader",
                    self.elected.iter().filter(|(_, d)| d.is_none()).count(),
                    self.elected.len()
                ),
            }
        };
        let probe = match (self.probe_writes, self.probe_window) {
            (0, _) => "no probe".to_string(),
            (_, None) => format!("probe {} writes, none failed", self.probe_writes),
            (_, Some(w)) => format!(
                "probe unavailable {} ({}/{} failed)",
                fmt_secs(w),
                self.probe_failures,
                self.probe_writes
            ),
        };
        format!("⚡ drill {}: {leaders}; {probe}", self.kind)
    }
}

impl DrillReport {
    /// A few words for a narrow place (the Throughput pane's bottom border): the slowest
    /// re-election and the probe's unavailability.
    pub fn short(&self) -> String {
        if self.error.is_some() {
            return "⚡ drill failed (see events)".into();
        }
        let elected = match (self.elected.is_empty(), self.all_elected()) {
            (true, _) => "–".to_string(),
            (false, Some(d)) => fmt_secs(d),
            (false, None) => "✗ none".to_string(),
        };
        let probe = match (self.probe_writes, self.probe_window) {
            (0, _) => "–".to_string(),
            (_, None) => "ok".to_string(),
            (_, Some(w)) => format!("✗ {}", fmt_secs(w)),
        };
        format!("⚡ leader {elected} · writes {probe}")
    }
}

/// `1.23s`
fn fmt_secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let k = ChannelKey::new("g1", 2);
        let mut r = DrillReport {
            kind: DrillKind::KillLeader {
                channel: k.clone(),
                node: 2,
            },
            elected: vec![(k.clone(), Some(Duration::from_millis(1_250)))],
            probe_writes: 40,
            probe_failures: 6,
            probe_window: Some(Duration::from_millis(900)),
            error: None,
        };
        assert_eq!(
            r.summary(),
            "⚡ drill kill the leader of g1/2 (node 2): 1 channel(s) re-elected in 1.25s; \
             probe unavailable 0.90s (6/40 failed)"
        );
        assert_eq!(r.short(), "⚡ leader 1.25s · writes ✗ 0.90s");
        r.elected.push((ChannelKey::new("g2", 2), None));
        assert_eq!(r.short(), "⚡ leader ✗ none · writes ✗ 0.90s");
        assert_eq!(r.all_elected(), None);
        assert!(r.summary().contains("✗ 1/2 channel(s) without a new leader"));
        r.error = Some("node 2 refuses drills".into());
        assert!(r.summary().starts_with("✗ drill kill the leader"));
        let iso = DrillKind::Isolate { node: 3, secs: 10 };
        assert_eq!(iso.to_string(), "isolate node 3 for 10s");
        assert_eq!(iso.node(), 3);
    }
}
