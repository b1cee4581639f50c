//! The `wknode` binary: parse the configuration, set up logging to stderr, run the node.

use std::io::IsTerminal;

use clap::Parser;

/// mimalloc instead of glibc malloc: allocation and free were ~12 % of a node's CPU under
/// write load (many small, short-lived buffers across threads).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    wknode::sched::foreground();
    no_huge_pages();
    let args = wknode::config::Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    if let Some(file) = args.check_config.clone() {
        std::process::exit(wknode::check::run(file, args));
    }
    if let Some(file) = args.restore.clone() {
        let restored = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(wknode::snapshot::restore(
                    &file,
                    args.node_id,
                    args.data_dir.clone(),
                ))
            });
        match restored {
            Ok(r) => println!("{}", wknode::snapshot::describe(&r)),
            Err(e) => {
                eprintln!("wknode: {e:#}");
                std::process::exit(2);
            }
        }
        return;
    }
    let result = wknode::config::Config::from_args(args).and_then(|cfg| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)?
            .block_on(wknode::run(cfg))
    });
    if let Err(e) = result {
        eprintln!("wknode: {e:#}");
        std::process::exit(2);
    }
}

/// Turn transparent huge pages off for this process. mimalloc asks for them on its arenas, so
/// once it returned memory to the OS, the next touch of it faults in and zeroes a whole 2 MiB
/// page: a conversation sync (hundreds of KB of rows and JSON) spent ~20 % of its CPU in the
/// kernel's `clear_page` and its p99 was 2-4x its p50. Memory already faulted in keeps its
/// pages; failure (an old kernel) changes nothing.
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}
