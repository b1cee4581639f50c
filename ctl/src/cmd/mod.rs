//! The subcommands, laid out like the CLI: one module per noun (`cluster/`, `channel/`,
//! `bench/`, `drill/`, `node`, `backlog`, ...), one file per verb where a verb has substance
//! (`cluster/join.rs`, `bench/send.rs`). `run` dispatches. Commands return an `Outcome` (ok or
//! check failed) or an error; `main` turns that into the exit code.

mod backlog;
pub(crate) mod bench;
mod channel;
mod cluster;
mod completions;
mod conversation;
mod demo;
pub mod drill;
mod message;
mod node;
mod snapshot;
mod top;

use anyhow::Context;
use wk_api::Client;

use crate::Outcome;
use crate::cli::{
    BacklogCommand, BenchCommand, ChannelCommand, Cli, ClusterCommand, Command, ConversationCommand,
    GlobalArgs, MessageCommand, NodeCommand, SnapshotCommand,
};

pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let global = &cli.global;
    match cli.command {
        Command::Demo(args) => demo::run(global, args).await,
        Command::Top(args) => top::run(global, args).await,
        Command::Cluster(ClusterCommand::Status(args)) if args.watch => {
            cluster::health::watch(global, args.interval).await
        }
        Command::Cluster(ClusterCommand::Status(_)) => cluster::status::status(global).await,
        Command::Cluster(ClusterCommand::Health(args)) => cluster::health::health(global, args).await,
        Command::Node(NodeCommand::List) => node::list(global).await,
        Command::Node(NodeCommand::Show { id }) => node::show(global, id).await,
        Command::Node(NodeCommand::EvacuateLeaders { id }) => node::evacuate(global, id).await,
        Command::Node(NodeCommand::Remove(args)) => node::remove(global, args).await,
        Command::Channel(ChannelCommand::List(args)) => channel::list(global, args).await,
        Command::Channel(ChannelCommand::Show {
            channel_id,
            channel_type,
        }) => channel::show(global, &channel_id, channel_type).await,
        Command::Channel(ChannelCommand::Verify {
            channel_id,
            channel_type,
        }) => channel::verify::channel(global, &channel_id, channel_type).await,
        Command::Cluster(ClusterCommand::Verify(args)) => channel::verify::cluster(global, args).await,
        Command::Channel(ChannelCommand::TransferLeader(args)) => {
            channel::transfer_leader(global, args).await
        }
        Command::Cluster(ClusterCommand::Join(args)) => cluster::join::join(global, args).await,
        Command::Backlog(BacklogCommand::Show { limit }) => backlog::show(global, limit).await,
        Command::Backlog(BacklogCommand::Drain(args)) => backlog::drain(global, args).await,
        Command::Message(MessageCommand::Send(args)) => message::send(global, args).await,
        Command::Message(MessageCommand::Sync(args)) => message::sync(global, args).await,
        Command::Conversation(ConversationCommand::List(args)) => conversation::list(global, args).await,
        Command::Bench(BenchCommand::Send(args)) => bench::send(global, args).await,
        Command::Bench(BenchCommand::Failover(args)) => bench::failover(global, args).await,
        Command::Bench(BenchCommand::Catchup(args)) => bench::catchup::run(global, args).await,
        Command::Bench(BenchCommand::Idle(args)) => bench::idle::run(global, args).await,
        Command::Bench(BenchCommand::Drain(args)) => bench::drain::run(global, args).await,
        Command::Bench(BenchCommand::Deliver(args)) => bench::deliver::run(global, args).await,
        Command::Bench(BenchCommand::Conversations(args)) => bench::conversations::run(global, args).await,
        Command::Bench(BenchCommand::Report(args)) => bench::report::run(global, args),
        Command::Drill(cmd) => drill::run(global, cmd).await,
        Command::Snapshot(SnapshotCommand::Save { file }) => snapshot::save(global, &file).await,
        Command::Snapshot(SnapshotCommand::Status { file }) => snapshot::status(global, &file),
        Command::Snapshot(SnapshotCommand::Restore(args)) => snapshot::restore(args),
        Command::Completions { shell } => completions::run(shell),
    }
}

/// A client for `--endpoint`, `--timeout`, `--admin-token` and `--tls-ca`.
fn client(global: &GlobalArgs) -> anyhow::Result<Client> {
    endpoint_client(global, global.timeout)
}

/// Like `client`, but each request may take up to `max(--timeout, at_least)`: for calls that
/// block on the node until a long operation finishes.
fn client_with_timeout(global: &GlobalArgs, at_least: std::time::Duration) -> anyhow::Result<Client> {
    endpoint_client(global, global.timeout.max(at_least))
}

/// A client for `--endpoint` with `--admin-token` and `--tls-ca`, each request taking up to
/// `timeout`.
fn endpoint_client(global: &GlobalArgs, timeout: std::time::Duration) -> anyhow::Result<Client> {
    let pem = tls_ca_pem(global)?;
    let client = Client::new_with_ca(std::slice::from_ref(&global.endpoint), timeout, pem.as_deref())
        .map_err(|e| match (e, &global.tls_ca) {
            (e @ wk_api::ClientError::Tls(_), Some(ca)) => anyhow::anyhow!("--tls-ca {}: {e}", ca.display()),
            (e, _) => anyhow::anyhow!("--endpoint {:?}: {e}", global.endpoint),
        })?;
    Ok(client.with_token(global.admin_token.clone()))
}

/// The contents of `--tls-ca`, if given.
fn tls_ca_pem(global: &GlobalArgs) -> anyhow::Result<Option<Vec<u8>>> {
    let Some(ca) = &global.tls_ca else {
        return Ok(None);
    };
    // A CA certificate is a few KiB; a large file is a wrong path.
    let len = std::fs::metadata(ca)
        .with_context(|| format!("--tls-ca {}", ca.display()))?
        .len();
    anyhow::ensure!(
        len <= 1 << 20,
        "--tls-ca {}: {len} bytes is too large for a PEM file",
        ca.display()
    );
    Ok(Some(
        std::fs::read(ca).with_context(|| format!("--tls-ca {}", ca.display()))?,
    ))
}
