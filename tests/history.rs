//! Whole-system tests of the history recorder (seed s2.1; spec: history.md): real
//! files, real HTTP, a recorder child process killed with SIGKILL.

mod common;
use common::fake_upstream::FakeUpstream;
use common::{serial, wait_until};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ivip::daemon::Shutdown;
use ivip::history::query::{self, MappingState};
use ivip::history::workload::{Model, ModelChange, Workload};
use ivip::history::{Store, StoreConfig};
use ivip::http::HttpServer;
use ivip::http::server::{Request, Response, ServerConfig};
use ivip::rng::Rng;
use ivip::sign::KeyPair;
use ivip::table::Table;
use ivip_wire::history::HistoryRecord;
use ivip_wire::payload::{Payload, RecordView};
use ivip_wire::snapshot::StreamPosition;
use ivip_wire::{Family, Mab, RuasId};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ivip-history-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn small_segments() -> StoreConfig {
    StoreConfig {
        segment_bytes_max: 64 << 10,
        block_shift: 9,
        ..StoreConfig::default()
    }
}

/// Record `payloads` payloads of a seeded workload; returns the model.
fn record(store: &mut Store, w: &mut Workload, payloads: usize) -> Model {
    let mut model = Model::new();
    for b in w.baselines(w.now_us()) {
        model.add_baseline(&b);
        store.append(&b).unwrap();
    }
    store.commit().unwrap();
    for i in 0..payloads {
        let (rec, changes) = w.next_payload(1 + i % 6);
        store.append(&rec).unwrap();
        model.add(&changes);
        if i % 7 == 0 {
            store.commit().unwrap();
        }
    }
    store.commit().unwrap();
    model
}

fn state_of(m: &query::Mapping) -> (Option<u64>, Option<u64>, MappingState) {
    (m.since_us, m.until_us, m.state)
}

/// Compare `n` random (address, window) searches with the model.
fn check_against_model(
    store: &Store,
    model: &Model,
    mabs: &[Mab],
    t0: u64,
    t1: u64,
    n: usize,
    seed: u64,
) {
    let r = store.reader();
    let mut rng = Rng::seeded(seed);
    for q in 0..n {
        let mab = mabs[rng.below(mabs.len() as u64) as usize];
        let unit = mab.start() + rng.below(mab.len());
        let span = t1 - t0 + 2_000_000;
        let a = t0 - 1_000_000 + rng.below(span);
        let b = if rng.chance(0.2) {
            a
        } else {
            a + rng.below(span / 2)
        };
        let addr = IpAddr::V4(Ipv4Addr::from(unit as u32));
        let got = query::address_history(&r, addr, a, b).unwrap();
        let want = model.history(Family::V4, unit, a, b);
        let got_states: Vec<_> = got.mappings.iter().map(state_of).collect();
        assert_eq!(
            got_states, want,
            "query {q}: {addr} from {a} to {b} (seed {seed})"
        );
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
        // Every known mapping names who set it.
        for m in &got.mappings {
            if m.state != MappingState::Unknown {
                assert!(m.provenance.ruas().is_some() && m.at.is_some() && m.mab == Some(mab));
            }
        }
    }
}

