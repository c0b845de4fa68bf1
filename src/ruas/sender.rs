//! The RUAS's payload sender: a small core on the shared UDP event loop, so the
//! RUAS → level-0 links run DTLS like every other FMS hop (issue 9).
//!
//! The writer thread hands each payload to a bounded-in-work channel and wakes
//! the loop; the core pushes it once as a [`Dest::Fanout`] to the configured
//! level-0 replicators, and the loop seals one record per replicator. Nothing
//! is expected back on this socket except DTLS handshakes (the link handles
//! them); a plaintext that arrives anyway is counted and ignored.
//!
//! What it is not: a store. A payload sent while a replicator's association is
//! still opening waits in the link's queue; the RUAS's own log and the MPSes
//! cover what the network loses (s4.1.3).

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};

use crate::metrics::Counter;
use crate::net::{DatagramCore, Dest, FanoutSet, Outbox};
use crate::time::Instant;

/// The sender core.
#[derive(Debug)]
pub struct SenderCore {
    rx: Receiver<Vec<u8>>,
    held: Option<Vec<u8>>,
    fan: Arc<FanoutSet>,
    unexpected: Counter,
    full: Counter,
}

impl SenderCore {
    /// Payloads from `rx` go to every address in `replicators`.
    pub fn new(
        rx: Receiver<Vec<u8>>,
        replicators: &[SocketAddr],
        unexpected: Counter,
        full: Counter,
    ) -> SenderCore {
        SenderCore {
            rx,
            held: None,
            fan: Arc::new(FanoutSet::new(replicators.iter().copied())),
            unexpected,
            full,
        }
    }

    /// Move waiting payloads into the outbox until it is full. Returns `true`
    /// when nothing is left waiting.
    fn pump(&mut self, out: &mut Outbox) -> bool {
        loop {
            let p = match self.held.take() {
                Some(p) => p,
                None => match self.rx.try_recv() {
                    Ok(p) => p,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => return true,
                },
            };
            if out.push(Dest::Fanout { except: None }, &p).is_err() {
                // The loop flushes and calls again at once (poll_timeout).
                self.full.inc();
                self.held = Some(p);
                return false;
            }
        }
    }
}

impl DatagramCore for SenderCore {
    fn handle_datagram(&mut self, _now: Instant, _from: SocketAddr, _b: &[u8], _out: &mut Outbox) {
        self.unexpected.inc();
    }

    fn handle_timeout(&mut self, _now: Instant, out: &mut Outbox) {
        self.pump(out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (self.held.is_some() || !self.rx.is_empty()).then_some(Instant::ZERO)
    }

    fn handle_wake(&mut self, _now: Instant, out: &mut Outbox) {
        self.pump(out);
    }

    fn shutdown(&mut self, _now: Instant, out: &mut Outbox) -> bool {
        self.pump(out)
    }

    fn fanout(&self) -> Arc<FanoutSet> {
        self.fan.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_fan_out_once_each_and_wait_when_the_outbox_is_full() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let r: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let mut c = SenderCore::new(rx, &r, Counter::detached(), Counter::detached());
        assert_eq!(c.fanout().len(), 2);
        for i in 0..3u8 {
            tx.send(vec![i; 10]).unwrap();
        }
        assert_eq!(c.poll_timeout(), Some(Instant::ZERO));
        let mut out = Outbox::new(2, 1000);
        assert!(!c.shutdown(Instant(1), &mut out));
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|(d, _)| d == Dest::Fanout { except: None }));
        out.clear();
        assert!(c.poll_timeout().is_some(), "one held back");
        c.handle_timeout(Instant(2), &mut out);
        assert_eq!(out.iter().map(|(_, b)| b[0]).collect::<Vec<_>>(), [2]);
        assert_eq!(c.poll_timeout(), None);
    }
}
