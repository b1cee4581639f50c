//! Message ids: snowflake-style, unique across the cluster and across restarts.
//!
//! An id is 41 bits of milliseconds since 2024-01-01, 10 bits of node id and 12 bits of
//! sequence. Invariants:
//! - Node ids are 1..=[`MAX_NODE_ID`] (the config refuses others at start-up), so distinct
//!   nodes put distinct bits in the middle.
//! - Within a process, ids only grow: a clock that steps back keeps the last millisecond and
//!   counts on in its sequence (borrowing the next millisecond when 4,096 are used up).
//! - Across restarts: no id uses a millisecond past the **reservation**, a millisecond stored
//!   durably in the `local` table (`ids_until`) before any id reaching it is given out. A
//!   restarted node starts after its last reservation, so a clock that stepped back across
//!   the restart cannot repeat an id. A background task keeps the reservation
//!   [`RESERVE_AHEAD`] in front of the clock; should it fall behind, ids wait at the
//!   reservation and, once its 4,096 ids are used, `next` refuses (the request is answered
//!   `overloaded`) rather than risk a repeat.

use std::sync::Mutex;
use std::time::Duration;

use super::route::now_ms;

/// The largest node id a message id can carry (10 bits).
pub const MAX_NODE_ID: u64 = 0x3FF;
/// How far ahead of the clock the reservation is kept.
pub const RESERVE_AHEAD: Duration = Duration::from_secs(10);
/// How often the reservation is renewed.
pub const RESERVE_EVERY: Duration = Duration::from_secs(2);
/// The `local` table row that holds the reservation.
pub const RESERVATION_KEY: &[u8] = b"ids_until";

const EPOCH_MS: u64 = 1_704_067_200_000;
const SEQ_MAX: u64 = 0xFFF;

pub struct IdGen {
    node: u64,
    /// std mutex: a few instructions under it, never an `.await`.
    state: Mutex<State>,
}

struct State {
    /// Millisecond (since `EPOCH_MS`) and sequence of the last id given out.
    ms: u64,
    seq: u64,
    /// No id may use a millisecond past this one (it is durable).
    reserved: u64,
}

/// `next` found the reservation used up; the renewal task is behind.
#[derive(Debug, thiserror::Error)]
#[error("message ids are used up to the durable reservation; retry shortly")]
pub struct IdsExhausted;

impl IdGen {
    /// A generator for `node` (at most [`MAX_NODE_ID`]) that gives out only ids after every
    /// millisecond up to `reserved_before` (the stored reservation; 0 for none). It gives out
    /// nothing until [`IdGen::reserve`] moves the reservation on.
    pub fn resume(node: u64, reserved_before: u64) -> IdGen {
        debug_assert!(node <= MAX_NODE_ID, "the config refuses larger node ids");
        IdGen {
            node: node & MAX_NODE_ID,
            state: Mutex::new(State {
                ms: reserved_before,
                seq: SEQ_MAX,
                reserved: reserved_before,
            }),
        }
    }

    /// The reservation to store next: [`RESERVE_AHEAD`] past the clock and past every id
    /// given out, and never below the current one (a stored value that went down would let a
    /// restart repeat ids given out under the higher one).
    pub fn wanted_reservation(&self) -> u64 {
        let st = self.state.lock().expect("id lock poisoned");
        (now_ms().saturating_sub(EPOCH_MS).max(st.ms) + RESERVE_AHEAD.as_millis() as u64).max(st.reserved)
    }

    /// The millisecond part of message id `id` (what a reservation must pass).
    pub fn millis_of(id: u64) -> u64 {
        id >> 22
    }

    /// The reservation `until` is durable: ids may use milliseconds up to it.
    pub fn reserve(&self, until: u64) {
        let mut st = self.state.lock().expect("id lock poisoned");
        st.reserved = st.reserved.max(until);
    }

    pub fn next(&self) -> Result<u64, IdsExhausted> {
        let now = now_ms().saturating_sub(EPOCH_MS);
        let mut st = self.state.lock().expect("id lock poisoned");
        let ms = now.min(st.reserved);
        let (ms, seq) = if ms > st.ms {
            (ms, 0)
        } else if st.seq < SEQ_MAX {
            (st.ms, st.seq + 1)
        } else {
            // 4,096 ids in one millisecond: borrow the next one, if it is reserved.
            (st.ms + 1, 0)
        };
        if ms > st.reserved {
            return Err(IdsExhausted);
        }
        (st.ms, st.seq) = (ms, seq);
        Ok((ms << 22) | (self.node << 12) | seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(node: u64, stored: u64) -> IdGen {
        let g = IdGen::resume(node, stored);
        g.reserve(g.wanted_reservation());
        g
    }

    #[test]
    fn ids_are_unique_and_increasing() {
        let g = running(7, 0);
        let mut prev = 0;
        for _ in 0..20_000 {
            let id = g.next().expect("reserved");
            assert!(id > prev);
            assert_eq!((id >> 12) & MAX_NODE_ID, 7);
            prev = id;
        }
    }

    /// A restart with the clock behind the stored reservation (the clock stepped back, or
    /// the previous run gave out ids ahead of it) gives only ids past everything reserved.
    #[test]
    fn a_restart_behind_the_clock_repeats_no_id() {
        let first = running(3, 0);
        let reserved = first.wanted_reservation();
        first.reserve(reserved);
        let issued: Vec<u64> = (0..5_000).map(|_| first.next().expect("reserved")).collect();
        // The stored reservation is what the restarted node reads, whatever its clock says.
        let second = running(3, reserved);
        let after = second.next().expect("reserved");
        assert!(
            issued.iter().all(|id| *id < after),
            "{after} repeats or precedes an old id"
        );
        assert!(after >> 22 > reserved, "ids start past the old reservation");
    }

    /// A clock that stepped back does not lower the reservation to store.
    #[test]
    fn the_reservation_never_goes_down() {
        let g = running(2, 0);
        let far = g.wanted_reservation() + 3_600_000;
        g.reserve(far);
        assert!(g.wanted_reservation() >= far);
    }

    #[test]
    fn nothing_is_given_out_past_the_reservation() {
        let g = IdGen::resume(1, 0);
        assert!(g.next().is_err(), "no reservation yet");
        g.reserve(5);
        // The clock is far past millisecond 5: ids wait at the reservation, then stop.
        let n = std::iter::from_fn(|| g.next().ok()).take(100_000).count();
        assert_eq!(n, 4096, "millisecond 5 only: the clock is past it");
    }
}
