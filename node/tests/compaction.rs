//! The metadata group's log stays bounded: it takes snapshots and purges its log behind them
//! (docs/ARCHITECTURE.md, "Raft groups"), and a node that needs purged entries gets the
//! snapshot instead.
//!
//! `metadata_log_is_compacted`: 3 nodes; the same 1,000 users' tokens are updated 200 times,
//! in two rounds of 100. After each round every node's LMDB data file and write-ahead log
//! (`<data-dir>/lmdb/data.mdb`, `<data-dir>/lmdb/wal`) are measured. LMDB reuses a page only
//! once it was freed, so absolute sizes say little: the second round must grow the data dir
//! by far less than the first did (without compaction both rounds add the same ~100,000
//! entries). A follower is killed early in the second round, so it comes back behind the
//! leader's purge point (a lagging replica), and node 4 joins afterwards: both install the
//! snapshot, follow the log, and hold every user's last token.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::scale::bounded;
use common::{Cluster, Node, retry, wait_until};
use wk_api::{Client, JoinReq, UserTokenReq};

const USERS: usize = 1_000;
/// Updates of every user's token per round.
const PER_ROUND: usize = 100;
/// Token updates in flight.
const INFLIGHT: usize = 64;

fn uid(i: usize) -> String {
    format!("cu{i:04}")
}

/// Every token has the same length, so a round rewrites rows of the same size.
fn token(round: usize, k: usize, i: usize) -> String {
    format!("r{round}-{k:03}-{i:04}")
}

/// Bytes of the node's LMDB data file and of its write-ahead log.
fn sizes(node: &Node) -> (u64, u64) {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let lmdb = node.data_dir.join("lmdb");
    (len(&lmdb.join("data.mdb")), len(&lmdb.join("wal")))
}

/// A gauge of the node's `/metrics` without labels.
async fn gauge(node: &Node, name: &str) -> Result<u64, String> {
    let text = reqwest::get(node.url("/metrics"))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| format!("node {}: no {name}", node.id))
}

/// Updates every user's token `PER_ROUND` times through `c` (the metadata leader, so no
/// request is forwarded); the last token of user `i` is `token(round, PER_ROUND - 1, i)`.
async fn round(c: &Client, round: usize) {
    let t = std::time::Instant::now();
    let reqs = (0..PER_ROUND).flat_map(|k| (0..USERS).map(move |i| (k, i)));
    bounded(reqs, INFLIGHT, |(k, i)| async move {
        let req = UserTokenReq {
            uid: uid(i),
            token: token(round, k, i),
            device_flag: 0,
            device_level: 1,
        };
        retry(&format!("token {k}/{i}"), Duration::from_secs(30), || {
            c.user_token(&req)
        })
        .await;
    })
    .await;
    tracing::info!(
        "round {round}: {} token updates in {:.1} s",
        PER_ROUND * USERS,
        t.elapsed().as_secs_f64()
    );
}

/// The users' tokens (device flag 0) in the node's data, read from its `GET /cluster/snapshot`.
async fn tokens_on(node: &Node) -> BTreeMap<String, String> {
    let mut file = Vec::new();
    node.client()
        .snapshot_to(&mut file, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("node {}: snapshot: {e}", node.id));
    let (mut reader, _) = wk_api::snapshot::SnapshotReader::open(file.as_slice()).expect("snapshot header");
    let mut tokens = BTreeMap::new();
    while let Some(row) = reader.next_row().expect("snapshot row") {
        if row.table != "users" {
            continue;
        }
        let user: wknode::meta::User = postcard::from_bytes(&row.value).expect("a user row");
        if let Some(d) = user.devices.get(&0) {
            tokens.insert(user.uid, d.token.clone());
        }
    }
    tokens
}

/// Waits until `node` holds user `i`'s last token for every user.
async fn wait_tokens(node: &Node, last_round: usize) {
    wait_until(
        &format!("node {} to hold every user's last token", node.id),
        Duration::from_secs(60),
        || async {
            let got = tokens_on(node).await;
            let wrong: Vec<usize> = (0..USERS)
                .filter(|i| got.get(&uid(*i)) != Some(&token(last_round, PER_ROUND - 1, *i)))
                .collect();
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} of {USERS} users differ, first {:?}",
                    wrong.len(),
                    wrong.first().map(|i| (uid(*i), got.get(&uid(*i))))
                ))
            }
        },
    )
    .await;
}

