//! A minimal IM client of the binary protocol, built on `wk_proto` (the codec and crypto the
//! node uses, checked against the real SDK's test vectors): what an SDK does, step by step.

use std::time::Duration;

use super::Cluster;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use wk_api::UserTokenReq;
use wk_proto::packet::{ConnackPacket, ConnectPacket, RecvPacket, RecvackPacket, SendPacket};
use wk_proto::{
    ChannelType, Decoder, DeviceFlag, Flags, KeyPair, Packet, ProtoVersion, ReasonCode, Session, Setting,
    encode_frame,
};

/// How long the test client waits for any one packet.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// A client connection, TCP or WebSocket.
pub enum Io {
    Tcp(TcpStream),
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// A minimal IM client: what an SDK does, step by step.
pub struct ImClient {
    pub io: Io,
    pub decoder: Decoder,
    pub v: ProtoVersion,
    pub keys: KeyPair,
    /// Set by a successful `connect`.
    pub session: Option<Session>,
    /// What `connect` sends (Web unless changed before).
    pub device_flag: DeviceFlag,
}

impl ImClient {
    pub async fn tcp(addr: &str) -> ImClient {
        let s = TcpStream::connect(addr)
            .await
            .expect("connect to the TCP gateway");
        ImClient::new(Io::Tcp(s))
    }

    pub async fn ws(addr: &str) -> ImClient {
        let s = TcpStream::connect(addr)
            .await
            .expect("connect to the WebSocket gateway");
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), s)
            .await
            .expect("WebSocket handshake");
        ImClient::new(Io::Ws(Box::new(ws)))
    }

    pub fn new(io: Io) -> ImClient {
        ImClient {
            io,
            decoder: Decoder::new(),
            v: ProtoVersion::V2,
            keys: KeyPair::generate().expect("randomness"),
            session: None,
            device_flag: DeviceFlag::Web,
        }
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        match &mut self.io {
            Io::Tcp(s) => s.write_all(bytes).await.expect("write"),
            Io::Ws(s) => s.send(Message::binary(bytes.to_vec())).await.expect("write"),
        }
    }

    pub async fn send_packet(&mut self, p: &Packet) {
        let frame = encode_frame(p, self.v).expect("encode");
        self.write_raw(&frame).await;
    }

    /// The next packet, None once the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(RECV_TIMEOUT, self.recv_inner())
            .await
            .expect("a packet or a close within the timeout")
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self
                .decoder
                .next_packet(self.v)
                .expect("the server sends valid frames")
            {
                return Some(p);
            }
            let bytes = match &mut self.io {
                Io::Tcp(s) => {
                    let mut buf = vec![0; 4096];
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return None,
                        Ok(n) => buf[..n].to_vec(),
                    }
                }
                Io::Ws(s) => match s.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        // One packet per message (SPEC §1.5): the decoder holds nothing else.
                        assert_eq!(self.decoder.buffered(), 0, "a packet spans WebSocket messages");
                        b.to_vec()
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(other)) => panic!("unexpected WebSocket message {other:?}"),
                },
            };
            self.decoder.extend(&bytes);
        }
    }

    /// CONNECT and its CONNACK; on success the session is derived.
    pub async fn connect(&mut self, uid: &str, token: &str, device_id: &str, version: u8) -> ConnackPacket {
        let connect = ConnectPacket {
            version,
            device_flag: self.device_flag,
            device_id: device_id.into(),
            uid: uid.into(),
            token: token.into(),
            client_timestamp: 1_700_000_000_000,
            client_key: self.keys.public_key_base64(),
        };
        self.send_packet(&Packet::Connect(connect)).await;
        self.v = ProtoVersion::negotiate(version);
        let Some(Packet::Connack(ack)) = self.recv().await else {
            panic!("no CONNACK");
        };
        if ack.reason_code == ReasonCode::Success {
            self.session = Some(self.keys.session(&ack.server_key, &ack.salt).expect("session"));
        }
        ack
    }

    /// A SEND of `plaintext` encrypted and signed for this connection.
    pub fn seal(
        &self,
        client_seq: u32,
        client_msg_no: &str,
        channel_id: &str,
        channel_type: u8,
        plaintext: &[u8],
    ) -> SendPacket {
        let session = self.session.as_ref().expect("connected");
        let mut p = SendPacket {
            flags: Flags::default().with_red_dot(true),
            setting: Setting(0),
            client_seq,
            client_msg_no: client_msg_no.into(),
            stream_no: None,
            channel_id: channel_id.into(),
            channel_type: ChannelType::from(channel_type),
            expire: 0,
            msg_key: String::new(),
            topic: None,
            payload: session.encrypt(plaintext),
        };
        p.msg_key = session.msg_key(&wk_proto::crypto::send_sign(&p));
        p
    }

    /// SEND and wait for its SENDACK: (message_id, message_seq, reason).
    pub async fn send(&mut self, p: SendPacket) -> (i64, u32, ReasonCode) {
        let seq = p.client_seq;
        self.send_packet(&Packet::Send(p)).await;
        match self.recv().await {
            Some(Packet::Sendack(a)) => {
                assert_eq!(a.client_seq, seq, "SENDACK for another SEND");
                (a.message_id, a.message_seq, a.reason_code)
            }
            other => panic!("want SENDACK, got {other:?}"),
        }
    }
    /// The next RECV (answering PINGs is not needed: the test client never idles that long),
    /// its msg_key checked and its payload decrypted, acked with RECVACK when `ack`.
    pub async fn expect_recv(&mut self, ack: bool) -> (RecvPacket, Vec<u8>) {
        let p = match self.recv().await {
            Some(Packet::Recv(r)) => r,
            other => panic!("want RECV, got {other:?}"),
        };
        let session = self.session.as_ref().expect("connected");
        assert_eq!(
            p.msg_key,
            session.msg_key(&wk_proto::crypto::recv_sign(&p)),
            "msg_key of the RECV"
        );
        let plain = session.decrypt(&p.payload).expect("RECV payload decrypts");
        if ack {
            let a = RecvackPacket {
                flags: p.flags,
                message_id: p.message_id,
                message_seq: p.message_seq,
            };
            self.send_packet(&Packet::Recvack(a)).await;
        }
        (p, plain)
    }

    /// Nothing arrives before a PING's PONG: no RECV is pending for this connection.
    pub async fn expect_quiet(&mut self) {
        self.send_packet(&Packet::Ping).await;
        assert_eq!(
            self.recv().await,
            Some(Packet::Pong),
            "a packet arrived before the PONG"
        );
    }
}

pub async fn set_token(cluster: &Cluster, uid: &str, token: &str, level: u8) {
    cluster
        .client()
        .user_token(&UserTokenReq {
            uid: uid.into(),
            token: token.into(),
            device_flag: 1,
            device_level: level,
        })
        .await
        .expect("/user/token");
}

pub fn tcp_of(cluster: &Cluster, id: u64) -> String {
    cluster.node(id).gateway.0.clone().expect("TCP gateway on")
}

pub fn ws_of(cluster: &Cluster, id: u64) -> String {
    cluster.node(id).gateway.1.clone().expect("WebSocket gateway on")
}
