//! The drill report: what `--output json` prints (and `report.json` in the artifacts holds)
//! and its text rendering. PASS/FAIL comes last.

use serde::{Deserialize, Serialize};
use wk_api::{ChannelConfig, NodeStatus};

use super::check::{Pct, Safety};
use crate::output::{Align, Table};

/// Bumped when a field changes meaning or disappears.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub version: u32,
    pub scenario: String,
    pub seed: u64,
    /// `local` (started by wkctl) or `remote` (`--endpoint`).
    pub target: String,
    pub workload: WorkloadFigures,
    /// The cluster before the first fault.
    pub before: Snapshot,
    /// Everything that happened, in order.
    pub timeline: Vec<Event>,
    pub faults: Vec<FaultReport>,
    pub writers: Vec<WriterFigures>,
    pub elections: Elections,
    pub safety: Safety,
    /// Liveness problems (no new leader, replicas that never agreed, nodes that died): they
    /// fail the drill too, but are not safety violations.
    pub problems: Vec<String>,
    /// Where the history, this report and the node logs were written.
    pub artifacts: Option<String>,
    /// `PASS` or `FAIL`.
    pub verdict: String,
    /// Why it failed (empty on PASS).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadFigures {
    pub channels: u32,
    pub writers: u32,
    /// From the first write to the writers' pause before the check.
    pub duration_ms: f64,
    /// Attempts that failed and were retried (or ended an operation).
    pub failed_attempts: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta_leader: Option<u64>,
    pub nodes: Vec<NodeStatus>,
    pub channels: Vec<ChannelConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the writers started.
    pub t_ms: f64,
    pub what: String,
}

/// One injected fault and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    pub step: usize,
    pub kind: String,
    /// The nodes it hit.
    pub nodes: Vec<u64>,
    /// When it was injected (ms since the writers started).
    pub t_ms: f64,
    /// Probe channels whose leader it hit.
    pub affected_channels: Vec<String>,
    /// Injection to a surviving replica noticing (term moved or leader gone), over affected
    /// channels.
    pub detect_ms: Option<Pct>,
    /// Injection to a surviving replica reporting a leader in a newer term.
    pub new_leader_ms: Option<Pct>,
    /// Affected channels that had no new leader within the watch.
    pub leaderless: Vec<String>,
    /// Per writer: last ack at or before the fault to the first ack after it.
    pub unavailability_ms: Option<Pct>,
    /// Returning or new node: ready (or admitted) to its replicas holding every message the
    /// leaders had at that moment.
    pub catch_up_ms: Option<f64>,
    /// Kind-specific notes (join answer, removal answer, ...).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriterFigures {
    pub writer: u32,
    pub channel: String,
    pub acked: u64,
    pub failed: u64,
    /// The largest unavailability window over all faults.
    pub max_unavailability_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Elections {
    /// Sum over probe channels of the term increase (each increase is one election round).
    pub channel_term_delta: u64,
    /// Increase of the metadata group's highest term.
    pub meta_term_delta: u64,
}

fn opt_pct(p: &Option<Pct>) -> String {
    p.map(|p| format!("{:.0}/{:.0}/{:.0}", p.p50, p.p99, p.max))
        .unwrap_or_else(|| "-".into())
}

pub fn text(r: &DrillReport) -> String {
    let mut s = format!(
        "drill {} (seed {}, {} cluster): {} writer(s) on {} channel(s) for {:.1} s\n",
        r.scenario,
        r.seed,
        r.target,
        r.workload.writers,
        r.workload.channels,
        r.workload.duration_ms / 1000.0
    );
    s.push_str("\ncluster before:\n");
    let mut t = Table::new(&[
        ("node", Align::Right),
        ("online", Align::Left),
        ("meta role", Align::Left),
        ("term", Align::Right),
        ("last index", Align::Right),
        ("applied", Align::Right),
        ("leads", Align::Right),
    ]);
    for n in &r.before.nodes {
        t.row(vec![
            n.id.to_string(),
            if n.online { "yes" } else { "NO" }.into(),
            n.role.as_str().into(),
            n.term.to_string(),
            n.last_log_index.to_string(),
            n.applied_index.to_string(),
            n.channels_led.to_string(),
        ]);
    }
    s.push_str(&t.render());
    let leaders: Vec<String> = r
        .before
        .channels
        .iter()
        .map(|c| {
            format!(
                "{} *{} (term {})",
                c.channel_id,
                c.leader.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                c.term
            )
        })
        .collect();
    s.push_str(&format!("channels: {}\n", leaders.join(", ")));

    s.push_str("\ntimeline:\n");
    for e in &r.timeline {
        s.push_str(&format!("{:>9.0} ms  {}\n", e.t_ms, e.what));
    }

    s.push_str("\nfaults (ms as p50/p99/max):\n");
    let mut t = Table::new(&[
        ("step", Align::Right),
        ("fault", Align::Left),
        ("nodes", Align::Left),
        ("affected", Align::Right),
        ("detect ms", Align::Right),
        ("new leader ms", Align::Right),
        ("unavailable ms", Align::Right),
        ("catch-up ms", Align::Right),
    ]);
    for f in &r.faults {
        t.row(vec![
            f.step.to_string(),
            f.kind.clone(),
            f.nodes.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
            f.affected_channels.len().to_string(),
            opt_pct(&f.detect_ms),
            opt_pct(&f.new_leader_ms),
            opt_pct(&f.unavailability_ms),
            f.catch_up_ms
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    s.push_str(&t.render());
    for f in &r.faults {
        for n in &f.notes {
            s.push_str(&format!("  step {}: {n}\n", f.step));
        }
        if !f.leaderless.is_empty() {
            s.push_str(&format!(
                "  step {}: no new leader for {}\n",
                f.step,
                f.leaderless.join(", ")
            ));
        }
    }

    s.push_str("\nwriters:\n");
    let mut t = Table::new(&[
        ("writer", Align::Right),
        ("channel", Align::Left),
        ("acked", Align::Right),
        ("failed", Align::Right),
        ("max unavailable ms", Align::Right),
    ]);
    for w in &r.writers {
        t.row(vec![
            w.writer.to_string(),
            w.channel.clone(),
            w.acked.to_string(),
            w.failed.to_string(),
            w.max_unavailability_ms
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    s.push_str(&t.render());
    s.push_str(&format!(
        "elections: {} channel term(s), {} metadata term(s); {} failed attempt(s) retried\n",
        r.elections.channel_term_delta, r.elections.meta_term_delta, r.workload.failed_attempts
    ));

    let x = &r.safety;
    s.push_str(&format!(
        "\nsafety: {} operations, {} acknowledged and checked, {} failed (indeterminate), {} stored\n\
         \x20 lost {}  misplaced {}  duplicated {}  reordered {}  inconsistent {}  seq gaps {}\n\
         \x20 failed writes that became visible: {} (allowed)\n",
        x.ops,
        x.acked,
        x.failed,
        x.stored,
        x.lost,
        x.misplaced,
        x.duplicated,
        x.reordered,
        x.inconsistent,
        x.seq_gaps,
        x.failed_visible
    ));
    for p in &r.problems {
        s.push_str(&format!("problem: {p}\n"));
    }
    if let Some(a) = &r.artifacts {
        s.push_str(&format!("artifacts: {a}\n"));
    }
    if r.verdict == "PASS" {
        s.push_str("PASS\n");
    } else {
        s.push_str(&format!("FAIL: {}\n", r.reasons.join("; ")));
    }
    s
}
