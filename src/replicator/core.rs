//! The replicator's sans-IO core: Fresh/Repeat, fan-out, subscriptions and feeds.
//!
//! seed s3.10, s3.11, s8, s2.2 ("Replicators perform a best-effort copying").
//!
//! What it is: [`Shared`] holds the state every worker thread shares — the
//! lock-free dedupe window, the published fan-out set (an `ArcSwap` the send path
//! reads without locking), the immutable source tables, the lock-free feed
//! liveness table, and, behind one mutex, the control plane (subscription table
//! and feed set), which only control datagrams and timers touch. [`Core`] is one
//! worker's handle on it and implements [`DatagramCore`].
//!
//! The payload path (per datagram, no allocation, no lock): version and kind
//! bytes, `peek_id` (header only: s2.2, no signature check), source check (a
//! configured RUAS source or a configured upstream; others are dropped and
//! counted), liveness note, dedupe, and on Fresh one [`Dest::Fanout`] entry that
//! the driver expands to every subscriber except the sender.
//!
//! What it is not: a store. Nothing is kept, verified or re-requested.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use ivip_wire::WireError;
use ivip_wire::control::{self, Control, Role};
use ivip_wire::payload::{self, peek_id};
use parking_lot::Mutex;

use super::dedupe::{Dedupe, Verdict};
use crate::feed::{
    FeedOutcome, FeedSet, FeedSpec, FeedStatus, FeedTiming, Liveness, SubOutcome, Subscribers,
    SubscribersSettings,
};
use crate::metrics::{Counter, CounterVec, Gauge, Registry};
use crate::net::{DatagramCore, Dest, FanoutSet, Outbox};
use crate::time::Instant;

/// Why a datagram was dropped (the `reason` label of
/// `ivip_replicator_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Drop {
    /// Shorter than its format's fixed part.
    Truncated = 0,
    /// Longer than a payload may be (1200 bytes), or than a receive slot.
    Oversized,
    /// A version byte this implementation does not speak.
    UnknownVersion,
    /// A datagram kind that is neither a payload nor feed control.
    UnknownKind,
    /// A reserved field or flag was set.
    ReservedNonZero,
    /// A length field disagrees with the datagram's length.
    LengthMismatch,
    /// Any other malformation.
    Malformed,
    /// A payload from an address that is neither a RUAS source nor an upstream.
    UnknownSource,
    /// A payload older than the dedupe window.
    TooOld,
    /// A control datagram that failed its checks.
    ControlInvalid,
    /// A valid control datagram this node does not expect (wrong sender, nonce, or
    /// kind for this side).
    ControlUnexpected,
    /// The outbox was full (the loop fell behind).
    OutboxFull,
}

impl Drop {
    /// The metrics labels, in discriminant order.
    pub const LABELS: [&'static str; 12] = [
        "truncated",
        "oversized",
        "unknown_version",
        "unknown_kind",
        "reserved_nonzero",
        "length_mismatch",
        "malformed",
        "unknown_source",
        "too_old",
        "control_invalid",
        "control_unexpected",
        "outbox_full",
    ];

    /// The label.
    pub fn label(self) -> &'static str {
        Self::LABELS[self as usize]
    }

    /// The drop reason for a payload header error.
    pub fn from_wire(e: WireError) -> Drop {
        match e {
            WireError::Truncated => Drop::Truncated,
            WireError::TooLong => Drop::Oversized,
            WireError::UnsupportedVersion => Drop::UnknownVersion,
            WireError::UnknownType => Drop::UnknownKind,
            WireError::ReservedNonZero => Drop::ReservedNonZero,
            WireError::LengthMismatch | WireError::TrailingBytes => Drop::LengthMismatch,
            _ => Drop::Malformed,
        }
    }
}

