//! Runs one scenario: start (or reach) the cluster, start the probe writers, inject each
//! step's fault and heal it, let the cluster settle, pause the writers, wait for the replicas
//! to agree, read everything back and check it (`check`), then write the report and the
//! artifacts (`history.jsonl`, `report.json`, `report.txt`, `nodes/<id>.log`).
//!
//! Leader changes are measured by polling `/cluster/channels/{id}/{type}/config` on the
//! nodes the fault did not hit, every 20 ms, in a task that does HTTP only; nodes are started
//! and stopped only from this future (see `cmd::local`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wk_api::{Agreement, CHANNEL_TYPE_GROUP, ChannelConfig, ChannelReplicas, Client, DrillReq, JoinReq};

use super::check::{self, pct, window};
use super::report::{
    DrillReport, Elections, Event, FaultReport, REPORT_VERSION, Snapshot, WorkloadFigures, WriterFigures,
};
use super::scenario::{Fault, NodeSel, Role, Scenario, Step};
use super::target::{LocalCluster, Target};
use crate::cmd::probe::{
    OpOutcome, Stored, WriterSpec, Writers, create_channels, node_urls, per_endpoint, read_channel, run_tag,
    wait_for,
};

/// The probe channels are `drill-0..N`, written by uid `drill`.
const PREFIX: &str = "drill-";
const UID: &str = "drill";
/// How long a leader watch runs after its fault was injected.
const WATCH_FOR: Duration = Duration::from_secs(10);
/// Per-request timeout of the leader watch: `/config` probes every replica, and a paused
/// replica answers nothing, so the node needs its own probe timeout to pass.
const WATCH_TIMEOUT: Duration = Duration::from_millis(1500);

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
    fn client(&self, endpoints: &[String], timeout: Duration) -> anyhow::Result<Client> {
        Ok(Client::new_with_ca(endpoints, timeout, self.tls_ca.as_deref())?
            .with_token(self.admin_token.clone()))
    }
}

/// Everything the run keeps while it goes.
struct Run {
    target: Target,
    admin: Client,
    channels: Vec<String>,
    t0: Instant,
    timeline: Vec<Event>,
    problems: Vec<String>,
    rng: fastrand::Rng,
    /// Nodes that left the cluster for good (removed).
    gone: BTreeSet<u64>,
    access: Access,
}

impl Run {
    fn ms(&self) -> f64 {
        ms_since(self.t0)
    }

    fn event(&mut self, what: String) {
        eprintln!("wkctl: drill: {what}");
        let t_ms = self.ms();
        self.timeline.push(Event { t_ms, what });
    }

    /// Endpoints of every member node (remote: as `/cluster/nodes` listed them at the start).
    fn member_ids(&self) -> Vec<u64> {
        let all: Vec<u64> = match &self.target {
            Target::Local(c) => c.ids(),
            Target::Remote { endpoints } => endpoints.keys().copied().collect(),
        };
        all.into_iter().filter(|id| !self.gone.contains(id)).collect()
    }

    fn client_for(&self, ids: &[u64], timeout: Duration) -> anyhow::Result<Client> {
        let eps: Vec<String> = ids.iter().filter_map(|id| self.target.endpoint(*id)).collect();
        if eps.is_empty() {
            bail!("no node left to ask");
        }
        self.access.client(&eps, timeout)
    }

    async fn configs(&self, via: &Client) -> Vec<Option<ChannelConfig>> {
        let mut out = Vec::new();
        for ch in &self.channels {
            out.push(via.channel_config(ch, CHANNEL_TYPE_GROUP).await.ok());
        }
        out
    }

