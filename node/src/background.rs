//! The runtime of background work: a cold migration's steps (`cluster::cold`) and the drain
//! that runs them (`cluster::scale`), on every node.
//!
//! Its one worker thread and its blocking threads (a cold step's store reads) run under
//! `SCHED_IDLE`, so a foreground thread (the client API, Raft, the store's writer) that wakes
//! takes the core from them at once. On two cores with four nodes, a drain run at the
//! foreground's priority more than doubled the p99 of one-at-a-time sends (PERFORMANCE.md);
//! here it takes the CPU the foreground leaves. Work queued here always runs, only later
//! under full load: a drain then slows down, and a cold batch keeps its channels sealed
//! until its steps got their CPU (a send to one waits up to `cluster::cold::SEALED_WAIT`,
//! then is answered "unavailable, try again").
//!
//! A task spawned from here runs here too, so what lives on (a Raft group's tasks, a peer
//! connection's) must be spawned on the runtime the node started on: [`is_current`] tells.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;

thread_local! {
    static BACKGROUND: Cell<bool> = const { Cell::new(false) };
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wk-background")
            .enable_all()
            .on_thread_start(|| {
                BACKGROUND.set(true);
                crate::sched::idle();
            })
            .build()
            .expect("a runtime of one thread can be built where the node's own was")
    })
}

/// Whether the calling thread is one of the background runtime's.
pub fn is_current() -> bool {
    BACKGROUND.get()
}

/// A handle to spawn background tasks on.
pub fn handle() -> &'static tokio::runtime::Handle {
    runtime().handle()
}

/// Run `work` on the background runtime and wait for it; `None` if it panicked.
pub async fn run<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> Option<T> {
    runtime().spawn(work).await.ok()
}
