//! Whole-system tests of DTLS on every FMS hop (issue 9), over real loopback UDP
//! and HTTPS: a real RUAS, replicators, an MPS and a QSD started through their
//! `start` functions with TOML configs like the binary's, identities made by the
//! same code as `ivip keygen`, and test clients built on `dtls::BlockingSocket`.
//!
//! * `ivip keygen` makes identities the daemons load, and prints the pin.
//! * A validly signed payload sent as plain UDP, or over DTLS from an unpinned
//!   key, is never replicated; the same payload from the pinned RUAS is.
//! * A wrong fingerprint is a clear error naming the peer: at start-up (no pin
//!   for a feed) and at the handshake (a pin with another key).
//! * A replicator restarted mid-stream (crash) gets every association back with
//!   no operator action, and its downstreams miss nothing.
//! * A handshake flood from one address does not stop the stream from others.
//! * A QSD boots from snapshots fetched over HTTPS from the RUAS (pinned), follows
//!   the DTLS stream to the master's hashes, and the MPS serves over HTTPS.
//!
//! Each test has its own 127.N.0.0/16 block with fixed ports where meshed
//! daemons must know each other before they start; waits are conditions with
//! deadlines.

mod common;
use common::heartbeat_payload as payload;
use common::{serial, wait_for, wait_until};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ivip::daemon::Shutdown;
use ivip::dtls::identity::{KeyKind, write_new_identity};
use ivip::dtls::{AddrPattern, BlockingSocket, Identity, Limits, Link, Pin, PinSet};
use ivip::metrics::Registry;
use ivip::replicator::{Replicator, ReplicatorConfig, ReplicatorSettings};
use ivip::sign::KeyPair;
use ivip_wire::PayloadId;
use ivip_wire::control::{Control, Role};
use ivip_wire::payload::peek_id;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ivip-dtls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------------------
// Identities and configs
// ---------------------------------------------------------------------------

/// A node's identity files, as `ivip keygen --out KEY --cert CERT` writes them.
struct Node {
    key: PathBuf,
    cert: PathBuf,
    id: Identity,
}

