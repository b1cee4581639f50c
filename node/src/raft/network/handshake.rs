//! Who is on the other end of a peer connection. Every connection starts with a mutual
//! challenge-response: `Hello` (version, node id, cluster id, client nonce) -> `Challenge`
//! (server's cluster id and nonce, HMAC-SHA256 of both nonces under the cluster secret) ->
//! `Proof` (the client's HMAC). The secret never crosses the wire. A peer of another protocol
//! version, another cluster id or without the secret is refused and logged. A node that has no
//! cluster id yet (one started with `--seed`) adopts its first authenticated peer's.
//!
//! With TLS (`--tls-*`, `crate::tls`) each connection is mutual TLS first: the accepting node
//! requires a client certificate from the CA, the connecting node verifies the accepting one's
//! certificate against the CA and the host of the address it dialled. The handshake above then
//! runs inside TLS, and the frames are unchanged. A TLS failure (wrong CA, name mismatch, a
//! plain-TCP peer) is logged on both sides like a refused cluster handshake and counts as a
//! failed connection the same way: the call is `Unreachable`, a ping that meets it declares the
//! peer down, exactly as a wrong secret does.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::frame::{Frame, Nonce, PROTOCOL_VERSION, read_frame, write_frame};
use super::{NodeId, ReadHalf, Transport, WriteHalf};

pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

fn nonce() -> Nonce {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).expect("the OS random source is available");
    n
}

/// HMAC-SHA256 over a role tag and both nonces, so a proof cannot be replayed in the other
/// direction or on another connection.
fn proof(secret: &[u8], role: &[u8], first: &Nonce, second: &Nonce) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(role);
    mac.update(first);
    mac.update(second);
    mac
}

pub(super) fn refused(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg)
}

