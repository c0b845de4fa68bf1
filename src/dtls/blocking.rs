//! A blocking DTLS socket on one thread: a `std::net::UdpSocket` and a [`Link`].
//!
//! For tools, tests and benchmarks that speak to daemons the way a small client
//! would (a test RUAS, a test subscriber, load generators): `send_to` seals (or
//! queues behind a handshake), `recv` waits for the next plaintext while driving
//! handshakes and retransmissions. Daemons use the event loop instead
//! (`net::UdpLoop` with a link), which batches.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use super::link::{Link, Opened, Sealed, Wire};
use crate::net::SockAddr;
use crate::time::SystemClock;

/// Datagrams read per [`BlockingSocket::recv`] call at most before it returns
/// `None` (a bound on work, not on time).
pub const RECV_DATAGRAMS_MAX: usize = 100_000;

struct SocketWire<'a> {
    sock: &'a UdpSocket,
    errors: u64,
}

impl Wire for SocketWire<'_> {
    fn transmit(&mut self, to: &SockAddr, bytes: &[u8]) {
        if let Some(a) = to.to_std()
            && self.sock.send_to(bytes, a).is_err()
        {
            self.errors += 1;
        }
    }
}

/// A UDP socket whose datagrams go through a DTLS link.
pub struct BlockingSocket {
    sock: UdpSocket,
    link: Arc<Link>,
    clock: SystemClock,
    opened: Opened,
    ready: std::collections::VecDeque<(SocketAddr, Vec<u8>)>,
    buf: Vec<u8>,
    /// Datagrams the OS refused to send.
    pub send_errors: u64,
}

impl std::fmt::Debug for BlockingSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockingSocket({:?})", self.sock.local_addr())
    }
}

impl BlockingSocket {
    /// Bind `addr` and secure it with `link`.
    ///
    /// # Errors
    /// The OS error of `bind`.
    pub fn bind(addr: SocketAddr, link: Arc<Link>) -> io::Result<BlockingSocket> {
        let sock = UdpSocket::bind(addr)?;
        Ok(BlockingSocket {
            sock,
            link,
            clock: SystemClock::new(),
            opened: Opened::new(),
            ready: std::collections::VecDeque::new(),
            buf: vec![0u8; crate::net::udp::RECV_SLOT_LEN],
            send_errors: 0,
        })
    }

    /// The socket's address.
    ///
    /// # Errors
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// The socket (for callers that batch their own sends of sealed records).
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// The link.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// Seal `bytes` for `to` (opening an association if needed).
    pub fn send_to(&mut self, bytes: &[u8], to: SocketAddr) -> Sealed {
        let mut w = SocketWire {
            sock: &self.sock,
            errors: 0,
        };
        let r = self.link.seal(self.clock.now(), to, bytes, &mut w);
        self.send_errors += w.errors;
        r
    }

    /// Send a raw datagram, bypassing DTLS (tests of what the layer refuses).
    ///
    /// # Errors
    /// The OS error.
    pub fn send_plain(&self, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.sock.send_to(bytes, to)
    }

    /// The next plaintext from any peer, waiting at most `timeout` while driving
    /// handshakes and timers. `None` when nothing came.
    pub fn recv(&mut self, timeout: StdDuration) -> Option<(SocketAddr, Vec<u8>)> {
        let deadline = std::time::Instant::now() + timeout;
        for _ in 0..RECV_DATAGRAMS_MAX {
            if let Some(r) = self.ready.pop_front() {
                return Some(r);
            }
            let now = self.clock.now();
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut wait = left;
            if let Some(t) = self.link.poll_timeout() {
                wait = wait.min(t.saturating_since(now).to_std());
            }
            let wait = wait.max(StdDuration::from_millis(1));
            let mut w = SocketWire {
                sock: &self.sock,
                errors: 0,
            };
            if self.sock.set_read_timeout(Some(wait)).is_ok()
                && let Ok((n, from)) = self.sock.recv_from(&mut self.buf)
            {
                self.link.receive(
                    self.clock.now(),
                    from,
                    &self.buf[..n],
                    &mut w,
                    &mut self.opened,
                );
                for p in self.opened.iter() {
                    self.ready.push_back((from, p.to_vec()));
                }
            }
            self.link.handle_timeout(self.clock.now(), &mut w);
            self.send_errors += w.errors;
        }
        None
    }

    /// Close every association (close_notify).
    pub fn close(&mut self) {
        let mut w = SocketWire {
            sock: &self.sock,
            errors: 0,
        };
        self.link.close_all(self.clock.now(), &mut w);
    }
}
