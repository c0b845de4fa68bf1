//! `cargo bench --bench uas`: how long a user's command set takes from the leaf
//! UAS's answer point of view, through a middle UAS to the real RUAS, on loopback
//! (issue 7: "keep the forward path lean").
//!
//! Figures, one JSON object per line (latency of one request, answer included):
//! - `ruas_direct_p50_us`, `ruas_direct_p99_us`: the baseline, measured in the same
//!   run: a SUMUC signed by the RUAS's child POSTed straight to the RUAS
//!   (signature check, WAL fsync, answer).
//! - `uas_accept_p50_us`, `uas_accept_p99_us`: `POST /v1/commands` at the leaf
//!   with an agent key (Ed25519 request signature), accepted: authentication,
//!   checks, the state read through the middle UAS, the intent and outcome audit
//!   fsyncs, signing, the middle's checks, audit and re-signing, and the RUAS.
//! - `uas_added_p50_us`: `uas_accept_p50_us` minus `ruas_direct_p50_us`.
//! - `uas_dry_run_p50_us`: a dry run at the leaf (state read, checks, audit).
//!
//! Each set toggles one micronet's ETR. `IVIP_BENCH_QUICK=1` takes 30 samples
//! instead of 300. fsync cost depends on the disk under the temp directory.

use std::time::{Duration, Instant};

use ivip::daemon::Shutdown;
use ivip::sign::KeyPair;
use ivip::uas::auth::sign_request;
use ivip::uas::forward::sign_sumuc;
use ivip::uas::upstream::HttpClient;
use ivip_wire::sumuc::Sumuc;
use ivip_wire::{Command, Etr};

fn figure(name: &str, value: f64, unit: &str, samples: usize) {
    println!(
        "{{\"figure\": \"{name}\", \"value\": {value:.1}, \"unit\": \"{unit}\", \"samples\": {samples}, \"hops\": \"leaf-middle-ruas\"}}"
    );
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize] as f64
}

fn hex(b: &[u8]) -> String {
    ivip_wire::hex::encode(b)
}