/// The replicator's metrics (names under `ivip_replicator_`).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Fresh payloads (sent on).
    pub fresh: Counter,
    /// Repeats (dropped).
    pub repeat: Counter,
    /// Drops by reason ([`Drop::LABELS`]).
    pub dropped: CounterVec,
    /// Subscribers now.
    pub downstreams: Gauge,
    /// Subscription events by outcome ([`SubOutcome::LABELS`]).
    pub subscriptions: CounterVec,
}

impl Metrics {
    /// Register under `ivip_replicator_`.
    pub fn register(r: &Registry) -> Metrics {
        Metrics {
            fresh: r.counter(
                "ivip_replicator_payloads_fresh_total",
                "Payloads seen for the first time and sent to every downstream.",
            ),
            repeat: r.counter(
                "ivip_replicator_payloads_repeat_total",
                "Payloads seen before and dropped.",
            ),
            dropped: r.counter_vec(
                "ivip_replicator_dropped_total",
                "Datagrams dropped, by reason.",
                "reason",
                &Drop::LABELS,
            ),
            downstreams: r.gauge("ivip_replicator_downstreams", "Subscribers now."),
            subscriptions: r.counter_vec(
                "ivip_replicator_subscriptions_total",
                "Subscription requests and expiries, by outcome.",
                "outcome",
                &SubOutcome::LABELS,
            ),
        }
    }
}

/// Who may inject payloads besides upstream feeds: RUASes (level 0).
#[derive(Debug, Clone, Default)]
pub struct RuasSources {
    /// Any port from these addresses.
    pub ips: HashSet<IpAddr>,
    /// Exactly these address and port pairs.
    pub addrs: HashSet<SocketAddr>,
}

impl RuasSources {
    #[inline]
    fn contains(&self, a: SocketAddr) -> bool {
        (!self.ips.is_empty() && self.ips.contains(&a.ip().to_canonical()))
            || (!self.addrs.is_empty() && self.addrs.contains(&a))
    }
}

/// Everything a replicator core needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// RUAS sources (level 0); empty at level n.
    pub ruas_sources: RuasSources,
    /// Upstream feeds: mesh peers at level 0, feeds with alternatives at level n.
    pub feeds: Vec<FeedSpec>,
    /// Feed timers.
    pub timing: FeedTiming,
    /// Who may subscribe.
    pub downstream: SubscribersSettings,
    /// Dedupe window (sequence numbers per RUAS).
    pub window: usize,
}

struct ControlPlane {
    feeds: FeedSet,
    subs: Subscribers,
}

/// State shared by every worker.
pub struct Shared {
    dedupe: Dedupe,
    ruas: RuasSources,
    upstreams: Arc<HashMap<SocketAddr, usize>>,
    liveness: Arc<Liveness>,
    fanout: ArcSwap<FanoutSet>,
    control: Mutex<ControlPlane>,
    /// The control plane's next deadline, µs (u64::MAX: none).
    deadline_us: AtomicU64,
    metrics: Metrics,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replicator::Shared({} downstreams)",
            self.fanout.load().len()
        )
    }
}

