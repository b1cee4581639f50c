//! `wkctl bench report OURS [--peers DIR]`: one markdown table of our bench JSON next to the
//! peer harness's etcd and NATS figures, with ratios (what `just bench-peers` prints).
//!
//! Ours: `OURS/send-conc.json`, `send-seq.json`, `disk.json` (`bench send --output json`),
//! `failover.json`, `catchup.json`, and optionally `failover-active.json`, `idle.json`,
//! `drain.json`, `deliver.json` (as fast as it goes) and `deliver-50k.json` (`--rate 510`: 50,000
//! deliveries/s); a missing file leaves its row empty. Peers: `DIR/results.jsonl` (one JSON
//! object per phase, `sys` and `phase` fields, `../shared/peers/run-all.sh`) and
//! `DIR/failover.json` (the windows `summarize.py` computed). Reading is lenient: a field that
//! is missing or of another shape shows as `-`.

use std::path::Path;

use serde_json::Value;

use crate::Outcome;
use crate::cli::{BenchReportArgs, GlobalArgs};
use crate::output;

/// Every input, as loose JSON (`Null` when absent).
#[derive(Debug, Default)]
pub struct Inputs {
    pub send_conc: Value,
    pub send_seq: Value,
    /// `bench send --messages 200000`: its `disk_bytes_per_msg`.
    pub disk: Value,
    pub failover: Value,
    pub catchup: Value,
    pub failover_active: Value,
    pub idle: Value,
    pub drain: Value,
    /// `bench deliver` as fast as it goes.
    pub deliver: Value,
    /// `bench deliver --rate 510`: 510 sends/s to groups of 100, about 50,000 deliveries/s.
    pub deliver_50k: Value,
    /// The peers' `results.jsonl` lines.
    pub peer_results: Vec<Value>,
    /// The peers' `failover.json`.
    pub peer_failover: Value,
}

