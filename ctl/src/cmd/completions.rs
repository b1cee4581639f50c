//! `wkctl completions SHELL`: prints a completion script generated from the clap grammar.

use clap::CommandFactory;

use crate::Outcome;
use crate::cli::Cli;

pub fn run(shell: clap_complete::Shell) -> anyhow::Result<Outcome> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "wkctl", &mut buf);
    let mut out = std::io::stdout().lock();
    std::io::Write::write_all(&mut out, &buf).map_err(anyhow::Error::from)?;
    Ok(Outcome::Ok)
}
