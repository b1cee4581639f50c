//! Conversations against real `wknode` processes (`/conversation/sync`,
//! `/conversations/setUnread|clearUnread|delete`).
//!
//! - `conversations_survive_a_leader_kill`: 3 nodes; users in two groups and two person
//!   channels; messages sent through every node; read positions changed; a sync from a version
//!   returns only what changed after it. Then the node leading the groups' data is SIGKILLed
//!   mid-way, more messages and changes go through the survivors, and every user's sync on
//!   every live node equals a model computed from the acknowledged messages and changes
//!   (unread counts included). A node that joins afterwards answers the same.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Cluster, b64, retry, wait_until};
use wk_api::{
    CHANNEL_TYPE_GROUP, CHANNEL_TYPE_PERSON, ChannelReq, Client, Conversation, ConversationReq,
    ConversationSyncReq, JoinReq, SendReq,
};

const USERS: [&str; 4] = ["ann", "bo", "cy", "dee"];

/// A channel as the test names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Chan {
    Group(&'static str, [&'static str; 3]),
    Person(&'static str, &'static str),
}

impl Chan {
    fn members(&self) -> Vec<&'static str> {
        match self {
            Chan::Group(_, m) => m.to_vec(),
            Chan::Person(a, b) => vec![a, b],
        }
    }

    /// (channel_id, channel_type) as `uid` names it.
    fn seen_by(&self, uid: &str) -> (String, u8) {
        match self {
            Chan::Group(id, _) => (id.to_string(), CHANNEL_TYPE_GROUP),
            Chan::Person(a, b) => (if *a == uid { b } else { a }.to_string(), CHANNEL_TYPE_PERSON),
        }
    }
}

/// What the cluster must answer, from what it acknowledged.
#[derive(Default)]
struct Model {
    /// Per channel: (client_msg_no) of each acknowledged message, by seq - 1.
    msgs: BTreeMap<Chan, Vec<String>>,
    /// (uid, channel) -> (read seq, deleted up to).
    reads: BTreeMap<(String, Chan), (u64, u64)>,
    sent: u64,
}

/// The comparable part of a conversation.
type Row = (String, u8, u64, u64, u64, String);

fn row(c: &Conversation) -> Row {
    (
        c.channel_id.clone(),
        c.channel_type,
        c.unread,
        c.last_msg_seq,
        c.readed_to_msg_seq,
        c.last_client_msg_no.clone(),
    )
}

impl Model {
    fn last(&self, ch: &Chan) -> u64 {
        self.msgs.get(ch).map_or(0, |m| m.len() as u64)
    }

    fn expected(&self, uid: &str) -> BTreeSet<Row> {
        let mut out = BTreeSet::new();
        for (ch, msgs) in &self.msgs {
            if !ch.members().contains(&uid) || msgs.is_empty() {
                continue;
            }
            let last = msgs.len() as u64;
            let (read, deleted) = self
                .reads
                .get(&(uid.to_string(), ch.clone()))
                .copied()
                .unwrap_or((0, 0));
            if last <= deleted {
                continue;
            }
            let (id, t) = ch.seen_by(uid);
            out.insert((
                id,
                t,
                last.saturating_sub(read),
                last,
                read,
                msgs[last as usize - 1].clone(),
            ));
        }
        out
    }

    fn read_mut(&mut self, uid: &str, ch: &Chan) -> &mut (u64, u64) {
        self.reads.entry((uid.to_string(), ch.clone())).or_default()
    }
}

/// Send one message from `from` to `ch` through `client`, retrying with the same
/// client_msg_no until it is acknowledged; the model learns it.
async fn send(model: &mut Model, client: &Client, from: &'static str, ch: &Chan) {
    model.sent += 1;
    let (channel_id, channel_type) = ch.seen_by(from);
    let req = SendReq {
        header: Default::default(),
        client_msg_no: format!("m{}", model.sent),
        from_uid: from.into(),
        channel_id,
        channel_type,
        payload: b64(format!("hello {}", model.sent).as_bytes()),
    };
    let resp = retry("a send", Duration::from_secs(30), || client.send(&req)).await;
    let msgs = model.msgs.entry(ch.clone()).or_default();
    msgs.push(req.client_msg_no.clone());
    assert_eq!(resp.message_seq, msgs.len() as u64, "{ch:?}: seqs are contiguous");
    let last = msgs.len() as u64;
    let r = model.read_mut(from, ch);
    r.0 = r.0.max(last);
}

