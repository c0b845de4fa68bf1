//! What every daemon shares: logging to stderr, and a graceful stop on SIGTERM or
//! SIGINT.
//!
//! [`Shutdown`] is a flag set from the signal handler; event loops check it at
//! least every [`SHUTDOWN_POLL_MS`] milliseconds (their poll timeout is capped at
//! that), finish the work in hand, flush, and return.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The longest a loop may block before looking at the shutdown flag.
pub const SHUTDOWN_POLL_MS: u64 = 100;

/// A shared stop flag.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

impl Shutdown {
    /// A flag that only [`Shutdown::request`] sets.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// A flag that SIGTERM and SIGINT also set (installs the handlers).
    pub fn on_signals() -> Shutdown {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        #[allow(unsafe_code)]
        unsafe {
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        }
        Shutdown::default()
    }

    /// Ask everything sharing this flag to stop.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// `true` once a stop was requested or a signal arrived.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst) || SIGNALLED.load(Ordering::SeqCst)
    }
}

static DEFAULT_LEVEL: parking_lot::Mutex<&'static str> = parking_lot::Mutex::new("info");

/// The level [`init_logging`] uses when `RUST_LOG` is not set.
pub fn set_default_log_level(level: &'static str) {
    *DEFAULT_LEVEL.lock() = level;
}

/// Log to stderr at `info` (or `RUST_LOG`), with a timestamp and the target.
pub fn init_logging() {
    let level = *DEFAULT_LEVEL.lock();
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_micros()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_seen_by_clones() {
        let a = Shutdown::new();
        let b = a.clone();
        assert!(!b.is_requested());
        a.request();
        assert!(b.is_requested());
    }
}
