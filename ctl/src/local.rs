//! [`LocalCluster`]: a cluster of real `wknode` child processes on loopback, the one harness
//! behind `wkctl demo`, `wkctl bench`, `wkctl drill` and ctl's integration tests.
//!
//! Invariants:
//! - Every child is owned by its `LocalCluster` from the moment it is spawned; dropping the
//!   cluster (normal exit, error, panic unwind) continues paused nodes, sends SIGTERM, waits a
//!   little, then SIGKILLs and reaps, and only then removes a temporary data directory. On
//!   Linux the children also get `PR_SET_PDEATHSIG`, so even a SIGKILLed `wkctl` leaves no
//!   node behind. PDEATHSIG fires when the spawning *thread* exits, so callers spawn only from
//!   the future that `main` runs with `block_on` (the main thread) or from a test's own thread,
//!   never from a spawned task.
//! - Children run in their own process group, so a terminal Ctrl-C reaches only `wkctl`, which
//!   then stops the nodes in order.
//! - Every node started with the cluster gets the same `--init-nodes` string, and a node keeps
//!   its ports and data dir for life, so restarting it on its data dir rejoins the same cluster.
//!   A node added later boots with `--seed` (state `joining` until `POST /cluster/join`).
//! - A node's first stdout line is its ready line (`wk_api::ReadyLine`); its stderr and later
//!   stdout lines go to `<data-dir>/<id>/wknode.log`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::oneshot;
use wk_api::{JoinReq, ReadyLine};

/// How long stopping waits for a node to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a node may take to print its ready line, unless the builder says otherwise.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where one node lives: its id, its two loopback ports and its data dir.
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

    /// `http://127.0.0.1:<http port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `127.0.0.1:<cluster port>`
    pub fn cluster_addr(&self) -> String {
        format!("127.0.0.1:{}", self.cluster_port)
    }
}

/// The `--init-nodes` value shared by every node: `1@127.0.0.1:11110,2@127.0.0.1:11111,...`.
pub fn init_nodes(plan: &[NodePlan]) -> String {
    plan.iter()
        .map(|n| format!("{}@{}", n.id, n.cluster_addr()))
        .collect::<Vec<_>>()
        .join(",")
}

/// How a cluster's nodes get their ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    /// Loopback ports free at planning time that a restarted node can bind again
    /// (`wk_api::ports`). Another process could take one before the node binds it; the node
    /// then fails with a clear bind error.
    Free,
    /// Node N on `http + N - 1` and `cluster + N - 1` (`wkctl demo`'s fixed, guessable ports);
    /// checked free before a node is spawned.
    Base { http: u16, cluster: u16 },
}

impl Ports {
    /// Plans node `id` in `data_dir`; None when a base port would pass 65535.
    fn plan(self, id: u64, data_dir: &Path) -> anyhow::Result<Option<NodePlan>> {
        let (http_port, cluster_port) = match self {
            Ports::Free => {
                let p = wk_api::ports::free_loopback_ports(2).context("finding free loopback ports")?;
                (p[0], p[1])
            }
            Ports::Base { http, cluster } => {
                let Some(offset) = id.checked_sub(1).and_then(|o| u16::try_from(o).ok()) else {
                    return Ok(None);
                };
                match (http.checked_add(offset), cluster.checked_add(offset)) {
                    (Some(h), Some(c)) => (h, c),
                    _ => return Ok(None),
                }
            }
        };
        Ok(Some(NodePlan {
            id,
            http_port,
            cluster_port,
            dir: data_dir.join(id.to_string()),
        }))
    }

