//! Helpers for the scale-out tests (`tests/scale.rs`): a node that joins a running cluster,
//! writers that keep channels active, bulk population, placement, and the end-to-end checks
//! (every acknowledged message once, seqs contiguous, replicas agree).
//!
//! Invariants the tests rely on:
//! - a writer never abandons a message: once it sent one, it retries it with the same
//!   `client_msg_no` until it is acknowledged or the writer gives up (a permanent error, which
//!   the test fails on), so the acknowledged list is exactly what a channel must hold;
//! - nothing here wakes a hibernated channel except the calls that must (send, messagesync,
//!   `/cluster/channels/.../config|replicas` probes): the idle checks use `/cluster/nodes`,
//!   `/cluster/backlog` and `/channel/info` only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use wk_api::{
    Agreement, CHANNEL_TYPE_GROUP, ChannelRef, ChannelReplicas, ChannelReq, Client, Message, MessageHeader,
    PULL_MODE_UP, Role, SendBatchReq, SendReq, SendResp, SyncReq, UserTokenReq,
};

use super::{Cluster, Node, b64, free_ports, is_addr_in_use, retry, unb64, wait_until};

/// How long a writer keeps retrying one message before it reports a permanent error.
pub const WRITE_GIVE_UP: Duration = Duration::from_secs(30);

impl Cluster {
    /// Starts node `nodes.len() + 1` on fresh ports in this cluster's temp dir with
    /// `--seed 1@<node 1's cluster address>` and `extra`, but not in `--init-nodes`: it waits in
    /// state `joining` until admitted. It becomes `nodes[id - 1]`, so `node(id)`, `client()`,
    /// `stop_all`, `spawn_all_and_wait`, the log dump and the kill on drop include it.
    /// Returns its id.
    pub async fn spawn_seed_node(&mut self, extra: &[&str]) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let seed = format!("1@{}", self.nodes[0].cluster_addr);
        for attempt in 1.. {
            let ports = free_ports(2);
            let mut args = vec!["--seed".to_string(), seed.clone()];
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut node = Node::new(
                id,
                format!("127.0.0.1:{}", ports[0]),
                format!("127.0.0.1:{}", ports[1]),
                self.dir(),
                args,
            );
            node.tls_ca = self.tls_ca.clone();
            node.spawn();
            match node.try_wait_ready().await {
                Ok(r) => {
                    tracing::info!(
                        "node {id} ready (seed node): http {} cluster {}",
                        r.http_addr,
                        r.cluster_addr
                    );
                    self.nodes.push(node);
                    return id;
                }
                Err(e) if attempt < 3 && is_addr_in_use(&e) => {
                    tracing::warn!("seed node start attempt {attempt} lost a port race: {e}");
                }
                Err(e) => panic!("seed node {id} did not start: {e}"),
            }
        }
        unreachable!("the loop returns or panics")
    }
}

/// Checks that do not stop the test at once: each is logged when it fails and the test fails
/// at the end with all of them, so one run shows every problem, not only the first.
#[derive(Default)]
pub struct Problems(Mutex<Vec<String>>);

impl Problems {
    pub fn note(&self, what: impl Into<String>) {
        let what = what.into();
        tracing::warn!("PROBLEM: {what}");
        self.0.lock().expect("problems lock").push(what);
    }

    /// Notes `what()` unless `ok`.
    pub fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.note(what());
        }
    }

    /// Panics listing every noted problem, if any.
    pub fn assert_none(&self) {
        let all = self.0.lock().expect("problems lock").clone();
        assert!(
            all.is_empty(),
            "{} problem(s):\n- {}",
            all.len(),
            all.join("\n- ")
        );
    }
}

/// The replica set the node's placement function gives a group channel among `nodes`.
pub fn placement(channel_id: &str, nodes: &[u64], replicas: usize) -> Vec<u64> {
    let key = wknode::channel::ChannelKey {
        channel_id: channel_id.to_string(),
        channel_type: CHANNEL_TYPE_GROUP,
    };
    wknode::meta::placement::place(&key.to_bytes(), nodes.iter().copied(), replicas)
}

