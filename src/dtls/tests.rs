//! The link layer's behaviour, in memory: real OpenSSL handshakes and records,
//! datagrams carried between [`Link`]s by a small harness that can drop, tamper
//! and replay them. Time is the harness's [`Instant`], except OpenSSL's own
//! retransmission timer (one test waits for it on the real clock, with a
//! deadline).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use super::identity::{Identity, KeyKind};
use super::link::{Limits, Link, MemWire, Opened, Sealed};
use super::metrics::{Drop, Outcome};
use super::pins::{Pin, PinSet};
use crate::metrics::Registry;
use crate::time::{Duration, Instant, SystemClock};

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 4000 + u16::from(i)))
}

fn id(name: &str) -> Identity {
    Identity::generate(KeyKind::P256, name).unwrap()
}

fn pin(name: &str, id: &Identity, at: Option<SocketAddr>) -> Pin {
    Pin {
        name: name.into(),
        fingerprint: id.fingerprint(),
        addresses: at
            .map(|a| vec![super::pins::AddrPattern::Exact(a)])
            .unwrap_or_default(),
    }
}

struct Node {
    at: SocketAddr,
    identity: Identity,
    link: Arc<Link>,
    got: Vec<(SocketAddr, Vec<u8>)>,
}

/// Nodes joined by an in-memory network. `filter` sees every datagram
/// `(from, to, bytes)` and may drop (return `false`) or change it.
struct Net {
    nodes: Vec<Node>,
    queue: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    now: Instant,
    #[allow(clippy::type_complexity)]
    filter: Option<Box<dyn FnMut(SocketAddr, SocketAddr, &mut Vec<u8>) -> bool>>,
    delivered: usize,
}

impl Net {
    fn new() -> Net {
        Net {
            nodes: Vec::new(),
            queue: VecDeque::new(),
            now: Instant(5_000_000),
            filter: None,
            delivered: 0,
        }
    }

