//! Helpers shared by the CLI's integration tests (each test binary uses a subset).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[allow(unused_imports)] // not every test binary has a prerequisite
pub use wk_api::prereq::skip_or_fail;

/// The `wknode` binary next to `wkctl` (`cargo test --workspace` builds both).
pub fn wknode_bin() -> PathBuf {
    let wkctl = env!("CARGO_BIN_EXE_wkctl");
    let p = Path::new(wkctl).with_file_name(format!("wknode{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.is_file(),
        "{} is missing: `cargo test --workspace` builds it (or `cargo build -p wknode`)",
        p.display()
    );
    p
}

/// A `wknode` command for a test: none of the test environment's `WK_*` variables, logs at info
/// into `log`, stdout piped for its ready line (`spawn_ready`).
pub fn wknode_cmd(log: &Path) -> Command {
    let mut cmd = Command::new(wknode_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("WK_") {
            cmd.env_remove(k);
        }
    }
    // Client gateways on free ports: tests run many nodes at once.
    cmd.env("RUST_LOG", "info")
        .env("WK_TCP_ADDR", "127.0.0.1:0")
        .env("WK_WS_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"));
    cmd
}

/// Spawn a `wknode_cmd`: the receiver gets its ready line, and a thread keeps draining its
/// stdout afterwards.
pub fn spawn_ready(cmd: &mut Command) -> (Child, mpsc::Receiver<wk_api::ReadyLine>) {
    let mut child = cmd.spawn().expect("spawn wknode");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(ready) = wk_api::ReadyLine::parse(&line) {
                let _ = tx.send(ready);
            }
        }
    });
    (child, rx)
}

/// `wkctl::wait::wait_for` for the tests: runs `check` now and every `every` until it answers
/// `Ok` or `within` passed, on a runtime of its own; panics with what timed out and the last
/// thing `check` saw. `check` may block (run a command).
pub fn wait_until<T, E>(
    what: &str,
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> T
where
    E: std::fmt::Display + std::fmt::Debug + Send + Sync + 'static,
{
    wait_for_async(what, within, every, || {
        let r = check();
        async move { r }
    })
}

/// Like `wait_until`, for a check that is a future (a `wk_api::Client` call).
pub fn wait_for_async<T, E, F, Fut>(what: &str, within: Duration, every: Duration, check: F) -> T
where
    E: std::fmt::Display + std::fmt::Debug + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(wkctl::wait::wait_for(
            what,
            wkctl::wait::Poll::new(within, every),
            check,
        ))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One `wknode` child started outside a `LocalCluster` (HTTPS, a restored data dir): SIGKILLed
/// on drop; when the test failed, the tail of its log is printed first.
pub struct NodeGuard {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("=== node ===\n{}", wkctl::local::log_tail(&self.log, 40));
        }
    }
}

/// A base port such that `base..base+n` is free (checked by binding; a race is possible but
/// unlikely, and the failure would name the port).
pub fn free_port_run(n: u16) -> u16 {
    for _ in 0..50 {
        let base = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        if base > 60000 {
            continue;
        }
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no run of {n} free ports found");
}
