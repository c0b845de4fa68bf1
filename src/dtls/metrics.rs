//! The link layer's counters and a log that never floods.
//!
//! spec: dtls.md §6. Every datagram the layer refuses is counted by reason; every
//! handshake is counted by outcome; refusals are logged at a bounded rate (a
//! flood of bad input must not become a flood of log lines), and the last few
//! messages are kept for tests and status pages.

use std::collections::VecDeque;

use parking_lot::Mutex;

use crate::metrics::{Counter, CounterVec, Gauge, Registry};
use crate::time::{Duration, Instant};

/// Why a datagram was dropped by the link layer (the `reason` label of
/// `{prefix}_dtls_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Drop {
    /// Not a DTLS record at all: plain UDP (an ivip datagram sent without DTLS)
    /// or garbage.
    PlainUdp = 0,
    /// A DTLS record header that fails its checks (truncated, wrong version).
    Malformed,
    /// A record from a peer with no association (unknown, or it restarted).
    NoAssociation,
    /// Application data while the association's handshake is still running.
    NotEstablished,
    /// A record that failed decryption or authentication.
    DecryptFailed,
    /// A ClientHello over the per-address or total rate.
    HelloRate,
    /// A new association refused because too many are half-open.
    HalfOpenFull,
    /// Our own attempt to open an association lost a simultaneous-open tie (or
    /// the peer's ClientHello lost it).
    SimultaneousOpen,
    /// A ClientHello of a handshake already done (a late duplicate).
    DuplicateHello,
    /// A datagram for an address no pin covers (this node never opens a link there).
    UnpinnedDestination,
    /// A datagram for a peer whose handshake failed: queued during it, or sent
    /// within `retry_after_failure_ms` of the failure.
    HandshakeFailed,
    /// The queue of datagrams waiting for a handshake was full.
    QueueFull,
    /// The TLS library refused to encrypt (association closed under us).
    SealFailed,
}

impl Drop {
    /// The labels, in discriminant order.
    pub const LABELS: [&'static str; 13] = [
        "plain_udp",
        "malformed",
        "no_association",
        "not_established",
        "decrypt_failed",
        "hello_rate",
        "half_open_full",
        "simultaneous_open",
        "duplicate_hello",
        "unpinned_destination",
        "handshake_failed",
        "queue_full",
        "seal_failed",
    ];

    /// The label.
    pub fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// How a handshake ended (the `outcome` label of `{prefix}_dtls_handshakes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Outcome {
    /// Both sides accepted each other's pinned keys.
    Completed = 0,
    /// The peer's key is not pinned (or it sent none).
    FailedUnpinnedKey,
    /// The peer's key is pinned for other addresses.
    FailedWrongAddress,
    /// The peer refused our key (a fatal alert during the handshake).
    FailedRefusedByPeer,
    /// No answer within the handshake timeout.
    FailedTimeout,
    /// Anything else: no common suite or version, malformed messages.
    FailedProtocol,
}

impl Outcome {
    /// The labels, in discriminant order.
    pub const LABELS: [&'static str; 6] = [
        "completed",
        "failed_unpinned_key",
        "failed_wrong_address",
        "failed_refused_by_peer",
        "failed_timeout",
        "failed_protocol",
    ];
}

/// The link layer's metrics, registered under a daemon's prefix.
#[derive(Debug, Clone)]
pub struct DtlsMetrics {
    /// Drops by [`Drop`] reason.
    pub dropped: CounterVec,
    /// Handshakes by [`Outcome`].
    pub handshakes: CounterVec,
    /// HelloVerifyRequests sent (cookie exchanges started).
    pub hello_verify: Counter,
    /// Handshakes this node opened because a peer sent records for an
    /// association it no longer has (the peer or this node restarted).
    pub rehandshakes: Counter,
    /// Associations closed by a peer's close_notify.
    pub closed_by_peer: Counter,
    /// Associations removed after `idle_timeout_s` without traffic.
    pub expired: Counter,
    /// Established associations now.
    pub associations: Gauge,
    /// Half-open associations (handshake running) now.
    pub half_open: Gauge,
}

