//! Live delivery end to end: real `wknode` processes, IM clients of the binary protocol
//! (`common::im`) on different nodes.
//!
//! What is checked: a message stored by SEND, `/message/send` or `/message/sendbatch` reaches
//! every connection of every subscriber on every node as a RECV sealed for that connection
//! (msg_key checked, payload decrypted); the sending connection gets none, the sender's other
//! device does (RedDot cleared); person channels show the other user's uid; a channel's
//! messages arrive in seq order; RECVACK is accepted; `/user/onlinestatus` follows connects,
//! disconnects and a SIGKILLed node; `/cluster/nodes` counts the connections per node; the
//! delivery metrics count.

mod common;

use std::time::Duration;

use common::im::{ImClient, set_token, tcp_of, ws_of};
use common::{Cluster, b64, wait_until};
use wk_api::{
    CHANNEL_TYPE_GROUP, CHANNEL_TYPE_PERSON, ChannelReq, OnlineStatus, SendBatchReq, SendReq, UserTokenReq,
};
use wk_proto::packet::RecvPacket;
use wk_proto::{DeviceFlag, Packet, ReasonCode};

/// How long the presence directory may take to show a change.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The sorted (uid, device_flag) pairs `/user/onlinestatus` lists for `uids`.
async fn online(client: &wk_api::Client, uids: &[&str]) -> Vec<(String, u8)> {
    let uids: Vec<String> = uids.iter().map(|u| u.to_string()).collect();
    let list: Vec<OnlineStatus> = client.online_status(&uids).await.expect("/user/onlinestatus");
    list.into_iter().map(|s| (s.uid, s.device_flag)).collect()
}

