//! Loopback ports for local clusters (`wkctl demo`'s free-port mode, drills, the tests).
//!
//! A node keeps its ports across restarts: its cluster address is stored in the replicated
//! metadata. A port the kernel hands out for `127.0.0.1:0` comes from the ephemeral range, which
//! is also where every outgoing connection's local port comes from, so a restarted node can find
//! its old port taken by some other process's connection. Ports chosen here lie below the
//! ephemeral range, where only listeners that ask for a port by number can collide.

use std::io;
use std::net::TcpListener;

/// Where the search starts; below this lie well-known and registered service ports.
const LOWEST: u16 = 16_384;

/// `n` distinct loopback ports that are free right now and lie below the ephemeral range (when
/// the kernel says where that is and leaves room below it; else the kernel picks). Every port
/// is held until all are chosen, then released for the nodes to bind.
pub fn free_loopback_ports(n: usize) -> io::Result<Vec<u16>> {
    let mut held = Vec::with_capacity(n);
    if let Some(end) = ephemeral_start().filter(|&end| end > LOWEST + 1_024) {
        let span = u64::from(end - LOWEST);
        let mut offset = random_u64() % span;
        for _ in 0..span {
            if held.len() == n {
                break;
            }
            // `offset < span <= u16::MAX`, so the sum fits.
            let port = LOWEST + offset as u16;
            offset = (offset + 7_919) % span;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                held.push(l);
            }
        }
    }
    while held.len() < n {
        held.push(TcpListener::bind(("127.0.0.1", 0))?);
    }
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// The first port of the kernel's ephemeral range (Linux), if it can be read.
fn ephemeral_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// A number that differs between processes and calls: the standard library's randomly keyed
/// hasher over the process id and the clock.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports = free_loopback_ports(8).expect("free ports");
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 8, "{ports:?}");
        if let Some(end) = ephemeral_start().filter(|&end| end > LOWEST + 1_024) {
            assert!(
                ports.iter().all(|&p| (LOWEST..end).contains(&p)),
                "{ports:?} vs {end}"
            );
        }
        for p in ports {
            TcpListener::bind(("127.0.0.1", p)).expect("a chosen port is free once released");
        }
    }
}
