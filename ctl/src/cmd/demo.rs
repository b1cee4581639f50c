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

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use wk_api::Client;

use crate::Outcome;
use crate::cli::{DemoArgs, GlobalArgs};
use crate::output;

/// How long stopping waits for a node to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often the status view refreshes.
const REFRESH: Duration = Duration::from_secs(1);

/// Where one node will live.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodePlan {
    id: u64,
    http_port: u16,
    cluster_port: u16,
    /// `<data-dir>/<id>`
    dir: PathBuf,
}

impl NodePlan {
    fn log_path(&self) -> PathBuf {
        self.dir.join("wknode.log")
    }
}

/// The addresses a node reports in its ready line (what it actually bound).
#[derive(Debug, Clone, Deserialize)]
struct Ready {
    event: String,
    node_id: u64,
    http_addr: String,
    cluster_addr: String,
}

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

/// The `--init-nodes` value shared by every node: `1@127.0.0.1:11110,2@127.0.0.1:11111,...`.
fn init_nodes(plan: &[NodePlan]) -> String {
    plan.iter()
        .map(|n| format!("{}@127.0.0.1:{}", n.id, n.cluster_port))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `wknode` to run: `--wknode`, else next to this executable, else on PATH.
fn find_wknode(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--wknode {}: no such file", p.display());
    }
    let name = format!("wknode{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)));
    if let Some(p) = beside.as_ref().filter(|p| p.is_file()) {
        return Ok(p.clone());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(&name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "cannot find the wknode binary (looked next to wkctl{} and on PATH); \
         build it with `cargo build --release --workspace` or pass --wknode PATH",
        beside.map(|p| format!(" at {}", p.display())).unwrap_or_default()
    )
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

/// The last `n` lines of a node's log, for error messages.
fn log_tail(path: &Path, n: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(n)..];
            if tail.is_empty() {
                format!("({} is empty)", path.display())
            } else {
                format!("last lines of {}:\n{}", path.display(), tail.join("\n"))
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A running node: the child process and where its log goes.
struct NodeProc {
    plan: NodePlan,
    child: Child,
    /// Set once the exit was seen and reported, so it is reported only once.
    exited: Option<std::process::ExitStatus>,
}

/// The drop guard that owns every child. See the module invariants.
#[derive(Default)]
struct Nodes {
    procs: Vec<NodeProc>,
}

impl Nodes {
    /// Starts one node; its stderr goes to its log file, its first stdout line (the ready line)
    /// is delivered on the returned channel, later stdout lines are appended to the log.
    fn spawn(
        &mut self,
        bin: &Path,
        plan: &NodePlan,
        init_nodes: &str,
    ) -> anyhow::Result<oneshot::Receiver<anyhow::Result<Ready>>> {
        fs::create_dir_all(&plan.dir).with_context(|| format!("creating {}", plan.dir.display()))?;
        let log_path = plan.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut stdout_log = log.try_clone().context("duplicating the log file handle")?;
        let mut cmd = Command::new(bin);
        cmd.arg("--node-id")
            .arg(plan.id.to_string())
            .arg("--data-dir")
            .arg(&plan.dir)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", plan.http_port))
            .arg("--cluster-addr")
            .arg(format!("127.0.0.1:{}", plan.cluster_port))
            .arg("--init-nodes")
            .arg(init_nodes)
            // The log is a file, not a terminal: no colour escapes in it.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe. PDEATHSIG fires when the spawning *thread* exits: children are
        // spawned from `demo::run`, which runs on the main thread via `block_on`, and the main
        // thread lives as long as the process.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        self.procs.push(NodeProc {
            plan: plan.clone(),
            child,
            exited: None,
        });

        let (tx, rx) = oneshot::channel();
        let id = plan.id;
        std::thread::Builder::new()
            .name(format!("wknode-{id}-stdout"))
            .spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(tx) = tx.take_if(|_| line.trim_start().starts_with('{')) {
                        let ready = serde_json::from_str::<Ready>(&line)
                            .map_err(|e| anyhow::anyhow!("node {id} printed a bad ready line ({e}): {line}"))
                            .and_then(|r| {
                                if r.event != "ready" || r.node_id != id {
                                    bail!("node {id} printed an unexpected first line: {line}");
                                }
                                Ok(r)
                            });
                        let _ = tx.send(ready);
                    } else {
                        // Not part of the contract, but never lose it and never block the node.
                        let _ = writeln!(stdout_log, "[stdout] {line}");
                    }
                }
                // EOF before the ready line: dropping `tx` tells the waiter the node died.
            })
            .context("starting a reader thread")?;
        Ok(rx)
    }

    /// Notices (one line each) for nodes that exited since the last call.
    fn reap(&mut self) -> Vec<String> {
        let mut notices = Vec::new();
        for p in &mut self.procs {
            if p.exited.is_some() {
                continue;
            }
            match p.child.try_wait() {
                Ok(Some(status)) => {
                    notices.push(format!(
                        "node {} exited ({status}); its log: {}",
                        p.plan.id,
                        p.plan.log_path().display()
                    ));
                    p.exited = Some(status);
                }
                Ok(None) => {}
                Err(e) => notices.push(format!("cannot check node {}: {e}", p.plan.id)),
            }
        }
        notices
    }

    fn running(&self) -> usize {
        self.procs.iter().filter(|p| p.exited.is_none()).count()
    }

    /// SIGTERM to every running node, wait up to `grace`, then SIGKILL the rest; reaps all.
    fn stop(&mut self, grace: Duration, verbose: bool) {
        for p in &mut self.procs {
            if p.exited.is_none() && matches!(p.child.try_wait(), Ok(None)) {
                terminate(&p.child);
            }
        }
        let deadline = Instant::now() + grace;
        for p in &mut self.procs {
            if p.exited.is_some() {
                continue;
            }
            let status = loop {
                match p.child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        let _ = p.child.kill();
                        break p.child.wait().ok();
                    }
                }
            };
            if verbose {
                match status {
                    Some(s) => eprintln!("wkctl: node {} stopped ({s})", p.plan.id),
                    None => eprintln!("wkctl: node {} killed", p.plan.id),
                }
            }
            p.exited = status;
        }
        self.procs.clear();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop(STOP_GRACE, false);
    }
}

