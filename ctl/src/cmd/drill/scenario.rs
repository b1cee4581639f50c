//! Drill scenarios: the TOML a `wkctl drill run FILE` reads (`testdata/drills/*.toml`), and the
//! same structure the one-fault verbs (`drill kill-leader`, ...) build from their flags.
//!
//! A scenario is a cluster size, a probe workload and a list of steps run in order; each step
//! waits `after` (with the writers running) and then injects one fault, holds it and heals it.
//! Durations are humantime strings (`"1s"`, `"500ms"`).

use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a humantime string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e} (try e.g. 1s or 500ms)")))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

fn secs(n: u64) -> Dur {
    Dur(Duration::from_secs(n))
}

/// A whole drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seeds every random choice (which follower, ...); printed, so a run can be repeated.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Nodes of the local cluster (ignored with `--remote`).
    #[serde(default = "default_nodes")]
    pub nodes: u64,
    /// Extra `wknode` flags for every local node (e.g. `["--channel-idle-timeout", "2s"]`).
    #[serde(default)]
    pub node_args: Vec<String>,
    #[serde(default)]
    pub workload: Workload,
    pub steps: Vec<Step>,
}

fn default_nodes() -> u64 {
    3
}

/// The probe workload: sequential writers with client_msg_no retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Group channels `drill-0..N`.
    pub channels: u32,
    /// Writers; writer i writes channel `i % channels`.
    pub writers: u32,
    /// Operations per second per writer; 0: back to back.
    pub rate: f64,
    /// Payload bytes per message.
    pub payload_size: u32,
    /// Load before the first step.
    pub warmup: Dur,
    /// Load after the last heal, once every channel has a leader, before the check.
    pub settle: Dur,
    /// One attempt's timeout before the writer retries on the next node.
    pub attempt_timeout: Dur,
    /// An operation not acknowledged this long after it started is recorded as failed.
    pub op_timeout: Dur,
    /// How long the replicas may take to agree after the writers paused.
    pub converge_timeout: Dur,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            channels: 4,
            writers: 4,
            rate: 50.0,
            payload_size: 32,
            warmup: secs(1),
            settle: secs(1),
            attempt_timeout: secs(1),
            op_timeout: secs(20),
            converge_timeout: secs(30),
        }
    }
}

/// Which node a fault hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NodeSel {
    Id(u64),
    /// `"leader"`: the leader of the step's channel (default the first probe channel);
    /// `"follower"`: a follower of it (chosen by the seed).
    Role(Role),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
}

/// One step: wait `after` with the writers running, then the fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    #[serde(default = "default_after")]
    pub after: Dur,
    /// The channel whose leader/follower `"leader"`/`"follower"` mean (default: `drill-0`).
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default = "default_channel_type")]
    pub channel_type: u8,
    #[serde(flatten)]
    pub fault: Fault,
}

fn default_after() -> Dur {
    secs(1)
}

fn default_channel_type() -> u8 {
    wk_api::CHANNEL_TYPE_GROUP
}

fn default_hold() -> Dur {
    secs(1)
}

/// The faults. OS-level ones (kill, pause, disk loss, scale-out, restart) need a cluster the
/// tool started itself; isolate, partition, slow-disk and remove use the node's HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL a node, restart it on its data dir after `down`.
    Kill {
        node: NodeSel,
        #[serde(default = "default_hold")]
        down: Dur,
    },
    /// SIGSTOP a node for `for`, then SIGCONT.
    Pause {
        node: NodeSel,
        #[serde(rename = "for", default = "default_hold")]
        hold: Dur,
    },
    /// Drop the node's cluster traffic to and from `peers` (empty: all) for `for`.
    Isolate {
        node: NodeSel,
        #[serde(default)]
        peers: Vec<u64>,
        #[serde(rename = "for", default = "default_hold")]
        hold: Dur,
    },
    /// Isolate the minority from the majority, both ways, for `for`.
    Partition {
        minority: Vec<NodeSel>,
        #[serde(rename = "for", default = "default_hold")]
        hold: Dur,
    },
    /// Delay every fsync of the node by `delay` for `for`.
    SlowDisk {
        node: NodeSel,
        delay: Dur,
        #[serde(rename = "for", default = "default_hold")]
        hold: Dur,
    },
    /// SIGKILL the node, wipe its data dir, remove it from the cluster, start it empty with
    /// `--seed` and admit it again (`/cluster/join`).
    DiskLoss { node: NodeSel },
    /// Start node N+1 with `--seed` and admit it (`/cluster/join`).
    ScaleOut,
    /// Decommission the node (`/cluster/nodes/{id}/remove`), then stop its process.
    Remove { node: NodeSel },
    /// Stop every node (SIGKILL with `crash = true`, else SIGTERM), wait `down`, start all.
    RestartAll {
        #[serde(default)]
        crash: bool,
        #[serde(default = "default_hold")]
        down: Dur,
    },
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::Isolate { .. } => "isolate",
            Fault::Partition { .. } => "partition",
            Fault::SlowDisk { .. } => "slow-disk",
            Fault::DiskLoss { .. } => "disk-loss",
            Fault::ScaleOut => "scale-out",
            Fault::Remove { .. } => "remove",
            Fault::RestartAll { .. } => "restart-all",
        }
    }

    /// Whether the fault needs the OS (a cluster started by wkctl).
    pub fn needs_local(&self) -> bool {
        matches!(
            self,
            Fault::Kill { .. }
                | Fault::Pause { .. }
                | Fault::DiskLoss { .. }
                | Fault::ScaleOut
                | Fault::RestartAll { .. }
        )
    }
}

