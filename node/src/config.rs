//! Node configuration: command-line flags, `WK_<NAME>` environment variables and an optional
//! TOML file (`--config`), in that order of precedence, then the defaults.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;

/// WuKong HA cluster node: WuKongIM's data layer on per-channel Raft groups over LMDB.
#[derive(Debug, Parser, Default)]
#[command(name = "wknode", version)]
pub struct Args {
    /// Validate this config file (with the other flags and WK_* variables), print what the node
    /// would do and exit: 0 valid, 1 it would refuse to start, 2 unreadable.
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,
    /// Restore a snapshot file (`wkctl snapshot save`) into a new data dir (--data-dir, default
    /// ./wukong-data/<id>) as node --node-id (default: the snapshot's node), then exit: 0 done,
    /// 2 refused (corrupt or truncated file, data dir in use). Start the node afterwards without
    /// --init-nodes or --seed: it bootstraps a new one-node cluster holding the data.
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    pub restore: Option<PathBuf>,
    /// TOML file with any of the settings below (flag names with `_`, e.g. `node_id = 2`).
    #[arg(long, env = "WK_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id (u64, unique in the cluster) [default: 1].
    #[arg(long, env = "WK_NODE_ID")]
    pub node_id: Option<u64>,
    /// Where the node keeps its LMDB environment [default: ./wukong-data/<id>].
    #[arg(long, env = "WK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Client HTTP API listen address (port 0 picks a free port) [default: 127.0.0.1:5001].
    #[arg(long, env = "WK_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// The HTTP address this node is listed under in `/cluster/nodes`, which wkctl and the
    /// dashboard connect to (behind NAT or a port mapping) [default: --http-addr, with a
    /// wildcard IP (0.0.0.0, [::]) replaced by --cluster-addr's host].
    #[arg(long, env = "WK_HTTP_ADVERTISE")]
    pub http_advertise: Option<String>,
    /// Client gateway: WuKongIM's binary protocol over TCP for the IM SDKs ("off" disables it;
    /// port 0 picks a free port) [default: 127.0.0.1:5100].
    #[arg(long, env = "WK_TCP_ADDR")]
    pub tcp_addr: Option<String>,
    /// Client gateway: the same protocol over WebSocket, binary messages ("off" disables it;
    /// port 0 picks a free port) [default: 127.0.0.1:5200].
    #[arg(long, env = "WK_WS_ADDR")]
    pub ws_addr: Option<String>,
    /// The TCP gateway address `/route` hands to clients, HOST:PORT [default: the bound
    /// --tcp-addr, with a wildcard IP replaced by --cluster-addr's host].
    #[arg(long, env = "WK_TCP_ADVERTISE")]
    pub tcp_advertise: Option<String>,
    /// The WebSocket gateway address `/route` hands to clients (as ws://HOST:PORT), HOST:PORT
    /// [default: the bound --ws-addr, with a wildcard IP replaced by --cluster-addr's host].
    #[arg(long, env = "WK_WS_ADVERTISE")]
    pub ws_advertise: Option<String>,
    /// Most open client connections (TCP and WebSocket together); more are closed at once
    /// [default: 10000].
    #[arg(long, env = "WK_MAX_CLIENT_CONNECTIONS")]
    pub max_client_connections: Option<usize>,
    /// Cluster transport listen address [default: 127.0.0.1:11110].
    #[arg(long, env = "WK_CLUSTER_ADDR")]
    pub cluster_addr: Option<String>,
    /// Bootstrap a new cluster of these members, e.g. "1@127.0.0.1:11110,2@127.0.0.1:11111"
    /// (the same string on every member; ignored once the data dir holds a cluster).
    #[arg(long, env = "WK_INIT_NODES")]
    pub init_nodes: Option<String>,
    /// Join an existing cluster through this member, ID@HOST:PORT; the node waits in state
    /// `joining` until an operator admits it.
    #[arg(long, env = "WK_SEED")]
    pub seed: Option<String>,
    /// Replicas per channel, capped by the cluster size [default: 3].
    #[arg(long, env = "WK_CHANNEL_REPLICAS")]
    pub channel_replicas: Option<usize>,
    /// A channel with no reads or writes for this long hibernates ("60s", "500ms") [default: 60s].
    #[arg(long, env = "WK_CHANNEL_IDLE_TIMEOUT")]
    pub channel_idle_timeout: Option<String>,
    /// Most channel groups a node keeps running; the least recently used hibernate first
    /// [default: 10000].
    #[arg(long, env = "WK_MAX_ACTIVE_CHANNELS")]
    pub max_active_channels: Option<usize>,
    /// With --seed: admit this node by itself instead of waiting for `wkctl cluster join`.
    #[arg(long, env = "WK_AUTO_JOIN")]
    pub auto_join: bool,
    /// Accept fault-injection drills (crash, isolate, slow-disk) on `POST /cluster/drill`.
    #[arg(long, env = "WK_ALLOW_DRILLS")]
    pub allow_drills: bool,
    /// Token every WuKongIM API request must carry in header `token`.
    #[arg(long, env = "WK_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Token for the operator API (`/cluster/...`), separate from the client token.
    #[arg(long, env = "WK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Also accept the client token on the read-only `/cluster/...` endpoints.
    #[arg(long, env = "WK_PUBLIC_CLUSTER_READ")]
    pub public_cluster_read: bool,
    /// Shared secret that authenticates every node-to-node connection (never sent).
    #[arg(long, env = "WK_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Allow a non-loopback HTTP address without --api-token and --admin-token.
    #[arg(long, env = "WK_INSECURE")]
    pub insecure: bool,
    /// PEM certificate chain of this node (leaf first): HTTPS on --http-addr and mutual TLS on
    /// --cluster-addr. Needs --tls-key and --tls-ca; without all three, no TLS.
    #[arg(long, env = "WK_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WK_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate of the CA that signs every node's certificate; peers must present a
    /// certificate from it.
    #[arg(long, env = "WK_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Most open HTTP connections; one more is answered 503 and closed [default: 1024].
    #[arg(long, env = "WK_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most HTTP requests served at once; more are answered 503 `overloaded` [default: 512].
    #[arg(long, env = "WK_MAX_INFLIGHT_REQUESTS")]
    pub max_inflight_requests: Option<usize>,
    /// Most sends (`/message/send`, `/message/sendbatch`) served at once by this node; more are
    /// answered 503 `overloaded` with `retry_after` [default: 256].
    #[arg(long, env = "WK_MAX_INFLIGHT_SENDS")]
    pub max_inflight_sends: Option<usize>,
    /// A client must send a request's headers within this; also how long an idle keep-alive
    /// connection is kept [default: 10s].
    #[arg(long, env = "WK_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// A client must send a request's body within this, or gets 408 [default: 30s].
    #[arg(long, env = "WK_BODY_TIMEOUT")]
    pub body_timeout: Option<String>,
    /// Log lines as `text` or `json` (one object per line); the level filter is `RUST_LOG`.
    #[arg(long, env = "WK_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
}