impl Transport {
    /// Check a peer's cluster id against ours, adopting it if we have none.
    pub(super) fn agree_cluster(&self, peer: NodeId, theirs: Option<u64>) -> std::io::Result<()> {
        let mut ours = self.cluster_id.lock().expect("cluster id lock poisoned");
        match (*ours, theirs) {
            (Some(a), Some(b)) if a != b => Err(refused(format!(
                "node {peer} belongs to cluster {b:016x}, this node to {a:016x}"
            ))),
            (None, Some(b)) => {
                *ours = Some(b);
                drop(ours);
                tracing::info!(cluster_id = %format!("{b:016x}"), from = peer, "adopted the cluster id");
                if let Some(f) = self.on_adopt.get() {
                    f(b);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The client half of the handshake, on a fresh connection to `target`.
    async fn client_handshake(
        &self,
        target: NodeId,
        stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    ) -> std::io::Result<()> {
        use hmac::Mac;
        let mine = nonce();
        write_frame(
            stream,
            &Frame::Hello {
                version: PROTOCOL_VERSION,
                node_id: self.node_id,
                cluster_id: self.cluster_id(),
                nonce: mine,
            },
        )
        .await?;
        let mut buf = Vec::new();
        let (cluster_id, theirs, server_proof) = match read_frame(stream, &mut buf).await? {
            Frame::Challenge {
                cluster_id,
                nonce,
                proof,
            } => (cluster_id, nonce, proof),
            Frame::Refused { reason } => return Err(refused(format!("node {target} refused us: {reason}"))),
            other => return Err(refused(format!("node {target} answered {other:?}"))),
        };
        proof(&self.secret, b"server", &mine, &theirs)
            .verify_slice(&server_proof)
            .map_err(|_| refused(format!("node {target} does not know the cluster secret")))?;
        self.agree_cluster(target, cluster_id)?;
        let p = proof(&self.secret, b"client", &theirs, &mine)
            .finalize()
            .into_bytes()
            .to_vec();
        write_frame(stream, &Frame::Proof { proof: p }).await
    }

    /// The server half: answers who the peer is once it proved it knows the secret.
    async fn server_handshake(
        &self,
        stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    ) -> std::io::Result<NodeId> {
        use hmac::Mac;
        let mut buf = Vec::new();
        let (version, peer, cluster_id, theirs) = match read_frame(stream, &mut buf).await? {
            Frame::Hello {
                version,
                node_id,
                cluster_id,
                nonce,
            } => (version, node_id, cluster_id, nonce),
            other => return Err(refused(format!("expected Hello, got {other:?}"))),
        };
        let mismatch = match (self.cluster_id(), cluster_id) {
            _ if version != PROTOCOL_VERSION => Some(format!(
                "protocol version {version}, this node speaks {PROTOCOL_VERSION}"
            )),
            (Some(a), Some(b)) if a != b => {
                Some(format!("cluster id {b:016x} is not this cluster ({a:016x})"))
            }
            _ => None,
        };
        if let Some(reason) = mismatch {
            // Told to the peer for its log, then logged here.
            let _ = write_frame(
                stream,
                &Frame::Refused {
                    reason: reason.clone(),
                },
            )
            .await;
            return Err(refused(format!("node {peer}: {reason}")));
        }
        let mine = nonce();
        let p = proof(&self.secret, b"server", &theirs, &mine)
            .finalize()
            .into_bytes()
            .to_vec();
        write_frame(
            stream,
            &Frame::Challenge {
                cluster_id: self.cluster_id(),
                nonce: mine,
                proof: p,
            },
        )
        .await?;
        let client_proof = match read_frame(stream, &mut buf).await? {
            Frame::Proof { proof } => proof,
            other => return Err(refused(format!("node {peer}: expected Proof, got {other:?}"))),
        };
        proof(&self.secret, b"client", &mine, &theirs)
            .verify_slice(&client_proof)
            .map_err(|_| refused(format!("node {peer} does not know the cluster secret")))?;
        self.agree_cluster(peer, cluster_id)?;
        Ok(peer)
    }

    /// The connecting side of a new connection to `target` at `addr`: TLS (when configured),
    /// then the cluster handshake; the halves of the authenticated stream.
    pub(super) async fn open(
        &self,
        target: NodeId,
        addr: &str,
        mut tcp: TcpStream,
    ) -> std::io::Result<(ReadHalf, WriteHalf)> {
        let Some(tls) = &self.tls else {
            self.client_handshake(target, &mut tcp).await?;
            let (r, w) = tcp.into_split();
            return Ok((Box::new(r), Box::new(w)));
        };
        let name = crate::tls::server_name(addr)?;
        let mut stream = tls
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| refused(format!("TLS handshake with node {target} at {addr}: {e}")))?;
        // In TLS 1.3 the peer checks our certificate after our side of the handshake is done:
        // its refusal arrives as an alert on the first read, here.
        self.client_handshake(target, &mut stream).await.map_err(|e| {
            let alert = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some();
            if alert {
                refused(format!("TLS with node {target} at {addr}: {e}"))
            } else {
                e
            }
        })?;
        let (r, w) = tokio::io::split(stream);
        Ok((Box::new(r), Box::new(w)))
    }

    /// The accepting side: TLS (when configured), then the cluster handshake; the peer's id
    /// and the halves of the authenticated stream.
    pub(super) async fn accept(&self, mut tcp: TcpStream) -> std::io::Result<(NodeId, ReadHalf, WriteHalf)> {
        let Some(tls) = &self.tls else {
            let peer = self.server_handshake(&mut tcp).await?;
            let (r, w) = tcp.into_split();
            return Ok((peer, Box::new(r), Box::new(w)));
        };
        let mut stream = tls
            .acceptor
            .accept(tcp)
            .await
            .map_err(|e| refused(format!("TLS handshake: {e}")))?;
        let peer = self.server_handshake(&mut stream).await?;
        let (r, w) = tokio::io::split(stream);
        Ok((peer, Box::new(r), Box::new(w)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_secret_role_and_nonces() {
        use hmac::Mac;
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let p = |secret: &[u8], role: &[u8], x: &Nonce, y: &Nonce| {
            proof(secret, role, x, y).finalize().into_bytes()
        };
        assert_eq!(p(b"s", b"client", &a, &b), p(b"s", b"client", &a, &b));
        assert_ne!(p(b"s", b"client", &a, &b), p(b"t", b"client", &a, &b));
        assert_ne!(p(b"s", b"client", &a, &b), p(b"s", b"server", &a, &b));
        assert_ne!(p(b"s", b"client", &a, &b), p(b"s", b"client", &b, &a));
    }
}
