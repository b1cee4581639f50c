//! `GET /metrics` end to end: a live 3-node cluster is scraped at each step of its life (idle,
//! with a channel, hibernated, after the metadata leader is killed). Every exposition is parsed
//! with a Prometheus text parser (`prometheus-parse`) and checked line by line against the
//! format's rules (that parser skips what it does not understand); the values must be sane and
//! agree across nodes. The names must match `docs/METRICS.md` and cover what the Grafana
//! dashboard in `deploy/` queries.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Cluster, b64, retry, wait_until};
use prometheus_parse::Value;
use wk_api::{CHANNEL_TYPE_GROUP, ChannelReq, MessageHeader, SendReq};

/// One parsed exposition.
struct Scrape {
    /// Declared families and their type, in order.
    families: BTreeMap<String, String>,
    samples: Vec<prometheus_parse::Sample>,
}

impl Scrape {
    /// The value of the sample `name` whose labels include all of `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => panic!("{name} is not a plain counter or gauge"),
            })
    }

    /// The `+Inf` bucket (the count) of histogram `name` whose labels include all of `labels`.
    fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .and_then(|s| match &s.value {
                Value::Histogram(b) => b.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count),
                _ => None,
            })
    }

    fn value(&self, name: &str) -> f64 {
        self.get(name, &[])
            .unwrap_or_else(|| panic!("no sample of {name}"))
    }
}

/// Checks the text format strictly: HELP then TYPE once per family, samples of a family right
/// after its TYPE, names and label syntax valid, values numbers, counters end in `_total`.
fn check_format(text: &str) -> BTreeMap<String, String> {
    fn valid_name(s: &str) -> bool {
        let mut chars = s.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut families = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut helped: Option<String> = None;
    assert!(text.ends_with('\n'), "the exposition must end with a newline");
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("{}: HELP without text", at()));
            assert!(valid_name(name) && !help.is_empty(), "{}", at());
            helped = Some(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("{}: TYPE without kind", at()));
            assert_eq!(
                helped.as_deref(),
                Some(name),
                "{}: TYPE must follow the family's HELP",
                at()
            );
            assert!(
                matches!(kind, "counter" | "gauge" | "histogram"),
                "{}: unexpected type",
                at()
            );
            assert!(
                kind != "counter" || name.ends_with("_total"),
                "{}: counters end in _total",
                at()
            );
            assert!(
                name.starts_with("wukong_") || name.starts_with("process_"),
                "{}: unprefixed name",
                at()
            );
            assert!(
                families.insert(name.to_string(), kind.to_string()).is_none(),
                "{}: family declared twice",
                at()
            );
            current = Some(name.to_string());
        } else {
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "{}: unexpected line",
                at()
            );
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("{}: no value", at()));
            let parsed = match value {
                "NaN" | "+Inf" | "-Inf" => true,
                v => v.parse::<f64>().is_ok(),
            };
            assert!(parsed, "{}: value is not a number", at());
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (
                    name,
                    Some(
                        rest.strip_suffix('}')
                            .unwrap_or_else(|| panic!("{}: unclosed labels", at())),
                    ),
                ),
                None => (series, None),
            };
            assert!(valid_name(name), "{}: bad metric name", at());
            let family = current.as_deref().unwrap_or_default();
            let in_family = if families.get(family).map(String::as_str) == Some("histogram") {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family))
            } else {
                name == family
            };
            assert!(in_family, "{}: sample outside its family", at());
            if name.ends_with("_bucket") {
                assert!(
                    labels.is_some_and(|l| l.contains("le=\"")),
                    "{}: a bucket needs `le`",
                    at()
                );
            }
            if let Some(labels) = labels {
                // Label values never contain `",` in this exporter, so a split is exact enough.
                for pair in labels.split("\",").map(|p| p.trim_end_matches('"')) {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("{}: bad label {pair:?}", at()));
                    assert!(valid_name(k) && !k.starts_with("__"), "{}: bad label name", at());
                    assert!(!v.contains('\n'), "{}", at());
                }
            }
        }
    }
    families
}

