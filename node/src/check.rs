//! `wknode --check-config FILE`: validate a configuration and say what the node would do with
//! it, without opening the data dir or binding a port.
//!
//! Three verdicts, as the exit code of [`run`]: 0 the node would start and can work, 1 it would
//! refuse to start or could not work with its peers ([`problems`]), 2 the configuration does not
//! parse (this includes TLS: `--tls-*` given partly, or files missing, unreadable or not valid
//! PEM, are parse errors, since the files are read with the configuration). [`warnings`] are things that work but are probably not meant (drills on, an even
//! number of replicas, no cluster secret beyond loopback). Secrets are reported as set or not,
//! never printed.
//!
//! The exposure rule (a non-loopback HTTP address needs both tokens or `--insecure`) lives
//! here, in [`exposure_refusal`]; the node applies the same function at start. TLS does not
//! change it: TLS protects the tokens on the wire, it does not replace them.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::config::{Args, Config};

/// Check `file` merged with the other flags and `WK_*` variables in `args` (the same merge as a
/// real start), print the description to stdout and return the exit code.
pub fn run(file: PathBuf, mut args: Args) -> i32 {
    args.config = Some(file);
    match Config::from_args(args) {
        Ok(cfg) => {
            // A closed stdout (`| head`) is not an error of the check.
            let _ = std::io::stdout().lock().write_all(describe(&cfg).as_bytes());
            if problems(&cfg).is_empty() { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("wknode: invalid configuration: {e:#}");
            2
        }
    }
}

/// Host and port of `HOST:PORT` (`[v6]:PORT` too); None if there is no numeric port.
fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((
        host.trim_start_matches('[').trim_end_matches(']'),
        port.parse().ok()?,
    ))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_unspecified(host: &str) -> bool {
    host.is_empty() || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// Whether the node bootstraps or joins a multi-node cluster (peers must reach it).
fn has_peers(cfg: &Config) -> bool {
    cfg.init_nodes.len() > 1 || cfg.seed.is_some()
}

/// What would make the node refuse to start, or leave it unable to work with its peers.
/// Why the node refuses to serve its API beyond loopback, if it does: that needs both tokens,
/// or `--insecure`.
pub fn exposure_refusal(cfg: &Config) -> Option<String> {
    let (host, _) = split_addr(&cfg.http_addr)?;
    let tokens = cfg.api_token.is_some() && cfg.admin_token.is_some();
    (!is_loopback(host) && !tokens && !cfg.insecure).then(|| {
        format!(
            "--http-addr {} is not a loopback address: the node refuses to start without --api-token and --admin-token (or --insecure)",
            cfg.http_addr
        )
    })
}

pub fn problems(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let http = split_addr(&cfg.http_addr);
    let cluster = split_addr(&cfg.cluster_addr);
    if http.is_none() {
        out.push(format!("--http-addr {:?} is not HOST:PORT", cfg.http_addr));
    }
    if cluster.is_none() {
        out.push(format!("--cluster-addr {:?} is not HOST:PORT", cfg.cluster_addr));
    }
    out.extend(exposure_refusal(cfg));
    if let (Some(h), Some(c)) = (http, cluster)
        && h.1 == c.1
        && h.1 != 0
        && (h.0 == c.0 || is_unspecified(h.0) || is_unspecified(c.0))
    {
        out.push(format!(
            "--http-addr {} and --cluster-addr {} use the same port",
            cfg.http_addr, cfg.cluster_addr
        ));
    }
    if let Some((host, port)) = cluster {
        if has_peers(cfg) && is_unspecified(host) {
            out.push(format!(
                "--cluster-addr {}: the node tells its peers the address it listens on, and they cannot reach {host:?}; \
                 listen on an address (or a name) the other nodes can reach",
                cfg.cluster_addr
            ));
        }
        if has_peers(cfg) && port == 0 {
            out.push(format!(
                "--cluster-addr {}: port 0 is only for tests; peers need a fixed port",
                cfg.cluster_addr
            ));
        }
    }
    if !cfg.init_nodes.is_empty() && !cfg.init_nodes.iter().any(|(id, _)| *id == cfg.node_id) {
        out.push(format!(
            "--init-nodes does not list this node's id {}: a new data dir refuses to start",
            cfg.node_id
        ));
    }
    if let Some((id, _)) = &cfg.seed
        && *id == cfg.node_id
    {
        out.push(format!(
            "--seed names this node ({id}): a seed is another member of the cluster to join"
        ));
    }
    if cfg.data_dir.exists() && !cfg.data_dir.is_dir() {
        out.push(format!(
            "--data-dir {} exists and is not a directory",
            cfg.data_dir.display()
        ));
    }
    out
}

/// What works but is probably not meant.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let cluster_host = split_addr(&cfg.cluster_addr).map(|(h, _)| h).unwrap_or_default();
    if let Some((_, listed)) = cfg.init_nodes.iter().find(|(id, _)| *id == cfg.node_id)
        && *listed != cfg.cluster_addr
    {
        out.push(format!(
            "--init-nodes lists this node at {listed} but it listens on {}; fine only if {listed} reaches it",
            cfg.cluster_addr
        ));
    }
    if !has_peers(cfg) && is_unspecified(cluster_host) {
        out.push(format!(
            "--cluster-addr {} is advertised as is: nodes added later could not reach this one",
            cfg.cluster_addr
        ));
    }
    if !cfg.init_nodes.is_empty() && cfg.seed.is_some() {
        out.push(
            "both --init-nodes and --seed: a new data dir bootstraps from --init-nodes and ignores --seed"
                .into(),
        );
    }
    if cfg.auto_join && cfg.seed.is_none() {
        out.push("--auto-join has no effect without --seed".into());
    }
    if cfg.init_nodes.len() > 1 && cfg.init_nodes.len().is_multiple_of(2) {
        out.push(format!(
            "{} bootstrap members tolerate as many failures as {}; an odd number is cheaper",
            cfg.init_nodes.len(),
            cfg.init_nodes.len() - 1
        ));
    }
    if cfg.channel_replicas.is_multiple_of(2) {
        out.push(format!(
            "--channel-replicas {} tolerates as many failures as {}; use an odd number",
            cfg.channel_replicas,
            cfg.channel_replicas - 1
        ));
    }
    if !cfg.init_nodes.is_empty() && cfg.channel_replicas > cfg.init_nodes.len() {
        out.push(format!(
            "--channel-replicas {} is more than the {} bootstrap members: channels get {} until nodes join",
            cfg.channel_replicas,
            cfg.init_nodes.len(),
            cfg.init_nodes.len()
        ));
    }
    if cfg.allow_drills {
        out.push(
            "--allow-drills: anyone with the admin token can crash, isolate or slow down this node".into(),
        );
    }
    if cfg.insecure && !(cfg.api_token.is_some() && cfg.admin_token.is_some()) {
        out.push("--insecure: the API is served without tokens".into());
    }
    if cfg.public_cluster_read && cfg.api_token.is_none() {
        out.push("--public-cluster-read has no effect without --api-token".into());
    }
    if cfg.cluster_secret.is_none() && !is_loopback(cluster_host) {
        out.push("no --cluster-secret: anything that reaches the cluster port can act as a node".into());
    }
    if cfg.channel_idle_timeout < std::time::Duration::from_secs(1) {
        out.push(format!(
            "--channel-idle-timeout {:?}: channels hibernate between almost every request",
            cfg.channel_idle_timeout
        ));
    }
    out
}

fn set(s: &Option<crate::config::Secret>) -> &'static str {
    if s.is_some() { "set" } else { "not set" }
}

