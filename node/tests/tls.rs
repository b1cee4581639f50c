//! TLS end to end against real `wknode` processes: a three-node cluster with certificates from a
//! test CA serves sends and syncs over https (forwarded between nodes over mutual TLS), refuses
//! plain http and clients that do not trust its CA, and refuses a node whose certificate comes
//! from another CA while it keeps serving; a partial or broken TLS configuration stops a node
//! at start with exit code 2 and a message that names the flag.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::tls::{Pki, tls_args};
use common::{Cluster, b64, client_for, retry, tail, unb64, wait_until};
use wk_api::{
    CHANNEL_TYPE_GROUP, ChannelReq, Client, ClientError, MessageHeader, PULL_MODE_UP, Security, SendReq,
    SyncReq,
};

const SECRET: &str = "tls-test-secret";

/// One message to each of `channels` through each member (nodes 1-3) in turn (so most are
/// forwarded to the channel's leader over the cluster transport), then each channel read back
/// through another member; returns how many messages were checked.
async fn send_and_sync_everywhere(cluster: &Cluster, round: &str, channels: &[&str]) -> usize {
    let clients: Vec<Client> = (1..=3).map(|id| cluster.node(id).client()).collect();
    let mut checked = 0;
    for (i, ch) in channels.iter().enumerate() {
        let via = &clients[i % clients.len()];
        let payload = format!("{round}-{ch}");
        let req = SendReq {
            header: MessageHeader::default(),
            client_msg_no: format!("{round}-{ch}"),
            from_uid: "alice".into(),
            channel_id: ch.to_string(),
            channel_type: CHANNEL_TYPE_GROUP,
            payload: b64(payload.as_bytes()),
        };
        let ack = retry(&format!("send {round} to {ch}"), Duration::from_secs(15), || {
            via.send(&req)
        })
        .await;
        let reader = &clients[(i + 1) % clients.len()];
        let sync = SyncReq {
            login_uid: "bob".into(),
            channel_id: ch.to_string(),
            channel_type: CHANNEL_TYPE_GROUP,
            start_message_seq: 0,
            end_message_seq: 0,
            limit: 100,
            pull_mode: PULL_MODE_UP,
        };
        let got = retry(&format!("sync {ch}"), Duration::from_secs(15), || {
            reader.sync(&sync)
        })
        .await;
        let m = got
            .messages
            .iter()
            .find(|m| m.message_seq == ack.message_seq)
            .unwrap_or_else(|| panic!("{ch}: seq {} not in {got:?}", ack.message_seq));
        assert_eq!(m.message_id, ack.message_id);
        assert_eq!(unb64(&m.payload), payload.into_bytes());
        checked += 1;
    }
    checked
}

