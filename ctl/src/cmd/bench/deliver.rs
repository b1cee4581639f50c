//! `wkctl bench deliver`: live delivery through the client gateway, measured from IM clients
//! that speak WuKongIM's binary protocol (`wk_proto`) over TCP, as the SDKs do.
//!
//! Phases on a local cluster:
//! 1. register `--clients` users (`/user/token`) and create `--groups` groups of `--members`
//!    (group k: users k x members .. in order, wrapping around);
//! 2. connect every user over TCP, round-robin over the nodes' gateways (`/route` of each node);
//! 3. each group's first member sends: `--inflight` SENDs waiting for their SENDACK, or paced
//!    to its share of `--rate` (the groups' ticks evenly out of phase); the payload carries
//!    the send time;
//! 4. every connection answers each RECV with a RECVACK (those of one read in one write) and
//!    times it; after a 1 s warm-up the channel leaders are read (`/cluster/channels/{id}/2/config`) and `--duration` is measured.
//!
//! Deliveries/s counts RECVs received in the window. Latency is RECV arrival minus the send
//! time in the payload, split by whether the receiver is connected to the node that leads the
//! channel (delivered locally) or to another one (one more hop). Every member but the sender
//! should get each message: `deliveries_per_send` near `members - 1` says none went missing.
//! The SENDACK latency (SEND queued to its SENDACK read, on the sender's connection) tells a
//! slow store (quorum commit) from a slow push: a receiver on the leader's node waits for the
//! commit plus the push.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use wk_api::{CHANNEL_TYPE_GROUP, ChannelReq, UserTokenReq};
use wk_proto::packet::{ConnectPacket, RecvPacket, RecvackPacket, SendPacket};
use wk_proto::{
    ChannelType, Decoder, DeviceFlag, Flags, KeyPair, Packet, ProtoVersion, ReasonCode, Session, Setting,
    encode_frame,
};

use super::{LatencySummary, new_histogram, summarize};
use crate::Outcome;
use crate::cli::{BenchDeliverArgs, GlobalArgs};
use crate::output;
use crate::probe::{interrupted, per_endpoint, run_tag};
use crate::wait::retry;

const PREFIX: &str = "dl-";
const WARMUP: Duration = Duration::from_secs(1);
/// The protocol version the clients speak (the newest the gateway knows).
const VERSION: u8 = 5;
/// Setup requests in flight (tokens, groups, connects).
const SETUP_INFLIGHT: usize = 64;
/// After the window: how long receivers keep reading, so late RECVs are acknowledged.
const TAIL: Duration = Duration::from_millis(500);

/// What `bench deliver --output json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliverReport {
    pub clients: u64,
    pub groups: u64,
    pub members: u64,
    pub nodes: u64,
    pub duration_s: f64,
    /// SENDs acknowledged with success in the window, and per second.
    pub sends: u64,
    pub sends_per_s: f64,
    /// SENDACKs with another reason, or connections that failed, in the window.
    pub send_errors: u64,
    /// SEND to its SENDACK (stored on a quorum), as the sender sees it.
    #[serde(default)]
    pub sendack: LatencySummary,
    /// RECVs received in the window, and per second (the figure of merit).
    pub deliveries: u64,
    pub deliveries_per_s: f64,
    /// Deliveries per acknowledged send: `members - 1` when every member got every message.
    pub deliveries_per_send: f64,
    /// Receivers on the node that leads the channel.
    pub leader_node: Receivers,
    /// Receivers on the other nodes.
    pub other_nodes: Receivers,
}

/// Send-to-receive latency of one class of receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receivers {
    pub deliveries: u64,
    pub lat: LatencySummary,
}

