//! The event loop's DTLS path: records and handshake datagrams gathered into
//! `sendmmsg` batches.
//!
//! spec: dtls.md §4.3. With a [`Link`], the loop hands every received datagram to
//! the link and only the plaintexts it opens to the core; and it seals every
//! outbox entry per destination (one encryption per fan-out copy: each
//! association has its own keys) into a [`SendQueue`] that is flushed with one
//! `sendmmsg` per [`LoopConfig::send_batch_max`] records. Records never wait for
//! a later flush: a batch is sent when full and at the end of every flush.
//!
//! [`LoopConfig::send_batch_max`]: super::LoopConfig::send_batch_max

use std::sync::Arc;

use super::udp::{SendBatch, SendReport};
use super::{Dest, FanoutSet, Outbox, SockAddr};
use crate::dtls::{Link, Wire};
use crate::time::Instant;

/// Bytes reserved per queued datagram (a 1200-byte payload becomes a
/// 1237-byte record; handshake datagrams are at most the link's MTU).
pub const QUEUE_SLOT_BYTES: usize = 1500;

/// Datagrams waiting for the next `sendmmsg`, in one reused buffer.
#[derive(Debug)]
pub struct SendQueue {
    data: Vec<u8>,
    entries: Vec<(SockAddr, usize, usize)>,
    entries_max: usize,
}

impl SendQueue {
    /// Room for `entries_max` datagrams (at least 1).
    pub fn new(entries_max: usize) -> SendQueue {
        let entries_max = entries_max.max(1);
        SendQueue {
            data: Vec::with_capacity(entries_max * QUEUE_SLOT_BYTES),
            entries: Vec::with_capacity(entries_max),
            entries_max,
        }
    }

    fn full_for(&self, len: usize) -> bool {
        self.entries.len() >= self.entries_max
            || (self.data.len() + len > self.data.capacity() && !self.entries.is_empty())
    }
}

/// A [`Wire`] into a [`SendQueue`] that sends through one socket.
pub struct BatchWire<'a> {
    sock: &'a mio::net::UdpSocket,
    send: &'a mut SendBatch,
    q: &'a mut SendQueue,
    /// What the sends so far did.
    pub report: SendReport,
}

impl std::fmt::Debug for BatchWire<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchWire({} queued)", self.q.entries.len())
    }
}

impl<'a> BatchWire<'a> {
    /// A wire over `sock`.
    pub fn new(
        sock: &'a mio::net::UdpSocket,
        send: &'a mut SendBatch,
        q: &'a mut SendQueue,
    ) -> BatchWire<'a> {
        BatchWire {
            sock,
            send,
            q,
            report: SendReport::default(),
        }
    }

    /// Send everything queued.
    pub fn flush(&mut self) {
        if self.q.entries.is_empty() {
            return;
        }
        let q = &*self.q;
        let r = self.send.batch(self.sock, |p| {
            for (to, start, len) in &q.entries {
                p.push(to, &q.data[*start..*start + *len]);
            }
        });
        self.report.sent += r.sent;
        self.report.errors += r.errors;
        self.report.fault_dropped += r.fault_dropped;
        self.q.entries.clear();
        self.q.data.clear();
    }
}

impl Wire for BatchWire<'_> {
    #[inline]
    fn transmit(&mut self, to: &SockAddr, bytes: &[u8]) {
        if self.q.full_for(bytes.len()) {
            self.flush();
        }
        let start = self.q.data.len();
        self.q.data.extend_from_slice(bytes);
        self.q.entries.push((*to, start, bytes.len()));
    }
}

/// Seal every outbox entry for its destinations into `wire`, then clear the
/// outbox. `fan` is the core's fan-out set (fetched only when an entry needs it).
pub fn seal_outbox(
    link: &Link,
    now: Instant,
    out: &mut Outbox,
    fan: impl FnOnce() -> Arc<FanoutSet>,
    wire: &mut BatchWire<'_>,
) {
    let fan: Option<Arc<FanoutSet>> = out
        .iter()
        .any(|(d, _)| matches!(d, Dest::Fanout { .. }))
        .then(fan);
    let sealer = link.sealer();
    for (dest, bytes) in out.iter() {
        match dest {
            Dest::To(a) => {
                sealer.seal(now, a, bytes, wire);
            }
            Dest::Fanout { except } => {
                if let Some(fan) = &fan {
                    for (a, _) in fan.iter() {
                        if Some(*a) != except {
                            sealer.seal(now, *a, bytes, wire);
                        }
                    }
                }
            }
        }
    }
    out.clear();
}