fn read_json(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// A number that may be encoded as a JSON number or a string (the harness writes both).
fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn at(v: &Value, path: &[&str]) -> Option<f64> {
    num(path.iter().fold(v, |v, k| &v[*k]))
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Inputs {
    pub fn load(ours: &Path, peers: Option<&Path>) -> Inputs {
        let mut i = Inputs {
            send_conc: read_json(&ours.join("send-conc.json")),
            send_seq: read_json(&ours.join("send-seq.json")),
            disk: read_json(&ours.join("disk.json")),
            failover: read_json(&ours.join("failover.json")),
            catchup: read_json(&ours.join("catchup.json")),
            failover_active: read_json(&ours.join("failover-active.json")),
            idle: read_json(&ours.join("idle.json")),
            drain: read_json(&ours.join("drain.json")),
            deliver: read_json(&ours.join("deliver.json")),
            deliver_50k: read_json(&ours.join("deliver-50k.json")),
            ..Inputs::default()
        };
        if let Some(dir) = peers {
            i.peer_results = std::fs::read_to_string(dir.join("results.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            i.peer_failover = read_json(&dir.join("failover.json"));
        }
        i
    }

    fn peer(&self, sys: &str, phase: &str, mode: Option<&str>) -> Option<&Value> {
        self.peer_results
            .iter()
            .find(|r| r["sys"] == sys && r["phase"] == phase && mode.is_none_or(|m| r["mode"] == m))
    }

    fn peer_window_median(&self, sys: &str) -> Option<f64> {
        let rows = self.peer_failover[sys]["rows"].as_array()?;
        median(rows.iter().filter_map(|r| num(&r["window_ms"])).collect())
    }

    /// Seconds from the trigger (etcd: member add; NATS: stream scaled to R4) to caught up.
    fn peer_catchup_s(&self, sys: &str) -> Option<f64> {
        let r = self.peer(sys, "catchup", None)?;
        let trigger = if sys == "etcd" {
            "member_add_ns"
        } else {
            "scale_ok_ns"
        };
        Some((num(&r["caught_up_ns"])? - num(&r[trigger])?) / 1e9)
    }
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "-".into())
}

/// Always `ours / peer`; the row label says whether more or less is better.
fn ratio(ours: Option<f64>, peer: Option<f64>) -> String {
    match (ours, peer) {
        (Some(o), Some(p)) if p != 0.0 => format!("{:.2}", o / p),
        _ => "-".into(),
    }
}

/// The markdown table.
pub fn markdown(i: &Inputs) -> String {
    let mut s = String::from(
        "| | ours | etcd 3.4 | NATS 2.9 R3 | ours / etcd | ours / NATS |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let mut row = |label: &str, ours: Option<f64>, etcd: Option<f64>, nats: Option<f64>, digits: usize| {
        s.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} |\n",
            cell(ours, digits),
            cell(etcd, digits),
            cell(nats, digits),
            ratio(ours, etcd),
            ratio(ours, nats)
        ));
    };
    let peer = |sys, mode, path: &[&str]| i.peer(sys, "throughput", Some(mode)).and_then(|r| at(r, path));
    for (label, ours, mode) in [
        ("64 in flight", &i.send_conc, "conc"),
        ("one at a time", &i.send_seq, "seq"),
    ] {
        row(
            &format!("{label}: ops/s (higher is better)"),
            at(ours, &["ops_per_s"]),
            peer("etcd", mode, &["ops_per_s"]),
            peer("nats", mode, &["ops_per_s"]),
            0,
        );
        for p in ["p50_ms", "p99_ms"] {
            row(
                &format!("{label}: {} ms (lower is better)", &p[..3]),
                at(ours, &["lat", p]),
                peer("etcd", mode, &["lat", p]),
                peer("nats", mode, &["lat", p]),
                3,
            );
        }
    }
    // NATS with one stream per channel: the analogue of one Raft group per channel.
    for (label, path) in [
        ("ops/s (higher is better)", &["ops_per_s"][..]),
        ("p99 ms (lower is better)", &["lat", "p99_ms"][..]),
    ] {
        row(
            &format!("64 in flight, NATS column = 64 R3 streams: {label}"),
            at(&i.send_conc, path),
            None,
            peer("nats", "conc-streams64", path),
            if path.len() == 1 { 0 } else { 3 },
        );
    }
    let peer_cpu = |sys, mode| {
        let r = i.peer(sys, "throughput", Some(mode))?;
        Some(num(&r["server_cpu_s"])? * 1000.0 / num(&r["ops"])?)
    };
    row(
        "64 in flight: server CPU ms per write, 3 nodes summed (lower is better)",
        at(&i.send_conc, &["server_cpu_ms_per_msg"]),
        peer_cpu("etcd", "conc"),
        peer_cpu("nats", "conc"),
        3,
    );
    row(
        "disk bytes per 100-byte message per replica, 200k messages (lower is better)",
        at(&i.disk, &["disk_bytes_per_msg"]),
        None,
        None,
        0,
    );
    row(
        "failover window median ms (lower is better)",
        at(&i.failover, &["window_ms", "median"]),
        i.peer_window_median("etcd"),
        i.peer_window_median("nats"),
        0,
    );
    row(
        "fresh node holds the channel, s (lower is better)",
        at(&i.catchup, &["channel_s"]),
        i.peer_catchup_s("etcd"),
        i.peer_catchup_s("nats"),
        2,
    );
    row(
        "fresh node holds the metadata (users), s",
        at(&i.catchup, &["metadata_s"]),
        None,
        None,
        2,
    );
    let round0 = &i.failover_active["rounds"][0];
    row(
        "active channels of a killed node: all led again ms",
        at(round0, &["all_led_ms"]),
        None,
        None,
        0,
    );
    row(
        "active channels of a killed node: new leader max ms (per channel, polled)",
        at(round0, &["max_ms"]),
        None,
        None,
        0,
    );
    let worst = |window: &str, k: &str| {
        let nodes = i.idle[window].as_array().cloned().unwrap_or_default();
        nodes.iter().filter_map(|n| num(&n[k])).reduce(f64::max)
    };
    row(
        "idle: CPU % of a core, worst node, after the touch",
        worst("nodes", "cpu_pct"),
        None,
        None,
        2,
    );
    row(
        "idle: CPU % of a core, worst node, settled",
        worst("nodes_settled", "cpu_pct"),
        None,
        None,
        2,
    );
    row(
        "idle: RSS MB, worst node",
        worst("nodes", "rss_mb"),
        None,
        None,
        0,
    );
    for p in ["p50_ms", "p99_ms"] {
        row(
            &format!("idle: first send to a hibernated channel {} ms", &p[..3]),
            at(&i.idle, &["first_send", p]),
            None,
            None,
            2,
        );
    }
    row(
        "backlog drain channels/s",
        at(&i.drain, &["channels_per_s"]),
        None,
        None,
        0,
    );
    for (when, key) in [("before", "foreground_before"), ("during", "foreground_during")] {
        row(
            &format!("backlog drain: foreground one at a time p99 ms, {when}"),
            at(&i.drain, &[key, "lat", "p99_ms"]),
            None,
            None,
            2,
        );
    }
    for (label, v) in [
        ("deliver as fast as it goes", &i.deliver),
        ("deliver at 510 sends/s", &i.deliver_50k),
    ] {
        row(
            &format!("{label}: deliveries/s"),
            at(v, &["deliveries_per_s"]),
            None,
            None,
            0,
        );
        for (whose, key) in [
            ("the leader's node", "leader_node"),
            ("other nodes", "other_nodes"),
        ] {
            row(
                &format!("{label}: p99 ms, receivers on {whose}"),
                at(v, &[key, "lat", "p99_ms"]),
                None,
                None,
                2,
            );
        }
    }
    s
}

