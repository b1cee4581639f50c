//! The two byte transports of a client connection, split into a reading and a writing half.
//!
//! Both carry the same bytes (SPEC §1.5): TCP is a byte stream; on WebSocket the payloads of
//! all data messages (binary or text) are one inbound byte stream, and every outbound frame
//! goes in a binary message of its own (JS SDK 1.0.4 mis-reads two packets in one message).

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Bytes read from a TCP socket at a time.
const READ_CHUNK: usize = 16 * 1024;

type Ws = WebSocketStream<TcpStream>;

/// An accepted, not yet split connection.
pub(super) enum Transport {
    Tcp(TcpStream),
    /// Boxed: the WebSocket state is several times a socket's size.
    Ws(Box<Ws>),
}

impl Transport {
    pub(super) fn split(self) -> (Reader, Writer) {
        match self {
            Transport::Tcp(s) => {
                let (r, w) = s.into_split();
                (Reader::Tcp(r, vec![0; READ_CHUNK]), Writer::Tcp(w))
            }
            Transport::Ws(s) => {
                let (w, r) = (*s).split();
                (Reader::Ws(r, Vec::new()), Writer::Ws(w))
            }
        }
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            Transport::Tcp(_) => "tcp",
            Transport::Ws(_) => "ws",
        }
    }
}

/// The reading half.
pub(super) enum Reader {
    /// The socket and its read buffer.
    Tcp(OwnedReadHalf, Vec<u8>),
    /// The stream and the last message's payload.
    Ws(SplitStream<Ws>, Vec<u8>),
}

impl Reader {
    /// The next bytes the client sent (valid until the next read), `Ok(None)` at the end of
    /// the stream.
    pub(super) async fn read(&mut self) -> std::io::Result<Option<&[u8]>> {
        match self {
            Reader::Tcp(s, buf) => {
                let n = s.read(buf).await?;
                Ok((n > 0).then(|| &buf[..n]))
            }
            Reader::Ws(s, last) => loop {
                match s.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(None),
                    Some(Ok(Message::Binary(b))) => {
                        *last = b.to_vec();
                        return Ok(Some(last));
                    }
                    Some(Ok(Message::Text(t))) => {
                        *last = t.as_bytes().to_vec();
                        return Ok(Some(last));
                    }
                    // Pings are answered by tungstenite itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Err(e)) => return Err(std::io::Error::other(e)),
                }
            },
        }
    }
}

/// The writing half.
pub(super) enum Writer {
    Tcp(OwnedWriteHalf),
    Ws(SplitSink<Ws, Message>),
}

impl Writer {
    /// Write frames, each one whole packet; TCP writes them in one go.
    pub(super) async fn write(&mut self, frames: Vec<Bytes>) -> std::io::Result<()> {
        match self {
            Writer::Tcp(s) => match frames.as_slice() {
                [one] => s.write_all(one).await,
                _ => s.write_all(&frames.concat()).await,
            },
            Writer::Ws(s) => {
                for f in frames {
                    s.feed(Message::Binary(f)).await.map_err(std::io::Error::other)?;
                }
                s.flush().await.map_err(std::io::Error::other)
            }
        }
    }

    /// End the connection from our side (TCP FIN, WebSocket close frame); errors are moot.
    pub(super) async fn close(&mut self) {
        match self {
            Writer::Tcp(s) => {
                let _ = s.shutdown().await;
            }
            Writer::Ws(s) => {
                let _ = s.close().await;
            }
        }
    }
}
