//! Test harness: runs real `wknode` processes on free local ports.
//!
//! `Cluster::start(n)` picks free ports for every node's HTTP and cluster address (the
//! `--init-nodes` string needs all of them up front), spawns the binary once per node with its own
//! data dir under one temp dir, waits for each node's JSON ready line on stdout and then for every
//! node to agree on a metadata leader. Each node's stderr goes to `node-<id>.log` in the temp dir.
//!
//! Invariants the tests rely on:
//! - every child is killed when its `Node` is dropped, also while unwinding from a panic;
//! - a restarted node reuses its ports, data dir and arguments;
//! - when a test panics, the tail of every node's log is printed and the temp dir is kept (its
//!   path is printed), so a failure can be read after the fact. `WK_TEST_KEEP=1` keeps it always.
//!
//! `Cluster::start_tls` does the same with TLS: each node gets its own certificate from a test
//! CA (`tls::Pki`), and every client the harness hands out speaks https and trusts that CA.
//!
//! Waits are on conditions (`wait_until`), never fixed sleeps. At most `MAX_NODES` node
//! processes run at once per test binary (clusters queue for slots), so a 2-core machine is not
//! overloaded by parallel tests.
//!
//! Environment:
//! - `WK_TEST_KEEP=1`: keep the temp dir (data and logs) even when the test passes;
//! - `WK_TEST_NODE_LOG=...`: the nodes' `RUST_LOG` (default `info`);
//! - `WK_TEST_NODE_BIN=path`: run another build of the node (e.g. `target/release/wknode`);
//! - `RUST_LOG`: the test process's own log filter (phases are logged at `info`).
//!
//! Other `WK_*` variables are removed from the nodes' environment so a developer's shell
//! settings cannot change what the tests run.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod im;

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use wk_api::{Client, ClientError, ReadyLine};

#[allow(unused_imports)] // not every test binary has a prerequisite
pub use wk_api::prereq::skip_or_fail;

