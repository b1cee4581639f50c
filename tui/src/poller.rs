//! The only module that does I/O: asks the cluster for a snapshot and turns the answer into
//! an [`Action`] for [`App::update`](crate::app::App::update).

use std::time::Instant;

use wk_api::Client;

use crate::app::Action;

/// One poll of `GET /cluster/nodes`; errors become an action too, so the UI can show them.
pub async fn poll_once(client: &Client) -> Action {
    match client.nodes().await {
        Ok(nodes) => Action::Snapshot {
            nodes,
            at: Instant::now(),
        },
        Err(e) => Action::PollFailed(e.to_string()),
    }
}