fn node(dir: &Path, name: &str) -> Node {
    let (key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    let id = write_new_identity(&key, &cert, KeyKind::P256, name).unwrap();
    Node { key, cert, id }
}

/// `[[dtls.peer]]` pinning `n` at `addr` (an `ip:port`, IP or prefix).
fn peer(name: &str, n: &Node, addr: &str) -> String {
    format!(
        "[[dtls.peer]]\nname = \"{name}\"\nfingerprint = \"{}\"\naddress = [\"{addr}\"]\n",
        n.id.fingerprint()
    )
}

/// `[dtls]` for `n` with `peers`.
fn dtls(n: &Node, peers: &[String]) -> String {
    format!(
        "[dtls]\nkey_file = {:?}\ncert_file = {:?}\n{}",
        n.key,
        n.cert,
        peers.concat()
    )
}

fn replicator_settings(text: &str) -> ReplicatorSettings {
    let p = Path::new("/tmp/test-replicator.toml");
    ivip::config::parse::<ReplicatorConfig>(p, text)
        .and_then(|c| c.check(p))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn start_replicator(s: &ReplicatorSettings) -> Replicator {
    ivip::replicator::start(s, Shutdown::new()).unwrap_or_else(|e| panic!("{e}"))
}

/// A client link for `n`, pinning `pins` (name, node, address pattern).
fn client_link(n: &Node, pins: &[(&str, &Node, &str)]) -> Arc<Link> {
    let pins = PinSet::new(
        pins.iter()
            .map(|(name, p, a)| Pin {
                name: (*name).into(),
                fingerprint: p.id.fingerprint(),
                addresses: vec![a.parse::<AddrPattern>().unwrap()],
            })
            .collect(),
    );
    Link::new(
        &n.id,
        pins,
        Limits::default(),
        &Registry::new(),
        "test_client",
    )
    .unwrap()
}

fn counter(l: &Link, vec: &str, label: &str) -> u64 {
    let m = l.metrics();
    let v = if vec == "dropped" {
        &m.dropped
    } else {
        &m.handshakes
    };
    v.with(label).map_or(0, ivip::metrics::Counter::get)
}

// ---------------------------------------------------------------------------
// A leaf subscriber over DTLS (what a QSD is to its upstream)
// ---------------------------------------------------------------------------

struct Leaf {
    got: Arc<Mutex<Vec<PayloadId>>>,
    accepted: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Leaf {
    fn start(at: &str, link: Arc<Link>, upstream: SocketAddr, nonce: u64) -> Leaf {
        let mut sock = BlockingSocket::bind(sa(at), link).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, a, s) = (got.clone(), accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut cookie = 0u64;
            let sub = |cookie| {
                Control::Subscribe {
                    role: Role::Qsd,
                    nonce,
                    cookie,
                }
                .to_bytes()
            };
            sock.send_to(&sub(cookie), upstream);
            let mut last = Instant::now();
            while !s.load(Ordering::SeqCst) {
                if let Some((from, b)) = sock.recv(Duration::from_millis(20)) {
                    assert_eq!(from, upstream, "a plaintext from a stranger");
                    if let Ok(id) = peek_id(&b) {
                        g.lock().unwrap().push(id);
                    } else {
                        match Control::parse(&b) {
                            Ok(Control::Challenge { cookie: c, .. }) => {
                                cookie = c;
                                sock.send_to(&sub(cookie), upstream);
                            }
                            Ok(Control::Accept { .. }) => a.store(true, Ordering::SeqCst),
                            Ok(Control::Refuse { .. }) => a.store(false, Ordering::SeqCst),
                            other => panic!("unexpected datagram {other:?}"),
                        }
                    }
                }
                if last.elapsed() > Duration::from_millis(200) {
                    sock.send_to(&sub(cookie), upstream);
                    last = Instant::now();
                }
            }
        });
        Leaf {
            got,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn seqs(&self) -> Vec<u32> {
        self.got.lock().unwrap().iter().map(|id| id.seq.0).collect()
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every sequence number from the first received to `last`, each exactly once.
fn assert_contiguous_exactly_once(who: &str, seqs: &[u32], last: u32) {
    let mut count: BTreeMap<u32, usize> = BTreeMap::new();
    for s in seqs {
        *count.entry(*s).or_default() += 1;
    }
    let first = *count.keys().next().expect("nothing received");
    let dup: Vec<u32> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    let missing: Vec<u32> = (first..=last).filter(|s| !count.contains_key(s)).collect();
    assert!(dup.is_empty(), "{who}: duplicates {dup:?}");
    assert!(
        missing.is_empty(),
        "{who}: missing {} of {first}..={last}: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}

// ---------------------------------------------------------------------------
// A real RUAS whose heartbeats make the stream
// ---------------------------------------------------------------------------

struct RuasNode {
    ruas: ivip::ruas::Ruas,
    registry: Registry,
    public: [u8; 32],
}

fn start_ruas(
    dir: &Path,
    me: &Node,
    at_ip: &str,
    replicators: &[(&str, &Node, SocketAddr)],
    extra: &str,
) -> RuasNode {
    let key = KeyPair::generate();
    let key_file = dir.join("ruas-sign.key");
    let _ = std::fs::remove_file(&key_file);
    ivip::keyfile::write_new(&key_file, &key).unwrap();
    let peers: Vec<String> = replicators
        .iter()
        .map(|(n, id, a)| peer(n, id, &a.to_string()))
        .collect();
    let reps: Vec<String> = replicators
        .iter()
        .map(|(_, _, a)| format!("\"{a}\""))
        .collect();
    let cfg = dir.join("ruas.toml");
    std::fs::write(
        &cfg,
        format!(
            "ruas_id = 3\nkey_file = {key_file:?}\ndata_dir = {:?}\nhttp_listen = \"{at_ip}:0\"\n\
             udp_bind = \"{at_ip}:0\"\nreplicators = [{}]\nmabs = [\"20.0.0.0/16\", \"2001:db8::/32\"]\n\
             batch_window_ms = 0\nheartbeat_ms = 20\n{extra}\n{}",
            dir.join("ruas-data"),
            reps.join(", "),
            dtls(me, &peers)
        ),
    )
    .unwrap();
    let c = ivip::ruas::RuasConfig::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let ruas = ivip::ruas::start(&c, Shutdown::new()).unwrap_or_else(|e| panic!("{e}"));
    let registry = ruas.registry().clone();
    RuasNode {
        ruas,
        registry,
        public: key.public(),
    }
}

/// The RUAS's last sequence number sent (its next one, less one).
fn ruas_last_seq(reg: &Registry) -> u32 {
    let next = ivip::metrics::sample(&reg.render(), "ivip_ruas_next_seq").unwrap_or(0.0);
    (next as u32).wrapping_sub(1)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn keygen_makes_an_identity_the_daemons_load_and_prints_its_pin() {
    let dir = tmpdir("keygen");
    let (k, c) = (dir.join("node.key"), dir.join("node.crt"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ivip"))
        .args(["keygen", "--out"])
        .arg(&k)
        .arg("--cert")
        .arg(&c)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let fp_line = text
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint = "))
        .expect("a fingerprint line");
    let id = Identity::load(&k, &c).unwrap();
    assert_eq!(fp_line.trim_matches('"'), id.fingerprint().to_string());
    id.check_usable().unwrap();
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_ivip"))
        .args(["keygen", "--fingerprint"])
        .arg(&c)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(again.stdout).unwrap().trim(),
        id.fingerprint().to_string()
    );
    // Never overwrites a key.
    let twice = std::process::Command::new(env!("CARGO_BIN_EXE_ivip"))
        .args(["keygen", "--out"])
        .arg(&k)
        .arg("--cert")
        .arg(dir.join("other.crt"))
        .output()
        .unwrap();
    assert!(!twice.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 9: "a validly signed payload sent as plain UDP, or over DTLS from an
/// unpinned peer, is not replicated".
#[test]
fn a_signed_payload_over_plain_udp_or_from_an_unpinned_key_is_never_replicated() {
    let _s = serial();
    let dir = tmpdir("unpinned");
    let (ruas, l0, leaf, stranger) = (
        node(&dir, "ruas"),
        node(&dir, "l0"),
        node(&dir, "leaf"),
        node(&dir, "stranger"),
    );
    let l0_addr = sa("127.41.0.1:45401");
    let r = start_replicator(&replicator_settings(&format!(
        "listen = \"{l0_addr}\"\nworkers = 1\nruas_sources = [\"127.41.0.100\"]\n\
         [downstream]\nallow = [\"127.0.0.0/8\"]\n{}",
        dtls(
            &l0,
            &[
                peer("ruas", &ruas, "127.41.0.100"),
                peer("leaf", &leaf, "127.41.0.50")
            ]
        )
    )));
    let link = r.link().unwrap().clone();
    let sub = Leaf::start(
        "127.41.0.50:0",
        client_link(&leaf, &[("l0", &l0, &l0_addr.to_string())]),
        l0_addr,
        7,
    );
    wait_until("the leaf's subscription", Duration::from_secs(10), || {
        sub.accepted.load(Ordering::SeqCst)
    });
    let signer = KeyPair::generate();

    // 1. Plain UDP from the RUAS's own address: dropped before any core sees it.
    let plain = std::net::UdpSocket::bind("127.41.0.100:0").unwrap();
    for seq in 1..=5 {
        plain.send_to(&payload(&signer, seq), l0_addr).unwrap();
    }
    wait_until(
        "plain datagrams to be counted",
        Duration::from_secs(5),
        || counter(&link, "dropped", "plain_udp") >= 5,
    );

    // 2. DTLS from the RUAS's address, but with a key nobody pinned.
    let mut forger = BlockingSocket::bind(
        sa("127.41.0.100:0"),
        client_link(&stranger, &[("l0", &l0, &l0_addr.to_string())]),
    )
    .unwrap();
    for seq in 6..=10 {
        forger.send_to(&payload(&signer, seq), l0_addr);
    }
    let _ = forger.recv(Duration::from_millis(500));
    wait_until(
        "the unpinned handshake to fail",
        Duration::from_secs(5),
        || counter(&link, "handshakes", "failed_unpinned_key") >= 1,
    );
    assert!(
        counter(forger.link(), "handshakes", "failed_refused_by_peer") >= 1,
        "{:?}",
        forger.link().recent_events()
    );
    // Records sent anyway on a guessed association find none.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(r.shared().metrics().fresh.get(), 0, "nothing replicated");
    assert_eq!(sub.count(), 0, "nothing reached the leaf");

    // 3. The pinned RUAS: replicated.
    let mut real = BlockingSocket::bind(
        sa("127.41.0.100:0"),
        client_link(&ruas, &[("l0", &l0, &l0_addr.to_string())]),
    )
    .unwrap();
    for seq in 11..=15 {
        real.send_to(&payload(&signer, seq), l0_addr);
    }
    wait_until(
        "the pinned RUAS's payloads at the leaf",
        Duration::from_secs(10),
        || {
            let _ = real.recv(Duration::from_millis(5));
            sub.count() >= 5
        },
    );
    assert_eq!(sub.seqs(), (11..=15).collect::<Vec<u32>>());
    assert_eq!(r.shared().metrics().fresh.get(), 5);
    let events = link.recent_events().join("\n");
    assert!(events.contains("not DTLS"), "{events}");
    assert!(
        events.contains(&stranger.id.fingerprint().to_string()),
        "{events}"
    );
    drop(sub);
    r.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 9: "a wrong fingerprint in config gives a clear start-up or handshake
/// error naming the peer".
#[test]
fn a_wrong_fingerprint_is_a_clear_error_naming_the_peer() {
    let _s = serial();
    let dir = tmpdir("wrongfp");
    let (a, b, r1, wrong) = (
        node(&dir, "a"),
        node(&dir, "b"),
        node(&dir, "r1"),
        node(&dir, "wrong"),
    );
    let (a_addr, b_addr, r1_addr) = (
        sa("127.44.0.1:45441"),
        sa("127.44.0.2:45442"),
        sa("127.44.0.3:45443"),
    );
    let l0 = |me: &Node, listen: SocketAddr, other: (&str, &Node, SocketAddr)| {
        replicator_settings(&format!(
            "listen = \"{listen}\"\nworkers = 1\nruas_sources = [\"127.44.0.100\"]\nmesh = [\"{}\"]\n\
             [downstream]\nallow = [\"127.0.0.0/8\"]\n{}",
            other.2,
            dtls(
                me,
                &[
                    peer("ruas", &a, "127.44.0.100"),
                    peer(other.0, other.1, &other.2.to_string()),
                    peer("r1", &r1, &r1_addr.to_string()),
                ]
            )
        ))
    };
    let ra = start_replicator(&l0(&a, a_addr, ("l0-b", &b, b_addr)));
    let rb = start_replicator(&l0(&b, b_addr, ("l0-a", &a, a_addr)));
    // Start-up: a feed with no pin at all is refused, naming the feed.
    let text = format!(
        "listen = \"{r1_addr}\"\nworkers = 1\n[[feed]]\naddress = \"{a_addr}\"\n[[feed]]\naddress = \"{b_addr}\"\n\
         [downstream]\nallow = [\"127.0.0.0/8\"]\n{}",
        dtls(&r1, &[peer("l0-b", &b, &b_addr.to_string())])
    );
    let p = Path::new("/tmp/r1.toml");
    let e = ivip::config::parse::<ReplicatorConfig>(p, &text)
        .and_then(|c| c.check(p))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("feed[0]") && e.contains(&a_addr.to_string()),
        "{e}"
    );
    // Handshake: l0-a pinned with another node's key.
    let s = replicator_settings(&format!(
        "listen = \"{r1_addr}\"\nworkers = 1\n[[feed]]\naddress = \"{a_addr}\"\n[[feed]]\naddress = \"{b_addr}\"\n\
         [downstream]\nallow = [\"127.0.0.0/8\"]\n{}",
        dtls(
            &r1,
            &[
                peer("l0-a", &wrong, &a_addr.to_string()),
                peer("l0-b", &b, &b_addr.to_string())
            ]
        )
    ));
    let r = start_replicator(&s);
    let link = r.link().unwrap().clone();
    wait_until(
        "the handshake with l0-a to fail",
        Duration::from_secs(10),
        || counter(&link, "handshakes", "failed_unpinned_key") >= 1,
    );
    let events = link.recent_events().join("\n");
    assert!(
        events.contains(&a_addr.to_string())
            && events.contains("\"l0-a\"")
            && events.contains(&a.id.fingerprint().to_string())
            && events.contains(&wrong.id.fingerprint().to_string()),
        "{events}"
    );
    // The other side says its key was refused, naming r1's address (once r1's
    // alert has reached it: another thread).
    let a_link = ra.link().unwrap().clone();
    let refused_at_a = || {
        let ev = a_link.recent_events().join("\n");
        ev.contains(&r1_addr.to_string()) && ev.contains("refused")
    };
    assert!(
        wait_for(Duration::from_secs(10), refused_at_a),
        "{}",
        a_link.recent_events().join("\n")
    );
    // The good feed works meanwhile.
    wait_until("l0-b's link", Duration::from_secs(10), || {
        link.is_established(b_addr)
    });
    assert!(!link.is_established(a_addr));
    r.stop().unwrap();
    ra.stop().unwrap();
    rb.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 9: "a replicator restarted mid-stream re-establishes every association
/// and its downstreams miss nothing".
#[test]
fn a_replicator_restarted_mid_stream_reopens_every_association_and_its_downstreams_miss_nothing() {
    let _s = serial();
    let dir = tmpdir("restart");
    let (ruas, a, b, r1, leaf) = (
        node(&dir, "ruas"),
        node(&dir, "a"),
        node(&dir, "b"),
        node(&dir, "r1"),
        node(&dir, "leaf"),
    );
    let (a_addr, b_addr, r1_addr) = (
        sa("127.42.0.1:45421"),
        sa("127.42.0.2:45422"),
        sa("127.42.0.3:45423"),
    );
    let l0 = |me: &Node, listen: SocketAddr, other: (&str, &Node, SocketAddr)| {
        replicator_settings(&format!(
            "listen = \"{listen}\"\nworkers = 2\nruas_sources = [\"127.42.0.100\"]\nmesh = [\"{}\"]\n\
             [feed_timing]\nsilence_ms = 300\n\
             [downstream]\nallow = [\"127.0.0.0/8\"]\n{}",
            other.2,
            dtls(
                me,
                &[
                    peer("ruas", &ruas, "127.42.0.100"),
                    peer(other.0, other.1, &other.2.to_string()),
                    peer("r1", &r1, &r1_addr.to_string()),
                ]
            )
        ))
    };
    let sa_settings = l0(&a, a_addr, ("l0-b", &b, b_addr));
    let ra = start_replicator(&sa_settings);
    let rb = start_replicator(&l0(&b, b_addr, ("l0-a", &a, a_addr)));
    let r1n = start_replicator(&replicator_settings(&format!(
        "listen = \"{r1_addr}\"\nworkers = 1\n[[feed]]\naddress = \"{a_addr}\"\n[[feed]]\naddress = \"{b_addr}\"\n\
         [feed_timing]\nsilence_ms = 300\n[downstream]\nallow = [\"127.0.0.0/8\"]\n{}",
        dtls(
            &r1,
            &[
                peer("l0-a", &a, &a_addr.to_string()),
                peer("l0-b", &b, &b_addr.to_string()),
                peer("leaf", &leaf, "127.42.0.50"),
            ]
        )
    )));
    let sub = Leaf::start(
        "127.42.0.50:0",
        client_link(&leaf, &[("r1", &r1, &r1_addr.to_string())]),
        r1_addr,
        9,
    );
    wait_until("the leaf's subscription", Duration::from_secs(10), || {
        sub.accepted.load(Ordering::SeqCst)
    });
    let rn = start_ruas(
        &dir,
        &ruas,
        "127.42.0.100",
        &[("l0-a", &a, a_addr), ("l0-b", &b, b_addr)],
        "",
    );
    let ruas_udp = rn.ruas.udp_addr();
    wait_until("the stream at the leaf", Duration::from_secs(10), || {
        sub.count() >= 30
    });
    assert_eq!(ra.link().unwrap().established().len(), 3, "ruas, l0-b, r1");

    // Crash A (no close_notify: every peer keeps a dead association), keep the
    // stream flowing through B, then start A again on the same address.
    ra.abort();
    let before = sub.count();
    wait_until(
        "the stream through B alone",
        Duration::from_secs(10),
        || sub.count() >= before + 25,
    );
    let ra = start_replicator(&sa_settings);
    let a_link = ra.link().unwrap().clone();
    wait_until(
        "A to hold every association again",
        Duration::from_secs(15),
        || {
            let peers: Vec<SocketAddr> = a_link.established().into_iter().map(|(p, _)| p).collect();
            [ruas_udp, b_addr, r1_addr]
                .iter()
                .all(|p| peers.contains(p))
        },
    );
    // ...and to carry the stream again: R1's feed from A is live.
    let fresh = ra.shared().metrics().fresh.get();
    wait_until("A to carry payloads again", Duration::from_secs(10), || {
        ra.shared().metrics().fresh.get() > fresh + 10
            && r1n.feed_status().iter().any(|f| {
                f.active == a_addr
                    && f.accepted
                    && f.last_payload.is_some_and(|t| {
                        ivip::time::SystemClock::new().now().saturating_since(t)
                            < ivip::time::Duration::from_ms(300)
                    })
            })
    });
    // Every peer re-opened without help: nobody's config or state was touched.
    for l in [
        rb.link().unwrap(),
        r1n.link().unwrap(),
        rn.ruas.link().unwrap(),
    ] {
        assert!(l.is_established(a_addr), "{:?}", l.recent_events());
    }
    let rehandshakes = a_link.metrics().rehandshakes.get()
        + rb.link().unwrap().metrics().rehandshakes.get()
        + r1n.link().unwrap().metrics().rehandshakes.get()
        + rn.ruas.link().unwrap().metrics().rehandshakes.get();
    assert!(
        rehandshakes >= 1,
        "a stale association was noticed and replaced"
    );

    // Stop the stream and check the leaf missed nothing and got nothing twice.
    let reg = rn.registry.clone();
    rn.ruas.stop().unwrap();
    let last = ruas_last_seq(&reg);
    wait_until(
        "the last payload at the leaf",
        Duration::from_secs(10),
        || sub.seqs().iter().max() == Some(&last),
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_contiguous_exactly_once("leaf", &sub.seqs(), last);
    let _ = rn.public;
    drop(sub);
    r1n.stop().unwrap();
    ra.stop().unwrap();
    rb.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 9: "a handshake flood from one address does not stop the stream from
/// the others".
#[test]
fn a_handshake_flood_from_one_address_does_not_stop_the_stream_from_the_others() {
    let _s = serial();
    let dir = tmpdir("flood");
    let (ruas, a, leaf, flooder) = (
        node(&dir, "ruas"),
        node(&dir, "a"),
        node(&dir, "leaf"),
        node(&dir, "flooder"),
    );
    let a_addr = sa("127.43.0.1:45431");
    let ra = start_replicator(&replicator_settings(&format!(
        "listen = \"{a_addr}\"\nworkers = 1\nruas_sources = [\"127.43.0.100\"]\n\
         [downstream]\nallow = [\"127.0.0.0/8\"]\n{}",
        dtls(
            &a,
            &[
                peer("ruas", &ruas, "127.43.0.100"),
                peer("leaf", &leaf, "127.43.0.50"),
                // Even a pinned peer gets no more than its share of hellos.
                peer("flooder", &flooder, "127.43.0.66"),
            ]
        )
    )));
    let sub = Leaf::start(
        "127.43.0.50:0",
        client_link(&leaf, &[("a", &a, &a_addr.to_string())]),
        a_addr,
        3,
    );
    wait_until("the leaf's subscription", Duration::from_secs(10), || {
        sub.accepted.load(Ordering::SeqCst)
    });
    let rn = start_ruas(&dir, &ruas, "127.43.0.100", &[("a", &a, a_addr)], "");
    wait_until("the stream at the leaf", Duration::from_secs(10), || {
        sub.count() >= 20
    });

    // A real ClientHello, then 40,000 copies from one address in 2 s, with
    // garbage records mixed in.
    let hello = {
        let l = client_link(&flooder, &[("a", &a, &a_addr.to_string())]);
        let mut w = ivip::dtls::link::MemWire::default();
        l.seal(ivip::time::Instant(1), a_addr, b"x", &mut w);
        w.sent.remove(0).1
    };
    let link = ra.link().unwrap().clone();
    let verify_before = link.metrics().hello_verify.get();
    let before = sub.count();
    let flood = std::thread::spawn(move || {
        let s = std::net::UdpSocket::bind("127.43.0.66:0").unwrap();
        let garbage = [0x17u8, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4];
        let t0 = Instant::now();
        let mut sent = 0u64;
        for round in 0..200 {
            for i in 0..200 {
                let d: &[u8] = if i % 10 == 9 { &garbage } else { &hello };
                if s.send_to(d, a_addr).is_ok() {
                    sent += 1;
                }
            }
            if let Some(w) = (t0 + Duration::from_millis(10 * (round + 1)))
                .checked_duration_since(Instant::now())
            {
                std::thread::sleep(w);
            }
        }
        sent
    });
    let sent = flood.join().unwrap();
    // The stream kept flowing during the flood (20 ms heartbeats for ~2 s: about
    // 100; a loaded machine delivers fewer, a stopped stream none).
    assert!(
        sub.count() >= before + 20,
        "{} payloads during the flood",
        sub.count() - before
    );
    // Cut cheaply, before any cryptography: over the rate, or (when this node
    // has itself opened a handshake to that pinned address) as the losing side
    // of a simultaneous open.
    let cut =
        counter(&link, "dropped", "hello_rate") + counter(&link, "dropped", "simultaneous_open");
    assert!(cut + 1000 >= sent * 9 / 10, "{cut} of {sent} cut");
    let per_ip = u64::from(Limits::default().hello_per_ip_per_s);
    assert!(
        link.metrics().hello_verify.get() - verify_before <= 4 * per_ip,
        "HelloVerifyRequests stay within the per-address budget"
    );
    // No flood hello got past the cookie into state. The one half-open
    // association allowed is this node's own: the garbage epoch-1 records from
    // the pinned flooder read as "the peer holds an association this node lost",
    // and this node opens one to it (one per peer, rate-limited, timed out after
    // handshake_timeout).
    assert!(
        link.metrics().half_open.get() <= 1,
        "{} half-open associations after the flood",
        link.metrics().half_open.get()
    );
    assert!(link.metrics().rehandshakes.get() <= 1);
    // On a loaded machine the kernel may drop datagrams while the flood's
    // backlog drains (in a full system MPSes repair those). Once it has drained,
    // the stream is whole again: every payload from then on, exactly once.
    let after = sub.count();
    wait_until(
        "the stream after the flood",
        Duration::from_secs(10),
        || sub.count() >= after + 10,
    );
    let mark = sub.seqs().iter().copied().max().unwrap_or(0);
    wait_until("the stream after the mark", Duration::from_secs(10), || {
        sub.count() >= after + 20
    });
    let reg = rn.registry.clone();
    rn.ruas.stop().unwrap();
    let last = ruas_last_seq(&reg);
    wait_for(Duration::from_secs(10), || {
        sub.seqs().iter().max() == Some(&last)
    });
    let seqs = sub.seqs();
    assert!(
        seqs.iter().max() == Some(&last),
        "the last payload {last} never reached the leaf: it has up to {:?}, the last ten {:?}; \
         replicator a:\n{}",
        seqs.iter().max(),
        &seqs[seqs.len().saturating_sub(10)..],
        ra.registry()
            .render()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let since: Vec<u32> = seqs.into_iter().filter(|s| *s >= mark).collect();
    assert_contiguous_exactly_once("leaf", &since, last);
    drop(sub);
    ra.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// HTTPS with the same pinned identities: the QSD fetches its snapshots from
/// the RUAS over HTTPS, follows the DTLS stream from two level-0 replicators to
/// the master's hashes, and the MPS serves payloads over HTTPS.
#[test]
fn a_qsd_boots_from_https_snapshots_and_follows_the_dtls_stream() {
    let _s = serial();
    let dir = tmpdir("qsd");
    let (ruas, a, b, qsd, mps) = (
        node(&dir, "ruas"),
        node(&dir, "a"),
        node(&dir, "b"),
        node(&dir, "qsd"),
        node(&dir, "mps"),
    );
    let (a_addr, b_addr) = (sa("127.45.0.1:45451"), sa("127.45.0.2:45452"));
    let l0 = |me: &Node, listen: SocketAddr, other: (&str, &Node, SocketAddr)| {
        replicator_settings(&format!(
            "listen = \"{listen}\"\nworkers = 1\nruas_sources = [\"127.45.0.100\"]\nmesh = [\"{}\"]\n\
             [downstream]\nallow = [\"127.0.0.0/8\"]\n{}",
            other.2,
            dtls(
                me,
                &[
                    peer("ruas", &ruas, "127.45.0.100"),
                    peer(other.0, other.1, &other.2.to_string()),
                    peer("qsd", &qsd, "127.45.0.20"),
                    peer("mps", &mps, "127.45.0.30"),
                ]
            )
        ))
    };
    let ra = start_replicator(&l0(&a, a_addr, ("l0-b", &b, b_addr)));
    let rb = start_replicator(&l0(&b, b_addr, ("l0-a", &a, a_addr)));
    let rn = start_ruas(
        &dir,
        &ruas,
        "127.45.0.100",
        &[("l0-a", &a, a_addr), ("l0-b", &b, b_addr)],
        "snapshot_interval_s = 1\nhttps_listen = \"127.45.0.100:0\"\n",
    );
    let ruas_https = rn.ruas.https_addr().unwrap();
    let feeds = format!("[[feed]]\naddress = \"{a_addr}\"\n[[feed]]\naddress = \"{b_addr}\"\n");
    let mps_cfg = dir.join("mps.toml");
    std::fs::write(
        &mps_cfg,
        format!(
            "listen = \"127.45.0.30:0\"\nhttp = \"127.45.0.30:0\"\nhttps = \"127.45.0.30:0\"\n\
             [[ruas]]\nid = 3\npublic_key = \"{}\"\n{feeds}{}",
            ivip_wire::hex::encode(&rn.public),
            dtls(
                &mps,
                &[
                    peer("l0-a", &a, &a_addr.to_string()),
                    peer("l0-b", &b, &b_addr.to_string())
                ]
            )
        ),
    )
    .unwrap();
    let ms = ivip::mps::MpsConfig::load(&mps_cfg).unwrap_or_else(|e| panic!("{e}"));
    let m = ivip::mps::start(&ms, Shutdown::new()).unwrap_or_else(|e| panic!("{e}"));
    let mps_https = m.https_addr().unwrap();
    std::fs::write(
        dir.join("directory.toml"),
        format!(
            "[[ruas]]\nid = 3\npublic_key = \"{}\"\nsnapshot_urls = [\"https://{ruas_https}\"]\n\
             mabs = [\"20.0.0.0/16\", \"2001:db8::/32\"]\n",
            ivip_wire::hex::encode(&rn.public)
        ),
    )
    .unwrap();
    let qsd_cfg = dir.join("qsd.toml");
    std::fs::write(
        &qsd_cfg,
        format!(
            "query_listen = \"127.45.0.20:0\"\nworkers = 1\nfeed_listen = \"127.45.0.20:0\"\n\
             admin_listen = \"127.45.0.20:0\"\ndirectory = \"directory.toml\"\nmps = [\"https://{mps_https}\"]\n\
             {feeds}{}",
            dtls(
                &qsd,
                &[
                    peer("l0-a", &a, &a_addr.to_string()),
                    peer("l0-b", &b, &b_addr.to_string()),
                    peer("ruas-https", &ruas, "127.45.0.100"),
                    peer("mps-https", &mps, "127.45.0.30"),
                ]
            )
        ),
    )
    .unwrap();
    let qs = ivip::qsd::QsdConfig::load(&qsd_cfg).unwrap_or_else(|e| panic!("{e}"));
    let q = ivip::qsd::start(&qs, Shutdown::new()).unwrap_or_else(|e| panic!("{e}"));
    let status = |q: &ivip::qsd::Qsd| -> serde_json::Value {
        let r = ivip::http::Client::default()
            .get(&format!("http://{}/v1/status?hash=1", q.admin_addr()))
            .unwrap();
        serde_json::from_slice(&r.body).unwrap()
    };
    let converged = |q: &ivip::qsd::Qsd| {
        let s = status(q);
        ["20.0.0.0/16", "2001:db8::/32"].iter().all(|mab| {
            let m: ivip_wire::Mab = mab.parse().unwrap();
            let master = rn
                .ruas
                .reader()
                .view(&m)
                .map(|v| ivip_wire::hex::encode(&v.hash()));
            s["mabs"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["mab"] == *mab
                        && x["state"] == "ready"
                        && x["sha256"].as_str() == master.as_deref()
                })
            })
        })
    };
    wait_until(
        "the QSD to boot over HTTPS and match the master",
        Duration::from_secs(30),
        || converged(&q),
    );
    let ql = q.link().unwrap();
    // One feed is enough to converge; the other association may still be
    // completing its handshake.
    wait_until("both feeds' associations", Duration::from_secs(10), || {
        ql.is_established(a_addr) && ql.is_established(b_addr)
    });
    let c = ivip::client::QueryClient::new(vec![q.query_addr()]).unwrap();
    assert!(matches!(
        c.query("20.0.0.9".parse().unwrap()).unwrap(),
        ivip::client::Answer::Unassigned { .. }
    ));
    // The MPS kept the stream and serves it over HTTPS to a pinned client...
    let pins = Arc::new(PinSet::new(vec![Pin {
        name: "mps".into(),
        fingerprint: mps.id.fingerprint(),
        addresses: vec!["127.45.0.30".parse().unwrap()],
    }]));
    let tls = ivip::dtls::tls::ClientTls::new(pins).unwrap();
    wait_until("payloads at the MPS", Duration::from_secs(10), || {
        m.store().len() >= 5
    });
    let r = ivip::http::Client::default()
        .get_with(&format!("https://{mps_https}/metrics"), Some(&tls))
        .unwrap();
    assert_eq!(r.status, 200);
    // ...and to no client that pins another key for it.
    let other = Arc::new(PinSet::new(vec![Pin {
        name: "mps".into(),
        fingerprint: ruas.id.fingerprint(),
        addresses: vec!["127.45.0.30".parse().unwrap()],
    }]));
    let bad = ivip::dtls::tls::ClientTls::new(other).unwrap();
    let e = ivip::http::Client::default()
        .get_with(&format!("https://{mps_https}/metrics"), Some(&bad))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&mps_https.to_string()) && e.contains("\"mps\""),
        "{e}"
    );
    q.stop().unwrap();
    m.stop().unwrap();
    rn.ruas.stop().unwrap();
    ra.stop().unwrap();
    rb.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