/// A secret value: compared in constant time, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Option<Secret> {
        (!s.is_empty()).then_some(Secret(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so response timing does not leak the secret.
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u64>,
    data_dir: Option<PathBuf>,
    http_addr: Option<String>,
    http_advertise: Option<String>,
    tcp_addr: Option<String>,
    ws_addr: Option<String>,
    tcp_advertise: Option<String>,
    ws_advertise: Option<String>,
    max_client_connections: Option<usize>,
    cluster_addr: Option<String>,
    init_nodes: Option<String>,
    seed: Option<String>,
    channel_replicas: Option<usize>,
    channel_idle_timeout: Option<String>,
    max_active_channels: Option<usize>,
    auto_join: Option<bool>,
    allow_drills: Option<bool>,
    api_token: Option<String>,
    admin_token: Option<String>,
    public_cluster_read: Option<bool>,
    cluster_secret: Option<String>,
    insecure: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    max_connections: Option<usize>,
    max_inflight_requests: Option<usize>,
    max_inflight_sends: Option<usize>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub http_addr: String,
    /// `--http-advertise`, if given (see `advertised_http`).
    pub http_advertise: Option<String>,
    pub cluster_addr: String,
    /// Bootstrap members as (id, cluster address); empty when not bootstrapping.
    pub init_nodes: Vec<(u64, String)>,
    pub seed: Option<(u64, String)>,
    pub channel_replicas: usize,
    pub channel_idle_timeout: std::time::Duration,
    pub max_active_channels: usize,
    pub auto_join: bool,
    pub allow_drills: bool,
    pub api_token: Option<Secret>,
    pub admin_token: Option<Secret>,
    pub public_cluster_read: bool,
    pub cluster_secret: Option<Secret>,
    pub insecure: bool,
    /// TLS for the HTTP listener and the cluster transport (`--tls-*`), read and checked at
    /// parse time; None: plain TCP.
    pub tls: Option<crate::tls::Tls>,
    /// What one node accepts from HTTP clients at once (`api::limits`).
    pub limits: HttpLimits,
    /// The client gateway's listeners and limits (`gateway`).
    pub gateway: GatewayConfig,
}

/// Where the client gateway listens and what it accepts.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// TCP listen address; None: `--tcp-addr off`.
    pub tcp_addr: Option<String>,
    /// WebSocket listen address; None: `--ws-addr off`.
    pub ws_addr: Option<String>,
    /// `--tcp-advertise`, if given (see `advertised_http`, which applies to these too).
    pub tcp_advertise: Option<String>,
    /// `--ws-advertise`, if given.
    pub ws_advertise: Option<String>,
    /// Most open client connections, both listeners together.
    pub max_connections: usize,
}