pub fn run(_global: &GlobalArgs, args: BenchReportArgs) -> anyhow::Result<Outcome> {
    let inputs = Inputs::load(&args.ours, args.peers.as_deref());
    let mut out = std::io::stdout().lock();
    output::write_text(&mut out, &markdown(&inputs))?;
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_with_ratios() {
        let i = Inputs {
            send_conc: json!({"ops":10,"ops_per_s":2000.0,"errors":0,"lat":{"p50_ms":20.0,"p90_ms":1.0,"p99_ms":40.0,"p999_ms":1.0,"max_ms":1.0}}),
            failover: json!({"window_ms":{"min":1.0,"median":1300.0,"max":2.0}}),
            catchup: json!({"channel_s":0.5,"metadata_s":0.25}),
            peer_results: vec![
                json!({"sys":"etcd","phase":"throughput","mode":"conc","ops_per_s":10000.0,"lat":{"p50_ms":5.0,"p99_ms":10.0}}),
                json!({"sys":"nats","phase":"throughput","mode":"conc","ops_per_s":40000.0,"lat":{"p50_ms":1.0,"p99_ms":4.0}}),
                json!({"sys":"etcd","phase":"catchup","caught_up_ns":"3000000000","member_add_ns":"2000000000"}),
            ],
            peer_failover: json!({"etcd":{"rows":[{"window_ms":1000.0},{"window_ms":1600.0},{"window_ms":3000.0}]}}),
            ..Inputs::default()
        };
        let md = markdown(&i);
        assert!(
            md.contains("| 64 in flight: ops/s (higher is better) | 2000 | 10000 | 40000 | 0.20 | 0.05 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 64 in flight: p99 ms (lower is better) | 40.000 | 10.000 | 4.000 | 4.00 | 10.00 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| failover window median ms (lower is better) | 1300 | 1600 | - | 0.81 | - |"),
            "{md}"
        );
        assert!(
            md.contains("| fresh node holds the channel, s (lower is better) | 0.50 | 1.00 | - | 0.50 | - |"),
            "{md}"
        );
        assert!(
            md.contains("| one at a time: ops/s (higher is better) | - | - | - | - | - |"),
            "{md}"
        );
    }

    #[test]
    fn issue_targets_have_rows() {
        let lat = |p99: f64| json!({"lat": {"p50_ms": 1.0, "p99_ms": p99}});
        let i = Inputs {
            drain: json!({"channels_per_s": 1500.0, "foreground_before": lat(1.25), "foreground_during": lat(2.5)}),
            deliver_50k: json!({"deliveries_per_s": 50490.0, "leader_node": lat(3.75), "other_nodes": lat(4.5)}),
            ..Inputs::default()
        };
        let md = markdown(&i);
        for want in [
            "| backlog drain: foreground one at a time p99 ms, before | 1.25 |",
            "| backlog drain: foreground one at a time p99 ms, during | 2.50 |",
            "| deliver at 510 sends/s: deliveries/s | 50490 |",
            "| deliver at 510 sends/s: p99 ms, receivers on the leader's node | 3.75 |",
            "| deliver at 510 sends/s: p99 ms, receivers on other nodes | 4.50 |",
            "| deliver as fast as it goes: deliveries/s | - |",
        ] {
            assert!(md.contains(want), "{want}\n{md}");
        }
    }
}
