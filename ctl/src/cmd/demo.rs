//! `wkctl demo`: a real local cluster of `wknode` child processes plus a live status view.
//!
//! Invariants:
//! - Every child is owned by a `Nodes` guard from the moment it is spawned; dropping the guard
//!   (normal exit, error, panic unwind) sends SIGTERM, waits a little, then SIGKILLs and reaps.
//!   On Linux the children also get `PR_SET_PDEATHSIG`, so even a SIGKILLed `wkctl` leaves no
//!   node behind.
//! - Children run in their own process group, so a terminal Ctrl-C reaches only `wkctl`, which
//!   then stops the nodes in order and reports it.
//! - Node N listens on `base-http-port + N - 1` and `base-cluster-port + N - 1`; every node
//!   gets the same `--init-nodes` string, so restarting on the same data dir is the same cluster.
//! - Demo nodes run with `--allow-drills` (a local throwaway cluster: the dashboard's failover
//!   drills may crash or isolate them). The plan for one more node ([`ScaleOut`], the next id
//!   on the next ports, started with `--seed` instead of `--init-nodes`) is kept so the
//!   dashboard can scale out.
//!
//! Spawning, ready lines and the drop guard live in `cmd::local`, shared with `wkctl bench`.

use std::fs;
use std::io::IsTerminal;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use wk_api::{Client, ReadyLine};

use super::local::{NodePlan, Nodes, STOP_GRACE, find_wknode, init_nodes, wait_ready};
use crate::Outcome;
use crate::cli::{DemoArgs, GlobalArgs};
use crate::output;

/// How often the status view refreshes.
const REFRESH: Duration = Duration::from_secs(1);

/// Lays out `n` nodes on loopback ports counting up from the two bases.
fn plan(args: &DemoArgs) -> anyhow::Result<Vec<NodePlan>> {
    (1..=args.nodes)
        .map(|id| {
            let offset = u16::try_from(id - 1).expect("--nodes is at most 9");
            let http_port = args.base_http_port.checked_add(offset);
            let cluster_port = args.base_cluster_port.checked_add(offset);
            match (http_port, cluster_port) {
                (Some(http_port), Some(cluster_port)) => Ok(NodePlan {
                    id,
                    http_port,
                    cluster_port,
                    dir: args.data_dir.join(id.to_string()),
                }),
                _ => bail!("port out of range for node {id}: lower --base-http-port/--base-cluster-port"),
            }
        })
        .collect()
}

/// `--fresh`: removes the per-node directories (numeric names) under `data_dir`, nothing else,
/// so a mistyped `--data-dir` cannot wipe unrelated files.
fn wipe(data_dir: &Path) -> anyhow::Result<usize> {
    let entries = match fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", data_dir.display())),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", data_dir.display()))?;
        let is_node_dir = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.parse::<u64>().is_ok());
        if is_node_dir && entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// How to start one more node next to the demo's: the next id on the next ports, in the same
/// data dir, joining through `--seed` (node 1) instead of `--init-nodes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleOut {
    /// The `wknode` binary the demo runs.
    pub bin: std::path::PathBuf,
    /// Id, ports and data dir of the next node.
    pub plan: NodePlan,
    /// The `--seed` value: `ID@ADDR` of the first demo node.
    pub seed: String,
}

/// The plan for node `args.nodes + 1`; None when its ports would not fit in 16 bits.
fn scale_out(args: &DemoArgs, bin: &Path, plan: &[NodePlan]) -> Option<ScaleOut> {
    let first = plan.first()?;
    let id = args.nodes + 1;
    let offset = u16::try_from(args.nodes).ok()?;
    Some(ScaleOut {
        bin: bin.to_path_buf(),
        plan: NodePlan {
            id,
            http_port: args.base_http_port.checked_add(offset)?,
            cluster_port: args.base_cluster_port.checked_add(offset)?,
            dir: args.data_dir.join(id.to_string()),
        },
        seed: format!("{}@127.0.0.1:{}", first.id, first.cluster_port),
    })
}

