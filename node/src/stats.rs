//! Counters and histograms the request and storage paths record into, read by `GET /metrics`
//! (`api::metrics`, which renders them; names and meanings in `docs/METRICS.md`).
//!
//! One set per process (a process runs one node), so the hot paths reach them without a
//! handle. Recording is a few relaxed atomic adds: no lock, no allocation. A scrape reads each
//! atomic on its own, so a histogram's buckets, sum and count may disagree by the observations
//! that landed during the read; Prometheus tolerates that and the next scrape catches up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wk_api::ErrorCode;

/// Upper bounds (seconds) of the latency histograms: 0.5 ms to 10 s, roughly x2.5 apart.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the write-batch size histogram (operations per transaction), powers of 4
/// up to the writer's batch cap.
pub const BATCH_BOUNDS: [f64; 7] = [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0];

/// A fixed-bucket histogram of atomics. `N` bounds; observations above the last bound are
/// counted only in `count` (the `+Inf` bucket).
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    /// Non-cumulative: `buckets[i]` counts observations in `(bounds[i-1], bounds[i]]`.
    buckets: [AtomicU64; N],
    /// Sum of the observations in micro-units (µs for durations), to stay integral.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A point-in-time copy of a histogram, cumulative as the exposition format wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramView {
    /// (upper bound, observations <= bound), ascending.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl<const N: usize> Histogram<N> {
    pub const fn new(bounds: &'static [f64; N]) -> Self {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn view(&self) -> HistogramView {
        let mut total = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| {
                total += n.load(Ordering::Relaxed);
                (*b, total)
            })
            .collect();
        HistogramView {
            buckets,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            // Never below the last bucket, so the +Inf bucket stays cumulative.
            count: self.count.load(Ordering::Relaxed).max(total),
        }
    }
}

/// How an HTTP request ended, for the per-operation histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// 4xx: the client's mistake (bad input, token, unknown channel).
    ClientError,
    /// 5xx: not the client's fault (no leader, storage, timeouts).
    ServerError,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::ClientError, Outcome::ServerError];

    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=399 => Outcome::Ok,
            400..=499 => Outcome::ClientError,
            _ => Outcome::ServerError,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
        }
    }
}

/// One latency histogram per outcome.
pub struct ByOutcome([Histogram<14>; 3]);

impl ByOutcome {
    const fn new() -> Self {
        ByOutcome([const { Histogram::new(&LATENCY_BOUNDS) }; 3])
    }

    pub fn observe(&self, outcome: Outcome, d: Duration) {
        self.0[outcome as usize].observe_duration(d);
    }

    pub fn get(&self, outcome: Outcome) -> &Histogram<14> {
        &self.0[outcome as usize]
    }
}

/// `POST /message/send`, from the request's arrival to its answer, on the node that took it.
pub static SEND: ByOutcome = ByOutcome::new();
/// `POST /channel/messagesync`, likewise.
pub static SYNC: ByOutcome = ByOutcome::new();
/// `POST /conversation/sync`, likewise.
pub static CONVERSATION_SYNC: ByOutcome = ByOutcome::new();
/// Conversations answered by `/conversation/sync` on this node.
pub static CONVERSATIONS_RETURNED: AtomicU64 = AtomicU64::new(0);

/// Error answers by code, indexed like `ErrorCode::ALL`.
static HTTP_ERRORS: [AtomicU64; ErrorCode::ALL.len()] = [const { AtomicU64::new(0) }; ErrorCode::ALL.len()];

/// Count one error answer.
pub fn http_error(code: ErrorCode) {
    HTTP_ERRORS[code as usize].fetch_add(1, Ordering::Relaxed);
}

/// (code, error answers so far) for every code, answered or not.
pub fn http_errors() -> Vec<(ErrorCode, u64)> {
    ErrorCode::ALL
        .iter()
        .zip(&HTTP_ERRORS)
        .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
        .collect()
}

/// What the LMDB writer thread did.
pub struct StoreStats {
    /// Time of each write transaction's commit (the fsync), successful or not.
    pub commit_seconds: Histogram<14>,
    /// Operations in each committed transaction.
    pub batch_ops: Histogram<7>,
    /// Write transactions committed.
    pub commits: AtomicU64,
    /// Bytes of values put (keys and LMDB's page overhead not counted).
    pub bytes_written: AtomicU64,
}

pub static STORE: StoreStats = StoreStats {
    commit_seconds: Histogram::new(&LATENCY_BOUNDS),
    batch_ops: Histogram::new(&BATCH_BOUNDS),
    commits: AtomicU64::new(0),
    bytes_written: AtomicU64::new(0),
};

impl StoreStats {
    /// One write transaction committed (or failed to) after `took`, holding `ops` operations.
    pub fn commit(&self, took: Duration, ops: usize, ok: bool) {
        self.commit_seconds.observe_duration(took);
        if ok {
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.batch_ops.observe(ops as f64);
        }
    }

    pub fn put(&self, value_len: usize) {
        self.bytes_written.fetch_add(value_len as u64, Ordering::Relaxed);
    }
}

/// What the client gateway (`crate::gateway`) counted.
pub struct GatewayStats {
    /// Client connections open now (TCP and WebSocket, authenticated or not).
    pub connections: AtomicU64,
    /// Packets decoded from clients.
    pub packets_in: AtomicU64,
    /// Packets written to clients.
    pub packets_out: AtomicU64,
    /// Connections closed at accept by `--max-client-connections`.
    pub refused: AtomicU64,
    /// RECVs queued to this node's connections.
    pub recvs: AtomicU64,
    /// RECVs pushed again for want of a RECVACK.
    pub retries: AtomicU64,
    /// Retry entries dropped because the connection had `MAX_UNACKED` already.
    pub retries_dropped: AtomicU64,
    /// On a channel leader: seconds from the commit of a message to its RECVs being queued
    /// here, or accepted for pushing by another node that has a recipient (one observation
    /// per delivery batch and node).
    pub push_seconds: Histogram<{ LATENCY_BOUNDS.len() }>,
}

pub static GATEWAY: GatewayStats = GatewayStats {
    connections: AtomicU64::new(0),
    packets_in: AtomicU64::new(0),
    packets_out: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    recvs: AtomicU64::new(0),
    retries: AtomicU64::new(0),
    retries_dropped: AtomicU64::new(0),
    push_seconds: Histogram::new(&LATENCY_BOUNDS),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        static BOUNDS: [f64; 3] = [1.0, 2.0, 5.0];
        let h = Histogram::new(&BOUNDS);
        for v in [0.5, 1.0, 1.5, 4.0, 9.0] {
            h.observe(v);
        }
        let v = h.view();
        assert_eq!(v.buckets, vec![(1.0, 2), (2.0, 3), (5.0, 4)]);
        assert_eq!(v.count, 5);
        assert!((v.sum - 16.0).abs() < 1e-6);
    }

    #[test]
    fn outcomes_follow_the_status() {
        assert_eq!(Outcome::of_status(200), Outcome::Ok);
        assert_eq!(Outcome::of_status(404), Outcome::ClientError);
        assert_eq!(Outcome::of_status(503), Outcome::ServerError);
    }
}
