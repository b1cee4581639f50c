//! `wkctl cluster ...`: read-only views of the cluster.

use anyhow::Context;

use crate::Outcome;
use crate::cli::{GlobalArgs, OutputFormat};
use crate::output;

/// `wkctl cluster status`: GET /cluster/nodes, rendered; exit 1 when the cluster is degraded.
pub async fn status(global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let client = crate::cmd::client(global)?;
    let resp = client.nodes().await.context("GET /cluster/nodes")?;
    let mut out = std::io::stdout().lock();
    match global.output {
        OutputFormat::Json => output::write_json(&mut out, &resp)?,
        OutputFormat::Text => output::write_text(&mut out, &output::nodes_text(&resp))?,
    }
    Ok(if output::verdict(&resp).healthy {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}
