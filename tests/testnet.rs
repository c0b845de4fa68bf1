//! Whole-system tests (issue 8): the testnet on loopback, smaller than the CLI's
//! default (4 QSDs instead of 20) so the suite stays quick, with everything else as
//! `ivip testnet` runs it: generated keys and configs, every daemon started from its
//! config, user changes through the UAS HTTP API. Each test is bounded in time.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ivip::client::{Answer, QueryClient};
use ivip::dtls::{AddrPattern, BlockingSocket, Identity, Limits, Link, Pin, PinSet};
use ivip::metrics::Registry;
use ivip::sign::KeyPair;
use ivip::testnet::{self, Knobs, Options, Shape, Testnet, net, plan, workload::Workload};
use ivip_wire::payload::{PayloadRepr, Record};
use ivip_wire::{Command, Etr, PayloadId, RuasId, Seq};

fn options(name: &str) -> Options {
    Options {
        dir: Some(std::env::temp_dir().join(format!("ivip-testnet-{name}-{}", std::process::id()))),
        shape: Shape::small(),
        knobs: Knobs::default(),
        duration: Duration::from_secs(60),
        rate: 150.0,
        changes_max: 300,
        threads: 6,
        progress: false,
        ..Options::default()
    }
}

fn clean(o: &Options) {
    if let Some(d) = &o.dir {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Run the workload at 100 changes/s for `secs` seconds (seeded), and 2 s in do
/// `fault` to the network.
fn during_workload(
    net: &mut Testnet,
    wl: &mut Workload,
    secs: u64,
    seed: u64,
    fault: impl FnOnce(&mut Testnet),
) {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            wl.run(
                100.0,
                Duration::from_secs(secs),
                u64::MAX,
                &AtomicBool::new(false),
                seed,
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        fault(net);
        let _ = h.join();
    });
}

/// Every QSD converged; if not, the message says where each one differs.
fn assert_converged(net: &Testnet, converged: usize) {
    assert_eq!(
        converged,
        net.plan.qsds.len(),
        "QSDs not converged:\n{}{}",
        net.divergence(),
        (0..net.plan.ruases.len())
            .filter_map(|i| std::fs::read_to_string(net.ruas_log(i)).ok())
            .collect::<String>()
    );
}

/// Applied sequences per QSD and MAB: strictly one after another, each once.
fn applied_in_order(net: &Testnet) {
    for q in 0..net.plan.qsds.len() {
        for mab in net.mabs() {
            let v = net::get_json(&format!(
                "http://{}/v1/applied?mab={mab}",
                net.qsd_admin_addr(q)
            ))
            .unwrap();
            let seqs: Vec<u64> = v["applied"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[0].as_u64().unwrap())
                .collect();
            for w in seqs.windows(2) {
                assert_eq!(
                    w[1],
                    w[0] + 1,
                    "QSD {q} {mab}: applied {} after {}",
                    w[1],
                    w[0]
                );
            }
        }
    }
}

#[test]
fn convergence_1000_random_changes_across_all_mabs() {
    let mut o = options("converge");
    o.changes_max = 1000;
    o.rate = 300.0;
    let plan = plan::make(o.dir.as_ref().unwrap(), &o.shape, &o.knobs).unwrap();
    let net = Testnet::start(plan, None).unwrap();
    let mut wl = Workload::new(&net.plan, o.threads).unwrap();
    wl.setup(1).unwrap();
    net.wait_ready(Duration::from_secs(60)).unwrap();
    wl.run(
        o.rate,
        Duration::from_secs(60),
        1000,
        &AtomicBool::new(false),
        7,
    );
    let accepted = wl.accepted.lock().clone();
    assert_eq!(accepted.len(), 1000, "every change accepted");
    let mabs: std::collections::HashSet<_> = accepted.iter().map(|a| a.mab).collect();
    assert_eq!(mabs.len(), net.mabs().len(), "changes in every MAB");
    let converged = testnet::wait_converged(&net, Duration::from_secs(20)).unwrap();
    assert_eq!(
        converged,
        net.plan.qsds.len(),
        "every QSD holds exactly the masters' hashes"
    );
    let (_, missing) = testnet::report::latencies(&net, &accepted);
    assert_eq!(missing, 0);
    applied_in_order(&net);
    net.stop();
    clean(&o);
}

#[test]
fn five_percent_loss_on_every_link_leaves_nothing_missing_2_s_after_the_last_change() {
    let mut o = options("loss");
    o.knobs.loss_percent = 5.0;
    let stop = AtomicBool::new(false);
    let (s, _) = testnet::run(&o, &stop).unwrap();
    assert!(s.changes >= 290, "{} changes accepted", s.changes);
    assert!(s.datagrams_dropped > 0, "the loss was real");
    assert_eq!(s.missing, 0, "nothing missing: {s:?}");
    assert!(
        s.converged,
        "converged within 2 s of the last change: {}",
        s.table("loss")
    );
    assert!(
        s.payloads_recovered > 0 || s.payloads_lost == 0,
        "{}",
        s.table("loss")
    );
    clean(&o);
}

#[test]
fn a_killed_level_1_replicator_costs_its_downstreams_nothing() {
    let mut o = options("failover");
    o.kill_replicator = true;
    o.rate = 100.0;
    o.duration = Duration::from_secs(6);
    o.changes_max = u64::MAX;
    let stop = AtomicBool::new(false);
    let (s, _) = testnet::run(&o, &stop).unwrap();
    assert!(s.changes > 200);
    assert_eq!(s.missing, 0, "{}", s.table("failover"));
    assert!(s.converged, "{}", s.table("failover"));
    clean(&o);
}

#[test]
fn a_qsd_restarted_mid_stream_resyncs_from_snapshots_and_converges() {
    let o = options("restart");
    let plan = plan::make(o.dir.as_ref().unwrap(), &o.shape, &o.knobs).unwrap();
    let mut net = Testnet::start(plan, None).unwrap();
    let mut wl = Workload::new(&net.plan, o.threads).unwrap();
    wl.setup(2).unwrap();
    net.wait_ready(Duration::from_secs(60)).unwrap();
    during_workload(&mut net, &mut wl, 4, 3, |net| net.restart_qsd(1).unwrap());
    let converged = testnet::wait_converged(&net, Duration::from_secs(30)).unwrap();
    assert_converged(&net, converged);
    let accepted = wl.accepted.lock().clone();
    let (_, missing) = testnet::report::latencies(&net, &accepted);
    assert_eq!(missing, 0);
    net.stop();
    clean(&o);
}

#[test]
fn a_ruas_killed_with_sigkill_loses_no_acknowledged_change_and_qsds_converge() {
    let mut o = options("crash");
    o.ruas_exe = Some(env!("CARGO_BIN_EXE_ivip").into());
    let plan = plan::make(o.dir.as_ref().unwrap(), &o.shape, &o.knobs).unwrap();
    let mut net = Testnet::start(plan, o.ruas_exe.clone()).unwrap();
    let mut wl = Workload::new(&net.plan, o.threads).unwrap();
    wl.setup(4).unwrap();
    net.wait_ready(Duration::from_secs(60)).unwrap();
    during_workload(&mut net, &mut wl, 6, 5, |net| {
        assert!(net.kill_ruas(0), "SIGKILL");
        std::thread::sleep(Duration::from_millis(500));
        net.restart_ruas(0).unwrap();
    });
    // Every acknowledged change is in its master.
    let accepted = wl.accepted.lock().clone();
    let masters: HashMap<String, u64> = net
        .master_hashes()
        .unwrap()
        .into_iter()
        .map(|(m, s, _)| (m, s))
        .collect();
    for a in &accepted {
        assert!(
            masters[&a.mab.to_string()] >= a.mab_seq,
            "{}#{} acknowledged but lost",
            a.mab,
            a.mab_seq
        );
    }
    let converged = testnet::wait_converged(&net, Duration::from_secs(30)).unwrap();
    assert_converged(&net, converged);
    let (_, missing) = testnet::report::latencies(&net, &accepted);
    assert_eq!(missing, 0);
    // No per-MAB sequence was handed out twice: the applied logs never repeat one.
    applied_in_order(&net);
    net.stop();
    clean(&o);
}

#[test]
fn a_testnet_dropped_without_stop_leaves_no_ruas_process_behind() {
    // What a failing test does: unwind past `stop`.
    let mut o = options("dropped");
    o.ruas_exe = Some(env!("CARGO_BIN_EXE_ivip").into());
    let plan = plan::make(o.dir.as_ref().unwrap(), &o.shape, &o.knobs).unwrap();
    let net = Testnet::start(plan, o.ruas_exe.clone()).unwrap();
    let pids = net.ruas_pids();
    assert_eq!(pids.len(), net.plan.ruases.len());
    let alive = |p: &u32| std::path::Path::new(&format!("/proc/{p}")).exists();
    assert!(pids.iter().all(alive));
    drop(net);
    assert!(
        !pids.iter().any(alive),
        "RUAS processes {pids:?} outlived the testnet"
    );
    clean(&o);
}

#[test]
fn a_forged_payload_is_replicated_but_applied_by_no_qsd() {
    let o = options("forgery");
    let plan = plan::make(o.dir.as_ref().unwrap(), &o.shape, &o.knobs).unwrap();
    let net = Testnet::start(plan, None).unwrap();
    let mut wl = Workload::new(&net.plan, o.threads).unwrap();
    wl.setup(6).unwrap();
    net.wait_ready(Duration::from_secs(60)).unwrap();
    let user = &net.plan.users[0];
    let mab = user.mab;
    let evil = Etr::V4("66.6.6.6".parse().unwrap());
    // Well formed, RUAS 1's id, the next per-MAB sequence, a far sequence number so
    // no real payload shares its identity; signed with the wrong key.
    let next = net
        .master_hashes()
        .unwrap()
        .into_iter()
        .find(|m| m.0 == mab.to_string())
        .unwrap()
        .1
        + 1;
    let mut p = PayloadRepr {
        id: PayloadId {
            ruas: RuasId::new(1).unwrap(),
            epoch: 1,
            seq: Seq(1_000_000),
        },
        timestamp_us: ivip::time::unix_now_us(),
        records: vec![Record::MabUpdate {
            mab,
            mab_seq: next,
            commands: vec![Command::SetEtr {
                start: user.uab.start,
                len: 8,
                etr: evil,
            }],
        }],
        signature: [0; 64],
    };
    let mut bytes = p.to_vec().unwrap();
    let n = bytes.len() - 64;
    p.signature = KeyPair::generate().sign(&bytes[..n]);
    bytes[n..].copy_from_slice(&p.signature);
    // As plain UDP the forgery does not even get in: the level-0 replicators'
    // DTLS layer drops it (issue 9).
    let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for l0 in net.replicator_addrs(0) {
        plain.send_to(&bytes, l0).unwrap();
    }
    let l0s = net.plan.replicators[0].len();
    let end = Instant::now() + Duration::from_secs(10);
    while (0..l0s).any(|i| {
        net.replicator(0, i)
            .and_then(|r| r.link())
            .and_then(|l| l.metrics().dropped.with("plain_udp").map(|c| c.get()))
            .unwrap_or(0)
            == 0
    }) {
        assert!(Instant::now() < end, "plain UDP was not dropped at level 0");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Over DTLS with a pinned link identity (RUAS 1's, as a compromised or buggy
    // RUAS would hold) it is replicated, and the signature is what stops it.
    let (k, c) = net.plan.ruases[0].dtls.clone().expect("a DTLS testnet");
    let id = Identity::load(&k, &c).unwrap();
    let pins = PinSet::new(
        net.plan.replicators[0]
            .iter()
            .map(|r| Pin {
                name: format!("l0 {}", r.addr),
                fingerprint: r.fingerprint.unwrap(),
                addresses: vec![AddrPattern::Exact(r.addr)],
            })
            .collect(),
    );
    let link = Link::new(&id, pins, Limits::default(), &Registry::new(), "forger").unwrap();
    let mut sock = BlockingSocket::bind("127.0.0.1:0".parse().unwrap(), link).unwrap();
    for l0 in net.replicator_addrs(0) {
        sock.send_to(&bytes, l0);
    }
    let end = Instant::now() + Duration::from_secs(10);
    while !net
        .replicator_addrs(0)
        .iter()
        .all(|a| sock.link().is_established(*a))
    {
        assert!(Instant::now() < end, "the forger's DTLS handshakes");
        let _ = sock.recv(Duration::from_millis(20));
    }
    // Replicated: every QSD saw it, and dropped it for its signature.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = (0..net.plan.qsds.len())
            .filter(|&q| {
                net::metric(
                    &format!("http://{}/metrics", net.qsd_admin_addr(q)),
                    "ivip_qsd_feed_dropped_total{reason=\"bad_signature\"}",
                ) >= 1.0
            })
            .count();
        if seen == net.plan.qsds.len() {
            break;
        }
        assert!(Instant::now() < end, "the forgery reached only {seen} QSDs");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Applied by none.
    let addr = ivip_wire::addr::unit_addr(mab.family(), user.uab.start);
    for q in 0..net.plan.qsds.len() {
        let c = QueryClient::new(vec![net.qsd_query_addr(q)]).unwrap();
        match c.query(addr).unwrap() {
            Answer::Mapped { micronet, .. } => {
                assert_ne!(micronet.etr, evil, "QSD {q} applied a forgery")
            }
            other => panic!("{other:?}"),
        }
    }
    let converged = testnet::wait_converged(&net, Duration::from_secs(10)).unwrap();
    assert_converged(&net, converged);
    net.stop();
    clean(&o);
}
