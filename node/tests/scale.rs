//! Scale-out against real `wknode` processes: join, the sync backlog, the drain,
//! hibernation.
//!
//! - `join_migrates_active_and_backlogs_idle`: 3 nodes with users, channels and messages; a
//!   few channels kept busy by writers, the rest left to hibernate; node 4 started with
//!   `--seed` and admitted with `POST /cluster/join`. Metadata is readable on node 4 at once,
//!   the active channels placed on node 4 replicate to it, the idle ones wait in the backlog,
//!   a send moves a backlogged channel, the drain moves the rest; then every channel has its
//!   placement as replicas, every replica agrees and every acknowledged message is there once.
//! - `drain_resumes_after_restart`: the same, smaller, with a slow drain interrupted by
//!   SIGTERM of all four nodes; after the restart the drain goes on by itself and completes,
//!   and every drained channel takes its next message with the next seq.
//! - `a_drain_goes_on_after_its_coordinator_is_killed`: the metadata leader, which runs the
//!   drain, is SIGKILLed while it moves channels and brought back; the seals it left are
//!   finished or released, the backlog empties, every replica agrees and every channel
//!   takes its next message.
//! - `hibernated_channels_wake_up`: a hibernated channel serves send and messagesync through
//!   its last leader's node and through a follower's; one whose last leader was SIGKILLed
//!   elects another leader when next used.
//!
//! Sizes are scaled down from the issue (500 users, 1,000 channels x 20 messages, 50 active)
//! to 200 users, 160 channels x 5 messages and 16 active (the restart test: 40, 60 x 3, 4),
//! with `--channel-idle-timeout 2s`, so the file runs in a few minutes in a debug build on two
//! cores; the shape (most channels idle and hibernated, a few busy, ~3/4 placed on the new
//! node) is the issue's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::scale::{
    Ack, Population, Problems, WriterReport, Writers, bounded, channels_led, group_ref, placement, populate,
    read_all, send_req, sorted, verify_all, wait_hibernated,
};
use common::{Cluster, retry, wait_until};
use wk_api::{Backlog, BacklogTarget, CHANNEL_TYPE_GROUP, Client, DrainReq, JoinReq, JoinResp, Role};

const IDLE_ARGS: [&str; 2] = ["--channel-idle-timeout", "2s"];
const MEMBERS_AFTER_JOIN: [u64; 4] = [1, 2, 3, 4];
/// How often each writer sends.
const WRITER_PACE: Duration = Duration::from_millis(100);

/// Spawns node 4 with `--seed`, checks it reports `joining`, admits it through node 1 and
/// checks the answer's fixed parts. Returns the answer and how long the join took.
async fn join_node_4(cluster: &mut Cluster) -> (JoinResp, Duration) {
    tracing::info!("--- start node 4 with --seed; it waits in state joining");
    let id = cluster.spawn_seed_node(&IDLE_ARGS).await;
    assert_eq!(id, 4);
    let n4 = cluster.node(4).client();
    let health = retry("node 4 /health", Duration::from_secs(10), || n4.health()).await;
    assert_eq!(
        health.state, "joining",
        "a --seed node without --auto-join waits: {health:?}"
    );

    tracing::info!("--- POST /cluster/join on node 1 for node 4");
    let n4 = cluster.node(4);
    let req = JoinReq {
        node_id: 4,
        cluster_addr: n4.cluster_addr.clone(),
        http_addr: n4.http_addr.clone(),
        wait: true,
    };
    // The join blocks until the node is admitted and the active channels moved.
    let admin = Client::new(
        std::slice::from_ref(&cluster.node(1).http_addr),
        Duration::from_secs(180),
    )
    .expect("client");
    let t = Instant::now();
    let resp = admin
        .join(&req)
        .await
        .unwrap_or_else(|e| panic!("join of node 4 failed: {e}"));
    let took = t.elapsed();
    tracing::info!("join answered after {took:?}: {resp:?}");
    assert_eq!(resp.node_id, 4);
    assert!(
        !resp.voter,
        "with 4 members the metadata keeps 3 voters (odd), so node 4 is a learner: {resp:?}"
    );
    wait_until(
        "node 4 to report state serving",
        Duration::from_secs(10),
        || async {
            let h = cluster
                .node(4)
                .client()
                .health()
                .await
                .map_err(|e| e.to_string())?;
            if h.state == "serving" {
                Ok(())
            } else {
                Err(format!("{h:?}"))
            }
        },
    )
    .await;
    (resp, took)
}