pub fn sorted(v: &[u64]) -> Vec<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

pub fn send_req(from: &str, channel_id: &str, client_msg_no: &str, payload: &[u8]) -> SendReq {
    SendReq {
        header: MessageHeader::default(),
        client_msg_no: client_msg_no.to_string(),
        from_uid: from.to_string(),
        channel_id: channel_id.to_string(),
        channel_type: CHANNEL_TYPE_GROUP,
        payload: b64(payload),
    }
}

pub fn group_ref(channel_id: &str) -> ChannelRef {
    ChannelRef {
        channel_id: channel_id.to_string(),
        channel_type: CHANNEL_TYPE_GROUP,
        login_uid: String::new(),
    }
}

/// One acknowledged send: what was sent and what the cluster answered.
#[derive(Debug, Clone)]
pub struct Ack {
    pub from_uid: String,
    pub client_msg_no: String,
    pub payload: Vec<u8>,
    pub resp: SendResp,
}

/// Runs `f` over `items` with at most `n` at once; results in completion order.
pub async fn bounded<I, T, F, Fut>(items: I, n: usize, f: F) -> Vec<T>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    futures::stream::iter(items)
        .map(f)
        .buffer_unordered(n)
        .collect()
        .await
}

/// What `populate` created.
pub struct Population {
    pub users: Vec<String>,
    /// Group channel ids, sorted.
    pub channels: Vec<String>,
    pub subscribers: BTreeMap<String, Vec<String>>,
    /// Acknowledged messages per channel, in seq order.
    pub acks: BTreeMap<String, Vec<Ack>>,
}

/// Creates `users` users (a token each), `channels` group channels with 3 subscribers each, and
/// `messages` messages per channel (one batch per channel), 16 requests at a time.
pub async fn populate(
    cluster: &Cluster,
    prefix: &str,
    users: usize,
    channels: usize,
    messages: usize,
) -> Population {
    let uids: Vec<String> = (0..users).map(|i| format!("{prefix}u{i:04}")).collect();
    let ids: Vec<String> = (0..channels).map(|i| format!("{prefix}c{i:04}")).collect();
    let subscribers: BTreeMap<String, Vec<String>> = ids
        .iter()
        .enumerate()
        .map(|(i, ch)| {
            (
                ch.clone(),
                (0..3).map(|k| uids[(i * 3 + k) % users].clone()).collect(),
            )
        })
        .collect();
    let t = Instant::now();
    bounded(uids.iter().enumerate(), 16, |(i, uid)| {
        let c = cluster.client_rotated(i);
        async move {
            let req = UserTokenReq {
                uid: uid.clone(),
                token: format!("tok-{uid}"),
                device_flag: 0,
                device_level: 1,
            };
            retry(&format!("token for {uid}"), Duration::from_secs(30), || {
                c.user_token(&req)
            })
            .await;
        }
    })
    .await;
    tracing::info!("{users} users created in {:?}", t.elapsed());
    let t = Instant::now();
    bounded(ids.iter().enumerate(), 16, |(i, ch)| {
        let c = cluster.client_rotated(i);
        let req = ChannelReq {
            channel_id: ch.clone(),
            channel_type: CHANNEL_TYPE_GROUP,
            subscribers: subscribers[ch].clone(),
            reset: 0,
        };
        async move {
            retry(
                &format!("create {}", req.channel_id),
                Duration::from_secs(30),
                || c.channel_create(&req),
            )
            .await;
        }
    })
    .await;
    tracing::info!("{channels} channels created in {:?}", t.elapsed());
    let t = Instant::now();
    let acks: BTreeMap<String, Vec<Ack>> = bounded(ids.iter().enumerate(), 16, |(i, ch)| {
        let c = cluster.client_rotated(i);
        let subs = subscribers[ch].clone();
        async move {
            let sent: Vec<(String, String, Vec<u8>)> = (0..messages)
                .map(|j| {
                    let payload = format!("init {ch} {j} {}", "x".repeat(j * 7 % 40)).into_bytes();
                    (subs[j % subs.len()].clone(), format!("{ch}-init-{j}"), payload)
                })
                .collect();
            let req = SendBatchReq {
                messages: sent
                    .iter()
                    .map(|(from, cmn, p)| send_req(from, ch, cmn, p))
                    .collect(),
            };
            // The whole batch again on any error: the client_msg_nos make a retry idempotent.
            let results = retry(
                &format!("first messages of {ch}"),
                Duration::from_secs(60),
                || async {
                    let r = c.send_batch(&req).await.map_err(|e| e.to_string())?;
                    r.results
                        .into_iter()
                        .map(|item| item.ok.ok_or_else(|| format!("{:?}", item.error)))
                        .collect::<Result<Vec<SendResp>, String>>()
                },
            )
            .await;
            let acks: Vec<Ack> = sent
                .into_iter()
                .zip(results)
                .map(|((from_uid, client_msg_no, payload), resp)| Ack {
                    from_uid,
                    client_msg_no,
                    payload,
                    resp,
                })
                .collect();
            let seqs: Vec<u64> = acks.iter().map(|a| a.resp.message_seq).collect();
            assert_eq!(
                seqs,
                (1..=messages as u64).collect::<Vec<_>>(),
                "{ch}: first batch got seqs {seqs:?}"
            );
            (ch.clone(), acks)
        }
    })
    .await
    .into_iter()
    .collect();
    tracing::info!("{} messages sent in {:?}", channels * messages, t.elapsed());
    Population {
        users: uids,
        channels: ids,
        subscribers,
        acks,
    }
}