/// Bounds on what HTTP clients can make a node hold: connections, requests and sends in
/// flight, and how long a slow client may take to send a request.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_inflight_requests: usize,
    pub max_inflight_sends: usize,
    pub header_timeout: std::time::Duration,
    pub body_timeout: std::time::Duration,
}

/// Parse "60s", "500ms", "2m" or a bare number of seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .with_context(|| format!("{s:?} is not a duration like 60s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("{s:?}: unknown unit {unit:?} (ms, s, m, h)"),
    };
    if !secs.is_finite() || secs < 0.0 {
        bail!("{s:?} is not a valid duration");
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Parse `ID@HOST:PORT`.
pub fn parse_member(s: &str) -> anyhow::Result<(u64, String)> {
    let (id, addr) = s
        .trim()
        .split_once('@')
        .with_context(|| format!("{s:?} is not ID@HOST:PORT"))?;
    let id: u64 = id
        .parse()
        .with_context(|| format!("{s:?}: node id must be a number"))?;
    if !addr.contains(':') {
        bail!("{s:?}: address must be HOST:PORT");
    }
    Ok((id, addr.to_string()))
}

/// The TLS files: all three or none (an empty value counts as not given).
fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> anyhow::Result<Option<crate::tls::TlsFiles>> {
    let given = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    match (given(cert), given(key), given(ca)) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(crate::tls::TlsFiles { cert, key, ca })),
        (cert, key, ca) => {
            let names = ["--tls-cert", "--tls-key", "--tls-ca"];
            let set = [cert.is_some(), key.is_some(), ca.is_some()];
            let list = |want: bool| {
                names
                    .iter()
                    .zip(set)
                    .filter(|(_, s)| *s == want)
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            bail!(
                "TLS needs all three of --tls-cert, --tls-key and --tls-ca: {} given without {}",
                list(true),
                list(false)
            )
        }
    }
}

/// A listen address that may be `off`: None when off.
fn listen_addr(flag: &str, value: Option<String>, default: &str) -> anyhow::Result<Option<String>> {
    let value = value.unwrap_or_else(|| default.to_string());
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match value.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => Ok(Some(value)),
        _ => bail!("{flag} {value:?}: must be HOST:PORT or off"),
    }
}