/// The backlog with every entry, read on `c`.
async fn full_backlog(c: &Client) -> Backlog {
    retry("GET /cluster/backlog", Duration::from_secs(20), || {
        c.backlog(10_000)
    })
    .await
}

/// Until the backlog, read on `c`, is empty.
async fn wait_drained(c: &Client, what: &str, timeout: Duration) {
    wait_until(what, timeout, || async {
        let b = c.backlog(0).await.map_err(|e| e.to_string())?;
        if b.total == 0 {
            Ok(())
        } else {
            Err(format!("total {} drain {:?}", b.total, b.drain))
        }
    })
    .await;
}

/// Checks the backlog right after the join: exactly the idle channels placed on node 4, none
/// with node 4 as a replica yet, sized from their stored payloads, nothing at risk.
fn check_backlog_after_join(
    bl: &Backlog,
    idle_to_4: &BTreeSet<String>,
    desired: &BTreeMap<String, Vec<u64>>,
    acks: &BTreeMap<String, Vec<Ack>>,
    problems: &Problems,
) {
    let listed: BTreeSet<String> = bl.entries.iter().map(|e| e.channel_id.clone()).collect();
    assert_eq!(
        bl.total as usize,
        bl.entries.len(),
        "limit 10000 lists every entry"
    );
    if &listed != idle_to_4 {
        let extra: Vec<_> = listed.difference(idle_to_4).collect();
        let missing: Vec<_> = idle_to_4.difference(&listed).collect();
        // Noted, not asserted at once: the rest of the test still says a lot.
        problems.note(format!(
            "the backlog should be exactly the {} idle channels placed on node 4; it has {} (not expected: {extra:?}; missing, i.e. moved although idle: {missing:?})",
            idle_to_4.len(),
            listed.len()
        ));
    }
    let (mut entries, mut bytes) = (0, 0);
    for e in &bl.entries {
        let ch = &e.channel_id;
        assert!(
            !e.replicas.contains(&4),
            "{ch}: backlogged but node 4 is already a replica: {e:?}"
        );
        assert_eq!(sorted(&e.replicas), vec![1, 2, 3], "{ch}: {e:?}");
        assert_eq!(
            e.desired, desired[ch],
            "{ch}: desired is the placement among 1..=4"
        );
        assert_eq!(e.channel_type, CHANNEL_TYPE_GROUP);
        let payload: u64 = acks[ch].iter().map(|a| a.payload.len() as u64).sum();
        problems.check(e.bytes == Some(payload), || {
            format!("{ch}: backlog bytes {:?}, payload stored {payload}", e.bytes)
        });
        problems.check(e.entries.is_some_and(|n| n > 0), || {
            format!("{ch}: backlog entries {:?}", e.entries)
        });
        problems.check(!e.at_risk, || format!("{ch}: at risk with all nodes up: {e:?}"));
        entries += e.entries.unwrap_or(0);
        bytes += e.bytes.unwrap_or(0);
    }
    let want_targets = vec![BacklogTarget {
        node_id: 4,
        channels: bl.total,
        entries,
        bytes,
    }];
    problems.check(bl.targets == want_targets, || {
        format!("backlog targets {:?}, expected {want_targets:?}", bl.targets)
    });
    problems.check(bl.at_risk == 0, || format!("backlog at_risk {}", bl.at_risk));
    problems.check(bl.drain.is_none(), || {
        format!("no drain was requested, yet {:?}", bl.drain)
    });
}

/// Adds the writers' acknowledged messages to `acks`; fails on a writer that gave up.
fn collect_writers(reports: Vec<WriterReport>, acks: &mut BTreeMap<String, Vec<Ack>>) {
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut permanent = Vec::new();
    let mut total = 0;
    for r in reports {
        for (code, n) in &r.errors {
            *errors.entry(code.clone()).or_default() += n;
        }
        if let Some(p) = r.permanent {
            permanent.push(format!("{}: {p}", r.channel_id));
        }
        total += r.acks.len();
        acks.get_mut(&r.channel_id)
            .expect("writer channel was populated")
            .extend(r.acks);
    }
    tracing::info!("writers: {total} messages acknowledged; errors a retry got past: {errors:?}");
    assert!(permanent.is_empty(), "writers gave up: {permanent:?}");
}