/// Wait until `/user/onlinestatus` (asked of a running node) lists exactly `want`
/// (uid, device flag).
async fn wait_online(cluster: &Cluster, uids: &[&str], want: &[(&str, u8)]) {
    let want: Vec<(String, u8)> = want.iter().map(|(u, f)| (u.to_string(), *f)).collect();
    wait_until(&format!("online: {want:?}"), PRESENCE_TIMEOUT, || async {
        let got = online(&cluster.client_running(), uids).await;
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await
}

/// Check one RECV's visible fields: (from, channel as shown, channel type, red dot).
fn check(r: &RecvPacket, from: &str, channel_id: &str, channel_type: u8, red_dot: bool) {
    assert_eq!(
        (
            r.from_uid.as_str(),
            r.channel_id.as_str(),
            u8::from(r.channel_type),
            r.flags.red_dot()
        ),
        (from, channel_id, channel_type, red_dot),
        "{r:?}"
    );
}

fn http_send(from: &str, channel_id: &str, channel_type: u8, text: &str) -> SendReq {
    SendReq {
        header: Default::default(),
        client_msg_no: String::new(),
        from_uid: from.into(),
        channel_id: channel_id.into(),
        channel_type,
        payload: b64(format!(r#"{{"type":1,"content":"{text}"}}"#).as_bytes()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_every_device_on_every_node() {
    common::init_tracing();
    let mut cluster = Cluster::start(3).await;
    // Level 0: alice's two devices stay connected side by side; one is a web, one an app
    // device, so /user/onlinestatus shows when both nodes announced her.
    set_token(&cluster, "alice", "tok-a", 0).await;
    cluster
        .client()
        .user_token(&UserTokenReq {
            uid: "alice".into(),
            token: "tok-a".into(),
            device_flag: 0,
            device_level: 0,
        })
        .await
        .expect("/user/token");
    set_token(&cluster, "bob", "tok-b", 1).await;
    set_token(&cluster, "carol", "tok-c", 1).await;
    cluster
        .client()
        .channel_create(&ChannelReq {
            channel_id: "team".into(),
            channel_type: CHANNEL_TYPE_GROUP,
            subscribers: vec!["alice".into(), "bob".into(), "carol".into()],
            reset: 0,
        })
        .await
        .expect("create group");

    tracing::info!("--- alice on nodes 1 (TCP) and 2 (WS), bob on node 3 (WS v2), carol on node 2 (TCP v5)");
    let mut alice1 = ImClient::tcp(&tcp_of(&cluster, 1)).await;
    assert_eq!(
        alice1.connect("alice", "tok-a", "a1", 4).await.reason_code,
        ReasonCode::Success
    );
    let mut alice2 = ImClient::ws(&ws_of(&cluster, 2)).await;
    alice2.device_flag = DeviceFlag::App;
    assert_eq!(
        alice2.connect("alice", "tok-a", "a2", 2).await.reason_code,
        ReasonCode::Success
    );
    let mut bob = ImClient::ws(&ws_of(&cluster, 3)).await;
    assert_eq!(
        bob.connect("bob", "tok-b", "b1", 2).await.reason_code,
        ReasonCode::Success
    );
    let mut carol = ImClient::tcp(&tcp_of(&cluster, 2)).await;
    assert_eq!(
        carol.connect("carol", "tok-c", "c1", 5).await.reason_code,
        ReasonCode::Success
    );
    let everyone = ["alice", "bob", "carol", "dave"];
    wait_online(
        &cluster,
        &everyone,
        &[("alice", 0), ("alice", 1), ("bob", 1), ("carol", 1)],
    )
    .await;
    let nodes = cluster.client().nodes().await.expect("/cluster/nodes");
    let conns: Vec<(u64, u64)> = nodes.nodes.iter().map(|n| (n.id, n.connections)).collect();
    assert_eq!(conns, vec![(1, 1), (2, 2), (3, 1)], "connections per node");

    tracing::info!("--- a group SEND reaches the other members and alice's other device, not the sender");
    let text = br#"{"type":1,"content":"hello team"}"#;
    let (id, seq, reason) = alice1
        .send(alice1.seal(1, "m1", "team", CHANNEL_TYPE_GROUP, text))
        .await;
    assert_eq!((seq, reason), (1, ReasonCode::Success));
    for (who, c, red_dot) in [
        ("bob", &mut bob, true),
        ("carol", &mut carol, true),
        ("alice2", &mut alice2, false),
    ] {
        let (r, plain) = c.expect_recv(true).await;
        check(&r, "alice", "team", CHANNEL_TYPE_GROUP, red_dot);
        assert_eq!(
            (r.message_id, r.message_seq, plain.as_slice()),
            (id, 1, &text[..]),
            "{who}"
        );
        assert_eq!(r.client_msg_no, "m1");
    }
    alice1.expect_quiet().await;

    tracing::info!("--- a resent SEND (same client_msg_no) is not pushed again");
    let (id2, _, _) = alice1
        .send(alice1.seal(2, "m1", "team", CHANNEL_TYPE_GROUP, text))
        .await;
    assert_eq!(id2, id);

    tracing::info!(
        "--- a person SEND: the recipient sees the sender's uid, the sender's other device the recipient's"
    );
    let text = br#"{"type":1,"content":"hi alice"}"#;
    let (_, seq, reason) = bob
        .send(bob.seal(1, "p1", "alice", CHANNEL_TYPE_PERSON, text))
        .await;
    assert_eq!((seq, reason), (1, ReasonCode::Success));
    for c in [&mut alice1, &mut alice2] {
        let (r, plain) = c.expect_recv(true).await;
        check(&r, "bob", "bob", CHANNEL_TYPE_PERSON, true);
        assert_eq!(plain, text);
    }
    let text = br#"{"type":1,"content":"hi bob"}"#;
    alice2
        .send(alice2.seal(1, "p2", "bob", CHANNEL_TYPE_PERSON, text))
        .await;
    let (r, _) = bob.expect_recv(true).await;
    check(&r, "alice", "alice", CHANNEL_TYPE_PERSON, true);
    let (r, _) = alice1.expect_recv(true).await;
    check(&r, "alice", "bob", CHANNEL_TYPE_PERSON, false);
    for c in [&mut alice2, &mut bob, &mut carol] {
        c.expect_quiet().await;
    }

    tracing::info!("--- HTTP /message/send and /message/sendbatch are pushed too, to every subscriber");
    cluster
        .client()
        .send(&http_send("bob", "team", CHANNEL_TYPE_GROUP, "from the backend"))
        .await
        .expect("/message/send");
    for c in [&mut alice1, &mut alice2, &mut bob, &mut carol] {
        let (r, _) = c.expect_recv(true).await;
        assert_eq!((r.from_uid.as_str(), r.message_seq), ("bob", 2));
    }
    cluster
        .client()
        .send_batch(&SendBatchReq {
            messages: vec![http_send("carol", "bob", CHANNEL_TYPE_PERSON, "batched")],
        })
        .await
        .expect("/message/sendbatch");
    let (r, _) = bob.expect_recv(true).await;
    // The HTTP header set no RedDot.
    check(&r, "carol", "carol", CHANNEL_TYPE_PERSON, false);
    let (r, _) = carol.expect_recv(true).await;
    check(&r, "carol", "bob", CHANNEL_TYPE_PERSON, false);

    tracing::info!("--- a burst of pipelined SENDs arrives in seq order everywhere");
    const BURST: u32 = 20;
    for i in 0..BURST {
        let p = alice1.seal(
            10 + i,
            &format!("burst-{i}"),
            "team",
            CHANNEL_TYPE_GROUP,
            b"{\"type\":1}",
        );
        alice1.send_packet(&Packet::Send(p)).await;
    }
    for _ in 0..BURST {
        match alice1.recv().await {
            Some(Packet::Sendack(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
            other => panic!("want SENDACK, got {other:?}"),
        }
    }
    for c in [&mut alice2, &mut bob, &mut carol] {
        let seqs: Vec<u32> = {
            let mut v = Vec::new();
            for _ in 0..BURST {
                v.push(c.expect_recv(true).await.0.message_seq);
            }
            v
        };
        assert_eq!(seqs, (3..3 + BURST).collect::<Vec<_>>());
        c.expect_quiet().await;
    }

    tracing::info!("--- the metrics count the pushes and their latency");
    let (mut recvs, mut pushes) = (0.0, 0.0);
    for id in 1..=3 {
        let text = reqwest::get(cluster.node(id).url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0.0)
        };
        recvs += value("wukong_gateway_recvs_total");
        pushes += value("wukong_push_duration_seconds_count");
    }
    // Every RECV read above: 3 + 2 + 2 + 4 + 2 + 3 * BURST.
    assert_eq!(
        recvs,
        f64::from(13 + 3 * BURST),
        "wukong_gateway_recvs_total summed over nodes"
    );
    assert!(pushes > 0.0, "wukong_push_duration_seconds observed");

    tracing::info!("--- a disconnect and a SIGKILLed node leave the directory");
    drop(carol);
    wait_online(&cluster, &everyone, &[("alice", 0), ("alice", 1), ("bob", 1)]).await;
    cluster.node_mut(3).kill().await;
    // Both of alice's entries, though her owner may have changed with the live set.
    wait_online(&cluster, &everyone, &[("alice", 0), ("alice", 1)]).await;
    // Delivery goes on for the survivors.
    cluster
        .client_running()
        .send(&http_send("bob", "team", CHANNEL_TYPE_GROUP, "after the kill"))
        .await
        .expect("/message/send");
    for c in [&mut alice1, &mut alice2] {
        let (r, _) = c.expect_recv(true).await;
        assert_eq!(r.message_seq, 3 + BURST);
    }
}
