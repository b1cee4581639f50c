//! Slow and abusive clients cannot starve a node (issue #8). One node of a three-node cluster
//! is flooded (many connections, many concurrent sends, slowloris connections that send their
//! headers or body a byte at a time) with small limits set by flags. It must answer quickly,
//! with 503 `overloaded` (`retry_after` in the body, `Retry-After` header) for what it cannot
//! take, keep its memory bounded, and drop slow clients; meanwhile the other two nodes keep
//! serving sends and syncs to a channel one of them leads, without a single error.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, b64, retry, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wk_api::{CHANNEL_TYPE_GROUP, ChannelReq, MessageHeader, PULL_MODE_UP, SendReq, SyncReq};

/// Limits of every node in this test: small, so a test-sized flood exceeds them.
const FLAGS: &[&str] = &[
    "--max-connections",
    "48",
    "--max-inflight-requests",
    "24",
    "--max-inflight-sends",
    "8",
    "--header-timeout",
    "2s",
    "--body-timeout",
    "2s",
];
/// Concurrent flooding clients, each on its own connection.
const FLOODERS: usize = 120;
const FLOOD_FOR: Duration = Duration::from_secs(6);
/// A flooded node must answer every request within this (the clients' timeout). Refusals
/// take milliseconds; the bound is for the sends it accepts on a loaded 2-core CI machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
const SLOWLORIS: usize = 4;