    /// Plans nodes `1..=n`: distinct ports.
    fn plan_all(self, n: u64, data_dir: &Path) -> anyhow::Result<Vec<NodePlan>> {
        match self {
            Ports::Free => {
                let count = usize::try_from(n * 2).context("too many nodes")?;
                let ports =
                    wk_api::ports::free_loopback_ports(count).context("finding free loopback ports")?;
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
            Ports::Base { .. } => (1..=n)
                .map(|id| {
                    self.plan(id, data_dir)?
                        .with_context(|| format!("port out of range for node {id}: lower the base ports"))
                })
                .collect(),
        }
    }
}

/// Fails when a planned port is taken (e.g. by another demo), naming it.
fn check_ports_free(plan: &NodePlan) -> anyhow::Result<()> {
    for (what, port) in [("HTTP", plan.http_port), ("cluster", plan.cluster_port)] {
        TcpListener::bind(("127.0.0.1", port)).with_context(|| {
            format!(
                "{what} port {port} for node {} is in use (another demo or wknode running?)",
                plan.id
            )
        })?;
    }
    Ok(())
}

/// The `wknode` to run: `explicit` (`--wknode`), else next to this executable, else on PATH.
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

/// A node that was spawned and has not printed its ready line yet. Waiting for it borrows
/// nothing of the cluster, so the owner of the cluster can wait on it beside other events
/// (a signal, a dashboard) or hand it to another task.
pub struct Starting {
    plan: NodePlan,
    /// Whether the data dir held something before this start (a restart, a reused demo dir).
    reused: bool,
    rx: oneshot::Receiver<anyhow::Result<ReadyLine>>,
    timeout: Duration,
}

impl Starting {
    pub fn plan(&self) -> &NodePlan {
        &self.plan
    }

    /// Whether the node starts on a data dir that already held something.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// The node's ready line; on failure (it exited, printed something else, or nothing
    /// within the ready timeout) the error carries the tail of its log.
    pub async fn ready(self) -> anyhow::Result<ReadyLine> {
        let Starting {
            plan, rx, timeout, ..
        } = self;
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
}

/// A node that exited on its own ([`LocalCluster::exits`]).
#[derive(Debug, Clone)]
pub struct NodeExit {
    pub id: u64,
    pub status: ExitStatus,
    pub log: PathBuf,
}

impl NodeExit {
    /// The notice with the last `n` lines of the node's log (for clusters whose data dir is
    /// gone once they are dropped).
    pub fn with_tail(&self, n: usize) -> String {
        format!("{self}\n{}", log_tail(&self.log, n))
    }
}

impl fmt::Display for NodeExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} exited ({}); its log: {}",
            self.id,
            self.status,
            self.log.display()
        )
    }
}

/// How to start a [`LocalCluster`]; see its methods for the defaults.
#[derive(Debug, Clone)]
pub struct LocalClusterBuilder {
    nodes: u64,
    wknode: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    clean_env: bool,
    data_dir: Option<PathBuf>,
    keep_dir: bool,
    prefix: String,
    ports: Ports,
    ready_timeout: Duration,
}

impl LocalClusterBuilder {
    /// How many nodes start with the cluster (default 3).
    pub fn nodes(mut self, n: u64) -> Self {
        self.nodes = n;
        self
    }

    /// The `wknode` binary (default: [`find_wknode`] without `--wknode`).
    pub fn wknode(mut self, bin: Option<&Path>) -> Self {
        self.wknode = bin.map(Path::to_path_buf);
        self
    }

    /// Flags every node gets after its id, data dir and addresses, restarts and nodes added
    /// later included (e.g. `--allow-drills`, `--channel-idle-timeout 2s`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// One more environment variable for every node.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Removes every inherited `WK_*` variable from the nodes' environment, so a test's
    /// environment cannot change how they run.
    pub fn clean_env(mut self) -> Self {
        self.clean_env = true;
        self
    }

    /// Nodes live in `<dir>/<id>`, which is kept (default: a new temporary directory, removed
    /// when the cluster is dropped).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// Keeps the temporary data directory when the cluster is dropped (and says where it is).
    pub fn keep_dir(mut self, keep: bool) -> Self {
        self.keep_dir = keep;
        self
    }

    /// The temporary data directory's name prefix (default `wkctl-`).
    pub fn temp_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How the nodes get their ports (default [`Ports::Free`]).
    pub fn ports(mut self, ports: Ports) -> Self {
        self.ports = ports;
        self
    }

