//! The upstream side of feeds: the subscription table of a replicator.
//!
//! spec: control.md §5 (upstream). Sans-IO: fed `(now, from, control message)`,
//! it answers into the caller's outbox and keeps at most `capacity` subscribers.
//! Cookies are keyed by a secret the caller injects (random in production), so the
//! table holds nothing for a subscriber until it has echoed a cookie: a forged
//! source address gets a 20-byte challenge, never a feed.

use std::net::SocketAddr;

use ivip_wire::control::{Control, RefuseReason, Role};
use sha2::Digest as _;

use crate::net::{IpPrefix, Outbox};
use crate::time::{Duration, Instant};

/// Checked `[downstream]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribersSettings {
    /// Most subscribers at once.
    pub capacity: usize,
    /// Networks subscribers may come from.
    pub allow: Vec<IpPrefix>,
    /// Roles served.
    pub roles: Vec<Role>,
    /// Keepalive interval announced in Accept.
    pub keepalive: Duration,
    /// Silence after which a subscriber is dropped.
    pub expiry: Duration,
    /// Retry hint sent with "capacity full".
    pub refuse_retry_after: Duration,
}

/// One subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscriber {
    /// Where its feed goes (the address it subscribed from).
    pub addr: SocketAddr,
    /// Its nonce.
    pub nonce: u64,
    /// What it is.
    pub role: Role,
    /// Its last valid Subscribe.
    pub last_seen: Instant,
}

/// What a control message did (for metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubOutcome {
    /// A challenge was sent (first contact, or a stale cookie).
    Challenged,
    /// A new subscriber was added and accepted.
    Added,
    /// A known subscriber re-subscribed and was accepted again.
    Refreshed,
    /// Refused with this reason.
    Refused(RefuseReason),
    /// A subscriber left.
    Unsubscribed,
    /// Not for this table (an Unsubscribe of an unknown subscription, or a kind
    /// only subscribers handle); nothing was sent.
    Ignored,
}

impl SubOutcome {
    /// A label for metrics.
    pub fn name(self) -> &'static str {
        match self {
            SubOutcome::Challenged => "challenged",
            SubOutcome::Added => "added",
            SubOutcome::Refreshed => "refreshed",
            SubOutcome::Refused(RefuseReason::CapacityFull) => "refused_capacity_full",
            SubOutcome::Refused(RefuseReason::NotAllowed) => "refused_not_allowed",
            SubOutcome::Refused(RefuseReason::RoleNotServed) => "refused_role_not_served",
            SubOutcome::Refused(RefuseReason::ShuttingDown) => "refused_shutting_down",
            SubOutcome::Unsubscribed => "unsubscribed",
            SubOutcome::Ignored => "ignored",
        }
    }

    /// Every label [`SubOutcome::name`] can return, plus `expired`.
    pub const LABELS: [&'static str; 10] = [
        "challenged",
        "added",
        "refreshed",
        "refused_capacity_full",
        "refused_not_allowed",
        "refused_role_not_served",
        "refused_shutting_down",
        "unsubscribed",
        "ignored",
        "expired",
    ];

    /// The index of [`SubOutcome::name`] in [`SubOutcome::LABELS`].
    pub fn index(self) -> usize {
        let n = self.name();
        Self::LABELS.iter().position(|l| *l == n).unwrap_or(0)
    }
}

/// The subscription table.
#[derive(Debug, Clone)]
pub struct Subscribers {
    settings: SubscribersSettings,
    secret: [u8; 32],
    table: Vec<Subscriber>,
    changed: bool,
}

impl Subscribers {
    /// An empty table; `secret` keys the cookies (random per process).
    pub fn new(settings: SubscribersSettings, secret: [u8; 32]) -> Subscribers {
        let capacity = settings.capacity;
        Subscribers {
            settings,
            secret,
            table: Vec::with_capacity(capacity.min(4096)),
            changed: false,
        }
    }

    /// The cookie for a subscriber address and nonce (spec: control.md §3.2).
    pub fn cookie(&self, addr: SocketAddr, nonce: u64) -> u64 {
        let mut h = sha2::Sha256::new();
        h.update(self.secret);
        match addr.ip().to_canonical() {
            std::net::IpAddr::V4(a) => h.update(a.octets()),
            std::net::IpAddr::V6(a) => h.update(a.octets()),
        }
        h.update(addr.port().to_be_bytes());
        h.update(nonce.to_be_bytes());
        let d: [u8; 32] = h.finalize().into();
        let mut c = [0u8; 8];
        c.copy_from_slice(&d[..8]);
        u64::from_be_bytes(c).max(1)
    }

    fn send(out: &mut Outbox, to: SocketAddr, c: Control) {
        // A full outbox drops the answer; the subscriber retries.
        let _ = out.push_to(to, &c.to_bytes());
    }

