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
