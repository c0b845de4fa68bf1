//! The downstream side of feeds: subscribing to upstreams, noticing silence,
//! failing over to alternatives and returning to the primary.
//!
//! spec: control.md §5 (downstream); seed s8. Sans-IO: time comes in, control
//! datagrams go out through the caller's outbox. Payload arrivals are recorded in
//! a lock-free [`Liveness`] table that any worker thread may update; the state
//! machine reads it when its timers run.
//!
//! Per configured feed ("slot") one target is *active*: it is subscribed and kept
//! alive. A slot whose active target has sent no payload for `silence` (or that
//! refused us) moves to the next target in order, cyclically. While a slot is on
//! an alternative its primary is *probed* (subscribed every `probe_interval` until
//! accepted, then kept alive); once the primary has delivered payloads without a
//! silence for `return_hold`, the slot returns to it and unsubscribes from the
//! alternative.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ivip_wire::control::{Control, RefuseReason, Role};

use crate::metrics::{CounterVec, GaugeVec, Registry};
use crate::net::Outbox;
use crate::time::{Duration, Instant};

/// The timers' shortest keepalive accepted from an upstream.
pub const KEEPALIVE_MIN: Duration = Duration::from_ms(50);
/// The timers' longest keepalive accepted from an upstream.
pub const KEEPALIVE_MAX: Duration = Duration::from_secs(10);
/// The longest a refusal keeps us from asking an upstream again.
pub const REFUSED_HOLD_MAX: Duration = Duration::from_secs(60);
/// How often timers run at least, to update gauges and watch probed primaries.
pub const TICK: Duration = Duration::from_ms(250);

/// A configured feed: the primary upstream and its alternatives, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSpec {
    /// The primary upstream.
    pub primary: SocketAddr,
    /// Alternatives, in the order they are tried.
    pub alternatives: Vec<SocketAddr>,
}

/// Checked `[feed_timing]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedTiming {
    /// No payload for this long: the feed has failed.
    pub silence: Duration,
    /// Retry an unanswered Subscribe after this long.
    pub subscribe_retry: Duration,
    /// Ask a probed primary this often until it accepts.
    pub probe_interval: Duration,
    /// Return to the primary after it delivered without silence this long.
    pub return_hold: Duration,
}

impl Default for FeedTiming {
    fn default() -> Self {
        FeedTiming {
            silence: Duration::from_ms(1000),
            subscribe_retry: Duration::from_ms(200),
            probe_interval: Duration::from_ms(500),
            return_hold: Duration::from_ms(1000),
        }
    }
}

// ---------------------------------------------------------------------------
// Liveness
// ---------------------------------------------------------------------------

/// When each upstream last delivered a payload. Lock-free; shared by all workers.
#[derive(Debug)]
pub struct Liveness {
    /// Microseconds + 1 of the last payload (0: never).
    last_us: Box<[AtomicU64]>,
}

/// Granularity of liveness updates: a worker skips the atomic write when the
/// stored time is less than this old, to keep the cache line quiet.
const LIVENESS_GRAIN_US: u64 = 1_000;

