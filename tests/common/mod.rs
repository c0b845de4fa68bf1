//! Helpers shared by the whole-system tests in `tests/` (each test binary
//! compiles its own copy, so each has its own `serial` lock).
#![allow(dead_code)]

pub mod fake_upstream;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The tests of one binary that load the machine take this lock and run one at
/// a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Hold the binary's lock (a test that panicked while holding it does not
/// poison the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Poll `cond` every 10 ms until it holds; fail the test, naming `what`, after
/// `limit`.
pub fn wait_until(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    assert!(
        wait_for(limit, cond),
        "timed out after {limit:?} waiting for {what}"
    );
}

/// Poll `cond` every 10 ms for at most `limit`; whether it came to hold (for a
/// caller that explains a timeout in its own words).
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A signed heartbeat payload of RUAS 3, epoch 1, sequence `seq`.
pub fn heartbeat_payload(key: &ivip::sign::KeyPair, seq: u32) -> Vec<u8> {
    use ivip_wire::payload::{PayloadRepr, Record};
    use ivip_wire::{PayloadId, RuasId, Seq};
    let mut b = PayloadRepr {
        id: PayloadId {
            ruas: RuasId::new(3).unwrap(),
            epoch: 1,
            seq: Seq(seq),
        },
        timestamp_us: 1_764_000_000_000_000 + u64::from(seq),
        records: vec![Record::Heartbeat { interval_ms: 10 }],
        signature: [0; 64],
    }
    .to_vec()
    .unwrap();
    let n = b.len() - 64;
    let sig = key.sign(&b[..n]);
    b[n..].copy_from_slice(&sig);
    b
}