    async fn resolve(&mut self, sel: &NodeSel, step: &Step) -> anyhow::Result<u64> {
        let role = match sel {
            NodeSel::Id(id) => return Ok(*id),
            NodeSel::Role(r) => *r,
        };
        let ch = step.channel.clone().unwrap_or_else(|| format!("{PREFIX}0"));
        let admin = self.admin.clone();
        let cfg = wait_for(
            &format!("a leader of {ch}"),
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async {
                admin
                    .channel_config(&ch, step.channel_type)
                    .await
                    .ok()
                    .filter(|c| c.leader.is_some())
            },
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

fn ms_since(t0: Instant) -> f64 {
    (t0.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// Leader changes of the affected channels after a fault, polled on `survivors`.
struct Watch {
    /// (channel, leader before, term before)
    affected: Vec<(String, Option<u64>, u64)>,
    task: tokio::task::JoinHandle<Vec<(Option<f64>, Option<f64>)>>,
}

fn start_watch(survivors: Client, affected: Vec<(String, Option<u64>, u64)>, since: Instant) -> Watch {
    let list = affected.clone();
    let task = tokio::spawn(async move {
        let mut out: Vec<(Option<f64>, Option<f64>)> = vec![(None, None); list.len()];
        let deadline = since + WATCH_FOR;
        while Instant::now() < deadline && out.iter().any(|o| o.1.is_none()) {
            // One request per channel still waiting, concurrently.
            let mut set = tokio::task::JoinSet::new();
            for (i, (ch, _, _)) in list.iter().enumerate() {
                if out[i].1.is_none() {
                    let (c, ch) = (survivors.clone(), ch.clone());
                    set.spawn(async move {
                        let r = c.channel_config(&ch, CHANNEL_TYPE_GROUP).await;
                        (i, r, since.elapsed().as_secs_f64() * 1000.0)
                    });
                }
            }
            while let Some(Ok((i, r, t))) = set.join_next().await {
                let (_, old_leader, old_term) = &list[i];
                let Ok(c) = r else { continue };
                if out[i].0.is_none() && (c.term > *old_term || c.leader.is_none() || c.leader != *old_leader)
                {
                    out[i].0 = Some(t);
                }
                if c.term > *old_term && c.leader.is_some() {
                    out[i].0.get_or_insert(t);
                    out[i].1 = Some(t);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        out
    });
    Watch { affected, task }
}

async fn finish_watch(w: Watch, f: &mut FaultReport) {
    let res = match w.task.await {
        Ok(r) => r,
        Err(_) => return,
    };
    f.affected_channels = w.affected.iter().map(|a| a.0.clone()).collect();
    let detect: Vec<f64> = res.iter().filter_map(|r| r.0).collect();
    let leader: Vec<f64> = res.iter().filter_map(|r| r.1).collect();
    f.detect_ms = pct(&detect);
    f.new_leader_ms = pct(&leader);
    f.leaderless = w
        .affected
        .iter()
        .zip(&res)
        .filter(|(_, r)| r.1.is_none())
        .map(|(a, _)| a.0.clone())
        .collect();
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
            LocalCluster::start(opts.wknode.as_deref(), scenario.nodes, &scenario.node_args).await?,
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
        for n in c.exits() {
            report.problems.push(n);
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
) -> anyhow::Result<(DrillReport, Vec<crate::cmd::probe::Op>)> {
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
        Duration::from_secs(30),
        Duration::from_millis(20),
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
        Duration::from_secs(30),
        Duration::from_millis(50),
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
        let deadline = Instant::now() + w.converge_timeout.0;
        loop {
            let r = settle_client.channel_replicas(&ch, CHANNEL_TYPE_GROUP).await;
            let agreement = r.as_ref().map(ChannelReplicas::agreement);
            if let Ok(Agreement::Agree { .. }) = agreement {
                break;
            }
            if Instant::now() >= deadline {
                if let Ok(Agreement::Diverged(d)) = &agreement {
                    mismatches += d.len() as u64;
                }
                match r {
                    Ok(r) => {
                        run.problems.push(format!(
                            "{ch}: replicas did not agree within {}: {}",
                            humantime::format_duration(w.converge_timeout.0),
                            r.replicas
                                .iter()
                                .map(|x| format!(
                                    "node {} online {} seq {} checksum {}",
                                    x.node_id, x.online, x.message_seq, x.checksum
                                ))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ));
                    }
                    Err(e) => run.problems.push(format!("{ch}: replicas unreadable: {e}")),
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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

/// The pre-fault view: each probe channel's leader and term, as `via` sees it.
async fn affected_by(run: &Run, hit: &BTreeSet<u64>) -> Vec<(String, Option<u64>, u64)> {
    let mut out = Vec::new();
    for (ch, c) in run.channels.iter().zip(run.configs(&run.admin).await) {
        if let Some(c) = c
            && (hit.is_empty() || c.leader.is_some_and(|l| hit.contains(&l)))
        {
            out.push((ch.clone(), c.leader, c.term));
        }
    }
    out
}

fn survivors(run: &Run, hit: &BTreeSet<u64>) -> anyhow::Result<Client> {
    let ids: Vec<u64> = run
        .member_ids()
        .into_iter()
        .filter(|id| !hit.contains(id))
        .collect();
    run.client_for(&ids, WATCH_TIMEOUT)
}

fn new_fault(step: usize, kind: &str, nodes: Vec<u64>, t_ms: f64) -> FaultReport {
    FaultReport {
        step,
        kind: kind.into(),
        nodes,
        t_ms,
        affected_channels: Vec::new(),
        detect_ms: None,
        new_leader_ms: None,
        leaderless: Vec::new(),
        unavailability_ms: None,
        catch_up_ms: None,
        notes: Vec::new(),
    }
}

/// Waits until node `id` holds, on every probe channel it replicates, at least the messages
/// the most advanced replica had when this was called. Answers the time it took.
async fn catch_up(run: &Run, id: u64) -> Option<f64> {
    let started = Instant::now();
    let via = survivors(run, &BTreeSet::from([id])).ok()?;
    let mut targets = Vec::new();
    for ch in &run.channels {
        let Ok(r) = via.channel_replicas(ch, CHANNEL_TYPE_GROUP).await else {
            continue;
        };
        if r.replicas.iter().any(|x| x.node_id == id) {
            targets.push((ch.clone(), r.top_seq()));
        }
    }
    let deadline = started + Duration::from_secs(30);
    loop {
        let mut all = true;
        for (ch, top) in &targets {
            let ok = via.channel_replicas(ch, CHANNEL_TYPE_GROUP).await.is_ok_and(|r| {
                r.replicas
                    .iter()
                    .any(|x| x.node_id == id && x.message_seq >= *top)
            });
            all &= ok;
        }
        if all {
            return Some(ms_since(started));
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn inject(run: &mut Run, step_no: usize, step: &Step) -> anyhow::Result<FaultReport> {
    match &step.fault {
        Fault::Kill { node, down } => {
            let id = run.resolve(node, step).await?;
            let hit = BTreeSet::from([id]);
            let affected = affected_by(run, &hit).await;
            let surv = survivors(run, &hit)?;
            run.target.local("kill")?.kill(id)?;
            let t = Instant::now();
            let mut f = new_fault(step_no, "kill", vec![id], run.ms());
            run.event(format!("SIGKILL node {id}"));
            let watch = start_watch(surv, affected, t);
            tokio::time::sleep(down.0).await;
            run.target.local("kill")?.restart(id).await?;
            run.event(format!("node {id} restarted on its data dir"));
            f.catch_up_ms = catch_up(run, id).await;
            finish_watch(watch, &mut f).await;
            Ok(f)
        }
        Fault::Pause { node, hold } => {
            let id = run.resolve(node, step).await?;
            let hit = BTreeSet::from([id]);
            let affected = affected_by(run, &hit).await;
            let surv = survivors(run, &hit)?;
            run.target.local("pause")?.pause(id)?;
            let t = Instant::now();
            let mut f = new_fault(step_no, "pause", vec![id], run.ms());
            run.event(format!(
                "SIGSTOP node {id} for {}",
                humantime::format_duration(hold.0)
            ));
            let watch = start_watch(surv, affected, t);
            tokio::time::sleep(hold.0).await;
            run.target.local("pause")?.resume(id)?;
            run.event(format!("SIGCONT node {id}"));
            f.catch_up_ms = catch_up(run, id).await;
            finish_watch(watch, &mut f).await;
            Ok(f)
        }
        Fault::Isolate { node, peers, hold } => {
            let id = run.resolve(node, step).await?;
            isolate(run, step_no, "isolate", &[(id, peers.clone())], hold.0).await
        }
        Fault::Partition { minority, hold } => {
            let mut ids = BTreeSet::new();
            for sel in minority {
                ids.insert(run.resolve(sel, step).await?);
            }
            let majority: Vec<u64> = run
                .member_ids()
                .into_iter()
                .filter(|id| !ids.contains(id))
                .collect();
            let plan: Vec<(u64, Vec<u64>)> = ids.iter().map(|id| (*id, majority.clone())).collect();
            isolate(run, step_no, "partition", &plan, hold.0).await
        }
        Fault::SlowDisk { node, delay, hold } => {
            let id = run.resolve(node, step).await?;
            let req = DrillReq::SlowDisk {
                delay_ms: delay.0.as_millis() as u64,
                duration_ms: hold.0.as_millis() as u64,
            };
            run.target.drill(&run.admin, id, &req).await?;
            let f = new_fault(step_no, "slow-disk", vec![id], run.ms());
            run.event(format!(
                "slow disk on node {id}: +{} per commit for {}",
                humantime::format_duration(delay.0),
                humantime::format_duration(hold.0)
            ));
            tokio::time::sleep(hold.0).await;
            run.target.drill(&run.admin, id, &DrillReq::Heal).await?;
            run.event(format!("node {id} healed"));
            Ok(f)
        }
        Fault::DiskLoss { node } => {
            let id = run.resolve(node, step).await?;
            let hit = BTreeSet::from([id]);
            let affected = affected_by(run, &hit).await;
            let surv = survivors(run, &hit)?;
            let other = run
                .member_ids()
                .into_iter()
                .find(|n| *n != id)
                .context("disk loss needs another node")?;
            {
                let c = run.target.local("disk-loss")?;
                c.kill(id)?;
                c.wipe(id)?;
            }
            let t = Instant::now();
            let mut f = new_fault(step_no, "disk-loss", vec![id], run.ms());
            run.event(format!("SIGKILL node {id} and wiped its data dir"));
            let watch = start_watch(surv.clone(), affected, t);
            // The empty node must not come back as the member it was (its votes and log are
            // gone): take it out first, then admit it as a new member with the same id.
            let long = run.access.client(
                &[run.target.endpoint(other).context("endpoint")?],
                Duration::from_secs(180),
            )?;
            let rm = long
                .remove_node(id, false)
                .await
                .with_context(|| format!("removing node {id}"))?;
            run.event(format!(
                "node {id} removed: {} channel(s) moved, {} stuck, left metadata: {}",
                rm.moved,
                rm.stuck.len(),
                rm.removed
            ));
            f.notes.push(format!(
                "removal moved {} channel(s), stuck {:?}",
                rm.moved, rm.stuck
            ));
            let c = run.target.local("disk-loss")?;
            c.boot_with_seed(id, other)?;
            c.restart(id).await?;
            let addr = c.cluster_addr(id).context("address")?;
            let http = c.endpoint(id).context("endpoint")?;
            run.event(format!("node {id} started empty with --seed {other}"));
            let t_join = Instant::now();
            let jr = long
                .join(&JoinReq {
                    node_id: id,
                    cluster_addr: addr,
                    http_addr: http.trim_start_matches("http://").to_string(),
                })
                .await
                .with_context(|| format!("admitting node {id} again"))?;
            run.event(format!(
                "node {id} admitted again: voter {}, {} active channel(s) migrated, backlog {}",
                jr.voter, jr.active_migrated, jr.backlog
            ));
            let join_ms = ms_since(t_join);
            f.catch_up_ms = catch_up(run, id).await.map(|c| c + join_ms);
            f.notes.push(format!(
                "re-admitted in {:.0} ms (metadata {} ms), {} active channel(s) migrated, backlog {}",
                ms_since(t_join),
                jr.metadata_ms,
                jr.active_migrated,
                jr.backlog
            ));
            finish_watch(watch, &mut f).await;
            Ok(f)
        }
        Fault::ScaleOut => {
            let seed_node = run.member_ids().first().copied().context("no node")?;
            let c = run.target.local("scale-out")?;
            let id = c.plan_new()?;
            c.boot_with_seed(id, seed_node)?;
            c.restart(id).await?;
            let addr = c.cluster_addr(id).context("address")?;
            let http = c.endpoint(id).context("endpoint")?;
            let mut f = new_fault(step_no, "scale-out", vec![id], run.ms());
            run.event(format!("node {id} started with --seed {seed_node}"));
            let long = run.access.client(
                &[run.target.endpoint(seed_node).context("endpoint")?],
                Duration::from_secs(180),
            )?;
            let t_join = Instant::now();
            let jr = long
                .join(&JoinReq {
                    node_id: id,
                    cluster_addr: addr,
                    http_addr: http.trim_start_matches("http://").to_string(),
                })
                .await
                .with_context(|| format!("admitting node {id}"))?;
            run.event(format!(
                "node {id} admitted: voter {}, {} active channel(s) migrated, backlog {}",
                jr.voter, jr.active_migrated, jr.backlog
            ));
            let join_ms = ms_since(t_join);
            f.catch_up_ms = catch_up(run, id).await.map(|c| c + join_ms);
            f.notes.push(format!(
                "join answered in {join_ms:.0} ms (metadata {} ms), {} active channel(s) migrated, backlog {}",
                jr.metadata_ms, jr.active_migrated, jr.backlog
            ));
            Ok(f)
        }
        Fault::Remove { node } => {
            let id = run.resolve(node, step).await?;
            let hit = BTreeSet::from([id]);
            let affected = affected_by(run, &hit).await;
            let surv = survivors(run, &hit)?;
            let other = run
                .member_ids()
                .into_iter()
                .find(|n| *n != id)
                .context("no other node")?;
            let long = run.access.client(
                &[run.target.endpoint(other).context("endpoint")?],
                Duration::from_secs(180),
            )?;
            let t = Instant::now();
            let mut f = new_fault(step_no, "remove", vec![id], run.ms());
            run.event(format!("decommissioning node {id}"));
            let watch = start_watch(surv, affected, t);
            let rm = long
                .remove_node(id, false)
                .await
                .with_context(|| format!("removing node {id}"))?;
            run.event(format!(
                "node {id} removed in {:.0} ms: {} channel(s) moved, stuck {:?}, left metadata: {}",
                ms_since(t),
                rm.moved,
                rm.stuck,
                rm.removed
            ));
            if !rm.removed {
                run.problems
                    .push(format!("node {id} was not removed: stuck {:?}", rm.stuck));
            }
            f.notes
                .push(format!("removal took {:.0} ms, moved {}", ms_since(t), rm.moved));
            run.gone.insert(id);
            if let Target::Local(c) = &mut run.target {
                c.terminate(id, Duration::from_secs(5))?;
                run.event(format!("node {id} stopped"));
            } else {
                f.notes.push(format!("node {id} still runs: stop it yourself"));
            }
            finish_watch(watch, &mut f).await;
            Ok(f)
        }
        Fault::RestartAll { crash, down } => {
            let ids = run.member_ids();
            let affected = affected_by(run, &BTreeSet::new()).await;
            {
                let c = run.target.local("restart-all")?;
                for id in &ids {
                    if *crash {
                        c.kill(*id)?;
                    } else {
                        c.terminate(*id, Duration::from_secs(10))?;
                    }
                }
            }
            let mut f = new_fault(step_no, "restart-all", ids.clone(), run.ms());
            run.event(format!(
                "{} every node ({:?})",
                if *crash { "SIGKILL" } else { "SIGTERM" },
                ids
            ));
            tokio::time::sleep(down.0).await;
            let t = Instant::now();
            {
                let c = run.target.local("restart-all")?;
                for id in &ids {
                    c.restart(*id).await?;
                }
            }
            run.event("every node restarted".into());
            let all = run.client_for(&ids, WATCH_TIMEOUT)?;
            let watch = start_watch(all, affected, t);
            finish_watch(watch, &mut f).await;
            f.notes.push("leader times count from the restart".into());
            Ok(f)
        }
    }
}

/// Isolates each `(node, peers)` (empty peers: all) for `hold`, then heals them.
async fn isolate(
    run: &mut Run,
    step_no: usize,
    kind: &str,
    plan: &[(u64, Vec<u64>)],
    hold: Duration,
) -> anyhow::Result<FaultReport> {
    let hit: BTreeSet<u64> = plan.iter().map(|p| p.0).collect();
    let affected = affected_by(run, &hit).await;
    let surv = survivors(run, &hit)?;
    // The node heals itself after `duration_ms` too; the explicit heal below is the normal
    // path, the timer a safety net should wkctl die.
    let safety_net = hold + Duration::from_secs(30);
    for (id, peers) in plan {
        let req = DrillReq::Isolate {
            peers: peers.clone(),
            duration_ms: safety_net.as_millis() as u64,
        };
        run.target.drill(&run.admin, *id, &req).await?;
    }
    let t = Instant::now();
    let mut f = new_fault(step_no, kind, hit.iter().copied().collect(), run.ms());
    for (id, peers) in plan {
        let with = if peers.is_empty() {
            "every peer".to_string()
        } else {
            format!("{peers:?}")
        };
        run.event(format!(
            "isolate node {id} from {with} for {}",
            humantime::format_duration(hold)
        ));
    }
    let watch = start_watch(surv, affected, t);
    tokio::time::sleep(hold).await;
    for (id, _) in plan {
        run.target.drill(&run.admin, *id, &DrillReq::Heal).await?;
    }
    run.event(format!("healed {:?}", hit));
    let mut cu: Option<f64> = Some(0.0);
    for id in &hit {
        let c = catch_up(run, *id).await;
        cu = match (cu, c) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    f.catch_up_ms = cu;
    finish_watch(watch, &mut f).await;
    Ok(f)
}
