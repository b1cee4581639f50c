//! One module per subcommand; `run` dispatches. Commands return an `Outcome` (ok or check
//! failed) or an error; `main` turns that into the exit code.

mod bench;
mod cluster;
mod completions;
mod demo;
mod local;
mod message;
mod scale;

use anyhow::Context;
use wk_api::Client;

use crate::Outcome;
use crate::cli::{BacklogCommand, BenchCommand, Cli, ClusterCommand, Command, GlobalArgs, MessageCommand};

pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let global = &cli.global;
    match cli.command {
        Command::Demo(args) => demo::run(global, args).await,
        Command::Cluster(ClusterCommand::Status) => cluster::status(global).await,
        Command::Cluster(ClusterCommand::Join(args)) => scale::join(global, args).await,
        Command::Backlog(BacklogCommand::Show { limit }) => scale::show(global, limit).await,
        Command::Backlog(BacklogCommand::Drain(args)) => scale::drain(global, args).await,
        Command::Message(MessageCommand::Send(args)) => message::send(global, args).await,
        Command::Message(MessageCommand::Sync(args)) => message::sync(global, args).await,
        Command::Bench(BenchCommand::Send(args)) => bench::send(global, args).await,
        Command::Bench(BenchCommand::Failover(args)) => bench::failover(global, args).await,
        Command::Completions { shell } => completions::run(shell),
    }
}

/// A client for `--endpoint`, `--timeout` and `--admin-token`.
fn client(global: &GlobalArgs) -> anyhow::Result<Client> {
    let client = Client::new(std::slice::from_ref(&global.endpoint), global.timeout)
        .with_context(|| format!("--endpoint {:?}", global.endpoint))?;
    Ok(client.with_token(global.admin_token.clone()))
}
