//! Thread-per-core start-up: how many workers, one `SO_REUSEPORT` socket each on
//! the same address, and named worker threads.
//!
//! With several sockets in one `SO_REUSEPORT` group the kernel hashes each flow
//! (source and destination address and port) to one socket, so all datagrams of
//! one peer reach the same worker. Workers share protocol state that must be
//! shared (a replicator's dedupe window, its downstream list) through lock-free
//! structures in the role's core. Threads are not pinned: on a shared machine the
//! scheduler does better.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::thread::JoinHandle;

use super::udp::{self, SocketOptions};

/// Most workers one daemon starts, whatever the configuration says.
pub const WORKER_COUNT_MAX: usize = 256;

/// Workers to start: `configured`, or one per available core when 0.
pub fn worker_count(configured: usize) -> usize {
    let n = if configured == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        configured
    };
    n.clamp(1, WORKER_COUNT_MAX)
}

/// Bind `n` sockets to `addr`, one per worker. Port 0 picks a port once and the
/// others join it. `SO_REUSEPORT` is set only when `n > 1`, so a single-worker
/// daemon still fails with "address in use" when started twice.
///
/// # Errors
/// The first OS error, naming the address.
pub fn bind_group(addr: SocketAddr, n: usize, opts: SocketOptions) -> io::Result<Vec<UdpSocket>> {
    let n = n.max(1);
    let opts = SocketOptions {
        reuse_port: n > 1,
        ..opts
    };
    let first = udp::bind(addr, &opts)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP {addr}: {e}")))?;
    let actual = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..n {
        out.push(udp::bind(actual, &opts).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot bind UDP {actual} again: {e}"))
        })?);
    }
    Ok(out)
}

/// Start a named worker thread.
///
/// # Errors
/// The OS refused a thread.
pub fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name).spawn(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_shares_one_port() {
        let g = bind_group("127.0.0.1:0".parse().unwrap(), 3, SocketOptions::default()).unwrap();
        let a = g[0].local_addr().unwrap();
        assert!(a.port() != 0);
        assert!(g.iter().all(|s| s.local_addr().unwrap() == a));
        assert!(worker_count(0) >= 1);
        assert_eq!(worker_count(5), 5);
    }
}
