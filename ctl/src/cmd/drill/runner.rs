//! Runs one scenario: start (or reach) the cluster, start the probe writers, inject each
//! step's fault and heal it (`faults`), let the cluster settle, pause the writers, wait for the
//! replicas to agree, read everything back and check it (`check`), then write the report and
//! the artifacts (`history.jsonl`, `report.json`, `report.txt`, `nodes/<id>.log`).
//!
//! Nodes are started and stopped only from this future (see `crate::local`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wk_api::{Agreement, CHANNEL_TYPE_GROUP, ChannelConfig, Client, DrillReq};

use super::check::{self, pct, window};
use super::faults::inject;
use super::report::{
    DrillReport, Elections, Event, REPORT_VERSION, Snapshot, WorkloadFigures, WriterFigures,
};
use super::scenario::{NodeSel, Role, Scenario, Step};
use super::target::{Target, start_local};
use crate::probe::{
    OpOutcome, Stored, WriterSpec, Writers, create_channels, node_urls, per_endpoint, read_channel, run_tag,
};
use crate::wait::{self, NotAgreed, Poll, wait_for};

/// The probe channels are `drill-0..N`, written by uid `drill`.
const PREFIX: &str = "drill-";
const UID: &str = "drill";

/// How to reach the cluster and where to put the results.
pub struct RunOpts {
    /// Use `endpoint` instead of starting a local cluster.
    pub remote: bool,
    pub endpoint: String,
    pub access: Access,
    pub wknode: Option<PathBuf>,
    /// Artifacts directory; default `./wukong-data/drills/<scenario>-<unix s>`.
    pub artifacts: Option<PathBuf>,
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
}

/// What every client of a drill needs to be let in: the admin token, and the CA certificate
/// (PEM, wkctl's `--tls-ca`) that `https://` endpoints are verified against.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub admin_token: Option<String>,
    pub tls_ca: Option<Vec<u8>>,
}

impl Access {
    pub(super) fn client(&self, endpoints: &[String], timeout: Duration) -> anyhow::Result<Client> {
        Ok(Client::new_with_ca(endpoints, timeout, self.tls_ca.as_deref())?
            .with_token(self.admin_token.clone()))
    }
}

/// Everything the run keeps while it goes.
pub(super) struct Run {
    pub(super) target: Target,
    pub(super) admin: Client,
    pub(super) channels: Vec<String>,
    t0: Instant,
    timeline: Vec<Event>,
    pub(super) problems: Vec<String>,
    rng: fastrand::Rng,
    /// Nodes that left the cluster for good (removed).
    pub(super) gone: BTreeSet<u64>,
    pub(super) access: Access,
}

impl Run {
    pub(super) fn ms(&self) -> f64 {
        ms_since(self.t0)
    }

    pub(super) fn event(&mut self, what: String) {
        eprintln!("wkctl: drill: {what}");
        let t_ms = self.ms();
        self.timeline.push(Event { t_ms, what });
    }

    /// Endpoints of every member node (remote: as `/cluster/nodes` listed them at the start).
    pub(super) fn member_ids(&self) -> Vec<u64> {
        let all: Vec<u64> = match &self.target {
            Target::Local(c) => c.ids(),
            Target::Remote { endpoints } => endpoints.keys().copied().collect(),
        };
        all.into_iter().filter(|id| !self.gone.contains(id)).collect()
    }

    pub(super) fn client_for(&self, ids: &[u64], timeout: Duration) -> anyhow::Result<Client> {
        let eps: Vec<String> = ids.iter().filter_map(|id| self.target.endpoint(*id)).collect();
        if eps.is_empty() {
            bail!("no node left to ask");
        }
        self.access.client(&eps, timeout)
    }

    pub(super) async fn configs(&self, via: &Client) -> Vec<Option<ChannelConfig>> {
        let mut out = Vec::new();
        for ch in &self.channels {
            out.push(via.channel_config(ch, CHANNEL_TYPE_GROUP).await.ok());
        }
        out
    }