impl Shared {
    /// Build the shared state. `nonce` names this node's subscriptions and
    /// `secret` keys its cookies; both random in production.
    ///
    /// # Errors
    /// A message when the dedupe window is invalid.
    pub fn new(
        settings: &Settings,
        now: Instant,
        nonce: u64,
        secret: [u8; 32],
        registry: &Registry,
    ) -> Result<Arc<Shared>, String> {
        let dedupe = Dedupe::new(settings.window)?;
        let feeds = FeedSet::new(
            Role::Replicator,
            nonce,
            &settings.feeds,
            settings.timing,
            now,
            registry,
            "ivip_replicator_feed",
        );
        let subs = Subscribers::new(settings.downstream.clone(), secret);
        let shared = Shared {
            dedupe,
            ruas: settings.ruas_sources.clone(),
            upstreams: feeds.index(),
            liveness: feeds.liveness(),
            fanout: ArcSwap::from_pointee(FanoutSet::default()),
            control: Mutex::new(ControlPlane { feeds, subs }),
            deadline_us: AtomicU64::new(now.as_us()),
            metrics: Metrics::register(registry),
        };
        Ok(Arc::new(shared))
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Subscribers now.
    pub fn downstream_count(&self) -> usize {
        self.fanout.load().len()
    }

    /// The subscribers' addresses.
    pub fn downstreams(&self) -> Vec<SocketAddr> {
        self.fanout.load().iter().map(|(a, _)| *a).collect()
    }

    /// What each upstream feed is doing.
    pub fn feed_status(&self) -> Vec<FeedStatus> {
        self.control.lock().feeds.status()
    }

    /// Republish the fan-out set and update the deadline after a control-plane
    /// change. Called with the lock held.
    fn after_control(&self, cp: &mut ControlPlane) {
        if cp.subs.take_changed() {
            self.fanout.store(Arc::new(FanoutSet::new(cp.subs.addrs())));
            self.metrics.downstreams.set(cp.subs.len() as i64);
        }
        let d = match (cp.feeds.poll_timeout(), cp.subs.poll_timeout()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(Instant(u64::MAX)),
        };
        self.deadline_us.store(d.as_us(), Ordering::Relaxed);
    }
}

/// One worker's core. Worker 0 (`runs_timers`) also runs the control plane's
/// timers and says goodbye at shutdown.
#[derive(Debug)]
pub struct Core {
    shared: Arc<Shared>,
    runs_timers: bool,
}

impl Core {
    /// A worker's core.
    pub fn new(shared: Arc<Shared>, runs_timers: bool) -> Core {
        Core {
            shared,
            runs_timers,
        }
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    #[inline]
    fn drop(&self, why: Drop) {
        self.shared.metrics.dropped.at(why as usize).inc();
    }

    fn control(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], out: &mut Outbox) {
        let msg = match Control::parse(bytes) {
            Ok(m) => m,
            Err(_) => return self.drop(Drop::ControlInvalid),
        };
        let sh = &*self.shared;
        let mut cp = sh.control.lock();
        match msg {
            Control::Subscribe { .. } | Control::Unsubscribe { .. } => {
                let o = cp.subs.handle(now, from, &msg, out);
                sh.metrics.subscriptions.at(o.index()).inc();
                if o == SubOutcome::Ignored {
                    self.drop(Drop::ControlUnexpected);
                }
            }
            Control::Challenge { .. } | Control::Accept { .. } | Control::Refuse { .. } => {
                if cp.feeds.handle_control(now, from, &msg, out) == FeedOutcome::Ignored {
                    self.drop(Drop::ControlUnexpected);
                }
            }
        }
        sh.after_control(&mut cp);
    }
}

impl DatagramCore for Core {
    #[inline]
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8], out: &mut Outbox) {
        // spec/README.md §5: byte 0 version, byte 1 kind.
        let (Some(&version), Some(&kind)) = (bytes.first(), bytes.get(1)) else {
            return self.drop(Drop::Truncated);
        };
        if version != payload::VERSION {
            return self.drop(Drop::UnknownVersion);
        }
        if kind == payload::KIND_PAYLOAD {
            let id = match peek_id(bytes) {
                Ok(id) => id,
                Err(e) => return self.drop(Drop::from_wire(e)),
            };
            let sh = &*self.shared;
            if let Some(&t) = sh.upstreams.get(&from) {
                sh.liveness.note(t, now);
            } else if !sh.ruas.contains(from) {
                return self.drop(Drop::UnknownSource);
            }
            match sh.dedupe.check(id) {
                Verdict::Fresh => {
                    sh.metrics.fresh.inc();
                    if out
                        .push(Dest::Fanout { except: Some(from) }, bytes)
                        .is_err()
                    {
                        self.drop(Drop::OutboxFull);
                    }
                }
                Verdict::Repeat => sh.metrics.repeat.inc(),
                Verdict::TooOld => self.drop(Drop::TooOld),
            }
        } else if control::is_control_kind(kind) {
            self.control(now, from, bytes, out);
        } else {
            self.drop(Drop::UnknownKind);
        }
    }

    fn handle_oversized(&mut self, _now: Instant, _from: SocketAddr) {
        self.drop(Drop::Oversized);
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        if !self.runs_timers {
            return;
        }
        let sh = &*self.shared;
        let mut cp = sh.control.lock();
        cp.feeds.handle_timeout(now, out);
        let expired = cp.subs.expire(now);
        sh.metrics
            .subscriptions
            .at(SubOutcome::LABELS.len() - 1)
            .add(expired as u64);
        sh.after_control(&mut cp);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if !self.runs_timers {
            return None;
        }
        match self.shared.deadline_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Instant(us)),
        }
    }

    fn shutdown(&mut self, _now: Instant, out: &mut Outbox) -> bool {
        if !self.runs_timers {
            return true;
        }
        let sh = &*self.shared;
        let mut cp = sh.control.lock();
        let done = cp.feeds.shutdown(out) && cp.subs.shutdown(out);
        sh.after_control(&mut cp);
        done
    }

    #[inline]
    fn fanout(&self) -> Arc<FanoutSet> {
        self.shared.fanout.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;
    use ivip_wire::payload::{PayloadRepr, Record};
    use ivip_wire::{PayloadId, RuasId, Seq};

    fn payload(seq: u32) -> Vec<u8> {
        PayloadRepr {
            id: PayloadId {
                ruas: RuasId::new(3).unwrap(),
                epoch: 1,
                seq: Seq(seq),
            },
            timestamp_us: 0,
            records: vec![Record::Heartbeat { interval_ms: 100 }],
            signature: [0; 64],
        }
        .to_vec()
        .unwrap()
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn settings() -> Settings {
        let mut ruas = RuasSources::default();
        ruas.ips.insert("127.0.0.9".parse().unwrap());
        Settings {
            ruas_sources: ruas,
            feeds: vec![FeedSpec {
                primary: a("127.0.0.2:4000"),
                alternatives: vec![],
            }],
            timing: FeedTiming::default(),
            downstream: SubscribersSettings {
                capacity: 2,
                allow: vec!["127.0.0.0/8".parse().unwrap()],
                roles: vec![Role::Replicator, Role::Qsd],
                keepalive: Duration::from_ms(500),
                expiry: Duration::from_ms(2000),
                refuse_retry_after: Duration::from_ms(1000),
            },
            window: 64,
        }
    }

    fn core() -> (Core, Registry) {
        let r = Registry::new();
        let sh = Shared::new(&settings(), Instant(0), 1, [3; 32], &r).unwrap();
        (Core::new(sh, true), r)
    }

    fn subscribe(c: &mut Core, from: SocketAddr, out: &mut Outbox) {
        let s = |cookie| {
            Control::Subscribe {
                role: Role::Qsd,
                nonce: 5,
                cookie,
            }
            .to_bytes()
        };
        c.handle_datagram(Instant(10), from, &s(0), out);
        let cookie = match out.iter().next().map(|(_, b)| Control::parse(b)) {
            Some(Ok(Control::Challenge { cookie, .. })) => cookie,
            other => panic!("{other:?}"),
        };
        out.clear();
        c.handle_datagram(Instant(10), from, &s(cookie), out);
        assert!(matches!(
            out.iter().next().map(|(_, b)| Control::parse(b)),
            Some(Ok(Control::Accept { .. }))
        ));
        out.clear();
    }

    #[test]
    fn fresh_payloads_fan_out_once_and_repeats_are_dropped() {
        let (mut c, _) = core();
        let mut out = Outbox::new(16, 16 * 1280);
        let d1 = a("127.0.0.5:1");
        subscribe(&mut c, d1, &mut out);
        assert_eq!(c.shared().downstreams(), [d1]);
        let ruas = a("127.0.0.9:777");
        let p = payload(42);
        c.handle_datagram(Instant(20), ruas, &p, &mut out);
        let v: Vec<_> = out.iter().map(|(d, b)| (d, b.to_vec())).collect();
        assert_eq!(v, [(Dest::Fanout { except: Some(ruas) }, p.clone())]);
        out.clear();
        let up = a("127.0.0.2:4000");
        c.handle_datagram(Instant(21), up, &p, &mut out);
        assert!(out.is_empty());
        let m = c.shared().metrics();
        assert_eq!((m.fresh.get(), m.repeat.get()), (1, 1));
        assert!(c.shared().feed_status()[0].last_payload.is_some());
    }

    #[test]
    fn bad_input_and_strangers_are_dropped_and_counted() {
        let (mut c, _) = core();
        let mut out = Outbox::new(16, 16 * 1280);
        let ruas = a("127.0.0.9:777");
        let p = payload(1);
        let mut cases: Vec<(Vec<u8>, SocketAddr, Drop)> = vec![
            (vec![], ruas, Drop::Truncated),
            (vec![1], ruas, Drop::Truncated),
            (p[..30].to_vec(), ruas, Drop::Truncated),
            (vec![2; 40], ruas, Drop::UnknownVersion),
            (vec![1, 9, 0, 0], ruas, Drop::UnknownKind),
            (vec![1, 16, 0], ruas, Drop::ControlInvalid),
            (p.clone(), a("127.0.0.10:1"), Drop::UnknownSource),
        ];
        let mut long = p.clone();
        long.push(0);
        cases.push((long, ruas, Drop::LengthMismatch));
        let mut reserved = p.clone();
        reserved[3] = 1;
        cases.push((reserved, ruas, Drop::ReservedNonZero));
        let mut big = p.clone();
        big.resize(1300, 0);
        cases.push((big, ruas, Drop::Oversized));
        let accept = Control::Accept {
            nonce: 99,
            keepalive_ms: 500,
            expiry_ms: 2000,
        };
        cases.push((
            accept.to_bytes().to_vec(),
            a("127.0.0.77:1"),
            Drop::ControlUnexpected,
        ));
        for (bytes, from, why) in &cases {
            let before = c.shared().metrics().dropped.at(*why as usize).get();
            c.handle_datagram(Instant(5), *from, bytes, &mut out);
            assert_eq!(
                c.shared().metrics().dropped.at(*why as usize).get(),
                before + 1,
                "{why:?}"
            );
        }
        c.handle_oversized(Instant(5), ruas);
        assert_eq!(
            c.shared()
                .metrics()
                .dropped
                .at(Drop::Oversized as usize)
                .get(),
            2
        );
        assert!(out.is_empty());
        assert_eq!(c.shared().metrics().fresh.get(), 0);
    }

    #[test]
    fn full_outbox_is_counted_not_fatal() {
        let (mut c, _) = core();
        let mut out = Outbox::new(1, 1280);
        let ruas = a("127.0.0.9:777");
        c.handle_datagram(Instant(1), ruas, &payload(1), &mut out);
        c.handle_datagram(Instant(1), ruas, &payload(2), &mut out);
        assert_eq!(
            c.shared()
                .metrics()
                .dropped
                .at(Drop::OutboxFull as usize)
                .get(),
            1
        );
    }

    #[test]
    fn subscribers_expire_and_only_worker_zero_runs_timers() {
        let (mut c, _) = core();
        let mut out = Outbox::new(16, 16 * 1280);
        let d1 = a("127.0.0.5:1");
        subscribe(&mut c, d1, &mut out);
        let other = Core::new(c.shared().clone(), false);
        assert_eq!(other.poll_timeout(), None);
        assert!(c.poll_timeout().is_some());
        c.handle_timeout(Instant(10) + Duration::from_ms(2000), &mut out);
        assert_eq!(c.shared().downstream_count(), 0);
        assert_eq!(c.shared().metrics().downstreams.get(), 0);
    }
}