/// (sum of `channels_led` over all nodes, per node), from one `/cluster/nodes`. Does not wake
/// any channel.
pub async fn channels_led(c: &Client) -> Result<(u64, Vec<(u64, u64)>), String> {
    let nodes = c.nodes().await.map_err(|e| format!("/cluster/nodes: {e}"))?;
    let per: Vec<(u64, u64)> = nodes.nodes.iter().map(|n| (n.id, n.channels_led)).collect();
    Ok((per.iter().map(|(_, l)| l).sum(), per))
}

/// Waits until the running channel groups led anywhere number exactly `want` (the idle ones
/// hibernated).
pub async fn wait_hibernated(c: &Client, want: u64, timeout: Duration) {
    let t = Instant::now();
    wait_until(
        &format!("sum of channels_led to drop to {want}"),
        timeout,
        || async {
            let (sum, per) = channels_led(c).await?;
            if sum == want {
                Ok(())
            } else {
                Err(format!("channels_led {sum}: {per:?}"))
            }
        },
    )
    .await;
    tracing::info!("channels led dropped to {want} after {:?}", t.elapsed());
}

/// What one writer did.
pub struct WriterReport {
    pub channel_id: String,
    pub acks: Vec<Ack>,
    /// Error code -> count, for errors that a retry got past.
    pub errors: BTreeMap<String, usize>,
    /// Set when the writer gave up on a message.
    pub permanent: Option<String>,
}

/// One writer task per channel, each sending a message every `pace` until stopped.
pub struct Writers {
    stop: Arc<AtomicBool>,
    pub acked: Arc<AtomicUsize>,
    handles: Vec<tokio::task::JoinHandle<WriterReport>>,
}