    /// How long each node may take to print its ready line (default [`READY_TIMEOUT`]).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Spawns every node and returns without waiting for them: each [`Starting`] yields its
    /// node's ready line.
    pub fn spawn(self) -> anyhow::Result<(LocalCluster, Vec<Starting>)> {
        let bin = find_wknode(self.wknode.as_deref())?;
        let dir = match &self.data_dir {
            Some(d) => DataDir::Fixed(d.clone()),
            None => {
                let mut t = tempfile::Builder::new()
                    .prefix(&self.prefix)
                    .tempdir()
                    .context("creating a temporary data directory")?;
                if self.keep_dir {
                    t.disable_cleanup(true);
                    eprintln!("wkctl: keeping the data dirs in {}", t.path().display());
                }
                DataDir::Temp(t)
            }
        };
        let plan = self.ports.plan_all(self.nodes, dir.path())?;
        let init = init_nodes(&plan);
        let mut cluster = LocalCluster {
            procs: Vec::new(),
            bin,
            members: plan
                .iter()
                .map(|p| {
                    let boot = vec!["--init-nodes".to_string(), init.clone()];
                    (
                        p.id,
                        Member {
                            plan: p.clone(),
                            boot,
                        },
                    )
                })
                .collect(),
            args: self.args,
            env: self.env,
            clean_env: self.clean_env,
            ports: self.ports,
            paused: BTreeSet::new(),
            ready_timeout: self.ready_timeout,
            dir,
        };
        let mut starting = Vec::new();
        for p in &plan {
            starting.push(cluster.spawn(p.id)?);
        }
        Ok((cluster, starting))
    }

    /// Spawns every node and waits for every ready line.
    pub async fn start(self) -> anyhow::Result<LocalCluster> {
        let (cluster, starting) = self.spawn()?;
        for s in starting {
            s.ready().await?;
        }
        Ok(cluster)
    }
}

/// Where the nodes' data dirs are.
enum DataDir {
    /// Removed on drop unless kept; dropped after the children are stopped.
    Temp(tempfile::TempDir),
    /// Given by the caller, never removed.
    Fixed(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Temp(t) => t.path(),
            DataDir::Fixed(p) => p,
        }
    }
}

/// One node of the cluster, running or not.
struct Member {
    plan: NodePlan,
    /// How the node boots (`--init-nodes ...` or `--seed ...`), for restarts.
    boot: Vec<String>,
}

/// A spawned node process.
struct NodeProc {
    id: u64,
    child: Child,
    /// Set once the exit was seen and reported, so it is reported only once.
    exited: Option<ExitStatus>,
}

/// A local cluster of `wknode` children (module invariants). Nodes are addressed by id; a node
/// that was killed or removed keeps its plan (ports, data dir, log) for a restart.
pub struct LocalCluster {
    /// Every process spawned and not yet forgotten; stopped before `dir` goes.
    procs: Vec<NodeProc>,
    bin: PathBuf,
    /// Every node ever planned, by id.
    members: BTreeMap<u64, Member>,
    /// Flags every node gets (the builder's `args`).
    args: Vec<String>,
    /// Environment every node gets (the builder's `env`).
    env: Vec<(String, String)>,
    /// Whether inherited `WK_*` variables are removed.
    clean_env: bool,
    ports: Ports,
    /// Nodes currently SIGSTOPped: continued before they are stopped.
    paused: BTreeSet<u64>,
    ready_timeout: Duration,
    /// Holds the data dirs; removed (when temporary) after every child is stopped.
    dir: DataDir,
}

