//! Whole-system tests of `ivip ruas` on real sockets and files (issue 4): SUMUCs
//! over HTTP become signed payloads on a UDP socket the test holds; bad input is
//! refused with nothing applied; SIGKILL loses no acknowledged change and never
//! reuses a sequence number; the quota holds and drops nothing; snapshots verify;
//! execute-at changes wait for their time.

mod common;
use common::wait_until;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ivip::daemon::Shutdown;
use ivip::http::Client;
use ivip::ruas::{Ruas, RuasConfig};
use ivip::sign::{Ed25519Verifier, KeyPair, Verifier};
use ivip::table::Table;
use ivip_wire::payload::{Payload, RecordView};
use ivip_wire::sumuc::Sumuc;
use ivip_wire::{Command, Etr, Mab, PayloadId};

const MAB: &str = "20.0.0.0/14";

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ivip-ruas-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup {
    dir: PathBuf,
    config: PathBuf,
    uas: KeyPair,
    ruas_key: KeyPair,
    udp: UdpSocket,
}

fn setup(name: &str, http: &str, extra: &str) -> Setup {
    let dir = tmpdir(name);
    let ruas_key = KeyPair::generate();
    ivip::keyfile::write_new(&dir.join("ruas.key"), &ruas_key).unwrap();
    let uas = KeyPair::generate();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let config = dir.join("ruas.toml");
    std::fs::write(
        &config,
        format!(
            "ruas_id = 7\nkey_file = \"ruas.key\"\ndata_dir = \"data\"\nhttp_listen = \"{http}\"\n\
             udp_bind = \"127.0.0.1:0\"\nreplicators = [\"{}\"]\nmabs = [\"{MAB}\", \"2001:db8::/32\"]\n\
             heartbeat_ms = 200\n{extra}\n\
             [[uas]]\nname = \"uas-y\"\npublic_key = \"{}\"\nranges = [\"20.1.0.0+65536\"]\n\
             [dtls]\ninsecure_plain_udp = true\n",
            udp.local_addr().unwrap(),
            ivip_wire::hex::encode(&uas.public())
        ),
    )
    .unwrap();
    Setup {
        dir,
        config,
        uas,
        ruas_key,
        udp,
    }
}

fn start(s: &Setup) -> Ruas {
    let cfg = RuasConfig::load(&s.config).unwrap_or_else(|e| panic!("{e}"));
    ivip::ruas::start(&cfg, Shutdown::new()).unwrap_or_else(|e| panic!("{e}"))
}

fn define(i: u64, last: u8) -> Command {
    Command::Define {
        start: 0x1401_0000 + 8 * i,
        len: 4,
        etr: Etr::V4(std::net::Ipv4Addr::new(192, 0, 2, last)),
    }
}

fn sumuc(key: &KeyPair, request_id: u64, commands: Vec<Command>, execute_at_us: u64) -> Vec<u8> {
    let s = Sumuc {
        signer: key.public(),
        request_id,
        timestamp_us: ivip::time::unix_now_us(),
        execute_at_us,
        mab: MAB.parse().unwrap(),
        origin: "test/user".into(),
        commands,
        signature: [0; 64],
    };
    let mut b = s.to_vec().unwrap();
    let n = b.len() - 64;
    let sig = key.sign(&b[..n]);
    b[n..].copy_from_slice(&sig);
    b
}

fn client() -> Client {
    Client {
        connect_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(10),
        body_max: 16 << 20,
    }
}

fn post(http: SocketAddr, body: &[u8]) -> (u16, serde_json::Value) {
    let r = client()
        .post(
            &format!("http://{http}/v1/sumuc"),
            "application/octet-stream",
            body,
        )
        .unwrap();
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, v)
}

