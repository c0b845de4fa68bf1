//! The per-worker mio loop that drives a [`DatagramCore`] on one UDP socket.
//!
//! spec: STYLE practice 7. The loop waits for readiness with a timeout from the
//! core's `poll_timeout()` capped at [`SHUTDOWN_POLL_MS`]; drains the socket in
//! `recvmmsg` batches of [`LoopConfig::recv_batch_max`] up to
//! [`LoopConfig::recv_rounds_max`] batches per wake (then yields to timers and
//! comes straight back without waiting, since mio is edge-triggered); hands each
//! datagram to the core; flushes the outbox with `sendmmsg` after every batch;
//! runs timers when due; and retries `Interrupted`. It stops gracefully on
//! [`Stop::stop`] or a signal (the core's last words are flushed) or at once
//! on [`Stop::abort`] (as a crash would: tests and `ivip testnet` use it).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::{Events, Interest, Poll, Token, Waker};

use super::udp::{RecvBatch, SendBatch, SockAddr};
use super::{DatagramCore, Dest, FanoutSet, FaultInjector, LoopMetrics, Outbox};
use crate::daemon::{SHUTDOWN_POLL_MS, Shutdown};
use crate::time::{Duration, Instant, SystemClock};

const TOKEN_SOCKET: Token = Token(0);
const TOKEN_WAKER: Token = Token(1);
/// Most outbox flushes a core's shutdown may take (each is one outbox full).
pub const SHUTDOWN_ROUNDS_MAX: usize = 1000;

/// Limits of one loop. Every one bounds work or memory per wake-up.
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    /// Datagrams per `recvmmsg`.
    pub recv_batch_max: usize,
    /// `recvmmsg` batches per wake before timers get a turn.
    pub recv_rounds_max: usize,
    /// Datagrams per `sendmmsg` (the kernel takes at most 1024).
    pub send_batch_max: usize,
    /// Outbox entries (each may fan out to every downstream).
    pub outbox_entries_max: usize,
    /// Outbox bytes.
    pub outbox_bytes_max: usize,
    /// mio events per poll.
    pub events_max: usize,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            recv_batch_max: 64,
            recv_rounds_max: 8,
            send_batch_max: 256,
            outbox_entries_max: 256,
            outbox_bytes_max: 256 * 1280,
            events_max: 64,
        }
    }
}

/// How a loop is told to stop: by the process-wide [`Shutdown`] flag (signals),
/// by [`Stop::stop`] for this instance only (graceful), or by [`Stop::abort`]
/// (immediate, saying nothing to peers, as a crash would).
#[derive(Debug, Clone, Default)]
pub struct Stop {
    shutdown: Shutdown,
    graceful: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
}

