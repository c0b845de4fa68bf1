//! Shared UDP machinery for every role's driver: batched sockets, the mio event
//! loop, thread-per-core start-up, the outbox cores write into, and fault
//! injection in the send path.
//!
//! # The core/driver convention (every UDP role follows it)
//!
//! A role's protocol logic is a sans-IO *core* (STYLE practice 5). It implements
//! [`DatagramCore`]:
//!
//! ```text
//! handle_datagram(now, from, bytes, out)   one received datagram
//! handle_timeout(now, out)                 timers; calling it early is harmless
//! poll_timeout() -> Option<Instant>        the next deadline
//! handle_wake(now, out)                    another thread woke the loop (optional)
//! shutdown(now, out) -> done               graceful stop: last words (optional)
//! fanout() -> Arc<FanoutSet>               who `Dest::Fanout` means (optional)
//! ```
//!
//! Outputs are **pushed into a caller-owned, bounded [`Outbox`]**, never returned
//! or pulled: the driver owns one outbox per loop, preallocated, and flushes it with
//! `sendmmsg` after each receive batch and each timeout. A push that does not fit
//! fails with [`OutboxFull`]; the core counts it as a drop. An outbox entry goes
//! either to one address ([`Dest::To`]) or to every member of the core's fan-out set
//! ([`Dest::Fanout`], optionally except one address): a replicator pushes a fresh
//! payload *once* and the driver expands it into one `sendmmsg` entry per
//! downstream, all pointing at the same bytes, so fan-out copies nothing.
//!
//! Time is the project's [`Instant`], read by the driver only. The driver
//! ([`event_loop::UdpLoop`]) does only this: wait for readiness (timeout from
//! `poll_timeout`, capped at [`crate::daemon::SHUTDOWN_POLL_MS`]), drain the
//! socket in batches until `WouldBlock` or the round cap (then come back without
//! waiting), retry `Interrupted`, feed the core, flush the outbox, repeat.
//!
//! # Unsafe code
//! The only `unsafe` blocks of the crate outside `daemon.rs` (signal handler) are
//! in [`udp`]: socket creation with `SO_REUSEPORT`, `recvmmsg`, `sendmmsg`,
//! `poll` and socket-address conversion. Each is commented with why it is sound.
//!
//! # DTLS (issue 9)
//! Every datagram leaves through [`udp::SendBatch::batch`]. A DTLS layer will
//! sit between the outbox and that call, turning each `(association, bytes)` into a
//! record for that association; cores do not change.

pub mod cores;
pub mod event_loop;
pub mod fault;
pub mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::metrics::{Counter, Registry};
use crate::time::Instant;

pub use event_loop::{LoopConfig, Stop, UdpLoop};
pub use fault::{FaultConfig, FaultInjector};
pub use udp::SockAddr;

// ---------------------------------------------------------------------------
// Outbox
// ---------------------------------------------------------------------------

/// Where an outbox entry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// One address.
    To(SocketAddr),
    /// Every member of the core's fan-out set ([`DatagramCore::fanout`]), except
    /// `except` (the address the datagram came from, so it is not sent back).
    Fanout {
        /// An address to skip.
        except: Option<SocketAddr>,
    },
}

/// The outbox is full: the datagram was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxFull;

impl std::fmt::Display for OutboxFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("outbox full")
    }
}

impl std::error::Error for OutboxFull {}

#[derive(Debug, Clone, Copy)]
struct Entry {
    dest: Dest,
    start: usize,
    len: usize,
}

/// A bounded queue of datagrams to send, owned by the driver and filled by the
/// core. Bounded both in entries and in bytes; preallocated; `clear` keeps the
/// memory, so steady-state use never allocates.
#[derive(Debug)]
pub struct Outbox {
    data: Vec<u8>,
    entries: Vec<Entry>,
    entries_max: usize,
    bytes_max: usize,
}

impl Outbox {
    /// An outbox for at most `entries_max` datagrams and `bytes_max` bytes.
    pub fn new(entries_max: usize, bytes_max: usize) -> Outbox {
        Outbox {
            data: Vec::with_capacity(bytes_max),
            entries: Vec::with_capacity(entries_max),
            entries_max,
            bytes_max,
        }
    }