fn mapping(http: SocketAddr, range: &str) -> serde_json::Value {
    let r = client()
        .get(&format!("http://{http}/v1/mapping?range={range}"))
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

/// Receives payloads on the test's UDP socket in the background (a test busy
/// posting must not let the socket's buffer overflow) and verifies each with the
/// RUAS key.
struct Collector {
    got: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Collector {
    fn new(udp: &UdpSocket, key: [u8; 32]) -> Collector {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, st, sock) = (got.clone(), stop.clone(), udp.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    let p = Payload::new_checked(&buf[..n]).expect("a well-formed payload");
                    Ed25519Verifier
                        .verify(&key, p.signed_bytes(), &p.signature())
                        .expect("signed by the RUAS");
                    g.lock().unwrap().push(buf[..n].to_vec());
                }
            }
        });
        Collector { got, stop }
    }

    /// Move what arrived so far into `out`.
    fn drain(&self, out: &mut Vec<Vec<u8>>) {
        out.append(&mut self.got.lock().unwrap());
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn sets_in(payloads: &[Vec<u8>]) -> Vec<u64> {
    payloads
        .iter()
        .flat_map(|b| {
            Payload::new_checked(b)
                .unwrap()
                .records()
                .filter_map(|r| match r {
                    RecordView::MabUpdate { mab_seq, .. } => Some(mab_seq),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn sumuc_accepted_over_http_comes_out_as_a_signed_payload_that_verifies() {
    let s = setup("accept", "127.0.0.1:0", "batch_window_ms = 0");
    let r = start(&s);
    let rx = Collector::new(&s.udp, s.ruas_key.public());
    let (status, v) = post(r.http_addr(), &sumuc(&s.uas, 1, vec![define(0, 1)], 0));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outcome"], "accepted");
    assert_eq!(v["mab_seq"], 1);
    assert_eq!(v["changed"][0]["start"], "20.1.0.0");
    assert_eq!(v["changed"][0]["etr"], "192.0.2.1");
    let mut got = Vec::new();
    wait_until("the payload with set 1", Duration::from_secs(5), || {
        rx.drain(&mut got);
        sets_in(&got).contains(&1)
    });
    let m = mapping(r.http_addr(), "20.1.0.0+8");
    assert_eq!(m["mab_seq"], 1);
    assert_eq!(m["micronets"][0]["len"], 4);
    // The same request again: the first outcome, nothing applied twice.
    let (status, again) = post(r.http_addr(), &sumuc(&s.uas, 1, vec![define(0, 1)], 0));
    assert_eq!(
        (status, again["mab_seq"].clone()),
        (200, serde_json::json!(1))
    );
    // A dry run changes nothing.
    let b = sumuc(&s.uas, 2, vec![define(1, 1)], 0);
    let resp = client()
        .post(
            &format!("http://{}/v1/sumuc?dry_run=1", r.http_addr()),
            "application/octet-stream",
            &b,
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(mapping(r.http_addr(), "20.1.0.0+8")["mab_seq"], 1);
    let metrics = client()
        .get(&format!("http://{}/metrics", r.http_addr()))
        .unwrap();
    let text = String::from_utf8(metrics.body).unwrap();
    assert_eq!(
        ivip::metrics::sample(&text, "ivip_ruas_accepted_total"),
        Some(2.0)
    );
    r.stop().unwrap();
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_nothing_applied() {
    let s = setup(
        "refuse",
        "127.0.0.1:0",
        "batch_window_ms = 0\nreplay_window_s = 60",
    );
    let r = start(&s);
    let _rx = Collector::new(&s.udp, s.ruas_key.public());
    let h = r.http_addr();
    let expect = |body: &[u8], status: u16, code: &str| {
        let (st, v) = post(h, body);
        assert_eq!(
            (st, v["error"].as_str().unwrap_or("")),
            (status, code),
            "{v}"
        );
        assert!(!v["detail"].as_str().unwrap_or("").is_empty());
    };
    expect(b"not a sumuc", 400, "malformed");
    expect(
        &sumuc(&KeyPair::generate(), 1, vec![define(0, 1)], 0),
        403,
        "unknown_signer",
    );
    let mut forged = sumuc(&s.uas, 2, vec![define(0, 1)], 0);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    expect(&forged, 403, "bad_signature");
    let outside = Command::Define {
        start: 0x1400_0000,
        len: 4,
        etr: Etr::V4("192.0.2.1".parse().unwrap()),
    };
    expect(
        &sumuc(&s.uas, 3, vec![define(0, 1), outside], 0),
        403,
        "not_delegated",
    );
    let zero_split = Command::Split {
        start: 0x1401_0000,
        len: 4,
        at: 1,
    };
    expect(
        &sumuc(&s.uas, 4, vec![define(0, 1), zero_split], 0),
        409,
        "invalid_commands",
    );
    let mut stale = Sumuc {
        signer: s.uas.public(),
        request_id: 5,
        timestamp_us: ivip::time::unix_now_us() - 120_000_000,
        execute_at_us: 0,
        mab: MAB.parse().unwrap(),
        origin: String::new(),
        commands: vec![define(0, 1)],
        signature: [0; 64],
    };
    let mut b = stale.to_vec().unwrap();
    let n = b.len() - 64;
    stale.signature = s.uas.sign(&b[..n]);
    b[n..].copy_from_slice(&stale.signature);
    expect(&b, 400, "stale");
    let big = vec![0u8; 70_000];
    let resp = client()
        .post(
            &format!("http://{h}/v1/sumuc"),
            "application/octet-stream",
            &big,
        )
        .unwrap();
    assert_eq!(resp.status, 413);
    assert_eq!(mapping(h, "20.1.0.0+8")["mab_seq"], 0, "nothing applied");
    let text =
        String::from_utf8(client().get(&format!("http://{h}/metrics")).unwrap().body).unwrap();
    for reason in [
        "malformed",
        "unknown_signer",
        "bad_signature",
        "not_delegated",
        "invalid_commands",
        "stale",
    ] {
        assert_eq!(
            ivip::metrics::sample(
                &text,
                &format!("ivip_ruas_rejected_total{{reason=\"{reason}\"}}")
            ),
            Some(1.0),
            "{reason}"
        );
    }
    r.stop().unwrap();
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn execute_at_is_released_at_its_time_and_not_before() {
    let s = setup("later", "127.0.0.1:0", "batch_window_ms = 0");
    let r = start(&s);
    let rx = Collector::new(&s.udp, s.ruas_key.public());
    let at = ivip::time::unix_now_us() + 1_500_000;
    let (status, v) = post(r.http_addr(), &sumuc(&s.uas, 9, vec![define(0, 1)], at));
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["outcome"], "scheduled");
    assert_eq!(mapping(r.http_addr(), "20.1.0.0+8")["mab_seq"], 0);
    wait_until("the scheduled set", Duration::from_secs(10), || {
        mapping(r.http_addr(), "20.1.0.0+8")["mab_seq"] == 1
    });
    assert!(
        ivip::time::unix_now_us() >= at,
        "applied no earlier than its time"
    );
    let mut got = Vec::new();
    wait_until("its payload", Duration::from_secs(5), || {
        rx.drain(&mut got);
        sets_in(&got).contains(&1)
    });
    r.stop().unwrap();
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn quota_holds_under_a_burst_and_drops_nothing() {
    // 1200 bytes per 100 ms: about one full payload per interval.
    let s = setup(
        "quota",
        "127.0.0.1:0",
        "batch_window_ms = 0\nquota_bytes = 1200\nquota_interval_ms = 100",
    );
    let r = start(&s);
    let rx = Collector::new(&s.udp, s.ruas_key.public());
    let n = 300u64;
    let t0 = Instant::now();
    for i in 0..n {
        let (status, v) = post(
            r.http_addr(),
            &sumuc(&s.uas, 100 + i, vec![define(i, 1)], 0),
        );
        assert_eq!(status, 200, "{v}");
    }
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        rx.drain(&mut got);
        let sets = sets_in(&got);
        let missing: Vec<u64> = (1..=n).filter(|k| !sets.contains(k)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "sets missing after 30 s: {} of {n} (first {:?}); {} payloads received",
            missing.len(),
            &missing[..missing.len().min(10)],
            got.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = t0.elapsed();
    let bytes: usize = got.iter().map(Vec::len).sum();
    // At 1200 bytes per 100 ms, `bytes` cannot go out faster than this.
    let floor = Duration::from_millis(100 * (bytes as u64 / 1200).saturating_sub(2));
    assert!(
        elapsed >= floor,
        "{bytes} bytes in {elapsed:?}; the quota allows no less than {floor:?}"
    );
    let mut sets = sets_in(&got);
    sets.sort_unstable();
    sets.dedup();
    assert_eq!(sets, (1..=n).collect::<Vec<_>>(), "nothing dropped");
    r.stop().unwrap();
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn snapshot_over_http_verifies_and_matches_the_master_hash() {
    let s = setup(
        "snapshot",
        "127.0.0.1:0",
        "batch_window_ms = 0\nsnapshot_interval_s = 1",
    );
    let r = start(&s);
    let rx = Collector::new(&s.udp, s.ruas_key.public());
    for i in 0..5 {
        let (st, v) = post(r.http_addr(), &sumuc(&s.uas, 50 + i, vec![define(i, 2)], 0));
        assert_eq!(st, 200, "{v}");
    }
    let mab: Mab = MAB.parse().unwrap();
    // Wait for a snapshot that reflects all five sets, and its announcement.
    let mut got = Vec::new();
    let mut announced: HashMap<u64, [u8; 32]> = HashMap::new();
    let mut file = Vec::new();
    wait_until("a snapshot at sequence 5", Duration::from_secs(10), || {
        rx.drain(&mut got);
        for b in &got {
            for rec in Payload::new_checked(b).unwrap().records() {
                if let RecordView::Snapshot(a) = rec
                    && a.mab == mab
                {
                    announced.insert(a.mab_seq, a.sha256);
                }
            }
        }
        let resp = client()
            .get(&format!(
                "http://{}/v1/snapshots/latest?mab=20.0.0.0/14",
                r.http_addr()
            ))
            .unwrap();
        if resp.status != 200 {
            return false;
        }
        file = resp.body;
        let seq = Table::load_snapshot(&file, &Ed25519Verifier, &s.ruas_key.public(), Some(mab))
            .map(|(t, _)| t.mab_seq())
            .unwrap_or(0);
        seq == 5 && announced.contains_key(&5)
    });
    let (t, meta) =
        Table::load_snapshot(&file, &Ed25519Verifier, &s.ruas_key.public(), Some(mab)).unwrap();
    assert_eq!(t.hash(), announced[&5], "file and stream agree");
    assert_eq!(t.micronets(), 5);
    assert_eq!(meta.ruas.get(), 7);
    // A wrong key is refused.
    assert!(Table::load_snapshot(&file, &Ed25519Verifier, &s.uas.public(), Some(mab)).is_err());
    r.stop().unwrap();
    std::fs::remove_dir_all(&s.dir).unwrap();
}

fn spawn_child(config: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_ivip"))
        .args(["ruas", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn sigkill_loses_no_acknowledged_sumuc_and_never_reuses_a_sequence_number() {
    let port = free_port();
    let http: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let s = setup("sigkill", &http.to_string(), "batch_window_ms = 20");
    let rx = Collector::new(&s.udp, s.ruas_key.public());
    let mut child = spawn_child(&s.config);
    wait_until("the RUAS to listen", Duration::from_secs(20), || {
        client().get(&format!("http://{http}/metrics")).is_ok()
    });
    let uas = s.uas.clone();
    // A client posting as fast as it can; it records every acknowledged set.
    let poster = std::thread::spawn(move || {
        let mut acked: Vec<(u64, u64)> = Vec::new();
        for i in 0..100_000u64 {
            let body = sumuc(&uas, 1000 + i, vec![define(i, 3)], 0);
            match client().post(
                &format!("http://{http}/v1/sumuc"),
                "application/octet-stream",
                &body,
            ) {
                Ok(r) if r.status == 200 => {
                    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                    acked.push((i, v["mab_seq"].as_u64().unwrap()));
                }
                _ => break,
            }
        }
        acked
    });
    let mut before = Vec::new();
    wait_until("some traffic", Duration::from_secs(20), || {
        rx.drain(&mut before);
        sets_in(&before).len() > 30
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acked = poster.join().unwrap();
    assert!(!acked.is_empty());
    rx.drain(&mut before);

    let mut child = spawn_child(&s.config);
    wait_until("the RUAS to come back", Duration::from_secs(20), || {
        client().get(&format!("http://{http}/metrics")).is_ok()
    });
    // Every acknowledged set is in the master, with the sequence it was given.
    let m = mapping(http, &format!("20.1.0.0+{}", 8 * (acked.len() as u64 + 1)));
    let max_acked = acked.iter().map(|a| a.1).max().unwrap();
    assert!(m["mab_seq"].as_u64().unwrap() >= max_acked);
    let nets = m["micronets"].as_array().unwrap();
    for (i, _) in &acked {
        let start = std::net::Ipv4Addr::from(0x1401_0000 + 8 * *i as u32).to_string();
        assert!(
            nets.iter().any(|n| n["start"] == start.as_str()),
            "acknowledged set {i} lost"
        );
    }
    // And every one reaches the wire, before or after the crash.
    let mut after = Vec::new();
    wait_until(
        "every acknowledged set on the wire",
        Duration::from_secs(20),
        || {
            rx.drain(&mut after);
            let mut all = sets_in(&before);
            all.extend(sets_in(&after));
            acked.iter().all(|(_, seq)| all.contains(seq))
        },
    );
    // No identity was ever used for two different payloads.
    let mut seen: HashMap<PayloadId, Vec<u8>> = HashMap::new();
    for b in before.iter().chain(after.iter()) {
        let id = Payload::new_checked(b).unwrap().id();
        if let Some(prev) = seen.insert(id, b.clone()) {
            assert_eq!(
                &prev, b,
                "payload identity {id} reused for different content"
            );
        }
    }
    let last_before = before
        .iter()
        .map(|b| Payload::new_checked(b).unwrap().id().seq.0)
        .max()
        .unwrap();
    let first_new_after = after
        .iter()
        .map(|b| Payload::new_checked(b).unwrap().id())
        .filter(|id| {
            !seen.get(id).is_some_and(|_| {
                before
                    .iter()
                    .any(|x| Payload::new_checked(x).unwrap().id() == *id)
            })
        })
        .map(|id| id.seq.0)
        .min();
    if let Some(f) = first_new_after {
        assert!(
            f > last_before,
            "the sequence continues after the crash ({f} after {last_before})"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&s.dir).unwrap();
}