async fn scrape(http: &reqwest::Client, node: &common::Node) -> Scrape {
    let resp = http
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("scrape node {}: {e}", node.id));
    assert!(
        resp.status().is_success(),
        "node {}: /metrics answered {}",
        node.id,
        resp.status()
    );
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        ctype.starts_with("text/plain; version=0.0.4"),
        "content type {ctype:?}"
    );
    let text = resp.text().await.expect("body");
    let families = check_format(&text);
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    // The parser folds a histogram's `_bucket` lines into one sample per label set and leaves
    // `_sum`/`_count` untyped; every other sample is one line with its declared type.
    let mut expected = 0;
    let mut bucket_sets = BTreeSet::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let series = l.rsplit_once(' ').map(|(s, _)| s).unwrap_or(l);
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        if name.ends_with("_bucket") {
            let labels = labels.trim_end_matches('}');
            let without_le: Vec<&str> = labels.split(',').filter(|p| !p.starts_with("le=")).collect();
            bucket_sets.insert(format!("{name}{{{}}}", without_le.join(",")));
        } else {
            expected += 1;
        }
    }
    assert_eq!(
        parsed.samples.len(),
        expected + bucket_sets.len(),
        "the parser skipped samples:\n{text}"
    );
    for s in &parsed.samples {
        let histogram_part = families.get(&s.metric).map(String::as_str) == Some("histogram")
            || ["_sum", "_count"].iter().any(|suffix| {
                s.metric
                    .strip_suffix(suffix)
                    .is_some_and(|f| families.get(f).map(String::as_str) == Some("histogram"))
            });
        assert!(
            matches!(s.value, Value::Counter(_) | Value::Gauge(_)) || histogram_part,
            "{} has no type",
            s.metric
        );
        if let Value::Histogram(buckets) = &s.value {
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
                "{}: buckets not cumulative",
                s.metric
            );
        }
    }
    Scrape {
        families,
        samples: parsed.samples,
    }
}