    /// Add a node at `at` pinning `pins`.
    fn add(&mut self, at: SocketAddr, identity: Identity, pins: Vec<Pin>, limits: Limits) -> usize {
        let link = Link::new(&identity, PinSet::new(pins), limits, &Registry::new(), "t").unwrap();
        self.nodes.push(Node {
            at,
            identity,
            link,
            got: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Two nodes pinning each other by address.
    fn pair() -> (Net, usize, usize) {
        let mut n = Net::new();
        let (ia, ib) = (id("a"), id("b"));
        let a = n.add(
            addr(1),
            ia.clone(),
            vec![pin("b", &ib, Some(addr(2)))],
            Limits::default(),
        );
        let b = n.add(
            addr(2),
            ib,
            vec![pin("a", &ia, Some(addr(1)))],
            Limits::default(),
        );
        (n, a, b)
    }

    fn out(&mut self, from: SocketAddr, w: MemWire) {
        for (to, d) in w.sent {
            self.queue.push_back((from, to, d));
        }
    }

    fn send(&mut self, i: usize, to: SocketAddr, msg: &[u8]) -> Sealed {
        let mut w = MemWire::default();
        let r = self.nodes[i].link.seal(self.now, to, msg, &mut w);
        let from = self.nodes[i].at;
        self.out(from, w);
        r
    }

    /// Inject a raw datagram.
    fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.queue.push_back((from, to, bytes));
    }

    /// Deliver until quiet (at most `steps` datagrams).
    fn run(&mut self, steps: usize) {
        let mut opened = Opened::new();
        for _ in 0..steps {
            let Some((from, to, mut d)) = self.queue.pop_front() else {
                return;
            };
            if let Some(f) = self.filter.as_mut()
                && !f(from, to, &mut d)
            {
                continue;
            }
            let Some(i) = self.nodes.iter().position(|n| n.at == to) else {
                continue;
            };
            self.delivered += 1;
            let mut w = MemWire::default();
            self.nodes[i]
                .link
                .receive(self.now, from, &d, &mut w, &mut opened);
            for p in opened.iter() {
                self.nodes[i].got.push((from, p.to_vec()));
            }
            self.out(to, w);
        }
    }

    fn tick(&mut self, d: Duration) {
        self.now = self.now + d;
        for i in 0..self.nodes.len() {
            let mut w = MemWire::default();
            self.nodes[i].link.handle_timeout(self.now, &mut w);
            let from = self.nodes[i].at;
            self.out(from, w);
        }
    }

    fn got(&self, i: usize) -> Vec<Vec<u8>> {
        self.nodes[i].got.iter().map(|(_, m)| m.clone()).collect()
    }

    fn dropped(&self, i: usize, why: Drop) -> u64 {
        self.nodes[i].link.metrics().dropped.at(why as usize).get()
    }

    fn outcome(&self, i: usize, o: Outcome) -> u64 {
        self.nodes[i].link.metrics().handshakes.at(o as usize).get()
    }
}

#[test]
fn a_handshake_opens_a_link_both_ways_and_queued_datagrams_follow() {
    let (mut n, a, b) = Net::pair();
    assert_eq!(n.send(a, addr(2), b"one"), Sealed::Queued);
    assert_eq!(n.send(a, addr(2), b"two"), Sealed::Queued);
    n.run(100);
    assert_eq!(n.got(b), [b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(n.send(b, addr(1), b"back"), Sealed::Sent);
    n.run(100);
    assert_eq!(n.got(a), [b"back".to_vec()]);
    assert_eq!(n.nodes[a].link.established(), [(addr(2), "b".to_string())]);
    assert_eq!(n.nodes[b].link.established(), [(addr(1), "a".to_string())]);
    for i in [a, b] {
        assert_eq!(n.outcome(i, Outcome::Completed), 1);
        assert_eq!(n.nodes[i].link.metrics().associations.get(), 1);
        assert_eq!(n.nodes[i].link.metrics().half_open.get(), 0);
    }
    assert_eq!(n.nodes[b].link.metrics().hello_verify.get(), 1);
}

#[test]
fn records_are_encrypted_aead_and_one_per_datagram() {
    let (mut n, a, b) = Net::pair();
    n.send(a, addr(2), b"hi");
    n.run(100);
    let mut w = MemWire::default();
    let payload = vec![0x5au8; 1200];
    assert_eq!(
        n.nodes[a].link.seal(n.now, addr(2), &payload, &mut w),
        Sealed::Sent
    );
    assert_eq!(w.sent.len(), 1);
    let rec = &w.sent[0].1;
    // spec: dtls.md §4.1: 13-byte header, 8-byte explicit nonce, 16-byte tag.
    assert_eq!(rec.len(), 1200 + 37);
    assert!(
        !rec.windows(64).any(|x| x == &payload[..64]),
        "plaintext on the wire"
    );
    let (r, rest) = ivip_wire::dtls::split_record(rec).unwrap();
    assert_eq!(
        (r.content_type, r.epoch, rest.len()),
        (ivip_wire::dtls::ContentType::ApplicationData, 1, 0)
    );
    let _ = b;
}

#[test]
fn no_state_is_kept_before_the_client_echoes_a_cookie() {
    let (mut n, a, b) = Net::pair();
    n.send(a, addr(2), b"x");
    let (_, _, hello) = n.queue.pop_front().unwrap();
    // The same hello from a spoofed source, many times: only HelloVerifyRequests.
    for i in 0..10u8 {
        n.inject(
            SocketAddr::from(([10, 0, 0, i], 999)),
            addr(2),
            hello.clone(),
        );
    }
    n.filter = Some(Box::new(|_, to, _| {
        to != SocketAddr::from(([10, 0, 0, 1], 999))
    }));
    n.run(100);
    let l = &n.nodes[b].link;
    assert_eq!(l.metrics().half_open.get(), 0);
    assert_eq!(l.metrics().hello_verify.get(), 10);
    assert!(l.established().is_empty());
    let _ = a;
}

#[test]
fn an_unpinned_key_is_refused_on_both_sides_with_errors_naming_the_peer() {
    let mut n = Net::new();
    let (ia, ib, stranger) = (id("a"), id("b"), id("stranger"));
    // B pins "a" at A's address, but A holds another key.
    let a = n.add(
        addr(1),
        stranger,
        vec![pin("b", &ib, Some(addr(2)))],
        Limits::default(),
    );
    let b = n.add(
        addr(2),
        ib,
        vec![pin("l0-a", &ia, Some(addr(1)))],
        Limits::default(),
    );
    n.send(a, addr(2), b"forged");
    n.run(100);
    assert!(
        n.got(b).is_empty(),
        "nothing from an unpinned key reaches the role"
    );
    assert_eq!(n.outcome(b, Outcome::FailedUnpinnedKey), 1);
    assert_eq!(n.outcome(a, Outcome::FailedRefusedByPeer), 1);
    let eb = n.nodes[b].link.recent_events().join("\n");
    assert!(
        eb.contains("127.0.0.1:4001")
            && eb.contains("\"l0-a\"")
            && eb.contains(&ia.fingerprint().to_string()),
        "{eb}"
    );
    let ea = n.nodes[a].link.recent_events().join("\n");
    assert!(
        ea.contains("127.0.0.2:4002") && ea.contains("refused"),
        "{ea}"
    );
    // Records sent anyway find no association.
    assert!(n.nodes[b].link.established().is_empty());
    assert_eq!(n.nodes[b].link.metrics().half_open.get(), 0);
}

#[test]
fn a_pinned_key_from_another_address_is_refused() {
    let mut n = Net::new();
    let (ia, ib) = (id("a"), id("b"));
    let a = n.add(
        addr(3),
        ia.clone(),
        vec![pin("b", &ib, None)],
        Limits::default(),
    );
    let b = n.add(
        addr(2),
        ib,
        vec![pin("a", &ia, Some(addr(1)))],
        Limits::default(),
    );
    n.send(a, addr(2), b"x");
    n.run(100);
    assert!(n.got(b).is_empty());
    assert_eq!(n.outcome(b, Outcome::FailedWrongAddress), 1);
}

#[test]
fn plain_udp_garbage_and_tampered_records_are_dropped_and_counted() {
    let (mut n, a, b) = Net::pair();
    n.send(a, addr(2), b"ok");
    n.run(100);
    // A plain ivip payload header (version 1, kind 1).
    let mut plain = vec![1u8, 1];
    plain.resize(100, 0);
    n.inject(addr(1), addr(2), plain);
    n.inject(addr(1), addr(2), vec![0x17, 0xfe]);
    // A record from a stranger with no association, epoch 1.
    n.inject(addr(9), addr(2), {
        let mut r = vec![0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 3];
        r.extend([1, 2, 3]);
        r
    });
    // A tampered record of the real association.
    let mut w = MemWire::default();
    n.nodes[a].link.seal(n.now, addr(2), b"secret", &mut w);
    let mut rec = w.sent.remove(0).1;
    let last = rec.len() - 1;
    rec[last] ^= 1;
    n.inject(addr(1), addr(2), rec);
    n.run(100);
    assert_eq!(n.got(b), [b"ok".to_vec()]);
    assert_eq!(n.dropped(b, Drop::PlainUdp), 1);
    assert_eq!(n.dropped(b, Drop::Malformed), 1);
    assert_eq!(n.dropped(b, Drop::NoAssociation), 1);
    assert_eq!(n.dropped(b, Drop::DecryptFailed), 1);
    // The association survives bad records.
    n.send(a, addr(2), b"still");
    n.run(100);
    assert_eq!(n.got(b).last().unwrap(), b"still");
}

fn restart(n: &mut Net, i: usize) {
    let node = &n.nodes[i];
    let pins = node.link.pins().clone();
    let link = Link::new(
        &node.identity,
        pins,
        Limits::default(),
        &Registry::new(),
        "t",
    )
    .unwrap();
    n.nodes[i].link = link;
    n.nodes[i].got.clear();
}

#[test]
fn after_either_side_restarts_the_association_is_opened_again_without_help() {
    for restarted in [0usize, 1] {
        let (mut n, a, b) = Net::pair();
        n.send(a, addr(2), b"before");
        n.run(100);
        assert_eq!(n.got(b), [b"before".to_vec()]);
        restart(&mut n, restarted);
        // A keeps sending over its association; whichever side lost state, the
        // records it cannot read make it (or its peer) open a new one.
        let mut delivered = Vec::new();
        for i in 0..5u8 {
            n.send(a, addr(2), &[b'm', i]);
            n.run(200);
            n.tick(Duration::from_ms(1));
            n.run(200);
            delivered = n.got(b);
        }
        assert!(
            delivered.contains(&vec![b'm', 4]),
            "restarted {restarted}: {delivered:?}"
        );
        // And the reverse direction works on the same new association.
        n.send(b, addr(1), b"reply");
        n.run(200);
        assert!(
            n.got(a).iter().any(|m| m == b"reply"),
            "restarted {restarted}"
        );
        assert_eq!(n.nodes[a].link.established().len(), 1);
        assert_eq!(n.nodes[b].link.established().len(), 1);
        let rh = n.nodes[a].link.metrics().rehandshakes.get()
            + n.nodes[b].link.metrics().rehandshakes.get();
        if restarted == 1 {
            assert!(
                rh >= 1,
                "the restarted receiver asked for a new association"
            );
        }
    }
}

#[test]
fn both_sides_opening_at_once_settle_on_one_association() {
    let (mut n, a, b) = Net::pair();
    n.send(a, addr(2), b"from a");
    n.send(b, addr(1), b"from b");
    n.run(500);
    n.tick(Duration::from_ms(1));
    n.run(500);
    assert_eq!(n.got(b), [b"from a".to_vec()]);
    assert_eq!(n.got(a), [b"from b".to_vec()]);
    assert_eq!(n.nodes[a].link.established().len(), 1);
    assert_eq!(n.nodes[b].link.established().len(), 1);
    let sim = n.dropped(a, Drop::SimultaneousOpen) + n.dropped(b, Drop::SimultaneousOpen);
    assert!(sim >= 1);
}

#[test]
fn a_forged_hello_in_the_peers_name_does_not_abort_a_handshake() {
    let (mut n, a, b) = Net::pair();
    n.send(a, addr(2), b"from a");
    // a's ClientHello is on its way to b. An attacker who knows both addresses
    // sends a in b's name a copy with the largest possible random, which would
    // win the simultaneous-open tie.
    let (_, _, hello) = n.queue.front().cloned().unwrap();
    let mut forged = hello.clone();
    let random = 13 + 12 + 2;
    forged[random..random + 32].fill(0xff);
    n.inject(addr(2), addr(1), forged);
    n.run(500);
    n.tick(Duration::from_ms(1));
    n.run(500);
    assert_eq!(n.got(b), [b"from a".to_vec()]);
    assert_eq!(n.nodes[a].link.established().len(), 1);
    assert_eq!(n.dropped(a, Drop::SimultaneousOpen), 0);
}

#[test]
fn a_hello_flood_from_one_address_is_cut_and_other_links_keep_working() {
    let mut n = Net::new();
    let (ia, ib, ic) = (id("a"), id("b"), id("c"));
    let a = n.add(
        addr(1),
        ia.clone(),
        vec![pin("b", &ib, None)],
        Limits::default(),
    );
    let b = n.add(
        addr(2),
        ib.clone(),
        vec![pin("a", &ia, Some(addr(1))), pin("c", &ic, Some(addr(3)))],
        Limits::default(),
    );
    let c = n.add(addr(3), ic, vec![pin("b", &ib, None)], Limits::default());
    n.send(a, addr(2), b"a1");
    n.run(100);
    let verify_before = n.nodes[b].link.metrics().hello_verify.get();
    // C floods B with ClientHellos (the first one, repeated).
    n.send(c, addr(2), b"c");
    let (_, _, hello) = n.queue.pop_front().unwrap();
    n.queue.clear();
    for _ in 0..2000 {
        n.inject(addr(3), addr(2), hello.clone());
    }
    n.run(5000);
    let per_ip = Limits::default().hello_per_ip_per_s as u64;
    assert!(n.nodes[b].link.metrics().hello_verify.get() - verify_before <= per_ip);
    assert!(n.dropped(b, Drop::HelloRate) >= 2000 - per_ip);
    n.send(a, addr(2), b"a2");
    n.run(100);
    assert_eq!(n.got(b), [b"a1".to_vec(), b"a2".to_vec()]);
}

#[test]
fn the_half_open_cap_refuses_new_handshakes_beyond_it() {
    let mut n = Net::new();
    let (ia, ib, ic) = (id("a"), id("b"), id("c"));
    let limits = Limits {
        half_open_max: 1,
        ..Limits::default()
    };
    let a = n.add(
        addr(1),
        ia.clone(),
        vec![pin("b", &ib, None)],
        Limits::default(),
    );
    let b = n.add(
        addr(2),
        ib.clone(),
        vec![pin("a", &ia, None), pin("c", &ic, None)],
        limits,
    );
    let c = n.add(addr(3), ic, vec![pin("b", &ib, None)], Limits::default());
    // Both hellos get stateless HelloVerifyRequests; both cookie echoes arrive
    // before A's handshake is done, so the second finds the one slot taken.
    n.send(a, addr(2), b"a");
    n.send(c, addr(2), b"c");
    n.run(100);
    assert_eq!(n.nodes[b].link.metrics().hello_verify.get(), 2);
    assert_eq!(n.dropped(b, Drop::HalfOpenFull), 1);
    assert_eq!(n.got(b), [b"a".to_vec()]);
    assert_eq!(n.nodes[b].link.metrics().half_open.get(), 0);
    let e = n.nodes[b].link.recent_events().join("\n");
    assert!(e.contains("too many half-open"), "{e}");
}

#[test]
fn timers_fail_a_silent_handshake_and_back_off_before_the_next() {
    let (mut n, a, _b) = Net::pair();
    n.filter = Some(Box::new(|_, _, _| false)); // nothing arrives
    n.send(a, addr(2), b"x");
    n.run(10);
    assert_eq!(n.nodes[a].link.metrics().half_open.get(), 1);
    n.tick(Duration(
        Limits::default().handshake_timeout.as_us() + 1_000,
    ));
    assert_eq!(n.outcome(a, Outcome::FailedTimeout), 1);
    assert_eq!(n.nodes[a].link.metrics().half_open.get(), 0);
    let e = n.nodes[a].link.recent_events().join("\n");
    assert!(
        e.contains("127.0.0.2:4002") && e.contains("no answer"),
        "{e}"
    );
    // Within retry_after_failure the next datagram is dropped, after it a new try starts.
    assert_eq!(
        n.send(a, addr(2), b"y"),
        Sealed::Dropped(Drop::HandshakeFailed)
    );
    n.tick(Limits::default().retry_after_failure);
    assert_eq!(n.send(a, addr(2), b"z"), Sealed::Queued);
}

#[test]
fn idle_associations_expire_and_close_notify_ends_one_at_once() {
    let (mut n, a, b) = Net::pair();
    n.send(a, addr(2), b"x");
    n.run(100);
    assert!(n.nodes[b].link.is_established(addr(1)));
    // Graceful close: B drops its side as soon as the alert arrives.
    let mut w = MemWire::default();
    n.nodes[a].link.close_all(n.now, &mut w);
    n.out(addr(1), w);
    n.run(10);
    assert!(!n.nodes[b].link.is_established(addr(1)));
    assert_eq!(n.nodes[b].link.metrics().closed_by_peer.get(), 1);
    // Open again, then let it idle out.
    n.send(a, addr(2), b"y");
    n.run(100);
    assert!(n.nodes[b].link.is_established(addr(1)));
    n.tick(Duration(Limits::default().idle_timeout.as_us() + 2_000_000));
    assert!(!n.nodes[b].link.is_established(addr(1)));
    assert_eq!(n.nodes[b].link.metrics().expired.get(), 1);
    assert_eq!(n.nodes[b].link.metrics().associations.get(), 0);
}

#[test]
fn datagrams_for_unpinned_addresses_are_never_sent() {
    let (mut n, a, _b) = Net::pair();
    assert_eq!(
        n.send(a, addr(7), b"x"),
        Sealed::Dropped(Drop::UnpinnedDestination)
    );
    assert!(n.queue.is_empty());
}

#[test]
fn a_lost_flight_is_retransmitted_on_openssl_s_timer() {
    // Real time: OpenSSL's retransmission timer runs on its own clock.
    let (mut n, a, b) = Net::pair();
    let clock = SystemClock::new();
    n.now = clock.now();
    let mut dropped_once = false;
    n.filter = Some(Box::new(move |from, _, d| {
        // Drop B's first flight after the cookie (ServerHello ... ServerHelloDone).
        if from == addr(2) && !dropped_once && d.len() > 200 {
            dropped_once = true;
            return false;
        }
        true
    }));
    n.send(a, addr(2), b"late");
    n.run(100);
    assert!(n.got(b).is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while n.got(b).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        n.now = clock.now();
        n.tick(Duration::ZERO);
        n.run(100);
    }
    assert_eq!(n.got(b), [b"late".to_vec()]);
}

#[test]
fn the_probe_agrees_with_what_keygen_makes() {
    assert!(super::link::probe_handshake(KeyKind::P256).unwrap());
    let _ = super::identity::ed25519_usable();
}

#[test]
fn a_thousand_datagrams_queued_during_a_handshake_all_arrive_in_order() {
    // A restarted RUAS: its 64-payload resend and the new payloads made while its
    // first handshake runs all wait in one queue (the default limits).
    let (mut n, a, b) = Net::pair();
    let msgs: Vec<Vec<u8>> = (0..super::link::PENDING_MAX_DEFAULT as u32)
        .map(|i| {
            let mut m = vec![0xa5; 1200];
            m[..4].copy_from_slice(&i.to_be_bytes());
            m
        })
        .collect();
    for m in &msgs {
        assert_eq!(n.send(a, addr(2), m), Sealed::Queued);
    }
    assert_eq!(
        n.send(a, addr(2), b"one more"),
        Sealed::Dropped(Drop::QueueFull),
        "the queue is bounded"
    );
    n.run(10_000);
    assert_eq!(n.got(b), msgs);
    assert_eq!(n.dropped(a, Drop::QueueFull), 1);
}