/// Sorts each channel's acks by seq (writers, wake-up sends and the first batch interleave).
fn by_seq(acks: &mut BTreeMap<String, Vec<Ack>>) {
    for v in acks.values_mut() {
        v.sort_by_key(|a| a.resp.message_seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_migrates_active_and_backlogs_idle() {
    const USERS: usize = 200;
    const CHANNELS: usize = 160;
    const MESSAGES: usize = 5;
    const ACTIVE: usize = 16;
    const WAKE: usize = 16;
    const DRAIN_RATE: f64 = 200.0;
    let test_start = Instant::now();
    let problems = Problems::default();

    let mut cluster = Cluster::start_with(3, &IDLE_ARGS).await;
    let c = cluster.client();

    tracing::info!("--- {USERS} users, {CHANNELS} channels with {MESSAGES} messages each");
    let Population {
        channels,
        subscribers,
        mut acks,
        ..
    } = populate(&cluster, "j", USERS, CHANNELS, MESSAGES).await;
    // Busy channels are spread over the id range.
    let step = CHANNELS / ACTIVE;
    let active: Vec<String> = channels.iter().step_by(step).take(ACTIVE).cloned().collect();
    let active_set: BTreeSet<&String> = active.iter().collect();
    let idle: Vec<String> = channels
        .iter()
        .filter(|c| !active_set.contains(c))
        .cloned()
        .collect();

    tracing::info!(
        "--- {ACTIVE} writers keep their channels busy; the {} others go idle",
        idle.len()
    );
    let writers = Writers::start(&cluster, &active, &subscribers, WRITER_PACE);
    wait_hibernated(&c, ACTIVE as u64, Duration::from_secs(60)).await;

    let desired: BTreeMap<String, Vec<u64>> = channels
        .iter()
        .map(|ch| (ch.clone(), placement(ch, &MEMBERS_AFTER_JOIN, 3)))
        .collect();
    let active_to_4: Vec<&String> = active.iter().filter(|ch| desired[*ch].contains(&4)).collect();
    let idle_to_4: BTreeSet<String> = idle
        .iter()
        .filter(|ch| desired[*ch].contains(&4))
        .cloned()
        .collect();
    tracing::info!(
        "placement among 1..=4 puts node 4 in {} of {ACTIVE} active and {} of {} idle channels",
        active_to_4.len(),
        idle_to_4.len(),
        idle.len()
    );

    let acked_before_join = writers.acked.load(std::sync::atomic::Ordering::Relaxed);
    let (resp, join_took) = join_node_4(&mut cluster).await;
    tracing::info!(
        "writers acknowledged {} messages during the join",
        writers.acked.load(std::sync::atomic::Ordering::Relaxed) - acked_before_join
    );
    problems.check(resp.backlog == idle_to_4.len() as u64, || {
        format!(
            "join answered backlog {}, idle channels placed on node 4: {}",
            resp.backlog,
            idle_to_4.len()
        )
    });
    // A writer's next send may migrate its channel on demand at the same moment as the join's
    // rebalance (both idempotent; one of the two then reports the work as not its own), so the
    // join's count is at most the placed set; that every active channel placed on node 4 gets
    // it as a replica is checked below.
    problems.check(
        resp.active_migrated <= active_to_4.len() as u64 && resp.active_migrated > 0,
        || {
            format!(
                "join answered active_migrated {}, active channels placed on node 4: {}",
                resp.active_migrated,
                active_to_4.len()
            )
        },
    );

    tracing::info!("--- every channel's record and subscribers are readable on node 4 right after the join");
    let n4 = cluster.node(4).client();
    let t = Instant::now();
    bounded(channels.iter(), 16, |ch| {
        let (n4, problems, subs) = (&n4, &problems, &subscribers[ch]);
        async move {
            match n4.channel_info(&group_ref(ch)).await {
                Ok(info) => problems.check(sorted_strs(&info.subscribers) == sorted_strs(subs), || {
                    format!(
                        "{ch} on node 4: subscribers {:?}, created with {subs:?}",
                        info.subscribers
                    )
                }),
                Err(e) => problems.note(format!("{ch}: /channel/info on node 4 right after the join: {e}")),
            }
        }
    })
    .await;
    tracing::info!("{CHANNELS} channel records read on node 4 in {:?}", t.elapsed());

    tracing::info!(
        "--- the {} active channels placed on node 4 replicate to it with lag 0",
        active_to_4.len()
    );
    let t = Instant::now();
    let late: Vec<String> = bounded(active.iter(), 16, |ch| {
        let (c, want) = (&c, &desired[ch]);
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let last = match c.channel_info(&group_ref(ch)).await {
                    Err(e) => format!("{e}"),
                    Ok(info) if sorted(&info.replicas) != sorted(want) => {
                        format!("replicas {:?}, placement {want:?}", info.replicas)
                    }
                    Ok(_) if !want.contains(&4) => return None,
                    // A writer may have an entry in flight: wait for a moment when node 4 has it all.
                    Ok(_) => match c.channel_replicas(ch, CHANNEL_TYPE_GROUP).await {
                        Ok(r) => match r.replicas.iter().find(|x| x.node_id == 4) {
                            Some(x)
                                if matches!(x.role, Role::Follower | Role::Leader) && x.lag == Some(0) =>
                            {
                                return None;
                            }
                            other => format!("node 4 is {other:?}"),
                        },
                        Err(e) => format!("{e}"),
                    },
                };
                if Instant::now() > deadline {
                    return Some(format!("{ch}: {last}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    })
    .await
    .into_iter()
    .flatten()
    .collect();
    assert!(
        late.is_empty(),
        "active channels not on their placement with node 4 at lag 0 after 60 s: {late:?}"
    );
    tracing::info!(
        "active channels on their placement with node 4 at lag 0 after {:?}",
        t.elapsed()
    );

    tracing::info!(
        "--- the {} idle channels placed on node 4 are in the backlog, without node 4",
        idle_to_4.len()
    );
    let bl = full_backlog(&n4).await;
    check_backlog_after_join(&bl, &idle_to_4, &desired, &acks, &problems);
    bounded(idle_to_4.iter(), 16, |ch| {
        let (n4, problems) = (&n4, &problems);
        async move {
            match n4.channel_info(&group_ref(ch)).await {
                Ok(info) => problems.check(sorted(&info.replicas) == vec![1, 2, 3], || {
                    format!(
                        "{ch}: backlogged, yet its record on node 4 lists replicas {:?}",
                        info.replicas
                    )
                }),
                Err(e) => problems.note(format!("{ch}: /channel/info on node 4: {e}")),
            }
        }
    })
    .await;

    tracing::info!("--- one message to {WAKE} backlogged channels: each migrates, then serves");
    let backlogged: Vec<String> = bl
        .entries
        .iter()
        .map(|e| e.channel_id.clone())
        .filter(|ch| idle_to_4.contains(ch))
        .collect();
    let woken: Vec<String> = backlogged
        .iter()
        .step_by(backlogged.len() / WAKE)
        .take(WAKE)
        .cloned()
        .collect();
    let t = Instant::now();
    let wake_acks: Vec<(String, Ack)> = bounded(woken.iter().enumerate(), 8, |(i, ch)| {
        let (cl, problems, from) = (cluster.client_rotated(i), &problems, subscribers[ch][1].clone());
        async move {
            let cmn = format!("{ch}-wake");
            let payload = format!("wake {ch}").into_bytes();
            let req = send_req(&from, ch, &cmn, &payload);
            let t = Instant::now();
            let resp = match cl.send(&req).await {
                Ok(r) => r,
                Err(e) => {
                    // The migration before the send can outlast one request's deadline on a
                    // loaded machine; the client's retry must then get the message in, once.
                    tracing::warn!(
                        "{ch}: send to a backlogged channel failed after {:?}, retrying: {e}",
                        t.elapsed()
                    );
                    retry(&format!("send {cmn} again"), Duration::from_secs(30), || {
                        cl.send(&req)
                    })
                    .await
                }
            };
            problems.check(resp.message_seq == MESSAGES as u64 + 1, || {
                format!(
                    "{ch}: the wake-up message got seq {}, expected {}",
                    resp.message_seq,
                    MESSAGES + 1
                )
            });
            let took = t.elapsed();
            if took > Duration::from_secs(2) {
                tracing::info!("{ch}: send with migration took {took:?}");
            }
            (
                ch.clone(),
                Ack {
                    from_uid: from,
                    client_msg_no: cmn,
                    payload,
                    resp,
                },
            )
        }
    })
    .await;
    tracing::info!("{WAKE} sends with migration took {:?}", t.elapsed());
    for (ch, a) in wake_acks {
        acks.get_mut(&ch).expect("populated").push(a);
    }
    for ch in &woken {
        let r = group_ref(ch);
        let info = retry(&format!("info of {ch}"), Duration::from_secs(10), || {
            c.channel_info(&r)
        })
        .await;
        problems.check(sorted(&info.replicas) == sorted(&desired[ch]), || {
            format!(
                "{ch}: after a send its replicas are {:?}, placement {:?}",
                info.replicas, desired[ch]
            )
        });
    }
    let bl2 = full_backlog(&c).await;
    let left: BTreeSet<String> = bl2.entries.iter().map(|e| e.channel_id.clone()).collect();
    let want_left: BTreeSet<String> = bl
        .entries
        .iter()
        .map(|e| e.channel_id.clone())
        .filter(|ch| !woken.contains(ch))
        .collect();
    // Noted, not asserted at once: the drain below and the final checks still say a lot.
    problems.check(bl2.total == bl.total - WAKE as u64, || {
        format!(
            "the backlog should shrink by exactly the {WAKE} woken channels: {} -> {}",
            bl.total, bl2.total
        )
    });
    problems.check(left == want_left, || {
        let stayed: Vec<_> = left.difference(&want_left).collect();
        let gone: Vec<_> = want_left.difference(&left).collect();
        format!(
            "backlog after the sends: woken channels still in it {stayed:?}; others that left it {gone:?}"
        )
    });

    tracing::info!("--- drain the remaining {} channels at {DRAIN_RATE}/s", bl2.total);
    retry("POST /cluster/backlog/drain", Duration::from_secs(20), || {
        c.drain(&DrainReq { rate: DRAIN_RATE })
    })
    .await;
    let t = Instant::now();
    wait_drained(&c, "the backlog to be drained", Duration::from_secs(120)).await;
    tracing::info!("drain of {} channels took {:?}", bl2.total, t.elapsed());
    wait_until(
        "the drain request to clear itself",
        Duration::from_secs(15),
        || async {
            let b = c.backlog(0).await.map_err(|e| e.to_string())?;
            if b.drain.is_none() {
                Ok(())
            } else {
                Err(format!("{:?}", b.drain))
            }
        },
    )
    .await;

    tracing::info!("--- stop the writers");
    collect_writers(writers.stop().await, &mut acks);
    by_seq(&mut acks);

    let nodes = retry("/cluster/nodes", Duration::from_secs(10), || c.nodes()).await;
    for n in &nodes.nodes {
        let want = desired.values().filter(|d| d.contains(&n.id)).count() as u64;
        problems.check(n.online && n.channels_replicated == want, || {
            format!(
                "node {}: online {} channels_replicated {}, expected {want}",
                n.id, n.online, n.channels_replicated
            )
        });
    }

    tracing::info!(
        "--- every channel: placement as replicas, replicas agree, every acknowledged message once"
    );
    verify_all(&cluster, &n4, &acks, &MEMBERS_AFTER_JOIN, &problems).await;

    tracing::info!(
        "join took {join_took:?}; whole test {:?}; {} messages checked",
        test_start.elapsed(),
        acks.values().map(Vec::len).sum::<usize>()
    );
    problems.assert_none();
}

fn sorted_strs(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_resumes_after_restart() {
    const USERS: usize = 40;
    const CHANNELS: usize = 60;
    const MESSAGES: usize = 3;
    const ACTIVE: usize = 4;
    const DRAIN_RATE: f64 = 5.0;
    let test_start = Instant::now();
    let problems = Problems::default();

    let mut cluster = Cluster::start_with(3, &IDLE_ARGS).await;
    let c = cluster.client();
    tracing::info!("--- {USERS} users, {CHANNELS} channels with {MESSAGES} messages each");
    let Population {
        channels,
        subscribers,
        mut acks,
        ..
    } = populate(&cluster, "r", USERS, CHANNELS, MESSAGES).await;
    let active: Vec<String> = channels
        .iter()
        .step_by(CHANNELS / ACTIVE)
        .take(ACTIVE)
        .cloned()
        .collect();
    tracing::info!("--- {ACTIVE} writers; the others go idle");
    let writers = Writers::start(&cluster, &active, &subscribers, WRITER_PACE);
    wait_hibernated(&c, ACTIVE as u64, Duration::from_secs(60)).await;

    join_node_4(&mut cluster).await;
    let c = cluster.client();
    let bl0 = full_backlog(&c).await;
    let idle_to_4 = channels
        .iter()
        .filter(|ch| !active.contains(ch) && placement(ch, &MEMBERS_AFTER_JOIN, 3).contains(&4))
        .count() as u64;
    problems.check(bl0.total == idle_to_4, || {
        format!(
            "backlog after the join: {}, idle channels placed on node 4: {idle_to_4}",
            bl0.total
        )
    });
    assert!(
        bl0.total >= 30,
        "the test needs a backlog that takes a while to drain at {DRAIN_RATE}/s: {}",
        bl0.total
    );

    tracing::info!("--- slow drain at {DRAIN_RATE}/s of {} channels", bl0.total);
    retry("POST /cluster/backlog/drain", Duration::from_secs(20), || {
        c.drain(&DrainReq { rate: DRAIN_RATE })
    })
    .await;
    wait_until(
        "the drain to move a few channels",
        Duration::from_secs(30),
        || async {
            let b = c.backlog(0).await.map_err(|e| e.to_string())?;
            if b.total + 3 <= bl0.total {
                Ok(())
            } else {
                Err(format!("total {} drain {:?}", b.total, b.drain))
            }
        },
    )
    .await;
    collect_writers(writers.stop().await, &mut acks);
    by_seq(&mut acks);
    let at_stop = full_backlog(&c).await;
    problems.check(
        at_stop.drain.as_ref().is_some_and(|d| d.rate == DRAIN_RATE),
        || format!("a drain runs, yet the backlog reports {:?}", at_stop.drain),
    );

    tracing::info!(
        "--- SIGTERM all 4 nodes mid-drain ({} of {} channels left)",
        at_stop.total,
        bl0.total
    );
    for (id, status) in cluster.stop_all().await {
        problems.check(status.success(), || {
            format!("node {id} exited with {status} after SIGTERM")
        });
    }
    tracing::info!("--- start all 4 again");
    cluster.spawn_all_and_wait().await;
    let after = full_backlog(&c).await;
    tracing::info!(
        "backlog after the restart: {} (drain {:?})",
        after.total,
        after.drain
    );
    assert!(
        after.total > 0 && after.total <= at_stop.total,
        "after the restart the backlog holds what was left ({}), minus what the drain moved since: {}",
        at_stop.total,
        after.total
    );

    tracing::info!("--- the drain resumes by itself and completes");
    let t = Instant::now();
    wait_drained(
        &c,
        "the resumed drain to empty the backlog",
        Duration::from_secs(90),
    )
    .await;
    tracing::info!("resumed drain finished after {:?}", t.elapsed());

    tracing::info!(
        "--- every channel: placement as replicas, replicas agree, every acknowledged message once"
    );
    verify_all(&cluster, &c, &acks, &MEMBERS_AFTER_JOIN, &problems).await;

    sends_after_the_drain(&cluster, &bl0, &subscribers, &acks, &problems).await;
    tracing::info!("whole test {:?}", test_start.elapsed());
    problems.assert_none();
}

/// Every channel of `backlog` takes its next message, through node 4 first, with the next
/// seq: the drain moved them cold (`cluster::cold`), their groups never ran while they moved.
async fn sends_after_the_drain(
    cluster: &Cluster,
    backlog: &Backlog,
    subscribers: &BTreeMap<String, Vec<String>>,
    acks: &BTreeMap<String, Vec<Ack>>,
    problems: &Problems,
) {
    tracing::info!("--- every drained channel takes its next message, through node 4 first");
    let via_4 = cluster.client_rotated(3);
    let sent = bounded(backlog.entries.iter(), 8, |e| {
        let (ch, via) = (e.channel_id.clone(), via_4.clone());
        let from = subscribers[&ch][0].clone();
        let want = acks[&ch].len() as u64 + 1;
        async move {
            let req = send_req(&from, &ch, &format!("{ch}-after-drain"), b"after the drain");
            let what = format!("send to {ch} after the drain");
            let got = retry(&what, Duration::from_secs(30), || via.send(&req)).await;
            (ch, want, got.message_seq)
        }
    })
    .await;
    for (ch, want, got) in sent {
        problems.check(got == want, || {
            format!("{ch}: the send after the drain got seq {got}, expected {want}")
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_goes_on_after_its_coordinator_is_killed() {
    const USERS: usize = 40;
    const CHANNELS: usize = 120;
    const MESSAGES: usize = 3;
    /// Batches of 10 every 100 ms.
    const DRAIN_RATE: f64 = 100.0;
    let problems = Problems::default();
    let mut cluster = Cluster::start_with(3, &IDLE_ARGS).await;
    let c = cluster.client();
    let Population {
        subscribers, acks, ..
    } = populate(&cluster, "k", USERS, CHANNELS, MESSAGES).await;
    wait_hibernated(&c, 0, Duration::from_secs(60)).await;
    join_node_4(&mut cluster).await;
    let c = cluster.client();
    let bl0 = full_backlog(&c).await;
    assert!(bl0.total >= 30, "a backlog of {} is too small", bl0.total);

    tracing::info!("--- drain at {DRAIN_RATE}/s");
    retry("POST /cluster/backlog/drain", Duration::from_secs(20), || {
        c.drain(&DrainReq { rate: DRAIN_RATE })
    })
    .await;
    // Three times: once a node holds seals (a batch is under way), SIGKILL the metadata
    // leader that runs the drain, and bring it back as an operator would.
    let http = reqwest::Client::new();
    for round in 1..=3 {
        let sealed = async {
            loop {
                for n in (1..=4).filter(|id| cluster.node(*id).is_running()) {
                    let url = cluster.node(n).url("/metrics");
                    let Ok(text) = http.get(&url).send().await.and_then(|r| r.error_for_status()) else {
                        continue;
                    };
                    let text = text.text().await.unwrap_or_default();
                    let held = text
                        .lines()
                        .find_map(|l| l.strip_prefix("wukong_channels_sealed "))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .unwrap_or(0.0);
                    if held > 0.0 {
                        return true;
                    }
                }
                let b = cluster.client_running().backlog(0).await;
                if b.is_ok_and(|b| b.total == 0) {
                    return false;
                }
            }
        };
        let under_way = tokio::time::timeout(Duration::from_secs(60), sealed)
            .await
            .expect("a batch under way or the backlog empty within 60 s");
        if !under_way {
            break;
        }
        let running = cluster.client_running();
        let nodes = retry("/cluster/nodes", Duration::from_secs(10), || running.nodes()).await;
        let Some(coordinator) = nodes.nodes.iter().find(|n| n.role == Role::Leader).map(|n| n.id) else {
            continue;
        };
        tracing::info!(
            "--- round {round}: seals held; SIGKILL node {coordinator}, the metadata leader, and start it again"
        );
        cluster.node_mut(coordinator).kill().await;
        cluster.node_mut(coordinator).restart().await;
    }

    // Seals the killed coordinator left are taken over once stale (10 s) and finished or
    // released; the drain request survives the leader change.
    let t = Instant::now();
    wait_drained(&c, "the drain to empty the backlog", Duration::from_secs(120)).await;
    tracing::info!("the drain finished {:?} after the last kill", t.elapsed());
    let logs: String = (1..=4)
        .map(|id| std::fs::read_to_string(&cluster.node(id).log_path).unwrap_or_default())
        .collect();
    tracing::info!(
        "nodes that came back with seals: {}; stale seals resolved: {}",
        logs.matches("sealed by an unfinished cold migration").count(),
        logs.matches("resolved stale seals").count()
    );
    verify_all(&cluster, &c, &acks, &MEMBERS_AFTER_JOIN, &problems).await;
    sends_after_the_drain(&cluster, &bl0, &subscribers, &acks, &problems).await;
    problems.assert_none();
}

/// Sends one message to `ch` through `via` and checks it gets `want_seq`; a failure is noted
/// and the send retried (same client_msg_no) so the test can go on.
async fn send_one(via: &Client, what: &str, ch: &str, want_seq: u64, problems: &Problems) -> Ack {
    let cmn = format!("{ch}-{want_seq}");
    let payload = format!("{what} {ch}").into_bytes();
    let req = send_req("hu0", ch, &cmn, &payload);
    let t = Instant::now();
    let resp = match via.send(&req).await {
        Ok(r) => r,
        Err(e) => {
            problems.note(format!(
                "{what}: send to {ch} failed after {:?}: {e}",
                t.elapsed()
            ));
            retry(
                &format!("{what}: send {cmn} again"),
                Duration::from_secs(30),
                || via.send(&req),
            )
            .await
        }
    };
    tracing::info!(
        "{what}: send answered in {:?} with seq {}",
        t.elapsed(),
        resp.message_seq
    );
    problems.check(resp.message_seq == want_seq, || {
        format!("{what}: {ch} got seq {}, expected {want_seq}", resp.message_seq)
    });
    Ack {
        from_uid: "hu0".into(),
        client_msg_no: cmn,
        payload,
        resp,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hibernated_channels_wake_up() {
    const MESSAGES: u64 = 3;
    let test_start = Instant::now();
    let problems = Problems::default();
    let mut cluster = Cluster::start_with(3, &IDLE_ARGS).await;
    let c = cluster.client();

    // One channel per case, so each wakes from hibernation exactly once.
    let cases = [
        "send-leader",
        "send-follower",
        "sync-leader",
        "sync-follower",
        "leader-killed",
    ];
    tracing::info!(
        "--- {} channels with {MESSAGES} messages each; note each one's leader",
        cases.len()
    );
    let mut acks: BTreeMap<String, Vec<Ack>> = BTreeMap::new();
    let mut leader_of: BTreeMap<String, u64> = BTreeMap::new();
    for case in cases {
        let ch = format!("h-{case}");
        let create = wk_api::ChannelReq {
            channel_id: ch.clone(),
            channel_type: CHANNEL_TYPE_GROUP,
            subscribers: vec!["hu0".into()],
            reset: 0,
        };
        retry(&format!("create {ch}"), Duration::from_secs(20), || {
            c.channel_create(&create)
        })
        .await;
        let mut v = Vec::new();
        for seq in 1..=MESSAGES {
            let payload = format!("{ch} {seq}").into_bytes();
            let req = send_req("hu0", &ch, &format!("{ch}-{seq}"), &payload);
            let resp = retry(&format!("send to {ch}"), Duration::from_secs(20), || c.send(&req)).await;
            v.push(Ack {
                from_uid: "hu0".into(),
                client_msg_no: req.client_msg_no.clone(),
                payload,
                resp,
            });
        }
        let cfg = retry(&format!("config of {ch}"), Duration::from_secs(10), || {
            c.channel_config(&ch, CHANNEL_TYPE_GROUP)
        })
        .await;
        let leader = cfg
            .leader
            .unwrap_or_else(|| panic!("{ch} has no leader right after sends: {cfg:?}"));
        assert_eq!(sorted(&cfg.replicas), vec![1, 2, 3]);
        tracing::info!("{ch}: leader {leader}");
        leader_of.insert(ch.clone(), leader);
        acks.insert(ch, v);
    }

    tracing::info!("--- wait until every channel hibernated");
    wait_hibernated(&c, 0, Duration::from_secs(30)).await;

    let follower = |ch: &str| -> u64 {
        *[1u64, 2, 3]
            .iter()
            .find(|n| **n != leader_of[ch])
            .expect("a follower")
    };
    for (case, is_send, via_leader) in [
        ("send-leader", true, true),
        ("send-follower", true, false),
        ("sync-leader", false, true),
        ("sync-follower", false, false),
    ] {
        let ch = format!("h-{case}");
        let via_id = if via_leader { leader_of[&ch] } else { follower(&ch) };
        let via = cluster.node(via_id).client();
        tracing::info!(
            "--- hibernated {ch}: {} through node {via_id}",
            if is_send { "send" } else { "messagesync" }
        );
        let t = Instant::now();
        if is_send {
            let a = send_one(&via, case, &ch, MESSAGES + 1, &problems).await;
            acks.get_mut(&ch).expect("created").push(a);
        } else {
            let got = read_all(&via, &ch, 100).await;
            tracing::info!("{case}: messagesync answered in {:?}", t.elapsed());
            if let Err(e) = common::scale::check_messages(&ch, &got, &acks[&ch]) {
                problems.note(format!("{case}: {e}"));
            }
        }
        // The group runs again with a leader (the probe itself would not elect one).
        let cfg = retry(&format!("config of {ch}"), Duration::from_secs(10), || {
            via.channel_config(&ch, CHANNEL_TYPE_GROUP)
        })
        .await;
        problems.check(cfg.leader.is_some(), || {
            format!("{case}: {ch} has no leader right after it served: {cfg:?}")
        });
        let (led, per) = channels_led(&c).await.expect("/cluster/nodes");
        problems.check(led >= 1, || {
            format!("{case}: no channel group runs right after {ch} served: {per:?}")
        });
    }

    tracing::info!("--- wait until they all hibernated again");
    wait_hibernated(&c, 0, Duration::from_secs(30)).await;

    let ch = "h-leader-killed".to_string();
    let dead = leader_of[&ch];
    let meta_leader = cluster.wait_meta_leader().await;
    tracing::info!(
        "--- SIGKILL node {dead}, the last leader of hibernated {ch} (metadata leader: {meta_leader})"
    );
    cluster.node_mut(dead).kill().await;
    let via_id = follower(&ch);
    let via = cluster.node(via_id).client();
    tracing::info!("--- send to {ch} through node {via_id}: a new leader is elected");
    let a = send_one(&via, "leader-killed", &ch, MESSAGES + 1, &problems).await;
    acks.get_mut(&ch).expect("created").push(a);
    let cfg = retry(&format!("config of {ch}"), Duration::from_secs(10), || {
        via.channel_config(&ch, CHANNEL_TYPE_GROUP)
    })
    .await;
    tracing::info!("{ch} after the kill: {cfg:?}");
    problems.check(cfg.leader.is_some_and(|l| l != dead), || {
        format!("{ch}: expected a new leader, not {dead}: {cfg:?}")
    });

    tracing::info!("--- every channel holds every acknowledged message once (through the survivors)");
    let survivors = cluster.client_running();
    for (ch, want) in &acks {
        let got = read_all(&survivors, ch, 100).await;
        if let Err(e) = common::scale::check_messages(ch, &got, want) {
            problems.note(e);
        }
    }
    tracing::info!("whole test {:?}", test_start.elapsed());
    problems.assert_none();
}
