//! Runs the `wkctl` binary as a user would. Node answers come from a tiny canned HTTP server
//! (`FakeNode`), and `demo` runs a fake `wknode` shell script, so these tests need no cluster.
//! Text output is compared with golden files in `testdata/ctl/` (set `WK_UPDATE_GOLDEN=1` to
//! rewrite them); JSON output must decode into the wk-api types.

mod common;

use common::free_port_run;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WKCTL: &str = env!("CARGO_BIN_EXE_wkctl");

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/ctl")
        .join(name)
}

fn read_testdata(name: &str) -> String {
    std::fs::read_to_string(testdata(name)).unwrap_or_else(|e| panic!("reading testdata/ctl/{name}: {e}"))
}

fn assert_golden(name: &str, actual: &str) {
    if std::env::var_os("WK_UPDATE_GOLDEN").is_some() {
        std::fs::write(testdata(name), actual).expect("writing golden file");
        return;
    }
    let expected = read_testdata(name);
    assert_eq!(
        actual, expected,
        "output differs from testdata/ctl/{name} (WK_UPDATE_GOLDEN=1 rewrites it)"
    );
}

/// A one-route HTTP server: answers every request with `body` (status 200) and records the
/// request bodies it got.
struct FakeNode {
    addr: String,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeNode {
    fn start(body: String) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve(stream, &body, &seen);
            }
        });
        FakeNode { addr, requests }
    }
}

/// Reads one request (request line, headers, Content-Length body), records it in `seen`, and
/// answers `body`. The record comes first: a test reads `seen` as soon as wkctl has its answer.
fn serve(mut stream: TcpStream, body: &str, seen: &Mutex<Vec<(String, String)>>) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut req_body = vec![0; len];
    reader.read_exact(&mut req_body).ok()?;
    seen.lock().expect("not poisoned").push((
        request_line.trim().to_string(),
        String::from_utf8_lossy(&req_body).into_owned(),
    ));
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).ok()
}

