//! Whole-system tests of the history recorder (seed s2.1; spec: history.md): real
//! files, real HTTP, a recorder child process killed with SIGKILL.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ivip::history::query::{self, MappingState};
use ivip::history::workload::{Model, Workload};
use ivip::history::{Store, StoreConfig};
use ivip::rng::Rng;
use ivip_wire::{Family, Mab};

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
    let sealed = store.reader().view(|_, runs| runs.len()).0;
    assert!(
        sealed >= 3,
        "the stream spans sealed segments and the active one ({sealed})"
    );
    check_against_model(&store, &model, &mabs, t0, t1, 400, 1);
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
                .find(|x| x.first_segment() == 2)
                .map(|x| x.segments()[0])
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