/// An advertised address: HOST:PORT.
fn advertise(flag: &str, value: Option<String>) -> anyhow::Result<Option<String>> {
    value
        .map(|a| match a.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(a),
            _ => Err(anyhow::anyhow!("{flag} {a:?}: must be HOST:PORT")),
        })
        .transpose()
}

/// The HTTP address the node registers for itself: `--http-advertise` if given, else the bound
/// address, with a wildcard IP replaced by the cluster address's host. A node bound to
/// 0.0.0.0 once registered "0.0.0.0:5001", which wkctl on another host cannot reach; the
/// cluster address must already be one the other hosts reach.
pub fn advertised_http(bound: std::net::SocketAddr, cluster_addr: &str, explicit: Option<&str>) -> String {
    if let Some(a) = explicit {
        return a.to_string();
    }
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    match cluster_addr.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            match host.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.is_unspecified() => bound.to_string(),
                Ok(ip) => std::net::SocketAddr::new(ip, bound.port()).to_string(),
                Err(_) => format!("{host}:{}", bound.port()),
            }
        }
        _ => bound.to_string(),
    }
}

impl Config {
    pub fn from_args(args: Args) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => {
                let meta = std::fs::metadata(path).with_context(|| format!("read {}", path.display()))?;
                if meta.len() > 1 << 20 {
                    bail!("{} is larger than 1 MiB", path.display());
                }
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
                toml::from_str::<FileConfig>(&text).with_context(|| format!("parse {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let node_id = args.node_id.or(file.node_id).unwrap_or(1);
        if !(1..=crate::cluster::ids::MAX_NODE_ID).contains(&node_id) {
            bail!(
                "--node-id {node_id} is out of range: node ids are 1 to {} (message ids carry the node id in 10 bits)",
                crate::cluster::ids::MAX_NODE_ID
            );
        }
        let init_nodes = match args.init_nodes.or(file.init_nodes) {
            Some(s) => s
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(parse_member)
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let mut seen = std::collections::HashSet::new();
        for (id, _) in &init_nodes {
            if !seen.insert(*id) {
                bail!("--init-nodes lists node {id} twice");
            }
            if !(1..=crate::cluster::ids::MAX_NODE_ID).contains(id) {
                bail!(
                    "--init-nodes lists node {id}: node ids are 1 to {}",
                    crate::cluster::ids::MAX_NODE_ID
                );
            }
        }
        let channel_replicas = args.channel_replicas.or(file.channel_replicas).unwrap_or(3);
        if channel_replicas == 0 {
            bail!("--channel-replicas must be at least 1");
        }
        let limits = HttpLimits {
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(1024)
                .max(1),
            max_inflight_requests: args
                .max_inflight_requests
                .or(file.max_inflight_requests)
                .unwrap_or(512)
                .max(1),
            max_inflight_sends: args
                .max_inflight_sends
                .or(file.max_inflight_sends)
                .unwrap_or(256)
                .max(1),
            header_timeout: parse_duration(
                args.header_timeout
                    .or(file.header_timeout)
                    .as_deref()
                    .unwrap_or("10s"),
            )
            .context("--header-timeout")?,
            body_timeout: parse_duration(
                args.body_timeout
                    .or(file.body_timeout)
                    .as_deref()
                    .unwrap_or("30s"),
            )
            .context("--body-timeout")?,
        };
        // Zero would cut every connection (and every body) at once.
        if limits.header_timeout.is_zero() || limits.body_timeout.is_zero() {
            bail!("--header-timeout and --body-timeout must be more than 0");
        }
        let tls = tls_files(
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_ca.or(file.tls_ca),
        )?
        .map(crate::tls::Tls::load)
        .transpose()?;
        let gateway = GatewayConfig {
            tcp_addr: listen_addr("--tcp-addr", args.tcp_addr.or(file.tcp_addr), "127.0.0.1:5100")?,
            ws_addr: listen_addr("--ws-addr", args.ws_addr.or(file.ws_addr), "127.0.0.1:5200")?,
            tcp_advertise: advertise("--tcp-advertise", args.tcp_advertise.or(file.tcp_advertise))?,
            ws_advertise: advertise("--ws-advertise", args.ws_advertise.or(file.ws_advertise))?,
            max_connections: args
                .max_client_connections
                .or(file.max_client_connections)
                .unwrap_or(10_000)
                .max(1),
        };
        Ok(Config {
            node_id,
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(format!("./wukong-data/{node_id}"))),
            http_addr: args
                .http_addr
                .or(file.http_addr)
                .unwrap_or_else(|| "127.0.0.1:5001".into()),
            http_advertise: advertise("--http-advertise", args.http_advertise.or(file.http_advertise))?,
            cluster_addr: args
                .cluster_addr
                .or(file.cluster_addr)
                .unwrap_or_else(|| "127.0.0.1:11110".into()),
            init_nodes,
            seed: args.seed.or(file.seed).map(|s| parse_member(&s)).transpose()?,
            channel_replicas,
            channel_idle_timeout: parse_duration(
                args.channel_idle_timeout
                    .or(file.channel_idle_timeout)
                    .as_deref()
                    .unwrap_or("60s"),
            )
            .context("--channel-idle-timeout")?,
            max_active_channels: args
                .max_active_channels
                .or(file.max_active_channels)
                .unwrap_or(10_000)
                .max(1),
            auto_join: args.auto_join || file.auto_join.unwrap_or(false),
            allow_drills: args.allow_drills || file.allow_drills.unwrap_or(false),
            api_token: args.api_token.or(file.api_token).and_then(Secret::new),
            admin_token: args.admin_token.or(file.admin_token).and_then(Secret::new),
            public_cluster_read: args.public_cluster_read || file.public_cluster_read.unwrap_or(false),
            cluster_secret: args.cluster_secret.or(file.cluster_secret).and_then(Secret::new),
            insecure: args.insecure || file.insecure.unwrap_or(false),
            tls,
            limits,
            gateway,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_defaults_fill_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n.toml");
        std::fs::write(
            &path,
            "node_id = 2\nhttp_addr = \"127.0.0.1:7000\"\ninit_nodes = \"1@a:1,2@b:2\"\n",
        )
        .expect("write");
        let args = Args {
            config: Some(path),
            http_addr: Some("127.0.0.1:8000".into()),
            ..Default::default()
        };
        let c = Config::from_args(args).expect("valid");
        assert_eq!(c.node_id, 2);
        assert_eq!(c.http_addr, "127.0.0.1:8000");
        assert_eq!(c.init_nodes, vec![(1, "a:1".to_string()), (2, "b:2".to_string())]);
        assert_eq!(c.data_dir, PathBuf::from("./wukong-data/2"));
        assert_eq!(c.channel_replicas, 3);
        assert_eq!(c.channel_idle_timeout, std::time::Duration::from_secs(60));
    }

    /// Message ids carry the node id in 10 bits: ids that do not fit are refused at start-up.
    #[test]
    fn node_ids_must_fit_in_a_message_id() {
        for (id, init) in [(0, None), (1024, None), (2, Some("2@a:1,5000@b:2"))] {
            let args = Args {
                node_id: Some(id),
                init_nodes: init.map(String::from),
                ..Default::default()
            };
            let err = Config::from_args(args).expect_err("out of range").to_string();
            assert!(err.contains("node ids are 1 to 1023"), "{err}");
        }
        let args = Args {
            node_id: Some(1023),
            ..Default::default()
        };
        assert!(Config::from_args(args).is_ok());
    }

    #[test]
    fn an_advertised_http_address_needs_a_port() {
        for bad in ["im.example.com", ":5001", "host:port", "host:70000"] {
            let args = Args {
                http_advertise: Some(bad.into()),
                ..Default::default()
            };
            let err = Config::from_args(args).expect_err(bad).to_string();
            assert!(err.contains("--http-advertise"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_advertised_http_address_is_reachable() {
        let any: std::net::SocketAddr = "0.0.0.0:5001".parse().expect("addr");
        assert_eq!(advertised_http(any, "10.0.0.1:11110", None), "10.0.0.1:5001");
        assert_eq!(advertised_http(any, "wk-1.wk:11110", None), "wk-1.wk:5001");
        assert_eq!(
            advertised_http("[::]:5001".parse().expect("addr"), "[fd00::1]:11110", None),
            "[fd00::1]:5001"
        );
        assert_eq!(advertised_http(any, "0.0.0.0:11110", None), "0.0.0.0:5001");
        assert_eq!(
            advertised_http("127.0.0.1:7000".parse().expect("addr"), "10.0.0.1:11110", None),
            "127.0.0.1:7000"
        );
        assert_eq!(
            advertised_http(any, "10.0.0.1:11110", Some("im.example.com:443")),
            "im.example.com:443"
        );
    }

    #[test]
    fn gateway_addresses_default_to_wukongims_ports_and_can_be_off() {
        let c = Config::from_args(Args::default()).expect("defaults");
        assert_eq!(c.gateway.tcp_addr.as_deref(), Some("127.0.0.1:5100"));
        assert_eq!(c.gateway.ws_addr.as_deref(), Some("127.0.0.1:5200"));
        let c = Config::from_args(Args {
            tcp_addr: Some("off".into()),
            ws_addr: Some("0.0.0.0:0".into()),
            ..Default::default()
        })
        .expect("off and port 0");
        assert_eq!(c.gateway.tcp_addr, None);
        assert_eq!(c.gateway.ws_addr.as_deref(), Some("0.0.0.0:0"));
        for (args, flag) in [
            (
                Args {
                    tcp_addr: Some("nowhere".into()),
                    ..Default::default()
                },
                "--tcp-addr",
            ),
            (
                Args {
                    ws_advertise: Some("im.example.com".into()),
                    ..Default::default()
                },
                "--ws-advertise",
            ),
        ] {
            let err = format!("{:#}", Config::from_args(args).expect_err(flag));
            assert!(err.contains(flag), "{err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("500ms").expect("ms"),
            std::time::Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("2m").expect("m"),
            std::time::Duration::from_secs(120)
        );
        assert_eq!(
            parse_duration("7").expect("bare"),
            std::time::Duration::from_secs(7)
        );
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for (init, want) in [
            ("x@a:1", "node id"),
            ("1@nocolon", "HOST:PORT"),
            ("1@a:1,1@b:2", "twice"),
        ] {
            let err = Config::from_args(Args {
                init_nodes: Some(init.into()),
                ..Default::default()
            })
            .expect_err(init);
            assert!(format!("{err:#}").contains(want), "{init}: {err:#}");
        }
        let err = Config::from_args(Args {
            header_timeout: Some("0s".into()),
            ..Default::default()
        })
        .expect_err("zero header timeout");
        assert!(format!("{err:#}").contains("more than 0"), "{err:#}");
        let err = Config::from_args(Args {
            tls_cert: Some("node.pem".into()),
            ..Default::default()
        })
        .expect_err("a certificate alone");
        assert!(
            format!("{err:#}").contains("--tls-cert given without --tls-key and --tls-ca"),
            "{err:#}"
        );
        let err = Config::from_args(Args {
            tls_cert: Some("/nonexistent/node.pem".into()),
            tls_key: Some("/nonexistent/node.key".into()),
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        })
        .expect_err("missing files");
        assert!(
            format!("{err:#}").contains("--tls-cert /nonexistent/node.pem"),
            "{err:#}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n.toml");
        std::fs::write(&path, "no_such_key = 1\n").expect("write");
        assert!(
            Config::from_args(Args {
                config: Some(path),
                ..Default::default()
            })
            .is_err()
        );
    }
}