impl Liveness {
    fn new(n: usize) -> Liveness {
        Liveness {
            last_us: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A payload from target `t` arrived at `now`.
    #[inline]
    pub fn note(&self, t: usize, now: Instant) {
        if let Some(slot) = self.last_us.get(t) {
            let v = now.as_us().saturating_add(1);
            let cur = slot.load(Ordering::Relaxed);
            if cur == 0 || cur.saturating_add(LIVENESS_GRAIN_US) < v {
                slot.fetch_max(v, Ordering::Relaxed);
            }
        }
    }

    /// When target `t` last delivered.
    pub fn last(&self, t: usize) -> Option<Instant> {
        match self.last_us.get(t).map(|a| a.load(Ordering::Relaxed)) {
            Some(0) | None => None,
            Some(v) => Some(Instant(v - 1)),
        }
    }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

const CONTROL_LABELS: [&str; 7] = [
    "accepted",
    "challenged",
    "refused_capacity_full",
    "refused_not_allowed",
    "refused_role_not_served",
    "refused_shutting_down",
    "ignored",
];

/// What one control message from an upstream did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedOutcome {
    /// The upstream accepted (or confirmed) the subscription.
    Accepted,
    /// The upstream challenged; the cookie was echoed.
    Challenged,
    /// The upstream refused.
    Refused(RefuseReason),
    /// Not from a configured upstream, wrong nonce, or not expected now.
    Ignored,
}

impl FeedOutcome {
    fn index(self) -> usize {
        match self {
            FeedOutcome::Accepted => 0,
            FeedOutcome::Challenged => 1,
            FeedOutcome::Refused(RefuseReason::CapacityFull) => 2,
            FeedOutcome::Refused(RefuseReason::NotAllowed) => 3,
            FeedOutcome::Refused(RefuseReason::RoleNotServed) => 4,
            FeedOutcome::Refused(RefuseReason::ShuttingDown) => 5,
            FeedOutcome::Ignored => 6,
        }
    }
}

#[derive(Debug, Clone)]
struct FeedMetrics {
    silence_ms: GaugeVec,
    on_alternative: GaugeVec,
    accepted: GaugeVec,
    failovers: CounterVec,
    returns: CounterVec,
    control: CounterVec,
}

impl FeedMetrics {
    fn register(r: &Registry, prefix: &str, feeds: &[&str]) -> FeedMetrics {
        FeedMetrics {
            silence_ms: r.gauge_vec(
                &format!("{prefix}_silence_ms"),
                "Milliseconds since the feed's active upstream last delivered a payload.",
                "feed",
                feeds,
            ),
            on_alternative: r.gauge_vec(
                &format!("{prefix}_on_alternative"),
                "1 while the feed uses an alternative instead of its primary.",
                "feed",
                feeds,
            ),
            accepted: r.gauge_vec(
                &format!("{prefix}_accepted"),
                "1 while the feed's active upstream has accepted the subscription.",
                "feed",
                feeds,
            ),
            failovers: r.counter_vec(
                &format!("{prefix}_failovers_total"),
                "Moves to the next upstream after silence or a refusal.",
                "feed",
                feeds,
            ),
            returns: r.counter_vec(
                &format!("{prefix}_returns_total"),
                "Returns to the primary upstream after it came back.",
                "feed",
                feeds,
            ),
            control: r.counter_vec(
                &format!("{prefix}_control_total"),
                "Control datagrams from upstreams, by what they did.",
                "outcome",
                &CONTROL_LABELS,
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    slot: usize,
    pos: usize,
    wanted: bool,
    accepted: bool,
    cookie: u64,
    keepalive: Duration,
    next_send: Instant,
    refused_until: Instant,
}

#[derive(Debug, Clone)]
struct Slot {
    targets: Vec<usize>,
    active: usize,
    active_since: Instant,
    run_start: Option<Instant>,
}

/// What a feed is doing, for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStatus {
    /// The configured primary.
    pub primary: SocketAddr,
    /// The upstream in use.
    pub active: SocketAddr,
    /// The active upstream has accepted us.
    pub accepted: bool,
    /// When the active upstream last delivered a payload.
    pub last_payload: Option<Instant>,
}

/// The feeds of one node (see the module doc).
#[derive(Debug)]
pub struct FeedSet {
    role: Role,
    nonce: u64,
    timing: FeedTiming,
    targets: Vec<Target>,
    slots: Vec<Slot>,
    index: Arc<HashMap<SocketAddr, usize>>,
    liveness: Arc<Liveness>,
    metrics: FeedMetrics,
    next_tick: Instant,
}

impl FeedSet {
    /// Feeds for a node of `role`, subscribing with `nonce` (random per process),
    /// starting at `now`. Metrics go to `registry` under `prefix` (e.g.
    /// `ivip_replicator_feed`). Addresses must be distinct (config checks it);
    /// a repeated one is used only in its first place.
    pub fn new(
        role: Role,
        nonce: u64,
        specs: &[FeedSpec],
        timing: FeedTiming,
        now: Instant,
        registry: &Registry,
        prefix: &str,
    ) -> FeedSet {
        let mut targets = Vec::new();
        let mut slots = Vec::new();
        let mut index = HashMap::new();
        for (s, spec) in specs.iter().enumerate() {
            let mut ids = Vec::new();
            for (pos, addr) in std::iter::once(&spec.primary)
                .chain(&spec.alternatives)
                .enumerate()
            {
                if index.contains_key(addr) {
                    continue;
                }
                index.insert(*addr, targets.len());
                ids.push(targets.len());
                targets.push(Target {
                    addr: *addr,
                    slot: s,
                    pos,
                    wanted: pos == 0,
                    accepted: false,
                    cookie: 0,
                    keepalive: timing.subscribe_retry,
                    next_send: now,
                    refused_until: now,
                });
            }
            slots.push(Slot {
                targets: ids,
                active: 0,
                active_since: now,
                run_start: None,
            });
        }
        let labels: Vec<String> = specs.iter().map(|s| s.primary.to_string()).collect();
        let label_refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        FeedSet {
            role,
            nonce,
            timing,
            liveness: Arc::new(Liveness::new(targets.len())),
            targets,
            slots,
            index: Arc::new(index),
            metrics: FeedMetrics::register(registry, prefix, &label_refs),
            next_tick: now,
        }
    }

    /// Upstream address → target number, for workers that note payloads.
    pub fn index(&self) -> Arc<HashMap<SocketAddr, usize>> {
        self.index.clone()
    }

    /// The shared liveness table.
    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    /// A payload from target `t` arrived at `now` (same as noting it in
    /// [`FeedSet::liveness`]).
    #[inline]
    pub fn note_payload(&self, t: usize, now: Instant) {
        self.liveness.note(t, now);
    }

    /// The target number of an upstream address.
    pub fn target_of(&self, addr: SocketAddr) -> Option<usize> {
        self.index.get(&addr).copied()
    }

    /// Number of configured feeds.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// `true` with no feed configured.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn send(&self, out: &mut Outbox, t: usize, c: Control) {
        // A full outbox loses the message; timers resend.
        let _ = out.push_to(self.targets[t].addr, &c.to_bytes());
    }

    fn subscribe(&mut self, t: usize, now: Instant, out: &mut Outbox) {
        let c = Control::Subscribe {
            role: self.role,
            nonce: self.nonce,
            cookie: self.targets[t].cookie,
        };
        self.send(out, t, c);
        let probe = self.is_probe(t);
        let tg = &mut self.targets[t];
        let wait = if tg.accepted {
            tg.keepalive
        } else if probe {
            self.timing.probe_interval
        } else {
            self.timing.subscribe_retry
        };
        tg.next_send = now + wait;
    }

    fn is_probe(&self, t: usize) -> bool {
        let tg = &self.targets[t];
        tg.pos == 0 && self.slots[tg.slot].active != 0
    }

    fn want(&mut self, t: usize, now: Instant) {
        let tg = &mut self.targets[t];
        if !tg.wanted {
            tg.wanted = true;
            tg.accepted = false;
            tg.next_send = now;
        }
    }

    fn unwant(&mut self, t: usize, out: &mut Outbox) {
        if self.targets[t].wanted {
            self.send(out, t, Control::Unsubscribe { nonce: self.nonce });
            let tg = &mut self.targets[t];
            tg.wanted = false;
            tg.accepted = false;
        }
    }

    fn failover(&mut self, s: usize, now: Instant, out: &mut Outbox) {
        let n = self.slots[s].targets.len();
        if n < 2 {
            return;
        }
        let from = self.slots[s].active;
        let mut to = (from + 1) % n;
        for k in 1..n {
            let cand = (from + k) % n;
            if self.targets[self.slots[s].targets[cand]].refused_until <= now {
                to = cand;
                break;
            }
        }
        let old = self.slots[s].targets[from];
        let new = self.slots[s].targets[to];
        let slot = &mut self.slots[s];
        slot.active = to;
        slot.active_since = now;
        slot.run_start = None;
        if from == 0 {
            // The primary stays subscribed as a probe; it must earn acceptance again.
            self.targets[old].accepted = false;
            self.targets[old].next_send = now + self.timing.probe_interval;
        } else {
            self.unwant(old, out);
        }
        if to == 0 {
            self.targets[new].wanted = true;
        } else {
            self.want(new, now);
        }
        self.metrics.failovers.at(s).inc();
        log::warn!(
            "feed {}: upstream {} failed; now using {}",
            self.targets[self.slots[s].targets[0]].addr,
            self.targets[old].addr,
            self.targets[new].addr
        );
        let tg = &self.targets[new];
        if tg.next_send.max(tg.refused_until) <= now {
            self.subscribe(new, now, out);
        }
    }

    fn return_to_primary(&mut self, s: usize, now: Instant, out: &mut Outbox) {
        let from = self.slots[s].active;
        let old = self.slots[s].targets[from];
        let slot = &mut self.slots[s];
        slot.active = 0;
        slot.active_since = now;
        slot.run_start = None;
        self.unwant(old, out);
        self.metrics.returns.at(s).inc();
        log::info!(
            "feed {}: primary is back; left {}",
            self.targets[self.slots[s].targets[0]].addr,
            self.targets[old].addr
        );
    }

    /// Handle a Challenge, Accept or Refuse from `from`.
    pub fn handle_control(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &Control,
        out: &mut Outbox,
    ) -> FeedOutcome {
        let outcome = self.control(now, from, msg, out);
        self.metrics.control.at(outcome.index()).inc();
        outcome
    }

    fn control(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &Control,
        out: &mut Outbox,
    ) -> FeedOutcome {
        let Some(t) = self.target_of(from) else {
            return FeedOutcome::Ignored;
        };
        if msg.nonce() != self.nonce {
            return FeedOutcome::Ignored;
        }
        match *msg {
            Control::Challenge { cookie, .. } => {
                if !self.targets[t].wanted {
                    return FeedOutcome::Ignored;
                }
                self.targets[t].cookie = cookie;
                self.subscribe(t, now, out);
                FeedOutcome::Challenged
            }
            Control::Accept {
                keepalive_ms,
                expiry_ms,
                ..
            } => {
                if !self.targets[t].wanted {
                    // A late answer from an upstream we left: tell it again.
                    self.send(out, t, Control::Unsubscribe { nonce: self.nonce });
                    return FeedOutcome::Ignored;
                }
                let ka = Duration::from_ms(u64::from(keepalive_ms))
                    .min(Duration::from_ms(u64::from(expiry_ms) / 2))
                    .clamp(KEEPALIVE_MIN, KEEPALIVE_MAX);
                let tg = &mut self.targets[t];
                let first = !tg.accepted;
                tg.accepted = true;
                tg.keepalive = ka;
                tg.next_send = now + ka;
                if first {
                    log::info!("feed: upstream {} accepted", tg.addr);
                }
                FeedOutcome::Accepted
            }
            Control::Refuse {
                reason,
                retry_after_ms,
                ..
            } => {
                let hold = Duration::from_ms(u64::from(retry_after_ms))
                    .max(self.timing.subscribe_retry)
                    .min(REFUSED_HOLD_MAX);
                let tg = &mut self.targets[t];
                tg.accepted = false;
                tg.refused_until = now + hold;
                let s = tg.slot;
                // An upstream going down says so; that is news, not a fault.
                if reason == RefuseReason::ShuttingDown {
                    log::info!("feed: upstream {} is shutting down", tg.addr);
                } else {
                    log::warn!("feed: upstream {} refused us: {}", tg.addr, reason.name());
                }
                if self.slots[s].targets[self.slots[s].active] == t {
                    self.failover(s, now, out);
                }
                FeedOutcome::Refused(reason)
            }
            Control::Subscribe { .. } | Control::Unsubscribe { .. } => FeedOutcome::Ignored,
        }
    }

    fn last_of(&self, t: usize) -> Option<Instant> {
        self.liveness.last(t)
    }

    /// Run timers: silence and failover, return to primaries, (re)subscriptions,
    /// gauges. Early calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        let silence = self.timing.silence;
        for s in 0..self.slots.len() {
            let active = self.slots[s].targets[self.slots[s].active];
            let since = self.slots[s].active_since;
            let last = self.last_of(active).map_or(since, |l| l.max(since));
            if self.slots[s].targets.len() > 1 && now >= last + silence {
                self.failover(s, now, out);
            }
            if self.slots[s].active != 0 {
                let p = self.slots[s].targets[0];
                let recent = self.last_of(p).is_some_and(|l| l + silence > now);
                if recent {
                    let start = *self.slots[s].run_start.get_or_insert(now);
                    if now >= start + self.timing.return_hold {
                        self.return_to_primary(s, now, out);
                    }
                } else {
                    self.slots[s].run_start = None;
                }
            }
        }
        for t in 0..self.targets.len() {
            let tg = &self.targets[t];
            if tg.wanted && now >= tg.next_send.max(tg.refused_until) {
                self.subscribe(t, now, out);
            }
        }
        for (s, slot) in self.slots.iter().enumerate() {
            let a = slot.targets[slot.active];
            let last = self.last_of(a).unwrap_or(slot.active_since);
            let quiet = now.saturating_since(last).as_ms();
            self.metrics
                .silence_ms
                .at(s)
                .set(i64::try_from(quiet).unwrap_or(i64::MAX));
            self.metrics
                .on_alternative
                .at(s)
                .set(i64::from(slot.active != 0));
            self.metrics
                .accepted
                .at(s)
                .set(i64::from(self.targets[a].accepted));
        }
        let on_alt = self.slots.iter().any(|s| s.active != 0);
        let tick = if on_alt {
            TICK.min(Duration(silence.as_us() / 4).max(Duration::from_ms(5)))
        } else {
            TICK
        };
        self.next_tick = now + tick;
    }

    /// The next time [`FeedSet::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.next_tick;
        for tg in self.targets.iter().filter(|t| t.wanted) {
            next = next.min(tg.next_send.max(tg.refused_until));
        }
        for slot in self.slots.iter().filter(|s| s.targets.len() > 1) {
            let a = slot.targets[slot.active];
            let last = self
                .last_of(a)
                .map_or(slot.active_since, |l| l.max(slot.active_since));
            next = next.min(last + self.timing.silence);
        }
        (!self.slots.is_empty()).then_some(next)
    }

    /// What each feed is doing.
    pub fn status(&self) -> Vec<FeedStatus> {
        self.slots
            .iter()
            .map(|s| {
                let a = s.targets[s.active];
                FeedStatus {
                    primary: self.targets[s.targets[0]].addr,
                    active: self.targets[a].addr,
                    accepted: self.targets[a].accepted,
                    last_payload: self.last_of(a),
                }
            })
            .collect()
    }

    /// Unsubscribe from every upstream, as many as fit in `out`. Returns `true`
    /// when all were told.
    pub fn shutdown(&mut self, out: &mut Outbox) -> bool {
        for t in 0..self.targets.len() {
            if self.targets[t].wanted {
                let c = Control::Unsubscribe { nonce: self.nonce };
                if out.push_to(self.targets[t].addr, &c.to_bytes()).is_err() {
                    return false;
                }
                self.targets[t].wanted = false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Dest;

    const NONCE: u64 = 0xfeed;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn ms(n: u64) -> Instant {
        Instant(n * 1000)
    }

    fn sent(out: &mut Outbox) -> Vec<(SocketAddr, Control)> {
        let v = out
            .iter()
            .map(|(d, b)| match d {
                Dest::To(a) => (a, Control::parse(b).unwrap()),
                Dest::Fanout { .. } => panic!("fan-out from a feed set"),
            })
            .collect();
        out.clear();
        v
    }

    fn set(specs: &[FeedSpec]) -> FeedSet {
        FeedSet::new(
            Role::Replicator,
            NONCE,
            specs,
            FeedTiming::default(),
            ms(0),
            &Registry::new(),
            "test_feed",
        )
    }

    fn accept(f: &mut FeedSet, now: Instant, a: SocketAddr, out: &mut Outbox) {
        out.clear();
        let c = Control::Challenge {
            nonce: NONCE,
            cookie: 77,
        };
        assert_eq!(f.handle_control(now, a, &c, out), FeedOutcome::Challenged);
        assert_eq!(
            sent(out),
            [(
                a,
                Control::Subscribe {
                    role: Role::Replicator,
                    nonce: NONCE,
                    cookie: 77
                }
            )]
        );
        let c = Control::Accept {
            nonce: NONCE,
            keepalive_ms: 500,
            expiry_ms: 2000,
        };
        assert_eq!(f.handle_control(now, a, &c, out), FeedOutcome::Accepted);
    }

    #[test]
    fn subscribes_to_primaries_and_keeps_alive() {
        let mut f = set(&[
            FeedSpec {
                primary: addr(1),
                alternatives: vec![addr(2)],
            },
            FeedSpec {
                primary: addr(3),
                alternatives: vec![],
            },
        ]);
        let mut out = Outbox::new(64, 8192);
        f.handle_timeout(ms(0), &mut out);
        let s = sent(&mut out);
        assert_eq!(
            s.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            [addr(1), addr(3)]
        );
        // Unanswered: retried after subscribe_retry.
        f.handle_timeout(ms(199), &mut out);
        assert!(sent(&mut out).is_empty());
        f.handle_timeout(ms(200), &mut out);
        assert_eq!(sent(&mut out).len(), 2);
        accept(&mut f, ms(210), addr(1), &mut out);
        f.liveness().note(0, ms(300));
        // Accepted: keepalive every 500 ms, with the cookie.
        f.handle_timeout(ms(709), &mut out);
        assert!(sent(&mut out).iter().all(|(a, _)| *a != addr(1)));
        f.handle_timeout(ms(710), &mut out);
        assert!(sent(&mut out).contains(&(
            addr(1),
            Control::Subscribe {
                role: Role::Replicator,
                nonce: NONCE,
                cookie: 77
            }
        )));
        assert_eq!(f.status()[0].active, addr(1));
        assert!(f.status()[0].accepted);
    }

    #[test]
    fn silence_fails_over_then_primary_is_probed_and_returned_to() {
        let mut f = set(&[FeedSpec {
            primary: addr(1),
            alternatives: vec![addr(2), addr(3)],
        }]);
        let mut out = Outbox::new(64, 8192);
        f.handle_timeout(ms(0), &mut out);
        accept(&mut f, ms(1), addr(1), &mut out);
        out.clear();
        let live = f.liveness();
        live.note(0, ms(100));
        // Silent from 100 ms: the failover deadline is 1100 ms.
        assert_eq!(f.poll_timeout().map(|t| t <= ms(1100)), Some(true));
        f.handle_timeout(ms(1099), &mut out);
        assert_eq!(f.status()[0].active, addr(1));
        out.clear();
        f.handle_timeout(ms(1100), &mut out);
        assert_eq!(f.status()[0].active, addr(2));
        let s = sent(&mut out);
        assert!(s.contains(&(
            addr(2),
            Control::Subscribe {
                role: Role::Replicator,
                nonce: NONCE,
                cookie: 0
            }
        )));
        accept(&mut f, ms(1101), addr(2), &mut out);
        out.clear();
        // The primary is probed every probe_interval.
        f.handle_timeout(ms(1600), &mut out);
        assert!(
            sent(&mut out)
                .iter()
                .any(|(a, c)| *a == addr(1) && matches!(c, Control::Subscribe { .. }))
        );
        // The alternative delivers; the primary comes back and delivers for the
        // return hold (1 s), then the feed returns and leaves the alternative.
        let mut now = 1600;
        let mut returned_at = None;
        while now < 5000 {
            now += 50;
            live.note(1, ms(now));
            if now >= 2000 {
                live.note(0, ms(now));
            }
            f.handle_timeout(ms(now), &mut out);
            if f.status()[0].active == addr(1) {
                returned_at = Some(now);
                assert!(sent(&mut out).contains(&(addr(2), Control::Unsubscribe { nonce: NONCE })));
                break;
            }
        }
        let r = returned_at.expect("returned to the primary");
        assert!((3000..=3100).contains(&r), "returned at {r} ms");
    }

    #[test]
    fn refusal_fails_over_at_once_and_holds_the_refuser() {
        let mut f = set(&[FeedSpec {
            primary: addr(1),
            alternatives: vec![addr(2)],
        }]);
        let mut out = Outbox::new(64, 8192);
        f.handle_timeout(ms(0), &mut out);
        out.clear();
        let r = Control::Refuse {
            nonce: NONCE,
            reason: RefuseReason::CapacityFull,
            retry_after_ms: 10_000,
        };
        assert_eq!(
            f.handle_control(ms(5), addr(1), &r, &mut out),
            FeedOutcome::Refused(RefuseReason::CapacityFull)
        );
        assert_eq!(f.status()[0].active, addr(2));
        assert!(sent(&mut out).iter().any(|(a, _)| *a == addr(2)));
        // The primary is not asked again before the retry hint.
        for t in (10..10_000).step_by(100) {
            f.handle_timeout(ms(t), &mut out);
            assert!(
                sent(&mut out).iter().all(|(a, _)| *a != addr(1)),
                "asked at {t}"
            );
        }
    }

    #[test]
    fn answers_from_strangers_or_with_another_nonce_are_ignored() {
        let mut f = set(&[FeedSpec {
            primary: addr(1),
            alternatives: vec![],
        }]);
        let mut out = Outbox::new(64, 8192);
        let bad_nonce = Control::Refuse {
            nonce: NONCE + 1,
            reason: RefuseReason::ShuttingDown,
            retry_after_ms: 0,
        };
        assert_eq!(
            f.handle_control(ms(0), addr(1), &bad_nonce, &mut out),
            FeedOutcome::Ignored
        );
        let accept = Control::Accept {
            nonce: NONCE,
            keepalive_ms: 1,
            expiry_ms: 2,
        };
        assert_eq!(
            f.handle_control(ms(0), addr(9), &accept, &mut out),
            FeedOutcome::Ignored
        );
        // Absurd timers are clamped.
        assert_eq!(
            f.handle_control(ms(0), addr(1), &accept, &mut out),
            FeedOutcome::Accepted
        );
        assert_eq!(f.targets[0].keepalive, KEEPALIVE_MIN);
        // A single feed without alternatives never "fails over".
        f.handle_timeout(ms(60_000), &mut out);
        assert_eq!(f.status()[0].active, addr(1));
    }

    #[test]
    fn shutdown_unsubscribes_everything_wanted() {
        let mut f = set(&[
            FeedSpec {
                primary: addr(1),
                alternatives: vec![addr(2)],
            },
            FeedSpec {
                primary: addr(3),
                alternatives: vec![],
            },
        ]);
        let mut out = Outbox::new(64, 8192);
        assert!(f.shutdown(&mut out));
        let s = sent(&mut out);
        assert_eq!(s.len(), 2);
        assert!(
            s.iter()
                .all(|(_, c)| matches!(c, Control::Unsubscribe { .. }))
        );
    }
}
