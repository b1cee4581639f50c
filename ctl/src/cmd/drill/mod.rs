//! `wkctl drill ...`: failover drills. Each verb builds a one-step `Scenario`,
//! `drill run FILE` reads one from TOML, `drill soak` runs a seeded random mix of the shipped
//! scenarios; `runner` executes them against a local cluster it starts (every fault) or a
//! remote one (`--remote`: HTTP drills only, `target`), `faults` injects each step's fault and
//! `watch` measures the reaction, `check` judges the history and `report` renders the verdict.
//!
//! Exit codes: 0 PASS, 1 FAIL (a safety violation or the cluster did not recover), 2 error.

pub(crate) mod check;
mod faults;
pub(crate) mod report;
mod runner;
mod scenario;
mod target;
mod watch;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::Outcome;
use crate::cli::{GlobalArgs, parse_duration};
use crate::output;
use crate::probe::interrupted;
use runner::{Access, RunOpts};
use scenario::{Dur, Fault, NodeSel, Role, Scenario, Step, Workload};

/// Failure drills: inject a fault under a probe workload, heal it, check that no acknowledged
/// message was lost, duplicated or reordered and that the replicas agree.
///
/// Every drill starts its own local cluster (temporary directory, free ports, `--allow-drills`)
/// unless `--remote` is given; against `--remote` (the global `--endpoint`) only the HTTP
/// drills (isolate, partition) are possible, its nodes must run with `--allow-drills`.
/// Results: a report (text or `--output json`) and an artifacts folder with the operation
/// history (`history.jsonl`), the report and each local node's log. Exit 1 on FAIL.
#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// SIGKILL the leader of a channel (default: the first probe channel), restart it after
    /// `--down` on its data dir.
    KillLeader(KillLeaderArgs),
    /// SIGKILL node ID, restart it after `--down` on its data dir.
    KillNode(KillNodeArgs),
    /// SIGSTOP node ID for `--for`, then SIGCONT (local clusters only).
    Pause(HoldArgs),
    /// Drop node ID's cluster traffic to and from every peer for `--for` (HTTP drill).
    Isolate(HoldArgs),
    /// Isolate the `--minority` nodes from the majority, both ways, for `--for` (HTTP drill).
    Partition(PartitionArgs),
    /// SIGKILL node ID, wipe its data dir, remove it from the cluster, start it empty with
    /// `--seed` and admit it again; checks it re-replicates (local clusters only).
    DiskLoss(NodeArgs),
    /// Start node N+1 with `--seed` and admit it with `/cluster/join` under load (local only).
    ScaleOut(ScaleOutArgs),
    /// Run a scripted scenario (TOML; see `testdata/drills/*.toml`).
    Run(RunArgs),
    /// Run randomly chosen scenarios from a directory for a while (seeded; not for CI).
    Soak(SoakArgs),
}

/// Where the drill runs and where its results go.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Start a throwaway local cluster (the default).
    #[arg(long, conflicts_with = "remote")]
    pub local: bool,
    /// Drill the cluster at `--endpoint` instead (HTTP drills only; nodes need `--allow-drills`).
    #[arg(long)]
    pub remote: bool,
    /// Seed for every random choice (printed; default random, or the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Artifacts folder [default: ./wukong-data/drills/<scenario>-<unix time>].
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// The `wknode` binary; by default the one next to `wkctl`, else on PATH.
    #[arg(long, env = "WK_WKNODE")]
    pub wknode: Option<PathBuf>,
}

/// The probe workload of the one-fault verbs.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// Local cluster size.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=9))]
    pub nodes: u64,
    /// Probe channels `drill-0..N`.
    #[arg(long, default_value_t = 8)]
    pub channels: u32,
    /// Writers (default: one per channel).
    #[arg(long)]
    pub writers: Option<u32>,
    /// Operations per second per writer; 0: back to back.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Load before the fault and after the heal.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub steady: Duration,
}