/// Waits until the node took (or installed) a snapshot and purged its log behind it.
async fn wait_purged(node: &Node, past: u64) -> u64 {
    wait_until(
        &format!("node {} to purge its metadata log past {past}", node.id),
        Duration::from_secs(60),
        || async {
            let purged = gauge(node, "wukong_meta_purged_index").await?;
            let last = gauge(node, "wukong_meta_last_log_index").await?;
            let snapshot = gauge(node, "wukong_meta_snapshot_index").await?;
            if purged > past && snapshot >= purged {
                Ok(purged)
            } else {
                Err(format!("purged {purged}, snapshot {snapshot}, last {last}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_log_is_compacted() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_meta_leader().await;
    let lc = cluster.node(leader).client();
    let start: Vec<(u64, u64)> = cluster.nodes.iter().map(sizes).collect();

    tracing::info!("--- round 1: {PER_ROUND} updates of {USERS} users' tokens");
    round(&lc, 1).await;
    for node in &cluster.nodes {
        wait_tokens(node, 1).await;
        let purged = wait_purged(node, 0).await;
        let last = gauge(node, "wukong_meta_last_log_index").await.expect("gauge");
        assert!(
            last - purged <= wknode::raft::META_SNAPSHOT_EVERY + wknode::raft::META_LOG_KEPT + 1_000,
            "node {}: the log holds {} entries ({purged}..={last})",
            node.id,
            last - purged
        );
    }
    let after1: Vec<(u64, u64)> = cluster.nodes.iter().map(sizes).collect();

    let follower = if leader == 3 { 2 } else { 3 };
    tracing::info!("--- round 2, node {follower} killed early in it (it comes back behind the purge point)");
    let round1_last = gauge(cluster.node(leader), "wukong_meta_last_log_index")
        .await
        .expect("gauge");
    let c2 = lc.clone();
    let writes = tokio::spawn(async move { round(&c2, 2).await });
    wait_until(
        "round 2 to be 5,000 entries in",
        Duration::from_secs(120),
        || async {
            let last = gauge(cluster.node(leader), "wukong_meta_last_log_index").await?;
            if last > round1_last + 5_000 {
                Ok(())
            } else {
                Err(format!("last {last}"))
            }
        },
    )
    .await;
    cluster.node_mut(follower).kill().await;
    let killed_at = gauge(cluster.node(leader), "wukong_meta_last_log_index")
        .await
        .expect("gauge");
    writes.await.expect("round 2");
    let after2: Vec<(u64, u64)> = cluster.nodes.iter().map(sizes).collect();
    wait_purged(cluster.node(leader), killed_at).await;

    tracing::info!("--- the second round did not grow the data dirs as the first did");
    for (i, node) in cluster.nodes.iter().enumerate() {
        let ((d0, w0), (d1, w1), (d2, w2)) = (start[i], after1[i], after2[i]);
        tracing::info!(
            "node {}: data.mdb {d0} -> {d1} -> {d2}, wal {w0} -> {w1} -> {w2}",
            node.id
        );
        if node.id == follower {
            continue; // killed mid-round
        }
        let (grew1, grew2) = (d1.saturating_sub(d0), d2.saturating_sub(d1));
        assert!(
            grew2 <= grew1 / 4 + (256 << 10),
            "node {}: data.mdb grew {grew1} B in round 1 and {grew2} B in round 2",
            node.id
        );
        // The log file holds one generation (<= 100 ms of appends): bounded by rate, not rounds.
        assert!(
            w2 <= w1.max(1 << 20) * 2,
            "node {}: wal {w1} B after round 1, {w2} B after round 2",
            node.id
        );
    }

    tracing::info!("--- node {follower} restarts behind the leader's purge point and catches up");
    cluster.node_mut(follower).restart().await;
    wait_tokens(cluster.node(follower), 2).await;
    wait_purged(cluster.node(follower), killed_at).await;

    tracing::info!("--- node 4 joins: it installs the snapshot, then follows the log");
    let id = cluster.spawn_seed_node(&[]).await;
    let n4 = cluster.node(id);
    let req = JoinReq {
        node_id: id,
        cluster_addr: n4.cluster_addr.clone(),
        http_addr: n4.http_addr.clone(),
        wait: true,
    };
    let admin = Client::new(
        std::slice::from_ref(&cluster.node(leader).http_addr),
        Duration::from_secs(120),
    )
    .expect("client");
    let resp = admin
        .join(&req)
        .await
        .unwrap_or_else(|e| panic!("join of node {id}: {e}"));
    tracing::info!("join: {resp:?}");
    wait_tokens(cluster.node(id), 2).await;
    assert!(
        gauge(cluster.node(id), "wukong_meta_snapshot_index")
            .await
            .expect("gauge")
            > killed_at,
        "node {id} caught up through a snapshot"
    );

    tracing::info!("--- a write after the join reaches every node");
    let req = UserTokenReq {
        uid: uid(0),
        token: "after-join".into(),
        device_flag: 0,
        device_level: 1,
    };
    retry("token after join", Duration::from_secs(30), || {
        lc.user_token(&req)
    })
    .await;
    for node in &cluster.nodes {
        wait_until(
            &format!("node {} to apply the write after the join", node.id),
            Duration::from_secs(30),
            || async {
                match tokens_on(node).await.get(&uid(0)) {
                    Some(t) if t == "after-join" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
}