    /// Queue `bytes` for `dest`.
    ///
    /// # Errors
    /// [`OutboxFull`] when either bound would be passed.
    pub fn push(&mut self, dest: Dest, bytes: &[u8]) -> Result<(), OutboxFull> {
        if self.entries.len() >= self.entries_max || self.data.len() + bytes.len() > self.bytes_max
        {
            return Err(OutboxFull);
        }
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.entries.push(Entry {
            dest,
            start,
            len: bytes.len(),
        });
        Ok(())
    }

    /// Queue `bytes` for one address.
    ///
    /// # Errors
    /// [`OutboxFull`].
    pub fn push_to(&mut self, to: SocketAddr, bytes: &[u8]) -> Result<(), OutboxFull> {
        self.push(Dest::To(to), bytes)
    }

    /// Number of queued datagrams.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The queued datagrams in order.
    pub fn iter(&self) -> impl Iterator<Item = (Dest, &[u8])> + '_ {
        self.entries
            .iter()
            .map(|e| (e.dest, &self.data[e.start..e.start + e.len]))
    }

    /// Forget everything queued (keeps the memory).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.data.clear();
    }
}

// ---------------------------------------------------------------------------
// Fan-out set
// ---------------------------------------------------------------------------

/// The addresses [`Dest::Fanout`] expands to, with their socket-address form
/// computed once when the set changes (not per datagram).
#[derive(Debug, Clone, Default)]
pub struct FanoutSet {
    addrs: Vec<(SocketAddr, SockAddr)>,
}

impl FanoutSet {
    /// A set of these addresses.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> FanoutSet {
        FanoutSet {
            addrs: addrs.into_iter().map(|a| (a, SockAddr::from(a))).collect(),
        }
    }

    /// The members.
    pub fn iter(&self) -> impl Iterator<Item = &(SocketAddr, SockAddr)> {
        self.addrs.iter()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

// ---------------------------------------------------------------------------
// Core trait
// ---------------------------------------------------------------------------

/// A sans-IO protocol core as the UDP event loop drives it (see the module doc).
pub trait DatagramCore {
    /// One received datagram (at most [`udp::RECV_SLOT_LEN`] bytes).
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], out: &mut Outbox);

    /// A datagram longer than [`udp::RECV_SLOT_LEN`] arrived and was cut; it is
    /// never passed to `handle_datagram`. Cores count it.
    fn handle_oversized(&mut self, _now: Instant, _from: SocketAddr) {}

    /// Every datagram of one receive batch has been handed to `handle_datagram`:
    /// a core that batches work (signature checks, table look-ups) does it now,
    /// before the loop flushes the outbox.
    fn handle_batch_end(&mut self, _now: Instant, _out: &mut Outbox) {}

    /// Run timers. Calling it before `poll_timeout()` is harmless.
    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox);

    /// The next time `handle_timeout` has work, if any.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Another thread woke the loop through its waker.
    fn handle_wake(&mut self, _now: Instant, _out: &mut Outbox) {}

    /// The loop is stopping gracefully: queue any last words. Returns `true` when
    /// done; `false` asks the loop to flush and call again (the outbox was full).
    fn shutdown(&mut self, _now: Instant, _out: &mut Outbox) -> bool {
        true
    }

    /// The set [`Dest::Fanout`] expands to. Called once per flush.
    fn fanout(&self) -> Arc<FanoutSet> {
        Arc::new(FanoutSet::default())
    }
}

// ---------------------------------------------------------------------------
// Loop metrics
// ---------------------------------------------------------------------------

/// Counters every UDP loop keeps, registered under a role's prefix.
#[derive(Debug, Clone)]
pub struct LoopMetrics {
    /// Datagrams received.
    pub received: Counter,
    /// Datagrams handed to the kernel.
    pub sent: Counter,
    /// Datagrams the kernel refused (each counted once), or dropped after the
    /// send buffer stayed full.
    pub send_errors: Counter,
    /// Receive calls that failed with an error other than `WouldBlock`.
    pub recv_errors: Counter,
    /// Datagrams dropped on purpose by the fault injector.
    pub fault_dropped: Counter,
}