/// A log line of a cluster connection refused for its certificate (other TLS failures, e.g. a
/// dialler that gave up mid-handshake under load, are logged the same way but say otherwise).
fn is_cert_refusal(line: &str) -> bool {
    line.contains("refused a cluster connection")
        && line.contains("TLS handshake")
        && line.contains("certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_cluster_serves_https_and_refuses_strangers() {
    let certs = tempfile::tempdir().expect("cert dir");
    let pki = Pki::new(certs.path(), "cluster");
    let mut cluster = Cluster::start_tls(3, &["--cluster-secret", SECRET], &pki).await;
    let c = cluster.client();

    tracing::info!("--- the ready line and cluster status say TLS is on");
    let log1 = cluster.node(1).log_path.clone();
    assert!(
        std::fs::read_to_string(&log1)
            .expect("node 1 log")
            .contains(r#""tls":true"#),
        "ready line without tls: {}",
        tail(&log1, 20)
    );
    let nodes = c.nodes().await.expect("cluster status over https");
    assert_eq!(
        nodes.security,
        Some(Security {
            tls: true,
            insecure: false
        })
    );
    assert!(nodes.nodes.iter().all(|n| n.online), "{nodes:?}");

    tracing::info!("--- sends and syncs over https, forwarded between nodes over mutual TLS");
    let channels = ["t-a", "t-b", "t-c", "t-d", "t-e", "t-f"];
    for ch in channels {
        c.channel_create(&ChannelReq {
            channel_id: ch.into(),
            channel_type: CHANNEL_TYPE_GROUP,
            subscribers: vec!["alice".into(), "bob".into()],
            reset: 0,
        })
        .await
        .expect("create channel");
    }
    assert_eq!(
        send_and_sync_everywhere(&cluster, "r1", &channels).await,
        channels.len()
    );

    tracing::info!("--- plain http to the TLS port, and https without the CA, are refused");
    let addr = cluster.node(1).http_addr.clone();
    let plain = client_for(std::slice::from_ref(&addr), None).health().await;
    assert!(
        matches!(plain, Err(ClientError::Unreachable(_))),
        "plain http answered: {plain:?}"
    );
    let untrusting = Client::new(&[format!("https://{addr}")], Duration::from_secs(5))
        .expect("client")
        .health()
        .await;
    match untrusting {
        Err(ClientError::Unreachable(e)) => assert!(e.contains("certificate"), "{e}"),
        other => panic!("a client without the CA got {other:?}"),
    }

    tracing::info!("--- a node with a certificate from another CA is refused by its peers");
    let stranger = Pki::new(certs.path(), "stranger");
    let (cert, key) = stranger.node_cert(4);
    // It trusts the cluster's CA, so the refusal is the peers' check of its certificate.
    let mut extra = tls_args(&cert, &key, &pki.ca);
    extra.extend(["--cluster-secret", SECRET, "--auto-join"].map(String::from));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let id = cluster.spawn_seed_node(&extra).await;
    cluster.node_mut(id).tls_ca = Some(stranger.ca.clone());
    wait_until(
        "node 1 to log the refused TLS handshake",
        Duration::from_secs(10),
        || {
            let log = std::fs::read_to_string(&log1).unwrap_or_default();
            async move {
                log.lines()
                    .find(|l| is_cert_refusal(l))
                    .map(|_| ())
                    .ok_or_else(|| "no refusal logged yet".to_string())
            }
        },
    )
    .await;
    let refusal = std::fs::read_to_string(&log1)
        .expect("node 1 log")
        .lines()
        .find(|l| is_cert_refusal(l))
        .map(str::to_string)
        .expect("found above");
    tracing::info!("node 1 logged: {refusal}");
    // The stranger logs why it cannot get in, too.
    let log4 = cluster.node(id).log_path.clone();
    wait_until(
        "node 4 to log that node 1 refused it",
        Duration::from_secs(10),
        || {
            let log = std::fs::read_to_string(&log4).unwrap_or_default();
            async move {
                log.lines()
                    .any(|l| {
                        l.contains("cluster handshake failed") && l.contains("TLS") && l.contains("node 1")
                    })
                    .then_some(())
                    .ok_or_else(|| "not logged yet".to_string())
            }
        },
    )
    .await;
    let health = cluster.node(id).client().health().await.expect("node 4 health");
    assert_eq!(health.state, "joining", "the stranger was admitted: {health:?}");

    tracing::info!("--- the cluster keeps serving meanwhile");
    assert_eq!(
        send_and_sync_everywhere(&cluster, "r2", &channels).await,
        channels.len()
    );
    let nodes = c.nodes().await.expect("cluster status");
    let members: Vec<u64> = nodes.nodes.iter().map(|n| n.id).collect();
    assert_eq!(members, vec![1, 2, 3], "{nodes:?}");
    assert!(nodes.nodes.iter().all(|n| n.online), "{nodes:?}");
    let health = cluster.node(id).client().health().await.expect("node 4 health");
    assert_eq!(health.state, "joining", "the stranger was admitted: {health:?}");
}

/// Runs `wknode` with `args` to completion: (exit code, stderr).
fn wknode(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(common::node_bin())
        .args(args)
        .env_remove("WK_TLS_CERT")
        .env_remove("WK_TLS_KEY")
        .env_remove("WK_TLS_CA")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run wknode");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn partial_or_broken_tls_config_exits_2_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(dir.path(), "cfg");
    let (cert, key) = pki.node_cert(1);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "").expect("write");
    let data = dir.path().join("data");
    let p = |p: &Path| p.display().to_string();
    let (cert, key, ca, garbage, config, data) =
        (p(&cert), p(&key), p(&pki.ca), p(&garbage), p(&config), p(&data));
    let start = [
        "--data-dir",
        &data,
        "--http-addr",
        "127.0.0.1:0",
        "--cluster-addr",
        "127.0.0.1:0",
    ];

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tls-cert", &cert],
            "--tls-cert given without --tls-key and --tls-ca",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &key],
            "--tls-cert and --tls-key given without --tls-ca",
        ),
        (
            vec!["--tls-cert", &garbage, "--tls-key", &key, "--tls-ca", &ca],
            "no PEM certificate",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &cert, "--tls-ca", &ca],
            "no PEM private key",
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-ca",
                "/nonexistent/ca.pem",
            ],
            "--tls-ca /nonexistent/ca.pem",
        ),
    ];
    for (tls, want) in &cases {
        let args: Vec<&str> = start.iter().chain(tls).copied().collect();
        let (code, err) = wknode(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // --check-config reads the same files and reports the same.
        let args: Vec<&str> = ["--check-config", config.as_str()]
            .iter()
            .chain(tls)
            .copied()
            .collect();
        let (code, err) = wknode(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in: {err}");
    }
    assert!(
        !Path::new(&data).exists(),
        "a refused configuration must not create the data dir"
    );

    let (code, out) = wknode(&[
        "--check-config",
        &config,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-ca",
        &ca,
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("TLS                on: HTTPS"), "{out}");
}
