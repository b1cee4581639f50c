//! Scale-out from the dashboard (`s`): what to do ([`ScaleRequest`]) and how a local cluster
//! (`wkctl demo`) starts one more node, or restarts one it killed ([`Launcher`]). The poller
//! performs it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Where a freshly started node listens (from its ready line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    pub node_id: u64,
    pub cluster_addr: String,
    pub http_addr: String,
}

/// The future a [`Launcher`] returns: the started node, or why it could not start.
pub type LaunchFuture = Pin<Box<dyn Future<Output = Result<Launched, String>> + Send>>;

/// What a [`Launcher`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// One more node, with `--seed` (it waits to be admitted): a scale-out.
    Next,
    /// Node N again, on its ports and data dir (it was killed).
    Restart(u64),
}

/// Starts a local `wknode` ([`Launch`]) and resolves once it printed its ready line. Only a
/// local cluster (`wkctl demo`) has one.
pub type Launcher = Arc<dyn Fn(Launch) -> LaunchFuture + Send + Sync>;

/// A scale-out the operator confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleRequest {
    /// Start a local node through the [`Launcher`], then admit it.
    Local,
    /// Admit a node that already runs with `--seed`: `POST /cluster/join`.
    Admit { node_id: u64, cluster_addr: String },
}

/// `ID@HOST:PORT` as typed by the operator.
pub fn parse_member(s: &str) -> Result<ScaleRequest, String> {
    let s = s.trim();
    let (id, addr) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?} is not ID@HOST:PORT"))?;
    let node_id: u64 = id
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("node id {id:?} is not a positive number"))?;
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} has no :PORT"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{addr:?} is not HOST:PORT"));
    }
    Ok(ScaleRequest::Admit {
        node_id,
        cluster_addr: addr.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse() {
        assert_eq!(
            parse_member(" 4@10.0.0.4:11110 "),
            Ok(ScaleRequest::Admit {
                node_id: 4,
                cluster_addr: "10.0.0.4:11110".into()
            })
        );
        for bad in ["", "4", "x@h:1", "0@h:1", "4@h", "4@:1", "4@h:port", "4@h:70000"] {
            assert!(parse_member(bad).is_err(), "{bad:?}");
        }
    }
}