impl Stop {
    /// A stop tied to a shutdown flag, with its own stop and abort flags.
    pub fn new(shutdown: Shutdown) -> Stop {
        Stop {
            shutdown,
            graceful: Arc::new(AtomicBool::new(false)),
            abort: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Stop this instance gracefully.
    pub fn stop(&self) {
        self.graceful.store(true, Ordering::SeqCst);
    }

    /// Stop this instance at once, without last words.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }

    /// `true` once a graceful stop was asked for (here or by signal).
    pub fn is_stopping(&self) -> bool {
        self.graceful.load(Ordering::SeqCst) || self.shutdown.is_requested()
    }

    /// `true` once an abort was asked for.
    pub fn is_aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }
}

/// The poll timeout for a core deadline: until the deadline, at most
/// [`SHUTDOWN_POLL_MS`].
pub fn poll_timeout(now: Instant, deadline: Option<Instant>) -> std::time::Duration {
    let cap = Duration::from_ms(SHUTDOWN_POLL_MS);
    deadline
        .map_or(cap, |d| d.saturating_since(now).min(cap))
        .to_std()
}

/// A loop over one UDP socket; [`UdpLoop::run`] drives a core until stopped.
#[derive(Debug)]
pub struct UdpLoop {
    poll: Poll,
    socket: mio::net::UdpSocket,
    waker: Arc<Waker>,
    cfg: LoopConfig,
    fault: FaultInjector,
    metrics: LoopMetrics,
    clock: SystemClock,
}

impl UdpLoop {
    /// Register `socket` (already non-blocking) with a new poller.
    ///
    /// # Errors
    /// Creating the poller or waker, or registering the socket, failed.
    pub fn new(
        socket: std::net::UdpSocket,
        cfg: LoopConfig,
        fault: FaultInjector,
        metrics: LoopMetrics,
        clock: SystemClock,
    ) -> io::Result<UdpLoop> {
        socket.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let mut socket = mio::net::UdpSocket::from_std(socket);
        poll.registry()
            .register(&mut socket, TOKEN_SOCKET, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), TOKEN_WAKER)?);
        Ok(UdpLoop {
            poll,
            socket,
            waker,
            cfg,
            fault,
            metrics,
            clock,
        })
    }

    /// A waker other threads use to make the loop call `handle_wake`.
    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The socket's address.
    ///
    /// # Errors
    /// The OS error.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.socket.local_addr()
    }

    /// Drive `core` until `stop`.
    ///
    /// # Errors
    /// Only a failing `poll` (the loop cannot go on); receive and send errors are
    /// counted and the loop continues.
    pub fn run<C: DatagramCore>(mut self, core: &mut C, stop: &Stop) -> io::Result<()> {
        let mut events = Events::with_capacity(self.cfg.events_max.max(2));
        let mut recv = RecvBatch::new(self.cfg.recv_batch_max);
        let mut send = SendBatch::new(self.cfg.send_batch_max, self.fault.clone());
        let mut out = Outbox::new(self.cfg.outbox_entries_max, self.cfg.outbox_bytes_max);
        // Data may have arrived before registration: drain once at the start.
        let mut readable = true;
        loop {
            if stop.is_aborted() {
                return Ok(());
            }
            if stop.is_stopping() {
                for _ in 0..SHUTDOWN_ROUNDS_MAX {
                    let done = core.shutdown(self.clock.now(), &mut out);
                    self.flush(core, &mut send, &mut out);
                    if done {
                        break;
                    }
                }
                return Ok(());
            }
            let now = self.clock.now();
            let timeout = if readable {
                std::time::Duration::ZERO
            } else {
                poll_timeout(now, core.poll_timeout())
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let mut woke = false;
            for ev in events.iter() {
                match ev.token() {
                    TOKEN_SOCKET => readable = true,
                    TOKEN_WAKER => woke = true,
                    _ => {} // spurious or unknown: ignore
                }
            }
            if woke {
                core.handle_wake(self.clock.now(), &mut out);
                self.flush(core, &mut send, &mut out);
            }
            if readable {
                readable = self.drain(core, &mut recv, &mut send, &mut out);
            }
            let now = self.clock.now();
            if core.poll_timeout().is_some_and(|t| t <= now) {
                core.handle_timeout(now, &mut out);
                self.flush(core, &mut send, &mut out);
            }
        }
    }

    /// Receive up to `recv_rounds_max` batches. Returns `true` when the socket may
    /// still hold datagrams (the round cap was reached).
    fn drain<C: DatagramCore>(
        &mut self,
        core: &mut C,
        recv: &mut RecvBatch,
        send: &mut SendBatch,
        out: &mut Outbox,
    ) -> bool {
        let cap = recv.capacity();
        let mut rounds = 0;
        while rounds < self.cfg.recv_rounds_max {
            match recv.recv(&self.socket) {
                Ok(n) => {
                    rounds += 1;
                    self.metrics.received.add(n as u64);
                    let now = self.clock.now();
                    for i in 0..n {
                        if let Some(d) = recv.get(i) {
                            if d.truncated {
                                core.handle_oversized(now, d.from);
                            } else {
                                core.handle_datagram(now, d.from, d.bytes, out);
                            }
                        }
                    }
                    core.handle_batch_end(now, out);
                    self.flush(core, send, out);
                    // A short batch means the queue is empty: on Linux a datagram
                    // that arrives later raises a new readiness event by itself.
                    if n < cap {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.metrics.recv_errors.inc();
                    log::debug!("recvmmsg: {e}");
                    return false;
                }
            }
        }
        true
    }

    fn flush<C: DatagramCore>(&mut self, core: &C, send: &mut SendBatch, out: &mut Outbox) {
        if out.is_empty() {
            return;
        }
        let fan: Option<Arc<FanoutSet>> = out
            .iter()
            .any(|(d, _)| matches!(d, Dest::Fanout { .. }))
            .then(|| core.fanout());
        let report = send.batch(&self.socket, |p| {
            for (dest, bytes) in out.iter() {
                match dest {
                    Dest::To(a) => p.push(&SockAddr::from(a), bytes),
                    Dest::Fanout { except } => {
                        if let Some(fan) = &fan {
                            for (a, s) in fan.iter() {
                                if Some(*a) != except {
                                    p.push(s, bytes);
                                }
                            }
                        }
                    }
                }
            }
        });
        out.clear();
        self.metrics.sent.add(report.sent);
        self.metrics.send_errors.add(report.errors);
        self.metrics.fault_dropped.add(report.fault_dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeout_is_capped_and_never_negative() {
        let now = Instant(1_000_000);
        assert_eq!(
            poll_timeout(now, None),
            std::time::Duration::from_millis(SHUTDOWN_POLL_MS)
        );
        assert_eq!(
            poll_timeout(now, Some(Instant(1_005_000))),
            std::time::Duration::from_millis(5)
        );
        assert_eq!(
            poll_timeout(now, Some(Instant(10))),
            std::time::Duration::ZERO
        );
        assert_eq!(
            poll_timeout(now, Some(Instant(u64::MAX))),
            std::time::Duration::from_millis(SHUTDOWN_POLL_MS)
        );
    }

    /// A core that echoes every datagram back and fans "all" out to a fixed set.
    struct Echo {
        fan: Arc<FanoutSet>,
        seen: usize,
        timeouts: usize,
        deadline: Option<Instant>,
    }

    impl DatagramCore for Echo {
        fn handle_datagram(
            &mut self,
            _now: Instant,
            from: std::net::SocketAddr,
            bytes: &[u8],
            out: &mut Outbox,
        ) {
            self.seen += 1;
            if bytes == b"all" {
                let _ = out.push(Dest::Fanout { except: None }, bytes);
            } else {
                let _ = out.push_to(from, bytes);
            }
        }
        fn handle_timeout(&mut self, _now: Instant, _out: &mut Outbox) {
            self.timeouts += 1;
            self.deadline = None;
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.deadline
        }
        fn shutdown(&mut self, _now: Instant, out: &mut Outbox) -> bool {
            let _ = out.push(Dest::Fanout { except: None }, b"bye");
            true
        }
        fn fanout(&self) -> Arc<FanoutSet> {
            self.fan.clone()
        }
    }

    #[test]
    fn loop_echoes_fans_out_runs_timers_and_says_goodbye() {
        use std::net::UdpSocket;
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let stop = Stop::new(Shutdown::new());
        let stop2 = stop.clone();
        let fan = Arc::new(FanoutSet::new([peer.local_addr().unwrap()]));
        let t = std::thread::spawn(move || {
            let lp = UdpLoop::new(
                sock,
                LoopConfig::default(),
                FaultInjector::none(),
                LoopMetrics::detached(),
                SystemClock::new(),
            )
            .unwrap();
            let mut core = Echo {
                fan,
                seen: 0,
                timeouts: 0,
                deadline: Some(Instant(0)),
            };
            lp.run(&mut core, &stop2).unwrap();
            core
        });
        let mut buf = [0u8; 64];
        peer.send_to(b"ping", addr).unwrap();
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], addr));
        peer.send_to(b"all", addr).unwrap();
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"all");
        stop.stop();
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"bye");
        let core = t.join().unwrap();
        assert_eq!((core.seen, core.timeouts), (2, 1));
    }
}
