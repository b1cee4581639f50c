//! `wkctl`, the binary: parses the command line, runs it on a small tokio runtime and maps the
//! result to the exit code (0 ok, 1 a check failed, 2 an error; a closed stdout is not an
//! error). Everything else lives in the library (`lib.rs`).

use std::process::ExitCode;

use clap::Parser;
use wkctl::{Outcome, cli::Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    // `block_on` runs the command on this, the main thread: local clusters spawn their nodes
    // from it (`local` module invariants).
    match runtime.block_on(wkctl::run(cli)) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Err(err) if wkctl::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wkctl: {err:#}");
            ExitCode::from(2)
        }
    }
}
