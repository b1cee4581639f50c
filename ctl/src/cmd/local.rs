//! Local clusters of real `wknode` child processes, shared by `wkctl demo` and `wkctl bench`.
//!
//! Invariants:
//! - Every child is owned by a `Nodes` guard from the moment it is spawned; dropping the guard
//!   (normal exit, error, panic unwind) sends SIGTERM, waits a little, then SIGKILLs and reaps.
//!   On Linux the children also get `PR_SET_PDEATHSIG`, so even a SIGKILLed `wkctl` leaves no
//!   node behind. PDEATHSIG fires when the spawning *thread* exits, so callers spawn only from
//!   the future that `main` runs with `block_on` (the main thread), never from a spawned task.
//! - Children run in their own process group, so a terminal Ctrl-C reaches only `wkctl`, which
//!   then stops the nodes in order.
//! - Every node of one cluster gets the same `--init-nodes` string, so restarting a node on its
//!   data dir rejoins the same cluster.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::oneshot;
use wk_api::ReadyLine;

/// How long stopping waits for a node to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Where one node will live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub id: u64,
    pub http_port: u16,
    pub cluster_port: u16,
    /// `<data-dir>/<id>`
    pub dir: PathBuf,
}

impl NodePlan {
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("wknode.log")
    }
}

/// The `--init-nodes` value shared by every node: `1@127.0.0.1:11110,2@127.0.0.1:11111,...`.
pub fn init_nodes(plan: &[NodePlan]) -> String {
    plan.iter()
        .map(|n| format!("{}@127.0.0.1:{}", n.id, n.cluster_port))
        .collect::<Vec<_>>()
        .join(",")
}

/// Lays out `n` nodes under `data_dir` on loopback ports that are free right now and that a
/// restarted node can bind again (`wk_api::ports`). Another process could take one before the
/// node binds it; the node then fails with a clear bind error.
pub fn plan_free_ports(n: u64, data_dir: &Path) -> anyhow::Result<Vec<NodePlan>> {
    let count = usize::try_from(n * 2).context("too many nodes")?;
    let ports = wk_api::ports::free_loopback_ports(count).context("finding free loopback ports")?;
    Ok((1..=n)
        .zip(ports.chunks(2))
        .map(|(id, p)| NodePlan {
            id,
            http_port: p[0],
            cluster_port: p[1],
            dir: data_dir.join(id.to_string()),
        })
        .collect())
}

/// The `wknode` to run: `--wknode`, else next to this executable, else on PATH.
pub fn find_wknode(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
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

/// The last `n` lines of a node's log, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
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

/// Waits for the ready line `Nodes::spawn_args` delivers; on failure the error carries the tail of
/// the node's log.
pub async fn wait_ready(
    plan: &NodePlan,
    rx: oneshot::Receiver<anyhow::Result<ReadyLine>>,
    timeout: Duration,
) -> anyhow::Result<ReadyLine> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(r))) => Ok(r),
        Ok(Ok(Err(e))) => Err(e.context(log_tail(&plan.log_path(), 20))),
        Ok(Err(_)) => bail!(
            "node {} exited before it was ready; {}",
            plan.id,
            log_tail(&plan.log_path(), 20)
        ),
        Err(_) => bail!(
            "node {} printed no ready line within {}; {}",
            plan.id,
            humantime::format_duration(timeout),
            log_tail(&plan.log_path(), 20)
        ),
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
pub struct Nodes {
    procs: Vec<NodeProc>,
}

