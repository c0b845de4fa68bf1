//! `cargo bench --bench ruas`: how many SUMUCs a RUAS accepts per second over HTTP
//! with its WAL fsynced, and how long from the HTTP request to the payload on the
//! wire (issue 4).
//!
//! Figures (one JSON line each):
//! * `sumuc_accepted_per_s` — accepted SUMUCs per second, many clients at once
//!   (group commit: many SUMUCs share one fsync), with `batch_window_us`, `clients`
//!   and `slowest_request_ms`.
//! * `accept_to_wire_p50_us`, `accept_to_wire_p99_us` — from just before the POST
//!   to the arrival of the payload carrying the set on a UDP socket standing in for
//!   a level-0 replicator, at a steady moderate rate, for each `batch_window_us`.
//! * `wal_commit_mean_us` — the mean fsync'd commit, from the RUAS's own metrics.
//!
//! Everything runs on this machine's loopback: the clients, the RUAS and the
//! receiver share its two cores. `IVIP_BENCH_QUICK=1` runs short phases.
//! Inputs are seeded (request ids and ranges are counters).

#[path = "common/mod.rs"]
mod common;
use common::{figure, quick};

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ivip::daemon::Shutdown;
use ivip::ruas::RuasConfig;
use ivip::sign::KeyPair;
use ivip_wire::payload::{Payload, RecordView};
use ivip_wire::sumuc::Sumuc;
use ivip_wire::{Command, Etr};

struct Bench {
    dir: std::path::PathBuf,
    ruas: ivip::ruas::Ruas,
    uas: KeyPair,
    sets_seen: Arc<Mutex<HashMap<u64, Instant>>>,
    stop: Arc<AtomicBool>,
}