pub fn deliver_text(r: &DeliverReport) -> String {
    let class = |c: &Receivers| {
        format!(
            "{} deliveries, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            c.deliveries, c.lat.p50_ms, c.lat.p90_ms, c.lat.p99_ms, c.lat.max_ms
        )
    };
    format!(
        "bench deliver: {} clients over {} nodes, {} groups of {} members, {:.1} s measured\n\n\
         sends:      {} acknowledged ({:.0}/s), {} errors, SENDACK p50 {:.3} ms, p99 {:.3} ms\n\
         deliveries: {} ({:.0}/s), {:.2} per send\n\
         receivers on the channel leader's node: {}\n\
         receivers on other nodes:               {}\n",
        r.clients,
        r.nodes,
        r.groups,
        r.members,
        r.duration_s,
        r.sends,
        r.sends_per_s,
        r.send_errors,
        r.sendack.p50_ms,
        r.sendack.p99_ms,
        r.deliveries,
        r.deliveries_per_s,
        r.deliveries_per_send,
        class(&r.leader_node),
        class(&r.other_nodes),
    )
}

pub async fn run(global: &GlobalArgs, args: BenchDeliverArgs) -> anyhow::Result<Outcome> {
    tokio::select! {
        r = inner(global, args) => r,
        e = interrupted() => Err(e),
    }
}

/// What the receivers and senders share.
struct Ctx {
    /// Time zero of the payloads' send times.
    start: Instant,
    window: (Instant, Instant),
    /// Leader node id of each group, known after the warm-up.
    leaders: OnceLock<Vec<u64>>,
    v: ProtoVersion,
}

impl Ctx {
    fn in_window(&self, t: Instant) -> bool {
        t >= self.window.0 && t < self.window.1
    }
}

/// One connected client.
struct Conn {
    node: u64,
    session: Arc<Session>,
    reader: OwnedReadHalf,
    decoder: Decoder,
    writer: OwnedWriteHalf,
}

/// What one connection's reader counted: latencies in microseconds, put in histograms at the
/// end (a histogram per connection would be a thousand cold ones written in turn).
#[derive(Default)]
struct Counted {
    sends: u64,
    send_errors: u64,
    sendack: Vec<u64>,
    leader: Vec<u64>,
    other: Vec<u64>,
}