#[derive(Debug, Args)]
pub struct KillLeaderArgs {
    /// The channel whose leader dies, as ID TYPE (default: the first probe channel).
    #[arg(long, num_args = 2, value_names = ["ID", "TYPE"])]
    pub channel: Option<Vec<String>>,
    /// How long the node stays down.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub down: Duration,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct KillNodeArgs {
    /// The node id.
    pub id: u64,
    /// How long the node stays down.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub down: Duration,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct HoldArgs {
    /// The node id.
    pub id: u64,
    /// How long the fault lasts.
    #[arg(long = "for", default_value = "5s", value_parser = parse_duration)]
    pub hold: Duration,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// The minority's node ids, comma-separated (fewer than half of the nodes).
    #[arg(long, value_delimiter = ',', required = true)]
    pub minority: Vec<u64>,
    /// How long the partition lasts.
    #[arg(long = "for", default_value = "5s", value_parser = parse_duration)]
    pub hold: Duration,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node id.
    pub id: u64,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct ScaleOutArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The scenario file.
    pub file: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Seed of the mix (printed; each run gets a seed derived from it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long to keep running scenarios.
    #[arg(long = "for", default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Where the scenarios are.
    #[arg(long, default_value = "testdata/drills")]
    pub dir: PathBuf,
    /// Parent folder of each run's artifacts [default: ./wukong-data/drills/soak-<seed>].
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// The `wknode` binary; by default the one next to `wkctl`, else on PATH.
    #[arg(long, env = "WK_WKNODE")]
    pub wknode: Option<PathBuf>,
}

pub async fn run(global: &GlobalArgs, cmd: DrillCommand) -> anyhow::Result<Outcome> {
    tokio::select! {
        r = run_inner(global, cmd) => r,
        e = interrupted() => Err(e),
    }
}

fn one_step(name: &str, w: &WorkloadArgs, step: Step) -> Scenario {
    let steady = Dur(w.steady);
    Scenario {
        name: name.into(),
        description: String::new(),
        seed: None,
        nodes: w.nodes,
        node_args: Vec::new(),
        workload: Workload {
            channels: w.channels.max(1),
            writers: w.writers.unwrap_or(w.channels).max(1),
            rate: w.rate,
            warmup: steady,
            settle: steady,
            ..Workload::default()
        },
        steps: vec![step],
    }
}

fn step(fault: Fault) -> Step {
    Step {
        after: Dur(Duration::ZERO),
        channel: None,
        channel_type: wk_api::CHANNEL_TYPE_GROUP,
        fault,
    }
}

/// The admin token and `--tls-ca` every client of a drill uses.
fn access(global: &GlobalArgs) -> anyhow::Result<Access> {
    Ok(Access {
        admin_token: global.admin_token.clone(),
        tls_ca: super::tls_ca_pem(global)?,
    })
}

async fn run_inner(global: &GlobalArgs, cmd: DrillCommand) -> anyhow::Result<Outcome> {
    let access = access(global)?;
    let (scenario, target) = match cmd {
        DrillCommand::KillLeader(a) => {
            let mut s = step(Fault::Kill {
                node: NodeSel::Role(Role::Leader),
                down: Dur(a.down),
            });
            if let Some(c) = &a.channel {
                s.channel = Some(c[0].clone());
                s.channel_type = c[1]
                    .parse()
                    .with_context(|| format!("--channel {} {}: TYPE must be a number", c[0], c[1]))?;
            }
            (one_step("kill-leader", &a.workload, s), a.target)
        }
        DrillCommand::KillNode(a) => (
            one_step(
                "kill-node",
                &a.workload,
                step(Fault::Kill {
                    node: NodeSel::Id(a.id),
                    down: Dur(a.down),
                }),
            ),
            a.target,
        ),
        DrillCommand::Pause(a) => (
            one_step(
                "pause",
                &a.workload,
                step(Fault::Pause {
                    node: NodeSel::Id(a.id),
                    hold: Dur(a.hold),
                }),
            ),
            a.target,
        ),
        DrillCommand::Isolate(a) => (
            one_step(
                "isolate",
                &a.workload,
                step(Fault::Isolate {
                    node: NodeSel::Id(a.id),
                    peers: Vec::new(),
                    hold: Dur(a.hold),
                }),
            ),
            a.target,
        ),
        DrillCommand::Partition(a) => (
            one_step(
                "partition",
                &a.workload,
                step(Fault::Partition {
                    minority: a.minority.iter().map(|id| NodeSel::Id(*id)).collect(),
                    hold: Dur(a.hold),
                }),
            ),
            a.target,
        ),
        DrillCommand::DiskLoss(a) => (
            one_step(
                "disk-loss",
                &a.workload,
                step(Fault::DiskLoss {
                    node: NodeSel::Id(a.id),
                }),
            ),
            a.target,
        ),
        DrillCommand::ScaleOut(a) => (
            one_step("scale-out", &a.workload, step(Fault::ScaleOut)),
            a.target,
        ),
        DrillCommand::Run(a) => (Scenario::load(&a.file)?, a.target),
        DrillCommand::Soak(a) => return soak(global, a).await,
    };
    scenario.validate()?;
    if target.remote {
        eprintln!(
            "wkctl: drill against --endpoint {}: only HTTP drills (isolate, partition, slow-disk, remove) \
             are possible there; the nodes must run with --allow-drills",
            global.endpoint
        );
    }
    let opts = RunOpts {
        remote: target.remote,
        endpoint: global.endpoint.clone(),
        access: access.clone(),
        wknode: target.wknode,
        artifacts: target.artifacts,
        seed: target.seed,
    };
    let report = runner::run(&scenario, &opts).await?;
    output::print(global.output, &report, || report::text(&report))?;
    Ok(if report.verdict == "PASS" {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

async fn soak(global: &GlobalArgs, a: SoakArgs) -> anyhow::Result<Outcome> {
    let access = access(global)?;
    let seed = a.seed.unwrap_or_else(|| fastrand::u64(..));
    eprintln!("wkctl: drill soak: seed {seed} (repeat with --seed {seed})");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&a.dir)
        .with_context(|| format!("reading {}", a.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.toml scenarios in {}", a.dir.display());
    }
    let parent = a
        .artifacts
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("./wukong-data/drills/soak-{seed}")));
    let mut rng = fastrand::Rng::with_seed(seed);
    let end = Instant::now() + a.duration;
    let mut results = Vec::new();
    let mut i = 0;
    while Instant::now() < end {
        i += 1;
        let file = &files[rng.usize(..files.len())];
        let run_seed = rng.u64(..);
        let scenario = Scenario::load(file)?;
        eprintln!("wkctl: soak run {i}: {} (seed {run_seed})", scenario.name);
        let opts = RunOpts {
            remote: false,
            endpoint: global.endpoint.clone(),
            access: access.clone(),
            wknode: a.wknode.clone(),
            artifacts: Some(parent.join(format!("{i:03}-{}", scenario.name))),
            seed: Some(run_seed),
        };
        let line = match runner::run(&scenario, &opts).await {
            Ok(r) => format!(
                "{i:>3} {:<24} seed {run_seed:<20} acked {:>6} lost {} dup {} reordered {} inconsistent {}  {}",
                r.scenario,
                r.safety.acked,
                r.safety.lost,
                r.safety.duplicated,
                r.safety.reordered,
                r.safety.inconsistent,
                r.verdict
            ),
            Err(e) => format!("{i:>3} {:<24} seed {run_seed:<20} ERROR {e:#}", scenario.name),
        };
        eprintln!("wkctl: {line}");
        results.push(line);
    }
    let failed = results.iter().filter(|l| !l.ends_with("PASS")).count();
    let mut text = format!("soak seed {seed}: {} run(s), {failed} failed\n", results.len());
    for l in &results {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str(if failed == 0 { "PASS\n" } else { "FAIL\n" });
    output::write_text(&mut std::io::stdout().lock(), &text)?;
    Ok(if failed == 0 {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}
