//! The ready line: the one JSON line a node prints on stdout once it serves HTTP. `wkctl` and
//! the tests start nodes and key on it to learn the addresses the node actually bound.

use serde::{Deserialize, Serialize};

/// `{"event":"ready","node_id":1,"http_addr":"127.0.0.1:5001",...}`, printed by `wknode`
/// once its HTTP listener serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyLine {
    /// Always [`ReadyLine::EVENT`]: tells this line from anything else on stdout.
    pub event: String,
    pub node_id: u64,
    /// The HTTP address as advertised (`--http-advertise`, or the bound address).
    pub http_addr: String,
    /// The cluster transport address, as bound or advertised.
    pub cluster_addr: String,
    /// The client gateway's bound TCP address (WuKongIM's binary protocol); None when off.
    #[serde(default)]
    pub tcp_addr: Option<String>,
    /// The client gateway's bound WebSocket address (what the JS SDK connects to); None when off.
    #[serde(default)]
    pub ws_addr: Option<String>,
    /// HTTPS on `http_addr` and mutual TLS on `cluster_addr`.
    #[serde(default)]
    pub tls: bool,
    /// Started with `--insecure`.
    #[serde(default)]
    pub insecure: bool,
}

impl ReadyLine {
    /// The `event` of a ready line.
    pub const EVENT: &'static str = "ready";

    /// The ready line of a node serving on these addresses.
    pub fn new(node_id: u64, http_addr: &str, cluster_addr: &str, tls: bool, insecure: bool) -> ReadyLine {
        ReadyLine {
            event: ReadyLine::EVENT.into(),
            node_id,
            http_addr: http_addr.into(),
            cluster_addr: cluster_addr.into(),
            tcp_addr: None,
            ws_addr: None,
            tls,
            insecure,
        }
    }

    /// The same line with the client gateway's bound addresses.
    pub fn with_gateway(
        self,
        tcp: Option<impl std::fmt::Display>,
        ws: Option<impl std::fmt::Display>,
    ) -> ReadyLine {
        ReadyLine {
            tcp_addr: tcp.map(|a| a.to_string()),
            ws_addr: ws.map(|a| a.to_string()),
            ..self
        }
    }

    /// Reads one stdout line; `Err` says why it is not a ready line.
    pub fn parse(line: &str) -> Result<ReadyLine, String> {
        let r: ReadyLine = serde_json::from_str(line).map_err(|e| e.to_string())?;
        if r.event != ReadyLine::EVENT {
            return Err(format!("event {:?}, not {:?}", r.event, ReadyLine::EVENT));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_line_round_trips_and_other_lines_do_not_parse() {
        let r = ReadyLine::new(2, "127.0.0.1:5002", "127.0.0.1:11112", true, false);
        let line = serde_json::to_string(&r).expect("serializes");
        assert!(line.starts_with(r#"{"event":"ready","node_id":2,"#), "{line}");
        assert_eq!(ReadyLine::parse(&line), Ok(r));
        let minimal = r#"{"event":"ready","node_id":1,"http_addr":"a:1","cluster_addr":"a:2"}"#;
        assert!(ReadyLine::parse(minimal).is_ok_and(|r| !r.tls && !r.insecure));
        assert!(
            ReadyLine::parse(r#"{"event":"other","node_id":1,"http_addr":"","cluster_addr":""}"#).is_err()
        );
        assert!(ReadyLine::parse("2026-01-01 INFO serving").is_err());
    }
}