fn members(list: &[(u64, String)]) -> String {
    list.iter()
        .map(|(id, a)| format!("{id}@{a}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A human description of what the node would do with `cfg`, then its problems and warnings.
pub fn describe(cfg: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "wknode {} would run node {}:",
        env!("CARGO_PKG_VERSION"),
        cfg.node_id
    );

    let lmdb = cfg.data_dir.join("lmdb").join("data.mdb");
    let data = if lmdb.is_file() {
        "holds a node's data: it resumes from it; --init-nodes and --seed only matter for a new data dir"
    } else if cfg.data_dir.is_dir() {
        "exists, no data yet: starts as a new node"
    } else {
        "does not exist: created on start, as a new node"
    };
    let _ = writeln!(s, "  data dir           {} ({data})", cfg.data_dir.display());

    let http_scope = match split_addr(&cfg.http_addr) {
        Some((h, _)) if is_loopback(h) => "loopback only",
        Some((h, _)) if is_unspecified(h) => "all interfaces",
        Some(_) => "one interface",
        None => "invalid",
    };
    let _ = writeln!(
        s,
        "  HTTP API           {} ({http_scope}; client token {}, admin token {}{}{})",
        cfg.http_addr,
        set(&cfg.api_token),
        set(&cfg.admin_token),
        if cfg.public_cluster_read {
            ", client token may read /cluster"
        } else {
            ""
        },
        if cfg.insecure { ", --insecure" } else { "" },
    );
    let _ = writeln!(
        s,
        "  IM client gateway  TCP {}, WebSocket {} (users' tokens; at most {} connections)",
        cfg.gateway.tcp_addr.as_deref().unwrap_or("off"),
        cfg.gateway.ws_addr.as_deref().unwrap_or("off"),
        cfg.gateway.max_connections,
    );
    let _ = writeln!(
        s,
        "  cluster transport  {} (cluster secret {})",
        cfg.cluster_addr,
        set(&cfg.cluster_secret)
    );
    let tls = match &cfg.tls {
        Some(t) => format!(
            "on: HTTPS with {}; mutual TLS between nodes, peers verified against {}",
            t.files.cert.display(),
            t.files.ca.display()
        ),
        None => "off: plain HTTP and TCP (--tls-cert, --tls-key, --tls-ca)".to_string(),
    };
    let _ = writeln!(s, "  TLS                {tls}");

    let start = match (&cfg.init_nodes[..], &cfg.seed) {
        ([], None) => "a single-node cluster of itself (others can join later through it)".to_string(),
        ([], Some((id, addr))) if cfg.auto_join => {
            format!("join the cluster through node {id} at {addr} and admit itself (--auto-join)")
        }
        ([], Some((id, addr))) => {
            format!(
                "join the cluster through node {id} at {addr}; waits as `joining` until `wkctl cluster join`"
            )
        }
        (list, _) => format!(
            "bootstrap a new cluster of {} nodes: {}",
            list.len(),
            members(list)
        ),
    };
    let _ = writeln!(s, "  on a new data dir  {start}");
    let _ = writeln!(
        s,
        "  channels           {} replicas each (capped by the cluster size); idle ones hibernate after {:?}; at most {} running",
        cfg.channel_replicas, cfg.channel_idle_timeout, cfg.max_active_channels
    );
    let _ = writeln!(
        s,
        "  drills             {}",
        if cfg.allow_drills {
            "accepted (--allow-drills)"
        } else {
            "refused"
        }
    );

    let (problems, warnings) = (problems(cfg), warnings(cfg));
    for (title, list) in [("problems", &problems), ("warnings", &warnings)] {
        if !list.is_empty() {
            let _ = writeln!(s, "{title}:");
            for p in list {
                let _ = writeln!(s, "  - {p}");
            }
        }
    }
    let _ = match problems.len() {
        0 => writeln!(s, "ok: the configuration is valid"),
        n => writeln!(s, "refused: {n} problem(s)"),
    };
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(toml: &str) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n.toml");
        std::fs::write(&path, toml).expect("write");
        Config::from_args(Args {
            config: Some(path),
            ..Default::default()
        })
        .expect("valid config")
    }

    const TOKENS: &str =
        "api_token = \"secret-client\"\nadmin_token = \"secret-admin\"\ncluster_secret = \"secret-peers\"\n";
    const THREE: &str = "init_nodes = \"1@10.0.0.1:11110,2@10.0.0.2:11110,3@10.0.0.3:11110\"\n";

    /// (config, substring of a problem or "" for none, substring of a warning or "" for any)
    #[test]
    fn verdicts() {
        let cases: Vec<(String, &str, &str)> = vec![
            (String::new(), "", ""),
            (
                "http_addr = \"0.0.0.0:5001\"\n".into(),
                "not a loopback address",
                "",
            ),
            (format!("http_addr = \"0.0.0.0:5001\"\n{TOKENS}"), "", ""),
            (
                "http_addr = \"0.0.0.0:5001\"\ninsecure = true\n".into(),
                "",
                "without tokens",
            ),
            (format!("http_addr = \"nocolon\"\n{TOKENS}"), "not HOST:PORT", ""),
            (
                format!("cluster_addr = \"0.0.0.0:11110\"\n{THREE}"),
                "cannot reach",
                "",
            ),
            (
                format!("cluster_addr = \"10.0.0.1:11110\"\n{THREE}{TOKENS}"),
                "",
                "",
            ),
            (
                format!("node_id = 4\ncluster_addr = \"10.0.0.4:11110\"\n{THREE}"),
                "does not list this node",
                "",
            ),
            (
                "node_id = 2\nseed = \"2@10.0.0.1:11110\"\n".into(),
                "names this node",
                "",
            ),
            ("cluster_addr = \"127.0.0.1:5001\"\n".into(), "same port", ""),
            ("auto_join = true\n".into(), "", "no effect without --seed"),
            ("channel_replicas = 2\n".into(), "", "odd number"),
            ("allow_drills = true\n".into(), "", "crash"),
            (
                format!("cluster_addr = \"10.0.0.9:11110\"\n{THREE}"),
                "",
                "fine only if",
            ),
            (
                "cluster_addr = \"10.0.0.1:11110\"\n".into(),
                "",
                "no --cluster-secret",
            ),
        ];
        for (toml, problem, warning) in cases {
            let c = cfg(&toml);
            let (p, w) = (problems(&c), warnings(&c));
            if problem.is_empty() {
                assert!(p.is_empty(), "{toml:?}: unexpected problems {p:?}");
            } else {
                assert!(
                    p.iter().any(|x| x.contains(problem)),
                    "{toml:?}: no problem with {problem:?} in {p:?}"
                );
            }
            if !warning.is_empty() {
                assert!(
                    w.iter().any(|x| x.contains(warning)),
                    "{toml:?}: no warning with {warning:?} in {w:?}"
                );
            }
            let text = describe(&c);
            assert!(
                text.ends_with(if p.is_empty() { "valid\n" } else { "problem(s)\n" }),
                "{text}"
            );
        }
    }

    #[test]
    fn describe_says_what_happens_and_hides_secrets() {
        let c = cfg(&format!(
            "node_id = 1\nhttp_addr = \"0.0.0.0:5001\"\ncluster_addr = \"10.0.0.1:11110\"\n{THREE}{TOKENS}"
        ));
        let text = describe(&c);
        for want in [
            "node 1",
            "bootstrap a new cluster of 3 nodes",
            "all interfaces",
            "client token set",
            "cluster secret set",
            "IM client gateway  TCP 127.0.0.1:5100, WebSocket 127.0.0.1:5200",
            "ok:",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
        assert!(!text.contains("secret-"), "a secret is printed:\n{text}");
        let joiner = cfg("node_id = 4\nseed = \"1@10.0.0.1:11110\"\nauto_join = true\n");
        assert!(describe(&joiner).contains("admit itself"));
    }
}