/// How long a node may take from spawn to its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a cluster may take to agree on a metadata leader.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-request timeout of the clients the harness hands out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Sets up `tracing` output for the test process once (phases are announced with
/// `tracing::info!("--- ...")`). `RUST_LOG` overrides the default `info`. Also installs rustls'
/// crypto provider, which a test's own `reqwest::Client` needs (`wk_api::install_crypto_provider`).
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    wk_api::install_crypto_provider();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Polls `probe` until it returns `Ok`, at most `timeout`; panics with `what` and the last
/// reason given by the probe (`Err(reason)`) when the time is up.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        let reason = match probe().await {
            Ok(v) => {
                tracing::debug!("{what}: done after {:?}", start.elapsed());
                return v;
            }
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {reason}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `op` until it succeeds, at most `timeout`, backing off a little between tries. For
/// requests that may fail while a cluster heals (elections after a kill or restart); `what`
/// and the last error go into the panic message.
pub async fn retry<T, E: Debug, F, Fut>(what: &str, timeout: Duration, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    let mut tries = 0u32;
    loop {
        tries += 1;
        match op().await {
            Ok(v) => return v,
            Err(e) => {
                if Instant::now() >= deadline {
                    panic!("{what}: still failing after {timeout:?} ({tries} tries): {e:?}");
                }
                if tries % 20 == 1 {
                    tracing::info!("{what}: retrying after error: {e:?}");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
}

/// Base64 (standard alphabet) as the API wants payloads.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("payload {s:?} is not base64: {e}"))
}

/// The API error code of a client error, or a panic saying what came instead.
pub fn api_error(res: Result<impl Debug, ClientError>) -> wk_api::ApiError {
    match res {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// `n` distinct free loopback ports that a restarted node can bind again (`wk_api::ports`).
pub fn free_ports(n: usize) -> Vec<u16> {
    wk_api::ports::free_loopback_ports(n).expect("free loopback ports")
}

/// The last `lines` lines of a file, or a note why there are none.
pub fn tail(path: &Path, lines: usize) -> String {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("(cannot open {}: {e})", path.display()),
    };
    // Logs can be large; the tail is in the last few hundred KiB.
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether a start failure reads like a lost port race (EADDRINUSE).
fn is_addr_in_use(failure: &str) -> bool {
    let lower = failure.to_ascii_lowercase();
    lower.contains("address already in use") || lower.contains("addrinuse") || lower.contains("os error 98")
}

/// The binary under test: this package's `wknode`, or `WK_TEST_NODE_BIN` (e.g. a release build).
pub fn node_bin() -> String {
    std::env::var("WK_TEST_NODE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wknode").to_string())
}

/// One `wknode` process (or the place it runs when stopped): fixed id, ports, data dir, args.
pub struct Node {
    /// The node's id (`--node-id`).
    pub id: u64,
    /// `127.0.0.1:PORT` serving HTTP; kept across restarts.
    pub http_addr: String,
    /// `127.0.0.1:PORT` for Raft traffic; kept across restarts.
    pub cluster_addr: String,
    /// The node's data dir; kept across restarts.
    pub data_dir: PathBuf,
    /// stderr of every run of this node, appended, with a marker line per start.
    pub log_path: PathBuf,
    /// With TLS: the CA file its clients trust (they use https); None: plain http.
    pub tls_ca: Option<PathBuf>,
    /// The client gateway's TCP and WebSocket addresses from the last ready line (port 0:
    /// they change on a restart).
    pub gateway: (Option<String>, Option<String>),
    /// Arguments after the ones above (`--init-nodes`, `--channel-replicas`, extra flags).
    args: Vec<String>,
    /// The running process; `None` after `kill`/`stop` until `spawn`.
    child: Option<Child>,
    /// Lines the node printed on stdout, until its ready line was read.
    stdout_rx: Option<mpsc::UnboundedReceiver<String>>,
    /// How often this node was started (for log markers).
    starts: u32,
}

impl Node {
    fn new(id: u64, http_addr: String, cluster_addr: String, root: &Path, args: Vec<String>) -> Node {
        let data_dir = root.join(format!("node-{id}"));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        Node {
            id,
            http_addr,
            cluster_addr,
            log_path: root.join(format!("node-{id}.log")),
            tls_ca: None,
            gateway: (None, None),
            data_dir,
            args,
            child: None,
            stdout_rx: None,
            starts: 0,
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The OS pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Starts the process without waiting for it to be ready (see `wait_ready`). Lets a test
    /// start several nodes that need each other before any of them can serve.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        let _ = writeln!(
            log,
            "===== harness: start #{} of node {} =====",
            self.starts, self.id
        );
        let rust_log = std::env::var("WK_TEST_NODE_LOG").unwrap_or_else(|_| "info".into());
        let mut cmd = Command::new(node_bin());
        cmd.arg("--node-id")
            .arg(self.id.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http-addr")
            .arg(&self.http_addr)
            .arg("--cluster-addr")
            .arg(&self.cluster_addr)
            .args(&self.args)
            .env("RUST_LOG", rust_log)
            .env("RUST_BACKTRACE", "1")
            // Plain logs: they are read as files.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        // Settings from the test's own environment must not leak into the nodes.
        for (k, _) in std::env::vars() {
            if k.starts_with("WK_") && !k.starts_with("WK_TEST_") {
                cmd.env_remove(k);
            }
        }
        // Client gateways on free ports (tests run many nodes at once; the defaults 5100 and
        // 5200 would collide). A test's own --tcp-addr/--ws-addr flags win over these.
        cmd.env("WK_TCP_ADDR", "127.0.0.1:0")
            .env("WK_WS_ADDR", "127.0.0.1:0");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", node_bin()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::unbounded_channel();
        let log_path = self.log_path.clone();
        // Drain stdout for the life of the process so a late write never hits a closed pipe;
        // lines also go into the log, marked.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut f) = OpenOptions::new().append(true).open(&log_path) {
                    let _ = writeln!(f, "[stdout] {line}");
                }
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        self.stdout_rx = Some(rx);
    }

    /// Waits for the ready line and checks it names this node and its addresses. Panics with
    /// the log tail if the process exits first or the line does not come in time.
    pub async fn wait_ready(&mut self) -> ReadyLine {
        self.try_wait_ready().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `wait_ready`, but says what went wrong (with the log tail) instead of panicking.
    /// The process is killed on failure.
    pub async fn try_wait_ready(&mut self) -> Result<ReadyLine, String> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let mut rx = self.stdout_rx.take().expect("wait_ready after spawn");
        // Held outside `self` while waiting; dropping it kills the process.
        let mut child = self.child.take().expect("wait_ready on a running node");
        let failure = loop {
            tokio::select! {
                line = rx.recv() => match line {
                    Some(line) => {
                        let Ok(ready) = ReadyLine::parse(&line) else { continue };
                        let want = (self.id, self.http_addr.as_str(), self.cluster_addr.as_str());
                        let got = (ready.node_id, ready.http_addr.as_str(), ready.cluster_addr.as_str());
                        if got != want {
                            break format!("ready line {line} does not match (id, http, cluster) {want:?}");
                        }
                        self.child = Some(child);
                        self.gateway = (ready.tcp_addr.clone(), ready.ws_addr.clone());
                        return Ok(ready);
                    }
                    None => {
                        // stdout closed: the process is exiting; say how.
                        let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                        break format!("closed stdout before its ready line (exit: {status:?})");
                    }
                },
                status = child.wait() => break format!("exited before its ready line ({status:?})"),
                _ = tokio::time::sleep_until(deadline) => {
                    break format!("printed no ready line within {READY_TIMEOUT:?}");
                }
            }
        };
        let _ = child.start_kill();
        let _ = child.wait().await;
        let log = tail(&self.log_path, LOG_TAIL_LINES);
        Err(format!("node {} {failure}; log tail:\n{log}", self.id))
    }

    /// SIGKILL and reap: the crash case.
    pub async fn kill(&mut self) {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("kill: node {} is not running", self.id));
        self.stdout_rx = None;
        child.start_kill().expect("send SIGKILL");
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        tracing::info!("node {} killed: {status:?}", self.id);
    }

    /// Sends SIGTERM without waiting (so several nodes can shut down at once).
    pub fn term(&self) {
        self.signal("-TERM");
    }

    /// SIGSTOP: the process freezes with its sockets open (a hung node, not a dead one).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("kill {sig}: node {} is not running", self.id));
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed: {status}");
    }

    /// Waits for the process to exit after `term`; SIGKILLs it and panics when it takes longer
    /// than `STOP_TIMEOUT`.
    pub async fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("wait_exit: node {} is not running", self.id));
        self.stdout_rx = None;
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => status.expect("wait for node"),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                panic!(
                    "node {} did not exit within {STOP_TIMEOUT:?} of SIGTERM; log tail:\n{}",
                    self.id,
                    tail(&self.log_path, LOG_TAIL_LINES)
                );
            }
        }
    }

    /// SIGTERM and wait: the clean shutdown case.
    pub async fn stop(&mut self) -> ExitStatus {
        self.term();
        self.wait_exit().await
    }

    /// Starts the node again with the same args, ports and data dir and waits until it is ready.
    pub async fn restart(&mut self) -> ReadyLine {
        self.spawn();
        self.wait_ready().await
    }

    /// A client for this node only.
    pub fn client(&self) -> Client {
        client_for(std::slice::from_ref(&self.http_addr), self.tls_ca.as_deref())
    }

    /// Base URL of this node's HTTP API, for raw requests.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls_ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.http_addr)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A client over `addrs` (`HOST:PORT`): plain http, or https trusting the CA in `tls_ca`.