impl Scenario {
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let s: Scenario = toml::from_str(text).context("parsing the scenario")?;
        s.validate()?;
        Ok(s)
    }

    pub fn load(path: &std::path::Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Scenario::parse(&text).with_context(|| path.display().to_string())
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let w = &self.workload;
        if w.channels == 0 || w.writers == 0 {
            bail!("workload.channels and workload.writers must be at least 1");
        }
        if !(1..=9).contains(&self.nodes) {
            bail!("nodes must be 1..=9");
        }
        if self.steps.is_empty() {
            bail!("a scenario needs at least one step");
        }
        for (i, s) in self.steps.iter().enumerate() {
            if let Fault::Partition { minority, .. } = &s.fault
                && (minority.is_empty() || minority.len() as u64 * 2 >= self.nodes)
            {
                bail!(
                    "step {}: a partition's minority must have 1..{} of {} nodes",
                    i + 1,
                    self.nodes.div_ceil(2),
                    self.nodes
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let s = Scenario::parse(
            r#"
            name = "all"
            seed = 7
            nodes = 5
            [workload]
            channels = 2
            rate = 0
            warmup = "500ms"
            [[steps]]
            kind = "kill"
            node = "leader"
            down = "2s"
            [[steps]]
            kind = "pause"
            node = 2
            for = "3s"
            after = "0s"
            [[steps]]
            kind = "isolate"
            node = "follower"
            channel = "drill-1"
            peers = [1]
            [[steps]]
            kind = "partition"
            minority = [1, "leader"]
            [[steps]]
            kind = "slow-disk"
            node = 1
            delay = "50ms"
            [[steps]]
            kind = "disk-loss"
            node = 3
            [[steps]]
            kind = "scale-out"
            [[steps]]
            kind = "remove"
            node = 4
            [[steps]]
            kind = "restart-all"
            crash = true
            "#,
        )
        .expect("valid");
        assert_eq!(s.seed, Some(7));
        assert_eq!(s.workload.channels, 2);
        assert_eq!(s.workload.writers, 4, "defaults fill the rest");
        assert_eq!(s.workload.warmup.0, Duration::from_millis(500));
        assert_eq!(s.steps.len(), 9);
        assert_eq!(
            s.steps[0].fault,
            Fault::Kill {
                node: NodeSel::Role(Role::Leader),
                down: secs(2)
            }
        );
        assert_eq!(s.steps[1].after.0, Duration::ZERO);
        assert_eq!(s.steps[2].channel.as_deref(), Some("drill-1"));
        assert_eq!(
            s.steps[3].fault,
            Fault::Partition {
                minority: vec![NodeSel::Id(1), NodeSel::Role(Role::Leader)],
                hold: secs(1)
            }
        );
        assert_eq!(s.steps[6].fault, Fault::ScaleOut);
        assert!(s.steps[8].fault.needs_local());
        assert!(!s.steps[2].fault.needs_local());
    }

    #[test]
    fn rejects_bad_scenarios() {
        let cases = [
            ("name = \"x\"\nsteps = []", "at least one step"),
            (
                "name = \"x\"\n[[steps]]\nkind = \"partition\"\nminority = [1, 2]",
                "minority",
            ),
            ("name = \"x\"\n[[steps]]\nkind = \"explode\"", "parsing"),
            (
                "name = \"x\"\n[[steps]]\nkind = \"kill\"\nnode = 1\ndown = \"soon\"",
                "parsing",
            ),
            (
                "name = \"x\"\nbogus = 1\n[[steps]]\nkind = \"scale-out\"",
                "parsing",
            ),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", Scenario::parse(text).expect_err(text));
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/drills");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).expect("testdata/drills") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&p).unwrap_or_else(|e| panic!("{e:#}"));
                n += 1;
            }
        }
        assert!(n >= 9, "expected the suite's scenarios in {}", dir.display());
    }
}