    pub(super) async fn resolve(&mut self, sel: &NodeSel, step: &Step) -> anyhow::Result<u64> {
        let role = match sel {
            NodeSel::Id(id) => return Ok(*id),
            NodeSel::Role(r) => *r,
        };
        let ch = step.channel.clone().unwrap_or_else(|| format!("{PREFIX}0"));
        let cfg = wait::leader(
            &self.admin,
            &ch,
            step.channel_type,
            Poll::new(Duration::from_secs(20), Duration::from_millis(50)),
        )
        .await?;
        let leader = cfg.leader.expect("filtered on a leader");
        Ok(match role {
            Role::Leader => leader,
            Role::Follower => {
                let f: Vec<u64> = cfg.replicas.iter().copied().filter(|r| *r != leader).collect();
                if f.is_empty() {
                    bail!("{ch} has no follower");
                }
                f[self.rng.usize(..f.len())]
            }
        })
    }
}

pub(super) fn ms_since(t0: Instant) -> f64 {
    (t0.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

pub async fn run(scenario: &Scenario, opts: &RunOpts) -> anyhow::Result<DrillReport> {
    let seed = opts.seed.or(scenario.seed).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("wkctl: drill {}: seed {seed}", scenario.name);
    if opts.remote
        && let Some(s) = scenario.steps.iter().find(|s| s.fault.needs_local())
    {
        bail!(
            "step {:?} needs a cluster started by wkctl itself (SIGKILL, SIGSTOP, wiping a data dir and \
             starting nodes are OS-level faults); with --remote only the HTTP drills (isolate, partition, \
             slow-disk, remove) are possible",
            s.fault.name()
        );
    }
    let target = if opts.remote {
        let c = opts
            .access
            .client(std::slice::from_ref(&opts.endpoint), Duration::from_secs(5))?;
        let endpoints = node_urls(&c).await?.into_iter().collect();
        Target::Remote { endpoints }
    } else {
        eprintln!("wkctl: drill: starting a local {}-node cluster", scenario.nodes);
        Target::Local(Box::new(
            start_local(opts.wknode.as_deref(), scenario.nodes, &scenario.node_args).await?,
        ))
    };
    let artifacts = opts.artifacts.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        PathBuf::from(format!("./wukong-data/drills/{}-{secs}", scenario.name))
    });
    std::fs::create_dir_all(&artifacts).with_context(|| format!("creating {}", artifacts.display()))?;

    let ids: Vec<u64> = match &target {
        Target::Local(c) => c.ids(),
        Target::Remote { endpoints } => endpoints.keys().copied().collect(),
    };
    let eps: Vec<String> = ids.iter().filter_map(|id| target.endpoint(*id)).collect();
    let admin = opts.access.client(&eps, Duration::from_secs(2))?;
    let mut run = Run {
        target,
        admin: admin.clone(),
        channels: (0..scenario.workload.channels)
            .map(|i| format!("{PREFIX}{i}"))
            .collect(),
        t0: Instant::now(),
        timeline: Vec::new(),
        problems: Vec::new(),
        rng: fastrand::Rng::with_seed(seed),
        gone: BTreeSet::new(),
        access: opts.access.clone(),
    };
    let result = drive(&mut run, scenario, opts, seed, &eps).await;
    // Whatever happened, keep the node logs.
    let (mut report, ops) = match result {
        Ok(r) => r,
        Err(e) => {
            copy_logs(&mut run, &artifacts);
            return Err(e.context(format!("artifacts (node logs): {}", artifacts.display())));
        }
    };
    if let Target::Local(c) = &mut run.target {
        for e in c.exits() {
            report.problems.push(e.with_tail(30));
        }
    }
    report.artifacts = Some(artifacts.display().to_string());
    finish_verdict(&mut report);
    copy_logs(&mut run, &artifacts);
    let mut lines = String::new();
    for o in &ops {
        lines.push_str(&serde_json::to_string(o).context("encoding an operation")?);
        lines.push('\n');
    }
    std::fs::write(artifacts.join("history.jsonl"), lines)?;
    let text = super::report::text(&report);
    std::fs::write(artifacts.join("report.txt"), &text)?;
    std::fs::write(
        artifacts.join("report.json"),
        serde_json::to_string_pretty(&report).context("encoding the report")?,
    )?;
    Ok(report)
}

fn finish_verdict(r: &mut DrillReport) {
    let s = &r.safety;
    let mut reasons = Vec::new();
    for (n, what) in [
        (s.lost, "acknowledged messages lost"),
        (s.misplaced, "acknowledged messages at another seq"),
        (s.duplicated, "duplicated messages"),
        (s.reordered, "reordered acknowledgements"),
        (s.inconsistent, "inconsistent replicas or payloads"),
        (s.seq_gaps, "seq gaps"),
    ] {
        if n > 0 {
            reasons.push(format!("{n} {what}"));
        }
    }
    if s.acked == 0 {
        reasons.push("no write was acknowledged".into());
    }
    reasons.extend(r.problems.iter().cloned());
    r.verdict = if reasons.is_empty() { "PASS" } else { "FAIL" }.into();
    r.reasons = reasons;
}