impl LoopMetrics {
    /// Register the loop counters as `{prefix}_datagrams_received_total` etc.
    pub fn register(r: &Registry, prefix: &str) -> LoopMetrics {
        LoopMetrics {
            received: r.counter(
                &format!("{prefix}_datagrams_received_total"),
                "UDP datagrams received.",
            ),
            sent: r.counter(
                &format!("{prefix}_datagrams_sent_total"),
                "UDP datagrams handed to the kernel (each fan-out copy counts).",
            ),
            send_errors: r.counter(
                &format!("{prefix}_send_errors_total"),
                "UDP datagrams not sent because the kernel refused them or the send buffer stayed full.",
            ),
            recv_errors: r.counter(
                &format!("{prefix}_recv_errors_total"),
                "UDP receive calls that failed.",
            ),
            fault_dropped: r.counter(
                &format!("{prefix}_fault_dropped_total"),
                "Datagrams dropped on purpose by the configured fault injector ([fault] loss_percent).",
            ),
        }
    }

    /// Counters attached to no registry.
    pub fn detached() -> LoopMetrics {
        LoopMetrics::register(&Registry::new(), "detached")
    }
}

// ---------------------------------------------------------------------------
// Socket configuration
// ---------------------------------------------------------------------------

/// `[socket]` in a daemon's config: kernel buffer sizes of its UDP sockets.
#[derive(Debug, Clone, Copy, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SocketConfig {
    /// Receive buffer per socket, bytes (bursts wait here while a worker is busy).
    pub recv_buffer_bytes: usize,
    /// Send buffer per socket, bytes (a fan-out burst waits here).
    pub send_buffer_bytes: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            recv_buffer_bytes: 4 << 20,
            send_buffer_bytes: 4 << 20,
        }
    }
}

impl SocketConfig {
    /// As socket options (`reuse_port` is decided by the worker count).
    pub fn options(&self) -> udp::SocketOptions {
        udp::SocketOptions {
            reuse_port: false,
            recv_buffer_bytes: Some(self.recv_buffer_bytes),
            send_buffer_bytes: Some(self.send_buffer_bytes),
        }
    }
}

/// Fresh random bytes from the operating system, for nonces and cookie secrets.
///
/// # Errors
/// The OS has no randomness to give (practically never on Linux).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(b)
}

// ---------------------------------------------------------------------------
// Address prefixes (allow lists)
// ---------------------------------------------------------------------------

/// An IP prefix such as `192.0.2.0/24`, `2001:db8::/32` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// `true` when `ip` is inside the prefix. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 peers) match IPv4
    /// prefixes.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpPrefix {
    type Err = String;
    fn from_str(s: &str) -> Result<IpPrefix, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or prefix (like 192.0.2.0/24)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(IpPrefix { addr, len })
    }
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_is_bounded_in_entries_and_bytes() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut o = Outbox::new(2, 10);
        o.push_to(a, b"12345").unwrap();
        assert_eq!(o.push_to(a, b"123456"), Err(OutboxFull));
        o.push(Dest::Fanout { except: None }, b"12345").unwrap();
        assert_eq!(o.push_to(a, b""), Err(OutboxFull));
        let got: Vec<_> = o.iter().map(|(d, b)| (d, b.to_vec())).collect();
        assert_eq!(got[0], (Dest::To(a), b"12345".to_vec()));
        assert_eq!(got[1].0, Dest::Fanout { except: None });
        o.clear();
        assert!(o.is_empty());
        o.push_to(a, b"0123456789").unwrap();
    }

    #[test]
    fn prefixes() {
        let p: IpPrefix = "10.1.0.0/16".parse().unwrap();
        assert!(p.contains("10.1.200.3".parse().unwrap()));
        assert!(!p.contains("10.2.0.1".parse().unwrap()));
        assert!(p.contains("::ffff:10.1.0.9".parse().unwrap()));
        let all: IpPrefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        let one: IpPrefix = "2001:db8::1".parse().unwrap();
        assert!(one.contains("2001:db8::1".parse().unwrap()));
        assert!(!one.contains("2001:db8::2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpPrefix>().is_err());
        assert!("example".parse::<IpPrefix>().is_err());
        assert_eq!(p.to_string(), "10.1.0.0/16");
    }
}