impl Writers {
    pub fn start(
        cluster: &Cluster,
        channels: &[String],
        from: &BTreeMap<String, Vec<String>>,
        pace: Duration,
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let handles = channels
            .iter()
            .enumerate()
            .map(|(i, ch)| {
                let (stop, acked, ch) = (stop.clone(), acked.clone(), ch.clone());
                let client = cluster.client_rotated(i);
                let from = from[&ch][0].clone();
                tokio::spawn(async move {
                    let mut report = WriterReport {
                        channel_id: ch.clone(),
                        acks: Vec::new(),
                        errors: BTreeMap::new(),
                        permanent: None,
                    };
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let cmn = format!("{ch}-w-{i}");
                        let payload = format!("writer {cmn}").into_bytes();
                        let req = send_req(&from, &ch, &cmn, &payload);
                        let first = Instant::now();
                        let mut backoff = Duration::from_millis(25);
                        let resp = loop {
                            match client.send(&req).await {
                                Ok(r) => break r,
                                Err(e) => {
                                    *report.errors.entry(e.code().to_string()).or_default() += 1;
                                    let fatal = matches!(e.code(), "bad_request" | "channel_not_found");
                                    if fatal || first.elapsed() > WRITE_GIVE_UP {
                                        report.permanent =
                                            Some(format!("{cmn} after {:?}: {e}", first.elapsed()));
                                        return report;
                                    }
                                    tokio::time::sleep(backoff).await;
                                    backoff = (backoff * 2).min(Duration::from_millis(400));
                                }
                            }
                        };
                        if first.elapsed() > Duration::from_secs(2) {
                            tracing::info!("writer {ch}: {cmn} took {:?}", first.elapsed());
                        }
                        report.acks.push(Ack {
                            from_uid: from.clone(),
                            client_msg_no: cmn,
                            payload,
                            resp,
                        });
                        acked.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                        tokio::time::sleep(pace).await;
                    }
                    report
                })
            })
            .collect();
        Writers { stop, acked, handles }
    }

    /// Stops the writers (each finishes the message it is on) and collects their reports.
    pub async fn stop(self) -> Vec<WriterReport> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for h in self.handles {
            match h.await {
                Ok(r) => out.push(r),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("writer task failed: {e}"),
            }
        }
        out
    }
}

/// Every message of a group channel, oldest first, paging up from seq 1.
pub async fn read_all(c: &Client, channel_id: &str, page: u32) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    let mut start = 1;
    loop {
        let req = SyncReq {
            login_uid: String::new(),
            channel_id: channel_id.to_string(),
            channel_type: CHANNEL_TYPE_GROUP,
            start_message_seq: start,
            end_message_seq: 0,
            limit: page,
            pull_mode: PULL_MODE_UP,
        };
        let what = format!("messagesync {channel_id} from {start}");
        let resp = retry(&what, Duration::from_secs(30), || c.sync(&req)).await;
        let Some(last) = resp.messages.last() else {
            return out;
        };
        start = last.message_seq + 1;
        out.extend(resp.messages);
        if resp.more == 0 {
            return out;
        }
        assert!(out.len() < 1_000_000, "{what}: paging does not end");
    }
}

/// `got` (a channel's messages as read) is exactly `acks`: each acknowledged client_msg_no
/// once, with the acknowledged seq and id and the sent payload, seqs 1..=N.
pub fn check_messages(channel_id: &str, got: &[Message], acks: &[Ack]) -> Result<(), String> {
    let seqs: Vec<u64> = got.iter().map(|m| m.message_seq).collect();
    if seqs != (1..=acks.len() as u64).collect::<Vec<_>>() {
        let got_nos: Vec<&str> = got.iter().map(|m| m.client_msg_no.as_str()).collect();
        let missing: Vec<&str> = acks
            .iter()
            .map(|a| a.client_msg_no.as_str())
            .filter(|n| !got_nos.contains(n))
            .collect();
        return Err(format!(
            "{channel_id}: seqs are not 1..={}: got {} messages, seqs {:?}..; missing {missing:?}",
            acks.len(),
            got.len(),
            &seqs[..seqs.len().min(20)]
        ));
    }
    let by_no: BTreeMap<&str, &Message> = got.iter().map(|m| (m.client_msg_no.as_str(), m)).collect();
    if by_no.len() != got.len() {
        return Err(format!("{channel_id}: a client_msg_no is stored twice"));
    }
    for a in acks {
        let Some(m) = by_no.get(a.client_msg_no.as_str()) else {
            return Err(format!(
                "{channel_id}: acknowledged {} is missing",
                a.client_msg_no
            ));
        };
        if (m.message_seq, m.message_id) != (a.resp.message_seq, a.resp.message_id)
            || m.from_uid != a.from_uid
            || unb64(&m.payload) != a.payload
        {
            return Err(format!(
                "{channel_id}: {} stored as seq {} id {} from {}, acknowledged as seq {} id {} from {}",
                a.client_msg_no,
                m.message_seq,
                m.message_id,
                m.from_uid,
                a.resp.message_seq,
                a.resp.message_id,
                a.from_uid
            ));
        }
    }
    Ok(())
}

