//! What a slow or abusive client can make a node hold, bounded (`config::HttpLimits`):
//! - connections: at most `max_connections` open; one more is answered a canned 503 and closed
//!   at once (waiting in the accept queue would look like a dead node);
//! - slow clients: a request's headers must arrive within `header_timeout` (hyper closes the
//!   connection; this also bounds idle keep-alive connections), its body within `body_timeout`
//!   (408);
//! - work in flight: at most `max_inflight_requests` requests and `max_inflight_sends` sends are
//!   served at once; one more is answered 503 `overloaded` with `retry_after` (body) and
//!   `Retry-After` (header) right away, instead of queueing without bound.
//!
//! `/health` and `/metrics` are exempt from the request limit: they are cheap, and operators
//! need them most when the node is overloaded.
//!
//! With TLS (`--tls-*`) every accepted connection is wrapped in a TLS server session first.
//! The TLS handshake holds a connection slot, so it must finish within `header_timeout` (a
//! client that stalls it is cut like a slow head); a refused connection gets its 503 over TLS.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::ApiErr;
use crate::config::HttpLimits;
use crate::error::NodeError;

/// Seconds an overloaded node asks clients to wait: in-flight work drains in about that long.
pub const RETRY_AFTER_SECS: u64 = 1;
/// How long connections may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused connection is given to send its request and read the 503.
const REFUSE_TIMEOUT: Duration = Duration::from_millis(500);

/// The in-flight counters, shared by every request of a node.
pub struct InFlight {
    requests: Arc<Semaphore>,
    sends: Arc<Semaphore>,
    body_timeout: Duration,
}

impl InFlight {
    pub fn new(limits: &HttpLimits) -> Arc<InFlight> {
        Arc::new(InFlight {
            requests: Arc::new(Semaphore::new(limits.max_inflight_requests)),
            sends: Arc::new(Semaphore::new(limits.max_inflight_sends)),
            body_timeout: limits.body_timeout,
        })
    }
}

/// How long the request's body may take to arrive; read by the `Body` extractor.
#[derive(Clone, Copy)]
pub struct BodyTimeout(pub Duration);

fn overloaded(what: &str) -> Response {
    ApiErr(NodeError::Overloaded {
        what: what.into(),
        retry_after: RETRY_AFTER_SECS,
    })
    .into_response()
}

/// Middleware: take a request slot (and a send slot for sends) or answer 503 at once.
pub async fn shed(State(inflight): State<Arc<InFlight>>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(BodyTimeout(inflight.body_timeout));
    let path = req.uri().path();
    if path == "/health" || path == "/metrics" {
        return next.run(req).await;
    }
    let Ok(_request) = inflight.requests.clone().try_acquire_owned() else {
        return overloaded("requests");
    };
    let _send = if path.starts_with("/message/send") {
        match inflight.sends.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => return overloaded("sends"),
        }
    } else {
        None
    };
    next.run(req).await
}

/// Serve `app` on `listener` (over TLS with `tls`) until `shutdown` resolves, then let open
/// connections finish (bounded by [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &HttpLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let conns = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, typically: back off rather than spin.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream, tls.clone()));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let Some(acceptor) = tls.clone() else {
            let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                // Errors here are the client's (reset, timeout, garbage): nothing to report.
                let _ = conn.await;
                drop(permit);
            });
            continue;
        };
        // Subscribed now, so a shutdown during the handshake still reaches the connection.
        let watcher = graceful.watcher();
        let (http, handshake_timeout) = (http.clone(), limits.header_timeout);
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                // Plain HTTP to the TLS port, an untrusting client, a stalled handshake: the
                // client's problem, and frequent enough that it is not worth a warning.
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "HTTPS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("HTTPS handshake timed out");
                    return;
                }
            };
            let _ = watcher
                .watch(http.serve_connection(TokioIo::new(stream), service))
                .await;
            drop(permit);
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// Answer a connection over the limit with a 503 and close it (after the TLS handshake with
/// `tls`; the whole is bounded by [`REFUSE_TIMEOUT`]). Reads what the client sent first
/// (briefly), so the close does not reset the connection before the answer is read.
async fn refuse(stream: TcpStream, tls: Option<TlsAcceptor>) {
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        match tls {
            None => answer_overloaded(stream).await,
            Some(acceptor) => {
                if let Ok(s) = acceptor.accept(stream).await {
                    answer_overloaded(s).await;
                }
            }
        }
    })
    .await;
}

async fn answer_overloaded(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf).await;
    let body = serde_json::to_string(
        &NodeError::Overloaded {
            what: "connections".into(),
            retry_after: RETRY_AFTER_SECS,
        }
        .to_api(),
    )
    .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {RETRY_AFTER_SECS}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}
