//! Faults against a three-node cluster of real `wknode` processes.
//!
//! - `failover_under_load`: concurrent writers, SIGKILL of the node that leads the most
//!   channels, restart on the same data dir; every acknowledged write is stored exactly once
//!   with the seq and id it was acknowledged with, and all replicas converge.
//! - `restart_keeps_everything`: SIGTERM of all nodes, then SIGKILL of all nodes, each followed
//!   by a restart on the same dirs; data survives and seqs continue.
//! - `idle_channels_hibernate_and_survive_a_kill`: with a short idle timeout every channel group
//!   hibernates; a node is SIGKILLed while they sleep; writes wake them on the survivors; the
//!   node comes back and every node reads exactly the acknowledged messages.
//! - `frozen_leader_rejoins`: SIGSTOP of the metadata leader; the other two keep taking channel
//!   and metadata writes; after SIGCONT the frozen node catches up and all replicas converge.
//! - `quiet_channel_survives_a_paused_leader`: a channel left idle goes quiet (its Raft timers
//!   stop); SIGSTOP of its leader; the other replicas elect a new leader with no client request
//!   to prompt them, take writes, and every replica ends with exactly the acknowledged messages.
//! - `quiet_channel_keeps_a_transferred_leader`: leadership of a quiet channel moved to a
//!   follower stays there: no replica times out and elects another leader.
//! - `a_woken_leader_resumes_its_term_and_yields_to_a_newer_one`: a channel group hibernated
//!   by its leader is woken there and led again in the same term (no election); then, with the
//!   leader paused, another replica leads it in a newer term and it hibernates again; the old
//!   leader, resumed and woken, resumes its old term, meets the newer one and steps down: the
//!   seqs stay contiguous and every replica holds the same messages.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, b64, retry, unb64, wait_until};
use wk_api::{
    Agreement, CHANNEL_TYPE_GROUP, CHANNEL_TYPE_PERSON, ChannelRef, ChannelReplicas, ChannelReq, Client,
    Message, MessageHeader, PULL_MODE_UP, Role, SendReq, SendResp, SyncReq, UserTokenReq,
};

fn send_req(from: &str, channel_id: &str, channel_type: u8, client_msg_no: &str, payload: &[u8]) -> SendReq {
    SendReq {
        header: MessageHeader::default(),
        client_msg_no: client_msg_no.to_string(),
        from_uid: from.to_string(),
        channel_id: channel_id.to_string(),
        channel_type,
        payload: b64(payload),
    }
}

fn channel_ref(login_uid: &str, channel_id: &str, channel_type: u8) -> ChannelRef {
    ChannelRef {
        channel_id: channel_id.to_string(),
        channel_type,
        login_uid: login_uid.to_string(),
    }
}

/// Awaits a spawned task, re-raising its panic with the original message.
async fn join<T>(h: tokio::task::JoinHandle<T>) -> T {
    match h.await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("task failed: {e}"),
    }
}