/// The replicas are exactly `want` (any order) and agree (`ChannelReplicas::agreement`) at seq
/// `want_seq`; and the group settled: one leader with every replica at lag 0 and the same log
/// position, or hibernated (it may hibernate before a follower received its last blank or
/// membership entry, so log positions are compared only while it runs).
pub fn replicas_agree(r: &ChannelReplicas, want: &[u64], want_seq: u64) -> Result<(), String> {
    let ids: Vec<u64> = sorted(&r.replicas.iter().map(|x| x.node_id).collect::<Vec<_>>());
    let first = r.replicas.first().ok_or("no replicas")?;
    let leaders = r.replicas.iter().filter(|x| x.role == Role::Leader).count();
    let caught_up = leaders == 1
        && r.replicas.iter().all(|x| {
            x.lag == Some(0)
                && (x.last_log_index, x.applied_index) == (first.last_log_index, first.applied_index)
        });
    let agree = r.agreement() == Agreement::Agree { seq: want_seq };
    if ids == sorted(want) && agree && (caught_up || r.is_hibernated()) {
        return Ok(());
    }
    let brief: Vec<String> = r
        .replicas
        .iter()
        .map(|x| {
            format!(
                "n{} {} online={} last={} applied={} lag={:?} seq={} sum={}",
                x.node_id,
                x.role.as_str(),
                x.online,
                x.last_log_index,
                x.applied_index,
                x.lag,
                x.message_seq,
                x.checksum
            )
        })
        .collect();
    Err(format!(
        "{} (want replicas {want:?} at seq {want_seq}): [{}]",
        r.channel_id,
        brief.join("; ")
    ))
}

/// For every channel: its metadata record (read on `reader`) has exactly its placement among
/// `members` as replicas; messagesync returns exactly its acknowledged messages; its replicas
/// converge (same last index, seq and checksum). Twelve channels at a time.
pub async fn verify_all(
    cluster: &Cluster,
    reader: &Client,
    acks: &BTreeMap<String, Vec<Ack>>,
    members: &[u64],
    problems: &Problems,
) {
    let t = Instant::now();
    bounded(acks.iter().enumerate(), 12, |(i, (ch, acks))| {
        let c = cluster.client_rotated(i);
        async move {
            let want = placement(ch, members, 3);
            let r = group_ref(ch);
            let info = retry(&format!("info of {ch}"), Duration::from_secs(20), || {
                reader.channel_info(&r)
            })
            .await;
            problems.check(sorted(&info.replicas) == sorted(&want), || {
                format!(
                    "{ch}: replicas {:?} in the metadata, placement is {want:?}",
                    info.replicas
                )
            });
            let got = read_all(&c, ch, 500).await;
            if let Err(e) = check_messages(ch, &got, acks) {
                problems.note(e);
            }
            let last = Arc::new(Mutex::new(String::new()));
            let agreed = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    match c.channel_replicas(ch, CHANNEL_TYPE_GROUP).await {
                        Ok(r) => match replicas_agree(&r, &info.replicas, acks.len() as u64) {
                            Ok(()) => return,
                            Err(e) => *last.lock().expect("last lock") = e,
                        },
                        Err(e) => *last.lock().expect("last lock") = format!("{ch}: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
            if agreed.is_err() {
                problems.note(format!(
                    "replicas did not agree within 30 s: {}",
                    last.lock().expect("last lock")
                ));
            }
        }
    })
    .await;
    tracing::info!("{} channels verified in {:?}", acks.len(), t.elapsed());
}