impl LocalCluster {
    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder {
            nodes: 3,
            wknode: None,
            args: Vec::new(),
            env: Vec::new(),
            clean_env: false,
            data_dir: None,
            keep_dir: false,
            prefix: "wkctl-".into(),
            ports: Ports::Free,
            ready_timeout: READY_TIMEOUT,
        }
    }

    /// The `wknode` binary the nodes run.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The directory that holds every node's data dir.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every node ever planned, running or not, in id order.
    pub fn ids(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    pub fn plan(&self, id: u64) -> Option<&NodePlan> {
        self.members.get(&id).map(|m| &m.plan)
    }

    /// Every node's plan, in id order.
    pub fn plans(&self) -> impl Iterator<Item = &NodePlan> {
        self.members.values().map(|m| &m.plan)
    }

    /// `http://127.0.0.1:<port>` of node `id`.
    pub fn endpoint(&self, id: u64) -> Option<String> {
        self.plan(id).map(NodePlan::endpoint)
    }

    /// The endpoints of every node ever planned, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.plans().map(NodePlan::endpoint).collect()
    }

    /// The endpoints of the nodes that have a process (started, not killed, stopped or seen
    /// to exit), in id order.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.plans()
            .filter(|p| self.live(p.id).is_some())
            .map(NodePlan::endpoint)
            .collect()
    }

    /// `127.0.0.1:<cluster port>` of node `id`.
    pub fn cluster_addr(&self, id: u64) -> Option<String> {
        self.plan(id).map(NodePlan::cluster_addr)
    }

    pub fn log_path(&self, id: u64) -> Option<PathBuf> {
        self.plan(id).map(NodePlan::log_path)
    }

    /// What `POST /cluster/join` needs to admit node `id`.
    pub fn join_req(&self, id: u64) -> Option<JoinReq> {
        let p = self.plan(id)?;
        Some(JoinReq {
            node_id: id,
            cluster_addr: p.cluster_addr(),
            http_addr: format!("127.0.0.1:{}", p.http_port),
            wait: true,
        })
    }

    /// The `--seed` value that names node `id`: `ID@ADDR`.
    pub fn seed_arg(&self, id: u64) -> Option<String> {
        Some(format!("{id}@{}", self.cluster_addr(id)?))
    }

    /// The process id of running node `id`, for reading its `/proc` entries.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.live(id).map(|p| p.child.id())
    }

    fn live(&self, id: u64) -> Option<&NodeProc> {
        self.procs.iter().find(|p| p.id == id && p.exited.is_none())
    }

    /// Whether node `id` has a live (not reaped, not exited) process.
    pub fn is_running(&mut self, id: u64) -> bool {
        self.procs
            .iter_mut()
            .any(|p| p.id == id && p.exited.is_none() && matches!(p.child.try_wait(), Ok(None)))
    }

    /// How many nodes have not been seen to exit.
    pub fn running(&self) -> usize {
        self.procs.iter().filter(|p| p.exited.is_none()).count()
    }

    /// Spawns node `id` with its boot flags (see `Starting` for the ready line).
    fn spawn(&mut self, id: u64) -> anyhow::Result<Starting> {
        let member = self
            .members
            .get(&id)
            .with_context(|| format!("no node {id} in this cluster"))?;
        let plan = member.plan.clone();
        if let Ports::Base { .. } = self.ports {
            check_ports_free(&plan)?;
        }
        let mut args = member.boot.clone();
        args.extend(self.args.iter().cloned());
        let reused = fs::read_dir(&plan.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        fs::create_dir_all(&plan.dir).with_context(|| format!("creating {}", plan.dir.display()))?;
        let log_path = plan.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut stdout_log = log.try_clone().context("duplicating the log file handle")?;
        let mut cmd = Command::new(&self.bin);
        if self.clean_env {
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("WK_") {
                    cmd.env_remove(k);
                }
            }
        }
        cmd.arg("--node-id")
            .arg(plan.id.to_string())
            .arg("--data-dir")
            .arg(&plan.dir)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", plan.http_port))
            .arg("--cluster-addr")
            .arg(plan.cluster_addr())
            .args(&args)
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
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe. PDEATHSIG fires when the spawning *thread* exits: callers spawn
        // from the future `main` runs via `block_on` (the main thread) or from a test's thread,
        // which outlive the cluster (module invariants).
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
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        self.procs.push(NodeProc {
            id,
            child,
            exited: None,
        });

        let (tx, rx) = oneshot::channel();
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
        Ok(Starting {
            plan,
            reused,
            rx,
            timeout: self.ready_timeout,
        })
    }

    /// Starts node `id` again on its ports and data dir and waits for its ready line.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<ReadyLine> {
        self.spawn(id)?.ready().await
    }

    /// Spawns stopped node `id` again on its ports and data dir, without waiting for it
    /// (the dashboard's "restart node N"); an error if it still runs.
    pub fn respawn(&mut self, id: u64) -> anyhow::Result<Starting> {
        if self.is_running(id) {
            bail!("node {id} is running");
        }
        self.spawn(id)
    }

    /// SIGKILLs node `id` (a crash: no clean shutdown) and reaps it.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.paused.remove(&id);
        let Some(pos) = self.procs.iter().position(|p| p.id == id && p.exited.is_none()) else {
            bail!("node {id} is not running");
        };
        let mut p = self.procs.remove(pos);
        // `Child::kill` is SIGKILL on Unix.
        p.child.kill().with_context(|| format!("killing node {id}"))?;
        p.child.wait().with_context(|| format!("reaping node {id}"))?;
        Ok(())
    }

    /// SIGTERM (a clean shutdown) to node `id` and waits for it, SIGKILL after `grace`.
    pub fn terminate(&mut self, id: u64, grace: Duration) -> anyhow::Result<()> {
        if self.paused.remove(&id) {
            self.signal(id, libc::SIGCONT)?;
        }
        self.signal(id, libc::SIGTERM)?;
        let deadline = Instant::now() + grace;
        while self.is_running(id) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(pos) = self.procs.iter().position(|p| p.id == id && p.exited.is_none()) {
            let mut p = self.procs.remove(pos);
            let _ = p.child.kill();
            p.child.wait().with_context(|| format!("reaping node {id}"))?;
        }
        Ok(())
    }

    /// SIGSTOPs node `id`: it stops answering anything, as a hung process would.
    pub fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, libc::SIGSTOP)?;
        self.paused.insert(id);
        Ok(())
    }

    /// SIGCONTs a paused node `id`.
    pub fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.paused.remove(&id);
        self.signal(id, libc::SIGCONT)
    }

    /// Continues every paused node.
    pub fn resume_all(&mut self) {
        for id in std::mem::take(&mut self.paused) {
            let _ = self.signal(id, libc::SIGCONT);
        }
    }

    /// Sends `signal` to running node `id`.
    fn signal(&self, id: u64, signal: libc::c_int) -> anyhow::Result<()> {
        let p = self
            .live(id)
            .with_context(|| format!("node {id} is not running"))?;
        let pid = libc::pid_t::try_from(p.child.id()).context("pid out of range")?;
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped
        // child (see `terminate_child`).
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("signal {signal} to node {id}"));
        }
        Ok(())
    }

    /// Deletes everything in node `id`'s data dir except its log (a lost disk; the log is
    /// evidence). The node must be stopped.
    pub fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        let plan = self.plan(id).with_context(|| format!("no node {id}"))?;
        for e in fs::read_dir(&plan.dir).with_context(|| format!("reading {}", plan.dir.display()))? {
            let p = e?.path();
            if p == plan.log_path() {
                continue;
            }
            if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            }
            .with_context(|| format!("removing {}", p.display()))?;
        }
        Ok(())
    }

    /// From now on node `id` boots with `--seed SEED@ADDR`: as an empty node that joins.
    pub fn boot_with_seed(&mut self, id: u64, seed: u64) -> anyhow::Result<()> {
        let arg = self.seed_arg(seed).with_context(|| format!("no node {seed}"))?;
        let member = self
            .members
            .get_mut(&id)
            .with_context(|| format!("no node {id}"))?;
        member.boot = vec!["--seed".to_string(), arg];
        Ok(())
    }

    /// Where the next added node would live: id `max + 1`, in this cluster's data dir, on
    /// free ports or the next base ports. None when a base port would pass 65535.
    pub fn next_plan(&self) -> anyhow::Result<Option<NodePlan>> {
        let id = self.members.keys().max().copied().unwrap_or(0) + 1;
        self.ports.plan(id, self.dir.path())
    }

    /// Spawns the next node ([`next_plan`](Self::next_plan)) booting with `--seed` naming node
    /// `seed`, without waiting for it. It waits in state `joining` until someone calls
    /// `POST /cluster/join` for it ([`join_req`](Self::join_req)).
    pub fn spawn_seeded(&mut self, seed: u64) -> anyhow::Result<Starting> {
        let arg = self
            .seed_arg(seed)
            .with_context(|| format!("no node {seed} in this cluster"))?;
        let plan = self
            .next_plan()?
            .context("no ports left for another node (lower the base ports)")?;
        let id = plan.id;
        self.members.insert(
            id,
            Member {
                plan,
                boot: vec!["--seed".to_string(), arg],
            },
        );
        self.spawn(id)
    }

    /// [`spawn_seeded`](Self::spawn_seeded), then waits for the node's ready line.
    pub async fn add_seeded(&mut self, seed: u64) -> anyhow::Result<ReadyLine> {
        self.spawn_seeded(seed)?.ready().await
    }

    /// Nodes that exited on their own since the last call, each reported once.
    pub fn exits(&mut self) -> Vec<NodeExit> {
        let mut out = Vec::new();
        for p in &mut self.procs {
            if p.exited.is_none()
                && let Ok(Some(status)) = p.child.try_wait()
            {
                p.exited = Some(status);
                if let Some(m) = self.members.get(&p.id) {
                    out.push(NodeExit {
                        id: p.id,
                        status,
                        log: m.plan.log_path(),
                    });
                }
            }
        }
        out
    }

    /// Continues paused nodes, SIGTERMs every running one, waits up to `grace`, then SIGKILLs
    /// the rest; reaps all. With `verbose`, one line per node on stderr.
    pub fn stop(&mut self, grace: Duration, verbose: bool) {
        self.paused.clear();
        for p in &mut self.procs {
            if p.exited.is_none() && matches!(p.child.try_wait(), Ok(None)) {
                terminate_child(&p.child);
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
                    Some(s) => eprintln!("wkctl: node {} stopped ({s})", p.id),
                    None => eprintln!("wkctl: node {} killed", p.id),
                }
            }
            p.exited = status;
        }
        self.procs.clear();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Before `dir` drops (fields drop after this body).
        self.stop(STOP_GRACE, false);
    }
}

