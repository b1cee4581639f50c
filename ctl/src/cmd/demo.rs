//! `wkctl demo`: a real local cluster of `wknode` child processes plus a live status view.
//!
//! The cluster is a [`LocalCluster`] (its module states how every child is owned and stopped)
//! on fixed, guessable ports: node N listens on `base-http-port + N - 1` and
//! `base-cluster-port + N - 1`, in `<data-dir>/N`, which is kept, so running the demo again on
//! the same data dir is the same cluster. Demo nodes run with `--allow-drills` (a local
//! throwaway cluster: the dashboard's failover drills may crash or isolate them). Scale-out
//! (`s` in the dashboard) starts the next node (the next id on the next ports) with `--seed`
//! naming node 1.

use std::fs;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use wk_api::{Client, ReadyLine};

use crate::Outcome;
use crate::cli::{DemoArgs, GlobalArgs};
use crate::local::{LocalCluster, NodePlan, Ports, STOP_GRACE, Starting};
use crate::output;

/// How often the status view refreshes.
const REFRESH: Duration = Duration::from_secs(1);

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

/// The demo's cluster: `--nodes` nodes on the base ports in `--data-dir`, with drills allowed.
fn builder(args: &DemoArgs) -> crate::local::LocalClusterBuilder {
    LocalCluster::builder()
        .nodes(args.nodes)
        .wknode(args.wknode.as_deref())
        .data_dir(&args.data_dir)
        .ports(Ports::Base {
            http: args.base_http_port,
            cluster: args.base_cluster_port,
        })
        .ready_timeout(args.ready_timeout)
        .args(["--allow-drills"])
}

/// The node scale-out would start next, with its `--seed` value.
struct ScaleOut {
    plan: NodePlan,
    seed: String,
}

fn scale_out(cluster: &LocalCluster) -> Option<ScaleOut> {
    let first = cluster.ids().first().copied()?;
    Some(ScaleOut {
        plan: cluster.next_plan().ok().flatten()?,
        seed: cluster.seed_arg(first)?,
    })
}

/// The hint for a port that is taken.
const PORTS_HINT: &str = "stop it or choose other --base-http-port/--base-cluster-port";

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
fn banner(args: &DemoArgs, bin: &Path, ready: &[(NodePlan, ReadyLine)], next: Option<&ScaleOut>) -> String {
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
            bin.display(),
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
    if args.fresh {
        let removed = wipe(&args.data_dir)?;
        eprintln!(
            "wkctl: --fresh: removed {removed} node director(ies) under {}",
            args.data_dir.display()
        );
    }
    let mut shutdown = Shutdown::new()?;
    let (mut cluster, starting) = builder(&args).spawn().context(PORTS_HINT)?;
    for s in &starting {
        eprintln!(
            "wkctl: starting node {} ({}){}",
            s.plan().id,
            cluster.bin().display(),
            if s.reused() {
                format!(", reusing {}", s.plan().dir.display())
            } else {
                String::new()
            }
        );
    }

    let mut ready = Vec::new();
    for s in starting {
        let plan = s.plan().clone();
        let r = tokio::select! {
            sig = shutdown.recv() => {
                eprintln!("wkctl: {sig} while starting; stopping the nodes");
                cluster.stop(STOP_GRACE, true);
                return Ok(Outcome::Ok);
            }
            r = s.ready() => r?,
        };
        eprintln!("wkctl: node {} ready on http://{}", r.node_id, r.http_addr);
        ready.push((plan, r));
    }

    let mut out = std::io::stdout().lock();
    let next = scale_out(&cluster);
    let banner = banner(&args, cluster.bin(), &ready, next.as_ref());
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
        let join_client = Client::new(&endpoints, super::cluster::join::JOIN_TIMEOUT)
            .context("building the join client")?
            .with_token(global.admin_token.clone());
        let demo = Demo {
            client,
            join_client,
            timeout,
        };
        return dashboard(&args, demo, &mut cluster, &mut shutdown).await;
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
        for exit in cluster.exits() {
            eprintln!("wkctl: {exit}");
        }
        if cluster.running() == 0 {
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
    cluster.stop(STOP_GRACE, true);
    Ok(Outcome::Ok)
}

/// On a terminal: the live dashboard over the demo cluster until it is closed (`q`, Esc or
/// Ctrl-C in it: raw mode turns Ctrl-C into a key) or SIGINT/SIGTERM arrives from outside;
/// then every node is stopped. Node exits are collected meanwhile and printed once the
/// terminal is restored, so nothing garbles the screen.
/// What the dashboard over the demo needs.
struct Demo {
    /// The polling client (every node's endpoint).
    client: Client,
    /// For `POST /cluster/join` (long timeout).
    join_client: Client,
    /// Per-request timeout of the polls.
    timeout: Duration,
}

/// The dashboard's launcher asks the demo loop (which owns the children) to start the next
/// node or restart a killed one; the reply is the node starting.
type LaunchReply = (wk_tui::scale::Launch, oneshot::Sender<anyhow::Result<Starting>>);

/// A [`wk_tui::scale::Launcher`] that goes through `tx` to the demo loop and waits for the
/// new node's ready line.
fn launcher(tx: mpsc::Sender<LaunchReply>) -> wk_tui::scale::Launcher {
    std::sync::Arc::new(move |what| {
        let tx = tx.clone();
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            tx.send((what, reply))
                .await
                .map_err(|_| "the demo is stopping".to_string())?;
            let starting = rx
                .await
                .map_err(|_| "the demo is stopping".to_string())?
                .map_err(|e| format!("{e:#}"))?;
            let r = starting.ready().await.map_err(|e| format!("{e:#}"))?;
            Ok(wk_tui::scale::Launched {
                node_id: r.node_id,
                cluster_addr: r.cluster_addr,
                http_addr: r.http_addr,
            })
        })
    })
}

