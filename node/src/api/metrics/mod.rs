//! `GET /metrics`: the node in the Prometheus text exposition format (version 0.0.4).
//!
//! Everything is read at scrape time from what the runtime already exposes: the metadata
//! group's Raft metrics, the running channel groups' Raft metrics, the local metadata copy, the
//! cluster-wide backlog view, `/proc/self`, and the counters and histograms the request and
//! storage paths record into (`crate::stats`; `time_requests` here times the send and sync
//! requests). Nothing here starts, wakes or writes anything.
//! Two parts cost more than a glance and are cached:
//! - the scan of the channel table (channels replicated here, hence hibernated ones): the
//!   node's `channel_scan`, shared with the node status and cached until the metadata changes;
//! - the backlog view, which probes every node, cached per node in the metadata Raft's
//!   extensions (so the cache lives and dies with the node): refreshed by a background task at
//!   most once per `BACKLOG_TTL`; a scrape waits for a refresh at most `BACKLOG_WAIT` and
//!   otherwise serves the previous view, whose age is exported as `wukong_backlog_age_seconds`.
//!
//! The metadata group's election and leader-change counters come from a task that watches its
//! Raft metrics, started by the first scrape: they count from then on (Prometheus scrapes a
//! node within one interval of its start).
//!
//! The parts: `families` says what each family is (name, type, help, value: the registry),
//! `exposition` writes them in the text format, `scans` gathers what costs more than a
//! glance (the cached backlog view, the metadata watcher), `process`
//! reads `/proc/self`; `render` here puts them together.
//!
//! Invariant: every family is written once, `# HELP` and `# TYPE` first and its samples
//! contiguous, so the output parses with any Prometheus text parser. Names and meanings are
//! documented in `docs/METRICS.md`.

mod exposition;
mod families;
mod process;
mod scans;

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::cluster::Node;
use crate::stats::{self, Outcome};
use exposition::{Exposition, Kind};
use families::{
    backlog_families, bool_value, channel_families, gateway_families, integrity_families, meta_families,
    request_families, store_families,
};
use process::ProcessStats;
use scans::{MetricsState, cached_backlog, watch_meta};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub async fn serve(State(node): State<Node>) -> impl IntoResponse {
    let body = render(&node).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}

/// Middleware: time `/message/send`, `/channel/messagesync` and `/conversation/sync` into their histograms, by
/// outcome (from the answer's status). Other paths pass straight through.
pub async fn time_requests(req: Request, next: Next) -> Response {
    let histograms = match req.uri().path() {
        "/message/send" => &stats::SEND,
        "/channel/messagesync" => &stats::SYNC,
        "/conversation/sync" => &stats::CONVERSATION_SYNC,
        _ => return next.run(req).await,
    };
    let started = Instant::now();
    let resp = next.run(req).await;
    histograms.observe(Outcome::of_status(resp.status().as_u16()), started.elapsed());
    resp
}

/// The whole exposition.
pub async fn render(node: &Node) -> String {
    let started = Instant::now();
    let state = node.meta.extension::<MetricsState>();
    watch_meta(node, &state);
    let scan = node
        .channel_scan()
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "metrics: reading the channel table"))
        .ok();
    let backlog = cached_backlog(node, &state).await;
    let process = tokio::task::spawn_blocking(ProcessStats::read)
        .await
        .ok()
        .flatten();

    let mut out = Exposition::default();
    out.family("wukong_up", Kind::Gauge, "1 while the node serves HTTP.");
    out.sample("wukong_up", &[], 1.0);
    out.family(
        "wukong_node_info",
        Kind::Gauge,
        "Constant 1, labelled with the node id, the cluster id and the version.",
    );
    let cluster_id = node
        .transport
        .cluster_id()
        .map(|c| format!("{c:016x}"))
        .unwrap_or_default();
    out.sample(
        "wukong_node_info",
        &[
            ("node_id", &node.id.to_string()),
            ("cluster_id", &cluster_id),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    );
    out.family(
        "wukong_node_joining",
        Kind::Gauge,
        "1 while the node waits to be admitted to a cluster (--seed).",
    );
    out.sample("wukong_node_joining", &[], bool_value(node.is_joining()));

    meta_families(node, &state, &mut out);
    channel_families(node, scan.as_deref(), &mut out);
    integrity_families(&mut out);
    backlog_families(backlog, &mut out);
    request_families(&mut out);
    store_families(&mut out);
    gateway_families(&mut out);
    if let Some(p) = process {
        p.write(&mut out);
    }

    out.family(
        "wukong_scrape_duration_seconds",
        Kind::Gauge,
        "Time this node took to build this exposition.",
    );
    out.sample(
        "wukong_scrape_duration_seconds",
        &[],
        started.elapsed().as_secs_f64(),
    );
    out.finish()
}
