//! Whole-system tests of the query side (issue 6), on real sockets and HTTP: a RUAS,
//! two relays standing in for replicators (so a test can drop chosen payloads on
//! the way to the QSD), an MPS, a QSD, a QSC and a querier.
//!
//! * A QSD boots from snapshots while updates arrive and ends with exactly the
//!   RUAS master's hashes.
//! * Payloads lost on both feeds come back from the MPS.
//! * A forced divergence (a validly signed but wrong snapshot) is detected by the
//!   announced hash and only that MAB is reloaded.
//! * A querier behind a QSC is notified after a change and after a split, and acks.

mod common;
use common::wait_until;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ivip::client::{Answer, QueryClient};
use ivip::daemon::Shutdown;
use ivip::http::Client;
use ivip::sign::KeyPair;
use ivip_wire::control::Control;
use ivip_wire::payload::peek_id;
use ivip_wire::sumuc::Sumuc;
use ivip_wire::{Command, Etr, Mab};

const MAB4: &str = "20.0.0.0/16";
const MAB6: &str = "2001:db8::/32";

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ivip-qsd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn client() -> Client {
    Client {
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(10),
        body_max: 64 << 20,
    }
}

type DropRule = Box<dyn Fn(SocketAddr, u32) -> bool + Send>;

/// A stand-in replicator: takes the RUAS's payloads, answers subscriptions, and
/// forwards each payload to every subscriber unless the drop rule says otherwise.
struct Relay {
    sock: Arc<UdpSocket>,
    drop_rule: Arc<Mutex<DropRule>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start() -> Relay {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let drop_rule: Arc<Mutex<DropRule>> = Arc::new(Mutex::new(Box::new(|_, _| false)));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, rule, st) = (sock.clone(), drop_rule.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut subs: Vec<SocketAddr> = Vec::new();
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::SeqCst) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let b = &buf[..n];
                if let Ok(id) = peek_id(b) {
                    for to in &subs {
                        if !(rule.lock().unwrap())(*to, id.seq.0) {
                            let _ = s.send_to(b, to);
                        }
                    }
                    continue;
                }
                match Control::parse(b) {
                    Ok(Control::Subscribe {
                        nonce, cookie: 0, ..
                    }) => {
                        let _ =
                            s.send_to(&Control::Challenge { nonce, cookie: 7 }.to_bytes(), from);
                    }
                    Ok(Control::Subscribe { nonce, .. }) => {
                        let c = Control::Accept {
                            nonce,
                            keepalive_ms: 300,
                            expiry_ms: 3000,
                        };
                        let _ = s.send_to(&c.to_bytes(), from);
                        if !subs.contains(&from) {
                            subs.push(from);
                        }
                    }
                    _ => {}
                }
            }
        });
        Relay {
            sock,
            drop_rule,
            stop,
            thread: Some(thread),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn set_rule(&self, r: DropRule) {
        *self.drop_rule.lock().unwrap() = r;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Net {
    dir: PathBuf,
    uas: KeyPair,
    ruas: ivip::ruas::Ruas,
    relays: [Relay; 2],
    mps: ivip::mps::Mps,
    next_req: u64,
}

fn net(name: &str) -> Net {
    let dir = tmpdir(name);
    let ruas_key = KeyPair::generate();
    ivip::keyfile::write_new(&dir.join("ruas.key"), &ruas_key).unwrap();
    let uas = KeyPair::generate();
    let relays = [Relay::start(), Relay::start()];
    std::fs::write(
        dir.join("ruas.toml"),
        format!(
            "ruas_id = 4\nkey_file = \"ruas.key\"\ndata_dir = \"ruas\"\nhttp_listen = \"127.0.0.1:0\"\n\
             replicators = [\"{}\", \"{}\"]\nmabs = [\"{MAB4}\", \"{MAB6}\"]\nbatch_window_ms = 0\n\
             heartbeat_ms = 200\nsnapshot_interval_s = 1\n\
             [[uas]]\nname = \"u\"\npublic_key = \"{}\"\nranges = [\"20.0.0.0+65536\", \"2001:db8::+4294967296\"]\n\
             [dtls]\ninsecure_plain_udp = true\n",
            relays[0].addr(),
            relays[1].addr(),
            ivip_wire::hex::encode(&uas.public())
        ),
    )
    .unwrap();
    let cfg = ivip::ruas::RuasConfig::load(&dir.join("ruas.toml")).unwrap();
    let ruas = ivip::ruas::start(&cfg, Shutdown::new()).unwrap();
    std::fs::write(
        dir.join("mps.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n[[ruas]]\nid = 4\npublic_key = \"{}\"\n\
             [[feed]]\naddress = \"{}\"\n[[feed]]\naddress = \"{}\"\n[dtls]\ninsecure_plain_udp = true\n",
            ivip_wire::hex::encode(&ruas_key.public()),
            relays[0].addr(),
            relays[1].addr()
        ),
    )
    .unwrap();
    let ms = ivip::mps::MpsConfig::load(&dir.join("mps.toml")).unwrap();
    let mps = ivip::mps::start(&ms, Shutdown::new()).unwrap();
    std::fs::write(
        dir.join("directory.toml"),
        format!(
            "[[ruas]]\nid = 4\npublic_key = \"{}\"\nsnapshot_urls = [\"http://{}\"]\nmabs = [\"{MAB4}\", \"{MAB6}\"]\n",
            ivip_wire::hex::encode(&ruas_key.public()),
            ruas.http_addr()
        ),
    )
    .unwrap();
    Net {
        dir,
        uas,
        ruas,
        relays,
        mps,
        next_req: 1,
    }
}

impl Net {
    fn qsd_config(&self, name: &str, snapshot_urls: Option<&str>) -> PathBuf {
        let dir_file = match snapshot_urls {
            None => "directory.toml".to_string(),
            Some(urls) => {
                let text = std::fs::read_to_string(self.dir.join("directory.toml"))
                    .unwrap()
                    .replace(
                        &format!("snapshot_urls = [\"http://{}\"]", self.ruas.http_addr()),
                        &format!("snapshot_urls = [{urls}]"),
                    );
                let f = format!("directory-{name}.toml");
                std::fs::write(self.dir.join(&f), text).unwrap();
                f
            }
        };
        let p = self.dir.join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "query_listen = \"127.0.0.1:0\"\nworkers = 2\nfeed_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
                 directory = \"{dir_file}\"\nmps = [\"http://{}\"]\n\
                 [[feed]]\naddress = \"{}\"\n[[feed]]\naddress = \"{}\"\n[dtls]\ninsecure_plain_udp = true\n",
                self.mps.http_addr(),
                self.relays[0].addr(),
                self.relays[1].addr()
            ),
        )
        .unwrap();
        p
    }

    fn submit(&mut self, mab: &str, cmds: Vec<Command>) -> u64 {
        let s = Sumuc {
            signer: self.uas.public(),
            request_id: self.next_req,
            timestamp_us: ivip::time::unix_now_us(),
            execute_at_us: 0,
            mab: mab.parse().unwrap(),
            origin: "test".into(),
            commands: cmds,
            signature: [0; 64],
        };
        self.next_req += 1;
        let mut b = s.to_vec().unwrap();
        let n = b.len() - 64;
        let sig = self.uas.sign(&b[..n]);
        b[n..].copy_from_slice(&sig);
        let r = client()
            .post(
                &format!("http://{}/v1/sumuc", self.ruas.http_addr()),
                "application/octet-stream",
                &b,
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["mab_seq"].as_u64().unwrap()
    }

    fn master_hash(&self, mab: &str) -> (u64, String) {
        let m: Mab = mab.parse().unwrap();
        let v = self.ruas.reader().view(&m).unwrap();
        (v.mab_seq(), ivip_wire::hex::encode(&v.hash()))
    }
}

fn status(q: &ivip::qsd::Qsd) -> serde_json::Value {
    let r = client()
        .get(&format!("http://{}/v1/status?hash=1", q.admin_addr()))
        .unwrap();
    serde_json::from_slice(&r.body).unwrap()
}

fn qsd_hash(q: &ivip::qsd::Qsd, mab: &str) -> Option<(u64, String)> {
    let s = status(q);
    s["mabs"]
        .as_array()?
        .iter()
        .find(|m| m["mab"] == mab)
        .and_then(|m| Some((m["mab_seq"].as_u64()?, m["sha256"].as_str()?.to_string())))
}

fn metric(q: &ivip::qsd::Qsd, series: &str) -> f64 {
    ivip::metrics::sample(&q.registry().render(), series).unwrap_or(0.0)
}

fn v4(i: u64, last: u8) -> Command {
    Command::Define {
        start: 0x1400_0000 + 16 * i,
        len: 8,
        etr: Etr::V4(std::net::Ipv4Addr::new(192, 0, 2, last)),
    }
}

fn v6(i: u64) -> Command {
    Command::Define {
        start: 0x2001_0db8_0000_0000 + 16 * i,
        len: 4,
        etr: Etr::V6("2001:db8:ffff::1".parse().unwrap()),
    }
}

fn start_qsd(cfg: &std::path::Path) -> ivip::qsd::Qsd {
    let s = ivip::qsd::QsdConfig::load(cfg).unwrap_or_else(|e| panic!("{e}"));
    ivip::qsd::start(&s, Shutdown::new()).unwrap_or_else(|e| panic!("{e}"))
}

fn converged(n: &Net, q: &ivip::qsd::Qsd) -> bool {
    [MAB4, MAB6]
        .iter()
        .all(|m| qsd_hash(q, m) == Some(n.master_hash(m)))
}

#[test]
fn qsd_boots_from_snapshots_while_updates_arrive_and_matches_the_master() {
    let mut n = net("boot");
    for i in 0..20 {
        n.submit(MAB4, vec![v4(i, 1)]);
        n.submit(MAB6, vec![v6(i)]);
    }
    let cfg = n.qsd_config("qsd", None);
    let q = start_qsd(&cfg);
    // Updates keep coming while it boots.
    for i in 20..60 {
        n.submit(MAB4, vec![v4(i, 2)]);
        if i % 3 == 0 {
            n.submit(MAB6, vec![v6(i)]);
        }
    }
    wait_until(
        "the QSD to equal the master",
        Duration::from_secs(20),
        || converged(&n, &q),
    );
    // And it answers queries from what it loaded.
    let c = QueryClient::new(vec![q.query_addr()]).unwrap();
    match c.query("20.0.0.5".parse().unwrap()).unwrap() {
        Answer::Mapped { micronet, .. } => {
            assert_eq!((micronet.start, micronet.len), (0x1400_0000, 8));
            assert_eq!(micronet.etr, Etr::V4("192.0.2.1".parse().unwrap()));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.query("20.0.0.9".parse().unwrap()).unwrap(),
        Answer::Unassigned { .. }
    ));
    assert!(matches!(
        c.query("9.9.9.9".parse().unwrap()).unwrap(),
        Answer::NotSpi { .. }
    ));
    assert!(matches!(
        c.query("2001:db8::1".parse().unwrap()).unwrap(),
        Answer::Mapped { .. }
    ));
    q.stop().unwrap();
    let _ = std::fs::remove_dir_all(&n.dir);
}

#[test]
fn payloads_lost_on_both_feeds_are_recovered_from_an_mps() {
    let mut n = net("loss");
    let cfg = n.qsd_config("qsd", None);
    let q = start_qsd(&cfg);
    wait_until("the QSD to be ready", Duration::from_secs(20), || {
        converged(&n, &q)
    });
    let qsd_feed = q.feed_addr();
    // Drop every third payload on the way to the QSD, on both feeds (the MPS still
    // gets them).
    let lost = Arc::new(Mutex::new(HashSet::new()));
    for r in &n.relays {
        let l = lost.clone();
        r.set_rule(Box::new(move |to, seq| {
            let drop = to == qsd_feed && seq % 3 == 0;
            if drop {
                l.lock().unwrap().insert(seq);
            }
            drop
        }));
    }
    for i in 0..30 {
        n.submit(MAB4, vec![v4(100 + i, 3)]);
    }
    let t_last = Instant::now();
    wait_until(
        "recovery of every lost payload",
        Duration::from_secs(10),
        || converged(&n, &q),
    );
    let took = t_last.elapsed();
    assert!(
        !lost.lock().unwrap().is_empty(),
        "the test did drop payloads"
    );
    assert!(
        metric(&q, "ivip_qsd_mps_payloads_total") >= 1.0,
        "recovered from the MPS"
    );
    // A loss is noticed when the next payload arrives (heartbeats come every
    // 200 ms); recovery then takes at most about a second.
    assert!(
        took < Duration::from_millis(1500),
        "recovered {took:?} after the last change"
    );
    q.stop().unwrap();
    let _ = std::fs::remove_dir_all(&n.dir);
}

#[test]
fn a_forced_divergence_resyncs_only_that_mab() {
    let mut n = net("diverge");
    for i in 0..5 {
        n.submit(MAB4, vec![v4(i, 1)]);
        n.submit(MAB6, vec![v6(i)]);
    }
    // A snapshot server that serves, once, a validly signed but wrong snapshot of
    // the IPv4 MAB (an extra micronet), and 404 otherwise, so the QSD moves on to
    // the real RUAS for everything else.
    let ruas_key = ivip::keyfile::read(&n.dir.join("ruas.key")).unwrap();
    let mab4: Mab = MAB4.parse().unwrap();
    let bad = {
        let mut t = ivip::table::Table::new(mab4);
        for i in 0..5 {
            t.apply_at(i + 1, &[v4(i, 1)]).unwrap();
        }
        t.apply(&[v4(50, 9)]).unwrap();
        t.publish();
        t.reader()
            .load_owned()
            .write_snapshot(&ruas_key, ivip_wire::RuasId::new(4).unwrap(), 1)
    };
    let served = Arc::new(AtomicBool::new(false));
    let s2 = served.clone();
    let fake = ivip::http::HttpServer::spawn(
        "127.0.0.1:0".parse().unwrap(),
        "fake-snapshots",
        ivip::http::ServerConfig::default(),
        Shutdown::new(),
        Arc::new(move |r: &ivip::http::Request| {
            if r.query_param("mab")
                .is_some_and(|m| m.starts_with("20.0.0.0"))
                && !s2.swap(true, Ordering::SeqCst)
            {
                ivip::http::Response::new(200, "application/octet-stream", bad.clone())
            } else {
                ivip::http::Response::not_found("none here")
            }
        }),
    )
    .unwrap();
    let urls = format!(
        "\"http://{}\", \"http://{}\"",
        fake.local_addr(),
        n.ruas.http_addr()
    );
    let cfg = n.qsd_config("qsd", Some(&urls));
    let q = start_qsd(&cfg);
    // The v6 MAB loads from the real server and must keep serving throughout.
    wait_until("the IPv6 MAB", Duration::from_secs(20), || {
        qsd_hash(&q, MAB6) == Some(n.master_hash(MAB6))
    });
    let c = QueryClient::new(vec![q.query_addr()]).unwrap();
    let watcher_stop = Arc::new(AtomicBool::new(false));
    let (ws, qa) = (watcher_stop.clone(), q.query_addr());
    let watcher = std::thread::spawn(move || {
        let c = QueryClient::new(vec![qa]).unwrap();
        let mut not_mapped = 0;
        while !ws.load(Ordering::SeqCst) {
            if !matches!(
                c.query("2001:db8::1".parse().unwrap()),
                Ok(Answer::Mapped { .. })
            ) {
                not_mapped += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        not_mapped
    });
    // The next announcement of the IPv4 MAB exposes the divergence.
    n.submit(MAB4, vec![v4(6, 1)]);
    wait_until(
        "the divergence to be found and repaired",
        Duration::from_secs(20),
        || {
            served.load(Ordering::SeqCst)
                && metric(&q, "ivip_qsd_resyncs_total") >= 1.0
                && converged(&n, &q)
        },
    );
    watcher_stop.store(true, Ordering::SeqCst);
    assert_eq!(watcher.join().unwrap(), 0, "the other MAB kept serving");
    assert_eq!(metric(&q, "ivip_qsd_hash_mismatch_total"), 1.0);
    assert!(
        matches!(
            c.query("20.0.3.33".parse().unwrap()).unwrap(),
            Answer::Unassigned { .. }
        ),
        "the bogus micronet is gone"
    );
    q.stop().unwrap();
    fake.stop();
    let _ = std::fs::remove_dir_all(&n.dir);
}

#[test]
fn a_querier_behind_a_qsc_is_notified_after_a_change_and_a_split_and_acks() {
    let mut n = net("notify");
    n.submit(MAB4, vec![v4(0, 1)]); // 20.0.0.0+8 -> 192.0.2.1
    let cfg = n.qsd_config("qsd", None);
    let q = start_qsd(&cfg);
    wait_until("the QSD to be ready", Duration::from_secs(20), || {
        converged(&n, &q)
    });
    let qsc_cfg = ivip::qsc::QscConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstreams: vec![q.query_addr()],
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        query_timeout_ms: 500,
        cache_entries_max: 1000,
        pending_max: 1000,
        socket: Default::default(),
        fault: Default::default(),
    };
    let qsc = ivip::qsc::start(&qsc_cfg, Shutdown::new()).unwrap();
    let itr = QueryClient::new(vec![qsc.addr()]).unwrap();
    match itr.query("20.0.0.3".parse().unwrap()).unwrap() {
        Answer::Mapped { micronet, .. } => {
            assert_eq!((micronet.start, micronet.len), (0x1400_0000, 8))
        }
        other => panic!("{other:?}"),
    }
    // A change of its ETR.
    n.submit(
        MAB4,
        vec![Command::SetEtr {
            start: 0x1400_0000,
            len: 8,
            etr: Etr::V4("198.51.100.5".parse().unwrap()),
        }],
    );
    let (_, note) = itr
        .recv_notification(Duration::from_secs(5))
        .unwrap()
        .expect("a notification after the change");
    assert!(!note.flush);
    assert_eq!(note.entries.len(), 1);
    assert_eq!(
        note.entries[0].etr,
        Etr::V4("198.51.100.5".parse().unwrap())
    );
    assert_eq!(
        (note.entries[0].start, note.entries[0].len),
        (0x1400_0000, 8)
    );
    // Zero it and split it in three: the notification covers exactly the range the
    // querier was told about, in its new micronets.
    n.submit(
        MAB4,
        vec![
            Command::SetEtr {
                start: 0x1400_0000,
                len: 8,
                etr: Etr::V4("0.0.0.0".parse().unwrap()),
            },
            Command::Split {
                start: 0x1400_0000,
                len: 8,
                at: 2,
            },
            Command::Split {
                start: 0x1400_0002,
                len: 6,
                at: 3,
            },
            Command::SetEtr {
                start: 0x1400_0002,
                len: 3,
                etr: Etr::V4("203.0.113.9".parse().unwrap()),
            },
        ],
    );
    let note = loop {
        let (_, n2) = itr
            .recv_notification(Duration::from_secs(5))
            .unwrap()
            .expect("a notification after the split");
        if n2.entries.len() == 3 {
            break n2;
        }
    };
    let got: Vec<(u64, u64)> = note
        .entries
        .iter()
        .map(|e| (e.start - 0x1400_0000, e.len))
        .collect();
    assert_eq!(got, vec![(0, 2), (2, 3), (5, 3)]);
    assert_eq!(note.entries[1].etr, Etr::V4("203.0.113.9".parse().unwrap()));
    // The QSC got our acks (recv_notification acks each one).
    wait_until("the acks", Duration::from_secs(5), || {
        ivip::metrics::sample(
            &qsc.registry().render(),
            "ivip_qsc_notifications_acked_total",
        )
        .unwrap_or(0.0)
            >= 2.0
    });
    qsc.stop();
    q.stop().unwrap();
    let _ = std::fs::remove_dir_all(&n.dir);
}