/// Every message of a channel, oldest first, paging with `more` (pull up from seq 1: the
/// api tests pin down what start 0 means; here only the data matters).
async fn read_all(
    c: &Client,
    login_uid: &str,
    channel_id: &str,
    channel_type: u8,
    page: u32,
) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    let mut start = 1;
    loop {
        let req = SyncReq {
            login_uid: login_uid.to_string(),
            channel_id: channel_id.to_string(),
            channel_type,
            start_message_seq: start,
            end_message_seq: 0,
            limit: page,
            pull_mode: PULL_MODE_UP,
        };
        let what = format!("messagesync {channel_id} from {start}");
        let resp = retry(&what, Duration::from_secs(30), || c.sync(&req)).await;
        assert!(
            resp.messages.len() <= page as usize,
            "{what}: {} messages over limit {page}",
            resp.messages.len()
        );
        let Some(last) = resp.messages.last() else {
            assert_eq!(resp.more, 0, "{what}: no messages but more=1");
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

/// One acknowledged send: what was sent and what the cluster answered.
#[derive(Debug, Clone)]
struct Ack {
    channel_id: String,
    from_uid: String,
    client_msg_no: String,
    payload: Vec<u8>,
    resp: SendResp,
}

/// Checks that `got` (a channel's messages, as read) is exactly `acks`: each acknowledged
/// client_msg_no once, with the acknowledged seq and id and the sent payload, seqs 1..=N.
fn check_channel(node: &str, channel_id: &str, got: &[Message], acks: &[Ack]) {
    let seqs: Vec<u64> = got.iter().map(|m| m.message_seq).collect();
    let want: Vec<u64> = (1..=acks.len() as u64).collect();
    if seqs != want {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for m in got {
            *counts.entry(m.client_msg_no.as_str()).or_default() += 1;
        }
        let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        let acked: HashSet<&str> = acks.iter().map(|a| a.client_msg_no.as_str()).collect();
        let missing: Vec<_> = acked.iter().filter(|k| !counts.contains_key(**k)).collect();
        panic!(
            "{node}: {channel_id}: seqs are not 1..={}: got {} messages, seqs {:?}..; duplicated client_msg_no {dups:?}; missing {missing:?}",
            acks.len(),
            got.len(),
            &seqs[..seqs.len().min(20)]
        );
    }
    let by_no: HashMap<&str, &Message> = got.iter().map(|m| (m.client_msg_no.as_str(), m)).collect();
    assert_eq!(
        by_no.len(),
        got.len(),
        "{node}: {channel_id}: a client_msg_no is stored twice"
    );
    for a in acks {
        let m = by_no.get(a.client_msg_no.as_str()).unwrap_or_else(|| {
            panic!(
                "{node}: {channel_id}: acknowledged {} is missing",
                a.client_msg_no
            )
        });
        assert_eq!(
            (m.message_seq, m.message_id),
            (a.resp.message_seq, a.resp.message_id),
            "{node}: {channel_id}: {} stored with another seq/id than acknowledged",
            a.client_msg_no
        );
        assert_eq!(
            m.from_uid, a.from_uid,
            "{node}: {channel_id}: {}",
            a.client_msg_no
        );
        assert!(
            unb64(&m.payload) == a.payload,
            "{node}: {channel_id}: {}: payload differs",
            a.client_msg_no
        );
    }
}

/// A replica set is converged when its `n` replicas agree (`ChannelReplicas::agreement`) at
/// `want_seq`, at most one leads (an idle group may be hibernating on every replica), and all
/// report the same log position.
fn converged(r: &ChannelReplicas, n: usize, want_seq: u64) -> Result<(), String> {
    let first = r.replicas.first().ok_or("no replicas")?;
    let leaders = r.replicas.iter().filter(|x| x.role == Role::Leader).count();
    let same_log = r
        .replicas
        .iter()
        .all(|x| (x.last_log_index, x.applied_index) == (first.last_log_index, first.applied_index));
    let agree = r.agreement() == Agreement::Agree { seq: want_seq };
    if r.replicas.len() == n && leaders <= 1 && agree && same_log {
        Ok(())
    } else {
        let brief: Vec<String> = r
            .replicas
            .iter()
            .map(|x| {
                format!(
                    "n{} {} online={} last={} applied={} seq={} sum={}",
                    x.node_id,
                    x.role.as_str(),
                    x.online,
                    x.last_log_index,
                    x.applied_index,
                    x.message_seq,
                    x.checksum
                )
            })
            .collect();
        Err(format!(
            "{} (want seq {want_seq}): [{}]",
            r.channel_id,
            brief.join("; ")
        ))
    }
}

/// Waits until every listed group channel's replicas have converged at its expected seq, waking
/// the groups that have not.
async fn wait_converged(
    c: &Client,
    expected: &BTreeMap<String, u64>,
    timeout: Duration,
) -> BTreeMap<String, ChannelReplicas> {
    wait_until("every channel's 3 replicas to converge", timeout, || async {
        let mut out = BTreeMap::new();
        let mut behind = Vec::new();
        for (ch, seq) in expected {
            match c.channel_replicas(ch, CHANNEL_TYPE_GROUP).await {
                Ok(r) => match converged(&r, 3, *seq) {
                    Ok(()) => {
                        out.insert(ch.clone(), r);
                    }
                    Err(e) => {
                        // Status reads do not wake a hibernated group, and a replica that missed
                        // entries only catches up while its group runs: a client read wakes it.
                        let _ = c.max_seq(&channel_ref("", ch, CHANNEL_TYPE_GROUP)).await;
                        behind.push(e);
                    }
                },
                Err(e) => behind.push(format!("{ch}: {e}")),
            }
        }
        if behind.is_empty() {
            Ok(out)
        } else {
            Err(format!(
                "{} channel(s) not converged, e.g. {}",
                behind.len(),
                behind[0]
            ))
        }
    })
    .await
}

/// Creates group channels and waits until every node sees each of them.
async fn create_groups(cluster: &Cluster, ids: &[String], subscribers: &[&str]) {
    let c = cluster.client();
    for id in ids {
        let req = ChannelReq {
            channel_id: id.clone(),
            channel_type: CHANNEL_TYPE_GROUP,
            subscribers: subscribers.iter().map(|s| s.to_string()).collect(),
            reset: 0,
        };
        retry(&format!("create {id}"), Duration::from_secs(20), || {
            c.channel_create(&req)
        })
        .await;
    }
    for node in &cluster.nodes {
        let nc = node.client();
        wait_until(
            &format!("node {} to see all {} channels", node.id, ids.len()),
            Duration::from_secs(20),
            || async {
                for id in ids {
                    nc.channel_info(&channel_ref("", id, CHANNEL_TYPE_GROUP))
                        .await
                        .map_err(|e| format!("{id}: {e}"))?;
                }
                Ok(())
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_under_load() {
    const CHANNELS: usize = 20;
    const WRITERS_PER_CHANNEL: usize = 2;
    const MESSAGES: usize = 2000;
    const PER_WRITER: usize = MESSAGES / (CHANNELS * WRITERS_PER_CHANNEL);
    let test_start = Instant::now();

    let mut cluster = Cluster::start(3).await;
    let c = cluster.client();

    tracing::info!("--- create {CHANNELS} group channels");
    let channels: Vec<String> = (0..CHANNELS).map(|i| format!("fo-{i:02}")).collect();
    create_groups(&cluster, &channels, &["w0", "w1", "reader"]).await;

    tracing::info!(
        "--- {MESSAGES} messages from {} concurrent writers",
        CHANNELS * WRITERS_PER_CHANNEL
    );
    let acked = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(BTreeMap::<String, usize>::new()));
    let write_deadline = Instant::now() + Duration::from_secs(75);
    let mut writers = Vec::new();
    for (ci, ch) in channels.iter().enumerate() {
        for w in 0..WRITERS_PER_CHANNEL {
            let client = cluster.client_rotated(ci * WRITERS_PER_CHANNEL + w);
            let (ch, acked, errors) = (ch.clone(), acked.clone(), errors.clone());
            writers.push(tokio::spawn(async move {
                let from = format!("w{w}");
                let mut acks = Vec::with_capacity(PER_WRITER);
                let mut last_seq = 0;
                for i in 0..PER_WRITER {
                    let cmn = format!("{ch}-{from}-{i}");
                    let payload = format!("payload {cmn} {}", "x".repeat(i % 50)).into_bytes();
                    let req = send_req(&from, &ch, CHANNEL_TYPE_GROUP, &cmn, &payload);
                    let mut backoff = Duration::from_millis(25);
                    let resp = loop {
                        match client.send(&req).await {
                            Ok(r) => break r,
                            Err(e) => {
                                assert_ne!(
                                    e.code(),
                                    "bad_request",
                                    "{cmn}: a valid request was rejected: {e}"
                                );
                                assert_ne!(e.code(), "channel_not_found", "{cmn}: channel lost: {e}");
                                // std Mutex: a counter bump, never held across an await.
                                *errors
                                    .lock()
                                    .expect("errors lock")
                                    .entry(e.code().to_string())
                                    .or_default() += 1;
                                assert!(
                                    Instant::now() < write_deadline,
                                    "{cmn}: not acknowledged before the deadline; last error: {e}"
                                );
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_millis(400));
                            }
                        }
                    };
                    assert_eq!(resp.client_msg_no, cmn);
                    assert!(
                        resp.message_seq > last_seq,
                        "{cmn}: seq {} after this writer's {last_seq}",
                        resp.message_seq
                    );
                    last_seq = resp.message_seq;
                    acks.push(Ack {
                        channel_id: ch.clone(),
                        from_uid: from.clone(),
                        client_msg_no: cmn,
                        payload,
                        resp,
                    });
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                acks
            }));
        }
    }

    tracing::info!("--- wait for a third of the writes");
    let acked_probe = acked.clone();
    wait_until(
        "a third of the writes to be acknowledged",
        Duration::from_secs(60),
        || {
            let n = acked_probe.load(Ordering::Relaxed);
            async move {
                if n >= MESSAGES / 3 {
                    Ok(())
                } else {
                    Err(format!("{n} acknowledged"))
                }
            }
        },
    )
    .await;

    // All at once: the writers keep going meanwhile, and the kill should come at about a third.
    let configs = futures::future::join_all(channels.iter().map(|ch| {
        let c = &c;
        async move {
            retry(&format!("config of {ch}"), Duration::from_secs(10), || {
                c.channel_config(ch, CHANNEL_TYPE_GROUP)
            })
            .await
        }
    }))
    .await;
    let mut led: BTreeMap<u64, usize> = BTreeMap::new();
    for cfg in &configs {
        if let Some(l) = cfg.leader {
            *led.entry(l).or_default() += 1;
        }
    }
    let (&victim, &victim_led) = led
        .iter()
        .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
        .expect("some channel has a leader");
    let at_kill = acked.load(Ordering::Relaxed);
    tracing::info!(
        "--- SIGKILL node {victim} (leads {victim_led} channels; leaders per node {led:?}) at {at_kill} acknowledged"
    );
    cluster.node_mut(victim).kill().await;
    let killed_at = Instant::now();

    tracing::info!("--- wait for every write to be acknowledged");
    let mut acks: Vec<Ack> = Vec::with_capacity(MESSAGES);
    for w in writers {
        acks.extend(join(w).await);
    }
    let after_kill = MESSAGES - at_kill;
    tracing::info!(
        "all {} writes acknowledged, {after_kill} of them after the kill, {:?} after it; errors seen by writers: {:?}",
        acks.len(),
        killed_at.elapsed(),
        errors.lock().expect("errors lock")
    );
    assert!(
        at_kill < MESSAGES,
        "the kill came after the last write; the failover was not exercised"
    );
    assert_eq!(acks.len(), MESSAGES);

    tracing::info!("--- channels the victim led have new leaders");
    let survivors = cluster.client_running();
    for ch in &channels {
        let cfg = retry(&format!("config of {ch}"), Duration::from_secs(20), || {
            survivors.channel_config(ch, CHANNEL_TYPE_GROUP)
        })
        .await;
        assert_ne!(
            cfg.leader,
            Some(victim),
            "{ch}: the killed node is still reported as leader: {cfg:?}"
        );
    }

    tracing::info!("--- restart node {victim} on the same data dir");
    cluster.node_mut(victim).restart().await;
    cluster.wait_meta_leader().await;

    let mut by_channel: BTreeMap<String, Vec<Ack>> = BTreeMap::new();
    for a in &acks {
        by_channel
            .entry(a.channel_id.clone())
            .or_default()
            .push(a.clone());
    }
    let expected: BTreeMap<String, u64> = by_channel
        .iter()
        .map(|(ch, a)| (ch.clone(), a.len() as u64))
        .collect();

    tracing::info!("--- wait until all replicas of all channels converge");
    wait_converged(&c, &expected, Duration::from_secs(45)).await;

    tracing::info!("--- every node returns exactly the acknowledged messages");
    let mut ids = HashSet::new();
    for (ch, acks) in &by_channel {
        let got = read_all(&c, "reader", ch, CHANNEL_TYPE_GROUP, 1000).await;
        check_channel("cluster client", ch, &got, acks);
        for m in &got {
            assert!(
                ids.insert(m.message_id),
                "message_id {} is used twice ({ch} seq {})",
                m.message_id,
                m.message_seq
            );
        }
        for node in &cluster.nodes {
            let nc = node.client();
            let got = read_all(&nc, "reader", ch, CHANNEL_TYPE_GROUP, 30).await;
            check_channel(&format!("node {}", node.id), ch, &got, acks);
            let r = channel_ref("reader", ch, CHANNEL_TYPE_GROUP);
            let max = retry("max seq", Duration::from_secs(10), || nc.max_seq(&r)).await;
            assert_eq!(
                max.message_seq,
                acks.len() as u64,
                "node {}: {ch}: max_message_seq",
                node.id
            );
        }
    }
    tracing::info!("failover test done in {:?}", test_start.elapsed());
}

/// What a channel held before a restart, to compare with after.
#[derive(Debug, PartialEq)]
struct Snapshot {
    messages: Vec<Message>,
    subscribers: BTreeSet<String>,
    max_seq: u64,
}

async fn snapshot_group(c: &Client, ch: &str) -> Snapshot {
    let messages = read_all(c, "u0", ch, CHANNEL_TYPE_GROUP, 1000).await;
    let r = channel_ref("", ch, CHANNEL_TYPE_GROUP);
    let info = retry(&format!("info {ch}"), Duration::from_secs(30), || {
        c.channel_info(&r)
    })
    .await;
    let max = retry(&format!("max seq {ch}"), Duration::from_secs(30), || {
        c.max_seq(&r)
    })
    .await;
    Snapshot {
        messages,
        subscribers: info.subscribers.into_iter().collect(),
        max_seq: max.message_seq,
    }
}

async fn snapshot_person(c: &Client) -> Snapshot {
    let messages = read_all(c, "alice", "bob", CHANNEL_TYPE_PERSON, 1000).await;
    let r = channel_ref("alice", "bob", CHANNEL_TYPE_PERSON);
    let max = retry("max seq alice-bob", Duration::from_secs(30), || c.max_seq(&r)).await;
    Snapshot {
        messages,
        subscribers: BTreeSet::new(),
        max_seq: max.message_seq,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_keeps_everything() {
    const CHANNELS: usize = 5;
    const PER_CHANNEL: usize = 40;
    let mut cluster = Cluster::start(3).await;
    let c = cluster.client();

    tracing::info!(
        "--- users, {CHANNELS} channels, {} group messages, a person conversation",
        CHANNELS * PER_CHANNEL
    );
    for u in ["u0", "u1", "u2", "alice", "bob"] {
        let req = UserTokenReq {
            uid: u.into(),
            token: format!("token-{u}"),
            device_flag: 0,
            device_level: 1,
        };
        retry(&format!("token {u}"), Duration::from_secs(20), || {
            c.user_token(&req)
        })
        .await;
    }
    let channels: Vec<String> = (0..CHANNELS).map(|i| format!("rs-{i}")).collect();
    create_groups(&cluster, &channels, &["u0", "u1"]).await;
    // Per-channel subscriber changes, so each channel's metadata is distinct.
    for (i, ch) in channels.iter().enumerate() {
        let req = wk_api::SubscribersReq {
            channel_id: ch.clone(),
            channel_type: CHANNEL_TYPE_GROUP,
            subscribers: vec![format!("extra-{i}")],
            reset: 0,
        };
        retry("subscriber_add", Duration::from_secs(20), || {
            c.subscriber_add(&req)
        })
        .await;
    }
    let mut writers = Vec::new();
    for (ci, ch) in channels.iter().enumerate() {
        let (client, ch) = (cluster.client_rotated(ci), ch.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..PER_CHANNEL {
                let req = send_req(
                    "u1",
                    &ch,
                    CHANNEL_TYPE_GROUP,
                    &format!("{ch}-{i}"),
                    format!("{ch} #{i}").as_bytes(),
                );
                let r = retry(&format!("send {ch} #{i}"), Duration::from_secs(30), || {
                    client.send(&req)
                })
                .await;
                assert_eq!(r.message_seq, i as u64 + 1, "{ch}: seq");
            }
        }));
    }
    for w in writers {
        join(w).await;
    }
    for i in 0..10u64 {
        let (from, to) = if i % 2 == 0 {
            ("alice", "bob")
        } else {
            ("bob", "alice")
        };
        let req = send_req(
            from,
            to,
            CHANNEL_TYPE_PERSON,
            &format!("p{i}"),
            format!("dm {i}").as_bytes(),
        );
        let r = retry("person send", Duration::from_secs(30), || c.send(&req)).await;
        assert_eq!(r.message_seq, i + 1);
    }

    let expected: BTreeMap<String, u64> = channels
        .iter()
        .map(|ch| (ch.clone(), PER_CHANNEL as u64))
        .collect();
    let before_replicas = wait_converged(&c, &expected, Duration::from_secs(30)).await;
    let mut before = BTreeMap::new();
    for ch in &channels {
        let snap = snapshot_group(&c, ch).await;
        assert_eq!(snap.messages.len(), PER_CHANNEL);
        assert_eq!(snap.subscribers.len(), 3, "{ch}: {snap:?}");
        before.insert(ch.clone(), snap);
    }
    let person_before = snapshot_person(&c).await;
    assert_eq!(person_before.messages.len(), 10);

    tracing::info!("--- SIGTERM all nodes");
    for (id, status) in cluster.stop_all().await {
        assert!(
            status.success(),
            "node {id} did not exit cleanly on SIGTERM: {status}"
        );
    }

    tracing::info!("--- start all nodes again on the same dirs");
    cluster.spawn_all_and_wait().await;
    let after_replicas = wait_converged(&c, &expected, Duration::from_secs(45)).await;
    for ch in &channels {
        let (b, a) = (&before_replicas[ch], &after_replicas[ch]);
        assert_eq!(b.group_id, a.group_id, "{ch}: group id changed");
        assert_eq!(
            b.replicas[0].checksum, a.replicas[0].checksum,
            "{ch}: checksum changed over a restart"
        );
    }

    tracing::info!("--- all data is there, on every node");
    for node in &cluster.nodes {
        let nc = node.client();
        for ch in &channels {
            let snap = snapshot_group(&nc, ch).await;
            assert!(
                snap == before[ch],
                "node {}: {ch} differs after restart:\nbefore {:?}\nafter  {snap:?}",
                node.id,
                before[ch]
            );
        }
        assert!(
            snapshot_person(&nc).await == person_before,
            "node {}: alice-bob differs after restart",
            node.id
        );
    }

    tracing::info!("--- new writes continue the seqs");
    for (i, ch) in channels.iter().enumerate() {
        let req = send_req(
            "u0",
            ch,
            CHANNEL_TYPE_GROUP,
            &format!("{ch}-after-term"),
            b"after term",
        );
        let rc = cluster.client_rotated(i);
        let r = retry(&format!("send {ch}"), Duration::from_secs(30), || rc.send(&req)).await;
        assert_eq!(r.message_seq, PER_CHANNEL as u64 + 1, "{ch}");
        // A retry of a message stored before the restart still finds the original.
        let old = send_req(
            "u1",
            ch,
            CHANNEL_TYPE_GROUP,
            &format!("{ch}-0"),
            format!("{ch} #0").as_bytes(),
        );
        let r = retry("resend", Duration::from_secs(30), || c.send(&old)).await;
        assert_eq!(
            (r.message_seq, r.message_id),
            (1, before[ch].messages[0].message_id),
            "{ch}: idempotency lost over a restart"
        );
    }
    let req = send_req("alice", "bob", CHANNEL_TYPE_PERSON, "p-after", b"after");
    assert_eq!(
        retry("person send", Duration::from_secs(30), || c.send(&req))
            .await
            .message_seq,
        11
    );
    let req = UserTokenReq {
        uid: "u0".into(),
        token: "token-2".into(),
        device_flag: 0,
        device_level: 1,
    };
    retry("token after restart", Duration::from_secs(20), || {
        c.user_token(&req)
    })
    .await;
    let new_ch = vec!["rs-new".to_string()];
    create_groups(&cluster, &new_ch, &["u0"]).await;
    let req = send_req("u0", "rs-new", CHANNEL_TYPE_GROUP, "n0", b"new");
    assert_eq!(
        retry("send to a new channel", Duration::from_secs(30), || c.send(&req))
            .await
            .message_seq,
        1
    );

    tracing::info!("--- SIGKILL all nodes, start again");
    let mut expected: BTreeMap<String, u64> = channels
        .iter()
        .map(|ch| (ch.clone(), PER_CHANNEL as u64 + 1))
        .collect();
    expected.insert("rs-new".into(), 1);
    for node in cluster.nodes.iter_mut() {
        node.kill().await;
    }
    cluster.spawn_all_and_wait().await;
    wait_converged(&c, &expected, Duration::from_secs(45)).await;
    for ch in &channels {
        let snap = snapshot_group(&c, ch).await;
        assert_eq!(snap.max_seq, PER_CHANNEL as u64 + 1, "{ch}");
        assert!(
            snap.messages[..PER_CHANNEL] == before[ch].messages[..],
            "{ch}: old messages differ after SIGKILL"
        );
        assert_eq!(
            snap.messages[PER_CHANNEL].client_msg_no,
            format!("{ch}-after-term")
        );
        assert_eq!(snap.subscribers, before[ch].subscribers);
    }
    assert_eq!(snapshot_person(&c).await.max_seq, 11);
    let req = send_req("u0", "rs-new", CHANNEL_TYPE_GROUP, "n1", b"new");
    assert_eq!(
        retry("send after SIGKILL", Duration::from_secs(30), || c.send(&req))
            .await
            .message_seq,
        2
    );
}

/// Sends `count` messages to a group channel one after another, retrying each (same
/// client_msg_no) until acknowledged or `deadline`.
async fn write_channel(
    c: &Client,
    ch: &str,
    from: &str,
    first: usize,
    count: usize,
    deadline: Instant,
) -> Vec<Ack> {
    let mut acks = Vec::new();
    for i in first..first + count {
        let cmn = format!("{ch}-{from}-{i}");
        let payload = format!("{cmn} body").into_bytes();
        let req = send_req(from, ch, CHANNEL_TYPE_GROUP, &cmn, &payload);
        let left = deadline.saturating_duration_since(Instant::now());
        let resp = retry(&format!("send {cmn}"), left, || c.send(&req)).await;
        acks.push(Ack {
            channel_id: ch.to_string(),
            from_uid: from.to_string(),
            client_msg_no: cmn,
            payload,
            resp,
        });
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_leader_rejoins() {
    const CHANNELS: usize = 6;
    let cluster = Cluster::start(3).await;
    let c = cluster.client();
    let channels: Vec<String> = (0..CHANNELS).map(|i| format!("fz-{i}")).collect();
    create_groups(&cluster, &channels, &["u"]).await;

    tracing::info!("--- 10 messages per channel");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut acks: BTreeMap<String, Vec<Ack>> = BTreeMap::new();
    for ch in &channels {
        acks.insert(ch.clone(), write_channel(&c, ch, "u", 0, 10, deadline).await);
    }

    let frozen = cluster.wait_meta_leader().await;
    tracing::info!("--- SIGSTOP node {frozen}, the metadata leader");
    cluster.node(frozen).pause();
    let others = cluster.client_excluding(frozen);

    tracing::info!("--- the other two elect a metadata leader and keep taking writes");
    let survivors: Vec<Client> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != frozen)
        .map(|n| n.client())
        .collect();
    for nc in &survivors {
        wait_until("a new metadata leader", Duration::from_secs(30), || async {
            let h = nc.health().await.map_err(|e| e.to_string())?;
            match h.meta_leader {
                Some(l) if l != frozen => Ok(l),
                other => Err(format!("node {} reports meta_leader {other:?}", h.node_id)),
            }
        })
        .await;
    }
    // Leadership first, then writes: tells "no new leader" apart from "requests do not reach it".
    wait_until(
        "every channel to have a leader other than the frozen node",
        Duration::from_secs(20),
        || async {
            for ch in &channels {
                let cfg = others
                    .channel_config(ch, CHANNEL_TYPE_GROUP)
                    .await
                    .map_err(|e| format!("{ch}: {e}"))?;
                if cfg.leader.is_none() || cfg.leader == Some(frozen) {
                    return Err(format!("{cfg:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut writers = Vec::new();
    for ch in &channels {
        let (c, ch) = (others.clone(), ch.clone());
        writers.push(tokio::spawn(async move {
            write_channel(&c, &ch, "u", 10, 20, deadline).await
        }));
    }
    for (ch, w) in channels.iter().zip(writers) {
        acks.get_mut(ch).expect("channel has acks").extend(join(w).await);
    }
    let new_ch = vec!["fz-new".to_string()];
    let req = ChannelReq {
        channel_id: "fz-new".into(),
        channel_type: CHANNEL_TYPE_GROUP,
        subscribers: vec!["u".into()],
        reset: 0,
    };
    retry(
        "create a channel while a node is frozen",
        Duration::from_secs(30),
        || others.channel_create(&req),
    )
    .await;
    acks.insert(
        "fz-new".into(),
        write_channel(
            &others,
            "fz-new",
            "u",
            0,
            5,
            Instant::now() + Duration::from_secs(30),
        )
        .await,
    );

    tracing::info!("--- SIGCONT node {frozen}; it catches up");
    cluster.node(frozen).resume();
    cluster.wait_meta_leader().await;
    create_groups(&cluster, &new_ch, &["u"]).await;
    let expected: BTreeMap<String, u64> = acks.iter().map(|(ch, a)| (ch.clone(), a.len() as u64)).collect();
    wait_converged(&c, &expected, Duration::from_secs(45)).await;
    for node in &cluster.nodes {
        let nc = node.client();
        for (ch, a) in &acks {
            let got = read_all(&nc, "u", ch, CHANNEL_TYPE_GROUP, 1000).await;
            check_channel(&format!("node {}", node.id), ch, &got, a);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_channels_hibernate_and_survive_a_kill() {
    const CHANNELS: usize = 9;
    let mut cluster = Cluster::start_with(3, &["--channel-idle-timeout", "300ms"]).await;
    let c = cluster.client();
    let channels: Vec<String> = (0..CHANNELS).map(|i| format!("hb-{i}")).collect();
    create_groups(&cluster, &channels, &["u"]).await;

    tracing::info!("--- 5 messages per channel, then let them go idle");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut acks: BTreeMap<String, Vec<Ack>> = BTreeMap::new();
    for ch in &channels {
        acks.insert(ch.clone(), write_channel(&c, ch, "u", 0, 5, deadline).await);
    }
    wait_all_asleep(&c, 3, "every channel group to hibernate (no node leads any)").await;

    // The preferred leader (first replica) of the most channels: the one tried first on wake-up.
    let mut preferred: BTreeMap<u64, usize> = BTreeMap::new();
    for ch in &channels {
        let info = c
            .channel_info(&channel_ref("", ch, CHANNEL_TYPE_GROUP))
            .await
            .expect("channel info");
        *preferred.entry(info.replicas[0]).or_default() += 1;
    }
    let victim = *preferred
        .iter()
        .max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id)))
        .expect("channels")
        .0;
    tracing::info!(
        "--- SIGKILL node {victim} (first replica of {} channels) while they sleep",
        preferred[&victim]
    );
    cluster.node_mut(victim).kill().await;

    tracing::info!("--- writes wake every channel on the two survivors");
    let others = cluster.client_excluding(victim);
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut writers = Vec::new();
    for ch in &channels {
        let (c, ch) = (others.clone(), ch.clone());
        writers.push(tokio::spawn(async move {
            write_channel(&c, &ch, "u", 5, 5, deadline).await
        }));
    }
    for (ch, w) in channels.iter().zip(writers) {
        acks.get_mut(ch).expect("channel has acks").extend(join(w).await);
    }

    tracing::info!("--- restart node {victim}; one more message each, through every node");
    cluster.node_mut(victim).restart().await;
    cluster.wait_meta_leader().await;
    let deadline = Instant::now() + Duration::from_secs(45);
    for (i, ch) in channels.iter().enumerate() {
        let nc = cluster.nodes[i % 3].client();
        acks.get_mut(ch)
            .expect("channel has acks")
            .extend(write_channel(&nc, ch, "u", 10, 1, deadline).await);
    }
    for (ch, a) in &acks {
        assert_eq!(
            a.iter().map(|a| a.resp.message_seq).collect::<Vec<_>>(),
            (1..=11).collect::<Vec<_>>(),
            "{ch}"
        );
    }

    tracing::info!("--- every node reads exactly the acknowledged messages");
    for node in &cluster.nodes {
        let nc = node.client();
        for (ch, a) in &acks {
            // A replica that slept through the last writes catches up when woken; allow it.
            let got = wait_until(
                &format!("node {} to read all of {ch}", node.id),
                Duration::from_secs(30),
                || async {
                    let got = read_all(&nc, "u", ch, CHANNEL_TYPE_GROUP, 1000).await;
                    if got.len() >= a.len() {
                        Ok(got)
                    } else {
                        Err(format!("{} of {} messages", got.len(), a.len()))
                    }
                },
            )
            .await;
            check_channel(&format!("node {}", node.id), ch, &got, a);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quiet_channel_survives_a_paused_leader() {
    let cluster = Cluster::start(3).await;
    let c = cluster.client();
    let ch = "quiet-0".to_string();
    create_groups(&cluster, std::slice::from_ref(&ch), &["u"]).await;

    tracing::info!("--- 5 messages, then the channel is left idle until it is quiet");
    let mut acks = write_channel(&c, &ch, "u", 0, 5, Instant::now() + Duration::from_secs(30)).await;
    let leader = wait_quiet(&c, &ch).await;

    tracing::info!("--- SIGSTOP node {leader}, the quiet channel's leader; nothing else is sent");
    cluster.node(leader).pause();
    let others = cluster.client_excluding(leader);
    wait_until(
        "the other replicas to elect a leader on their own",
        Duration::from_secs(20),
        || async {
            let cfg = others
                .channel_config(&ch, CHANNEL_TYPE_GROUP)
                .await
                .map_err(|e| e.to_string())?;
            match cfg.leader {
                Some(l) if l != leader => Ok(()),
                other => Err(format!("leader {other:?}")),
            }
        },
    )
    .await;
    acks.extend(write_channel(&others, &ch, "u", 5, 10, Instant::now() + Duration::from_secs(30)).await);

    tracing::info!("--- SIGCONT node {leader}; every replica holds exactly the acknowledged messages");
    cluster.node(leader).resume();
    let expected = BTreeMap::from([(ch.clone(), acks.len() as u64)]);
    wait_converged(&c, &expected, Duration::from_secs(45)).await;
    for node in &cluster.nodes {
        let got = read_all(&node.client(), "u", &ch, CHANNEL_TYPE_GROUP, 1000).await;
        check_channel(&format!("node {}", node.id), &ch, &got, &acks);
    }
}

/// Wait until channel `ch` is quiet; answers its leader. A quiet leader sends no heartbeats,
/// so status shows no ack age for its followers.
async fn wait_quiet(c: &Client, ch: &str) -> u64 {
    wait_until("the channel to go quiet", Duration::from_secs(30), || async {
        let r = c
            .channel_replicas(ch, CHANNEL_TYPE_GROUP)
            .await
            .map_err(|e| e.to_string())?;
        let leader = r.leader.ok_or_else(|| "no leader".to_string())?;
        let followers: Vec<_> = r.replicas.iter().filter(|x| x.node_id != leader).collect();
        if followers.len() == 2
            && followers
                .iter()
                .all(|x| x.last_ack_ms.is_none() && x.lag == Some(0))
        {
            Ok(leader)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quiet_channel_keeps_a_transferred_leader() {
    let cluster = Cluster::start(3).await;
    let c = cluster.client();
    let ch = "quiet-1".to_string();
    create_groups(&cluster, std::slice::from_ref(&ch), &["u"]).await;
    write_channel(&c, &ch, "u", 0, 3, Instant::now() + Duration::from_secs(30)).await;
    let leader = wait_quiet(&c, &ch).await;

    let to = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader)
        .expect("a follower");
    tracing::info!("--- move the quiet channel's leadership from node {leader} to node {to}");
    let moved = c
        .transfer_leader(&ch, CHANNEL_TYPE_GROUP, to)
        .await
        .expect("transfer-leader");
    assert_eq!(moved.leader, Some(to));
    // The new leader heartbeats until the channel is quiet again under it. Before the fix it
    // stayed quiet from its follower days while its followers, woken by its first append,
    // timed out within 0.8 s and elected again; two election timeouts and more show it.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let cfg = c
            .channel_config(&ch, CHANNEL_TYPE_GROUP)
            .await
            .expect("channel config");
        assert_eq!(
            (cfg.leader, cfg.term),
            (Some(to), moved.term),
            "the transferred leadership was lost to an election"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(wait_quiet(&c, &ch).await, to);
}

/// Until `online` nodes answer (`/cluster/nodes` through `c`) and none of them leads a channel
/// group: all hibernated.
async fn wait_all_asleep(c: &Client, online: usize, what: &str) {
    wait_until(what, Duration::from_secs(20), || async {
        let nodes = c.nodes().await.map_err(|e| e.to_string())?;
        let led: Vec<(u64, u64)> = nodes
            .nodes
            .iter()
            .filter(|n| n.online)
            .map(|n| (n.id, n.channels_led))
            .collect();
        if led.len() == online && led.iter().all(|(_, n)| *n == 0) {
            Ok(())
        } else {
            Err(format!("(node, channels_led) = {led:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_woken_leader_resumes_its_term_and_yields_to_a_newer_one() {
    let cluster = Cluster::start_with(3, &["--channel-idle-timeout", "300ms"]).await;
    let c = cluster.client();
    let ch = "resume-0".to_string();
    create_groups(&cluster, std::slice::from_ref(&ch), &["u"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acks = write_channel(&c, &ch, "u", 0, 1, deadline).await;
    let config = c.channel_config(&ch, CHANNEL_TYPE_GROUP).await.expect("config");
    let leader = config.leader.expect("a leader after a write");
    let on_leader = cluster.node(leader).client();
    // Through the leader itself, so that its routing serves the channel here first.
    acks.extend(write_channel(&on_leader, &ch, "u", 1, 2, deadline).await);
    let term = c
        .channel_config(&ch, CHANNEL_TYPE_GROUP)
        .await
        .expect("config")
        .term;
    wait_all_asleep(&c, 3, "the channel to hibernate").await;

    tracing::info!("--- wake it on its leader {leader}: led again in term {term}, no election");
    acks.extend(write_channel(&on_leader, &ch, "u", 3, 1, deadline).await);
    let now = c.channel_config(&ch, CHANNEL_TYPE_GROUP).await.expect("config");
    assert_eq!(
        (now.leader, now.term),
        (Some(leader), term),
        "resumed in the same term"
    );
    wait_all_asleep(&c, 3, "the channel to hibernate again").await;

    tracing::info!("--- pause node {leader}; the others wake the channel in a newer term");
    cluster.node(leader).pause();
    let others = cluster.client_excluding(leader);
    acks.extend(write_channel(&others, &ch, "u", 4, 2, deadline).await);
    let newer = others
        .channel_config(&ch, CHANNEL_TYPE_GROUP)
        .await
        .expect("config");
    assert!(newer.term > term, "a newer term without node {leader}: {newer:?}");
    wait_all_asleep(&others, 2, "the channel to hibernate on the others").await;

    tracing::info!(
        "--- resume node {leader} and write through it: it yields to term {}",
        newer.term
    );
    cluster.node(leader).resume();
    acks.extend(write_channel(&on_leader, &ch, "u", 6, 2, deadline).await);
    assert_eq!(
        acks.iter().map(|a| a.resp.message_seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    wait_until(
        "every replica to verify equal",
        Duration::from_secs(30),
        || async {
            let v = c
                .channel_verify(&ch, CHANNEL_TYPE_GROUP)
                .await
                .map_err(|e| e.to_string())?;
            if v.ok && v.common_seq == 8 {
                Ok(())
            } else {
                Err(format!("{v:?}"))
            }
        },
    )
    .await;
    for node in &cluster.nodes {
        let got = read_all(&node.client(), "u", &ch, CHANNEL_TYPE_GROUP, 1000).await;
        check_channel(&format!("node {}", node.id), &ch, &got, &acks);
    }
}