/// The arguments every demo node gets after its id, dir and addresses.
fn demo_node_args(init: &str) -> Vec<String> {
    vec!["--init-nodes".into(), init.into(), "--allow-drills".into()]
}

/// Fails early, with a useful hint, when a port is taken (e.g. by another demo).
fn check_ports(plan: &[NodePlan]) -> anyhow::Result<()> {
    for n in plan {
        for (what, port) in [("HTTP", n.http_port), ("cluster", n.cluster_port)] {
            TcpListener::bind(("127.0.0.1", port)).with_context(|| {
                format!(
                    "{what} port {port} for node {} is in use (another demo or wknode running?); \
                     stop it or choose other --base-http-port/--base-cluster-port",
                    n.id
                )
            })?;
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, with the signal's name.
struct Shutdown {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn new() -> anyhow::Result<Shutdown> {
        Ok(Shutdown {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "interrupted",
            _ = self.term.recv() => "terminated",
        }
    }
}

/// What to print once every node is ready: addresses and copy-paste examples.
fn banner(args: &DemoArgs, ready: &[(NodePlan, ReadyLine)], next: Option<&ScaleOut>) -> String {
    let mut s = format!(
        "WuKong HA demo: {} node(s), data under {} (each node logs to <id>/wknode.log)\n\n",
        ready.len(),
        args.data_dir.display()
    );
    for (plan, r) in ready {
        s.push_str(&format!(
            "  node {}  http http://{}  cluster {}  data {}\n",
            plan.id,
            r.http_addr,
            r.cluster_addr,
            plan.dir.display()
        ));
        if let Some(ws) = &r.ws_addr {
            s.push_str(&format!(
                "          IM clients: ws://{ws}  tcp {}\n",
                r.tcp_addr.as_deref().unwrap_or("off")
            ));
        }
    }
    let first = ready
        .first()
        .map(|(_, r)| format!("http://{}", r.http_addr))
        .unwrap_or_default();
    let other = ready
        .last()
        .map(|(_, r)| format!("http://{}", r.http_addr))
        .unwrap_or_default();
    let endpoints = ready
        .iter()
        .map(|(_, r)| r.http_addr.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let json = "-H 'Content-Type: application/json'";
    s.push_str(&format!(
        "\nTry it from another terminal (any node serves any request):\n\
         \x20 curl -s {first}/channel {json} -d '{{\"channel_id\":\"g1\",\"channel_type\":2,\"subscribers\":[\"alice\",\"bob\"]}}'\n\
         \x20 curl -s {first}/message/send {json} -d '{{\"from_uid\":\"alice\",\"channel_id\":\"g1\",\"channel_type\":2,\"payload\":\"aGVsbG8=\"}}'\n\
         \x20 curl -s {other}/channel/messagesync {json} -d '{{\"login_uid\":\"bob\",\"channel_id\":\"g1\",\"channel_type\":2,\"start_message_seq\":0,\"limit\":10,\"pull_mode\":1}}'\n\
         \x20 wkctl --endpoint {endpoints} cluster status\n\n"
    ));
    if let Some(n) = next {
        s.push_str(&format!(
            "Nodes accept drills (--allow-drills). Scale-out (s in the dashboard) starts {} as node {} \
             on http 127.0.0.1:{}, cluster 127.0.0.1:{}, data {}, --seed {}\n\n",
            n.bin.display(),
            n.plan.id,
            n.plan.http_port,
            n.plan.cluster_port,
            n.plan.dir.display(),
            n.seed
        ));
    }
    s
}

pub async fn run(global: &GlobalArgs, args: DemoArgs) -> anyhow::Result<Outcome> {
    let bin = find_wknode(args.wknode.as_deref())?;
    let plan = plan(&args)?;
    if args.fresh {
        let removed = wipe(&args.data_dir)?;
        eprintln!(
            "wkctl: --fresh: removed {removed} node director(ies) under {}",
            args.data_dir.display()
        );
    }
    check_ports(&plan)?;
    let init = init_nodes(&plan);
    let mut shutdown = Shutdown::new()?;

    let mut nodes = Nodes::default();
    let mut waiting = Vec::new();
    for p in &plan {
        let reused = fs::read_dir(&p.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        eprintln!(
            "wkctl: starting node {} ({}){}",
            p.id,
            bin.display(),
            if reused {
                format!(", reusing {}", p.dir.display())
            } else {
                String::new()
            }
        );
        waiting.push((p.clone(), nodes.spawn_args(&bin, p, &demo_node_args(&init))?));
    }

    let mut ready = Vec::new();
    for (p, rx) in waiting {
        let r = tokio::select! {
            sig = shutdown.recv() => {
                eprintln!("wkctl: {sig} while starting; stopping the nodes");
                nodes.stop(STOP_GRACE, true);
                return Ok(Outcome::Ok);
            }
            r = wait_ready(&p, rx, args.ready_timeout) => r?,
        };
        eprintln!("wkctl: node {} ready on http://{}", r.node_id, r.http_addr);
        ready.push((p, r));
    }

    let mut out = std::io::stdout().lock();
    let next = scale_out(&args, &bin, &plan);
    let banner = banner(&args, &ready, next.as_ref());
    // On a terminal the dashboard (wk-tui) takes the screen; otherwise one status line is
    // printed whenever it changes. The banner goes first either way (on a terminal it is back
    // in view once the dashboard closes).
    let tty = out.is_terminal();
    output::write_text(&mut out, &banner)?;
    let endpoints: Vec<String> = ready
        .iter()
        .map(|(_, r)| format!("http://{}", r.http_addr))
        .collect();
    let client = Client::new(&endpoints, global.timeout.min(Duration::from_secs(2)))
        .context("building the status client")?
        .with_token(global.admin_token.clone());
    if tty {
        drop(out);
        let timeout = global.timeout.min(Duration::from_secs(2));
        let join_client = Client::new(&endpoints, super::scale::JOIN_TIMEOUT)
            .context("building the join client")?
            .with_token(global.admin_token.clone());
        let demo = Demo {
            count: ready.len(),
            client,
            join_client,
            timeout,
            next,
        };
        return dashboard(&args, demo, &mut nodes, &mut shutdown).await;
    }

    let mut last_line = String::new();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopped_by = tokio::select! {
            sig = shutdown.recv() => Some(sig),
            _ = tick.tick() => None,
        };
        if let Some(sig) = stopped_by {
            eprintln!("wkctl: {sig}; stopping the cluster");
            break;
        }
        for notice in nodes.reap() {
            eprintln!("wkctl: {notice}");
        }
        if nodes.running() == 0 {
            bail!(
                "every node has exited; see the logs under {}",
                args.data_dir.display()
            );
        }
        let view = tokio::select! {
            v = client.nodes() => v,
            sig = shutdown.recv() => {
                eprintln!("wkctl: {sig}; stopping the cluster");
                break;
            }
        };
        let line = match &view {
            Ok(v) => output::nodes_line(v),
            Err(e) => format!("cluster status unavailable: {e}"),
        };
        if line != last_line {
            output::write_text(&mut out, &format!("{line}\n"))?;
            last_line = line;
        }
    }
    nodes.stop(STOP_GRACE, true);
    Ok(Outcome::Ok)
}

/// On a terminal: the live dashboard over the demo cluster until it is closed (`q`, Esc or
/// Ctrl-C in it: raw mode turns Ctrl-C into a key) or SIGINT/SIGTERM arrives from outside;
/// then every node is stopped. Node exits are collected meanwhile and printed once the
/// terminal is restored, so nothing garbles the screen.
/// What the dashboard over the demo needs.
struct Demo {
    /// How many nodes the demo started.
    count: usize,
    /// The polling client (every node's endpoint).
    client: Client,
    /// For `POST /cluster/join` (long timeout).
    join_client: Client,
    /// Per-request timeout of the polls.
    timeout: Duration,
    /// The next node scale-out starts; None when its ports do not fit.
    next: Option<ScaleOut>,
}

/// The dashboard's launcher asks the demo loop (which owns the children) to start the next
/// node; the reply is its plan and its ready line to come.
type LaunchReply = oneshot::Sender<anyhow::Result<(NodePlan, oneshot::Receiver<anyhow::Result<ReadyLine>>)>>;

/// A [`wk_tui::scale::Launcher`] that goes through `tx` to the demo loop and waits for the
/// new node's ready line.
fn launcher(tx: mpsc::Sender<LaunchReply>, ready_timeout: Duration) -> wk_tui::scale::Launcher {
    std::sync::Arc::new(move || {
        let tx = tx.clone();
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            tx.send(reply)
                .await
                .map_err(|_| "the demo is stopping".to_string())?;
            let (plan, ready) = rx
                .await
                .map_err(|_| "the demo is stopping".to_string())?
                .map_err(|e| format!("{e:#}"))?;
            let r = wait_ready(&plan, ready, ready_timeout)
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(wk_tui::scale::Launched {
                node_id: r.node_id,
                cluster_addr: r.cluster_addr,
                http_addr: r.http_addr,
            })
        })
    })
}

/// Starts the next scale-out node (owned by `nodes` like the others) and moves `next` on by
/// one id and one port each.
fn launch_next(
    next: &mut Option<ScaleOut>,
    nodes: &mut Nodes,
) -> anyhow::Result<(NodePlan, oneshot::Receiver<anyhow::Result<ReadyLine>>)> {
    let n = next
        .as_ref()
        .context("no ports left for another node (lower --base-http-port/--base-cluster-port)")?
        .clone();
    check_ports(std::slice::from_ref(&n.plan))?;
    let args = ["--seed".to_string(), n.seed.clone(), "--allow-drills".to_string()];
    let ready = nodes.spawn_args(&n.bin, &n.plan, &args)?;
    *next = (|| {
        Some(ScaleOut {
            plan: NodePlan {
                id: n.plan.id + 1,
                http_port: n.plan.http_port.checked_add(1)?,
                cluster_port: n.plan.cluster_port.checked_add(1)?,
                dir: n.plan.dir.with_file_name((n.plan.id + 1).to_string()),
            },
            ..n.clone()
        })
    })();
    Ok((n.plan, ready))
}

async fn dashboard(
    args: &DemoArgs,
    demo: Demo,
    nodes: &mut Nodes,
    shutdown: &mut Shutdown,
) -> anyhow::Result<Outcome> {
    let title = format!(
        "demo: {} local node(s), data {} · q stops the cluster",
        demo.count,
        args.data_dir.display()
    );
    let (launch_tx, mut launch_rx) = mpsc::channel::<LaunchReply>(1);
    let mut next = demo.next;
    let mut opts = super::top::options(title, REFRESH, demo.timeout, 200);
    opts.launcher = Some(launcher(launch_tx, args.ready_timeout));
    opts.join_client = Some(demo.join_client);
    let mut dash = Box::pin(wk_tui::run(demo.client, opts));
    let mut reap = tokio::time::interval(REFRESH);
    let mut notices: Vec<String> = Vec::new();
    let ended: anyhow::Result<String> = loop {
        tokio::select! {
            r = &mut dash => break r.context("dashboard").map(|()| "dashboard closed".to_string()),
            sig = shutdown.recv() => break Ok(sig.to_string()),
            Some(reply) = launch_rx.recv() => {
                let _ = reply.send(launch_next(&mut next, nodes));
            }
            _ = reap.tick() => {
                notices.extend(nodes.reap());
                if nodes.running() == 0 {
                    break Err(anyhow::anyhow!(
                        "every node has exited; see the logs under {}",
                        args.data_dir.display()
                    ));
                }
            }
        }
    };
    // Restores the terminal before anything is printed.
    drop(dash);
    for n in &notices {
        eprintln!("wkctl: {n}");
    }
    let why = ended?;
    eprintln!("wkctl: {why}; stopping the cluster");
    nodes.stop(STOP_GRACE, true);
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn args(nodes: u64, http: u16, cluster: u16) -> DemoArgs {
        DemoArgs {
            nodes,
            data_dir: PathBuf::from("d"),
            base_http_port: http,
            base_cluster_port: cluster,
            fresh: false,
            wknode: None,
            ready_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn plans_ports_and_init_nodes() {
        let p = plan(&args(3, 5001, 11110)).expect("valid plan");
        assert_eq!(
            p.iter()
                .map(|n| (n.id, n.http_port, n.cluster_port))
                .collect::<Vec<_>>(),
            [(1, 5001, 11110), (2, 5002, 11111), (3, 5003, 11112)]
        );
        assert_eq!(p[1].dir, PathBuf::from("d/2"));
        assert_eq!(p[1].log_path(), PathBuf::from("d/2/wknode.log"));
        assert_eq!(
            init_nodes(&p),
            "1@127.0.0.1:11110,2@127.0.0.1:11111,3@127.0.0.1:11112"
        );
        assert!(plan(&args(3, 65534, 11110)).is_err());
        let next = scale_out(&args(3, 5001, 11110), Path::new("wknode"), &p).expect("fits");
        assert_eq!(
            (next.plan.id, next.plan.http_port, next.plan.cluster_port),
            (4, 5004, 11113)
        );
        assert_eq!(next.plan.dir, PathBuf::from("d/4"));
        assert_eq!(next.seed, "1@127.0.0.1:11110");
        let tight = args(3, 65533, 11110);
        assert!(scale_out(&tight, Path::new("wknode"), &plan(&tight).expect("fits")).is_none());
        assert!(demo_node_args("x").contains(&"--allow-drills".to_string()));
    }

    #[test]
    fn launch_next_starts_the_planned_node_and_moves_on() {
        let mut nodes = Nodes::default();
        let mut none = None;
        let err = launch_next(&mut none, &mut nodes).expect_err("no plan");
        assert!(format!("{err:#}").contains("no ports left"), "{err:#}");

        let tmp = tempfile::tempdir().expect("tempdir");
        // 8 free ports in a row: 4 HTTP then 4 cluster ports (nodes 1-3 and the next one).
        let base = (0..50)
            .find_map(|_| {
                let b = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
                (b < 60_000 && (0..8).all(|i| TcpListener::bind(("127.0.0.1", b + i)).is_ok())).then_some(b)
            })
            .expect("a run of free ports");
        let mut a = args(3, base, base + 4);
        a.data_dir = tmp.path().to_path_buf();
        let planned = plan(&a).expect("fits");
        // `true` ignores its arguments and exits: enough to check the plan and the bookkeeping.
        let mut next = scale_out(&a, Path::new("true"), &planned);
        let (p, _ready) = launch_next(&mut next, &mut nodes).expect("spawns");
        assert_eq!((p.id, p.http_port, p.cluster_port), (4, base + 3, base + 7));
        assert_eq!(p.dir, tmp.path().join("4"));
        let n = next.expect("a next plan");
        assert_eq!(
            (n.plan.id, n.plan.http_port, n.plan.cluster_port),
            (5, base + 4, base + 8)
        );
        assert_eq!(n.plan.dir, tmp.path().join("5"));
        nodes.stop(Duration::from_secs(1), false);
    }

    #[test]
    fn wipe_removes_only_node_dirs() {
        let dir = std::env::temp_dir().join(format!("wkctl-wipe-{}", std::process::id()));
        fs::create_dir_all(dir.join("1/sub")).expect("mkdir");
        fs::create_dir_all(dir.join("keep")).expect("mkdir");
        fs::write(dir.join("2"), b"a file named like a node").expect("write");
        assert_eq!(wipe(&dir).expect("wipe"), 1);
        assert!(!dir.join("1").exists());
        assert!(dir.join("keep").exists() && dir.join("2").exists());
        assert_eq!(wipe(&dir.join("missing")).expect("missing dir is fine"), 0);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
