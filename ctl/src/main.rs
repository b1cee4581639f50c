//! `wkctl`: the operator's command line for WuKong HA.
//!
//! It owns argument parsing (`cli.rs`), one module per subcommand (`cmd/`) and the text/JSON
//! rendering of results (`output.rs`; `render.rs` for the operator commands). It talks to
//! nodes only through the shared API crate (`wk_api::Client` and its wire types) and, for
//! `wkctl demo` and `wkctl snapshot restore`, by running the `wknode` binary as child processes;
//! it never depends on node internals.
//!
//! Exit codes: 0 success, 1 a check failed (e.g. `cluster status` found a node offline),
//! 2 an error (bad arguments, unreachable cluster, ...). A closed stdout (`wkctl ... | head`)
//! is not an error and exits 0. Data goes to stdout, diagnostics to stderr.

mod cli;
mod cmd;
mod output;
mod render;

use std::io;
use std::process::ExitCode;

use clap::Parser;

/// What a command concluded, when it ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything as expected: exit 0.
    Ok,
    /// The command worked but what it checked is not healthy: exit 1.
    CheckFailed,
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wkctl: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wkctl: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// True when the error comes from writing to a closed stdout (ripgrep's convention: not an
/// error, the reader simply stopped reading).
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