impl Nodes {
    /// Starts one node with `args` after its id, data dir and addresses (`--init-nodes ...`,
    /// or `--seed 1@...`, `--allow-drills`); its stderr goes to its log file, its first stdout
    /// line (the ready line) is delivered on the returned channel, later stdout lines are
    /// appended to the log.
    pub fn spawn_args(
        &mut self,
        bin: &Path,
        plan: &NodePlan,
        args: &[String],
    ) -> anyhow::Result<oneshot::Receiver<anyhow::Result<ReadyLine>>> {
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
            .args(args)
            // The log is a file, not a terminal: no colour escapes in it.
            .env("NO_COLOR", "1")
            // Client gateways on free ports, so local clusters never collide on WuKongIM's
            // 5100/5200; the ready line says where they are (`args` may still set them).
            .env("WK_TCP_ADDR", "127.0.0.1:0")
            .env("WK_WS_ADDR", "127.0.0.1:0")
            // Local clusters serve plain HTTP on loopback. wkctl's own `WK_TLS_CA` (its
            // `--tls-ca`) means the same to wknode, which refuses it without a cert and key.
            .env_remove("WK_TLS_CA")
            .env_remove("WK_TLS_CERT")
            .env_remove("WK_TLS_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe. PDEATHSIG fires when the spawning *thread* exits: callers spawn
        // from the future `main` runs via `block_on`, i.e. on the main thread, which lives as
        // long as the process (module invariants).
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
                        let ready = ReadyLine::parse(&line)
                            .map_err(|e| anyhow::anyhow!("node {id} printed a bad ready line ({e}): {line}"))
                            .and_then(|r| {
                                if r.node_id != id {
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
    pub fn reap(&mut self) -> Vec<String> {
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

    pub fn running(&self) -> usize {
        self.procs.iter().filter(|p| p.exited.is_none()).count()
    }

    /// SIGKILLs node `id` (a crash: no clean shutdown) and reaps it; its entry is removed, so
    /// the same plan can be spawned again on the same data dir.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        let Some(pos) = self
            .procs
            .iter()
            .position(|p| p.plan.id == id && p.exited.is_none())
        else {
            bail!("node {id} is not running");
        };
        let mut p = self.procs.remove(pos);
        // `Child::kill` is SIGKILL on Unix.
        p.child.kill().with_context(|| format!("killing node {id}"))?;
        p.child.wait().with_context(|| format!("reaping node {id}"))?;
        Ok(())
    }

    /// Sends `signal` (e.g. SIGSTOP, SIGCONT) to running node `id`.
    pub fn signal(&self, id: u64, signal: libc::c_int) -> anyhow::Result<()> {
        let p = self
            .procs
            .iter()
            .find(|p| p.plan.id == id && p.exited.is_none())
            .with_context(|| format!("node {id} is not running"))?;
        let pid = libc::pid_t::try_from(p.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped
        // child (see `terminate`).
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signal {signal} to node {id}"));
        }
        Ok(())
    }

    /// Whether node `id` has a live (not reaped, not exited) process.
    pub fn is_running(&mut self, id: u64) -> bool {
        self.procs
            .iter_mut()
            .any(|p| p.plan.id == id && p.exited.is_none() && matches!(p.child.try_wait(), Ok(None)))
    }

    /// SIGTERM to every running node, wait up to `grace`, then SIGKILL the rest; reaps all.
    pub fn stop(&mut self, grace: Duration, verbose: bool) {
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
        // A paused (SIGSTOPped) node would only act on the SIGTERM once continued.
        libc::kill(pid, libc::SIGCONT);
    }
}

/// A throwaway cluster for benchmarks: `n` nodes on free ports in a temporary directory that
/// is removed on drop (after the nodes are stopped: fields drop in declaration order).
pub struct TempCluster {
    /// Owns the children; dropped first.
    pub nodes: Nodes,
    pub bin: PathBuf,
    pub plan: Vec<NodePlan>,
    /// `--init-nodes` for restarts.
    pub init: String,
    /// Flags every node of this cluster gets (e.g. `--channel-idle-timeout 2s`), restarts and
    /// nodes added later included.
    pub extra: Vec<String>,
    /// `http://127.0.0.1:<port>` per node, in node-id order.
    pub endpoints: Vec<String>,
    pub ready_timeout: Duration,
    /// Holds the data dirs; dropped last.
    _dir: tempfile::TempDir,
}

impl TempCluster {
    /// Starts `n` nodes and waits for every ready line.
    pub async fn start(
        wknode: Option<&Path>,
        n: u64,
        ready_timeout: Duration,
    ) -> anyhow::Result<TempCluster> {
        TempCluster::start_with(wknode, n, ready_timeout, Vec::new()).await
    }

    /// Like `start`, with `extra` flags for every node.
    pub async fn start_with(
        wknode: Option<&Path>,
        n: u64,
        ready_timeout: Duration,
        extra: Vec<String>,
    ) -> anyhow::Result<TempCluster> {
        let bin = find_wknode(wknode)?;
        let dir = tempfile::Builder::new()
            .prefix("wkctl-bench-")
            .tempdir()
            .context("creating a temporary data directory")?;
        let plan = plan_free_ports(n, dir.path())?;
        let init = init_nodes(&plan);
        let mut nodes = Nodes::default();
        let mut waiting = Vec::new();
        for p in &plan {
            waiting.push((p, nodes.spawn_args(&bin, p, &node_args(&init, &extra))?));
        }
        let mut endpoints = Vec::new();
        for (p, rx) in waiting {
            let r = wait_ready(p, rx, ready_timeout).await?;
            endpoints.push(format!("http://{}", r.http_addr));
        }
        Ok(TempCluster {
            nodes,
            bin,
            plan,
            init,
            extra,
            endpoints,
            ready_timeout,
            _dir: dir,
        })
    }

    /// SIGKILLs node `id`.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.nodes.kill(id)
    }

    /// Starts node `id` again on its data dir and ports and waits for its ready line.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let plan = self
            .plan
            .iter()
            .find(|p| p.id == id)
            .with_context(|| format!("no node {id} in this cluster"))?
            .clone();
        let rx = self
            .nodes
            .spawn_args(&self.bin, &plan, &node_args(&self.init, &self.extra))?;
        wait_ready(&plan, rx, self.ready_timeout).await?;
        Ok(())
    }

    /// Starts a fresh, empty node (the next id, free ports) with `--seed` naming node `seed`;
    /// it waits in state `joining` until someone calls `POST /cluster/join` for it. Returns
    /// its id, cluster address and endpoint; the endpoint is also appended to `endpoints`.
    pub async fn add_seeded(&mut self, seed: u64) -> anyhow::Result<(u64, String, String)> {
        let seed_port = self
            .plan
            .iter()
            .find(|p| p.id == seed)
            .with_context(|| format!("no node {seed} in this cluster"))?
            .cluster_port;
        let id = self.plan.iter().map(|p| p.id).max().unwrap_or(0) + 1;
        let dir = self
            .plan
            .first()
            .and_then(|p| p.dir.parent())
            .context("the cluster has no data directory")?
            .to_path_buf();
        let mut plan = plan_free_ports(1, &dir)?.remove(0);
        plan.id = id;
        plan.dir = dir.join(id.to_string());
        let mut args = vec!["--seed".to_string(), format!("{seed}@127.0.0.1:{seed_port}")];
        args.extend(self.extra.iter().cloned());
        let rx = self.nodes.spawn_args(&self.bin, &plan, &args)?;
        let ready = wait_ready(&plan, rx, self.ready_timeout).await?;
        let endpoint = format!("http://{}", ready.http_addr);
        self.endpoints.push(endpoint.clone());
        self.plan.push(plan);
        Ok((id, ready.cluster_addr, endpoint))
    }

    /// The process id of running node `id`, for reading its `/proc` entries.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes
            .procs
            .iter()
            .find(|p| p.plan.id == id && p.exited.is_none())
            .map(|p| p.child.id())
    }

    /// For each node that exited unexpectedly since the last call: a notice with the tail of
    /// its log (the temporary directory is gone once the cluster is dropped).
    pub fn exits(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &mut self.nodes.procs {
            if p.exited.is_none()
                && let Ok(Some(status)) = p.child.try_wait()
            {
                p.exited = Some(status);
                out.push(format!(
                    "node {} exited ({status}); {}",
                    p.plan.id,
                    log_tail(&p.plan.log_path(), 30)
                ));
            }
        }
        out
    }

    /// The endpoint of node `id`.
    pub fn endpoint(&self, id: u64) -> Option<&str> {
        let i = self.plan.iter().position(|p| p.id == id)?;
        self.endpoints.get(i).map(String::as_str)
    }
}

/// `--init-nodes INIT` followed by `extra`.
fn node_args(init: &str, extra: &[String]) -> Vec<String> {
    let mut args = vec!["--init-nodes".to_string(), init.to_string()];
    args.extend(extra.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_plan_is_distinct() {
        let p = plan_free_ports(3, Path::new("d")).expect("free ports");
        let mut ports: Vec<u16> = p.iter().flat_map(|n| [n.http_port, n.cluster_port]).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
        assert_eq!(p.iter().map(|n| n.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(p[2].dir, PathBuf::from("d/3"));
    }
}