#[test]
fn search_answers_agree_with_a_reference_model_of_random_changes() {
    let d = tmp("model");
    let mabs: Vec<Mab> = vec![
        "20.0.0.0/18".parse().unwrap(),
        "30.1.0.0/20".parse().unwrap(),
    ];
    let t0 = 1_764_000_000_000_000u64;
    let mut w = Workload::new(11, &mabs, 600, 12, t0, 250_000);
    let (mut store, _) = Store::open(&d, small_segments()).unwrap();
    let model = record(&mut store, &mut w, 3_000);
    let t1 = w.now_us();
    let sealed: u32 = store
        .reader()
        .view(|_, runs| {
            runs.iter()
                .map(|r| r.last_segment() - r.first_segment() + 1)
                .sum()
        })
        .0;
    assert!(
        sealed >= 9,
        "the stream spans sealed segments and the active one ({sealed})"
    );
    check_against_model(&store, &model, &mabs, t0, t1, 400, 1);
    // Index files merge eight at a time (history.md §4.3); answers do not change.
    store.merge_now().unwrap();
    let files = store.reader().view(|_, runs| runs.len()).0;
    assert!(
        files < sealed as usize,
        "{files} index files for {sealed} segments"
    );
    assert!(
        store
            .reader()
            .view(|_, runs| runs.iter().any(|r| r.last_segment() > r.first_segment()))
            .0
    );
    check_against_model(&store, &model, &mabs, t0, t1, 200, 3);
    // Micronets that were split and joined are answered too: look at addresses
    // that changed most.
    drop(store);
    let (store, rep) = Store::open(&d, small_segments()).unwrap();
    assert!(rep.damage.is_empty() && rep.torn_bytes == 0, "{rep:?}");
    check_against_model(&store, &model, &mabs, t0, t1, 200, 2);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_mab_audit_lists_every_change_of_the_mab_in_order_with_paging() {
    let d = tmp("audit");
    let mabs: Vec<Mab> = vec![
        "20.0.0.0/18".parse().unwrap(),
        "30.1.0.0/20".parse().unwrap(),
    ];
    let t0 = 1_764_000_000_000_000u64;
    let mut w = Workload::new(12, &mabs, 300, 8, t0, 100_000);
    let (mut store, _) = Store::open(&d, small_segments()).unwrap();
    let mut all = Vec::new();
    store.append(&w.baselines(t0)[0]).unwrap();
    for i in 0..800 {
        let (rec, changes) = w.next_payload(1 + i % 4);
        store.append(&rec).unwrap();
        all.extend(changes);
    }
    store.commit().unwrap();
    let r = store.reader();
    let (from, to) = (t0 + 20_000_000, t0 + 60_000_000);
    let want: Vec<(u64, u64)> = all
        .iter()
        .filter(|c| c.mab == mabs[1] && c.time_us >= from && c.time_us <= to)
        .map(|c| (c.mab_seq, c.time_us))
        .collect();
    let mut got = Vec::new();
    let mut after = None;
    for _ in 0..100 {
        let page = query::mab_changes(&r, mabs[1], from, to, after, 25).unwrap();
        for c in &page.changes {
            if let query::MabEvent::Set { mab_seq, .. } = c.event {
                got.push((mab_seq, c.time_us));
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert!(!want.is_empty());
    assert_eq!(got, want);
    assert!(matches!(
        query::mab_changes(&r, mabs[1], to, from, None, 10),
        Err(query::QueryError::BadWindow { .. })
    ));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_corrupted_segment_is_reported_with_its_location_and_does_not_hide_the_others() {
    let d = tmp("corrupt");
    let mabs: Vec<Mab> = vec!["20.0.0.0/18".parse().unwrap()];
    let t0 = 1_764_000_000_000_000u64;
    let mut w = Workload::new(13, &mabs, 400, 8, t0, 250_000);
    let model;
    {
        let (mut store, _) = Store::open(&d, small_segments()).unwrap();
        model = record(&mut store, &mut w, 2_000);
    }
    let t1 = w.now_us();
    // Damage segment 2 in the middle.
    let seg = d.join("segments").join(format!("{:020}.log", 2));
    let mut b = std::fs::read(&seg).unwrap();
    let at = b.len() / 2;
    for x in &mut b[at..at + 64] {
        *x ^= 0x5a;
    }
    std::fs::write(&seg, &b).unwrap();
    let (store, rep) = Store::open(&d, small_segments()).unwrap();
    assert_eq!(rep.damage.len(), 1, "{rep:?}");
    let dmg = &rep.damage[0];
    assert_eq!(dmg.segment, 2);
    assert!(dmg.offset <= at as u64 && at as u64 <= dmg.offset + dmg.len);
    assert!(
        dmg.to_string().contains("00000000000000000002.log"),
        "{dmg}"
    );
    // Searches whose records lie in the other segments answer exactly as before;
    // the status names the damage.
    let r = store.reader();
    assert_eq!(r.status().damage.len(), 1);
    let seg2 = r
        .view(|_, runs| {
            runs.iter()
                .flat_map(|x| x.segments().to_vec())
                .find(|s| s.segment == 2)
        })
        .0
        .unwrap();
    let mut rng = Rng::seeded(3);
    let mut checked = 0;
    for _ in 0..300 {
        let unit = mabs[0].start() + rng.below(mabs[0].len());
        let a = seg2.time_max_us + 1 + rng.below(t1 - seg2.time_max_us);
        let b = a + rng.below(t1 - a + 1);
        let got =
            query::address_history(&r, IpAddr::V4(Ipv4Addr::from(unit as u32)), a, b).unwrap();
        let want = model.history(Family::V4, unit, a, b);
        // Unless the state at `a` was set by a record in the damaged stretch, the
        // answer is exactly the model's.
        let in_seg2 = want[0]
            .0
            .is_some_and(|s| s >= seg2.time_min_us && s <= seg2.time_max_us);
        if !in_seg2 {
            let states: Vec<_> = got.mappings.iter().map(state_of).collect();
            assert_eq!(states, want);
            checked += 1;
        }
        assert!(
            got.warnings
                .iter()
                .any(|w| w.contains("00000000000000000002.log"))
        );
    }
    assert!(checked > 50, "{checked}");
    std::fs::remove_dir_all(&d).unwrap();
}

// ===========================================================================
// The recorder as a whole: feeds, a peer MPS, a RUAS's snapshots
// ===========================================================================

const RUAS_SEED: [u8; 32] = [0x5a; 32];
const T0: u64 = 1_764_000_000_000_000;

/// A RUAS's snapshot files for the workload's initial layouts, with the stream
/// position of the first payload, served as a RUAS serves them (http.md, RUAS).
fn snapshot_server(w: &Workload, key: &KeyPair) -> (HttpServer, Vec<(Mab, Table)>) {
    let mut files: Vec<(Mab, String, Vec<u8>)> = Vec::new();
    let mut tables = Vec::new();
    let mut nets: std::collections::BTreeMap<Mab, Vec<(u64, u64, ivip_wire::Etr)>> =
        Default::default();
    for b in w.baselines(T0) {
        if let HistoryRecord::Baseline(b) = b {
            nets.entry(b.mab)
                .or_default()
                .extend_from_slice(&b.micronets);
        }
    }
    for (mab, n) in nets {
        let mut t = ivip::history::ingest::table_from(mab, 0, &n).unwrap();
        t.publish();
        let pos = StreamPosition { epoch: 1, seq: 1 };
        let bytes = t.reader().load_owned().write_snapshot_with(
            key,
            RuasId::new(5).unwrap(),
            w.now_us(),
            &pos.to_record(),
        );
        let name = ivip_wire::snapshot::Snapshot::new_checked(&bytes)
            .unwrap()
            .meta()
            .name()
            .to_string();
        files.push((mab, name, bytes));
        tables.push((mab, t));
    }
    let files = Arc::new(files);
    let handler: ivip::http::server::Handler = Arc::new(move |r: &Request| {
        match r.segments().as_slice() {
            ["v1", "snapshots"] => {
                let list: Vec<serde_json::Value> = files
                    .iter()
                    .map(|(m, n, b)| serde_json::json!({"name": n, "mab": m.to_string(), "mab_seq": 0, "bytes": b.len()}))
                    .collect();
                Response::new(200, "application/json", serde_json::to_vec(&list).unwrap())
            }
            ["v1", "snapshots", "latest"] => {
                let want = r.query_param("mab").unwrap_or("");
                match files.iter().find(|(m, _, _)| m.to_string() == want) {
                    Some((_, n, b)) => Response::new(200, "application/octet-stream", b.clone())
                        .with_header("Ivip-Snapshot-Name", n),
                    None => Response::not_found("no such MAB"),
                }
            }
            _ => Response::not_found("no such resource"),
        }
    });
    let s = HttpServer::spawn(
        "127.0.0.1:0".parse().unwrap(),
        "test-snapshots",
        ServerConfig::default(),
        Shutdown::new(),
        handler,
    )
    .unwrap();
    (s, tables)
}

/// The workload's next payload, signed with `key`, and what it changes.
fn signed_payload(w: &mut Workload, key: &KeyPair) -> (Vec<u8>, Vec<ModelChange>) {
    let (rec, changes) = w.next_payload(3);
    let HistoryRecord::Payload(p) = rec else {
        unreachable!()
    };
    let mut b = p.payload;
    let n = b.len() - 64;
    let sig = key.sign(&b[..n]);
    b[n..].copy_from_slice(&sig);
    (b, changes)
}

fn mps_for(u: [&FakeUpstream; 2], key: &KeyPair) -> ivip::mps::Mps {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
         [[ruas]]\nid = 5\npublic_key = \"{}\"\n\
         [[feed]]\naddress = \"{}\"\n[[feed]]\naddress = \"{}\"\n\
         [dtls]\ninsecure_plain_udp = true\n",
        ivip_wire::hex::encode(&key.public()),
        u[0].addr(),
        u[1].addr()
    );
    let p = Path::new("test-mps.toml");
    let s = ivip::config::parse::<ivip::mps::MpsConfig>(p, &text)
        .and_then(|c| c.check(p))
        .unwrap_or_else(|e| panic!("{e}"));
    ivip::mps::start(&s, Shutdown::new()).unwrap()
}

fn history_toml(
    dir: &Path,
    u: [&FakeUpstream; 2],
    key: &KeyPair,
    snapshots: &str,
    peer: &str,
) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\ndir = {:?}\npeers = [\"{peer}\"]\n\
         [[ruas]]\nid = 5\npublic_key = \"{}\"\nsnapshots = \"{snapshots}\"\n\
         [[feed]]\naddress = \"{}\"\n[[feed]]\naddress = \"{}\"\n\
         [store]\nsegment_bytes = 1048576\n\
         [repair]\ngrace_ms = 50\nretry_ms = 200\ngive_up_s = 20\nsnapshot_wait_s = 10\n\
         [dtls]\ninsecure_plain_udp = true\n",
        dir.display(),
        ivip_wire::hex::encode(&key.public()),
        u[0].addr(),
        u[1].addr()
    )
}

fn next_seq(status: &serde_json::Value) -> u64 {
    status["ingest"]["ruas"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|r| r["next_seq"].as_u64())
        .unwrap_or(0)
}

/// Every payload record's sequence number, in record order.
fn recorded_seqs(r: &ivip::history::StoreReader) -> Vec<u32> {
    let mut v = Vec::new();
    r.replay(0, |_, rec| {
        if let HistoryRecord::Payload(p) = rec {
            v.push(Payload::new_checked(&p.payload).unwrap().id().seq.0);
        }
    })
    .unwrap();
    v
}

/// issue 10: "every payload's signature verified before it is recorded; gaps
/// repaired from MPSes; boot from snapshots"; "malformed or forged payloads are
/// never recorded"; the search answers agree with a model; bad queries get 400.
#[test]
fn recorder_boots_from_snapshots_records_only_verified_payloads_and_repairs_gaps_from_an_mps() {
    let _g = serial();
    let d = tmp("recorder");
    let key = KeyPair::from_seed(&RUAS_SEED);
    let mabs: Vec<Mab> = vec![
        "20.0.0.0/20".parse().unwrap(),
        "30.1.0.0/22".parse().unwrap(),
    ];
    let mut w = Workload::new(21, &mabs, 300, 8, T0, 50_000);
    let (snaps, mut ruas_tables) = snapshot_server(&w, &key);
    let (u1, u2) = (FakeUpstream::start(5000), FakeUpstream::start(5000));
    let mps = mps_for([&u1, &u2], &key);
    let text = history_toml(
        &d,
        [&u1, &u2],
        &key,
        &format!("http://{}", snaps.local_addr()),
        &format!("http://{}", mps.http_addr()),
    );
    let p = Path::new("test-history.toml");
    let settings = ivip::config::parse::<ivip::history::config::HistoryConfig>(p, &text)
        .and_then(|c| c.check(p))
        .unwrap_or_else(|e| panic!("{e}"));
    let rec = ivip::history::driver::start(&settings, Shutdown::new()).unwrap();
    let feed = rec.local_addr();
    wait_until(
        "the MPS and the recorder to subscribe",
        Duration::from_secs(5),
        || u1.subscribers().len() == 2 && u2.subscribers().len() == 2,
    );
    let mut model = Model::new();
    for b in w.baselines(T0) {
        model.add_baseline(&b);
    }
    let n = 400u32;
    let mut sent = Vec::new();
    for i in 1..=n {
        let (bytes, changes) = signed_payload(&mut w, &key);
        // The RUAS's own copy of each layout applies the same sets: the changes
        // the workload claims are the engine's.
        let pl = Payload::new_checked(&bytes).unwrap();
        for r in pl.records() {
            if let RecordView::MabUpdate {
                mab,
                mab_seq,
                commands,
            } = r
            {
                let t = &mut ruas_tables.iter_mut().find(|(m, _)| *m == mab).unwrap().1;
                let cmds: Vec<_> = commands.iter().collect();
                let ch = t.apply_at(mab_seq, &cmds).unwrap();
                let want = changes
                    .iter()
                    .find(|c| c.mab == mab && c.mab_seq == mab_seq)
                    .unwrap();
                let got: Vec<(u64, u64, Option<ivip_wire::Etr>)> =
                    ch.iter().map(|c| (c.start, c.len, c.etr)).collect();
                let exp: Vec<(u64, u64, Option<ivip_wire::Etr>)> = want
                    .ranges
                    .iter()
                    .map(|c| (c.start, c.len, c.etr))
                    .collect();
                assert_eq!(got, exp, "set {mab_seq} of {mab}");
            }
        }
        model.add(&changes);
        // The recorder's feeds lose 101..=130; the MPS gets everything.
        let skip: &[SocketAddr] = if (101..=130).contains(&i) {
            &[feed]
        } else {
            &[]
        };
        if i == 200 {
            // A forgery of 200 first (a valid payload with one byte changed),
            // and garbage: neither is ever recorded.
            let mut forged = bytes.clone();
            forged[40] ^= 0x01;
            u1.send_except(&forged, &[]);
            u1.send_except(b"\x01\x01 not a payload", &[]);
        }
        u1.send_except(&bytes, skip);
        u2.send_except(&bytes, skip);
        sent.push(bytes);
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let http = ivip::http::Client::default();
    let base = format!("http://{}", rec.http_addr());
    wait_until(
        "the recorder to record all payloads",
        Duration::from_secs(30),
        || {
            rec.status()
                .ruas
                .first()
                .is_some_and(|r| r.next_seq == n + 1)
        },
    );
    let r = rec.reader().clone();
    assert_eq!(
        recorded_seqs(&r),
        (1..=n).collect::<Vec<_>>(),
        "each payload once, in order"
    );
    // Exactly the bytes the RUAS signed; the forgery is nowhere.
    let mut i = 0;
    r.replay(0, |_, rec| {
        if let HistoryRecord::Payload(p) = rec {
            assert_eq!(p.payload, sent[i]);
            i += 1;
        }
    })
    .unwrap();
    let metrics = rec.registry().render();
    assert_eq!(
        ivip::metrics::sample(&metrics, "ivip_mps_dropped_total{reason=\"bad_signature\"}"),
        Some(1.0)
    );
    // Searches over HTTP agree with the model.
    let t1 = w.now_us();
    let mut rng = Rng::seeded(9);
    for _ in 0..150 {
        let mab = mabs[rng.below(2) as usize];
        let unit = mab.start() + rng.below(mab.len());
        let a = T0 + rng.below(t1 - T0);
        let b = a + rng.below(t1 - a + 1);
        let addr = Ipv4Addr::from(unit as u32);
        let got = http
            .get(&format!("{base}/v1/history?address={addr}&from={a}&to={b}"))
            .unwrap();
        assert_eq!(got.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        let lib = query::address_history(&r, IpAddr::V4(addr), a, b).unwrap();
        assert_eq!(v, lib.to_json());
        let states: Vec<_> = lib.mappings.iter().map(state_of).collect();
        assert_eq!(
            states,
            model.history(Family::V4, unit, a, b),
            "{addr} {a}..{b}"
        );
    }
    // The recorder's layouts are the RUAS's.
    for (mab, t) in &ruas_tables {
        let st = rec.status();
        let seq = st
            .mabs
            .iter()
            .find(|(m, _)| *m == mab.to_string())
            .unwrap()
            .1;
        assert_eq!(seq, Some(t.mab_seq()));
    }
    // Evidence: the payload behind a change, byte for byte.
    let any = query::address_history(
        &r,
        IpAddr::V4(Ipv4Addr::from(mabs[0].start() as u32)),
        T0,
        t1,
    )
    .unwrap();
    if let Some(m) = any
        .mappings
        .iter()
        .find(|m| matches!(m.provenance, query::Provenance::Change { .. }))
    {
        let at = m.at.unwrap();
        let e = http
            .get(&format!(
                "{base}/v1/history/payload?record={}:{}",
                at.segment, at.offset
            ))
            .unwrap();
        assert_eq!(e.status, 200);
        assert!(sent.contains(&e.body));
    }
    // The baseline's signed snapshot file is kept and served.
    let names: Vec<String> = std::fs::read_dir(d.join("baselines"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let f = http
        .get(&format!("{base}/v1/history/baselines/{}", names[0]))
        .unwrap();
    assert_eq!(f.status, 200);
    // Bad queries: 400 with the reason.
    for (q, code) in [
        ("/v1/history?address=20.0.0.999", "bad_address"),
        ("/v1/history?address=20.0.0.1&from=10&to=5", "bad_window"),
        ("/v1/history?address=20.0.0.1&from=noon", "bad_time"),
        ("/v1/history/mab?mab=20.0.0.0/33", "bad_mab"),
    ] {
        let resp = http.get(&format!("{base}{q}")).unwrap();
        assert_eq!(resp.status, 400, "{q}");
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(v["error"], code, "{q}");
    }
    rec.stop().unwrap();
    mps.stop().unwrap();
    drop(snaps);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A recorder child process (`ivip history --config FILE`) and its HTTP address.
struct Child {
    child: std::process::Child,
    http: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Child {
    fn start(config: &Path) -> Child {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ivip"))
            .args(["history", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("feeds on")
                    && let Some(i) = line.find("HTTP on ")
                {
                    let rest = &line[i + 8..];
                    let addr = rest.split(',').next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                l.lock().unwrap().push(line);
            }
        });
        let http = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("recorder did not start: {:?}", log.lock().unwrap()));
        Child { child, http, log }
    }

    fn status(&self) -> Option<serde_json::Value> {
        let r = ivip::http::Client::default()
            .get(&format!("http://{}/v1/history/status", self.http))
            .ok()?;
        serde_json::from_slice(&r.body).ok()
    }

    fn signal(&mut self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// issue 10: "SIGKILL during ingest loses no acknowledged-to-disk record and
/// leaves no torn one"; "after a SIGKILL the recorder resumes from the last
/// complete record and fills the rest from MPSes".
#[test]
fn sigkill_during_ingest_loses_no_acknowledged_record_and_leaves_no_torn_one() {
    let _g = serial();
    let d = tmp("sigkill");
    std::fs::create_dir_all(&d).unwrap();
    let key = KeyPair::from_seed(&RUAS_SEED);
    let mabs: Vec<Mab> = vec![
        "20.0.0.0/20".parse().unwrap(),
        "30.1.0.0/22".parse().unwrap(),
    ];
    let mut w = Workload::new(22, &mabs, 300, 8, T0, 20_000);
    let (snaps, _) = snapshot_server(&w, &key);
    let (u1, u2) = (FakeUpstream::start(5000), FakeUpstream::start(5000));
    let mps = mps_for([&u1, &u2], &key);
    let cfg = d.join("history.toml");
    std::fs::write(
        &cfg,
        history_toml(
            &d.join("record"),
            [&u1, &u2],
            &key,
            &format!("http://{}", snaps.local_addr()),
            &format!("http://{}", mps.http_addr()),
        ),
    )
    .unwrap();
    let mut model = Model::new();
    for b in w.baselines(T0) {
        model.add_baseline(&b);
    }
    let n = 1500u32;
    let mut payloads = Vec::new();
    for _ in 0..n {
        let (bytes, changes) = signed_payload(&mut w, &key);
        model.add(&changes);
        payloads.push(bytes);
    }
    let mut child = Child::start(&cfg);
    wait_until(
        "the MPS and the recorder to subscribe",
        Duration::from_secs(10),
        || u1.subscribers().len() == 2 && u2.subscribers().len() == 2,
    );
    // Stream the payloads at about 1000/s, through the kill and the restart.
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (u1, u2, done) = (Arc::new(u1), Arc::new(u2), done.clone());
        let (a, b) = (u1.clone(), u2.clone());
        let t = std::thread::spawn(move || {
            for (i, p) in payloads.iter().enumerate() {
                a.send_except(p, &[]);
                b.send_except(p, &[]);
                if i % 10 == 9 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        (t, u1, u2)
    };
    let log = child.log.clone();
    wait_until(
        "the recorder to record 300 payloads",
        Duration::from_secs(30),
        || {
            let ok = child.status().is_some_and(|s| next_seq(&s) > 300);
            if !ok && done.load(Ordering::SeqCst) {
                eprintln!("{:?}\n{}", child.status(), log.lock().unwrap().join("\n"));
                panic!("sender finished before 300 were recorded");
            }
            ok
        },
    );
    let acked = child.status().map(|s| next_seq(&s)).unwrap() - 1;
    child.signal(libc::SIGKILL);
    assert!(!done.load(Ordering::SeqCst), "the kill came during ingest");
    let mut child = Child::start(&cfg);
    wait_until("the sender to finish", Duration::from_secs(30), || {
        done.load(Ordering::SeqCst)
    });
    wait_until(
        "the restarted recorder to record everything",
        Duration::from_secs(60),
        || {
            child
                .status()
                .is_some_and(|s| next_seq(&s) == u64::from(n) + 1)
        },
    );
    let log = child.log.lock().unwrap().join("\n");
    let replayed: u64 = log
        .split(" record(s) replayed")
        .next()
        .and_then(|h| h.rsplit(' ').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    assert!(
        replayed >= acked,
        "the restart replayed {replayed} records, {acked} were acknowledged\n{log}"
    );
    // The command line asks the running recorder.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ivip"))
            .arg("history")
            .args(args)
            .output()
            .unwrap()
    };
    let server = format!("http://{}", child.http);
    let addr = Ipv4Addr::from(mabs[0].start() as u32 + 7).to_string();
    let o = cli(&[&addr, "--server", &server, "--from", "2025-11-24T16:00:00Z"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains(&format!("address {addr}")) && text.contains("RUAS 5"),
        "{text}"
    );
    let o = cli(&[&addr, "--server", &server, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["mappings"].as_array().is_some_and(|m| !m.is_empty()));
    let o = cli(&["--mab", "20.0.0.0/20", "--server", &server, "--limit", "3"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("MAB 20.0.0.0/20") && text.contains("--after"),
        "{text}"
    );
    let o = cli(&[&addr, "--server", &server, "--from", "noon"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad_time"));
    assert_eq!(
        cli(&["20.0.0.999", "--server", &server]).status.code(),
        Some(2)
    );
    child.signal(libc::SIGTERM);
    // Every acknowledged record is there, once, in order; nothing is torn.
    let (store, rep) = Store::open(&d.join("record"), StoreConfig::default()).unwrap();
    assert!(rep.damage.is_empty(), "{:?}", rep.damage);
    assert_eq!(rep.torn_bytes, 0);
    let r = store.reader();
    let seqs = recorded_seqs(&r);
    assert!(seqs.len() as u64 >= acked);
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    // And the record answers as the model does.
    let t1 = w.now_us();
    let mut rng = Rng::seeded(5);
    for _ in 0..100 {
        let mab = mabs[rng.below(2) as usize];
        let unit = mab.start() + rng.below(mab.len());
        let a = T0 + rng.below(t1 - T0);
        let b = a + rng.below(t1 - a + 1);
        let got =
            query::address_history(&r, IpAddr::V4(Ipv4Addr::from(unit as u32)), a, b).unwrap();
        let states: Vec<_> = got.mappings.iter().map(state_of).collect();
        assert_eq!(states, model.history(Family::V4, unit, a, b));
    }
    drop(sender);
    mps.stop().unwrap();
    drop(snaps);
    std::fs::remove_dir_all(&d).unwrap();
}
