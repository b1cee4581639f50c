//! The client gateway end to end: real `wknode` processes, a small IM client built on
//! `wk_proto` (the same codec and crypto the node uses, checked against the real SDK's test
//! vectors), over TCP and WebSocket.
//!
//! What is checked: CONNECT against the token `/user/token` stored, the handshake and
//! `msg_key`, SEND stored through the same path as `/message/send` and acked after the commit
//! (read back over HTTP `/channel/messagesync`), dedup on `client_msg_no`, PING/PONG, refusals
//! (bad token, empty key; a SEND to a group the sender is not in or that was never created, or
//! to a person who blacklisted it), the master-device kick, `/route`, and that bad input (bad msg_key,
//! garbage, truncated packets, a CONNECT flood past `--max-client-connections`) only ever
//! affects its own connection.

mod common;

use std::time::Duration;

use common::im::{ImClient, Io, set_token, tcp_of, ws_of};
use common::{Cluster, unb64, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wk_api::{CHANNEL_TYPE_GROUP, CHANNEL_TYPE_PERSON, ChannelReq, SyncReq};
use wk_proto::packet::ConnectPacket;
use wk_proto::{DeviceFlag, Packet, ProtoVersion, ReasonCode, encode_frame};

/// The payloads of a channel as `login_uid` syncs them over HTTP, with their seqs.
async fn synced(
    cluster: &Cluster,
    login_uid: &str,
    channel_id: &str,
    channel_type: u8,
) -> Vec<(u64, Vec<u8>)> {
    let resp = cluster
        .client()
        .sync(&SyncReq {
            login_uid: login_uid.into(),
            channel_id: channel_id.into(),
            channel_type,
            start_message_seq: 0,
            end_message_seq: 0,
            limit: 100,
            pull_mode: 1,
        })
        .await
        .expect("messagesync");
    resp.messages
        .iter()
        .map(|m| (m.message_seq, unb64(&m.payload)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_websocket_clients_send_through_any_node() {
    let cluster = Cluster::start(3).await;
    set_token(&cluster, "alice", "tok-a", 0).await;
    cluster
        .client()
        .channel_create(&ChannelReq {
            channel_id: "g1".into(),
            channel_type: CHANNEL_TYPE_GROUP,
            subscribers: vec!["alice".into(), "bob".into()],
            reset: 0,
        })
        .await
        .expect("create group");

    tracing::info!("--- TCP, protocol v2, node 1: SEND to a group, read back over HTTP");
    let mut tcp = ImClient::tcp(&tcp_of(&cluster, 1)).await;
    let ack = tcp.connect("alice", "tok-a", "dev-tcp", 2).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    assert_eq!(
        (ack.server_version, ack.node_id),
        (None, None),
        "v2 CONNACK shape"
    );
    assert_eq!(ack.salt.len(), 16);
    let text = br#"{"type":1,"content":"hello over tcp"}"#;
    let (id, seq, reason) = tcp
        .send(tcp.seal(1, "cmn-1", "g1", CHANNEL_TYPE_GROUP, text))
        .await;
    assert_eq!((seq, reason), (1, ReasonCode::Success));
    assert!(id > 0);
    assert_eq!(
        synced(&cluster, "bob", "g1", CHANNEL_TYPE_GROUP).await,
        vec![(1, text.to_vec())]
    );

    tracing::info!("--- a resend after a reconnect (same client_msg_no) is the same message");
    let (id2, seq2, reason) = tcp
        .send(tcp.seal(2, "cmn-1", "g1", CHANNEL_TYPE_GROUP, text))
        .await;
    assert_eq!((id2, seq2, reason), (id, 1, ReasonCode::Success));

    tracing::info!("--- PING is answered with PONG");
    tcp.send_packet(&Packet::Ping).await;
    assert_eq!(tcp.recv().await, Some(Packet::Pong));

    tracing::info!("--- WebSocket, protocol v5, node 2: SEND to a person channel");
    let mut ws = ImClient::ws(&ws_of(&cluster, 2)).await;
    let ack = ws.connect("alice", "tok-a", "dev-ws", 5).await;
    assert_eq!(ack.reason_code, ReasonCode::Success, "{ack:?}");
    assert_eq!(
        (ack.server_version, ack.node_id),
        (Some(5), Some(2)),
        "v5 CONNACK shape"
    );
    let text = br#"{"type":1,"content":"hi bob"}"#;
    let (_, seq, reason) = ws
        .send(ws.seal(1, "cmn-ws-1", "bob", CHANNEL_TYPE_PERSON, text))
        .await;
    assert_eq!((seq, reason), (1, ReasonCode::Success));
    // Bob reads the person channel under alice's uid, as in WuKongIM.
    assert_eq!(
        synced(&cluster, "bob", "alice", CHANNEL_TYPE_PERSON).await,
        vec![(1, text.to_vec())]
    );
    tracing::info!("--- two SENDs in one WebSocket message (JS SDK 1.3 batches them)");
    let mut both = encode_frame(
        &Packet::Send(ws.seal(2, "cmn-ws-2", "bob", CHANNEL_TYPE_PERSON, text)),
        ws.v,
    )
    .expect("encode");
    both.extend(
        encode_frame(
            &Packet::Send(ws.seal(3, "cmn-ws-3", "bob", CHANNEL_TYPE_PERSON, text)),
            ws.v,
        )
        .expect("encode"),
    );
    ws.write_raw(&both).await;
    let mut acks = Vec::new();
    for _ in 0..2 {
        match ws.recv().await {
            Some(Packet::Sendack(a)) => acks.push((a.client_seq, a.reason_code)),
            other => panic!("want SENDACK, got {other:?}"),
        }
    }
    acks.sort_by_key(|a| a.0);
    assert_eq!(acks, vec![(2, ReasonCode::Success), (3, ReasonCode::Success)]);
    // The TCP connection was not kicked: a slave login (level 0) on another device. It got
    // alice's three person messages as her other device (`deliver.rs` checks delivery).
    for want in 1..=3 {
        assert_eq!(tcp.expect_recv(true).await.0.message_seq, want);
    }
    let (_, seq, _) = tcp
        .send(tcp.seal(3, "cmn-2", "g1", CHANNEL_TYPE_GROUP, text))
        .await;
    assert_eq!(seq, 2);

    tracing::info!("--- /route answers the asked node's gateway");
    let http = reqwest::Client::new();
    let route: wk_api::RouteResp = http
        .get(cluster.node(2).url("/route?uid=alice"))
        .send()
        .await
        .expect("GET /route")
        .json()
        .await
        .expect("route JSON");
    assert_eq!(route.tcp_addr, tcp_of(&cluster, 2));
    assert_eq!(route.ws_addr, format!("ws://{}", ws_of(&cluster, 2)));
    assert_eq!(route.wss_addr, "");
    let batch: Vec<wk_api::RouteBatchItem> = http
        .post(cluster.node(3).url("/route/batch"))
        .json(&["alice", "bob"])
        .send()
        .await
        .expect("POST /route/batch")
        .json()
        .await
        .expect("route batch JSON");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].uids, vec!["alice", "bob"]);
    assert_eq!(batch[0].route.ws_addr, format!("ws://{}", ws_of(&cluster, 3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_or_key_gets_its_reason_and_a_close() {
    let cluster = Cluster::start(1).await;
    set_token(&cluster, "carol", "right", 0).await;
    let addr = tcp_of(&cluster, 1);

    for (uid, token, version) in [("carol", "wrong", 2), ("nobody", "right", 4), ("", "right", 2)] {
        tracing::info!("--- CONNECT uid={uid:?} token={token:?} v{version}");
        let mut c = ImClient::tcp(&addr).await;
        let ack = c.connect(uid, token, "d", version).await;
        assert_eq!(ack.reason_code, ReasonCode::AuthFail, "{ack:?}");
        assert_eq!((ack.server_key.as_str(), ack.salt.as_str()), ("", ""));
        let v4 = version >= 4;
        assert_eq!(ack.server_version.is_some(), v4, "{ack:?}");
        assert_eq!(c.recv().await, None, "the refused connection is closed");
    }

    tracing::info!("--- an empty client key");
    let mut c = ImClient::tcp(&addr).await;
    c.send_packet(&Packet::Connect(ConnectPacket {
        version: 2,
        device_flag: DeviceFlag::Web,
        device_id: "d".into(),
        uid: "carol".into(),
        token: "right".into(),
        client_timestamp: 0,
        client_key: String::new(),
    }))
    .await;
    match c.recv().await {
        Some(Packet::Connack(a)) => assert_eq!(a.reason_code, ReasonCode::ClientKeyIsEmpty),
        other => panic!("want CONNACK, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);

    tracing::info!("--- a first packet that is not CONNECT closes the connection");
    let mut c = ImClient::tcp(&addr).await;
    c.send_packet(&Packet::Ping).await;
    assert_eq!(c.recv().await, None);

    tracing::info!("--- the right token still works");
    let mut c = ImClient::tcp(&addr).await;
    assert_eq!(
        c.connect("carol", "right", "d", 2).await.reason_code,
        ReasonCode::Success
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_msg_key_is_refused_on_that_connection_only() {
    let cluster = Cluster::start(1).await;
    set_token(&cluster, "dave", "t", 0).await;
    set_token(&cluster, "erin", "t", 0).await;
    let addr = tcp_of(&cluster, 1);
    let mut bad = ImClient::tcp(&addr).await;
    let mut good = ImClient::ws(&ws_of(&cluster, 1)).await;
    assert_eq!(
        bad.connect("dave", "t", "d1", 2).await.reason_code,
        ReasonCode::Success
    );
    assert_eq!(
        good.connect("erin", "t", "d2", 3).await.reason_code,
        ReasonCode::Success
    );

    tracing::info!("--- a SEND with a wrong msg_key, and a signed one whose payload is not base64");
    let mut p = bad.seal(1, "x1", "erin", CHANNEL_TYPE_PERSON, b"{}");
    p.msg_key = "0".repeat(32);
    assert_eq!(bad.send(p).await.2, ReasonCode::PayloadDecodeError);
    let mut p = bad.seal(2, "x2", "erin", CHANNEL_TYPE_PERSON, b"{}");
    p.payload = b"!not base64!".to_vec();
    p.msg_key = bad
        .session
        .as_ref()
        .expect("connected")
        .msg_key(&wk_proto::crypto::send_sign(&p));
    assert_eq!(bad.send(p).await.2, ReasonCode::PayloadDecodeError);
    assert!(
        synced(&cluster, "erin", "dave", CHANNEL_TYPE_PERSON)
            .await
            .is_empty(),
        "nothing stored"
    );

    tracing::info!("--- the other connection, and the refused one, keep working");
    let (_, seq, reason) = good
        .send(good.seal(1, "y1", "dave", CHANNEL_TYPE_PERSON, b"{\"type\":1}"))
        .await;
    assert_eq!((seq, reason), (1, ReasonCode::Success));
    assert_eq!(bad.expect_recv(true).await.0.client_msg_no, "y1");
    let (_, seq, reason) = bad
        .send(bad.seal(3, "x3", "erin", CHANNEL_TYPE_PERSON, b"{\"type\":1}"))
        .await;
    assert_eq!((seq, reason), (2, ReasonCode::Success));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_master_login_kicks_the_first() {
    let cluster = Cluster::start(1).await;
    set_token(&cluster, "frank", "t", 1).await;
    let addr = tcp_of(&cluster, 1);
    let mut first = ImClient::tcp(&addr).await;
    assert_eq!(
        first.connect("frank", "t", "tab-1", 2).await.reason_code,
        ReasonCode::Success
    );
    let mut second = ImClient::ws(&ws_of(&cluster, 1)).await;
    assert_eq!(
        second.connect("frank", "t", "tab-2", 5).await.reason_code,
        ReasonCode::Success
    );
    match first.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, ReasonCode::ConnectKick, "{d:?}"),
        other => panic!("want DISCONNECT, got {other:?}"),
    }
    assert_eq!(first.recv().await, None, "the kicked connection is closed");
    let (_, seq, reason) = second
        .send(second.seal(1, "k1", "g", CHANNEL_TYPE_PERSON, b"{}"))
        .await;
    assert_eq!((seq, reason), (1, ReasonCode::Success));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_connect_floods_leave_the_node_up() {
    let cluster = Cluster::start_with(1, &["--max-client-connections", "40"]).await;
    set_token(&cluster, "gina", "t", 0).await;
    let addr = tcp_of(&cluster, 1);
    let mut witness = ImClient::tcp(&addr).await;
    assert_eq!(
        witness.connect("gina", "t", "w", 4).await.reason_code,
        ReasonCode::Success
    );

    tracing::info!("--- garbage: an unknown packet type, a length over 4 bytes, an oversized body");
    for bytes in [
        vec![0x00, 0x01, 0x02],
        vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x01],
        vec![0x10, 0x80, 0x80, 0xc1, 0x00],
    ] {
        let mut c = ImClient::tcp(&addr).await;
        c.write_raw(&bytes).await;
        assert_eq!(c.recv().await, None, "{bytes:02x?} closes the connection");
    }
    tracing::info!("--- garbage after CONNECT, and a truncated CONNECT cut off by the client");
    let mut c = ImClient::ws(&ws_of(&cluster, 1)).await;
    assert_eq!(
        c.connect("gina", "t", "g2", 2).await.reason_code,
        ReasonCode::Success
    );
    c.write_raw(&[0x30, 0x03, 0x00, 0x00, 0x00]).await; // a SEND body ending inside client_seq
    assert_eq!(c.recv().await, None);
    let mut c = TcpStream::connect(&addr).await.expect("connect");
    c.write_all(&[0x10, 0x64, 0x02, 0x01]).await.expect("write");
    drop(c);

    tracing::info!("--- a flood of CONNECTs, past --max-client-connections");
    // Silent connections hold their slots until the CONNECT timeout, so the cap is reached.
    let mut idle = Vec::new();
    for _ in 0..45 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    let floods = (0..120).map(|i| {
        let addr = addr.clone();
        tokio::spawn(async move {
            let Ok(s) = TcpStream::connect(&addr).await else {
                return;
            };
            let mut c = ImClient::new(Io::Tcp(s));
            let connect = ConnectPacket {
                version: 2,
                device_flag: DeviceFlag::Web,
                device_id: format!("f{i}"),
                uid: "gina".into(),
                token: "wrong".into(),
                client_timestamp: 0,
                client_key: c.keys.public_key_base64(),
            };
            if let Ok(frame) = encode_frame(&Packet::Connect(connect), ProtoVersion::V2)
                && let Io::Tcp(s) = &mut c.io
            {
                let _ = s.write_all(&frame).await;
                let mut buf = [0u8; 256];
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            }
        })
    });
    for f in futures::future::join_all(floods).await {
        f.expect("flood task");
    }
    drop(idle);

    tracing::info!("--- the node is up, the witness connection works, a new one is accepted");
    let (_, seq, reason) = witness
        .send(witness.seal(1, "w1", "hal", CHANNEL_TYPE_PERSON, b"{}"))
        .await;
    assert_eq!((seq, reason), (1, ReasonCode::Success));
    let mut late = wait_until("a new connection is accepted", Duration::from_secs(10), || {
        let addr = addr.clone();
        async move {
            let mut c = ImClient::tcp(&addr).await;
            c.send_packet(&Packet::Connect(ConnectPacket {
                version: 2,
                device_flag: DeviceFlag::Web,
                device_id: "late".into(),
                uid: "gina".into(),
                token: "t".into(),
                client_timestamp: 0,
                client_key: c.keys.public_key_base64(),
            }))
            .await;
            match c.recv().await {
                Some(Packet::Connack(a)) if a.reason_code == ReasonCode::Success => {
                    c.session = Some(
                        c.keys
                            .session(&a.server_key, &a.salt)
                            .map_err(|e| e.to_string())?,
                    );
                    Ok(c)
                }
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let (_, seq, _) = late
        .send(late.seal(1, "l1", "hal", CHANNEL_TYPE_PERSON, b"{}"))
        .await;
    assert_eq!(seq, 2);
    let metrics = reqwest::get(cluster.node(1).url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(
        value("wukong_gateway_refused_total") > 0.0,
        "the cap refused part of the flood"
    );
    assert!(value("wukong_gateway_packets_in_total") >= 4.0);
    assert!(value("wukong_gateway_packets_out_total") >= 4.0);
    assert!(
        value("wukong_gateway_connections") >= 2.0,
        "witness and late are open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_can_be_off_and_silent_connections_time_out() {
    let cluster = Cluster::start_with(1, &["--tcp-addr", "off"]).await;
    assert_eq!(
        cluster.node(1).gateway.0,
        None,
        "the ready line says the TCP gateway is off"
    );
    let route: wk_api::RouteResp = reqwest::get(cluster.node(1).url("/route?uid=ivy"))
        .await
        .expect("GET /route")
        .json()
        .await
        .expect("route JSON");
    assert_eq!(route.tcp_addr, "");
    assert_eq!(route.ws_addr, format!("ws://{}", ws_of(&cluster, 1)));

    tracing::info!("--- a connection that never sends CONNECT is closed after the CONNECT timeout");
    let started = std::time::Instant::now();
    let mut silent = ImClient::ws(&ws_of(&cluster, 1)).await;
    assert_eq!(silent.recv().await, None);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "closed after {took:?}, want about 4 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_the_sender_may_not_make_gets_its_reason() {
    let cluster = Cluster::start(1).await;
    set_token(&cluster, "mallory", "t", 0).await;
    let c = cluster.client();
    c.channel_create(&ChannelReq {
        channel_id: "members-only".into(),
        channel_type: CHANNEL_TYPE_GROUP,
        subscribers: vec!["alice".into()],
        reset: 0,
    })
    .await
    .expect("create group");
    c.sender_list(
        "blacklist_add",
        &wk_api::SenderListReq {
            channel_id: "bob".into(),
            channel_type: CHANNEL_TYPE_PERSON,
            uids: vec!["mallory".into()],
        },
    )
    .await
    .expect("bob blacklists mallory");
    let mut im = ImClient::tcp(&tcp_of(&cluster, 1)).await;
    assert_eq!(
        im.connect("mallory", "t", "m1", 4).await.reason_code,
        ReasonCode::Success
    );

    tracing::info!("--- a group it is not in, a group never created, a person who blacklisted it");
    let cases = [
        ("members-only", CHANNEL_TYPE_GROUP, ReasonCode::SubscriberNotExist),
        (
            "nope-never-created",
            CHANNEL_TYPE_GROUP,
            ReasonCode::ChannelNotExist,
        ),
        ("bob", CHANNEL_TYPE_PERSON, ReasonCode::InBlacklist),
    ];
    for (i, (to, ty, want)) in cases.into_iter().enumerate() {
        let seq = i as u32 + 1;
        let (id, message_seq, reason) = im.send(im.seal(seq, &format!("r{seq}"), to, ty, b"{}")).await;
        assert_eq!((id, message_seq, reason), (0, 0, want), "SEND to {to}");
    }

    tracing::info!("--- nothing was stored, and the connection still sends where it may");
    assert!(
        synced(&cluster, "alice", "members-only", CHANNEL_TYPE_GROUP)
            .await
            .is_empty()
    );
    let (_, seq, reason) = im
        .send(im.seal(9, "ok", "carol", CHANNEL_TYPE_PERSON, b"{\"type\":1}"))
        .await;
    assert_eq!((seq, reason), (1, ReasonCode::Success));
}
