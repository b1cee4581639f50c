//! `wkctl` as a library: the operator's command line for WuKong HA, and the harnesses its
//! commands and tests share. `main.rs` only parses the arguments, runs [`run`] and turns its
//! [`Outcome`] into the exit code.
//!
//! It owns argument parsing (`cli`), one module per subcommand laid out like the CLI (`cmd`),
//! the text/JSON rendering of results (`output`; `render` for the operator commands), and two
//! harnesses every command and test reuses instead of a copy of their own:
//! - [`local::LocalCluster`]: a cluster of real `wknode` child processes on loopback (`wkctl
//!   demo`, `wkctl bench`, `wkctl drill`, ctl's integration tests), with kill, pause, resume,
//!   restart on the same ports and data dir, and seeded nodes that join;
//! - [`wait`]: "wait until" with a deadline and a description, and the cluster conditions the
//!   commands wait on (a leader, a leader change, replicas that agree, a replica caught up).
//!
//! It talks to nodes only through the shared API crate (`wk_api::Client` and its wire types)
//! and, for local clusters and `wkctl snapshot restore`, by running the `wknode` binary as child
//! processes; it never depends on node internals.
//!
//! Exit codes: 0 success, 1 a check failed (e.g. `cluster status` found a node offline),
//! 2 an error (bad arguments, unreachable cluster, ...). A closed stdout (`wkctl ... | head`)
//! is not an error and exits 0. Data goes to stdout, diagnostics to stderr.

pub mod cli;
mod cmd;
pub mod local;
mod output;
mod probe;
mod render;
pub mod wait;

/// What wkctl prints with `--output json` where it is not a `wk_api` type as such (the
/// operator views that combine several answers, the bench and drill reports): tools and tests
/// decode the output into these.
pub mod reports {
    pub use crate::cmd::bench::catchup::CatchupReport;
    pub use crate::cmd::bench::deliver::DeliverReport;
    pub use crate::cmd::bench::drain::DrainReport;
    pub use crate::cmd::bench::failover::{FailoverReport, RoundReport};
    pub use crate::cmd::bench::failover_active::{ActiveReport, ActiveRound};
    pub use crate::cmd::bench::idle::{IdleReport, NodeRest};
    pub use crate::cmd::bench::send::SendReport;
    pub use crate::cmd::bench::{LatencySummary, Spread};
    pub use crate::cmd::drill::check::Safety;
    pub use crate::cmd::drill::report::{DrillReport, FaultReport};
    pub use crate::render::{ChannelListing, Check, HealthReport, NodeDetail};
}

use std::io;

/// What a command concluded, when it ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything as expected: exit 0.
    Ok,
    /// The command worked but what it checked is not healthy: exit 1.
    CheckFailed,
}

/// Runs one parsed command line to its end.
pub async fn run(cli: cli::Cli) -> anyhow::Result<Outcome> {
    cmd::run(cli).await
}

/// True when the error comes from writing to a closed stdout (ripgrep's convention: not an
/// error, the reader simply stopped reading).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
