//! End to end: `wkctl top` in a real terminal (tmux) over a real 3-node cluster whose nodes
//! accept drills (`wkctl demo`, found next to `wkctl` like the drill suite). The test types
//! like an operator (filter to one channel, `d`, `1`, `y`), captures the pane, and checks
//! that the channel's leader marker `*N` moves to another node after the kill-leader drill
//! and that the dashboard reports the drill's measurements. `demo_restarts_a_node_it_killed`
//! runs `wkctl demo` itself in the pane (its dashboard can start nodes): it kills node 1 from
//! the drill menu, restarts it from there, and reads its catch-up in the Events pane.
//!
//! Without tmux it fails under `CI=true` and is skipped with the reason printed elsewhere. tmux runs on a private
//! socket (`-L`), so the operator's own tmux server is never touched; the guard kills that
//! server and stops the cluster on drop.

mod common;

use common::free_port_run;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WKCTL: &str = env!("CARGO_BIN_EXE_wkctl");
const CHANNEL: &str = "tmuxe2e";

/// The cluster (a `wkctl demo` child) and the tmux server; both stopped on drop.
struct Guard {
    demo: Child,
    socket: String,
}

impl Guard {
    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pane(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "top"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// Waits until `f` finds something in the captured pane; panics with the pane if not.
    fn wait_pane<T>(&self, what: &str, limit: Duration, f: impl Fn(&str) -> Option<T>) -> T {
        common::wait_until(what, limit, Duration::from_millis(100), || {
            let pane = self.pane();
            f(&pane).ok_or_else(|| format!("the pane:\n{pane}"))
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        // SIGTERM: the demo stops its nodes in order (they also die with it: PDEATHSIG).
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(self.demo.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.demo.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.demo.kill();
        let _ = self.demo.wait();
    }
}

/// The leader of `CHANNEL` as the channel table shows it (`*N` on its row).
fn leader_on_screen(pane: &str) -> Option<u64> {
    let row = pane.lines().find(|l| l.contains(&format!("{CHANNEL}/2")))?;
    row.split_whitespace()
        .filter_map(|w| w.strip_prefix('*'))
        .find_map(|n| n.parse().ok())
}

#[test]
fn kill_leader_drill_moves_the_leader_marker() {
    if Command::new("tmux").arg("-V").output().is_err() {
        common::skip_or_fail("tmux is not installed (`.ci/run` installs it when running as root)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let http = free_port_run(3);
    let cluster = free_port_run(3);
    eprintln!("--- starting a 3-node demo cluster (http {http}.., cluster {cluster}..)");
    let mut demo = Command::new(WKCTL)
        .args(["demo", "--nodes", "3", "--wknode"])
        .arg(common::wknode_bin())
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args([
            "--base-http-port",
            &http.to_string(),
            "--base-cluster-port",
            &cluster.to_string(),
        ])
        .env_remove("WK_ENDPOINT")
        .env_remove("WK_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("running wkctl demo");
    let stdout = demo.stdout.take().expect("piped");
    let guard = Guard {
        demo,
        socket: format!("wk-top-e2e-{}", std::process::id()),
    };
    // The banner comes once every node is ready; keep draining stdout so the demo never blocks.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("Try it") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo cluster did not get ready within 60 s");
    let endpoints = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", http + i))
        .collect::<Vec<_>>()
        .join(",");

    eprintln!("--- one message so {CHANNEL}/2 has a leader");
    common::wait_until(
        "a message sent",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let out = Command::new(WKCTL)
                // A system message: the channel was never created, and the sender is not the point.
                .args(["--endpoint", &endpoints, "message", "send", "--from", ""])
                .args(["--channel", CHANNEL, "--type", "2", "hello"])
                .env_remove("WK_ADMIN_TOKEN")
                .output()
                .expect("running wkctl message send");
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    );

    eprintln!("--- wkctl top under tmux");
    let top =
        format!("env -u WK_ENDPOINT -u WK_ADMIN_TOKEN {WKCTL} --endpoint {endpoints} top --refresh 300ms");
    guard.tmux(&["new-session", "-d", "-s", "top", "-x", "160", "-y", "45", &top]);
    // Keys typed before the dashboard switched the terminal to raw mode would be read as one
    // cooked line (Enter lost): wait until it draws.
    guard.wait_pane("the dashboard", Duration::from_secs(30), |p| {
        p.contains("WuKong HA").then_some(())
    });
    // Filter to the channel so it is the selected row.
    guard.keys(&["/"]);
    guard.keys(&["-l", CHANNEL]);
    guard.keys(&["Enter"]);
    let before = guard.wait_pane("the channel's leader", Duration::from_secs(30), leader_on_screen);
    eprintln!("{CHANNEL}/2 is led by node {before}");

    eprintln!("--- kill-leader drill: d, 1, y");
    guard.keys(&["d"]);
    // The menu names the target once the drill is possible (a node registers its HTTP
    // address a moment after it starts).
    guard.wait_pane("the drill menu with its target", Duration::from_secs(30), |p| {
        p.contains(&format!(
            "kill the leader of the selected channel → node {before}"
        ))
        .then_some(())
    });
    guard.keys(&["1"]);
    guard.wait_pane("the confirmation", Duration::from_secs(5), |p| {
        p.contains("Confirm drill").then_some(())
    });
    guard.keys(&["y"]);
    let after = guard.wait_pane("another leader", Duration::from_secs(60), |p| {
        leader_on_screen(p).filter(|l| *l != before)
    });
    eprintln!("{CHANNEL}/2 moved from node {before} to node {after}");
    let pane = guard.wait_pane("the drill's result", Duration::from_secs(45), |p| {
        p.contains("re-elected in").then(|| p.to_string())
    });
    assert!(
        pane.contains(&format!("kill the leader of {CHANNEL}/2 (node {before})")),
        "{pane}"
    );
    assert!(pane.contains("✗ node") && pane.contains("down"), "{pane}");
    assert!(
        pane.contains("⚡ leader "),
        "the throughput pane shows the result: {pane}"
    );
}

/// The tmux server of a test that runs `wkctl demo` itself in the pane (its dashboard):
/// killing the server ends the demo, whose nodes die with it (PDEATHSIG).
struct DemoPane {
    socket: String,
}

impl DemoPane {
    fn as_guard(&self) -> Tmux<'_> {
        Tmux(&self.socket)
    }
}

impl Drop for DemoPane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

/// tmux commands on one private server, pane `top`.
struct Tmux<'a>(&'a str);

impl Tmux<'_> {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(self.0)
            .args(args)
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn wait_pane<T>(&self, what: &str, limit: Duration, f: impl Fn(&str) -> Option<T>) -> T {
        common::wait_until(what, limit, Duration::from_millis(100), || {
            let pane = self.run(&["capture-pane", "-p", "-t", "top"]);
            f(&pane).ok_or_else(|| format!("the pane:\n{pane}"))
        })
    }
}

/// `wkctl demo`'s own dashboard: kill node 1 from the drill menu, then "restart node 1" from
/// it; the Events pane says how far behind it came back and that it caught up, and the
/// title counts the demo's nodes.
#[test]
fn demo_restarts_a_node_it_killed() {
    if Command::new("tmux").arg("-V").output().is_err() {
        common::skip_or_fail("tmux is not installed (`.ci/run` installs it when running as root)");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let http = free_port_run(3);
    let cluster = free_port_run(3);
    let demo = format!(
        "env -u WK_ENDPOINT -u WK_ADMIN_TOKEN {WKCTL} demo --nodes 3 --wknode {} --data-dir {} \
         --base-http-port {http} --base-cluster-port {cluster}",
        common::wknode_bin().display(),
        tmp.path().join("data").display()
    );
    let pane = DemoPane {
        socket: format!("wk-demo-e2e-{}", std::process::id()),
    };
    let t = pane.as_guard();
    eprintln!("--- wkctl demo under tmux (http {http}.., cluster {cluster}..)");
    t.run(&["new-session", "-d", "-s", "top", "-x", "180", "-y", "50", &demo]);
    t.wait_pane("the demo's dashboard", Duration::from_secs(60), |p| {
        (p.contains("WuKong HA") && p.contains("demo: 3 local node(s)")).then_some(())
    });

    eprintln!("--- kill node 1: d, 2, y");
    t.keys(&["d"]);
    t.wait_pane("the drill menu naming node 1", Duration::from_secs(30), |p| {
        p.contains("kill the selected node (Nodes pane) → node 1")
            .then_some(())
    });
    t.keys(&["2"]);
    t.wait_pane("the confirmation", Duration::from_secs(5), |p| {
        p.contains("Confirm drill").then_some(())
    });
    t.keys(&["y"]);
    t.wait_pane("the kill drill's result", Duration::from_secs(60), |p| {
        p.contains("drill kill node 1:").then_some(())
    });

    eprintln!("--- restart node 1: d, 4, y");
    t.keys(&["d"]);
    t.wait_pane("the restart entry naming node 1", Duration::from_secs(30), |p| {
        p.contains("restart the selected killed node (demo) → node 1")
            .then_some(())
    });
    t.keys(&["4"]);
    t.wait_pane("the confirmation", Duration::from_secs(5), |p| {
        p.contains("restart node 1 on its data dir?").then_some(())
    });
    t.keys(&["y"]);
    let p = t.wait_pane("node 1 caught up", Duration::from_secs(90), |p| {
        p.contains("node 1 caught up in").then(|| p.to_string())
    });
    // Newest first, so the last two lines are on top ("→ restarting node 1" may have scrolled
    // out of the pane under the election events).
    assert!(
        p.contains("→ node 1 is up:") && p.contains("metadata entries behind"),
        "{p}"
    );
}
