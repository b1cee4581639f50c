//! Command-line grammar (clap derive): global connection options, then noun-then-verb
//! subcommands. Each subcommand's doc comment is its `--help`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Operate a WuKong HA cluster: run a local demo, check its health, send and read messages.
#[derive(Debug, Parser)]
#[command(name = "wkctl", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// HTTP address of any node; several may be given comma-separated, they are tried in order.
    #[arg(
        long,
        global = true,
        env = "WK_ENDPOINT",
        default_value = "http://127.0.0.1:5001"
    )]
    pub endpoint: String,
    /// Output format: aligned text for people, JSON (the wk-api wire types) for scripts.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Per-request timeout, e.g. `5s`, `500ms`, `1m`.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Admin token, sent to the node as the `token` header.
    #[arg(long, global = true, env = "WK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a real local cluster of `wknode` processes and show its live status until Ctrl-C.
    ///
    /// Each node gets its own data directory `<data-dir>/<id>` and log file
    /// `<data-dir>/<id>/wknode.log`. An existing data directory is reused (the cluster restarts
    /// with its data); `--fresh` wipes the node directories first. Every node is stopped on exit.
    Demo(DemoArgs),
    /// Inspect the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Send and read messages.
    #[command(subcommand)]
    Message(MessageCommand),
    /// Print a shell completion script, e.g. `wkctl completions bash > /etc/bash_completion.d/wkctl`.
    Completions {
        /// The shell to generate for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many nodes to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    pub nodes: u64,
    /// Parent of the per-node data directories.
    #[arg(long, default_value = "./wukong-data/demo")]
    pub data_dir: PathBuf,
    /// HTTP port of node 1; node N listens on this + N - 1.
    #[arg(long, default_value_t = 5001)]
    pub base_http_port: u16,
    /// Cluster (Raft) port of node 1; node N listens on this + N - 1.
    #[arg(long, default_value_t = 11110)]
    pub base_cluster_port: u16,
    /// Delete the node data directories before starting (a new, empty cluster).
    #[arg(long)]
    pub fresh: bool,
    /// The `wknode` binary; by default the one next to `wkctl`, else the first on PATH.
    #[arg(long, env = "WK_WKNODE")]
    pub wknode: Option<PathBuf>,
    /// How long to wait for each node's ready line.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show every node's role, term and progress, the metadata leader and a health verdict.
    ///
    /// Exits 1 when a node is offline or the metadata group has no leader.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum MessageCommand {
    /// Send a text message (sent base64-encoded as the payload).
    Send(SendArgs),
    /// Read a channel's messages (payloads shown as UTF-8 text).
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Sender uid.
    #[arg(long = "from")]
    pub from_uid: String,
    /// Channel id (for person channels: the receiver's uid).
    #[arg(long = "channel")]
    pub channel_id: String,
    /// Channel type: 1 person, 2 group, ... (WuKongIM's numbering).
    #[arg(long = "type")]
    pub channel_type: u8,
    /// Idempotency key: a retry with the same key returns the original message.
    #[arg(long)]
    pub client_msg_no: Option<String>,
    /// The message text.
    pub text: String,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Channel id (for person channels: the other party's uid).
    #[arg(long = "channel")]
    pub channel_id: String,
    /// Channel type: 1 person, 2 group, ...
    #[arg(long = "type")]
    pub channel_type: u8,
    /// The reading uid; required for person channels.
    #[arg(long, default_value = "")]
    pub login_uid: String,
    /// First message seq; 0 means the newest (pull mode 0) or the oldest (pull mode 1).
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Last message seq; 0 means unbounded.
    #[arg(long, default_value_t = 0)]
    pub end: u64,
    /// At most this many messages; 0 means the node's default (100).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// 0: from `--start` towards older messages; 1: towards newer ones.
    #[arg(long, default_value_t = 0)]
    pub pull_mode: u8,
}

/// Parses `5s`, `500ms`, `1m30s`, ... (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (try e.g. 5s or 500ms)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("5s", Some(Duration::from_secs(5))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1m30s", Some(Duration::from_secs(90))),
            (" 2s ", Some(Duration::from_secs(2))),
            ("0s", None),
            ("5", None),
            ("fast", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).ok(), *want, "input {input:?}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_after_subcommand() {
        let cli = Cli::try_parse_from([
            "wkctl",
            "cluster",
            "status",
            "--output",
            "json",
            "--timeout",
            "250ms",
            "--endpoint",
            "a:1,b:2",
        ])
        .expect("valid command line");
        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.timeout, Duration::from_millis(250));
        assert_eq!(cli.global.endpoint, "a:1,b:2");
    }
}