/// Sends SIGTERM (a clean shutdown request) to a child, and SIGCONT so a paused one acts on it.
fn terminate_child(child: &Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions. The pid is our own unreaped child
    // (we reap only through `Child`, which we hold), so it cannot name a recycled process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        libc::kill(pid, libc::SIGCONT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_plan_is_distinct() {
        let p = Ports::Free.plan_all(3, Path::new("d")).expect("free ports");
        let mut ports: Vec<u16> = p.iter().flat_map(|n| [n.http_port, n.cluster_port]).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
        assert_eq!(p.iter().map(|n| n.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(p[2].dir, PathBuf::from("d/3"));
    }

    #[test]
    fn base_ports_count_up_from_the_bases() {
        let base = Ports::Base {
            http: 5001,
            cluster: 11110,
        };
        let p = base.plan_all(3, Path::new("d")).expect("fits");
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
        let tight = Ports::Base {
            http: 65534,
            cluster: 11110,
        };
        assert!(tight.plan_all(3, Path::new("d")).is_err());
        assert_eq!(
            tight.plan(2, Path::new("d")).expect("plans").map(|p| p.http_port),
            Some(65535)
        );
        assert_eq!(tight.plan(3, Path::new("d")).expect("plans"), None);
    }

    /// `true` ignores its arguments and exits: enough to check the plans and the bookkeeping
    /// of seeded nodes without a real node.
    #[tokio::test]
    async fn seeded_nodes_take_the_next_id_and_ports() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let Some(bin) = ["/bin/true", "/usr/bin/true"]
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
        else {
            panic!("no `true` binary");
        };
        let (mut c, starting) = LocalCluster::builder()
            .nodes(2)
            .wknode(Some(bin))
            .data_dir(tmp.path())
            .ports(Ports::Free)
            .spawn()
            .expect("spawns");
        let err = starting
            .into_iter()
            .next()
            .expect("two")
            .ready()
            .await
            .expect_err("no ready line");
        assert!(
            format!("{err:#}").contains("exited before it was ready"),
            "{err:#}"
        );
        let next = c.next_plan().expect("plans").expect("free ports always fit");
        assert_eq!((next.id, next.dir.clone()), (3, tmp.path().join("3")));
        let s = c.spawn_seeded(1).expect("spawns");
        assert_eq!(s.plan().id, 3);
        assert!(!s.reused());
        assert_eq!(c.ids(), [1, 2, 3]);
        assert_eq!(c.seed_arg(1), c.cluster_addr(1).map(|a| format!("1@{a}")));
        let req = c.join_req(3).expect("planned");
        assert_eq!(
            (req.node_id, req.cluster_addr),
            (3, c.cluster_addr(3).expect("planned"))
        );
        c.stop(Duration::from_secs(1), false);
    }
}