pub fn client_for(addrs: &[String], tls_ca: Option<&Path>) -> Client {
    let Some(ca) = tls_ca else {
        return Client::new(addrs, REQUEST_TIMEOUT).expect("client");
    };
    let https: Vec<String> = addrs.iter().map(|a| format!("https://{a}")).collect();
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("read {}: {e}", ca.display()));
    Client::new_with_ca(&https, REQUEST_TIMEOUT, Some(&pem)).expect("client with the test CA")
}

/// A set of nodes started together, sharing one temp dir.
pub struct Cluster {
    /// Indexed by position; `nodes[i].id == i + 1`.
    pub nodes: Vec<Node>,
    /// The `--init-nodes` string every node got.
    pub init_nodes: String,
    /// Removed on drop unless a test failed or `WK_TEST_KEEP` is set.
    dir: Option<tempfile::TempDir>,
    /// This cluster's share of `NODE_SLOTS`, released on drop.
    slots: Option<tokio::sync::SemaphorePermit<'static>>,
    /// With TLS: the CA its clients trust (and nodes added later get).
    pub tls_ca: Option<PathBuf>,
}

/// Node processes one test binary runs at once. Tests in a binary run in parallel; on a small
/// machine more nodes than this make elections time out and tests flaky, so a cluster waits for
/// slots before it starts.
const MAX_NODES: usize = 3;
static NODE_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_NODES);

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) with default settings (`--channel-replicas` 3).
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[]).await
    }

    /// Starts `n` nodes with `extra` arguments appended to every node's command line.
    ///
    /// The free ports are released before the nodes bind them, so another process can take one
    /// in between; a start that fails with EADDRINUSE is tried again on fresh ports.
    pub async fn start_with(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_inner(n, extra, None).await
    }

    /// Like `start_with`, with TLS: node `id` gets `--tls-cert/--tls-key/--tls-ca` from
    /// `pki.node_args(id)`, and the harness's clients speak https and trust `pki`'s CA.
    pub async fn start_tls(n: usize, extra: &[&str], pki: &tls::Pki) -> Cluster {
        Cluster::start_inner(n, extra, Some(pki)).await
    }

    async fn start_inner(n: usize, extra: &[&str], pki: Option<&tls::Pki>) -> Cluster {
        init_tracing();
        let mut slots = Some(
            NODE_SLOTS
                .acquire_many(n.min(MAX_NODES) as u32)
                .await
                .expect("semaphore is never closed"),
        );
        for attempt in 1.. {
            let mut cluster = Cluster::prepare(n, extra, pki, slots.take().expect("slots are handed back"));
            tracing::info!("--- starting {n} node(s) in {}", cluster.dir().display());
            for node in cluster.nodes.iter_mut() {
                node.spawn();
            }
            let mut failure = None;
            for node in cluster.nodes.iter_mut() {
                match node.try_wait_ready().await {
                    Ok(r) => tracing::info!(
                        "node {} ready: http {} cluster {}",
                        r.node_id,
                        r.http_addr,
                        r.cluster_addr
                    ),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            match failure {
                None => {
                    cluster.wait_meta_leader().await;
                    return cluster;
                }
                Some(e) if attempt < 3 && is_addr_in_use(&e) => {
                    tracing::warn!("start attempt {attempt} lost a port race, trying new ports: {e}");
                    slots = cluster.slots.take();
                }
                Some(e) => panic!("cluster of {n} did not start: {e}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Picks ports and dirs for `n` nodes without starting them.
    fn prepare(
        n: usize,
        extra: &[&str],
        pki: Option<&tls::Pki>,
        slots: tokio::sync::SemaphorePermit<'static>,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("wk-cluster-")
            .tempdir()
            .expect("create temp dir");
        let ports = free_ports(2 * n);
        let addrs: Vec<(String, String)> = (0..n)
            .map(|i| {
                (
                    format!("127.0.0.1:{}", ports[2 * i]),
                    format!("127.0.0.1:{}", ports[2 * i + 1]),
                )
            })
            .collect();
        let init_nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec!["--init-nodes".to_string(), init_nodes.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let nodes = addrs
            .into_iter()
            .enumerate()
            .map(|(i, (http, cluster))| {
                let id = i as u64 + 1;
                let mut args = args.clone();
                args.extend(pki.map(|p| p.node_args(id)).unwrap_or_default());
                let mut node = Node::new(id, http, cluster, dir.path(), args);
                node.tls_ca = pki.map(|p| p.ca.clone());
                node
            })
            .collect();
        Cluster {
            nodes,
            init_nodes,
            dir: Some(dir),
            slots: Some(slots),
            tls_ca: pki.map(|p| p.ca.clone()),
        }
    }

    /// The temp dir holding every node's data dir and log.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir is kept until drop").path()
    }

    /// Node by id (1-based).
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Spawns every stopped node, waits for each ready line, then for a metadata leader.
    pub async fn spawn_all_and_wait(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| !n.is_running()) {
            node.spawn();
        }
        for node in self.nodes.iter_mut() {
            if node.stdout_rx.is_some() {
                let ready = node.wait_ready().await;
                tracing::info!(
                    "node {} ready: http {} cluster {}",
                    ready.node_id,
                    ready.http_addr,
                    ready.cluster_addr
                );
            }
        }
        self.wait_meta_leader().await;
    }

    /// SIGTERMs every running node at once and waits for all to exit; returns (id, status).
    pub async fn stop_all(&mut self) -> Vec<(u64, ExitStatus)> {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            node.term();
        }
        let mut out = Vec::new();
        for node in self.nodes.iter_mut().filter(|n| n.is_running()) {
            out.push((node.id, node.wait_exit().await));
        }
        out
    }

    /// Waits until every running node reports the same metadata leader, which is a running
    /// node, and returns its id.
    pub async fn wait_meta_leader(&self) -> u64 {
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let ids: Vec<u64> = running.iter().map(|n| n.id).collect();
        let clients: Vec<(u64, Client)> = running.iter().map(|n| (n.id, n.client())).collect();
        let leader = wait_until(
            "every running node to agree on a metadata leader",
            LEADER_TIMEOUT,
            || {
                let clients = clients.clone();
                let ids = ids.clone();
                async move {
                    let mut seen = Vec::new();
                    for (id, c) in &clients {
                        let h = c.health().await.map_err(|e| format!("node {id} /health: {e}"))?;
                        seen.push((*id, h.meta_leader));
                    }
                    let first = seen[0].1;
                    match first {
                        Some(l) if seen.iter().all(|(_, m)| *m == first) && ids.contains(&l) => Ok(l),
                        _ => Err(format!("(node, meta_leader) = {seen:?}")),
                    }
                }
            },
        )
        .await;
        tracing::info!("metadata leader: node {leader}");
        leader
    }

    /// Every node's HTTP address, in id order.
    pub fn http_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.http_addr.clone()).collect()
    }

    /// A client over every node that fails over on transport errors.
    pub fn client(&self) -> Client {
        client_for(&self.http_addrs(), self.tls_ca.as_deref())
    }

    /// Like `client`, but trying the nodes starting at position `k % n`, to spread load.
    pub fn client_rotated(&self, k: usize) -> Client {
        let mut addrs = self.http_addrs();
        let n = addrs.len();
        addrs.rotate_left(k % n);
        client_for(&addrs, self.tls_ca.as_deref())
    }

    /// A client over every node but `id` (e.g. one that is paused: it accepts connections but
    /// never answers, so a client would wait its full timeout there on every request).
    pub fn client_excluding(&self, id: u64) -> Client {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.id != id)
            .map(|n| n.http_addr.clone())
            .collect();
        client_for(&addrs, self.tls_ca.as_deref())
    }

    /// A client over the running nodes only.
    pub fn client_running(&self) -> Client {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.http_addr.clone())
            .collect();
        client_for(&addrs, self.tls_ca.as_deref())
    }

    /// Prints the tail of every node's log to stderr.
    pub fn dump_logs(&self) {
        for node in &self.nodes {
            eprintln!(
                "----- tail of {} -----\n{}",
                node.log_path.display(),
                tail(&node.log_path, LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut() {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        let keep = std::env::var_os("WK_TEST_KEEP").is_some();
        if std::thread::panicking() {
            self.dump_logs();
        }
        if (std::thread::panicking() || keep)
            && let Some(dir) = self.dir.take()
        {
            eprintln!("cluster data and logs kept in {}", dir.keep().display());
        }
    }
}

/// Helpers for the scale-out tests (join, backlog, hibernation).
pub mod scale;
/// Test certificates (a CA and node certificates) for TLS clusters.
pub mod tls;