fn wkctl(args: &[&str]) -> Output {
    Command::new(WKCTL)
        .args(args)
        .env_remove("WK_ENDPOINT")
        .env_remove("WK_ADMIN_TOKEN")
        .output()
        .expect("running wkctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

#[test]
fn cluster_status_healthy_text_and_json() {
    let node = FakeNode::start(read_testdata("nodes_healthy.json"));
    let out = wkctl(&["--endpoint", &node.addr, "cluster", "status"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_golden("cluster_status_healthy.txt", &stdout(&out));

    let out = wkctl(&["cluster", "status", "--output", "json", "--endpoint", &node.addr]);
    assert_eq!(out.status.code(), Some(0));
    let got: wk_api::NodesResp = serde_json::from_slice(&out.stdout).expect("JSON output is a NodesResp");
    let want: wk_api::NodesResp =
        serde_json::from_str(&read_testdata("nodes_healthy.json")).expect("testdata is a NodesResp");
    assert_eq!(got, want);
}

#[test]
fn cluster_status_degraded_exits_1() {
    let node = FakeNode::start(read_testdata("nodes_degraded.json"));
    let out = wkctl(&["--endpoint", &node.addr, "cluster", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_golden("cluster_status_degraded.txt", &stdout(&out));
    let out = wkctl(&["--endpoint", &node.addr, "--output", "json", "cluster", "status"]);
    assert_eq!(out.status.code(), Some(1), "JSON output has the same exit code");
}

#[test]
fn endpoint_failover_and_unreachable() {
    // A port nothing listens on: bind, read the port, close.
    let dead = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .to_string();
    let out = wkctl(&["--endpoint", &dead, "--timeout", "2s", "cluster", "status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("wkctl: GET /cluster/nodes: no endpoint answered"),
        "stderr: {err}"
    );

    let node = FakeNode::start(read_testdata("nodes_healthy.json"));
    let both = format!("{dead},{}", node.addr);
    let out = wkctl(&["--endpoint", &both, "cluster", "status"]);
    assert_eq!(out.status.code(), Some(0), "the second endpoint answers");
}

#[test]
fn message_send_encodes_payload_and_sync_decodes_it() {
    let node = FakeNode::start(r#"{"message_id":77,"message_seq":3,"client_msg_no":"k1"}"#.into());
    let out = wkctl(&[
        "--endpoint",
        &node.addr,
        "message",
        "send",
        "--from",
        "alice",
        "--channel",
        "g1",
        "--type",
        "2",
        "--client-msg-no",
        "k1",
        "hello",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "message_id 77  message_seq 3  client_msg_no k1\n");
    let reqs = node.requests.lock().expect("not poisoned").clone();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].0.starts_with("POST /message/send "), "{reqs:?}");
    let sent: wk_api::SendReq = serde_json::from_str(&reqs[0].1).expect("a SendReq");
    assert_eq!(
        (
            sent.from_uid.as_str(),
            sent.channel_id.as_str(),
            sent.channel_type,
            sent.payload.as_str()
        ),
        ("alice", "g1", 2, "aGVsbG8=")
    );

    let sync = r#"{"start_message_seq":1,"end_message_seq":2,"more":0,"messages":[
        {"message_id":76,"message_idstr":"76","message_seq":1,"client_msg_no":"k0","from_uid":"bob",
         "channel_id":"g1","channel_type":2,"timestamp":1700000000,"payload":"aGk="},
        {"message_id":77,"message_idstr":"77","message_seq":2,"client_msg_no":"k1","from_uid":"alice",
         "channel_id":"g1","channel_type":2,"timestamp":1700000005,"payload":"aGVsbG8gd29ybGQ="}]}"#;
    let node = FakeNode::start(sync.replace('\n', ""));
    let out = wkctl(&[
        "--endpoint",
        &node.addr,
        "message",
        "sync",
        "--channel",
        "g1",
        "--type",
        "2",
        "--pull-mode",
        "1",
        "--limit",
        "10",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_golden("message_sync.txt", &stdout(&out));
    let reqs = node.requests.lock().expect("not poisoned").clone();
    let req: wk_api::SyncReq = serde_json::from_str(&reqs[0].1).expect("a SyncReq");
    assert_eq!((req.pull_mode, req.limit, req.channel_id.as_str()), (1, 10, "g1"));
}

#[test]
fn conversation_list_text_and_json() {
    let body = r#"[{"channel_id":"g1","channel_type":2,"unread":2,"timestamp":1700000005,"last_msg_seq":5,
        "last_client_msg_no":"k5","offset_msg_seq":0,"readed_to_msg_seq":3,"version":1700000005000123,
        "recents":[{"message_id":77,"message_idstr":"77","message_seq":5,"client_msg_no":"k5","from_uid":"bob",
         "channel_id":"g1","channel_type":2,"timestamp":1700000005,"payload":"aGVsbG8="}]},
        {"channel_id":"bob","channel_type":1,"unread":0,"timestamp":1700000000,"last_msg_seq":1,
        "last_client_msg_no":"k0","offset_msg_seq":0,"readed_to_msg_seq":1,"version":1700000000000001,"recents":[]}]"#
        .replace('\n', "");
    let node = FakeNode::start(body);
    let out = wkctl(&["--endpoint", &node.addr, "conversation", "list", "alice"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_golden("conversation_list.txt", &stdout(&out));
    let reqs = node.requests.lock().expect("not poisoned").clone();
    assert!(reqs[0].0.starts_with("POST /conversation/sync "), "{reqs:?}");
    let req: wk_api::ConversationSyncReq = serde_json::from_str(&reqs[0].1).expect("a ConversationSyncReq");
    assert_eq!((req.uid.as_str(), req.version, req.msg_count), ("alice", 0, 1));
    let out = wkctl(&[
        "--endpoint",
        &node.addr,
        "--output",
        "json",
        "conversation",
        "list",
        "alice",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let convs: Vec<wk_api::Conversation> =
        serde_json::from_str(&stdout(&out)).expect("JSON decodes into the API type");
    assert_eq!(
        (convs.len(), convs[0].unread, convs[1].channel_id.as_str()),
        (2, 2, "bob")
    );
}

#[test]
fn completions_and_help() {
    for shell in ["bash", "zsh", "fish"] {
        let out = wkctl(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            stdout(&out).contains("wkctl"),
            "{shell} completion mentions wkctl"
        );
    }
    let out = wkctl(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    for cmd in ["demo", "cluster", "message", "completions"] {
        assert!(stdout(&out).contains(cmd), "--help lists {cmd}");
    }
    let out = wkctl(&["cluster", "status", "--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2), "bad arguments are an error");
}

/// A stand-in for `wknode`: records its pid and arguments, logs to stderr, prints the ready
/// line, and exits cleanly on SIGTERM.
const FAKE_WKNODE: &str = r#"#!/bin/sh
drills=no
while [ $# -gt 0 ]; do
  case "$1" in
    --allow-drills) drills=yes; shift; continue;;
    --node-id) id=$2;; --data-dir) dir=$2;; --http-addr) http=$2;; --cluster-addr) cl=$2;; --init-nodes) init=$2;;
  esac
  shift 2
done
echo $$ > "$dir/pid"
echo "$init" > "$dir/init"
echo "$drills" > "$dir/drills"
echo "$WK_TCP_ADDR $WK_WS_ADDR" > "$dir/gateway"
echo "fake node $id starting" >&2
trap 'echo "fake node $id got SIGTERM" >&2; exit 0' TERM
printf '{"event":"ready","node_id":%s,"http_addr":"%s","cluster_addr":"%s","tcp_addr":"127.0.0.1:510%s","ws_addr":"127.0.0.1:520%s"}\n' "$id" "$http" "$cl" "$id" "$id"
while :; do sleep 0.05; done
"#;

fn write_script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn demo_starts_nodes_and_stops_every_one_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fake = write_script(tmp.path(), "fake-wknode", FAKE_WKNODE);
    let data = tmp.path().join("data");
    let http = free_port_run(3).to_string();
    let cluster = free_port_run(3).to_string();
    let mut child = Command::new(WKCTL)
        .args(["demo", "--nodes", "3", "--wknode"])
        .arg(&fake)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--base-http-port",
            &http,
            "--base-cluster-port",
            &cluster,
            "--ready-timeout",
            "20s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running wkctl demo");

    // The banner lists every node; the status view follows (no real node answers HTTP here).
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut banner = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("cluster status unavailable") {
            break;
        }
    }
    for id in 1..=3 {
        assert!(
            banner.contains(&format!("node {id}  http http://127.0.0.1:")),
            "banner:\n{banner}"
        );
        // wkctl asks for gateways on free ports and prints where they are.
        assert!(
            banner.contains(&format!(
                "IM clients: ws://127.0.0.1:520{id}  tcp 127.0.0.1:510{id}"
            )),
            "banner:\n{banner}"
        );
        let asked = std::fs::read_to_string(data.join(id.to_string()).join("gateway")).expect("gateway env");
        assert_eq!(asked.trim(), "127.0.0.1:0 127.0.0.1:0");
    }
    assert!(
        banner.contains("/message/send") && banner.contains("/channel/messagesync"),
        "{banner}"
    );

    let pids: Vec<i32> = (1..=3)
        .map(|id| {
            let text = std::fs::read_to_string(data.join(id.to_string()).join("pid")).expect("pid file");
            text.trim().parse().expect("a pid")
        })
        .collect();
    assert!(pids.iter().all(|p| alive(*p)));
    let init = std::fs::read_to_string(data.join("2/init")).expect("init file");
    let c: u16 = cluster.parse().expect("port");
    assert_eq!(
        init.trim(),
        format!("1@127.0.0.1:{c},2@127.0.0.1:{},3@127.0.0.1:{}", c + 1, c + 2)
    );
    let drills = std::fs::read_to_string(data.join("2/drills")).expect("drills file");
    assert_eq!(drills.trim(), "yes", "demo nodes accept drills (--allow-drills)");

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .expect("stderr");
    for id in 1..=3 {
        assert!(err.contains(&format!("node {id} stopped")), "stderr:\n{err}");
        let log = std::fs::read_to_string(data.join(id.to_string()).join("wknode.log")).expect("log");
        assert!(
            log.contains(&format!("fake node {id} got SIGTERM")),
            "node {id} log:\n{log}"
        );
    }
    for pid in pids {
        assert!(!alive(pid), "node process {pid} left behind");
    }
}

#[test]
fn demo_reports_a_node_that_dies_before_ready() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fake = write_script(
        tmp.path(),
        "bad-wknode",
        "#!/bin/sh\necho 'bind: address in use' >&2\nexit 3\n",
    );
    let http = free_port_run(1).to_string();
    let cluster = free_port_run(1).to_string();
    let out = Command::new(WKCTL)
        .args(["demo", "--nodes", "1", "--wknode"])
        .arg(&fake)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--base-http-port", &http, "--base-cluster-port", &cluster])
        .output()
        .expect("running wkctl demo");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node 1 exited before it was ready") && err.contains("bind: address in use"),
        "{err}"
    );
}

#[test]
fn demo_reports_nodes_that_die_after_ready() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = FAKE_WKNODE.replace(
        "while :; do sleep 0.05; done",
        "sleep 0.3; echo 'fake crash' >&2; exit 7",
    );
    let fake = write_script(tmp.path(), "crashing-wknode", &script);
    let http = free_port_run(2).to_string();
    let cluster = free_port_run(2).to_string();
    let out = Command::new(WKCTL)
        .args(["demo", "--nodes", "2", "--wknode"])
        .arg(&fake)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--base-http-port", &http, "--base-cluster-port", &cluster])
        .stdin(Stdio::null())
        .output()
        .expect("running wkctl demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    assert!(
        err.contains("node 1 exited (exit status: 7)") && err.contains("node 2 exited"),
        "{err}"
    );
    assert!(err.contains("every node has exited"), "{err}");
}

/// Stops `wkctl demo` (SIGTERM, then waits) even when an assertion fails, so the demo in turn
/// stops its nodes.
struct DemoGuard(std::process::Child);

impl DemoGuard {
    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().expect("wait for wkctl demo")
    }
}

