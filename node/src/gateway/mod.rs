//! The client gateway: WuKongIM's binary protocol ("wkproto", `wk_proto`) on TCP and
//! WebSocket, so the official IM SDKs connect to any node, authenticate and send.
//!
//! Owns: the two listeners and the cap on open connections (`listener`), the byte transports
//! (`transport`), one task per connection (`conn`), CONNECT authentication (`connect`), SEND
//! (`send`, through the same `api::send_message` as HTTP `/message/send`), and the node's
//! registry of authenticated connections by uid (`registry`), and RECV: pushing committed
//! messages to them, with retries until RECVACK (`deliver`).
//!
//! Invariants:
//! - A connection's first packet is CONNECT, within `CONNECT_TIMEOUT`; nothing else is read
//!   before it is answered. After CONNACK the connection closes when no packet arrives for
//!   `IDLE_TIMEOUT` (the SDKs PING every 60 s).
//! - Whatever a client sends closes at most its own connection, with a logged reason: frames
//!   are decoded by `wk_proto`, which never panics and caps a packet at 1 MiB.
//! - Everything written to a connection goes through its bounded outbox, one writer task per
//!   connection, in order; a frame is encoded for that connection's negotiated version.
//! - A SENDACK is written only after the send returned, i.e. after the quorum commit (or its
//!   failure); SENDs of one connection run concurrently (at most `MAX_SENDS_IN_FLIGHT`) and
//!   each is acked as it completes.
//! - Every task (listeners, connections, their sends) is owned by the `Gateway`: `shutdown`
//!   cancels and joins them.

mod conn;
mod connect;
pub mod deliver;
mod listener;
pub mod registry;
mod send;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Node;
use crate::config::GatewayConfig;
pub use listener::Listeners;
pub use registry::Registry;

/// How long a new connection may take to send CONNECT (WuKongIM: 4 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long an authenticated connection may stay silent (WuKongIM: 3 min; SDKs PING every 60 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Frames waiting to be written to one connection; a client that lets more pile up is too slow.
pub const OUTBOX_CAPACITY: usize = 256;
/// SENDs of one connection in flight at once; more wait (the connection's reads pause).
pub const MAX_SENDS_IN_FLIGHT: usize = 64;
/// How often the un-acked RECVs of every connection are looked at.
const RETRY_SCAN: Duration = Duration::from_secs(5);

/// What every connection task shares.
struct Shared {
    node: Node,
    registry: Arc<Registry>,
    /// Cancelled by `Gateway::shutdown`: listeners stop accepting, connections close.
    shutdown: CancellationToken,
    /// Owns every listener, connection and send task.
    tasks: TaskTracker,
}

/// The running gateway of one node.
pub struct Gateway {
    shared: Arc<Shared>,
    /// Bound TCP address (None: off).
    tcp_addr: Option<SocketAddr>,
    /// Bound WebSocket address (None: off).
    ws_addr: Option<SocketAddr>,
}

impl Gateway {
    /// Serve the bound `listeners` for `node`.
    pub fn start(listeners: Listeners, node: Node, cfg: &GatewayConfig) -> Gateway {
        let shared = Arc::new(Shared {
            registry: node.registry.clone(),
            node,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let (tcp_addr, ws_addr) = (listeners.tcp_addr(), listeners.ws_addr());
        listeners.serve(&shared, cfg.max_connections);
        shared.tasks.spawn(retry_unacked(shared.clone()));
        Gateway {
            shared,
            tcp_addr,
            ws_addr,
        }
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The node's authenticated connections by uid (where a later RECV push looks).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }

    /// What `/route` answers: the advertised addresses of this node's listeners.
    pub fn route(&self, cfg: &crate::config::Config) -> wk_api::RouteResp {
        let advertised = |bound: Option<SocketAddr>, explicit: Option<&str>| {
            bound.map(|b| crate::config::advertised_http(b, &cfg.cluster_addr, explicit))
        };
        wk_api::RouteResp {
            tcp_addr: advertised(self.tcp_addr, cfg.gateway.tcp_advertise.as_deref()).unwrap_or_default(),
            ws_addr: advertised(self.ws_addr, cfg.gateway.ws_advertise.as_deref())
                .map(|a| format!("ws://{a}"))
                .unwrap_or_default(),
            wss_addr: String::new(),
        }
    }

    /// Stop accepting, close every connection, and wait (a little) for their tasks.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("gateway: some connection tasks did not stop within 5 s");
        }
    }
}

/// Push due RECV retries until shutdown (`deliver`).
async fn retry_unacked(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(RETRY_SCAN);
    loop {
        tokio::select! {
            _ = tick.tick() => deliver::retry_due(&shared.registry),
            _ = shared.shutdown.cancelled() => return,
        }
    }
}