    /// Handle a Subscribe or Unsubscribe from `from`.
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &Control,
        out: &mut Outbox,
    ) -> SubOutcome {
        match *msg {
            Control::Subscribe {
                role,
                nonce,
                cookie,
            } => {
                let refuse = |reason, retry: Duration, out: &mut Outbox| {
                    Self::send(
                        out,
                        from,
                        Control::Refuse {
                            nonce,
                            reason,
                            retry_after_ms: u32::try_from(retry.as_ms()).unwrap_or(u32::MAX),
                        },
                    );
                    SubOutcome::Refused(reason)
                };
                if !self.settings.allow.iter().any(|p| p.contains(from.ip())) {
                    return refuse(RefuseReason::NotAllowed, Duration::ZERO, out);
                }
                if !self.settings.roles.contains(&role) {
                    return refuse(RefuseReason::RoleNotServed, Duration::ZERO, out);
                }
                let expected = self.cookie(from, nonce);
                if cookie != expected {
                    Self::send(
                        out,
                        from,
                        Control::Challenge {
                            nonce,
                            cookie: expected,
                        },
                    );
                    return SubOutcome::Challenged;
                }
                let outcome = if let Some(s) = self.table.iter_mut().find(|s| s.addr == from) {
                    // A new nonce from a known address: the subscriber restarted.
                    s.nonce = nonce;
                    s.role = role;
                    s.last_seen = now;
                    SubOutcome::Refreshed
                } else if self.table.len() >= self.settings.capacity {
                    return refuse(
                        RefuseReason::CapacityFull,
                        self.settings.refuse_retry_after,
                        out,
                    );
                } else {
                    self.table.push(Subscriber {
                        addr: from,
                        nonce,
                        role,
                        last_seen: now,
                    });
                    self.changed = true;
                    SubOutcome::Added
                };
                Self::send(
                    out,
                    from,
                    Control::Accept {
                        nonce,
                        keepalive_ms: u32::try_from(self.settings.keepalive.as_ms())
                            .unwrap_or(u32::MAX),
                        expiry_ms: u32::try_from(self.settings.expiry.as_ms()).unwrap_or(u32::MAX),
                    },
                );
                outcome
            }
            Control::Unsubscribe { nonce } => {
                match self
                    .table
                    .iter()
                    .position(|s| s.addr == from && s.nonce == nonce)
                {
                    Some(i) => {
                        self.table.swap_remove(i);
                        self.changed = true;
                        SubOutcome::Unsubscribed
                    }
                    None => SubOutcome::Ignored,
                }
            }
            _ => SubOutcome::Ignored,
        }
    }

    /// Drop subscribers silent for the expiry time; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let expiry = self.settings.expiry;
        let before = self.table.len();
        self.table.retain(|s| now < s.last_seen + expiry);
        let n = before - self.table.len();
        if n > 0 {
            self.changed = true;
        }
        n
    }

    /// When the next subscriber would expire.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.table
            .iter()
            .map(|s| s.last_seen + self.settings.expiry)
            .min()
    }

    /// `true` once after the set of subscribers changed (so the caller republishes
    /// its fan-out set).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The subscribers' addresses.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.table.iter().map(|s| s.addr)
    }

    /// The subscribers.
    pub fn iter(&self) -> impl Iterator<Item = &Subscriber> {
        self.table.iter()
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// `true` with no subscriber.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Tell subscribers this upstream is stopping (Refuse "shutting down") and
    /// forget them, as many as fit in `out`. Returns `true` when none is left.
    pub fn shutdown(&mut self, out: &mut Outbox) -> bool {
        while let Some(s) = self.table.last().copied() {
            let c = Control::Refuse {
                nonce: s.nonce,
                reason: RefuseReason::ShuttingDown,
                retry_after_ms: 0,
            };
            if out.push_to(s.addr, &c.to_bytes()).is_err() {
                return false;
            }
            self.table.pop();
            self.changed = true;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(capacity: usize) -> SubscribersSettings {
        SubscribersSettings {
            capacity,
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            roles: vec![Role::Replicator, Role::Mps],
            keepalive: Duration::from_ms(500),
            expiry: Duration::from_ms(2000),
            refuse_retry_after: Duration::from_ms(10_000),
        }
    }

    fn replies(out: &mut Outbox) -> Vec<(SocketAddr, Control)> {
        let v = out
            .iter()
            .map(|(d, b)| match d {
                crate::net::Dest::To(a) => (a, Control::parse(b).unwrap()),
                crate::net::Dest::Fanout { .. } => panic!("fan-out from the table"),
            })
            .collect();
        out.clear();
        v
    }

    fn sub(role: Role, nonce: u64, cookie: u64) -> Control {
        Control::Subscribe {
            role,
            nonce,
            cookie,
        }
    }

    fn join(
        t: &mut Subscribers,
        now: Instant,
        a: SocketAddr,
        nonce: u64,
        out: &mut Outbox,
    ) -> SubOutcome {
        out.clear();
        assert_eq!(
            t.handle(now, a, &sub(Role::Replicator, nonce, 0), out),
            SubOutcome::Challenged
        );
        let cookie = match replies(out)[..] {
            [(_, Control::Challenge { cookie, .. })] => cookie,
            ref other => panic!("{other:?}"),
        };
        t.handle(now, a, &sub(Role::Replicator, nonce, cookie), out)
    }

    #[test]
    fn subscribe_needs_the_cookie_then_is_accepted_and_refreshed() {
        let mut t = Subscribers::new(settings(10), [7; 32]);
        let mut out = Outbox::new(16, 4096);
        let a: SocketAddr = "127.0.0.2:4000".parse().unwrap();
        assert_eq!(join(&mut t, Instant(0), a, 9, &mut out), SubOutcome::Added);
        assert_eq!(
            replies(&mut out),
            [(
                a,
                Control::Accept {
                    nonce: 9,
                    keepalive_ms: 500,
                    expiry_ms: 2000
                }
            )]
        );
        assert!(t.take_changed() && !t.take_changed());
        let c = t.cookie(a, 9);
        assert_eq!(
            t.handle(Instant(100), a, &sub(Role::Replicator, 9, c), &mut out),
            SubOutcome::Refreshed
        );
        assert_eq!(t.len(), 1);
        // A wrong cookie (e.g. from before a restart) is challenged again.
        assert_eq!(
            t.handle(Instant(100), a, &sub(Role::Replicator, 9, c ^ 1), &mut out),
            SubOutcome::Challenged
        );
        // The cookie is bound to the address.
        assert_ne!(t.cookie("127.0.0.3:4000".parse().unwrap(), 9), c);
    }

    #[test]
    fn capacity_role_and_allow_list_refuse_with_reasons() {
        let mut t = Subscribers::new(settings(1), [7; 32]);
        let mut out = Outbox::new(16, 4096);
        let a: SocketAddr = "127.0.0.2:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:4000".parse().unwrap();
        join(&mut t, Instant(0), a, 1, &mut out);
        out.clear();
        assert_eq!(
            join(&mut t, Instant(0), b, 2, &mut out),
            SubOutcome::Refused(RefuseReason::CapacityFull)
        );
        assert_eq!(
            replies(&mut out),
            [(
                b,
                Control::Refuse {
                    nonce: 2,
                    reason: RefuseReason::CapacityFull,
                    retry_after_ms: 10_000
                }
            )]
        );
        let outside: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        assert_eq!(
            t.handle(Instant(0), outside, &sub(Role::Replicator, 3, 0), &mut out),
            SubOutcome::Refused(RefuseReason::NotAllowed)
        );
        assert_eq!(
            t.handle(Instant(0), b, &sub(Role::Qsd, 3, 0), &mut out),
            SubOutcome::Refused(RefuseReason::RoleNotServed)
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn silent_subscribers_expire_and_unsubscribe_needs_the_nonce() {
        let mut t = Subscribers::new(settings(10), [7; 32]);
        let mut out = Outbox::new(16, 4096);
        let a: SocketAddr = "127.0.0.2:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:4000".parse().unwrap();
        join(&mut t, Instant(0), a, 1, &mut out);
        join(&mut t, Instant(1_000_000), b, 2, &mut out);
        t.take_changed();
        assert_eq!(t.poll_timeout(), Some(Instant(2_000_000)));
        assert_eq!(t.expire(Instant(1_999_999)), 0);
        assert_eq!(t.expire(Instant(2_000_000)), 1);
        assert_eq!(t.addrs().collect::<Vec<_>>(), [b]);
        assert!(t.take_changed());
        assert_eq!(
            t.handle(Instant(0), b, &Control::Unsubscribe { nonce: 99 }, &mut out),
            SubOutcome::Ignored
        );
        assert_eq!(
            t.handle(Instant(0), b, &Control::Unsubscribe { nonce: 2 }, &mut out),
            SubOutcome::Unsubscribed
        );
        assert!(t.is_empty());
    }

    #[test]
    fn shutdown_tells_every_subscriber_even_across_full_outboxes() {
        let mut t = Subscribers::new(settings(10), [7; 32]);
        let mut out = Outbox::new(16, 4096);
        for i in 0..5u16 {
            let a = SocketAddr::from(([127, 0, 0, 2], 4000 + i));
            join(&mut t, Instant(0), a, u64::from(i), &mut out);
        }
        out.clear();
        let mut small = Outbox::new(2, 4096);
        let mut told = 0;
        let mut rounds = 0;
        while !t.shutdown(&mut small) {
            told += replies(&mut small).len();
            rounds += 1;
            assert!(rounds < 10);
        }
        told += replies(&mut small).len();
        assert_eq!(told, 5);
        assert!(t.is_empty());
    }
}