/// Sends SIGTERM (a clean shutdown request) to a child.
fn terminate(child: &Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions. The pid is our own unreaped child
    // (we reap only through `Child`, which we hold), so it cannot name a recycled process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
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
fn banner(args: &DemoArgs, ready: &[(NodePlan, Ready)]) -> String {
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
        waiting.push((p.clone(), nodes.spawn(&bin, p, &init)?));
    }

    let mut ready = Vec::new();
    for (p, rx) in waiting {
        let r = tokio::select! {
            sig = shutdown.recv() => {
                eprintln!("wkctl: {sig} while starting; stopping the nodes");
                nodes.stop(STOP_GRACE, true);
                return Ok(Outcome::Ok);
            }
            r = tokio::time::timeout(args.ready_timeout, rx) => r,
        };
        let r = match r {
            Ok(Ok(Ok(r))) => r,
            Ok(Ok(Err(e))) => return Err(e.context(log_tail(&p.log_path(), 20))),
            Ok(Err(_)) => {
                bail!(
                    "node {} exited before it was ready; {}",
                    p.id,
                    log_tail(&p.log_path(), 20)
                )
            }
            Err(_) => bail!(
                "node {} printed no ready line within {}; {}",
                p.id,
                humantime::format_duration(args.ready_timeout),
                log_tail(&p.log_path(), 20)
            ),
        };
        eprintln!("wkctl: node {} ready on http://{}", r.node_id, r.http_addr);
        ready.push((p, r));
    }

    let mut out = std::io::stdout().lock();
    let banner = banner(&args, &ready);
    // On a terminal the screen is redrawn whole each second (like `watch`), so wrapped lines
    // and notices never garble it; otherwise one status line is printed whenever it changes.
    let tty = out.is_terminal();
    if !tty {
        output::write_text(&mut out, &banner)?;
    }
    let endpoints: Vec<String> = ready
        .iter()
        .map(|(_, r)| format!("http://{}", r.http_addr))
        .collect();
    let client = Client::new(&endpoints, global.timeout.min(Duration::from_secs(2)))
        .context("building the status client")?
        .with_token(global.admin_token.clone());

    let mut notices: Vec<String> = Vec::new();
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
            notices.push(notice);
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
        if tty {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let mut frame = format!("\x1b[H\x1b[2J{banner}");
            for n in &notices {
                frame.push_str(&format!("! {n}\n"));
            }
            frame.push_str(&format!(
                "{now}  refreshing every second; Ctrl-C stops the cluster\n"
            ));
            match &view {
                Ok(v) => frame.push_str(&output::nodes_text(v)),
                Err(e) => frame.push_str(&format!("cluster status unavailable: {e}\n")),
            }
            output::write_text(&mut out, &frame)?;
        } else {
            let line = match &view {
                Ok(v) => output::nodes_line(v),
                Err(e) => format!("cluster status unavailable: {e}"),
            };
            if line != last_line {
                output::write_text(&mut out, &format!("{line}\n"))?;
                last_line = line;
            }
        }
    }
    nodes.stop(STOP_GRACE, true);
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
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