impl DtlsMetrics {
    /// Register under `{prefix}_dtls_`.
    pub fn register(r: &Registry, prefix: &str) -> DtlsMetrics {
        DtlsMetrics {
            dropped: r.counter_vec(
                &format!("{prefix}_dtls_dropped_total"),
                "Datagrams the DTLS layer dropped, by reason (none is ever given to the role).",
                "reason",
                &Drop::LABELS,
            ),
            handshakes: r.counter_vec(
                &format!("{prefix}_dtls_handshakes_total"),
                "DTLS handshakes, by outcome.",
                "outcome",
                &Outcome::LABELS,
            ),
            hello_verify: r.counter(
                &format!("{prefix}_dtls_hello_verify_total"),
                "HelloVerifyRequests sent (stateless cookie exchanges).",
            ),
            rehandshakes: r.counter(
                &format!("{prefix}_dtls_rehandshakes_total"),
                "Handshakes opened because a peer sent records of an association this node no longer has.",
            ),
            closed_by_peer: r.counter(
                &format!("{prefix}_dtls_closed_by_peer_total"),
                "Associations a peer closed (close_notify).",
            ),
            expired: r.counter(
                &format!("{prefix}_dtls_expired_total"),
                "Associations removed after idle_timeout_s without traffic.",
            ),
            associations: r.gauge(
                &format!("{prefix}_dtls_associations"),
                "Established DTLS associations.",
            ),
            half_open: r.gauge(
                &format!("{prefix}_dtls_half_open"),
                "DTLS associations whose handshake is running.",
            ),
        }
    }

    /// Count a drop.
    #[inline]
    pub fn drop(&self, why: Drop) {
        self.dropped.at(why as usize).inc();
    }

    /// Count a handshake outcome.
    pub fn outcome(&self, o: Outcome) {
        self.handshakes.at(o as usize).inc();
    }
}

/// Log lines allowed per window.
pub const LOG_LINES_MAX: u32 = 20;
/// The window of [`LOG_LINES_MAX`].
pub const LOG_WINDOW: Duration = Duration::from_secs(10);
/// Messages kept for [`RateLog::recent`].
pub const RECENT_MAX: usize = 32;

#[derive(Debug, Default)]
struct LogState {
    window_start: Instant,
    lines: u32,
    suppressed: u64,
    recent: VecDeque<String>,
}

/// A log of at most [`LOG_LINES_MAX`] lines per [`LOG_WINDOW`]; the rest are
/// counted and summarised in one line when the window turns.
#[derive(Debug, Default)]
pub struct RateLog {
    state: Mutex<LogState>,
    /// A name in front of every line (the daemon's prefix).
    pub name: String,
    /// Keep messages for [`RateLog::recent`] but write nothing (probes).
    pub silent: bool,
}

impl RateLog {
    /// A log whose lines start with `name`.
    pub fn new(name: &str) -> RateLog {
        RateLog {
            state: Mutex::new(LogState::default()),
            name: name.to_string(),
            silent: false,
        }
    }

    /// A log that keeps messages for [`RateLog::recent`] and writes nothing.
    pub fn silent(name: &str) -> RateLog {
        RateLog {
            silent: true,
            ..RateLog::new(name)
        }
    }

    /// Log `msg` at `level` unless the window's budget is spent. The message is
    /// only formatted when it is kept or logged.
    pub fn log(&self, now: Instant, level: log::Level, msg: impl FnOnce() -> String) {
        let mut s = self.state.lock();
        if now.saturating_since(s.window_start) >= LOG_WINDOW {
            if s.suppressed > 0 {
                log::warn!(
                    "{}: {} more DTLS messages suppressed in the last {LOG_WINDOW}",
                    self.name,
                    s.suppressed
                );
            }
            s.window_start = now;
            s.lines = 0;
            s.suppressed = 0;
        }
        if s.lines >= LOG_LINES_MAX {
            s.suppressed += 1;
            return;
        }
        s.lines += 1;
        let m = msg();
        if !self.silent {
            log::log!(level, "{}: {m}", self.name);
        }
        if s.recent.len() >= RECENT_MAX {
            s.recent.pop_front();
        }
        s.recent.push_back(m);
    }

    /// The last messages logged, oldest first.
    pub fn recent(&self) -> Vec<String> {
        self.state.lock().recent.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_per_window() {
        let l = RateLog::new("t");
        for i in 0..100 {
            l.log(Instant(1), log::Level::Debug, || format!("m{i}"));
        }
        assert_eq!(l.recent().len(), LOG_LINES_MAX as usize);
        l.log(Instant(1) + LOG_WINDOW, log::Level::Debug, || {
            "later".into()
        });
        assert_eq!(l.recent().last().map(String::as_str), Some("later"));
        assert!(l.recent().len() <= RECENT_MAX);
    }
}