async fn inner(global: &GlobalArgs, args: BenchDeliverArgs) -> anyhow::Result<Outcome> {
    eprintln!("wkctl: starting a local {}-node cluster", args.nodes);
    let cluster = super::local_cluster(args.wknode.as_deref(), args.nodes, &[]).await?;
    let admin = super::cluster_client(&cluster, global, Duration::from_secs(10))?;
    let per_node = per_endpoint(&admin)?;

    eprintln!(
        "wkctl: registering {} users, creating {} groups of {}",
        args.clients, args.groups, args.members
    );
    let uid = |i: u64| format!("dl-u{i}");
    let token = |i: u64| format!("dl-t{i}");
    let mut tasks = JoinSet::new();
    for i in 0..args.clients {
        if tasks.len() >= SETUP_INFLIGHT {
            tasks.join_next().await.context("setup task")???;
        }
        let (c, req) = (
            admin.clone(),
            UserTokenReq {
                uid: uid(i),
                token: token(i),
                device_flag: u8::from(DeviceFlag::App),
                device_level: 1,
            },
        );
        tasks.spawn(async move {
            retry("POST /user/token", Duration::from_secs(30), || c.user_token(&req))
                .await
                .map(drop)
        });
    }
    let members = |k: u64| (0..args.members).map(move |m| (k * args.members + m) % args.clients);
    for k in 0..args.groups {
        if tasks.len() >= SETUP_INFLIGHT {
            tasks.join_next().await.context("setup task")???;
        }
        let (c, req) = (
            admin.clone(),
            ChannelReq {
                channel_id: format!("{PREFIX}{k}"),
                channel_type: CHANNEL_TYPE_GROUP,
                subscribers: members(k).map(uid).collect(),
                reset: 0,
            },
        );
        tasks.spawn(async move {
            retry("POST /channel", Duration::from_secs(30), || {
                c.channel_create(&req)
            })
            .await
            .map(drop)
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("setup task")??;
    }

    let mut gateways = Vec::new();
    for (node, c) in (1u64..).zip(&per_node) {
        let route = c
            .route("dl")
            .await
            .with_context(|| format!("GET /route of node {node}"))?;
        if route.tcp_addr.is_empty() {
            bail!("node {node} has no TCP gateway (--tcp-addr off?)");
        }
        gateways.push((node, route.tcp_addr));
    }

    eprintln!("wkctl: connecting {} clients", args.clients);
    let v = ProtoVersion::negotiate(VERSION);
    let mut connecting: JoinSet<anyhow::Result<(u64, Conn)>> = JoinSet::new();
    let mut conns: Vec<Option<Conn>> = (0..args.clients).map(|_| None).collect();
    for i in 0..args.clients {
        if connecting.len() >= SETUP_INFLIGHT {
            let (i, c) = connecting.join_next().await.context("connect task")???;
            conns[i as usize] = Some(c);
        }
        let (node, addr) = gateways[(i % gateways.len() as u64) as usize].clone();
        let (u, t) = (uid(i), token(i));
        connecting.spawn(async move {
            let c = connect(&addr, node, &u, &t, v)
                .await
                .with_context(|| format!("{u} on node {node}"))?;
            anyhow::Ok((i, c))
        });
    }
    while let Some(r) = connecting.join_next().await {
        let (i, c) = r.context("connect task")??;
        conns[i as usize] = Some(c);
    }

    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        start,
        window: (start + WARMUP, start + WARMUP + args.duration),
        leaders: OnceLock::new(),
        v,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let senders: HashMap<u64, u64> = (0..args.groups)
        .map(|k| ((k * args.members) % args.clients, k))
        .collect();
    let tag = run_tag();
    let mut readers = JoinSet::new();
    let mut sending = JoinSet::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let conn = conn.context("a client did not connect")?;
        let permits = Arc::new(Semaphore::new(args.inflight as usize));
        let unacked = Unacked::default();
        let acks = if let Some(&k) = senders.get(&(i as u64)) {
            let (out_tx, out_rx) = mpsc::unbounded_channel();
            tokio::spawn(write_loop(conn.writer, out_rx));
            // Each sender's share of `--rate`, its ticks offset by k/groups of a period, so the
            // groups' sends are spread evenly in time instead of all landing at once.
            let pace = (args.rate > 0.0).then(|| {
                let period = Duration::from_secs_f64(args.groups as f64 / args.rate);
                (period, period.mul_f64(k as f64 / args.groups as f64))
            });
            sending.spawn(send_loop(SendLoop {
                group: k,
                tag: tag.clone(),
                size: args.size as usize,
                pace,
                session: conn.session.clone(),
                permits: permits.clone(),
                unacked: unacked.clone(),
                out: out_tx.clone(),
                ctx: ctx.clone(),
                stop: stop_rx.clone(),
            }));
            Acks::Queued(out_tx)
        } else {
            Acks::Direct(conn.writer)
        };
        readers.spawn(read_loop(ReadLoop {
            node: conn.node,
            session: conn.session,
            reader: conn.reader,
            decoder: conn.decoder,
            permits,
            unacked,
            acks,
            ctx: ctx.clone(),
            stop: stop_rx.clone(),
        }));
    }

    tokio::time::sleep_until((start + WARMUP).into()).await;
    let mut leaders = Vec::new();
    for k in 0..args.groups {
        let config = admin
            .channel_config(&format!("{PREFIX}{k}"), CHANNEL_TYPE_GROUP)
            .await
            .with_context(|| format!("the leader of {PREFIX}{k}"))?;
        leaders.push(config.leader.unwrap_or(0));
    }
    let _ = ctx.leaders.set(leaders);
    eprintln!(
        "wkctl: measuring for {}",
        humantime::format_duration(args.duration)
    );
    tokio::time::sleep_until((ctx.window.1 + TAIL).into()).await;
    let _ = stop_tx.send(true);
    while sending.join_next().await.is_some() {}

    let (mut leader, mut other, mut sendack) = (new_histogram(), new_histogram(), new_histogram());
    let (mut sends, mut send_errors) = (0, 0);
    while let Some(r) = readers.join_next().await {
        let c = r.context("reader task")?;
        sends += c.sends;
        send_errors += c.send_errors;
        for (h, samples) in [
            (&mut sendack, c.sendack),
            (&mut leader, c.leader),
            (&mut other, c.other),
        ] {
            for us in samples {
                h.saturating_record(us.max(1));
            }
        }
    }
    let secs = args.duration.as_secs_f64();
    let deliveries = leader.len() + other.len();
    let report = DeliverReport {
        clients: args.clients,
        groups: args.groups,
        members: args.members,
        nodes: args.nodes,
        duration_s: secs,
        sends,
        sends_per_s: sends as f64 / secs,
        send_errors,
        sendack: summarize(&sendack),
        deliveries,
        deliveries_per_s: deliveries as f64 / secs,
        deliveries_per_send: if sends == 0 {
            0.0
        } else {
            deliveries as f64 / sends as f64
        },
        leader_node: Receivers {
            deliveries: leader.len(),
            lat: summarize(&leader),
        },
        other_nodes: Receivers {
            deliveries: other.len(),
            lat: summarize(&other),
        },
    };
    drop(cluster);
    output::print(global.output, &report, || deliver_text(&report))?;
    Ok(Outcome::Ok)
}

/// CONNECT as `uid` and wait for a successful CONNACK.
async fn connect(addr: &str, node: u64, uid: &str, token: &str, v: ProtoVersion) -> anyhow::Result<Conn> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let keys = KeyPair::generate()?;
    let connect = Packet::Connect(ConnectPacket {
        version: VERSION,
        device_flag: DeviceFlag::App,
        device_id: format!("{uid}-bench"),
        uid: uid.into(),
        token: token.into(),
        client_timestamp: 0,
        client_key: keys.public_key_base64(),
    });
    tcp.write_all(&encode_frame(&connect, v)?).await?;
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 4096];
    let session = loop {
        match decoder.next_packet(v)? {
            Some(Packet::Connack(ack)) if ack.reason_code == ReasonCode::Success => {
                break keys.session(&ack.server_key, &ack.salt)?;
            }
            Some(Packet::Connack(ack)) => bail!("CONNACK {:?}", ack.reason_code),
            Some(other) => bail!("expected CONNACK, got {:?}", other.packet_type()),
            None => {}
        }
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before CONNACK");
        }
        decoder.extend(&buf[..n]);
    };
    let (reader, writer) = tcp.into_split();
    Ok(Conn {
        node,
        session: Arc::new(session),
        reader,
        decoder,
        writer,
    })
}