impl Drop for DemoGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

/// End to end with the real node: `wkctl demo` starts 3 `wknode`s (found next to `wkctl`),
/// `cluster status --output json` decodes into NodesResp with 3 online nodes and a leader, and
/// SIGTERM to the demo stops every node cleanly.
#[test]
fn live_demo_and_cluster_status_json() {
    // The demo runs the wknode next to wkctl; this fails with a hint when it was not built.
    common::wknode_bin();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("demo");
    let http = free_port_run(3);
    let cluster = free_port_run(3);
    let mut demo = DemoGuard(
        Command::new(WKCTL)
            .args(["demo", "--nodes", "3", "--data-dir"])
            .arg(&data)
            .args([
                "--base-http-port",
                &http.to_string(),
                "--base-cluster-port",
                &cluster.to_string(),
            ])
            .env_remove("WK_ENDPOINT")
            .env_remove("WK_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running wkctl demo"),
    );

    let endpoints = (0..3)
        .map(|i| format!("127.0.0.1:{}", http + i))
        .collect::<Vec<_>>()
        .join(",");
    let resp = common::wait_until(
        "a healthy cluster status",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let out = wkctl(&[
                "--endpoint",
                &endpoints,
                "--timeout",
                "1s",
                "--output",
                "json",
                "cluster",
                "status",
            ]);
            if out.status.code() == Some(0) {
                return Ok(serde_json::from_slice::<wk_api::NodesResp>(&out.stdout)
                    .expect("JSON output is a NodesResp"));
            }
            assert!(
                matches!(demo.0.try_wait(), Ok(None)),
                "wkctl demo exited early; node 1 log:\n{}",
                std::fs::read_to_string(data.join("1/wknode.log")).unwrap_or_default()
            );
            Err(format!(
                "exit {:?}, {}{}",
                out.status.code(),
                stdout(&out),
                String::from_utf8_lossy(&out.stderr)
            ))
        },
    );
    assert_eq!(resp.nodes.len(), 3, "{resp:?}");
    assert!(resp.nodes.iter().all(|n| n.online), "{resp:?}");
    let leader = resp.meta_leader.expect("a metadata leader");
    assert!(resp.nodes.iter().any(|n| n.id == leader), "{resp:?}");

    let status = demo.terminate();
    let mut err = String::new();
    demo.0
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .expect("stderr");
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    for id in 1..=3 {
        assert!(
            err.contains(&format!("node {id} stopped (exit status: 0)")),
            "stderr:\n{err}"
        );
    }
}