fn main() {
    let quick = std::env::var_os("IVIP_BENCH_QUICK").is_some_and(|v| v != "0");
    let n = if quick { 30 } else { 300 };
    let dir = std::env::temp_dir().join(format!("ivip-bench-uas-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ruas_key = KeyPair::from_seed(&[0x52; 32]);
    let y = KeyPair::from_seed(&[0x59; 32]);
    let z = KeyPair::from_seed(&[0x5a; 32]);
    let agent = KeyPair::from_seed(&[0x41; 32]);
    for (name, k) in [("ruas", &ruas_key), ("y", &y), ("z", &z)] {
        ivip::keyfile::write_new(&dir.join(format!("{name}.key")), k).unwrap();
    }
    // A sink standing for the level-0 replicator.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        while sink.recv_from(&mut b).is_ok() {}
    });
    let ruas_toml = dir.join("ruas.toml");
    std::fs::write(
        &ruas_toml,
        format!(
            "ruas_id = 7\nkey_file = \"ruas.key\"\ndata_dir = \"ruas\"\nhttp_listen = \"127.0.0.1:0\"\n\
             udp_bind = \"127.0.0.1:0\"\nreplicators = [\"{sink_addr}\"]\nmabs = [\"20.0.0.0/14\"]\n\
             batch_window_ms = 0\n[[uas]]\nname = \"uas-y\"\npublic_key = \"{}\"\nranges = [\"20.1.0.0+65536\"]\n",
            hex(&y.public())
        ),
    )
    .unwrap();
    let ruas = ivip::ruas::start(
        &ivip::ruas::RuasConfig::load(&ruas_toml).unwrap(),
        Shutdown::new(),
    )
    .unwrap();
    let ruas_url = format!("http://{}", ruas.http_addr());
    let uas = |name: &str, key: &str, parent: &str, parent_key: &[u8; 32], rest: &str| {
        let p = dir.join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "name = \"{name}\"\nkey_file = \"{key}.key\"\nlisten = \"127.0.0.1:0\"\naudit_dir = \"{name}-audit\"\n\
                 mabs = [\"20.0.0.0/14\"]\nrate_limit = {{ per_s = 100000.0, burst = 100000 }}\n\
                 [parent]\nurl = \"{parent}\"\npublic_key = \"{}\"\n{rest}",
                hex(parent_key)
            ),
        )
        .unwrap();
        ivip::uas::http::start(
            ivip::uas::config::UasConfig::load(&p).unwrap(),
            Shutdown::new(),
        )
        .unwrap()
    };
    let middle = uas(
        "uas-y",
        "y",
        &ruas_url,
        &ruas_key.public(),
        &format!(
            "[[children]]\nname = \"uas-z\"\npublic_key = \"{}\"\nranges = [\"20.1.2.0+512\"]\n",
            hex(&z.public())
        ),
    );
    let leaf = uas(
        "uas-z",
        "z",
        &format!("http://{}", middle.local_addr()),
        &y.public(),
        &format!(
            "[[users]]\nname = \"alice\"\nuab = [\"20.1.2.0+256\"]\npublic_keys = [\"{}\"]\n",
            hex(&agent.public())
        ),
    );

    // Baseline: straight to the RUAS, signed as its child.
    let direct = HttpClient::new(&ruas_url, Duration::from_secs(10)).unwrap();
    let start = 0x1401_0000u64;
    let send_direct = |rid: u64, c: Command| {
        let s = Sumuc {
            signer: [0; 32],
            request_id: rid,
            timestamp_us: 0,
            execute_at_us: 0,
            mab: "20.0.0.0/14".parse().unwrap(),
            origin: "bench".into(),
            commands: vec![c],
            signature: [0; 64],
        };
        let b = sign_sumuc(s, &y, ivip::time::unix_now_us()).unwrap();
        let a = direct.request("POST", "/v1/sumuc", &[], &b).unwrap();
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    };
    send_direct(
        1,
        Command::Define {
            start,
            len: 16,
            etr: Etr::V4([11, 0, 0, 1].into()),
        },
    );
    send_direct(
        2,
        Command::Define {
            start: 0x1401_0200,
            len: 16,
            etr: Etr::V4([11, 0, 0, 1].into()),
        },
    );
    let mut base = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let etr = Etr::V4([11, 0, 0, 2 + (i % 2) as u8].into());
        let t = Instant::now();
        send_direct(
            10 + i,
            Command::SetEtr {
                start: 0x1401_0200,
                len: 16,
                etr,
            },
        );
        base.push(t.elapsed().as_micros() as u64);
    }

    let c = HttpClient::new(
        &format!("http://{}", leaf.local_addr()),
        Duration::from_secs(10),
    )
    .unwrap();
    let send = |i: u64, dry: bool| {
        let body = format!(
            "{{\"dry_run\": {dry}, \"commands\": [{{\"op\": \"set-etr\", \"range\": \"20.1.2.0+16\", \"etr\": \"11.0.0.{}\"}}]}}",
            2 + i % 2
        );
        let h = sign_request(
            &agent,
            "alice",
            "POST",
            "/v1/commands",
            ivip::time::unix_now_us(),
            body.as_bytes(),
        );
        let t = Instant::now();
        let a = c
            .request(
                "POST",
                "/v1/commands",
                &[("Authorization", &h)],
                body.as_bytes(),
            )
            .unwrap();
        let us = t.elapsed().as_micros() as u64;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        us
    };
    let mut acc: Vec<u64> = (0..n as u64).map(|i| send(i, false)).collect();
    let mut dry: Vec<u64> = (0..n as u64).map(|i| send(i, true)).collect();
    let b50 = pct(&mut base, 0.5);
    figure("ruas_direct_p50_us", b50, "us", n);
    figure("ruas_direct_p99_us", pct(&mut base, 0.99), "us", n);
    let a50 = pct(&mut acc, 0.5);
    figure("uas_accept_p50_us", a50, "us", n);
    figure("uas_accept_p99_us", pct(&mut acc, 0.99), "us", n);
    figure("uas_added_p50_us", a50 - b50, "us", n);
    figure("uas_dry_run_p50_us", pct(&mut dry, 0.5), "us", n);
    leaf.stop();
    middle.stop();
    let _ = ruas.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
