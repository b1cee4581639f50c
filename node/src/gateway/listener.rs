//! The gateway's TCP and WebSocket listeners and the cap on open client connections.
//!
//! Invariant: at most `max_connections` connections (both listeners together) are open at
//! once; one more is closed right after accept, before any byte is read, and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::transport::Transport;
use super::{CONNECT_TIMEOUT, Shared, conn};
use crate::config::GatewayConfig;
use crate::stats::GATEWAY;

/// Largest WebSocket message: one full packet (1 MiB body) plus room for small ones beside it.
const MAX_WS_MESSAGE: usize = wk_proto::MAX_REMAINING_LENGTH + 64 * 1024;

/// The bound (not yet serving) listeners.
pub struct Listeners {
    tcp: Option<TcpListener>,
    ws: Option<TcpListener>,
}

impl Listeners {
    /// Bind what `cfg` asks for (an address of None is off).
    pub async fn bind(cfg: &GatewayConfig) -> anyhow::Result<Listeners> {
        let bind = |addr: Option<String>, what: &'static str| async move {
            match addr {
                Some(a) => TcpListener::bind(&a)
                    .await
                    .map(Some)
                    .with_context(|| format!("bind {what} address {a}")),
                None => Ok(None),
            }
        };
        Ok(Listeners {
            tcp: bind(cfg.tcp_addr.clone(), "client TCP (--tcp-addr)").await?,
            ws: bind(cfg.ws_addr.clone(), "client WebSocket (--ws-addr)").await?,
        })
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Start the accept loops, owned by `shared.tasks`.
    pub(super) fn serve(self, shared: &Arc<Shared>, max_connections: usize) {
        let limit = Arc::new(Semaphore::new(max_connections));
        if let Some(l) = self.tcp {
            shared
                .tasks
                .spawn(accept_loop(l, shared.clone(), limit.clone(), false));
        }
        if let Some(l) = self.ws {
            shared.tasks.spawn(accept_loop(l, shared.clone(), limit, true));
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, limit: Arc<Semaphore>, ws: bool) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shared.shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "gateway: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            GATEWAY.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "gateway: connection refused, --max-client-connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared2 = shared.clone();
        shared.tasks.spawn(async move {
            let _permit = permit;
            let transport = if ws {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_WS_MESSAGE))
                    .max_frame_size(Some(MAX_WS_MESSAGE));
                let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(config));
                match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                    Ok(Ok(s)) => Transport::Ws(Box::new(s)),
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "gateway: WebSocket handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "gateway: WebSocket handshake timed out");
                        return;
                    }
                }
            } else {
                Transport::Tcp(stream)
            };
            conn::serve(shared2, transport, peer).await;
        });
    }
}
