//! What the node's threads ask of the kernel's CPU scheduler.
//!
//! - [`foreground`]: every thread of the node asks for a [`SLICE_NS`] of CPU instead of the
//!   kernel's default (`sched_getattr` reads 1.4 ms on the two cores of PERFORMANCE.md's
//!   machine, Linux 6.18). Under EEVDF (Linux 6.6 and later) a waking thread with a shorter
//!   slice preempts the running one sooner, and a send crosses about ten wake-ups (HTTP, Raft
//!   on three nodes, the writer, the transport, the apply): each waits less behind a thread
//!   that is busy on the core, another node's included. `wkctl bench drain` on two cores: the
//!   foreground's p99 during a drain went from a median of 2.0x its p99 before to 1.8x
//!   (PERFORMANCE.md). Kernels before 6.12 keep their default slice; nothing else changes.
//! - [`idle`]: a background runtime's threads run under `SCHED_IDLE` (`crate::background`).
//!
//! Both are requests: a kernel or sandbox that refuses them leaves the thread as it was.

/// The slice every foreground thread asks for. Measured against 100 µs (more switches: the
/// p99 before a drain rose) and 600 µs (less of the gain).
pub const SLICE_NS: u64 = 300_000;

/// `struct sched_attr` of `sched_setattr(2)`, in its first version (48 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    /// For `SCHED_OTHER`: the slice requested, in nanoseconds (Linux 6.12 and later).
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Ask for [`SLICE_NS`] on the calling thread, at normal priority. Call it first thing in
/// `main`: threads spawned afterwards inherit it.
pub fn foreground() {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        runtime: SLICE_NS,
        ..Default::default()
    };
    // SAFETY: sched_setattr reads `attr`, whose `size` says how much of it there is; pid 0 is
    // the calling thread.
    let _ = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
}

/// Put the calling thread under `SCHED_IDLE`: it runs only when no other thread wants the
/// core.
pub fn idle() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param` only; pid 0 is the calling thread.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's scheduling attributes.
    fn current() -> SchedAttr {
        let mut attr = SchedAttr::default();
        let size = std::mem::size_of::<SchedAttr>() as u32;
        // SAFETY: sched_getattr writes at most `size` bytes into `attr`.
        let r = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, size, 0) };
        assert_eq!(r, 0, "sched_getattr: {}", std::io::Error::last_os_error());
        attr
    }

    #[test]
    fn foreground_threads_and_their_children_ask_for_the_short_slice() {
        let (mine, child) = std::thread::spawn(|| {
            foreground();
            let child = std::thread::spawn(current).join().expect("child thread");
            (current(), child)
        })
        .join()
        .expect("test thread");
        for attr in [mine, child] {
            assert_eq!(attr.policy, libc::SCHED_OTHER as u32);
            assert_eq!(
                attr.runtime, SLICE_NS,
                "the kernel keeps custom slices from 6.12 on"
            );
        }
    }

    #[test]
    fn idle_threads_run_under_sched_idle() {
        let attr = std::thread::spawn(|| {
            idle();
            current()
        })
        .join()
        .expect("test thread");
        assert_eq!(attr.policy, libc::SCHED_IDLE as u32);
    }
}