/// Starts the next scale-out node, seeded by the first node, owned by `cluster` like the others.
fn launch_next(cluster: &mut LocalCluster) -> anyhow::Result<Starting> {
    let first = cluster.ids().first().copied().context("the demo has no node")?;
    cluster.spawn_seeded(first).context(PORTS_HINT)
}

async fn dashboard(
    args: &DemoArgs,
    demo: Demo,
    cluster: &mut LocalCluster,
    shutdown: &mut Shutdown,
) -> anyhow::Result<Outcome> {
    // `{nodes}` follows the cluster: the dashboard counts the nodes of its latest view, so
    // the title grows with each scale-out.
    let title = format!(
        "demo: {{nodes}} local node(s), data {} · q stops the cluster",
        args.data_dir.display()
    );
    let (launch_tx, mut launch_rx) = mpsc::channel::<LaunchReply>(1);
    let mut opts = super::top::options(title, REFRESH, demo.timeout, 200);
    opts.launcher = Some(launcher(launch_tx));
    opts.join_client = Some(demo.join_client);
    let mut dash = Box::pin(wk_tui::run(demo.client, opts));
    let mut reap = tokio::time::interval(REFRESH);
    let mut notices: Vec<String> = Vec::new();
    let ended: anyhow::Result<String> = loop {
        tokio::select! {
            r = &mut dash => break r.context("dashboard").map(|()| "dashboard closed".to_string()),
            sig = shutdown.recv() => break Ok(sig.to_string()),
            Some((what, reply)) = launch_rx.recv() => {
                let started = match what {
                    wk_tui::scale::Launch::Next => launch_next(cluster),
                    wk_tui::scale::Launch::Restart(id) => cluster.respawn(id),
                };
                let _ = reply.send(started);
            }
            _ = reap.tick() => {
                notices.extend(cluster.exits().iter().map(ToString::to_string));
                if cluster.running() == 0 {
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
    cluster.stop(STOP_GRACE, true);
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn args(nodes: u64, http: u16, cluster: u16, dir: &Path) -> DemoArgs {
        DemoArgs {
            nodes,
            data_dir: dir.to_path_buf(),
            base_http_port: http,
            base_cluster_port: cluster,
            fresh: false,
            wknode: None,
            ready_timeout: Duration::from_secs(1),
        }
    }

    /// `true` ignores its arguments and exits: enough to check the plans and the bookkeeping.
    fn true_bin() -> PathBuf {
        ["/bin/true", "/usr/bin/true"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .expect("a `true` binary")
    }

    #[test]
    fn scale_out_starts_the_next_node_on_the_next_ports() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // 8 free ports in a row: 4 HTTP then 4 cluster ports (nodes 1-3 and the next one).
        let base = (0..50)
            .find_map(|_| {
                let b = std::net::TcpListener::bind("127.0.0.1:0")
                    .ok()?
                    .local_addr()
                    .ok()?
                    .port();
                (b < 60_000 && (0..8).all(|i| std::net::TcpListener::bind(("127.0.0.1", b + i)).is_ok()))
                    .then_some(b)
            })
            .expect("a run of free ports");
        let mut a = args(3, base, base + 4, tmp.path());
        a.wknode = Some(true_bin());
        let (mut cluster, _starting) = builder(&a).spawn().expect("spawns");
        let next = scale_out(&cluster).expect("fits");
        assert_eq!(
            (next.plan.id, next.plan.http_port, next.plan.cluster_port),
            (4, base + 3, base + 7)
        );
        assert_eq!(next.plan.dir, tmp.path().join("4"));
        assert_eq!(next.seed, format!("1@127.0.0.1:{}", base + 4));
        let p = launch_next(&mut cluster).expect("spawns").plan().clone();
        assert_eq!(p, next.plan);
        let n = scale_out(&cluster).expect("a next plan");
        assert_eq!(
            (n.plan.id, n.plan.http_port, n.plan.cluster_port),
            (5, base + 4, base + 8)
        );
        assert_eq!(n.plan.dir, tmp.path().join("5"));
        cluster.stop(Duration::from_secs(1), false);
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
