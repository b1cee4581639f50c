//! The wire format of the cluster transport: `u32` big-endian length, then a
//! postcard-encoded [`Frame`]. Frames over [`MAX_FRAME`] close the connection: nothing a peer
//! sends can make us allocate more. One writer task per connection drains its queue and
//! flushes once the queue is empty, so a burst of frames shares a syscall.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::raft::state_machine::SnapshotData;
use crate::raft::{GroupId, NodeId, SnapshotMeta, TypeConfig, Vote};

/// Bumped on any incompatible change to [`Frame`].
pub const PROTOCOL_VERSION: u32 = 3;
/// Large enough for a snapshot of a big channel, small enough to refuse garbage lengths.
pub const MAX_FRAME: usize = 512 << 20;
/// Read buffer of a peer connection: room for a burst of small frames.
pub(super) const READ_BUFFER: usize = 64 << 10;

#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    Append(GroupId, AppendEntriesRequest<TypeConfig>),
    Vote(GroupId, VoteRequest<TypeConfig>),
    PreVote(GroupId, VoteRequest<TypeConfig>),
    Snapshot(
        GroupId,
        Vote,
        SnapshotMeta,
        #[serde(with = "serde_bytes")] SnapshotData,
    ),
    TransferLeader(GroupId, TransferLeaderRequest<TypeConfig>),
    /// An application request, encoded by the cluster layer.
    App(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Node-level liveness probe, answered by the transport itself with [`Reply::Pong`].
    Ping,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    /// `Err` carries the target's reason for refusing the transfer.
    TransferLeader(Result<(), String>),
    App(#[serde(with = "serde_bytes")] Vec<u8>),
    Pong,
}

pub(super) type Nonce = [u8; 16];

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Frame {
    Hello {
        version: u32,
        node_id: NodeId,
        cluster_id: Option<u64>,
        nonce: Nonce,
    },
    Challenge {
        cluster_id: Option<u64>,
        nonce: Nonce,
        proof: Vec<u8>,
    },
    Proof {
        proof: Vec<u8>,
    },
    Request {
        id: u64,
        rpc: Rpc,
    },
    /// `Err` is the remote's error message: the request reached it and failed there.
    Response {
        id: u64,
        result: Result<Reply, String>,
    },
    /// The handshake failed; the reason is for the peer's log.
    Refused {
        reason: String,
    },
}

pub(super) fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut buf = vec![0u8; 4];
    postcard::to_io(frame, &mut buf).expect("writing to a Vec cannot fail");
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf
}

pub(super) async fn read_frame(
    r: &mut (impl AsyncReadExt + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<Frame> {
    let len = r.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    // Grow with the bytes that actually arrive: a length alone must not cost memory.
    buf.clear();
    (&mut *r).take(len as u64).read_to_end(buf).await?;
    if buf.len() != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "frame cut short",
        ));
    }
    postcard::from_bytes(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Drain `rx` into `w`, flushing whenever the queue is empty (so bursts share a syscall).
pub(super) async fn write_loop(w: impl AsyncWriteExt + Unpin, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut w = BufWriter::with_capacity(256 << 10, w);
    while let Some(frame) = rx.recv().await {
        if w.write_all(&frame).await.is_err() {
            return;
        }
        while let Ok(more) = rx.try_recv() {
            if w.write_all(&more).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
}

pub(super) async fn write_frame(w: &mut (impl AsyncWriteExt + Unpin), frame: &Frame) -> std::io::Result<()> {
    w.write_all(&encode_frame(frame)).await?;
    w.flush().await
}

/// as the frames a peer sends on one connection, the way both connection readers do (length,
/// size check, postcard, `Debug` for the log), until the first error. Returns the opaque `App`
/// payloads of requests and replies, which the cluster layer decodes next.
#[doc(hidden)]
pub fn decode_peer_bytes(bytes: &[u8]) -> Vec<Vec<u8>> {
    let (mut r, mut buf, mut apps) = (bytes, Vec::new(), Vec::new());
    while let Ok(frame) = futures::executor::block_on(read_frame(&mut r, &mut buf)) {
        let _ = format!("{frame:?}");
        match frame {
            Frame::Request { rpc: Rpc::App(b), .. }
            | Frame::Response {
                result: Ok(Reply::App(b)),
                ..
            } => apps.push(b),
            _ => {}
        }
    }
    apps
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// In-memory readers need no runtime: a plain executor keeps each case cheap.
    fn run<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    proptest! {
        /// Whatever bytes a peer sends, decoding answers an error or a frame, never a panic,
        /// and memory grows only with the bytes received, whatever length a frame announces.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = postcard::from_bytes::<Frame>(&bytes);
            let mut r = &bytes[..];
            let mut buf = Vec::new();
            let _ = run(read_frame(&mut r, &mut buf));
            prop_assert!(buf.capacity() <= 2 * bytes.len() + 64);
        }

        /// App requests and handshake frames survive the codec unchanged.
        #[test]
        fn frames_round_trip(id in any::<u64>(), body in proptest::collection::vec(any::<u8>(), 0..4096),
                             node in any::<u64>(), cluster in any::<Option<u64>>(), nonce in any::<[u8; 16]>()) {
            for frame in [
                Frame::Request { id, rpc: Rpc::App(body.clone()) },
                Frame::Response { id, result: Ok(Reply::App(body.clone())) },
                Frame::Response { id, result: Err("refused".into()) },
                Frame::Hello { version: PROTOCOL_VERSION, node_id: node, cluster_id: cluster, nonce },
            ] {
                let wire = encode_frame(&frame);
                let mut r = &wire[..];
                let mut buf = Vec::new();
                let back = run(read_frame(&mut r, &mut buf)).expect("decodes");
                prop_assert_eq!(format!("{back:?}"), format!("{frame:?}"));
            }
        }
    }

    #[test]
    fn oversized_lengths_are_refused_without_allocating() {
        let mut wire = ((MAX_FRAME as u32) + 1).to_be_bytes().to_vec();
        wire.extend_from_slice(&[0; 16]);
        let mut r = &wire[..];
        let mut buf = Vec::new();
        let err = run(read_frame(&mut r, &mut buf)).expect_err("too large");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(buf.capacity() < 1024);
    }
}