/// Metric names a text mentions: `wukong_...` and `process_...` words.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            ["wukong_", "process_"]
                .iter()
                .any(|p| w.len() > p.len() && w.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

fn repo_file(rel: &str) -> String {
    let path = format!("{}/../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_cluster_exports_sane_metrics() {
    let mut cluster = Cluster::start_with(3, &["--channel-idle-timeout", "4s"]).await;
    let leader = cluster.wait_meta_leader().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");

    tracing::info!("--- an idle cluster: every node up, one metadata leader, indexes in order");
    let scrapes: Vec<Scrape> = {
        let mut v = Vec::new();
        for n in &cluster.nodes {
            v.push(scrape(&http, n).await);
        }
        v
    };
    for (n, s) in cluster.nodes.iter().zip(&scrapes) {
        assert_eq!(s.value("wukong_up"), 1.0);
        assert_eq!(
            s.get("wukong_node_info", &[("node_id", &n.id.to_string())]),
            Some(1.0),
            "node {}",
            n.id
        );
        assert_eq!(s.value("wukong_node_joining"), 0.0);
        let roles: f64 = ["leader", "follower", "candidate", "learner", "shutdown"]
            .iter()
            .map(|r| {
                s.get("wukong_meta_role", &[("role", r)])
                    .expect("every role is exported")
            })
            .sum();
        assert_eq!(roles, 1.0, "node {}: exactly one role", n.id);
        let is_leader = s.get("wukong_meta_role", &[("role", "leader")]) == Some(1.0);
        assert_eq!(is_leader, n.id == leader, "node {}", n.id);
        assert_eq!(s.value("wukong_meta_leader_id"), leader as f64);
        assert!(s.value("wukong_meta_term") >= 1.0);
        let (applied, committed, last) = (
            s.value("wukong_meta_applied_index"),
            s.value("wukong_meta_committed_index"),
            s.value("wukong_meta_last_log_index"),
        );
        assert!(
            applied >= 1.0 && applied <= committed && committed <= last,
            "node {}: {applied} {committed} {last}",
            n.id
        );
        assert_eq!(s.value("wukong_meta_voters"), 3.0);
        assert!(s.value("process_cpu_seconds_total") > 0.0);
        assert!(s.value("process_resident_memory_bytes") > 1e6);
        assert!(
            s.value("process_open_fds") >= 3.0 && s.value("process_open_fds") <= s.value("process_max_fds")
        );
        let start = s.value("process_start_time_seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(
            start > now - 600.0 && start <= now + 5.0,
            "start time {start}, now {now}"
        );
        assert_eq!(
            s.value("wukong_meta_elections_total"),
            0.0,
            "counters start at the first scrape"
        );
        assert_eq!(s.value("wukong_channels_active"), 0.0);
        assert!(s.value("wukong_scrape_duration_seconds") < 5.0);
    }
    let leader_scrape = &scrapes[(leader - 1) as usize];
    let peers = leader_scrape
        .samples
        .iter()
        .filter(|s| s.metric == "wukong_meta_replication_lag_entries")
        .count();
    assert_eq!(peers, 2, "the metadata leader reports each peer's lag");
    assert!(
        leader_scrape
            .get("wukong_meta_quorum_ack_age_seconds", &[])
            .is_some_and(|a| a < 5.0)
    );

    tracing::info!(
        "--- names: docs/METRICS.md documents every family, the dashboard queries only exported ones"
    );
    let exported: BTreeSet<String> = scrapes[0].families.keys().cloned().collect();
    // A histogram's series (`_bucket`, `_sum`, `_count`) name its family.
    let family_of = |name: String| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|f| scrapes[0].families.get(*f).map(String::as_str) == Some("histogram"))
            .map(str::to_string)
            .unwrap_or(name)
    };
    let documented: BTreeSet<String> = metric_names(&repo_file("docs/METRICS.md"))
        .into_iter()
        .map(family_of)
        .collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "exported but not in docs/METRICS.md: {undocumented:?}"
    );
    let stale: Vec<_> = documented.difference(&exported).collect();
    assert!(stale.is_empty(), "in docs/METRICS.md but not exported: {stale:?}");
    let queried: BTreeSet<String> = metric_names(&repo_file("deploy/grafana/wukong-dashboard.json"))
        .into_iter()
        .map(family_of)
        .collect();
    let unknown: Vec<_> = queried.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries unknown metrics: {unknown:?}"
    );

    tracing::info!("--- a channel with messages: one leader, two followers caught up, replicated everywhere");
    let c = cluster.node(1).client();
    let req = ChannelReq {
        channel_id: "m1".into(),
        channel_type: CHANNEL_TYPE_GROUP,
        subscribers: vec!["u1".into()],
        reset: 0,
    };
    retry("create channel m1", Duration::from_secs(10), || {
        c.channel_create(&req)
    })
    .await;
    for i in 0..5 {
        let send = SendReq {
            header: MessageHeader::default(),
            client_msg_no: format!("m1-{i}"),
            from_uid: "u1".into(),
            channel_id: "m1".into(),
            channel_type: CHANNEL_TYPE_GROUP,
            payload: b64(b"hello"),
        };
        retry("send to m1", Duration::from_secs(10), || c.send(&send)).await;
    }
    let nodes: Vec<&common::Node> = cluster.nodes.iter().collect();
    wait_until(
        "one channel leader whose followers caught up",
        Duration::from_secs(15),
        || {
            let (http, nodes) = (http.clone(), nodes.clone());
            async move {
                let mut led = 0.0;
                let mut seen = Vec::new();
                for n in &nodes {
                    let s = scrape(&http, n).await;
                    led += s.value("wukong_channels_led");
                    if s.value("wukong_channels_led") == 1.0 {
                        seen.push((
                            s.value("wukong_replication_followers"),
                            s.value("wukong_replication_lag_entries_sum"),
                        ));
                        assert!(
                            s.value("wukong_replication_lag_entries_max")
                                <= s.value("wukong_replication_lag_entries_sum")
                        );
                        assert!(s.value("wukong_channels_active") >= 1.0);
                    }
                }
                match (led, seen.as_slice()) {
                    (1.0, [(2.0, 0.0)]) => Ok(()),
                    _ => Err(format!(
                        "channels led {led}, leader's (followers, lag sum) {seen:?}"
                    )),
                }
            }
        },
    )
    .await;

    tracing::info!("--- per-operation metrics: send and sync latencies, errors by code, LMDB commits");
    let sync = wk_api::SyncReq {
        login_uid: "u1".into(),
        channel_id: "m1".into(),
        channel_type: CHANNEL_TYPE_GROUP,
        start_message_seq: 0,
        end_message_seq: 0,
        limit: 10,
        pull_mode: 1,
    };
    retry("sync m1", Duration::from_secs(10), || c.sync(&sync)).await;
    let bad = http
        .post(cluster.node(1).url("/message/send"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("a bad send");
    assert_eq!(bad.status().as_u16(), 400);
    let s = scrape(&http, cluster.node(1)).await;
    let sends = s
        .histogram_count("wukong_send_duration_seconds", &[("outcome", "ok")])
        .expect("send histogram");
    assert!(
        sends >= 5.0,
        "5 sends answered ok on node 1, histogram counts {sends}"
    );
    assert!(s.histogram_count("wukong_send_duration_seconds", &[("outcome", "client_error")]) >= Some(1.0));
    assert!(s.histogram_count("wukong_sync_duration_seconds", &[("outcome", "ok")]) >= Some(1.0));
    assert!(s.get("wukong_http_errors_total", &[("code", "bad_request")]) >= Some(1.0));
    assert_eq!(
        s.get("wukong_http_errors_total", &[("code", "storage")]),
        Some(0.0)
    );
    for code in wk_api::ErrorCode::ALL {
        let n = s.get("wukong_http_errors_total", &[("code", code.as_str())]);
        assert!(n.is_some(), "no wukong_http_errors_total series for {code}");
    }
    for n in &cluster.nodes {
        let s = scrape(&http, n).await;
        let commits = s.value("wukong_store_commits_total");
        assert!(commits >= 1.0, "node {}: commits {commits}", n.id);
        assert!(s.value("wukong_store_bytes_written_total") > 0.0);
        let fsyncs = s
            .histogram_count("wukong_fsync_duration_seconds", &[])
            .expect("fsync histogram");
        // Each atomic is read on its own while the writer runs: compare loosely.
        assert!(fsyncs >= 1.0, "node {}: {fsyncs} commits timed", n.id);
        assert!(s.histogram_count("wukong_store_batch_ops", &[]) >= Some(1.0));
    }

    tracing::info!("--- idle: the channel hibernates on every replica, which all count it as replicated");
    wait_until("the channel to hibernate everywhere", Duration::from_secs(20), || {
        let (http, nodes) = (http.clone(), nodes.clone());
        async move {
            for n in &nodes {
                let s = scrape(&http, n).await;
                let (active, hibernated) = (s.value("wukong_channels_active"), s.value("wukong_channels_hibernated"));
                let (replicated, total) = (s.value("wukong_channels_replicated"), s.value("wukong_channels"));
                if active != 0.0 || hibernated != 1.0 || replicated != 1.0 || total != 1.0 {
                    return Err(format!(
                        "node {}: active {active}, hibernated {hibernated}, replicated {replicated}, channels {total}",
                        n.id
                    ));
                }
                assert_eq!(s.value("wukong_replication_followers"), 0.0);
            }
            Ok(())
        }
    })
    .await;

    tracing::info!("--- the backlog view is exported (empty: placement is satisfied)");
    let s = wait_until("a backlog view", Duration::from_secs(15), || {
        let http = http.clone();
        let node = cluster.node(1);
        async move {
            let s = scrape(&http, node).await;
            s.get("wukong_backlog_channels", &[])
                .map(|_| s)
                .ok_or_else(|| "no backlog view yet".to_string())
        }
    })
    .await;
    assert_eq!(s.value("wukong_backlog_channels"), 0.0);
    assert_eq!(s.value("wukong_backlog_at_risk_channels"), 0.0);
    assert!(s.value("wukong_backlog_age_seconds") < 60.0);

    tracing::info!("--- SIGKILL the metadata leader: the survivors count an election and a leader change");
    cluster.node_mut(leader).kill().await;
    let survivors: Vec<&common::Node> = cluster.nodes.iter().filter(|n| n.id != leader).collect();
    wait_until(
        "survivors to count a new metadata leadership",
        Duration::from_secs(30),
        || {
            let (http, survivors) = (http.clone(), survivors.clone());
            async move {
                let mut seen = Vec::new();
                for n in &survivors {
                    let s = scrape(&http, n).await;
                    let (elections, changes) = (
                        s.value("wukong_meta_elections_total"),
                        s.value("wukong_meta_leader_changes_total"),
                    );
                    let new_leader = s.get("wukong_meta_leader_id", &[]);
                    seen.push((n.id, elections, changes, new_leader));
                }
                let done = seen
                    .iter()
                    .all(|(_, e, c, l)| *e >= 1.0 && *c >= 1.0 && l.is_some_and(|l| l != leader as f64));
                if done {
                    Ok(())
                } else {
                    Err(format!("(node, elections, leader changes, leader) = {seen:?}"))
                }
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_client_token_when_one_is_set() {
    let cluster = Cluster::start_with(1, &["--api-token", "t-client", "--admin-token", "t-admin"]).await;
    let http = reqwest::Client::new();
    let url = cluster.node(1).url("/metrics");
    let denied = http.get(&url).send().await.expect("request");
    assert_eq!(denied.status().as_u16(), 401);
    for token in ["t-client", "t-admin"] {
        let ok = http
            .get(&url)
            .header("token", token)
            .send()
            .await
            .expect("request");
        assert!(ok.status().is_success(), "token {token}: {}", ok.status());
        check_format(&ok.text().await.expect("body"));
    }
}
