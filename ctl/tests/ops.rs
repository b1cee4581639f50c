//! The operator commands (`cluster health|status --watch`, `node ...`, `channel ...`) run as a
//! user would run them, against real clusters of `wknode` processes (found next to `wkctl`:
//! `cargo test --workspace` builds it, or `cargo build -p wknode`).
//!
//! Each cluster is wkctl's own `LocalCluster` (free local ports, temp data dirs), stopped when
//! the `Cluster` is dropped (also when a test panics, after printing the tail of each node's
//! log); conditions are awaited with wkctl's `wait_for`.
//! Text output is compared with golden files in `testdata/ctl/ops_*.txt` after masking the
//! volatile fields (terms, indexes, ms, checksums, ports, which node leads the metadata);
//! `WK_UPDATE_GOLDEN=1` rewrites them. JSON output must decode into the wk-api types.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{NodeGuard, spawn_ready, wknode_cmd};
use wk_api::{Agreement, ChannelConfig, ChannelReplicas, Client, EvacuateResp, NodesResp, RemoveNodeResp};
use wkctl::local::{LocalCluster, log_tail};
use wkctl::reports::{ChannelListing, HealthReport, NodeDetail};

const WKCTL: &str = env!("CARGO_BIN_EXE_wkctl");

fn phase(name: &str) {
    eprintln!("--- {name}");
}

// ---------------------------------------------------------------------------------------------
// Golden files and masking.

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/ctl")
        .join(name)
}

fn assert_golden(name: &str, actual: &str) {
    if std::env::var_os("WK_UPDATE_GOLDEN").is_some() {
        std::fs::write(testdata(name), actual).expect("writing golden file");
        return;
    }
    let expected = std::fs::read_to_string(testdata(name))
        .unwrap_or_else(|e| panic!("reading testdata/ctl/{name}: {e}"));
    assert_eq!(
        actual, expected,
        "output differs from testdata/ctl/{name} (WK_UPDATE_GOLDEN=1 rewrites it)"
    );
}

/// Masks volatile output: in tables (a header line of upper-case column names followed by rows
/// with as many cells; cells are at least two spaces apart), the cells of the `columns` named
/// are replaced by `#` and every cell is joined by two spaces (widths vary with the masked
/// values); elsewhere, the word after each of `markers` becomes `#`.
fn mask(text: &str, columns: &[&str], markers: &[&str]) -> String {
    let mut out = String::new();
    let mut table: Option<(usize, Vec<usize>)> = None;
    for line in text.lines() {
        let cells: Vec<&str> = line
            .trim()
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let is_header = cells.len() >= 2
            && cells
                .iter()
                .all(|c| c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'));
        if is_header {
            let idx = cells
                .iter()
                .enumerate()
                .filter(|(_, c)| columns.contains(c))
                .map(|(i, _)| i)
                .collect();
            table = Some((cells.len(), idx));
            out.push_str(&cells.join("  "));
        } else if let Some((_, idx)) = table.as_ref().filter(|(n, _)| *n == cells.len()) {
            let masked: Vec<&str> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| if idx.contains(&i) { "#" } else { c })
                .collect();
            out.push_str(&masked.join("  "));
        } else {
            table = None;
            let mut l = line.to_string();
            for m in markers {
                l = mask_after(&l, m);
            }
            out.push_str(&l);
        }
        out.push('\n');
    }
    out
}

