//! `wknode`: a WuKong HA cluster node.
//!
//! Owns: the node's LMDB store (`store`, the only module that touches heed), the Raft
//! plumbing shared by all groups (`raft`), the pure apply logic of the metadata group
//! (`meta`) and of channel groups (`channel`), the runtime that starts groups and routes
//! requests to their leaders (`cluster`), the WuKongIM-compatible HTTP API (`api`), the
//! counters and histograms behind `/metrics` (`stats`), backup/restore (`snapshot`), the
//! optional TLS of the HTTP and cluster listeners (`tls`), and the client gateway that
//! speaks WuKongIM's binary protocol to the IM SDKs on TCP and WebSocket (`gateway`).
//! Depends on the shared wire types (`wk-api`) but nothing in `ctl` or `tui`.
//!
//! A message's path: HTTP `/message/send` on any node -> `cluster::route` finds the channel
//! leader (locally or over the cluster transport) -> openraft appends it to the leader's log
//! and replicates it -> each replica's writer thread fsyncs the batch holding it -> once a
//! quorum has it, the leader applies it (seq assigned, dedup checked) and answers.

pub mod api;
pub mod background;
pub mod channel;
pub mod check;
pub mod cluster;
pub mod config;
pub mod error;
pub mod gateway;
pub mod integrity;
pub mod meta;
pub mod raft;
pub mod sched;
pub mod snapshot;
pub mod stats;
pub mod store;
pub mod tls;

use anyhow::Context;
use tokio::net::TcpListener;

/// Bind, start the node, print the ready line, serve until SIGTERM/SIGINT.
pub async fn run(cfg: config::Config) -> anyhow::Result<()> {
    check_exposure(&cfg)?;
    let cluster_listener = TcpListener::bind(&cfg.cluster_addr)
        .await
        .with_context(|| format!("bind cluster address {}", cfg.cluster_addr))?;
    let http_listener = TcpListener::bind(&cfg.http_addr)
        .await
        .with_context(|| format!("bind HTTP address {}", cfg.http_addr))?;
    let gateway_listeners = gateway::Listeners::bind(&cfg.gateway).await?;
    let cluster_addr = cluster_listener.local_addr()?.to_string();
    // The configured cluster address, not the bound one: it may be a DNS name (Kubernetes).
    let http_addr = config::advertised_http(
        http_listener.local_addr()?,
        &cfg.cluster_addr,
        cfg.http_advertise.as_deref(),
    );

    let node = cluster::Node::start(&cfg, http_addr.clone(), cluster_addr.clone()).await?;
    let serve_transport = tokio::spawn(node.transport.clone().serve(cluster_listener));

    let gateway = gateway::Gateway::start(gateway_listeners, node.clone(), &cfg.gateway);
    let route = gateway.route(&cfg);
    node.set_gateway(&route);
    let app = app(&cfg, &node).layer(axum::Extension(route));
    let tls = cfg.tls.as_ref().map(|t| t.http_acceptor());
    let server = api::limits::serve(http_listener, app, &cfg.limits, tls, shutdown_signal());
    println!(
        "{}",
        serde_json::to_string(
            &wk_api::ReadyLine::new(
                node.id,
                &http_addr,
                &cluster_addr,
                cfg.tls.is_some(),
                cfg.insecure
            )
            .with_gateway(gateway.tcp_addr(), gateway.ws_addr())
        )?
    );
    tracing::info!(node_id = node.id, %http_addr, %cluster_addr, tcp_addr = ?gateway.tcp_addr(), ws_addr = ?gateway.ws_addr(), tls = cfg.tls.is_some(), data_dir = %cfg.data_dir.display(), "serving");
    server.await;

    tracing::info!("shutting down");
    gateway.shutdown().await;
    serve_transport.abort();
    node.shutdown().await;
    Ok(())
}

/// The HTTP app as `run` serves it: the API router over a started node, with the token checks
/// of `cfg`. Public so the HTTP fuzz target (`fuzz/`) drives exactly what clients reach.
pub fn app(cfg: &config::Config, node: &cluster::Node) -> axum::Router {
    let auth = api::Auth {
        api: cfg.api_token.clone(),
        admin: cfg.admin_token.clone(),
        public_cluster_read: cfg.public_cluster_read,
        ..Default::default()
    };
    let security = wk_api::Security {
        tls: cfg.tls.is_some(),
        insecure: cfg.insecure,
    };
    api::router(
        node.clone(),
        auth,
        api::limits::InFlight::new(&cfg.limits),
        security,
    )
}

/// Refuse to serve the API beyond loopback without both tokens, unless `--insecure`.
fn check_exposure(cfg: &config::Config) -> anyhow::Result<()> {
    if let Some(refusal) = check::exposure_refusal(cfg) {
        anyhow::bail!(refusal);
    }
    if cfg.insecure {
        tracing::warn!(http_addr = %cfg.http_addr, "INSECURE: --insecure set; the API may be served beyond loopback without tokens");
    }
    if let Some(tls) = &cfg.tls {
        tracing::info!(cert = %tls.files.cert.display(), ca = %tls.files.ca.display(), "TLS on: HTTPS, and mutual TLS between nodes");
    }
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
