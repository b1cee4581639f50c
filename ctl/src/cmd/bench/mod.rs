//! `wkctl bench`: the project's own load generators, one module per subcommand (`send`,
//! `failover` with `failover_active`, `catchup`, `idle`, `drain`, `deliver`, `conversations`,
//! `report`), and
//! what they share: the throwaway local cluster, latency summaries, spreads.
//!
//! - `send` measures durable-write throughput and latency: every acknowledgement it counts
//!   came after the node's quorum fsync. By default (`--route leader`) each channel's requests
//!   go to that channel's leader, as the peer harness's clients do for etcd and NATS: the
//!   leaders are learned from `/cluster/channels/{id}/{type}/config` before the run and
//!   relearned for a channel after a failed request. `--route spread` sends round-robin over
//!   the endpoints instead (the receiving node forwards to the leader). Requests share
//!   reqwest's keep-alive pool, each with a unique client_msg_no. Latencies go into an HDR histogram in microseconds; only requests *started*
//!   after the warm-up count, and ops/s divides by the time from the end of the warm-up to the
//!   last counted completion.
//! - `failover` owns a throwaway local cluster ([`crate::local::LocalCluster`]). A single writer
//!   sends one message at a time; on any error it retries the *same* client_msg_no on the next
//!   node (the node dedups on it). The window of a round is the largest gap between two
//!   consecutive acknowledgements from 1 s before the kill until the writer is paused for the
//!   convergence check, the peer harness's definition (`shared/peers/summarize.py`).
//!
//! - `catchup`, `idle`, `drain` and `failover --active` (submodules) measure scale-out and
//!   many-channel costs; `report` puts our JSON next to the peers' (`report`).
//!
//! Children are spawned and restarted only from the future `main` blocks on (the main thread),
//! as `crate::local` requires; the writer and the load workers are tokio tasks that do HTTP only.

pub mod catchup;
pub mod conversations;
pub mod deliver;
pub mod drain;
pub(crate) mod failover;
pub(crate) mod failover_active;
mod fill;
pub mod idle;
pub mod report;
pub(crate) mod send;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use wk_api::Client;

use crate::local::LocalCluster;
pub use failover::failover;
pub use send::send;

/// A throwaway local cluster of `nodes` nodes in a temporary directory, every node with `extra`
/// flags; started and dropped (nodes stopped, directory removed) by the bench.
pub(crate) async fn local_cluster(
    wknode: Option<&std::path::Path>,
    nodes: u64,
    extra: &[String],
) -> anyhow::Result<LocalCluster> {
    LocalCluster::builder()
        .nodes(nodes)
        .wknode(wknode)
        .temp_prefix("wkctl-bench-")
        .args(extra.iter().cloned())
        .start()
        .await
}

/// A client for every node of `cluster`, each request taking up to `timeout`, with
/// `--admin-token`.
pub(crate) fn cluster_client(
    cluster: &LocalCluster,
    global: &crate::cli::GlobalArgs,
    timeout: std::time::Duration,
) -> anyhow::Result<Client> {
    use anyhow::Context as _;
    Ok(Client::new(&cluster.endpoints(), timeout)
        .context("local endpoints")?
        .with_token(global.admin_token.clone()))
}

/// Prints a notice, with its log's tail, for each node of `cluster` that exited on its own.
pub(crate) fn report_exits(cluster: &mut LocalCluster) {
    for e in cluster.exits() {
        eprintln!("wkctl: {}", e.with_tail(30));
    }
}
/// Histogram range in microseconds: 1 µs .. 10 min, 3 significant digits.
const HIST_MAX_US: u64 = 600_000_000;

/// Latency percentiles in milliseconds (the peer harness's field names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant bounds are valid")
}

/// Percentiles of a histogram of microseconds, in ms rounded to the microsecond; all zero for
/// an empty histogram.
pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary {
            p50_ms: 0.0,
            p90_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            max_ms: 0.0,
        };
    }
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

/// Min, median and max of a set of values (median of an even count: mean of the middle two).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

pub fn spread(values: &[f64]) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        min: v[0],
        median,
        max: v[n - 1],
    })
}

/// Milliseconds rounded to the microsecond, for readable JSON.
fn round_us(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

/// Channel groups led in the cluster (each node's `channels_led`), summed over the nodes that
/// answer; 0 if the request fails.
async fn channels_led(client: &Client) -> u64 {
    client
        .nodes()
        .await
        .map(|n| n.nodes.iter().filter(|s| s.online).map(|s| s.channels_led).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_from_histogram() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).expect("in range");
        }
        let s = summarize(&h);
        // 3 significant digits: within 0.1 %.
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 0.001;
        assert!(close(s.p50_ms, 5.0), "{s:?}");
        assert!(close(s.p90_ms, 9.0), "{s:?}");
        assert!(close(s.p99_ms, 9.9), "{s:?}");
        assert!(close(s.p999_ms, 9.99), "{s:?}");
        assert!(close(s.max_ms, 10.0), "{s:?}");
        assert_eq!(summarize(&new_histogram()).max_ms, 0.0);
    }

    #[test]
    fn spreads() {
        assert_eq!(spread(&[]), None);
        assert_eq!(
            spread(&[3.0, 1.0, 2.0]),
            Some(Spread {
                min: 1.0,
                median: 2.0,
                max: 3.0
            })
        );
        assert_eq!(
            spread(&[4.0, 1.0, 2.0, 3.0]),
            Some(Spread {
                min: 1.0,
                median: 2.5,
                max: 4.0
            })
        );
    }
}