fn start(batch_window_ms: u64, tag: &str) -> Bench {
    let dir = std::env::temp_dir().join(format!("ivip-bench-ruas-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ivip::keyfile::write_new(&dir.join("ruas.key"), &KeyPair::generate()).unwrap();
    let uas = KeyPair::generate();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let config = dir.join("ruas.toml");
    std::fs::write(
        &config,
        format!(
            "ruas_id = 1\nkey_file = \"ruas.key\"\ndata_dir = \"data\"\nhttp_listen = \"127.0.0.1:0\"\n\
             replicators = [\"{}\"]\nmabs = [\"20.0.0.0/8\"]\nbatch_window_ms = {batch_window_ms}\n\
             snapshot_interval_s = 3600\n\
             [[uas]]\nname = \"bench\"\npublic_key = \"{}\"\nranges = [\"20.0.0.0+16777216\"]\n\
             [dtls]\ninsecure_plain_udp = true\n",
            udp.local_addr().unwrap(),
            ivip_wire::hex::encode(&uas.public())
        ),
    )
    .unwrap();
    let cfg = RuasConfig::load(&config).unwrap();
    let ruas = ivip::ruas::start(&cfg, Shutdown::new()).unwrap();
    let sets_seen = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, st) = (sets_seen.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !st.load(Ordering::Relaxed) {
            if let Ok((n, _)) = udp.recv_from(&mut buf) {
                let t = Instant::now();
                if let Ok(p) = Payload::new_checked(&buf[..n]) {
                    let mut m = seen.lock().unwrap();
                    for r in p.records() {
                        if let RecordView::MabUpdate { mab_seq, .. } = r {
                            m.entry(mab_seq).or_insert(t);
                        }
                    }
                }
            }
        }
    });
    Bench {
        dir,
        ruas,
        uas,
        sets_seen,
        stop,
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sumuc(key: &KeyPair, i: u64) -> Vec<u8> {
    let s = Sumuc {
        signer: key.public(),
        request_id: i,
        timestamp_us: ivip::time::unix_now_us(),
        execute_at_us: 0,
        mab: "20.0.0.0/8".parse().unwrap(),
        origin: "bench".into(),
        commands: vec![Command::Define {
            start: 0x1400_0000 + 2 * i,
            len: 1,
            etr: Etr::V4("192.0.2.1".parse().unwrap()),
        }],
        signature: [0; 64],
    };
    let mut b = s.to_vec().unwrap();
    let n = b.len() - 64;
    let sig = key.sign(&b[..n]);
    b[n..].copy_from_slice(&sig);
    b
}

/// The slowest request of a throughput phase, microseconds (a kept connection the
/// server queued shows here: src/uas/upstream.rs).
static SLOWEST_US: AtomicU64 = AtomicU64::new(0);

fn post(http: SocketAddr, body: &[u8]) -> Option<u64> {
    thread_local! {
        // Keep-alive, as a UAS talks to its parent (ivip::uas::upstream).
        static CLIENTS: std::cell::RefCell<HashMap<SocketAddr, ivip::uas::upstream::HttpClient>> =
            std::cell::RefCell::new(HashMap::new());
    }
    let t = Instant::now();
    let r = CLIENTS.with(|c| {
        let mut c = c.borrow_mut();
        let cl = c.entry(http).or_insert_with(|| {
            ivip::uas::upstream::HttpClient::new(&format!("http://{http}"), Duration::from_secs(30))
                .unwrap()
                .with_keep_alive(ivip::uas::upstream::KeepAlive::default())
        });
        cl.request(
            "POST",
            "/v1/sumuc",
            &[("Content-Type", "application/octet-stream")],
            body,
        )
    });
    SLOWEST_US.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
    let r = r.ok()?;
    if r.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    v["mab_seq"].as_u64()
}

fn throughput(batch_window_ms: u64, clients: usize, secs: f64) {
    let b = start(batch_window_ms, "tput");
    let http = b.ruas.http_addr();
    // Pre-sign outside the timed part: signing is the UAS's cost, not the RUAS's.
    let next = Arc::new(AtomicU64::new(0));
    let per_client = if quick() { 400 } else { 4000 };
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..(clients * per_client) as u64)
            .map(|i| sumuc(&b.uas, i))
            .collect(),
    );
    let done = Arc::new(AtomicU64::new(0));
    SLOWEST_US.store(0, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (next, done, bodies) = (next.clone(), done.clone(), bodies.clone());
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(body) = bodies.get(i) else { break };
                    if post(http, body).is_some() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let el = t0.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    figure(
        "sumuc_accepted_per_s",
        n as f64 / el,
        "sumucs/s",
        &[
            ("batch_window_us", (batch_window_ms * 1000).to_string()),
            ("clients", clients.to_string()),
            ("accepted", n.to_string()),
            (
                "slowest_request_ms",
                format!("{:.1}", SLOWEST_US.load(Ordering::Relaxed) as f64 / 1e3),
            ),
        ],
    );
    let text = b.ruas.registry().render();
    let commits = ivip::metrics::sample(&text, "ivip_ruas_wal_commits_total").unwrap_or(0.0);
    let us = ivip::metrics::sample(&text, "ivip_ruas_wal_commit_microseconds_total").unwrap_or(0.0);
    if commits > 0.0 {
        figure(
            "wal_commit_mean_us",
            us / commits,
            "us",
            &[("sumucs_per_commit", format!("{:.1}", n as f64 / commits))],
        );
    }
}

fn latency(batch_window_ms: u64, rate_per_s: u64, count: u64) {
    let b = start(batch_window_ms, "lat");
    let http = b.ruas.http_addr();
    let bodies: Vec<Vec<u8>> = (0..count).map(|i| sumuc(&b.uas, i)).collect();
    let gap = Duration::from_secs_f64(1.0 / rate_per_s as f64);
    let mut sent: Vec<(u64, Instant)> = Vec::new();
    let t0 = Instant::now();
    for (i, body) in bodies.iter().enumerate() {
        let due = t0 + gap * i as u32;
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let t = Instant::now();
        if let Some(seq) = post(http, body) {
            sent.push((seq, t));
        }
    }
    let end = Instant::now() + Duration::from_secs(5);
    let mut lat: Vec<f64> = Vec::new();
    while Instant::now() < end {
        let seen = b.sets_seen.lock().unwrap();
        if sent.iter().all(|(s, _)| seen.contains_key(s)) {
            lat = sent
                .iter()
                .map(|(s, t)| seen[s].duration_since(*t).as_secs_f64() * 1e6)
                .collect();
            break;
        }
        drop(seen);
        std::thread::sleep(Duration::from_millis(20));
    }
    lat.sort_by(f64::total_cmp);
    if lat.is_empty() {
        eprintln!("latency phase: not every set reached the wire in time");
        return;
    }
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    let params = [
        ("batch_window_us", (batch_window_ms * 1000).to_string()),
        ("rate_per_s", rate_per_s.to_string()),
        ("samples", lat.len().to_string()),
    ];
    figure("accept_to_wire_p50_us", pct(0.50), "us", &params);
    figure("accept_to_wire_p99_us", pct(0.99), "us", &params);
}

fn main() {
    let secs = if quick() { 2.0 } else { 8.0 };
    throughput(0, 16, secs);
    throughput(0, 64, secs);
    throughput(100, 64, secs);
    let n = if quick() { 100 } else { 600 };
    latency(0, 200, n);
    latency(100, 200, n);
}