/// Frames queued for one connection go out in order, bursts in one write.
async fn write_loop(mut w: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut buf = Vec::new();
    while let Some(frame) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&frame);
        while let Ok(more) = rx.try_recv() {
            buf.extend_from_slice(&more);
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
    }
}

struct SendLoop {
    group: u64,
    tag: String,
    size: usize,
    /// Period and phase of the sends at `--rate`.
    pace: Option<(Duration, Duration)>,
    session: Arc<Session>,
    /// One per SEND without its SENDACK yet; the reader gives them back.
    permits: Arc<Semaphore>,
    unacked: Unacked,
    out: mpsc::UnboundedSender<Vec<u8>>,
    ctx: Arc<Ctx>,
    stop: watch::Receiver<bool>,
}

async fn send_loop(mut s: SendLoop) {
    let mut tick = s
        .pace
        .map(|(period, phase)| tokio::time::interval_at((Instant::now() + phase).into(), period));
    let channel_id = format!("{PREFIX}{}", s.group);
    for client_seq in 1u32.. {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let permit = tokio::select! {
            p = s.permits.acquire() => p,
            _ = s.stop.changed() => return,
        };
        let Ok(permit) = permit else { return };
        permit.forget();
        if *s.stop.borrow() {
            return;
        }
        let sent_us = u64::try_from(s.ctx.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut plaintext = vec![b'.'; s.size];
        plaintext[..8].copy_from_slice(&sent_us.to_le_bytes());
        let mut send = SendPacket {
            flags: Flags::default().with_red_dot(true),
            setting: Setting(0),
            client_seq,
            client_msg_no: format!("{}-{}-{client_seq}", s.tag, s.group),
            stream_no: None,
            channel_id: channel_id.clone(),
            channel_type: ChannelType::Group,
            expire: 0,
            msg_key: String::new(),
            topic: None,
            payload: Vec::new(),
        };
        s.session.seal_send(&mut send, &plaintext);
        s.unacked
            .lock()
            .expect("unacked lock")
            .insert(client_seq, Instant::now());
        let Ok(frame) = encode_frame(&Packet::Send(send), s.ctx.v) else {
            return;
        };
        if s.out.send(frame).is_err() {
            return;
        }
    }
}

/// A sender's SENDs without their SENDACK yet, by client_seq, with when they were sent.
type Unacked = Arc<std::sync::Mutex<HashMap<u32, Instant>>>;

/// Where a reader's RECVACKs go.
enum Acks {
    /// A receiver writes them itself, one write for all those of a read.
    Direct(OwnedWriteHalf),
    /// A sender's socket also carries its SENDs: through the connection's write task.
    Queued(mpsc::UnboundedSender<Vec<u8>>),
}

struct ReadLoop {
    node: u64,
    session: Arc<Session>,
    reader: OwnedReadHalf,
    decoder: Decoder,
    permits: Arc<Semaphore>,
    unacked: Unacked,
    acks: Acks,
    ctx: Arc<Ctx>,
    stop: watch::Receiver<bool>,
}

/// Reads until stopped: SENDACKs give their permit back and are counted, RECVs are timed and
/// acknowledged.
async fn read_loop(mut r: ReadLoop) -> Counted {
    let mut counted = Counted::default();
    let mut buf = vec![0u8; 64 << 10];
    let mut acks = Vec::new();
    // Made once, not per read: each would register with the watch channel anew.
    let mut stop = r.stop.clone();
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        acks.clear();
        while let Ok(Some(packet)) = r.decoder.next_packet(r.ctx.v) {
            let now = Instant::now();
            match packet {
                Packet::Sendack(ack) => {
                    r.permits.add_permits(1);
                    let sent = r.unacked.lock().expect("unacked lock").remove(&ack.client_seq);
                    if r.ctx.in_window(now) {
                        if ack.reason_code == ReasonCode::Success {
                            counted.sends += 1;
                            if let Some(t) = sent {
                                let us = u64::try_from(now.duration_since(t).as_micros()).unwrap_or(u64::MAX);
                                counted.sendack.push(us);
                            }
                        } else {
                            counted.send_errors += 1;
                        }
                    }
                }
                Packet::Recv(recv) => {
                    record(&r, &recv, now, &mut counted);
                    let ack = Packet::Recvack(RecvackPacket {
                        flags: recv.flags,
                        message_id: recv.message_id,
                        message_seq: recv.message_seq,
                    });
                    if let Ok(frame) = encode_frame(&ack, r.ctx.v) {
                        acks.extend_from_slice(&frame);
                    }
                }
                _ => {}
            }
        }
        if !acks.is_empty() {
            match &mut r.acks {
                Acks::Direct(w) => {
                    let _ = w.write_all(&acks).await;
                }
                Acks::Queued(out) => {
                    let _ = out.send(acks.clone());
                }
            }
        }
        let n = tokio::select! {
            n = r.reader.read(&mut buf) => n,
            _ = &mut stopped => return counted,
        };
        match n {
            Ok(0) | Err(_) => {
                if r.ctx.in_window(Instant::now()) {
                    counted.send_errors += 1;
                }
                return counted;
            }
            Ok(n) => r.decoder.extend(&buf[..n]),
        }
    }
}

/// Times one RECV that arrived at `now`, if it arrived in the window.
fn record(r: &ReadLoop, recv: &RecvPacket, now: Instant, counted: &mut Counted) {
    if !r.ctx.in_window(now) {
        return;
    }
    let Ok(plaintext) = r.session.open_recv(recv) else {
        return;
    };
    let Some(sent_us) = plaintext
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
    else {
        return;
    };
    let now_us = u64::try_from(now.duration_since(r.ctx.start).as_micros()).unwrap_or(u64::MAX);
    let group = recv
        .channel_id
        .strip_prefix(PREFIX)
        .and_then(|k| k.parse::<usize>().ok());
    let on_leader = r
        .ctx
        .leaders
        .get()
        .zip(group)
        .and_then(|(l, k)| l.get(k))
        .is_some_and(|&leader| leader == r.node);
    let h = if on_leader {
        &mut counted.leader
    } else {
        &mut counted.other
    };
    h.push(now_us.saturating_sub(sent_us));
}