fn copy_logs(run: &mut Run, artifacts: &std::path::Path) {
    let Target::Local(c) = &run.target else { return };
    let dir = artifacts.join("nodes");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for id in c.ids() {
        if let Some(p) = c.log_path(id) {
            let _ = std::fs::copy(&p, dir.join(format!("{id}.log")));
        }
    }
}

async fn drive(
    run: &mut Run,
    sc: &Scenario,
    opts: &RunOpts,
    seed: u64,
    eps: &[String],
) -> anyhow::Result<(DrillReport, Vec<crate::probe::Op>)> {
    let w = &sc.workload;
    create_channels(&run.admin, &run.channels, UID).await?;
    let writer_client = opts.access.client(eps, w.attempt_timeout.0)?;
    let clients = per_endpoint(&writer_client)?;
    let tag = run_tag();
    run.t0 = Instant::now();
    let specs = (0..w.writers)
        .map(|i| WriterSpec {
            id: i,
            clients: clients.clone(),
            uid: UID.into(),
            channel: run.channels[(i % w.channels) as usize].clone(),
            tag: format!("{tag}-w{i}"),
            payload_size: w.payload_size,
            interval: (w.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / w.rate)),
            op_timeout: w.op_timeout.0,
            t0: run.t0,
        })
        .collect();
    let mut writers = Writers::start(specs);
    let history = writers.history.clone();
    wait_for(
        "every writer's first acknowledgement",
        Poll::new(Duration::from_secs(30), Duration::from_millis(20)),
        || {
            let ops = history.snapshot();
            let n = (0..w.writers)
                .filter(|i| ops.iter().any(|o| o.writer == *i && o.outcome == OpOutcome::Ok))
                .count() as u32;
            async move { (n == w.writers).then_some(()) }
        },
    )
    .await?;
    run.event(format!(
        "{} writer(s) running on {} channel(s)",
        w.writers, w.channels
    ));

    let nodes_before = run.admin.nodes().await.context("GET /cluster/nodes")?;
    let cfg_before = run.configs(&run.admin).await;
    let before = Snapshot {
        meta_leader: nodes_before.meta_leader,
        nodes: nodes_before.nodes.clone(),
        channels: cfg_before.iter().flatten().cloned().collect(),
    };
    tokio::time::sleep(w.warmup.0).await;

    let mut faults = Vec::new();
    for (i, step) in sc.steps.iter().enumerate() {
        tokio::time::sleep(step.after.0).await;
        let f = inject(run, i + 1, step)
            .await
            .with_context(|| format!("step {} ({})", i + 1, step.fault.name()))?;
        faults.push(f);
    }

    // Heal whatever is left, then settle.
    if let Target::Local(c) = &mut run.target {
        c.resume_all();
    }
    for id in run.member_ids() {
        let _ = run.target.drill(&run.admin, id, &DrillReq::Heal).await;
    }
    let members = run.member_ids();
    let settle_client = run.client_for(&members, Duration::from_secs(1))?;
    let chans = run.channels.clone();
    let leaders = wait_for(
        "every probe channel to have a leader",
        Poll::new(Duration::from_secs(30), Duration::from_millis(50)),
        || async {
            let mut all = true;
            for ch in &chans {
                let ok = settle_client
                    .channel_config(ch, CHANNEL_TYPE_GROUP)
                    .await
                    .is_ok_and(|c| c.leader.is_some());
                all &= ok;
            }
            all.then_some(())
        },
    )
    .await;
    if let Err(e) = leaders {
        run.problems.push(format!("{e:#}"));
    }
    run.event("healed; every channel has a leader".into());
    tokio::time::sleep(w.settle.0).await;
    writers.pause(w.op_timeout.0 + Duration::from_secs(10)).await?;
    let duration_ms = run.ms();
    run.event("writers paused for the check".into());

    // Replicas must agree.
    let mut mismatches = 0u64;
    for ch in run.channels.clone() {
        let poll = Poll::new(w.converge_timeout.0, Duration::from_millis(50));
        let Err(e) = wait::replicas_agree(&settle_client, &ch, CHANNEL_TYPE_GROUP, None, poll).await else {
            continue;
        };
        match e.last {
            Some(NotAgreed::Disagree(r)) => {
                if let Agreement::Diverged(d) = r.agreement() {
                    mismatches += d.len() as u64;
                }
                run.problems.push(format!(
                    "{ch}: replicas did not agree within {}: {}",
                    humantime::format_duration(w.converge_timeout.0),
                    NotAgreed::Disagree(r)
                ));
            }
            Some(NotAgreed::Unreadable(e)) => run.problems.push(format!("{ch}: replicas unreadable: {e}")),
            None => {}
        }
    }
    run.event("replicas compared".into());

    // Read back through every node: each routes to the leader, so the answers must be equal.
    let mut stored: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
    for ch in run.channels.clone() {
        let mut first: Option<Vec<Stored>> = None;
        for id in &members {
            let Some(ep) = run.target.endpoint(*id) else {
                continue;
            };
            let one = opts.access.client(&[ep], Duration::from_secs(5))?;
            let msgs = read_channel(&one, UID, &ch)
                .await
                .with_context(|| format!("reading {ch} via node {id}"))?;
            match &first {
                None => first = Some(msgs),
                Some(f) if *f != msgs => {
                    mismatches += 1;
                    run.problems.push(format!(
                        "{ch}: node {id} read back {} messages, node {} read {}; they differ",
                        msgs.len(),
                        members[0],
                        f.len()
                    ));
                }
                Some(_) => {}
            }
        }
        stored.insert(ch, first.unwrap_or_default());
    }
    let failed_attempts = history.failed_attempts.load(std::sync::atomic::Ordering::Relaxed);
    let history = writers.stop(Duration::from_secs(10)).await?;
    let ops = history.snapshot();
    let safety = check::check(&ops, &stored, w.payload_size, mismatches);
    run.event(format!(
        "read back {} messages; checked {} acknowledged",
        safety.stored, safety.acked
    ));

    // Elections.
    let nodes_after = settle_client.nodes().await.ok();
    let cfg_after = run.configs(&settle_client).await;
    let channel_term_delta = cfg_before
        .iter()
        .zip(&cfg_after)
        .map(|(b, a)| match (b, a) {
            (Some(b), Some(a)) => a.term.saturating_sub(b.term),
            _ => 0,
        })
        .sum();
    let meta_term = |n: &wk_api::NodesResp| n.nodes.iter().map(|x| x.term).max().unwrap_or(0);
    let meta_term_delta = nodes_after
        .as_ref()
        .map(|a| meta_term(a).saturating_sub(meta_term(&nodes_before)))
        .unwrap_or(0);

    // Unavailability per writer and fault.
    let mut writers_fig = Vec::new();
    let mut per_writer_acks: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.outcome == OpOutcome::Ok) {
        per_writer_acks.entry(o.writer).or_default().push(o.end_ms);
    }
    for f in &mut faults {
        let v: Vec<f64> = per_writer_acks
            .values()
            .filter_map(|a| window(a, f.t_ms))
            .collect();
        f.unavailability_ms = pct(&v);
    }
    for i in 0..w.writers {
        let acks = per_writer_acks.get(&i).cloned().unwrap_or_default();
        let max = faults
            .iter()
            .filter_map(|f| window(&acks, f.t_ms))
            .reduce(f64::max)
            .map(|v| (v * 10.0).round() / 10.0);
        writers_fig.push(WriterFigures {
            writer: i,
            channel: run.channels[(i % w.channels) as usize].clone(),
            acked: acks.len() as u64,
            failed: ops
                .iter()
                .filter(|o| o.writer == i && o.outcome == OpOutcome::Failed)
                .count() as u64,
            max_unavailability_ms: max,
        });
    }

    let report = DrillReport {
        version: REPORT_VERSION,
        scenario: sc.name.clone(),
        seed,
        target: if run.target.is_local() { "local" } else { "remote" }.into(),
        workload: WorkloadFigures {
            channels: w.channels,
            writers: w.writers,
            duration_ms,
            failed_attempts,
        },
        before,
        timeline: run.timeline.clone(),
        faults,
        writers: writers_fig,
        elections: Elections {
            channel_term_delta,
            meta_term_delta,
        },
        safety,
        problems: run.problems.clone(),
        artifacts: None,
        verdict: String::new(),
        reasons: Vec::new(),
    };
    Ok((report, ops))
}