enum Edit {
    Clear,
    SetUnread(u64),
    Delete,
}

async fn edit(model: &mut Model, client: &Client, uid: &'static str, ch: &Chan, e: Edit) {
    let (channel_id, channel_type) = ch.seen_by(uid);
    let mut req = ConversationReq {
        uid: uid.into(),
        channel_id,
        channel_type,
        ..Default::default()
    };
    let verb = match e {
        Edit::Clear => "clearUnread",
        Edit::SetUnread(n) => {
            req.unread = n;
            "setUnread"
        }
        Edit::Delete => "delete",
    };
    retry(verb, Duration::from_secs(30), || {
        client.conversation_edit(verb, &req)
    })
    .await;
    let last = model.last(ch);
    let r = model.read_mut(uid, ch);
    match e {
        Edit::Clear => r.0 = last,
        Edit::SetUnread(n) => r.0 = last.saturating_sub(n),
        Edit::Delete => *r = (r.0.max(last), last),
    }
}

fn sync_req(uid: &str, version: u64) -> ConversationSyncReq {
    ConversationSyncReq {
        uid: uid.into(),
        version,
        last_msg_seqs: String::new(),
        msg_count: 1,
    }
}

/// Every user's sync on `client` equals the model (waits for replication to settle).
async fn check_all(model: &Model, client: &Client, on: &str) {
    for uid in USERS {
        let want = model.expected(uid);
        wait_until(
            &format!("{uid}'s conversations on {on} to match the model"),
            Duration::from_secs(20),
            || async {
                let got = client
                    .conversation_sync(&sync_req(uid, 0))
                    .await
                    .map_err(|e| e.to_string())?;
                for c in &got {
                    if c.recents.len() != 1 || c.recents[0].client_msg_no != c.last_client_msg_no {
                        return Err(format!("recents of {c:?} are not its last message"));
                    }
                    if c.recents[0].channel_id != c.channel_id {
                        return Err(format!("a recent message names another channel: {c:?}"));
                    }
                }
                let got: BTreeSet<Row> = got.iter().map(row).collect();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("got {got:?}, want {want:?}"))
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conversations_survive_a_leader_kill() {
    let mut cluster = Cluster::start(3).await;
    let g1 = Chan::Group("g1", ["ann", "bo", "cy"]);
    let g2 = Chan::Group("g2", ["bo", "cy", "dee"]);
    let p1 = Chan::Person("ann", "bo");
    let p2 = Chan::Person("cy", "dee");
    let admin = cluster.client();
    for ch in [&g1, &g2] {
        let (id, _) = ch.seen_by("");
        let req = ChannelReq {
            channel_id: id,
            channel_type: CHANNEL_TYPE_GROUP,
            subscribers: ch.members().iter().map(|s| s.to_string()).collect(),
            reset: 0,
        };
        retry("create a group", Duration::from_secs(20), || {
            admin.channel_create(&req)
        })
        .await;
    }
    let mut model = Model::default();

    tracing::info!("--- messages through every node, then read positions change");
    let rounds: [(&'static str, &Chan); 8] = [
        ("ann", &g1),
        ("bo", &g1),
        ("cy", &g2),
        ("dee", &g2),
        ("ann", &p1),
        ("bo", &p1),
        ("cy", &p2),
        ("ann", &g1),
    ];
    for (k, (from, ch)) in rounds.iter().enumerate() {
        let client = cluster.node((k % 3) as u64 + 1).client();
        send(&mut model, &client, from, ch).await;
    }
    edit(&mut model, &cluster.node(2).client(), "bo", &g1, Edit::Clear).await;
    edit(&mut model, &cluster.node(3).client(), "dee", &p2, Edit::Delete).await;
    edit(
        &mut model,
        &cluster.node(1).client(),
        "cy",
        &g2,
        Edit::SetUnread(1),
    )
    .await;
    for n in 1..=3 {
        check_all(&model, &cluster.node(n).client(), &format!("node {n}")).await;
    }

    tracing::info!("--- a sync from a version returns only what changed after it");
    let all = admin.conversation_sync(&sync_req("cy", 0)).await.expect("sync");
    let versions: Vec<u64> = all.iter().map(|c| c.version).collect();
    assert!(
        versions.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {versions:?}"
    );
    let top = versions[0];
    assert!(
        admin
            .conversation_sync(&sync_req("cy", top))
            .await
            .expect("sync")
            .is_empty(),
        "nothing changed after the newest version"
    );
    send(&mut model, &admin, "ann", &g1).await;
    let changed = admin.conversation_sync(&sync_req("cy", top)).await.expect("sync");
    assert_eq!(
        changed.iter().map(|c| c.channel_id.as_str()).collect::<Vec<_>>(),
        ["g1"],
        "only g1 changed: {changed:?}"
    );
    assert!(changed[0].version > top);

    tracing::info!("--- a deleted conversation comes back with the next message");
    assert!(model.expected("dee").iter().all(|r| r.0 != "cy"));
    send(&mut model, &admin, "cy", &p2).await;
    assert!(model.expected("dee").iter().any(|r| r.0 == "cy" && r.2 == 1));
    check_all(&model, &admin, "any node").await;

    tracing::info!("--- SIGKILL the node leading g1's data, mid-way");
    let cfg = retry("g1's config", Duration::from_secs(10), || {
        admin.channel_config("g1", CHANNEL_TYPE_GROUP)
    })
    .await;
    let victim = cfg.leader.expect("g1 has a leader");
    cluster.node_mut(victim).kill().await;
    let survivors: Vec<u64> = (1..=3).filter(|n| *n != victim).collect();
    let live = cluster.client_excluding(victim);
    let later: [(&'static str, &Chan); 6] = [
        ("cy", &g1),
        ("bo", &g2),
        ("bo", &p1),
        ("dee", &p2),
        ("ann", &g1),
        ("dee", &g2),
    ];
    for (k, (from, ch)) in later.iter().enumerate() {
        let client = cluster.node(survivors[k % 2]).client();
        send(&mut model, &client, from, ch).await;
    }
    edit(&mut model, &live, "ann", &g1, Edit::SetUnread(2)).await;
    edit(&mut model, &live, "bo", &p1, Edit::Clear).await;
    for n in &survivors {
        check_all(&model, &cluster.node(*n).client(), &format!("survivor {n}")).await;
    }

    tracing::info!("--- a node that joins afterwards answers the same");
    let joined = cluster.spawn_seed_node(&[]).await;
    let via = survivors[0];
    let req = JoinReq {
        node_id: joined,
        cluster_addr: cluster.node(joined).cluster_addr.clone(),
        http_addr: cluster.node(joined).http_addr.clone(),
        wait: true,
    };
    let joiner = Client::new(
        std::slice::from_ref(&cluster.node(via).http_addr),
        Duration::from_secs(120),
    )
    .expect("client");
    retry("the join", Duration::from_secs(120), || joiner.join(&req)).await;
    check_all(
        &model,
        &cluster.node(joined).client(),
        &format!("joined node {joined}"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_conversation_requests_are_4xx() {
    let cluster = Cluster::start(1).await;
    let c = cluster.client();
    let req = ChannelReq {
        channel_id: "g".into(),
        channel_type: CHANNEL_TYPE_GROUP,
        subscribers: vec!["ann".into()],
        reset: 0,
    };
    retry("create a group", Duration::from_secs(20), || {
        c.channel_create(&req)
    })
    .await;
    for (what, req) in [
        ("no uid", sync_req("", 0)),
        (
            "a bad last_msg_seqs",
            ConversationSyncReq {
                last_msg_seqs: "g:2".into(),
                ..sync_req("ann", 0)
            },
        ),
        (
            "too many recents",
            ConversationSyncReq {
                msg_count: 100_000,
                ..sync_req("ann", 0)
            },
        ),
    ] {
        let e = common::api_error(c.conversation_sync(&req).await);
        assert_eq!(e.status, 400, "{what}: {e:?}");
    }
    assert!(
        c.conversation_sync(&sync_req("nobody", 0))
            .await
            .expect("sync")
            .is_empty()
    );
    let edit = |uid: &str, id: &str| ConversationReq {
        uid: uid.into(),
        channel_id: id.into(),
        channel_type: CHANNEL_TYPE_GROUP,
        ..Default::default()
    };
    let e = common::api_error(c.conversation_edit("clearUnread", &edit("ann", "nope")).await);
    assert_eq!(e.status, 404, "{e:?}");
    let e = common::api_error(c.conversation_edit("delete", &edit("zed", "g")).await);
    assert_eq!(e.status, 403, "{e:?}");
    c.conversation_edit("setUnread", &edit("ann", "g"))
        .await
        .expect("a member may");
}