fn send_req(channel_id: &str, n: u64) -> SendReq {
    SendReq {
        header: MessageHeader::default(),
        client_msg_no: format!("m{n}"),
        from_uid: "u1".into(),
        channel_id: channel_id.into(),
        channel_type: CHANNEL_TYPE_GROUP,
        payload: b64(&[b'x'; 64]),
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// What the flood saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    overloaded: AtomicU64,
    /// 503 `overloaded` without `retry_after` in the body or the `Retry-After` header.
    overloaded_malformed: AtomicU64,
    /// Other 503s with an error body (an accepted send whose channel was mid-election on a
    /// starved machine): allowed, reported.
    unavailable: AtomicU64,
    other_status: AtomicU64,
    /// No answer within `ANSWER_WITHIN`: what must not happen.
    timeouts: AtomicU64,
    /// Refused or reset connections (the kernel's accept queue overflowing, typically).
    conn_errors: AtomicU64,
    /// Slowest answer, in ms.
    slowest_ms: AtomicU64,
}

fn other(tally: &Tally, status: u16, body: &[u8]) -> u64 {
    tracing::warn!("unexpected answer {status}: {}", String::from_utf8_lossy(body));
    tally.other_status.fetch_add(1, Ordering::Relaxed)
}

/// Sends to channel `f0`/`f1` through `url` until `stop`, tallying the answers.
async fn flood_one(http: reqwest::Client, url: String, id: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let started = Instant::now();
        let res = http
            .post(&url)
            .json(&send_req(&format!("f{}", id % 2), n))
            .send()
            .await;
        let resp = match res {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                tally.timeouts.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(_) => {
                tally.conn_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let status = resp.status().as_u16();
        let header = resp.headers().get("retry-after").is_some();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => {
                tally.timeouts.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(_) => {
                tally.conn_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        tally
            .slowest_ms
            .fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match status {
            200 => tally.ok.fetch_add(1, Ordering::Relaxed),
            503 => {
                let err: Result<wk_api::ApiError, _> = serde_json::from_slice(&body);
                match err {
                    Ok(e) if e.code == "overloaded" && e.retry_after.is_some() && header => {
                        tally.overloaded.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(e) if e.code == "overloaded" => {
                        tally.overloaded_malformed.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(e) => {
                        tracing::info!("accepted send failed: {}: {}", e.code, e.msg);
                        tally.unavailable.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => other(&tally, status, &body),
                }
            }
            _ => other(&tally, status, &body),
        };
    }
}

/// Sends a request's head one byte every 100 ms; returns how long until the node hung up.
/// `connected` is sent once the connection is open (before the flood takes every slot).
async fn slow_headers(addr: String, connected: tokio::sync::mpsc::Sender<()>) -> Duration {
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let _ = connected.send(()).await;
    let head = format!(
        "POST /message/send HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Padding: {}\r\n",
        "a".repeat(200)
    );
    let started = Instant::now();
    for b in head.bytes() {
        if s.write_all(&[b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Sends a complete head, then the body one byte every 100 ms; returns the status answered
/// and how long it took.
async fn slow_body(addr: String, connected: tokio::sync::mpsc::Sender<()>) -> (String, Duration) {
    let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let _ = connected.send(()).await;
    let body = "x".repeat(200);
    let head = format!(
        "POST /message/send HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    s.write_all(head.as_bytes()).await.expect("write head");
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        for b in body.bytes() {
            if w.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // The status line is enough; whether the node then closes or drains the body is its choice.
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 1024];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    writer.abort();
    let line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    (line, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooded_node_sheds_load_and_the_others_keep_serving() {
    let cluster = Cluster::start_with(3, FLAGS).await;
    let c = cluster.client();

    tracing::info!("--- a channel led by one node, and the node to flood (another one)");
    let create = ChannelReq {
        channel_id: "g".into(),
        channel_type: CHANNEL_TYPE_GROUP,
        subscribers: vec!["u1".into()],
        reset: 0,
    };
    retry("create channel g", Duration::from_secs(30), || {
        c.channel_create(&create)
    })
    .await;
    let first = send_req("g", 0);
    retry("first send to g", Duration::from_secs(30), || c.send(&first)).await;
    let leader = wait_until("g to have a leader", Duration::from_secs(30), || async {
        let conf = c
            .channel_config("g", CHANNEL_TYPE_GROUP)
            .await
            .map_err(|e| e.to_string())?;
        conf.leader.ok_or_else(|| format!("{conf:?}"))
    })
    .await;
    let flooded = if leader == 1 { 2 } else { 1 };
    let target = cluster.node(flooded);
    let pid = target.pid().expect("flooded node runs");
    let others: Vec<_> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != flooded)
        .map(|n| n.client())
        .collect();
    tracing::info!("g is led by node {leader}; flooding node {flooded}");
    let rss_before = vm_rss_kib(pid);

    for f in ["f0", "f1"] {
        let create = ChannelReq {
            channel_id: f.into(),
            ..create.clone()
        };
        retry("create the flooded channels", Duration::from_secs(30), || {
            c.channel_create(&create)
        })
        .await;
        let req = send_req(f, 0);
        retry(
            "first send to the flooded channels",
            Duration::from_secs(30),
            || c.send(&req),
        )
        .await;
    }

    tracing::info!(
        "--- flood: {SLOWLORIS}+{SLOWLORIS} slowloris connections, then {FLOODERS} clients sending"
    );
    let (connected, mut slow_open) = tokio::sync::mpsc::channel(2 * SLOWLORIS);
    let slow_heads: Vec<_> = (0..SLOWLORIS)
        .map(|_| tokio::spawn(slow_headers(target.http_addr.clone(), connected.clone())))
        .collect();
    let slow_bodies: Vec<_> = (0..SLOWLORIS)
        .map(|_| tokio::spawn(slow_body(target.http_addr.clone(), connected.clone())))
        .collect();
    for _ in 0..2 * SLOWLORIS {
        slow_open.recv().await.expect("slowloris connected");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let url = target.url("/message/send");
    let mut flooders = Vec::new();
    for id in 0..FLOODERS {
        // One client per flooder: a connection each, so the connection limit is crossed too.
        let http = reqwest::Client::builder()
            .timeout(ANSWER_WITHIN)
            .build()
            .expect("http client");
        flooders.push(tokio::spawn(flood_one(
            http,
            url.clone(),
            id,
            stop.clone(),
            tally.clone(),
        )));
    }

    // The other two nodes serve sends and syncs to g throughout, without errors.
    let started = Instant::now();
    let mut served = 0u64;
    let mut last_seq = 0u64;
    while started.elapsed() < FLOOD_FOR {
        for (i, oc) in others.iter().enumerate() {
            served += 1;
            let sent = oc
                .send(&send_req("g", served))
                .await
                .unwrap_or_else(|e| panic!("send {served} via node {}: {e}", i));
            assert!(
                sent.message_seq > last_seq,
                "seq went from {last_seq} to {}",
                sent.message_seq
            );
            last_seq = sent.message_seq;
            let synced = oc
                .sync(&SyncReq {
                    login_uid: "u1".into(),
                    channel_id: "g".into(),
                    channel_type: CHANNEL_TYPE_GROUP,
                    start_message_seq: last_seq,
                    end_message_seq: 0,
                    limit: 10,
                    pull_mode: PULL_MODE_UP,
                })
                .await
                .unwrap_or_else(|e| panic!("sync {served}: {e}"));
            assert!(
                synced.messages.iter().any(|m| m.message_seq == last_seq),
                "sync from {last_seq} misses it: {synced:?}"
            );
        }
    }
    let rss_during = vm_rss_kib(pid);
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await.expect("flooder");
    }
    let mut head_times = Vec::new();
    for h in slow_heads {
        head_times.push(h.await.expect("slow headers"));
    }
    let mut body_answers = Vec::new();
    for b in slow_bodies {
        body_answers.push(b.await.expect("slow body"));
    }
    let rss_after = vm_rss_kib(pid);

    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    tracing::info!(
        "flood on node {flooded}: {} ok, {} overloaded (503), {} other 503, {} other, {} timeouts, {} connection errors, slowest answer {} ms; \
         other nodes served {served} sends+syncs; RSS {rss_before} -> {rss_during} -> {rss_after} KiB; \
         slow headers cut after {head_times:?}; slow bodies answered {body_answers:?}",
        get(&tally.ok),
        get(&tally.overloaded),
        get(&tally.unavailable),
        get(&tally.other_status),
        get(&tally.timeouts),
        get(&tally.conn_errors),
        get(&tally.slowest_ms),
    );

    tracing::info!("--- the flooded node shed load quickly and stayed bounded");
    assert!(get(&tally.overloaded) > 0, "the flood never hit a limit");
    assert_eq!(
        get(&tally.overloaded_malformed),
        0,
        "503 overloaded without retry_after"
    );
    assert_eq!(
        get(&tally.other_status),
        0,
        "answers other than 200 and 503 overloaded"
    );
    assert_eq!(
        get(&tally.timeouts),
        0,
        "requests that got no answer within {ANSWER_WITHIN:?}"
    );
    let answered = get(&tally.ok) + get(&tally.overloaded);
    assert!(
        get(&tally.conn_errors) * 10 <= answered,
        "too many connection errors: {} for {answered} answers",
        get(&tally.conn_errors)
    );
    assert!(served > 0);
    // Generous: the node's working set is tens of MiB; unbounded queues would grow far past it.
    let bound = rss_before + 256 * 1024;
    assert!(
        rss_during < bound && rss_after < bound,
        "RSS grew from {rss_before} to {rss_during}/{rss_after} KiB"
    );
    for t in &head_times {
        // 2 s header timeout; the full head would take ~27 s at this pace.
        assert!(
            *t < Duration::from_secs(10),
            "a slow head was tolerated for {t:?}"
        );
    }
    for (line, t) in &body_answers {
        assert!(line.contains(" 408 "), "slow body answered {line:?} after {t:?}");
        assert!(
            *t < Duration::from_secs(10),
            "a slow body was tolerated for {t:?}"
        );
    }

    tracing::info!("--- once the flood stops, the flooded node serves again");
    let fc = target.client();
    let after = send_req("g", 1 << 40);
    retry("send via the flooded node", Duration::from_secs(30), || {
        fc.send(&after)
    })
    .await;
}