/// Replaces the run of hex digits after every `marker` with `#`.
fn mask_after(line: &str, marker: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find(marker) {
        let after = &rest[i + marker.len()..];
        let end = after
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(after.len());
        out.push_str(&rest[..i + marker.len()]);
        out.push_str(if end > 0 { "#" } else { "" });
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn masking() {
    let text = "channel g (type 2)  group 17  leader 2  term 5\n\
                NODE  TERM  CHECKSUM\n   1     5  00ab\n  12    15  ffff\nchecksums agree at applied index 9\n\
                A  B  C\nnot a row\n";
    assert_eq!(
        mask(
            text,
            &["TERM", "CHECKSUM"],
            &["group ", "term ", "applied index "]
        ),
        "channel g (type 2)  group #  leader 2  term #\nNODE  TERM  CHECKSUM\n1  #  #\n12  #  #\n\
         checksums agree at applied index #\nA  B  C\nnot a row\n"
    );
}

// ---------------------------------------------------------------------------------------------
// The cluster harness: wkctl's own `LocalCluster`, and its `wait_for`.

/// Real `wknode` processes (`LocalCluster`, stopped on drop); when a test panics, the tail of
/// each node's log is printed first.
struct Cluster {
    nodes: LocalCluster,
}

impl Cluster {
    /// Starts `n` nodes bootstrapped together and waits until every one is online, registered
    /// and a metadata leader exists.
    fn start(n: u64) -> Cluster {
        let rt = runtime();
        let nodes = rt
            .block_on(
                LocalCluster::builder()
                    .nodes(n)
                    .wknode(Some(&common::wknode_bin()))
                    .clean_env()
                    .env("RUST_LOG", "info")
                    .args(["--channel-idle-timeout", "10m"])
                    .start(),
            )
            .unwrap_or_else(|e| panic!("starting {n} nodes: {e:#}"));
        let cluster = Cluster { nodes };
        let client = cluster.client();
        wait_for(
            "every node online and registered, one metadata leader",
            Duration::from_secs(60),
            || async {
                let r = client.nodes().await.map_err(|e| e.to_string())?;
                let ok = r.nodes.len() == n as usize
                    && r.meta_leader.is_some()
                    && r.nodes.iter().all(|x| x.online && !x.http_addr.is_empty());
                if ok { Ok(()) } else { Err(format!("{r:?}")) }
            },
        );
        cluster
    }

    /// Comma-separated HTTP addresses of the given nodes (all running ones when empty).
    fn endpoints(&self, ids: &[u64]) -> String {
        let endpoints = if ids.is_empty() {
            self.nodes.running_endpoints()
        } else {
            ids.iter().filter_map(|id| self.nodes.endpoint(*id)).collect()
        };
        endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn client(&self) -> Client {
        Client::new(&[self.endpoints(&[])], Duration::from_secs(10)).expect("client")
    }

    /// Runs `wkctl --endpoint <running nodes> ARGS`.
    fn wkctl(&self, args: &[&str]) -> Output {
        wkctl(&self.endpoints(&[]), args)
    }

    fn kill(&mut self, id: u64) {
        self.nodes.kill(id).expect("a running node");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for id in self.nodes.ids() {
                if let Some(log) = self.nodes.log_path(id) {
                    eprintln!("=== node {id} ===\n{}", log_tail(&log, 30));
                }
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `common::wait_for_async`, every 100 ms.
fn wait_for<T, E, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    E: std::fmt::Display + std::fmt::Debug + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    common::wait_for_async(what, timeout, Duration::from_millis(100), check)
}

fn wkctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new(WKCTL)
        .args(["--endpoint", endpoints])
        .args(args)
        .env_remove("WK_ENDPOINT")
        .env_remove("WK_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("running wkctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

/// Asserts the exit code, showing both streams when it differs.
#[track_caller]
fn expect_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn json<T: serde::de::DeserializeOwned>(o: &Output) -> T {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("JSON output does not decode: {e}\n{}", stdout(o)))
}

/// Sends `per_channel` text messages to each group channel `<prefix><i>`, one at a time;
/// returns the message ids per channel, in seq order.
fn write_messages(client: &Client, prefix: &str, channels: usize, per_channel: usize) -> Vec<Vec<u64>> {
    let rt = runtime();
    (0..channels)
        .map(|c| {
            let create = wk_api::ChannelReq {
                channel_id: format!("{prefix}{c}"),
                channel_type: 2,
                subscribers: vec!["ops".into()],
                reset: 0,
            };
            rt.block_on(client.channel_create(&create))
                .expect("create channel");
            (0..per_channel)
                .map(|m| {
                    let req = wk_api::SendReq {
                        header: Default::default(),
                        client_msg_no: format!("{prefix}{c}-{m}"),
                        from_uid: "ops".into(),
                        channel_id: format!("{prefix}{c}"),
                        channel_type: 2,
                        payload: "aGVsbG8=".into(),
                    };
                    let resp = rt.block_on(client.send(&req)).expect("send");
                    assert_eq!(resp.message_seq, m as u64 + 1);
                    resp.message_id
                })
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// A 3-node cluster: listings, channel show, leader transfer, evacuation, health (exit 0, then
/// 1 after one node is SIGKILLed), `cluster status --watch`.
#[test]
fn operator_commands_on_three_nodes() {
    phase("start 3 nodes, write 3 messages to each of 6 channels");
    let mut cluster = Cluster::start(3);
    let client = cluster.client();
    write_messages(&client, "ops-", 6, 3);

    phase("node list");
    let out = cluster.wkctl(&["node", "list"]);
    expect_code(&out, 0);
    assert_golden(
        "ops_node_list.txt",
        &mask(&stdout(&out), &["HTTP", "CLUSTER", "META_ROLE", "LED"], &[]),
    );
    let out = cluster.wkctl(&["--output", "json", "node", "list"]);
    expect_code(&out, 0);
    let nodes: NodesResp = json(&out);
    assert_eq!(nodes.nodes.len(), 3);

    phase("channel list");
    let out = cluster.wkctl(&["--output", "json", "channel", "list"]);
    expect_code(&out, 0);
    let v: ChannelListing = json(&out);
    assert_eq!(v.total, 6);
    let listed = v.channels;
    assert_eq!(listed.len(), 6);
    assert!(
        listed.iter().all(|c| c.replicas.len() == 3 && c.leader.is_some()),
        "{listed:?}"
    );
    let out = cluster.wkctl(&["channel", "list", "--limit", "2"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).ends_with("(2 of 6 channels examined; raise --limit to see more)\n"),
        "{}",
        stdout(&out)
    );

    phase("channel transfer-leader");
    let out = cluster.wkctl(&["channel", "transfer-leader", "ops-0", "2", "--to", "1"]);
    expect_code(&out, 0);
    let out = cluster.wkctl(&["channel", "transfer-leader", "ops-0", "2", "--to", "2"]);
    expect_code(&out, 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("from node 1 to node 2"));
    assert_golden(
        "ops_transfer_leader.txt",
        &mask(&stdout(&out), &["GROUP", "TERM"], &["(term "]),
    );
    let out = cluster.wkctl(&[
        "--output",
        "json",
        "channel",
        "transfer-leader",
        "ops-1",
        "2",
        "--to",
        "3",
    ]);
    expect_code(&out, 0);
    let cfg: ChannelConfig = json(&out);
    assert_eq!(cfg.leader, Some(3), "{cfg:?}");
    let out = cluster.wkctl(&["channel", "transfer-leader", "ops-1", "2", "--to", "9"]);
    expect_code(&out, 2);

    phase("channel show");
    wait_for("ops-0 replicas caught up", Duration::from_secs(20), || async {
        let c = client
            .channel_replicas("ops-0", 2)
            .await
            .map_err(|e| e.to_string())?;
        let top = c.replicas.iter().map(|r| r.applied_index).max().unwrap_or(0);
        let ok = c.leader == Some(2)
            && c.replicas
                .iter()
                .all(|r| r.lag == Some(0) && r.applied_index == top && r.last_ack_ms.is_some());
        if ok { Ok(()) } else { Err(format!("{c:?}")) }
    });
    let out = cluster.wkctl(&["channel", "show", "ops-0", "2"]);
    expect_code(&out, 0);
    assert_golden(
        "ops_channel_show.txt",
        &mask(
            &stdout(&out),
            &["TERM", "LAST", "APPLIED", "ACK_MS", "CHECKSUM"],
            &["group ", "term "],
        ),
    );
    let out = cluster.wkctl(&["--output", "json", "channel", "show", "ops-0", "2"]);
    expect_code(&out, 0);
    let c: ChannelReplicas = json(&out);
    assert_eq!(c.replicas.len(), 3);
    assert_eq!(c.agreement(), Agreement::Agree { seq: 3 });
    let out = cluster.wkctl(&["channel", "show", "nope", "2"]);
    expect_code(&out, 2);

    phase("channel verify, cluster verify");
    let out = cluster.wkctl(&["--output", "json", "channel", "verify", "ops-0", "2"]);
    expect_code(&out, 0);
    let v: wk_api::ChannelVerify = json(&out);
    assert!(v.ok && v.common_seq == 3 && v.replicas.len() == 3, "{v:?}");
    assert!(
        v.replicas
            .iter()
            .all(|r| r.verified_seq == 3 && r.checksum == c.replicas[0].checksum)
    );
    let out = cluster.wkctl(&["cluster", "verify"]);
    expect_code(&out, 0);
    assert!(stdout(&out).contains("✓ ok"), "{}", stdout(&out));
    let out = cluster.wkctl(&["--output", "json", "cluster", "verify", "--limit", "2"]);
    expect_code(&out, 0);
    let all: wk_api::ClusterVerify = json(&out);
    assert_eq!((all.checked, all.failed), (2, 0), "{all:?}");
    let out = cluster.wkctl(&["channel", "verify", "nope", "2"]);
    expect_code(&out, 2);

    phase("node show");
    let out = cluster.wkctl(&["--output", "json", "node", "show", "2"]);
    expect_code(&out, 0);
    let v: NodeDetail = json(&out);
    let node = v.node;
    assert_eq!(node.id, 2);
    let chans = v.channels;
    assert_eq!(chans.len(), 6);
    assert!(
        chans
            .iter()
            .any(|c| c.channel_id == "ops-0" && c.leader == Some(2))
    );
    let out = cluster.wkctl(&["node", "show", "2"]);
    expect_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.starts_with("node 2\n") && text.contains("replicates 6"),
        "{text}"
    );
    let out = cluster.wkctl(&["node", "show", "7"]);
    expect_code(&out, 2);

    phase("cluster health: healthy");
    let out = cluster.wkctl(&["cluster", "health", "--expect-nodes", "3"]);
    expect_code(&out, 0);
    assert_golden(
        "ops_health_ok.txt",
        &mask(&stdout(&out), &[], &["meta_leader  node ", "(worst "]),
    );
    let out = cluster.wkctl(&["--output", "json", "cluster", "health"]);
    expect_code(&out, 0);
    let v: HealthReport = json(&out);
    assert!(v.healthy, "{v:?}");
    assert_eq!(v.checks.len(), 4);
    let out = cluster.wkctl(&["cluster", "health", "--expect-nodes", "4"]);
    expect_code(&out, 1);
    assert!(stdout(&out).contains("expected 4 nodes, the cluster has 3"));

    phase("node evacuate-leaders");
    let out = cluster.wkctl(&["node", "evacuate-leaders", "2"]);
    expect_code(&out, 0);
    assert!(
        stdout(&out).contains("✓ ok    node 2 leads no channel"),
        "{}",
        stdout(&out)
    );
    let out = cluster.wkctl(&["--output", "json", "node", "evacuate-leaders", "2"]);
    expect_code(&out, 0);
    let ev: EvacuateResp = json(&out);
    assert!(ev.stuck.is_empty() && ev.led == 0, "{ev:?}");
    let out = cluster.wkctl(&["--output", "json", "channel", "list", "--leader-on", "2"]);
    expect_code(&out, 0);
    let v: ChannelListing = json(&out);
    assert!(v.channels.is_empty(), "{v:?}");
    let nodes: NodesResp = json(&cluster.wkctl(&["--output", "json", "node", "list"]));
    assert_eq!(
        nodes.nodes.iter().find(|n| n.id == 2).map(|n| n.channels_led),
        Some(0)
    );

    phase("cluster status --watch");
    let mut watch = Command::new(WKCTL)
        .args(["--endpoint", &cluster.endpoints(&[]), "--output", "json"])
        .args(["cluster", "status", "--watch", "--interval", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("wkctl cluster status --watch");
    let (tx, rx) = mpsc::channel();
    let watch_out = watch.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(watch_out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    for _ in 0..2 {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a JSON line per refresh");
        let r: NodesResp = serde_json::from_str(&line).expect("each line is a NodesResp");
        assert_eq!(r.nodes.len(), 3);
    }
    // SAFETY: plain kill(2) on our own, not yet reaped child.
    unsafe { libc::kill(watch.id() as i32, libc::SIGINT) };
    assert_eq!(
        watch.wait().expect("wait").code(),
        Some(0),
        "Ctrl-C ends the watch with 0"
    );

    phase("SIGKILL node 3: cluster health fails");
    cluster.kill(3);
    let out = cluster.wkctl(&["cluster", "health"]);
    expect_code(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("✗ FAIL  nodes        2/3 nodes online"), "{text}");
    assert!(
        text.contains("- node 3 offline") && text.contains("cluster UNHEALTHY"),
        "{text}"
    );
    let out = cluster.wkctl(&["--output", "json", "cluster", "health"]);
    expect_code(&out, 1);
    let v: HealthReport = json(&out);
    assert!(!v.healthy, "{v:?}");
    let out = cluster.wkctl(&["channel", "list", "--lagging"]);
    expect_code(&out, 0);
    assert!(stdout(&out).contains("3(down)"), "{}", stdout(&out));
}

/// `node remove` end to end: 4 nodes, 20 channels with messages, remove node 4; every channel
/// keeps 3 replicas, none on node 4, and every message is still there.
#[test]
fn node_remove_on_four_nodes() {
    phase("start 4 nodes, write 3 messages to each of 20 channels");
    let mut cluster = Cluster::start(4);
    let client = cluster.client();
    let ids = write_messages(&client, "rm-", 20, 3);
    let rest = cluster.endpoints(&[1, 2, 3]);

    phase("node remove --dry-run");
    let out = wkctl(&rest, &["node", "remove", "4", "--dry-run"]);
    expect_code(&out, 0);
    assert_golden("ops_remove_dry_run.txt", &stdout(&out));
    let out = wkctl(&rest, &["--output", "json", "node", "remove", "4", "--dry-run"]);
    expect_code(&out, 0);
    let plan: RemoveNodeResp = json(&out);
    assert!(plan.dry_run && !plan.removed && !plan.plan.is_empty(), "{plan:?}");
    let before = runtime().block_on(client.channels(100)).expect("channels");
    assert!(
        before.channels.iter().any(|c| c.replicas.contains(&4)),
        "nothing changed"
    );

    phase("node remove --wait");
    let out = wkctl(&rest, &["--output", "json", "node", "remove", "4", "--wait"]);
    expect_code(&out, 0);
    let resp: RemoveNodeResp = json(&out);
    assert!(resp.removed && resp.stuck.is_empty(), "{resp:?}");
    assert_eq!(resp.moved, plan.plan.len() as u64);
    assert!(String::from_utf8_lossy(&out.stderr).contains("decommissioning node 4"));

    phase("every channel on 3 of the remaining nodes, no message lost");
    let rest_client = Client::new(std::slice::from_ref(&rest), Duration::from_secs(10)).expect("client");
    let rt = runtime();
    let list = rt.block_on(rest_client.channels(100)).expect("channels");
    assert_eq!(list.total, 20);
    for c in &list.channels {
        assert_eq!(c.replicas.len(), 3, "{c:?}");
        assert!(!c.replicas.contains(&4), "{c:?}");
    }
    for (i, want) in ids.iter().enumerate() {
        let req = wk_api::SyncReq {
            login_uid: String::new(),
            channel_id: format!("rm-{i}"),
            channel_type: 2,
            start_message_seq: 0,
            end_message_seq: 0,
            limit: 100,
            pull_mode: wk_api::PULL_MODE_UP,
        };
        let got = rt.block_on(rest_client.sync(&req)).expect("messagesync");
        let got: Vec<u64> = got.messages.iter().map(|m| m.message_id).collect();
        assert_eq!(&got, want, "messages of rm-{i}");
    }

    phase("cluster status shows 3 nodes");
    let out = wkctl(&rest, &["--output", "json", "cluster", "status"]);
    expect_code(&out, 0);
    let nodes: NodesResp = json(&out);
    let mut live: Vec<u64> = nodes.nodes.iter().map(|n| n.id).collect();
    live.sort_unstable();
    assert_eq!(live, vec![1, 2, 3], "{nodes:?}");
    let out = wkctl(&rest, &["cluster", "health", "--expect-nodes", "3"]);
    expect_code(&out, 0);

    phase("the removed node, still running, says so: /health, every request, cluster status");
    let n4 = Client::new(&[cluster.endpoints(&[4])], Duration::from_secs(10)).expect("client");
    let health = wait_for(
        "node 4 to know it was removed",
        Duration::from_secs(20),
        || async {
            let h = n4.health().await.map_err(|e| e.to_string())?;
            if h.state == "removed" {
                Ok(h)
            } else {
                Err(format!("{h:?}"))
            }
        },
    );
    assert_eq!(health.node_id, 4);
    let refused = rt
        .block_on(n4.nodes())
        .expect_err("a removed node serves nothing");
    assert_eq!(
        refused.error_code(),
        Some(wk_api::ErrorCode::Removed),
        "{refused}"
    );
    let token = wk_api::UserTokenReq {
        uid: "after-remove".into(),
        token: "t".into(),
        device_flag: 0,
        device_level: 0,
    };
    let refused = rt.block_on(n4.user_token(&token)).expect_err("no write either");
    assert_eq!(
        refused.error_code(),
        Some(wk_api::ErrorCode::Removed),
        "{refused}"
    );
    // Node 4 first: the client moves past its `removed` answer to a member.
    let all = cluster.endpoints(&[4, 1, 2, 3]);
    let out = wkctl(&all, &["--output", "json", "cluster", "status"]);
    expect_code(&out, 0);
    let nodes: NodesResp = json(&out);
    let roles: Vec<(u64, wk_api::Role)> = nodes.nodes.iter().map(|n| (n.id, n.role)).collect();
    assert!(roles.contains(&(4, wk_api::Role::Removed)), "{roles:?}");
    assert_eq!(nodes.nodes.len(), 4, "{roles:?}");
    let out = wkctl(&all, &["cluster", "status"]);
    expect_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("node 4 removed but still running") && text.contains("removed"),
        "{text}"
    );

    phase("restarted on its data dir, node 4 still says so");
    cluster.kill(4);
    rt.block_on(cluster.nodes.restart(4)).expect("restart node 4");
    let h = wait_for(
        "node 4 /health after the restart",
        Duration::from_secs(20),
        || async { n4.health().await.map_err(|e| e.to_string()) },
    );
    assert_eq!(h.state, "removed", "{h:?}");
}

/// `cluster join --no-wait` answers at once (`pending`) and the cluster admits the node on its
/// own; `cluster join` (`--wait`, the default) answers once the node caught up.
#[test]
fn cluster_join_waits_or_not() {
    phase("start 3 nodes and node 4 with --seed");
    let mut cluster = Cluster::start(3);
    let rt = runtime();
    rt.block_on(cluster.nodes.add_seeded(1)).expect("node 4 starts");
    let rest = cluster.endpoints(&[1, 2, 3]);
    let req = cluster.nodes.join_req(4).expect("node 4's plan");
    let target = format!("4@{}", req.cluster_addr);

    phase("cluster join --no-wait: answered at once, the cluster admits node 4 on its own");
    let out = wkctl(
        &rest,
        &[
            "--output",
            "json",
            "cluster",
            "join",
            &target,
            "--http-addr",
            &req.http_addr,
            "--no-wait",
        ],
    );
    expect_code(&out, 0);
    let resp: wk_api::JoinResp = json(&out);
    assert!(resp.pending && resp.node_id == 4, "{resp:?}");
    let client = cluster.client();
    wait_for("node 4 admitted and online", Duration::from_secs(60), || async {
        let r = client.nodes().await.map_err(|e| e.to_string())?;
        match r.nodes.iter().find(|n| n.id == 4) {
            Some(n) if n.online && !n.http_addr.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let n4 = Client::new(&[cluster.endpoints(&[4])], Duration::from_secs(10)).expect("client");
    wait_for("node 4 serving", Duration::from_secs(30), || async {
        let h = n4.health().await.map_err(|e| e.to_string())?;
        if h.state == "serving" {
            Ok(())
        } else {
            Err(format!("{h:?}"))
        }
    });

    phase("cluster join (waits by default): answered once node 5 caught up");
    rt.block_on(cluster.nodes.add_seeded(1)).expect("node 5 starts");
    let req = cluster.nodes.join_req(5).expect("node 5's plan");
    let target = format!("5@{}", req.cluster_addr);
    let out = wkctl(
        &rest,
        &["cluster", "join", &target, "--http-addr", &req.http_addr],
    );
    expect_code(&out, 0);
    assert!(stdout(&out).starts_with("node 5 joined in "), "{}", stdout(&out));
    let r = rt.block_on(client.nodes()).expect("nodes");
    assert!(r.nodes.iter().any(|n| n.id == 5), "{r:?}");
    // Both spellings are documented.
    let help = wkctl(&rest, &["cluster", "join", "--help"]);
    let help = stdout(&help);
    assert!(help.contains("--wait") && help.contains("--no-wait"), "{help}");
}

/// Backup and restore: `snapshot save` of one node of a loaded 3-node cluster, `snapshot
/// status`, `snapshot restore` into a fresh data dir, and a new one-node cluster started on it
/// serves every message (ids, seqs, payloads) and the metadata, and takes new writes after
/// them. A truncated or bit-flipped file, or a used data dir, is refused with exit 2.
#[test]
fn snapshot_save_and_restore() {
    phase("start 3 nodes; users, a channel with subscribers, 300 messages over 4 channels");
    let cluster = Cluster::start(3);
    let client = cluster.client();
    let rt = runtime();
    for u in 0..5 {
        let req = wk_api::UserTokenReq {
            uid: format!("user-{u}"),
            token: format!("token-{u}"),
            device_flag: 0,
            device_level: 1,
        };
        rt.block_on(client.user_token(&req)).expect("user token");
    }
    for c in 0..4 {
        let subs = wk_api::ChannelReq {
            channel_id: format!("snap-{c}"),
            channel_type: 2,
            subscribers: if c == 0 {
                vec!["ops".into(), "user-0".into(), "user-1".into()]
            } else {
                vec!["ops".into()]
            },
            reset: 0,
        };
        rt.block_on(client.channel_create(&subs)).expect("channel");
    }
    let banned = wk_api::SenderListReq {
        channel_id: "snap-0".into(),
        channel_type: 2,
        uids: vec!["user-1".into()],
    };
    rt.block_on(client.sender_list("blacklist_add", &banned))
        .expect("blacklist");
    // One batch per channel (one Raft entry each): as many messages as one at a time, in seconds.
    let ids: Vec<Vec<u64>> = (0..4)
        .map(|c| {
            let messages = (0..75)
                .map(|m| wk_api::SendReq {
                    header: Default::default(),
                    client_msg_no: format!("snap-{c}-{m}"),
                    from_uid: "ops".into(),
                    channel_id: format!("snap-{c}"),
                    channel_type: 2,
                    payload: "aGVsbG8=".into(),
                })
                .collect();
            let resp = rt
                .block_on(client.send_batch(&wk_api::SendBatchReq { messages }))
                .expect("sendbatch");
            resp.results
                .iter()
                .enumerate()
                .map(|(m, r)| {
                    let ok = r.ok.as_ref().unwrap_or_else(|| panic!("snap-{c} #{m}: {r:?}"));
                    assert_eq!(ok.message_seq, m as u64 + 1);
                    ok.message_id
                })
                .collect()
        })
        .collect();

    phase("wait until node 1 applied every message, then save its snapshot");
    let node1 = cluster.endpoints(&[1]);
    let one = Client::new(std::slice::from_ref(&node1), Duration::from_secs(10)).expect("client");
    wait_for(
        "node 1 to apply every message",
        Duration::from_secs(30),
        || async {
            for c in 0..4 {
                let r = one
                    .channel_replicas(&format!("snap-{c}"), 2)
                    .await
                    .map_err(|e| e.to_string())?;
                let seq = r.replicas.iter().find(|x| x.node_id == 1).map(|x| x.message_seq);
                if seq != Some(75) {
                    return Err(format!("snap-{c}: node 1 at {seq:?}"));
                }
            }
            Ok(())
        },
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.snap");
    let file_arg = file.to_str().expect("utf-8 path");
    let out = wkctl(&node1, &["--output", "json", "snapshot", "save", file_arg]);
    expect_code(&out, 0);
    let saved: wk_api::snapshot::SnapshotStatus = json(&out);
    assert_eq!(saved.header.node_id, 1);
    let table = |s: &wk_api::snapshot::SnapshotStatus, t: &str| s.trailer.tables.get(t).copied().unwrap_or(0);
    assert_eq!(table(&saved, "msgs"), 300, "{saved:?}");
    assert_eq!(table(&saved, "dedup"), 0, "a restore rebuilds them: {saved:?}");
    assert_eq!(table(&saved, "users"), 5, "{saved:?}");
    assert_eq!(table(&saved, "channels"), 4, "{saved:?}");
    assert_eq!(table(&saved, "lists"), 1, "{saved:?}");
    assert!(!dir.path().join("backup.snap.part").exists());

    phase("snapshot status: text and JSON");
    let out = wkctl(&node1, &["snapshot", "status", file_arg]);
    expect_code(&out, 0);
    let text = stdout(&out);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .map(str::trim)
            .unwrap_or("")
    };
    assert!(line("node:").ends_with(" 1"), "{text}");
    assert!(line("msgs:").ends_with(" 300"), "{text}");
    assert!(line("checksum:").contains(&saved.checksum), "{text}");
    let out = wkctl(&node1, &["--output", "json", "snapshot", "status", file_arg]);
    expect_code(&out, 0);
    let status: wk_api::snapshot::SnapshotStatus = json(&out);
    assert_eq!(status, saved);

    phase("a truncated or bit-flipped file is refused with exit 2");
    let bytes = std::fs::read(&file).expect("read snapshot");
    let cut = dir.path().join("cut.snap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("write");
    // A bit inside a message payload ("hello"), so the framing stays intact and only the
    // checksum can tell.
    let mut flipped = bytes.clone();
    let at = bytes
        .windows(5)
        .rposition(|w| w == b"hello")
        .expect("a payload in the file");
    flipped[at + 2] ^= 0x10;
    let flip = dir.path().join("flip.snap");
    std::fs::write(&flip, &flipped).expect("write");
    for (f, why) in [(&cut, "truncated"), (&flip, "checksum mismatch")] {
        let data = dir.path().join("refused");
        let out = wkctl(
            &node1,
            &[
                "snapshot",
                "restore",
                f.to_str().expect("utf-8"),
                "--data-dir",
                data.to_str().expect("utf-8"),
            ],
        );
        expect_code(&out, 2);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{why}: {err}");
        assert!(
            !data.join("lmdb").exists(),
            "a refused restore wrote {}",
            data.display()
        );
        let out = wkctl(&node1, &["snapshot", "status", f.to_str().expect("utf-8")]);
        expect_code(&out, 2);
    }

    phase("restore into a fresh data dir as node 7; the same dir again is refused");
    drop(cluster);
    let data = dir.path().join("restored");
    let restore = [
        "snapshot",
        "restore",
        file_arg,
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--node-id",
        "7",
    ];
    let out = wkctl(&node1, &restore);
    expect_code(&out, 0);
    assert!(stdout(&out).contains("300 messages"), "{}", stdout(&out));
    let out = wkctl(&node1, &restore);
    expect_code(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds"));

    phase("start node 7 alone on it: a new one-node cluster");
    let (restored, http) = start_restored(7, &data, dir.path());
    let seven = Client::new(std::slice::from_ref(&http), Duration::from_secs(10)).expect("client");
    wait_for(
        "node 7 to lead its one-node cluster",
        Duration::from_secs(60),
        || async {
            let r = seven.nodes().await.map_err(|e| e.to_string())?;
            let ok = r.meta_leader == Some(7) && r.nodes.len() == 1 && r.nodes[0].online;
            if ok { Ok(()) } else { Err(format!("{r:?}")) }
        },
    );

    phase("every message and the metadata are served by node 7");
    for (c, want) in ids.iter().enumerate() {
        let req = wk_api::SyncReq {
            login_uid: String::new(),
            channel_id: format!("snap-{c}"),
            channel_type: 2,
            start_message_seq: 0,
            end_message_seq: 0,
            limit: 100,
            pull_mode: wk_api::PULL_MODE_UP,
        };
        let got = rt.block_on(seven.sync(&req)).expect("messagesync");
        let seqs: Vec<u64> = got.messages.iter().map(|m| m.message_seq).collect();
        assert_eq!(seqs, (1..=75).collect::<Vec<u64>>(), "seqs of snap-{c}");
        let got_ids: Vec<u64> = got.messages.iter().map(|m| m.message_id).collect();
        assert_eq!(&got_ids, want, "ids of snap-{c}");
        for (m, msg) in got.messages.iter().enumerate() {
            assert_eq!(msg.client_msg_no, format!("snap-{c}-{m}"));
            assert_eq!(msg.payload, "aGVsbG8=");
            assert_eq!(msg.from_uid, "ops");
        }
    }
    let info = rt
        .block_on(seven.channel_info(&wk_api::ChannelRef {
            channel_id: "snap-0".into(),
            channel_type: 2,
            login_uid: String::new(),
        }))
        .expect("channel info");
    assert_eq!(info.subscribers, ["ops", "user-0", "user-1"]);
    assert_eq!(info.replicas, vec![7]);
    let out = wkctl(
        &http,
        &[
            "--output",
            "json",
            "snapshot",
            "save",
            dir.path().join("again.snap").to_str().expect("utf-8"),
        ],
    );
    expect_code(&out, 0);
    let again: wk_api::snapshot::SnapshotStatus = json(&out);
    for t in ["users", "channels", "groups", "lists", "msgs", "dedup"] {
        assert_eq!(table(&again, t), table(&saved, t), "table {t}");
    }
    phase("the restored blacklist still refuses");
    let banned_send = wk_api::SendReq {
        header: Default::default(),
        client_msg_no: "banned".into(),
        from_uid: "user-1".into(),
        channel_id: "snap-0".into(),
        channel_type: 2,
        payload: "aGVsbG8=".into(),
    };
    let refused = rt
        .block_on(seven.send(&banned_send))
        .expect_err("user-1 is blacklisted");
    assert_eq!(
        refused.error_code(),
        Some(wk_api::ErrorCode::InBlacklist),
        "{refused}"
    );

    phase("the restored channels take new messages after the old ones; a retry is deduplicated");
    let retry = wk_api::SendReq {
        header: Default::default(),
        client_msg_no: "snap-0-74".into(),
        from_uid: "ops".into(),
        channel_id: "snap-0".into(),
        channel_type: 2,
        payload: "aGVsbG8=".into(),
    };
    let dup = rt.block_on(seven.send(&retry)).expect("send");
    assert_eq!((dup.message_id, dup.message_seq), (ids[0][74], 75));
    let fresh = wk_api::SendReq {
        client_msg_no: "after-restore".into(),
        ..retry
    };
    assert_eq!(rt.block_on(seven.send(&fresh)).expect("send").message_seq, 76);
    drop(restored);
}

/// Starts node `id` alone on the restored data dir `data` (logs under `logs`): a new
/// one-node cluster. Returns it and its HTTP address.
fn start_restored(id: u64, data: &std::path::Path, logs: &std::path::Path) -> (NodeGuard, String) {
    let ports = wk_api::ports::free_loopback_ports(2).expect("free loopback ports");
    let http = format!("127.0.0.1:{}", ports[0]);
    let log = logs.join(format!("node-{id}.log"));
    let mut cmd = wknode_cmd(&log);
    cmd.args(["--node-id", &id.to_string(), "--data-dir"])
        .arg(data)
        .args([
            "--http-addr",
            &http,
            "--cluster-addr",
            &format!("127.0.0.1:{}", ports[1]),
        ]);
    let (child, _ready) = spawn_ready(&mut cmd);
    (NodeGuard { child, log }, http)
}

/// The upgrade path from a data dir of format 2 (messages stored twice, before the log became
/// the message store): a snapshot saved by that build (testdata/snapshots/format2.snap: a
/// group channel g1 with 5 messages, one a batch with a retried client_msg_no, and a person
/// channel with one) restores into this build, which serves the same messages and ids, keeps
/// deduplicating the old client_msg_nos, and continues the seqs.
#[test]
fn a_format_2_snapshot_restores() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("restored");
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/snapshots/format2.snap");
    let out = wkctl(
        "127.0.0.1:1",
        &[
            "snapshot",
            "restore",
            file,
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--node-id",
            "4",
        ],
    );
    expect_code(&out, 0);
    assert!(stdout(&out).contains("6 messages"), "{}", stdout(&out));

    phase("start node 4 on it; every old message is served as it was");
    let (_node, http) = start_restored(4, &data, dir.path());
    let four = Client::new(std::slice::from_ref(&http), Duration::from_secs(10)).expect("client");
    let sync = |channel: &str, channel_type: u8| {
        let req = wk_api::SyncReq {
            login_uid: "bob".into(),
            channel_id: channel.into(),
            channel_type,
            start_message_seq: 0,
            end_message_seq: 0,
            limit: 100,
            pull_mode: wk_api::PULL_MODE_UP,
        };
        rt.block_on(four.sync(&req)).expect("messagesync").messages
    };
    wait_for(
        "node 4 to lead its one-node cluster",
        Duration::from_secs(60),
        || async {
            let r = four.nodes().await.map_err(|e| e.to_string())?;
            if r.meta_leader == Some(4) {
                Ok(())
            } else {
                Err(format!("{r:?}"))
            }
        },
    );
    let g1 = sync("g1", 2);
    let got: Vec<(u64, &str, &str)> = g1
        .iter()
        .map(|m| (m.message_seq, m.client_msg_no.as_str(), m.payload.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "m1", "aGVsbG8="),
            (2, "m2", "aGVsbG8="),
            (3, "m3", "aGVsbG8="),
            (4, "b1", "d29ybGQ="),
            (5, "b2", "d29ybGQ="),
        ]
    );
    assert_eq!(g1[1].message_id, 386652427694116864);
    let person = sync("alice", 1);
    assert_eq!(person.len(), 1);
    assert_eq!(
        (person[0].client_msg_no.as_str(), person[0].payload.as_str()),
        ("p1", "aGk=")
    );

    phase("the old client_msg_nos still deduplicate; new messages follow seq 5");
    let send = |no: &str| wk_api::SendReq {
        header: Default::default(),
        client_msg_no: no.into(),
        from_uid: "alice".into(),
        channel_id: "g1".into(),
        channel_type: 2,
        payload: "aGVsbG8=".into(),
    };
    let dup = rt.block_on(four.send(&send("m2"))).expect("send");
    assert_eq!((dup.message_id, dup.message_seq), (386652427694116864, 2));
    assert_eq!(rt.block_on(four.send(&send("new"))).expect("send").message_seq, 6);
    let out = wkctl(&http, &["channel", "verify", "g1", "2"]);
    expect_code(&out, 0);
}
